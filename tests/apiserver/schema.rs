//! The kinds the stand-in serves and what it knows of their shape: scope, subresources, which
//! writes bump `metadata.generation`, the update policies of their registry strategies, and
//! the list and map types server-side apply and strategic merge patches go by. Built-in kinds
//! come from a table transcribed from the Kubernetes API types (`+listType`, `+listMapKey`,
//! `+mapType`, `+structType` markers); custom resources take theirs from their CRD's
//! `openAPIV3Schema` (`x-kubernetes-list-type`, `x-kubernetes-list-map-keys`,
//! `x-kubernetes-map-type`), defaulting to atomic lists as structured-merge-diff does.

use std::sync::Arc;

use serde_json::{Value, json};

#[derive(Clone, Debug)]
pub struct Kind {
    pub group: String,
    pub version: String,
    pub kind: String,
    pub plural: String,
    pub namespaced: bool,
    /// Serves `/status`; writes to the main resource leave status alone.
    pub status: bool,
    /// Serves `/scale` (built-in workloads).
    pub scale: bool,
    /// Keeps `metadata.generation`.
    pub generation: bool,
    /// A PUT without `metadata.resourceVersion` is accepted.
    pub unconditional_update: bool,
    /// A PUT of a missing object creates it.
    pub create_on_update: bool,
    /// The version's `openAPIV3Schema`, for custom resources.
    pub custom: Option<Arc<Value>>,
}

impl Kind {
    pub fn api_version(&self) -> String {
        if self.group.is_empty() { self.version.clone() } else { format!("{}/{}", self.group, self.version) }
    }

    /// `configmaps` or `leases.coordination.k8s.io`, as error messages name a resource.
    pub fn qualified(&self) -> String {
        if self.group.is_empty() { self.plural.clone() } else { format!("{}.{}", self.plural, self.group) }
    }

    /// `ConfigMap` or `Lease.coordination.k8s.io`, as validation errors name a kind.
    pub fn qualified_kind(&self) -> String {
        if self.group.is_empty() { self.kind.clone() } else { format!("{}.{}", self.kind, self.group) }
    }

    pub fn is_custom(&self) -> bool {
        self.custom.is_some()
    }

    pub fn shape(&self) -> Shape<'_> {
        Shape { kind: self }
    }
}

/// Group, version, kind, plural, namespaced, status subresource, generation.
const BUILTIN: &[(&str, &str, &str, &str, bool, bool, bool)] = &[
    ("", "v1", "Namespace", "namespaces", false, true, false),
    ("", "v1", "ConfigMap", "configmaps", true, false, false),
    ("", "v1", "Secret", "secrets", true, false, false),
    ("", "v1", "Service", "services", true, true, false),
    ("", "v1", "ServiceAccount", "serviceaccounts", true, false, false),
    ("", "v1", "Pod", "pods", true, true, false),
    ("", "v1", "PersistentVolumeClaim", "persistentvolumeclaims", true, true, false),
    ("apps", "v1", "Deployment", "deployments", true, true, true),
    ("apps", "v1", "DaemonSet", "daemonsets", true, true, true),
    ("apps", "v1", "StatefulSet", "statefulsets", true, true, true),
    ("batch", "v1", "Job", "jobs", true, true, true),
    ("batch", "v1", "CronJob", "cronjobs", true, true, true),
    ("coordination.k8s.io", "v1", "Lease", "leases", true, false, false),
    ("rbac.authorization.k8s.io", "v1", "Role", "roles", true, false, false),
    ("rbac.authorization.k8s.io", "v1", "RoleBinding", "rolebindings", true, false, false),
    ("rbac.authorization.k8s.io", "v1", "ClusterRole", "clusterroles", false, false, false),
    ("rbac.authorization.k8s.io", "v1", "ClusterRoleBinding", "clusterrolebindings", false, false, false),
    ("networking.k8s.io", "v1", "Ingress", "ingresses", true, true, true),
    ("networking.k8s.io", "v1", "NetworkPolicy", "networkpolicies", true, false, true),
    ("policy", "v1", "PodDisruptionBudget", "poddisruptionbudgets", true, true, true),
    ("autoscaling", "v2", "HorizontalPodAutoscaler", "horizontalpodautoscalers", true, true, false),
    ("apiextensions.k8s.io", "v1", "CustomResourceDefinition", "customresourcedefinitions", false, true, true),
];

pub fn builtin_kinds() -> Vec<Kind> {
    BUILTIN
        .iter()
        .map(|&(group, version, kind, plural, namespaced, status, generation)| Kind {
            group: group.into(),
            version: version.into(),
            kind: kind.into(),
            plural: plural.into(),
            namespaced,
            status,
            scale: matches!(kind, "Deployment" | "StatefulSet"),
            generation,
            // Registry strategies: Leases insist on a resourceVersion and may be created by PUT.
            unconditional_update: kind != "Lease",
            create_on_update: kind == "Lease",
            custom: None,
        })
        .collect()
}

/// The kinds a CRD serves, one per served version.
pub fn crd_kinds(crd: &Value) -> Vec<Kind> {
    let spec = &crd["spec"];
    let (Some(group), Some(kind), Some(plural)) =
        (spec["group"].as_str(), spec["names"]["kind"].as_str(), spec["names"]["plural"].as_str())
    else {
        return Vec::new();
    };
    let namespaced = spec["scope"].as_str() != Some("Cluster");
    spec["versions"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|v| v["served"].as_bool() != Some(false))
        .filter_map(|v| {
            Some(Kind {
                group: group.into(),
                version: v["name"].as_str()?.into(),
                kind: kind.into(),
                plural: plural.into(),
                namespaced,
                status: v["subresources"]["status"].is_object(),
                scale: false,
                generation: true,
                unconditional_update: false,
                create_on_update: false,
                custom: Some(Arc::new(v["schema"]["openAPIV3Schema"].clone())),
            })
        })
        .collect()
}

/// `/apis`: every group with its versions.
pub fn group_list(kinds: &[Kind]) -> Value {
    let mut groups: Vec<(String, Vec<String>)> = Vec::new();
    for k in kinds.iter().filter(|k| !k.group.is_empty()) {
        match groups.iter_mut().find(|(g, _)| *g == k.group) {
            Some((_, versions)) if !versions.contains(&k.version) => versions.push(k.version.clone()),
            Some(_) => {}
            None => groups.push((k.group.clone(), vec![k.version.clone()])),
        }
    }
    let groups: Vec<Value> = groups
        .into_iter()
        .map(|(g, vs)| {
            let versions: Vec<Value> =
                vs.iter().map(|v| json!({"groupVersion": format!("{g}/{v}"), "version": v})).collect();
            json!({"name": g, "versions": versions, "preferredVersion": versions[0]})
        })
        .collect();
    json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": groups})
}

/// `/api/v1` or `/apis/{group}/{version}`, with subresources.
pub fn resource_list(kinds: &[Kind], group: &str, version: &str) -> Option<Value> {
    let kinds: Vec<&Kind> = kinds.iter().filter(|k| k.group == group && k.version == version).collect();
    if kinds.is_empty() {
        return None;
    }
    let verbs = json!(["create", "delete", "deletecollection", "get", "list", "patch", "update", "watch"]);
    let mut resources = Vec::new();
    for k in kinds {
        resources.push(json!({"name": k.plural, "singularName": k.kind.to_lowercase(), "namespaced": k.namespaced,
                              "kind": k.kind, "verbs": verbs, "storageVersionHash": ""}));
        if k.status {
            resources
                .push(json!({"name": format!("{}/status", k.plural), "singularName": "", "namespaced": k.namespaced,
                                  "kind": k.kind, "verbs": ["get", "patch", "update"]}));
        }
        if k.scale {
            resources.push(json!({"name": format!("{}/scale", k.plural), "singularName": "", "namespaced": true,
                                  "group": "autoscaling", "version": "v1", "kind": "Scale", "verbs": ["get", "patch", "update"]}));
        }
    }
    let gv = if group.is_empty() { version.to_string() } else { format!("{group}/{version}") };
    Some(json!({"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": gv, "resources": resources}))
}

/// How server-side apply treats a list.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ListType {
    /// Replaced whole, owned as one field.
    Atomic,
    /// Scalars, each owned on its own.
    Set,
    /// Objects identified by these key fields, each item and field owned on its own.
    Map(Vec<String>),
}

/// The shape of one kind's objects, asked by field path (field names only, list items skipped).
pub struct Shape<'a> {
    kind: &'a Kind,
}

impl Shape<'_> {
    pub fn list_type(&self, path: &[String]) -> ListType {
        let path: Vec<&str> = path.iter().map(String::as_str).collect();
        match path.as_slice() {
            ["metadata", "finalizers"] => return ListType::Set,
            ["metadata", "ownerReferences"] => return map(&["uid"]),
            _ => {}
        }
        match &self.kind.custom {
            Some(schema) => custom_list_type(schema, &path),
            None => builtin_list_type(&self.kind.kind, &path),
        }
    }

    /// Whether a map (or struct) is owned and replaced as one field.
    pub fn atomic_map(&self, path: &[String]) -> bool {
        let path: Vec<&str> = path.iter().map(String::as_str).collect();
        if let Some(schema) = &self.kind.custom {
            return schema_at(schema, &path).is_some_and(|s| s["x-kubernetes-map-type"] == "atomic");
        }
        let kind = self.kind.kind.as_str();
        if let Some(rest) = pod_spec_tail(kind, &path) {
            // PodSpec.nodeSelector is `+mapType=atomic`; label selectors in affinity terms are atomic structs.
            return matches!(rest, ["nodeSelector"]) || rest.last() == Some(&"labelSelector");
        }
        match (kind, path.as_slice()) {
            // metav1.LabelSelector is `+structType=atomic`; Service.spec.selector is `+mapType=atomic`.
            (_, ["spec", "selector"]) => true,
            ("NetworkPolicy", ["spec", "podSelector"]) => true,
            _ => false,
        }
    }

    /// A key field's value when an item leaves it out (structured-merge-diff's defaulted keys).
    pub fn key_default(&self, field: &str) -> Option<Value> {
        (field == "protocol" && !self.kind.is_custom()).then(|| json!("TCP"))
    }
}

fn map(keys: &[&str]) -> ListType {
    ListType::Map(keys.iter().map(|k| k.to_string()).collect())
}

/// The part of a path inside a pod spec, for the kinds that carry one.
fn pod_spec_tail<'p>(kind: &str, path: &'p [&'p str]) -> Option<&'p [&'p str]> {
    let prefix: &[&str] = match kind {
        "Pod" => &["spec"],
        "Deployment" | "DaemonSet" | "StatefulSet" | "Job" | "ReplicaSet" => &["spec", "template", "spec"],
        "CronJob" => &["spec", "jobTemplate", "spec", "template", "spec"],
        _ => return None,
    };
    path.strip_prefix(prefix)
}

fn builtin_list_type(kind: &str, path: &[&str]) -> ListType {
    if let Some(rest) = pod_spec_tail(kind, path) {
        return match rest {
            ["containers" | "initContainers" | "ephemeralContainers"] => map(&["name"]),
            ["containers" | "initContainers" | "ephemeralContainers", field] => match *field {
                "ports" => map(&["containerPort", "protocol"]),
                "env" => map(&["name"]),
                "volumeMounts" => map(&["mountPath"]),
                "volumeDevices" => map(&["devicePath"]),
                _ => ListType::Atomic,
            },
            ["volumes" | "imagePullSecrets" | "resourceClaims" | "schedulingGates"] => map(&["name"]),
            ["hostAliases"] => map(&["ip"]),
            ["topologySpreadConstraints"] => map(&["topologyKey", "whenUnsatisfiable"]),
            _ => ListType::Atomic,
        };
    }
    match (kind, path) {
        ("Service", ["spec", "ports"]) => map(&["port", "protocol"]),
        ("StatefulSet", ["spec", "volumeClaimTemplates"]) => ListType::Atomic,
        (_, ["status", "conditions"]) => map(&["type"]),
        _ => ListType::Atomic,
    }
}

/// The sub-schema at a path of field names (list items stepped through).
fn schema_at<'s>(schema: &'s Value, path: &[&str]) -> Option<&'s Value> {
    let mut node = schema;
    for name in path {
        while node["type"] == "array" {
            node = &node["items"];
        }
        node = match node["properties"].get(*name) {
            Some(child) => child,
            None if node["additionalProperties"].is_object() => &node["additionalProperties"],
            None => return None,
        };
    }
    Some(node)
}

fn custom_list_type(schema: &Value, path: &[&str]) -> ListType {
    let Some(node) = schema_at(schema, path) else { return ListType::Atomic };
    match node["x-kubernetes-list-type"].as_str() {
        Some("set") => ListType::Set,
        Some("map") => ListType::Map(
            node["x-kubernetes-list-map-keys"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|k| k.as_str().map(str::to_string))
                .collect(),
        ),
        _ => ListType::Atomic,
    }
}

/// What checking a custom resource against its schema found.
#[derive(Default)]
pub struct Checked {
    /// `field: message` lines, as validation errors show them.
    pub errors: Vec<String>,
    /// Fields the schema does not declare, pruned.
    pub unknown: Vec<String>,
}

/// A custom resource checked against its structural schema the way kube-apiserver does before
/// storing it: unknown fields pruned (unless `x-kubernetes-preserve-unknown-fields`), then types,
/// `required` and `enum` checked.
pub fn prune_and_validate(schema: &Value, object: &mut Value) -> Checked {
    let mut checked = Checked::default();
    if !schema.is_null() {
        check(schema, object, "", &mut checked);
    }
    checked
}

fn check(schema: &Value, value: &mut Value, path: &str, checked: &mut Checked) {
    let errors = &mut checked.errors;
    if value.is_null() && schema["nullable"] == true {
        return;
    }
    let want = schema["type"].as_str().unwrap_or("");
    let got = match value {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(n) if n.is_i64() || n.is_u64() => "integer",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    };
    let int_or_string = schema["x-kubernetes-int-or-string"] == true;
    let fits = want.is_empty()
        || want == got
        || (want == "number" && got == "integer")
        || (int_or_string && (got == "integer" || got == "string"));
    if !fits {
        errors.push(format!("{path}: Invalid value: \"{got}\": {path} in body must be of type {want}: \"{got}\""));
        return;
    }
    if let Some(allowed) = schema["enum"].as_array()
        && !allowed.contains(value)
    {
        let list: Vec<String> = allowed.iter().map(Value::to_string).collect();
        errors.push(format!("{path}: Unsupported value: {value}: supported values: {}", list.join(", ")));
    }
    match value {
        Value::Object(map) => {
            let keeps_unknown =
                schema["x-kubernetes-preserve-unknown-fields"] == true || schema["additionalProperties"] == true;
            let mut unknown = Vec::new();
            for (field, child) in map.iter_mut() {
                // The object's identity and metadata are the API server's, not the schema's.
                if path.is_empty() && matches!(field.as_str(), "apiVersion" | "kind" | "metadata") {
                    continue;
                }
                let sub = if path.is_empty() { field.clone() } else { format!("{path}.{field}") };
                match schema["properties"].get(field) {
                    Some(s) => check(s, child, &sub, checked),
                    None if schema["additionalProperties"].is_object() => {
                        check(&schema["additionalProperties"], child, &sub, checked)
                    }
                    None if keeps_unknown => {}
                    None => {
                        checked.unknown.push(sub);
                        unknown.push(field.clone());
                    }
                }
            }
            for field in unknown {
                map.remove(&field);
            }
            for req in schema["required"].as_array().into_iter().flatten().filter_map(Value::as_str) {
                if !map.contains_key(req) {
                    let at = if path.is_empty() { req.to_string() } else { format!("{path}.{req}") };
                    checked.errors.push(format!("{at}: Required value"));
                }
            }
        }
        Value::Array(items) => {
            for (i, item) in items.iter_mut().enumerate() {
                check(&schema["items"], item, &format!("{path}[{i}]"), checked);
            }
        }
        _ => {}
    }
}

/// What kube-apiserver's CRD validation would refuse, for the mistakes a manifest makes most.
pub fn validate_crd(crd: &Value) -> Vec<String> {
    let spec = &crd["spec"];
    let mut errors = Vec::new();
    let (group, plural) = (spec["group"].as_str().unwrap_or(""), spec["names"]["plural"].as_str().unwrap_or(""));
    for (field, value) in [("spec.group", group), ("spec.names.plural", plural)] {
        if value.is_empty() {
            errors.push(format!("{field}: Required value"));
        }
    }
    if spec["names"]["kind"].as_str().unwrap_or("").is_empty() {
        errors.push("spec.names.kind: Required value".into());
    }
    if !matches!(spec["scope"].as_str(), Some("Namespaced" | "Cluster")) {
        errors.push("spec.scope: Unsupported value: supported values: \"Cluster\", \"Namespaced\"".into());
    }
    let name = crd["metadata"]["name"].as_str().unwrap_or("");
    if !group.is_empty() && !plural.is_empty() && name != format!("{plural}.{group}") {
        errors.push(format!("metadata.name: Invalid value: \"{name}\": must be spec.names.plural+\".\"+spec.group"));
    }
    let versions = spec["versions"].as_array().map(Vec::as_slice).unwrap_or_default();
    if versions.is_empty() {
        errors.push("spec.versions: Invalid value: must have exactly one version marked as storage version".into());
    }
    if versions.iter().filter(|v| v["storage"] == true).count() != 1 {
        errors.push("spec.versions: Invalid value: must have exactly one version marked as storage version".into());
    }
    for (i, v) in versions.iter().enumerate() {
        if !v["schema"]["openAPIV3Schema"].is_object() {
            errors.push(format!("spec.versions[{i}].schema.openAPIV3Schema: Required value: schemas are required"));
        }
    }
    errors.dedup();
    errors
}

/// The group-version's path in OpenAPI v3 documents: `api/v1`, `apis/apps/v1`.
fn openapi_gv(group: &str, version: &str) -> String {
    if group.is_empty() { format!("api/{version}") } else { format!("apis/{group}/{version}") }
}

/// `/openapi/v3`: one document per group-version, as kubectl's field-validation check reads them.
pub fn openapi_root(kinds: &[Kind]) -> Value {
    let mut paths = serde_json::Map::new();
    for k in kinds {
        let gv = openapi_gv(&k.group, &k.version);
        let hash = format!("{:016x}", kinds.len());
        paths.insert(gv.clone(), json!({"serverRelativeURL": format!("/openapi/v3/{gv}?hash={hash}")}));
    }
    json!({"paths": paths})
}

/// A group-version's OpenAPI v3 document: each resource's PATCH operation with its
/// `x-kubernetes-group-version-kind` and query parameters (no schemas: the stand-in has none
/// for built-in kinds).
pub fn openapi_document(kinds: &[Kind], group: &str, version: &str) -> Option<Value> {
    let kinds: Vec<&Kind> = kinds.iter().filter(|k| k.group == group && k.version == version).collect();
    if kinds.is_empty() {
        return None;
    }
    let gv = openapi_gv(group, version);
    let parameters: Vec<Value> = ["dryRun", "fieldManager", "fieldValidation", "force"]
        .iter()
        .map(|p| json!({"name": p, "in": "query", "schema": {"type": "string", "uniqueItems": true}}))
        .collect();
    let mut paths = serde_json::Map::new();
    for k in kinds {
        let path = if k.namespaced {
            format!("/{gv}/namespaces/{{namespace}}/{}/{{name}}", k.plural)
        } else {
            format!("/{gv}/{}/{{name}}", k.plural)
        };
        paths.insert(
            path,
            json!({"patch": {"operationId": format!("patch{}", k.kind), "parameters": parameters,
                             "x-kubernetes-action": "patch",
                             "x-kubernetes-group-version-kind": {"group": k.group, "version": k.version, "kind": k.kind},
                             "responses": {"200": {"description": "OK"}}}}),
        );
    }
    Some(json!({"openapi": "3.0.0", "info": {"title": "Kubernetes", "version": "v1.32.0"}, "paths": paths,
                "components": {"schemas": {}}}))
}
