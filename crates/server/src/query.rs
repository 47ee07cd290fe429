//! Query endpoints: `GET /api/v1/query`, `POST /api/v2/query/timeseries` and
//! `POST /api/v2/query/scalar`, evaluated by `warden-query` over the store.
//!
//! Why an adapter and not a query-aware store: the engine is pure (no I/O) and reads through
//! [`DataSource`]; [`StoreSource`] pins one org, so a query can only ever see the series of the
//! org whose keys authenticated it. Evaluation runs on a blocking thread (store reads block).

use std::cell::RefCell;

use warden_query::{DataSource, EvalOptions, Filter, QueryError, RollupPoint, SeriesRef};
use warden_store::TagFilter;

use super::*;

/// The store seen by one org.
pub(crate) struct StoreSource<'a> {
    pub(crate) store: &'a Store,
    pub(crate) org: u64,
    /// First read error (answered 503: the data exists but could not be read).
    pub(crate) error: RefCell<Option<String>>,
}

impl StoreSource<'_> {
    fn note<T: Default>(&self, r: Result<T, StoreError>) -> T {
        match r {
            Ok(v) => v,
            Err(e) => {
                self.error.borrow_mut().get_or_insert(e.to_string());
                T::default()
            }
        }
    }
}

impl DataSource for StoreSource<'_> {
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

fn query_error(e: QueryError) -> ApiError {
    ApiError {
        status: 400,
        message: e.to_string(),
        extra: Some(serde_json::json!({ "position": e.position })),
    }
}

fn eval_options(state: &AppState) -> EvalOptions {
    EvalOptions {
        raw_retention_secs: state.limits.max_age_secs,
        now: now_secs(),
        ..EvalOptions::default()
    }
}

/// Runs `f` over the org's store on a blocking thread.
async fn run_blocking(
    state: &Arc<AppState>,
    org: u64,
    f: impl FnOnce(&dyn DataSource, &EvalOptions) -> Result<serde_json::Value, QueryError>
    + Send
    + 'static,
) -> Result<Response<Full<Bytes>>, ApiError> {
    let store = state.store.clone();
    let opts = eval_options(state);
    let out = tokio::task::spawn_blocking(move || {
        let src = StoreSource {
            store: &store,
            org,
            error: RefCell::new(None),
        };
        let r = f(&src, &opts);
        (r, src.error.into_inner())
    })
    .await
    .map_err(|_| ApiError::new(500, "query task failed"))?;
    match out {
        (_, Some(e)) => {
            tracing::error!(error = %e, "store read failed during a query");
            Err(ApiError::new(503, "storage read failed; retry later"))
        }
        (Ok(v), None) => Ok(json_response(200, &v)),
        (Err(e), None) => Err(query_error(e)),
    }
}

fn int_param(uri: &hyper::Uri, name: &str) -> Result<i64, ApiError> {
    let v = query_param(uri, name)
        .ok_or_else(|| ApiError::new(400, format!("missing required parameter {name:?}")))?;
    let v = v.trim();
    v.parse::<i64>()
        .or_else(|_| match v.parse::<f64>() {
            Ok(f) if f.is_finite() && f.abs() < 1e15 => Ok(f as i64),
            _ => Err(()),
        })
        .map_err(|_| {
            ApiError::new(
                400,
                format!("parameter {name:?} must be UNIX seconds, got {v:?}"),
            )
        })
}

/// `GET /api/v1/query?from=&to=&query=`.
pub(crate) async fn v1(
    state: &Arc<AppState>,
    org: u64,
    uri: &hyper::Uri,
) -> Result<Response<Full<Bytes>>, ApiError> {
    let from = int_param(uri, "from")?;
    let to = int_param(uri, "to")?;
    let query = query_param(uri, "query")
        .ok_or_else(|| ApiError::new(400, "missing required parameter \"query\""))?;
    if from > to {
        return Err(ApiError::new(
            400,
            format!("\"from\" ({from}) is after \"to\" ({to})"),
        ));
    }
    if query.len() > 8192 {
        return Err(ApiError::new(400, "query longer than 8192 bytes"));
    }
    run_blocking(state, org, move |ds, opts| {
        warden_query::run_v1(ds, &query, from, to, opts)
    })
    .await
}

fn parse_body(raw: &[u8]) -> Result<serde_json::Value, ApiError> {
    serde_json::from_slice(raw)
        .map_err(|e| ApiError::new(400, format!("body is not valid JSON: {e}")))
}

/// `POST /api/v2/query/timeseries`.
pub(crate) async fn v2(
    state: &Arc<AppState>,
    org: u64,
    raw: Vec<u8>,
) -> Result<Response<Full<Bytes>>, ApiError> {
    let req = parse_body(&raw)?;
    run_blocking(state, org, move |ds, opts| {
        warden_query::run_v2(ds, &req, opts)
    })
    .await
}

/// `POST /api/v2/query/scalar`.
pub(crate) async fn v2_scalar(
    state: &Arc<AppState>,
    org: u64,
    raw: Vec<u8>,
) -> Result<Response<Full<Bytes>>, ApiError> {
    let req = parse_body(&raw)?;
    run_blocking(state, org, move |ds, opts| {
        warden_query::run_v2_scalar(ds, &req, opts)
    })
    .await
}
