//! Warden's in-app WAF engine: reads the Datadog AppSec ruleset format (2.x) and evaluates
//! request data the way libddwaf does, as a pure library (no I/O, no async, no HTTP types).
//!
//! Flow: [`Ruleset::from_json`] or [`Builder`] (configurations under paths, merged by
//! `build`) -> `Arc<Ruleset>` -> [`Ruleset::context`] per request -> [`Context::run`] with a
//! map of addresses and a time budget -> [`EvalResult`] with libddwaf-format events.
//! Why a reimplementation rather than a binding: no C toolchain or vendored binary in the
//! build, memory safety on hostile input, and one place to tune speed (see docs/adr/0002-waf-*).

mod config;
mod context;
mod detect;
mod event;
mod matcher;
mod obfuscator;
mod prefilter;
mod processors;
mod ruleset;
mod transform;

pub use config::{Diagnostics, ENGINE_VERSION, LoadError, SectionDiagnostics};
pub use context::{Context, EvalError, Subcontext};
pub use event::{
    Action, ArgumentMatch, EvalResult, Event, MatchParameter, Parameter, RuleMatch, RuleRef,
};
pub use ruleset::{Builder, Ruleset, SharedRuleset};

/// The input/output value type (re-exported so callers need no direct `serde_json` dependency).
pub use serde_json::Value;

/// Warden's own default ruleset (`rules/warden-default.json`, built from `rules/src/`), used
/// when no ruleset is configured. Written for Warden, not derived from other rulesets; see
/// docs/detection.md and docs/adr/0007-default-ruleset.md.
pub const DEFAULT_RULESET_JSON: &str = include_str!("../../../rules/warden-default.json");
