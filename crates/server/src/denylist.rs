//! The denylist (blocked IPs and users, each with an optional expiry) and the operator's
//! app-protection ruleset: what agents pull and hand to protected applications.
//!
//! Why here and in this shape:
//! * **One source for operators and detection rules.** The API (`/api/v2/warden/denylist`)
//!   and detection-rule actions (`block_ip` / `block_user`, through [`State::block`]) write
//!   the same list; agents read it with their API key as Datadog's `ASM_DATA` `rules_data`
//!   payload (`/api/v2/warden/appsec/rules_data`), the format libddwaf and Warden's WAF parse,
//!   so the layer applies it as-is and the WAF itself enforces expirations.
//! * **Sealed at rest.** IPs and user ids are personal data: each entry's value and reason
//!   are sealed with the store's records key (`Store::seal_record`, bound to org and target),
//!   like security events. SQLite (`DIR/denylist.db`, 0600) keeps only the org, the target
//!   kind and the expiry in the clear; the decrypted list lives in memory (it is small and
//!   read on every agent poll).
//! * **Expired entries vanish by themselves**: every read filters them, every write purges
//!   them.
//! * **A ruleset upload is checked by the WAF engine** before it is accepted: a document that
//!   loads no rule is refused with the engine's diagnostics, so agents never receive a
//!   ruleset that would leave applications unprotected.

use std::collections::HashMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};
use rusqlite::{Connection, params};
use serde_json::{Value, json};

use crate::{ApiError, AppState, BodyLimit, ServerError};

const DENYLIST: &str = "/api/v2/warden/denylist";
const RULES_DATA: &str = "/api/v2/warden/appsec/rules_data";
const RULESET: &str = "/api/v2/warden/appsec/ruleset";

/// Denylist entry bodies.
const ENTRY_BODY: BodyLimit = BodyLimit {
    compressed: 64 * 1024,
    decompressed: 256 * 1024,
};
/// Ruleset uploads (Datadog's recommended ruleset is ~430 KiB).
const RULESET_BODY: BodyLimit = BodyLimit {
    compressed: 4 * 1024 * 1024,
    decompressed: 16 * 1024 * 1024,
};
/// Longest user id accepted (Datadog caps span tag values well above real user ids).
const MAX_USER_LEN: usize = 256;
const MAX_REASON_LEN: usize = 1024;
/// Entries per org (each agent poll carries them all).
const MAX_ENTRIES: usize = 100_000;
/// Expiries further out than this are refused (typo guard: milliseconds for seconds).
const MAX_EXPIRY_SECS: i64 = 100 * 365 * 86_400;

/// What a denylist entry blocks.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) enum Target {
    Ip,
    User,
}

impl Target {
    fn as_str(self) -> &'static str {
        match self {
            Target::Ip => "ip",
            Target::User => "user",
        }
    }

    fn parse(s: &str) -> Option<Target> {
        match s {
            "ip" => Some(Target::Ip),
            "user" => Some(Target::User),
            _ => None,
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
struct Entry {
    id: i64,
    target: Target,
    value: String,
    expires_at: Option<i64>,
    reason: String,
    created_at: i64,
}

impl Entry {
    fn live(&self, now: i64) -> bool {
        self.expires_at.is_none_or(|e| e > now)
    }

    fn to_json(&self) -> Value {
        json!({
            "type": "denylist_entry",
            "id": format!("{}:{}", self.target.as_str(), self.value),
            "attributes": {
                "target": self.target.as_str(),
                "value": self.value,
                "expires_at": self.expires_at,
                "reason": self.reason,
                "created_at": self.created_at,
            }
        })
    }
}

/// Denylist and ruleset state.
pub(crate) struct State {
    path: PathBuf,
    store: Arc<warden_store::Store>,
    inner: Mutex<Inner>,
}

struct Inner {
    db: Connection,
    /// org -> entries (decrypted; the table's authoritative copy in memory).
    entries: HashMap<u64, Vec<Entry>>,
    /// org -> uploaded ruleset (JSON text).
    rulesets: HashMap<u64, Arc<String>>,
}

fn db_err(path: &Path, e: impl std::fmt::Display) -> ServerError {
    ServerError::Io {
        path: path.to_owned(),
        source: std::io::Error::other(e.to_string()),
    }
}

fn invalid(path: &Path, msg: String) -> ServerError {
    ServerError::Io {
        path: path.to_owned(),
        source: std::io::Error::new(std::io::ErrorKind::InvalidInput, msg),
    }
}

fn aad(kind: &str, org: u64, target: &str) -> Vec<u8> {
    format!("{kind}|{org}|{target}").into_bytes()
}

impl State {
    pub(crate) fn open(ctx: &crate::OpenCtx<'_>) -> Result<State, ServerError> {
        let path = ctx.data_dir.join("denylist.db");
        if !path.exists() {
            use std::os::unix::fs::OpenOptionsExt;
            std::fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(false)
                .mode(0o600)
                .open(&path)
                .map_err(|source| ServerError::Io {
                    path: path.clone(),
                    source,
                })?;
        }
        let db = Connection::open(&path).map_err(|e| db_err(&path, e))?;
        db.busy_timeout(std::time::Duration::from_secs(10))
            .map_err(|e| db_err(&path, e))?;
        db.execute_batch(
            "PRAGMA journal_mode = WAL;
             PRAGMA synchronous = FULL;
             CREATE TABLE IF NOT EXISTS denylist (
                 id INTEGER PRIMARY KEY,
                 org INTEGER NOT NULL,
                 target TEXT NOT NULL CHECK (target IN ('ip', 'user')),
                 sealed BLOB NOT NULL,
                 expires_at INTEGER,
                 created INTEGER NOT NULL
             );
             CREATE INDEX IF NOT EXISTS denylist_org ON denylist (org);
             CREATE TABLE IF NOT EXISTS rulesets (
                 org INTEGER PRIMARY KEY,
                 sealed BLOB NOT NULL,
                 updated INTEGER NOT NULL
             );",
        )
        .map_err(|e| db_err(&path, e))?;
        for ext in ["db-wal", "db-shm"] {
            let p = path.with_extension(ext);
            if p.exists() {
                use std::os::unix::fs::PermissionsExt;
                std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600))
                    .map_err(|source| ServerError::Io { path: p, source })?;
            }
        }
        let store = Arc::clone(ctx.store);
        let now = crate::now_secs();
        db.execute(
            "DELETE FROM denylist WHERE expires_at IS NOT NULL AND expires_at <= ?1",
            [now],
        )
        .map_err(|e| db_err(&path, e))?;
        let mut entries: HashMap<u64, Vec<Entry>> = HashMap::new();
        {
            let mut stmt = db
                .prepare(
                    "SELECT id, org, target, sealed, expires_at, created FROM denylist ORDER BY id",
                )
                .map_err(|e| db_err(&path, e))?;
            let rows = stmt
                .query_map([], |r| {
                    Ok((
                        r.get::<_, i64>(0)?,
                        r.get::<_, i64>(1)?,
                        r.get::<_, String>(2)?,
                        r.get::<_, Vec<u8>>(3)?,
                        r.get::<_, Option<i64>>(4)?,
                        r.get::<_, i64>(5)?,
                    ))
                })
                .map_err(|e| db_err(&path, e))?;
            for row in rows {
                let (id, org, target, sealed, expires_at, created_at) =
                    row.map_err(|e| db_err(&path, e))?;
                let org = org as u64;
                let t = Target::parse(&target)
                    .ok_or_else(|| db_err(&path, format!("row {id}: bad target {target:?}")))?;
                let plain = store.open_record(&aad("denylist", org, &target), &sealed)?;
                let v: Value = serde_json::from_slice(&plain)
                    .map_err(|e| db_err(&path, format!("row {id}: {e}")))?;
                entries.entry(org).or_default().push(Entry {
                    id,
                    target: t,
                    value: v["value"].as_str().unwrap_or_default().to_string(),
                    expires_at,
                    reason: v["reason"].as_str().unwrap_or_default().to_string(),
                    created_at,
                });
            }
        }
        let mut rulesets = HashMap::new();
        {
            let mut stmt = db
                .prepare("SELECT org, sealed FROM rulesets")
                .map_err(|e| db_err(&path, e))?;
            let rows = stmt
                .query_map([], |r| Ok((r.get::<_, i64>(0)?, r.get::<_, Vec<u8>>(1)?)))
                .map_err(|e| db_err(&path, e))?;
            for row in rows {
                let (org, sealed) = row.map_err(|e| db_err(&path, e))?;
                let org = org as u64;
                let plain = store.open_record(&aad("ruleset", org, "appsec"), &sealed)?;
                let text = String::from_utf8(plain).map_err(|e| db_err(&path, e))?;
                rulesets.insert(org, Arc::new(text));
            }
        }
        Ok(State {
            path,
            store,
            inner: Mutex::new(Inner {
                db,
                entries,
                rulesets,
            }),
        })
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Blocks `value` for `org` until `expires_at` (UNIX seconds; `None` = until unblocked).
    /// Blocking an already blocked value replaces its expiry and reason. Called by
    /// detection-rule actions (`block_ip` / `block_user`).
    pub(crate) fn block(
        &self,
        org: u64,
        target: Target,
        value: &str,
        expires_at: Option<i64>,
        reason: &str,
    ) -> Result<(), ServerError> {
        let now = crate::now_secs();
        let value =
            validate(target, value, expires_at, reason, now).map_err(|m| invalid(&self.path, m))?;
        self.upsert(org, target, &value, expires_at, reason, now)
            .map(|_| ())
    }

    /// Inserts or replaces; returns the entry and whether it is new.
    fn upsert(
        &self,
        org: u64,
        target: Target,
        value: &str,
        expires_at: Option<i64>,
        reason: &str,
        now: i64,
    ) -> Result<(Entry, bool), ServerError> {
        let sealed = self.store.seal_record(
            &aad("denylist", org, target.as_str()),
            json!({"value": value, "reason": reason})
                .to_string()
                .as_bytes(),
        )?;
        let mut g = self.lock();
        purge(&mut g, org, now, &self.path)?;
        let existing = g.entries.get(&org).and_then(|v| {
            v.iter()
                .find(|e| e.target == target && e.value == value)
                .map(|e| (e.id, e.created_at))
        });
        let (id, created_at, new) = match existing {
            Some((id, created)) => {
                g.db.execute(
                    "UPDATE denylist SET sealed = ?1, expires_at = ?2 WHERE id = ?3",
                    params![sealed, expires_at, id],
                )
                .map_err(|e| db_err(&self.path, e))?;
                (id, created, false)
            }
            None => {
                if g.entries.get(&org).map_or(0, Vec::len) >= MAX_ENTRIES {
                    return Err(invalid(
                        &self.path,
                        format!("the denylist is full ({MAX_ENTRIES} entries)"),
                    ));
                }
                g.db.execute(
                    "INSERT INTO denylist (org, target, sealed, expires_at, created) VALUES (?1, ?2, ?3, ?4, ?5)",
                    params![org as i64, target.as_str(), sealed, expires_at, now],
                )
                .map_err(|e| db_err(&self.path, e))?;
                (g.db.last_insert_rowid(), now, true)
            }
        };
        let entry = Entry {
            id,
            target,
            value: value.to_string(),
            expires_at,
            reason: reason.to_string(),
            created_at,
        };
        let list = g.entries.entry(org).or_default();
        list.retain(|e| e.id != id);
        list.push(entry.clone());
        tracing::info!(
            org,
            target = target.as_str(),
            ?expires_at,
            "denylist: blocked"
        );
        Ok((entry, new))
    }

    /// Removes an entry; false when there was none.
    fn unblock(&self, org: u64, target: Target, value: &str) -> Result<bool, ServerError> {
        let mut g = self.lock();
        let Some(id) = g.entries.get(&org).and_then(|v| {
            v.iter()
                .find(|e| e.target == target && e.value == value)
                .map(|e| e.id)
        }) else {
            return Ok(false);
        };
        g.db.execute("DELETE FROM denylist WHERE id = ?1", [id])
            .map_err(|e| db_err(&self.path, e))?;
        if let Some(list) = g.entries.get_mut(&org) {
            list.retain(|e| e.id != id);
        }
        tracing::info!(org, target = target.as_str(), "denylist: unblocked");
        Ok(true)
    }

    fn list(&self, org: u64, now: i64) -> Vec<Entry> {
        self.lock()
            .entries
            .get(&org)
            .map(|v| v.iter().filter(|e| e.live(now)).cloned().collect())
            .unwrap_or_default()
    }

    /// The `ASM_DATA` payload for `org`'s agents.
    fn rules_data(&self, org: u64, now: i64) -> Value {
        let entries = self.list(org, now);
        let data = |t: Target| -> Vec<Value> {
            entries
                .iter()
                .filter(|e| e.target == t)
                .map(|e| json!({"value": e.value, "expiration": e.expires_at.unwrap_or(0)}))
                .collect()
        };
        json!({"rules_data": [
            {"id": "blocked_ips", "type": "ip_with_expiration", "data": data(Target::Ip)},
            {"id": "blocked_users", "type": "data_with_expiration", "data": data(Target::User)},
        ]})
    }

    fn ruleset(&self, org: u64) -> Option<Arc<String>> {
        self.lock().rulesets.get(&org).cloned()
    }

    fn set_ruleset(&self, org: u64, text: Option<String>) -> Result<bool, ServerError> {
        let mut g = self.lock();
        match text {
            Some(t) => {
                let sealed = self
                    .store
                    .seal_record(&aad("ruleset", org, "appsec"), t.as_bytes())?;
                g.db.execute(
                    "INSERT INTO rulesets (org, sealed, updated) VALUES (?1, ?2, ?3)
                     ON CONFLICT (org) DO UPDATE SET sealed = excluded.sealed, updated = excluded.updated",
                    params![org as i64, sealed, crate::now_secs()],
                )
                .map_err(|e| db_err(&self.path, e))?;
                g.rulesets.insert(org, Arc::new(t));
                Ok(true)
            }
            None => {
                g.db.execute("DELETE FROM rulesets WHERE org = ?1", [org as i64])
                    .map_err(|e| db_err(&self.path, e))?;
                Ok(g.rulesets.remove(&org).is_some())
            }
        }
    }
}

/// Drops `org`'s expired entries (table and memory).
fn purge(g: &mut Inner, org: u64, now: i64, path: &Path) -> Result<(), ServerError> {
    let expired: Vec<i64> = g
        .entries
        .get(&org)
        .map(|v| v.iter().filter(|e| !e.live(now)).map(|e| e.id).collect())
        .unwrap_or_default();
    for id in &expired {
        g.db.execute("DELETE FROM denylist WHERE id = ?1", [id])
            .map_err(|e| db_err(path, e))?;
    }
    if let Some(v) = g.entries.get_mut(&org) {
        v.retain(|e| e.live(now));
    }
    Ok(())
}

/// Checks an entry; returns the value in canonical form (IPs and networks as the WAF prints
/// them) or a message naming what is wrong.
fn validate(
    target: Target,
    value: &str,
    expires_at: Option<i64>,
    reason: &str,
    now: i64,
) -> Result<String, String> {
    if let Some(e) = expires_at {
        if e <= now {
            return Err(format!(
                "expires_at {e} is not in the future (now {now}); use null for no expiry"
            ));
        }
        if e > now + MAX_EXPIRY_SECS {
            return Err(format!(
                "expires_at {e} is more than 100 years away: it must be UNIX seconds"
            ));
        }
    }
    if reason.len() > MAX_REASON_LEN {
        return Err(format!("reason is longer than {MAX_REASON_LEN} bytes"));
    }
    match target {
        Target::Ip => canonical_ip(value),
        Target::User => {
            let v = value.trim();
            if v.is_empty() {
                return Err("value: a user id cannot be empty".into());
            }
            if v.len() > MAX_USER_LEN {
                return Err(format!(
                    "value: a user id is at most {MAX_USER_LEN} bytes (got {})",
                    v.len()
                ));
            }
            if v.chars().any(char::is_control) {
                return Err("value: a user id cannot contain control characters".into());
            }
            Ok(v.to_string())
        }
    }
}

/// `1.2.3.4`, `2001:db8::1`, `10.0.0.0/8`; networks broader than /8 (IPv4) or /16 (IPv6)
/// are refused: they would lock out much of the Internet.
fn canonical_ip(value: &str) -> Result<String, String> {
    let v = value.trim();
    let (addr, prefix) = match v.split_once('/') {
        Some((a, p)) => (a, Some(p)),
        None => (v, None),
    };
    let ip: IpAddr = addr.parse().map_err(|_| {
        format!("value {v:?} is not an IP address or network (e.g. 203.0.113.7, 10.0.0.0/8, 2001:db8::/32)")
    })?;
    let ip = match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
        v4 => v4,
    };
    let (max, min) = if ip.is_ipv4() { (32, 8) } else { (128, 16) };
    let Some(p) = prefix else {
        return Ok(ip.to_string());
    };
    let p: u8 = p
        .parse()
        .ok()
        .filter(|&p| p <= max)
        .ok_or_else(|| format!("value {v:?}: the prefix length must be 0..={max}"))?;
    if p < min {
        return Err(format!(
            "value {v:?}: a /{p} network is too broad to block (at least /{min})"
        ));
    }
    if p == max {
        return Ok(ip.to_string());
    }
    Ok(format!("{ip}/{p}"))
}

/// True for the paths this module answers.
pub(crate) fn handles(path: &str) -> bool {
    path == DENYLIST
        || path.starts_with("/api/v2/warden/denylist/")
        || path == RULES_DATA
        || path == RULESET
}

fn method_not_allowed(allowed: &str) -> ApiError {
    ApiError::new(405, format!("method not allowed; use {allowed}"))
}

fn no_content() -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::new()));
    *r.status_mut() = StatusCode::NO_CONTENT;
    r
}

fn internal(e: ServerError) -> ApiError {
    match e {
        ServerError::Io { source, .. } if source.kind() == std::io::ErrorKind::InvalidInput => {
            ApiError::new(400, source.to_string())
        }
        other => {
            tracing::error!(error = %other, "denylist");
            ApiError::new(503, "denylist storage unavailable; retry later")
        }
    }
}

/// Runs `f` on a blocking thread (SQLite and sealing).
async fn blocking<T: Send + 'static>(
    state: &Arc<AppState>,
    f: impl FnOnce(&State) -> Result<T, ApiError> + Send + 'static,
) -> Result<T, ApiError> {
    let st = Arc::clone(state);
    tokio::task::spawn_blocking(move || f(&st.denylist))
        .await
        .map_err(|_| ApiError::new(500, "denylist task failed"))?
}

pub(crate) async fn route(
    state: &Arc<AppState>,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, ApiError> {
    let path = req.uri().path().to_owned();
    let method = req.method().clone();
    match path.as_str() {
        DENYLIST => match method {
            Method::GET => {
                let org = crate::auth_app(state, &req).await?.org;
                let mut list = state.denylist.list(org, crate::now_secs());
                list.sort_by(|a, b| {
                    (a.target.as_str(), &a.value).cmp(&(b.target.as_str(), &b.value))
                });
                let data: Vec<Value> = list.iter().map(Entry::to_json).collect();
                Ok(crate::json_response(200, &json!({ "data": data })))
            }
            Method::POST => {
                let org = crate::auth_app(state, &req).await?.org;
                let ct = crate::content_type(&req);
                if !crate::is_json(&ct) && !ct.is_empty() {
                    return Err(crate::unsupported_type(&ct, "application/json"));
                }
                let raw = crate::read_body(req, ENTRY_BODY).await?;
                let now = crate::now_secs();
                let (target, value, expires_at, reason) = parse_entry(&raw, now)?;
                let value = validate(target, &value, expires_at, &reason, now)
                    .map_err(|m| ApiError::new(400, m))?;
                let (entry, new) = blocking(state, move |d| {
                    d.upsert(org, target, &value, expires_at, &reason, now)
                        .map_err(internal)
                })
                .await?;
                Ok(crate::json_response(
                    if new { 201 } else { 200 },
                    &json!({ "data": entry.to_json() }),
                ))
            }
            _ => Err(method_not_allowed("GET or POST")),
        },
        RULES_DATA => {
            if method != Method::GET {
                return Err(method_not_allowed("GET"));
            }
            let org = crate::auth_api(state, &req).await?.org;
            Ok(crate::json_response(
                200,
                &state.denylist.rules_data(org, crate::now_secs()),
            ))
        }
        RULESET => match method {
            Method::GET => {
                let org = crate::auth_api(state, &req).await?.org;
                match state.denylist.ruleset(org) {
                    Some(text) => {
                        let mut r = Response::new(Full::new(Bytes::from(text.as_bytes().to_vec())));
                        r.headers_mut().insert(
                            hyper::header::CONTENT_TYPE,
                            hyper::header::HeaderValue::from_static("application/json"),
                        );
                        Ok(r)
                    }
                    None => Ok(no_content()),
                }
            }
            Method::PUT => {
                let org = crate::auth_app(state, &req).await?.org;
                let ct = crate::content_type(&req);
                if !crate::is_json(&ct) && !ct.is_empty() {
                    return Err(crate::unsupported_type(&ct, "application/json"));
                }
                let raw = crate::read_body(req, RULESET_BODY).await?;
                let (text, summary) = blocking(state, move |_| check_ruleset(&raw)).await?;
                let created = blocking(state, move |d| {
                    d.set_ruleset(org, Some(text)).map_err(internal)
                })
                .await?;
                tracing::info!(org, created, "appsec ruleset uploaded");
                Ok(crate::json_response(200, &json!({ "data": summary })))
            }
            Method::DELETE => {
                let org = crate::auth_app(state, &req).await?.org;
                let existed =
                    blocking(state, move |d| d.set_ruleset(org, None).map_err(internal)).await?;
                if existed {
                    Ok(no_content())
                } else {
                    Err(ApiError::new(404, "no ruleset uploaded for this org"))
                }
            }
            _ => Err(method_not_allowed("GET, PUT or DELETE")),
        },
        p => {
            // DELETE /api/v2/warden/denylist/{target}/{value}; the value may hold a `/`
            // (networks) raw or as %2F.
            let rest = p.strip_prefix("/api/v2/warden/denylist/").unwrap_or("");
            let (t, v) = rest.split_once('/').unwrap_or((rest, ""));
            if method != Method::DELETE {
                return Err(method_not_allowed("DELETE"));
            }
            let org = crate::auth_app(state, &req).await?.org;
            let target = Target::parse(t).ok_or_else(|| {
                ApiError::new(404, format!("unknown target {t:?}: expected ip or user"))
            })?;
            let value = crate::percent_decode(v);
            // Entries are stored canonical: accept any spelling of the same address.
            let value = match target {
                Target::Ip => canonical_ip(&value).map_err(|m| ApiError::new(400, m))?,
                Target::User => value.trim().to_string(),
            };
            if value.is_empty() {
                return Err(ApiError::new(
                    400,
                    "missing value: DELETE /api/v2/warden/denylist/{ip|user}/{value}",
                ));
            }
            let found = blocking(state, move |d| {
                d.unblock(org, target, &value).map_err(internal)
            })
            .await?;
            if found {
                Ok(no_content())
            } else {
                Err(ApiError::new(404, format!("{} is not on the denylist", t)))
            }
        }
    }
}

/// `{"data":{"type":"denylist_entry","attributes":{"target","value","expires_at"|"duration","reason"}}}`.
fn parse_entry(raw: &[u8], now: i64) -> Result<(Target, String, Option<i64>, String), ApiError> {
    let bad = |m: String| ApiError::new(400, m);
    let v: Value =
        serde_json::from_slice(raw).map_err(|e| bad(format!("body is not valid JSON: {e}")))?;
    let data = v
        .get("data")
        .ok_or_else(|| bad("missing `data` object".into()))?;
    match data.get("type") {
        None => {}
        Some(Value::String(t)) if t == "denylist_entry" => {}
        Some(other) => {
            return Err(bad(format!(
                "data.type must be \"denylist_entry\" (got {other})"
            )));
        }
    }
    let a = data
        .get("attributes")
        .and_then(Value::as_object)
        .ok_or_else(|| bad("missing `data.attributes` object".into()))?;
    let target = match a.get("target") {
        Some(Value::String(s)) => Target::parse(s).ok_or_else(|| {
            bad(format!(
                "data.attributes.target must be \"ip\" or \"user\" (got {s:?})"
            ))
        })?,
        Some(other) => {
            return Err(bad(format!(
                "data.attributes.target must be \"ip\" or \"user\" (got {other})"
            )));
        }
        None => {
            return Err(bad(
                "missing data.attributes.target (\"ip\" or \"user\")".into()
            ));
        }
    };
    let value = match a.get("value") {
        Some(Value::String(s)) => s.clone(),
        Some(other) => {
            return Err(bad(format!(
                "data.attributes.value must be a string (got {other})"
            )));
        }
        None => return Err(bad("missing data.attributes.value".into())),
    };
    let expires_at = match (a.get("expires_at"), a.get("duration")) {
        (Some(e), Some(d)) if !e.is_null() && !d.is_null() => {
            return Err(bad(
                "give data.attributes.expires_at or data.attributes.duration, not both".into(),
            ));
        }
        (Some(Value::Number(n)), _) => Some(n.as_i64().ok_or_else(|| {
            bad(format!(
                "data.attributes.expires_at must be whole UNIX seconds (got {n})"
            ))
        })?),
        (_, Some(Value::Number(n))) => {
            let d = n.as_i64().filter(|&d| d > 0).ok_or_else(|| {
                bad(format!(
                    "data.attributes.duration must be a positive number of seconds (got {n})"
                ))
            })?;
            Some(now.saturating_add(d))
        }
        (None | Some(Value::Null), None | Some(Value::Null)) => None,
        (Some(other), _) | (_, Some(other)) => {
            return Err(bad(format!(
                "data.attributes.expires_at must be UNIX seconds or null (got {other})"
            )));
        }
    };
    let reason = match a.get("reason") {
        None | Some(Value::Null) => String::new(),
        Some(Value::String(s)) => s.clone(),
        Some(other) => {
            return Err(bad(format!(
                "data.attributes.reason must be a string (got {other})"
            )));
        }
    };
    Ok((target, value, expires_at, reason))
}

/// Loads an uploaded ruleset with the WAF engine; refuses one that loads no rule.
fn check_ruleset(raw: &[u8]) -> Result<(String, Value), ApiError> {
    let text = String::from_utf8(raw.to_vec())
        .map_err(|_| ApiError::new(400, "the ruleset is not UTF-8"))?;
    let doc: Value = serde_json::from_str(&text)
        .map_err(|e| ApiError::new(400, format!("the ruleset is not valid JSON: {e}")))?;
    if !doc.is_object() {
        return Err(ApiError::new(400, "the ruleset must be a JSON object"));
    }
    let mut b = warden_waf::Builder::new();
    let diags = b
        .add_or_update_value("upload", &doc)
        .map_err(|e| ApiError::new(400, format!("the ruleset cannot be loaded: {e}")))?;
    let diag_json = serde_json::to_value(&diags).unwrap_or(Value::Null);
    let rules_loaded: usize = ["rules", "custom_rules"]
        .iter()
        .filter_map(|s| diags.section(s))
        .map(|s| s.loaded.len())
        .sum();
    if rules_loaded == 0 {
        let mut e = ApiError::new(
            400,
            "the ruleset loads no rule: agents would leave applications unprotected",
        );
        e.extra = Some(json!({ "diagnostics": diag_json }));
        return Err(e);
    }
    let summary = json!({
        "type": "appsec_ruleset",
        "attributes": {
            "rules_version": diags.ruleset_version,
            "rules_loaded": rules_loaded,
            "diagnostics": diag_json,
        }
    });
    // Stored compact: agents fetch it on every poll.
    Ok((doc.to_string(), summary))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_are_validated_and_canonical() {
        let now = 1_700_000_000;
        assert_eq!(canonical_ip(" 203.0.113.7 "), Ok("203.0.113.7".into()));
        assert_eq!(canonical_ip("10.0.0.0/8"), Ok("10.0.0.0/8".into()));
        assert_eq!(canonical_ip("10.0.0.1/32"), Ok("10.0.0.1".into()));
        assert_eq!(canonical_ip("::ffff:10.0.0.1"), Ok("10.0.0.1".into()));
        assert_eq!(canonical_ip("2001:DB8::1"), Ok("2001:db8::1".into()));
        assert!(canonical_ip("0.0.0.0/0").unwrap_err().contains("too broad"));
        assert!(canonical_ip("10.0.0.0/33").unwrap_err().contains("prefix"));
        assert!(
            canonical_ip("example.com")
                .unwrap_err()
                .contains("not an IP")
        );
        assert!(validate(Target::User, "", None, "", now).is_err());
        assert!(validate(Target::User, &"u".repeat(300), None, "", now).is_err());
        assert!(validate(Target::User, "a\nb", None, "", now).is_err());
        assert_eq!(
            validate(Target::User, " bob ", Some(now + 60), "x", now),
            Ok("bob".into())
        );
        let e = validate(Target::User, "bob", Some(now - 1), "", now).unwrap_err();
        assert!(e.contains("not in the future"), "{e}");
        let e = validate(Target::User, "bob", Some(now * 1000), "", now).unwrap_err();
        assert!(e.contains("UNIX seconds"), "{e}");
    }

    #[test]
    fn entries_parse_with_clear_errors() {
        let now = 1_000;
        let ok = br#"{"data":{"type":"denylist_entry","attributes":{"target":"ip","value":"1.2.3.4","expires_at":2000,"reason":"scanner"}}}"#;
        let (t, v, e, r) = parse_entry(ok, now).unwrap();
        assert_eq!(
            (t, v.as_str(), e, r.as_str()),
            (Target::Ip, "1.2.3.4", Some(2000), "scanner")
        );
        let d = br#"{"data":{"attributes":{"target":"user","value":"u","duration":60}}}"#;
        assert_eq!(parse_entry(d, now).unwrap().2, Some(1060));
        for (body, want) in [
            (
                &br#"{"data":{"attributes":{"target":"host","value":"x"}}}"#[..],
                "target",
            ),
            (br#"{"data":{"attributes":{"target":"ip"}}}"#, "value"),
            (
                br#"{"data":{"attributes":{"target":"ip","value":"1.2.3.4","expires_at":"soon"}}}"#,
                "expires_at",
            ),
            (
                br#"{"data":{"type":"other","attributes":{}}}"#,
                "denylist_entry",
            ),
            (br#"not json"#, "JSON"),
        ] {
            let e = parse_entry(body, now).unwrap_err();
            assert_eq!(e.status, 400);
            assert!(e.message.contains(want), "{}: {}", want, e.message);
        }
    }
}
