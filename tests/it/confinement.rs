//! Object identities from a repository never become paths or URLs outside their place: names,
//! namespaces and kinds are checked as the API server checks them, the directory target confines
//! itself, and the kube target encodes every path segment.

use crate::apiserver;
use crate::common;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use apiserver::ApiServer;
use common::Repo;

const UI: &str = "packs/hello-universe/manifests/ui.yaml";

/// Every path below `dir`, links not followed.
fn tree(dir: &Path) -> BTreeSet<PathBuf> {
    let mut out = BTreeSet::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if std::fs::symlink_metadata(&path).unwrap().is_dir() {
                stack.push(path.clone());
            }
            out.insert(path);
        }
    }
    out
}

/// Hostile identities, each escaping only into the test's own temporary directory (so a
/// regression cannot scribble over the host).
const HOSTILE: &str = "apiVersion: v1
kind: ConfigMap
metadata: { name: ns-escape, namespace: ../../escaped }
---
apiVersion: v1
kind: ConfigMap
metadata: { name: ../../../escaped-name, namespace: hello-universe }
---
apiVersion: v1
kind: ../../../escaped-kind
metadata: { name: k, namespace: hello-universe }
---
apiVersion: ../../v1
kind: ConfigMap
metadata: { name: group, namespace: hello-universe }
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata: { name: .. }
";

#[test]
fn hostile_names_are_refused_at_render_with_file_line_object_and_rule() {
    let repo = Repo::plain_example();
    repo.write("packs/hello-universe/manifests/evil.yaml", HOSTILE);
    let run = repo.strata(&["validate"]);
    assert_eq!(run.code, 1, "{}", run.stderr);
    let at = "packs/hello-universe/manifests/evil.yaml";
    let layer = "profile aws-profile@1.0.0 layer hello-universe";
    for expected in [
        format!(
            "error[name]: {at}:1: {layer}: metadata.namespace `../../escaped` of a ConfigMap is invalid: it must be a DNS-1123 label"
        ),
        format!(
            "error[name]: {at}:4: {layer}: metadata.name `../../../escaped-name` of a ConfigMap is invalid: it must be a DNS-1123 subdomain"
        ),
        format!("error[name]: {at}:8: {layer}: kind `../../../escaped-kind` is invalid: it must be an identifier"),
        format!(
            "error[name]: {at}:12: {layer}: apiVersion `../../v1` is invalid: it must be empty (the core group) or a DNS-1123 subdomain"
        ),
        format!(
            "error[name]: {at}:16: {layer}: metadata.name `..` of a ClusterRole is invalid: it must be a path segment"
        ),
    ] {
        assert!(run.stderr.contains(&expected), "expected {expected:?} in:\n{}", run.stderr);
    }
    assert!(run.stderr.contains("help: rename the object"), "{}", run.stderr);

    // What the API server accepts still renders.
    repo.remove("packs/hello-universe/manifests/evil.yaml").write(
        "packs/hello-universe/manifests/fine.yaml",
        "apiVersion: rbac.authorization.k8s.io/v1\nkind: ClusterRole\nmetadata: { name: 'system:strata:reader' }\n---\napiVersion: v1\nkind: ConfigMap\nmetadata: { name: a.b-c.d }\n---\napiVersion: example.com/v1beta1\nkind: Web-App\nmetadata: { name: w }\n",
    );
    let out = repo.strata(&["render", "aws-cluster"]).ok().stdout;
    assert!(
        out.contains("name: system:strata:reader") && out.contains("name: a.b-c.d") && out.contains("kind: Web-App")
    );
}

#[test]
fn a_hostile_repository_writes_nothing_outside_a_directory_target() {
    let outer = tempfile::tempdir().unwrap();
    let root = outer.path().join("targets/rendered");
    let config = outer.path().join("strata.yaml");
    std::fs::write(&config, format!("targets:\n  aws-cluster: {{ directory: {} }}\n", root.display())).unwrap();
    let before = tree(outer.path());

    let repo = Repo::example();
    repo.write("packs/hello-universe/manifests/evil.yaml", HOSTILE);
    repo.commit("hostile names");
    let run = repo.strata(&["apply", "aws-cluster", "--config", config.to_str().unwrap()]);
    assert_eq!(run.code, 1, "{}\n{}", run.stdout, run.stderr);
    assert!(run.stderr.contains("error[name]"), "{}", run.stderr);
    let after = tree(outer.path());
    let outside: Vec<_> = after.difference(&before).filter(|p| !p.starts_with(&root)).collect();
    assert!(outside.is_empty(), "written outside the target: {outside:?}");
    assert!(!root.exists(), "a repository that does not render applies nothing");
}

/// Someone with access to the cluster edits strata's inventory: its names reach the API only as
/// encoded path segments, never as extra segments of the request path.
#[test]
fn inventory_names_reach_the_api_server_only_as_encoded_path_segments() {
    let server = ApiServer::start();
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = server.kubeconfig(dir.path());
    let config = dir.path().join("strata.yaml");
    std::fs::write(
        &config,
        format!(
            "targets:\n  aws-cluster: {{ kubeconfig: {} }}\napply: {{ health_timeout: 5s }}\n",
            kubeconfig.display()
        ),
    )
    .unwrap();
    let repo = Repo::example();
    let apply = || repo.strata(&["apply", "aws-cluster", "--config", config.to_str().unwrap()]);
    apply().ok();

    let inventory = server.object("configmaps", Some("strata-system"), "strata-inventory-aws-cluster").unwrap();
    let mut entries: serde_json::Value =
        serde_json::from_str(inventory["data"]["inventory.json"].as_str().unwrap()).unwrap();
    entries["entries"].as_array_mut().unwrap().push(serde_json::json!({
        "id": "/ConfigMap/hello-universe/x/../../../kube-system/configmaps/victim?dryRun=All#",
        "api_version": "v1",
        "created": true,
    }));
    let patch = serde_json::json!({"data": {"inventory.json": entries.to_string()}});
    let out = Command::new("kubectl")
        .arg("--kubeconfig")
        .arg(&kubeconfig)
        .args(["patch", "configmap", "strata-inventory-aws-cluster", "-n", "strata-system", "--type", "merge", "-p"])
        .arg(patch.to_string())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));

    server.clear_requests();
    repo.edit(UI, "replicas: {{ values.replicas }}", "replicas: 2");
    repo.commit("an edit, so the inventory is read and pruned against");
    apply().ok();
    let paths: Vec<String> = server.requests().into_iter().map(|r| r.path).collect();
    assert!(
        paths
            .iter()
            .any(|p| p.ends_with("/configmaps/x%2F..%2F..%2F..%2Fkube-system%2Fconfigmaps%2Fvictim%3FdryRun%3DAll%23")),
        "{paths:#?}"
    );
    assert!(paths.iter().all(|p| !p.contains("/../") && !p.contains("/kube-system/")), "{paths:#?}");
}

/// `git <args>` in `dir`, with `input` on stdin; its stdout.
fn git_raw(dir: &Path, args: &[&str], input: &[u8]) -> String {
    use std::io::Write as _;
    let mut child = Command::new("git")
        .args(args)
        .current_dir(dir)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(input).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "git {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

/// A tree object written as raw bytes by `git hash-object -t tree --literally`, which takes any
/// names: `entries` are (mode, name, object id).
fn raw_tree(dir: &Path, entries: &[(&str, &[u8], &str)]) -> String {
    let mut raw = Vec::new();
    for (mode, name, oid) in entries {
        raw.extend_from_slice(mode.trim_start_matches('0').as_bytes());
        raw.push(b' ');
        raw.extend_from_slice(name);
        raw.push(0);
        raw.extend((0..oid.len()).step_by(2).map(|i| u8::from_str_radix(&oid[i..i + 2], 16).unwrap()));
    }
    git_raw(dir, &["hash-object", "-t", "tree", "--literally", "-w", "--stdin"], &raw)
}

/// Commits, on top of HEAD, HEAD's tree with `extra` entries added at its root, as a push from
/// a hostile client would: made of raw objects, so git's own checks never see them.
fn crafted_commit(repo: &Repo, extra: &[(&str, &[u8], &str)]) -> String {
    let listing = git_raw(repo.path(), &["ls-tree", "HEAD"], b"");
    let mut entries: Vec<(String, Vec<u8>, String)> = listing
        .lines()
        .map(|line| {
            let (meta, name) = line.split_once('\t').unwrap();
            let parts: Vec<&str> = meta.split(' ').collect();
            (parts[0].to_string(), name.as_bytes().to_vec(), parts[2].to_string())
        })
        .collect();
    entries.extend(extra.iter().map(|(m, n, o)| (m.to_string(), n.to_vec(), o.to_string())));
    let borrowed: Vec<(&str, &[u8], &str)> =
        entries.iter().map(|(m, n, o)| (m.as_str(), n.as_slice(), o.as_str())).collect();
    let tree = raw_tree(repo.path(), &borrowed);
    let env = [
        ("GIT_AUTHOR_NAME", "x"),
        ("GIT_AUTHOR_EMAIL", "x@x"),
        ("GIT_COMMITTER_NAME", "x"),
        ("GIT_COMMITTER_EMAIL", "x@x"),
    ];
    let mut command = Command::new("git");
    command.args(["commit-tree", &tree, "-p", "HEAD", "-m", "crafted"]).current_dir(repo.path()).envs(env);
    let out = command.output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let commit = String::from_utf8(out.stdout).unwrap().trim().to_string();
    git_raw(repo.path(), &["update-ref", "refs/heads/main", &commit], b"");
    commit
}

/// A kustomize layer beside the example's, so reading the revision writes a checkout for kustomize.
fn with_kustomize_layer(repo: &Repo) {
    repo.write(
        "profiles/kz/1.0.0/profile.yaml",
        "apiVersion: strata.dev/v1\nkind: Profile\nmetadata: { name: kz, version: 1.0.0 }\nspec:\n  layers:\n    - { name: app, type: kustomize, source: packs/kz, namespace: kz }\n",
    )
    .write("packs/kz/kustomization.yaml", "resources: [cm.yaml]\n")
    .write("packs/kz/cm.yaml", "apiVersion: v1\nkind: ConfigMap\nmetadata: { name: kz }\ndata: { a: b }\n")
    .write(
        "clusters/kz.yaml",
        "apiVersion: strata.dev/v1\nkind: Cluster\nmetadata: { name: kz }\nspec:\n  profile: { name: kz, version: 1.0.0 }\n",
    );
    repo.commit("a kustomize layer");
}

/// Tree entries no `git add` makes — `..`, names holding `/`, `.git`, two entries of one name —
/// refuse the whole revision in every command that reads it, naming the commit and the entry; and
/// the plan and the render of that revision say the same.
#[test]
fn crafted_tree_entries_refuse_the_revision_in_every_command_naming_commit_and_path() {
    let repo = Repo::example();
    with_kustomize_layer(&repo);
    let blob = git_raw(repo.path(), &["hash-object", "-w", "--stdin"], b"chosen bytes\n");
    let packs = git_raw(repo.path(), &["rev-parse", "HEAD:packs"], b"");
    // The variant that shows a layer other content than the plan reads: a second `packs` whose
    // kustomization makes a ClusterRoleBinding to cluster-admin.
    let evil_cm = git_raw(
        repo.path(),
        &["hash-object", "-w", "--stdin"],
        b"apiVersion: rbac.authorization.k8s.io/v1\nkind: ClusterRoleBinding\nmetadata: { name: pwn }\nroleRef: { apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: cluster-admin }\nsubjects: [{ kind: Group, name: 'system:authenticated', apiGroup: rbac.authorization.k8s.io }]\n",
    );
    let kustomization = git_raw(repo.path(), &["hash-object", "-w", "--stdin"], b"resources: [cm.yaml]\n");
    let evil_kz =
        raw_tree(repo.path(), &[("100644", b"cm.yaml", &evil_cm), ("100644", b"kustomization.yaml", &kustomization)]);
    let evil_packs = raw_tree(repo.path(), &[("40000", b"kz", &evil_kz)]);
    type Case<'a> = (&'a str, Vec<(&'a str, &'a [u8], &'a str)>, &'a str);
    let cases: Vec<Case> = vec![
        ("dot-dot", vec![("40000", b"..", &packs)], "tree entry `..`: an entry named `..`"),
        (
            "a path as a name",
            vec![("100644", b"a/b/../../redaction.key", &blob)],
            "tree entry `a/b/../../redaction.key`: an entry name holding `/`",
        ),
        ("dot-git", vec![("40000", b".GIT", &packs)], "tree entry `.GIT`: an entry named `.git`"),
        ("a second packs", vec![("40000", b"packs", &evil_packs)], "tree entry `packs`: two entries with this name"),
    ];
    let good = git_raw(repo.path(), &["rev-parse", "HEAD"], b"");
    for (what, extra, expected) in cases {
        git_raw(repo.path(), &["update-ref", "refs/heads/main", &good], b"");
        let commit = crafted_commit(&repo, &extra);
        let short = &commit[..12];
        let runs = [
            repo.strata(&["validate"]),
            repo.strata(&["render", "kz"]),
            repo.strata(&["plan", "--base", &good, "--head", &commit]),
        ];
        for run in &runs {
            assert_eq!(run.code, 1, "{what}: {}\n{}", run.stdout, run.stderr);
            assert!(run.stderr.contains("error[path]"), "{what}: {}", run.stderr);
            assert!(run.stderr.contains(&format!("commit {short}")), "{what}: {}", run.stderr);
            assert!(run.stderr.contains(expected), "{what}: expected {expected:?} in {}", run.stderr);
            assert!(!run.stdout.contains("pwn"), "{what}: the crafted content is never read");
        }
        assert_eq!(runs[1].stderr, runs[2].stderr, "{what}: the plan and the render refuse alike");
    }
}

/// The daemon following a repository into which a crafted commit is pushed: the revision is
/// rejected before anything of it is written, its state directory is untouched, the last good
/// revision keeps serving, and the next sound commit applies.
#[test]
fn a_crafted_commit_pushed_to_a_running_daemon_writes_nothing_and_is_rejected() {
    use common::daemon::{Daemon, directory_targets, example_targets, file, local};
    use std::time::Duration;
    let repo = Repo::example();
    with_kustomize_layer(&repo);
    let targets = format!("{}{}", example_targets(), directory_targets(&[("kz", "kz")]));
    let daemon = Daemon::start(&local(&repo), &targets);
    let cm = daemon.out("kz/kz/configmap.kz.yaml");
    daemon.wait_for("applied", Duration::from_secs(20), |_| file(&cm).contains("a: b"));
    let state = daemon.dir.path().join("state");
    let key = std::fs::read(state.join("redaction.key")).unwrap();
    let before = tree(daemon.dir.path());

    let blob = git_raw(repo.path(), &["hash-object", "-w", "--stdin"], b"chosen bytes\n");
    let up = raw_tree(repo.path(), &[("100644", b"redaction.key", &blob)]);
    let mut nested = up.clone();
    for _ in 0..8 {
        nested = raw_tree(repo.path(), &[("40000", b"..", &nested)]);
    }
    let crafted = crafted_commit(
        &repo,
        &[
            ("40000", b"..", &nested),
            ("100644", b"../../../state/redaction.key", &blob),
            ("100644", b"../../redaction.key", &blob),
        ],
    );
    daemon.wait_for("the crafted revision rejected", Duration::from_secs(20), |d| {
        let revision: serde_json::Value = serde_json::from_str(&d.get("/api/v1/revision").1).unwrap_or_default();
        revision["head"] == crafted.as_str() && revision["verdict"] == "rejected"
    });
    let revision = daemon.get("/api/v1/revision").1;
    assert!(revision.contains("tree entry"), "{revision}");
    assert_eq!(std::fs::read(state.join("redaction.key")).unwrap(), key, "the redaction key is untouched");
    let new: Vec<_> = tree(daemon.dir.path()).difference(&before).filter(|p| !p.starts_with(&state)).cloned().collect();
    assert!(new.is_empty(), "written: {new:?}");
    let walked = tree(&state);
    assert!(!walked.iter().any(|p| p.ends_with("chosen")), "{walked:?}");
    assert!(file(&cm).contains("a: b"), "the last good revision keeps serving");

    git_raw(repo.path(), &["update-ref", "refs/heads/main", &format!("{crafted}~1")], b"");
    repo.edit("packs/kz/cm.yaml", "a: b", "a: c");
    repo.commit("sound again");
    daemon.wait_for("the next sound commit applied", Duration::from_secs(20), |_| file(&cm).contains("a: c"));
}
