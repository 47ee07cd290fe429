//! Parse + aggregate cost per line on the `warden-bench` traffic shape (1000 contexts, four
//! tags, count 60 % / gauge 25 % / distribution 10 % / histogram 5 %), single-threaded, no I/O.
//!
//! Why: the DogStatsD benchmark measures the whole agent (syscalls, flushes, shipping); this
//! isolates the engine's share so a change to the parser or aggregator can be judged in
//! seconds. `cargo run --release -p warden-dogstatsd --example ingest_bench [-- LINES]`.

use std::fmt::Write as _;
use std::time::Instant;

use warden_dogstatsd::{Aggregator, AggregatorConfig, Message, parse_datagram};

fn main() {
    let total: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(20_000_000);
    let contexts = 1000usize;
    let names = 240usize;
    let mut x: u64 = 0x5eed;
    let mut rnd = |n: u64| {
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D) % n
    };
    // Packed datagrams of <= 1432 bytes.
    let mut datagrams: Vec<Vec<u8>> = Vec::new();
    let mut cur = Vec::new();
    let mut line = String::new();
    let mut lines_in_ring = 0usize;
    for k in 0..4096 * 23 {
        let i = (k * 7919) % contexts;
        let n = i % names;
        let ty = match n % 20 {
            0..=11 => "c",
            12..=16 => "g",
            17..=18 => "d",
            _ => "h",
        };
        line.clear();
        let _ = write!(line, "bench.metric_{n:04}:");
        match ty {
            "c" => {
                let _ = write!(line, "{}", 1 + rnd(9));
            }
            "g" => {
                let _ = write!(line, "{}.{:02}", rnd(1000), rnd(100));
            }
            _ => {
                let _ = write!(line, "{}.{}", rnd(500), rnd(10));
            }
        }
        let _ = writeln!(
            line,
            "|{ty}|#env:bench,svc:s{},zone:z{:02},ctx:{:05}",
            i % 7,
            i % 13,
            i
        );
        if cur.len() + line.len() > 1432 {
            datagrams.push(std::mem::take(&mut cur));
        }
        cur.extend_from_slice(line.as_bytes());
        lines_in_ring += 1;
    }
    datagrams.push(cur);
    let per_ring = lines_in_ring;
    let mut agg = Aggregator::new(AggregatorConfig {
        hostname: "bench-host".into(),
        ..AggregatorConfig::default()
    });
    let rounds = total.div_ceil(per_ring);
    let mut now = 1_700_000_000i64;
    let t = Instant::now();
    let cpu0 = thread_cpu_ns();
    let mut parsed = 0u64;
    let mut flush_time = std::time::Duration::ZERO;
    for r in 0..rounds {
        for d in &datagrams {
            for m in parse_datagram(d) {
                if let Ok(Message::Metric(m)) = m {
                    agg.insert(&m, now);
                    parsed += 1;
                }
            }
        }
        // ~ one flush per 10 s of traffic at 1 M lines/s.
        if r % 100 == 99 {
            now += 10;
            let f = Instant::now();
            let out = agg.flush(now);
            std::hint::black_box(out);
            flush_time += f.elapsed();
        }
    }
    let el = t.elapsed();
    let cpu_ns = thread_cpu_ns().saturating_sub(cpu0) as f64;
    println!(
        "{parsed} lines in {:.3} s ({:.3} s on CPU): {:.1} ns/line on CPU ({:.2} M lines per CPU-second), flushes {:.3} s, contexts {}",
        el.as_secs_f64(),
        cpu_ns / 1e9,
        cpu_ns / parsed as f64,
        parsed as f64 / cpu_ns * 1e3,
        flush_time.as_secs_f64(),
        agg.context_count()
    );
}

/// Time this thread has spent on a CPU, ns (`/proc/thread-self/schedstat`): the machine is
/// shared, so wall time says more about the neighbours than about the code.
fn thread_cpu_ns() -> u64 {
    std::fs::read_to_string("/proc/thread-self/schedstat")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}
