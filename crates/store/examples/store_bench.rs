//! Ingest benchmark: `hosts × 50 metrics × 10 s interval × 1 h`, then flush; reports samples/s
//! and bytes on disk per sample (encryption always on).
//!
//! ```text
//! cargo run --release -p warden-store --example store_bench -- \
//!     [--hosts 1000] [--hours 1] [--threads 4] [--points-per-append 1] [--fsync always|never] [--dir PATH]
//! ```
//!
//! Data (deterministic xorshift, node-exporter-like mix per host):
//! * 10 constant gauges (memory total, cpu count, up);
//! * 15 cumulative counters (per-series rate 10..10000/s, ±10 % jitter, integers);
//! * 15 two-decimal gauges doing a random walk (cpu %, load);
//! * 10 DogStatsD-style per-interval counts (integers 0..20).
//!
//! Each append is one host's 50 series with `--points-per-append` points each, like an agent
//! payload; writer threads take hosts round-robin and group commit batches their fsyncs.

use std::sync::Arc;
use std::time::Instant;
use warden_store::{FsyncPolicy, MetricKind, Point, SeriesWrite, Store, StoreOptions, TagFilter};

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// Per-series generator state.
struct Gen {
    metric: usize,
    value: f64,
    rate: f64,
    rng: Rng,
}

impl Gen {
    fn new(host: usize, metric: usize) -> Self {
        let mut rng = Rng(0x9E37_79B9_7F4A_7C15
            ^ ((host as u64) << 8 | metric as u64).wrapping_mul(0x2545_F491_4F6C_DD1D));
        for _ in 0..4 {
            rng.next();
        }
        let value = match metric {
            0..=9 => [16e9, 8.0, 1.0, 4096.0, 1e12][metric % 5],
            10..=24 => (rng.next() % 1_000_000_000) as f64,
            25..=39 => (rng.unit() * 10000.0).round() / 100.0,
            _ => 0.0,
        };
        let rate = 10.0 + rng.unit() * 9990.0;
        Self {
            metric,
            value,
            rate,
            rng,
        }
    }
    fn next(&mut self) -> f64 {
        match self.metric {
            0..=9 => self.value,
            10..=24 => {
                let jitter = 0.9 + 0.2 * self.rng.unit();
                self.value += (self.rate * 10.0 * jitter).round();
                self.value
            }
            25..=39 => {
                let step = (self.rng.unit() - 0.5) * 2.0;
                self.value = ((self.value + step).clamp(0.0, 100.0) * 100.0).round() / 100.0;
                self.value
            }
            _ => (self.rng.next() % 21) as f64,
        }
    }
    fn kind(&self) -> MetricKind {
        if self.metric >= 40 {
            MetricKind::Count
        } else {
            MetricKind::Gauge
        }
    }
}

const METRICS: usize = 50;

/// User + system CPU seconds of this process so far (from /proc; 0 where unavailable). The
/// machine is shared, so samples per CPU-second is steadier than wall-clock throughput.
fn cpu_secs() -> f64 {
    let Ok(stat) = std::fs::read_to_string("/proc/self/stat") else {
        return 0.0;
    };
    // Fields after the parenthesised command name; utime and stime are fields 14 and 15.
    let Some(rest) = stat.rsplit(')').next() else {
        return 0.0;
    };
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|x| x.parse::<f64>().ok()).unwrap_or(0.0);
    (ticks(11) + ticks(12)) / 100.0
}

fn main() {
    let mut hosts = 1000usize;
    let mut hours = 1.0f64;
    let mut threads = 4usize;
    let mut per_append = 1usize;
    let mut fsync = FsyncPolicy::Always;
    let mut dir_arg = None;
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let mut val = || it.next().cloned().unwrap_or_default();
        match a.as_str() {
            "--hosts" => hosts = val().parse().expect("--hosts N"),
            "--hours" => hours = val().parse().expect("--hours H"),
            "--threads" => threads = val().parse().expect("--threads N"),
            "--points-per-append" => per_append = val().parse().expect("--points-per-append N"),
            "--fsync" => {
                fsync = match val().as_str() {
                    "never" => FsyncPolicy::Never,
                    _ => FsyncPolicy::Always,
                }
            }
            "--dir" => dir_arg = Some(val()),
            other => {
                eprintln!("unknown argument {other}");
                std::process::exit(2);
            }
        }
    }
    let steps = (hours * 360.0) as usize;
    let tmp = tempfile::tempdir().expect("tmp dir");
    let dir = dir_arg.map_or_else(|| tmp.path().to_path_buf(), std::path::PathBuf::from);
    let start_ts = 1_750_000_000i64;
    let opts = StoreOptions {
        fsync,
        clock: Arc::new(warden_store::ManualClock::new(start_ts + steps as i64 * 10)),
        ..StoreOptions::default()
    };
    let store = Arc::new(Store::open(&dir, opts).expect("open store"));
    let names: Vec<String> = (0..METRICS)
        .map(|m| format!("bench.metric.{m:02}"))
        .collect();
    let total = hosts * METRICS * steps;
    println!(
        "store_bench: {hosts} hosts x {METRICS} metrics x {steps} points = {total} samples, {threads} writer threads, {per_append} point(s) per series per append, fsync {fsync:?}"
    );
    let t0 = Instant::now();
    let c0 = cpu_secs();
    let workers: Vec<_> = (0..threads)
        .map(|t| {
            let store = store.clone();
            let names = names.clone();
            std::thread::spawn(move || {
                let my_hosts: Vec<usize> = (t..hosts).step_by(threads).collect();
                let mut gens: Vec<Vec<Gen>> = my_hosts
                    .iter()
                    .map(|&h| (0..METRICS).map(|m| Gen::new(h, m)).collect())
                    .collect();
                let tags: Vec<Vec<String>> = my_hosts
                    .iter()
                    .map(|&h| {
                        vec![
                            format!("az:zone-{}", h % 3),
                            "env:prod".to_string(),
                            format!("service:svc-{}", h % 20),
                        ]
                    })
                    .collect();
                let mut step = 0;
                while step < steps {
                    let n = per_append.min(steps - step);
                    for (i, &h) in my_hosts.iter().enumerate() {
                        let batch: Vec<SeriesWrite> = gens[i]
                            .iter_mut()
                            .enumerate()
                            .map(|(m, g)| SeriesWrite {
                                name: names[m].clone(),
                                tags: tags[i].clone(),
                                host: format!("host-{h:04}"),
                                kind: g.kind(),
                                interval: 10,
                                unit: None,
                                points: (0..n)
                                    .map(|k| Point {
                                        timestamp: start_ts + ((step + k) * 10) as i64,
                                        value: g.next(),
                                    })
                                    .collect(),
                            })
                            .collect();
                        store.append(1, &batch).expect("append");
                    }
                    step += n;
                }
            })
        })
        .collect();
    for w in workers {
        w.join().expect("worker");
    }
    let ingest = t0.elapsed();
    let t1 = Instant::now();
    store.flush().expect("flush");
    let flush = t1.elapsed();
    let cpu = cpu_secs() - c0;
    println!(
        "ingest: {:.2} s, {:.0} samples/s acknowledged; flush to segments: {:.2} s; end-to-end {:.0} samples/s; {:.1} CPU-s = {:.0} samples per CPU-second (incl. data generation)",
        ingest.as_secs_f64(),
        total as f64 / ingest.as_secs_f64(),
        flush.as_secs_f64(),
        total as f64 / (ingest + flush).as_secs_f64(),
        cpu,
        total as f64 / cpu.max(1e-9)
    );
    let report = |label: &str| {
        let stats = store.stats();
        let seg_bytes: u64 = std::fs::read_dir(dir.join("data"))
            .expect("data dir")
            .flatten()
            .filter_map(|e| e.metadata().ok())
            .map(|m| m.len())
            .sum();
        println!(
            "disk {label}: {} bytes total ({:.3} bytes/sample), segments+index {} bytes ({:.3} bytes/sample) in {} segments; series {}, points {}",
            stats.bytes_on_disk,
            stats.bytes_on_disk as f64 / total as f64,
            seg_bytes,
            seg_bytes as f64 / total as f64,
            stats.segments,
            stats.series,
            stats.points
        );
    };
    let st = store.stats();
    println!(
        "group commits: {} ({:.1} appends per fsync); head flushes: {}",
        st.commits,
        (total / METRICS / per_append.max(1)) as f64 / st.commits.max(1) as f64,
        st.flushes
    );
    report("after flush");
    let t2 = Instant::now();
    let merged = store.compact().expect("compact");
    println!(
        "compaction: merged {merged} segments in {:.2} s",
        t2.elapsed().as_secs_f64()
    );
    report("after compaction");
    // Query latency: one series' full hour, and a filter over all hosts of one metric.
    let series = store.find_series(1, "bench.metric.30", &TagFilter::All);
    let mut lat = Vec::new();
    for s in series.iter().take(200) {
        let q = Instant::now();
        let pts = store
            .read(1, s.id, start_ts, start_ts + steps as i64 * 10)
            .expect("read");
        lat.push(q.elapsed());
        assert_eq!(pts.len(), steps);
    }
    lat.sort();
    let filter = TagFilter::all_of("az:zone-1,service:svc-1*");
    let mut flat = Vec::new();
    let mut f = Vec::new();
    for _ in 0..51 {
        let q = Instant::now();
        f = store.find_series(1, "bench.metric.30", &filter);
        flat.push(q.elapsed());
    }
    flat.sort();
    let find = flat[flat.len() / 2];
    if !lat.is_empty() {
        println!(
            "query: read 1 series x {steps} points p50 {:?} p99 {:?}; find_series with 2-term filter (eq + wildcard) -> {} series, p50 {:?}",
            lat[lat.len() / 2],
            lat[lat.len() * 99 / 100],
            f.len(),
            find
        );
    }
}
