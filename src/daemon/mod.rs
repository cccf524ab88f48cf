//! `strata run`: the long-running service that keeps a fleet equal to Git.
//!
//! ```text
//!   notify (local refs) ─┐
//!   interval + jitter  ──┼─> poll: fetch / read branch ──> new revision? ──> evaluate (blocking)
//!   webhook (push)     ──┤                                                    load, plan per cluster
//!   approve / suspend ───┘                                                    against what it runs,
//!                                                                             decide by policy
//!                                    ┌───────────────────── jobs ────────────────┘
//!                                    v
//!   one worker per cluster: apply (backoff on failure) · drift check on interval · state in SQLite
//! ```
//!
//! A revision that does not load leaves every cluster on what it runs. Everything the daemon must
//! remember lives in the [`store::Store`]; everything else is derived again from Git and the
//! clusters after a restart.

pub mod decide;
pub mod evaluate;
pub mod git;
pub mod http;
pub mod metrics;
pub mod network;
pub mod outbox;
pub mod pulls;
pub mod smart_http;
pub mod store;
pub mod view;
pub mod worker;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{Semaphore, mpsc, watch};
use tracing::{error, info, warn};

use crate::config::Config;
use crate::render::Renderer;
use crate::render::tools::SystemTools;
use evaluate::{Outcome, first_problem};
use git::RepoSource;
use metrics::Metrics;
use store::Store;
use worker::{Job, Msg, Worker};

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
    pub store: Store,
    pub metrics: Metrics,
    /// Bounds how many clusters reconcile at once.
    pub permits: Semaphore,
    pub triggers: mpsc::Sender<Trigger>,
    pub ready: AtomicBool,
    /// Tags of every cluster at the last good revision, for status filters.
    pub tags: Mutex<BTreeMap<String, Vec<String>>>,
    /// Wakes the status deliverer when something is queued.
    pub report_wake: Arc<tokio::sync::Notify>,
    /// Status view sessions.
    pub sessions: view::Sessions,
    /// Bumped whenever a cluster's state changes: the fleet page's ETag.
    pub version: std::sync::atomic::AtomicU64,
    /// Proxy and TLS material (reloaded on SIGHUP) and the latest network failures.
    pub network: network::NetworkState,
}

impl Shared {
    /// Notes that some cluster's state changed (the status view refreshes).
    pub fn touch(&self) {
        self.version.fetch_add(1, Ordering::Relaxed);
    }

    /// Queues a commit status for `cluster` on `revision`, when a status sink is configured.
    pub fn report(&self, cluster: &str, revision: &str, state: crate::report::State, description: &str) {
        let Some(status) = &self.config.status else { return };
        let status = crate::report::Status::new(
            revision,
            crate::report::context(cluster),
            state,
            description,
            status.target_url(cluster, revision),
        );
        match self.store.enqueue(&status) {
            Ok(true) => self.report_wake.notify_one(),
            Ok(false) => {}
            Err(e) => warn!(error = %e, "Cannot queue a commit status."),
        }
        self.metrics.outbox.set(self.store.outbox_len().unwrap_or(0));
    }
}

/// Where the daemon writes the address it actually listens on (useful with port 0).
pub const LISTEN_FILE: &str = "listen-address";
/// The daemon's redaction key in the state directory: kept across restarts, so the markers in
/// stored pending diffs and drift findings stay comparable.
pub const KEY_FILE: &str = "redaction.key";

/// The daemon, until SIGTERM or SIGINT. Runs on a [`tokio::task::LocalSet`]: the workers'
/// futures borrow across awaits and need not move between threads (the work is IO; Git reads
/// and rendering go to blocking threads).
pub async fn run(mut config: Config) -> Result<(), String> {
    let repo_config =
        config.repository.clone().ok_or("`strata run` needs `repository: { url: … }` in the host config")?;
    git::set_timeouts();
    let network = network::NetworkState::load(&config)?;
    let store = Store::open(&config.state_dir)?;
    config.apply.redactor =
        crate::redact::Redactor::from_key_file(&config.state_dir.join(KEY_FILE)).map_err(|e| e.to_string())?;
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .map_err(|e| format!("cannot listen on {}: {e}", config.listen))?;
    let address = listener.local_addr().map_err(|e| e.to_string())?;
    std::fs::write(config.state_dir.join(LISTEN_FILE), address.to_string()).map_err(|e| e.to_string())?;
    let (triggers, mut rx) = mpsc::channel(256);
    let shared = Arc::new(Shared {
        permits: Semaphore::new(config.cluster_concurrency),
        config,
        store,
        metrics: Metrics::new(),
        triggers: triggers.clone(),
        ready: AtomicBool::new(false),
        tags: Mutex::new(BTreeMap::new()),
        report_wake: Arc::new(tokio::sync::Notify::new()),
        sessions: view::Sessions::default(),
        version: std::sync::atomic::AtomicU64::new(1),
        network,
    });
    let (stop, stopped) = watch::channel(false);
    tokio::task::spawn_local(http::serve(listener, shared.clone(), stopped.clone()));
    info!(address = %address, state_dir = %shared.config.state_dir.display(), "Listening.");

    let pull_refs = shared.config.status.as_ref().filter(|s| s.pull_requests).and_then(|s| match &s.sink {
        crate::config::StatusSink::Forge { forge, .. } => match forge.provider {
            crate::report::Provider::Github | crate::report::Provider::Gitea => Some("refs/pull"),
            crate::report::Provider::Gitlab => Some("refs/merge-requests"),
            crate::report::Provider::Bitbucket => None,
        },
        crate::config::StatusSink::Notes => None,
    });
    let source = Arc::new(Mutex::new(RepoSource::new(&repo_config, &shared.config.state_dir, pull_refs)?));
    if let Some(status) = &shared.config.status {
        let (repo, remote) = {
            let s = source.lock().expect("source lock");
            (s.git_dir().to_path_buf(), s.remote().map(|(url, c)| (url.to_string(), c.clone())))
        };
        let sink = outbox::Sink::new(&status.sink, repo, remote);
        tokio::task::spawn_local(outbox::run(shared.clone(), sink, shared.report_wake.clone(), stopped.clone()));
    }
    // Local repositories: watch the refs, so a commit is seen within the debounce.
    let _watcher = {
        let source = source.lock().expect("source lock");
        if source.is_remote() { None } else { watch_refs(source.watch_paths(), triggers.clone()) }
    };

    let mut workers: HashMap<String, (mpsc::Sender<Msg>, tokio::task::JoinHandle<()>)> = HashMap::new();
    let mut revision: Option<String> = shared.store.meta("revision")?;
    let mut failures = 0u32;
    let mut sigterm =
        tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).map_err(|e| e.to_string())?;
    let mut sighup =
        tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).map_err(|e| e.to_string())?;
    let watchdog = sd_notify::watchdog_enabled().map(|d| d / 3).unwrap_or(Duration::from_secs(3600));
    let mut fetch = true;
    let mut reevaluate = true;
    let mut first = true;
    loop {
        if fetch {
            let polled = {
                let source = source.clone();
                tokio::task::spawn_blocking(move || source.lock().expect("source lock").poll())
                    .await
                    .map_err(|e| e.to_string())?
            };
            match polled {
                Ok(rev) => {
                    failures = 0;
                    shared.network.recovered(network::REPOSITORY);
                    if pull_refs.is_some() {
                        pulls::plan_pull_requests(&shared, &source, &rev).await;
                    }
                    if revision.as_deref() != Some(rev.as_str()) {
                        info!(revision = %rev, "New revision.");
                        revision = Some(rev);
                        reevaluate = true;
                    }
                }
                Err(e) => {
                    failures += 1;
                    shared.metrics.fetch_errors.inc();
                    shared.network.failed(network::REPOSITORY, &e);
                    error!(error = %e, "Fetch failed; the last good revision keeps serving.");
                }
            }
        }
        if reevaluate && let Some(head) = revision.clone() {
            let outcomes = {
                let shared = shared.clone();
                let source = source.clone();
                let running: HashSet<String> = workers.keys().cloned().collect();
                let head = head.clone();
                tokio::task::spawn_blocking(move || {
                    let git = source.lock().expect("source lock").git_source()?;
                    evaluate::evaluate(&shared, &git, &head, &running)
                })
                .await
                .map_err(|e| e.to_string())?
            };
            match outcomes {
                Ok(outcomes) => {
                    shared.metrics.result(&shared.metrics.revisions, "loaded");
                    shared.store.set_meta("revision", &head)?;
                    dispatch(&shared, outcomes, &mut workers, &stopped).await;
                }
                Err(e) => {
                    shared.metrics.result(&shared.metrics.revisions, "invalid");
                    error!(revision = %head, error = %e, "Revision rejected; clusters keep what they run.");
                    for state in shared.store.clusters().unwrap_or_default().iter().filter(|c| c.sync != "removed") {
                        let description = format!("revision does not load: {}", evaluate::first_problem(&e));
                        shared.report(&state.name, &head, crate::report::State::Error, &description);
                    }
                    if first {
                        // Nothing loaded yet: start the workers on what the store says they run.
                        dispatch_from_store(&shared, &source, &mut workers, &stopped).await;
                    }
                }
            }
            let _ = shared.metrics.pending_updates.set(shared.store.pending_count().unwrap_or(0));
        }
        if first {
            first = false;
            shared.ready.store(true, Ordering::Relaxed);
            let _ = sd_notify::notify(&[sd_notify::NotifyState::Ready]);
            info!("Ready.");
        }
        // The loop came round: it is alive.
        let _ = sd_notify::notify(&[sd_notify::NotifyState::Watchdog]);
        fetch = false;
        reevaluate = false;

        let interval = shared.config.repository.as_ref().map(|r| r.interval).unwrap_or(Duration::from_secs(60));
        let next_poll = if failures > 0 { worker::backoff(failures).min(interval) } else { jittered(interval) };
        tokio::select! {
            trigger = rx.recv() => {
                // Debounce: a push touches several files; take them as one.
                tokio::time::sleep(Duration::from_millis(50)).await;
                let mut all = vec![trigger];
                while let Ok(t) = rx.try_recv() {
                    all.push(Some(t));
                }
                for t in all.into_iter().flatten() {
                    match t {
                        Trigger::Fetch(_) => fetch = true,
                        Trigger::Reevaluate(_) => reevaluate = true,
                    }
                }
            }
            _ = tokio::time::sleep(next_poll) => {
                fetch = true;
                // Windows open with the clock, not with commits.
                reevaluate = true;
            }
            _ = tokio::time::sleep(watchdog) => {}
            // Proxy and TLS material (certificates, keys, the proxy password) read again.
            _ = sighup.recv() => match shared.network.reload(&shared.config.file) {
                Ok(()) => {
                    info!("SIGHUP: proxy and TLS material reloaded; other settings take effect on restart.");
                    fetch = true;
                }
                Err(e) => error!(error = %e, "SIGHUP: reload failed; the proxy and TLS material in use stay."),
            },
            _ = sigterm.recv() => break,
            _ = tokio::signal::ctrl_c() => break,
        }
    }

    info!("Stopping: in-flight applies may finish.");
    let _ = sd_notify::notify(&[sd_notify::NotifyState::Stopping]);
    let _ = stop.send(true);
    let handles: Vec<_> = workers.into_values().map(|(_, h)| h).collect();
    if tokio::time::timeout(shared.config.shutdown_timeout, futures::future::join_all(handles)).await.is_err() {
        warn!(timeout = ?shared.config.shutdown_timeout, "Applies still running at the shutdown timeout; leaving them.");
    }
    Ok(())
}

fn jittered(interval: Duration) -> Duration {
    interval.mul_f64(0.9 + fastrand::f64() * 0.2)
}

/// Hands evaluation outcomes to the workers, starting and stopping workers as clusters come and go.
async fn dispatch(
    shared: &Arc<Shared>,
    outcomes: Vec<Outcome>,
    workers: &mut HashMap<String, (mpsc::Sender<Msg>, tokio::task::JoinHandle<()>)>,
    stopped: &watch::Receiver<bool>,
) {
    let present: HashSet<String> = outcomes.iter().map(|o| o.cluster.clone()).collect();
    for outcome in outcomes {
        let name = outcome.cluster.clone();
        match &outcome.pending {
            Some(p) => {
                let _ = shared.store.set_pending(p);
            }
            None => {
                let _ = shared.store.clear_pending(&name);
            }
        }
        if let Some((message, revision)) = outcome.error.as_ref().zip(outcome.revision.as_deref()) {
            warn!(cluster = %name, error = %message, "Cluster does not render at this revision; it keeps what it runs.");
            let _ = shared.store.set_sync(&name, "error", Some(message), None);
            shared.report(
                &name,
                revision,
                crate::report::State::Error,
                &format!("does not render: {}", first_problem(message)),
            );
        }
        if let Some(p) = &outcome.pending {
            shared.report(&name, &p.head_revision, crate::report::State::Pending, &p.summary);
        }
        if let Some(job) = outcome.job {
            let (tx, _) = workers
                .entry(name.clone())
                .or_insert_with(|| Worker::spawn(name.clone(), shared.clone(), stopped.clone()));
            let _ = tx.send(Msg::Run(Box::new(job))).await;
        }
    }
    shared.touch();
    // Clusters whose file left the repository.
    let known: Vec<String> = shared
        .store
        .clusters()
        .unwrap_or_default()
        .into_iter()
        .filter(|c| c.sync != "removed")
        .map(|c| c.name)
        .collect();
    for name in known.into_iter().filter(|n| !present.contains(n)) {
        info!(cluster = %name, prune = shared.config.prune_removed_clusters, "Cluster file removed: no longer managed.");
        match workers.remove(&name) {
            Some((tx, _)) => {
                let _ = tx.send(Msg::Remove { prune: shared.config.prune_removed_clusters }).await;
            }
            None => {
                let _ = shared.store.set_sync(&name, "removed", Some("cluster file removed"), None);
            }
        }
    }
}

/// At start, when the head does not load: workers on what each cluster last ran, so drift is
/// still corrected.
async fn dispatch_from_store(
    shared: &Arc<Shared>,
    source: &Arc<Mutex<RepoSource>>,
    workers: &mut HashMap<String, (mpsc::Sender<Msg>, tokio::task::JoinHandle<()>)>,
    stopped: &watch::Receiver<bool>,
) {
    let states = shared.store.clusters().unwrap_or_default();
    let shared2 = shared.clone();
    let source = source.clone();
    let outcomes = tokio::task::spawn_blocking(move || {
        let git = source.lock().expect("source lock").git_source().ok()?;
        let mut outcomes = Vec::new();
        for state in states.into_iter().filter(|s| s.sync != "removed") {
            let (Some(rev), Some(crev)) = (state.profile_revision.clone(), state.cluster_revision.clone()) else {
                continue;
            };
            let (Ok(snap), Ok(csnap)) = (git.snapshot(&rev), git.snapshot(&crev)) else { continue };
            let (Ok(model), Ok(cmodel)) =
                (crate::repo::load(snap.tree.as_ref()), crate::repo::load(csnap.tree.as_ref()))
            else {
                continue;
            };
            let Some(cluster) = cmodel.clusters.get(&state.name) else { continue };
            let Ok(target) = shared2.config.target(&state.name, &cluster.target).cloned() else { continue };
            let tools = SystemTools::default();
            let Ok(set) = Renderer::new(snap.tree.as_ref(), &model, &tools).render(cluster) else { continue };
            outcomes.push(Outcome {
                cluster: state.name.clone(),
                revision: None,
                job: Some(Job {
                    set: set.pack(),
                    profile_revision: Some(rev),
                    cluster_revision: Some(crev),
                    target,
                    drift: cluster.drift,
                    deferred: None,
                }),
                pending: shared2.store.pending(&state.name).ok().flatten(),
                error: None,
            });
        }
        Some(outcomes)
    })
    .await
    .ok()
    .flatten()
    .unwrap_or_default();
    for outcome in outcomes {
        if let Some(job) = outcome.job {
            let (tx, _) = workers
                .entry(outcome.cluster.clone())
                .or_insert_with(|| Worker::spawn(outcome.cluster.clone(), shared.clone(), stopped.clone()));
            let _ = tx.send(Msg::Run(Box::new(job))).await;
        }
    }
}

/// Watches a local repository's refs; every change becomes a fetch trigger.
fn watch_refs(paths: Vec<std::path::PathBuf>, triggers: mpsc::Sender<Trigger>) -> Option<notify::RecommendedWatcher> {
    use notify::{RecursiveMode, Watcher};
    let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        if event.is_ok() {
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
