//! The waves a change will take: what `strata plan` (and so a pull-request comment) shows of
//! each rollout. Pure: the plan's clusters and the two models in, per rollout the waves with the
//! clusters each holds and what each cluster gets out; and which changes a rollout governs, and
//! why (the daemon asks the same question of each evaluation).

use std::collections::BTreeMap;

use serde::Serialize;

use super::{ChangeKind, ClusterPlan};
use crate::model::Model;
use crate::rollout::Cause;
use crate::rollout::policy::{Approval, OnFailure, show_duration};

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

/// One cluster's change as classification sees it.
pub struct Changed<'a> {
    pub cluster: &'a str,
    pub plan: &'a ClusterPlan,
    /// Whether the cluster file's `spec.profile` (name or version) is not what it was.
    pub pin_moved: bool,
}

/// The clusters whose change a rollout governs, and why. A bump made in cluster files counts
/// when more than one cluster moves to the same profile version by its own file: one cluster
/// pinned forward is that cluster's business (as an override is), the same pin in many files is
/// a fleet change made by hand.
pub fn causes<'a>(changes: impl IntoIterator<Item = Changed<'a>>) -> BTreeMap<&'a str, Cause> {
    let mut out = BTreeMap::new();
    let mut bumps: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for c in changes {
        let forward = matches!(c.plan.kind, ChangeKind::Upgrade | ChangeKind::ProfileSwitch);
        if c.plan.reasons.contains(&ChangeKind::InPlaceEdit) {
            out.insert(c.cluster, Cause::InPlaceEdit);
        } else if forward && !c.pin_moved {
            out.insert(c.cluster, Cause::NewVersion);
        } else if forward && let Some(to) = c.plan.to.as_deref() {
            bumps.entry(to).or_default().push(c.cluster);
        }
    }
    for clusters in bumps.into_values().filter(|c| c.len() > 1) {
        out.extend(clusters.into_iter().map(|c| (c, Cause::FleetBump)));
    }
    out
}

/// The profile a plan moves a cluster to: `aws-profile` of `aws-profile@1.2.0`.
pub fn profile_of(to: &str) -> &str {
    to.split_once('@').map_or(to, |(name, _)| name)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::UpdatePolicy;
    use crate::rollout::Cause;

    pub(crate) fn plan(cluster: &str, reasons: &[ChangeKind], to: &str) -> ClusterPlan {
        ClusterPlan {
            cluster: cluster.into(),
            kind: reasons.first().copied().unwrap_or(ChangeKind::Unchanged),
            reasons: reasons.to_vec(),
            from: Some("web@1.0.0".into()),
            to: Some(to.into()),
            updates: UpdatePolicy::Auto,
            pending: false,
            window: None,
            update_available: None,
            base_digest: Some("sha256:old".into()),
            head_digest: Some(format!("sha256:{to}")),
            objects: vec![],
        }
    }

    #[test]
    fn profile_content_and_bumps_in_several_files_are_governed_the_rest_is_not() {
        use ChangeKind::*;
        let plans = [
            plan("range", &[Upgrade], "web@1.2.0"),
            plan("edited", &[InPlaceEdit, Override], "web@1.0.0"),
            plan("override", &[Override], "web@1.0.0"),
            plan("new", &[NewCluster], "web@1.0.0"),
            plan("back", &[Rollback], "web@0.9.0"),
            plan("pinned-a", &[Upgrade], "web@1.3.0"),
            plan("pinned-b", &[Upgrade], "web@1.3.0"),
            plan("pinned-alone", &[Upgrade], "web@1.4.0"),
            plan("range-back", &[Rollback], "web@1.1.0"),
        ];
        let pinned = |name: &str| name.starts_with("pinned") || name == "back";
        let causes =
            causes(plans.iter().map(|p| Changed { cluster: &p.cluster, plan: p, pin_moved: pinned(&p.cluster) }));
        assert_eq!(
            causes.into_iter().collect::<Vec<_>>(),
            [
                ("edited", Cause::InPlaceEdit),
                ("pinned-a", Cause::FleetBump),
                ("pinned-b", Cause::FleetBump),
                ("range", Cause::NewVersion),
            ]
        );
    }
}
