//! Stage: the ordered server-side apply of what the survey found. Stage 0 (Namespaces and CRDs)
//! first, then the objects it made checkable surveyed again, then each layer in `dependsOn`
//! order, the objects of one stage in parallel under a bound. A failed layer stops the layers
//! after it: they are skipped, not applied.
//!
//! ```text
//!   stage 0 ──> CRDs Established (wait) ──> discovery refreshed ──> deferred objects surveyed
//!   layer 1 ──> layer 2 ──> …          (a failure: the rest skipped)
//! ```

use std::collections::{BTreeSet, HashSet};
use std::time::Instant;

use futures::stream::{self, StreamExt};

use super::inventory::Entry;
use super::survey::{self, Pending, Survey};
use super::{Action, ObjectResult, Options, wait};
use crate::render::object::{ObjectId, is_stage_zero};
use crate::render::{LayerSet, Object};
use crate::target::{Target, TargetError};

/// What a dry run reports: what each object would do, and what would be pruned.
pub(super) fn planned(surveys: &[Survey<'_>], prune: &[Entry]) -> Vec<ObjectResult> {
    let mut results: Vec<ObjectResult> = Vec::new();
    for s in surveys {
        let message = if s.deferred {
            Some("checked against the cluster once its namespace or CRD exists".to_string())
        } else {
            s.message.clone()
        };
        results.push(s.result(s.action, 0, message));
    }
    for entry in prune {
        if let Some(id) = entry.object_id() {
            results.push(ObjectResult { id, layer: String::new(), action: Action::Pruned, millis: 0, message: None });
        }
    }
    results
}

/// What the staged apply did.
#[derive(Default)]
pub(super) struct Staged {
    pub results: Vec<ObjectResult>,
    /// Objects this apply created (the inventory marks them as strata's to prune).
    pub created: BTreeSet<ObjectId>,
    /// The first layer that failed: nothing after it was applied, nothing is pruned.
    pub failed_layer: Option<String>,
}

/// Applies the surveyed objects in stages; deferred surveys are replaced by their second survey.
pub(super) async fn all<T: Target>(
    target: &T,
    surveys: &mut [Survey<'_>],
    revision: Option<&str>,
    options: &Options,
) -> Staged {
    let mut staged = Staged::default();
    let Staged { results, created, failed_layer } = &mut staged;

    // Stage 0: Namespaces and CRDs, then wait for the CRDs, then learn their kinds.
    let (zero, rest): (Vec<usize>, Vec<usize>) =
        (0..surveys.len()).partition(|&i| is_stage_zero(&surveys[i].object.id));
    let outcomes = batch(target, surveys, &zero, options.concurrency).await;
    record(surveys, &zero, outcomes, results, created, failed_layer);
    if failed_layer.is_none() && surveys.iter().any(|s| s.deferred) {
        // New kinds are served once their CRDs are; nothing else changes what discovery says.
        if surveys.iter().any(|s| s.object.id.kind == "CustomResourceDefinition" && s.action != Action::Unchanged) {
            wait::established(target, surveys, options).await;
            target.refresh_discovery();
        }
        let fresh: HashSet<String> = surveys
            .iter()
            .filter(|s| s.object.id.kind == "Namespace" && s.live.is_none() && created.contains(&s.object.id))
            .map(|s| s.object.id.name.clone())
            .collect();
        let deferred: Vec<usize> = (0..surveys.len()).filter(|&i| surveys[i].deferred).collect();
        let batch: Vec<(&LayerSet, &Object)> =
            deferred.iter().map(|&i| (surveys[i].layer, surveys[i].object)).collect();
        match survey::batch(target, batch, revision, &Pending::default(), fresh, options.concurrency).await {
            Ok(fresh) => {
                for (i, survey) in deferred.into_iter().zip(fresh) {
                    surveys[i] = survey;
                }
            }
            Err(e) => {
                for i in deferred {
                    surveys[i].action = Action::Failed;
                    surveys[i].message = Some(e.to_string());
                }
            }
        }
    }

    // Then each layer in order; a failed layer stops the layers after it.
    let mut layers: Vec<&str> = Vec::new();
    for &i in &rest {
        if !layers.contains(&surveys[i].layer.name.as_str()) {
            layers.push(&surveys[i].layer.name);
        }
    }
    for layer in layers {
        let batch_of: Vec<usize> = rest.iter().copied().filter(|&i| surveys[i].layer.name == layer).collect();
        if let Some(failed) = failed_layer.as_deref() {
            for &i in &batch_of {
                results.push(surveys[i].result(Action::Skipped, 0, Some(format!("layer `{failed}` failed"))));
            }
            continue;
        }
        let outcomes = batch(target, surveys, &batch_of, options.concurrency).await;
        record(surveys, &batch_of, outcomes, results, created, failed_layer);
    }
    staged
}

/// Applies the objects at `indices` that need it, in parallel; returns (index, outcome, millis).
async fn batch<T: Target>(
    target: &T,
    surveys: &[Survey<'_>],
    indices: &[usize],
    concurrency: usize,
) -> Vec<(usize, Result<Action, TargetError>, u64)> {
    stream::iter(indices.iter().copied().map(|i| async move {
        let s = &surveys[i];
        let started = Instant::now();
        let outcome = match (&s.resource, s.action) {
            (_, Action::Unchanged) => Ok(Action::Unchanged),
            (_, Action::Failed) => Err(TargetError::Other(s.message.clone().unwrap_or_default())),
            (None, _) => Err(TargetError::Other(format!("the cluster does not serve {}", s.object.id.kind))),
            (Some(resource), action) => target.apply(resource, &s.manifest, false, true).await.map(|_| action),
        };
        (i, outcome, started.elapsed().as_millis() as u64)
    }))
    .buffer_unordered(concurrency.max(1))
    .collect()
    .await
}

/// The outcomes of one batch, in the order of `indices`: created objects noted, the first failure's
/// layer kept.
fn record(
    surveys: &[Survey<'_>],
    indices: &[usize],
    mut outcomes: Vec<(usize, Result<Action, TargetError>, u64)>,
    results: &mut Vec<ObjectResult>,
    created: &mut BTreeSet<ObjectId>,
    failed_layer: &mut Option<String>,
) {
    outcomes.sort_by_key(|(i, _, _)| indices.iter().position(|x| x == i));
    for (i, outcome, millis) in outcomes {
        let s = &surveys[i];
        match outcome {
            Ok(action) => {
                if action == Action::Created {
                    created.insert(s.object.id.clone());
                }
                results.push(s.result(action, millis, s.message.clone()));
            }
            Err(e) => {
                failed_layer.get_or_insert_with(|| s.layer.name.clone());
                results.push(s.result(Action::Failed, millis, Some(e.to_string())));
            }
        }
    }
}
