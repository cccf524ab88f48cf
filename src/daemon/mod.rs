//! `strata run`: the long-running service that keeps a fleet equal to Git.
//!
//! ```text
//!   notify (local refs) ─┐
//!   interval + jitter  ──┼─> poll: fetch / read branch ──> new revision? ──> evaluate (blocking, panics caught)
//!   webhook (push)     ──┤                                                    load, plan per cluster
//!   approve / suspend ───┘                                                    against what it runs,
//!                                                                             decide by policy
//!                                    ┌──────────── mailboxes (never wait) ───────┘
//!                                    v
//!   one worker per cluster: apply (bounded, backoff on failure) · drift check on interval · state in SQLite
//!
//!   watchdog thread: pings systemd while the loop (or an evaluation) makes progress
//! ```
//!
//! Nothing a repository contains ends the process: a revision that does not load, or whose
//! evaluation panics, is rejected and every cluster keeps what it runs; the next good revision
//! applies. Everything the daemon must remember lives in the [`store::Store`]; everything else is
//! derived again from Git and the clusters after a restart, and a store that fails is reported
//! (logs, `/readyz`, metrics) rather than taken for a bad revision.

pub mod audit;
pub mod decide;
pub mod evaluate;
pub mod git;
pub mod guard;
pub mod http;
pub mod management;
pub mod memory;
pub mod metrics;
pub mod network;
pub mod outbox;
pub mod pulls;
pub mod rollouts;
pub mod secrets;
pub mod selection;
pub mod shards;
pub mod smart_http;
pub mod state;
pub mod store;
pub mod supply;
pub mod worker;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::stream::{self, StreamExt};
use tokio::sync::{Semaphore, mpsc, watch};
use tokio::time::Instant;
use tracing::{debug, error, info, warn};

use crate::config::{Config, StateBackend, TargetConfig};
use crate::render::Renderer;
use crate::render::tools::SystemTools;
use crate::target::Target as _;
use evaluate::{EvaluateError, Outcome};
use git::RepoSource;
use metrics::Metrics;
use shards::Shards;
use state::{Sync, Verdict};
use store::{AnyStore, SqliteStore, Store, StoreError};
use worker::{Job, Mailbox, Msg, Worker};

/// Why the daemon could not start. Once it runs, nothing ends it but SIGTERM or SIGINT.
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error("`strata run` needs `repository: {{ url: … }}` in the host config {}", .0.display())]
    NoRepository(PathBuf),
    #[error(transparent)]
    Lock(#[from] store::LockError),
    #[error("cannot listen on {address}: {source}")]
    Listen {
        address: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot write {}: {source}", path.display())]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Repository(#[from] git::GitError),
    #[error("status: {0}")]
    Status(String),
    #[error("cannot handle signals: {0}")]
    Signals(#[source] std::io::Error),
    #[error(transparent)]
    Network(#[from] network::MaterialError),
    #[error(transparent)]
    RedactionKey(#[from] crate::redact::KeyError),
    #[error(transparent)]
    Management(#[from] management::ManagementError),
}

/// Why the main loop wakes.
#[derive(Debug)]
pub enum Trigger {
    /// Fetch (or re-read the branch) now.
    Fetch(String),
    /// Decide again on the current revision (an approval, a suspension).
    Reevaluate(String),
}

/// What the HTTP endpoints and the workers share.
pub struct Shared {
    pub config: Config,
    /// What the host decides about rendering: strata's own namespaces refused, the digest key.
    pub render: crate::render::Settings,
    pub store: AnyStore,
    /// Which clusters this replica reconciles (all of them on a single host).
    pub shards: Arc<Shards>,
    /// Targets registered as cluster Secrets (Kubernetes mode).
    pub secrets: Option<Arc<secrets::ClusterSecrets>>,
    pub metrics: Metrics,
    /// Bounds how many clusters reconcile at once.
    pub permits: Semaphore,
    pub triggers: mpsc::Sender<Trigger>,
    pub ready: AtomicBool,
    /// Tags of every cluster at the last good revision, for status filters.
    pub tags: Mutex<BTreeMap<String, Vec<String>>>,
    /// The rollout policies at the last good revision, for the API, the view and actions.
    pub rollouts: Mutex<BTreeMap<String, crate::rollout::Rollout>>,
    /// Per cluster whose pending update waits for approval: the approval rules in force for it
    /// (those of the revision it runs) that apply, and the change's authors.
    pub approval_rules: Mutex<BTreeMap<String, RulesInForce>>,
    /// What the last evaluation leaves the next, so that one evaluates what a commit can reach.
    pub memo: Mutex<Option<evaluate::Memo>>,
    /// What renders the sets workers hold only the identity of, from the last evaluated head.
    pub deferred: Mutex<Option<Arc<evaluate::Deferred>>>,
    /// The workers' work that freed memory, for [`memory::run`] to give back.
    pub freed: Arc<memory::Freed>,
    /// When a rollout wants to be gated again though nothing else happens (a bake ends), in
    /// milliseconds since the epoch; 0 for never.
    pub rollout_wake: AtomicI64,
    /// Wakes the status deliverer when something is queued.
    pub report_wake: Arc<tokio::sync::Notify>,
    /// Bumped whenever a cluster's state changes: the fleet page's ETag.
    pub version: AtomicU64,
    /// Clusters whose worker has something to apply (queued, applying, retrying): `/api/v1/revision`.
    pub busy: Mutex<std::collections::BTreeSet<String>>,
    /// The evaluations of late, newest first: what each took together, and what came of it.
    pub evaluations: Mutex<std::collections::VecDeque<EvaluationRecord>>,
    /// When the main loop (or an evaluation it waits for) last made progress, in milliseconds
    /// since `started`: what the systemd watchdog is fed from.
    heartbeat: AtomicU64,
    started: Instant,
    /// Proxy and TLS material (reloaded on SIGHUP) and the latest network failures.
    pub network: network::NetworkState,
}

/// One evaluation, as `GET /api/v1/revision` lists it: the head, the head evaluated before it and
/// the commits between (first parent, newest first) — taken together as one change, as
/// `strata plan --base SINCE --head HEAD` shows them — and what came of it.
#[derive(Clone, Debug, serde::Serialize)]
pub struct EvaluationRecord {
    pub head: String,
    pub since: Option<String>,
    /// `abc1234 subject`, at most [`EVALUATION_COMMITS`].
    pub commits: Vec<String>,
    /// Commits between `since` and `head` beyond those listed.
    pub more: usize,
    /// evaluating, loaded, rejected, superseded, postponed.
    pub verdict: &'static str,
    pub started_ms: i64,
    pub millis: Option<u64>,
    /// Clusters decided again (those the change or their state reached, and those with
    /// something to do), and those left as they run: an evaluation costs the first.
    pub decided: Option<usize>,
    pub unchanged: Option<usize>,
    /// How many of those left as they run were looked at to know nothing moved under them: all
    /// of them, or those the change and the writes since could have moved (docs/book
    /// daemon.md).
    pub looked_at: Option<usize>,
}

/// The approval rules that govern one pending update, as the evaluation found them.
#[derive(Clone, Debug, Default)]
pub struct RulesInForce {
    /// The pending revision.
    pub revision: String,
    pub rules: Vec<crate::approval::Rule>,
    /// Who wrote a commit of the change (between the revision the cluster runs and the pending one).
    pub authors: Vec<crate::approval::Author>,
}

/// Evaluations remembered, and commits listed per evaluation.
pub const EVALUATIONS_KEPT: usize = 20;
pub const EVALUATION_COMMITS: usize = 20;

impl Shared {
    /// Marks `cluster`'s worker as having (or no longer having) something to apply.
    pub fn set_busy(&self, cluster: &str, busy: bool) {
        let mut set = self.busy.lock().unwrap_or_else(|p| p.into_inner());
        if busy {
            set.insert(cluster.to_string());
        } else {
            set.remove(cluster);
        }
    }

    /// Updates the newest record of an evaluation of `head`.
    pub fn evaluation(&self, head: &str, update: impl FnOnce(&mut EvaluationRecord)) {
        let mut records = self.evaluations.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(record) = records.iter_mut().find(|r| r.head == head) {
            update(record);
        }
    }

    /// What renders sets again: the last evaluation's (none before the first ends).
    pub fn deferred(&self) -> Option<Arc<evaluate::Deferred>> {
        self.deferred.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Notes that some cluster's state changed (the status view refreshes).
    pub fn touch(&self) {
        self.version.fetch_add(1, Ordering::Relaxed);
    }

    /// Notes progress: the main loop came round, or an evaluation finished a cluster.
    pub fn progress(&self) {
        self.heartbeat.store(self.started.elapsed().as_millis() as u64, Ordering::Relaxed);
    }

    fn since_progress(&self) -> Duration {
        let last = Duration::from_millis(self.heartbeat.load(Ordering::Relaxed));
        self.started.elapsed().saturating_sub(last)
    }

    /// Whether the daemon is ready, and if not, why: what `/readyz` answers. Not ready until the
    /// first evaluation, and whenever the state database fails.
    pub fn readiness(&self) -> Result<(), String> {
        if let Some(problem) = self.store.problem() {
            return Err(problem);
        }
        if !self.ready.load(Ordering::Relaxed) {
            return Err("starting: the first revision is not evaluated yet".to_string());
        }
        Ok(())
    }

    /// The value of a state database call, or `None` with the failure logged (the store keeps
    /// it for `/readyz` and counts it). Work goes on without it: Git and the clusters hold the
    /// truth, and the state is derived again after a restart.
    pub fn stored<T>(&self, what: &str, result: Result<T, StoreError>) -> Option<T> {
        match result {
            Ok(value) => Some(value),
            Err(e) => {
                error!(error = %e, kind = e.kind(), "State database: cannot {what}.");
                None
            }
        }
    }

    /// Whether `cluster`'s target `target` is `config` now: [`Shared::target`] without copying
    /// what the host config holds.
    pub fn target_is(&self, cluster: &str, target: &str, config: &TargetConfig) -> bool {
        match self.config.targets.get(target) {
            Some(configured) => configured == config,
            None => self.target(cluster, target).is_ok_and(|t| t == *config),
        }
    }

    /// The target a cluster names: from the host config, else from a cluster Secret, else a
    /// diagnostic saying how to configure it.
    pub fn target(&self, cluster: &str, target: &str) -> Result<TargetConfig, crate::diag::Diagnostic> {
        let configured = self.config.target(cluster, target);
        if configured.is_ok() || self.secrets.is_none() {
            return configured.cloned();
        }
        let registry = self.secrets.as_ref().expect("checked");
        match registry.target(target) {
            Some(Ok(config)) => Ok(config),
            Some(Err(problem)) => Err(crate::diag::Diagnostic::new(crate::diag::Code::Unresolved, problem)
                .about(format!("cluster {cluster}"))
                .help(format!("fix the Secret labelled {}={target}", crate::target::secret::TARGET_LABEL))),
            None => {
                let diagnostic = configured.expect_err("checked");
                let registered = match registry.names() {
                    names if names.is_empty() => "none".to_string(),
                    names => names.join(", "),
                };
                let help = format!(
                    "{}; or register it as a Secret in namespace {} labelled {}={target} holding a kubeconfig (docs/book/src/kubernetes.md; registered: {registered})",
                    diagnostic.help.clone().unwrap_or_default(),
                    registry.namespace(),
                    crate::target::secret::TARGET_LABEL,
                );
                Err(diagnostic.help(help))
            }
        }
    }

    /// Queues a commit status for `cluster` on `revision`, when a status sink is configured.
    pub async fn report(&self, cluster: &str, revision: &str, state: crate::report::State, description: &str) {
        let Some(status) = &self.config.status else { return };
        let url = status.target_url(cluster, revision);
        self.report_to(crate::report::context(cluster), revision, state, description, url).await;
    }

    /// Queues a commit status with `context` (`strata/<cluster>`, `strata/rollout/<name>`) on
    /// `revision`, when a status sink is configured.
    pub async fn report_to(
        &self,
        context: String,
        revision: &str,
        state: crate::report::State,
        description: &str,
        target_url: Option<String>,
    ) {
        if self.config.status.is_none() {
            return;
        }
        let status = crate::report::Status::new(revision, context, state, description, target_url);
        if let Some(true) = self.stored("queue a commit status", self.store.enqueue(&status).await) {
            self.report_wake.notify_one();
        }
        if let Some(queued) = self.stored("count queued statuses", self.store.outbox_len().await) {
            self.metrics.outbox.set(queued);
        }
    }
}

/// Where the daemon writes the address it actually listens on (useful with port 0).
pub const LISTEN_FILE: &str = "listen-address";
/// The daemon's redaction key in the state directory: kept across restarts, so the markers in
/// stored pending diffs and drift findings stay comparable.
pub const KEY_FILE: &str = "redaction.key";

/// How long the inventories of clusters the store does not know are read for at start.
const SEED_TIMEOUT: Duration = Duration::from_secs(5);

/// How soon the loop tries the state database again after it failed.
const STORE_RETRY: Duration = Duration::from_secs(5);

/// The watchdog stops being fed when the main loop has made no progress for this long.
const STALL: Duration = Duration::from_secs(60);

/// A worker's mailbox and task.
type WorkerHandle = (Arc<Mailbox>, tokio::task::JoinHandle<()>);

/// The workers by cluster, and their names as an evaluation is handed them
/// ([`evaluate::Running`]): kept beside the map rather than copied from it for each evaluation
/// (a fleet's names), with a generation bumped whenever a worker starts or stops.
#[derive(Default)]
struct Workers {
    map: HashMap<Arc<str>, WorkerHandle>,
    running: evaluate::Running,
}

impl Workers {
    fn get(&self, name: &str) -> Option<&WorkerHandle> {
        self.map.get(name)
    }

    fn remove(&mut self, name: &str) -> Option<WorkerHandle> {
        let removed = self.map.remove(name)?;
        Arc::make_mut(&mut self.running.names).remove(name);
        self.running.generation += 1;
        Some(removed)
    }

    /// The worker of `name`, started by `spawn` when there is none.
    fn get_or_spawn(&mut self, name: &str, spawn: impl FnOnce() -> WorkerHandle) -> &WorkerHandle {
        if !self.map.contains_key(name) {
            let name: Arc<str> = name.into();
            Arc::make_mut(&mut self.running.names).insert(name.clone());
            self.running.generation += 1;
            self.map.insert(name, spawn());
        }
        &self.map[name]
    }

    /// Keeps the workers `keep` says to keep.
    fn retain(&mut self, mut keep: impl FnMut(&str, &tokio::task::JoinHandle<()>) -> bool) {
        let before = self.map.len();
        self.map.retain(|name, (_, handle)| keep(name, handle));
        if self.map.len() != before {
            self.running.names = Arc::new(self.map.keys().cloned().collect());
            self.running.generation += 1;
        }
    }

    fn running(&self) -> evaluate::Running {
        self.running.clone()
    }

    fn into_handles(self) -> Vec<tokio::task::JoinHandle<()>> {
        self.map.into_values().map(|(_, handle)| handle).collect()
    }
}

/// The daemon, until SIGTERM or SIGINT. Runs on a [`tokio::task::LocalSet`]: the workers'
/// futures borrow across awaits and need not move between threads (the work is IO; Git reads
/// and rendering go to blocking threads).
pub async fn run(config: Config) -> Result<(), DaemonError> {
    let repo_config = config.repository.clone().ok_or_else(|| DaemonError::NoRepository(config.file.clone()))?;
    let _lock = store::lock(&config.state_dir)?;
    guard::install_hook();
    git::set_timeouts();
    let (triggers, rx) = mpsc::channel(256);
    let Built { shared, management, listener, address } = build(config, &triggers).await?;
    let (stop, stopped) = watch::channel(false);
    let app = Arc::new(http::App::new(shared.clone(), address));
    tokio::task::spawn_local(http::serve(listener, app, stopped.clone()));
    tokio::task::spawn_local(memory::run(shared.freed.clone(), stopped.clone()));
    info!(address = %address, state_dir = %shared.config.state_dir.display(), "Listening.");
    if !address.ip().is_loopback() && !shared.config.view.require_token {
        warn!(
            address = %address,
            "Listening beyond loopback without view.require_token: anyone who reaches the address reads every cluster's state."
        );
    }
    let (source, pull_refs, _watcher) = start_sources(&shared, &repo_config, &triggers, &stopped)?;
    let sigterm =
        tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).map_err(DaemonError::Signals)?;
    let sighup =
        tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).map_err(DaemonError::Signals)?;
    let mut main = MainLoop::new(shared.clone(), source, stopped, pull_refs);
    main.run(rx, sigterm, sighup).await;
    let workers = std::mem::take(&mut main.workers);
    shut_down(&shared, management.as_ref(), workers, stop).await;
    Ok(())
}

/// What [`build`] makes before anything runs: the shared state, the management connection (in
/// Kubernetes mode) and the bound listener.
struct Built {
    shared: Arc<Shared>,
    management: Option<Arc<management::Management>>,
    listener: tokio::net::TcpListener,
    address: std::net::SocketAddr,
}

/// Connects, opens and binds everything the daemon shares: the network settings, the management
/// cluster and its shards, the store, cluster Secrets, the redaction key, the listener, metrics.
/// Nothing is served and nothing reconciled yet; any failure here stops the start, named.
async fn build(mut config: Config, triggers: &mpsc::Sender<Trigger>) -> Result<Built, DaemonError> {
    let network = network::NetworkState::load(&config)?;
    let lease_metrics = shards::LeaseMetrics::default();
    // Kubernetes mode: the management cluster holds the shared state, the Leases and the
    // cluster Secrets.
    let management = match &config.kubernetes {
        Some(kubernetes) => Some(management::Management::connect(
            kubernetes,
            &network.current().network,
            &config.file.display().to_string(),
        )?),
        None => None,
    };
    let shards = match (&management, config.state_backend) {
        (Some(mgmt), StateBackend::Kubernetes) => Shards::start(mgmt, &config.sharding, lease_metrics.clone()),
        _ => Shards::all(),
    };
    let store = match (&management, config.state_backend) {
        (Some(mgmt), StateBackend::Kubernetes) => {
            let owner = shards.clone();
            let scope: store::kube::Scope = Arc::new(move |cluster: Option<&str>| match cluster {
                Some(cluster) => owner.owns(cluster),
                None => owner.leads(),
            });
            let owner = shards.clone();
            let whole: store::kube::Scope = Arc::new(move |cluster| cluster.is_some_and(|c| owner.owns(c)));
            AnyStore::Kube(store::kube::KubeStore::open(mgmt.clone(), scope, whole).await)
        }
        _ => AnyStore::Sqlite(SqliteStore::open(&config.state_dir).unwrap_or_else(|e| {
            error!(error = %e, kind = e.kind(), "The state database cannot be used: serving /healthz, /readyz and /metrics, reconciling nothing.");
            SqliteStore::unusable(&config.state_dir, &e)
        })),
    };
    // Someone else approved or suspended a cluster, or moved a rollout on: decide again.
    let intents = triggers.clone();
    store.on_intent(Box::new(move |what| {
        let _ = intents.try_send(Trigger::Reevaluate(format!("{what} changed elsewhere")));
    }));
    let secrets = match (&management, &config.kubernetes) {
        (Some(mgmt), Some(kubernetes)) if kubernetes.cluster_secrets => {
            let changes = triggers.clone();
            Some(secrets::ClusterSecrets::watch(mgmt, move |what| {
                let _ = changes.try_send(Trigger::Reevaluate(what));
            }))
        }
        _ => None,
    };
    config.apply.redactor = match (&management, config.state_backend) {
        // Replicas share one key, so stored markers compare whichever replica wrote them.
        (Some(mgmt), StateBackend::Kubernetes) => mgmt.redaction_key()?,
        _ => crate::redact::Redactor::from_key_file(&config.state_dir.join(KEY_FILE))?,
    };
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .map_err(|source| DaemonError::Listen { address: config.listen, source })?;
    let address = listener.local_addr().map_err(|source| DaemonError::Listen { address: config.listen, source })?;
    let listen_file = config.state_dir.join(LISTEN_FILE);
    std::fs::write(&listen_file, address.to_string())
        .map_err(|source| DaemonError::Write { path: listen_file.clone(), source })?;
    let render = crate::render::Settings::new(
        management.as_ref().map(|m| m.namespace.as_str()),
        &config.allow_namespaces,
        config.apply.redactor.clone(),
    )
    .with_limits(config.render_limits);
    let metrics = Metrics::new(store.error_counter(), lease_metrics);
    let hooks = &config.webhooks;
    let configured: Vec<&str> = [
        (hooks.github_secret_file.is_some(), "github"),
        (hooks.gitea_secret_file.is_some(), "gitea"),
        (hooks.gitea_secret_file.is_some(), "forgejo"),
        (hooks.gitlab_token_file.is_some(), "gitlab"),
    ]
    .into_iter()
    .filter_map(|(on, provider)| on.then_some(provider))
    .collect();
    metrics.webhooks_configured(&configured);
    let shared = Arc::new(Shared {
        permits: Semaphore::new(config.cluster_concurrency),
        render,
        config,
        metrics,
        store,
        shards,
        secrets,
        triggers: triggers.clone(),
        ready: AtomicBool::new(false),
        tags: Mutex::new(BTreeMap::new()),
        rollouts: Mutex::new(BTreeMap::new()),
        approval_rules: Mutex::new(BTreeMap::new()),
        memo: Mutex::new(None),
        deferred: Mutex::new(None),
        freed: Arc::default(),
        rollout_wake: AtomicI64::new(0),
        report_wake: Arc::new(tokio::sync::Notify::new()),
        version: AtomicU64::new(1),
        busy: Mutex::default(),
        evaluations: Mutex::default(),
        heartbeat: AtomicU64::new(0),
        started: Instant::now(),
        network,
    });
    Ok(Built { shared, management, listener, address })
}

/// The repository source, the outbox that reports to Git, the ref watch of a local repository and
/// the systemd watchdog: what feeds the main loop and carries its results out.
#[allow(clippy::type_complexity)]
fn start_sources(
    shared: &Arc<Shared>,
    repo_config: &crate::config::Repository,
    triggers: &mpsc::Sender<Trigger>,
    stopped: &watch::Receiver<bool>,
) -> Result<(Arc<Mutex<RepoSource>>, Option<&'static str>, Option<notify::RecommendedWatcher>), DaemonError> {
    let pull_refs = shared.config.status.as_ref().filter(|s| s.pull_requests).and_then(|s| match &s.sink {
        crate::config::StatusSink::Forge { forge, .. } => match forge.provider {
            crate::report::Provider::Github | crate::report::Provider::Gitea => Some("refs/pull"),
            crate::report::Provider::Gitlab => Some("refs/merge-requests"),
            crate::report::Provider::Bitbucket => None,
        },
        crate::config::StatusSink::Notes => None,
    });
    let source = Arc::new(Mutex::new(RepoSource::new(repo_config, &shared.config.state_dir, pull_refs)?));
    if let Some(status) = &shared.config.status {
        let (repo, remote) = {
            let s = lock(&source);
            (s.git_dir().to_path_buf(), s.remote().map(|(url, c)| (url.to_string(), c.clone())))
        };
        let sink = outbox::Sink::new(&status.sink, repo, remote);
        tokio::task::spawn_local(outbox::run(shared.clone(), sink, shared.report_wake.clone(), stopped.clone()));
    }
    // Local repositories: watch the refs, so a commit is seen within the debounce.
    let watcher = {
        let source = lock(&source);
        if source.is_remote() { None } else { watch_refs(source.watch_paths(), triggers.clone()) }
    };
    if let Some(every) = sd_notify::watchdog_enabled() {
        feed_watchdog(shared.clone(), every);
    }
    Ok((source, pull_refs, watcher))
}

/// Stops the workers (in-flight applies may finish, up to `shutdown_timeout`) and hands the
/// shards over at once instead of when their Leases expire.
async fn shut_down(
    shared: &Arc<Shared>,
    management: Option<&Arc<management::Management>>,
    workers: Workers,
    stop: watch::Sender<bool>,
) {
    info!("Stopping: in-flight applies may finish.");
    notify(&[sd_notify::NotifyState::Stopping]);
    // Receivers only go away with the workers, which are stopping anyway.
    stop.send_replace(true);
    let handles = workers.into_handles();
    if tokio::time::timeout(shared.config.shutdown_timeout, futures::future::join_all(handles)).await.is_err() {
        warn!(timeout = ?shared.config.shutdown_timeout, "Applies still running at the shutdown timeout; leaving them.");
    }
    if let Some(mgmt) = management {
        // Hand the shards over now rather than when their Leases expire.
        let release = shared.shards.clone().release_all(mgmt.api());
        if mgmt.run(Duration::from_secs(5), release).await.is_none() {
            warn!("Releasing the shard Leases took too long; they expire by themselves.");
        }
    }
}

/// An evaluation running off the main loop, on a blocking thread.
struct Evaluation {
    head: String,
    /// Set when a newer revision supersedes it (or the daemon stops): it stops between clusters.
    cancel: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<Result<Vec<Outcome>, EvaluateError>>,
}

/// The daemon's main loop: fetches, starts evaluations and hands their outcomes to the workers,
/// answers signals and ownership changes. It never waits for an evaluation: one runs beside it,
/// and a newer revision cancels it (it stops between clusters) and is evaluated next, so a fix
/// pushed while a slow commit evaluates is taken as soon as it is fetched.
struct MainLoop {
    shared: Arc<Shared>,
    source: Arc<Mutex<RepoSource>>,
    workers: Workers,
    stopped: watch::Receiver<bool>,
    /// Where pull-request heads are fetched from, when plans are posted for them.
    pull_refs: Option<&'static str>,
    /// A pull-request planning task is running.
    planning: Arc<AtomicBool>,
    /// The branch's head as last fetched.
    revision: Option<String>,
    /// The head last rejected: evaluated again on a trigger, not on every timer tick.
    rejected: Option<String>,
    fetch_failures: u32,
    evaluate_failures: u32,
    /// Fetch at the next turn.
    fetch: bool,
    /// Evaluate the head at the next turn (or once the running evaluation ends).
    reevaluate: bool,
    /// Not yet ready: the first evaluation has not ended.
    starting: bool,
    seeded: bool,
    last_prune: Option<Instant>,
    evaluation: Option<Evaluation>,
    /// The head the last finished evaluation loaded (or rejected).
    last_evaluated: Option<String>,
}

impl MainLoop {
    fn new(
        shared: Arc<Shared>,
        source: Arc<Mutex<RepoSource>>,
        stopped: watch::Receiver<bool>,
        pull_refs: Option<&'static str>,
    ) -> MainLoop {
        MainLoop {
            shared,
            source,
            workers: Workers::default(),
            stopped,
            pull_refs,
            planning: Arc::new(AtomicBool::new(false)),
            revision: None,
            rejected: None,
            fetch_failures: 0,
            evaluate_failures: 0,
            fetch: true,
            reevaluate: true,
            starting: true,
            seeded: false,
            last_prune: None,
            evaluation: None,
            last_evaluated: None,
        }
    }

    async fn run(
        &mut self,
        mut rx: mpsc::Receiver<Trigger>,
        mut sigterm: tokio::signal::unix::Signal,
        mut sighup: tokio::signal::unix::Signal,
    ) {
        let mut ownership = self.shared.shards.subscribe();
        loop {
            self.shared.progress();
            if self.fetch {
                self.poll().await;
            }
            if !self.seeded
                && self.shared.store.usable()
                && let Some(head) = self.revision.clone()
            {
                self.seeded = true;
                seed_from_inventories(&self.shared, &self.source, &head).await;
            }
            if self.reevaluate && !self.shared.store.usable() {
                // Without its state the daemon cannot know what is held, approved or suspended.
                self.reevaluate = false;
            }
            self.evaluate_or_supersede();
            if self.starting && self.evaluation.is_none() && (self.revision.is_none() || !self.reevaluate) {
                // Nothing to evaluate (the first fetch failed, the store is unusable): serve anyway.
                self.ready().await;
            }
            self.housekeeping().await;
            self.fetch = false;

            let shared = self.shared.clone();
            let interval = shared.config.repository.as_ref().map(|r| r.interval).unwrap_or(Duration::from_secs(60));
            let mut next_poll = if self.fetch_failures > 0 {
                worker::backoff(self.fetch_failures).min(interval)
            } else {
                jittered(interval)
            };
            if self.evaluate_failures > 0 {
                next_poll = next_poll.min(worker::backoff(self.evaluate_failures));
            }
            // Come round often enough that the watchdog sees the loop alive.
            let tick = sd_notify::watchdog_enabled().map(|d| d / 3).unwrap_or(Duration::from_secs(3600));
            // A rollout whose bake ends is gated again then.
            let wake = match shared.rollout_wake.load(Ordering::Relaxed) {
                0 => None,
                at => Some(Duration::from_millis(at.saturating_sub(store::now_ms()).max(0) as u64)),
            };
            // Due now: gated before anything else, which a select with an always-ready trigger
            // could otherwise put off indefinitely.
            if wake.is_some_and(|w| w.is_zero()) {
                shared.rollout_wake.store(0, Ordering::Relaxed);
                self.reevaluate = true;
                continue;
            }
            let evaluating = self.evaluation.is_some();
            tokio::select! {
                trigger = rx.recv() => {
                    // Debounce: a push touches several files (the index, the ref's lock, the
                    // ref) within a few milliseconds; take them as one. Every millisecond here is
                    // one more between a commit and its clusters, and a trigger that comes after
                    // only costs another read of the branch.
                    tokio::time::sleep(Duration::from_millis(5)).await;
                    let mut all = vec![trigger];
                    while let Ok(t) = rx.try_recv() {
                        all.push(Some(t));
                    }
                    for t in all.into_iter().flatten() {
                        match t {
                            Trigger::Fetch(_) => self.fetch = true,
                            Trigger::Reevaluate(_) => {
                                self.reevaluate = true;
                                self.rejected = None;
                            }
                        }
                    }
                }
                result = async { (&mut self.evaluation.as_mut().expect("checked").task).await }, if evaluating => {
                    let evaluation = self.evaluation.take().expect("checked");
                    let result = result.unwrap_or_else(|e| Err(EvaluateError::Panicked {
                        revision: evaluation.head.clone(),
                        panic: guard::Panic { message: e.to_string(), location: "evaluation task".into() },
                    }));
                    self.finished(evaluation, result).await;
                }
                _ = tokio::time::sleep(next_poll) => {
                    self.fetch = true;
                    // Windows open with the clock, not with commits; a rejected head stays rejected.
                    self.reevaluate |= self.rejected.is_none() || self.rejected != self.revision || self.evaluate_failures > 0;
                }
                _ = tokio::time::sleep(tick) => {}
                _ = tokio::time::sleep(wake.unwrap_or_default()), if wake.is_some() => {
                    shared.rollout_wake.store(0, Ordering::Relaxed);
                    self.reevaluate = true;
                }
                // Round again to probe the state database.
                _ = tokio::time::sleep(STORE_RETRY), if shared.store.usable() && shared.store.problem().is_some() => {}
                // Proxy and TLS material (certificates, keys, the proxy password) read again.
                _ = sighup.recv() => match shared.network.reload(&shared.config.file) {
                    Ok(()) => {
                        info!("SIGHUP: proxy and TLS material reloaded; other settings take effect on restart.");
                        self.fetch = true;
                    }
                    Err(e) => error!(error = %e, "SIGHUP: reload failed; the proxy and TLS material in use stay."),
                },
                // Shards gained or lost: stop the workers of clusters now another replica's (they
                // fence themselves already), and decide again to start those of clusters gained.
                _ = ownership.changed() => {
                    ownership.borrow_and_update();
                    self.workers.retain(|name, handle| {
                        let owned = shared.shards.owns(name);
                        if !owned {
                            handle.abort();
                        }
                        owned
                    });
                    self.reevaluate = true;
                    self.rejected = None;
                    count_shard_clusters(&shared);
                    // Clusters gained may be unknown to the state: take what they run from their inventories.
                    self.seeded = false;
                    shared.touch();
                }
                _ = sigterm.recv() => break,
                _ = tokio::signal::ctrl_c() => break,
            }
        }
        if let Some(evaluation) = self.evaluation.take() {
            evaluation.cancel.store(true, Ordering::Relaxed);
        }
    }

    /// Fetches (or reads the local branch); a new head is to be evaluated.
    async fn poll(&mut self) {
        let shared = self.shared.clone();
        shared.metrics.fetches.inc();
        let polled = {
            let source = self.source.clone();
            fed(&shared, blocking(move || lock(&source).poll())).await
        };
        match polled {
            Ok(Ok(rev)) => {
                self.fetch_failures = 0;
                shared.metrics.last_fetch.set(store::now());
                shared.network.recovered(network::REPOSITORY);
                // Fleet-wide work: one replica does it.
                if self.pull_refs.is_some() && shared.shards.leads() && !self.planning.swap(true, Ordering::AcqRel) {
                    // The forge may be slow: the loop does not wait for it.
                    let (shared, source, rev, planning) =
                        (shared.clone(), self.source.clone(), rev.clone(), self.planning.clone());
                    tokio::task::spawn_local(async move {
                        if let Err(panic) = guard::catch_async(pulls::plan_pull_requests(&shared, &source, &rev)).await
                        {
                            shared.metrics.panicked("pull-requests");
                            error!(%panic, "Planning pull requests crashed.");
                        }
                        planning.store(false, Ordering::Release);
                    });
                }
                if self.revision.as_deref() != Some(rev.as_str()) {
                    info!(revision = %rev, "New revision.");
                    shared.metrics.revision_behind.set(1);
                    self.revision = Some(rev);
                    self.reevaluate = true;
                }
            }
            Ok(Err(e)) => {
                self.fetch_failures += 1;
                shared.metrics.fetch_errors.inc();
                shared.network.failed(network::REPOSITORY, &e.to_string());
                error!(error = %e, "Fetch failed; the last good revision keeps serving.");
            }
            Err(panic) => {
                self.fetch_failures += 1;
                shared.metrics.fetch_errors.inc();
                shared.metrics.panicked("fetch");
                error!(%panic, "Fetch crashed; the last good revision keeps serving.");
            }
        }
    }

    /// Starts evaluating the head when one is wanted and none runs; cancels one that runs for an
    /// older head (the head is evaluated when it has stopped).
    fn evaluate_or_supersede(&mut self) {
        let Some(head) = self.revision.clone() else { return };
        match &self.evaluation {
            Some(running) if running.head != head => {
                if !running.cancel.swap(true, Ordering::Relaxed) {
                    info!(revision = %running.head, newer = %head, "A newer revision supersedes the one being evaluated.");
                }
                self.reevaluate = true;
            }
            // Evaluated again once this one ends.
            Some(_) => {}
            None if self.reevaluate => {
                self.reevaluate = false;
                let running = self.workers.running();
                let cancel = Arc::new(AtomicBool::new(false));
                {
                    let mut records = self.shared.evaluations.lock().unwrap_or_else(|p| p.into_inner());
                    records.push_front(EvaluationRecord {
                        head: head.clone(),
                        since: self.last_evaluated.clone(),
                        commits: Vec::new(),
                        more: 0,
                        verdict: "evaluating",
                        started_ms: store::now_ms(),
                        millis: None,
                        decided: None,
                        unchanged: None,
                        looked_at: None,
                    });
                    records.truncate(EVALUATIONS_KEPT);
                }
                let (shared, source, work_head, work_cancel, since) = (
                    self.shared.clone(),
                    self.source.clone(),
                    head.clone(),
                    cancel.clone(),
                    self.last_evaluated.clone(),
                );
                let task = tokio::task::spawn_local(async move {
                    evaluate_head(&shared, &source, &work_head, since.as_deref(), running, work_cancel).await
                });
                self.evaluation = Some(Evaluation { head, cancel, task });
            }
            None => {}
        }
    }

    /// An evaluation ended: its outcomes go to the workers, or the revision is rejected.
    async fn finished(&mut self, evaluation: Evaluation, result: Result<Vec<Outcome>, EvaluateError>) {
        let shared = self.shared.clone();
        let head = evaluation.head;
        let verdict = match &result {
            Ok(_) => "loaded",
            Err(EvaluateError::Cancelled { .. }) => "superseded",
            Err(e) if e.rejects() => "rejected",
            Err(_) => "postponed",
        };
        shared.evaluation(&head, |record| {
            record.verdict = verdict;
            record.millis = Some((store::now_ms() - record.started_ms).max(0) as u64);
        });
        if matches!(verdict, "loaded" | "rejected") {
            self.last_evaluated = Some(head.clone());
        }
        match result {
            Err(EvaluateError::Cancelled { .. }) => return,
            Ok(outcomes) => {
                self.evaluate_failures = 0;
                self.rejected = None;
                shared.metrics.result(&shared.metrics.revisions, "loaded");
                shared.metrics.revision_behind.set(i64::from(self.revision.as_deref() != Some(head.as_str())));
                shared.stored("record the revision", shared.store.set_revision(&head, Verdict::Loaded, None).await);
                dispatch(&shared, outcomes, &mut self.workers, &self.stopped).await;
            }
            Err(e) if e.rejects() => {
                self.evaluate_failures = 0;
                shared.metrics.result(&shared.metrics.revisions, e.label());
                if self.rejected.as_deref() != Some(head.as_str()) {
                    error!(revision = %head, error = %e, "Revision rejected; clusters keep what they run.");
                }
                self.rejected = Some(head.clone());
                let message = e.to_string();
                shared.stored(
                    "record the revision",
                    shared.store.set_revision(&head, Verdict::Rejected, Some(&message)).await,
                );
                let description = e.status_description();
                for state in shared.stored("list clusters", shared.store.clusters().await).unwrap_or_default() {
                    if state.sync != Sync::Removed && shared.shards.owns(&state.name) {
                        shared.report(&state.name, &head, crate::report::State::Error, &description).await;
                    }
                }
                if self.starting {
                    // Nothing loaded yet: start the workers on what the store says they run.
                    dispatch_from_store(&shared, &self.source, &mut self.workers, &self.stopped).await;
                }
                shared.touch();
            }
            Err(e) => {
                self.evaluate_failures += 1;
                error!(revision = %head, error = %e, "Evaluation postponed; clusters keep what they run.");
            }
        }
        if let Some(pending) = shared.stored("count pending updates", shared.store.pending_count().await) {
            shared.metrics.pending_updates.set(pending);
        }
        if let Some(pendings) = shared.stored("count pending approvals", shared.store.pendings().await) {
            let waiting = pendings.iter().filter(|p| p.hold == decide::Hold::Approval).count();
            shared.metrics.pending_approvals.set(waiting as i64);
        }
        count_shard_clusters(&shared);
        self.ready().await;
    }

    /// Ready once the first evaluation ended (or there was none to run).
    async fn ready(&mut self) {
        if !self.starting {
            return;
        }
        self.starting = false;
        let shared = &self.shared;
        shared.ready.store(true, Ordering::Relaxed);
        let mut states = vec![sd_notify::NotifyState::Ready];
        if let Some(problem) = shared.store.problem() {
            // Started, but not working: systemd shows why, /readyz says not ready.
            states.push(sd_notify::NotifyState::Status(problem.as_str()));
            notify(&states);
        } else {
            notify(&states);
            info!("Ready.");
        }
        fleet_line(shared).await;
    }

    /// The state database probed again after failures, old delivered statuses and audit entries
    /// forgotten.
    async fn housekeeping(&mut self) {
        let shared = &self.shared;
        if shared.store.usable() && shared.store.problem().is_some() {
            // Writes failed before; one that succeeds clears the problem (and /readyz).
            shared.stored("write", shared.store.probe().await);
        }
        if shared.store.usable() && self.last_prune.is_none_or(|at| at.elapsed() > Duration::from_secs(3600)) {
            self.last_prune = Some(Instant::now());
            if let Some(n) = shared.stored("prune delivered statuses", shared.store.prune_delivered(store::now()).await)
                && n > 0
            {
                info!(rows = n, "Forgot old delivered statuses.");
            }
            let gone = audit::prune(shared).await;
            if gone > 0 {
                info!(entries = gone, "Forgot audit entries past audit.retention or audit.max_entries.");
            }
        }
    }
}

fn lock(source: &Mutex<RepoSource>) -> std::sync::MutexGuard<'_, RepoSource> {
    // A panic while reading Git leaves nothing half-changed in RepoSource worth refusing over.
    source.lock().unwrap_or_else(|p| p.into_inner())
}

fn notify(states: &[sd_notify::NotifyState]) {
    if let Err(e) = sd_notify::notify(states) {
        warn!(error = %e, "Cannot notify systemd.");
    }
}

/// Runs blocking work on a blocking thread; a panic in it comes back as an error.
async fn blocking<T: Send + 'static>(work: impl FnOnce() -> T + Send + 'static) -> Result<T, guard::Panic> {
    match tokio::task::spawn_blocking(move || guard::catch(work)).await {
        Ok(result) => result,
        // Blocking tasks are not cancelled; a failed join is the panic already caught inside.
        Err(e) => Err(guard::Panic { message: e.to_string(), location: "spawn_blocking".into() }),
    }
}

/// Awaits bounded work (a fetch), counting the wait as progress: the loop is alive, waiting.
async fn fed<T>(shared: &Shared, work: impl Future<Output = T>) -> T {
    tokio::pin!(work);
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tokio::select! {
            out = &mut work => return out,
            _ = tick.tick() => shared.progress(),
        }
    }
}

/// Pings the systemd watchdog while the main loop makes progress, from a thread of its own: a
/// notification socket that is slow to take datagrams blocks this thread, never the loop. An
/// evaluation that is still working through clusters counts as progress (it notes each one); a
/// loop stuck on anything else, or a runtime thread that no longer runs, does not, and systemd
/// restarts the daemon.
fn feed_watchdog(shared: Arc<Shared>, every: Duration) {
    let spawned = std::thread::Builder::new().name("watchdog".into()).spawn(move || {
        loop {
            std::thread::sleep(every / 3);
            if shared.since_progress() < STALL.max(every) {
                notify(&[sd_notify::NotifyState::Watchdog]);
            } else {
                warn!(stalled = ?shared.since_progress(), "The main loop makes no progress; not feeding the watchdog.");
            }
        }
    });
    if let Err(e) = spawned {
        warn!(error = %e, "Cannot start the watchdog thread; systemd will restart the daemon.");
    }
}

/// Loads, plans and decides the head on a blocking thread; a panic rejects the revision.
async fn evaluate_head(
    shared: &Arc<Shared>,
    source: &Arc<Mutex<RepoSource>>,
    head: &str,
    since: Option<&str>,
    running: evaluate::Running,
    cancel: Arc<AtomicBool>,
) -> Result<Vec<Outcome>, EvaluateError> {
    let (work_shared, source, work_head) = (shared.clone(), source.clone(), head.to_string());
    let since = since.map(str::to_string);
    let result = blocking(move || {
        let config = &work_shared.config;
        // The keys are read again for every evaluation: a rotated key file counts at once.
        let keys = supply::keys(config).map_err(|message| {
            work_shared.network.failed(supply::DECRYPTION, &message);
            EvaluateError::Host { revision: work_head.clone(), message }
        })?;
        work_shared.network.recovered(supply::DECRYPTION);
        lock(&source).set_keys(Arc::new(keys));
        let git = lock(&source).git_source().map_err(|e| match e {
            git::GitError::Source(source) => EvaluateError::Source { revision: work_head.clone(), source },
            other => EvaluateError::Source {
                revision: work_head.clone(),
                source: crate::source::SourceError::Host(Box::new(other)),
            },
        })?;
        // An unsigned head is never evaluated: the last verified revision keeps serving.
        if let Some(verify) = config.repository.as_ref().and_then(|r| r.verify.as_ref()) {
            supply::verify(&work_shared, verify, git.path(), &work_head)?;
        }
        // What this evaluation takes together since the last: said, so a plan over the same
        // range can be read beside what the daemon did.
        let (commits, more) = git.commits_between(since.as_deref(), &work_head, EVALUATION_COMMITS);
        match (&since, commits.len() + more) {
            (Some(since), n) if n > 1 => info!(revision = %work_head, since = %since, commits = n, "Evaluating several commits together, as one change (strata plan --base SINCE --head REVISION shows it)."),
            _ => info!(revision = %work_head, "Evaluating."),
        }
        work_shared.evaluation(&work_head, |record| (record.commits, record.more) = (commits, more));
        evaluate::evaluate(&work_shared, &git, &work_head, &running, &cancel)
    })
    .await;
    match result {
        Ok(result) => result,
        Err(panic) => {
            shared.metrics.panicked("evaluate");
            Err(EvaluateError::Panicked { revision: head.to_string(), panic })
        }
    }
}

/// A fetch interval ± 10 %, so replicas and daemons started together do not fetch together.
fn jittered(interval: Duration) -> Duration {
    crate::backoff::jitter(interval, crate::backoff::Jitter::Spread(0.1))
}

/// Sets the clusters-per-shard gauges: the clusters of the last good revision in each shard this
/// replica holds.
fn count_shard_clusters(shared: &Shared) {
    let shards = &shared.shards;
    let mut counts = vec![0i64; shards.count() as usize];
    for name in shared.tags.lock().unwrap_or_else(|p| p.into_inner()).keys() {
        counts[shards.shard_of(name) as usize] += 1;
    }
    for (shard, count) in counts.into_iter().enumerate() {
        let held = shards.holds(shard as u32);
        let label = metrics::ShardLabel { shard: shard.to_string() };
        shared.metrics.shard_clusters.get_or_create(&label).set(if held { count } else { 0 });
    }
}

/// The worker of `name`, started when there is none (or it ended).
fn worker<'w>(
    shared: &Arc<Shared>,
    workers: &'w mut Workers,
    name: &str,
    stopped: &watch::Receiver<bool>,
) -> &'w Mailbox {
    let stale = workers.get(name).is_some_and(|(_, handle)| handle.is_finished());
    if stale {
        warn!(cluster = %name, "The cluster's worker ended; starting it again.");
        workers.remove(name);
    }
    &workers.get_or_spawn(name, || Worker::spawn(name.to_string(), shared.clone(), stopped.clone())).0
}

/// Hands evaluation outcomes to the workers, starting and stopping workers as clusters come and
/// go. Never waits: a worker busy with a slow cluster finds the newest desired state in its
/// mailbox when it is done.
async fn dispatch(
    shared: &Arc<Shared>,
    outcomes: Vec<Outcome>,
    workers: &mut Workers,
    stopped: &watch::Receiver<bool>,
) {
    for outcome in outcomes {
        let name = outcome.cluster.clone();
        match &outcome.pending {
            Some(p) => shared.stored("record a pending update", shared.store.set_pending(p).await),
            None => shared.stored("clear a pending update", shared.store.clear_pending(&name).await),
        };
        if let Some((problem, revision)) = outcome.problem.as_ref().zip(outcome.revision.as_deref()) {
            warn!(cluster = %name, error = %problem, "Cluster does not render at this revision; it keeps what it runs.");
            let message = problem.to_string();
            shared.stored(
                "record a cluster that does not render",
                shared.store.set_sync(&name, Sync::Error, Some(&message), Some(revision)).await,
            );
            shared.report(&name, revision, crate::report::State::Error, &problem.summary()).await;
        }
        if let Some(p) = &outcome.pending {
            shared.report(&name, &p.head_revision, crate::report::State::Pending, &p.summary).await;
        }
        if outcome.untargeted
            && let Some((_, handle)) = workers.remove(&name)
        {
            info!(cluster = %name, "The cluster's target is gone: no longer reconciled.");
            handle.abort();
        }
        if let Some(job) = outcome.job {
            shared.set_busy(&name, true);
            worker(shared, workers, &name, stopped).send(Msg::Run(Box::new(job)));
        } else if let Some(settings) = outcome.settings
            && let Some((mailbox, _)) = workers.get(&name)
        {
            mailbox.send(Msg::Settings(settings));
        }
    }
    shared.touch();
    // Clusters whose file left the repository (an evaluation has outcomes only for the clusters
    // it decided again; the head's clusters are those it tagged).
    let Some(known) = shared.stored("list clusters", shared.store.states().await) else { return };
    let gone: Vec<store::ClusterState> = {
        let present = shared.tags.lock().unwrap_or_else(|p| p.into_inner());
        // Both by name: walked side by side, not searched for each of the fleet's clusters.
        let mut heads = present.keys().peekable();
        let mut gone = Vec::new();
        for (name, state) in known.iter() {
            while heads.next_if(|head| *head < name).is_some() {}
            if heads.next_if(|head| *head == name).is_none() && state.sync != Sync::Removed {
                gone.push(state.clone());
            }
        }
        gone
    };
    // Only this replica's: another one's clusters are theirs to retire.
    for state in gone.into_iter().filter(|c| shared.shards.owns(&c.name)) {
        let name = state.name;
        info!(cluster = %name, prune = shared.config.prune_removed_clusters, "Cluster file removed: no longer managed.");
        match workers.remove(&name) {
            Some((mailbox, _)) => mailbox.send(Msg::Remove { prune: shared.config.prune_removed_clusters }),
            // No worker (a restart at the commit that removed it): retired as a worker would,
            // but with nothing loaded to prune with, its objects stay.
            None => {
                let message = if shared.config.prune_removed_clusters {
                    warn!(cluster = %name, "A cluster removed while the daemon was stopped is not pruned: restore its file and remove it again while the daemon runs to have them deleted, or delete them by hand.");
                    "cluster file removed while the daemon was stopped; objects left in place"
                } else {
                    "cluster file removed; objects left in place"
                };
                shared.stored(
                    "record a removed cluster",
                    shared.store.set_sync(&name, Sync::Removed, Some(message), None).await,
                );
                shared.stored("clear a removed cluster's pending update", shared.store.clear_pending(&name).await);
            }
        }
    }
}

/// At start, when the head does not load: workers on what each cluster last ran, so drift is
/// still corrected.
async fn dispatch_from_store(
    shared: &Arc<Shared>,
    source: &Arc<Mutex<RepoSource>>,
    workers: &mut Workers,
    stopped: &watch::Receiver<bool>,
) {
    let Some(states) = shared.stored("list clusters", shared.store.clusters().await) else { return };
    let last_good =
        shared.stored("read the revision", shared.store.revision().await).flatten().and_then(|r| r.last_good);
    let (work_shared, source) = (shared.clone(), source.clone());
    let started = blocking(move || {
        let git = lock(&source).git_source().ok()?;
        // How each cluster is reconciled comes from its file at the last revision that loaded, as
        // it did before the restart; what it runs from the revisions the store records.
        let settled = last_good.and_then(|rev| crate::repo::load(git.snapshot(&rev).ok()?.tree.as_ref()).ok());
        let mut jobs = Vec::new();
        for state in states.into_iter().filter(|s| s.sync != Sync::Removed && work_shared.shards.owns(&s.name)) {
            work_shared.progress();
            let (Some(rev), Some(crev)) = (state.profile_revision.clone(), state.cluster_revision.clone()) else {
                continue;
            };
            // One cluster that cannot be rendered again (or crashes doing so) does not keep the others from starting.
            let job = guard::catch(|| {
                let (snap, csnap) = (git.snapshot(&rev).ok()?, git.snapshot(&crev).ok()?);
                let (model, cmodel) =
                    (crate::repo::load(snap.tree.as_ref()).ok()?, crate::repo::load(csnap.tree.as_ref()).ok()?);
                let cluster = cmodel.clusters.get(&state.name)?;
                let settings = settled.as_ref().and_then(|m| m.clusters.get(&state.name)).unwrap_or(cluster);
                let target = work_shared.target(&state.name, &settings.target).ok()?;
                let tools = SystemTools::default();
                let set = Renderer::new(snap.tree.as_ref(), &model, &tools)
                    .with_settings(&work_shared.render)
                    .render(cluster)
                    .ok()?;
                Some(Job {
                    set: set.pack(),
                    profile_revision: Some(rev.clone()),
                    cluster_revision: Some(crev.clone()),
                    target,
                    drift: settings.drift,
                    rollout: None,
                })
            });
            if let Ok(Some(job)) = job {
                jobs.push((state.name.clone(), job));
            }
        }
        Some((jobs, settled))
    })
    .await
    .ok()
    .flatten();
    let Some((jobs, settled)) = started else { return };
    // The API, the view and actions see the rollouts and tags of the last revision that loaded,
    // as a daemon that kept running through the rejected head does.
    if let Some(model) = settled {
        let mut rollouts = shared.rollouts.lock().unwrap_or_else(|p| p.into_inner());
        if rollouts.is_empty() {
            *rollouts = model.rollouts.clone();
        }
        drop(rollouts);
        let mut tags = shared.tags.lock().unwrap_or_else(|p| p.into_inner());
        if tags.is_empty() {
            *tags = model.clusters.iter().map(|(n, c)| (n.clone(), c.tags.clone())).collect();
        }
    }
    for (name, job) in jobs {
        worker(shared, workers, &name, stopped).send(Msg::Run(Box::new(job)));
    }
}

/// What the daemon found at start, in one line instead of one per cluster: the clusters of the
/// repository by the state they start from (`new` for those the state does not know yet), and
/// how many an update held.
async fn fleet_line(shared: &Shared) {
    if !shared.store.usable() {
        // Not read for a summary: the state database's problem is said already (and counted).
        return;
    }
    let Some(states) = shared.stored("list clusters", shared.store.clusters().await) else { return };
    let names: Vec<String> = shared.tags.lock().unwrap_or_else(|p| p.into_inner()).keys().cloned().collect();
    let known: HashMap<&str, &store::ClusterState> = states.iter().map(|c| (c.name.as_str(), c)).collect();
    let mut by: BTreeMap<&'static str, usize> = BTreeMap::new();
    for name in &names {
        let state = match known.get(name.as_str()) {
            Some(c) if c.suspended => "suspended",
            Some(c) => c.sync.as_str(),
            None => "new",
        };
        *by.entry(state).or_default() += 1;
    }
    let counts: Vec<String> = by.iter().map(|(state, n)| format!("{n} {state}")).collect();
    let held = shared.stored("count pending updates", shared.store.pending_count().await).unwrap_or(0);
    info!(
        clusters = names.len(),
        held,
        "Fleet: {} clusters in the repository ({}); {held} with an update held.",
        names.len(),
        if counts.is_empty() { "none".to_string() } else { counts.join(", ") },
    );
}

/// Before the first evaluation: clusters the store knows nothing about (a new state directory,
/// or one recovered from corruption) take what they run from the inventory strata keeps in each
/// cluster, so an update held before stays held instead of applying as if the cluster were new.
/// Bounded by [`SEED_TIMEOUT`]; a cluster that does not answer in time counts as new.
async fn seed_from_inventories(shared: &Arc<Shared>, source: &Arc<Mutex<RepoSource>>, head: &str) {
    let Some(states) = shared.stored("list clusters", shared.store.clusters().await) else { return };
    let known: HashSet<String> = states.into_iter().filter(|s| s.digest.is_some()).map(|s| s.name).collect();
    let (work_shared, source, head) = (shared.clone(), source.clone(), head.to_string());
    let unknown: Vec<(String, TargetConfig)> = blocking(move || {
        let git = lock(&source).git_source().ok()?;
        let model = crate::repo::load(git.snapshot(&head).ok()?.tree.as_ref()).ok()?;
        Some(
            model
                .clusters
                .iter()
                .filter(|(name, _)| !known.contains(*name) && work_shared.shards.owns(name))
                .filter_map(|(name, c)| Some((name.clone(), work_shared.target(name, &c.target).ok()?)))
                .collect(),
        )
    })
    .await
    .ok()
    .flatten()
    .unwrap_or_default();
    if unknown.is_empty() {
        return;
    }
    let network = shared.network.current().network.clone();
    let reads = stream::iter(unknown.into_iter().map(|(name, config)| {
        let network = network.clone();
        async move {
            let read = async {
                let target = crate::target::connect(&config, &network).await?;
                target.read_inventory(&name).await
            }
            .await;
            (name, read)
        }
    }))
    .buffer_unordered(shared.config.cluster_concurrency * 4)
    .collect::<Vec<_>>();
    let Ok(read) = tokio::time::timeout(SEED_TIMEOUT, reads).await else {
        warn!(timeout = ?SEED_TIMEOUT, "Reading the clusters' inventories took too long; clusters not read count as new.");
        return;
    };
    let mut seeded = 0;
    for (name, inventory) in read {
        match inventory {
            Ok(Some(inv)) if !inv.digest.is_empty() => {
                let Some(revision) = inv.revision.as_deref() else { continue };
                if let Some(true) = shared.stored(
                    "record what a cluster runs",
                    shared.store.seed(&name, revision, &inv.digest, &inv.profile, &inv.version).await,
                ) {
                    debug!(cluster = %name, revision, profile = %inv.profile, version = %inv.version, "Took what the cluster runs from its inventory.");
                    seeded += 1;
                }
            }
            Ok(_) => {}
            Err(e) => warn!(cluster = %name, error = %e, "Cannot read the cluster's inventory; it counts as new."),
        }
    }
    if seeded > 0 {
        info!(
            clusters = seeded,
            "Took what {seeded} clusters run from their inventories (the state knew nothing of them)."
        );
    }
}

/// Watches a local repository's refs; every change becomes a fetch trigger.
fn watch_refs(paths: Vec<std::path::PathBuf>, triggers: mpsc::Sender<Trigger>) -> Option<notify::RecommendedWatcher> {
    use notify::{EventKind, RecursiveMode, Watcher};
    let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        // Only changes count: reading the repository (strata's own polls and evaluations open
        // HEAD, config and packed-refs) must not trigger another read, or the loop feeds itself.
        let changed = event.is_ok_and(|e| {
            matches!(e.kind, EventKind::Create(_) | EventKind::Modify(_) | EventKind::Remove(_) | EventKind::Any)
        });
        if changed {
            // A full channel already holds a fetch.
            let _ = triggers.try_send(Trigger::Fetch("repository changed".into()));
        }
    })
    .map_err(|e| warn!(error = %e, "Cannot watch the repository; polling only."))
    .ok()?;
    for (i, path) in paths.iter().enumerate() {
        // refs/heads recursively (branch names have slashes); the Git directory itself only for
        // packed-refs and HEAD.
        let mode = if i == 0 { RecursiveMode::Recursive } else { RecursiveMode::NonRecursive };
        if let Err(e) = watcher.watch(path, mode) {
            warn!(path = %path.display(), error = %e, "Cannot watch; polling only.");
        }
    }
    Some(watcher)
}
