//! Zero-copy DogStatsD parser (metrics, events, service checks).
//!
//! Why zero-copy: at the target rates (≥ 1 M lines/s per core) an allocation per line or per
//! tag costs more than the parse itself. Every [`Message`] borrows from the datagram; tags are a
//! [`Tags`] view over the raw `#a,b,c` text and split lazily; packed values (`name:1:2:3|d`)
//! are validated once and re-read lazily. Only event titles/texts containing the escape `\n`
//! allocate (a [`Cow`]).
//!
//! Semantics follow the Datadog agent (`comp/dogstatsd/server/impl/parse*.go`), see
//! `specs/dogstatsd.md` §1-4. Deliberate differences, all documented on the items concerned:
//! a line must be valid UTF-8 (the intake needs UTF-8 strings anyway), `T` timestamps are always
//! read, `c:`/`e:`/`card:` are always parsed (honouring them is the caller's policy), and a
//! `card:` value other than `none|low|orchestrator|high` rejects a metric line.
//!
//! Invariant: no input makes the parser panic (checked by property tests and the
//! `dogstatsd_parse` fuzz target).

use std::borrow::Cow;

use thiserror::Error;
use warden_model::{AlertType, CheckStatus, Priority};

use crate::number::{parse_go_float, parse_go_int};

/// Longest excerpt of the input quoted in an error message.
const MAX_QUOTED: usize = 64;

/// Why a line was rejected. The `Display` text names what is wrong and quotes the offending
/// part of the input (cut to 64 bytes).
#[derive(Clone, Debug, PartialEq, Eq, Error)]
pub enum ParseError {
    #[error("message is not valid UTF-8")]
    InvalidUtf8,
    #[error("empty message")]
    Empty,
    #[error("missing metric type (expected \"name:value|type\")")]
    MissingMetricType,
    #[error("missing ':' between metric name and value in {0:?}")]
    MissingValueSeparator(String),
    #[error("empty metric name")]
    EmptyName,
    #[error("empty metric value")]
    EmptyValue,
    #[error("unknown metric type {0:?} (expected c, g, ms, h, s or d)")]
    UnknownMetricType(String),
    #[error("invalid metric value {0:?}")]
    InvalidValue(String),
    #[error("invalid sample rate {0:?}")]
    InvalidSampleRate(String),
    #[error("invalid timestamp {0:?}")]
    InvalidTimestamp(String),
    #[error("timestamp must be > 0, got {0}")]
    NonPositiveTimestamp(i64),
    #[error("invalid cardinality {0:?} (expected none, low, orchestrator or high)")]
    InvalidCardinality(String),
    #[error("invalid event: missing ':' after the \"_e{{title_len,text_len}}\" header")]
    MissingEventHeaderEnd,
    #[error("invalid event header {0:?} (expected \"_e{{title_len,text_len}}\")")]
    InvalidEventHeader(String),
    #[error("invalid event: empty title")]
    EmptyEventTitle,
    #[error("invalid event: header announces {needed} bytes of title|text but only {got} follow")]
    EventTooShort { needed: u64, got: usize },
    #[error("invalid event: header lengths split a UTF-8 character")]
    EventLengthSplitsChar,
    #[error("invalid service check: expected \"_sc|name|status\"")]
    InvalidServiceCheckFormat,
    #[error("invalid service check: empty name")]
    EmptyServiceCheckName,
    #[error("invalid service check status {0:?} (expected 0, 1, 2 or 3)")]
    InvalidServiceCheckStatus(String),
}

fn quote(s: &str) -> String {
    if s.len() <= MAX_QUOTED {
        return s.to_owned();
    }
    let mut end = MAX_QUOTED;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}

/// One parsed DogStatsD line.
#[derive(Clone, Debug, PartialEq)]
pub enum Message<'a> {
    Metric(Metric<'a>),
    Event(Event<'a>),
    ServiceCheck(ServiceCheck<'a>),
}

/// Metric type symbol of a metric line.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum MetricType {
    /// `c`
    Count,
    /// `g`
    Gauge,
    /// `h`
    Histogram,
    /// `ms`: a histogram whose unit is the millisecond.
    Timing,
    /// `s`
    Set,
    /// `d`
    Distribution,
}

impl MetricType {
    /// Name used in the JSON form: `count`, `gauge`, `histogram`, `timing`, `set`,
    /// `distribution`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Count => "count",
            Self::Gauge => "gauge",
            Self::Histogram => "histogram",
            Self::Timing => "timing",
            Self::Set => "set",
            Self::Distribution => "distribution",
        }
    }

    /// The wire symbol (`c`, `g`, `h`, `ms`, `s`, `d`).
    pub fn symbol(self) -> &'static str {
        match self {
            Self::Count => "c",
            Self::Gauge => "g",
            Self::Histogram => "h",
            Self::Timing => "ms",
            Self::Set => "s",
            Self::Distribution => "d",
        }
    }

    fn from_symbol(s: &str) -> Option<Self> {
        Some(match s.as_bytes() {
            [b'c'] => Self::Count,
            [b'g'] => Self::Gauge,
            [b'h'] => Self::Histogram,
            [b'm', b's'] => Self::Timing,
            [b's'] => Self::Set,
            [b'd'] => Self::Distribution,
            _ => return None,
        })
    }
}

/// Origin-detection cardinality (`card:` field, protocol v1.6).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Cardinality {
    None,
    Low,
    Orchestrator,
    High,
}

impl Cardinality {
    /// Parses `none|low|orchestrator|high` (exact, lowercase).
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "none" => Self::None,
            "low" => Self::Low,
            "orchestrator" => Self::Orchestrator,
            "high" => Self::High,
            _ => return None,
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::None => "none",
            Self::Low => "low",
            Self::Orchestrator => "orchestrator",
            Self::High => "high",
        }
    }
}

/// The value part of a metric line, validated.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum MetricValue<'a> {
    /// One number (protocol v1.0).
    Single(f64),
    /// Several `:`-separated numbers (v1.1 packing); all items were validated, empty items are
    /// skipped, at least one number is present. Read them with [`MetricValue::iter`].
    Packed(&'a str),
    /// The raw member of a set (may contain `:`).
    Set(&'a str),
}

impl<'a> MetricValue<'a> {
    /// The numbers of a non-set value, in order (empty for a set).
    pub fn iter(&self) -> Values<'a> {
        match *self {
            Self::Single(v) => Values {
                single: Some(v),
                packed: None,
            },
            Self::Packed(raw) => Values {
                single: None,
                packed: Some(raw.split(':')),
            },
            Self::Set(_) => Values {
                single: None,
                packed: None,
            },
        }
    }

    /// The set member, if this is a set value.
    pub fn set_member(&self) -> Option<&'a str> {
        match *self {
            Self::Set(m) => Some(m),
            _ => None,
        }
    }
}

/// Iterator over the numbers of a [`MetricValue`].
#[derive(Clone, Debug)]
pub struct Values<'a> {
    single: Option<f64>,
    packed: Option<std::str::Split<'a, char>>,
}

impl Iterator for Values<'_> {
    type Item = f64;

    fn next(&mut self) -> Option<f64> {
        if let Some(v) = self.single.take() {
            return Some(v);
        }
        let split = self.packed.as_mut()?;
        for item in split.by_ref() {
            if item.is_empty() {
                continue;
            }
            // Validated at parse time; `None` cannot happen, skipping keeps this panic-free.
            if let Some(v) = parse_go_float(item) {
                return Some(v);
            }
        }
        None
    }
}

/// Reserved tag prefixes the agent strips from the tag list and interprets.
pub const HOST_TAG_PREFIX: &str = "host:";
pub const ENTITY_ID_TAG_PREFIX: &str = "dd.internal.entity_id:";
pub const CARDINALITY_TAG_PREFIX: &str = "dd.internal.card:";
pub const JMX_CHECK_NAME_TAG_PREFIX: &str = "dd.internal.jmx_check_name:";

/// A lazily split tag list: the raw text after `#` (`a:b,c`). Tags are split on `,` with no
/// trimming and no de-duplication, like the agent; `#` alone means no tags, but `#a,,b` has an
/// empty middle tag.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Tags<'a> {
    raw: &'a str,
}

impl<'a> Tags<'a> {
    /// Wraps raw tag text (without the leading `#`).
    pub fn new(raw: &'a str) -> Self {
        Self { raw }
    }

    /// The raw text (without `#`).
    pub fn raw(&self) -> &'a str {
        self.raw
    }

    pub fn is_empty(&self) -> bool {
        self.raw.is_empty()
    }

    /// Number of tags.
    pub fn len(&self) -> usize {
        if self.raw.is_empty() {
            0
        } else {
            self.raw.bytes().filter(|&b| b == b',').count() + 1
        }
    }

    /// All tags as sent, including reserved ones.
    pub fn iter(&self) -> TagIter<'a> {
        TagIter {
            rest: (!self.raw.is_empty()).then_some(self.raw),
        }
    }

    /// The host override from the last `host:<name>` tag, if any (`host:` alone = empty host).
    pub fn host(&self) -> Option<&'a str> {
        self.iter()
            .filter_map(|t| t.strip_prefix(HOST_TAG_PREFIX))
            .last()
    }

    /// Tags without the reserved ones (`host:`, `dd.internal.entity_id:`, `dd.internal.card:`,
    /// `dd.internal.jmx_check_name:`), in order.
    pub fn user_tags(&self) -> impl Iterator<Item = &'a str> + Clone + use<'a> {
        self.iter().filter(|t| !is_reserved_tag(t))
    }
}

/// Iterator over the tags of a [`Tags`] list, split on `,` (a byte search, eight bytes at a
/// time: `str::split` costs more than the rest of the line's parse on short tags).
#[derive(Clone, Debug)]
pub struct TagIter<'a> {
    /// What is left to split; `None` once the last tag was returned.
    rest: Option<&'a str>,
}

impl<'a> Iterator for TagIter<'a> {
    type Item = &'a str;

    #[inline]
    fn next(&mut self) -> Option<&'a str> {
        let rest = self.rest?;
        match find_byte(rest.as_bytes(), b',') {
            Some(i) => {
                // `,` is ASCII: both sides are on character boundaries.
                self.rest = rest.get(i + 1..);
                rest.get(..i)
            }
            None => {
                self.rest = None;
                Some(rest)
            }
        }
    }
}

/// True for tags the agent strips and interprets instead of forwarding.
pub fn is_reserved_tag(tag: &str) -> bool {
    tag.starts_with(HOST_TAG_PREFIX)
        || tag.starts_with(ENTITY_ID_TAG_PREFIX)
        || tag.starts_with(CARDINALITY_TAG_PREFIX)
        || tag.starts_with(JMX_CHECK_NAME_TAG_PREFIX)
}

/// Splits a tag list into the host override (last `host:` tag) and the non-reserved tags.
pub fn split_host_tag<'a>(tags: Tags<'a>) -> (Option<&'a str>, impl Iterator<Item = &'a str>) {
    (tags.host(), tags.user_tags())
}

/// A metric line: `name:value[:value...]|type[|@rate][|#tags][|Tts][|c:..][|e:..][|card:..]`.
#[derive(Clone, Debug, PartialEq)]
pub struct Metric<'a> {
    /// Bytes before the first `:` (non-empty, not validated further).
    pub name: &'a str,
    pub metric_type: MetricType,
    pub value: MetricValue<'a>,
    /// `@rate` as parsed (any float Go accepts; 1.0 when absent). The aggregator treats values
    /// outside `(0, 1]` as 1, like the agent's sketch does.
    pub sample_rate: f64,
    pub tags: Tags<'a>,
    /// `T<unix seconds>` (always > 0).
    pub timestamp: Option<i64>,
    /// Raw `c:` field (container id / cgroup inode); see [`LocalData::parse`].
    pub local_data: Option<&'a str>,
    /// Raw `e:` field; see [`ExternalData::parse`].
    pub external_data: Option<&'a str>,
    /// `card:` field; an empty `card:` counts as absent.
    pub cardinality: Option<Cardinality>,
}

/// An event line (`_e{title_len,text_len}:title|text|...`).
#[derive(Clone, Debug, PartialEq)]
pub struct Event<'a> {
    /// Title with `\n` escapes turned into newlines.
    pub title: Cow<'a, str>,
    /// Text with `\n` escapes turned into newlines.
    pub text: Cow<'a, str>,
    /// `d:` (any i64; an unparsable value is ignored).
    pub timestamp: Option<i64>,
    /// `h:` (empty = absent).
    pub hostname: Option<&'a str>,
    /// `k:` (empty = absent).
    pub aggregation_key: Option<&'a str>,
    /// `p:normal|low` (default normal; other values ignored).
    pub priority: Priority,
    /// `s:` (empty = absent).
    pub source_type_name: Option<&'a str>,
    /// `t:error|warning|info|success` (default info; other values ignored).
    pub alert_type: AlertType,
    pub tags: Tags<'a>,
    pub local_data: Option<&'a str>,
    pub external_data: Option<&'a str>,
    /// Invalid values are ignored for events (the event is still accepted).
    pub cardinality: Option<Cardinality>,
}

/// A service check line (`_sc|name|status|...`).
#[derive(Clone, Debug, PartialEq)]
pub struct ServiceCheck<'a> {
    pub name: &'a str,
    pub status: CheckStatus,
    /// `d:` (any i64; an unparsable value is ignored).
    pub timestamp: Option<i64>,
    /// `h:` (empty = absent).
    pub hostname: Option<&'a str>,
    pub tags: Tags<'a>,
    /// `m:` (empty = absent). Cannot contain `|`.
    pub message: Option<&'a str>,
    pub local_data: Option<&'a str>,
    pub external_data: Option<&'a str>,
    /// Invalid values are ignored for service checks.
    pub cardinality: Option<Cardinality>,
}

/// Host and tags for a model event/check: `h:` wins, else the last `host:` tag, else
/// `default_hostname`; reserved and empty tags are dropped, `extra_tags` appended, then sorted
/// and de-duplicated.
fn model_identity(
    hostname: Option<&str>,
    tags: Tags<'_>,
    default_hostname: &str,
    extra_tags: &[String],
) -> (String, Vec<String>) {
    let host = hostname.or_else(|| tags.host()).unwrap_or(default_hostname);
    let mut out: Vec<String> = tags
        .user_tags()
        .filter(|t| !t.is_empty())
        .map(str::to_owned)
        .chain(extra_tags.iter().cloned())
        .collect();
    out.sort_unstable();
    out.dedup();
    (host.to_owned(), out)
}

impl Event<'_> {
    /// The owned event to forward (`/intake/`). Host: `h:`, else the last `host:` tag, else
    /// `default_hostname`. Tags: reserved and empty ones dropped, `extra_tags` added, sorted
    /// and de-duplicated.
    pub fn to_model(&self, default_hostname: &str, extra_tags: &[String]) -> warden_model::Event {
        let (host, tags) = model_identity(self.hostname, self.tags, default_hostname, extra_tags);
        warden_model::Event {
            title: self.title.clone().into_owned(),
            text: self.text.clone().into_owned(),
            timestamp: self.timestamp,
            host,
            aggregation_key: self.aggregation_key.map(str::to_owned),
            priority: self.priority,
            source_type_name: self.source_type_name.map(str::to_owned),
            alert_type: self.alert_type,
            tags,
        }
    }
}

impl ServiceCheck<'_> {
    /// The owned check run to forward (`/api/v1/check_run`); host/tag rules as for events.
    /// A missing `d:` becomes timestamp 0 ("now" at the intake).
    pub fn to_model(
        &self,
        default_hostname: &str,
        extra_tags: &[String],
    ) -> warden_model::ServiceCheck {
        let (host, tags) = model_identity(self.hostname, self.tags, default_hostname, extra_tags);
        warden_model::ServiceCheck {
            name: self.name.to_owned(),
            status: self.status,
            host,
            timestamp: self.timestamp.unwrap_or(0),
            tags,
            message: self.message.map(str::to_owned),
        }
    }
}

/// Parsed `c:` local data (origin detection): `ci-<id>`, `in-<inode>`, a comma list of those,
/// or alone the legacy `cid-<id>` / bare `<id>`. Unparsable inodes are dropped, like the agent.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LocalData<'a> {
    pub container_id: Option<&'a str>,
    pub inode: Option<u64>,
}

impl<'a> LocalData<'a> {
    pub fn parse(raw: &'a str) -> Self {
        let mut out = Self::default();
        if raw.is_empty() {
            return out;
        }
        if raw.contains(',') {
            for item in raw.split(',') {
                if let Some(id) = item.strip_prefix("ci-") {
                    out.container_id = Some(id);
                } else if let Some(ino) = item.strip_prefix("in-") {
                    out.inode = ino.parse().ok();
                }
            }
        } else if let Some(id) = raw.strip_prefix("ci-") {
            out.container_id = Some(id);
        } else if let Some(ino) = raw.strip_prefix("in-") {
            out.inode = ino.parse().ok();
        } else if let Some(id) = raw.strip_prefix("cid-") {
            out.container_id = Some(id);
        } else {
            out.container_id = Some(raw);
        }
        out
    }
}

/// Parsed `e:` external data: comma list of `it-<bool>`, `cn-<container name>`, `pu-<pod uid>`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ExternalData<'a> {
    pub init: Option<bool>,
    pub container_name: Option<&'a str>,
    pub pod_uid: Option<&'a str>,
}

impl<'a> ExternalData<'a> {
    pub fn parse(raw: &'a str) -> Self {
        let mut out = Self::default();
        if raw.is_empty() {
            return out;
        }
        for item in raw.split(',') {
            if let Some(b) = item.strip_prefix("it-") {
                out.init = parse_go_bool(b);
            } else if let Some(n) = item.strip_prefix("cn-") {
                out.container_name = Some(n);
            } else if let Some(p) = item.strip_prefix("pu-") {
                out.pod_uid = Some(p);
            }
        }
        out
    }
}

/// Go's `strconv.ParseBool`.
fn parse_go_bool(s: &str) -> Option<bool> {
    match s {
        "1" | "t" | "T" | "TRUE" | "true" | "True" => Some(true),
        "0" | "f" | "F" | "FALSE" | "false" | "False" => Some(false),
        _ => None,
    }
}

/// Iterator over the messages of one datagram; see [`parse_datagram`].
#[derive(Clone, Debug)]
pub struct DatagramMessages<'a> {
    inner: DatagramInner<'a>,
}

#[derive(Clone, Debug)]
enum DatagramInner<'a> {
    /// The whole datagram is UTF-8 (validated once), so every line is: lines are split at
    /// ASCII bytes and never validated again.
    Text(&'a str),
    /// Not UTF-8 as a whole: each line is validated on its own (the bad ones are rejected).
    Bytes(Lines<'a>),
}

impl<'a> Iterator for DatagramMessages<'a> {
    type Item = Result<Message<'a>, ParseError>;

    #[inline]
    fn next(&mut self) -> Option<Self::Item> {
        match &mut self.inner {
            DatagramInner::Text(rest) => {
                let line = next_text_line(rest)?;
                Some(parse_line(line))
            }
            DatagramInner::Bytes(lines) => Some(parse_message(lines.next()?)),
        }
    }
}

/// [`Lines`] over text: the next non-empty line (one trailing `\r` dropped), advancing `rest`.
#[inline]
fn next_text_line<'a>(rest: &mut &'a str) -> Option<&'a str> {
    while !rest.is_empty() {
        let s: &'a str = rest;
        let (line, tail) = match find_byte(s.as_bytes(), b'\n') {
            // `\n` is ASCII: both sides are on character boundaries.
            Some(i) => (s.get(..i).unwrap_or(""), s.get(i + 1..).unwrap_or("")),
            None => (s, ""),
        };
        *rest = tail;
        let line = line.strip_suffix('\r').unwrap_or(line);
        if !line.is_empty() {
            return Some(line);
        }
    }
    None
}

/// Iterator over the non-empty lines of a datagram; see [`lines`].
#[derive(Clone, Debug)]
pub struct Lines<'a> {
    rest: &'a [u8],
}

impl<'a> Iterator for Lines<'a> {
    type Item = &'a [u8];

    fn next(&mut self) -> Option<&'a [u8]> {
        while !self.rest.is_empty() {
            let (mut line, rest) = match find_byte(self.rest, b'\n') {
                Some(i) => (&self.rest[..i], &self.rest[i + 1..]),
                None => (self.rest, &self.rest[self.rest.len()..]),
            };
            self.rest = rest;
            if let [head @ .., b'\r'] = line {
                line = head;
            }
            if !line.is_empty() {
                return Some(line);
            }
        }
        None
    }
}

/// Splits a datagram on `\n`, drops one trailing `\r` per line and skips empty lines. The last
/// line need not be terminated.
pub fn lines(datagram: &[u8]) -> Lines<'_> {
    Lines { rest: datagram }
}

/// Parses every line of a datagram (see [`lines`]); one item per non-empty line.
pub fn parse_datagram(datagram: &[u8]) -> DatagramMessages<'_> {
    let inner = match std::str::from_utf8(datagram) {
        Ok(text) => DatagramInner::Text(text),
        Err(_) => DatagramInner::Bytes(lines(datagram)),
    };
    DatagramMessages { inner }
}

/// Parses one line (no `\n`; a trailing `\r` is not stripped here). The kind is chosen by
/// prefix: `_e{` event, `_sc` service check, anything else a metric.
pub fn parse_message(line: &[u8]) -> Result<Message<'_>, ParseError> {
    let line = std::str::from_utf8(line).map_err(|_| ParseError::InvalidUtf8)?;
    parse_line(line)
}

/// [`parse_message`] for a line already known to be UTF-8.
pub fn parse_line(line: &str) -> Result<Message<'_>, ParseError> {
    match line.as_bytes() {
        [] => Err(ParseError::Empty),
        [b'_', b'e', b'{', ..] => parse_event(line).map(Message::Event),
        [b'_', b's', b'c', ..] => parse_service_check(line).map(Message::ServiceCheck),
        _ => parse_metric(line).map(Message::Metric),
    }
}

/// Index of the first `needle` in `hay`, eight bytes at a time (SWAR; no `unsafe`).
#[inline]
pub(crate) fn find_byte(hay: &[u8], needle: u8) -> Option<usize> {
    const LO: u64 = 0x0101_0101_0101_0101;
    const HI: u64 = 0x8080_8080_8080_8080;
    let pattern = LO.wrapping_mul(u64::from(needle));
    let mut chunks = hay.chunks_exact(8);
    let mut offset = 0;
    for chunk in chunks.by_ref() {
        let mut word = [0u8; 8];
        word.copy_from_slice(chunk);
        let x = u64::from_le_bytes(word) ^ pattern;
        let found = x.wrapping_sub(LO) & !x & HI;
        if found != 0 {
            return Some(offset + (found.trailing_zeros() / 8) as usize);
        }
        offset += 8;
    }
    chunks
        .remainder()
        .iter()
        .position(|&b| b == needle)
        .map(|i| offset + i)
}

/// Splits `s` at the first `|`: `(field, rest)`; `rest` is `None` when there is no `|`.
#[inline]
fn next_field(s: &str) -> (&str, Option<&str>) {
    match find_byte(s.as_bytes(), b'|') {
        Some(i) => (&s[..i], Some(&s[i + 1..])),
        None => (s, None),
    }
}

/// Parses a metric line (no event/service-check prefix check).
pub fn parse_metric(line: &str) -> Result<Metric<'_>, ParseError> {
    let (name_value, rest) = next_field(line);
    let Some(rest) = rest else {
        return Err(ParseError::MissingMetricType);
    };
    let Some(colon) = find_byte(name_value.as_bytes(), b':') else {
        return Err(ParseError::MissingValueSeparator(quote(name_value)));
    };
    let name = &name_value[..colon];
    let raw_value = &name_value[colon + 1..];
    if name.is_empty() {
        return Err(ParseError::EmptyName);
    }
    if raw_value.is_empty() {
        return Err(ParseError::EmptyValue);
    }
    let (raw_type, mut fields) = next_field(rest);
    if raw_type.is_empty() {
        return Err(ParseError::MissingMetricType);
    }
    let metric_type = MetricType::from_symbol(raw_type)
        .ok_or_else(|| ParseError::UnknownMetricType(quote(raw_type)))?;

    let value = if metric_type == MetricType::Set {
        MetricValue::Set(raw_value)
    } else if !raw_value.as_bytes().contains(&b':') {
        MetricValue::Single(
            parse_go_float(raw_value).ok_or_else(|| ParseError::InvalidValue(quote(raw_value)))?,
        )
    } else {
        let mut any = false;
        for item in raw_value.split(':') {
            if item.is_empty() {
                continue;
            }
            if parse_go_float(item).is_none() {
                return Err(ParseError::InvalidValue(quote(item)));
            }
            any = true;
        }
        if !any {
            return Err(ParseError::EmptyValue);
        }
        MetricValue::Packed(raw_value)
    };

    let mut m = Metric {
        name,
        metric_type,
        value,
        sample_rate: 1.0,
        tags: Tags::default(),
        timestamp: None,
        local_data: None,
        external_data: None,
        cardinality: None,
    };
    while let Some(rest) = fields {
        let (field, next) = next_field(rest);
        fields = next;
        match field.as_bytes().first() {
            Some(b'#') => m.tags = Tags::new(&field[1..]),
            Some(b'@') => {
                let raw = &field[1..];
                m.sample_rate =
                    parse_go_float(raw).ok_or_else(|| ParseError::InvalidSampleRate(quote(raw)))?;
            }
            Some(b'T') => {
                let raw = &field[1..];
                let ts =
                    parse_go_int(raw).ok_or_else(|| ParseError::InvalidTimestamp(quote(raw)))?;
                if ts < 1 {
                    return Err(ParseError::NonPositiveTimestamp(ts));
                }
                m.timestamp = Some(ts);
            }
            _ => {
                if let Some(v) = field.strip_prefix("c:") {
                    m.local_data = Some(v);
                } else if let Some(v) = field.strip_prefix("e:") {
                    m.external_data = Some(v);
                } else if let Some(v) = field.strip_prefix("card:") {
                    m.cardinality = if v.is_empty() {
                        None
                    } else {
                        Some(
                            Cardinality::parse(v)
                                .ok_or_else(|| ParseError::InvalidCardinality(quote(v)))?,
                        )
                    };
                }
                // Anything else (e.g. `m:x`, future extensions) is ignored.
            }
        }
    }
    Ok(m)
}

fn non_empty(s: &str) -> Option<&str> {
    (!s.is_empty()).then_some(s)
}

/// `\n` (two characters) → newline; borrows when there is nothing to replace.
fn unescape_newlines(s: &str) -> Cow<'_, str> {
    if s.contains("\\n") {
        Cow::Owned(s.replace("\\n", "\n"))
    } else {
        Cow::Borrowed(s)
    }
}

/// Parses an event line (must start with `_e{`).
pub fn parse_event(line: &str) -> Result<Event<'_>, ParseError> {
    let Some(colon) = line.as_bytes().iter().position(|&b| b == b':') else {
        return Err(ParseError::MissingEventHeaderEnd);
    };
    let header = &line[..colon];
    let raw_event = &line[colon + 1..];
    let bad_header = || ParseError::InvalidEventHeader(quote(header));
    // "_e{" + "a,b" + "}": at least 7 bytes; the closing byte is not checked (agent behaviour).
    if header.len() < 7 {
        return Err(bad_header());
    }
    let lengths = header.get(3..header.len() - 1).ok_or_else(bad_header)?;
    let (raw_title_len, raw_text_len) = lengths.split_once(',').ok_or_else(bad_header)?;
    let title_len = parse_go_int(raw_title_len)
        .filter(|n| *n >= 0)
        .ok_or_else(bad_header)?;
    if title_len == 0 {
        return Err(ParseError::EmptyEventTitle);
    }
    let text_len = parse_go_int(raw_text_len)
        .filter(|n| *n >= 0)
        .ok_or_else(bad_header)?;
    let (title_len, text_len) = (title_len as u64, text_len as u64);
    let needed = title_len + 1 + text_len; // both < 2^63: cannot overflow u64
    if (raw_event.len() as u64) < needed {
        return Err(ParseError::EventTooShort {
            needed,
            got: raw_event.len(),
        });
    }
    // All three fit in usize because they are <= raw_event.len().
    let (title_end, text_start, content_end) =
        (title_len as usize, title_len as usize + 1, needed as usize);
    let title = raw_event
        .get(..title_end)
        .ok_or(ParseError::EventLengthSplitsChar)?;
    let text = raw_event
        .get(text_start..content_end)
        .ok_or(ParseError::EventLengthSplitsChar)?;
    let optional = raw_event
        .get(content_end..)
        .ok_or(ParseError::EventLengthSplitsChar)?;

    let mut ev = Event {
        title: unescape_newlines(title),
        text: unescape_newlines(text),
        timestamp: None,
        hostname: None,
        aggregation_key: None,
        priority: Priority::Normal,
        source_type_name: None,
        alert_type: AlertType::Info,
        tags: Tags::default(),
        local_data: None,
        external_data: None,
        cardinality: None,
    };
    if optional.is_empty() {
        return Ok(ev);
    }
    // Invalid optional fields are skipped, the event is kept (agent behaviour).
    for field in optional.split('|') {
        if let Some(v) = field.strip_prefix("d:") {
            if let Some(ts) = parse_go_int(v) {
                ev.timestamp = Some(ts);
            }
        } else if let Some(v) = field.strip_prefix("h:") {
            ev.hostname = non_empty(v);
        } else if let Some(v) = field.strip_prefix("k:") {
            ev.aggregation_key = non_empty(v);
        } else if let Some(v) = field.strip_prefix("p:") {
            match v {
                "normal" => ev.priority = Priority::Normal,
                "low" => ev.priority = Priority::Low,
                _ => {}
            }
        } else if let Some(v) = field.strip_prefix("s:") {
            ev.source_type_name = non_empty(v);
        } else if let Some(v) = field.strip_prefix("t:") {
            match v {
                "error" => ev.alert_type = AlertType::Error,
                "warning" => ev.alert_type = AlertType::Warning,
                "info" => ev.alert_type = AlertType::Info,
                "success" => ev.alert_type = AlertType::Success,
                _ => {}
            }
        } else if let Some(v) = field.strip_prefix('#') {
            ev.tags = Tags::new(v);
        } else if let Some(v) = field.strip_prefix("c:") {
            ev.local_data = Some(v);
        } else if let Some(v) = field.strip_prefix("e:") {
            ev.external_data = Some(v);
        } else if let Some(v) = field.strip_prefix("card:") {
            if v.is_empty() {
                ev.cardinality = None;
            } else if let Some(c) = Cardinality::parse(v) {
                ev.cardinality = Some(c);
            }
        }
    }
    Ok(ev)
}

/// Parses a service check line (must start with `_sc`).
pub fn parse_service_check(line: &str) -> Result<ServiceCheck<'_>, ParseError> {
    let pipes = line.bytes().filter(|&b| b == b'|').count();
    if pipes < 2 || line.len() < 4 {
        return Err(ParseError::InvalidServiceCheckFormat);
    }
    // The agent pops the 4-byte "_sc|" header without checking the 4th byte.
    let body = line.get(4..).ok_or(ParseError::InvalidServiceCheckFormat)?;
    let (name, rest) = next_field(body);
    if name.is_empty() {
        return Err(ParseError::EmptyServiceCheckName);
    }
    let (raw_status, mut fields) = match rest {
        Some(r) => next_field(r),
        None => ("", None),
    };
    let status = match raw_status {
        "0" => CheckStatus::Ok,
        "1" => CheckStatus::Warning,
        "2" => CheckStatus::Critical,
        "3" => CheckStatus::Unknown,
        other => return Err(ParseError::InvalidServiceCheckStatus(quote(other))),
    };
    let mut sc = ServiceCheck {
        name,
        status,
        timestamp: None,
        hostname: None,
        tags: Tags::default(),
        message: None,
        local_data: None,
        external_data: None,
        cardinality: None,
    };
    while let Some(rest) = fields {
        let (field, next) = next_field(rest);
        fields = next;
        if let Some(v) = field.strip_prefix("d:") {
            if let Some(ts) = parse_go_int(v) {
                sc.timestamp = Some(ts);
            }
        } else if let Some(v) = field.strip_prefix("h:") {
            sc.hostname = non_empty(v);
        } else if let Some(v) = field.strip_prefix('#') {
            sc.tags = Tags::new(v);
        } else if let Some(v) = field.strip_prefix("m:") {
            sc.message = non_empty(v);
        } else if let Some(v) = field.strip_prefix("c:") {
            sc.local_data = Some(v);
        } else if let Some(v) = field.strip_prefix("e:") {
            sc.external_data = Some(v);
        } else if let Some(v) = field.strip_prefix("card:") {
            if v.is_empty() {
                sc.cardinality = None;
            } else if let Some(c) = Cardinality::parse(v) {
                sc.cardinality = Some(c);
            }
        }
    }
    Ok(sc)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn find_byte_matches_position(hay in prop::collection::vec(any::<u8>(), 0..64), needle in any::<u8>()) {
            prop_assert_eq!(find_byte(&hay, needle), hay.iter().position(|&b| b == needle));
        }
    }

    #[test]
    fn event_and_check_to_model() {
        let extra = vec!["env:prod".to_string()];
        let Ok(Message::Event(e)) =
            parse_message(b"_e{5,4}:title|text|#b,host:h1,a,,dd.internal.card:low|k:key|t:error")
        else {
            panic!("event expected");
        };
        let m = e.to_model("default", &extra);
        assert_eq!(m.host, "h1");
        assert_eq!(m.tags, vec!["a", "b", "env:prod"]);
        assert_eq!(m.aggregation_key.as_deref(), Some("key"));
        assert_eq!(m.alert_type, AlertType::Error);
        assert_eq!(m.timestamp, None);
        let Ok(Message::Event(e)) = parse_message(b"_e{1,1}:t|x|h:explicit|#host:h1") else {
            panic!("event expected");
        };
        assert_eq!(e.to_model("default", &[]).host, "explicit");

        let Ok(Message::ServiceCheck(sc)) = parse_message(b"_sc|db.up|2|m:down|#z") else {
            panic!("check expected");
        };
        let m = sc.to_model("default", &extra);
        assert_eq!(m.host, "default");
        assert_eq!(m.status, CheckStatus::Critical);
        assert_eq!(m.timestamp, 0);
        assert_eq!(m.tags, vec!["env:prod", "z"]);
        assert_eq!(m.message.as_deref(), Some("down"));
    }

    #[test]
    fn find_byte_edges() {
        assert_eq!(find_byte(b"", b'|'), None);
        assert_eq!(find_byte(b"abcdefgh|", b'|'), Some(8));
        assert_eq!(find_byte(b"\x01\x00|", b'|'), Some(2));
        assert_eq!(find_byte(b"\xff\xff\xff\xff\xff\xff\xff|", b'|'), Some(7));
        assert_eq!(find_byte(b"a|b|c", b'|'), Some(1));
    }
}
