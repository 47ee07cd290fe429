//! Shared helpers for end-to-end tests that run the real `warden` binary.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a failed unwrap is a failed test
#![allow(dead_code)]

use std::net::UdpSocket;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A free UDP port on loopback (bound, read, released).
pub(crate) fn free_udp_port() -> u16 {
    let s = UdpSocket::bind("127.0.0.1:0").expect("bind");
    s.local_addr().expect("addr").port()
}

/// Writes an agent config (mode 0600) and returns its path.
pub(crate) fn write_config(dir: &Path, yaml: &str) -> PathBuf {
    let p = dir.join("agent.yaml");
    std::fs::write(&p, yaml).expect("write config");
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    p
}

/// A running `warden agent`, killed on drop.
pub(crate) struct Agent {
    pub(crate) child: Child,
    pub(crate) log: PathBuf,
}

impl Agent {
    pub(crate) fn start(config: &Path) -> Agent {
        let log = config.with_extension("log");
        let out = std::fs::File::create(&log).expect("log file");
        let child = Command::new(env!("CARGO_BIN_EXE_warden"))
            .args(["agent", "--config"])
            .arg(config)
            .env("WARDEN_LOG", "info")
            .stdout(Stdio::null())
            .stderr(out)
            .spawn()
            .expect("spawn warden agent");
        Agent { child, log }
    }

    /// Waits until the agent logged that it started (its sockets are bound by then).
    pub(crate) fn wait_started(&self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if std::fs::read_to_string(&self.log)
                .unwrap_or_default()
                .contains("warden agent started")
            {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("agent did not start; log:\n{}", self.log_text());
    }

    pub(crate) fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// SIGTERM and wait: the agent flushes and persists before exiting.
    pub(crate) fn stop(mut self) -> std::process::ExitStatus {
        let pid = self.child.id().to_string();
        let _ = Command::new("kill").args(["-TERM", &pid]).status();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(Some(st)) = self.child.try_wait() {
                return st;
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                panic!("agent did not stop within 30 s; log:\n{}", self.log_text());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The Python interpreter of the test venv (`scripts/test-deps` makes it).
pub(crate) fn python() -> String {
    if let Ok(p) = std::env::var("WARDEN_TEST_PYTHON") {
        return p;
    }
    let venv = concat!(env!("CARGO_MANIFEST_DIR"), "/../../target/pyenv/bin/python");
    if Path::new(venv).exists() {
        return venv.to_owned();
    }
    panic!(
        "no test Python: run scripts/test-deps (or scripts/test), which installs the datadog client"
    );
}

/// Sleeps until the wall clock is at `lo..hi` seconds into a 10 s bucket.
pub(crate) fn align_to_bucket(lo: u64, hi: u64) {
    loop {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap();
        let s = now.as_secs() % 10;
        if s >= lo && s < hi {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}
