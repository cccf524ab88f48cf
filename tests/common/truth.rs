//! Model-based checks that what strata says is what it does, over random histories.
//!
//! ```text
//!   seed ──> random operations on a fleet model ──> commits (and approvals) on a real repository
//!                                                        │
//!        daemon A: runs through the whole history ◀──────┼──────▶ daemon B: restarted (SIGTERM or
//!                                                        │         kill -9) at every step, same key
//!        after each step, both settled:  A ≡ B  (what each cluster runs, holds and reports; the
//!                                                 files written to its target)
//!                                        plan(last good → head) ≡ what A did in the step
//! ```
//!
//! The first equivalence is restart equivalence: a daemon that has run all along decides as a
//! fresh one started at that commit with the same state. The second is that `strata plan` between
//! the revision the daemon last loaded and the new head lists which clusters change and which are
//! held, as the daemon then does (clusters already holding an update before the step are left to
//! the first check: the plan is of the step's change, the daemon's of everything held since).
//!
//! Failures print the seed and the operations so far: `STRATA_SEED=<seed>` repeats a history.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::Duration;

use serde_json::Value;

use crate::apiserver::ApiServer;
use crate::common::Repo;
use crate::common::daemon::{self, Daemon, TOKEN};

const PROFILES: &[&str] = &["web", "api"];
const CLUSTERS: &[&str] = &["c1", "c2", "c3", "c4", "c5", "c6"];

#[derive(Clone, Debug)]
struct Version {
    minor: u32,
    replicas: u32,
    image: u32,
    extra: bool,
}

#[derive(Clone, Debug, PartialEq)]
pub enum Pin {
    Exact(u32),
    Tilde(u32),
    Caret,
}

#[derive(Clone, Debug)]
struct ClusterModel {
    profile: &'static str,
    pin: Pin,
    replicas: Option<u32>,
    manual: bool,
    report: bool,
    ignore_replicas: bool,
    sensitive_image: bool,
    ring: u32,
    /// A maintenance window that stays closed while the history runs.
    window: bool,
    /// Reached through its second target (`<name>-b`) instead of the one named as it is.
    moved: bool,
}

/// One step of a history.
#[derive(Clone, Debug)]
pub enum Op {
    /// An in-place edit of a profile version's values.
    Edit {
        profile: &'static str,
        minor: u32,
        replicas: u32,
        image: u32,
    },
    /// A new minor version of a profile, with or without its extra layer.
    NewVersion {
        profile: &'static str,
        extra: bool,
    },
    Override {
        cluster: &'static str,
        replicas: Option<u32>,
    },
    Repin {
        cluster: &'static str,
        pin: Pin,
    },
    Switch {
        cluster: &'static str,
        profile: &'static str,
    },
    Updates {
        cluster: &'static str,
        manual: bool,
    },
    /// A maintenance window (closed for as long as the history runs) set or taken away.
    Window {
        cluster: &'static str,
        closed: bool,
    },
    /// The cluster moved to its second target, or back.
    Retarget {
        cluster: &'static str,
        moved: bool,
    },
    Drift {
        cluster: &'static str,
        report: bool,
    },
    Ignore {
        cluster: &'static str,
        on: bool,
    },
    Sensitive {
        cluster: &'static str,
        on: bool,
    },
    Ring {
        cluster: &'static str,
        ring: u32,
    },
    Add {
        cluster: &'static str,
    },
    Remove {
        cluster: &'static str,
    },
    /// A commit that does not load; the next commit repairs it.
    Broken,
    /// Approves the cluster's pending update (when it has one) through both daemons' API.
    Approve {
        cluster: &'static str,
    },
    /// Someone edits the cluster's Deployment by hand (in both daemons' targets): corrected or
    /// reported as its drift policy says, or left alone when its ignore rule covers the field.
    Tamper {
        cluster: &'static str,
    },
    /// The rollout policy `rings` (a canary of one `ring:0` cluster, then the rest, `manual`:
    /// only when promoted), or none.
    Rollout {
        policy: Option<RolloutModel>,
    },
    /// Promotes `rings` (when it waits for promotion) through both daemons' API.
    Promote,
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RolloutModel {
    manual: bool,
}

#[derive(Clone, Debug)]
struct Model {
    versions: BTreeMap<&'static str, Vec<Version>>,
    clusters: BTreeMap<&'static str, ClusterModel>,
    rollout: Option<RolloutModel>,
    broken: bool,
}

impl Model {
    fn new() -> Model {
        let versions =
            PROFILES.iter().map(|p| (*p, vec![Version { minor: 0, replicas: 1, image: 1, extra: false }])).collect();
        let mut clusters = BTreeMap::new();
        for (i, name) in CLUSTERS.iter().take(4).enumerate() {
            clusters.insert(
                *name,
                ClusterModel {
                    profile: PROFILES[i % 2],
                    pin: if i % 2 == 0 { Pin::Exact(0) } else { Pin::Caret },
                    replicas: None,
                    manual: i == 0,
                    report: false,
                    ignore_replicas: false,
                    sensitive_image: false,
                    ring: i as u32 % 2,
                    window: false,
                    moved: false,
                },
            );
        }
        Model { versions, clusters, rollout: None, broken: false }
    }

    /// A random operation that makes sense on this model.
    fn random(&self, rng: &mut fastrand::Rng, pending: &BTreeSet<String>) -> Op {
        let profile = PROFILES[rng.usize(..PROFILES.len())];
        let present: Vec<&'static str> = self.clusters.keys().copied().collect();
        let absent: Vec<&'static str> = CLUSTERS.iter().copied().filter(|c| !self.clusters.contains_key(c)).collect();
        let cluster = present[rng.usize(..present.len())];
        let minors = &self.versions[profile];
        // A pin names a version of the cluster's own profile.
        let own = &self.versions[self.clusters[cluster].profile];
        loop {
            let op = match rng.u32(..118) {
                0..=19 => {
                    let v = &minors[rng.usize(..minors.len())];
                    Op::Edit { profile, minor: v.minor, replicas: rng.u32(1..5), image: rng.u32(1..9) }
                }
                20..=27 if minors.len() < 4 => Op::NewVersion { profile, extra: rng.bool() },
                28..=37 => Op::Override { cluster, replicas: rng.bool().then(|| rng.u32(1..6)) },
                38..=44 => Op::Repin {
                    cluster,
                    pin: match rng.u32(..3) {
                        0 => Pin::Exact(own[rng.usize(..own.len())].minor),
                        1 => Pin::Tilde(own[rng.usize(..own.len())].minor),
                        _ => Pin::Caret,
                    },
                },
                45..=48 => Op::Switch { cluster, profile },
                49..=55 => Op::Updates { cluster, manual: rng.bool() },
                56..=61 => Op::Drift { cluster, report: rng.bool() },
                62..=66 => Op::Ignore { cluster, on: rng.bool() },
                67..=70 => Op::Sensitive { cluster, on: rng.bool() },
                71..=73 => Op::Ring { cluster, ring: rng.u32(..2) },
                74..=78 if !absent.is_empty() => Op::Add { cluster: absent[rng.usize(..absent.len())] },
                79..=82 if present.len() > 2 => Op::Remove { cluster },
                83..=85 => Op::Broken,
                86..=89 => Op::Tamper { cluster },
                90..=99 if !pending.is_empty() => {
                    let names: Vec<&String> = pending.iter().collect();
                    let name = names[rng.usize(..names.len())];
                    Op::Approve { cluster: CLUSTERS.iter().copied().find(|c| c == name).expect("a model cluster") }
                }
                100..=104 => Op::Rollout { policy: rng.bool().then(|| RolloutModel { manual: rng.bool() }) },
                105..=109 if self.rollout.is_some() => Op::Promote,
                110..=113 => Op::Window { cluster, closed: rng.bool() },
                114..=117 => Op::Retarget { cluster, moved: !self.clusters[cluster].moved },
                _ => continue,
            };
            return op;
        }
    }

    /// The target `cluster` is reached through.
    fn target(&self, cluster: &str) -> String {
        match self.clusters.get(cluster) {
            Some(c) if c.moved => format!("{cluster}-b"),
            _ => cluster.to_string(),
        }
    }

    fn apply(&mut self, op: &Op) {
        self.broken = false;
        match op {
            Op::Edit { profile, minor, replicas, image } => {
                let v = self.versions.get_mut(profile).unwrap().iter_mut().find(|v| v.minor == *minor).unwrap();
                (v.replicas, v.image) = (*replicas, *image);
            }
            Op::NewVersion { profile, extra } => {
                let versions = self.versions.get_mut(profile).unwrap();
                let last = versions.last().unwrap().clone();
                versions.push(Version { minor: last.minor + 1, image: last.image + 1, extra: *extra, ..last });
            }
            Op::Override { cluster, replicas } => self.clusters.get_mut(cluster).unwrap().replicas = *replicas,
            Op::Repin { cluster, pin } => self.clusters.get_mut(cluster).unwrap().pin = pin.clone(),
            Op::Switch { cluster, profile } => {
                let c = self.clusters.get_mut(cluster).unwrap();
                c.profile = profile;
                c.pin = Pin::Caret;
            }
            Op::Updates { cluster, manual } => self.clusters.get_mut(cluster).unwrap().manual = *manual,
            Op::Window { cluster, closed } => self.clusters.get_mut(cluster).unwrap().window = *closed,
            Op::Retarget { cluster, moved } => self.clusters.get_mut(cluster).unwrap().moved = *moved,
            Op::Drift { cluster, report } => self.clusters.get_mut(cluster).unwrap().report = *report,
            Op::Ignore { cluster, on } => self.clusters.get_mut(cluster).unwrap().ignore_replicas = *on,
            Op::Sensitive { cluster, on } => self.clusters.get_mut(cluster).unwrap().sensitive_image = *on,
            Op::Ring { cluster, ring } => self.clusters.get_mut(cluster).unwrap().ring = *ring,
            Op::Add { cluster } => {
                self.clusters.insert(
                    cluster,
                    ClusterModel {
                        profile: "web",
                        pin: Pin::Caret,
                        replicas: None,
                        manual: false,
                        report: false,
                        ignore_replicas: false,
                        sensitive_image: false,
                        ring: 1,
                        window: false,
                        moved: false,
                    },
                );
            }
            Op::Remove { cluster } => {
                self.clusters.remove(cluster);
            }
            Op::Broken => self.broken = true,
            Op::Rollout { policy } => self.rollout = *policy,
            Op::Approve { .. } | Op::Tamper { .. } | Op::Promote => {}
        }
    }

    /// Writes the whole repository as the model says (files it no longer has are removed).
    fn write(&self, repo: &Repo) {
        let _ = std::fs::remove_dir_all(repo.path().join("profiles"));
        let _ = std::fs::remove_dir_all(repo.path().join("clusters"));
        let _ = std::fs::remove_dir_all(repo.path().join("rollouts"));
        if let Some(r) = self.rollout {
            // (A commit where no cluster is on ring 0 does not load: the canary selects nothing.)
            repo.write(
                "rollouts/rings.yaml",
                &format!(
                    "apiVersion: strata.dev/v1\nkind: Rollout\nmetadata: {{ name: rings }}\nspec:\n  waves:\n    - name: canary\n      selector: {{ tags: [\"ring:0\"] }}\n      maxClusters: 1\n    - name: rest\n{}",
                    if r.manual { "      approval: manual\n" } else { "" }
                ),
            );
        }
        repo.write(
            "packs/app/deployment.yaml",
            "apiVersion: apps/v1\nkind: Deployment\nmetadata: { name: app }\nspec:\n  replicas: {{ values.replicas }}\n  selector: { matchLabels: { app: app } }\n  template:\n    metadata: { labels: { app: app } }\n    spec: { containers: [{ name: app, image: \"example.com/app:{{ values.image }}\" }] }\n",
        );
        // Its namespace, as an API server needs it before anything in it.
        repo.write("packs/app/namespace.yaml", "apiVersion: v1\nkind: Namespace\nmetadata: { name: apps }\n");
        repo.write(
            "packs/extra/configmap.yaml",
            "apiVersion: v1\nkind: ConfigMap\nmetadata: { name: extra }\ndata: { note: \"{{ values.note }}\" }\n",
        );
        for (profile, versions) in &self.versions {
            for v in versions {
                let mut text = format!(
                    "apiVersion: strata.dev/v1\nkind: Profile\nmetadata: {{ name: {profile}, version: 1.{}.0 }}\nspec:\n  layers:\n    - name: app\n      type: manifests\n      source: packs/app\n      namespace: apps\n      values: {{ replicas: {}, image: \"{}\" }}\n",
                    v.minor, v.replicas, v.image
                );
                if v.extra {
                    text.push_str(&format!(
                        "    - name: extra\n      type: manifests\n      source: packs/extra\n      namespace: apps\n      values: {{ note: \"{profile} 1.{}\" }}\n",
                        v.minor
                    ));
                }
                if self.broken && v.minor == 0 && *profile == "web" {
                    text = text.replace("version: 1.0.0", "version: one");
                }
                repo.write(&format!("profiles/{profile}/1.{}.0/profile.yaml", v.minor), &text);
            }
        }
        for (name, c) in &self.clusters {
            let pin = match &c.pin {
                Pin::Exact(minor) => format!("1.{minor}.0"),
                Pin::Tilde(minor) => format!("~1.{minor}"),
                Pin::Caret => "^1".to_string(),
            };
            let mut text = format!(
                "apiVersion: strata.dev/v1\nkind: Cluster\nmetadata: {{ name: {name}, tags: [\"ring:{}\"] }}\nspec:\n  profile: {{ name: {}, version: \"{pin}\" }}\n  updates: {}\n  drift: {}\n",
                c.ring,
                c.profile,
                if c.manual { "manual" } else { "auto" },
                if c.report { "report" } else { "correct" },
            );
            if let Some(replicas) = c.replicas {
                text.push_str(&format!("  overrides:\n    app: {{ replicas: {replicas} }}\n"));
            }
            if c.ignore_replicas {
                text.push_str("  ignore: [{ kind: Deployment, path: /spec/replicas }]\n");
            }
            if c.sensitive_image {
                text.push_str("  sensitive: [{ kind: Deployment, path: /spec/template/spec/containers/0/image }]\n");
            }
            if c.window {
                text.push_str(&format!("  window: \"{} 03:00-04:00 UTC\"\n", closed_day()));
            }
            if c.moved {
                text.push_str(&format!("  target: {name}-b\n"));
            }
            repo.write(&format!("clusters/{name}.yaml"), &text);
        }
    }
}

/// Every target the host config has: one named as each cluster the model may use, and a second
/// (`<name>-b`) it may move to.
fn target_names() -> Vec<String> {
    CLUSTERS.iter().flat_map(|c| [c.to_string(), format!("{c}-b")]).collect()
}

/// A day of the week whose 03:00–04:00 UTC is neither today nor tomorrow: a window on it stays
/// closed for as long as a history runs.
fn closed_day() -> &'static str {
    let days = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() / 86_400;
    // 1970-01-01 was a Thursday; three days on is never today or tomorrow.
    ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"][((days + 3) % 7) as usize]
}

/// A daemon following `repo` with the given redaction key (so keyed digests and markers compare
/// between two daemons).
fn daemon(repo: &Repo, key: &[u8; 32], targets: &Targets) -> Daemon {
    let mut d = Daemon::configure(&daemon::local(repo), &targets.config(), "");
    // Drift found within a second of a hand edit (directory targets have no watches).
    let config =
        std::fs::read_to_string(&d.config).unwrap().replace("drift: { interval: 1h }", "drift: { interval: 1s }");
    std::fs::write(&d.config, config).unwrap();
    let state = d.dir.path().join("state");
    std::fs::create_dir_all(&state).unwrap();
    let key_file = state.join("redaction.key");
    std::fs::write(&key_file, key).unwrap();
    std::fs::set_permissions(&key_file, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    d.spawn();
    d
}

fn json(d: &Daemon, path: &str) -> Value {
    let (code, body) = d.request("GET", path, &[("Authorization", &format!("Bearer {TOKEN}"))], "");
    assert_eq!(code, 200, "GET {path}: {body}");
    serde_json::from_str(&body).unwrap()
}

/// Waits until `d` evaluated `head` (loaded or rejected), evaluates nothing, has nothing left to
/// apply, and stays so for a moment (a re-evaluation an apply asks for comes within it).
fn settle(d: &Daemon, head: &str, trace: &dyn Fn() -> String) {
    d.wait_settled_or(head, &[], trace);
}

/// What the daemon says of each cluster: what it runs, holds and reports.
fn clusters(d: &Daemon) -> BTreeMap<String, Value> {
    let list = json(d, "/api/v1/clusters");
    list.as_array()
        .unwrap()
        .iter()
        .map(|row| {
            let c = &row["cluster"];
            let name = c["name"].as_str().unwrap().to_string();
            let detail = json(d, &format!("/api/v1/clusters/{name}"));
            let p = &detail["pending"];
            // (How many fields drifted depends on when the last drift check ran: the hand edits
            // check it on their own, below.)
            let said = serde_json::json!({
                "sync": c["sync"], "profile": c["profile"], "version": c["version"], "digest": c["digest"],
                "profile_revision": c["profile_revision"], "cluster_revision": c["cluster_revision"],
                "suspended": c["suspended"],
                "pending": if p.is_null() { Value::Null } else { serde_json::json!({
                    "head_revision": p["head_revision"], "base_revision": p["base_revision"], "hold": p["hold"],
                    "summary": p["summary"], "diff": p["diff"], "base_digest": p["base_digest"],
                })},
            });
            (name, said)
        })
        .collect()
}

/// Where the clusters of one daemon are.
pub enum Targets {
    /// A directory per cluster under the daemon's `out/`.
    Directory,
    /// An API server stand-in per cluster (its kubeconfigs in the directory, kept while it lives).
    ApiServer(tempfile::TempDir, BTreeMap<String, ApiServer>),
}

impl Targets {
    fn new(api_servers: bool) -> Targets {
        if !api_servers {
            return Targets::Directory;
        }
        let dir = tempfile::tempdir().unwrap();
        let servers = target_names().into_iter().map(|t| (t, ApiServer::start())).collect();
        Targets::ApiServer(dir, servers)
    }

    /// The host config's targets: one for every cluster name the model may use.
    fn config(&self) -> String {
        match self {
            Targets::Directory => {
                target_names().iter().map(|t| format!("  {t}: {{ directory: ./out/{t} }}\n")).collect()
            }
            Targets::ApiServer(dir, servers) => servers
                .iter()
                .map(|(c, server)| {
                    let at = dir.path().join(c.as_str());
                    std::fs::create_dir_all(&at).unwrap();
                    format!("  {c}: {{ kubeconfig: {} }}\n", server.kubeconfig(&at).display())
                })
                .collect(),
        }
    }

    /// What each cluster runs: the files written, or the live objects of namespace `apps`
    /// without what the API server sets itself.
    fn live(&self, d: &Daemon) -> BTreeMap<String, String> {
        match self {
            Targets::Directory => files(&d.dir.path().join("out")),
            Targets::ApiServer(_, servers) => {
                let mut out = BTreeMap::new();
                for (c, server) in servers {
                    for id in server.all() {
                        let [plural, ns, name] = id.splitn(3, '/').collect::<Vec<_>>()[..] else { continue };
                        if ns != "apps" {
                            continue;
                        }
                        let Some(mut object) = server.object(plural, Some(ns), name) else { continue };
                        if let Some(meta) = object["metadata"].as_object_mut() {
                            for field in ["resourceVersion", "uid", "creationTimestamp", "managedFields", "generation"]
                            {
                                meta.remove(field);
                            }
                        }
                        if let Some(o) = object.as_object_mut() {
                            o.remove("status");
                        }
                        out.insert(format!("{c}/{id}"), object.to_string());
                    }
                }
                out
            }
        }
    }

    /// The replicas `cluster`'s Deployment has (none: never applied).
    fn replicas(&self, d: &Daemon, cluster: &str) -> Option<Option<u64>> {
        match self {
            Targets::Directory => {
                let file = d.dir.path().join(format!("out/{cluster}/apps/deployment.app.yaml"));
                let text = std::fs::read_to_string(&file).ok()?;
                Some(text.lines().find_map(|l| l.strip_prefix("  replicas: ")?.trim().parse().ok()))
            }
            Targets::ApiServer(_, servers) => {
                let object = servers[cluster].object("deployments", Some("apps"), "app")?;
                Some(object["spec"]["replicas"].as_u64())
            }
        }
    }

    /// Sets the replicas of `cluster`'s Deployment by hand (adds them where strata leaves the
    /// field out: its ignore rule covers it), as `kubectl edit` would.
    fn tamper(&self, d: &Daemon, cluster: &str) {
        match self {
            Targets::Directory => tamper_file(d, cluster),
            Targets::ApiServer(dir, servers) => {
                if servers[cluster].object("deployments", Some("apps"), "app").is_none() {
                    return;
                }
                let kubeconfig = servers[cluster].kubeconfig(&dir.path().join(cluster));
                let run = std::process::Command::new("kubectl")
                    .args(["--kubeconfig"])
                    .arg(&kubeconfig)
                    .args([
                        "-n",
                        "apps",
                        "patch",
                        "deployment",
                        "app",
                        "--type",
                        "merge",
                        "-p",
                        r#"{"spec":{"replicas":99}}"#,
                    ])
                    .output()
                    .expect("kubectl runs");
                assert!(run.status.success(), "kubectl patch: {}", String::from_utf8_lossy(&run.stderr));
            }
        }
    }
}

/// Sets (or adds: strata leaves out a field its ignore rule covers) the replicas of `cluster`'s
/// Deployment file by hand.
fn tamper_file(d: &Daemon, cluster: &str) {
    {
        let file = d.dir.path().join(format!("out/{cluster}/apps/deployment.app.yaml"));
        let Ok(text) = std::fs::read_to_string(&file) else { return };
        let mut lines: Vec<String> =
            text.lines().filter(|l| !l.starts_with("  replicas: ")).map(str::to_string).collect();
        if let Some(at) = lines.iter().position(|l| l == "spec:") {
            lines.insert(at + 1, "  replicas: 99".to_string());
        }
        std::fs::write(&file, lines.join("\n") + "\n").unwrap();
    }
}

/// Every file under `dir` with its content.
fn files(dir: &Path) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else { continue };
        for entry in entries {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else {
                let shown = path.strip_prefix(dir).unwrap().display().to_string();
                out.insert(shown, std::fs::read_to_string(&path).unwrap_or_default());
            }
        }
    }
    out
}

/// Runs a history of `steps` random operations from `seed`, on directory targets or
/// (`api_servers`) an API server stand-in per cluster, checking both equivalences after each.
/// Panics (printing the seed and the operations) at the first difference.
pub fn run_on(seed: u64, steps: usize, api_servers: bool) {
    let on = if api_servers { "API servers" } else { "directories" };
    eprintln!("truth: seed {seed} (STRATA_SEED={seed} repeats it), {steps} steps, clusters on {on}");
    let mut rng = fastrand::Rng::with_seed(seed);
    let repo = Repo::example();
    let mut model = Model::new();
    model.write(&repo);
    repo.commit("a fleet of the model");
    let key: [u8; 32] = std::array::from_fn(|i| i as u8 ^ 0x5a);
    let (targets_a, targets_b) = (Targets::new(api_servers), Targets::new(api_servers));
    let a = daemon(&repo, &key, &targets_a);
    let mut b = daemon(&repo, &key, &targets_b);
    let mut head = repo.commit("start");
    let mut ops: Vec<Op> = Vec::new();
    let logs = (a.dir.path().join("daemon.log"), b.dir.path().join("daemon.log"));
    let tail = |path: &Path| {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    };
    let trace = |ops: &[Op]| {
        format!(
            "seed {seed}; operations so far:\n{ops:#?}\n--- running daemon's log ---\n{}\n--- restarted daemon's log ---\n{}",
            tail(&logs.0),
            tail(&logs.1)
        )
    };
    settle(&a, &head, &|| trace(&ops));
    settle(&b, &head, &|| trace(&ops));

    for step in 0..steps {
        let before = clusters(&a);
        let pending_before: BTreeSet<String> =
            before.iter().filter(|(_, c)| !c["pending"].is_null()).map(|(n, _)| n.clone()).collect();
        let op = model.random(&mut rng, &pending_before);
        ops.push(op.clone());
        let last_good = json(&a, "/api/v1/revision")["last_good"].as_str().map(str::to_string);
        // Rollouts with a run under way: the run keeps the waves it gave its clusters.
        let under_way: BTreeSet<String> = rollouts(&a)
            .as_array()
            .unwrap()
            .iter()
            .filter(|r| !matches!(r["state"].as_str(), Some("idle" | "complete")))
            .map(|r| r["rollout"].as_str().unwrap().to_string())
            .collect();
        match &op {
            Op::Approve { cluster } => {
                let revision = before[*cluster]["pending"]["head_revision"].as_str().unwrap().to_string();
                for d in [&a, &b] {
                    let body = serde_json::json!({"by": "truth", "revision": revision}).to_string();
                    let (code, text) = d.request(
                        "POST",
                        &format!("/api/v1/clusters/{cluster}/approve"),
                        &[("Authorization", &format!("Bearer {TOKEN}")), ("Content-Type", "application/json")],
                        &body,
                    );
                    assert!(code == 202 || code == 409, "approve {cluster}: {code} {text}\n{}", trace(&ops));
                }
            }
            Op::Promote => {
                for d in [&a, &b] {
                    let (code, text) = d.request(
                        "POST",
                        "/api/v1/rollouts/rings/promote",
                        &[("Authorization", &format!("Bearer {TOKEN}")), ("Content-Type", "application/json")],
                        "{\"by\": \"truth\"}",
                    );
                    // 409: nothing waits for promotion (or the rollout is idle); 404: the last
                    // good revision has no such rollout.
                    assert!(matches!(code, 200 | 404 | 409), "promote: {code} {text}\n{}", trace(&ops));
                }
            }
            Op::Tamper { .. } => {}
            op => {
                model.apply(op);
                model.write(&repo);
                head = repo.commit(&format!("step {step}: {op:?}"));
            }
        }
        // B starts afresh at this commit, with the state it had (stopped or killed).
        if rng.bool() {
            b.terminate();
        } else {
            b.kill9();
        }
        b.spawn();
        settle(&a, &head, &|| trace(&ops));
        settle(&b, &head, &|| trace(&ops));
        // A hand edit after a change of settings, or on its own: corrected or reported as the
        // cluster's file now says.
        if let Op::Tamper { cluster } | Op::Drift { cluster, .. } | Op::Ignore { cluster, .. } = op {
            // Where the cluster is now (its second target once moved).
            let at = model.target(cluster);
            targets_a.tamper(&a, &at);
            targets_b.tamper(&b, &at);
            // A drift check or two (every second), then what the cluster's settings say of it. A
            // clean drift check shows nowhere (no count, no time), so the clock waits them out.
            std::thread::sleep(Duration::from_secs(3));
            settle(&a, &head, &|| trace(&ops));
            settle(&b, &head, &|| trace(&ops));
            if let Some(c) = model.clusters.get(cluster) {
                for (d, targets, which) in [(&a, &targets_a, "running"), (&b, &targets_b, "restarted")] {
                    // Never applied (its revision did not load): nothing to edit by hand.
                    let Some(replicas) = targets.replicas(d, &at) else { continue };
                    let left = c.report || c.ignore_replicas;
                    let reported =
                        d.cluster(cluster).get("cluster").and_then(|c| c["drifted"].as_i64()).unwrap_or_default();
                    assert!(
                        !c.report || c.ignore_replicas || reported > 0,
                        "step {step}: {cluster} of the {which} daemon reports no drift\n{}",
                        trace(&ops)
                    );
                    assert_eq!(
                        replicas == Some(99),
                        left,
                        "step {step}: {cluster} of the {which} daemon (drift: {}, replicas ignored: {}) after a hand edit: replicas {replicas:?}\nit says: {:#}\n{}",
                        if c.report { "report" } else { "correct" },
                        c.ignore_replicas,
                        d.request(
                            "GET",
                            &format!("/api/v1/clusters/{cluster}"),
                            &[("Authorization", &format!("Bearer {TOKEN}"))],
                            ""
                        )
                        .1,
                        trace(&ops)
                    );
                }
            }
        }

        // Restart equivalence.
        let (said_a, said_b) = (clusters(&a), clusters(&b));
        if said_a != said_b {
            let differing: BTreeSet<_> =
                said_a.keys().chain(said_b.keys()).filter(|n| said_a.get(*n) != said_b.get(*n)).collect();
            let pairs: Vec<String> = differing
                .iter()
                .map(|n| {
                    format!(
                        "{n}:\n  running: {}\n  restarted: {}",
                        said_a.get(*n).cloned().unwrap_or_default(),
                        said_b.get(*n).cloned().unwrap_or_default()
                    )
                })
                .collect();
            panic!("step {step}: the running and the restarted daemon differ:\n{}\n{}", pairs.join("\n"), trace(&ops));
        }
        let (rollouts_a, rollouts_b) = (rollouts(&a), rollouts(&b));
        assert_eq!(
            rollouts_a,
            rollouts_b,
            "step {step}: the running (left) and the restarted daemon's rollouts differ\n{}",
            trace(&ops)
        );
        let (out_a, out_b) = (targets_a.live(&a), targets_b.live(&b));
        if out_a != out_b {
            let differing: Vec<_> =
                out_a.keys().chain(out_b.keys()).filter(|f| out_a.get(*f) != out_b.get(*f)).collect();
            let shown: Vec<String> = differing
                .iter()
                .collect::<BTreeSet<_>>()
                .iter()
                .map(|f| format!("{f}:\n  running: {:?}\n  restarted: {:?}", out_a.get(**f), out_b.get(**f)))
                .collect();
            panic!("step {step}: what the two daemons wrote differs:\n{}\n{}", shown.join("\n"), trace(&ops));
        }

        // The plan is the daemon's plan: for a commit that loads, from the revision the daemon
        // last loaded.
        let commit = !matches!(op, Op::Approve { .. } | Op::Broken | Op::Promote | Op::Tamper { .. });
        if let (true, Some(base)) = (commit, &last_good)
            && json(&a, "/api/v1/revision")["verdict"] == "loaded"
        {
            check_plan(&a, &repo, base, &head, (&before, &said_a), &pending_before, &under_way, &|| trace(&ops));
        }
    }
    // What the history exercised, by kind of operation.
    let mut kinds: BTreeMap<String, usize> = BTreeMap::new();
    for op in &ops {
        let kind = format!("{op:?}");
        *kinds.entry(kind.split([' ', '{']).next().unwrap_or_default().to_string()).or_default() += 1;
    }
    eprintln!("truth: seed {seed}: {} operations: {kinds:?}", ops.len());
}

/// Where each rollout stands, as the daemon says (without times).
fn rollouts(d: &Daemon) -> Value {
    let list = json(d, "/api/v1/rollouts");
    let described: Vec<Value> = list
        .as_array()
        .into_iter()
        .flatten()
        .map(|r| {
            let detail = json(d, &format!("/api/v1/rollouts/{}", r["rollout"].as_str().unwrap()));
            let waves: Vec<Value> = detail["waves"]
                .as_array()
                .unwrap()
                .iter()
                .map(|w| {
                    let clusters: Vec<Value> = w["clusters"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .map(|c| serde_json::json!([c["cluster"], c["state"], c["to"]]))
                        .collect();
                    serde_json::json!({"name": w["name"], "state": w["state"], "number": w["number"], "clusters": clusters})
                })
                .collect();
            serde_json::json!({"rollout": detail["rollout"], "state": detail["state"], "revision": detail["revision"], "next": detail["next"], "waves": waves})
        })
        .collect();
    Value::Array(described)
}

/// What the plan from `base` to `head` says of each cluster against what the daemon did.
#[allow(clippy::too_many_arguments)]
fn check_plan(
    daemon: &Daemon,
    repo: &Repo,
    base: &str,
    head: &str,
    (before, after): (&BTreeMap<String, Value>, &BTreeMap<String, Value>),
    pending_before: &BTreeSet<String>,
    under_way: &BTreeSet<String>,
    trace: &dyn Fn() -> String,
) {
    let run = repo.strata(&["plan", "--base", base, "--head", head, "--format", "json"]);
    assert_eq!(run.code, 0, "plan: {}\n{}", run.stderr, trace());
    let plan: Value = serde_json::from_str(&run.stdout).unwrap();
    // The waves the plan puts clusters in, and the daemon's: the same wave for each cluster.
    let mut planned_waves: BTreeMap<String, (String, String)> = BTreeMap::new();
    for r in plan["rollouts"].as_array().into_iter().flatten() {
        let rollout = r["rollout"].as_str().unwrap();
        for w in r["waves"].as_array().unwrap() {
            for c in w["clusters"].as_array().unwrap() {
                let wave = w["name"].as_str().unwrap().to_string();
                planned_waves.insert(c["cluster"].as_str().unwrap().to_string(), (rollout.to_string(), wave));
            }
        }
    }
    let mut daemon_waves: BTreeMap<String, (String, String, String)> = BTreeMap::new();
    for r in json(daemon, "/api/v1/rollouts").as_array().into_iter().flatten() {
        let rollout = r["rollout"].as_str().unwrap();
        if r["revision"] != head {
            continue;
        }
        let detail = json(daemon, &format!("/api/v1/rollouts/{rollout}"));
        for w in detail["waves"].as_array().unwrap() {
            for c in w["clusters"].as_array().unwrap() {
                daemon_waves.insert(
                    c["cluster"].as_str().unwrap().to_string(),
                    (rollout.to_string(), w["name"].as_str().unwrap().to_string(), c["state"].as_str().unwrap().into()),
                );
            }
        }
    }
    for c in plan["clusters"].as_array().unwrap() {
        let name = c["cluster"].as_str().unwrap();
        if pending_before.contains(name) {
            continue;
        }
        if let Some((rollout, wave)) = planned_waves.get(name) {
            let (now, theirs) = (after.get(name), daemon_waves.get(name));
            let why = || {
                format!(
                    "{name}: the plan puts it in rollout {rollout}, wave {wave}: {c:#}\nthe daemon has it in {theirs:?} and says {now:#?}\n{}",
                    trace()
                )
            };
            // The plan shows the waves a new run takes; a run under way keeps the waves it gave
            // its clusters and places the new ones where there is room (docs/book/src/rollouts.md): then only the rollout is the same.
            if under_way.contains(rollout) {
                assert_eq!(theirs.map(|t| &t.0), Some(rollout), "the same rollout: {}", why());
            } else {
                assert_eq!(theirs.map(|t| (&t.0, &t.1)), Some((rollout, wave)), "the same wave: {}", why());
            }
            // Released and applied, or held: by its wave, or for its own approval.
            let moved = before.get(name).map(|v| &v["digest"]) != now.map(|v| &v["digest"]);
            let hold = now.map(|v| v["pending"]["hold"]["until"].clone()).unwrap_or_default();
            let window = c["window"].is_string() && hold == "window";
            assert!(moved || hold == "rollout" || hold == "approval" || window, "released or held: {}", why());
            continue;
        }
        let kind = c["kind"].as_str().unwrap();
        let (was, now) = (before.get(name), after.get(name));
        let digest = |v: Option<&Value>| v.map(|v| v["digest"].clone()).unwrap_or(Value::Null);
        let moved = digest(was) != digest(now);
        let held = now.is_some_and(|v| !v["pending"].is_null());
        let why = || format!("{name}: the plan says {c:#}\nthe daemon had {was:#?}\nand has {now:#?}\n{}", trace());
        match kind {
            "removed-cluster" => assert_eq!(now.map(|v| v["sync"].clone()), Some(Value::from("removed")), "{}", why()),
            "new-cluster" => assert!(now.is_some_and(|v| v["sync"] == "applied"), "{}", why()),
            "unchanged" => assert!(!moved && !held, "{}", why()),
            // Held for approval, or (the plan names the cluster's window, closed all along here)
            // for the window: what the cluster file changed goes ahead, the edit waits.
            _ if c["pending"] == true || c["window"].is_string() => {
                assert!(held, "held: {}", why());
                let hold = now.map(|v| v["pending"]["hold"]["until"].clone()).unwrap_or_default();
                assert_eq!(hold, if c["pending"] == true { "approval" } else { "window" }, "held for: {}", why());
                let ahead = c["reasons"].as_array().unwrap().iter().any(|r| r == "override" || r == "field-rules");
                assert_eq!(moved, ahead, "only what the cluster file changed goes ahead: {}", why());
            }
            _ => assert!(moved && !held, "applied: {}", why()),
        }
    }
}
