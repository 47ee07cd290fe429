//! Plain data shared by every Warden component: what a metric series, a sketch, an event and a
//! service check *are*, independent of how they were received (DogStatsD, checks, HTTP intake)
//! or where they go (forwarder, store).
//!
//! Architecture invariant: this crate does no I/O and depends on nothing but `serde` (and
//! `serde_json` for the JSON-valued fields of security events).

pub mod security;
pub mod sketch;

use serde::{Deserialize, Serialize};

pub use security::SecurityEvent;
pub use sketch::DDSketch;

/// How the points of a series are to be read by the intake.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MetricKind {
    /// A value at an instant (last value wins in a bucket).
    Gauge,
    /// A number of occurrences during `interval` seconds.
    Count,
    /// Occurrences per second averaged over `interval` seconds.
    Rate,
}

/// One `(timestamp, value)` sample; timestamps are UNIX seconds.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Point {
    pub timestamp: i64,
    pub value: f64,
}

/// A metric series ready to be shipped: name, tags, host and points of one kind.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Series {
    pub name: String,
    pub tags: Vec<String>,
    /// Empty means "no host" (the intake then attaches none).
    pub host: String,
    pub kind: MetricKind,
    /// Seconds covered by each point (10 for DogStatsD buckets, 15 for host checks, 0 if unknown).
    pub interval: i64,
    pub unit: Option<String>,
    pub source_type_name: Option<String>,
    pub points: Vec<Point>,
}

/// A distribution context with one sketch per flushed bucket.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SketchSeries {
    pub name: String,
    pub tags: Vec<String>,
    pub host: String,
    /// `(bucket start in UNIX seconds, sketch of that bucket)`.
    pub points: Vec<(i64, DDSketch)>,
}

/// Service-check status codes, numerically as on the wire.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(into = "u8", try_from = "u8")]
pub enum CheckStatus {
    Ok = 0,
    Warning = 1,
    Critical = 2,
    Unknown = 3,
}

impl From<CheckStatus> for u8 {
    fn from(s: CheckStatus) -> u8 {
        s as u8
    }
}

impl TryFrom<u8> for CheckStatus {
    type Error = String;
    fn try_from(v: u8) -> Result<Self, String> {
        match v {
            0 => Ok(Self::Ok),
            1 => Ok(Self::Warning),
            2 => Ok(Self::Critical),
            3 => Ok(Self::Unknown),
            other => Err(format!("service check status must be 0..=3, got {other}")),
        }
    }
}

/// A service check result (`/api/v1/check_run`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ServiceCheck {
    pub name: String,
    pub status: CheckStatus,
    pub host: String,
    /// UNIX seconds; 0 means "now" at the intake.
    pub timestamp: i64,
    pub tags: Vec<String>,
    pub message: Option<String>,
}

/// Event priority.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Priority {
    #[default]
    Normal,
    Low,
}

/// Event alert type.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AlertType {
    Error,
    Warning,
    #[default]
    Info,
    Success,
}

/// An event (`/intake/`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Event {
    pub title: String,
    pub text: String,
    /// UNIX seconds; `None` means "now" at the intake.
    pub timestamp: Option<i64>,
    pub host: String,
    pub aggregation_key: Option<String>,
    pub priority: Priority,
    pub source_type_name: Option<String>,
    pub alert_type: AlertType,
    pub tags: Vec<String>,
}
