//! Parser properties: never panics, formatted messages round-trip, framing is line-exact.

use proptest::prelude::*;
use warden_dogstatsd::{
    Message, MetricType, MetricValue, error_to_json, lines, message_to_json, parse_datagram,
    parse_message,
};
use warden_model::{AlertType, CheckStatus, Priority};

fn metric_type() -> impl Strategy<Value = MetricType> {
    prop_oneof![
        Just(MetricType::Count),
        Just(MetricType::Gauge),
        Just(MetricType::Histogram),
        Just(MetricType::Timing),
        Just(MetricType::Distribution),
    ]
}

fn finite() -> impl Strategy<Value = f64> {
    prop_oneof![
        -1e6f64..1e6,
        any::<i32>().prop_map(f64::from),
        any::<f64>().prop_filter("finite", |v| v.is_finite()),
    ]
}

/// Tag text that cannot contain the separators `,` `|` or a newline.
const TAG: &str = "[a-zA-Z0-9_.:/é-]{1,12}";

proptest! {
    #[test]
    fn never_panics_on_arbitrary_bytes(data in prop::collection::vec(any::<u8>(), 0..300)) {
        for res in parse_datagram(&data) {
            match res {
                Ok(m) => { let _ = message_to_json(&m); }
                Err(e) => { let _ = error_to_json(&e); }
            }
        }
    }

    #[test]
    fn never_panics_on_protocol_like_text(
        s in "(_e\\{|_sc|[a-z]{0,3})[-_a-z0-9:|@#T,.{}é\\\\n]{0,60}"
    ) {
        for m in parse_datagram(s.as_bytes()).flatten() {
            let _ = message_to_json(&m);
        }
    }

    #[test]
    fn metric_round_trips(
        name in "[a-zA-Z][a-zA-Z0-9_.]{0,20}",
        mt in metric_type(),
        values in prop::collection::vec(finite(), 1..5),
        rate in prop::option::of(0.001f64..=1.0),
        tags in prop::collection::vec(TAG, 0..5),
        ts in prop::option::of(1i64..4_000_000_000),
        card in prop::option::of(prop_oneof![Just("none"), Just("low"), Just("orchestrator"), Just("high")]),
        order in 0usize..6,
    ) {
        let vals: Vec<String> = values.iter().map(|v| v.to_string()).collect();
        let mut fields: Vec<String> = Vec::new();
        if let Some(r) = rate { fields.push(format!("@{r}")); }
        if !tags.is_empty() { fields.push(format!("#{}", tags.join(","))); }
        if let Some(t) = ts { fields.push(format!("T{t}")); }
        if let Some(c) = card { fields.push(format!("card:{c}")); }
        fields.push("c:ci-0123abcd".into());
        let n = fields.len();
        fields.rotate_left(order % n);
        let line = format!("{name}:{}|{}|{}", vals.join(":"), mt.symbol(), fields.join("|"));
        let msg = parse_message(line.as_bytes());
        let Ok(Message::Metric(m)) = msg else {
            return Err(TestCaseError::fail(format!("{line:?} -> {msg:?}")));
        };
        prop_assert_eq!(m.name, name.as_str());
        prop_assert_eq!(m.metric_type, mt);
        prop_assert_eq!(m.value.iter().collect::<Vec<_>>(), values);
        prop_assert_eq!(m.sample_rate, rate.unwrap_or(1.0));
        prop_assert_eq!(m.tags.iter().collect::<Vec<_>>(), tags.iter().map(String::as_str).collect::<Vec<_>>());
        prop_assert_eq!(m.timestamp, ts);
        prop_assert_eq!(m.cardinality.map(|c| c.as_str()), card);
        prop_assert_eq!(m.local_data, Some("ci-0123abcd"));
    }

    #[test]
    fn set_member_round_trips(member in "[^|\n\r]{1,30}") {
        let line = format!("users:{member}|s");
        let msg = parse_message(line.as_bytes());
        let Ok(Message::Metric(m)) = msg else {
            return Err(TestCaseError::fail(format!("{line:?} -> {msg:?}")));
        };
        prop_assert_eq!(m.value, MetricValue::Set(member.as_str()));
    }

    #[test]
    fn event_round_trips(
        title in "[a-zA-Z0-9 |:é#]{1,30}",
        text in "[a-zA-Z0-9 |:é#]{0,60}",
        ts in prop::option::of(any::<i64>()),
        host in prop::option::of("[a-z0-9.-]{1,12}"),
        prio in prop_oneof![Just(Priority::Normal), Just(Priority::Low)],
        alert in prop_oneof![Just(AlertType::Error), Just(AlertType::Warning), Just(AlertType::Info), Just(AlertType::Success)],
        tags in prop::collection::vec(TAG, 0..4),
    ) {
        let mut line = format!("_e{{{},{}}}:{title}|{text}", title.len(), text.len());
        if let Some(t) = ts { line.push_str(&format!("|d:{t}")); }
        if let Some(h) = &host { line.push_str(&format!("|h:{h}")); }
        line.push_str(match prio { Priority::Low => "|p:low", Priority::Normal => "|p:normal" });
        line.push_str(match alert {
            AlertType::Error => "|t:error", AlertType::Warning => "|t:warning",
            AlertType::Info => "|t:info", AlertType::Success => "|t:success",
        });
        if !tags.is_empty() { line.push_str(&format!("|#{}", tags.join(","))); }
        let msg = parse_message(line.as_bytes());
        let Ok(Message::Event(e)) = msg else {
            return Err(TestCaseError::fail(format!("{line:?} -> {msg:?}")));
        };
        prop_assert_eq!(&*e.title, title.as_str());
        prop_assert_eq!(&*e.text, text.as_str());
        prop_assert_eq!(e.timestamp, ts);
        prop_assert_eq!(e.hostname, host.as_deref());
        prop_assert_eq!(e.priority, prio);
        prop_assert_eq!(e.alert_type, alert);
        prop_assert_eq!(e.tags.iter().collect::<Vec<_>>(), tags.iter().map(String::as_str).collect::<Vec<_>>());
    }

    #[test]
    fn service_check_round_trips(
        name in "[a-zA-Z0-9_.]{1,20}",
        status in 0u8..4,
        ts in prop::option::of(any::<i64>()),
        message in prop::option::of("[a-zA-Z0-9 :#é]{1,40}"),
        tags in prop::collection::vec(TAG, 0..4),
    ) {
        let mut line = format!("_sc|{name}|{status}");
        if let Some(t) = ts { line.push_str(&format!("|d:{t}")); }
        if !tags.is_empty() { line.push_str(&format!("|#{}", tags.join(","))); }
        if let Some(m) = &message { line.push_str(&format!("|m:{m}")); }
        let msg = parse_message(line.as_bytes());
        let Ok(Message::ServiceCheck(sc)) = msg else {
            return Err(TestCaseError::fail(format!("{line:?} -> {msg:?}")));
        };
        prop_assert_eq!(sc.name, name.as_str());
        prop_assert_eq!(sc.status, CheckStatus::try_from(status).map_err(TestCaseError::fail)?);
        prop_assert_eq!(sc.timestamp, ts);
        prop_assert_eq!(sc.message, message.as_deref());
        prop_assert_eq!(sc.tags.iter().collect::<Vec<_>>(), tags.iter().map(String::as_str).collect::<Vec<_>>());
    }

    #[test]
    fn framing_yields_each_non_empty_line(
        parts in prop::collection::vec("[a-z:|0-9]{0,10}", 0..10),
        crlf in any::<bool>(),
        trailing in any::<bool>(),
    ) {
        let sep = if crlf { "\r\n" } else { "\n" };
        let mut datagram = parts.join(sep);
        if trailing { datagram.push_str(sep); }
        let got: Vec<&[u8]> = lines(datagram.as_bytes()).collect();
        let want: Vec<&[u8]> = parts.iter().filter(|p| !p.is_empty()).map(|p| p.as_bytes()).collect();
        prop_assert_eq!(got, want);
        prop_assert_eq!(parse_datagram(datagram.as_bytes()).count(), parts.iter().filter(|p| !p.is_empty()).count());
    }
}
