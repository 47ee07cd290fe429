//! Turning an HTTP request into WAF addresses, shaped the way the Datadog ruleset expects
//! (decoded multi-valued query and form values, lower-cased headers without cookies, cookies
//! apart, parsed bodies) and bounded like tracers bound them, so hostile input cannot make the
//! WAF (or this code) do unbounded work.

use std::net::IpAddr;

use http::HeaderMap;
use serde_json::{Map, Value};

use crate::config::{Cidr, Limits, canonical};

/// Truncate a value to the configured depth, container size and string length.
pub(crate) fn bound(v: Value, lim: &Limits) -> Value {
    bound_at(v, lim, 0)
}

fn bound_at(v: Value, lim: &Limits, depth: usize) -> Value {
    match v {
        Value::String(s) => Value::String(truncate(s, lim.max_string_length)),
        Value::Array(a) => {
            if depth >= lim.max_depth {
                return Value::Array(Vec::new());
            }
            Value::Array(
                a.into_iter()
                    .take(lim.max_container_size)
                    .map(|x| bound_at(x, lim, depth + 1))
                    .collect(),
            )
        }
        Value::Object(m) => {
            if depth >= lim.max_depth {
                return Value::Object(Map::new());
            }
            Value::Object(
                m.into_iter()
                    .take(lim.max_container_size)
                    .map(|(k, x)| {
                        (
                            truncate(k, lim.max_string_length),
                            bound_at(x, lim, depth + 1),
                        )
                    })
                    .collect(),
            )
        }
        other => other,
    }
}

/// Cut a string to at most `max` bytes on a character boundary.
pub(crate) fn truncate(mut s: String, max: usize) -> String {
    if s.len() > max {
        let mut cut = max;
        while !s.is_char_boundary(cut) {
            cut -= 1;
        }
        s.truncate(cut);
    }
    s
}

/// Decode `application/x-www-form-urlencoded` bytes (also used for query strings).
pub(crate) fn url_decode(s: &[u8]) -> String {
    let mut out = Vec::with_capacity(s.len());
    let mut i = 0;
    while i < s.len() {
        match s[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < s.len() => match (hex(s[i + 1]), hex(s[i + 2])) {
                (Some(h), Some(l)) => {
                    out.push(h << 4 | l);
                    i += 2;
                }
                _ => out.push(b'%'),
            },
            b => out.push(b),
        }
        i += 1;
    }
    match String::from_utf8(out) {
        Ok(s) => s,
        Err(e) => String::from_utf8_lossy(e.as_bytes()).into_owned(),
    }
}

fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// `a=1&a=2&b` -> `{"a": ["1", "2"], "b": [""]}` (decoded, bounded).
pub(crate) fn parse_urlencoded(raw: &[u8], lim: &Limits) -> Map<String, Value> {
    let mut m = Map::new();
    for pair in raw.split(|&b| b == b'&').filter(|p| !p.is_empty()) {
        let (k, v) = match pair.iter().position(|&b| b == b'=') {
            Some(i) => (&pair[..i], &pair[i + 1..]),
            None => (pair, &pair[..0]),
        };
        let k = truncate(url_decode(k), lim.max_string_length);
        let v = Value::String(truncate(url_decode(v), lim.max_string_length));
        if let Some(Value::Array(a)) = m.get_mut(&k) {
            if a.len() < lim.max_container_size {
                a.push(v);
            }
        } else if m.len() < lim.max_container_size {
            m.insert(k, Value::Array(vec![v]));
        }
    }
    m
}

/// Headers (lower-cased names, `cookie` removed, repeated headers joined with `, `) and the
/// cookies (`name -> [values]`, not URL-decoded, as tracers send them).
pub(crate) fn headers_and_cookies(
    h: &HeaderMap,
    lim: &Limits,
) -> (Map<String, Value>, Map<String, Value>) {
    let mut headers = Map::new();
    let mut cookies = Map::new();
    for (name, value) in h {
        let v = String::from_utf8_lossy(value.as_bytes());
        if name == http::header::COOKIE {
            for c in v.split(';') {
                let c = c.trim();
                if c.is_empty() {
                    continue;
                }
                let (k, val) = c.split_once('=').unwrap_or((c, ""));
                let k = truncate(k.to_string(), lim.max_string_length);
                let val = Value::String(truncate(val.to_string(), lim.max_string_length));
                if let Some(Value::Array(a)) = cookies.get_mut(&k) {
                    if a.len() < lim.max_container_size {
                        a.push(val);
                    }
                } else if cookies.len() < lim.max_container_size {
                    cookies.insert(k, Value::Array(vec![val]));
                }
            }
            continue;
        }
        match headers.get_mut(name.as_str()) {
            Some(Value::String(prev)) => {
                if prev.len() < lim.max_string_length {
                    prev.push_str(", ");
                    prev.push_str(&v);
                    let s = std::mem::take(prev);
                    *prev = truncate(s, lim.max_string_length);
                }
            }
            _ => {
                if headers.len() < lim.max_container_size {
                    headers.insert(
                        name.as_str().to_string(),
                        Value::String(truncate(v.into_owned(), lim.max_string_length)),
                    );
                }
            }
        }
    }
    (headers, cookies)
}

/// The parsed request body, by content type.
pub(crate) struct ParsedBody {
    pub(crate) body: Option<Value>,
    pub(crate) filenames: Vec<Value>,
}

pub(crate) fn parse_body(content_type: Option<&str>, raw: &[u8], lim: &Limits) -> ParsedBody {
    let mut out = ParsedBody {
        body: None,
        filenames: Vec::new(),
    };
    if raw.is_empty() {
        return out;
    }
    let ct = content_type.unwrap_or("").to_ascii_lowercase();
    let mime = ct.split(';').next().unwrap_or("").trim();
    if mime == "application/json" || mime.ends_with("+json") {
        if let Ok(v) = serde_json::from_slice::<Value>(raw) {
            out.body = Some(bound(v, lim));
            return out;
        }
    } else if mime == "application/x-www-form-urlencoded" {
        out.body = Some(Value::Object(parse_urlencoded(raw, lim)));
        return out;
    } else if mime == "multipart/form-data" {
        if let Some(b) = boundary(content_type.unwrap_or("")) {
            let (fields, names) = parse_multipart(raw, &b, lim);
            out.body = Some(Value::Object(fields));
            out.filenames = names;
            return out;
        }
    }
    // Text, XML, unparsable JSON, unknown types that are valid UTF-8: the raw text.
    if mime.starts_with("text/") || mime.contains("xml") || std::str::from_utf8(raw).is_ok() {
        let s = String::from_utf8_lossy(raw).into_owned();
        out.body = Some(Value::String(truncate(s, lim.max_string_length)));
    }
    out
}

fn boundary(content_type: &str) -> Option<String> {
    content_type.split(';').skip(1).find_map(|p| {
        let (k, v) = p.trim().split_once('=')?;
        k.trim()
            .eq_ignore_ascii_case("boundary")
            .then(|| v.trim().trim_matches('"').to_string())
            .filter(|b| !b.is_empty())
    })
}

/// Multipart fields: values of non-file parts under their name (`name -> [values]`), and the
/// file names of file parts.
fn parse_multipart(raw: &[u8], boundary: &str, lim: &Limits) -> (Map<String, Value>, Vec<Value>) {
    let mut fields = Map::new();
    let mut names = Vec::new();
    let delim = format!("--{boundary}");
    let d = delim.as_bytes();
    let mut parts = Vec::new();
    let mut start = None;
    let mut i = 0;
    while i + d.len() <= raw.len() {
        if &raw[i..i + d.len()] == d && (i == 0 || raw[i - 1] == b'\n') {
            if let Some(s) = start {
                parts.push(&raw[s..i]);
            }
            i += d.len();
            if raw[i..].starts_with(b"--") {
                break;
            }
            start = Some(i);
            continue;
        }
        i += 1;
    }
    for part in parts.into_iter().take(lim.max_container_size) {
        let part = strip_crlf_start(part);
        let (head, body) = match find(part, b"\r\n\r\n") {
            Some(p) => (&part[..p], &part[p + 4..]),
            None => match find(part, b"\n\n") {
                Some(p) => (&part[..p], &part[p + 2..]),
                None => continue,
            },
        };
        let body = body
            .strip_suffix(b"\r\n")
            .or_else(|| body.strip_suffix(b"\n"))
            .unwrap_or(body);
        let head = String::from_utf8_lossy(head);
        let mut name = None;
        let mut filename = None;
        for line in head.lines() {
            let Some((k, v)) = line.split_once(':') else {
                continue;
            };
            if !k.trim().eq_ignore_ascii_case("content-disposition") {
                continue;
            }
            for p in v.split(';').skip(1) {
                if let Some((pk, pv)) = p.trim().split_once('=') {
                    let pv = pv.trim().trim_matches('"').to_string();
                    match pk.trim().to_ascii_lowercase().as_str() {
                        "name" => name = Some(pv),
                        "filename" => filename = Some(pv),
                        _ => {}
                    }
                }
            }
        }
        if let Some(f) = filename {
            names.push(Value::String(truncate(f, lim.max_string_length)));
            continue;
        }
        let Some(n) = name else { continue };
        let v = Value::String(truncate(
            String::from_utf8_lossy(body).into_owned(),
            lim.max_string_length,
        ));
        if let Some(Value::Array(a)) = fields.get_mut(&n) {
            a.push(v);
        } else {
            fields.insert(truncate(n, lim.max_string_length), Value::Array(vec![v]));
        }
    }
    (fields, names)
}

fn strip_crlf_start(p: &[u8]) -> &[u8] {
    p.strip_prefix(b"\r\n")
        .or_else(|| p.strip_prefix(b"\n"))
        .unwrap_or(p)
}

fn find(h: &[u8], n: &[u8]) -> Option<usize> {
    h.windows(n.len()).position(|w| w == n)
}

/// Match a route template (`/users/{id}/files/{*rest}`, also `:id` / `*rest`) against a path.
pub(crate) fn path_params(template: &str, path: &str, lim: &Limits) -> Map<String, Value> {
    let mut out = Map::new();
    let mut segs = path.split('/');
    for t in template.split('/') {
        let name = if let Some(n) = t.strip_prefix("{*").and_then(|n| n.strip_suffix('}')) {
            Some((n, true))
        } else if let Some(n) = t.strip_prefix('{').and_then(|n| n.strip_suffix('}')) {
            Some((n, false))
        } else if let Some(n) = t.strip_prefix(':') {
            Some((n, false))
        } else {
            t.strip_prefix('*').map(|n| (n, true))
        };
        match name {
            Some((n, true)) => {
                let rest: Vec<&str> = segs.by_ref().collect();
                let v = url_decode_path(rest.join("/").as_bytes());
                out.insert(
                    n.to_string(),
                    Value::String(truncate(v, lim.max_string_length)),
                );
                break;
            }
            Some((n, false)) => {
                let Some(s) = segs.next() else { break };
                let v = url_decode_path(s.as_bytes());
                out.insert(
                    n.to_string(),
                    Value::String(truncate(v, lim.max_string_length)),
                );
            }
            None => {
                if segs.next().is_none() {
                    break;
                }
            }
        }
        if out.len() >= lim.max_container_size {
            break;
        }
    }
    out
}

/// Percent-decoding without the form rule `+` -> space (paths).
fn url_decode_path(s: &[u8]) -> String {
    let mut out = Vec::with_capacity(s.len());
    let mut i = 0;
    while i < s.len() {
        if s[i] == b'%' && i + 2 < s.len() {
            if let (Some(h), Some(l)) = (hex(s[i + 1]), hex(s[i + 2])) {
                out.push(h << 4 | l);
                i += 3;
                continue;
            }
        }
        out.push(s[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The client IP: the peer, unless the peer is a trusted proxy, in which case the forwarding
/// headers are walked from the nearest hop outwards, skipping trusted proxies; the first
/// untrusted address is the client. Without a known peer nothing can be trusted: `None`.
pub(crate) fn client_ip(
    peer: Option<IpAddr>,
    headers: &HeaderMap,
    trusted: &[Cidr],
) -> Option<IpAddr> {
    let peer = canonical(peer?);
    let is_trusted = |ip: IpAddr| trusted.iter().any(|c| c.contains(ip));
    if !is_trusted(peer) {
        return Some(peer);
    }
    let mut hops: Vec<IpAddr> = Vec::new();
    let forwarded: Vec<_> = headers.get_all(http::header::FORWARDED).iter().collect();
    if !forwarded.is_empty() {
        for h in forwarded {
            let s = String::from_utf8_lossy(h.as_bytes());
            for elem in s.split(',') {
                for pair in elem.split(';') {
                    if let Some((k, v)) = pair.trim().split_once('=') {
                        if k.trim().eq_ignore_ascii_case("for") {
                            if let Some(ip) = parse_hop(v) {
                                hops.push(ip);
                            }
                        }
                    }
                }
            }
        }
    } else {
        for h in headers.get_all("x-forwarded-for") {
            let s = String::from_utf8_lossy(h.as_bytes());
            hops.extend(s.split(',').filter_map(parse_hop));
        }
    }
    let mut client = peer;
    for ip in hops.into_iter().rev() {
        client = ip;
        if !is_trusted(ip) {
            break;
        }
    }
    Some(client)
}

/// `1.2.3.4`, `1.2.3.4:80`, `"[2001:db8::1]:443"`, `2001:db8::1`.
fn parse_hop(s: &str) -> Option<IpAddr> {
    let s = s.trim().trim_matches('"');
    if let Ok(ip) = s.parse::<IpAddr>() {
        return Some(canonical(ip));
    }
    if let Some(rest) = s.strip_prefix('[') {
        let inner = rest.split(']').next()?;
        return inner.parse().ok().map(canonical);
    }
    let (host, _port) = s.rsplit_once(':')?;
    host.parse().ok().map(canonical)
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn lim() -> Limits {
        Limits::default()
    }

    #[test]
    fn query_is_decoded_and_multivalued() {
        let m = parse_urlencoded(b"a=1&a=%27+OR+1%3D1&b&c=%zz", &lim());
        assert_eq!(m["a"], serde_json::json!(["1", "' OR 1=1"]));
        assert_eq!(m["b"], serde_json::json!([""]));
        assert_eq!(m["c"], serde_json::json!(["%zz"]));
        assert_eq!(url_decode(b"%4"), "%4");
        assert_eq!(url_decode(b"%41"), "A");
    }

    #[test]
    fn limits_bound_strings_containers_and_depth() {
        let l = Limits {
            max_body_bytes: 10,
            max_depth: 2,
            max_container_size: 3,
            max_string_length: 4,
        };
        let v = serde_json::json!({"a": "héllo", "b": [1, 2, 3, 4, 5], "c": {"d": {"e": 1}}});
        let b = bound(v, &l);
        assert_eq!(b["a"], "hél");
        assert_eq!(b["b"].as_array().map(Vec::len), Some(3));
        assert_eq!(b["c"]["d"], serde_json::json!({}));
    }

    #[test]
    fn headers_lowercased_cookies_apart() {
        let mut h = HeaderMap::new();
        h.insert("User-Agent", HeaderValue::from_static("x"));
        h.append("accept", HeaderValue::from_static("a"));
        h.append("accept", HeaderValue::from_static("b"));
        h.insert("cookie", HeaderValue::from_static("s=1; t=%27x; s=2"));
        let (hd, ck) = headers_and_cookies(&h, &lim());
        assert_eq!(hd["user-agent"], "x");
        assert_eq!(hd["accept"], "a, b");
        assert!(!hd.contains_key("cookie"));
        assert_eq!(ck["s"], serde_json::json!(["1", "2"]));
        assert_eq!(ck["t"], serde_json::json!(["%27x"]));
    }

    #[test]
    fn bodies_by_content_type() {
        let j = parse_body(Some("application/json"), br#"{"q":["x"]}"#, &lim());
        assert_eq!(j.body, Some(serde_json::json!({"q": ["x"]})));
        let f = parse_body(Some("application/x-www-form-urlencoded"), b"a=b+c", &lim());
        assert_eq!(f.body, Some(serde_json::json!({"a": ["b c"]})));
        let t = parse_body(Some("text/plain"), b"hello", &lim());
        assert_eq!(t.body, Some(serde_json::json!("hello")));
        let mp = b"--XX\r\nContent-Disposition: form-data; name=\"f\"\r\n\r\nval\r\n--XX\r\nContent-Disposition: form-data; name=\"up\"; filename=\"../x.php\"\r\nContent-Type: text/plain\r\n\r\ndata\r\n--XX--\r\n";
        let m = parse_body(Some("multipart/form-data; boundary=XX"), mp, &lim());
        assert_eq!(m.body, Some(serde_json::json!({"f": ["val"]})));
        assert_eq!(m.filenames, vec![serde_json::json!("../x.php")]);
        let bin = parse_body(Some("application/octet-stream"), &[0xff, 0xfe], &lim());
        assert!(bin.body.is_none());
    }

    #[test]
    fn route_templates() {
        let p = path_params(
            "/users/{id}/files/{*rest}",
            "/users/4%202/files/a/b",
            &lim(),
        );
        assert_eq!(p["id"], "4 2");
        assert_eq!(p["rest"], "a/b");
        let p = path_params("/u/:id", "/u/7", &lim());
        assert_eq!(p["id"], "7");
    }

    #[test]
    fn client_ip_only_through_trusted_proxies() {
        let trusted: Vec<Cidr> = vec![
            "127.0.0.1".parse().expect("cidr"),
            "10.0.0.0/8".parse().expect("cidr"),
        ];
        let mut h = HeaderMap::new();
        h.insert(
            "x-forwarded-for",
            HeaderValue::from_static("6.6.6.6, 203.0.113.9, 10.1.1.1"),
        );
        let lo: IpAddr = "127.0.0.1".parse().expect("ip");
        let ext: IpAddr = "198.51.100.1".parse().expect("ip");
        assert_eq!(
            client_ip(Some(lo), &h, &trusted),
            Some("203.0.113.9".parse().expect("ip"))
        );
        assert_eq!(client_ip(Some(ext), &h, &trusted), Some(ext));
        assert_eq!(client_ip(Some(lo), &h, &[]), Some(lo));
        assert_eq!(client_ip(None, &h, &trusted), None);
        let mut f = HeaderMap::new();
        f.insert(
            "forwarded",
            HeaderValue::from_static("for=\"[2001:db8::7]:4711\";proto=https, for=10.0.0.2"),
        );
        assert_eq!(
            client_ip(Some(lo), &f, &trusted),
            Some("2001:db8::7".parse().expect("ip"))
        );
    }
}
