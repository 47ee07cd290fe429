#![allow(clippy::unwrap_used)]

use super::decode::{Version, decode};
use super::*;
use serde_json::json;

fn v04_span(trace: u64, span: u64, parent: u64) -> serde_json::Value {
    json!({
        "service": "shop", "name": "flask.request", "resource": "GET /search",
        "trace_id": trace, "span_id": span, "parent_id": parent,
        "start": 1_700_000_000_000_000_000i64, "duration": 1_500_000, "error": 0,
        "meta": {"appsec.event": "true", "env": "prod", "runtime-id": "r1"},
        "metrics": {"_sampling_priority_v1": 2, "_dd.appsec.enabled": 1.0},
        "type": "web",
        "span_links": [{"trace_id": 1, "span_id": 2}],
    })
}

#[test]
fn v04_msgpack_decodes_every_field_and_skips_unknown_ones() {
    let body = rmp_serde::to_vec_named(&json!([[
        v04_span(u64::MAX, 5, 0),
        v04_span(u64::MAX, 6, 5)
    ]]))
    .unwrap();
    let traces = decode(Version::V04, false, &body).unwrap();
    assert_eq!(traces.len(), 1);
    let s = &traces[0][0];
    assert_eq!(s.trace_id, u64::MAX);
    assert_eq!((s.span_id, s.parent_id), (5, 0));
    assert_eq!(s.start, 1_700_000_000_000_000_000);
    assert_eq!(s.meta["appsec.event"], "true");
    assert_eq!(s.metrics["_sampling_priority_v1"], 2.0);
    assert_eq!(s.r#type, "web");
    // The same payload as JSON (`/v0.3` or `/v0.4` with Content-Type: application/json).
    let j = serde_json::to_vec(&json!([[v04_span(9, 5, 0)]])).unwrap();
    assert_eq!(decode(Version::V04, true, &j).unwrap()[0][0].trace_id, 9);
}

#[test]
fn lenient_shapes_tracers_send_are_accepted() {
    // Signed ids (upper half negative), nil maps, nil meta values, binary strings.
    let body = rmp_serde::to_vec_named(&json!([[{
        "trace_id": -1, "span_id": 3, "meta": null, "metrics": {"a": null, "b": 2},
        "error": 1, "service": null,
    }]]))
    .unwrap();
    let s = &decode(Version::V04, false, &body).unwrap()[0][0];
    assert_eq!(s.trace_id, u64::MAX);
    assert!(s.meta.is_empty());
    assert_eq!(s.metrics.len(), 1);
    assert_eq!(s.error, 1);
    assert_eq!(s.service, "");
}

#[test]
fn v05_string_table_is_resolved() {
    let strings = json!([
        "",
        "shop",
        "flask.request",
        "GET /x",
        "web",
        "appsec.event",
        "true",
        "_sampling_priority_v1"
    ]);
    let span =
        json!([1, 2, 3, 42u64, 7, 0, 1_700_000_000_000_000_000i64, 10, 0, {"5": 6}, {"7": 2.0}, 4]);
    // msgpack map keys must be integers in v0.5; build the maps by hand.
    let mut buf = Vec::new();
    // [strings, [[span]]]
    buf.push(0x92);
    buf.extend(rmp_serde::to_vec(&strings).unwrap());
    buf.extend([0x91, 0x91, 0x9c]);
    for v in span.as_array().unwrap()[..9].iter() {
        buf.extend(rmp_serde::to_vec(v).unwrap());
    }
    buf.extend([0x81, 0x05, 0x06]); // meta {5: 6}
    buf.extend([0x81, 0x07, 0xcb]); // metrics {7: 2.0}
    buf.extend(2.0f64.to_be_bytes());
    buf.push(0x04); // type
    let traces = decode(Version::V05, false, &buf).unwrap();
    let s = &traces[0][0];
    assert_eq!(
        (s.service.as_str(), s.name.as_str(), s.resource.as_str()),
        ("shop", "flask.request", "GET /x")
    );
    assert_eq!(s.trace_id, 42);
    assert_eq!(s.meta["appsec.event"], "true");
    assert_eq!(s.metrics["_sampling_priority_v1"], 2.0);
    assert_eq!(s.r#type, "web");

    // An index past the table is refused with its position.
    let last = buf.len() - 1;
    buf[last] = 0x30;
    let e = decode(Version::V05, false, &buf).unwrap_err().to_string();
    assert!(
        e.contains("trace 0: span 0: type: string index 48 out of range"),
        "{e}"
    );
}

#[test]
fn hostile_payloads_are_refused_with_their_position() {
    let good = rmp_serde::to_vec_named(&json!([[v04_span(1, 2, 0)]])).unwrap();
    // Truncated at every length: an error, never a panic.
    for n in 0..good.len() {
        assert!(
            decode(Version::V04, false, &good[..n]).is_err(),
            "prefix {n}"
        );
        let _ = decode(Version::V05, false, &good[..n]);
    }
    // Wrong types name the trace, span and field.
    let bad = rmp_serde::to_vec_named(&json!([[v04_span(1, 2, 0), {"meta": {"k": [1]}}]])).unwrap();
    let e = decode(Version::V04, false, &bad).unwrap_err().to_string();
    assert!(e.contains("trace 0: span 1: field \"meta\""), "{e}");
    let bad = rmp_serde::to_vec_named(&json!([[{"trace_id": "abc"}]])).unwrap();
    let e = decode(Version::V04, false, &bad).unwrap_err().to_string();
    assert!(e.contains("field \"trace_id\""), "{e}");
    let bad = rmp_serde::to_vec_named(&json!({"not": "an array"})).unwrap();
    assert!(decode(Version::V04, false, &bad).is_err());
    // Trailing garbage.
    let mut trailing = good.clone();
    trailing.push(0xc0);
    assert!(
        decode(Version::V04, false, &trailing)
            .unwrap_err()
            .to_string()
            .contains("trailing")
    );
    // Deep nesting in an ignored field stops at the depth limit instead of the stack.
    let mut deep = vec![0x91, 0x91, 0x81, 0xa1, b'x'];
    deep.extend(std::iter::repeat_n(0x91, 100_000));
    deep.push(0xc0);
    assert!(
        decode(Version::V04, false, &deep)
            .unwrap_err()
            .to_string()
            .contains("depth")
    );
    // A huge announced length with no data behind it.
    let huge = [0xdd, 0xff, 0xff, 0xff, 0xff];
    assert!(decode(Version::V04, false, &huge).is_err());
    // v0.5 with the wrong arity.
    let short = rmp_serde::to_vec(&json!([["a"], [[[0, 0, 0]]]])).unwrap();
    let e = decode(Version::V05, false, &short).unwrap_err().to_string();
    assert!(e.contains("expected 12"), "{e}");
    // JSON is refused on /v0.5.
    assert!(decode(Version::V05, true, b"[]").is_err());
}

#[test]
fn payloads_are_grouped_with_priority_origin_and_tracer_identity() {
    let mut root = Span {
        span_id: 1,
        ..Default::default()
    };
    root.meta.insert("_dd.origin".into(), "synthetics".into());
    root.meta.insert("env".into(), "staging".into());
    root.metrics.insert("_sampling_priority_v1".into(), 2.0);
    let child = Span {
        span_id: 2,
        parent_id: 1,
        ..Default::default()
    };
    let meta = TracerMeta {
        lang: "python".into(),
        tracer_version: "4.16.0".into(),
        ..Default::default()
    };
    let (p, n) = build_payloads(
        vec![vec![child, root], vec![], vec![Span::default()]],
        &meta,
    );
    assert_eq!(n, 3);
    assert_eq!(p.len(), 1);
    assert_eq!(p[0].language_name, "python");
    assert_eq!(p[0].env, "staging");
    assert_eq!(p[0].chunks.len(), 2);
    assert_eq!(p[0].chunks[0].priority, 2);
    assert_eq!(p[0].chunks[0].origin, "synthetics");
    assert_eq!(p[0].chunks[1].priority, PRIORITY_NONE);

    // A trace far over the budget is cut into chunks, and chunks into payloads.
    let big: Vec<Span> = (0..40)
        .map(|i| {
            let mut s = Span {
                span_id: i + 1,
                ..Default::default()
            };
            s.meta.insert("blob".into(), "x".repeat(200_000));
            s
        })
        .collect();
    let (p, n) = build_payloads(vec![big], &meta);
    assert_eq!(n, 40);
    assert!(p.len() >= 4, "{}", p.len());
    assert!(
        p.iter()
            .all(|tp| tp.encoded_len() <= PAYLOAD_BUDGET + 300_000)
    );
    assert_eq!(
        p.iter()
            .flat_map(|tp| &tp.chunks)
            .map(|c| c.spans.len())
            .sum::<usize>(),
        40
    );
}

proptest::proptest! {
    /// Arbitrary bytes, as msgpack or JSON, on either version: an error or traces, never a
    /// panic.
    #[test]
    fn random_bytes_never_panic(data in proptest::collection::vec(proptest::num::u8::ANY, 0..600)) {
        let _ = decode(Version::V04, false, &data);
        let _ = decode(Version::V05, false, &data);
        let _ = decode(Version::V04, true, &data);
    }

    /// A real payload damaged anywhere (bytes flipped, cut short): never a panic, and what
    /// decodes has no more spans than were written.
    #[test]
    fn damaged_payloads_never_panic(
        flips in proptest::collection::vec((0usize..10_000, 1u8..=255), 1..8),
        cut in proptest::option::of(0usize..10_000),
    ) {
        let mut data = rmp_serde::to_vec_named(&json!([
            [v04_span(1, 2, 0), v04_span(1, 3, 2)],
            [v04_span(9, 4, 0)],
        ]))
        .unwrap();
        for (at, x) in flips {
            let len = data.len();
            data[at % len] ^= x;
        }
        if let Some(c) = cut {
            data.truncate(c % (data.len() + 1));
        }
        if let Ok(traces) = decode(Version::V04, false, &data) {
            let spans: usize = traces.iter().map(Vec::len).sum();
            proptest::prop_assert!(spans <= data.len());
        }
        let _ = decode(Version::V05, false, &data);
    }
}
