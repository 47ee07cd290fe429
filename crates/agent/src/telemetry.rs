//! The agent's own counters (`warden.agent.*`), shipped like any other metric.
//!
//! Why atomics in one struct: every component (listeners, forwarder, checks) bumps counters on
//! hot paths from different threads; a relaxed `fetch_add` is the cheapest correct way, and a
//! single struct makes the full list of self-metrics visible in one place.

use std::sync::atomic::{AtomicU64, Ordering};

use warden_model::{MetricKind, Point, Series};

/// Monotonic counters and gauges describing the agent itself.
#[derive(Debug, Default)]
pub struct Telemetry {
    /// DogStatsD datagrams received (all transports).
    pub packets: AtomicU64,
    /// DogStatsD bytes received.
    pub packet_bytes: AtomicU64,
    /// DogStatsD messages (lines) parsed successfully.
    pub messages: AtomicU64,
    /// DogStatsD lines rejected by the parser.
    pub parse_errors: AtomicU64,
    /// Datagrams dropped inside the agent because the parse queue was full.
    pub packets_dropped: AtomicU64,
    /// Live aggregation contexts (gauge).
    pub contexts: AtomicU64,
    /// Payloads accepted by the intake (2xx).
    pub payloads_sent: AtomicU64,
    /// Send attempts that failed with a retryable error and were queued again.
    pub payloads_retried: AtomicU64,
    /// Payloads dropped: non-retryable status (400/403/413) or evicted from a full queue.
    pub payloads_dropped: AtomicU64,
    /// Payloads dropped because the intake rejected them (400/403/413).
    pub payloads_rejected: AtomicU64,
    /// Payloads evicted (oldest first) from a full retry queue.
    pub payloads_evicted: AtomicU64,
    /// Bytes currently held in the in-memory retry queue (gauge).
    pub queue_bytes: AtomicU64,
    /// Bytes currently held in the on-disk retry queue (gauge).
    pub disk_queue_bytes: AtomicU64,
    /// Check runs that failed or timed out.
    pub check_errors: AtomicU64,
    /// Tracer payloads accepted by the trace intake (`/v0.x/traces`).
    pub trace_payloads: AtomicU64,
    /// Spans in those payloads.
    pub spans_received: AtomicU64,
    /// Tracer payloads refused (malformed, too large, agent busy).
    pub trace_payloads_refused: AtomicU64,
}

/// Which counters are cumulative (shipped as per-interval counts) and which are gauges.
const COUNTERS: &[&str] = &[
    "packets",
    "packet_bytes",
    "messages",
    "parse_errors",
    "packets_dropped",
    "payloads_sent",
    "payloads_retried",
    "payloads_dropped",
    "payloads_rejected",
    "payloads_evicted",
    "check_errors",
    "trace_payloads",
    "spans_received",
    "trace_payloads_refused",
];

impl Telemetry {
    /// Adds `n` to a counter.
    pub fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    /// Sets a gauge.
    pub fn set(gauge: &AtomicU64, v: u64) {
        gauge.store(v, Ordering::Relaxed);
    }

    /// Current value of every field, by name, in a stable order.
    pub fn snapshot(&self) -> Vec<(&'static str, u64)> {
        let r = |a: &AtomicU64| a.load(Ordering::Relaxed);
        vec![
            ("packets", r(&self.packets)),
            ("packet_bytes", r(&self.packet_bytes)),
            ("messages", r(&self.messages)),
            ("parse_errors", r(&self.parse_errors)),
            ("packets_dropped", r(&self.packets_dropped)),
            ("contexts", r(&self.contexts)),
            ("payloads_sent", r(&self.payloads_sent)),
            ("payloads_retried", r(&self.payloads_retried)),
            ("payloads_dropped", r(&self.payloads_dropped)),
            ("payloads_rejected", r(&self.payloads_rejected)),
            ("payloads_evicted", r(&self.payloads_evicted)),
            ("queue_bytes", r(&self.queue_bytes)),
            ("disk_queue_bytes", r(&self.disk_queue_bytes)),
            ("check_errors", r(&self.check_errors)),
            ("trace_payloads", r(&self.trace_payloads)),
            ("spans_received", r(&self.spans_received)),
            ("trace_payloads_refused", r(&self.trace_payloads_refused)),
        ]
    }

    /// Turns the difference between two snapshots into `warden.agent.*` series: counters as
    /// COUNT over `interval` seconds, gauges as GAUGE.
    pub fn to_series(
        previous: &[(&'static str, u64)],
        current: &[(&'static str, u64)],
        now: i64,
        interval: i64,
        host: &str,
        tags: &[String],
    ) -> Vec<Series> {
        current
            .iter()
            .map(|(name, value)| {
                let is_counter = COUNTERS.contains(name);
                let prev = previous
                    .iter()
                    .find(|(n, _)| n == name)
                    .map(|(_, v)| *v)
                    .unwrap_or(0);
                let (kind, v) = if is_counter {
                    (MetricKind::Count, value.saturating_sub(prev) as f64)
                } else {
                    (MetricKind::Gauge, *value as f64)
                };
                Series {
                    name: format!("warden.agent.{name}"),
                    tags: tags.to_vec(),
                    host: host.to_owned(),
                    kind,
                    interval,
                    unit: None,
                    source_type_name: None,
                    points: vec![Point {
                        timestamp: now,
                        value: v,
                    }],
                }
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_ship_deltas_and_gauges_ship_levels() {
        let t = Telemetry::default();
        Telemetry::add(&t.packets, 5);
        Telemetry::set(&t.queue_bytes, 100);
        let a = t.snapshot();
        Telemetry::add(&t.packets, 3);
        Telemetry::set(&t.queue_bytes, 40);
        let b = t.snapshot();
        let s = Telemetry::to_series(&a, &b, 1000, 10, "h", &[]);
        let get = |n: &str| s.iter().find(|x| x.name == n).unwrap();
        assert_eq!(get("warden.agent.packets").points[0].value, 3.0);
        assert_eq!(get("warden.agent.packets").kind, MetricKind::Count);
        assert_eq!(get("warden.agent.queue_bytes").points[0].value, 40.0);
        assert_eq!(get("warden.agent.queue_bytes").kind, MetricKind::Gauge);
    }
}
