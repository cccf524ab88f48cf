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

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::{Deserialize, Serialize};

use super::Cause;
use super::policy::{Approval, OnFailure, Rollout};
use crate::status::State;

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
    let by_name: BTreeMap<&str, &Member> = members.iter().map(|m| (m.name, m)).collect();
    let changes: BTreeMap<&str, &Change> =
        members.iter().filter_map(|m| m.change.as_ref().map(|c| (m.name, c))).collect();
    let mut gated = Gated::default();
    let covered = |p: &Progress| changes.iter().all(|(n, c)| p.clusters.get(*n).is_some_and(|e| e.target == c.target));
    let (mut p, fresh) = match stored {
        Some(p) if p.state != RunState::Complete || covered(p) => (p.clone(), false),
        _ if changes.is_empty() => return gated,
        _ => (Progress::new(rollout, head, now, stored.map_or(0, |s| s.generation)), true),
    };

    // Join, and supersede: a cluster whose target moved waits again, keeping what it ran first.
    let mut moved: Vec<&str> = Vec::new();
    for (&name, &change) in &changes {
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
        let Some(member) = by_name.get(name.as_str()) else { return false };
        changes.contains_key(name.as_str())
            || match e.state {
                ClusterRun::Waiting => false,
                ClusterRun::Updating => member.running.as_ref().is_some_and(|r| r.before.digest == e.target),
                _ => true,
            }
    });
    let superseded = !fresh && !moved.is_empty();
    if superseded {
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

    // Waves: aligned with the policy's, keeping what each wave went through.
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
    let tags: BTreeMap<&str, &[String]> = p.clusters.keys().map(|n| (n.as_str(), by_name[n.as_str()].tags)).collect();
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
    if superseded {
        // Approvals stand for the waves before the first one whose clusters got something new.
        let first = assigned.iter().position(|names| names.iter().any(|n| moved.contains(&n.as_str())));
        for wave in p.waves.iter_mut().skip(first.unwrap_or(usize::MAX)) {
            wave.promoted = None;
            wave.bake_waived = None;
        }
    }

    // Observe: what the clusters' states say about the clusters in flight.
    for (name, e) in p.clusters.iter_mut() {
        let member = by_name[name.as_str()];
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
    for (name, e) in &p.clusters {
        if e.state == ClusterRun::Failed && stored.and_then(|s| s.clusters.get(name)).is_none_or(|s| s.state != e.state)
        {
            gated.events.push(Event::new(format!("failed: {}", e.message.as_deref().unwrap_or(""))).cluster(name));
        }
    }

    // Halt, and roll back.
    if p.halt.is_none() && p.aborted.is_none() && p.finished_at.is_none() {
        let mut failed: Vec<(&String, &ClusterProgress)> =
            p.clusters.iter().filter(|(_, e)| e.state == ClusterRun::Failed).collect();
        failed.sort_by_key(|(n, e)| (e.finished_at, *n));
        if failed.len() >= rollout.failure_threshold
            && let Some((name, e)) = failed.first()
        {
            p.halt = Some(Halt {
                at: now,
                wave: e.wave.clone(),
                cluster: name.to_string(),
                reason: e.message.clone().unwrap_or_default(),
            });
            let what = format!(
                "halted: its cluster failed ({} failed, threshold {})",
                failed.len(),
                rollout.failure_threshold
            );
            gated.events.push(Event::new(what).cluster(name).wave(&e.wave));
        }
    }
    let rolling_back = p.aborted.is_some() || (p.halt.is_some() && rollout.on_failure == OnFailure::Rollback);
    if rolling_back {
        for (name, e) in p.clusters.iter_mut() {
            if matches!(e.state, ClusterRun::Updating | ClusterRun::Updated | ClusterRun::Failed) && e.before.is_some()
            {
                e.state = ClusterRun::RollingBack;
                gated.events.push(Event::new("returns to what it ran before").cluster(name));
            }
        }
    }

    // Waves done since: their bake starts.
    for (spec, wave) in rollout.waves.iter().zip(p.waves.iter_mut()) {
        let mut members = p.clusters.values().filter(|c| c.wave == spec.name).peekable();
        let any = members.peek().is_some();
        if any && members.all(|c| done(c.state)) {
            if wave.completed_at.is_none() {
                wave.completed_at = Some(now);
                gated.events.push(Event::new("wave done").wave(&spec.name));
            }
        } else {
            wave.completed_at = None;
        }
    }

    // Release into the slots of the wave that runs.
    let stopped = p.stopped();
    let blocker = blocker(&p, rollout, now);
    if let (Blocker::Updating(i), None) = (blocker, &stopped) {
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
                e.before = by_name[name.as_str()].running.as_ref().map(|r| r.before.clone());
            }
            free -= 1;
            gated.events.push(Event::new("released").cluster(name).wave(&spec.name));
        }
        if p.waves[i].started_at.is_none() {
            p.waves[i].started_at = Some(now);
            gated.events.push(Event::new("wave started").wave(&spec.name));
        }
    }
    if blocker == Blocker::Done && p.finished_at.is_none() && !rolling_back {
        p.finished_at = Some(now);
        gated.events.push(Event::new("complete"));
    }
    if let Blocker::Bake { until, .. } = blocker {
        gated.wake_at = Some(until);
    }

    // Verdicts, and what holds each wave.
    let held = |i: usize| hold_reason(&p, rollout, blocker, stopped.as_deref(), i);
    let reasons: BTreeMap<&str, String> =
        rollout.waves.iter().enumerate().map(|(i, w)| (w.name.as_str(), held(i))).collect();
    for (name, e) in &p.clusters {
        let verdict = match e.state {
            ClusterRun::Waiting => Verdict::Hold { wave: e.wave.clone(), why: reasons[e.wave.as_str()].clone() },
            ClusterRun::Updating | ClusterRun::Updated | ClusterRun::Failed => Verdict::Release,
            ClusterRun::RollingBack | ClusterRun::RolledBack => match &e.before {
                Some(before) => Verdict::RollBack(before.clone()),
                None => Verdict::Release,
            },
        };
        gated.verdicts.insert(name.clone(), verdict);
    }
    let awaiting: Vec<&str> = members.iter().filter(|m| m.awaits_approval).map(|m| m.name).collect();
    p.next = next(&p, rollout, blocker, stopped.as_deref(), &awaiting);
    p.state = p.derive_state();
    if stored != Some(&p) {
        gated.status = Some(status(&p, rollout));
        gated.progress = Some(p);
    }
    gated
}

fn short(revision: &str) -> &str {
    &revision[..revision.len().min(7)]
}

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

fn updated_of(p: &Progress, wave: &str) -> (usize, usize) {
    let members: Vec<_> = p.members(wave).collect();
    (members.iter().filter(|(_, c)| c.state == ClusterRun::Updated).count(), members.len())
}

/// Why the clusters of wave `i` still wait.
fn hold_reason(p: &Progress, rollout: &Rollout, blocker: Blocker, stopped: Option<&str>, i: usize) -> String {
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
fn next(p: &Progress, rollout: &Rollout, blocker: Blocker, stopped: Option<&str>, awaiting: &[&str]) -> String {
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

fn status(p: &Progress, rollout: &Rollout) -> Report {
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

/// Applies an operator's action to the stored progress; the next gating acts on it. Returns
/// what was done, in a sentence.
pub fn act(p: &mut Progress, rollout: &Rollout, action: &Action, by: &str, now: Millis) -> Result<String, Refused> {
    let refuse = |why: String| Err(Refused(why));
    let name = &rollout.name;
    if p.state == RunState::Complete {
        return refuse(format!("rollout {name} is complete at {}; nothing to {}", short(&p.revision), action.name()));
    }
    if let Some(a) = &p.aborted {
        return refuse(format!(
            "rollout {name} was aborted by {}; a newer commit that changes what it brings starts it over",
            a.by
        ));
    }
    let who = Act { by: by.to_string(), at: now };
    match action {
        Action::Pause => {
            if let Some(paused) = &p.paused {
                return refuse(format!("rollout {name} is already paused (by {})", paused.by));
            }
            p.paused = Some(who);
            Ok(format!("paused: clusters being updated finish, no other starts until strata rollout resume {name}"))
        }
        Action::Resume => {
            if p.paused.is_none() && p.halt.is_none() {
                return refuse(format!("rollout {name} is neither paused nor halted"));
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
        Action::Abort => {
            p.aborted = Some(who);
            Ok("aborted: no cluster starts any more, the clusters it updated return to what they ran".into())
        }
        Action::Promote { wave, revision } => {
            if let Some(seen) = revision.as_deref().filter(|r| !r.is_empty() && !p.revision.starts_with(*r)) {
                return refuse(format!(
                    "rollout {name} moved on to {} since {} was seen: look at it again",
                    short(&p.revision),
                    short(seen)
                ));
            }
            let Promotion { starts, ends_bake_of } = promotion(p, rollout, now)?;
            if let Some(asked) = wave.as_deref().filter(|w| starts.map(|i| rollout.waves[i].name.as_str()) != Some(*w))
            {
                let what = match (starts, ends_bake_of) {
                    (Some(i), _) => format!("wave {} is what waits", rollout.waves[i].name),
                    (None, Some(i)) => format!("the last wave, {}, bakes", rollout.waves[i].name),
                    (None, None) => "nothing waits".into(),
                };
                return refuse(format!("wave {asked} is not what waits for promotion: {what}"));
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
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::rollout::policy::testing::{rollout, wave};
    use crate::rollout::policy::{Parallel, Rollout};

    const HEAD: &str = "1111111111111111111111111111111111111111";
    const NEXT: &str = "2222222222222222222222222222222222222222";

    /// A fleet for the gate: each cluster with tags, what it runs (digest `old`) and the change
    /// at the head (digest `new`), healthy.
    struct Fleet {
        clusters: Vec<Entry>,
        /// Clusters whose change waits for their own approval once released.
        awaiting: Vec<String>,
    }

    /// A cluster: name, tags, change at the head, what it runs, when drift was found.
    type Entry = (String, Vec<String>, Option<Change>, Option<Running>, Option<Millis>);

    fn running(digest: &str, health: Health) -> Running {
        Running {
            before: Before {
                profile_revision: "r0".into(),
                cluster_revision: "r0".into(),
                digest: digest.into(),
                what: format!("web@{digest}"),
            },
            health,
            applied_at: None,
        }
    }

    impl Fleet {
        fn of(clusters: &[(&str, &str)]) -> Fleet {
            Fleet {
                clusters: clusters
                    .iter()
                    .map(|(name, tags)| {
                        let tags = tags.split(',').filter(|t| !t.is_empty()).map(str::to_string).collect();
                        (name.to_string(), tags, Some(change("new")), Some(running("old", Health::Healthy)), None)
                    })
                    .collect(),
                awaiting: Vec::new(),
            }
        }

        fn get(&mut self, name: &str) -> &mut Entry {
            self.clusters.iter_mut().find(|c| c.0 == name).unwrap()
        }

        /// The cluster now runs `digest` with `health`; it has no change left when that is its target.
        fn runs(&mut self, name: &str, digest: &str, health: Health) -> &mut Fleet {
            let c = self.get(name);
            c.3 = Some(running(digest, health));
            if c.2.as_ref().is_some_and(|ch| ch.target == digest) {
                c.2 = None;
            }
            self
        }

        /// As [`Fleet::runs`], the apply having ended at `at`.
        fn runs_at(&mut self, name: &str, digest: &str, health: Health, at: Millis) -> &mut Fleet {
            self.runs(name, digest, health);
            self.get(name).3.as_mut().unwrap().applied_at = Some(at);
            self
        }

        /// A newer commit: every cluster's change now brings `digest`.
        fn change_to(&mut self, digest: &str) {
            for c in &mut self.clusters {
                let runs = c.3.as_ref().map(|r| r.before.digest.clone());
                c.2 = (runs.as_deref() != Some(digest)).then(|| change(digest));
            }
        }

        fn members(&self) -> Vec<Member<'_>> {
            self.clusters
                .iter()
                .map(|(name, tags, change, running, drift)| Member {
                    name,
                    tags,
                    change: change.clone(),
                    running: running.clone(),
                    drift_at: *drift,
                    awaits_approval: self.awaiting.contains(name),
                })
                .collect()
        }
    }

    fn change(digest: &str) -> Change {
        Change { cause: Cause::NewVersion, to: format!("web@{digest}"), target: digest.into() }
    }

    /// Gates and keeps the stored progress, as the daemon does.
    struct Run {
        rollout: Rollout,
        stored: Option<Progress>,
        last: Gated,
    }

    impl Run {
        fn new(rollout: Rollout) -> Run {
            Run { rollout, stored: None, last: Gated::default() }
        }

        fn gate(&mut self, fleet: &Fleet, head: &str, now: Millis) -> &Gated {
            let members = fleet.members();
            self.last = gate(&self.rollout, head, &members, self.stored.as_ref(), now);
            if let Some(p) = &self.last.progress {
                self.stored = Some(p.clone());
            }
            &self.last
        }

        fn released(&self) -> Vec<&str> {
            self.last.verdicts.iter().filter(|(_, v)| **v == Verdict::Release).map(|(n, _)| n.as_str()).collect()
        }

        fn state(&self, cluster: &str) -> ClusterRun {
            self.stored.as_ref().unwrap().clusters[cluster].state
        }

        fn act(&mut self, action: Action, now: Millis) -> Result<String, Refused> {
            let p = self.stored.as_mut().unwrap();
            act(p, &self.rollout, &action, "alice", now)
        }
    }

    fn three_waves() -> Rollout {
        let mut staging = wave("staging", "env:staging");
        staging.bake = Duration::from_secs(60);
        let mut canary = wave("canary", "env:prod");
        canary.max_clusters = Some(1);
        let mut rest = wave("rest", "");
        rest.max_parallel = Parallel::Count(2);
        rollout(vec![staging, canary, rest])
    }

    fn six() -> Fleet {
        Fleet::of(&[
            ("stage", "env:staging"),
            ("prod-a", "env:prod"),
            ("prod-b", "env:prod"),
            ("prod-c", "env:prod"),
            ("prod-d", "env:prod"),
            ("lab", "env:lab"),
        ])
    }

    #[test]
    fn waves_go_in_order_each_after_the_bake_of_the_one_before() {
        let mut run = Run::new(three_waves());
        let mut fleet = six();
        let g = run.gate(&fleet, HEAD, 0).clone();
        assert_eq!(run.released(), ["stage"]);
        let p = run.stored.as_ref().unwrap();
        assert_eq!(p.next, "wave 1 of 3 (staging): 0 of 1 clusters updated");
        assert_eq!(g.status.as_ref().unwrap().state, State::Pending);
        assert_eq!(
            run.last.verdicts["prod-a"],
            Verdict::Hold { wave: "canary".into(), why: "waits for wave staging (0 of 1 updated)".into() }
        );

        // Applied but not yet healthy: nothing moves.
        fleet.runs("stage", "new", Health::Unknown);
        run.gate(&fleet, HEAD, 1_000);
        assert_eq!(run.released(), ["stage"]);
        // Healthy: staging is done and bakes a minute; the gate asks to be woken then.
        fleet.runs("stage", "new", Health::Healthy);
        run.gate(&fleet, HEAD, 2_000);
        assert_eq!(run.state("stage"), ClusterRun::Updated);
        assert_eq!(run.last.wake_at, Some(62_000));
        assert_eq!(run.released(), ["stage"]);
        assert!(
            run.stored.as_ref().unwrap().next.starts_with("wave 1 of 3 (staging) bakes until 1970-01-01T00:01:02Z")
        );
        run.gate(&fleet, HEAD, 61_999);
        assert_eq!(run.released(), ["stage"], "still baking");

        // Baked: the canary (the first prod cluster by name only) goes.
        run.gate(&fleet, HEAD, 62_000);
        assert_eq!(run.released(), ["prod-a", "stage"]);
        fleet.runs("prod-a", "new", Health::Healthy);
        run.gate(&fleet, HEAD, 63_000);
        // The rest, two at a time, by name.
        assert_eq!(run.released(), ["lab", "prod-a", "prod-b", "stage"]);
        fleet.runs("lab", "new", Health::Healthy);
        run.gate(&fleet, HEAD, 64_000);
        assert_eq!(run.released(), ["lab", "prod-a", "prod-b", "prod-c", "stage"]);
        for c in ["prod-b", "prod-c"] {
            fleet.runs(c, "new", Health::Healthy);
        }
        run.gate(&fleet, HEAD, 65_000);
        fleet.runs("prod-d", "new", Health::Healthy);
        let g = run.gate(&fleet, HEAD, 66_000).clone();
        let status = g.status.clone().unwrap();
        assert_eq!(
            (status.state, status.description.as_str()),
            (State::Success, "rolled out to 6 clusters in 3 waves")
        );
        assert_eq!(run.stored.as_ref().unwrap().state, RunState::Complete);
        // Nothing left to roll out: the next evaluation stores nothing and holds nothing.
        let g = run.gate(&fleet, HEAD, 67_000).clone();
        assert!(g.progress.is_none() && g.verdicts.values().all(|v| *v == Verdict::Release));
    }

    #[test]
    fn a_released_wave_that_waits_for_clusters_own_approvals_says_which_in_its_status() {
        let mut run =
            Run::new(rollout(vec![wave("staging", "env:staging"), wave("prod", "env:prod"), wave("rest", "")]));
        let mut fleet = six();
        fleet.awaiting = ["prod-a", "prod-b", "prod-c", "prod-d", "stage"].map(String::from).to_vec();
        let g = run.gate(&fleet, HEAD, 0).clone();
        assert_eq!(
            g.status.unwrap().description,
            "wave 1 of 3 (staging): 0 of 1 clusters updated; waits for approval of 1 cluster: stage \
             (strata approve --rollout default --wave staging)"
        );
        // Approved and applied: the next wave's four wait, and the status names three of them.
        fleet.awaiting.retain(|c| c != "stage");
        fleet.runs("stage", "new", Health::Healthy);
        let g = run.gate(&fleet, HEAD, 1_000).clone();
        assert_eq!(run.released(), ["prod-a", "prod-b", "prod-c", "prod-d", "stage"]);
        assert_eq!(
            g.status.unwrap().description,
            "wave 2 of 3 (prod): 0 of 4 clusters updated; waits for approval of 4 clusters: prod-a, prod-b, prod-c, … \
             (strata approve --rollout default --wave prod)"
        );
        // Held clusters are not counted: they wait for their wave, not for an approval.
        assert!(!run.stored.as_ref().unwrap().next.contains("lab"));
        assert_eq!(some_names(&["a", "b"], NAMES_SHOWN), "a, b");
    }

    #[test]
    fn max_parallel_counts_the_clusters_in_flight_and_is_never_exceeded() {
        let mut r = rollout(vec![wave("all", "")]);
        r.waves[0].max_parallel = Parallel::Percent(40);
        let mut run = Run::new(r);
        let mut fleet = six();
        let mut now = 0;
        let mut most = 0;
        while run.stored.as_ref().is_none_or(|p| p.state != RunState::Complete) {
            run.gate(&fleet, HEAD, now);
            let updating: Vec<String> = run
                .stored
                .as_ref()
                .unwrap()
                .clusters
                .iter()
                .filter(|(_, c)| c.state == ClusterRun::Updating)
                .map(|(n, _)| n.clone())
                .collect();
            most = most.max(updating.len());
            // One of those in flight finishes per round.
            if let Some(first) = updating.first() {
                fleet.runs(first, "new", Health::Healthy);
            }
            now += 1000;
            assert!(now < 100_000, "the rollout finishes");
        }
        assert_eq!(most, 3, "40% of 6 clusters, rounded up");
    }

    #[test]
    fn a_manual_wave_waits_for_promotion_and_a_promotion_also_ends_a_bake() {
        let mut r = three_waves();
        r.waves[1].approval = Approval::Manual;
        let mut run = Run::new(r);
        let mut fleet = six();
        run.gate(&fleet, HEAD, 0);
        assert_eq!(
            run.act(Action::Promote { wave: None, revision: None }, 1).unwrap_err().0,
            "wave staging is updating (0 of 1 clusters): nothing waits for promotion"
        );
        fleet.runs("stage", "new", Health::Healthy);
        run.gate(&fleet, HEAD, 1_000);
        // Baking, and canary is manual: one promotion ends the bake and approves canary.
        assert_eq!(
            run.act(Action::Promote { wave: Some("rest".into()), revision: None }, 2_000).unwrap_err().0,
            "wave rest is not what waits for promotion: wave canary is what waits"
        );
        run.act(Action::Promote { wave: Some("canary".into()), revision: Some("1111111".into()) }, 2_000).unwrap();
        run.gate(&fleet, HEAD, 2_000);
        assert_eq!(run.released(), ["prod-a", "stage"]);

        // Without a bake before it, a manual wave waits for its promotion alone.
        let mut r = three_waves();
        r.waves[0].bake = Duration::ZERO;
        r.waves[1].approval = Approval::Manual;
        let mut run = Run::new(r);
        let mut fleet = six();
        run.gate(&fleet, HEAD, 0);
        fleet.runs("stage", "new", Health::Healthy);
        run.gate(&fleet, HEAD, 1_000);
        assert_eq!(run.released(), ["stage"]);
        assert_eq!(
            run.last.verdicts["prod-a"],
            Verdict::Hold {
                wave: "canary".into(),
                why: "wave canary waits for promotion: strata rollout promote default".into()
            }
        );
        assert_eq!(
            run.last.status.as_ref().unwrap().description,
            "wave 2 of 3 (canary) waits for promotion: strata rollout promote default"
        );
        assert_eq!(run.act(Action::Promote { wave: None, revision: None }, 5_000).unwrap(), "wave canary starts");
        run.gate(&fleet, HEAD, 5_000);
        assert_eq!(run.released(), ["prod-a", "stage"]);
        assert_eq!(run.stored.as_ref().unwrap().waves[1].promoted.as_ref().unwrap().by, "alice");
    }

    #[test]
    fn a_failure_halts_later_waves_and_lets_the_running_wave_finish() {
        let mut r = three_waves();
        r.waves[0].bake = Duration::ZERO;
        r.waves[1].max_clusters = None;
        r.waves[1].max_parallel = Parallel::Count(2);
        let mut run = Run::new(r);
        let mut fleet = six();
        run.gate(&fleet, HEAD, 0);
        fleet.runs("stage", "new", Health::Healthy);
        run.gate(&fleet, HEAD, 1_000);
        assert_eq!(run.released(), ["prod-a", "prod-b", "stage"]);
        let unhealthy = Health::Unhealthy("Deployment/web/ui: rollout exceeded its progress deadline".into());
        fleet.runs_at("prod-a", "new", unhealthy, 2_000);
        let g = run.gate(&fleet, HEAD, 2_000).clone();
        assert_eq!(run.state("prod-a"), ClusterRun::Failed);
        let status = g.status.unwrap();
        assert_eq!(status.state, State::Failure);
        assert_eq!(
            status.description,
            "halted in wave 2 of 3 (canary): prod-a unhealthy: Deployment/web/ui: rollout exceeded its progress deadline"
        );
        // prod-b was in flight: it goes on; prod-c and prod-d (same wave, not started) and the lab stop.
        assert_eq!(run.released(), ["prod-a", "prod-b", "stage"]);
        fleet.runs("prod-b", "new", Health::Healthy);
        run.gate(&fleet, HEAD, 3_000);
        assert_eq!(run.state("prod-b"), ClusterRun::Updated);
        assert_eq!(run.released(), ["prod-a", "prod-b", "stage"]);
        // The wave it halted in shows so, not as a wave done and baking.
        let p = run.stored.clone().unwrap();
        assert_eq!(wave_states(&p, &run.rollout, 3_000)[1..], [WaveState::Halted, WaveState::Held]);
        assert!(
            matches!(&run.last.verdicts["lab"], Verdict::Hold { why, .. } if why.starts_with("the rollout halted: prod-a unhealthy"))
        );
        assert_eq!(
            run.act(Action::Promote { wave: None, revision: None }, 4_000).unwrap_err().0.split(':').next(),
            Some("the rollout halted")
        );

        // Resumed: failures forgotten, prod-a is in flight again (its worker retries), and the
        // unhealthy result from before does not count again.
        run.act(Action::Resume, 5_000).unwrap();
        run.gate(&fleet, HEAD, 5_000);
        assert_eq!(run.state("prod-a"), ClusterRun::Updating);
        assert_eq!(run.released(), ["prod-a", "prod-b", "prod-c", "stage"]);
    }

    #[test]
    fn with_on_failure_rollback_every_cluster_touched_returns_to_what_it_ran() {
        let mut r = three_waves();
        r.waves[0].bake = Duration::ZERO;
        r.on_failure = OnFailure::Rollback;
        let mut run = Run::new(r);
        let mut fleet = six();
        run.gate(&fleet, HEAD, 0);
        fleet.runs("stage", "new", Health::Healthy);
        run.gate(&fleet, HEAD, 1_000);
        fleet.runs("prod-a", "new", Health::Unhealthy("not ready".into()));
        run.gate(&fleet, HEAD, 2_000);
        let back = run.last.verdicts.iter().filter(|(_, v)| matches!(v, Verdict::RollBack(_))).map(|(n, _)| n.as_str());
        assert_eq!(back.collect::<Vec<_>>(), ["prod-a", "stage"]);
        let Verdict::RollBack(before) = &run.last.verdicts["stage"] else { panic!() };
        assert_eq!(before.digest, "old");
        assert!(
            run.last.status.as_ref().unwrap().description.starts_with("halted in wave 2 of 3 (canary), rolling back")
        );
        fleet.runs("stage", "old", Health::Healthy);
        run.gate(&fleet, HEAD, 3_000);
        assert_eq!(run.state("stage"), ClusterRun::RolledBack);
        assert_eq!(run.state("prod-a"), ClusterRun::RollingBack);
    }

    #[test]
    fn a_newer_commit_supersedes_clusters_not_yet_updated_get_it_and_done_waves_go_again_only_if_it_changed_for_them() {
        let mut r = three_waves();
        r.waves[1].approval = Approval::Manual;
        let mut run = Run::new(r);
        let mut fleet = six();
        run.gate(&fleet, HEAD, 0);
        fleet.runs("stage", "new", Health::Healthy);
        run.gate(&fleet, HEAD, 1_000);
        run.act(Action::Promote { wave: None, revision: None }, 1_500).unwrap();
        run.gate(&fleet, HEAD, 2_000);
        assert_eq!(run.released(), ["prod-a", "stage"]);

        // A commit that changes nothing for these clusters: the same run goes on.
        let g = run.gate(&fleet, NEXT, 2_500).clone();
        assert!(g.superseded.is_none());
        assert_eq!(run.stored.as_ref().unwrap().revision, HEAD);

        // A newer content: staging runs the old target now, so it goes again first; the rest
        // will get the newest content straight away; canary needs a new promotion.
        fleet.change_to("newer");
        let g = run.gate(&fleet, NEXT, 3_000).clone();
        let superseded = g.superseded.unwrap();
        assert_eq!((superseded.revision.as_str(), superseded.state), (HEAD, State::Error));
        assert!(superseded.description.starts_with("superseded by 2222222 before it reached every wave"));
        let p = run.stored.as_ref().unwrap();
        assert_eq!(p.revision, NEXT);
        assert!(p.clusters.values().all(|c| c.target == "newer"));
        assert_eq!(p.clusters["stage"].before.as_ref().unwrap().digest, "old", "what it ran before the rollout");
        assert_eq!(run.released(), ["stage"]);
        assert!(run.stored.as_ref().unwrap().waves[1].promoted.is_none());

        // A superseding commit that changes only later waves leaves done waves done.
        let mut r = three_waves();
        r.waves[0].bake = Duration::ZERO;
        let mut run = Run::new(r);
        let mut fleet = six();
        run.gate(&fleet, HEAD, 0);
        fleet.runs("stage", "new", Health::Healthy);
        run.gate(&fleet, HEAD, 1_000);
        fleet.get("lab").2 = Some(change("lab-only"));
        run.gate(&fleet, NEXT, 2_000);
        assert_eq!(run.state("stage"), ClusterRun::Updated);
        assert_eq!(run.released(), ["prod-a", "stage"]);
    }

    #[test]
    fn pause_abort_and_drift_as_failure() {
        let mut r = three_waves();
        r.waves[0].bake = Duration::ZERO;
        r.fail_on_drift = true;
        let mut run = Run::new(r);
        let mut fleet = six();
        run.gate(&fleet, HEAD, 0);
        run.act(Action::Pause, 100).unwrap();
        assert!(run.act(Action::Pause, 100).is_err());
        fleet.runs("stage", "new", Health::Healthy);
        run.gate(&fleet, HEAD, 1_000);
        assert_eq!(run.released(), ["stage"], "paused: canary does not start");
        assert_eq!(run.stored.as_ref().unwrap().state, RunState::Paused);
        run.act(Action::Resume, 1_500).unwrap();
        run.gate(&fleet, HEAD, 2_000);
        assert_eq!(run.released(), ["prod-a", "stage"]);

        // Drift found on staging after its update: a failure.
        fleet.get("stage").4 = Some(2_500);
        run.gate(&fleet, HEAD, 3_000);
        assert_eq!(run.state("stage"), ClusterRun::Failed);
        assert_eq!(run.stored.as_ref().unwrap().halt.as_ref().unwrap().cluster, "stage");
        run.act(Action::Abort, 4_000).unwrap();
        run.gate(&fleet, HEAD, 4_000);
        assert_eq!(run.stored.as_ref().unwrap().state, RunState::Aborted);
        assert!(matches!(run.last.verdicts["stage"], Verdict::RollBack(_)));
        assert!(run.act(Action::Resume, 5_000).unwrap_err().0.contains("was aborted by alice"));
        // An abort stays until the content moves on.
        run.gate(&fleet, NEXT, 6_000);
        assert_eq!(run.stored.as_ref().unwrap().state, RunState::Aborted);
    }
}
