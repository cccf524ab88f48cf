//! Fleet benchmark: a generated Git repository of 1,000 clusters on 20 profiles × 5 versions,
//! 40 objects per version (4 manifests layers of 10 templated objects).
//!
//! Phases, each in a fresh child process so its peak memory is its own:
//! - `validate`: load and validate the model (no rendering);
//! - `render`: load, then render every cluster's desired set with digests;
//! - `render-yaml`: the same, plus serialising every desired set to YAML as `strata render` does;
//! - `plan-1`: plan between a base and a commit that edits one profile version in place (10 clusters);
//! - `plan-10`: the same with ten versions edited (100 clusters), to show the plan scales with what changed.
//!
//! Run with `cargo bench --bench fleet` (add `-- --iterations N` for more runs per phase).
//! Run it pinned to one core with `taskset -c 0 cargo bench --bench fleet`.

mod support;

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;

use std::time::Instant;
use support::{git, write};

use strata::model::Model;
use strata::plan::{self, Side};
use strata::render::Renderer;
use strata::render::tools::SystemTools;
use strata::repo;
use strata::source::GitSource;

const PROFILES: usize = 20;
const VERSIONS: usize = 5;
const LAYERS: usize = 4;
const APPS_PER_LAYER: usize = 3; // each app: ConfigMap, Deployment, Service; plus a Namespace per layer
const CLUSTERS: usize = 1000;

fn profile_yaml(p: usize, v: usize, replicas: usize) -> String {
    let mut out = format!(
        "apiVersion: strata.dev/v1\nkind: Profile\nmetadata: {{ name: p{p:02}, version: 1.{v}.0 }}\nspec:\n  layers:\n"
    );
    for l in 0..LAYERS {
        let _ = write!(
            out,
            "    - name: l{l}\n      type: manifests\n      source: packs/p{p:02}/1.{v}.0/l{l}\n      namespace: p{p:02}-l{l}\n      values:\n        replicas: {replicas}\n        image: registry.example.com/p{p:02}/app:1.{v}.0\n        logLevel: info\n        limits: {{ cpu: 500m, memory: 256Mi }}\n"
        );
        if l > 0 {
            let _ = writeln!(out, "      dependsOn: [l{}]", l - 1);
        }
    }
    out
}

fn layer_template(l: usize) -> String {
    let mut out = String::from("apiVersion: v1\nkind: Namespace\nmetadata:\n  name: {{ layer.namespace }}\n");
    for a in 0..APPS_PER_LAYER {
        let name = format!("app{l}{a}");
        let _ = write!(
            out,
            r#"---
apiVersion: v1
kind: ConfigMap
metadata:
  name: {name}-config
data:
  LOG_LEVEL: {{{{ values.logLevel }}}}
  PROFILE: "{{{{ profile.name }}}}@{{{{ profile.version }}}}"
---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: {name}
  labels: {{ app: {name} }}
spec:
  replicas: {{{{ values.replicas }}}}
  selector:
    matchLabels: {{ app: {name} }}
  template:
    metadata:
      labels: {{ app: {name} }}
    spec:
      containers:
        - name: app
          image: {{{{ values.image }}}}
          envFrom: [{{ configMapRef: {{ name: {name}-config }} }}]
          ports: [{{ containerPort: 8080 }}]
          resources:
            limits: {{ cpu: {{{{ values.limits.cpu }}}}, memory: {{{{ values.limits.memory }}}} }}
---
apiVersion: v1
kind: Service
metadata:
  name: {name}
spec:
  selector: {{ app: {name} }}
  ports: [{{ port: 80, targetPort: 8080 }}]
"#
        );
    }
    out
}

/// Generates the repository and its three commits; returns (path, base, head-1, head-10).
fn generate(root: &Path) -> (String, String, String) {
    for p in 0..PROFILES {
        for v in 0..VERSIONS {
            write(root, &format!("profiles/p{p:02}/1.{v}.0/profile.yaml"), &profile_yaml(p, v, 1));
            for l in 0..LAYERS {
                write(root, &format!("packs/p{p:02}/1.{v}.0/l{l}/app.yaml"), &layer_template(l));
            }
        }
    }
    for c in 0..CLUSTERS {
        let p = c % PROFILES;
        let v = (c / PROFILES) % VERSIONS;
        // One in five follows a range (all ranges here resolve to the same version as the pin).
        let version = if c % 5 == 0 { format!("\">=1.{v}.0, <1.{}.0\"", v + 1) } else { format!("1.{v}.0") };
        let overrides = if c % 10 == 3 { "  overrides:\n    l0: { replicas: 3 }\n" } else { "" };
        write(
            root,
            &format!("clusters/c{c:04}.yaml"),
            &format!(
                "apiVersion: strata.dev/v1\nkind: Cluster\nmetadata:\n  name: c{c:04}\n  tags: [\"env:bench\", \"profile:p{p:02}\"]\nspec:\n  profile: {{ name: p{p:02}, version: {version} }}\n{overrides}  updates: {}\n",
                if c % 2 == 0 { "auto" } else { "manual" }
            ),
        );
    }
    git(root, &["init", "-q", "-b", "main"]);
    git(root, &["add", "-A"]);
    git(root, &["commit", "-q", "-m", "fleet"]);
    let base = git(root, &["rev-parse", "HEAD"]);

    // One profile version edited in place.
    write(root, "profiles/p00/1.0.0/profile.yaml", &profile_yaml(0, 0, 2));
    git(root, &["commit", "-q", "-am", "p00@1.0.0: two replicas"]);
    let head1 = git(root, &["rev-parse", "HEAD"]);

    // Ten profile versions edited in place (on a branch from base).
    git(root, &["checkout", "-q", "-b", "ten", &base]);
    for p in 0..10 {
        write(root, &format!("profiles/p{p:02}/1.0.0/profile.yaml"), &profile_yaml(p, 0, 2));
    }
    git(root, &["commit", "-q", "-am", "ten versions: two replicas"]);
    let head10 = git(root, &["rev-parse", "HEAD"]);
    git(root, &["checkout", "-q", "main"]);
    (base, head1, head10)
}

fn load(git: &GitSource, rev: &str) -> (strata::source::Snapshot, Model) {
    let snapshot = git.snapshot(rev).expect("snapshot");
    let model = repo::load(snapshot.tree.as_ref()).expect("valid");
    (snapshot, model)
}

/// Runs one phase once; returns a short note of what it did.
fn phase(name: &str, repo: &Path, base: &str, head1: &str, head10: &str) -> String {
    let git = GitSource::open(repo, None).unwrap().unwrap();
    let tools = SystemTools::default();
    match name {
        "validate" => {
            let (_, model) = load(&git, base);
            format!("{} clusters, {} profiles", model.clusters.len(), model.profiles.len())
        }
        "render" | "render-yaml" => {
            let (snapshot, model) = load(&git, base);
            let renderer = Renderer::new(snapshot.tree.as_ref(), &model, &tools);
            let (mut objects, mut bytes) = (0, 0);
            for cluster in model.clusters.values() {
                let set = renderer.render(cluster).expect("renders");
                objects += set.object_count();
                if name == "render-yaml" {
                    bytes += set.to_yaml(snapshot.revision.as_deref()).len();
                }
            }
            format!(
                "{objects} objects{}",
                if bytes > 0 { format!(", {} MiB of YAML", bytes >> 20) } else { String::new() }
            )
        }
        "plan-1" | "plan-10" => {
            let head = if name == "plan-1" { head1 } else { head10 };
            let (bs, bm) = load(&git, base);
            let (hs, hm) = load(&git, head);
            let plan = plan::plan(
                Some(Side { revision: bs.revision.as_deref(), tree: bs.tree.as_ref(), model: &bm }),
                Side { revision: hs.revision.as_deref(), tree: hs.tree.as_ref(), model: &hm },
                &tools,
                &strata::redact::Redactor::random(),
            )
            .expect("plans");
            plan.summary()
        }
        other => panic!("unknown phase {other}"),
    }
}

fn peak_rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let arg = |flag: &str| args.iter().position(|a| a == flag).and_then(|i| args.get(i + 1)).cloned();

    // Child: run one phase `iterations` times, print timings (ms) and peak RSS.
    if let Some(name) = arg("--phase") {
        let repo = PathBuf::from(arg("--repo").unwrap());
        let (base, head1, head10) = (arg("--base").unwrap(), arg("--head1").unwrap(), arg("--head10").unwrap());
        let iterations: usize = arg("--iterations").and_then(|n| n.parse().ok()).unwrap_or(5);
        let mut times = Vec::new();
        let mut note = String::new();
        for _ in 0..iterations {
            let started = Instant::now();
            note = phase(&name, &repo, &base, &head1, &head10);
            times.push(started.elapsed());
        }
        times.sort();
        println!(
            "{}\t{}\t{}\t{note}",
            times[times.len() / 2].as_secs_f64() * 1e3,
            times[0].as_secs_f64() * 1e3,
            peak_rss_kib()
        );
        return;
    }

    let iterations = arg("--iterations").unwrap_or_else(|| "5".into());
    let dir = tempfile::tempdir().unwrap();
    let started = Instant::now();
    let (base, head1, head10) = generate(dir.path());
    if args.iter().any(|a| a == "--keep") {
        let kept = dir.keep();
        eprintln!(
            "kept {}: --phase NAME --repo {} --base {base} --head1 {head1} --head10 {head10}",
            kept.display(),
            kept.display()
        );
        return;
    }
    eprintln!(
        "generated {CLUSTERS} clusters, {PROFILES} profiles x {VERSIONS} versions, {} objects per version in {:.1}s",
        LAYERS * (1 + 3 * APPS_PER_LAYER),
        started.elapsed().as_secs_f64()
    );
    println!("{:<12} {:>10} {:>10} {:>12}  what", "phase", "median ms", "min ms", "peak RSS MiB");
    for name in ["validate", "render", "render-yaml", "plan-1", "plan-10"] {
        let out = Command::new(std::env::current_exe().unwrap())
            .args(["--phase", name, "--repo"])
            .arg(dir.path())
            .args(["--base", &base, "--head1", &head1, "--head10", &head10, "--iterations", &iterations])
            .output()
            .expect("bench child runs");
        assert!(out.status.success(), "{name}: {}", String::from_utf8_lossy(&out.stderr));
        let line = String::from_utf8(out.stdout).unwrap();
        let fields: Vec<&str> = line.trim().splitn(4, '\t').collect();
        let median: f64 = fields[0].parse().unwrap();
        let min: f64 = fields[1].parse().unwrap();
        let rss: f64 = fields[2].parse::<f64>().unwrap() / 1024.0;
        println!("{name:<12} {median:>10.1} {min:>10.1} {rss:>12.1}  {}", fields[3]);
    }
}
