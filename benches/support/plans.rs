//! Plans of any size without rendering anything: what `strata plan` gives for an in-place edit
//! of every profile version of a [`super::fleet::Shape::Overridden`] fleet (each version's
//! replicas go from 1 to 2), built directly. Formatting a plan is measured and tested on these
//! at 10,000 clusters, where planning the generated fleet for real takes minutes.
//!
//! As in the generated fleet: cluster `c` runs profile `c % 10` at 1.0.0, 1.1.0 or 1.2.0, pins
//! replicas in one of its layers (`c % 3`, whose Deployments then do not change), and has
//! `updates: manual` when odd (its change is a pending update). Each changed Deployment's diff
//! shows the cluster's own `strata.dev/cluster` label among its context lines. With `rollout`,
//! a policy holds every cluster: a canary wave (`env:staging`, every tenth cluster), then the rest.

#![allow(dead_code)]

use strata::model::UpdatePolicy;
use strata::plan::rollouts::{PlannedCluster, RolloutPlan, WavePlan};
use strata::plan::{Action, ChangeKind, ClusterPlan, ObjectChange, Plan};
use strata::render::object::ObjectId;
use strata::rollout::Cause;
use strata::rollout::policy::{Approval, OnFailure};

use super::fleet::{LAYERS, cluster_name};

const VERSIONS: [&str; 4] = ["1.0.0", "1.1.0", "1.2.0", "1.2.0"];

fn diff(p: usize, l: usize, app: &str, cluster: &str) -> String {
    let id = format!("Deployment/p{p:02}-l{l}/{app}");
    format!(
        "--- base/{id}\n+++ head/{id}\n@@ -10,10 +10,10 @@\n    strata.dev/cluster: {cluster}\n    strata.dev/layer: l{l}\n    strata.dev/profile: p{p:02}\n  name: {app}\n  namespace: p{p:02}-l{l}\n spec:\n-  replicas: 1\n+  replicas: 2\n   selector:\n     matchLabels:\n       app: {app}\n"
    )
}

/// The plan of an in-place edit of every profile version on `clusters` clusters.
pub fn edit_everywhere(clusters: usize, rollout: bool) -> Plan {
    let mut plans = Vec::with_capacity(clusters);
    for c in 0..clusters {
        let name = cluster_name(c);
        let p = c % 10;
        let version = VERSIONS[(c / 10) % 4];
        let pinned = c % 3;
        let mut objects = Vec::new();
        for l in (0..LAYERS).filter(|l| *l != pinned) {
            for a in 0..3 {
                let app = format!("app{l}{a}");
                objects.push(ObjectChange {
                    id: ObjectId::new("apps/v1", "Deployment", Some(&format!("p{p:02}-l{l}")), &app),
                    layer: format!("l{l}"),
                    action: Action::Changed,
                    diff: diff(p, l, &app, &name),
                });
            }
        }
        let manual = c % 2 == 1;
        let id = format!("p{p:02}@{version}");
        plans.push(ClusterPlan {
            cluster: name,
            kind: ChangeKind::InPlaceEdit,
            reasons: vec![ChangeKind::InPlaceEdit],
            from: Some(id.clone()),
            to: Some(id),
            updates: if manual { UpdatePolicy::Manual } else { UpdatePolicy::Auto },
            pending: manual,
            window: None,
            update_available: (version != "1.2.0").then(|| "1.2.0".to_string()),
            base_digest: Some(format!("sha256:{c:064x}")),
            head_digest: Some(format!("sha256:{:064x}", c + clusters)),
            objects,
        });
    }
    let rollouts = if rollout { vec![rollout_of(&plans)] } else { Vec::new() };
    Plan { base: Some("a".repeat(40)), head: Some("b".repeat(40)), clusters: plans, rollouts }
}

fn rollout_of(plans: &[ClusterPlan]) -> RolloutPlan {
    let planned = |c: &ClusterPlan| PlannedCluster {
        cluster: c.cluster.clone(),
        from: c.from.clone(),
        to: c.to.clone().unwrap_or_default(),
        cause: Cause::InPlaceEdit,
    };
    let wave = |name: &str, selects: &str, clusters: Vec<PlannedCluster>| WavePlan {
        name: name.to_string(),
        selects: selects.to_string(),
        max_parallel: "1".to_string(),
        bake: "10m".to_string(),
        approval: Approval::Auto,
        clusters,
    };
    let (canary, rest): (Vec<_>, Vec<_>) = plans.iter().partition(|c| c.cluster.ends_with('0'));
    RolloutPlan {
        rollout: "default".to_string(),
        file: "rollouts/default.yaml".to_string(),
        on_failure: OnFailure::Halt,
        failure_threshold: 1,
        waves: vec![
            wave("canary", "tags env:staging", canary.into_iter().map(planned).collect()),
            wave("rest", "every cluster left", rest.into_iter().map(planned).collect()),
        ],
    }
}
