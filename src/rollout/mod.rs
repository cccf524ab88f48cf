//! Rollouts: a profile change reaches the fleet in waves, gated by health, halted on failure.
//!
//! ```text
//!   rollouts/<name>.yaml ──load──> Rollout { profiles, waves, onFailure, failureThreshold }   (policy, load)
//!   per cluster: plan + whether its file moved its pin ──causes──> governed (why) or not       (here)
//!   governed clusters ──assign──> waves: first selector that matches, by name, maxClusters    (policy)
//!   (waves, stored Progress, clock, what each cluster runs) ──gate──> release | hold | roll back  (gate)
//!                                                           └──> Progress to store, commit status, wake-up
//!   a plan's governed clusters ──section──> the waves a change will take, for `strata plan`    (plan)
//! ```
//!
//! Everything here is pure: the daemon (`daemon::rollouts`) reads the store and the clusters'
//! states, calls [`gate::gate`], and stores what comes back; `strata plan` calls
//! [`plan::section`].
//!
//! What a rollout governs is a change whose cause is profile content — a new version a range
//! reaches, an in-place edit of the version a cluster runs — or the same version bump made in
//! several cluster files at once. One cluster's override, a new cluster, and any move to a lower
//! version (an explicit rollback, or a range falling back because a version was removed) are
//! not held: they are how a fleet is repaired.

pub mod gate;
pub mod load;
pub mod plan;
pub mod policy;

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

pub use policy::{Rollout, Wave};

use crate::plan::{ChangeKind, ClusterPlan};

/// Why a rollout governs a cluster's change.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Cause {
    /// A new version of the profile that the cluster's range reaches.
    NewVersion,
    /// An in-place edit of the profile version the cluster runs.
    InPlaceEdit,
    /// The same version bump in several cluster files at once.
    FleetBump,
}

impl Cause {
    pub fn label(self) -> &'static str {
        match self {
            Cause::NewVersion => "new version by range",
            Cause::InPlaceEdit => "in-place edit",
            Cause::FleetBump => "bump in several cluster files",
        }
    }
}

impl fmt::Display for Cause {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.label())
    }
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
