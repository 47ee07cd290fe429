//! Datadog's trace-agent → intake messages (`datadog.trace.AgentPayload`), the body of
//! `POST /api/v0.2/traces`.
//!
//! Why these and not a Warden format: the agent relays what tracers send with no loss of the
//! fields the server needs (span tags, `meta_struct`), and any tool that speaks the Datadog
//! trace intake can read or produce it. Field numbers follow `DataDog/datadog-agent`
//! `pkg/proto/datadog/trace/{agent_payload,tracer_payload,span}.proto`. Span links (field 14)
//! and span events are not carried: decoding skips them, so nothing breaks when a peer sends
//! them. Maps are `BTreeMap` so an encoding is deterministic.

use std::collections::BTreeMap;

/// `AgentPayload`: what one agent flush sends.
#[derive(Clone, PartialEq, prost::Message)]
pub struct AgentPayload {
    /// Host the agent runs on.
    #[prost(string, tag = "1")]
    pub host_name: String,
    /// `env` of the agent configuration.
    #[prost(string, tag = "2")]
    pub env: String,
    #[prost(message, repeated, tag = "5")]
    pub tracer_payloads: Vec<TracerPayload>,
    /// Tags common to every tracer payload.
    #[prost(btree_map = "string, string", tag = "6")]
    pub tags: BTreeMap<String, String>,
    #[prost(string, tag = "7")]
    pub agent_version: String,
    #[prost(double, tag = "8")]
    pub target_tps: f64,
    #[prost(double, tag = "9")]
    pub error_tps: f64,
}

/// `TracerPayload`: the traces of one tracer request.
#[derive(Clone, PartialEq, prost::Message)]
pub struct TracerPayload {
    #[prost(string, tag = "1")]
    pub container_id: String,
    #[prost(string, tag = "2")]
    pub language_name: String,
    #[prost(string, tag = "3")]
    pub language_version: String,
    #[prost(string, tag = "4")]
    pub tracer_version: String,
    #[prost(string, tag = "5")]
    pub runtime_id: String,
    #[prost(message, repeated, tag = "6")]
    pub chunks: Vec<TraceChunk>,
    #[prost(btree_map = "string, string", tag = "7")]
    pub tags: BTreeMap<String, String>,
    #[prost(string, tag = "8")]
    pub env: String,
    #[prost(string, tag = "9")]
    pub hostname: String,
    #[prost(string, tag = "10")]
    pub app_version: String,
}

/// `TraceChunk`: spans of one trace (all or part of it).
#[derive(Clone, PartialEq, prost::Message)]
pub struct TraceChunk {
    /// Sampling priority (`-1` reject … `2` user keep; `i32::MIN` when the tracer gave none).
    #[prost(int32, tag = "1")]
    pub priority: i32,
    /// Origin product (`synthetics`, `rum`, …).
    #[prost(string, tag = "2")]
    pub origin: String,
    #[prost(message, repeated, tag = "3")]
    pub spans: Vec<Span>,
    #[prost(btree_map = "string, string", tag = "4")]
    pub tags: BTreeMap<String, String>,
    #[prost(bool, tag = "5")]
    pub dropped_trace: bool,
}

/// `Span`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Span {
    #[prost(string, tag = "1")]
    pub service: String,
    /// Operation name, e.g. `flask.request`.
    #[prost(string, tag = "2")]
    pub name: String,
    /// Resource, e.g. `GET /login`.
    #[prost(string, tag = "3")]
    pub resource: String,
    /// Lower 64 bits of the trace id (the upper half is meta `_dd.p.tid`).
    #[prost(uint64, tag = "4")]
    pub trace_id: u64,
    #[prost(uint64, tag = "5")]
    pub span_id: u64,
    #[prost(uint64, tag = "6")]
    pub parent_id: u64,
    /// UNIX nanoseconds.
    #[prost(int64, tag = "7")]
    pub start: i64,
    /// Nanoseconds.
    #[prost(int64, tag = "8")]
    pub duration: i64,
    #[prost(int32, tag = "9")]
    pub error: i32,
    #[prost(btree_map = "string, string", tag = "10")]
    pub meta: BTreeMap<String, String>,
    #[prost(btree_map = "string, double", tag = "11")]
    pub metrics: BTreeMap<String, f64>,
    #[prost(string, tag = "12")]
    pub r#type: String,
    /// Structured tags, each a msgpack-encoded value (AppSec can put its triggers here as
    /// `appsec`).
    #[prost(btree_map = "string, bytes", tag = "13")]
    pub meta_struct: BTreeMap<String, Vec<u8>>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost::Message;

    #[test]
    fn agent_payload_round_trips_with_datadog_field_numbers() {
        let mut span = Span {
            service: "web".into(),
            name: "flask.request".into(),
            trace_id: u64::MAX,
            span_id: 7,
            start: 1_700_000_000_000_000_000,
            ..Default::default()
        };
        span.meta.insert("appsec.event".into(), "true".into());
        span.metrics.insert("_sampling_priority_v1".into(), 2.0);
        span.meta_struct.insert("appsec".into(), vec![0x80]);
        let p = AgentPayload {
            host_name: "h".into(),
            tracer_payloads: vec![TracerPayload {
                language_name: "python".into(),
                chunks: vec![TraceChunk {
                    priority: 2,
                    spans: vec![span],
                    ..Default::default()
                }],
                ..Default::default()
            }],
            agent_version: "0.1.0".into(),
            ..Default::default()
        };
        let bytes = p.encode_to_vec();
        // AgentPayload.tracerPayloads is field 5 (length-delimited: 0x2a).
        assert!(bytes.contains(&0x2a));
        assert_eq!(AgentPayload::decode(bytes.as_slice()).unwrap(), p);
    }
}
