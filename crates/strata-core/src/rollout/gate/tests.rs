use std::time::Duration;

use super::*;
use crate::rollout::policy::testing::{rollout, wave};
use crate::rollout::policy::{OnFailure, Parallel, Rollout};

const HEAD: &str = "1111111111111111111111111111111111111111";
const NEXT: &str = "2222222222222222222222222222222222222222";

/// A fleet for the gate: each cluster with tags, what it runs (digest `old`) and the change
/// at the head (digest `new`), healthy.
struct Fleet {
    clusters: Vec<Entry>,
    /// Clusters whose change waits for their own approval once released.
    awaiting: Vec<String>,
}

/// A cluster: name, tags, change at the head, what it runs, when drift was found.
type Entry = (String, Vec<String>, Option<Change>, Option<Running>, Option<Millis>);

fn running(digest: &str, health: Health) -> Running {
    Running {
        before: Before {
            profile_revision: "r0".into(),
            cluster_revision: "r0".into(),
            digest: digest.into(),
            what: format!("web@{digest}"),
        },
        health,
        applied_at: None,
    }
}

impl Fleet {
    fn of(clusters: &[(&str, &str)]) -> Fleet {
        Fleet {
            clusters: clusters
                .iter()
                .map(|(name, tags)| {
                    let tags = tags.split(',').filter(|t| !t.is_empty()).map(str::to_string).collect();
                    (name.to_string(), tags, Some(change("new")), Some(running("old", Health::Healthy)), None)
                })
                .collect(),
            awaiting: Vec::new(),
        }
    }

    fn get(&mut self, name: &str) -> &mut Entry {
        self.clusters.iter_mut().find(|c| c.0 == name).unwrap()
    }

    /// The cluster now runs `digest` with `health`; it has no change left when that is its target.
    fn runs(&mut self, name: &str, digest: &str, health: Health) -> &mut Fleet {
        let c = self.get(name);
        c.3 = Some(running(digest, health));
        if c.2.as_ref().is_some_and(|ch| ch.target == digest) {
            c.2 = None;
        }
        self
    }

    /// As [`Fleet::runs`], the apply having ended at `at`.
    fn runs_at(&mut self, name: &str, digest: &str, health: Health, at: Millis) -> &mut Fleet {
        self.runs(name, digest, health);
        self.get(name).3.as_mut().unwrap().applied_at = Some(at);
        self
    }

    /// A newer commit: every cluster's change now brings `digest`.
    fn change_to(&mut self, digest: &str) {
        for c in &mut self.clusters {
            let runs = c.3.as_ref().map(|r| r.before.digest.clone());
            c.2 = (runs.as_deref() != Some(digest)).then(|| change(digest));
        }
    }

    fn members(&self) -> Vec<Member<'_>> {
        self.clusters
            .iter()
            .map(|(name, tags, change, running, drift)| Member {
                name,
                tags,
                change: change.clone(),
                running: running.clone(),
                drift_at: *drift,
                awaits_approval: self.awaiting.contains(name),
            })
            .collect()
    }
}

fn change(digest: &str) -> Change {
    Change { cause: Cause::NewVersion, to: format!("web@{digest}"), target: digest.into() }
}

/// Gates and keeps the stored progress, as the daemon does.
struct Run {
    rollout: Rollout,
    stored: Option<Progress>,
    last: Gated,
}

impl Run {
    fn new(rollout: Rollout) -> Run {
        Run { rollout, stored: None, last: Gated::default() }
    }

    fn gate(&mut self, fleet: &Fleet, head: &str, now: Millis) -> &Gated {
        let members = fleet.members();
        self.last = gate(&self.rollout, head, &members, self.stored.as_ref(), now);
        if let Some(p) = &self.last.progress {
            self.stored = Some(p.clone());
        }
        &self.last
    }

    fn released(&self) -> Vec<&str> {
        self.last.verdicts.iter().filter(|(_, v)| **v == Verdict::Release).map(|(n, _)| n.as_str()).collect()
    }

    fn state(&self, cluster: &str) -> ClusterRun {
        self.stored.as_ref().unwrap().clusters[cluster].state
    }

    fn act(&mut self, action: Action, now: Millis) -> Result<String, Refused> {
        let p = self.stored.as_mut().unwrap();
        act(p, &self.rollout, &action, "alice", now)
    }
}

fn three_waves() -> Rollout {
    let mut staging = wave("staging", "env:staging");
    staging.bake = Duration::from_secs(60);
    let mut canary = wave("canary", "env:prod");
    canary.max_clusters = Some(1);
    let mut rest = wave("rest", "");
    rest.max_parallel = Parallel::Count(2);
    rollout(vec![staging, canary, rest])
}

fn six() -> Fleet {
    Fleet::of(&[
        ("stage", "env:staging"),
        ("prod-a", "env:prod"),
        ("prod-b", "env:prod"),
        ("prod-c", "env:prod"),
        ("prod-d", "env:prod"),
        ("lab", "env:lab"),
    ])
}

#[test]
fn waves_go_in_order_each_after_the_bake_of_the_one_before() {
    let mut run = Run::new(three_waves());
    let mut fleet = six();
    let g = run.gate(&fleet, HEAD, 0).clone();
    assert_eq!(run.released(), ["stage"]);
    let p = run.stored.as_ref().unwrap();
    assert_eq!(p.next, "wave 1 of 3 (staging): 0 of 1 clusters updated");
    assert_eq!(g.status.as_ref().unwrap().state, State::Pending);
    assert_eq!(
        run.last.verdicts["prod-a"],
        Verdict::Hold { wave: "canary".into(), why: "waits for wave staging (0 of 1 updated)".into() }
    );

    // Applied but not yet healthy: nothing moves.
    fleet.runs("stage", "new", Health::Unknown);
    run.gate(&fleet, HEAD, 1_000);
    assert_eq!(run.released(), ["stage"]);
    // Healthy: staging is done and bakes a minute; the gate asks to be woken then.
    fleet.runs("stage", "new", Health::Healthy);
    run.gate(&fleet, HEAD, 2_000);
    assert_eq!(run.state("stage"), ClusterRun::Updated);
    assert_eq!(run.last.wake_at, Some(62_000));
    assert_eq!(run.released(), ["stage"]);
    assert!(run.stored.as_ref().unwrap().next.starts_with("wave 1 of 3 (staging) bakes until 1970-01-01T00:01:02Z"));
    run.gate(&fleet, HEAD, 61_999);
    assert_eq!(run.released(), ["stage"], "still baking");

    // Baked: the canary (the first prod cluster by name only) goes.
    run.gate(&fleet, HEAD, 62_000);
    assert_eq!(run.released(), ["prod-a", "stage"]);
    fleet.runs("prod-a", "new", Health::Healthy);
    run.gate(&fleet, HEAD, 63_000);
    // The rest, two at a time, by name.
    assert_eq!(run.released(), ["lab", "prod-a", "prod-b", "stage"]);
    fleet.runs("lab", "new", Health::Healthy);
    run.gate(&fleet, HEAD, 64_000);
    assert_eq!(run.released(), ["lab", "prod-a", "prod-b", "prod-c", "stage"]);
    for c in ["prod-b", "prod-c"] {
        fleet.runs(c, "new", Health::Healthy);
    }
    run.gate(&fleet, HEAD, 65_000);
    fleet.runs("prod-d", "new", Health::Healthy);
    let g = run.gate(&fleet, HEAD, 66_000).clone();
    let status = g.status.clone().unwrap();
    assert_eq!((status.state, status.description.as_str()), (State::Success, "rolled out to 6 clusters in 3 waves"));
    assert_eq!(run.stored.as_ref().unwrap().state, RunState::Complete);
    // Nothing left to roll out: the next evaluation stores nothing and holds nothing.
    let g = run.gate(&fleet, HEAD, 67_000).clone();
    assert!(g.progress.is_none() && g.verdicts.values().all(|v| *v == Verdict::Release));
}

#[test]
fn a_released_wave_that_waits_for_clusters_own_approvals_says_which_in_its_status() {
    let mut run = Run::new(rollout(vec![wave("staging", "env:staging"), wave("prod", "env:prod"), wave("rest", "")]));
    let mut fleet = six();
    fleet.awaiting = ["prod-a", "prod-b", "prod-c", "prod-d", "stage"].map(String::from).to_vec();
    let g = run.gate(&fleet, HEAD, 0).clone();
    assert_eq!(
        g.status.unwrap().description,
        "wave 1 of 3 (staging): 0 of 1 clusters updated; waits for approval of 1 cluster: stage \
         (strata approve --rollout default --wave staging)"
    );
    // Approved and applied: the next wave's four wait, and the status names three of them.
    fleet.awaiting.retain(|c| c != "stage");
    fleet.runs("stage", "new", Health::Healthy);
    let g = run.gate(&fleet, HEAD, 1_000).clone();
    assert_eq!(run.released(), ["prod-a", "prod-b", "prod-c", "prod-d", "stage"]);
    assert_eq!(
        g.status.unwrap().description,
        "wave 2 of 3 (prod): 0 of 4 clusters updated; waits for approval of 4 clusters: prod-a, prod-b, prod-c, … \
         (strata approve --rollout default --wave prod)"
    );
    // Held clusters are not counted: they wait for their wave, not for an approval.
    assert!(!run.stored.as_ref().unwrap().next.contains("lab"));
    assert_eq!(some_names(&["a", "b"], NAMES_SHOWN), "a, b");
}

#[test]
fn max_parallel_counts_the_clusters_in_flight_and_is_never_exceeded() {
    let mut r = rollout(vec![wave("all", "")]);
    r.waves[0].max_parallel = Parallel::Percent(40);
    let mut run = Run::new(r);
    let mut fleet = six();
    let mut now = 0;
    let mut most = 0;
    while run.stored.as_ref().is_none_or(|p| p.state != RunState::Complete) {
        run.gate(&fleet, HEAD, now);
        let updating: Vec<String> = run
            .stored
            .as_ref()
            .unwrap()
            .clusters
            .iter()
            .filter(|(_, c)| c.state == ClusterRun::Updating)
            .map(|(n, _)| n.clone())
            .collect();
        most = most.max(updating.len());
        // One of those in flight finishes per round.
        if let Some(first) = updating.first() {
            fleet.runs(first, "new", Health::Healthy);
        }
        now += 1000;
        assert!(now < 100_000, "the rollout finishes");
    }
    assert_eq!(most, 3, "40% of 6 clusters, rounded up");
}

#[test]
fn a_manual_wave_waits_for_promotion_and_a_promotion_also_ends_a_bake() {
    let mut r = three_waves();
    r.waves[1].approval = Approval::Manual;
    let mut run = Run::new(r);
    let mut fleet = six();
    run.gate(&fleet, HEAD, 0);
    assert_eq!(
        run.act(Action::Promote { wave: None, revision: None }, 1).unwrap_err().0,
        "wave staging is updating (0 of 1 clusters): nothing waits for promotion"
    );
    fleet.runs("stage", "new", Health::Healthy);
    run.gate(&fleet, HEAD, 1_000);
    // Baking, and canary is manual: one promotion ends the bake and approves canary.
    assert_eq!(
        run.act(Action::Promote { wave: Some("rest".into()), revision: None }, 2_000).unwrap_err().0,
        "wave rest is not what waits for promotion: wave canary is what waits"
    );
    run.act(Action::Promote { wave: Some("canary".into()), revision: Some("1111111".into()) }, 2_000).unwrap();
    run.gate(&fleet, HEAD, 2_000);
    assert_eq!(run.released(), ["prod-a", "stage"]);

    // Without a bake before it, a manual wave waits for its promotion alone.
    let mut r = three_waves();
    r.waves[0].bake = Duration::ZERO;
    r.waves[1].approval = Approval::Manual;
    let mut run = Run::new(r);
    let mut fleet = six();
    run.gate(&fleet, HEAD, 0);
    fleet.runs("stage", "new", Health::Healthy);
    run.gate(&fleet, HEAD, 1_000);
    assert_eq!(run.released(), ["stage"]);
    assert_eq!(
        run.last.verdicts["prod-a"],
        Verdict::Hold {
            wave: "canary".into(),
            why: "wave canary waits for promotion: strata rollout promote default".into()
        }
    );
    assert_eq!(
        run.last.status.as_ref().unwrap().description,
        "wave 2 of 3 (canary) waits for promotion: strata rollout promote default"
    );
    assert_eq!(run.act(Action::Promote { wave: None, revision: None }, 5_000).unwrap(), "wave canary starts");
    run.gate(&fleet, HEAD, 5_000);
    assert_eq!(run.released(), ["prod-a", "stage"]);
    assert_eq!(run.stored.as_ref().unwrap().waves[1].promoted.as_ref().unwrap().by, "alice");
}

#[test]
fn a_failure_halts_later_waves_and_lets_the_running_wave_finish() {
    let mut r = three_waves();
    r.waves[0].bake = Duration::ZERO;
    r.waves[1].max_clusters = None;
    r.waves[1].max_parallel = Parallel::Count(2);
    let mut run = Run::new(r);
    let mut fleet = six();
    run.gate(&fleet, HEAD, 0);
    fleet.runs("stage", "new", Health::Healthy);
    run.gate(&fleet, HEAD, 1_000);
    assert_eq!(run.released(), ["prod-a", "prod-b", "stage"]);
    let unhealthy = Health::Unhealthy("Deployment/web/ui: rollout exceeded its progress deadline".into());
    fleet.runs_at("prod-a", "new", unhealthy, 2_000);
    let g = run.gate(&fleet, HEAD, 2_000).clone();
    assert_eq!(run.state("prod-a"), ClusterRun::Failed);
    let status = g.status.unwrap();
    assert_eq!(status.state, State::Failure);
    assert_eq!(
        status.description,
        "halted in wave 2 of 3 (canary): prod-a unhealthy: Deployment/web/ui: rollout exceeded its progress deadline"
    );
    // prod-b was in flight: it goes on; prod-c and prod-d (same wave, not started) and the lab stop.
    assert_eq!(run.released(), ["prod-a", "prod-b", "stage"]);
    fleet.runs("prod-b", "new", Health::Healthy);
    run.gate(&fleet, HEAD, 3_000);
    assert_eq!(run.state("prod-b"), ClusterRun::Updated);
    assert_eq!(run.released(), ["prod-a", "prod-b", "stage"]);
    // The wave it halted in shows so, not as a wave done and baking.
    let p = run.stored.clone().unwrap();
    assert_eq!(wave_states(&p, &run.rollout, 3_000)[1..], [WaveState::Halted, WaveState::Held]);
    assert!(
        matches!(&run.last.verdicts["lab"], Verdict::Hold { why, .. } if why.starts_with("the rollout halted: prod-a unhealthy"))
    );
    assert_eq!(
        run.act(Action::Promote { wave: None, revision: None }, 4_000).unwrap_err().0.split(':').next(),
        Some("the rollout halted")
    );

    // Resumed: failures forgotten, prod-a is in flight again (its worker retries), and the
    // unhealthy result from before does not count again.
    run.act(Action::Resume, 5_000).unwrap();
    run.gate(&fleet, HEAD, 5_000);
    assert_eq!(run.state("prod-a"), ClusterRun::Updating);
    assert_eq!(run.released(), ["prod-a", "prod-b", "prod-c", "stage"]);
}

#[test]
fn with_on_failure_rollback_every_cluster_touched_returns_to_what_it_ran() {
    let mut r = three_waves();
    r.waves[0].bake = Duration::ZERO;
    r.on_failure = OnFailure::Rollback;
    let mut run = Run::new(r);
    let mut fleet = six();
    run.gate(&fleet, HEAD, 0);
    fleet.runs("stage", "new", Health::Healthy);
    run.gate(&fleet, HEAD, 1_000);
    fleet.runs("prod-a", "new", Health::Unhealthy("not ready".into()));
    run.gate(&fleet, HEAD, 2_000);
    let back = run.last.verdicts.iter().filter(|(_, v)| matches!(v, Verdict::RollBack(_))).map(|(n, _)| n.as_str());
    assert_eq!(back.collect::<Vec<_>>(), ["prod-a", "stage"]);
    let Verdict::RollBack(before) = &run.last.verdicts["stage"] else { panic!() };
    assert_eq!(before.digest, "old");
    assert!(run.last.status.as_ref().unwrap().description.starts_with("halted in wave 2 of 3 (canary), rolling back"));
    fleet.runs("stage", "old", Health::Healthy);
    run.gate(&fleet, HEAD, 3_000);
    assert_eq!(run.state("stage"), ClusterRun::RolledBack);
    assert_eq!(run.state("prod-a"), ClusterRun::RollingBack);
}

#[test]
fn a_newer_commit_supersedes_clusters_not_yet_updated_get_it_and_done_waves_go_again_only_if_it_changed_for_them() {
    let mut r = three_waves();
    r.waves[1].approval = Approval::Manual;
    let mut run = Run::new(r);
    let mut fleet = six();
    run.gate(&fleet, HEAD, 0);
    fleet.runs("stage", "new", Health::Healthy);
    run.gate(&fleet, HEAD, 1_000);
    run.act(Action::Promote { wave: None, revision: None }, 1_500).unwrap();
    run.gate(&fleet, HEAD, 2_000);
    assert_eq!(run.released(), ["prod-a", "stage"]);

    // A commit that changes nothing for these clusters: the same run goes on.
    let g = run.gate(&fleet, NEXT, 2_500).clone();
    assert!(g.superseded.is_none());
    assert_eq!(run.stored.as_ref().unwrap().revision, HEAD);

    // A newer content: staging runs the old target now, so it goes again first; the rest
    // will get the newest content straight away; canary needs a new promotion.
    fleet.change_to("newer");
    let g = run.gate(&fleet, NEXT, 3_000).clone();
    let superseded = g.superseded.unwrap();
    assert_eq!((superseded.revision.as_str(), superseded.state), (HEAD, State::Error));
    assert!(superseded.description.starts_with("superseded by 2222222 before it reached every wave"));
    let p = run.stored.as_ref().unwrap();
    assert_eq!(p.revision, NEXT);
    assert!(p.clusters.values().all(|c| c.target == "newer"));
    assert_eq!(p.clusters["stage"].before.as_ref().unwrap().digest, "old", "what it ran before the rollout");
    assert_eq!(run.released(), ["stage"]);
    assert!(run.stored.as_ref().unwrap().waves[1].promoted.is_none());

    // A superseding commit that changes only later waves leaves done waves done.
    let mut r = three_waves();
    r.waves[0].bake = Duration::ZERO;
    let mut run = Run::new(r);
    let mut fleet = six();
    run.gate(&fleet, HEAD, 0);
    fleet.runs("stage", "new", Health::Healthy);
    run.gate(&fleet, HEAD, 1_000);
    fleet.get("lab").2 = Some(change("lab-only"));
    run.gate(&fleet, NEXT, 2_000);
    assert_eq!(run.state("stage"), ClusterRun::Updated);
    assert_eq!(run.released(), ["prod-a", "stage"]);
}

#[test]
fn pause_abort_and_drift_as_failure() {
    let mut r = three_waves();
    r.waves[0].bake = Duration::ZERO;
    r.fail_on_drift = true;
    let mut run = Run::new(r);
    let mut fleet = six();
    run.gate(&fleet, HEAD, 0);
    run.act(Action::Pause, 100).unwrap();
    assert!(run.act(Action::Pause, 100).is_err());
    fleet.runs("stage", "new", Health::Healthy);
    run.gate(&fleet, HEAD, 1_000);
    assert_eq!(run.released(), ["stage"], "paused: canary does not start");
    assert_eq!(run.stored.as_ref().unwrap().state, RunState::Paused);
    run.act(Action::Resume, 1_500).unwrap();
    run.gate(&fleet, HEAD, 2_000);
    assert_eq!(run.released(), ["prod-a", "stage"]);

    // Drift found on staging after its update: a failure.
    fleet.get("stage").4 = Some(2_500);
    run.gate(&fleet, HEAD, 3_000);
    assert_eq!(run.state("stage"), ClusterRun::Failed);
    assert_eq!(run.stored.as_ref().unwrap().halt.as_ref().unwrap().cluster, "stage");
    run.act(Action::Abort, 4_000).unwrap();
    run.gate(&fleet, HEAD, 4_000);
    assert_eq!(run.stored.as_ref().unwrap().state, RunState::Aborted);
    assert!(matches!(run.last.verdicts["stage"], Verdict::RollBack(_)));
    assert!(run.act(Action::Resume, 5_000).unwrap_err().0.contains("was aborted by alice"));
    // An abort stays until the content moves on.
    run.gate(&fleet, NEXT, 6_000);
    assert_eq!(run.stored.as_ref().unwrap().state, RunState::Aborted);
}
