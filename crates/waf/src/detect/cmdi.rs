//! Cmdi stub.
use super::Found;
use serde_json::Value;
pub(crate) struct Prepared;
pub(crate) fn prepare(_v: &Value) -> Option<Prepared> {
    Some(Prepared)
}
pub(crate) fn check(_p: &Prepared, _param: &str) -> Option<Found> {
    None
}
