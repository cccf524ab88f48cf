//! Health of a live object, read from its status: a pure function, so every rule has a plain test.
//!
//! Rolled out means what `kubectl rollout status` means: the controller has seen the latest
//! generation, and every replica is updated and available.

use serde::Serialize;
use serde_json::Value;

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "state", content = "reason", rename_all = "lowercase")]
pub enum Health {
    Ready,
    /// Still rolling out; why.
    Progressing(String),
    /// Will not become ready without a change; why.
    Failed(String),
}

/// Whether a kind has a notion of rolling out that strata waits for.
pub fn is_tracked(group: &str, kind: &str) -> bool {
    matches!(
        (group, kind),
        ("apps", "Deployment" | "StatefulSet" | "DaemonSet")
            | ("batch", "Job")
            | ("apiextensions.k8s.io", "CustomResourceDefinition")
    )
}

fn int(v: &Value) -> i64 {
    v.as_i64().unwrap_or(0)
}

fn condition<'a>(live: &'a Value, kind: &str) -> Option<&'a Value> {
    live["status"]["conditions"].as_array()?.iter().find(|c| c["type"] == kind)
}

/// `observedGeneration < generation`: the controller has not looked at the latest spec yet.
fn stale(live: &Value) -> Option<Health> {
    let generation = int(&live["metadata"]["generation"]);
    let observed = int(&live["status"]["observedGeneration"]);
    (observed < generation).then(|| {
        Health::Progressing(format!("waiting for the controller to observe generation {generation} (at {observed})"))
    })
}

pub fn assess(group: &str, kind: &str, live: &Value) -> Health {
    let status = &live["status"];
    match (group, kind) {
        ("apps", "Deployment") => {
            if let Some(c) = condition(live, "Progressing")
                && c["reason"] == "ProgressDeadlineExceeded"
            {
                return Health::Failed(format!(
                    "rollout exceeded its progress deadline: {}",
                    c["message"].as_str().unwrap_or("")
                ));
            }
            if let Some(h) = stale(live) {
                return h;
            }
            let want = live["spec"]["replicas"].as_i64().unwrap_or(1);
            let updated = int(&status["updatedReplicas"]);
            let total = int(&status["replicas"]);
            let available = int(&status["availableReplicas"]);
            if updated < want {
                Health::Progressing(format!("{updated} of {want} replicas updated"))
            } else if total > updated {
                Health::Progressing(format!("{} old replicas pending termination", total - updated))
            } else if available < updated {
                Health::Progressing(format!("{available} of {updated} updated replicas available"))
            } else {
                Health::Ready
            }
        }
        ("apps", "StatefulSet") => {
            if let Some(h) = stale(live) {
                return h;
            }
            let want = live["spec"]["replicas"].as_i64().unwrap_or(1);
            let ready = int(&status["readyReplicas"]);
            let updated = int(&status["updatedReplicas"]);
            let rolling = live["spec"]["updateStrategy"]["type"].as_str().unwrap_or("RollingUpdate") == "RollingUpdate";
            if ready < want {
                Health::Progressing(format!("{ready} of {want} replicas ready"))
            } else if rolling && (updated < want || status["updateRevision"] != status["currentRevision"]) {
                Health::Progressing(format!("{updated} of {want} replicas on the update revision"))
            } else {
                Health::Ready
            }
        }
        ("apps", "DaemonSet") => {
            if let Some(h) = stale(live) {
                return h;
            }
            let want = int(&status["desiredNumberScheduled"]);
            let updated = int(&status["updatedNumberScheduled"]);
            let available = int(&status["numberAvailable"]);
            if updated < want {
                Health::Progressing(format!("{updated} of {want} pods updated"))
            } else if available < want {
                Health::Progressing(format!("{available} of {want} pods available"))
            } else {
                Health::Ready
            }
        }
        ("batch", "Job") => {
            if condition(live, "Failed").is_some_and(|c| c["status"] == "True") {
                let c = condition(live, "Failed").expect("checked");
                Health::Failed(format!("job failed: {}", c["message"].as_str().or(c["reason"].as_str()).unwrap_or("")))
            } else if condition(live, "Complete").is_some_and(|c| c["status"] == "True") {
                Health::Ready
            } else {
                Health::Progressing(format!("{} pods succeeded, job not complete", int(&status["succeeded"])))
            }
        }
        ("apiextensions.k8s.io", "CustomResourceDefinition") => {
            if condition(live, "Established").is_some_and(|c| c["status"] == "True") {
                Health::Ready
            } else {
                Health::Progressing("not yet established".into())
            }
        }
        _ => Health::Ready,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn deployment(generation: i64, status: Value) -> Value {
        json!({"metadata": {"generation": generation}, "spec": {"replicas": 3}, "status": status})
    }

    #[test]
    fn deployments_are_ready_when_every_replica_is_updated_and_available() {
        let ready = deployment(
            2,
            json!({"observedGeneration": 2, "replicas": 3, "updatedReplicas": 3, "availableReplicas": 3}),
        );
        assert_eq!(assess("apps", "Deployment", &ready), Health::Ready);
        let stale = deployment(
            3,
            json!({"observedGeneration": 2, "replicas": 3, "updatedReplicas": 3, "availableReplicas": 3}),
        );
        assert!(matches!(assess("apps", "Deployment", &stale), Health::Progressing(r) if r.contains("generation 3")));
        let rolling = deployment(
            2,
            json!({"observedGeneration": 2, "replicas": 4, "updatedReplicas": 3, "availableReplicas": 3}),
        );
        assert_eq!(
            assess("apps", "Deployment", &rolling),
            Health::Progressing("1 old replicas pending termination".into())
        );
        let unavailable = deployment(
            2,
            json!({"observedGeneration": 2, "replicas": 3, "updatedReplicas": 3, "availableReplicas": 1}),
        );
        assert_eq!(
            assess("apps", "Deployment", &unavailable),
            Health::Progressing("1 of 3 updated replicas available".into())
        );
        let stuck = deployment(
            2,
            json!({"observedGeneration": 2, "conditions": [{"type": "Progressing", "status": "False", "reason": "ProgressDeadlineExceeded", "message": "ReplicaSet \"ui-1\" has timed out progressing."}]}),
        );
        assert!(matches!(assess("apps", "Deployment", &stuck), Health::Failed(r) if r.contains("timed out")));
    }

    #[test]
    fn jobs_and_crds_follow_their_conditions() {
        let done = json!({"status": {"succeeded": 1, "conditions": [{"type": "Complete", "status": "True"}]}});
        assert_eq!(assess("batch", "Job", &done), Health::Ready);
        let failed =
            json!({"status": {"conditions": [{"type": "Failed", "status": "True", "reason": "BackoffLimitExceeded"}]}});
        assert_eq!(assess("batch", "Job", &failed), Health::Failed("job failed: BackoffLimitExceeded".into()));
        let crd = json!({"status": {"conditions": [{"type": "Established", "status": "False"}]}});
        assert!(matches!(assess("apiextensions.k8s.io", "CustomResourceDefinition", &crd), Health::Progressing(_)));
    }

    #[test]
    fn daemonsets_and_statefulsets() {
        let ds = json!({"metadata": {"generation": 1}, "status": {"observedGeneration": 1, "desiredNumberScheduled": 2, "updatedNumberScheduled": 2, "numberAvailable": 1}});
        assert_eq!(assess("apps", "DaemonSet", &ds), Health::Progressing("1 of 2 pods available".into()));
        let sts = json!({"metadata": {"generation": 1}, "spec": {"replicas": 2}, "status": {"observedGeneration": 1, "readyReplicas": 2, "updatedReplicas": 2, "currentRevision": "a", "updateRevision": "a"}});
        assert_eq!(assess("apps", "StatefulSet", &sts), Health::Ready);
    }
}
