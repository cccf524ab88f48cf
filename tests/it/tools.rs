//! Layers rendered by external tools: kustomize through the real `kubectl kustomize` (or
//! `kustomize`), helm through stand-ins that check and record the arguments strata passes (charts
//! through the real Helm engine are tests/helm.rs), and a clear error when a tool is missing.

use crate::common;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use common::Repo;

const KUSTOMIZED_PROFILE: &str = "apiVersion: strata.dev/v1
kind: Profile
metadata: { name: ingress, version: 1.0.0 }
spec:
  layers:
    - name: ingress
      type: kustomize
      source: packs/ingress/overlays/prod
      namespace: ingress
";

const AWS_1_0_0: &str = "profiles/aws-profile/1.0.0/profile.yaml";

const CLUSTER: &str = "apiVersion: strata.dev/v1
kind: Cluster
metadata: { name: edge-k }
spec:
  profile: { name: ingress, version: 1.0.0 }
";

/// An overlay that reaches into `../../base`, as kustomize layouts usually do.
fn kustomized(repo: &Repo) {
    repo.write("profiles/ingress/1.0.0/profile.yaml", KUSTOMIZED_PROFILE)
        .write("clusters/edge-k.yaml", CLUSTER)
        .write("packs/ingress/base/kustomization.yaml", "resources: [deployment.yaml]\n")
        .write(
            "packs/ingress/base/deployment.yaml",
            "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: ingress}\nspec:\n  replicas: 1\n  selector: {matchLabels: {app: ingress}}\n  template:\n    metadata: {labels: {app: ingress}}\n    spec: {containers: [{name: nginx, image: nginx:1.27}]}\n",
        )
        .write(
            "packs/ingress/overlays/prod/kustomization.yaml",
            "resources: [../../base]\nnamePrefix: prod-\npatches:\n- target: {kind: Deployment}\n  patch: |\n    - op: replace\n      path: /spec/replicas\n      value: 3\n",
        );
}

fn has_kustomize() -> bool {
    strata::render::tools::which("kubectl").is_some() || strata::render::tools::which("kustomize").is_some()
}

#[test]
fn kustomize_layers_render_through_the_real_tool_from_a_git_commit() {
    assert!(
        has_kustomize(),
        "these tests need kubectl (with its built-in kustomize) or kustomize: scripts/test installs it"
    );
    let repo = Repo::example();
    kustomized(&repo);
    repo.commit("kustomized ingress");
    let out = repo.strata(&["render", "edge-k"]).ok().stdout;
    assert!(out.contains("name: prod-ingress"), "{out}");
    assert!(out.contains("namespace: ingress"), "the layer namespace is applied: {out}");
    assert!(out.contains("replicas: 3"), "the overlay's patch applies: {out}");
    assert!(out.contains("strata.dev/layer: ingress"), "{out}");

    // A change in the base, outside the overlay's own directory, is still an in-place edit.
    repo.edit("packs/ingress/base/deployment.yaml", "nginx:1.27", "nginx:1.28");
    repo.commit("bump base image");
    let plan = repo.strata(&["plan", "--format", "json"]).ok().stdout;
    let plan: serde_json::Value = serde_json::from_str(&plan).unwrap();
    let edge = plan["clusters"].as_array().unwrap().iter().find(|c| c["cluster"] == "edge-k").unwrap();
    assert_eq!(edge["kind"], "in-place-edit");
    assert!(edge["objects"][0]["diff"].as_str().unwrap().contains("+      - image: nginx:1.28"), "{edge}");
}

#[test]
fn kustomize_layers_render_from_a_plain_directory() {
    assert!(has_kustomize(), "these tests need kubectl or kustomize: scripts/test installs it");
    let repo = Repo::plain_example();
    kustomized(&repo);
    let out = repo.strata(&["render", "edge-k"]).ok().stdout;
    assert!(out.contains("name: prod-ingress"), "{out}");
}

#[test]
fn kustomize_failures_carry_the_tools_message() {
    assert!(has_kustomize(), "these tests need kubectl or kustomize: scripts/test installs it");
    let repo = Repo::plain_example();
    kustomized(&repo);
    // A reference that does not exist is caught before kustomize runs (tests/sandbox.rs); YAML
    // only kustomize parses is the tool's to report.
    repo.write("packs/ingress/overlays/prod/kustomization.yaml", "resources: [broken.yaml]\n")
        .write("packs/ingress/overlays/prod/broken.yaml", "apiVersion: v1\nkind: ConfigMap\ndata: [\n");
    let run = repo.strata(&["validate"]);
    assert_eq!(run.code, 1);
    assert!(
        run.stderr.contains(
            "error[tool]: packs/ingress/overlays/prod: profile ingress@1.0.0 layer ingress: `kustomize` failed:"
        ),
        "{}",
        run.stderr
    );
    assert!(run.stderr.contains("broken.yaml"), "{}", run.stderr);
}

const HELM_PROFILE: &str = "apiVersion: strata.dev/v1
kind: Profile
metadata: { name: metrics, version: 1.0.0 }
spec:
  layers:
    - name: metrics
      type: helm
      source: charts/metrics
      namespace: metrics
      releaseName: prom
      values: { retention: 15d, resources: { cpu: 100m, memory: 1Gi } }
";

const HELM_CLUSTER: &str = "apiVersion: strata.dev/v1
kind: Cluster
metadata: { name: metrics-eu }
spec:
  profile: { name: metrics, version: 1.0.0 }
  overrides:
    metrics: { resources: { memory: 4Gi } }
";

/// A stand-in for `helm template` that insists on the arguments helm documents and echoes what
/// it was given as a ConfigMap.
const FAKE_HELM: &str = r#"#!/bin/sh
[ "$1" = template ] || { echo "unexpected command $1" >&2; exit 2; }
release=$2; chart=$3
[ "$4" = --namespace ] && [ "$6" = --values ] && [ "$8" = --include-crds ] || { echo "unexpected arguments: $*" >&2; exit 2; }
[ -f "$chart/Chart.yaml" ] || { echo "no chart at $chart" >&2; exit 3; }
cat <<EOF
---
# Source: metrics/templates/config.yaml
apiVersion: v1
kind: ConfigMap
metadata:
  name: $release-config
data:
  namespace: "$5"
  values: |
$(sed 's/^/    /' "$7")
EOF
"#;

fn helm_repo() -> Repo {
    let repo = Repo::plain_example();
    repo.write("profiles/metrics/1.0.0/profile.yaml", HELM_PROFILE)
        .write("clusters/metrics-eu.yaml", HELM_CLUSTER)
        .write("charts/metrics/Chart.yaml", "apiVersion: v2\nname: metrics\nversion: 0.1.0\n")
        .write("charts/metrics/templates/config.yaml", "# rendered by helm\n");
    repo
}

fn path_with(dir: &Path) -> String {
    format!("{}:{}", dir.display(), std::env::var("PATH").unwrap_or_default())
}

#[test]
fn helm_layers_render_through_helm_template_with_merged_values() {
    let repo = helm_repo();
    let bin = tempfile::tempdir().unwrap();
    let helm = bin.path().join("helm");
    std::fs::write(&helm, FAKE_HELM).unwrap();
    std::fs::set_permissions(&helm, std::fs::Permissions::from_mode(0o755)).unwrap();
    let run = repo.strata_env(&["render", "metrics-eu"], &[("PATH", &path_with(bin.path()))]).ok();
    let docs: Vec<serde_json::Value> = serde_saphyr::from_multiple(&run.stdout).unwrap();
    let doc = &docs[0];
    assert_eq!(doc["metadata"]["name"], "prom-config", "the release name is passed");
    assert_eq!(doc["metadata"]["namespace"], "metrics");
    assert_eq!(doc["data"]["namespace"], "metrics");
    let values: serde_json::Value = serde_saphyr::from_str(doc["data"]["values"].as_str().unwrap()).unwrap();
    assert_eq!(values, serde_json::json!({"retention": "15d", "resources": {"cpu": "100m", "memory": "4Gi"}}));
}

#[test]
fn a_missing_helm_is_a_clear_error_naming_the_layer() {
    let repo = helm_repo();
    let empty = tempfile::tempdir().unwrap();
    // Only a directory without helm on PATH (git and kubectl are not needed for this).
    let run = repo.strata_env(&["validate"], &[("PATH", empty.path().to_str().unwrap())]);
    assert_eq!(run.code, 1, "{}", run.stderr);
    assert!(
        run.stderr
            .contains("error[tool]: charts/metrics: profile metrics@1.0.0 layer metrics: `helm` is not installed"),
        "{}",
        run.stderr
    );
    assert!(run.stderr.contains("help: install helm (v3 or later)"), "{}", run.stderr);
}

fn plan_json(repo: &Repo, env: &[(&str, &str)]) -> serde_json::Value {
    let run = repo.strata_env(&["plan", "--format", "json"], env).ok();
    serde_json::from_str(&run.stdout).unwrap()
}

fn planned<'p>(plan: &'p serde_json::Value, name: &str) -> &'p serde_json::Value {
    plan["clusters"].as_array().unwrap().iter().find(|c| c["cluster"] == name).unwrap()
}

#[test]
fn a_plan_renders_a_kustomize_layer_only_when_a_file_its_kustomizations_reach_changed() {
    let repo = Repo::example();
    kustomized(&repo);
    repo.write("packs/ingress/unused/notes.yaml", "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: n}\n");
    repo.commit("kustomized ingress");

    // Beside the overlay and its base, but named by neither kustomization: nothing to render.
    repo.edit("packs/ingress/unused/notes.yaml", "name: n", "name: m");
    repo.edit(AWS_1_0_0, "replicas: 1", "replicas: 2");
    repo.commit("elsewhere");
    let plan = plan_json(&repo, &[]);
    let edge = planned(&plan, "edge-k");
    assert_eq!(edge["kind"], "unchanged");
    assert!(edge["base_digest"].is_null(), "edge-k was not rendered: {edge}");
    assert_eq!(planned(&plan, "aws-cluster")["kind"], "in-place-edit");

    // The base the overlay reaches with `../../base`, outside the layer's source: an in-place edit.
    repo.edit("packs/ingress/base/deployment.yaml", "nginx:1.27", "nginx:1.28");
    repo.commit("ingress base: nginx 1.28");
    let plan = plan_json(&repo, &[]);
    let edge = planned(&plan, "edge-k");
    assert_eq!(edge["kind"], "in-place-edit", "{edge}");
    assert_eq!(edge["objects"][0]["id"]["name"], "prod-ingress");
    let diff = edge["objects"][0]["diff"].as_str().unwrap();
    assert!(diff.lines().any(|l| l.starts_with('+') && l.contains("nginx:1.28")), "{diff}");
}

#[test]
fn an_override_of_a_cluster_on_a_helm_profile_is_an_override_not_an_in_place_edit() {
    let repo = Repo::example();
    repo.write("profiles/metrics/1.0.0/profile.yaml", HELM_PROFILE)
        .write("clusters/metrics-eu.yaml", HELM_CLUSTER)
        .write("charts/metrics/Chart.yaml", "apiVersion: v2\nname: metrics\nversion: 0.1.0\n")
        .write("charts/metrics/templates/config.yaml", "# rendered by helm\n");
    repo.commit("metrics");
    let bin = tempfile::tempdir().unwrap();
    let helm = bin.path().join("helm");
    std::fs::write(&helm, FAKE_HELM).unwrap();
    std::fs::set_permissions(&helm, std::fs::Permissions::from_mode(0o755)).unwrap();
    let path = path_with(bin.path());

    repo.edit("clusters/metrics-eu.yaml", "memory: 4Gi", "memory: 8Gi");
    repo.commit("metrics-eu: more memory");
    let plan = plan_json(&repo, &[("PATH", &path)]);
    let eu = planned(&plan, "metrics-eu");
    assert_eq!(eu["reasons"], serde_json::json!(["override"]), "the chart did not change: {eu}");
    assert_eq!(eu["pending"], false);

    // A file of the chart: the profile version is edited, so the cluster is rendered again.
    repo.edit("charts/metrics/templates/config.yaml", "rendered", "still rendered");
    repo.commit("chart template");
    let plan = plan_json(&repo, &[("PATH", &path)]);
    assert!(!planned(&plan, "metrics-eu")["base_digest"].is_null(), "metrics-eu was rendered: {plan}");
}

/// Records the arguments it is given, one a line, in a ConfigMap.
const RECORDING_HELM: &str = r#"#!/bin/sh
printf 'apiVersion: v1\nkind: ConfigMap\nmetadata: {name: argv}\ndata:\n  argv: |\n'
for arg in "$@"; do printf '    %s\n' "$arg"; done
"#;

#[test]
fn the_arguments_strata_gives_helm_are_helm_templates_own() {
    let repo = helm_repo();
    repo.edit(
        "profiles/metrics/1.0.0/profile.yaml",
        "releaseName: prom",
        "releaseName: prom\n      valuesFiles: [values/metrics/base.yaml, ./values/metrics/../metrics/eu.yaml]\n      kubeVersion: 1.29.0\n      apiVersions: [monitoring.coreos.com/v1, cert-manager.io/v1]",
    )
    .edit("clusters/metrics-eu.yaml", "overrides:", "kubeVersion: v1.31.2-eks-0a1b\n  apiVersions: [cert-manager.io/v1, example.com/v1/Widget]\n  overrides:")
    .write("values/metrics/base.yaml", "retention: 7d\n")
    .write("values/metrics/eu.yaml", "region: eu\n");
    let bin = tempfile::tempdir().unwrap();
    let helm = bin.path().join("helm");
    std::fs::write(&helm, RECORDING_HELM).unwrap();
    std::fs::set_permissions(&helm, std::fs::Permissions::from_mode(0o755)).unwrap();
    let run = repo.strata_env(&["render", "metrics-eu"], &[("PATH", &path_with(bin.path()))]).ok();
    let docs: Vec<serde_json::Value> = serde_saphyr::from_multiple(&run.stdout).unwrap();
    let argv: Vec<&str> = docs[0]["data"]["argv"].as_str().unwrap().lines().collect();
    let checkout = argv[2].strip_suffix("/charts/metrics").expect("the chart in strata's checkout");
    let values = argv[10].strip_suffix("/values.yaml").expect("strata's values file");
    assert!(!values.starts_with(checkout), "strata's values are written to the run's scratch, not the checkout");
    assert_eq!(
        argv,
        [
            "template",
            "prom",
            &format!("{checkout}/charts/metrics"),
            "--namespace",
            "metrics",
            "--values",
            &format!("{checkout}/values/metrics/base.yaml"),
            "--values",
            &format!("{checkout}/values/metrics/eu.yaml"),
            "--values",
            &format!("{values}/values.yaml"),
            "--include-crds",
            "--kube-version",
            "v1.31.2-eks-0a1b",
            "--api-versions",
            "monitoring.coreos.com/v1",
            "--api-versions",
            "cert-manager.io/v1",
            "--api-versions",
            "example.com/v1/Widget",
        ]
    );
}
