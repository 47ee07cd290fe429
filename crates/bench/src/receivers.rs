//! Starting and stopping the receivers under test as separate, CPU-pinned processes.
//!
//! Every receiver is a child process pinned to the receiver CPU, so that `/proc/<pid>` gives
//! its CPU time and memory alone, and so that "one receiving core" is enforced by the kernel
//! rather than assumed. The receive buffer is made identical for all receivers: the agent is
//! told to leave `SO_RCVBUF` alone (`dogstatsd_so_rcvbuf: 0`) and every receiver's socket is
//! created while `net.core.rmem_default` holds the chosen size (statsdproxy has no option for
//! it), which is then restored.

use std::fs;
use std::io::Write as _;
use std::net::UdpSocket;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};

use crate::procfs;
use crate::sys;

/// Which program receives the traffic.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kind {
    Warden,
    Statsdproxy,
    /// This binary's own `sink` subcommand (recvmmsg, count only): the kernel/generator
    /// baseline.
    Sink,
}

impl Kind {
    pub(crate) fn name(self) -> &'static str {
        match self {
            Kind::Warden => "warden",
            Kind::Statsdproxy => "statsdproxy",
            Kind::Sink => "sink",
        }
    }

    pub(crate) fn parse(s: &str) -> anyhow::Result<Kind> {
        match s {
            "warden" => Ok(Kind::Warden),
            "statsdproxy" => Ok(Kind::Statsdproxy),
            "sink" => Ok(Kind::Sink),
            other => bail!("unknown receiver `{other}` (expected warden, statsdproxy or sink)"),
        }
    }
}

/// Everything needed to start any receiver.
#[derive(Clone, Debug)]
pub(crate) struct Setup {
    pub(crate) warden_bin: PathBuf,
    pub(crate) statsdproxy_bin: PathBuf,
    /// Receive buffer for every receiver, bytes; 0 = leave the system default alone.
    pub(crate) rcvbuf: u64,
    pub(crate) receiver_cpu: Option<usize>,
    /// Nice value for receivers (and the generator), so other work on a shared host does not
    /// take their CPU; the same for every receiver.
    pub(crate) nice: Option<i32>,
    /// Intake URL the agent ships to, and the CA file that makes its certificate trusted.
    pub(crate) server_url: String,
    pub(crate) ca_file: Option<PathBuf>,
    pub(crate) api_key: String,
    /// statsdproxy `aggregate-metrics` flush interval, ms (the agent flushes every second).
    pub(crate) statsdproxy_flush_ms: u64,
    pub(crate) work_dir: PathBuf,
    /// CPU cgroup (v1) every receiver is started in, when a CPU quota is requested.
    pub(crate) cgroup: Option<PathBuf>,
}

/// A running receiver.
pub(crate) struct Receiver {
    pub(crate) kind: Kind,
    pub(crate) port: u16,
    child: Child,
    /// Where statsdproxy forwards: a bound socket nobody reads, so forwarding costs statsdproxy
    /// a real `sendto` while the bench spends no CPU on it. Its kernel counters show that
    /// statsdproxy did forward.
    upstream: Option<UdpSocket>,
    pub(crate) stderr_path: PathBuf,
    /// `rb` of the listening socket as `ss -m` reports it.
    pub(crate) rcvbuf_observed: Option<u64>,
}

/// A free UDP port on 127.0.0.1 (bound then released; the race with other programs is
/// acceptable for a benchmark on a known machine).
pub(crate) fn free_udp_port() -> anyhow::Result<u16> {
    let s = UdpSocket::bind("127.0.0.1:0").context("binding a probe socket")?;
    Ok(s.local_addr()?.port())
}

impl Receiver {
    pub(crate) fn start(kind: Kind, setup: &Setup, tag: &str) -> anyhow::Result<Receiver> {
        fs::create_dir_all(&setup.work_dir)
            .with_context(|| format!("creating {}", setup.work_dir.display()))?;
        let port = free_udp_port()?;
        let stderr_path = setup.work_dir.join(format!("{}-{tag}.stderr", kind.name()));
        let stderr = fs::File::create(&stderr_path)
            .with_context(|| format!("creating {}", stderr_path.display()))?;
        let mut upstream = None;
        let mut cmd = match kind {
            Kind::Warden => {
                let cfg = write_warden_config(setup, port, tag)?;
                let mut c = Command::new(&setup.warden_bin);
                c.arg("agent").arg("--config").arg(cfg);
                c.env_remove("WARDEN_CONFIG");
                c
            }
            Kind::Statsdproxy => {
                let up = UdpSocket::bind("127.0.0.1:0").context("binding upstream socket")?;
                let up_port = up.local_addr()?.port();
                upstream = Some(up);
                let cfg = setup.work_dir.join(format!("statsdproxy-{tag}.yaml"));
                fs::write(
                    &cfg,
                    format!(
                        "middlewares:\n  - type: aggregate-metrics\n    aggregate_counters: true\n    \
                         aggregate_gauges: true\n    flush_interval: {}\n",
                        setup.statsdproxy_flush_ms
                    ),
                )?;
                let mut c = Command::new(&setup.statsdproxy_bin);
                c.arg("--listen")
                    .arg(format!("127.0.0.1:{port}"))
                    .arg("--upstream")
                    .arg(format!("127.0.0.1:{up_port}"))
                    .arg("--config-path")
                    .arg(cfg);
                c.env("RUST_LOG", "warn");
                c
            }
            Kind::Sink => {
                let exe = std::env::current_exe().context("locating own executable")?;
                let mut c = Command::new(exe);
                c.arg("sink").arg("--port").arg(port.to_string());
                c
            }
        };
        cmd.stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(stderr));
        let procs = match &setup.cgroup {
            Some(dir) => Some(
                std::ffi::CString::new(dir.join("cgroup.procs").as_os_str().as_encoded_bytes())
                    .context("cgroup path contains a NUL byte")?,
            ),
            None => None,
        };
        sys::prepare_child(&mut cmd, setup.receiver_cpu, setup.nice, procs);

        // Hold the changed rmem_default only until the listening socket exists.
        let guard = if setup.rcvbuf > 0 {
            Some(procfs::RmemDefault::set(setup.rcvbuf)?)
        } else {
            None
        };
        let bin = match kind {
            Kind::Warden => setup.warden_bin.display().to_string(),
            Kind::Statsdproxy => setup.statsdproxy_bin.display().to_string(),
            Kind::Sink => "warden-bench sink".into(),
        };
        let child = cmd
            .spawn()
            .with_context(|| format!("starting {} ({bin})", kind.name()))?;
        let mut r = Receiver {
            kind,
            port,
            child,
            upstream,
            stderr_path,
            rcvbuf_observed: None,
        };
        let ready = r.wait_listening(Duration::from_secs(20));
        drop(guard);
        ready?;
        r.rcvbuf_observed = procfs::socket_rcvbuf(port);
        Ok(r)
    }

    fn wait_listening(&mut self, timeout: Duration) -> anyhow::Result<()> {
        let start = Instant::now();
        loop {
            if procfs::udp_sock(self.port).is_some() {
                return Ok(());
            }
            if let Some(status) = self.child.try_wait()? {
                let log = fs::read_to_string(&self.stderr_path).unwrap_or_default();
                bail!(
                    "{} exited ({status}) before listening on 127.0.0.1:{}; its stderr:\n{}",
                    self.kind.name(),
                    self.port,
                    tail(&log, 40)
                );
            }
            if start.elapsed() > timeout {
                bail!(
                    "{} did not bind 127.0.0.1:{} within {timeout:?} (stderr in {})",
                    self.kind.name(),
                    self.port,
                    self.stderr_path.display()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Fails if the receiver has died (with its stderr tail).
    pub(crate) fn check_alive(&mut self) -> anyhow::Result<()> {
        if let Some(status) = self.child.try_wait()? {
            let log = fs::read_to_string(&self.stderr_path).unwrap_or_default();
            bail!(
                "{} exited during the run ({status}); stderr:\n{}",
                self.kind.name(),
                tail(&log, 40)
            );
        }
        Ok(())
    }

    /// Datagrams statsdproxy forwarded that the upstream socket dropped or still holds, as a
    /// sanity signal that it really parsed and forwarded (not a throughput figure).
    pub(crate) fn upstream_activity(&self) -> Option<procfs::UdpSock> {
        let port = self.upstream.as_ref()?.local_addr().ok()?.port();
        procfs::udp_sock(port)
    }

    /// SIGTERM, then SIGKILL after 3 s.
    pub(crate) fn stop(mut self) {
        let _ = sys::terminate(self.child.id());
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(3) {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn tail(s: &str, n: usize) -> String {
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// Writes the agent's YAML config (mode 0600, as the agent requires).
fn write_warden_config(setup: &Setup, port: u16, tag: &str) -> anyhow::Result<PathBuf> {
    let dir = setup.work_dir.join(format!("warden-{tag}"));
    fs::create_dir_all(&dir)?;
    fs::set_permissions(&dir, fs::Permissions::from_mode(0o700))?;
    let path = dir.join("agent.yaml");
    let mut yaml = format!(
        "api_key: {api}\n\
         server_url: {url}\n\
         hostname: warden-bench\n\
         log_level: warn\n\
         dogstatsd_port: {port}\n\
         bind_host: 127.0.0.1\n\
         # 0 = do not touch SO_RCVBUF: the socket gets net.core.rmem_default, which the bench\n\
         # sets to the same value for every receiver.\n\
         dogstatsd_so_rcvbuf: 0\n\
         collect_host_metrics: false\n\
         forwarder_storage_max_size_in_bytes: 0\n\
         run_path: {run}\n",
        api = yaml_str(&setup.api_key),
        url = yaml_str(&setup.server_url),
        run = yaml_str(&dir.join("run").display().to_string()),
    );
    if let Some(ca) = &setup.ca_file {
        yaml.push_str(&format!(
            "tls_ca_file: {}\n",
            yaml_str(&ca.display().to_string())
        ));
    }
    if setup.server_url.starts_with("http://") {
        yaml.push_str("allow_insecure_http: true\n");
    }
    let _ = fs::remove_file(&path);
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&path)
        .with_context(|| format!("creating {}", path.display()))?;
    f.write_all(yaml.as_bytes())?;
    Ok(path)
}

/// A YAML double-quoted scalar.
fn yaml_str(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_else(|_| format!("{s:?}"))
}

/// A CPU cgroup (cgroup v1 `cpu` controller) limiting its members to a share of one CPU with
/// a short CFS period (10 ms; longer below a 10 % share, see [`cfs_period_and_quota`]), so a
/// throttled receiver stalls for at most a few milliseconds.
///
/// Why: on a 2-core machine one generator core cannot saturate a receiver that needs only a
/// fraction of the other core, so "sustained" would measure the generator. Giving every
/// receiver the same quota (say 25 % of a core) makes the receivers the bottleneck again and
/// keeps the comparison fair; figures at a quota are labelled as such.
pub(crate) struct CpuCgroup {
    pub(crate) dir: PathBuf,
}

impl CpuCgroup {
    pub(crate) fn create(pct: f64) -> anyhow::Result<CpuCgroup> {
        anyhow::ensure!(
            pct > 0.0 && pct <= 100.0,
            "--receiver-cpu-quota must be in (0, 100] percent of one CPU, got {pct}"
        );
        let root = Path::new("/sys/fs/cgroup/cpu");
        anyhow::ensure!(
            root.join("cpu.cfs_quota_us").exists(),
            "no cgroup v1 cpu controller at {} (needed for --receiver-cpu-quota)",
            root.display()
        );
        let dir = root.join(format!("warden-bench-{}", std::process::id()));
        fs::create_dir(&dir).with_context(|| format!("creating {}", dir.display()))?;
        let cg = CpuCgroup { dir };
        // 10 ms periods; below 10 % the period grows instead (the kernel's smallest useful
        // quota is 1 ms), so the share asked for is the share applied: 5 % = 1 ms per 20 ms.
        let (period, quota) = cfs_period_and_quota(pct);
        fs::write(cg.dir.join("cpu.cfs_period_us"), period.to_string())
            .context("setting cpu.cfs_period_us")?;
        fs::write(cg.dir.join("cpu.cfs_quota_us"), quota.to_string())
            .context("setting cpu.cfs_quota_us")?;
        Ok(cg)
    }
}

/// `(cfs_period_us, cfs_quota_us)` for `pct` percent of one CPU: a 10 ms period, or for
/// shares under 10 % a 1 ms quota over a longer period (at most 1 s, the kernel's limit).
fn cfs_period_and_quota(pct: f64) -> (u64, u64) {
    let share = pct / 100.0;
    if share >= 0.1 {
        (10_000, (share * 10_000.0).round() as u64)
    } else {
        ((1000.0 / share).round().min(1_000_000.0) as u64, 1000)
    }
}

impl Drop for CpuCgroup {
    fn drop(&mut self) {
        // Only succeeds once every receiver has exited (they are stopped before this runs).
        if let Err(e) = fs::remove_dir(&self.dir) {
            eprintln!("warning: could not remove {}: {e}", self.dir.display());
        }
    }
}

/// Removes the bench's scratch folder.
pub(crate) fn cleanup(dir: &Path) {
    let _ = fs::remove_dir_all(dir);
}

#[cfg(test)]
mod tests {
    use super::cfs_period_and_quota;

    #[test]
    fn quota_below_ten_percent_lengthens_the_period() {
        assert_eq!(cfs_period_and_quota(100.0), (10_000, 10_000));
        assert_eq!(cfs_period_and_quota(25.0), (10_000, 2_500));
        assert_eq!(cfs_period_and_quota(10.0), (10_000, 1_000));
        assert_eq!(cfs_period_and_quota(5.0), (20_000, 1_000));
        assert_eq!(cfs_period_and_quota(0.01), (1_000_000, 1_000));
    }
}
