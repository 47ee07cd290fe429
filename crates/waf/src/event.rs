//! Evaluation results in libddwaf's event format (serde JSON).

use std::collections::BTreeMap;

use serde::Serialize;
use serde_json::{Map, Value};

/// The rule that produced an event.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct RuleRef {
    pub id: String,
    pub name: String,
    pub on_match: Vec<String>,
    pub tags: BTreeMap<String, String>,
}

/// One matched value of a scalar condition.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct MatchParameter {
    pub address: String,
    pub key_path: Vec<Value>,
    pub value: String,
    pub highlight: Vec<String>,
}

/// One argument of a structured (RASP) condition match.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ArgumentMatch {
    pub address: String,
    pub key_path: Vec<Value>,
    pub value: String,
}

/// A parameter entry: scalar conditions give one [`MatchParameter`]; structured detectors give
/// one object per argument name (`resource`, `params`, `db_type`) plus the highlight.
#[derive(Debug, Clone, Serialize, PartialEq)]
#[serde(untagged)]
pub enum Parameter {
    Scalar(MatchParameter),
    Structured {
        #[serde(flatten)]
        args: BTreeMap<String, ArgumentMatch>,
        highlight: Vec<String>,
    },
}

/// One entry per condition of the rule.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct RuleMatch {
    pub operator: String,
    pub operator_value: String,
    pub parameters: Vec<Parameter>,
}

/// An event: a rule whose conditions all matched.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Event {
    pub rule: RuleRef,
    pub rule_matches: Vec<RuleMatch>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stack_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub security_response_id: Option<String>,
}

/// An action requested by matched rules (`block_request`, `redirect_request`,
/// `generate_stack`, `generate_schema`, `monitor`, or a custom type).
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Action {
    #[serde(rename = "type")]
    pub kind: String,
    pub parameters: Map<String, Value>,
}

/// Result of one [`crate::Context::run`] call.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct EvalResult {
    pub events: Vec<Event>,
    pub actions: Vec<Action>,
    pub timeout: bool,
    pub keep: bool,
    pub duration_ns: u64,
    /// Attributes produced by processors and rule outputs (libddwaf `attributes`).
    pub derivatives: Map<String, Value>,
}

impl EvalResult {
    /// True when at least one event was produced (how "flagged" is defined).
    pub fn is_match(&self) -> bool {
        !self.events.is_empty()
    }

    /// Actions in libddwaf's shape: `{ <type>: {parameters} }`.
    pub fn actions_map(&self) -> Map<String, Value> {
        self.actions
            .iter()
            .map(|a| (a.kind.clone(), Value::Object(a.parameters.clone())))
            .collect()
    }

    /// The result as libddwaf would serialise it.
    pub fn to_libddwaf_json(&self) -> Value {
        serde_json::json!({
            "events": self.events,
            "actions": self.actions_map(),
            "attributes": self.derivatives,
            "duration": self.duration_ns,
            "timeout": self.timeout,
            "keep": self.keep,
        })
    }
}
