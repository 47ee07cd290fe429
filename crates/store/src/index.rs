//! The series index: `(org, metric, tags, host, distribution?) → series id`, with an inverted
//! index (`tag → sorted ids`) per org and metric for tag filters.
//!
//! Why per org and per metric: every query names one org and one metric, so candidate sets start
//! small and one tenant's postings are never even looked at for another tenant. The index lives
//! in memory; it is persisted through WAL entries and encrypted index files (see `lib.rs`).
//!
//! Ids are ours, so id-keyed maps use FxHash; maps keyed by tenant-supplied strings keep
//! SipHash (no crafted-collision slowdowns).

use rustc_hash::FxHashMap;
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use warden_model::MetricKind;

/// Everything known about one series.
#[derive(Clone, Debug, PartialEq)]
pub struct SeriesMeta {
    /// Store-wide unique id (never reused).
    pub id: u64,
    /// Owning organisation.
    pub org: u64,
    pub name: String,
    /// Sorted `key:value` (or bare `key`) tags.
    pub tags: Vec<String>,
    /// Empty when the series has no host.
    pub host: String,
    /// Gauge / count / rate (distributions: the kind they were declared with, `Gauge`).
    pub kind: MetricKind,
    /// Seconds per point as sent by the client (0 = unknown).
    pub interval: i64,
    pub unit: Option<String>,
    /// True for distribution (sketch) series.
    pub distribution: bool,
}

/// A tag filter, evaluated against the inverted index. `host` is matched as the tag
/// `host:<host>`.
#[derive(Clone, Debug, PartialEq)]
pub enum TagFilter {
    /// Every series of the metric (`{*}`).
    All,
    /// `key:value` exactly.
    Eq(String, String),
    /// The tag key is present with any value, or as a bare tag (`{mytag}`).
    Has(String),
    /// `key:pattern` where `*` matches any run of characters (`web-*`, `*-canary`, `*east*`).
    Wildcard(String, String),
    Not(Box<TagFilter>),
    And(Vec<TagFilter>),
    Or(Vec<TagFilter>),
}

impl TagFilter {
    /// Parses one Datadog filter term: `key:value`, `key:val*`, `!key:value`, `-key:value`,
    /// a bare `key`, or `*`.
    pub fn term(s: &str) -> TagFilter {
        let s = s.trim();
        if s == "*" || s.is_empty() {
            return TagFilter::All;
        }
        if let Some(rest) = s.strip_prefix('!').or_else(|| s.strip_prefix('-')) {
            return TagFilter::Not(Box::new(TagFilter::term(rest)));
        }
        match s.split_once(':') {
            Some((k, v)) if v.contains('*') => TagFilter::Wildcard(k.to_string(), v.to_string()),
            Some((k, v)) => TagFilter::Eq(k.to_string(), v.to_string()),
            None => TagFilter::Has(s.to_string()),
        }
    }

    /// `term(a) AND term(b) AND ...` for a comma-separated filter such as `env:prod,!host:a`.
    pub fn all_of(terms: &str) -> TagFilter {
        let parts: Vec<TagFilter> = terms
            .split(',')
            .filter(|t| !t.trim().is_empty())
            .map(TagFilter::term)
            .collect();
        match parts.len() {
            0 => TagFilter::All,
            1 => parts.into_iter().next().unwrap_or(TagFilter::All),
            _ => TagFilter::And(parts),
        }
    }
}

/// `*`-only glob match (no other metacharacters), linear time with backtracking to the last star.
pub(crate) fn glob(pattern: &str, s: &str) -> bool {
    let (p, t) = (pattern.as_bytes(), s.as_bytes());
    let (mut pi, mut ti) = (0, 0);
    let (mut star, mut mark) = (None, 0);
    while ti < t.len() {
        if pi < p.len() && p[pi] == b'*' {
            star = Some(pi);
            mark = ti;
            pi += 1;
        } else if pi < p.len() && p[pi] == t[ti] {
            pi += 1;
            ti += 1;
        } else if let Some(sp) = star {
            pi = sp + 1;
            mark += 1;
            ti = mark;
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|&c| c == b'*')
}

fn tag_key(tag: &str) -> &str {
    tag.split_once(':').map_or(tag, |(k, _)| k)
}

/// Per org and metric: ids plus postings.
#[derive(Default)]
struct MetricIndex {
    ids: Vec<u64>,
    /// Full tag (`k:v`, `k`, `host:h`) → sorted ids.
    postings: HashMap<String, Vec<u64>>,
    /// Tag key → full tags with that key (for presence and wildcard terms).
    keys: HashMap<String, Vec<String>>,
}

fn insert_sorted(v: &mut Vec<u64>, id: u64) {
    match v.last() {
        Some(&last) if last < id => v.push(id),
        None => v.push(id),
        _ => {
            if let Err(i) = v.binary_search(&id) {
                v.insert(i, id);
            }
        }
    }
}

fn intersect(a: &[u64], b: &[u64]) -> Vec<u64> {
    let mut out = Vec::with_capacity(a.len().min(b.len()));
    let (mut i, mut j) = (0, 0);
    while i < a.len() && j < b.len() {
        match a[i].cmp(&b[j]) {
            std::cmp::Ordering::Less => i += 1,
            std::cmp::Ordering::Greater => j += 1,
            std::cmp::Ordering::Equal => {
                out.push(a[i]);
                i += 1;
                j += 1;
            }
        }
    }
    out
}

fn union(a: &[u64], b: &[u64]) -> Vec<u64> {
    let mut out = Vec::with_capacity(a.len() + b.len());
    let (mut i, mut j) = (0, 0);
    while i < a.len() || j < b.len() {
        if j >= b.len() || (i < a.len() && a[i] < b[j]) {
            out.push(a[i]);
            i += 1;
        } else if i >= a.len() || b[j] < a[i] {
            out.push(b[j]);
            j += 1;
        } else {
            out.push(a[i]);
            i += 1;
            j += 1;
        }
    }
    out
}

fn difference(a: &[u64], b: &[u64]) -> Vec<u64> {
    let mut out = Vec::with_capacity(a.len());
    let mut j = 0;
    for &x in a {
        while j < b.len() && b[j] < x {
            j += 1;
        }
        if j >= b.len() || b[j] != x {
            out.push(x);
        }
    }
    out
}

impl MetricIndex {
    fn add(&mut self, meta: &SeriesMeta) {
        insert_sorted(&mut self.ids, meta.id);
        let host_tag = (!meta.host.is_empty()).then(|| format!("host:{}", meta.host));
        for tag in meta.tags.iter().chain(host_tag.as_ref()) {
            let p = self.postings.entry(tag.clone()).or_insert_with(|| {
                self.keys
                    .entry(tag_key(tag).to_string())
                    .or_default()
                    .push(tag.clone());
                Vec::new()
            });
            insert_sorted(p, meta.id);
        }
    }

    fn union_of_key(&self, key: &str, pred: impl Fn(&str) -> bool) -> Vec<u64> {
        let mut acc: Vec<u64> = Vec::new();
        for tag in self.keys.get(key).into_iter().flatten() {
            let value = tag.split_once(':').map(|(_, v)| v);
            let matches = match value {
                Some(v) => pred(v),
                None => pred(""),
            };
            if matches && let Some(p) = self.postings.get(tag) {
                acc = union(&acc, p);
            }
        }
        acc
    }

    fn eval(&self, f: &TagFilter) -> Vec<u64> {
        match f {
            TagFilter::All => self.ids.clone(),
            TagFilter::Eq(k, v) => self
                .postings
                .get(&format!("{k}:{v}"))
                .cloned()
                .unwrap_or_default(),
            TagFilter::Has(k) => self.union_of_key(k, |_| true),
            TagFilter::Wildcard(k, pat) => self.union_of_key(k, |v| glob(pat, v)),
            TagFilter::Not(inner) => difference(&self.ids, &self.eval(inner)),
            TagFilter::And(fs) => {
                let mut it = fs.iter();
                let mut acc = match it.next() {
                    Some(f) => self.eval(f),
                    None => return self.ids.clone(),
                };
                for f in it {
                    if acc.is_empty() {
                        break;
                    }
                    acc = intersect(&acc, &self.eval(f));
                }
                acc
            }
            TagFilter::Or(fs) => fs
                .iter()
                .fold(Vec::new(), |acc, f| union(&acc, &self.eval(f))),
        }
    }
}

pub(crate) struct Entry {
    pub(crate) meta: Arc<SeriesMeta>,
    /// The series definition is in a durable WAL record or index file.
    pub(crate) durable: bool,
    key: u128,
}

/// What the append path needs to know about a series, stored inline in the key map so a
/// lookup is one hash-table probe (no pointer chasing into the metadata).
#[derive(Clone, Copy, Debug)]
pub(crate) struct KeyEntry {
    pub(crate) id: u64,
    pub(crate) durable: bool,
    /// Hash of kind, interval and unit: a change means the definition must be rewritten.
    pub(crate) attrs: u64,
}

/// Borrowed identity of a series within an org.
#[derive(Clone, Copy)]
pub(crate) struct SeriesKey<'a> {
    pub(crate) name: &'a str,
    pub(crate) tags: &'a [String],
    pub(crate) host: &'a str,
    pub(crate) distribution: bool,
}

/// The whole in-memory index.
#[derive(Default)]
pub(crate) struct Index {
    /// `(org, 128-bit keyed hash of the series key) → entry`. Two SipHash-1-3 instances with
    /// random keys: tenants cannot craft collisions, and an accidental one (p ≈ n²/2^129) is
    /// negligible, so the key strings are never compared on the append path.
    keys: FxHashMap<(u64, u128), KeyEntry>,
    hashers: (
        std::collections::hash_map::RandomState,
        std::collections::hash_map::RandomState,
    ),
    /// `org → metric → postings`. BTreeMap so metric listings come out sorted.
    metrics: FxHashMap<u64, BTreeMap<String, MetricIndex>>,
    pub(crate) series: FxHashMap<u64, Entry>,
    pub(crate) next_id: u64,
    /// Definitions made durable in the WAL but not yet written to an index file.
    pub(crate) dirty: Vec<u64>,
}

impl Index {
    pub(crate) fn key_hash(&self, k: &SeriesKey<'_>) -> u128 {
        use std::hash::BuildHasher;
        let parts = (k.distribution, k.name, k.host, k.tags);
        let a = self.hashers.0.hash_one(parts);
        let b = self.hashers.1.hash_one(parts);
        (u128::from(a) << 64) | u128::from(b)
    }

    pub(crate) fn attrs_hash(&self, kind: MetricKind, interval: i64, unit: &Option<String>) -> u64 {
        use std::hash::BuildHasher;
        self.hashers.0.hash_one((kind, interval, unit))
    }

    pub(crate) fn lookup(&self, org: u64, key: u128) -> Option<KeyEntry> {
        self.keys.get(&(org, key)).copied()
    }

    /// Marks a definition durable; true if it was not.
    pub(crate) fn mark_durable(&mut self, id: u64) -> bool {
        let Some(e) = self.series.get_mut(&id) else {
            return false;
        };
        if e.durable {
            return false;
        }
        e.durable = true;
        if let Some(k) = self.keys.get_mut(&(e.meta.org, e.key)) {
            k.durable = true;
        }
        true
    }

    /// Inserts or replaces a definition (replay and creation). Kind/interval/unit updates keep
    /// the id.
    /// `durable = false` on an existing series marks its (changed) definition as pending.
    pub(crate) fn put(&mut self, meta: SeriesMeta, durable: bool) {
        let id = meta.id;
        self.next_id = self.next_id.max(id + 1);
        let attrs = self.attrs_hash(meta.kind, meta.interval, &meta.unit);
        if let Some(e) = self.series.get_mut(&id) {
            e.meta = Arc::new(meta);
            e.durable = durable;
            if let Some(k) = self.keys.get_mut(&(e.meta.org, e.key)) {
                k.durable = durable;
                k.attrs = attrs;
            }
            return;
        }
        let key = self.key_hash(&SeriesKey {
            name: &meta.name,
            tags: &meta.tags,
            host: &meta.host,
            distribution: meta.distribution,
        });
        self.keys
            .insert((meta.org, key), KeyEntry { id, durable, attrs });
        self.metrics
            .entry(meta.org)
            .or_default()
            .entry(meta.name.clone())
            .or_default()
            .add(&meta);
        self.series.insert(
            id,
            Entry {
                meta: Arc::new(meta),
                durable,
                key,
            },
        );
    }

    pub(crate) fn get(&self, org: u64, id: u64) -> Option<&Arc<SeriesMeta>> {
        self.series
            .get(&id)
            .map(|e| &e.meta)
            .filter(|m| m.org == org)
    }

    pub(crate) fn find(&self, org: u64, metric: &str, filter: &TagFilter) -> Vec<Arc<SeriesMeta>> {
        let Some(mi) = self.metrics.get(&org).and_then(|m| m.get(metric)) else {
            return Vec::new();
        };
        mi.eval(filter)
            .into_iter()
            .filter_map(|id| self.series.get(&id).map(|e| e.meta.clone()))
            .collect()
    }

    pub(crate) fn metrics(&self, org: u64) -> Vec<String> {
        self.metrics
            .get(&org)
            .map(|m| m.keys().cloned().collect())
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn glob_patterns() {
        assert!(glob("web-*", "web-1"));
        assert!(glob("web-*", "web-"));
        assert!(!glob("web-*", "db-1"));
        assert!(glob("*-canary", "api-canary"));
        assert!(!glob("*-canary", "api-canary-2"));
        assert!(glob("*east*", "us-east-1"));
        assert!(glob("*east*", "east"));
        assert!(!glob("*east*", "us-west-1"));
        assert!(glob("a*b*c", "aXXbYYc"));
        assert!(!glob("a*b*c", "aXXbYY"));
        assert!(glob("*", ""));
        assert!(glob("exact", "exact"));
    }

    #[test]
    fn set_ops() {
        assert_eq!(intersect(&[1, 3, 5, 7], &[3, 4, 5]), vec![3, 5]);
        assert_eq!(union(&[1, 5], &[2, 5, 9]), vec![1, 2, 5, 9]);
        assert_eq!(difference(&[1, 2, 3, 4], &[2, 4, 6]), vec![1, 3]);
    }

    #[test]
    fn term_parsing() {
        assert_eq!(
            TagFilter::term("env:prod"),
            TagFilter::Eq("env".into(), "prod".into())
        );
        assert_eq!(
            TagFilter::term("!host:a"),
            TagFilter::Not(Box::new(TagFilter::Eq("host".into(), "a".into())))
        );
        assert_eq!(
            TagFilter::term("service:web-*"),
            TagFilter::Wildcard("service".into(), "web-*".into())
        );
        assert_eq!(TagFilter::term("mytag"), TagFilter::Has("mytag".into()));
        assert_eq!(TagFilter::all_of("*"), TagFilter::All);
    }
}
