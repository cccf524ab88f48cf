//! The daemon's side of rollouts: the pure gate ([`crate::rollout::gate`]) fed from the store and
//! the evaluation, and what comes back stored, reported and counted.
//!
//! ```text
//!   evaluate ── per cluster: plan, pin moved ──> gate_all ── per rollout: gate ──> verdict per cluster
//!   store: progress, what clusters run, drift ──┘    │ save (compare-and-swap on the generation; retry)
//!                                                    └─> commit status strata/rollout/<name>, metrics,
//!                                                        log lines, when to evaluate again (a bake ends)
//!   worker ── result of an apply it was released for ──> record_result ──> store, evaluate again
//!   API, view, CLI ── promote | pause | resume | abort ──> act ──> store, evaluate again
//! ```
//!
//! Progress is one record per rollout ([`Progress`]), read and written whole through four store
//! calls (`rollouts`, `rollout`, `save_rollout`, `delete_rollout`); a save names the generation
//! it read, so an evaluation, a worker's result and an operator's action never overwrite one
//! another: the loser reads again and decides again.

use crate::daemon::store::Store as _;
use std::collections::BTreeMap;
use std::sync::atomic::Ordering;

use tracing::{info, warn};

use super::Shared;
use super::audit::{Actor, Outcome as AuditOutcome};
use super::decide::Hold;
use super::metrics::{RolloutLabel, RolloutStateLabel};
use super::state::{Health as SyncHealth, Sync};
use super::store::{self, ClusterState, StoreError, now_ms};
use crate::model::Model;
use crate::plan::ClusterPlan;
use crate::plan::rollouts::{Changed, causes};
use crate::rollout::Rollout;
use crate::rollout::gate::{
    self, Action, Before, Blocker, Change, ClusterRun, Health, Member, Progress, Refused, Report, RunState, Running,
    Verdict,
};

/// How often a save that lost to another writer is tried again with what is stored then.
const SAVE_ATTEMPTS: usize = 8;

/// One cluster as the evaluation planned it.
pub struct Planned<'a> {
    /// From what it runs to the head; `None` when it runs nothing yet.
    pub plan: Option<&'a ClusterPlan>,
    /// Whether its file's `spec.profile` moved since what it runs.
    pub pin_moved: bool,
}

/// What a rollout says about one cluster.
#[derive(Clone, Debug)]
pub struct Gate {
    pub rollout: String,
    pub verdict: Verdict,
    /// The wave the cluster is in (what approval rules with `waves` select).
    pub wave: Option<String>,
}

impl Gate {
    /// The hold to record as the cluster's pending update, when the rollout holds it.
    pub fn hold(&self) -> Option<Hold> {
        match &self.verdict {
            Verdict::Hold { wave, why } => {
                Some(Hold::Rollout { rollout: self.rollout.clone(), wave: wave.clone(), why: why.clone() })
            }
            _ => None,
        }
    }
}

/// The commit status context of a rollout.
pub fn context(rollout: &str) -> String {
    format!("strata/rollout/{rollout}")
}

/// What a cluster runs, and how its last apply went, as the gate sees it.
fn running(state: &ClusterState) -> Option<Running> {
    let before = Before {
        profile_revision: state.profile_revision.clone()?,
        cluster_revision: state.cluster_revision.clone()?,
        digest: state.digest.clone()?,
        what: format!("{}@{}", state.profile.as_deref().unwrap_or("?"), state.version.as_deref().unwrap_or("?")),
    };
    let health = match (state.sync, state.health) {
        (Sync::Applied, Some(SyncHealth::Ready)) => Health::Healthy,
        (Sync::Unhealthy, _) => Health::Unhealthy(state.message.clone().unwrap_or_default()),
        _ => Health::Unknown,
    };
    Some(Running { before, health, applied_at: state.applied_at.map(|s| s * 1000) })
}

/// Gates every rollout of `model` at `head`; `planned` is every cluster that was planned, `states`
/// what each runs, `stored` every rollout's stored progress. Returns the verdicts for the
/// clusters some rollout has in its run. On the evaluation's blocking thread: it waits for the
/// store there ([`store::wait`]).
pub fn gate_all(
    shared: &Shared,
    head: &str,
    model: &Model,
    planned: &BTreeMap<&str, Planned>,
    states: &BTreeMap<String, ClusterState>,
    mut stored: BTreeMap<String, Progress>,
) -> Result<BTreeMap<String, Gate>, StoreError> {
    *shared.rollouts.lock().unwrap_or_else(|p| p.into_inner()) = model.rollouts.clone();
    // Every policy's gauges exist from the start, at zero until it runs.
    for name in model.rollouts.keys() {
        shared.metrics.know_rollout(name);
    }
    for gone in stored.keys().filter(|name| !model.rollouts.contains_key(*name)) {
        info!(rollout = %gone, "Rollout policy removed: its progress is forgotten.");
        store::wait(shared.store.delete_rollout(gone))?;
        shared.metrics.forget_rollout(gone);
    }
    let changed = planned.iter().filter_map(|(name, p)| {
        let plan = p.plan.filter(|plan| plan.changed())?;
        Some(Changed { cluster: name, plan, pin_moved: p.pin_moved })
    });
    let causes = causes(changed);
    let now = now_ms();
    let mut verdicts = BTreeMap::new();
    let mut wake: Option<i64> = None;
    for rollout in model.rollouts.values() {
        let previous = stored.remove(&rollout.name);
        let drift_matters = |name: &str| {
            rollout.fail_on_drift
                && previous.as_ref().and_then(|p| p.clusters.get(name)).is_some_and(|c| c.state == ClusterRun::Updated)
        };
        let mut members = Vec::new();
        for (name, cluster) in model.clusters.iter().filter(|(_, c)| rollout.governs(&c.profile)) {
            let plan = planned.get(name.as_str()).and_then(|p| p.plan);
            let change = causes.get(name.as_str()).zip(plan).and_then(|(cause, plan)| {
                Some(Change { cause: *cause, to: plan.to.clone()?, target: plan.head_digest.clone()? })
            });
            let drift_at =
                if drift_matters(name) { store::wait(shared.store.drift_at(name))?.map(|at| at * 1000) } else { None };
            // The same rule the cluster is decided by once released (the approval rules in force
            // as the last evaluation placed it, with its wave then): the store is read only for
            // clusters that could be held for approval at all.
            let awaits_approval = match plan {
                Some(plan) if change.is_some() && super::decide::needs_approval(plan, cluster.updates, false) => {
                    let rules = shared.approval_rules.lock().unwrap_or_else(|p| p.into_inner()).get(name).cloned();
                    !super::evaluate::verdict(shared, name, head, rules.as_ref())?.approved()
                }
                _ => false,
            };
            members.push(Member {
                name,
                tags: &cluster.tags,
                change,
                running: states.get(name).and_then(running),
                drift_at,
                awaits_approval,
            });
        }
        let prior: BTreeMap<String, String> =
            previous.iter().flat_map(|p| p.clusters.iter().map(|(n, c)| (n.clone(), c.wave.clone()))).collect();
        let gated = save(shared, rollout, head, &members, previous, now)?;
        let wave_of = |cluster: &str| match &gated.progress {
            Some(p) => p.clusters.get(cluster).map(|c| c.wave.clone()),
            None => prior.get(cluster).cloned(),
        };
        for event in &gated.events {
            let (cluster, wave) = (event.cluster.as_deref(), event.wave.as_deref());
            info!(rollout = %rollout.name, revision = %head, cluster, wave, "Rollout: {}.", event.what);
        }
        for report in gated.superseded.iter().chain(&gated.status) {
            report_status(shared, &rollout.name, report);
        }
        if let Some(p) = &gated.progress {
            let awaiting: Vec<&str> = members.iter().filter(|m| m.awaits_approval).map(|m| m.name).collect();
            count(shared, rollout, p, now, &awaiting);
        }
        wake = match (wake, gated.wake_at) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        for (cluster, verdict) in &gated.verdicts {
            let gate = Gate { rollout: rollout.name.clone(), verdict: verdict.clone(), wave: wave_of(cluster) };
            verdicts.insert(cluster.clone(), gate);
        }
    }
    shared.rollout_wake.store(wake.unwrap_or(0), Ordering::Relaxed);
    Ok(verdicts)
}

/// Gates one rollout and stores the outcome, gating again on what is stored when another writer
/// got there first.
fn save(
    shared: &Shared,
    rollout: &Rollout,
    head: &str,
    members: &[Member],
    mut stored: Option<Progress>,
    now: i64,
) -> Result<gate::Gated, StoreError> {
    for _ in 0..SAVE_ATTEMPTS {
        let gated = gate::gate(rollout, head, members, stored.as_ref(), now);
        match &gated.progress {
            Some(p) if !store::wait(shared.store.save_rollout(p))? => {
                stored = store::wait(shared.store.rollout(&rollout.name))?
            }
            _ => return Ok(gated),
        }
    }
    warn!(rollout = %rollout.name, "Rollout progress keeps changing under the evaluation; holding its clusters until the next one.");
    let _ = shared.triggers.try_send(super::Trigger::Reevaluate(format!("rollout {}", rollout.name)));
    Ok(gate::gate(rollout, head, members, stored.as_ref(), now))
}

fn report_status(shared: &Shared, rollout: &str, report: &Report) {
    let url = shared.config.view.public_url.as_ref().map(|u| {
        let scheme = if u.https { "https" } else { "http" };
        let port = if u.port == if u.https { 443 } else { 80 } { String::new() } else { format!(":{}", u.port) };
        format!("{scheme}://{}{port}/rollouts/{}", u.host, super::http::view::segment(rollout))
    });
    store::wait(shared.report_to(context(rollout), &report.revision, report.state, &report.description, url));
}

/// The wave a rollout is at, numbered among its waves that hold clusters as everywhere else
/// ([`gate::wave_numbers`]; 0 when none does, all of them when it is done), how many such waves
/// there are, and the name of the one it is at.
pub fn wave_at(rollout: &Rollout, p: &Progress, now: i64) -> (usize, usize, Option<String>) {
    let (numbers, used) = gate::wave_numbers(p, rollout);
    match gate::blocker(p, rollout, now) {
        Blocker::Done => (used, used, None),
        b => (b.wave().and_then(|w| numbers[w]).unwrap_or(0), used, b.wave().map(|w| rollout.waves[w].name.clone())),
    }
}

/// Sets the rollout's gauges from its progress; `awaiting` are the clusters whose change waits
/// for their own approval once released.
fn count(shared: &Shared, rollout: &Rollout, p: &Progress, now: i64, awaiting: &[&str]) {
    let (wave, _, _) = wave_at(rollout, p, now);
    let label = RolloutLabel { rollout: rollout.name.clone() };
    shared.metrics.rollout_wave.get_or_create(&label).set(wave as i64);
    let stopped = matches!(p.state, RunState::Halted | RunState::Aborted);
    shared.metrics.rollout_halted.get_or_create(&label).set(stopped as i64);
    for state in [
        ClusterRun::Waiting,
        ClusterRun::Updating,
        ClusterRun::Updated,
        ClusterRun::Failed,
        ClusterRun::RollingBack,
        ClusterRun::RolledBack,
    ] {
        let label = RolloutStateLabel { rollout: rollout.name.clone(), state: state.as_str().to_string() };
        shared.metrics.rollout_clusters.get_or_create(&label).set(p.count(state) as i64);
    }
    let waiting =
        (0..rollout.waves.len()).map(|i| gate::awaiting_approval(p, rollout, i, awaiting).len()).sum::<usize>();
    let label = RolloutStateLabel { rollout: rollout.name.clone(), state: AWAITING_APPROVAL.to_string() };
    shared.metrics.rollout_clusters.get_or_create(&label).set(waiting as i64);
}

/// The `state` of `strata_rollout_clusters` for released clusters that wait for their own
/// approval (they are counted as `updating` too).
pub const AWAITING_APPROVAL: &str = "awaiting-approval";

/// Whether drift found on a cluster `rollout` released counts as a failure now: its policy says
/// so (`failOnDrift`) and it is still running.
pub async fn drift_fails(shared: &Shared, rollout: &str) -> bool {
    let fails = shared.rollouts.lock().unwrap_or_else(|p| p.into_inner()).get(rollout).is_some_and(|r| r.fail_on_drift);
    fails
        && matches!(shared.stored("read a rollout", shared.store.rollout(rollout).await), Some(Some(p)) if p.finished_at.is_none())
}

/// How an apply a rollout released went.
#[derive(Clone, Debug)]
pub enum Outcome {
    Applied,
    Unhealthy(String),
    Failed(String),
}

/// Records the result of an apply of `digest` to `cluster` that `rollout` released (or rolls
/// back). Returns whether the rollout's progress changed — or should have and could not be saved
/// (the store failing, other writers winning every try): either way the caller has the rollout
/// gated again, and the gate sees the result in the cluster's state. Results for a target the
/// rollout no longer brings, and after it finished, change nothing.
pub async fn record_result(shared: &Shared, rollout: &str, cluster: &str, digest: &str, outcome: &Outcome) -> bool {
    for _ in 0..SAVE_ATTEMPTS {
        let mut p = match shared.stored("read a rollout", shared.store.rollout(rollout).await) {
            Some(Some(p)) => p,
            Some(None) => return false,
            // Not read: gated again all the same.
            None => return true,
        };
        if p.finished_at.is_some() {
            return false;
        }
        let now = now_ms();
        let Some(entry) = p.clusters.get_mut(cluster) else { return false };
        let back = entry.before.as_ref().is_some_and(|b| b.digest == digest);
        let changed = match (entry.state, outcome) {
            (ClusterRun::Updating, Outcome::Applied) if entry.target == digest => {
                entry.state = ClusterRun::Updated;
                true
            }
            (ClusterRun::Updating | ClusterRun::Updated, Outcome::Unhealthy(why)) if entry.target == digest => {
                entry.state = ClusterRun::Failed;
                entry.message = Some(format!("unhealthy: {why}"));
                true
            }
            (ClusterRun::Updating | ClusterRun::Updated, Outcome::Failed(why)) if entry.target == digest => {
                entry.state = ClusterRun::Failed;
                entry.message = Some(format!("apply failed: {why}"));
                true
            }
            (ClusterRun::RollingBack, Outcome::Applied) if back => {
                entry.state = ClusterRun::RolledBack;
                true
            }
            // Back on what it ran, and that is unhealthy too: the rollout has done what it can,
            // the cluster's own status says the rest.
            (ClusterRun::RollingBack, Outcome::Unhealthy(why)) if back => {
                entry.state = ClusterRun::RolledBack;
                entry.message = Some(format!("rolled back, still unhealthy: {why}"));
                true
            }
            _ => false,
        };
        if !changed {
            return false;
        }
        entry.finished_at = Some(now);
        match shared.stored("record a rollout's result", shared.store.save_rollout(&p).await) {
            Some(true) => return true,
            Some(false) => continue,
            None => return true,
        }
    }
    true
}

/// Why an operator's action was not taken.
#[derive(Debug, thiserror::Error)]
pub enum ActError {
    #[error("no rollout named {0:?} in the repository")]
    NoRollout(String),
    #[error("rollout {0} has nothing to roll out")]
    Idle(String),
    #[error(transparent)]
    Refused(#[from] Refused),
    #[error("{0}")]
    Store(#[from] StoreError),
    #[error("rollout {0} keeps changing; try again")]
    Busy(String),
    /// The approval rules in force do not let this person promote the wave: why.
    #[error("{0}")]
    Forbidden(String),
}

/// Applies `action` by `actor` to `rollout`, and has it gated again at once; the audit trail
/// gets what was done, or why not.
pub async fn act(
    shared: &Shared,
    rollout: &str,
    action: &Action,
    actor: &Actor,
) -> Result<(String, Progress), ActError> {
    let allowed = match action {
        Action::Promote { wave, .. } => may_promote(shared, rollout, wave.as_deref(), actor).await,
        _ => Ok(()),
    };
    let result = match allowed {
        Ok(()) => act_as(shared, rollout, action, &actor.who).await,
        Err(e) => Err(e),
    };
    let entry = match &result {
        Ok((done, p)) => {
            actor.entry(action.name(), AuditOutcome::Done).revision(Some(&p.revision)).detail(done.clone())
        }
        Err(e) => {
            let revision = match action {
                Action::Promote { revision, .. } => revision.as_deref(),
                _ => None,
            };
            actor.entry(action.name(), AuditOutcome::Refused).revision(revision).detail(e.to_string())
        }
    };
    super::audit::record(shared, entry.rollout(rollout)).await;
    result
}

/// Whether `actor` may promote `wave` (without: the wave a promotion would release now) under
/// the approval rules in force for the wave's clusters ([`crate::approval::promotion_refusal`]).
async fn may_promote(shared: &Shared, rollout: &str, wave: Option<&str>, actor: &Actor) -> Result<(), ActError> {
    match promotion_refused(shared, rollout, wave, actor).await? {
        Some(why) => Err(ActError::Forbidden(why)),
        None => Ok(()),
    }
}

/// Why `actor` may not promote `wave` of `rollout` (without a wave: the one a promotion would
/// release now) under the approval rules in force, if they may not: the API's 403, and what the
/// rollout page shows in place of Promote.
pub async fn promotion_refused(
    shared: &Shared,
    rollout: &str,
    wave: Option<&str>,
    actor: &Actor,
) -> Result<Option<String>, StoreError> {
    let policy = shared.rollouts.lock().unwrap_or_else(|p| p.into_inner()).get(rollout).cloned();
    let (Some(policy), Some(p)) = (policy, shared.store.rollout(rollout).await?) else { return Ok(None) };
    let wave = match wave {
        Some(w) => w.to_string(),
        None => match gate::blocker(&p, &policy, now_ms()).wave() {
            Some(w) => policy.waves[w].name.clone(),
            None => return Ok(None),
        },
    };
    let governed: Vec<super::RulesInForce> = {
        let in_force = shared.approval_rules.lock().unwrap_or_else(|p| p.into_inner());
        p.members(&wave).filter_map(|(name, _)| in_force.get(name).cloned()).collect()
    };
    let person = crate::approval::Person { identity: &actor.identity, groups: &actor.groups };
    let governed = governed.iter().map(|r| (&r.rules[..], &r.authors[..]));
    Ok(crate::approval::promotion_refusal(governed, &wave, &person))
}

async fn act_as(shared: &Shared, rollout: &str, action: &Action, by: &str) -> Result<(String, Progress), ActError> {
    let policy = shared
        .rollouts
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .get(rollout)
        .cloned()
        .ok_or_else(|| ActError::NoRollout(rollout.to_string()))?;
    for _ in 0..SAVE_ATTEMPTS {
        let mut p = shared.store.rollout(rollout).await?.ok_or_else(|| ActError::Idle(rollout.to_string()))?;
        let done = gate::act(&mut p, &policy, action, by, now_ms())?;
        if shared.store.save_rollout(&p).await? {
            info!(rollout, by = ?by, action = action.name(), "Rollout: {done}.");
            shared.touch();
            let _ =
                shared.triggers.try_send(super::Trigger::Reevaluate(format!("{} of rollout {rollout}", action.name())));
            return Ok((done, p));
        }
    }
    Err(ActError::Busy(rollout.to_string()))
}

/// A rollout for the API, the CLI and the view: its policy, and where it stands at `now` —
/// each wave with its state and clusters, what it waits for, and what a promotion would do.
/// `waiting` are the clusters whose pending update waits for approval, with its revision
/// ([`super::selection::waiting`]): each wave lists those of its clusters.
pub fn describe(
    policy: &Rollout,
    progress: Option<&Progress>,
    now: i64,
    waiting: &BTreeMap<String, String>,
) -> serde_json::Value {
    use crate::rollout::policy::show_duration;
    let states = progress.map(|p| gate::wave_states(p, policy, now));
    let (numbers, used) = progress.map_or((vec![None; policy.waves.len()], 0), |p| gate::wave_numbers(p, policy));
    let waves: Vec<serde_json::Value> = policy
        .waves
        .iter()
        .enumerate()
        .map(|(i, w)| {
            let state = states.as_ref().map(|s| s[i]);
            let record = progress.and_then(|p| p.waves.get(i));
            let clusters: Vec<serde_json::Value> = progress
                .into_iter()
                .flat_map(|p| p.members(&w.name))
                .map(|(name, c)| {
                    serde_json::json!({
                        "cluster": name,
                        "state": c.state.as_str(),
                        "cause": c.cause,
                        "to": c.to,
                        "before": c.before.as_ref().map(|b| &b.what),
                        "releasedAt": c.released_at,
                        "finishedAt": c.finished_at,
                        "message": c.message,
                        "awaitsApproval": c.state == ClusterRun::Updating && waiting.contains_key(name.as_str()),
                    })
                })
                .collect();
            let awaiting: Vec<String> = clusters
                .iter()
                .filter(|c| c["awaitsApproval"] == true)
                .filter_map(|c| c["cluster"].as_str().map(str::to_string))
                .collect();
            let revisions: std::collections::BTreeSet<&str> =
                awaiting.iter().filter_map(|c| waiting.get(c)).map(String::as_str).collect();
            let count = |state: ClusterRun| clusters.iter().filter(|c| c["state"] == state.as_str()).count();
            serde_json::json!({
                "name": w.name,
                // `number` of `of`: counted among the waves that hold clusters, as everywhere.
                "number": numbers[i],
                "of": used,
                "selects": w.selects(),
                "maxParallel": w.max_parallel.to_string(),
                "bake": show_duration(w.bake),
                "approval": w.approval,
                "implicit": w.implicit,
                "state": state.map(|s| s.as_str()),
                "bakeUntil": match state { Some(gate::WaveState::Baking { until }) => Some(until), _ => None },
                "startedAt": record.and_then(|r| r.started_at),
                "completedAt": record.and_then(|r| r.completed_at),
                "promoted": record.and_then(|r| r.promoted.as_ref()),
                "total": clusters.len(),
                "updated": count(ClusterRun::Updated),
                "failed": count(ClusterRun::Failed),
                "awaitingApproval": if awaiting.is_empty() { serde_json::Value::Null } else { serde_json::json!({
                    "count": awaiting.len(),
                    "clusters": awaiting,
                    "revision": (revisions.len() == 1).then(|| revisions.iter().next()).flatten(),
                    "approve": format!("strata approve --rollout {} --wave {}", policy.name, w.name),
                }) },
                "clusters": clusters,
            })
        })
        .collect();
    let promotion = progress.and_then(|p| gate::promotion(p, policy, now).ok()).map(|p| {
        serde_json::json!({
            "starts": p.starts.map(|i| &policy.waves[i].name),
            "endsBakeOf": p.ends_bake_of.map(|i| &policy.waves[i].name),
        })
    });
    serde_json::json!({
        "rollout": policy.name,
        "file": policy.file,
        "profiles": policy.profiles,
        "onFailure": policy.on_failure,
        "failureThreshold": policy.failure_threshold,
        "failOnDrift": policy.fail_on_drift,
        "state": progress.map_or("idle", |p| p.state.as_str()),
        "revision": progress.map(|p| &p.revision),
        "next": progress.map(|p| &p.next),
        "startedAt": progress.map(|p| p.started_at),
        "finishedAt": progress.and_then(|p| p.finished_at),
        "halt": progress.and_then(|p| p.halt.as_ref()),
        "paused": progress.and_then(|p| p.paused.as_ref()),
        "aborted": progress.and_then(|p| p.aborted.as_ref()),
        "promotion": promotion,
        "waves": waves,
    })
}

/// A held cluster's status line: `held by rollout default: …`.
pub fn held_summary(rollout: &str, wave: &str, why: &str) -> String {
    format!("held by rollout {rollout} (wave {wave}): {why}")
}
