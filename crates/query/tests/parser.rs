//! Parser table: accepted queries with the AST facts that matter, and rejections with the exact
//! byte position the error points at.

use warden_query::{
    BinOp, Comparator, ExprKind, FillMethod, Filter, Function, RankMethod, SpaceAgg, TimeAgg,
    TypeModifier, parse, parse_formula, parse_list, parse_monitor, parse_prefix,
};

fn q(s: &str) -> warden_query::MetricQuery {
    match parse(s) {
        Ok(e) => match e.kind {
            ExprKind::Query(q) => *q,
            other => panic!("{s}: not a plain query: {other:?}"),
        },
        Err(e) => panic!("{s}: {e}\n{}", e.caret(s)),
    }
}

fn eq(k: &str, v: &str) -> Filter {
    Filter::Eq {
        key: k.into(),
        value: v.into(),
    }
}

fn tags(t: &[&str]) -> Vec<String> {
    t.iter().map(|s| s.to_string()).collect()
}

#[test]
fn accepted_queries_table() {
    // (query, filter, group_by)
    let table: Vec<(&str, Filter, Vec<&str>)> = vec![
        ("avg:system.cpu.user{*}", Filter::All, vec![]),
        (
            "avg:system.cpu.user{*} by {host}",
            Filter::All,
            vec!["host"],
        ),
        ("sum:a.b{env:prod}", eq("env", "prod"), vec![]),
        (
            "max:a{env:prod,host:a}",
            Filter::And(vec![eq("env", "prod"), eq("host", "a")]),
            vec![],
        ),
        (
            "min:a{env:prod, !host:a}",
            Filter::And(vec![
                eq("env", "prod"),
                Filter::Not(Box::new(eq("host", "a"))),
            ]),
            vec![],
        ),
        (
            "avg:a{service:web-*}",
            Filter::Glob {
                key: "service".into(),
                value: "web-*".into(),
            },
            vec![],
        ),
        (
            "avg:a{*-canary}",
            Filter::TagGlob("*-canary".into()),
            vec![],
        ),
        ("avg:a{*east*}", Filter::TagGlob("*east*".into()), vec![]),
        ("avg:a{mytag}", Filter::Has("mytag".into()), vec![]),
        (
            "avg:a{env:prod AND (az:a OR az:b)}",
            Filter::And(vec![
                eq("env", "prod"),
                Filter::Or(vec![eq("az", "a"), eq("az", "b")]),
            ]),
            vec![],
        ),
        (
            "avg:a{NOT env:prod}",
            Filter::Not(Box::new(eq("env", "prod"))),
            vec![],
        ),
        (
            "avg:a{env IN (prod, staging)}",
            Filter::Or(vec![eq("env", "prod"), eq("env", "staging")]),
            vec![],
        ),
        (
            "avg:a{env NOT IN (dev,test)}",
            Filter::Not(Box::new(Filter::Or(vec![
                eq("env", "dev"),
                eq("env", "test"),
            ]))),
            vec![],
        ),
        (
            "avg:a{a:1 OR b:2 AND c:3}",
            Filter::Or(vec![
                eq("a", "1"),
                Filter::And(vec![eq("b", "2"), eq("c", "3")]),
            ]),
            vec![],
        ),
        ("avg:a{*,env:prod}", eq("env", "prod"), vec![]),
        ("avg:a{url:http://x/y}", eq("url", "http://x/y"), vec![]),
        (
            "avg:a{*} by {host,device}",
            Filter::All,
            vec!["host", "device"],
        ),
        (
            "avg:a{*} by { host , env }",
            Filter::All,
            vec!["host", "env"],
        ),
        ("avg:a{*} by {}", Filter::All, vec![]),
        ("avg:a {*}", Filter::All, vec![]),
        ("system.load.1{*}", Filter::All, vec![]),
        ("avg:a{ env:prod }", eq("env", "prod"), vec![]),
        ("avg:a{region:us-east-1}", eq("region", "us-east-1"), vec![]),
        (
            "avg:a{(env:prod OR env:dev) AND NOT host:x}",
            Filter::And(vec![
                Filter::Or(vec![eq("env", "prod"), eq("env", "dev")]),
                Filter::Not(Box::new(eq("host", "x"))),
            ]),
            vec![],
        ),
        (
            "avg:a{!!env:prod}",
            Filter::Not(Box::new(Filter::Not(Box::new(eq("env", "prod"))))),
            vec![],
        ),
        (
            "avg:a{k IN (web-*)}",
            Filter::Or(vec![Filter::Glob {
                key: "k".into(),
                value: "web-*".into(),
            }]),
            vec![],
        ),
    ];
    for (s, filter, group) in table {
        let got = q(s);
        assert_eq!(got.filter, filter, "{s}");
        assert_eq!(got.group_by, tags(&group), "{s}");
    }
}

#[test]
fn aggregators_and_modifiers() {
    assert_eq!(q("sum:m{*}").space_agg, SpaceAgg::Sum);
    assert_eq!(q("count:m{*}").space_agg, SpaceAgg::Count);
    assert_eq!(q("m{*}").space_agg, SpaceAgg::Avg);
    for (s, p) in [
        ("p50", 0.5),
        ("p75", 0.75),
        ("p90", 0.9),
        ("p95", 0.95),
        ("p99", 0.99),
    ] {
        assert_eq!(
            q(&format!("{s}:lat{{*}}")).space_agg,
            SpaceAgg::Percentile(p)
        );
    }
    let m = q("avg:m{*} by {host}.rollup(sum, 60)");
    let r = m.rollup.expect("rollup");
    assert_eq!((r.method, r.seconds), (TimeAgg::Sum, Some(60)));
    let m = q("avg:m{*}.rollup(max)");
    assert_eq!(
        m.rollup.map(|r| (r.method, r.seconds)),
        Some((TimeAgg::Max, None))
    );
    assert_eq!(
        q("sum:c{*}.as_count()").modifier,
        Some(TypeModifier::AsCount)
    );
    assert_eq!(q("sum:c{*}.as_rate()").modifier, Some(TypeModifier::AsRate));
    let m = q("sum:c{*}.as_count().rollup(count, 300).fill(linear, 600)");
    assert_eq!(m.modifier, Some(TypeModifier::AsCount));
    assert_eq!(m.rollup.map(|r| r.method), Some(TimeAgg::Count));
    let f = m.fill.expect("fill");
    assert_eq!((f.method, f.limit), (FillMethod::Linear, Some(600)));
    for (s, fm) in [
        ("null", FillMethod::Null),
        ("zero", FillMethod::Zero),
        ("last", FillMethod::Last),
    ] {
        assert_eq!(
            q(&format!("avg:m{{*}}.fill({s})")).fill.map(|f| f.method),
            Some(fm)
        );
    }
    assert!(q("avg:m{*}.weighted()").rollup.is_none());
    assert_eq!(
        q("avg:m{*} by {host} .rollup(avg,10)")
            .rollup
            .and_then(|r| r.seconds),
        Some(10)
    );
}

fn call(s: &str) -> (String, Function) {
    match parse(s).unwrap_or_else(|e| panic!("{s}: {e}")).kind {
        ExprKind::Call { name, function, .. } => (name, function),
        other => panic!("{s}: not a call: {other:?}"),
    }
}

#[test]
fn functions_table() {
    let table: Vec<(&str, Function)> = vec![
        ("abs(avg:m{*})", Function::Abs),
        ("log2(avg:m{*})", Function::Log2),
        ("log10(avg:m{*})", Function::Log10),
        ("cumsum(avg:m{*})", Function::Cumsum),
        ("integral(avg:m{*})", Function::Integral),
        ("per_second(sum:m{*})", Function::PerSecond),
        ("per_minute(sum:m{*})", Function::PerMinute),
        ("per_hour(sum:m{*})", Function::PerHour),
        ("dt(avg:m{*})", Function::Dt),
        ("diff(avg:m{*})", Function::Diff),
        ("monotonic_diff(avg:m{*})", Function::MonotonicDiff),
        ("derivative(avg:m{*})", Function::Derivative),
        ("timeshift(avg:m{*}, -3600)", Function::Timeshift(-3600)),
        ("hour_before(avg:m{*})", Function::Timeshift(-3600)),
        ("day_before(avg:m{*})", Function::Timeshift(-86400)),
        ("week_before(avg:m{*})", Function::Timeshift(-604800)),
        ("clamp_min(avg:m{*}, 0)", Function::ClampMin(0.0)),
        ("clamp_max(avg:m{*}, 100.5)", Function::ClampMax(100.5)),
        ("cutoff_min(avg:m{*}, -5)", Function::CutoffMin(-5.0)),
        ("cutoff_max(avg:m{*}, 1e3)", Function::CutoffMax(1000.0)),
        ("default_zero(avg:m{*})", Function::DefaultZero),
        ("count_nonzero(avg:m{*} by {host})", Function::CountNonzero),
        ("count_not_null(avg:m{*} by {host})", Function::CountNotNull),
        ("exclude_null(avg:m{*} by {host})", Function::ExcludeNull),
        ("ewma_5(avg:m{*})", Function::Ewma(5)),
        ("median_3(avg:m{*})", Function::Median(3)),
        (
            "moving_rollup(avg:m{*}, 300, 'max')",
            Function::MovingRollup {
                seconds: 300,
                method: TimeAgg::Max,
            },
        ),
        (
            "top(avg:m{*} by {host}, 5, 'max', 'asc')",
            Function::Top {
                n: 5,
                method: RankMethod::Max,
                descending: false,
            },
        ),
        (
            "top(avg:m{*} by {host}, 2, 'l2norm', 'desc')",
            Function::Top {
                n: 2,
                method: RankMethod::L2Norm,
                descending: true,
            },
        ),
        (
            "top(avg:m{*} by {host}, 3, \"area\", \"desc\")",
            Function::Top {
                n: 3,
                method: RankMethod::Area,
                descending: true,
            },
        ),
        (
            "top(avg:m{*} by {host}, 10, 'norm')",
            Function::Top {
                n: 10,
                method: RankMethod::Norm,
                descending: true,
            },
        ),
        (
            "top10_max(avg:m{*} by {host})",
            Function::Top {
                n: 10,
                method: RankMethod::Max,
                descending: true,
            },
        ),
        (
            "bottom5(avg:m{*} by {host})",
            Function::Top {
                n: 5,
                method: RankMethod::Mean,
                descending: false,
            },
        ),
    ];
    for (s, f) in table {
        assert_eq!(call(s).1, f, "{s}");
    }
}

#[test]
fn arithmetic_precedence_and_spans() {
    let s = "avg:a{*} + avg:b{*} * 2";
    let e = parse(s).expect("parse");
    let ExprKind::Binary { op, lhs, rhs } = e.kind else {
        panic!("not binary")
    };
    assert_eq!(op, BinOp::Add);
    assert_eq!(lhs.span, (0, 8));
    let ExprKind::Binary { op, rhs: two, .. } = rhs.kind else {
        panic!("rhs not binary")
    };
    assert_eq!(op, BinOp::Mul);
    assert_eq!(two.kind, ExprKind::Number(2.0));
    assert_eq!(e.span, (0, s.len()));

    let e = parse("(avg:a{*} - avg:b{*}) / 100").expect("parse");
    let ExprKind::Binary { op, lhs, .. } = e.kind else {
        panic!()
    };
    assert_eq!(op, BinOp::Div);
    assert!(matches!(lhs.kind, ExprKind::Binary { op: BinOp::Sub, .. }));

    // `-` inside a filter is part of the tag; outside it is subtraction.
    let e = parse("sum:a{env:us-east}-sum:b{*}").expect("parse");
    assert!(matches!(e.kind, ExprKind::Binary { op: BinOp::Sub, .. }));
    let e = parse("-avg:a{*}").expect("parse");
    assert!(matches!(e.kind, ExprKind::Neg(_)));
    assert_eq!(parse("2 * 3").expect("parse").queries().len(), 0);
    assert_eq!(
        parse("top(abs(avg:a{*} by {h}) * 2, 3, 'mean', 'desc')")
            .expect("parse")
            .queries()
            .len(),
        1
    );
}

#[test]
fn lists_formulas_prefix_monitors() {
    let l = parse_list("avg:a{*},sum:b{env:x,h:y} by {h}").expect("list");
    assert_eq!(l.len(), 2);
    assert_eq!(l[1].queries()[0].group_by, tags(&["h"]));

    let f = parse_formula("a / b * 100").expect("formula");
    let ExprKind::Binary {
        op: BinOp::Mul,
        lhs,
        ..
    } = f.kind
    else {
        panic!()
    };
    let ExprKind::Binary { lhs: a, rhs: b, .. } = lhs.kind else {
        panic!()
    };
    assert_eq!(a.kind, ExprKind::Ref("a".into()));
    assert_eq!(b.kind, ExprKind::Ref("b".into()));
    assert!(parse("a / b").is_err(), "refs are only allowed in formulas");

    let s = "x avg:m{*} by {host} > 90";
    let (e, end) = parse_prefix(s, 2, false).expect("prefix");
    assert_eq!(e.queries()[0].metric, "m");
    assert_eq!(&s[end..], "> 90");

    let m = parse_monitor("avg(last_5m):avg:system.cpu.user{*} by {host} > 90").expect("monitor");
    assert_eq!(
        (
            m.time_agg.as_str(),
            m.window_secs,
            m.comparator,
            m.threshold
        ),
        ("avg", 300, Comparator::Gt, 90.0)
    );
    let m = parse_monitor("max(last_1h):sum:errors{env:prod}.as_count() >= -2.5").expect("monitor");
    assert_eq!(
        (m.window_secs, m.comparator, m.threshold),
        (3600, Comparator::Ge, -2.5)
    );
    let e = parse_monitor("avg(last_5x):avg:m{*} > 1").expect_err("bad window");
    assert_eq!(e.position, 4);
    let e = parse_monitor("avg(last_5m):avg:m{*} ~ 1").expect_err("bad comparator");
    assert_eq!(e.position, 22);
}

#[test]
fn rejections_point_at_the_problem() {
    // (query, byte position, fragment of the message)
    let table: Vec<(&str, usize, &str)> = vec![
        ("", 0, "unexpected end of query"),
        ("avg:system.cpu.user{)", 20, "unexpected ')'"),
        ("avg:system.cpu.user", 19, "unexpected end of query"),
        ("avg:system.cpu.user{*", 21, "unexpected end of query"),
        ("avg:m{}", 6, "empty tag filter"),
        ("avg:m{host:a,}", 13, "unexpected '}'"),
        ("avg:m{host:}", 11, "missing tag value"),
        ("avg:m{:a}", 6, "missing tag key"),
        ("foo:m{*}", 0, "unknown aggregator 'foo'"),
        ("p100:m{*}", 0, "unknown aggregator 'p100'"),
        ("avg:{*}", 4, "unexpected '{'"),
        ("avg:m{*} by host", 12, "unexpected 'h'"),
        ("avg:m{*} by {host", 17, "unexpected end of query"),
        ("avg:m{*} by {host:a}", 13, "invalid group-by key"),
        ("avg:m{*} by {a,a}", 15, "duplicate group-by key"),
        (
            "avg:m{*}.rollup(median, 60)",
            16,
            "unknown rollup method 'median'",
        ),
        ("avg:m{*}.rollup(avg, 0)", 21, "zero is not allowed"),
        ("avg:m{*}.rollup(avg, x)", 21, "unexpected 'x'"),
        (
            "avg:m{*}.rollup(avg).rollup(sum)",
            21,
            "duplicate .rollup()",
        ),
        (
            "avg:m{*}.as_count().as_rate()",
            20,
            "conflicting type modifier",
        ),
        ("avg:m{*}.foo()", 9, "unknown modifier '.foo'"),
        (
            "avg:m{*}.fill(previous)",
            14,
            "unknown fill method 'previous'",
        ),
        ("frobnicate(avg:m{*})", 0, "unknown function 'frobnicate'"),
        (
            "anomalies(avg:m{*}, 'basic', 2)",
            0,
            "function 'anomalies' is not supported",
        ),
        ("abs(avg:m{*}, 2)", 14, "too many arguments to abs()"),
        (
            "top(avg:m{*}, 5, 'median', 'desc')",
            17,
            "unknown ranking 'median'",
        ),
        ("top(avg:m{*}, 5, 'mean', 'up')", 25, "bad order"),
        ("top(avg:m{*}, 0)", 14, "bad series count"),
        ("timeshift(avg:m{*})", 18, "missing argument to timeshift()"),
        ("clamp_min(avg:m{*}, 'x')", 20, "unexpected 'x'"),
        ("abs(avg:m{*}", 12, "unexpected end of query"),
        ("avg:m{*} +", 10, "unexpected end of query"),
        ("avg:m{*} avg:n{*}", 9, "unexpected 'a'"),
        ("(avg:m{*}", 9, "unexpected end of query"),
        ("avg:m{*})", 8, "unexpected ')'"),
        ("avg:m{env:a, b:c AND d:e}", 17, "cannot mix"),
        ("avg:m{!a:b AND c:d}", 11, "cannot mix"),
        ("avg:m{a:b OR}", 12, "unexpected '}'"),
        ("avg:m{env:a AND (b:c}", 20, "unexpected '}'"),
        ("avg:m{env:a b:c}", 12, "unexpected 'b'"),
        ("avg:m{env IN (a, b}", 18, "unexpected '}'"),
        ("avg:m{env:x IN (a)}", 6, "invalid key 'env:x' before IN"),
        ("avg:m{a:b!c}", 9, "unexpected '!'"),
        ("avg:m..x{*}", 4, "invalid metric name"),
        ("avg", 3, "unexpected end of query"),
        (
            "avg:m{*} by {host}.rollup(avg, 60) * ",
            37,
            "unexpected end of query",
        ),
        (
            "top(avg:m{*}, 5, 'mean', 'desc'",
            31,
            "unexpected end of query",
        ),
        (
            "avg:m{*}.rollup(avg, 99999999999999999999)",
            21,
            "number too large",
        ),
        ("abs(1)", 4, "needs a metric query"),
        (
            "avg:m{*} by {a}.as_count() by {b}",
            27,
            "duplicate 'by' clause",
        ),
    ];
    assert!(table.len() >= 20);
    for (s, pos, frag) in table {
        let err = match parse(s) {
            Err(e) => e,
            Ok(e) => {
                // Some errors only show at evaluation (numbers where a series is needed).
                let ds = warden_query::MemorySource::new();
                match warden_query::evaluate(
                    &ds,
                    &e,
                    0,
                    60,
                    &Default::default(),
                    &Default::default(),
                ) {
                    Err(e) => e,
                    Ok(_) => panic!("{s}: accepted"),
                }
            }
        };
        assert_eq!(err.position, pos, "{s}: {err}\n{}", err.caret(s));
        assert!(
            err.to_string().contains(frag),
            "{s}: '{err}' lacks '{frag}'"
        );
    }
}

#[test]
fn display_and_caret() {
    let s = "avg:system.cpu.user{)";
    let e = parse(s).expect_err("bad");
    assert_eq!(
        e.to_string(),
        "unexpected ')' at position 20: expected a tag filter"
    );
    assert_eq!(e.caret(s), format!("{s}\n{}^", " ".repeat(20)));
    // Columns are characters, not bytes.
    let s = "avg:m{é:x,)";
    let e = parse(s).expect_err("bad");
    assert_eq!(e.position, 11);
    assert!(e.caret(s).ends_with(&format!("\n{}^", " ".repeat(10))));
}

#[test]
fn deep_nesting_is_an_error_not_a_crash() {
    let s = format!("{}avg:m{{*}}{}", "(".repeat(10_000), ")".repeat(10_000));
    let e = parse(&s).expect_err("too deep");
    assert!(e.message.contains("nested deeper"), "{e}");
    let s = format!("avg:m{{{}a:b{}}}", "(".repeat(10_000), ")".repeat(10_000));
    assert!(parse(&s).is_err());
    let s = format!("avg:m{{{}a:b}}", "!".repeat(10_000));
    assert!(parse(&s).is_err());
    let s = format!("{}avg:m{{*}}", "-".repeat(10_000));
    assert!(parse(&s).is_err());
    let s = format!("avg:m{{*}}{}", " + 1 * 2".repeat(100_000));
    let e = parse(&s).expect_err("too many operators");
    assert!(e.message.contains("operators"), "{e}");
    assert!(parse(&format!("avg:m{{*}}{}", " + 1".repeat(200))).is_ok());
    let s = "avg:m{é}";
    assert!(
        warden_query::parse_prefix(s, 7, false).is_err(),
        "inside a multi-byte character"
    );
}
