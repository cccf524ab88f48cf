//! Describing a rollout, for people: the sentence saying what it waits for, why each wave's
//! clusters are held, the commit status, where each wave stands, and the one numbering of waves
//! every surface (logs, statuses, the CLI, the view, the API, the metric) shares. Reads
//! [`Progress`]; changes nothing.

use std::fmt::Write as _;

use super::super::policy::{OnFailure, Rollout};
use super::{Blocker, ClusterRun, Millis, Progress, Report, RunState, at, blocker};
use crate::status::State;

/// The one numbering of waves, the same in logs, statuses, the CLI, the view, the API and the
/// metric: waves are counted among those that hold clusters of the change being rolled out
/// (1-based); a wave that holds none has no number. Returns each wave's number and how many
/// are numbered.
pub fn wave_numbers(p: &Progress, rollout: &Rollout) -> (Vec<Option<usize>>, usize) {
    let mut n = 0;
    let numbers = rollout
        .waves
        .iter()
        .map(|w| {
            p.members(&w.name).next().map(|_| {
                n += 1;
                n
            })
        })
        .collect();
    (numbers, n)
}

/// `wave 2 of 3 (canary)`, counting the waves that hold clusters.
fn position(p: &Progress, rollout: &Rollout, wave: usize) -> String {
    let (numbers, used) = wave_numbers(p, rollout);
    let n = numbers[wave].unwrap_or(wave + 1);
    format!("wave {n} of {used} ({})", rollout.waves[wave].name)
}

pub(super) fn updated_of(p: &Progress, wave: &str) -> (usize, usize) {
    let members: Vec<_> = p.members(wave).collect();
    (members.iter().filter(|(_, c)| c.state == ClusterRun::Updated).count(), members.len())
}

/// Why the clusters of wave `i` still wait.
pub(super) fn hold_reason(
    p: &Progress,
    rollout: &Rollout,
    blocker: Blocker,
    stopped: Option<&str>,
    i: usize,
) -> String {
    if let Some(stopped) = stopped {
        return stopped.to_string();
    }
    let name = &rollout.waves[i].name;
    match blocker {
        Blocker::Promotion(b) if b == i => {
            format!("wave {name} waits for promotion: strata rollout promote {}", rollout.name)
        }
        Blocker::Promotion(b) => format!("waits for wave {} to be promoted", rollout.waves[b].name),
        Blocker::Updating(b) if b == i => {
            let updating: Vec<&str> =
                p.members(name).filter(|(_, c)| c.state == ClusterRun::Updating).map(|(n, _)| n.as_str()).collect();
            format!(
                "waits for a slot in wave {name} (maxParallel {}: {} updating)",
                rollout.waves[i].max_parallel,
                updating.join(", ")
            )
        }
        Blocker::Updating(b) => {
            let (updated, of) = updated_of(p, &rollout.waves[b].name);
            format!("waits for wave {} ({updated} of {of} updated)", rollout.waves[b].name)
        }
        Blocker::Bake { wave, until } => {
            format!("waits for wave {} to bake until {}", rollout.waves[wave].name, at(until))
        }
        Blocker::Done => "the rollout is done".into(),
    }
}

/// At most this many names in a sentence that lists clusters (a commit status has little room).
pub const NAMES_SHOWN: usize = 3;

/// `a, b, c, …`: the first `shown` names, and an ellipsis when there are more.
pub fn some_names<S: AsRef<str>>(names: &[S], shown: usize) -> String {
    let mut out: Vec<&str> = names.iter().take(shown).map(AsRef::as_ref).collect();
    if names.len() > shown {
        out.push("…");
    }
    out.join(", ")
}

/// The clusters of wave `i` that were released and wait for their own approval, by name.
pub fn awaiting_approval<'p>(p: &'p Progress, rollout: &'p Rollout, i: usize, awaiting: &[&str]) -> Vec<&'p str> {
    p.members(&rollout.waves[i].name)
        .filter(|(n, c)| c.state == ClusterRun::Updating && awaiting.contains(&n.as_str()))
        .map(|(n, _)| n.as_str())
        .collect()
}

/// What the rollout waits for, in a sentence.
pub(super) fn next(
    p: &Progress,
    rollout: &Rollout,
    blocker: Blocker,
    stopped: Option<&str>,
    awaiting: &[&str],
) -> String {
    let mut out = String::new();
    if let Some(stopped) = stopped {
        let _ = write!(out, "{stopped}; ");
        if p.aborted.is_some() {
            out.push_str("a newer commit that changes what it brings starts it over");
            return out;
        }
        if p.halt.is_some() && rollout.on_failure == OnFailure::Rollback {
            out.push_str("the clusters it updated return to what they ran; ");
        }
        let _ = write!(out, "strata rollout resume {} goes on", rollout.name);
        return out;
    }
    match blocker {
        Blocker::Promotion(i) => {
            let _ =
                write!(out, "{} waits for promotion: strata rollout promote {}", position(p, rollout, i), rollout.name);
        }
        Blocker::Updating(i) => {
            let (updated, of) = updated_of(p, &rollout.waves[i].name);
            let _ = write!(out, "{}: {updated} of {of} clusters updated", position(p, rollout, i));
            let waiting = awaiting_approval(p, rollout, i, awaiting);
            if !waiting.is_empty() {
                let _ = write!(
                    out,
                    "; waits for approval of {} cluster{}: {} (strata approve --rollout {} --wave {})",
                    waiting.len(),
                    if waiting.len() == 1 { "" } else { "s" },
                    some_names(&waiting, NAMES_SHOWN),
                    rollout.name,
                    rollout.waves[i].name
                );
            }
        }
        Blocker::Bake { wave, until } => {
            let _ = write!(out, "{} bakes until {}", position(p, rollout, wave), at(until));
        }
        Blocker::Done => {
            let _ = write!(out, "done: {} clusters updated", p.count(ClusterRun::Updated));
        }
    }
    out
}

/// The commit status of the rollout.
pub(super) fn commit_status(p: &Progress, rollout: &Rollout) -> Report {
    let (state, description) = match p.state {
        RunState::Complete => {
            let waves = rollout.waves.iter().filter(|w| p.members(&w.name).next().is_some()).count();
            let failed = p.count(ClusterRun::Failed);
            let failed = if failed > 0 { format!(" ({failed} failed, under failureThreshold)") } else { String::new() };
            (
                State::Success,
                format!("rolled out to {} clusters in {waves} waves{failed}", p.count(ClusterRun::Updated)),
            )
        }
        RunState::Halted => {
            let h = p.halt.as_ref().expect("halted");
            let wave = rollout.waves.iter().position(|w| w.name == h.wave).map(|i| position(p, rollout, i));
            let back = if rollout.on_failure == OnFailure::Rollback { ", rolling back" } else { "" };
            (State::Failure, format!("halted in {}{back}: {} {}", wave.unwrap_or_default(), h.cluster, h.reason))
        }
        RunState::Aborted => {
            let by = p.aborted.as_ref().map_or("", |a| a.by.as_str());
            (State::Failure, format!("aborted by {by}: the clusters it updated return to what they ran"))
        }
        RunState::Paused | RunState::Progressing => (State::Pending, p.next.clone()),
    };
    Report { revision: p.revision.clone(), state, description }
}

/// Where each wave (aligned with the policy's) stands, for people.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WaveState {
    /// The change reaches no cluster of it.
    Empty,
    Done,
    Baking {
        until: Millis,
    },
    Updating,
    /// Manual, not promoted yet.
    Promotion,
    /// The wave the rollout halted in.
    Halted,
    /// Waits for an earlier wave.
    Held,
}

impl WaveState {
    pub fn as_str(self) -> &'static str {
        match self {
            WaveState::Empty => "empty",
            WaveState::Done => "done",
            WaveState::Baking { .. } => "baking",
            WaveState::Updating => "updating",
            WaveState::Promotion => "waits-for-promotion",
            WaveState::Halted => "halted",
            WaveState::Held => "held",
        }
    }
}

pub fn wave_states(p: &Progress, rollout: &Rollout, now: Millis) -> Vec<WaveState> {
    let blocker = blocker(p, rollout, now);
    let at = blocker.wave().unwrap_or(usize::MAX);
    (0..rollout.waves.len())
        .map(|i| match blocker {
            _ if p.members(&rollout.waves[i].name).next().is_none() => WaveState::Empty,
            _ if p.halt.as_ref().is_some_and(|h| h.wave == rollout.waves[i].name) => WaveState::Halted,
            Blocker::Bake { wave, until } if wave == i => WaveState::Baking { until },
            Blocker::Updating(w) if w == i => WaveState::Updating,
            Blocker::Promotion(w) if w == i => WaveState::Promotion,
            _ if i < at => WaveState::Done,
            _ => WaveState::Held,
        })
        .collect()
}
