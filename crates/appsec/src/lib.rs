//! App protection for Rust HTTP services: one tower layer runs Warden's WAF on every request
//! (before the handler, which never runs for a blocked request) and on the response status and
//! headers, and gives handlers RASP hooks and user tracking on the same per-request WAF
//! context.
//!
//! Why a layer: axum and hyper services are tower services, so one `Layer` covers both without
//! framework-specific code; framework facts the layer cannot see (route template, TCP peer)
//! come through small hooks. Why configuration-only enabling: operators turn protection on
//! with `WARDEN_APPSEC_ENABLED=true` and `WARDEN_APPSEC_RULES=<ruleset>`; block vs monitor is
//! one more variable.
//!
//! ```no_run
//! # fn demo() -> Result<(), warden_appsec::AppsecError> {
//! let appsec = warden_appsec::Appsec::from_env()?;
//! let layer = appsec.layer(); // axum: Router::new()...layer(layer)
//! # let _ = layer; Ok(()) }
//! ```
//!
//! Without a ruleset an enabled instance refuses to build ([`ConfigError::NoRuleset`]):
//! Warden's built-in default ruleset does not exist yet, and silently running with none would
//! look protected while protecting nothing.

mod addresses;
mod agent_client;
mod blocking;
mod body;
mod config;
mod engine;
mod layer;
mod remote;
pub mod trace;

pub use blocking::{BlockAction, Blocked};
pub use body::{Body, BoxError};
pub use config::{AgentConfig, Cidr, Config, ConfigError, Limits, Mode};
pub use engine::{
    Appsec, AppsecBuilder, AppsecError, EventSink, LogSink, PathParams, PeerAddr, PeerFn,
    RequestHandle, RequestReport, RouteFn, TraceLink,
};
pub use layer::{AppsecLayer, AppsecService};
pub use remote::REMOTE_CONFIG_PATH;
pub use trace::{FanOut, TraceSink, TraceStats};
