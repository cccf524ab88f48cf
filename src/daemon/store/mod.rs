//! The daemon's state: one interface, two backends.
//!
//! ```text
//!   workers, outbox, API ──> AnyStore (async) ──┬── SqliteStore  state_dir/strata.db (one host, the default)
//!   evaluation (blocking thread) ──> store::wait ┘└── KubeStore    ClusterState objects + the strata-state
//!                                                                  ConfigMap in the management cluster
//!                                                                  (replicas share it; resourceVersion guards writes)
//!   every failure: a StoreError (logged by the caller), remembered for /readyz, counted by kind
//! ```
//!
//! What it keeps is what Git and the clusters cannot tell again: which revision each cluster last
//! had applied (and so what a pending update is relative to), approvals with who and when,
//! suspensions, where each rollout stands, drift findings, a bounded history of applies and the
//! commit statuses still to be delivered. Both backends pass the same suite (`tests/it/store.rs`).
//!
//! Calls are async: the daemon runs its event loop, workers and web server on one thread, and a
//! call that waits for the management cluster must not stall them ([`Store`]).
//!
//! Adding a method: declare it on [`Store`], write it in [`sqlite`] (SQL in one transaction; a
//! migration when it needs a table or column) and in [`kube`] (read from the cache with
//! `KubeStore::held` — what a brief keeps, for reads of every cluster — `doc`, the whole object,
//! or `global`; write with `update_status`, `update_spec` or `update_global`, which retry on
//! conflicts), dispatch it in [`AnyStore`], give any new ClusterState field its place in the
//! CRD's schema (`deploy/kubernetes/crd.yaml`) and, if lists of the fleet read it, in the brief,
//! and add a case to `tests/it/store.rs`, which runs it on both (Kubernetes whole and briefs).

pub mod kube;
pub mod sqlite;

use std::future::Future;
use std::path::PathBuf;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use rusqlite::ErrorCode;
use serde::Serialize;

use super::decide::Hold;
use super::metrics::KindLabel;
use super::state::{Health, RevisionState, Sync, Verdict};

pub use super::audit::{Entry as AuditEntry, Outcome as AuditOutcome, Query as AuditQuery, Via as AuditVia};
pub use sqlite::{FILE, LOCK_FILE, LockError, Recovery, SqliteStore, lock, recover};

/// Every cluster's state, by name.
pub type States = std::collections::BTreeMap<String, ClusterState>;

/// What a cluster last had applied, and how it is doing.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
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
    pub sync: Sync,
    pub message: Option<String>,
    /// Unknown (never applied, or the last apply failed) is `unknown` in JSON as everywhere.
    #[serde(serialize_with = "health_or_unknown")]
    pub health: Option<Health>,
    pub drifted: i64,
    pub suspended: bool,
}

fn health_or_unknown<S: serde::Serializer>(health: &Option<Health>, s: S) -> std::result::Result<S::Ok, S::Error> {
    health.unwrap_or(Health::Unknown).serialize(s)
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Pending {
    pub cluster: String,
    pub base_revision: String,
    pub head_revision: String,
    pub hold: Hold,
    pub summary: String,
    pub diff: String,
    pub since: i64,
    /// The digest of the set `diff` starts from: the set the cluster was to run when the update
    /// was held. The diff is shown only while the cluster runs exactly that ([`Pending::diff_from`]).
    pub base_digest: Option<String>,
}

/// Said where a pending diff is not shown because it no longer starts from what the cluster runs.
pub const STALE_DIFF: &str = "the cluster applied something since this update was held: its diff is computed again from what it runs at the next evaluation";

/// How a pending update's summary begins, before the `profile@version` it brings.
pub const PENDING_PREFIX: &str = "pending update ";

impl Pending {
    /// The `profile@version` the update brings, as its summary names it.
    pub fn target(&self) -> Option<&str> {
        let rest = self.summary.strip_prefix(PENDING_PREFIX)?;
        let what = rest.split(" — ").next()?.trim();
        what.contains('@').then_some(what)
    }

    /// As clients see it (the API, `strata status`): the diff only while it starts from what the
    /// cluster in `state` runs; otherwise `diff` is null and `diff_stale` says why.
    pub fn shown(&self, state: &ClusterState) -> serde_json::Value {
        let mut value = serde_json::json!(self);
        if self.diff_from(state).is_none() {
            value["diff"] = serde_json::Value::Null;
            value["diff_stale"] = serde_json::Value::String(STALE_DIFF.to_string());
        }
        value
    }

    /// The diff to show for a cluster in `state` (read with this record): only when it starts
    /// from what the cluster runs now. Otherwise (the cluster applied something since, say an
    /// override that went ahead of the held edit) `None`, until the next evaluation computes it
    /// again from what runs.
    pub fn diff_from<'p>(&'p self, state: &ClusterState) -> Option<&'p str> {
        (self.base_digest.is_some() && self.base_digest == state.digest).then_some(self.diff.as_str())
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Approval {
    pub cluster: String,
    pub revision: String,
    /// As the identity is recorded: `ci`, `alice`, `api (alice)`.
    pub approved_by: String,
    pub approved_at: i64,
    /// The identity approval rules count (`api` for `api (alice)`), and its groups then.
    pub identity: String,
    pub groups: Vec<String>,
}

/// Who approves, as an approval records it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Approver {
    /// `ci`, `alice`, `api (alice)`.
    pub recorded: String,
    /// The identity approval rules count: the token's or the provider's name.
    pub identity: String,
    pub groups: Vec<String>,
}

impl Approver {
    /// An identity of that name and no groups.
    pub fn named(name: &str) -> Approver {
        Approver { recorded: name.to_string(), identity: name.to_string(), groups: Vec::new() }
    }

    fn approval(&self, cluster: &str, revision: &str) -> Approval {
        Approval {
            cluster: cluster.to_string(),
            revision: revision.to_string(),
            approved_by: self.recorded.clone(),
            approved_at: now(),
            identity: self.identity.clone(),
            groups: self.groups.clone(),
        }
    }
}

/// The identity of an approval recorded before identities were: the name before ` (`.
fn identity_of(recorded: &str) -> String {
    recorded.split(" (").next().unwrap_or(recorded).to_string()
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
    pub result: Sync,
    /// The latest of the events this entry stands for.
    pub summary: String,
    /// When the latest happened (Unix seconds).
    pub at: i64,
    /// How many times in a row it happened: retries of one revision that end the same way are
    /// one entry, so they never push real events out of the bounded history.
    pub count: u32,
    /// When the first of them happened.
    pub since: i64,
}

/// Whether an event continues a cluster's newest history entry (the same revision ending the
/// same way: a retry) rather than being an event of its own.
pub fn repeats(newest: Option<(Option<&str>, Sync)>, revision: Option<&str>, result: Sync) -> bool {
    newest == Some((revision, result))
}

/// A successful apply, as [`Store::record_applied`] keeps it.
pub struct Applied<'a> {
    pub profile_revision: Option<&'a str>,
    pub cluster_revision: Option<&'a str>,
    pub digest: &'a str,
    pub profile: &'a str,
    pub version: &'a str,
    /// `Applied`, or `Unhealthy` when some workloads did not become ready in time.
    pub sync: Sync,
    pub health: Health,
    pub summary: &'a str,
}

/// A cluster and its pending update, for the fleet page and the API's listing.
pub type FleetRow = (ClusterState, Option<Pending>);

/// A status waiting in the outbox.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Queued {
    pub status: crate::report::Status,
    pub attempts: u32,
}

/// One applied object as the view lists it: (object, layer, what the last apply did).
pub type ObjectRow = (String, String, String);

/// History rows kept per cluster: what the status view and the API show (the newest 50).
pub const HISTORY_KEPT: usize = 50;

/// Delivered statuses are remembered this long, so one the forge already shows is not written
/// again; statuses for the revisions clusters run or hold are kept whatever their age.
pub const DELIVERED_KEPT_SECS: i64 = 30 * 86_400;

/// Why the state could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cannot create the state directory {}: {source}", dir.display())]
    Directory {
        dir: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "state database {} is corrupt ({detail}); strata reconciles nothing until it is recovered: stop strata, run `strata recover-state --config <strata.yaml>`, start it again (docs/book/src/daemon.md, \"Recovering the state database\")",
        path.display()
    )]
    Corrupt { path: PathBuf, detail: String },
    #[error("state database {}: {source}{}", path.display(), sqlite::hint(source))]
    Sqlite {
        path: PathBuf,
        #[source]
        source: rusqlite::Error,
    },
    /// The management cluster's API server refused a read or write of the shared state, or could
    /// not be reached. `object` names what was read or written (`ClusterState strata-system/aws`).
    #[error("state in the management cluster, {object}: {message}")]
    Kubernetes { object: String, kind: &'static str, message: String },
}

impl StoreError {
    /// A short label for metrics: corrupt, readonly, full, busy, io, other; for the Kubernetes
    /// backend also unreachable, forbidden, conflict, rejected and unsynced.
    pub fn kind(&self) -> &'static str {
        match self {
            StoreError::Directory { .. } => "io",
            StoreError::Corrupt { .. } => "corrupt",
            StoreError::Sqlite { source, .. } => match source.sqlite_error_code() {
                Some(ErrorCode::ReadOnly) => "readonly",
                Some(ErrorCode::DiskFull) => "full",
                Some(ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked) => "busy",
                Some(ErrorCode::SystemIoFailure | ErrorCode::CannotOpen | ErrorCode::PermissionDenied) => "io",
                _ => "other",
            },
            StoreError::Kubernetes { kind, .. } => kind,
        }
    }
}

pub type Result<T> = std::result::Result<T, StoreError>;

/// Called with what changed when someone else (another replica, an operator with kubectl)
/// changed what is intended — `cluster NAME` for an approval or a suspension — or where a
/// rollout stands (`rollout progress`: a wave's cluster finished on another replica, an
/// operator promoted): what this replica decides may follow from it.
pub type IntentListener = Box<dyn Fn(&str) + Send + std::marker::Sync>;

/// Everything the daemon remembers. Calls are asynchronous: the daemon's event loop, its workers
/// and its web server share one thread, and a call that waits (for the management cluster's API
/// server, up to its timeout) must let the others run meanwhile. The SQLite backend does its
/// work synchronously inside its calls: a local file, short transactions. The Kubernetes backend
/// answers reads from a watched cache and sends its writes from the management thread
/// ([`super::management`]), waiting for the answer (bounded) without blocking. Every write is
/// atomic: it happens whole or not at all, and concurrent writers (replicas) never lose each
/// other's updates.
///
/// The daemon holds an [`AnyStore`]; the futures are `Send`, so the web server's handlers (which
/// must be) can await them.
pub trait Store: Send + std::marker::Sync {
    /// Where the state lives, for logs: the database file, or the namespace.
    fn location(&self) -> String;
    /// Why the state is not working now: the last failure, until a write succeeds again.
    fn problem(&self) -> Option<String>;
    /// Whether the state can be used at all (a corrupt database cannot, until recovered).
    fn usable(&self) -> bool;
    /// Failures by kind, for the daemon's metrics.
    fn error_counter(&self) -> Family<KindLabel, Counter>;
    /// A small write, to find out whether writing works again after a failure.
    fn probe(&self) -> impl Future<Output = Result<()>> + Send;
    /// Registers who hears of intents changed by others (see [`IntentListener`]). A backend
    /// only this process writes has nothing to tell.
    fn on_intent(&self, _listener: IntentListener) {}

    fn meta(&self, key: &str) -> impl Future<Output = Result<Option<String>>> + Send;
    fn set_meta(&self, key: &str, value: &str) -> impl Future<Output = Result<()>> + Send;
    /// The revision the daemon follows, as last evaluated.
    fn revision(&self) -> impl Future<Output = Result<Option<RevisionState>>> + Send;
    /// Records what came of evaluating `head`; a loaded head becomes the last good revision.
    fn set_revision(
        &self,
        head: &str,
        verdict: Verdict,
        message: Option<&str>,
    ) -> impl Future<Output = Result<()>> + Send;

    fn cluster(&self, name: &str) -> impl Future<Output = Result<Option<ClusterState>>> + Send;
    /// Every cluster, by name.
    fn clusters(&self) -> impl Future<Output = Result<Vec<ClusterState>>> + Send;
    /// Every cluster by name, as one shared map: what an evaluation reads. A backend that keeps
    /// the states in memory hands out the same map until a write changes it.
    fn states(&self) -> impl Future<Output = Result<std::sync::Arc<States>>> + Send {
        async { Ok(std::sync::Arc::new(self.clusters().await?.into_iter().map(|c| (c.name.clone(), c)).collect())) }
    }
    /// What [`Store::states`] hands out, with a mark to ask [`Store::written_since`] about:
    /// `None` from a backend that keeps no account of its writes.
    fn states_marked(&self) -> impl Future<Output = Result<(std::sync::Arc<States>, Option<u64>)>> + Send {
        async { Ok((self.states().await?, None)) }
    }
    /// The clusters whose state was written after `mark` (each once, by name), or `None` when
    /// that is not known (forgotten, or further back than the account goes): then every state
    /// is to be compared. What lets an evaluation at 100,000 clusters look at the few that moved.
    fn written_since(&self, _mark: u64) -> Option<Vec<String>> {
        None
    }
    /// Records a successful apply: what is now running, and a history row, at once.
    fn record_applied(&self, name: &str, applied: &Applied) -> impl Future<Output = Result<()>> + Send;
    /// Takes what a cluster runs from its inventory when the store knows nothing about it (a
    /// new state, or one recovered from corruption): the next evaluation then plans from there,
    /// so held updates stay held. Returns whether anything was recorded.
    fn seed(
        &self,
        name: &str,
        revision: &str,
        digest: &str,
        profile: &str,
        version: &str,
    ) -> impl Future<Output = Result<bool>> + Send;
    /// Records a state change that is not an apply (applying, failed, removed…); failures,
    /// errors and removals get a history row.
    fn set_sync(
        &self,
        name: &str,
        sync: Sync,
        message: Option<&str>,
        revision: Option<&str>,
    ) -> impl Future<Output = Result<()>> + Send;
    fn set_suspended(&self, name: &str, suspended: bool) -> impl Future<Output = Result<()>> + Send;
    /// Replaces the list of objects applied to `cluster`.
    fn set_objects(&self, cluster: &str, objects: &[ObjectRow]) -> impl Future<Output = Result<()>> + Send;
    fn objects(&self, cluster: &str) -> impl Future<Output = Result<Vec<ObjectRow>>> + Send;
    /// Every cluster with its pending update, by name, without the pending diffs (empty): what
    /// lists of the fleet need (the fleet page lists thousands), read without the largest part.
    /// One cluster's diff is read with [`Store::cluster_row`] or [`Store::pending`].
    fn fleet(&self) -> impl Future<Output = Result<Vec<FleetRow>>> + Send;
    /// One cluster with its pending update, read together: a pending diff is shown only when it
    /// starts from what the cluster runs ([`Pending::diff_from`]), judged on one snapshot.
    fn cluster_row(&self, name: &str) -> impl Future<Output = Result<Option<FleetRow>>> + Send;

    fn pending(&self, cluster: &str) -> impl Future<Output = Result<Option<Pending>>> + Send;
    /// Sets or replaces the cluster's pending update (`since` is kept while the head is the same).
    fn set_pending(&self, pending: &Pending) -> impl Future<Output = Result<()>> + Send;
    fn clear_pending(&self, cluster: &str) -> impl Future<Output = Result<()>> + Send;
    fn pending_count(&self) -> impl Future<Output = Result<i64>> + Send;
    /// Every pending update, without its diff (empty): what counting them by hold needs, read
    /// without the clusters.
    fn pendings(&self) -> impl Future<Output = Result<Vec<Pending>>> + Send {
        async { Ok(self.fleet().await?.into_iter().filter_map(|(_, pending)| pending).collect()) }
    }

    fn approve(&self, cluster: &str, revision: &str, by: &Approver) -> impl Future<Output = Result<Approval>> + Send;
    /// The newest approval of `revision` for `cluster`, if there is one.
    fn approval(&self, cluster: &str, revision: &str) -> impl Future<Output = Result<Option<Approval>>> + Send;
    /// The cluster's approvals, oldest first.
    fn approvals(&self, cluster: &str) -> impl Future<Output = Result<Vec<Approval>>> + Send;

    /// Replaces the cluster's drift findings with these.
    fn set_drift(&self, cluster: &str, findings: &[DriftRow]) -> impl Future<Output = Result<()>> + Send;
    /// The drift findings, by object and path.
    fn drift(&self, cluster: &str) -> impl Future<Output = Result<Vec<DriftRow>>> + Send;
    /// When the newest of the cluster's drift findings was found (Unix seconds), if it has any:
    /// what the rollout gate reads of every cluster it governs.
    fn drift_at(&self, cluster: &str) -> impl Future<Output = Result<Option<i64>>> + Send {
        async { Ok(self.drift(cluster).await?.iter().map(|d| d.found_at).max()) }
    }

    /// Queues a status for delivery, replacing one not yet delivered for the same commit and
    /// context. Returns false when it was delivered already with this state and description:
    /// no write for what the forge already shows.
    fn enqueue(&self, status: &crate::report::Status) -> impl Future<Output = Result<bool>> + Send;
    /// Statuses due for delivery, oldest first (of the clusters this process delivers for).
    fn due(&self, now_ms: i64, limit: usize) -> impl Future<Output = Result<Vec<Queued>>> + Send;
    /// When the next queued status is due (milliseconds), if any is queued.
    fn next_due(&self) -> impl Future<Output = Result<Option<i64>>> + Send;
    fn outbox_len(&self) -> impl Future<Output = Result<i64>> + Send;
    /// Records a delivery; the queued entry goes unless it changed while being delivered.
    fn delivered(&self, status: &crate::report::Status) -> impl Future<Output = Result<()>> + Send;
    /// Puts a queued status off until `next_ms`, noting why.
    fn retry(
        &self,
        status: &crate::report::Status,
        next_ms: i64,
        error: &str,
    ) -> impl Future<Output = Result<()>> + Send;

    /// The newest `limit` history rows of `cluster`, newest first (at most [`HISTORY_KEPT`]).
    fn history(&self, cluster: &str, limit: usize) -> impl Future<Output = Result<Vec<HistoryRow>>> + Send;
    /// Forgets delivered statuses older than [`DELIVERED_KEPT_SECS`], except those for a
    /// revision some cluster runs or holds (a drift report may still be posted on it). Returns
    /// how many went.
    fn prune_delivered(&self, now: i64) -> impl Future<Output = Result<usize>> + Send;

    /// Where every rollout stands (each with the generation it was stored at), by name.
    fn rollouts(&self) -> impl Future<Output = Result<Vec<crate::rollout::gate::Progress>>> + Send;
    fn rollout(&self, name: &str) -> impl Future<Output = Result<Option<crate::rollout::gate::Progress>>> + Send;
    /// Stores a rollout's progress if nobody stored it since it was read: `progress.generation`
    /// must be the stored one (0 for a rollout not stored yet). Returns false, storing nothing,
    /// when it is not — read again and decide again. The generation goes up by one.
    fn save_rollout(&self, progress: &crate::rollout::gate::Progress) -> impl Future<Output = Result<bool>> + Send;
    /// Forgets a rollout (its policy left the repository).
    fn delete_rollout(&self, name: &str) -> impl Future<Output = Result<()>> + Send;

    /// Appends an entry to the audit trail ([`super::audit`]); entries are never changed.
    fn audit(&self, entry: &AuditEntry) -> impl Future<Output = Result<()>> + Send;
    /// The audit entries `query` matches, newest first, at most `query.limit`
    /// ([`AuditQuery::MOST`] at most).
    fn audit_log(&self, query: &AuditQuery) -> impl Future<Output = Result<Vec<AuditEntry>>> + Send;
    /// Forgets the audit entries from before `before_ms` and, past the newest `max`, the oldest.
    /// Returns how many went.
    fn prune_audit(&self, before_ms: i64, max: u64) -> impl Future<Output = Result<usize>> + Send;
}

/// The daemon's store: whichever backend the host config chose.
pub enum AnyStore {
    Sqlite(SqliteStore),
    Kube(kube::KubeStore),
}

macro_rules! dispatch {
    ($self:ident, $s:ident => $e:expr) => {
        match $self {
            AnyStore::Sqlite($s) => $e,
            AnyStore::Kube($s) => $e,
        }
    };
}

impl Store for AnyStore {
    fn location(&self) -> String {
        dispatch!(self, s => s.location())
    }
    fn problem(&self) -> Option<String> {
        dispatch!(self, s => s.problem())
    }
    fn usable(&self) -> bool {
        dispatch!(self, s => s.usable())
    }
    fn error_counter(&self) -> Family<KindLabel, Counter> {
        dispatch!(self, s => s.error_counter())
    }
    fn on_intent(&self, listener: IntentListener) {
        dispatch!(self, s => s.on_intent(listener))
    }
    async fn probe(&self) -> Result<()> {
        dispatch!(self, s => s.probe().await)
    }
    async fn meta(&self, key: &str) -> Result<Option<String>> {
        dispatch!(self, s => s.meta(key).await)
    }
    async fn set_meta(&self, key: &str, value: &str) -> Result<()> {
        dispatch!(self, s => s.set_meta(key, value).await)
    }
    async fn revision(&self) -> Result<Option<RevisionState>> {
        dispatch!(self, s => s.revision().await)
    }
    async fn set_revision(&self, head: &str, verdict: Verdict, message: Option<&str>) -> Result<()> {
        dispatch!(self, s => s.set_revision(head, verdict, message).await)
    }
    async fn cluster(&self, name: &str) -> Result<Option<ClusterState>> {
        dispatch!(self, s => s.cluster(name).await)
    }
    async fn clusters(&self) -> Result<Vec<ClusterState>> {
        dispatch!(self, s => s.clusters().await)
    }
    async fn states(&self) -> Result<std::sync::Arc<States>> {
        dispatch!(self, s => s.states().await)
    }
    async fn states_marked(&self) -> Result<(std::sync::Arc<States>, Option<u64>)> {
        dispatch!(self, s => s.states_marked().await)
    }
    fn written_since(&self, mark: u64) -> Option<Vec<String>> {
        dispatch!(self, s => s.written_since(mark))
    }
    async fn record_applied(&self, name: &str, applied: &Applied<'_>) -> Result<()> {
        dispatch!(self, s => s.record_applied(name, applied).await)
    }
    async fn seed(&self, name: &str, revision: &str, digest: &str, profile: &str, version: &str) -> Result<bool> {
        dispatch!(self, s => s.seed(name, revision, digest, profile, version).await)
    }
    async fn set_sync(&self, name: &str, sync: Sync, message: Option<&str>, revision: Option<&str>) -> Result<()> {
        dispatch!(self, s => s.set_sync(name, sync, message, revision).await)
    }
    async fn set_suspended(&self, name: &str, suspended: bool) -> Result<()> {
        dispatch!(self, s => s.set_suspended(name, suspended).await)
    }
    async fn set_objects(&self, cluster: &str, objects: &[ObjectRow]) -> Result<()> {
        dispatch!(self, s => s.set_objects(cluster, objects).await)
    }
    async fn objects(&self, cluster: &str) -> Result<Vec<ObjectRow>> {
        dispatch!(self, s => s.objects(cluster).await)
    }
    async fn fleet(&self) -> Result<Vec<FleetRow>> {
        dispatch!(self, s => s.fleet().await)
    }
    async fn pendings(&self) -> Result<Vec<Pending>> {
        dispatch!(self, s => s.pendings().await)
    }
    async fn cluster_row(&self, name: &str) -> Result<Option<FleetRow>> {
        dispatch!(self, s => s.cluster_row(name).await)
    }
    async fn pending(&self, cluster: &str) -> Result<Option<Pending>> {
        dispatch!(self, s => s.pending(cluster).await)
    }
    async fn set_pending(&self, pending: &Pending) -> Result<()> {
        dispatch!(self, s => s.set_pending(pending).await)
    }
    async fn clear_pending(&self, cluster: &str) -> Result<()> {
        dispatch!(self, s => s.clear_pending(cluster).await)
    }
    async fn pending_count(&self) -> Result<i64> {
        dispatch!(self, s => s.pending_count().await)
    }
    async fn approve(&self, cluster: &str, revision: &str, by: &Approver) -> Result<Approval> {
        dispatch!(self, s => s.approve(cluster, revision, by).await)
    }
    async fn approval(&self, cluster: &str, revision: &str) -> Result<Option<Approval>> {
        dispatch!(self, s => s.approval(cluster, revision).await)
    }
    async fn approvals(&self, cluster: &str) -> Result<Vec<Approval>> {
        dispatch!(self, s => s.approvals(cluster).await)
    }
    async fn set_drift(&self, cluster: &str, findings: &[DriftRow]) -> Result<()> {
        dispatch!(self, s => s.set_drift(cluster, findings).await)
    }
    async fn drift(&self, cluster: &str) -> Result<Vec<DriftRow>> {
        dispatch!(self, s => s.drift(cluster).await)
    }
    async fn drift_at(&self, cluster: &str) -> Result<Option<i64>> {
        dispatch!(self, s => s.drift_at(cluster).await)
    }
    async fn enqueue(&self, status: &crate::report::Status) -> Result<bool> {
        dispatch!(self, s => s.enqueue(status).await)
    }
    async fn due(&self, now_ms: i64, limit: usize) -> Result<Vec<Queued>> {
        dispatch!(self, s => s.due(now_ms, limit).await)
    }
    async fn next_due(&self) -> Result<Option<i64>> {
        dispatch!(self, s => s.next_due().await)
    }
    async fn outbox_len(&self) -> Result<i64> {
        dispatch!(self, s => s.outbox_len().await)
    }
    async fn delivered(&self, status: &crate::report::Status) -> Result<()> {
        dispatch!(self, s => s.delivered(status).await)
    }
    async fn retry(&self, status: &crate::report::Status, next_ms: i64, error: &str) -> Result<()> {
        dispatch!(self, s => s.retry(status, next_ms, error).await)
    }
    async fn history(&self, cluster: &str, limit: usize) -> Result<Vec<HistoryRow>> {
        dispatch!(self, s => s.history(cluster, limit).await)
    }
    async fn prune_delivered(&self, now: i64) -> Result<usize> {
        dispatch!(self, s => s.prune_delivered(now).await)
    }
    async fn rollouts(&self) -> Result<Vec<crate::rollout::gate::Progress>> {
        dispatch!(self, s => s.rollouts().await)
    }
    async fn rollout(&self, name: &str) -> Result<Option<crate::rollout::gate::Progress>> {
        dispatch!(self, s => s.rollout(name).await)
    }
    async fn save_rollout(&self, progress: &crate::rollout::gate::Progress) -> Result<bool> {
        dispatch!(self, s => s.save_rollout(progress).await)
    }
    async fn delete_rollout(&self, name: &str) -> Result<()> {
        dispatch!(self, s => s.delete_rollout(name).await)
    }
    async fn audit(&self, entry: &AuditEntry) -> Result<()> {
        dispatch!(self, s => s.audit(entry).await)
    }
    async fn audit_log(&self, query: &AuditQuery) -> Result<Vec<AuditEntry>> {
        dispatch!(self, s => s.audit_log(query).await)
    }
    async fn prune_audit(&self, before_ms: i64, max: u64) -> Result<usize> {
        dispatch!(self, s => s.prune_audit(before_ms, max).await)
    }
}

/// A backend's failures, kept for `/readyz` and counted for `/metrics`: the same rules for both.
pub struct Failures {
    /// Corruption found (or the store never opened): from then on nothing is read or written.
    broken: AtomicBool,
    /// The last failure, until a write succeeds again (sticky ones stay).
    problem: Mutex<Option<(String, bool)>>,
    errors: Family<KindLabel, Counter>,
}

impl Default for Failures {
    fn default() -> Self {
        Failures { broken: AtomicBool::new(false), problem: Mutex::new(None), errors: Family::default() }
    }
}

impl Failures {
    /// Failures that begin with `error`, for good: the store cannot be used at all.
    pub fn broken(error: &StoreError) -> Failures {
        let failures = Failures::default();
        failures.broken.store(true, Ordering::Relaxed);
        *failures.problem.lock().unwrap_or_else(|p| p.into_inner()) = Some((error.to_string(), true));
        failures.errors.get_or_create(&KindLabel { kind: error.kind().into() }).inc();
        failures
    }

    /// Takes note of a call's result: a failure is counted and kept (corruption for good); a
    /// write that succeeds clears a passing failure, a read proves nothing about writes.
    pub fn note<T>(&self, result: &Result<T>, write: bool) {
        let mut problem = self.problem.lock().unwrap_or_else(|p| p.into_inner());
        match result {
            Err(e) => {
                self.errors.get_or_create(&KindLabel { kind: e.kind().into() }).inc();
                let sticky = matches!(e, StoreError::Corrupt { .. });
                if sticky {
                    // Writing on would build on damaged pages.
                    self.broken.store(true, Ordering::Relaxed);
                }
                if problem.as_ref().is_none_or(|(_, was_sticky)| !was_sticky) {
                    *problem = Some((e.to_string(), sticky));
                }
            }
            Ok(_) if write && problem.as_ref().is_some_and(|(_, sticky)| !sticky) => *problem = None,
            Ok(_) => {}
        }
    }

    pub fn problem(&self) -> Option<String> {
        self.problem.lock().unwrap_or_else(|p| p.into_inner()).as_ref().map(|(m, _)| m.clone())
    }

    pub fn usable(&self) -> bool {
        !self.broken.load(Ordering::Relaxed)
    }

    pub fn counter(&self) -> Family<KindLabel, Counter> {
        self.errors.clone()
    }
}

/// Waits for a store call on a blocking thread (the evaluation's, `spawn_blocking`), where
/// waiting holds up nothing else. Code on a runtime thread awaits its calls instead: there this
/// panics (tokio refuses to block a runtime thread).
pub fn wait<F: Future>(call: F) -> F::Output {
    tokio::runtime::Handle::current().block_on(call)
}

pub fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}

pub fn now() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap_or(0)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_dates() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(1_795_824_000 + 3661), "2026-11-28T01:01:01Z");
        assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00Z");
    }

    #[test]
    fn health_nobody_knows_is_unknown_in_json_as_everywhere() {
        let state = ClusterState {
            name: "aws".into(),
            profile_revision: None,
            cluster_revision: None,
            digest: None,
            profile: None,
            version: None,
            applied_at: None,
            sync: Sync::Failed,
            message: None,
            health: None,
            drifted: 0,
            suspended: false,
        };
        assert_eq!(serde_json::to_value(&state).unwrap()["health"], "unknown");
        let ready = ClusterState { health: Some(Health::Ready), ..state };
        assert_eq!(serde_json::to_value(&ready).unwrap()["health"], "ready");
    }
}
