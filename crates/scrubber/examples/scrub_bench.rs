//! Scrubber throughput on ~100 MB of mixed agent-style log lines (mostly benign, ~5 % with a
//! planted secret), median of 3 runs, plus a miss count over every planted secret.
//!
//! Run: `cargo run --release -p warden-scrubber --example scrub_bench [-- SIZE_MB]`

use aho_corasick::AhoCorasick;
use std::io::Write;
use std::sync::Arc;
use std::time::Instant;
use warden_scrubber::{ScrubWriter, Scrubber};

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn pick(&mut self, alphabet: &[u8], n: usize) -> String {
        (0..n)
            .map(|_| alphabet[(self.next() % alphabet.len() as u64) as usize] as char)
            .collect()
    }
    fn hex(&mut self, n: usize) -> String {
        self.pick(b"0123456789abcdef", n)
    }
    fn b62(&mut self, n: usize) -> String {
        self.pick(
            b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz",
            n,
        )
    }
}

fn benign(r: &mut Rng, ts: &str) -> String {
    let n = r.next();
    match n % 12 {
        0 => format!(
            "{ts} | CORE | INFO | (pkg/collector/worker/check_logger.go:71 in CheckStarted) | check:cpu | Running check..."
        ),
        1 => format!(
            "{ts} | CORE | INFO | (pkg/forwarder/transaction.go:412 in Process) | Successfully posted payload to \"https://7-50-0-app.agent.datadoghq.com/api/v1/series\""
        ),
        2 => format!(
            "{ts} | TRACE | DEBUG | trace_id={} span_id={} duration={}us status=200",
            r.hex(16),
            r.hex(16),
            n % 10_000
        ),
        3 => format!(
            "{ts} | CORE | DEBUG | request_id={}-{}-{}-{}-{} method=GET path=/api/v1/validate",
            r.hex(8),
            r.hex(4),
            r.hex(4),
            r.hex(4),
            r.hex(12)
        ),
        4 => format!(
            "{ts} | DOGSTATSD | DEBUG | received {} bytes from 127.0.0.1:{} in {}us",
            n % 65_000,
            1024 + n % 60_000,
            n % 900
        ),
        5 => format!(
            "{{\"metric\":\"system.cpu.user\",\"points\":[[{},{}.{}]],\"tags\":[\"env:prod\",\"host:web-{}\"]}}",
            1_700_000_000 + n % 1_000_000,
            n % 100,
            n % 10,
            n % 50
        ),
        6 => format!(
            "{ts} | CORE | WARN | forwarder: transaction {} retried {} times, queue {}/4096",
            n % 100_000,
            n % 5,
            n % 4096
        ),
        7 => format!(
            "{ts} | CORE | INFO | mail from user{}@example.com queued",
            n % 1000
        ),
        8 => format!(
            "{ts} | CORE | INFO | token bucket refilled, {} tokens available",
            n % 500
        ),
        9 => format!(
            "{ts} | CORE | DEBUG | cache key=user:{} hit=true",
            n % 10_000
        ),
        10 => format!(
            "{ts} | CORE | INFO | file sha256={} size={}",
            r.hex(64),
            n % 1_000_000
        ),
        _ => format!(
            "{ts} | PROCESS | DEBUG | pid {} cmd=/usr/bin/python3 -m app.worker --queue default --concurrency {}",
            n % 65_536,
            n % 16
        ),
    }
}

fn secret(r: &mut Rng, ts: &str, planted: &mut Vec<String>) -> String {
    let n = r.next();
    let (line, s) = match n % 8 {
        0 => {
            let k = r.hex(32);
            (
                format!("{ts} | CORE | INFO | api_key={k} validated"),
                k[..28].to_string(),
            )
        }
        1 => {
            let p = r.b62(16);
            (
                format!("{ts} | CORE | ERROR | connect postgres://app:{p}@db:5432/x failed"),
                p,
            )
        }
        2 => {
            let t = r.b62(40);
            (
                format!("{ts} | CORE | DEBUG | GET /x Authorization: Bearer {t}"),
                t,
            )
        }
        3 => {
            let w = r.b62(32);
            (
                format!("{ts} | CORE | INFO | key wdn_api_{w} loaded"),
                w[..28].to_string(),
            )
        }
        4 => {
            let p = r.b62(16);
            (
                format!("{ts} | CORE | DEBUG | host=db user=app password={p} dbname=x"),
                p,
            )
        }
        5 => {
            let t = r.b62(24);
            (format!("{ts} | CORE | DEBUG | X-Vault-Token: {t}"), t)
        }
        6 => {
            let k = r.hex(40);
            (
                format!("{ts} | CORE | DEBUG | sending with app key {k}"),
                k[..36].to_string(),
            )
        }
        _ => {
            let p = r.b62(16);
            (
                format!("{ts} | CORE | DEBUG | {{\"password\":\"{p}\",\"user\":\"bob\"}}"),
                p,
            )
        }
    };
    planted.push(s);
    line
}

/// Nanoseconds this thread has spent on a CPU (Linux `schedstat`), so that a figure taken on a
/// shared, loaded machine can be told apart from time spent waiting for a core.
fn thread_cpu_ns() -> Option<u64> {
    let s = std::fs::read_to_string("/proc/thread-self/schedstat").ok()?;
    s.split_whitespace().next()?.parse().ok()
}

/// A sink that only counts bytes.
struct Counting(usize);

impl Write for Counting {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0 += buf.len();
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mb: usize = std::env::args()
        .nth(1)
        .map(|a| a.parse())
        .transpose()?
        .unwrap_or(100);
    let target = mb * 1_000_000;
    let mut r = Rng(0x9E37_79B9_7F4A_7C15);
    let mut corpus = String::with_capacity(target + 512);
    let mut planted = Vec::new();
    let mut lines = 0usize;
    let ts = "2026-11-23 11:52:07 UTC";
    while corpus.len() < target {
        let line = if r.next() % 20 == 0 {
            secret(&mut r, ts, &mut planted)
        } else {
            benign(&mut r, ts)
        };
        corpus.push_str(&line);
        corpus.push('\n');
        lines += 1;
    }
    let bytes = corpus.len();
    println!(
        "corpus: {:.1} MB, {lines} lines, {} with a planted secret ({:.1} %)",
        bytes as f64 / 1e6,
        planted.len(),
        100.0 * planted.len() as f64 / lines as f64
    );

    let scrubber = Arc::new(Scrubber::default());
    let mut writer_rates = Vec::new();
    let mut writer_cpu_rates = Vec::new();
    let mut line_rates = Vec::new();
    let mut line_cpu_rates = Vec::new();
    for run in 0..3 {
        // Streaming path: ScrubWriter fed 64 KiB writes, like a log sink. The sink counts
        // bytes (a 100 MB Vec would time page faults, not scrubbing).
        let c0 = thread_cpu_ns();
        let t = Instant::now();
        let mut w = ScrubWriter::new(Counting(0), Arc::clone(&scrubber));
        for chunk in corpus.as_bytes().chunks(64 * 1024) {
            w.write_all(chunk)?;
        }
        let written = w.finish()?.0;
        let secs = t.elapsed().as_secs_f64();
        let cpu = thread_cpu_ns().zip(c0).map(|(b, a)| (b - a) as f64 / 1e9);
        writer_rates.push(bytes as f64 / 1e6 / secs);
        writer_cpu_rates.push(cpu.map_or(f64::NAN, |c| bytes as f64 / 1e6 / c));

        // Per-line API.
        let c0 = thread_cpu_ns();
        let t = Instant::now();
        let mut changed = 0usize;
        let mut total = 0usize;
        for line in corpus.lines() {
            let s = scrubber.scrub_line(line);
            total += s.len();
            if matches!(s, std::borrow::Cow::Owned(_)) {
                changed += 1;
            }
        }
        let secs2 = t.elapsed().as_secs_f64();
        let cpu2 = thread_cpu_ns().zip(c0).map(|(b, a)| (b - a) as f64 / 1e9);
        line_rates.push(bytes as f64 / 1e6 / secs2);
        line_cpu_rates.push(cpu2.map_or(f64::NAN, |c| bytes as f64 / 1e6 / c));
        println!(
            "run {run}: ScrubWriter {:.1} MB/s wall ({secs:.2} s), {:.1} MB/s on-CPU; scrub_line {:.1} MB/s wall ({secs2:.2} s), {:.1} MB/s on-CPU; {changed} lines changed, {total} bytes out",
            writer_rates[run], writer_cpu_rates[run], line_rates[run], line_cpu_rates[run]
        );
        assert_eq!(
            written,
            total + lines,
            "writer and scrub_line agree on output size"
        );
    }
    // Untimed: the full output, searched for every planted secret.
    let mut w = ScrubWriter::new(Vec::with_capacity(bytes), Arc::clone(&scrubber));
    w.write_all(corpus.as_bytes())?;
    let last_out = w.finish()?;
    let median = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    println!(
        "median ScrubWriter: {:.1} MB/s wall, {:.1} MB/s on-CPU",
        median(&mut writer_rates),
        median(&mut writer_cpu_rates)
    );
    println!(
        "median scrub_line:  {:.1} MB/s wall, {:.1} MB/s on-CPU",
        median(&mut line_rates),
        median(&mut line_cpu_rates)
    );

    // Misses: any planted secret (its revealing part) still present in the output.
    let ac = AhoCorasick::new(&planted)?;
    let misses = ac.find_iter(&last_out).count();
    println!(
        "planted secrets: {}, misses in output: {misses}",
        planted.len()
    );
    if misses > 0 {
        return Err(format!("{misses} planted secrets leaked").into());
    }
    Ok(())
}
