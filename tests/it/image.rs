//! The image the Containerfile builds, run as deploy/kubernetes runs it: its args, user, read-only
//! root, no capabilities, no privilege escalation, the runtime's default seccomp profile, the
//! shipped host config mounted where the Deployment mounts it, credentials as the Secret volume
//! gives them (root:65532, 0440) and empty directories where the emptyDirs are (as the kubelet
//! makes them: group 65532, setgid, 0777), no other writable path. Around it, on loopback
//! (the container shares the host's network): the fleet served over Git's smart HTTP with a
//! token, a management cluster (API server stand-in: ClusterStates, Leases, cluster Secrets) and
//! one stand-in per target, registered as cluster Secrets.
//!
//! Checked: it becomes ready, applies the example fleet and a kustomize layer (kustomize run by
//! strata inside the container, under its sandbox), serves /healthz, /readyz and /metrics, and
//! stops on SIGTERM within the Deployment's grace period with exit code 0, its Leases handed over.
//! And once more under a seccomp profile without the Landlock system calls (an older runtime's):
//! kustomize still renders, and strata says what is missing.
//!
//! Needs a container engine and a built image: skipped unless STRATA_IMAGE names one
//! (`scripts/image-test` builds it and sets STRATA_IMAGE and STRATA_PODMAN, the podman command
//! with its storage and settings).

use crate::apiserver;
use crate::common;
use crate::githttp;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use apiserver::ApiServer;
use common::Repo;
use common::kubernetes::{self, NAMESPACE};
use serde_json::{Value, json};

const API_TOKEN: &str = "image-test-api-token";
const GIT_TOKEN: &str = "image-test-git-token";
const POD_NAME: &str = "strata-7d9f8c6b5-x2x4q";

/// The example fleet's targets, and the cluster added for the kustomize layer.
const TARGETS: [&str; 5] = ["aws-cluster", "aws-staging", "edge-berlin", "lab", "kustomized"];
/// Each cluster, its target, and an object strata must have created there (a name's start).
const EXPECTED: [(&str, &str, &str, &str); 5] = [
    ("aws-cluster", "aws-cluster", "deployments", "hello-universe/ui"),
    ("aws-staging", "aws-staging", "deployments", "kubecost/cost-analyzer-cost-analyzer"),
    ("edge-berlin", "edge-berlin", "deployments", "edge/gateway"),
    ("edge-lab", "lab", "daemonsets", "monitoring/node-exporter"),
    ("kustomized-lab", "kustomized", "configmaps", "kustomized/rendered-by-kustomize-"),
];

fn image() -> Option<String> {
    std::env::var("STRATA_IMAGE").ok().filter(|i| !i.is_empty())
}

fn podman() -> Command {
    Command::new(std::env::var_os("STRATA_PODMAN").unwrap_or_else(|| "podman".into()))
}

fn deploy(file: &str) -> Value {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/kubernetes").join(file);
    serde_saphyr::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

/// How the Deployment runs the container, read from deploy/kubernetes/deployment.yaml.
struct PodSpec {
    user: String,
    args: Vec<String>,
    env: Vec<(String, String)>,
    grace: Duration,
    memory: String,
    fs_group: u32,
    /// Where the Deployment mounts the config file, the credentials Secret and each emptyDir.
    config_path: String,
    credentials_path: String,
    empty_dirs: Vec<String>,
    probes: (String, String),
}

fn pod_spec() -> PodSpec {
    let deployment = deploy("deployment.yaml");
    let pod = &deployment["spec"]["template"]["spec"];
    let container = &pod["containers"][0];
    let security = &pod["securityContext"];
    let volumes = pod["volumes"].as_array().unwrap();
    let volume = |name: &Value| volumes.iter().find(|v| &v["name"] == name).unwrap();
    let mounts = container["volumeMounts"].as_array().unwrap();
    let path_of = |kind: &str| {
        let mount = mounts.iter().find(|m| volume(&m["name"]).get(kind).is_some()).unwrap();
        mount["mountPath"].as_str().unwrap().to_string()
    };
    let empty_dirs = mounts
        .iter()
        .filter(|m| volume(&m["name"]).get("emptyDir").is_some())
        .map(|m| m["mountPath"].as_str().unwrap().to_string())
        .collect();
    let string = |v: &Value| v.as_str().unwrap().to_string();
    PodSpec {
        user: format!("{}:{}", security["runAsUser"], security["runAsGroup"]),
        args: container["args"].as_array().unwrap().iter().map(string).collect(),
        // Literal values only: POD_NAME comes from the downward API, set below.
        env: container["env"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|e| Some((string(&e["name"]), e.get("value")?.as_str()?.to_string())))
            .collect(),
        fs_group: security["fsGroup"].as_u64().unwrap() as u32,
        grace: Duration::from_secs(pod["terminationGracePeriodSeconds"].as_u64().unwrap()),
        // Kubernetes' Gi is podman's g (both 1024^3).
        memory: container["resources"]["limits"]["memory"].as_str().unwrap().trim_end_matches("i").to_lowercase(),
        config_path: path_of("configMap"),
        credentials_path: path_of("secret"),
        empty_dirs,
        probes: (
            string(&container["livenessProbe"]["httpGet"]["path"]),
            string(&container["readinessProbe"]["httpGet"]["path"]),
        ),
    }
}

/// Everything the container talks to, on loopback.
struct World {
    dir: tempfile::TempDir,
    _repo: Repo,
    git: githttp::GitHttp,
    mgmt: ApiServer,
    workloads: Vec<(&'static str, ApiServer)>,
}

impl World {
    fn new() -> World {
        let dir = tempfile::tempdir().unwrap();
        // The example fleet, and a cluster whose one layer is a kustomization (a generator, so
        // the name says kustomize made it).
        let repo = Repo::example();
        repo.write(
            "profiles/kustomized/1.0.0/profile.yaml",
            "apiVersion: strata.dev/v1\nkind: Profile\nmetadata: { name: kustomized, version: 1.0.0 }\nspec:\n  layers:\n    - { name: app, type: kustomize, source: fleet/app, namespace: kustomized }\n",
        )
        .write(
            "clusters/kustomized-lab.yaml",
            "apiVersion: strata.dev/v1\nkind: Cluster\nmetadata: { name: kustomized-lab }\nspec:\n  profile: { name: kustomized, version: 1.0.0 }\n  target: kustomized\n",
        )
        .write(
            "fleet/app/kustomization.yaml",
            "resources: [namespace.yaml]\nconfigMapGenerator:\n  - name: rendered-by-kustomize\n    literals: [greeting=hello]\n",
        )
        .write("fleet/app/namespace.yaml", "apiVersion: v1\nkind: Namespace\nmetadata: { name: kustomized }\n");
        repo.commit("a kustomize layer");
        let repos = dir.path().join("repos");
        std::fs::create_dir_all(&repos).unwrap();
        let cloned = Command::new("git")
            .args(["clone", "-q", "--bare"])
            .arg(repo.path())
            .arg(repos.join("fleet.git"))
            .status()
            .unwrap();
        assert!(cloned.success());
        let git = githttp::GitHttp::start(repos, "x-access-token", GIT_TOKEN);

        let mgmt = ApiServer::start();
        std::fs::create_dir_all(dir.path().join("mgmt")).unwrap();
        let mgmt_kubeconfig = mgmt.kubeconfig(&dir.path().join("mgmt"));
        kubernetes::install(&mgmt_kubeconfig);
        let workloads: Vec<(&str, ApiServer)> = TARGETS.iter().map(|t| (*t, ApiServer::start())).collect();
        for (target, server) in &workloads {
            let sub = dir.path().join(target);
            std::fs::create_dir_all(&sub).unwrap();
            let kubeconfig = std::fs::read_to_string(server.kubeconfig(&sub)).unwrap();
            kubernetes::put_secret(
                &mgmt_kubeconfig,
                json!({
                    "apiVersion": "v1", "kind": "Secret",
                    "metadata": {"name": format!("cluster-{target}"), "namespace": NAMESPACE,
                                 "labels": {"strata.dev/target": target}},
                    "stringData": {"kubeconfig": kubeconfig},
                }),
            );
        }
        World { dir, _repo: repo, git, mgmt, workloads }
    }

    fn path(&self, sub: &str) -> PathBuf {
        self.dir.path().join(sub)
    }

    fn workload(&self, target: &str) -> &ApiServer {
        &self.workloads.iter().find(|(t, _)| *t == target).unwrap().1
    }

    fn state(&self, cluster: &str) -> Value {
        self.mgmt.object("clusterstates", Some(NAMESPACE), cluster).unwrap_or(Value::Null)
    }
}

/// A port nothing listens on now (the container takes it on the host's network).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// The shipped host config (deploy/kubernetes/strata.yaml), changed only where this machine is not
/// a cluster: the repository, the listen address (loopback, a free port, among the allowed hosts)
/// and the management cluster, reached through a kubeconfig in the credentials instead of the
/// service account. Written as JSON, which is YAML.
fn host_config(world: &World, spec: &PodSpec, port: u16) -> String {
    let mut config = deploy("strata.yaml");
    let credentials = &spec.credentials_path;
    config["repository"]["url"] = json!(format!("{}/fleet.git", world.git.url));
    config["repository"]["credentials"] = json!({"token_file": format!("{credentials}/git-token")});
    config["listen"] = json!(format!("127.0.0.1:{port}"));
    config["listener"]["allowed_hosts"].as_array_mut().unwrap().push(json!(format!("127.0.0.1:{port}")));
    config["kubernetes"]["kubeconfig"] = json!(format!("{credentials}/kubeconfig"));
    config["kubernetes"]["namespace"] = json!(NAMESPACE);
    let text = serde_json::to_string_pretty(&config).unwrap();
    strata::config::Config::parse(Path::new(&spec.config_path), &text).unwrap_or_else(|d| panic!("{d:?}"));
    text
}

/// The Secret volume: files of root and the pod's fsGroup, mode 0440 (defaultMode).
fn credentials(world: &World, spec: &PodSpec) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let dir = world.path("credentials");
    std::fs::create_dir_all(&dir).unwrap();
    let gid = spec.fs_group;
    let kubeconfig = std::fs::read_to_string(world.mgmt.kubeconfig(&world.path("mgmt"))).unwrap();
    for (name, text) in
        [("api-token", format!("{API_TOKEN}\n")), ("git-token", format!("{GIT_TOKEN}\n")), ("kubeconfig", kubeconfig)]
    {
        let file = dir.join(name);
        std::fs::write(&file, text).unwrap();
        std::os::unix::fs::chown(&file, Some(0), Some(gid)).expect("chown root:65532 (run as root, as podman does)");
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o440)).unwrap();
    }
    dir
}

/// An emptyDir volume for `path`: root's, group the pod's fsGroup, mode 2777.
fn empty_dir(world: &World, spec: &PodSpec, path: &str) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let dir = world.path(&format!("emptydir{}", path.replace('/', "-")));
    std::fs::create_dir_all(&dir).unwrap();
    std::os::unix::fs::chown(&dir, Some(0), Some(spec.fs_group)).unwrap();
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o2777)).unwrap();
    dir
}

/// The container, started with `podman run` (attached: its output goes to `log`, and the
/// process's exit code is the container's).
struct Container {
    name: String,
    child: Option<Child>,
    log: PathBuf,
    port: u16,
}

impl Drop for Container {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = podman().args(["rm", "-f", "-t", "0", &self.name]).output();
            let _ = child.wait();
        }
    }
}

impl Container {
    /// `podman run` as the Deployment runs the container, with `extra` options.
    fn start(world: &World, spec: &PodSpec, name: &str, extra: &[&str]) -> Container {
        let image = image().unwrap();
        let port = free_port();
        let config = world.path(&format!("{name}.yaml"));
        std::fs::write(&config, host_config(world, spec, port)).unwrap();
        let credentials = credentials(world, spec);
        let log = world.path(&format!("{name}.log"));
        let name = format!("strata-image-test-{}-{name}", std::process::id());
        let mut args: Vec<String> = vec![
            "run".into(),
            "--name".into(),
            name.clone(),
            "--pull=never".into(),
            // securityContext: runAsUser/runAsGroup, readOnlyRootFilesystem, capabilities.drop
            // ALL, allowPrivilegeEscalation false; seccomp RuntimeDefault is the runtime's
            // default profile, which podman applies unless told otherwise.
            "--user".into(),
            spec.user.clone(),
            "--read-only".into(),
            "--cap-drop=ALL".into(),
            "--security-opt".into(),
            "no-new-privileges".into(),
            "--memory".into(),
            spec.memory.clone(),
            "--network".into(),
            "host".into(),
            // The config file (a ConfigMap subPath, read-only) and the Secret volume.
            "--volume".into(),
            format!("{}:{}:ro", config.display(), spec.config_path),
            "--volume".into(),
            format!("{}:{}:ro", credentials.display(), spec.credentials_path),
            "--env".into(),
            format!("POD_NAME={POD_NAME}"),
        ];
        for (key, value) in &spec.env {
            args.extend(["--env".into(), format!("{key}={value}")]);
        }
        // emptyDirs: an empty directory of the host each, as the kubelet makes them (mode 0777,
        // and with fsGroup: group 65532, setgid). --read-only alone would add tmpfs on /tmp,
        // /var/tmp and /run; a pod's read-only root has none.
        args.push("--read-only-tmpfs=false".into());
        for path in &spec.empty_dirs {
            let dir = empty_dir(world, spec, path);
            args.extend(["--volume".into(), format!("{}:{path}:rw", dir.display())]);
        }
        args.extend(extra.iter().map(|s| s.to_string()));
        args.push(image);
        args.extend(spec.args.iter().cloned());
        eprintln!("image test: podman {}", args.join(" "));
        let out = std::fs::File::create(&log).unwrap();
        let child = podman()
            .args(&args)
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .expect("podman runs");
        Container { name, child: Some(child), log, port }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// (status, body) of a GET, with a Host the listener allows.
    fn get(&self, path: &str, headers: &[(&str, &str)]) -> (u16, String) {
        use std::io::{Read, Write};
        let Ok(mut stream) = std::net::TcpStream::connect(("127.0.0.1", self.port)) else { return (0, String::new()) };
        stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut request = format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nConnection: close\r\n", self.port);
        for (k, v) in headers {
            request.push_str(&format!("{k}: {v}\r\n"));
        }
        request.push_str("\r\n");
        if stream.write_all(request.as_bytes()).is_err() {
            return (0, String::new());
        }
        let mut response = String::new();
        let _ = stream.read_to_string(&mut response);
        let code = response.split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
        let body = response.split_once("\r\n\r\n").map(|(_, b)| b.to_string()).unwrap_or_default();
        (code, body)
    }

    #[track_caller]
    fn wait_for(&mut self, what: &str, timeout: Duration, mut done: impl FnMut(&Container) -> bool) -> Duration {
        let started = Instant::now();
        let this = std::cell::RefCell::new(self);
        common::wait_until_with(
            what,
            timeout,
            Duration::from_millis(100),
            || {
                let mut container = this.borrow_mut();
                if done(&container) {
                    return true;
                }
                if let Some(status) = container.child.as_mut().unwrap().try_wait().unwrap() {
                    panic!(
                        "the container exited ({status}) while waiting for {what}\n--- log ---\n{}",
                        container.log()
                    );
                }
                false
            },
            |held| *held,
            || format!("--- log ---\n{}", this.borrow().log()),
        );
        started.elapsed()
    }

    /// `podman stop -t 30` (SIGTERM, SIGKILL after 30 s): how long until the container was gone,
    /// and its exit code.
    fn stop(&mut self) -> (Duration, i32) {
        let started = Instant::now();
        let out = podman().args(["stop", "-t", "30", &self.name]).output().unwrap();
        assert!(out.status.success(), "podman stop: {}", String::from_utf8_lossy(&out.stderr));
        let status = self.child.take().unwrap().wait().unwrap();
        let took = started.elapsed();
        let _ = podman().args(["rm", "-f", &self.name]).output();
        (took, status.code().unwrap_or(-1))
    }

    /// The log lines about the tools' sandbox.
    fn sandbox_lines(&self) -> Vec<String> {
        self.log()
            .lines()
            .filter(|l| l.contains("Landlock") || l.contains("sandbox"))
            .map(|l| {
                let v: Value = serde_json::from_str(l).unwrap_or(Value::Null);
                match (&v["level"], &v["message"]) {
                    (Value::String(level), Value::String(message)) => format!("{level} {message}"),
                    _ => l.to_string(),
                }
            })
            .collect()
    }
}

fn skip() -> bool {
    if image().is_none() {
        eprintln!("skipped: STRATA_IMAGE is not set (scripts/image-test builds the image and runs this with it)");
        return true;
    }
    false
}

#[test]
fn the_image_runs_as_the_deployment_runs_it() {
    if skip() {
        return;
    }
    let spec = pod_spec();
    let world = World::new();
    let mut container = Container::start(&world, &spec, "deployment", &[]);

    let ready = container.wait_for("/readyz", Duration::from_secs(60), |c| c.get(&spec.probes.1, &[]).0 == 200);
    eprintln!("image test: ready {:.1}s after podman run", ready.as_secs_f64());
    let (code, _) = container.get(&spec.probes.0, &[]);
    assert_eq!(code, 200, "{}", spec.probes.0);
    // What /readyz says beyond ready is for the token's holder (strangers learn ready, nothing more).
    let bearer = format!("Bearer {API_TOKEN}");
    let (code, anonymous) = container.get(&spec.probes.1, &[("Accept", "application/json")]);
    let anonymous: Value = serde_json::from_str(&anonymous).unwrap_or_else(|_| panic!("{anonymous}"));
    assert_eq!((code, anonymous), (200, json!({"ready": true})), "strangers learn ready, nothing more");
    let (code, readyz) = container.get(&spec.probes.1, &[("Accept", "application/json"), ("Authorization", &bearer)]);
    assert_eq!(code, 200);
    let readyz: Value = serde_json::from_str(&readyz).unwrap_or_else(|_| panic!("{readyz}"));
    let identity = readyz["shards"]["identity"].as_str().unwrap_or_default();
    assert!(identity.starts_with(POD_NAME), "the Lease identity comes from POD_NAME: {readyz}");
    eprintln!("image test: /readyz: {readyz}");

    // The fleet, applied through the cluster Secrets, state in the management cluster.
    let clusters: Vec<&str> = EXPECTED.iter().map(|(c, _, _, _)| *c).collect();
    let applied = container.wait_for("every cluster applied", Duration::from_secs(120), |_| {
        clusters.iter().all(|c| world.state(c)["status"]["sync"] == "applied")
    });
    eprintln!("image test: {} clusters applied {:.1}s after ready", clusters.len(), applied.as_secs_f64());
    for (cluster, target, plural, object) in EXPECTED {
        let server = world.workload(target);
        let names = server.names(plural);
        assert!(names.iter().any(|n| n.starts_with(object)), "{cluster}: no {plural} {object}*: {names:?}");
        let stored = server.all().len();
        eprintln!("image test: {cluster} -> target {target}: {object}… ({stored} objects on its stand-in)");
    }
    let generated = world.workload("kustomized").names("configmaps");
    eprintln!("image test: kustomize rendered inside the container: {generated:?}");

    let (code, metrics) = container.get("/metrics", &[("Authorization", &bearer)]);
    assert_eq!(code, 200);
    let families = metrics.lines().filter(|l| l.starts_with("# TYPE strata_")).count();
    assert!(families > 5, "{metrics}");
    eprintln!("image test: /metrics: {families} strata_ metric families");

    let sandbox = container.sandbox_lines();
    eprintln!("image test: strata on the sandbox: {sandbox:#?}");
    assert!(!sandbox.is_empty(), "strata said nothing about the sandbox\n{}", container.log());

    let (took, code) = container.stop();
    let log = container.log();
    eprintln!("image test: SIGTERM to exit {:.2}s, exit code {code}", took.as_secs_f64());
    assert_eq!(code, 0, "exit code after SIGTERM\n{log}");
    assert!(log.contains("Stopping"), "no Stopping line\n{log}");
    assert!(took < spec.grace, "stopped in {took:?}, the grace period is {:?}", spec.grace);
    // Shards handed over at once: every shard Lease without a holder, the replica's own gone.
    let leases = kubernetes::leases(&world.path("mgmt/kubeconfig"));
    for (name, lease) in &leases {
        assert!(name.starts_with("strata-shard-"), "{name} left behind");
        assert!(lease["spec"]["holderIdentity"].is_null(), "{name} still held: {lease}");
    }
    eprintln!("image test: {} shard Leases released", leases.len());
    for path in &spec.empty_dirs {
        let dir = world.path(&format!("emptydir{}", path.replace('/', "-")));
        let mut entries: Vec<String> =
            std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
        entries.sort();
        eprintln!("image test: left in the emptyDir at {path}: {entries:?}");
    }
    let errors: Vec<&str> = log.lines().filter(|l| l.contains("\"level\":\"ERROR\"")).collect();
    assert!(errors.is_empty(), "errors logged:\n{}", errors.join("\n"));

    // The sandbox's other layer, which strata does not log: a network namespace of the tool's
    // own, alone (needs CAP_SYS_ADMIN) or inside a user namespace (as its pre_exec tries them).
    for namespaces in [&["--net"][..], &["--user", "--net"][..]] {
        let out = podman()
            .args(["run", "--rm", "--pull=never", "--user", &spec.user, "--read-only", "--cap-drop=ALL"])
            .args(["--security-opt", "no-new-privileges", "--network", "host", "--entrypoint", "/usr/bin/unshare"])
            .arg(image().unwrap())
            .args(namespaces)
            .arg("true")
            .output()
            .unwrap();
        let said = String::from_utf8_lossy(&out.stderr);
        let verdict = if out.status.success() { "works".to_string() } else { format!("refused: {}", said.trim()) };
        eprintln!("image test: unshare {} in the container: {verdict}", namespaces.join(" "));
    }
}

/// Under a seccomp profile that predates Landlock (the default one less the three landlock_*
/// calls, which then fail with ENOSYS): kustomize still renders, and strata says the sandbox is
/// weaker.
#[test]
fn without_landlock_kustomize_renders_and_strata_says_so() {
    if skip() {
        return;
    }
    let Some(default) = std::env::var_os("STRATA_SECCOMP_PROFILE").map(PathBuf::from) else {
        eprintln!("skipped: STRATA_SECCOMP_PROFILE (the container runtime's default seccomp profile) is not set");
        return;
    };
    let spec = pod_spec();
    let world = World::new();
    let mut profile: Value = serde_json::from_str(&std::fs::read_to_string(&default).unwrap()).unwrap();
    let mut removed = 0;
    for rule in profile["syscalls"].as_array_mut().unwrap() {
        if let Some(names) = rule["names"].as_array_mut() {
            let before = names.len();
            names.retain(|n| !n.as_str().unwrap_or("").starts_with("landlock_"));
            removed += before - names.len();
        }
    }
    assert!(removed > 0, "{} allows no landlock_* call to remove", default.display());
    let file = world.path("seccomp-without-landlock.json");
    std::fs::write(&file, profile.to_string()).unwrap();
    let option = format!("seccomp={}", file.display());
    let mut container = Container::start(&world, &spec, "no-landlock", &["--security-opt", &option]);
    container.wait_for("/readyz", Duration::from_secs(60), |c| c.get("/readyz", &[]).0 == 200);
    container.wait_for("the kustomize layer applied", Duration::from_secs(120), |_| {
        world.state("kustomized-lab")["status"]["sync"] == "applied"
    });
    let sandbox = container.sandbox_lines();
    eprintln!("image test: without Landlock, strata says: {sandbox:#?}");
    assert!(sandbox.iter().any(|l| l.starts_with("WARN")), "no warning about the sandbox\n{}", container.log());
    let (_, code) = container.stop();
    assert_eq!(code, 0);
}
