//! Security properties of the real `warden server`: data at rest is not in plaintext anywhere
//! under the data directory (store, WAL, SQLite), orgs are isolated, revoked keys stop working
//! on the next request, TLS version floors hold, HSTS is on every response, plaintext HTTP
//! needs an explicit flag and says so.
#![allow(clippy::unwrap_used)]

mod server_support;

use std::path::Path;
use std::process::Command;

use prost::Message;
use server_support::*;
use warden_proto as proto;

/// Every file under `dir` containing `needle` (raw bytes).
fn files_containing(dir: &Path, needle: &[u8]) -> Vec<String> {
    let mut hits = Vec::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else if let Ok(data) = std::fs::read(&p)
                && data.windows(needle.len()).any(|w| w == needle)
            {
                hits.push(p.display().to_string());
            }
        }
    }
    hits
}

fn file_count(dir: &Path) -> usize {
    let mut n = 0;
    let mut stack = vec![dir.to_owned()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else {
                n += 1;
            }
        }
    }
    n
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metric_names_tags_and_keys_are_not_in_plaintext_on_disk() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    let port = free_tcp_port();
    let server = ServerProc::start(&dir, port, &[]);
    let api = create_key(&dir, "api", "default");
    let app = create_key(&dir, "app", "default");
    let c = client(&server.ca_file());
    let url = server.url();
    let now = now();
    let metric = "zz.rest.marmot_4f1c";
    let tag = "marmot-secret-7d2e";
    let host = "host-ocelot-9a1b";
    let check = "check-pangolin-3c5d";

    let body = proto::MetricPayload {
        series: vec![proto::MetricSeries {
            metric: metric.into(),
            tags: vec![format!("secret:{tag}")],
            resources: vec![proto::Resource {
                r#type: "host".into(),
                name: host.into(),
            }],
            points: vec![proto::MetricPoint {
                value: 77.125,
                timestamp: now - 10,
            }],
            r#type: 3,
            ..Default::default()
        }],
    };
    let r = c
        .post(format!("{url}/api/v2/series"))
        .header("DD-API-KEY", &api)
        .header("Content-Type", "application/x-protobuf")
        .body(body.encode_to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    let r = c
        .post(format!("{url}/api/v1/check_run"))
        .header("DD-API-KEY", &api)
        .header("Content-Type", "application/json")
        .body(format!(
            r#"[{{"check":"{check}","status":1,"host_name":"{host}","tags":["secret:{tag}"]}}]"#
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    let (st, v) = query(
        &c,
        &url,
        &api,
        &app,
        &format!("avg:{metric}{{secret:{tag}}} by {{host}}"),
        now - 120,
        now,
    )
    .await;
    assert_eq!(st, 200);
    assert_eq!(points_of(&v).len(), 1, "{v}");
    assert_eq!(points_of(&v)[0].1, 77.125);

    let needles: [&[u8]; 6] = [
        metric.as_bytes(),
        tag.as_bytes(),
        host.as_bytes(),
        check.as_bytes(),
        api.as_bytes(),
        app.as_bytes(),
    ];
    // While running (WAL, SQLite WAL), then after a clean stop (flushed segments).
    for phase in ["running", "stopped"] {
        assert!(
            file_count(&dir) >= 5,
            "{phase}: too few files to be meaningful"
        );
        for n in needles {
            let hits = files_containing(&dir, n);
            assert!(
                hits.is_empty(),
                "{phase}: {:?} in plaintext in {hits:?}",
                String::from_utf8_lossy(n)
            );
        }
        if phase == "running" {
            let st = server.stop();
            assert!(st.success());
            break;
        }
    }
    // The flushed store still has it after a restart.
    let server = ServerProc::start(&dir, port, &[]);
    let (_, v) = query(
        &c,
        &url,
        &api,
        &app,
        &format!("avg:{metric}{{*}}"),
        now - 120,
        now,
    )
    .await;
    assert_eq!(points_of(&v).len(), 1, "{v}");
    for n in needles {
        let hits = files_containing(&dir, n);
        assert!(
            hits.is_empty(),
            "after flush: {:?} in {hits:?}",
            String::from_utf8_lossy(n)
        );
    }
    drop(server);
}

async fn post_v1(c: &reqwest::Client, url: &str, api: &str, metric: &str, v: f64) -> u16 {
    c.post(format!("{url}/api/v1/series"))
        .header("DD-API-KEY", api)
        .header("Content-Type", "application/json")
        .body(format!(
            r#"{{"series":[{{"metric":"{metric}","points":[[{},{v}]]}}]}}"#,
            now() - 5
        ))
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn orgs_are_isolated_and_revoked_keys_stop_working() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    let server = ServerProc::start(&dir, free_tcp_port(), &[]);
    let acme_api = create_key(&dir, "api", "acme");
    let acme_app = create_key(&dir, "app", "acme");
    let globex_api = create_key(&dir, "api", "globex");
    let globex_app = create_key(&dir, "app", "globex");
    let c = client(&server.ca_file());
    let url = server.url();
    assert_eq!(
        post_v1(&c, &url, &acme_api, "shared.metric", 1.0).await,
        202
    );
    assert_eq!(
        post_v1(&c, &url, &globex_api, "shared.metric", 2.0).await,
        202
    );
    assert_eq!(post_v1(&c, &url, &acme_api, "acme.only", 3.0).await, 202);
    let t = now();

    let q = |api: String, app: String, query: &'static str| {
        let c = c.clone();
        let url = url.clone();
        async move { server_support::query(&c, &url, &api, &app, query, t - 120, t).await }
    };
    let (st, v) = q(acme_api.clone(), acme_app.clone(), "sum:shared.metric{*}").await;
    assert_eq!(st, 200);
    assert_eq!(
        points_of(&v).iter().map(|p| p.1).collect::<Vec<_>>(),
        [1.0],
        "{v}"
    );
    let (st, v) = q(
        globex_api.clone(),
        globex_app.clone(),
        "sum:shared.metric{*}",
    )
    .await;
    assert_eq!(st, 200);
    assert_eq!(
        points_of(&v).iter().map(|p| p.1).collect::<Vec<_>>(),
        [2.0],
        "{v}"
    );
    let (st, v) = q(globex_api.clone(), globex_app.clone(), "sum:acme.only{*}").await;
    assert_eq!(st, 200);
    assert!(points_of(&v).is_empty(), "globex sees acme's metric: {v}");
    // Keys of two orgs together are refused.
    let (st, _) = q(acme_api.clone(), globex_app.clone(), "sum:shared.metric{*}").await;
    assert_eq!(st, 403);
    let (st, _) = q(acme_app.clone(), acme_app.clone(), "sum:shared.metric{*}").await;
    assert_eq!(st, 403);

    // Revoke acme's API key with the CLI while the server runs.
    let list = Command::new(BIN)
        .args(["keys", "list", "--data-dir"])
        .arg(&dir)
        .output()
        .unwrap();
    let list = String::from_utf8(list.stdout).unwrap();
    assert!(!list.contains(&acme_api[8..]), "secret in keys list");
    let id = list
        .lines()
        .find(|l| l.contains(" acme ") && l.contains(" api "))
        .and_then(|l| l.split_whitespace().next())
        .unwrap_or_else(|| panic!("no acme api key in\n{list}"))
        .to_owned();
    let st = Command::new(BIN)
        .args(["keys", "revoke", &id, "--data-dir"])
        .arg(&dir)
        .output()
        .unwrap();
    assert!(st.status.success());
    assert_eq!(
        String::from_utf8_lossy(&st.stdout).trim(),
        format!("revoked key {id}")
    );
    assert_eq!(
        post_v1(&c, &url, &acme_api, "shared.metric", 5.0).await,
        403
    );
    assert_eq!(
        post_v1(&c, &url, &globex_api, "shared.metric", 6.0).await,
        202
    );
    let r = c
        .get(format!("{url}/api/v1/validate?api_key={globex_api}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.text().await.unwrap(), r#"{"valid":true}"#);
    let log = server.log_text();
    for k in [&acme_api, &acme_app, &globex_api, &globex_app] {
        assert!(!log.contains(k.as_str()), "key in server log");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_floor_hsts_everywhere_and_loud_plain_http() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    let server = ServerProc::start(&dir, free_tcp_port(), &["--tls-min-version", "1.3"]);
    let ca = std::fs::read(server.ca_file()).unwrap();
    let tls12 = reqwest::Client::builder()
        .use_rustls_tls()
        .tls_built_in_root_certs(false)
        .add_root_certificate(reqwest::Certificate::from_pem(&ca).unwrap())
        .max_tls_version(reqwest::tls::Version::TLS_1_2)
        .build()
        .unwrap();
    let url = server.url();
    assert!(
        tls12
            .get(format!("{url}/api/v1/validate"))
            .send()
            .await
            .is_err(),
        "TLS 1.2 accepted by a 1.3-only server"
    );
    let c = client(&server.ca_file());
    for (path, want) in [
        ("/api/v1/validate", 403),
        ("/nowhere", 404),
        ("/health", 200),
    ] {
        let r = c.get(format!("{url}{path}")).send().await.unwrap();
        assert_eq!(r.status().as_u16(), want, "{path}");
        assert_eq!(
            r.headers()["strict-transport-security"],
            "max-age=31536000; includeSubDomains",
            "{path}"
        );
    }
    drop(server);

    // Default floor: TLS 1.2 works; an untrusted CA does not.
    let server = ServerProc::start(&dir, free_tcp_port(), &[]);
    let r = tls12
        .get(format!("{}/health", server.url()))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let other = tempfile::tempdir().unwrap();
    let stranger = ServerProc::start(&other.path().join("d"), free_tcp_port(), &[]);
    let wrong = client(&stranger.ca_file());
    assert!(
        wrong
            .get(format!("{}/health", server.url()))
            .send()
            .await
            .is_err()
    );
    drop(stranger);
    drop(server);

    // The operator's certificate instead of a generated one.
    let own = tempfile::tempdir().unwrap();
    let own_dir = own.path().join("d");
    let cert = dir.join("tls/server.pem").display().to_string();
    let key = dir.join("tls/server.key").display().to_string();
    let with_files = ServerProc::start(
        &own_dir,
        free_tcp_port(),
        &["--tls-cert", &cert, "--tls-key", &key],
    );
    let r = client(&dir.join("tls/ca.pem"))
        .get(format!("{}/health", with_files.url()))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(
        !own_dir.join("tls").exists(),
        "generated a CA despite --tls-cert"
    );
    drop(with_files);

    // Plain HTTP only when asked, and loudly.
    let plain = ServerProc::start(&dir, free_tcp_port(), &["--insecure-http"]);
    let r = reqwest::Client::new()
        .get(format!("{}/health", plain.url()))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.headers().contains_key("strict-transport-security"));
    let log = plain.log_text();
    assert!(log.contains("PLAIN HTTP"), "{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn external_master_key_and_retention_flag() {
    use std::os::unix::fs::PermissionsExt;
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    let key_file = tmp.path().join("master.key");
    std::fs::write(&key_file, "ab".repeat(32)).unwrap();
    std::fs::set_permissions(&key_file, std::fs::Permissions::from_mode(0o600)).unwrap();
    let port = free_tcp_port();
    let key_arg = key_file.display().to_string();
    let args = ["--master-key-file", &key_arg, "--retention-raw-days", "1"];
    let server = ServerProc::start(&dir, port, &args);
    assert!(
        !dir.join("store/keys/master.key").exists(),
        "a key was written next to the data"
    );
    let api = create_key(&dir, "api", "default");
    let app = create_key(&dir, "app", "default");
    let c = client(&server.ca_file());
    let url = server.url();
    let r = c
        .post(format!("{url}/api/v1/series"))
        .header("DD-API-KEY", &api)
        .header("Content-Type", "application/json")
        .body(format!(
            r#"{{"series":[{{"metric":"ret.m","points":[[{},1]]}}]}}"#,
            now() - 2 * 86_400
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let body = r.text().await.unwrap();
    assert!(
        body.contains("older than the raw retention of 24 hours"),
        "{body}"
    );
    assert_eq!(post_v1(&c, &url, &api, "ret.m", 4.0).await, 202);
    server.stop();
    // Restarting without the key cannot read the store: it refuses to start.
    let out = Command::new(BIN)
        .args([
            "server",
            "--listen",
            &format!("127.0.0.1:{}", free_tcp_port()),
        ])
        .arg("--data-dir")
        .arg(&dir)
        .env_remove("WARDEN_DATA_DIR")
        .output()
        .unwrap();
    assert!(!out.status.success(), "started without the master key");
    // With it, the data is there.
    let server = ServerProc::start(&dir, port, &args);
    let (st, v) = query(&c, &url, &api, &app, "avg:ret.m{*}", now() - 120, now()).await;
    assert_eq!(st, 200);
    assert_eq!(
        points_of(&v).iter().map(|p| p.1).collect::<Vec<_>>(),
        [4.0],
        "{v}"
    );
    drop(server);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotate_master_rewraps_keys_and_keeps_data_readable() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    let port = free_tcp_port();
    let server = ServerProc::start(&dir, port, &[]);
    let api = create_key(&dir, "api", "default");
    let app = create_key(&dir, "app", "default");
    let c = client(&server.ca_file());
    let url = server.url();
    assert_eq!(post_v1(&c, &url, &api, "rot.m", 7.5).await, 202);
    server.stop();

    let key_path = dir.join("store/keys/master.key");
    let before = std::fs::read_to_string(&key_path).unwrap();
    let out = Command::new(BIN)
        .args(["keys", "rotate-master", "--data-dir"])
        .arg(&dir)
        .env_remove("WARDEN_DATA_DIR")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("rotated to version 2"), "{stdout}");
    let after = std::fs::read_to_string(&key_path).unwrap();
    assert_ne!(before, after, "a new master key replaced the old one");

    let server = ServerProc::start(&dir, port, &[]);
    let (st, v) = query(&c, &url, &api, &app, "avg:rot.m{*}", now() - 120, now()).await;
    assert_eq!(st, 200);
    assert_eq!(
        points_of(&v).iter().map(|p| p.1).collect::<Vec<_>>(),
        [7.5],
        "{v}"
    );
    drop(server);
}
