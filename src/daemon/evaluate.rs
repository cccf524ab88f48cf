//! Evaluate: one revision in, per cluster what the daemon should do about it out.
//!
//! ```text
//!   head revision ──┐
//!   what each cluster runs (store) ──> load both ──> plan per cluster ──> rollouts' gate ──> decide by policy ──> Outcome
//!   approvals, suspensions (store) ──┘                                    (daemon::rollouts)   (job | pending | problem)
//! ```
//!
//! Every cluster is planned first, then the rollouts gate what they govern (which needs every
//! cluster's plan: a bump in several cluster files is told by their number), then each cluster
//! is decided.
//!
//! Blocking (git2 reads, rendering): the event loop runs it on a blocking thread and hands the
//! outcomes to the workers. Problems come back as data: a revision that does not load is an
//! [`EvaluateError`] carrying its diagnostics, a cluster that does not render (or whose rendering
//! panics) an [`Outcome`] with a [`ClusterProblem`], and only the first is fatal to the revision.
//!
//! Each revision is loaded once, the others reusing the head's unchanged files; which clusters a
//! change reaches is worked out from the paths it changed ([`plan::Edits`]); what the workers are
//! to run is rendered on every core. What the store proves a cluster already runs (after a
//! restart: the digest it applied, at revisions still loaded) is not rendered at all: the worker
//! gets its identity, and a [`Deferred`] renders it when the worker first needs it.

use crate::daemon::store::Store as _;
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::fmt;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};

use rayon::prelude::*;
use tokio::sync::oneshot;
use tracing::{info, warn};

use super::Shared;
use super::decide::{self, Decision, Hold, Run};
use super::guard::{self, Panic};
use super::rollouts::{self, held_summary};
use super::store::{self, Pending, StoreError};
use super::worker::Job;
use crate::config::TargetConfig;
use crate::diag::{Diagnostic, Diagnostics};
use crate::model::{Cluster, DriftPolicy, Model};
use crate::plan::{self, ChangeKind, ClusterPlan, Edits};
use crate::render::tools::SystemTools;
use crate::render::{PackedSet, Renderer};
use crate::rollout::gate::{Progress, Verdict};
use crate::source::{Changes, GitSource, Snapshot, SourceError};

/// Why a revision was not evaluated.
#[derive(Debug, thiserror::Error)]
pub enum EvaluateError {
    #[error("revision {revision} does not load:\n{diagnostics}")]
    Invalid { revision: String, diagnostics: Diagnostics },
    #[error("revision {revision} cannot be read: {source}")]
    Source {
        revision: String,
        #[source]
        source: SourceError,
    },
    #[error("evaluating revision {revision} crashed: {panic}")]
    Panicked { revision: String, panic: Panic },
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A newer revision came while this one was evaluated (or the daemon stops): nothing decided.
    #[error("evaluating revision {revision} stopped: a newer revision supersedes it")]
    Cancelled { revision: String },
    /// `repository.verify`: the head (or a commit since the last verified one) is not signed by
    /// an allowed key. It is never evaluated.
    #[error("revision {revision} is not evaluated: a commit is not signed by an allowed key:\n{refusal}")]
    Unverified { revision: String, refusal: Box<crate::verify::Refusal> },
    /// What this host needs to evaluate cannot be had (keys unreadable): tried again later.
    #[error("revision {revision} cannot be evaluated on this host: {message}")]
    Host { revision: String, message: String },
}

impl EvaluateError {
    /// Whether the revision itself is at fault, so it is rejected (clusters keep what they run
    /// and its commit gets an error status), rather than this host, which tries again later.
    pub fn rejects(&self) -> bool {
        match self {
            EvaluateError::Invalid { .. } | EvaluateError::Panicked { .. } | EvaluateError::Unverified { .. } => true,
            EvaluateError::Host { .. } => false,
            EvaluateError::Source { source, .. } => {
                matches!(source, SourceError::NoSubdir { .. } | SourceError::BadEntry { .. })
            }
            EvaluateError::Store(_) | EvaluateError::Cancelled { .. } => false,
        }
    }

    /// One line for a commit status.
    pub fn summary(&self) -> String {
        match self {
            EvaluateError::Invalid { diagnostics, .. } => first_problem(diagnostics),
            EvaluateError::Panicked { panic, .. } => format!("evaluating it crashed: {}", panic.message),
            EvaluateError::Source { source, .. } => source.to_string(),
            EvaluateError::Store(e) => e.to_string(),
            EvaluateError::Cancelled { .. } | EvaluateError::Host { .. } => self.to_string(),
            EvaluateError::Unverified { refusal, .. } => refusal.to_string(),
        }
    }

    /// The description of the `error` commit status a rejected revision gets.
    pub fn status_description(&self) -> String {
        match self {
            // Short enough for a forge's status: the commit and who signed it come first.
            EvaluateError::Unverified { refusal, .. } => format!(
                "not evaluated: commit {} signed by {} ({})",
                refusal.commit.get(..7).unwrap_or(&refusal.commit),
                refusal.signer,
                refusal.why
            ),
            _ => format!("revision does not load: {}", self.summary()),
        }
    }

    /// For metrics: invalid, crashed, unreadable, store.
    pub fn label(&self) -> &'static str {
        match self {
            EvaluateError::Invalid { .. } => "invalid",
            EvaluateError::Panicked { .. } => "crashed",
            EvaluateError::Source { .. } => "unreadable",
            EvaluateError::Store(_) => "store",
            EvaluateError::Cancelled { .. } => "superseded",
            EvaluateError::Unverified { .. } => "unverified",
            EvaluateError::Host { .. } => "host",
        }
    }
}

/// Why one cluster has no desired set at a revision; it keeps what it runs.
#[derive(Clone, Debug)]
pub enum ClusterProblem {
    /// It does not render, or names a target this host does not configure.
    Invalid(Diagnostics),
    /// Planning or rendering it panicked.
    Crashed(Panic),
    /// Not rendered: the evaluation was cancelled (never reaches a worker).
    Cancelled,
}

impl ClusterProblem {
    /// One line for a commit status.
    pub fn summary(&self) -> String {
        match self {
            ClusterProblem::Invalid(diagnostics) => format!("does not render: {}", first_problem(diagnostics)),
            ClusterProblem::Crashed(panic) => format!("rendering crashed: {}", panic.message),
            ClusterProblem::Cancelled => "not rendered: a newer revision supersedes this one".to_string(),
        }
    }
}

impl fmt::Display for ClusterProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ClusterProblem::Invalid(diagnostics) => write!(f, "{diagnostics}"),
            ClusterProblem::Crashed(panic) => write!(f, "rendering crashed: {panic}"),
            ClusterProblem::Cancelled => f.write_str(&self.summary()),
        }
    }
}

/// The first finding, without its `error[code]:` prefix and help: what fits a status.
pub fn first_problem(diagnostics: &Diagnostics) -> String {
    let Some(d) = diagnostics.iter().next() else { return String::new() };
    let Diagnostic { file: _, line: _, object, message, .. } = d;
    let mut out = d.location().map(|l| format!("{l}: ")).unwrap_or_default();
    if let Some(object) = object {
        out.push_str(object);
        out.push_str(": ");
    }
    out.push_str(message);
    out
}

/// What one evaluation decided for one cluster.
pub struct Outcome {
    pub cluster: String,
    /// The revision evaluated.
    pub revision: Option<String>,
    pub job: Option<Job>,
    pub pending: Option<Pending>,
    /// The revision does not render for this cluster.
    pub problem: Option<ClusterProblem>,
    /// Its target is gone (a cluster Secret removed): stop reconciling it, whatever it ran.
    pub untargeted: bool,
    /// How its running worker reconciles what it runs, when no job is sent.
    pub settings: Option<super::worker::Settings>,
}

impl Outcome {
    pub fn new(cluster: &str, head: &str) -> Outcome {
        Outcome {
            cluster: cluster.to_string(),
            revision: Some(head.to_string()),
            job: None,
            pending: None,
            problem: None,
            untargeted: false,
            settings: None,
        }
    }

    /// The cluster does not render (or has no target) at `head`.
    pub fn failed(cluster: &str, head: &str, problem: ClusterProblem) -> Outcome {
        Outcome { problem: Some(problem), ..Outcome::new(cluster, head) }
    }
}

/// How the approvals of `cluster`'s pending update at `head` stand against the approval rules
/// in force for it (one approval by anyone who may act where none applies): what decides it,
/// and what a rollout's wave says of its clusters waiting for their approval. On the
/// evaluation's blocking thread.
pub(super) fn verdict(
    shared: &Shared,
    cluster: &str,
    head: &str,
    rules: Option<&super::RulesInForce>,
) -> Result<crate::approval::Verdict, StoreError> {
    let given: Vec<crate::approval::Given> = store::wait(shared.store.approvals(cluster))?
        .into_iter()
        .filter(|a| a.revision == head)
        .map(|a| crate::approval::Given { identity: a.identity, groups: a.groups })
        .collect();
    let applying: Vec<&crate::approval::Rule> = rules.map(|r| r.rules.iter().collect()).unwrap_or_default();
    Ok(crate::approval::judge(&applying, &given, rules.map_or(&[][..], |r| &r.authors)))
}

/// The most commits read for the authors of a change ([`crate::source::GitSource::authors_between`]).
const MAX_AUTHOR_COMMITS: usize = 10_000;

fn pending_summary(plan: &ClusterPlan, hold: &Hold, cluster: &str, still: Option<String>) -> String {
    let what = plan.to.clone().unwrap_or_default();
    match (hold, still) {
        (Hold::Approval, Some(still)) => {
            format!("{}{what} — {still} — approve: strata approve {cluster}", crate::daemon::store::PENDING_PREFIX)
        }
        (hold, _) => held(&what, hold, cluster),
    }
}

fn held(what: &str, hold: &Hold, cluster: &str) -> String {
    // `Pending::target` reads the version back from here.
    let prefix = crate::daemon::store::PENDING_PREFIX;
    match hold {
        Hold::Approval => format!("{prefix}{what} — approve: strata approve {cluster}"),
        Hold::Window { window } => format!("{prefix}{what} — waits for its window {window}"),
        Hold::Rollout { rollout, wave, why } => format!("{prefix}{what} — {}", held_summary(rollout, wave, why)),
    }
}

/// Loads, plans and decides every cluster at `head` that the change since the last evaluation
/// can reach (all of them, the first time). Blocking (git2, rendering). A panic while loading is
/// the caller's to catch (the whole revision is at fault); a panic while planning or rendering
/// one cluster fails that cluster only.
pub fn evaluate(
    shared: &Shared,
    source: &GitSource,
    head: &str,
    running: &Running,
    cancel: &Arc<AtomicBool>,
) -> Result<Vec<Outcome>, EvaluateError> {
    // Snapshots decrypt with the keys they were taken with: other keys, nothing is kept.
    let keys = source.keys().public_keys();
    let memo = shared.memo.lock().unwrap_or_else(|p| p.into_inner()).take().filter(|m| m.keys == keys);
    let whole = memo.is_none();
    let result = evaluate_at(shared, source, head, running, cancel, memo.as_ref());
    // Freed memory is given back after evaluations that had much to free: trimming walks the
    // whole heap, tens of milliseconds at 10,000 clusters, more than a small change costs.
    let much = whole || result.as_ref().map_or(true, |(outcomes, _)| outcomes.len() >= TRIM_AFTER);
    // The next evaluation starts from this one; one that did not end starts from the last that did.
    let (outcomes, memo) = match result {
        Ok((outcomes, next)) => {
            let Next { head: loaded, quiet: still, dropped, active, states_mark } = next;
            let (memo_loaded, kept) = match memo {
                Some(m) => (Some(m.loaded), Some((m.quiet, m.registered))),
                None => (None, None),
            };
            let loaded = loaded.or(memo_loaded).expect("a head not loaded is the memo's");
            // The memo's quiet clusters but those not left quiet, and those found quiet now: a
            // change to a few clusters touches a few entries, not the fleet's.
            let (mut quiet, mut registered) = match (kept, dropped) {
                (Some((mut quiet, mut registered)), Some(dropped)) => {
                    for name in &dropped {
                        quiet.remove(name);
                        registered.remove(name);
                    }
                    (quiet, registered)
                }
                _ => (HashMap::new(), BTreeSet::new()),
            };
            registered.extend(still.iter().filter(|(_, rest)| rest.target.is_some()).map(|(name, _)| name.clone()));
            quiet.extend(still);
            let memo = Memo {
                head: head.to_string(),
                keys,
                loaded,
                quiet,
                active,
                registered,
                states_mark,
                running: running.generation,
            };
            (Ok(outcomes), Some(memo))
        }
        Err(e) => (Err(e), memo),
    };
    *shared.memo.lock().unwrap_or_else(|p| p.into_inner()) = memo;
    if much {
        super::memory::give_back();
    }
    outcomes
}

/// Evaluations that decide at least this many clusters give freed memory back.
const TRIM_AFTER: usize = 256;

/// Debug builds (the tests) decide the clusters an evaluation skips as quiet all the same, and
/// stop the evaluation if one of them turns out to have something to do: every test that commits
/// checks the skipping against deciding everything.
const CHECK_QUIET: bool = cfg!(debug_assertions);

/// What an evaluation leaves the next: the head it loaded, and the clusters it had nothing to do
/// for, with what that rested on. The next one loads its head from this one's (parsing again only
/// the files the commit changed) and decides again only the clusters the commit can reach (their
/// file, or what their profile version reads, changed), those it had something to do for (a job,
/// a held update, a problem, a rollout), and those whose state, target or worker moved since. At
/// 10,000 clusters that is what makes a commit to one cluster cost one cluster; at 100,000, when
/// what moved is known without comparing every cluster ([`reach`]), the quiet ones are not even
/// looked at.
pub struct Memo {
    head: String,
    /// The public keys of the identities its snapshot decrypts with.
    keys: Vec<String>,
    /// The head's snapshot and model (shared with the [`Deferred`] that renders sets again).
    loaded: Arc<(Snapshot, Model)>,
    quiet: HashMap<String, Rest>,
    /// The head's clusters that are not quiet: decided again whatever the next change reaches.
    active: BTreeSet<String>,
    /// The quiet clusters whose target is not the host config's (a Secret registers it, and can
    /// change it without a commit): looked at again by every evaluation.
    registered: BTreeSet<String>,
    /// The store's mark of the states it decided from (`None`: the store keeps no account of its
    /// writes), and the generation of the workers it saw.
    states_mark: Option<u64>,
    running: u64,
}

/// The clusters with a worker, as the main loop hands them to an evaluation: shared rather than
/// copied (a fleet's names), with a generation bumped whenever a worker starts or stops.
#[derive(Clone, Debug, Default)]
pub struct Running {
    pub names: Arc<HashSet<Arc<str>>>,
    pub generation: u64,
}

impl Running {
    pub fn contains(&self, name: &str) -> bool {
        self.names.contains(name)
    }
}

impl fmt::Debug for Memo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Memo").field("head", &self.head).field("quiet", &self.quiet.len()).finish_non_exhaustive()
    }
}

/// What a quiet cluster's decision rested on besides the repository. While all of it holds, the
/// cluster's worker runs, and the commit reaches neither its file nor what its profile version
/// reads, deciding it again decides the same: nothing to do.
#[derive(Debug)]
struct Rest {
    profile_revision: Option<String>,
    cluster_revision: Option<String>,
    digest: Option<String>,
    removed: bool,
    suspended: bool,
    /// The target it was decided for: `None` when the host config names it, which stays as it
    /// is for as long as the process runs (a target registered by a Secret can change).
    target: Option<TargetConfig>,
}

impl Rest {
    /// Whether it is what `state` says now (the target is compared apart).
    fn holds(&self, state: Option<&store::ClusterState>) -> bool {
        let field = |f: fn(&store::ClusterState) -> &Option<String>| state.and_then(|s| f(s).as_deref());
        self.profile_revision.as_deref() == field(|s| &s.profile_revision)
            && self.cluster_revision.as_deref() == field(|s| &s.cluster_revision)
            && self.digest.as_deref() == field(|s| &s.digest)
            && self.removed == state.is_some_and(|s| s.sync == super::state::Sync::Removed)
            && self.suspended == state.is_some_and(|s| s.suspended)
    }

    fn of(state: Option<&store::ClusterState>, target: Option<TargetConfig>) -> Rest {
        Rest {
            profile_revision: state.and_then(|s| s.profile_revision.clone()),
            cluster_revision: state.and_then(|s| s.cluster_revision.clone()),
            digest: state.and_then(|s| s.digest.clone()),
            removed: state.is_some_and(|s| s.sync == super::state::Sync::Removed),
            suspended: state.is_some_and(|s| s.suspended),
            target,
        }
    }
}

/// What [`evaluate_at`] hands on to the next [`Memo`]: the head's snapshot and model when it
/// loaded them (`None`: the memo's head is this head), and the clusters quiet at it.
struct Next {
    head: Option<Arc<(Snapshot, Model)>>,
    /// Those it decided to be quiet.
    quiet: HashMap<String, Rest>,
    /// Those of the memo not left quiet (`None`: none was, the memo was not used); the rests of
    /// the others are carried over as they are.
    dropped: Option<Vec<String>>,
    /// The head's clusters neither quiet before nor found quiet now.
    active: BTreeSet<String>,
    states_mark: Option<u64>,
}

/// The memo's quiet clusters but those an evaluation found no longer quiet: asked by name
/// rather than copied (a fleet's names) for each evaluation.
struct Quiet<'m> {
    memo: Option<&'m HashMap<String, Rest>>,
    /// Names of `memo`'s, each once.
    dropped: HashSet<String>,
}

impl Quiet<'_> {
    fn contains(&self, name: &str) -> bool {
        self.memo.is_some_and(|quiet| quiet.contains_key(name)) && !self.dropped.contains(name)
    }

    fn len(&self) -> usize {
        self.memo.map_or(0, HashMap::len) - self.dropped.len()
    }
}

/// A map by name walked in order, for names asked in order: each step compares a name or two
/// instead of searching the map.
struct Walk<'a, V> {
    entries: std::iter::Peekable<std::collections::btree_map::Iter<'a, String, V>>,
}

impl<'a, V> Walk<'a, V> {
    fn new(map: &'a BTreeMap<String, V>) -> Walk<'a, V> {
        Walk { entries: map.iter().peekable() }
    }

    /// The value of `name`, a name not before the last one asked.
    fn at(&mut self, name: &str) -> Option<&'a V> {
        while self.entries.next_if(|(key, _)| key.as_str() < name).is_some() {}
        self.entries.next_if(|(key, _)| key.as_str() == name).map(|(_, value)| value)
    }
}

/// The clusters a change from the memo's head can have moved, when that is known without
/// looking at every cluster: those whose file the commit touched, whose state was written since
/// (the store's account), whose target a Secret registers, that a rollout governs. `None` when
/// every quiet cluster is to be looked at again: a profile or the rollouts changed, a worker
/// started or stopped, Leases share the fleet between replicas, a changed cluster file is not
/// named as its cluster, or the store keeps no account of its writes.
fn reach(
    shared: &Shared,
    memo: &Memo,
    since: &Changes,
    (head_snapshot, head_model): (&Snapshot, &Model),
    running: &Running,
    states_mark: Option<u64>,
    settled: &HashMap<&str, bool>,
) -> Option<BTreeSet<String>> {
    let (memo_snapshot, memo_model) = &*memo.loaded;
    if shared.shards.sharded()
        || memo.running != running.generation
        || memo_model.profiles.len() != head_model.profiles.len()
        || settled.values().any(|same| !same)
        || memo_model.rollouts != head_model.rollouts
        || !(memo_model.flat_clusters && head_model.flat_clusters)
    {
        return None;
    }
    let mut reached: BTreeSet<String> = memo.registered.clone();
    reached.extend(shared.store.written_since(memo.states_mark?)?);
    states_mark?;
    // Those a rollout governs are decided again by every evaluation (the gate moves them).
    if !head_model.rollouts.is_empty() {
        let governed =
            head_model.clusters.iter().filter(|(_, c)| head_model.rollouts.values().any(|r| r.governs(&c.profile)));
        reached.extend(governed.map(|(name, _)| name.clone()));
    }
    let prefix = format!("{}/", crate::repo::CLUSTERS_DIR);
    for path in since.paths() {
        let Some(file) = path.strip_prefix(&prefix) else {
            if path == crate::repo::CLUSTERS_DIR {
                return None;
            }
            continue;
        };
        let Some(stem) = file.strip_suffix(".yaml").or_else(|| file.strip_suffix(".yml")) else { continue };
        // On each side where the file is, its cluster bears its name (as fleets name them);
        // otherwise which cluster it was is found only by looking at them all.
        for (snapshot, model) in [(memo_snapshot, memo_model), (head_snapshot, head_model)] {
            let there = snapshot.tree.kind(path).is_some();
            if stem.contains('/') || there != model.clusters.get(stem).is_some_and(|c| c.file == path) {
                return None;
            }
        }
        reached.insert(stem.to_string());
    }
    Some(reached)
}

/// The clusters of `memo` no longer quiet at the head (reached by the change from the memo's
/// head, `since`; something under them moved; governed by a rollout; not owned; without a
/// worker), and those the change can have moved when that is known ([`reach`]): then only they
/// are looked at, else every quiet cluster is.
fn still_quiet(
    shared: &Shared,
    memo: &Memo,
    since: &Changes,
    (head_snapshot, head_model): (&Snapshot, &Model),
    (states, states_mark): (&BTreeMap<String, store::ClusterState>, Option<u64>),
    running: &Running,
) -> (Vec<String>, Option<BTreeSet<String>>, usize) {
    let (memo_snapshot, memo_model) = &*memo.loaded;
    let edits = Edits::new(Some(since), memo_snapshot.tree.as_ref(), head_snapshot.tree.as_ref());
    // A profile whose versions are the same on both sides, none of them edited, resolves every
    // cluster alike on both sides: its clusters need no resolving (a fleet has a few profiles).
    let settled: HashMap<&str, bool> = head_model
        .profiles
        .iter()
        .map(|(name, versions)| {
            let same = memo_model.profiles.get(name).is_some_and(|before| {
                before.len() == versions.len()
                    && before.iter().zip(versions).all(|(b, h)| b.version == h.version && !edits.edited(b, h))
            });
            (name.as_str(), same)
        })
        .collect();
    let still = |name: &str, cluster: &Cluster, was: Option<&Arc<Cluster>>, state, rest: &Rest| {
        if !running.contains(name)
            || !shared.shards.owns(name)
            || head_model.rollouts.values().any(|r| r.governs(&cluster.profile))
            || !was.is_some_and(|c| std::ptr::eq(&**c, cluster) || **c == *cluster)
        {
            return false;
        }
        if !settled.get(cluster.profile.as_str()).copied().unwrap_or(false) {
            let (Ok(before), Ok(now)) = (memo_model.resolve(cluster), head_model.resolve(cluster)) else {
                return false;
            };
            if before.profile.version != now.profile.version
                || before.update_available != now.update_available
                || edits.edited(before.profile, now.profile)
            {
                return false;
            }
        }
        rest.holds(state) && rest.target.as_ref().is_none_or(|target| shared.target_is(name, &cluster.target, target))
    };
    // Every quiet cluster, the maps by name walked side by side rather than searched each time.
    let walk = || {
        let mut dropped = Vec::new();
        let (mut memo_clusters, mut states_now) = (Walk::new(&memo_model.clusters), Walk::new(states));
        let mut seen = 0;
        for (name, cluster) in &head_model.clusters {
            let Some(rest) = memo.quiet.get(name) else { continue };
            seen += 1;
            if !still(name, cluster, memo_clusters.at(name), states_now.at(name), rest) {
                dropped.push(name.clone());
            }
        }
        // Quiet clusters whose file left the repository.
        if seen < memo.quiet.len() {
            dropped.extend(memo.quiet.keys().filter(|name| !head_model.clusters.contains_key(*name)).cloned());
        }
        dropped
    };
    let reached = reach(shared, memo, since, (head_snapshot, head_model), running, states_mark, &settled);
    let Some(reached) = reached else { return (walk(), None, memo.quiet.len()) };
    let (mut dropped, mut looked) = (Vec::new(), 0);
    for name in &reached {
        let Some(rest) = memo.quiet.get(name) else { continue };
        looked += 1;
        let left = match head_model.clusters.get(name) {
            Some(cluster) => !still(name, cluster, memo_model.clusters.get(name), states.get(name), rest),
            None => true,
        };
        if left {
            dropped.push(name.clone());
        }
    }
    if CHECK_QUIET {
        // Checking: looking at every quiet cluster finds the same.
        let mut all = walk();
        all.sort_unstable();
        assert_eq!(
            dropped, all,
            "the clusters a change reached, found from it, differ from those found by looking at all"
        );
    }
    (dropped, Some(reached), looked)
}

fn evaluate_at(
    shared: &Shared,
    source: &GitSource,
    head: &str,
    running: &Running,
    cancel: &Arc<AtomicBool>,
    memo: Option<&Memo>,
) -> Result<(Vec<Outcome>, Next), EvaluateError> {
    let cancelled = || EvaluateError::Cancelled { revision: head.to_string() };
    let stop = || cancel.load(std::sync::atomic::Ordering::Relaxed);
    // Kept in memory by the store between evaluations, not read row by row each time; the mark
    // tells the next evaluation which were written since.
    let (all_states, states_mark) = store::wait(shared.store.states_marked())?;
    // And what clusters a rollout returns return to.
    let progress: BTreeMap<String, Progress> =
        store::wait(shared.store.rollouts())?.into_iter().map(|p| (p.rollout.clone(), p)).collect();

    // The head first: from the last evaluation's when there is one (the same head: as it is;
    // another: parsing again only the files the commit changed).
    shared.progress();
    let memo_head = memo.filter(|m| m.head == head);
    // What each revision loaded differs from the head in: what is loaded again, and what is rendered.
    let mut changes: HashMap<String, Changes> = HashMap::new();
    let head_owned: Option<Arc<(Snapshot, Model)>> = match memo_head {
        Some(_) => None,
        None => {
            let snapshot =
                source.snapshot(head).map_err(|source| EvaluateError::Source { revision: head.to_string(), source })?;
            let since = memo.and_then(|m| source.changes(&m.loaded.0, &snapshot).ok().map(|diff| (m, diff)));
            let model = match &since {
                Some((memo, diff)) => crate::repo::load_reusing(snapshot.tree.as_ref(), &memo.loaded.1, diff),
                None => crate::repo::load(snapshot.tree.as_ref()),
            }
            .map_err(|diagnostics| EvaluateError::Invalid { revision: head.to_string(), diagnostics })?;
            if let Some((memo, diff)) = since {
                changes.insert(memo.head.clone(), diff);
            }
            Some(Arc::new((snapshot, model)))
        }
    };
    let head_arc: &Arc<(Snapshot, Model)> = match (memo_head, &head_owned) {
        (Some(memo), _) => &memo.loaded,
        (None, Some(loaded)) => loaded,
        (None, None) => unreachable!("loaded above"),
    };
    let head_loaded: &(Snapshot, Model) = head_arc;
    let (head_snapshot, head_model) = head_loaded;
    // A SOPS file the profiles read that does not decrypt rejects the revision, as a file that
    // does not load does: no cluster renders half of its layers.
    crate::render::reads::decrypts(head_snapshot.tree.as_ref(), head_model)
        .map_err(|diagnostics| EvaluateError::Invalid { revision: head.to_string(), diagnostics })?;

    // The clusters nothing reached since the last evaluation: not decided again.
    let unchanged = Changes::default();
    let since = match memo {
        Some(m) if m.head == head => Some(&unchanged),
        Some(m) => changes.get(&m.head),
        None => None,
    };
    let (quiet, reached, looked) = match memo.zip(since) {
        Some((memo, since)) => {
            let (dropped, reached, looked) =
                still_quiet(shared, memo, since, (head_snapshot, head_model), (&all_states, states_mark), running);
            (Quiet { memo: Some(&memo.quiet), dropped: dropped.into_iter().collect() }, reached, looked)
        }
        None => (Quiet { memo: None, dropped: HashSet::new() }, None, 0),
    };
    // The head's clusters that are not quiet, in order: those decided. When what the change
    // reached is known, they are the memo's active ones, those it left and those it reached.
    let name_of = |name: &str| head_model.clusters.get_key_value(name).map(|(name, _)| name.as_str());
    let candidates: Vec<&str> = match (&reached, memo) {
        (Some(reached), Some(memo)) => {
            let names: BTreeSet<&str> =
                memo.active.iter().chain(&quiet.dropped).chain(reached).filter_map(|n| name_of(n)).collect();
            names.into_iter().filter(|name| !quiet.contains(name)).collect()
        }
        _ => head_model.clusters.keys().map(String::as_str).filter(|name| !quiet.contains(name)).collect(),
    };
    // Checking decides the quiet ones too.
    let visit: Vec<&str> =
        if CHECK_QUIET { head_model.clusters.keys().map(String::as_str).collect() } else { candidates.clone() };
    // Only the states of those decided, when the others are not looked at: the store's map is
    // let go, so a write while this evaluation runs does not copy the fleet's states.
    let states: Arc<store::States> = match &reached {
        Some(_) if !CHECK_QUIET => Arc::new(
            visit
                .iter()
                .filter_map(|name| all_states.get_key_value(*name))
                .map(|(n, s)| (n.clone(), s.clone()))
                .collect(),
        ),
        _ => all_states.clone(),
    };
    drop(all_states);

    // Every other revision a cluster decided again runs, and those a rollout returns clusters to.
    let befores = progress.values().flat_map(|p| p.clusters.values()).filter_map(|c| c.before.as_ref());
    let mut revisions: Vec<&str> = Vec::new();
    let runs = visit
        .iter()
        .filter_map(|name| states.get(*name))
        .flat_map(|s| [&s.profile_revision, &s.cluster_revision].into_iter().flatten());
    for rev in runs.chain(befores.flat_map(|b| [&b.profile_revision, &b.cluster_revision])) {
        if rev != head && !revisions.contains(&rev.as_str()) {
            revisions.push(rev);
        }
    }
    // The last evaluation's head serves as it is, when its change to this head is known.
    let memo_base =
        memo.filter(|m| m.head != head && changes.contains_key(&m.head) && revisions.contains(&m.head.as_str()));
    let mut others: HashMap<String, (Snapshot, Model)> = HashMap::new();
    for rev in revisions {
        shared.progress();
        if stop() {
            return Err(cancelled());
        }
        if memo_base.is_some_and(|m| m.head == rev) {
            continue;
        }
        let snapshot = match source.snapshot(rev) {
            Ok(s) => s,
            Err(e) => {
                warn!(revision = %rev, error = %e, "A revision a cluster runs is gone from the repository.");
                continue;
            }
        };
        // They reuse what of the head they share.
        let model = match source.changes(&snapshot, head_snapshot) {
            Ok(diff) => {
                let model = crate::repo::load_reusing(snapshot.tree.as_ref(), head_model, &diff);
                changes.insert(rev.to_string(), diff);
                model
            }
            Err(_) => crate::repo::load(snapshot.tree.as_ref()),
        };
        if let Ok(model) = model {
            others.insert(rev.to_string(), (snapshot, model));
        }
    }
    let mut loaded: HashMap<&str, &(Snapshot, Model)> = others.iter().map(|(r, l)| (r.as_str(), l)).collect();
    loaded.insert(head, head_loaded);
    if let Some(memo) = memo_base {
        loaded.insert(memo.head.as_str(), &*memo.loaded);
    }
    let tools = SystemTools::default();
    // Renders stop the moment a newer revision supersedes this one.
    let settings = shared.render.cancelled_by(cancel.clone());
    let renderers: HashMap<&str, Renderer> = loaded
        .iter()
        .map(|(rev, (snap, model))| (*rev, Renderer::new(snap.tree.as_ref(), model, &tools).with_settings(&settings)))
        .collect();
    let edits: HashMap<&str, Edits> = loaded
        .iter()
        .map(|(rev, (snapshot, _))| {
            let diff = if *rev == head { Some(&unchanged) } else { changes.get(*rev) };
            (*rev, Edits::new(diff, snapshot.tree.as_ref(), head_snapshot.tree.as_ref()))
        })
        .collect();
    for name in head_model.clusters.keys() {
        guard::inject("revision", name);
    }
    let context = Context {
        shared,
        head,
        running,
        states: &states,
        loaded: &loaded,
        renderers: &renderers,
        edits: &edits,
        now: store::now(),
    };
    let mut outcomes = Vec::new();
    let mut planned: BTreeMap<&str, Planned> = BTreeMap::new();
    // Another replica's clusters are its own to decide. Those a rollout governs are planned by
    // every replica all the same, so each gates the rollout alike, from the same shared progress.
    let in_rollout = |cluster: &Cluster| head_model.rollouts.values().any(|r| r.governs(&cluster.profile));
    for &name in &visit {
        let cluster = &head_model.clusters[name];
        let owned = shared.shards.owns(name);
        if !owned && !in_rollout(cluster) {
            continue;
        }
        shared.progress();
        if stop() {
            return Err(cancelled());
        }
        match guard::catch(|| context.plan(name, cluster)) {
            Ok(Ok(Ok(p))) => {
                planned.insert(name, p);
            }
            Ok(Ok(Err(outcome))) if owned => {
                assert!(!quiet.contains(name), "evaluation skipped cluster {name} as quiet, but it fails");
                outcomes.push(outcome)
            }
            Ok(Ok(Err(_))) => {}
            Ok(Err(e)) => return Err(e.into()),
            Err(panic) if owned => outcomes.push(context.crashed(name, panic)),
            Err(_) => {}
        }
    }
    let views = planned
        .iter()
        .map(|(name, p)| (*name, rollouts::Planned { plan: p.plan.as_ref(), pin_moved: p.pin_moved }))
        .collect();
    let gates = rollouts::gate_all(shared, head, head_model, &views, &states, progress)?;
    // The approval rules in force for each cluster: those of the revision it runs (a commit that
    // changes them is governed by the rules before it), as they select it now.
    // No author of the change counts as an approver: whoever wrote a commit between the revision
    // the cluster runs and the head (read once per revision clusters run).
    let mut authors_since: BTreeMap<&str, Vec<crate::approval::Author>> = BTreeMap::new();
    let mut in_force: BTreeMap<String, super::RulesInForce> = BTreeMap::new();
    for &name in &visit {
        let cluster = &head_model.clusters[name];
        let runs = states.get(name).and_then(|s| s.profile_revision.as_deref());
        let base = runs.and_then(|r| loaded.get(r).copied());
        let (Some(runs), Some((_, base_model))) = (runs, base) else { continue };
        let authors = authors_since
            .entry(runs)
            .or_insert_with(|| {
                source
                    .authors_between(Some(runs), head, MAX_AUTHOR_COMMITS)
                    .into_iter()
                    .map(|(name, email)| crate::approval::Author { name, email })
                    .collect()
            })
            .clone();
        let target = crate::approval::Target {
            profile: &cluster.profile,
            tags: &cluster.tags,
            wave: gates.get(name).and_then(|g| g.wave.as_deref()),
        };
        let rules = crate::approval::applying(&base_model.approval_rules, &target).into_iter().cloned().collect();
        in_force.insert(name.to_string(), super::RulesInForce { revision: head.to_string(), rules, authors });
    }
    // Quiet from now on: what is decided here to have nothing to do, with what that rests on.
    let mut still: HashMap<String, Rest> = HashMap::new();
    let mut renders = Vec::new();
    for (name, p) in planned.into_iter().filter(|(name, _)| shared.shards.owns(name)) {
        shared.progress();
        if stop() {
            return Err(cancelled());
        }
        let configured = shared.config.targets.contains_key(&head_model.clusters[name].target);
        let rest = Rest::of(states.get(name), (!configured).then(|| p.target.clone()));
        let gate = gates.get(name);
        match guard::catch(|| context.decide(name, &head_model.clusters[name], p, gate, in_force.get(name))) {
            Ok(decided) => {
                let (outcome, render) = decided?;
                let idle = outcome.job.is_none() && outcome.pending.is_none() && outcome.problem.is_none();
                let idle = idle && render.is_none() && !outcome.untargeted && gate.is_none();
                if quiet.contains(name) {
                    // Checking: what was skipped decides the same when decided again.
                    assert!(
                        idle,
                        "evaluation skipped cluster {name} as quiet since {}, but it has something to do at {head}",
                        memo.map_or("", |m| m.head.as_str()),
                    );
                    continue;
                }
                if idle {
                    still.insert(name.to_string(), rest);
                }
                if let Some(render) = render {
                    renders.push((outcomes.len(), render));
                }
                outcomes.push(outcome);
            }
            Err(panic) => outcomes.push(context.crashed(name, panic)),
        }
    }

    // What the workers are to run, rendered on every core; only the packed sets are kept.
    // A held update's diff that starts from the set rendered here: (diff, that set's digest).
    type HeldDiff = Option<(String, String)>;
    type Rendered = Result<(Job, HeldDiff), ClusterProblem>;
    let redactor = &settings.redactor;
    let rendered: Vec<(usize, Rendered)> = renders
        .into_par_iter()
        .map(|(i, r)| {
            if stop() {
                return (i, Err(ClusterProblem::Cancelled));
            }
            let render = || -> Result<(PackedSet, HeldDiff), Diagnostics> {
                let set = r.renderer.render(r.cluster)?;
                let held = match r.diff_to {
                    Some((head_renderer, head_cluster)) => {
                        let head = head_renderer.render(head_cluster)?;
                        let changes = plan::diff_sets(&set, &head, redactor);
                        let diff: String = changes.iter().map(|o| o.diff.as_str()).collect();
                        Some((diff, set.digest.clone()))
                    }
                    None => None,
                };
                Ok((set.pack(), held))
            };
            let job = match guard::catch(render) {
                Ok(Ok((set, held))) => Ok((
                    Job {
                        set,
                        profile_revision: r.profile_revision,
                        cluster_revision: r.cluster_revision,
                        target: r.target,
                        drift: r.drift,
                        rollout: r.rollout,
                    },
                    held,
                )),
                Ok(Err(d)) => Err(ClusterProblem::Invalid(d)),
                Err(panic) => {
                    shared.metrics.panicked("render");
                    Err(ClusterProblem::Crashed(panic))
                }
            };
            (i, job)
        })
        .collect();
    if stop() {
        return Err(cancelled());
    }
    for (i, job) in rendered {
        match job {
            Ok((job, held)) => {
                if let (Some((diff, digest)), Some(pending)) = (held, outcomes[i].pending.as_mut()) {
                    (pending.diff, pending.base_digest) = (diff, Some(digest));
                }
                outcomes[i].job = Some(job);
            }
            Err(problem) => outcomes[i].problem = Some(problem),
        }
    }
    // What the view and the rollouts' gate read of the head, once nothing can stop this
    // evaluation: the next one starts from the memo this one leaves, and they must agree.
    match &reached {
        // Only the clusters the change reached can have other tags or rules.
        Some(reached) => {
            let mut tags = shared.tags.lock().unwrap_or_else(|p| p.into_inner());
            for name in reached {
                match head_model.clusters.get(name) {
                    Some(cluster) if tags.get(name) != Some(&cluster.tags) => {
                        tags.insert(name.clone(), cluster.tags.clone());
                    }
                    Some(_) => {}
                    None => {
                        tags.remove(name);
                    }
                }
            }
            if CHECK_QUIET {
                let all = head_model.clusters.iter().map(|(name, c)| (name.clone(), c.tags.clone())).collect();
                assert!(*tags == all, "the tags updated for the clusters a change reached differ from the head's");
            }
        }
        None => {
            // Updated in place: a commit changes the tags of a few clusters, if any.
            let mut tags = shared.tags.lock().unwrap_or_else(|p| p.into_inner());
            let mut new = Vec::new();
            let mut held = tags.iter_mut().peekable();
            for (name, cluster) in &head_model.clusters {
                while held.next_if(|(key, _)| *key < name).is_some() {}
                match held.next_if(|(key, _)| *key == name) {
                    Some((_, tags)) if *tags != cluster.tags => tags.clone_from(&cluster.tags),
                    Some(_) => {}
                    None => new.push((name.clone(), cluster.tags.clone())),
                }
            }
            tags.extend(new);
            if tags.len() != head_model.clusters.len() {
                tags.retain(|name, _| head_model.clusters.contains_key(name));
            }
        }
    }
    {
        // Those of the quiet clusters stay as the evaluation that decided them placed them.
        let mut rules = shared.approval_rules.lock().unwrap_or_else(|p| p.into_inner());
        match &reached {
            Some(reached) => {
                let left = reached.iter().filter(|name| !head_model.clusters.contains_key(*name));
                for name in candidates.iter().copied().chain(left.map(String::as_str)) {
                    rules.remove(name);
                }
            }
            None => rules.retain(|name, _| quiet.contains(name)),
        }
        rules.extend(in_force);
    }
    shared.evaluation(head, |record| {
        (record.decided, record.unchanged, record.looked_at) = (Some(outcomes.len()), Some(quiet.len()), Some(looked))
    });
    info!(
        revision = %head,
        decided = outcomes.len(),
        unchanged = quiet.len(),
        looked_at = looked,
        "Evaluated: clusters the change (or their state) reached decided again, the others left as they run."
    );
    // Sets asked for again from now on are rendered from this head first.
    let deferred = Deferred::new(source.clone(), shared.render.clone(), Some(head_arc.clone()));
    *shared.deferred.lock().unwrap_or_else(|p| p.into_inner()) = Some(Arc::new(deferred));

    let active = candidates.iter().filter(|name| !still.contains_key(**name)).map(|name| name.to_string()).collect();
    let dropped = quiet.memo.is_some().then(|| quiet.dropped.into_iter().collect());
    Ok((outcomes, Next { head: head_owned, quiet: still, dropped, active, states_mark }))
}

/// One cluster planned: what comes before the rollouts' gate.
struct Planned {
    /// From what it runs to the head; `None` when it runs nothing (that can still be read).
    plan: Option<ClusterPlan>,
    /// Whether it was ever applied, by this daemon's state.
    applied: bool,
    target: TargetConfig,
    /// Whether its file's `spec.profile` moved since what it runs.
    pin_moved: bool,
}

/// A revision as loaded: its id, its snapshot and its model.
type Revision<'a> = (&'a str, &'a (Snapshot, Model));

/// A desired set an evaluation renders for a worker, once every cluster is decided.
struct ToRender<'r> {
    renderer: &'r Renderer<'r>,
    cluster: &'r Cluster,
    profile_revision: Option<String>,
    cluster_revision: Option<String>,
    /// For a held update whose diff starts from this very set: the head's renderer and cluster
    /// file, to diff against once the set is rendered.
    diff_to: Option<(&'r Renderer<'r>, &'r Cluster)>,
    target: TargetConfig,
    drift: DriftPolicy,
    /// The rollout that released it (or returns the cluster), to hear how it went.
    rollout: Option<String>,
}

/// What deciding one cluster reads: the revisions loaded, what each cluster runs, and what each
/// revision's change from the head edited.
struct Context<'a> {
    shared: &'a Shared,
    head: &'a str,
    running: &'a Running,
    states: &'a BTreeMap<String, store::ClusterState>,
    loaded: &'a HashMap<&'a str, &'a (Snapshot, Model)>,
    renderers: &'a HashMap<&'a str, Renderer<'a>>,
    edits: &'a HashMap<&'a str, Edits<'a>>,
    now: i64,
}

impl<'a> Context<'a> {
    /// The cluster's planning panicked: it fails alone.
    fn crashed(&self, name: &str, panic: Panic) -> Outcome {
        self.shared.metrics.panicked("render");
        Outcome::failed(name, self.head, ClusterProblem::Crashed(panic))
    }

    /// What the cluster runs and its file at that revision, when both can still be read.
    fn base(&self, name: &str) -> (Option<Revision<'a>>, Option<&'a Cluster>) {
        let loaded = self.loaded;
        let state = self.states.get(name);
        let base = state
            .and_then(|s| s.profile_revision.as_deref())
            .and_then(|r| loaded.get_key_value(r))
            .map(|(r, l)| (*r, *l));
        let base_cluster = state
            .and_then(|s| s.cluster_revision.as_deref())
            .and_then(|r| loaded.get(r))
            .and_then(|(_, m)| m.clusters.get(name))
            .map(|c| &**c);
        (base, base_cluster)
    }

    /// Plans the cluster from what it runs to the head; a cluster that cannot be planned is
    /// done with here (its outcome says why).
    fn plan(&self, name: &str, cluster: &'a Cluster) -> Result<Result<Planned, Outcome>, StoreError> {
        guard::inject("render", name);
        let (shared, head) = (self.shared, self.head);
        let state = self.states.get(name);
        // A cluster whose file came back after it was removed is new again, as the plan says:
        // applied (its inventory and state made anew), not kept as "removed".
        let applied = state.is_some_and(|s| s.sync != super::state::Sync::Removed && s.digest.is_some());
        let cluster_rev = state.and_then(|s| s.cluster_revision.clone());
        let (base, base_cluster) = self.base(name);
        let target = match shared.target(name, &cluster.target) {
            Ok(t) => t,
            Err(d) => {
                let outcome =
                    Outcome { untargeted: true, ..Outcome::failed(name, head, ClusterProblem::Invalid(d.into())) };
                return Ok(Err(outcome));
            }
        };
        let head_renderer = &self.renderers[head];

        // The plan from what the cluster runs to the head.
        let plan = match (applied, base, base_cluster) {
            (true, Some((base_rev, _)), Some(base_cluster))
                if base_rev != head || cluster_rev.as_deref() != Some(head) =>
            {
                let result = plan::compare(
                    (base_cluster, &self.renderers[base_rev]),
                    (cluster, head_renderer),
                    &self.edits[base_rev],
                    &shared.config.apply.redactor,
                );
                match result {
                    Ok(plan) => Some(plan),
                    Err(d) => return Ok(Err(Outcome::failed(name, head, ClusterProblem::Invalid(d)))),
                }
            }
            _ => None,
        };
        // Applied, but what it runs can no longer be read: treat the head as new to it.
        let applied = applied && (plan.is_some() || (base.is_some() && base_cluster.is_some()));
        let pin_moved = base_cluster.is_some_and(|b| b.profile != cluster.profile || b.version != cluster.version);
        Ok(Ok(Planned { plan, applied, target, pin_moved }))
    }

    /// Decides what the cluster runs, the rollouts' gate given: the outcome, and the set to
    /// render for its worker (rendered with the others' once every cluster is decided).
    fn decide(
        &self,
        name: &str,
        cluster: &'a Cluster,
        planned: Planned,
        gate: Option<&rollouts::Gate>,
        rules: Option<&super::RulesInForce>,
    ) -> Result<(Outcome, Option<ToRender<'a>>), StoreError> {
        let (shared, head) = (self.shared, self.head);
        let Planned { plan, applied, target, .. } = planned;
        let state = self.states.get(name);
        let base_rev = state.and_then(|s| s.profile_revision.clone());
        let cluster_rev = state.and_then(|s| s.cluster_revision.clone());
        let (base, base_cluster) = self.base(name);
        let head_renderer = &self.renderers[head];
        let unchanged = ClusterPlan {
            cluster: name.to_string(),
            kind: ChangeKind::Unchanged,
            reasons: Vec::new(),
            from: None,
            to: None,
            updates: cluster.updates,
            pending: false,
            window: None,
            update_available: None,
            base_digest: None,
            head_digest: None,
            objects: Vec::new(),
        };
        let plan_ref = plan.as_ref().unwrap_or(&unchanged);
        // Approved when the rules in force are met by the approvals of exactly this revision
        // (one approval by anyone who may act where no rule applies).
        let verdict = match plan_ref.reasons.contains(&ChangeKind::InPlaceEdit) {
            false => crate::approval::Verdict::Unruled { approved: false },
            true => verdict(shared, name, head, rules)?,
        };
        let approved = verdict.approved();
        let suspended = state.is_some_and(|s| s.suspended);
        let Decision { run, hold } = decide::decide(&decide::Input {
            applied,
            plan: plan_ref,
            updates: cluster.updates,
            window: cluster.window.as_ref(),
            approved,
            suspended,
            rollout: gate.and_then(rollouts::Gate::hold),
            now: self.now,
        });

        let back = match gate.map(|g| &g.verdict) {
            Some(Verdict::RollBack(before)) if !suspended => Some(before),
            _ => None,
        };
        let rollout = gate.map(|g| g.rollout.clone());
        let mut outcome = Outcome::new(name, head);
        let wanted = match (run, back) {
            // Where a rollout returns it: what it ran before the rollout, file and profile alike.
            (_, Some(before)) => {
                let at = |rev: &str| self.loaded.get(rev).map(|(_, m)| m);
                match (self.renderers.get_key_value(before.profile_revision.as_str()), at(&before.cluster_revision)) {
                    (Some((rev, renderer)), Some(model)) => model.clusters.get(name).map(|before_cluster| {
                        let cluster_rev = self.loaded.get_key_value(before.cluster_revision.as_str()).map(|(r, _)| *r);
                        (renderer, &**before_cluster, Some(*rev), cluster_rev)
                    }),
                    _ => {
                        warn!(cluster = %name, revision = %before.profile_revision, "What the cluster ran before the rollout cannot be read any more; it keeps what it runs.");
                        None
                    }
                }
            }
            (Run::Head, None) => Some((head_renderer, cluster, Some(head), Some(head))),
            (Run::HeadClusterOnAppliedProfile, None) => {
                let (rev, _) = base.expect("held updates have a base");
                Some((&self.renderers[rev], cluster, Some(rev), Some(head)))
            }
            // The worker already has it (after a restart it needs it again); the file's settings
            // reach it all the same.
            (Run::Keep, None) if self.running.contains(name) => {
                outcome.settings = Some(super::worker::Settings {
                    target: target.clone(),
                    drift: cluster.drift,
                    rollout: rollout.clone(),
                });
                None
            }
            (Run::Keep, None) => match (base, base_cluster, state.and_then(recorded)) {
                // What it runs, as the store records it: rendered when the worker needs it.
                (Some((rev, _)), Some(_), Some(identity)) => {
                    outcome.job = Some(Job {
                        set: identity,
                        profile_revision: Some(rev.to_string()),
                        cluster_revision: cluster_rev.clone(),
                        target: target.clone(),
                        drift: cluster.drift,
                        rollout: rollout.clone(),
                    });
                    None
                }
                (Some((rev, _)), Some(base_cluster), None) => {
                    Some((&self.renderers[rev], base_cluster, Some(rev), cluster_rev.as_deref()))
                }
                _ => None,
            },
        };
        // A held update's diff starts from what the cluster runs once this decision is carried
        // out: what it runs now, or — when the cluster file's change goes ahead of the held edit —
        // that new set, diffed once it is rendered.
        let ahead = run == Run::HeadClusterOnAppliedProfile && back.is_none();
        let render = wanted.map(|(renderer, which, profile_rev, cluster_rev)| ToRender {
            renderer,
            cluster: which,
            profile_revision: profile_rev.map(str::to_string),
            cluster_revision: cluster_rev.map(str::to_string),
            target,
            drift: cluster.drift,
            rollout,
            diff_to: (ahead && hold.is_some()).then_some((head_renderer, cluster)),
        });
        if let Some(hold) = hold {
            let diff: String = plan_ref.objects.iter().map(|o| o.diff.as_str()).collect::<Vec<_>>().join("");
            outcome.pending = Some(Pending {
                cluster: name.to_string(),
                base_revision: base_rev.clone().unwrap_or_default(),
                head_revision: head.to_string(),
                summary: pending_summary(plan_ref, &hold, name, verdict.still()),
                hold,
                diff,
                since: self.now,
                base_digest: if ahead { None } else { plan_ref.base_digest.clone() },
            });
        }
        Ok((outcome, render))
    }
}

/// What the store records a cluster runs, when it records all of it.
fn recorded(state: &store::ClusterState) -> Option<PackedSet> {
    match (&state.digest, &state.profile, &state.version) {
        (Some(digest), Some(profile), Some(version)) => {
            Some(PackedSet::identity(&state.name, profile, version, digest))
        }
        _ => None,
    }
}

/// Renders again, when workers ask, the sets they hold only the identity of: those the store
/// records a cluster runs (after a restart), and those a worker let go of once applied (sets of
/// manifests alone: rendering one again costs less than keeping it, see the worker).
///
/// A set is rendered from the head of the evaluation that made this `Deferred` first: most
/// clusters run what the head renders, whatever revision they were applied at, and the digest
/// proves it (it is over every object as applied). Only a set the head renders otherwise (a held
/// update, a rollout's earlier revision) is rendered at the revisions it was applied from; the
/// last few of those stay loaded, sharing the head's unchanged cluster files.
///
/// Requests that come in while a batch renders make the next batch: after a restart a thousand
/// workers ask at about the same time, and each revision is loaded once for all of them and
/// rendered on every core.
pub struct Deferred {
    source: GitSource,
    settings: crate::render::Settings,
    /// The evaluated head: its snapshot and model.
    head: Option<Arc<(Snapshot, Model)>>,
    /// Other revisions loaded, the most recently used last.
    kept: Mutex<Vec<(Revisions, Arc<Loaded>)>>,
    queue: Mutex<Queue>,
}

/// How many (profile revision, cluster revision) pairs besides the head a [`Deferred`] keeps loaded.
const KEPT_REVISIONS: usize = 4;

#[derive(Default)]
struct Queue {
    waiting: Vec<Request>,
    /// Whether a blocking task is serving the queue.
    serving: bool,
}

struct Request {
    /// The set asked for (its identity).
    wanted: PackedSet,
    profile_revision: String,
    cluster_revision: String,
    reply: oneshot::Sender<Result<PackedSet, DeferredError>>,
}

/// Why the set a cluster runs could not be rendered again. One failure to load a revision
/// answers every cluster waiting on it, hence `Clone` (the causes shared).
#[derive(Clone, Debug, thiserror::Error)]
pub enum DeferredError {
    #[error(transparent)]
    Source(Arc<crate::source::SourceError>),
    #[error("revision {revision} does not load: {first}")]
    Load { revision: String, first: String },
    #[error("cluster {cluster} is not at revision {revision}")]
    Missing { cluster: String, revision: String },
    #[error("{0}")]
    Render(Diagnostics),
    #[error("rendering crashed: {0}")]
    Crashed(String),
    #[error("rendering the set stopped")]
    Stopped,
    #[error("no revision is evaluated yet to render the set from")]
    NotEvaluated,
}

/// A revision's profile content (snapshot and model) and, when another revision's, its cluster files.
type Loaded = (Snapshot, Model, Option<Model>);

/// A set's profile revision and cluster revision.
type Revisions = (String, String);

impl fmt::Debug for Deferred {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Deferred")
            .field("source", &self.source)
            .field("head", &self.head.as_ref().and_then(|head| head.0.revision.as_deref()))
            .finish_non_exhaustive()
    }
}

impl Deferred {
    pub fn new(source: GitSource, settings: crate::render::Settings, head: Option<Arc<(Snapshot, Model)>>) -> Self {
        Deferred { source, settings, head, kept: Mutex::default(), queue: Mutex::default() }
    }

    /// The set `wanted` (an identity) of `wanted.cluster`, applied from its profile content at
    /// `profile_revision` and its cluster file at `cluster_revision`.
    pub async fn render(
        self: &Arc<Self>,
        wanted: &PackedSet,
        profile_revision: &str,
        cluster_revision: &str,
    ) -> Result<PackedSet, DeferredError> {
        let (reply, answer) = oneshot::channel();
        let start = {
            let mut queue = self.queue.lock().unwrap_or_else(|p| p.into_inner());
            queue.waiting.push(Request {
                wanted: wanted.to_identity(),
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
        answer.await.map_err(|_| DeferredError::Stopped)?
    }

    fn serve(&self) {
        let tools = SystemTools::default();
        let mut rendered = 0;
        loop {
            let batch = {
                let mut queue = self.queue.lock().unwrap_or_else(|p| p.into_inner());
                if queue.waiting.is_empty() {
                    queue.serving = false;
                    break;
                }
                std::mem::take(&mut queue.waiting)
            };
            rendered += batch.len();
            let batch = match &self.head {
                Some(head) => self.answer_from_head(head, batch, &tools),
                None => batch,
            };
            let mut by_revisions: HashMap<Revisions, Vec<Request>> = HashMap::new();
            for request in batch {
                let key = (request.profile_revision.clone(), request.cluster_revision.clone());
                by_revisions.entry(key).or_default().push(request);
            }
            for (key, requests) in by_revisions {
                let loaded = match self.loaded(&key) {
                    Ok(loaded) => loaded,
                    Err(e) => {
                        for request in requests {
                            let _ = request.reply.send(Err(e.clone()));
                        }
                        continue;
                    }
                };
                let (snapshot, model, cluster_model) = &*loaded;
                let renderer = Renderer::new(snapshot.tree.as_ref(), model, &tools).with_settings(&self.settings);
                let clusters = cluster_model.as_ref().unwrap_or(model);
                requests.into_par_iter().for_each(|request| {
                    let cluster = &request.wanted.cluster;
                    let render = || match clusters.clusters.get(cluster) {
                        Some(cluster) => renderer.render(cluster).map(|set| set.pack()).map_err(DeferredError::Render),
                        None => Err(DeferredError::Missing { cluster: cluster.clone(), revision: key.1.clone() }),
                    };
                    let set = guard::catch(render).unwrap_or_else(|p| Err(DeferredError::Crashed(p.to_string())));
                    let _ = request.reply.send(set);
                });
            }
        }
        // A restart's worth of sets freed: give it back (one drift check's set is not worth the walk).
        if rendered >= TRIM_AFTER {
            super::memory::give_back();
        }
    }

    /// Answers the requests the head renders the very set of; returns the others.
    fn answer_from_head(&self, head: &(Snapshot, Model), batch: Vec<Request>, tools: &SystemTools) -> Vec<Request> {
        let (snapshot, model) = head;
        let renderer = Renderer::new(snapshot.tree.as_ref(), model, tools).with_settings(&self.settings);
        batch
            .into_par_iter()
            .filter_map(|request| {
                let Some(cluster) = model.clusters.get(&request.wanted.cluster) else { return Some(request) };
                match guard::catch(|| renderer.render(cluster).map(|set| set.pack())) {
                    Ok(Ok(set)) if set.is(&request.wanted) => {
                        let _ = request.reply.send(Ok(set));
                        None
                    }
                    _ => Some(request),
                }
            })
            .collect()
    }

    /// A pair of revisions loaded, from those kept or now.
    fn loaded(&self, key: &Revisions) -> Result<Arc<Loaded>, DeferredError> {
        {
            let mut kept = self.kept.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(i) = kept.iter().position(|(k, _)| k == key) {
                let entry = kept.remove(i);
                let loaded = entry.1.clone();
                kept.push(entry);
                return Ok(loaded);
            }
        }
        let loaded = guard::catch(|| self.load(&key.0, &key.1))
            .unwrap_or_else(|p| Err(DeferredError::Crashed(p.to_string())))
            .map(Arc::new)?;
        let mut kept = self.kept.lock().unwrap_or_else(|p| p.into_inner());
        if kept.len() >= KEPT_REVISIONS {
            kept.remove(0);
        }
        kept.push((key.clone(), loaded.clone()));
        Ok(loaded)
    }

    fn load(&self, profile_revision: &str, cluster_revision: &str) -> Result<Loaded, DeferredError> {
        let load = |revision: &str| -> Result<(Snapshot, Model), DeferredError> {
            let snapshot = self.source.snapshot(revision).map_err(|e| DeferredError::Source(Arc::new(e)))?;
            // Parsing again only the files that differ from the head's.
            let reused = self.head.as_ref().and_then(|head| {
                let diff = self.source.changes(&snapshot, &head.0).ok()?;
                Some(crate::repo::load_reusing(snapshot.tree.as_ref(), &head.1, &diff))
            });
            let model = reused
                .unwrap_or_else(|| crate::repo::load(snapshot.tree.as_ref()))
                .map_err(|d| DeferredError::Load { revision: revision.to_string(), first: first_problem(&d) })?;
            Ok((snapshot, model))
        };
        let (snapshot, model) = load(profile_revision)?;
        let clusters = if cluster_revision == profile_revision { None } else { Some(load(cluster_revision)?.1) };
        Ok((snapshot, model, clusters))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::diag::Code;

    /// Walking a map by names asked in order finds what searching it finds, names it lacks
    /// included (before, between and after its own).
    #[test]
    fn a_walk_finds_what_a_search_finds() {
        let map: BTreeMap<String, usize> =
            ["b", "c10", "c2", "e", "é"].iter().enumerate().map(|(i, k)| (k.to_string(), i)).collect();
        let asked = ["a", "b", "c", "c10", "c2", "d", "e", "z", "é", "ü"];
        let mut walk = Walk::new(&map);
        for name in asked {
            assert_eq!(walk.at(name), map.get(name), "{name}");
        }
    }

    #[test]
    fn first_problem_is_the_first_finding_without_code_or_help() {
        let diagnostics: Diagnostics = [
            Diagnostic::new(Code::Semver, "`one` is not semver")
                .in_file("profiles/aws-profile/1.0.0/profile.yaml")
                .at_line(4)
                .about("profile aws-profile")
                .help("use MAJOR.MINOR.PATCH"),
            Diagnostic::new(Code::Schema, "second"),
        ]
        .into_iter()
        .collect();
        assert_eq!(
            first_problem(&diagnostics),
            "profiles/aws-profile/1.0.0/profile.yaml:4: profile aws-profile: `one` is not semver"
        );
        let crashed = ClusterProblem::Crashed(Panic { message: "boom".into(), location: "src/x.rs:1".into() });
        assert_eq!(crashed.summary(), "rendering crashed: boom");
        assert!(EvaluateError::Invalid { revision: "r".into(), diagnostics }.rejects());
    }
}
