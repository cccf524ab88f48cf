//! One worker per cluster: applies the desired set it is given, retries with exponential backoff
//! and jitter when that fails, and checks drift, acting as the cluster's policy says.
//!
//! ```text
//!   event loop ──send (never waits)──> Mailbox: the newest desired state replaces a queued one
//!                                         │
//!   watches (Kubernetes targets) ──> what changed, deleted, or is missing from a (re)list
//!                                         │
//!                                         v
//!   worker ── apply | drift check, each bounded by apply.timeout and caught if it panics
//! ```
//!
//! Drift on a Kubernetes target is found through watches: one per kind the cluster's set has,
//! across namespaces (in each of the set's namespaces where the credentials may not watch
//! across them), filtered by the labels strata puts on its objects. An idle cluster costs
//! nothing but the open watches. An object a watch shows changed is judged at once, and without
//! a request when it provably still is what strata applied (its own writes, status updates);
//! otherwise it is judged as the full check judges it (read live, server-side dry-run, ignore
//! rules). The full check of every object still runs, every `drift.resync` (1 h) where watches
//! run and every `drift.interval` (5 min) where none can (directories).
//!
//! Workers share nothing but a semaphore bounding how many clusters reconcile at once, so one
//! failing, slow or unresponsive cluster never delays the others or the event loop.

use crate::backoff::{Backoff, Jitter};
use crate::daemon::store::Store as _;
use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{Notify, watch};
use tokio::time::Instant;
use tracing::{Instrument as _, info, warn};

use super::Shared;
use super::evaluate::DeferredError;
use super::guard::{self, Panic};
use super::rollouts;
use super::state::{Health, Sync};
use super::store::{Applied, DriftRow};
use crate::apply::drift::Finding;
use crate::apply::{self, Action, ChangeSet, ReconcileError};
use crate::config::TargetConfig;
use crate::model::DriftPolicy;
use crate::render::object::ObjectId;
use crate::render::{DesiredSet, PackedSet};
use crate::report::State;
use crate::target::{self, AnyTarget, Observed, Resource, Target, TargetError, Watch};

/// What a cluster should run.
#[derive(Clone, Debug)]
pub struct Job {
    /// Packed, or only its identity (see [`Worker::desired`]): a daemon holds one per cluster
    /// for as long as it runs.
    pub set: PackedSet,
    /// The revision whose profile content `set` is.
    pub profile_revision: Option<String>,
    /// The revision whose cluster file `set` is.
    pub cluster_revision: Option<String>,
    pub target: TargetConfig,
    pub drift: DriftPolicy,
    /// The rollout that released (or rolls back) this desired set: it hears how applies go.
    pub rollout: Option<String>,
}

/// How a cluster is reconciled, from its file at the revision evaluated — whatever desired set
/// it runs: these take effect at the next evaluation, as after a restart.
#[derive(Clone, Debug, PartialEq)]
pub struct Settings {
    pub target: TargetConfig,
    pub drift: DriftPolicy,
    /// The rollout that governs the cluster's updates, if one does.
    pub rollout: Option<String>,
}

pub enum Msg {
    Run(Box<Job>),
    /// What it runs stays; how it is reconciled changes.
    Settings(Settings),
    /// The cluster left the repository: stop, deleting its objects first when `prune`.
    Remove {
        prune: bool,
    },
}

/// What a worker should do next. Sending never waits: a newer desired state replaces one the
/// worker has not taken yet (it would only apply it to overwrite it), newer settings go into a
/// desired state still queued, so the event loop goes on however long a worker is busy with an
/// unresponsive cluster.
#[derive(Default)]
pub struct Mailbox {
    slot: Mutex<Option<Msg>>,
    wake: Notify,
}

impl Mailbox {
    pub fn send(&self, msg: Msg) {
        let mut slot = self.slot.lock().unwrap_or_else(|p| p.into_inner());
        match (&mut *slot, msg) {
            // A removal is final: the event loop sends nothing after it.
            (Some(Msg::Remove { .. }), _) => {}
            // The queued desired state is still what to run, reconciled as now said.
            (Some(Msg::Run(job)), Msg::Settings(settings)) => job.set_settings(settings),
            (slot, msg) => *slot = Some(msg),
        }
        drop(slot);
        self.wake.notify_one();
    }

    /// The newest message. Cancel-safe: a message is taken only by the poll that returns it.
    pub async fn recv(&self) -> Msg {
        loop {
            if let Some(msg) = self.slot.lock().unwrap_or_else(|p| p.into_inner()).take() {
                return msg;
            }
            self.wake.notified().await;
        }
    }
}

impl Job {
    pub fn settings(&self) -> Settings {
        Settings { target: self.target.clone(), drift: self.drift, rollout: self.rollout.clone() }
    }

    pub fn set_settings(&mut self, settings: Settings) {
        let Settings { target, drift, rollout } = settings;
        (self.target, self.drift, self.rollout) = (target, drift, rollout);
    }
}

/// Why a reconcile (or a drift check) did not complete.
#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    #[error("{0}")]
    Target(#[from] TargetError),
    #[error("{0}")]
    Reconcile(#[from] ReconcileError),
    #[error(
        "no result within {}s (apply.timeout): stopped where it was, and retried; a target that accepts connections but does not answer looks like this",
        .0.as_secs()
    )]
    TimedOut(Duration),
    #[error("crashed: {0}")]
    Crashed(Panic),
    /// The set the store records the cluster runs could not be rendered again.
    #[error(transparent)]
    Render(DeferredError),
    /// This replica no longer holds the cluster's shard: it stopped where it was.
    #[error("stopped: this replica no longer holds the cluster's shard; its new owner reconciles it")]
    Fenced,
}

impl WorkerError {
    /// For the reconciles metric: failed, timeout, crashed.
    pub fn label(&self) -> &'static str {
        match self {
            WorkerError::Target(_) | WorkerError::Reconcile(_) | WorkerError::Render(_) => "failed",
            WorkerError::TimedOut(_) => "timeout",
            WorkerError::Crashed(_) => "crashed",
            WorkerError::Fenced => "fenced",
        }
    }

    /// The cluster could not be reached at all (network, TLS, proxy): the commit status is an
    /// `error` naming what to check, as for a revision that does not render, not a `failure` of
    /// what was applied.
    pub fn unreachable(&self) -> bool {
        matches!(
            self,
            WorkerError::Target(TargetError::Unreachable(_))
                | WorkerError::Reconcile(ReconcileError::Target(TargetError::Unreachable(_)))
        )
    }
}

/// Retries of a failed apply (and of a commit status): 2 s doubling to 5 minutes, ± 20 % so many
/// clusters failing together do not retry in lockstep.
const RETRY: Backoff = Backoff::new(Duration::from_secs(2), Duration::from_secs(300), Jitter::Spread(0.2));

/// `base` ± 20 %: drift checks of many clusters spread out.
fn jitter(base: Duration) -> Duration {
    crate::backoff::jitter(base, Jitter::Spread(0.2))
}

/// How long after a watch's first event the changes are judged together: an edit of several
/// objects, a relist, an apply's own writes are one check, well within the 2 s it may take.
const SETTLE: Duration = Duration::from_millis(250);

/// The wait after `failures` failed attempts in a row.
pub fn backoff(failures: u32) -> Duration {
    RETRY.delay(failures)
}

pub struct Worker {
    name: String,
    shared: Arc<Shared>,
    job: Option<Job>,
    /// Digest of what was last applied successfully (from the store at start).
    applied: Option<String>,
    needs_apply: bool,
    failures: u32,
    next_attempt: Instant,
    next_drift: Instant,
    /// The connected target, its configuration, and the network generation it was made with.
    target: Option<(TargetConfig, u64, AnyTarget)>,
    /// The cluster's objects watched, where the target can.
    watching: Option<Watching>,
    /// What the watches saw since the last judgement, the newest state of each object.
    observed: HashMap<ObjectId, Option<serde_json::Value>>,
    /// Kinds (in a namespace, or all) relisted since, with what they hold.
    listed: Vec<(String, String, Option<String>, HashSet<ObjectId>)>,
    /// When to judge what was observed.
    judge_at: Option<Instant>,
}

/// Running watches, and what they cover: they are remade when that changes.
struct Watching {
    target: (TargetConfig, u64),
    kinds: Vec<(Resource, BTreeSet<String>)>,
    watch: Watch,
}

/// The next thing a watch saw; `None` when no watch runs any more.
async fn next_observed(watching: &mut Option<Watching>) -> Option<Observed> {
    match watching {
        Some(w) => w.watch.events.recv().await,
        None => std::future::pending().await,
    }
}

impl Worker {
    pub fn spawn(
        name: String,
        shared: Arc<Shared>,
        shutdown: watch::Receiver<bool>,
    ) -> (Arc<Mailbox>, tokio::task::JoinHandle<()>) {
        let mailbox = Arc::new(Mailbox::default());
        let worker = Worker {
            name,
            shared,
            job: None,
            // Read from the store when the task starts ([`Worker::run`]): spawning never waits.
            applied: None,
            needs_apply: false,
            failures: 0,
            next_attempt: Instant::now(),
            // A first drift check soon after start: the daemon may have been down a while.
            next_drift: Instant::now(),
            target: None,
            watching: None,
            observed: HashMap::new(),
            listed: Vec::new(),
            judge_at: None,
        };
        // Every line a worker logs carries its cluster as a field (the state database's errors
        // included, which are logged below it), and the cluster's shard when replicas share
        // the fleet: in JSON output, `span.cluster` and `span.shard`.
        let span = tracing::info_span!("worker", cluster = %worker.name, shard = tracing::field::Empty);
        if worker.shared.config.state_backend == crate::config::StateBackend::Kubernetes {
            span.record("shard", worker.shared.shards.shard_of(&worker.name));
        }
        (mailbox.clone(), tokio::task::spawn_local(worker.run(mailbox, shutdown).instrument(span)))
    }

    /// The worker's life. A daemon holds one of these futures per cluster for as long as it runs,
    /// so everything awaited in it that does real work (a store read, an apply, a drift check) is
    /// boxed: it takes memory while it runs, not for as long as the worker rests (unboxed, the
    /// apply's nested futures made every resting worker 18 KB, 179 MB at 10,000 clusters).
    async fn run(mut self, mailbox: Arc<Mailbox>, mut shutdown: watch::Receiver<bool>) {
        // A cluster removed from the repository and back again is applied anew: what it ran
        // before is no longer strata's (its inventory and state are made again).
        let stored = Box::pin(self.shared.store.cluster(&self.name)).await;
        self.applied = self
            .shared
            .stored("read what a cluster runs", stored)
            .flatten()
            .filter(|c| c.sync != crate::daemon::state::Sync::Removed)
            .and_then(|c| c.digest);
        loop {
            let deadline = if self.needs_apply { self.next_attempt } else { self.next_drift };
            let judge_at = self.judge_at.filter(|_| !self.needs_apply);
            tokio::select! {
                msg = mailbox.recv() => match msg {
                    Msg::Run(job) => self.take(*job),
                    Msg::Settings(settings) => self.reconfigure(settings),
                    Msg::Remove { prune } => {
                        self.watching = None;
                        Box::pin(self.remove(prune)).await;
                        self.shared.set_busy(&self.name, false);
                        break;
                    }
                },
                observed = next_observed(&mut self.watching) => match observed {
                    Some(observed) => self.observe(observed),
                    None => self.watching = None,
                },
                _ = tokio::time::sleep_until(judge_at.unwrap_or(deadline)), if judge_at.is_some() => {
                    if !Box::pin(self.suspended()).await {
                        Box::pin(self.judge_observed()).await;
                        self.shared.freed.note();
                    } else {
                        self.forget_observed();
                    }
                }
                _ = tokio::time::sleep_until(deadline), if self.job.is_some() => {
                    if Box::pin(self.suspended()).await {
                        self.next_drift = Instant::now() + self.drift_every();
                        self.next_attempt = self.next_drift;
                    } else if self.needs_apply {
                        Box::pin(self.apply()).await;
                    } else {
                        Box::pin(self.check_drift()).await;
                    }
                    // What the work allocated is freed by now (the set it let go of included).
                    self.shared.freed.note();
                }
                _ = shutdown.changed() => break,
            }
        }
    }

    /// Suspended, or unknown because the state database cannot be read: either way, wait.
    async fn suspended(&self) -> bool {
        match self.shared.store.cluster(&self.name).await {
            Ok(state) => state.is_some_and(|c| c.suspended),
            Err(e) => {
                warn!(cluster = %self.name, error = %e, "Cannot tell whether the cluster is suspended; not touching it.");
                true
            }
        }
    }

    fn take(&mut self, job: Job) {
        let moved = self.job.as_ref().is_some_and(|old| old.target != job.target);
        if moved {
            // What the old target's watch saw is not the new target's: neither judged there nor
            // watched any longer (the new target is watched once applied to).
            self.watching = None;
            self.forget_observed();
        }
        let changed = self.applied.as_deref() != Some(job.set.digest.as_str()) || moved;
        if changed {
            self.needs_apply = true;
            self.failures = 0;
            self.next_attempt = Instant::now();
        }
        self.job = Some(job);
        self.shared.set_busy(&self.name, self.needs_apply);
    }

    /// New settings for what it runs: a new target is applied to at once, a new drift policy
    /// judges the next drift found.
    fn reconfigure(&mut self, settings: Settings) {
        // Compared before the job (and its desired set) is copied: most evaluations change nothing.
        let Some(job) = self.job.as_ref().filter(|job| job.settings() != settings) else { return };
        let mut job = job.clone();
        info!(cluster = %self.name, drift = ?settings.drift, "Settings changed.");
        job.set_settings(settings);
        self.take(job);
    }

    async fn target(&mut self) -> Result<&AnyTarget, TargetError> {
        let wanted = &self.job.as_ref().expect("a job").target;
        // A SIGHUP reload of the proxy and TLS material reconnects too.
        let generation = self.shared.network.generation();
        if self.target.as_ref().is_none_or(|(config, made, _)| config != wanted || *made != generation) {
            let network = self.shared.network.current().network.clone();
            let connected = target::connect(wanted, &network).await?;
            self.target = Some((wanted.clone(), generation, connected));
        }
        Ok(&self.target.as_ref().expect("just set").2)
    }

    /// The set to apply or check drift against.
    ///
    /// A worker holds the set it is given until it is applied. Then, as after a restart, it holds
    /// only the set's identity, and renders the set again whenever it needs it (a drift check, a
    /// correction): a set of manifests costs milliseconds to render and ~28 KB to keep, times the
    /// fleet. It is rendered from the last evaluated head, taken when its digest proves it the
    /// same set, else at the revisions it was applied from ([`super::evaluate::Deferred`]). A set
    /// rendered by kustomize or helm is kept once rendered: rendering it runs them again.
    async fn desired(&mut self) -> Result<DesiredSet, DeferredError> {
        let job = self.job.as_mut().expect("a job");
        if job.set.has_content() {
            return Ok(job.set.unpack());
        }
        let deferred = self.shared.deferred().ok_or(DeferredError::NotEvaluated)?;
        let revision = |r: &Option<String>| r.clone().unwrap_or_default();
        let (profile_revision, cluster_revision) = (revision(&job.profile_revision), revision(&job.cluster_revision));
        let set = deferred.render(&job.set, &profile_revision, &cluster_revision).await?;
        let unpacked = set.unpack();
        if !set.renders_in_process() {
            job.set = set;
        }
        Ok(unpacked)
    }

    /// Lets go of an applied set of manifests, keeping its identity ([`Worker::desired`]).
    fn release(&mut self) {
        let Some(job) = self.job.as_mut() else { return };
        let renderable = job.profile_revision.is_some() && job.cluster_revision.is_some();
        if renderable && job.set.renders_in_process() && self.shared.deferred().is_some() {
            job.set = job.set.to_identity();
        }
    }

    /// Runs `work` against the cluster's target, bounded by `apply.timeout` and with panics
    /// caught. A reconcile cut short is like one killed: the inventory written before its first
    /// write keeps every object it may have created tracked.
    async fn bounded<T, E: Into<WorkerError>>(
        &mut self,
        stage: &str,
        work: impl AsyncFnOnce(&AnyTarget) -> Result<T, E>,
    ) -> Result<T, WorkerError> {
        let limit = self.shared.config.reconcile_timeout;
        let name = self.name.clone();
        let shared = self.shared.clone();
        let shard = shared.shards.shard_of(&name);
        if !shared.shards.holds(shard) {
            return Err(WorkerError::Fenced);
        }
        let work = tokio::time::timeout(
            limit,
            guard::catch_async(async {
                guard::inject(stage, &name);
                let target = self.target().await?;
                work(target).await.map_err(Into::into)
            }),
        );
        // The moment the shard's Lease is lost (or not renewed in time), the work stops where it
        // is: no request of it goes out after that. The inventory written before its first write
        // keeps whatever it did tracked for the new owner.
        let outcome = tokio::select! {
            biased;
            _ = shared.shards.fenced(shard) => None,
            outcome = work => Some(outcome),
        };
        let Some(outcome) = outcome else {
            // Whatever the connection was in the middle of, start afresh.
            self.target = None;
            return Err(WorkerError::Fenced);
        };
        match outcome {
            Ok(Ok(result)) => result,
            Ok(Err(panic)) => {
                self.shared.metrics.panicked("worker");
                // Whatever the connection was in the middle of, start afresh.
                self.target = None;
                Err(WorkerError::Crashed(panic))
            }
            Err(_) => {
                self.target = None;
                Err(WorkerError::TimedOut(limit))
            }
        }
    }

    /// The shard went to another replica: nothing is recorded (the state is the new owner's to
    /// write); the event loop stops this worker.
    fn fenced(&mut self) {
        info!(cluster = %self.name, "Shard no longer held: leaving the cluster to its new owner.");
        // What its watches see is the new owner's to judge.
        self.watching = None;
        self.needs_apply = true;
        self.next_attempt = Instant::now() + self.shared.config.drift_interval;
    }

    async fn failed(&mut self, message: &str, revision: Option<&str>) {
        self.failures += 1;
        let wait = backoff(self.failures);
        warn!(cluster = %self.name, error = %message, retry_in = ?wait, "Reconcile failed.");
        self.shared.stored(
            "record a failed reconcile",
            self.shared.store.set_sync(&self.name, Sync::Failed, Some(message), revision).await,
        );
        self.shared.touch();
        self.needs_apply = true;
        self.next_attempt = Instant::now() + wait;
    }

    async fn apply(&mut self) {
        let shared = self.shared.clone();
        let _permit = shared.permits.acquire().await;
        if !shared.shards.owns(&self.name) {
            self.fenced();
            return;
        }
        let job = self.job.clone().expect("a job");
        let revision = job.cluster_revision.as_deref();
        info!(cluster = %self.name, revision = revision.unwrap_or("-"), profile = %job.set.profile, version = %job.set.version, "Applying.");
        shared.stored(
            "record an apply starting",
            shared.store.set_sync(&self.name, Sync::Applying, None, revision).await,
        );
        shared.touch();
        let what = format!("{}@{}", job.set.profile, job.set.version);
        if let Some(rev) = revision {
            shared.report(&self.name, rev, State::Pending, &format!("applying {what}")).await;
        }
        let started = std::time::Instant::now();
        let options = shared.config.apply.clone();
        let set = self.desired().await;
        let result = match &set {
            Ok(set) => {
                self.bounded("apply", async |target| apply::reconcile(target, set, revision, &options).await).await
            }
            Err(e) => Err(WorkerError::Render(e.clone())),
        };
        shared.metrics.reconcile_seconds.observe(started.elapsed().as_secs_f64());
        match result {
            Err(WorkerError::Fenced) => self.fenced(),
            Err(e) => {
                shared.metrics.result(&shared.metrics.reconciles, e.label());
                let message = e.to_string();
                if let Some(rev) = revision {
                    let (state, description) = if e.unreachable() {
                        (State::Error, message.clone())
                    } else {
                        (State::Failure, format!("apply of {what} failed: {message}"))
                    };
                    shared.report(&self.name, rev, state, &description).await;
                }
                self.failed(&message, revision).await;
                self.tell_rollout(&job, rollouts::Outcome::Failed(message)).await;
            }
            Ok(cs) if cs.count(Action::Failed) > 0 => {
                shared.metrics.result(&shared.metrics.reconciles, "failed");
                let failed: Vec<String> = cs
                    .objects
                    .iter()
                    .filter(|o| o.action == Action::Failed)
                    .map(|o| format!("{}: {}", o.id, o.message.as_deref().unwrap_or("")))
                    .collect();
                let message = format!("{}; {}", cs.summary(), failed.join("; "));
                if let Some(rev) = revision {
                    shared.report(&self.name, rev, State::Failure, &format!("apply of {what} failed: {message}")).await;
                }
                self.failed(&message, revision).await;
                self.tell_rollout(&job, rollouts::Outcome::Failed(message)).await;
            }
            Ok(cs) => {
                let outcome = match self.applied(&job, &cs).await {
                    Some(unhealthy) => rollouts::Outcome::Unhealthy(unhealthy),
                    None => rollouts::Outcome::Applied,
                };
                self.tell_rollout(&job, outcome).await;
                if let Ok(set) = &set {
                    self.watch_objects(set).await;
                }
                self.next_drift = Instant::now() + jitter(self.drift_every());
                self.release();
            }
        }
    }

    /// Tells the rollout that released `job` how its apply went; when that moves the rollout
    /// on, it is gated again at once.
    async fn tell_rollout(&self, job: &Job, outcome: rollouts::Outcome) {
        let Some(rollout) = &job.rollout else { return };
        if rollouts::record_result(&self.shared, rollout, &self.name, &job.set.digest, &outcome).await {
            let _ =
                self.shared.triggers.try_send(super::Trigger::Reevaluate(format!("rollout {rollout}: {}", self.name)));
        }
    }

    /// Records an apply that ran to its end (healthy or not); returns what is unhealthy, if anything.
    async fn applied(&mut self, job: &Job, cs: &ChangeSet) -> Option<String> {
        let shared = self.shared.clone();
        let revision = job.cluster_revision.as_deref();
        let what = format!("{}@{}", job.set.profile, job.set.version);
        let (sync, health) = if cs.unhealthy.is_empty() {
            (Sync::Applied, Health::Ready)
        } else {
            (Sync::Unhealthy, Health::Progressing)
        };
        shared.metrics.result(&shared.metrics.reconciles, sync.as_str());
        let unhealthy: Vec<String> = cs
            .unhealthy
            .iter()
            .map(|(id, h)| {
                format!("{id}: {}", serde_json::to_value(h).map(|v| v["reason"].to_string()).unwrap_or_default())
            })
            .collect();
        let unhealthy = (!unhealthy.is_empty()).then(|| unhealthy.join("; "));
        let mut summary = cs.summary();
        if let Some(u) = &unhealthy {
            summary.push_str("; ");
            summary.push_str(u);
        }
        info!(cluster = %self.name, result = %summary, millis = cs.millis, "Applied.");
        if let Some(rev) = revision {
            let (state, description) = if cs.unhealthy.is_empty() {
                (State::Success, format!("applied {what}: {}", cs.summary()))
            } else {
                (State::Failure, format!("{what} unhealthy: {summary}"))
            };
            shared.report(&self.name, rev, state, &description).await;
        }
        let record = Applied {
            profile_revision: job.profile_revision.as_deref(),
            cluster_revision: revision,
            digest: &job.set.digest,
            profile: &job.set.profile,
            version: &job.set.version,
            sync,
            health,
            summary: &summary,
        };
        if shared.stored("record an apply", shared.store.record_applied(&self.name, &record).await).is_none() {
            // Applied but not recorded: apply again later (nothing changes then) and record it then.
            self.failures += 1;
            self.next_attempt = Instant::now() + backoff(self.failures);
            shared.touch();
            return unhealthy;
        }
        self.applied = Some(job.set.digest.clone());
        // A held update's diff starts from what the cluster runs: now that this changed, the
        // next evaluation computes it again from here (views hide it until then).
        let held = shared.stored("read a pending update", shared.store.pending(&self.name).await).flatten();
        if held.is_some_and(|p| p.base_digest.as_deref() != Some(job.set.digest.as_str())) {
            let _ = shared
                .triggers
                .try_send(super::Trigger::Reevaluate(format!("{} applied beside a held update", self.name)));
        }
        let objects: Vec<(String, String, String)> = cs
            .objects
            .iter()
            .filter(|o| !matches!(o.action, Action::Pruned | Action::Skipped))
            .map(|o| (o.id.to_string(), o.layer.clone(), o.action.to_string()))
            .collect();
        shared.stored("record the applied objects", shared.store.set_objects(&self.name, &objects).await);
        if cs.unhealthy.is_empty() {
            self.needs_apply = false;
            self.failures = 0;
            shared.set_busy(&self.name, false);
        } else {
            // Applied, not yet healthy: look again later.
            self.failures += 1;
            self.next_attempt = Instant::now() + backoff(self.failures);
        }
        shared.touch();
        unhealthy
    }

    /// How often every object is checked: rarely where watches see changes as they happen.
    fn drift_every(&self) -> Duration {
        if self.watching.is_some() { self.shared.config.drift_resync } else { self.shared.config.drift_interval }
    }

    /// Starts watching the cluster's objects where the target can, or keeps the watches that
    /// already cover the same kinds and namespaces on the same target.
    async fn watch_objects(&mut self, set: &DesiredSet) {
        if self.job.is_none() || self.target.is_none() || !self.shared.config.drift_watch {
            return;
        }
        let Some((config, generation, target)) = &self.target else { return };
        let mut resolved = Vec::new();
        for (_, object) in set.apply_order() {
            let api_version = object.manifest["apiVersion"].as_str().unwrap_or_default();
            if let Ok(Some(resource)) = target.resource(api_version, &object.id.kind).await {
                resolved.push((object, resource));
            }
        }
        let kinds = apply::watched_kinds(resolved.iter().map(|(o, r)| (*o, r)));
        let on = (config.clone(), *generation);
        if self.watching.as_ref().is_some_and(|w| w.target == on && w.kinds == kinds) {
            return;
        }
        self.watching =
            target.watch(&self.name, kinds.clone(), false).map(|watch| Watching { target: on, kinds, watch });
        if self.watching.is_some() {
            info!(cluster = %self.name, kinds = self.watching.as_ref().map_or(0, |w| w.kinds.len()), "Watching for drift.");
        }
    }

    /// Takes in what a watch saw; it is judged shortly, together with whatever comes with it.
    fn observe(&mut self, observed: Observed) {
        match observed {
            Observed::Object { id, live } => {
                self.observed.insert(id, live);
            }
            Observed::Listed { group, kind, namespace, present } => self.listed.push((group, kind, namespace, present)),
        }
        self.judge_at.get_or_insert_with(|| Instant::now() + SETTLE);
    }

    fn forget_observed(&mut self) {
        self.observed.clear();
        self.listed.clear();
        self.judge_at = None;
    }

    /// Judges the objects watches saw change: those that provably still are what strata
    /// applied clear any finding about them, the others are checked against the cluster.
    async fn judge_observed(&mut self) {
        let observed = std::mem::take(&mut self.observed);
        let listed = std::mem::take(&mut self.listed);
        self.judge_at = None;
        let Some(job) = self.job.clone() else { return };
        let Ok(set) = self.desired().await else { return };
        let objects: HashMap<&ObjectId, &crate::render::Object> =
            set.layers.iter().flat_map(|l| &l.objects).map(|o| (&o.id, o)).collect();
        let mut suspects: BTreeSet<ObjectId> = BTreeSet::new();
        let mut clean: BTreeSet<ObjectId> = BTreeSet::new();
        for (id, live) in observed {
            let Some(object) = objects.get(&id) else { continue };
            match live {
                Some(live) if apply::provably_unchanged(object, &live) => clean.insert(id),
                _ => suspects.insert(id),
            };
        }
        for (group, kind, namespace, present) in listed {
            suspects.extend(
                objects
                    .keys()
                    .filter(|id| id.group == group && id.kind == kind)
                    .filter(|id| namespace.is_none() || id.namespace == namespace)
                    .filter(|id| !present.contains(*id))
                    .map(|id| (*id).clone()),
            );
        }
        clean.retain(|id| !suspects.contains(id));
        let findings = if suspects.is_empty() {
            Vec::new()
        } else {
            let shared = self.shared.clone();
            let _permit = shared.permits.acquire().await;
            let options = shared.config.apply.clone();
            let checked = self
                .bounded("drift", async |target| apply::detect_drift_among(target, &set, &suspects, &options).await);
            match checked.await {
                Ok(findings) => findings,
                Err(WorkerError::Fenced) => return self.fenced(),
                Err(e) => {
                    warn!(cluster = %self.name, error = %e, "Drift check failed.");
                    return;
                }
            }
        };
        let judged: HashSet<String> = suspects.iter().chain(&clean).map(ObjectId::to_string).collect();
        let Some(before) = self.shared.stored("read drift findings", self.shared.store.drift(&self.name).await) else {
            return;
        };
        if findings.is_empty() && !before.iter().any(|row| judged.contains(&row.object)) {
            return;
        }
        // A drifted object changes again (its status, another field): reported once, not at
        // every event; corrected every time.
        let known = |f: &Finding| {
            before.iter().any(|row| {
                row.object == f.id.to_string()
                    && row.path == f.path
                    && row.live == f.live.as_ref().map(|v| v.to_string())
                    && row.desired == f.desired.as_ref().map(|v| v.to_string())
            })
        };
        let act = job.drift == DriftPolicy::Correct || findings.iter().any(|f| !known(f));
        let kept: Vec<DriftRow> = before.into_iter().filter(|row| !judged.contains(&row.object)).collect();
        self.drift_found(&job, kept, findings, act).await;
    }

    async fn check_drift(&mut self) {
        let shared = self.shared.clone();
        let permit = shared.permits.acquire().await;
        self.next_drift = Instant::now() + jitter(self.drift_every());
        let job = self.job.clone().expect("a job");
        let options = shared.config.apply.clone();
        let set = match self.desired().await {
            Ok(set) => set,
            Err(e) => {
                warn!(cluster = %self.name, error = %WorkerError::Render(e), "Drift check failed.");
                return;
            }
        };
        let findings = self.bounded("drift", async |target| apply::detect_drift(target, &set, &options).await).await;
        let findings = match findings {
            Ok(f) => f,
            Err(WorkerError::Fenced) => return self.fenced(),
            Err(e) => {
                warn!(cluster = %self.name, error = %e, "Drift check failed.");
                return;
            }
        };
        drop(permit);
        self.watch_objects(&set).await;
        drop(set);
        self.next_drift = Instant::now() + jitter(self.drift_every());
        self.drift_found(&job, Vec::new(), findings, true).await;
    }

    /// Records `findings` (with the findings `kept` about objects not judged now) and, when
    /// `act`, acts on them as the cluster's policy says.
    async fn drift_found(&mut self, job: &Job, kept: Vec<DriftRow>, findings: Vec<Finding>, act: bool) {
        let shared = self.shared.clone();
        let now = super::store::now();
        let mut rows: Vec<DriftRow> = findings
            .iter()
            .map(|f| DriftRow {
                object: f.id.to_string(),
                path: f.path.clone(),
                live: f.live.as_ref().map(|v| v.to_string()),
                desired: f.desired.as_ref().map(|v| v.to_string()),
                found_at: now,
            })
            .collect();
        rows.extend(kept);
        shared.stored("record drift findings", shared.store.set_drift(&self.name, &rows).await);
        shared.touch();
        shared
            .metrics
            .drifted_objects
            .get_or_create(&super::metrics::ClusterLabel { cluster: self.name.clone() })
            .set(rows.len() as i64);
        if findings.is_empty() || !act {
            return;
        }
        warn!(cluster = %self.name, fields = findings.len(), policy = ?job.drift, "Drift found.");
        if let Some(rollout) = &job.rollout
            && rollouts::drift_fails(&shared, rollout).await
        {
            // The rollout halts on it now, not when it is next gated for another reason.
            let _ = shared
                .triggers
                .try_send(super::Trigger::Reevaluate(format!("rollout {rollout}: drift on {}", self.name)));
        }
        if job.drift == DriftPolicy::Report
            && let Some(rev) = job.cluster_revision.as_deref()
        {
            let first = &findings[0];
            let at = if first.path.is_empty() { "deleted".to_string() } else { first.path.clone() };
            let description = format!(
                "drift: {} field{} changed outside Git ({} {at})",
                findings.len(),
                if findings.len() == 1 { "" } else { "s" },
                first.id
            );
            shared.report(&self.name, rev, State::Failure, &description).await;
        }
        if job.drift == DriftPolicy::Correct {
            self.apply().await;
        }
    }

    async fn remove(&mut self, prune: bool) {
        let shared = self.shared.clone();
        if !shared.shards.owns(&self.name) {
            return self.fenced();
        }
        if prune && let Some(job) = self.job.clone() {
            let empty = DesiredSet {
                cluster: job.set.cluster.clone(),
                profile: job.set.profile.clone(),
                version: job.set.version.clone(),
                layers: Vec::new(),
                digest: String::new(),
            };
            let options = apply::Options { allow_empty: true, ..shared.config.apply.clone() };
            match self.bounded("apply", async |target| apply::reconcile(target, &empty, None, &options).await).await {
                Ok(cs) => info!(cluster = %self.name, result = %cs.summary(), "Removed cluster pruned."),
                Err(e) => warn!(cluster = %self.name, error = %e, "Pruning a removed cluster failed."),
            }
        }
        let message =
            if prune { "cluster file removed; objects deleted" } else { "cluster file removed; objects left in place" };
        shared.stored(
            "record a removed cluster",
            shared.store.set_sync(&self.name, Sync::Removed, Some(message), None).await,
        );
        shared.touch();
        shared.stored("clear a removed cluster's pending update", shared.store.clear_pending(&self.name).await);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(digest: &str) -> Job {
        let set = DesiredSet {
            cluster: "c".into(),
            profile: "p".into(),
            version: "1.0.0".into(),
            layers: Vec::new(),
            digest: digest.into(),
        };
        Job {
            set: set.pack(),
            profile_revision: None,
            cluster_revision: None,
            target: TargetConfig::Directory("/nonexistent".into()),
            drift: DriftPolicy::Correct,
            rollout: None,
        }
    }

    #[test]
    fn a_mailbox_keeps_only_the_newest_desired_state_and_a_removal_is_final() {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let mailbox = Mailbox::default();
        for digest in ["sha256:1", "sha256:2", "sha256:3"] {
            mailbox.send(Msg::Run(Box::new(job(digest))));
        }
        match runtime.block_on(mailbox.recv()) {
            Msg::Run(job) => assert_eq!(job.set.digest, "sha256:3"),
            _ => panic!("not the newest desired state"),
        }
        let empty = runtime.block_on(async { tokio::time::timeout(Duration::from_millis(20), mailbox.recv()).await });
        assert!(empty.is_err(), "nothing left");
        mailbox.send(Msg::Run(Box::new(job("sha256:5"))));
        let report = Settings { drift: DriftPolicy::Report, ..job("x").settings() };
        mailbox.send(Msg::Settings(report.clone()));
        match runtime.block_on(mailbox.recv()) {
            Msg::Run(job) => assert_eq!((job.set.digest.as_str(), job.settings()), ("sha256:5", report)),
            _ => panic!("the queued desired state, with the newer settings"),
        }
        mailbox.send(Msg::Remove { prune: true });
        mailbox.send(Msg::Run(Box::new(job("sha256:4"))));
        assert!(matches!(runtime.block_on(mailbox.recv()), Msg::Remove { prune: true }));
    }

    #[test]
    fn backoff_grows_exponentially_to_a_cap_with_jitter() {
        for (failures, base) in [(1, 2.0), (2, 4.0), (3, 8.0), (9, 300.0), (30, 300.0)] {
            let d = backoff(failures).as_secs_f64();
            assert!(d >= base * 0.8 - 1e-9 && d <= base * 1.2 + 1e-9, "{failures}: {d}");
        }
    }
}
