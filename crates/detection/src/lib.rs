//! Warden's detection engine: Datadog-format detection rules evaluated over security events,
//! producing security signals.
//!
//! Why a separate, I/O-free crate: rules, windows and the search syntax are the part most
//! likely to be wrong in subtle ways (off-by-one windows, keepAlive edges, parser corner
//! cases). Keeping them pure (events and time in, signal updates out) makes them testable
//! with plain unit tests and property tests, and lets the server own persistence, threads,
//! HTTP and notification delivery. See `docs/adr/0005-detection.md`.
//!
//! * [`search`]: the Datadog search-syntax subset (rule queries and the signals filter).
//! * [`rule`]: rules in the `/api/v2/security_monitoring/rules` shape, validation, conditions.
//! * [`engine`]: threshold and new-value evaluation, keepAlive / maxSignalDuration.
//! * [`defaults`]: the built-in rules.
//! * [`api`]: signals in the v2 API's JSON shapes.
//! * [`time`]: ISO-8601 / epoch / `now-1h` parsing.

pub mod api;
pub mod defaults;
pub mod engine;
pub mod rule;
pub mod search;
pub mod time;

pub use engine::{ActionRequest, Engine, EngineStats, Signal, SignalUpdate, Triage, UpdateKind};
pub use rule::{Rule, RuleError, Severity};
pub use search::{Fields, Query, SearchError};
