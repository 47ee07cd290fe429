//! Where the evaluator reads data from. The server implements [`DataSource`] on top of the
//! store; [`MemorySource`] is a plain in-memory implementation for tests, examples and the CLI's
//! offline mode. Keeping the engine behind this trait is what lets it stay pure (no I/O).

use crate::ast::Filter;
use warden_model::{DDSketch, MetricKind, Point};

/// One stored series matching a query.
#[derive(Clone, Debug, PartialEq)]
pub struct SeriesRef {
    pub id: u64,
    /// `key:value` (or bare) tags, without the host.
    pub tags: Vec<String>,
    /// Empty when the series has no host; otherwise it is groupable/filterable as `host:<h>`.
    pub host: String,
    pub kind: MetricKind,
    /// Seconds per point as submitted (0 = unknown); used by `.as_count()` on rate series.
    pub interval: i64,
    /// True for distributions: the evaluator reads [`DataSource::sketches`] instead of points.
    pub distribution: bool,
    /// Metric unit name as submitted (`byte`, `percent`), if any.
    pub unit: Option<String>,
}

impl SeriesRef {
    /// Tags plus `host:<host>`, the set a [`Filter`] and a group-by see.
    pub fn effective_tags(&self) -> Vec<String> {
        let mut t = self.tags.clone();
        if !self.host.is_empty() {
            let h = format!("host:{}", self.host);
            if !t.contains(&h) {
                t.push(h);
            }
        }
        t
    }
}

/// Exact min/max/sum/count of the raw points in `[ts, ts + width)` (the store keeps 1-minute
/// rollups past raw retention).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RollupPoint {
    pub ts: i64,
    pub min: f64,
    pub max: f64,
    pub sum: f64,
    pub count: u64,
}

/// Read access to stored metrics. Time ranges are UNIX seconds, `from` and `to` inclusive.
/// `Sync` because the evaluator may read several series in parallel
/// ([`crate::EvalOptions::threads`]).
pub trait DataSource: Sync {
    /// Series of `metric` whose tags (plus `host:<host>`) match `filter`.
    fn find_series(&self, metric: &str, filter: &Filter) -> Vec<SeriesRef>;
    /// Raw points, ascending.
    fn points(&self, id: u64, from: i64, to: i64) -> Vec<Point>;
    /// Rollups, ascending (used when `from` is past raw retention).
    fn rollups(&self, id: u64, from: i64, to: i64) -> Vec<RollupPoint>;
    /// Distribution sketches `(bucket start, sketch)`, ascending.
    fn sketches(&self, id: u64, from: i64, to: i64) -> Vec<(i64, DDSketch)>;
}

/// One series held by [`MemorySource`].
#[derive(Clone, Debug, Default)]
pub struct MemorySeries {
    pub metric: String,
    pub tags: Vec<String>,
    pub host: String,
    pub kind: Option<MetricKind>,
    pub interval: i64,
    pub unit: Option<String>,
    pub points: Vec<Point>,
    pub rollups: Vec<RollupPoint>,
    pub sketches: Vec<(i64, DDSketch)>,
}

/// An in-memory [`DataSource`]; series ids are their index.
#[derive(Clone, Debug, Default)]
pub struct MemorySource {
    pub series: Vec<MemorySeries>,
}

impl MemorySource {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a gauge/count/rate series of raw points and returns its id.
    pub fn add(
        &mut self,
        metric: &str,
        host: &str,
        tags: &[&str],
        kind: MetricKind,
        interval: i64,
        points: &[(i64, f64)],
    ) -> u64 {
        self.series.push(MemorySeries {
            metric: metric.to_string(),
            tags: tags.iter().map(|t| t.to_string()).collect(),
            host: host.to_string(),
            kind: Some(kind),
            interval,
            points: points
                .iter()
                .map(|&(timestamp, value)| Point { timestamp, value })
                .collect(),
            ..MemorySeries::default()
        });
        self.series.len() as u64 - 1
    }

    /// Adds a series that only has rollups (its raw points have expired).
    pub fn add_rollups(
        &mut self,
        metric: &str,
        host: &str,
        tags: &[&str],
        kind: MetricKind,
        rollups: Vec<RollupPoint>,
    ) -> u64 {
        self.series.push(MemorySeries {
            metric: metric.to_string(),
            tags: tags.iter().map(|t| t.to_string()).collect(),
            host: host.to_string(),
            kind: Some(kind),
            rollups,
            ..MemorySeries::default()
        });
        self.series.len() as u64 - 1
    }

    /// Adds a distribution series.
    pub fn add_sketches(
        &mut self,
        metric: &str,
        host: &str,
        tags: &[&str],
        sketches: Vec<(i64, DDSketch)>,
    ) -> u64 {
        self.series.push(MemorySeries {
            metric: metric.to_string(),
            tags: tags.iter().map(|t| t.to_string()).collect(),
            host: host.to_string(),
            kind: None,
            sketches,
            ..MemorySeries::default()
        });
        self.series.len() as u64 - 1
    }

    fn get(&self, id: u64) -> Option<&MemorySeries> {
        usize::try_from(id).ok().and_then(|i| self.series.get(i))
    }
}

impl DataSource for MemorySource {
    fn find_series(&self, metric: &str, filter: &Filter) -> Vec<SeriesRef> {
        self.series
            .iter()
            .enumerate()
            .filter(|(_, s)| s.metric == metric)
            .map(|(i, s)| SeriesRef {
                id: i as u64,
                tags: s.tags.clone(),
                host: s.host.clone(),
                kind: s.kind.unwrap_or(MetricKind::Gauge),
                interval: s.interval,
                distribution: s.kind.is_none(),
                unit: s.unit.clone(),
            })
            .filter(|r| filter.matches(&r.effective_tags()))
            .collect()
    }

    fn points(&self, id: u64, from: i64, to: i64) -> Vec<Point> {
        self.get(id).map_or_else(Vec::new, |s| {
            s.points
                .iter()
                .filter(|p| p.timestamp >= from && p.timestamp <= to)
                .copied()
                .collect()
        })
    }

    fn rollups(&self, id: u64, from: i64, to: i64) -> Vec<RollupPoint> {
        self.get(id).map_or_else(Vec::new, |s| {
            let mut out: Vec<RollupPoint> = s
                .rollups
                .iter()
                .filter(|r| r.ts >= from && r.ts <= to)
                .copied()
                .collect();
            // Like the store: rollups are computed from raw points where those still exist.
            for p in s
                .points
                .iter()
                .filter(|p| p.timestamp >= from && p.timestamp <= to)
            {
                let ts = p.timestamp.div_euclid(60) * 60;
                match out.iter_mut().find(|r| r.ts == ts) {
                    Some(r) => {
                        r.min = r.min.min(p.value);
                        r.max = r.max.max(p.value);
                        r.sum += p.value;
                        r.count += 1;
                    }
                    None => out.push(RollupPoint {
                        ts,
                        min: p.value,
                        max: p.value,
                        sum: p.value,
                        count: 1,
                    }),
                }
            }
            out.sort_by_key(|r| r.ts);
            out
        })
    }

    fn sketches(&self, id: u64, from: i64, to: i64) -> Vec<(i64, DDSketch)> {
        self.get(id).map_or_else(Vec::new, |s| {
            s.sketches
                .iter()
                .filter(|(t, _)| *t >= from && *t <= to)
                .cloned()
                .collect()
        })
    }
}
