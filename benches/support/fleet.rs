//! Generated fleets for the benchmarks, in two shapes.
//!
//! - [`Shape::Overridden`], the fleet real platform teams run: 10 profiles × 3 versions, 40 objects
//!   per version in 4 templated layers (a Namespace, and per app a ConfigMap built with a loop, a
//!   Deployment and a Service), and every cluster overriding values in two of the four layers
//!   (region, replicas, log level), so almost no render is shared between clusters. Per profile, a
//!   quarter of the clusters pin 1.0.0, a quarter follow `~1.1`, a quarter pin 1.2.0 and a quarter
//!   follow `^1` (which resolves to 1.2.0): an in-place edit of `p00@1.2.0` touches 5 % of the fleet
//!   (50 of 1,000 clusters).
//! - [`Shape::Shared`], the fleet the first benchmarks used: 20 profiles × 5 versions, clusters
//!   pinned round-robin, one in ten with an override, so most clusters share their renders.
//! - [`Shape::Light`], the overridden fleet with one object per cluster (a Deployment in one
//!   templated layer): 100,000 clusters on directory targets are 100,000 files, not 4 million.
//!
//! Any size: `generate(root, shape, clusters)` writes the tree and commits it with the real `git`;
//! `edit_in_place` commits the edit the plan benchmark measures.

#![allow(dead_code)]

use std::fmt::Write as _;
use std::path::Path;

use super::{git, write};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Shape {
    /// Every cluster overrides two layers: renders are per cluster.
    Overridden,
    /// Clusters mostly share renders.
    Shared,
    /// As overridden, one object per cluster.
    Light,
}

impl Shape {
    pub fn parse(text: &str) -> Option<Shape> {
        match text {
            "overridden" => Some(Shape::Overridden),
            "shared" => Some(Shape::Shared),
            "light" => Some(Shape::Light),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Shape::Overridden => "overridden",
            Shape::Shared => "shared",
            Shape::Light => "light",
        }
    }

    pub fn profiles(self) -> usize {
        match self {
            Shape::Overridden | Shape::Light => 10,
            Shape::Shared => 20,
        }
    }

    pub fn versions(self) -> usize {
        match self {
            Shape::Overridden | Shape::Light => 3,
            Shape::Shared => 5,
        }
    }

    /// The profile version an in-place edit changes, and how many clusters of `clusters` run it.
    pub fn edited(self, clusters: usize) -> (&'static str, usize) {
        match self {
            // Half of p00's clusters are on 1.2.0 (a pin or `^1`).
            Shape::Overridden | Shape::Light => ("p00/1.2.0", clusters.div_ceil(self.profiles()) / 2),
            // Clusters c with c % 20 == 0 and (c / 20) % 5 == 0.
            Shape::Shared => ("p00/1.0.0", clusters.div_ceil(self.profiles() * self.versions())),
        }
    }
}

pub const LAYERS: usize = 4;

impl Shape {
    /// Layers per profile version.
    pub fn layers(self) -> usize {
        if self == Shape::Light { 1 } else { LAYERS }
    }

    /// Objects per cluster.
    pub fn objects(self) -> usize {
        if self == Shape::Light { 1 } else { OBJECTS }
    }
}
pub const APPS_PER_LAYER: usize = 3;
/// Objects per profile version: per layer a Namespace and three apps of three objects.
pub const OBJECTS: usize = LAYERS * (1 + 3 * APPS_PER_LAYER);

const REGIONS: [&str; 6] = ["eu-central-1", "eu-west-1", "us-east-1", "us-west-2", "ap-south-1", "sa-east-1"];
const LEVELS: [&str; 4] = ["debug", "info", "warn", "error"];

/// `p03` / `c0042`: names sort in generation order.
pub fn cluster_name(c: usize) -> String {
    format!("c{c:05}")
}

fn profile_yaml(shape: Shape, p: usize, version: &str, replicas: usize) -> String {
    let mut out = format!(
        "apiVersion: strata.dev/v1\nkind: Profile\nmetadata: {{ name: p{p:02}, version: {version} }}\nspec:\n  layers:\n"
    );
    for l in 0..shape.layers() {
        let _ = write!(
            out,
            "    - name: l{l}\n      type: manifests\n      source: packs/p{p:02}/{version}/l{l}\n      namespace: p{p:02}-l{l}\n      values:\n        replicas: {replicas}\n        image: registry.example.com/p{p:02}/app:{version}\n        logLevel: info\n        region: eu-central-1\n        limits: {{ cpu: 500m, memory: 256Mi }}\n        settings: {{ timeout: 30s, retries: 3, cache: enabled, pool: 16 }}\n"
        );
        if l > 0 {
            let _ = writeln!(out, "      dependsOn: [l{}]", l - 1);
        }
    }
    out
}

/// The light shape's one object: a Deployment.
fn light_template() -> String {
    String::from(
        "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: app\n  labels: { region: \"{{ values.region }}\" }\nspec:\n  replicas: {{ values.replicas }}\n  selector:\n    matchLabels: { app: app }\n  template:\n    metadata:\n      labels: { app: app }\n    spec:\n      containers:\n        - name: app\n          image: {{ values.image }}\n          args: [\"--log-level={{ values.logLevel }}\"]\n",
    )
}

/// One layer's templates: a Namespace, then per app a ConfigMap whose data is built by a loop
/// over `values.settings`, a Deployment and a Service.
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
  LOG_LEVEL: "{{{{ values.logLevel }}}}"
  REGION: "{{{{ values.region }}}}"
  PROFILE: "{{{{ profile.name }}}}@{{{{ profile.version }}}}"
{{%- for key, value in values.settings | items %}}
  {{{{ key | upper }}}}: "{{{{ value }}}}"
{{%- endfor %}}
---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: {name}
  labels: {{ app: {name}, region: "{{{{ values.region }}}}" }}
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
          args: ["--log-level={{{{ values.logLevel }}}}", "--region={{{{ values.region }}}}"]
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

fn versions(shape: Shape) -> Vec<String> {
    (0..shape.versions()).map(|v| format!("1.{v}.0")).collect()
}

/// The cluster file of cluster `c`.
pub fn cluster_yaml(shape: Shape, c: usize, replicas: usize) -> String {
    let name = cluster_name(c);
    match shape {
        Shape::Light => {
            let p = c % shape.profiles();
            let version = ["1.0.0", "\"~1.1\"", "1.2.0", "\"^1\""][(c / shape.profiles()) % 4];
            let region = REGIONS[c % REGIONS.len()];
            format!(
                "apiVersion: strata.dev/v1\nkind: Cluster\nmetadata:\n  name: {name}\n  tags: [\"region:{region}\", \"profile:p{p:02}\"]\nspec:\n  profile: {{ name: p{p:02}, version: {version} }}\n  overrides:\n    l0: {{ region: {region}, replicas: {replicas} }}\n  updates: auto\n"
            )
        }
        Shape::Overridden => {
            let p = c % shape.profiles();
            let version = match (c / shape.profiles()) % 4 {
                0 => "1.0.0",
                1 => "\"~1.1\"",
                2 => "1.2.0",
                _ => "\"^1\"",
            };
            // Two layers overridden per cluster, which two varies across the fleet.
            let (a, b) = match c % 3 {
                0 => (0, 1),
                1 => (1, 2),
                _ => (2, 3),
            };
            let region = REGIONS[c % REGIONS.len()];
            let level = LEVELS[(c / 7) % LEVELS.len()];
            format!(
                "apiVersion: strata.dev/v1\nkind: Cluster\nmetadata:\n  name: {name}\n  tags: [\"env:{}\", \"region:{region}\", \"profile:p{p:02}\"]\nspec:\n  profile: {{ name: p{p:02}, version: {version} }}\n  overrides:\n    l{a}: {{ region: {region}, replicas: {replicas}, logLevel: {level} }}\n    l{b}: {{ region: {region}, settings: {{ pool: {} }} }}\n  updates: {}\n",
                if c.is_multiple_of(10) { "staging" } else { "prod" },
                8 + c % 57,
                if c.is_multiple_of(2) { "auto" } else { "manual" }
            )
        }
        Shape::Shared => {
            let p = c % shape.profiles();
            let v = (c / shape.profiles()) % shape.versions();
            let version =
                if c.is_multiple_of(5) { format!("\">=1.{v}.0, <1.{}.0\"", v + 1) } else { format!("1.{v}.0") };
            let overrides = if c % 10 == 3 {
                format!("  overrides:\n    l0: {{ replicas: {} }}\n", replicas + 2)
            } else {
                String::new()
            };
            format!(
                "apiVersion: strata.dev/v1\nkind: Cluster\nmetadata:\n  name: {name}\n  tags: [\"env:bench\", \"profile:p{p:02}\"]\nspec:\n  profile: {{ name: p{p:02}, version: {version} }}\n{overrides}  updates: {}\n",
                if c.is_multiple_of(2) { "auto" } else { "manual" }
            )
        }
    }
}

/// Writes a fleet of `clusters` clusters under `root`, as a Git repository with one commit on
/// `main`; returns that commit.
pub fn generate(root: &Path, shape: Shape, clusters: usize) -> String {
    for p in 0..shape.profiles() {
        for version in versions(shape) {
            write(root, &format!("profiles/p{p:02}/{version}/profile.yaml"), &profile_yaml(shape, p, &version, 1));
            for l in 0..shape.layers() {
                let template = if shape == Shape::Light { light_template() } else { layer_template(l) };
                write(root, &format!("packs/p{p:02}/{version}/l{l}/app.yaml"), &template);
            }
        }
    }
    for c in 0..clusters {
        write(root, &format!("clusters/{}.yaml", cluster_name(c)), &cluster_yaml(shape, c, 2));
    }
    git(root, &["init", "-q", "-b", "main"]);
    git(root, &["add", "-A"]);
    git(root, &["commit", "-q", "-m", "fleet"]);
    git(root, &["rev-parse", "HEAD"])
}

/// A daemon's directory for `clusters` generated clusters (`overridden`) in `fleet/`, fetched
/// every `interval`, each on a directory target under `out/` — but the last three, whose targets
/// sit under a file (`blocked`) and cannot be written: their applies fail. Its config is
/// `strata.yaml`; the directory is under /dev/shm where there is one.
pub fn daemon_dir_with_three_failing(shape: Shape, clusters: usize, interval: &str) -> tempfile::TempDir {
    let base = if Path::new("/dev/shm").is_dir() { std::path::PathBuf::from("/dev/shm") } else { std::env::temp_dir() };
    let dir = tempfile::tempdir_in(base).unwrap();
    let repo = dir.path().join("fleet");
    generate(&repo, shape, clusters);
    std::fs::write(dir.path().join("blocked"), "a file, not a directory").unwrap();
    let mut config = format!(
        "repository: {{ url: {}, branch: main, interval: {interval} }}\nstate_dir: ./state\nlisten: 127.0.0.1:0\ntargets:\n",
        repo.display()
    );
    for c in 0..clusters {
        let name = cluster_name(c);
        let parent = if c + 3 >= clusters { "blocked" } else { "out" };
        let _ = writeln!(config, "  {name}: {{ directory: ./{parent}/{name} }}");
    }
    std::fs::write(dir.path().join("strata.yaml"), config).unwrap();
    dir
}

/// Commits an in-place edit of the shape's edited profile version (its replicas go to 2); returns
/// the new commit.
pub fn edit_in_place(root: &Path, shape: Shape) -> String {
    let (edited, _) = shape.edited(0);
    let (profile, version) = edited.split_once('/').expect("p/v");
    let p: usize = profile[1..].parse().expect("pNN");
    write(root, &format!("profiles/{edited}/profile.yaml"), &profile_yaml(shape, p, version, 2));
    git(root, &["commit", "-q", "-am", &format!("{profile}@{version}: two replicas")]);
    git(root, &["rev-parse", "HEAD"])
}

/// Commits an in-place edit of each of `versions` (`p01/1.2.0`: their replicas go to 2) of a
/// fleet of `shape` (overridden or light); returns the new commit.
pub fn edit_versions(root: &Path, shape: Shape, versions: &[&str]) -> String {
    for edited in versions {
        let (profile, version) = edited.split_once('/').expect("p/v");
        let p: usize = profile[1..].parse().expect("pNN");
        write(root, &format!("profiles/{edited}/profile.yaml"), &profile_yaml(shape, p, version, 2));
    }
    git(root, &["commit", "-q", "-am", &format!("{}: two replicas", versions.join(", "))]);
    git(root, &["rev-parse", "HEAD"])
}

/// Commits a change of one cluster's own overrides; returns the new commit.
pub fn override_one(root: &Path, shape: Shape, c: usize, replicas: usize) -> String {
    write(root, &format!("clusters/{}.yaml", cluster_name(c)), &cluster_yaml(shape, c, replicas));
    git(root, &["commit", "-q", "-am", &format!("{}: {replicas} replicas", cluster_name(c))]);
    git(root, &["rev-parse", "HEAD"])
}
