//! Evaluate: one revision in, per cluster what the daemon should do about it out.
//!
//! ```text
//!   head revision ──┐
//!   what each cluster runs (store) ──> load both ──> plan per cluster ──> decide by policy ──> Outcome
//!   approvals, suspensions (store) ──┘                                    (job | pending | error)
//! ```
//!
//! Blocking (git2 reads, rendering): the event loop runs it on a blocking thread and hands the
//! outcomes to the workers. What the workers are to run is rendered on every core; what the
//! store proves a cluster already runs (after a restart: the digest it applied, at revisions the
//! head still equals) is not rendered at all — the worker gets its identity, and a [`Deferred`]
//! renders it when the worker first needs it.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex};

use rayon::prelude::*;
use tokio::sync::oneshot;
use tracing::warn;

use super::Shared;
use super::decide::{self, Decision, Hold, Run};
use super::store::{self, Pending};
use super::worker::Job;
use crate::config::TargetConfig;
use crate::model::{Cluster, DriftPolicy, Model};
use crate::plan::{self, ChangeKind, ClusterPlan, Edits};
use crate::render::tools::SystemTools;
use crate::render::{PackedSet, Renderer};
use crate::source::{Changes, GitSource, Snapshot};

/// The first diagnostic of a report, without its `error[code]:` prefix: what fits a status.
pub fn first_problem(text: &str) -> String {
    let line = text.lines().find(|l| l.starts_with("error[")).or_else(|| text.lines().next()).unwrap_or("");
    line.split_once("]: ").map(|(_, rest)| rest).unwrap_or(line).to_string()
}

impl Outcome {
    pub fn new(cluster: &str, head: &str) -> Outcome {
        Outcome {
            cluster: cluster.to_string(),
            revision: Some(head.to_string()),
            job: None,
            pending: None,
            error: None,
        }
    }

    /// The cluster does not render (or has no target) at `head`.
    pub fn failed(cluster: &str, head: &str, message: String) -> Outcome {
        Outcome { error: Some(message), ..Outcome::new(cluster, head) }
    }
}

/// What one evaluation decided for one cluster.
pub struct Outcome {
    pub cluster: String,
    /// The revision evaluated.
    pub revision: Option<String>,
    pub job: Option<Job>,
    pub pending: Option<Pending>,
    /// The revision does not render for this cluster: the message.
    pub error: Option<String>,
}

fn pending_summary(plan: &ClusterPlan, hold: &Hold, cluster: &str) -> String {
    let what = plan.to.clone().unwrap_or_default();
    match hold {
        Hold::Approval => format!("pending update {what} — approve: strata approve {cluster}"),
        Hold::Window { window } => format!("pending update {what} — waits for its window {window}"),
    }
}

/// Loads, plans and decides every cluster at `head`. Blocking (git2, rendering).
pub fn evaluate(
    shared: &Shared,
    source: &crate::source::GitSource,
    head: &str,
    running: &HashSet<String>,
) -> Result<Vec<Outcome>, String> {
    let outcomes = evaluate_at(shared, source, head, running);
    give_back_freed_memory();
    outcomes
}

fn evaluate_at(
    shared: &Shared,
    source: &crate::source::GitSource,
    head: &str,
    running: &HashSet<String>,
) -> Result<Vec<Outcome>, String> {
    // Every revision some cluster runs, plus the head.
    let states: BTreeMap<String, store::ClusterState> =
        shared.store.clusters()?.into_iter().map(|c| (c.name.clone(), c)).collect();
    let mut revisions: Vec<String> = vec![head.to_string()];
    for s in states.values() {
        for rev in [&s.profile_revision, &s.cluster_revision].into_iter().flatten() {
            if !revisions.contains(rev) {
                revisions.push(rev.clone());
            }
        }
    }
    let mut loaded: HashMap<String, (Snapshot, Model)> = HashMap::new();
    // What each revision differs from the head in: what is loaded again, and what is rendered.
    let mut changes: HashMap<String, Changes> = HashMap::new();
    for rev in &revisions {
        let snapshot = match source.snapshot(rev) {
            Ok(s) => s,
            Err(e) if rev == head => return Err(e.to_string()),
            Err(e) => {
                warn!(revision = %rev, error = %e, "A revision a cluster runs is gone from the repository.");
                continue;
            }
        };
        let model = match loaded.get(head) {
            Some((head_snapshot, head_model)) => match source.changes(&snapshot, head_snapshot) {
                Ok(diff) => {
                    let model = crate::repo::load_reusing(snapshot.tree.as_ref(), head_model, &diff);
                    changes.insert(rev.clone(), diff);
                    model
                }
                Err(_) => crate::repo::load(snapshot.tree.as_ref()),
            },
            None => crate::repo::load(snapshot.tree.as_ref()),
        };
        match model {
            Ok(model) => {
                loaded.insert(rev.clone(), (snapshot, model));
            }
            Err(diags) if rev == head => return Err(format!("revision {head} does not load:\n{diags}")),
            Err(_) => {}
        }
    }
    let tools = SystemTools::default();
    let renderers: HashMap<&str, Renderer> = loaded
        .iter()
        .map(|(rev, (snap, model))| (rev.as_str(), Renderer::new(snap.tree.as_ref(), model, &tools)))
        .collect();
    let (head_snapshot, head_model) = &loaded[head];
    let unchanged = Changes::default();
    let edits: HashMap<&str, Edits> = loaded
        .iter()
        .map(|(rev, (snapshot, _))| {
            let diff = if rev == head { Some(&unchanged) } else { changes.get(rev) };
            (rev.as_str(), Edits::new(diff, snapshot.tree.as_ref(), head_snapshot.tree.as_ref()))
        })
        .collect();
    let head_renderer = &renderers[head];
    *shared.tags.lock().expect("tags lock") =
        head_model.clusters.iter().map(|(n, c)| (n.clone(), c.tags.clone())).collect();

    let now = store::now();
    let mut outcomes = Vec::new();
    let mut renders = Vec::new();
    let deferred = Arc::new(Deferred::new(source.clone()));
    // What the store records a cluster runs, when it records all of it.
    let recorded = |s: &store::ClusterState| match (&s.digest, &s.profile, &s.version) {
        (Some(digest), Some(profile), Some(version)) => Some(PackedSet::identity(&s.name, profile, version, digest)),
        _ => None,
    };
    for (name, cluster) in &head_model.clusters {
        let state = states.get(name);
        let applied = state.and_then(|s| s.digest.as_ref()).is_some();
        let base_rev = state.and_then(|s| s.profile_revision.clone());
        let cluster_rev = state.and_then(|s| s.cluster_revision.clone());
        let base = base_rev.as_deref().and_then(|r| loaded.get_key_value(r)).map(|(r, l)| (r.as_str(), l));
        let base_cluster = cluster_rev.as_deref().and_then(|r| loaded.get(r)).and_then(|(_, m)| m.clusters.get(name));
        let target = match shared.config.target(name, &cluster.target) {
            Ok(t) => t.clone(),
            Err(d) => {
                outcomes.push(Outcome::failed(name, head, d.to_string()));
                continue;
            }
        };

        // The plan from what the cluster runs to the head.
        let plan = match (applied, base, base_cluster) {
            (true, Some((base_rev, _)), Some(base_cluster))
                if base_rev != head || cluster_rev.as_deref() != Some(head) =>
            {
                let result = plan::compare(
                    (base_cluster, &renderers[base_rev]),
                    (cluster, head_renderer),
                    &edits[base_rev],
                    &shared.config.apply.redactor,
                );
                match result {
                    Ok(plan) => Some(plan),
                    Err(d) => {
                        outcomes.push(Outcome::failed(name, head, d.to_string()));
                        continue;
                    }
                }
            }
            _ => None,
        };
        let unchanged = ClusterPlan {
            cluster: name.clone(),
            kind: ChangeKind::Unchanged,
            reasons: Vec::new(),
            from: None,
            to: None,
            updates: cluster.updates,
            pending: false,
            update_available: None,
            base_digest: None,
            head_digest: None,
            objects: Vec::new(),
        };
        // Applied, but what it runs can no longer be read: treat the head as new to it.
        let applied = applied && (plan.is_some() || (base.is_some() && base_cluster.is_some()));
        let plan_ref = plan.as_ref().unwrap_or(&unchanged);
        let approved = shared.store.approval(name, head)?.is_some();
        let suspended = state.is_some_and(|s| s.suspended);
        let Decision { run, hold } = decide::decide(&decide::Input {
            applied,
            plan: plan_ref,
            updates: cluster.updates,
            window: cluster.window.as_ref(),
            approved,
            suspended,
            now,
        });

        let mut recorded_job = None;
        let wanted = match run {
            Run::Head => Some((head_renderer, cluster, Some(head), Some(head))),
            Run::HeadClusterOnAppliedProfile => {
                let (rev, _) = base.expect("held updates have a base");
                Some((&renderers[rev], cluster, Some(rev), Some(head)))
            }
            // The worker already has it; after a restart it needs it again.
            Run::Keep if running.contains(name) => None,
            Run::Keep => match (base, base_cluster, state.and_then(recorded)) {
                // What it runs, as the store records it: rendered when the worker needs it.
                (Some((rev, _)), Some(_), Some(identity)) => {
                    recorded_job = Some(Job {
                        set: identity,
                        profile_revision: Some(rev.to_string()),
                        cluster_revision: cluster_rev.clone(),
                        target: target.clone(),
                        drift: cluster.drift,
                        deferred: Some(deferred.clone()),
                    });
                    None
                }
                (Some((rev, _)), Some(base_cluster), None) => {
                    Some((&renderers[rev], base_cluster, Some(rev), cluster_rev.as_deref()))
                }
                _ => None,
            },
        };
        if let Some((renderer, which, profile_rev, cluster_rev)) = wanted {
            renders.push(ToRender {
                outcome: outcomes.len(),
                renderer,
                cluster: which,
                profile_revision: profile_rev.map(str::to_string),
                cluster_revision: cluster_rev.map(str::to_string),
                target,
                drift: cluster.drift,
            });
        }
        let mut outcome = Outcome::new(name, head);
        outcome.job = recorded_job;
        if let Some(hold) = hold {
            let diff: String = plan_ref.objects.iter().map(|o| o.diff.as_str()).collect::<Vec<_>>().join("");
            outcome.pending = Some(Pending {
                cluster: name.clone(),
                base_revision: base_rev.clone().unwrap_or_default(),
                head_revision: head.to_string(),
                hold: serde_json::to_string(&hold).expect("serialises"),
                summary: pending_summary(plan_ref, &hold, name),
                diff,
                since: now,
            });
        }
        outcomes.push(outcome);
    }

    // What the workers are to run, rendered on every core; only the packed sets are kept.
    let rendered: Vec<(usize, Result<Job, String>)> = renders
        .into_par_iter()
        .map(|r| {
            let job = r.renderer.render(r.cluster).map_err(|d| d.to_string()).map(|set| Job {
                set: set.pack(),
                profile_revision: r.profile_revision,
                cluster_revision: r.cluster_revision,
                target: r.target,
                drift: r.drift,
                deferred: None,
            });
            (r.outcome, job)
        })
        .collect();
    for (i, job) in rendered {
        match job {
            Ok(job) => outcomes[i].job = Some(job),
            Err(message) => outcomes[i].error = Some(message),
        }
    }
    Ok(outcomes)
}

/// Renders desired sets that were deferred, when workers ask for them. Requests that come in
/// while a batch renders make the next batch: after a restart a thousand workers ask at about
/// the same time, and each revision is loaded once for all of them and rendered on every core.
pub struct Deferred {
    source: GitSource,
    queue: Mutex<Queue>,
}

#[derive(Default)]
struct Queue {
    waiting: Vec<Request>,
    /// Whether a blocking task is serving the queue.
    serving: bool,
}

struct Request {
    cluster: String,
    profile_revision: String,
    cluster_revision: String,
    reply: oneshot::Sender<Result<PackedSet, String>>,
}

/// A revision's profile content (snapshot and model) and, when another revision's, its cluster files.
type Loaded = (Snapshot, Model, Option<Model>);

impl std::fmt::Debug for Deferred {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Deferred").field("source", &self.source).finish_non_exhaustive()
    }
}

impl Deferred {
    pub fn new(source: GitSource) -> Self {
        Deferred { source, queue: Mutex::default() }
    }

    /// The set `cluster` runs: its profile content at `profile_revision`, its cluster file at
    /// `cluster_revision`.
    pub async fn render(
        self: &Arc<Self>,
        cluster: &str,
        profile_revision: &str,
        cluster_revision: &str,
    ) -> Result<PackedSet, String> {
        let (reply, answer) = oneshot::channel();
        let start = {
            let mut queue = self.queue.lock().unwrap_or_else(|p| p.into_inner());
            queue.waiting.push(Request {
                cluster: cluster.to_string(),
                profile_revision: profile_revision.to_string(),
                cluster_revision: cluster_revision.to_string(),
                reply,
            });
            !std::mem::replace(&mut queue.serving, true)
        };
        if start {
            let this = self.clone();
            tokio::task::spawn_blocking(move || this.serve());
        }
        answer.await.map_err(|_| "rendering the set stopped".to_string())?
    }

    fn serve(&self) {
        let tools = SystemTools::default();
        // Revisions loaded while requests keep coming.
        let mut loaded: HashMap<(String, String), Result<Loaded, String>> = HashMap::new();
        loop {
            let batch = {
                let mut queue = self.queue.lock().unwrap_or_else(|p| p.into_inner());
                if queue.waiting.is_empty() {
                    queue.serving = false;
                    break;
                }
                std::mem::take(&mut queue.waiting)
            };
            let mut by_revisions: HashMap<(String, String), Vec<Request>> = HashMap::new();
            for request in batch {
                let key = (request.profile_revision.clone(), request.cluster_revision.clone());
                by_revisions.entry(key).or_default().push(request);
            }
            for (key, requests) in by_revisions {
                let (snapshot, model, cluster_model) =
                    match loaded.entry(key.clone()).or_insert_with(|| self.load(&key.0, &key.1)) {
                        Ok(loaded) => loaded,
                        Err(e) => {
                            for request in requests {
                                let _ = request.reply.send(Err(e.clone()));
                            }
                            continue;
                        }
                    };
                let renderer = Renderer::new(snapshot.tree.as_ref(), model, &tools);
                let clusters = cluster_model.as_ref().unwrap_or(model);
                requests.into_par_iter().for_each(|request| {
                    let set = match clusters.clusters.get(&request.cluster) {
                        Some(cluster) => renderer.render(cluster).map(|set| set.pack()).map_err(|d| d.to_string()),
                        None => Err(format!("cluster {} is not at revision {}", request.cluster, key.1)),
                    };
                    let _ = request.reply.send(set);
                });
            }
        }
        drop(loaded);
        give_back_freed_memory();
    }

    fn load(&self, profile_revision: &str, cluster_revision: &str) -> Result<Loaded, String> {
        let load = |revision: &str| -> Result<(Snapshot, Model), String> {
            let snapshot = self.source.snapshot(revision).map_err(|e| e.to_string())?;
            let model = crate::repo::load(snapshot.tree.as_ref())
                .map_err(|d| format!("revision {revision} does not load:\n{d}"))?;
            Ok((snapshot, model))
        };
        let (snapshot, model) = load(profile_revision)?;
        let clusters = if cluster_revision == profile_revision { None } else { Some(load(cluster_revision)?.1) };
        Ok((snapshot, model, clusters))
    }
}

/// A desired set an evaluation renders for a worker.
struct ToRender<'r> {
    /// Which outcome it belongs to.
    outcome: usize,
    renderer: &'r Renderer<'r>,
    cluster: &'r Cluster,
    profile_revision: Option<String>,
    cluster_revision: Option<String>,
    target: TargetConfig,
    drift: DriftPolicy,
}

/// Rendering a fleet allocates and frees its parsed sets by the thousand, and glibc keeps what
/// is freed in its arenas; handing it back keeps the daemon's resident memory what it holds (its
/// packed sets), not the peak of its last evaluation.
fn give_back_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only returns free memory to the system; it has no preconditions.
    unsafe {
        libc::malloc_trim(0);
    }
}
