//! Warden server vs VictoriaMetrics on one generated Datadog workload: ingest samples/s, bytes
//! on disk per sample after flush, p50/p90 of 8 queries. Run through
//! `scripts/bench-server-vs-vm.sh`, which builds `warden` and passes the paths:
//!
//! ```text
//! vs_victoriametrics --warden BIN --vm BIN --work DIR [--hosts 1000] [--hours 1]
//!     [--clients 4] [--hosts-per-request 10] [--points-per-request 10] [--reps 20]
//!     [--only warden|vm] [--vm-first] [--warden-plain-http]
//! ```
//!
//! Both servers run as child processes on loopback and get the same gzip'd Datadog v1 JSON
//! bodies (generated before the clock starts), the same number of concurrent clients (one
//! HTTP/1.1 keep-alive connection each) and the same order. Warden: HTTPS with its own CA,
//! encryption at rest on (default), every 202 after the WAL fsync. VictoriaMetrics: plain HTTP,
//! 2xx once buffered in memory (no fsync), response cache off (`-search.disableCache`) so
//! repeated queries are evaluated each time. Queries run with both servers up, interleaved
//! round by round, so drifting machine load hits both alike.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use warden_bench_server::{
    QueryPair, Workload, dir_size, host_name, loadavg, percentile, process_cpu_secs, queries,
};

struct Args {
    warden: PathBuf,
    vm: PathBuf,
    work: PathBuf,
    hosts: usize,
    hours: f64,
    clients: usize,
    hosts_per_request: usize,
    points_per_request: usize,
    reps: usize,
    only: Option<String>,
    warden_addr: String,
    vm_addr: String,
    /// Run VictoriaMetrics first (default: Warden first).
    vm_first: bool,
    /// Warden with `--insecure-http` (a control run to see the cost of TLS; not the comparison).
    warden_plain_http: bool,
}

fn parse_args() -> anyhow::Result<Args> {
    let mut a = Args {
        warden: PathBuf::from("warden"),
        vm: PathBuf::from("victoria-metrics"),
        work: std::env::temp_dir().join("warden-vs-vm"),
        hosts: 1000,
        hours: 1.0,
        clients: 4,
        hosts_per_request: 10,
        points_per_request: 10,
        reps: 20,
        only: None,
        warden_addr: "127.0.0.1:18443".into(),
        vm_addr: "127.0.0.1:18428".into(),
        vm_first: false,
        warden_plain_http: false,
    };
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut it = args.iter();
    while let Some(flag) = it.next() {
        let mut val = || {
            it.next()
                .cloned()
                .with_context(|| format!("{flag} needs a value"))
        };
        match flag.as_str() {
            "--warden" => a.warden = val()?.into(),
            "--vm" => a.vm = val()?.into(),
            "--work" => a.work = val()?.into(),
            "--hosts" => a.hosts = val()?.parse().context("--hosts N")?,
            "--hours" => a.hours = val()?.parse().context("--hours H")?,
            "--clients" => a.clients = val()?.parse().context("--clients N")?,
            "--hosts-per-request" => {
                a.hosts_per_request = val()?.parse().context("--hosts-per-request N")?
            }
            "--points-per-request" => {
                a.points_per_request = val()?.parse().context("--points-per-request N")?
            }
            "--reps" => a.reps = val()?.parse().context("--reps N")?,
            "--only" => a.only = Some(val()?),
            "--warden-addr" => a.warden_addr = val()?,
            "--vm-addr" => a.vm_addr = val()?,
            "--vm-first" => a.vm_first = true,
            "--warden-plain-http" => a.warden_plain_http = true,
            other => bail!("unknown argument {other}"),
        }
    }
    ensure!(
        a.clients > 0 && a.reps > 0,
        "--clients and --reps must be > 0"
    );
    Ok(a)
}

/// What one system scored.
#[derive(Default)]
struct Score {
    ingest_secs: f64,
    server_cpu_secs: f64,
    flush_note: String,
    /// (label, apparent bytes, allocated bytes)
    disk: Vec<(String, u64, u64)>,
    /// (p50, p90, series returned, non-null points returned)
    queries: Vec<QueryScore>,
    load: Vec<String>,
}

fn stop(child: &mut Child, signal: &str) -> anyhow::Result<Duration> {
    let t = Instant::now();
    let st = Command::new("kill")
        .args([signal, &child.id().to_string()])
        .status()?;
    ensure!(st.success(), "kill {signal} failed");
    let status = child.wait()?;
    ensure!(
        status.success() || status.code().is_none(),
        "server exited with {status}"
    );
    Ok(t.elapsed())
}

async fn ingest(
    client: &reqwest::Client,
    url: &str,
    headers: &[(&str, String)],
    bodies: &Arc<Vec<Vec<u8>>>,
    clients: usize,
) -> anyhow::Result<f64> {
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..clients {
        let (client, url, bodies, next) = (
            client.clone(),
            url.to_string(),
            bodies.clone(),
            next.clone(),
        );
        let headers: Vec<(String, String)> = headers
            .iter()
            .map(|(k, v)| (k.to_string(), v.clone()))
            .collect();
        tasks.push(tokio::spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(body) = bodies.get(i) else {
                    return anyhow::Ok(());
                };
                let mut req = client
                    .post(&url)
                    .header("Content-Type", "application/json")
                    .header("Content-Encoding", "gzip")
                    .body(body.clone());
                for (k, v) in &headers {
                    req = req.header(k.as_str(), v.as_str());
                }
                let r = req.send().await?;
                let status = r.status();
                let text = r.text().await?;
                ensure!(status.is_success(), "request {i}: {status}: {text}");
            }
        }));
    }
    for t in tasks {
        t.await??;
    }
    Ok(started.elapsed().as_secs_f64())
}

/// Series and non-null points in a Warden `/api/v1/query` answer.
fn count_warden(v: &serde_json::Value) -> (usize, usize) {
    let series = v["series"].as_array().map(Vec::as_slice).unwrap_or(&[]);
    let points = series
        .iter()
        .map(|s| {
            s["pointlist"]
                .as_array()
                .map_or(0, |p| p.iter().filter(|x| !x[1].is_null()).count())
        })
        .sum();
    (series.len(), points)
}

/// Series and points in a VictoriaMetrics `query_range` answer.
fn count_vm(v: &serde_json::Value) -> (usize, usize) {
    let res = v["data"]["result"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or(&[]);
    let points = res
        .iter()
        .map(|s| s["values"].as_array().map_or(0, Vec::len))
        .sum();
    (res.len(), points)
}

/// A running server ready to answer the benchmark queries.
enum Target {
    Warden {
        client: reqwest::Client,
        url: String,
        api: String,
        app: String,
    },
    Vm {
        client: reqwest::Client,
        url: String,
    },
}

impl Target {
    async fn query(&self, q: &QueryPair, from: i64, to: i64) -> anyhow::Result<serde_json::Value> {
        let req = match self {
            Target::Warden {
                client,
                url,
                api,
                app,
            } => client
                .get(format!("{url}/api/v1/query"))
                .query(&[
                    ("from", from.to_string()),
                    ("to", to.to_string()),
                    ("query", q.datadog.clone()),
                ])
                .header("DD-API-KEY", api)
                .header("DD-APPLICATION-KEY", app),
            Target::Vm { client, url } => client.get(format!("{url}/api/v1/query_range")).query(&[
                ("query", q.metricsql.clone()),
                ("start", from.to_string()),
                ("end", (to - q.step).to_string()),
                ("step", format!("{}s", q.step)),
            ]),
        };
        let r = req.send().await?;
        let status = r.status();
        let body = r.bytes().await?;
        ensure!(
            status.is_success(),
            "{}: {status}: {}",
            q.name,
            String::from_utf8_lossy(&body)
        );
        Ok(serde_json::from_slice(&body)?)
    }

    fn count(&self, v: &serde_json::Value) -> (usize, usize) {
        match self {
            Target::Warden { .. } => count_warden(v),
            Target::Vm { .. } => count_vm(v),
        }
    }
}

/// Times every query on every target, interleaved: per query, one warm-up each, then `reps`
/// rounds in which each target answers once (the order alternates every round), so both see
/// the same machine load.
async fn time_queries(
    reps: usize,
    qs: &[QueryPair],
    targets: &[&Target],
    from: i64,
    to: i64,
) -> anyhow::Result<Vec<Vec<QueryScore>>> {
    let mut out: Vec<Vec<QueryScore>> = targets.iter().map(|_| Vec::new()).collect();
    for q in qs {
        let mut counts = Vec::new();
        for t in targets {
            counts.push(t.count(&t.query(q, from, to).await?));
        }
        let mut lat: Vec<Vec<Duration>> = targets.iter().map(|_| Vec::new()).collect();
        for rep in 0..reps {
            for k in 0..targets.len() {
                let i = if rep % 2 == 0 {
                    k
                } else {
                    targets.len() - 1 - k
                };
                let t = Instant::now();
                targets[i].query(q, from, to).await?;
                lat[i].push(t.elapsed());
            }
        }
        for (i, mut l) in lat.into_iter().enumerate() {
            l.sort();
            let (p50, p90) = (percentile(&l, 0.5), percentile(&l, 0.9));
            let (series, points) = counts[i];
            let who = match targets[i] {
                Target::Warden { .. } => "warden",
                Target::Vm { .. } => "vm",
            };
            println!(
                "  {who:<6} {:<28} p50 {:>9.2?} p90 {:>9.2?}  {series} series, {points} points",
                q.name, p50, p90
            );
            out[i].push((p50, p90, series, points));
        }
    }
    Ok(out)
}

type QueryScore = (Duration, Duration, usize, usize);

fn disk(score: &mut Score, label: &str, dir: &Path, samples: usize) -> anyhow::Result<()> {
    let (app, alloc) = dir_size(dir)?;
    println!(
        "  disk {label}: {app} bytes apparent ({:.3} B/sample), {alloc} bytes allocated ({:.3} B/sample)",
        app as f64 / samples as f64,
        alloc as f64 / samples as f64
    );
    score.disk.push((label.to_string(), app, alloc));
    Ok(())
}

fn wait_port(addr: &str, child: &mut Child) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        if let Some(st) = child.try_wait()? {
            bail!("server exited early: {st}");
        }
        if std::net::TcpStream::connect(addr).is_ok() {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    bail!("{addr} not listening after 60 s")
}

fn spawn(cmd: &mut Command, log: &Path) -> anyhow::Result<Child> {
    let f = std::fs::File::create(log)?;
    cmd.stdin(Stdio::null())
        .stdout(f.try_clone()?)
        .stderr(f)
        .spawn()
        .with_context(|| format!("spawning {cmd:?}"))
}

fn create_key(a: &Args, dir: &Path, kind: &str) -> anyhow::Result<String> {
    let out = Command::new(&a.warden)
        .args(["keys", "create", "--kind", kind, "--data-dir"])
        .arg(dir)
        .output()?;
    ensure!(out.status.success(), "warden keys create: {out:?}");
    let s = String::from_utf8(out.stdout)?;
    s.split_whitespace()
        .find(|w| w.starts_with("wdn_"))
        .map(str::to_string)
        .context("no key in `warden keys create` output")
}

async fn run_warden(
    a: &Args,
    w: &Workload,
    bodies: &Arc<Vec<Vec<u8>>>,
) -> anyhow::Result<(Score, Child, Target)> {
    let mut score = Score::default();
    let dir = a.work.join("warden");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)?;
    let api = create_key(a, &dir, "api")?;
    let app = create_key(a, &dir, "app")?;
    let start = |log: &str| -> anyhow::Result<Child> {
        let mut c = spawn(
            Command::new(&a.warden)
                .args(["server", "--data-dir"])
                .arg(&dir)
                .args(["--listen", &a.warden_addr])
                .args(a.warden_plain_http.then_some("--insecure-http")),
            &a.work.join(log),
        )?;
        wait_port(&a.warden_addr, &mut c)?;
        Ok(c)
    };
    let mut child = start("warden-1.log")?;
    let mut builder = reqwest::Client::builder().pool_max_idle_per_host(a.clients);
    let mut scheme = "http";
    if !a.warden_plain_http {
        let pem = std::fs::read(dir.join("tls/ca.pem"))?;
        builder = builder
            .use_rustls_tls()
            .tls_built_in_root_certs(false)
            .add_root_certificate(reqwest::Certificate::from_pem(&pem)?);
        scheme = "https";
    }
    let client = builder.build()?;
    let url = format!("{scheme}://{}", a.warden_addr);
    println!("warden: {url}");
    score.load.push(format!("before ingest {}", loadavg()));
    let cpu0 = process_cpu_secs(child.id()).unwrap_or(0.0);
    score.ingest_secs = ingest(
        &client,
        &format!("{url}/api/v1/series"),
        &[("DD-API-KEY", api.clone())],
        bodies,
        a.clients,
    )
    .await?;
    score.server_cpu_secs = process_cpu_secs(child.id()).unwrap_or(0.0) - cpu0;
    score.load.push(format!("after ingest {}", loadavg()));
    println!(
        "warden: ingest {:.2} s = {:.0} samples/s; server CPU {:.1} s",
        score.ingest_secs,
        w.samples() as f64 / score.ingest_secs,
        score.server_cpu_secs
    );
    disk(
        &mut score,
        "after ingest (WAL + background flushes)",
        &dir,
        w.samples(),
    )?;
    let flush = stop(&mut child, "-TERM")?;
    score.flush_note = format!(
        "SIGTERM (flushes the head) took {:.2} s",
        flush.as_secs_f64()
    );
    println!("  {}", score.flush_note);
    disk(&mut score, "after shutdown flush", &dir, w.samples())?;
    {
        // No admin endpoint compacts on demand; the background job merges a finished 2-h window
        // after its next head flush. Do that merge now, offline, with the store's own code.
        let opts = warden_store::StoreOptions {
            background: false,
            ..Default::default()
        };
        let store = warden_store::Store::open(&dir.join("store"), opts)?;
        let before = store.stats().segments;
        let merged = store.compact()?;
        let st = store.stats();
        println!(
            "  offline compact: {before} segments -> {} ({merged} merged); {} series, {} points",
            st.segments, st.series, st.points
        );
        ensure!(
            st.points as usize == w.samples(),
            "store holds {} points, expected {}",
            st.points,
            w.samples()
        );
    }
    disk(&mut score, "after compaction", &dir, w.samples())?;
    disk(
        &mut score,
        "store/ only, after compaction",
        &dir.join("store"),
        w.samples(),
    )?;
    let child = start("warden-2.log")?;
    Ok((
        score,
        child,
        Target::Warden {
            client,
            url,
            api,
            app,
        },
    ))
}

async fn run_vm(
    a: &Args,
    w: &Workload,
    bodies: &Arc<Vec<Vec<u8>>>,
) -> anyhow::Result<(Score, Child, Target)> {
    let mut score = Score::default();
    let dir = a.work.join("vm");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)?;
    let start = |log: &str| -> anyhow::Result<Child> {
        let mut c = spawn(
            Command::new(&a.vm)
                .arg(format!("-storageDataPath={}", dir.display()))
                .arg(format!("-httpListenAddr={}", a.vm_addr))
                .arg("-retentionPeriod=1y")
                .arg("-search.disableCache"),
            &a.work.join(log),
        )?;
        wait_port(&a.vm_addr, &mut c)?;
        Ok(c)
    };
    let mut child = start("vm-1.log")?;
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(a.clients)
        .build()?;
    let url = format!("http://{}", a.vm_addr);
    score.load.push(format!("before ingest {}", loadavg()));
    let cpu0 = process_cpu_secs(child.id()).unwrap_or(0.0);
    score.ingest_secs = ingest(
        &client,
        &format!("{url}/datadog/api/v1/series"),
        &[],
        bodies,
        a.clients,
    )
    .await?;
    score.server_cpu_secs = process_cpu_secs(child.id()).unwrap_or(0.0) - cpu0;
    score.load.push(format!("after ingest {}", loadavg()));
    println!(
        "victoriametrics: ingest {:.2} s = {:.0} samples/s; server CPU {:.1} s",
        score.ingest_secs,
        w.samples() as f64 / score.ingest_secs,
        score.server_cpu_secs
    );
    let t = Instant::now();
    let r = client
        .get(format!("{url}/internal/force_flush"))
        .send()
        .await?;
    ensure!(r.status().is_success(), "force_flush: {}", r.status());
    // Background merges keep rewriting parts after the flush: wait until the size is stable
    // for 10 s (at most 3 min).
    let mut last = dir_size(&dir)?.0;
    let mut stable_since = Instant::now();
    while stable_since.elapsed() < Duration::from_secs(10) && t.elapsed() < Duration::from_secs(180)
    {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let now = dir_size(&dir)?.0;
        if now != last {
            last = now;
            stable_since = Instant::now();
        }
    }
    score.flush_note = format!(
        "/internal/force_flush, then size stable for 10 s after {:.1} s",
        t.elapsed().as_secs_f64()
    );
    println!("  {}", score.flush_note);
    disk(
        &mut score,
        "after force_flush + merges settle",
        &dir,
        w.samples(),
    )?;
    let stop_t = stop(&mut child, "-INT")?;
    println!("  SIGINT stop took {:.2} s", stop_t.as_secs_f64());
    disk(&mut score, "after stop", &dir, w.samples())?;
    let (ad, dd) = (
        dir_size(&dir.join("data"))?,
        dir_size(&dir.join("indexdb"))?,
    );
    println!(
        "  data/ + indexdb/ only: {} bytes apparent ({:.3} B/sample), {} allocated",
        ad.0 + dd.0,
        (ad.0 + dd.0) as f64 / w.samples() as f64,
        ad.1 + dd.1
    );
    score.disk.push((
        "data/ + indexdb/ only, after stop".into(),
        ad.0 + dd.0,
        ad.1 + dd.1,
    ));
    let child = start("vm-2.log")?;
    // Check every sample arrived.
    let (from, to) = (w.base, w.base + w.steps as i64 * 10);
    let r = client
        .get(format!("{url}/api/v1/query"))
        .query(&[
            (
                "query",
                format!(
                    "sum(count_over_time({{__name__=~\"bench.metric.*\"}}[{}s]))",
                    to - from
                ),
            ),
            ("time", (to - 1).to_string()),
        ])
        .send()
        .await?
        .bytes()
        .await?;
    let r: serde_json::Value = serde_json::from_slice(&r)?;
    let n: f64 = r["data"]["result"][0]["value"][1]
        .as_str()
        .and_then(|s| s.parse().ok())
        .context("count_over_time answer")?;
    println!("  samples stored (count_over_time): {n}");
    ensure!(
        n as usize == w.samples(),
        "VM holds {n} samples, expected {}",
        w.samples()
    );
    Ok((score, child, Target::Vm { client, url }))
}

fn ms(d: Duration) -> String {
    format!("{:.1}", d.as_secs_f64() * 1000.0)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let a = parse_args()?;
    std::fs::create_dir_all(&a.work)?;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_secs() as i64;
    // An hour inside a 2-hour window that ended over 10 minutes ago, so Warden's compaction
    // treats it as finished.
    let base = (now - 4 * 3600).div_euclid(7200) * 7200;
    let w = Workload {
        hosts: a.hosts,
        steps: (a.hours * 360.0).round() as usize,
        base,
        hosts_per_request: a.hosts_per_request,
        points_per_request: a.points_per_request,
    };
    let t = Instant::now();
    let bodies = Arc::new(w.bodies()?);
    let bytes: usize = bodies.iter().map(Vec::len).sum();
    println!(
        "workload: {} hosts x 50 metrics x {} points = {} samples from {base}; {} requests of {} hosts x 50 series x {} points, {bytes} bytes gzip'd in total; {} clients; generated in {:.1} s; load {}",
        w.hosts,
        w.steps,
        w.samples(),
        bodies.len(),
        w.hosts_per_request,
        w.points_per_request,
        a.clients,
        t.elapsed().as_secs_f64(),
        loadavg()
    );
    let qs = queries(&host_name(42.min(w.hosts - 1)));
    let (want_warden, want_vm) = (
        a.only.as_deref() != Some("vm"),
        a.only.as_deref() != Some("warden"),
    );
    let mut vm = None;
    if want_vm && a.vm_first {
        vm = Some(run_vm(&a, &w, &bodies).await?);
    }
    let mut warden = if want_warden {
        Some(run_warden(&a, &w, &bodies).await?)
    } else {
        None
    };
    if want_vm && !a.vm_first {
        vm = Some(run_vm(&a, &w, &bodies).await?);
    }
    // Queries: both servers up (each idle while the other answers), interleaved.
    let load_before = format!("before queries {}", loadavg());
    let targets: Vec<&Target> = warden.iter().chain(vm.iter()).map(|x| &x.2).collect();
    let (from, to) = (w.base, w.base + w.steps as i64 * 10);
    println!("queries: {} reps each, interleaved", a.reps);
    let mut results = time_queries(a.reps, &qs, &targets, from, to)
        .await?
        .into_iter();
    let load_after = format!("after queries {}", loadavg());
    if let Some((score, child, _)) = warden.as_mut() {
        score.queries = results.next().unwrap_or_default();
        score.load.extend([load_before.clone(), load_after.clone()]);
        stop(child, "-TERM")?;
    }
    if let Some((score, child, _)) = vm.as_mut() {
        score.queries = results.next().unwrap_or_default();
        score.load.extend([load_before, load_after]);
        stop(child, "-INT")?;
    }
    let warden = warden.map(|x| x.0);
    let vm = vm.map(|x| x.0);
    let samples = w.samples() as f64;
    println!("\n| metric | Warden | VictoriaMetrics | Warden / VM |\n|---|---|---|---|");
    if let (Some(wd), Some(v)) = (&warden, &vm) {
        let (wr, vr) = (samples / wd.ingest_secs, samples / v.ingest_secs);
        println!(
            "| ingest samples/s (wall) | {wr:.0} | {vr:.0} | {:.2}x |",
            wr / vr
        );
        let (wc, vc) = (samples / wd.server_cpu_secs, samples / v.server_cpu_secs);
        println!(
            "| samples per server CPU-second | {wc:.0} | {vc:.0} | {:.2}x |",
            wc / vc
        );
        let size = |s: &Score, label: &str| {
            s.disk.iter().find(|d| d.0 == label).map_or(0, |d| d.1) as f64 / samples
        };
        for (row, wl, vl) in [
            (
                "bytes/sample, whole data dir (Warden: after shutdown flush + compaction; VM: after force_flush + merges settle)",
                "after compaction",
                "after force_flush + merges settle",
            ),
            (
                "bytes/sample, series data only (Warden store/; VM data/ + indexdb/)",
                "store/ only, after compaction",
                "data/ + indexdb/ only, after stop",
            ),
        ] {
            let (wb, vb) = (size(wd, wl), size(v, vl));
            println!("| {row} | {wb:.3} | {vb:.3} | {:.2}x |", wb / vb);
        }
        for (i, q) in qs.iter().enumerate() {
            let (a50, a90, an, ap) = wd.queries[i];
            let (b50, b90, bn, bp) = v.queries[i];
            println!(
                "| {} p50 / p90 ms ({an}/{bn} series, {ap}/{bp} points) | {} / {} | {} / {} | {:.2}x |",
                q.name,
                ms(a50),
                ms(a90),
                ms(b50),
                ms(b90),
                a50.as_secs_f64() / b50.as_secs_f64()
            );
        }
    }
    for (name, s) in [("warden", &warden), ("vm", &vm)] {
        if let Some(s) = s {
            println!(
                "{name}: disk {:?}; flush: {}; load: {:?}",
                s.disk, s.flush_note, s.load
            );
        }
    }
    Ok(())
}
