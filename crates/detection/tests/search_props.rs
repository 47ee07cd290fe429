//! Property tests: the search parser and the condition parser never panic, errors point
//! inside the input, and printing-then-parsing generated queries keeps their meaning.
#![allow(clippy::unwrap_used)]

use proptest::prelude::*;
use warden_detection::rule::Condition;
use warden_detection::search::{Fields, Query};

struct Doc;
impl Fields for Doc {
    fn any_value(&self, field: &str, f: &mut dyn FnMut(&str) -> bool) -> bool {
        match field {
            "env" => f("staging"),
            "service" => f("shop"),
            "@http.client_ip" => f("1.2.3.4"),
            "@tags" => f("a") || f("b"),
            _ => false,
        }
    }
    fn any_text(&self, f: &mut dyn FnMut(&str) -> bool) -> bool {
        f("GET /login")
    }
}

fn atom() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("env:staging".to_string()),
        Just("env:prod".to_string()),
        Just("service:sh*".to_string()),
        Just("service:\"shop\"".to_string()),
        Just("@http.client_ip:1.2.3.?".to_string()),
        Just("@tags:b".to_string()),
        Just("@missing:*".to_string()),
        Just("login".to_string()),
        Just("env:(prod OR staging)".to_string()),
    ]
}

/// Expression text together with its expected truth value over `Doc`.
fn expr() -> impl Strategy<Value = (String, bool)> {
    let leaf = atom().prop_map(|a| {
        let v = Query::parse(&a).unwrap().matches(&Doc);
        (a, v)
    });
    leaf.prop_recursive(4, 32, 3, |inner| {
        prop_oneof![
            (inner.clone(), inner.clone())
                .prop_map(|((a, x), (b, y))| (format!("({a}) AND ({b})"), x && y)),
            (inner.clone(), inner.clone())
                .prop_map(|((a, x), (b, y))| (format!("({a}) ({b})"), x && y)),
            (inner.clone(), inner.clone())
                .prop_map(|((a, x), (b, y))| (format!("({a}) OR ({b})"), x || y)),
            inner.clone().prop_map(|(a, x)| (format!("NOT ({a})"), !x)),
            inner.prop_map(|(a, x)| (format!("-({a})"), !x)),
        ]
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    #[test]
    fn search_parser_never_panics(s in "\\PC{0,80}") {
        match Query::parse(&s) {
            Ok(q) => { let _ = q.matches(&Doc); }
            Err(e) => prop_assert!(e.position <= s.len(), "{e} for {s:?}"),
        }
    }

    #[test]
    fn search_parser_never_panics_on_syntax_soup(
        s in proptest::collection::vec(prop_oneof![
            Just("("), Just(")"), Just("\""), Just(":"), Just("-"), Just("!"), Just("*"), Just("?"),
            Just("\\"), Just(" "), Just("AND"), Just("OR"), Just("NOT"), Just("@a.b"), Just("x"),
            Just(">="), Just("<"), Just("é"), Just("1.5"),
        ], 0..40).prop_map(|v| v.concat())
    ) {
        match Query::parse(&s) {
            Ok(q) => { let _ = q.matches(&Doc); }
            Err(e) => prop_assert!(e.position <= s.len(), "{e} for {s:?}"),
        }
    }

    #[test]
    fn generated_queries_evaluate_as_boolean_logic((q, want) in expr()) {
        let parsed = Query::parse(&q).unwrap();
        prop_assert_eq!(parsed.matches(&Doc), want, "{}", q);
    }

    #[test]
    fn condition_parser_never_panics(s in "[ab0-9<>=!&|() .xyz]{0,40}") {
        if let Ok(c) = Condition::parse(&s) {
            let _ = c.eval(&|_| 1.0);
        }
    }
}
