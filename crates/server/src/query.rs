//! Query endpoints: `GET /api/v1/query`, `POST /api/v2/query/timeseries` and
//! `POST /api/v2/query/scalar`, evaluated by `warden-query` over the store.
//!
//! Why an adapter and not a query-aware store: the engine is pure (no I/O) and reads through
//! [`DataSource`]; [`StoreSource`] pins one org, so a query can only ever see the series of the
//! org whose keys authenticated it. Evaluation blocks (store reads): it runs under
//! `block_in_place` (or on a blocking thread on a single-threaded runtime).

use std::sync::Mutex;

use warden_query::{DataSource, EvalOptions, Filter, QueryError, RollupPoint, SeriesRef};
use warden_store::TagFilter;

use super::*;

/// The store seen by one org, for one request.
pub(crate) struct StoreSource<'a> {
    pub(crate) store: &'a Store,
    pub(crate) org: u64,
    /// First read error (answered 503: the data exists but could not be read).
    pub(crate) error: Mutex<Option<String>>,
    /// Series lookups of this request: the evaluator asks once to choose the grid and again
    /// to evaluate.
    pub(crate) found: Mutex<Vec<(String, Filter, Vec<SeriesRef>)>>,
}

impl<'a> StoreSource<'a> {
    pub(crate) fn new(store: &'a Store, org: u64) -> Self {
        Self {
            store,
            org,
            error: Mutex::new(None),
            found: Mutex::new(Vec::new()),
        }
    }

    fn note<T: Default>(&self, r: Result<T, StoreError>) -> T {
        match r {
            Ok(v) => v,
            Err(e) => {
                self.error
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .get_or_insert(e.to_string());
                T::default()
            }
        }
    }
}

/// The part of `f` the store's inverted index can evaluate: the same series or more (the
/// caller still checks every candidate with `Filter::matches`), never fewer. Terms the index
/// cannot express (a `*` in a tag key, a pattern over whole tags) widen to "every series".
fn index_filter(f: &Filter) -> Option<TagFilter> {
    Some(match f {
        Filter::All => TagFilter::All,
        Filter::Eq { key, value } => TagFilter::Eq(key.clone(), value.clone()),
        Filter::Has(key) => TagFilter::Has(key.clone()),
        Filter::Glob { key, value } if !key.contains('*') => {
            TagFilter::Wildcard(key.clone(), value.clone())
        }
        Filter::Glob { .. } | Filter::TagGlob(_) => return None,
        // Exact complement needs the exact inner set.
        Filter::Not(inner) => TagFilter::Not(Box::new(exact_index_filter(inner)?)),
        Filter::And(fs) => {
            // Any subset of the terms narrows correctly (a superset of the answer).
            let parts: Vec<TagFilter> = fs.iter().filter_map(index_filter).collect();
            match parts.len() {
                0 => TagFilter::All,
                _ => TagFilter::And(parts),
            }
        }
        Filter::Or(fs) => TagFilter::Or(fs.iter().map(index_filter).collect::<Option<_>>()?),
    })
}

/// Like [`index_filter`] but only when the index gives exactly the answer (needed under `Not`).
/// Not for globs: the index also offers a bare tag `key` to a `key:pattern` (as the value
/// `""`), which the query language does not match.
fn exact_index_filter(f: &Filter) -> Option<TagFilter> {
    Some(match f {
        Filter::All => TagFilter::All,
        Filter::Eq { key, value } => TagFilter::Eq(key.clone(), value.clone()),
        Filter::Has(key) => TagFilter::Has(key.clone()),
        Filter::Glob { .. } | Filter::TagGlob(_) => return None,
        Filter::Not(inner) => TagFilter::Not(Box::new(exact_index_filter(inner)?)),
        Filter::And(fs) => {
            TagFilter::And(fs.iter().map(exact_index_filter).collect::<Option<_>>()?)
        }
        Filter::Or(fs) => TagFilter::Or(fs.iter().map(exact_index_filter).collect::<Option<_>>()?),
    })
}

impl DataSource for StoreSource<'_> {
    fn find_series(&self, metric: &str, filter: &Filter) -> Vec<SeriesRef> {
        let mut found = self.found.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((_, _, refs)) = found.iter().find(|(m, f, _)| m == metric && f == filter) {
            return refs.clone();
        }
        // When the index answers exactly, the candidates need no second check.
        let (pushed, exact) = match exact_index_filter(filter) {
            Some(f) => (f, true),
            None => (index_filter(filter).unwrap_or(TagFilter::All), false),
        };
        let refs: Vec<SeriesRef> = self
            .store
            .find_series(self.org, metric, &pushed)
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
            .filter(|r| exact || filter.matches(&r.effective_tags()))
            .collect();
        found.push((metric.to_string(), filter.clone(), refs.clone()));
        refs
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
        threads: threads(),
        ..EvalOptions::default()
    }
}

/// Threads a query may use: the CPUs this process may run on, looked up once (the lookup
/// reads cgroup files, too slow to repeat per request).
fn threads() -> usize {
    static THREADS: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    *THREADS.get_or_init(|| std::thread::available_parallelism().map_or(1, |n| n.get().min(8)))
}

/// A query answer: a JSON value, or JSON text already rendered.
enum Answer {
    Value(serde_json::Value),
    Text(Vec<u8>),
}

/// Runs `f` over the org's store on a blocking thread.
async fn run_blocking(
    state: &Arc<AppState>,
    org: u64,
    f: impl FnOnce(&dyn DataSource, &EvalOptions) -> Result<Answer, QueryError> + Send + 'static,
) -> Result<Response<Full<Bytes>>, ApiError> {
    let store = state.store.clone();
    let opts = eval_options(state);
    let run = move || {
        let src = StoreSource::new(&store, org);
        let r = f(&src, &opts);
        (r, src.error.into_inner().unwrap_or_else(|p| p.into_inner()))
    };
    // On the multi-threaded runtime the query runs right here and the runtime moves this
    // worker's other tasks away: no hand-off to a pool thread that first has to be woken and
    // scheduled, which on a busy machine was most of a small query's latency.
    let out = if tokio::runtime::Handle::current().runtime_flavor()
        == tokio::runtime::RuntimeFlavor::MultiThread
    {
        tokio::task::block_in_place(run)
    } else {
        tokio::task::spawn_blocking(run)
            .await
            .map_err(|_| ApiError::new(500, "query task failed"))?
    };
    match out {
        (_, Some(e)) => {
            tracing::error!(error = %e, "store read failed during a query");
            Err(ApiError::new(503, "storage read failed; retry later"))
        }
        (Ok(Answer::Value(v)), None) => Ok(json_response(200, &v)),
        (Ok(Answer::Text(t)), None) => {
            let mut r = Response::new(Full::new(Bytes::from(t)));
            r.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            );
            Ok(r)
        }
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
        warden_query::run_v1_json(ds, &query, from, to, opts).map(Answer::Text)
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
        warden_query::run_v2(ds, &req, opts).map(Answer::Value)
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
        warden_query::run_v2_scalar(ds, &req, opts).map(Answer::Value)
    })
    .await
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use warden_store::{SeriesWrite, StoreOptions};

    /// Pushing a filter down to the index must select exactly the series the query language's
    /// own matcher selects, whatever mix of terms, bare tags and hosts.
    #[test]
    fn pushed_down_filters_select_what_the_matcher_selects() {
        let dir = tempfile::tempdir().unwrap();
        let opts = StoreOptions {
            background: false,
            ..StoreOptions::default()
        };
        let store = Store::open(dir.path(), opts).unwrap();
        let now = now_secs();
        let tag_sets: &[&[&str]] = &[
            &["env:prod", "service:web-1"],
            &["env:dev", "service:web-2", "canary"],
            &["env:prod", "service", "az:a:b"],
            &["service:db", "host:extra"],
            &[],
        ];
        let mut writes = Vec::new();
        for (i, tags) in tag_sets.iter().enumerate() {
            for host in ["", "h1", "h2"] {
                writes.push(SeriesWrite {
                    name: "m".into(),
                    tags: tags.iter().map(|t| t.to_string()).collect(),
                    host: host.into(),
                    kind: warden_model::MetricKind::Gauge,
                    interval: 10,
                    unit: None,
                    points: vec![warden_model::Point {
                        timestamp: now - i as i64,
                        value: 1.0,
                    }],
                });
            }
        }
        store.append(1, &writes).unwrap();
        let filters = [
            "*",
            "env:prod",
            "host:h1",
            "host:extra",
            "service",
            "canary",
            "service:web-*",
            "service:*",
            "!service:*",
            "!env:prod",
            "env:prod,!host:h2",
            "*eb*",
            "!canary,service:*",
            "s*:web-1",
            "az:a:b",
            "az:a*",
            "nope:x",
        ];
        for f in filters {
            let q = warden_query::parse(&format!("avg:m{{{f}}}")).unwrap();
            let warden_query::ExprKind::Query(mq) = &q.kind else {
                panic!("{f}: not a query");
            };
            let src = StoreSource::new(&store, 1);
            let mut got: Vec<u64> = src
                .find_series("m", &mq.filter)
                .iter()
                .map(|r| r.id)
                .collect();
            got.sort_unstable();
            let mut want: Vec<u64> = store
                .find_series(1, "m", &TagFilter::All)
                .into_iter()
                .filter(|m| {
                    let r = SeriesRef {
                        id: m.id,
                        tags: m.tags.clone(),
                        host: m.host.clone(),
                        kind: m.kind,
                        interval: m.interval,
                        distribution: m.distribution,
                        unit: m.unit.clone(),
                    };
                    mq.filter.matches(&r.effective_tags())
                })
                .map(|m| m.id)
                .collect();
            want.sort_unstable();
            assert_eq!(got, want, "{f}");
            // Asked again (memoized): the same.
            assert_eq!(src.find_series("m", &mq.filter).len(), want.len(), "{f}");
        }
    }
}
