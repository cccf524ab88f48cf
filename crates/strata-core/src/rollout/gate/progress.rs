//! Reconciling the stored run with the rollout and the fleet at the head, before anything is
//! decided: which run this is (the stored one, or a new one), which clusters join it or move to
//! newer content (superseding the run), which wave each is in, and what the clusters' states say
//! about those in flight.

use std::collections::BTreeMap;

use super::super::policy::Rollout;
use super::{Change, ClusterProgress, ClusterRun, Event, Gated, Health, Member, Millis, Progress, Report, RunState};
use super::{Running, WaveProgress, short};
use crate::status::State;

/// The clusters on the profiles the rollout governs, by name, and the changes they have at the
/// head.
pub(super) struct Fleet<'m> {
    pub members: &'m [Member<'m>],
    pub by_name: BTreeMap<&'m str, &'m Member<'m>>,
    pub changes: BTreeMap<&'m str, &'m Change>,
}

impl<'m> Fleet<'m> {
    pub fn of(members: &'m [Member<'m>]) -> Fleet<'m> {
        Fleet {
            members,
            by_name: members.iter().map(|m| (m.name, m)).collect(),
            changes: members.iter().filter_map(|m| m.change.as_ref().map(|c| (m.name, c))).collect(),
        }
    }
}

/// The run to gate, and whether it is new: the stored one, unless it is complete and the head
/// brings a cluster something it did not; `None` when there is neither a run nor a change.
pub(super) fn start(
    rollout: &Rollout,
    head: &str,
    fleet: &Fleet,
    stored: Option<&Progress>,
    now: Millis,
) -> Option<(Progress, bool)> {
    let covered =
        |p: &Progress| fleet.changes.iter().all(|(n, c)| p.clusters.get(*n).is_some_and(|e| e.target == c.target));
    match stored {
        Some(p) if p.state != RunState::Complete || covered(p) => Some((p.clone(), false)),
        _ if fleet.changes.is_empty() => None,
        _ => Some((Progress::new(rollout, head, now, stored.map_or(0, |s| s.generation)), true)),
    }
}

/// Join, and supersede: a cluster whose target moved waits again, keeping what it ran first.
/// Clusters that no longer need what the rollout brings leave. Returns the clusters that joined
/// or moved.
pub(super) fn join<'m>(p: &mut Progress, fleet: &Fleet<'m>) -> Vec<&'m str> {
    let mut moved: Vec<&str> = Vec::new();
    for (&name, &change) in &fleet.changes {
        match p.clusters.get_mut(name) {
            Some(e) if e.target == change.target => {}
            Some(e) => {
                *e = ClusterProgress::waiting(change, e.wave.clone(), e.before.take());
                moved.push(name);
            }
            None => {
                p.clusters.insert(name.to_string(), ClusterProgress::waiting(change, String::new(), None));
                moved.push(name);
            }
        }
    }
    // Clusters that no longer need what the rollout brings: gone from the profiles it governs,
    // or their change went away before they got it.
    p.clusters.retain(|name, e| {
        let Some(member) = fleet.by_name.get(name.as_str()) else { return false };
        fleet.changes.contains_key(name.as_str())
            || match e.state {
                ClusterRun::Waiting => false,
                ClusterRun::Updating => member.running.as_ref().is_some_and(|r| r.before.digest == e.target),
                _ => true,
            }
    });
    moved
}

/// A newer commit changed what the run brings: the revision moves to it, and a halt, an abort
/// or the end is forgotten. The revision left behind is told so.
pub(super) fn supersede(p: &mut Progress, rollout: &Rollout, head: &str, gated: &mut Gated) {
    if p.revision != head {
        gated.superseded = Some(Report {
            revision: p.revision.clone(),
            state: State::Error,
            description: format!(
                "superseded by {} before it reached every wave: see strata/rollout/{} there",
                short(head),
                rollout.name
            ),
        });
        gated.events.push(Event::new(format!("superseded by {head}")));
    }
    p.revision = head.to_string();
    p.halt = None;
    p.aborted = None;
    p.finished_at = None;
}

/// Waves: aligned with the policy's, keeping what each wave went through, and each cluster in
/// its wave. After a supersede (`moved`), approvals stand only for the waves before the first
/// one whose clusters got something new.
pub(super) fn assign_waves(p: &mut Progress, rollout: &Rollout, fleet: &Fleet, moved: Option<&[&str]>) {
    let mut old: BTreeMap<String, WaveProgress> = p.waves.drain(..).map(|w| (w.name.clone(), w)).collect();
    p.waves = rollout
        .waves
        .iter()
        .map(|w| {
            old.remove(&w.name).unwrap_or(WaveProgress {
                name: w.name.clone(),
                started_at: None,
                completed_at: None,
                promoted: None,
                bake_waived: None,
            })
        })
        .collect();
    let tags: BTreeMap<&str, &[String]> =
        p.clusters.keys().map(|n| (n.as_str(), fleet.by_name[n.as_str()].tags)).collect();
    let kept: BTreeMap<&str, &str> = p.clusters.iter().map(|(n, e)| (n.as_str(), e.wave.as_str())).collect();
    let assigned: Vec<Vec<String>> =
        rollout.assign(&tags, &kept).into_iter().map(|w| w.into_iter().map(str::to_string).collect()).collect();
    for (wave, names) in rollout.waves.iter().zip(&assigned) {
        for name in names {
            if let Some(e) = p.clusters.get_mut(name) {
                e.wave = wave.name.clone();
            }
        }
    }
    if let Some(moved) = moved {
        // Approvals stand for the waves before the first one whose clusters got something new.
        let first = assigned.iter().position(|names| names.iter().any(|n| moved.contains(&n.as_str())));
        for wave in p.waves.iter_mut().skip(first.unwrap_or(usize::MAX)) {
            wave.promoted = None;
            wave.bake_waived = None;
        }
    }
}

/// Observe: what the clusters' states say about the clusters in flight — updated, failed
/// (unhealthy, or drifted with `failOnDrift`), rolled back.
pub(super) fn observe(p: &mut Progress, rollout: &Rollout, fleet: &Fleet, now: Millis) {
    for (name, e) in p.clusters.iter_mut() {
        let member = fleet.by_name[name.as_str()];
        let running = member.running.as_ref();
        match e.state {
            ClusterRun::Updating => {
                let since = e.released_at.map_or(0, |r| r.div_euclid(1000) * 1000);
                match running.filter(|r| r.before.digest == e.target) {
                    Some(Running { health: Health::Healthy, .. }) => {
                        e.state = ClusterRun::Updated;
                        e.finished_at = Some(now);
                    }
                    Some(Running { health: Health::Unhealthy(why), applied_at, .. })
                        if applied_at.is_none_or(|at| at >= since) =>
                    {
                        e.fail(format!("unhealthy: {why}"), now)
                    }
                    _ => {}
                }
            }
            ClusterRun::Updated
                if rollout.fail_on_drift
                    && p.finished_at.is_none()
                    && member.drift_at.zip(e.finished_at).is_some_and(|(drift, updated)| drift >= updated) =>
            {
                e.fail("drift found after the update (failOnDrift)".into(), now);
            }
            ClusterRun::RollingBack => {
                let back = e
                    .before
                    .as_ref()
                    .zip(running)
                    .is_some_and(|(b, r)| r.before.digest == b.digest && r.health == Health::Healthy);
                if back {
                    e.state = ClusterRun::RolledBack;
                    e.finished_at = Some(now);
                }
            }
            _ => {}
        }
    }
}

/// The clusters that failed since the stored run, for the log.
pub(super) fn failures(p: &Progress, stored: Option<&Progress>, events: &mut Vec<Event>) {
    for (name, e) in &p.clusters {
        if e.state == ClusterRun::Failed && stored.and_then(|s| s.clusters.get(name)).is_none_or(|s| s.state != e.state)
        {
            events.push(Event::new(format!("failed: {}", e.message.as_deref().unwrap_or(""))).cluster(name));
        }
    }
}
