//! Evaluation of monitor metric queries (`avg(last_5m):<query> > 90`) and relative time
//! parsing for the CLI (`--from -1h`). Both live here so monitors and `warden query` share the
//! exact query semantics of the HTTP API.

use std::collections::HashMap;

use crate::error::QueryError;
use crate::eval::{EvalOptions, evaluate};
use crate::parser::{Comparator, MonitorQuery};
use crate::source::DataSource;

/// The value of one monitor group over its window and whether it breaches the threshold.
#[derive(Clone, Debug, PartialEq)]
pub struct MonitorGroup {
    /// Group tags (`host:a`), empty for an ungrouped query.
    pub tag_set: Vec<String>,
    /// `None` when the group has no data in the window.
    pub value: Option<f64>,
    pub triggered: bool,
}

impl Comparator {
    /// `value <op> threshold`.
    pub fn holds(&self, value: f64, threshold: f64) -> bool {
        match self {
            Comparator::Lt => value < threshold,
            Comparator::Le => value <= threshold,
            Comparator::Gt => value > threshold,
            Comparator::Ge => value >= threshold,
            Comparator::Eq => value == threshold,
            Comparator::Ne => value != threshold,
        }
    }
}

/// Evaluates a monitor query over `[now - window, now]`: each result series is reduced with the
/// monitor's time aggregator (`avg`/`sum`/`min`/`max`/`last` of the non-null points; `change` =
/// last − first; `pct_change` = change / |first| × 100) and compared with the threshold.
pub fn evaluate_monitor(
    ds: &dyn DataSource,
    m: &MonitorQuery,
    now: i64,
    opts: &EvalOptions,
) -> Result<Vec<MonitorGroup>, QueryError> {
    let ev = evaluate(ds, &m.expr, now - m.window_secs, now, opts, &HashMap::new())?;
    Ok(ev
        .series
        .into_iter()
        .map(|s| {
            let vals: Vec<f64> = s.values.iter().flatten().copied().collect();
            let value = reduce(&m.time_agg, &vals);
            MonitorGroup {
                tag_set: s.tag_set,
                value,
                triggered: value.is_some_and(|v| m.comparator.holds(v, m.threshold)),
            }
        })
        .collect())
}

fn reduce(how: &str, vals: &[f64]) -> Option<f64> {
    let (first, last) = (*vals.first()?, *vals.last()?);
    Some(match how {
        "sum" => vals.iter().sum(),
        "min" => vals.iter().copied().fold(f64::INFINITY, f64::min),
        "max" => vals.iter().copied().fold(f64::NEG_INFINITY, f64::max),
        "last" => last,
        "change" => last - first,
        "pct_change" => {
            if first == 0.0 {
                return None;
            }
            (last - first) / first.abs() * 100.0
        }
        _ => vals.iter().sum::<f64>() / vals.len() as f64,
    })
}

/// Parses a CLI time: `now`, `-15m`/`-1h`/`-2d`/`-1w`/`-30s` relative to `now`, or absolute
/// UNIX seconds.
pub fn parse_time(s: &str, now: i64) -> Result<i64, QueryError> {
    let t = s.trim();
    if t == "now" {
        return Ok(now);
    }
    if let Some(rel) = t.strip_prefix('-') {
        let split = rel.find(|c: char| !c.is_ascii_digit()).unwrap_or(rel.len());
        let (n, unit) = rel.split_at(split);
        let n: i64 = n
            .parse()
            .map_err(|_| QueryError::expected(format!("bad time '{t}'"), 1, "-<n>s|m|h|d|w"))?;
        let mult = match unit {
            "s" => 1,
            "m" => 60,
            "h" => 3600,
            "d" => 86_400,
            "w" => 604_800,
            _ => {
                return Err(QueryError::expected(
                    format!("bad time unit '{unit}'"),
                    1 + split,
                    "s, m, h, d or w",
                ));
            }
        };
        return n
            .checked_mul(mult)
            .and_then(|d| now.checked_sub(d))
            .ok_or_else(|| QueryError::new(format!("time '{t}' out of range"), 0));
    }
    t.parse::<i64>().map_err(|_| {
        QueryError::expected(
            format!("bad time '{t}'"),
            0,
            "now, -<n>s|m|h|d|w or UNIX seconds",
        )
    })
}
