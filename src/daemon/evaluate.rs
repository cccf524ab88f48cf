//! Evaluate: one revision in, per cluster what the daemon should do about it out.
//!
//! ```text
//!   head revision ──┐
//!   what each cluster runs (store) ──> load both ──> plan per cluster ──> decide by policy ──> Outcome
//!   approvals, suspensions (store) ──┘                                    (job | pending | error)
//! ```
//!
//! Blocking (git2 reads, rendering): the event loop runs it on a blocking thread and hands the
//! outcomes to the workers.

use std::collections::{BTreeMap, HashMap, HashSet};

use tracing::warn;

use super::Shared;
use super::decide::{self, Decision, Hold, Run};
use super::store::{self, Pending};
use super::worker::Job;
use crate::model::Model;
use crate::plan::{self, ChangeKind, ClusterPlan, Edits};
use crate::render::Renderer;
use crate::render::tools::SystemTools;
use crate::source::{Changes, Snapshot};

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

        let rendered = match run {
            Run::Head => Some((head_renderer.render(cluster), Some(head), Some(head))),
            Run::HeadClusterOnAppliedProfile => {
                let (rev, _) = base.expect("held updates have a base");
                Some((renderers[rev].render(cluster), Some(rev), Some(head)))
            }
            // The worker already has it; after a restart it needs it again.
            Run::Keep if running.contains(name) => None,
            Run::Keep => match (base, base_cluster) {
                (Some((rev, _)), Some(base_cluster)) => {
                    Some((renderers[rev].render(base_cluster), Some(rev), cluster_rev.as_deref()))
                }
                _ => None,
            },
        };
        let mut outcome = Outcome::new(name, head);
        match rendered {
            Some((Ok(set), profile_rev, cluster_rev)) => {
                outcome.job = Some(Job {
                    set: set.pack(),
                    profile_revision: profile_rev.map(str::to_string),
                    cluster_revision: cluster_rev.map(str::to_string),
                    target,
                    drift: cluster.drift,
                });
            }
            Some((Err(d), _, _)) => outcome.error = Some(d.to_string()),
            None => {}
        }
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
    Ok(outcomes)
}
