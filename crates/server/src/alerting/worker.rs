//! The background tasks: monitor evaluation, notification fan-out, escalation, delivery.
//!
//! Why one SQLite connection behind a mutex and short critical sections: every task does a
//! handful of row reads/writes per step on a blocking thread; HTTP sends happen with the lock
//! released, so a slow receiver never holds up the API.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use rusqlite::Connection;
use serde_json::{Value, json};
use warden_alerting::monitor::{MonitorRule, Op, Status, Thresholds, step};
use warden_alerting::payload::{self, Encoding, PdAction, PdTrigger};
use warden_alerting::retry::{Verdict, backoff_ms, classify};
use warden_alerting::template::{TemplateCtx, format_value, render};
use warden_alerting::{Escalation, GroupState, Handle, HandleKind, Policy, Step, parse_handles};

use super::db::{self, AlertDoc, NewDelivery, OutRequest};
use super::source::OrgSource;
use super::{Inner, MAX_ATTEMPTS, Notification, RETRY_CAP_MS, Source, Transition, now_ms};

fn now_s() -> i64 {
    now_ms() / 1000
}

fn lock(inner: &Inner) -> std::sync::MutexGuard<'_, Connection> {
    // A panic while holding the lock leaves the connection usable (SQLite rolls back).
    inner.db.lock().unwrap_or_else(|p| p.into_inner())
}

// ---------------------------------------------------------------- notifications

pub(super) async fn notifications(
    inner: Arc<Inner>,
    mut rx: tokio::sync::mpsc::UnboundedReceiver<Notification>,
) {
    while let Some(n) = rx.recv().await {
        let i = inner.clone();
        let key = n.dedup_key.clone();
        match tokio::task::spawn_blocking(move || process(&i, &n)).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::error!(key = %key, error = %e, "notification not queued"),
            Err(e) => tracing::error!(key = %key, error = %e, "notification task failed"),
        }
        inner.wake.notify_one();
    }
}

fn source_json(s: &Source) -> Value {
    match s {
        Source::Monitor { id, group } => json!({"type": "monitor", "id": id, "group": group}),
        Source::Signal { id, rule_id } => json!({"type": "signal", "id": id, "rule_id": rule_id}),
    }
}

/// Parses a stored policy document.
pub(super) fn policy_from(doc: &Value) -> Option<Policy> {
    Some(Policy {
        name: doc["name"].as_str()?.to_owned(),
        steps: doc["steps"]
            .as_array()?
            .iter()
            .map(|s| {
                Some(Step {
                    delay_secs: s["delay_seconds"].as_i64()?,
                    targets: s["targets"]
                        .as_array()?
                        .iter()
                        .filter_map(|t| t.as_str().map(str::to_owned))
                        .collect(),
                })
            })
            .collect::<Option<Vec<_>>>()?,
        repeat: doc["repeat"].as_u64().unwrap_or(0) as u32,
    })
}

/// The policy a message asks for (`@oncall-<name>`), else the org's default.
fn pick_policy(c: &Connection, org: u64, message: &str) -> rusqlite::Result<Option<Policy>> {
    let named = parse_handles(message)
        .into_iter()
        .find(|h| h.kind == HandleKind::Oncall);
    let doc = match named {
        Some(h) => match db::policy_get(c, org, &h.name)? {
            Some((d, _)) => Some(d),
            None => {
                tracing::warn!(org, policy = %h.name, "message names an unknown escalation policy");
                None
            }
        },
        None => db::policy_default(c, org)?,
    };
    Ok(doc.as_ref().and_then(policy_from))
}

fn channel_handles(message: &str) -> Vec<String> {
    parse_handles(message)
        .into_iter()
        .filter(|h| h.kind != HandleKind::Oncall)
        .map(|h| h.to_string())
        .collect()
}

fn add_all(list: &mut Vec<String>, more: &[String]) {
    for h in more {
        if !list.contains(h) {
            list.push(h.clone());
        }
    }
}

/// What one delivery is about.
pub(super) struct Msg<'a> {
    pub(super) org: u64,
    pub(super) dedup_key: &'a str,
    pub(super) transition: Transition,
    pub(super) title: &'a str,
    pub(super) message: &'a str,
    pub(super) severity: &'a str,
    pub(super) tags: &'a [String],
    pub(super) vars: &'a BTreeMap<String, String>,
    pub(super) now: i64,
}

/// Applies `n` now (the API's acknowledge and resolve use this to answer with the new state).
pub(super) fn process_now(inner: &Inner, n: &Notification) -> Result<(), String> {
    process(inner, n)
}

fn process(inner: &Inner, n: &Notification) -> Result<(), String> {
    let now = now_s();
    let c = lock(inner);
    let existing = db::alert_get(&c, n.org, &n.dedup_key).map_err(|e| e.to_string())?;
    let mut targets = channel_handles(&n.message);
    let alert = match n.transition {
        Transition::Triggered => {
            let mut a = match existing {
                Some(a) if a.status != "resolved" => a,
                prev => {
                    // A new alert cycle: start the escalation policy, if any.
                    let policy = pick_policy(&c, n.org, &n.message).map_err(|e| e.to_string())?;
                    let (escalation, first) = match &policy {
                        Some(p) => {
                            let (e, t) = Escalation::start(p, now);
                            (Some(e), t)
                        }
                        None => (None, Vec::new()),
                    };
                    add_all(&mut targets, &first);
                    AlertDoc {
                        status: "triggered".into(),
                        source: source_json(&n.source),
                        title: String::new(),
                        message: String::new(),
                        severity: String::new(),
                        tags: Vec::new(),
                        vars: BTreeMap::new(),
                        policy: policy.map(|p| p.name),
                        escalation,
                        notified: Vec::new(),
                        triggered_at: now,
                        acknowledged_at: None,
                        acknowledged_by: None,
                        resolved_at: None,
                        cycle: prev.map_or(1, |p| p.cycle + 1),
                    }
                }
            };
            a.title = n.title.clone();
            a.message = n.message.clone();
            a.severity = n.severity.clone();
            a.tags = n.tags.clone();
            a.vars = n.vars.clone();
            add_all(&mut a.notified, &targets);
            a
        }
        Transition::Acknowledged | Transition::Resolved => {
            let Some(mut a) = existing else {
                if n.transition == Transition::Acknowledged {
                    // Nothing was paged for it (e.g. a signal without handles).
                    tracing::debug!(org = n.org, key = %n.dedup_key, "acknowledge for an alert never notified");
                    return Ok(());
                }
                // A recovery with no alert on record: tell the message's handles only.
                queue_all(inner, &c, &targets, &msg_of(n, now))?;
                return Ok(());
            };
            if a.status == "resolved"
                || (n.transition == Transition::Acknowledged && a.status == "acknowledged")
            {
                return Ok(());
            }
            if let Some(e) = a.escalation.as_mut() {
                e.stop();
            }
            if n.transition == Transition::Acknowledged {
                a.status = "acknowledged".into();
                a.acknowledged_at = Some(now);
                a.acknowledged_by = n.vars.get("ACKNOWLEDGED_BY").cloned();
            } else {
                a.status = "resolved".into();
                a.resolved_at = Some(now);
            }
            // Everyone told about the alert hears how it ended.
            let mut all = a.notified.clone();
            add_all(&mut all, &targets);
            targets = all;
            a
        }
    };
    db::alert_put(&c, n.org, &n.dedup_key, &alert, now_ms()).map_err(|e| e.to_string())?;
    let title;
    let message;
    let m = if n.transition == Transition::Triggered {
        msg_of(n, now)
    } else {
        // Follow-ups reuse the alert's words when the caller sent none.
        title = if n.title.is_empty() {
            let word = if n.transition == Transition::Acknowledged {
                "Acknowledged"
            } else {
                "Resolved"
            };
            // `[Triggered on {host:a}] CPU` → `[Acknowledged] CPU`.
            let base = match alert
                .title
                .strip_prefix('[')
                .and_then(|t| t.split_once("] "))
            {
                Some((_, rest)) => rest,
                None => alert.title.as_str(),
            };
            format!("[{word}] {base}")
        } else {
            n.title.clone()
        };
        message = if n.message.is_empty() {
            alert.message.clone()
        } else {
            n.message.clone()
        };
        Msg {
            title: &title,
            message: &message,
            ..msg_of(n, now)
        }
    };
    queue_all(inner, &c, &targets, &m)
}

fn msg_of(n: &Notification, now: i64) -> Msg<'_> {
    Msg {
        org: n.org,
        dedup_key: &n.dedup_key,
        transition: n.transition,
        title: &n.title,
        message: &n.message,
        severity: &n.severity,
        tags: &n.tags,
        vars: &n.vars,
        now,
    }
}

/// Queues one delivery per target handle.
pub(super) fn queue_all(
    inner: &Inner,
    c: &Connection,
    targets: &[String],
    m: &Msg<'_>,
) -> Result<(), String> {
    for t in targets {
        let Some(h) = Handle::parse(t) else { continue };
        if h.kind == HandleKind::Oncall {
            continue;
        }
        let (kind, channel, built) = match build_request(inner, c, &h, m) {
            Ok((name, req)) => (h.kind.prefix(), name, Ok(req)),
            Err(e) => (h.kind.prefix(), h.name.clone(), Err(e)),
        };
        let (sealed, error) = match built {
            Ok(req) => {
                let bytes = serde_json::to_vec(&req).map_err(|e| e.to_string())?;
                let aad = db::delivery_aad(m.org, kind, &channel, m.dedup_key);
                (
                    Some(
                        inner
                            .store
                            .seal_record(&aad, &bytes)
                            .map_err(|e| e.to_string())?,
                    ),
                    None,
                )
            }
            Err(e) => {
                tracing::warn!(org = m.org, handle = %h, error = %e, "cannot deliver");
                (None, Some(e))
            }
        };
        db::delivery_insert(
            c,
            &NewDelivery {
                org: m.org,
                kind,
                channel: &channel,
                dedup_key: m.dedup_key,
                transition: m.transition.as_str(),
                sealed,
                error,
            },
            now_ms(),
        )
        .map_err(|e| e.to_string())?;
    }
    Ok(())
}

/// Finds a channel by handle name: exact, then case-insensitive, then (Slack) without an
/// `<account>-` prefix.
fn find_channel(
    c: &Connection,
    org: u64,
    kind: &str,
    name: &str,
) -> Result<Option<db::ChannelRow>, String> {
    if let Some(r) = db::channel_get(c, org, kind, name).map_err(|e| e.to_string())? {
        return Ok(Some(r));
    }
    let all = db::channel_list(c, org, kind).map_err(|e| e.to_string())?;
    let lower = name.to_lowercase();
    let stripped = if kind == "slack" {
        name.split_once('-').map(|(_, ch)| ch.to_lowercase())
    } else {
        None
    };
    Ok(all.into_iter().find(|r| {
        let n = r.name.to_lowercase();
        n == lower || stripped.as_deref() == Some(n.as_str())
    }))
}

fn open_secret(inner: &Inner, org: u64, kind: &str, row: &db::ChannelRow) -> Result<Value, String> {
    let raw = inner
        .store
        .open_record(&db::channel_aad(org, kind, &row.name), &row.sealed)
        .map_err(|e| format!("cannot open the channel's sealed configuration: {e}"))?;
    serde_json::from_slice(&raw).map_err(|e| e.to_string())
}

fn transition_word(m: &Msg<'_>) -> String {
    if let Some(t) = m.vars.get("ALERT_TRANSITION") {
        return t.clone();
    }
    match m.transition {
        Transition::Triggered => "Triggered",
        Transition::Acknowledged => "Acknowledged",
        Transition::Resolved => "Recovered",
    }
    .to_owned()
}

/// `$ALERT_TYPE`: `error|warning|success|info`.
fn alert_type(m: &Msg<'_>) -> &'static str {
    match m.transition {
        Transition::Resolved => "success",
        Transition::Acknowledged => "info",
        Transition::Triggered => match payload::pd_severity(m.severity) {
            "critical" | "error" => "error",
            "warning" => "warning",
            _ => "info",
        },
    }
}

/// The `$VARIABLE`s of one delivery (the caller's `vars` win).
fn webhook_vars(inner: &Inner, m: &Msg<'_>) -> BTreeMap<String, String> {
    let mut v = BTreeMap::new();
    let ms = (m.now * 1000).to_string();
    let text = format!("%%%\n{}\n%%%", m.message);
    let put = |v: &mut BTreeMap<String, String>, k: &str, x: String| {
        v.insert(k.to_owned(), x);
    };
    put(&mut v, "ID", m.dedup_key.to_owned());
    put(&mut v, "AGGREG_KEY", m.dedup_key.to_owned());
    put(&mut v, "ALERT_CYCLE_KEY", m.dedup_key.to_owned());
    put(&mut v, "EVENT_TITLE", m.title.to_owned());
    put(&mut v, "ALERT_TITLE", m.title.to_owned());
    put(&mut v, "EVENT_MSG", text);
    put(&mut v, "TEXT_ONLY_MSG", m.message.to_owned());
    put(&mut v, "ALERT_TRANSITION", transition_word(m));
    put(&mut v, "ALERT_TYPE", alert_type(m).to_owned());
    put(&mut v, "DATE", ms.clone());
    put(&mut v, "LAST_UPDATED", ms);
    put(&mut v, "PRIORITY", "normal".to_owned());
    put(&mut v, "TAGS", m.tags.join(","));
    put(&mut v, "ORG_ID", m.org.to_string());
    put(&mut v, "ORG_NAME", m.org.to_string());
    let event_type = if m.vars.contains_key("SECURITY_SIGNAL_ID") {
        "security_signal"
    } else {
        "query_alert_monitor"
    };
    put(&mut v, "EVENT_TYPE", event_type.to_owned());
    put(
        &mut v,
        "HOSTNAME",
        m.tags
            .iter()
            .find_map(|t| t.strip_prefix("host:"))
            .unwrap_or("")
            .to_owned(),
    );
    put(
        &mut v,
        "LINK",
        if m.transition == Transition::Triggered {
            inner.ack_link(m.org, m.dedup_key, m.now)
        } else {
            String::new()
        },
    );
    for (k, x) in m.vars {
        v.insert(k.clone(), x.clone());
    }
    v
}

/// Builds the request for one handle: (channel name, request).
fn build_request(
    inner: &Inner,
    c: &Connection,
    h: &Handle,
    m: &Msg<'_>,
) -> Result<(String, OutRequest), String> {
    let kind = h.kind.prefix();
    let row = find_channel(c, m.org, kind, &h.name)?
        .ok_or_else(|| format!("no {kind} channel named {:?}", h.name))?;
    let secret = open_secret(inner, m.org, kind, &row)?;
    let link =
        (m.transition == Transition::Triggered).then(|| inner.ack_link(m.org, m.dedup_key, m.now));
    let req = match h.kind {
        HandleKind::PagerDuty => {
            let key = secret["service_key"].as_str().unwrap_or_default();
            let action = match m.transition {
                Transition::Triggered => PdAction::Trigger,
                Transition::Acknowledged => PdAction::Acknowledge,
                Transition::Resolved => PdAction::Resolve,
            };
            let tag = |k: &str| {
                m.tags
                    .iter()
                    .find_map(|t| t.strip_prefix(&format!("{k}:")).map(str::to_owned))
            };
            let trigger = PdTrigger {
                summary: m.title.to_owned(),
                source: tag("host")
                    .or_else(|| tag("service"))
                    .unwrap_or_else(|| "warden".to_owned()),
                severity: m.severity.to_owned(),
                timestamp: m.now,
                component: tag("service").or_else(|| m.vars.get("ALERT_METRIC").cloned()),
                group: tag("env"),
                class: Some(
                    if m.vars.contains_key("SECURITY_SIGNAL_ID") {
                        "security_signal"
                    } else {
                        "monitor"
                    }
                    .to_owned(),
                ),
                custom_details: json!({
                    "message": m.message,
                    "tags": m.tags,
                    "transition": transition_word(m),
                }),
                links: link
                    .iter()
                    .map(|l| (l.clone(), "Acknowledge in Warden".to_owned()))
                    .collect(),
            };
            let body = payload::pagerduty_event(key, action, m.dedup_key, Some(&trigger));
            OutRequest {
                url: inner.cfg.pagerduty_url.clone(),
                headers: Vec::new(),
                content_type: "application/json".into(),
                body: body.to_string(),
            }
        }
        HandleKind::Slack => {
            let url = secret["url"].as_str().unwrap_or_default().to_owned();
            let title = m.title;
            let context = format!(
                "Warden · {} · severity {} · `{}`",
                transition_word(m),
                m.severity,
                m.dedup_key
            );
            let body = payload::slack_message(title, m.message, &context, link.as_deref());
            OutRequest {
                url,
                headers: Vec::new(),
                content_type: "application/json".into(),
                body: body.to_string(),
            }
        }
        HandleKind::Webhook => {
            let url = secret["url"].as_str().unwrap_or_default().to_owned();
            let enc = if row.public["encode_as"] == "form" {
                Encoding::Form
            } else {
                Encoding::Json
            };
            let vars = webhook_vars(inner, m);
            let (ct, body) = payload::webhook_body(row.public["payload"].as_str(), &vars, enc)?;
            let headers = secret["custom_headers"]
                .as_object()
                .map(|o| {
                    o.iter()
                        .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_owned()))
                        .collect()
                })
                .unwrap_or_default();
            OutRequest {
                url,
                headers,
                content_type: ct.into(),
                body,
            }
        }
        HandleKind::Oncall => return Err("an @oncall handle is a policy, not a channel".into()),
    };
    Ok((row.name, req))
}

// ---------------------------------------------------------------- deliveries

/// Finished deliveries are kept this long in the log, resolved alerts too.
const KEEP_MS: i64 = 30 * 86_400_000;

pub(super) async fn deliveries(inner: Arc<Inner>) {
    let mut last_prune = 0i64;
    loop {
        if now_ms() - last_prune > 600_000 {
            last_prune = now_ms();
            let i = inner.clone();
            let _ = tokio::task::spawn_blocking(move || {
                let c = lock(&i);
                if let Err(e) = db::prune(&c, now_ms() - KEEP_MS) {
                    tracing::warn!(error = %e, "alerting history not pruned");
                }
            })
            .await;
        }
        let i = inner.clone();
        let due = tokio::task::spawn_blocking(move || {
            let c = lock(&i);
            db::deliveries_take_due(&c, now_ms(), 32)
        })
        .await;
        match due {
            Ok(Ok(list)) => {
                for d in list {
                    tokio::spawn(send_one(inner.clone(), d));
                }
            }
            Ok(Err(e)) => tracing::error!(error = %e, "delivery queue unreadable"),
            Err(e) => tracing::error!(error = %e, "delivery task failed"),
        }
        tokio::select! {
            _ = inner.wake.notified() => {}
            _ = tokio::time::sleep(inner.cfg.tick) => {}
        }
    }
}

async fn send_one(inner: Arc<Inner>, d: db::DueDelivery) {
    let aad = db::delivery_aad(d.org, &d.kind, &d.channel, &d.dedup_key);
    let req: Result<OutRequest, String> = inner
        .store
        .open_record(&aad, &d.sealed)
        .map_err(|e| e.to_string())
        .and_then(|b| serde_json::from_slice(&b).map_err(|e| e.to_string()));
    let attempts = d.attempts + 1;
    let (status, error) = match req {
        Err(e) => (None, Some(format!("queued request unreadable: {e}"))),
        Ok(r) => {
            let mut b = inner
                .http
                .post(&r.url)
                .header("Content-Type", &r.content_type)
                .body(r.body);
            for (k, v) in &r.headers {
                b = b.header(k, v);
            }
            match b.send().await {
                Ok(mut resp) => {
                    let s = resp.status().as_u16();
                    // Only the start of the answer is kept (for the log); a receiver cannot
                    // make Warden buffer an endless body.
                    let mut head = Vec::new();
                    while head.len() < 4096 {
                        match resp.chunk().await {
                            Ok(Some(c)) => head.extend_from_slice(&c),
                            _ => break,
                        }
                    }
                    let text = String::from_utf8_lossy(&head).into_owned();
                    let err = (!(200..300).contains(&s))
                        .then(|| payload::truncate(text.trim(), 300).to_owned());
                    (Some(s), err)
                }
                // Never the URL: it can hold a secret (Slack, basic auth).
                Err(e) => (None, Some(error_kind(&e))),
            }
        }
    };
    let verdict = if error
        .as_deref()
        .is_some_and(|e| e.starts_with("queued request"))
    {
        Verdict::Failed
    } else {
        classify(status)
    };
    let now = now_ms();
    let (st, next) = match verdict {
        Verdict::Delivered => ("delivered", now),
        Verdict::Failed => ("failed", now),
        Verdict::Retry if attempts >= MAX_ATTEMPTS => ("failed", now),
        Verdict::Retry => (
            "pending",
            now + backoff_ms(inner.cfg.retry_base_ms, RETRY_CAP_MS, attempts) as i64,
        ),
    };
    tracing::info!(
        id = d.id, kind = %d.kind, channel = %d.channel, key = %d.dedup_key,
        attempts, status = ?status, outcome = st, "notification delivery"
    );
    let i = inner.clone();
    let _ = tokio::task::spawn_blocking(move || {
        let c = lock(&i);
        db::delivery_record(
            &c,
            d.id,
            &db::AttemptResult {
                status: st,
                attempts,
                last_status: status,
                last_error: error,
                next_at_ms: next,
            },
            now,
        )
    })
    .await;
    inner.wake.notify_one();
}

fn error_kind(e: &reqwest::Error) -> String {
    if e.is_timeout() {
        "timed out".into()
    } else if e.is_connect() {
        "connection failed".into()
    } else {
        "request failed".into()
    }
}

// ---------------------------------------------------------------- escalation

pub(super) async fn escalations(inner: Arc<Inner>) {
    loop {
        tokio::time::sleep(inner.cfg.tick).await;
        let i = inner.clone();
        let r = tokio::task::spawn_blocking(move || escalate_due(&i)).await;
        match r {
            Ok(Ok(0)) => {}
            Ok(Ok(_)) => inner.wake.notify_one(),
            Ok(Err(e)) => tracing::error!(error = %e, "escalation step failed"),
            Err(e) => tracing::error!(error = %e, "escalation task failed"),
        }
    }
}

fn escalate_due(inner: &Inner) -> Result<usize, String> {
    let now = now_s();
    let c = lock(inner);
    let mut fired = 0;
    for (org, key, mut a) in db::alert_list(&c, None).map_err(|e| e.to_string())? {
        if a.status != "triggered" {
            continue;
        }
        let (Some(esc), Some(pname)) = (a.escalation.as_mut(), a.policy.clone()) else {
            continue;
        };
        if esc.next_at.is_none_or(|t| t > now) {
            continue;
        }
        let policy = db::policy_get(&c, org, &pname)
            .map_err(|e| e.to_string())?
            .and_then(|(d, _)| policy_from(&d));
        let Some(policy) = policy else {
            esc.stop();
            db::alert_put(&c, org, &key, &a, now_ms()).map_err(|e| e.to_string())?;
            continue;
        };
        let due = esc.due(&policy, now);
        if let Some((step_idx, targets)) = due {
            let title = format!("[Escalated: step {}] {}", step_idx + 1, a.title);
            let mut vars = a.vars.clone();
            vars.insert("ESCALATION_STEP".into(), (step_idx + 1).to_string());
            let m = Msg {
                org,
                dedup_key: &key,
                transition: Transition::Triggered,
                title: &title,
                message: &a.message,
                severity: &a.severity,
                tags: &a.tags,
                vars: &vars,
                now,
            };
            queue_all(inner, &c, &targets, &m)?;
            tracing::info!(org, key = %key, step = step_idx + 1, "alert escalated");
            add_all(&mut a.notified, &targets);
            fired += 1;
        }
        db::alert_put(&c, org, &key, &a, now_ms()).map_err(|e| e.to_string())?;
    }
    Ok(fired)
}

// ---------------------------------------------------------------- monitors

pub(super) async fn monitors(inner: Arc<Inner>) {
    let mut iv = tokio::time::interval(inner.cfg.eval_interval);
    iv.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        iv.tick().await;
        let i = inner.clone();
        match tokio::task::spawn_blocking(move || evaluate_all(&i)).await {
            Ok(notes) => {
                for n in notes {
                    let _ = inner.tx.send(n);
                }
            }
            Err(e) => tracing::error!(error = %e, "monitor evaluation task failed"),
        }
    }
}

fn evaluate_all(inner: &Inner) -> Vec<Notification> {
    let rows = {
        let c = lock(inner);
        db::monitor_list(&c, None).unwrap_or_default()
    };
    let now = now_s();
    let mut out = Vec::new();
    for m in rows {
        match evaluate_one(inner, &m, now) {
            Ok(mut n) => out.append(&mut n),
            Err(e) => tracing::warn!(monitor = m.id, error = %e, "monitor not evaluated"),
        }
    }
    out
}

pub(super) fn op_of(c: warden_query::Comparator) -> Op {
    use warden_query::Comparator as C;
    match c {
        C::Gt => Op::Gt,
        C::Ge => Op::Ge,
        C::Lt => Op::Lt,
        C::Le => Op::Le,
        C::Eq => Op::Eq,
        C::Ne => Op::Ne,
    }
}

/// The state-machine rule of a stored monitor.
pub(super) fn rule_of(
    doc: &Value,
    mq: &warden_query::MonitorQuery,
    minute_secs: i64,
) -> MonitorRule {
    let o = &doc["options"];
    let t = &o["thresholds"];
    let f = |v: &Value| v.as_f64();
    let renotify = o["renotify_interval"]
        .as_i64()
        .filter(|m| *m > 0)
        .map(|m| m * minute_secs);
    let statuses: Vec<Status> = match o["renotify_statuses"].as_array() {
        Some(a) => a
            .iter()
            .filter_map(|s| s.as_str().and_then(Status::parse_lower))
            .collect(),
        None => vec![Status::Alert, Status::NoData],
    };
    MonitorRule {
        op: op_of(mq.comparator),
        thresholds: Thresholds {
            critical: mq.threshold,
            critical_recovery: f(&t["critical_recovery"]),
            warning: f(&t["warning"]),
            warning_recovery: f(&t["warning_recovery"]),
        },
        notify_no_data: o["notify_no_data"].as_bool().unwrap_or(false),
        no_data_secs: o["no_data_timeframe"]
            .as_i64()
            .filter(|m| *m > 0)
            .map_or(2 * mq.window_secs, |m| m * minute_secs),
        renotify_secs: renotify,
        renotify_statuses: statuses,
        new_group_delay_secs: o["new_group_delay"].as_i64().unwrap_or(0).max(0),
    }
}

/// `host:web-1,env:prod`, or `*` for an ungrouped monitor.
fn group_name(tags: &[String]) -> String {
    if tags.is_empty() {
        "*".into()
    } else {
        tags.join(",")
    }
}

/// The dedup key of one monitor group: `monitor-<id>` or `monitor-<id>-<hash of group>`.
pub(super) fn monitor_key(id: i64, group: &str) -> String {
    if group == "*" {
        return format!("monitor-{id}");
    }
    let d = ring::digest::digest(&ring::digest::SHA256, group.as_bytes());
    format!("monitor-{id}-{}", super::hex(&d.as_ref()[..8]))
}

fn evaluate_one(inner: &Inner, m: &db::MonitorRow, now: i64) -> Result<Vec<Notification>, String> {
    let doc = &m.doc;
    let query = doc["query"].as_str().unwrap_or_default();
    let mq = warden_query::parse_monitor(query).map_err(|e| e.to_string())?;
    let rule = rule_of(doc, &mq, inner.cfg.minute_secs);
    let delay = doc["options"]["evaluation_delay"]
        .as_i64()
        .unwrap_or(0)
        .max(0);
    let at = now - delay;
    let src = OrgSource {
        store: &inner.store,
        org: m.org,
        error: std::sync::Mutex::new(None),
    };
    let opts = warden_query::EvalOptions {
        now: at,
        ..warden_query::EvalOptions::default()
    };
    let groups = warden_query::evaluate_monitor(&src, &mq, at, &opts).map_err(|e| e.to_string())?;
    if let Some(e) = src.error.into_inner().unwrap_or_else(|p| p.into_inner()) {
        // Unreadable is not "no data": skip this round rather than alert on it.
        return Err(format!("store read failed: {e}"));
    }
    let mut states = {
        let c = lock(inner);
        db::groups_load(&c, m.id).map_err(|e| e.to_string())?
    };
    let mut seen = BTreeSet::new();
    let mut events = Vec::new();
    for g in &groups {
        let name = group_name(&g.tag_set);
        let st = states
            .entry(name.clone())
            .or_insert_with(|| GroupState::new(now));
        if let Some(ev) = step(&rule, st, g.value, now) {
            events.push((name.clone(), g.tag_set.clone(), ev, st.clone()));
        }
        seen.insert(name);
    }
    if states.is_empty() {
        // Nothing ever reported: the ungrouped group, counted from the monitor's creation.
        states.insert("*".into(), GroupState::new(m.created_ms / 1000));
    }
    for (name, st) in states.iter_mut() {
        if seen.contains(name) {
            continue;
        }
        if let Some(ev) = step(&rule, st, None, now) {
            let tags = if name == "*" {
                Vec::new()
            } else {
                name.split(',').map(str::to_owned).collect()
            };
            events.push((name.clone(), tags, ev, st.clone()));
        }
    }
    {
        let mut c = lock(inner);
        db::groups_save(&mut c, m.id, &states).map_err(|e| e.to_string())?;
    }
    let metric = mq
        .expr
        .queries()
        .first()
        .map(|q| q.metric.clone())
        .unwrap_or_default();
    Ok(events
        .into_iter()
        .map(|(group, tags, ev, st)| {
            monitor_notification(m, &mq, &metric, &rule, &group, &tags, &ev, &st, now)
        })
        .collect())
}

#[allow(clippy::too_many_arguments)]
fn monitor_notification(
    m: &db::MonitorRow,
    mq: &warden_query::MonitorQuery,
    metric: &str,
    rule: &MonitorRule,
    group: &str,
    group_tags: &[String],
    ev: &warden_alerting::MonitorEvent,
    st: &GroupState,
    now: i64,
) -> Notification {
    let doc = &m.doc;
    let o = &doc["options"];
    let mut ctx = TemplateCtx {
        flags: ev.flags(),
        ..TemplateCtx::default()
    };
    let t = &rule.thresholds;
    let value = ev.value.or(st.last_value);
    let mut put = |k: &str, v: String| {
        ctx.vars.insert(k.to_owned(), v);
    };
    put("value", value.map(format_value).unwrap_or_default());
    put("threshold", format_value(t.critical));
    put(
        "warn_threshold",
        t.warning.map(format_value).unwrap_or_default(),
    );
    put("comparator", rule.op.symbol().to_owned());
    if let Some(ts) = st.last_triggered_ts {
        put("last_triggered_at", warden_alerting::time::human(ts));
        put("last_triggered_at_epoch", (ts * 1000).to_string());
    }
    if let Some(p) = doc["priority"].as_i64() {
        put("priority", format!("P{p}"));
    }
    for tag in group_tags {
        if let Some((k, v)) = tag.split_once(':') {
            ctx.tags.insert(k.to_owned(), v.to_owned());
        }
    }
    let mut message = render(doc["message"].as_str().unwrap_or_default(), &ctx);
    if ev.renotify {
        if let Some(esc) = o["escalation_message"].as_str() {
            message.push('\n');
            message.push_str(&render(esc, &ctx));
        }
    }
    let name = render(doc["name"].as_str().unwrap_or_default(), &ctx);
    let word = ev.transition();
    let include_tags = o["include_tags"].as_bool().unwrap_or(true);
    let title = if include_tags && group != "*" {
        format!("[{word} on {{{group}}}] {name}")
    } else {
        format!("[{word}] {name}")
    };
    let mut tags: Vec<String> = doc["tags"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|t| t.as_str().map(str::to_owned))
        .collect();
    for t in group_tags {
        if !tags.contains(t) {
            tags.push(t.clone());
        }
    }
    let mut vars = BTreeMap::new();
    vars.insert("ALERT_TRANSITION".into(), word.to_owned());
    vars.insert("ALERT_ID".into(), m.id.to_string());
    vars.insert(
        "ALERT_QUERY".into(),
        doc["query"].as_str().unwrap_or_default().to_owned(),
    );
    vars.insert("ALERT_METRIC".into(), metric.to_owned());
    vars.insert("ALERT_SCOPE".into(), group_tags.join(","));
    vars.insert(
        "ALERT_STATUS".into(),
        format!(
            "{metric} over {group} was {} {} {} during the last {}s",
            value.map(format_value).unwrap_or_else(|| "no data".into()),
            rule.op.symbol(),
            format_value(t.critical),
            mq.window_secs
        ),
    );
    if let Some(p) = doc["priority"].as_i64() {
        vars.insert("ALERT_PRIORITY".into(), format!("P{p}"));
    }
    vars.insert("EVENT_TYPE".into(), "query_alert_monitor".into());
    let _ = now;
    Notification {
        org: m.org,
        source: Source::Monitor {
            id: m.id,
            group: group.to_owned(),
        },
        dedup_key: monitor_key(m.id, group),
        transition: if ev.is_recovery() {
            Transition::Resolved
        } else {
            Transition::Triggered
        },
        title,
        message,
        severity: ev.to.as_str().to_lowercase(),
        tags,
        vars,
    }
}
