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

/// The overlay that turns [`DEFAULT_RULESET_JSON`] (or any ruleset tagged the same way) into
/// the `paranoid` profile: it enables the rules tagged `profile: paranoid` and makes every
/// `attack_attempt` rule monitor-only. Add it to a [`Builder`] under its own path, after the
/// base ruleset.
pub const PARANOID_PROFILE_JSON: &str = include_str!("../../../rules/warden-paranoid.json");

/// Profiles of Warden's default ruleset (docs/detection.md).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Profile {
    /// Blocks on high-confidence rules only; medium and low confidence rules monitor.
    #[default]
    Default,
    /// Adds the `profile: paranoid` rules and only monitors.
    Paranoid,
}

impl Profile {
    /// `"default"` or `"paranoid"`.
    pub fn parse(name: &str) -> Option<Self> {
        match name {
            "default" => Some(Profile::Default),
            "paranoid" => Some(Profile::Paranoid),
            _ => None,
        }
    }

    /// The configuration to add on top of the base ruleset, if any.
    pub fn overlay_json(self) -> Option<&'static str> {
        match self {
            Profile::Default => None,
            Profile::Paranoid => Some(PARANOID_PROFILE_JSON),
        }
    }
}
