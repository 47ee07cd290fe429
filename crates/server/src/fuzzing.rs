//! Entry points for the fuzz targets in `fuzz/` (no stability promise): the trace intake's
//! protobuf → security-event path and the `/api/v2/spans/events` filters, without HTTP.
//! Why here: those parsers are private to the server; the fuzz crate needs a door to them.

use prost::Message;
use warden_model::SecurityEvent;
use warden_proto::trace::AgentPayload;

/// Decodes an `AgentPayload` like `/api/v0.2/traces` does, then counts and flattens the
/// security spans; `Err` is the 400 message.
pub fn trace_intake(raw: &[u8]) -> Result<(u64, Vec<SecurityEvent>), String> {
    let payload = AgentPayload::decode(raw).map_err(|e| e.to_string())?;
    Ok(security_events(&payload))
}

/// Counts and flattens the security spans of a decoded payload (meta_struct msgpack included).
pub fn security_events(p: &AgentPayload) -> (u64, Vec<SecurityEvent>) {
    crate::traces::security_events(p)
}

/// `filter[from]` / `filter[to]` of `/api/v2/spans/events`.
pub fn span_events_time(s: &str, now_ms: i64) -> Option<i64> {
    crate::traces::parse_time(s, now_ms)
}

/// `filter[query]` of `/api/v2/spans/events`: the number of terms, or the 400 message.
pub fn span_events_query(q: &str) -> Result<usize, String> {
    crate::traces::parse_query(q)
        .map(|t| t.len())
        .map_err(|e| e.message)
}
