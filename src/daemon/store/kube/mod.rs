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
//!   rollouts over many clusters: ConfigMaps strata-progress-*, their clusters' part, named by
//!               strata-state (see [`progress`])
//!
//!   reads  ──> cache, fed by watches (relisted on 410 Gone); none are served before the first list;
//!              whole objects for the clusters this process owns, briefs of the others (a part a
//!              brief leaves out is read from the API server: `KubeStore::doc`)
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
//!
//! The parts: [`documents`], what the objects hold (their shapes as written, and the changes
//! made to them); [`cache`], the watches that keep a copy of them to read from; [`writes`], how a
//! change reaches the API server (conflicts, creation, the audit trail's ConfigMaps);
//! [`progress`], rollout progress in chunks; and here the [`Store`] calls, reading the cache and
//! sending changes from the management thread.

mod cache;
mod documents;
mod progress;
mod writes;

use crate::backoff::{Backoff, Jitter};
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
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
use cache::*;
use documents::*;
use progress::*;
use writes::*;

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

struct Inner {
    mgmt: Arc<Management>,
    states: Api<DynamicObject>,
    configmaps: Api<ConfigMap>,
    cache: RwLock<Cache>,
    /// Both first lists are in (as `Cache::synced` says): reads may be served.
    synced: tokio::sync::watch::Sender<bool>,
    failures: Failures,
    scope: Scope,
    /// The clusters whose ClusterStates the cache holds whole (the rest: their briefs).
    whole: Scope,
    listener: Mutex<Option<IntentListener>>,
    /// The chunks of rollout progress read or written; see [`progress`].
    chunks: Chunks,
}

/// The state in the management cluster; see the module comment.
pub struct KubeStore {
    inner: Arc<Inner>,
}

fn resource() -> ApiResource {
    ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk(GROUP, VERSION, KIND), PLURAL)
}

/// How often a read of rollout progress reads the head again when a chunk it names is gone.
const CHUNK_READS: usize = 4;

/// The cluster a commit status context names (`strata/<cluster>`), if it names one.
fn cluster_of(context: &str) -> Option<&str> {
    context.strip_prefix("strata/").filter(|c| crate::names::is_dns1123_label(c))
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

impl Inner {
    fn object(&self, name: &str) -> String {
        format!("{KIND} {}/{name}", self.mgmt.namespace)
    }
}

impl KubeStore {
    /// Starts watching the state in `mgmt`'s namespace and waits (at most 30 s) for the first
    /// lists; until they are in, reads fail (`unsynced`) and the daemon decides nothing. `scope`:
    /// whose commit statuses this process delivers; `whole`: the clusters whose ClusterStates it
    /// keeps whole (the daemon: both are the clusters it owns), of the others only their briefs.
    pub async fn open(mgmt: Arc<Management>, scope: Scope, whole: Scope) -> KubeStore {
        let inner = Arc::new(Inner {
            states: Api::namespaced_with(mgmt.client.clone(), &mgmt.namespace, &resource()),
            configmaps: mgmt.api(),
            mgmt: mgmt.clone(),
            cache: RwLock::new(Cache::default()),
            synced: tokio::sync::watch::Sender::new(false),
            failures: Failures::default(),
            scope,
            whole,
            listener: Mutex::new(None),
            chunks: Chunks::default(),
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

    async fn held<T>(&self, name: &str, f: impl FnOnce(Option<&Held>) -> T) -> Result<T> {
        self.read(|cache| f(cache.docs.get(name))).await
    }

    /// Reads all of ClusterState `name`: from the cache when it holds it whole, else (a cluster
    /// of another replica's) from the API server.
    async fn doc<T>(&self, name: &str, f: impl FnOnce(Option<&Doc>) -> T) -> Result<T> {
        let mut f = Some(f);
        let cached = self
            .read(|cache| match cache.docs.get(name) {
                Some(Held::Brief(_)) => None,
                held => f.take().map(|f| f(held.and_then(Held::whole))),
            })
            .await?;
        if let Some(read) = cached {
            return Ok(read);
        }
        let (inner, owned) = (self.inner.clone(), name.to_string());
        let doc = self.call(self.inner.object(name), async move { inner.refresh(&owned).await }).await?;
        Ok(f.take().expect("not called yet")(doc.as_ref()))
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

    /// The progress of every rollout (`name`: of that one), its chunks read as needed.
    async fn progress_of(&self, name: Option<&str>) -> Result<Vec<Progress>> {
        let namespace = &self.inner.mgmt.namespace;
        let pick = move |g: &Global| -> Vec<StoredRollout> {
            match name {
                Some(name) => g.rollouts.get(name).cloned().into_iter().collect(),
                None => g.rollouts.values().cloned().collect(),
            }
        };
        for round in 0..CHUNK_READS {
            // From the cache first; after a chunk it named was gone, from the API server itself
            // (the cache may not have heard of the save that let it go yet).
            let heads: Vec<StoredRollout> = if round == 0 {
                self.global(pick).await?
            } else {
                let inner = self.inner.clone();
                let object = format!("ConfigMap {namespace}/{GLOBAL}");
                let read = self.call(object.clone(), async move {
                    inner.configmaps.get_opt(GLOBAL).await.map_err(|e| api_error(&object, &e))
                });
                read.await?.map(|map| pick(&decode_global(&map))).unwrap_or_default()
            };
            let missing: Vec<String> = heads
                .iter()
                .flat_map(|h| &h.chunks)
                .filter(|n| !n.is_empty() && self.inner.chunks.get(n).is_none())
                .cloned()
                .collect();
            if missing.is_empty() {
                if let Some(all) = heads.iter().map(|h| assembled(h, &self.inner.chunks)).collect() {
                    if name.is_none() {
                        self.inner.chunks.keep_only(heads.iter());
                    }
                    return Ok(all);
                }
                continue;
            }
            let inner = self.inner.clone();
            let object = format!("ConfigMaps {namespace}/strata-progress-*");
            // A chunk gone: the head read is older than the save that let it go; read it again.
            self.call(object, async move { inner.read_chunks(missing).await }).await?;
        }
        Err(store_error(
            &format!("ConfigMaps {namespace}/strata-progress-*"),
            "unreadable",
            "rollout progress names chunks that are gone each time it is read: another replica saves it continuously; it is read again at the next evaluation",
        ))
    }

    /// Deletes chunks no head names any more; a failure is left to the housekeeping's sweep.
    async fn delete_chunks(&self, names: Vec<String>) {
        if names.is_empty() {
            return;
        }
        let inner = self.inner.clone();
        let object = format!("ConfigMaps {}/strata-progress-*", self.inner.mgmt.namespace);
        if let Err(e) = self.call(object, async move { inner.delete_chunks(names).await }).await {
            warn!(error = %e, "Rollout progress: chunks no longer used were not deleted; the hourly sweep deletes them.");
        }
    }

    /// Deletes the chunks no rollout names that are older than [`ORPHAN_AGE`] at `now`
    /// (seconds): left by a save that was cut off. How many.
    async fn sweep_chunks(&self, now: i64) -> Result<usize> {
        let inner = self.inner.clone();
        let namespace = self.inner.mgmt.namespace.clone();
        self.call(format!("ConfigMap {namespace}/{GLOBAL}"), async move { inner.refresh_global().await }).await?;
        let inner = self.inner.clone();
        let object = format!("ConfigMaps {namespace}/strata-progress-*");
        let listed = self.call(object.clone(), async move { inner.list_chunks().await }).await?;
        let named: HashSet<String> =
            self.global(|g| g.rollouts.values().flat_map(|r| r.chunks.iter().cloned()).collect()).await?;
        let cutoff = now * 1000 - ORPHAN_AGE.as_millis() as i64;
        let orphans: Vec<String> = listed
            .into_iter()
            .filter(|(name, created)| !named.contains(name) && created.is_some_and(|at| at < cutoff))
            .map(|(name, _)| name)
            .collect();
        let count = orphans.len();
        if count > 0 {
            let inner = self.inner.clone();
            self.call(object, async move { inner.delete_chunks(orphans).await }).await?;
        }
        Ok(count)
    }

    /// The statuses queued in the outboxes this process delivers from.
    async fn in_scope<T>(&self, f: impl Fn(&[QueuedDoc]) -> Vec<T>) -> Result<Vec<T>> {
        let scope = self.inner.scope.clone();
        self.read(|cache| {
            let mut all: Vec<T> = Vec::new();
            for (name, held) in &cache.docs {
                if !held.queued().is_empty() && scope(Some(name)) {
                    all.extend(f(held.queued()));
                }
            }
            if scope(None) {
                all.extend(f(&cache.global.1.outbox.queued));
            }
            all
        })
        .await
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
        self.held(name, |h| h.filter(|h| h.known()).map(|h| h.state(name))).await
    }

    async fn clusters(&self) -> Result<Vec<ClusterState>> {
        self.read(|cache| cache.docs.iter().filter(|(_, h)| h.known()).map(|(name, h)| h.state(name)).collect()).await
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
        let known = self.held(name, |h| h.is_some_and(Held::known)).await?;
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
            cache
                .docs
                .iter()
                .filter(|(_, h)| h.known())
                .map(|(name, h)| (h.state(name), h.pending_brief(name)))
                .collect()
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
        if self.held(cluster, |h| h.is_none_or(|h| !h.has_pending())).await? {
            return Ok(());
        }
        self.update_status(cluster, |s| s.pending = None).await
    }

    async fn pending_count(&self) -> Result<i64> {
        self.read(|cache| cache.docs.values().filter(|h| h.has_pending()).count() as i64).await
    }

    async fn pendings(&self) -> Result<Vec<Pending>> {
        self.read(|cache| {
            cache.docs.iter().filter(|(_, h)| h.known()).filter_map(|(name, h)| h.pending_brief(name)).collect()
        })
        .await
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
        self.held(cluster, |h| {
            h.map(|h| {
                h.spec()
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

    async fn drift_at(&self, cluster: &str) -> Result<Option<i64>> {
        self.held(cluster, |h| h.and_then(Held::drift_at)).await
    }

    async fn enqueue(&self, status: &CommitStatus) -> Result<bool> {
        let (status, at, at_ms) = (status.clone(), now(), now_ms());
        self.update_outbox(&status.context.clone(), move |outbox| outbox.enqueue(&status, at, at_ms)).await
    }

    async fn due(&self, now_ms: i64, limit: usize) -> Result<Vec<Queued>> {
        let mut due: Vec<(i64, Queued)> = self
            .in_scope(|queued| {
                queued.iter().filter(|q| q.next_attempt_ms <= now_ms).map(|q| (q.created_at, q.queued())).collect()
            })
            .await?;
        due.sort_by(|a, b| a.0.cmp(&b.0).then_with(|| a.1.status.context.cmp(&b.1.status.context)));
        Ok(due.into_iter().take(limit).map(|(_, q)| q).collect())
    }

    async fn next_due(&self) -> Result<Option<i64>> {
        Ok(self.in_scope(|queued| queued.iter().map(|q| q.next_attempt_ms).collect()).await?.into_iter().min())
    }

    async fn outbox_len(&self) -> Result<i64> {
        Ok(self.in_scope(|queued| vec![queued.len() as i64]).await?.iter().sum())
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
        let (scope, whole) = (self.inner.scope.clone(), self.inner.whole.clone());
        // Clusters no longer owned (their shards moved away) keep only their briefs from now on.
        self.inner.cache_mut().demote(|name| whole(Some(name)));
        // Revisions some cluster runs or holds, and the outboxes with something to forget (a
        // cluster held as its brief is read whole when it may have some).
        let (kept, stale, global_stale): (HashSet<String>, BTreeSet<String>, bool) = self
            .read(|cache| {
                let kept: HashSet<String> =
                    cache.docs.values().flat_map(|h| h.revisions()).flatten().map(str::to_string).collect();
                let stale = cache
                    .docs
                    .iter()
                    .filter(|(name, h)| scope(Some(name)) && h.forgets(cutoff, &kept))
                    .map(|(name, _)| name.clone())
                    .collect();
                let global = &cache.global.1.outbox;
                let global_stale =
                    scope(None) && global.delivered.iter().any(|d| d.at < cutoff && !kept.contains(&d.revision));
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
        if scope(None) {
            match self.sweep_chunks(now).await {
                Ok(0) => {}
                Ok(swept) => {
                    tracing::info!(chunks = swept, "Deleted rollout progress chunks a cut-off save left behind.")
                }
                Err(e) => {
                    warn!(error = %e, "Rollout progress chunks no rollout names were not swept; tried again in an hour.")
                }
            }
        }
        Ok(pruned)
    }

    async fn rollouts(&self) -> Result<Vec<Progress>> {
        self.progress_of(None).await
    }

    async fn rollout(&self, name: &str) -> Result<Option<Progress>> {
        Ok(self.progress_of(Some(name)).await?.pop())
    }

    async fn save_rollout(&self, progress: &Progress) -> Result<bool> {
        let me = self.inner.mgmt.identity.clone();
        let before = self.global(|g| g.rollouts.get(&progress.rollout).cloned()).await?;
        if before.as_ref().map_or(0, |r| r.generation) != progress.generation {
            return Ok(false);
        }
        // The clusters inline when they are few, else in chunks: those that changed made first,
        // under names of this save's own, so that the head, swapped in last, names only chunks
        // that exist.
        let mut head = progress.clone();
        let clusters = std::mem::take(&mut head.clusters);
        let (mut chunks, mut made_names) = (Vec::new(), Vec::new());
        if clusters.len() <= INLINE_CLUSTERS && encoded(&clusters).len() <= INLINE_BYTES {
            head.clusters = clusters;
        } else {
            let old = before.map(|r| r.chunks).unwrap_or_default();
            let save = save_id(&me);
            let made;
            (chunks, made) = chunks_for(
                &clusters,
                &old,
                |name| self.inner.chunks.get(name),
                |i| chunk_name(&head.rollout, &save, i),
            );
            made_names = made.iter().map(|(name, _, _)| name.clone()).collect();
            let (inner, rollout) = (self.inner.clone(), head.rollout.clone());
            let object = format!("ConfigMaps {}/strata-progress-*", self.inner.mgmt.namespace);
            if let Err(e) = self.call(object, async move { inner.create_chunks(&rollout, made).await }).await {
                // Not named by any head: those that were made go now (or with the sweep).
                self.delete_chunks(made_names).await;
                return Err(e);
            }
        }
        let (rollout, generation, named) = (head.rollout.clone(), head.generation, chunks.clone());
        // Compared with what the ConfigMap holds when it is written, retried on conflicts: a save
        // based on an older generation is refused whichever replica made the newer one.
        let swapped = self
            .update_global(move |g| {
                let stored = g.rollouts.get(&rollout);
                if stored.map_or(0, |r| r.generation) != generation {
                    return None;
                }
                let left = stored.map(|r| r.chunks.clone()).unwrap_or_default();
                let stored = StoredRollout {
                    generation: generation + 1,
                    progress: head.clone(),
                    by: me.clone(),
                    chunks: named.clone(),
                };
                g.rollouts.insert(rollout.clone(), stored);
                Some(left)
            })
            .await?;
        // Whether a save that failed landed is not known: what it made is swept if no head names it.
        match swapped {
            Some(left) => {
                self.delete_chunks(left.into_iter().filter(|n| !n.is_empty() && !chunks.contains(n)).collect()).await;
                Ok(true)
            }
            None => {
                self.delete_chunks(made_names).await;
                Ok(false)
            }
        }
    }

    async fn delete_rollout(&self, name: &str) -> Result<()> {
        let name = name.to_string();
        let left = self.update_global(move |g| g.rollouts.remove(&name).map(|r| r.chunks).unwrap_or_default()).await?;
        self.delete_chunks(left.into_iter().filter(|n| !n.is_empty()).collect()).await;
        Ok(())
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

    #[test]
    fn statuses_name_their_cluster_by_context() {
        assert_eq!(cluster_of("strata/aws-cluster"), Some("aws-cluster"));
        assert_eq!(cluster_of("strata/plan/x"), None);
        assert_eq!(cluster_of("ci/build"), None);
    }
}
