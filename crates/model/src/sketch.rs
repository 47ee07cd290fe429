//! A DDSketch compatible with the Datadog Agent's `pkg/quantile` sketch.
//!
//! Why this exact flavour: the agent ships distributions as `SketchPayload.Dogsketch` (keys `k`,
//! counts `n`, plus `cnt/min/max/sum/avg`) and the intake merges sketches from many agents, so a
//! Warden agent and a Warden server must agree with Datadog on the *key mapping*, not only on
//! "some log histogram". The mapping below reproduces the agent's:
//!
//! * relative accuracy `eps = 1/128`, so `gamma = 1 + 2*eps` and `ln(gamma) = ln_1p(2*eps)`;
//! * smallest distinguishable magnitude `1e-9`: `bias = 1 - floor(log_gamma(1e-9))` (= 1338) so
//!   the smallest representable positive value has key 1; magnitudes below it map to key 0;
//! * `key(v) = round_half_even(log_gamma(v)) + bias` for `v > 0`, `key(-v) = -key(v)`, clamped to
//!   `[1, 32766]`, with `32767` meaning +Inf (keys are `i16` on the agent);
//! * the value of a key is `gamma^(key - bias)`, i.e. the centre of the bin in log space, so any
//!   value is within `sqrt(gamma) - 1` (~0.78 %) of the value its key stands for;
//! * at most 4096 bins; when there are more, the lowest bins are collapsed into the next one
//!   (the agent's `trimLeft`), sacrificing accuracy at the low end only;
//! * on the wire a bin count is a `u16`: [`DDSketch::keys`]/[`DDSketch::counts`] split a key
//!   whose count exceeds 65535 into several bins with the same key, remainder first, then full
//!   bins (the agent's `appendSafe`).
//!
//! Internally the sketch keeps one entry per distinct key with a `u64` count (cheaper and
//! overflow-free); the split form is produced on demand. The bin limit counts *split* bins, like
//! the agent.
//!
//! Quantiles: the rank rule is the agent's (`round_half_even(q * (n - 1))`, `q <= 0` → min,
//! `q >= 1` → max) and the estimate is the key's value clamped to `[min, max]`, which bounds the
//! relative error by ~0.78 % for magnitudes in `[1e-9, 1e211]` (the agent interpolates inside
//! the bin instead; its error bound is looser).
//!
//! Invariant: the sketch never panics on any `f64` input; non-finite values are ignored by the
//! insert functions (the agent's aggregator drops NaN/Inf before they reach a sketch).

use serde::{Deserialize, Serialize};
use std::fmt;

/// Relative accuracy parameter of the agent sketch.
pub const EPS: f64 = 1.0 / 128.0;
/// `gamma = 1 + 2 * EPS`.
pub const GAMMA: f64 = 1.0 + 2.0 * EPS;
/// Smallest magnitude that does not collapse to key 0.
pub const MIN_VALUE: f64 = 1e-9;
/// Maximum number of (split) bins kept.
pub const BIN_LIMIT: usize = 4096;
/// Largest count a single wire bin holds.
pub const MAX_BIN_WIDTH: u64 = u16::MAX as u64;
/// Key standing for +Inf (and `-INF_KEY` for -Inf).
pub const INF_KEY: i16 = i16::MAX;
/// Largest finite key.
pub const MAX_KEY: i16 = INF_KEY - 1;

/// `ln(gamma)`, computed like the agent (`log1p(2*eps)`); checked against the formula in tests.
const LN_GAMMA: f64 = 0.015504186535965254;

/// The agent's key bias (`1 - floor(log_gamma(MIN_VALUE))`); checked in tests.
const BIAS: i32 = 1338;

/// Smallest positive value mapped to key 1: `gamma^(1 - bias)`; checked in tests.
const NORM_MIN: f64 = 9.94185408912145e-10;
const _: () = assert!(NORM_MIN <= MIN_VALUE);

/// Maps a finite value to its key (see the module docs). NaN maps to 0; callers filter it.
pub fn key_of(v: f64) -> i16 {
    if v < 0.0 {
        return -key_of(-v);
    }
    if v.is_nan() || v < NORM_MIN {
        return 0;
    }
    if v.is_infinite() {
        return INF_KEY;
    }
    let i = (v.ln() / LN_GAMMA).round_ties_even() + f64::from(BIAS);
    if i > f64::from(MAX_KEY) {
        INF_KEY
    } else if i < 1.0 {
        1
    } else {
        i as i16
    }
}

/// The value a key stands for: `gamma^(key - bias)` (signed; 0 for key 0; ±Inf for ±`INF_KEY`).
pub fn value_of(key: i16) -> f64 {
    match key {
        0 => 0.0,
        INF_KEY => f64::INFINITY,
        k if k <= -INF_KEY => f64::NEG_INFINITY,
        k if k < 0 => -value_of(-k),
        k => GAMMA.powf(f64::from(i32::from(k) - BIAS)),
    }
}

/// Why [`DDSketch::from_bins`] refused its input.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SketchError {
    /// `keys` and `counts` differ in length.
    LengthMismatch { keys: usize, counts: usize },
    /// A key outside the agent's `i16` key space.
    KeyOutOfRange(i32),
}

impl fmt::Display for SketchError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::LengthMismatch { keys, counts } => {
                write!(f, "sketch has {keys} keys but {counts} counts")
            }
            Self::KeyOutOfRange(k) => {
                write!(f, "sketch key {k} is outside [-32767, 32767]")
            }
        }
    }
}

impl std::error::Error for SketchError {}

/// A mergeable quantile sketch with the Datadog agent's key mapping (see the module docs).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct DDSketch {
    /// `(key, count)` sorted by key, one entry per distinct key, counts > 0.
    bins: Vec<(i16, u64)>,
    /// Summary, as the agent's `summary.Summary`.
    cnt: u64,
    min: f64,
    max: f64,
    sum: f64,
    avg: f64,
}

impl DDSketch {
    /// An empty sketch.
    pub fn new() -> Self {
        Self::default()
    }

    /// Inserts one value. Non-finite values are ignored (returns `false`).
    pub fn insert(&mut self, v: f64) -> bool {
        self.insert_n(v, 1)
    }

    /// Inserts `v` as if it had been seen `n` times. Non-finite values and `n == 0` are ignored.
    pub fn insert_n(&mut self, v: f64, n: u64) -> bool {
        if !v.is_finite() || n == 0 {
            return false;
        }
        self.summary_insert(v, n, n as f64);
        self.add_key(key_of(v), n);
        true
    }

    /// Inserts a value sampled at `rate`, like the agent's `Agent.Insert(v, rate)`: a rate
    /// outside `(0, 1]` (or NaN) counts as 1; otherwise the bin gets `trunc(1/rate)` and the
    /// summary gets `cnt += trunc(1/rate)`, `sum += v / rate`.
    pub fn insert_with_rate(&mut self, v: f64, rate: f64) -> bool {
        if !v.is_finite() {
            return false;
        }
        let rate = if rate > 0.0 && rate <= 1.0 { rate } else { 1.0 };
        if rate == 1.0 {
            return self.insert(v);
        }
        let weight = 1.0 / rate;
        // 1/rate >= 1 and finite because rate is in (0, 1); `as` saturates for huge weights.
        let n = (weight as u64).max(1);
        self.summary_insert(v, n, weight);
        self.add_key(key_of(v), n);
        true
    }

    fn summary_insert(&mut self, v: f64, n: u64, weight: f64) {
        if self.cnt == 0 {
            self.min = v;
            self.max = v;
            self.cnt = n;
            self.sum = v * weight;
            self.avg = v;
            return;
        }
        if v < self.min {
            self.min = v;
        }
        if v > self.max {
            self.max = v;
        }
        self.cnt = self.cnt.saturating_add(n);
        self.sum += v * weight;
        self.avg += (v - self.avg) * n as f64 / self.cnt as f64;
    }

    fn add_key(&mut self, key: i16, n: u64) {
        let grew = match self.bins.binary_search_by_key(&key, |b| b.0) {
            Ok(i) => {
                let old = self.bins[i].1;
                let new = old.saturating_add(n);
                self.bins[i].1 = new;
                new.div_ceil(MAX_BIN_WIDTH) > old.div_ceil(MAX_BIN_WIDTH)
            }
            Err(i) => {
                self.bins.insert(i, (key, n));
                true
            }
        };
        // The split-bin count only changes when a key is added or a count crosses a multiple
        // of 65535; only then can the limit be exceeded (the hot path stays O(log n)).
        if grew {
            self.trim();
        }
    }

    /// Number of wire bins (counts split at 65535).
    fn split_len(&self) -> usize {
        self.bins
            .iter()
            .map(|&(_, n)| n.div_ceil(MAX_BIN_WIDTH) as usize)
            .sum()
    }

    /// Collapses the lowest bins into the next one while the split-bin count exceeds the limit.
    fn trim(&mut self) {
        if self.bins.len() <= BIN_LIMIT / 2 && self.bins.iter().all(|b| b.1 <= MAX_BIN_WIDTH) {
            return;
        }
        let mut excess = self.split_len().saturating_sub(BIN_LIMIT);
        if excess == 0 {
            return;
        }
        let mut carried: u64 = 0;
        let mut removed = 0;
        while excess > 0 && removed + 1 < self.bins.len() {
            let n = self.bins[removed].1;
            let before = n.div_ceil(MAX_BIN_WIDTH) as usize;
            carried = carried.saturating_add(n);
            removed += 1;
            excess = excess.saturating_sub(before);
        }
        self.bins.drain(..removed);
        if let Some(first) = self.bins.first_mut() {
            first.1 = first.1.saturating_add(carried);
        }
        // The receiving bin may now split into more wire bins; recurse (terminates: each
        // round removes at least one distinct key or stops at one key).
        if self.bins.len() > 1 && self.split_len() > BIN_LIMIT {
            self.trim();
        }
    }

    fn bin_total(&self) -> u64 {
        self.bins.iter().map(|b| b.1).sum()
    }

    /// Merges `other` into `self` (bins added key by key, summaries combined like the agent).
    pub fn merge(&mut self, other: &DDSketch) {
        if other.cnt == 0 && other.bins.is_empty() {
            return;
        }
        let mut merged = Vec::with_capacity(self.bins.len() + other.bins.len());
        let (mut i, mut j) = (0, 0);
        while i < self.bins.len() && j < other.bins.len() {
            let (a, b) = (self.bins[i], other.bins[j]);
            match a.0.cmp(&b.0) {
                std::cmp::Ordering::Less => {
                    merged.push(a);
                    i += 1;
                }
                std::cmp::Ordering::Greater => {
                    merged.push(b);
                    j += 1;
                }
                std::cmp::Ordering::Equal => {
                    merged.push((a.0, a.1.saturating_add(b.1)));
                    i += 1;
                    j += 1;
                }
            }
        }
        merged.extend_from_slice(&self.bins[i..]);
        merged.extend_from_slice(&other.bins[j..]);
        self.bins = merged;
        self.trim();

        if self.cnt == 0 {
            self.cnt = other.cnt;
            self.min = other.min;
            self.max = other.max;
            self.sum = other.sum;
            self.avg = other.avg;
        } else if other.cnt != 0 {
            self.min = self.min.min(other.min);
            self.max = self.max.max(other.max);
            self.cnt = self.cnt.saturating_add(other.cnt);
            self.sum += other.sum;
            self.avg += (other.avg - self.avg) * other.cnt as f64 / self.cnt as f64;
        }
    }

    /// Estimated `q`-quantile (`q` in `[0, 1]`), or `None` for an empty sketch or a NaN `q`.
    pub fn quantile(&self, q: f64) -> Option<f64> {
        let total = self.bin_total();
        if total == 0 || q.is_nan() {
            return None;
        }
        if q <= 0.0 {
            return Some(self.min);
        }
        if q >= 1.0 {
            return Some(self.max);
        }
        let rank = (q * (total - 1) as f64).round_ties_even();
        let mut seen = 0.0;
        for &(k, n) in &self.bins {
            seen += n as f64;
            if seen > rank {
                return Some(value_of(k).clamp(self.min, self.max));
            }
        }
        Some(self.max)
    }

    /// Number of values inserted (the summary count; weighted inserts count `trunc(1/rate)`).
    pub fn count(&self) -> u64 {
        self.cnt
    }

    /// True when nothing was inserted.
    pub fn is_empty(&self) -> bool {
        self.cnt == 0 && self.bins.is_empty()
    }

    /// Smallest inserted value (0 when empty).
    pub fn min(&self) -> f64 {
        self.min
    }

    /// Largest inserted value (0 when empty).
    pub fn max(&self) -> f64 {
        self.max
    }

    /// Sum of inserted values, weighted by `1/rate` (0 when empty).
    pub fn sum(&self) -> f64 {
        self.sum
    }

    /// Running average as the agent computes it (0 when empty).
    pub fn avg(&self) -> f64 {
        self.avg
    }

    /// Wire keys, sorted; a key repeats when its count exceeds 65535 (see [`Self::counts`]).
    pub fn keys(&self) -> Vec<i32> {
        self.wire_bins().map(|(k, _)| i32::from(k)).collect()
    }

    /// Wire counts matching [`Self::keys`], each in `1..=65535`.
    pub fn counts(&self) -> Vec<u32> {
        self.wire_bins().map(|(_, n)| n).collect()
    }

    /// Distinct `(key, total count)` pairs, sorted by key.
    pub fn bins(&self) -> &[(i16, u64)] {
        &self.bins
    }

    fn wire_bins(&self) -> impl Iterator<Item = (i16, u32)> + '_ {
        self.bins.iter().flat_map(|&(k, n)| {
            let rem = n % MAX_BIN_WIDTH;
            let full = n / MAX_BIN_WIDTH;
            let first = (rem != 0).then_some((k, rem as u32));
            first.into_iter().chain(std::iter::repeat_n(
                (k, MAX_BIN_WIDTH as u32),
                full as usize,
            ))
        })
    }

    /// Rebuilds a sketch from wire form (e.g. a decoded `Dogsketch`). Keys may come in any order
    /// and repeat; zero counts are dropped. The summary is taken as given, except that a
    /// non-finite `min`/`max`/`sum`/`avg` (which JSON cannot carry) is replaced by the value the
    /// bins imply.
    pub fn from_bins(
        keys: &[i32],
        counts: &[u32],
        cnt: u64,
        min: f64,
        max: f64,
        sum: f64,
        avg: f64,
    ) -> Result<Self, SketchError> {
        if keys.len() != counts.len() {
            return Err(SketchError::LengthMismatch {
                keys: keys.len(),
                counts: counts.len(),
            });
        }
        let mut pairs = Vec::with_capacity(keys.len());
        for (&k, &n) in keys.iter().zip(counts) {
            let k16 = i16::try_from(k)
                .ok()
                .filter(|k| *k >= -INF_KEY)
                .ok_or(SketchError::KeyOutOfRange(k))?;
            if n > 0 {
                pairs.push((k16, u64::from(n)));
            }
        }
        pairs.sort_unstable_by_key(|p| p.0);
        let mut bins: Vec<(i16, u64)> = Vec::with_capacity(pairs.len());
        for (k, n) in pairs {
            match bins.last_mut() {
                Some(last) if last.0 == k => last.1 = last.1.saturating_add(n),
                _ => bins.push((k, n)),
            }
        }
        let first = bins.first().map_or(0.0, |b| value_of(b.0));
        let last = bins.last().map_or(0.0, |b| value_of(b.0));
        let implied_sum = || -> f64 {
            bins.iter()
                .map(|&(k, n)| value_of(k) * n as f64)
                .filter(|x| x.is_finite())
                .sum()
        };
        let finite_or = |v: f64, f: f64| {
            if v.is_finite() {
                v
            } else if f.is_finite() {
                f
            } else {
                0.0
            }
        };
        let min = finite_or(min, first);
        let max = finite_or(max, last);
        let sum = if sum.is_finite() { sum } else { implied_sum() };
        let avg = finite_or(avg, if cnt > 0 { sum / cnt as f64 } else { 0.0 });
        let mut s = Self {
            bins,
            cnt,
            min,
            max,
            sum,
            avg,
        };
        s.trim();
        Ok(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn constants_match_their_formulas() {
        assert_eq!(LN_GAMMA, (2.0 * EPS).ln_1p());
        let emin = (MIN_VALUE.ln() / LN_GAMMA).floor() as i32;
        assert_eq!(BIAS, 1 - emin);
        assert_eq!(NORM_MIN, GAMMA.powf(f64::from(1 - BIAS)));
    }

    /// The agent's `config_test.go` expectations, ported.
    #[test]
    fn agent_config_test_vectors() {
        assert_eq!(key_of(-0.0), 0);
        assert_eq!(key_of(NORM_MIN.next_down()), 0);
        assert_eq!(key_of(NORM_MIN), 1);
        assert_eq!(key_of(NORM_MIN.next_up()), 1);
        assert_eq!(key_of(NORM_MIN * GAMMA), 2);
        assert_eq!(key_of(value_of(MAX_KEY)), MAX_KEY);
        assert_eq!(value_of(INF_KEY), f64::INFINITY);
        assert_eq!(value_of(-INF_KEY), f64::NEG_INFINITY);
        // key(f64(k)) == k for every key, except that near 1 (where ln is imprecise) the key
        // may flip between the neighbouring floats.
        for k in -MAX_KEY..=MAX_KEY {
            let v = value_of(k);
            let ak = key_of(v);
            if ak == k {
                continue;
            }
            let (next, prev) = (key_of(v.next_up()), key_of(v.next_down()));
            assert!(
                next - prev == 1 && v.abs() <= 2.0 && v.abs() >= 0.5,
                "k={k} v={v} key={ak} next={next} prev={prev}"
            );
        }
    }

    #[test]
    fn relative_error_of_key_values_below_one_percent() {
        // The agent's TestRelativeError, on a log-spaced sample of the range it scans.
        let mut v = 1e-6f64;
        while v < 9.2e18 {
            let qv = value_of(key_of(v));
            assert!((v - qv).abs() / v.max(qv) <= 0.01, "v={v} qv={qv}");
            v *= 1.000_37;
        }
    }

    #[test]
    fn key_mapping_matches_agent_constants() {
        assert_eq!(BIAS, 1338);
        // Keys that appear in the agent's agent_test.go expectations.
        assert_eq!(key_of(10.0), 1487);
        assert_eq!(key_of(-10.0), -1487);
        assert_eq!(key_of(1e3), 1784);
        assert_eq!(key_of(1e4), 1932);
        assert_eq!(key_of(0.0), 0);
        assert_eq!(key_of(1e-10), 0);
        assert_eq!(key_of(1e-9), 1);
        assert_eq!(key_of(1.0), 1338);
        assert_eq!(key_of(-1.0), -1338);
        assert_eq!(key_of(f64::INFINITY), INF_KEY);
        assert_eq!(key_of(1e300), INF_KEY);
        // key(value(k)) == k, which the agent's round-half-even mapping guarantees.
        for k in [1_i16, 2, 100, 1338, 1400, 5000, 20000, 32766] {
            assert_eq!(key_of(value_of(k)), k, "key {k}");
            assert_eq!(key_of(-value_of(k)), -k, "key -{k}");
        }
    }

    #[test]
    fn summary_and_quantiles_small() {
        let mut s = DDSketch::new();
        for v in 1..=100 {
            s.insert(f64::from(v));
        }
        assert_eq!(s.count(), 100);
        assert_eq!(s.min(), 1.0);
        assert_eq!(s.max(), 100.0);
        assert_eq!(s.sum(), 5050.0);
        assert!((s.avg() - 50.5).abs() < 1e-9);
        let p50 = s.quantile(0.5).expect("non-empty");
        // rank round_half_even(0.5 * 99) = 50 -> the 51st value.
        assert!((p50 - 51.0).abs() / 51.0 < 0.008, "{p50}");
        assert_eq!(s.quantile(0.0), Some(1.0));
        assert_eq!(s.quantile(1.0), Some(100.0));
        assert_eq!(DDSketch::new().quantile(0.5), None);
    }

    #[test]
    fn weighted_insert_like_agent() {
        let mut s = DDSketch::new();
        s.insert_with_rate(10.0, 0.3);
        // 1/0.3 = 3.33.. -> bin count 3, summary sum 33.33..
        assert_eq!(s.count(), 3);
        assert_eq!(s.counts(), vec![3]);
        assert!((s.sum() - 10.0 / 0.3).abs() < 1e-9);
        let mut t = DDSketch::new();
        t.insert_with_rate(10.0, 0.0); // invalid rate counts as 1
        assert_eq!(t.count(), 1);
        assert!(!t.insert(f64::NAN));
        assert_eq!(t.count(), 1);
    }

    #[test]
    fn wire_split_of_large_counts() {
        let mut s = DDSketch::new();
        s.insert_n(5.0, 2 * MAX_BIN_WIDTH + 7);
        let k = i32::from(key_of(5.0));
        assert_eq!(s.keys(), vec![k, k, k]);
        assert_eq!(s.counts(), vec![7, 65535, 65535]);
        let back = DDSketch::from_bins(&s.keys(), &s.counts(), s.count(), 5.0, 5.0, s.sum(), 5.0)
            .expect("valid");
        assert_eq!(back, s);
    }

    #[test]
    fn bin_limit_collapses_low_end() {
        let mut s = DDSketch::new();
        // 6000 distinct keys: values gamma^i spaced one key apart.
        for i in 0..6000 {
            s.insert(value_of(1338 + i as i16));
        }
        assert_eq!(s.bins().len(), BIN_LIMIT);
        assert_eq!(s.keys().len(), BIN_LIMIT);
        assert_eq!(s.count(), 6000);
        // The top is intact, the lowest kept key carries the collapsed counts.
        assert_eq!(s.bins().last().map(|b| b.0), Some(1338 + 5999));
        assert_eq!(s.bins()[0].1, 6000 - 4095);
        assert_eq!(s.bins().iter().map(|b| b.1).sum::<u64>(), 6000);
    }

    #[test]
    fn from_bins_rejects_bad_input() {
        assert_eq!(
            DDSketch::from_bins(&[1, 2], &[1], 1, 0.0, 0.0, 0.0, 0.0),
            Err(SketchError::LengthMismatch { keys: 2, counts: 1 })
        );
        assert_eq!(
            DDSketch::from_bins(&[40000], &[1], 1, 0.0, 0.0, 0.0, 0.0),
            Err(SketchError::KeyOutOfRange(40000))
        );
        let s = DDSketch::from_bins(&[5, 3, 5], &[1, 2, 3], 6, 0.0, 0.0, 0.0, 0.0).expect("ok");
        assert_eq!(s.bins(), &[(3, 2), (5, 4)]);
        // Non-finite summary fields are replaced by what the bins imply.
        let k = i32::from(key_of(2.0));
        let s = DDSketch::from_bins(&[k], &[3], 3, f64::NAN, f64::INFINITY, f64::NAN, f64::NAN)
            .expect("ok");
        assert!((s.min() - 2.0).abs() < 0.02 && (s.max() - 2.0).abs() < 0.02);
        assert!((s.sum() - 6.0).abs() < 0.06 && (s.avg() - 2.0).abs() < 0.02);
    }

    fn exact_quantile(sorted: &[f64], q: f64) -> f64 {
        let rank = (q * (sorted.len() - 1) as f64).round_ties_even() as usize;
        sorted[rank]
    }

    proptest! {
        #[test]
        fn quantiles_within_one_percent(
            values in prop::collection::vec(
                prop_oneof![1e-6f64..1e9, -1e9f64..-1e-6], 1..2000),
            q in 0.0f64..=1.0,
        ) {
            let mut s = DDSketch::new();
            for &v in &values { s.insert(v); }
            let mut sorted = values.clone();
            sorted.sort_by(f64::total_cmp);
            let exact = exact_quantile(&sorted, q);
            let est = s.quantile(q).expect("non-empty");
            prop_assert!((est - exact).abs() <= 0.01 * exact.abs(),
                "q={} exact={} est={}", q, exact, est);
        }

        #[test]
        fn merge_equals_insert_all(
            a in prop::collection::vec(-1e6f64..1e6, 0..300),
            b in prop::collection::vec(-1e6f64..1e6, 0..300),
        ) {
            let mut sa = DDSketch::new();
            let mut sb = DDSketch::new();
            let mut all = DDSketch::new();
            for &v in &a { sa.insert(v); all.insert(v); }
            for &v in &b { sb.insert(v); all.insert(v); }
            sa.merge(&sb);
            prop_assert_eq!(sa.bins(), all.bins());
            prop_assert_eq!(sa.count(), all.count());
            prop_assert_eq!(sa.min(), all.min());
            prop_assert_eq!(sa.max(), all.max());
            prop_assert!((sa.sum() - all.sum()).abs() <= 1e-6 * (1.0 + all.sum().abs()));
            prop_assert!((sa.avg() - all.avg()).abs() <= 1e-6 * (1.0 + all.avg().abs()));
        }

        #[test]
        fn wire_roundtrip(values in prop::collection::vec(-1e6f64..1e6, 0..100)) {
            let mut s = DDSketch::new();
            for &v in &values { s.insert(v); }
            let back = DDSketch::from_bins(&s.keys(), &s.counts(), s.count(), s.min(), s.max(), s.sum(), s.avg())
                .expect("own output is valid");
            prop_assert_eq!(back, s);
        }
    }
}
