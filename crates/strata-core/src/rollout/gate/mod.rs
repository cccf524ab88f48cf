//! The gate: which clusters a rollout lets through now. A pure function of the policy, the
//! changes governed at the head, the progress stored so far, what each cluster runs and the clock.
//!
//! ```text
//!   Rollout (waves)         ─┐
//!   Members: change at head, │      join / supersede ─> assign waves ─> observe results ─> halt?
//!            what it runs,   ├──>   ─> roll back? ─> walk the waves: done? baked? promoted? ─> release
//!            drift found     │                                                               into slots
//!   Progress (stored), now  ─┘
//!                               ──> Gated { progress to store, per cluster verdict, wake-up, status }
//! ```
//!
//! A cluster's life in a rollout: `waiting` (held) → `updating` (released: its desired set goes
//! to its worker) → `updated` (runs the target, healthy) or `failed` (the apply failed, it stayed
//! unhealthy past `health_timeout`, or — with `failOnDrift` — drift was found on it); on a halt
//! with `onFailure: rollback`, or an abort, `rolling-back` → `rolled-back` (what it ran before).
//! A wave is done when none of its clusters is waiting or updating; its bake starts then, and the
//! next wave starts when the bake is over (or a person promotes it) and, for `approval: manual`,
//! when promoted. `maxParallel` counts the wave's clusters that are updating, so it is never
//! exceeded: a released cluster waiting for its own approval or window takes its slot too.
//!
//! A newer commit that changes what the rollout brings to a cluster supersedes the run: the
//! revision moves to it, a halt or abort ends, and every cluster whose target moved waits again
//! in its wave — so clusters not yet updated go straight to the newest content in wave order,
//! and waves whose clusters got the same content stay done (with their bake). Promotions are
//! kept only for waves before the first one a moved cluster is in: a changed change needs its
//! own approval, as a newer pending update does.
//!
//! The gate runs in three phases, each a file; acting on a rollout and describing it are apart:
//!
//! ```text
//!   gate ─┬─ progress  reconcile: the run to gate, join / supersede, assign waves, observe results
//!         ├─ decide    halt? roll back? waves done (bake)? release into slots; complete; verdicts
//!         └─ status    what it waits for, why each wave holds, the commit status
//!   act      an operator's promote / pause / resume / abort, applied to the stored Progress
//!   status   also what the view, the API and the CLI show: wave numbers and states
//! ```

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::Cause;
use super::policy::{Approval, Rollout};
use crate::status::State;

mod act;
mod decide;
mod progress;
mod status;
#[cfg(test)]
mod tests;

pub use act::{Action, Promotion, Refused, act, promotion};
pub use status::{NAMES_SHOWN, WaveState, awaiting_approval, some_names, wave_numbers, wave_states};

/// Milliseconds since the Unix epoch.
pub type Millis = i64;

/// Where a rollout stands: what the store keeps between evaluations and restarts.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Progress {
    pub rollout: String,
    /// The commit being rolled out: the newest that changed what the rollout brings.
    pub revision: String,
    pub started_at: Millis,
    pub state: RunState,
    /// One per wave of the policy, in order.
    pub waves: Vec<WaveProgress>,
    pub clusters: BTreeMap<String, ClusterProgress>,
    #[serde(default)]
    pub halt: Option<Halt>,
    #[serde(default)]
    pub paused: Option<Act>,
    #[serde(default)]
    pub aborted: Option<Act>,
    /// What the rollout waits for now, in a sentence.
    pub next: String,
    #[serde(default)]
    pub finished_at: Option<Millis>,
    /// Bumped by the store at every save; a save from an older generation is refused, so an
    /// operator's action and an evaluation never overwrite each other.
    #[serde(skip)]
    pub generation: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RunState {
    Progressing,
    Paused,
    Halted,
    Aborted,
    Complete,
}

impl RunState {
    pub fn as_str(self) -> &'static str {
        match self {
            RunState::Progressing => "progressing",
            RunState::Paused => "paused",
            RunState::Halted => "halted",
            RunState::Aborted => "aborted",
            RunState::Complete => "complete",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct WaveProgress {
    pub name: String,
    #[serde(default)]
    pub started_at: Option<Millis>,
    /// When none of its clusters was waiting or updating any more: its bake started.
    #[serde(default)]
    pub completed_at: Option<Millis>,
    /// It may start: its manual approval, and whatever was left of the bake before it, given.
    #[serde(default)]
    pub promoted: Option<Act>,
    /// The rest of its bake waived (a promotion while it baked).
    #[serde(default)]
    pub bake_waived: Option<Act>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ClusterProgress {
    pub wave: String,
    pub cause: Cause,
    /// `profile@version` it gets.
    pub to: String,
    /// The digest of the desired set it gets.
    pub target: String,
    pub state: ClusterRun,
    #[serde(default)]
    pub released_at: Option<Millis>,
    #[serde(default)]
    pub finished_at: Option<Millis>,
    /// What it ran before the rollout first released it: where a rollback returns it.
    #[serde(default)]
    pub before: Option<Before>,
    /// Why it failed.
    #[serde(default)]
    pub message: Option<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ClusterRun {
    Waiting,
    Updating,
    Updated,
    Failed,
    RollingBack,
    RolledBack,
}

impl ClusterRun {
    pub fn as_str(self) -> &'static str {
        match self {
            ClusterRun::Waiting => "waiting",
            ClusterRun::Updating => "updating",
            ClusterRun::Updated => "updated",
            ClusterRun::Failed => "failed",
            ClusterRun::RollingBack => "rolling-back",
            ClusterRun::RolledBack => "rolled-back",
        }
    }
}

/// What a cluster ran: the revisions its profile content and its file came from.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Before {
    pub profile_revision: String,
    pub cluster_revision: String,
    pub digest: String,
    /// `profile@version`.
    pub what: String,
}

/// Who did something to a rollout, and when.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Act {
    pub by: String,
    pub at: Millis,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Halt {
    pub at: Millis,
    /// The wave it halted in: that of the cluster whose failure halted it.
    pub wave: String,
    /// The cluster whose failure halted it.
    pub cluster: String,
    pub reason: String,
}

/// The change a rollout governs for one cluster at the head.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Change {
    pub cause: Cause,
    pub to: String,
    pub target: String,
}

/// How the last apply of what a cluster runs went, by the store.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Health {
    /// Applied, and every workload became ready.
    Healthy,
    /// Applied, but not ready within `health_timeout`.
    Unhealthy(String),
    /// Anything else: being applied, failed (the store does not say which desired set), …
    Unknown,
}

/// What a cluster runs, by the store.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Running {
    pub before: Before,
    pub health: Health,
    /// When its last apply ended (to the second): an unhealthy result from before a cluster was
    /// released (or resumed) is not its result.
    pub applied_at: Option<Millis>,
}

/// A cluster on a profile the rollout governs, at the head.
#[derive(Clone, Debug)]
pub struct Member<'a> {
    pub name: &'a str,
    pub tags: &'a [String],
    pub change: Option<Change>,
    pub running: Option<Running>,
    /// When drift was last found on it.
    pub drift_at: Option<Millis>,
    /// Its change, once released, waits for its own approval (`updates: manual`): the wave
    /// cannot finish without it, and what the rollout waits for says so.
    pub awaits_approval: bool,
}

/// What the daemon does with one cluster of a rollout.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Its change goes ahead (as its own policy says: approval, window).
    Release,
    /// It keeps what it runs: the rollout holds it.
    Hold { wave: String, why: String },
    /// It returns to what it ran before the rollout.
    RollBack(Before),
}

/// A commit status for a revision.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Report {
    pub revision: String,
    pub state: State,
    pub description: String,
}

/// Something a rollout did, for the log: the cluster and the wave it is about are fields of the
/// log line, not words of its message.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Event {
    pub what: String,
    pub cluster: Option<String>,
    pub wave: Option<String>,
}

impl Event {
    fn new(what: impl Into<String>) -> Event {
        Event { what: what.into(), ..Event::default() }
    }

    fn cluster(mut self, name: &str) -> Event {
        self.cluster = Some(name.to_string());
        self
    }

    fn wave(mut self, name: &str) -> Event {
        self.wave = Some(name.to_string());
        self
    }
}

#[derive(Clone, Debug, Default)]
pub struct Gated {
    /// The progress to store, when it changed.
    pub progress: Option<Progress>,
    /// For every cluster in the run; clusters without one are not the rollout's business.
    pub verdicts: BTreeMap<String, Verdict>,
    /// When to gate again though nothing else happens: a bake ends.
    pub wake_at: Option<Millis>,
    /// The commit status of the rollout, when something changed.
    pub status: Option<Report>,
    /// What to say on a revision a newer one superseded.
    pub superseded: Option<Report>,
    /// What happened, for the log.
    pub events: Vec<Event>,
}

impl ClusterProgress {
    fn waiting(change: &Change, wave: String, before: Option<Before>) -> ClusterProgress {
        ClusterProgress {
            wave,
            cause: change.cause,
            to: change.to.clone(),
            target: change.target.clone(),
            state: ClusterRun::Waiting,
            released_at: None,
            finished_at: None,
            before,
            message: None,
        }
    }

    fn fail(&mut self, message: String, now: Millis) {
        self.state = ClusterRun::Failed;
        self.finished_at = Some(now);
        self.message = Some(message);
    }
}

impl Progress {
    fn new(rollout: &Rollout, revision: &str, now: Millis, generation: u64) -> Progress {
        Progress {
            rollout: rollout.name.clone(),
            revision: revision.to_string(),
            started_at: now,
            state: RunState::Progressing,
            waves: Vec::new(),
            clusters: BTreeMap::new(),
            halt: None,
            paused: None,
            aborted: None,
            next: String::new(),
            finished_at: None,
            generation,
        }
    }

    /// The clusters of wave `name`, by name.
    pub fn members<'p>(&'p self, name: &'p str) -> impl Iterator<Item = (&'p String, &'p ClusterProgress)> {
        self.clusters.iter().filter(move |(_, c)| c.wave == name)
    }

    pub fn count(&self, state: ClusterRun) -> usize {
        self.clusters.values().filter(|c| c.state == state).count()
    }

    fn stopped(&self) -> Option<String> {
        if let Some(a) = &self.aborted {
            Some(format!("the rollout was aborted by {}", a.by))
        } else if let Some(h) = &self.halt {
            Some(format!("the rollout halted: {} {}", h.cluster, h.reason))
        } else {
            self.paused.as_ref().map(|p| format!("the rollout is paused by {}", p.by))
        }
    }

    fn derive_state(&self) -> RunState {
        if self.finished_at.is_some() {
            RunState::Complete
        } else if self.aborted.is_some() {
            RunState::Aborted
        } else if self.halt.is_some() {
            RunState::Halted
        } else if self.paused.is_some() {
            RunState::Paused
        } else {
            RunState::Progressing
        }
    }
}

/// What holds a rollout: the first wave that is not done and baked, and why.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Blocker {
    /// A manual wave that nobody promoted yet.
    Promotion(usize),
    /// A wave whose clusters are being updated (or wait for a slot).
    Updating(usize),
    /// A done wave baking until then.
    Bake { wave: usize, until: Millis },
    /// Every wave done and baked.
    Done,
}

impl Blocker {
    /// The wave it is about.
    pub fn wave(self) -> Option<usize> {
        match self {
            Blocker::Promotion(i) | Blocker::Updating(i) | Blocker::Bake { wave: i, .. } => Some(i),
            Blocker::Done => None,
        }
    }
}

fn done(state: ClusterRun) -> bool {
    matches!(state, ClusterRun::Updated | ClusterRun::Failed)
}

/// Walks the waves (aligned with `rollout.waves`) to what holds the rollout. Empty waves are
/// no gate.
pub fn blocker(p: &Progress, rollout: &Rollout, now: Millis) -> Blocker {
    for (i, (spec, wave)) in rollout.waves.iter().zip(&p.waves).enumerate() {
        let mut members = p.members(&spec.name).peekable();
        if members.peek().is_none() {
            continue;
        }
        if !members.all(|(_, c)| done(c.state)) {
            let approved = spec.approval == Approval::Auto || wave.promoted.is_some();
            return if approved { Blocker::Updating(i) } else { Blocker::Promotion(i) };
        }
        let until = wave.completed_at.unwrap_or(now) + spec.bake.as_millis() as Millis;
        if now < until && wave.bake_waived.is_none() {
            return Blocker::Bake { wave: i, until };
        }
    }
    Blocker::Done
}

/// `2026-11-29T13:10:46Z`.
fn at(ms: Millis) -> String {
    jiff::Timestamp::from_second(ms.div_euclid(1000)).map(|t| t.to_string()).unwrap_or_else(|_| ms.to_string())
}

/// Gates one rollout at `head`: see the module's comment. `members` are every cluster on a
/// profile the rollout governs; `stored` what the store has (its generation is carried over).
pub fn gate(rollout: &Rollout, head: &str, members: &[Member], stored: Option<&Progress>, now: Millis) -> Gated {
    let fleet = progress::Fleet::of(members);
    let mut gated = Gated::default();
    let Some((mut p, fresh)) = progress::start(rollout, head, &fleet, stored, now) else { return gated };

    // Reconcile the stored run with the rollout and the fleet at the head.
    let moved = progress::join(&mut p, &fleet);
    let superseded = !fresh && !moved.is_empty();
    if superseded {
        progress::supersede(&mut p, rollout, head, &mut gated);
    }
    progress::assign_waves(&mut p, rollout, &fleet, superseded.then_some(moved.as_slice()));
    progress::observe(&mut p, rollout, &fleet, now);
    progress::failures(&p, stored, &mut gated.events);

    // Decide: for the run (halt, roll back), each wave (done, released into), each cluster.
    decide::halt(&mut p, rollout, now, &mut gated.events);
    let rolling_back = decide::roll_back(&mut p, rollout, &mut gated.events);
    decide::complete_waves(&mut p, rollout, now, &mut gated.events);
    let stopped = p.stopped();
    let blocker = blocker(&p, rollout, now);
    if let (Blocker::Updating(i), None) = (blocker, &stopped) {
        decide::release(&mut p, rollout, &fleet, i, now, &mut gated.events);
    }
    if blocker == Blocker::Done && p.finished_at.is_none() && !rolling_back {
        p.finished_at = Some(now);
        gated.events.push(Event::new("complete"));
    }
    if let Blocker::Bake { until, .. } = blocker {
        gated.wake_at = Some(until);
    }
    gated.verdicts = decide::verdicts(&p, rollout, blocker, stopped.as_deref());

    // Describe: what the run waits for, and its commit status when anything changed.
    let awaiting: Vec<&str> = fleet.members.iter().filter(|m| m.awaits_approval).map(|m| m.name).collect();
    p.next = status::next(&p, rollout, blocker, stopped.as_deref(), &awaiting);
    p.state = p.derive_state();
    if stored != Some(&p) {
        gated.status = Some(status::commit_status(&p, rollout));
        gated.progress = Some(p);
    }
    gated
}

fn short(revision: &str) -> &str {
    &revision[..revision.len().min(7)]
}
