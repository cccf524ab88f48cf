//! Fleet benchmark: the `strata` binary on generated fleets (benches/support/fleet.rs), in both
//! shapes — `overridden` (every cluster overrides two layers, as real fleets do) and `shared`
//! (most clusters share their renders) — at several sizes.
//!
//! Each measurement is a fresh `strata` process; the table shows the median wall time of
//! `--iterations` runs, the CPU time of that run (user + system: above the wall time means more
//! than one core was busy) and the process's peak RSS (from `wait4`'s rusage):
//! - `validate`: `strata validate`, which loads the repository and renders every cluster;
//! - `plan`: `strata plan --format json` between the fleet commit and an in-place edit of one
//!   profile version (the shape says how many clusters that touches).
//!
//! `cargo bench --bench fleet` runs both shapes at 1,000 and 3,000 clusters. Options (after `--`):
//! `--clusters 1000,3000,10000`, `--shape overridden|shared|both`, `--iterations N`,
//! `--generate DIR` (write one fleet, `--clusters N --shape S`, and stop: for use elsewhere).

mod support;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use support::fleet::{self, Shape};

/// One run of the binary: wall time, CPU time and peak RSS (KiB).
struct Sample {
    wall: Duration,
    cpu: Duration,
    max_rss_kib: u64,
}

/// Runs `strata args` to completion with output discarded; panics if it fails.
// The child is reaped by `wait4` (which also yields its rusage), not by `Child::wait`.
#[allow(clippy::zombie_processes)]
fn run(args: &[&str]) -> Sample {
    let started = Instant::now();
    let child = Command::new(env!("CARGO_BIN_EXE_strata"))
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("strata runs");
    let pid = child.id() as libc::pid_t;
    let mut status = 0;
    // SAFETY: plain FFI call with valid pointers; the child is ours and not waited on elsewhere.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    let waited = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
    let wall = started.elapsed();
    assert_eq!(waited, pid, "wait4");
    if !(libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0) {
        let mut stderr = String::new();
        if let Some(mut e) = child.stderr {
            use std::io::Read;
            let _ = e.read_to_string(&mut stderr);
        }
        panic!("strata {args:?} failed ({status}): {stderr}");
    }
    let tv = |t: libc::timeval| Duration::from_secs(t.tv_sec as u64) + Duration::from_micros(t.tv_usec as u64);
    Sample { wall, cpu: tv(usage.ru_utime) + tv(usage.ru_stime), max_rss_kib: usage.ru_maxrss as u64 }
}

/// The median run (by wall time) of `iterations`.
fn median(iterations: usize, args: &[&str]) -> Sample {
    let mut samples: Vec<Sample> = (0..iterations).map(|_| run(args)).collect();
    samples.sort_by_key(|s| s.wall);
    samples.swap_remove(samples.len() / 2)
}

fn print(shape: Shape, clusters: usize, what: &str, s: &Sample) {
    println!(
        "{:<10} {:>7} {:<34} {:>9.0} {:>9.0} {:>9.1}",
        shape.name(),
        clusters,
        what,
        s.wall.as_secs_f64() * 1e3,
        s.cpu.as_secs_f64() * 1e3,
        s.max_rss_kib as f64 / 1024.0
    );
}

fn bench(shape: Shape, clusters: usize, iterations: usize) {
    let dir = tempfile::tempdir().unwrap();
    let repo = dir.path();
    let base = fleet::generate(repo, shape, clusters);
    let head = fleet::edit_in_place(repo, shape);
    let repo = repo.to_str().unwrap();
    let validate = median(iterations, &["validate", "--repo", repo, "--rev", &base]);
    print(shape, clusters, "validate (load + render all)", &validate);
    let (edited, touched) = shape.edited(clusters);
    let plan = median(iterations, &["plan", "--repo", repo, "--base", &base, "--head", &head, "--format", "json"]);
    print(shape, clusters, &format!("plan: {edited} edited ({touched} cl.)"), &plan);
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let arg = |flag: &str| args.iter().position(|a| a == flag).and_then(|i| args.get(i + 1)).cloned();
    let sizes: Vec<usize> = arg("--clusters")
        .unwrap_or_else(|| "1000,3000".into())
        .split(',')
        .map(|n| n.trim().parse().expect("--clusters takes numbers"))
        .collect();
    let shapes = match arg("--shape").as_deref() {
        None | Some("both") => vec![Shape::Overridden, Shape::Shared],
        Some(s) => vec![Shape::parse(s).expect("--shape overridden|shared|both")],
    };
    if let Some(dir) = arg("--generate") {
        let (dir, shape, clusters) = (Path::new(&dir), shapes[0], sizes[0]);
        let base = fleet::generate(dir, shape, clusters);
        let head = fleet::edit_in_place(dir, shape);
        let (edited, touched) = shape.edited(clusters);
        println!("{} fleet of {clusters} clusters in {}", shape.name(), dir.display());
        println!("fleet commit {base}; {edited} edited in place at {head} ({touched} clusters)");
        return;
    }
    let iterations: usize = arg("--iterations").and_then(|n| n.parse().ok()).unwrap_or(5);
    println!("median of {iterations} runs, each a fresh process; cpu = user + system time of that run");
    println!("{:<10} {:>7} {:<34} {:>9} {:>9} {:>9}", "shape", "clusters", "measure", "wall ms", "cpu ms", "RSS MiB");
    for shape in shapes {
        for &clusters in &sizes {
            bench(shape, clusters, iterations);
        }
    }
}
