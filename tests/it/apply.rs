//! Apply, prune, health and drift against the API server stand-in in `tests/apiserver`, through
//! the `strata` binary with a kubeconfig (end to end) and through the library (in-process).

use crate::apiserver;
use crate::common;

use std::path::{Path, PathBuf};
use std::process::Command;

use apiserver::ApiServer;
use common::{Repo, Run};
use serde_json::Value;

const AWS_CLUSTER: &str = "clusters/aws-cluster.yaml";

/// A host config mapping every example cluster's target to `kubeconfig`.
fn host_config(dir: &Path, kubeconfig: &Path, extra: &str) -> PathBuf {
    let path = dir.join("strata.yaml");
    let k = kubeconfig.display();
    std::fs::write(
        &path,
        format!(
            "targets:\n  aws-cluster: {{ kubeconfig: {k}, context: harness }}\n  aws-staging: {{ kubeconfig: {k} }}\n  edge-berlin: {{ kubeconfig: {k} }}\n  lab: {{ kubeconfig: {k} }}\n{extra}apply:\n  health_timeout: 5s\n"
        ),
    )
    .unwrap();
    path
}

fn kubectl(kubeconfig: &Path, args: &[&str]) -> String {
    let out = Command::new("kubectl").arg("--kubeconfig").arg(kubeconfig).args(args).output().expect("kubectl runs");
    assert!(out.status.success(), "kubectl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

/// `kubectl create --raw`: kubectl's typed create speaks protobuf, which the stand-in does not.
fn kubectl_create(kubeconfig: &Path, api_path: &str, object: Value) {
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), object.to_string()).unwrap();
    kubectl(kubeconfig, &["create", "--raw", api_path, "-f", file.path().to_str().unwrap()]);
}

fn kubectl_json(kubeconfig: &Path, args: &[&str]) -> Value {
    let mut args = args.to_vec();
    args.extend(["-o", "json"]);
    serde_json::from_str(&kubectl(kubeconfig, &args)).unwrap()
}

fn apply(repo: &Repo, config: &Path, args: &[&str]) -> Run {
    let mut all = vec!["apply"];
    all.extend(args);
    all.extend(["--config", config.to_str().unwrap()]);
    repo.strata(&all)
}

#[test]
fn the_tutorial_end_to_end_through_a_kubeconfig() {
    let server = ApiServer::start();
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = server.kubeconfig(dir.path());
    let config = host_config(dir.path(), &kubeconfig, "");
    let repo = Repo::example();

    // 1.0.0: namespace, service, deployment.
    let run = apply(&repo, &config, &["aws-cluster"]).ok();
    assert!(run.stdout.contains("aws-cluster: applied aws-profile@1.0.0"), "{}", run.stdout);
    assert!(run.stdout.contains("3 created"), "{}", run.stdout);
    let ui = kubectl_json(&kubeconfig, &["get", "deployment", "ui", "-n", "hello-universe", "--show-managed-fields"]);
    assert_eq!(ui["spec"]["replicas"], 1);
    assert_eq!(ui["metadata"]["labels"]["strata.dev/cluster"], "aws-cluster");
    let managers: Vec<&str> =
        ui["metadata"]["managedFields"].as_array().unwrap().iter().map(|m| m["manager"].as_str().unwrap()).collect();
    assert_eq!(managers, ["strata"]);
    let inventory =
        kubectl_json(&kubeconfig, &["get", "configmap", "strata-inventory-aws-cluster", "-n", "strata-system"]);
    let entries: Value = serde_json::from_str(inventory["data"]["inventory.json"].as_str().unwrap()).unwrap();
    assert_eq!(entries["entries"].as_array().unwrap().len(), 3);

    // An unchanged re-apply writes nothing.
    server.clear_requests();
    let run = apply(&repo, &config, &["aws-cluster"]).ok();
    assert!(run.stdout.contains("3 unchanged"), "{}", run.stdout);
    let writes: Vec<_> = server.requests().into_iter().filter(|r| r.is_write()).collect();
    assert!(writes.is_empty(), "{writes:?}");

    // An override: two replicas.
    repo.edit(AWS_CLUSTER, "  updates: manual", "  overrides:\n    hello-universe: { replicas: 2 }\n  updates: manual");
    repo.commit("aws-cluster: two replicas");
    let run = apply(&repo, &config, &["aws-cluster"]).ok();
    assert!(run.stdout.contains("1 configured, 2 unchanged"), "{}", run.stdout);
    assert_eq!(kubectl_json(&kubeconfig, &["get", "deployment", "ui", "-n", "hello-universe"])["spec"]["replicas"], 2);

    // Upgrade to 1.1.0: kubecost arrives.
    repo.edit(AWS_CLUSTER, "version: \"1.0.0\"", "version: \"1.1.0\"");
    repo.commit("aws-cluster: 1.1.0");
    let run = apply(&repo, &config, &["aws-cluster"]).ok();
    assert!(run.stdout.contains("3 created"), "{}", run.stdout);
    kubectl(&kubeconfig, &["get", "deployment", "cost-analyzer-cost-analyzer", "-n", "kubecost"]);

    // Roll back to 1.0.0: exactly the kubecost objects are pruned.
    repo.edit(AWS_CLUSTER, "version: \"1.1.0\"", "version: \"1.0.0\"");
    repo.commit("aws-cluster: back to 1.0.0");
    let before: Vec<String> = server.names("deployments");
    let run = apply(&repo, &config, &["aws-cluster", "--format", "json"]).ok();
    let result: Value = serde_json::from_str(&run.stdout).unwrap();
    let pruned: Vec<String> = result[0]["result"]["objects"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|o| o["action"] == "pruned")
        .map(|o| format!("{}/{}", o["id"]["kind"].as_str().unwrap(), o["id"]["name"].as_str().unwrap()))
        .collect();
    assert_eq!(
        pruned,
        ["Deployment/cost-analyzer-cost-analyzer", "Service/cost-analyzer-cost-analyzer", "Namespace/kubecost"]
    );
    assert_eq!(before, ["hello-universe/ui", "kubecost/cost-analyzer-cost-analyzer"]);
    assert_eq!(server.names("deployments"), ["hello-universe/ui"]);
    assert!(!server.names("namespaces").contains(&"kubecost".to_string()));

    // Someone scales the deployment by hand: drift, reported with the field path, then corrected.
    kubectl(&kubeconfig, &["scale", "deployment", "ui", "-n", "hello-universe", "--replicas=5"]);
    let run = repo.strata(&["drift", "aws-cluster", "--policy", "report", "--config", config.to_str().unwrap()]);
    assert_eq!(run.code, 3, "{}{}", run.stdout, run.stderr);
    assert!(
        run.stdout.contains("Deployment/hello-universe/ui (layer hello-universe): /spec/replicas: live 5 desired 2"),
        "{}",
        run.stdout
    );
    let run = repo.strata(&["drift", "aws-cluster", "--policy", "correct", "--config", config.to_str().unwrap()]).ok();
    assert!(run.stdout.contains("corrected: 1 configured"), "{}", run.stdout);
    assert_eq!(kubectl_json(&kubeconfig, &["get", "deployment", "ui", "-n", "hello-universe"])["spec"]["replicas"], 2);
    let run = repo.strata(&["drift", "aws-cluster", "--config", config.to_str().unwrap()]).ok();
    assert!(run.stdout.contains("aws-cluster: no drift"), "{}", run.stdout);
}

#[test]
fn an_unreachable_cluster_fails_clearly_and_the_others_are_applied() {
    let server = ApiServer::start();
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = server.kubeconfig(dir.path());
    let down = tempfile::tempdir().unwrap();
    // Port 1 on loopback: nothing listens there, so connections are refused at once.
    let dead = apiserver::kubeconfig_for("http://127.0.0.1:1", down.path());
    let config = dir.path().join("strata.yaml");
    std::fs::write(
        &config,
        format!(
            "targets:\n  aws-cluster: {{ kubeconfig: {} }}\n  aws-staging: {{ kubeconfig: {} }}\n",
            dead.display(),
            kubeconfig.display()
        ),
    )
    .unwrap();
    let repo = Repo::example();
    let run = apply(&repo, &config, &["aws-cluster", "aws-staging"]);
    assert_eq!(run.code, 1, "{}{}", run.stdout, run.stderr);
    assert!(run.stdout.contains("aws-cluster: failed: cluster unreachable"), "{}", run.stdout);
    assert!(run.stdout.contains("aws-staging: applied aws-profile@1.1.0"), "{}", run.stdout);
    assert_eq!(server.names("deployments"), ["hello-universe/ui", "kubecost/cost-analyzer-cost-analyzer"]);
}

#[test]
fn directory_targets_write_one_file_per_object_and_prune_them() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("rendered");
    let config = dir.path().join("strata.yaml");
    std::fs::write(&config, format!("targets:\n  aws-cluster: {{ directory: {} }}\n", out.display())).unwrap();
    let repo = Repo::example();
    repo.edit(AWS_CLUSTER, "version: \"1.0.0\"", "version: \"1.1.0\"");
    repo.commit("1.1.0");
    apply(&repo, &config, &["aws-cluster"]).ok();
    let deployment = out.join("kubecost/deployment.cost-analyzer-cost-analyzer.yaml");
    assert!(deployment.exists());
    assert!(out.join("_cluster/namespace.kubecost.yaml").exists());
    let text = std::fs::read_to_string(&deployment).unwrap();
    assert!(text.contains("strata.dev/cluster: aws-cluster"), "{text}");

    let run = apply(&repo, &config, &["aws-cluster"]).ok();
    assert!(run.stdout.contains("6 unchanged"), "{}", run.stdout);

    repo.edit(AWS_CLUSTER, "version: \"1.1.0\"", "version: \"1.0.0\"");
    repo.commit("back to 1.0.0");
    let run = apply(&repo, &config, &["aws-cluster"]).ok();
    // The kept objects change too: their strata.dev/profile-version annotation goes back to 1.0.0.
    assert!(run.stdout.contains("3 configured, 3 pruned"), "{}", run.stdout);
    assert!(!deployment.exists());
    assert!(!out.join("kubecost").exists(), "empty namespace directories are removed");
    assert!(out.join("hello-universe/deployment.ui.yaml").exists());
}

#[test]
fn diff_and_dry_run_show_changes_without_writing() {
    let server = ApiServer::start();
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = server.kubeconfig(dir.path());
    let config = host_config(dir.path(), &kubeconfig, "");
    let repo = Repo::example();

    server.clear_requests();
    let run = apply(&repo, &config, &["aws-cluster", "--dry-run"]).ok();
    assert!(run.stdout.contains("aws-cluster: would apply aws-profile@1.0.0"), "{}", run.stdout);
    assert!(run.stdout.contains("3 created"), "{}", run.stdout);
    assert!(server.requests().iter().all(|r| !r.is_write()), "a dry run writes nothing");
    assert!(server.names("deployments").is_empty());

    apply(&repo, &config, &["aws-cluster"]).ok();
    let diff = repo.strata(&["diff", "aws-cluster", "--config", config.to_str().unwrap()]);
    assert_eq!(diff.code, 0, "{}{}", diff.stdout, diff.stderr);

    repo.edit(AWS_CLUSTER, "  updates: manual", "  overrides:\n    hello-universe: { replicas: 4 }\n  updates: manual");
    repo.commit("four");
    let diff = repo.strata(&["diff", "aws-cluster", "--config", config.to_str().unwrap()]);
    assert_eq!(diff.code, 3, "{}{}", diff.stdout, diff.stderr);
    assert!(diff.stdout.contains("-  replicas: 1\n+  replicas: 4\n"), "{}", diff.stdout);
    assert!(!diff.stdout.contains("managedFields"), "server-maintained fields are not shown");
    assert_eq!(server.object("deployments", Some("hello-universe"), "ui").unwrap()["spec"]["replicas"], 1);
}

mod library {
    //! The reconciler through the library, against the stand-in API server.

    use super::*;
    use apiserver::Rollout;
    use serde_json::json;
    use strata::apply::health::Health;
    use strata::apply::{self, Action, ChangeSet, Options, ReconcileError};
    use strata::model::LayerKind;
    use strata::render::object::{ObjectId, Stamp, stamp};
    use strata::render::{DesiredSet, LayerSet, Object};
    use strata::target::kube::KubeTarget;

    /// A desired set for cluster `c` from (layer, manifests), stamped as rendering would.
    fn desired(layers: &[(&str, Vec<Value>)]) -> DesiredSet {
        let layers = layers
            .iter()
            .map(|(name, manifests)| LayerSet {
                name: name.to_string(),
                kind: LayerKind::Manifests,
                objects: manifests
                    .iter()
                    .map(|m| {
                        let mut manifest = m.clone();
                        stamp(&mut manifest, &Stamp { cluster: "c", profile: "p", version: "1.0.0", layer: name });
                        let api_version = m["apiVersion"].as_str().unwrap();
                        Object {
                            id: ObjectId::new(
                                api_version,
                                m["kind"].as_str().unwrap(),
                                m["metadata"]["namespace"].as_str(),
                                m["metadata"]["name"].as_str().unwrap(),
                            ),
                            file: String::new(),
                            line: 0,
                            manifest,
                            ignore: vec![],
                            sensitive: vec![],
                        }
                    })
                    .collect::<Vec<_>>(),
                digest: String::new(),
            })
            .map(|mut layer| {
                layer.objects.sort_by(|a, b| strata::render::object::apply_order(&a.id, &b.id));
                layer
            })
            .collect();
        DesiredSet {
            cluster: "c".into(),
            profile: "p".into(),
            version: "1.0.0".into(),
            layers,
            digest: "sha256:test".into(),
        }
    }

    fn namespace(name: &str) -> Value {
        json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}})
    }

    fn configmap(ns: &str, name: &str, data: Value) -> Value {
        json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name, "namespace": ns}, "data": data})
    }

    fn deployment(ns: &str, name: &str) -> Value {
        json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name, "namespace": ns},
               "spec": {"selector": {"matchLabels": {"app": name}}, "template": {"metadata": {"labels": {"app": name}},
                        "spec": {"containers": [{"name": "app", "image": "nginx:1.27"}]}}}})
    }

    struct Cluster {
        server: ApiServer,
        _dir: tempfile::TempDir,
        kubeconfig: PathBuf,
        runtime: tokio::runtime::Runtime,
        target: KubeTarget,
    }

    fn cluster() -> Cluster {
        let server = ApiServer::start();
        let dir = tempfile::tempdir().unwrap();
        let kubeconfig = server.kubeconfig(dir.path());
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let network = strata::net::Network::with_router(strata::net::Router::direct());
        let target = runtime.block_on(KubeTarget::from_kubeconfig(&kubeconfig, None, &network)).unwrap();
        Cluster { server, _dir: dir, kubeconfig, runtime, target }
    }

    fn options() -> Options {
        Options {
            health_timeout: std::time::Duration::from_secs(2),
            poll_interval: std::time::Duration::from_millis(50),
            ..Options::default()
        }
    }

    impl Cluster {
        fn reconcile(&self, set: &DesiredSet, options: &Options) -> Result<ChangeSet, ReconcileError> {
            self.runtime.block_on(apply::reconcile(&self.target, set, Some("r1"), options))
        }
    }

    fn actions(cs: &ChangeSet) -> Vec<String> {
        cs.objects.iter().map(|o| format!("{} {}", o.action, o.id)).collect()
    }

    #[test]
    fn crds_and_their_custom_resources_apply_in_stages() {
        let c = cluster();
        let crd = json!({"apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
            "metadata": {"name": "widgets.example.com"},
            "spec": {"group": "example.com", "scope": "Namespaced", "names": {"kind": "Widget", "plural": "widgets"},
                     "versions": [{"name": "v1", "served": true, "storage": true,
                                   "schema": {"openAPIV3Schema": {"type": "object", "properties": {
                                       "spec": {"type": "object", "properties": {"size": {"type": "integer"}}}}}}}]}});
        let widget = json!({"apiVersion": "example.com/v1", "kind": "Widget", "metadata": {"name": "w1", "namespace": "shop"}, "spec": {"size": 3}});
        let set = desired(&[("crds", vec![crd, namespace("shop")]), ("widgets", vec![widget])]);
        let cs = c.reconcile(&set, &options()).unwrap();
        assert_eq!(
            actions(&cs),
            [
                "created Namespace/shop",
                "created CustomResourceDefinition/widgets.example.com",
                "created Widget.example.com/shop/w1"
            ]
        );
        assert_eq!(c.server.object("widgets", Some("shop"), "w1").unwrap()["spec"]["size"], 3);
        // And a second time, nothing changes.
        let again = c.reconcile(&set, &options()).unwrap();
        assert_eq!(again.count(Action::Unchanged), 3);
    }

    #[test]
    fn a_failing_rollout_names_the_object_and_why() {
        let c = cluster();
        c.server.set_rollout("web", "api", Rollout::Failed);
        let set = desired(&[("web", vec![namespace("web"), deployment("web", "api"), deployment("web", "ok")])]);
        let cs = c.reconcile(&set, &options()).unwrap();
        assert!(cs.failed());
        assert_eq!(cs.unhealthy.len(), 1, "{:?}", cs.unhealthy);
        let (id, health) = &cs.unhealthy[0];
        assert_eq!(id.to_string(), "Deployment/web/api");
        assert!(matches!(health, Health::Failed(reason) if reason.contains("progress deadline")), "{health:?}");
    }

    #[test]
    fn a_stuck_rollout_times_out_as_progressing() {
        let c = cluster();
        c.server.set_rollout("web", "api", Rollout::Stuck);
        let set = desired(&[("web", vec![namespace("web"), deployment("web", "api")])]);
        let options = Options { health_timeout: std::time::Duration::from_millis(300), ..options() };
        let cs = c.reconcile(&set, &options).unwrap();
        assert!(
            matches!(&cs.unhealthy[0].1, Health::Progressing(r) if r.contains("0 of 1 updated replicas available")),
            "{:?}",
            cs.unhealthy
        );
    }

    #[test]
    fn validation_failure_writes_nothing() {
        let c = cluster();
        // `nowhere` is neither in the cluster nor in the set: the dry-run is refused.
        let set = desired(&[(
            "a",
            vec![namespace("fine"), configmap("fine", "x", json!({})), configmap("nowhere", "y", json!({}))],
        )]);
        c.server.clear_requests();
        let err = c.reconcile(&set, &options()).unwrap_err();
        let text = err.to_string();
        assert!(text.contains("validation failed, nothing was applied"), "{text}");
        assert!(
            text.contains("ConfigMap/nowhere/y (layer a)") && text.contains("namespaces \"nowhere\" not found"),
            "{text}"
        );
        assert!(c.server.requests().iter().all(|r| !r.is_write()), "{:?}", c.server.requests());
        assert!(!c.server.names("namespaces").contains(&"fine".to_string()));
    }

    #[test]
    fn prune_spares_namespaces_strata_did_not_create_and_objects_no_longer_labelled_as_its_own() {
        let c = cluster();
        kubectl_create(&c.kubeconfig, "/api/v1/namespaces", namespace("shared"));
        let v1 = desired(&[(
            "a",
            vec![
                namespace("shared"),
                configmap("shared", "mine", json!({})),
                configmap("shared", "handed-over", json!({})),
            ],
        )]);
        c.reconcile(&v1, &options()).unwrap();
        kubectl(
            &c.kubeconfig,
            &["label", "configmap", "handed-over", "-n", "shared", "strata.dev/cluster=someone-else", "--overwrite"],
        );
        let v2 = desired(&[("a", vec![configmap("default", "other", json!({}))])]);
        let cs = c.reconcile(&v2, &options()).unwrap();
        let by_id = |id: &str| {
            cs.objects.iter().find(|o| o.id.to_string() == id).unwrap_or_else(|| panic!("{id} in {:?}", actions(&cs)))
        };
        assert_eq!(by_id("ConfigMap/shared/mine").action, Action::Pruned);
        assert_eq!(by_id("ConfigMap/shared/handed-over").action, Action::Skipped);
        assert_eq!(by_id("Namespace/shared").action, Action::Skipped);
        assert!(c.server.names("namespaces").contains(&"shared".to_string()));
        assert_eq!(c.server.names("configmaps").iter().filter(|n| n.starts_with("shared/")).count(), 1);
    }

    #[test]
    fn an_empty_desired_set_does_not_prune_everything_unless_allowed() {
        let c = cluster();
        c.reconcile(&desired(&[("a", vec![namespace("x"), configmap("x", "y", json!({}))])]), &options()).unwrap();
        let empty = desired(&[("a", vec![])]);
        let err = c.reconcile(&empty, &options()).unwrap_err();
        assert!(matches!(err, ReconcileError::EmptyPrune { objects: 2 }), "{err}");
        assert!(c.server.names("configmaps").contains(&"x/y".to_string()));
        let cs = c.reconcile(&empty, &Options { allow_empty: true, ..options() }).unwrap();
        assert_eq!(cs.count(Action::Pruned), 2);
    }

    #[test]
    fn conflicts_with_other_managers_are_named_and_overridden() {
        let c = cluster();
        kubectl_create(
            &c.kubeconfig,
            "/api/v1/namespaces/default/configmaps",
            configmap("default", "settings", json!({"mode": "manual"})),
        );
        let set = desired(&[("a", vec![configmap("default", "settings", json!({"mode": "auto"}))])]);
        let cs = c.reconcile(&set, &options()).unwrap();
        let o = &cs.objects[0];
        assert_eq!(o.action, Action::Configured);
        let message = o.message.as_deref().unwrap_or("");
        assert!(
            message.contains("took over fields from another manager") && message.contains(".data.mode"),
            "{message}"
        );
        assert_eq!(c.server.object("configmaps", Some("default"), "settings").unwrap()["data"]["mode"], "auto");
    }

    #[test]
    fn ignored_fields_are_neither_drift_nor_reapplied() {
        let c = cluster();
        let mut set = desired(&[("web", vec![namespace("web"), deployment("web", "api")])]);
        set.layers[0].objects[1].ignore = vec!["/spec/replicas".into()];
        c.reconcile(&set, &options()).unwrap();
        // An autoscaler takes replicas.
        kubectl(&c.kubeconfig, &["scale", "deployment", "api", "-n", "web", "--replicas=7"]);
        let findings = c.runtime.block_on(apply::detect_drift(&c.target, &set, &options())).unwrap();
        assert_eq!(findings, vec![]);
        let cs = c.reconcile(&set, &options()).unwrap();
        assert_eq!(cs.count(Action::Unchanged), 2);
        assert_eq!(c.server.object("deployments", Some("web"), "api").unwrap()["spec"]["replicas"], 7);
    }

    #[test]
    fn a_rollout_is_watched_not_polled() {
        let c = cluster();
        c.server.set_rollout("web", "api", Rollout::Stuck);
        let set = desired(&[("web", vec![namespace("web"), deployment("web", "api")])]);
        let options = Options { health_timeout: std::time::Duration::from_secs(1), ..options() };
        c.server.clear_requests();
        let cs = c.reconcile(&set, &options).unwrap();
        assert_eq!(cs.unhealthy.len(), 1, "{:?}", cs.unhealthy);
        let reads: Vec<_> = c
            .server
            .requests()
            .into_iter()
            .filter(|r| r.method == "GET" && r.path.contains("/deployments"))
            .map(|r| format!("{} {}", r.path, r.query))
            .collect();
        // One list of the cluster's Deployments, then one watch: no read every poll interval.
        assert_eq!(reads.len(), 2, "{reads:#?}");
        assert!(reads[1].contains("watch=true"), "{reads:#?}");
    }

    #[test]
    fn a_cold_apply_into_new_namespaces_reads_back_nothing_it_knows() {
        let c = cluster();
        let mut objects = vec![namespace("web"), deployment("web", "api")];
        objects.extend((0..4).map(|i| configmap("web", &format!("cm{i}"), json!({"i": i.to_string()}))));
        let set = desired(&[("web", objects)]);
        c.server.clear_requests();
        let cs = c.reconcile(&set, &options()).unwrap();
        assert_eq!(cs.count(Action::Created), 6, "{}", cs.summary());
        let log = c.server.requests();
        let discovery = log.iter().filter(|r| r.path == "/api/v1").count();
        assert_eq!(discovery, 1, "discovery once: nothing made new kinds");
        // The namespace did not exist: nothing in it is looked up, every object is dry-run
        // once and written once.
        let reads: Vec<&str> = log
            .iter()
            .filter(|r| r.method == "GET" && r.path.contains("/namespaces/web/"))
            .map(|r| r.path.as_str())
            .collect();
        assert!(reads.is_empty(), "{reads:?}");
        let in_web: Vec<_> = log.iter().filter(|r| r.path.contains("/namespaces/web/")).collect();
        assert_eq!(in_web.iter().filter(|r| r.dry_run).count(), 5);
        assert_eq!(in_web.iter().filter(|r| r.is_write()).count(), 5);
        // The inventory's namespace is applied once, with the first inventory write only.
        let inventory_namespace = log.iter().filter(|r| r.path == "/api/v1/namespaces/strata-system").count();
        assert_eq!(inventory_namespace, 1);
    }

    #[test]
    fn deleted_objects_are_drift() {
        let c = cluster();
        let set = desired(&[("web", vec![namespace("web"), configmap("web", "a", json!({"k": "v"}))])]);
        c.reconcile(&set, &options()).unwrap();
        kubectl(&c.kubeconfig, &["delete", "configmap", "a", "-n", "web"]);
        let findings = c.runtime.block_on(apply::detect_drift(&c.target, &set, &options())).unwrap();
        assert_eq!(findings.len(), 1);
        assert_eq!(findings[0].id.to_string(), "ConfigMap/web/a");
        assert_eq!(findings[0].path, "");
        let cs = c.reconcile(&set, &options()).unwrap();
        assert_eq!(actions(&cs), ["unchanged Namespace/web", "created ConfigMap/web/a"]);
    }
}

#[test]
fn a_cluster_that_does_not_render_or_has_no_target_leaves_the_others_alone() {
    let server = ApiServer::start();
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = server.kubeconfig(dir.path());
    // edge-lab's target `lab` is not configured here.
    let config = dir.path().join("strata.yaml");
    std::fs::write(
        &config,
        format!(
            "targets:\n  aws-cluster: {{ kubeconfig: {} }}\n  edge-berlin: {{ kubeconfig: {0} }}\n",
            kubeconfig.display()
        ),
    )
    .unwrap();
    let repo = Repo::example();
    repo.edit("packs/edge-gateway/manifests/gateway.yaml", "{{ values.replicas }}", "{{ values.replicaz }}");
    repo.commit("typo in the edge gateway");
    let run = apply(&repo, &config, &["aws-cluster", "edge-berlin", "edge-lab"]);
    assert_eq!(run.code, 1);
    assert!(run.stderr.contains("undefined value `values.replicaz`"), "{}", run.stderr);
    assert!(run.stderr.contains("target `lab` is not configured on this host"), "{}", run.stderr);
    assert!(run.stdout.contains("aws-cluster: applied aws-profile@1.0.0"), "{}", run.stdout);
    assert_eq!(server.names("deployments"), ["hello-universe/ui"]);
}
