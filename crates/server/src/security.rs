//! Security monitoring: detection rules over security events, signals, their API (issue #6).
//!
//! Owner: the detection work. Stub: `ingest` drops events until the rules engine lands.

// Stub until its issue lands: the interface exists so the modules can be built in parallel.
#![allow(dead_code)]

use std::sync::Arc;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::{Request, Response};

use crate::{ApiError, AppState, ServerError};

/// Rules, signals and the engine's state.
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

impl State {
    /// Feeds durably stored security events of `org` to the detection rules. Called by the
    /// trace intake after the events are persisted; must not block (queue and return).
    pub(crate) fn ingest(&self, org: u64, events: &[warden_model::SecurityEvent]) {
        tracing::debug!(
            org,
            n = events.len(),
            "security events (rules engine not built yet)"
        );
    }
}
