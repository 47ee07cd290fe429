//! Property tests: the parser and evaluator never panic, errors point inside the input, and
//! grouping does not change totals.

use std::collections::HashMap;

use proptest::prelude::*;
use warden_model::MetricKind;
use warden_query::{
    EvalOptions, Filter, MemorySource, evaluate, glob, parse, parse_formula, parse_list,
    parse_monitor,
};

const T: i64 = 1_699_999_200;

fn check_no_panic(s: &str) {
    for r in [
        parse(s).map(|_| ()),
        parse_list(s).map(|_| ()),
        parse_formula(s).map(|_| ()),
        parse_monitor(s).map(|_| ()),
    ] {
        if let Err(e) = r {
            assert!(
                e.position <= s.len(),
                "{s:?}: position {} > len {}",
                e.position,
                s.len()
            );
            let _ = e.caret(s);
            let _ = e.to_string();
        }
    }
}

fn small_source() -> MemorySource {
    let mut ds = MemorySource::new();
    ds.add(
        "m",
        "a",
        &["env:prod", "k"],
        MetricKind::Gauge,
        10,
        &[(T, 1.0), (T + 10, 2.0)],
    );
    ds.add("m", "b", &["env:dev"], MetricKind::Count, 10, &[(T, 3.0)]);
    ds.add("n", "", &[], MetricKind::Rate, 0, &[(T + 5, 4.0)]);
    ds
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    #[test]
    fn parser_never_panics_on_arbitrary_strings(s in any::<String>()) {
        check_no_panic(&s);
    }

    #[test]
    fn parser_never_panics_on_query_like_strings(
        s in "[a-z0-9:{}(),.!*' +/\\-]{0,50}|(avg|sum|p99|top|abs)[:(][a-z.]{0,6}[{(][a-z:*,! ()A-Z]{0,20}[})]{0,2}[ .a-z_(),0-9'+*/-]{0,30}"
    ) {
        check_no_panic(&s);
        // Whatever parses also evaluates without panicking.
        if let Ok(e) = parse(&s) {
            let _ = evaluate(&small_source(), &e, T, T + 60, &EvalOptions::default(), &HashMap::new());
        }
    }

    #[test]
    fn sum_of_groups_equals_sum_of_all(
        series in prop::collection::vec(
            (0usize..4, prop::collection::vec((0i64..60, -1000.0f64..1000.0), 0..12)),
            1..8,
        ),
        step in prop::sample::select(vec![10i64, 20, 30, 60]),
    ) {
        let mut ds = MemorySource::new();
        for (host, pts) in &series {
            let pts: Vec<(i64, f64)> = pts.iter().map(|(dt, v)| (T + dt, *v)).collect();
            ds.add("m", &format!("h{host}"), &[], MetricKind::Gauge, 10, &pts);
        }
        let run = |q: &str| {
            evaluate(&ds, &parse(q).expect("parse"), T, T + 60, &EvalOptions::default(), &HashMap::new())
                .expect("eval")
                .series
        };
        let grouped = run(&format!("sum:m{{*}} by {{host}}.rollup(avg, {step})"));
        let total = run(&format!("sum:m{{*}}.rollup(avg, {step})"));
        let empty_by = run(&format!("sum:m{{*}} by {{}}.rollup(avg, {step})"));
        prop_assert_eq!(&total, &empty_by);
        prop_assert!(total.len() <= 1);
        let n = 60 / step as usize;
        for i in 0..n {
            let parts: Vec<f64> = grouped.iter().filter_map(|s| s.values[i]).collect();
            let want = total.first().and_then(|s| s.values[i]);
            match want {
                None => prop_assert!(parts.is_empty()),
                Some(w) => {
                    let got: f64 = parts.iter().sum();
                    prop_assert!((got - w).abs() <= 1e-9 * (1.0 + w.abs()), "bucket {}: {} vs {}", i, got, w);
                }
            }
        }
    }

    #[test]
    fn filter_terms_match_like_tags(k in "[a-z]{1,5}", v in "[a-z0-9-]{1,6}", other in "[a-z]{1,5}") {
        let tag = format!("{k}:{v}");
        let tags = std::slice::from_ref(&tag);
        let star = format!("{k}:*");
        let prefix: String = v.chars().take(2).collect();
        let pre = format!("{k}:{prefix}*");
        let wrong = format!("{other}:{v}");
        prop_assert!(Filter::term(&tag).matches(tags));
        prop_assert!(Filter::term(&k).matches(tags));
        prop_assert!(Filter::term(&star).matches(tags));
        prop_assert!(glob("*", &tag) && glob(&tag, &tag));
        prop_assert!(Filter::term(&pre).matches(tags));
        if other != k {
            prop_assert!(!Filter::term(&wrong).matches(tags));
        }
        // A parsed filter and a hand-built one agree.
        let q = parse(&format!("avg:m{{{tag},!{other}:x}}")).expect("parse");
        let f = &q.queries()[0].filter;
        let excluded = vec![tag.clone(), format!("{other}:x")];
        prop_assert!(f.matches(tags));
        prop_assert!(!f.matches(&excluded));
    }
}
