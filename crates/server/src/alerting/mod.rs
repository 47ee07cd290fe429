//! Monitors, notification channels (webhook, PagerDuty, Slack), escalation policies, the
//! delivery log, and signed acknowledgement links (issue #6).
//!
//! Why this shape:
//! * **Decisions in `warden-alerting`, I/O here.** The state machines and payload builders are
//!   pure; this module reads the store, keeps state in `DIR/alerting.db` (SQLite), sends HTTP
//!   requests and passes the time in.
//! * **`notify` never blocks.** Monitors and detection rules hand a [`Notification`] to an
//!   unbounded channel; one worker turns it into delivery rows (one per channel) and escalation
//!   state. Delivery rows are the queue: a restart resumes every pending delivery.
//! * **Secrets are sealed.** Routing keys, Slack URLs, webhook URLs and header values are
//!   sealed with the store's record key before they touch SQLite (and so are queued request
//!   bodies, which embed them); the API answers with masks only.
//! * **Per alert, in order.** A delivery waits while an older one for the same channel and
//!   alert is pending, so PagerDuty never sees a resolve before its trigger.

// Some fields are read only by later work (the e2e over signals).
#![allow(dead_code)]

mod api;
mod db;
mod source;
mod worker;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::{Request, Response};

use crate::{ApiError, AppState, ServerError};

pub(crate) use api::route;

/// Where a notification comes from.
#[derive(Clone, Debug)]
pub(crate) enum Source {
    Monitor { id: i64, group: String },
    Signal { id: String, rule_id: String },
}

/// Lifecycle step of one alert (one `dedup_key`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Transition {
    Triggered,
    Acknowledged,
    Resolved,
}

impl Transition {
    fn as_str(self) -> &'static str {
        match self {
            Transition::Triggered => "triggered",
            Transition::Acknowledged => "acknowledged",
            Transition::Resolved => "resolved",
        }
    }
}

/// One thing to tell people about. `message` is the rendered message, still holding its
/// `@pagerduty-...`, `@slack-...`, `@webhook-...` handles, which pick the channels.
#[derive(Clone, Debug)]
pub(crate) struct Notification {
    pub(crate) org: u64,
    pub(crate) source: Source,
    /// Stable per alert: PagerDuty's `dedup_key`, the escalation and ack key.
    pub(crate) dedup_key: String,
    pub(crate) transition: Transition,
    pub(crate) title: String,
    pub(crate) message: String,
    /// `critical`, `high`, `medium`, `low`, `info` (signals) or `alert`/`warn` (monitors).
    pub(crate) severity: String,
    pub(crate) tags: Vec<String>,
    /// Extra `$VARIABLE`s for webhook payload templates.
    pub(crate) vars: BTreeMap<String, String>,
}

/// Knobs, from the environment (defaults are the production values; tests shorten them).
#[derive(Clone, Debug)]
pub(crate) struct Config {
    /// Monitor evaluation period (`WARDEN_ALERTING_EVAL_INTERVAL_MS`, default 10 s).
    pub(crate) eval_interval: Duration,
    /// Escalation and delivery polling period (`WARDEN_ALERTING_TICK_MS`, default 1 s).
    pub(crate) tick: Duration,
    /// First retry delay (`WARDEN_ALERTING_RETRY_BASE_MS`, default 2 s), doubled per attempt
    /// up to 5 min; at most [`MAX_ATTEMPTS`] attempts.
    pub(crate) retry_base_ms: u64,
    /// Seconds in a "minute" of monitor options (`no_data_timeframe`, `renotify_interval`):
    /// `WARDEN_ALERTING_MINUTE_SECS`, 60 except in tests.
    pub(crate) minute_secs: i64,
    /// PagerDuty Events API v2 URL (`WARDEN_PAGERDUTY_EVENTS_URL`).
    pub(crate) pagerduty_url: String,
    /// Base of links in messages (`WARDEN_PUBLIC_URL`).
    pub(crate) public_url: String,
    /// Extra CA bundle for outbound HTTPS (`WARDEN_ALERTING_CA_FILE`).
    pub(crate) ca_file: Option<std::path::PathBuf>,
}

/// Most delivery attempts (the first and 5 retries, like Datadog's webhooks).
pub(crate) const MAX_ATTEMPTS: u32 = 6;
/// Longest wait between attempts.
pub(crate) const RETRY_CAP_MS: u64 = 300_000;
/// How long a signed acknowledgement link stays valid.
pub(crate) const LINK_TTL_SECS: i64 = 7 * 86_400;
pub(crate) const DEFAULT_PAGERDUTY_URL: &str = "https://events.pagerduty.com/v2/enqueue";

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(default)
}

impl Config {
    fn from_env() -> Config {
        Config {
            eval_interval: Duration::from_millis(
                env_u64("WARDEN_ALERTING_EVAL_INTERVAL_MS", 10_000).max(50),
            ),
            tick: Duration::from_millis(env_u64("WARDEN_ALERTING_TICK_MS", 1000).max(20)),
            retry_base_ms: env_u64("WARDEN_ALERTING_RETRY_BASE_MS", 2000).max(1),
            minute_secs: env_u64("WARDEN_ALERTING_MINUTE_SECS", 60).clamp(1, 60) as i64,
            pagerduty_url: match std::env::var("WARDEN_PAGERDUTY_EVENTS_URL") {
                Ok(u) if !u.trim().is_empty() => {
                    if outbound_url_ok(&u) {
                        u.trim().to_owned()
                    } else {
                        tracing::error!(
                            "WARDEN_PAGERDUTY_EVENTS_URL must be https:// (plain http:// only to \
                             a loopback address); using {DEFAULT_PAGERDUTY_URL}"
                        );
                        DEFAULT_PAGERDUTY_URL.to_owned()
                    }
                }
                _ => DEFAULT_PAGERDUTY_URL.to_owned(),
            },
            public_url: std::env::var("WARDEN_PUBLIC_URL")
                .ok()
                .filter(|s| !s.trim().is_empty())
                .unwrap_or_else(|| "https://127.0.0.1:8443".to_owned())
                .trim_end_matches('/')
                .to_owned(),
            ca_file: std::env::var_os("WARDEN_ALERTING_CA_FILE")
                .filter(|s| !s.is_empty())
                .map(Into::into),
        }
    }
}

/// Outbound URLs: `https://`, or plain `http://` only to a loopback address (local relays,
/// test receivers), so a credential never crosses a network in clear text.
pub(crate) fn outbound_url_ok(s: &str) -> bool {
    let Ok(u) = reqwest::Url::parse(s.trim()) else {
        return false;
    };
    let host = u.host_str().unwrap_or_default();
    let loopback = host.eq_ignore_ascii_case("localhost")
        || host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback());
    match u.scheme() {
        "https" => !host.is_empty(),
        "http" => loopback,
        _ => false,
    }
}

/// Shared by the API handlers and the background tasks.
pub(crate) struct Inner {
    pub(crate) db: Mutex<rusqlite::Connection>,
    pub(crate) store: Arc<warden_store::Store>,
    pub(crate) cfg: Config,
    /// HMAC key of acknowledgement links (kept sealed in the database).
    pub(crate) link_key: ring::hmac::Key,
    pub(crate) http: reqwest::Client,
    /// Wakes the delivery loop when rows are queued.
    pub(crate) wake: tokio::sync::Notify,
    pub(crate) tx: tokio::sync::mpsc::UnboundedSender<Notification>,
}

/// Monitors, channels, escalation policies, the delivery log.
pub(crate) struct State {
    pub(crate) inner: Arc<Inner>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Drop for State {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

fn io_err(path: &std::path::Path, e: impl std::fmt::Display) -> ServerError {
    ServerError::Io {
        path: path.to_owned(),
        source: std::io::Error::other(e.to_string()),
    }
}

/// The outbound client: TLS verified against the system bundle (plus an optional CA file),
/// 15 s timeout (Datadog's webhook timeout), no redirects, no proxies from the environment.
fn http_client(cfg: &Config) -> Result<reqwest::Client, String> {
    let mut b = reqwest::Client::builder()
        .use_rustls_tls()
        .tls_built_in_root_certs(false)
        .timeout(Duration::from_secs(15))
        .connect_timeout(Duration::from_secs(10))
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
        .user_agent(concat!("warden-alerting/", env!("CARGO_PKG_VERSION")));
    let mut files = vec![std::path::PathBuf::from(
        "/etc/ssl/certs/ca-certificates.crt",
    )];
    files.extend(cfg.ca_file.clone());
    for f in files {
        match std::fs::read(&f) {
            Ok(pem) => match reqwest::Certificate::from_pem_bundle(&pem) {
                Ok(certs) => {
                    for c in certs {
                        b = b.add_root_certificate(c);
                    }
                }
                Err(e) => tracing::warn!(file = %f.display(), error = %e, "CA bundle unreadable"),
            },
            Err(e) => tracing::warn!(file = %f.display(), error = %e, "no CA bundle"),
        }
    }
    b.build().map_err(|e| e.to_string())
}

impl State {
    pub(crate) fn open(ctx: &crate::OpenCtx<'_>) -> Result<State, ServerError> {
        let cfg = Config::from_env();
        let path = ctx.data_dir.join("alerting.db");
        let conn = db::open(&path).map_err(|e| io_err(&path, e))?;
        let link_key = db::link_key(&conn, ctx.store).map_err(|e| io_err(&path, e))?;
        let http = http_client(&cfg).map_err(|e| io_err(&path, e))?;
        let rt = tokio::runtime::Handle::try_current()
            .map_err(|e| io_err(&path, format!("alerting needs a tokio runtime: {e}")))?;
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        let inner = Arc::new(Inner {
            db: Mutex::new(conn),
            store: ctx.store.clone(),
            cfg,
            link_key,
            http,
            wake: tokio::sync::Notify::new(),
            tx,
        });
        let tasks = vec![
            rt.spawn(worker::notifications(inner.clone(), rx)),
            rt.spawn(worker::deliveries(inner.clone())),
            rt.spawn(worker::escalations(inner.clone())),
            rt.spawn(worker::monitors(inner.clone())),
        ];
        Ok(State { inner, tasks })
    }

    /// Queues `n` for delivery; never blocks.
    pub(crate) fn notify(&self, n: Notification) {
        if self.inner.tx.send(n).is_err() {
            tracing::error!("alerting worker stopped; notification dropped");
        }
    }
}

/// True for the paths this module answers.
pub(crate) fn handles(path: &str) -> bool {
    path == "/api/v1/monitor"
        || path.starts_with("/api/v1/monitor/")
        || path.starts_with("/api/v1/integration/webhooks/configuration/webhooks")
        || path.starts_with("/api/v1/integration/pagerduty/configuration/services")
        || path.starts_with("/api/v2/warden/integrations/")
        || path.starts_with("/api/v2/warden/escalation_policies")
        || path.starts_with("/api/v2/warden/alerts")
        || path.starts_with("/api/v2/warden/notifications/")
}

pub(crate) type Resp = Result<Response<Full<Bytes>>, ApiError>;
pub(crate) type Req = Request<Incoming>;
pub(crate) type App = Arc<AppState>;

pub(crate) fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// `2023-01-09T10:07:16.513000+00:00` (Datadog's `created`/`modified` form).
pub(crate) fn iso_ms(ms: i64) -> String {
    let s = warden_alerting::time::rfc3339(ms.div_euclid(1000));
    format!(
        "{}.{:03}000+00:00",
        s.trim_end_matches('Z'),
        ms.rem_euclid(1000)
    )
}

/// Percent-encodes a path segment or query value.
pub(crate) fn pct(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                out.push(b as char)
            }
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    if s.len() % 2 != 0 {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

impl Inner {
    fn link_msg(org: u64, dedup_key: &str, exp: i64) -> String {
        format!("warden-ack\n{org}\n{dedup_key}\n{exp}")
    }

    /// The signed acknowledgement link of an alert.
    pub(crate) fn ack_link(&self, org: u64, dedup_key: &str, now: i64) -> String {
        let exp = now + LINK_TTL_SECS;
        let tag = ring::hmac::sign(
            &self.link_key,
            Self::link_msg(org, dedup_key, exp).as_bytes(),
        );
        format!(
            "{}/api/v2/warden/alerts/{}/ack?org={org}&exp={exp}&sig={}",
            self.cfg.public_url,
            pct(dedup_key),
            hex(tag.as_ref())
        )
    }

    /// Checks a link's signature (constant time) and expiry.
    pub(crate) fn verify_link(
        &self,
        org: u64,
        dedup_key: &str,
        exp: i64,
        sig: &str,
        now: i64,
    ) -> Result<(), &'static str> {
        let sig = unhex(sig).ok_or("malformed signature")?;
        ring::hmac::verify(
            &self.link_key,
            Self::link_msg(org, dedup_key, exp).as_bytes(),
            &sig,
        )
        .map_err(|_| "bad signature")?;
        if now > exp {
            return Err("link expired");
        }
        Ok(())
    }
}
