//! Ruleset parsing (format 2.x) into per-configuration specs, with per-item diagnostics.
//!
//! A bad item is reported (`failed` with its reason, or `skipped` by version gate) and the rest
//! of the configuration still loads, like libddwaf. Address names are kept as strings here; the
//! builder interns them into indexes when it merges configurations into a [`crate::Ruleset`].

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::Serialize;
use serde_json::{Map, Value};

use crate::detect::DetectorSpec;
use crate::matcher::{DataEntries, Matcher};
use crate::transform::{self, Source, Transformer};

/// Engine version used for `min_version`/`max_version` gates (libddwaf compatibility level).
pub const ENGINE_VERSION: (u32, u32, u32) = (2, 1, 0);

#[derive(Debug, Clone)]
pub(crate) struct ConfigError(pub(crate) String);

impl ConfigError {
    pub(crate) fn new(s: impl Into<String>) -> Self {
        ConfigError(s.into())
    }
}

/// Why an item did not load.
enum ItemError {
    Failed(String),
    Skipped,
}

impl From<ConfigError> for ItemError {
    fn from(e: ConfigError) -> Self {
        ItemError::Failed(e.0)
    }
}

/// Per-section load report: which item ids loaded, failed (with the reason) or were skipped.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct SectionDiagnostics {
    pub loaded: Vec<String>,
    pub failed: Vec<String>,
    pub skipped: Vec<String>,
    /// error message -> ids that failed with it
    pub errors: BTreeMap<String, Vec<String>>,
    /// Section-level error (e.g. the section is not an array).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl SectionDiagnostics {
    fn fail(&mut self, id: String, reason: String) {
        self.errors.entry(reason).or_default().push(id.clone());
        self.failed.push(id);
    }
}

/// Load report of one configuration, keyed by section name (`rules`, `custom_rules`, ...).
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct Diagnostics {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ruleset_version: Option<String>,
    #[serde(flatten)]
    pub sections: BTreeMap<String, SectionDiagnostics>,
}

impl Diagnostics {
    /// Diagnostics of one section, if the configuration had it.
    pub fn section(&self, name: &str) -> Option<&SectionDiagnostics> {
        self.sections.get(name)
    }

    /// Total items loaded across all sections.
    pub fn total_loaded(&self) -> usize {
        self.sections.values().map(|s| s.loaded.len()).sum()
    }
}

// ---------------------------------------------------------------- specs

#[derive(Debug, Clone, PartialEq)]
pub(crate) enum KeyElem {
    Key(String),
    Index(i64),
    Glob,
}

#[derive(Debug, Clone)]
pub(crate) struct Target {
    pub(crate) name: Arc<str>,
    pub(crate) addr: usize,
    pub(crate) key_path: Vec<KeyElem>,
    pub(crate) transformers: Vec<Transformer>,
    pub(crate) source: Source,
    /// Set on rule targets of prefilterable regexes when the ruleset is built.
    pub(crate) prefilter: Option<crate::prefilter::TargetPrefilter>,
}

#[derive(Debug, Clone)]
pub(crate) enum MatcherRef {
    Static(Arc<Matcher>),
    /// `"data": "<id>"`: resolved from `rules_data`/`exclusion_data` at build time.
    Data {
        id: String,
        op: &'static str,
    },
}

#[derive(Debug, Clone)]
pub(crate) enum Condition {
    Scalar {
        matcher: MatcherRef,
        targets: Vec<Target>,
        negated: bool,
    },
    Exists {
        targets: Vec<Target>,
        negated: bool,
    },
    Detector(Arc<DetectorSpec>, Vec<(String, Vec<Target>)>),
}

impl Condition {
    pub(crate) fn targets_mut(&mut self) -> Box<dyn Iterator<Item = &mut Target> + '_> {
        match self {
            Condition::Scalar { targets, .. } | Condition::Exists { targets, .. } => {
                Box::new(targets.iter_mut())
            }
            Condition::Detector(_, args) => {
                Box::new(args.iter_mut().flat_map(|(_, t)| t.iter_mut()))
            }
        }
    }
    /// Number of targets (the width of this condition's slice of per-target generations);
    /// counted without boxing an iterator, as it is read for every condition of every rule.
    pub(crate) fn n_targets(&self) -> usize {
        match self {
            Condition::Scalar { targets, .. } | Condition::Exists { targets, .. } => targets.len(),
            Condition::Detector(_, args) => args.iter().map(|(_, t)| t.len()).sum(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum RuleSource {
    Base = 0,
    User = 1,
}

#[derive(Debug, Clone)]
pub(crate) enum AttrSrc {
    Value(Value),
    Address { target: Target },
}

#[derive(Debug, Clone)]
pub(crate) struct RuleSpec {
    pub(crate) id: String,
    pub(crate) name: String,
    pub(crate) tags: BTreeMap<String, String>,
    pub(crate) conditions: Vec<Condition>,
    pub(crate) on_match: Vec<String>,
    pub(crate) enabled: bool,
    pub(crate) source: RuleSource,
    pub(crate) event: bool,
    pub(crate) keep: bool,
    pub(crate) attributes: Vec<(String, AttrSrc)>,
}

#[derive(Debug, Clone)]
pub(crate) enum RuleSelector {
    Id(String),
    Tags(BTreeMap<String, String>),
}

impl RuleSelector {
    pub(crate) fn selects(&self, r: &RuleSpec) -> bool {
        match self {
            RuleSelector::Id(id) => &r.id == id,
            RuleSelector::Tags(t) => t.iter().all(|(k, v)| r.tags.get(k) == Some(v)),
        }
    }
}

#[derive(Debug, Clone)]
pub(crate) struct OverrideSpec {
    pub(crate) targets: Vec<RuleSelector>,
    pub(crate) enabled: Option<bool>,
    pub(crate) on_match: Option<Vec<String>>,
    pub(crate) tags: BTreeMap<String, String>,
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) enum FilterMode {
    Bypass,
    Monitor,
    Custom(String),
}

#[derive(Debug, Clone)]
pub(crate) struct FilterSpec {
    pub(crate) targets: Vec<RuleSelector>,
    pub(crate) conditions: Vec<Condition>,
    /// Input filter when `Some` (objects removed from inspection).
    pub(crate) inputs: Option<Vec<Target>>,
    pub(crate) mode: FilterMode,
}

#[derive(Debug, Clone)]
pub(crate) struct DataSpec {
    pub(crate) id: String,
    pub(crate) kind: String,
    pub(crate) entries: DataEntries,
}

#[derive(Debug, Clone)]
pub(crate) struct ActionSpec {
    pub(crate) id: String,
    pub(crate) kind: String,
    pub(crate) parameters: Map<String, Value>,
}

/// One processor mapping: named argument lists, output address name and its index.
pub(crate) type Mapping = (Vec<(String, Vec<Target>)>, Arc<str>, usize);

#[derive(Debug, Clone)]
pub(crate) struct ProcessorSpec {
    pub(crate) id: String,
    pub(crate) generator: String,
    pub(crate) conditions: Vec<Condition>,
    /// Each mapping: named argument lists + output address.
    pub(crate) mappings: Vec<Mapping>,
    pub(crate) evaluate: bool,
    pub(crate) output: bool,
    pub(crate) scanner_include: Vec<RuleSelector>,
    pub(crate) scanner_exclude: Vec<RuleSelector>,
}

/// `processor_overrides` item: extra scanner include/exclude selectors for target processors.
#[derive(Debug, Clone)]
pub(crate) struct ProcessorOverride {
    pub(crate) targets: Vec<String>,
    pub(crate) include: Vec<RuleSelector>,
    pub(crate) exclude: Vec<RuleSelector>,
}

#[derive(Debug, Clone)]
pub(crate) struct ScannerSpec {
    pub(crate) id: String,
    pub(crate) tags: BTreeMap<String, String>,
    pub(crate) key: Option<Arc<Matcher>>,
    pub(crate) value: Option<Arc<Matcher>>,
}

/// One parsed configuration (what is stored under a builder path).
#[derive(Debug, Clone, Default)]
pub(crate) struct ConfigSpec {
    pub(crate) base_rules: Vec<Arc<RuleSpec>>,
    pub(crate) user_rules: Vec<Arc<RuleSpec>>,
    pub(crate) rules_data: Vec<DataSpec>,
    pub(crate) exclusion_data: Vec<DataSpec>,
    pub(crate) overrides: Vec<OverrideSpec>,
    pub(crate) filters: Vec<Arc<FilterSpec>>,
    pub(crate) actions: Vec<ActionSpec>,
    pub(crate) processors: Vec<Arc<ProcessorSpec>>,
    pub(crate) scanners: Vec<Arc<ScannerSpec>>,
    pub(crate) processor_overrides: Vec<ProcessorOverride>,
    pub(crate) obfuscator: Option<(Option<String>, Option<String>)>,
}

// ---------------------------------------------------------------- helpers

fn parse_version(s: &str) -> Option<(u32, u32, u32)> {
    let mut it = s.trim().split('.');
    let a = it.next()?.parse().ok()?;
    let b = it.next().map_or(Some(0), |x| x.parse().ok())?;
    let c = it.next().map_or(Some(0), |x| x.parse().ok())?;
    Some((a, b, c))
}

fn version_gate(o: &Map<String, Value>) -> Result<(), ItemError> {
    if let Some(v) = o.get("min_version") {
        let v = v
            .as_str()
            .and_then(parse_version)
            .ok_or_else(|| ItemError::Failed("invalid min_version".into()))?;
        if ENGINE_VERSION < v {
            return Err(ItemError::Skipped);
        }
    }
    if let Some(v) = o.get("max_version") {
        let v = v
            .as_str()
            .and_then(parse_version)
            .ok_or_else(|| ItemError::Failed("invalid max_version".into()))?;
        if ENGINE_VERSION > v {
            return Err(ItemError::Skipped);
        }
    }
    Ok(())
}

fn get_str<'a>(o: &'a Map<String, Value>, k: &str) -> Result<&'a str, ConfigError> {
    match o.get(k) {
        Some(Value::String(s)) => Ok(s),
        Some(_) => Err(ConfigError::new(format!(
            "invalid type for '{k}', expected string"
        ))),
        None => Err(ConfigError::new(format!("missing key '{k}'"))),
    }
}

fn get_arr<'a>(o: &'a Map<String, Value>, k: &str) -> Result<&'a Vec<Value>, ConfigError> {
    match o.get(k) {
        Some(Value::Array(a)) => Ok(a),
        Some(_) => Err(ConfigError::new(format!(
            "invalid type for '{k}', expected array"
        ))),
        None => Err(ConfigError::new(format!("missing key '{k}'"))),
    }
}

fn as_obj(v: &Value) -> Result<&Map<String, Value>, ConfigError> {
    v.as_object()
        .ok_or_else(|| ConfigError::new("invalid type, expected map"))
}

fn str_list(v: Option<&Value>, what: &str) -> Result<Vec<String>, ConfigError> {
    match v {
        None => Ok(Vec::new()),
        Some(Value::Array(a)) => a
            .iter()
            .map(|x| {
                x.as_str()
                    .map(str::to_string)
                    .ok_or_else(|| ConfigError::new(format!("invalid item in '{what}'")))
            })
            .collect(),
        Some(_) => Err(ConfigError::new(format!("invalid type for '{what}'"))),
    }
}

fn str_map(v: Option<&Value>, what: &str) -> Result<BTreeMap<String, String>, ConfigError> {
    let mut out = BTreeMap::new();
    match v {
        None => {}
        Some(Value::Object(m)) => {
            for (k, v) in m {
                let s = v
                    .as_str()
                    .ok_or_else(|| ConfigError::new(format!("invalid value in '{what}.{k}'")))?;
                out.insert(k.clone(), s.to_string());
            }
        }
        Some(_) => return Err(ConfigError::new(format!("invalid type for '{what}'"))),
    }
    Ok(out)
}

fn parse_transformers(v: &Value) -> Result<(Vec<Transformer>, Source), ConfigError> {
    let arr = v
        .as_array()
        .ok_or_else(|| ConfigError::new("invalid transformers"))?;
    let mut out = Vec::new();
    let mut src = Source::Values;
    for t in arr {
        let name = t
            .as_str()
            .ok_or_else(|| ConfigError::new("invalid transformer"))?;
        match transform::parse(name) {
            Some(transform::Parsed::T(t)) => out.push(t),
            Some(transform::Parsed::S(s)) => src = s,
            None => return Err(ConfigError::new(format!("invalid transformer {name}"))),
        }
    }
    if out.len() > 10 {
        return Err(ConfigError::new("too many transformers"));
    }
    Ok((out, src))
}

pub(crate) fn parse_key_path(
    v: Option<&Value>,
    allow_glob: bool,
) -> Result<Vec<KeyElem>, ConfigError> {
    let mut out = Vec::new();
    if let Some(v) = v {
        let arr = v
            .as_array()
            .ok_or_else(|| ConfigError::new("invalid key_path"))?;
        for k in arr {
            match k {
                Value::String(s) if allow_glob && s == "*" => out.push(KeyElem::Glob),
                Value::String(s) => out.push(KeyElem::Key(s.clone())),
                Value::Number(n) => out.push(KeyElem::Index(
                    n.as_i64()
                        .ok_or_else(|| ConfigError::new("invalid key_path index"))?,
                )),
                _ => return Err(ConfigError::new("invalid key_path element")),
            }
        }
    }
    Ok(out)
}

pub(crate) fn target(name: &str) -> Target {
    Target {
        name: Arc::from(name),
        addr: usize::MAX,
        key_path: Vec::new(),
        transformers: Vec::new(),
        source: Source::Values,
        prefilter: None,
    }
}

fn parse_target(
    v: &Value,
    defaults: &(Vec<Transformer>, Source),
    allow_glob: bool,
) -> Result<Target, ConfigError> {
    let o = as_obj(v)?;
    let address = get_str(o, "address")?;
    if address.is_empty() {
        return Err(ConfigError::new("empty address"));
    }
    let mut t = target(address);
    t.key_path = parse_key_path(o.get("key_path"), allow_glob)?;
    if let Some(tr) = o.get("transformers") {
        let (tr, src) = parse_transformers(tr)?;
        t.transformers = tr;
        t.source = src;
    } else {
        t.transformers = defaults.0.clone();
        t.source = defaults.1;
    }
    Ok(t)
}

/// Versions of the structured/versioned operators this engine implements.
fn implemented_version(op: &str) -> u32 {
    match op {
        "lfi_detector" => 2,
        "ssrf_detector" => 3,
        "sqli_detector" => 3,
        "shi_detector" | "cmdi_detector" => 1,
        _ => 1,
    }
}

fn parse_condition(
    v: &Value,
    defaults: &(Vec<Transformer>, Source),
) -> Result<Condition, ItemError> {
    let o = as_obj(v)?;
    let op_full = get_str(o, "operator")?;
    let params = o
        .get("parameters")
        .and_then(Value::as_object)
        .ok_or_else(|| ConfigError::new("missing key 'parameters'"))?;
    let (negated, op_v) = match op_full.strip_prefix('!') {
        Some(rest) => (true, rest),
        None => (false, op_full),
    };
    let (op, version) = match op_v.split_once("@v") {
        Some((o, v)) => (
            o,
            v.parse::<u32>()
                .map_err(|_| ConfigError::new(format!("invalid operator version '{op_full}'")))?,
        ),
        None => (op_v, 1),
    };
    let known = matches!(
        op,
        "match_regex"
            | "match_regex_with_checksum"
            | "phrase_match"
            | "exact_match"
            | "ip_match"
            | "is_sqli"
            | "is_xss"
            | "warden_shell_injection"
            | "hidden_ascii_match"
            | "equals"
            | "greater_than"
            | "lower_than"
            | "exists"
            | "lfi_detector"
            | "ssrf_detector"
            | "sqli_detector"
            | "shi_detector"
            | "cmdi_detector"
    );
    if !known {
        // Unknown operators are a forward-compatibility matter when versioned.
        if op_v.contains("@v") {
            return Err(ItemError::Skipped);
        }
        return Err(ItemError::Failed(format!("unknown matcher: {op}")));
    }
    if version > implemented_version(op) {
        return Err(ItemError::Skipped);
    }
    if crate::detect::is_detector(op) {
        if negated {
            return Err(ItemError::Failed(format!("{op} cannot be negated")));
        }
        let spec = DetectorSpec::parse(op, params)?;
        let mut args = Vec::new();
        for name in spec.arg_names() {
            let mut ts = Vec::new();
            if let Some(a) = params.get(*name) {
                let a = a
                    .as_array()
                    .ok_or_else(|| ConfigError::new(format!("invalid argument '{name}'")))?;
                for t in a {
                    ts.push(parse_target(t, &(Vec::new(), Source::Values), false)?);
                }
            }
            if ts.is_empty() && spec.required(name) {
                return Err(ItemError::Failed(format!("missing argument '{name}'")));
            }
            args.push((name.to_string(), ts));
        }
        return Ok(Condition::Detector(Arc::new(spec), args));
    }
    let inputs = get_arr(params, "inputs")?;
    if inputs.is_empty() {
        return Err(ItemError::Failed("empty inputs".into()));
    }
    let mut targets = Vec::new();
    for i in inputs {
        targets.push(parse_target(i, defaults, false)?);
    }
    if negated && targets.len() != 1 {
        return Err(ItemError::Failed(format!(
            "{op_full} requires exactly one input"
        )));
    }
    if op == "exists" {
        return Ok(Condition::Exists { targets, negated });
    }
    let matcher = if let Some(d) = params.get("data") {
        let id = d
            .as_str()
            .ok_or_else(|| ConfigError::new("invalid 'data'"))?;
        let op: &'static str = match op {
            "exact_match" => "exact_match",
            "ip_match" => "ip_match",
            _ => return Err(ItemError::Failed(format!("{op} does not support data"))),
        };
        MatcherRef::Data {
            id: id.to_string(),
            op,
        }
    } else {
        MatcherRef::Static(Arc::new(Matcher::build(op, params)?))
    };
    Ok(Condition::Scalar {
        matcher,
        targets,
        negated,
    })
}

fn parse_conditions(
    v: Option<&Value>,
    defaults: &(Vec<Transformer>, Source),
    required: bool,
) -> Result<Vec<Condition>, ItemError> {
    let Some(v) = v else {
        if required {
            return Err(ItemError::Failed("missing key 'conditions'".into()));
        }
        return Ok(Vec::new());
    };
    let arr = v
        .as_array()
        .ok_or_else(|| ConfigError::new("invalid conditions"))?;
    if arr.is_empty() && required {
        return Err(ItemError::Failed("empty conditions".into()));
    }
    arr.iter().map(|c| parse_condition(c, defaults)).collect()
}

fn parse_rule(o: &Map<String, Value>, source: RuleSource) -> Result<RuleSpec, ItemError> {
    let id = get_str(o, "id")?.to_string();
    version_gate(o)?;
    let name = get_str(o, "name")?.to_string();
    let tags = str_map(o.get("tags"), "tags")?;
    if !tags.contains_key("type") {
        return Err(ItemError::Failed("missing key 'type'".into()));
    }
    let enabled = o.get("enabled").and_then(Value::as_bool).unwrap_or(true);
    let defaults = match o.get("transformers") {
        Some(t) => parse_transformers(t)?,
        None => (Vec::new(), Source::Values),
    };
    let conditions = parse_conditions(o.get("conditions"), &defaults, true)?;
    let on_match = str_list(o.get("on_match"), "on_match")?;
    let mut event = true;
    let mut keep = true;
    let mut attributes = Vec::new();
    if let Some(out) = o.get("output").and_then(Value::as_object) {
        event = out.get("event").and_then(Value::as_bool).unwrap_or(true);
        keep = out.get("keep").and_then(Value::as_bool).unwrap_or(true);
        if let Some(attrs) = out.get("attributes").and_then(Value::as_object) {
            for (k, a) in attrs {
                let a = as_obj(a)?;
                if let Some(v) = a.get("value") {
                    attributes.push((k.clone(), AttrSrc::Value(v.clone())));
                } else if a.contains_key("address") {
                    let t = parse_target(
                        &Value::Object(a.clone()),
                        &(Vec::new(), Source::Values),
                        false,
                    )?;
                    attributes.push((k.clone(), AttrSrc::Address { target: t }));
                } else {
                    return Err(ItemError::Failed(format!("invalid attribute '{k}'")));
                }
            }
        }
        if !event && attributes.is_empty() {
            return Err(ItemError::Failed(
                "rule has no event and no attributes".into(),
            ));
        }
    }
    Ok(RuleSpec {
        id,
        name,
        tags,
        conditions,
        on_match,
        enabled,
        source,
        event,
        keep,
        attributes,
    })
}

fn parse_selectors(v: Option<&Value>) -> Result<Vec<RuleSelector>, ConfigError> {
    let mut out = Vec::new();
    if let Some(v) = v {
        let arr = v
            .as_array()
            .ok_or_else(|| ConfigError::new("invalid rules_target"))?;
        for t in arr {
            let o = as_obj(t)?;
            if let Some(id) = o.get("rule_id").or_else(|| o.get("id")) {
                out.push(RuleSelector::Id(
                    id.as_str()
                        .ok_or_else(|| ConfigError::new("invalid rule_id"))?
                        .to_string(),
                ));
            } else if o.contains_key("tags") {
                out.push(RuleSelector::Tags(str_map(o.get("tags"), "tags")?));
            } else {
                return Err(ConfigError::new("empty rules_target"));
            }
        }
    }
    Ok(out)
}

fn parse_filter(o: &Map<String, Value>) -> Result<FilterSpec, ItemError> {
    get_str(o, "id")?;
    version_gate(o)?;
    let targets = parse_selectors(o.get("rules_target"))?;
    let conditions = parse_conditions(o.get("conditions"), &(Vec::new(), Source::Values), false)?;
    let inputs = match o.get("inputs") {
        Some(v) => {
            let arr = v
                .as_array()
                .ok_or_else(|| ConfigError::new("invalid inputs"))?;
            if arr.is_empty() {
                return Err(ItemError::Failed("empty exclusion filter".into()));
            }
            let mut ts = Vec::new();
            for i in arr {
                ts.push(parse_target(i, &(Vec::new(), Source::Values), true)?);
            }
            Some(ts)
        }
        None => None,
    };
    let mode = match o.get("on_match").and_then(Value::as_str) {
        None | Some("bypass") => FilterMode::Bypass,
        Some("monitor") => FilterMode::Monitor,
        Some(other) => FilterMode::Custom(other.to_string()),
    };
    if inputs.is_none() && targets.is_empty() && conditions.is_empty() {
        return Err(ItemError::Failed("empty exclusion filter".into()));
    }
    Ok(FilterSpec {
        targets,
        conditions,
        inputs,
        mode,
    })
}

fn parse_data(o: &Map<String, Value>) -> Result<DataSpec, ItemError> {
    let id = get_str(o, "id")?.to_string();
    let kind = get_str(o, "type")?.to_string();
    if kind != "ip_with_expiration" && kind != "data_with_expiration" {
        return Err(ItemError::Failed(format!("invalid type '{kind}'")));
    }
    let mut entries = Vec::new();
    for e in get_arr(o, "data")? {
        let e = as_obj(e)?;
        let v = get_str(e, "value")?.to_string();
        let exp = match e.get("expiration") {
            None => 0,
            Some(x) => x
                .as_u64()
                .ok_or_else(|| ConfigError::new("invalid expiration"))?,
        };
        if kind == "ip_with_expiration" && crate::matcher::parse_ip_net(&v).is_none() {
            return Err(ItemError::Failed(format!("invalid ip '{v}'")));
        }
        entries.push((v, exp));
    }
    Ok(DataSpec { id, kind, entries })
}

fn parse_action(o: &Map<String, Value>) -> Result<ActionSpec, ItemError> {
    let id = get_str(o, "id")?.to_string();
    let kind = get_str(o, "type")?.to_string();
    let parameters = o
        .get("parameters")
        .and_then(Value::as_object)
        .cloned()
        .ok_or_else(|| ConfigError::new("missing key 'parameters'"))?;
    Ok(ActionSpec {
        id,
        kind,
        parameters,
    })
}

const GENERATORS: &[&str] = &[
    "extract_schema",
    "http_endpoint_fingerprint",
    "http_header_fingerprint",
    "http_network_fingerprint",
    "session_fingerprint",
    "jwt_decode",
    "uri_parse",
];

fn parse_processor_override(o: &Map<String, Value>) -> Result<ProcessorOverride, ItemError> {
    let mut targets = Vec::new();
    for t in get_arr(o, "target")? {
        let id = t
            .get("id")
            .and_then(Value::as_str)
            .ok_or_else(|| ConfigError::new("processor override target without 'id'"))?;
        targets.push(id.to_string());
    }
    if targets.is_empty() {
        return Err(ItemError::Failed("empty processor override target".into()));
    }
    let sc = o.get("scanners").and_then(Value::as_object);
    let include = parse_selectors(sc.and_then(|s| s.get("include")))?;
    let exclude = parse_selectors(sc.and_then(|s| s.get("exclude")))?;
    Ok(ProcessorOverride {
        targets,
        include,
        exclude,
    })
}

fn parse_processor(o: &Map<String, Value>) -> Result<ProcessorSpec, ItemError> {
    let id = get_str(o, "id")?.to_string();
    version_gate(o)?;
    let generator = get_str(o, "generator")?.to_string();
    if !GENERATORS.contains(&generator.as_str()) {
        return Err(ItemError::Failed(format!(
            "unknown generator '{generator}'"
        )));
    }
    let conditions = parse_conditions(o.get("conditions"), &(Vec::new(), Source::Values), false)?;
    let params = o
        .get("parameters")
        .and_then(Value::as_object)
        .ok_or_else(|| ConfigError::new("missing key 'parameters'"))?;
    let mut mappings = Vec::new();
    for m in get_arr(params, "mappings")? {
        let m = as_obj(m)?;
        let output = get_str(m, "output")?;
        let mut args = Vec::new();
        for (k, v) in m {
            if k == "output" {
                continue;
            }
            let arr = v
                .as_array()
                .ok_or_else(|| ConfigError::new(format!("invalid argument '{k}'")))?;
            let mut ts = Vec::new();
            for t in arr {
                ts.push(parse_target(t, &(Vec::new(), Source::Values), false)?);
            }
            args.push((k.clone(), ts));
        }
        mappings.push((args, Arc::from(output), usize::MAX));
    }
    if mappings.is_empty() {
        return Err(ItemError::Failed("empty mappings".into()));
    }
    let (mut inc, mut exc) = (Vec::new(), Vec::new());
    if let Some(sc) = params.get("scanners").and_then(Value::as_array) {
        for s in sc {
            let s = as_obj(s)?;
            if let Some(id) = s.get("id").and_then(Value::as_str) {
                inc.push(RuleSelector::Id(id.to_string()));
            } else {
                inc.push(RuleSelector::Tags(str_map(s.get("tags"), "tags")?));
            }
        }
    }
    if let Some(sc) = params.get("scanners").and_then(Value::as_object) {
        inc = parse_selectors(sc.get("include"))?;
        exc = parse_selectors(sc.get("exclude"))?;
    }
    let evaluate = o.get("evaluate").and_then(Value::as_bool).unwrap_or(true);
    let output = o.get("output").and_then(Value::as_bool).unwrap_or(false);
    Ok(ProcessorSpec {
        id,
        generator,
        conditions,
        mappings,
        evaluate,
        output,
        scanner_include: inc,
        scanner_exclude: exc,
    })
}

fn parse_scanner_matcher(v: Option<&Value>) -> Result<Option<Arc<Matcher>>, ConfigError> {
    let Some(v) = v else { return Ok(None) };
    let o = as_obj(v)?;
    let op = get_str(o, "operator")?;
    let params = o
        .get("parameters")
        .and_then(Value::as_object)
        .ok_or_else(|| ConfigError::new("missing key 'parameters'"))?;
    Ok(Some(Arc::new(Matcher::build(op, params)?)))
}

fn parse_scanner(o: &Map<String, Value>) -> Result<ScannerSpec, ItemError> {
    let id = get_str(o, "id")?.to_string();
    version_gate(o)?;
    let tags = str_map(o.get("tags"), "tags")?;
    let key = parse_scanner_matcher(o.get("key"))?;
    let value = parse_scanner_matcher(o.get("value"))?;
    if key.is_none() && value.is_none() {
        return Err(ItemError::Failed(
            "scanner has no key or value matcher".into(),
        ));
    }
    Ok(ScannerSpec {
        id,
        tags,
        key,
        value,
    })
}

fn parse_override(o: &Map<String, Value>) -> Result<OverrideSpec, ItemError> {
    let mut targets = parse_selectors(o.get("rules_target"))?;
    if let Some(id) = o.get("id").and_then(Value::as_str) {
        targets.push(RuleSelector::Id(id.to_string()));
    }
    if targets.is_empty() {
        return Err(ItemError::Failed(
            "rules_override without rules_target".into(),
        ));
    }
    let enabled = o.get("enabled").and_then(Value::as_bool);
    let on_match = match o.get("on_match") {
        Some(v) => Some(str_list(Some(v), "on_match")?),
        None => None,
    };
    let tags = str_map(o.get("tags"), "tags")?;
    if enabled.is_none() && on_match.is_none() && tags.is_empty() {
        return Err(ItemError::Failed("rules_override changes nothing".into()));
    }
    Ok(OverrideSpec {
        targets,
        enabled,
        on_match,
        tags,
    })
}

fn item_id(v: &Value, idx: usize) -> String {
    v.get("id")
        .and_then(Value::as_str)
        .map(str::to_string)
        .unwrap_or_else(|| format!("index:{idx}"))
}

fn section<T>(
    root: &Map<String, Value>,
    key: &str,
    diags: &mut Diagnostics,
    mut parse: impl FnMut(&Map<String, Value>) -> Result<T, ItemError>,
    out: &mut Vec<T>,
) {
    let Some(v) = root.get(key) else { return };
    let d = diags.sections.entry(key.to_string()).or_default();
    let Some(arr) = v.as_array() else {
        d.error = Some(format!("invalid type for '{key}', expected array"));
        return;
    };
    for (i, item) in arr.iter().enumerate() {
        let id = item_id(item, i);
        let r = match item.as_object() {
            Some(o) => parse(o),
            None => Err(ItemError::Failed("invalid type, expected map".into())),
        };
        match r {
            Ok(x) => {
                d.loaded.push(id);
                out.push(x);
            }
            Err(ItemError::Skipped) => d.skipped.push(id),
            Err(ItemError::Failed(reason)) => d.fail(id, reason),
        }
    }
}

/// Errors that reject a whole configuration.
#[derive(Debug, thiserror::Error, Clone, PartialEq)]
pub enum LoadError {
    #[error("ruleset is not valid JSON: {0}")]
    Json(String),
    #[error("ruleset must be a JSON object")]
    NotAnObject,
    #[error("unsupported schema version '{0}' (only 2.x)")]
    Version(String),
    #[error("no valid item in configuration")]
    NothingLoaded(Box<Diagnostics>),
    #[error("no configuration at path '{0}'")]
    UnknownPath(String),
}

pub(crate) fn parse_config(root: &Value) -> Result<(ConfigSpec, Diagnostics), LoadError> {
    let root = root.as_object().ok_or(LoadError::NotAnObject)?;
    if let Some(v) = root.get("version") {
        let s = v
            .as_str()
            .ok_or_else(|| LoadError::Version(v.to_string()))?;
        match parse_version(s) {
            Some((2, _, _)) => {}
            _ => return Err(LoadError::Version(s.to_string())),
        }
    }
    let mut diags = Diagnostics {
        ruleset_version: root
            .get("metadata")
            .and_then(|m| m.get("rules_version"))
            .and_then(Value::as_str)
            .map(str::to_string),
        ..Default::default()
    };
    let mut spec = ConfigSpec::default();
    let mut base = Vec::new();
    section(
        root,
        "rules",
        &mut diags,
        |o| parse_rule(o, RuleSource::Base),
        &mut base,
    );
    section(
        root,
        "rules_compat",
        &mut diags,
        |o| parse_rule(o, RuleSource::Base),
        &mut base,
    );
    let mut user = Vec::new();
    section(
        root,
        "custom_rules",
        &mut diags,
        |o| parse_rule(o, RuleSource::User),
        &mut user,
    );
    // Duplicate ids inside one configuration: the later one fails.
    let mut seen = std::collections::HashSet::new();
    for (r, key) in base
        .into_iter()
        .map(|r| (r, "rules"))
        .chain(user.into_iter().map(|r| (r, "custom_rules")))
    {
        if !seen.insert(r.id.clone()) {
            if let Some(d) = diags.sections.get_mut(key) {
                if let Some(p) = d.loaded.iter().rposition(|x| *x == r.id) {
                    d.loaded.remove(p);
                }
                d.fail(r.id.clone(), "duplicate rule".into());
            }
            continue;
        }
        match r.source {
            RuleSource::Base => spec.base_rules.push(Arc::new(r)),
            RuleSource::User => spec.user_rules.push(Arc::new(r)),
        }
    }
    section(
        root,
        "rules_data",
        &mut diags,
        parse_data,
        &mut spec.rules_data,
    );
    section(
        root,
        "exclusion_data",
        &mut diags,
        parse_data,
        &mut spec.exclusion_data,
    );
    section(
        root,
        "rules_override",
        &mut diags,
        parse_override,
        &mut spec.overrides,
    );
    let mut filters = Vec::new();
    section(root, "exclusions", &mut diags, parse_filter, &mut filters);
    spec.filters = filters.into_iter().map(Arc::new).collect();
    section(root, "actions", &mut diags, parse_action, &mut spec.actions);
    let mut procs = Vec::new();
    section(root, "processors", &mut diags, parse_processor, &mut procs);
    section(
        root,
        "processor_overrides",
        &mut diags,
        parse_processor_override,
        &mut spec.processor_overrides,
    );
    spec.processors = procs.into_iter().map(Arc::new).collect();
    let mut scanners = Vec::new();
    section(root, "scanners", &mut diags, parse_scanner, &mut scanners);
    spec.scanners = scanners.into_iter().map(Arc::new).collect();
    if let Some(ob) = root.get("obfuscator").and_then(Value::as_object) {
        let k = ob
            .get("key_regex")
            .and_then(Value::as_str)
            .map(str::to_string);
        let v = ob
            .get("value_regex")
            .and_then(Value::as_str)
            .map(str::to_string);
        spec.obfuscator = Some((k, v));
    }
    if diags.total_loaded() == 0 && spec.obfuscator.is_none() {
        return Err(LoadError::NothingLoaded(Box::new(diags)));
    }
    Ok((spec, diags))
}
