//! Processors (derived addresses and attributes).
use crate::config::ScannerSpec;
use serde_json::Value;
use std::sync::Arc;

pub(crate) fn generate(
    _generator: &str,
    _args: &[(&str, Option<Arc<Value>>)],
    _scanners: &[Arc<ScannerSpec>],
    _flags: &Option<Arc<Value>>,
) -> Option<Value> {
    None
}
