//! Fuzz target: the metrics query language and the server's metric intake decoders.
//! First byte selects: 0 `parse`, 1 `parse_formula`, 2 `parse_list`, 3 `parse_monitor`,
//! 4 `parse_prefix` (second byte: start offset), 5 the monitor time parser; then the intake
//! bodies 6 `/api/v1/series` JSON, 7 `/api/v2/series` JSON, 8 `/api/v2/series` protobuf,
//! 9 sketches protobuf, 10 `/api/v1/check_run`, 11 `/intake/` events, 12 `decompress`
//! (second byte: gzip, deflate or zstd).
//! Invariants: no panic; intake refusals are 4xx with a message (never a 5xx); accepted
//! series respect the limits.
#![no_main]

use libfuzzer_sys::fuzz_target;
use warden_server::intake::{self, Checker, Limits};

fuzz_target!(|data: &[u8]| {
    let Some((&sel, body)) = data.split_first() else {
        return;
    };
    let text = std::str::from_utf8(body);
    let ck = Checker {
        limits: Limits::default(),
        now: 1_700_000_000,
    };
    let refused = |r: intake::Refusal| {
        assert!(
            (400..500).contains(&r.status),
            "status {} for {r:?}",
            r.status
        );
        assert!(!r.message.is_empty());
    };
    match sel % 13 {
        0 => {
            if let Ok(s) = text {
                let _ = warden_query::parse(s);
            }
        }
        1 => {
            if let Ok(s) = text {
                let _ = warden_query::parse_formula(s);
            }
        }
        2 => {
            if let Ok(s) = text {
                let _ = warden_query::parse_list(s);
            }
        }
        3 => {
            if let Ok(s) = text {
                let _ = warden_query::parse_monitor(s);
            }
        }
        4 => {
            if let Some((&start, rest)) = body.split_first()
                && let Ok(s) = std::str::from_utf8(rest)
            {
                for refs in [false, true] {
                    if let Ok((_, end)) = warden_query::parse_prefix(s, start as usize, refs) {
                        assert!(end <= s.len() && end >= (start as usize).min(s.len()));
                    }
                }
            }
        }
        5 => {
            if let Ok(s) = text {
                for now in [1_700_000_000, 0, i64::MAX, i64::MIN] {
                    let _ = warden_query::parse_time(s, now);
                }
            }
        }
        6 => match intake::v1_json(body, &ck) {
            Ok(w) => assert!(w.iter().all(|s| !s.name.is_empty() && s.name.len() <= 200)),
            Err(r) => refused(r),
        },
        7 => match intake::v2_json(body, &ck) {
            Ok(w) => assert!(w.iter().all(|s| !s.name.is_empty() && s.name.len() <= 200)),
            Err(r) => refused(r),
        },
        8 => match intake::v2_protobuf(body, &ck) {
            Ok(w) => assert!(w.iter().all(|s| !s.name.is_empty() && s.name.len() <= 200)),
            Err(r) => refused(r),
        },
        9 => {
            if let Err(r) = intake::sketches_protobuf(body, &ck) {
                refused(r);
            }
        }
        10 => {
            if let Err(r) = intake::check_runs(body, &ck) {
                refused(r);
            }
        }
        11 => {
            if let Err(r) = intake::events(body, &ck) {
                refused(r);
            }
        }
        _ => {
            if let Some((&enc, rest)) = body.split_first() {
                let enc = ["gzip", "deflate", "zstd", "identity"][enc as usize % 4];
                match intake::decompress(Some(enc), rest, 64 * 1024) {
                    Ok(out) => assert!(out.len() <= 64 * 1024),
                    Err(r) => refused(r),
                }
            }
        }
    }
});
