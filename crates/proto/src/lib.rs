//! Wire types of Datadog's `agent-payload` protobufs, as used between agents and intake.
//!
//! Why hand-written: the messages are few and stable, and deriving them with `prost` keeps
//! `protoc` (a system binary) out of the build. Field numbers and enum values follow
//! `DataDog/agent-payload` `proto/metrics/agent_payload.proto` (current numbering, where
//! `MetricType` is `UNSPECIFIED = 0, COUNT = 1, RATE = 2, GAUGE = 3` and field 9 carries
//! origin metadata). Older agent-payload releases numbered `GAUGE = 0, COUNT = 1, RATE = 2`;
//! an intake therefore reads 0 as a gauge, which is right under both numberings.
//! Changing a tag number here breaks every peer: do not.

pub mod trace;

/// `datadog.agentpayload.MetricPayload`, the body of `POST /api/v2/series`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct MetricPayload {
    #[prost(message, repeated, tag = "1")]
    pub series: Vec<MetricSeries>,
}

/// `MetricPayload.MetricType`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, prost::Enumeration)]
#[repr(i32)]
pub enum MetricType {
    Unspecified = 0,
    Count = 1,
    Rate = 2,
    Gauge = 3,
}

/// `MetricPayload.MetricPoint`: a value at a UNIX timestamp in seconds.
#[derive(Clone, Copy, PartialEq, prost::Message)]
pub struct MetricPoint {
    #[prost(double, tag = "1")]
    pub value: f64,
    #[prost(int64, tag = "2")]
    pub timestamp: i64,
}

/// `MetricPayload.Resource`; the host of a series is the resource `{type: "host", name}`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Resource {
    #[prost(string, tag = "1")]
    pub r#type: String,
    #[prost(string, tag = "2")]
    pub name: String,
}

/// `MetricPayload.MetricSeries`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct MetricSeries {
    #[prost(message, repeated, tag = "1")]
    pub resources: Vec<Resource>,
    #[prost(string, tag = "2")]
    pub metric: String,
    #[prost(string, repeated, tag = "3")]
    pub tags: Vec<String>,
    #[prost(message, repeated, tag = "4")]
    pub points: Vec<MetricPoint>,
    #[prost(enumeration = "MetricType", tag = "5")]
    pub r#type: i32,
    #[prost(string, tag = "6")]
    pub unit: String,
    #[prost(string, tag = "7")]
    pub source_type_name: String,
    #[prost(int64, tag = "8")]
    pub interval: i64,
    #[prost(message, optional, tag = "9")]
    pub metadata: Option<Metadata>,
}

/// Series metadata (`metadata.origin`).
#[derive(Clone, PartialEq, prost::Message)]
pub struct Metadata {
    #[prost(message, optional, tag = "1")]
    pub origin: Option<Origin>,
}

/// Where a series came from (product / category / service codes).
#[derive(Clone, Copy, PartialEq, prost::Message)]
pub struct Origin {
    #[prost(uint32, tag = "4")]
    pub origin_product: u32,
    #[prost(uint32, tag = "5")]
    pub origin_category: u32,
    #[prost(uint32, tag = "6")]
    pub origin_service: u32,
}

/// `datadog.agentpayload.SketchPayload`, the body of `POST /api/beta/sketches`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct SketchPayload {
    #[prost(message, repeated, tag = "1")]
    pub sketches: Vec<Sketch>,
    #[prost(message, optional, tag = "2")]
    pub metadata: Option<CommonMetadata>,
}

/// `SketchPayload.Sketch`: one distribution context with its per-interval sketches.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Sketch {
    #[prost(string, tag = "1")]
    pub metric: String,
    #[prost(string, tag = "2")]
    pub host: String,
    #[prost(string, repeated, tag = "4")]
    pub tags: Vec<String>,
    #[prost(message, repeated, tag = "7")]
    pub dogsketches: Vec<Dogsketch>,
}

/// `SketchPayload.Sketch.Dogsketch`: a DDSketch with summary statistics; `k` are bin keys
/// (log-gamma indexes, signed), `n` their counts, sorted by key.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Dogsketch {
    #[prost(int64, tag = "1")]
    pub ts: i64,
    #[prost(int64, tag = "2")]
    pub cnt: i64,
    #[prost(double, tag = "3")]
    pub min: f64,
    #[prost(double, tag = "4")]
    pub max: f64,
    #[prost(double, tag = "5")]
    pub avg: f64,
    #[prost(double, tag = "6")]
    pub sum: f64,
    #[prost(sint32, repeated, tag = "7")]
    pub k: Vec<i32>,
    #[prost(uint32, repeated, tag = "8")]
    pub n: Vec<u32>,
}

/// `CommonMetadata`, sent with sketch payloads.
#[derive(Clone, PartialEq, prost::Message)]
pub struct CommonMetadata {
    #[prost(string, tag = "1")]
    pub agent_version: String,
    #[prost(string, tag = "2")]
    pub timezone: String,
    #[prost(double, tag = "3")]
    pub current_epoch: f64,
    #[prost(string, tag = "4")]
    pub internal_ip: String,
    #[prost(string, tag = "5")]
    pub public_ip: String,
    #[prost(string, tag = "6")]
    pub api_key: String,
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost::Message;

    #[test]
    fn series_round_trips_and_uses_current_type_numbering() {
        let payload = MetricPayload {
            series: vec![MetricSeries {
                resources: vec![Resource {
                    r#type: "host".into(),
                    name: "h1".into(),
                }],
                metric: "m".into(),
                tags: vec!["a:b".into()],
                points: vec![MetricPoint {
                    value: 1.5,
                    timestamp: 10,
                }],
                r#type: MetricType::Gauge as i32,
                interval: 10,
                ..Default::default()
            }],
        };
        let bytes = payload.encode_to_vec();
        let back = MetricPayload::decode(bytes.as_slice()).unwrap();
        assert_eq!(back, payload);
        assert_eq!(back.series[0].r#type(), MetricType::Gauge);
        assert_eq!(MetricType::Gauge as i32, 3);
    }

    #[test]
    fn sketch_keys_are_zigzag_encoded() {
        let s = Dogsketch {
            k: vec![-1],
            n: vec![1],
            ..Default::default()
        };
        // field 7, packed: tag 0x3a, len 1, zigzag(-1) = 1
        let bytes = s.encode_to_vec();
        assert!(bytes.windows(3).any(|w| w == [0x3a, 0x01, 0x01]));
    }
}
