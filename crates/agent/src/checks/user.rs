//! User checks: every executable file of `checks_d`, run on a timer (protocol in
//! `docs/checks.md`).
//!
//! Security model — a user check runs with the agent's privileges, so:
//! * a file writable by its group or by others, owned by anyone but the agent user or root, or
//!   lying in a folder writable by group or others, is **refused** (CRITICAL service check
//!   saying why and how to fix it) — otherwise any local user able to write it could run code
//!   as the agent;
//! * it is executed directly (no shell), with an **empty environment** except `PATH` and
//!   `LC_ALL` (the agent's environment may hold `WARDEN_API_KEY` and secrets), stdin from
//!   `/dev/null`, in `checks_d` as working directory, as the leader of its own process group;
//! * stdout is capped at [`MAX_OUTPUT_BYTES`] (stderr at 64 KiB); beyond that, or after the
//!   timeout, the **whole process group** is killed with SIGKILL. Processes a check leaves
//!   behind in its group are killed when it exits.
//!
//! Dot files and non-executable files are skipped (the latter with a warning): editors and
//! package managers leave such files around and they must not turn into CRITICAL alerts.

use std::collections::HashMap;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::time::{Duration, Instant};

use serde::Deserialize;
use tokio::io::{AsyncRead, AsyncReadExt};
use warden_model::{CheckStatus, MetricKind, Series, ServiceCheck};

use super::{CheckKind, CheckOutput, Ctx, sys, unix_now};

/// Largest stdout accepted from a user check, bytes.
pub const MAX_OUTPUT_BYTES: usize = 1024 * 1024;
const MAX_STDERR_BYTES: usize = 64 * 1024;
/// `PATH` given to user checks.
const CHECK_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Result of listing `checks_d`.
#[derive(Debug, Default)]
pub(crate) struct Scan {
    /// `(file name, path)` of executable regular files, sorted by name.
    pub(crate) runnable: Vec<(String, PathBuf)>,
    /// File names skipped because no execute bit is set.
    pub(crate) not_executable: Vec<String>,
}

pub(crate) fn scan(dir: &Path) -> std::io::Result<Scan> {
    let mut s = Scan::default();
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let Ok(name) = entry.file_name().into_string() else {
            tracing::warn!(file = ?entry.file_name(), "checks_d file name is not UTF-8; skipped");
            continue;
        };
        if name.starts_with('.') {
            continue;
        }
        let path = entry.path();
        let Ok(meta) = std::fs::metadata(&path) else {
            continue; // dangling symlink or vanished file
        };
        if !meta.is_file() {
            continue;
        }
        if meta.permissions().mode() & 0o111 == 0 {
            s.not_executable.push(name);
        } else {
            s.runnable.push((name, path));
        }
    }
    s.runnable.sort();
    s.not_executable.sort();
    Ok(s)
}

/// Why a file must not be executed, if it must not.
fn security_problem(path: &Path) -> Option<String> {
    let meta = match std::fs::metadata(path) {
        Ok(m) => m,
        Err(e) => return Some(format!("cannot inspect {}: {e}", path.display())),
    };
    let mode = meta.permissions().mode() & 0o7777;
    if mode & 0o022 != 0 {
        return Some(format!(
            "refused to run {}: it is writable by group or others (mode {mode:04o}), so another \
             user could make the agent run their code; fix: chmod go-w {}",
            path.display(),
            path.display()
        ));
    }
    if let Some(dir) = path.parent() {
        if let Ok(dmeta) = std::fs::metadata(dir) {
            let dmode = dmeta.permissions().mode() & 0o7777;
            if dmode & 0o022 != 0 {
                return Some(format!(
                    "refused to run {}: its folder {} is writable by group or others (mode \
                     {dmode:04o}), so another user could replace it; fix: chmod go-w {}",
                    path.display(),
                    dir.display(),
                    dir.display()
                ));
            }
        }
    }
    let euid = sys::effective_uid();
    if meta.uid() != euid && meta.uid() != 0 {
        return Some(format!(
            "refused to run {}: it is owned by uid {}, not by the agent user (uid {euid}) or root; \
             fix: chown {euid} {}",
            path.display(),
            meta.uid(),
            path.display()
        ));
    }
    None
}

/// Kills the check's process group when dropped: on timeout, on overflow, on cancellation
/// (agent shutdown) and after a normal exit (left-behind background processes).
struct GroupGuard(Option<u32>);

impl Drop for GroupGuard {
    fn drop(&mut self) {
        if let Some(pgid) = self.0 {
            sys::kill_process_group(pgid);
        }
    }
}

/// Reads up to `cap` bytes; the flag is true when the stream had more.
async fn read_capped(r: Option<impl AsyncRead + Unpin>, cap: usize) -> (Vec<u8>, bool) {
    let Some(mut r) = r else {
        return (Vec::new(), false);
    };
    let mut buf = Vec::new();
    let mut chunk = vec![0u8; 16 * 1024];
    loop {
        match r.read(&mut chunk).await {
            Ok(0) | Err(_) => return (buf, false),
            Ok(n) => {
                if buf.len() + n > cap {
                    let room = cap - buf.len();
                    buf.extend_from_slice(&chunk[..room]);
                    return (buf, true);
                }
                buf.extend_from_slice(&chunk[..n]);
            }
        }
    }
}

/// How a run of the executable ended.
enum Ended {
    Exited {
        stdout: Vec<u8>,
        stderr: Vec<u8>,
        status: ExitStatus,
    },
    Failed(String),
}

/// The JSON output protocol (see `docs/checks.md`).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct JsonOutput {
    #[serde(default)]
    metrics: Vec<JsonMetric>,
    #[serde(default)]
    service_checks: Vec<JsonServiceCheck>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct JsonMetric {
    name: String,
    value: f64,
    #[serde(rename = "type", default)]
    kind: Option<String>,
    #[serde(default)]
    tags: Vec<String>,
    #[serde(default)]
    unit: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct JsonServiceCheck {
    name: String,
    status: u8,
    #[serde(default)]
    message: Option<String>,
    #[serde(default)]
    tags: Vec<String>,
}

/// One executable of `checks_d` and the counter values its `rate` metrics need.
#[derive(Debug)]
pub(crate) struct UserCheck {
    pub(crate) name: String,
    path: PathBuf,
    pub(crate) interval: u64,
    /// Last raw value and time of every `rate` context (name + tags).
    rates: HashMap<(String, Vec<String>), (Instant, f64)>,
}

impl UserCheck {
    pub(crate) fn new(name: String, path: PathBuf, interval: u64) -> Self {
        Self {
            name,
            path,
            interval,
            rates: HashMap::new(),
        }
    }

    fn service_check_name(&self) -> String {
        format!("warden.check.{}", self.name)
    }

    /// Metric-name prefix for Nagios perfdata: the file name with everything but ASCII
    /// letters, digits and `_` replaced by `_`.
    fn metric_prefix(&self) -> String {
        sanitize(&self.name, false)
    }

    async fn execute(&self, timeout: Duration) -> Ended {
        let mut cmd = tokio::process::Command::new(&self.path);
        cmd.env_clear()
            .env("PATH", CHECK_PATH)
            .env("LC_ALL", "C")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0)
            .kill_on_drop(true);
        if let Some(dir) = self.path.parent() {
            cmd.current_dir(dir);
        }
        // ETXTBSY: the script was just written and some other fork of this process (any
        // thread spawning anything) still holds a write descriptor to it until its exec. The
        // window is microseconds wide, so a few short retries close it; a script that stays
        // busy is reported like any other start failure.
        let mut busy_retries = 0;
        let mut child = loop {
            match cmd.spawn() {
                Ok(c) => break c,
                Err(e) if e.raw_os_error() == Some(libc::ETXTBSY) && busy_retries < 5 => {
                    busy_retries += 1;
                    tokio::time::sleep(Duration::from_millis(10 * busy_retries)).await;
                }
                Err(e) => {
                    return Ended::Failed(format!("cannot start {}: {e}", self.path.display()));
                }
            }
        };
        let _guard = GroupGuard(child.id());
        let stdout = child.stdout.take();
        let stderr = child.stderr.take();
        let run = async {
            // Read both pipes to EOF, but stop at once when stdout overflows (stderr may stay
            // open for as long as the check keeps running).
            let out_fut = read_capped(stdout, MAX_OUTPUT_BYTES);
            let err_fut = read_capped(stderr, MAX_STDERR_BYTES);
            tokio::pin!(out_fut, err_fut);
            let (mut out, mut err) = (None, None);
            while out.is_none() || err.is_none() {
                tokio::select! {
                    (bytes, overflow) = &mut out_fut, if out.is_none() => {
                        if overflow {
                            return Err(format!(
                                "stdout exceeded {MAX_OUTPUT_BYTES} bytes; process group killed"
                            ));
                        }
                        out = Some(bytes);
                    }
                    (bytes, _) = &mut err_fut, if err.is_none() => err = Some(bytes),
                }
            }
            let (out, err) = (out.unwrap_or_default(), err.unwrap_or_default());
            match child.wait().await {
                Ok(status) => Ok((out, err, status)),
                Err(e) => Err(format!("cannot wait for the check process: {e}")),
            }
        };
        let res = tokio::time::timeout(timeout, run).await;
        let ended = match res {
            Ok(Ok((stdout, stderr, status))) => {
                return Ended::Exited {
                    stdout,
                    stderr,
                    status,
                };
            }
            Ok(Err(msg)) => Ended::Failed(msg),
            Err(_) => Ended::Failed(format!(
                "timed out after {}s; process group killed",
                timeout.as_secs()
            )),
        };
        // Kill the group now (not only when the guard drops) and reap the child.
        if let Some(pgid) = child.id() {
            sys::kill_process_group(pgid);
        }
        let _ = tokio::time::timeout(Duration::from_secs(2), child.wait()).await;
        ended
    }

    pub(crate) async fn run(&mut self, ctx: &Ctx) -> CheckOutput {
        let sc_name = self.service_check_name();
        let mut out = CheckOutput {
            name: self.name.clone(),
            kind: CheckKind::User,
            status: CheckStatus::Critical,
            message: String::new(),
            error: None,
            series: Vec::new(),
            service_checks: Vec::new(),
            timestamp: 0,
            duration_ms: 0,
        };
        let ended = match security_problem(&self.path) {
            Some(problem) => Ended::Failed(problem),
            None => self.execute(ctx.check_timeout).await,
        };
        let now = unix_now();
        out.timestamp = now;
        match ended {
            Ended::Failed(msg) => {
                out.message = msg.clone();
                out.error = Some(msg);
            }
            Ended::Exited {
                stdout,
                stderr,
                status,
            } => self.interpret(ctx, &stdout, &stderr, status, now, &mut out),
        }
        let tags = ctx.tags_with(std::iter::empty());
        out.service_checks.insert(
            0,
            ctx.service_check(&sc_name, out.status, &tags, &out.message, now),
        );
        out
    }

    fn interpret(
        &mut self,
        ctx: &Ctx,
        stdout: &[u8],
        stderr: &[u8],
        status: ExitStatus,
        now: i64,
        out: &mut CheckOutput,
    ) {
        let text = String::from_utf8_lossy(stdout);
        let stderr_line = String::from_utf8_lossy(stderr)
            .lines()
            .map(str::trim)
            .find(|l| !l.is_empty())
            .map(str::to_owned);
        let how = match (status.code(), status.signal()) {
            (Some(c), _) => format!("exited with code {c}"),
            (None, Some(s)) => format!("killed by signal {s}"),
            (None, None) => "ended abnormally".to_owned(),
        };
        let with_stderr = |m: String| match &stderr_line {
            Some(l) => format!("{m}: {l}"),
            None => m,
        };
        let trimmed = text.trim_start();
        if trimmed.starts_with('{') {
            let parsed = serde_json::from_str::<JsonOutput>(trimmed)
                .map_err(|e| format!("invalid JSON output: {e}"))
                .and_then(|j| self.convert(ctx, j, now));
            match parsed {
                Err(msg) => {
                    out.message = msg.clone();
                    out.error = Some(msg);
                }
                Ok((series, checks)) => {
                    let (n, m) = (series.len(), checks.len());
                    out.series = series;
                    out.service_checks = checks;
                    if status.success() {
                        out.status = CheckStatus::Ok;
                        out.message =
                            format!("ran successfully: {n} metric(s), {m} service check(s)");
                    } else {
                        let msg = with_stderr(format!("{how} after printing valid JSON"));
                        out.message = msg.clone();
                        out.error = Some(msg);
                    }
                }
            }
            return;
        }
        // Nagios plugin semantics.
        if let (None, Some(_)) = (status.code(), status.signal()) {
            let msg = with_stderr(how);
            out.message = msg.clone();
            out.error = Some(msg);
            return;
        }
        let code = status.code().unwrap_or(3);
        out.status = match code {
            0 => CheckStatus::Ok,
            1 => CheckStatus::Warning,
            2 => CheckStatus::Critical,
            _ => CheckStatus::Unknown,
        };
        let mut lines = text.lines();
        let first = lines.next().unwrap_or_default();
        let (message, perf) = match first.split_once('|') {
            Some((m, p)) => (m.trim(), p.to_owned()),
            None => (first.trim(), String::new()),
        };
        let mut perf = perf;
        for l in lines {
            if let Some((_, p)) = l.split_once('|') {
                perf.push(' ');
                perf.push_str(p);
            }
        }
        out.message = if !message.is_empty() {
            message.to_owned()
        } else {
            with_stderr(format!("{how} with no output"))
        };
        if code > 3 {
            let msg = with_stderr(format!("{how} (not a Nagios status 0-3)"));
            out.message = msg.clone();
            out.error = Some(msg);
        }
        let prefix = self.metric_prefix();
        let tags = ctx.tags_with(std::iter::empty());
        let interval = Duration::from_secs(self.interval.max(1));
        for (label, value, unit) in parse_perfdata(&perf) {
            out.series.push(ctx.series(
                &format!("{prefix}.{}", sanitize(&label, true)),
                MetricKind::Gauge,
                unit,
                value,
                &tags,
                now,
                interval,
            ));
        }
    }

    /// Validates JSON metrics and service checks; any invalid entry fails the run (a typo
    /// must be visible, not silently dropped).
    #[allow(clippy::type_complexity)]
    fn convert(
        &mut self,
        ctx: &Ctx,
        j: JsonOutput,
        now: i64,
    ) -> Result<(Vec<Series>, Vec<ServiceCheck>), String> {
        let interval = Duration::from_secs(self.interval.max(1));
        let mut series = Vec::new();
        for (i, m) in j.metrics.into_iter().enumerate() {
            if m.name.is_empty() {
                return Err(format!(
                    "invalid JSON output: metrics[{i}] has an empty name"
                ));
            }
            if !m.value.is_finite() {
                return Err(format!(
                    "invalid JSON output: metrics[{i}] value is not finite"
                ));
            }
            let tags = ctx.tags_with(m.tags.iter().cloned());
            let unit = m.unit.as_deref();
            match m.kind.as_deref().unwrap_or("gauge") {
                "gauge" => series.push(ctx.series(
                    &m.name,
                    MetricKind::Gauge,
                    unit,
                    m.value,
                    &tags,
                    now,
                    interval,
                )),
                "count" => series.push(ctx.series(
                    &m.name,
                    MetricKind::Count,
                    unit,
                    m.value,
                    &tags,
                    now,
                    interval,
                )),
                "rate" => {
                    let at = Instant::now();
                    let key = (m.name.clone(), m.tags.clone());
                    if let Some((prev_at, prev)) = self.rates.insert(key, (at, m.value)) {
                        let dt = at.duration_since(prev_at).as_secs_f64();
                        if dt > 0.0 && m.value >= prev {
                            series.push(ctx.series(
                                &m.name,
                                MetricKind::Gauge,
                                unit,
                                (m.value - prev) / dt,
                                &tags,
                                now,
                                interval,
                            ));
                        }
                    }
                }
                other => {
                    return Err(format!(
                        "invalid JSON output: metrics[{i}] type {other:?} (expected gauge, count or rate)"
                    ));
                }
            }
        }
        let mut checks = Vec::new();
        for (i, sc) in j.service_checks.into_iter().enumerate() {
            if sc.name.is_empty() {
                return Err(format!(
                    "invalid JSON output: service_checks[{i}] has an empty name"
                ));
            }
            let status = CheckStatus::try_from(sc.status)
                .map_err(|e| format!("invalid JSON output: service_checks[{i}]: {e}"))?;
            let tags = ctx.tags_with(sc.tags);
            checks.push(ctx.service_check(
                &sc.name,
                status,
                &tags,
                sc.message.as_deref().unwrap_or(""),
                now,
            ));
        }
        Ok((series, checks))
    }
}

/// Replaces every character except ASCII letters, digits, `_` (and `.` when `dots`) by `_`.
fn sanitize(s: &str, dots: bool) -> String {
    s.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' || (dots && c == '.') {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// Nagios performance data: `'label'=value[UOM];[warn];[crit];[min];[max]`, space separated.
/// Returns `(label, value, unit)`; unparsable items and `U` (unknown) values are skipped.
pub(crate) fn parse_perfdata(s: &str) -> Vec<(String, f64, Option<&'static str>)> {
    let mut out = Vec::new();
    let mut rest = s.trim_start();
    while !rest.is_empty() {
        // Label: quoted (with '' as an escaped quote) or up to '='.
        let (label, after) = if let Some(q) = rest.strip_prefix('\'') {
            let mut label = String::new();
            let mut chars = q.char_indices().peekable();
            let mut end = None;
            while let Some((i, c)) = chars.next() {
                if c == '\'' {
                    if chars.peek().map(|(_, n)| *n) == Some('\'') {
                        label.push('\'');
                        chars.next();
                        continue;
                    }
                    end = Some(i + 1);
                    break;
                }
                label.push(c);
            }
            match end {
                Some(e) => (label, &q[e..]),
                None => break,
            }
        } else {
            match rest.find(['=', ' ', '\t']) {
                Some(i) => (rest[..i].to_owned(), &rest[i..]),
                None => break,
            }
        };
        let Some(after) = after.strip_prefix('=') else {
            // Not `label=`: skip this token.
            rest = after
                .trim_start_matches(|c: char| !c.is_whitespace())
                .trim_start();
            continue;
        };
        let end = after.find(char::is_whitespace).unwrap_or(after.len());
        let item = &after[..end];
        rest = after[end..].trim_start();
        let value_uom = item.split(';').next().unwrap_or_default();
        let num_end = value_uom
            .find(|c: char| !(c.is_ascii_digit() || matches!(c, '.' | '-' | '+' | 'e' | 'E')))
            .unwrap_or(value_uom.len());
        let (num, uom) = value_uom.split_at(num_end);
        let Ok(value) = num.parse::<f64>() else {
            continue;
        };
        if label.is_empty() || !value.is_finite() {
            continue;
        }
        let unit = match uom {
            "s" => Some("second"),
            "ms" => Some("millisecond"),
            "us" => Some("microsecond"),
            "%" => Some("percent"),
            "B" => Some("byte"),
            "KB" => Some("kilobyte"),
            "MB" => Some("megabyte"),
            "GB" => Some("gigabyte"),
            "TB" => Some("terabyte"),
            _ => None,
        };
        out.push((label, value, unit));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn perfdata_forms() {
        let p = parse_perfdata(
            "time=0.5s;1;2;0;10 'disk used'=80%;90;95 size=3MB count=7 bad unknown=U x=1e3 'it''s'=2",
        );
        assert_eq!(
            p,
            vec![
                ("time".into(), 0.5, Some("second")),
                ("disk used".into(), 80.0, Some("percent")),
                ("size".into(), 3.0, Some("megabyte")),
                ("count".into(), 7.0, None),
                ("x".into(), 1000.0, None),
                ("it's".into(), 2.0, None),
            ]
        );
        assert!(parse_perfdata("'unterminated=5").is_empty());
        assert!(parse_perfdata("").is_empty());
    }

    #[test]
    fn names_are_sanitized() {
        assert_eq!(sanitize("disk-check.sh", false), "disk_check_sh");
        assert_eq!(sanitize("disk used.pct", true), "disk_used.pct");
    }
}
