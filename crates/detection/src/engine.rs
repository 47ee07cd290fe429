//! The rules engine: security events in, signal updates out.
//!
//! Why per-group state keyed by the group-by values: a threshold rule (`a > 10` per
//! `@http.client_ip`) is really one small counter per IP. Each group keeps one sliding window
//! per query (events in the last `evaluationWindow` seconds, by event time) and at most one
//! active signal. A signal absorbs every matching event of its group while it lives; it ends
//! when no event arrived for `keepAlive` or when `maxSignalDuration` has passed since its first
//! event, and the next match then opens a new one. Cases are tried in order, the first whose
//! condition holds sets the severity; a later, more severe case escalates a live signal.
//!
//! Time comes from the events (and from [`Engine::tick`] for expiry), never from a clock, so
//! replays and tests are deterministic.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use warden_model::SecurityEvent;

use crate::rule::{Aggregation, Condition, DetectionMethod, Rule, RuleAction, Severity};
use crate::search::{Fields, Query};

/// Most events kept per window (older ones are dropped and counted).
const MAX_WINDOW: usize = 100_000;
/// Most groups per rule (new groups beyond it are dropped and counted).
const MAX_GROUPS: usize = 200_000;
/// Event samples kept in a signal.
pub const MAX_SAMPLES: usize = 10;
/// Distinct values kept per signal facet (IPs, users, services...).
const MAX_FACET: usize = 50;

/// Triage of a signal (owned by the API; the engine only carries it).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Triage {
    /// `open`, `under_review`, `archived`.
    pub state: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub archive_reason: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub archive_comment: Option<String>,
    /// Assignee uuid (empty = unassigned).
    #[serde(default)]
    pub assignee: String,
    #[serde(default)]
    pub state_update_ms: i64,
    /// Who changed the state last (a key id or a CLI user).
    #[serde(default)]
    pub updater: String,
    #[serde(default)]
    pub version: i64,
}

/// What the engine asks its caller to do on a rule case's behalf.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ActionRequest {
    /// `block_ip` or `block_user`.
    pub kind: String,
    pub value: String,
    /// Seconds; `None` or 0 = no expiry.
    pub duration_s: Option<i64>,
}

/// A security signal as the engine knows it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Signal {
    pub id: String,
    pub rule_id: String,
    pub rule_name: String,
    pub rule_type: String,
    pub detection_method: String,
    pub rule_version: i64,
    pub is_default_rule: bool,
    pub status: Severity,
    pub case_name: String,
    pub case_condition: String,
    pub title: String,
    /// The rule's message plus the case's notification handles.
    pub message: String,
    pub tags: Vec<String>,
    /// When the signal was generated (the triggering event's time), UNIX ms.
    pub timestamp_ms: i64,
    pub first_seen_ms: i64,
    pub last_seen_ms: i64,
    pub events_matched: u64,
    /// Group-by field → value (field as written in the rule, e.g. `@http.client_ip`).
    pub group_by: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub new_value: Option<String>,
    pub envs: Vec<String>,
    pub services: Vec<String>,
    pub hosts: Vec<String>,
    pub client_ips: Vec<String>,
    pub users: Vec<String>,
    pub activities: Vec<String>,
    pub samples: Vec<SecurityEvent>,
    /// Notification handles (`@slack-x`...): the case's, then those in the rule message.
    pub notifications: Vec<String>,
    #[serde(default)]
    pub triage: Triage,
}

/// Why an update was emitted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UpdateKind {
    Created,
    /// Severity rose (a more severe case now holds).
    Escalated,
    /// Absorbed more events.
    Updated,
}

/// One change to one signal.
#[derive(Clone, Debug)]
pub struct SignalUpdate {
    pub kind: UpdateKind,
    /// A snapshot, shared with the engine until its next change (copy on write: an update
    /// costs a reference count, not a deep copy of samples).
    pub signal: Arc<Signal>,
    /// Actions to run (on creation and escalation only).
    pub actions: Vec<ActionRequest>,
    /// Time of the event that caused this update, UNIX ms.
    pub event_ms: i64,
}

/// Counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EngineStats {
    /// Events passed to [`Engine::process`].
    pub events_evaluated: u64,
    /// (event, rule) pairs where a query matched.
    pub matches: u64,
    pub signals_created: u64,
    pub signals_escalated: u64,
    /// Window entries or groups dropped at the memory caps.
    pub dropped: u64,
}

struct CQuery {
    name: String,
    search: Query,
    agg: Aggregation,
    distinct: Vec<String>,
    metric: Option<String>,
}

struct CCase {
    cond: Option<Condition>,
    status: Severity,
}

struct Compiled {
    rule: Arc<Rule>,
    queries: Vec<CQuery>,
    group_by: Vec<String>,
    optional_groups: bool,
    cases: Vec<CCase>,
    window_ms: i64,
    keep_alive_ms: i64,
    max_duration_ms: i64,
    message_handles: Vec<String>,
}

#[derive(Default)]
struct Window {
    /// (event ms, distinct/metric value)
    entries: VecDeque<(i64, Option<String>)>,
    /// Counts per distinct value (cardinality).
    distinct: HashMap<String, u32>,
}

impl Window {
    fn evict(&mut self, before: i64) {
        while let Some((t, _)) = self.entries.front() {
            if *t > before {
                break;
            }
            if let Some((_, Some(v))) = self.entries.pop_front() {
                if let Some(c) = self.distinct.get_mut(&v) {
                    *c -= 1;
                    if *c == 0 {
                        self.distinct.remove(&v);
                    }
                }
            }
        }
    }

    fn push(&mut self, t: i64, v: Option<String>, track_distinct: bool) -> bool {
        let mut dropped = false;
        if self.entries.len() >= MAX_WINDOW {
            if let Some((_, Some(old))) = self.entries.pop_front() {
                if let Some(c) = self.distinct.get_mut(&old) {
                    *c -= 1;
                    if *c == 0 {
                        self.distinct.remove(&old);
                    }
                }
            }
            dropped = true;
        }
        if track_distinct {
            if let Some(v) = &v {
                *self.distinct.entry(v.clone()).or_insert(0) += 1;
            }
        }
        self.entries.push_back((t, v));
        dropped
    }

    fn value(&self, agg: Aggregation) -> f64 {
        match agg {
            Aggregation::Count | Aggregation::NewValue => self.entries.len() as f64,
            Aggregation::Cardinality => self.distinct.len() as f64,
            Aggregation::Sum => self
                .entries
                .iter()
                .filter_map(|(_, v)| v.as_deref()?.parse::<f64>().ok())
                .sum(),
            Aggregation::Max => self
                .entries
                .iter()
                .filter_map(|(_, v)| v.as_deref()?.parse::<f64>().ok())
                .fold(0.0, f64::max),
        }
    }
}

struct Active {
    signal: Arc<Signal>,
}

#[derive(Default)]
struct Group {
    windows: Vec<Window>,
    active: Option<Active>,
    /// new_value: value → last seen ms.
    seen: HashMap<String, i64>,
    /// new_value: one live signal per new value.
    nv_active: HashMap<String, Active>,
}

struct RuleState {
    compiled: Compiled,
    groups: HashMap<Vec<String>, Group>,
    /// new_value: learning starts at the rule's creation, else at its first event.
    learning_start: Option<i64>,
}

/// The engine for one org.
pub struct Engine {
    rules: Vec<RuleState>,
    seed: u64,
    counter: u64,
    stats: EngineStats,
}

fn facet_push(v: &mut Vec<String>, x: &str) {
    if !x.is_empty() && v.len() < MAX_FACET && !v.iter().any(|y| y == x) {
        v.push(x.to_string());
    }
}

/// `@slack-x`, `@pagerduty-y`, `@webhook-z`, emails... in a message.
pub fn handles_in(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    for w in text.split(|c: char| c.is_whitespace() || c == ',' || c == '(' || c == ')') {
        if let Some(h) = w.strip_prefix('@') {
            let h = h.trim_end_matches(['.', ';', ':', '!', '?']);
            if !h.is_empty() && !out.iter().any(|x: &String| x[1..] == *h) {
                out.push(format!("@{h}"));
            }
        }
    }
    out
}

impl Compiled {
    fn new(rule: Arc<Rule>) -> Option<Compiled> {
        let mut queries = Vec::new();
        for (i, q) in rule.queries.iter().enumerate() {
            let search = Query::parse(&q.query).ok()?;
            queries.push(CQuery {
                name: rule.query_name(i),
                search,
                agg: q.aggregation,
                distinct: q.distinct_fields.clone(),
                metric: q.metric_field().map(str::to_string),
            });
        }
        let mut cases = Vec::new();
        for c in &rule.cases {
            let cond = if c.condition.trim().is_empty() {
                None
            } else {
                Some(Condition::parse(&c.condition).ok()?)
            };
            cases.push(CCase {
                cond,
                status: c.status,
            });
        }
        let o = &rule.options;
        Some(Compiled {
            group_by: rule
                .queries
                .first()
                .map(|q| q.group_by_fields.clone())
                .unwrap_or_default(),
            optional_groups: rule
                .queries
                .first()
                .is_some_and(|q| q.has_optional_group_by_fields),
            queries,
            cases,
            window_ms: o.evaluation_window.max(0) * 1000,
            keep_alive_ms: o.keep_alive.max(0) * 1000,
            max_duration_ms: o.max_signal_duration.max(0) * 1000,
            message_handles: handles_in(&rule.message),
            rule,
        })
    }

    /// Group-by values of `e`; `None` when a field is missing and groups are not optional.
    fn group_key(&self, e: &SecurityEvent) -> Option<Vec<String>> {
        let mut key = Vec::with_capacity(self.group_by.len());
        for f in &self.group_by {
            match first_value(e, f) {
                Some(v) => key.push(v),
                None if self.optional_groups => key.push(String::new()),
                None => return None,
            }
        }
        Some(key)
    }

    /// Index of the first case whose condition holds.
    fn first_case(&self, value: &dyn Fn(&str) -> f64) -> Option<usize> {
        self.cases
            .iter()
            .position(|c| c.cond.as_ref().is_none_or(|cond| cond.eval(value)))
    }
}

fn first_value(e: &SecurityEvent, field: &str) -> Option<String> {
    let mut out = None;
    e.any_value(field, &mut |v| {
        if v.is_empty() {
            return false;
        }
        out = Some(v.to_string());
        true
    });
    out
}

fn distinct_value(e: &SecurityEvent, fields: &[String]) -> Option<String> {
    let mut parts = Vec::with_capacity(fields.len());
    for f in fields {
        parts.push(first_value(e, f)?);
    }
    Some(parts.join("\u{1f}"))
}

impl Engine {
    /// An engine with no rules. `seed` makes signal ids unique across engine instances
    /// (the server passes a random value).
    pub fn new(seed: u64) -> Engine {
        Engine {
            rules: Vec::new(),
            seed,
            counter: 0,
            stats: EngineStats::default(),
        }
    }

    pub fn stats(&self) -> EngineStats {
        self.stats
    }

    /// Replaces the rule set. Enabled rules whose detection logic is unchanged keep their
    /// windows and live signals; others start empty. Rules that fail to compile are skipped
    /// (they were validated when stored).
    pub fn set_rules(&mut self, rules: Vec<Rule>) {
        let mut old: HashMap<String, RuleState> = self
            .rules
            .drain(..)
            .map(|r| (r.compiled.rule.id.clone(), r))
            .collect();
        for r in rules {
            if !r.is_enabled {
                continue;
            }
            let rule = Arc::new(r);
            let Some(compiled) = Compiled::new(rule.clone()) else {
                continue;
            };
            match old.remove(&rule.id) {
                Some(mut st) if st.compiled.rule.same_logic(&rule) => {
                    st.compiled = compiled;
                    self.rules.push(st);
                }
                _ => self.rules.push(RuleState {
                    compiled,
                    groups: HashMap::new(),
                    learning_start: (rule.created_at > 0).then_some(rule.created_at),
                }),
            }
        }
    }

    /// Ids of the rules being evaluated.
    pub fn rule_ids(&self) -> Vec<String> {
        self.rules
            .iter()
            .map(|r| r.compiled.rule.id.clone())
            .collect()
    }

    /// Evaluates one event against every rule; appends the signal updates to `out`.
    pub fn process(&mut self, e: &SecurityEvent, out: &mut Vec<SignalUpdate>) {
        self.stats.events_evaluated += 1;
        for ri in 0..self.rules.len() {
            let matched: Vec<usize> = self.rules[ri]
                .compiled
                .queries
                .iter()
                .enumerate()
                .filter(|(_, q)| q.search.matches(e))
                .map(|(i, _)| i)
                .collect();
            if matched.is_empty() {
                continue;
            }
            let Some(key) = self.rules[ri].compiled.group_key(e) else {
                continue;
            };
            self.stats.matches += 1;
            if self.rules[ri].compiled.rule.options.detection_method == DetectionMethod::NewValue {
                self.new_value(ri, key, &matched, e, out);
            } else {
                self.threshold(ri, key, &matched, e, out);
            }
        }
    }

    fn threshold(
        &mut self,
        ri: usize,
        key: Vec<String>,
        matched: &[usize],
        e: &SecurityEvent,
        out: &mut Vec<SignalUpdate>,
    ) {
        let t = e.timestamp_ms;
        let st = &mut self.rules[ri];
        let c = &st.compiled;
        if !st.groups.contains_key(&key) && st.groups.len() >= MAX_GROUPS {
            self.stats.dropped += 1;
            return;
        }
        let g = st.groups.entry(key.clone()).or_default();
        if g.windows.len() != c.queries.len() {
            g.windows = (0..c.queries.len()).map(|_| Window::default()).collect();
        }
        // A live signal past keepAlive or maxSignalDuration ends here; its windows restart
        // so the next signal needs the threshold again.
        if let Some(a) = &g.active {
            if expired(&a.signal, t, c.keep_alive_ms, c.max_duration_ms) {
                g.active = None;
                g.windows = (0..c.queries.len()).map(|_| Window::default()).collect();
            }
        }
        let mut dropped = 0;
        for &qi in matched {
            let q = &c.queries[qi];
            let v = match q.agg {
                Aggregation::Cardinality => distinct_value(e, &q.distinct),
                Aggregation::Sum | Aggregation::Max => {
                    q.metric.as_deref().and_then(|m| first_value(e, m))
                }
                _ => None,
            };
            if q.agg == Aggregation::Cardinality && v.is_none() {
                continue;
            }
            let w = &mut g.windows[qi];
            w.evict(t - c.window_ms);
            if w.push(t, v, q.agg == Aggregation::Cardinality) {
                dropped += 1;
            }
        }
        for w in &mut g.windows {
            w.evict(t - c.window_ms);
        }
        let values: HashMap<&str, f64> = c
            .queries
            .iter()
            .zip(&g.windows)
            .map(|(q, w)| (q.name.as_str(), w.value(q.agg)))
            .collect();
        let case = c.first_case(&|n| values.get(n).copied().unwrap_or(0.0));
        let (kind, actions) = match (&mut g.active, case) {
            (Some(a), case) => {
                absorb(Arc::make_mut(&mut a.signal), e);
                let mut kind = UpdateKind::Updated;
                let mut actions = Vec::new();
                if let Some(ci) = case {
                    if c.cases[ci].status > a.signal.status {
                        set_case(Arc::make_mut(&mut a.signal), c, ci);
                        kind = UpdateKind::Escalated;
                        actions = case_actions(&c.rule.cases[ci].actions, &a.signal, e);
                    }
                }
                (kind, actions)
            }
            (None, Some(ci)) => {
                let id = make_id(self.seed, &mut self.counter, t);
                let mut s = new_signal(id, c, &key, None, e);
                // The events that crossed the threshold are part of the signal.
                let in_windows: usize = g.windows.iter().map(|w| w.entries.len()).sum();
                s.events_matched = (in_windows as u64).max(1);
                if let Some(first) = g
                    .windows
                    .iter()
                    .filter_map(|w| w.entries.front())
                    .map(|x| x.0)
                    .min()
                {
                    s.first_seen_ms = s.first_seen_ms.min(first);
                }
                set_case(&mut s, c, ci);
                let actions = case_actions(&c.rule.cases[ci].actions, &s, e);
                g.active = Some(Active {
                    signal: Arc::new(s),
                });
                (UpdateKind::Created, actions)
            }
            (None, None) => return,
        };
        self.stats.dropped += dropped;
        match kind {
            UpdateKind::Created => self.stats.signals_created += 1,
            UpdateKind::Escalated => self.stats.signals_escalated += 1,
            UpdateKind::Updated => {}
        }
        if let Some(a) = &g.active {
            out.push(SignalUpdate {
                kind,
                signal: a.signal.clone(),
                actions,
                event_ms: t,
            });
        }
    }

    fn new_value(
        &mut self,
        ri: usize,
        key: Vec<String>,
        matched: &[usize],
        e: &SecurityEvent,
        out: &mut Vec<SignalUpdate>,
    ) {
        let t = e.timestamp_ms;
        let st = &mut self.rules[ri];
        let learning_start = *st.learning_start.get_or_insert(t);
        let c = &st.compiled;
        let nvo = c.rule.options.new_value_options.as_ref();
        let learning_ms = nvo.and_then(|o| o.learning_duration).unwrap_or(0) * 86_400_000;
        let forget_ms = nvo.and_then(|o| o.forget_after).unwrap_or(28) * 86_400_000;
        let Some(&qi) = matched
            .iter()
            .find(|&&i| c.queries[i].agg == Aggregation::NewValue)
        else {
            return;
        };
        let Some(value) = c.queries[qi]
            .metric
            .as_deref()
            .and_then(|m| first_value(e, m))
        else {
            return;
        };
        if !st.groups.contains_key(&key) && st.groups.len() >= MAX_GROUPS {
            self.stats.dropped += 1;
            return;
        }
        let g = st.groups.entry(key.clone()).or_default();
        g.seen.retain(|_, last| t - *last < forget_ms);
        let known = g.seen.contains_key(&value);
        g.seen.insert(value.clone(), t);
        // A live signal for this value absorbs the event.
        if let Some(a) = g.nv_active.get_mut(&value) {
            if !expired(&a.signal, t, c.keep_alive_ms, c.max_duration_ms) {
                absorb(Arc::make_mut(&mut a.signal), e);
                out.push(SignalUpdate {
                    kind: UpdateKind::Updated,
                    signal: a.signal.clone(),
                    actions: Vec::new(),
                    event_ms: t,
                });
                return;
            }
            g.nv_active.remove(&value);
        }
        if known || t < learning_start + learning_ms {
            return;
        }
        let Some(ci) = c.first_case(&|_| 1.0) else {
            return;
        };
        let id = make_id(self.seed, &mut self.counter, t);
        let mut s = new_signal(id, c, &key, Some(value.clone()), e);
        set_case(&mut s, c, ci);
        let actions = case_actions(&c.rule.cases[ci].actions, &s, e);
        let s = Arc::new(s);
        out.push(SignalUpdate {
            kind: UpdateKind::Created,
            signal: s.clone(),
            actions,
            event_ms: t,
        });
        self.stats.signals_created += 1;
        g.nv_active.insert(value, Active { signal: s });
    }

    /// Forgets state that can no longer matter at `now_ms`: ended signals, empty windows.
    /// Call it now and then (the server does every few seconds).
    pub fn tick(&mut self, now_ms: i64) {
        for st in &mut self.rules {
            let c = &st.compiled;
            st.groups.retain(|_, g| {
                if let Some(a) = &g.active {
                    if expired(&a.signal, now_ms, c.keep_alive_ms, c.max_duration_ms) {
                        g.active = None;
                        for w in &mut g.windows {
                            *w = Window::default();
                        }
                    }
                }
                g.nv_active
                    .retain(|_, a| !expired(&a.signal, now_ms, c.keep_alive_ms, c.max_duration_ms));
                for w in &mut g.windows {
                    w.evict(now_ms - c.window_ms);
                }
                g.active.is_some()
                    || !g.nv_active.is_empty()
                    || !g.seen.is_empty()
                    || g.windows.iter().any(|w| !w.entries.is_empty())
            });
        }
    }

    /// Re-adopts a stored live signal after a restart, so new events extend it instead of
    /// opening a duplicate. Ignored when its rule is not loaded or it has ended at `now_ms`.
    pub fn restore(&mut self, s: Signal, now_ms: i64) {
        let Some(st) = self
            .rules
            .iter_mut()
            .find(|r| r.compiled.rule.id == s.rule_id)
        else {
            return;
        };
        let c = &st.compiled;
        if expired(&s, now_ms, c.keep_alive_ms, c.max_duration_ms) {
            return;
        }
        let key: Vec<String> = c
            .group_by
            .iter()
            .map(|f| s.group_by.get(f).cloned().unwrap_or_default())
            .collect();
        let g = st.groups.entry(key).or_default();
        if g.windows.len() != c.queries.len() {
            g.windows = (0..c.queries.len()).map(|_| Window::default()).collect();
        }
        match s.new_value.clone() {
            Some(v) => {
                g.seen.insert(v.clone(), s.last_seen_ms);
                g.nv_active.insert(
                    v,
                    Active {
                        signal: Arc::new(s),
                    },
                );
            }
            None => {
                g.active = Some(Active {
                    signal: Arc::new(s),
                })
            }
        }
    }

    /// Number of live signals (for tests and stats).
    pub fn live_signals(&self) -> usize {
        self.rules
            .iter()
            .flat_map(|r| r.groups.values())
            .map(|g| g.active.is_some() as usize + g.nv_active.len())
            .sum()
    }
}

/// Signal ids: time first so they sort roughly by creation; seed and counter make them
/// unique across engines and restarts.
fn make_id(seed: u64, counter: &mut u64, t: i64) -> String {
    *counter += 1;
    let mix = seed.wrapping_add(counter.wrapping_mul(0x9E37_79B9_7F4A_7C15));
    format!("AQAAA{:012x}{:016x}", t.max(0), mix)
}

fn expired(s: &Signal, t: i64, keep_alive_ms: i64, max_ms: i64) -> bool {
    t - s.last_seen_ms > keep_alive_ms || t - s.first_seen_ms >= max_ms
}

fn absorb(s: &mut Signal, e: &SecurityEvent) {
    s.events_matched += 1;
    s.last_seen_ms = s.last_seen_ms.max(e.timestamp_ms);
    s.first_seen_ms = s.first_seen_ms.min(e.timestamp_ms);
    add_facets(s, e);
    if s.samples.len() < MAX_SAMPLES {
        s.samples.push(e.clone());
    }
}

fn add_facets(s: &mut Signal, e: &SecurityEvent) {
    facet_push(&mut s.envs, &e.env);
    facet_push(&mut s.services, &e.service);
    facet_push(&mut s.hosts, &e.host);
    if let Some(ip) = &e.client_ip {
        facet_push(&mut s.client_ips, ip);
    }
    if let Some(u) = &e.usr_id {
        facet_push(&mut s.users, u);
    }
    for a in &e.activity {
        facet_push(&mut s.activities, a);
    }
    let mut extra = Vec::new();
    for env in &s.envs {
        extra.push(format!("env:{env}"));
    }
    for svc in &s.services {
        extra.push(format!("service:{svc}"));
    }
    for t in extra {
        if !s.tags.contains(&t) && s.tags.len() < 200 {
            s.tags.push(t);
        }
    }
}

fn new_signal(
    id: String,
    c: &Compiled,
    key: &[String],
    new_value: Option<String>,
    e: &SecurityEvent,
) -> Signal {
    let r = &c.rule;
    let group_by: BTreeMap<String, String> = c
        .group_by
        .iter()
        .cloned()
        .zip(key.iter().cloned())
        .collect();
    let mut tags = r.tags.clone();
    if r.rule_type == crate::rule::RuleType::ApplicationSecurity
        && !tags.iter().any(|t| t.starts_with("security:"))
    {
        tags.push("security:attack".into());
    }
    tags.push(format!("source:{}", "appsec"));
    tags.push(format!("rule_id:{}", r.id));
    let mut s = Signal {
        id,
        rule_id: r.id.clone(),
        rule_name: r.name.clone(),
        rule_type: r.rule_type.as_str().into(),
        detection_method: match r.options.detection_method {
            DetectionMethod::Threshold => "threshold".into(),
            DetectionMethod::NewValue => "new_value".into(),
        },
        rule_version: r.version,
        is_default_rule: r.is_default,
        status: Severity::Info,
        case_name: String::new(),
        case_condition: String::new(),
        title: title_of(r, &group_by, new_value.as_deref()),
        message: String::new(),
        tags,
        timestamp_ms: e.timestamp_ms,
        first_seen_ms: e.timestamp_ms,
        last_seen_ms: e.timestamp_ms,
        events_matched: 0,
        group_by,
        new_value,
        envs: Vec::new(),
        services: Vec::new(),
        hosts: Vec::new(),
        client_ips: Vec::new(),
        users: Vec::new(),
        activities: Vec::new(),
        samples: Vec::new(),
        notifications: Vec::new(),
        triage: Triage {
            state: "open".into(),
            ..Triage::default()
        },
    };
    absorb(&mut s, e);
    s
}

fn title_of(r: &Rule, group_by: &BTreeMap<String, String>, nv: Option<&str>) -> String {
    let mut parts: Vec<String> = group_by
        .iter()
        .filter(|(_, v)| !v.is_empty())
        .map(|(k, v)| format!("{}:{v}", k.trim_start_matches('@')))
        .collect();
    if let Some(v) = nv {
        parts.push(format!("new value {v}"));
    }
    if parts.is_empty() {
        r.name.clone()
    } else {
        format!("{} ({})", r.name, parts.join(", "))
    }
}

fn set_case(s: &mut Signal, c: &Compiled, ci: usize) {
    let case = &c.rule.cases[ci];
    s.status = case.status;
    s.case_name = case.name.clone();
    s.case_condition = case.condition.clone();
    let mut handles: Vec<String> = Vec::new();
    for h in case.notifications.iter().chain(&c.message_handles) {
        let h = if h.starts_with('@') {
            h.clone()
        } else {
            format!("@{h}")
        };
        if !handles.contains(&h) {
            handles.push(h);
        }
    }
    let extra: Vec<&String> = case
        .notifications
        .iter()
        .filter(|h| {
            !c.message_handles
                .iter()
                .any(|m| m.trim_start_matches('@') == h.trim_start_matches('@'))
        })
        .collect();
    s.message = if extra.is_empty() {
        c.rule.message.clone()
    } else {
        let hs: Vec<String> = extra
            .iter()
            .map(|h| {
                if h.starts_with('@') {
                    (*h).clone()
                } else {
                    format!("@{h}")
                }
            })
            .collect();
        format!("{}\n\nNotify: {}", c.rule.message, hs.join(" "))
    };
    s.notifications = handles;
}

fn case_actions(actions: &[RuleAction], s: &Signal, e: &SecurityEvent) -> Vec<ActionRequest> {
    let mut out = Vec::new();
    for a in actions {
        let value = match a.action_type.as_str() {
            "block_ip" => s
                .group_by
                .get("@http.client_ip")
                .or_else(|| s.group_by.get("@network.client.ip"))
                .filter(|v| !v.is_empty())
                .cloned()
                .or_else(|| e.client_ip.clone()),
            "block_user" => s
                .group_by
                .get("@usr.id")
                .filter(|v| !v.is_empty())
                .cloned()
                .or_else(|| e.usr_id.clone()),
            _ => None,
        };
        if let Some(value) = value.filter(|v| !v.is_empty()) {
            out.push(ActionRequest {
                kind: a.action_type.clone(),
                value,
                duration_s: a.options.duration,
            });
        }
    }
    out
}

#[cfg(test)]
mod tests;
