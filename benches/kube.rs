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
//! `cargo bench --bench kube` (`-- --clusters N`, `--replicas N` (4), `--shards N` (8),
//! `--idle-seconds N` to shorten it, `--binary PATH` to measure another build of strata).
//!
//! `cargo bench --bench kube -- --rollout N`: instead, rollout progress over N clusters kept by
//! the Kubernetes backend's store calls (two handles, as two replicas): the first save, a
//! save of one cluster's result, a read through the other handle, and what the management
//! cluster holds (no single object grows with the fleet).

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

/// Rollout progress over `clusters` clusters through the store's calls; see the module comment.
fn rollout_store(clusters: usize) {
    use std::sync::Arc;
    use strata::daemon::store::Store as _;
    use strata::daemon::store::kube::KubeStore;
    use strata::rollout::gate::{ClusterRun, Progress};

    let dir = tempfile::tempdir().unwrap();
    let mgmt = ApiServer::start();
    let kubeconfig = mgmt.kubeconfig(dir.path());
    kubernetes::install(&kubeconfig);
    let runtime = kubernetes::runtime();
    let open = || {
        let config = strata::config::KubernetesConfig {
            connection: strata::config::TargetConfig::Kubeconfig { path: kubeconfig.clone(), context: None },
            namespace: Some(kubernetes::NAMESPACE.into()),
            cluster_secrets: false,
        };
        let network = Arc::new(strata::net::Network::new(None).unwrap());
        let management = strata::daemon::management::Management::connect(&config, &network, "strata.yaml").unwrap();
        runtime.block_on(KubeStore::open(management, Arc::new(|_| true), Arc::new(|_| true)))
    };
    let (one, two) = (open(), open());
    let mut progress: Progress = serde_json::from_value(serde_json::json!({
        "rollout": "fleet", "revision": "r1", "started_at": 1_000, "state": "progressing",
        "waves": [], "clusters": {}, "next": "wave 1",
    }))
    .unwrap();
    for i in 0..clusters {
        let cluster = serde_json::json!({
            "wave": "rest", "cause": "in-place-edit", "to": "edge@1.1.0",
            "target": format!("sha256:{i:064x}"), "state": "waiting",
            "before": {"profile_revision": format!("{i:040x}"), "cluster_revision": format!("{i:040x}"),
                       "digest": format!("sha256:{:064x}", i + 1), "what": "edge@1.0.0"},
        });
        progress.clusters.insert(format!("c{i:06}"), serde_json::from_value(cluster).unwrap());
    }
    let bytes = serde_json::to_string(&progress.clusters).unwrap().len();

    let started = Instant::now();
    assert!(runtime.block_on(one.save_rollout(&progress)).unwrap(), "the first save");
    let first = started.elapsed();
    let started = Instant::now();
    let read = loop {
        if let Some(read) = runtime.block_on(two.rollout("fleet")).unwrap().filter(|p| p.generation == 1) {
            break read;
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    let cold_read = started.elapsed();
    assert_eq!(read.clusters, progress.clusters, "read back whole");

    // Results of single clusters, one save each, as workers record them.
    const RESULTS: usize = 20;
    let mut saves = Vec::new();
    mgmt.clear_requests();
    for n in 0..RESULTS {
        let mut next = runtime.block_on(one.rollout("fleet")).unwrap().unwrap();
        let entry = next.clusters.get_mut(&format!("c{:06}", n * 37 % clusters)).unwrap();
        entry.state = ClusterRun::Updated;
        entry.finished_at = Some(2_000 + n as i64);
        let started = Instant::now();
        assert!(runtime.block_on(one.save_rollout(&next)).unwrap());
        saves.push(started.elapsed());
    }
    let requests = mgmt.requests().iter().filter(|r| !r.watch && r.method != "GET").count() as f64 / RESULTS as f64;
    saves.sort();
    let started = Instant::now();
    let seen = loop {
        let p = runtime.block_on(two.rollout("fleet")).unwrap().unwrap();
        if p.generation == 1 + RESULTS as u64 {
            break p;
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    let warm_read = started.elapsed();
    assert_eq!(seen.count(ClusterRun::Updated), RESULTS);

    let maps = kubernetes::configmaps(&kubeconfig);
    let size = |m: &serde_json::Value| {
        m["data"].as_object().map_or(0, |d| d.iter().map(|(k, v)| k.len() + v.as_str().map_or(0, str::len)).sum())
    };
    let chunks: Vec<usize> =
        maps.iter().filter(|(name, _)| name.starts_with("strata-progress-")).map(|(_, m)| size(m)).collect();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    println!(
        "rollout progress over {clusters} clusters ({:.1} MiB of JSON), Kubernetes backend",
        bytes as f64 / 1048576.0
    );
    println!("first save: {:.0} ms; read whole through another handle: {:.0} ms", ms(first), ms(cold_read));
    println!(
        "one cluster's result saved: median {:.1} ms, max {:.1} ms, {requests:.1} writes each; seen by the other handle {:.0} ms after the last",
        ms(saves[RESULTS / 2]),
        ms(saves[RESULTS - 1]),
        ms(warm_read)
    );
    println!(
        "kept: strata-state {:.1} KiB, {} chunks of {:.1} KiB at most (a ConfigMap holds 1024 KiB)",
        size(&maps["strata-state"]) as f64 / 1024.0,
        chunks.len(),
        chunks.iter().max().copied().unwrap_or(0) as f64 / 1024.0
    );
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.iter().any(|a| a == "--rollout") {
        return rollout_store(arg(&args, "--rollout", 100_000) as usize);
    }
    let clusters = arg(&args, "--clusters", 10_000) as usize;
    let idle = arg(&args, "--idle-seconds", 60);
    let replicas = arg(&args, "--replicas", 4) as usize;
    let shards = arg(&args, "--shards", 8);
    let binary = args
        .iter()
        .position(|a| a == "--binary")
        .and_then(|i| args.get(i + 1).cloned())
        .unwrap_or_else(|| env!("CARGO_BIN_EXE_strata").to_string());
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
    for r in 0..replicas {
        let home = dir.path().join(format!("replica-{r}"));
        std::fs::create_dir_all(&home).unwrap();
        let mut config = format!(
            "repository: {{ url: {}, branch: main, interval: 60s }}\nstate_dir: ./state\nlisten: 127.0.0.1:0\n\
             kubernetes: {{ kubeconfig: {}, namespace: {} }}\nstate: {{ backend: kubernetes }}\nshards: {shards}\n\
             drift: {{ interval: 1h }}\ntargets:\n",
            repo.display(),
            kubeconfig.display(),
            kubernetes::NAMESPACE
        );
        for name in &names {
            let _ = writeln!(config, "  {name}: {{ directory: ./out/{name} }}");
        }
        std::fs::write(home.join("strata.yaml"), config).unwrap();
        let child = Command::new(&binary)
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
    let mut owned = vec![0usize; replicas];
    let mut doubled = 0;
    for name in &names {
        let holders: Vec<usize> = (0..replicas)
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

    println!("{clusters} clusters on directory targets, {replicas} replicas, {shards} shards (Leases 15s/10s/2s)");
    println!("cold start to every cluster applied: {:.1}s", cold.as_secs_f64());
    println!("commit touching every cluster to all applied: {:.1}s", commit.as_secs_f64());
    for r in 0..replicas {
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
