//! Daemon benchmark: `strata run` on a generated local repository of 1,000 clusters (20 profiles ×
//! 5 versions, 40 objects per version), every cluster on a directory target.
//!
//! Measures, on the real binary:
//! - the time to apply the whole fleet from a cold start;
//! - commit-to-applied latency: from `git commit` returning to the cluster's file changing on
//!   disk (an upper bound on commit-to-apply-start), for a commit that changes one cluster;
//! - the daemon's resident memory once the fleet is applied, and its peak;
//! - CPU time per idle minute (no commits; drift checks at their default 5-minute interval).
//!
//! `cargo bench --bench daemon` (`-- --idle-seconds N` to shorten the idle measurement,
//! `-- --on-disk` to work under the temporary directory instead of /dev/shm).

#[allow(dead_code)] // the tests use more of it
#[path = "../tests/common/proc.rs"]
mod proc;
mod support;

use proc::{cpu_ticks, proc_status};

use support::{git, write};

use std::fmt::Write as _;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const PROFILES: usize = 20;
const VERSIONS: usize = 5;
const CLUSTERS: usize = 1000;

fn generate(root: &Path) {
    for p in 0..PROFILES {
        for v in 0..VERSIONS {
            let mut profile = format!(
                "apiVersion: strata.dev/v1\nkind: Profile\nmetadata: {{ name: p{p:02}, version: 1.{v}.0 }}\nspec:\n  layers:\n"
            );
            for l in 0..4 {
                let _ = writeln!(
                    profile,
                    "    - {{ name: l{l}, type: manifests, source: packs/p{p:02}/l{l}, namespace: p{p:02}-l{l}, values: {{ replicas: 1, image: \"registry.example.com/p{p:02}:1.{v}\" }} }}"
                );
            }
            write(root, &format!("profiles/p{p:02}/1.{v}.0/profile.yaml"), &profile);
        }
        for l in 0..4 {
            let mut text = "apiVersion: v1\nkind: Namespace\nmetadata: { name: '{{ layer.namespace }}' }\n".to_string();
            for a in 0..3 {
                let _ = write!(
                    text,
                    "---\napiVersion: v1\nkind: ConfigMap\nmetadata: {{ name: app{a}-config }}\ndata: {{ LEVEL: info }}\n\
                     ---\napiVersion: apps/v1\nkind: Deployment\nmetadata: {{ name: app{a} }}\nspec:\n  replicas: {{{{ values.replicas }}}}\n  selector: {{ matchLabels: {{ app: app{a} }} }}\n  template:\n    metadata: {{ labels: {{ app: app{a} }} }}\n    spec: {{ containers: [{{ name: app, image: '{{{{ values.image }}}}' }}] }}\n\
                     ---\napiVersion: v1\nkind: Service\nmetadata: {{ name: app{a} }}\nspec: {{ selector: {{ app: app{a} }}, ports: [{{ port: 80 }}] }}\n"
                );
            }
            write(root, &format!("packs/p{p:02}/l{l}/objects.yaml"), &text);
        }
    }
    for c in 0..CLUSTERS {
        let (p, v) = (c % PROFILES, (c / PROFILES) % VERSIONS);
        write(
            root,
            &format!("clusters/c{c:04}.yaml"),
            &format!(
                "apiVersion: strata.dev/v1\nkind: Cluster\nmetadata: {{ name: c{c:04} }}\nspec:\n  profile: {{ name: p{p:02}, version: 1.{v}.0 }}\n"
            ),
        );
    }
    git(root, &["init", "-q", "-b", "main"]);
    git(root, &["add", "-A"]);
    git(root, &["commit", "-q", "-m", "fleet"]);
}

/// GETs a page, returns its size.
fn get(address: &str, path: &str) -> usize {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(address).unwrap();
    let _ = write!(stream, "GET {path} HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n\r\n");
    let mut response = Vec::new();
    let _ = stream.read_to_end(&mut response);
    response.len()
}

/// Clusters the daemon reports applied (GET /api/v1/clusters over plain HTTP).
fn applied_count(address: &str) -> usize {
    use std::io::{Read, Write};
    let Ok(mut stream) = std::net::TcpStream::connect(address) else { return 0 };
    let _ = write!(stream, "GET /api/v1/clusters HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n\r\n");
    let mut response = String::new();
    let _ = stream.read_to_string(&mut response);
    response.matches("\"sync\": \"applied\"").count()
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let idle: u64 = args
        .iter()
        .position(|a| a == "--idle-seconds")
        .and_then(|i| args.get(i + 1))
        .and_then(|n| n.parse().ok())
        .unwrap_or(60);
    // On tmpfs when there is one: 40,000 files created at once measure the disk's inode allocator
    // more than strata (on this machine's ext4 that alone took most of a 30-second cold start).
    let base = if Path::new("/dev/shm").is_dir() && !args.iter().any(|a| a == "--on-disk") {
        std::path::PathBuf::from("/dev/shm")
    } else {
        std::env::temp_dir()
    };
    let dir = tempfile::tempdir_in(base).unwrap();
    let repo = dir.path().join("fleet");
    generate(&repo);
    let mut config = format!(
        "repository: {{ url: {}, branch: main, interval: 60s }}\nstate_dir: ./state\nlisten: 127.0.0.1:0\ntargets:\n",
        repo.display()
    );
    for c in 0..CLUSTERS {
        let _ = writeln!(config, "  c{c:04}: {{ directory: ./out/c{c:04} }}");
    }
    std::fs::write(dir.path().join("strata.yaml"), config).unwrap();

    let started = Instant::now();
    let mut child = Command::new(env!("CARGO_BIN_EXE_strata"))
        .args(["run", "--config"])
        .arg(dir.path().join("strata.yaml"))
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let pid = child.id();
    // Applied when the daemon's API says every cluster is.
    let address = dir.path().join("state/listen-address");
    let deadline = Instant::now() + Duration::from_secs(600);
    loop {
        assert!(Instant::now() < deadline, "the fleet was not applied in time");
        std::thread::sleep(Duration::from_millis(100));
        let Ok(address) = std::fs::read_to_string(&address) else { continue };
        if applied_count(address.trim()) == CLUSTERS {
            break;
        }
    }
    let applied = started.elapsed();
    std::thread::sleep(Duration::from_secs(1));
    let rss = proc_status(pid, "VmRSS:");

    // The fleet page with every cluster on it, over loopback (median of 20).
    let address = std::fs::read_to_string(dir.path().join("state/listen-address")).unwrap();
    let mut page_times = Vec::new();
    let mut page_bytes = 0;
    for _ in 0..20 {
        let t = Instant::now();
        page_bytes = get(address.trim(), "/");
        page_times.push(t.elapsed());
    }
    page_times.sort();

    // Commit to applied, five times: one cluster's override changes each time.
    let mut latencies = Vec::new();
    for i in 0..5 {
        let file = repo.join("clusters/c0007.yaml");
        let text = std::fs::read_to_string(&file).unwrap();
        let text = match text.split_once("  overrides:") {
            Some((head, _)) => head.to_string(),
            None => text,
        };
        std::fs::write(&file, format!("{text}  overrides:\n    l0: {{ replicas: {} }}\n", i + 2)).unwrap();
        let target = dir.path().join("out/c0007/p07-l0/deployment.app0.yaml");
        let want = format!("replicas: {}", i + 2);
        git(&repo, &["commit", "-q", "-am", "override"]);
        let committed = Instant::now();
        while !std::fs::read_to_string(&target).unwrap_or_default().contains(&want) {
            assert!(committed.elapsed() < Duration::from_secs(30), "commit not applied");
            std::thread::sleep(Duration::from_millis(2));
        }
        latencies.push(committed.elapsed());
        std::thread::sleep(Duration::from_millis(300));
    }
    latencies.sort();

    // Idle: no commits.
    let before = cpu_ticks(pid);
    std::thread::sleep(Duration::from_secs(idle));
    let ticks = cpu_ticks(pid) - before;
    let cpu_per_minute = Duration::from_millis(ticks * 10).mul_f64(60.0 / idle as f64);
    let peak = proc_status(pid, "VmHWM:");
    let _ = Command::new("kill").args(["-TERM", &pid.to_string()]).status();
    let _ = child.wait();

    println!("{CLUSTERS} clusters on directory targets, {} objects", CLUSTERS * 40);
    println!("cold start to whole fleet applied: {:.1}s", applied.as_secs_f64());
    println!(
        "commit to applied (5 commits): median {:.0}ms, max {:.0}ms",
        latencies[2].as_secs_f64() * 1e3,
        latencies[4].as_secs_f64() * 1e3
    );
    println!("RSS with the fleet applied: {:.1} MiB (peak {:.1} MiB)", rss as f64 / 1024.0, peak as f64 / 1024.0);
    println!("CPU per idle minute: {:.2}s (measured over {idle}s)", cpu_per_minute.as_secs_f64());
    println!(
        "fleet page with {CLUSTERS} clusters: median {:.1}ms, max {:.1}ms ({} KiB)",
        page_times[10].as_secs_f64() * 1e3,
        page_times[19].as_secs_f64() * 1e3,
        page_bytes / 1024
    );
}
