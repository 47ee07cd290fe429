//! Structured RASP detectors (`lfi_detector`, `ssrf_detector`, `sqli_detector`,
//! `shi_detector`, `cmdi_detector`).
//!
//! A detector compares a resource the application is about to use (a file path, URL, SQL
//! statement, shell command) with user parameters: it flags a parameter that occurs in the
//! resource *and* changes its structure (escapes a directory, changes the authority, adds SQL
//! or shell tokens). Each detector prepares the resource once and then checks every string
//! parameter leaf.

pub(crate) mod cmdi;
pub(crate) mod lfi;
pub(crate) mod shell;
pub(crate) mod shell_arg;
pub(crate) mod sql;
pub(crate) mod sqli;
pub(crate) mod ssrf;

use serde_json::{Map, Value};

use crate::config::ConfigError;

pub(crate) fn is_detector(op: &str) -> bool {
    matches!(
        op,
        "lfi_detector" | "ssrf_detector" | "sqli_detector" | "shi_detector" | "cmdi_detector"
    )
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Lfi,
    Ssrf,
    Sqli,
    Shi,
    Cmdi,
}

#[derive(Debug)]
pub(crate) struct DetectorSpec {
    pub(crate) kind: Kind,
    pub(crate) ssrf: Option<ssrf::SsrfConfig>,
}

/// A detection: the highlight and, for SQL, the obfuscated statement reported as resource.
#[derive(Debug, Clone)]
pub(crate) struct Found {
    pub(crate) highlight: String,
    pub(crate) resource_value: Option<String>,
}

/// Resource prepared once per evaluation (tokenised statement, parsed URL, ...).
pub(crate) enum Prepared<'v> {
    Lfi(&'v str),
    Ssrf(ssrf::ParsedUrl<'v>, &'v str),
    Sqli(sqli::Prepared<'v>),
    Shi(shell::Prepared),
    Cmdi(cmdi::Prepared),
}

impl DetectorSpec {
    pub(crate) fn parse(op: &str, params: &Map<String, Value>) -> Result<Self, ConfigError> {
        let kind = match op {
            "lfi_detector" => Kind::Lfi,
            "ssrf_detector" => Kind::Ssrf,
            "sqli_detector" => Kind::Sqli,
            "shi_detector" => Kind::Shi,
            "cmdi_detector" => Kind::Cmdi,
            _ => return Err(ConfigError::new(format!("unknown detector {op}"))),
        };
        let ssrf = if kind == Kind::Ssrf {
            Some(ssrf::SsrfConfig::parse(params)?)
        } else {
            None
        };
        Ok(DetectorSpec { kind, ssrf })
    }

    pub(crate) fn name(&self) -> &'static str {
        match self.kind {
            Kind::Lfi => "lfi_detector",
            Kind::Ssrf => "ssrf_detector",
            Kind::Sqli => "sqli_detector",
            Kind::Shi => "shi_detector",
            Kind::Cmdi => "cmdi_detector",
        }
    }

    pub(crate) fn arg_names(&self) -> &'static [&'static str] {
        match self.kind {
            Kind::Sqli => &["resource", "params", "db_type"],
            _ => &["resource", "params"],
        }
    }

    pub(crate) fn required(&self, name: &str) -> bool {
        name != "db_type"
    }

    /// Prepare the resource; `None` when it has the wrong shape for this detector.
    pub(crate) fn prepare<'v>(
        &self,
        resource: &'v Value,
        db_type: Option<&str>,
    ) -> Option<Prepared<'v>> {
        match self.kind {
            Kind::Lfi => resource.as_str().map(Prepared::Lfi),
            Kind::Ssrf => {
                let s = resource.as_str()?;
                Some(Prepared::Ssrf(ssrf::parse_url(s)?, s))
            }
            Kind::Sqli => Some(Prepared::Sqli(sqli::prepare(resource.as_str()?, db_type))),
            Kind::Shi => Some(Prepared::Shi(shell::prepare(resource)?)),
            Kind::Cmdi => Some(Prepared::Cmdi(cmdi::prepare(resource)?)),
        }
    }

    pub(crate) fn check(&self, p: &Prepared<'_>, param: &str) -> Option<Found> {
        match p {
            Prepared::Lfi(path) => lfi::check(path, param),
            Prepared::Ssrf(url, raw) => ssrf::check(self.ssrf.as_ref()?, url, raw, param),
            Prepared::Sqli(sp) => sqli::check(sp, param),
            Prepared::Shi(sp) => shell::check(sp, param),
            Prepared::Cmdi(cp) => cmdi::check(cp, param),
        }
    }

    /// Checks that do not need a user parameter (ssrf `enforce-policy-without-injection`).
    pub(crate) fn check_without_param(&self, p: &Prepared<'_>) -> Option<Found> {
        match p {
            Prepared::Ssrf(url, raw) => ssrf::check_policy_only(self.ssrf.as_ref()?, url, raw),
            _ => None,
        }
    }
}
