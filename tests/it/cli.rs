//! The `strata` command line on the example repository and on scratch Git repositories whose
//! commits walk through the tutorial's three ways of changing a fleet.

use crate::common;

use common::{Repo, example_dir, strata_with_env};
use serde_json::Value;

fn json(run: common::Run) -> Value {
    serde_json::from_str(&run.ok().stdout).expect("JSON output")
}

/// The plan for one cluster out of `strata plan --format json`.
fn cluster<'a>(plan: &'a Value, name: &str) -> &'a Value {
    plan["clusters"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["cluster"] == name)
        .unwrap_or_else(|| panic!("no {name} in {plan}"))
}

fn objects(cluster: &Value, action: &str) -> Vec<String> {
    cluster["objects"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|o| o["action"] == action)
        .map(|o| format!("{}/{}", o["id"]["kind"].as_str().unwrap(), o["id"]["name"].as_str().unwrap()))
        .collect()
}

#[test]
fn validate_accepts_the_example() {
    let run = strata_with_env(&["validate"], &example_dir(), &[]).ok();
    assert!(run.stdout.starts_with("ok: 2 profiles (4 versions), 4 clusters rendered"), "{}", run.stdout);
}

#[test]
fn render_gives_the_ui_deployment_one_replica_and_the_ownership_stamps() {
    let repo = Repo::example();
    let head = repo.commit("noop");
    let run = repo.strata(&["render", "aws-cluster"]).ok();
    assert!(run.stdout.starts_with("# cluster aws-cluster = aws-profile@1.0.0 at "), "{}", run.stdout);
    assert!(run.stdout.contains("\n# layer hello-universe (manifests, 3 objects) sha256:"), "{}", run.stdout);
    let docs: Vec<Value> = serde_saphyr::from_multiple(&run.stdout).unwrap();
    let ui = docs.iter().find(|d| d["kind"] == "Deployment" && d["metadata"]["name"] == "ui").expect("ui deployment");
    assert_eq!(ui["metadata"]["namespace"], "hello-universe");
    assert_eq!(ui["spec"]["replicas"], 1);
    let labels = &ui["metadata"]["labels"];
    assert_eq!(labels["app.kubernetes.io/managed-by"], "strata");
    assert_eq!(labels["strata.dev/cluster"], "aws-cluster");
    assert_eq!(labels["strata.dev/profile"], "aws-profile");
    assert_eq!(labels["strata.dev/layer"], "hello-universe");
    let annotations = &ui["metadata"]["annotations"];
    assert_eq!(annotations["strata.dev/profile-version"], "1.0.0");
    assert_eq!(annotations["strata.dev/revision"], head.as_str());
    // Namespaces come first so everything else has somewhere to land.
    assert_eq!(docs[0]["kind"], "Namespace");
    let kinds: Vec<_> = docs.iter().map(|d| d["kind"].as_str().unwrap()).collect();
    assert_eq!(kinds, ["Namespace", "Service", "Deployment"]);
}

#[test]
fn render_is_deterministic() {
    let a = strata_with_env(&["render", "edge-berlin"], &example_dir(), &[]).ok().stdout;
    let b = strata_with_env(&["render", "edge-berlin"], &example_dir(), &[]).ok().stdout;
    assert_eq!(a, b);
    assert!(a.contains("site: edge-berlin"), "templates see the cluster");
    assert!(a.contains("replicas: 3"), "the override wins over the layer's value");
}

#[test]
fn render_of_an_unknown_cluster_says_how_to_list_them() {
    // Not every name: a fleet has thousands (close names are proposed, see below).
    let run = strata_with_env(&["render", "nope"], &example_dir(), &[]);
    assert_eq!(run.code, 1);
    assert_eq!(run.stderr, "error: no cluster named `nope` (`strata clusters` lists them)\n");
}

#[test]
fn git_repositories_are_read_at_a_revision_never_from_the_working_directory() {
    let repo = Repo::example();
    let first = repo.commit("first");
    repo.edit("profiles/aws-profile/1.0.0/profile.yaml", "replicas: 1", "replicas: 5");
    // Uncommitted: HEAD still says 1.
    let head = repo.strata(&["render", "aws-cluster"]).ok().stdout;
    assert!(head.contains("replicas: 1") && !head.contains("replicas: 5"));
    // --worktree reads what is on disk, for pre-commit hooks.
    let worktree = repo.strata(&["render", "aws-cluster", "--worktree"]).ok().stdout;
    assert!(worktree.contains("replicas: 5"));
    repo.commit("five replicas");
    let old = repo.strata(&["render", "aws-cluster", "--rev", &first]).ok().stdout;
    assert!(old.contains("replicas: 1"));
    let new = repo.strata(&["render", "aws-cluster", "--rev", "HEAD"]).ok().stdout;
    assert!(new.contains("replicas: 5"));
    let bad = repo.strata(&["render", "aws-cluster", "--rev", "no-such-branch"]);
    assert_eq!(bad.code, 1);
    assert!(bad.stderr.contains("revision `no-such-branch` not found"), "{}", bad.stderr);
}

#[test]
fn validate_and_plan_say_on_every_run_what_they_do_not_see_of_the_working_directory() {
    let repo = Repo::example();
    repo.commit("first");
    let clean = repo.strata(&["validate"]).ok();
    assert!(!clean.stderr.contains("warning"), "{}", clean.stderr);
    // An edit, a new file, and a file outside the fleet's path (with --path).
    repo.edit("profiles/aws-profile/1.0.0/profile.yaml", "replicas: 1", "replicas: 5");
    repo.write("clusters/new-one.yaml.draft", "not yet\n");
    for _ in 0..2 {
        let run = repo.strata(&["validate"]).ok();
        assert!(
            run.stderr.contains("warning: 2 files changed since HEAD are not included; --worktree reads them"),
            "{}",
            run.stderr
        );
    }
    let plan = repo.strata(&["plan"]).ok();
    assert!(
        plan.stderr.contains("warning: 2 files changed since HEAD are not included; plan compares commits"),
        "{}",
        plan.stderr
    );
    // Reading the working directory, or another revision, there is nothing to say.
    let worktree = repo.strata(&["validate", "--worktree"]);
    assert!(!worktree.stderr.contains("changed since HEAD"), "{}", worktree.stderr);
    assert!(!repo.strata(&["validate", "--rev", "HEAD"]).stderr.contains("changed since HEAD"));
    // Only files under the path strata reads count.
    repo.write("notes.txt", "a file beside the fleet\n");
    let fleet_only = repo.strata(&["validate", "--path", "clusters"]);
    assert!(fleet_only.stderr.contains("warning: 1 file changed since HEAD is not included"), "{}", fleet_only.stderr);
}

#[test]
fn a_sub_directory_of_a_repository_can_hold_the_fleet() {
    let repo = Repo::example();
    for entry in ["profiles", "packs", "clusters"] {
        std::fs::create_dir_all(repo.path().join("fleet")).unwrap();
        std::fs::rename(repo.path().join(entry), repo.path().join("fleet").join(entry)).unwrap();
    }
    repo.commit("move into fleet/");
    repo.strata(&["validate", "--path", "fleet"]).ok();
    let run = repo.strata(&["validate"]);
    assert_eq!(run.code, 1);
    assert!(run.stderr.contains("error[layout]"), "{}", run.stderr);
}

#[test]
fn clusters_filter_by_the_tutorials_tag() {
    let rows = json(strata_with_env(
        &["clusters", "--tag", "service:hello-universe-frontend", "--format", "json"],
        &example_dir(),
        &[],
    ));
    let names: Vec<_> = rows.as_array().unwrap().iter().map(|r| r["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["aws-cluster", "aws-staging"]);
    let aws = &rows[0];
    assert_eq!(aws["version"], "1.0.0");
    assert_eq!(aws["updateAvailable"], "1.1.0");
    // A range resolves to the highest version it allows.
    assert_eq!(rows[1]["requested"], "~1.1");
    assert_eq!(rows[1]["version"], "1.1.0");
    let text = strata_with_env(&["clusters", "--tag", "env:prod"], &example_dir(), &[]).ok().stdout;
    assert_eq!(text.lines().count(), 2, "{text}");
    assert!(text.contains("edge-berlin"));
}

#[test]
fn profiles_list_versions_and_the_clusters_on_each() {
    let rows = json(strata_with_env(&["profiles", "--format", "json"], &example_dir(), &[]));
    let row = |name: &str, version: &str| {
        rows.as_array().unwrap().iter().find(|r| r["name"] == name && r["version"] == version).unwrap().clone()
    };
    assert_eq!(row("aws-profile", "1.0.0")["clusters"], serde_json::json!(["aws-cluster"]));
    assert_eq!(row("aws-profile", "1.1.0")["layers"], serde_json::json!(["hello-universe", "kubecost"]));
    assert_eq!(row("edge-profile", "2.1.0")["clusters"], serde_json::json!(["edge-lab"]));
}

const AWS_1_0_0: &str = "profiles/aws-profile/1.0.0/profile.yaml";
const AWS_CLUSTER: &str = "clusters/aws-cluster.yaml";

#[test]
fn plan_classifies_the_three_ways_a_fleet_changes() {
    let repo = Repo::example();

    // 1. In-place edit of 1.0.0: aws-cluster (updates: manual) gets a pending update.
    repo.edit(AWS_1_0_0, "replicas: 1", "replicas: 3");
    repo.commit("aws-profile 1.0.0: three ui replicas");
    let plan = json(repo.strata(&["plan", "--format", "json"]));
    let aws = cluster(&plan, "aws-cluster");
    assert_eq!(aws["kind"], "in-place-edit");
    assert_eq!(aws["pending"], true);
    assert_eq!(objects(aws, "changed"), ["Deployment/ui"]);
    let diff = aws["objects"][0]["diff"].as_str().unwrap();
    assert!(diff.contains("-  replicas: 1\n") && diff.contains("+  replicas: 3\n"), "{diff}");
    for other in ["aws-staging", "edge-berlin", "edge-lab"] {
        assert_eq!(cluster(&plan, other)["kind"], "unchanged", "{other}");
    }
    assert_eq!(plan["summary"], "1 cluster changes: 1 pending update");

    // 2. A new version: aws-cluster moves to 1.1.0 and gains the kubecost layer.
    repo.edit(AWS_CLUSTER, "version: \"1.0.0\"", "version: \"1.1.0\"");
    repo.commit("aws-cluster: upgrade to 1.1.0");
    let plan = json(repo.strata(&["plan", "--format", "json"]));
    let aws = cluster(&plan, "aws-cluster");
    assert_eq!(aws["kind"], "upgrade");
    assert_eq!(aws["from"], "aws-profile@1.0.0");
    assert_eq!(aws["to"], "aws-profile@1.1.0");
    assert_eq!(aws["pending"], false);
    assert_eq!(
        objects(aws, "added"),
        ["Namespace/kubecost", "Service/cost-analyzer-cost-analyzer", "Deployment/cost-analyzer-cost-analyzer"]
    );
    assert_eq!(objects(aws, "removed"), Vec::<String>::new());

    // 3. Roll back to 1.0.0: what 1.1.0 added goes away.
    repo.edit(AWS_CLUSTER, "version: \"1.1.0\"", "version: \"1.0.0\"");
    repo.commit("aws-cluster: roll back to 1.0.0");
    let plan = json(repo.strata(&["plan", "--format", "json"]));
    let aws = cluster(&plan, "aws-cluster");
    assert_eq!(aws["kind"], "rollback");
    assert_eq!(
        objects(aws, "removed"),
        ["Namespace/kubecost", "Service/cost-analyzer-cost-analyzer", "Deployment/cost-analyzer-cost-analyzer"]
    );
    assert_eq!(objects(aws, "added"), Vec::<String>::new());

    // 4. An override: only aws-cluster changes, and only its ui replicas.
    repo.edit(AWS_CLUSTER, "  updates: manual", "  overrides:\n    hello-universe: { replicas: 2 }\n  updates: manual");
    repo.commit("aws-cluster: two replicas");
    let plan = json(repo.strata(&["plan", "--format", "json"]));
    let aws = cluster(&plan, "aws-cluster");
    assert_eq!(aws["kind"], "override");
    assert_eq!(aws["pending"], false, "overrides apply at once even under updates: manual");
    assert_eq!(objects(aws, "changed"), ["Deployment/ui"]);
    assert!(aws["objects"][0]["diff"].as_str().unwrap().contains("+  replicas: 2\n"));
    let changed: Vec<_> = plan["clusters"].as_array().unwrap().iter().filter(|c| c["kind"] != "unchanged").collect();
    assert_eq!(changed.len(), 1);
}

#[test]
fn an_in_place_edit_reaches_every_cluster_on_that_version_and_no_other() {
    let repo = Repo::example();
    repo.write(
        "clusters/aws-eu.yaml",
        "apiVersion: strata.dev/v1\nkind: Cluster\nmetadata: { name: aws-eu }\nspec:\n  profile: { name: aws-profile, version: 1.0.0 }\n",
    );
    let base = repo.commit("add aws-eu");
    repo.edit(AWS_1_0_0, "hello-universe:1.2.0", "hello-universe:1.3.0");
    repo.commit("new image in 1.0.0");
    let plan = json(repo.strata(&["plan", "--base", &base, "--head", "HEAD", "--format", "json"]));
    let eu = cluster(&plan, "aws-eu");
    assert_eq!(eu["kind"], "in-place-edit");
    assert_eq!(eu["pending"], false, "updates: auto applies at once");
    assert_eq!(cluster(&plan, "aws-cluster")["pending"], true);
    assert_eq!(cluster(&plan, "aws-staging")["kind"], "unchanged", "1.1.0 is another version");
    assert_eq!(plan["summary"], "2 clusters change: 1 in-place edit, 1 pending update");
}

#[test]
fn plan_reports_new_and_removed_clusters_and_range_upgrades() {
    let repo = Repo::example();
    repo.remove("clusters/edge-lab.yaml");
    repo.write(
        "clusters/aws-us.yaml",
        "apiVersion: strata.dev/v1\nkind: Cluster\nmetadata: { name: aws-us }\nspec:\n  profile: { name: aws-profile, version: \"~1.1\" }\n",
    );
    // A new 1.1.1 release moves every cluster on ~1.1.
    let v111 = repo
        .read("profiles/aws-profile/1.1.0/profile.yaml")
        .replace("version: 1.1.0", "version: 1.1.1")
        .replace("prod-2.4.1", "prod-2.4.2");
    repo.write("profiles/aws-profile/1.1.1/profile.yaml", &v111);
    repo.commit("fleet changes");
    let plan = json(repo.strata(&["plan", "--format", "json"]));
    assert_eq!(cluster(&plan, "aws-us")["kind"], "new-cluster");
    assert_eq!(cluster(&plan, "aws-us")["to"], "aws-profile@1.1.1");
    assert_eq!(cluster(&plan, "edge-lab")["kind"], "removed-cluster");
    let staging = cluster(&plan, "aws-staging");
    assert_eq!(staging["kind"], "upgrade");
    assert_eq!(staging["to"], "aws-profile@1.1.1");
    assert!(objects(staging, "changed").contains(&"Deployment/cost-analyzer-cost-analyzer".to_string()));
    assert_eq!(cluster(&plan, "aws-cluster")["update_available"], "1.1.1");
}

#[test]
fn plan_formats_and_exit_codes() {
    let repo = Repo::example();
    let unchanged = repo.strata(&["plan", "--detailed-exitcode"]);
    // The first commit is compared with an empty repository: every cluster is new.
    assert_eq!(unchanged.code, 3, "{}", unchanged.stderr);
    repo.write("NOTES.md", "Docs do not change clusters.\n").commit("docs only");
    let none = repo.strata(&["plan", "--detailed-exitcode"]).ok();
    assert!(none.stdout.contains("no cluster changes"), "{}", none.stdout);

    repo.edit(AWS_1_0_0, "replicas: 1", "replicas: 3").commit("three");
    let text = repo.strata(&["plan"]).ok().stdout;
    assert!(text.contains("aws-cluster  pending update (in-place edit)  aws-profile@1.0.0"), "{text}");
    assert!(text.contains("held until approved (updates: manual): strata approve aws-cluster"), "{text}");
    assert!(!text.contains("\x1b["), "no colour when not on a terminal");
    let md = repo.strata(&["plan", "--format", "markdown"]).ok().stdout;
    assert!(md.starts_with("<!-- strata-plan -->\n### strata plan: 1 cluster changes: 1 pending update"), "{md}");
    assert!(md.contains("| `aws-cluster` | ⏸ pending update (in-place edit) | aws-profile@1.0.0 | +0 ~1 -0 |"), "{md}");
    assert!(md.contains("```diff\n") && md.contains("+  replicas: 3"), "{md}");
    assert_eq!(repo.strata(&["plan", "--detailed-exitcode"]).code, 3);
}

#[test]
fn plan_refuses_a_broken_head_and_names_the_problem() {
    let repo = Repo::example();
    repo.edit("packs/hello-universe/manifests/ui.yaml", "{{ values.replicas }}", "{{ values.replica_count }}");
    repo.commit("typo");
    let run = repo.strata(&["plan"]);
    assert_eq!(run.code, 1);
    assert!(run.stderr.contains("error[template]: packs/hello-universe/manifests/ui.yaml:8:"), "{}", run.stderr);
    assert!(run.stderr.contains("undefined value `values.replica_count`"), "{}", run.stderr);
}

#[test]
fn plan_needs_git() {
    let run = strata_with_env(&["plan"], &example_dir(), &[]);
    assert_eq!(run.code, 1);
    assert!(run.stderr.contains("not a Git repository"), "{}", run.stderr);
}

/// `-o` as kubectl has it on every listing: the default table, `wide`, `name`, `json`, `yaml`;
/// `--format` still takes the same values.
#[test]
fn listings_print_every_output_format() {
    let dir = example_dir();
    let run = |args: &[&str]| strata_with_env(args, &dir, &[]).ok().stdout;
    for (command, kind, header, wide) in
        [("clusters", "cluster", "CLUSTER  ", "DRIFT    TARGET"), ("profiles", "profile", "PROFILE  ", "DESCRIPTION")]
    {
        let text = run(&[command]);
        assert!(text.starts_with(header), "{text}");
        assert_eq!(run(&[command, "-o", "text"]), text);
        assert!(!text.contains(wide), "{text}");
        assert!(run(&[command, "-o", "wide"]).lines().next().unwrap().contains(wide), "{command} -o wide");
        let json: Value = serde_json::from_str(&run(&[command, "-o", "json"])).unwrap();
        assert_eq!(run(&[command, "--format", "json"]), run(&[command, "--output", "json"]));
        let yaml: Value = strata::yaml::parse(&run(&[command, "-o", "yaml"])).unwrap();
        assert_eq!(yaml, json, "{command}: yaml and json say the same");
        let names = run(&[command, "-o", "name"]);
        assert_eq!(names.lines().count(), json.as_array().unwrap().len(), "{names}");
        assert!(names.lines().all(|l| l.starts_with(&format!("{kind}/"))), "{names}");
    }
    assert_eq!(run(&["clusters", "-o", "name", "--tag", "env:lab"]), "cluster/edge-lab\n");
    assert_eq!(
        run(&["profiles", "edge-profile", "-o", "name"]),
        "profile/edge-profile@2.0.0\nprofile/edge-profile@2.1.0\n"
    );
    let bad = strata_with_env(&["clusters", "-o", "table"], &dir, &[]);
    assert_eq!(bad.code, 2, "clap refuses an unknown format");
    assert!(bad.stderr.contains("[possible values: text, wide, name, json, yaml]"), "{}", bad.stderr);
}

#[test]
fn plan_output_formats() {
    let repo = Repo::example();
    repo.edit(AWS_1_0_0, "replicas: 1", "replicas: 3").commit("three");
    assert_eq!(repo.strata(&["plan", "-o", "name"]).ok().stdout, "cluster/aws-cluster\n");
    let json: Value = serde_json::from_str(&repo.strata(&["plan", "-o", "json"]).ok().stdout).unwrap();
    let yaml: Value = strata::yaml::parse(&repo.strata(&["plan", "-o", "yaml"]).ok().stdout).unwrap();
    assert_eq!(yaml, json);
    assert_eq!(json["clusters"].as_array().unwrap().iter().filter(|c| c["group"] == 1).count(), 1);
    assert_eq!(
        repo.strata(&["plan", "--format", "markdown"]).ok().stdout,
        repo.strata(&["plan", "-o", "markdown"]).ok().stdout
    );
}

#[test]
fn completion_scripts_for_bash_zsh_and_fish() {
    let dir = example_dir();
    let script = |shell: &str| strata_with_env(&["completion", shell], &dir, &[]).ok().stdout;
    let bash = script("bash");
    assert!(bash.contains("_strata()") && bash.contains("complete -F _strata"), "{bash}");
    let zsh = script("zsh");
    assert!(zsh.starts_with("#compdef strata"), "{zsh}");
    let fish = script("fish");
    assert!(fish.contains("complete -c strata"), "{fish}");
    for script in [&bash, &zsh, &fish] {
        for word in ["plan", "clusters", "rollout", "completion", "output", "wide"] {
            assert!(script.contains(word), "{word} in {script}");
        }
    }
    assert_eq!(strata_with_env(&["completion", "tcsh"], &dir, &[]).code, 2);
}

#[test]
fn unknown_names_suggest_a_few_close_ones() {
    let dir = example_dir();
    let run = strata_with_env(&["render", "aws-clustr"], &dir, &[]);
    assert_eq!((run.code, run.stderr.trim()), (1, "error: no cluster named `aws-clustr`; did you mean `aws-cluster`?"));
    let run = strata_with_env(&["render", "edge"], &dir, &[]);
    assert_eq!(run.stderr.trim(), "error: no cluster named `edge` (`strata clusters` lists them)");
    let run = strata_with_env(&["render", "aws-stagin"], &dir, &[]);
    assert!(run.stderr.contains("did you mean `aws-staging`?"), "{}", run.stderr);
    let run = strata_with_env(&["profiles", "edge-profil"], &dir, &[]);
    assert_eq!(run.stderr.trim(), "error: no profile named `edge-profil`; did you mean `edge-profile`?");
}

/// `apply` and `drift` on directory targets: every output format, a summary line on stderr, no
/// progress bar when stderr is not a terminal.
#[test]
fn apply_and_drift_output_formats_and_summary() {
    let repo = Repo::example();
    let out = tempfile::tempdir().unwrap();
    let config = out.path().join("strata.yaml");
    let targets: String = ["aws-cluster", "aws-staging", "edge-berlin", "lab"]
        .iter()
        .map(|t| format!("  {t}: {{ directory: {} }}\n", out.path().join(t).display()))
        .collect();
    std::fs::write(&config, format!("targets:\n{targets}")).unwrap();
    let config = config.to_str().unwrap();

    let run = repo.strata(&["apply", "--all", "--config", config]).ok();
    assert!(run.stdout.contains("aws-cluster: applied aws-profile@1.0.0"), "{}", run.stdout);
    assert_eq!(run.stderr, "4 clusters: 4 applied\n", "the summary, and no progress bar off a terminal");
    let again = repo.strata(&["apply", "--all", "--config", config, "-o", "wide"]).ok();
    assert_eq!(again.stderr, "4 clusters: 4 unchanged\n");
    assert!(again.stdout.contains("  unchanged "), "wide lists unchanged objects: {}", again.stdout);
    let one = repo.strata(&["apply", "aws-cluster", "--config", config]).ok();
    assert_eq!(one.stderr, "", "no summary for one cluster");

    let names = repo.strata(&["apply", "--all", "--config", config, "-o", "name"]).ok();
    assert_eq!(names.stdout, "cluster/aws-cluster\ncluster/aws-staging\ncluster/edge-berlin\ncluster/edge-lab\n");
    let json: Value =
        serde_json::from_str(&repo.strata(&["apply", "--all", "--config", config, "-o", "json"]).ok().stdout).unwrap();
    assert_eq!(json.as_array().unwrap().len(), 4);
    let yaml = repo.strata(&["apply", "--all", "--config", config, "-o", "yaml"]).ok().stdout;
    assert!(yaml.starts_with("- cluster: aws-cluster\n"), "{yaml}");

    // Drift: nothing drifted, so `-o name` is empty; the others still list every cluster.
    let run = repo.strata(&["drift", "--all", "--config", config, "-o", "name"]).ok();
    assert_eq!(run.stdout, "");
    let json: Value =
        serde_json::from_str(&repo.strata(&["drift", "--all", "--config", config, "--format", "json"]).ok().stdout)
            .unwrap();
    assert_eq!(json.as_array().unwrap().len(), 4);
    assert!(repo.strata(&["drift", "--all", "--config", config]).ok().stdout.contains("aws-cluster: no drift"));
}

/// `status` and `rollout status` ask the daemon: every output format, the summary line, and
/// names it does not know answered with close ones.
#[test]
fn daemon_status_output_formats() {
    use common::daemon::{Daemon, example_targets, local};
    use std::time::Duration;
    let repo = Repo::example();
    let daemon = Daemon::start(&local(&repo), &example_targets());
    daemon.wait_for("every cluster applied", Duration::from_secs(30), |d| {
        d.strata(&["status"]).stderr.trim_end().ends_with("4 clusters: 4 applied")
    });
    let text = daemon.strata(&["status"]);
    assert!(text.stdout.starts_with("CLUSTER "), "{}", text.stdout);
    assert!(
        daemon
            .strata(&["status", "-o", "wide"])
            .stdout
            .lines()
            .next()
            .unwrap()
            .ends_with("APPLIED               MESSAGE")
    );
    assert_eq!(
        daemon.strata(&["status", "-o", "name"]).stdout,
        "cluster/aws-cluster\ncluster/aws-staging\ncluster/edge-berlin\ncluster/edge-lab\n"
    );
    let json: Value = serde_json::from_str(&daemon.strata(&["status", "--format", "json"]).stdout).unwrap();
    let yaml: Value = strata::yaml::parse(&daemon.strata(&["status", "-o", "yaml"]).stdout).unwrap();
    assert_eq!(json.as_array().unwrap().len(), 4);
    assert_eq!(yaml.as_array().unwrap().len(), 4);
    assert_eq!(daemon.strata(&["status", "aws-cluster", "-o", "name"]).stdout, "cluster/aws-cluster\n");
    let detail: Value = strata::yaml::parse(&daemon.strata(&["status", "aws-cluster", "-o", "yaml"]).stdout).unwrap();
    assert_eq!(detail["cluster"]["name"], "aws-cluster");
    let unknown = daemon.strata(&["status", "aws-clustr"]);
    assert_eq!(unknown.code, 1);
    assert!(
        unknown.stderr.contains("no cluster named \"aws-clustr\"; did you mean `aws-cluster`?"),
        "{}",
        unknown.stderr
    );

    assert_eq!(daemon.strata(&["rollout", "status", "-o", "name"]).stdout, "");
    assert_eq!(daemon.strata(&["rollout", "status", "-o", "json"]).stdout, "[]\n");
    let unknown = daemon.strata(&["rollout", "status", "default"]);
    assert!(
        unknown.stderr.contains("no rollout named \"default\" (`strata rollout status` lists them)"),
        "{}",
        unknown.stderr
    );
}
