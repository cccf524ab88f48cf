//! Object identities from a repository never become paths or URLs outside their place: names,
//! namespaces and kinds are checked as the API server checks them, the directory target confines
//! itself, and the kube target encodes every path segment.

mod apiserver;
mod common;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use apiserver::ApiServer;
use common::Repo;

const UI: &str = "packs/hello-universe/manifests/ui.yaml";

/// Every path below `dir`, links not followed.
fn tree(dir: &Path) -> BTreeSet<PathBuf> {
    let mut out = BTreeSet::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if std::fs::symlink_metadata(&path).unwrap().is_dir() {
                stack.push(path.clone());
            }
            out.insert(path);
        }
    }
    out
}

/// Hostile identities, each escaping only into the test's own temporary directory (so a
/// regression cannot scribble over the host).
const HOSTILE: &str = "apiVersion: v1
kind: ConfigMap
metadata: { name: ns-escape, namespace: ../../escaped }
---
apiVersion: v1
kind: ConfigMap
metadata: { name: ../../../escaped-name, namespace: hello-universe }
---
apiVersion: v1
kind: ../../../escaped-kind
metadata: { name: k, namespace: hello-universe }
---
apiVersion: ../../v1
kind: ConfigMap
metadata: { name: group, namespace: hello-universe }
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata: { name: .. }
";

#[test]
fn hostile_names_are_refused_at_render_with_file_line_object_and_rule() {
    let repo = Repo::plain_example();
    repo.write("packs/hello-universe/manifests/evil.yaml", HOSTILE);
    let run = repo.strata(&["validate"]);
    assert_eq!(run.code, 1, "{}", run.stderr);
    let at = "packs/hello-universe/manifests/evil.yaml";
    let layer = "profile aws-profile@1.0.0 layer hello-universe";
    for expected in [
        format!(
            "error[name]: {at}:1: {layer}: metadata.namespace `../../escaped` of a ConfigMap is invalid: it must be a DNS-1123 label"
        ),
        format!(
            "error[name]: {at}:4: {layer}: metadata.name `../../../escaped-name` of a ConfigMap is invalid: it must be a DNS-1123 subdomain"
        ),
        format!("error[name]: {at}:8: {layer}: kind `../../../escaped-kind` is invalid: it must be an identifier"),
        format!(
            "error[name]: {at}:12: {layer}: apiVersion `../../v1` is invalid: it must be empty (the core group) or a DNS-1123 subdomain"
        ),
        format!(
            "error[name]: {at}:16: {layer}: metadata.name `..` of a ClusterRole is invalid: it must be a path segment"
        ),
    ] {
        assert!(run.stderr.contains(&expected), "expected {expected:?} in:\n{}", run.stderr);
    }
    assert!(run.stderr.contains("help: rename the object"), "{}", run.stderr);

    // What the API server accepts still renders.
    repo.remove("packs/hello-universe/manifests/evil.yaml").write(
        "packs/hello-universe/manifests/fine.yaml",
        "apiVersion: rbac.authorization.k8s.io/v1\nkind: ClusterRole\nmetadata: { name: 'system:strata:reader' }\n---\napiVersion: v1\nkind: ConfigMap\nmetadata: { name: a.b-c.d }\n---\napiVersion: example.com/v1beta1\nkind: Web-App\nmetadata: { name: w }\n",
    );
    let out = repo.strata(&["render", "aws-cluster"]).ok().stdout;
    assert!(
        out.contains("name: system:strata:reader") && out.contains("name: a.b-c.d") && out.contains("kind: Web-App")
    );
}

#[test]
fn a_hostile_repository_writes_nothing_outside_a_directory_target() {
    let outer = tempfile::tempdir().unwrap();
    let root = outer.path().join("targets/rendered");
    let config = outer.path().join("strata.yaml");
    std::fs::write(&config, format!("targets:\n  aws-cluster: {{ directory: {} }}\n", root.display())).unwrap();
    let before = tree(outer.path());

    let repo = Repo::example();
    repo.write("packs/hello-universe/manifests/evil.yaml", HOSTILE);
    repo.commit("hostile names");
    let run = repo.strata(&["apply", "aws-cluster", "--config", config.to_str().unwrap()]);
    assert_eq!(run.code, 1, "{}\n{}", run.stdout, run.stderr);
    assert!(run.stderr.contains("error[name]"), "{}", run.stderr);
    let after = tree(outer.path());
    let outside: Vec<_> = after.difference(&before).filter(|p| !p.starts_with(&root)).collect();
    assert!(outside.is_empty(), "written outside the target: {outside:?}");
    assert!(!root.exists(), "a repository that does not render applies nothing");
}

/// Someone with access to the cluster edits strata's inventory: its names reach the API only as
/// encoded path segments, never as extra segments of the request path.
#[test]
fn inventory_names_reach_the_api_server_only_as_encoded_path_segments() {
    let server = ApiServer::start();
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = server.kubeconfig(dir.path());
    let config = dir.path().join("strata.yaml");
    std::fs::write(
        &config,
        format!(
            "targets:\n  aws-cluster: {{ kubeconfig: {} }}\napply: {{ health_timeout: 5s }}\n",
            kubeconfig.display()
        ),
    )
    .unwrap();
    let repo = Repo::example();
    let apply = || repo.strata(&["apply", "aws-cluster", "--config", config.to_str().unwrap()]);
    apply().ok();

    let inventory = server.object("configmaps", Some("strata-system"), "strata-inventory-aws-cluster").unwrap();
    let mut entries: serde_json::Value =
        serde_json::from_str(inventory["data"]["inventory.json"].as_str().unwrap()).unwrap();
    entries["entries"].as_array_mut().unwrap().push(serde_json::json!({
        "id": "/ConfigMap/hello-universe/x/../../../kube-system/configmaps/victim?dryRun=All#",
        "api_version": "v1",
        "created": true,
    }));
    let patch = serde_json::json!({"data": {"inventory.json": entries.to_string()}});
    let out = Command::new("kubectl")
        .arg("--kubeconfig")
        .arg(&kubeconfig)
        .args(["patch", "configmap", "strata-inventory-aws-cluster", "-n", "strata-system", "--type", "merge", "-p"])
        .arg(patch.to_string())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));

    server.clear_requests();
    repo.edit(UI, "replicas: {{ values.replicas }}", "replicas: 2");
    repo.commit("an edit, so the inventory is read and pruned against");
    apply().ok();
    let paths: Vec<String> = server.requests().into_iter().map(|r| r.path).collect();
    assert!(
        paths
            .iter()
            .any(|p| p.ends_with("/configmaps/x%2F..%2F..%2F..%2Fkube-system%2Fconfigmaps%2Fvictim%3FdryRun%3DAll%23")),
        "{paths:#?}"
    );
    assert!(paths.iter().all(|p| !p.contains("/../") && !p.contains("/kube-system/")), "{paths:#?}");
}
