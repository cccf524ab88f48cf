//! Golden outputs: what `strata render` and `strata plan` print for the example repository and
//! for samples of the benchmarks' generated fleets, byte for byte, digests included. Rendering
//! and planning are tuned for speed (parallel renders, shared parses, plans that skip what a
//! change cannot reach); these pin that none of it changes a single byte of what comes out.
//!
//! `STRATA_UPDATE_GOLDEN=1 cargo test --test golden` rewrites the files under `tests/golden/`
//! (review the diff: a change there is a change users see).

mod common;
#[path = "../benches/support/mod.rs"]
mod support;

use std::path::{Path, PathBuf};

use common::{Repo, strata_with_env};
use support::fleet::{self, Shape};

fn golden_path(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden").join(name)
}

#[track_caller]
fn assert_golden(name: &str, actual: &str) {
    let path = golden_path(name);
    if std::env::var_os("STRATA_UPDATE_GOLDEN").is_some() {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, actual).unwrap();
        return;
    }
    let expected = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e} (STRATA_UPDATE_GOLDEN=1 writes it)", path.display()));
    if expected != actual {
        let diff = similar::TextDiff::from_lines(&expected, actual).unified_diff().context_radius(2).to_string();
        panic!("{name} differs from {}:\n{}", path.display(), diff.chars().take(6000).collect::<String>());
    }
}

/// `strata render` of every cluster, one after the other.
fn render_all(repo: &Path, clusters: &[String], extra: &[&str]) -> String {
    let mut out = String::new();
    for cluster in clusters {
        let mut args = vec!["render", cluster.as_str()];
        args.extend_from_slice(extra);
        let run = strata_with_env(&args, repo, &[]).ok();
        out.push_str(&run.stdout);
    }
    out
}

/// Only the digest lines of each render: the whole fleet's content in a few lines per cluster.
fn digests(rendered: &str) -> String {
    rendered.lines().filter(|l| l.starts_with("# ")).map(|l| format!("{l}\n")).collect()
}

#[test]
fn the_example_repository_renders_as_it_always_has() {
    let repo = Repo::plain_example();
    let clusters: Vec<String> =
        ["aws-cluster", "aws-staging", "edge-berlin", "edge-lab"].iter().map(|c| c.to_string()).collect();
    assert_golden("example.yaml", &render_all(repo.path(), &clusters, &[]));
}

/// A fleet of the benchmarks' shape, its first commit and the in-place edit the plan benchmark
/// measures.
fn generated(shape: Shape, clusters: usize) -> (tempfile::TempDir, String, String) {
    let dir = tempfile::tempdir().unwrap();
    let base = fleet::generate(dir.path(), shape, clusters);
    let head = fleet::edit_in_place(dir.path(), shape);
    (dir, base, head)
}

fn golden_fleet(shape: Shape) {
    let clusters = 40;
    let (dir, base, head) = generated(shape, clusters);
    let names: Vec<String> = (0..clusters).map(fleet::cluster_name).collect();
    let short = |rev: &str| rev[..7].to_string();

    // Every cluster's digests at the fleet commit, and three clusters in full.
    let all = render_all(dir.path(), &names, &["--rev", &base]).replace(&short(&base), "BASE");
    let mut text = digests(&all);
    let full =
        render_all(dir.path(), &names[..3], &["--rev", &base]).replace(&base, "BASE").replace(&short(&base), "BASE");
    text.push_str(&full);
    assert_golden(&format!("fleet-{}-render.yaml", shape.name()), &text);

    // The plan of the in-place edit, every format's content in its JSON.
    let plan = strata_with_env(&["plan", "--base", &base, "--head", &head, "--format", "json"], dir.path(), &[]).ok();
    let plan = plan.stdout.replace(&base, "BASE").replace(&head, "HEAD");
    assert_golden(&format!("fleet-{}-plan.json", shape.name()), &plan);

    let validate = strata_with_env(&["validate", "--rev", &base], dir.path(), &[]).ok();
    assert_golden(&format!("fleet-{}-validate.txt", shape.name()), &validate.stdout.replace(&short(&base), "BASE"));
}

#[test]
fn a_generated_fleet_where_every_cluster_overrides_renders_and_plans_as_it_always_has() {
    golden_fleet(Shape::Overridden);
}

#[test]
fn a_generated_fleet_with_shared_renders_renders_and_plans_as_it_always_has() {
    golden_fleet(Shape::Shared);
}
