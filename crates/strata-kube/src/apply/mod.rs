//! Apply: a [`DesiredSet`] onto a [`Target`], the way Flux's kustomize-controller does it, and
//! organised as Flux's `ssa` package is: a file per verb, [`reconcile`] composing them.
//!
//! ```text
//!   survey     discovery, GET live, server-side dry-run of every object   ── any failure: nothing written
//!   inventory  old ∪ new, written before the first object (cli-utils' inventory-add), so a
//!              process killed at any instruction leaves every object it may create tracked
//!   stage 0    Namespaces and CRDs (wait until CRDs are Established)
//!   stage n    each layer in dependsOn order, objects in parallel under a bound
//!   prune      old inventory − new set, reverse order, Namespaces/CRDs last and only if strata made them
//!   inventory  the new set and whatever could not be pruned (inventory-set)
//!   wait       rollouts complete, or the per-cluster timeout
//! ```
//!
//! The verbs: `survey` (what exists, and what applying would do), `stage` (the ordered
//! server-side apply), `prune` (delete what left the set), `wait` (health) and `diff` (live
//! against desired, for drift and `strata diff`: a survey, no writes). This module holds the
//! results and the order; the inventory writes between the verbs are what make a kill at any
//! point safe, so they stay here where the order is.
//!
//! An object whose dry-run result equals the live object is `unchanged` and not written, so an
//! unchanged re-apply makes no writes. Nothing that leaves here carries a sensitive value: results'
//! messages are scrubbed, drift findings and diffs are of redacted copies ([`crate::redact`]). The `strata.dev/revision` annotation records the revision
//! at which strata last changed an object, so a new commit that leaves an object as it is does not
//! rewrite it either.

mod diff;
pub mod drift;
pub mod health;
mod prune;
mod stage;
mod survey;
mod wait;
pub use crate::target::inventory;

use std::collections::{BTreeSet, HashMap};
use std::fmt;
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::redact::Redactor;
use crate::render::object::ObjectId;
use crate::render::{DesiredSet, Object};
use crate::target::{Target, TargetError};
pub use diff::{detect_drift, detect_drift_among, diff, provably_unchanged};
use health::Health;
use inventory::{Entry, Inventory};
pub use wait::watched_kinds;

#[derive(Clone, Debug)]
pub struct Options {
    /// Validate and report what would change, write nothing.
    pub dry_run: bool,
    /// Objects applied at once within a stage.
    pub concurrency: usize,
    /// How long to wait for rollouts before the result says unhealthy.
    pub health_timeout: Duration,
    pub poll_interval: Duration,
    /// Allow a desired set with no objects to prune everything strata applied before.
    pub allow_empty: bool,
    /// How sensitive values appear in results, drift findings and diffs: the daemon's key, or
    /// one of this process's own.
    pub redactor: Redactor,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            dry_run: false,
            concurrency: 16,
            health_timeout: Duration::from_secs(300),
            poll_interval: Duration::from_millis(500),
            allow_empty: false,
            redactor: Redactor::default(),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    Created,
    Configured,
    Unchanged,
    Pruned,
    Skipped,
    Failed,
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Action::Created => "created",
            Action::Configured => "configured",
            Action::Unchanged => "unchanged",
            Action::Pruned => "pruned",
            Action::Skipped => "skipped",
            Action::Failed => "failed",
        })
    }
}

#[derive(Clone, Debug, Serialize)]
pub struct ObjectResult {
    pub id: ObjectId,
    pub layer: String,
    pub action: Action,
    /// Time spent on this object's write (or dry-run, for a dry run).
    pub millis: u64,
    /// Why it failed or was skipped; the conflict it overrode.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// What one reconcile did, like Flux's change set.
#[derive(Clone, Debug, Serialize)]
pub struct ChangeSet {
    pub cluster: String,
    pub revision: Option<String>,
    pub dry_run: bool,
    pub objects: Vec<ObjectResult>,
    /// Objects that did not become healthy in time, and why.
    pub unhealthy: Vec<(ObjectId, Health)>,
    pub millis: u64,
}

impl ChangeSet {
    pub fn count(&self, action: Action) -> usize {
        self.objects.iter().filter(|o| o.action == action).count()
    }

    /// Anything failed or unhealthy.
    pub fn failed(&self) -> bool {
        self.count(Action::Failed) > 0 || !self.unhealthy.is_empty()
    }

    /// `3 created, 1 configured, 5 unchanged, 2 pruned`
    pub fn summary(&self) -> String {
        let parts: Vec<String> =
            [Action::Created, Action::Configured, Action::Unchanged, Action::Pruned, Action::Skipped, Action::Failed]
                .into_iter()
                .filter_map(|a| {
                    let n = self.count(a);
                    (n > 0).then(|| format!("{n} {a}"))
                })
                .collect();
        let mut out = if parts.is_empty() { "nothing to do".to_string() } else { parts.join(", ") };
        if !self.unhealthy.is_empty() {
            out.push_str(&format!(", {} unhealthy", self.unhealthy.len()));
        }
        out
    }
}

/// Why a reconcile did not start writing (nothing was written), or stopped.
#[derive(Debug)]
pub enum ReconcileError {
    /// The cluster could not be read or written at all.
    Target(TargetError),
    /// Validation failed: these objects would not apply. Nothing was written.
    Rejected(Vec<ObjectResult>),
    /// The desired set is empty and would prune every object strata applied before.
    EmptyPrune { objects: usize },
}

impl fmt::Display for ReconcileError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ReconcileError::Target(e) => write!(f, "{e}"),
            ReconcileError::Rejected(objects) => {
                write!(f, "validation failed, nothing was applied:")?;
                for o in objects {
                    write!(f, "\n  {} (layer {}): {}", o.id, o.layer, o.message.as_deref().unwrap_or(""))?;
                }
                Ok(())
            }
            ReconcileError::EmptyPrune { objects } => write!(
                f,
                "the desired set is empty and would prune all {objects} objects strata applied; refusing (allow it explicitly if that is the intent)"
            ),
        }
    }
}

impl std::error::Error for ReconcileError {}

impl From<TargetError> for ReconcileError {
    fn from(e: TargetError) -> Self {
        ReconcileError::Target(e)
    }
}

/// Applies `set` to `target` as of `revision`. Errors mean nothing was written; a change set
/// with failed or unhealthy objects means the apply ran and those did not make it.
pub async fn reconcile<T: Target>(
    target: &T,
    set: &DesiredSet,
    revision: Option<&str>,
    options: &Options,
) -> Result<ChangeSet, ReconcileError> {
    let started = Instant::now();
    let change_set = |objects: Vec<ObjectResult>, unhealthy: Vec<(ObjectId, Health)>| ChangeSet {
        cluster: set.cluster.clone(),
        revision: revision.map(str::to_string),
        dry_run: options.dry_run,
        objects,
        unhealthy,
        millis: started.elapsed().as_millis() as u64,
    };
    let mut surveys = survey::all(target, set, revision, options.concurrency).await?;
    let mut rejected: Vec<ObjectResult> = surveys
        .iter()
        .filter(|s| s.action == Action::Failed)
        .map(|s| s.result(Action::Failed, 0, s.message.clone()))
        .collect();
    if !rejected.is_empty() {
        scrub_messages(set, &mut rejected, &options.redactor);
        return Err(ReconcileError::Rejected(rejected));
    }

    let old = target.read_inventory(&set.cluster).await?;
    let prune = old.as_ref().map(|o| o.prune_candidates(set)).unwrap_or_default();
    if set.object_count() == 0 && !prune.is_empty() && !options.allow_empty {
        return Err(ReconcileError::EmptyPrune { objects: prune.len() });
    }

    if options.dry_run {
        let mut results = stage::planned(&surveys, &prune);
        scrub_messages(set, &mut results, &options.redactor);
        return Ok(change_set(results, Vec::new()));
    }

    // inventory-add: from here on a kill leaves nothing untracked.
    let absent: BTreeSet<ObjectId> = surveys.iter().filter(|s| s.live.is_none()).map(|s| s.object.id.clone()).collect();
    let covering = Inventory::covering(old.as_ref(), set, &absent);
    if old.as_ref() != Some(&covering) {
        target.write_inventory(&covering).await?;
    }

    let stage::Staged { mut results, created, failed_layer } =
        stage::all(target, &mut surveys, revision, options).await;

    // inventory-set: the new set, and what is still to be pruned.
    let new = Inventory::after_apply(set, revision, old.as_ref(), &created);
    let last = if failed_layer.is_none() {
        let pruned = prune::all(target, &set.cluster, &prune, &mut results).await?;
        let kept: Vec<Entry> = prune.into_iter().filter(|e| !pruned.contains(&e.id)).collect();
        Inventory::with_pending(&new, &kept)
    } else {
        // Nothing is pruned after a failed layer; the metadata stays that of the last apply
        // that completed, the entries say which objects exist now.
        Inventory { entries: Inventory::with_pending(&new, &prune).entries, ..covering.clone() }
    };
    if last != covering {
        target.write_inventory(&last).await?;
    }

    let unhealthy = if target.reports_health() && failed_layer.is_none() {
        wait::healthy(target, &set.cluster, &surveys, options).await
    } else {
        Vec::new()
    };
    scrub_messages(set, &mut results, &options.redactor);
    Ok(change_set(results, unhealthy))
}

/// Error text from the cluster may echo what it refused (an API server quotes an invalid value):
/// every message about an object leaves with that object's sensitive values replaced by markers.
fn scrub_messages(set: &DesiredSet, results: &mut [ObjectResult], redactor: &Redactor) {
    let objects: HashMap<&ObjectId, &Object> = set.layers.iter().flat_map(|l| &l.objects).map(|o| (&o.id, o)).collect();
    for result in results {
        if let (Some(message), Some(object)) = (&mut result.message, objects.get(&result.id)) {
            *message = redactor.scrub(message, &object.manifest, &object.sensitive);
        }
    }
}
