//! Kubernetes objects as strata handles them: identity, scope, ownership stamps, apply order.

use std::cmp::Ordering;
use std::fmt;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// The field manager strata applies with (DESIGN §5).
pub const FIELD_MANAGER: &str = "strata";
pub const LABEL_MANAGED_BY: &str = "app.kubernetes.io/managed-by";
pub const LABEL_CLUSTER: &str = "strata.dev/cluster";
pub const LABEL_PROFILE: &str = "strata.dev/profile";
pub const LABEL_LAYER: &str = "strata.dev/layer";
pub const ANNOTATION_PROFILE_VERSION: &str = "strata.dev/profile-version";
/// Stamped at output time only: it changes with every commit, so it is kept out of digests and
/// plans, which compare content.
pub const ANNOTATION_REVISION: &str = "strata.dev/revision";
/// Stamped at apply time: a digest of the configuration strata applied (revision aside). With it,
/// an object whose live fields still hold that configuration is known unchanged without a
/// server round trip.
pub const ANNOTATION_APPLIED: &str = "strata.dev/applied-digest";

/// The namespace strata keeps its inventories in, in every cluster it applies to.
pub const STRATA_NAMESPACE: &str = "strata-system";
/// The label that makes a Secret in strata's namespace a cluster Secret: a target and its
/// credentials (Kubernetes mode).
pub const TARGET_LABEL: &str = "strata.dev/target";
/// strata's own API group (ClusterState).
pub const STRATA_GROUP: &str = "strata.dev";

/// An object's identity in a cluster: group, kind, namespace, name.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct ObjectId {
    pub group: String,
    pub kind: String,
    pub namespace: Option<String>,
    pub name: String,
}

impl ObjectId {
    pub fn new(api_version: &str, kind: &str, namespace: Option<&str>, name: &str) -> Self {
        ObjectId {
            group: group_of(api_version).to_string(),
            kind: kind.to_string(),
            namespace: namespace.map(str::to_string),
            name: name.to_string(),
        }
    }

    /// The inventory form of DESIGN §5: `group/kind/namespace/name`, empty parts for the core
    /// group and cluster-scoped objects (`/Namespace//kubecost`).
    pub fn inventory_key(&self) -> String {
        format!("{}/{}/{}/{}", self.group, self.kind, self.namespace.as_deref().unwrap_or(""), self.name)
    }
}

impl fmt::Display for ObjectId {
    /// `Deployment/hello-universe/ui`, `Namespace/kubecost`, `Certificate.cert-manager.io/web/tls`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.kind)?;
        if !self.group.is_empty() && !is_well_known_group(&self.group) {
            write!(f, ".{}", self.group)?;
        }
        if let Some(ns) = &self.namespace {
            write!(f, "/{ns}")?;
        }
        write!(f, "/{}", self.name)
    }
}

fn is_well_known_group(group: &str) -> bool {
    matches!(
        group,
        "apps"
            | "batch"
            | "rbac.authorization.k8s.io"
            | "networking.k8s.io"
            | "policy"
            | "autoscaling"
            | "apiextensions.k8s.io"
            | "storage.k8s.io"
            | "scheduling.k8s.io"
            | "admissionregistration.k8s.io"
            | "coordination.k8s.io"
            | "discovery.k8s.io"
            | "node.k8s.io"
            | "apiregistration.k8s.io"
            | "certificates.k8s.io"
    )
}

pub use crate::names::group_of;

/// Whether a built-in kind is cluster-scoped. Custom resources are namespaced unless a CRD in
/// the same desired set says otherwise; the apply stage confirms scopes through discovery.
pub fn is_cluster_scoped_builtin(group: &str, kind: &str) -> bool {
    matches!(
        (group, kind),
        ("", "Namespace" | "Node" | "PersistentVolume" | "ComponentStatus")
            | ("apiextensions.k8s.io", "CustomResourceDefinition")
            | ("apiregistration.k8s.io", "APIService")
            | ("rbac.authorization.k8s.io", "ClusterRole" | "ClusterRoleBinding")
            | (
                "storage.k8s.io",
                "StorageClass" | "CSIDriver" | "CSINode" | "VolumeAttachment" | "VolumeAttributesClass"
            )
            | ("scheduling.k8s.io", "PriorityClass")
            | ("node.k8s.io", "RuntimeClass")
            | ("networking.k8s.io", "IngressClass" | "IPAddress" | "ServiceCIDR")
            | (
                "admissionregistration.k8s.io",
                "MutatingWebhookConfiguration"
                    | "ValidatingWebhookConfiguration"
                    | "ValidatingAdmissionPolicy"
                    | "ValidatingAdmissionPolicyBinding"
                    | "MutatingAdmissionPolicy"
                    | "MutatingAdmissionPolicyBinding"
            )
            | ("flowcontrol.apiserver.k8s.io", "FlowSchema" | "PriorityLevelConfiguration")
            | ("certificates.k8s.io", "CertificateSigningRequest" | "ClusterTrustBundle")
            | ("resource.k8s.io", "DeviceClass")
    )
}

/// Apply order of kinds within a stage, after Helm's and Flux's install order: what others
/// depend on (namespaces, CRDs, RBAC, config) before workloads, webhooks last.
const KIND_ORDER: &[&str] = &[
    "Namespace",
    "CustomResourceDefinition",
    "PriorityClass",
    "ResourceQuota",
    "LimitRange",
    "PodDisruptionBudget",
    "ServiceAccount",
    "Secret",
    "ConfigMap",
    "StorageClass",
    "PersistentVolume",
    "PersistentVolumeClaim",
    "ClusterRole",
    "ClusterRoleBinding",
    "Role",
    "RoleBinding",
    "Service",
    "DaemonSet",
    "Pod",
    "ReplicationController",
    "ReplicaSet",
    "Deployment",
    "HorizontalPodAutoscaler",
    "StatefulSet",
    "Job",
    "CronJob",
    "IngressClass",
    "Ingress",
    "APIService",
];
const LATE_KINDS: &[&str] = &["MutatingWebhookConfiguration", "ValidatingWebhookConfiguration"];

fn kind_rank(kind: &str) -> usize {
    if let Some(i) = KIND_ORDER.iter().position(|k| *k == kind) {
        i
    } else if let Some(i) = LATE_KINDS.iter().position(|k| *k == kind) {
        KIND_ORDER.len() + 1 + i
    } else {
        // Custom resources: after the built-ins, before webhooks that might reject them.
        KIND_ORDER.len()
    }
}

/// Total order for objects within a layer: by kind rank, then identity.
pub fn apply_order(a: &ObjectId, b: &ObjectId) -> Ordering {
    (kind_rank(&a.kind), a).cmp(&(kind_rank(&b.kind), b))
}

/// Whether an object belongs in the first apply stage (DESIGN §4): Namespaces and CRDs.
pub fn is_stage_zero(id: &ObjectId) -> bool {
    matches!(
        (id.group.as_str(), id.kind.as_str()),
        ("", "Namespace") | ("apiextensions.k8s.io", "CustomResourceDefinition")
    )
}

/// Where strata writes its ownership stamps.
pub struct Stamp<'a> {
    pub cluster: &'a str,
    pub profile: &'a str,
    pub version: &'a str,
    pub layer: &'a str,
}

/// Adds the ownership labels and annotations of DESIGN §5 (the revision is added at output).
pub fn stamp(manifest: &mut Value, stamp: &Stamp) {
    let metadata = manifest.as_object_mut().and_then(|m| m.get_mut("metadata")).and_then(Value::as_object_mut);
    let Some(metadata) = metadata else { return };
    let labels = child_map(metadata, "labels");
    labels.insert(LABEL_MANAGED_BY.into(), FIELD_MANAGER.into());
    labels.insert(LABEL_CLUSTER.into(), stamp.cluster.into());
    labels.insert(LABEL_PROFILE.into(), stamp.profile.into());
    labels.insert(LABEL_LAYER.into(), stamp.layer.into());
    let annotations = child_map(metadata, "annotations");
    annotations.insert(ANNOTATION_PROFILE_VERSION.into(), stamp.version.into());
}

/// Takes out the stamps [`stamp`] puts in, when they are exactly those of `stamp`; returns whether
/// it did. The maps they lived in stay (empty when they held nothing else), so stamping again
/// gives back the same manifest.
pub fn unstamp(manifest: &mut Value, stamp: &Stamp) -> bool {
    let labels = [
        (LABEL_MANAGED_BY, FIELD_MANAGER),
        (LABEL_CLUSTER, stamp.cluster),
        (LABEL_PROFILE, stamp.profile),
        (LABEL_LAYER, stamp.layer),
    ];
    let Some(metadata) = manifest.get_mut("metadata").and_then(Value::as_object_mut) else { return false };
    let holds = |key: &str, wanted: &[(&str, &str)]| {
        metadata
            .get(key)
            .and_then(Value::as_object)
            .is_some_and(|map| wanted.iter().all(|(k, v)| map.get(*k).and_then(Value::as_str) == Some(*v)))
    };
    if !holds("labels", &labels) || !holds("annotations", &[(ANNOTATION_PROFILE_VERSION, stamp.version)]) {
        return false;
    }
    if let Some(map) = metadata.get_mut("labels").and_then(Value::as_object_mut) {
        for (key, _) in labels {
            map.remove(key);
        }
    }
    if let Some(map) = metadata.get_mut("annotations").and_then(Value::as_object_mut) {
        map.remove(ANNOTATION_PROFILE_VERSION);
    }
    true
}

/// Adds the revision annotation: the one stamp that differs between commits with equal content.
pub fn stamp_revision(manifest: &mut Value, revision: &str) {
    if let Some(metadata) = manifest.get_mut("metadata").and_then(Value::as_object_mut) {
        child_map(metadata, "annotations").insert(ANNOTATION_REVISION.into(), revision.into());
    }
}

fn child_map<'m>(parent: &'m mut Map<String, Value>, key: &str) -> &'m mut Map<String, Value> {
    let entry = parent.entry(key.to_string()).or_insert_with(|| Value::Object(Map::new()));
    if !entry.is_object() {
        *entry = Value::Object(Map::new());
    }
    entry.as_object_mut().expect("just made an object")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn ids_display_like_kubectl_and_key_like_the_inventory() {
        let id = ObjectId::new("apps/v1", "Deployment", Some("hello-universe"), "ui");
        assert_eq!(id.to_string(), "Deployment/hello-universe/ui");
        assert_eq!(id.inventory_key(), "apps/Deployment/hello-universe/ui");
        let ns = ObjectId::new("v1", "Namespace", None, "kubecost");
        assert_eq!(ns.to_string(), "Namespace/kubecost");
        assert_eq!(ns.inventory_key(), "/Namespace//kubecost");
        let cr = ObjectId::new("cert-manager.io/v1", "Certificate", Some("web"), "tls");
        assert_eq!(cr.to_string(), "Certificate.cert-manager.io/web/tls");
    }

    #[test]
    fn namespaces_and_crds_sort_first_webhooks_last() {
        let mut ids = [
            ObjectId::new("admissionregistration.k8s.io/v1", "ValidatingWebhookConfiguration", None, "v"),
            ObjectId::new("example.com/v1", "Widget", Some("a"), "w"),
            ObjectId::new("apps/v1", "Deployment", Some("a"), "d"),
            ObjectId::new("v1", "Service", Some("a"), "s"),
            ObjectId::new("apiextensions.k8s.io/v1", "CustomResourceDefinition", None, "widgets.example.com"),
            ObjectId::new("v1", "Namespace", None, "a"),
        ];
        ids.sort_by(apply_order);
        let kinds: Vec<_> = ids.iter().map(|i| i.kind.as_str()).collect();
        assert_eq!(
            kinds,
            [
                "Namespace",
                "CustomResourceDefinition",
                "Service",
                "Deployment",
                "Widget",
                "ValidatingWebhookConfiguration"
            ]
        );
    }

    #[test]
    fn stamping_keeps_existing_labels_and_replaces_a_non_map() {
        let mut m = json!({"metadata": {"name": "x", "labels": {"app": "ui"}, "annotations": "oops"}});
        stamp(&mut m, &Stamp { cluster: "c", profile: "p", version: "1.0.0", layer: "l" });
        assert_eq!(m["metadata"]["labels"]["app"], "ui");
        assert_eq!(m["metadata"]["labels"][LABEL_MANAGED_BY], "strata");
        assert_eq!(m["metadata"]["annotations"][ANNOTATION_PROFILE_VERSION], "1.0.0");
    }
}
