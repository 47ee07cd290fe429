//! SSRF stub.
use super::Found;
use crate::config::ConfigError;
use serde_json::{Map, Value};
#[derive(Debug)]
pub(crate) struct SsrfConfig;
impl SsrfConfig {
    pub(crate) fn parse(_p: &Map<String, Value>) -> Result<Self, ConfigError> {
        Ok(SsrfConfig)
    }
}
pub(crate) struct ParsedUrl<'a>(&'a str);
pub(crate) fn parse_url(s: &str) -> Option<ParsedUrl<'_>> {
    Some(ParsedUrl(s))
}
pub(crate) fn check(_c: &SsrfConfig, _u: &ParsedUrl<'_>, _raw: &str, _p: &str) -> Option<Found> {
    None
}
pub(crate) fn check_policy_only(_c: &SsrfConfig, _u: &ParsedUrl<'_>, _raw: &str) -> Option<Found> {
    None
}
