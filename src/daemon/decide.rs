//! Decide, per cluster and revision, what the daemon does: a pure function of the plan's
//! classification, the cluster's policy, approvals and the clock.
//!
//! ```text
//!   cluster-file changes (new, upgrade, rollback, switch, override)  ─> apply now
//!   in-place edit, updates: auto                                      ─> apply now (or when its window opens)
//!   in-place edit, updates: manual                                    ─> pending update until approved
//!   in-place edit + override, held                                    ─> apply the override on the old profile content now
//!   a change a rollout holds (crate::rollout::gate)                   ─> wait for its wave (an override still goes)
//! ```
//!
//! While an update is held the cluster keeps running — and drift-correcting to — what it last
//! applied.

use serde::{Deserialize, Serialize};

use crate::model::UpdatePolicy;
use crate::plan::{ChangeKind, ClusterPlan};
use crate::window::Window;

/// Which desired set the cluster should run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Run {
    /// What the new revision says.
    Head,
    /// The new revision's cluster file over the profile content last applied: an override that
    /// applies at once while the in-place edit of the same commit waits.
    HeadClusterOnAppliedProfile,
    /// What it runs now.
    Keep,
}

/// Why an update waits.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "until", rename_all = "lowercase")]
pub enum Hold {
    /// `updates: manual`: until `strata approve`.
    Approval,
    /// `updates: auto` with a window that is closed now.
    Window { window: String },
    /// A rollout holds it until its wave comes.
    Rollout { rollout: String, wave: String, why: String },
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Decision {
    pub run: Run,
    pub hold: Option<Hold>,
}

pub struct Input<'a> {
    /// Whether the cluster was ever applied (by this daemon's state).
    pub applied: bool,
    /// The plan from what it runs to the new revision.
    pub plan: &'a ClusterPlan,
    pub updates: UpdatePolicy,
    pub window: Option<&'a Window>,
    /// An approval recorded for exactly this head revision.
    pub approved: bool,
    pub suspended: bool,
    /// A rollout holds the change until the cluster's wave comes.
    pub rollout: Option<Hold>,
    /// Unix seconds.
    pub now: i64,
}

/// Whether a change waits for a person's approval (`updates: manual` and an in-place edit of
/// the profile content it runs, not yet approved at this revision): the rule [`decide`] holds
/// by, also asked by the rollouts' gate, which says a released wave waits for such clusters.
pub fn needs_approval(plan: &ClusterPlan, updates: UpdatePolicy, approved: bool) -> bool {
    updates == UpdatePolicy::Manual && !approved && plan.reasons.contains(&ChangeKind::InPlaceEdit)
}

pub fn decide(input: &Input) -> Decision {
    let keep = Decision { run: Run::Keep, hold: None };
    if input.suspended {
        return keep;
    }
    if !input.applied {
        return Decision { run: Run::Head, hold: None };
    }
    let reasons = &input.plan.reasons;
    if let Some(hold) = &input.rollout {
        let run = if reasons.contains(&ChangeKind::InPlaceEdit) && reasons.iter().any(|r| r.from_cluster_file()) {
            Run::HeadClusterOnAppliedProfile
        } else {
            Run::Keep
        };
        return Decision { run, hold: Some(hold.clone()) };
    }
    if !reasons.contains(&ChangeKind::InPlaceEdit) {
        return if input.plan.changed() { Decision { run: Run::Head, hold: None } } else { keep };
    }
    let hold = match (input.updates, input.window) {
        _ if needs_approval(input.plan, input.updates, input.approved) => Some(Hold::Approval),
        _ if input.approved => None,
        (UpdatePolicy::Manual, _) => None,
        (UpdatePolicy::Auto, Some(window)) if !window.is_open(input.now) => {
            Some(Hold::Window { window: window.to_string() })
        }
        (UpdatePolicy::Auto, _) => None,
    };
    match hold {
        None => Decision { run: Run::Head, hold: None },
        Some(hold) if reasons.iter().any(|r| r.from_cluster_file()) => {
            Decision { run: Run::HeadClusterOnAppliedProfile, hold: Some(hold) }
        }
        Some(hold) => Decision { run: Run::Keep, hold: Some(hold) },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(reasons: &[ChangeKind]) -> ClusterPlan {
        ClusterPlan {
            cluster: "c".into(),
            kind: reasons.first().copied().unwrap_or(ChangeKind::Unchanged),
            reasons: reasons.to_vec(),
            from: None,
            to: None,
            updates: UpdatePolicy::Auto,
            pending: false,
            window: None,
            update_available: None,
            base_digest: None,
            head_digest: None,
            objects: vec![],
        }
    }

    fn input<'a>(plan: &'a ClusterPlan, updates: UpdatePolicy, window: Option<&'a Window>) -> Input<'a> {
        Input {
            applied: true,
            plan,
            updates,
            window,
            approved: false,
            suspended: false,
            rollout: None,
            now: 1_795_824_000 + 3 * 3600,
        }
    }

    #[test]
    fn cluster_file_changes_apply_at_once_whatever_the_policy() {
        for kind in [ChangeKind::Upgrade, ChangeKind::Rollback, ChangeKind::Override, ChangeKind::ProfileSwitch] {
            let p = plan(&[kind]);
            let d = decide(&input(&p, UpdatePolicy::Manual, None));
            assert_eq!(d, Decision { run: Run::Head, hold: None }, "{kind:?}");
        }
    }

    #[test]
    fn in_place_edits_wait_for_approval_under_manual() {
        let p = plan(&[ChangeKind::InPlaceEdit]);
        assert_eq!(
            decide(&input(&p, UpdatePolicy::Manual, None)),
            Decision { run: Run::Keep, hold: Some(Hold::Approval) }
        );
        assert_eq!(decide(&input(&p, UpdatePolicy::Auto, None)), Decision { run: Run::Head, hold: None });
        let approved = Input { approved: true, ..input(&p, UpdatePolicy::Manual, None) };
        assert_eq!(decide(&approved), Decision { run: Run::Head, hold: None });
    }

    #[test]
    fn an_override_in_the_same_commit_goes_ahead_on_the_old_profile() {
        let p = plan(&[ChangeKind::InPlaceEdit, ChangeKind::Override]);
        assert_eq!(
            decide(&input(&p, UpdatePolicy::Manual, None)),
            Decision { run: Run::HeadClusterOnAppliedProfile, hold: Some(Hold::Approval) }
        );
    }

    #[test]
    fn windows_hold_auto_updates_until_they_open() {
        let p = plan(&[ChangeKind::InPlaceEdit]);
        // `now` is Saturday 03:00 UTC.
        let open = Window::parse("Sat 02:00-06:00 UTC").unwrap();
        let closed = Window::parse("Sun 02:00-06:00 UTC").unwrap();
        assert_eq!(decide(&input(&p, UpdatePolicy::Auto, Some(&open))).run, Run::Head);
        assert_eq!(
            decide(&input(&p, UpdatePolicy::Auto, Some(&closed))).hold,
            Some(Hold::Window { window: "Sun 02:00-06:00 UTC".into() })
        );
    }

    #[test]
    fn a_rollout_hold_keeps_what_runs_and_lets_an_override_of_the_same_commit_go() {
        let hold = Hold::Rollout { rollout: "default".into(), wave: "canary".into(), why: "waits".into() };
        let upgrade = plan(&[ChangeKind::Upgrade]);
        let held = Input { rollout: Some(hold.clone()), ..input(&upgrade, UpdatePolicy::Auto, None) };
        assert_eq!(decide(&held), Decision { run: Run::Keep, hold: Some(hold.clone()) });
        // Even an approval of the head does not jump the wave.
        let edited = plan(&[ChangeKind::InPlaceEdit, ChangeKind::Override]);
        let approved =
            Input { rollout: Some(hold.clone()), approved: true, ..input(&edited, UpdatePolicy::Manual, None) };
        assert_eq!(decide(&approved), Decision { run: Run::HeadClusterOnAppliedProfile, hold: Some(hold) });
    }

    #[test]
    fn new_clusters_apply_and_suspended_ones_do_nothing() {
        let p = plan(&[ChangeKind::InPlaceEdit]);
        let new = Input { applied: false, ..input(&p, UpdatePolicy::Manual, None) };
        assert_eq!(decide(&new).run, Run::Head);
        let suspended = Input { suspended: true, ..input(&p, UpdatePolicy::Auto, None) };
        assert_eq!(decide(&suspended), Decision { run: Run::Keep, hold: None });
        let unchanged = plan(&[]);
        assert_eq!(decide(&input(&unchanged, UpdatePolicy::Auto, None)).run, Run::Keep);
    }
}
