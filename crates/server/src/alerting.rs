//! Monitors, notification channels (webhook, PagerDuty, Slack), escalation (issue #6).
//!
//! Owner: the alerting work. Stub: `notify` only logs until channels land.

// Stub until its issue lands: the interface exists so the modules can be built in parallel.
#![allow(dead_code)]

use std::sync::Arc;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::{Request, Response};

use crate::{ApiError, AppState, ServerError};

/// Monitors, channels, escalation policies, the delivery log.
pub(crate) struct State {}

impl State {
    pub(crate) fn open(_ctx: &crate::OpenCtx<'_>) -> Result<State, ServerError> {
        Ok(State {})
    }
}

/// True for the paths this module answers.
pub(crate) fn handles(_path: &str) -> bool {
    false
}

pub(crate) async fn route(
    _state: &Arc<AppState>,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, ApiError> {
    Err(ApiError::new(404, format!("no route {}", req.uri().path())))
}

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
    pub(crate) vars: std::collections::BTreeMap<String, String>,
}

impl State {
    /// Queues `n` for delivery; never blocks.
    pub(crate) fn notify(&self, n: Notification) {
        tracing::info!(org = n.org, key = %n.dedup_key, "notification (channels not built yet)");
    }
}
