//! The agent's local command API: HTTPS on a loopback address, every request authenticated
//! with the bearer token from the `auth_token` file. The `warden agent status|config|check|
//! flare|gui` commands are its only intended clients.
//!
//! Security model (`specs/agent.md` §7, hardened):
//!
//! * loopback only — `cmd_host` must be a loopback address (config error otherwise), and the
//!   `Host` header must name a loopback host (DNS-rebinding guard);
//! * TLS with a certificate generated at every start; the key never touches the disk, the
//!   certificate is written to `<run_path>/ipc_cert.pem` and pinned by the CLI;
//! * authentication happens **before** routing, so no path — known or not — answers anything
//!   but 401/403 without the token: missing or non-Bearer `Authorization` → 401 with
//!   `WWW-Authenticate: Bearer realm="Warden Agent"`, wrong token → 403, compared in constant
//!   time;
//! * everything returned passes through the scrubber (status, config, check output, flare),
//!   because check output and configuration can carry credentials.
//!
//! The routes live in one table, [`ROUTES`], which the dispatcher uses and tests enumerate.

pub mod client;
mod flare;
pub(crate) mod http;
pub mod logs;
pub mod tls;
pub mod token;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use hyper::body::Incoming;
use hyper::header::HeaderValue;
use hyper::{Request, StatusCode};
use serde::Serialize;
use serde_json::{Value, json};
use tokio::sync::watch;
use warden_scrubber::Scrubber;

use crate::checks::{CheckRegistry, check_names, run_once};
use crate::config::AgentConfig;
use crate::gui::GuiState;
use crate::telemetry::Telemetry;
use http::Resp;

pub use logs::{LogRing, RingTee};
pub use token::AuthToken;

/// File (in `run_path`) holding the API certificate the CLI pins.
pub const CERT_FILE: &str = "ipc_cert.pem";
/// File (in `run_path`) holding the address the API actually listens on (`127.0.0.1:5001`).
pub const ENDPOINT_FILE: &str = "ipc_endpoint";
/// The realm in `WWW-Authenticate`.
pub const REALM: &str = "Warden Agent";

/// What a route does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Endpoint {
    Status,
    Config,
    Check,
    Flare,
    GuiIntent,
}

/// One route of the local API.
#[derive(Clone, Copy, Debug)]
pub struct Route {
    pub method: &'static str,
    pub path: &'static str,
    pub endpoint: Endpoint,
    pub about: &'static str,
}

/// Every route the API serves; the dispatcher matches requests against this table only.
pub const ROUTES: &[Route] = &[
    Route {
        method: "GET",
        path: "/agent/status",
        endpoint: Endpoint::Status,
        about: "uptime, forwarder queue, DogStatsD counters, last result of every check (JSON)",
    },
    Route {
        method: "GET",
        path: "/agent/config",
        endpoint: Endpoint::Config,
        about: "effective configuration, scrubbed (YAML)",
    },
    Route {
        method: "POST",
        path: "/agent/check",
        endpoint: Endpoint::Check,
        about: "run one check now: body {\"name\": \"…\"}; returns its output (JSON)",
    },
    Route {
        method: "GET",
        path: "/agent/flare",
        endpoint: Endpoint::Flare,
        about: "a .tar.gz of status, config, recent logs and the checks_d listing, scrubbed",
    },
    Route {
        method: "POST",
        path: "/agent/gui/intent",
        endpoint: Endpoint::GuiIntent,
        about: "a single-use GUI sign-in link (JSON {\"url\": …})",
    },
];

/// Why the local API could not start, or a CLI request failed before reaching it.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error(transparent)]
    Token(#[from] token::TokenError),
    #[error("cannot generate the local API certificate: {0}")]
    Cert(#[from] rcgen::Error),
    #[error("TLS setup failed: {0}")]
    Tls(#[from] rustls::Error),
    #[error("invalid pinned certificate: {0}")]
    BadPin(&'static str),
    #[error("cannot listen on {addr} ({what}): {source}")]
    Bind {
        what: &'static str,
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("cannot write {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("`cmd_host` {0:?} is not a loopback address; refusing to listen on it")]
    NotLoopback(String),
}

/// Everything the API and GUI read from the running agent.
#[derive(Clone)]
pub struct AgentView {
    pub cfg: Arc<AgentConfig>,
    pub telemetry: Arc<Telemetry>,
    pub registry: CheckRegistry,
    pub scrubber: Arc<Scrubber>,
    pub logs: Arc<LogRing>,
    pub started: Instant,
    /// UNIX seconds at start.
    pub started_unix: i64,
}

impl std::fmt::Debug for AgentView {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AgentView").finish_non_exhaustive()
    }
}

/// The running local API (and GUI, when enabled).
pub struct ApiServer {
    /// Where the API listens.
    pub cmd_addr: SocketAddr,
    /// Where the GUI listens, if enabled.
    pub gui_addr: Option<SocketAddr>,
    stop: watch::Sender<bool>,
    tasks: tokio::task::JoinSet<()>,
    run_path: PathBuf,
}

impl std::fmt::Debug for ApiServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiServer")
            .field("cmd_addr", &self.cmd_addr)
            .field("gui_addr", &self.gui_addr)
            .finish_non_exhaustive()
    }
}

/// The address to bind for `cmd_host` (`localhost` means 127.0.0.1: never resolve it through
/// DNS or `/etc/hosts`, which could point elsewhere).
pub fn loopback_ip(host: &str) -> Result<IpAddr, ApiError> {
    if host.eq_ignore_ascii_case("localhost") {
        return Ok(IpAddr::V4(Ipv4Addr::LOCALHOST));
    }
    match host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .parse::<IpAddr>()
    {
        Ok(ip) if ip.is_loopback() => Ok(ip),
        _ => Err(ApiError::NotLoopback(host.to_owned())),
    }
}

impl ApiServer {
    /// Binds the API (and the GUI when `gui_port` is not -1) and starts serving. The caller
    /// has loaded the token (so a bad token file stops the agent before anything listens).
    pub fn start(view: AgentView, token: AuthToken) -> Result<Self, ApiError> {
        let cfg = view.cfg.clone();
        let ip = loopback_ip(&cfg.cmd_host)?;
        let port = u16::try_from(cfg.cmd_port).unwrap_or(0);
        let cmd_addr = SocketAddr::new(ip, port);
        let listener = http::bind(cmd_addr).map_err(|source| ApiError::Bind {
            what: "local API, cmd_port",
            addr: cmd_addr,
            source,
        })?;
        let cmd_addr = listener.local_addr().map_err(|source| ApiError::Bind {
            what: "local API, cmd_port",
            addr: cmd_addr,
            source,
        })?;
        // A busy GUI port costs the GUI only, not the API the CLI needs.
        let gui_listener = if cfg.gui_port >= 0 {
            let addr = SocketAddr::new(ip, u16::try_from(cfg.gui_port).unwrap_or(0));
            match http::bind(addr).and_then(|l| l.local_addr().map(|a| (l, a))) {
                Ok(pair) => Some(pair),
                Err(source) => {
                    let e = ApiError::Bind {
                        what: "GUI, gui_port",
                        addr,
                        source,
                    };
                    tracing::error!(error = %e, "the GUI is disabled");
                    None
                }
            }
        } else {
            None
        };
        let cert = tls::generate()?;
        prepare_run_path(&cfg.run_path)?;
        write_private(&cfg.run_path.join(CERT_FILE), cert.pem.as_bytes())?;
        write_private(
            &cfg.run_path.join(ENDPOINT_FILE),
            format!("{cmd_addr}\n").as_bytes(),
        )?;
        let acceptor = tokio_rustls::TlsAcceptor::from(cert.server.clone());
        let (stop, stopped) = watch::channel(false);
        let mut tasks = tokio::task::JoinSet::new();
        let gui = gui_listener
            .as_ref()
            .map(|(_, addr)| Arc::new(GuiState::new(*addr, view.clone())));
        let api = Arc::new(Api {
            view,
            token,
            port: cmd_addr.port(),
            gui: gui.clone(),
        });
        tasks.spawn(http::serve(
            listener,
            acceptor.clone(),
            move |req| {
                let api = api.clone();
                async move { api.handle(req).await }
            },
            stopped.clone(),
        ));
        let mut gui_addr = None;
        if let (Some((l, addr)), Some(gui)) = (gui_listener, gui) {
            gui_addr = Some(addr);
            tasks.spawn(http::serve(
                l,
                acceptor,
                move |req| {
                    let gui = gui.clone();
                    async move { gui.handle(req).await }
                },
                stopped,
            ));
            tracing::info!(%addr, "agent GUI listening (open it with `warden agent gui`)");
        }
        tracing::info!(%cmd_addr, "local API listening");
        Ok(Self {
            cmd_addr,
            gui_addr,
            stop,
            tasks,
            run_path: cfg.run_path.clone(),
        })
    }

    /// Stops accepting, closes open connections, and removes the endpoint file.
    pub async fn stop(mut self) {
        let _ = self.stop.send(true);
        while self.tasks.join_next().await.is_some() {}
        let _ = std::fs::remove_file(self.run_path.join(ENDPOINT_FILE));
    }
}

/// Creates `run_path` (0700) when missing.
fn prepare_run_path(dir: &Path) -> Result<(), ApiError> {
    use std::os::unix::fs::DirBuilderExt;
    if dir.is_dir() {
        return Ok(());
    }
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|source| ApiError::Write {
            path: dir.to_owned(),
            source,
        })
}

/// Writes a file readable by the agent's user only, replacing it atomically.
fn write_private(path: &Path, data: &[u8]) -> Result<(), ApiError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let tmp = path.with_extension("tmp");
    let res = (|| {
        let _ = std::fs::remove_file(&tmp);
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)?;
        f.write_all(data)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    res.map_err(|source| {
        let _ = std::fs::remove_file(&tmp);
        ApiError::Write {
            path: path.to_owned(),
            source,
        }
    })
}

struct Api {
    view: AgentView,
    token: AuthToken,
    port: u16,
    gui: Option<Arc<GuiState>>,
}

impl Api {
    async fn handle(&self, req: Request<Incoming>) -> Resp {
        let mut resp = self.route(req).await;
        http::harden(&mut resp);
        resp
    }

    async fn route(&self, req: Request<Incoming>) -> Resp {
        if !http::host_is_local(&req, self.port) {
            return http::text(StatusCode::MISDIRECTED_REQUEST, "unexpected Host header\n");
        }
        if let Err(resp) = self.authenticate(&req) {
            return resp;
        }
        let path = req.uri().path().to_owned();
        let Some(route) = ROUTES.iter().find(|r| r.path == path) else {
            return http::json(
                StatusCode::NOT_FOUND,
                &json!({"error": "no such route", "routes": ROUTES.iter().map(|r| format!("{} {}", r.method, r.path)).collect::<Vec<_>>()}),
            );
        };
        if req.method().as_str() != route.method {
            let mut r = http::json(
                StatusCode::METHOD_NOT_ALLOWED,
                &json!({"error": format!("use {}", route.method)}),
            );
            r.headers_mut()
                .insert(hyper::header::ALLOW, HeaderValue::from_static(route.method));
            return r;
        }
        match route.endpoint {
            Endpoint::Status => http::json(StatusCode::OK, &status(&self.view)),
            Endpoint::Config => http::response(
                StatusCode::OK,
                "application/yaml; charset=utf-8",
                config_yaml(&self.view),
            ),
            Endpoint::Check => self.check(req).await,
            Endpoint::Flare => match flare(&self.view) {
                Ok((name, bytes)) => {
                    let mut r = http::response(StatusCode::OK, "application/gzip", bytes);
                    if let Ok(v) =
                        HeaderValue::from_str(&format!("attachment; filename=\"{name}\""))
                    {
                        r.headers_mut()
                            .insert(hyper::header::CONTENT_DISPOSITION, v);
                    }
                    r
                }
                Err(e) => http::json(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    &json!({"error": format!("cannot build the flare: {e}")}),
                ),
            },
            Endpoint::GuiIntent => match &self.gui {
                None => http::json(
                    StatusCode::NOT_FOUND,
                    &json!({"error": if self.view.cfg.gui_port < 0 {
                        "the GUI is disabled (gui_port: -1)"
                    } else {
                        "the GUI is not running: its port could not be bound (see the agent log)"
                    }}),
                ),
                Some(gui) => match gui.new_intent() {
                    Ok(url) => http::json(StatusCode::OK, &json!({ "url": url })),
                    Err(e) => http::json(
                        StatusCode::SERVICE_UNAVAILABLE,
                        &json!({"error": e.to_string()}),
                    ),
                },
            },
        }
    }

    /// 401 without a Bearer credential, 403 with a wrong one.
    #[allow(clippy::result_large_err)]
    fn authenticate(&self, req: &Request<Incoming>) -> Result<(), Resp> {
        let unauthorized = |why: &'static str| {
            let mut r = http::text(StatusCode::UNAUTHORIZED, why);
            r.headers_mut().insert(
                hyper::header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"Warden Agent\""),
            );
            r
        };
        let mut values = req.headers().get_all(hyper::header::AUTHORIZATION).iter();
        let (Some(value), None) = (values.next(), values.next()) else {
            return Err(unauthorized(
                "missing (or repeated) Authorization header; send `Authorization: Bearer <auth_token>`\n",
            ));
        };
        let bytes = value.as_bytes();
        let Some(presented) = bytes
            .get(..7)
            .filter(|p| p.eq_ignore_ascii_case(b"bearer "))
            .map(|_| &bytes[7..])
        else {
            return Err(unauthorized("Authorization must use the Bearer scheme\n"));
        };
        if self.token.matches(presented) {
            Ok(())
        } else {
            Err(http::text(StatusCode::FORBIDDEN, "invalid token\n"))
        }
    }

    async fn check(&self, req: Request<Incoming>) -> Resp {
        let body = match http::read_body(req.into_body()).await {
            Ok(b) => b,
            Err(r) => return r,
        };
        #[derive(serde::Deserialize)]
        struct CheckReq {
            name: String,
        }
        let name = match serde_json::from_slice::<CheckReq>(&body) {
            Ok(r) => r.name,
            Err(e) => {
                return http::json(
                    StatusCode::BAD_REQUEST,
                    &json!({"error": format!("body must be {{\"name\": \"<check>\"}}: {e}")}),
                );
            }
        };
        match run_once(&self.view.cfg, &name).await {
            Ok(out) => {
                let v = check_output_json(&self.view.scrubber, &out);
                http::json(StatusCode::OK, &v)
            }
            Err(e) => {
                let status = match e {
                    crate::checks::CheckError::NotFound { .. } => StatusCode::NOT_FOUND,
                    _ => StatusCode::INTERNAL_SERVER_ERROR,
                };
                let msg = self.view.scrubber.scrub_text(&e.to_string());
                http::json(status, &json!({ "error": msg }))
            }
        }
    }
}

/// One check in the status report.
#[derive(Serialize)]
struct CheckStatusRow {
    name: String,
    kind: Option<crate::checks::CheckKind>,
    status: Option<&'static str>,
    message: Option<String>,
    error: Option<String>,
    runs: u64,
    errors: u64,
    last_run: Option<i64>,
    duration_ms: Option<u64>,
}

/// The status report, scrubbed: what `warden agent status`, the flare and the GUI show.
pub(crate) fn status(view: &AgentView) -> Value {
    let t: std::collections::BTreeMap<&str, u64> = view.telemetry.snapshot().into_iter().collect();
    let get = |k: &str| t.get(k).copied().unwrap_or(0);
    let records = view.registry.snapshot();
    let mut rows: Vec<CheckStatusRow> = records
        .iter()
        .map(|r| CheckStatusRow {
            name: r.last.name.clone(),
            kind: Some(r.last.kind),
            status: Some(status_name(r.last.status)),
            message: Some(r.last.message.clone()),
            error: r.last.error.clone(),
            runs: r.runs,
            errors: r.errors,
            last_run: Some(r.last.timestamp),
            duration_ms: Some(r.last.duration_ms),
        })
        .collect();
    // Configured checks that have not run yet are listed too, so a missing check is visible.
    for name in check_names(&view.cfg).unwrap_or_default() {
        if !rows.iter().any(|r| r.name == name) {
            rows.push(CheckStatusRow {
                name,
                kind: None,
                status: None,
                message: None,
                error: None,
                runs: 0,
                errors: 0,
                last_run: None,
                duration_ms: None,
            });
        }
    }
    let mut v = json!({
        "version": env!("CARGO_PKG_VERSION"),
        "pid": std::process::id(),
        "hostname": view.cfg.hostname,
        "server_url": view.cfg.server_url,
        "started_at": view.started_unix,
        "uptime_seconds": view.started.elapsed().as_secs(),
        "forwarder": {
            "queue_bytes": get("queue_bytes"),
            "disk_queue_bytes": get("disk_queue_bytes"),
            "payloads_sent": get("payloads_sent"),
            "payloads_retried": get("payloads_retried"),
            "payloads_dropped": get("payloads_dropped"),
            "payloads_rejected": get("payloads_rejected"),
            "payloads_evicted": get("payloads_evicted"),
        },
        "dogstatsd": {
            "packets": get("packets"),
            "packet_bytes": get("packet_bytes"),
            "messages": get("messages"),
            "parse_errors": get("parse_errors"),
            "packets_dropped": get("packets_dropped"),
            "contexts": get("contexts"),
        },
        "check_errors": get("check_errors"),
        "checks": rows,
    });
    scrub_json(&view.scrubber, &mut v);
    v
}

/// `OK`, `WARNING`, `CRITICAL`, `UNKNOWN`.
pub(crate) fn status_name(s: warden_model::CheckStatus) -> &'static str {
    match s {
        warden_model::CheckStatus::Ok => "OK",
        warden_model::CheckStatus::Warning => "WARNING",
        warden_model::CheckStatus::Critical => "CRITICAL",
        warden_model::CheckStatus::Unknown => "UNKNOWN",
    }
}

/// A check output as JSON with status names instead of wire codes, scrubbed.
pub(crate) fn check_output_json(s: &Scrubber, out: &crate::checks::CheckOutput) -> Value {
    let mut v = serde_json::to_value(out).unwrap_or(Value::Null);
    v["status"] = json!(status_name(out.status));
    if let Some(Value::Array(scs)) = v.get_mut("service_checks") {
        for (sc, orig) in scs.iter_mut().zip(&out.service_checks) {
            sc["status"] = json!(status_name(orig.status));
        }
    }
    scrub_json(s, &mut v);
    v
}

/// The effective configuration as YAML, scrubbed (the API key is masked outright).
pub(crate) fn config_yaml(view: &AgentView) -> String {
    let mut cfg = (*view.cfg).clone();
    cfg.api_key = "********".into();
    let yaml = serde_yaml::to_string(&cfg)
        .unwrap_or_else(|e| format!("# cannot serialize the configuration: {e}\n"));
    view.scrubber.scrub_text(&yaml)
}

/// Scrubs every string of a JSON tree: the string itself, and the string in the context of its
/// key (`password: x`), so key-based rules apply although JSON is not scanned as text.
pub(crate) fn scrub_json(s: &Scrubber, v: &mut Value) {
    match v {
        Value::String(x) => {
            let y = s.scrub_text(x);
            if y != *x {
                *x = y;
            }
        }
        Value::Array(a) => a.iter_mut().for_each(|e| scrub_json(s, e)),
        Value::Object(m) => {
            for (k, e) in m.iter_mut() {
                scrub_json(s, e);
                if let Value::String(x) = e {
                    let line = format!("{k}: {x}");
                    if s.scrub_line(&line) != line.as_str() {
                        *x = "********".into();
                    }
                }
            }
        }
        _ => {}
    }
}

/// Builds the flare archive: `(file name, .tar.gz bytes)`.
pub(crate) fn flare(view: &AgentView) -> std::io::Result<(String, Vec<u8>)> {
    let now = crate::checks::unix_now();
    let dir = format!("warden-flare-{now}");
    let s = &view.scrubber;
    let mut tar = flare::TarGz::new(u64::try_from(now).unwrap_or(0));
    let status = serde_json::to_string_pretty(&status(view)).unwrap_or_default();
    tar.add(
        &format!("{dir}/status.json"),
        s.scrub_text(&status).as_bytes(),
    )?;
    tar.add(&format!("{dir}/config.yaml"), config_yaml(view).as_bytes())?;
    let mut log = view.logs.tail(logs::DEFAULT_LOG_LINES).join("\n");
    log.push('\n');
    tar.add(
        &format!("{dir}/logs/agent.log"),
        s.scrub_text(&log).as_bytes(),
    )?;
    let mut listing = String::new();
    if let Some(d) = &view.cfg.checks_d {
        listing.push_str(&format!("# {}\n", d.display()));
        match std::fs::read_dir(d) {
            Ok(entries) => {
                use std::os::unix::fs::MetadataExt;
                let mut v: Vec<String> = entries
                    .flatten()
                    .map(|e| {
                        let m = e.metadata().ok();
                        format!(
                            "{:o} uid={} {} bytes  {}",
                            m.as_ref().map(|m| m.mode() & 0o7777).unwrap_or(0),
                            m.as_ref().map(|m| m.uid()).unwrap_or(0),
                            m.as_ref().map(|m| m.len()).unwrap_or(0),
                            e.file_name().to_string_lossy()
                        )
                    })
                    .collect();
                v.sort();
                for l in v {
                    listing.push_str(&l);
                    listing.push('\n');
                }
            }
            Err(e) => listing.push_str(&format!("cannot list: {e}\n")),
        }
    } else {
        listing.push_str("# checks_d is not configured\n");
    }
    tar.add(
        &format!("{dir}/checks_d.txt"),
        s.scrub_text(&listing).as_bytes(),
    )?;
    let kernel = std::fs::read_to_string("/proc/version").unwrap_or_default();
    let info = format!(
        "warden-agent {}\npid {}\nuid {}\nkernel {}",
        env!("CARGO_PKG_VERSION"),
        std::process::id(),
        token::effective_uid(),
        kernel
    );
    tar.add(
        &format!("{dir}/version.txt"),
        s.scrub_text(&info).as_bytes(),
    )?;
    Ok((format!("{dir}.tar.gz"), tar.finish()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_strings_are_scrubbed_alone_and_in_the_context_of_their_key() {
        let s = Scrubber::default();
        let mut v = json!({
            "password": "plainword-no-hint-1234",
            "message": "connect postgres://u:Sekr1t-Pass@db/x failed",
            "nested": [{"note": "-----BEGIN PRIVATE KEY-----\nMIIEvQIBADANBgkqhkiG9w0BAQEFAASC\n-----END PRIVATE KEY-----"}],
            "name": "disk",
            "runs": 3,
        });
        scrub_json(&s, &mut v);
        let text = v.to_string();
        assert!(!text.contains("plainword-no-hint"), "{text}");
        assert!(!text.contains("Sekr1t-Pass"), "{text}");
        assert!(!text.contains("MIIEvQIBADANBgkqhkiG9w0BAQEFAASC"), "{text}");
        assert_eq!(v["name"], "disk");
        assert_eq!(v["runs"], 3);
        assert!(
            v["message"]
                .as_str()
                .unwrap()
                .starts_with("connect postgres://u:")
        );
    }

    #[test]
    fn route_table_has_unique_paths_under_agent() {
        for (i, r) in ROUTES.iter().enumerate() {
            assert!(r.path.starts_with("/agent/"), "{}", r.path);
            assert!(["GET", "POST"].contains(&r.method));
            assert!(
                ROUTES[i + 1..].iter().all(|o| o.path != r.path),
                "{}",
                r.path
            );
        }
    }

    #[test]
    fn only_loopback_addresses_are_bound() {
        assert_eq!(
            loopback_ip("localhost").unwrap(),
            IpAddr::V4(Ipv4Addr::LOCALHOST)
        );
        assert!(loopback_ip("::1").unwrap().is_loopback());
        for bad in ["0.0.0.0", "10.0.0.1", "::", "example.com"] {
            assert!(
                matches!(loopback_ip(bad), Err(ApiError::NotLoopback(_))),
                "{bad}"
            );
        }
    }
}
