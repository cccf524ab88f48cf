//! The management cluster of Kubernetes-mode tests: strata's namespace and CRD (from
//! `deploy/kubernetes/crd.yaml`, so the tests hold the shipped CRD to what strata writes) on an
//! API server reached through a kubeconfig, and a client for looking at what replicas share.

use std::path::Path;

use kube::api::{Api, ApiResource, DynamicObject, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::core::GroupVersionKind;
use serde_json::Value;

pub const NAMESPACE: &str = "strata-system";

pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap()
}

pub async fn client(kubeconfig: &Path) -> kube::Client {
    let kubeconfig = Kubeconfig::read_from(kubeconfig).unwrap();
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default()).await.unwrap();
    kube::Client::try_from(config).unwrap()
}

fn api(
    client: kube::Client,
    group: &str,
    version: &str,
    kind: &str,
    plural: &str,
    namespace: Option<&str>,
) -> Api<DynamicObject> {
    let resource = ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk(group, version, kind), plural);
    match namespace {
        Some(ns) => Api::namespaced_with(client, ns, &resource),
        None => Api::all_with(client, &resource),
    }
}

/// Creates namespace strata-system and the ClusterState CRD.
pub fn install(kubeconfig: &Path) {
    runtime().block_on(async {
        let client = client(kubeconfig).await;
        let namespaces = api(client.clone(), "", "v1", "Namespace", "namespaces", None);
        let namespace: DynamicObject = serde_json::from_value(
            serde_json::json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NAMESPACE}}),
        )
        .unwrap();
        let _ = namespaces.create(&PostParams::default(), &namespace).await;
        let text =
            std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/kubernetes/crd.yaml")).unwrap();
        let crd: Value = serde_saphyr::from_str(&text).unwrap();
        let crds =
            api(client, "apiextensions.k8s.io", "v1", "CustomResourceDefinition", "customresourcedefinitions", None);
        crds.create(&PostParams::default(), &serde_json::from_value(crd).unwrap()).await.unwrap();
    });
}

/// Every ClusterState in strata-system, by name, as JSON.
pub fn cluster_states(kubeconfig: &Path) -> std::collections::BTreeMap<String, Value> {
    by_name(kubeconfig, "strata.dev", "v1", "ClusterState", "clusterstates")
}

/// Every Lease in strata-system, by name, as JSON.
pub fn leases(kubeconfig: &Path) -> std::collections::BTreeMap<String, Value> {
    by_name(kubeconfig, "coordination.k8s.io", "v1", "Lease", "leases")
}

/// Every ConfigMap in strata-system, by name, as JSON.
pub fn configmaps(kubeconfig: &Path) -> std::collections::BTreeMap<String, Value> {
    by_name(kubeconfig, "", "v1", "ConfigMap", "configmaps")
}

/// Every object of one resource in strata-system, by name, as JSON.
fn by_name(
    kubeconfig: &Path,
    group: &str,
    version: &str,
    kind: &str,
    plural: &str,
) -> std::collections::BTreeMap<String, Value> {
    runtime().block_on(async {
        let objects = api(client(kubeconfig).await, group, version, kind, plural, Some(NAMESPACE));
        objects
            .list(&Default::default())
            .await
            .unwrap()
            .items
            .into_iter()
            .map(|o| (o.metadata.name.clone().unwrap(), serde_json::to_value(&o).unwrap()))
            .collect()
    })
}

/// Creates (or replaces) a Secret in strata-system.
pub fn put_secret(kubeconfig: &Path, secret: Value) {
    runtime().block_on(async {
        let secrets = api(client(kubeconfig).await, "", "v1", "Secret", "secrets", Some(NAMESPACE));
        let name = secret["metadata"]["name"].as_str().unwrap().to_string();
        let object: DynamicObject = serde_json::from_value(secret).unwrap();
        match secrets.get_opt(&name).await.unwrap() {
            None => {
                secrets.create(&PostParams::default(), &object).await.unwrap();
            }
            Some(old) => {
                let mut object = object;
                object.metadata.resource_version = old.metadata.resource_version;
                secrets.replace(&name, &PostParams::default(), &object).await.unwrap();
            }
        }
    });
}

/// Creates a ConfigMap in strata-system.
pub fn create_configmap(kubeconfig: &Path, map: Value) {
    runtime().block_on(async {
        let maps = api(client(kubeconfig).await, "", "v1", "ConfigMap", "configmaps", Some(NAMESPACE));
        maps.create(&PostParams::default(), &serde_json::from_value(map).unwrap()).await.unwrap();
    });
}

pub fn delete_secret(kubeconfig: &Path, name: &str) {
    runtime().block_on(async {
        let secrets = api(client(kubeconfig).await, "", "v1", "Secret", "secrets", Some(NAMESPACE));
        secrets.delete(name, &Default::default()).await.unwrap();
    });
}

/// The rules of the Role `deploy/kubernetes/rbac.yaml` grants strata's service account.
pub fn shipped_role() -> Vec<Value> {
    let text =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/kubernetes/rbac.yaml")).unwrap();
    let docs: Vec<Value> = serde_saphyr::from_multiple(&text).unwrap();
    let role = docs.into_iter().find(|d| d["kind"] == "Role").expect("a Role in rbac.yaml");
    role["rules"].as_array().unwrap().clone()
}

/// Whether a request strata made is allowed by `rules` of a Role in strata-system, as
/// kube-apiserver's RBAC authorizer decides it (verbs from method and path; `resourceNames`
/// bind list and watch only with a `metadata.name` field selector). Discovery is open to every
/// authenticated client (system:discovery). Err says what is missing.
pub fn role_allows(rules: &[Value], method: &str, path: &str, query: &str, watch: bool) -> Result<(), String> {
    let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
    let rest = match segments.as_slice() {
        ["version"] | ["api"] | ["apis"] | ["api", _] | ["apis", _] | ["apis", _, _] => return Ok(()),
        [first, ..] if first.starts_with("openapi") => return Ok(()),
        ["api", "v1", rest @ ..] => ("", rest),
        ["apis", group, _, rest @ ..] => (*group, rest),
        _ => return Err(format!("{method} {path}: not an API path")),
    };
    let (group, rest) = rest;
    let (resource, name, sub) = match rest {
        ["namespaces", ns, resource, tail @ ..] if *ns == NAMESPACE => {
            (*resource, tail.first().copied(), tail.get(1).copied())
        }
        _ => return Err(format!("{method} {path}: outside namespace {NAMESPACE} (the Role is namespaced)")),
    };
    let verb = match (method, name) {
        ("GET", _) if watch => "watch",
        ("GET", Some(_)) => "get",
        ("GET", None) => "list",
        ("POST", _) => "create",
        ("PUT", _) => "update",
        ("PATCH", _) => "patch",
        ("DELETE", Some(_)) => "delete",
        ("DELETE", None) => "deletecollection",
        _ => return Err(format!("{method} {path}: unknown verb")),
    };
    let full = match sub {
        Some(sub) => format!("{resource}/{sub}"),
        None => resource.to_string(),
    };
    let selected = url::form_urlencoded::parse(query.as_bytes())
        .find(|(k, _)| k == "fieldSelector")
        .and_then(|(_, v)| v.strip_prefix("metadata.name=").map(str::to_string));
    let target = name.map(str::to_string).or(selected);
    let has = |list: &Value, item: &str| list.as_array().is_some_and(|a| a.iter().any(|v| v == item || v == "*"));
    let allowed = rules.iter().any(|rule| {
        has(&rule["apiGroups"], group)
            && has(&rule["resources"], &full)
            && has(&rule["verbs"], verb)
            && match rule.get("resourceNames").and_then(Value::as_array) {
                None => true,
                Some(names) => target.as_ref().is_some_and(|t| names.iter().any(|n| n == t.as_str())),
            }
    });
    if allowed {
        Ok(())
    } else {
        Err(format!("{verb} {group}/{full} {} ({method} {path}?{query})", target.unwrap_or_default()))
    }
}
