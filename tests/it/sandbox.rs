//! kustomize (the real `kubectl kustomize`) and helm (a stand-in) confined to the repository and
//! off the network: every escape a kustomization can try is refused before the tool runs, and
//! the tool itself, run on a kustomization that skipped those checks, still reads nothing of
//! the host and reaches no listener.

use crate::common;

use std::io::{Read as _, Write as _};
use std::net::TcpListener;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use common::Repo;
use strata::render::tools::{SystemTools, Tools, Workspace};

const PROFILE: &str = "apiVersion: strata.dev/v1
kind: Profile
metadata: { name: ingress, version: 1.0.0 }
spec:
  layers:
    - { name: ingress, type: kustomize, source: fleet/app, namespace: ingress }
";

const CLUSTER: &str = "apiVersion: strata.dev/v1
kind: Cluster
metadata: { name: edge-k }
spec:
  profile: { name: ingress, version: 1.0.0 }
";

const HOST_MANIFEST: &str =
    "apiVersion: v1\nkind: Secret\nmetadata: { name: host-secret }\nstringData: { token: from-the-host }\n";

/// A listener on loopback that counts the connections it gets and answers each with a manifest.
struct Listener {
    port: u16,
    contacted: Arc<AtomicUsize>,
}

impl Listener {
    fn start() -> Listener {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let contacted = Arc::new(AtomicUsize::new(0));
        let count = contacted.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                count.fetch_add(1, Ordering::SeqCst);
                let mut stream = stream;
                let mut buf = [0; 4096];
                let _ = stream.read(&mut buf);
                let body = HOST_MANIFEST;
                let _ = write!(
                    stream,
                    "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
            }
        });
        Listener { port, contacted }
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}/secret.yaml", self.port)
    }

    fn contacted(&self) -> usize {
        self.contacted.load(Ordering::SeqCst)
    }
}

/// A repository whose kustomize layer is `fleet/app`, with a harmless base beside it and, outside
/// the repository (the fixture's parent directory is the test's own temporary directory), a
/// directory of "host" manifests.
struct Setup {
    outer: tempfile::TempDir,
    repo: Repo,
}

impl Setup {
    fn new(git: bool) -> Setup {
        let outer = tempfile::tempdir().unwrap();
        let host = outer.path().join("host");
        std::fs::create_dir_all(&host).unwrap();
        std::fs::write(host.join("secret.yaml"), HOST_MANIFEST).unwrap();
        std::fs::write(host.join("kustomization.yaml"), "resources: [secret.yaml]\n").unwrap();
        std::fs::write(host.join("passwd"), "root:x:0:0\n").unwrap();
        let repo = if git { Repo::example() } else { Repo::plain_example() };
        repo.write("profiles/ingress/1.0.0/profile.yaml", PROFILE)
            .write("clusters/edge-k.yaml", CLUSTER)
            .write("fleet/base/kustomization.yaml", "resources: [cm.yaml]\n")
            .write("fleet/base/cm.yaml", "apiVersion: v1\nkind: ConfigMap\nmetadata: { name: base }\n");
        Setup { outer, repo }
    }

    fn host(&self) -> String {
        self.outer.path().join("host").display().to_string()
    }

    /// The host directory as the layer's kustomization reaches it with `..`: both temporary
    /// directories live in the same place.
    fn up_to_host(&self) -> String {
        assert_eq!(self.outer.path().parent(), self.repo.path().parent());
        format!("../../../{}/host", self.outer.path().file_name().unwrap().to_str().unwrap())
    }

    /// `validate` with `kustomization` as the layer's, committed first in a Git repository.
    fn validate(&self, kustomization: &str, git: bool) -> common::Run {
        self.repo.write("fleet/app/kustomization.yaml", kustomization);
        if git {
            self.repo.commit("kustomization");
        }
        self.repo.strata(&["render", "edge-k"])
    }
}

#[track_caller]
fn refused(run: &common::Run, expected: &[&str]) {
    assert_eq!(run.code, 1, "expected exit 1\nstdout: {}\nstderr: {}", run.stdout, run.stderr);
    for fragment in expected {
        assert!(run.stderr.contains(fragment), "expected {fragment:?} in:\n{}", run.stderr);
    }
    assert!(!run.stdout.contains("host-secret") && !run.stderr.contains("from-the-host"), "{}", run.stdout);
}

const AT: &str = "fleet/app/kustomization.yaml";

#[test]
fn kustomizations_reaching_outside_the_repository_are_refused() {
    for git in [false, true] {
        let s = Setup::new(git);
        let layer = "profile ingress@1.0.0 layer ingress";
        let up = s.up_to_host();
        let cases = [
            (
                format!("resources: [{up}]\n"),
                format!("error[path]: {AT}:1: {layer}: resources: `{up}` leads outside the repository"),
            ),
            (
                format!("resources: ['{}']\n", s.host()),
                format!("error[path]: {AT}:1: {layer}: resources: `{}` is an absolute path", s.host()),
            ),
            (format!("bases: [{up}]\n"), format!("error[path]: {AT}:1: {layer}: bases: `{up}` leads outside")),
            (
                format!("components: [{up}]\n"),
                format!("error[path]: {AT}:1: {layer}: components: `{up}` leads outside"),
            ),
            (
                format!("resources: [../base]\nconfigMapGenerator:\n- name: leak\n  files: [passwd={up}/passwd]\n"),
                format!("error[path]: {AT}:4: {layer}: configMapGenerator: `{up}/passwd` leads outside the repository"),
            ),
            (
                format!("resources: [../base]\nsecretGenerator:\n- name: leak\n  envs: [{up}/passwd]\n"),
                format!("error[path]: {AT}:4: {layer}: secretGenerator: `{up}/passwd` leads outside"),
            ),
            (
                format!("resources: [../base]\npatches:\n- path: {up}/secret.yaml\n"),
                format!("error[path]: {AT}:3: {layer}: patches: `{up}/secret.yaml` leads outside"),
            ),
            (
                format!("resources: [../base]\ncrds: [{up}/secret.yaml]\n"),
                format!("error[path]: {AT}:2: {layer}: crds:"),
            ),
            (
                format!("resources: [../base]\nsneaky: {up}\n"),
                format!("error[schema]: {AT}:2: {layer}: unknown field `sneaky`"),
            ),
        ];
        for (kustomization, expected) in cases {
            refused(&s.validate(&kustomization, git), &[&expected]);
        }
    }
}

#[test]
fn symlinked_bases_that_lead_out_are_refused_in_commits_and_directories() {
    for git in [false, true] {
        let s = Setup::new(git);
        // Lexically inside (`fleet/decoy`), physically the host directory beside the repository.
        s.repo
            .write("fleet/decoy/kustomization.yaml", "resources: []\n")
            .symlink("..", "fleet/up")
            .symlink(&s.host(), "fleet/hostlink");
        let run = s.validate("resources: [../up/../decoy]\n", git);
        refused(
            &run,
            &[&format!(
                "error[path]: {AT}:1: profile ingress@1.0.0 layer ingress: resources: `../up/../decoy` leads outside the repository through the symlink `fleet/up`"
            )],
        );
        let run = s.validate("resources: [../hostlink]\n", git);
        refused(&run, &[&format!("error[path]: {AT}:1:"), "through the symlink `fleet/hostlink`"]);
    }
}

#[test]
fn remote_references_are_refused_and_nothing_is_fetched() {
    let listener = Listener::start();
    for git in [false, true] {
        let s = Setup::new(git);
        for kustomization in [
            format!("resources: ['{}']\n", listener.url()),
            format!("resources: [../base]\npatches:\n- path: '{}'\n", listener.url()),
            "resources: ['github.com/example/repo//deploy?ref=v1']\n".to_string(),
            format!("helmCharts:\n- name: x\n  repo: 'http://127.0.0.1:{}'\n  version: 1.0.0\n", listener.port),
        ] {
            let run = s.validate(&kustomization, git);
            refused(&run, &[&format!("error[remote]: {AT}:")]);
        }
    }
    assert_eq!(listener.contacted(), 0, "strata's kustomize made a request");
}

/// The second and third layers on their own: kustomize run directly on a kustomization that no
/// check looked at cannot read the host directory or reach the listener.
#[test]
fn the_sandboxed_tool_reads_nothing_of_the_host_and_reaches_no_listener() {
    let listener = Listener::start();
    let outer = tempfile::tempdir().unwrap();
    let checkout = outer.path().join("checkout");
    let scratch = outer.path().join("scratch");
    let host = outer.path().join("host");
    for dir in [&checkout, &scratch, &host] {
        std::fs::create_dir_all(dir).unwrap();
    }
    std::fs::write(host.join("secret.yaml"), HOST_MANIFEST).unwrap();
    std::fs::write(host.join("kustomization.yaml"), "resources: [secret.yaml]\n").unwrap();
    let tools = SystemTools::default();
    let workspace = Workspace { checkout: &checkout, scratch: &scratch };
    let build = |kustomization: &str| {
        std::fs::write(checkout.join("kustomization.yaml"), kustomization).unwrap();
        tools.kustomize(&workspace, &checkout)
    };

    // Unconfined, kubectl kustomize reads this directory beside the checkout; confined, it cannot.
    let e = build("resources: [../host]\n").unwrap_err();
    assert!(!e.to_string().contains("from-the-host"), "{e}");
    let unconfined = std::process::Command::new("kubectl").arg("kustomize").arg(&checkout).output().unwrap();
    assert!(
        String::from_utf8_lossy(&unconfined.stdout).contains("from-the-host"),
        "the control: kustomize alone reads it"
    );
    let e = build(&format!("resources: ['{}']\n", listener.url())).unwrap_err();
    assert!(!e.to_string().contains("from-the-host"), "{e}");
    assert_eq!(listener.contacted(), 0, "the sandboxed tool reached a listener on loopback");
    // What the checkout holds still builds.
    std::fs::write(checkout.join("cm.yaml"), "apiVersion: v1\nkind: ConfigMap\nmetadata: { name: ok }\n").unwrap();
    assert!(build("resources: [cm.yaml]\n").unwrap().contains("name: ok"));
}

/// A helm stand-in that tries to read a host file, to write beside the chart and to connect to
/// a listener (the paths are written into the script: strata hands tools no environment of its
/// own); it prints what it managed as a ConfigMap.
fn probing_helm(host_file: &Path, url: &str) -> String {
    format!(
        r#"#!/bin/sh
chart=$3
host=$(cat "{host}" 2>&1 | head -c 200 | tr -d '"\n')
if echo x > "$chart/planted" 2>/dev/null; then wrote=yes; else wrote=no; fi
if curl -s --max-time 3 "{url}" >/dev/null 2>&1; then net=yes; else net=no; fi
cat <<END
apiVersion: v1
kind: ConfigMap
metadata: {{ name: probe }}
data: {{ host: "$host", wrote: "$wrote", net: "$net", home: "$HOME", kubeconfig: "${{KUBECONFIG:-none}}" }}
END
"#,
        host = host_file.display()
    )
}

#[test]
fn helm_runs_in_the_sandbox_too() {
    use std::os::unix::fs::PermissionsExt as _;
    let listener = Listener::start();
    let repo = Repo::plain_example();
    repo.write(
        "profiles/metrics/1.0.0/profile.yaml",
        "apiVersion: strata.dev/v1\nkind: Profile\nmetadata: { name: metrics, version: 1.0.0 }\nspec:\n  layers:\n    - { name: metrics, type: helm, source: charts/metrics, namespace: metrics }\n",
    )
    .write("clusters/metrics-eu.yaml", "apiVersion: strata.dev/v1\nkind: Cluster\nmetadata: { name: metrics-eu }\nspec:\n  profile: { name: metrics, version: 1.0.0 }\n")
    .write("charts/metrics/Chart.yaml", "apiVersion: v2\nname: metrics\nversion: 0.1.0\n");
    let outer = tempfile::tempdir().unwrap();
    let host_file = outer.path().join("host-secret.txt");
    std::fs::write(&host_file, "from-the-host").unwrap();
    let bin = outer.path().join("bin");
    std::fs::create_dir(&bin).unwrap();
    std::fs::write(bin.join("helm"), probing_helm(&host_file, &listener.url())).unwrap();
    std::fs::set_permissions(bin.join("helm"), std::fs::Permissions::from_mode(0o755)).unwrap();
    let path = format!("{}:{}", bin.display(), std::env::var("PATH").unwrap_or_default());
    let run = repo.strata_env(&["render", "metrics-eu"], &[("PATH", &path), ("KUBECONFIG", "/root/.kube/config")]).ok();
    let docs: Vec<serde_json::Value> = serde_saphyr::from_multiple(&run.stdout).unwrap();
    let data = &docs[0]["data"];
    assert!(data["host"].as_str().unwrap().contains("Permission denied"), "{data}");
    assert_eq!(data["wrote"], "no", "the checkout is read-only");
    assert_eq!(data["net"], "no", "no network");
    assert_eq!(data["kubeconfig"], "none", "no KUBECONFIG");
    assert!(!Path::new(data["home"].as_str().unwrap()).starts_with("/root"), "{data}");
    assert_eq!(listener.contacted(), 0);
}
