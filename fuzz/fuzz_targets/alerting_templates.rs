//! Fuzz target: the alerting engine's text templating.
//! Input: `template \0 name=value \0 name=value ...` (values become variables, tags and
//! flags). First byte selects the monitor message renderer (`{{#is_alert}}`, `{{var}}`,
//! `@handles`) or the webhook payload (`$VARIABLE`, JSON or form encoding).
//! Invariants: no panic; a webhook template that is JSON stays JSON after substitution,
//! whatever the values; a template `validate_template` accepts renders to a valid JSON body.
#![no_main]

use std::collections::BTreeMap;

use libfuzzer_sys::fuzz_target;
use warden_alerting::payload::{self, Encoding};
use warden_alerting::{TemplateCtx, parse_handles, render, template};

fuzz_target!(|data: &[u8]| {
    let Some((&sel, body)) = data.split_first() else {
        return;
    };
    let Ok(s) = std::str::from_utf8(body) else {
        return;
    };
    let mut parts = s.split('\0');
    let tpl = parts.next().unwrap_or_default();
    let mut vars = BTreeMap::new();
    let mut tags = BTreeMap::new();
    let mut flags = Vec::new();
    for p in parts {
        match p.split_once('=') {
            Some((k, v)) => {
                vars.insert(k.to_string(), v.to_string());
                tags.insert(k.to_lowercase(), v.to_string());
            }
            None => flags.push(p.to_string()),
        }
    }
    if sel & 1 == 0 {
        let ctx = TemplateCtx { flags, vars, tags };
        let _ = template::validate(tpl);
        let out = render(tpl, &ctx);
        let _ = parse_handles(&out);
        let _ = parse_handles(tpl);
    } else {
        for n in payload::WEBHOOK_VARIABLES {
            vars.entry((*n).to_string()).or_insert_with(|| "x".into());
        }
        // The contract: numeric variables (dates, ids) are always unsigned integers.
        for n in payload::NUMERIC_VARIABLES {
            if let Some(v) = vars.get_mut(*n)
                && (v.is_empty() || v.starts_with('0') || !v.bytes().all(|b| b.is_ascii_digit()))
            {
                *v = "1700000000000".into();
            }
        }
        let out = payload::substitute(tpl, &vars, true);
        if serde_json::from_str::<serde_json::Value>(tpl).is_ok() {
            assert!(
                serde_json::from_str::<serde_json::Value>(&out).is_ok(),
                "JSON template {tpl:?} became {out:?}"
            );
        }
        let _ = payload::substitute(tpl, &vars, false);
        let enc = if sel & 2 == 0 {
            Encoding::Json
        } else {
            Encoding::Form
        };
        if payload::validate_template(tpl, enc).is_ok() {
            let (_, body) =
                payload::webhook_body(Some(tpl), &vars, enc).expect("a validated template renders");
            if matches!(enc, Encoding::Json) {
                assert!(
                    serde_json::from_str::<serde_json::Value>(&body).is_ok(),
                    "validated template {tpl:?} rendered {body:?}"
                );
            }
        }
    }
});
