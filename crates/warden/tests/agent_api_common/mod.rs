//! Helpers shared by the `agent_api_*` tests: agent configs with the local API on a free port,
//! running `warden agent <command>`, and a raw HTTPS client that pins the agent's certificate.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

/// `warden agent <args> --config <config>`.
pub(crate) fn cli(config: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_warden"))
        .arg("agent")
        .args(args)
        .arg("--config")
        .arg(config)
        .env_remove("WARDEN_CONFIG")
        .output()
        .expect("run warden agent <command>")
}

/// Stdout of a command that must succeed.
pub(crate) fn cli_ok(config: &Path, args: &[&str]) -> String {
    let out = cli(config, args);
    assert!(
        out.status.success(),
        "warden agent {args:?} failed ({}):\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Polls `f` every 100 ms until it returns Some, or panics after `secs` seconds.
pub(crate) fn wait_for<T>(secs: u64, what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(t) = f() {
            return t;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Where a running agent with config in `dir` keeps its API files.
pub(crate) struct ApiFiles {
    pub(crate) base: String,
    pub(crate) token: String,
    pub(crate) cert_pem: String,
}

impl ApiFiles {
    pub(crate) fn read(dir: &Path) -> ApiFiles {
        let run = dir.join("run");
        let endpoint = std::fs::read_to_string(run.join("ipc_endpoint")).expect("ipc_endpoint");
        ApiFiles {
            base: format!("https://{}", endpoint.trim()),
            token: std::fs::read_to_string(dir.join("auth_token")).expect("auth_token"),
            cert_pem: std::fs::read_to_string(run.join("ipc_cert.pem")).expect("ipc_cert.pem"),
        }
    }

    /// A reqwest client that trusts exactly the agent's certificate.
    pub(crate) fn client(&self) -> reqwest::Client {
        let tls = warden_agent::api::tls::pinned_client_config(&self.cert_pem).expect("pin");
        reqwest::Client::builder()
            .use_preconfigured_tls(tls)
            .no_proxy()
            .timeout(Duration::from_secs(60))
            .build()
            .expect("client")
    }
}

pub(crate) fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

/// A `checks_d` folder (0755) under `dir` with the given executables (0755).
pub(crate) fn checks_d(dir: &Path, scripts: &[(&str, &str)]) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let d = dir.join("checks.d");
    std::fs::create_dir_all(&d).expect("mkdir checks.d");
    std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    for (name, body) in scripts {
        let p = d.join(name);
        std::fs::write(&p, body).expect("write check");
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    }
    d
}
