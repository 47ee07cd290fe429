//! `DIR/security.db`: rules and signals, sealed.
//!
//! Why this layout: only what the API must filter or sort on in SQL is plaintext (org, id,
//! timestamp, severity, triage state); the rule and signal bodies, which hold IPs, user ids
//! and request samples, are sealed with the store's record key (`Store::seal_record`), the
//! AAD binding each blob to its org, id and kind so a row cannot be moved or swapped. The
//! engine's part of a signal and its triage are separate blobs: the engine rewrites the first
//! on every absorbed event, people rewrite the second, and neither write can clobber the other.

use std::path::Path;
use std::sync::Arc;

use rusqlite::{Connection, OptionalExtension, params};
use warden_detection::{Rule, Signal, Triage};
use warden_store::Store;

pub(crate) struct Db {
    conn: Connection,
    store: Arc<Store>,
}

/// One signal row, opened.
pub(crate) struct Row {
    pub(crate) signal: Signal,
}

fn aad(kind: &str, org: u64, id: &str) -> Vec<u8> {
    format!("warden-security/{kind}/{org}/{id}").into_bytes()
}

pub(crate) type DbResult<T> = Result<T, String>;

/// id, ts, state, sealed body, sealed triage.
type RawRow = (String, i64, String, Vec<u8>, Option<Vec<u8>>);

fn e(x: impl std::fmt::Display) -> String {
    x.to_string()
}

impl Db {
    pub(crate) fn open(path: &Path, store: Arc<Store>) -> DbResult<Db> {
        let conn = Connection::open(path).map_err(e)?;
        {
            use std::os::unix::fs::PermissionsExt;
            let _ = std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600));
        }
        conn.execute_batch(
            "PRAGMA journal_mode=WAL;
             PRAGMA synchronous=FULL;
             PRAGMA busy_timeout=5000;
             CREATE TABLE IF NOT EXISTS rules (
                org INTEGER NOT NULL, id TEXT NOT NULL, created INTEGER NOT NULL,
                body BLOB NOT NULL, PRIMARY KEY (org, id));
             CREATE TABLE IF NOT EXISTS signals (
                org INTEGER NOT NULL, id TEXT NOT NULL, ts INTEGER NOT NULL,
                status TEXT NOT NULL, state TEXT NOT NULL DEFAULT 'open',
                body BLOB NOT NULL, triage BLOB, PRIMARY KEY (org, id));
             CREATE INDEX IF NOT EXISTS signals_by_ts ON signals (org, ts, id);",
        )
        .map_err(e)?;
        Ok(Db { conn, store })
    }

    fn seal(&self, kind: &str, org: u64, id: &str, v: &impl serde::Serialize) -> DbResult<Vec<u8>> {
        let plain = serde_json::to_vec(v).map_err(e)?;
        self.store
            .seal_record(&aad(kind, org, id), &plain)
            .map_err(e)
    }

    fn open_blob<T: serde::de::DeserializeOwned>(
        &self,
        kind: &str,
        org: u64,
        id: &str,
        sealed: &[u8],
    ) -> DbResult<T> {
        let plain = self
            .store
            .open_record(&aad(kind, org, id), sealed)
            .map_err(e)?;
        serde_json::from_slice(&plain).map_err(e)
    }

    // ------------------------------------------------------------ rules

    pub(crate) fn rules(&self, org: u64) -> DbResult<Vec<Rule>> {
        let mut st = self
            .conn
            .prepare_cached("SELECT id, body FROM rules WHERE org = ?1 ORDER BY created, id")
            .map_err(e)?;
        let rows = st
            .query_map(params![org as i64], |r| {
                Ok((r.get::<_, String>(0)?, r.get::<_, Vec<u8>>(1)?))
            })
            .map_err(e)?;
        let mut out = Vec::new();
        for row in rows {
            let (id, body) = row.map_err(e)?;
            out.push(self.open_blob("rule", org, &id, &body)?);
        }
        Ok(out)
    }

    pub(crate) fn put_rule(&self, org: u64, r: &Rule) -> DbResult<()> {
        let body = self.seal("rule", org, &r.id, r)?;
        self.conn
            .execute(
                "INSERT INTO rules (org, id, created, body) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT (org, id) DO UPDATE SET body = excluded.body",
                params![org as i64, r.id, r.created_at, body],
            )
            .map_err(e)?;
        Ok(())
    }

    pub(crate) fn delete_rule(&self, org: u64, id: &str) -> DbResult<bool> {
        let n = self
            .conn
            .execute(
                "DELETE FROM rules WHERE org = ?1 AND id = ?2",
                params![org as i64, id],
            )
            .map_err(e)?;
        Ok(n > 0)
    }

    // ---------------------------------------------------------- signals

    /// Writes engine snapshots (triage untouched) in one transaction.
    pub(crate) fn put_signals(&mut self, org_signals: &[(u64, &Signal)]) -> DbResult<()> {
        let mut sealed = Vec::with_capacity(org_signals.len());
        for (org, s) in org_signals {
            let mut bare = (*s).clone();
            bare.triage = Triage::default();
            sealed.push((*org, *s, self.seal("signal", *org, &s.id, &bare)?));
        }
        let tx = self.conn.transaction().map_err(e)?;
        {
            let mut st = tx
                .prepare_cached(
                    "INSERT INTO signals (org, id, ts, status, state, body) VALUES (?1, ?2, ?3, ?4, 'open', ?5)
                     ON CONFLICT (org, id) DO UPDATE SET status = excluded.status, body = excluded.body",
                )
                .map_err(e)?;
            for (org, s, body) in &sealed {
                st.execute(params![
                    *org as i64,
                    s.id,
                    s.timestamp_ms,
                    s.status.as_str(),
                    body
                ])
                .map_err(e)?;
            }
        }
        tx.commit().map_err(e)
    }

    fn row_to_signal(
        &self,
        org: u64,
        id: &str,
        state: &str,
        body: &[u8],
        triage: Option<Vec<u8>>,
    ) -> DbResult<Row> {
        let mut signal: Signal = self.open_blob("signal", org, id, body)?;
        signal.triage = match triage {
            Some(t) => self.open_blob("triage", org, id, &t)?,
            None => Triage {
                state: state.to_string(),
                ..Triage::default()
            },
        };
        Ok(Row { signal })
    }

    pub(crate) fn signal(&self, org: u64, id: &str) -> DbResult<Option<Row>> {
        let row = self
            .conn
            .query_row(
                "SELECT state, body, triage FROM signals WHERE org = ?1 AND id = ?2",
                params![org as i64, id],
                |r| {
                    Ok((
                        r.get::<_, String>(0)?,
                        r.get::<_, Vec<u8>>(1)?,
                        r.get::<_, Option<Vec<u8>>>(2)?,
                    ))
                },
            )
            .optional()
            .map_err(e)?;
        match row {
            Some((state, body, triage)) => {
                Ok(Some(self.row_to_signal(org, id, &state, &body, triage)?))
            }
            None => Ok(None),
        }
    }

    pub(crate) fn put_triage(&self, org: u64, id: &str, t: &Triage) -> DbResult<()> {
        let sealed = self.seal("triage", org, id, t)?;
        self.conn
            .execute(
                "UPDATE signals SET state = ?3, triage = ?4 WHERE org = ?1 AND id = ?2",
                params![org as i64, id, t.state, sealed],
            )
            .map_err(e)?;
        Ok(())
    }

    /// Signals of `org` with `from <= ts <= to`, strictly after `after` in the sort order,
    /// optionally only of one severity / state, in pages of `chunk` rows; `f` returns false
    /// to stop.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn scan(
        &self,
        org: u64,
        from: i64,
        to: i64,
        desc: bool,
        after: Option<(i64, String)>,
        status: Option<&str>,
        state: Option<&str>,
        f: &mut dyn FnMut(Row) -> bool,
    ) -> DbResult<()> {
        let mut after = after;
        loop {
            let (cmp, order) = if desc { ("<", "DESC") } else { (">", "ASC") };
            let sql = format!(
                "SELECT id, ts, state, body, triage FROM signals
                 WHERE org = ?1 AND ts >= ?2 AND ts <= ?3
                   AND (?4 IS NULL OR (ts, id) {cmp} (?4, ?5))
                   AND (?6 IS NULL OR status = ?6) AND (?7 IS NULL OR state = ?7)
                 ORDER BY ts {order}, id {order} LIMIT 500"
            );
            let mut st = self.conn.prepare_cached(&sql).map_err(e)?;
            let (at, aid) = match &after {
                Some((t, i)) => (Some(*t), Some(i.clone())),
                None => (None, None),
            };
            let rows: Vec<RawRow> = st
                .query_map(params![org as i64, from, to, at, aid, status, state], |r| {
                    Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?))
                })
                .map_err(e)?
                .collect::<Result<_, _>>()
                .map_err(e)?;
            let n = rows.len();
            for (id, ts, state, body, triage) in rows {
                after = Some((ts, id.clone()));
                let row = self.row_to_signal(org, &id, &state, &body, triage)?;
                if !f(row) {
                    return Ok(());
                }
            }
            if n < 500 {
                return Ok(());
            }
        }
    }

    /// Signals of `org` generated at or after `since` (to re-adopt live ones after a restart).
    pub(crate) fn recent(&self, org: u64, since: i64) -> DbResult<Vec<Signal>> {
        let mut out = Vec::new();
        self.scan(org, since, i64::MAX, false, None, None, None, &mut |r| {
            out.push(r.signal);
            true
        })?;
        Ok(out)
    }
}
