//! Plan formatting benchmark: text, markdown (a GitHub-sized comment, and the whole plan without
//! a limit) and JSON of a plan of many clusters — an in-place edit of every profile version of a
//! generated fleet, built without rendering (benches/support/plans.rs), with a rollout holding
//! every cluster. Shows the median time of `--iterations` runs of each format and the size of
//! what it gives.
//!
//! `cargo bench --bench plan_format` runs 1,000 and 10,000 clusters. Options (after `--`):
//! `--clusters 1000,10000`, `--iterations N`.

mod support;

use std::time::{Duration, Instant};

use strata::plan::format::{self, Fit};
use strata::plan::{Plan, group};

fn median(iterations: usize, mut f: impl FnMut() -> String) -> (Duration, String) {
    let mut times = Vec::with_capacity(iterations);
    let mut out = String::new();
    for _ in 0..iterations {
        let started = Instant::now();
        out = std::hint::black_box(f());
        times.push(started.elapsed());
    }
    times.sort();
    (times[times.len() / 2], out)
}

fn row(clusters: usize, what: &str, took: Duration, out: &str) {
    println!(
        "{clusters:>7} {what:<28} {:>10.1} {:>12} {:>12}",
        took.as_secs_f64() * 1e3,
        out.len(),
        out.chars().count()
    );
}

fn bench(clusters: usize, iterations: usize) {
    let started = Instant::now();
    let plan: Plan = support::plans::edit_everywhere(clusters, true);
    let built = started.elapsed();
    let (took, _) = median(iterations, || group::groups(&plan).len().to_string());
    println!(
        "{clusters:>7} {:<28} {:>10.1} {:>12} {:>12}",
        "plan built (not formatting)",
        built.as_secs_f64() * 1e3,
        "-",
        "-"
    );
    println!(
        "{clusters:>7} {:<28} {:>10.1} {:>12} {:>12}",
        format!("groups ({})", group::groups(&plan).len()),
        took.as_secs_f64() * 1e3,
        "-",
        "-"
    );
    let (took, out) = median(iterations, || format::text(&plan, false));
    row(clusters, "text", took, &out);
    let (took, out) = median(iterations, || format::markdown(&plan));
    row(clusters, "markdown (GitHub comment)", took, &out);
    let whole = Fit { limit: usize::MAX, forge: "none".into(), rest: String::new() };
    let (took, out) = median(iterations, || format::comment(&plan, &whole));
    row(clusters, "markdown (whole, no limit)", took, &out);
    let (took, out) = median(iterations, || format::json(&plan));
    row(clusters, "json", took, &out);
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let option = |name: &str| args.iter().position(|a| a == name).and_then(|i| args.get(i + 1)).cloned();
    let sizes: Vec<usize> = option("--clusters")
        .map(|s| s.split(',').map(|n| n.trim().parse().expect("--clusters 1000,10000")).collect())
        .unwrap_or_else(|| vec![1_000, 10_000]);
    let iterations: usize = option("--iterations").map(|n| n.parse().expect("--iterations N")).unwrap_or(5);
    println!("{:>7} {:<28} {:>10} {:>12} {:>12}", "CLUSTERS", "FORMAT", "MS", "BYTES", "CHARS");
    for clusters in sizes {
        bench(clusters, iterations);
    }
}
