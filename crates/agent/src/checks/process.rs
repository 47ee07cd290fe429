//! Built-in process check (Datadog `process`): counts processes matching an exact name or a
//! command-line substring and sums their CPU and resident memory.
//!
//! Matching: `process_name` equals `/proc/<pid>/comm` or the base name of `argv[0]` (the
//! kernel truncates `comm` to 15 bytes, so long names only match through `argv[0]`);
//! `search_string` is a substring of the command line (arguments joined by spaces). A process
//! matching either is counted.
//!
//! `system.processes.cpu.pct` is the sum over matching processes of their CPU time increase
//! (`utime + stime`) since the previous run divided by the wall time, ×100 — 100 means one
//! full core, as in `top`/psutil. Processes are keyed by `(pid, start time)` so a recycled pid
//! is not mistaken for the old process. The first run samples twice, 250 ms apart, so it also
//! reports a value. `system.processes.mem.rss` is the sum of `VmRSS`, in bytes.

use std::collections::HashMap;
use std::path::Path;
use std::time::{Duration, Instant};

use warden_model::{CheckStatus, MetricKind};

use super::{CheckKind, CheckOutput, Ctx, unix_now};
use crate::config::ProcessCheckConfig;

/// CPU jiffies of each matching process, keyed by `(pid, start time)`.
type CpuSample = HashMap<(u32, u64), u64>;

#[derive(Debug)]
pub(crate) struct ProcessCheck {
    pub(crate) cfg: ProcessCheckConfig,
    prev: Option<(Instant, CpuSample)>,
    ticks: f64,
}

/// One scan of the process table.
struct Scan {
    count: u64,
    rss_bytes: u64,
    cpu: CpuSample,
}

impl ProcessCheck {
    pub(crate) fn new(cfg: ProcessCheckConfig) -> Self {
        Self {
            cfg,
            prev: None,
            ticks: crate::collector::sys::clock_ticks(),
        }
    }

    fn matches(&self, pid_dir: &Path) -> bool {
        let cmdline = std::fs::read(pid_dir.join("cmdline")).unwrap_or_default();
        if let Some(name) = &self.cfg.process_name {
            let comm = std::fs::read_to_string(pid_dir.join("comm")).unwrap_or_default();
            if comm.trim_end_matches('\n') == name {
                return true;
            }
            let argv0 = cmdline.split(|b| *b == 0).next().unwrap_or_default();
            let argv0 = String::from_utf8_lossy(argv0);
            if !argv0.is_empty() && argv0.rsplit('/').next() == Some(name.as_str()) {
                return true;
            }
        }
        if let Some(needle) = &self.cfg.search_string {
            let text: String = String::from_utf8_lossy(&cmdline)
                .trim_end_matches('\0')
                .replace('\0', " ");
            if !text.is_empty() && text.contains(needle.as_str()) {
                return true;
            }
        }
        false
    }

    fn scan(&self, procfs: &Path) -> std::io::Result<Scan> {
        let mut scan = Scan {
            count: 0,
            rss_bytes: 0,
            cpu: HashMap::new(),
        };
        for entry in std::fs::read_dir(procfs)? {
            let Ok(entry) = entry else { continue };
            let Some(pid) = entry
                .file_name()
                .to_str()
                .and_then(|s| s.parse::<u32>().ok())
            else {
                continue;
            };
            let dir = entry.path();
            // Processes exit while we read: every missing file just skips that process.
            if !self.matches(&dir) {
                continue;
            }
            let Some((ticks, start)) = std::fs::read_to_string(dir.join("stat"))
                .ok()
                .and_then(|s| parse_stat(&s))
            else {
                continue;
            };
            scan.count += 1;
            scan.cpu.insert((pid, start), ticks);
            scan.rss_bytes += std::fs::read_to_string(dir.join("status"))
                .ok()
                .and_then(|s| vm_rss_bytes(&s))
                .unwrap_or(0);
        }
        Ok(scan)
    }

    pub(crate) async fn run(&mut self, ctx: &Ctx) -> CheckOutput {
        let interval = Duration::from_secs(self.cfg.interval.max(1));
        let tags = ctx.tags_with(
            std::iter::once(format!("process_name:{}", self.cfg.name))
                .chain(self.cfg.tags.iter().cloned()),
        );
        let mut out = CheckOutput {
            name: self.cfg.name.clone(),
            kind: CheckKind::Process,
            status: CheckStatus::Critical,
            message: String::new(),
            error: None,
            series: Vec::new(),
            service_checks: Vec::new(),
            timestamp: 0,
            duration_ms: 0,
        };
        if self.prev.is_none() {
            if let Ok(first) = self.scan(&ctx.procfs) {
                self.prev = Some((Instant::now(), first.cpu));
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
        }
        let scanned = self.scan(&ctx.procfs);
        let at = Instant::now();
        let now = unix_now();
        out.timestamp = now;
        let scan = match scanned {
            Ok(s) => s,
            Err(e) => {
                let msg = format!("cannot list processes in {}: {e}", ctx.procfs.display());
                out.message = msg.clone();
                out.error = Some(msg);
                out.service_checks.push(ctx.service_check(
                    "process.up",
                    CheckStatus::Critical,
                    &tags,
                    &out.message,
                    now,
                ));
                return out;
            }
        };
        let series = |name: &str, unit: &str, v: f64| {
            ctx.series(name, MetricKind::Gauge, Some(unit), v, &tags, now, interval)
        };
        out.series.push(series(
            "system.processes.number",
            "process",
            scan.count as f64,
        ));
        out.series.push(series(
            "system.processes.mem.rss",
            "byte",
            scan.rss_bytes as f64,
        ));
        if let Some((prev_at, prev)) = &self.prev {
            let wall = at.duration_since(*prev_at).as_secs_f64();
            if wall > 0.0 {
                let jiffies: u64 = scan
                    .cpu
                    .iter()
                    .filter_map(|(k, now)| prev.get(k).map(|p| now.saturating_sub(*p)))
                    .sum();
                let pct = jiffies as f64 / self.ticks / wall * 100.0;
                out.series
                    .push(series("system.processes.cpu.pct", "percent", pct));
            }
        }
        self.prev = Some((at, scan.cpu));
        let criteria = match (&self.cfg.process_name, &self.cfg.search_string) {
            (Some(n), Some(s)) => format!("named `{n}` or matching `{s}`"),
            (Some(n), None) => format!("named `{n}`"),
            (None, Some(s)) => format!("matching `{s}`"),
            (None, None) => "(no criteria configured)".to_owned(),
        };
        if scan.count >= self.cfg.min_procs {
            out.status = CheckStatus::Ok;
            out.message = format!("{} process(es) {criteria}", scan.count);
        } else {
            out.message = format!(
                "{} process(es) {criteria}, expected at least {}",
                scan.count, self.cfg.min_procs
            );
        }
        out.service_checks.push(ctx.service_check(
            "process.up",
            out.status,
            &tags,
            &out.message,
            now,
        ));
        out
    }
}

/// `(utime + stime, starttime)` from `/proc/<pid>/stat`. The command name in parentheses may
/// contain spaces and parentheses, so fields are counted after the last `)`.
fn parse_stat(s: &str) -> Option<(u64, u64)> {
    let rest = &s[s.rfind(')')? + 1..];
    let f: Vec<&str> = rest.split_ascii_whitespace().collect();
    // rest[0] is field 3 (state); utime = field 14, stime = 15, starttime = 22.
    let utime: u64 = f.get(11)?.parse().ok()?;
    let stime: u64 = f.get(12)?.parse().ok()?;
    let start: u64 = f.get(19)?.parse().ok()?;
    Some((utime + stime, start))
}

/// `VmRSS` of `/proc/<pid>/status` in bytes (absent for kernel threads).
fn vm_rss_bytes(status: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kb: u64 = line.split_ascii_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_with_odd_command_names() {
        let s = "42 (a) b (c)) S 1 42 42 0 -1 4194560 100 0 0 0 7 3 0 0 20 0 1 0 999 1000 10";
        assert_eq!(parse_stat(s), Some((10, 999)));
        assert_eq!(parse_stat("42 (x) S 1"), None);
        assert_eq!(parse_stat("garbage"), None);
    }

    #[test]
    fn rss() {
        assert_eq!(
            vm_rss_bytes("Name: x\nVmRSS:\t  2048 kB\n"),
            Some(2048 * 1024)
        );
        assert_eq!(vm_rss_bytes("Name: kthreadd\n"), None);
    }
}
