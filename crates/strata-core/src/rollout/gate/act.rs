//! Acting on a rollout: what an operator asks (promote, pause, resume, abort), checked against
//! where the rollout stands and applied to the stored [`Progress`]. The next gating acts on what
//! changed; nothing here releases a cluster itself.

use super::super::policy::Rollout;
use super::status::updated_of;
use super::{Act, Blocker, ClusterRun, Millis, Progress, RunState, blocker, short};

/// What an operator asks of a rollout.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// Go on to the next wave now: the bake under way ends, the next wave is approved. `wave`
    /// and `revision` (a prefix of it), when given, are what the operator saw waiting; anything
    /// else is refused.
    Promote {
        wave: Option<String>,
        revision: Option<String>,
    },
    Pause,
    Resume,
    Abort,
}

impl Action {
    pub fn parse(text: &str) -> Option<Action> {
        Some(match text {
            "promote" => Action::Promote { wave: None, revision: None },
            "pause" => Action::Pause,
            "resume" => Action::Resume,
            "abort" => Action::Abort,
            _ => return None,
        })
    }

    pub fn name(&self) -> &'static str {
        match self {
            Action::Promote { .. } => "promote",
            Action::Pause => "pause",
            Action::Resume => "resume",
            Action::Abort => "abort",
        }
    }
}

/// Why an action was refused: the rollout is not in a state it applies to.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Refused(pub String);

/// What promoting would do now: the wave it starts, and the wave whose bake it ends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Promotion {
    pub starts: Option<usize>,
    pub ends_bake_of: Option<usize>,
}

/// What promoting `p` would do now, or why nothing can be promoted.
pub fn promotion(p: &Progress, rollout: &Rollout, now: Millis) -> Result<Promotion, Refused> {
    if p.finished_at.is_some() {
        return Err(Refused(format!("rollout {} is complete: nothing to promote", rollout.name)));
    }
    if let Some(stopped) = p.stopped() {
        return Err(Refused(format!("{stopped}: resume it before promoting")));
    }
    match blocker(p, rollout, now) {
        Blocker::Promotion(i) => Ok(Promotion { starts: Some(i), ends_bake_of: None }),
        Blocker::Bake { wave, .. } => {
            let next = (wave + 1..rollout.waves.len()).find(|&j| p.members(&rollout.waves[j].name).next().is_some());
            Ok(Promotion { starts: next, ends_bake_of: Some(wave) })
        }
        Blocker::Updating(i) => {
            let (updated, of) = updated_of(p, &rollout.waves[i].name);
            Err(Refused(format!(
                "wave {} is updating ({updated} of {of} clusters): nothing waits for promotion",
                rollout.waves[i].name
            )))
        }
        Blocker::Done => Err(Refused(format!("rollout {} has no wave left to promote", rollout.name))),
    }
}

/// Applies an operator's action to the stored progress; the next gating acts on it. Returns
/// what was done, in a sentence. A complete or aborted rollout takes no action.
pub fn act(p: &mut Progress, rollout: &Rollout, action: &Action, by: &str, now: Millis) -> Result<String, Refused> {
    let name = &rollout.name;
    if p.state == RunState::Complete {
        return Err(Refused(format!(
            "rollout {name} is complete at {}; nothing to {}",
            short(&p.revision),
            action.name()
        )));
    }
    if let Some(a) = &p.aborted {
        return Err(Refused(format!(
            "rollout {name} was aborted by {}; a newer commit that changes what it brings starts it over",
            a.by
        )));
    }
    let who = Act { by: by.to_string(), at: now };
    match action {
        Action::Pause => pause(p, name, who),
        Action::Resume => resume(p, name, now),
        Action::Abort => {
            p.aborted = Some(who);
            Ok("aborted: no cluster starts any more, the clusters it updated return to what they ran".into())
        }
        Action::Promote { wave, revision } => promote(p, rollout, wave.as_deref(), revision.as_deref(), who, now),
    }
}

/// Pause: clusters being updated finish, no other starts.
fn pause(p: &mut Progress, name: &str, who: Act) -> Result<String, Refused> {
    if let Some(paused) = &p.paused {
        return Err(Refused(format!("rollout {name} is already paused (by {})", paused.by)));
    }
    p.paused = Some(who);
    Ok(format!("paused: clusters being updated finish, no other starts until strata rollout resume {name}"))
}

/// Resume a paused or halted rollout: a halt's failures are forgotten, and what rolled back
/// waits again.
fn resume(p: &mut Progress, name: &str, now: Millis) -> Result<String, Refused> {
    if p.paused.is_none() && p.halt.is_none() {
        return Err(Refused(format!("rollout {name} is neither paused nor halted")));
    }
    let halted = p.halt.take().is_some();
    p.paused = None;
    for c in p.clusters.values_mut() {
        match c.state {
            // Its worker is still at it; its next result counts anew.
            ClusterRun::Failed => {
                c.state = ClusterRun::Updating;
                c.released_at = Some(now);
                c.message = None;
                c.finished_at = None;
            }
            ClusterRun::RollingBack | ClusterRun::RolledBack => {
                c.state = ClusterRun::Waiting;
                c.finished_at = None;
            }
            _ => {}
        }
    }
    Ok(if halted {
        "resumed: failures forgotten, the clusters that failed are retried".into()
    } else {
        "resumed".into()
    })
}

/// Promote: the bake under way ends, the next wave is approved — only if `wave` and `revision`
/// (when given) are what waits.
fn promote(
    p: &mut Progress,
    rollout: &Rollout,
    wave: Option<&str>,
    revision: Option<&str>,
    who: Act,
    now: Millis,
) -> Result<String, Refused> {
    let name = &rollout.name;
    if let Some(seen) = revision.filter(|r| !r.is_empty() && !p.revision.starts_with(*r)) {
        return Err(Refused(format!(
            "rollout {name} moved on to {} since {} was seen: look at it again",
            short(&p.revision),
            short(seen)
        )));
    }
    let Promotion { starts, ends_bake_of } = promotion(p, rollout, now)?;
    if let Some(asked) = wave.filter(|w| starts.map(|i| rollout.waves[i].name.as_str()) != Some(*w)) {
        let what = match (starts, ends_bake_of) {
            (Some(i), _) => format!("wave {} is what waits", rollout.waves[i].name),
            (None, Some(i)) => format!("the last wave, {}, bakes", rollout.waves[i].name),
            (None, None) => "nothing waits".into(),
        };
        return Err(Refused(format!("wave {asked} is not what waits for promotion: {what}")));
    }
    let mut done = Vec::new();
    if let Some(i) = ends_bake_of {
        p.waves[i].bake_waived = Some(who.clone());
        done.push(format!("the bake of wave {} ends now", rollout.waves[i].name));
    }
    if let Some(i) = starts {
        p.waves[i].promoted = Some(who);
        done.push(format!("wave {} starts", rollout.waves[i].name));
    }
    Ok(done.join("; "))
}
