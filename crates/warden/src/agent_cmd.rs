//! `warden agent status|config|check|flare|gui`: clients of the running agent's local API.
//!
//! Each command reads the same configuration file as the agent to find the API (port, token
//! file, run path with the pinned certificate), makes one request and prints the answer. The
//! agent scrubs everything it returns; the CLI scrubs once more before printing, so a secret
//! that slipped past one pass still does not reach a terminal or a support ticket.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use clap::Subcommand;
use serde_json::Value;
use warden_agent::api::client::{ApiClient, ClientError};
use warden_scrubber::Scrubber;

/// Commands that talk to a running agent.
#[derive(Subcommand, Debug)]
pub(crate) enum AgentCommand {
    /// Show the running agent's status: uptime, forwarder queue, DogStatsD counters, and the
    /// last result of every check.
    Status {
        /// Print the raw JSON report.
        #[arg(long)]
        json: bool,
    },
    /// Print the effective configuration of the running agent, secrets scrubbed.
    Config,
    /// Run one check now inside the agent and print its output (nothing is sent).
    Check {
        /// Check name (as in `status`).
        name: String,
        /// Print the raw JSON output.
        #[arg(long)]
        json: bool,
    },
    /// Write a support archive (.tar.gz: status, config, recent logs; all scrubbed).
    Flare {
        /// Where to write the archive (default: warden-flare-<time>.tar.gz in the current
        /// folder). Never overwrites an existing file.
        #[arg(long, short = 'o', value_name = "FILE")]
        output: Option<PathBuf>,
    },
    /// Print a single-use sign-in link for the agent's browser GUI (needs `gui_port`).
    Gui {
        /// Also open the link with `xdg-open`.
        #[arg(long)]
        open: bool,
    },
}

/// Runs one command against the agent configured in `config`.
pub(crate) fn run(cmd: AgentCommand, config: &Path) -> anyhow::Result<ExitCode> {
    let client = match ApiClient::from_config_file(config) {
        Ok(c) => c,
        Err(e @ ClientError::Config(_)) => {
            eprintln!("warden: {e}");
            return Ok(ExitCode::from(2));
        }
        Err(e) => return Err(e.into()),
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let scrubber = Scrubber::default();
    let mut out = std::io::stdout().lock();
    match cmd {
        AgentCommand::Status { json } => {
            let reply = rt.block_on(client.get("/agent/status"))?;
            let v = reply.json().context("the agent's status is not JSON")?;
            let text = if json {
                serde_json::to_string_pretty(&v)? + "\n"
            } else {
                render_status(&v)
            };
            out.write_all(scrubber.scrub_text(&text).as_bytes())?;
        }
        AgentCommand::Config => {
            let reply = rt.block_on(client.get("/agent/config"))?;
            out.write_all(scrubber.scrub_text(&reply.text()).as_bytes())?;
        }
        AgentCommand::Check { name, json } => {
            let reply =
                rt.block_on(client.post("/agent/check", &serde_json::json!({ "name": name })))?;
            let v = reply
                .json()
                .context("the agent's check output is not JSON")?;
            let text = if json {
                serde_json::to_string_pretty(&v)? + "\n"
            } else {
                render_check(&v)
            };
            out.write_all(scrubber.scrub_text(&text).as_bytes())?;
            if v.get("error").is_some_and(|e| !e.is_null()) {
                return Ok(ExitCode::FAILURE);
            }
        }
        AgentCommand::Flare { output } => {
            let reply = rt.block_on(client.get("/agent/flare"))?;
            let path = output.unwrap_or_else(|| {
                let now = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_secs())
                    .unwrap_or(0);
                PathBuf::from(format!("warden-flare-{now}.tar.gz"))
            });
            write_new_private(&path, &reply.body)
                .with_context(|| format!("cannot write the flare to {}", path.display()))?;
            writeln!(
                out,
                "flare written to {} ({} bytes); every file in it was scrubbed, but review it \
                 before sharing",
                path.display(),
                reply.body.len()
            )?;
        }
        AgentCommand::Gui { open } => {
            let reply = rt.block_on(client.post("/agent/gui/intent", &Value::Null))?;
            let url = reply
                .json()
                .and_then(|v| v.get("url").and_then(Value::as_str).map(str::to_owned))
                .context("the agent's answer has no sign-in URL")?;
            writeln!(
                out,
                "Open this single-use link within 2 minutes (the GUI's certificate is \
                 self-signed):\n{url}"
            )?;
            if open {
                out.flush()?;
                let status = std::process::Command::new("xdg-open").arg(&url).status();
                if !status.is_ok_and(|s| s.success()) {
                    eprintln!("warden: could not run xdg-open; open the link yourself");
                }
            }
        }
    }
    out.flush()?;
    Ok(ExitCode::SUCCESS)
}

/// Creates `path` (0600) and writes `data`; refuses to replace an existing file.
fn write_new_private(path: &Path, data: &[u8]) -> std::io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    f.write_all(data)?;
    f.sync_all()
}

fn s(v: &Value, k: &str) -> String {
    match v.get(k) {
        None | Some(Value::Null) => String::new(),
        Some(Value::String(s)) => s.clone(),
        Some(x) => x.to_string(),
    }
}

fn n(v: &Value, path: &[&str]) -> u64 {
    let mut cur = v;
    for k in path {
        match cur.get(k) {
            Some(x) => cur = x,
            None => return 0,
        }
    }
    cur.as_u64().unwrap_or(0)
}

fn duration(secs: u64) -> String {
    let (d, h, m, s) = (secs / 86_400, secs / 3600 % 24, secs / 60 % 60, secs % 60);
    if d > 0 {
        format!("{d}d {h}h {m}m {s}s")
    } else if h > 0 {
        format!("{h}h {m}m {s}s")
    } else if m > 0 {
        format!("{m}m {s}s")
    } else {
        format!("{s}s")
    }
}

fn render_status(v: &Value) -> String {
    let mut o = String::new();
    o.push_str(&format!(
        "Warden Agent {} (pid {}) on {}\n  uptime: {}\n  server: {}\n\n",
        s(v, "version"),
        s(v, "pid"),
        s(v, "hostname"),
        duration(n(v, &["uptime_seconds"])),
        s(v, "server_url"),
    ));
    o.push_str(&format!(
        "Forwarder\n  retry queue: {} bytes in memory, {} bytes on disk\n  payloads: {} sent, \
         {} retried, {} dropped ({} rejected by the intake, {} evicted)\n\n",
        n(v, &["forwarder", "queue_bytes"]),
        n(v, &["forwarder", "disk_queue_bytes"]),
        n(v, &["forwarder", "payloads_sent"]),
        n(v, &["forwarder", "payloads_retried"]),
        n(v, &["forwarder", "payloads_dropped"]),
        n(v, &["forwarder", "payloads_rejected"]),
        n(v, &["forwarder", "payloads_evicted"]),
    ));
    o.push_str(&format!(
        "DogStatsD\n  packets: {} ({} bytes), {} dropped\n  messages: {}, parse errors: {}\n  \
         contexts: {}\n\n",
        n(v, &["dogstatsd", "packets"]),
        n(v, &["dogstatsd", "packet_bytes"]),
        n(v, &["dogstatsd", "packets_dropped"]),
        n(v, &["dogstatsd", "messages"]),
        n(v, &["dogstatsd", "parse_errors"]),
        n(v, &["dogstatsd", "contexts"]),
    ));
    let empty = Vec::new();
    let checks = v.get("checks").and_then(Value::as_array).unwrap_or(&empty);
    o.push_str(&format!(
        "Checks ({}, {} failed runs in total)\n",
        checks.len(),
        n(v, &["check_errors"])
    ));
    for c in checks {
        if c.get("runs").and_then(Value::as_u64).unwrap_or(0) == 0 {
            o.push_str(&format!("  {}: not run yet\n", s(c, "name")));
            continue;
        }
        o.push_str(&format!(
            "  {} [{}]: {}  (runs {}, errors {}, last {} ms)\n",
            s(c, "name"),
            s(c, "kind"),
            s(c, "status"),
            s(c, "runs"),
            s(c, "errors"),
            s(c, "duration_ms"),
        ));
        let msg = s(c, "message");
        if !msg.is_empty() {
            o.push_str(&format!("      {msg}\n"));
        }
        let err = s(c, "error");
        if !err.is_empty() {
            o.push_str(&format!("      error: {err}\n"));
        }
    }
    o
}

fn render_check(v: &Value) -> String {
    let mut o = format!(
        "{} [{}]: {} in {} ms\n",
        s(v, "name"),
        s(v, "kind"),
        s(v, "status"),
        s(v, "duration_ms")
    );
    let msg = s(v, "message");
    if !msg.is_empty() {
        o.push_str(&format!("  message: {msg}\n"));
    }
    let err = s(v, "error");
    if !err.is_empty() {
        o.push_str(&format!("  error: {err}\n"));
    }
    let empty = Vec::new();
    let scs = v
        .get("service_checks")
        .and_then(Value::as_array)
        .unwrap_or(&empty);
    if !scs.is_empty() {
        o.push_str("service checks:\n");
        for sc in scs {
            o.push_str(&format!(
                "  {} {} {} {}\n",
                s(sc, "name"),
                s(sc, "status"),
                s(sc, "tags"),
                s(sc, "message")
            ));
        }
    }
    let series = v.get("series").and_then(Value::as_array).unwrap_or(&empty);
    if !series.is_empty() {
        o.push_str("metrics:\n");
        for m in series {
            let value = m
                .get("points")
                .and_then(Value::as_array)
                .and_then(|p| p.first())
                .map(|p| s(p, "value"))
                .unwrap_or_default();
            o.push_str(&format!(
                "  {} {} = {} {}\n",
                s(m, "name"),
                s(m, "kind"),
                value,
                s(m, "tags")
            ));
        }
    }
    o
}
