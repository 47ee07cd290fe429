//! Processors: derived addresses (`jwt_decode`, `uri_parse`) and attributes (HTTP endpoint,
//! header, network and session fingerprints; `extract_schema` API schemas with scanners).
//!
//! Fingerprint hashes are the first 8 hex digits of SHA-256 (own implementation below, so the
//! crate needs no crypto dependency for a non-security digest).

use std::sync::Arc;

use serde_json::{Map, Value, json};

use crate::config::ScannerSpec;

pub(crate) fn generate(
    generator: &str,
    args: &[(&str, Option<&Value>)],
    scanners: &[Arc<ScannerSpec>],
    _flags: &Option<Arc<Value>>,
) -> Option<Value> {
    let arg = |n: &str| args.iter().find(|(k, _)| *k == n).and_then(|(_, v)| *v);
    match generator {
        "http_endpoint_fingerprint" => {
            endpoint_fp(arg("method")?, arg("uri_raw")?, arg("query"), arg("body"))
        }
        "http_header_fingerprint" => header_fp(arg("headers")?),
        "http_network_fingerprint" => network_fp(arg("headers")?),
        "session_fingerprint" => session_fp(arg("cookies"), arg("session_id"), arg("user_id")),
        "jwt_decode" => jwt_decode(arg("inputs")?),
        "uri_parse" => uri_parse(arg("inputs")?),
        "extract_schema" => Some(schema(arg("inputs")?, None, scanners, 0)),
        _ => None,
    }
}

// ------------------------------------------------------------------ sha256

fn sha256(data: &[u8]) -> [u8; 32] {
    const K: [u32; 64] = [
        0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4,
        0xab1c5ed5, 0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe,
        0x9bdc06a7, 0xc19bf174, 0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f,
        0x4a7484aa, 0x5cb0a9dc, 0x76f988da, 0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7,
        0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967, 0x27b70a85, 0x2e1b2138, 0x4d2c6dfc,
        0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85, 0xa2bfe8a1, 0xa81a664b,
        0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070, 0x19a4c116,
        0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
        0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7,
        0xc67178f2,
    ];
    let mut h: [u32; 8] = [
        0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a, 0x510e527f, 0x9b05688c, 0x1f83d9ab,
        0x5be0cd19,
    ];
    // Whole blocks straight from the input, then the padded tail (one or two blocks) from a
    // stack buffer: no allocation.
    let mut blocks = data.chunks_exact(64);
    for block in &mut blocks {
        sha256_block(&mut h, block, &K);
    }
    let rest = blocks.remainder();
    let mut tail = [0u8; 128];
    tail[..rest.len()].copy_from_slice(rest);
    tail[rest.len()] = 0x80;
    let tail_len = if rest.len() < 56 { 64 } else { 128 };
    let bits = (data.len() as u64).wrapping_mul(8);
    tail[tail_len - 8..tail_len].copy_from_slice(&bits.to_be_bytes());
    for block in tail[..tail_len].chunks_exact(64) {
        sha256_block(&mut h, block, &K);
    }
    let mut out = [0u8; 32];
    for (i, x) in h.iter().enumerate() {
        out[i * 4..i * 4 + 4].copy_from_slice(&x.to_be_bytes());
    }
    out
}

/// One SHA-256 compression (FIPS 180-4 §6.2.2) with the working variables in locals.
fn sha256_block(h: &mut [u32; 8], block: &[u8], k: &[u32; 64]) {
    let mut w = [0u32; 64];
    for (i, c) in block.chunks_exact(4).enumerate() {
        w[i] = u32::from_be_bytes([c[0], c[1], c[2], c[3]]);
    }
    for i in 16..64 {
        let s0 = w[i - 15].rotate_right(7) ^ w[i - 15].rotate_right(18) ^ (w[i - 15] >> 3);
        let s1 = w[i - 2].rotate_right(17) ^ w[i - 2].rotate_right(19) ^ (w[i - 2] >> 10);
        w[i] = w[i - 16]
            .wrapping_add(s0)
            .wrapping_add(w[i - 7])
            .wrapping_add(s1);
    }
    let [mut a, mut b, mut c, mut d, mut e, mut f, mut g, mut hh] = *h;
    for i in 0..64 {
        let s1 = e.rotate_right(6) ^ e.rotate_right(11) ^ e.rotate_right(25);
        let ch = (e & f) ^ (!e & g);
        let t1 = hh
            .wrapping_add(s1)
            .wrapping_add(ch)
            .wrapping_add(k[i])
            .wrapping_add(w[i]);
        let s0 = a.rotate_right(2) ^ a.rotate_right(13) ^ a.rotate_right(22);
        let maj = (a & b) ^ (a & c) ^ (b & c);
        let t2 = s0.wrapping_add(maj);
        hh = g;
        g = f;
        f = e;
        e = d.wrapping_add(t1);
        d = c;
        c = b;
        b = a;
        a = t1.wrapping_add(t2);
    }
    for (x, v) in h.iter_mut().zip([a, b, c, d, e, f, g, hh]) {
        *x = x.wrapping_add(v);
    }
}

/// First 8 hex digits of SHA-256; empty input gives an empty string.
fn h8(s: &str) -> String {
    if s.is_empty() {
        return String::new();
    }
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(8);
    for b in &sha256(s.as_bytes())[..4] {
        out.push(char::from(HEX[usize::from(b >> 4)]));
        out.push(char::from(HEX[usize::from(b & 15)]));
    }
    out
}

fn sorted_keys(v: Option<&Value>) -> String {
    match v {
        Some(Value::Object(m)) => {
            let mut k: Vec<&str> = m.keys().map(String::as_str).collect();
            k.sort_unstable();
            k.join(",")
        }
        _ => String::new(),
    }
}

fn endpoint_fp(
    method: &Value,
    uri: &Value,
    query: Option<&Value>,
    body: Option<&Value>,
) -> Option<Value> {
    let method = method.as_str()?.to_ascii_lowercase();
    let uri = uri.as_str()?;
    let path = uri.split(['?', '#']).next().unwrap_or("");
    Some(Value::from(format!(
        "http-{method}-{}-{}-{}",
        h8(path),
        h8(&sorted_keys(query)),
        h8(&sorted_keys(body))
    )))
}

const KNOWN_HEADERS: &[&str] = &[
    "referer",
    "connection",
    "accept-encoding",
    "content-encoding",
    "cache-control",
    "te",
    "accept-charset",
    "content-type",
    "accept",
    "accept-language",
];
const IP_HEADERS: &[&str] = &[
    "x-forwarded-for",
    "x-real-ip",
    "true-client-ip",
    "x-client-ip",
    "x-forwarded",
    "forwarded-for",
    "x-cluster-client-ip",
    "fastly-client-ip",
    "cf-connecting-ip",
    "cf-connecting-ipv6",
];

fn bitmask(m: &Map<String, Value>, list: &[&str]) -> String {
    list.iter()
        .map(|h| if m.contains_key(*h) { '1' } else { '0' })
        .collect()
}

fn header_fp(headers: &Value) -> Option<Value> {
    let m = headers.as_object()?;
    let ua = m
        .get("user-agent")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_ascii_lowercase();
    let mut unknown: Vec<String> = m
        .keys()
        .map(|k| k.to_ascii_lowercase())
        .filter(|k| {
            !KNOWN_HEADERS.contains(&k.as_str())
                && !IP_HEADERS.contains(&k.as_str())
                && k != "user-agent"
                && k != "cookie"
                && !k.starts_with("x-datadog")
        })
        .collect();
    unknown.sort_unstable();
    Some(Value::from(format!(
        "hdr-{}-{}-{}-{}",
        bitmask(m, KNOWN_HEADERS),
        h8(&ua),
        unknown.len(),
        h8(&unknown.join(","))
    )))
}

fn network_fp(headers: &Value) -> Option<Value> {
    let m = headers.as_object()?;
    let count = IP_HEADERS
        .iter()
        .find_map(|h| m.get(*h).and_then(Value::as_str))
        .map_or(0, |v| v.split(',').filter(|x| !x.trim().is_empty()).count());
    Some(Value::from(format!(
        "net-{count}-{}",
        bitmask(m, IP_HEADERS)
    )))
}

fn session_fp(
    cookies: Option<&Value>,
    session: Option<&Value>,
    user: Option<&Value>,
) -> Option<Value> {
    if cookies.is_none() && session.is_none() && user.is_none() {
        return None;
    }
    let (keys, values) = match cookies {
        Some(Value::Object(m)) => {
            let mut kv: Vec<(&String, &Value)> = m.iter().collect();
            kv.sort_by(|a, b| a.0.cmp(b.0));
            let k: Vec<&str> = kv.iter().map(|(k, _)| k.as_str()).collect();
            let v: Vec<String> = kv
                .iter()
                .map(|(_, v)| crate::context::scalar_string(v))
                .collect();
            (k.join(","), v.join(","))
        }
        _ => (String::new(), String::new()),
    };
    let s = |v: Option<&Value>| v.and_then(Value::as_str).unwrap_or("").to_string();
    Some(Value::from(format!(
        "ssn-{}-{}-{}-{}",
        h8(&s(user)),
        h8(&keys),
        h8(&values),
        h8(&s(session))
    )))
}

fn b64url_json(s: &str) -> Option<Value> {
    let bytes = crate::transform::base64_decode_bytes(s.trim_end_matches('=').as_bytes(), true);
    serde_json::from_slice(&bytes).ok()
}

fn jwt_decode(v: &Value) -> Option<Value> {
    let s = match v {
        Value::String(s) => s.as_str(),
        Value::Array(a) => a.first()?.as_str()?,
        _ => return None,
    };
    let token = s.trim();
    let token = token
        .strip_prefix("Bearer ")
        .or_else(|| token.strip_prefix("bearer "))
        .unwrap_or(token)
        .trim();
    let mut parts = token.split('.');
    let (h, p) = (parts.next()?, parts.next()?);
    let sig = parts.next();
    let header = b64url_json(h)?;
    let payload = b64url_json(p)?;
    Some(json!({
        "header": header,
        "payload": payload,
        "signature": {"available": sig.is_some_and(|x| !x.is_empty())},
    }))
}

fn uri_parse(v: &Value) -> Option<Value> {
    let s = v.as_str()?;
    let (scheme, rest) = s.split_once(':')?;
    let mut out = Map::new();
    out.insert("scheme".into(), Value::from(scheme.to_ascii_lowercase()));
    let (before_frag, frag) = match rest.split_once('#') {
        Some((a, f)) => (a, Some(f)),
        None => (rest, None),
    };
    let (before_q, q) = match before_frag.split_once('?') {
        Some((a, q)) => (a, Some(q)),
        None => (before_frag, None),
    };
    let path = if let Some(auth_path) = before_q.strip_prefix("//") {
        let (auth, path) = match auth_path.find('/') {
            Some(i) => (&auth_path[..i], &auth_path[i..]),
            None => (auth_path, ""),
        };
        let hostport = match auth.rsplit_once('@') {
            Some((u, hp)) => {
                out.insert("userinfo".into(), Value::from(u));
                hp
            }
            None => auth,
        };
        match hostport.rsplit_once(':') {
            Some((h, p)) if p.bytes().all(|b| b.is_ascii_digit()) && !p.is_empty() => {
                out.insert("host".into(), Value::from(h));
                out.insert(
                    "port".into(),
                    p.parse::<u64>().map(Value::from).unwrap_or(Value::Null),
                );
            }
            _ => {
                out.insert("host".into(), Value::from(hostport));
            }
        }
        path
    } else {
        before_q
    };
    out.insert("path".into(), Value::from(path));
    if let Some(q) = q {
        let mut qm = Map::new();
        for kv in q.split('&').filter(|x| !x.is_empty()) {
            let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
            qm.insert(k.to_string(), Value::from(v));
        }
        out.insert("query".into(), Value::Object(qm));
    }
    if let Some(f) = frag {
        out.insert("fragment".into(), Value::from(f));
    }
    Some(Value::Object(out))
}

/// libddwaf schema encoding: `[type]` for scalars (1 null, 2 bool, 4 int, 8 string,
/// 16 float), `[[items...], {"len": n}]` for arrays, `[{key: schema}]` for maps; a scanner
/// match adds its tags as a second element of a scalar.
fn schema(v: &Value, key: Option<&str>, scanners: &[Arc<ScannerSpec>], depth: usize) -> Value {
    const MAX_DEPTH: usize = 18;
    const MAX_ITEMS: usize = 10;
    let scalar = |t: u32| {
        let s = match v {
            Value::String(s) => Some(s.as_str()),
            _ => None,
        };
        for sc in scanners {
            let key_ok = match (&sc.key, key) {
                (Some(m), Some(k)) => m.match_bytes(k.as_bytes()).is_some(),
                (Some(_), None) => false,
                (None, _) => true,
            };
            let val_ok = match (&sc.value, s) {
                (Some(m), Some(s)) => m.match_bytes(s.as_bytes()).is_some(),
                (Some(_), None) => false,
                (None, _) => true,
            };
            if key_ok && val_ok {
                let tags: Map<String, Value> = sc
                    .tags
                    .iter()
                    .map(|(k, v)| (k.clone(), Value::from(v.as_str())))
                    .collect();
                return json!([t, tags]);
            }
        }
        json!([t])
    };
    match v {
        Value::Null => scalar(1),
        Value::Bool(_) => scalar(2),
        Value::Number(n) if n.is_f64() => scalar(16),
        Value::Number(_) => scalar(4),
        Value::String(_) => scalar(8),
        Value::Array(a) => {
            if depth >= MAX_DEPTH {
                return json!([[], {"len": a.len(), "truncated": true}]);
            }
            let mut items: Vec<Value> = Vec::new();
            for x in a {
                let s = schema(x, key, scanners, depth + 1);
                if !items.contains(&s) {
                    items.push(s);
                }
                if items.len() >= MAX_ITEMS {
                    break;
                }
            }
            json!([items, {"len": a.len()}])
        }
        Value::Object(m) => {
            if depth >= MAX_DEPTH {
                return json!([{}, {"truncated": true}]);
            }
            let inner: Map<String, Value> = m
                .iter()
                .map(|(k, x)| (k.clone(), schema(x, Some(k), scanners, depth + 1)))
                .collect();
            json!([inner])
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sha_and_fingerprints() {
        assert_eq!(h8("admin"), "8c6976e5");
        assert_eq!(h8("/path/to/resource/"), "729d56c3");
        let fp = endpoint_fp(
            &Value::from("PuT"),
            &Value::from("/path/to/resource/?key="),
            Some(&json!({"key": null})),
            None,
        );
        assert_eq!(fp, Some(Value::from("http-put-729d56c3-2c70e12b-")));
    }

    #[test]
    fn sha256_known_vectors() {
        let hex = |d: [u8; 32]| d.iter().map(|b| format!("{b:02x}")).collect::<String>();
        // FIPS 180-4 examples, plus lengths around the padding boundaries (55/56/63/64 bytes).
        assert_eq!(
            hex(sha256(b"")),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        assert_eq!(
            hex(sha256(b"abc")),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_eq!(
            hex(sha256(
                b"abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq"
            )),
            "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1"
        );
        assert_eq!(
            hex(sha256(&[b'a'; 1_000_000])),
            "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0"
        );
        assert_eq!(
            hex(sha256(&[b'a'; 55])),
            "9f4390f8d30c2dd92ec9f095b65e2b9ae9b0a925a5258e241c9f1e910f734318"
        );
        assert_eq!(
            hex(sha256(&[b'a'; 56])),
            "b35439a4ac6f0948b6d6f9e3c6af0f5f590ce20f1bde7090ef7970686ec6738a"
        );
        assert_eq!(
            hex(sha256(&[b'a'; 63])),
            "7d3e74a05d7db15bce4ad9ec0658ea98e3f06eeecf16b4c6fff2da457ddc2f34"
        );
        assert_eq!(
            hex(sha256(&[b'a'; 64])),
            "ffe054fe7ae0cb6dc65c3af9b61d5209f439851db43d0ba5997337df154668eb"
        );
    }

    #[test]
    fn jwt() {
        // {"alg":"HS256","typ":"JWT"} . {"sub":"1234567890"} . sig
        let t = "Bearer eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.c2ln";
        let v = jwt_decode(&Value::from(t)).expect("decodes");
        assert_eq!(v["header"]["alg"], "HS256");
        assert_eq!(v["payload"]["sub"], "1234567890");
        assert_eq!(v["signature"]["available"], true);
    }
}
