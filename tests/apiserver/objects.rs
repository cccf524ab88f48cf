//! What kube-apiserver and the controllers do to an object besides storing it: defaults for
//! the kinds the tests use, kind-specific normalisation and validation (Leases), and a
//! simulated controller manager that writes workload status (rolled out, or on request not).

use serde_json::{Value, json};

use super::schema::Kind;
use super::store::ApiError;

/// How the simulated controller treats a workload.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Rollout {
    /// Rolled out at once (the default).
    Ready,
    /// Never becomes available.
    Stuck,
    /// Reports ProgressDeadlineExceeded.
    Failed,
}

fn set_default(obj: &mut Value, path: &[&str], value: Value) {
    let mut node = obj;
    for (i, k) in path.iter().enumerate() {
        if !node.is_object() {
            return;
        }
        let last = i + 1 == path.len();
        let map = node.as_object_mut().unwrap();
        if last {
            map.entry(k.to_string()).or_insert(value);
            return;
        }
        node = map.entry(k.to_string()).or_insert_with(|| json!({}));
    }
}

fn default_pod_spec(spec: &mut Value) {
    set_default(spec, &["restartPolicy"], json!("Always"));
    set_default(spec, &["dnsPolicy"], json!("ClusterFirst"));
    set_default(spec, &["schedulerName"], json!("default-scheduler"));
    set_default(spec, &["terminationGracePeriodSeconds"], json!(30));
    set_default(spec, &["securityContext"], json!({}));
    for c in spec["containers"].as_array_mut().into_iter().flatten() {
        let latest = c["image"].as_str().is_some_and(|i| i.ends_with(":latest") || !i.contains(':'));
        set_default(c, &["imagePullPolicy"], json!(if latest { "Always" } else { "IfNotPresent" }));
        set_default(c, &["terminationMessagePath"], json!("/dev/termination-log"));
        set_default(c, &["terminationMessagePolicy"], json!("File"));
        set_default(c, &["resources"], json!({}));
        for p in c["ports"].as_array_mut().into_iter().flatten() {
            set_default(p, &["protocol"], json!("TCP"));
        }
    }
}

/// What kube-apiserver's defaulting adds, for the kinds the tests use.
pub fn default(kind: &str, obj: &mut Value) {
    match kind {
        "Deployment" => {
            set_default(obj, &["spec", "replicas"], json!(1));
            set_default(obj, &["spec", "revisionHistoryLimit"], json!(10));
            set_default(obj, &["spec", "progressDeadlineSeconds"], json!(600));
            set_default(
                obj,
                &["spec", "strategy"],
                json!({"type": "RollingUpdate", "rollingUpdate": {"maxSurge": "25%", "maxUnavailable": "25%"}}),
            );
            if let Some(spec) = obj.pointer_mut("/spec/template/spec") {
                default_pod_spec(spec);
            }
        }
        "DaemonSet" | "StatefulSet" => {
            set_default(obj, &["spec", "revisionHistoryLimit"], json!(10));
            if let Some(spec) = obj.pointer_mut("/spec/template/spec") {
                default_pod_spec(spec);
            }
        }
        "Service" => {
            set_default(obj, &["spec", "type"], json!("ClusterIP"));
            set_default(obj, &["spec", "sessionAffinity"], json!("None"));
            set_default(obj, &["spec", "ipFamilies"], json!(["IPv4"]));
            set_default(obj, &["spec", "ipFamilyPolicy"], json!("SingleStack"));
            set_default(obj, &["spec", "internalTrafficPolicy"], json!("Cluster"));
            let name = obj["metadata"]["name"].as_str().unwrap_or("").len() as u64;
            set_default(obj, &["spec", "clusterIP"], json!(format!("10.96.{}.{}", name % 250, 10 + name % 200)));
            let ip = obj["spec"]["clusterIP"].clone();
            set_default(obj, &["spec", "clusterIPs"], json!([ip]));
            let lb = obj["spec"]["type"] == "LoadBalancer";
            for (i, p) in obj["spec"]["ports"].as_array_mut().into_iter().flatten().enumerate() {
                set_default(p, &["protocol"], json!("TCP"));
                let port = p["port"].clone();
                set_default(p, &["targetPort"], port);
                if lb {
                    set_default(p, &["nodePort"], json!(30000 + i as u64));
                }
            }
            if lb {
                set_default(obj, &["spec", "externalTrafficPolicy"], json!("Cluster"));
                set_default(obj, &["spec", "allocateLoadBalancerNodePorts"], json!(true));
            }
        }
        "Namespace" => {
            let name = obj["metadata"]["name"].clone();
            set_default(obj, &["metadata", "labels", "kubernetes.io/metadata.name"], name);
            set_default(obj, &["spec", "finalizers"], json!(["kubernetes"]));
            obj["status"] = json!({"phase": "Active"});
        }
        "Secret" => {
            // As the API server stores it: `stringData` written into `data`, base64-encoded.
            use base64::Engine as _;
            if let Some(Value::Object(plain)) = obj.as_object_mut().and_then(|o| o.remove("stringData")) {
                for (key, value) in plain {
                    let text = value.as_str().map(str::to_string).unwrap_or_else(|| value.to_string());
                    if !obj["data"].is_object() {
                        obj["data"] = serde_json::json!({});
                    }
                    obj["data"][key] = serde_json::json!(base64::engine::general_purpose::STANDARD.encode(text));
                }
            }
        }
        "ServiceAccount" | "ConfigMap" => {}
        _ => {}
    }
}

/// What a ConfigMap or Secret holds at most: keys and values (decoded) together, as
/// kube-apiserver's validation counts them (`MaxSecretSize`, 1 MiB).
pub const MAX_DATA_BYTES: usize = 1024 * 1024;

/// Validation of built-in kinds beyond their schema: a ConfigMap's or Secret's size.
pub fn validate(kind: &str, obj: &Value) -> Vec<String> {
    use base64::Engine as _;
    if !matches!(kind, "ConfigMap" | "Secret") {
        return Vec::new();
    }
    let size = |field: &str, encoded: bool| -> usize {
        obj[field].as_object().map_or(0, |data| {
            data.iter()
                .map(|(key, value)| {
                    let text = value.as_str().unwrap_or_default();
                    let len = if encoded {
                        base64::engine::general_purpose::STANDARD.decode(text).map_or(text.len(), |bytes| bytes.len())
                    } else {
                        text.len()
                    };
                    key.len() + len
                })
                .sum()
        })
    };
    let total = match kind {
        "Secret" => size("data", true),
        _ => size("data", false) + size("binaryData", true),
    };
    if total > MAX_DATA_BYTES {
        return vec![format!("[]: Too long: may not be more than {MAX_DATA_BYTES} bytes")];
    }
    Vec::new()
}

/// The controllers: status as a rolled-out (or stuck) workload would have it.
pub fn simulate_controller(kind: &str, obj: &mut Value, rollout: Rollout) {
    let generation = obj["metadata"]["generation"].clone();
    match kind {
        "Deployment" => {
            let replicas = obj["spec"]["replicas"].as_i64().unwrap_or(1);
            obj["status"] = match rollout {
                Rollout::Ready => json!({
                    "observedGeneration": generation, "replicas": replicas, "updatedReplicas": replicas,
                    "readyReplicas": replicas, "availableReplicas": replicas,
                    "conditions": [
                        {"type": "Available", "status": "True", "reason": "MinimumReplicasAvailable"},
                        {"type": "Progressing", "status": "True", "reason": "NewReplicaSetAvailable"}
                    ]
                }),
                Rollout::Stuck => json!({
                    "observedGeneration": generation, "replicas": replicas, "updatedReplicas": replicas,
                    "readyReplicas": 0, "availableReplicas": 0, "unavailableReplicas": replicas,
                    "conditions": [{"type": "Progressing", "status": "True", "reason": "ReplicaSetUpdated"}]
                }),
                Rollout::Failed => json!({
                    "observedGeneration": generation, "replicas": replicas, "updatedReplicas": replicas,
                    "readyReplicas": 0, "availableReplicas": 0, "unavailableReplicas": replicas,
                    "conditions": [{"type": "Progressing", "status": "False", "reason": "ProgressDeadlineExceeded",
                                    "message": "ReplicaSet has timed out progressing."}]
                }),
            };
        }
        "DaemonSet" => {
            obj["status"] = json!({"observedGeneration": generation, "desiredNumberScheduled": 1, "currentNumberScheduled": 1,
                                   "updatedNumberScheduled": 1, "numberAvailable": 1, "numberReady": 1});
        }
        "StatefulSet" => {
            let replicas = obj["spec"]["replicas"].as_i64().unwrap_or(1);
            obj["status"] = json!({"observedGeneration": generation, "replicas": replicas, "readyReplicas": replicas,
                                   "updatedReplicas": replicas, "currentRevision": "r1", "updateRevision": "r1"});
        }
        "Job" => {
            obj["status"] = json!({"succeeded": 1, "conditions": [{"type": "Complete", "status": "True"}]});
        }
        "CustomResourceDefinition" => {
            obj["status"] = json!({"conditions": [{"type": "NamesAccepted", "status": "True"}, {"type": "Established", "status": "True"}],
                                   "acceptedNames": obj["spec"]["names"].clone()});
        }
        _ => {}
    }
}

/// Lease times as kube-apiserver stores them (RFC 3339, microseconds, UTC): `acquireTime` and
/// `renewTime` are MicroTimes, whatever offset or precision the client sent.
pub fn normalize(kind: &Kind, object: &mut Value) -> Result<(), ApiError> {
    if kind.kind != "Lease" || kind.is_custom() {
        return Ok(());
    }
    let name = object["metadata"]["name"].as_str().unwrap_or("").to_string();
    let cannot = |e: serde_json::Error| {
        ApiError::bad_request(format!("Lease in version \"v1\" cannot be handled as a Lease: {e}"))
    };
    for field in ["acquireTime", "renewTime"] {
        let Some(value) = object.pointer_mut(&format!("/spec/{field}")) else { continue };
        if value.is_null() {
            continue;
        }
        let time: k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime =
            serde_json::from_value(value.clone()).map_err(cannot)?;
        *value = serde_json::to_value(time).map_err(cannot)?;
    }
    let lease: k8s_openapi::api::coordination::v1::Lease = serde_json::from_value(object.clone()).map_err(cannot)?;
    // Strategy and preferredHolder belong to coordinated leader election, off by default.
    if let Some(spec) = object.get_mut("spec").and_then(Value::as_object_mut) {
        spec.remove("strategy");
        spec.remove("preferredHolder");
    }
    let spec = lease.spec.unwrap_or_default();
    let mut errors = Vec::new();
    if let Some(d) = spec.lease_duration_seconds.filter(|d| *d <= 0) {
        errors.push(format!("spec.leaseDurationSeconds: Invalid value: {d}: must be greater than 0"));
    }
    if let Some(t) = spec.lease_transitions.filter(|t| *t < 0) {
        errors.push(format!("spec.leaseTransitions: Invalid value: {t}: must be greater than or equal to 0"));
    }
    if errors.is_empty() { Ok(()) } else { Err(ApiError::invalid(kind, &name, &errors)) }
}
