//! The least-privilege packaging in `dist/`: the systemd unit keeps its hardening, passes
//! `systemd-analyze verify` (when systemd is installed), and the example configuration it
//! documents is valid and writes only where the unit allows.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;

const DIST: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../dist");

/// `(key, value)` of every directive, in order.
fn directives(unit: &str) -> Vec<(String, String)> {
    unit.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#') && !l.starts_with('['))
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
        .collect()
}

#[test]
fn unit_runs_unprivileged_with_a_read_only_system() {
    let unit = std::fs::read_to_string(Path::new(DIST).join("warden-agent.service")).unwrap();
    let d = directives(&unit);
    let get = |k: &str| -> Vec<&str> {
        d.iter()
            .filter(|(key, _)| key == k)
            .map(|(_, v)| v.as_str())
            .collect()
    };
    for (k, v) in [
        ("User", "warden"),
        ("NoNewPrivileges", "yes"),
        ("ProtectSystem", "strict"),
        ("ProtectHome", "yes"),
        ("PrivateTmp", "yes"),
        ("PrivateDevices", "yes"),
        ("CapabilityBoundingSet", ""),
        ("AmbientCapabilities", ""),
        ("RestrictSUIDSGID", "yes"),
    ] {
        assert_eq!(get(k), [v], "{k}");
    }
    let rw: Vec<&str> = get("ReadWritePaths")
        .iter()
        .flat_map(|v| v.split_whitespace())
        .collect();
    assert_eq!(rw, ["/var/lib/warden-agent", "/run/warden-agent"]);
    assert_eq!(
        get("ExecStart"),
        ["/usr/bin/warden agent --config /etc/warden/agent.yaml"]
    );

    // The example config the unit points to is valid and keeps all state in the state dir.
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("agent.yaml");
    std::fs::copy(Path::new(DIST).join("agent.yaml.example"), &p).unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o640)).unwrap();
    let cfg = warden_agent::AgentConfig::load(&p).unwrap();
    for written in [
        &cfg.run_path,
        &cfg.auth_token_file_path,
        &cfg.forwarder_storage_path,
    ] {
        assert!(written.starts_with("/var/lib/warden-agent"), "{written:?}");
    }
    assert_eq!(
        (cfg.cmd_host.as_str(), cfg.cmd_port, cfg.gui_port),
        ("127.0.0.1", 5001, -1)
    );

    // systemd's own checker, with ExecStart pointed at this build's binary.
    if Path::new("/usr/bin/systemd-analyze").exists() {
        let local = dir.path().join("warden-agent.service");
        std::fs::write(
            &local,
            unit.replace("/usr/bin/warden", env!("CARGO_BIN_EXE_warden")),
        )
        .unwrap();
        let out = std::process::Command::new("systemd-analyze")
            .args(["verify", "--man=no"])
            .arg(&local)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        let problems: Vec<&str> = err
            .lines()
            .filter(|l| l.contains("warden-agent.service"))
            .collect();
        assert!(problems.is_empty(), "systemd-analyze verify: {err}");
    }
}
