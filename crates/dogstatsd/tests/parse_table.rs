//! Runs the data-driven parser table `parse_table.txt` (format documented at its top).

use serde_json::{Map, Value, json};
use warden_dogstatsd::{message_to_json, parse_datagram};

const TABLE: &str = include_str!("parse_table.txt");

/// Decodes the `in:` escapes: `\n`, `\r`, `\t`, `\\`, `\xNN`.
fn unescape(s: &str, line_no: usize) -> Vec<u8> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] != b'\\' {
            out.push(b[i]);
            i += 1;
            continue;
        }
        match b.get(i + 1) {
            Some(b'n') => out.push(b'\n'),
            Some(b'r') => out.push(b'\r'),
            Some(b't') => out.push(b'\t'),
            Some(b'\\') => out.push(b'\\'),
            Some(b'x') => {
                let hex = s.get(i + 2..i + 4).expect("\\x needs two hex digits");
                out.push(u8::from_str_radix(hex, 16).expect("bad \\x escape"));
                i += 2;
            }
            other => panic!("line {line_no}: unknown escape {other:?}"),
        }
        i += 2;
    }
    out
}

fn defaults(kind: &str) -> Value {
    let mut d = match kind {
        "metric" => json!({"sample_rate": 1.0, "tags": [], "host": null, "timestamp": null}),
        "event" => json!({
            "timestamp": null, "host": null, "aggregation_key": null, "priority": "normal",
            "source_type_name": null, "alert_type": "info", "tags": []
        }),
        "service_check" => json!({"timestamp": null, "host": null, "tags": [], "message": null}),
        other => panic!("unknown kind {other:?} in table"),
    };
    let obj = d.as_object_mut().expect("object");
    for k in [
        "local_data",
        "container_id",
        "inode",
        "external_data",
        "cardinality",
    ] {
        obj.insert(k.into(), Value::Null);
    }
    d
}

/// Numbers compare as f64.
fn normalize(v: Value) -> Value {
    match v {
        Value::Number(n) => json!(n.as_f64().expect("finite")),
        Value::Array(a) => Value::Array(a.into_iter().map(normalize).collect()),
        Value::Object(o) => Value::Object(o.into_iter().map(|(k, v)| (k, normalize(v))).collect()),
        other => other,
    }
}

fn expected_object(text: &str, line_no: usize) -> Value {
    let given: Map<String, Value> = serde_json::from_str(text)
        .unwrap_or_else(|e| panic!("line {line_no}: bad expected JSON: {e}"));
    let kind = given
        .get("kind")
        .and_then(Value::as_str)
        .unwrap_or_else(|| panic!("line {line_no}: expected JSON needs a kind"));
    let mut full = defaults(kind);
    let obj = full.as_object_mut().expect("object");
    for (k, v) in given {
        obj.insert(k, v);
    }
    normalize(full)
}

enum Expect {
    Out(Value),
    Err(String),
}

struct Case {
    line_no: usize,
    input: Vec<u8>,
    expect: Vec<(usize, Expect)>,
}

fn load() -> Vec<Case> {
    let mut cases: Vec<Case> = Vec::new();
    for (idx, line) in TABLE.lines().enumerate() {
        let line_no = idx + 1;
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        if let Some(rest) = line.strip_prefix("in: ") {
            cases.push(Case {
                line_no,
                input: unescape(rest, line_no),
                expect: Vec::new(),
            });
        } else if let Some(rest) = line.strip_prefix("out: ") {
            let case = cases.last_mut().expect("out: before any in:");
            case.expect
                .push((line_no, Expect::Out(expected_object(rest, line_no))));
        } else if let Some(rest) = line.strip_prefix("err: ") {
            let case = cases.last_mut().expect("err: before any in:");
            case.expect.push((line_no, Expect::Err(rest.to_owned())));
        } else if line == "in:" {
            panic!("line {line_no}: empty datagram; use \\n for a blank line");
        } else {
            panic!("line {line_no}: unknown directive {line:?}");
        }
    }
    cases
}

#[test]
fn parse_table() {
    let cases = load();
    assert!(
        cases.len() >= 100,
        "table has only {} datagrams",
        cases.len()
    );
    let mut failures = Vec::new();
    for case in &cases {
        let got: Vec<_> = parse_datagram(&case.input).collect();
        if got.len() != case.expect.len() {
            failures.push(format!(
                "line {}: expected {} messages, got {}: {:?}",
                case.line_no,
                case.expect.len(),
                got.len(),
                got
            ));
            continue;
        }
        for (res, (line_no, exp)) in got.iter().zip(&case.expect) {
            match (res, exp) {
                (Ok(msg), Expect::Out(want)) => {
                    let have = normalize(message_to_json(msg));
                    if &have != want {
                        failures.push(format!("line {line_no}:\n  want {want}\n  have {have}"));
                    }
                }
                (Err(e), Expect::Err(want)) => {
                    let text = e.to_string();
                    if !text.contains(want.as_str()) {
                        failures.push(format!(
                            "line {line_no}: error {text:?} does not contain {want:?}"
                        ));
                    }
                }
                (Ok(msg), Expect::Err(want)) => failures.push(format!(
                    "line {line_no}: expected error {want:?}, parsed {}",
                    message_to_json(msg)
                )),
                (Err(e), Expect::Out(want)) => {
                    failures.push(format!("line {line_no}: expected {want}, got error {e}"))
                }
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} datagrams failed:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
}
