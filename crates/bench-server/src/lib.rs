//! Workload, query pairs and measuring helpers for the Warden-server-vs-VictoriaMetrics
//! benchmark (`examples/vs_victoriametrics.rs`, driven by `scripts/bench-server-vs-vm.sh`).
//!
//! Why a library: the benchmark is only fair if both systems get byte-identical request bodies
//! and queries that ask for the same thing. Keeping the generator and the query table here lets
//! tests check that the bodies hold exactly the intended samples and that the two query texts of
//! each pair stay in sync, without running either server.
//!
//! The workload is `store_bench`'s mix (node-exporter-like): per host 10 constant gauges, 15
//! cumulative counters, 15 two-decimal random-walk gauges and 10 per-interval counts, 10 s
//! interval, deterministic (xorshift). Bodies are Datadog `/api/v1/series` JSON, gzip: the only
//! Datadog intake format VictoriaMetrics 1.79 (Debian bookworm) accepts.

use std::fmt::Write as _;
use std::io::Write as _;
use std::path::Path;
use std::time::Duration;

/// Metrics per host.
pub const METRICS: usize = 50;
/// Submission interval in seconds.
pub const INTERVAL: i64 = 10;

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

/// One series' value generator (same formulas as `crates/store/examples/store_bench.rs`).
pub struct Gen {
    metric: usize,
    value: f64,
    rate: f64,
    rng: Rng,
}

impl Gen {
    /// Generator for metric `metric` (0..50) of host `host`.
    pub fn new(host: usize, metric: usize) -> Self {
        let mut rng = Rng(0x9E37_79B9_7F4A_7C15
            ^ (((host as u64) << 8) | metric as u64).wrapping_mul(0x2545_F491_4F6C_DD1D));
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

    /// The next sample.
    pub fn next_value(&mut self) -> f64 {
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

    /// Datadog v1 `type`: metrics 40..50 are per-interval counts, the rest gauges.
    pub fn kind(&self) -> &'static str {
        if self.metric >= 40 { "count" } else { "gauge" }
    }
}

/// Metric name of index `m`.
pub fn metric_name(m: usize) -> String {
    format!("bench.metric.{m:02}")
}

/// Host name of index `h`.
pub fn host_name(h: usize) -> String {
    format!("host-{h:04}")
}

/// Tags of host `h` (besides `host`): 3 zones, 20 services.
pub fn host_tags(h: usize) -> [String; 3] {
    [
        format!("az:zone-{}", h % 3),
        "env:prod".to_string(),
        format!("service:svc-{}", h % 20),
    ]
}

/// Shape of the generated workload and of its requests.
#[derive(Clone, Debug)]
pub struct Workload {
    pub hosts: usize,
    /// Points per series (360 = 1 h at 10 s).
    pub steps: usize,
    /// First timestamp (UNIX seconds).
    pub base: i64,
    /// Hosts per request (each host contributes its 50 series).
    pub hosts_per_request: usize,
    /// Points per series per request.
    pub points_per_request: usize,
}

impl Workload {
    /// Total samples.
    pub fn samples(&self) -> usize {
        self.hosts * METRICS * self.steps
    }

    /// Request bodies in send order: time chunk by time chunk, host group by host group (the
    /// order agents' payloads arrive in). Each body is gzip'd Datadog v1 JSON.
    pub fn bodies(&self) -> anyhow::Result<Vec<Vec<u8>>> {
        anyhow::ensure!(self.hosts > 0 && self.steps > 0, "empty workload");
        anyhow::ensure!(
            self.hosts_per_request > 0 && self.points_per_request > 0,
            "hosts_per_request and points_per_request must be > 0"
        );
        let mut gens: Vec<Vec<Gen>> = (0..self.hosts)
            .map(|h| (0..METRICS).map(|m| Gen::new(h, m)).collect())
            .collect();
        let names: Vec<String> = (0..METRICS).map(metric_name).collect();
        let hosts: Vec<String> = (0..self.hosts).map(host_name).collect();
        let tags: Vec<String> = (0..self.hosts)
            .map(|h| {
                let t = host_tags(h);
                format!("[\"{}\",\"{}\",\"{}\"]", t[0], t[1], t[2])
            })
            .collect();
        let mut out = Vec::new();
        let mut json = String::new();
        let mut step = 0;
        while step < self.steps {
            let n = self.points_per_request.min(self.steps - step);
            let mut h0 = 0;
            while h0 < self.hosts {
                let h1 = (h0 + self.hosts_per_request).min(self.hosts);
                json.clear();
                json.push_str("{\"series\":[");
                let mut first = true;
                for h in h0..h1 {
                    for (m, g) in gens[h].iter_mut().enumerate() {
                        if !first {
                            json.push(',');
                        }
                        first = false;
                        let _ = write!(
                            json,
                            "{{\"metric\":\"{}\",\"host\":\"{}\",\"tags\":{},\"type\":\"{}\",\"interval\":{INTERVAL},\"points\":[",
                            names[m],
                            hosts[h],
                            tags[h],
                            g.kind()
                        );
                        for k in 0..n {
                            if k > 0 {
                                json.push(',');
                            }
                            let ts = self.base + (step + k) as i64 * INTERVAL;
                            let _ = write!(json, "[{ts},{}]", g.next_value());
                        }
                        json.push_str("]}");
                    }
                }
                json.push_str("]}");
                let mut enc =
                    flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
                enc.write_all(json.as_bytes())?;
                out.push(enc.finish()?);
                h0 = h1;
            }
            step += n;
        }
        Ok(out)
    }
}

/// One benchmark query: the Datadog query sent to Warden and the MetricsQL sent to
/// VictoriaMetrics' `/api/v1/query_range` with `step`.
#[derive(Clone, Debug)]
pub struct QueryPair {
    pub name: &'static str,
    pub datadog: String,
    pub metricsql: String,
    /// Step for VictoriaMetrics (Warden picks the same from the range or the `.rollup()`).
    pub step: i64,
}

/// The 8 queries of the issue, over host `one_host` for the single-host ones.
pub fn queries(one_host: &str) -> Vec<QueryPair> {
    let gauge = "bench.metric.30";
    let count = "bench.metric.45";
    let sel = |m: &str, extra: &str| format!("{{__name__=\"{m}\"{extra}}}");
    let all_of_host: Vec<String> = (0..METRICS)
        .map(|m| format!("avg:{}{{host:{one_host}}}", metric_name(m)))
        .collect();
    vec![
        QueryPair {
            name: "avg by host",
            datadog: format!("avg:{gauge}{{*}} by {{host}}"),
            metricsql: format!("avg by (host) (avg_over_time({}[20s]))", sel(gauge, "")),
            step: 20,
        },
        QueryPair {
            name: "avg over all",
            datadog: format!("avg:{gauge}{{*}}"),
            metricsql: format!("avg(avg_over_time({}[20s]))", sel(gauge, "")),
            step: 20,
        },
        QueryPair {
            name: "rollup + tag filter",
            datadog: format!("avg:{gauge}{{az:zone-1,service:svc-1*}}.rollup(max, 60)"),
            metricsql: format!(
                "avg(max_over_time({}[60s]))",
                sel(gauge, ",az=\"zone-1\",service=~\"svc-1.*\"")
            ),
            step: 60,
        },
        QueryPair {
            name: "as_count by service",
            datadog: format!("sum:{count}{{*}} by {{service}}.as_count()"),
            metricsql: format!("sum by (service) (sum_over_time({}[20s]))", sel(count, "")),
            step: 20,
        },
        QueryPair {
            name: "one host raw (10 s)",
            datadog: format!("avg:{gauge}{{host:{one_host}}}.rollup(avg, 10)"),
            metricsql: format!(
                "avg_over_time({}[10s])",
                sel(gauge, &format!(",host=\"{one_host}\""))
            ),
            step: 10,
        },
        QueryPair {
            name: "all 50 metrics of one host",
            datadog: all_of_host.join(","),
            metricsql: format!("avg_over_time({{host=\"{one_host}\"}}[20s])"),
            step: 20,
        },
        QueryPair {
            name: "top 10 hosts",
            datadog: format!("top(avg:{gauge}{{*}} by {{host}}, 10, 'mean', 'desc')"),
            metricsql: format!(
                "topk_avg(10, avg by (host) (avg_over_time({}[20s])))",
                sel(gauge, "")
            ),
            step: 20,
        },
        QueryPair {
            name: "raw 10 s step, all hosts",
            datadog: format!("avg:{gauge}{{*}} by {{host}}.rollup(avg, 10)"),
            metricsql: format!("avg by (host) (avg_over_time({}[10s]))", sel(gauge, "")),
            step: 10,
        },
    ]
}

/// Nearest-rank percentile of a sorted slice (`p` in 0..=1).
pub fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = (p * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// Sizes of every file under a directory: (apparent bytes, allocated bytes as `du` counts).
pub fn dir_size(dir: &Path) -> std::io::Result<(u64, u64)> {
    use std::os::unix::fs::MetadataExt as _;
    let mut apparent = 0;
    let mut allocated = 0;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d)? {
            let e = e?;
            let md = match e.metadata() {
                Ok(m) => m,
                // A file merged away between readdir and stat.
                Err(err) if err.kind() == std::io::ErrorKind::NotFound => continue,
                Err(err) => return Err(err),
            };
            if md.is_dir() {
                stack.push(e.path());
            } else {
                apparent += md.len();
                allocated += md.blocks() * 512;
            }
        }
    }
    Ok((apparent, allocated))
}

/// User + system CPU seconds used so far by process `pid` (all threads), from `/proc`.
pub fn process_cpu_secs(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = stat.rsplit(')').next()?;
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|x| x.parse::<f64>().ok());
    Some((ticks(11)? + ticks(12)?) / 100.0)
}

/// The 1/5/15-minute load averages as text.
pub fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "?".into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;
    use std::io::Read as _;

    #[test]
    fn bodies_hold_every_sample_exactly_once() {
        let w = Workload {
            hosts: 7,
            steps: 13,
            base: 1_750_000_000,
            hosts_per_request: 3,
            points_per_request: 5,
        };
        let bodies = w.bodies().expect("bodies");
        // ceil(13/5) time chunks × ceil(7/3) host groups.
        assert_eq!(bodies.len(), 3 * 3);
        let mut seen = HashSet::new();
        for b in &bodies {
            let mut json = String::new();
            flate2::read::GzDecoder::new(b.as_slice())
                .read_to_string(&mut json)
                .expect("gunzip");
            let v: serde_json::Value = serde_json::from_str(&json).expect("valid JSON");
            for s in v["series"].as_array().expect("series") {
                let metric = s["metric"].as_str().expect("metric").to_string();
                let host = s["host"].as_str().expect("host").to_string();
                let idx: usize = metric["bench.metric.".len()..].parse().expect("index");
                let want = if idx >= 40 { "count" } else { "gauge" };
                assert_eq!(s["type"], want);
                assert_eq!(s["tags"].as_array().expect("tags").len(), 3);
                for p in s["points"].as_array().expect("points") {
                    let ts = p[0].as_i64().expect("ts");
                    assert!(p[1].as_f64().expect("value").is_finite());
                    assert!(seen.insert((metric.clone(), host.clone(), ts)), "duplicate");
                }
            }
        }
        assert_eq!(seen.len(), w.samples());
    }

    #[test]
    fn generator_is_deterministic_and_typed() {
        let a: Vec<f64> = {
            let mut g = Gen::new(3, 12);
            (0..10).map(|_| g.next_value()).collect()
        };
        let mut g = Gen::new(3, 12);
        let b: Vec<f64> = (0..10).map(|_| g.next_value()).collect();
        assert_eq!(a, b);
        // Cumulative counter: strictly increasing.
        assert!(a.windows(2).all(|w| w[1] > w[0]));
        // Per-interval counts: integers 0..=20.
        let mut c = Gen::new(3, 45);
        assert!((0..100).all(|_| {
            let v = c.next_value();
            v.fract() == 0.0 && (0.0..=20.0).contains(&v)
        }));
    }

    #[test]
    fn query_pairs_name_the_same_metric_and_host() {
        let q = queries("host-0042");
        assert_eq!(q.len(), 8);
        for p in &q {
            if p.datadog.contains("host:host-0042") {
                assert!(p.metricsql.contains("host=\"host-0042\""), "{}", p.name);
            }
            if p.datadog.contains(".rollup(") {
                let secs = p.datadog.rsplit(", ").next().expect("rollup secs");
                assert_eq!(secs.trim_end_matches(')'), p.step.to_string(), "{}", p.name);
            }
        }
        assert_eq!(q[5].datadog.split(',').count(), METRICS);
    }

    #[test]
    fn percentile_is_nearest_rank() {
        let v: Vec<Duration> = (1..=20).map(Duration::from_millis).collect();
        assert_eq!(percentile(&v, 0.5), Duration::from_millis(10));
        assert_eq!(percentile(&v, 0.9), Duration::from_millis(18));
        assert_eq!(percentile(&[], 0.5), Duration::ZERO);
    }
}
