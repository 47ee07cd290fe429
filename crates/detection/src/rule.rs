//! Detection rules in Datadog's `/api/v2/security_monitoring/rules` shape.
//!
//! Why keep unknown fields (`extra`): clients send fields Warden does not evaluate
//! (`filters`, `groupSignalsBy`, `referenceTables`, `hasExtendedTitle`...) and read them back;
//! dropping them would make a `GET` after a `PUT` differ from what was written. Fields that
//! change detection and that Warden cannot evaluate are refused instead, naming the field.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::search::Query;

/// Severity of a case and of a signal (`SecurityMonitoringRuleSeverity`), ordered.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Info,
    Low,
    Medium,
    High,
    Critical,
}

impl Severity {
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Info => "info",
            Severity::Low => "low",
            Severity::Medium => "medium",
            Severity::High => "high",
            Severity::Critical => "critical",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RuleType {
    ApplicationSecurity,
    LogDetection,
}

impl RuleType {
    pub fn as_str(self) -> &'static str {
        match self {
            RuleType::ApplicationSecurity => "application_security",
            RuleType::LogDetection => "log_detection",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Aggregation {
    Count,
    Cardinality,
    Sum,
    Max,
    NewValue,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DetectionMethod {
    Threshold,
    NewValue,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RuleQuery {
    pub query: String,
    #[serde(default)]
    pub group_by_fields: Vec<String>,
    #[serde(default)]
    pub distinct_fields: Vec<String>,
    #[serde(default = "default_aggregation")]
    pub aggregation: Aggregation,
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub has_optional_group_by_fields: bool,
    /// The field for `sum`, `max` and `new_value` (deprecated single form).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metric: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub metrics: Vec<String>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

fn default_aggregation() -> Aggregation {
    Aggregation::Count
}

impl RuleQuery {
    /// The field `sum`/`max`/`new_value` read.
    pub fn metric_field(&self) -> Option<&str> {
        self.metrics
            .first()
            .map(String::as_str)
            .or(self.metric.as_deref())
            .filter(|m| !m.is_empty())
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ActionOptions {
    /// Seconds; 0 = no expiry.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration: Option<i64>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RuleAction {
    /// `block_ip`, `block_user` (run); `user_behavior`, `flag_ip` (kept, not run).
    #[serde(rename = "type")]
    pub action_type: String,
    #[serde(default = "empty_options")]
    pub options: ActionOptions,
}

fn empty_options() -> ActionOptions {
    ActionOptions {
        duration: None,
        extra: Map::new(),
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RuleCase {
    #[serde(default)]
    pub name: String,
    pub status: Severity,
    #[serde(default)]
    pub condition: String,
    #[serde(default)]
    pub notifications: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub actions: Vec<RuleAction>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NewValueOptions {
    /// Days after which a learned value is forgotten.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub forget_after: Option<i64>,
    /// Days of learning (no signals) from the rule's creation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub learning_duration: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub learning_method: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub learning_threshold: Option<i64>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RuleOptions {
    /// Seconds.
    #[serde(default = "d900")]
    pub evaluation_window: i64,
    /// Seconds.
    #[serde(default = "d3600")]
    pub keep_alive: i64,
    /// Seconds.
    #[serde(default = "d86400")]
    pub max_signal_duration: i64,
    #[serde(default = "default_method")]
    pub detection_method: DetectionMethod,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub new_value_options: Option<NewValueOptions>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

fn d900() -> i64 {
    900
}
fn d3600() -> i64 {
    3600
}
fn d86400() -> i64 {
    86_400
}
fn default_method() -> DetectionMethod {
    DetectionMethod::Threshold
}
fn yes() -> bool {
    true
}
fn default_type() -> RuleType {
    RuleType::LogDetection
}

impl Default for RuleOptions {
    fn default() -> Self {
        RuleOptions {
            evaluation_window: 900,
            keep_alive: 3600,
            max_signal_duration: 86_400,
            detection_method: DetectionMethod::Threshold,
            new_value_options: None,
            extra: Map::new(),
        }
    }
}

/// One detection rule. Serializes to the Datadog rule response (not wrapped in `data`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Rule {
    #[serde(default)]
    pub id: String,
    pub name: String,
    #[serde(default = "yes")]
    pub is_enabled: bool,
    #[serde(rename = "type", default = "default_type")]
    pub rule_type: RuleType,
    pub queries: Vec<RuleQuery>,
    pub cases: Vec<RuleCase>,
    #[serde(default)]
    pub options: RuleOptions,
    #[serde(default)]
    pub message: String,
    #[serde(default)]
    pub tags: Vec<String>,
    #[serde(default)]
    pub is_default: bool,
    #[serde(default)]
    pub version: i64,
    #[serde(default)]
    pub created_at: i64,
    #[serde(default)]
    pub updated_at: i64,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// Why a rule was refused; `field` is the JSON path of the culprit.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct RuleError {
    pub field: String,
    pub message: String,
}

fn rerr(field: impl Into<String>, message: impl Into<String>) -> RuleError {
    RuleError {
        field: field.into(),
        message: message.into(),
    }
}

/// Values Datadog allows for `evaluationWindow`, `keepAlive` and `maxSignalDuration`.
pub const WINDOW_VALUES: [i64; 12] = [
    0, 60, 300, 600, 900, 1800, 3600, 7200, 10800, 21600, 43200, 86400,
];

/// Read-only fields a client may echo back in a create/update body; ignored.
const READ_ONLY: [&str; 12] = [
    "isDeleted",
    "isBeta",
    "isPartner",
    "isDeprecated",
    "creationAuthorId",
    "updateAuthorId",
    "defaultTags",
    "compatibleVersion",
    "customMessage",
    "customName",
    "deprecationDate",
    "hasOptionalGroupByFields",
];

impl Rule {
    /// Parses a create/update body, fills Datadog's defaults and validates it.
    pub fn from_json(body: &Value) -> Result<Rule, RuleError> {
        let obj = body
            .as_object()
            .ok_or_else(|| rerr("body", "expected a JSON object"))?;
        for req in ["name", "queries", "cases"] {
            if !obj.contains_key(req) {
                return Err(rerr(req, "required"));
            }
        }
        for (k, t) in [("type", "a string"), ("name", "a string")] {
            if obj.get(k).is_some_and(|v| !v.is_string()) {
                return Err(rerr(k, format!("expected {t}")));
            }
        }
        if let Some(t) = obj.get("type").and_then(Value::as_str) {
            if t != "application_security" && t != "log_detection" {
                return Err(rerr(
                    "type",
                    format!(
                        "unsupported rule type {t:?}: Warden evaluates application_security and log_detection"
                    ),
                ));
            }
        }
        let mut rule: Rule = serde_json::from_value(body.clone())
            .map_err(|e| rerr("body", format!("invalid rule: {e}")))?;
        for k in READ_ONLY {
            rule.extra.remove(k);
        }
        rule.normalize();
        rule.validate()?;
        Ok(rule)
    }

    /// Fills defaults the server returns (query names stay as given; see [`Rule::query_name`]).
    pub fn normalize(&mut self) {
        if self.options.detection_method == DetectionMethod::Threshold
            && self
                .queries
                .iter()
                .any(|q| q.aggregation == Aggregation::NewValue)
        {
            self.options.detection_method = DetectionMethod::NewValue;
        }
    }

    /// The name a case condition uses for query `i`: its `name`, else `a`, `b`, ...
    pub fn query_name(&self, i: usize) -> String {
        match self.queries.get(i) {
            Some(q) if !q.name.is_empty() => q.name.clone(),
            _ => default_query_name(i),
        }
    }

    /// Checks everything detection depends on; the first problem is returned.
    pub fn validate(&self) -> Result<(), RuleError> {
        if self.name.trim().is_empty() {
            return Err(rerr("name", "must not be empty"));
        }
        if self.queries.is_empty() {
            return Err(rerr("queries", "at least one query is required"));
        }
        if self.cases.is_empty() {
            return Err(rerr("cases", "at least one case is required"));
        }
        if self.queries.len() > 10 {
            return Err(rerr("queries", "at most 10 queries"));
        }
        for (k, v) in [
            ("options.evaluationWindow", self.options.evaluation_window),
            ("options.keepAlive", self.options.keep_alive),
            (
                "options.maxSignalDuration",
                self.options.max_signal_duration,
            ),
        ] {
            if !WINDOW_VALUES.contains(&v) {
                return Err(rerr(
                    k,
                    format!("{v} is not one of {WINDOW_VALUES:?} (seconds)"),
                ));
            }
        }
        let first_groups = &self.queries[0].group_by_fields;
        let mut names = Vec::new();
        for (i, q) in self.queries.iter().enumerate() {
            let at = format!("queries[{i}]");
            Query::parse(&q.query).map_err(|e| rerr(format!("{at}.query"), e.to_string()))?;
            match q.aggregation {
                Aggregation::Cardinality if q.distinct_fields.is_empty() => {
                    return Err(rerr(
                        format!("{at}.distinctFields"),
                        "cardinality needs a distinct field",
                    ));
                }
                Aggregation::Sum | Aggregation::Max | Aggregation::NewValue
                    if q.metric_field().is_none() =>
                {
                    return Err(rerr(
                        format!("{at}.metrics"),
                        "sum, max and new_value need the field to read in metrics",
                    ));
                }
                _ => {}
            }
            if (q.aggregation == Aggregation::NewValue)
                != (self.options.detection_method == DetectionMethod::NewValue)
            {
                return Err(rerr(
                    format!("{at}.aggregation"),
                    "new_value aggregation goes with detectionMethod new_value (and only with it)",
                ));
            }
            if &q.group_by_fields != first_groups {
                return Err(rerr(
                    format!("{at}.groupByFields"),
                    "all queries of a rule must group by the same fields",
                ));
            }
            let n = self.query_name(i);
            if names.contains(&n) {
                return Err(rerr(
                    format!("{at}.name"),
                    format!("duplicate query name {n:?}"),
                ));
            }
            names.push(n);
        }
        for (i, c) in self.cases.iter().enumerate() {
            let at = format!("cases[{i}]");
            if !c.condition.trim().is_empty() {
                let cond = Condition::parse(&c.condition)
                    .map_err(|e| rerr(format!("{at}.condition"), e))?;
                for v in cond.vars() {
                    if !names.contains(&v) {
                        return Err(rerr(
                            format!("{at}.condition"),
                            format!("unknown query name {v:?} (queries are {names:?})"),
                        ));
                    }
                }
            } else if self.options.detection_method == DetectionMethod::Threshold {
                return Err(rerr(
                    format!("{at}.condition"),
                    "a threshold case needs a condition such as \"a > 0\"",
                ));
            }
            for (j, a) in c.actions.iter().enumerate() {
                let aat = format!("{at}.actions[{j}]");
                match a.action_type.as_str() {
                    "block_ip" | "block_user" => {
                        if a.options.duration.is_some_and(|d| d < 0) {
                            return Err(rerr(format!("{aat}.options.duration"), "must be >= 0"));
                        }
                    }
                    "user_behavior" | "flag_ip" => {}
                    other => {
                        return Err(rerr(
                            format!("{aat}.type"),
                            format!(
                                "unknown action {other:?} (block_ip, block_user, user_behavior, flag_ip)"
                            ),
                        ));
                    }
                }
            }
        }
        if let Some(nv) = &self.options.new_value_options {
            if let Some(f) = nv.forget_after {
                if ![1, 2, 7, 14, 21, 28].contains(&f) {
                    return Err(rerr(
                        "options.newValueOptions.forgetAfter",
                        "one of 1, 2, 7, 14, 21, 28 (days)",
                    ));
                }
            }
            if let Some(l) = nv.learning_duration {
                if ![0, 1, 7].contains(&l) {
                    return Err(rerr(
                        "options.newValueOptions.learningDuration",
                        "one of 0, 1, 7 (days)",
                    ));
                }
            }
        }
        Ok(())
    }

    /// The rule as the API returns it: Datadog's read-side defaults included.
    pub fn to_response(&self) -> Value {
        let mut v = serde_json::to_value(self).unwrap_or(Value::Null);
        if let Some(o) = v.as_object_mut() {
            o.insert("isDeleted".into(), Value::Bool(false));
            o.insert("isBeta".into(), Value::Bool(false));
            o.insert("isPartner".into(), Value::Bool(false));
            o.insert("isDeprecated".into(), Value::Bool(false));
            o.entry("hasExtendedTitle").or_insert(Value::Bool(false));
            o.entry("filters").or_insert(Value::Array(vec![]));
        }
        v
    }

    /// True when the detection logic (not just name/message/tags) differs.
    pub fn same_logic(&self, other: &Rule) -> bool {
        self.queries == other.queries
            && self.options == other.options
            && self.cases == other.cases
            && self.rule_type == other.rule_type
    }
}

/// `a`, `b`, ... `z`, `q26`...
pub fn default_query_name(i: usize) -> String {
    if i < 26 {
        ((b'a' + i as u8) as char).to_string()
    } else {
        format!("q{i}")
    }
}

// ------------------------------------------------------------- conditions

/// A case condition: comparisons of query values joined by `&&` / `||` (also `and`/`or`),
/// with `!` and parentheses, e.g. `a > 10 && b > 0`.
#[derive(Clone, Debug, PartialEq)]
pub enum Condition {
    Or(Vec<Condition>),
    And(Vec<Condition>),
    Not(Box<Condition>),
    Cmp(Operand, CondOp, Operand),
    /// A bare operand: true when non-zero.
    Truthy(Operand),
}

#[derive(Clone, Debug, PartialEq)]
pub enum Operand {
    Var(String),
    Num(f64),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CondOp {
    Gt,
    Ge,
    Lt,
    Le,
    Eq,
    Ne,
}

#[derive(Clone, Debug, PartialEq)]
enum CTok {
    Num(f64),
    Var(String),
    Op(CondOp),
    And,
    Or,
    Not,
    LParen,
    RParen,
}

fn clex(s: &str) -> Result<Vec<(CTok, usize)>, String> {
    let b = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        let two = b.get(i..i + 2);
        match c {
            b' ' | b'\t' | b'\n' | b'\r' => {
                i += 1;
                continue;
            }
            b'(' => out.push((CTok::LParen, i)),
            b')' => out.push((CTok::RParen, i)),
            _ if two == Some(b"&&") => {
                out.push((CTok::And, i));
                i += 1;
            }
            _ if two == Some(b"||") => {
                out.push((CTok::Or, i));
                i += 1;
            }
            _ if two == Some(b">=") => {
                out.push((CTok::Op(CondOp::Ge), i));
                i += 1;
            }
            _ if two == Some(b"<=") => {
                out.push((CTok::Op(CondOp::Le), i));
                i += 1;
            }
            _ if two == Some(b"==") => {
                out.push((CTok::Op(CondOp::Eq), i));
                i += 1;
            }
            _ if two == Some(b"!=") => {
                out.push((CTok::Op(CondOp::Ne), i));
                i += 1;
            }
            b'>' => out.push((CTok::Op(CondOp::Gt), i)),
            b'<' => out.push((CTok::Op(CondOp::Lt), i)),
            b'=' => out.push((CTok::Op(CondOp::Eq), i)),
            b'!' => out.push((CTok::Not, i)),
            b'0'..=b'9' | b'.' => {
                let start = i;
                while i < b.len() && (b[i].is_ascii_digit() || b[i] == b'.') {
                    i += 1;
                }
                let n: f64 = s[start..i]
                    .parse()
                    .map_err(|_| format!("bad number at position {start}"))?;
                out.push((CTok::Num(n), start));
                continue;
            }
            c if c.is_ascii_alphabetic() || c == b'_' => {
                let start = i;
                while i < b.len() && (b[i].is_ascii_alphanumeric() || b[i] == b'_') {
                    i += 1;
                }
                let w = &s[start..i];
                out.push((
                    match w {
                        "and" | "AND" => CTok::And,
                        "or" | "OR" => CTok::Or,
                        "not" | "NOT" => CTok::Not,
                        _ => CTok::Var(w.to_string()),
                    },
                    start,
                ));
                continue;
            }
            _ => {
                return Err(format!(
                    "unexpected character {:?} at position {i}",
                    s[i..].chars().next().unwrap_or('?')
                ));
            }
        }
        i += 1;
    }
    Ok(out)
}

struct CParser {
    toks: Vec<(CTok, usize)>,
    i: usize,
    end: usize,
    depth: usize,
}

impl CParser {
    fn pos(&self) -> usize {
        self.toks.get(self.i).map(|t| t.1).unwrap_or(self.end)
    }
    fn peek(&self) -> Option<&CTok> {
        self.toks.get(self.i).map(|t| &t.0)
    }
    fn or(&mut self) -> Result<Condition, String> {
        let mut v = vec![self.and()?];
        while self.peek() == Some(&CTok::Or) {
            self.i += 1;
            v.push(self.and()?);
        }
        Ok(if v.len() == 1 {
            v.remove(0)
        } else {
            Condition::Or(v)
        })
    }
    fn and(&mut self) -> Result<Condition, String> {
        let mut v = vec![self.unary()?];
        while self.peek() == Some(&CTok::And) {
            self.i += 1;
            v.push(self.unary()?);
        }
        Ok(if v.len() == 1 {
            v.remove(0)
        } else {
            Condition::And(v)
        })
    }
    fn unary(&mut self) -> Result<Condition, String> {
        self.depth += 1;
        if self.depth > 64 {
            return Err(format!("nesting too deep at position {}", self.pos()));
        }
        let r = match self.peek().cloned() {
            Some(CTok::Not) => {
                self.i += 1;
                Ok(Condition::Not(Box::new(self.unary()?)))
            }
            Some(CTok::LParen) => {
                let open = self.pos();
                self.i += 1;
                let e = self.or()?;
                if self.peek() != Some(&CTok::RParen) {
                    return Err(format!("unbalanced '(' at position {open}"));
                }
                self.i += 1;
                Ok(e)
            }
            _ => {
                let l = self.operand()?;
                match self.peek().cloned() {
                    Some(CTok::Op(op)) => {
                        self.i += 1;
                        let r = self.operand()?;
                        Ok(Condition::Cmp(l, op, r))
                    }
                    _ => Ok(Condition::Truthy(l)),
                }
            }
        };
        self.depth -= 1;
        r
    }
    fn operand(&mut self) -> Result<Operand, String> {
        let pos = self.pos();
        match self.peek().cloned() {
            Some(CTok::Num(n)) => {
                self.i += 1;
                Ok(Operand::Num(n))
            }
            Some(CTok::Var(v)) => {
                self.i += 1;
                Ok(Operand::Var(v))
            }
            _ => Err(format!(
                "expected a query name or a number at position {pos}"
            )),
        }
    }
}

impl Condition {
    /// Parses a case condition; the error names the position.
    pub fn parse(s: &str) -> Result<Condition, String> {
        let toks = clex(s)?;
        if toks.is_empty() {
            return Err("empty condition".into());
        }
        let mut p = CParser {
            toks,
            i: 0,
            end: s.len(),
            depth: 0,
        };
        let c = p.or()?;
        if p.i < p.toks.len() {
            return Err(format!("unexpected token at position {}", p.pos()));
        }
        Ok(c)
    }

    /// Query names used.
    pub fn vars(&self) -> Vec<String> {
        let mut out = Vec::new();
        self.collect(&mut out);
        out
    }

    fn collect(&self, out: &mut Vec<String>) {
        let mut push = |o: &Operand| {
            if let Operand::Var(v) = o {
                if !out.contains(v) {
                    out.push(v.clone());
                }
            }
        };
        match self {
            Condition::Or(v) | Condition::And(v) => {
                for c in v {
                    c.collect(out)
                }
            }
            Condition::Not(c) => c.collect(out),
            Condition::Cmp(a, _, b) => {
                push(a);
                push(b);
            }
            Condition::Truthy(a) => push(a),
        }
    }

    /// Evaluates with `value(name)` for each query name.
    pub fn eval(&self, value: &dyn Fn(&str) -> f64) -> bool {
        let get = |o: &Operand| match o {
            Operand::Num(n) => *n,
            Operand::Var(v) => value(v),
        };
        match self {
            Condition::Or(v) => v.iter().any(|c| c.eval(value)),
            Condition::And(v) => v.iter().all(|c| c.eval(value)),
            Condition::Not(c) => !c.eval(value),
            Condition::Truthy(o) => get(o) != 0.0,
            Condition::Cmp(a, op, b) => {
                let (a, b) = (get(a), get(b));
                match op {
                    CondOp::Gt => a > b,
                    CondOp::Ge => a >= b,
                    CondOp::Lt => a < b,
                    CondOp::Le => a <= b,
                    CondOp::Eq => a == b,
                    CondOp::Ne => a != b,
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn datadog_create_body_round_trips_with_defaults() {
        let body = json!({"cases":[{"condition":"a > 0","name":"","notifications":[],"status":"info"}],"filters":[],"isEnabled":true,"message":"Test rule",
            "name":"Test","options":{"evaluationWindow":900,"keepAlive":3600,"maxSignalDuration":86400},
            "queries":[{"aggregation":"count","distinctFields":[],"groupByFields":[],"metric":"","query":"@test:true"}],"tags":[],"type":"log_detection"});
        let r = Rule::from_json(&body).unwrap();
        let v = r.to_response();
        assert_eq!(v["options"]["detectionMethod"], "threshold");
        assert_eq!(v["queries"][0]["hasOptionalGroupByFields"], false);
        assert_eq!(v["queries"][0]["name"], "");
        assert_eq!(v["filters"], json!([]));
        assert_eq!(v["type"], "log_detection");
        assert_eq!(r.query_name(0), "a");
    }

    #[test]
    fn appsec_rule_with_actions_from_the_feature_file() {
        let body = json!({"type":"application_security","name":"x_appsec_rule",
         "queries":[{"query":"@appsec.security_activity:business_logic.users.login.failure","aggregation":"count","groupByFields":["service","@http.client_ip"],"distinctFields":[]}],
         "filters":[],
         "cases":[{"name":"","status":"info","notifications":[],"condition":"a > 100000",
           "actions":[{"type":"block_ip","options":{"duration":900}},{"type":"user_behavior","options":{"userBehaviorName":"behavior"}},{"type":"flag_ip","options":{"flaggedIPType":"FLAGGED"}}]}],
         "options":{"keepAlive":3600,"maxSignalDuration":86400,"evaluationWindow":900,"detectionMethod":"threshold"},
         "isEnabled":true,"message":"Test rule","tags":[],"groupSignalsBy":["service"]});
        let r = Rule::from_json(&body).unwrap();
        assert_eq!(r.cases[0].actions[0].options.duration, Some(900));
        let v = r.to_response();
        assert_eq!(v["groupSignalsBy"], json!(["service"]));
        assert_eq!(
            v["cases"][0]["actions"][2]["options"]["flaggedIPType"],
            "FLAGGED"
        );
    }

    #[test]
    fn refusals_name_the_field() {
        let base = json!({"name":"n","queries":[{"query":"a:b"}],"cases":[{"status":"high","condition":"a > 1"}]});
        assert!(Rule::from_json(&base).is_ok());
        let mut b = base.clone();
        b["options"] = json!({"evaluationWindow": 7});
        assert_eq!(
            Rule::from_json(&b).unwrap_err().field,
            "options.evaluationWindow"
        );
        let mut b = base.clone();
        b["cases"][0]["condition"] = json!("z > 1");
        assert_eq!(Rule::from_json(&b).unwrap_err().field, "cases[0].condition");
        let mut b = base.clone();
        b["queries"][0]["query"] = json!("(a:b");
        let e = Rule::from_json(&b).unwrap_err();
        assert_eq!(e.field, "queries[0].query");
        assert!(e.message.contains("position 0"), "{e}");
        let mut b = base.clone();
        b["cases"][0]["status"] = json!("urgent");
        assert_eq!(Rule::from_json(&b).unwrap_err().field, "body");
        let mut b = base.clone();
        b["type"] = json!("workload_security");
        assert_eq!(Rule::from_json(&b).unwrap_err().field, "type");
        let mut b = base;
        b.as_object_mut().unwrap().remove("cases");
        assert_eq!(Rule::from_json(&b).unwrap_err().field, "cases");
    }

    #[test]
    fn conditions() {
        let c = Condition::parse("a > 10 && (b >= 1 || !c)").unwrap();
        let vals = |a: f64, b: f64, c: f64| {
            move |n: &str| match n {
                "a" => a,
                "b" => b,
                _ => c,
            }
        };
        assert!(c.eval(&vals(11.0, 1.0, 1.0)));
        assert!(c.eval(&vals(11.0, 0.0, 0.0)));
        assert!(!c.eval(&vals(11.0, 0.0, 1.0)));
        assert!(!c.eval(&vals(10.0, 5.0, 0.0)));
        assert_eq!(c.vars(), vec!["a", "b", "c"]);
        assert!(Condition::parse("a >").unwrap_err().contains("position 3"));
        assert!(
            Condition::parse("(a > 1")
                .unwrap_err()
                .contains("position 0")
        );
        assert!(Condition::parse("a > 1 b").is_err());
        assert!(Condition::parse("a # 1").is_err());
    }
}
