//! Query endpoints (placeholder until warden-query lands).

use super::*;

pub(crate) async fn v1(
    _state: &Arc<AppState>,
    _org: u64,
    _uri: &hyper::Uri,
) -> Result<Response<Full<Bytes>>, ApiError> {
    Err(ApiError::new(501, "not yet"))
}

pub(crate) async fn v2(
    _state: &Arc<AppState>,
    _org: u64,
    _raw: Vec<u8>,
) -> Result<Response<Full<Bytes>>, ApiError> {
    Err(ApiError::new(501, "not yet"))
}
