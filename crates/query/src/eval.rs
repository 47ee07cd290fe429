//! Evaluation of a parsed expression over a [`DataSource`], Datadog style.
//!
//! Pipeline for one metric query (mirrors Datadog's documented order):
//!
//! 1. **Grid.** One time grid is chosen for the whole expression so that arithmetic between
//!    queries aligns by index: bucket `i` covers `[start + i*step, start + (i+1)*step)`,
//!    `start` is `from` rounded down to a multiple of `step`, and buckets run while their start
//!    is before `to` (so `from=0,to=3600,step=60` gives 60 buckets, like Datadog's `length`).
//!    The step is the largest `.rollup(_, secs)` in the expression, else
//!    [`EvalOptions::interval`], else picked from the range on a 1s/10s/20s/60s/.../1d ladder so
//!    that there are at most [`AUTO_POINTS`] buckets (1 h → 20 s, 1 d → 300 s, 1 w → 1 h).
//!    An explicit step that would give more than [`EvalOptions::max_points`] buckets is raised
//!    along the same ladder (Datadog overrides too-fine rollups the same way).
//! 2. **Raw or rollups.** If `from` is older than `now - raw_retention_secs`, raw points may be
//!    gone, so *rollups* (exact min/max/sum/count per minute) are read for the whole range and
//!    the step is at least 60 s and a multiple of 60; otherwise raw points are read. Both go
//!    through the same accumulator, so `avg` over rollups is the exact `Σsum / Σcount` and not an
//!    average of averages.
//! 3. **Time aggregation** per series and bucket: the `.rollup()` method if given, else `avg`
//!    (gauges, rates) or `sum` (counts). `.as_count()`: counts sum; rates sum `value × interval`
//!    (the series' submission interval, 1 if unknown). `.as_rate()`: counts sum then divide by
//!    the step; rates average. Both are no-ops on gauges. Then `.fill()` per series.
//! 4. **Space aggregation** per group (`by {...}`, with `host` a tag like any other and a missing
//!    key giving `key:N/A`) and bucket, over the series that have a value there. Distributions
//!    merge every sketch of the group in the bucket and read avg/sum/min/max/count or the
//!    percentile from the merged sketch (exact global aggregates, not averages of percentiles).
//!    Buckets without data are `null`; groups with no data at all are omitted.
//! 5. **Functions and arithmetic** apply to the grouped series. Series-with-series arithmetic
//!    pairs series by identical `tag_set`; a side with exactly one series is broadcast; numbers
//!    are broadcast. Division by zero gives `null`.
//!
//! Simplifications (documented, not hidden): functions such as `diff` run after space
//! aggregation (Datadog runs some before it); there is no implicit linear interpolation of
//! gauges across gaps unless `.fill(linear)` is asked for.

use std::collections::{BTreeMap, HashMap};

use crate::ast::{
    BinOp, Expr, ExprKind, FillMethod, Function, MetricQuery, RankMethod, SpaceAgg, Span, TimeAgg,
    TypeModifier,
};
use crate::error::QueryError;
use crate::source::{DataSource, RollupPoint, SeriesRef};
use warden_model::{DDSketch, MetricKind};

/// Target bucket count when the step is chosen from the range.
pub const AUTO_POINTS: i64 = 300;

/// Steps the evaluator chooses from (seconds).
pub const STEP_LADDER: &[i64] = &[
    1, 10, 20, 60, 120, 300, 600, 1800, 3600, 7200, 14_400, 28_800, 43_200, 86_400, 172_800,
    604_800,
];

/// Latest accepted timestamp (seconds; year ~5138). Bounds keep all grid arithmetic in range.
pub const MAX_TIME: i64 = 100_000_000_000;

/// Knobs of an evaluation.
#[derive(Clone, Debug, PartialEq)]
pub struct EvalOptions {
    /// Raw points are kept this long (seconds); ranges starting earlier read rollups.
    /// `<= 0` means raw points never expire (always read raw).
    pub raw_retention_secs: i64,
    /// Current UNIX time in seconds (injected: the engine never reads the clock).
    pub now: i64,
    /// Forced step in seconds (v2 `interval`), unless the query has `.rollup(_, secs)`.
    pub interval: Option<i64>,
    /// Most buckets an explicit step may produce before it is coarsened.
    pub max_points: i64,
    /// Threads that may read and aggregate series in parallel (1 = on the caller's thread
    /// only). Results do not depend on it.
    pub threads: usize,
}

impl Default for EvalOptions {
    fn default() -> Self {
        Self {
            raw_retention_secs: 0,
            now: 0,
            interval: None,
            max_points: 1500,
            threads: 1,
        }
    }
}

/// The time grid of an evaluation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Grid {
    /// Start of bucket 0 (UNIX seconds).
    pub start: i64,
    /// Bucket width in seconds.
    pub step: i64,
    pub len: usize,
}

impl Grid {
    /// Bucket start times in seconds.
    pub fn times(&self) -> Vec<i64> {
        (0..self.len as i64)
            .map(|i| self.start + i * self.step)
            .collect()
    }
    /// Last second covered by the grid.
    pub fn last_second(&self) -> i64 {
        self.start + self.len as i64 * self.step - 1
    }
    fn index(&self, ts: i64) -> Option<usize> {
        let d = ts - self.start;
        if d < 0 {
            return None;
        }
        let i = (d / self.step) as usize;
        (i < self.len).then_some(i)
    }
}

/// One result series on the evaluation grid.
#[derive(Clone, Debug, PartialEq)]
pub struct ResultSeries {
    pub metric: String,
    pub display_name: String,
    /// Space aggregator name, `None` when combined series disagree.
    pub aggr: Option<String>,
    pub expression: String,
    pub scope: String,
    /// Group values (`host:a`), empty without `by`.
    pub tag_set: Vec<String>,
    pub unit: Option<String>,
    /// One value per grid bucket.
    pub values: Vec<Option<f64>>,
}

/// Result of [`evaluate`].
#[derive(Clone, Debug, PartialEq)]
pub struct Evaluation {
    pub grid: Grid,
    pub series: Vec<ResultSeries>,
}

/// The grid expressions over `[from, to]` will use. An automatic step is never finer than the
/// longest submission interval of the series involved (10 s DogStatsD data over 5 minutes gets
/// 10 s buckets, not 1 s buckets that are mostly empty and never line up across hosts).
pub fn grid_for(
    ds: &dyn DataSource,
    exprs: &[&Expr],
    from: i64,
    to: i64,
    opts: &EvalOptions,
) -> Result<Grid, QueryError> {
    let native = exprs
        .iter()
        .flat_map(|e| e.queries())
        .flat_map(|q| ds.find_series(&q.metric, &q.filter))
        .map(|r| r.interval)
        .max()
        .unwrap_or(0);
    grid_with(exprs, from, to, opts, native)
}

/// [`grid_for`] with the native interval given instead of looked up.
pub fn grid_with(
    exprs: &[&Expr],
    from: i64,
    to: i64,
    opts: &EvalOptions,
    native_interval: i64,
) -> Result<Grid, QueryError> {
    if !(0..=MAX_TIME).contains(&from) || !(0..=MAX_TIME).contains(&to) {
        return Err(QueryError::new(
            format!("time range {from}..{to} is out of bounds (UNIX seconds, 0..={MAX_TIME})"),
            0,
        ));
    }
    if to < from {
        return Err(QueryError::new(
            format!("'to' ({to}) is before 'from' ({from})"),
            0,
        ));
    }
    let range = (to - from).max(1);
    let explicit = exprs
        .iter()
        .flat_map(|e| e.queries())
        .filter_map(|q| q.rollup.and_then(|r| r.seconds))
        .max()
        .or(opts.interval.filter(|i| *i > 0));
    let max_points = opts.max_points.max(1);
    let mut step = match explicit {
        Some(s) if ceil_div(range, s) <= max_points => s,
        Some(s) => ladder_step(range, max_points).max(s),
        None => {
            let floor = STEP_LADDER
                .iter()
                .copied()
                .find(|s| *s >= native_interval)
                .unwrap_or(1);
            ladder_step(range, AUTO_POINTS).max(floor)
        }
    };
    if rollup_mode(from, opts) {
        step = ceil_div(step.max(60), 60) * 60;
    }
    let start = from.div_euclid(step) * step;
    let len = ceil_div((to - start).max(1), step);
    Ok(Grid {
        start,
        step,
        len: usize::try_from(len).unwrap_or(1).max(1),
    })
}

fn ladder_step(range: i64, points: i64) -> i64 {
    STEP_LADDER
        .iter()
        .copied()
        .find(|s| ceil_div(range, *s) <= points)
        .unwrap_or_else(|| ceil_div(ceil_div(range, points), 86_400) * 86_400)
}

/// `ceil(a / b)` for `a >= 0`, `b > 0`.
fn ceil_div(a: i64, b: i64) -> i64 {
    let b = b.max(1);
    a / b + i64::from(a % b != 0)
}

fn rollup_mode(from: i64, opts: &EvalOptions) -> bool {
    opts.raw_retention_secs > 0 && from < opts.now.saturating_sub(opts.raw_retention_secs)
}

/// Evaluates `expr` over `[from, to]` (UNIX seconds). `refs` resolves formula references
/// (`a`, `b`) to expressions; pass an empty map for plain queries.
pub fn evaluate(
    ds: &dyn DataSource,
    expr: &Expr,
    from: i64,
    to: i64,
    opts: &EvalOptions,
    refs: &HashMap<String, Expr>,
) -> Result<Evaluation, QueryError> {
    let mut all: Vec<&Expr> = vec![expr];
    all.extend(refs.values());
    let grid = grid_for(ds, &all, from, to, opts)?;
    let series = evaluate_on(ds, expr, grid, opts, refs)?;
    Ok(Evaluation { grid, series })
}

/// Evaluates on a given grid (several expressions sharing one grid, as in a v1 query list).
pub fn evaluate_on(
    ds: &dyn DataSource,
    expr: &Expr,
    grid: Grid,
    opts: &EvalOptions,
    refs: &HashMap<String, Expr>,
) -> Result<Vec<ResultSeries>, QueryError> {
    let ev = Evaluator {
        ds,
        opts,
        refs,
        pre: None,
        depth: 0,
    };
    series_only(ev.eval(expr, grid)?, expr)
}

/// Evaluates a formula whose references resolve to already computed series (`values`, keyed by
/// query name) on `grid`, e.g. one-bucket scalar results.
pub fn evaluate_with_values(
    ds: &dyn DataSource,
    expr: &Expr,
    grid: Grid,
    opts: &EvalOptions,
    values: &HashMap<String, Vec<ResultSeries>>,
) -> Result<Vec<ResultSeries>, QueryError> {
    let refs = HashMap::new();
    let ev = Evaluator {
        ds,
        opts,
        refs: &refs,
        pre: Some(values),
        depth: 0,
    };
    series_only(ev.eval(expr, grid)?, expr)
}

fn series_only(v: Val, expr: &Expr) -> Result<Vec<ResultSeries>, QueryError> {
    match v {
        Val::Series(s) => Ok(s),
        Val::Scalar(_) => Err(QueryError::new(
            "the expression has no metric query",
            expr.span.0,
        )),
    }
}

enum Val {
    Scalar(f64),
    Series(Vec<ResultSeries>),
}

struct Evaluator<'a> {
    ds: &'a dyn DataSource,
    opts: &'a EvalOptions,
    refs: &'a HashMap<String, Expr>,
    /// Already computed results of named queries (scalar formulas).
    pre: Option<&'a HashMap<String, Vec<ResultSeries>>>,
    depth: usize,
}

#[derive(Clone, Copy)]
struct Acc {
    min: f64,
    max: f64,
    sum: f64,
    count: u64,
}

impl Acc {
    fn add(&mut self, r: &RollupPoint, scale: f64) {
        self.min = self.min.min(r.min * scale);
        self.max = self.max.max(r.max * scale);
        self.sum += r.sum * scale;
        self.count += r.count;
    }
}

const EMPTY: Acc = Acc {
    min: f64::INFINITY,
    max: f64::NEG_INFINITY,
    sum: 0.0,
    count: 0,
};

impl Evaluator<'_> {
    fn eval(&self, e: &Expr, grid: Grid) -> Result<Val, QueryError> {
        match &e.kind {
            ExprKind::Number(v) => Ok(Val::Scalar(*v)),
            ExprKind::Query(q) => Ok(Val::Series(self.query(q, e.span, grid)?)),
            ExprKind::Ref(name) => {
                if let Some(s) = self.pre.and_then(|p| p.get(name)) {
                    return Ok(Val::Series(s.clone()));
                }
                let target = self.refs.get(name).ok_or_else(|| {
                    QueryError::new(format!("unknown query '{name}' in formula"), e.span.0)
                })?;
                if self.depth > 8 {
                    return Err(QueryError::new(
                        format!("query '{name}' refers to itself"),
                        e.span.0,
                    ));
                }
                let inner = Evaluator {
                    depth: self.depth + 1,
                    ..*self
                };
                inner.eval(target, grid)
            }
            ExprKind::Neg(inner) => Ok(match self.eval(inner, grid)? {
                Val::Scalar(v) => Val::Scalar(-v),
                Val::Series(mut s) => {
                    for x in &mut s {
                        x.values.iter_mut().for_each(|v| *v = v.map(|v| -v));
                        x.expression = format!("-{}", x.expression);
                        x.display_name = format!("-{}", x.display_name);
                    }
                    Val::Series(s)
                }
            }),
            ExprKind::Binary { op, lhs, rhs } => {
                let l = self.eval(lhs, grid)?;
                let r = self.eval(rhs, grid)?;
                Ok(binary(
                    *op,
                    l,
                    r,
                    paren(lhs, *op, false),
                    paren(rhs, *op, true),
                ))
            }
            ExprKind::Call {
                name,
                function,
                arg,
            } => {
                let inner_grid = match function {
                    Function::Timeshift(s) => Grid {
                        start: grid.start + s,
                        ..grid
                    },
                    _ => grid,
                };
                match self.eval(arg, inner_grid)? {
                    Val::Scalar(_) => Err(QueryError::new(
                        format!("{name}() needs a metric query, not a number"),
                        arg.span.0,
                    )),
                    Val::Series(s) => Ok(Val::Series(apply(name, function, s, grid))),
                }
            }
        }
    }

    fn query(
        &self,
        q: &MetricQuery,
        span: Span,
        grid: Grid,
    ) -> Result<Vec<ResultSeries>, QueryError> {
        let refs = self.ds.find_series(&q.metric, &q.filter);
        if let SpaceAgg::Percentile(_) = q.space_agg
            && let Some(r) = refs.iter().find(|r| !r.distribution)
        {
            let _ = r;
            return Err(QueryError::new(
                format!(
                    "{} needs a distribution metric; '{}' is not one",
                    q.space_agg.name(),
                    q.metric
                ),
                span.0,
            ));
        }
        let mut groups: BTreeMap<Vec<String>, Vec<&SeriesRef>> = BTreeMap::new();
        for r in &refs {
            let tags = r.effective_tags();
            let key = q
                .group_by
                .iter()
                .map(|k| {
                    let mut vals: Vec<&String> = tags
                        .iter()
                        .filter(|t| {
                            t.len() > k.len()
                                && t.starts_with(k.as_str())
                                && t.as_bytes()[k.len()] == b':'
                        })
                        .collect();
                    vals.sort();
                    vals.first()
                        .map_or_else(|| format!("{k}:N/A"), |t| (*t).clone())
                })
                .collect();
            groups.entry(key).or_default().push(r);
        }
        let from = grid.start;
        let to = grid.last_second();
        let rollups = rollup_mode(from, self.opts);
        // Time aggregation of every non-distribution series, in parallel when allowed; the
        // results are consumed in group order below.
        let plain: Vec<&SeriesRef> = groups
            .values()
            .filter(|m| !m.iter().all(|r| r.distribution))
            .flat_map(|m| m.iter().copied())
            .collect();
        let mut aggregated = self
            .map_series(&plain, |m| {
                self.time_aggregate(q, m, grid, from, to, rollups)
            })
            .into_iter();
        let mut out = Vec::new();
        for (tag_set, members) in groups {
            let values = if members.iter().all(|m| m.distribution) {
                self.distribution_values(q, &members, grid, from, to)
            } else {
                let per: Vec<Vec<Option<f64>>> = aggregated.by_ref().take(members.len()).collect();
                space_aggregate(q.space_agg, &per, grid.len)
            };
            if values.iter().all(Option::is_none) {
                continue;
            }
            let mut scope: Vec<String> = Vec::new();
            if q.filter_text != "*" {
                scope.push(q.filter_text.clone());
            }
            scope.extend(tag_set.iter().cloned());
            let scope = if scope.is_empty() {
                "*".to_string()
            } else {
                scope.join(",")
            };
            let mut expression = format!("{}:{}{{{}}}", q.space_agg.name(), q.metric, scope);
            if let Some(r) = q.rollup {
                match r.seconds {
                    Some(s) => expression.push_str(&format!(".rollup({}, {s})", r.method.name())),
                    None => expression.push_str(&format!(".rollup({})", r.method.name())),
                }
            }
            match q.modifier {
                Some(TypeModifier::AsCount) => expression.push_str(".as_count()"),
                Some(TypeModifier::AsRate) => expression.push_str(".as_rate()"),
                None => {}
            }
            out.push(ResultSeries {
                metric: q.metric.clone(),
                display_name: q.metric.clone(),
                aggr: Some(q.space_agg.name()),
                expression,
                scope,
                tag_set,
                unit: members.iter().find_map(|m| m.unit.clone()),
                values,
            });
        }
        Ok(out)
    }

    /// `f` over every series, on up to [`EvalOptions::threads`] threads, results in order.
    fn map_series<T: Send>(
        &self,
        series: &[&SeriesRef],
        f: impl Fn(&SeriesRef) -> T + Sync,
    ) -> Vec<T> {
        /// Below this many series per thread a thread costs more than it saves.
        const MIN_PER_THREAD: usize = 32;
        let threads = self.opts.threads.min(series.len() / MIN_PER_THREAD).max(1);
        if threads == 1 {
            return series.iter().map(|s| f(s)).collect();
        }
        let per = series.len().div_ceil(threads);
        let f = &f;
        std::thread::scope(|scope| {
            let handles: Vec<_> = series
                .chunks(per)
                .map(|chunk| scope.spawn(move || chunk.iter().map(|s| f(s)).collect::<Vec<T>>()))
                .collect();
            handles
                .into_iter()
                .flat_map(|h| match h.join() {
                    Ok(v) => v,
                    Err(p) => std::panic::resume_unwind(p),
                })
                .collect()
        })
    }

    fn time_aggregate(
        &self,
        q: &MetricQuery,
        s: &SeriesRef,
        grid: Grid,
        from: i64,
        to: i64,
        rollups: bool,
    ) -> Vec<Option<f64>> {
        let mut acc = vec![EMPTY; grid.len];
        let interval = if s.interval > 0 {
            s.interval as f64
        } else {
            1.0
        };
        let scale = match (s.kind, q.modifier) {
            (MetricKind::Rate, Some(TypeModifier::AsCount)) => interval,
            _ => 1.0,
        };
        let derived = match (s.kind, q.modifier) {
            (MetricKind::Gauge, _) => TimeAgg::Avg,
            (MetricKind::Count, _) => TimeAgg::Sum,
            (MetricKind::Rate, Some(TypeModifier::AsCount)) => TimeAgg::Sum,
            (MetricKind::Rate, _) => TimeAgg::Avg,
        };
        let method = q.rollup.map_or(derived, |r| r.method);
        let per_step = s.kind == MetricKind::Count && q.modifier == Some(TypeModifier::AsRate);
        let mut add = |r: &RollupPoint| {
            if let Some(i) = grid.index(r.ts) {
                acc[i].add(r, scale);
            }
        };
        if rollups {
            for r in self.ds.rollups(s.id, from, to) {
                if r.count > 0 {
                    add(&r);
                }
            }
        } else {
            for p in self.ds.points(s.id, from, to) {
                if p.value.is_finite() {
                    add(&RollupPoint {
                        ts: p.timestamp,
                        min: p.value,
                        max: p.value,
                        sum: p.value,
                        count: 1,
                    });
                }
            }
        }
        let mut values: Vec<Option<f64>> = acc
            .iter()
            .map(|a| {
                (a.count > 0).then(|| {
                    let v = match method {
                        TimeAgg::Avg => a.sum / a.count as f64,
                        TimeAgg::Sum => a.sum,
                        TimeAgg::Min => a.min,
                        TimeAgg::Max => a.max,
                        TimeAgg::Count => a.count as f64,
                    };
                    if per_step { v / grid.step as f64 } else { v }
                })
            })
            .collect();
        if let Some(f) = q.fill {
            fill(&mut values, f.method, f.limit.unwrap_or(300), grid.step);
        }
        values
    }

    fn distribution_values(
        &self,
        q: &MetricQuery,
        members: &[&SeriesRef],
        grid: Grid,
        from: i64,
        to: i64,
    ) -> Vec<Option<f64>> {
        let mut merged: Vec<Option<DDSketch>> = vec![None; grid.len];
        for m in members {
            for (ts, sk) in self.ds.sketches(m.id, from, to) {
                if let Some(i) = grid.index(ts) {
                    match &mut merged[i] {
                        Some(acc) => acc.merge(&sk),
                        slot @ None => *slot = Some(sk),
                    }
                }
            }
        }
        let mut values: Vec<Option<f64>> = merged
            .iter()
            .map(|s| {
                let s = s.as_ref().filter(|s| !s.is_empty())?;
                match q.space_agg {
                    SpaceAgg::Avg => Some(s.avg()),
                    SpaceAgg::Sum => Some(s.sum()),
                    SpaceAgg::Min => Some(s.min()),
                    SpaceAgg::Max => Some(s.max()),
                    SpaceAgg::Count => Some(s.count() as f64),
                    SpaceAgg::Percentile(p) => s.quantile(p),
                }
            })
            .collect();
        if let Some(f) = q.fill {
            fill(&mut values, f.method, f.limit.unwrap_or(300), grid.step);
        }
        values
    }
}

fn space_aggregate(agg: SpaceAgg, per: &[Vec<Option<f64>>], len: usize) -> Vec<Option<f64>> {
    (0..len)
        .map(|i| {
            let vals = per.iter().filter_map(|s| s.get(i).copied().flatten());
            let (mut n, mut sum, mut min, mut max) =
                (0usize, 0.0, f64::INFINITY, f64::NEG_INFINITY);
            for v in vals {
                n += 1;
                sum += v;
                min = min.min(v);
                max = max.max(v);
            }
            (n > 0).then_some(match agg {
                SpaceAgg::Avg | SpaceAgg::Percentile(_) => sum / n as f64,
                SpaceAgg::Sum => sum,
                SpaceAgg::Min => min,
                SpaceAgg::Max => max,
                SpaceAgg::Count => n as f64,
            })
        })
        .collect()
}

/// Fills gaps of at most `limit` seconds.
fn fill(values: &mut [Option<f64>], method: FillMethod, limit: i64, step: i64) {
    let max_gap = (limit / step.max(1)).max(1) as usize;
    let n = values.len();
    let mut i = 0;
    while i < n {
        if values[i].is_some() {
            i += 1;
            continue;
        }
        let gap_start = i;
        while i < n && values[i].is_none() {
            i += 1;
        }
        let gap_len = i - gap_start;
        let before = gap_start.checked_sub(1).and_then(|j| values[j]);
        let after = values.get(i).copied().flatten();
        match method {
            FillMethod::Null => {}
            FillMethod::Zero => {
                for v in values.iter_mut().skip(gap_start).take(gap_len.min(max_gap)) {
                    *v = Some(0.0);
                }
            }
            FillMethod::Last => {
                if let Some(b) = before {
                    for v in values.iter_mut().skip(gap_start).take(gap_len.min(max_gap)) {
                        *v = Some(b);
                    }
                }
            }
            FillMethod::Linear => {
                if let (Some(b), Some(a)) = (before, after)
                    && gap_len <= max_gap
                {
                    let span = (gap_len + 1) as f64;
                    for k in 0..gap_len {
                        values[gap_start + k] = Some(b + (a - b) * (k + 1) as f64 / span);
                    }
                }
            }
        }
    }
}

/// Whether a child's text needs parentheses inside a binary expression with operator `parent`.
fn paren(e: &Expr, parent: BinOp, rhs: bool) -> bool {
    let prec = |op: BinOp| {
        if matches!(op, BinOp::Add | BinOp::Sub) {
            1
        } else {
            2
        }
    };
    match e.kind {
        ExprKind::Binary { op, .. } => {
            prec(op) < prec(parent)
                || (rhs && prec(op) == prec(parent) && matches!(parent, BinOp::Sub | BinOp::Div))
        }
        _ => false,
    }
}

fn wrap(s: &str, p: bool) -> String {
    if p { format!("({s})") } else { s.to_string() }
}

fn op_values(op: BinOp, a: Option<f64>, b: Option<f64>) -> Option<f64> {
    let (a, b) = (a?, b?);
    let v = match op {
        BinOp::Add => a + b,
        BinOp::Sub => a - b,
        BinOp::Mul => a * b,
        BinOp::Div => {
            if b == 0.0 {
                return None;
            }
            a / b
        }
    };
    v.is_finite().then_some(v)
}

fn fmt_num(v: f64) -> String {
    if v.fract() == 0.0 && v.abs() < 1e15 {
        format!("{}", v as i64)
    } else {
        format!("{v}")
    }
}

fn binary(op: BinOp, l: Val, r: Val, lp: bool, rp: bool) -> Val {
    let sym = op.symbol();
    match (l, r) {
        (Val::Scalar(a), Val::Scalar(b)) => {
            Val::Scalar(op_values(op, Some(a), Some(b)).unwrap_or(f64::NAN))
        }
        (Val::Series(mut s), Val::Scalar(b)) => {
            for x in &mut s {
                x.values
                    .iter_mut()
                    .for_each(|v| *v = op_values(op, *v, Some(b)));
                x.expression = format!("{} {sym} {}", wrap(&x.expression, lp), fmt_num(b));
                x.display_name = format!("{} {sym} {}", wrap(&x.display_name, lp), fmt_num(b));
                if matches!(op, BinOp::Mul | BinOp::Div) {
                    x.unit = None;
                }
            }
            Val::Series(s)
        }
        (Val::Scalar(a), Val::Series(mut s)) => {
            for x in &mut s {
                x.values
                    .iter_mut()
                    .for_each(|v| *v = op_values(op, Some(a), *v));
                x.expression = format!("{} {sym} {}", fmt_num(a), wrap(&x.expression, rp));
                x.display_name = format!("{} {sym} {}", fmt_num(a), wrap(&x.display_name, rp));
                if matches!(op, BinOp::Mul | BinOp::Div) {
                    x.unit = None;
                }
            }
            Val::Series(s)
        }
        (Val::Series(ls), Val::Series(rs)) => {
            let mut pairs: Vec<(&ResultSeries, &ResultSeries, Vec<String>)> = Vec::new();
            if rs.len() == 1 {
                pairs.extend(ls.iter().map(|l| (l, &rs[0], l.tag_set.clone())));
            } else if ls.len() == 1 {
                pairs.extend(rs.iter().map(|r| (&ls[0], r, r.tag_set.clone())));
            } else {
                let by_tags: HashMap<&Vec<String>, &ResultSeries> =
                    rs.iter().map(|r| (&r.tag_set, r)).collect();
                for l in &ls {
                    if let Some(r) = by_tags.get(&l.tag_set) {
                        pairs.push((l, r, l.tag_set.clone()));
                    }
                }
            }
            Val::Series(
                pairs
                    .into_iter()
                    .map(|(l, r, tag_set)| ResultSeries {
                        metric: format!("{} {sym} {}", wrap(&l.metric, lp), wrap(&r.metric, rp)),
                        display_name: format!(
                            "{} {sym} {}",
                            wrap(&l.display_name, lp),
                            wrap(&r.display_name, rp)
                        ),
                        aggr: if l.aggr == r.aggr {
                            l.aggr.clone()
                        } else {
                            None
                        },
                        expression: format!(
                            "{} {sym} {}",
                            wrap(&l.expression, lp),
                            wrap(&r.expression, rp)
                        ),
                        scope: if l.tag_set.len() >= r.tag_set.len() {
                            l.scope.clone()
                        } else {
                            r.scope.clone()
                        },
                        tag_set,
                        unit: if matches!(op, BinOp::Add | BinOp::Sub) && l.unit == r.unit {
                            l.unit.clone()
                        } else {
                            None
                        },
                        values: l
                            .values
                            .iter()
                            .zip(&r.values)
                            .map(|(a, b)| op_values(op, *a, *b))
                            .collect(),
                    })
                    .collect(),
            )
        }
    }
}

/// Ranking score of one series for `top()` and formula limits.
pub fn rank_score(values: &[Option<f64>], method: RankMethod) -> Option<f64> {
    let vals: Vec<f64> = values.iter().flatten().copied().collect();
    if vals.is_empty() {
        return None;
    }
    Some(match method {
        RankMethod::Mean => vals.iter().sum::<f64>() / vals.len() as f64,
        RankMethod::Max => vals.iter().copied().fold(f64::NEG_INFINITY, f64::max),
        RankMethod::Min => vals.iter().copied().fold(f64::INFINITY, f64::min),
        RankMethod::Last => *vals.last()?,
        RankMethod::Area => vals.iter().sum(),
        RankMethod::L2Norm => vals.iter().map(|v| v * v).sum::<f64>().sqrt(),
        RankMethod::Norm => vals.iter().map(|v| v.abs()).sum(),
    })
}

/// Keeps the `n` best series by `method` (series without values rank last), stable on ties.
pub fn top_n(
    mut s: Vec<ResultSeries>,
    n: usize,
    method: RankMethod,
    descending: bool,
) -> Vec<ResultSeries> {
    let mut scored: Vec<(Option<f64>, ResultSeries)> = s
        .drain(..)
        .map(|x| (rank_score(&x.values, method), x))
        .collect();
    scored.sort_by(|(a, _), (b, _)| match (a, b) {
        (Some(a), Some(b)) => {
            let o = a.partial_cmp(b).unwrap_or(std::cmp::Ordering::Equal);
            if descending { o.reverse() } else { o }
        }
        (Some(_), None) => std::cmp::Ordering::Less,
        (None, Some(_)) => std::cmp::Ordering::Greater,
        (None, None) => std::cmp::Ordering::Equal,
    });
    scored.into_iter().take(n).map(|(_, x)| x).collect()
}

fn map_values(s: &mut [ResultSeries], f: impl Fn(f64) -> Option<f64>) {
    for x in s {
        x.values.iter_mut().for_each(|v| *v = v.and_then(&f));
    }
}

fn apply(
    name: &str,
    function: &Function,
    mut s: Vec<ResultSeries>,
    grid: Grid,
) -> Vec<ResultSeries> {
    let step = grid.step as f64;
    let rename = |s: &mut Vec<ResultSeries>| {
        for x in s.iter_mut() {
            x.expression = format!("{name}({})", x.expression);
            x.display_name = format!("{name}({})", x.display_name);
        }
    };
    match function {
        Function::Abs => map_values(&mut s, |v| Some(v.abs())),
        Function::Log2 => map_values(&mut s, |v| (v > 0.0).then(|| v.log2())),
        Function::Log10 => map_values(&mut s, |v| (v > 0.0).then(|| v.log10())),
        Function::ClampMin(m) => map_values(&mut s, |v| Some(v.max(*m))),
        Function::ClampMax(m) => map_values(&mut s, |v| Some(v.min(*m))),
        Function::CutoffMin(m) => map_values(&mut s, |v| (v >= *m).then_some(v)),
        Function::CutoffMax(m) => map_values(&mut s, |v| (v <= *m).then_some(v)),
        Function::PerSecond => map_values(&mut s, |v| Some(v / step)),
        Function::PerMinute => map_values(&mut s, |v| Some(v / step * 60.0)),
        Function::PerHour => map_values(&mut s, |v| Some(v / step * 3600.0)),
        Function::DefaultZero => {
            for x in &mut s {
                x.values
                    .iter_mut()
                    .for_each(|v| *v = Some(v.unwrap_or(0.0)));
            }
        }
        Function::Cumsum | Function::Integral => {
            let mul = if *function == Function::Integral {
                step
            } else {
                1.0
            };
            for x in &mut s {
                let mut total = 0.0;
                for v in x.values.iter_mut() {
                    if let Some(y) = v {
                        total += *y * mul;
                        *v = Some(total);
                    }
                }
            }
        }
        Function::Dt | Function::Diff | Function::MonotonicDiff | Function::Derivative => {
            for x in &mut s {
                let mut prev: Option<(usize, f64)> = None;
                let mut out = vec![None; x.values.len()];
                for (i, v) in x.values.iter().enumerate() {
                    let Some(v) = *v else { continue };
                    if let Some((j, p)) = prev {
                        let dt = (i - j) as f64 * step;
                        let d = v - p;
                        out[i] = match function {
                            Function::Dt => Some(dt),
                            Function::Diff => Some(d),
                            Function::MonotonicDiff => (d >= 0.0).then_some(d),
                            _ => Some(d / dt),
                        };
                    }
                    prev = Some((i, v));
                }
                x.values = out;
            }
        }
        Function::Timeshift(_) => {}
        Function::Top {
            n,
            method,
            descending,
        } => s = top_n(s, *n, *method, *descending),
        Function::ExcludeNull => s.retain(|x| !x.tag_set.iter().any(|t| t.ends_with(":N/A"))),
        Function::CountNonzero | Function::CountNotNull => {
            let nonzero = *function == Function::CountNonzero;
            let values = (0..grid.len)
                .map(|i| {
                    let n = s
                        .iter()
                        .filter(|x| {
                            x.values
                                .get(i)
                                .copied()
                                .flatten()
                                .is_some_and(|v| !nonzero || v != 0.0)
                        })
                        .count();
                    Some(n as f64)
                })
                .collect();
            let first = s.first();
            let metric = first.map_or_else(String::new, |x| x.metric.clone());
            let expression = first.map_or_else(String::new, |x| x.expression.clone());
            s = vec![ResultSeries {
                display_name: metric.clone(),
                metric,
                aggr: None,
                expression,
                scope: "*".into(),
                tag_set: Vec::new(),
                unit: None,
                values,
            }];
        }
        Function::Ewma(n) => {
            let alpha = 2.0 / (*n as f64 + 1.0);
            for x in &mut s {
                let mut state: Option<f64> = None;
                for v in x.values.iter_mut() {
                    if let Some(y) = *v {
                        let e = state.map_or(y, |p| alpha * y + (1.0 - alpha) * p);
                        state = Some(e);
                        *v = Some(e);
                    }
                }
            }
        }
        Function::Median(n) => window(&mut s, *n, |w| {
            let mut w = w.to_vec();
            w.sort_by(|a, b| a.partial_cmp(b).unwrap_or(std::cmp::Ordering::Equal));
            let m = w.len() / 2;
            if w.len() % 2 == 1 {
                w[m]
            } else {
                (w[m - 1] + w[m]) / 2.0
            }
        }),
        Function::MovingRollup { seconds, method } => {
            let n = (*seconds / grid.step).max(1) as usize;
            let method = *method;
            window(&mut s, n, move |w| match method {
                TimeAgg::Avg => w.iter().sum::<f64>() / w.len() as f64,
                TimeAgg::Sum => w.iter().sum(),
                TimeAgg::Min => w.iter().copied().fold(f64::INFINITY, f64::min),
                TimeAgg::Max => w.iter().copied().fold(f64::NEG_INFINITY, f64::max),
                TimeAgg::Count => w.len() as f64,
            });
        }
    }
    rename(&mut s);
    s
}

/// Trailing window of `n` buckets; a bucket with a value gets `f` of the values in its window.
fn window(s: &mut [ResultSeries], n: usize, f: impl Fn(&[f64]) -> f64) {
    for x in s {
        let orig = x.values.clone();
        for (i, v) in x.values.iter_mut().enumerate() {
            if v.is_none() {
                continue;
            }
            let lo = (i + 1).saturating_sub(n);
            let w: Vec<f64> = orig[lo..=i].iter().flatten().copied().collect();
            *v = Some(f(&w));
        }
    }
}
