//! Idle cost on Kubernetes targets: `strata run` with 1,000 clusters spread over a few API server
//! stand-ins (each cluster its own namespace with a ConfigMap, a Deployment and a Service), applied,
//! then left alone. Measures the daemon's CPU time per idle minute and the requests the servers
//! see meanwhile.
//!
//! Drift detection before watches was a full check of every object every `drift.interval` (5 min
//! by default, ±20 %). To see a whole round of those within a short run, the daemon runs with
//! `drift.interval: 60s`: with watches that interval is unused (the full check comes every
//! `drift.resync`, 1 h), without them the figure is five times what the 5-minute default costs.
//!
//! `cargo bench --bench idle` (`-- --clusters N --servers N --idle-seconds N`, `-- --strata PATH`
//! to measure another build of strata, e.g. the one before watches).

#[path = "../tests/apiserver/mod.rs"]
mod apiserver;
#[allow(dead_code)] // the tests use more of it
#[path = "../tests/common/proc.rs"]
mod proc;
mod support;

use std::fmt::Write as _;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use apiserver::ApiServer;
use proc::cpu_ticks;
use support::{applied_count, git, write};

fn arg<T: std::str::FromStr>(args: &[String], name: &str, default: T) -> T {
    args.iter().position(|a| a == name).and_then(|i| args.get(i + 1)).and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn generate(root: &Path, clusters: usize) {
    write(
        root,
        "profiles/idle/1.0.0/profile.yaml",
        "apiVersion: strata.dev/v1\nkind: Profile\nmetadata: { name: idle, version: 1.0.0 }\nspec:\n  layers:\n    - { name: app, type: manifests, source: packs/app }\n",
    );
    write(
        root,
        "packs/app/objects.yaml",
        "apiVersion: v1\nkind: Namespace\nmetadata: { name: '{{ cluster.name }}' }\n\
         ---\napiVersion: v1\nkind: ConfigMap\nmetadata: { name: app-config, namespace: '{{ cluster.name }}' }\ndata: { LEVEL: info }\n\
         ---\napiVersion: apps/v1\nkind: Deployment\nmetadata: { name: app, namespace: '{{ cluster.name }}' }\n\
         spec:\n  replicas: 1\n  selector: { matchLabels: { app: app } }\n  template:\n    metadata: { labels: { app: app } }\n    spec: { containers: [{ name: app, image: 'registry.example.com/app:1.0' }] }\n\
         ---\napiVersion: v1\nkind: Service\nmetadata: { name: app, namespace: '{{ cluster.name }}' }\nspec: { selector: { app: app }, ports: [{ port: 80 }] }\n",
    );
    for c in 0..clusters {
        write(
            root,
            &format!("clusters/c{c:04}.yaml"),
            &format!(
                "apiVersion: strata.dev/v1\nkind: Cluster\nmetadata: {{ name: c{c:04} }}\nspec:\n  profile: {{ name: idle, version: 1.0.0 }}\n"
            ),
        );
    }
    git(root, &["init", "-q", "-b", "main"]);
    git(root, &["add", "-A"]);
    git(root, &["commit", "-q", "-m", "fleet"]);
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let clusters: usize = arg(&args, "--clusters", 1000);
    let servers: usize = arg(&args, "--servers", 4);
    let idle: u64 = arg(&args, "--idle-seconds", 120);
    let strata: String = arg(&args, "--strata", env!("CARGO_BIN_EXE_strata").to_string());

    let dir = tempfile::tempdir().unwrap();
    let repo = dir.path().join("fleet");
    generate(&repo, clusters);
    let stand_ins: Vec<ApiServer> = (0..servers).map(|_| ApiServer::start()).collect();
    let kubeconfigs: Vec<_> = stand_ins
        .iter()
        .enumerate()
        .map(|(i, s)| {
            let d = dir.path().join(format!("kube{i}"));
            std::fs::create_dir_all(&d).unwrap();
            s.kubeconfig(&d)
        })
        .collect();
    let mut config = format!(
        "repository: {{ url: {}, branch: main, interval: 1h }}\nstate_dir: ./state\nlisten: 127.0.0.1:0\ndrift: {{ interval: 60s }}\napply: {{ clusters: 16, health_timeout: 30s }}\ntargets:\n",
        repo.display()
    );
    for c in 0..clusters {
        let _ = writeln!(config, "  c{c:04}: {{ kubeconfig: {} }}", kubeconfigs[c % servers].display());
    }
    std::fs::write(dir.path().join("strata.yaml"), config).unwrap();

    let started = Instant::now();
    let mut child = Command::new(&strata)
        .args(["run", "--config"])
        .arg(dir.path().join("strata.yaml"))
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let pid = child.id();
    let address = dir.path().join("state/listen-address");
    let deadline = Instant::now() + Duration::from_secs(900);
    loop {
        assert!(Instant::now() < deadline, "the fleet was not applied in time");
        std::thread::sleep(Duration::from_millis(200));
        let Ok(address) = std::fs::read_to_string(&address) else { continue };
        if applied_count(address.trim()) == clusters {
            break;
        }
    }
    let applied = started.elapsed();
    // Settled: the watches (if any) open, no request for 5 s but watches and their bookmarks.
    let mut quiet_since = Instant::now();
    let mut last = 0;
    while quiet_since.elapsed() < Duration::from_secs(5) && started.elapsed() < Duration::from_secs(1200) {
        std::thread::sleep(Duration::from_millis(500));
        let seen: usize = stand_ins.iter().map(|s| s.requests().iter().filter(|r| !r.watch).count()).sum();
        if seen != last {
            last = seen;
            quiet_since = Instant::now();
        }
    }
    let watches: usize = stand_ins.iter().map(ApiServer::watch_count).sum();
    for s in &stand_ins {
        s.clear_requests();
    }
    let before = cpu_ticks(pid);
    std::thread::sleep(Duration::from_secs(idle));
    let ticks = cpu_ticks(pid) - before;
    let requests: usize = stand_ins.iter().map(|s| s.requests().len()).sum();
    let _ = Command::new("kill").args(["-TERM", &pid.to_string()]).status();
    let _ = child.wait();

    let per_minute = |x: f64| x * 60.0 / idle as f64;
    println!("{clusters} clusters on {servers} API server stand-ins, 4 objects each; drift.interval 60s");
    println!("cold start to whole fleet applied: {:.1}s; open watches: {watches}", applied.as_secs_f64());
    println!(
        "idle over {idle}s: CPU {:.2}s per minute, {:.0} requests per minute",
        per_minute(ticks as f64 / 100.0),
        per_minute(requests as f64)
    );
}
