//! `DIR/alerting.db`: monitors and their group states, channels (secrets sealed), escalation
//! policies, open alerts, and the delivery queue/log.
//!
//! Why SQLite rows as the delivery queue: a queued notification must survive a restart, and
//! the delivery log the API shows is the same rows, so what the API says was attempted is
//! exactly what was attempted.

use std::collections::BTreeMap;
use std::path::Path;

use rusqlite::{Connection, OptionalExtension, params};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use warden_alerting::{Escalation, GroupState};

pub(crate) type DbResult<T> = Result<T, rusqlite::Error>;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS meta (k TEXT PRIMARY KEY, v BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS monitors (
  id INTEGER PRIMARY KEY AUTOINCREMENT, org INTEGER NOT NULL, doc TEXT NOT NULL,
  created_ms INTEGER NOT NULL, modified_ms INTEGER NOT NULL);
CREATE INDEX IF NOT EXISTS monitors_org ON monitors(org);
CREATE TABLE IF NOT EXISTS monitor_groups (
  monitor_id INTEGER NOT NULL, grp TEXT NOT NULL, state TEXT NOT NULL,
  PRIMARY KEY (monitor_id, grp));
CREATE TABLE IF NOT EXISTS channels (
  org INTEGER NOT NULL, kind TEXT NOT NULL, name TEXT NOT NULL, public TEXT NOT NULL,
  sealed BLOB NOT NULL, created_ms INTEGER NOT NULL, modified_ms INTEGER NOT NULL,
  PRIMARY KEY (org, kind, name));
CREATE TABLE IF NOT EXISTS policies (
  org INTEGER NOT NULL, name TEXT NOT NULL, doc TEXT NOT NULL, is_default INTEGER NOT NULL,
  PRIMARY KEY (org, name));
CREATE TABLE IF NOT EXISTS alerts (
  org INTEGER NOT NULL, dedup_key TEXT NOT NULL, doc TEXT NOT NULL, updated_ms INTEGER NOT NULL,
  PRIMARY KEY (org, dedup_key));
CREATE TABLE IF NOT EXISTS deliveries (
  id INTEGER PRIMARY KEY AUTOINCREMENT, org INTEGER NOT NULL, kind TEXT NOT NULL,
  channel TEXT NOT NULL, dedup_key TEXT NOT NULL, transition TEXT NOT NULL,
  sealed BLOB, status TEXT NOT NULL, attempts INTEGER NOT NULL DEFAULT 0,
  last_status INTEGER, last_error TEXT, next_at_ms INTEGER NOT NULL,
  created_ms INTEGER NOT NULL, updated_ms INTEGER NOT NULL);
CREATE INDEX IF NOT EXISTS deliveries_due ON deliveries(status, next_at_ms);
CREATE INDEX IF NOT EXISTS deliveries_key ON deliveries(org, dedup_key);
";

pub(crate) fn open(path: &Path) -> DbResult<Connection> {
    let conn = Connection::open(path)?;
    {
        use std::os::unix::fs::PermissionsExt;
        let _ = std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600));
    }
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", "NORMAL")?;
    conn.busy_timeout(std::time::Duration::from_secs(5))?;
    conn.execute_batch(SCHEMA)?;
    // A crash mid-send leaves rows "sending": send them again (at-least-once).
    conn.execute(
        "UPDATE deliveries SET status = 'pending' WHERE status = 'sending'",
        [],
    )?;
    Ok(conn)
}

/// The link-signing key: 32 random bytes, sealed with the store's record key.
pub(crate) fn link_key(
    conn: &Connection,
    store: &warden_store::Store,
) -> Result<ring::hmac::Key, String> {
    const AAD: &[u8] = b"warden-alerting:link-key";
    let sealed: Option<Vec<u8>> = conn
        .query_row("SELECT v FROM meta WHERE k = 'link_key'", [], |r| r.get(0))
        .optional()
        .map_err(|e| e.to_string())?;
    let raw = match sealed {
        Some(s) => store.open_record(AAD, &s).map_err(|e| e.to_string())?,
        None => {
            let mut k = vec![0u8; 32];
            ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut k)
                .map_err(|_| "no randomness for the link key".to_owned())?;
            let s = store.seal_record(AAD, &k).map_err(|e| e.to_string())?;
            conn.execute(
                "INSERT INTO meta (k, v) VALUES ('link_key', ?1)",
                params![s],
            )
            .map_err(|e| e.to_string())?;
            k
        }
    };
    Ok(ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &raw))
}

// ---- monitors ----

#[derive(Clone, Debug)]
pub(crate) struct MonitorRow {
    pub(crate) id: i64,
    pub(crate) org: u64,
    pub(crate) doc: Value,
    pub(crate) created_ms: i64,
    pub(crate) modified_ms: i64,
}

fn monitor_row(r: &rusqlite::Row<'_>) -> DbResult<MonitorRow> {
    let doc: String = r.get(2)?;
    Ok(MonitorRow {
        id: r.get(0)?,
        org: r.get::<_, i64>(1)? as u64,
        doc: serde_json::from_str(&doc).unwrap_or(Value::Null),
        created_ms: r.get(3)?,
        modified_ms: r.get(4)?,
    })
}

pub(crate) fn monitor_insert(c: &Connection, org: u64, doc: &Value, now: i64) -> DbResult<i64> {
    c.execute(
        "INSERT INTO monitors (org, doc, created_ms, modified_ms) VALUES (?1, ?2, ?3, ?3)",
        params![org as i64, doc.to_string(), now],
    )?;
    Ok(c.last_insert_rowid())
}

pub(crate) fn monitor_get(c: &Connection, org: u64, id: i64) -> DbResult<Option<MonitorRow>> {
    c.query_row(
        "SELECT id, org, doc, created_ms, modified_ms FROM monitors WHERE org = ?1 AND id = ?2",
        params![org as i64, id],
        monitor_row,
    )
    .optional()
}

pub(crate) fn monitor_list(c: &Connection, org: Option<u64>) -> DbResult<Vec<MonitorRow>> {
    let mut st = c.prepare(
        "SELECT id, org, doc, created_ms, modified_ms FROM monitors
         WHERE ?1 IS NULL OR org = ?1 ORDER BY id",
    )?;
    let rows = st.query_map(params![org.map(|o| o as i64)], monitor_row)?;
    rows.collect()
}

pub(crate) fn monitor_update(
    c: &Connection,
    org: u64,
    id: i64,
    doc: &Value,
    now: i64,
) -> DbResult<bool> {
    let n = c.execute(
        "UPDATE monitors SET doc = ?3, modified_ms = ?4 WHERE org = ?1 AND id = ?2",
        params![org as i64, id, doc.to_string(), now],
    )?;
    Ok(n > 0)
}

pub(crate) fn monitor_delete(c: &Connection, org: u64, id: i64) -> DbResult<bool> {
    let n = c.execute(
        "DELETE FROM monitors WHERE org = ?1 AND id = ?2",
        params![org as i64, id],
    )?;
    c.execute(
        "DELETE FROM monitor_groups WHERE monitor_id = ?1",
        params![id],
    )?;
    Ok(n > 0)
}

pub(crate) fn groups_load(c: &Connection, id: i64) -> DbResult<BTreeMap<String, GroupState>> {
    let mut st = c.prepare("SELECT grp, state FROM monitor_groups WHERE monitor_id = ?1")?;
    let rows = st.query_map(params![id], |r| {
        Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?))
    })?;
    let mut out = BTreeMap::new();
    for row in rows {
        let (g, s) = row?;
        if let Ok(s) = serde_json::from_str(&s) {
            out.insert(g, s);
        }
    }
    Ok(out)
}

pub(crate) fn groups_save(
    c: &mut Connection,
    id: i64,
    groups: &BTreeMap<String, GroupState>,
) -> DbResult<()> {
    let tx = c.transaction()?;
    tx.execute(
        "DELETE FROM monitor_groups WHERE monitor_id = ?1",
        params![id],
    )?;
    for (g, s) in groups {
        tx.execute(
            "INSERT INTO monitor_groups (monitor_id, grp, state) VALUES (?1, ?2, ?3)",
            params![id, g, serde_json::to_string(s).unwrap_or_default()],
        )?;
    }
    tx.commit()
}

// ---- channels ----

/// `pagerduty`, `slack` or `webhook`.
pub(crate) struct ChannelRow {
    pub(crate) name: String,
    pub(crate) public: Value,
    pub(crate) sealed: Vec<u8>,
}

pub(crate) fn channel_aad(org: u64, kind: &str, name: &str) -> Vec<u8> {
    format!("warden-alerting:channel:{org}:{kind}:{name}").into_bytes()
}

pub(crate) fn channel_put(
    c: &Connection,
    org: u64,
    kind: &str,
    name: &str,
    public: &Value,
    sealed: &[u8],
    now: i64,
) -> DbResult<()> {
    c.execute(
        "INSERT INTO channels (org, kind, name, public, sealed, created_ms, modified_ms)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?6)
         ON CONFLICT (org, kind, name) DO UPDATE SET public = ?4, sealed = ?5, modified_ms = ?6",
        params![org as i64, kind, name, public.to_string(), sealed, now],
    )?;
    Ok(())
}

fn channel_row(r: &rusqlite::Row<'_>) -> DbResult<ChannelRow> {
    let public: String = r.get(1)?;
    Ok(ChannelRow {
        name: r.get(0)?,
        public: serde_json::from_str(&public).unwrap_or(Value::Null),
        sealed: r.get(2)?,
    })
}

pub(crate) fn channel_get(
    c: &Connection,
    org: u64,
    kind: &str,
    name: &str,
) -> DbResult<Option<ChannelRow>> {
    c.query_row(
        "SELECT name, public, sealed FROM channels WHERE org = ?1 AND kind = ?2 AND name = ?3",
        params![org as i64, kind, name],
        channel_row,
    )
    .optional()
}

pub(crate) fn channel_list(c: &Connection, org: u64, kind: &str) -> DbResult<Vec<ChannelRow>> {
    let mut st = c.prepare(
        "SELECT name, public, sealed FROM channels WHERE org = ?1 AND kind = ?2 ORDER BY name",
    )?;
    let rows = st.query_map(params![org as i64, kind], channel_row)?;
    rows.collect()
}

pub(crate) fn channel_delete(c: &Connection, org: u64, kind: &str, name: &str) -> DbResult<bool> {
    Ok(c.execute(
        "DELETE FROM channels WHERE org = ?1 AND kind = ?2 AND name = ?3",
        params![org as i64, kind, name],
    )? > 0)
}

// ---- escalation policies ----

pub(crate) fn policy_put(
    c: &Connection,
    org: u64,
    name: &str,
    doc: &Value,
    is_default: bool,
) -> DbResult<()> {
    let tx = c.unchecked_transaction()?;
    if is_default {
        tx.execute(
            "UPDATE policies SET is_default = 0 WHERE org = ?1",
            params![org as i64],
        )?;
    }
    tx.execute(
        "INSERT INTO policies (org, name, doc, is_default) VALUES (?1, ?2, ?3, ?4)
         ON CONFLICT (org, name) DO UPDATE SET doc = ?3, is_default = ?4",
        params![org as i64, name, doc.to_string(), is_default as i64],
    )?;
    tx.commit()
}

/// (doc, is_default).
pub(crate) fn policy_get(c: &Connection, org: u64, name: &str) -> DbResult<Option<(Value, bool)>> {
    c.query_row(
        "SELECT doc, is_default FROM policies WHERE org = ?1 AND name = ?2",
        params![org as i64, name],
        |r| {
            let d: String = r.get(0)?;
            Ok((
                serde_json::from_str(&d).unwrap_or(Value::Null),
                r.get::<_, i64>(1)? != 0,
            ))
        },
    )
    .optional()
}

pub(crate) fn policy_default(c: &Connection, org: u64) -> DbResult<Option<Value>> {
    c.query_row(
        "SELECT doc FROM policies WHERE org = ?1 AND is_default = 1",
        params![org as i64],
        |r| {
            let d: String = r.get(0)?;
            Ok(serde_json::from_str(&d).unwrap_or(Value::Null))
        },
    )
    .optional()
}

pub(crate) fn policy_list(c: &Connection, org: u64) -> DbResult<Vec<(Value, bool)>> {
    let mut st = c.prepare("SELECT doc, is_default FROM policies WHERE org = ?1 ORDER BY name")?;
    let rows = st.query_map(params![org as i64], |r| {
        let d: String = r.get(0)?;
        Ok((
            serde_json::from_str(&d).unwrap_or(Value::Null),
            r.get::<_, i64>(1)? != 0,
        ))
    })?;
    rows.collect()
}

pub(crate) fn policy_delete(c: &Connection, org: u64, name: &str) -> DbResult<bool> {
    Ok(c.execute(
        "DELETE FROM policies WHERE org = ?1 AND name = ?2",
        params![org as i64, name],
    )? > 0)
}

// ---- alerts ----

/// One alert (one dedup key) across its lifecycle.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct AlertDoc {
    /// `triggered`, `acknowledged` or `resolved`.
    pub(crate) status: String,
    pub(crate) source: Value,
    pub(crate) title: String,
    pub(crate) message: String,
    pub(crate) severity: String,
    #[serde(default)]
    pub(crate) tags: Vec<String>,
    #[serde(default)]
    pub(crate) vars: BTreeMap<String, String>,
    #[serde(default)]
    pub(crate) policy: Option<String>,
    #[serde(default)]
    pub(crate) escalation: Option<Escalation>,
    /// Handles told about this cycle (they get its acknowledge and resolve).
    #[serde(default)]
    pub(crate) notified: Vec<String>,
    pub(crate) triggered_at: i64,
    #[serde(default)]
    pub(crate) acknowledged_at: Option<i64>,
    #[serde(default)]
    pub(crate) acknowledged_by: Option<String>,
    #[serde(default)]
    pub(crate) resolved_at: Option<i64>,
    #[serde(default)]
    pub(crate) cycle: u32,
}

pub(crate) fn alert_get(c: &Connection, org: u64, key: &str) -> DbResult<Option<AlertDoc>> {
    let doc: Option<String> = c
        .query_row(
            "SELECT doc FROM alerts WHERE org = ?1 AND dedup_key = ?2",
            params![org as i64, key],
            |r| r.get(0),
        )
        .optional()?;
    Ok(doc.and_then(|d| serde_json::from_str(&d).ok()))
}

pub(crate) fn alert_put(
    c: &Connection,
    org: u64,
    key: &str,
    doc: &AlertDoc,
    now: i64,
) -> DbResult<()> {
    c.execute(
        "INSERT INTO alerts (org, dedup_key, doc, updated_ms) VALUES (?1, ?2, ?3, ?4)
         ON CONFLICT (org, dedup_key) DO UPDATE SET doc = ?3, updated_ms = ?4",
        params![
            org as i64,
            key,
            serde_json::to_string(doc).unwrap_or_default(),
            now
        ],
    )?;
    Ok(())
}

/// (org, dedup key, alert) of every alert, or of one org.
pub(crate) fn alert_list(
    c: &Connection,
    org: Option<u64>,
) -> DbResult<Vec<(u64, String, AlertDoc)>> {
    let mut st = c.prepare(
        "SELECT org, dedup_key, doc FROM alerts WHERE ?1 IS NULL OR org = ?1
         ORDER BY updated_ms DESC LIMIT 1000",
    )?;
    let rows = st.query_map(params![org.map(|o| o as i64)], |r| {
        Ok((
            r.get::<_, i64>(0)? as u64,
            r.get::<_, String>(1)?,
            r.get::<_, String>(2)?,
        ))
    })?;
    let mut out = Vec::new();
    for row in rows {
        let (o, k, d) = row?;
        if let Ok(d) = serde_json::from_str(&d) {
            out.push((o, k, d));
        }
    }
    Ok(out)
}

// ---- deliveries ----

/// What is sent (sealed at rest: it embeds routing keys, URLs and header values).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct OutRequest {
    pub(crate) url: String,
    pub(crate) headers: Vec<(String, String)>,
    pub(crate) content_type: String,
    pub(crate) body: String,
}

pub(crate) fn delivery_aad(org: u64, kind: &str, channel: &str, key: &str) -> Vec<u8> {
    format!("warden-alerting:delivery:{org}:{kind}:{channel}:{key}").into_bytes()
}

pub(crate) struct NewDelivery<'a> {
    pub(crate) org: u64,
    pub(crate) kind: &'a str,
    pub(crate) channel: &'a str,
    pub(crate) dedup_key: &'a str,
    pub(crate) transition: &'a str,
    /// None: nothing to send (e.g. unknown channel); recorded as failed with `error`.
    pub(crate) sealed: Option<Vec<u8>>,
    pub(crate) error: Option<String>,
}

pub(crate) fn delivery_insert(c: &Connection, d: &NewDelivery<'_>, now: i64) -> DbResult<i64> {
    let status = if d.sealed.is_some() {
        "pending"
    } else {
        "failed"
    };
    c.execute(
        "INSERT INTO deliveries (org, kind, channel, dedup_key, transition, sealed, status,
           attempts, last_error, next_at_ms, created_ms, updated_ms)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, 0, ?8, ?9, ?9, ?9)",
        params![
            d.org as i64,
            d.kind,
            d.channel,
            d.dedup_key,
            d.transition,
            d.sealed,
            status,
            d.error,
            now
        ],
    )?;
    Ok(c.last_insert_rowid())
}

pub(crate) struct DueDelivery {
    pub(crate) id: i64,
    pub(crate) org: u64,
    pub(crate) kind: String,
    pub(crate) channel: String,
    pub(crate) dedup_key: String,
    pub(crate) sealed: Vec<u8>,
    pub(crate) attempts: u32,
}

/// Pending deliveries due at `now`, oldest first, at most one per (channel, alert): a younger
/// one waits for the older to finish. Marks them `sending`.
pub(crate) fn deliveries_take_due(
    c: &Connection,
    now: i64,
    limit: usize,
) -> DbResult<Vec<DueDelivery>> {
    let out: Vec<DueDelivery> = {
        let mut st = c.prepare(
            "SELECT id, org, kind, channel, dedup_key, sealed, attempts FROM deliveries d
             WHERE status = 'pending' AND next_at_ms <= ?1
               AND NOT EXISTS (SELECT 1 FROM deliveries e
                 WHERE e.status IN ('pending', 'sending') AND e.org = d.org AND e.kind = d.kind
                   AND e.channel = d.channel AND e.dedup_key = d.dedup_key AND e.id < d.id)
             ORDER BY id LIMIT ?2",
        )?;
        let rows = st.query_map(params![now, limit as i64], |r| {
            Ok(DueDelivery {
                id: r.get(0)?,
                org: r.get::<_, i64>(1)? as u64,
                kind: r.get(2)?,
                channel: r.get(3)?,
                dedup_key: r.get(4)?,
                sealed: r.get::<_, Option<Vec<u8>>>(5)?.unwrap_or_default(),
                attempts: r.get::<_, i64>(6)? as u32,
            })
        })?;
        rows.collect::<DbResult<_>>()?
    };
    for d in &out {
        c.execute(
            "UPDATE deliveries SET status = 'sending' WHERE id = ?1",
            params![d.id],
        )?;
    }
    Ok(out)
}

pub(crate) struct AttemptResult<'a> {
    pub(crate) status: &'a str,
    pub(crate) attempts: u32,
    pub(crate) last_status: Option<u16>,
    pub(crate) last_error: Option<String>,
    pub(crate) next_at_ms: i64,
}

pub(crate) fn delivery_record(
    c: &Connection,
    id: i64,
    r: &AttemptResult<'_>,
    now: i64,
) -> DbResult<()> {
    // A finished delivery no longer needs its (secret-bearing) request.
    let drop_body = r.status != "pending";
    c.execute(
        "UPDATE deliveries SET status = ?2, attempts = ?3, last_status = ?4, last_error = ?5,
           next_at_ms = ?6, updated_ms = ?7,
           sealed = CASE WHEN ?8 THEN NULL ELSE sealed END
         WHERE id = ?1",
        params![
            id,
            r.status,
            r.attempts as i64,
            r.last_status.map(i64::from),
            r.last_error,
            r.next_at_ms,
            now,
            drop_body
        ],
    )?;
    Ok(())
}

/// The delivery log as the API shows it (never the request).
pub(crate) fn delivery_list(
    c: &Connection,
    org: u64,
    dedup_key: Option<&str>,
    limit: usize,
) -> DbResult<Vec<Value>> {
    let mut st = c.prepare(
        "SELECT id, kind, channel, dedup_key, transition, status, attempts, last_status,
                last_error, next_at_ms, created_ms, updated_ms
         FROM deliveries WHERE org = ?1 AND (?2 IS NULL OR dedup_key = ?2)
         ORDER BY id DESC LIMIT ?3",
    )?;
    let rows = st.query_map(params![org as i64, dedup_key, limit as i64], |r| {
        let status: String = r.get(5)?;
        let next: i64 = r.get(9)?;
        Ok(serde_json::json!({
            "id": r.get::<_, i64>(0)?,
            "channel": {"type": r.get::<_, String>(1)?, "name": r.get::<_, String>(2)?},
            "dedup_key": r.get::<_, String>(3)?,
            "transition": r.get::<_, String>(4)?,
            "status": status,
            "attempts": r.get::<_, i64>(6)?,
            "last_status_code": r.get::<_, Option<i64>>(7)?,
            "last_error": r.get::<_, Option<String>>(8)?,
            "next_retry_at": if status == "pending" { Value::from(super::iso_ms(next)) } else { Value::Null },
            "created_at": super::iso_ms(r.get(10)?),
            "updated_at": super::iso_ms(r.get(11)?),
        }))
    })?;
    rows.collect()
}

/// Drops finished deliveries and resolved alerts last touched before `before_ms`.
pub(crate) fn prune(c: &Connection, before_ms: i64) -> DbResult<()> {
    c.execute(
        "DELETE FROM deliveries WHERE status IN ('delivered', 'failed') AND updated_ms < ?1",
        params![before_ms],
    )?;
    c.execute(
        "DELETE FROM alerts WHERE updated_ms < ?1 AND doc LIKE '%\"status\":\"resolved\"%'",
        params![before_ms],
    )?;
    Ok(())
}
