//! Overhead of app protection on a trivial handler, over real loopback HTTP, in one run.
//!
//! Four axum servers in this process answer every request with `ok`: one bare, one behind
//! the `warden-appsec` layer with ruleset 1.18.2 (block mode by default), one behind the
//! layer with Warden's built-in ruleset (what `WARDEN_APPSEC_ENABLED=true` alone gives), and
//! one behind the layer with a one-rule ruleset that never matches (the layer's own cost: body
//! buffering, address building, context, response inspection; almost no WAF work). A client thread
//! replays the benign corpus over one keep-alive connection per server, rotating servers
//! request by request so all see the same machine load, and prints p50/p99 latency of each
//! and of the per-request differences to the bare server. Then CRS attacks go alternately to
//! the 1.18.2 server (reports as trace spans to a stand-in agent) and to a twin that discards
//! its reports: the difference is what reporting costs a request with events.
//!
//! ```text
//! cargo run -p warden-appsec --release --example overhead_bench -- [--rounds 3] [--mode block|monitor]
//! ```

#[path = "../tests/common/mod.rs"]
mod common;

use std::io::{BufReader, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Instant;

use axum::Router;
use axum::extract::{ConnectInfo, Extension, MatchedPath};
use axum::routing::get;
use warden_appsec::{AgentConfig, Appsec, Config, Mode, RequestHandle};

/// An event sink that drops every report.
struct Discard;

impl warden_appsec::EventSink for Discard {
    fn report(&self, _: warden_appsec::RequestReport) {}
}

/// Benign requests not answered 200 (a blocked benign request is a false positive; its
/// latency still counts).
static NON_200: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// A stand-in for the agent's trace port: reads each request and answers 200.
fn trace_receiver() -> std::io::Result<String> {
    use std::io::{BufRead, Read};
    let l = std::net::TcpListener::bind("127.0.0.1:0")?;
    let url = format!("http://{}", l.local_addr()?);
    std::thread::spawn(move || {
        for s in l.incoming().flatten() {
            let mut r = BufReader::new(&s);
            let mut len = 0usize;
            loop {
                let mut line = String::new();
                if r.read_line(&mut line).unwrap_or(0) == 0 || line.trim().is_empty() {
                    break;
                }
                if let Some((k, v)) = line.split_once(':') {
                    if k.eq_ignore_ascii_case("content-length") {
                        len = v.trim().parse().unwrap_or(0);
                    }
                }
            }
            let mut body = vec![0; len];
            let _ = r.read_exact(&mut body);
            let _ = (&s)
                .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\n{}");
        }
    });
    Ok(url)
}

/// Times each RASP hook (benign input, 2,000 calls) inside a real protected request whose
/// query is `?name=bob&path=welcome.txt`; answers `hook p50 p99` lines in µs.
async fn rasp_costs(Extension(h): Extension<RequestHandle>) -> String {
    type Hook = Box<dyn Fn(&RequestHandle) -> bool + Send>;
    let hooks: Vec<(&str, Hook)> = vec![
        (
            "check_sql",
            Box::new(|h: &RequestHandle| {
                h.check_sql("SELECT id FROM users WHERE name = 'bob'", "sqlite")
                    .is_ok()
            }),
        ),
        (
            "check_file_open",
            Box::new(|h: &RequestHandle| h.check_file_open("/srv/data/welcome.txt").is_ok()),
        ),
        (
            "check_outbound_url",
            Box::new(|h: &RequestHandle| {
                h.check_outbound_url("https://api.example.com/v1/users/bob")
                    .is_ok()
            }),
        ),
        (
            "check_shell",
            Box::new(|h: &RequestHandle| h.check_shell("ls -l /srv/data/bob").is_ok()),
        ),
        (
            "check_exec",
            Box::new(|h: &RequestHandle| h.check_exec(&["ls", "-l", "bob"]).is_ok()),
        ),
    ];
    let mut out = String::new();
    for (name, f) in hooks {
        let mut t = Vec::with_capacity(2000);
        for _ in 0..2000 {
            let s = Instant::now();
            let ok = f(&h);
            t.push(s.elapsed().as_secs_f64() * 1e6);
            if !ok {
                return format!("{name} blocked a benign call\n");
            }
        }
        t.sort_by(f64::total_cmp);
        out.push_str(&format!(
            "{name} {:.1} {:.1}\n",
            pct(&t, 0.5),
            pct(&t, 0.99)
        ));
    }
    out
}

fn pct(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn summary(name: &str, mut v: Vec<f64>) -> (f64, f64) {
    v.sort_by(f64::total_cmp);
    let mean = v.iter().sum::<f64>() / v.len() as f64;
    let (p50, p99) = (pct(&v, 0.5), pct(&v, 0.99));
    println!(
        "{name:<28} n={:<6} mean={mean:>8.1} µs  p50={p50:>8.1} µs  p99={p99:>8.1} µs",
        v.len()
    );
    (p50, p99)
}

async fn serve(app: Router) -> std::io::Result<u16> {
    let l = tokio::net::TcpListener::bind(("127.0.0.1", 0)).await?;
    let port = l.local_addr()?.port();
    tokio::spawn(async move {
        let _ = axum::serve(l, app.into_make_service_with_connect_info::<SocketAddr>()).await;
    });
    Ok(port)
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut rounds = 3usize;
    let mut mode = Mode::Block;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--rounds" => rounds = args.next().ok_or("--rounds N")?.parse()?,
            "--mode" => {
                mode = args
                    .next()
                    .ok_or("--mode block|monitor")?
                    .parse()
                    .map_err(|()| "--mode block|monitor")?
            }
            other => return Err(format!("unknown argument {other}").into()),
        }
    }
    // Reports go as trace spans to a local receiver that answers like the agent (the default
    // sink, so its cost on requests with events is in the figures); no remote configuration.
    let agent_url = trace_receiver()?;
    let cfg = Config {
        enabled: true,
        mode,
        rules_path: Some(common::shared("datadog-rules-1.18.2.json")),
        agent: AgentConfig {
            url: agent_url,
            remote_config: false,
            ..AgentConfig::default()
        },
        ..Config::default()
    };
    let build = |cfg: Config, rules: Option<String>| {
        let mut b = Appsec::builder(cfg)
            .route_template(|ext| ext.get::<MatchedPath>().map(|m| m.as_str().to_string()))
            .peer_addr(|ext| ext.get::<ConnectInfo<SocketAddr>>().map(|c| c.0.ip()));
        if let Some(r) = rules {
            b = b.rules_json(r);
        }
        b.build()
    };
    let appsec = build(cfg.clone(), None)?;
    let minimal = serde_json::json!({
        "version": "2.2",
        "rules": [{"id": "never", "name": "never matches", "tags": {"type": "none", "category": "none"},
                   "conditions": [{"operator": "match_regex", "parameters": {
                       "inputs": [{"address": "server.request.query", "key_path": ["warden-bench-never"]}],
                       "regex": "^never$"}}]}]
    });
    let layer_only = build(cfg.clone(), Some(minimal.to_string()))?;
    // The same as `appsec` but reporting nowhere: the difference on attack traffic is what
    // reporting (span building, queue push) costs a request.
    let unreported = Appsec::builder(cfg.clone())
        .event_sink(std::sync::Arc::new(Discard))
        .route_template(|ext| ext.get::<MatchedPath>().map(|m| m.as_str().to_string()))
        .peer_addr(|ext| ext.get::<ConnectInfo<SocketAddr>>().map(|c| c.0.ip()))
        .build()?;
    // What `WARDEN_APPSEC_ENABLED=true` alone gives: Warden's built-in ruleset.
    let builtin = build(
        Config {
            rules_path: None,
            ..cfg
        },
        None,
    )?;

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?;
    let trivial = || Router::new().fallback(|| async { "ok" });
    let (bare, protected, light, default_rs) = rt.block_on(async {
        let a = serve(trivial()).await?;
        let b = serve(
            trivial()
                .route("/__rasp", get(rasp_costs))
                .layer(appsec.layer()),
        )
        .await?;
        let c = serve(trivial().layer(layer_only.layer())).await?;
        let d = serve(trivial().layer(builtin.layer())).await?;
        Ok::<_, std::io::Error>((a, b, c, d))
    })?;
    let quiet = rt.block_on(serve(trivial().layer(unreported.layer())))?;

    let reqs: Vec<common::HttpReq> = common::read_jsonl("benign-faker.jsonl")
        .iter()
        .filter_map(common::to_http)
        .collect();
    // Servers: 0 bare, 1 ruleset 1.18.2, 2 never-matching rule, 3 built-in ruleset.
    let ports = [bare, protected, light, default_rs];
    let mut conns = Vec::new();
    for port in ports {
        let c = TcpStream::connect(("127.0.0.1", port))?;
        c.set_nodelay(true)?;
        let r = BufReader::new(c.try_clone()?);
        let w: Vec<Vec<u8>> = reqs.iter().map(|r| r.to_bytes(port, true)).collect();
        conns.push((c, r, w));
    }
    let n = conns.len();

    let one = |w: &mut TcpStream, r: &mut BufReader<TcpStream>, bytes: &[u8]| {
        let t = Instant::now();
        w.write_all(bytes)?;
        let resp = common::read_response(r)?;
        let us = t.elapsed().as_secs_f64() * 1e6;
        if resp.status != 200 {
            NON_200.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
        Ok::<f64, std::io::Error>(us)
    };
    // Warm-up: one pass each (connections, allocator, caches).
    for i in 0..reqs.len() {
        for (c, r, w) in conns.iter_mut() {
            one(c, r, &w[i])?;
        }
    }
    let (mut la, mut lb, mut lc, mut ld) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let (mut db, mut dc, mut dd) = (Vec::new(), Vec::new(), Vec::new());
    for round in 0..rounds {
        for i in 0..reqs.len() {
            // Rotate which server goes first so none is favoured.
            let mut t = [0.0f64; 4];
            for k in 0..n {
                let s = (i + round + k) % n;
                let (c, r, w) = &mut conns[s];
                t[s] = one(c, r, &w[i])?;
            }
            la.push(t[0]);
            lb.push(t[1]);
            lc.push(t[2]);
            ld.push(t[3]);
            db.push(t[1] - t[0]);
            dc.push(t[2] - t[0]);
            dd.push(t[3] - t[0]);
        }
    }
    println!(
        "benign corpus: {} requests x {rounds} rounds, mode {mode:?}, ruleset 1.18.2, 1 server worker thread",
        reqs.len()
    );
    let (a50, a99) = summary("without layer", la);
    let (b50, b99) = summary("layer, ruleset 1.18.2", lb);
    let (c50, c99) = summary("layer, never-matching rule", lc);
    let (f50, f99) = summary("layer, built-in ruleset", ld);
    let (d50, d99) = summary("added (1.18.2)", db);
    let (e50, e99) = summary("added (layer only)", dc);
    let (g50, g99) = summary("added (built-in)", dd);
    println!(
        "added by the layer with ruleset 1.18.2: p50 {d50:.1} µs (p50 {a50:.1} -> {b50:.1}), p99 {d99:.1} µs (p99 {a99:.1} -> {b99:.1})"
    );
    println!(
        "added by the layer with the built-in ruleset: p50 {g50:.1} µs (p50 {a50:.1} -> {f50:.1}), p99 {g99:.1} µs (p99 {a99:.1} -> {f99:.1})"
    );
    let r = common::send(
        protected,
        &common::HttpReq {
            id: "rasp".into(),
            method: "GET".into(),
            target: "/__rasp?name=bob&path=welcome.txt".into(),
            headers: vec![],
            body: vec![],
        },
    )?;
    for line in r.text().lines() {
        let f: Vec<&str> = line.split(' ').collect();
        if let [name, p50, p99] = f[..] {
            println!(
                "RASP {name:<22} in-process p50={p50:>6} µs  p99={p99:>6} µs (benign input, 2,000 calls)"
            );
        } else {
            return Err(format!("rasp: {line}").into());
        }
    }
    println!(
        "added by the layer itself (never-matching rule): p50 {e50:.1} µs (p50 {a50:.1} -> {c50:.1}), p99 {e99:.1} µs (p99 {a99:.1} -> {c99:.1}); goal <= 30 µs p50"
    );
    println!(
        "benign requests not answered 200 (all servers, all passes): {}",
        NON_200.load(std::sync::atomic::Ordering::Relaxed)
    );

    // Reporting cost on attack traffic: CRS attacks that ruleset 1.18.2 flags, each on a fresh
    // connection, alternately to the reporting server and the silent one.
    let flagged: std::collections::HashSet<String> =
        common::read_jsonl("expected/crs-regression.libddwaf.jsonl")
            .iter()
            .filter(|e| e["rule_ids"].as_array().is_some_and(|a| !a.is_empty()))
            .filter_map(|e| e["id"].as_str().map(str::to_string))
            .collect();
    let attacks: Vec<common::HttpReq> = common::read_jsonl("crs-regression.jsonl")
        .iter()
        .filter(|r| r["id"].as_str().is_some_and(|id| flagged.contains(id)))
        .filter_map(common::to_http)
        .filter(|r| r.method != "HEAD")
        .take(500)
        .collect();
    let timed = |port: u16, req: &common::HttpReq| {
        let t = Instant::now();
        common::send(port, req).map(|_| t.elapsed().as_secs_f64() * 1e6)
    };
    for req in &attacks {
        timed(protected, req)?;
        timed(quiet, req)?;
    }
    let (mut lr, mut lq, mut dr) = (Vec::new(), Vec::new(), Vec::new());
    for round in 0..rounds {
        for (i, req) in attacks.iter().enumerate() {
            let (r, q) = if (i + round) % 2 == 0 {
                let r = timed(protected, req)?;
                (r, timed(quiet, req)?)
            } else {
                let q = timed(quiet, req)?;
                (timed(protected, req)?, q)
            };
            lr.push(r);
            lq.push(q);
            dr.push(r - q);
        }
    }
    println!(
        "attack corpus: {} CRS requests flagged by 1.18.2 x {rounds} rounds, new connection each",
        attacks.len()
    );
    summary("attacks, reported as spans", lr);
    summary("attacks, not reported", lq);
    let (r50, r99) = summary("added by reporting", dr);
    println!("reporting (TraceSink) on requests with events: p50 {r50:.1} µs, p99 {r99:.1} µs");
    appsec.flush_traces(std::time::Duration::from_secs(5));
    if let Some(st) = appsec.trace_stats() {
        use std::sync::atomic::Ordering::Relaxed;
        println!(
            "security spans (ruleset 1.18.2 server): queued {} sent {} dropped {} failed {}",
            st.queued.load(Relaxed),
            st.sent.load(Relaxed),
            st.dropped.load(Relaxed),
            st.failed.load(Relaxed)
        );
    }
    Ok(())
}
