//! The CLI side of the local API: finds the running agent from its configuration, pins its
//! certificate, and sends the bearer token from the `auth_token` file.
//!
//! The CLI never creates the token (only the agent does) and trusts no certificate but the
//! one the agent wrote to `<run_path>/ipc_cert.pem`.

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::api::token::{AuthToken, TokenError};
use crate::api::{CERT_FILE, ENDPOINT_FILE, loopback_ip, tls};
use crate::config::AgentConfig;

/// Why a command could not talk to the agent.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("the local API is disabled (`cmd_port: -1`), so this command cannot reach the agent")]
    Disabled,
    #[error("{0}")]
    Config(String),
    #[error("cannot read the auth token: {0}")]
    Token(#[from] TokenError),
    #[error(
        "cannot read the agent's API certificate {path}: {source} (is the agent running with \
         this configuration?)"
    )]
    Cert {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot read {path}: {source} (is the agent running with this configuration?)")]
    Endpoint {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("TLS setup failed: {0}")]
    Tls(String),
    #[error("cannot reach the agent's local API at {url}: {message} (is the agent running?)")]
    Unreachable { url: String, message: String },
    #[error("the agent refused the request ({status}): {body}")]
    Refused { status: u16, body: String },
}

/// A response from the agent.
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub body: bytes::Bytes,
}

impl Reply {
    /// The body as text (lossy).
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The body as JSON, if it is JSON.
    pub fn json(&self) -> Option<serde_json::Value> {
        serde_json::from_slice(&self.body).ok()
    }
}

/// A client for one agent's local API.
pub struct ApiClient {
    base: String,
    token: AuthToken,
    http: reqwest::Client,
}

impl std::fmt::Debug for ApiClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiClient")
            .field("base", &self.base)
            .finish_non_exhaustive()
    }
}

impl ApiClient {
    /// Reads the token, the pinned certificate and the endpoint for the agent that runs with
    /// `cfg`.
    pub fn from_config(cfg: &AgentConfig) -> Result<Self, ClientError> {
        if cfg.cmd_port < 0 {
            return Err(ClientError::Disabled);
        }
        let addr = if cfg.cmd_port == 0 {
            let path = cfg.run_path.join(ENDPOINT_FILE);
            let text = std::fs::read_to_string(&path).map_err(|source| ClientError::Endpoint {
                path: path.clone(),
                source,
            })?;
            text.trim()
                .parse::<std::net::SocketAddr>()
                .map_err(|e| ClientError::Config(format!("{}: {e}", path.display())))?
        } else {
            let ip = loopback_ip(&cfg.cmd_host).map_err(|e| ClientError::Config(e.to_string()))?;
            std::net::SocketAddr::new(ip, u16::try_from(cfg.cmd_port).unwrap_or(0))
        };
        let token = AuthToken::load(&cfg.auth_token_file_path)?;
        let cert_path = cfg.run_path.join(CERT_FILE);
        let pem = std::fs::read_to_string(&cert_path).map_err(|source| ClientError::Cert {
            path: cert_path.clone(),
            source,
        })?;
        let tls = tls::pinned_client_config(&pem).map_err(|e| ClientError::Tls(e.to_string()))?;
        let http = reqwest::Client::builder()
            .use_preconfigured_tls(tls)
            .connect_timeout(Duration::from_secs(5))
            .timeout(Duration::from_secs(300))
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .build()
            .map_err(|e| ClientError::Tls(e.to_string()))?;
        Ok(Self {
            base: format!("https://{addr}"),
            token,
            http,
        })
    }

    /// Like [`ApiClient::from_config`], reading only what the CLI needs (`cmd_host`,
    /// `cmd_port`, `run_path`, `auth_token_file_path`, with `WARDEN_*` overrides and the same
    /// defaults) from the agent's config file — without running the secrets backend for
    /// `ENC[…]` values elsewhere in the file, which a status query has no business doing.
    pub fn from_config_file(path: &Path) -> Result<Self, ClientError> {
        crate::config::check_permissions(path).map_err(|e| ClientError::Config(e.to_string()))?;
        let text = std::fs::read_to_string(path)
            .map_err(|e| ClientError::Config(format!("cannot read {}: {e}", path.display())))?;
        let yaml: serde_yaml::Value = serde_yaml::from_str(&text)
            .map_err(|e| ClientError::Config(format!("{}: invalid YAML: {e}", path.display())))?;
        let env: Vec<(String, String)> = std::env::vars().collect();
        let get = |key: &str| -> Option<serde_yaml::Value> {
            let var = format!("WARDEN_{}", key.to_ascii_uppercase());
            if let Some((_, v)) = env.iter().find(|(k, _)| *k == var) {
                return Some(
                    serde_yaml::from_str(v).unwrap_or(serde_yaml::Value::String(v.clone())),
                );
            }
            yaml.get(key).filter(|v| !v.is_null()).cloned()
        };
        let bad = |key: &str, want: &str| {
            ClientError::Config(format!("{}: `{key}` must be {want}", path.display()))
        };
        let string = |key: &str| -> Result<Option<String>, ClientError> {
            match get(key) {
                None => Ok(None),
                Some(serde_yaml::Value::String(s)) if !s.starts_with("ENC[") => Ok(Some(s)),
                Some(_) => Err(bad(key, "a plain string")),
            }
        };
        let dir = path.parent().unwrap_or(Path::new("."));
        let mut cfg = AgentConfig {
            cmd_host: string("cmd_host")?.unwrap_or_else(|| "127.0.0.1".into()),
            cmd_port: match get("cmd_port") {
                None => 5001,
                Some(v) => v
                    .as_i64()
                    .and_then(|p| i32::try_from(p).ok())
                    .filter(|p| (-1..=65_535).contains(p))
                    .ok_or_else(|| bad("cmd_port", "-1, 0 or a port"))?,
            },
            ..Self::placeholder()
        };
        cfg.run_path = string("run_path")?
            .map(PathBuf::from)
            .unwrap_or_else(|| dir.join("run"));
        cfg.auth_token_file_path = string("auth_token_file_path")?
            .map(PathBuf::from)
            .unwrap_or_else(|| dir.join("auth_token"));
        Self::from_config(&cfg)
    }

    /// A configuration whose other fields are never read by [`ApiClient::from_config`].
    fn placeholder() -> AgentConfig {
        // Built through the validator so every field has its documented default.
        AgentConfig::from_yaml_with_env("api_key: unused\n", "defaults", &[])
            .unwrap_or_else(|_| unreachable!("the minimal configuration is valid"))
    }

    /// `GET path`; non-2xx answers are errors carrying the agent's message.
    pub async fn get(&self, path: &str) -> Result<Reply, ClientError> {
        self.send(self.http.get(format!("{}{path}", self.base)))
            .await
    }

    /// `POST path` with a JSON body.
    pub async fn post(&self, path: &str, body: &serde_json::Value) -> Result<Reply, ClientError> {
        self.send(
            self.http
                .post(format!("{}{path}", self.base))
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .body(body.to_string()),
        )
        .await
    }

    async fn send(&self, req: reqwest::RequestBuilder) -> Result<Reply, ClientError> {
        let resp = req
            .bearer_auth(self.token.expose())
            .send()
            .await
            .map_err(|e| ClientError::Unreachable {
                url: self.base.clone(),
                message: error_chain(&e),
            })?;
        let status = resp.status().as_u16();
        let body = resp.bytes().await.map_err(|e| ClientError::Unreachable {
            url: self.base.clone(),
            message: error_chain(&e),
        })?;
        let reply = Reply { status, body };
        if (200..300).contains(&status) {
            Ok(reply)
        } else {
            let msg = reply
                .json()
                .and_then(|v| v.get("error").and_then(|e| e.as_str()).map(str::to_owned))
                .unwrap_or_else(|| reply.text().trim().to_owned());
            Err(ClientError::Refused { status, body: msg })
        }
    }
}

fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    crate::checks::error_chain(e)
}
