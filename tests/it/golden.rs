//! Golden outputs: what `strata render` and `strata plan` print for the example repository and
//! for samples of the benchmarks' generated fleets, byte for byte, digests included. Rendering
//! and planning are tuned for speed (parallel renders, shared parses, plans that skip what a
//! change cannot reach); these pin that none of it changes a single byte of what comes out.
//!
//! `STRATA_UPDATE_GOLDEN=1 cargo test --test it golden::` rewrites the files under `tests/golden/`
//! (review the diff: a change there is a change users see).

use crate::common;
use crate::support;

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

/// A grouped plan on a generated fleet, in text and markdown, of an in-place edit of `edited`
/// profile versions: `rollout` adds a policy that holds p00's and p01's clusters (a canary wave
/// of those in eu-central-1, then the rest).
fn golden_grouped(shape: Shape, clusters: usize, edited: &[&str], rollout: bool) -> (String, String) {
    let dir = tempfile::tempdir().unwrap();
    let base = fleet::generate(dir.path(), shape, clusters);
    let base = if rollout {
        support::write(
            dir.path(),
            "rollouts/default.yaml",
            "apiVersion: strata.dev/v1\nkind: Rollout\nmetadata: { name: default }\nspec:\n  profiles: [p00, p01]\n  waves:\n    - name: canary\n      selector: { tags: [\"region:eu-central-1\"] }\n      bake: 10m\n    - name: rest\n",
        );
        support::git(dir.path(), &["add", "-A"]);
        support::git(dir.path(), &["commit", "-q", "-m", "rollout"]);
        let _ = base;
        support::git(dir.path(), &["rev-parse", "HEAD"])
    } else {
        base
    };
    let head = fleet::edit_versions(dir.path(), fleet::Shape::Overridden, edited);
    let clean = |out: String| {
        out.replace(&base, "BASE").replace(&head, "HEAD").replace(&base[..7], "BASE").replace(&head[..7], "HEAD")
    };
    let text = strata_with_env(&["plan", "--base", &base, "--head", &head], dir.path(), &[]).ok().stdout;
    let markdown =
        strata_with_env(&["plan", "--base", &base, "--head", &head, "--format", "markdown"], dir.path(), &[])
            .ok()
            .stdout;
    (clean(text), clean(markdown))
}

#[test]
fn a_change_to_many_overriding_clusters_is_shown_in_groups_with_their_rollout() {
    // 400 clusters: the edit of p00@1.2.0 and p01@1.2.0 reaches 40, in groups by the layer
    // their overrides pin replicas in, and by whether they apply it (p00, `updates: auto`) or
    // hold it for approval (p01, `updates: manual`).
    let (text, markdown) = golden_grouped(Shape::Overridden, 400, &["p00/1.2.0", "p01/1.2.0"], true);
    assert_golden("fleet-overridden-grouped.txt", &text);
    assert_golden("fleet-overridden-grouped.md", &markdown);
    assert!(text.contains("40 clusters change in 6 groups · 20 pending approval · 40 held by rollouts"), "{text}");
}

#[test]
fn a_change_to_many_clusters_sharing_renders_is_one_group() {
    let (text, markdown) = golden_grouped(Shape::Shared, 1_100, &["p00/1.0.0"], false);
    assert_golden("fleet-shared-grouped.txt", &text);
    assert_golden("fleet-shared-grouped.md", &markdown);
    assert!(text.contains("group 1 · 11 clusters: p00@1.0.0 (in-place edit), +0 ~12 -0 — c00000, c00100, c00200, … c01000 (full list in the JSON plan)"), "{text}");
}

/// Every forge's limit on one comment, in characters, as `strata::report` keeps to them.
fn forges() -> Vec<(strata::report::Provider, usize)> {
    use strata::report::Provider;
    vec![
        (Provider::Github, 65_536),
        (Provider::Gitea, 65_536),
        (Provider::Gitlab, 1_000_000),
        (Provider::Bitbucket, 32_767),
    ]
}

#[test]
fn the_markdown_plan_of_10000_clusters_fits_every_forge_and_says_where_the_rest_is() {
    use strata::plan::format::{self, Fit};
    for rollout in [false, true] {
        let plan = support::plans::edit_everywhere(10_000, rollout);
        for (provider, limit) in forges() {
            assert_eq!(provider.comment_limit(), limit);
            let fit = Fit::new(
                limit,
                provider.label(),
                Some("https://strata.example.com/plan"),
                Some(("a".repeat(40).as_str(), "b".repeat(40).as_str())),
            );
            let comment = format::comment(&plan, &fit);
            let length = comment.chars().count();
            assert!(length <= limit, "{provider:?}: {length} > {limit}");
            assert!(comment.starts_with("<!-- strata-plan -->\n### strata plan: 10000 clusters change: 5000 in-place edits, 5000 pending updates\n"), "{comment}");
            assert!(comment.contains("**10,000 clusters change in 90 groups · 5,000 pending approval"), "{provider:?}");
            // The largest groups come first, with their diff.
            assert!(comment.contains("<details><summary><b>Group 1</b> · 167 clusters: p00@1.2.0 (in-place edit), +0 ~9 -0 — <code>c00020</code>, <code>c00110</code>, <code>c00140</code>, … <code>c09980</code> (full list in the JSON plan)"), "{provider:?}:\n{comment}");
            assert!(comment.contains("```diff\n--- base/Deployment/"), "{provider:?}");
            assert!(comment.contains("strata.dev/cluster: <cluster>"), "{provider:?}");
            if length < limit / 2 {
                // Everything fitted (GitLab).
                assert!(!comment.contains("are not shown"), "{provider:?}");
            } else {
                // Groups (or their diffs) that do not fit are left out, and the note says so.
                assert!(
                    comment.contains("are not shown**, to keep this comment within")
                        || comment.contains(
                            "Diffs of the groups listed without one were left out, to keep this comment within"
                        ),
                    "{provider:?}"
                );
                assert!(comment.contains("`strata plan --base aaaaaaaaaaaa --head bbbbbbbbbbbb --format json` (in CI, keep its output as a build artifact). The plan's status: https://strata.example.com/plan"), "{provider:?}");
            }
        }
    }
}

#[test]
fn text_and_json_plans_of_10000_clusters() {
    use strata::plan::format;
    let plan = support::plans::edit_everywhere(10_000, true);
    let text = format::text(&plan, false);
    // Summary first; every group once; no cluster's name is listed twice.
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines[1], "10000 clusters change: 5000 in-place edits, 5000 pending updates");
    assert_eq!(
        lines[2],
        "10,000 clusters change in 90 groups · 5,000 pending approval · 10,000 held by rollouts · 0 unchanged"
    );
    assert_eq!(text.matches("\ngroup ").count(), 90);
    assert!(text.len() < 400_000, "{}", text.len());
    assert!(
        text.contains("\n       250 clusters: p00@1.0.0 (in-place edit) — c00000, c00040, c00080, … c09960\n"),
        "{}",
        &text[..3000]
    );
    // Pending groups say what to do, and where their clusters go out.
    assert!(
        text.contains("held until approved (updates: manual): strata approve <cluster> for each of the 167 clusters"),
        "{}",
        &text[..5000]
    );
    assert!(text.contains("\n  goes out with rollout default, wave 2 of 2 (rest)\n"), "{}", &text[..5000]);
    // JSON keeps every cluster, with its group.
    let json: serde_json::Value = serde_json::from_str(&format::json(&plan)).unwrap();
    let clusters = json["clusters"].as_array().unwrap();
    assert_eq!(clusters.len(), 10_000);
    assert!(clusters.iter().all(|c| c["group"].as_u64().is_some_and(|g| (1..=90).contains(&g))));
    assert_eq!(clusters.iter().filter(|c| c["group"] == 1).count(), 167);
}
