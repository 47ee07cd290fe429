//! Intake payload decoding and validation: body → store writes, or a 4xx naming the culprit.
//!
//! Why one validator for every format: the agent (protobuf), the official clients (JSON v1 and
//! v2) and hand-written scripts must get the same rules and the same kind of message, e.g.
//! `series[3].points[0]: timestamp is 2 days in the future`, so a user can fix the exact field.
//! JSON is walked as a `serde_json::Value` rather than deserialised into structs so that every
//! error carries its path; the decompressed-size limit bounds the memory this costs.
//!
//! A payload is all-or-nothing: one bad point refuses the whole request (nothing is written),
//! so a client that fixes its payload and retries does not duplicate the good part.

use std::io::Read;

use prost::Message;
use serde_json::Value;
use warden_model::{DDSketch, MetricKind, Point};
use warden_proto as proto;
use warden_store::{SeriesWrite, SketchWrite};

/// Limits applied to every series (documented in `docs/server.md`).
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// Tags per series (including those derived from host / device).
    pub max_tags: usize,
    /// Bytes per tag.
    pub max_tag_len: usize,
    /// Bytes per metric name.
    pub max_name_len: usize,
    /// Points may be at most this many seconds in the future.
    pub max_future_secs: i64,
    /// Points may be at most this many seconds in the past (the store's raw retention).
    pub max_age_secs: i64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_tags: 256,
            max_tag_len: 200,
            max_name_len: 200,
            max_future_secs: 600,
            max_age_secs: 457 * 86_400,
        }
    }
}

/// A refused body: HTTP status and message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Refusal {
    pub status: u16,
    pub message: String,
}

impl Refusal {
    pub(crate) fn bad(message: impl Into<String>) -> Refusal {
        Refusal {
            status: 400,
            message: message.into(),
        }
    }
}

type R<T> = Result<T, Refusal>;

/// Decompresses `body` per `Content-Encoding`, refusing (413) output over `max` bytes without
/// ever producing more than `max + 1` bytes: a decompression bomb costs at most that.
pub fn decompress(encoding: Option<&str>, body: &[u8], max: usize) -> R<Vec<u8>> {
    let enc = encoding.unwrap_or("identity").trim().to_ascii_lowercase();
    let limit = max as u64 + 1;
    let mut out = Vec::new();
    let res = match enc.as_str() {
        "" | "identity" => {
            out.extend_from_slice(body);
            Ok(0)
        }
        "gzip" | "x-gzip" => flate2::read::GzDecoder::new(body)
            .take(limit)
            .read_to_end(&mut out),
        "deflate" => flate2::read::ZlibDecoder::new(body)
            .take(limit)
            .read_to_end(&mut out),
        "zstd" => match zstd::stream::read::Decoder::new(body) {
            Ok(mut d) => {
                // Refuse frames asking for a window over 8 MiB instead of allocating it.
                let _ = d.window_log_max(23);
                d.take(limit).read_to_end(&mut out)
            }
            Err(e) => Err(e),
        },
        other => {
            return Err(Refusal {
                status: 415,
                message: format!(
                    "unsupported Content-Encoding {other:?} (use gzip, deflate, zstd or identity)"
                ),
            });
        }
    };
    if let Err(e) = res {
        return Err(Refusal::bad(format!("body is not valid {enc} data: {e}")));
    }
    if out.len() > max {
        return Err(Refusal {
            status: 413,
            message: format!("decompressed body exceeds the limit of {max} bytes"),
        });
    }
    Ok(out)
}

fn human_secs(s: i64) -> String {
    let s = s.unsigned_abs();
    let (n, unit) = if s >= 2 * 86_400 {
        (s / 86_400, "days")
    } else if s >= 2 * 3600 {
        (s / 3600, "hours")
    } else if s >= 120 {
        (s / 60, "minutes")
    } else {
        (s, "seconds")
    };
    format!("{n} {unit}")
}

/// Validation context: the limits and "now" (UNIX seconds) of one request.
#[derive(Clone, Copy, Debug)]
pub struct Checker {
    pub limits: Limits,
    pub now: i64,
}

impl Checker {
    fn name(&self, path: &str, field: &str, name: &str) -> R<()> {
        if name.is_empty() {
            return Err(Refusal::bad(format!("{path}.{field}: must not be empty")));
        }
        if name.len() > self.limits.max_name_len {
            return Err(Refusal::bad(format!(
                "{path}.{field}: {} bytes, longer than the limit of {}",
                name.len(),
                self.limits.max_name_len
            )));
        }
        if name.chars().any(|c| c.is_control() || c.is_whitespace()) {
            return Err(Refusal::bad(format!(
                "{path}.{field}: must not contain whitespace or control characters"
            )));
        }
        Ok(())
    }

    fn tags(&self, path: &str, tags: &[String]) -> R<()> {
        if tags.len() > self.limits.max_tags {
            return Err(Refusal::bad(format!(
                "{path}.tags: {} tags, more than the limit of {}",
                tags.len(),
                self.limits.max_tags
            )));
        }
        for (i, t) in tags.iter().enumerate() {
            if t.is_empty() {
                return Err(Refusal::bad(format!("{path}.tags[{i}]: empty tag")));
            }
            if t.len() > self.limits.max_tag_len {
                return Err(Refusal::bad(format!(
                    "{path}.tags[{i}]: {} bytes, longer than the limit of {}",
                    t.len(),
                    self.limits.max_tag_len
                )));
            }
            if t.chars().any(char::is_control) {
                return Err(Refusal::bad(format!(
                    "{path}.tags[{i}]: contains control characters"
                )));
            }
        }
        Ok(())
    }

    fn host(&self, path: &str, field: &str, host: &str) -> R<()> {
        if host.len() > 255 || host.chars().any(|c| c.is_control() || c.is_whitespace()) {
            return Err(Refusal::bad(format!(
                "{path}.{field}: not a valid host name (at most 255 bytes, no whitespace)"
            )));
        }
        Ok(())
    }

    /// A point's timestamp and value.
    pub(crate) fn point(&self, path: &str, ts: i64, value: f64) -> R<()> {
        if value.is_nan() {
            return Err(Refusal::bad(format!("{path}: value is NaN")));
        }
        if value.is_infinite() {
            return Err(Refusal::bad(format!("{path}: value is infinite")));
        }
        self.timestamp(path, ts)
    }

    fn timestamp(&self, path: &str, ts: i64) -> R<()> {
        let ahead = ts.saturating_sub(self.now);
        if ahead > self.limits.max_future_secs {
            return Err(Refusal::bad(format!(
                "{path}: timestamp is {} in the future (at most {} allowed)",
                human_secs(ahead),
                human_secs(self.limits.max_future_secs)
            )));
        }
        let age = self.now.saturating_sub(ts);
        if age > self.limits.max_age_secs {
            return Err(Refusal::bad(format!(
                "{path}: timestamp is {} in the past, older than the raw retention of {}",
                human_secs(age),
                human_secs(self.limits.max_age_secs)
            )));
        }
        Ok(())
    }

    fn interval(&self, path: &str, interval: i64) -> R<()> {
        if !(0..=86_400).contains(&interval) {
            return Err(Refusal::bad(format!(
                "{path}.interval: {interval} is not between 0 and 86400 seconds"
            )));
        }
        Ok(())
    }
}

// ------------------------------------------------------------------ protobuf

fn proto_kind(path: &str, t: i32) -> R<MetricKind> {
    // 0 is GAUGE in old agent-payload numbering and UNSPECIFIED in the new: a gauge either way.
    match t {
        0 | 3 => Ok(MetricKind::Gauge),
        1 => Ok(MetricKind::Count),
        2 => Ok(MetricKind::Rate),
        other => Err(Refusal::bad(format!(
            "{path}.type: unknown metric type {other} (0-3)"
        ))),
    }
}

/// `POST /api/v2/series`, `application/x-protobuf`.
pub fn v2_protobuf(raw: &[u8], ck: &Checker) -> R<Vec<SeriesWrite>> {
    let payload = proto::MetricPayload::decode(raw)
        .map_err(|e| Refusal::bad(format!("body is not a valid protobuf MetricPayload: {e}")))?;
    if payload.series.is_empty() {
        return Err(Refusal::bad("series: must contain at least one series"));
    }
    let mut out = Vec::with_capacity(payload.series.len());
    for (i, s) in payload.series.into_iter().enumerate() {
        let path = format!("series[{i}]");
        ck.name(&path, "metric", &s.metric)?;
        let mut host = String::new();
        let mut tags = s.tags;
        for (j, r) in s.resources.iter().enumerate() {
            if r.r#type == "host" {
                ck.host(&path, &format!("resources[{j}].name"), &r.name)?;
                host = r.name.clone();
            } else if !r.r#type.is_empty() && !r.name.is_empty() {
                tags.push(format!("{}:{}", r.r#type, r.name));
            }
        }
        ck.tags(&path, &tags)?;
        let kind = proto_kind(&path, s.r#type)?;
        ck.interval(&path, s.interval)?;
        if s.points.is_empty() {
            return Err(Refusal::bad(format!(
                "{path}.points: must contain at least one point"
            )));
        }
        let mut points = Vec::with_capacity(s.points.len());
        for (j, p) in s.points.iter().enumerate() {
            ck.point(&format!("{path}.points[{j}]"), p.timestamp, p.value)?;
            points.push(Point {
                timestamp: p.timestamp,
                value: p.value,
            });
        }
        out.push(SeriesWrite {
            name: s.metric,
            tags,
            host,
            kind,
            interval: s.interval,
            unit: (!s.unit.is_empty()).then_some(s.unit),
            points,
        });
    }
    Ok(out)
}

/// `POST /api/beta/sketches`, `application/x-protobuf`.
pub fn sketches_protobuf(raw: &[u8], ck: &Checker) -> R<Vec<SketchWrite>> {
    let payload = proto::SketchPayload::decode(raw)
        .map_err(|e| Refusal::bad(format!("body is not a valid protobuf SketchPayload: {e}")))?;
    if payload.sketches.is_empty() {
        return Err(Refusal::bad("sketches: must contain at least one sketch"));
    }
    let mut out = Vec::with_capacity(payload.sketches.len());
    for (i, s) in payload.sketches.into_iter().enumerate() {
        let path = format!("sketches[{i}]");
        ck.name(&path, "metric", &s.metric)?;
        ck.host(&path, "host", &s.host)?;
        ck.tags(&path, &s.tags)?;
        if s.dogsketches.is_empty() {
            return Err(Refusal::bad(format!(
                "{path}.dogsketches: must contain at least one sketch"
            )));
        }
        let mut points = Vec::with_capacity(s.dogsketches.len());
        for (j, d) in s.dogsketches.iter().enumerate() {
            let p = format!("{path}.dogsketches[{j}]");
            ck.timestamp(&p, d.ts)?;
            if d.cnt < 0 {
                return Err(Refusal::bad(format!("{p}.cnt: negative count {}", d.cnt)));
            }
            for (name, v) in [
                ("min", d.min),
                ("max", d.max),
                ("sum", d.sum),
                ("avg", d.avg),
            ] {
                if v.is_nan() {
                    return Err(Refusal::bad(format!("{p}.{name}: value is NaN")));
                }
            }
            let sk = DDSketch::from_bins(&d.k, &d.n, d.cnt as u64, d.min, d.max, d.sum, d.avg)
                .map_err(|e| Refusal::bad(format!("{p}: {e}")))?;
            points.push((d.ts, sk));
        }
        out.push(SketchWrite {
            name: s.metric,
            tags: s.tags,
            host: s.host,
            points,
        });
    }
    Ok(out)
}

// ------------------------------------------------------------------ JSON helpers

fn parse_json(raw: &[u8]) -> R<Value> {
    serde_json::from_slice(raw).map_err(|e| Refusal::bad(format!("body is not valid JSON: {e}")))
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

fn req<'a>(obj: &'a serde_json::Map<String, Value>, path: &str, key: &str) -> R<&'a Value> {
    obj.get(key)
        .ok_or_else(|| Refusal::bad(format!("{path}.{key}: missing required field")))
}

fn as_obj<'a>(path: &str, v: &'a Value) -> R<&'a serde_json::Map<String, Value>> {
    match v {
        Value::Object(m) => Ok(m),
        other => Err(Refusal::bad(format!(
            "{path}: expected an object, got {}",
            type_name(other)
        ))),
    }
}

fn as_arr<'a>(path: &str, v: &'a Value) -> R<&'a Vec<Value>> {
    match v {
        Value::Array(a) => Ok(a),
        other => Err(Refusal::bad(format!(
            "{path}: expected an array, got {}",
            type_name(other)
        ))),
    }
}

fn as_str<'a>(path: &str, v: &'a Value) -> R<&'a str> {
    match v {
        Value::String(s) => Ok(s),
        other => Err(Refusal::bad(format!(
            "{path}: expected a string, got {}",
            type_name(other)
        ))),
    }
}

fn opt_str(obj: &serde_json::Map<String, Value>, path: &str, key: &str) -> R<Option<String>> {
    match obj.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => as_str(&format!("{path}.{key}"), v).map(|s| Some(s.to_owned())),
    }
}

/// An integer (a float with no fractional part is accepted; clients send `1.7e9`).
fn as_int(path: &str, v: &Value) -> R<i64> {
    match v {
        Value::Number(n) => {
            if let Some(i) = n.as_i64() {
                return Ok(i);
            }
            match n.as_f64() {
                Some(f) if f.is_finite() && f.fract() == 0.0 && f.abs() < 9.0e15 => Ok(f as i64),
                _ => Err(Refusal::bad(format!(
                    "{path}: expected an integer, got {n}"
                ))),
            }
        }
        other => Err(Refusal::bad(format!(
            "{path}: expected an integer, got {}",
            type_name(other)
        ))),
    }
}

/// A timestamp in seconds; fractional seconds are truncated (the v1 API accepts floats).
fn as_ts(path: &str, v: &Value) -> R<i64> {
    match v {
        Value::Number(n) => match n.as_i64() {
            Some(i) => Ok(i),
            None => match n.as_f64() {
                Some(f) if f.is_finite() && f.abs() < 9.0e15 => Ok(f.trunc() as i64),
                _ => Err(Refusal::bad(format!(
                    "{path}: timestamp {n} is out of range"
                ))),
            },
        },
        other => Err(Refusal::bad(format!(
            "{path}: expected a timestamp (number), got {}",
            type_name(other)
        ))),
    }
}

fn as_f64(path: &str, v: &Value) -> R<f64> {
    match v {
        Value::Number(n) => n
            .as_f64()
            .ok_or_else(|| Refusal::bad(format!("{path}: value {n} is out of range"))),
        other => Err(Refusal::bad(format!(
            "{path}: expected a number, got {}",
            type_name(other)
        ))),
    }
}

fn tags_of(obj: &serde_json::Map<String, Value>, path: &str) -> R<Vec<String>> {
    match obj.get("tags") {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(v) => {
            let a = as_arr(&format!("{path}.tags"), v)?;
            a.iter()
                .enumerate()
                .map(|(i, t)| as_str(&format!("{path}.tags[{i}]"), t).map(str::to_owned))
                .collect()
        }
    }
}

fn series_array(doc: &Value) -> R<&Vec<Value>> {
    let root = as_obj("body", doc)?;
    let series = req(root, "body", "series")?;
    let a = as_arr("series", series)?;
    if a.is_empty() {
        return Err(Refusal::bad("series: must contain at least one series"));
    }
    Ok(a)
}

// ------------------------------------------------------------------ JSON series

/// `POST /api/v1/series` (JSON; `points` are `[timestamp, value]` pairs).
///
/// Two passes by design: a typed parse that borrows strings from the body and builds no error
/// paths ([`fast_v1`]) takes every valid body; anything it does not accept (a bad field, a
/// duplicate key, a wrong type) is parsed again by the `Value` walk, which is the reference
/// for what is valid and names the culprit. The fast pass accepts nothing the walk refuses:
/// it applies the same checks, and any doubt sends the body to the walk.
pub fn v1_json(raw: &[u8], ck: &Checker) -> R<Vec<SeriesWrite>> {
    if let Some(out) = fast_v1(raw, ck) {
        return Ok(out);
    }
    v1_json_walk(raw, ck)
}

/// A JSON number kept as parsed (no float rounding of integers).
#[derive(serde::Deserialize)]
#[serde(transparent)]
struct Num(serde_json::Number);

/// `T` from a JSON object only: derived struct impls would also take an array of the field
/// values, which the `Value` walk refuses.
struct MapOnly<T>(T);

impl<'de, T: serde::Deserialize<'de>> serde::Deserialize<'de> for MapOnly<T> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<T>(std::marker::PhantomData<T>);
        impl<'de, T: serde::Deserialize<'de>> serde::de::Visitor<'de> for V<T> {
            type Value = T;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("an object")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, map: A) -> Result<T, A::Error> {
                T::deserialize(serde::de::value::MapAccessDeserializer::new(map))
            }
        }
        d.deserialize_map(V(std::marker::PhantomData)).map(MapOnly)
    }
}

#[derive(serde::Deserialize)]
struct FastV1Body<'a> {
    #[serde(borrow)]
    series: Vec<MapOnly<FastV1Series<'a>>>,
}

#[derive(serde::Deserialize)]
struct FastV1Series<'a> {
    #[serde(borrow)]
    metric: std::borrow::Cow<'a, str>,
    #[serde(default, borrow, rename = "type")]
    kind: Option<std::borrow::Cow<'a, str>>,
    #[serde(default)]
    interval: Option<Num>,
    #[serde(default, borrow)]
    host: Option<std::borrow::Cow<'a, str>>,
    #[serde(default, borrow)]
    tags: Option<Vec<std::borrow::Cow<'a, str>>>,
    #[serde(default, borrow)]
    device: Option<std::borrow::Cow<'a, str>>,
    points: Vec<(Num, Num)>,
}

/// The [`v1_json`] fast pass: `None` whenever the body is not plainly valid.
fn fast_v1(raw: &[u8], ck: &Checker) -> Option<Vec<SeriesWrite>> {
    let MapOnly(body): MapOnly<FastV1Body<'_>> = serde_json::from_slice(raw).ok()?;
    if body.series.is_empty() {
        return None;
    }
    let mut out = Vec::with_capacity(body.series.len());
    for MapOnly(s) in body.series {
        ck.name("", "metric", &s.metric).ok()?;
        let kind = match s.kind.as_deref() {
            None | Some("") | Some("gauge") => MetricKind::Gauge,
            Some("count") => MetricKind::Count,
            Some("rate") => MetricKind::Rate,
            Some(_) => return None,
        };
        let interval = match &s.interval {
            None => 0,
            Some(Num(n)) => num_int(n)?,
        };
        ck.interval("", interval).ok()?;
        let host = s.host.map(|h| h.into_owned()).unwrap_or_default();
        ck.host("", "host", &host).ok()?;
        let mut tags: Vec<String> = s
            .tags
            .unwrap_or_default()
            .into_iter()
            .map(|t| t.into_owned())
            .collect();
        if let Some(d) = s.device.filter(|d| !d.is_empty()) {
            tags.push(format!("device:{d}"));
        }
        ck.tags("", &tags).ok()?;
        if s.points.is_empty() {
            return None;
        }
        let mut points = Vec::with_capacity(s.points.len());
        for (Num(t), Num(v)) in &s.points {
            let ts = num_ts(t)?;
            let value = v.as_f64()?;
            ck.point("", ts, value).ok()?;
            points.push(Point {
                timestamp: ts,
                value,
            });
        }
        out.push(SeriesWrite {
            name: s.metric.into_owned(),
            tags,
            host,
            kind,
            interval,
            unit: None,
            points,
        });
    }
    Some(out)
}

/// [`as_int`] for the fast pass.
fn num_int(n: &serde_json::Number) -> Option<i64> {
    if let Some(i) = n.as_i64() {
        return Some(i);
    }
    match n.as_f64() {
        Some(f) if f.is_finite() && f.fract() == 0.0 && f.abs() < 9.0e15 => Some(f as i64),
        _ => None,
    }
}

/// [`as_ts`] for the fast pass.
fn num_ts(n: &serde_json::Number) -> Option<i64> {
    match n.as_i64() {
        Some(i) => Some(i),
        None => match n.as_f64() {
            Some(f) if f.is_finite() && f.abs() < 9.0e15 => Some(f.trunc() as i64),
            _ => None,
        },
    }
}

/// [`v1_json`]'s reference pass over a `Value`: every error names its field.
fn v1_json_walk(raw: &[u8], ck: &Checker) -> R<Vec<SeriesWrite>> {
    let doc = parse_json(raw)?;
    let mut out = Vec::new();
    for (i, s) in series_array(&doc)?.iter().enumerate() {
        let path = format!("series[{i}]");
        let obj = as_obj(&path, s)?;
        let name = as_str(&format!("{path}.metric"), req(obj, &path, "metric")?)?;
        ck.name(&path, "metric", name)?;
        let kind = match opt_str(obj, &path, "type")?.as_deref() {
            None | Some("") | Some("gauge") => MetricKind::Gauge,
            Some("count") => MetricKind::Count,
            Some("rate") => MetricKind::Rate,
            Some(other) => {
                return Err(Refusal::bad(format!(
                    "{path}.type: unknown metric type {other:?} (gauge, count, rate)"
                )));
            }
        };
        let interval = match obj.get("interval") {
            None | Some(Value::Null) => 0,
            Some(v) => as_int(&format!("{path}.interval"), v)?,
        };
        ck.interval(&path, interval)?;
        let host = opt_str(obj, &path, "host")?.unwrap_or_default();
        ck.host(&path, "host", &host)?;
        let mut tags = tags_of(obj, &path)?;
        if let Some(d) = opt_str(obj, &path, "device")?.filter(|d| !d.is_empty()) {
            tags.push(format!("device:{d}"));
        }
        ck.tags(&path, &tags)?;
        let pts = as_arr(&format!("{path}.points"), req(obj, &path, "points")?)?;
        if pts.is_empty() {
            return Err(Refusal::bad(format!(
                "{path}.points: must contain at least one point"
            )));
        }
        let mut points = Vec::with_capacity(pts.len());
        for (j, p) in pts.iter().enumerate() {
            let pp = format!("{path}.points[{j}]");
            let pair = as_arr(&pp, p)?;
            if pair.len() != 2 {
                return Err(Refusal::bad(format!(
                    "{pp}: expected [timestamp, value], got {} elements",
                    pair.len()
                )));
            }
            let ts = as_ts(&format!("{pp}[0]"), &pair[0])?;
            let value = as_f64(&format!("{pp}[1]"), &pair[1])?;
            ck.point(&pp, ts, value)?;
            points.push(Point {
                timestamp: ts,
                value,
            });
        }
        out.push(SeriesWrite {
            name: name.to_owned(),
            tags,
            host,
            kind,
            interval,
            unit: None,
            points,
        });
    }
    Ok(out)
}

/// `POST /api/v2/series` with a JSON body (`points` are `{timestamp, value}` objects; the host
/// is a resource of type `host`).
pub fn v2_json(raw: &[u8], ck: &Checker) -> R<Vec<SeriesWrite>> {
    let doc = parse_json(raw)?;
    let mut out = Vec::new();
    for (i, s) in series_array(&doc)?.iter().enumerate() {
        let path = format!("series[{i}]");
        let obj = as_obj(&path, s)?;
        let name = as_str(&format!("{path}.metric"), req(obj, &path, "metric")?)?;
        ck.name(&path, "metric", name)?;
        let kind = match obj.get("type") {
            None | Some(Value::Null) => MetricKind::Gauge,
            Some(v) => {
                let t = as_int(&format!("{path}.type"), v)?;
                match t {
                    0 | 3 => MetricKind::Gauge,
                    1 => MetricKind::Count,
                    2 => MetricKind::Rate,
                    other => {
                        return Err(Refusal::bad(format!(
                            "{path}.type: unknown metric type {other} (0 unspecified, 1 count, 2 rate, 3 gauge)"
                        )));
                    }
                }
            }
        };
        let interval = match obj.get("interval") {
            None | Some(Value::Null) => 0,
            Some(v) => as_int(&format!("{path}.interval"), v)?,
        };
        ck.interval(&path, interval)?;
        let mut tags = tags_of(obj, &path)?;
        let mut host = String::new();
        if let Some(rs) = obj.get("resources").filter(|v| !v.is_null()) {
            for (j, r) in as_arr(&format!("{path}.resources"), rs)?.iter().enumerate() {
                let rp = format!("{path}.resources[{j}]");
                let ro = as_obj(&rp, r)?;
                let rname = opt_str(ro, &rp, "name")?.unwrap_or_default();
                let rtype = opt_str(ro, &rp, "type")?.unwrap_or_default();
                if rtype == "host" {
                    ck.host(&rp, "name", &rname)?;
                    host = rname;
                } else if !rtype.is_empty() && !rname.is_empty() {
                    tags.push(format!("{rtype}:{rname}"));
                }
            }
        }
        ck.tags(&path, &tags)?;
        let unit = opt_str(obj, &path, "unit")?.filter(|u| !u.is_empty());
        let pts = as_arr(&format!("{path}.points"), req(obj, &path, "points")?)?;
        if pts.is_empty() {
            return Err(Refusal::bad(format!(
                "{path}.points: must contain at least one point"
            )));
        }
        let mut points = Vec::with_capacity(pts.len());
        for (j, p) in pts.iter().enumerate() {
            let pp = format!("{path}.points[{j}]");
            let po = as_obj(&pp, p)?;
            let ts = as_ts(&format!("{pp}.timestamp"), req(po, &pp, "timestamp")?)?;
            let value = as_f64(&format!("{pp}.value"), req(po, &pp, "value")?)?;
            ck.point(&pp, ts, value)?;
            points.push(Point {
                timestamp: ts,
                value,
            });
        }
        out.push(SeriesWrite {
            name: name.to_owned(),
            tags,
            host,
            kind,
            interval,
            unit,
            points,
        });
    }
    Ok(out)
}

/// Metric under which service checks are stored: value = status (0 OK … 3 UNKNOWN), tag
/// `check:<name>`, host = the check's host.
pub const CHECK_METRIC: &str = "service_check.status";
/// Metric counting received events: one point per event, tags `source_type_name:<…>`,
/// `alert_type:<…>` and the event's tags.
pub const EVENT_METRIC: &str = "events.count";

/// `POST /api/v1/check_run`: a JSON array of `{check, status, host_name, timestamp, message,
/// tags}`.
pub fn check_runs(raw: &[u8], ck: &Checker) -> R<Vec<SeriesWrite>> {
    let doc = parse_json(raw)?;
    let arr = as_arr("body", &doc)?;
    let mut out = Vec::with_capacity(arr.len());
    for (i, c) in arr.iter().enumerate() {
        let path = format!("[{i}]");
        let obj = as_obj(&path, c)?;
        let name = as_str(&format!("{path}.check"), req(obj, &path, "check")?)?;
        ck.name(&path, "check", name)?;
        let status = as_int(&format!("{path}.status"), req(obj, &path, "status")?)?;
        if !(0..=3).contains(&status) {
            return Err(Refusal::bad(format!(
                "{path}.status: {status} is not a service check status (0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN)"
            )));
        }
        let host = opt_str(obj, &path, "host_name")?.unwrap_or_default();
        ck.host(&path, "host_name", &host)?;
        let ts = match obj.get("timestamp") {
            None | Some(Value::Null) => 0,
            Some(v) => as_ts(&format!("{path}.timestamp"), v)?,
        };
        let ts = if ts == 0 { ck.now } else { ts };
        ck.timestamp(&path, ts)?;
        let _ = opt_str(obj, &path, "message")?;
        let mut tags = tags_of(obj, &path)?;
        tags.push(format!("check:{name}"));
        ck.tags(&path, &tags)?;
        out.push(SeriesWrite {
            name: CHECK_METRIC.into(),
            tags,
            host,
            kind: MetricKind::Gauge,
            interval: 0,
            unit: None,
            points: vec![Point {
                timestamp: ts,
                value: status as f64,
            }],
        });
    }
    Ok(out)
}

/// `POST /intake/`: `{"events": {"<source type>": [{msg_title, msg_text, timestamp, host,
/// tags, alert_type, priority, ...}]}, "internalHostname": ...}`. Events are validated and
/// counted (see [`EVENT_METRIC`]); their text is not stored.
pub fn events(raw: &[u8], ck: &Checker) -> R<Vec<SeriesWrite>> {
    let doc = parse_json(raw)?;
    let root = as_obj("body", &doc)?;
    let mut out = Vec::new();
    let Some(groups) = root.get("events").filter(|v| !v.is_null()) else {
        // Agent metadata payloads (no events) are accepted and ignored.
        return Ok(out);
    };
    let groups = as_obj("events", groups)?;
    for (source, list) in groups {
        let gp = format!("events.{source}");
        for (i, e) in as_arr(&gp, list)?.iter().enumerate() {
            let path = format!("{gp}[{i}]");
            let obj = as_obj(&path, e)?;
            if opt_str(obj, &path, "msg_title")?
                .or(opt_str(obj, &path, "title")?)
                .is_none()
            {
                return Err(Refusal::bad(format!(
                    "{path}.msg_title: missing required field"
                )));
            }
            let _ = opt_str(obj, &path, "msg_text")?;
            let host = opt_str(obj, &path, "host")?.unwrap_or_default();
            ck.host(&path, "host", &host)?;
            let ts = match obj.get("timestamp") {
                None | Some(Value::Null) => ck.now,
                Some(v) => as_ts(&format!("{path}.timestamp"), v)?,
            };
            ck.timestamp(&path, ts)?;
            let alert = opt_str(obj, &path, "alert_type")?.unwrap_or_else(|| "info".into());
            if !["error", "warning", "info", "success"].contains(&alert.as_str()) {
                return Err(Refusal::bad(format!(
                    "{path}.alert_type: {alert:?} is not error, warning, info or success"
                )));
            }
            let mut tags = tags_of(obj, &path)?;
            let st = opt_str(obj, &path, "source_type_name")?.unwrap_or_else(|| source.clone());
            if !st.is_empty() {
                tags.push(format!("source_type_name:{st}"));
            }
            tags.push(format!("alert_type:{alert}"));
            ck.tags(&path, &tags)?;
            out.push(SeriesWrite {
                name: EVENT_METRIC.into(),
                tags,
                host,
                kind: MetricKind::Count,
                interval: 0,
                unit: None,
                points: vec![Point {
                    timestamp: ts,
                    value: 1.0,
                }],
            });
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn ck() -> Checker {
        Checker {
            limits: Limits::default(),
            now: 1_700_000_000,
        }
    }

    #[test]
    fn v1_fast_pass_agrees_with_the_walk() {
        let c = ck();
        let now = c.now;
        let good = [
            format!(
                r#"{{"series":[{{"metric":"a.b","host":"h","tags":["x:1","y"],"type":"count","interval":10,"device":"sda","points":[[{now},1.5],[{}.7,2]]}},{{"metric":"c","tags":null,"host":null,"type":null,"interval":null,"points":[[{now},-0.0]],"extra":{{"k":[1,2]}}}}]}}"#,
                now - 10
            ),
            format!(
                r#"{{"series":[{{"metric":"e\u0073c","tags":["a\"b"],"points":[[{now},1e3]]}}]}}"#
            ),
        ];
        for b in &good {
            let fast = fast_v1(b.as_bytes(), &c).expect("fast pass takes a valid body");
            let walk = v1_json_walk(b.as_bytes(), &c).expect("walk takes it too");
            assert_eq!(format!("{fast:?}"), format!("{walk:?}"), "{b}");
        }
        // Bodies the walk refuses must not pass the fast pass either.
        let bad = [
            format!(r#"[[{{"metric":"a","points":[[{now},1]]}}]]"#),
            format!(r#"{{"series":[["a",null,null,null,null,null,[[{now},1]]]]}}"#),
            format!(r#"{{"series":[{{"metric":"a","points":[[{now},1,2]]}}]}}"#),
            format!(r#"{{"series":[{{"metric":"a","type":"weird","points":[[{now},1]]}}]}}"#),
            format!(r#"{{"series":[{{"metric":"a","interval":1.5,"points":[[{now},1]]}}]}}"#),
            format!(r#"{{"series":[{{"metric":"a b","points":[[{now},1]]}}]}}"#),
            r#"{"series":[{"metric":"a","points":[]}]}"#.to_string(),
            r#"{"series":[]}"#.to_string(),
        ];
        for b in &bad {
            assert!(fast_v1(b.as_bytes(), &c).is_none(), "{b}");
            assert!(v1_json(b.as_bytes(), &c).is_err(), "{b}");
        }
    }

    #[test]
    fn v1_errors_name_the_field() {
        let c = ck();
        let body = format!(
            r#"{{"series":[{{"metric":"a","points":[[{},1]]}},{{"metric":"b","points":[[{},1]]}}]}}"#,
            c.now,
            c.now + 2 * 86_400
        );
        let e = v1_json(body.as_bytes(), &c).unwrap_err();
        assert_eq!(e.status, 400);
        assert!(
            e.message
                .starts_with("series[1].points[0]: timestamp is 2 days in the future"),
            "{}",
            e.message
        );
        let e = v1_json(br#"{"series":[{"points":[[1,1]]}]}"#, &c).unwrap_err();
        assert_eq!(e.message, "series[0].metric: missing required field");
        let e = v1_json(br#"{"series":[{"metric":"a","points":[["x",1]]}]}"#, &c).unwrap_err();
        assert!(
            e.message
                .starts_with("series[0].points[0][0]: expected a timestamp")
        );
    }

    #[test]
    fn v2_json_maps_types_and_host_resource() {
        let c = ck();
        let body = format!(
            r#"{{"series":[{{"metric":"m","type":1,"interval":10,"points":[{{"timestamp":{},"value":2.5}}],"resources":[{{"name":"h1","type":"host"}}],"tags":["a:b"]}}]}}"#,
            c.now
        );
        let w = v2_json(body.as_bytes(), &c).unwrap();
        assert_eq!(w[0].host, "h1");
        assert_eq!(w[0].kind, MetricKind::Count);
        assert_eq!(w[0].points[0].value, 2.5);
    }

    #[test]
    fn protobuf_type_zero_is_a_gauge_and_nan_is_refused() {
        let c = ck();
        let mk = |t: i32, v: f64| {
            proto::MetricPayload {
                series: vec![proto::MetricSeries {
                    metric: "m".into(),
                    points: vec![proto::MetricPoint {
                        value: v,
                        timestamp: c.now,
                    }],
                    r#type: t,
                    ..Default::default()
                }],
            }
            .encode_to_vec()
        };
        assert_eq!(
            v2_protobuf(&mk(0, 1.0), &c).unwrap()[0].kind,
            MetricKind::Gauge
        );
        assert_eq!(
            v2_protobuf(&mk(2, 1.0), &c).unwrap()[0].kind,
            MetricKind::Rate
        );
        let e = v2_protobuf(&mk(3, f64::NAN), &c).unwrap_err();
        assert_eq!(e.message, "series[0].points[0]: value is NaN");
        assert!(v2_protobuf(&mk(9, 1.0), &c).is_err());
    }

    #[test]
    fn bombs_are_cut_at_the_limit() {
        let zeros = vec![0u8; 4 << 20];
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
        e.write_all(&zeros).unwrap();
        let gz = e.finish().unwrap();
        assert!(gz.len() < 10_000);
        let r = decompress(Some("gzip"), &gz, 1 << 20).unwrap_err();
        assert_eq!(r.status, 413);
        assert_eq!(
            decompress(Some("gzip"), &gz, 8 << 20).unwrap().len(),
            4 << 20
        );
        let z = zstd::encode_all(zeros.as_slice(), 3).unwrap();
        assert_eq!(
            decompress(Some("zstd"), &z, 1 << 20).unwrap_err().status,
            413
        );
        assert_eq!(decompress(Some("br"), &z, 1 << 20).unwrap_err().status, 415);
        assert_eq!(
            decompress(Some("gzip"), b"nope", 1 << 20)
                .unwrap_err()
                .status,
            400
        );
    }
}
