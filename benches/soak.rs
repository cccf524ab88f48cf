//! Kill -9 soak: large applies to the API server stand-in of `tests/`, each `strata apply` killed
//! at a random moment, followed by applies that remove much of what the killed ones created;
//! then one apply runs to its end, and the cluster must hold exactly its desired set.
//!
//! Each round: `--kills` (default 3) applies of random desired sets (4 layers of up to 40 apps ×
//! ConfigMap + Deployment + Service, a layer's Namespace going when the layer is empty), each
//! killed after a random delay between 0 and the time a full cold apply takes; then a converging
//! apply of one more random set. After it, *orphans* are objects in the soak's namespaces that
//! the set does not have, *lost* are objects of the set that are missing. Both must be zero.
//!
//! `cargo bench --bench soak` (`-- --rounds N --kills K --seed S`). Not run in CI: it takes
//! minutes.

#[path = "../tests/apiserver/mod.rs"]
mod apiserver;
mod support;

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use apiserver::ApiServer;
use support::{git, write};

const LAYERS: usize = 4;
const APPS: usize = 40;

/// Per layer, the apps it has (an empty layer renders nothing, its Namespace included).
type Desired = Vec<Vec<usize>>;

fn generate(root: &Path) {
    let mut profile = String::from(
        "apiVersion: strata.dev/v1\nkind: Profile\nmetadata: { name: soak, version: 1.0.0 }\nspec:\n  layers:\n",
    );
    for l in 0..LAYERS {
        let _ = writeln!(
            profile,
            "    - {{ name: l{l}, type: manifests, source: packs/objects, namespace: soak-l{l}, values: {{ apps: [] }} }}"
        );
    }
    write(root, "profiles/soak/1.0.0/profile.yaml", &profile);
    write(
        root,
        "packs/objects/objects.yaml",
        "{% if values.apps %}apiVersion: v1\nkind: Namespace\nmetadata: { name: '{{ layer.namespace }}' }\n\
         {% for a in values.apps %}---\napiVersion: v1\nkind: ConfigMap\nmetadata: { name: 'app{{ a }}' }\ndata: { INDEX: '{{ a }}' }\n\
         ---\napiVersion: apps/v1\nkind: Deployment\nmetadata: { name: 'app{{ a }}' }\nspec:\n  replicas: 1\n  selector: { matchLabels: { app: 'app{{ a }}' } }\n  template:\n    metadata: { labels: { app: 'app{{ a }}' } }\n    spec: { containers: [{ name: app, image: 'registry.example.com/app:{{ a }}' }] }\n\
         ---\napiVersion: v1\nkind: Service\nmetadata: { name: 'app{{ a }}' }\nspec: { selector: { app: 'app{{ a }}' }, ports: [{ port: 80 }] }\n\
         {% endfor %}{% endif %}",
    );
    set_desired(root, &(0..LAYERS).map(|_| (0..APPS).collect()).collect());
    git(root, &["init", "-q", "-b", "main"]);
    commit(root);
}

fn set_desired(root: &Path, desired: &Desired) {
    let mut cluster = String::from(
        "apiVersion: strata.dev/v1\nkind: Cluster\nmetadata: { name: soak }\nspec:\n  profile: { name: soak, version: 1.0.0 }\n  overrides:\n",
    );
    for (l, apps) in desired.iter().enumerate() {
        let list: Vec<String> = apps.iter().map(usize::to_string).collect();
        let _ = writeln!(cluster, "    l{l}: {{ apps: [{}] }}", list.join(", "));
    }
    write(root, "clusters/soak.yaml", &cluster);
}

fn commit(root: &Path) {
    git(root, &["add", "-A"]);
    git(root, &["commit", "-q", "--allow-empty", "-m", "soak"]);
}

/// A random desired set: each layer empty one time in five, otherwise each app kept with
/// probability 0.7.
fn random_desired(rng: &mut fastrand::Rng) -> Desired {
    (0..LAYERS)
        .map(|_| if rng.f64() < 0.2 { Vec::new() } else { (0..APPS).filter(|_| rng.f64() < 0.7).collect() })
        .collect()
}

/// What the cluster must hold for `desired`, as [`ApiServer::all`] names objects.
fn expected(desired: &Desired) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for (l, apps) in desired.iter().enumerate() {
        if apps.is_empty() {
            continue;
        }
        out.insert(format!("namespaces//soak-l{l}"));
        for a in apps {
            for plural in ["configmaps", "deployments", "services"] {
                out.insert(format!("{plural}/soak-l{l}/app{a}"));
            }
        }
    }
    out
}

/// The soak's objects on the server: its namespaces and everything in them.
fn actual(server: &ApiServer) -> BTreeSet<String> {
    server
        .all()
        .into_iter()
        .filter(|o| {
            let mut parts = o.splitn(3, '/');
            let (plural, ns, name) =
                (parts.next().unwrap_or(""), parts.next().unwrap_or(""), parts.next().unwrap_or(""));
            ns.starts_with("soak-") || (plural == "namespaces" && name.starts_with("soak-"))
        })
        .collect()
}

fn apply(strata: &str, repo: &Path, config: &Path) -> Command {
    let mut c = Command::new(strata);
    c.args(["apply", "soak", "--repo"])
        .arg(repo)
        .arg("--config")
        .arg(config)
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    c
}

fn arg(args: &[String], name: &str, default: u64) -> u64 {
    args.iter().position(|a| a == name).and_then(|i| args.get(i + 1)).and_then(|n| n.parse().ok()).unwrap_or(default)
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let rounds = arg(&args, "--rounds", 40);
    let kills = arg(&args, "--kills", 3);
    let seed = arg(&args, "--seed", 1);
    let mut rng = fastrand::Rng::with_seed(seed);
    let strata = env!("CARGO_BIN_EXE_strata");
    let repo = tempfile::tempdir().unwrap();
    generate(repo.path());

    let server = ApiServer::start();
    // A little latency per request spreads an apply over enough time to be killed anywhere in it.
    server.set_latency(Duration::from_millis(2));
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = server.kubeconfig(dir.path());
    let config = dir.path().join("strata.yaml");
    std::fs::write(
        &config,
        format!("targets:\n  soak: {{ kubeconfig: {} }}\napply: {{ health_timeout: 10s }}\n", kubeconfig.display()),
    )
    .unwrap();

    // How long a full cold apply takes: kills land anywhere from before its first request to after its end.
    let started = Instant::now();
    let out = apply(strata, repo.path(), &config).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let full = started.elapsed();
    let objects = expected(&(0..LAYERS).map(|_| (0..APPS).collect()).collect()).len();
    println!("soak: {rounds} rounds × {kills} killed applies + 1 converging apply, seed {seed}");
    println!("full cold apply of {objects} objects: {:.0} ms", full.as_secs_f64() * 1e3);

    let (mut killed, mut killed_writing, mut finished, mut orphans, mut lost, mut removed) = (0, 0, 0, 0, 0, 0);
    let soak = Instant::now();
    for round in 0..rounds {
        for _ in 0..kills {
            set_desired(repo.path(), &random_desired(&mut rng));
            commit(repo.path());
            server.clear_requests();
            let mut child = apply(strata, repo.path(), &config).spawn().unwrap();
            std::thread::sleep(full.mul_f64(rng.f64()));
            if child.try_wait().unwrap().is_some() {
                finished += 1;
            } else {
                child.kill().unwrap();
                killed += 1;
                let writes = server.requests().iter().filter(|r| r.is_write()).count();
                if writes > 0 {
                    killed_writing += 1;
                }
            }
            child.wait().unwrap();
        }
        let desired = random_desired(&mut rng);
        set_desired(repo.path(), &desired);
        commit(repo.path());
        let before = actual(&server);
        let out = apply(strata, repo.path(), &config).output().unwrap();
        assert!(out.status.success(), "round {round}: {}", String::from_utf8_lossy(&out.stderr));
        let (want, have) = (expected(&desired), actual(&server));
        // Left by the killed applies and no longer wanted: the converging apply must prune them.
        removed += before.difference(&want).count();
        let round_orphans: Vec<&String> = have.difference(&want).collect();
        let round_lost: Vec<&String> = want.difference(&have).collect();
        if !round_orphans.is_empty() || !round_lost.is_empty() {
            println!("round {round}: orphans {round_orphans:?} lost {round_lost:?}");
        }
        orphans += round_orphans.len();
        lost += round_lost.len();
    }
    println!(
        "{killed} applies killed ({killed_writing} after their first write), {finished} finished before their kill; {removed} objects to prune after them"
    );
    println!(
        "after {rounds} converging applies: {orphans} orphans, {lost} lost objects ({:.0} s)",
        soak.elapsed().as_secs_f64()
    );
    assert_eq!((orphans, lost), (0, 0), "the soak found orphans or lost objects");
}
