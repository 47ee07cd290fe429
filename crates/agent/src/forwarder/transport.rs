//! HTTPS transport to the intake.
//!
//! Why a hand-built rustls config: the agent must never fail open. Trust comes from exactly one
//! place (the configured `tls_ca_file`, else the system bundle), protocol versions follow
//! `min_tls_version`, and there is no switch that disables verification. A certificate problem
//! is an ordinary *retryable* send error: payloads stay queued until the operator fixes the
//! trust, they are never sent over an unverified connection and never silently dropped.
//! Plain `http://` is possible only with `allow_insecure_http` and is announced with a warning
//! at every start.

use std::io::BufReader;

use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use reqwest::header::{HeaderMap, HeaderValue};

use super::ForwarderError;
use super::serialize::{AGENT_PAYLOAD_VERSION, Payload, content_encoding};
use crate::config::{AgentConfig, MinTlsVersion};

/// System CA bundle used when no `tls_ca_file` is configured.
const SYSTEM_BUNDLE: &str = "/etc/ssl/certs/ca-certificates.crt";
const VERSION: &str = env!("CARGO_PKG_VERSION");

/// How one send attempt ended.
#[derive(Debug)]
pub(crate) enum Outcome {
    /// 2xx.
    Sent(u16),
    /// 400 / 403 / 413: the intake will never accept this payload.
    Rejected(u16, String),
    /// Any other status or a network/TLS/timeout error.
    Retry(String),
}

/// Sends payloads to one intake.
#[derive(Clone, Debug)]
pub(crate) struct Transport {
    client: reqwest::Client,
    base: String,
    api_key: HeaderValue,
}

/// Reads every certificate of a PEM bundle into `roots`; errors name the file.
fn load_roots(path: &Path, roots: &mut rustls::RootCertStore) -> Result<usize, ForwarderError> {
    let file = std::fs::File::open(path).map_err(|source| ForwarderError::CaFile {
        path: path.to_owned(),
        source,
    })?;
    let mut added = 0;
    for cert in CertificateDer::pem_reader_iter(BufReader::new(file)) {
        let cert = cert.map_err(|e| ForwarderError::CaFile {
            path: path.to_owned(),
            source: std::io::Error::other(e.to_string()),
        })?;
        // Skip individual unusable certificates in a system bundle, like every TLS stack does.
        if roots.add(cert).is_ok() {
            added += 1;
        }
    }
    if added == 0 {
        return Err(ForwarderError::NoCertificates {
            path: path.to_owned(),
        });
    }
    Ok(added)
}

/// Builds the client TLS configuration from the agent configuration.
pub(crate) fn tls_config(cfg: &AgentConfig) -> Result<rustls::ClientConfig, ForwarderError> {
    let mut roots = rustls::RootCertStore::empty();
    match &cfg.tls_ca_file {
        Some(p) => {
            load_roots(p, &mut roots)?;
        }
        None => {
            load_roots(Path::new(SYSTEM_BUNDLE), &mut roots)?;
        }
    }
    let versions: &[&'static rustls::SupportedProtocolVersion] = match cfg.min_tls_version {
        MinTlsVersion::Tls12 => &[&rustls::version::TLS13, &rustls::version::TLS12],
        MinTlsVersion::Tls13 => &[&rustls::version::TLS13],
    };
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(versions)
        .map_err(ForwarderError::Tls)?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(config)
}

/// Renders an error with its whole `source()` chain (reqwest hides the TLS reason there).
pub(crate) fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        let m = c.to_string();
        if !s.contains(&m) {
            s.push_str(": ");
            s.push_str(&m);
        }
        cur = c.source();
    }
    s
}

impl Transport {
    pub(crate) fn new(cfg: &AgentConfig) -> Result<Self, ForwarderError> {
        let url = cfg.server_url.trim_end_matches('/').to_owned();
        let plaintext = if url.starts_with("https://") {
            false
        } else if url.starts_with("http://") {
            if !cfg.allow_insecure_http {
                return Err(ForwarderError::InsecureUrl { url });
            }
            true
        } else {
            return Err(ForwarderError::InvalidUrl {
                url,
                reason: "must start with https:// (or http:// with allow_insecure_http)".into(),
            });
        };
        reqwest::Url::parse(&url).map_err(|e| ForwarderError::InvalidUrl {
            url: url.clone(),
            reason: e.to_string(),
        })?;
        if plaintext {
            tracing::warn!(
                server_url = %url,
                "SENDING METRICS WITHOUT TLS: allow_insecure_http is set and server_url is http://; \
                 payloads and the API key travel in clear text"
            );
        }
        let mut api_key =
            HeaderValue::from_str(&cfg.api_key).map_err(|_| ForwarderError::InvalidApiKey)?;
        api_key.set_sensitive(true);
        let mut headers = HeaderMap::new();
        headers.insert("DD-Agent-Version", HeaderValue::from_static(VERSION));
        let timeout = Duration::from_secs(cfg.forwarder_timeout.max(1));
        let client = reqwest::Client::builder()
            .use_preconfigured_tls(tls_config(cfg)?)
            .https_only(!plaintext)
            .user_agent(format!("warden-agent/{VERSION}"))
            .default_headers(headers)
            .timeout(timeout)
            .connect_timeout(timeout)
            .pool_idle_timeout(Duration::from_secs(30))
            // Proxies are not configurable; never pick one up from the environment.
            .no_proxy()
            .build()
            .map_err(|e| ForwarderError::Client(error_chain(&e)))?;
        Ok(Self {
            client,
            base: url,
            api_key,
        })
    }

    /// One attempt to deliver `p`.
    pub(crate) async fn send(&self, p: &Payload) -> Outcome {
        let mut req = self
            .client
            .post(format!("{}{}", self.base, p.endpoint.path()))
            .header("DD-API-KEY", self.api_key.clone())
            .header("Content-Type", p.endpoint.content_type())
            .header("Content-Encoding", content_encoding(p.encoding))
            .body(p.body.clone());
        if p.endpoint.is_protobuf() {
            req = req.header("DD-Agent-Payload", AGENT_PAYLOAD_VERSION);
        }
        let resp = match req.send().await {
            Ok(r) => r,
            Err(e) => return Outcome::Retry(error_chain(&e)),
        };
        let status = resp.status().as_u16();
        if resp.status().is_success() {
            return Outcome::Sent(status);
        }
        let body = resp.text().await.unwrap_or_default();
        let mut body: String = body.chars().take(200).collect();
        if body.is_empty() {
            body = "(empty body)".into();
        }
        match status {
            400 => Outcome::Rejected(status, format!("bad request: {body}")),
            403 => Outcome::Rejected(status, format!("API key invalid: {body}")),
            413 => Outcome::Rejected(status, format!("payload too large: {body}")),
            _ => Outcome::Retry(format!("HTTP {status}: {body}")),
        }
    }
}
