//! The store suite: every behaviour of the daemon's state, run against both backends — SQLite in
//! a temporary directory, and the Kubernetes backend on the API server stand-in with the CRD of
//! `deploy/kubernetes/`. "Reopening" is a second handle onto the same state: for SQLite the same
//! file, for Kubernetes a second replica.

use crate::common;
use std::collections::BTreeSet;

use std::sync::Arc;
use std::time::Duration;

use strata::config::{KubernetesConfig, TargetConfig};
use strata::daemon::decide::Hold;
use strata::daemon::management::Management;
use strata::daemon::state::{Health, RevisionState, Sync, Verdict};
use strata::daemon::store::kube::KubeStore;
use strata::daemon::store::{
    AnyStore, Applied, Approval, Approver, AuditEntry, AuditQuery, ClusterState, DELIVERED_KEPT_SECS, DriftRow,
    FleetRow, HISTORY_KEPT, HistoryRow, IntentListener, ObjectRow, Pending, Queued, Result, SqliteStore, Store, now,
    now_ms,
};
use strata::report::{State, Status};
use strata::rollout::gate::Progress;

/// A handle onto the state: a store and a runtime of its own that each call waits on, so the
/// suite reads as the sequence of calls it makes (from one thread, or several at once).
struct Handle {
    store: AnyStore,
    runtime: tokio::runtime::Runtime,
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap()
}

/// Each [`Store`] call of the handle, waited for.
macro_rules! waited {
    ($($name:ident($($arg:ident: $ty:ty),*) -> $out:ty;)*) => {
        impl Handle {
            $(fn $name(&self, $($arg: $ty),*) -> Result<$out> {
                self.runtime.block_on(self.store.$name($($arg),*))
            })*
        }
    };
}

waited! {
    probe() -> ();
    meta(key: &str) -> Option<String>;
    set_meta(key: &str, value: &str) -> ();
    revision() -> Option<RevisionState>;
    set_revision(head: &str, verdict: Verdict, message: Option<&str>) -> ();
    cluster(name: &str) -> Option<ClusterState>;
    clusters() -> Vec<ClusterState>;
    record_applied(name: &str, applied: &Applied<'_>) -> ();
    seed(name: &str, revision: &str, digest: &str, profile: &str, version: &str) -> bool;
    set_sync(name: &str, sync: Sync, message: Option<&str>, revision: Option<&str>) -> ();
    set_suspended(name: &str, suspended: bool) -> ();
    set_objects(cluster: &str, objects: &[ObjectRow]) -> ();
    objects(cluster: &str) -> Vec<ObjectRow>;
    fleet() -> Vec<FleetRow>;
    pending(cluster: &str) -> Option<Pending>;
    set_pending(pending: &Pending) -> ();
    clear_pending(cluster: &str) -> ();
    pending_count() -> i64;
    approve(cluster: &str, revision: &str, by: &Approver) -> Approval;
    approval(cluster: &str, revision: &str) -> Option<Approval>;
    approvals(cluster: &str) -> Vec<Approval>;
    set_drift(cluster: &str, findings: &[DriftRow]) -> ();
    drift(cluster: &str) -> Vec<DriftRow>;
    enqueue(status: &Status) -> bool;
    due(now_ms: i64, limit: usize) -> Vec<Queued>;
    next_due() -> Option<i64>;
    outbox_len() -> i64;
    delivered(status: &Status) -> ();
    retry(status: &Status, next_ms: i64, error: &str) -> ();
    history(cluster: &str, limit: usize) -> Vec<HistoryRow>;
    prune_delivered(now: i64) -> usize;
    rollouts() -> Vec<Progress>;
    rollout(name: &str) -> Option<Progress>;
    save_rollout(progress: &Progress) -> bool;
    delete_rollout(name: &str) -> ();
    audit(entry: &AuditEntry) -> ();
    audit_log(query: &AuditQuery) -> Vec<AuditEntry>;
    prune_audit(before_ms: i64, max: u64) -> usize;
}

impl Handle {
    fn states_marked(&self) -> Result<(std::sync::Arc<strata::daemon::store::States>, Option<u64>)> {
        self.runtime.block_on(self.store.states_marked())
    }
    fn written_since(&self, mark: u64) -> Option<Vec<String>> {
        self.store.written_since(mark)
    }
    fn problem(&self) -> Option<String> {
        self.store.problem()
    }
    fn usable(&self) -> bool {
        self.store.usable()
    }
    fn on_intent(&self, listener: IntentListener) {
        self.store.on_intent(listener)
    }
}

/// One backend: opens handles onto one shared state.
trait Backend {
    fn open(&self) -> Handle;
    fn name(&self) -> &'static str;
    /// The management cluster's kubeconfig, for a backend that has one.
    fn kubeconfig(&self) -> Option<&std::path::Path> {
        None
    }
}

struct Sqlite(tempfile::TempDir);

impl Backend for Sqlite {
    fn open(&self) -> Handle {
        Handle { store: AnyStore::Sqlite(SqliteStore::open(self.0.path()).unwrap()), runtime: runtime() }
    }
    fn name(&self) -> &'static str {
        "sqlite"
    }
}

/// `whole`: its handles keep every ClusterState whole, as a replica does those of the clusters
/// it owns; else only their briefs, as of the clusters of other replicas (the rest read from the
/// API server when asked for).
struct Kubernetes {
    _kube: common::kubemode::KubeMode,
    kubeconfig: std::path::PathBuf,
    whole: bool,
}

impl Kubernetes {
    fn start() -> Kubernetes {
        let kube = common::kubemode::KubeMode::start();
        let kubeconfig = kube.mgmt_kubeconfig();
        Kubernetes { _kube: kube, kubeconfig, whole: true }
    }

    fn briefs() -> Kubernetes {
        Kubernetes { whole: false, ..Kubernetes::start() }
    }

    /// A handle that keeps whole the ClusterStates of the clusters it owns (`whole`) or none.
    fn open_with(&self, whole: bool) -> Handle {
        let runtime = runtime();
        let whole: strata::daemon::store::kube::Scope = Arc::new(move |_| whole);
        let store = runtime.block_on(KubeStore::open(self.management(), Arc::new(|_| true), whole));
        Handle { store: AnyStore::Kube(store), runtime }
    }

    fn management(&self) -> Arc<Management> {
        let config = KubernetesConfig {
            connection: TargetConfig::Kubeconfig { path: self.kubeconfig.clone(), context: None },
            namespace: Some(common::kubernetes::NAMESPACE.into()),
            cluster_secrets: false,
        };
        let network = Arc::new(strata::net::Network::new(None).unwrap());
        Management::connect(&config, &network, "strata.yaml").unwrap()
    }
}

impl Backend for Kubernetes {
    fn open(&self) -> Handle {
        self.open_with(self.whole)
    }
    fn name(&self) -> &'static str {
        if self.whole { "kubernetes" } else { "kubernetes, briefs" }
    }
    fn kubeconfig(&self) -> Option<&std::path::Path> {
        Some(&self.kubeconfig)
    }
}

/// Runs `case` on both backends (the Kubernetes one twice: its handles holding every
/// ClusterState whole, and holding only briefs).
fn both(case: impl Fn(&dyn Backend)) {
    let sqlite = Sqlite(tempfile::tempdir().unwrap());
    case(&sqlite);
    let kubernetes = Kubernetes::start();
    case(&kubernetes);
    case(&Kubernetes::briefs());
}

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

fn pending(cluster: &str, head: &str, since: i64) -> Pending {
    Pending {
        cluster: cluster.into(),
        base_revision: "r1".into(),
        head_revision: head.into(),
        hold: Hold::Approval,
        summary: "pending update aws-profile@1.0.0".into(),
        diff: "-  replicas: 1\n+  replicas: 3\n".into(),
        since,
        base_digest: Some("sha256:base".into()),
    }
}

/// Waits until a second handle sees what the first wrote (at once for SQLite; once the watch
/// delivers it for Kubernetes).
#[track_caller]
fn eventually(what: &str, done: impl FnMut() -> bool) {
    common::wait_until_with(what, Duration::from_secs(20), Duration::from_millis(20), done, |held| *held, String::new);
}

#[test]
fn applied_state_pending_updates_approvals_and_suspensions_are_kept() {
    both(|backend| {
        let b = backend.name();
        {
            let store = backend.open();
            store.record_applied("aws", &applied("r1")).unwrap();
            store.set_pending(&pending("aws", "r2", 100)).unwrap();
            let approval = store.approve("aws", "r2", &Approver::named("alice")).unwrap();
            assert_eq!((approval.cluster.as_str(), approval.approved_by.as_str()), ("aws", "alice"));
            store.set_suspended("edge", true).unwrap();
            store.set_objects("aws", &[("Deployment/web/ui".into(), "web".into(), "created".into())]).unwrap();
        }
        let store = backend.open();
        eventually("the second handle to see the writes", || {
            store.cluster("edge").unwrap().is_some_and(|e| e.suspended)
                && store.approval("aws", "r2").unwrap().is_some()
        });
        let aws = store.cluster("aws").unwrap().unwrap();
        assert_eq!(aws.profile_revision.as_deref(), Some("r1"), "{b}");
        assert_eq!(
            (aws.sync, aws.health, aws.message.as_deref()),
            (Sync::Applied, Some(Health::Ready), Some("3 created")),
            "{b}"
        );
        assert_eq!((aws.profile.as_deref(), aws.version.as_deref()), (Some("aws-profile"), Some("1.0.0")), "{b}");
        assert!(aws.applied_at.is_some(), "{b}");
        let p = store.pending("aws").unwrap().unwrap();
        assert_eq!((p.hold, p.head_revision.as_str(), p.since), (Hold::Approval, "r2", 100), "{b}");
        assert_eq!(store.approval("aws", "r2").unwrap().unwrap().approved_by, "alice", "{b}");
        assert_eq!(store.approval("aws", "r3").unwrap(), None, "{b}");
        assert_eq!(store.approvals("aws").unwrap().len(), 1, "{b}");
        assert_eq!(store.history("aws", 10).unwrap().len(), 1, "{b}");
        assert_eq!(
            store.objects("aws").unwrap(),
            [("Deployment/web/ui".to_string(), "web".to_string(), "created".to_string())],
            "{b}"
        );
        assert_eq!(store.pending_count().unwrap(), 1, "{b}");
        let fleet = store.fleet().unwrap();
        assert_eq!(fleet.iter().map(|(c, _)| c.name.as_str()).collect::<Vec<_>>(), ["aws", "edge"], "{b}: by name");
        assert_eq!(fleet[0].1.as_ref().map(|p| p.head_revision.as_str()), Some("r2"), "{b}");
        assert_eq!(store.clusters().unwrap().len(), 2, "{b}");
        assert_eq!(store.cluster("nowhere").unwrap(), None, "{b}");
        assert!(store.problem().is_none() && store.usable(), "{b}");
    });
}

/// What an evaluation at 100,000 clusters looks at instead of every state: the clusters written
/// since its mark, each once, and no other; a backend that keeps no such account says so.
#[test]
fn the_states_written_since_a_mark_are_named() {
    both(|backend| {
        let b = backend.name();
        let store = backend.open();
        store.record_applied("quiet", &applied("r1")).unwrap();
        let (states, mark) = store.states_marked().unwrap();
        assert!(states.contains_key("quiet"), "{b}");
        let Some(mark) = mark else {
            assert!(b.starts_with("kubernetes"), "SQLite keeps an account of its writes");
            return;
        };
        assert_eq!(store.written_since(mark), Some(vec![]), "{b}");
        store.record_applied("b", &applied("r2")).unwrap();
        store.set_sync("a", Sync::Failed, Some("unreachable"), Some("r2")).unwrap();
        store.set_suspended("b", true).unwrap();
        assert_eq!(store.written_since(mark), Some(vec!["a".to_string(), "b".to_string()]), "{b}");
        let (states, later) = store.states_marked().unwrap();
        let later = later.unwrap();
        assert!(states["b"].suspended && states["a"].sync == Sync::Failed, "{b}");
        assert_eq!(store.written_since(later), Some(vec![]), "{b}");
        assert_eq!(store.written_since(mark), Some(vec!["a".to_string(), "b".to_string()]), "{b}: still known");
        // A mark from another process's account is not one of this one's.
        assert_eq!(store.written_since(later + 1_000), None, "{b}");
    });
}

#[test]
fn failures_history_and_sync_states() {
    both(|backend| {
        let b = backend.name();
        let store = backend.open();
        for i in 0..HISTORY_KEPT + 10 {
            store.record_applied("aws", &applied(&format!("r{i}"))).unwrap();
        }
        store.set_sync("edge", Sync::Failed, Some("unreachable"), Some("r0")).unwrap();
        store.set_sync("edge", Sync::Applying, None, Some("r1")).unwrap();
        assert_eq!(store.history("aws", 1000).unwrap().len(), HISTORY_KEPT, "{b}");
        let edge = store.history("edge", 1000).unwrap();
        assert_eq!(edge.len(), 1, "{b}: applying leaves no row");
        assert_eq!(
            (edge[0].result, edge[0].revision.as_deref(), edge[0].summary.as_str()),
            (Sync::Failed, Some("r0"), "unreachable"),
            "{b}"
        );
        let state = store.cluster("edge").unwrap().unwrap();
        assert_eq!((state.sync, state.message), (Sync::Applying, None), "{b}");
        assert_eq!(state.digest, None, "{b}: never applied");
        // Newest first.
        store.set_sync("aws", Sync::Error, Some("does not render"), Some("r9")).unwrap();
        assert_eq!(store.history("aws", 1).unwrap()[0].revision.as_deref(), Some("r9"), "{b}");
    });
}

#[test]
fn retries_collapse_into_one_entry_and_never_push_real_events_out() {
    both(|backend| {
        let b = backend.name();
        let store = backend.open();
        store.record_applied("aws", &applied("r1")).unwrap();
        assert_eq!(store.cluster("aws").unwrap().unwrap().health, Some(Health::Ready), "{b}");
        // A cluster that cannot be reached, retried with backoff far more often than the
        // history holds entries.
        for i in 0..HISTORY_KEPT * 3 {
            store.set_sync("aws", Sync::Failed, Some(&format!("unreachable (attempt {})", i + 1)), Some("r2")).unwrap();
        }
        // A failed apply never shows as healthy.
        let state = store.cluster("aws").unwrap().unwrap();
        assert_eq!((state.sync, state.health), (Sync::Failed, None), "{b}: health unknown after a failure");
        let history = store.history("aws", 1000).unwrap();
        assert_eq!(history.len(), 2, "{b}: the apply of r1 is still there: {history:?}");
        let (retries, first) = (&history[0], &history[1]);
        assert_eq!(
            (retries.result, retries.revision.as_deref(), retries.count),
            (Sync::Failed, Some("r2"), 150),
            "{b}"
        );
        assert_eq!(retries.summary, "unreachable (attempt 150)", "{b}: the latest message");
        assert!(retries.since <= retries.at, "{b}");
        assert_eq!((first.result, first.revision.as_deref(), first.count), (Sync::Applied, Some("r1"), 1), "{b}");
        // Another revision failing, or the same one failing another way, is an event of its own.
        store.set_sync("aws", Sync::Error, Some("does not render"), Some("r2")).unwrap();
        store.set_sync("aws", Sync::Failed, Some("unreachable"), Some("r3")).unwrap();
        store.set_sync("aws", Sync::Failed, Some("unreachable"), Some("r3")).unwrap();
        let history = store.history("aws", 1000).unwrap();
        let seen: Vec<_> = history.iter().map(|h| (h.result, h.revision.as_deref().unwrap(), h.count)).collect();
        assert_eq!(
            seen,
            [(Sync::Failed, "r3", 2), (Sync::Error, "r2", 1), (Sync::Failed, "r2", 150), (Sync::Applied, "r1", 1)],
            "{b}"
        );
        // Applied again: healthy again.
        store.record_applied("aws", &applied("r3")).unwrap();
        assert_eq!(store.cluster("aws").unwrap().unwrap().health, Some(Health::Ready), "{b}");
    });
}

#[test]
fn what_an_inventory_says_is_taken_only_for_clusters_the_store_does_not_know() {
    both(|backend| {
        let b = backend.name();
        let store = backend.open();
        store.set_suspended("edge", true).unwrap();
        assert!(store.seed("edge", "r1", "sha256:e", "edge-profile", "2.0.0").unwrap(), "{b}");
        let edge = store.cluster("edge").unwrap().unwrap();
        assert_eq!((edge.digest.as_deref(), edge.cluster_revision.as_deref()), (Some("sha256:e"), Some("r1")), "{b}");
        assert!(edge.suspended, "{b}: kept");
        store.record_applied("aws", &applied("r2")).unwrap();
        assert!(!store.seed("aws", "r1", "sha256:old", "aws-profile", "1.0.0").unwrap(), "{b}");
        assert_eq!(store.cluster("aws").unwrap().unwrap().digest.as_deref(), Some("sha256:a"), "{b}");
        assert!(store.seed("lab", "r1", "sha256:l", "lab-profile", "1.0.0").unwrap(), "{b}");
        let lab = store.cluster("lab").unwrap().unwrap();
        assert_eq!(
            (lab.sync, lab.message.as_deref()),
            (Sync::Applied, Some("taken from the cluster's inventory")),
            "{b}"
        );
    });
}

#[test]
fn a_pending_update_keeps_its_age_until_the_head_moves() {
    both(|backend| {
        let b = backend.name();
        let store = backend.open();
        let mut p = Pending { hold: Hold::Window { window: "Sat 02:00-06:00 UTC".into() }, ..pending("c", "r2", 100) };
        store.set_pending(&p).unwrap();
        p.since = 200;
        store.set_pending(&p).unwrap();
        assert_eq!(store.pending("c").unwrap().unwrap().since, 100, "{b}");
        p.head_revision = "r3".into();
        store.set_pending(&p).unwrap();
        let stored = store.pending("c").unwrap().unwrap();
        assert_eq!((stored.since, stored.hold), (200, Hold::Window { window: "Sat 02:00-06:00 UTC".into() }), "{b}");
        store.clear_pending("c").unwrap();
        assert_eq!(store.pending("c").unwrap(), None, "{b}");
        store.clear_pending("never-seen").unwrap();
        assert_eq!(store.pending_count().unwrap(), 0, "{b}");
    });
}

#[test]
fn drift_findings_are_replaced_and_counted() {
    both(|backend| {
        let b = backend.name();
        let store = backend.open();
        store.record_applied("c", &applied("r1")).unwrap();
        let row = |object: &str, path: &str| DriftRow {
            object: object.into(),
            path: path.into(),
            live: Some("5".into()),
            desired: Some("2".into()),
            found_at: 7,
        };
        store.set_drift("c", &[row("Deployment/web/ui", "/spec/replicas"), row("ConfigMap/web/a", "/data/x")]).unwrap();
        let found = store.drift("c").unwrap();
        assert_eq!(
            found.iter().map(|r| r.object.as_str()).collect::<Vec<_>>(),
            ["ConfigMap/web/a", "Deployment/web/ui"],
            "{b}: by object"
        );
        assert_eq!(found[1], row("Deployment/web/ui", "/spec/replicas"), "{b}");
        assert_eq!(store.cluster("c").unwrap().unwrap().drifted, 2, "{b}");
        store.set_drift("c", &[]).unwrap();
        assert!(store.drift("c").unwrap().is_empty(), "{b}");
        assert_eq!(store.cluster("c").unwrap().unwrap().drifted, 0, "{b}");
    });
}

#[test]
fn the_outbox_coalesces_skips_what_was_delivered_and_forgets_old_deliveries() {
    both(|backend| {
        let b = backend.name();
        let store = backend.open();
        let applying = Status::new("r1", "strata/a".into(), State::Pending, "applying", None);
        let applied_status = Status::new("r1", "strata/a".into(), State::Success, "applied", Some("http://v/a".into()));
        assert!(store.enqueue(&applying).unwrap(), "{b}");
        assert!(store.enqueue(&applied_status).unwrap(), "{b}");
        let due = store.due(now_ms(), 10).unwrap();
        assert_eq!(due.len(), 1, "{b}: the newer state replaces the older");
        assert_eq!(
            (due[0].status.state, due[0].status.target_url.as_deref()),
            (State::Success, Some("http://v/a")),
            "{b}"
        );
        assert_eq!(store.outbox_len().unwrap(), 1, "{b}");
        store.delivered(&applied_status).unwrap();
        assert_eq!(store.outbox_len().unwrap(), 0, "{b}");
        assert!(!store.enqueue(&applied_status).unwrap(), "{b}: already on the forge");
        assert!(store.enqueue(&applying).unwrap(), "{b}");
        store.retry(&applying, now_ms() + 60_000, "503").unwrap();
        assert!(store.due(now_ms(), 10).unwrap().is_empty(), "{b}");
        assert!(store.next_due().unwrap().unwrap() > now_ms(), "{b}");
        assert_eq!(store.due(now_ms() + 120_000, 10).unwrap()[0].attempts, 1, "{b}");
        // A status naming no cluster has a queue too.
        let plan = Status::new("r7", "ci/plan".into(), State::Success, "planned", None);
        assert!(store.enqueue(&plan).unwrap(), "{b}");
        assert_eq!(store.outbox_len().unwrap(), 2, "{b}");
        assert!(store.cluster("a").unwrap().is_none(), "{b}: statuses alone make no cluster");

        // Forgetting: what clusters run (aws runs r1) or hold stays, however old.
        store.record_applied("aws", &applied("r1")).unwrap();
        store.delivered(&Status::new("r0", "strata/aws".into(), State::Success, "applied", None)).unwrap();
        store.delivered(&Status::new("r1", "strata/aws".into(), State::Success, "applied", None)).unwrap();
        assert_eq!(store.prune_delivered(now()).unwrap(), 0, "{b}: recent");
        // r0 goes; r1 stays for both contexts, since aws runs it.
        assert_eq!(store.prune_delivered(now() + DELIVERED_KEPT_SECS + 1).unwrap(), 1, "{b}");
        let again = Status::new("r1", "strata/aws".into(), State::Success, "applied", None);
        assert!(!store.enqueue(&again).unwrap(), "{b}: still known as delivered");
    });
}

#[test]
fn the_revision_evaluated_and_meta() {
    both(|backend| {
        let b = backend.name();
        let store = backend.open();
        assert_eq!(store.revision().unwrap(), None, "{b}");
        store.set_revision("r1", Verdict::Loaded, None).unwrap();
        store.set_revision("r2", Verdict::Rejected, Some("error[schema]: x")).unwrap();
        let revision = store.revision().unwrap().unwrap();
        assert_eq!(
            (revision.head.as_str(), revision.verdict, revision.last_good.as_deref()),
            ("r2", Verdict::Rejected, Some("r1")),
            "{b}"
        );
        assert_eq!(revision.message.as_deref(), Some("error[schema]: x"), "{b}");
        store.set_revision("r3", Verdict::Loaded, None).unwrap();
        assert_eq!(store.revision().unwrap().unwrap().last_good.as_deref(), Some("r3"), "{b}");
        assert_eq!(store.meta("pull-request:4").unwrap(), None, "{b}");
        store.set_meta("pull-request:4", "abc").unwrap();
        store.set_meta("pull-request:4", "def").unwrap();
        assert_eq!(store.meta("pull-request:4").unwrap().as_deref(), Some("def"), "{b}");
        store.probe().unwrap();
    });
}

/// Two handles write the same clusters at once — one recording applies and drift the way the
/// shard's owner does, the other approving and suspending the way the API of any replica does.
/// Every write of both is there at the end: none lost to the other.
#[test]
fn concurrent_writers_lose_no_update() {
    both(|backend| {
        let b = backend.name();
        let (owner, api) = (backend.open(), backend.open());
        owner.record_applied("c", &applied("r0")).unwrap();
        eventually("the API handle to see the cluster", || api.cluster("c").unwrap().is_some());
        const N: usize = 25;
        std::thread::scope(|scope| {
            scope.spawn(|| {
                for i in 0..N {
                    owner.set_sync("c", Sync::Failed, Some(&format!("failure {i}")), Some("r0")).unwrap();
                    owner.set_pending(&pending("c", &format!("h{i}"), i as i64)).unwrap();
                }
            });
            scope.spawn(|| {
                for i in 0..N {
                    api.approve("c", &format!("h{i}"), &Approver::named("alice")).unwrap();
                    api.set_suspended("c", i % 2 == 0).unwrap();
                }
            });
        });
        let check = backend.open();
        eventually("every write to arrive", || check.approvals("c").unwrap().len() == N);
        let approvals: Vec<String> = check.approvals("c").unwrap().into_iter().map(|a| a.revision).collect();
        assert_eq!(approvals, (0..N).map(|i| format!("h{i}")).collect::<Vec<_>>(), "{b}: every approval, in order");
        let history = check.history("c", 1000).unwrap();
        // The failures of one revision are one entry that counts them all.
        let failed: Vec<_> = history.iter().filter(|h| h.result == Sync::Failed).collect();
        assert_eq!(failed.iter().map(|h| h.count as usize).sum::<usize>(), N, "{b}: every failure");
        assert_eq!(failed.len(), 1, "{b}: retries of r0 collapse");
        let state = check.cluster("c").unwrap().unwrap();
        assert_eq!((state.suspended, state.message.as_deref()), (true, Some("failure 24")), "{b}: the last of each");
        assert_eq!(check.pending("c").unwrap().unwrap().head_revision, "h24", "{b}");
    });
}

fn progress(rollout: &str, next: &str, generation: u64) -> Progress {
    let mut p: Progress = serde_json::from_value(serde_json::json!({
        "rollout": rollout, "revision": "r1", "started_at": 1_000, "state": "progressing",
        "waves": [], "clusters": {}, "next": next,
    }))
    .unwrap();
    p.generation = generation;
    p
}

/// Rollout progress is saved only from the generation it was read at, whichever handle (replica)
/// saved the newer one; two handles racing from one generation: exactly one wins each round.
#[test]
fn rollout_progress_is_saved_from_the_generation_it_was_read_at() {
    both(|backend| {
        let b = backend.name();
        let (one, two) = (backend.open(), backend.open());
        assert!(one.rollouts().unwrap().is_empty(), "{b}");
        assert!(one.save_rollout(&progress("canary", "wave 1", 0)).unwrap(), "{b}: the first save");
        assert!(!one.save_rollout(&progress("canary", "again", 0)).unwrap(), "{b}: from a stale generation");
        eventually("the other handle to see it", || two.rollout("canary").unwrap().is_some());
        let read = two.rollout("canary").unwrap().unwrap();
        assert_eq!((read.generation, read.next.as_str()), (1, "wave 1"), "{b}");
        assert!(two.save_rollout(&progress("canary", "wave 2", 1)).unwrap(), "{b}");
        eventually("the first handle to see generation 2", || {
            one.rollout("canary").unwrap().is_some_and(|p| p.generation == 2 && p.next == "wave 2")
        });

        // Racing from one generation, round after round: one save wins each time.
        const ROUNDS: u64 = 10;
        let wins = std::sync::atomic::AtomicU64::new(0);
        for round in 0..ROUNDS {
            let generation = 2 + round;
            for handle in [&one, &two] {
                eventually("both handles at the round's generation", || {
                    handle.rollout("canary").unwrap().is_some_and(|p| p.generation == generation)
                });
            }
            std::thread::scope(|scope| {
                for (i, handle) in [&one, &two].into_iter().enumerate() {
                    let wins = &wins;
                    scope.spawn(move || {
                        if handle
                            .save_rollout(&progress("canary", &format!("round {round} by {i}"), generation))
                            .unwrap()
                        {
                            wins.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                        }
                    });
                }
            });
        }
        assert_eq!(wins.into_inner(), ROUNDS, "{b}: exactly one save per round");
        assert_eq!(one.rollout("canary").unwrap().unwrap().generation, 2 + ROUNDS, "{b}");

        one.save_rollout(&progress("blue-green", "wave 1", 0)).unwrap();
        let names = |h: &Handle| h.rollouts().unwrap().into_iter().map(|p| p.rollout).collect::<Vec<_>>();
        eventually("both rollouts listed", || names(&two) == ["blue-green", "canary"]);
        one.delete_rollout("canary").unwrap();
        eventually("the deletion to arrive", || names(&two) == ["blue-green"]);
        assert!(two.rollout("canary").unwrap().is_none(), "{b}");
    });
}

/// A rollout over a fleet far larger than one ConfigMap holds (~300 bytes a cluster, 1 MiB a
/// ConfigMap): saved whole, read whole through another handle, one cluster's result saved
/// again, a stale save refused, deleted. On Kubernetes, what is kept is exactly the chunks the
/// rollout names, none left behind by the saves that replaced them.
#[test]
fn a_rollout_over_tens_of_thousands_of_clusters_is_kept_whole() {
    const CLUSTERS: usize = 20_000;
    both(|backend| {
        let b = backend.name();
        let (one, two) = (backend.open(), backend.open());
        let mut p = progress("fleet", "wave 1", 0);
        for i in 0..CLUSTERS {
            let cluster = serde_json::json!({
                "wave": if i < 100 { "canary" } else { "rest" }, "cause": "in-place-edit", "to": "edge@1.1.0",
                "target": format!("sha256:{i:064x}"), "state": "waiting",
                "before": {"profile_revision": format!("{i:040x}"), "cluster_revision": format!("{i:040x}"),
                           "digest": format!("sha256:{:064x}", i + 1), "what": "edge@1.0.0"},
            });
            p.clusters.insert(format!("edge-{i:05}"), serde_json::from_value(cluster).unwrap());
        }
        assert!(serde_json::to_string(&p).unwrap().len() > 4 << 20, "{b}: larger than four ConfigMaps");
        assert!(one.save_rollout(&p).unwrap(), "{b}: saved");
        eventually("the other handle to read it whole", || {
            two.rollout("fleet").unwrap().is_some_and(|read| read.generation == 1 && read.clusters == p.clusters)
        });

        // One cluster's result, as a worker records it: the rest stays as it was.
        let mut next = two.rollout("fleet").unwrap().unwrap();
        let entry = next.clusters.get_mut("edge-00042").unwrap();
        entry.state = strata::rollout::gate::ClusterRun::Updated;
        entry.finished_at = Some(2_000);
        assert!(two.save_rollout(&next).unwrap(), "{b}");
        assert!(!one.save_rollout(&p).unwrap(), "{b}: a save from the generation before is refused");
        eventually("the first handle to read the result", || {
            one.rollouts().unwrap().iter().any(|read| read.generation == 2 && read.clusters == next.clusters)
        });
        if let Some(kubeconfig) = backend.kubeconfig() {
            let maps = common::kubernetes::configmaps(kubeconfig);
            let state: serde_json::Value =
                serde_json::from_str(maps["strata-state"]["data"]["rollouts"].as_str().unwrap()).unwrap();
            let named: BTreeSet<&str> = state["fleet"]["chunks"]
                .as_array()
                .unwrap()
                .iter()
                .filter_map(|c| c.as_str())
                .filter(|c| !c.is_empty())
                .collect();
            let kept: BTreeSet<&str> =
                maps.keys().map(String::as_str).filter(|name| name.starts_with("strata-progress-")).collect();
            assert!(named.len() > 8, "{b}: spread over chunks: {named:?}");
            assert_eq!(kept, named, "{b}: the chunks kept are those named");
            for name in &kept {
                let chunk = &maps[*name];
                assert_eq!(chunk["immutable"], true, "{b}: {name}");
                assert!(chunk["data"]["clusters"].as_str().unwrap().len() < 512 * 1024, "{b}: {name}");
            }
            // What a save cut off between making its chunks and naming them leaves: swept by the
            // housekeeping once old enough, never a chunk a rollout names.
            common::kubernetes::create_configmap(
                kubeconfig,
                serde_json::json!({"metadata": {"name": "strata-progress-cut-off-0",
                    "labels": {"strata.dev/rollout-progress": "cut-off"}}, "data": {"clusters": "{}"}}),
            );
            let progress_maps = || -> BTreeSet<String> {
                common::kubernetes::configmaps(kubeconfig)
                    .into_keys()
                    .filter(|name| name.starts_with("strata-progress-"))
                    .collect()
            };
            one.prune_delivered(now()).unwrap();
            assert!(progress_maps().contains("strata-progress-cut-off-0"), "{b}: too young to be swept");
            one.prune_delivered(now() + 3600).unwrap();
            let after: BTreeSet<String> = progress_maps();
            assert_eq!(after.iter().map(String::as_str).collect::<BTreeSet<_>>(), named, "{b}: only the orphan swept");
        }

        one.delete_rollout("fleet").unwrap();
        eventually("the deletion to arrive", || two.rollout("fleet").unwrap().is_none());
        if let Some(kubeconfig) = backend.kubeconfig() {
            let left: Vec<String> = common::kubernetes::configmaps(kubeconfig)
                .into_keys()
                .filter(|name| name.starts_with("strata-progress-"))
                .collect();
            assert!(left.is_empty(), "{b}: {left:?}");
        }
    });
}

/// What replicas need beyond the suite: a replica hears of an approval or a suspension made
/// through another, and writes that change nothing send nothing.
#[test]
fn a_replica_hears_of_intents_changed_through_another() {
    let kubernetes = Kubernetes::start();
    // The API's replica does not own the cluster: it keeps only its brief.
    let (owner, api) = (kubernetes.open(), kubernetes.open_with(false));
    let heard = Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let sink = heard.clone();
    owner.on_intent(Box::new(move |cluster| sink.lock().unwrap().push(cluster.to_string())));
    owner.record_applied("aws", &applied("r1")).unwrap();
    owner.set_pending(&pending("aws", "r2", 1)).unwrap();
    eventually("the API replica to see the pending update", || api.pending("aws").unwrap().is_some());
    api.approve("aws", "r2", &Approver::named("alice")).unwrap();
    eventually("the owner to hear of the approval", || heard.lock().unwrap().contains(&"cluster aws".to_string()));
    assert!(owner.approval("aws", "r2").unwrap().is_some());
    heard.lock().unwrap().clear();
    // Status writes are the owner's own business: no intent. The owner's watch takes events in
    // order: once it shows the second write, it has heard whatever the first said.
    api.set_sync("aws", Sync::Applying, None, None).unwrap();
    api.set_sync("aws", Sync::Applying, Some("still applying"), None).unwrap();
    eventually("the owner to see both status writes", || {
        owner.cluster("aws").unwrap().is_some_and(|c| c.message.as_deref() == Some("still applying"))
    });
    assert!(heard.lock().unwrap().is_empty(), "{:?}", heard.lock().unwrap());

    // Where a rollout stands, moved on by another replica: heard; by itself: not.
    api.save_rollout(&progress("canary", "wave 1", 0)).unwrap();
    eventually("the owner to hear of the rollout", || heard.lock().unwrap().contains(&"rollout progress".to_string()));
    eventually("the owner to see it", || owner.rollout("canary").unwrap().is_some());
    heard.lock().unwrap().clear();
    owner.save_rollout(&progress("canary", "wave 2", 1)).unwrap();
    // Moved on by the other replica after it: heard once, and only that (the owner's watch takes
    // the two in order, its own first).
    eventually("the API replica to see it", || api.rollout("canary").unwrap().is_some_and(|p| p.next == "wave 2"));
    api.save_rollout(&progress("canary", "wave 3", 2)).unwrap();
    eventually("the owner to hear of the other's", || {
        !heard.lock().unwrap().is_empty() && owner.rollout("canary").unwrap().is_some_and(|p| p.next == "wave 3")
    });
    assert_eq!(*heard.lock().unwrap(), ["rollout progress"], "the owner's own write is not heard");

    let states = common::kubernetes::cluster_states(&kubernetes.kubeconfig);
    let aws = &states["aws"];
    assert_eq!(aws["spec"]["approvals"][0]["by"], "alice");
    assert_eq!(aws["status"]["pending"]["headRevision"], "r2");
    assert_eq!(aws["status"]["profile"], "aws-profile", "the CRD's schema keeps every field: {aws}");
    let version = aws["metadata"]["resourceVersion"].clone();
    owner.set_pending(&pending("aws", "r2", 1)).unwrap();
    owner.clear_pending("elsewhere").unwrap();
    let again = common::kubernetes::cluster_states(&kubernetes.kubeconfig);
    assert_eq!(again["aws"]["metadata"]["resourceVersion"], version, "an unchanged write sent nothing");
    assert!(!again.contains_key("elsewhere"));
}

/// Names that are not Kubernetes names are refused before any request.
#[test]
fn names_that_are_not_cluster_names_are_refused() {
    let kubernetes = Kubernetes::start();
    let store = kubernetes.open();
    let e = store.set_suspended("../x", true).unwrap_err();
    assert_eq!(e.kind(), "rejected");
    assert!(e.to_string().contains("ClusterState strata-system/../x: not a cluster name"), "{e}");
    assert_eq!(store.cluster("../x").unwrap(), None);
}

/// The audit trail: appended by every handle, read newest first, filtered by time, cluster and
/// user, and bounded by age and count — the oldest go first.
#[test]
fn the_audit_trail_is_appended_filtered_and_bounded() {
    use strata::daemon::store::{AuditOutcome, AuditVia};
    both(|backend| {
        let (one, two) = (backend.open(), backend.open());
        let name = backend.name();
        let start = now_ms();
        let entry = |i: i64, who: &str, cluster: &str| {
            let mut e = AuditEntry::new("approve", AuditOutcome::Done, who, AuditVia::Api, None).cluster(cluster);
            e.at = start + i;
            e.revision(Some("9f3c2aa")).detail(format!("entry {i}"))
        };
        // An old one, from a day the retention has left behind.
        let mut old = entry(0, "api (alice)", "prod-1");
        old.at = start - 3 * 86_400_000;
        one.audit(&old).unwrap();
        for i in 1..=6 {
            let (who, cluster) = if i % 2 == 0 { ("bob", "prod-2") } else { ("api (alice)", "prod-1") };
            // Both handles append: for Kubernetes, two replicas.
            let handle = if i % 3 == 0 { &two } else { &one };
            handle.audit(&entry(i, who, cluster)).unwrap();
        }
        let all = |q: AuditQuery| one.audit_log(&AuditQuery { limit: 100, ..q }).unwrap();
        let details = |entries: Vec<AuditEntry>| entries.into_iter().map(|e| e.detail).collect::<Vec<_>>();
        assert_eq!(details(all(AuditQuery::default())).len(), 7, "{name}");
        assert_eq!(
            details(all(AuditQuery { since: Some(start), ..AuditQuery::default() })),
            ["entry 6", "entry 5", "entry 4", "entry 3", "entry 2", "entry 1"],
            "{name}: newest first"
        );
        assert_eq!(
            details(all(AuditQuery { cluster: Some("prod-2".into()), ..AuditQuery::default() })),
            ["entry 6", "entry 4", "entry 2"],
            "{name}"
        );
        let alice = all(AuditQuery { user: Some("api".into()), since: Some(start), ..AuditQuery::default() });
        assert_eq!(details(alice.clone()), ["entry 5", "entry 3", "entry 1"], "{name}: by the token's name");
        assert_eq!(alice[0].who, "api (alice)");
        assert_eq!(alice[0].revision.as_deref(), Some("9f3c2aa"));
        assert_eq!(one.audit_log(&AuditQuery { limit: 2, ..AuditQuery::default() }).unwrap().len(), 2, "{name}");

        // Past the retention: the old entry goes, the others stay.
        let gone = one.prune_audit(start - 86_400_000, 1_000).unwrap();
        assert_eq!(gone, 1, "{name}");
        assert_eq!(all(AuditQuery::default()).len(), 6, "{name}");
        // Past the bound: SQLite keeps exactly the newest; the Kubernetes backend drops whole
        // ConfigMaps (one per day here), never one that would leave fewer than the bound.
        one.prune_audit(0, 3).unwrap();
        let left = details(all(AuditQuery::default()));
        match name {
            "sqlite" => assert_eq!(left, ["entry 6", "entry 5", "entry 4"]),
            _ => assert_eq!(left.len(), 6, "one day's ConfigMap holding 6 is not dropped for a bound of 3"),
        }
    });
}

/// An approval keeps the identity approval rules count and its groups, on both backends.
#[test]
fn approvals_keep_the_identity_and_its_groups() {
    both(|backend| {
        let (one, two) = (backend.open(), backend.open());
        let by = Approver { recorded: "api (alice)".into(), identity: "api".into(), groups: vec!["sre".into()] };
        one.record_applied("aws", &applied("r1")).unwrap();
        one.approve("aws", "r2", &by).unwrap();
        eventually("the other handle to see it", || two.approval("aws", "r2").unwrap().is_some());
        let seen = two.approval("aws", "r2").unwrap().unwrap();
        assert_eq!(
            (seen.approved_by.as_str(), seen.identity.as_str(), seen.groups.as_slice()),
            ("api (alice)", "api", &["sre".to_string()][..]),
            "{}",
            backend.name()
        );
    });
}
