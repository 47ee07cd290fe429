//! Aggregator behaviour: fixed scenarios for the spec's rules (§7) and property tests against
//! naive models.

use std::collections::{BTreeMap, BTreeSet};

use proptest::prelude::*;
use warden_dogstatsd::{Aggregator, AggregatorConfig, Message, Metric, parse_message};
use warden_model::{MetricKind, Series};

fn metric(line: &str) -> Metric<'_> {
    match parse_message(line.as_bytes()) {
        Ok(Message::Metric(m)) => m,
        other => panic!("{line:?} is not a metric: {other:?}"),
    }
}

fn agg() -> Aggregator {
    Aggregator::new(AggregatorConfig {
        hostname: "myhost".into(),
        ..AggregatorConfig::default()
    })
}

fn all_aggs() -> Aggregator {
    Aggregator::new(AggregatorConfig {
        hostname: "h".into(),
        histogram_aggregates: ["max", "min", "median", "avg", "count", "sum"]
            .map(String::from)
            .to_vec(),
        histogram_percentiles: vec![0.5, 0.95, 0.99],
        ..AggregatorConfig::default()
    })
}

fn find<'a>(series: &'a [Series], name: &str) -> &'a Series {
    series
        .iter()
        .find(|s| s.name == name)
        .unwrap_or_else(|| panic!("no series {name} in {series:#?}"))
}

fn points(s: &Series) -> Vec<(i64, f64)> {
    s.points.iter().map(|p| (p.timestamp, p.value)).collect()
}

#[test]
fn gauge_last_value_and_bucket_stamp() {
    let mut a = agg();
    a.insert(&metric("g:1|g|#b,a"), 1000);
    a.insert(&metric("g:2|g|#a,b"), 1005);
    a.insert(&metric("g:3|g|#a,b"), 1009);
    // The bucket [1000, 1010) is still open at 1009.
    let f = a.flush(1009);
    assert!(f.series.is_empty());
    let f = a.flush(1010);
    assert_eq!(f.series.len(), 1, "tag order must not split contexts");
    let s = &f.series[0];
    assert_eq!(s.name, "g");
    assert_eq!(s.tags, vec!["a", "b"]);
    assert_eq!(s.host, "myhost");
    assert_eq!(s.kind, MetricKind::Gauge);
    assert_eq!(s.interval, 10);
    assert_eq!(points(s), vec![(1000, 3.0)]);
    // Nothing is emitted twice.
    assert!(a.flush(1100).series.is_empty());
}

#[test]
fn counter_rate_then_zeros_until_expiry_then_dropped() {
    let mut a = agg();
    a.insert(&metric("c:5|c"), 1005);
    a.insert(&metric("c:1|c|@0.5"), 1006);
    a.insert(&metric("c:1:2|c"), 1007);
    let f = a.flush(1010);
    let s = find(&f.series, "c");
    assert_eq!(s.kind, MetricKind::Rate);
    assert_eq!(points(s), vec![(1000, (5.0 + 2.0 + 3.0) / 10.0)]);
    assert_eq!(a.context_count(), 1);

    // Flushing much later: zeros for every bucket B with 1007 + 300 > B, i.e. 1010..=1300.
    let f = a.flush(2000);
    let s = find(&f.series, "c");
    let want: Vec<(i64, f64)> = (1010..=1300).step_by(10).map(|b| (b, 0.0)).collect();
    assert_eq!(points(s), want);
    assert_eq!(a.context_count(), 0, "expired counter context is dropped");
    assert!(a.flush(3000).series.is_empty());
}

#[test]
fn counter_zeros_between_flushes_and_revival() {
    let mut a = agg();
    a.insert(&metric("c:1|c"), 1000);
    assert_eq!(points(find(&a.flush(1010).series, "c")), vec![(1000, 0.1)]);
    assert_eq!(points(find(&a.flush(1025).series, "c")), vec![(1010, 0.0)]);
    a.insert(&metric("c:2|c"), 1025);
    assert_eq!(points(find(&a.flush(1030).series, "c")), vec![(1020, 0.2)]);
    assert_eq!(
        points(find(&a.flush(1050).series, "c")),
        vec![(1030, 0.0), (1040, 0.0)]
    );
}

#[test]
fn histogram_aggregates_like_agent() {
    let mut a = agg();
    for v in [5, 1, 4, 2, 3] {
        a.insert(&metric(&format!("h:{v}|h")), 1000);
    }
    let f = a.flush(1010);
    let names: BTreeSet<&str> = f.series.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(
        names,
        BTreeSet::from(["h.95percentile", "h.avg", "h.count", "h.max", "h.median"])
    );
    assert_eq!(points(find(&f.series, "h.max")), vec![(1000, 5.0)]);
    assert_eq!(points(find(&f.series, "h.median")), vec![(1000, 3.0)]);
    assert_eq!(points(find(&f.series, "h.avg")), vec![(1000, 3.0)]);
    assert_eq!(points(find(&f.series, "h.count")), vec![(1000, 0.5)]);
    assert_eq!(find(&f.series, "h.count").kind, MetricKind::Rate);
    // (95*5 - 1) / 100 = 4 -> the 5th value.
    assert_eq!(points(find(&f.series, "h.95percentile")), vec![(1000, 5.0)]);
    assert_eq!(find(&f.series, "h.95percentile").kind, MetricKind::Gauge);
    assert!(f.series.iter().all(|s| s.unit.is_none()));
}

#[test]
fn timing_has_millisecond_unit_and_weights() {
    let mut a = all_aggs();
    a.insert(&metric("t:10|ms|@0.25"), 1000); // weight 4
    a.insert(&metric("t:20|ms"), 1001);
    let f = a.flush(1010);
    assert!(
        f.series
            .iter()
            .all(|s| s.unit.as_deref() == Some("millisecond"))
    );
    assert_eq!(points(find(&f.series, "t.count")), vec![(1000, 0.5)]);
    assert_eq!(points(find(&f.series, "t.sum")), vec![(1000, 60.0)]);
    assert_eq!(points(find(&f.series, "t.avg")), vec![(1000, 12.0)]);
    assert_eq!(points(find(&f.series, "t.min")), vec![(1000, 10.0)]);
    assert_eq!(points(find(&f.series, "t.median")), vec![(1000, 10.0)]);
    assert_eq!(
        points(find(&f.series, "t.99percentile")),
        vec![(1000, 20.0)]
    );
}

#[test]
fn set_counts_distinct_members() {
    let mut a = agg();
    for m in ["a", "b", "a", "a:b", "b"] {
        a.insert(&metric(&format!("s:{m}|s")), 1000);
    }
    a.insert(&metric("s:a|s"), 1012);
    let f = a.flush(1030);
    assert_eq!(points(find(&f.series, "s")), vec![(1000, 3.0), (1010, 1.0)]);
}

#[test]
fn distribution_sketch_per_bucket() {
    let mut a = agg();
    a.insert(&metric("d:1:2:3|d|#x"), 1000);
    a.insert(&metric("d:10|d|@0.5|#x"), 1003);
    a.insert(&metric("d:7|d|#x"), 1011);
    let f = a.flush(1020);
    assert!(f.series.is_empty());
    assert_eq!(f.sketches.len(), 1);
    let s = &f.sketches[0];
    assert_eq!(
        (s.name.as_str(), s.tags.clone(), s.host.as_str()),
        ("d", vec!["x".to_string()], "myhost")
    );
    assert_eq!(s.points.len(), 2);
    let (t0, k0) = &s.points[0];
    assert_eq!(*t0, 1000);
    assert_eq!(k0.count(), 5);
    assert_eq!(k0.sum(), 26.0);
    assert_eq!((k0.min(), k0.max()), (1.0, 10.0));
    assert_eq!(s.points[1].0, 1010);
    assert_eq!(s.points[1].1.count(), 1);
    // Sketch series survive a JSON round trip unchanged (the model types keep serde derives).
    let json = serde_json::to_string(&f.sketches).expect("serialize");
    let back: Vec<warden_model::SketchSeries> = serde_json::from_str(&json).expect("deserialize");
    assert_eq!(back, f.sketches);
}

#[test]
fn host_tag_overrides_and_is_stripped_reserved_tags_dropped() {
    let mut a = Aggregator::new(AggregatorConfig {
        hostname: "default".into(),
        extra_tags: vec!["env:prod".into(), "a".into()],
        ..AggregatorConfig::default()
    });
    a.insert(
        &metric("m:1|g|#host:web1,a,dd.internal.entity_id:xyz,,b"),
        1000,
    );
    a.insert(&metric("m:2|g|#b,a"), 1000);
    let f = a.flush(1010);
    assert_eq!(f.series.len(), 2);
    let web = f.series.iter().find(|s| s.host == "web1").expect("web1");
    assert_eq!(web.tags, vec!["a", "b", "env:prod"]);
    assert_eq!(points(web), vec![(1000, 1.0)]);
    let def = f
        .series
        .iter()
        .find(|s| s.host == "default")
        .expect("default");
    assert_eq!(def.tags, vec!["a", "b", "env:prod"]);
    assert_eq!(points(def), vec![(1000, 2.0)]);
}

#[test]
fn same_name_different_type_are_different_contexts() {
    let mut a = agg();
    a.insert(&metric("x:1|g"), 1000);
    a.insert(&metric("x:1|c"), 1000);
    let f = a.flush(1010);
    let kinds: BTreeSet<_> = f.series.iter().map(|s| s.kind as u8).collect();
    assert_eq!(kinds.len(), 2);
    assert_eq!(a.context_count(), 2);
}

#[test]
fn timestamped_samples_skip_aggregation() {
    let mut a = agg();
    a.insert(&metric("g:3|g|T1657100430|#t"), 2000);
    a.insert(&metric("c:4|c|@0.5|T1657100431"), 2000);
    a.insert(&metric("h:4|h|T1657100431"), 2000);
    a.insert(&metric("g:NaN|g|T1657100430"), 2000);
    assert_eq!(a.context_count(), 0);
    let f = a.flush(2010);
    assert!(f.series.is_empty());
    assert_eq!(f.late.len(), 2);
    assert_eq!(f.late[0].kind, MetricKind::Gauge);
    assert_eq!(f.late[0].tags, vec!["t"]);
    assert_eq!(points(&f.late[0]), vec![(1657100430, 3.0)]);
    assert_eq!(f.late[1].kind, MetricKind::Count);
    assert_eq!(points(&f.late[1]), vec![(1657100431, 8.0)]);
    let st = a.stats();
    assert_eq!(st.dropped_timestamped, 1);
    assert_eq!(st.dropped_non_finite, 1);
    assert!(a.flush(2020).late.is_empty());
}

#[test]
fn counter_with_only_nan_in_a_bucket_still_reports_zero() {
    let mut a = agg();
    a.insert(&metric("c:1|c"), 1000);
    a.insert(&metric("c:NaN|c"), 1010);
    let f = a.flush(1020);
    assert_eq!(points(find(&f.series, "c")), vec![(1000, 0.1), (1010, 0.0)]);
}

#[test]
fn non_finite_values_dropped() {
    let mut a = agg();
    a.insert(&metric("g:NaN|g"), 1000);
    a.insert(&metric("h:Inf:1|h"), 1000);
    let f = a.flush(1010);
    assert!(f.series.iter().all(|s| s.name != "g"));
    assert_eq!(points(find(&f.series, "h.max")), vec![(1000, 1.0)]);
    assert_eq!(a.stats().dropped_non_finite, 2);
}

#[test]
fn idle_contexts_expire() {
    let mut a = agg();
    for i in 0..100 {
        a.insert(&metric(&format!("g{i}:1|g|#i:{i}")), 1000);
    }
    assert_eq!(a.context_count(), 100);
    a.flush(1010);
    assert_eq!(a.context_count(), 100, "still within the context expiry");
    a.flush(1030);
    assert_eq!(a.context_count(), 0);
    // Reusing freed slots keeps series correct.
    a.insert(&metric("g7:5|g|#i:7"), 1040);
    let f = a.flush(1050);
    assert_eq!(f.series.len(), 1);
    assert_eq!(f.series[0].tags, vec!["i:7"]);
    assert_eq!(points(&f.series[0]), vec![(1040, 5.0)]);
}

#[test]
fn raw_forms_of_one_context_share_it_and_expire_with_it() {
    // The same context sent as different raw text (tag order, repeats, empty tags, reserved
    // tags, the configured host spelled out): one context, one series, one set of values.
    let mut a = agg();
    let forms = [
        "c:1|c|#a,b",
        "c:1|c|#b,a",
        "c:1|c|#a,b,a",
        "c:1|c|#b,,a",
        "c:1|c|#a,dd.internal.card:low,b",
        "c:1|c|#host:myhost,b,a",
        "c:1|c|#b,a,host:myhost",
    ];
    for (i, line) in forms.iter().enumerate() {
        a.insert(&metric(line), 1000 + i as i64);
    }
    assert_eq!(a.context_count(), 1);
    assert_eq!(a.stats().contexts_created, 1);
    let f = a.flush(1010);
    assert_eq!(f.series.len(), 1, "{:#?}", f.series);
    assert_eq!(f.series[0].tags, vec!["a", "b"]);
    assert_eq!(f.series[0].host, "myhost");
    assert_eq!(points(&f.series[0]), vec![(1000, 0.7)]);
    // Not the same context: another host, another type, a subset of the tags.
    for line in ["c:1|c|#a,b,host:other", "c:1|g|#a,b", "c:1|c|#a"] {
        a.insert(&metric(line), 1010);
    }
    assert_eq!(a.context_count(), 4);
    // Counters report zeros until `expiry_seconds`; then every form is forgotten with its
    // context, and a new sample of any form starts afresh.
    a.flush(1020);
    a.flush(1400);
    a.flush(1430);
    assert_eq!(a.context_count(), 0);
    a.insert(&metric("c:5|c|#b,a"), 1500);
    a.insert(&metric("c:5|c|#a,b"), 1500);
    assert_eq!(a.context_count(), 1);
    let f = a.flush(1510);
    let s = f
        .series
        .iter()
        .find(|s| s.points.iter().any(|p| p.timestamp == 1500))
        .unwrap();
    assert_eq!(s.tags, vec!["a", "b"]);
    assert_eq!(points(s), vec![(1500, 1.0)]);
}

#[test]
fn many_contexts() {
    let mut a = agg();
    for i in 0..20_000 {
        a.insert(&metric(&format!("m:1|c|#ctx:{i},env:x")), 1000);
    }
    assert_eq!(a.context_count(), 20_000);
    let f = a.flush(1010);
    assert_eq!(f.series.len(), 20_000);
    let distinct: BTreeSet<_> = f.series.iter().map(|s| s.tags.clone()).collect();
    assert_eq!(distinct.len(), 20_000);
}

// ------------------------------------------------------------------ properties

fn rate_strategy() -> impl Strategy<Value = f64> {
    prop_oneof![Just(1.0), Just(0.5), Just(0.25), Just(0.1), 0.01f64..=1.0]
}

proptest! {
    #[test]
    fn counter_total_is_sum_of_value_over_rate(
        samples in prop::collection::vec((-1000i32..1000, rate_strategy(), 0i64..100), 1..200)
    ) {
        let mut a = agg();
        let mut expected = 0.0;
        for &(v, rate, dt) in &samples {
            a.insert(&metric(&format!("c:{v}|c|@{rate}")), 10_000 + dt);
            expected += f64::from(v) / rate;
        }
        let f = a.flush(20_000);
        let s = find(&f.series, "c");
        let total: f64 = s.points.iter().map(|p| p.value * 10.0).sum();
        prop_assert!((total - expected).abs() <= 1e-6 * (1.0 + expected.abs()),
            "total {} expected {}", total, expected);
        // Buckets without samples report exactly 0, no point past the expiry.
        let last = samples.iter().map(|s| 10_000 + s.2).max().unwrap_or(0);
        let sampled: BTreeSet<i64> = samples.iter().map(|s| (10_000 + s.2) / 10 * 10).collect();
        for p in &s.points {
            if !sampled.contains(&p.timestamp) {
                prop_assert_eq!(p.value, 0.0);
            }
            prop_assert!(p.timestamp < last + 300);
        }
        let stamps: Vec<i64> = s.points.iter().map(|p| p.timestamp).collect();
        let want: Vec<i64> = (sampled.iter().next().copied().unwrap_or(0)..last + 300)
            .step_by(10).collect();
        prop_assert_eq!(stamps, want);
    }

    #[test]
    fn gauge_is_last_value_per_bucket(
        samples in prop::collection::vec((-1e6f64..1e6, 0i64..5), 1..100)
    ) {
        let mut a = agg();
        let mut now = 5000;
        let mut want: BTreeMap<i64, f64> = BTreeMap::new();
        for &(v, step) in &samples {
            now += step;
            a.insert(&metric(&format!("g:{v}|g")), now);
            want.insert(now / 10 * 10, v);
        }
        let f = a.flush(now + 10);
        let got: BTreeMap<i64, f64> = points(find(&f.series, "g")).into_iter().collect();
        prop_assert_eq!(got, want);
    }

    #[test]
    fn histogram_matches_naive_model(
        samples in prop::collection::vec((-1000i32..1000, prop_oneof![Just(1.0), Just(0.5), Just(0.3), Just(0.1)]), 1..150)
    ) {
        let mut a = all_aggs();
        let mut expanded: Vec<f64> = Vec::new();
        for &(v, rate) in &samples {
            a.insert(&metric(&format!("h:{v}|h|@{rate}")), 1000);
            let w = (1.0 / rate) as usize;
            expanded.extend(std::iter::repeat_n(f64::from(v), w));
        }
        expanded.sort_by(f64::total_cmp);
        let n = expanded.len();
        let f = a.flush(1010);
        let one = |name: &str| points(find(&f.series, name))[0].1;
        prop_assert_eq!(one("h.max"), expanded[n - 1]);
        prop_assert_eq!(one("h.min"), expanded[0]);
        prop_assert_eq!(one("h.count"), n as f64 / 10.0);
        let sum: f64 = expanded.iter().sum();
        prop_assert!((one("h.sum") - sum).abs() < 1e-9);
        prop_assert!((one("h.avg") - sum / n as f64).abs() < 1e-9);
        prop_assert_eq!(one("h.median"), expanded[(n - 1) / 2]);
        prop_assert_eq!(one("h.50percentile"), expanded[(50 * n - 1) / 100]);
        prop_assert_eq!(one("h.95percentile"), expanded[(95 * n - 1) / 100]);
        prop_assert_eq!(one("h.99percentile"), expanded[(99 * n - 1) / 100]);
    }

    #[test]
    fn set_is_distinct_count(members in prop::collection::vec("[a-z:]{1,4}", 1..100)) {
        let mut a = agg();
        for m in &members {
            a.insert(&metric(&format!("s:{m}|s")), 1000);
        }
        let distinct: BTreeSet<&String> = members.iter().collect();
        let f = a.flush(1010);
        prop_assert_eq!(points(find(&f.series, "s")), vec![(1000, distinct.len() as f64)]);
    }

    #[test]
    fn distribution_buckets_merge_to_whole(
        samples in prop::collection::vec((-1e4f64..1e4, 0i64..40), 1..200)
    ) {
        let mut a = agg();
        let mut whole = warden_model::DDSketch::new();
        for &(v, dt) in &samples {
            a.insert(&metric(&format!("d:{v}|d")), 1000 + dt);
            whole.insert(v);
        }
        let f = a.flush(1100);
        prop_assert_eq!(f.sketches.len(), 1);
        let mut merged = warden_model::DDSketch::new();
        for (_, s) in &f.sketches[0].points {
            merged.merge(s);
        }
        prop_assert_eq!(merged.bins(), whole.bins());
        prop_assert_eq!(merged.count(), samples.len() as u64);
        prop_assert_eq!(merged.min(), whole.min());
        prop_assert_eq!(merged.max(), whole.max());
    }
}
