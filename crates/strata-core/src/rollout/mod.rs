//! Rollouts: a profile change reaches the fleet in waves, gated by health, halted on failure.
//!
//! ```text
//!   rollouts/<name>.yaml ──load──> Rollout { profiles, waves, onFailure, failureThreshold }   (policy, load)
//!   per cluster: plan + whether its file moved its pin ──causes──> governed (why) or not       (plan::rollouts)
//!   governed clusters ──assign──> waves: first selector that matches, by name, maxClusters    (policy)
//!   (waves, stored Progress, clock, what each cluster runs) ──gate──> release | hold | roll back  (gate)
//!                                                           └──> Progress to store, commit status, wake-up
//!   a plan's governed clusters ──section──> the waves a change will take, for `strata plan`    (plan::rollouts)
//! ```
//!
//! Everything here is pure: the daemon (`daemon::rollouts`) reads the store and the clusters'
//! states, calls [`gate::gate`], and stores what comes back; `strata plan` calls
//! [`crate::plan::rollouts::section`]. Both sit above this module: the rollout's words (policy,
//! cause, gate) know nothing of plans or of the model.
//!
//! What a rollout governs is a change whose cause is profile content — a new version a range
//! reaches, an in-place edit of the version a cluster runs — or the same version bump made in
//! several cluster files at once. One cluster's override, a new cluster, and any move to a lower
//! version (an explicit rollback, or a range falling back because a version was removed) are
//! not held: they are how a fleet is repaired.

pub mod gate;
pub mod policy;

use std::fmt;

use serde::{Deserialize, Serialize};

pub use policy::{Rollout, Wave};

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
