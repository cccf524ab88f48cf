//! Daemon benchmark: `strata run` on a generated local repository (benches/support/fleet.rs;
//! default the `overridden` shape — every cluster overrides two layers — at 1,000 clusters), every
//! cluster on a directory target.
//!
//! Measures, on the real binary:
//! - cold start (empty state) to ready, and to the whole fleet applied;
//! - commit-to-applied latency: from `git commit` returning to the cluster's file changing on
//!   disk, for a commit that changes one cluster's overrides (five commits);
//! - the daemon's resident memory once the fleet is applied (1 s after, and 15 s after: the work
//!   over and freed memory given back), its peak, and its template workers';
//! - CPU time per idle minute (no commits; drift checks at their default interval);
//! - a restart with the state in place (nothing changed in Git): start to ready, memory 2 s and
//!   30 s after (every cluster's first drift check falls due at start);
//! - the fleet page (`/`: since issue 20 the overview and the first 50 clusters; `benches/view.rs`
//!   measures it in detail).
//!
//! `cargo bench --bench daemon` (`-- --clusters N`, `--shape overridden|shared|light`,
//! `--idle-seconds N` to shorten the idle measurement, `--on-disk` to work under the temporary
//! directory instead of /dev/shm, `--binary PATH` to measure another build of strata on the same
//! fleet, side by side).

#[allow(dead_code)] // the tests use more of it
#[path = "../tests/common/proc.rs"]
mod proc;
mod support;

use proc::{cpu_ticks, proc_status};
use support::fleet::{self, Shape};
use support::{applied_count, git};

use std::fmt::Write as _;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// GETs a page, returns its size.
fn get(address: &str, path: &str) -> usize {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(address).unwrap();
    let _ = write!(stream, "GET {path} HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n\r\n");
    let mut response = Vec::new();
    let _ = stream.read_to_end(&mut response);
    response.len()
}

/// GETs a page, returns its body.
fn body(address: &str, path: &str) -> String {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(address).unwrap();
    let _ = write!(stream, "GET {path} HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n\r\n");
    let mut response = String::new();
    let _ = stream.read_to_string(&mut response);
    response.split_once("\r\n\r\n").map(|(_, body)| body.to_string()).unwrap_or_default()
}

fn start(binary: &str, dir: &Path) -> Child {
    Command::new(binary)
        .args(["run", "--config"])
        .arg(dir.join("strata.yaml"))
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap()
}

/// Waits until the daemon answers `/readyz` with 200; returns its address.
fn wait_ready(dir: &Path, deadline: Instant) -> String {
    use std::io::{Read, Write};
    loop {
        assert!(Instant::now() < deadline, "the daemon did not get ready in time");
        if let Ok(address) = std::fs::read_to_string(dir.join("state/listen-address"))
            && let Ok(mut stream) = std::net::TcpStream::connect(address.trim())
        {
            let host = address.trim();
            let _ = write!(stream, "GET /readyz HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
            let mut response = String::new();
            let _ = stream.read_to_string(&mut response);
            if response.starts_with("HTTP/1.1 200") {
                return host.to_string();
            }
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The resident memory of `pid`'s children (the template workers), in KiB: each thread lists the
/// children it started.
fn children_rss(pid: u32) -> u64 {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else { return 0 };
    tasks
        .flatten()
        .filter_map(|task| std::fs::read_to_string(task.path().join("children")).ok())
        .flat_map(|children| children.split_whitespace().filter_map(|c| c.parse().ok()).collect::<Vec<u32>>())
        .map(|c| proc_status(c, "VmRSS:"))
        .sum()
}

fn stop(mut child: Child) {
    let _ = Command::new("kill").args(["-TERM", &child.id().to_string()]).status();
    let _ = child.wait();
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let arg = |flag: &str| args.iter().position(|a| a == flag).and_then(|i| args.get(i + 1)).cloned();
    let idle: u64 = arg("--idle-seconds").and_then(|n| n.parse().ok()).unwrap_or(60);
    let clusters: usize = arg("--clusters").and_then(|n| n.parse().ok()).unwrap_or(1000);
    let shape =
        arg("--shape").map(|s| Shape::parse(&s).expect("--shape overridden|shared|light")).unwrap_or(Shape::Overridden);
    // Another build of strata, to measure it side by side with this one on the same fleet.
    let binary = arg("--binary").unwrap_or_else(|| env!("CARGO_BIN_EXE_strata").to_string());
    // On tmpfs when there is one: 40,000 files created at once measure the disk's inode allocator
    // more than strata (on this machine's ext4 that alone took most of a 30-second cold start).
    let base = if Path::new("/dev/shm").is_dir() && !args.iter().any(|a| a == "--on-disk") {
        std::path::PathBuf::from("/dev/shm")
    } else {
        std::env::temp_dir()
    };
    let dir = tempfile::tempdir_in(base).unwrap();
    let repo = dir.path().join("fleet");
    fleet::generate(&repo, shape, clusters);
    let mut config = format!(
        "repository: {{ url: {}, branch: main, interval: 60s }}\nstate_dir: ./state\nlisten: 127.0.0.1:0\ntargets:\n",
        repo.display()
    );
    for c in 0..clusters {
        let name = fleet::cluster_name(c);
        let _ = writeln!(config, "  {name}: {{ directory: ./out/{name} }}");
    }
    std::fs::write(dir.path().join("strata.yaml"), config).unwrap();

    let started = Instant::now();
    let child = start(&binary, dir.path());
    let pid = child.id();
    let deadline = Instant::now() + Duration::from_secs(1800);
    let address = wait_ready(dir.path(), deadline);
    let ready = started.elapsed();
    // Applied when the daemon's API says every cluster is.
    // Each look lists the whole fleet: at 100,000 clusters, not ten times a second.
    while applied_count(&address) < clusters {
        assert!(Instant::now() < deadline, "the fleet was not applied in time");
        std::thread::sleep(Duration::from_millis((clusters as u64 / 20).max(100)));
    }
    let applied = started.elapsed();
    std::thread::sleep(Duration::from_secs(1));
    let rss = proc_status(pid, "VmRSS:");
    // Once the work of the apply is over and freed memory was given back (every 10 s).
    std::thread::sleep(Duration::from_secs(14));
    let settled = proc_status(pid, "VmRSS:");
    let helpers = children_rss(pid);

    // The fleet page, over loopback (median of 20).
    let mut page_times = Vec::new();
    let mut page_bytes = 0;
    for _ in 0..20 {
        let t = Instant::now();
        page_bytes = get(&address, "/");
        page_times.push(t.elapsed());
    }
    page_times.sort();

    // Commit to applied, five times: one cluster's overrides change each time. In the overridden
    // fleet cluster 7 overrides replicas in layer l1; in the shared one cluster 3 overrides them
    // (plus two) in layer l0 (see the generator).
    let (c, layer, shown) = match shape {
        Shape::Overridden => (7, 1, 0),
        Shape::Shared => (3, 0, 2),
        Shape::Light => (7, 0, 0),
    };
    let name = fleet::cluster_name(c);
    let object = if shape == Shape::Light { "deployment.app".to_string() } else { format!("deployment.app{layer}0") };
    let target = dir.path().join(format!("out/{name}/p{:02}-l{layer}/{object}.yaml", c % shape.profiles()));
    let mut latencies = Vec::new();
    for i in 0..5 {
        let replicas = 3 + i;
        let want = format!("replicas: {}", replicas + shown);
        fleet::override_one(&repo, shape, c, replicas);
        // `override_one` returns once `git commit` has: measure from there.
        let committed = Instant::now();
        while !std::fs::read_to_string(&target).unwrap_or_default().contains(&want) {
            assert!(committed.elapsed() < Duration::from_secs(60), "commit not applied: {}", target.display());
            std::thread::sleep(Duration::from_millis(2));
        }
        latencies.push(committed.elapsed());
        std::thread::sleep(Duration::from_millis(300));
    }
    latencies.sort();
    // How long the daemon took to evaluate each of those commits, by its own account.
    let mut evaluations: Vec<u64> = serde_json::from_str::<serde_json::Value>(&body(&address, "/api/v1/revision"))
        .ok()
        .and_then(|v| v["evaluations"].as_array().cloned())
        .unwrap_or_default()
        .iter()
        .take(5)
        .filter_map(|e| e["millis"].as_u64())
        .collect();
    evaluations.sort();

    // Idle: no commits.
    let before = cpu_ticks(pid);
    std::thread::sleep(Duration::from_secs(idle));
    let ticks = cpu_ticks(pid) - before;
    let cpu_per_minute = Duration::from_millis(ticks * 10).mul_f64(60.0 / idle as f64);
    let peak = proc_status(pid, "VmHWM:");
    stop(child);

    // A restart with the state in place and nothing new in Git.
    let restarted = Instant::now();
    let child = start(&binary, dir.path());
    wait_ready(dir.path(), Instant::now() + Duration::from_secs(600));
    let restart = restarted.elapsed();
    std::thread::sleep(Duration::from_secs(2));
    let restart_rss = proc_status(child.id(), "VmRSS:");
    // After the first drift check of every cluster (due at start), settled.
    std::thread::sleep(Duration::from_secs(28));
    let restart_settled = proc_status(child.id(), "VmRSS:");
    stop(child);
    git(&repo, &["log", "-1", "--format=%h"]);

    println!(
        "{clusters} clusters ({} fleet) on directory targets, {} objects",
        shape.name(),
        clusters * shape.objects()
    );
    println!("cold start to ready: {:.2}s; to whole fleet applied: {:.1}s", ready.as_secs_f64(), applied.as_secs_f64());
    println!(
        "commit to applied (5 commits, one cluster's overrides): median {:.0}ms, max {:.0}ms",
        latencies[2].as_secs_f64() * 1e3,
        latencies[4].as_secs_f64() * 1e3
    );
    if let (Some(median), Some(max)) = (evaluations.get(evaluations.len() / 2), evaluations.last()) {
        println!("evaluation of those commits (the daemon's own timing): median {median}ms, max {max}ms");
    }
    println!(
        "RSS with the fleet applied: {:.1} MiB after 1 s, {:.1} MiB after 15 s (peak {:.1} MiB); template workers {:.1} MiB",
        rss as f64 / 1024.0,
        settled as f64 / 1024.0,
        peak as f64 / 1024.0,
        helpers as f64 / 1024.0
    );
    println!("CPU per idle minute: {:.2}s (measured over {idle}s)", cpu_per_minute.as_secs_f64());
    println!(
        "restart with state in place: ready in {:.2}s, RSS {:.1} MiB after 2 s, {:.1} MiB after 30 s",
        restart.as_secs_f64(),
        restart_rss as f64 / 1024.0,
        restart_settled as f64 / 1024.0
    );
    println!(
        "fleet page (`/`) with {clusters} clusters: median {:.1}ms, max {:.1}ms ({} KiB)",
        page_times[10].as_secs_f64() * 1e3,
        page_times[19].as_secs_f64() * 1e3,
        page_bytes / 1024
    );
}
