//! Compiled ruleset and the path-based configuration [`Builder`].
//!
//! Configurations are added/updated/removed under paths (like libddwaf's builder, e.g.
//! `ASM_DD/default` for the base rules and remote-config paths for overrides and data); `build`
//! merges all of them into an immutable `Arc<Ruleset>`. Callers swap that `Arc` in atomically
//! (see [`SharedRuleset`]) while contexts created from the previous one keep evaluating.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, RwLock};

use serde_json::{Map, Value};

use crate::config::{
    self, AttrSrc, Condition, ConfigSpec, DataSpec, Diagnostics, FilterMode, FilterSpec, LoadError,
    MatcherRef, ProcessorSpec, RuleSelector, RuleSource, RuleSpec, ScannerSpec, Target,
};
use crate::context::Context;
use crate::matcher::{DataEntries, Matcher};
use crate::obfuscator::Obfuscator;

/// Module evaluation order (libddwaf `module_category`).
pub(crate) const MODULES: [&str; 7] = [
    "network-acl",
    "authentication-acl",
    "custom-acl",
    "configuration",
    "business-logic",
    "rasp",
    "waf",
];

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Verdict {
    None = 0,
    Monitor = 1,
    Block = 2,
}

#[derive(Debug)]
pub(crate) struct Rule {
    pub(crate) id: String,
    pub(crate) name: String,
    pub(crate) tags: BTreeMap<String, String>,
    pub(crate) conditions: Vec<Condition>,
    /// Offset of this rule's first target slot in the context's per-target cache.
    pub(crate) target_base: usize,
    /// Offset of this rule's first condition slot in the context's condition cache.
    pub(crate) cond_base: usize,
    pub(crate) on_match: Vec<String>,
    pub(crate) enabled: bool,
    pub(crate) verdict: Verdict,
    pub(crate) event: bool,
    pub(crate) keep: bool,
    pub(crate) attributes: Vec<(String, AttrSrc)>,
}

#[derive(Debug)]
pub(crate) struct Module {
    pub(crate) start: usize,
    pub(crate) end: usize,
    pub(crate) expiring: bool,
    /// (collection key id, verdict, start, end); empty = evaluate all rules in order.
    pub(crate) collections: Vec<(usize, Verdict, usize, usize)>,
}

#[derive(Debug)]
pub(crate) struct Filter {
    /// Rule indexes this filter applies to.
    pub(crate) rules: Vec<usize>,
    pub(crate) conditions: Vec<Condition>,
    pub(crate) target_base: usize,
    pub(crate) cond_base: usize,
    pub(crate) inputs: Option<Vec<Target>>,
    pub(crate) mode: FilterMode,
}

#[derive(Debug)]
pub(crate) struct Processor {
    pub(crate) spec: Arc<ProcessorSpec>,
    pub(crate) conditions: Vec<Condition>,
    pub(crate) mappings: Vec<config::Mapping>,
    pub(crate) target_base: usize,
    pub(crate) cond_base: usize,
    pub(crate) scanners: Vec<Arc<ScannerSpec>>,
}

#[derive(Debug, Clone)]
pub(crate) struct ActionDef {
    pub(crate) kind: String,
    pub(crate) parameters: Map<String, Value>,
}

/// An immutable, compiled ruleset. Share it with `Arc`; create one [`Context`] per request.
#[derive(Debug)]
pub struct Ruleset {
    pub(crate) addresses: Vec<Arc<str>>,
    pub(crate) addr_index: HashMap<Arc<str>, usize>,
    pub(crate) rules: Vec<Rule>,
    pub(crate) modules: Vec<Module>,
    pub(crate) n_collections: usize,
    pub(crate) rule_filters: Vec<Filter>,
    pub(crate) input_filters: Vec<Filter>,
    pub(crate) preprocessors: Vec<Processor>,
    pub(crate) postprocessors: Vec<Processor>,
    pub(crate) actions: HashMap<String, ActionDef>,
    pub(crate) obfuscator: Obfuscator,
    pub(crate) n_target_slots: usize,
    pub(crate) n_cond_slots: usize,
    pub(crate) version: Option<String>,
    /// Per rule, the addresses (indexes) any of its conditions reads: a rule none of whose
    /// addresses got a value since the last complete pass cannot change its result and is
    /// not visited (see `context::eval_rule`).
    pub(crate) rule_addrs: Vec<Box<[usize]>>,
}

impl Ruleset {
    /// Parse one configuration (format 2.x) and build it. Items that fail are reported in the
    /// returned diagnostics; only a configuration that cannot be used at all is an error.
    pub fn from_json(json: &str) -> Result<(Ruleset, Diagnostics), LoadError> {
        let mut b = Builder::new();
        let diags = b.add_or_update("default", json)?;
        let rs = b.build_owned();
        Ok((rs, diags))
    }

    /// Create an evaluation context (one per request).
    pub fn context(self: &Arc<Self>) -> Context {
        Context::new(Arc::clone(self))
    }

    /// Addresses referenced by rules, filters and processors.
    pub fn known_addresses(&self) -> Vec<String> {
        self.addresses.iter().map(|a| a.to_string()).collect()
    }

    /// Ids of the rules that are loaded (enabled or not).
    pub fn rule_ids(&self) -> Vec<String> {
        self.rules.iter().map(|r| r.id.clone()).collect()
    }

    /// `metadata.rules_version` of the configuration(s), if given.
    pub fn rules_version(&self) -> Option<&str> {
        self.version.as_deref()
    }
}

/// Holds configurations by path and merges them into a [`Ruleset`].
#[derive(Debug, Default)]
pub struct Builder {
    configs: BTreeMap<String, (ConfigSpec, Option<String>)>,
}

impl Builder {
    pub fn new() -> Self {
        Builder::default()
    }

    /// Add or replace the configuration stored under `path`; returns its diagnostics.
    pub fn add_or_update(&mut self, path: &str, json: &str) -> Result<Diagnostics, LoadError> {
        let v: Value = serde_json::from_str(json).map_err(|e| LoadError::Json(e.to_string()))?;
        self.add_or_update_value(path, &v)
    }

    /// Same as [`Builder::add_or_update`] for an already parsed document.
    pub fn add_or_update_value(&mut self, path: &str, v: &Value) -> Result<Diagnostics, LoadError> {
        let (spec, diags) = config::parse_config(v)?;
        self.configs
            .insert(path.to_string(), (spec, diags.ruleset_version.clone()));
        Ok(diags)
    }

    /// Remove the configuration stored under `path`.
    pub fn remove(&mut self, path: &str) -> Result<(), LoadError> {
        self.configs
            .remove(path)
            .map(|_| ())
            .ok_or_else(|| LoadError::UnknownPath(path.to_string()))
    }

    /// Number of configurations held.
    pub fn config_count(&self) -> usize {
        self.configs.len()
    }

    /// Merge all configurations into a new ruleset.
    pub fn build(&self) -> Arc<Ruleset> {
        Arc::new(self.build_owned())
    }

    pub(crate) fn build_owned(&self) -> Ruleset {
        Compiler::default().compile(self.configs.values())
    }
}

/// A ruleset slot that can be replaced while other threads keep evaluating with the old one.
#[derive(Debug)]
pub struct SharedRuleset {
    inner: RwLock<Arc<Ruleset>>,
}

impl SharedRuleset {
    pub fn new(rs: Arc<Ruleset>) -> Self {
        SharedRuleset {
            inner: RwLock::new(rs),
        }
    }

    /// Current ruleset (cheap `Arc` clone; the lock is held only for the clone).
    pub fn load(&self) -> Arc<Ruleset> {
        match self.inner.read() {
            Ok(g) => Arc::clone(&g),
            Err(p) => Arc::clone(&p.into_inner()),
        }
    }

    /// Swap in a new ruleset; returns the previous one.
    pub fn store(&self, rs: Arc<Ruleset>) -> Arc<Ruleset> {
        match self.inner.write() {
            Ok(mut g) => std::mem::replace(&mut *g, rs),
            Err(p) => std::mem::replace(&mut *p.into_inner(), rs),
        }
    }
}

#[derive(Default)]
struct Compiler {
    addresses: Vec<Arc<str>>,
    addr_index: HashMap<Arc<str>, usize>,
    target_slots: usize,
    cond_slots: usize,
}

fn merge_data(all: &[&DataSpec]) -> HashMap<String, (String, DataEntries)> {
    let mut out: HashMap<String, (String, DataEntries)> = HashMap::new();
    for d in all {
        let e = out
            .entry(d.id.clone())
            .or_insert_with(|| (d.kind.clone(), Vec::new()));
        e.1.extend(d.entries.iter().cloned());
    }
    out
}

impl Compiler {
    fn intern(&mut self, name: &Arc<str>) -> usize {
        if let Some(i) = self.addr_index.get(name) {
            return *i;
        }
        let i = self.addresses.len();
        self.addresses.push(Arc::clone(name));
        self.addr_index.insert(Arc::clone(name), i);
        i
    }

    fn resolve_target(&mut self, t: &Target) -> Target {
        let mut t = t.clone();
        t.addr = self.intern(&t.name);
        t
    }

    /// Resolve addresses and data references; returns None when a data id is unknown and the
    /// condition can therefore never match (libddwaf keeps such rules but they never fire).
    fn resolve_conditions(
        &mut self,
        conds: &[Condition],
        data: &HashMap<String, Arc<Matcher>>,
    ) -> (Vec<Condition>, usize, usize) {
        let tb = self.target_slots;
        let cb = self.cond_slots;
        let mut out = Vec::with_capacity(conds.len());
        for c in conds {
            let mut c = c.clone();
            for t in c.targets_mut() {
                t.addr = self.intern(&t.name);
                self.target_slots += 1;
            }
            if let Condition::Scalar { matcher, .. } = &mut c {
                if let MatcherRef::Data { id, op } = matcher {
                    let key = format!("{op}\u{0}{id}");
                    *matcher = MatcherRef::Static(data.get(&key).cloned().unwrap_or_else(|| {
                        Arc::new(if *op == "ip_match" {
                            Matcher::ip_from(&Vec::new())
                        } else {
                            Matcher::exact_from(&Vec::new())
                        })
                    }));
                }
            }
            self.cond_slots += 1;
            out.push(c);
        }
        (out, tb, cb)
    }

    fn compile<'a>(
        mut self,
        configs: impl Iterator<Item = &'a (ConfigSpec, Option<String>)> + Clone,
    ) -> Ruleset {
        // --- data
        let rd: Vec<&DataSpec> = configs
            .clone()
            .flat_map(|(c, _)| c.rules_data.iter())
            .collect();
        let ed: Vec<&DataSpec> = configs
            .clone()
            .flat_map(|(c, _)| c.exclusion_data.iter())
            .collect();
        let mut data: HashMap<String, Arc<Matcher>> = HashMap::new();
        for (id, (_kind, entries)) in merge_data(&rd).into_iter().chain(merge_data(&ed)) {
            data.insert(
                format!("exact_match\u{0}{id}"),
                Arc::new(Matcher::exact_from(&entries)),
            );
            data.insert(
                format!("ip_match\u{0}{id}"),
                Arc::new(Matcher::ip_from(&entries)),
            );
        }

        // --- rules (base then user), with overrides applied to base rules
        let overrides: Vec<&config::OverrideSpec> = configs
            .clone()
            .flat_map(|(c, _)| c.overrides.iter())
            .collect();
        let mut specs: Vec<RuleSpec> = Vec::new();
        let mut seen = std::collections::HashSet::new();
        for (c, _) in configs.clone() {
            for r in c.base_rules.iter().chain(c.user_rules.iter()) {
                if seen.insert(r.id.clone()) {
                    specs.push((**r).clone());
                }
            }
        }
        // Overrides by tags first, then by id (id overrides take precedence).
        for pass in 0..2 {
            for o in &overrides {
                for sel in &o.targets {
                    let by_id = matches!(sel, RuleSelector::Id(_));
                    if by_id != (pass == 1) {
                        continue;
                    }
                    for r in specs.iter_mut().filter(|r| r.source == RuleSource::Base) {
                        if sel.selects(r) {
                            if let Some(e) = o.enabled {
                                r.enabled = e;
                            }
                            if let Some(m) = &o.on_match {
                                r.on_match = m.clone();
                            }
                            for (k, v) in &o.tags {
                                r.tags.insert(k.clone(), v.clone());
                            }
                        }
                    }
                }
            }
        }

        // --- actions
        let mut actions = default_actions();
        for (c, _) in configs.clone() {
            for a in &c.actions {
                actions.insert(a.id.clone(), normalize_action(&a.kind, &a.parameters));
            }
        }
        let blocking = |r: &RuleSpec| {
            r.on_match.iter().any(|a| {
                actions
                    .get(a)
                    .is_some_and(|d| d.kind == "block_request" || d.kind == "redirect_request")
            })
        };

        // --- modules: sort per module like libddwaf (verdict, source precedence, type)
        let mut per_module: Vec<Vec<(RuleSpec, Verdict)>> =
            (0..MODULES.len()).map(|_| Vec::new()).collect();
        for r in specs {
            let m = r
                .tags
                .get("module")
                .and_then(|m| MODULES.iter().position(|x| x == m))
                .unwrap_or(MODULES.len() - 1);
            let v = if blocking(&r) {
                Verdict::Block
            } else {
                Verdict::Monitor
            };
            per_module[m].push((r, v));
        }
        let mut rules = Vec::new();
        let mut modules = Vec::new();
        let mut coll_ids: HashMap<String, usize> = HashMap::new();
        for (mi, mut list) in per_module.into_iter().enumerate() {
            let user_first = matches!(mi, 2..=4 | 6);
            let grouped = mi == 6;
            list.sort_by(|(a, av), (b, bv)| {
                bv.cmp(av)
                    .then_with(|| {
                        if user_first {
                            b.source.cmp(&a.source)
                        } else {
                            a.source.cmp(&b.source)
                        }
                    })
                    .then_with(|| {
                        if grouped {
                            a.tags.get("type").cmp(&b.tags.get("type"))
                        } else {
                            std::cmp::Ordering::Equal
                        }
                    })
                    .then_with(|| {
                        if grouped {
                            precedence(&a.id).cmp(&precedence(&b.id))
                        } else {
                            std::cmp::Ordering::Equal
                        }
                    })
            });
            let start = rules.len();
            let mut collections: Vec<(usize, Verdict, usize, usize)> = Vec::new();
            for (r, v) in list {
                let idx = rules.len();
                if grouped {
                    let key = r.tags.get("type").cloned().unwrap_or_default();
                    let n = coll_ids.len();
                    let cid = *coll_ids.entry(key).or_insert(n);
                    match collections.last_mut() {
                        Some(last) if last.0 == cid && last.1 == v => last.3 = idx + 1,
                        _ => collections.push((cid, v, idx, idx + 1)),
                    }
                }
                let (conditions, target_base, cond_base) =
                    self.resolve_conditions(&r.conditions, &data);
                let attributes = r
                    .attributes
                    .iter()
                    .map(|(k, a)| {
                        let a = match a {
                            AttrSrc::Address { target } => AttrSrc::Address {
                                target: self.resolve_target(target),
                            },
                            other => other.clone(),
                        };
                        (k.clone(), a)
                    })
                    .collect();
                rules.push(Rule {
                    id: r.id,
                    name: r.name,
                    tags: r.tags,
                    conditions,
                    target_base,
                    cond_base,
                    on_match: r.on_match,
                    enabled: r.enabled,
                    verdict: v,
                    event: r.event,
                    keep: r.keep,
                    attributes,
                });
            }
            modules.push(Module {
                start,
                end: rules.len(),
                expiring: mi >= 2,
                collections,
            });
        }

        // --- filters
        let filters: Vec<Arc<FilterSpec>> = configs
            .clone()
            .flat_map(|(c, _)| c.filters.iter().cloned())
            .collect();
        let mut rule_filters = Vec::new();
        let mut input_filters = Vec::new();
        for f in filters {
            let targets: Vec<usize> = if f.targets.is_empty() {
                (0..rules.len()).collect()
            } else {
                (0..rules.len())
                    .filter(|i| {
                        let r = &rules[*i];
                        f.targets.iter().any(|s| match s {
                            RuleSelector::Id(id) => &r.id == id,
                            RuleSelector::Tags(t) => {
                                t.iter().all(|(k, v)| r.tags.get(k) == Some(v))
                            }
                        })
                    })
                    .collect()
            };
            let (conditions, target_base, cond_base) =
                self.resolve_conditions(&f.conditions, &data);
            let inputs = f.inputs.as_ref().map(|ts| {
                ts.iter()
                    .map(|t| self.resolve_target(t))
                    .collect::<Vec<_>>()
            });
            let filt = Filter {
                rules: targets,
                conditions,
                target_base,
                cond_base,
                inputs,
                mode: f.mode.clone(),
            };
            if filt.inputs.is_some() {
                input_filters.push(filt);
            } else {
                rule_filters.push(filt);
            }
        }

        // --- processors and scanners
        let scanners: Vec<Arc<ScannerSpec>> = configs
            .clone()
            .flat_map(|(c, _)| c.scanners.iter().cloned())
            .collect();
        let mut preprocessors = Vec::new();
        let mut postprocessors = Vec::new();
        for p in configs
            .clone()
            .flat_map(|(c, _)| c.processors.iter().cloned())
        {
            let (conditions, target_base, cond_base) =
                self.resolve_conditions(&p.conditions, &data);
            let mappings = p
                .mappings
                .iter()
                .map(|(args, out, _)| {
                    let args = args
                        .iter()
                        .map(|(n, ts)| {
                            (
                                n.clone(),
                                ts.iter().map(|t| self.resolve_target(t)).collect(),
                            )
                        })
                        .collect();
                    let oi = self.intern(out);
                    (args, Arc::clone(out), oi)
                })
                .collect();
            let sel = |s: &ScannerSpec, list: &[RuleSelector]| {
                list.iter().any(|x| match x {
                    RuleSelector::Id(id) => &s.id == id,
                    RuleSelector::Tags(t) => t.iter().all(|(k, v)| s.tags.get(k) == Some(v)),
                })
            };
            let mut include = p.scanner_include.clone();
            let mut exclude = p.scanner_exclude.clone();
            for o in configs
                .clone()
                .flat_map(|(c, _)| c.processor_overrides.iter())
            {
                if o.targets.iter().any(|t| *t == p.id) {
                    include.extend(o.include.iter().cloned());
                    exclude.extend(o.exclude.iter().cloned());
                }
            }
            let sc: Vec<Arc<ScannerSpec>> = scanners
                .iter()
                .filter(|s| (include.is_empty() || sel(s, &include)) && !sel(s, &exclude))
                .cloned()
                .collect();
            let proc_ = Processor {
                spec: Arc::clone(&p),
                conditions,
                mappings,
                target_base,
                cond_base,
                scanners: sc,
            };
            if p.evaluate {
                preprocessors.push(proc_);
            } else {
                postprocessors.push(proc_);
            }
        }

        // --- obfuscator (last configuration that sets it wins)
        let mut ob = None;
        for (c, _) in configs.clone() {
            if let Some(o) = &c.obfuscator {
                ob = Some(o.clone());
            }
        }
        let obfuscator = match ob {
            Some((k, v)) => Obfuscator::new(k.as_deref(), v.as_deref()),
            None => Obfuscator::default_regexes(),
        };
        let version = configs.clone().filter_map(|(_, v)| v.clone()).last();
        // Addresses that the context publishes itself.
        for a in ["waf.context.event", "waf.context.processor"] {
            let a: Arc<str> = Arc::from(a);
            self.intern(&a);
        }

        crate::prefilter::attach(&mut rules);
        let rule_addrs = rules.iter().map(rule_addresses).collect();
        Ruleset {
            rule_addrs,
            n_collections: coll_ids.len(),
            addresses: self.addresses,
            addr_index: self.addr_index,
            rules,
            modules,
            rule_filters,
            input_filters,
            preprocessors,
            postprocessors,
            actions,
            obfuscator,
            n_target_slots: self.target_slots,
            n_cond_slots: self.cond_slots,
            version,
        }
    }
}

/// The addresses read by any condition of `r` (deduplicated).
fn rule_addresses(r: &Rule) -> Box<[usize]> {
    use crate::config::Condition;
    let mut out: Vec<usize> = Vec::new();
    for c in &r.conditions {
        let targets: Vec<&crate::config::Target> = match c {
            Condition::Scalar { targets, .. } | Condition::Exists { targets, .. } => {
                targets.iter().collect()
            }
            Condition::Detector(_, args) => args.iter().flat_map(|(_, t)| t.iter()).collect(),
        };
        out.extend(targets.iter().map(|t| t.addr));
    }
    out.sort_unstable();
    out.dedup();
    out.into_boxed_slice()
}

/// Order of rules inside a waf-module collection as libddwaf 2.1.0 evaluates them for the
/// Datadog ruleset 1.18.x. libddwaf's order there is an artefact of its containers and of an
/// unstable sort, not a documented rule; since only the first matching rule of a type is
/// reported, the order decides *which* rule id is reported (never whether a request is
/// flagged). These pairs were measured on the CRS corpus (see docs/adr/0002-waf-engine.md);
/// rules not listed keep the file order after the listed ones of their type.
const LIBDDWAF_PRECEDENCE: &[&str] = &[
    // command_injection
    "dog-932-100",
    "crs-932-171",
    "crs-932-160",
    // java_code_injection
    "crs-944-130",
    "crs-944-110",
    "crs-944-100",
    // js_code_injection
    "sqr-000-002",
    "crs-934-101",
    "crs-934-100",
    // lfi
    "crs-930-100",
    "crs-930-110",
    "crs-930-120",
    // php_code_injection
    "crs-933-130",
    "crs-933-150",
    "crs-933-170",
    "crs-933-160",
    // sql_injection
    "crs-942-160",
    "crs-942-100",
    "crs-942-280",
    "crs-942-360",
    "crs-942-500",
    // ssrf
    "sqr-000-013",
    "sqr-000-001",
    "sqr-000-012",
    // xss
    "crs-941-210",
    "crs-941-170",
    "crs-941-120",
    "crs-941-350",
    "crs-941-180",
    "crs-941-390",
    "crs-941-140",
    "crs-941-230",
    "crs-941-300",
    "crs-941-110",
    "crs-941-290",
];

fn precedence(id: &str) -> usize {
    LIBDDWAF_PRECEDENCE
        .iter()
        .position(|x| *x == id)
        .unwrap_or(usize::MAX)
}

fn obj(pairs: &[(&str, Value)]) -> Map<String, Value> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.clone()))
        .collect()
}

fn default_actions() -> HashMap<String, ActionDef> {
    let mut m = HashMap::new();
    m.insert(
        "block".to_string(),
        ActionDef {
            kind: "block_request".into(),
            parameters: obj(&[
                ("status_code", Value::from(403)),
                ("type", Value::from("auto")),
                ("grpc_status_code", Value::from(10)),
            ]),
        },
    );
    m.insert(
        "stack_trace".to_string(),
        ActionDef {
            kind: "generate_stack".into(),
            parameters: Map::new(),
        },
    );
    m.insert(
        "extract_schema".to_string(),
        ActionDef {
            kind: "generate_schema".into(),
            parameters: Map::new(),
        },
    );
    m.insert(
        "monitor".to_string(),
        ActionDef {
            kind: "monitor".into(),
            parameters: Map::new(),
        },
    );
    m
}

fn normalize_action(kind: &str, params: &Map<String, Value>) -> ActionDef {
    if kind == "redirect_request" {
        let loc = params.get("location").and_then(Value::as_str).unwrap_or("");
        let code = params
            .get("status_code")
            .and_then(|v| {
                v.as_u64()
                    .or_else(|| v.as_str().and_then(|s| s.parse().ok()))
            })
            .unwrap_or(303);
        if loc.is_empty() {
            // Invalid redirect: downgraded to a block.
            return ActionDef {
                kind: "block_request".into(),
                parameters: obj(&[
                    ("status_code", Value::from(403)),
                    ("type", Value::from("auto")),
                    ("grpc_status_code", Value::from(10)),
                ]),
            };
        }
        let code = if (300..400).contains(&code) {
            code
        } else {
            303
        };
        return ActionDef {
            kind: kind.into(),
            parameters: obj(&[
                ("status_code", Value::from(code)),
                ("location", Value::from(loc)),
            ]),
        };
    }
    ActionDef {
        kind: kind.to_string(),
        parameters: params.clone(),
    }
}
