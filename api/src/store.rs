//! The control-plane store: users, sessions, rules, incidents, blocklist,
//! notification channels, report schedules, settings and the audit log, in
//! one SQLite database (`DATA/control.db`). Traffic history stays in Parquet.
//!
//! The schema is a list of migrations applied in order; the database's
//! `user_version` says how many have run. A migration runs in one
//! transaction: a failed one leaves the database as it was.
//!
//! Architecture Invariant: nothing on the packet path touches this store;
//! the engine learns of changes through files it already watches (rules,
//! blocklist feed).

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use rusqlite::{Connection, OptionalExtension, params};

use crate::error::Error;

/// Each entry is one schema version; never edit one that has shipped, add a new one.
const MIGRATIONS: &[&str] = &[
    // 1: the first schema.
    r#"
    CREATE TABLE users (
        id INTEGER PRIMARY KEY,
        name TEXT NOT NULL UNIQUE,
        role TEXT NOT NULL CHECK (role IN ('admin', 'analyst', 'viewer')),
        password TEXT NOT NULL,
        totp_secret BLOB,
        totp_enabled INTEGER NOT NULL DEFAULT 0,
        disabled INTEGER NOT NULL DEFAULT 0,
        created_ns INTEGER NOT NULL,
        updated_ns INTEGER NOT NULL
    );
    CREATE TABLE sessions (
        id TEXT PRIMARY KEY,
        user_id INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
        refresh_hash TEXT NOT NULL,
        created_ns INTEGER NOT NULL,
        expires_ns INTEGER NOT NULL,
        revoked INTEGER NOT NULL DEFAULT 0,
        addr TEXT NOT NULL
    );
    CREATE TABLE login_failures (
        kind TEXT NOT NULL,
        key TEXT NOT NULL,
        failures INTEGER NOT NULL,
        last_ns INTEGER NOT NULL,
        locked_until_ns INTEGER NOT NULL,
        PRIMARY KEY (kind, key)
    );
    CREATE TABLE alert_rules (
        id INTEGER PRIMARY KEY,
        name TEXT NOT NULL UNIQUE,
        body TEXT NOT NULL,
        created_ns INTEGER NOT NULL,
        updated_ns INTEGER NOT NULL,
        updated_by TEXT NOT NULL
    );
    CREATE TABLE alert_state (
        alert_id TEXT PRIMARY KEY,
        status TEXT NOT NULL,
        assignee TEXT,
        updated_ns INTEGER NOT NULL,
        updated_by TEXT NOT NULL
    );
    CREATE TABLE incidents (
        id INTEGER PRIMARY KEY,
        title TEXT NOT NULL,
        severity TEXT NOT NULL,
        status TEXT NOT NULL,
        assignee TEXT,
        source_ip TEXT,
        sensitive BLOB,
        created_ns INTEGER NOT NULL,
        updated_ns INTEGER NOT NULL,
        created_by TEXT NOT NULL
    );
    CREATE TABLE incident_alerts (
        incident_id INTEGER NOT NULL REFERENCES incidents(id) ON DELETE CASCADE,
        alert_id TEXT NOT NULL,
        PRIMARY KEY (incident_id, alert_id)
    );
    CREATE TABLE incident_notes (
        id INTEGER PRIMARY KEY,
        incident_id INTEGER NOT NULL REFERENCES incidents(id) ON DELETE CASCADE,
        author TEXT NOT NULL,
        text TEXT NOT NULL,
        created_ns INTEGER NOT NULL
    );
    CREATE TABLE blocklist (
        id INTEGER PRIMARY KEY,
        value TEXT NOT NULL UNIQUE,
        kind TEXT NOT NULL,
        comment TEXT NOT NULL,
        created_ns INTEGER NOT NULL,
        created_by TEXT NOT NULL
    );
    CREATE TABLE channels (
        id INTEGER PRIMARY KEY,
        name TEXT NOT NULL UNIQUE,
        kind TEXT NOT NULL,
        config TEXT NOT NULL,
        secret BLOB,
        created_ns INTEGER NOT NULL
    );
    CREATE TABLE report_schedules (
        id INTEGER PRIMARY KEY,
        kind TEXT NOT NULL,
        schedule TEXT NOT NULL,
        channel TEXT,
        created_ns INTEGER NOT NULL
    );
    CREATE TABLE settings (
        key TEXT PRIMARY KEY,
        value TEXT NOT NULL
    );
    CREATE TABLE audit (
        id INTEGER PRIMARY KEY,
        ts_ns INTEGER NOT NULL,
        user TEXT NOT NULL,
        action TEXT NOT NULL,
        target TEXT NOT NULL,
        detail TEXT NOT NULL,
        addr TEXT NOT NULL,
        ok INTEGER NOT NULL
    );
    CREATE INDEX audit_ts ON audit (ts_ns);
    CREATE INDEX sessions_user ON sessions (user_id);
    "#,
    // 2: each user's console dashboard layout.
    r#"
    CREATE TABLE layouts (
        user_id INTEGER PRIMARY KEY REFERENCES users(id) ON DELETE CASCADE,
        layout TEXT NOT NULL,
        updated_ns INTEGER NOT NULL
    );
    "#,
    // 3: generated reports and report schedules (the first schema's
    // schedule table was never written to).
    r#"
    DROP TABLE report_schedules;
    CREATE TABLE report_schedules (
        id INTEGER PRIMARY KEY,
        name TEXT NOT NULL UNIQUE,
        kind TEXT NOT NULL,
        cron TEXT NOT NULL,
        span TEXT NOT NULL,
        format TEXT NOT NULL,
        filter TEXT NOT NULL,
        channels TEXT NOT NULL,
        next_ns INTEGER NOT NULL,
        last_ns INTEGER,
        last_report INTEGER,
        last_error TEXT,
        created_ns INTEGER NOT NULL,
        created_by TEXT NOT NULL
    );
    CREATE TABLE reports (
        id INTEGER PRIMARY KEY,
        kind TEXT NOT NULL,
        format TEXT NOT NULL,
        from_ns INTEGER NOT NULL,
        to_ns INTEGER NOT NULL,
        filter TEXT NOT NULL,
        file TEXT NOT NULL,
        size INTEGER NOT NULL,
        created_ns INTEGER NOT NULL,
        created_by TEXT NOT NULL,
        schedule_id INTEGER,
        delivered TEXT
    );
    CREATE INDEX reports_created ON reports (created_ns);
    "#,
];

/// The schema version this build writes.
pub const SCHEMA_VERSION: usize = MIGRATIONS.len();

/// The store. One connection behind a mutex: control-plane requests are
/// few and each statement takes microseconds.
pub struct Store {
    conn: Mutex<Connection>,
    path: PathBuf,
}

pub fn now_ns() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos() as i64).unwrap_or(0)
}

impl Store {
    /// Open (creating) the store and bring its schema up to date.
    pub fn open(path: &Path) -> Result<Store, Error> {
        if let Some(d) = path.parent() {
            std::fs::create_dir_all(d)?;
        }
        let mut conn = Connection::open(path)?;
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "foreign_keys", "ON")?;
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        migrate(&mut conn)?;
        Ok(Store { conn: Mutex::new(conn), path: path.to_path_buf() })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Run `f` with the connection.
    pub fn with<T>(&self, f: impl FnOnce(&Connection) -> rusqlite::Result<T>) -> rusqlite::Result<T> {
        let g = self.conn.lock().unwrap_or_else(|p| p.into_inner());
        f(&g)
    }

    /// Run `f` in a transaction (committed when it returns Ok).
    pub fn tx<T, E: From<rusqlite::Error>>(
        &self,
        f: impl FnOnce(&rusqlite::Transaction) -> Result<T, E>,
    ) -> Result<T, E> {
        let mut g = self.conn.lock().unwrap_or_else(|p| p.into_inner());
        let tx = g.transaction()?;
        let v = f(&tx)?;
        tx.commit()?;
        Ok(v)
    }

    /// A consistent copy of the whole database at `out`, written beside it
    /// and renamed into place: a crash leaves either no file or a whole one.
    pub fn backup(&self, out: &Path) -> Result<(), Error> {
        let tmp = tmp_beside(out);
        let _ = std::fs::remove_file(&tmp);
        let r = self.with(|c| c.execute("VACUUM INTO ?1", params![tmp.to_string_lossy()]).map(|_| ()));
        if let Err(e) = r {
            let _ = std::fs::remove_file(&tmp);
            return Err(e.into());
        }
        std::fs::File::open(&tmp)?.sync_all()?;
        std::fs::rename(&tmp, out)?;
        Ok(())
    }

    /// Append to the audit log.
    pub fn audit(&self, e: &AuditEntry) -> rusqlite::Result<()> {
        self.with(|c| {
            c.execute(
                "INSERT INTO audit (ts_ns, user, action, target, detail, addr, ok) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                params![now_ns(), e.user, e.action, e.target, e.detail.to_string(), e.addr, e.ok],
            )
            .map(|_| ())
        })
    }

    pub fn setting(&self, key: &str) -> rusqlite::Result<Option<serde_json::Value>> {
        self.with(|c| {
            c.query_row("SELECT value FROM settings WHERE key = ?1", params![key], |r| r.get::<_, String>(0))
                .optional()
                .map(|v| v.and_then(|s| serde_json::from_str(&s).ok()))
        })
    }

    pub fn set_setting(&self, key: &str, value: &serde_json::Value) -> rusqlite::Result<()> {
        self.with(|c| {
            c.execute(
                "INSERT INTO settings (key, value) VALUES (?1, ?2) ON CONFLICT(key) DO UPDATE SET value = excluded.value",
                params![key, value.to_string()],
            )
            .map(|_| ())
        })
    }
}

fn tmp_beside(p: &Path) -> PathBuf {
    let mut name = p.file_name().map(|n| n.to_os_string()).unwrap_or_default();
    name.push(".tmp");
    p.with_file_name(name)
}

/// One audited action: who did what to what, from where, and whether it worked.
#[derive(Clone, Debug)]
pub struct AuditEntry {
    pub user: String,
    pub action: &'static str,
    pub target: String,
    pub detail: serde_json::Value,
    pub addr: String,
    pub ok: bool,
}

fn migrate(conn: &mut Connection) -> Result<(), Error> {
    let have: usize = conn.query_row("PRAGMA user_version", [], |r| r.get::<_, i64>(0))? as usize;
    if have > MIGRATIONS.len() {
        return Err(Error::Migration {
            version: have,
            msg: format!(
                "the database is at schema version {have}, newer than this build's {}; use a newer tapstream",
                MIGRATIONS.len()
            ),
        });
    }
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(have) {
        let version = i + 1;
        let tx = conn.transaction()?;
        tx.execute_batch(sql).map_err(|e| Error::Migration { version, msg: e.to_string() })?;
        tx.pragma_update(None, "user_version", version as i64)?;
        tx.commit()?;
        tracing::info!(version, "control-plane store migrated");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn migrates_once_and_refuses_a_newer_schema() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("control.db");
        let s = Store::open(&p).unwrap();
        s.set_setting("k", &serde_json::json!({"a": 1})).unwrap();
        drop(s);
        // Reopening runs nothing again and keeps the data.
        let s = Store::open(&p).unwrap();
        assert_eq!(s.setting("k").unwrap(), Some(serde_json::json!({"a": 1})));
        let v: i64 = s.with(|c| c.query_row("PRAGMA user_version", [], |r| r.get(0))).unwrap();
        assert_eq!(v as usize, SCHEMA_VERSION);
        assert_eq!(SCHEMA_VERSION, 3);
        s.with(|c| c.pragma_update(None, "user_version", 99)).unwrap();
        drop(s);
        let e = Store::open(&p).err().unwrap().to_string();
        assert!(e.contains("newer than this build"), "{e}");
    }

    #[test]
    fn backup_is_a_whole_readable_copy() {
        let d = tempfile::tempdir().unwrap();
        let s = Store::open(&d.path().join("control.db")).unwrap();
        s.audit(&AuditEntry {
            user: "u".into(),
            action: "login",
            target: "u".into(),
            detail: serde_json::json!({}),
            addr: "127.0.0.1".into(),
            ok: true,
        })
        .unwrap();
        let out = d.path().join("backup.db");
        s.backup(&out).unwrap();
        assert!(!d.path().join("backup.db.tmp").exists());
        let b = Store::open(&out).unwrap();
        let n: i64 = b.with(|c| c.query_row("SELECT count(*) FROM audit", [], |r| r.get(0))).unwrap();
        assert_eq!(n, 1);
    }
}
