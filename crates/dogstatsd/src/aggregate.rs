//! The agent's DogStatsD time sampler: 10-second buckets per context, flushed into series and
//! sketches (`specs/dogstatsd.md` §7, Datadog `pkg/aggregator/time_sampler.go`,
//! `pkg/metrics/{counter,histogram,set}.go`).
//!
//! Why it looks like this:
//! * **Contexts** (name + metric type + host + tag set) are interned once: the hot path hashes
//!   the borrowed name/tags/host and only allocates when a context is new. The tag set is
//!   order-insensitive and de-duplicated (the agent's context key is too); reserved tags
//!   (`host:`, `dd.internal.*`) are stripped, `host:` overrides the configured hostname, empty
//!   tags are dropped, `extra_tags` are added. Context identity is a pair of independent
//!   64-bit hashes (the agent's `ckey` is a single 64-bit hash), so the hot path never
//!   dereferences the stored context to compare strings (a cache miss per line otherwise).
//!   Each index entry also caches where the context's accumulator sits in the current bucket,
//!   so a sample costs one index probe and one accumulator access.
//! * **Buckets** start at `ts - ts % 10` of the `now` given to [`Aggregator::insert`]; a flush at
//!   `now` closes every bucket that ended at or before the start of the current bucket, and
//!   stamps points with the bucket start.
//! * **Types**: gauge → last value (GAUGE); count → `Σ value/rate` sent as RATE `sum/10`, then 0
//!   for every following bucket whose start is before `last sample + expiry_seconds`, then the
//!   counter is forgotten; histogram/timing → exact weighted samples (`weight = trunc(1/rate)`)
//!   giving `.max .median .avg .count(RATE count/10) .min .sum` and `.<p>percentile` with the
//!   agent's index rules; set → distinct members (GAUGE); distribution → one [`DDSketch`] per
//!   (bucket, context), inserted with the sample rate.
//! * **Timestamped samples** (`|T`) skip aggregation: gauges and counts come back in
//!   [`Flushed::late`] with their own timestamp (counts as COUNT `value/rate`); other types are
//!   dropped and counted, as in the agent's no-aggregation pipeline.
//!
//! Documented deviations: a sample rate outside `(0, 1]` (or NaN) counts as 1 for every type
//! (the agent only does that for sketches and rate 0); non-finite values are dropped for every
//! type (the agent drops them for sketches and fails later for the rest); contexts unused for
//! [`CONTEXT_EXPIRY_SECONDS`] that hold no data are forgotten.

use std::collections::BTreeMap;
use std::hash::{BuildHasherDefault, Hash, Hasher};

use rustc_hash::{FxHashMap, FxHashSet};
use warden_model::{DDSketch, MetricKind, Point, Series, SketchSeries};

use crate::parse::{Metric, MetricType, Tags, is_reserved_tag};

/// Width of a bucket, seconds.
pub const BUCKET_SECONDS: i64 = 10;
/// A context that received nothing for this long and holds no data is forgotten (the agent's
/// `dogstatsd_context_expiry_seconds` default).
pub const CONTEXT_EXPIRY_SECONDS: i64 = 20;

/// Aggregator settings (agent config names in brackets).
#[derive(Clone, Debug, PartialEq)]
pub struct AggregatorConfig {
    /// Host attached to every context without a `host:` tag (`hostname`). Empty = no host.
    pub hostname: String,
    /// `max`, `median`, `avg`, `count`, `min`, `sum`; other names are ignored
    /// (`histogram_aggregates`, default `max median avg count`).
    pub histogram_aggregates: Vec<String>,
    /// Quantiles in `[0, 1]`, named `int(p*100+0.5)percentile`; others are ignored
    /// (`histogram_percentiles`, default `0.95`).
    pub histogram_percentiles: Vec<f64>,
    /// How long a silent counter keeps reporting 0 (`dogstatsd_expiry_seconds`, default 300).
    pub expiry_seconds: i64,
    /// Tags added to every series and sketch (`dogstatsd_tags`).
    pub extra_tags: Vec<String>,
}

impl Default for AggregatorConfig {
    fn default() -> Self {
        Self {
            hostname: String::new(),
            histogram_aggregates: ["max", "median", "avg", "count"].map(String::from).to_vec(),
            histogram_percentiles: vec![0.95],
            expiry_seconds: 300,
            extra_tags: Vec::new(),
        }
    }
}

/// Everything a flush produced.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Flushed {
    /// Gauges, rates and histogram aggregates, one series per (context, suffix) with one point
    /// per closed bucket, sorted by name, then tags, then host.
    pub series: Vec<Series>,
    /// Distributions, one entry per context with one sketch per closed bucket, same order.
    pub sketches: Vec<SketchSeries>,
    /// Timestamped (`|T`) gauges and counts received since the previous flush, in arrival order.
    pub late: Vec<Series>,
}

/// Counters for the agent's telemetry.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AggregatorStats {
    /// Metric messages given to [`Aggregator::insert`].
    pub messages: u64,
    /// Values (after unpacking) accepted into a bucket or the late list.
    pub values: u64,
    /// Values dropped because they were NaN or ±Inf.
    pub dropped_non_finite: u64,
    /// Timestamped samples of a type the no-aggregation path does not carry (h, ms, s, d).
    pub dropped_timestamped: u64,
    /// Contexts created since start.
    pub contexts_created: u64,
    /// Contexts forgotten since start.
    pub contexts_expired: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum HistAgg {
    Max,
    Min,
    Median,
    Avg,
    Sum,
    Count,
}

impl HistAgg {
    fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "max" => Self::Max,
            "min" => Self::Min,
            "median" => Self::Median,
            "avg" => Self::Avg,
            "sum" => Self::Sum,
            "count" => Self::Count,
            _ => return None,
        })
    }

    fn suffix(self) -> &'static str {
        match self {
            Self::Max => ".max",
            Self::Min => ".min",
            Self::Median => ".median",
            Self::Avg => ".avg",
            Self::Sum => ".sum",
            Self::Count => ".count",
        }
    }
}

/// A context's identity: two independent 64-bit hashes of (name, type, host, tag set).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct CtxKey(u64, u64);

impl Hash for CtxKey {
    #[inline]
    fn hash<H: Hasher>(&self, state: &mut H) {
        // Already a well-mixed hash: the table uses it as is (see `PassThrough`).
        state.write_u64(self.0);
    }
}

/// Hasher for keys that are already hashes: hashing them again is wasted work per line.
#[derive(Default)]
struct PassThrough(u64);

impl Hasher for PassThrough {
    #[inline]
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        // Not used by `CtxKey`; a correct (if slow) fallback.
        for &b in bytes {
            self.0 = fold_mul(self.0 ^ u64::from(b), K2);
        }
    }

    #[inline]
    fn write_u64(&mut self, x: u64) {
        self.0 = x;
    }
}

struct Context {
    /// Canonical identity (order-insensitive tag set), the key of `Aggregator::canon`.
    key: CtxKey,
    /// Raw keys (name, type and tag text exactly as sent) that resolve to this context in
    /// `Aggregator::index`: usually one; more when clients send the tags in several orders or
    /// with repeats. Removed with the context.
    aliases: Vec<CtxKey>,
    name: Box<str>,
    host: Box<str>,
    /// Sorted, de-duplicated, extra tags included.
    tags: Vec<String>,
    metric_type: MetricType,
}

/// Index entry: context id and a cache of where the context's accumulator sits in the bucket
/// it last wrote to (valid while that bucket's generation matches).
struct Slot {
    id: u32,
    pos: u32,
    generation: u64,
}

#[derive(Default)]
struct Hist {
    samples: Vec<(f64, u64)>,
    count: u64,
}

enum Acc {
    Gauge(Option<f64>),
    Count {
        sum: f64,
        last_ts: i64,
        sampled: bool,
    },
    Hist(Hist),
    Set(FxHashSet<Box<str>>),
    Dist(DDSketch),
}

impl Acc {
    fn new(t: MetricType, now: i64) -> Self {
        match t {
            MetricType::Gauge => Self::Gauge(None),
            MetricType::Count => Self::Count {
                sum: 0.0,
                last_ts: now,
                sampled: false,
            },
            MetricType::Histogram | MetricType::Timing => Self::Hist(Hist::default()),
            MetricType::Set => Self::Set(FxHashSet::default()),
            MetricType::Distribution => Self::Dist(DDSketch::new()),
        }
    }
}

/// One 10-second bucket: accumulators in insertion order plus a context → position map.
struct Bucket {
    generation: u64,
    accs: Vec<(u32, Acc)>,
    pos: FxHashMap<u32, u32>,
}

/// The 10-second DogStatsD aggregator. Not thread-safe by design: one per worker, or behind
/// the caller's lock.
pub struct Aggregator {
    cfg: AggregatorConfig,
    aggregates: Vec<HistAgg>,
    /// `(percent, ".NNpercentile")`, sorted by percent, de-duplicated.
    percentiles: Vec<(i64, String)>,
    contexts: Vec<Option<Context>>,
    /// Per context id: end of the last bucket that held its data (or its creation time).
    last_seen: Vec<i64>,
    free: Vec<u32>,
    /// Raw key (see [`raw_key`]) → context: the per-line lookup.
    index: std::collections::HashMap<CtxKey, Slot, BuildHasherDefault<PassThrough>>,
    /// Canonical key (see [`Aggregator::context_hashes`]) → context id: consulted only when a
    /// raw form is seen for the first time.
    canon: std::collections::HashMap<CtxKey, u32, BuildHasherDefault<PassThrough>>,
    buckets: BTreeMap<i64, Bucket>,
    next_generation: u64,
    /// Counter contexts still reporting: id → timestamp of their last sample.
    live_counters: FxHashMap<u32, i64>,
    last_cutoff: Option<i64>,
    late: Vec<Series>,
    /// Per-tag hashes of the line being inserted (reused: no allocation per line).
    scratch: Vec<(u64, u64)>,
    /// Hash of `cfg.hostname`, the host of every line without a `host:` tag.
    default_host_hash: (u64, u64),
    stats: AggregatorStats,
}

#[inline]
fn bucket_start(ts: i64) -> i64 {
    // Saturating so that absurd clocks (near i64::MIN) cannot overflow.
    ts.saturating_sub(ts.rem_euclid(BUCKET_SECONDS))
}

#[inline]
fn normalize_rate(rate: f64) -> f64 {
    if rate > 0.0 && rate <= 1.0 { rate } else { 1.0 }
}

/// Up to this many tags, repeats are found by scanning; above, by sorting.
const DEDUP_SCAN_MAX: usize = 16;

// Hash constants (hex digits of pi, as in foldhash/wyhash-style hashers).
const K0: u64 = 0x243f_6a88_85a3_08d3;
const K1: u64 = 0x1319_8a2e_0370_7344;
const K2: u64 = 0xa409_3822_299f_31d0;
const K3: u64 = 0x082e_fa98_ec4e_6c89;

/// Folded 64x64->128-bit multiply: the mixing step of foldhash/wyhash. Cheap (one `mul`) and
/// every output bit depends on every input bit.
#[inline]
fn fold_mul(a: u64, b: u64) -> u64 {
    let p = u128::from(a) * u128::from(b);
    (p as u64) ^ ((p >> 64) as u64)
}

/// Little-endian `u64` from the first eight bytes of `b` (which has at least eight).
#[inline]
fn word8(b: &[u8]) -> u64 {
    let mut w = [0u8; 8];
    w.copy_from_slice(&b[..8]);
    u64::from_le_bytes(w)
}

/// Little-endian `u32` from the first four bytes of `b` (which has at least four).
#[inline]
fn word4(b: &[u8]) -> u64 {
    let mut w = [0u8; 4];
    w.copy_from_slice(&b[..4]);
    u64::from(u32::from_le_bytes(w))
}

/// Two independent 64-bit hashes of a byte string, eight bytes per step. Short tails are read
/// with overlapping fixed-size loads (no variable-length copy); with the length mixed in, the
/// words still determine the string.
#[inline]
fn hash_bytes2(b: &[u8]) -> (u64, u64) {
    let len = b.len();
    let (mut x, mut y) = (K0 ^ len as u64, K1 ^ (len as u64).rotate_left(32));
    if len >= 8 {
        let mut rest = b;
        while rest.len() > 8 {
            let w = word8(rest);
            x = fold_mul(x ^ w, K2);
            y = fold_mul(y ^ w, K3);
            rest = &rest[8..];
        }
        // The last eight bytes (overlapping the previous word when the length is not a
        // multiple of eight).
        let w = word8(&b[len - 8..]);
        x = fold_mul(x ^ w, K2);
        y = fold_mul(y ^ w, K3);
    } else {
        let w = if len >= 4 {
            (word4(b) << 32) | word4(&b[len - 4..])
        } else if len > 0 {
            (u64::from(b[0]) << 16) | (u64::from(b[len / 2]) << 8) | u64::from(b[len - 1])
        } else {
            0
        };
        x = fold_mul(x ^ w, K2);
        y = fold_mul(y ^ w, K3);
    }
    (fold_mul(x, K1 ^ K3), fold_mul(y, K0 ^ K2))
}

/// Identity of a line's context as sent: name, type and the tag text byte for byte (order,
/// repeats and reserved tags included). Equal raw forms always mean the same context, so the
/// per-line lookup hashes about 50 contiguous bytes and nothing else; the order-insensitive
/// canonical identity is computed only the first time a raw form is seen.
#[inline]
fn raw_key(m: &Metric<'_>) -> CtxKey {
    let (na, nb) = hash_bytes2(m.name.as_bytes());
    let (ta, tb) = hash_bytes2(m.tags.raw().as_bytes());
    let ty = m.metric_type as u64;
    CtxKey(
        fold_mul(na ^ K0 ^ ty, ta ^ K2),
        fold_mul(nb ^ K1 ^ ty.rotate_left(17), tb ^ K3),
    )
}

/// What a tag means to the aggregator: the host override, another reserved tag (dropped), or a
/// plain tag. Checks the first byte before any prefix comparison (hot path).
#[inline]
fn tag_role(tag: &str) -> TagRole<'_> {
    match tag.as_bytes().first() {
        Some(b'h') => match tag.strip_prefix(crate::parse::HOST_TAG_PREFIX) {
            Some(h) => TagRole::Host(h),
            None => TagRole::Plain,
        },
        Some(b'd') if is_reserved_tag(tag) => TagRole::Reserved,
        Some(_) => TagRole::Plain,
        None => TagRole::Reserved, // empty tags are dropped
    }
}

enum TagRole<'a> {
    Host(&'a str),
    Reserved,
    Plain,
}

/// Neumaier-compensated `Σ value*weight` (the agent uses compensated summation too).
fn weighted_sum(samples: &[(f64, u64)]) -> f64 {
    let (mut s, mut c) = (0.0f64, 0.0f64);
    for &(v, w) in samples {
        let x = v * w as f64;
        let t = s + x;
        if s.abs() >= x.abs() {
            c += (s - t) + x;
        } else {
            c += (x - t) + s;
        }
        s = t;
    }
    s + c
}

impl Aggregator {
    pub fn new(cfg: AggregatorConfig) -> Self {
        let mut aggregates = Vec::new();
        for a in &cfg.histogram_aggregates {
            if let Some(a) = HistAgg::parse(a)
                && !aggregates.contains(&a)
            {
                aggregates.push(a);
            }
        }
        let mut pcts: Vec<i64> = cfg
            .histogram_percentiles
            .iter()
            .filter(|p| (0.0..=1.0).contains(*p))
            .map(|p| (p * 100.0 + 0.5) as i64)
            .collect();
        pcts.sort_unstable();
        pcts.dedup();
        let percentiles = pcts
            .into_iter()
            .map(|p| (p, format!(".{p}percentile")))
            .collect();
        let cfg_hostname = cfg.hostname.clone();
        Self {
            cfg,
            aggregates,
            percentiles,
            contexts: Vec::new(),
            last_seen: Vec::new(),
            free: Vec::new(),
            index: Default::default(),
            canon: Default::default(),
            buckets: BTreeMap::new(),
            next_generation: 0,
            live_counters: FxHashMap::default(),
            last_cutoff: None,
            late: Vec::new(),
            scratch: Vec::new(),
            default_host_hash: hash_bytes2(cfg_hostname.as_bytes()),
            stats: AggregatorStats::default(),
        }
    }

    pub fn config(&self) -> &AggregatorConfig {
        &self.cfg
    }

    /// Live contexts (with data in an open bucket, a counter still reporting zeros, or used in
    /// the last [`CONTEXT_EXPIRY_SECONDS`]).
    pub fn context_count(&self) -> usize {
        self.canon.len()
    }

    pub fn stats(&self) -> AggregatorStats {
        self.stats
    }

    /// Adds every value of one metric line received at `now` (UNIX seconds).
    pub fn insert(&mut self, m: &Metric<'_>, now: i64) {
        self.stats.messages += 1;
        if let Some(ts) = m.timestamp {
            self.insert_late(m, ts);
            return;
        }
        let key = raw_key(m);
        let (id, cached) = match self.index.get(&key) {
            Some(slot) => (slot.id, Some((slot.generation, slot.pos))),
            None => (self.resolve_new_raw_form(m, key, now), None),
        };

        let b = bucket_start(now);
        let next_generation = &mut self.next_generation;
        let bucket = self.buckets.entry(b).or_insert_with(|| {
            *next_generation += 1;
            Bucket {
                generation: *next_generation,
                accs: Vec::new(),
                pos: FxHashMap::default(),
            }
        });
        let pos = match cached {
            Some((generation, pos)) if generation == bucket.generation => pos,
            _ => {
                let accs = &mut bucket.accs;
                let pos = *bucket.pos.entry(id).or_insert_with(|| {
                    accs.push((id, Acc::new(m.metric_type, now)));
                    (accs.len() - 1) as u32
                });
                if let Some(slot) = self.index.get_mut(&key) {
                    slot.generation = bucket.generation;
                    slot.pos = pos;
                }
                pos
            }
        };
        let Some((_, acc)) = bucket.accs.get_mut(pos as usize) else {
            return;
        };
        let rate = normalize_rate(m.sample_rate);
        if let Some(member) = m.value.set_member() {
            if let Acc::Set(set) = acc
                && !set.contains(member)
            {
                set.insert(member.into());
            }
            self.stats.values += 1;
            return;
        }
        for v in m.value.iter() {
            if !v.is_finite() {
                self.stats.dropped_non_finite += 1;
                continue;
            }
            self.stats.values += 1;
            match acc {
                Acc::Gauge(last) => *last = Some(v),
                Acc::Count {
                    sum,
                    last_ts,
                    sampled,
                } => {
                    *sum += v / rate;
                    *last_ts = (*last_ts).max(now);
                    *sampled = true;
                }
                Acc::Hist(h) => {
                    let w = ((1.0 / rate) as u64).max(1);
                    h.samples.push((v, w));
                    h.count = h.count.saturating_add(w);
                }
                Acc::Dist(s) => {
                    s.insert_with_rate(v, rate);
                }
                Acc::Set(_) => {}
            }
        }
    }

    /// Timestamped gauges and counts received since the last call (also returned by
    /// [`Self::flush`]); lets a caller forward them without waiting for a bucket to close.
    pub fn take_late(&mut self) -> Vec<Series> {
        std::mem::take(&mut self.late)
    }

    fn insert_late(&mut self, m: &Metric<'_>, ts: i64) {
        let kind = match m.metric_type {
            MetricType::Gauge => MetricKind::Gauge,
            MetricType::Count => MetricKind::Count,
            _ => {
                self.stats.dropped_timestamped += 1;
                return;
            }
        };
        let rate = normalize_rate(m.sample_rate);
        let (host, tags) = self.owned_identity(m.tags);
        for v in m.value.iter() {
            if !v.is_finite() {
                self.stats.dropped_non_finite += 1;
                continue;
            }
            self.stats.values += 1;
            let value = if kind == MetricKind::Count {
                v / rate
            } else {
                v
            };
            self.late.push(Series {
                name: m.name.to_owned(),
                tags: tags.clone(),
                host: host.clone(),
                kind,
                interval: BUCKET_SECONDS,
                unit: None,
                source_type_name: None,
                points: vec![Point {
                    timestamp: ts,
                    value,
                }],
            });
        }
    }

    /// Host and sorted, de-duplicated tags (extra tags included) of a sample, owned.
    fn owned_identity(&self, tags: Tags<'_>) -> (String, Vec<String>) {
        let mut host: &str = &self.cfg.hostname;
        let mut out: Vec<String> = Vec::with_capacity(tags.len() + self.cfg.extra_tags.len());
        for t in tags.iter() {
            match tag_role(t) {
                TagRole::Host(h) => host = h,
                TagRole::Reserved => {}
                TagRole::Plain => out.push(t.to_owned()),
            }
        }
        out.extend(self.cfg.extra_tags.iter().cloned());
        out.sort_unstable();
        out.dedup();
        (host.to_owned(), out)
    }

    /// Two independent 64-bit hashes of (name, type, host, tag set); no allocation.
    ///
    /// The tag set is order-insensitive and de-duplicated: the per-tag hashes are combined by
    /// wrapping addition (commutative), after dropping repeats. Sorting them instead costs a
    /// branch misprediction per swap on every line.
    #[inline]
    fn context_hashes(&mut self, m: &Metric<'_>) -> CtxKey {
        let mut host = None;
        self.scratch.clear();
        for t in m.tags.iter() {
            match tag_role(t) {
                TagRole::Host(h) => host = Some(h),
                TagRole::Reserved => {}
                TagRole::Plain => self.scratch.push(hash_bytes2(t.as_bytes())),
            }
        }
        let tags = &mut self.scratch;
        if tags.len() > DEDUP_SCAN_MAX {
            tags.sort_unstable();
            tags.dedup();
        }
        let (mut sum_a, mut sum_b, mut n) = (0u64, 0u64, 0u64);
        for (i, t) in tags.iter().enumerate() {
            // Repeats are rare; for a few tags a scan is cheaper than a sort (and predictable).
            if tags.len() <= DEDUP_SCAN_MAX && tags[..i].contains(t) {
                continue;
            }
            sum_a = sum_a.wrapping_add(t.0);
            sum_b = sum_b.wrapping_add(t.1);
            n += 1;
        }
        let host = match host {
            Some(h) => hash_bytes2(h.as_bytes()),
            None => self.default_host_hash,
        };
        let (na, nb) = hash_bytes2(m.name.as_bytes());
        let ty = m.metric_type as u64;
        let h1 = fold_mul(na ^ K0, host.0 ^ K2 ^ ty);
        let h2 = fold_mul(nb ^ K1, host.1 ^ K3 ^ ty);
        CtxKey(
            fold_mul(h1 ^ sum_a, K1 ^ n),
            fold_mul(h2 ^ sum_b, K0 ^ n.rotate_left(32)),
        )
    }

    /// First sight of a raw form: finds its context by canonical identity (creating the
    /// context if it is new) and indexes the raw form as an alias of it.
    #[cold]
    fn resolve_new_raw_form(&mut self, m: &Metric<'_>, raw: CtxKey, now: i64) -> u32 {
        let key = self.context_hashes(m);
        let id = match self.canon.get(&key) {
            Some(&id) => id,
            None => self.create_context(m, key, now),
        };
        if let Some(Some(ctx)) = self.contexts.get_mut(id as usize) {
            ctx.aliases.push(raw);
        }
        self.index.insert(
            raw,
            Slot {
                id,
                pos: 0,
                generation: 0,
            },
        );
        id
    }

    fn create_context(&mut self, m: &Metric<'_>, key: CtxKey, now: i64) -> u32 {
        let (host, tags) = self.owned_identity(m.tags);
        let ctx = Context {
            key,
            aliases: Vec::with_capacity(1),
            name: m.name.into(),
            host: host.into(),
            tags,
            metric_type: m.metric_type,
        };
        let id = match self.free.pop() {
            Some(id) => {
                self.contexts[id as usize] = Some(ctx);
                self.last_seen[id as usize] = now;
                id
            }
            None => {
                self.contexts.push(Some(ctx));
                self.last_seen.push(now);
                (self.contexts.len() - 1) as u32
            }
        };
        self.canon.insert(key, id);
        self.stats.contexts_created += 1;
        id
    }

    /// Closes every bucket that ended at or before the start of the bucket containing `now`
    /// and returns their series, sketches and the pending late samples.
    pub fn flush(&mut self, now: i64) -> Flushed {
        let cutoff = bucket_start(now);
        let mut starts: Vec<i64> = self.buckets.range(..cutoff).map(|(&b, _)| b).collect();
        // Buckets without data still carry zeros for counters: visit every bucket from the
        // previous cutoff (or the first data bucket) up to the last one a counter can still
        // owe a zero to (`B < last sample + expiry`).
        let mut max_last = self.live_counters.values().copied().max();
        for bucket in self.buckets.range(..cutoff).map(|(_, b)| b) {
            for (_, acc) in &bucket.accs {
                if let Acc::Count {
                    last_ts,
                    sampled: true,
                    ..
                } = acc
                {
                    max_last = Some(max_last.map_or(*last_ts, |m| m.max(*last_ts)));
                }
            }
        }
        if let Some(max_last) = max_last {
            let first = self
                .last_cutoff
                .or_else(|| starts.first().copied())
                .unwrap_or(cutoff.saturating_sub(BUCKET_SECONDS));
            let end = cutoff.min(
                bucket_start(max_last.saturating_add(self.cfg.expiry_seconds - 1))
                    .saturating_add(BUCKET_SECONDS),
            );
            let mut b = first;
            while b < end {
                starts.push(b);
                b = b.saturating_add(BUCKET_SECONDS);
            }
            starts.sort_unstable();
            starts.dedup();
        }

        let mut out = Emitter::default();
        let empty = FxHashMap::default();
        for b in starts {
            let mut bucket = self.buckets.remove(&b);
            if let Some(bucket) = &mut bucket {
                for (id, acc) in &mut bucket.accs {
                    let Some(Some(ctx)) = self.contexts.get(*id as usize) else {
                        continue;
                    };
                    if let Some(seen) = self.last_seen.get_mut(*id as usize) {
                        *seen = (*seen).max(b.saturating_add(BUCKET_SECONDS));
                    }
                    self.emit(&mut out, *id, ctx, b, acc);
                    if let Acc::Count {
                        last_ts,
                        sampled: true,
                        ..
                    } = acc
                    {
                        let e = self.live_counters.entry(*id).or_insert(*last_ts);
                        *e = (*e).max(*last_ts);
                    }
                }
            }
            let (positions, accs) = bucket
                .as_ref()
                .map_or((&empty, &[][..]), |b| (&b.pos, &b.accs[..]));
            let expiry = self.cfg.expiry_seconds;
            let contexts = &self.contexts;
            self.live_counters.retain(|&id, &mut last| {
                let sampled_here = positions.get(&id).is_some_and(|&p| {
                    matches!(
                        accs.get(p as usize),
                        Some((_, Acc::Count { sampled: true, .. }))
                    )
                });
                if sampled_here {
                    return true;
                }
                if last.saturating_add(expiry) > b {
                    if let Some(Some(ctx)) = contexts.get(id as usize) {
                        out.point(id, 0, ctx, "", MetricKind::Rate, None, b, 0.0);
                    }
                    true
                } else {
                    false
                }
            });
        }
        // A counter that owes no zero to any bucket from `cutoff` on is forgotten.
        let expiry = self.cfg.expiry_seconds;
        self.live_counters
            .retain(|_, &mut last| last.saturating_add(expiry) > cutoff);
        self.last_cutoff = Some(self.last_cutoff.map_or(cutoff, |c| c.max(cutoff)));
        self.expire_contexts(now);

        let mut flushed = out.finish();
        flushed.late = std::mem::take(&mut self.late);
        flushed
    }

    fn expire_contexts(&mut self, now: i64) {
        let open: FxHashSet<u32> = self
            .buckets
            .values()
            .flat_map(|b| b.pos.keys().copied())
            .collect();
        for id in 0..self.contexts.len() {
            let id32 = id as u32;
            let seen = self.last_seen.get(id).copied().unwrap_or(i64::MIN);
            let expired = self.contexts[id].is_some()
                && seen.saturating_add(CONTEXT_EXPIRY_SECONDS) <= now
                && !self.live_counters.contains_key(&id32)
                && !open.contains(&id32);
            if expired && let Some(ctx) = self.contexts[id].take() {
                self.canon.remove(&ctx.key);
                for alias in &ctx.aliases {
                    self.index.remove(alias);
                }
                self.free.push(id32);
                self.stats.contexts_expired += 1;
            }
        }
    }
    /// Emits one closed accumulator; consumes its samples/sketch (the bucket is being dropped).
    fn emit(&self, out: &mut Emitter, id: u32, ctx: &Context, b: i64, acc: &mut Acc) {
        let unit = (ctx.metric_type == MetricType::Timing).then_some("millisecond");
        match acc {
            Acc::Gauge(None) | Acc::Count { sampled: false, .. } => {}
            Acc::Gauge(Some(v)) => out.point(id, 0, ctx, "", MetricKind::Gauge, None, b, *v),
            Acc::Count { sum, .. } => out.point(
                id,
                0,
                ctx,
                "",
                MetricKind::Rate,
                None,
                b,
                *sum / BUCKET_SECONDS as f64,
            ),
            Acc::Set(set) => {
                out.point(id, 0, ctx, "", MetricKind::Gauge, None, b, set.len() as f64)
            }
            Acc::Dist(sketch) if sketch.is_empty() => {}
            Acc::Dist(sketch) => out.sketch(id, ctx, b, std::mem::take(sketch)),
            Acc::Hist(h) => self.emit_hist(out, id, ctx, b, h, unit),
        }
    }

    fn emit_hist(
        &self,
        out: &mut Emitter,
        id: u32,
        ctx: &Context,
        b: i64,
        h: &mut Hist,
        unit: Option<&'static str>,
    ) {
        if h.samples.is_empty() {
            return;
        }
        let samples = &mut h.samples;
        samples.sort_unstable_by(|a, b| a.0.total_cmp(&b.0));
        let samples: &[(f64, u64)] = samples;
        let count = h.count;
        let mut sum = None;
        for (i, agg) in self.aggregates.iter().enumerate() {
            let slot = 1 + i as u16;
            let (kind, value) = match agg {
                HistAgg::Max => (MetricKind::Gauge, samples[samples.len() - 1].0),
                HistAgg::Min => (MetricKind::Gauge, samples[0].0),
                HistAgg::Median => (MetricKind::Gauge, weighted_pick(samples, (count - 1) / 2)),
                HistAgg::Avg => {
                    let s = *sum.get_or_insert_with(|| weighted_sum(samples));
                    (MetricKind::Gauge, s / count as f64)
                }
                HistAgg::Sum => (
                    MetricKind::Gauge,
                    *sum.get_or_insert_with(|| weighted_sum(samples)),
                ),
                HistAgg::Count => (MetricKind::Rate, count as f64 / BUCKET_SECONDS as f64),
            };
            out.point(id, slot, ctx, agg.suffix(), kind, unit, b, value);
        }
        let base = 1 + self.aggregates.len() as u16;
        for (i, (pct, suffix)) in self.percentiles.iter().enumerate() {
            // The agent's index rule: first sample whose cumulative weight exceeds
            // (p*count - 1) / 100 (integer division truncating toward zero).
            let target = (i128::from(*pct) * i128::from(count) - 1) / 100;
            let target = u64::try_from(target.max(0)).unwrap_or(u64::MAX);
            let v = weighted_pick(samples, target);
            out.point(
                id,
                base + i as u16,
                ctx,
                suffix,
                MetricKind::Gauge,
                unit,
                b,
                v,
            );
        }
    }
}

/// Value of the first sample whose cumulative weight exceeds `target` (last one otherwise).
fn weighted_pick(sorted: &[(f64, u64)], target: u64) -> f64 {
    let mut acc: u64 = 0;
    for &(v, w) in sorted {
        acc = acc.saturating_add(w);
        if acc > target {
            return v;
        }
    }
    sorted.last().map_or(0.0, |s| s.0)
}

/// Groups points into one series per (context, suffix) and sketches per context.
#[derive(Default)]
struct Emitter {
    series: Vec<Series>,
    series_index: FxHashMap<(u32, u16), usize>,
    sketches: Vec<SketchSeries>,
    sketch_index: FxHashMap<u32, usize>,
}

impl Emitter {
    #[allow(clippy::too_many_arguments)]
    fn point(
        &mut self,
        id: u32,
        slot: u16,
        ctx: &Context,
        suffix: &str,
        kind: MetricKind,
        unit: Option<&'static str>,
        ts: i64,
        value: f64,
    ) {
        let idx = *self.series_index.entry((id, slot)).or_insert_with(|| {
            self.series.push(Series {
                name: format!("{}{suffix}", ctx.name),
                tags: ctx.tags.clone(),
                host: ctx.host.to_string(),
                kind,
                interval: BUCKET_SECONDS,
                unit: unit.map(str::to_owned),
                source_type_name: None,
                points: Vec::with_capacity(1),
            });
            self.series.len() - 1
        });
        self.series[idx].points.push(Point {
            timestamp: ts,
            value,
        });
    }

    fn sketch(&mut self, id: u32, ctx: &Context, ts: i64, sketch: DDSketch) {
        let idx = *self.sketch_index.entry(id).or_insert_with(|| {
            self.sketches.push(SketchSeries {
                name: ctx.name.to_string(),
                tags: ctx.tags.clone(),
                host: ctx.host.to_string(),
                points: Vec::with_capacity(1),
            });
            self.sketches.len() - 1
        });
        self.sketches[idx].points.push((ts, sketch));
    }

    fn finish(mut self) -> Flushed {
        for s in &mut self.series {
            s.points.sort_by_key(|p| p.timestamp);
        }
        for s in &mut self.sketches {
            s.points.sort_by_key(|p| p.0);
        }
        self.series.sort_by(|a, b| {
            (&a.name, &a.tags, &a.host, a.kind as u8).cmp(&(
                &b.name,
                &b.tags,
                &b.host,
                b.kind as u8,
            ))
        });
        self.sketches
            .sort_by(|a, b| (&a.name, &a.tags, &a.host).cmp(&(&b.name, &b.tags, &b.host)));
        Flushed {
            series: self.series,
            sketches: self.sketches,
            late: Vec::new(),
        }
    }
}
