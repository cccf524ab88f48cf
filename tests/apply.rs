//! Apply, prune, health and drift against the API server stand-in in `tests/apiserver`, through
//! the `strata` binary with a kubeconfig (end to end) and through the library (in-process).

mod apiserver;
mod common;

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
            "targets:\n  aws-cluster: {{ kubeconfig: {k}, context: harness }}\n  aws-staging: {{ kubeconfig: {k} }}\n  edge-berlin: {{ kubeconfig: {k} }}\n  lab: {{ kubeconfig: {k} }}\n{extra}apply:\n  healthTimeout: 5s\n"
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
