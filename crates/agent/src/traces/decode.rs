//! Decoding tracer payloads (`/v0.3`, `/v0.4`, `/v0.5` traces; msgpack or JSON).
//!
//! Why hand-written visitors over derived structs: tracers are lenient writers (ids as signed
//! or unsigned ints, metrics as ints or floats, `nil` for empty maps, non-UTF-8 bytes in
//! strings), and a refusal must say *where* the payload is wrong (`trace 2, span 5, field
//! "meta": ...`). The visitors accept every shape the Datadog agent accepts, skip unknown
//! fields (span links, span events), never preallocate from a length the peer claims, and the
//! msgpack depth is capped so a nested bomb cannot exhaust the stack. The same visitors serve
//! JSON through `serde_json`.

use std::collections::BTreeMap;
use std::fmt;

use serde::Deserializer;
use serde::de::{self, DeserializeSeed, Error as _, IgnoredAny, MapAccess, SeqAccess, Visitor};
use warden_proto::trace::Span;

/// Nesting accepted in msgpack (a span sits at depth 3; meta_struct values are opaque bytes).
const MAX_DEPTH: usize = 32;

/// Most entries reserved up front for a peer-announced length.
const PREALLOC_CAP: usize = 256;

/// The wire version of a tracer payload.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Version {
    /// `/v0.3/traces` and `/v0.4/traces`: an array of traces, each an array of span maps.
    V04,
    /// `/v0.5/traces`: `[string table, traces]`, spans as 12-element arrays of indexes.
    V05,
}

/// Why a payload was refused (the message names what is wrong and where).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub(crate) struct DecodeError(pub(crate) String);

/// Decodes a body into traces (each a list of spans).
pub(crate) fn decode(
    version: Version,
    json: bool,
    body: &[u8],
) -> Result<Vec<Vec<Span>>, DecodeError> {
    if json {
        if version == Version::V05 {
            return Err(DecodeError(
                "/v0.5/traces takes msgpack only (Content-Type: application/msgpack)".into(),
            ));
        }
        let mut de = serde_json::Deserializer::from_slice(body);
        let traces = de
            .deserialize_seq(TRACES_V04)
            .map_err(|e| DecodeError(format!("invalid JSON trace payload: {e}")))?;
        de.end()
            .map_err(|e| DecodeError(format!("invalid JSON trace payload: {e}")))?;
        return Ok(traces);
    }
    if body.is_empty() {
        return Err(DecodeError(
            "empty body: expected a msgpack array of traces".into(),
        ));
    }
    let mut de = rmp_serde::Deserializer::new(body);
    de.set_max_depth(MAX_DEPTH);
    let traces = match version {
        Version::V04 => de.deserialize_seq(TRACES_V04),
        Version::V05 => de.deserialize_seq(PayloadV05),
    }
    .map_err(|e| DecodeError(format!("invalid msgpack trace payload: {e}")))?;
    let rest = de.into_inner().len();
    if rest != 0 {
        return Err(DecodeError(format!(
            "invalid msgpack trace payload: {rest} trailing bytes after the traces"
        )));
    }
    Ok(traces)
}

fn cautious(hint: Option<usize>) -> usize {
    hint.unwrap_or(0).min(PREALLOC_CAP)
}

// --- scalars -------------------------------------------------------------------------------

/// A string, accepting bytes (lossily) and `nil` (empty).
struct Str;

impl<'de> DeserializeSeed<'de> for Str {
    type Value = String;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<String, D::Error> {
        d.deserialize_any(StrVisitor)
    }
}

struct StrVisitor;

impl<'de> Visitor<'de> for StrVisitor {
    type Value = String;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a string")
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<String, E> {
        Ok(v.to_owned())
    }
    fn visit_string<E: de::Error>(self, v: String) -> Result<String, E> {
        Ok(v)
    }
    fn visit_bytes<E: de::Error>(self, v: &[u8]) -> Result<String, E> {
        Ok(String::from_utf8_lossy(v).into_owned())
    }
    fn visit_unit<E: de::Error>(self) -> Result<String, E> {
        Ok(String::new())
    }
    fn visit_none<E: de::Error>(self) -> Result<String, E> {
        Ok(String::new())
    }
}

/// A meta value: a string, or a number or bool rendered as text; `None` for `nil`.
struct MetaValue;

impl<'de> de::Deserialize<'de> for MetaValueOut {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(MetaValue)
    }
}

struct MetaValueOut(Option<String>);

impl<'de> Visitor<'de> for MetaValue {
    type Value = MetaValueOut;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a string")
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
        Ok(MetaValueOut(Some(v.to_owned())))
    }
    fn visit_bytes<E: de::Error>(self, v: &[u8]) -> Result<Self::Value, E> {
        Ok(MetaValueOut(Some(String::from_utf8_lossy(v).into_owned())))
    }
    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Self::Value, E> {
        Ok(MetaValueOut(Some(v.to_string())))
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
        Ok(MetaValueOut(Some(v.to_string())))
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
        Ok(MetaValueOut(Some(v.to_string())))
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Self::Value, E> {
        Ok(MetaValueOut(Some(v.to_string())))
    }
    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(MetaValueOut(None))
    }
    fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(MetaValueOut(None))
    }
}

/// A number of any msgpack/JSON kind, kept as what it was.
#[derive(Clone, Copy)]
enum Num {
    I(i64),
    U(u64),
    F(f64),
    Nil,
}

impl<'de> de::Deserialize<'de> for Num {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(NumVisitor)
    }
}

struct NumVisitor;

impl<'de> Visitor<'de> for NumVisitor {
    type Value = Num;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a number")
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Num, E> {
        Ok(Num::I(v))
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Num, E> {
        Ok(Num::U(v))
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Num, E> {
        Ok(Num::F(v))
    }
    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Num, E> {
        Ok(Num::U(u64::from(v)))
    }
    fn visit_unit<E: de::Error>(self) -> Result<Num, E> {
        Ok(Num::Nil)
    }
    fn visit_none<E: de::Error>(self) -> Result<Num, E> {
        Ok(Num::Nil)
    }
}

impl Num {
    /// An id: unsigned, or a signed value reinterpreted (tracers that only have signed
    /// 64-bit integers send the upper half negative).
    fn id<E: de::Error>(self) -> Result<u64, E> {
        match self {
            Num::U(v) => Ok(v),
            Num::I(v) => Ok(v as u64),
            Num::F(v) if v.is_finite() && v >= 0.0 && v.fract() == 0.0 && v < 1.8446744e19 => {
                Ok(v as u64)
            }
            Num::F(v) => Err(E::custom(format!("{v} is not a 64-bit id"))),
            Num::Nil => Ok(0),
        }
    }
    fn i64<E: de::Error>(self) -> Result<i64, E> {
        match self {
            Num::I(v) => Ok(v),
            Num::U(v) => i64::try_from(v).map_err(|_| E::custom(format!("{v} is out of range"))),
            Num::F(v) if v.is_finite() && v.abs() < 9.2e18 => Ok(v as i64),
            Num::F(v) => Err(E::custom(format!("{v} is out of range"))),
            Num::Nil => Ok(0),
        }
    }
    fn f64(self) -> Option<f64> {
        match self {
            Num::I(v) => Some(v as f64),
            Num::U(v) => Some(v as f64),
            Num::F(v) => Some(v),
            Num::Nil => None,
        }
    }
}

// --- maps ----------------------------------------------------------------------------------

/// `map<string, string>`; `nil` is an empty map, `nil` values are skipped.
struct MetaMap;

impl<'de> Visitor<'de> for MetaMap {
    type Value = BTreeMap<String, String>;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a map of string to string")
    }
    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(BTreeMap::new())
    }
    fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(BTreeMap::new())
    }
    fn visit_map<A: MapAccess<'de>>(self, mut m: A) -> Result<Self::Value, A::Error> {
        let mut out = BTreeMap::new();
        while let Some(k) = m.next_key_seed(Str)? {
            let v: MetaValueOut = m.next_value()?;
            if let Some(v) = v.0 {
                out.insert(k, v);
            }
        }
        Ok(out)
    }
}

/// `map<string, double>`; integer values are widened, `nil` values skipped.
struct MetricsMap;

impl<'de> Visitor<'de> for MetricsMap {
    type Value = BTreeMap<String, f64>;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a map of string to number")
    }
    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(BTreeMap::new())
    }
    fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(BTreeMap::new())
    }
    fn visit_map<A: MapAccess<'de>>(self, mut m: A) -> Result<Self::Value, A::Error> {
        let mut out = BTreeMap::new();
        while let Some(k) = m.next_key_seed(Str)? {
            let v: Num = m.next_value()?;
            if let Some(v) = v.f64() {
                out.insert(k, v);
            }
        }
        Ok(out)
    }
}

/// `map<string, bytes>` (values are msgpack blobs; a JSON peer may send strings).
struct BytesMap;

impl<'de> Visitor<'de> for BytesMap {
    type Value = BTreeMap<String, Vec<u8>>;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a map of string to bytes")
    }
    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(BTreeMap::new())
    }
    fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(BTreeMap::new())
    }
    fn visit_map<A: MapAccess<'de>>(self, mut m: A) -> Result<Self::Value, A::Error> {
        let mut out = BTreeMap::new();
        while let Some(k) = m.next_key_seed(Str)? {
            let v = m.next_value_seed(BytesSeed)?;
            out.insert(k, v);
        }
        Ok(out)
    }
}

struct BytesSeed;

impl<'de> DeserializeSeed<'de> for BytesSeed {
    type Value = Vec<u8>;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Vec<u8>, D::Error> {
        d.deserialize_any(BytesSeed)
    }
}

impl<'de> Visitor<'de> for BytesSeed {
    type Value = Vec<u8>;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("bytes")
    }
    fn visit_bytes<E: de::Error>(self, v: &[u8]) -> Result<Vec<u8>, E> {
        Ok(v.to_vec())
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<Vec<u8>, E> {
        Ok(v.as_bytes().to_vec())
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut s: A) -> Result<Vec<u8>, A::Error> {
        let mut out = Vec::with_capacity(cautious(s.size_hint()));
        while let Some(b) = s.next_element::<u8>()? {
            out.push(b);
        }
        Ok(out)
    }
}

macro_rules! map_seed {
    ($name:ident, $visitor:ident, $out:ty) => {
        struct $name;
        impl<'de> DeserializeSeed<'de> for $name {
            type Value = $out;
            fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<$out, D::Error> {
                d.deserialize_any($visitor)
            }
        }
    };
}
map_seed!(MetaSeed, MetaMap, BTreeMap<String, String>);
map_seed!(MetricsSeed, MetricsMap, BTreeMap<String, f64>);
map_seed!(MetaStructSeed, BytesMap, BTreeMap<String, Vec<u8>>);

// --- v0.4 ----------------------------------------------------------------------------------

/// An array whose elements `seed` reads; an element's error is prefixed with `<label> <i>: `,
/// so a refusal names the trace and span at fault. One type for every level of both formats.
#[derive(Clone, Copy)]
struct Labeled<S> {
    seed: S,
    /// Plural, for "an array of ...".
    what: &'static str,
    label: &'static str,
}

impl<'de, S: DeserializeSeed<'de> + Copy> DeserializeSeed<'de> for Labeled<S> {
    type Value = Vec<S::Value>;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_seq(self)
    }
}

impl<'de, S: DeserializeSeed<'de> + Copy> Visitor<'de> for Labeled<S> {
    type Value = Vec<S::Value>;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "an array of {}", self.what)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut s: A) -> Result<Self::Value, A::Error> {
        let mut out = Vec::with_capacity(cautious(s.size_hint()));
        let mut i = 0usize;
        while let Some(v) = s
            .next_element_seed(self.seed)
            .map_err(|e| A::Error::custom(format!("{} {i}: {e}", self.label)))?
        {
            out.push(v);
            i += 1;
        }
        Ok(out)
    }
}

/// `[[span, ...], ...]` for a span reader.
const fn traces_of<S>(span: S) -> Labeled<Labeled<S>> {
    Labeled {
        seed: Labeled {
            seed: span,
            what: "spans",
            label: "span",
        },
        what: "traces",
        label: "trace",
    }
}

const TRACES_V04: Labeled<Labeled<SpanV04>> = traces_of(SpanV04);
const TRACES_V05: Labeled<Labeled<SpanV05>> = traces_of(SpanV05);

#[derive(Clone, Copy)]
struct SpanV04;

impl<'de> DeserializeSeed<'de> for SpanV04 {
    type Value = Span;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Span, D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for SpanV04 {
    type Value = Span;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a span (a map)")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut m: A) -> Result<Span, A::Error> {
        let mut span = Span::default();
        while let Some(key) = m.next_key_seed(Str)? {
            let field = |e: A::Error| A::Error::custom(format!("field {key:?}: {e}"));
            match key.as_str() {
                "service" => span.service = m.next_value_seed(Str).map_err(field)?,
                "name" => span.name = m.next_value_seed(Str).map_err(field)?,
                "resource" => span.resource = m.next_value_seed(Str).map_err(field)?,
                "type" => span.r#type = m.next_value_seed(Str).map_err(field)?,
                "trace_id" => {
                    span.trace_id = m.next_value::<Num>().and_then(Num::id).map_err(field)?
                }
                "span_id" => {
                    span.span_id = m.next_value::<Num>().and_then(Num::id).map_err(field)?
                }
                "parent_id" => {
                    span.parent_id = m.next_value::<Num>().and_then(Num::id).map_err(field)?
                }
                "start" => span.start = m.next_value::<Num>().and_then(Num::i64).map_err(field)?,
                "duration" => {
                    span.duration = m.next_value::<Num>().and_then(Num::i64).map_err(field)?
                }
                "error" => {
                    let e = m.next_value::<Num>().and_then(Num::i64).map_err(field)?;
                    span.error = i32::from(e != 0);
                }
                "meta" => span.meta = m.next_value_seed(MetaSeed).map_err(field)?,
                "metrics" => span.metrics = m.next_value_seed(MetricsSeed).map_err(field)?,
                "meta_struct" => {
                    span.meta_struct = m.next_value_seed(MetaStructSeed).map_err(field)?
                }
                // span_links, span_events and future fields.
                _ => {
                    m.next_value::<IgnoredAny>().map_err(field)?;
                }
            }
        }
        Ok(span)
    }
}

// --- v0.5 ----------------------------------------------------------------------------------

/// A v0.5 span before its string indexes are resolved.
struct RawV05 {
    service: u32,
    name: u32,
    resource: u32,
    trace_id: u64,
    span_id: u64,
    parent_id: u64,
    start: i64,
    duration: i64,
    error: i32,
    meta: Vec<(u32, u32)>,
    metrics: Vec<(u32, f64)>,
    r#type: u32,
}

struct PayloadV05;

impl<'de> Visitor<'de> for PayloadV05 {
    type Value = Vec<Vec<Span>>;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a v0.5 payload: [string table, traces]")
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut s: A) -> Result<Self::Value, A::Error> {
        let strings = s
            .next_element_seed(StringTable)
            .map_err(|e| A::Error::custom(format!("string table: {e}")))?
            .ok_or_else(|| A::Error::custom("v0.5 payload: missing the string table"))?;
        let raw = s
            .next_element_seed(TRACES_V05)?
            .ok_or_else(|| A::Error::custom("v0.5 payload: missing the traces array"))?;
        if s.next_element::<IgnoredAny>()?.is_some() {
            return Err(A::Error::custom(
                "v0.5 payload: expected exactly 2 elements [string table, traces]",
            ));
        }
        let get = |i: u32, t: usize, n: usize, what: &str| -> Result<String, A::Error> {
            strings.get(i as usize).cloned().ok_or_else(|| {
                A::Error::custom(format!(
                    "trace {t}: span {n}: {what}: string index {i} out of range (table has {} strings)",
                    strings.len()
                ))
            })
        };
        let mut out = Vec::with_capacity(raw.len());
        for (t, trace) in raw.into_iter().enumerate() {
            let mut spans = Vec::with_capacity(trace.len());
            for (n, r) in trace.into_iter().enumerate() {
                let mut span = Span {
                    service: get(r.service, t, n, "service")?,
                    name: get(r.name, t, n, "name")?,
                    resource: get(r.resource, t, n, "resource")?,
                    trace_id: r.trace_id,
                    span_id: r.span_id,
                    parent_id: r.parent_id,
                    start: r.start,
                    duration: r.duration,
                    error: r.error,
                    r#type: get(r.r#type, t, n, "type")?,
                    ..Default::default()
                };
                for (k, v) in r.meta {
                    span.meta
                        .insert(get(k, t, n, "meta key")?, get(v, t, n, "meta value")?);
                }
                for (k, v) in r.metrics {
                    span.metrics.insert(get(k, t, n, "metrics key")?, v);
                }
                spans.push(span);
            }
            out.push(spans);
        }
        Ok(out)
    }
}

struct StringTable;

impl<'de> DeserializeSeed<'de> for StringTable {
    type Value = Vec<String>;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Vec<String>, D::Error> {
        d.deserialize_seq(self)
    }
}

impl<'de> Visitor<'de> for StringTable {
    type Value = Vec<String>;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an array of strings")
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut s: A) -> Result<Self::Value, A::Error> {
        let mut out = Vec::with_capacity(cautious(s.size_hint()));
        while let Some(v) = s.next_element_seed(Str)? {
            out.push(v);
        }
        Ok(out)
    }
}

#[derive(Clone, Copy)]
struct SpanV05;

impl<'de> DeserializeSeed<'de> for SpanV05 {
    type Value = RawV05;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<RawV05, D::Error> {
        d.deserialize_seq(self)
    }
}

fn index<E: de::Error>(n: Num) -> Result<u32, E> {
    match n {
        Num::U(v) => {
            u32::try_from(v).map_err(|_| E::custom(format!("string index {v} out of range")))
        }
        Num::I(v) => {
            u32::try_from(v).map_err(|_| E::custom(format!("string index {v} out of range")))
        }
        _ => Err(E::custom("expected a string index (unsigned integer)")),
    }
}

impl<'de> Visitor<'de> for SpanV05 {
    type Value = RawV05;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a v0.5 span: an array of 12 elements")
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut s: A) -> Result<RawV05, A::Error> {
        let short = |i: usize| A::Error::custom(format!("v0.5 span has {i} elements, expected 12"));
        macro_rules! num {
            ($i:expr, $what:expr) => {
                s.next_element::<Num>()
                    .map_err(|e| A::Error::custom(format!("{}: {e}", $what)))?
                    .ok_or_else(|| short($i))?
            };
        }
        let service = index(num!(0, "service"))?;
        let name = index(num!(1, "name"))?;
        let resource = index(num!(2, "resource"))?;
        let trace_id = num!(3, "trace_id").id()?;
        let span_id = num!(4, "span_id").id()?;
        let parent_id = num!(5, "parent_id").id()?;
        let start = num!(6, "start").i64()?;
        let duration = num!(7, "duration").i64()?;
        let error = i32::from(num!(8, "error").i64::<A::Error>()? != 0);
        let meta = s
            .next_element_seed(IndexMap)
            .map_err(|e| A::Error::custom(format!("meta: {e}")))?
            .ok_or_else(|| short(9))?;
        let metrics = s
            .next_element_seed(IndexMetrics)
            .map_err(|e| A::Error::custom(format!("metrics: {e}")))?
            .ok_or_else(|| short(10))?;
        let r#type = index(num!(11, "type"))?;
        if s.next_element::<IgnoredAny>()?.is_some() {
            return Err(A::Error::custom("v0.5 span has more than 12 elements"));
        }
        Ok(RawV05 {
            service,
            name,
            resource,
            trace_id,
            span_id,
            parent_id,
            start,
            duration,
            error,
            meta,
            metrics,
            r#type,
        })
    }
}

struct IndexMap;

impl<'de> DeserializeSeed<'de> for IndexMap {
    type Value = Vec<(u32, u32)>;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for IndexMap {
    type Value = Vec<(u32, u32)>;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a map of string index to string index")
    }
    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(Vec::new())
    }
    fn visit_map<A: MapAccess<'de>>(self, mut m: A) -> Result<Self::Value, A::Error> {
        let mut out = Vec::with_capacity(cautious(m.size_hint()));
        while let Some(k) = m.next_key::<Num>()? {
            let v: Num = m.next_value()?;
            out.push((index(k)?, index(v)?));
        }
        Ok(out)
    }
}

struct IndexMetrics;

impl<'de> DeserializeSeed<'de> for IndexMetrics {
    type Value = Vec<(u32, f64)>;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for IndexMetrics {
    type Value = Vec<(u32, f64)>;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a map of string index to number")
    }
    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(Vec::new())
    }
    fn visit_map<A: MapAccess<'de>>(self, mut m: A) -> Result<Self::Value, A::Error> {
        let mut out = Vec::with_capacity(cautious(m.size_hint()));
        while let Some(k) = m.next_key::<Num>()? {
            let v: Num = m.next_value()?;
            if let Some(v) = v.f64() {
                out.push((index(k)?, v));
            }
        }
        Ok(out)
    }
}
