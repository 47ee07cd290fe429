//! Warden's alerting engine: what a monitor's state is, what its message says, who gets told
//! and when, and the exact bytes sent to PagerDuty, Slack and webhooks.
//!
//! Why a separate, pure crate: every one of these decisions (is 83 still an alert when the
//! recovery threshold is 85? does step 2 fire at 300 s or 301 s? is this `$EVENT_MSG` escaped
//! inside a JSON string?) must be testable with exact inputs and no sockets, database or
//! clock. The server (`warden-server`'s `alerting` module) owns the I/O: it reads the store,
//! keeps state in SQLite, sends HTTP requests, and passes the time in.

pub mod escalation;
pub mod handles;
pub mod monitor;
pub mod payload;
pub mod retry;
pub mod template;
pub mod time;

pub use escalation::{Escalation, Policy, Step};
pub use handles::{Handle, HandleKind, parse_handles};
pub use monitor::{GroupState, MonitorEvent, MonitorRule, Status, Thresholds};
pub use template::{TemplateCtx, render};
