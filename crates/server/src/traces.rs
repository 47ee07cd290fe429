//! Trace intake and the security-event store (issue #5).
//!
//! Owner: the trace-intake work. Stub: routes nothing yet. When it lands, spans that carry
//! security data are flattened into [`warden_model::SecurityEvent`], persisted durably and
//! sealed (`Store::seal_record`), and only then handed to `state.security.ingest`.

// Stub until its issue lands: the interface exists so the modules can be built in parallel.
#![allow(dead_code)]

use std::sync::Arc;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::{Request, Response};

use crate::{ApiError, AppState, ServerError};

/// Trace intake state (the security-event log).
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
