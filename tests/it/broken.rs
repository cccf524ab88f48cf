//! A corpus of broken repositories: each is refused with a diagnostic naming the file (and line
//! where there is one), and says what is wrong. The corpus is checked through the library, as
//! `strata validate` checks a repository; a few runs of the binary check what the command adds
//! (the exit code, the count, the revision).

use crate::common;

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::Repo;
use strata::render::Renderer;
use strata::render::tools::SystemTools;

const AWS_1_0_0: &str = "profiles/aws-profile/1.0.0/profile.yaml";
const AWS_1_1_0: &str = "profiles/aws-profile/1.1.0/profile.yaml";
const AWS_CLUSTER: &str = "clusters/aws-cluster.yaml";
const UI: &str = "packs/hello-universe/manifests/ui.yaml";

/// What `strata validate` (src/cli/repo.rs) finds in the repository at `path` (its HEAD when it
/// is a Git repository, else the directory; `subdir` as `--path`), as it prints it: every
/// diagnostic of loading what loads, rendering each cluster that resolves, and decrypting SOPS
/// files, in file order, then the count. `None` when it finds nothing.
fn validate(path: &Path, subdir: Option<&str>) -> Option<String> {
    let keys = Arc::new(strata::source::sops::Keys::for_cli(&[]).unwrap());
    let snapshot = strata::source::open(path, subdir, None, false, &keys).unwrap();
    let (model, mut diags) = strata::repo::load_partial(snapshot.tree.as_ref());
    let tools = SystemTools::default();
    let renderer = Renderer::new(snapshot.tree.as_ref(), &model, &tools);
    let undecryptable = strata::render::reads::decrypts(snapshot.tree.as_ref(), &model).err();
    for cluster in model.clusters.values().filter(|c| model.resolve(c).is_ok()) {
        let Err(found) = renderer.check(cluster) else { continue };
        // A SOPS file that does not decrypt is said once, not again per cluster reading it.
        let said = |d: &strata::diag::Diagnostic| {
            undecryptable
                .iter()
                .flat_map(|u| u.iter())
                .any(|s| s.code == d.code && s.file == d.file && s.message == d.message)
        };
        diags.extend(found.into_iter().filter(|d| !said(d)).collect());
    }
    diags.extend(undecryptable.unwrap_or_default());
    (!diags.is_empty()).then(|| diags.sorted().to_string())
}

/// Checks the repository is refused with every expected line fragment; returns what was said.
#[track_caller]
fn rejects(repo: &Repo, expected: &[&str]) -> String {
    rejects_in(repo, None, expected)
}

#[track_caller]
fn rejects_in(repo: &Repo, subdir: Option<&str>, expected: &[&str]) -> String {
    let said = validate(repo.path(), subdir).expect("the repository is refused");
    for fragment in expected {
        assert!(said.contains(fragment), "expected {fragment:?} in:\n{said}");
    }
    said
}

/// `strata validate`, the binary: exit 1 and every expected fragment on stderr.
#[track_caller]
fn rejects_cli(repo: &Repo, expected: &[&str]) -> String {
    let run = repo.strata(&["validate"]);
    assert_eq!(run.code, 1, "expected exit 1\nstdout: {}\nstderr: {}", run.stdout, run.stderr);
    for fragment in expected {
        assert!(run.stderr.contains(fragment), "expected {fragment:?} in:\n{}", run.stderr);
    }
    run.stderr
}

/// Checks the library finds nothing wrong.
#[track_caller]
fn accepts(repo: &Repo) {
    if let Some(said) = validate(repo.path(), None) {
        panic!("expected no problems, found:\n{said}");
    }
}

fn broken() -> Repo {
    Repo::plain_example()
}

#[test]
fn unknown_fields_are_schema_errors_at_their_line() {
    let repo = broken();
    repo.edit(AWS_CLUSTER, "  updates: manual", "  update: manual");
    rejects(&repo, &["error[schema]: clusters/aws-cluster.yaml:10: unknown field `update`"]);
}

#[test]
fn wrong_types_are_schema_errors() {
    let repo = broken();
    repo.edit(AWS_CLUSTER, "tags: [\"service:hello-universe-frontend\"]", "tags: {service: x}");
    rejects(&repo, &["clusters/aws-cluster.yaml:5: expected sequence"]);
}

#[test]
fn unknown_layer_types_name_the_line_and_the_choices() {
    let repo = broken();
    repo.edit(AWS_1_0_0, "type: manifests", "type: terraform");
    rejects(
        &repo,
        &["error[schema]: profiles/aws-profile/1.0.0/profile.yaml:10: unknown variant `terraform`", "manifests"],
    );
}

#[test]
fn a_version_directory_that_is_not_semver() {
    let repo = broken();
    std::fs::rename(repo.path().join("profiles/aws-profile/1.1.0"), repo.path().join("profiles/aws-profile/1.1"))
        .unwrap();
    rejects(
        &repo,
        &[
            "error[semver]: profiles/aws-profile/1.1: profile aws-profile: version directory `1.1` is not a semver version",
        ],
    );
}

#[test]
fn a_version_that_differs_from_its_directory() {
    let repo = broken();
    repo.edit(AWS_1_1_0, "version: 1.1.0", "version: 1.2.0");
    rejects(
        &repo,
        &[
            "error[mismatch]: profiles/aws-profile/1.1.0/profile.yaml:5:",
            "metadata.version 1.2.0 differs from its directory 1.1.0",
        ],
    );
}

#[test]
fn an_invalid_version_in_the_file() {
    let repo = broken();
    repo.edit(AWS_1_1_0, "version: 1.1.0", "version: one");
    rejects(&repo, &["error[semver]: profiles/aws-profile/1.1.0/profile.yaml:5:", "`one` is not semver"]);
}

#[test]
fn a_name_that_differs_from_its_directory() {
    let repo = broken();
    repo.edit(AWS_1_1_0, "name: aws-profile", "name: gcp-profile");
    rejects(
        &repo,
        &["error[mismatch]: profiles/aws-profile/1.1.0/profile.yaml:4: metadata.name `gcp-profile` differs"],
    );
}

#[test]
fn duplicate_profile_versions() {
    let repo = broken();
    let text = repo.read(AWS_1_1_0).replace("version: 1.1.0", "version: 1.1.0+rebuild");
    repo.write("profiles/aws-profile/1.1.0+rebuild/profile.yaml", &text);
    rejects(
        &repo,
        &[
            "error[duplicate]: profiles/aws-profile/1.1.0+rebuild/profile.yaml: profile aws-profile: version 1.1.0+rebuild duplicates 1.1.0",
        ],
    );
}

#[test]
fn a_cluster_naming_an_unknown_profile() {
    let repo = broken();
    repo.edit(AWS_CLUSTER, "name: aws-profile", "name: azure-profile");
    rejects(
        &repo,
        &[
            "error[unresolved]: clusters/aws-cluster.yaml:7: cluster aws-cluster: profile `azure-profile` does not exist",
            "known profiles: aws-profile, edge-profile",
        ],
    );
}

#[test]
fn an_unsatisfiable_range() {
    let repo = broken();
    repo.edit(AWS_CLUSTER, "version: \"1.0.0\"", "version: \"^3\"");
    rejects(
        &repo,
        &[
            "error[unresolved]: clusters/aws-cluster.yaml:7:",
            "no version of profile `aws-profile` satisfies range `^3`",
            "available versions: 1.0.0, 1.1.0",
        ],
    );
}

#[test]
fn a_version_that_is_neither_version_nor_range() {
    let repo = broken();
    repo.edit(AWS_CLUSTER, "version: \"1.0.0\"", "version: \"latest\"");
    rejects(&repo, &["error[semver]: clusters/aws-cluster.yaml:7:", "`latest` is neither a version nor a range"]);
}

#[test]
fn sources_that_escape_the_repository() {
    let repo = broken();
    repo.edit(AWS_1_0_0, "source: packs/hello-universe/manifests", "source: ../../etc");
    repo.edit(AWS_1_1_0, "source: packs/kubecost/manifests", "source: /etc");
    rejects(
        &repo,
        &[
            "error[path]: profiles/aws-profile/1.0.0/profile.yaml:11: profile aws-profile@1.0.0 layer hello-universe: source `../../etc` leaves the repository",
            "error[path]: profiles/aws-profile/1.1.0/profile.yaml:18: profile aws-profile@1.1.0 layer kubecost: source `/etc` leaves the repository",
        ],
    );
}

#[test]
fn a_symlink_pointing_out_of_the_repository() {
    let repo = broken();
    repo.symlink("/etc", "packs/evil");
    repo.edit(AWS_1_0_0, "source: packs/hello-universe/manifests", "source: packs/evil");
    rejects(
        &repo,
        &["error[path]: profiles/aws-profile/1.0.0/profile.yaml:11:", "symlink that points outside the repository"],
    );
}

#[test]
fn a_symlinked_file_pointing_out_inside_a_layer() {
    let repo = broken();
    repo.symlink("../../../../../../../../etc/passwd", "packs/hello-universe/manifests/passwd.yaml");
    rejects(&repo, &["error[path]: packs/hello-universe/manifests", "points outside the repository"]);
}

#[test]
fn a_missing_source() {
    let repo = broken();
    repo.edit(AWS_1_0_0, "source: packs/hello-universe/manifests", "source: packs/hello-universes");
    rejects(
        &repo,
        &["error[path]: profiles/aws-profile/1.0.0/profile.yaml:11:", "source `packs/hello-universes` does not exist"],
    );
}

#[test]
fn duplicate_layer_names() {
    let repo = broken();
    repo.edit(AWS_1_1_0, "    - name: kubecost", "    - name: hello-universe");
    rejects(
        &repo,
        &[
            "error[duplicate]: profiles/aws-profile/1.1.0/profile.yaml:16:",
            "layer `hello-universe` is declared twice (first at line 9)",
        ],
    );
}

#[test]
fn depends_on_an_unknown_layer() {
    let repo = broken();
    repo.edit(AWS_1_1_0, "dependsOn: [hello-universe]", "dependsOn: [hello-world]");
    rejects(
        &repo,
        &[
            "error[depends-on]: profiles/aws-profile/1.1.0/profile.yaml:16:",
            "depends on `hello-world`, which this profile does not have",
        ],
    );
}

#[test]
fn depends_on_cycles() {
    let repo = broken();
    repo.edit(
        AWS_1_1_0,
        "      namespace: hello-universe\n",
        "      namespace: hello-universe\n      dependsOn: [kubecost]\n",
    );
    rejects(
        &repo,
        &[
            "error[depends-on]: profiles/aws-profile/1.1.0/profile.yaml:",
            "dependsOn forms a cycle among layers hello-universe, kubecost",
        ],
    );
}

#[test]
fn two_layers_rendering_the_same_object() {
    let repo = broken();
    repo.write(
        "packs/kubecost/manifests/stray.yaml",
        "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: hello-universe\n",
    );
    rejects(
        &repo,
        &[
            "error[collision]: packs/kubecost/manifests/stray.yaml:1: profile aws-profile@1.1.0 layer kubecost: Namespace/hello-universe is also rendered by layer `hello-universe` (packs/hello-universe/manifests/namespace.yaml:1)",
        ],
    );
}

#[test]
fn manifests_without_kind_or_name() {
    let repo = broken();
    repo.write("packs/hello-universe/manifests/extra.yaml", "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: ok\n---\napiVersion: v1\nmetadata:\n  name: no-kind\n---\napiVersion: v1\nkind: Secret\nmetadata: {}\n");
    rejects(
        &repo,
        &[
            "error[manifest]: packs/hello-universe/manifests/extra.yaml:5: profile aws-profile@1.0.0 layer hello-universe: manifest has no kind",
            "error[manifest]: packs/hello-universe/manifests/extra.yaml:9: profile aws-profile@1.0.0 layer hello-universe: Secret has no metadata.name",
        ],
    );
}

#[test]
fn manifests_without_api_version() {
    let repo = broken();
    repo.write("packs/hello-universe/manifests/extra.yaml", "kind: ConfigMap\nmetadata:\n  name: x\n");
    rejects(&repo, &["error[manifest]: packs/hello-universe/manifests/extra.yaml:1:", "manifest has no apiVersion"]);
}

#[test]
fn a_missing_template_value_names_template_file_and_line() {
    let repo = broken();
    repo.edit(UI, "image: {{ values.image }}", "image: {{ values.image }}:{{ values.tag }}");
    rejects(
        &repo,
        &[
            "error[template]: packs/hello-universe/manifests/ui.yaml:19: profile aws-profile@1.0.0 layer hello-universe: undefined value `values.tag`",
            "cluster's overrides",
        ],
    );
}

#[test]
fn a_looping_template_fails_fast() {
    let repo = broken();
    repo.write(
        "packs/hello-universe/manifests/loop.yaml",
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: loop\ndata:\n{% for i in range(100000) %}{% for j in range(100000) %}  k{{ i }}-{{ j }}: x\n{% endfor %}{% endfor %}",
    );
    let started = Instant::now();
    rejects(&repo, &["error[template]: packs/hello-universe/manifests/loop.yaml:6:", "template ran past its budget"]);
    assert!(started.elapsed() < Duration::from_secs(10));
}

#[test]
fn template_syntax_errors() {
    let repo = broken();
    repo.edit(UI, "replicas: {{ values.replicas }}", "replicas: {{ values.replicas }");
    rejects(&repo, &["error[template]: packs/hello-universe/manifests/ui.yaml:8:", "syntax error"]);
}

#[test]
fn an_alias_bomb_fails_within_milliseconds() {
    let repo = broken();
    // Nine levels of nine aliases each: 9^9 (387 million) strings once expanded, hidden in a
    // place that takes arbitrary values.
    let mut bomb = String::from(
        "apiVersion: strata.dev/v1\nkind: Cluster\nmetadata: {name: bomb}\nspec:\n  profile: {name: aws-profile, version: 1.0.0}\n  overrides:\n    hello-universe:\n      a: &a [lol,lol,lol,lol,lol,lol,lol,lol,lol]\n",
    );
    let names = ["a", "b", "c", "d", "e", "f", "g", "h", "i"];
    for w in names.windows(2) {
        bomb.push_str(&format!("      {}: &{} [{}]\n", w[1], w[1], vec![format!("*{}", w[0]); 9].join(",")));
    }
    repo.write("clusters/bomb.yaml", &bomb);
    let started = Instant::now();
    rejects(&repo, &["error[yaml]: clusters/bomb.yaml:", "budget breached"]);
    assert!(started.elapsed() < Duration::from_secs(2), "took {:?}", started.elapsed());
}

#[test]
fn huge_files_are_refused_unread() {
    let repo = broken();
    repo.write("clusters/huge.yaml", &"# padding\n".repeat(500_000));
    rejects(
        &repo,
        &["error[too-large]: clusters/huge.yaml: file is 5000000 bytes, larger than the 4194304-byte limit"],
    );
}

#[test]
fn invalid_yaml_names_the_line() {
    let repo = broken();
    repo.edit(AWS_CLUSTER, "  drift: correct", "  drift: [correct");
    rejects(&repo, &["error[yaml]: clusters/aws-cluster.yaml:"]);
}

#[test]
fn foreign_api_versions_and_kinds() {
    let repo = broken();
    repo.edit(AWS_CLUSTER, "apiVersion: strata.dev/v1", "apiVersion: strata.dev/v2");
    repo.edit("clusters/edge-lab.yaml", "kind: Cluster", "kind: Profile");
    rejects(
        &repo,
        &[
            "error[schema]: clusters/aws-cluster.yaml:1: apiVersion `strata.dev/v2` is not supported",
            "error[schema]: clusters/edge-lab.yaml:2: kind `Profile` where a Cluster is expected",
        ],
    );
}

#[test]
fn overrides_of_a_layer_the_profile_does_not_have() {
    let repo = broken();
    repo.edit("clusters/edge-berlin.yaml", "    edge-gateway:\n", "    edge-gateways:\n");
    rejects(
        &repo,
        &[
            "error[unresolved]: clusters/edge-berlin.yaml: cluster edge-berlin: overrides name layer `edge-gateways`, which edge-profile@2.0.0 does not have",
        ],
    );
}

#[test]
fn duplicate_cluster_names() {
    let repo = broken();
    repo.write("clusters/prod/aws-cluster-copy.yaml", &repo.read(AWS_CLUSTER));
    rejects(
        &repo,
        &[
            "error[duplicate]: clusters/prod/aws-cluster-copy.yaml: cluster `aws-cluster` is also defined in clusters/aws-cluster.yaml",
        ],
    );
}

#[test]
fn names_that_cannot_be_label_values() {
    let repo = broken();
    repo.edit(AWS_CLUSTER, "name: aws-cluster", "name: AWS_Cluster");
    rejects(&repo, &["error[name]: clusters/aws-cluster.yaml:4: cluster name `AWS_Cluster` is not a valid name"]);
}

#[test]
fn a_kustomize_layer_without_a_kustomization() {
    let repo = broken();
    repo.edit(AWS_1_0_0, "type: manifests", "type: kustomize");
    repo.edit(
        AWS_1_0_0,
        "      values:\n        replicas: 1\n        image: ghcr.io/spectrocloud/hello-universe:1.2.0\n",
        "",
    );
    rejects(&repo, &["error[path]: profiles/aws-profile/1.0.0/profile.yaml:11:", "has no kustomization.yaml"]);
}

#[test]
fn every_problem_is_reported_in_one_run() {
    let repo = broken();
    repo.edit(AWS_CLUSTER, "  updates: manual", "  update: manual");
    repo.edit(AWS_1_1_0, "dependsOn: [hello-universe]", "dependsOn: [nope]");
    repo.edit("clusters/edge-lab.yaml", "version: \"^2\"", "version: \"^9\"");
    // Clusters that did load are still rendered, so template problems show in the same run.
    repo.edit("packs/edge-gateway/manifests/gateway.yaml", "{{ values.replicas }}", "{{ values.replicaz }}");
    // The binary: exit 1, the problems, their count and the revision read.
    let stderr = rejects_cli(
        &repo,
        &[
            "clusters/aws-cluster.yaml:10",
            "profiles/aws-profile/1.1.0/profile.yaml:16",
            "clusters/edge-lab.yaml:7",
            "error[template]: packs/edge-gateway/manifests/gateway.yaml:22: profile edge-profile@2.0.0 layer edge-gateway: undefined value `values.replicaz`",
            "4 problems found",
        ],
    );
    // In file order, so a user can work down the list.
    let a = stderr.find("clusters/aws-cluster.yaml").unwrap();
    let b = stderr.find("clusters/edge-lab.yaml").unwrap();
    let c = stderr.find("profiles/aws-profile").unwrap();
    assert!(a < b && b < c);
    assert!(stderr.trim_end().ends_with("4 problems found at working tree"), "{stderr}");
    // What the binary prints is what the library finds, and the revision.
    assert_eq!(stderr.trim_end(), format!("{} at working tree", validate(repo.path(), None).unwrap()));
}

#[test]
fn not_a_strata_repository() {
    let repo = broken();
    repo.remove("profiles").remove("clusters");
    rejects(&repo, &["error[layout]: no `profiles/` or `clusters/` directory"]);
}

/// Git trees carry symlinks as blobs; the same rules hold there.
#[test]
fn git_symlinks_out_of_the_repository_are_refused() {
    let repo = Repo::example();
    repo.symlink("../../../etc", "packs/escape");
    repo.edit(AWS_1_0_0, "source: packs/hello-universe/manifests", "source: packs/escape");
    repo.commit("link out");
    rejects(
        &repo,
        &["error[path]: profiles/aws-profile/1.0.0/profile.yaml:11:", "symlink that points outside the repository"],
    );
}

#[test]
fn git_symlinks_inside_the_repository_are_followed() {
    let repo = Repo::example();
    repo.symlink("../hello-universe/manifests", "packs/kubecost/hello");
    repo.edit(AWS_1_0_0, "source: packs/hello-universe/manifests", "source: packs/kubecost/hello");
    repo.commit("link in");
    accepts(&repo);
}

#[test]
fn git_blobs_over_the_limit_are_refused_unread() {
    let repo = Repo::example();
    repo.write("clusters/huge.yaml", &"# padding\n".repeat(500_000));
    repo.commit("huge");
    rejects(&repo, &["error[too-large]: clusters/huge.yaml: file is 5000000 bytes"]);
}

#[test]
fn sensitive_rules_are_checked_like_ignore_rules() {
    let repo = broken();
    repo.edit(
        AWS_1_0_0,
        "      source: packs/hello-universe/manifests\n",
        "      source: packs/hello-universe/manifests\n      sensitive:\n        - { kind: Database, path: spec.password }\n        - { path: /spec/token, layer: hello-universe }\n",
    );
    repo.edit(AWS_CLUSTER, "  updates: manual", "  sensitive: [{ path: password }]\n  updates: manual");
    rejects(
        &repo,
        &[
            "error[schema]: profiles/aws-profile/1.0.0/profile.yaml:13: profile aws-profile@1.0.0 layer hello-universe: sensitive path `spec.password` is not a JSON pointer",
            "profiles/aws-profile/1.0.0/profile.yaml:14: profile aws-profile@1.0.0 layer hello-universe: `layer` in `sensitive` rules is for cluster files",
            "clusters/aws-cluster.yaml:10: cluster aws-cluster: sensitive path `password` is not a JSON pointer",
            "help: write paths as JSON pointers",
        ],
    );
}
/// A fleet in `fleet/` of the repository (read with `--path fleet`), with one manifests layer
/// `packs/app` whose `leak.yaml` links through `packs/up -> ..`: lexically that is
/// `packs/decoy/secret.yaml`, a harmless file inside; as the filesystem resolves it, it is
/// `decoy/secret.yaml` beside the fleet, outside it.
fn fleet_with_a_link_chain(repo: &Repo) {
    repo.write(
        "fleet/profiles/p/1.0.0/profile.yaml",
        "apiVersion: strata.dev/v1\nkind: Profile\nmetadata: { name: p, version: 1.0.0 }\nspec:\n  layers:\n    - { name: app, type: manifests, source: packs/app, namespace: apps }\n",
    )
    .write(
        "fleet/clusters/c.yaml",
        "apiVersion: strata.dev/v1\nkind: Cluster\nmetadata: { name: c }\nspec:\n  profile: { name: p, version: 1.0.0 }\n",
    )
    .write("fleet/packs/app/cm.yaml", "apiVersion: v1\nkind: ConfigMap\nmetadata: { name: app }\n")
    .write("fleet/packs/decoy/secret.yaml", "apiVersion: v1\nkind: ConfigMap\nmetadata: { name: decoy }\n")
    .write("decoy/secret.yaml", "apiVersion: v1\nkind: Secret\nmetadata: { name: host-secret }\nstringData: { token: outside }\n")
    .symlink("..", "fleet/packs/up")
    .symlink("../up/../decoy/secret.yaml", "fleet/packs/app/leak.yaml");
}

#[track_caller]
fn rejects_at(repo: &Repo, args: &[&str], expected: &[&str]) {
    let run = repo.strata(args);
    assert_eq!(run.code, 1, "expected exit 1\nstdout: {}\nstderr: {}", run.stdout, run.stderr);
    for fragment in expected {
        assert!(run.stderr.contains(fragment), "expected {fragment:?} in:\n{}", run.stderr);
    }
    assert!(!run.stdout.contains("host-secret") && !run.stdout.contains("decoy"), "{}", run.stdout);
}

const LEAK: &str = "error[path]: packs/app/leak.yaml: `packs/app/leak.yaml` points outside the repository through the symlink `packs/up`";

#[test]
fn link_chains_lexically_inside_but_physically_outside_are_refused_in_a_directory() {
    let repo = Repo::plain_example();
    fleet_with_a_link_chain(&repo);
    let said = rejects_in(&repo, Some("fleet"), &[LEAK]);
    assert!(!said.contains("host-secret"), "{said}");
    rejects_at(&repo, &["render", "c", "--path", "fleet"], &[LEAK]);
}

#[test]
fn link_chains_lexically_inside_but_physically_outside_are_refused_in_a_commit() {
    let repo = Repo::example();
    fleet_with_a_link_chain(&repo);
    repo.commit("a link chain");
    rejects_at(&repo, &["render", "c", "--path", "fleet"], &[LEAK]);
}

#[test]
fn a_layer_source_through_a_link_chain_is_refused() {
    let repo = Repo::example();
    fleet_with_a_link_chain(&repo);
    repo.edit("fleet/profiles/p/1.0.0/profile.yaml", "source: packs/app", "source: packs/up/../decoy");
    repo.commit("source through the chain");
    rejects_in(
        &repo,
        Some("fleet"),
        &[
            "error[path]: profiles/p/1.0.0/profile.yaml:6: profile p@1.0.0 layer app: source `packs/up/../decoy` goes through a symlink that points outside the repository (`packs/up`)",
        ],
    );
}

#[test]
fn dot_dot_after_a_link_is_where_the_link_led() {
    let repo = Repo::plain_example();
    fleet_with_a_link_chain(&repo);
    repo.remove("fleet/packs/app/leak.yaml");
    // `deep` links to `packs/app`: `deep/../decoy` is `packs/decoy`, not `decoy` at the root.
    repo.symlink("packs/app", "fleet/deep").write("fleet/decoy/x.yaml", "not: this\n");
    repo.edit("fleet/profiles/p/1.0.0/profile.yaml", "source: packs/app", "source: deep/../decoy");
    let out = repo.strata(&["render", "c", "--path", "fleet"]).ok().stdout;
    assert!(out.contains("name: decoy"), "{out}");
}

#[test]
fn symlink_loops_name_the_looping_file() {
    for git in [false, true] {
        let repo = if git { Repo::example() } else { Repo::plain_example() };
        repo.symlink("loop-b.yaml", "packs/hello-universe/manifests/loop-a.yaml")
            .symlink("loop-a.yaml", "packs/hello-universe/manifests/loop-b.yaml");
        if git {
            repo.commit("a loop");
        }
        rejects(
            &repo,
            &[
                "error[path]: packs/hello-universe/manifests/loop-a.yaml: `packs/hello-universe/manifests/loop-a.yaml`: too many levels of symbolic links",
            ],
        );
    }
}

/// Window values that once panicked the parser (byte slicing of `éé`) and their relatives: each
/// is a diagnostic on the cluster file's line, saying which part is wrong and how to write one.
#[test]
fn hostile_maintenance_windows_are_diagnostics() {
    let cases = [
        ("éé 02:00-03:00", "window: `éé` is not a day"),
        // A combining mark is shown escaped, so the user sees why `Sät` is not `Sat`.
        ("Sa\u{308}t 02:00-03:00", "window: `Sa\\u{308}t` is not a day"),
        ("Sat 02:0\u{e9}-03:00", "window: `02:0é` is not a time of day"),
        ("Sat 99999999999999999999:00-03:00", "window: `99999999999999999999:00` is not a time of day"),
        ("Sat 02:00-03:00 +9\u{e9}", "window: `+9é` is not a time zone"),
        ("Sat 02:00-03:00 Atlantis/Capital", "window: `Atlantis/Capital` is not a time zone"),
        ("", "window: the window is empty"),
    ];
    for (window, message) in cases {
        let repo = broken();
        repo.edit(AWS_CLUSTER, "  drift: correct", &format!("  drift: correct\n  updates: auto\n  window: '{window}'"));
        repo.edit(AWS_CLUSTER, "  updates: manual\n", "");
        let stderr =
            rejects(&repo, &[&format!("error[schema]: clusters/aws-cluster.yaml:12: cluster aws-cluster: {message}")]);
        assert!(stderr.contains("help: write DAYS HH:MM-HH:MM [ZONE]"), "{stderr}");
        assert!(!stderr.contains("panicked"), "{stderr}");
    }
    let repo = broken();
    repo.edit(AWS_CLUSTER, "  drift: correct", "  drift: correct\n  window: \"Mon-Fri 22:00-02:00 Europe/Berlin\"");
    // The binary: a valid repository exits 0 and says what it checked.
    let run = repo.strata(&["validate"]).ok();
    assert!(run.stdout.starts_with("ok: 2 profiles"), "{}", run.stdout);
}
