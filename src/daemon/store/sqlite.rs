//! The SQLite backend: the daemon's state in one file (WAL) under the state directory, for a
//! single host.
//!
//! ```text
//!   Store calls ──> SqliteStore ──> state_dir/strata.db   (one transaction per write)
//! ```
//!
//! Calls are async ([`Store`]) but do their SQL synchronously inside: a local file and short
//! transactions, done before the call returns, so the event loop that awaits them is held up no
//! longer than the SQL takes. Pruning, which can delete many rows at once, runs on a blocking
//! thread instead (other calls wait for its transaction meanwhile, as for any).
//!
//! Every write is one transaction, so a `kill -9` at any moment leaves either the old or the new
//! row. The file's integrity is checked when it is opened (`PRAGMA quick_check`); a corrupt file is
//! never written to, and [`recover`] moves it aside, salvaging what it can still read.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use rusqlite::types::Type;
use rusqlite::{Connection, ErrorCode, OpenFlags, OptionalExtension, params};

use super::{
    Applied, Approval, ClusterState, DELIVERED_KEPT_SECS, DriftRow, Failures, FleetRow, HISTORY_KEPT, HistoryRow,
    ObjectRow, Pending, Queued, Result, States, Store, StoreError, now, now_ms,
};
use super::{Approver, AuditEntry, AuditOutcome, AuditQuery, AuditVia};
use crate::daemon::decide::Hold;
use crate::daemon::metrics::KindLabel;
use crate::daemon::state::{RevisionState, Sync, Verdict};
use crate::rollout::gate::Progress;

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
CREATE TABLE IF NOT EXISTS revision (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    head TEXT NOT NULL,
    verdict TEXT NOT NULL,
    message TEXT,
    at INTEGER NOT NULL,
    last_good TEXT
);
CREATE TABLE IF NOT EXISTS delivered (
    revision TEXT NOT NULL,
    context TEXT NOT NULL,
    state TEXT NOT NULL,
    description TEXT NOT NULL,
    at INTEGER NOT NULL,
    PRIMARY KEY (revision, context)
);
CREATE INDEX IF NOT EXISTS delivered_at ON delivered (at);
CREATE TABLE IF NOT EXISTS rollouts (
    name TEXT PRIMARY KEY,
    generation INTEGER NOT NULL,
    progress TEXT NOT NULL
);
";

/// Changes to what is stored, in order; `PRAGMA user_version` counts those a database has had.
/// Each runs once, in one transaction with the version bump, so a crash repeats it whole.
const MIGRATIONS: &[&str] = &[
    // 1: drift findings and pending diffs are stored redacted. Those written before may hold
    // Secret values: drop them. The first evaluation derives the pending updates again and the
    // first drift check (at start) the findings.
    "DELETE FROM drift; DELETE FROM pending; UPDATE clusters SET drifted = 0;",
    // 2: a pending diff remembers the digest of the set it starts from.
    "ALTER TABLE pending ADD COLUMN base_digest TEXT;",
    // 3: retries of one revision that end the same way are one history entry with a count.
    "ALTER TABLE history ADD COLUMN count INTEGER NOT NULL DEFAULT 1;
     ALTER TABLE history ADD COLUMN first_at INTEGER;",
    // 4: the audit trail (daemon::audit): rows are added and, past the retention or the bound,
    // deleted oldest first; never changed.
    "CREATE TABLE IF NOT EXISTS audit (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        at INTEGER NOT NULL,
        action TEXT NOT NULL,
        outcome TEXT NOT NULL,
        who TEXT NOT NULL,
        cluster TEXT,
        rollout TEXT,
        revision TEXT,
        detail TEXT NOT NULL,
        remote TEXT,
        via TEXT NOT NULL
    );
    CREATE INDEX IF NOT EXISTS audit_at ON audit (at);
    CREATE INDEX IF NOT EXISTS audit_cluster ON audit (cluster, at);
    CREATE TRIGGER IF NOT EXISTS audit_append_only BEFORE UPDATE ON audit
        BEGIN SELECT RAISE(ABORT, 'the audit trail is append-only'); END;",
    // 5: an approval records the identity approval rules count, and its groups (JSON).
    "ALTER TABLE approvals ADD COLUMN identity TEXT; ALTER TABLE approvals ADD COLUMN groups TEXT;",
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

/// The database file under the state directory.
pub const FILE: &str = "strata.db";

impl StoreError {
    fn sqlite(path: &Path, source: rusqlite::Error) -> StoreError {
        match source.sqlite_error_code() {
            Some(ErrorCode::DatabaseCorrupt | ErrorCode::NotADatabase) => {
                StoreError::Corrupt { path: path.to_path_buf(), detail: source.to_string() }
            }
            _ => StoreError::Sqlite { path: path.to_path_buf(), source },
        }
    }
}

/// What to do about a database error, where strata can tell.
pub(super) fn hint(e: &rusqlite::Error) -> &'static str {
    match e.sqlite_error_code() {
        Some(ErrorCode::ReadOnly | ErrorCode::CannotOpen | ErrorCode::PermissionDenied) => {
            " (check that the user strata runs as can write the file and its directory)"
        }
        Some(ErrorCode::DiskFull) => " (the file system is full: free space under the state directory)",
        Some(ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked) => {
            " (another process holds it: is a second strata running with this state_dir?)"
        }
        Some(ErrorCode::SystemIoFailure) => " (the disk failed a read or write: check the kernel log)",
        _ => "",
    }
}

pub struct SqliteStore {
    path: PathBuf,
    /// `None` when the file could not be opened or is corrupt: every call fails. Shared with
    /// the blocking thread pruning runs on.
    db: Option<Arc<Mutex<Connection>>>,
    unusable: Option<String>,
    failures: Failures,
    /// Every cluster's state as the last full read and the writes since left it: what an
    /// evaluation reads whole, without reading 10,000 rows again (the daemon is the database's
    /// only writer). Updated inside each write's closure, under the connection's lock, so it
    /// follows the writes in their order.
    kept: Mutex<Kept>,
}

/// The states kept in memory, and an account of the writes to them: which clusters' states
/// were written since a mark, so an evaluation compares those rather than the fleet's.
#[derive(Default)]
struct Kept {
    /// `None` until read, or after a row could not be read.
    states: Option<Arc<States>>,
    /// Bumped by every write to a state (and by forgetting the states).
    mark: u64,
    /// The writes after `floor`, oldest first: (mark, cluster). What went before is not known.
    log: std::collections::VecDeque<(u64, String)>,
    floor: u64,
}

/// Writes accounted for; an evaluation further behind compares every state.
const WRITES_KEPT: usize = 16_384;

impl Kept {
    /// The states are no longer known: nobody is told what changed since an earlier mark.
    fn forget(&mut self) {
        self.states = None;
        self.mark += 1;
        self.floor = self.mark;
        self.log.clear();
    }

    fn wrote(&mut self, name: &str) {
        self.mark += 1;
        self.log.push_back((self.mark, name.to_string()));
        if self.log.len() > WRITES_KEPT
            && let Some((mark, _)) = self.log.pop_front()
        {
            self.floor = mark;
        }
    }
}

/// Opens (creating) the database at `path` and checks its integrity.
fn connect(path: &Path) -> Result<Connection> {
    let sqlite = |e| StoreError::sqlite(path, e);
    let mut conn = Connection::open(path).map_err(sqlite)?;
    // Only another process (an operator's sqlite3) can hold the lock; the daemon's event loop
    // waits for it, so not for long.
    conn.busy_timeout(std::time::Duration::from_secs(1)).map_err(sqlite)?;
    // Before anything writes: a damaged file is refused, not built upon.
    let verdicts: Vec<String> = conn
        .prepare("PRAGMA quick_check")
        .and_then(|mut s| s.query_map([], |r| r.get(0))?.collect())
        .map_err(sqlite)?;
    if verdicts.first().map(String::as_str) != Some("ok") {
        return Err(StoreError::Corrupt { path: path.to_path_buf(), detail: verdicts.join("; ") });
    }
    conn.pragma_update(None, "journal_mode", "WAL").map_err(sqlite)?;
    // With WAL, NORMAL loses nothing on a process crash (kill -9); FULL would also survive
    // power loss at a cost in fsyncs the state does not need: Git and the clusters hold the truth.
    conn.pragma_update(None, "synchronous", "NORMAL").map_err(sqlite)?;
    conn.execute_batch(SCHEMA).map_err(sqlite)?;
    migrate(&mut conn).map_err(sqlite)?;
    Ok(conn)
}

fn progress_row(r: &rusqlite::Row) -> rusqlite::Result<Progress> {
    let text: String = r.get(1)?;
    let mut progress: Progress = serde_json::from_str(&text)
        .map_err(|e| rusqlite::Error::FromSqlConversionFailure(1, Type::Text, Box::new(e)))?;
    progress.generation = r.get::<_, i64>(0)? as u64;
    Ok(progress)
}

fn hold_column(r: &rusqlite::Row, at: usize) -> rusqlite::Result<Hold> {
    let text: String = r.get(at)?;
    serde_json::from_str(&text).map_err(|e| rusqlite::Error::FromSqlConversionFailure(at, Type::Text, Box::new(e)))
}

impl SqliteStore {
    /// The state database under `dir`, created when there is none. Fails on a file that is not
    /// a database or does not pass `PRAGMA quick_check`.
    pub fn open(dir: &Path) -> Result<SqliteStore> {
        std::fs::create_dir_all(dir).map_err(|source| StoreError::Directory { dir: dir.to_path_buf(), source })?;
        let path = dir.join(FILE);
        let conn = connect(&path)?;
        Ok(SqliteStore {
            path,
            db: Some(Arc::new(Mutex::new(conn))),
            unusable: None,
            failures: Failures::default(),
            kept: Mutex::default(),
        })
    }

    /// A store that answers every call with `error`: the daemon keeps serving its health
    /// endpoints and reports the database as the reason it is not ready, but decides nothing.
    pub fn unusable(dir: &Path, error: &StoreError) -> SqliteStore {
        SqliteStore {
            path: dir.join(FILE),
            db: None,
            unusable: Some(error.to_string()),
            failures: Failures::broken(error),
            kept: Mutex::default(),
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn run<T>(&self, write: bool, f: impl FnOnce(&mut Connection) -> rusqlite::Result<T>) -> Result<T> {
        let result = match &self.db {
            Some(db) if self.failures.usable() => {
                // A panic while holding the lock leaves the connection as SQLite left it: usable.
                let mut conn = db.lock().unwrap_or_else(|p| p.into_inner());
                f(&mut conn).map_err(|e| StoreError::sqlite(&self.path, e))
            }
            _ => Err(StoreError::Corrupt {
                path: self.path.clone(),
                detail: self.unusable.clone().unwrap_or_else(|| "found corrupt while running".into()),
            }),
        };
        self.failures.note(&result, write);
        result
    }

    /// As [`SqliteStore::run`] for a write, on a blocking thread: for writes that may take long.
    async fn write_blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Connection) -> rusqlite::Result<T> + Send + 'static,
    ) -> Result<T> {
        let result = match &self.db {
            Some(db) if self.failures.usable() => {
                let (db, path) = (db.clone(), self.path.clone());
                let work = tokio::task::spawn_blocking(move || {
                    let mut conn = db.lock().unwrap_or_else(|p| p.into_inner());
                    f(&mut conn).map_err(|e| StoreError::sqlite(&path, e))
                });
                match work.await {
                    Ok(result) => result,
                    // The blocking task panicked: resumed here, as a panic inside `run` would be.
                    Err(e) => std::panic::resume_unwind(e.into_panic()),
                }
            }
            _ => Err(StoreError::Corrupt {
                path: self.path.clone(),
                detail: self.unusable.clone().unwrap_or_else(|| "found corrupt while running".into()),
            }),
        };
        self.failures.note(&result, true);
        result
    }

    fn read<T>(&self, f: impl FnOnce(&mut Connection) -> rusqlite::Result<T>) -> Result<T> {
        self.run(false, f)
    }

    fn write<T>(&self, f: impl FnOnce(&mut Connection) -> rusqlite::Result<T>) -> Result<T> {
        self.run(true, f)
    }

    /// Every cluster's state, read from the database.
    fn read_states(c: &Connection) -> rusqlite::Result<States> {
        let sql = format!("SELECT {} FROM clusters", Self::COLUMNS);
        c.prepare(&sql)?.query_map([], Self::row)?.map(|r| r.map(|state| (state.name.clone(), state))).collect()
    }

    /// Brings `name`'s state in the kept map up to what was just written (called with the
    /// connection, inside the write, after its commit).
    fn written(&self, c: &Connection, name: &str) {
        let mut kept = self.kept.lock().unwrap_or_else(|p| p.into_inner());
        let Some(states) = kept.states.as_mut() else { return };
        let sql = format!("SELECT {} FROM clusters WHERE name = ?1", Self::COLUMNS);
        match c.query_row(&sql, [name], Self::row).optional() {
            Ok(Some(state)) => {
                Arc::make_mut(states).insert(name.to_string(), state);
                kept.wrote(name);
            }
            Ok(None) => {
                Arc::make_mut(states).remove(name);
                kept.wrote(name);
            }
            // Read whole again next time.
            Err(_) => kept.forget(),
        }
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

    const PENDING: &'static str = "cluster, base_revision, head_revision, hold, summary, diff, since, base_digest";

    /// Clusters joined with their pending updates: one statement, one snapshot.
    fn fleet_query() -> String {
        let columns: String = Self::COLUMNS.split(", ").map(|c| format!("c.{c}")).collect::<Vec<_>>().join(", ");
        let pending: String = Self::PENDING.split(", ").map(|c| format!("p.{c}")).collect::<Vec<_>>().join(", ");
        format!("SELECT {columns}, {pending} FROM clusters c LEFT JOIN pending p ON p.cluster = c.name")
    }

    fn fleet_row(r: &rusqlite::Row) -> rusqlite::Result<FleetRow> {
        let pending = match r.get::<_, Option<String>>(12)? {
            Some(_) => Some(Self::pending_row(r, 12)?),
            None => None,
        };
        Ok((Self::row(r)?, pending))
    }

    /// A pending update from the row's columns starting at `at`.
    fn pending_row(r: &rusqlite::Row, at: usize) -> rusqlite::Result<Pending> {
        Ok(Pending {
            cluster: r.get(at)?,
            base_revision: r.get(at + 1)?,
            head_revision: r.get(at + 2)?,
            hold: hold_column(r, at + 3)?,
            summary: r.get(at + 4)?,
            diff: r.get(at + 5)?,
            since: r.get(at + 6)?,
            base_digest: r.get(at + 7)?,
        })
    }

    fn approval_row(r: &rusqlite::Row) -> rusqlite::Result<Approval> {
        let approved_by: String = r.get(2)?;
        let identity: Option<String> = r.get(4)?;
        let groups: Option<String> = r.get(5)?;
        Ok(Approval {
            cluster: r.get(0)?,
            revision: r.get(1)?,
            identity: identity.unwrap_or_else(|| super::identity_of(&approved_by)),
            approved_by,
            approved_at: r.get(3)?,
            groups: groups.and_then(|g| serde_json::from_str(&g).ok()).unwrap_or_default(),
        })
    }
}

impl Store for SqliteStore {
    fn location(&self) -> String {
        self.path.display().to_string()
    }

    /// Corruption and an unusable file stay until the daemon restarts on a recovered database.
    fn problem(&self) -> Option<String> {
        self.failures.problem()
    }

    /// It opened, passed its integrity check, and no corruption showed since.
    fn usable(&self) -> bool {
        self.failures.usable()
    }

    fn error_counter(&self) -> Family<KindLabel, Counter> {
        self.failures.counter()
    }

    async fn probe(&self) -> Result<()> {
        self.set_meta("probed-at", &now().to_string()).await
    }

    async fn meta(&self, key: &str) -> Result<Option<String>> {
        self.read(|c| c.query_row("SELECT value FROM meta WHERE key = ?1", [key], |r| r.get(0)).optional())
    }

    async fn set_meta(&self, key: &str, value: &str) -> Result<()> {
        self.write(|c| {
            c.execute(
                "INSERT INTO meta (key, value) VALUES (?1, ?2) ON CONFLICT(key) DO UPDATE SET value = ?2",
                [key, value],
            )
            .map(|_| ())
        })
    }

    /// The revision the daemon follows, as last evaluated.
    async fn revision(&self) -> Result<Option<RevisionState>> {
        self.read(|c| {
            c.query_row("SELECT head, verdict, message, at, last_good FROM revision WHERE id = 1", [], |r| {
                Ok(RevisionState {
                    head: r.get(0)?,
                    verdict: r.get(1)?,
                    message: r.get(2)?,
                    at: r.get(3)?,
                    last_good: r.get(4)?,
                })
            })
            .optional()
        })
    }

    /// Records what came of evaluating `head`; a loaded head becomes the last good revision.
    async fn set_revision(&self, head: &str, verdict: Verdict, message: Option<&str>) -> Result<()> {
        let last_good = (verdict == Verdict::Loaded).then_some(head);
        self.write(|c| {
            c.execute(
                "INSERT INTO revision (id, head, verdict, message, at, last_good) VALUES (1, ?1, ?2, ?3, ?4, ?5)
                 ON CONFLICT(id) DO UPDATE SET head = ?1, verdict = ?2, message = ?3, at = ?4,
                   last_good = COALESCE(?5, last_good)",
                params![head, verdict, message, now(), last_good],
            )
            .map(|_| ())
        })
    }

    async fn cluster(&self, name: &str) -> Result<Option<ClusterState>> {
        let sql = format!("SELECT {} FROM clusters WHERE name = ?1", Self::COLUMNS);
        self.read(|c| c.query_row(&sql, [name], Self::row).optional())
    }

    async fn clusters(&self) -> Result<Vec<ClusterState>> {
        let sql = format!("SELECT {} FROM clusters ORDER BY name", Self::COLUMNS);
        self.read(|c| c.prepare(&sql)?.query_map([], Self::row)?.collect())
    }

    async fn states(&self) -> Result<Arc<States>> {
        Ok(self.states_marked().await?.0)
    }

    async fn states_marked(&self) -> Result<(Arc<States>, Option<u64>)> {
        self.read(|c| {
            let mut kept = self.kept.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(states) = kept.states.as_ref() {
                // Debug builds (the tests) hold what is kept to the database at every read.
                if cfg!(debug_assertions) {
                    let read = Self::read_states(c)?;
                    assert!(**states == read, "the states kept in memory differ from the database's");
                }
                return Ok((states.clone(), Some(kept.mark)));
            }
            let states = Arc::new(Self::read_states(c)?);
            kept.states = Some(states.clone());
            Ok((states, Some(kept.mark)))
        })
    }

    fn written_since(&self, mark: u64) -> Option<Vec<String>> {
        let kept = self.kept.lock().unwrap_or_else(|p| p.into_inner());
        if mark < kept.floor || mark > kept.mark {
            return None;
        }
        // The log is in mark order: those after `mark` are its tail.
        let after = kept.log.partition_point(|(m, _)| *m <= mark);
        let mut names: Vec<String> = kept.log.range(after..).map(|(_, name)| name.clone()).collect();
        names.sort_unstable();
        names.dedup();
        Some(names)
    }

    /// Records a successful apply: what is now running, and a history row, in one transaction.
    async fn record_applied(&self, name: &str, applied: &Applied<'_>) -> Result<()> {
        let now = now();
        self.write(|c| {
            let tx = c.transaction()?;
            tx.execute(
                "INSERT INTO clusters (name, profile_revision, cluster_revision, digest, profile, version, applied_at, sync, message, health, updated_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?7)
                 ON CONFLICT(name) DO UPDATE SET profile_revision = ?2, cluster_revision = ?3, digest = ?4, profile = ?5,
                   version = ?6, applied_at = ?7, sync = ?8, message = ?9, health = ?10, updated_at = ?7",
                params![
                    name,
                    applied.profile_revision,
                    applied.cluster_revision,
                    applied.digest,
                    applied.profile,
                    applied.version,
                    now,
                    applied.sync,
                    applied.summary,
                    applied.health
                ],
            )?;
            add_history(&tx, name, applied.cluster_revision, applied.sync, applied.summary, now)?;
            tx.commit()?;
            self.written(c, name);
            Ok(())
        })
    }

    /// Takes what a cluster runs from its inventory when the store knows nothing about it (a
    /// new state directory, or one recovered from corruption): the next evaluation then plans
    /// from there, so held updates stay held. Returns whether anything was recorded.
    async fn seed(&self, name: &str, revision: &str, digest: &str, profile: &str, version: &str) -> Result<bool> {
        self.write(|c| {
            let seeded = c.execute(
                "INSERT INTO clusters (name, profile_revision, cluster_revision, digest, profile, version, sync, message, updated_at)
                 VALUES (?1, ?2, ?2, ?3, ?4, ?5, 'applied', 'taken from the cluster''s inventory', ?6)
                 ON CONFLICT(name) DO UPDATE SET profile_revision = ?2, cluster_revision = ?2, digest = ?3,
                   profile = ?4, version = ?5, updated_at = ?6
                 WHERE digest IS NULL",
                params![name, revision, digest, profile, version, now()],
            )?;
            self.written(c, name);
            Ok(seeded > 0)
        })
    }

    /// Records a state change that is not an apply (applying, failed, removed…).
    async fn set_sync(&self, name: &str, sync: Sync, message: Option<&str>, revision: Option<&str>) -> Result<()> {
        let now = now();
        self.write(|c| {
            let tx = c.transaction()?;
            // After a failed apply nobody knows how the workloads are doing: never `ready`.
            tx.execute(
                "INSERT INTO clusters (name, sync, message, updated_at) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT(name) DO UPDATE SET sync = ?2, message = ?3, updated_at = ?4,
                   health = CASE WHEN ?2 = 'failed' THEN NULL ELSE health END",
                params![name, sync, message, now],
            )?;
            if matches!(sync, Sync::Failed | Sync::Removed | Sync::Error) {
                add_history(&tx, name, revision, sync, message.unwrap_or(""), now)?;
            }
            tx.commit()?;
            self.written(c, name);
            Ok(())
        })
    }

    async fn set_suspended(&self, name: &str, suspended: bool) -> Result<()> {
        self.write(|c| {
            c.execute(
                "INSERT INTO clusters (name, suspended, updated_at) VALUES (?1, ?2, ?3)
                 ON CONFLICT(name) DO UPDATE SET suspended = ?2, updated_at = ?3",
                params![name, suspended as i64, now()],
            )?;
            self.written(c, name);
            Ok(())
        })
    }

    /// Replaces the list of objects applied to `cluster` (object, layer, what the last apply did).
    async fn set_objects(&self, cluster: &str, objects: &[ObjectRow]) -> Result<()> {
        self.write(|c| {
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

    async fn objects(&self, cluster: &str) -> Result<Vec<ObjectRow>> {
        self.read(|c| {
            c.prepare("SELECT object, layer, action FROM objects WHERE cluster = ?1 ORDER BY rowid")?
                .query_map([cluster], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
                .collect()
        })
    }

    /// Every cluster with its pending update, in one query (the fleet page and `strata status`
    /// list a thousand of them).
    async fn fleet(&self) -> Result<Vec<FleetRow>> {
        let sql = format!("{} ORDER BY c.name", Self::fleet_query()).replace("p.diff", "'' AS diff");
        self.read(|c| c.prepare(&sql)?.query_map([], Self::fleet_row)?.collect())
    }

    async fn cluster_row(&self, name: &str) -> Result<Option<FleetRow>> {
        let sql = format!("{} WHERE c.name = ?1", Self::fleet_query());
        self.read(|c| c.query_row(&sql, [name], Self::fleet_row).optional())
    }

    async fn pending(&self, cluster: &str) -> Result<Option<Pending>> {
        let sql = format!("SELECT {} FROM pending WHERE cluster = ?1", Self::PENDING);
        self.read(|c| c.query_row(&sql, [cluster], |r| Self::pending_row(r, 0)).optional())
    }

    /// Sets or replaces the cluster's pending update (`since` is kept while the head is the same).
    async fn set_pending(&self, p: &Pending) -> Result<()> {
        let hold = serde_json::to_string(&p.hold).expect("holds serialise");
        self.write(|c| {
            c.execute(
                "INSERT INTO pending (cluster, base_revision, head_revision, hold, summary, diff, since, base_digest) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)
                 ON CONFLICT(cluster) DO UPDATE SET base_revision = ?2, hold = ?4, summary = ?5, diff = ?6,
                   since = CASE WHEN head_revision = ?3 THEN since ELSE ?7 END, head_revision = ?3, base_digest = ?8",
                params![p.cluster, p.base_revision, p.head_revision, hold, p.summary, p.diff, p.since, p.base_digest],
            )
            .map(|_| ())
        })
    }

    async fn clear_pending(&self, cluster: &str) -> Result<()> {
        self.write(|c| c.execute("DELETE FROM pending WHERE cluster = ?1", [cluster]).map(|_| ()))
    }

    async fn pending_count(&self) -> Result<i64> {
        self.read(|c| c.query_row("SELECT COUNT(*) FROM pending", [], |r| r.get(0)))
    }

    async fn pendings(&self) -> Result<Vec<Pending>> {
        let sql = format!("SELECT {} FROM pending ORDER BY cluster", Self::PENDING).replace("diff", "'' AS diff");
        self.read(|c| c.prepare(&sql)?.query_map([], |r| Self::pending_row(r, 0))?.collect())
    }

    async fn approve(&self, cluster: &str, revision: &str, by: &Approver) -> Result<Approval> {
        let approval = by.approval(cluster, revision);
        let groups = serde_json::to_string(&approval.groups).expect("groups serialise");
        self.write(|c| {
            c.execute(
                "INSERT INTO approvals (cluster, revision, approved_by, approved_at, identity, groups) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                params![approval.cluster, approval.revision, approval.approved_by, approval.approved_at, approval.identity, groups],
            )
            .map(|_| ())
        })?;
        Ok(approval)
    }

    /// The approval of `revision` for `cluster`, if there is one.
    async fn approval(&self, cluster: &str, revision: &str) -> Result<Option<Approval>> {
        self.read(|c| {
            c.query_row(
                "SELECT cluster, revision, approved_by, approved_at, identity, groups FROM approvals WHERE cluster = ?1 AND revision = ?2 ORDER BY id DESC LIMIT 1",
                [cluster, revision],
                Self::approval_row,
            )
            .optional()
        })
    }

    async fn approvals(&self, cluster: &str) -> Result<Vec<Approval>> {
        self.read(|c| {
            c.prepare(
                "SELECT cluster, revision, approved_by, approved_at, identity, groups FROM approvals WHERE cluster = ?1 ORDER BY id",
            )?
            .query_map([cluster], Self::approval_row)?
            .collect()
        })
    }

    /// Replaces the cluster's drift findings with these.
    async fn set_drift(&self, cluster: &str, findings: &[DriftRow]) -> Result<()> {
        self.write(|c| {
            let tx = c.transaction()?;
            tx.execute("DELETE FROM drift WHERE cluster = ?1", [cluster])?;
            for f in findings {
                tx.execute(
                    "INSERT INTO drift (cluster, object, path, live, desired, found_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                    params![cluster, f.object, f.path, f.live, f.desired, f.found_at],
                )?;
            }
            tx.execute("UPDATE clusters SET drifted = ?2 WHERE name = ?1", params![cluster, findings.len() as i64])?;
            tx.commit()?;
            self.written(c, cluster);
            Ok(())
        })
    }

    async fn drift(&self, cluster: &str) -> Result<Vec<DriftRow>> {
        self.read(|c| {
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
    async fn enqueue(&self, status: &crate::report::Status) -> Result<bool> {
        let now = now();
        self.write(|c| {
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
    async fn due(&self, now_ms: i64, limit: usize) -> Result<Vec<Queued>> {
        self.read(|c| {
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
    async fn next_due(&self) -> Result<Option<i64>> {
        self.read(|c| c.query_row("SELECT MIN(next_attempt_ms) FROM outbox", [], |r| r.get(0)))
    }

    async fn outbox_len(&self) -> Result<i64> {
        self.read(|c| c.query_row("SELECT COUNT(*) FROM outbox", [], |r| r.get(0)))
    }

    /// Records a delivery; the queued entry goes unless it changed while being delivered.
    async fn delivered(&self, status: &crate::report::Status) -> Result<()> {
        self.write(|c| {
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
    async fn retry(&self, status: &crate::report::Status, next_ms: i64, error: &str) -> Result<()> {
        self.write(|c| {
            c.execute(
                "UPDATE outbox SET attempts = attempts + 1, next_attempt_ms = ?3, last_error = ?4 WHERE revision = ?1 AND context = ?2",
                params![status.revision, status.context, next_ms, error],
            )
            .map(|_| ())
        })
    }

    /// Where every rollout stands (each with the generation it was stored at).
    async fn rollouts(&self) -> Result<Vec<Progress>> {
        self.read(|c| {
            c.prepare("SELECT generation, progress FROM rollouts ORDER BY name")?.query_map([], progress_row)?.collect()
        })
    }

    async fn rollout(&self, name: &str) -> Result<Option<Progress>> {
        self.read(|c| {
            c.query_row("SELECT generation, progress FROM rollouts WHERE name = ?1", [name], progress_row).optional()
        })
    }

    /// Stores a rollout's progress if nobody stored it since it was read: `progress.generation`
    /// must be the stored one (0 for a rollout not stored yet). Returns false, storing nothing,
    /// when it is not — read again and decide again. The generation goes up by one.
    async fn save_rollout(&self, progress: &Progress) -> Result<bool> {
        let text = serde_json::to_string(progress).expect("progress serialises");
        let expected = progress.generation as i64;
        self.write(|c| {
            let changed = if expected == 0 {
                c.execute(
                    "INSERT INTO rollouts (name, generation, progress) VALUES (?1, 1, ?2) ON CONFLICT(name) DO NOTHING",
                    params![progress.rollout, text],
                )?
            } else {
                c.execute(
                    "UPDATE rollouts SET generation = generation + 1, progress = ?2 WHERE name = ?1 AND generation = ?3",
                    params![progress.rollout, text, expected],
                )?
            };
            Ok(changed == 1)
        })
    }

    /// Forgets a rollout (its policy left the repository).
    async fn delete_rollout(&self, name: &str) -> Result<()> {
        self.write(|c| c.execute("DELETE FROM rollouts WHERE name = ?1", [name]).map(|_| ()))
    }

    /// The newest `limit` history rows of `cluster` (at most [`HISTORY_KEPT`] are kept).
    async fn history(&self, cluster: &str, limit: usize) -> Result<Vec<HistoryRow>> {
        self.read(|c| {
            c.prepare("SELECT revision, result, summary, at, count, COALESCE(first_at, at) FROM history WHERE cluster = ?1 ORDER BY id DESC LIMIT ?2")?
                .query_map(params![cluster, limit as i64], |r| {
                    Ok(HistoryRow {
                        revision: r.get(0)?,
                        result: r.get(1)?,
                        summary: r.get(2)?,
                        at: r.get(3)?,
                        count: r.get(4)?,
                        since: r.get(5)?,
                    })
                })?
                .collect()
        })
    }

    async fn audit(&self, e: &AuditEntry) -> Result<()> {
        self.write(|c| {
            c.execute(
                "INSERT INTO audit (at, action, outcome, who, cluster, rollout, revision, detail, remote, via)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
                params![
                    e.at,
                    e.action,
                    e.outcome.as_str(),
                    e.who,
                    e.cluster,
                    e.rollout,
                    e.revision,
                    e.detail,
                    e.from,
                    e.via.as_str()
                ],
            )
            .map(|_| ())
        })
    }

    async fn audit_log(&self, q: &AuditQuery) -> Result<Vec<AuditEntry>> {
        let limit = q.limit.clamp(1, AuditQuery::MOST) as i64;
        self.read(|c| {
            c.prepare(
                "SELECT at, action, outcome, who, cluster, rollout, revision, detail, remote, via FROM audit
                 WHERE at >= ?1 AND (?2 IS NULL OR cluster = ?2)
                   AND (?3 IS NULL OR who = ?3 OR substr(who, 1, length(?3) + 2) = ?3 || ' (')
                 ORDER BY id DESC LIMIT ?4",
            )?
            .query_map(params![q.since.unwrap_or(i64::MIN), q.cluster, q.user, limit], |r| {
                let outcome: String = r.get(2)?;
                let via: String = r.get(9)?;
                Ok(AuditEntry {
                    at: r.get(0)?,
                    action: r.get(1)?,
                    outcome: AuditOutcome::parse(&outcome).unwrap_or(AuditOutcome::Refused),
                    who: r.get(3)?,
                    cluster: r.get(4)?,
                    rollout: r.get(5)?,
                    revision: r.get(6)?,
                    detail: r.get(7)?,
                    from: r.get(8)?,
                    via: AuditVia::parse(&via).unwrap_or(AuditVia::Api),
                })
            })?
            .collect()
        })
    }

    async fn prune_audit(&self, before_ms: i64, max: u64) -> Result<usize> {
        self.write_blocking(move |c| {
            let old = c.execute("DELETE FROM audit WHERE at < ?1", [before_ms])?;
            let over = c.execute(
                "DELETE FROM audit WHERE id <= (SELECT id FROM audit ORDER BY id DESC LIMIT 1 OFFSET ?1)",
                [max.min(i64::MAX as u64) as i64],
            )?;
            Ok(old + over)
        })
        .await
    }

    /// Forgets delivered statuses older than [`DELIVERED_KEPT_SECS`], except those for a
    /// revision some cluster runs or holds (a drift report may still be posted on it). Returns
    /// how many rows went.
    async fn prune_delivered(&self, now: i64) -> Result<usize> {
        self.write_blocking(move |c| {
            c.execute(
                "DELETE FROM delivered WHERE at < ?1
                   AND revision NOT IN (SELECT cluster_revision FROM clusters WHERE cluster_revision IS NOT NULL)
                   AND revision NOT IN (SELECT head_revision FROM pending)",
                [now - DELIVERED_KEPT_SECS],
            )
        })
        .await
    }
}

/// Adds a history row and drops the cluster's rows beyond the newest [`HISTORY_KEPT`].
fn add_history(
    tx: &rusqlite::Transaction,
    cluster: &str,
    revision: Option<&str>,
    result: Sync,
    summary: &str,
    at: i64,
) -> rusqlite::Result<()> {
    let newest: Option<(i64, Option<String>, Sync)> = tx
        .query_row(
            "SELECT id, revision, result FROM history WHERE cluster = ?1 ORDER BY id DESC LIMIT 1",
            [cluster],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )
        .optional()?;
    if let Some((id, _, _)) =
        newest.as_ref().filter(|(_, rev, res)| super::repeats(Some((rev.as_deref(), *res)), revision, result))
    {
        tx.execute(
            "UPDATE history SET summary = ?2, first_at = COALESCE(first_at, at), at = ?3, count = count + 1 WHERE id = ?1",
            params![id, summary, at],
        )?;
        return Ok(());
    }
    tx.execute(
        "INSERT INTO history (cluster, revision, result, summary, at) VALUES (?1, ?2, ?3, ?4, ?5)",
        params![cluster, revision, result, summary, at],
    )?;
    tx.execute(
        "DELETE FROM history WHERE cluster = ?1 AND id <= (
           SELECT id FROM history WHERE cluster = ?1 ORDER BY id DESC LIMIT 1 OFFSET ?2)",
        params![cluster, HISTORY_KEPT as i64],
    )?;
    Ok(())
}

/// Held by the process that owns the state directory (the daemon, or `strata recover-state`):
/// two daemons on one state directory would undo each other's decisions.
pub const LOCK_FILE: &str = "strata.lock";

/// Why the state directory cannot be taken.
#[derive(Debug, thiserror::Error)]
pub enum LockError {
    #[error("another strata process holds {} (one daemon per state_dir; stop it first)", path.display())]
    Held { path: PathBuf },
    #[error("cannot lock {}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// Takes the state directory for this process until the returned file is dropped.
pub fn lock(dir: &Path) -> std::result::Result<std::fs::File, LockError> {
    let path = dir.join(LOCK_FILE);
    let io = |source| LockError::Io { path: path.clone(), source };
    std::fs::create_dir_all(dir).map_err(io)?;
    let file = std::fs::OpenOptions::new().create(true).truncate(false).write(true).open(&path).map_err(io)?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(std::fs::TryLockError::WouldBlock) => Err(LockError::Held { path }),
        Err(std::fs::TryLockError::Error(e)) => Err(io(e)),
    }
}

/// What [`recover`] did.
#[derive(Debug)]
pub struct Recovery {
    /// Where the damaged file went; `None` when it passed its check and was left alone.
    pub moved_to: Option<PathBuf>,
    /// Per table: rows copied, and whether it was read to its end.
    pub salvaged: Vec<(&'static str, usize, bool)>,
}

/// The tables worth salvaging, with their columns: what neither Git nor the clusters can tell
/// again (suspensions, approvals, where rollouts stand, undelivered statuses, which pull requests
/// were planned) and what each cluster last had applied. The rest is derived again or only shown
/// (drift findings, history, pending updates, objects, delivered statuses).
const SALVAGED: [(&str, &str); 6] = [
    (
        "clusters",
        "name, profile_revision, cluster_revision, digest, profile, version, applied_at, sync, message, health, drifted, suspended, updated_at",
    ),
    ("approvals", "cluster, revision, approved_by, approved_at, identity, groups"),
    ("meta", "key, value"),
    ("rollouts", "name, generation, progress"),
    ("outbox", "revision, context, state, description, target_url, created_at, attempts, next_attempt_ms, last_error"),
    ("audit", "id, at, action, outcome, who, cluster, rollout, revision, detail, remote, via"),
];

/// Replaces a corrupt state database with a fresh one holding what can still be read of it. The
/// damaged file is kept next to it as `strata.db.corrupt-<unix seconds>`. The caller holds the
/// [`lock`]. A database that passes its check is left as it is.
pub fn recover(dir: &Path) -> Result<Recovery> {
    let path = dir.join(FILE);
    match connect(&path) {
        Ok(_) => return Ok(Recovery { moved_to: None, salvaged: Vec::new() }),
        Err(StoreError::Corrupt { .. }) => {}
        Err(e) => return Err(e),
    }
    let moved = dir.join(format!("{FILE}.corrupt-{}", now()));
    for suffix in ["", "-wal", "-shm"] {
        let from = PathBuf::from(format!("{}{suffix}", path.display()));
        let to = PathBuf::from(format!("{}{suffix}", moved.display()));
        match std::fs::rename(&from, &to) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(source) => return Err(StoreError::Directory { dir: dir.to_path_buf(), source }),
        }
    }
    let mut fresh = connect(&path)?;
    let mut salvaged = Vec::new();
    let old = Connection::open_with_flags(&moved, OpenFlags::SQLITE_OPEN_READ_ONLY);
    for (table, columns) in SALVAGED {
        let (copied, complete) = match &old {
            Ok(old) => copy_rows(old, &mut fresh, table, columns).map_err(|e| StoreError::sqlite(&path, e))?,
            Err(_) => (0, false),
        };
        salvaged.push((table, copied, complete));
    }
    Ok(Recovery { moved_to: Some(moved), salvaged })
}

/// Copies rows of `table` until the end or the first unreadable page; returns (rows, complete).
fn copy_rows(from: &Connection, to: &mut Connection, table: &str, columns: &str) -> rusqlite::Result<(usize, bool)> {
    let width = columns.split(", ").count();
    let placeholders = vec!["?"; width].join(", ");
    let tx = to.transaction()?;
    let mut copied = 0;
    let complete = {
        let mut insert = tx.prepare(&format!("INSERT OR IGNORE INTO {table} ({columns}) VALUES ({placeholders})"))?;
        let Ok(mut select) = from.prepare(&format!("SELECT {columns} FROM {table}")) else { return Ok((0, false)) };
        let Ok(mut rows) = select.query([]) else { return Ok((0, false)) };
        loop {
            match rows.next() {
                Ok(Some(row)) => {
                    let values: Vec<rusqlite::types::Value> =
                        (0..width).map(|i| row.get(i)).collect::<rusqlite::Result<_>>().unwrap_or_default();
                    if values.len() == width {
                        copied += insert.execute(rusqlite::params_from_iter(values))?;
                    }
                }
                Ok(None) => break true,
                Err(_) => break false,
            }
        }
    };
    tx.commit()?;
    Ok((copied, complete))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::daemon::state::Health;

    fn applied(revision: &str) -> Applied<'_> {
        Applied {
            profile_revision: Some(revision),
            cluster_revision: Some(revision),
            digest: "sha256:a",
            profile: "aws-profile",
            version: "1.0.0",
            sync: Sync::Applied,
            health: Health::Ready,
            summary: "3 created",
        }
    }

    /// The account of writes goes back [`WRITES_KEPT`] writes; an older mark, or one from before
    /// the states were forgotten, is answered with "not known", never with too few names.
    #[test]
    fn the_account_of_writes_forgets_whole() {
        let mut kept = Kept::default();
        let start = kept.mark;
        kept.wrote("a");
        let after_a = kept.mark;
        for _ in 0..WRITES_KEPT - 1 {
            kept.wrote("b");
        }
        assert_eq!(kept.floor, 0, "every write since the start is still accounted for");
        kept.wrote("c");
        assert!(kept.floor > start && kept.floor == after_a, "the first write was forgotten");
        assert_eq!(kept.log.len(), WRITES_KEPT);
        let mark = kept.mark;
        kept.wrote("d");
        kept.forget();
        assert_eq!(kept.floor, kept.mark);
        assert!(mark < kept.floor, "a mark from before forgetting is not known");
    }

    /// The states kept in memory for evaluations follow every kind of write to a cluster's row,
    /// whether the map is shared with a reader at the time or not.
    #[tokio::test]
    async fn the_states_kept_in_memory_are_what_the_database_holds_after_every_write() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(dir.path()).unwrap();
        let database = |store: &SqliteStore| {
            let conn = store.db.as_ref().unwrap().lock().unwrap();
            SqliteStore::read_states(&conn).unwrap()
        };
        assert!(store.states().await.unwrap().is_empty());
        store.record_applied("aws", &applied("r1")).await.unwrap();
        let held = store.states().await.unwrap();
        store.set_sync("aws", Sync::Applying, None, Some("r2")).await.unwrap();
        store.set_suspended("edge", true).await.unwrap();
        assert!(store.seed("lab", "r1", "sha256:b", "edge-profile", "2.0.0").await.unwrap());
        let finding = DriftRow {
            object: "ConfigMap/default/c".into(),
            path: "/data/x".into(),
            live: None,
            desired: None,
            found_at: 1,
        };
        store.set_drift("aws", &[finding]).await.unwrap();
        store.set_sync("lab", Sync::Failed, Some("boom"), Some("r1")).await.unwrap();
        let now = store.states().await.unwrap();
        assert_eq!(*now, database(&store));
        assert_eq!((now["aws"].sync, now["aws"].drifted, now["edge"].suspended), (Sync::Applying, 1, true));
        // What a reader held is the map as it was when read.
        assert_eq!(held.len(), 1);
        assert_eq!(held["aws"].sync, Sync::Applied);
        // A write that fails changes neither.
        drop(store.db.as_ref().unwrap().lock().unwrap().execute_batch("DROP TABLE history"));
        assert!(store.record_applied("aws", &applied("r3")).await.is_err());
        assert_eq!(*store.states().await.unwrap(), database(&store));
    }

    #[tokio::test]
    async fn the_audit_trail_is_append_only() {
        use crate::daemon::audit::{Entry, Outcome, Via};
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(dir.path()).unwrap();
        store.audit(&Entry::new("approve", Outcome::Done, "alice", Via::Cli, None).cluster("c")).await.unwrap();
        let changed = store.write(|c| c.execute("UPDATE audit SET who = 'mallory'", []));
        assert!(changed.unwrap_err().to_string().contains("the audit trail is append-only"));
        let kept = store.audit_log(&AuditQuery { limit: 10, ..AuditQuery::default() }).await.unwrap();
        assert_eq!(kept[0].who, "alice");
    }

    #[tokio::test]
    async fn databases_from_before_redaction_lose_their_drift_findings_and_pending_diffs_once() {
        let dir = tempfile::tempdir().unwrap();
        {
            // A state database as versions without redaction left it: user_version 0.
            let store = SqliteStore::open(dir.path()).unwrap();
            store
                .write(|c| {
                    c.pragma_update(None, "user_version", 0)?;
                    c.execute_batch(
                        "ALTER TABLE pending DROP COLUMN base_digest;
                         ALTER TABLE history DROP COLUMN count; ALTER TABLE history DROP COLUMN first_at;
                         ALTER TABLE approvals DROP COLUMN identity; ALTER TABLE approvals DROP COLUMN groups;
                         DROP TABLE audit;",
                    )
                })
                .unwrap();
            store.record_applied("c", &applied("r1")).await.unwrap();
            let row = DriftRow {
                object: "Secret/app/db".into(),
                path: "/data/password".into(),
                live: Some("\"aHVudGVyMg==\"".into()),
                desired: Some("\"c2VjcmV0\"".into()),
                found_at: 1,
            };
            store.set_drift("c", &[row]).await.unwrap();
            store
                .write(|c| {
                    c.execute(
                        "INSERT INTO pending (cluster, base_revision, head_revision, hold, summary, diff, since) VALUES ('c', 'r1', 'r2', ?1, 'pending', '-  password: aHVudGVyMg==', 1)",
                        [serde_json::to_string(&Hold::Approval).unwrap()],
                    )
                })
                .unwrap();
            store
                .write(|c| {
                    c.execute(
                        "INSERT INTO approvals (cluster, revision, approved_by, approved_at) VALUES ('c', 'r2', 'api (alice)', 1)",
                        [],
                    )
                })
                .unwrap();
        }
        let store = SqliteStore::open(dir.path()).unwrap();
        assert_eq!(store.drift("c").await.unwrap(), vec![]);
        assert_eq!(store.pending("c").await.unwrap(), None);
        let c = store.cluster("c").await.unwrap().unwrap();
        assert_eq!((c.drifted, c.digest.as_deref()), (0, Some("sha256:a")), "what is applied is kept");
        let approvals = store.approvals("c").await.unwrap();
        assert_eq!(approvals.len(), 1);
        assert_eq!(approvals[0].identity, "api", "an approval from before identities: the name before ` (`");
        let version = store.read(|c| c.query_row("PRAGMA user_version", [], |r| r.get::<_, i64>(0))).unwrap();
        assert_eq!(version, MIGRATIONS.len() as i64);

        // Migrated once: what is stored from now on stays.
        store
            .set_drift(
                "c",
                &[DriftRow { object: "o".into(), path: "/p".into(), live: None, desired: None, found_at: 2 }],
            )
            .await
            .unwrap();
        drop(store);
        assert_eq!(SqliteStore::open(dir.path()).unwrap().drift("c").await.unwrap().len(), 1);
    }

    #[tokio::test]
    async fn failures_are_kept_for_readiness_until_a_write_succeeds() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(dir.path()).unwrap();
        assert_eq!(store.problem(), None);
        let holder = Connection::open(dir.path().join(FILE)).unwrap();
        holder.execute_batch("BEGIN EXCLUSIVE").unwrap();
        let e = store.set_suspended("aws", true).await.unwrap_err();
        assert_eq!(e.kind(), "busy");
        let problem = store.problem().unwrap();
        assert!(problem.contains("strata.db") && problem.contains("another process holds it"), "{problem}");
        assert_eq!(store.error_counter().get_or_create(&KindLabel { kind: "busy".into() }).get(), 1);
        holder.execute_batch("COMMIT").unwrap();
        store.cluster("aws").await.unwrap();
        assert!(store.problem().is_some(), "a read proves nothing about writes");
        store.probe().await.unwrap();
        assert_eq!(store.problem(), None);
    }

    /// A state database with a few clusters and approvals, and enough drift rows after them
    /// that its last pages hold nothing else.
    async fn filled(dir: &Path) {
        let store = SqliteStore::open(dir).unwrap();
        for name in ["aws", "edge", "lab"] {
            store.record_applied(name, &applied("r1")).await.unwrap();
        }
        store.set_suspended("edge", true).await.unwrap();
        store.approve("aws", "r2", &Approver::named("alice")).await.unwrap();
        let rows: Vec<DriftRow> = (0..5000)
            .map(|i| DriftRow {
                object: format!("ConfigMap/default/c{i}"),
                path: "/data/x".into(),
                live: Some("\"a\"".into()),
                desired: Some("\"b\"".into()),
                found_at: 1,
            })
            .collect();
        store.set_drift("lab", &rows).await.unwrap();
        let conn = store.db.as_ref().unwrap().lock().unwrap();
        conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(())).unwrap();
    }

    #[tokio::test]
    async fn a_corrupt_file_is_refused_and_recovered_with_what_can_be_read() {
        let dir = tempfile::tempdir().unwrap();
        filled(dir.path()).await;
        let path = dir.path().join(FILE);
        let mut bytes = std::fs::read(&path).unwrap();
        let len = bytes.len();
        for b in &mut bytes[len - 8 * 4096..] {
            *b = 0x5a;
        }
        std::fs::write(&path, bytes).unwrap();
        let Err(e) = SqliteStore::open(dir.path()) else { panic!("a corrupt file opened") };
        assert_eq!(e.kind(), "corrupt");
        assert!(e.to_string().contains("strata recover-state"), "{e}");
        let unusable = SqliteStore::unusable(dir.path(), &e);
        assert!(!unusable.usable() && unusable.clusters().await.is_err() && unusable.problem().is_some());

        let recovery = recover(dir.path()).unwrap();
        let moved = recovery.moved_to.expect("moved aside");
        assert!(moved.exists() && moved.to_string_lossy().contains("strata.db.corrupt-"));
        assert!(recovery.salvaged.contains(&("clusters", 3, true)), "{:?}", recovery.salvaged);
        assert!(recovery.salvaged.contains(&("approvals", 1, true)), "{:?}", recovery.salvaged);
        let store = SqliteStore::open(dir.path()).unwrap();
        assert!(store.cluster("edge").await.unwrap().unwrap().suspended);
        assert_eq!(store.approval("aws", "r2").await.unwrap().unwrap().approved_by, "alice");
        assert!(store.drift("lab").await.unwrap().is_empty(), "found again at the next check");
        assert!(recover(dir.path()).unwrap().moved_to.is_none(), "a sound file is left alone");
    }

    #[tokio::test]
    async fn a_file_that_is_no_database_is_recovered_empty() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(FILE), vec![0xffu8; 3 * 4096]).unwrap();
        assert_eq!(SqliteStore::open(dir.path()).err().map(|e| e.kind()), Some("corrupt"));
        let recovery = recover(dir.path()).unwrap();
        assert!(recovery.salvaged.iter().all(|(_, rows, complete)| *rows == 0 && !complete), "{:?}", recovery.salvaged);
        assert!(SqliteStore::open(dir.path()).unwrap().clusters().await.unwrap().is_empty());
    }

    #[test]
    fn one_process_owns_a_state_directory() {
        let dir = tempfile::tempdir().unwrap();
        let held = lock(dir.path()).unwrap();
        assert!(matches!(lock(dir.path()), Err(LockError::Held { .. })));
        drop(held);
        lock(dir.path()).unwrap();
    }
}
