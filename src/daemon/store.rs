//! The daemon's state, in SQLite (WAL) under the state directory.
//!
//! What it keeps is what Git and the clusters cannot tell again: which revision each cluster last
//! had applied (and so what a pending update is relative to), approvals with who and when,
//! suspensions, drift findings and a history of applies. Every write is one transaction, so a
//! `kill -9` at any moment leaves either the old or the new row; on restart the daemon
//! re-derives the rest from Git and the clusters' inventories.

use std::path::Path;
use std::sync::Mutex;

use rusqlite::{Connection, OptionalExtension, params};
use serde::Serialize;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS clusters (
    name TEXT PRIMARY KEY,
    profile_revision TEXT,
    cluster_revision TEXT,
    digest TEXT,
    profile TEXT,
    version TEXT,
    applied_at INTEGER,
    sync TEXT NOT NULL DEFAULT 'new',
    message TEXT,
    health TEXT,
    drifted INTEGER NOT NULL DEFAULT 0,
    suspended INTEGER NOT NULL DEFAULT 0,
    updated_at INTEGER
);
CREATE TABLE IF NOT EXISTS pending (
    cluster TEXT PRIMARY KEY,
    base_revision TEXT NOT NULL,
    head_revision TEXT NOT NULL,
    hold TEXT NOT NULL,
    summary TEXT NOT NULL,
    diff TEXT NOT NULL,
    since INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS approvals (
    id INTEGER PRIMARY KEY,
    cluster TEXT NOT NULL,
    revision TEXT NOT NULL,
    approved_by TEXT NOT NULL,
    approved_at INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS drift (
    cluster TEXT NOT NULL,
    object TEXT NOT NULL,
    path TEXT NOT NULL,
    live TEXT,
    desired TEXT,
    found_at INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS history (
    id INTEGER PRIMARY KEY,
    cluster TEXT NOT NULL,
    revision TEXT,
    result TEXT NOT NULL,
    summary TEXT NOT NULL,
    at INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS history_cluster ON history (cluster, id);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS objects (
    cluster TEXT NOT NULL,
    object TEXT NOT NULL,
    layer TEXT NOT NULL,
    action TEXT NOT NULL,
    PRIMARY KEY (cluster, object)
);
CREATE TABLE IF NOT EXISTS outbox (
    revision TEXT NOT NULL,
    context TEXT NOT NULL,
    state TEXT NOT NULL,
    description TEXT NOT NULL,
    target_url TEXT,
    created_at INTEGER NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    next_attempt_ms INTEGER NOT NULL,
    last_error TEXT,
    PRIMARY KEY (revision, context)
);
CREATE TABLE IF NOT EXISTS delivered (
    revision TEXT NOT NULL,
    context TEXT NOT NULL,
    state TEXT NOT NULL,
    description TEXT NOT NULL,
    at INTEGER NOT NULL,
    PRIMARY KEY (revision, context)
);
";

/// Changes to what is stored, in order; `PRAGMA user_version` counts those a database has had.
/// Each runs once, in one transaction with the version bump, so a crash repeats it whole.
const MIGRATIONS: &[&str] = &[
    // 1: drift findings and pending diffs are stored redacted. Those written before may hold
    // Secret values: drop them. The first evaluation derives the pending updates again and the
    // first drift check (at start) the findings.
    "DELETE FROM drift; DELETE FROM pending; UPDATE clusters SET drifted = 0;",
];

fn migrate(conn: &mut Connection) -> rusqlite::Result<()> {
    let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    let version: i64 = tx.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    for migration in MIGRATIONS.iter().skip(version.max(0) as usize) {
        tx.execute_batch(migration)?;
    }
    if version < MIGRATIONS.len() as i64 {
        tx.pragma_update(None, "user_version", MIGRATIONS.len() as i64)?;
    }
    tx.commit()
}

/// What a cluster last had applied, and how it is doing.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct ClusterState {
    pub name: String,
    /// The revision whose profile content is applied.
    pub profile_revision: Option<String>,
    /// The revision whose cluster file is applied (differs while an in-place edit is held and an
    /// override of the same commit went ahead).
    pub cluster_revision: Option<String>,
    pub digest: Option<String>,
    pub profile: Option<String>,
    pub version: Option<String>,
    pub applied_at: Option<i64>,
    /// new | applying | applied | failed | unhealthy | suspended | removed
    pub sync: String,
    pub message: Option<String>,
    /// ready | progressing | failed | unknown
    pub health: Option<String>,
    pub drifted: i64,
    pub suspended: bool,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Pending {
    pub cluster: String,
    pub base_revision: String,
    pub head_revision: String,
    /// JSON of [`super::decide::Hold`].
    pub hold: String,
    pub summary: String,
    pub diff: String,
    pub since: i64,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Approval {
    pub cluster: String,
    pub revision: String,
    pub approved_by: String,
    pub approved_at: i64,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct DriftRow {
    pub object: String,
    pub path: String,
    pub live: Option<String>,
    pub desired: Option<String>,
    pub found_at: i64,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct HistoryRow {
    pub revision: Option<String>,
    pub result: String,
    pub summary: String,
    pub at: i64,
}

pub struct Store {
    db: Mutex<Connection>,
}

/// A cluster and its pending update, for the fleet page and the API's listing.
pub type FleetRow = (ClusterState, Option<Pending>);

/// A status waiting in the outbox.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Queued {
    pub status: crate::report::Status,
    pub attempts: u32,
}

pub fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}

pub type Result<T> = std::result::Result<T, String>;

fn db(e: rusqlite::Error) -> String {
    format!("state database: {e}")
}

/// `2026-11-29T13:10:46Z` for Unix seconds (UTC), without a date library.
pub fn rfc3339(secs: i64) -> String {
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    // Howard Hinnant's civil-from-days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + if m <= 2 { 1 } else { 0 };
    format!("{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z", rem / 3600, rem % 3600 / 60, rem % 60)
}

pub fn now() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap_or(0)
}

impl Store {
    pub fn open(dir: &Path) -> Result<Store> {
        std::fs::create_dir_all(dir).map_err(|e| format!("cannot create state directory {}: {e}", dir.display()))?;
        let mut conn = Connection::open(dir.join("strata.db")).map_err(db)?;
        conn.pragma_update(None, "journal_mode", "WAL").map_err(db)?;
        // With WAL, NORMAL loses nothing on a process crash (kill -9); FULL would also survive
        // power loss at a cost in fsyncs the state does not need: Git and the clusters hold the truth.
        conn.pragma_update(None, "synchronous", "NORMAL").map_err(db)?;
        conn.busy_timeout(std::time::Duration::from_secs(5)).map_err(db)?;
        conn.execute_batch(SCHEMA).map_err(db)?;
        migrate(&mut conn).map_err(db)?;
        Ok(Store { db: Mutex::new(conn) })
    }

    fn with<T>(&self, f: impl FnOnce(&mut Connection) -> rusqlite::Result<T>) -> Result<T> {
        let mut conn = self.db.lock().map_err(|_| "state database lock poisoned".to_string())?;
        f(&mut conn).map_err(db)
    }

    pub fn meta(&self, key: &str) -> Result<Option<String>> {
        self.with(|c| c.query_row("SELECT value FROM meta WHERE key = ?1", [key], |r| r.get(0)).optional())
    }

    pub fn set_meta(&self, key: &str, value: &str) -> Result<()> {
        self.with(|c| {
            c.execute(
                "INSERT INTO meta (key, value) VALUES (?1, ?2) ON CONFLICT(key) DO UPDATE SET value = ?2",
                [key, value],
            )
            .map(|_| ())
        })
    }

    fn row(r: &rusqlite::Row) -> rusqlite::Result<ClusterState> {
        Ok(ClusterState {
            name: r.get(0)?,
            profile_revision: r.get(1)?,
            cluster_revision: r.get(2)?,
            digest: r.get(3)?,
            profile: r.get(4)?,
            version: r.get(5)?,
            applied_at: r.get(6)?,
            sync: r.get(7)?,
            message: r.get(8)?,
            health: r.get(9)?,
            drifted: r.get(10)?,
            suspended: r.get::<_, i64>(11)? != 0,
        })
    }

    const COLUMNS: &'static str = "name, profile_revision, cluster_revision, digest, profile, version, applied_at, sync, message, health, drifted, suspended";

    pub fn cluster(&self, name: &str) -> Result<Option<ClusterState>> {
        let sql = format!("SELECT {} FROM clusters WHERE name = ?1", Self::COLUMNS);
        self.with(|c| c.query_row(&sql, [name], Self::row).optional())
    }

    pub fn clusters(&self) -> Result<Vec<ClusterState>> {
        let sql = format!("SELECT {} FROM clusters ORDER BY name", Self::COLUMNS);
        self.with(|c| c.prepare(&sql)?.query_map([], Self::row)?.collect())
    }

    /// Records a successful apply: what is now running, and a history row, in one transaction.
    #[allow(clippy::too_many_arguments)]
    pub fn record_applied(
        &self,
        name: &str,
        profile_revision: Option<&str>,
        cluster_revision: Option<&str>,
        digest: &str,
        profile: &str,
        version: &str,
        sync: &str,
        health: &str,
        summary: &str,
    ) -> Result<()> {
        let now = now();
        self.with(|c| {
            let tx = c.transaction()?;
            tx.execute(
                "INSERT INTO clusters (name, profile_revision, cluster_revision, digest, profile, version, applied_at, sync, message, health, updated_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?7)
                 ON CONFLICT(name) DO UPDATE SET profile_revision = ?2, cluster_revision = ?3, digest = ?4, profile = ?5,
                   version = ?6, applied_at = ?7, sync = ?8, message = ?9, health = ?10, updated_at = ?7",
                params![name, profile_revision, cluster_revision, digest, profile, version, now, sync, summary, health],
            )?;
            tx.execute(
                "INSERT INTO history (cluster, revision, result, summary, at) VALUES (?1, ?2, ?3, ?4, ?5)",
                params![name, cluster_revision, sync, summary, now],
            )?;
            tx.commit()
        })
    }

    /// Records a state change that is not an apply (applying, failed, removed…).
    pub fn set_sync(&self, name: &str, sync: &str, message: Option<&str>, revision: Option<&str>) -> Result<()> {
        let now = now();
        self.with(|c| {
            let tx = c.transaction()?;
            tx.execute(
                "INSERT INTO clusters (name, sync, message, updated_at) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT(name) DO UPDATE SET sync = ?2, message = ?3, updated_at = ?4",
                params![name, sync, message, now],
            )?;
            if sync == "failed" || sync == "removed" {
                tx.execute(
                    "INSERT INTO history (cluster, revision, result, summary, at) VALUES (?1, ?2, ?3, ?4, ?5)",
                    params![name, revision, sync, message.unwrap_or(""), now],
                )?;
            }
            tx.commit()
        })
    }

    pub fn set_suspended(&self, name: &str, suspended: bool) -> Result<()> {
        self.with(|c| {
            c.execute(
                "INSERT INTO clusters (name, suspended, updated_at) VALUES (?1, ?2, ?3)
                 ON CONFLICT(name) DO UPDATE SET suspended = ?2, updated_at = ?3",
                params![name, suspended as i64, now()],
            )
            .map(|_| ())
        })
    }

    /// Replaces the list of objects applied to `cluster` (object, layer, what the last apply did).
    pub fn set_objects(&self, cluster: &str, objects: &[(String, String, String)]) -> Result<()> {
        self.with(|c| {
            let tx = c.transaction()?;
            tx.execute("DELETE FROM objects WHERE cluster = ?1", [cluster])?;
            for (object, layer, action) in objects {
                tx.execute(
                    "INSERT OR REPLACE INTO objects (cluster, object, layer, action) VALUES (?1, ?2, ?3, ?4)",
                    params![cluster, object, layer, action],
                )?;
            }
            tx.commit()
        })
    }

    pub fn objects(&self, cluster: &str) -> Result<Vec<(String, String, String)>> {
        self.with(|c| {
            c.prepare("SELECT object, layer, action FROM objects WHERE cluster = ?1 ORDER BY rowid")?
                .query_map([cluster], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
                .collect()
        })
    }

    /// Every cluster with its pending update, in one query (the fleet page and `strata status`
    /// list a thousand of them).
    pub fn fleet(&self) -> Result<Vec<FleetRow>> {
        let columns: String = Self::COLUMNS.split(", ").map(|c| format!("c.{c}")).collect::<Vec<_>>().join(", ");
        let pending: String = Self::PENDING.split(", ").map(|c| format!("p.{c}")).collect::<Vec<_>>().join(", ");
        let sql = format!(
            "SELECT {columns}, {pending} FROM clusters c LEFT JOIN pending p ON p.cluster = c.name ORDER BY c.name"
        );
        self.with(|c| {
            c.prepare(&sql)?
                .query_map([], |r| {
                    let pending = match r.get::<_, Option<String>>(12)? {
                        Some(_) => Some(Self::pending_row(r, 12)?),
                        None => None,
                    };
                    Ok((Self::row(r)?, pending))
                })?
                .collect()
        })
    }

    const PENDING: &'static str = "cluster, base_revision, head_revision, hold, summary, diff, since";

    /// A pending update from the row's columns starting at `at`.
    fn pending_row(r: &rusqlite::Row, at: usize) -> rusqlite::Result<Pending> {
        Ok(Pending {
            cluster: r.get(at)?,
            base_revision: r.get(at + 1)?,
            head_revision: r.get(at + 2)?,
            hold: r.get(at + 3)?,
            summary: r.get(at + 4)?,
            diff: r.get(at + 5)?,
            since: r.get(at + 6)?,
        })
    }

    pub fn pending(&self, cluster: &str) -> Result<Option<Pending>> {
        let sql = format!("SELECT {} FROM pending WHERE cluster = ?1", Self::PENDING);
        self.with(|c| c.query_row(&sql, [cluster], |r| Self::pending_row(r, 0)).optional())
    }

    /// Sets or replaces the cluster's pending update (`since` is kept while the head is the same).
    pub fn set_pending(&self, p: &Pending) -> Result<()> {
        self.with(|c| {
            c.execute(
                "INSERT INTO pending (cluster, base_revision, head_revision, hold, summary, diff, since) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
                 ON CONFLICT(cluster) DO UPDATE SET base_revision = ?2, hold = ?4, summary = ?5, diff = ?6,
                   since = CASE WHEN head_revision = ?3 THEN since ELSE ?7 END, head_revision = ?3",
                params![p.cluster, p.base_revision, p.head_revision, p.hold, p.summary, p.diff, p.since],
            )
            .map(|_| ())
        })
    }

    pub fn clear_pending(&self, cluster: &str) -> Result<()> {
        self.with(|c| c.execute("DELETE FROM pending WHERE cluster = ?1", [cluster]).map(|_| ()))
    }

    pub fn pending_count(&self) -> Result<i64> {
        self.with(|c| c.query_row("SELECT COUNT(*) FROM pending", [], |r| r.get(0)))
    }

    fn approval_row(r: &rusqlite::Row) -> rusqlite::Result<Approval> {
        Ok(Approval { cluster: r.get(0)?, revision: r.get(1)?, approved_by: r.get(2)?, approved_at: r.get(3)? })
    }

    pub fn approve(&self, cluster: &str, revision: &str, by: &str) -> Result<Approval> {
        let approval =
            Approval { cluster: cluster.into(), revision: revision.into(), approved_by: by.into(), approved_at: now() };
        self.with(|c| {
            c.execute(
                "INSERT INTO approvals (cluster, revision, approved_by, approved_at) VALUES (?1, ?2, ?3, ?4)",
                params![approval.cluster, approval.revision, approval.approved_by, approval.approved_at],
            )
            .map(|_| ())
        })?;
        Ok(approval)
    }

    /// The approval of `revision` for `cluster`, if there is one.
    pub fn approval(&self, cluster: &str, revision: &str) -> Result<Option<Approval>> {
        self.with(|c| {
            c.query_row(
                "SELECT cluster, revision, approved_by, approved_at FROM approvals WHERE cluster = ?1 AND revision = ?2 ORDER BY id DESC LIMIT 1",
                [cluster, revision],
                Self::approval_row,
            )
            .optional()
        })
    }

    pub fn approvals(&self, cluster: &str) -> Result<Vec<Approval>> {
        self.with(|c| {
            c.prepare(
                "SELECT cluster, revision, approved_by, approved_at FROM approvals WHERE cluster = ?1 ORDER BY id",
            )?
            .query_map([cluster], Self::approval_row)?
            .collect()
        })
    }

    /// Replaces the cluster's drift findings with these.
    pub fn set_drift(&self, cluster: &str, findings: &[DriftRow]) -> Result<()> {
        self.with(|c| {
            let tx = c.transaction()?;
            tx.execute("DELETE FROM drift WHERE cluster = ?1", [cluster])?;
            for f in findings {
                tx.execute(
                    "INSERT INTO drift (cluster, object, path, live, desired, found_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                    params![cluster, f.object, f.path, f.live, f.desired, f.found_at],
                )?;
            }
            tx.execute("UPDATE clusters SET drifted = ?2 WHERE name = ?1", params![cluster, findings.len() as i64])?;
            tx.commit()
        })
    }

    pub fn drift(&self, cluster: &str) -> Result<Vec<DriftRow>> {
        self.with(|c| {
            c.prepare(
                "SELECT object, path, live, desired, found_at FROM drift WHERE cluster = ?1 ORDER BY object, path",
            )?
            .query_map([cluster], |r| {
                Ok(DriftRow {
                    object: r.get(0)?,
                    path: r.get(1)?,
                    live: r.get(2)?,
                    desired: r.get(3)?,
                    found_at: r.get(4)?,
                })
            })?
            .collect()
        })
    }

    /// Queues a status for delivery, replacing one not yet delivered for the same commit and
    /// context. Returns false when it was delivered already with this state and description:
    /// no write for what the forge already shows.
    pub fn enqueue(&self, status: &crate::report::Status) -> Result<bool> {
        let now = now();
        self.with(|c| {
            let tx = c.transaction()?;
            let delivered: Option<(String, String)> = tx
                .query_row(
                    "SELECT state, description FROM delivered WHERE revision = ?1 AND context = ?2",
                    [&status.revision, &status.context],
                    |r| Ok((r.get(0)?, r.get(1)?)),
                )
                .optional()?;
            let same = delivered.is_some_and(|(s, d)| s == status.state.as_str() && d == status.description);
            if same {
                tx.execute("DELETE FROM outbox WHERE revision = ?1 AND context = ?2", [&status.revision, &status.context])?;
            } else {
                tx.execute(
                    "INSERT INTO outbox (revision, context, state, description, target_url, created_at, attempts, next_attempt_ms)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, 0, ?7)
                     ON CONFLICT(revision, context) DO UPDATE SET state = ?3, description = ?4, target_url = ?5, attempts = 0, next_attempt_ms = ?7, last_error = NULL",
                    params![status.revision, status.context, status.state.as_str(), status.description, status.target_url, now, now_ms()],
                )?;
            }
            tx.commit()?;
            Ok(!same)
        })
    }

    /// Statuses due for delivery, oldest first.
    pub fn due(&self, now_ms: i64, limit: usize) -> Result<Vec<Queued>> {
        self.with(|c| {
            c.prepare(
                "SELECT revision, context, state, description, target_url, attempts FROM outbox
                 WHERE next_attempt_ms <= ?1 ORDER BY created_at, rowid LIMIT ?2",
            )?
            .query_map(params![now_ms, limit as i64], |r| {
                let state: String = r.get(2)?;
                Ok(Queued {
                    status: crate::report::Status {
                        revision: r.get(0)?,
                        context: r.get(1)?,
                        state: crate::report::State::parse(&state).unwrap_or(crate::report::State::Error),
                        description: r.get(3)?,
                        target_url: r.get(4)?,
                    },
                    attempts: r.get::<_, i64>(5)? as u32,
                })
            })?
            .collect()
        })
    }

    /// When the next queued status is due (milliseconds), if any is queued.
    pub fn next_due(&self) -> Result<Option<i64>> {
        self.with(|c| c.query_row("SELECT MIN(next_attempt_ms) FROM outbox", [], |r| r.get(0)))
    }

    pub fn outbox_len(&self) -> Result<i64> {
        self.with(|c| c.query_row("SELECT COUNT(*) FROM outbox", [], |r| r.get(0)))
    }

    /// Records a delivery; the queued entry goes unless it changed while being delivered.
    pub fn delivered(&self, status: &crate::report::Status) -> Result<()> {
        self.with(|c| {
            let tx = c.transaction()?;
            tx.execute(
                "DELETE FROM outbox WHERE revision = ?1 AND context = ?2 AND state = ?3 AND description = ?4",
                params![status.revision, status.context, status.state.as_str(), status.description],
            )?;
            tx.execute(
                "INSERT INTO delivered (revision, context, state, description, at) VALUES (?1, ?2, ?3, ?4, ?5)
                 ON CONFLICT(revision, context) DO UPDATE SET state = ?3, description = ?4, at = ?5",
                params![status.revision, status.context, status.state.as_str(), status.description, now()],
            )?;
            tx.commit()
        })
    }

    /// Puts a queued status off until `next_ms`, noting why.
    pub fn retry(&self, status: &crate::report::Status, next_ms: i64, error: &str) -> Result<()> {
        self.with(|c| {
            c.execute(
                "UPDATE outbox SET attempts = attempts + 1, next_attempt_ms = ?3, last_error = ?4 WHERE revision = ?1 AND context = ?2",
                params![status.revision, status.context, next_ms, error],
            )
            .map(|_| ())
        })
    }

    pub fn history(&self, cluster: &str, limit: usize) -> Result<Vec<HistoryRow>> {
        self.with(|c| {
            c.prepare("SELECT revision, result, summary, at FROM history WHERE cluster = ?1 ORDER BY id DESC LIMIT ?2")?
                .query_map(params![cluster, limit as i64], |r| {
                    Ok(HistoryRow { revision: r.get(0)?, result: r.get(1)?, summary: r.get(2)?, at: r.get(3)? })
                })?
                .collect()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn applied_state_pending_updates_and_approvals_survive_reopening() {
        let dir = tempfile::tempdir().unwrap();
        {
            let store = Store::open(dir.path()).unwrap();
            store
                .record_applied(
                    "aws",
                    Some("r1"),
                    Some("r1"),
                    "sha256:a",
                    "aws-profile",
                    "1.0.0",
                    "applied",
                    "ready",
                    "3 created",
                )
                .unwrap();
            store
                .set_pending(&Pending {
                    cluster: "aws".into(),
                    base_revision: "r1".into(),
                    head_revision: "r2".into(),
                    hold: "{\"until\":\"approval\"}".into(),
                    summary: "pending update aws-profile@1.0.0".into(),
                    diff: "-  replicas: 1\n+  replicas: 3\n".into(),
                    since: 100,
                })
                .unwrap();
            store.approve("aws", "r2", "alice").unwrap();
            store.set_suspended("edge", true).unwrap();
        }
        let store = Store::open(dir.path()).unwrap();
        let aws = store.cluster("aws").unwrap().unwrap();
        assert_eq!(aws.profile_revision.as_deref(), Some("r1"));
        assert_eq!(aws.sync, "applied");
        assert_eq!(store.pending("aws").unwrap().unwrap().head_revision, "r2");
        assert_eq!(store.approval("aws", "r2").unwrap().unwrap().approved_by, "alice");
        assert_eq!(store.approval("aws", "r3").unwrap(), None);
        assert!(store.cluster("edge").unwrap().unwrap().suspended);
        assert_eq!(store.history("aws", 10).unwrap().len(), 1);
    }

    #[test]
    fn databases_from_before_redaction_lose_their_drift_findings_and_pending_diffs_once() {
        let dir = tempfile::tempdir().unwrap();
        {
            // A state database as versions without redaction left it: user_version 0.
            let store = Store::open(dir.path()).unwrap();
            store.with(|c| c.pragma_update(None, "user_version", 0)).unwrap();
            store
                .record_applied("c", Some("r1"), Some("r1"), "sha256:a", "p", "1.0.0", "applied", "ready", "ok")
                .unwrap();
            let row = DriftRow {
                object: "Secret/app/db".into(),
                path: "/data/password".into(),
                live: Some("\"aHVudGVyMg==\"".into()),
                desired: Some("\"c2VjcmV0\"".into()),
                found_at: 1,
            };
            store.set_drift("c", &[row]).unwrap();
            let pending = Pending {
                cluster: "c".into(),
                base_revision: "r1".into(),
                head_revision: "r2".into(),
                hold: "{}".into(),
                summary: "pending".into(),
                diff: "-  password: aHVudGVyMg==\n".into(),
                since: 1,
            };
            store.set_pending(&pending).unwrap();
            store.approve("c", "r2", "alice").unwrap();
        }
        let store = Store::open(dir.path()).unwrap();
        assert_eq!(store.drift("c").unwrap(), vec![]);
        assert_eq!(store.pending("c").unwrap(), None);
        let c = store.cluster("c").unwrap().unwrap();
        assert_eq!((c.drifted, c.digest.as_deref()), (0, Some("sha256:a")), "what is applied is kept");
        assert_eq!(store.approvals("c").unwrap().len(), 1);
        assert_eq!(store.with(|c| c.query_row("PRAGMA user_version", [], |r| r.get::<_, i64>(0))).unwrap(), 1);

        // Migrated once: what is stored from now on stays.
        store
            .set_drift(
                "c",
                &[DriftRow { object: "o".into(), path: "/p".into(), live: None, desired: None, found_at: 2 }],
            )
            .unwrap();
        drop(store);
        assert_eq!(Store::open(dir.path()).unwrap().drift("c").unwrap().len(), 1);
    }

    #[test]
    fn rfc3339_dates() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(1_795_824_000 + 3661), "2026-11-28T01:01:01Z");
        assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00Z");
    }

    #[test]
    fn the_outbox_coalesces_and_skips_what_was_delivered() {
        use crate::report::{State, Status};
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let applying = Status::new("r1", "strata/a".into(), State::Pending, "applying", None);
        let applied = Status::new("r1", "strata/a".into(), State::Success, "applied", None);
        assert!(store.enqueue(&applying).unwrap());
        assert!(store.enqueue(&applied).unwrap());
        let due = store.due(now_ms(), 10).unwrap();
        assert_eq!(due.len(), 1, "the newer state replaces the older");
        assert_eq!(due[0].status.state, State::Success);
        store.delivered(&applied).unwrap();
        assert_eq!(store.outbox_len().unwrap(), 0);
        assert!(!store.enqueue(&applied).unwrap(), "already on the forge");
        assert!(store.enqueue(&applying).unwrap());
        store.retry(&applying, now_ms() + 60_000, "503").unwrap();
        assert!(store.due(now_ms(), 10).unwrap().is_empty());
        assert!(store.next_due().unwrap().unwrap() > now_ms());
    }

    #[test]
    fn a_pending_update_keeps_its_age_until_the_head_moves() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let mut p = Pending {
            cluster: "c".into(),
            base_revision: "r1".into(),
            head_revision: "r2".into(),
            hold: "{}".into(),
            summary: String::new(),
            diff: String::new(),
            since: 100,
        };
        store.set_pending(&p).unwrap();
        p.since = 200;
        store.set_pending(&p).unwrap();
        assert_eq!(store.pending("c").unwrap().unwrap().since, 100);
        p.head_revision = "r3".into();
        store.set_pending(&p).unwrap();
        assert_eq!(store.pending("c").unwrap().unwrap().since, 200);
        store.clear_pending("c").unwrap();
        assert_eq!(store.pending("c").unwrap(), None);
    }
}
