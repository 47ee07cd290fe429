//! Built-in HTTP check (Datadog `http_check`).
//!
//! Emits `http.can_connect` (OK, or CRITICAL with the reason), `network.http.can_connect`
//! (1/0), `network.http.response_time` (seconds until the response headers arrived, redirects
//! followed) and, for `https://` URLs, `http.ssl.days_left` / `http.ssl.seconds_left` plus the
//! `http.ssl_cert` service check (CRITICAL below `days_critical`, WARNING below
//! `days_warning`, CRITICAL with the reason when the certificate does not verify).
//!
//! Certificate expiry: reqwest's `tls_info(true)` hands over the verified peer certificate's
//! DER, and [`super::x509::not_after`] reads `notAfter` from it — no second TLS handshake and
//! no ASN.1 dependency. Trust roots: the system bundle (first readable of
//! [`SYSTEM_CA_BUNDLES`]) plus the check's `ca_file`; TLS 1.2 is the minimum; certificate
//! verification is never disabled. Proxies from the environment are ignored (a health probe
//! must measure the target, not a proxy), and connections are not pooled between runs so every
//! run measures a fresh connect.

use std::time::{Duration, Instant};

use warden_model::{CheckStatus, MetricKind};

use super::{CheckKind, CheckOutput, Ctx, error_chain, unix_now, x509};
use crate::config::HttpCheckConfig;

/// Where the system's CA bundle is looked for (Debian/Ubuntu/Alpine, RHEL/Fedora, openSUSE,
/// macOS-style), first readable one wins.
pub(crate) const SYSTEM_CA_BUNDLES: &[&str] = &[
    "/etc/ssl/certs/ca-certificates.crt",
    "/etc/pki/tls/certs/ca-bundle.crt",
    "/etc/ssl/ca-bundle.pem",
    "/etc/ssl/cert.pem",
];

#[derive(Debug)]
pub(crate) struct HttpCheck {
    pub(crate) cfg: HttpCheckConfig,
    client: Option<reqwest::Client>,
}

impl HttpCheck {
    pub(crate) fn new(cfg: HttpCheckConfig) -> Self {
        Self { cfg, client: None }
    }

    fn build_client(&self) -> Result<reqwest::Client, String> {
        let timeout = Duration::from_secs(self.cfg.timeout.max(1));
        let mut b = reqwest::Client::builder()
            .use_rustls_tls()
            .tls_info(true)
            .min_tls_version(reqwest::tls::Version::TLS_1_2)
            .timeout(timeout)
            .connect_timeout(timeout)
            .pool_max_idle_per_host(0)
            .no_proxy()
            .user_agent(concat!("warden-agent/", env!("CARGO_PKG_VERSION")));
        for path in SYSTEM_CA_BUNDLES {
            let Ok(pem) = std::fs::read(path) else {
                continue;
            };
            match reqwest::Certificate::from_pem_bundle(&pem) {
                Ok(certs) => {
                    for c in certs {
                        b = b.add_root_certificate(c);
                    }
                    break;
                }
                Err(e) => tracing::warn!(path, error = %e, "system CA bundle unreadable"),
            }
        }
        if let Some(ca) = &self.cfg.ca_file {
            let pem = std::fs::read(ca)
                .map_err(|e| format!("cannot read ca_file {}: {e}", ca.display()))?;
            let certs = reqwest::Certificate::from_pem_bundle(&pem)
                .map_err(|e| format!("invalid PEM in ca_file {}: {e}", ca.display()))?;
            if certs.is_empty() {
                return Err(format!("no certificate in ca_file {}", ca.display()));
            }
            for c in certs {
                b = b.add_root_certificate(c);
            }
        }
        b.build()
            .map_err(|e| format!("cannot build HTTP client: {}", error_chain(&e)))
    }

    pub(crate) async fn run(&mut self, ctx: &Ctx) -> CheckOutput {
        let cfg = &self.cfg;
        let interval = Duration::from_secs(cfg.interval.max(1));
        let timeout = Duration::from_secs(cfg.timeout.max(1));
        let tags = ctx.tags_with(
            [format!("url:{}", cfg.url), format!("instance:{}", cfg.name)]
                .into_iter()
                .chain(cfg.tags.iter().cloned()),
        );
        let is_https = cfg.url.to_ascii_lowercase().starts_with("https://");
        let mut out = CheckOutput {
            name: cfg.name.clone(),
            kind: CheckKind::Http,
            status: CheckStatus::Critical,
            message: String::new(),
            error: None,
            series: Vec::new(),
            service_checks: Vec::new(),
            timestamp: 0,
            duration_ms: 0,
        };
        let client = match &self.client {
            Some(c) => c.clone(),
            None => match self.build_client() {
                Ok(c) => {
                    self.client = Some(c.clone());
                    c
                }
                Err(e) => {
                    let now = unix_now();
                    out.message = e.clone();
                    out.error = Some(e);
                    out.timestamp = now;
                    out.service_checks.push(ctx.service_check(
                        "http.can_connect",
                        CheckStatus::Critical,
                        &tags,
                        &out.message,
                        now,
                    ));
                    return out;
                }
            },
        };
        let cfg = &self.cfg;
        let start = Instant::now();
        // The outer timeout is a safety net; reqwest's own timeout normally fires first.
        let res = tokio::time::timeout(
            timeout + Duration::from_millis(500),
            client.get(&cfg.url).send(),
        )
        .await;
        let elapsed = start.elapsed().as_secs_f64();
        let now = unix_now();
        out.timestamp = now;
        let mut ssl: Option<(CheckStatus, String, Option<f64>)> = None;
        match res {
            Err(_) => {
                out.message = format!("{} timed out after {}s", cfg.url, timeout.as_secs());
            }
            Ok(Err(e)) if e.is_timeout() => {
                out.message = format!("{} timed out after {}s", cfg.url, timeout.as_secs());
            }
            Ok(Err(e)) => {
                let chain = error_chain(&e);
                out.message = format!("request to {} failed: {chain}", cfg.url);
                if is_https && is_tls_error(&e) {
                    ssl = Some((
                        CheckStatus::Critical,
                        format!("TLS/certificate error: {chain}"),
                        None,
                    ));
                }
            }
            Ok(Ok(resp)) => {
                let status = resp.status();
                let ok = match cfg.expected_status {
                    Some(want) => status.as_u16() == want,
                    None => status.as_u16() < 400,
                };
                let expectation = cfg
                    .expected_status
                    .map(|s| s.to_string())
                    .unwrap_or_else(|| "1xx, 2xx or 3xx".to_owned());
                if ok {
                    out.status = CheckStatus::Ok;
                    out.message = format!("HTTP {status} in {elapsed:.3}s");
                } else {
                    out.message =
                        format!("HTTP {status} from {} (expected {expectation})", resp.url());
                }
                out.series.push(ctx.series(
                    "network.http.response_time",
                    MetricKind::Gauge,
                    Some("second"),
                    elapsed,
                    &tags,
                    now,
                    interval,
                ));
                if is_https {
                    ssl = Some(cert_status(cfg, &resp, now));
                }
            }
        }
        let up = out.status == CheckStatus::Ok;
        out.series.push(ctx.series(
            "network.http.can_connect",
            MetricKind::Gauge,
            None,
            f64::from(u8::from(up)),
            &tags,
            now,
            interval,
        ));
        out.service_checks.push(ctx.service_check(
            "http.can_connect",
            out.status,
            &tags,
            &out.message,
            now,
        ));
        if let Some((status, message, seconds_left)) = ssl {
            if let Some(secs) = seconds_left {
                out.series.push(ctx.series(
                    "http.ssl.days_left",
                    MetricKind::Gauge,
                    Some("day"),
                    secs / 86_400.0,
                    &tags,
                    now,
                    interval,
                ));
                out.series.push(ctx.series(
                    "http.ssl.seconds_left",
                    MetricKind::Gauge,
                    Some("second"),
                    secs,
                    &tags,
                    now,
                    interval,
                ));
            }
            out.service_checks.push(ctx.service_check(
                "http.ssl_cert",
                status,
                &tags,
                &message,
                now,
            ));
        }
        out
    }
}

/// `(status, message, seconds left)` of the peer certificate of an HTTPS response.
fn cert_status(
    cfg: &HttpCheckConfig,
    resp: &reqwest::Response,
    now: i64,
) -> (CheckStatus, String, Option<f64>) {
    let Some(der) = resp
        .extensions()
        .get::<reqwest::tls::TlsInfo>()
        .and_then(|i| i.peer_certificate())
    else {
        return (
            CheckStatus::Unknown,
            "the TLS connection exposed no peer certificate".to_owned(),
            None,
        );
    };
    match x509::not_after(der) {
        Err(e) => (
            CheckStatus::Unknown,
            format!("cannot read the certificate expiry: {e}"),
            None,
        ),
        Ok(not_after) => {
            let secs = (not_after - now) as f64;
            let days = secs / 86_400.0;
            let status = if days < cfg.days_critical as f64 {
                CheckStatus::Critical
            } else if days < cfg.days_warning as f64 {
                CheckStatus::Warning
            } else {
                CheckStatus::Ok
            };
            let msg = if secs < 0.0 {
                format!("certificate expired {:.1} days ago", -days)
            } else {
                format!(
                    "certificate expires in {days:.1} days (warning < {}, critical < {})",
                    cfg.days_warning, cfg.days_critical
                )
            };
            (status, msg, Some(secs))
        }
    }
}

/// Whether a request error came from TLS (handshake, certificate) rather than from TCP/DNS.
fn is_tls_error(err: &reqwest::Error) -> bool {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(err);
    while let Some(e) = cur {
        if e.downcast_ref::<rustls::Error>().is_some() {
            return true;
        }
        // `io::Error::source` skips the wrapped error itself (tokio-rustls wraps the
        // `rustls::Error` in an `io::Error`, and hyper wraps that again), so descend by hand.
        cur = match e
            .downcast_ref::<std::io::Error>()
            .and_then(|io| io.get_ref())
        {
            Some(inner) => Some(inner),
            None => e.source(),
        };
    }
    false
}
