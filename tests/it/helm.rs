//! Helm layers through the real Helm engine: charts of the shapes operators meet (a library chart,
//! subcharts taking values from their parent and `global`, `tpl`, `include`, `lookup`, CRDs,
//! hooks, `.Capabilities`), rendered by strata and compared object for object with what the
//! engine itself prints for the same chart and values.
//!
//! The engine is `helm` on PATH, or the one scripts/test installs (target/test-tools/bin/helm:
//! Helm's Go SDK from PyPI's helm-python-sdk behind a `helm template` shim, tests/helm/helm).
//! Tests that need it say so and skip when there is none; the checks strata makes before helm
//! runs (vendored dependencies, values files, capabilities) are tested without it.

use crate::common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use common::Repo;
use serde_json::{Value, json};
use strata::render::object::{self, Stamp};

/// The helm the tests drive, when there is one that templates.
fn engine() -> Option<&'static Path> {
    static ENGINE: OnceLock<Option<PathBuf>> = OnceLock::new();
    ENGINE
        .get_or_init(|| {
            // target/debug/deps/helm-… → target/test-tools/bin/helm
            let installed = std::env::current_exe()
                .ok()
                .and_then(|exe| Some(exe.parent()?.parent()?.parent()?.join("test-tools/bin/helm")));
            let candidates = strata::render::tools::which("helm").into_iter().chain(installed);
            for helm in candidates.filter(|p| p.is_file()) {
                match Command::new(&helm).arg("version").output() {
                    Ok(out) if out.status.success() => {
                        eprintln!("helm engine: {} ({})", helm.display(), String::from_utf8_lossy(&out.stdout).trim());
                        return Some(helm);
                    }
                    Ok(out) => eprintln!("{} does not run: {}", helm.display(), String::from_utf8_lossy(&out.stderr)),
                    Err(e) => eprintln!("{} does not run: {e}", helm.display()),
                }
            }
            None
        })
        .as_deref()
}

macro_rules! need_engine {
    () => {
        match engine() {
            Some(helm) => helm,
            None => {
                eprintln!(
                    "skipped: no helm engine (scripts/test installs helm-python-sdk and the tests/helm/helm shim into target/test-tools)"
                );
                return;
            }
        }
    };
}

/// PATH with the engine's directory first, for strata's own runs.
fn path_with(helm: &Path) -> String {
    format!("{}:{}", helm.parent().unwrap().display(), std::env::var("PATH").unwrap_or_default())
}

const PROFILE: &str = "apiVersion: strata.dev/v1
kind: Profile
metadata: { name: web, version: 1.0.0 }
spec:
  layers:
    - name: web
      type: helm
      source: charts/web
      namespace: web
      releaseName: shop
      valuesFiles: [values/web/base.yaml, values/web/prod.yaml]
      kubeVersion: 1.20.0
      values:
        prec: { d: layer, e: layer }
";

/// On the layer's kubeVersion, with nothing of its own.
const WEB_OLD: &str = "apiVersion: strata.dev/v1
kind: Cluster
metadata: { name: web-old }
spec:
  profile: { name: web, version: 1.0.0 }
";

/// Kubernetes 1.30 with the Prometheus operator's API, and an override.
const WEB_NEW: &str = "apiVersion: strata.dev/v1
kind: Cluster
metadata: { name: web-new }
spec:
  profile: { name: web, version: 1.0.0 }
  kubeVersion: v1.30.2
  apiVersions: [monitoring.coreos.com/v1]
  overrides:
    web: { replicas: 3, prec: { e: cluster } }
";

/// An application chart (named `webapp`, in `charts/web`) on a library chart, a subchart it gives
/// values to and one a condition turns off; Chart.lock pins all three.
const CHART: &[(&str, &str)] = &[
    (
        "Chart.yaml",
        "apiVersion: v2
name: webapp
version: 1.2.0
appVersion: \"2.0\"
dependencies:
  - name: common
    version: ~0.3.0
    repository: file://../common
  - name: cache
    version: 1.x
    repository: https://charts.example.com
    condition: cache.enabled
  - name: extras
    version: 0.1.0
    repository: https://charts.example.com
    condition: extras.enabled
",
    ),
    (
        "Chart.lock",
        "dependencies:
- name: common
  repository: file://../common
  version: 0.3.1
- name: cache
  repository: https://charts.example.com
  version: 1.4.0
- name: extras
  repository: https://charts.example.com
  version: 0.1.0
digest: sha256:4d6f5fc0a0b1b8e7f3c2f0a9f0e7c1f3a2b9d8c7e6f5a4b3c2d1e0f9a8b7c6d5
generated: \"2026-01-01T00:00:00Z\"
",
    ),
    (
        "values.yaml",
        "replicas: 1
greeting: hello
greetingTemplate: \"{{ .Values.greeting }} from {{ .Release.Name }}\"
prec: { a: chart, b: chart, c: chart, d: chart, e: chart }
requireDb: false
cache:
  enabled: true
  key: from-parent
extras:
  enabled: false
global:
  env: staging
",
    ),
    ("templates/NOTES.txt", "{{ .Release.Name }} is installed.\n"),
    (
        "templates/_helpers.tpl",
        "{{- define \"webapp.fullname\" -}}
{{ .Release.Name }}-{{ .Chart.Name }}
{{- end }}
",
    ),
    (
        "templates/deployment.yaml",
        "apiVersion: apps/v1
kind: Deployment
metadata:
  name: {{ include \"webapp.fullname\" . }}
  labels:
    {{- include \"common.labels\" . | nindent 4 }}
spec:
  replicas: {{ .Values.replicas }}
  selector:
    matchLabels: {app: {{ include \"webapp.fullname\" . }}}
  template:
    metadata:
      labels: {app: {{ include \"webapp.fullname\" . }}}
    spec:
      containers:
        - name: web
          image: \"example.com/web:{{ .Chart.AppVersion }}\"
",
    ),
    (
        "templates/configmap.yaml",
        "{{- $existing := lookup \"v1\" \"Secret\" .Release.Namespace \"webapp-db\" }}
apiVersion: v1
kind: ConfigMap
metadata:
  name: {{ include \"webapp.fullname\" . }}-config
data:
  greeting: {{ tpl .Values.greetingTemplate . | quote }}
  password: {{ if $existing }}kept{{ else }}generated{{ end }}
  namespace: {{ .Release.Namespace }}
  precedence: {{ printf \"%s %s %s %s %s\" .Values.prec.a .Values.prec.b .Values.prec.c .Values.prec.d .Values.prec.e | quote }}
",
    ),
    (
        "templates/pdb.yaml",
        "{{- if semverCompare \">=1.21-0\" .Capabilities.KubeVersion.GitVersion }}
apiVersion: policy/v1
{{- else }}
apiVersion: policy/v1beta1
{{- end }}
kind: PodDisruptionBudget
metadata:
  name: {{ include \"webapp.fullname\" . }}
  annotations:
    kube-version: {{ .Capabilities.KubeVersion.Version | quote }}
spec:
  minAvailable: 1
  selector:
    matchLabels: {app: {{ include \"webapp.fullname\" . }}}
",
    ),
    (
        "templates/servicemonitor.yaml",
        "{{- if .Capabilities.APIVersions.Has \"monitoring.coreos.com/v1\" }}
apiVersion: monitoring.coreos.com/v1
kind: ServiceMonitor
metadata:
  name: {{ include \"webapp.fullname\" . }}
spec:
  selector:
    matchLabels: {app: {{ include \"webapp.fullname\" . }}}
{{- end }}
",
    ),
    (
        "templates/crontab.yaml",
        "apiVersion: stable.example.com/v1
kind: CronTab
metadata:
  name: {{ .Release.Name }}-nightly
spec:
  cronSpec: \"0 3 * * *\"
",
    ),
    (
        "templates/hook.yaml",
        "apiVersion: batch/v1
kind: Job
metadata:
  name: {{ .Release.Name }}-migrate
  annotations:
    \"helm.sh/hook\": post-install,post-upgrade
    \"helm.sh/hook-weight\": \"1\"
spec:
  template:
    spec:
      restartPolicy: Never
      containers: [{name: migrate, image: \"example.com/migrate:1\"}]
",
    ),
    (
        "templates/db-secret.yaml",
        "{{- if .Values.requireDb }}
apiVersion: v1
kind: Secret
metadata:
  name: {{ .Release.Name }}-db
stringData:
  password: {{ required \"dbPassword is required when requireDb is set\" .Values.dbPassword | quote }}
{{- end }}
{{- if .Values.checkPassword }}
{{- fail (printf \"password %s is too short\" .Values.dbPassword) }}
{{- end }}
",
    ),
    (
        "crds/crontabs.yaml",
        "apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata:
  name: crontabs.stable.example.com
spec:
  group: stable.example.com
  scope: Namespaced
  names: {kind: CronTab, plural: crontabs, singular: crontab}
  versions:
    - name: v1
      served: true
      storage: true
      schema: {openAPIV3Schema: {type: object, x-kubernetes-preserve-unknown-fields: true}}
",
    ),
    ("charts/common/Chart.yaml", "apiVersion: v2\nname: common\nversion: 0.3.1\ntype: library\n"),
    (
        "charts/common/templates/_labels.tpl",
        "{{- define \"common.labels\" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
helm.sh/chart: {{ printf \"%s-%s\" .Chart.Name .Chart.Version }}
{{- end }}
",
    ),
    ("charts/cache/Chart.yaml", "apiVersion: v2\nname: cache\nversion: 1.4.0\n"),
    ("charts/cache/values.yaml", "key: default-key\nsize: 64Mi\n"),
    (
        "charts/cache/templates/configmap.yaml",
        "apiVersion: v1
kind: ConfigMap
metadata:
  name: {{ .Release.Name }}-cache
data:
  key: {{ .Values.key }}
  size: {{ .Values.size }}
  env: {{ .Values.global.env }}
",
    ),
    ("charts/extras/Chart.yaml", "apiVersion: v2\nname: extras\nversion: 0.1.0\n"),
    ("charts/extras/templates/cm.yaml", "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: extras}\n"),
    (
        "charts/extras/crds/widgets.yaml",
        "apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata: {name: widgets.example.com}
spec:
  group: example.com
  scope: Namespaced
  names: {kind: Widget, plural: widgets}
  versions: [{name: v1, served: true, storage: true, schema: {openAPIV3Schema: {type: object}}}]
",
    ),
];

const BASE_VALUES: &str = "prec: { b: base, c: base, d: base, e: base }\nreplicas: 2\n";
const PROD_VALUES: &str = "prec: { c: prod, d: prod, e: prod }\ndbPassword: correct-horse-battery\n";

/// A plain repository (a Git one with `git`) with the web profile, its chart and both clusters.
fn web_repo(git: bool) -> Repo {
    let repo = if git { Repo::example() } else { Repo::plain_example() };
    repo.write("profiles/web/1.0.0/profile.yaml", PROFILE)
        .write("clusters/web-old.yaml", WEB_OLD)
        .write("clusters/web-new.yaml", WEB_NEW)
        .write("values/web/base.yaml", BASE_VALUES)
        .write("values/web/prod.yaml", PROD_VALUES);
    for (path, text) in CHART {
        repo.write(&format!("charts/web/{path}"), text);
    }
    if git {
        repo.commit("web");
    }
    repo
}

fn docs(yaml: &str) -> Vec<Value> {
    serde_saphyr::from_multiple::<Value>(yaml).unwrap().into_iter().filter(|d| !d.is_null()).collect()
}

fn render(repo: &Repo, helm: &Path, cluster: &str) -> Vec<Value> {
    let run = repo.strata_env(&["render", cluster], &[("PATH", &path_with(helm))]).ok();
    let mut out = docs(&run.stdout);
    for doc in &mut out {
        if let Some(annotations) = doc["metadata"]["annotations"].as_object_mut() {
            annotations.remove("strata.dev/revision");
        }
    }
    out
}

/// What the engine prints for the layer of `cluster`, given what strata gives helm: the values
/// files, then the layer's values with the cluster's overrides merged over them.
fn engine_output(repo: &Repo, helm: &Path, overrides: Value, capabilities: &[&str]) -> String {
    let mut values = json!({"prec": {"d": "layer", "e": "layer"}}).as_object().unwrap().clone();
    strata::render::merge_values(&mut values, overrides.as_object().unwrap());
    let scratch = tempfile::tempdir().unwrap();
    let values_file = scratch.path().join("values.yaml");
    std::fs::write(&values_file, serde_json::to_string(&values).unwrap()).unwrap();
    let out = Command::new(helm)
        .arg("template")
        .arg("shop")
        .arg(repo.path().join("charts/web"))
        .args(["--namespace", "web", "--values"])
        .arg(repo.path().join("values/web/base.yaml"))
        .arg("--values")
        .arg(repo.path().join("values/web/prod.yaml"))
        .arg("--values")
        .arg(&values_file)
        .arg("--include-crds")
        .args(capabilities)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

/// The engine's objects as strata applies them: in the layer's namespace when they name none (but
/// cluster-scoped ones), stamped with strata's labels and annotations.
fn as_strata_stamps(engine_docs: Vec<Value>, cluster: &str) -> Vec<Value> {
    let stamp = Stamp { cluster, profile: "web", version: "1.0.0", layer: "web" };
    engine_docs
        .into_iter()
        .map(|mut doc| {
            let group = object::group_of(doc["apiVersion"].as_str().unwrap()).to_string();
            if object::is_cluster_scoped_builtin(&group, doc["kind"].as_str().unwrap()) {
                doc["metadata"].as_object_mut().unwrap().remove("namespace");
            } else if doc["metadata"]["namespace"].is_null() {
                doc["metadata"]["namespace"] = json!("web");
            }
            object::stamp(&mut doc, &stamp);
            doc
        })
        .collect()
}

fn sorted(mut docs: Vec<Value>) -> Vec<Value> {
    let key = |d: &Value| {
        format!("{}/{}/{}/{}", d["apiVersion"], d["kind"], d["metadata"]["namespace"], d["metadata"]["name"])
    };
    docs.sort_by_key(key);
    docs
}

fn find<'d>(docs: &'d [Value], kind: &str, name: &str) -> Option<&'d Value> {
    docs.iter().find(|d| d["kind"] == kind && d["metadata"]["name"] == name)
}

#[test]
fn charts_render_object_for_object_as_the_engine_renders_them() {
    let helm = need_engine!();
    let repo = web_repo(false);
    for (cluster, overrides, capabilities) in [
        ("web-old", json!({}), vec!["--kube-version", "1.20.0"]),
        (
            "web-new",
            json!({"replicas": 3, "prec": {"e": "cluster"}}),
            vec!["--kube-version", "v1.30.2", "--api-versions", "monitoring.coreos.com/v1"],
        ),
    ] {
        let ours = render(&repo, helm, cluster);
        let theirs = docs(&engine_output(&repo, helm, overrides, &capabilities));
        assert_eq!(
            sorted(ours.clone()),
            sorted(as_strata_stamps(theirs, cluster)),
            "{cluster}: strata's objects differ from the engine's"
        );

        // And they are what the chart says, feature by feature.
        let deployment = find(&ours, "Deployment", "shop-webapp").expect("the Deployment");
        let labels = &deployment["metadata"]["labels"];
        assert_eq!(labels["app.kubernetes.io/name"], "webapp", "the library chart's define: {labels}");
        assert_eq!(labels["helm.sh/chart"], "webapp-1.2.0");
        assert_eq!(labels["strata.dev/layer"], "web", "strata's stamps beside the chart's");
        assert_eq!(deployment["metadata"]["namespace"], "web");
        let config = &find(&ours, "ConfigMap", "shop-webapp-config").unwrap()["data"];
        assert_eq!(config["greeting"], "hello from shop", "tpl");
        assert_eq!(config["password"], "generated", "lookup finds nothing offline");
        assert_eq!(config["namespace"], "web");
        let cache = &find(&ours, "ConfigMap", "shop-cache").expect("the subchart's ConfigMap")["data"];
        assert_eq!(cache["key"], "from-parent", "subchart values from the parent");
        assert_eq!(cache["size"], "64Mi", "the subchart's own defaults");
        assert_eq!(cache["env"], "staging", "global");
        assert!(find(&ours, "ConfigMap", "extras").is_none(), "a disabled subchart renders nothing");
        assert!(find(&ours, "CustomResourceDefinition", "widgets.example.com").is_none(), "nor its CRDs");
        assert!(find(&ours, "CustomResourceDefinition", "crontabs.stable.example.com").is_some(), "crds/");
        assert_eq!(find(&ours, "CronTab", "shop-nightly").unwrap()["metadata"]["namespace"], "web");
        assert!(find(&ours, "Job", "shop-migrate").is_some(), "hooks, as helm template prints them");
        assert!(!ours.iter().any(|d| d.to_string().contains("is installed")), "no NOTES.txt");

        let pdb = find(&ours, "PodDisruptionBudget", "shop-webapp").unwrap();
        let monitor = find(&ours, "ServiceMonitor", "shop-webapp");
        match cluster {
            "web-old" => {
                assert_eq!(pdb["apiVersion"], "policy/v1beta1", "the layer's kubeVersion: 1.20");
                assert_eq!(pdb["metadata"]["annotations"]["kube-version"], "v1.20.0");
                assert!(monitor.is_none(), "no monitoring API declared");
                assert_eq!(deployment["spec"]["replicas"], 2, "from the values file");
            }
            _ => {
                assert_eq!(pdb["apiVersion"], "policy/v1", "the cluster's kubeVersion over the layer's");
                assert_eq!(pdb["metadata"]["annotations"]["kube-version"], "v1.30.2");
                assert!(monitor.is_some(), "the cluster's apiVersions");
                assert_eq!(deployment["spec"]["replicas"], 3, "the cluster's override");
            }
        }
    }
}

#[test]
fn values_files_apply_in_order_under_the_layers_values_and_the_clusters_overrides() {
    let helm = need_engine!();
    let repo = web_repo(false);
    let precedence = |cluster: &str| {
        let docs = render(&repo, helm, cluster);
        find(&docs, "ConfigMap", "shop-webapp-config").unwrap()["data"]["precedence"].as_str().unwrap().to_string()
    };
    // a: the chart's default; b: base.yaml over it; c: prod.yaml over base.yaml; d: the layer's
    // values over both files; e: the cluster's override over everything.
    assert_eq!(precedence("web-new"), "chart base prod layer cluster");
    assert_eq!(precedence("web-old"), "chart base prod layer layer");
}

#[test]
fn a_failing_template_is_an_error_naming_the_template_and_line() {
    let helm = need_engine!();
    let repo = web_repo(false);
    repo.edit(
        "clusters/web-old.yaml",
        "version: 1.0.0 }",
        "version: 1.0.0 }\n  overrides:\n    web: { requireDb: true }",
    );
    repo.edit("values/web/prod.yaml", "dbPassword: correct-horse-battery\n", "");
    let run = repo.strata_env(&["validate"], &[("PATH", &path_with(helm))]);
    assert_eq!(run.code, 1, "{}", run.stderr);
    assert!(
        run.stderr.contains(
            "error[helm]: charts/web/templates/db-secret.yaml:7: profile web@1.0.0 layer web: `helm template` failed: "
        ),
        "{}",
        run.stderr
    );
    assert!(run.stderr.contains("(webapp/templates/db-secret.yaml:7:"), "helm's own words: {}", run.stderr);
    assert!(run.stderr.contains("dbPassword is required when requireDb is set"), "{}", run.stderr);

    // What a chart echoes of a credential from a values file is not shown (this one does not
    // look like a secret: it is known as one by its key).
    let repo = web_repo(false);
    repo.edit(
        "clusters/web-old.yaml",
        "version: 1.0.0 }",
        "version: 1.0.0 }\n  overrides:\n    web: { checkPassword: true }",
    );
    let run = repo.strata_env(&["validate"], &[("PATH", &path_with(helm))]);
    assert_eq!(run.code, 1, "{}", run.stderr);
    assert!(run.stderr.contains("error[helm]: charts/web/templates/db-secret.yaml:10:"), "{}", run.stderr);
    assert!(run.stderr.contains("is too short"), "{}", run.stderr);
    assert!(!run.stderr.contains("correct-horse-battery"), "a values file's secret leaked: {}", run.stderr);
}

#[test]
fn dependencies_must_be_vendored_at_the_locked_version() {
    // Checked before helm runs: no engine needed.
    let repo = web_repo(false);
    repo.remove("charts/web/charts/cache");
    let run = repo.strata(&["validate"]);
    assert_eq!(run.code, 1, "{}", run.stderr);
    assert!(
        run.stderr.contains(
            "error[helm]: charts/web/Chart.yaml:9: profile web@1.0.0 layer web: chart `webapp` depends on `cache` (1.x), which is not vendored in charts/web/charts/"
        ),
        "{}",
        run.stderr
    );
    assert!(run.stderr.contains("help: strata never fetches charts: run `helm dependency build`"), "{}", run.stderr);

    let repo = web_repo(false);
    repo.edit("charts/web/Chart.lock", "version: 1.4.0", "version: 1.5.0");
    let run = repo.strata(&["validate"]);
    assert_eq!(run.code, 1, "{}", run.stderr);
    assert!(
        run.stderr.contains(
            "error[helm]: charts/web/Chart.lock:5: profile web@1.0.0 layer web: chart `webapp`: dependency `cache` is vendored at 1.4.0 (charts/web/charts/cache), but Chart.lock says 1.5.0"
        ),
        "{}",
        run.stderr
    );
}

#[test]
fn values_files_and_capabilities_are_checked_where_they_are_written() {
    let repo = web_repo(false);
    repo.edit(
        "profiles/web/1.0.0/profile.yaml",
        "valuesFiles: [values/web/base.yaml, values/web/prod.yaml]",
        "valuesFiles: [values/web/base.yaml, ../outside.yaml, values/web/missing.yaml, values/web]",
    )
    .edit("profiles/web/1.0.0/profile.yaml", "kubeVersion: 1.20.0", "kubeVersion: twenty")
    .edit("clusters/web-new.yaml", "apiVersions: [monitoring.coreos.com/v1]", "apiVersions: [\"--set=x\"]");
    let run = repo.strata(&["validate"]);
    assert_eq!(run.code, 1, "{}", run.stderr);
    let profile = "profiles/web/1.0.0/profile.yaml";
    for expected in [
        format!(
            "error[path]: {profile}:11: profile web@1.0.0 layer web: valuesFiles: `../outside.yaml` leaves the repository"
        ),
        format!(
            "error[path]: {profile}:11: profile web@1.0.0 layer web: valuesFiles: `values/web/missing.yaml` does not exist"
        ),
        format!("error[path]: {profile}:11: profile web@1.0.0 layer web: valuesFiles: `values/web` is a directory"),
        format!(
            "error[schema]: {profile}:12: profile web@1.0.0 layer web: kubeVersion `twenty` is not a Kubernetes version"
        ),
        "error[schema]: clusters/web-new.yaml:7: cluster web-new: apiVersions entry `--set=x` is not an API version"
            .to_string(),
    ] {
        assert!(run.stderr.contains(&expected), "expected {expected:?} in:\n{}", run.stderr);
    }

    // Helm settings on a layer helm does not render.
    let repo = Repo::plain_example();
    repo.edit(
        "profiles/aws-profile/1.0.0/profile.yaml",
        "source: packs/hello-universe/manifests",
        "source: packs/hello-universe/manifests\n      valuesFiles: [clusters/aws-cluster.yaml]",
    );
    let run = repo.strata(&["validate"]);
    assert_eq!(run.code, 1);
    assert!(run.stderr.contains("valuesFiles is only for helm layers"), "{}", run.stderr);
}

fn plan(repo: &Repo, helm: &Path) -> Value {
    let run = repo.strata_env(&["plan", "--format", "json"], &[("PATH", &path_with(helm))]).ok();
    serde_json::from_str(&run.stdout).unwrap()
}

fn planned<'p>(plan: &'p Value, name: &str) -> &'p Value {
    plan["clusters"].as_array().unwrap().iter().find(|c| c["cluster"] == name).unwrap()
}

#[test]
fn a_plan_renders_again_when_a_values_file_or_the_clusters_kubernetes_changes() {
    let helm = need_engine!();
    let repo = web_repo(true);

    // A values file beside the layer's, named by none: nothing to render.
    repo.write("values/web/unused.yaml", "replicas: 9\n");
    repo.commit("unused values");
    let p = plan(&repo, helm);
    assert_eq!(planned(&p, "web-old")["kind"], "unchanged");
    assert!(planned(&p, "web-old")["base_digest"].is_null(), "web-old was not rendered: {p}");

    // One of the layer's values files: an in-place edit of the profile version.
    repo.edit("values/web/base.yaml", "replicas: 2", "replicas: 4");
    repo.commit("base values: 4 replicas");
    let p = plan(&repo, helm);
    let old = planned(&p, "web-old");
    assert_eq!(old["kind"], "in-place-edit", "{old}");
    assert!(old["objects"].to_string().contains("replicas: 4"), "{old}");
    let new = planned(&p, "web-new");
    assert!(!new["base_digest"].is_null(), "rendered again: {new}");
    assert_eq!(new["kind"], "unchanged", "its override sets the replicas: {new}");

    // The cluster's Kubernetes version: rendered again, as a change of the cluster's settings.
    repo.edit("clusters/web-new.yaml", "kubeVersion: v1.30.2", "kubeVersion: v1.20.15");
    repo.commit("web-new is older than we thought");
    let p = plan(&repo, helm);
    let new = planned(&p, "web-new");
    assert_eq!(new["kind"], "override", "{new}");
    assert!(new["objects"].to_string().contains("policy/v1beta1"), "{new}");
}
