//! The denylist: blocked IPs and users with an expiry (issues #5 and #6).
//!
//! Owner: the app-protection work. Stub. It will hold `block`/`unblock` (called by the API and
//! by detection-rule actions `block_ip`/`block_user`) and serve the list that agents pull and
//! hand to protected apps as `rules_data`.

// Stub until its issue lands: the interface exists so the modules can be built in parallel.
#![allow(dead_code)]

use std::sync::Arc;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::{Request, Response};

use crate::{ApiError, AppState, ServerError};

/// Denylist state.
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

/// What a denylist entry blocks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Target {
    Ip,
    User,
}

impl State {
    /// Blocks `value` for `org` until `expires_at` (UNIX seconds; `None` = until unblocked).
    pub(crate) fn block(
        &self,
        org: u64,
        target: Target,
        value: &str,
        expires_at: Option<i64>,
        reason: &str,
    ) -> Result<(), ServerError> {
        tracing::info!(
            org,
            ?target,
            value,
            ?expires_at,
            reason,
            "block (denylist not built yet)"
        );
        Ok(())
    }
}
