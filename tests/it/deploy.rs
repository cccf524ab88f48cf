//! deploy/kubernetes: the kustomize base renders with `kubectl kustomize`, `kubectl apply
//! --dry-run=client` accepts it (against the API server stand-in, for discovery), and what it
//! deploys holds together: the host config it ships loads as strata reads it, the pods meet the
//! restricted Pod Security Standard, and what strata writes has a writable volume under it.
//! (The image itself is built and run as the Deployment runs it by `scripts/image-test`, with
//! tests/image.rs.)

use crate::apiserver;

use std::io::Write as _;
use std::path::Path;
use std::process::{Command, Stdio};

use serde_json::Value;
use strata::config::{Config, StateBackend, TargetConfig};

fn base() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/kubernetes")
}

fn render() -> (String, Vec<Value>) {
    let out = Command::new("kubectl").arg("kustomize").arg(base()).output().expect("kubectl runs");
    assert!(out.status.success(), "kubectl kustomize: {}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8(out.stdout).unwrap();
    let docs: Vec<Value> = serde_saphyr::from_multiple(&text).unwrap();
    (text, docs)
}

fn one<'a>(docs: &'a [Value], kind: &str) -> &'a Value {
    let found: Vec<&Value> = docs.iter().filter(|d| d["kind"] == kind).collect();
    assert_eq!(found.len(), 1, "one {kind}");
    found[0]
}

#[test]
fn the_base_renders_and_kubectl_accepts_it() {
    let (text, docs) = render();
    let kinds: Vec<&str> = docs.iter().map(|d| d["kind"].as_str().unwrap()).collect();
    for kind in [
        "Namespace",
        "CustomResourceDefinition",
        "ServiceAccount",
        "Role",
        "RoleBinding",
        "ConfigMap",
        "Deployment",
        "Service",
        "PodDisruptionBudget",
        "NetworkPolicy",
    ] {
        assert!(kinds.contains(&kind), "{kind} missing: {kinds:?}");
    }
    assert!(!kinds.iter().any(|k| k.starts_with("Cluster")), "nothing cluster-wide but the CRD: {kinds:?}");
    for doc in docs.iter().filter(|d| !["Namespace", "CustomResourceDefinition"].contains(&d["kind"].as_str().unwrap()))
    {
        assert_eq!(doc["metadata"]["namespace"], "strata-system", "{}", doc["kind"]);
    }

    let server = apiserver::ApiServer::start();
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = server.kubeconfig(dir.path());
    let mut child = Command::new("kubectl")
        .args(["apply", "--dry-run=client", "-f", "-", "--kubeconfig"])
        .arg(&kubeconfig)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(text.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "kubectl apply --dry-run=client: {}{said}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(said.lines().filter(|l| l.ends_with("created (dry run)")).count(), docs.len(), "{said}");
    assert!(server.requests().iter().all(|r| !r.is_write()), "a dry run writes nothing");
}

#[test]
fn the_deployment_is_restricted_and_its_config_loads() {
    let (_, docs) = render();
    let deployment = one(&docs, "Deployment");
    assert_eq!(deployment["spec"]["replicas"], 3);
    let pod = &deployment["spec"]["template"]["spec"];
    assert_eq!(pod["securityContext"]["runAsNonRoot"], true);
    assert_eq!(pod["securityContext"]["seccompProfile"]["type"], "RuntimeDefault");
    assert_eq!(pod["serviceAccountName"], one(&docs, "ServiceAccount")["metadata"]["name"]);
    let container = &pod["containers"][0];
    let security = &container["securityContext"];
    assert_eq!(security["allowPrivilegeEscalation"], false);
    assert_eq!(security["readOnlyRootFilesystem"], true);
    assert_eq!(security["capabilities"]["drop"], serde_json::json!(["ALL"]));
    assert_eq!(container["livenessProbe"]["httpGet"]["path"], "/healthz");
    assert_eq!(container["readinessProbe"]["httpGet"]["path"], "/readyz");
    assert!(container["env"].as_array().unwrap().iter().any(|e| e["name"] == "POD_NAME"), "the Lease identity");

    // The config strata reads: the generated ConfigMap, mounted where the args say.
    let configmap = one(&docs, "ConfigMap");
    let volumes = pod["volumes"].as_array().unwrap();
    let config_volume =
        volumes.iter().find(|v| v["configMap"]["name"] == configmap["metadata"]["name"]).expect("mounted");
    let mounts = container["volumeMounts"].as_array().unwrap();
    let config_mount = mounts.iter().find(|m| m["name"] == config_volume["name"]).unwrap();
    let args: Vec<&str> = container["args"].as_array().unwrap().iter().map(|a| a.as_str().unwrap()).collect();
    let config_path = args[args.iter().position(|a| *a == "--config").unwrap() + 1];
    assert_eq!(config_mount["mountPath"], config_path);
    let text = configmap["data"][config_mount["subPath"].as_str().unwrap()].as_str().unwrap();
    let config = Config::parse(Path::new(config_path), text).unwrap_or_else(|d| panic!("{d:?}"));
    assert_eq!(config.state_backend, StateBackend::Kubernetes);
    assert!(config.sharding.shards > 1);
    let kubernetes = config.kubernetes.as_ref().expect("Kubernetes mode");
    assert_eq!(kubernetes.connection, TargetConfig::InCluster);
    assert!(kubernetes.cluster_secrets);
    assert!(config.listen.ip().is_unspecified(), "probes and the Service reach the pod's address");
    assert_eq!(container["ports"][0]["containerPort"], config.listen.port());

    // A read-only root: what strata and its tools write has an emptyDir under it.
    let writable = |path: &Path| {
        mounts.iter().any(|m| {
            path.starts_with(m["mountPath"].as_str().unwrap())
                && volumes.iter().any(|v| v["name"] == m["name"] && v.get("emptyDir").is_some())
        })
    };
    assert!(writable(&config.state_dir), "state_dir {}", config.state_dir.display());
    let tmpdir = container["env"].as_array().unwrap().iter().find(|e| e["name"] == "TMPDIR").expect("TMPDIR set");
    assert!(writable(Path::new(tmpdir["value"].as_str().unwrap())), "TMPDIR");
    // Credentials come from the mounted Secret.
    let token = config.api_token_file.as_ref().expect("an API token");
    let secret_mount = mounts
        .iter()
        .find(|m| volumes.iter().any(|v| v["name"] == m["name"] && v.get("secret").is_some()))
        .expect("a Secret mounted");
    assert!(token.starts_with(secret_mount["mountPath"].as_str().unwrap()), "{}", token.display());
    // Files of a Secret volume belong to root and the pod's fsGroup: strata (not root) reads them
    // through the group.
    let secret_volume = volumes.iter().find(|v| v["name"] == secret_mount["name"]).unwrap();
    let mode = secret_volume["secret"]["defaultMode"].as_u64().unwrap_or(0o644);
    assert_ne!(pod["securityContext"]["runAsUser"], 0);
    assert_eq!(pod["securityContext"]["fsGroup"], pod["securityContext"]["runAsGroup"]);
    assert!(mode & 0o040 != 0 && mode & 0o007 == 0, "credentials readable by the group only: {mode:o}");

    // The PodDisruptionBudget and the Service select the pods.
    let labels = &deployment["spec"]["template"]["metadata"]["labels"];
    for selector in [
        &one(&docs, "PodDisruptionBudget")["spec"]["selector"]["matchLabels"],
        &one(&docs, "Service")["spec"]["selector"],
    ] {
        for (k, v) in selector.as_object().unwrap() {
            assert_eq!(&labels[k], v);
        }
    }
    assert_eq!(one(&docs, "Namespace")["metadata"]["labels"]["pod-security.kubernetes.io/enforce"], "restricted");
}

/// `kubectl apply --server-side --dry-run=server` of the whole base against the API server
/// stand-in — over plain HTTP/1.1 and over TLS with HTTP/2 — is accepted object by object, and
/// writes nothing. The Namespace is created for real first: a dry run makes nothing for the
/// namespaced objects to go in, as with kube-apiserver.
#[test]
fn kubectl_applies_the_base_server_side_as_a_dry_run_over_http1_and_http2() {
    use apiserver::{ApiServer, Transport};
    let (text, docs) = render();
    for (transport, version) in [(Transport::Plain, "HTTP/1.1"), (Transport::Tls, "HTTP/2.0")] {
        let server = ApiServer::start_with(transport);
        let dir = tempfile::tempdir().unwrap();
        let kubeconfig = server.kubeconfig(dir.path());
        let kubectl = |args: &[&str], input: Option<&str>| {
            let mut child = Command::new("kubectl")
                .args(args)
                .arg("--kubeconfig")
                .arg(&kubeconfig)
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap();
            let mut stdin = child.stdin.take().unwrap();
            stdin.write_all(input.unwrap_or("").as_bytes()).unwrap();
            drop(stdin);
            let out = child.wait_with_output().unwrap();
            let said = String::from_utf8_lossy(&out.stdout).into_owned();
            assert!(
                out.status.success(),
                "kubectl {args:?} ({transport:?}): {}{said}",
                String::from_utf8_lossy(&out.stderr)
            );
            said
        };
        let namespace = serde_json::to_string(one(&docs, "Namespace")).unwrap();
        kubectl(&["apply", "--server-side", "-f", "-"], Some(&namespace));
        server.clear_requests();
        let said = kubectl(
            &["apply", "--server-side", "--dry-run=server", "--field-manager=strata-deploy", "-f", "-"],
            Some(&text),
        );
        assert_eq!(
            said.lines().filter(|l| l.ends_with("(server dry run)")).count(),
            docs.len(),
            "{transport:?}: {said}"
        );
        let requests = server.requests();
        assert!(requests.iter().any(|r| r.dry_run), "{transport:?}: applied with dryRun=All");
        assert!(requests.iter().all(|r| !r.is_write()), "{transport:?}: a dry run writes nothing");
        assert!(
            requests.iter().all(|r| r.version == version),
            "{transport:?}: {:?}",
            requests.iter().map(|r| &r.version).collect::<Vec<_>>()
        );
        assert_eq!(server.names("deployments"), Vec::<String>::new(), "{transport:?}");
    }
}
