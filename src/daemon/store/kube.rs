//! The Kubernetes backend: the daemon's state in the management cluster, shared by replicas.
//!
//! ```text
//!   per cluster: ClusterState <name> (strata.dev/v1, namespaced, status subresource)
//!     spec     what people intend: suspended, approvals        written by any replica (API)
//!     status   what strata found and did: applied revision,    written by the shard's owner
//!              sync, health, pending update, drift, history,
//!              objects, the commit-status outbox
//!   fleet-wide: ConfigMap strata-state: the revision evaluated, meta, statuses naming no cluster,
//!               where each rollout stands (saved only from the generation it was read at)
//!
//!   reads  ──> cache, fed by watches (relisted on 410 Gone); none are served before the first list
//!   writes ──> the management thread: apply the change to the cached object, PUT it with the
//!              resourceVersion it was read at; 409 Conflict: GET, apply the change again, PUT
//! ```
//!
//! A change is a function applied to whatever the object holds when it is written, never a
//! snapshot, so two replicas writing at once never lose each other's update; a change that
//! changes nothing sends nothing. What is kept per ClusterState is bounded so it stays far from
//! etcd's object size limit: the newest [`APPROVALS_KEPT`] approvals, [`DRIFT_KEPT`] drift
//! findings (the count is always right), [`OBJECTS_KEPT`] objects, [`DELIVERED_PER_CLUSTER`]
//! delivered statuses.
//!
//! The audit trail is ConfigMaps of its own, `strata-audit-<YYYYMMDD>-<n>` (labelled
//! [`AUDIT_LABEL`] with the day), one JSON line per entry: appended with the resourceVersion it
//! was read at, a new one of the day when the next line would take it past [`AUDIT_OBJECT_BYTES`],
//! and deleted whole once older than the retention or beyond the bound. Entries are read by
//! listing them, not cached: the trail is read by people, seldom.

use crate::backoff::{Backoff, Jitter};
use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::future::Future;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, ApiResource, DeleteParams, DynamicObject, ListParams, ObjectMeta, PostParams};
use kube::core::{GroupVersionKind, TypeMeta};
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, Event};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use serde::{Deserialize, Serialize};
use tracing::warn;

use super::{
    Applied, Approval, ClusterState, DELIVERED_KEPT_SECS, DriftRow, Failures, FleetRow, HISTORY_KEPT, HistoryRow,
    IntentListener, ObjectRow, Pending, Queued, Result, Store, StoreError, now, now_ms,
};
use super::{Approver, AuditEntry, AuditQuery};
use crate::daemon::decide::Hold;
use crate::daemon::management::{Failure, Management};
use crate::daemon::metrics::KindLabel;
use crate::daemon::state::{Health, RevisionState, Sync, Verdict};
use crate::render::object::{FIELD_MANAGER, LABEL_MANAGED_BY};
use crate::report::{State, Status as CommitStatus};
use crate::rollout::gate::Progress;

pub const GROUP: &str = "strata.dev";
pub const VERSION: &str = "v1";
pub const KIND: &str = "ClusterState";
pub const PLURAL: &str = "clusterstates";
/// The ConfigMap holding what is fleet-wide.
pub const GLOBAL: &str = "strata-state";

pub const APPROVALS_KEPT: usize = 100;
pub const DRIFT_KEPT: usize = 1000;
pub const OBJECTS_KEPT: usize = 5000;
pub const DELIVERED_PER_CLUSTER: usize = 100;
/// The label of the audit trail's ConfigMaps: the day (UTC, `YYYYMMDD`) their entries are of.
pub const AUDIT_LABEL: &str = "strata.dev/audit-day";
/// An audit ConfigMap takes entries up to this size (a ConfigMap holds 1 MiB at most).
pub const AUDIT_OBJECT_BYTES: usize = 512 * 1024;
/// The data key of an audit ConfigMap's entries.
const AUDIT_KEY: &str = "entries.jsonl";

/// A write gives up after this many conflicts in a row (another writer changing the object
/// continuously), and a call after this long.
const ATTEMPTS: usize = 16;
const CALL_TIMEOUT: Duration = Duration::from_secs(20);
/// How long a read waits for the first list before it fails.
const SYNC_WAIT: Duration = Duration::from_secs(10);

/// Whether a cluster's work is this process's (`None`: fleet-wide work): which queued statuses
/// it delivers and which delivered ones it prunes.
pub type Scope = Arc<dyn Fn(Option<&str>) -> bool + Send + std::marker::Sync>;

// ---- what the objects hold (camelCase, as Kubernetes objects are written) ----

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Spec {
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    suspended: bool,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    approvals: Vec<ApprovalDoc>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct ApprovalDoc {
    revision: String,
    by: String,
    at: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    identity: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    groups: Vec<String>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct StatusDoc {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    profile_revision: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    cluster_revision: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    digest: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    profile: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    version: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    applied_at: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    sync: Option<Sync>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    message: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    health: Option<Health>,
    #[serde(default)]
    drifted: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    updated_at: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pending: Option<PendingDoc>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    drift: Vec<DriftDoc>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    history: Vec<HistoryDoc>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    objects: Vec<ObjectDoc>,
    #[serde(default, skip_serializing_if = "Outbox::is_empty")]
    outbox: Outbox,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct PendingDoc {
    base_revision: String,
    head_revision: String,
    hold: Hold,
    summary: String,
    diff: String,
    since: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    base_digest: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct DriftDoc {
    object: String,
    path: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    live: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    desired: Option<String>,
    found_at: i64,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct HistoryDoc {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    revision: Option<String>,
    result: Sync,
    summary: String,
    at: i64,
    /// Retries of one revision that ended the same way, in a row (absent: one).
    #[serde(default = "one", skip_serializing_if = "is_one")]
    count: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    first_at: Option<i64>,
}

fn one() -> u32 {
    1
}

fn is_one(n: &u32) -> bool {
    *n == 1
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct ObjectDoc {
    object: String,
    layer: String,
    action: String,
}

/// Commit statuses of one cluster (or of none, in the ConfigMap): queued and delivered.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Outbox {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    queued: Vec<QueuedDoc>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    delivered: Vec<DeliveredDoc>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct QueuedDoc {
    revision: String,
    context: String,
    state: String,
    description: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    target_url: Option<String>,
    created_at: i64,
    attempts: u32,
    next_attempt_ms: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    last_error: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct DeliveredDoc {
    revision: String,
    context: String,
    state: String,
    description: String,
    at: i64,
}

/// What the strata-state ConfigMap holds, one JSON document per key.
#[derive(Clone, Debug, Default, PartialEq)]
struct Global {
    revision: Option<RevisionState>,
    meta: BTreeMap<String, String>,
    outbox: Outbox,
    /// Where each rollout stands, by name: fleet-wide, like the rollout itself.
    rollouts: BTreeMap<String, StoredRollout>,
}

/// A rollout's progress with the generation it was saved at (the SQLite backend's column).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
struct StoredRollout {
    generation: u64,
    progress: Progress,
    /// The replica that saved it: a replica hears of the saves of others only.
    #[serde(default)]
    by: String,
}

impl StoredRollout {
    fn progress(&self) -> Progress {
        Progress { generation: self.generation, ..self.progress.clone() }
    }
}

impl Outbox {
    fn is_empty(&self) -> bool {
        self.queued.is_empty() && self.delivered.is_empty()
    }

    /// The SQLite backend's `enqueue`, on one cluster's statuses.
    fn enqueue(&mut self, status: &CommitStatus, now: i64, now_ms: i64) -> bool {
        let same = self.delivered.iter().any(|d| {
            d.revision == status.revision
                && d.context == status.context
                && d.state == status.state.as_str()
                && d.description == status.description
        });
        let at = self.queued.iter().position(|q| q.revision == status.revision && q.context == status.context);
        if same {
            if let Some(at) = at {
                self.queued.remove(at);
            }
            return false;
        }
        let entry = QueuedDoc {
            revision: status.revision.clone(),
            context: status.context.clone(),
            state: status.state.as_str().to_string(),
            description: status.description.clone(),
            target_url: status.target_url.clone(),
            created_at: now,
            attempts: 0,
            next_attempt_ms: now_ms,
            last_error: None,
        };
        match at {
            // Replaced in place: it keeps its age in the queue.
            Some(at) => self.queued[at] = QueuedDoc { created_at: self.queued[at].created_at, ..entry },
            None => self.queued.push(entry),
        }
        true
    }

    fn delivered(&mut self, status: &CommitStatus, now: i64) {
        self.queued.retain(|q| {
            !(q.revision == status.revision
                && q.context == status.context
                && q.state == status.state.as_str()
                && q.description == status.description)
        });
        self.delivered.retain(|d| !(d.revision == status.revision && d.context == status.context));
        self.delivered.push(DeliveredDoc {
            revision: status.revision.clone(),
            context: status.context.clone(),
            state: status.state.as_str().to_string(),
            description: status.description.clone(),
            at: now,
        });
        if self.delivered.len() > DELIVERED_PER_CLUSTER {
            let excess = self.delivered.len() - DELIVERED_PER_CLUSTER;
            self.delivered.drain(..excess);
        }
    }

    fn retry(&mut self, status: &CommitStatus, next_ms: i64, error: &str) {
        for q in self.queued.iter_mut().filter(|q| q.revision == status.revision && q.context == status.context) {
            q.attempts += 1;
            q.next_attempt_ms = next_ms;
            q.last_error = Some(error.to_string());
        }
    }

    /// Drops delivered statuses older than `cutoff` unless their revision is still run or held.
    fn prune(&mut self, cutoff: i64, kept: &HashSet<String>) -> usize {
        let before = self.delivered.len();
        self.delivered.retain(|d| d.at >= cutoff || kept.contains(&d.revision));
        before - self.delivered.len()
    }

    fn queued(&self) -> impl Iterator<Item = Queued> + '_ {
        self.queued.iter().map(|q| Queued {
            status: CommitStatus {
                revision: q.revision.clone(),
                context: q.context.clone(),
                state: State::parse(&q.state).unwrap_or(State::Error),
                description: q.description.clone(),
                target_url: q.target_url.clone(),
            },
            attempts: q.attempts,
        })
    }
}

/// One ClusterState as last read or written.
#[derive(Clone, Debug)]
struct Doc {
    metadata: ObjectMeta,
    spec: Spec,
    status: StatusDoc,
}

impl Doc {
    fn resource_version(&self) -> &str {
        self.metadata.resource_version.as_deref().unwrap_or("")
    }

    /// Whether the object stands for a cluster the daemon knows (applied, seeded, synced or
    /// intended for), not just one holding statuses or objects for it.
    fn known(&self) -> bool {
        self.status.sync.is_some() || self.status.digest.is_some() || self.spec != Spec::default()
    }

    fn state(&self, name: &str) -> ClusterState {
        let s = &self.status;
        ClusterState {
            name: name.to_string(),
            profile_revision: s.profile_revision.clone(),
            cluster_revision: s.cluster_revision.clone(),
            digest: s.digest.clone(),
            profile: s.profile.clone(),
            version: s.version.clone(),
            applied_at: s.applied_at,
            sync: s.sync.unwrap_or(Sync::New),
            message: s.message.clone(),
            health: s.health,
            drifted: s.drifted,
            suspended: self.spec.suspended,
        }
    }

    fn pending(&self, name: &str) -> Option<Pending> {
        self.status.pending.as_ref().map(|p| Pending {
            cluster: name.to_string(),
            base_revision: p.base_revision.clone(),
            head_revision: p.head_revision.clone(),
            hold: p.hold.clone(),
            summary: p.summary.clone(),
            diff: p.diff.clone(),
            since: p.since,
            base_digest: p.base_digest.clone(),
        })
    }
}

/// Whether resourceVersion `a` is at least as new as `b`. They are opaque by the API's contract;
/// every API server in use counts them up, and when one does not, the newest event wins.
fn not_older(a: &str, b: &str) -> bool {
    match (a.parse::<u64>(), b.parse::<u64>()) {
        (Ok(a), Ok(b)) => a >= b,
        _ => true,
    }
}

#[derive(Default)]
struct Cache {
    docs: BTreeMap<String, Doc>,
    /// The ConfigMap's resourceVersion (`None`: it does not exist yet) and what it holds.
    global: (Option<String>, Global),
    /// Both first lists are in: reads may be served.
    synced: (bool, bool),
}

struct Inner {
    mgmt: Arc<Management>,
    states: Api<DynamicObject>,
    configmaps: Api<ConfigMap>,
    cache: RwLock<Cache>,
    /// Both first lists are in (as `Cache::synced` says): reads may be served.
    synced: tokio::sync::watch::Sender<bool>,
    failures: Failures,
    scope: Scope,
    listener: Mutex<Option<IntentListener>>,
}

/// The state in the management cluster; see the module comment.
pub struct KubeStore {
    inner: Arc<Inner>,
}

fn resource() -> ApiResource {
    ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk(GROUP, VERSION, KIND), PLURAL)
}

fn decode(object: DynamicObject) -> Option<(String, Doc)> {
    let name = object.metadata.name.clone()?;
    let part = |key: &str| object.data.get(key).cloned().unwrap_or(serde_json::Value::Null);
    let spec = match part("spec") {
        serde_json::Value::Null => Spec::default(),
        value => serde_json::from_value(value).unwrap_or_else(|e| {
            warn!(cluster = %name, error = %e, "ClusterState spec unreadable; taken as empty.");
            Spec::default()
        }),
    };
    let status = match part("status") {
        serde_json::Value::Null => StatusDoc::default(),
        value => serde_json::from_value(value).unwrap_or_else(|e| {
            warn!(cluster = %name, error = %e, "ClusterState status unreadable; taken as empty and derived again.");
            StatusDoc::default()
        }),
    };
    Some((name, Doc { metadata: object.metadata, spec, status }))
}

fn decode_global(map: &ConfigMap) -> Global {
    let data = map.data.clone().unwrap_or_default();
    fn part<T: serde::de::DeserializeOwned + Default>(data: &BTreeMap<String, String>, key: &str) -> T {
        match data.get(key) {
            None => T::default(),
            Some(text) => serde_json::from_str(text).unwrap_or_else(|e| {
                warn!(key, error = %e, "ConfigMap {GLOBAL}: a key is unreadable; taken as empty.");
                T::default()
            }),
        }
    }
    Global {
        revision: part(&data, "revision"),
        meta: part(&data, "meta"),
        outbox: part(&data, "outbox"),
        rollouts: part(&data, "rollouts"),
    }
}

fn encode_global(global: &Global, mut data: BTreeMap<String, String>) -> BTreeMap<String, String> {
    let json = |value: serde_json::Result<String>| value.expect("state serialises");
    data.insert("revision".into(), json(serde_json::to_string(&global.revision)));
    data.insert("meta".into(), json(serde_json::to_string(&global.meta)));
    data.insert("outbox".into(), json(serde_json::to_string(&global.outbox)));
    data.insert("rollouts".into(), json(serde_json::to_string(&global.rollouts)));
    data
}

/// Before attempt `attempt` of a write (0: the first, at once): a random pause growing with the
/// conflicts so far, as client-go's RetryOnConflict backs off. Without it the writer whose last
/// write won, its cache fresh from the answer, wins every race against one that must read first.
async fn conflict_pause(attempt: usize) {
    const CONFLICT: Backoff = Backoff::new(Duration::from_millis(10), Duration::from_millis(500), Jitter::Full);
    if attempt > 0 {
        tokio::time::sleep(CONFLICT.delay(attempt as u32)).await;
    }
}

fn labels() -> BTreeMap<String, String> {
    BTreeMap::from([(LABEL_MANAGED_BY.to_string(), FIELD_MANAGER.to_string())])
}

/// The cluster a commit status context names (`strata/<cluster>`), if it names one.
fn cluster_of(context: &str) -> Option<&str> {
    context.strip_prefix("strata/").filter(|c| crate::render::names::is_dns1123_label(c))
}

fn store_error(object: &str, kind: &'static str, message: impl Into<String>) -> StoreError {
    StoreError::Kubernetes { object: object.to_string(), kind, message: message.into() }
}

fn api_error(object: &str, e: &kube::Error) -> StoreError {
    let failure = Failure::of(e);
    let message = if failure.kind == "missing" && object.starts_with(KIND) {
        format!("{} — is the ClusterState CRD installed? kubectl apply -f deploy/kubernetes/crd.yaml", failure.message)
    } else {
        failure.message
    };
    store_error(object, failure.kind, message)
}

/// Which part of a ClusterState a write changes.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Part {
    /// What people intend: written through the main resource.
    Spec,
    /// What strata found and did: written through the status subresource.
    Status,
}

impl Inner {
    fn object(&self, name: &str) -> String {
        format!("{KIND} {}/{name}", self.mgmt.namespace)
    }

    /// Puts an object read or written into the cache, unless the cache already has a newer one,
    /// and tells the listener when someone else changed its spec.
    fn put(&self, object: DynamicObject, from_watch: bool) {
        let Some((name, doc)) = decode(object) else { return };
        let changed_intent = {
            let mut cache = self.cache.write().unwrap_or_else(|p| p.into_inner());
            let old = cache.docs.get(&name);
            if old.is_some_and(|old| !not_older(doc.resource_version(), old.resource_version())) {
                return;
            }
            let changed = match old {
                Some(old) => old.spec != doc.spec,
                None => doc.spec != Spec::default(),
            };
            cache.docs.insert(name.clone(), doc);
            changed
        };
        if changed_intent && from_watch {
            self.tell(&format!("cluster {name}"));
        }
    }

    fn tell(&self, name: &str) {
        if let Some(listener) = self.listener.lock().unwrap_or_else(|p| p.into_inner()).as_ref() {
            listener(name);
        }
    }

    fn mark_synced(&self, states: bool) {
        let done = {
            let mut cache = self.cache.write().unwrap_or_else(|p| p.into_inner());
            if states {
                cache.synced.0 = true;
            } else {
                cache.synced.1 = true;
            }
            cache.synced.0 && cache.synced.1
        };
        if done {
            self.synced.send_replace(true);
        }
    }

    /// Keeps the ClusterState cache equal to the API server's, for as long as the process runs.
    async fn watch_states(self: Arc<Self>) {
        let mut events = watcher::watcher(self.states.clone(), watcher::Config::default()).default_backoff().boxed();
        let mut listing: Option<BTreeMap<String, Doc>> = None;
        while let Some(event) = events.next().await {
            match event {
                Ok(Event::Init) => listing = Some(BTreeMap::new()),
                Ok(Event::InitApply(object)) => {
                    if let (Some(listing), Some((name, doc))) = (listing.as_mut(), decode(object)) {
                        listing.insert(name, doc);
                    }
                }
                Ok(Event::InitDone) => {
                    let Some(listed) = listing.take() else { continue };
                    let changed: Vec<String> = {
                        let mut cache = self.cache.write().unwrap_or_else(|p| p.into_inner());
                        let changed = listed
                            .iter()
                            .filter(|(name, doc)| cache.docs.get(*name).is_some_and(|old| old.spec != doc.spec))
                            .map(|(name, _)| name.clone())
                            .collect();
                        // A write answered while the list was read may be newer than what was listed.
                        let mut merged = listed;
                        for (name, doc) in std::mem::take(&mut cache.docs) {
                            match merged.get(&name) {
                                Some(listed) if !not_older(listed.resource_version(), doc.resource_version()) => {
                                    merged.insert(name, doc);
                                }
                                _ => {}
                            }
                        }
                        cache.docs = merged;
                        changed
                    };
                    self.mark_synced(true);
                    for name in changed {
                        self.tell(&format!("cluster {name}"));
                    }
                }
                Ok(Event::Apply(object)) => self.put(object, true),
                Ok(Event::Delete(object)) => {
                    if let Some(name) = object.metadata.name {
                        self.cache.write().unwrap_or_else(|p| p.into_inner()).docs.remove(&name);
                    }
                }
                Err(e) => {
                    let error =
                        store_error(&format!("{KIND}s in {}", self.mgmt.namespace), "unreachable", e.to_string());
                    self.failures.note(&Err::<(), _>(error), false);
                }
            }
        }
    }

    /// Keeps the strata-state ConfigMap in the cache.
    async fn watch_global(self: Arc<Self>) {
        let config = watcher::Config::default().fields(&format!("metadata.name={GLOBAL}"));
        let mut events = watcher::watcher(self.configmaps.clone(), config).default_backoff().boxed();
        let mut listed: Option<Option<ConfigMap>> = None;
        while let Some(event) = events.next().await {
            match event {
                Ok(Event::Init) => listed = Some(None),
                Ok(Event::InitApply(map)) => listed = Some(Some(map)),
                Ok(Event::InitDone) => {
                    if let Some(map) = listed.take() {
                        match map {
                            Some(map) => self.put_global(&map, true),
                            None => self.cache.write().unwrap_or_else(|p| p.into_inner()).global = Default::default(),
                        }
                    }
                    self.mark_synced(false);
                }
                Ok(Event::Apply(map)) => self.put_global(&map, true),
                Ok(Event::Delete(_)) => {
                    self.cache.write().unwrap_or_else(|p| p.into_inner()).global = Default::default()
                }
                Err(e) => {
                    let error = store_error(
                        &format!("ConfigMap {}/{GLOBAL}", self.mgmt.namespace),
                        "unreachable",
                        e.to_string(),
                    );
                    self.failures.note(&Err::<(), _>(error), false);
                }
            }
        }
    }

    fn put_global(&self, map: &ConfigMap, from_watch: bool) {
        let version = map.metadata.resource_version.clone();
        let mut cache = self.cache.write().unwrap_or_else(|p| p.into_inner());
        if let (Some(new), Some(old)) = (&version, &cache.global.0)
            && !not_older(new, old)
        {
            return;
        }
        let global = decode_global(map);
        let me = &self.mgmt.identity;
        let old = &cache.global.1.rollouts;
        let moved_elsewhere = global.rollouts.iter().any(|(name, r)| &r.by != me && old.get(name) != Some(r));
        cache.global = (version, global);
        drop(cache);
        if moved_elsewhere && from_watch {
            self.tell("rollout progress");
        }
    }

    async fn refresh(&self, name: &str) -> Result<()> {
        match self.states.get_opt(name).await {
            Ok(Some(object)) => {
                // Taken whatever the cache says: it is what the server holds now.
                if let Some((name, doc)) = decode(object) {
                    self.cache.write().unwrap_or_else(|p| p.into_inner()).docs.insert(name, doc);
                }
                Ok(())
            }
            Ok(None) => {
                self.cache.write().unwrap_or_else(|p| p.into_inner()).docs.remove(name);
                Ok(())
            }
            Err(e) => Err(api_error(&self.object(name), &e)),
        }
    }

    /// Applies `change` to the ClusterState `name` as the server holds it and writes `part`,
    /// retrying on conflicts; creates the object when the change makes something of nothing.
    async fn write_doc<R>(
        &self,
        name: &str,
        part: Part,
        mut change: impl FnMut(&mut Spec, &mut StatusDoc) -> R,
    ) -> Result<R> {
        let object = self.object(name);
        if !crate::render::names::is_dns1123_label(name) {
            return Err(store_error(&object, "rejected", "not a cluster name (a DNS label)"));
        }
        let params = PostParams { field_manager: Some(FIELD_MANAGER.into()), ..PostParams::default() };
        for attempt in 0..ATTEMPTS {
            conflict_pause(attempt).await;
            let base = self.cache.read().unwrap_or_else(|p| p.into_inner()).docs.get(name).cloned();
            let (mut spec, mut status) = base.as_ref().map(|d| (d.spec.clone(), d.status.clone())).unwrap_or_default();
            let result = change(&mut spec, &mut status);
            let unchanged = match (&base, part) {
                (Some(base), Part::Spec) => base.spec == spec,
                (Some(base), Part::Status) => base.status == status,
                (None, _) => spec == Spec::default() && status == StatusDoc::default(),
            };
            if unchanged {
                return Ok(result);
            }
            let Some(base) = base else {
                // Status is dropped on create (it has a subresource of its own): create, then write it.
                let created = DynamicObject {
                    types: Some(TypeMeta { api_version: format!("{GROUP}/{VERSION}"), kind: KIND.into() }),
                    metadata: ObjectMeta { name: Some(name.into()), labels: Some(labels()), ..ObjectMeta::default() },
                    data: serde_json::json!({ "spec": if part == Part::Spec { spec.clone() } else { Spec::default() } }),
                };
                match self.states.create(&params, &created).await {
                    Ok(object) => self.put(object, false),
                    Err(e) if Failure::is(&e, 409) => self.refresh(name).await?,
                    Err(e) => return Err(api_error(&object, &e)),
                }
                continue;
            };
            let body = DynamicObject {
                types: Some(TypeMeta { api_version: format!("{GROUP}/{VERSION}"), kind: KIND.into() }),
                metadata: base.metadata.clone(),
                data: serde_json::json!({ "spec": spec, "status": status }),
            };
            let sent = match part {
                Part::Spec => self.states.replace(name, &params, &body).await,
                Part::Status => self.states.replace_status(name, &params, &body).await,
            };
            match sent {
                Ok(object) => {
                    self.put(object, false);
                    return Ok(result);
                }
                // Someone else wrote it since it was read: read it again, change it again.
                Err(e) if Failure::is(&e, 409) || Failure::is(&e, 404) => self.refresh(name).await?,
                Err(e) => return Err(api_error(&object, &e)),
            }
        }
        Err(store_error(
            &object,
            "conflict",
            format!("still conflicting after {ATTEMPTS} attempts: another writer changes it continuously"),
        ))
    }

    /// As [`Inner::write_doc`], for the strata-state ConfigMap.
    async fn write_global<R>(&self, mut change: impl FnMut(&mut Global) -> R) -> Result<R> {
        let object = format!("ConfigMap {}/{GLOBAL}", self.mgmt.namespace);
        let params = PostParams { field_manager: Some(FIELD_MANAGER.into()), ..PostParams::default() };
        for attempt in 0..ATTEMPTS {
            conflict_pause(attempt).await;
            let (version, mut global) = self.cache.read().unwrap_or_else(|p| p.into_inner()).global.clone();
            let before = global.clone();
            let result = change(&mut global);
            if global == before {
                return Ok(result);
            }
            let sent = match &version {
                None => {
                    let map = ConfigMap {
                        metadata: ObjectMeta {
                            name: Some(GLOBAL.into()),
                            labels: Some(labels()),
                            ..ObjectMeta::default()
                        },
                        data: Some(encode_global(&global, BTreeMap::new())),
                        ..ConfigMap::default()
                    };
                    self.configmaps.create(&params, &map).await
                }
                Some(version) => {
                    // Keys someone else keeps in the ConfigMap stay: a write that cannot read
                    // them first is not made (it would drop them).
                    let current = match self.configmaps.get_opt(GLOBAL).await {
                        Ok(current) => current,
                        Err(e) => return Err(api_error(&object, &e)),
                    };
                    let others = current.and_then(|c| c.data).unwrap_or_default();
                    let map = ConfigMap {
                        metadata: ObjectMeta {
                            name: Some(GLOBAL.into()),
                            labels: Some(labels()),
                            resource_version: Some(version.clone()),
                            ..ObjectMeta::default()
                        },
                        data: Some(encode_global(&global, others)),
                        ..ConfigMap::default()
                    };
                    self.configmaps.replace(GLOBAL, &params, &map).await
                }
            };
            match sent {
                Ok(map) => {
                    self.put_global(&map, false);
                    return Ok(result);
                }
                Err(e) if Failure::is(&e, 409) || Failure::is(&e, 404) => match self.configmaps.get_opt(GLOBAL).await {
                    Ok(Some(map)) => {
                        let mut cache = self.cache.write().unwrap_or_else(|p| p.into_inner());
                        cache.global = (map.metadata.resource_version.clone(), decode_global(&map));
                    }
                    Ok(None) => self.cache.write().unwrap_or_else(|p| p.into_inner()).global = Default::default(),
                    Err(e) => return Err(api_error(&object, &e)),
                },
                Err(e) => return Err(api_error(&object, &e)),
            }
        }
        Err(store_error(
            &object,
            "conflict",
            format!("still conflicting after {ATTEMPTS} attempts: another writer changes it continuously"),
        ))
    }
}

/// `20261207` for a time in milliseconds (UTC).
fn audit_day(ms: i64) -> String {
    super::rfc3339(ms.div_euclid(1000))[..10].replace('-', "")
}

/// An audit ConfigMap's day and number, from its name.
fn audit_shard(name: &str) -> Option<(String, u32)> {
    let rest = name.strip_prefix("strata-audit-")?;
    let (day, n) = rest.split_once('-')?;
    Some((day.to_string(), n.parse().ok()?))
}

impl Inner {
    /// The audit ConfigMaps, by day and number (oldest first); all of them, or one day's.
    async fn audit_maps(&self, day: Option<&str>) -> Result<Vec<((String, u32), ConfigMap)>> {
        let selector = match day {
            Some(day) => format!("{AUDIT_LABEL}={day}"),
            None => AUDIT_LABEL.to_string(),
        };
        let object = format!("ConfigMaps {}/strata-audit-*", self.mgmt.namespace);
        let list =
            self.configmaps.list(&ListParams::default().labels(&selector)).await.map_err(|e| api_error(&object, &e))?;
        let mut maps: Vec<_> =
            list.items.into_iter().filter_map(|m| Some((audit_shard(m.metadata.name.as_deref()?)?, m))).collect();
        maps.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(maps)
    }

    /// Appends a line to the newest ConfigMap of the entry's day, or starts the next one.
    async fn append_audit(&self, line: String, day: String) -> Result<()> {
        let params = PostParams { field_manager: Some(FIELD_MANAGER.into()), ..PostParams::default() };
        for attempt in 0..ATTEMPTS {
            conflict_pause(attempt).await;
            let newest = self.audit_maps(Some(&day)).await?.pop();
            let used = newest
                .as_ref()
                .map_or(0, |(_, m)| m.data.as_ref().and_then(|d| d.get(AUDIT_KEY)).map_or(0, String::len));
            let sent = match newest {
                Some(((_, n), mut map)) if used + line.len() <= AUDIT_OBJECT_BYTES => {
                    let name = map.metadata.name.clone().unwrap_or_else(|| format!("strata-audit-{day}-{n:04}"));
                    map.data
                        .get_or_insert_with(BTreeMap::new)
                        .entry(AUDIT_KEY.to_string())
                        .or_default()
                        .push_str(&line);
                    (name.clone(), self.configmaps.replace(&name, &params, &map).await)
                }
                newest => {
                    let n = newest.map_or(0, |((_, n), _)| n + 1);
                    let name = format!("strata-audit-{day}-{n:04}");
                    let mut labels = labels();
                    labels.insert(AUDIT_LABEL.to_string(), day.clone());
                    let map = ConfigMap {
                        metadata: ObjectMeta {
                            name: Some(name.clone()),
                            labels: Some(labels),
                            ..ObjectMeta::default()
                        },
                        data: Some(BTreeMap::from([(AUDIT_KEY.to_string(), line.clone())])),
                        ..ConfigMap::default()
                    };
                    (name, self.configmaps.create(&params, &map).await)
                }
            };
            match sent {
                (_, Ok(_)) => return Ok(()),
                // Another replica appended (or started the next one) first: read again.
                (_, Err(e)) if Failure::is(&e, 409) => continue,
                (name, Err(e)) => return Err(api_error(&format!("ConfigMap {}/{name}", self.mgmt.namespace), &e)),
            }
        }
        Err(store_error(
            &format!("ConfigMaps {}/strata-audit-{day}-*", self.mgmt.namespace),
            "conflict",
            format!("still conflicting after {ATTEMPTS} attempts: other replicas keep appending"),
        ))
    }

    async fn read_audit(&self, query: AuditQuery) -> Result<Vec<AuditEntry>> {
        let since_day = query.since.map(audit_day);
        let mut entries: Vec<AuditEntry> = Vec::new();
        for ((day, _), map) in self.audit_maps(None).await? {
            if since_day.as_ref().is_some_and(|since| &day < since) {
                continue;
            }
            let text = map.data.as_ref().and_then(|d| d.get(AUDIT_KEY)).map(String::as_str).unwrap_or("");
            entries.extend(
                text.lines().filter_map(|l| serde_json::from_str::<AuditEntry>(l).ok()).filter(|e| query.matches(e)),
            );
        }
        // Appends go in order within a ConfigMap, and ConfigMaps by day and number: newest last.
        entries.reverse();
        entries.truncate(query.limit.clamp(1, AuditQuery::MOST));
        Ok(entries)
    }

    /// Deletes the audit ConfigMaps whose day is wholly before `before_ms`, then the oldest
    /// while the rest hold `max` entries or more.
    async fn prune_audit(&self, before_ms: i64, max: u64) -> Result<usize> {
        let cutoff = audit_day(before_ms);
        let maps = self.audit_maps(None).await?;
        let count =
            |m: &ConfigMap| m.data.as_ref().and_then(|d| d.get(AUDIT_KEY)).map_or(0, |t| t.lines().count()) as u64;
        let mut total: u64 = maps.iter().map(|(_, m)| count(m)).sum();
        let mut gone = 0;
        for ((day, _), map) in &maps {
            let n = count(map);
            if *day >= cutoff && total.saturating_sub(n) < max {
                break;
            }
            let name = map.metadata.name.clone().unwrap_or_default();
            match self.configmaps.delete(&name, &DeleteParams::default()).await {
                Ok(_) => {}
                Err(e) if Failure::is(&e, 404) => {}
                Err(e) => return Err(api_error(&format!("ConfigMap {}/{name}", self.mgmt.namespace), &e)),
            }
            total = total.saturating_sub(n);
            gone += n as usize;
        }
        Ok(gone)
    }
}

impl KubeStore {
    /// Starts watching the state in `mgmt`'s namespace and waits (at most 30 s) for the first
    /// lists; until they are in, reads fail (`unsynced`) and the daemon decides nothing.
    pub async fn open(mgmt: Arc<Management>, scope: Scope) -> KubeStore {
        let inner = Arc::new(Inner {
            states: Api::namespaced_with(mgmt.client.clone(), &mgmt.namespace, &resource()),
            configmaps: mgmt.api(),
            mgmt: mgmt.clone(),
            cache: RwLock::new(Cache::default()),
            synced: tokio::sync::watch::Sender::new(false),
            failures: Failures::default(),
            scope,
            listener: Mutex::new(None),
        });
        mgmt.spawn(inner.clone().watch_states());
        mgmt.spawn(inner.clone().watch_global());
        let store = KubeStore { inner };
        if let Err(e) = store.wait_synced(Duration::from_secs(30)).await {
            store.inner.failures.note(&Err::<(), _>(e), false);
        }
        store
    }

    /// Waits (at most `limit`, without blocking the thread) for the first lists.
    async fn wait_synced(&self, limit: Duration) -> Result<()> {
        let mut synced = self.inner.synced.subscribe();
        if let Ok(Ok(_)) = tokio::time::timeout(limit, synced.wait_for(|synced| *synced)).await {
            return Ok(());
        }
        Err(store_error(
            &format!("{KIND}s in {}", self.inner.mgmt.namespace),
            "unsynced",
            "not read yet: the daemon decides nothing until it has the shared state (is the API server reachable, the CRD installed, the Role bound?)",
        ))
    }

    /// Reads from the cache, once it holds the first lists.
    async fn read<T>(&self, f: impl FnOnce(&Cache) -> T) -> Result<T> {
        let result =
            self.wait_synced(SYNC_WAIT).await.map(|()| f(&self.inner.cache.read().unwrap_or_else(|p| p.into_inner())));
        if result.is_err() {
            self.inner.failures.note(&result, false);
        }
        result
    }

    async fn doc<T>(&self, name: &str, f: impl FnOnce(Option<&Doc>) -> T) -> Result<T> {
        self.read(|cache| f(cache.docs.get(name))).await
    }

    async fn global<T>(&self, f: impl FnOnce(&Global) -> T) -> Result<T> {
        self.read(|cache| f(&cache.global.1)).await
    }

    /// Runs `work` on the management thread once the cache is synced, and waits for it (at most
    /// [`CALL_TIMEOUT`]) without blocking this thread.
    async fn call<R: Send + 'static>(
        &self,
        object: String,
        work: impl Future<Output = Result<R>> + Send + 'static,
    ) -> Result<R> {
        let result = match self.wait_synced(SYNC_WAIT).await {
            Ok(()) => self.inner.mgmt.run(CALL_TIMEOUT, work).await.unwrap_or_else(|| {
                Err(store_error(&object, "unreachable", format!("no answer within {}s", CALL_TIMEOUT.as_secs())))
            }),
            Err(e) => Err(e),
        };
        self.inner.failures.note(&result, true);
        result
    }

    async fn update<R: Send + 'static>(
        &self,
        name: &str,
        part: Part,
        change: impl FnMut(&mut Spec, &mut StatusDoc) -> R + Send + 'static,
    ) -> Result<R> {
        let (inner, owned) = (self.inner.clone(), name.to_string());
        self.call(self.inner.object(name), async move { inner.write_doc(&owned, part, change).await }).await
    }

    async fn update_status<R: Send + 'static>(
        &self,
        name: &str,
        mut change: impl FnMut(&mut StatusDoc) -> R + Send + 'static,
    ) -> Result<R> {
        self.update(name, Part::Status, move |_, status| change(status)).await
    }

    async fn update_spec<R: Send + 'static>(
        &self,
        name: &str,
        mut change: impl FnMut(&mut Spec) -> R + Send + 'static,
    ) -> Result<R> {
        self.update(name, Part::Spec, move |spec, _| change(spec)).await
    }

    async fn update_global<R: Send + 'static>(
        &self,
        change: impl FnMut(&mut Global) -> R + Send + 'static,
    ) -> Result<R> {
        let inner = self.inner.clone();
        self.call(format!("ConfigMap {}/{GLOBAL}", self.inner.mgmt.namespace), async move {
            inner.write_global(change).await
        })
        .await
    }

    /// Changes the outbox a status belongs to: its cluster's, or the fleet-wide one.
    async fn update_outbox<R: Send + 'static>(
        &self,
        context: &str,
        mut change: impl FnMut(&mut Outbox) -> R + Send + 'static,
    ) -> Result<R> {
        match cluster_of(context) {
            Some(cluster) => self.update_status(cluster, move |status| change(&mut status.outbox)).await,
            None => self.update_global(move |global| change(&mut global.outbox)).await,
        }
    }

    /// The outboxes this process delivers from.
    async fn in_scope<T>(&self, f: impl Fn(&Outbox) -> Vec<T>) -> Result<Vec<T>> {
        let scope = self.inner.scope.clone();
        self.read(|cache| {
            let mut all: Vec<T> = Vec::new();
            for (name, doc) in &cache.docs {
                if scope(Some(name)) {
                    all.extend(f(&doc.status.outbox));
                }
            }
            if scope(None) {
                all.extend(f(&cache.global.1.outbox));
            }
            all
        })
        .await
    }
}

fn add_history(status: &mut StatusDoc, revision: Option<&str>, result: Sync, summary: &str, at: i64) {
    if let Some(newest) =
        status.history.last_mut().filter(|h| super::repeats(Some((h.revision.as_deref(), h.result)), revision, result))
    {
        newest.first_at.get_or_insert(newest.at);
        newest.summary = summary.to_string();
        newest.at = at;
        newest.count = newest.count.saturating_add(1);
        return;
    }
    status.history.push(HistoryDoc {
        revision: revision.map(str::to_string),
        result,
        summary: summary.to_string(),
        at,
        count: 1,
        first_at: None,
    });
    if status.history.len() > HISTORY_KEPT {
        let excess = status.history.len() - HISTORY_KEPT;
        status.history.drain(..excess);
    }
}

impl Store for KubeStore {
    fn location(&self) -> String {
        format!("{KIND} objects and ConfigMap {GLOBAL} in namespace {}", self.inner.mgmt.namespace)
    }

    fn problem(&self) -> Option<String> {
        self.inner.failures.problem()
    }

    fn usable(&self) -> bool {
        self.inner.failures.usable()
    }

    fn error_counter(&self) -> Family<KindLabel, Counter> {
        self.inner.failures.counter()
    }

    async fn probe(&self) -> Result<()> {
        // Reads the object back from the server: a write that changes nothing sends nothing.
        let inner = self.inner.clone();
        self.call(format!("ConfigMap {}/{GLOBAL}", self.inner.mgmt.namespace), async move {
            inner
                .configmaps
                .get_opt(GLOBAL)
                .await
                .map(|_| ())
                .map_err(|e| api_error(&format!("ConfigMap {GLOBAL}"), &e))
        })
        .await
    }

    fn on_intent(&self, listener: IntentListener) {
        *self.inner.listener.lock().unwrap_or_else(|p| p.into_inner()) = Some(listener);
    }

    async fn meta(&self, key: &str) -> Result<Option<String>> {
        self.global(|g| g.meta.get(key).cloned()).await
    }

    async fn set_meta(&self, key: &str, value: &str) -> Result<()> {
        let (key, value) = (key.to_string(), value.to_string());
        self.update_global(move |g| {
            g.meta.insert(key.clone(), value.clone());
        })
        .await
    }

    async fn revision(&self) -> Result<Option<RevisionState>> {
        self.global(|g| g.revision.clone()).await
    }

    /// Every replica evaluates the same heads: the first to record one writes it, the others
    /// find it there and write nothing (`at` is when it was first evaluated).
    async fn set_revision(&self, head: &str, verdict: Verdict, message: Option<&str>) -> Result<()> {
        let (head, message) = (head.to_string(), message.map(str::to_string));
        let at = now();
        self.update_global(move |g| {
            let last_good = match verdict {
                Verdict::Loaded => Some(head.clone()),
                Verdict::Rejected => g.revision.as_ref().and_then(|r| r.last_good.clone()),
            };
            let same = g.revision.as_ref().is_some_and(|r| {
                r.head == head && r.verdict == verdict && r.message == message && r.last_good == last_good
            });
            if !same {
                g.revision =
                    Some(RevisionState { head: head.clone(), verdict, message: message.clone(), at, last_good });
            }
        })
        .await
    }

    async fn cluster(&self, name: &str) -> Result<Option<ClusterState>> {
        self.doc(name, |d| d.filter(|d| d.known()).map(|d| d.state(name))).await
    }

    async fn clusters(&self) -> Result<Vec<ClusterState>> {
        self.read(|cache| cache.docs.iter().filter(|(_, d)| d.known()).map(|(name, d)| d.state(name)).collect()).await
    }

    async fn record_applied(&self, name: &str, applied: &Applied<'_>) -> Result<()> {
        let at = now();
        let owned = |s: Option<&str>| s.map(str::to_string);
        let (profile_revision, cluster_revision) = (owned(applied.profile_revision), owned(applied.cluster_revision));
        let (digest, profile, version, summary) = (
            applied.digest.to_string(),
            applied.profile.to_string(),
            applied.version.to_string(),
            applied.summary.to_string(),
        );
        let (sync, health) = (applied.sync, applied.health);
        self.update_status(name, move |s| {
            s.profile_revision = profile_revision.clone();
            s.cluster_revision = cluster_revision.clone();
            s.digest = Some(digest.clone());
            s.profile = Some(profile.clone());
            s.version = Some(version.clone());
            s.applied_at = Some(at);
            s.sync = Some(sync);
            s.message = Some(summary.clone());
            s.health = Some(health);
            s.updated_at = Some(at);
            add_history(s, cluster_revision.as_deref(), sync, &summary, at);
        })
        .await
    }

    async fn seed(&self, name: &str, revision: &str, digest: &str, profile: &str, version: &str) -> Result<bool> {
        let known = self.doc(name, |d| d.is_some_and(Doc::known)).await?;
        let (revision, digest, profile, version) =
            (revision.to_string(), digest.to_string(), profile.to_string(), version.to_string());
        let at = now();
        self.update_status(name, move |s| {
            if s.digest.is_some() {
                return false;
            }
            if !known && s.sync.is_none() {
                s.sync = Some(Sync::Applied);
                s.message = Some("taken from the cluster's inventory".into());
            }
            s.profile_revision = Some(revision.clone());
            s.cluster_revision = Some(revision.clone());
            s.digest = Some(digest.clone());
            s.profile = Some(profile.clone());
            s.version = Some(version.clone());
            s.updated_at = Some(at);
            true
        })
        .await
    }

    async fn set_sync(&self, name: &str, sync: Sync, message: Option<&str>, revision: Option<&str>) -> Result<()> {
        let (message, revision) = (message.map(str::to_string), revision.map(str::to_string));
        let at = now();
        self.update_status(name, move |s| {
            s.sync = Some(sync);
            s.message = message.clone();
            s.updated_at = Some(at);
            // After a failed apply nobody knows how the workloads are doing: never `ready`.
            if sync == Sync::Failed {
                s.health = None;
            }
            if matches!(sync, Sync::Failed | Sync::Removed | Sync::Error) {
                add_history(s, revision.as_deref(), sync, message.as_deref().unwrap_or(""), at);
            }
        })
        .await
    }

    async fn set_suspended(&self, name: &str, suspended: bool) -> Result<()> {
        self.update_spec(name, move |spec| spec.suspended = suspended).await
    }

    async fn set_objects(&self, cluster: &str, objects: &[ObjectRow]) -> Result<()> {
        let objects: Vec<ObjectDoc> = objects
            .iter()
            .take(OBJECTS_KEPT)
            .map(|(object, layer, action)| ObjectDoc {
                object: object.clone(),
                layer: layer.clone(),
                action: action.clone(),
            })
            .collect();
        self.update_status(cluster, move |s| s.objects = objects.clone()).await
    }

    async fn objects(&self, cluster: &str) -> Result<Vec<ObjectRow>> {
        self.doc(cluster, |d| {
            d.map(|d| d.status.objects.iter().map(|o| (o.object.clone(), o.layer.clone(), o.action.clone())).collect())
                .unwrap_or_default()
        })
        .await
    }

    async fn fleet(&self) -> Result<Vec<FleetRow>> {
        self.read(|cache| {
            cache.docs.iter().filter(|(_, d)| d.known()).map(|(name, d)| (d.state(name), d.pending(name))).collect()
        })
        .await
    }

    async fn cluster_row(&self, name: &str) -> Result<Option<FleetRow>> {
        self.doc(name, |d| d.filter(|d| d.known()).map(|d| (d.state(name), d.pending(name)))).await
    }

    async fn pending(&self, cluster: &str) -> Result<Option<Pending>> {
        self.doc(cluster, |d| d.and_then(|d| d.pending(cluster))).await
    }

    async fn set_pending(&self, p: &Pending) -> Result<()> {
        let p = p.clone();
        self.update_status(&p.cluster.clone(), move |s| {
            let since = match &s.pending {
                Some(old) if old.head_revision == p.head_revision => old.since,
                _ => p.since,
            };
            s.pending = Some(PendingDoc {
                base_revision: p.base_revision.clone(),
                head_revision: p.head_revision.clone(),
                hold: p.hold.clone(),
                summary: p.summary.clone(),
                diff: p.diff.clone(),
                since,
                base_digest: p.base_digest.clone(),
            });
        })
        .await
    }

    async fn clear_pending(&self, cluster: &str) -> Result<()> {
        if self.doc(cluster, |d| d.is_none_or(|d| d.status.pending.is_none())).await? {
            return Ok(());
        }
        self.update_status(cluster, |s| s.pending = None).await
    }

    async fn pending_count(&self) -> Result<i64> {
        self.read(|cache| cache.docs.values().filter(|d| d.status.pending.is_some()).count() as i64).await
    }

    async fn approve(&self, cluster: &str, revision: &str, by: &Approver) -> Result<Approval> {
        let approval = by.approval(cluster, revision);
        let doc = ApprovalDoc {
            revision: revision.into(),
            by: approval.approved_by.clone(),
            at: approval.approved_at,
            identity: Some(approval.identity.clone()),
            groups: approval.groups.clone(),
        };
        self.update_spec(cluster, move |spec| {
            spec.approvals.push(doc.clone());
            if spec.approvals.len() > APPROVALS_KEPT {
                let excess = spec.approvals.len() - APPROVALS_KEPT;
                spec.approvals.drain(..excess);
            }
        })
        .await?;
        Ok(approval)
    }

    async fn approval(&self, cluster: &str, revision: &str) -> Result<Option<Approval>> {
        Ok(self.approvals(cluster).await?.into_iter().rev().find(|a| a.revision == revision))
    }

    async fn approvals(&self, cluster: &str) -> Result<Vec<Approval>> {
        self.doc(cluster, |d| {
            d.map(|d| {
                d.spec
                    .approvals
                    .iter()
                    .map(|a| Approval {
                        cluster: cluster.to_string(),
                        revision: a.revision.clone(),
                        approved_by: a.by.clone(),
                        approved_at: a.at,
                        identity: a.identity.clone().unwrap_or_else(|| super::identity_of(&a.by)),
                        groups: a.groups.clone(),
                    })
                    .collect()
            })
            .unwrap_or_default()
        })
        .await
    }

    async fn set_drift(&self, cluster: &str, findings: &[DriftRow]) -> Result<()> {
        let mut rows: Vec<DriftDoc> = findings
            .iter()
            .map(|f| DriftDoc {
                object: f.object.clone(),
                path: f.path.clone(),
                live: f.live.clone(),
                desired: f.desired.clone(),
                found_at: f.found_at,
            })
            .collect();
        rows.sort_by(|a, b| (&a.object, &a.path).cmp(&(&b.object, &b.path)));
        rows.truncate(DRIFT_KEPT);
        let count = findings.len() as i64;
        self.update_status(cluster, move |s| {
            s.drift = rows.clone();
            s.drifted = count;
        })
        .await
    }

    async fn drift(&self, cluster: &str) -> Result<Vec<DriftRow>> {
        self.doc(cluster, |d| {
            d.map(|d| {
                d.status
                    .drift
                    .iter()
                    .map(|f| DriftRow {
                        object: f.object.clone(),
                        path: f.path.clone(),
                        live: f.live.clone(),
                        desired: f.desired.clone(),
                        found_at: f.found_at,
                    })
                    .collect()
            })
            .unwrap_or_default()
        })
        .await
    }

    async fn enqueue(&self, status: &CommitStatus) -> Result<bool> {
        let (status, at, at_ms) = (status.clone(), now(), now_ms());
        self.update_outbox(&status.context.clone(), move |outbox| outbox.enqueue(&status, at, at_ms)).await
    }

    async fn due(&self, now_ms: i64, limit: usize) -> Result<Vec<Queued>> {
        let mut due: Vec<(i64, Queued)> = self
            .in_scope(|outbox| {
                outbox
                    .queued
                    .iter()
                    .zip(outbox.queued())
                    .filter(|(q, _)| q.next_attempt_ms <= now_ms)
                    .map(|(q, queued)| (q.created_at, queued))
                    .collect()
            })
            .await?;
        due.sort_by(|a, b| a.0.cmp(&b.0).then_with(|| a.1.status.context.cmp(&b.1.status.context)));
        Ok(due.into_iter().take(limit).map(|(_, q)| q).collect())
    }

    async fn next_due(&self) -> Result<Option<i64>> {
        Ok(self.in_scope(|outbox| outbox.queued.iter().map(|q| q.next_attempt_ms).collect()).await?.into_iter().min())
    }

    async fn outbox_len(&self) -> Result<i64> {
        Ok(self.in_scope(|outbox| vec![outbox.queued.len() as i64]).await?.iter().sum())
    }

    async fn delivered(&self, status: &CommitStatus) -> Result<()> {
        let (status, at) = (status.clone(), now());
        self.update_outbox(&status.context.clone(), move |outbox| outbox.delivered(&status, at)).await
    }

    async fn retry(&self, status: &CommitStatus, next_ms: i64, error: &str) -> Result<()> {
        let (status, error) = (status.clone(), error.to_string());
        self.update_outbox(&status.context.clone(), move |outbox| outbox.retry(&status, next_ms, &error)).await
    }

    async fn history(&self, cluster: &str, limit: usize) -> Result<Vec<HistoryRow>> {
        self.doc(cluster, |d| {
            d.map(|d| {
                d.status
                    .history
                    .iter()
                    .rev()
                    .take(limit)
                    .map(|h| HistoryRow {
                        revision: h.revision.clone(),
                        result: h.result,
                        summary: h.summary.clone(),
                        at: h.at,
                        count: h.count,
                        since: h.first_at.unwrap_or(h.at),
                    })
                    .collect()
            })
            .unwrap_or_default()
        })
        .await
    }

    async fn prune_delivered(&self, now: i64) -> Result<usize> {
        let cutoff = now - DELIVERED_KEPT_SECS;
        let scope = self.inner.scope.clone();
        // Revisions some cluster runs or holds, and the outboxes with something to forget.
        let (kept, stale, global_stale): (HashSet<String>, BTreeSet<String>, bool) = self
            .read(|cache| {
                let kept: HashSet<String> = cache
                    .docs
                    .values()
                    .flat_map(|d| {
                        [d.status.cluster_revision.clone(), d.status.pending.as_ref().map(|p| p.head_revision.clone())]
                    })
                    .flatten()
                    .collect();
                let old =
                    |outbox: &Outbox| outbox.delivered.iter().any(|d| d.at < cutoff && !kept.contains(&d.revision));
                let stale = cache
                    .docs
                    .iter()
                    .filter(|(name, d)| scope(Some(name)) && old(&d.status.outbox))
                    .map(|(name, _)| name.clone())
                    .collect();
                let global_stale = scope(None) && old(&cache.global.1.outbox);
                (kept, stale, global_stale)
            })
            .await?;
        let kept = Arc::new(kept);
        let mut pruned = 0;
        for name in stale {
            let kept = kept.clone();
            pruned += self.update_status(&name, move |s| s.outbox.prune(cutoff, &kept)).await?;
        }
        if global_stale {
            pruned += self.update_global(move |g| g.outbox.prune(cutoff, &kept)).await?;
        }
        Ok(pruned)
    }

    async fn rollouts(&self) -> Result<Vec<Progress>> {
        self.global(|g| g.rollouts.values().map(StoredRollout::progress).collect()).await
    }

    async fn rollout(&self, name: &str) -> Result<Option<Progress>> {
        self.global(|g| g.rollouts.get(name).map(StoredRollout::progress)).await
    }

    async fn save_rollout(&self, progress: &Progress) -> Result<bool> {
        let (progress, me) = (progress.clone(), self.inner.mgmt.identity.clone());
        // Compared with what the ConfigMap holds when it is written, retried on conflicts: a save
        // based on an older generation is refused whichever replica made the newer one.
        self.update_global(move |g| {
            let stored = g.rollouts.get(&progress.rollout).map_or(0, |r| r.generation);
            if stored != progress.generation {
                return false;
            }
            let generation = stored + 1;
            let (progress, by) = (progress.clone(), me.clone());
            g.rollouts.insert(progress.rollout.clone(), StoredRollout { generation, progress, by });
            true
        })
        .await
    }

    async fn delete_rollout(&self, name: &str) -> Result<()> {
        let name = name.to_string();
        self.update_global(move |g| {
            g.rollouts.remove(&name);
        })
        .await
    }

    async fn audit(&self, entry: &AuditEntry) -> Result<()> {
        let line = serde_json::to_string(entry).expect("an audit entry serialises") + "\n";
        let (inner, day) = (self.inner.clone(), audit_day(entry.at));
        let object = format!("ConfigMaps {}/strata-audit-{day}-*", self.inner.mgmt.namespace);
        self.call(object, async move { inner.append_audit(line, day).await }).await
    }

    async fn audit_log(&self, query: &AuditQuery) -> Result<Vec<AuditEntry>> {
        let (inner, query) = (self.inner.clone(), query.clone());
        let object = format!("ConfigMaps {}/strata-audit-*", self.inner.mgmt.namespace);
        let result =
            self.inner.mgmt.run(CALL_TIMEOUT, async move { inner.read_audit(query).await }).await.unwrap_or_else(
                || Err(store_error(&object, "unreachable", format!("no answer within {}s", CALL_TIMEOUT.as_secs()))),
            );
        self.inner.failures.note(&result, false);
        result
    }

    async fn prune_audit(&self, before_ms: i64, max: u64) -> Result<usize> {
        let inner = self.inner.clone();
        let object = format!("ConfigMaps {}/strata-audit-*", self.inner.mgmt.namespace);
        self.call(object, async move { inner.prune_audit(before_ms, max).await }).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(revision: &str, state: State, description: &str) -> CommitStatus {
        CommitStatus::new(revision, "strata/a".into(), state, description, None)
    }

    #[test]
    fn audit_configmaps_are_named_by_day_and_number() {
        assert_eq!(audit_day(1_795_824_000_000 + 3_661_000), "20261128");
        assert_eq!(audit_shard("strata-audit-20261128-0003"), Some(("20261128".into(), 3)));
        assert_eq!(audit_shard("strata-state"), None);
        // Days sort as text in time order, which pruning relies on.
        assert!(audit_day(0) < audit_day(1_795_824_000_000));
    }

    #[test]
    fn an_outbox_coalesces_keeps_its_age_and_bounds_what_it_remembers() {
        let mut outbox = Outbox::default();
        assert!(outbox.enqueue(&status("r1", State::Pending, "applying"), 10, 10_000));
        assert!(outbox.enqueue(&status("r1", State::Success, "applied"), 20, 20_000));
        assert_eq!(outbox.queued.len(), 1);
        assert_eq!((outbox.queued[0].state.as_str(), outbox.queued[0].created_at), ("success", 10));
        outbox.delivered(&status("r1", State::Success, "applied"), 30);
        assert!(outbox.queued.is_empty());
        assert!(!outbox.enqueue(&status("r1", State::Success, "applied"), 40, 40_000), "already delivered");
        for i in 0..DELIVERED_PER_CLUSTER + 5 {
            outbox.delivered(&status(&format!("x{i}"), State::Success, "applied"), 50 + i as i64);
        }
        assert_eq!(outbox.delivered.len(), DELIVERED_PER_CLUSTER);
        assert_eq!(outbox.delivered.last().unwrap().revision, format!("x{}", DELIVERED_PER_CLUSTER + 4));
        let kept = HashSet::from(["x104".to_string()]);
        assert_eq!(outbox.prune(1000, &kept), DELIVERED_PER_CLUSTER - 1);
    }

    #[test]
    fn resource_versions_compare_as_numbers_when_they_are() {
        assert!(not_older("10", "9"));
        assert!(!not_older("9", "10"));
        assert!(not_older("abc", "10"), "opaque: the newest event wins");
        assert_eq!(cluster_of("strata/aws-cluster"), Some("aws-cluster"));
        assert_eq!(cluster_of("strata/plan/x"), None);
        assert_eq!(cluster_of("ci/build"), None);
    }
}
