//! Kubernetes-mode benchmark: 10,000 clusters on directory targets shared by 4 `strata run`
//! replicas over 8 shards, their state, Leases and membership in one management cluster (the API
//! server stand-in of `tests/`, in this process, over HTTP on 127.0.0.1).
//!
//! Measures, on the real binary:
//! - cold start: from the replicas starting to every cluster's ClusterState saying applied;
//! - a commit that changes every cluster: from `git commit` to every ClusterState applied at it;
//! - each replica's resident memory (and peak), and how many clusters it reconciles;
//! - Lease traffic per minute with the fleet applied (requests to `leases`, by all replicas).
//!
//! `cargo bench --bench kube` (`-- --clusters N`, `-- --idle-seconds N` to shorten it).

#[path = "../tests/apiserver/mod.rs"]
mod apiserver;
#[allow(dead_code)]
#[path = "../tests/common/kubernetes.rs"]
mod kubernetes;
#[allow(dead_code)]
#[path = "../tests/common/proc.rs"]
mod proc;
mod support;

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use apiserver::ApiServer;
use support::{git, write};

const REPLICAS: usize = 4;
const SHARDS: usize = 8;

fn arg(args: &[String], name: &str, default: u64) -> u64 {
    args.iter().position(|a| a == name).and_then(|i| args.get(i + 1)).and_then(|n| n.parse().ok()).unwrap_or(default)
}

/// One profile of one layer (a Namespace-less ConfigMap per cluster), `clusters` clusters.
fn generate(root: &Path, clusters: usize) {
    write(
        root,
        "profiles/app/1.0.0/profile.yaml",
        "apiVersion: strata.dev/v1\nkind: Profile\nmetadata: { name: app, version: 1.0.0 }\nspec:\n  layers:\n    - { name: config, type: manifests, source: packs/config, namespace: app, values: { greeting: hello } }\n",
    );
    write(
        root,
        "packs/config/objects.yaml",
        "apiVersion: v1\nkind: ConfigMap\nmetadata: { name: \"settings\" }\ndata: { greeting: \"{{ values.greeting }}\", cluster: \"{{ cluster.name }}\" }\n",
    );
    for c in 0..clusters {
        write(
            root,
            &format!("clusters/c{c:05}.yaml"),
            &format!(
                "apiVersion: strata.dev/v1\nkind: Cluster\nmetadata: {{ name: c{c:05} }}\nspec:\n  profile: {{ name: app, version: 1.0.0 }}\n"
            ),
        );
    }
    git(root, &["init", "-q", "-b", "main"]);
    git(root, &["add", "-A"]);
    git(root, &["commit", "-q", "-m", "fleet"]);
}

/// How many ClusterStates say applied at `revision`.
fn applied_at(mgmt: &ApiServer, names: &[String], revision: &str) -> usize {
    names
        .iter()
        .filter(|name| {
            mgmt.object("clusterstates", Some(kubernetes::NAMESPACE), name)
                .is_some_and(|s| s["status"]["clusterRevision"] == revision && s["status"]["sync"] == "applied")
        })
        .count()
}

fn wait_applied(mgmt: &ApiServer, names: &[String], revision: &str, children: &mut [Child]) -> Duration {
    let started = Instant::now();
    loop {
        assert!(started.elapsed() < Duration::from_secs(1800), "the fleet was not applied in time");
        for child in children.iter_mut() {
            assert!(child.try_wait().unwrap().is_none(), "a replica exited");
        }
        if applied_at(mgmt, names, revision) == names.len() {
            return started.elapsed();
        }
        // Not too often: each look holds the server's lock for a moment.
        std::thread::sleep(Duration::from_secs(1));
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let clusters = arg(&args, "--clusters", 10_000) as usize;
    let idle = arg(&args, "--idle-seconds", 60);
    let base = if Path::new("/dev/shm").is_dir() { PathBuf::from("/dev/shm") } else { std::env::temp_dir() };
    let dir = tempfile::tempdir_in(base).unwrap();
    let repo = dir.path().join("fleet");
    generate(&repo, clusters);
    let names: Vec<String> = (0..clusters).map(|c| format!("c{c:05}")).collect();

    let mgmt = ApiServer::start();
    let kubeconfig = mgmt.kubeconfig(dir.path());
    kubernetes::install(&kubeconfig);

    let mut children = Vec::new();
    let mut pids = Vec::new();
    let started = Instant::now();
    for r in 0..REPLICAS {
        let home = dir.path().join(format!("replica-{r}"));
        std::fs::create_dir_all(&home).unwrap();
        let mut config = format!(
            "repository: {{ url: {}, branch: main, interval: 60s }}\nstate_dir: ./state\nlisten: 127.0.0.1:0\n\
             kubernetes: {{ kubeconfig: {}, namespace: {} }}\nstate: {{ backend: kubernetes }}\nshards: {SHARDS}\n\
             drift: {{ interval: 1h }}\ntargets:\n",
            repo.display(),
            kubeconfig.display(),
            kubernetes::NAMESPACE
        );
        for name in &names {
            let _ = writeln!(config, "  {name}: {{ directory: ./out/{name} }}");
        }
        std::fs::write(home.join("strata.yaml"), config).unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_strata"))
            .args(["run", "--config"])
            .arg(home.join("strata.yaml"))
            .env("RUST_LOG", "warn")
            .env("POD_NAME", format!("replica-{r}"))
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(home.join("log")).unwrap())
            .spawn()
            .unwrap();
        pids.push(child.id());
        children.push(child);
    }
    let head = git(&repo, &["rev-parse", "HEAD"]);
    wait_applied(&mgmt, &names, &head, &mut children);
    let cold = started.elapsed();

    // Every cluster's ConfigMap changes.
    let profile = repo.join("profiles/app/1.0.0/profile.yaml");
    let text = std::fs::read_to_string(&profile).unwrap().replace("greeting: hello", "greeting: hi");
    std::fs::write(&profile, text).unwrap();
    git(&repo, &["commit", "-q", "-am", "hi"]);
    let head = git(&repo, &["rev-parse", "HEAD"]);
    let commit = wait_applied(&mgmt, &names, &head, &mut children);
    std::thread::sleep(Duration::from_secs(2));
    let rss: Vec<u64> = pids.iter().map(|&p| proc::proc_status(p, "VmRSS:")).collect();
    let peak: Vec<u64> = pids.iter().map(|&p| proc::proc_status(p, "VmHWM:")).collect();

    // Who reconciled what: the out directories of each replica that hold the new greeting.
    let mut owned = [0usize; REPLICAS];
    let mut doubled = 0;
    for name in &names {
        let holders: Vec<usize> = (0..REPLICAS)
            .filter(|r| {
                let file = dir.path().join(format!("replica-{r}/out/{name}/app/configmap.settings.yaml"));
                std::fs::read_to_string(file).unwrap_or_default().contains("greeting: hi")
            })
            .collect();
        if let [one] = holders.as_slice() {
            owned[*one] += 1;
        } else {
            doubled += 1;
        }
    }

    // Lease traffic with the fleet applied.
    mgmt.clear_requests();
    std::thread::sleep(Duration::from_secs(idle));
    let requests = mgmt.requests();
    let leases = requests.iter().filter(|r| r.path.contains("/leases")).count();
    let per_minute = |n: usize| n as f64 * 60.0 / idle as f64;

    for pid in &pids {
        let _ = Command::new("kill").args(["-TERM", &pid.to_string()]).status();
    }
    for child in &mut children {
        let _ = child.wait();
    }

    println!("{clusters} clusters on directory targets, {REPLICAS} replicas, {SHARDS} shards (Leases 15s/10s/2s)");
    println!("cold start to every cluster applied: {:.1}s", cold.as_secs_f64());
    println!("commit touching every cluster to all applied: {:.1}s", commit.as_secs_f64());
    for r in 0..REPLICAS {
        println!(
            "replica {r}: {} clusters applied the commit, RSS {:.1} MiB (peak {:.1} MiB)",
            owned[r],
            rss[r] as f64 / 1024.0,
            peak[r] as f64 / 1024.0
        );
    }
    println!("clusters whose commit was applied by more or fewer than one replica: {doubled}");
    println!(
        "requests to the management cluster per idle minute: {:.0} for Leases, {:.0} in all (over {idle}s)",
        per_minute(leases),
        per_minute(requests.len())
    );
}
