//! Terminal rendering of a v1 query response for `warden query`: one row per series with
//! last/min/avg/max and a unicode sparkline. Pure (`&Value -> String`) so the CLI stays thin and
//! the output is testable.

use serde_json::Value;

const BARS: [char; 8] = ['▁', '▂', '▃', '▄', '▅', '▆', '▇', '█'];

/// Widest sparkline, in characters.
pub const SPARK_WIDTH: usize = 40;

/// A sparkline of `values` at most `width` characters wide: consecutive values are averaged into
/// one character, gaps (`None`) are spaces, the range min..max maps onto `▁`..`█`.
pub fn sparkline(values: &[Option<f64>], width: usize) -> String {
    if values.is_empty() || width == 0 {
        return String::new();
    }
    let chunks = values.len().min(width);
    let cells: Vec<Option<f64>> = (0..chunks)
        .map(|c| {
            let lo = c * values.len() / chunks;
            let hi = ((c + 1) * values.len() / chunks).max(lo + 1);
            let vals: Vec<f64> = values[lo..hi]
                .iter()
                .flatten()
                .copied()
                .filter(|v| v.is_finite())
                .collect();
            (!vals.is_empty()).then(|| vals.iter().sum::<f64>() / vals.len() as f64)
        })
        .collect();
    let min = cells
        .iter()
        .flatten()
        .copied()
        .fold(f64::INFINITY, f64::min);
    let max = cells
        .iter()
        .flatten()
        .copied()
        .fold(f64::NEG_INFINITY, f64::max);
    cells
        .iter()
        .map(|c| match c {
            None => ' ',
            Some(v) if max > min => {
                let i = ((v - min) / (max - min) * 7.0).round() as usize;
                BARS[i.min(7)]
            }
            Some(_) => BARS[3],
        })
        .collect()
}

fn fmt(v: Option<f64>) -> String {
    match v {
        None => "-".into(),
        Some(v) if v != 0.0 && (v.abs() >= 1e7 || v.abs() < 1e-3) => format!("{v:.3e}"),
        Some(v) => {
            let s = format!("{v:.3}");
            let s = s.trim_end_matches('0').trim_end_matches('.');
            s.to_string()
        }
    }
}

/// Renders a `/api/v1/query` response as a table (series, last, min, avg, max, sparkline).
/// Anything that is not a v1 response renders as a one-line explanation rather than panicking.
pub fn render_table(resp: &Value) -> String {
    if let Some(err) = resp.get("error").and_then(Value::as_str) {
        return format!("error: {err}\n");
    }
    let Some(series) = resp.get("series").and_then(Value::as_array) else {
        return "not a query response (no \"series\")\n".into();
    };
    let mut out = String::new();
    if let Some(q) = resp.get("query").and_then(Value::as_str) {
        out.push_str(q);
        out.push('\n');
    }
    if series.is_empty() {
        out.push_str("no data\n");
        return out;
    }
    let header = ["SERIES", "LAST", "MIN", "AVG", "MAX", "TREND"];
    let mut rows: Vec<[String; 6]> = Vec::new();
    for s in series {
        let values: Vec<Option<f64>> = s
            .get("pointlist")
            .and_then(Value::as_array)
            .map(|pl| {
                pl.iter()
                    .map(|p| p.get(1).and_then(Value::as_f64))
                    .collect()
            })
            .unwrap_or_default();
        let present: Vec<f64> = values.iter().flatten().copied().collect();
        let tag_set: Vec<&str> = s
            .get("tag_set")
            .and_then(Value::as_array)
            .map(|t| t.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        let metric = s
            .get("display_name")
            .or_else(|| s.get("metric"))
            .and_then(Value::as_str)
            .unwrap_or("?");
        let name = if tag_set.is_empty() {
            metric.to_string()
        } else {
            format!("{metric} {{{}}}", tag_set.join(","))
        };
        let avg = (!present.is_empty()).then(|| present.iter().sum::<f64>() / present.len() as f64);
        rows.push([
            name,
            fmt(present.last().copied()),
            fmt(present.iter().copied().reduce(f64::min)),
            fmt(avg),
            fmt(present.iter().copied().reduce(f64::max)),
            sparkline(&values, SPARK_WIDTH),
        ]);
    }
    let mut widths = header.map(|h| h.chars().count());
    for r in &rows {
        for (w, c) in widths.iter_mut().zip(r.iter()) {
            *w = (*w).max(c.chars().count());
        }
    }
    let line = |cells: &[String; 6]| -> String {
        let mut l = String::new();
        for (i, (c, w)) in cells.iter().zip(widths.iter()).enumerate() {
            let pad = w - c.chars().count();
            if i == 0 || i == 5 {
                l.push_str(c);
                if i == 0 {
                    l.push_str(&" ".repeat(pad));
                }
            } else {
                l.push_str(&" ".repeat(pad));
                l.push_str(c);
            }
            if i < 5 {
                l.push_str("  ");
            }
        }
        l.trim_end().to_string() + "\n"
    };
    out.push_str(&line(&header.map(String::from)));
    for r in &rows {
        out.push_str(&line(r));
    }
    out
}
