//! Deciding, on the reconciled run: whether it halts (and rolls back), which waves are done (their
//! bake starts), which clusters of the running wave are released into its free slots, whether
//! the run is complete, and each cluster's verdict.

use std::collections::BTreeMap;

use super::super::policy::{OnFailure, Rollout};
use super::progress::Fleet;
use super::status::hold_reason;
use super::{Blocker, ClusterProgress, ClusterRun, Event, Halt, Millis, Progress, Verdict, done};

/// Halt: as many clusters failed as `failureThreshold` allows, the first of them named.
pub(super) fn halt(p: &mut Progress, rollout: &Rollout, now: Millis, events: &mut Vec<Event>) {
    if p.halt.is_some() || p.aborted.is_some() || p.finished_at.is_some() {
        return;
    }
    let mut failed: Vec<(&String, &ClusterProgress)> =
        p.clusters.iter().filter(|(_, e)| e.state == ClusterRun::Failed).collect();
    failed.sort_by_key(|(n, e)| (e.finished_at, *n));
    if failed.len() >= rollout.failure_threshold
        && let Some((name, e)) = failed.first()
    {
        let halt = Halt {
            at: now,
            wave: e.wave.clone(),
            cluster: name.to_string(),
            reason: e.message.clone().unwrap_or_default(),
        };
        let what =
            format!("halted: its cluster failed ({} failed, threshold {})", failed.len(), rollout.failure_threshold);
        events.push(Event::new(what).cluster(name).wave(&e.wave));
        p.halt = Some(halt);
    }
}

/// Roll back, on an abort or a halt with `onFailure: rollback`: every cluster the run touched
/// returns to what it ran. Returns whether the run rolls back.
pub(super) fn roll_back(p: &mut Progress, rollout: &Rollout, events: &mut Vec<Event>) -> bool {
    let rolling_back = p.aborted.is_some() || (p.halt.is_some() && rollout.on_failure == OnFailure::Rollback);
    if rolling_back {
        for (name, e) in p.clusters.iter_mut() {
            if matches!(e.state, ClusterRun::Updating | ClusterRun::Updated | ClusterRun::Failed) && e.before.is_some()
            {
                e.state = ClusterRun::RollingBack;
                events.push(Event::new("returns to what it ran before").cluster(name));
            }
        }
    }
    rolling_back
}

/// Waves done since: their bake starts. A wave with a cluster not done is not done any more.
pub(super) fn complete_waves(p: &mut Progress, rollout: &Rollout, now: Millis, events: &mut Vec<Event>) {
    for (spec, wave) in rollout.waves.iter().zip(p.waves.iter_mut()) {
        let mut members = p.clusters.values().filter(|c| c.wave == spec.name).peekable();
        let any = members.peek().is_some();
        if any && members.all(|c| done(c.state)) {
            if wave.completed_at.is_none() {
                wave.completed_at = Some(now);
                events.push(Event::new("wave done").wave(&spec.name));
            }
        } else {
            wave.completed_at = None;
        }
    }
}

/// Release into the slots of wave `i`, the one that runs: waiting clusters, in name order, up to
/// `maxParallel` updating at once. A cluster released for the first time keeps what it ran.
pub(super) fn release(
    p: &mut Progress,
    rollout: &Rollout,
    fleet: &Fleet,
    i: usize,
    now: Millis,
    events: &mut Vec<Event>,
) {
    let spec = &rollout.waves[i];
    let members: Vec<String> = p.members(&spec.name).map(|(n, _)| n.clone()).collect();
    let updating = members.iter().filter(|n| p.clusters[*n].state == ClusterRun::Updating).count();
    let mut free = spec.max_parallel.of(members.len()).saturating_sub(updating);
    for name in &members {
        if free == 0 {
            break;
        }
        let e = p.clusters.get_mut(name).expect("a member");
        if e.state != ClusterRun::Waiting {
            continue;
        }
        e.state = ClusterRun::Updating;
        e.released_at = Some(now);
        if e.before.is_none() {
            e.before = fleet.by_name[name.as_str()].running.as_ref().map(|r| r.before.clone());
        }
        free -= 1;
        events.push(Event::new("released").cluster(name).wave(&spec.name));
    }
    if p.waves[i].started_at.is_none() {
        p.waves[i].started_at = Some(now);
        events.push(Event::new("wave started").wave(&spec.name));
    }
}

/// Every cluster's verdict: waiting ones are held (with why their wave waits), those in flight
/// or done go ahead, those rolling back return to what they ran.
pub(super) fn verdicts(
    p: &Progress,
    rollout: &Rollout,
    blocker: Blocker,
    stopped: Option<&str>,
) -> BTreeMap<String, Verdict> {
    let held = |i: usize| hold_reason(p, rollout, blocker, stopped, i);
    let reasons: BTreeMap<&str, String> =
        rollout.waves.iter().enumerate().map(|(i, w)| (w.name.as_str(), held(i))).collect();
    p.clusters
        .iter()
        .map(|(name, e)| {
            let verdict = match e.state {
                ClusterRun::Waiting => Verdict::Hold { wave: e.wave.clone(), why: reasons[e.wave.as_str()].clone() },
                ClusterRun::Updating | ClusterRun::Updated | ClusterRun::Failed => Verdict::Release,
                ClusterRun::RollingBack | ClusterRun::RolledBack => match &e.before {
                    Some(before) => Verdict::RollBack(before.clone()),
                    None => Verdict::Release,
                },
            };
            (name.clone(), verdict)
        })
        .collect()
}
