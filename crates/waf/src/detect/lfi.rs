//! LFI stub.
use super::Found;
pub(crate) fn check(_path: &str, _param: &str) -> Option<Found> {
    None
}
