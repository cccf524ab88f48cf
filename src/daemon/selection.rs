//! Approvals at fleet scale: which pending updates one approval of a selection covers.
//!
//! ```text
//!   Selector { rollout, wave, tags, all_pending } ──┐
//!   every cluster's pending update (store)        ──┼──> select ──> Selection { clusters at revisions, digest }
//!   tags at the last good revision, rollouts       ──┘
//! ```
//!
//! Only pending updates that wait for a person (`updates: manual`, [`Hold::Approval`]) are
//! selected: one a rollout holds waits for its wave, one a window holds for the window. A
//! selection is shown before it is approved (`strata approve --rollout … --wave …`, the view's
//! form, `GET /api/v1/approvals`), and the approval names what was shown: the revision and the
//! digest of the exact set of clusters at their revisions. When anything moved since — a cluster
//! joined or left the selection, an update moved to another revision — the digest differs and
//! nothing is approved. Everything here is pure: the caller reads the store.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

use super::decide::Hold;
use super::store::FleetRow;
use crate::rollout::Rollout;
use crate::rollout::gate::Progress;

/// What a person asks to approve: the pending updates of a rollout's wave, of the clusters with
/// every one of some tags, or every pending update. The parts given must all match.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Selector {
    #[serde(default)]
    pub rollout: Option<String>,
    #[serde(default)]
    pub wave: Option<String>,
    #[serde(default)]
    pub tags: Vec<String>,
    #[serde(default)]
    pub all_pending: bool,
}

/// Why a selector selects nothing meaningful.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum Invalid {
    #[error("say what to approve: a rollout (and wave), one or more tags, or all pending updates")]
    Empty,
    #[error("all pending updates is everything: give it without a rollout, wave or tags")]
    AllAndMore,
    #[error("a wave belongs to a rollout: name the rollout too")]
    WaveWithoutRollout,
    #[error("no rollout named {0:?} in the repository (strata rollout status lists them)")]
    NoRollout(String),
    #[error("rollout {rollout} has no wave {wave:?}: its waves are {known}")]
    NoWave { rollout: String, wave: String, known: String },
    #[error("tag {0:?} is not a tag: write key:value, or key for any value")]
    BadTag(String),
}

impl Selector {
    /// `rollout default, wave prod`, `tags env:prod, region:eu`, `all pending updates`.
    pub fn describe(&self) -> String {
        if self.all_pending {
            return "all pending updates".into();
        }
        let mut parts = Vec::new();
        if let Some(rollout) = &self.rollout {
            parts.push(format!("rollout {rollout}"));
        }
        if let Some(wave) = &self.wave {
            parts.push(format!("wave {wave}"));
        }
        if !self.tags.is_empty() {
            parts.push(format!("tag{} {}", if self.tags.len() == 1 { "" } else { "s" }, self.tags.join(", ")));
        }
        parts.join(", ")
    }

    /// Checks the selector against the rollouts of the last good revision.
    pub fn validate(&self, rollouts: &BTreeMap<String, Rollout>) -> Result<(), Invalid> {
        let narrowed = self.rollout.is_some() || self.wave.is_some() || !self.tags.is_empty();
        match (self.all_pending, narrowed) {
            (false, false) => return Err(Invalid::Empty),
            (true, true) => return Err(Invalid::AllAndMore),
            _ => {}
        }
        if let Some(tag) = self.tags.iter().find(|t| t.trim().is_empty() || t.chars().any(char::is_whitespace)) {
            return Err(Invalid::BadTag(tag.clone()));
        }
        match (&self.rollout, &self.wave) {
            (None, Some(_)) => Err(Invalid::WaveWithoutRollout),
            (Some(name), wave) => {
                let rollout = rollouts.get(name).ok_or_else(|| Invalid::NoRollout(name.clone()))?;
                match wave {
                    Some(wave) if !rollout.waves.iter().any(|w| &w.name == wave) => Err(Invalid::NoWave {
                        rollout: name.clone(),
                        wave: wave.clone(),
                        known: rollout.waves.iter().map(|w| w.name.as_str()).collect::<Vec<_>>().join(", "),
                    }),
                    _ => Ok(()),
                }
            }
            (None, None) => Ok(()),
        }
    }
}

/// The pending updates a selector selects: each cluster with the revision it would approve.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Selection {
    /// By name: (cluster, the pending update's revision).
    pub clusters: Vec<(String, String)>,
    /// [`digest`] of `clusters`: what an approval names to say "exactly what I was shown".
    pub digest: String,
}

impl Selection {
    /// The revisions the selected updates are at (one, as a rule: every pending update is held
    /// at the head the daemon evaluated).
    pub fn revisions(&self) -> BTreeSet<&str> {
        self.clusters.iter().map(|(_, r)| r.as_str()).collect()
    }

    pub fn names(&self) -> Vec<&str> {
        self.clusters.iter().map(|(n, _)| n.as_str()).collect()
    }

    /// As the API shows it: the count, every name, the revision when there is one, the digest.
    pub fn to_json(&self, selector: &Selector) -> serde_json::Value {
        let revisions = self.revisions();
        serde_json::json!({
            "selector": selector,
            "selects": selector.describe(),
            "count": self.clusters.len(),
            "revision": (revisions.len() == 1).then(|| revisions.iter().next().copied()).flatten(),
            "revisions": revisions,
            "clusters": self.clusters.iter().map(|(c, r)| serde_json::json!({"cluster": c, "revision": r})).collect::<Vec<_>>(),
            "digest": self.digest,
        })
    }
}

/// The digest of a set of clusters at revisions: SHA-256 over `cluster revision` lines in name
/// order, hex. Order of the input does not matter.
pub fn digest<'a>(clusters: impl IntoIterator<Item = (&'a str, &'a str)>) -> String {
    let mut lines: Vec<String> = clusters.into_iter().map(|(c, r)| format!("{c} {r}\n")).collect();
    lines.sort();
    let hash = Sha256::digest(lines.concat().as_bytes());
    hash.iter().map(|b| format!("{b:02x}")).collect()
}

/// The pending updates waiting for approval that `selector` selects, from every cluster's row,
/// their tags, and where each rollout stands. The selector is taken as valid
/// ([`Selector::validate`]).
pub fn select(
    selector: &Selector,
    fleet: &[FleetRow],
    tags: &BTreeMap<String, Vec<String>>,
    progress: &[Progress],
) -> Selection {
    let waiting = fleet.iter().filter_map(|(state, pending)| {
        let pending = pending.as_ref().filter(|p| p.hold == Hold::Approval)?;
        let have = tags.get(&state.name).map(Vec::as_slice).unwrap_or(&[]);
        Some((state.name.as_str(), pending.head_revision.as_str(), have))
    });
    select_from(selector, waiting, progress)
}

/// [`select`] over the clusters whose pending update waits for approval, each with the
/// revision it is at and its tags (as the fleet page's snapshot has them, without reading the
/// store).
pub fn select_from<'a>(
    selector: &Selector,
    waiting: impl IntoIterator<Item = (&'a str, &'a str, &'a [String])>,
    progress: &[Progress],
) -> Selection {
    let in_rollout = |name: &str| match &selector.rollout {
        None => true,
        Some(rollout) => progress
            .iter()
            .find(|p| &p.rollout == rollout)
            .and_then(|p| p.clusters.get(name))
            .is_some_and(|c| selector.wave.as_ref().is_none_or(|w| &c.wave == w)),
    };
    let tagged = |have: &[String]| selector.tags.iter().all(|want| crate::names::has_tag(have, want));
    let mut clusters: Vec<(String, String)> = waiting
        .into_iter()
        .filter(|(name, _, have)| in_rollout(name) && tagged(have))
        .map(|(name, revision, _)| (name.to_string(), revision.to_string()))
        .collect();
    clusters.sort();
    let digest = digest(clusters.iter().map(|(c, r)| (c.as_str(), r.as_str())));
    Selection { clusters, digest }
}

/// Every cluster whose pending update waits for approval, with its revision: what the rollout
/// pages, `strata status` and the metric count.
pub fn waiting(fleet: &[FleetRow]) -> BTreeMap<String, String> {
    fleet
        .iter()
        .filter_map(|(s, p)| {
            p.as_ref().filter(|p| p.hold == Hold::Approval).map(|p| (s.name.clone(), p.head_revision.clone()))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::daemon::state::Sync;
    use crate::daemon::store::{ClusterState, Pending};
    use crate::rollout::Cause;
    use crate::rollout::gate::{ClusterProgress, ClusterRun, RunState};

    const REV: &str = "9f3c2aa5d0e4c1b7a9e8f6d3c2b1a0f9e8d7c6b5";

    fn row(name: &str, hold: Option<Hold>) -> FleetRow {
        let state = ClusterState {
            name: name.into(),
            profile_revision: Some("r0".into()),
            cluster_revision: Some("r0".into()),
            digest: Some("sha256:old".into()),
            profile: Some("aws-profile".into()),
            version: Some("1.1.0".into()),
            applied_at: Some(0),
            sync: Sync::Applied,
            message: None,
            health: None,
            drifted: 0,
            suspended: false,
        };
        let pending = hold.map(|hold| Pending {
            cluster: name.into(),
            base_revision: "r0".into(),
            head_revision: REV.into(),
            hold,
            summary: String::new(),
            diff: String::new(),
            since: 0,
            base_digest: None,
        });
        (state, pending)
    }

    fn progress(waves: &[(&str, &str)]) -> Progress {
        let clusters = waves
            .iter()
            .map(|(cluster, wave)| {
                let entry = ClusterProgress {
                    wave: wave.to_string(),
                    cause: Cause::InPlaceEdit,
                    to: "aws-profile@1.1.0".into(),
                    target: "sha256:new".into(),
                    state: ClusterRun::Updating,
                    released_at: None,
                    finished_at: None,
                    before: None,
                    message: None,
                };
                (cluster.to_string(), entry)
            })
            .collect();
        Progress {
            rollout: "default".into(),
            revision: REV.into(),
            started_at: 0,
            state: RunState::Progressing,
            waves: vec![],
            clusters,
            halt: None,
            paused: None,
            aborted: None,
            next: String::new(),
            finished_at: None,
            generation: 1,
        }
    }

    #[test]
    fn a_wave_a_tag_or_everything_selects_only_updates_that_wait_for_a_person() {
        let rollout_hold = Hold::Rollout { rollout: "default".into(), wave: "rest".into(), why: String::new() };
        let fleet = vec![
            row("prod-a", Some(Hold::Approval)),
            row("prod-b", Some(Hold::Approval)),
            row("stage-1", Some(Hold::Approval)),
            row("edge-1", Some(rollout_hold)),
            row("edge-2", Some(Hold::Window { window: "Sat 02:00-06:00 UTC".into() })),
            row("lab", None),
        ];
        let tags: BTreeMap<String, Vec<String>> = [
            ("prod-a", vec!["env:prod", "region:eu"]),
            ("prod-b", vec!["env:prod", "region:us"]),
            ("stage-1", vec!["env:staging"]),
            ("edge-1", vec!["env:prod"]),
        ]
        .into_iter()
        .map(|(c, t)| (c.to_string(), t.into_iter().map(String::from).collect()))
        .collect();
        let progress =
            [progress(&[("stage-1", "staging"), ("prod-a", "prod"), ("prod-b", "prod"), ("edge-1", "rest")])];
        let names = |selector: Selector| select(&selector, &fleet, &tags, &progress).names().join(" ");
        let wave = |w: &str| Selector { rollout: Some("default".into()), wave: Some(w.into()), ..Selector::default() };
        assert_eq!(names(wave("prod")), "prod-a prod-b");
        assert_eq!(names(wave("rest")), "", "held by the rollout: nothing to approve yet");
        let tagged = |t: &[&str]| Selector { tags: t.iter().map(|t| t.to_string()).collect(), ..Selector::default() };
        assert_eq!(names(tagged(&["env:prod"])), "prod-a prod-b");
        assert_eq!(names(tagged(&["env:prod", "region:eu"])), "prod-a", "tags AND");
        assert_eq!(names(Selector { all_pending: true, ..Selector::default() }), "prod-a prod-b stage-1");
        assert_eq!(waiting(&fleet).len(), 3);
    }

    #[test]
    fn the_digest_names_the_exact_set_at_its_revisions() {
        let a = digest([("a", REV), ("b", REV)]);
        assert_eq!(a, digest([("b", REV), ("a", REV)]), "order does not matter");
        assert_ne!(a, digest([("a", REV)]), "a cluster fewer");
        assert_ne!(a, digest([("a", REV), ("b", REV), ("c", REV)]), "a cluster more");
        assert_ne!(a, digest([("a", REV), ("b", "4be1f07")]), "another revision");
        assert_eq!(a.len(), 64);
    }

    #[test]
    fn selectors_name_what_they_select_and_refuse_what_selects_nothing_known() {
        use crate::rollout::policy::testing::{rollout, wave};
        let rollouts = BTreeMap::from([("default".to_string(), rollout(vec![wave("staging", ""), wave("prod", "")]))]);
        let check = |s: Selector| s.validate(&rollouts);
        assert_eq!(check(Selector::default()), Err(Invalid::Empty));
        assert_eq!(
            check(Selector { wave: Some("prod".into()), ..Selector::default() }),
            Err(Invalid::WaveWithoutRollout)
        );
        let all_and_tag = Selector { all_pending: true, tags: vec!["env:prod".into()], ..Selector::default() };
        assert_eq!(check(all_and_tag), Err(Invalid::AllAndMore));
        let unknown = Selector { rollout: Some("default".into()), wave: Some("canary".into()), ..Selector::default() };
        assert_eq!(
            check(unknown).unwrap_err().to_string(),
            "rollout default has no wave \"canary\": its waves are staging, prod"
        );
        let nowhere = Selector { rollout: Some("aws".into()), ..Selector::default() };
        assert!(matches!(check(nowhere), Err(Invalid::NoRollout(_))));
        let good = Selector { rollout: Some("default".into()), wave: Some("prod".into()), ..Selector::default() };
        assert_eq!(good.describe(), "rollout default, wave prod");
        assert_eq!(check(good), Ok(()));
    }
}
