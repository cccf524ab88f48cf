//! The waves a change will take: what `strata plan` (and so a pull-request comment) shows of
//! each rollout. Pure: the plan's clusters and the two models in, per rollout the waves with the
//! clusters each holds and what each cluster gets out.

use std::collections::BTreeMap;

use serde::Serialize;

use super::policy::{Approval, OnFailure, show_duration};
use super::{Cause, Changed, causes, profile_of};
use crate::model::Model;
use crate::plan::ClusterPlan;

#[derive(Debug, Clone, Serialize)]
pub struct RolloutPlan {
    pub rollout: String,
    pub file: String,
    pub on_failure: OnFailure,
    pub failure_threshold: usize,
    /// Every wave of the policy, in order (those the change does not reach hold no cluster).
    pub waves: Vec<WavePlan>,
}

#[derive(Debug, Clone, Serialize)]
pub struct WavePlan {
    pub name: String,
    /// What the wave selects, in words.
    pub selects: String,
    pub max_parallel: String,
    pub bake: String,
    pub approval: Approval,
    pub clusters: Vec<PlannedCluster>,
}

#[derive(Debug, Clone, Serialize)]
pub struct PlannedCluster {
    pub cluster: String,
    pub from: Option<String>,
    /// `profile@version` it gets.
    pub to: String,
    pub cause: Cause,
}

impl RolloutPlan {
    /// The 1-based number and name of the wave that holds `cluster`.
    pub fn wave_of(&self, cluster: &str) -> Option<(usize, &str)> {
        let used = self.waves.iter().filter(|w| !w.clusters.is_empty());
        used.enumerate()
            .find(|(_, w)| w.clusters.iter().any(|c| c.cluster == cluster))
            .map(|(i, w)| (i + 1, w.name.as_str()))
    }

    /// Waves that hold a cluster of this change.
    pub fn used(&self) -> impl Iterator<Item = &WavePlan> {
        self.waves.iter().filter(|w| !w.clusters.is_empty())
    }

    pub fn cluster_count(&self) -> usize {
        self.waves.iter().map(|w| w.clusters.len()).sum()
    }
}

/// Per rollout of `head` that governs some change of `clusters`: its waves and their clusters.
pub fn section(clusters: &[ClusterPlan], base: &Model, head: &Model) -> Vec<RolloutPlan> {
    let changed = clusters.iter().filter(|c| c.changed()).filter_map(|plan| {
        let before = base.clusters.get(&plan.cluster)?;
        let after = head.clusters.get(&plan.cluster)?;
        let pin_moved = before.profile != after.profile || before.version != after.version;
        Some(Changed { cluster: &plan.cluster, plan, pin_moved })
    });
    let causes = causes(changed);
    let by_name: BTreeMap<&str, &ClusterPlan> = clusters.iter().map(|c| (c.cluster.as_str(), c)).collect();
    let mut out = Vec::new();
    for rollout in head.rollouts.values() {
        let governed: BTreeMap<&str, Cause> = causes
            .iter()
            .filter(|(name, _)| by_name[**name].to.as_deref().is_some_and(|to| rollout.governs(profile_of(to))))
            .map(|(name, cause)| (*name, *cause))
            .collect();
        if governed.is_empty() {
            continue;
        }
        let tags: BTreeMap<&str, &[String]> =
            governed.keys().filter_map(|name| head.clusters.get(*name).map(|c| (*name, c.tags.as_slice()))).collect();
        let assigned = rollout.assign(&tags, &BTreeMap::new());
        let waves = rollout
            .waves
            .iter()
            .zip(assigned)
            .map(|(wave, names)| WavePlan {
                name: wave.name.clone(),
                selects: wave.selects(),
                max_parallel: wave.max_parallel.to_string(),
                bake: show_duration(wave.bake),
                approval: wave.approval,
                clusters: names
                    .into_iter()
                    .map(|name| {
                        let plan = by_name[name];
                        PlannedCluster {
                            cluster: name.to_string(),
                            from: plan.from.clone(),
                            to: plan.to.clone().unwrap_or_default(),
                            cause: governed[name],
                        }
                    })
                    .collect(),
            })
            .collect();
        out.push(RolloutPlan {
            rollout: rollout.name.clone(),
            file: rollout.file.clone(),
            on_failure: rollout.on_failure,
            failure_threshold: rollout.failure_threshold,
            waves,
        });
    }
    out
}
