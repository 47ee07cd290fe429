//! App protection for Rust HTTP services: one tower layer runs Warden's WAF on every request
//! (before the handler, which never runs for a blocked request) and on the response status and
//! headers, and gives handlers RASP hooks and user tracking on the same per-request WAF
//! context.
//!
//! Why a layer: axum and hyper services are tower services, so one `Layer` covers both without
//! framework-specific code; framework facts the layer cannot see (route template, TCP peer)
//! come through small hooks. Why configuration-only enabling: operators turn protection on
//! with `WARDEN_APPSEC_ENABLED=true` (optionally `WARDEN_APPSEC_RULES=<ruleset>`); block vs
//! monitor is one more variable.
//!
//! ```no_run
//! # fn demo() -> Result<(), warden_appsec::AppsecError> {
//! let appsec = warden_appsec::Appsec::from_env()?;
//! let layer = appsec.layer(); // axum: Router::new()...layer(layer)
//! # let _ = layer; Ok(()) }
//! ```
//!
//! Without a configured ruleset an enabled instance uses Warden's built-in default ruleset
//! (`warden_waf::DEFAULT_RULESET_JSON`): turning protection on must never mean running with
//! no rules. Reports go to the local agent as trace spans ([`TraceSink`]) and the agent hands
//! back denylists and ruleset updates ([`REMOTE_CONFIG_PATH`]), so one variable is enough.

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
