//! A rollout policy as it is known to be valid ([`super::load`] refuses anything else), and the
//! one question about it that needs no state: which wave each cluster belongs to.
//!
//! ```text
//!   clusters a change reaches (name, tags) ──┐
//!   waves in order (selector, maxClusters) ──┴──> per wave, the clusters it holds, by name
//! ```
//!
//! A cluster belongs to the first wave whose selector matches it and that still has room
//! (`maxClusters` takes the first N by name; the rest fall through to later waves). A wave
//! without a selector takes everything left; when a policy has none, the clusters no wave
//! selects form a last wave of their own, [`UNSELECTED`], after every other.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::names::has_tag;

/// The name of the wave strata adds for clusters no wave of a policy selects (a policy without
/// a catch-all wave). No wave of a policy may be named so.
pub const UNSELECTED: &str = "unselected";

/// Where rollout policies live in a repository.
pub const ROLLOUTS_DIR: &str = "rollouts";

#[derive(Debug, Clone, PartialEq)]
pub struct Rollout {
    pub name: String,
    /// `rollouts/<file>.yaml`.
    pub file: String,
    /// The profiles whose changes it governs; empty: every profile.
    pub profiles: Vec<String>,
    /// In order; the last one takes every cluster no other wave took.
    pub waves: Vec<Wave>,
    pub on_failure: OnFailure,
    /// Failed clusters that halt the rollout (at least 1).
    pub failure_threshold: usize,
    /// Drift found on a cluster the rollout updated, while it runs, counts as a failure.
    pub fail_on_drift: bool,
    /// Line of `spec.profiles` in the policy file (of `metadata.name` when it governs every profile).
    pub line: usize,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Wave {
    pub name: String,
    /// `None`: every cluster no earlier wave took.
    pub selector: Option<Selector>,
    /// Only the first N clusters of the selection (by name); the rest fall through.
    pub max_clusters: Option<usize>,
    pub max_parallel: Parallel,
    /// How long the wave stays applied and healthy before the next one starts.
    pub bake: Duration,
    pub approval: Approval,
    /// Added by strata for the clusters no wave selects.
    pub implicit: bool,
    /// Line of the wave's `name` in the policy file.
    pub line: usize,
}

/// Which clusters a wave selects: every tag given (as `strata clusters --tag` matches them) and,
/// when names are given, one of those names.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Selector {
    #[serde(default)]
    pub tags: Vec<String>,
    #[serde(default)]
    pub clusters: Vec<String>,
}

impl Selector {
    pub fn matches(&self, name: &str, tags: &[String]) -> bool {
        self.tags.iter().all(|t| has_tag(tags, t))
            && (self.clusters.is_empty() || self.clusters.iter().any(|c| c == name))
    }
}

impl fmt::Display for Selector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut parts = Vec::new();
        if !self.tags.is_empty() {
            parts.push(format!("tags {}", self.tags.join(", ")));
        }
        if !self.clusters.is_empty() {
            parts.push(format!("clusters {}", self.clusters.join(", ")));
        }
        f.write_str(&parts.join("; "))
    }
}

/// How many clusters of a wave may be updating at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Parallel {
    Count(usize),
    /// A percentage of the wave's clusters, rounded up (at least one cluster).
    Percent(u8),
    /// The whole wave at once (the default).
    All,
}

impl Parallel {
    /// The slots a wave of `size` clusters has.
    pub fn of(self, size: usize) -> usize {
        match self {
            Parallel::Count(n) => n,
            Parallel::Percent(p) => (size * p as usize).div_ceil(100).max(1),
            Parallel::All => size.max(1),
        }
    }
}

impl fmt::Display for Parallel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Parallel::Count(n) => write!(f, "{n}"),
            Parallel::Percent(p) => write!(f, "{p}%"),
            Parallel::All => f.write_str("all"),
        }
    }
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OnFailure {
    /// Stop: waves not started are held, the running wave's clusters in flight finish.
    #[default]
    Halt,
    /// Stop, and return every cluster the rollout touched to what it ran before.
    Rollback,
}

impl fmt::Display for OnFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            OnFailure::Halt => "halt",
            OnFailure::Rollback => "rollback",
        })
    }
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Approval {
    /// The wave starts when the one before it has baked.
    #[default]
    Auto,
    /// The wave starts when a person promotes it (`strata rollout promote`).
    Manual,
}

/// `10m`, `90s`, `1h30m`-free: the durations the host config writes, `0s` as none.
pub fn show_duration(d: Duration) -> String {
    let secs = d.as_secs();
    match (secs, d.subsec_millis()) {
        (0, 0) => "none".to_string(),
        (0, ms) => format!("{ms}ms"),
        (s, 0) if s % 3600 == 0 => format!("{}h", s / 3600),
        (s, 0) if s % 60 == 0 => format!("{}m", s / 60),
        (s, 0) => format!("{s}s"),
        _ => format!("{}ms", d.as_millis()),
    }
}

impl Wave {
    /// What the wave selects, in words.
    pub fn selects(&self) -> String {
        match (&self.selector, self.max_clusters, self.implicit) {
            (_, _, true) => "the clusters no wave selects".to_string(),
            (None, None, _) => "every cluster left".to_string(),
            (None, Some(n), _) => format!("the first {n} clusters left"),
            (Some(s), None, _) => s.to_string(),
            (Some(s), Some(n), _) => format!("the first {n} of {s}"),
        }
    }
}

impl Rollout {
    /// Whether changes of `profile` are this rollout's.
    pub fn governs(&self, profile: &str) -> bool {
        self.profiles.is_empty() || self.profiles.iter().any(|p| p == profile)
    }

    pub fn wave(&self, name: &str) -> Option<&Wave> {
        self.waves.iter().find(|w| w.name == name)
    }

    /// The clusters of each wave (by index), each list sorted by name. `clusters` are the ones a
    /// change reaches, with their tags; `kept` names the wave a cluster already has (a running
    /// rollout), which it keeps while that wave still selects it, so clusters do not change
    /// waves as others join.
    pub fn assign<'c>(
        &self,
        clusters: &BTreeMap<&'c str, &[String]>,
        kept: &BTreeMap<&str, &str>,
    ) -> Vec<Vec<&'c str>> {
        let mut waves: Vec<Vec<&str>> = vec![Vec::new(); self.waves.len()];
        let selects = |w: &Wave, name: &str, tags: &[String]| w.selector.as_ref().is_none_or(|s| s.matches(name, tags));
        let mut left = Vec::new();
        for (&name, &tags) in clusters {
            let keeps = kept.get(name).and_then(|wave| self.waves.iter().position(|w| &w.name == wave));
            match keeps {
                Some(i) if selects(&self.waves[i], name, tags) => waves[i].push(name),
                _ => left.push((name, tags)),
            }
        }
        for (name, tags) in left {
            let room = |i: usize, w: &Wave| w.max_clusters.is_none_or(|max| waves[i].len() < max);
            if let Some(i) = self.waves.iter().enumerate().position(|(i, w)| selects(w, name, tags) && room(i, w)) {
                waves[i].push(name);
            }
        }
        for wave in &mut waves {
            wave.sort_unstable();
        }
        waves
    }
}

/// Builders of policies for tests, here and in the crates above (feature `testing`).
#[cfg(any(test, feature = "testing"))]
pub mod testing {
    use std::time::Duration;

    use super::{Approval, OnFailure, Parallel, Rollout, Selector, Wave};

    /// A wave for tests: `selector` as `tag,tag` (empty: the catch-all).
    pub fn wave(name: &str, tags: &str) -> Wave {
        Wave {
            name: name.into(),
            selector: (!tags.is_empty())
                .then(|| Selector { tags: tags.split(',').map(str::to_string).collect(), clusters: vec![] }),
            max_clusters: None,
            max_parallel: Parallel::All,
            bake: Duration::ZERO,
            approval: Approval::Auto,
            implicit: false,
            line: 1,
        }
    }

    pub fn rollout(waves: Vec<Wave>) -> Rollout {
        Rollout {
            name: "default".into(),
            file: "rollouts/default.yaml".into(),
            profiles: vec![],
            waves,
            on_failure: OnFailure::Halt,
            failure_threshold: 1,
            fail_on_drift: false,
            line: 0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::testing::{rollout, wave};
    use super::*;

    fn tagged(clusters: &[(&'static str, &[&str])]) -> Vec<(&'static str, Vec<String>)> {
        clusters.iter().map(|(n, tags)| (*n, tags.iter().map(|t| t.to_string()).collect())).collect()
    }

    fn assign(r: &Rollout, fleet: &[(&'static str, Vec<String>)], kept: &[(&str, &str)]) -> Vec<Vec<&'static str>> {
        let clusters: BTreeMap<&str, &[String]> = fleet.iter().map(|(n, t)| (*n, t.as_slice())).collect();
        let kept: BTreeMap<&str, &str> = kept.iter().copied().collect();
        r.assign(&clusters, &kept)
    }

    #[test]
    fn a_cluster_goes_to_the_first_wave_that_selects_it_and_max_clusters_lets_the_rest_fall_through() {
        let mut canary = wave("canary", "env:prod");
        canary.max_clusters = Some(2);
        let r = rollout(vec![wave("staging", "env:staging"), canary, wave("eu", "region:eu"), wave("rest", "")]);
        let fleet = tagged(&[
            ("p-d", &["env:prod", "region:eu"]),
            ("p-a", &["env:prod"]),
            ("s-1", &["env:staging", "env:prod"]),
            ("p-c", &["env:prod", "region:eu"]),
            ("p-b", &["env:prod"]),
            ("lab", &["env:lab"]),
        ]);
        assert_eq!(assign(&r, &fleet, &[]), vec![vec!["s-1"], vec!["p-a", "p-b"], vec!["p-c", "p-d"], vec!["lab"]]);
        // A cluster that joins keeps nobody out of the wave they already have.
        assert_eq!(
            assign(&r, &fleet, &[("p-c", "canary"), ("p-d", "canary")]),
            vec![vec!["s-1"], vec!["p-c", "p-d"], vec![], vec!["lab", "p-a", "p-b"]]
        );
    }

    #[test]
    fn percentages_round_up_to_at_least_one_cluster() {
        assert_eq!(Parallel::Percent(25).of(10), 3);
        assert_eq!(Parallel::Percent(10).of(3), 1);
        assert_eq!(Parallel::Percent(100).of(7), 7);
        assert_eq!(Parallel::All.of(0), 1);
        assert_eq!(Parallel::Count(2).of(9), 2);
        assert_eq!(show_duration(Duration::from_secs(600)), "10m");
        assert_eq!(show_duration(Duration::from_secs(90)), "90s");
        assert_eq!(show_duration(Duration::ZERO), "none");
    }

    #[test]
    fn selectors_need_every_tag_and_one_of_the_names() {
        let s = Selector { tags: vec!["env:prod".into(), "region".into()], clusters: vec![] };
        assert!(s.matches("a", &["env:prod".into(), "region:eu".into()]));
        assert!(!s.matches("a", &["env:prod".into()]));
        let named = Selector { tags: vec![], clusters: vec!["a".into()] };
        assert!(named.matches("a", &[]) && !named.matches("b", &[]));
    }
}
