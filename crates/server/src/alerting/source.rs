//! The store seen by one org, for monitor evaluation.
//!
//! Why not the query module's adapter: monitors only need reads and the first read error, and
//! keeping this adapter here lets the query endpoints change theirs (caching, parallel reads)
//! without touching alerting.

use std::sync::Mutex;

use warden_query::{DataSource, Filter, RollupPoint, SeriesRef};
use warden_store::{Store, StoreError, TagFilter};

pub(super) struct OrgSource<'a> {
    pub(super) store: &'a Store,
    pub(super) org: u64,
    /// First read error: the round is skipped rather than read as "no data".
    pub(super) error: Mutex<Option<String>>,
}

impl OrgSource<'_> {
    fn note<T: Default>(&self, r: Result<T, StoreError>) -> T {
        r.unwrap_or_else(|e| {
            let mut g = self.error.lock().unwrap_or_else(|p| p.into_inner());
            g.get_or_insert(e.to_string());
            T::default()
        })
    }
}

impl DataSource for OrgSource<'_> {
    fn find_series(&self, metric: &str, filter: &Filter) -> Vec<SeriesRef> {
        self.store
            .find_series(self.org, metric, &TagFilter::All)
            .into_iter()
            .map(|m| SeriesRef {
                id: m.id,
                tags: m.tags,
                host: m.host,
                kind: m.kind,
                interval: m.interval,
                distribution: m.distribution,
                unit: m.unit,
            })
            .filter(|r| filter.matches(&r.effective_tags()))
            .collect()
    }

    fn points(&self, id: u64, from: i64, to: i64) -> Vec<warden_model::Point> {
        self.note(self.store.read(self.org, id, from, to))
    }

    fn rollups(&self, id: u64, from: i64, to: i64) -> Vec<RollupPoint> {
        self.note(self.store.read_rollup(self.org, id, from, to))
            .into_iter()
            .map(|r| RollupPoint {
                ts: r.ts,
                min: r.min,
                max: r.max,
                sum: r.sum,
                count: r.count,
            })
            .collect()
    }

    fn sketches(&self, id: u64, from: i64, to: i64) -> Vec<(i64, warden_model::DDSketch)> {
        self.note(self.store.read_sketches(self.org, id, from, to))
    }
}
