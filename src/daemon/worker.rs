//! One worker per cluster: applies the desired set it is given, retries with exponential backoff
//! and jitter when that fails, and checks drift on an interval, acting as the cluster's policy says.
//! Workers share nothing but a semaphore bounding how many clusters reconcile at once, so one
//! failing or slow cluster never delays the others.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, watch};
use tokio::time::Instant;
use tracing::{info, warn};

use super::Shared;
use super::evaluate::Deferred;
use super::store::DriftRow;
use crate::apply::{self, Action};
use crate::config::TargetConfig;
use crate::model::DriftPolicy;
use crate::render::{DesiredSet, PackedSet};
use crate::report::State;
use crate::target::{self, AnyTarget};

/// What a cluster should run.
#[derive(Clone, Debug)]
pub struct Job {
    /// Packed: a daemon holds one per cluster for as long as it runs.
    pub set: PackedSet,
    /// The revision whose profile content `set` is.
    pub profile_revision: Option<String>,
    /// The revision whose cluster file `set` is.
    pub cluster_revision: Option<String>,
    pub target: TargetConfig,
    pub drift: DriftPolicy,
    /// Set when `set` is only the identity of what the cluster runs (the store's record of it):
    /// what renders it when it is first needed.
    pub deferred: Option<Arc<Deferred>>,
}

pub enum Msg {
    Run(Box<Job>),
    /// The cluster left the repository: stop, deleting its objects first when `prune`.
    Remove {
        prune: bool,
    },
}

const BACKOFF_START: Duration = Duration::from_secs(2);
const BACKOFF_MAX: Duration = Duration::from_secs(300);

/// `base` ± 20 %, so many clusters failing together do not retry in lockstep.
fn jitter(base: Duration) -> Duration {
    base.mul_f64(0.8 + fastrand::f64() * 0.4)
}

pub fn backoff(failures: u32) -> Duration {
    let exp = BACKOFF_START.saturating_mul(1u32 << failures.min(16).saturating_sub(1));
    jitter(exp.min(BACKOFF_MAX))
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
}

impl Worker {
    pub fn spawn(
        name: String,
        shared: Arc<Shared>,
        shutdown: watch::Receiver<bool>,
    ) -> (mpsc::Sender<Msg>, tokio::task::JoinHandle<()>) {
        let (tx, rx) = mpsc::channel(8);
        let applied = shared.store.cluster(&name).ok().flatten().and_then(|c| c.digest);
        let worker = Worker {
            name,
            shared,
            job: None,
            applied,
            needs_apply: false,
            failures: 0,
            next_attempt: Instant::now(),
            // A first drift check soon after start: the daemon may have been down a while.
            next_drift: Instant::now(),
            target: None,
        };
        (tx, tokio::task::spawn_local(worker.run(rx, shutdown)))
    }

    async fn run(mut self, mut rx: mpsc::Receiver<Msg>, mut shutdown: watch::Receiver<bool>) {
        loop {
            let deadline = if self.needs_apply { self.next_attempt } else { self.next_drift };
            tokio::select! {
                msg = rx.recv() => match msg {
                    None => break,
                    Some(Msg::Run(job)) => self.take(*job),
                    Some(Msg::Remove { prune }) => {
                        self.remove(prune).await;
                        break;
                    }
                },
                _ = tokio::time::sleep_until(deadline), if self.job.is_some() => {
                    if self.suspended() {
                        self.next_drift = Instant::now() + self.shared.config.drift_interval;
                        self.next_attempt = self.next_drift;
                    } else if self.needs_apply {
                        self.apply().await;
                    } else {
                        self.check_drift().await;
                    }
                }
                _ = shutdown.changed() => break,
            }
        }
    }

    fn suspended(&self) -> bool {
        self.shared.store.cluster(&self.name).ok().flatten().is_some_and(|c| c.suspended)
    }

    fn take(&mut self, job: Job) {
        let changed = self.applied.as_deref() != Some(job.set.digest.as_str())
            || self.job.as_ref().is_some_and(|old| old.target != job.target);
        if changed {
            self.needs_apply = true;
            self.failures = 0;
            self.next_attempt = Instant::now();
        }
        self.job = Some(job);
    }

    async fn target(&mut self) -> Result<&AnyTarget, String> {
        let wanted = &self.job.as_ref().expect("a job").target;
        // A SIGHUP reload of the proxy and TLS material reconnects too.
        let generation = self.shared.network.generation();
        if self.target.as_ref().is_none_or(|(config, made, _)| config != wanted || *made != generation) {
            let network = self.shared.network.current().network.clone();
            let connected = target::connect(wanted, &network).await.map_err(|e| e.to_string())?;
            self.target = Some((wanted.clone(), generation, connected));
        }
        Ok(&self.target.as_ref().expect("just set").2)
    }

    /// The set to apply or check drift against; one deferred at start is rendered now, once.
    async fn desired(&mut self) -> Result<DesiredSet, String> {
        let job = self.job.as_mut().expect("a job");
        if let Some(deferred) = job.deferred.clone() {
            let revision = |r: &Option<String>| r.clone().unwrap_or_default();
            let (profile_revision, cluster_revision) =
                (revision(&job.profile_revision), revision(&job.cluster_revision));
            job.set = deferred.render(&self.name, &profile_revision, &cluster_revision).await?;
            job.deferred = None;
        }
        Ok(job.set.unpack())
    }

    fn failed(&mut self, message: &str, revision: Option<&str>) {
        self.failures += 1;
        let wait = backoff(self.failures);
        warn!(cluster = %self.name, error = %message, retry_in = ?wait, "Reconcile failed.");
        let _ = self.shared.store.set_sync(&self.name, "failed", Some(message), revision);
        self.shared.touch();
        self.needs_apply = true;
        self.next_attempt = Instant::now() + wait;
    }

    async fn apply(&mut self) {
        let shared = self.shared.clone();
        let _permit = shared.permits.acquire().await;
        let set = self.desired().await;
        let job = self.job.clone().expect("a job");
        let revision = job.cluster_revision.as_deref();
        info!(cluster = %self.name, revision = revision.unwrap_or("-"), profile = %job.set.profile, version = %job.set.version, "Applying.");
        let _ = self.shared.store.set_sync(&self.name, "applying", None, revision);
        shared.touch();
        let what = format!("{}@{}", job.set.profile, job.set.version);
        if let Some(rev) = revision {
            shared.report(&self.name, rev, State::Pending, &format!("applying {what}"));
        }
        let started = std::time::Instant::now();
        let options = self.shared.config.apply.clone();
        let result = match (set, self.target().await) {
            (Ok(set), Ok(target)) => {
                apply::reconcile(target, &set, revision, &options).await.map_err(|e| e.to_string())
            }
            (Err(e), _) | (_, Err(e)) => Err(e),
        };
        self.shared.metrics.reconcile_seconds.observe(started.elapsed().as_secs_f64());
        match result {
            Err(message) => {
                self.shared.metrics.result(&self.shared.metrics.reconciles, "failed");
                if let Some(rev) = revision {
                    shared.report(&self.name, rev, State::Failure, &format!("apply of {what} failed: {message}"));
                }
                self.failed(&message, revision);
            }
            Ok(cs) if cs.count(Action::Failed) > 0 => {
                self.shared.metrics.result(&self.shared.metrics.reconciles, "failed");
                let failed: Vec<String> = cs
                    .objects
                    .iter()
                    .filter(|o| o.action == Action::Failed)
                    .map(|o| format!("{}: {}", o.id, o.message.as_deref().unwrap_or("")))
                    .collect();
                let message = format!("{}; {}", cs.summary(), failed.join("; "));
                if let Some(rev) = revision {
                    shared.report(&self.name, rev, State::Failure, &format!("apply of {what} failed: {message}"));
                }
                self.failed(&message, revision);
            }
            Ok(cs) => {
                let (sync, health) =
                    if cs.unhealthy.is_empty() { ("applied", "ready") } else { ("unhealthy", "progressing") };
                self.shared.metrics.result(&self.shared.metrics.reconciles, sync);
                let mut summary = cs.summary();
                for (id, h) in &cs.unhealthy {
                    summary.push_str(&format!(
                        "; {id}: {}",
                        serde_json::to_value(h).map(|v| v["reason"].to_string()).unwrap_or_default()
                    ));
                }
                info!(cluster = %self.name, result = %summary, millis = cs.millis, "Applied.");
                if let Some(rev) = revision {
                    let (state, description) = if cs.unhealthy.is_empty() {
                        (State::Success, format!("applied {what}: {}", cs.summary()))
                    } else {
                        (State::Failure, format!("{what} unhealthy: {summary}"))
                    };
                    shared.report(&self.name, rev, state, &description);
                }
                let _ = self.shared.store.record_applied(
                    &self.name,
                    job.profile_revision.as_deref(),
                    job.cluster_revision.as_deref(),
                    &job.set.digest,
                    &job.set.profile,
                    &job.set.version,
                    sync,
                    health,
                    &summary,
                );
                self.applied = Some(job.set.digest.clone());
                let objects: Vec<(String, String, String)> = cs
                    .objects
                    .iter()
                    .filter(|o| !matches!(o.action, Action::Pruned | Action::Skipped))
                    .map(|o| (o.id.to_string(), o.layer.clone(), o.action.to_string()))
                    .collect();
                let _ = self.shared.store.set_objects(&self.name, &objects);
                if cs.unhealthy.is_empty() {
                    self.needs_apply = false;
                    self.failures = 0;
                } else {
                    // Applied, not yet healthy: look again later.
                    self.failures += 1;
                    self.next_attempt = Instant::now() + backoff(self.failures);
                }
                self.next_drift = Instant::now() + jitter(self.shared.config.drift_interval);
                shared.touch();
            }
        }
    }

    async fn check_drift(&mut self) {
        let shared = self.shared.clone();
        let permit = shared.permits.acquire().await;
        self.next_drift = Instant::now() + jitter(self.shared.config.drift_interval);
        let set = self.desired().await;
        let job = self.job.clone().expect("a job");
        let options = self.shared.config.apply.clone();
        let findings = match (set, self.target().await) {
            (Ok(set), Ok(target)) => apply::detect_drift(target, &set, &options).await.map_err(|e| e.to_string()),
            (Err(e), _) | (_, Err(e)) => Err(e),
        };
        let findings = match findings {
            Ok(f) => f,
            Err(e) => {
                warn!(cluster = %self.name, error = %e, "Drift check failed.");
                return;
            }
        };
        let now = super::store::now();
        let rows: Vec<DriftRow> = findings
            .iter()
            .map(|f| DriftRow {
                object: f.id.to_string(),
                path: f.path.clone(),
                live: f.live.as_ref().map(|v| v.to_string()),
                desired: f.desired.as_ref().map(|v| v.to_string()),
                found_at: now,
            })
            .collect();
        let _ = self.shared.store.set_drift(&self.name, &rows);
        shared.touch();
        self.shared
            .metrics
            .drifted_objects
            .get_or_create(&super::metrics::ClusterLabel { cluster: self.name.clone() })
            .set(findings.len() as i64);
        if findings.is_empty() {
            return;
        }
        warn!(cluster = %self.name, fields = findings.len(), policy = ?job.drift, "Drift found.");
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
            shared.report(&self.name, rev, State::Failure, &description);
        }
        if job.drift == DriftPolicy::Correct {
            drop(permit);
            self.apply().await;
        }
    }

    async fn remove(&mut self, prune: bool) {
        if prune && let Some(job) = self.job.clone() {
            let empty = DesiredSet {
                cluster: job.set.cluster.clone(),
                profile: job.set.profile.clone(),
                version: job.set.version.clone(),
                layers: Vec::new(),
                digest: String::new(),
            };
            let options = apply::Options { allow_empty: true, ..self.shared.config.apply.clone() };
            match self.target().await {
                Ok(target) => match apply::reconcile(target, &empty, None, &options).await {
                    Ok(cs) => info!(cluster = %self.name, result = %cs.summary(), "Removed cluster pruned."),
                    Err(e) => warn!(cluster = %self.name, error = %e, "Pruning a removed cluster failed."),
                },
                Err(e) => warn!(cluster = %self.name, error = %e, "Pruning a removed cluster failed."),
            }
        }
        let message =
            if prune { "cluster file removed; objects deleted" } else { "cluster file removed; objects left in place" };
        let _ = self.shared.store.set_sync(&self.name, "removed", Some(message), None);
        self.shared.touch();
        let _ = self.shared.store.clear_pending(&self.name);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_exponentially_to_a_cap_with_jitter() {
        for (failures, base) in [(1, 2.0), (2, 4.0), (3, 8.0), (9, 300.0), (30, 300.0)] {
            let d = backoff(failures).as_secs_f64();
            assert!(d >= base * 0.8 - 1e-9 && d <= base * 1.2 + 1e-9, "{failures}: {d}");
        }
    }
}
