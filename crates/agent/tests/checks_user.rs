//! User checks from `checks_d`: real `#!/bin/sh` scripts, real processes, real timeouts.
#![allow(clippy::unwrap_used)] // tests: a failed unwrap is a failed test

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use warden_agent::checks::{CheckKind, CheckOutput, CheckRegistry, run_checks, run_once};
use warden_agent::{AgentConfig, Outgoing, Telemetry};
use warden_model::{CheckStatus, MetricKind};

fn config(dir: &Path, timeout: u64, interval: u64) -> AgentConfig {
    let yaml = format!(
        "api_key: k\nhostname: test-host\ntags: [env:test]\nchecks_d: {}\ncheck_timeout: {timeout}\n\
         check_interval: {interval}\n",
        dir.display()
    );
    AgentConfig::from_yaml_with_env(&yaml, "test", &[]).expect("valid test config")
}

fn script(dir: &Path, name: &str, body: &str, mode: u32) {
    let p = dir.join(name);
    std::fs::write(&p, format!("#!/bin/sh\n{body}")).unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
}

fn main_sc(out: &CheckOutput) -> &warden_model::ServiceCheck {
    let name = format!("warden.check.{}", out.name);
    out.service_checks
        .iter()
        .find(|s| s.name == name)
        .unwrap_or_else(|| panic!("{name} missing in {out:#?}"))
}

#[tokio::test]
async fn json_output_becomes_exact_metrics_and_service_checks() {
    let dir = tempfile::tempdir().unwrap();
    script(
        dir.path(),
        "queue",
        r#"cat <<'EOF'
{"metrics":[
  {"name":"app.queue.depth","value":42.5,"type":"gauge","tags":["queue:jobs"],"unit":"item"},
  {"name":"app.jobs.done","value":7,"type":"count"},
  {"name":"app.bytes","value":1000,"type":"rate"}
 ],
 "service_checks":[{"name":"app.queue.ok","status":1,"message":"backlog","tags":["queue:jobs"]}]}
EOF
"#,
        0o700,
    );
    let cfg = config(dir.path(), 5, 15);
    let out = run_once(&cfg, "queue").await.unwrap();
    assert_eq!(out.kind, CheckKind::User);
    assert_eq!(out.status, CheckStatus::Ok, "{out:#?}");
    assert!(out.error.is_none());
    // A rate needs two samples: the first run emits the gauge and the count only.
    assert_eq!(out.series.len(), 2, "{:#?}", out.series);
    let depth = &out.series[0];
    assert_eq!(depth.name, "app.queue.depth");
    assert_eq!(depth.kind, MetricKind::Gauge);
    assert_eq!(depth.points[0].value, 42.5);
    assert_eq!(depth.tags, ["env:test", "queue:jobs"]);
    assert_eq!(depth.unit.as_deref(), Some("item"));
    assert_eq!(depth.host, "test-host");
    assert_eq!(depth.interval, 15);
    let done = &out.series[1];
    assert_eq!(
        (done.name.as_str(), done.kind, done.points[0].value),
        ("app.jobs.done", MetricKind::Count, 7.0)
    );
    let app = out
        .service_checks
        .iter()
        .find(|s| s.name == "app.queue.ok")
        .unwrap();
    assert_eq!(app.status, CheckStatus::Warning);
    assert_eq!(app.message.as_deref(), Some("backlog"));
    assert_eq!(app.tags, ["env:test", "queue:jobs"]);
    assert_eq!(main_sc(&out).status, CheckStatus::Ok);
}

#[tokio::test]
async fn nagios_warning_with_perfdata_becomes_gauges() {
    let dir = tempfile::tempdir().unwrap();
    script(
        dir.path(),
        "check_disk.sh",
        "echo \"DISK WARNING - free space: 20% | 'used pct'=80%;75;90;0;100 free=2048MB;;;0 latency=0.25s\"\n\
         echo 'second line of long output | inodes=5000;;;'\nexit 1\n",
        0o755,
    );
    let out = run_once(&config(dir.path(), 5, 15), "check_disk.sh")
        .await
        .unwrap();
    assert_eq!(out.status, CheckStatus::Warning, "{out:#?}");
    assert_eq!(out.message, "DISK WARNING - free space: 20%");
    let sc = main_sc(&out);
    assert_eq!(sc.name, "warden.check.check_disk.sh");
    assert_eq!(sc.status, CheckStatus::Warning);
    assert_eq!(
        sc.message.as_deref(),
        Some("DISK WARNING - free space: 20%")
    );
    let got: Vec<(&str, f64, Option<&str>)> = out
        .series
        .iter()
        .map(|s| (s.name.as_str(), s.points[0].value, s.unit.as_deref()))
        .collect();
    assert_eq!(
        got,
        [
            ("check_disk_sh.used_pct", 80.0, Some("percent")),
            ("check_disk_sh.free", 2048.0, Some("megabyte")),
            ("check_disk_sh.latency", 0.25, Some("second")),
            ("check_disk_sh.inodes", 5000.0, None),
        ]
    );
    assert!(out.series.iter().all(|s| s.kind == MetricKind::Gauge));
    assert!(out.error.is_none(), "exit 1 is a valid WARNING result");
}

#[tokio::test]
async fn nagios_exit_codes_map_to_statuses() {
    let dir = tempfile::tempdir().unwrap();
    for (name, code) in [("ok", 0), ("crit", 2), ("unk", 3), ("weird", 42)] {
        script(
            dir.path(),
            name,
            &format!("echo {name}\nexit {code}\n"),
            0o700,
        );
    }
    let cfg = config(dir.path(), 5, 15);
    let status = |o: &CheckOutput| (o.status, o.error.is_some());
    assert_eq!(
        status(&run_once(&cfg, "ok").await.unwrap()),
        (CheckStatus::Ok, false)
    );
    assert_eq!(
        status(&run_once(&cfg, "crit").await.unwrap()),
        (CheckStatus::Critical, false)
    );
    assert_eq!(
        status(&run_once(&cfg, "unk").await.unwrap()),
        (CheckStatus::Unknown, false)
    );
    let weird = run_once(&cfg, "weird").await.unwrap();
    assert_eq!(status(&weird), (CheckStatus::Unknown, true));
    assert!(weird.message.contains("code 42"), "{}", weird.message);
}

#[tokio::test]
async fn hanging_check_is_killed_with_its_process_group() {
    let dir = tempfile::tempdir().unwrap();
    let marker = dir.path().join("child.pid");
    // The script starts a background child in its group, records its pid, then hangs.
    script(
        dir.path(),
        "hang",
        &format!("sleep 30 &\necho $! > {}\nsleep 30\n", marker.display()),
        0o700,
    );
    let t0 = Instant::now();
    let out = run_once(&config(dir.path(), 1, 15), "hang").await.unwrap();
    let took = t0.elapsed();
    assert!(took < Duration::from_millis(2500), "took {took:?}");
    assert_eq!(out.status, CheckStatus::Critical);
    assert!(
        out.message.contains("timed out after 1s"),
        "{}",
        out.message
    );
    assert!(out.error.is_some());
    assert_eq!(main_sc(&out).status, CheckStatus::Critical);
    // The background `sleep` was killed too (it is a zombie or gone, never still sleeping).
    let pid = std::fs::read_to_string(&marker).unwrap().trim().to_owned();
    let deadline = Instant::now() + Duration::from_secs(2);
    loop {
        let state = std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .ok()
            .and_then(|s| {
                s.rsplit_once(')')
                    .map(|(_, r)| r.trim_start().chars().next())
            })
            .flatten();
        if matches!(state, None | Some('Z') | Some('X')) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "background child {pid} still alive: {state:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn garbage_with_exit_0_is_ok_through_the_nagios_path() {
    let dir = tempfile::tempdir().unwrap();
    script(
        dir.path(),
        "noise",
        "printf 'garbage \\001\\002 ;;; | not=perf=data x\\n<html>\\n'\nexit 0\n",
        0o700,
    );
    let out = run_once(&config(dir.path(), 5, 15), "noise").await.unwrap();
    assert_eq!(out.status, CheckStatus::Ok, "{out:#?}");
    assert!(out.message.starts_with("garbage"), "{}", out.message);
    assert!(out.error.is_none());
}

#[tokio::test]
async fn invalid_json_is_critical_with_the_position() {
    let dir = tempfile::tempdir().unwrap();
    script(
        dir.path(),
        "badjson",
        "echo '{\"metrics\": [ {\"name\": \"x\", \"value\": }'\n",
        0o700,
    );
    script(
        dir.path(),
        "badtype",
        "echo '{\"metrics\": [ {\"name\": \"x\", \"value\": 1, \"type\": \"histogram\"} ]}'\n",
        0o700,
    );
    let cfg = config(dir.path(), 5, 15);
    let out = run_once(&cfg, "badjson").await.unwrap();
    assert_eq!(out.status, CheckStatus::Critical);
    assert!(
        out.message.contains("invalid JSON") && out.message.contains("line 1 column"),
        "{}",
        out.message
    );
    let out = run_once(&cfg, "badtype").await.unwrap();
    assert_eq!(out.status, CheckStatus::Critical);
    assert!(out.message.contains("histogram"), "{}", out.message);
    assert!(out.series.is_empty());
}

#[tokio::test]
async fn crash_by_signal_is_critical() {
    let dir = tempfile::tempdir().unwrap();
    script(dir.path(), "crash", "echo starting\nkill -SEGV $$\n", 0o700);
    let out = run_once(&config(dir.path(), 5, 15), "crash").await.unwrap();
    assert_eq!(out.status, CheckStatus::Critical);
    assert!(out.message.contains("signal 11"), "{}", out.message);
}

#[tokio::test]
async fn group_writable_script_is_refused_and_not_run() {
    let dir = tempfile::tempdir().unwrap();
    let marker = dir.path().join("ran");
    script(
        dir.path(),
        "unsafe",
        &format!("touch {}\necho OK\n", marker.display()),
        0o770,
    );
    let out = run_once(&config(dir.path(), 5, 15), "unsafe")
        .await
        .unwrap();
    assert_eq!(out.status, CheckStatus::Critical);
    assert!(
        out.message.contains("refused") && out.message.contains("chmod go-w"),
        "{}",
        out.message
    );
    assert!(!marker.exists(), "a refused script must not run");
}

#[tokio::test]
async fn environment_is_not_leaked_to_checks() {
    let dir = tempfile::tempdir().unwrap();
    script(
        dir.path(),
        "env",
        "if [ -n \"$HOME\" ] || [ -n \"$CARGO\" ]; then echo \"leaked\"; exit 2; fi\necho \"clean $PATH\"\n",
        0o700,
    );
    let out = run_once(&config(dir.path(), 5, 15), "env").await.unwrap();
    assert_eq!(out.status, CheckStatus::Ok, "{}", out.message);
}

#[tokio::test]
async fn oversized_output_is_cut_and_critical() {
    let dir = tempfile::tempdir().unwrap();
    // ~2 MiB of output, more than the 1 MiB cap, then would hang.
    script(
        dir.path(),
        "flood",
        "i=0\nwhile [ $i -lt 40 ]; do head -c 65536 /dev/zero | tr '\\0' 'a'; i=$((i+1)); done\nsleep 30\n",
        0o700,
    );
    let t0 = Instant::now();
    let out = run_once(&config(dir.path(), 10, 15), "flood")
        .await
        .unwrap();
    assert!(t0.elapsed() < Duration::from_secs(5), "{:?}", t0.elapsed());
    assert_eq!(out.status, CheckStatus::Critical);
    assert!(out.message.contains("exceeded"), "{}", out.message);
}

#[tokio::test]
async fn runner_keeps_running_others_while_one_hangs_and_skips_non_executables() {
    let dir = tempfile::tempdir().unwrap();
    script(dir.path(), "fast", "echo fine\n", 0o700);
    script(dir.path(), "slow", "sleep 30\n", 0o700);
    script(dir.path(), "notexec", "echo never\n", 0o600);
    script(dir.path(), "groupw", "echo never\n", 0o720);
    std::fs::write(dir.path().join(".swp"), "x").unwrap();
    let cfg = config(dir.path(), 1, 1);
    let (tx, mut rx) = tokio::sync::mpsc::channel(256);
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let registry = CheckRegistry::new();
    let telemetry = Arc::new(Telemetry::default());
    let task = tokio::spawn(run_checks(
        cfg,
        tx,
        telemetry.clone(),
        registry.clone(),
        stop_rx,
    ));
    // Within 3.5 s: `fast` ran at least twice while `slow` timed out at least once.
    let deadline = Instant::now() + Duration::from_millis(3500);
    while Instant::now() < deadline {
        match tokio::time::timeout(Duration::from_millis(100), rx.recv()).await {
            Ok(Some(Outgoing::ServiceChecks(_) | Outgoing::Series(_))) | Err(_) => {}
            Ok(other) => panic!("unexpected {other:?}"),
        }
    }
    let fast = registry.get("fast").unwrap();
    assert!(fast.runs >= 2, "fast ran {} times", fast.runs);
    assert_eq!(fast.last.status, CheckStatus::Ok);
    let slow = registry.get("slow").unwrap();
    assert!(slow.runs >= 1);
    assert!(slow.last.message.contains("timed out"));
    assert!(registry.get("notexec").is_none());
    assert!(registry.get(".swp").is_none());
    let groupw = registry.get("groupw").unwrap();
    assert!(groupw.last.message.contains("refused"));
    assert!(telemetry.check_errors.load(Ordering::Relaxed) >= 2);

    // A script added later is picked up by the rescan; a removed one leaves the registry.
    script(dir.path(), "late", "echo hi\n", 0o700);
    std::fs::remove_file(dir.path().join("fast")).unwrap();
    let deadline = Instant::now() + Duration::from_secs(4);
    while registry.get("late").is_none() || registry.get("fast").is_some() {
        assert!(Instant::now() < deadline, "rescan did not happen");
        while let Ok(Some(_)) = tokio::time::timeout(Duration::from_millis(50), rx.recv()).await {}
    }

    stop_tx.send(true).unwrap();
    tokio::time::timeout(Duration::from_secs(5), task)
        .await
        .expect("run_checks stops on shutdown (the hanging check is cancelled)")
        .unwrap();
}

#[tokio::test]
async fn json_rate_is_the_per_second_increase_between_runs() {
    let dir = tempfile::tempdir().unwrap();
    let state = tempfile::tempdir().unwrap();
    let counter = state.path().join("n");
    script(
        dir.path(),
        "counter",
        &format!(
            "n=$(cat {c} 2>/dev/null || echo 0)\nn=$((n+100))\necho $n > {c}\n\
             echo '{{\"metrics\":[{{\"name\":\"app.total\",\"value\":'$n',\"type\":\"rate\"}}]}}'\n",
            c = counter.display()
        ),
        0o700,
    );
    let (tx, mut rx) = tokio::sync::mpsc::channel(64);
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let task = tokio::spawn(run_checks(
        config(dir.path(), 5, 1),
        tx,
        Arc::new(Telemetry::default()),
        CheckRegistry::new(),
        stop_rx,
    ));
    let rate = tokio::time::timeout(Duration::from_secs(6), async {
        loop {
            if let Some(Outgoing::Series(s)) = rx.recv().await {
                if let Some(x) = s.iter().find(|x| x.name == "app.total") {
                    return x.clone();
                }
            }
        }
    })
    .await
    .expect("a rate after the second run");
    assert_eq!(rate.kind, MetricKind::Gauge);
    // 100 more every run, runs about 1 s apart.
    let v = rate.points[0].value;
    assert!((50.0..=200.0).contains(&v), "rate {v}");
    let runs: u64 = std::fs::read_to_string(&counter)
        .unwrap()
        .trim()
        .parse::<u64>()
        .unwrap()
        / 100;
    assert!(runs >= 2, "the first run must not have produced a rate");
    stop_tx.send(true).unwrap();
    tokio::time::timeout(Duration::from_secs(5), task)
        .await
        .unwrap()
        .unwrap();
}

#[tokio::test]
async fn script_in_a_group_writable_folder_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    script(dir.path(), "ok", "echo fine\n", 0o700);
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o770)).unwrap();
    let out = run_once(&config(dir.path(), 5, 15), "ok").await.unwrap();
    assert_eq!(out.status, CheckStatus::Critical);
    assert!(out.message.contains("folder"), "{}", out.message);
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o700)).unwrap();
    let out = run_once(&config(dir.path(), 5, 15), "ok").await.unwrap();
    assert_eq!(out.status, CheckStatus::Ok, "{}", out.message);
}
