//! Turning `warden_model` values into Datadog intake payloads.
//!
//! Why a hand-rolled packer instead of one payload per batch: the intake drops bodies over its
//! limits (series: 10 000 points, 512 000 B compressed, 5 MiB uncompressed; other routes:
//! 2.5 MiB compressed, 4 MiB uncompressed — `agent.md` §2), so every batch is cut into
//! payloads that respect them. Items are encoded once; protobuf payloads are the plain
//! concatenation of their length-delimited `repeated` entries (which is exactly how protobuf
//! encodes a repeated field), JSON payloads are assembled from pre-rendered items. A chunk
//! that compresses above the limit is split in halves until it fits; a single item that can
//! never fit is dropped and reported, never sent to be rejected.

use std::collections::BTreeMap;
use std::io::Write;

use bytes::Bytes;
use prost::Message;
use serde_json::{Map, Value, json};
use warden_model::{AlertType, Event, MetricKind, Priority, Series, ServiceCheck, SketchSeries};
use warden_proto as proto;

use crate::config::Compression;

/// Points per `/api/v2/series` payload.
pub(crate) const MAX_SERIES_POINTS: usize = 10_000;
/// Compressed bytes per `/api/v2/series` payload.
pub(crate) const MAX_SERIES_COMPRESSED: usize = 512_000;
/// Uncompressed bytes per `/api/v2/series` payload.
pub(crate) const MAX_SERIES_UNCOMPRESSED: usize = 5 * 1024 * 1024;
/// `serializer_max_payload_size`: compressed bytes for the other routes.
pub(crate) const MAX_PAYLOAD_COMPRESSED: usize = 2_621_440;
/// `serializer_max_uncompressed_payload_size`.
pub(crate) const MAX_PAYLOAD_UNCOMPRESSED: usize = 4 * 1024 * 1024;
/// `DD-Agent-Payload` value sent with protobuf bodies: the `DataDog/agent-payload` major
/// version (v5) whose message layout `warden-proto` follows. Informational for the intake.
pub(crate) const AGENT_PAYLOAD_VERSION: &str = "5.0.164";

/// Intake route of a payload.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) enum Endpoint {
    /// `POST /api/v2/series`, protobuf `MetricPayload`.
    Series,
    /// `POST /api/beta/sketches`, protobuf `SketchPayload`.
    Sketches,
    /// `POST /api/v1/check_run`, JSON array.
    CheckRun,
    /// `POST /intake/`, JSON events object.
    Intake,
    /// `POST /api/v0.2/traces`, protobuf `AgentPayload`.
    Traces,
}

/// Number of routes (the size of per-route arrays).
pub(crate) const ENDPOINTS: usize = 5;

impl Endpoint {
    /// Every route, in a stable order (index = [`Endpoint::index`]).
    pub(crate) const ALL: [Endpoint; ENDPOINTS] = [
        Endpoint::Series,
        Endpoint::Sketches,
        Endpoint::CheckRun,
        Endpoint::Intake,
        Endpoint::Traces,
    ];

    /// URL path on the intake.
    pub(crate) fn path(self) -> &'static str {
        match self {
            Endpoint::Series => "/api/v2/series",
            Endpoint::Sketches => "/api/beta/sketches",
            Endpoint::CheckRun => "/api/v1/check_run",
            Endpoint::Intake => "/intake/",
            Endpoint::Traces => "/api/v0.2/traces",
        }
    }

    /// Whether the body is protobuf (else JSON).
    pub(crate) fn is_protobuf(self) -> bool {
        matches!(
            self,
            Endpoint::Series | Endpoint::Sketches | Endpoint::Traces
        )
    }

    /// `Content-Type` of the body.
    pub(crate) fn content_type(self) -> &'static str {
        if self.is_protobuf() {
            "application/x-protobuf"
        } else {
            "application/json"
        }
    }

    pub(crate) fn index(self) -> usize {
        match self {
            Endpoint::Series => 0,
            Endpoint::Sketches => 1,
            Endpoint::CheckRun => 2,
            Endpoint::Intake => 3,
            Endpoint::Traces => 4,
        }
    }

    /// Stable code used in the on-disk record format. Never renumber.
    pub(crate) fn code(self) -> u8 {
        match self {
            Endpoint::Series => 1,
            Endpoint::Sketches => 2,
            Endpoint::CheckRun => 3,
            Endpoint::Intake => 4,
            Endpoint::Traces => 5,
        }
    }

    pub(crate) fn from_code(c: u8) -> Option<Self> {
        Some(match c {
            1 => Endpoint::Series,
            2 => Endpoint::Sketches,
            3 => Endpoint::CheckRun,
            4 => Endpoint::Intake,
            5 => Endpoint::Traces,
            _ => return None,
        })
    }
}

/// `Content-Encoding` value of a compression kind.
pub(crate) fn content_encoding(c: Compression) -> &'static str {
    match c {
        Compression::Zstd => "zstd",
        Compression::Zlib => "deflate",
    }
}

/// Stable on-disk code of a compression kind. Never renumber.
pub(crate) fn compression_code(c: Compression) -> u8 {
    match c {
        Compression::Zstd => 1,
        Compression::Zlib => 2,
    }
}

pub(crate) fn compression_from_code(c: u8) -> Option<Compression> {
    match c {
        1 => Some(Compression::Zstd),
        2 => Some(Compression::Zlib),
        _ => None,
    }
}

/// One compressed request body, ready to send or to queue.
///
/// Headers are derived from `endpoint` and `encoding` at send time, so nothing secret (the API
/// key) is ever stored with a payload, in memory or on disk.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Payload {
    /// Creation order; larger is newer. Drives "newest retried first, oldest evicted first".
    pub(crate) seq: u64,
    /// UNIX milliseconds when the payload was built.
    pub(crate) created_ms: i64,
    pub(crate) endpoint: Endpoint,
    pub(crate) encoding: Compression,
    /// Compressed body.
    pub(crate) body: Bytes,
}

impl Payload {
    /// Bytes this payload counts against queue bounds.
    pub(crate) fn size(&self) -> u64 {
        self.body.len() as u64
    }
}

/// A serialized batch before sequence numbers are assigned.
#[derive(Debug)]
pub(crate) struct Built {
    pub(crate) endpoint: Endpoint,
    pub(crate) body: Vec<u8>,
}

/// Result of serializing one batch.
#[derive(Debug, Default)]
pub(crate) struct Serialized {
    pub(crate) bodies: Vec<Built>,
    /// Items that could not fit in any payload (or failed to compress), dropped.
    pub(crate) dropped_items: u64,
}

struct Limits {
    max_weight: usize,
    max_uncompressed: usize,
    max_compressed: usize,
}

const SERIES_LIMITS: Limits = Limits {
    max_weight: MAX_SERIES_POINTS,
    max_uncompressed: MAX_SERIES_UNCOMPRESSED,
    max_compressed: MAX_SERIES_COMPRESSED,
};

const OTHER_LIMITS: Limits = Limits {
    max_weight: usize::MAX,
    max_uncompressed: MAX_PAYLOAD_UNCOMPRESSED,
    max_compressed: MAX_PAYLOAD_COMPRESSED,
};

/// One pre-encoded item (a protobuf repeated entry or a JSON object).
struct Item {
    bytes: Vec<u8>,
    /// Points (series) or 1.
    weight: usize,
    /// Grouping key (event source type), empty otherwise.
    group: String,
}

/// Compresses `data` with the configured codec.
pub(crate) fn compress(kind: Compression, data: &[u8]) -> std::io::Result<Vec<u8>> {
    match kind {
        // Level 1 like the Datadog agent (`serializer_zstd_compressor_level`).
        Compression::Zstd => zstd::bulk::compress(data, 1),
        Compression::Zlib => {
            let mut enc = flate2::write::ZlibEncoder::new(
                Vec::with_capacity(data.len() / 4 + 64),
                flate2::Compression::new(6),
            );
            enc.write_all(data)?;
            enc.finish()
        }
    }
}

fn metric_type(kind: MetricKind) -> proto::MetricType {
    match kind {
        MetricKind::Gauge => proto::MetricType::Gauge,
        MetricKind::Count => proto::MetricType::Count,
        MetricKind::Rate => proto::MetricType::Rate,
    }
}

/// Converts one series to its protobuf form(s): a series with more points than fit in one
/// payload is cut into several series with the same identity.
pub(crate) fn series_to_proto(s: &Series) -> Vec<proto::MetricSeries> {
    let resources = if s.host.is_empty() {
        Vec::new()
    } else {
        vec![proto::Resource {
            r#type: "host".into(),
            name: s.host.clone(),
        }]
    };
    let template = proto::MetricSeries {
        resources,
        metric: s.name.clone(),
        tags: s.tags.clone(),
        points: Vec::new(),
        r#type: metric_type(s.kind) as i32,
        unit: s.unit.clone().unwrap_or_default(),
        source_type_name: s.source_type_name.clone().unwrap_or_default(),
        interval: s.interval,
        metadata: None,
    };
    if s.points.is_empty() {
        return Vec::new();
    }
    s.points
        .chunks(MAX_SERIES_POINTS)
        .map(|chunk| {
            let mut m = template.clone();
            m.points = chunk
                .iter()
                .map(|p| proto::MetricPoint {
                    value: p.value,
                    timestamp: p.timestamp,
                })
                .collect();
            m
        })
        .collect()
}

/// Converts one distribution context to a protobuf `Sketch`.
pub(crate) fn sketch_to_proto(s: &SketchSeries) -> proto::Sketch {
    proto::Sketch {
        metric: s.name.clone(),
        host: s.host.clone(),
        tags: s.tags.clone(),
        dogsketches: s
            .points
            .iter()
            .map(|(ts, sk)| proto::Dogsketch {
                ts: *ts,
                cnt: i64::try_from(sk.count()).unwrap_or(i64::MAX),
                min: sk.min(),
                max: sk.max(),
                avg: sk.avg(),
                sum: sk.sum(),
                k: sk.keys(),
                n: sk.counts(),
            })
            .collect(),
    }
}

/// The `/api/v1/check_run` object of a service check (Datadog agent field names).
pub(crate) fn check_to_json(c: &ServiceCheck) -> Value {
    json!({
        "check": c.name,
        "host_name": c.host,
        "timestamp": c.timestamp,
        "status": u8::from(c.status),
        "message": c.message.clone().unwrap_or_default(),
        "tags": c.tags,
    })
}

fn priority_str(p: Priority) -> &'static str {
    match p {
        Priority::Normal => "normal",
        Priority::Low => "low",
    }
}

fn alert_str(a: AlertType) -> &'static str {
    match a {
        AlertType::Error => "error",
        AlertType::Warning => "warning",
        AlertType::Info => "info",
        AlertType::Success => "success",
    }
}

/// The `/intake/` object of an event (Datadog agent `writeEvent` field names; optional fields
/// omitted when empty, like the agent).
pub(crate) fn event_to_json(e: &Event, now: i64) -> Value {
    let mut m = Map::new();
    m.insert("msg_title".into(), json!(e.title));
    m.insert("msg_text".into(), json!(e.text));
    m.insert("timestamp".into(), json!(e.timestamp.unwrap_or(now)));
    m.insert("priority".into(), json!(priority_str(e.priority)));
    m.insert("host".into(), json!(e.host));
    if !e.tags.is_empty() {
        m.insert("tags".into(), json!(e.tags));
    }
    m.insert("alert_type".into(), json!(alert_str(e.alert_type)));
    if let Some(k) = e.aggregation_key.as_deref().filter(|k| !k.is_empty()) {
        m.insert("aggregation_key".into(), json!(k));
    }
    if let Some(s) = e.source_type_name.as_deref().filter(|s| !s.is_empty()) {
        m.insert("source_type_name".into(), json!(s));
    }
    Value::Object(m)
}

/// Encodes `msg` as entry `tag` of a repeated message field.
fn encode_entry<M: Message>(tag: u32, msg: &M) -> Vec<u8> {
    let mut buf = Vec::with_capacity(msg.encoded_len() + 8);
    prost::encoding::message::encode(tag, msg, &mut buf);
    buf
}

/// Serializes series into `/api/v2/series` payloads.
pub(crate) fn serialize_series(series: &[Series], compression: Compression) -> Serialized {
    let items = series
        .iter()
        .flat_map(series_to_proto)
        .map(|m| Item {
            weight: m.points.len(),
            bytes: encode_entry(1, &m),
            group: String::new(),
        })
        .collect();
    pack(
        Endpoint::Series,
        items,
        &SERIES_LIMITS,
        compression,
        &concat,
    )
}

/// Serializes sketches into `/api/beta/sketches` payloads.
pub(crate) fn serialize_sketches(
    sketches: &[SketchSeries],
    compression: Compression,
) -> Serialized {
    let items = sketches
        .iter()
        .filter(|s| !s.points.is_empty())
        .map(|s| Item {
            bytes: encode_entry(1, &sketch_to_proto(s)),
            weight: 1,
            group: String::new(),
        })
        .collect();
    pack(
        Endpoint::Sketches,
        items,
        &OTHER_LIMITS,
        compression,
        &concat,
    )
}

/// Serializes service checks into `/api/v1/check_run` payloads.
pub(crate) fn serialize_checks(checks: &[ServiceCheck], compression: Compression) -> Serialized {
    let items = checks
        .iter()
        .map(|c| Item {
            bytes: check_to_json(c).to_string().into_bytes(),
            weight: 1,
            group: String::new(),
        })
        .collect();
    pack(
        Endpoint::CheckRun,
        items,
        &OTHER_LIMITS,
        compression,
        &json_array,
    )
}

/// Serializes events into `/intake/` payloads grouped by source type
/// (`{"apiKey":"","events":{"<source type or api>":[...]},"internalHostname":"<host>"}`).
pub(crate) fn serialize_events(
    events: &[Event],
    hostname: &str,
    now: i64,
    compression: Compression,
) -> Serialized {
    let mut items: Vec<Item> = events
        .iter()
        .map(|e| Item {
            bytes: event_to_json(e, now).to_string().into_bytes(),
            weight: 1,
            group: e
                .source_type_name
                .clone()
                .filter(|s| !s.is_empty())
                .unwrap_or_else(|| "api".into()),
        })
        .collect();
    items.sort_by(|a, b| a.group.cmp(&b.group));
    let host = Value::String(hostname.to_owned()).to_string();
    let assemble = move |chunk: &[Item]| -> Vec<u8> {
        let mut groups: BTreeMap<&str, Vec<&[u8]>> = BTreeMap::new();
        for it in chunk {
            groups.entry(&it.group).or_default().push(&it.bytes);
        }
        let mut out = Vec::new();
        out.extend_from_slice(br#"{"apiKey":"","events":{"#);
        for (gi, (group, evs)) in groups.iter().enumerate() {
            if gi > 0 {
                out.push(b',');
            }
            out.extend_from_slice(Value::String((*group).to_owned()).to_string().as_bytes());
            out.extend_from_slice(b":[");
            for (i, e) in evs.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                out.extend_from_slice(e);
            }
            out.push(b']');
        }
        out.extend_from_slice(br#"},"internalHostname":"#);
        out.extend_from_slice(host.as_bytes());
        out.push(b'}');
        out
    };
    pack(
        Endpoint::Intake,
        items,
        &OTHER_LIMITS,
        compression,
        &assemble,
    )
}

/// Target and error traces per second reported in `AgentPayload` (the Datadog agent's
/// defaults; informational: Warden samples nothing).
const TARGET_TPS: f64 = 10.0;
const ERROR_TPS: f64 = 10.0;

/// Serializes tracer payloads into `/api/v0.2/traces` `AgentPayload`s: the header fields
/// encoded once, followed by as many `tracerPayloads` entries (field 5) as fit.
pub(crate) fn serialize_traces(
    payloads: &[proto::trace::TracerPayload],
    hostname: &str,
    env: &str,
    compression: Compression,
) -> Serialized {
    let header = proto::trace::AgentPayload {
        host_name: hostname.to_owned(),
        env: env.to_owned(),
        agent_version: env!("CARGO_PKG_VERSION").to_owned(),
        target_tps: TARGET_TPS,
        error_tps: ERROR_TPS,
        ..Default::default()
    }
    .encode_to_vec();
    let items = payloads
        .iter()
        .filter(|p| !p.chunks.is_empty())
        .map(|p| Item {
            bytes: encode_entry(5, p),
            weight: 1,
            group: String::new(),
        })
        .collect();
    let assemble = move |chunk: &[Item]| -> Vec<u8> {
        let mut out = header.clone();
        out.extend_from_slice(&concat(chunk));
        out
    };
    pack(
        Endpoint::Traces,
        items,
        &OTHER_LIMITS,
        compression,
        &assemble,
    )
}

fn concat(chunk: &[Item]) -> Vec<u8> {
    let mut out = Vec::with_capacity(chunk.iter().map(|i| i.bytes.len()).sum());
    for it in chunk {
        out.extend_from_slice(&it.bytes);
    }
    out
}

fn json_array(chunk: &[Item]) -> Vec<u8> {
    let mut out = Vec::with_capacity(chunk.iter().map(|i| i.bytes.len() + 1).sum::<usize>() + 2);
    out.push(b'[');
    for (i, it) in chunk.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        out.extend_from_slice(&it.bytes);
    }
    out.push(b']');
    out
}

/// Bytes of framing an assembled JSON payload may add around items (header, footer, group
/// keys); generous so the greedy cut never overshoots the uncompressed limit.
const FRAMING_SLACK: usize = 4096;

/// Greedy cut by weight and uncompressed size, then compress; halve chunks that compress
/// above the limit.
fn pack(
    endpoint: Endpoint,
    items: Vec<Item>,
    limits: &Limits,
    compression: Compression,
    assemble: &dyn Fn(&[Item]) -> Vec<u8>,
) -> Serialized {
    let mut out = Serialized::default();
    let budget = limits.max_uncompressed.saturating_sub(FRAMING_SLACK);
    let mut chunks: Vec<Vec<Item>> = Vec::new();
    let mut cur: Vec<Item> = Vec::new();
    let (mut cur_w, mut cur_b) = (0usize, 0usize);
    for it in items {
        // Per-item overhead: a separator, and for events possibly a new group key.
        let b = it.bytes.len()
            + 1
            + if it.group.is_empty() {
                0
            } else {
                it.group.len() + 8
            };
        if b > budget || it.weight > limits.max_weight {
            tracing::warn!(
                endpoint = endpoint.path(),
                bytes = it.bytes.len(),
                "dropping one item larger than the intake accepts in a payload"
            );
            out.dropped_items += 1;
            continue;
        }
        if !cur.is_empty() && (cur_w + it.weight > limits.max_weight || cur_b + b > budget) {
            chunks.push(std::mem::take(&mut cur));
            cur_w = 0;
            cur_b = 0;
        }
        cur_w += it.weight;
        cur_b += b;
        cur.push(it);
    }
    if !cur.is_empty() {
        chunks.push(cur);
    }
    for chunk in chunks {
        compress_chunk(endpoint, chunk, limits, compression, assemble, &mut out);
    }
    out
}

fn compress_chunk(
    endpoint: Endpoint,
    mut chunk: Vec<Item>,
    limits: &Limits,
    compression: Compression,
    assemble: &dyn Fn(&[Item]) -> Vec<u8>,
    out: &mut Serialized,
) {
    let raw = assemble(&chunk);
    match compress(compression, &raw) {
        Ok(body) if body.len() <= limits.max_compressed => {
            out.bodies.push(Built { endpoint, body });
        }
        Ok(body) => {
            if chunk.len() > 1 {
                let second = chunk.split_off(chunk.len() / 2);
                compress_chunk(endpoint, chunk, limits, compression, assemble, out);
                compress_chunk(endpoint, second, limits, compression, assemble, out);
            } else {
                tracing::warn!(
                    endpoint = endpoint.path(),
                    compressed = body.len(),
                    limit = limits.max_compressed,
                    "dropping one item that compresses above the intake limit"
                );
                out.dropped_items += 1;
            }
        }
        Err(e) => {
            tracing::error!(endpoint = endpoint.path(), error = %e, "compression failed; dropping payload");
            out.dropped_items += chunk.len() as u64;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;
    use warden_model::{CheckStatus, Point};

    fn decompress(kind: Compression, b: &[u8]) -> Vec<u8> {
        match kind {
            Compression::Zstd => zstd::stream::decode_all(b).unwrap(),
            Compression::Zlib => {
                let mut out = Vec::new();
                flate2::read::ZlibDecoder::new(b)
                    .read_to_end(&mut out)
                    .unwrap();
                out
            }
        }
    }

    fn series(name: &str, n: usize, tags: usize) -> Series {
        Series {
            name: name.into(),
            tags: (0..tags).map(|i| format!("tag{i}:value{i}")).collect(),
            host: "h".into(),
            kind: MetricKind::Count,
            interval: 10,
            unit: Some("byte".into()),
            source_type_name: None,
            points: (0..n)
                .map(|i| Point {
                    timestamp: 1_700_000_000 + i as i64,
                    value: i as f64 * 1.37,
                })
                .collect(),
        }
    }

    #[test]
    fn series_payload_is_a_valid_metric_payload_with_host_resource() {
        let s = series("m", 3, 2);
        let out = serialize_series(std::slice::from_ref(&s), Compression::Zstd);
        assert_eq!(out.bodies.len(), 1);
        let raw = decompress(Compression::Zstd, &out.bodies[0].body);
        let p = proto::MetricPayload::decode(raw.as_slice()).unwrap();
        assert_eq!(p.series.len(), 1);
        let m = &p.series[0];
        assert_eq!(m.resources[0].r#type, "host");
        assert_eq!(m.resources[0].name, "h");
        assert_eq!(m.r#type, 1);
        assert_eq!(m.unit, "byte");
        assert_eq!(m.interval, 10);
        assert_eq!(m.points.len(), 3);
        assert_eq!(m.points[2].value, 2.0 * 1.37);
    }

    #[test]
    fn series_are_split_at_ten_thousand_points_without_losing_any() {
        let batch: Vec<Series> = (0..7).map(|i| series(&format!("m{i}"), 4_000, 3)).collect();
        let out = serialize_series(&batch, Compression::Zlib);
        assert_eq!(out.dropped_items, 0);
        let mut total = 0;
        for b in &out.bodies {
            let raw = decompress(Compression::Zlib, &b.body);
            assert!(raw.len() <= MAX_SERIES_UNCOMPRESSED);
            assert!(b.body.len() <= MAX_SERIES_COMPRESSED);
            let p = proto::MetricPayload::decode(raw.as_slice()).unwrap();
            let pts: usize = p.series.iter().map(|s| s.points.len()).sum();
            assert!(pts <= MAX_SERIES_POINTS, "{pts}");
            total += pts;
        }
        assert_eq!(total, 28_000);
        assert!(out.bodies.len() >= 3);
        // One series longer than a payload is cut into same-identity series.
        let out = serialize_series(&[series("big", 25_000, 1)], Compression::Zstd);
        assert_eq!(out.bodies.len(), 3);
    }

    #[test]
    fn incompressible_series_are_split_under_the_compressed_limit() {
        // Random-looking tags defeat compression, forcing the halving path.
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        let batch: Vec<Series> = (0..6000)
            .map(|i| {
                let mut s = series(&format!("m{i}"), 1, 0);
                s.tags = (0..8)
                    .map(|_| {
                        x ^= x << 13;
                        x ^= x >> 7;
                        x ^= x << 17;
                        format!("k:{x:016x}{:016x}", x.rotate_left(29))
                    })
                    .collect();
                s
            })
            .collect();
        let out = serialize_series(&batch, Compression::Zstd);
        assert!(out.bodies.len() >= 2, "{}", out.bodies.len());
        let mut n = 0;
        for b in &out.bodies {
            assert!(b.body.len() <= MAX_SERIES_COMPRESSED);
            let raw = decompress(Compression::Zstd, &b.body);
            n += proto::MetricPayload::decode(raw.as_slice())
                .unwrap()
                .series
                .len();
        }
        assert_eq!(n, 6000);
    }

    #[test]
    fn check_runs_and_events_have_the_agent_json_shape() {
        let c = ServiceCheck {
            name: "app.ok".into(),
            status: CheckStatus::Critical,
            host: "h1".into(),
            timestamp: 42,
            tags: vec!["a:b".into()],
            message: None,
        };
        let out = serialize_checks(&[c], Compression::Zstd);
        let v: Value =
            serde_json::from_slice(&decompress(Compression::Zstd, &out.bodies[0].body)).unwrap();
        assert_eq!(
            v,
            json!([{"check":"app.ok","host_name":"h1","timestamp":42,"status":2,"message":"","tags":["a:b"]}])
        );
        let ev = |src: Option<&str>, title: &str| Event {
            title: title.into(),
            text: "t".into(),
            timestamp: None,
            host: "h1".into(),
            aggregation_key: None,
            priority: Priority::Low,
            source_type_name: src.map(String::from),
            alert_type: AlertType::Warning,
            tags: vec![],
        };
        let out = serialize_events(
            &[
                ev(Some("nagios"), "a"),
                ev(None, "b"),
                ev(Some("nagios"), "c"),
            ],
            "agent-host",
            1000,
            Compression::Zlib,
        );
        let v: Value =
            serde_json::from_slice(&decompress(Compression::Zlib, &out.bodies[0].body)).unwrap();
        assert_eq!(v["internalHostname"], "agent-host");
        assert_eq!(v["events"]["api"][0]["msg_title"], "b");
        assert_eq!(v["events"]["api"][0]["timestamp"], 1000);
        assert_eq!(v["events"]["api"][0]["priority"], "low");
        assert_eq!(v["events"]["api"][0]["alert_type"], "warning");
        assert_eq!(v["events"]["nagios"].as_array().unwrap().len(), 2);
        assert_eq!(v["events"]["nagios"][1]["source_type_name"], "nagios");
        assert!(v["events"]["api"][0].get("aggregation_key").is_none());
    }

    #[test]
    fn traces_are_agent_payloads_with_the_header_once_and_every_tracer_payload() {
        use proto::trace::{AgentPayload, Span, TraceChunk, TracerPayload};
        let tp = |n: u64| TracerPayload {
            language_name: "python".into(),
            chunks: vec![TraceChunk {
                priority: 2,
                spans: vec![Span {
                    trace_id: n,
                    span_id: n,
                    ..Default::default()
                }],
                ..Default::default()
            }],
            ..Default::default()
        };
        let empty = TracerPayload::default();
        let ser = serialize_traces(&[tp(1), empty, tp(2)], "h1", "prod", Compression::Zstd);
        assert_eq!(ser.bodies.len(), 1);
        assert_eq!(ser.bodies[0].endpoint, Endpoint::Traces);
        let raw = decompress(Compression::Zstd, &ser.bodies[0].body);
        let p = AgentPayload::decode(raw.as_slice()).unwrap();
        assert_eq!((p.host_name.as_str(), p.env.as_str()), ("h1", "prod"));
        assert_eq!(p.agent_version, env!("CARGO_PKG_VERSION"));
        assert_eq!(p.tracer_payloads, vec![tp(1), tp(2)]);
        assert_eq!(Endpoint::Traces.path(), "/api/v0.2/traces");
        assert!(Endpoint::Traces.is_protobuf());
    }

    #[test]
    fn endpoint_codes_round_trip() {
        for e in Endpoint::ALL {
            assert_eq!(Endpoint::from_code(e.code()), Some(e));
            assert_eq!(Endpoint::ALL[e.index()], e);
        }
        assert_eq!(Endpoint::from_code(0), None);
        for c in [Compression::Zstd, Compression::Zlib] {
            assert_eq!(compression_from_code(compression_code(c)), Some(c));
        }
    }
}
