//! The wire shapes of `GET /api/v1/query` and `POST /api/v2/query/timeseries`, as pure
//! functions from (data source, request) to JSON, so the HTTP layer only does auth and I/O.
//!
//! v1 `interval` is in seconds (what Datadog's real responses carry; the spec's "milliseconds"
//! wording is contradicted by its own example), `pointlist` timestamps and `start`/`end`/
//! `from_date`/`to_date` are milliseconds. `pointlist` has one entry per bucket of the grid,
//! `null` where there is no data; `end` is the last millisecond covered.

use std::collections::HashMap;
use std::io::Write as _;

use serde_json::{Map, Value, json};

use crate::ast::{Expr, RankMethod};
use crate::error::QueryError;
use crate::eval::{
    EvalOptions, Grid, ResultSeries, evaluate_on, evaluate_with_values, grid_for, rank_score, top_n,
};
use crate::parser::{parse, parse_formula, parse_list};
use crate::source::DataSource;

/// What a v1 query evaluated to, before it is rendered.
struct V1Result {
    grid: Grid,
    group_by: Vec<String>,
    /// `(query_index, series)`.
    series: Vec<(usize, ResultSeries)>,
}

fn eval_v1(
    ds: &dyn DataSource,
    query: &str,
    from_s: i64,
    to_s: i64,
    opts: &EvalOptions,
) -> Result<V1Result, QueryError> {
    let exprs = parse_list(query)?;
    let all: Vec<&Expr> = exprs.iter().collect();
    let grid = grid_for(ds, &all, from_s, to_s, opts)?;
    let mut group_by: Vec<String> = Vec::new();
    for q in exprs.iter().flat_map(|e| e.queries()) {
        for g in &q.group_by {
            if !group_by.contains(g) {
                group_by.push(g.clone());
            }
        }
    }
    let refs = HashMap::new();
    let mut series = Vec::new();
    for (index, e) in exprs.iter().enumerate() {
        series.extend(
            evaluate_on(ds, e, grid, opts, &refs)?
                .into_iter()
                .map(|s| (index, s)),
        );
    }
    Ok(V1Result {
        grid,
        group_by,
        series,
    })
}

/// `GET /api/v1/query?from=<s>&to=<s>&query=<q>`: the `MetricsQueryResponse` body.
/// `query` may hold several comma-separated expressions; each gets its `query_index`.
pub fn run_v1(
    ds: &dyn DataSource,
    query: &str,
    from_s: i64,
    to_s: i64,
    opts: &EvalOptions,
) -> Result<Value, QueryError> {
    let V1Result {
        grid,
        group_by,
        series: evaluated,
    } = eval_v1(ds, query, from_s, to_s, opts)?;
    let times = grid.times();
    let mut series = Vec::new();
    for (index, s) in evaluated {
        let pointlist: Vec<Value> = times
            .iter()
            .zip(&s.values)
            .map(|(t, v)| json!([(*t as f64) * 1000.0, v]))
            .collect();
        series.push(json!({
            "metric": s.metric,
            "display_name": s.display_name,
            "aggr": s.aggr,
            "expression": s.expression,
            "scope": s.scope,
            "tag_set": s.tag_set,
            "pointlist": pointlist,
            "start": grid.start * 1000,
            "end": grid.last_second() * 1000,
            "interval": grid.step,
            "length": grid.len,
            "query_index": index,
            "unit": [unit_object(s.unit.as_deref()), Value::Null],
        }));
    }
    Ok(json!({
        "status": "ok",
        "res_type": "time_series",
        "query": query,
        "from_date": from_s * 1000,
        "to_date": to_s * 1000,
        "group_by": group_by,
        "message": "",
        "error": Value::Null,
        "series": series,
    }))
}

/// [`run_v1`] rendered straight to JSON bytes: the same text as `run_v1(..)?.to_string()`
/// (keys in the same sorted order, numbers formatted alike) without building a
/// `serde_json::Value` tree first — for 1,000 series × 180 points that tree (an array per
/// point) cost more than evaluating the query.
pub fn run_v1_json(
    ds: &dyn DataSource,
    query: &str,
    from_s: i64,
    to_s: i64,
    opts: &EvalOptions,
) -> Result<Vec<u8>, QueryError> {
    let r = eval_v1(ds, query, from_s, to_s, opts)?;
    let grid = r.grid;
    let points: usize = r.series.iter().map(|(_, s)| s.values.len()).sum();
    let mut out: Vec<u8> = Vec::with_capacity(512 + r.series.len() * 400 + points * 24);
    // serde_json's writer never fails on a Vec; the results are ignored for that reason.
    let put = |out: &mut Vec<u8>, v: &dyn erased::Ser| v.write(out);
    out.extend_from_slice(b"{\"error\":null,\"from_date\":");
    put(&mut out, &(from_s * 1000));
    out.extend_from_slice(b",\"group_by\":");
    put(&mut out, &r.group_by);
    out.extend_from_slice(b",\"message\":\"\",\"query\":");
    put(&mut out, &query);
    out.extend_from_slice(b",\"res_type\":\"time_series\",\"series\":[");
    for (k, (index, s)) in r.series.iter().enumerate() {
        if k > 0 {
            out.push(b',');
        }
        out.extend_from_slice(b"{\"aggr\":");
        put(&mut out, &s.aggr);
        out.extend_from_slice(b",\"display_name\":");
        put(&mut out, &s.display_name);
        out.extend_from_slice(b",\"end\":");
        put(&mut out, &(grid.last_second() * 1000));
        out.extend_from_slice(b",\"expression\":");
        put(&mut out, &s.expression);
        out.extend_from_slice(b",\"interval\":");
        put(&mut out, &grid.step);
        out.extend_from_slice(b",\"length\":");
        put(&mut out, &grid.len);
        out.extend_from_slice(b",\"metric\":");
        put(&mut out, &s.metric);
        out.extend_from_slice(b",\"pointlist\":[");
        for (i, v) in s.values.iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            out.push(b'[');
            // A whole number of milliseconds below 2^53: serde_json writes such an f64 as
            // the integer plus ".0"; integer formatting is several times cheaper.
            let ms = (grid.start + i as i64 * grid.step) * 1000;
            let _ = write!(out, "{ms}.0");
            out.push(b',');
            put(&mut out, v);
            out.push(b']');
        }
        out.extend_from_slice(b"],\"query_index\":");
        put(&mut out, index);
        out.extend_from_slice(b",\"scope\":");
        put(&mut out, &s.scope);
        out.extend_from_slice(b",\"start\":");
        put(&mut out, &(grid.start * 1000));
        out.extend_from_slice(b",\"tag_set\":");
        put(&mut out, &s.tag_set);
        out.extend_from_slice(b",\"unit\":[");
        put(&mut out, &unit_object(s.unit.as_deref()));
        out.extend_from_slice(b",null]}");
    }
    out.extend_from_slice(b"],\"status\":\"ok\",\"to_date\":");
    put(&mut out, &(to_s * 1000));
    out.push(b'}');
    Ok(out)
}

/// Serializing through `&dyn` keeps [`run_v1_json`] one readable sequence of writes.
mod erased {
    pub(super) trait Ser {
        fn write(&self, out: &mut Vec<u8>);
    }
    impl<T: serde::Serialize + ?Sized> Ser for T {
        fn write(&self, out: &mut Vec<u8>) {
            let _ = serde_json::to_writer(out, self);
        }
    }
}

fn field<'a>(obj: &'a Map<String, Value>, name: &str, path: &str) -> Result<&'a Value, QueryError> {
    obj.get(name)
        .ok_or_else(|| QueryError::new(format!("missing field {path}.{name}"), 0))
}

fn as_object<'a>(v: &'a Value, path: &str) -> Result<&'a Map<String, Value>, QueryError> {
    v.as_object()
        .ok_or_else(|| QueryError::new(format!("{path} must be an object"), 0))
}

fn as_ms(v: &Value, path: &str) -> Result<i64, QueryError> {
    v.as_i64()
        .or_else(|| {
            v.as_f64()
                .filter(|f| f.is_finite() && f.fract() == 0.0)
                .map(|f| f as i64)
        })
        .ok_or_else(|| QueryError::new(format!("{path} must be an integer (milliseconds)"), 0))
}

fn as_str<'a>(v: &'a Value, path: &str) -> Result<&'a str, QueryError> {
    v.as_str()
        .ok_or_else(|| QueryError::new(format!("{path} must be a string"), 0))
}

fn prefixed(e: QueryError, path: &str) -> QueryError {
    QueryError {
        message: format!("{path}: {}", e.message),
        ..e
    }
}

/// Aggregators accepted on scalar queries (`/api/v2/query/scalar`).
pub const SCALAR_AGGREGATORS: &[&str] = &[
    "avg",
    "min",
    "max",
    "sum",
    "last",
    "percentile",
    "mean",
    "l2norm",
    "area",
];

struct V2Formula {
    text: String,
    alias: Option<String>,
    expr: Expr,
    /// `(count, descending)`.
    limit: Option<(usize, bool)>,
}

struct V2Request {
    /// Milliseconds.
    from: i64,
    to: i64,
    /// Step in seconds.
    interval: Option<i64>,
    /// `(name, query, aggregator)`.
    named: Vec<(String, Expr, String)>,
    formulas: Vec<V2Formula>,
}

fn parse_request(request: &Value, kind: &str) -> Result<V2Request, QueryError> {
    let root = as_object(request, "body")?;
    let data = as_object(field(root, "data", "body")?, "data")?;
    let ty = as_str(field(data, "type", "data")?, "data.type")?;
    if ty != kind {
        return Err(QueryError::new(
            format!("data.type must be \"{kind}\", got \"{ty}\""),
            0,
        ));
    }
    let path = "data.attributes";
    let attrs = as_object(field(data, "attributes", "data")?, path)?;
    let from = as_ms(field(attrs, "from", path)?, "data.attributes.from")?;
    let to = as_ms(field(attrs, "to", path)?, "data.attributes.to")?;
    let interval = match attrs.get("interval") {
        None | Some(Value::Null) => None,
        Some(v) => {
            let ms = as_ms(v, "data.attributes.interval")?;
            if ms <= 0 {
                return Err(QueryError::new(
                    "data.attributes.interval must be positive",
                    0,
                ));
            }
            Some((ms / 1000).max(1))
        }
    };
    let queries = field(attrs, "queries", path)?
        .as_array()
        .ok_or_else(|| QueryError::new("data.attributes.queries must be an array", 0))?;
    if queries.is_empty() {
        return Err(QueryError::new(
            "data.attributes.queries must not be empty",
            0,
        ));
    }
    let mut named: Vec<(String, Expr, String)> = Vec::new();
    for (i, q) in queries.iter().enumerate() {
        let qp = format!("data.attributes.queries[{i}]");
        let o = as_object(q, &qp)?;
        if let Some(ds) = o.get("data_source") {
            let ds = as_str(ds, &format!("{qp}.data_source"))?;
            if ds != "metrics" {
                return Err(QueryError::new(
                    format!("{qp}.data_source \"{ds}\" is not supported (only \"metrics\")"),
                    0,
                ));
            }
        }
        let name = as_str(field(o, "name", &qp)?, &format!("{qp}.name"))?;
        let text = as_str(field(o, "query", &qp)?, &format!("{qp}.query"))?;
        let expr = parse(text).map_err(|e| prefixed(e, &format!("{qp}.query")))?;
        if named.iter().any(|(n, _, _)| n == name) {
            return Err(QueryError::new(
                format!("{qp}.name \"{name}\" is used twice"),
                0,
            ));
        }
        let aggregator = match o.get("aggregator").filter(|v| !v.is_null()) {
            None => "avg".to_string(),
            Some(a) => {
                let a = as_str(a, &format!("{qp}.aggregator"))?;
                if !SCALAR_AGGREGATORS.contains(&a) {
                    return Err(QueryError::new(
                        format!(
                            "{qp}.aggregator \"{a}\" is not one of {}",
                            SCALAR_AGGREGATORS.join(", ")
                        ),
                        0,
                    ));
                }
                a.to_string()
            }
        };
        named.push((name.to_string(), expr, aggregator));
    }
    let mut formulas: Vec<V2Formula> = Vec::new();
    if let Some(fs) = attrs.get("formulas").filter(|v| !v.is_null()) {
        let fs = fs
            .as_array()
            .ok_or_else(|| QueryError::new("data.attributes.formulas must be an array", 0))?;
        for (i, f) in fs.iter().enumerate() {
            let fp = format!("data.attributes.formulas[{i}]");
            let o = as_object(f, &fp)?;
            let text = as_str(field(o, "formula", &fp)?, &format!("{fp}.formula"))?;
            let expr = parse_formula(text).map_err(|e| prefixed(e, &format!("{fp}.formula")))?;
            let limit = match o.get("limit").filter(|v| !v.is_null()) {
                None => None,
                Some(l) => {
                    let lp = format!("{fp}.limit");
                    let l = as_object(l, &lp)?;
                    let count = match l.get("count") {
                        None => 10,
                        Some(c) => c.as_u64().filter(|c| *c > 0).ok_or_else(|| {
                            QueryError::new(format!("{lp}.count must be a positive integer"), 0)
                        })? as usize,
                    };
                    let desc = match l.get("order").map(|o| o.as_str()) {
                        None | Some(Some("desc")) => true,
                        Some(Some("asc")) => false,
                        _ => {
                            return Err(QueryError::new(
                                format!("{lp}.order must be \"asc\" or \"desc\""),
                                0,
                            ));
                        }
                    };
                    Some((count, desc))
                }
            };
            let alias = match o.get("alias").filter(|v| !v.is_null()) {
                None => None,
                Some(a) => Some(as_str(a, &format!("{fp}.alias"))?.to_string()),
            };
            formulas.push(V2Formula {
                text: text.to_string(),
                alias,
                expr,
                limit,
            });
        }
    }
    Ok(V2Request {
        from,
        to,
        interval,
        named,
        formulas,
    })
}

/// `POST /api/v2/query/timeseries`: `request` is the whole
/// `{"data":{"type":"timeseries_request","attributes":{...}}}` body. Without `formulas` every
/// query is returned (its `query_index`); with them, every formula (its index), each limited
/// by `limit {count, order}` ranked by mean.
pub fn run_v2(
    ds: &dyn DataSource,
    request: &Value,
    opts: &EvalOptions,
) -> Result<Value, QueryError> {
    let V2Request {
        from,
        to,
        interval,
        named,
        formulas,
    } = parse_request(request, "timeseries_request")?;
    let refs: HashMap<String, Expr> = named
        .iter()
        .map(|(n, e, _)| (n.clone(), e.clone()))
        .collect();
    let mut all: Vec<&Expr> = named.iter().map(|(_, e, _)| e).collect();
    all.extend(formulas.iter().map(|f| &f.expr));
    let vopts = EvalOptions {
        interval,
        ..opts.clone()
    };
    let (from_s, to_s) = (from.div_euclid(1000), to.div_euclid(1000));
    let grid = grid_for(ds, &all, from_s, to_s, &vopts)?;
    let mut out: Vec<(usize, ResultSeries)> = Vec::new();
    if formulas.is_empty() {
        for (i, (name, e, _)) in named.iter().enumerate() {
            let s = evaluate_on(ds, e, grid, &vopts, &refs)
                .map_err(|err| prefixed(err, &format!("query '{name}'")))?;
            out.extend(s.into_iter().map(|s| (i, s)));
        }
    } else {
        for (i, f) in formulas.iter().enumerate() {
            let mut s = evaluate_on(ds, &f.expr, grid, &vopts, &refs)
                .map_err(|err| prefixed(err, &format!("data.attributes.formulas[{i}].formula")))?;
            if let Some((count, desc)) = f.limit {
                s = top_n(s, count, RankMethod::Mean, desc);
            }
            out.extend(s.into_iter().map(|s| (i, s)));
        }
    }
    let times: Vec<i64> = grid.times().iter().map(|t| t * 1000).collect();
    let series: Vec<Value> = out
        .iter()
        .map(|(i, s)| {
            json!({
                "group_tags": s.tag_set,
                "query_index": i,
                "unit": [unit_object(s.unit.as_deref()), Value::Null],
            })
        })
        .collect();
    let values: Vec<Value> = out.iter().map(|(_, s)| json!(s.values)).collect();
    Ok(json!({
        "data": {
            "type": "timeseries_response",
            "attributes": {
                "series": series,
                "times": times,
                "values": values,
            }
        }
    }))
}

/// `POST /api/v2/query/scalar`: one number per group. Each query's series is reduced over the
/// whole range with its `aggregator` (`avg`/`mean`, `min`, `max`, `last`, `sum`/`area`,
/// `l2norm` over the time series; `percentile` evaluates the query as a single bucket, so a
/// `p99:` distribution query gets the percentile of the whole window's merged sketch).
/// Formulas then combine the reduced values per group. Response: `columns`, a `group` column
/// (`values` = the group tags of each row) followed by a `number` column (`values` = the
/// numbers, `meta.unit`) per query, or per formula when there are formulas (named by `alias`,
/// else the formula text).
pub fn run_v2_scalar(
    ds: &dyn DataSource,
    request: &Value,
    opts: &EvalOptions,
) -> Result<Value, QueryError> {
    let V2Request {
        from,
        to,
        interval: _,
        named,
        formulas,
    } = parse_request(request, "scalar_request")?;
    let refs: HashMap<String, Expr> = named
        .iter()
        .map(|(n, e, _)| (n.clone(), e.clone()))
        .collect();
    let all: Vec<&Expr> = named.iter().map(|(_, e, _)| e).collect();
    let (from_s, to_s) = (from.div_euclid(1000), to.div_euclid(1000));
    let grid = grid_for(ds, &all, from_s, to_s, opts)?;
    let one = Grid {
        start: from_s,
        step: (to_s - from_s).max(1),
        len: 1,
    };
    let mut reduced: HashMap<String, Vec<ResultSeries>> = HashMap::new();
    let mut columns_src: Vec<(String, Vec<ResultSeries>)> = Vec::new();
    for (name, e, agg) in &named {
        let series = if agg == "percentile" {
            evaluate_on(ds, e, one, opts, &refs)
        } else {
            evaluate_on(ds, e, grid, opts, &refs).map(|mut s| {
                let method = match agg.as_str() {
                    "min" => RankMethod::Min,
                    "max" => RankMethod::Max,
                    "last" => RankMethod::Last,
                    "sum" | "area" => RankMethod::Area,
                    "l2norm" => RankMethod::L2Norm,
                    _ => RankMethod::Mean,
                };
                for x in &mut s {
                    x.values = vec![rank_score(&x.values, method)];
                }
                s
            })
        }
        .map_err(|err| prefixed(err, &format!("query '{name}'")))?;
        reduced.insert(name.clone(), series.clone());
        columns_src.push((name.clone(), series));
    }
    if !formulas.is_empty() {
        columns_src.clear();
        for (i, f) in formulas.iter().enumerate() {
            let mut s = evaluate_with_values(ds, &f.expr, one, opts, &reduced)
                .map_err(|err| prefixed(err, &format!("data.attributes.formulas[{i}].formula")))?;
            if let Some((count, desc)) = f.limit {
                s = top_n(s, count, RankMethod::Mean, desc);
            }
            columns_src.push((f.alias.clone().unwrap_or_else(|| f.text.clone()), s));
        }
    }
    let mut columns = Vec::new();
    for (name, s) in columns_src {
        let unit = s.iter().find_map(|x| x.unit.clone());
        columns.push(json!({
            "name": name,
            "type": "group",
            "values": s.iter().map(|x| x.tag_set.clone()).collect::<Vec<_>>(),
        }));
        columns.push(json!({
            "name": name,
            "type": "number",
            "values": s.iter().map(|x| x.values.first().copied().flatten()).collect::<Vec<_>>(),
            "meta": {"unit": [unit_object(unit.as_deref()), Value::Null]},
        }));
    }
    Ok(json!({
        "data": {
            "type": "scalar_response",
            "attributes": {"columns": columns}
        }
    }))
}

/// Datadog's unit object for a unit name (`null` when there is none).
pub fn unit_object(name: Option<&str>) -> Value {
    let Some(name) = name.filter(|n| !n.is_empty()) else {
        return Value::Null;
    };
    let (family, plural, scale, short): (&str, String, f64, String) = match name {
        "percent" => ("percentage", "percent".into(), 1.0, "%".into()),
        "fraction" => ("percentage", "fractions".into(), 1.0, "".into()),
        "bit" => ("bytes", "bits".into(), 0.125, "b".into()),
        "byte" => ("bytes", "bytes".into(), 1.0, "B".into()),
        "kibibyte" => ("bytes", "kibibytes".into(), 1024.0, "KiB".into()),
        "mebibyte" => ("bytes", "mebibytes".into(), 1_048_576.0, "MiB".into()),
        "gibibyte" => ("bytes", "gibibytes".into(), 1_073_741_824.0, "GiB".into()),
        "nanosecond" => ("time", "nanoseconds".into(), 1e-9, "ns".into()),
        "microsecond" => ("time", "microseconds".into(), 1e-6, "μs".into()),
        "millisecond" => ("time", "milliseconds".into(), 1e-3, "ms".into()),
        "second" => ("time", "seconds".into(), 1.0, "s".into()),
        "minute" => ("time", "minutes".into(), 60.0, "min".into()),
        "hour" => ("time", "hours".into(), 3600.0, "hr".into()),
        "day" => ("time", "days".into(), 86_400.0, "d".into()),
        "request" => ("network", "requests".into(), 1.0, "req".into()),
        "connection" => ("network", "connections".into(), 1.0, "conn".into()),
        "packet" => ("network", "packets".into(), 1.0, "pkt".into()),
        "error" => ("general", "errors".into(), 1.0, "err".into()),
        other => ("general", format!("{other}s"), 1.0, other.to_string()),
    };
    json!({
        "family": family,
        "name": name,
        "plural": plural,
        "scale_factor": scale,
        "short_name": short,
    })
}
