//! Fuzz target: parse an arbitrary datagram, render every message as JSON, feed the metrics to
//! an aggregator with a moving clock, flush, and check the engine's invariants (no panic, sketch
//! wire form round-trips, everything expires once the clock moves far enough).
#![no_main]

use libfuzzer_sys::fuzz_target;
use warden_dogstatsd::{Aggregator, AggregatorConfig, Message, message_to_json, parse_datagram};
use warden_model::DDSketch;

fn check_sketch(s: &DDSketch) {
    let keys = s.keys();
    let counts = s.counts();
    assert_eq!(keys.len(), counts.len());
    assert!(counts.iter().all(|&n| (1..=65535).contains(&n)));
    let back = DDSketch::from_bins(&keys, &counts, s.count(), s.min(), s.max(), s.sum(), s.avg())
        .expect("a sketch's own wire form is valid");
    assert_eq!(back.bins(), s.bins());
    if let Some(q) = s.quantile(0.5) {
        assert!(q >= s.min() && q <= s.max(), "median {q} outside [{}, {}]", s.min(), s.max());
    }
}

fuzz_target!(|data: &[u8]| {
    let mut agg = Aggregator::new(AggregatorConfig {
        hostname: "fuzz-host".into(),
        histogram_aggregates: ["max", "min", "median", "avg", "count", "sum", "bogus"]
            .map(String::from)
            .to_vec(),
        histogram_percentiles: vec![0.0, 0.5, 0.95, 1.0, 2.0],
        expiry_seconds: 30,
        extra_tags: vec!["env:fuzz".into()],
    });
    let mut now: i64 = 1_700_000_000;
    for (i, msg) in parse_datagram(data).enumerate() {
        match msg {
            Ok(m) => {
                let v = message_to_json(&m);
                assert!(v.is_object());
                if let Message::Metric(metric) = &m {
                    now += (metric.name.len() % 13) as i64;
                    agg.insert(metric, now);
                }
            }
            Err(e) => {
                assert!(!e.to_string().is_empty());
            }
        }
        if i % 8 == 7 {
            let f = agg.flush(now);
            for s in f.sketches.iter().flat_map(|s| s.points.iter()) {
                check_sketch(&s.1);
            }
        }
    }
    let f = agg.flush(now + 15);
    for s in f.sketches.iter().flat_map(|s| s.points.iter()) {
        check_sketch(&s.1);
    }
    for s in &f.series {
        assert!(!s.points.is_empty());
        assert!(s.points.windows(2).all(|w| w[0].timestamp < w[1].timestamp));
    }
    // Counters stop after 30 s, idle contexts after 20 s: nothing survives a long pause.
    agg.flush(now + 1_000);
    assert_eq!(agg.context_count(), 0);
});
