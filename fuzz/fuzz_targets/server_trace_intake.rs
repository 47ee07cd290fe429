//! Fuzz target: the server's trace intake and span-events filters.
//! First byte selects:
//! * 0: the body is an `AgentPayload` protobuf (`/api/v0.2/traces`);
//! * 1: the body is a security span's `meta_struct.appsec` msgpack (second byte: where the
//!   `_dd.appsec.json` meta value starts), so the flattening path sees arbitrary msgpack
//!   without the fuzzer having to discover the protobuf framing first;
//! * 2: `filter[from]`/`filter[to]`; 3: `filter[query]` of `/api/v2/spans/events`.
//! Invariants: no panic; span counts agree with the payload; one event per security span.
#![no_main]

use libfuzzer_sys::fuzz_target;
use warden_proto::trace::{AgentPayload, Span, TraceChunk, TracerPayload};
use warden_server::fuzzing;

fuzz_target!(|data: &[u8]| {
    let Some((&sel, body)) = data.split_first() else {
        return;
    };
    match sel % 4 {
        0 => {
            if let Ok((spans, events)) = fuzzing::trace_intake(body) {
                assert!(events.len() as u64 <= spans);
            }
        }
        1 => {
            let cut = body.first().map_or(0, |&b| b as usize).min(body.len());
            let (mp, js) = body.split_at(cut);
            let mut span = Span {
                service: "fuzz".into(),
                name: "http.request".into(),
                resource: "GET /".into(),
                trace_id: 1,
                span_id: 2,
                start: 1_700_000_000_000_000_000,
                duration: 1_000,
                ..Default::default()
            };
            span.meta_struct.insert("appsec".into(), mp.to_vec());
            span.meta.insert(
                "_dd.appsec.json".into(),
                String::from_utf8_lossy(js).into_owned(),
            );
            span.meta.insert("appsec.event".into(), "true".into());
            let p = AgentPayload {
                tracer_payloads: vec![TracerPayload {
                    chunks: vec![TraceChunk {
                        spans: vec![span.clone(), span],
                        ..Default::default()
                    }],
                    ..Default::default()
                }],
                ..Default::default()
            };
            let (spans, events) = fuzzing::security_events(&p);
            assert_eq!(spans, 2);
            assert_eq!(events.len(), 2);
        }
        2 => {
            if let Ok(s) = std::str::from_utf8(body) {
                let _ = fuzzing::span_events_time(s, 1_700_000_000_000);
                let _ = fuzzing::span_events_time(s, i64::MIN);
            }
        }
        _ => {
            if let Ok(s) = std::str::from_utf8(body) {
                match fuzzing::span_events_query(s) {
                    Ok(n) => assert!(n <= s.split_whitespace().count()),
                    Err(e) => assert!(!e.is_empty()),
                }
            }
        }
    }
});
