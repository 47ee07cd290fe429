//! `warden signals list|get|ack|resolve`: security signals from a Warden server's v2 API.
//!
//! Why through the HTTP API and not the data directory: the person acknowledging a page is
//! rarely on the server host, and the API is where authorization (application keys) and the
//! notification side effects (acknowledge stops escalation, resolve resolves the page) live.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Args, Subcommand};
use serde_json::{Value, json};

use crate::server_cmd::ServerAccess;

#[derive(Args, Debug)]
pub(crate) struct SignalsArgs {
    #[command(subcommand)]
    command: SignalsCommand,
    /// Server URL (default: from DIR/credentials.json).
    #[arg(long, global = true)]
    url: Option<String>,
    #[arg(long, env = "DD_API_KEY", hide_env_values = true, global = true)]
    api_key: Option<String>,
    #[arg(long, env = "DD_APP_KEY", hide_env_values = true, global = true)]
    app_key: Option<String>,
    /// CA certificate to trust (default: from DIR/credentials.json).
    #[arg(long, value_name = "FILE", global = true)]
    ca_file: Option<PathBuf>,
    /// Where credentials.json is.
    #[arg(long, value_name = "DIR", env = "WARDEN_DATA_DIR", global = true)]
    data_dir: Option<PathBuf>,
    /// Print the raw JSON response.
    #[arg(long, global = true)]
    json: bool,
}

#[derive(Subcommand, Debug)]
enum SignalsCommand {
    /// List signals, newest first.
    List {
        /// Search query, e.g. `status:high env:prod @http.client_ip:1.2.3.4`.
        #[arg(long, short = 'q', default_value = "")]
        query: String,
        /// Start: `now-1h`, ISO-8601 or UNIX ms.
        #[arg(long, default_value = "now-24h")]
        from: String,
        /// End.
        #[arg(long, default_value = "now")]
        to: String,
        /// Most signals to print.
        #[arg(long, default_value_t = 50)]
        limit: u32,
    },
    /// Show one signal.
    Get { id: String },
    /// Acknowledge: triage state `under_review` (stops escalation).
    Ack { id: String },
    /// Resolve: triage state `archived` (resolves the page).
    Resolve {
        id: String,
        /// Archive reason (none, false_positive, testing_or_maintenance, remediated,
        /// investigated_case_opened, true_positive_benign, true_positive_malicious, other).
        #[arg(long, default_value = "none")]
        reason: String,
        #[arg(long)]
        comment: Option<String>,
    },
}

struct Api {
    client: reqwest::Client,
    url: String,
    api_key: String,
    app_key: String,
}

impl Api {
    fn from_args(a: &SignalsArgs) -> anyhow::Result<Api> {
        let s = ServerAccess::resolve(
            a.data_dir.clone(),
            a.url.clone(),
            a.api_key.clone(),
            a.app_key.clone(),
            a.ca_file.clone(),
        )?;
        Ok(Api {
            client: s.client,
            url: s.url,
            api_key: s.api_key,
            app_key: s.app_key,
        })
    }

    async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        query: &[(&str, String)],
        body: Option<Value>,
    ) -> anyhow::Result<(reqwest::StatusCode, Value)> {
        let mut req = self
            .client
            .request(method, format!("{}{path}", self.url))
            .query(query)
            .header("DD-API-KEY", &self.api_key)
            .header("DD-APPLICATION-KEY", &self.app_key);
        if let Some(b) = body {
            req = req
                .header("Content-Type", "application/json")
                .body(serde_json::to_vec(&b)?);
        }
        let resp = req.send().await?;
        let status = resp.status();
        let text = resp.text().await?;
        let v = serde_json::from_str(&text)
            .with_context(|| format!("server answered {status} with non-JSON"))?;
        Ok((status, v))
    }
}

fn col(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

fn print_list(v: &Value) {
    let rows: Vec<[String; 6]> = v["data"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|s| {
            let a = &s["attributes"];
            let inner = &a["attributes"];
            [
                col(&s["id"]),
                col(&a["timestamp"]),
                col(&a["status"]),
                col(&inner["workflow"]["triage"]["state"]),
                col(&inner["workflow"]["rule"]["id"]),
                col(&inner["title"]),
            ]
        })
        .collect();
    if rows.is_empty() {
        println!("no signals");
        return;
    }
    let head = ["ID", "TIMESTAMP", "STATUS", "STATE", "RULE", "TITLE"];
    let mut w = head.map(str::len);
    for r in &rows {
        for (i, c) in r.iter().enumerate() {
            w[i] = w[i].max(c.chars().count());
        }
    }
    let line = |r: &[&str]| {
        let mut s = String::new();
        for (i, c) in r.iter().enumerate() {
            if i + 1 == r.len() {
                s.push_str(c);
            } else {
                s.push_str(&format!("{c:<width$}  ", width = w[i]));
            }
        }
        println!("{}", s.trim_end());
    };
    line(&head);
    for r in &rows {
        line(&r.iter().map(String::as_str).collect::<Vec<_>>());
    }
}

fn print_signal(v: &Value) {
    let s = &v["data"];
    let a = &s["attributes"];
    let c = &a["custom"];
    println!("id:        {}", col(&s["id"]));
    println!("title:     {}", col(&c["title"]));
    println!("status:    {}", col(&a["status"]));
    println!("state:     {}", col(&c["workflow"]["triage"]["state"]));
    println!(
        "rule:      {} ({})",
        col(&c["workflow"]["rule"]["name"]),
        col(&c["workflow"]["rule"]["id"])
    );
    println!("timestamp: {}", col(&a["timestamp"]));
    println!(
        "seen:      {} .. {} ({} events)",
        col(&c["workflow"]["first_seen"]),
        col(&c["workflow"]["last_seen"]),
        col(&c["workflow"]["events_matched"])
    );
    if let Some(e) = c["entities"].as_array().filter(|e| !e.is_empty()) {
        println!(
            "entities:  {}",
            e.iter().map(col).collect::<Vec<_>>().join(", ")
        );
    }
    println!(
        "tags:      {}",
        a["tags"]
            .as_array()
            .into_iter()
            .flatten()
            .map(col)
            .collect::<Vec<_>>()
            .join(" ")
    );
    let msg = col(&a["message"]);
    if !msg.is_empty() {
        println!("\n{msg}");
    }
}

/// `warden signals ...`.
pub(crate) fn run(a: SignalsArgs) -> anyhow::Result<ExitCode> {
    let api = Api::from_args(&a)?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let base = "/api/v2/security_monitoring/signals";
    let (status, v) = rt.block_on(async {
        match &a.command {
            SignalsCommand::List {
                query,
                from,
                to,
                limit,
            } => {
                api.call(
                    reqwest::Method::GET,
                    base,
                    &[
                        ("filter[query]", query.clone()),
                        ("filter[from]", from.clone()),
                        ("filter[to]", to.clone()),
                        ("sort", "-timestamp".into()),
                        ("page[limit]", limit.to_string()),
                    ],
                    None,
                )
                .await
            }
            SignalsCommand::Get { id } => {
                api.call(reqwest::Method::GET, &format!("{base}/{id}"), &[], None)
                    .await
            }
            SignalsCommand::Ack { id } => {
                api.call(
                    reqwest::Method::PATCH,
                    &format!("{base}/{id}/state"),
                    &[],
                    Some(json!({"data": {"type": "signal_metadata", "attributes": {"state": "under_review"}}})),
                )
                .await
            }
            SignalsCommand::Resolve {
                id,
                reason,
                comment,
            } => {
                let mut attrs = json!({"state": "archived", "archive_reason": reason});
                if let Some(c) = comment {
                    attrs["archive_comment"] = json!(c);
                }
                api.call(
                    reqwest::Method::PATCH,
                    &format!("{base}/{id}/state"),
                    &[],
                    Some(json!({"data": {"type": "signal_metadata", "attributes": attrs}})),
                )
                .await
            }
        }
    })?;
    if !status.is_success() {
        let msg = v["errors"][0].as_str().unwrap_or("(no message)");
        eprintln!("warden: signals: server answered {status}: {msg}");
        return Ok(ExitCode::from(1));
    }
    if a.json {
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(ExitCode::SUCCESS);
    }
    match &a.command {
        SignalsCommand::List { .. } => print_list(&v),
        SignalsCommand::Get { .. } => print_signal(&v),
        SignalsCommand::Ack { id } | SignalsCommand::Resolve { id, .. } => {
            println!("{id}: {}", col(&v["data"]["attributes"]["state"]));
        }
    }
    Ok(ExitCode::SUCCESS)
}
