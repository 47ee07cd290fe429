//! `warden server`, `warden up`, `warden keys ...` and `warden query`: the server side of the
//! CLI. Flag parsing and printing only; the server itself lives in `warden-server`.
//!
//! Why `up` exists: a first-time user should get a working, TLS-protected server and an agent
//! for this host with one command and nothing else to install, and be handed everything a
//! client needs (URL, CA file, keys) both on screen and in `DIR/credentials.json` (0600).

use std::io::Write;
use std::net::SocketAddr;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, bail};
use warden_server::{KeyKind, KeyStore, Server, ServerOptions, TlsSetup};

/// Default listen address of `warden server` / `warden up` (the agent's default server_url).
pub(crate) const DEFAULT_LISTEN: &str = "127.0.0.1:8443";

/// `$WARDEN_DATA_DIR`, else `$XDG_DATA_HOME/warden`, else `~/.local/share/warden`.
pub(crate) fn default_data_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("WARDEN_DATA_DIR").filter(|d| !d.is_empty()) {
        return PathBuf::from(d);
    }
    if let Some(d) = std::env::var_os("XDG_DATA_HOME").filter(|d| !d.is_empty()) {
        return PathBuf::from(d).join("warden");
    }
    let home = std::env::var_os("HOME").unwrap_or_else(|| ".".into());
    PathBuf::from(home).join(".local/share/warden")
}

#[derive(clap::Args, Debug)]
pub(crate) struct ServerArgs {
    /// Data directory (store, key database, TLS material).
    #[arg(long, value_name = "DIR", env = "WARDEN_DATA_DIR")]
    pub(crate) data_dir: Option<PathBuf>,
    /// Address to listen on.
    #[arg(long, value_name = "ADDR", default_value = DEFAULT_LISTEN)]
    pub(crate) listen: SocketAddr,
    /// Server certificate chain (PEM); with --tls-key, replaces the generated certificate.
    #[arg(long, value_name = "FILE", requires = "tls_key")]
    pub(crate) tls_cert: Option<PathBuf>,
    /// Server private key (PEM).
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    pub(crate) tls_key: Option<PathBuf>,
    /// Extra host name or IP address for the generated certificate (repeatable; only used
    /// when the certificate is first created).
    #[arg(long = "tls-name", value_name = "NAME")]
    pub(crate) tls_names: Vec<String>,
    /// Lowest TLS version accepted: 1.2 (default) or 1.3.
    #[arg(long, value_name = "VERSION", default_value = "1.2", value_parser = ["1.2", "1.3"])]
    pub(crate) tls_min_version: String,
    /// Serve plain HTTP instead of HTTPS. Keys and data cross the network in clear text.
    #[arg(long, conflicts_with_all = ["tls_cert", "tls_key"])]
    pub(crate) insecure_http: bool,
    /// Master key file (0600/0400) for the store's encryption at rest, kept off the data disk;
    /// default: DIR/store/keys/master.key, created on first start.
    #[arg(long, value_name = "FILE", conflicts_with = "master_key_env")]
    pub(crate) master_key_file: Option<PathBuf>,
    /// Environment variable holding the master key (hex, `v<N>:<hex>` or the key file format).
    #[arg(long, value_name = "VAR")]
    pub(crate) master_key_env: Option<String>,
    /// Days of full-resolution data kept (older data survives as 1-minute rollups); intake
    /// refuses points older than this.
    #[arg(long, value_name = "DAYS", default_value_t = 457, value_parser = clap::value_parser!(u64).range(1..=36_500))]
    pub(crate) retention_raw_days: u64,
}

fn server_options(a: &ServerArgs, data_dir: &Path) -> ServerOptions {
    let mut o = ServerOptions::new(data_dir, a.listen);
    o.tls = if a.insecure_http {
        TlsSetup::InsecureHttp
    } else if let (Some(cert), Some(key)) = (&a.tls_cert, &a.tls_key) {
        TlsSetup::Files {
            cert: cert.clone(),
            key: key.clone(),
        }
    } else {
        TlsSetup::Generated {
            extra_names: a.tls_names.clone(),
        }
    };
    o.tls13_only = a.tls_min_version == "1.3";
    if let Some(f) = &a.master_key_file {
        o.store.master_key = warden_server::MasterKeySource::File(f.clone());
    } else if let Some(v) = &a.master_key_env {
        o.store.master_key = warden_server::MasterKeySource::Env(v.clone());
    }
    o.store.retention_raw = std::time::Duration::from_secs(a.retention_raw_days * 86_400);
    o.store.retention_rollup = o.store.retention_rollup.max(o.store.retention_raw);
    o.limits.max_age_secs = (a.retention_raw_days * 86_400) as i64;
    o
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .thread_name("warden-server")
        .build()?)
}

fn init_logs(secrets: &[&str]) -> warden_agent::RunOptions {
    let opts = warden_agent::RunOptions::default();
    for s in secrets {
        let _ = opts.scrubber.add_secret(s);
    }
    crate::init_logging("info", &opts);
    opts
}

/// `warden server`.
pub(crate) fn server(a: ServerArgs) -> anyhow::Result<ExitCode> {
    let data_dir = a.data_dir.clone().unwrap_or_else(default_data_dir);
    if a.insecure_http {
        eprintln!(
            "warden: WARNING: --insecure-http: serving PLAIN HTTP on {}; API keys and metrics \
             are sent unencrypted",
            a.listen
        );
    }
    let _ = init_logs(&[]);
    let opts = server_options(&a, &data_dir);
    let rt = runtime()?;
    rt.block_on(async {
        let server = Server::start(opts)
            .await
            .with_context(|| format!("starting the server in {}", data_dir.display()))?;
        eprintln!("warden server listening on {}", server.url());
        if let Some(ca) = server.ca_file() {
            eprintln!("CA certificate for clients: {}", ca.display());
        }
        server.run_until(crate::shutdown_signal()).await;
        anyhow::Ok(())
    })?;
    Ok(ExitCode::SUCCESS)
}

#[derive(clap::Args, Debug)]
pub(crate) struct UpArgs {
    /// Data directory (store, keys, TLS, agent state, credentials.json).
    #[arg(long, value_name = "DIR", env = "WARDEN_DATA_DIR")]
    pub(crate) data_dir: Option<PathBuf>,
    /// Address the server listens on.
    #[arg(long, value_name = "ADDR", default_value = DEFAULT_LISTEN)]
    pub(crate) listen: SocketAddr,
    /// UDP port of the local agent's DogStatsD listener (0 disables it).
    #[arg(long, value_name = "PORT", default_value_t = 8125)]
    pub(crate) dogstatsd_port: u16,
}

/// What `warden up` writes to `DIR/credentials.json`.
#[derive(serde::Serialize, serde::Deserialize, Debug)]
pub(crate) struct Credentials {
    pub(crate) url: String,
    pub(crate) ca_file: Option<PathBuf>,
    pub(crate) api_key: String,
    pub(crate) app_key: String,
    pub(crate) dogstatsd_port: u16,
}

fn write_private(path: &Path, data: &[u8]) -> anyhow::Result<()> {
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .with_context(|| format!("creating {}", tmp.display()))?;
    f.write_all(data)?;
    f.sync_all()?;
    std::fs::rename(&tmp, path).with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}

/// Keys from an earlier `up` if they still work, else fresh ones in org `default`.
fn up_keys(keys: &KeyStore, cred_path: &Path) -> anyhow::Result<(String, String, bool)> {
    if let Ok(text) = std::fs::read_to_string(cred_path)
        && let Ok(c) = serde_json::from_str::<Credentials>(&text)
    {
        let api = keys.authenticate(KeyKind::Api, &c.api_key)?;
        let app = keys.authenticate(KeyKind::App, &c.app_key)?;
        if let (Some(a), Some(b)) = (api, app)
            && a.org == b.org
        {
            return Ok((c.api_key, c.app_key, false));
        }
    }
    let api = keys.create_key("default", KeyKind::Api, "warden up")?;
    let app = keys.create_key("default", KeyKind::App, "warden up")?;
    Ok((api.secret, app.secret, true))
}

/// `warden up`.
pub(crate) fn up(a: UpArgs) -> anyhow::Result<ExitCode> {
    let data_dir = a.data_dir.clone().unwrap_or_else(default_data_dir);
    let rt = runtime()?;
    // Logging first (the server's start-up lines matter); the keys are added to the scrubber
    // as soon as they are known, before anything could log them.
    let log_opts = init_logs(&[]);
    let result = rt.block_on(async move {
        let opts = ServerOptions::new(&data_dir, a.listen);
        let server = Server::start(opts)
            .await
            .with_context(|| format!("starting the server in {}", data_dir.display()))?;
        let cred_path = data_dir.join("credentials.json");
        let (api_key, app_key, fresh) = up_keys(server.keys(), &cred_path)?;
        let _ = log_opts.scrubber.add_secret(&api_key);
        let _ = log_opts.scrubber.add_secret(&app_key);
        let url = server.url();
        let ca = server.ca_file().map(Path::to_path_buf);
        let creds = Credentials {
            url: url.clone(),
            ca_file: ca.clone(),
            api_key: api_key.clone(),
            app_key: app_key.clone(),
            dogstatsd_port: a.dogstatsd_port,
        };
        write_private(&cred_path, serde_json::to_string_pretty(&creds)?.as_bytes())?;

        let agent_dir = data_dir.join("agent");
        std::fs::create_dir_all(&agent_dir)?;
        let yaml = agent_yaml(&creds, &agent_dir);
        let cfg = warden_agent::AgentConfig::from_yaml_with_env(&yaml, "embedded", &[])
            .map_err(|e| anyhow::anyhow!("embedded agent configuration: {e}"))?;

        let mut out = std::io::stdout().lock();
        writeln!(out, "Warden is up.")?;
        writeln!(out, "  URL:             {url}")?;
        if let Some(ca) = &ca {
            writeln!(out, "  CA certificate:  {}", ca.display())?;
        }
        writeln!(
            out,
            "  API key:         {api_key}{}",
            if fresh { "  (new)" } else { "" }
        )?;
        writeln!(out, "  Application key: {app_key}")?;
        writeln!(
            out,
            "  DogStatsD:       udp://127.0.0.1:{}",
            a.dogstatsd_port
        )?;
        writeln!(out, "  Credentials:     {}", cred_path.display())?;
        out.flush()?;
        drop(out);

        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        let (server_stop_tx, server_stop_rx) = tokio::sync::watch::channel(false);
        let mut agent_stop = stop_rx;
        let agent = tokio::spawn(async move {
            warden_agent::run_with(cfg, log_opts, async move {
                let _ = agent_stop.wait_for(|s| *s).await;
            })
            .await
        });
        let mut server_stop = server_stop_rx;
        let server_task = tokio::spawn(server.run_until(async move {
            let _ = server_stop.wait_for(|s| *s).await;
        }));
        let mut agent = agent;
        // Either a signal, or the agent failing on its own (e.g. the DogStatsD port is taken).
        let agent_result = tokio::select! {
            _ = crate::shutdown_signal() => {
                let _ = stop_tx.send(true);
                // The agent flushes to the server first, then the server stops.
                agent.await
            }
            early = &mut agent => early,
        };
        let failed = match agent_result {
            Ok(Err(e)) => Some(format!("the agent stopped: {e}")),
            Err(e) => Some(format!("the agent task failed: {e}")),
            Ok(Ok(())) => None,
        };
        let _ = server_stop_tx.send(true);
        let _ = server_task.await;
        anyhow::Ok(failed)
    });
    match result? {
        Some(why) => {
            eprintln!("warden: {why}");
            Ok(ExitCode::FAILURE)
        }
        None => Ok(ExitCode::SUCCESS),
    }
}

fn yaml_str(s: &str) -> String {
    serde_json::Value::String(s.to_owned()).to_string()
}

/// The embedded agent configuration of `warden up`.
fn agent_yaml(c: &Credentials, agent_dir: &Path) -> String {
    let mut y = String::new();
    y.push_str(&format!("api_key: {}\n", yaml_str(&c.api_key)));
    y.push_str(&format!("server_url: {}\n", yaml_str(&c.url)));
    if let Some(ca) = &c.ca_file {
        y.push_str(&format!(
            "tls_ca_file: {}\n",
            yaml_str(&ca.display().to_string())
        ));
    } else {
        y.push_str("allow_insecure_http: true\n");
    }
    y.push_str(&format!("dogstatsd_port: {}\n", c.dogstatsd_port));
    let dir = agent_dir.display().to_string();
    y.push_str(&format!("run_path: {}\n", yaml_str(&dir)));
    y.push_str(&format!(
        "forwarder_storage_path: {}\n",
        yaml_str(&format!("{dir}/transactions_to_retry"))
    ));
    y.push_str(&format!(
        "auth_token_file_path: {}\n",
        yaml_str(&format!("{dir}/auth_token"))
    ));
    y.push_str("cmd_port: 0\n");
    y
}

#[derive(clap::Subcommand, Debug)]
pub(crate) enum KeysCommand {
    /// Create a key; the secret is printed once and only its hash is stored.
    Create {
        /// `api` (write: intake) or `app` (read: queries).
        #[arg(long, value_parser = ["api", "app"])]
        kind: String,
        /// Organisation (created if missing).
        #[arg(long, default_value = "default")]
        org: String,
        /// A label for the key.
        #[arg(long, default_value = "")]
        name: String,
    },
    /// List keys (id, org, kind, name, hint; never secrets).
    List,
    /// Revoke a key by id (effective on the server's next request).
    Revoke {
        #[arg(value_name = "ID")]
        id: i64,
    },
    /// Rotate the store's master key: every data key is re-wrapped under a new master key
    /// (no data is rewritten). Run it with the server stopped.
    RotateMaster {
        /// The current master key file, when the server runs with `--master-key-file`;
        /// default: the key kept in DIR/store/keys/ (a new version is generated there).
        #[arg(long, value_name = "FILE")]
        master_key_file: Option<PathBuf>,
        /// The new master key file (for an external key); start the server with it afterwards.
        #[arg(long, value_name = "FILE", requires = "master_key_file")]
        new_master_key_file: Option<PathBuf>,
    },
}

/// `warden keys rotate-master`: opens the store without background jobs, rewraps, closes.
fn rotate_master(
    data_dir: &Path,
    current: Option<PathBuf>,
    new: Option<PathBuf>,
) -> anyhow::Result<ExitCode> {
    let mut opts = warden_store::StoreOptions {
        background: false,
        ..Default::default()
    };
    if let Some(f) = current {
        opts.master_key = warden_store::MasterKeySource::File(f);
    }
    let store_dir = data_dir.join("store");
    let store = warden_store::Store::open(&store_dir, opts).with_context(|| {
        format!(
            "opening the store in {} (is the server still running?)",
            store_dir.display()
        )
    })?;
    let version = store
        .rotate_master(new.map(warden_store::MasterKeySource::File))
        .context("rotating the master key")?;
    store.close().context("closing the store")?;
    println!("master key rotated to version {version}; every data key re-wrapped");
    Ok(ExitCode::SUCCESS)
}

/// `warden keys ...`.
pub(crate) fn keys(data_dir: Option<PathBuf>, cmd: KeysCommand) -> anyhow::Result<ExitCode> {
    let data_dir = data_dir.unwrap_or_else(default_data_dir);
    // The store (not the key database) is what rotate-master works on.
    let open_keys = || -> anyhow::Result<KeyStore> {
        std::fs::create_dir_all(&data_dir)
            .with_context(|| format!("creating {}", data_dir.display()))?;
        Ok(KeyStore::open(&warden_server::meta_db_path(&data_dir))?)
    };
    match cmd {
        KeysCommand::Create { kind, org, name } => {
            let ks = open_keys()?;
            let Some(kind) = KeyKind::parse(&kind) else {
                bail!("--kind must be api or app");
            };
            let k = ks.create_key(&org, kind, &name)?;
            println!("{}", k.secret);
            eprintln!(
                "created {} key {} in org {:?}; this is the only time the secret is shown",
                kind.as_str(),
                k.id,
                k.org
            );
        }
        KeysCommand::List => {
            let ks = open_keys()?;
            println!(
                "{:>4}  {:<16} {:<4} {:<20} {:<18} {:<10} STATUS",
                "ID", "ORG", "KIND", "NAME", "HINT", "CREATED"
            );
            for k in ks.list()? {
                println!(
                    "{:>4}  {:<16} {:<4} {:<20} {:<18} {:<10} {}",
                    k.id,
                    k.org,
                    k.kind,
                    k.name,
                    k.hint,
                    k.created,
                    if k.revoked.is_some() {
                        "revoked"
                    } else {
                        "active"
                    }
                );
            }
        }
        KeysCommand::Revoke { id } => {
            open_keys()?.revoke(id)?;
            println!("revoked key {id}");
        }
        KeysCommand::RotateMaster {
            master_key_file,
            new_master_key_file,
        } => return rotate_master(&data_dir, master_key_file, new_master_key_file),
    }
    Ok(ExitCode::SUCCESS)
}

#[derive(clap::Args, Debug)]
pub(crate) struct QueryArgs {
    /// Metrics query, e.g. `avg:system.cpu.user{*} by {host}`.
    #[arg(value_name = "QUERY")]
    pub(crate) query: String,
    /// Start: `-1h`, `-15m`, `-2d`, `-30s`, `now` or UNIX seconds.
    #[arg(long, default_value = "-1h", allow_hyphen_values = true)]
    pub(crate) from: String,
    /// End (same forms as --from).
    #[arg(long, default_value = "now", allow_hyphen_values = true)]
    pub(crate) to: String,
    /// Server URL (default: from DIR/credentials.json).
    #[arg(long)]
    pub(crate) url: Option<String>,
    #[arg(long, env = "DD_API_KEY", hide_env_values = true)]
    pub(crate) api_key: Option<String>,
    #[arg(long, env = "DD_APP_KEY", hide_env_values = true)]
    pub(crate) app_key: Option<String>,
    /// CA certificate to trust (default: from DIR/credentials.json).
    #[arg(long, value_name = "FILE")]
    pub(crate) ca_file: Option<PathBuf>,
    /// Where credentials.json is.
    #[arg(long, value_name = "DIR", env = "WARDEN_DATA_DIR")]
    pub(crate) data_dir: Option<PathBuf>,
    /// Print the raw JSON response instead of a table.
    #[arg(long)]
    pub(crate) json: bool,
}

/// `-1h` / `now` / UNIX seconds → UNIX seconds.
pub(crate) fn parse_time(s: &str, now: i64) -> anyhow::Result<i64> {
    let s = s.trim();
    if s == "now" {
        return Ok(now);
    }
    if let Ok(n) = s.parse::<i64>() {
        return Ok(n);
    }
    let Some(rel) = s.strip_prefix('-') else {
        bail!("invalid time {s:?}: use -1h, -15m, -2d, -30s, now or UNIX seconds");
    };
    let (num, unit) = rel.split_at(rel.len().saturating_sub(1));
    let n: i64 = num
        .parse()
        .with_context(|| format!("invalid time {s:?}: use -1h, -15m, -2d, -30s"))?;
    let mult = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        "w" => 7 * 86_400,
        _ => bail!("invalid time unit in {s:?}: use s, m, h, d or w"),
    };
    Ok(now - n * mult)
}

/// A client for the server's read API: URL, keys and CA from the flags, else from the data
/// directory's `credentials.json` (what `warden up` wrote). Used by `warden query` and
/// `warden signals`.
pub(crate) struct ServerAccess {
    pub(crate) client: reqwest::Client,
    /// Without a trailing `/`.
    pub(crate) url: String,
    pub(crate) api_key: String,
    pub(crate) app_key: String,
}

impl ServerAccess {
    pub(crate) fn resolve(
        data_dir: Option<PathBuf>,
        url: Option<String>,
        api_key: Option<String>,
        app_key: Option<String>,
        ca_file: Option<PathBuf>,
    ) -> anyhow::Result<ServerAccess> {
        let data_dir = data_dir.unwrap_or_else(default_data_dir);
        let creds: Option<Credentials> = std::fs::read_to_string(data_dir.join("credentials.json"))
            .ok()
            .and_then(|t| serde_json::from_str(&t).ok());
        let url = url
            .or_else(|| creds.as_ref().map(|c| c.url.clone()))
            .context("no --url and no credentials.json (run `warden up` or pass --url)")?;
        let api_key = api_key
            .or_else(|| creds.as_ref().map(|c| c.api_key.clone()))
            .context("no --api-key (or DD_API_KEY) and no credentials.json")?;
        let app_key = app_key
            .or_else(|| creds.as_ref().map(|c| c.app_key.clone()))
            .context("no --app-key (or DD_APP_KEY) and no credentials.json")?;
        let ca = ca_file.or_else(|| creds.as_ref().and_then(|c| c.ca_file.clone()));
        let mut builder = reqwest::Client::builder()
            .use_rustls_tls()
            .https_only(url.starts_with("https://"))
            .timeout(std::time::Duration::from_secs(60));
        if let Some(ca) = &ca {
            let pem = std::fs::read(ca).with_context(|| format!("reading {}", ca.display()))?;
            builder = builder.add_root_certificate(reqwest::Certificate::from_pem(&pem)?);
        }
        Ok(ServerAccess {
            client: builder.build()?,
            url: url.trim_end_matches('/').to_string(),
            api_key,
            app_key,
        })
    }
}

/// `warden query`.
pub(crate) fn query(a: QueryArgs) -> anyhow::Result<ExitCode> {
    let ServerAccess {
        client,
        url,
        api_key,
        app_key,
    } = ServerAccess::resolve(
        a.data_dir.clone(),
        a.url.clone(),
        a.api_key.clone(),
        a.app_key.clone(),
        a.ca_file.clone(),
    )?;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_secs() as i64;
    let from = parse_time(&a.from, now)?;
    let to = parse_time(&a.to, now)?;
    let rt = runtime()?;
    let (status, body) = rt.block_on(async {
        let resp = client
            .get(format!("{url}/api/v1/query"))
            .query(&[
                ("from", from.to_string()),
                ("to", to.to_string()),
                ("query", a.query.clone()),
            ])
            .header("DD-API-KEY", &api_key)
            .header("DD-APPLICATION-KEY", &app_key)
            .send()
            .await?;
        let status = resp.status();
        let body = resp.text().await?;
        anyhow::Ok((status, body))
    })?;
    let v: serde_json::Value = serde_json::from_str(&body)
        .with_context(|| format!("server answered {status} with non-JSON"))?;
    if !status.is_success() {
        let msg = v["errors"][0].as_str().unwrap_or("(no message)");
        eprintln!("warden: query refused ({status}): {msg}");
        if let Some(pos) = v["position"].as_u64() {
            let col = a.query[..(pos as usize).min(a.query.len())].chars().count();
            eprintln!("  {}\n  {}^", a.query, " ".repeat(col));
        }
        return Ok(ExitCode::from(1));
    }
    if a.json {
        println!("{}", serde_json::to_string_pretty(&v)?);
    } else {
        print!("{}", render(&v));
    }
    Ok(ExitCode::SUCCESS)
}

fn render(v: &serde_json::Value) -> String {
    warden_query::render_table(v)
}
