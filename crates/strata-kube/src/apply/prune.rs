//! Prune: delete what left the desired set — the old inventory's entries the new set no longer
//! holds, in reverse apply order. Namespaces and CRDs go only if strata created them; an object
//! no longer labelled as this cluster's is left in place. Either way it stops being tracked.

use std::collections::BTreeSet;
use std::time::Instant;

use super::inventory::Entry;
use super::{Action, ObjectResult};
use crate::render::object::{LABEL_CLUSTER, is_stage_zero};
use crate::target::{Target, TargetError};

/// Deletes what left the desired set; returns the ids pruned (or found already gone).
pub(super) async fn all<T: Target>(
    target: &T,
    cluster: &str,
    prune: &[Entry],
    results: &mut Vec<ObjectResult>,
) -> Result<BTreeSet<String>, TargetError> {
    let mut done = BTreeSet::new();
    for entry in prune {
        let Some(id) = entry.object_id() else { continue };
        let started = Instant::now();
        let skip = |message: &str| ObjectResult {
            id: id.clone(),
            layer: String::new(),
            action: Action::Skipped,
            millis: 0,
            message: Some(message.to_string()),
        };
        if is_stage_zero(&id) && !entry.created {
            // It existed before strata applied it: leave it, stop tracking it.
            results.push(skip("existed before strata; left in place"));
            done.insert(entry.id.clone());
            continue;
        }
        let Some(resource) = target.resource(&entry.api_version, &id.kind).await? else {
            done.insert(entry.id.clone());
            continue;
        };
        match target.get(&resource, id.namespace.as_deref(), &id.name).await? {
            None => {
                done.insert(entry.id.clone());
            }
            Some(live) if live["metadata"]["labels"][LABEL_CLUSTER].as_str() != Some(cluster) => {
                results.push(skip("no longer labelled as this cluster's; left in place"));
                done.insert(entry.id.clone());
            }
            Some(_) => match target.delete(&resource, id.namespace.as_deref(), &id.name).await {
                Ok(()) => {
                    results.push(ObjectResult {
                        id,
                        layer: String::new(),
                        action: Action::Pruned,
                        millis: started.elapsed().as_millis() as u64,
                        message: None,
                    });
                    done.insert(entry.id.clone());
                }
                Err(e) => results.push(ObjectResult {
                    id,
                    layer: String::new(),
                    action: Action::Failed,
                    millis: started.elapsed().as_millis() as u64,
                    message: Some(format!("prune: {e}")),
                }),
            },
        }
    }
    Ok(done)
}
