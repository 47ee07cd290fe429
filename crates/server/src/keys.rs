//! Organisations and API / application keys, kept in SQLite (`DIR/meta.db`).
//!
//! Why this shape:
//! * Keys are recognisable and self-checking (`wdn_api_` / `wdn_app_` + 32 base62 random +
//!   6 base62 CRC32 of the random part, GitHub's 2021 scheme): a secret scanner can find and
//!   validate a leaked key offline, and a mistyped key is refused without touching the database.
//! * Only the SHA-256 of a key is stored. The random part carries ~190 bits, so a plain hash
//!   (no salt, no slow KDF) is enough: nobody can brute-force it back.
//! * Authentication compares the presented key's hash with *every* active key hash in constant
//!   time and never stops early, so response timing says nothing about how close a guess was.
//! * The server caches the key table and reloads it when SQLite's `data_version` says another
//!   connection (e.g. `warden keys revoke` while the server runs) committed a change, so a
//!   revocation takes effect on the next request.
//! * This database holds org and key metadata only; metric names, tags and values live in the
//!   encrypted store, never here.

use std::path::Path;
use std::sync::Mutex;

use ring::digest;
use ring::rand::{SecureRandom, SystemRandom};
use rusqlite::{Connection, OptionalExtension, params};

/// Base62 alphabet (digits, upper, lower), as in GitHub's token format.
const BASE62: &[u8; 62] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
/// Length of the random part.
const BODY_LEN: usize = 32;
/// Length of the CRC32 checksum in base62.
const CRC_LEN: usize = 6;

/// Errors of the key / org database.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("metadata database: {0}")]
    Db(#[from] rusqlite::Error),
    #[error("cannot create {path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("system random number generator failed")]
    Rng,
    #[error("invalid org name {0:?}: use 1-64 characters a-z, 0-9, '-', '_', '.'")]
    BadOrgName(String),
    #[error("no org named {0:?}")]
    NoSuchOrg(String),
    #[error("no key with id {0}")]
    NoSuchKey(i64),
    #[error("key {0} is already revoked")]
    AlreadyRevoked(i64),
    #[error("invalid key name: at most 100 printable characters")]
    BadKeyName,
}

/// What a key allows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeyKind {
    /// Write: intake endpoints (`DD-API-KEY`).
    Api,
    /// Read: query endpoints (`DD-APPLICATION-KEY`, together with an API key of the same org).
    App,
}

impl KeyKind {
    /// `"api"` or `"app"`.
    pub fn as_str(self) -> &'static str {
        match self {
            KeyKind::Api => "api",
            KeyKind::App => "app",
        }
    }

    fn prefix(self) -> &'static str {
        match self {
            KeyKind::Api => "wdn_api_",
            KeyKind::App => "wdn_app_",
        }
    }

    /// Parses `"api"` / `"app"`.
    pub fn parse(s: &str) -> Option<KeyKind> {
        match s {
            "api" => Some(KeyKind::Api),
            "app" => Some(KeyKind::App),
            _ => None,
        }
    }
}

/// `CRC32(body)` (IEEE) as 6 base62 digits, big-endian, zero-padded.
fn checksum(body: &[u8]) -> [u8; CRC_LEN] {
    let mut n = crc32fast::hash(body);
    let mut out = [b'0'; CRC_LEN];
    for slot in out.iter_mut().rev() {
        *slot = BASE62[(n % 62) as usize];
        n /= 62;
    }
    out
}

/// Generates a fresh key of `kind` (the secret; shown once, never stored).
pub fn generate_key(kind: KeyKind) -> Result<String, KeyError> {
    let rng = SystemRandom::new();
    let mut body = Vec::with_capacity(BODY_LEN);
    let mut buf = [0u8; 64];
    while body.len() < BODY_LEN {
        rng.fill(&mut buf).map_err(|_| KeyError::Rng)?;
        // Rejection sampling: 248 = 4 * 62, so `b % 62` is uniform for b < 248.
        body.extend(
            buf.iter()
                .filter(|b| **b < 248)
                .map(|b| BASE62[(*b % 62) as usize])
                .take(BODY_LEN - body.len()),
        );
    }
    let crc = checksum(&body);
    let mut key = String::with_capacity(8 + BODY_LEN + CRC_LEN);
    key.push_str(kind.prefix());
    key.extend(body.iter().map(|b| *b as char));
    key.extend(crc.iter().map(|b| *b as char));
    Ok(key)
}

/// Whether `key` is well formed for `kind`: prefix, 32 base62, and a matching checksum.
pub fn well_formed(kind: KeyKind, key: &str) -> bool {
    let Some(rest) = key.strip_prefix(kind.prefix()) else {
        return false;
    };
    let b = rest.as_bytes();
    if b.len() != BODY_LEN + CRC_LEN || !b.iter().all(u8::is_ascii_alphanumeric) {
        return false;
    }
    checksum(&b[..BODY_LEN]) == b[BODY_LEN..]
}

fn sha256(key: &str) -> [u8; 32] {
    let d = digest::digest(&digest::SHA256, key.as_bytes());
    let mut out = [0u8; 32];
    out.copy_from_slice(d.as_ref());
    out
}

/// Constant-time equality of two 32-byte hashes (no early exit; the optimiser cannot see
/// through `black_box`).
fn ct_eq(a: &[u8; 32], b: &[u8; 32]) -> bool {
    let mut diff = 0u8;
    for i in 0..32 {
        diff |= std::hint::black_box(a[i] ^ b[i]);
    }
    std::hint::black_box(diff) == 0
}

/// An authenticated caller.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Principal {
    /// Org id (the store's tenant id).
    pub org: u64,
    /// Id of the key that authenticated.
    pub key_id: i64,
    pub kind: KeyKind,
}

/// One row of `warden keys list` (never the secret).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct KeyInfo {
    pub id: i64,
    pub org: String,
    pub kind: &'static str,
    pub name: String,
    /// Prefix and last four characters, to tell keys apart.
    pub hint: String,
    /// UNIX seconds.
    pub created: i64,
    /// UNIX seconds of revocation, if revoked.
    pub revoked: Option<i64>,
}

/// A freshly created key: the secret is only ever available here.
#[derive(Clone, PartialEq, Eq)]
pub struct NewKey {
    pub id: i64,
    pub org: String,
    pub kind: KeyKind,
    pub secret: String,
}

impl std::fmt::Debug for NewKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NewKey")
            .field("id", &self.id)
            .field("org", &self.org)
            .field("kind", &self.kind)
            .finish_non_exhaustive()
    }
}

#[derive(Clone)]
struct CachedKey {
    hash: [u8; 32],
    id: i64,
    org: u64,
    kind: KeyKind,
}

struct Inner {
    conn: Connection,
    /// `PRAGMA data_version` when the cache was loaded; `None` = stale.
    version: Option<i64>,
    cache: Vec<CachedKey>,
}

/// The org / key database.
pub struct KeyStore {
    inner: Mutex<Inner>,
}

impl std::fmt::Debug for KeyStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyStore").finish_non_exhaustive()
    }
}

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

fn valid_org_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"-_.".contains(&b))
}

impl KeyStore {
    /// Opens (creating if needed, mode 0600) the database at `path`.
    pub fn open(path: &Path) -> Result<KeyStore, KeyError> {
        if !path.exists() {
            create_private(path)?;
        }
        let conn = Connection::open(path)?;
        conn.busy_timeout(std::time::Duration::from_secs(10))?;
        conn.execute_batch(
            "PRAGMA journal_mode = WAL;
             PRAGMA synchronous = FULL;
             PRAGMA foreign_keys = ON;
             CREATE TABLE IF NOT EXISTS orgs (
                 id INTEGER PRIMARY KEY,
                 name TEXT NOT NULL UNIQUE,
                 created INTEGER NOT NULL
             );
             CREATE TABLE IF NOT EXISTS keys (
                 id INTEGER PRIMARY KEY,
                 org_id INTEGER NOT NULL REFERENCES orgs(id),
                 kind TEXT NOT NULL CHECK (kind IN ('api', 'app')),
                 name TEXT NOT NULL,
                 hash BLOB NOT NULL UNIQUE,
                 hint TEXT NOT NULL,
                 created INTEGER NOT NULL,
                 revoked INTEGER
             );",
        )?;
        // The WAL and shared-memory files SQLite creates must be private too.
        for ext in ["db-wal", "db-shm"] {
            let p = path.with_extension(ext);
            if p.exists() {
                set_private(&p)?;
            }
        }
        Ok(KeyStore {
            inner: Mutex::new(Inner {
                conn,
                version: None,
                cache: Vec::new(),
            }),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The id of org `name`, creating it when `create` is set.
    pub fn org_id(&self, name: &str, create: bool) -> Result<u64, KeyError> {
        if !valid_org_name(name) {
            return Err(KeyError::BadOrgName(name.to_owned()));
        }
        let inner = self.lock();
        let found: Option<i64> = inner
            .conn
            .query_row("SELECT id FROM orgs WHERE name = ?1", [name], |r| r.get(0))
            .optional()?;
        match found {
            Some(id) => Ok(id as u64),
            None if create => {
                inner.conn.execute(
                    "INSERT INTO orgs (name, created) VALUES (?1, ?2)",
                    params![name, now()],
                )?;
                Ok(inner.conn.last_insert_rowid() as u64)
            }
            None => Err(KeyError::NoSuchOrg(name.to_owned())),
        }
    }

    /// Creates a key in org `org` (created if missing). The secret is returned once.
    pub fn create_key(&self, org: &str, kind: KeyKind, name: &str) -> Result<NewKey, KeyError> {
        if name.len() > 100 || name.chars().any(char::is_control) {
            return Err(KeyError::BadKeyName);
        }
        let org_id = self.org_id(org, true)?;
        let secret = generate_key(kind)?;
        let hint = format!("{}…{}", kind.prefix(), &secret[secret.len() - 4..]);
        let mut inner = self.lock();
        inner.conn.execute(
            "INSERT INTO keys (org_id, kind, name, hash, hint, created) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            params![org_id as i64, kind.as_str(), name, sha256(&secret).to_vec(), hint, now()],
        )?;
        let id = inner.conn.last_insert_rowid();
        inner.version = None;
        Ok(NewKey {
            id,
            org: org.to_owned(),
            kind,
            secret,
        })
    }

    /// Every key, oldest first (never the secrets).
    pub fn list(&self) -> Result<Vec<KeyInfo>, KeyError> {
        let inner = self.lock();
        let mut st = inner.conn.prepare(
            "SELECT k.id, o.name, k.kind, k.name, k.hint, k.created, k.revoked
             FROM keys k JOIN orgs o ON o.id = k.org_id ORDER BY k.id",
        )?;
        let rows = st.query_map([], |r| {
            let kind: String = r.get(2)?;
            Ok(KeyInfo {
                id: r.get(0)?,
                org: r.get(1)?,
                kind: if kind == "api" { "api" } else { "app" },
                name: r.get(3)?,
                hint: r.get(4)?,
                created: r.get(5)?,
                revoked: r.get(6)?,
            })
        })?;
        Ok(rows.collect::<Result<Vec<_>, _>>()?)
    }

    /// Revokes key `id`; effective on the server's next request.
    pub fn revoke(&self, id: i64) -> Result<(), KeyError> {
        let mut inner = self.lock();
        let revoked: Option<Option<i64>> = inner
            .conn
            .query_row("SELECT revoked FROM keys WHERE id = ?1", [id], |r| r.get(0))
            .optional()?;
        match revoked {
            None => return Err(KeyError::NoSuchKey(id)),
            Some(Some(_)) => return Err(KeyError::AlreadyRevoked(id)),
            Some(None) => {}
        }
        inner.conn.execute(
            "UPDATE keys SET revoked = ?1 WHERE id = ?2",
            params![now(), id],
        )?;
        inner.version = None;
        Ok(())
    }

    /// Checks `key` as a key of `kind`: well-formed, known, not revoked. `Ok(None)` = refused.
    pub fn authenticate(&self, kind: KeyKind, key: &str) -> Result<Option<Principal>, KeyError> {
        if !well_formed(kind, key) {
            return Ok(None);
        }
        let hash = sha256(key);
        let mut inner = self.lock();
        let version: i64 = inner
            .conn
            .query_row("PRAGMA data_version", [], |r| r.get(0))?;
        if inner.version != Some(version) {
            let mut st = inner
                .conn
                .prepare("SELECT id, org_id, kind, hash FROM keys WHERE revoked IS NULL")?;
            let rows = st.query_map([], |r| {
                let kind: String = r.get(2)?;
                let hash: Vec<u8> = r.get(3)?;
                let mut h = [0u8; 32];
                if hash.len() == 32 {
                    h.copy_from_slice(&hash);
                }
                Ok(CachedKey {
                    id: r.get(0)?,
                    org: r.get::<_, i64>(1)? as u64,
                    kind: if kind == "api" {
                        KeyKind::Api
                    } else {
                        KeyKind::App
                    },
                    hash: h,
                })
            })?;
            let cache = rows.collect::<Result<Vec<_>, _>>()?;
            drop(st);
            inner.cache = cache;
            inner.version = Some(version);
        }
        let mut found = None;
        for k in &inner.cache {
            // Every hash is compared; no early exit.
            if ct_eq(&k.hash, &hash) && k.kind == kind {
                found = Some(Principal {
                    org: k.org,
                    key_id: k.id,
                    kind: k.kind,
                });
            }
        }
        Ok(found)
    }
}

fn create_private(path: &Path) -> Result<(), KeyError> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(path)
        .map(|_| ())
        .map_err(|source| KeyError::Io {
            path: path.display().to_string(),
            source,
        })
}

fn set_private(path: &Path) -> Result<(), KeyError> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).map_err(|source| {
        KeyError::Io {
            path: path.display().to_string(),
            source,
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_prefixed_checksummed_and_distinct() {
        let a = generate_key(KeyKind::Api).unwrap();
        let b = generate_key(KeyKind::Api).unwrap();
        assert_ne!(a, b);
        assert_eq!(a.len(), 8 + 32 + 6);
        assert!(a.starts_with("wdn_api_"));
        assert!(well_formed(KeyKind::Api, &a));
        assert!(!well_formed(KeyKind::App, &a));
        // One changed character breaks the checksum.
        let mut bad = a.clone().into_bytes();
        bad[10] = if bad[10] == b'a' { b'b' } else { b'a' };
        assert!(!well_formed(KeyKind::Api, &String::from_utf8(bad).unwrap()));
    }

    #[test]
    fn checksum_matches_the_documented_encoding() {
        // CRC32("hello") = 0x3610a686 = 907060870; base62 of that, padded to 6.
        let mut n: u32 = 907_060_870;
        let mut s = Vec::new();
        while n > 0 {
            s.push(BASE62[(n % 62) as usize]);
            n /= 62;
        }
        while s.len() < 6 {
            s.push(b'0');
        }
        s.reverse();
        assert_eq!(checksum(b"hello").to_vec(), s);
    }

    #[test]
    fn store_authenticates_revokes_and_separates_orgs() {
        let dir = tempfile::tempdir().unwrap();
        let ks = KeyStore::open(&dir.path().join("meta.db")).unwrap();
        let a = ks.create_key("acme", KeyKind::Api, "ci").unwrap();
        let b = ks.create_key("beta", KeyKind::App, "").unwrap();
        let pa = ks.authenticate(KeyKind::Api, &a.secret).unwrap().unwrap();
        let pb = ks.authenticate(KeyKind::App, &b.secret).unwrap().unwrap();
        assert_ne!(pa.org, pb.org);
        assert!(ks.authenticate(KeyKind::App, &a.secret).unwrap().is_none());
        // Another connection (the CLI) revokes; the server's cache notices.
        let other = KeyStore::open(&dir.path().join("meta.db")).unwrap();
        other.revoke(a.id).unwrap();
        assert!(ks.authenticate(KeyKind::Api, &a.secret).unwrap().is_none());
        assert!(matches!(
            other.revoke(a.id),
            Err(KeyError::AlreadyRevoked(_))
        ));
        let list = ks.list().unwrap();
        assert_eq!(list.len(), 2);
        assert!(list[0].revoked.is_some());
        assert!(!list[0].hint.contains(&a.secret[8..36]));
        // Only hashes are stored.
        let raw = std::fs::read(dir.path().join("meta.db")).unwrap();
        let wal = std::fs::read(dir.path().join("meta.db-wal")).unwrap_or_default();
        for blob in [raw, wal] {
            assert!(!blob.windows(20).any(|w| w == &a.secret.as_bytes()[8..28]));
        }
        let mode = std::os::unix::fs::PermissionsExt::mode(
            &std::fs::metadata(dir.path().join("meta.db"))
                .unwrap()
                .permissions(),
        );
        assert_eq!(mode & 0o777, 0o600);
    }
}
