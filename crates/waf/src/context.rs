//! Per-request evaluation context.
//!
//! A context keeps the addresses given so far (persistent across `run` calls), a
//! per-target "already evaluated" generation so a rule only inspects objects it has not seen,
//! a per-condition match cache (a rule can match across calls), the per-type collection state
//! of the waf module (at most one event per attack type) and accumulated exclusions.
//! Subcontexts clone that state cheaply (values are `Arc`s) and drop it afterwards, which gives
//! RASP calls their ephemeral data on top of the request's.

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{Map, Value};

use crate::config::{AttrSrc, Condition, FilterMode, KeyElem, MatcherRef, Target};
use crate::event::{
    Action, ArgumentMatch, EvalResult, Event, MatchParameter, Parameter, RuleMatch, RuleRef,
};
use crate::obfuscator::REDACTED;
use crate::ruleset::{Rule, Ruleset, Verdict};
use crate::transform::{self, Source};

/// Errors of [`Context::run`].
#[derive(Debug, thiserror::Error, Clone, PartialEq)]
pub enum EvalError {
    #[error("input must be a map of address -> value, got {0}")]
    InvalidInput(&'static str),
}

/// Raised when the time budget is exhausted; unwinds the current phase.
#[derive(Debug)]
pub(crate) struct Timeout;

/// Deadline checked cheaply: the clock is read only every 16 checks.
pub(crate) struct Timer {
    deadline: Option<Instant>,
    count: u32,
    expired: bool,
}

impl Timer {
    /// Read the clock now (before work whose cost grows with the input, e.g. a regex over a
    /// long string), instead of waiting for the 16th check.
    pub(crate) fn check_now(&mut self) -> Result<(), Timeout> {
        if self.expired {
            return Err(Timeout);
        }
        if let Some(d) = self.deadline {
            if Instant::now() >= d {
                self.expired = true;
                return Err(Timeout);
            }
        }
        Ok(())
    }

    pub(crate) fn new(start: Instant, budget_us: u64) -> Timer {
        let deadline = start.checked_add(Duration::from_micros(budget_us));
        Timer {
            deadline,
            count: 0,
            expired: false,
        }
    }

    pub(crate) fn check(&mut self) -> Result<(), Timeout> {
        if self.expired {
            return Err(Timeout);
        }
        let c = self.count;
        self.count = self.count.wrapping_add(1);
        if c % 16 == 0 {
            if let Some(d) = self.deadline {
                if Instant::now() >= d {
                    self.expired = true;
                    return Err(Timeout);
                }
            }
        }
        Ok(())
    }
}

#[derive(Clone, Debug)]
pub(crate) enum Seg<'v> {
    Key(&'v str),
    Index(usize),
}

fn path_to_json(path: &[Seg<'_>]) -> Vec<Value> {
    path.iter()
        .map(|s| match s {
            Seg::Key(k) => Value::from(*k),
            Seg::Index(i) => Value::from(*i as u64),
        })
        .collect()
}

/// Follow a key path; negative indexes count from the end of arrays.
pub(crate) fn descend<'v>(
    mut v: &'v Value,
    kp: &[KeyElem],
    path: &mut Vec<Seg<'v>>,
) -> Option<&'v Value> {
    for k in kp {
        match (k, v) {
            (KeyElem::Key(key), Value::Object(m)) => {
                let (kk, nv) = m.get_key_value(key.as_str())?;
                path.push(Seg::Key(kk.as_str()));
                v = nv;
            }
            (KeyElem::Index(i), Value::Array(a)) => {
                let idx = if *i < 0 {
                    a.len().checked_sub(i.unsigned_abs() as usize)?
                } else {
                    *i as usize
                };
                v = a.get(idx)?;
                path.push(Seg::Index(idx));
            }
            (KeyElem::Key(key), Value::Array(a)) => {
                let idx: usize = key.parse().ok()?;
                v = a.get(idx)?;
                path.push(Seg::Index(idx));
            }
            _ => return None,
        }
    }
    Some(v)
}

pub(crate) enum Leaf<'v> {
    Str(&'v str),
    Scalar(&'v Value),
}

/// Excluded object paths for one address (input filters); `Glob` matches any key.
type Excl<'a> = &'a [Vec<KeyElem>];

fn path_excluded(path: &[Seg<'_>], excl: Excl<'_>) -> bool {
    excl.iter().any(|p| {
        p.len() == path.len()
            && p.iter().zip(path).all(|(e, s)| match (e, s) {
                (KeyElem::Glob, _) => true,
                (KeyElem::Key(k), Seg::Key(x)) => k == x,
                (KeyElem::Index(i), Seg::Index(x)) => *i >= 0 && *i as usize == *x,
                (KeyElem::Key(k), Seg::Index(x)) => k.parse::<usize>().ok() == Some(*x),
                _ => false,
            })
    })
}

const MAX_DEPTH: usize = 64;

/// Strings longer than this get a clock check before they are matched.
const LONG_STRING: usize = 2048;

/// Visit leaves (values or keys) below `v`; `f` returns true to stop.
pub(crate) fn walk<'v>(
    v: &'v Value,
    path: &mut Vec<Seg<'v>>,
    src: Source,
    excl: Excl<'_>,
    depth: usize,
    f: &mut dyn FnMut(Leaf<'v>, &[Seg<'v>]) -> bool,
) -> bool {
    if !excl.is_empty() && path_excluded(path, excl) {
        return false;
    }
    match v {
        Value::Object(m) => {
            if depth >= MAX_DEPTH {
                return false;
            }
            for (k, child) in m {
                path.push(Seg::Key(k.as_str()));
                if src != Source::Values
                    && (excl.is_empty() || !path_excluded(path, excl))
                    && f(Leaf::Str(k), path)
                {
                    path.pop();
                    return true;
                }
                let stop = walk(child, path, src, excl, depth + 1, f);
                path.pop();
                if stop {
                    return true;
                }
            }
            false
        }
        Value::Array(a) => {
            if depth >= MAX_DEPTH {
                return false;
            }
            for (i, child) in a.iter().enumerate() {
                path.push(Seg::Index(i));
                let stop = walk(child, path, src, excl, depth + 1, f);
                path.pop();
                if stop {
                    return true;
                }
            }
            false
        }
        Value::String(s) if src != Source::Keys => f(Leaf::Str(s), path),
        Value::Null => false,
        other if src != Source::Keys => f(Leaf::Scalar(other), path),
        _ => false,
    }
}

pub(crate) fn scalar_string(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        _ => String::new(),
    }
}

#[derive(Clone, Debug)]
struct Slot {
    value: Arc<Value>,
    generation: u64,
    /// Set by a subcontext: dropped with it.
    _ephemeral: bool,
}

#[derive(Clone, Debug, Default)]
pub(crate) struct State {
    store: Vec<Option<Slot>>,
    generation: u64,
    /// Generation of the store entry last inspected per (rule/filter, target) slot.
    target_gens: Vec<u64>,
    cond_cache: Vec<Option<Arc<RuleMatch>>>,
    rule_done: Vec<bool>,
    coll_verdict: Vec<Verdict>,
    filter_done: Vec<bool>,
    rule_excl: HashMap<usize, FilterMode>,
    input_excl: HashMap<usize, Vec<(usize, Vec<KeyElem>)>>,
    proc_gen: HashMap<(bool, usize, usize), u64>,
    new_count: usize,
    /// Spare capacity for the key path of the walk (always empty; see [`recycle_path`]).
    path_buf: Vec<Seg<'static>>,
    /// Regex prefilter results for this request's strings (cleared when the store changes).
    pf_cache: crate::prefilter::Cache,
    /// Store generation when the last complete pass over the rules ended: a value with a
    /// higher generation is new to the rules.
    rules_seen_gen: u64,
    /// The last pass over the rules stopped early (a blocking verdict or the deadline), so
    /// some rules may not have seen the current values: the next pass visits every rule.
    rules_partial: bool,
}

/// Reuse a key-path buffer's allocation under another lifetime: the vector is emptied, and
/// collecting an empty `filter_map` over it is done in place (same element size), so the
/// capacity survives. Saves an allocation per inspected target.
// `filter_map` (not `filter`) is the point: it changes the lifetime while collecting in place.
#[allow(clippy::unnecessary_filter_map)]
fn recycle_path<'b>(mut v: Vec<Seg<'_>>) -> Vec<Seg<'b>> {
    v.clear();
    v.into_iter().filter_map(|_| None).collect()
}

/// Per-request evaluation context. Not shared between threads; create one per request.
#[derive(Debug)]
pub struct Context {
    rs: Arc<Ruleset>,
    st: State,
}

/// Ephemeral scope on top of a [`Context`] (RASP calls): sees the context's addresses, and
/// everything it adds or matches is dropped with it.
#[derive(Debug)]
pub struct Subcontext {
    rs: Arc<Ruleset>,
    st: State,
}

impl Context {
    pub(crate) fn new(rs: Arc<Ruleset>) -> Context {
        let st = State {
            store: vec![None; rs.addresses.len()],
            generation: 0,
            target_gens: vec![0; rs.n_target_slots],
            cond_cache: vec![None; rs.n_cond_slots],
            rule_done: vec![false; rs.rules.len()],
            coll_verdict: vec![Verdict::None; rs.n_collections],
            filter_done: vec![false; rs.rule_filters.len()],
            ..Default::default()
        };
        Context { rs, st }
    }

    /// Evaluate new addresses (`{address: value}`) within a budget in microseconds.
    pub fn run(&mut self, addresses: &Value, timeout_us: u64) -> Result<EvalResult, EvalError> {
        run(&self.rs, &mut self.st, addresses, timeout_us)
    }

    /// Same as [`Context::run`], taking ownership of the input (avoids a copy).
    pub fn run_owned(
        &mut self,
        addresses: Value,
        timeout_us: u64,
    ) -> Result<EvalResult, EvalError> {
        run_owned(&self.rs, &mut self.st, addresses, timeout_us)
    }

    /// Open an ephemeral subcontext on top of this context's current state.
    pub fn subcontext(&self) -> Subcontext {
        Subcontext {
            rs: Arc::clone(&self.rs),
            st: self.st.clone(),
        }
    }

    /// The ruleset this context evaluates.
    pub fn ruleset(&self) -> &Arc<Ruleset> {
        &self.rs
    }
}

impl Subcontext {
    pub fn run(&mut self, addresses: &Value, timeout_us: u64) -> Result<EvalResult, EvalError> {
        run(&self.rs, &mut self.st, addresses, timeout_us)
    }
}

fn run(
    rs: &Ruleset,
    st: &mut State,
    input: &Value,
    timeout_us: u64,
) -> Result<EvalResult, EvalError> {
    let m = match input {
        Value::Object(m) => m,
        Value::Null => return Ok(EvalResult::default()),
        Value::Array(_) => return Err(EvalError::InvalidInput("an array")),
        _ => return Err(EvalError::InvalidInput("a scalar")),
    };
    let start = Instant::now();
    for (k, v) in m {
        insert(rs, st, k, Arc::new(v.clone()));
    }
    Ok(eval(rs, st, start, timeout_us))
}

fn run_owned(
    rs: &Ruleset,
    st: &mut State,
    input: Value,
    timeout_us: u64,
) -> Result<EvalResult, EvalError> {
    let m = match input {
        Value::Object(m) => m,
        Value::Null => return Ok(EvalResult::default()),
        Value::Array(_) => return Err(EvalError::InvalidInput("an array")),
        _ => return Err(EvalError::InvalidInput("a scalar")),
    };
    let start = Instant::now();
    for (k, v) in m {
        insert(rs, st, &k, Arc::new(v));
    }
    Ok(eval(rs, st, start, timeout_us))
}

fn insert(rs: &Ruleset, st: &mut State, addr: &str, v: Arc<Value>) {
    if let Some(&i) = rs.addr_index.get(addr) {
        st.pf_cache.clear();
        st.generation += 1;
        st.store[i] = Some(Slot {
            value: v,
            generation: st.generation,
            _ephemeral: false,
        });
        st.new_count += 1;
    }
}

fn insert_idx(st: &mut State, i: usize, v: Value) {
    st.pf_cache.clear();
    st.generation += 1;
    st.store[i] = Some(Slot {
        value: Arc::new(v),
        generation: st.generation,
        _ephemeral: false,
    });
    st.new_count += 1;
}

struct Pending {
    rule: usize,
    matches: Vec<RuleMatch>,
    action_override: Option<String>,
}

fn eval(rs: &Ruleset, st: &mut State, start: Instant, timeout_us: u64) -> EvalResult {
    let mut res = EvalResult::default();
    if st.new_count == 0 {
        res.duration_ns = start.elapsed().as_nanos() as u64;
        return res;
    }
    st.new_count = 0;
    let mut timer = Timer::new(start, timeout_us);
    let mut attrs = Map::new();

    if run_processors(rs, st, true, &mut timer, &mut attrs).is_err() {
        res.timeout = true;
    }
    // Preprocessor timeouts do not stop rule evaluation (fresh check state, same deadline).
    timer.expired = false;
    let mut pending: Vec<Pending> = Vec::new();
    let r = (|| -> Result<(), Timeout> {
        eval_filters(rs, st, &mut timer)?;
        eval_rules(rs, st, &mut timer, &mut pending)?;
        Ok(())
    })();
    if r.is_err() {
        res.timeout = true;
    }
    if !pending.is_empty() {
        if let Some(&i) = rs.addr_index.get("waf.context.event") {
            if st.store[i].is_none() {
                insert_idx(st, i, Value::Bool(true));
                st.new_count = 0;
            }
        }
    }
    if !res.timeout && run_processors(rs, st, false, &mut timer, &mut attrs).is_err() {
        res.timeout = true;
    }
    serialize(rs, st, pending, &mut res, &mut attrs);
    res.derivatives = attrs;
    res.duration_ns = start.elapsed().as_nanos() as u64;
    res
}

// ------------------------------------------------------------------ conditions

struct CondEnv<'a> {
    store: &'a [Option<Slot>],
    target_gens: &'a mut [u64],
    excl: Option<&'a [(usize, Vec<KeyElem>)]>,
    /// Reused key-path buffer (empty between targets).
    path: Vec<Seg<'a>>,
    pf_cache: &'a mut crate::prefilter::Cache,
}

fn excl_for<'a>(
    excl: Option<&'a [(usize, Vec<KeyElem>)]>,
    addr: usize,
    buf: &'a mut Vec<Vec<KeyElem>>,
) -> Option<Excl<'a>> {
    let Some(ex) = excl else { return Some(&[]) };
    buf.clear();
    for (a, kp) in ex {
        if *a == addr {
            if kp.is_empty() {
                return None; // whole address excluded
            }
            buf.push(kp.clone());
        }
    }
    Some(buf.as_slice())
}

fn eval_condition<'a>(
    cond: &Condition,
    tbase: usize,
    env: &mut CondEnv<'a>,
    timer: &mut Timer,
) -> Result<Option<RuleMatch>, Timeout> {
    match cond {
        Condition::Scalar {
            matcher,
            targets,
            negated,
        } => {
            let MatcherRef::Static(m) = matcher else {
                return Ok(None);
            };
            let mut exbuf = Vec::new();
            let store: &'a [Option<Slot>] = env.store;
            let mut path = std::mem::take(&mut env.path);
            let pf_cache = &mut *env.pf_cache;
            for (i, t) in targets.iter().enumerate() {
                let Some(slot) = &store[t.addr] else {
                    continue;
                };
                if env.target_gens[tbase + i] == slot.generation {
                    continue;
                }
                env.target_gens[tbase + i] = slot.generation;
                timer.check()?;
                let Some(excl) = excl_for(env.excl, t.addr, &mut exbuf) else {
                    continue;
                };
                // Below a key path: when no string of the whole address can match (a superset
                // of the strings below the path), nothing is looked up. Not for negated
                // conditions, whose result depends on whether the path exists.
                if let Some(pf) = &t.prefilter {
                    if !*negated
                        && !t.key_path.is_empty()
                        && t.key_path.len() <= MAX_DEPTH
                        && matches!(&*slot.value, Value::Object(_) | Value::Array(_))
                        && !root_may_match(pf_cache, pf, &slot.value, t, timer)?
                    {
                        continue;
                    }
                }
                path.clear();
                let Some(root) = descend(&slot.value, &t.key_path, &mut path) else {
                    continue;
                };
                let mut found: Option<MatchParameter> = None;
                let wants_scalars = m.wants_scalars();
                let mut count = 0u32;
                let mut timed_out = false;
                // A container none of whose strings can match (prefilter union over all of
                // them, exclusions ignored: a superset) is not walked: same as no match.
                let skip = match &t.prefilter {
                    Some(pf) if matches!(root, Value::Object(_) | Value::Array(_)) => {
                        !root_may_match(pf_cache, pf, root, t, timer)?
                    }
                    _ => false,
                };
                if !skip {
                    walk(root, &mut path, t.source, excl, 0, &mut |leaf, p| {
                        count += 1;
                        let long = matches!(leaf, Leaf::Str(s) if s.len() > LONG_STRING);
                        if (long && timer.check_now().is_err())
                            || (count % 64 == 0 && timer.check().is_err())
                        {
                            timed_out = true;
                            return true;
                        }
                        let hit = match leaf {
                            Leaf::Str(s) => 'hit: {
                                let pf = t.prefilter.as_ref();
                                let known = pf.and_then(|pf| pf_cache.lookup(pf, s));
                                if known == Some(false) {
                                    break 'hit None;
                                }
                                let tv = transform::apply_chain(&t.transformers, s.as_bytes());
                                if let (Some(pf), None) = (pf, known) {
                                    if !pf_cache.scan(pf, s, &tv) {
                                        break 'hit None;
                                    }
                                }
                                m.match_bytes(&tv).map(|h| (bytes_to_string(tv), h))
                            }
                            Leaf::Scalar(v) if wants_scalars => {
                                m.match_scalar(v).map(|h| (scalar_string(v), h))
                            }
                            Leaf::Scalar(_) => None,
                        };
                        if let Some((value, h)) = hit {
                            found = Some(MatchParameter {
                                address: t.name.to_string(),
                                key_path: path_to_json(p),
                                value,
                                highlight: vec![h],
                            });
                            return true;
                        }
                        false
                    });
                }
                if timed_out {
                    return Err(Timeout);
                }
                if *negated {
                    if found.is_none() {
                        let value = match root {
                            Value::Object(_) | Value::Array(_) => String::new(),
                            v => scalar_string(v),
                        };
                        return Ok(Some(RuleMatch {
                            operator: format!("!{}", m.name()),
                            operator_value: m.operator_value(),
                            parameters: vec![Parameter::Scalar(MatchParameter {
                                address: t.name.to_string(),
                                key_path: path_to_json(&path),
                                value,
                                highlight: Vec::new(),
                            })],
                        }));
                    }
                } else if let Some(p) = found {
                    return Ok(Some(RuleMatch {
                        operator: m.name().to_string(),
                        operator_value: m.operator_value(),
                        parameters: vec![Parameter::Scalar(p)],
                    }));
                }
            }
            path.clear();
            env.path = path;
            Ok(None)
        }
        Condition::Exists { targets, negated } => {
            for (i, t) in targets.iter().enumerate() {
                let Some(slot) = &env.store[t.addr] else {
                    continue;
                };
                if env.target_gens[tbase + i] == slot.generation {
                    continue;
                }
                env.target_gens[tbase + i] = slot.generation;
                timer.check()?;
                if env
                    .excl
                    .is_some_and(|ex| ex.iter().any(|(a, kp)| *a == t.addr && kp.is_empty()))
                {
                    continue;
                }
                let mut path = Vec::new();
                let found = descend(&slot.value, &t.key_path, &mut path).is_some();
                if found != *negated {
                    if *negated && t.key_path.is_empty() {
                        continue;
                    }
                    let kp: Vec<Value> = t
                        .key_path
                        .iter()
                        .map(|k| match k {
                            KeyElem::Key(s) => Value::from(s.as_str()),
                            KeyElem::Index(i) => Value::from(*i),
                            KeyElem::Glob => Value::from("*"),
                        })
                        .collect();
                    return Ok(Some(RuleMatch {
                        operator: if *negated {
                            "!exists".into()
                        } else {
                            "exists".into()
                        },
                        operator_value: String::new(),
                        parameters: vec![Parameter::Scalar(MatchParameter {
                            address: t.name.to_string(),
                            key_path: kp,
                            value: String::new(),
                            highlight: Vec::new(),
                        })],
                    }));
                }
            }
            Ok(None)
        }
        Condition::Detector(spec, args) => eval_detector(spec, args, tbase, env, timer),
    }
}

/// Whether the prefiltered regex/phrase of `t` can match any string below the container
/// `root` (cached per request; computing it scans each string once for the whole group).
fn root_may_match(
    cache: &mut crate::prefilter::Cache,
    pf: &crate::prefilter::TargetPrefilter,
    root: &Value,
    t: &Target,
    timer: &mut Timer,
) -> Result<bool, Timeout> {
    let addr = root as *const Value as usize;
    let src = t.source as u8;
    if let Some(ok) = cache.root_lookup(pf, addr, src) {
        return Ok(ok);
    }
    let off = cache.root_begin(pf);
    let mut count = 0u32;
    let mut timed_out = false;
    union_walk(root, t.source, 0, &mut |s| {
        count += 1;
        if (s.len() > LONG_STRING && timer.check_now().is_err())
            || (count % 64 == 0 && timer.check().is_err())
        {
            timed_out = true;
            return true;
        }
        cache.root_add(pf, off, s, || {
            transform::apply_chain(&t.transformers, s.as_bytes())
        });
        false
    });
    if timed_out {
        return Err(Timeout);
    }
    Ok(cache.root_finish(pf, off, addr, src))
}

/// Every string `walk` could visit below `v` (keys and/or values per `src`), from this value or
/// from any value below it reached through a key path: no exclusions, and twice `walk`'s depth
/// limit, so the set is always a superset of what a walk visits. `f` returns true to stop.
fn union_walk(v: &Value, src: Source, depth: usize, f: &mut dyn FnMut(&str) -> bool) -> bool {
    match v {
        Value::Object(m) if depth < 2 * MAX_DEPTH => {
            for (k, child) in m {
                if (src != Source::Values && f(k)) || union_walk(child, src, depth + 1, f) {
                    return true;
                }
            }
            false
        }
        Value::Array(a) if depth < 2 * MAX_DEPTH => {
            a.iter().any(|child| union_walk(child, src, depth + 1, f))
        }
        Value::String(s) if src != Source::Keys => f(s),
        _ => false,
    }
}

fn bytes_to_string(c: Cow<'_, [u8]>) -> String {
    match c {
        Cow::Borrowed(b) => String::from_utf8_lossy(b).into_owned(),
        Cow::Owned(v) => String::from_utf8(v)
            .unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned()),
    }
}

fn eval_detector(
    spec: &crate::detect::DetectorSpec,
    args: &[(String, Vec<Target>)],
    tbase: usize,
    env: &mut CondEnv<'_>,
    timer: &mut Timer,
) -> Result<Option<RuleMatch>, Timeout> {
    // Re-evaluate only when one of the arguments is new.
    let mut any_new = false;
    let mut slot_i = tbase;
    for (_, ts) in args {
        for t in ts {
            if let Some(s) = &env.store[t.addr] {
                if env.target_gens[slot_i] != s.generation {
                    any_new = true;
                    env.target_gens[slot_i] = s.generation;
                }
            }
            slot_i += 1;
        }
    }
    if !any_new {
        return Ok(None);
    }
    timer.check()?;
    let first = |name: &str| -> Option<(&Target, &Value)> {
        let (_, ts) = args.iter().find(|(n, _)| n == name)?;
        for t in ts {
            if let Some(s) = &env.store[t.addr] {
                let mut p = Vec::new();
                if let Some(v) = descend(&s.value, &t.key_path, &mut p) {
                    return Some((t, v));
                }
            }
        }
        None
    };
    let Some((rt, resource)) = first("resource") else {
        return Ok(None);
    };
    let db = first("db_type").and_then(|(_, v)| v.as_str().map(str::to_string));
    let Some(prep) = spec.prepare(resource, db.as_deref()) else {
        return Ok(None);
    };
    let resource_str = match resource {
        Value::String(s) => s.clone(),
        Value::Array(a) => a.iter().map(scalar_string).collect::<Vec<_>>().join(" "),
        other => scalar_string(other),
    };
    let mut hit: Option<(crate::detect::Found, MatchParameter)> = None;
    if let Some((_, ts)) = args.iter().find(|(n, _)| n == "params") {
        let mut exbuf = Vec::new();
        'outer: for t in ts {
            let Some(s) = &env.store[t.addr] else {
                continue;
            };
            let Some(excl) = excl_for(env.excl, t.addr, &mut exbuf) else {
                continue;
            };
            let mut path = Vec::new();
            let Some(root) = descend(&s.value, &t.key_path, &mut path) else {
                continue;
            };
            let mut count = 0u32;
            let mut timed_out = false;
            walk(root, &mut path, Source::Both, excl, 0, &mut |leaf, p| {
                count += 1;
                if count % 64 == 0 && timer.check().is_err() {
                    timed_out = true;
                    return true;
                }
                let Leaf::Str(param) = leaf else { return false };
                if let Some(f) = spec.check(&prep, param) {
                    hit = Some((
                        f,
                        MatchParameter {
                            address: t.name.to_string(),
                            key_path: path_to_json(p),
                            value: param.to_string(),
                            highlight: Vec::new(),
                        },
                    ));
                    return true;
                }
                false
            });
            if timed_out {
                return Err(Timeout);
            }
            if hit.is_some() {
                break 'outer;
            }
        }
    }
    let (found, param) = match hit {
        Some((f, p)) => (f, Some(p)),
        None => match spec.check_without_param(&prep) {
            Some(f) => (f, None),
            None => return Ok(None),
        },
    };
    let mut argsm = BTreeMap::new();
    argsm.insert(
        "resource".to_string(),
        ArgumentMatch {
            address: rt.name.to_string(),
            key_path: Vec::new(),
            value: found.resource_value.clone().unwrap_or(resource_str),
        },
    );
    if let Some(p) = param {
        argsm.insert(
            "params".to_string(),
            ArgumentMatch {
                address: p.address,
                key_path: p.key_path,
                value: p.value,
            },
        );
    }
    if let Some((t, v)) = first("db_type") {
        argsm.insert(
            "db_type".to_string(),
            ArgumentMatch {
                address: t.name.to_string(),
                key_path: Vec::new(),
                value: scalar_string(v),
            },
        );
    }
    Ok(Some(RuleMatch {
        operator: spec.name().to_string(),
        operator_value: String::new(),
        parameters: vec![Parameter::Structured {
            args: argsm,
            highlight: vec![found.highlight],
        }],
    }))
}

/// Evaluate a list of conditions (AND) with the per-condition cache; returns the matches when
/// all conditions hold. Takes the state's fields separately so callers can borrow them
/// disjointly from the rest of the state.
#[allow(clippy::too_many_arguments)]
fn eval_conditions(
    conds: &[Condition],
    tbase: usize,
    cbase: usize,
    st_store: &[Option<Slot>],
    target_gens: &mut [u64],
    cond_cache: &mut [Option<Arc<RuleMatch>>],
    excl: Option<&[(usize, Vec<KeyElem>)]>,
    path_buf: &mut Vec<Seg<'static>>,
    pf_cache: &mut crate::prefilter::Cache,
    timer: &mut Timer,
) -> Result<bool, Timeout> {
    let mut toff = tbase;
    let mut env = CondEnv {
        store: st_store,
        target_gens,
        excl,
        path: recycle_path(std::mem::take(path_buf)),
        pf_cache,
    };
    let mut all = true;
    for (ci, c) in conds.iter().enumerate() {
        let n = c.n_targets();
        if cond_cache[cbase + ci].is_none() {
            match eval_condition(c, toff, &mut env, timer)? {
                Some(m) => cond_cache[cbase + ci] = Some(Arc::new(m)),
                None => {
                    all = false;
                    break;
                }
            }
        }
        toff += n;
    }
    *path_buf = recycle_path(env.path);
    Ok(all)
}

// ------------------------------------------------------------------ filters & rules

fn eval_filters(rs: &Ruleset, st: &mut State, timer: &mut Timer) -> Result<(), Timeout> {
    for (fi, f) in rs.rule_filters.iter().enumerate() {
        if st.filter_done[fi] {
            continue;
        }
        timer.check()?;
        let ok = eval_conditions(
            &f.conditions,
            f.target_base,
            f.cond_base,
            &st.store,
            &mut st.target_gens,
            &mut st.cond_cache,
            None,
            &mut st.path_buf,
            &mut st.pf_cache,
            timer,
        )?;
        if ok {
            st.filter_done[fi] = true;
            for r in &f.rules {
                let e = st.rule_excl.entry(*r).or_insert_with(|| f.mode.clone());
                let rank = |m: &FilterMode| match m {
                    FilterMode::Bypass => 3,
                    FilterMode::Custom(_) => 2,
                    FilterMode::Monitor => 1,
                };
                if rank(&f.mode) > rank(e) {
                    *e = f.mode.clone();
                }
            }
        }
    }
    for f in &rs.input_filters {
        timer.check()?;
        let ok = eval_conditions(
            &f.conditions,
            f.target_base,
            f.cond_base,
            &st.store,
            &mut st.target_gens,
            &mut st.cond_cache,
            None,
            &mut st.path_buf,
            &mut st.pf_cache,
            timer,
        )?;
        if !ok {
            continue;
        }
        let Some(inputs) = &f.inputs else { continue };
        for r in &f.rules {
            let list = st.input_excl.entry(*r).or_default();
            for t in inputs {
                let e = (t.addr, t.key_path.clone());
                if !list.contains(&e) {
                    list.push(e);
                }
            }
        }
    }
    Ok(())
}

/// `seen`: when the previous pass over the rules was complete, the store generation it saw.
/// A rule none of whose addresses has a newer value is not visited: every target it has was
/// inspected at its current generation (or its conditions stopped before them on values
/// that have not changed either), so visiting it would find nothing new. This is what keeps
/// the response-phase and RASP evaluations from walking every request rule again.
fn eval_rule(
    rs: &Ruleset,
    st: &mut State,
    ri: usize,
    timer: &mut Timer,
    seen: Option<u64>,
) -> Result<Option<Pending>, Timeout> {
    let r: &Rule = &rs.rules[ri];
    if st.rule_done[ri] || !r.enabled {
        return Ok(None);
    }
    if let Some(g) = seen {
        let store = &st.store;
        let fresh = rs.rule_addrs[ri]
            .iter()
            .any(|&a| store[a].as_ref().is_some_and(|s| s.generation > g));
        if !fresh {
            return Ok(None);
        }
    }
    let mut action_override = None;
    match st.rule_excl.get(&ri) {
        Some(FilterMode::Bypass) => return Ok(None),
        Some(FilterMode::Monitor) => action_override = Some("monitor".to_string()),
        Some(FilterMode::Custom(a)) => action_override = Some(a.clone()),
        None => {}
    }
    timer.check()?;
    let excl = st.input_excl.get(&ri).map(Vec::as_slice);
    let ok = eval_conditions(
        &r.conditions,
        r.target_base,
        r.cond_base,
        &st.store,
        &mut st.target_gens,
        &mut st.cond_cache,
        excl,
        &mut st.path_buf,
        &mut st.pf_cache,
        timer,
    )?;
    if !ok {
        return Ok(None);
    }
    st.rule_done[ri] = true;
    let matches = (0..r.conditions.len())
        .filter_map(|i| st.cond_cache[r.cond_base + i].as_deref().cloned())
        .collect();
    Ok(Some(Pending {
        rule: ri,
        matches,
        action_override,
    }))
}

fn effective_verdict(rs: &Ruleset, r: &Rule, ov: &Option<String>) -> Verdict {
    match ov.as_deref() {
        None => r.verdict,
        Some("monitor") => Verdict::Monitor,
        Some(a) => {
            if rs
                .actions
                .get(a)
                .is_some_and(|d| d.kind == "block_request" || d.kind == "redirect_request")
            {
                Verdict::Block
            } else {
                Verdict::Monitor
            }
        }
    }
}

fn eval_rules(
    rs: &Ruleset,
    st: &mut State,
    timer: &mut Timer,
    out: &mut Vec<Pending>,
) -> Result<(), Timeout> {
    let mut never = Timer {
        deadline: None,
        count: 0,
        expired: false,
    };
    // Assume an early exit until the pass completes (timeouts unwind through `?`).
    let seen = if st.rules_partial {
        None
    } else {
        Some(st.rules_seen_gen)
    };
    st.rules_partial = true;
    let gen_at_start = st.generation;
    let r = eval_modules(rs, st, timer, &mut never, seen, out);
    if let Ok(true) = r {
        st.rules_partial = false;
        st.rules_seen_gen = gen_at_start;
    }
    r.map(|_| ())
}

/// The passes of [`eval_rules`]; `Ok(true)` when every module was visited to its end.
fn eval_modules(
    rs: &Ruleset,
    st: &mut State,
    timer: &mut Timer,
    never: &mut Timer,
    seen: Option<u64>,
    out: &mut Vec<Pending>,
) -> Result<bool, Timeout> {
    for m in &rs.modules {
        let t: &mut Timer = if m.expiring { &mut *timer } else { &mut *never };
        if m.collections.is_empty() {
            let mut blocked = false;
            for ri in m.start..m.end {
                if let Some(p) = eval_rule(rs, st, ri, t, seen)? {
                    let v = effective_verdict(rs, &rs.rules[ri], &p.action_override);
                    out.push(p);
                    if v == Verdict::Block {
                        blocked = true;
                        break;
                    }
                }
            }
            if blocked {
                return Ok(false);
            }
        } else {
            for &(cid, cverdict, s, e) in &m.collections {
                if st.coll_verdict[cid] >= cverdict {
                    continue;
                }
                for ri in s..e {
                    if let Some(p) = eval_rule(rs, st, ri, t, seen)? {
                        let v = effective_verdict(rs, &rs.rules[ri], &p.action_override);
                        if v > st.coll_verdict[cid] {
                            st.coll_verdict[cid] = v;
                        }
                        out.push(p);
                        if v == Verdict::Block {
                            return Ok(false);
                        }
                        break;
                    }
                }
            }
        }
    }
    Ok(true)
}

// ------------------------------------------------------------------ processors

fn run_processors(
    rs: &Ruleset,
    st: &mut State,
    pre: bool,
    timer: &mut Timer,
    attrs: &mut Map<String, Value>,
) -> Result<(), Timeout> {
    let list = if pre {
        &rs.preprocessors
    } else {
        &rs.postprocessors
    };
    for (pi, p) in list.iter().enumerate() {
        timer.check()?;
        let ok = eval_conditions(
            &p.conditions,
            p.target_base,
            p.cond_base,
            &st.store,
            &mut st.target_gens,
            &mut st.cond_cache,
            None,
            &mut st.path_buf,
            &mut st.pf_cache,
            timer,
        )?;
        if !ok {
            continue;
        }
        for (mi, (args, out_name, out_idx)) in p.mappings.iter().enumerate() {
            // Regenerate only when one of the inputs changed since the last generation.
            let newest = args
                .iter()
                .flat_map(|(_, ts)| ts.iter())
                .filter_map(|t| st.store[t.addr].as_ref().map(|x| x.generation))
                .max()
                .unwrap_or(0);
            if newest == 0
                || st
                    .proc_gen
                    .get(&(pre, pi, mi))
                    .is_some_and(|g| *g >= newest)
            {
                continue;
            }
            st.proc_gen.insert((pre, pi, mi), newest);
            // Arguments are borrowed from the store (no copy of the request's values).
            let mut resolved: Vec<(&str, Option<&Value>)> = Vec::new();
            for (name, ts) in args {
                let mut v = None;
                for t in ts {
                    if let Some(s) = &st.store[t.addr] {
                        let mut path = Vec::new();
                        if let Some(x) = descend(&s.value, &t.key_path, &mut path) {
                            v = Some(x);
                            break;
                        }
                    }
                }
                resolved.push((name.as_str(), v));
            }
            let Some(val) = crate::processors::generate(
                &p.spec.generator,
                &resolved,
                &p.scanners,
                &st_ctx_flags(rs, st),
            ) else {
                continue;
            };
            if p.spec.output {
                attrs.insert(out_name.to_string(), val.clone());
            }
            if p.spec.evaluate {
                insert_idx(st, *out_idx, val);
            }
        }
    }
    Ok(())
}

fn st_ctx_flags(rs: &Ruleset, st: &State) -> Option<Arc<Value>> {
    let i = *rs.addr_index.get("waf.context.processor")?;
    st.store[i].as_ref().map(|s| Arc::clone(&s.value))
}

// ------------------------------------------------------------------ results

fn new_id() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static C: AtomicU64 = AtomicU64::new(1);
    let n = C.fetch_add(1, Ordering::Relaxed);
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    let a = t ^ n.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    let b = n.rotate_left(17) ^ t.wrapping_mul(0xBF58_476D_1CE4_E5B9);
    format!(
        "{:08x}-{:04x}-4{:03x}-{:04x}-{:012x}",
        (a >> 32) as u32,
        (a >> 16) as u16,
        (a & 0xfff) as u16,
        ((b >> 48) as u16 & 0x3fff) | 0x8000,
        b & 0xffff_ffff_ffff
    )
}

fn obfuscate(rs: &Ruleset, p: &mut MatchParameter) {
    let ob = &rs.obfuscator;
    let sensitive_key = p
        .key_path
        .iter()
        .any(|k| k.as_str().is_some_and(|s| ob.key_is_sensitive(s)));
    if sensitive_key || ob.value_is_sensitive(&p.value) {
        p.value = REDACTED.to_string();
        for h in &mut p.highlight {
            *h = REDACTED.to_string();
        }
    }
}

fn serialize(
    rs: &Ruleset,
    st: &State,
    pending: Vec<Pending>,
    res: &mut EvalResult,
    attrs: &mut Map<String, Value>,
) {
    let mut have_block = false;
    let mut kinds: Vec<String> = Vec::new();
    for p in pending {
        let r = &rs.rules[p.rule];
        if r.keep {
            res.keep = true;
        }
        for (k, a) in &r.attributes {
            match a {
                AttrSrc::Value(v) => {
                    attrs.insert(k.clone(), v.clone());
                }
                AttrSrc::Address { target } => {
                    if let Some(s) = &st.store[target.addr] {
                        let mut path = Vec::new();
                        if let Some(v) = descend(&s.value, &target.key_path, &mut path) {
                            if !v.is_object() && !v.is_array() {
                                attrs.insert(k.clone(), v.clone());
                            }
                        }
                    }
                }
            }
        }
        let on_match: Vec<String> = match &p.action_override {
            Some(a) => vec![a.clone()],
            None => r.on_match.clone(),
        };
        let mut stack_id = None;
        let mut security_response_id = None;
        for a in &on_match {
            let Some(def) = rs.actions.get(a) else {
                continue;
            };
            let blocking = def.kind == "block_request" || def.kind == "redirect_request";
            if blocking && have_block {
                continue;
            }
            if kinds.contains(&def.kind) && !blocking {
                continue;
            }
            let mut params = def.parameters.clone();
            if def.kind == "generate_stack" {
                let id = new_id();
                params.insert("stack_id".into(), Value::from(id.clone()));
                stack_id = Some(id);
            }
            if blocking {
                have_block = true;
                let id = new_id();
                params.insert("security_response_id".into(), Value::from(id.clone()));
                security_response_id = Some(id);
            }
            kinds.push(def.kind.clone());
            res.actions.push(Action {
                kind: def.kind.clone(),
                parameters: params,
            });
        }
        if !r.event {
            continue;
        }
        let mut matches = p.matches;
        for m in &mut matches {
            for prm in &mut m.parameters {
                match prm {
                    Parameter::Scalar(sp) => obfuscate(rs, sp),
                    Parameter::Structured { args, highlight } => {
                        let ob = &rs.obfuscator;
                        let redact = args.values().any(|a| ob.value_is_sensitive(&a.value));
                        if redact {
                            for a in args.values_mut() {
                                a.value = REDACTED.to_string();
                            }
                            for h in highlight.iter_mut() {
                                *h = REDACTED.to_string();
                            }
                        }
                    }
                }
            }
        }
        res.events.push(Event {
            rule: RuleRef {
                id: r.id.clone(),
                name: r.name.clone(),
                on_match,
                tags: r.tags.clone(),
            },
            rule_matches: matches,
            stack_id,
            security_response_id,
        });
    }
}
