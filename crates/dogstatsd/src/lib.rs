//! The DogStatsD engine: a zero-copy parser ([`parse`]), the agent's 10-second aggregator
//! ([`aggregate`]) and the stable JSON form of parsed messages ([`json`]).
//!
//! Why a separate crate: the agent's UDP/UDS listeners, the `warden dogstatsd parse` CLI, the
//! fuzz target and the benchmarks all need the same protocol semantics, and keeping them free
//! of I/O makes them testable with plain data and property tests.
//!
//! Invariants:
//! * the engine does no I/O, spawns nothing and reads no clock: callers pass `now` in;
//! * the parser never panics, whatever the bytes (property tests + `fuzz/dogstatsd_parse`);
//! * the aggregator's output depends only on the samples and the `now` values it was given.
//!
//! Semantics are those of the Datadog agent (see `specs/dogstatsd.md`); deviations are
//! documented where they happen.

pub mod aggregate;
pub mod json;
mod number;
pub mod parse;

pub use aggregate::{Aggregator, AggregatorConfig, AggregatorStats, Flushed};
pub use json::{error_to_json, message_to_json};
pub use parse::{
    Cardinality, Event, ExternalData, LocalData, Message, Metric, MetricType, MetricValue,
    ParseError, ServiceCheck, Tags, is_reserved_tag, lines, parse_datagram, parse_line,
    parse_message, split_host_tag,
};

/// Parses a float exactly like Go's `strconv.ParseFloat(s, 64)` (`None` where Go errors).
pub fn parse_go_float(s: &str) -> Option<f64> {
    number::parse_go_float(s)
}
