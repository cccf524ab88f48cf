//! Secret values never leave strata except through `strata render`: plans in every format,
//! `strata diff`, `strata drift` and apply errors show that a key changed, as a keyed hash,
//! never the value (the daemon's API, view, statuses and logs are in `tests/daemon.rs`).

use crate::apiserver;
use crate::common;

use std::path::Path;
use std::process::Command;

use apiserver::ApiServer;
use common::Repo;
use common::secrets::{self, MARKER, assert_no_leak, b64};
use serde_json::Value;

/// The marker on the line of `text` that sets `key` after `sign` (`-` or `+`) and `indent`.
#[track_caller]
fn marker_of(text: &str, sign: &str, key: &str) -> String {
    let line = text
        .lines()
        .find(|l| l.starts_with(sign) && l[sign.len()..].trim_start().starts_with(&format!("{key}: {MARKER}")))
        .unwrap_or_else(|| panic!("no `{sign} {key}: {MARKER}…` line in:\n{text}"));
    line[line.find(MARKER).unwrap()..].trim_end_matches(['\'', '"']).to_string()
}

fn kubectl(kubeconfig: &Path, args: &[&str]) -> String {
    let out = Command::new("kubectl").arg("--kubeconfig").arg(kubeconfig).args(args).output().expect("kubectl runs");
    assert!(out.status.success(), "kubectl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn plans_show_which_secret_keys_changed_and_never_the_values() {
    let repo = Repo::example();
    secrets::add(&repo);
    repo.commit("credentials");
    secrets::rotate(&repo);
    repo.commit("rotate the credentials, relabel app-config");

    for format in ["text", "markdown", "json"] {
        let run = repo.strata(&["plan", "--format", format]).ok();
        assert_no_leak(&format!("plan --format {format}"), &format!("{}{}", run.stdout, run.stderr));
        assert!(run.stdout.contains(MARKER), "{format}:\n{}", run.stdout);
    }

    let run = repo.strata(&["plan", "--format", "json"]).ok();
    let plan: Value = serde_json::from_str(&run.stdout).unwrap();
    let cluster = plan["clusters"].as_array().unwrap().iter().find(|c| c["cluster"] == "aws-cluster").unwrap();
    let diff_of = |id: &str| -> String {
        let object = cluster["objects"].as_array().unwrap().iter().find(|o| {
            format!(
                "{}/{}/{}",
                o["id"]["kind"].as_str().unwrap(),
                o["id"]["namespace"].as_str().unwrap_or(""),
                o["id"]["name"].as_str().unwrap()
            ) == id
        });
        object.unwrap_or_else(|| panic!("{id} changes in {cluster}"))["diff"].as_str().unwrap().to_string()
    };

    // Changed values: a different marker on each side.
    let credentials = diff_of("Secret/hello-universe/app-credentials");
    for key in ["password", "token"] {
        assert_ne!(marker_of(&credentials, "-", key), marker_of(&credentials, "+", key), "{credentials}");
    }
    // The same value in base64 `data` and in plain `stringData` has the same marker.
    assert_eq!(marker_of(&credentials, "-", "password"), marker_of(&credentials, " ", "again"), "{credentials}");

    // A value that did not change while its object did: context with its marker, no change line.
    let config = diff_of("Secret/hello-universe/app-config");
    assert!(config.contains("-    team: payments") && config.contains("+    team: billing"), "{config}");
    assert!(config.contains("-immutable: false\n+immutable: true"), "{config}");
    assert!(config.lines().any(|l| l.starts_with("   apiKey: <redacted hmac:")), "{config}");
    assert!(!config.lines().any(|l| (l.starts_with('-') || l.starts_with('+')) && l.contains("apiKey")), "{config}");

    // A custom resource's field declared sensitive in the profile layer.
    let database = diff_of("Database/hello-universe/orders");
    assert_ne!(marker_of(&database, "-", "password"), marker_of(&database, "+", "password"), "{database}");

    // `strata render` exists to produce the manifests: it shows the real values.
    let rendered = repo.strata(&["render", "aws-cluster"]).ok().stdout;
    for value in [b64(secrets::NEW_PASSWORD), secrets::NEW_TOKEN.into(), secrets::NEW_DB_PASSWORD.into()] {
        assert!(rendered.contains(&value), "render shows {value}:\n{rendered}");
    }
}

#[test]
fn a_new_cluster_and_a_pull_request_comment_show_no_values_either() {
    // Objects of a new cluster are listed; objects added to a cluster are diffed in full.
    let repo = Repo::example();
    let before = repo.commit("start");
    secrets::add(&repo);
    repo.write(
        "clusters/aws-new.yaml",
        "apiVersion: strata.dev/v1\nkind: Cluster\nmetadata: { name: aws-new }\nspec:\n  profile: { name: aws-profile, version: \"1.0.0\" }\n",
    );
    repo.commit("credentials, and a new cluster");
    let run = repo.strata(&["plan", "--base", &before, "--format", "markdown"]).ok();
    assert_no_leak("plan of added objects", &run.stdout);
    assert!(run.stdout.contains("+  password: <redacted hmac:"), "{}", run.stdout);
}

/// A host config pointing aws-cluster at `kubeconfig`.
fn host_config(dir: &Path, kubeconfig: &Path) -> String {
    let path = dir.join("strata.yaml");
    std::fs::write(
        &path,
        format!(
            "targets:\n  aws-cluster: {{ kubeconfig: {} }}\napply: {{ health_timeout: 5s }}\n",
            kubeconfig.display()
        ),
    )
    .unwrap();
    path.to_str().unwrap().to_string()
}

#[test]
fn diff_drift_and_refused_applies_against_a_cluster_show_no_values() {
    let server = ApiServer::start();
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = server.kubeconfig(dir.path());
    let config = host_config(dir.path(), &kubeconfig);
    let repo = Repo::example();
    secrets::add(&repo);
    repo.commit("credentials");
    let run = repo.strata(&["apply", "aws-cluster", "--config", &config]).ok();
    assert_no_leak("apply", &run.stdout);
    let live = server.object("secrets", Some("hello-universe"), "app-credentials").unwrap();
    assert_eq!(live["data"]["password"], b64(secrets::PASSWORD), "the cluster has the real value");

    // `strata diff` after a rotation: which keys change, not to what.
    secrets::rotate(&repo);
    repo.commit("rotate");
    let diff = repo.strata(&["diff", "aws-cluster", "--config", &config]);
    assert_eq!(diff.code, 3, "{}{}", diff.stdout, diff.stderr);
    assert_no_leak("diff", &format!("{}{}", diff.stdout, diff.stderr));
    assert_ne!(marker_of(&diff.stdout, "-", "password"), marker_of(&diff.stdout, "+", "password"), "{}", diff.stdout);
    assert!(diff.stdout.contains("Database.example.com/hello-universe/orders"), "{}", diff.stdout);
    repo.strata(&["apply", "aws-cluster", "--config", &config]).ok();

    // Someone edits the live objects (and an annotation strata sets, next to one that copies the
    // value as client-side `kubectl apply` does).
    let last_applied = serde_json::json!({"data": {"password": b64(secrets::LIVE_PASSWORD)}}).to_string();
    let patch = serde_json::json!({
        "metadata": {"annotations": {
            "kubectl.kubernetes.io/last-applied-configuration": last_applied,
            "strata.dev/profile-version": "0.0.1"
        }},
        "data": {"password": b64(secrets::LIVE_PASSWORD)}
    });
    kubectl(
        &kubeconfig,
        &["patch", "secret", "app-credentials", "-n", "hello-universe", "--type", "merge", "-p", &patch.to_string()],
    );
    let patch = serde_json::json!({"spec": {"password": secrets::LIVE_DB_PASSWORD}});
    kubectl(
        &kubeconfig,
        &[
            "patch",
            "databases.example.com",
            "orders",
            "-n",
            "hello-universe",
            "--type",
            "merge",
            "-p",
            &patch.to_string(),
        ],
    );

    let drift = repo.strata(&["drift", "aws-cluster", "--policy", "report", "--config", &config]);
    assert_eq!(drift.code, 3, "{}{}", drift.stdout, drift.stderr);
    assert_no_leak("drift", &format!("{}{}", drift.stdout, drift.stderr));
    for field in [
        "Secret/hello-universe/app-credentials (layer hello-universe): /data/password: live \"<redacted hmac:",
        "Database.example.com/hello-universe/orders (layer hello-universe): /spec/password: live \"<redacted hmac:",
    ] {
        assert!(drift.stdout.contains(field), "{field} in:\n{}", drift.stdout);
    }
    let json = repo.strata(&["drift", "aws-cluster", "--policy", "report", "--format", "json", "--config", &config]);
    assert_no_leak("drift --format json", &json.stdout);
    let rows: Value = serde_json::from_str(&json.stdout).unwrap();
    let finding = rows[0]["findings"].as_array().unwrap().iter().find(|f| f["path"] == "/data/password").unwrap();
    assert!(
        finding["live"].as_str().unwrap().starts_with(MARKER) && finding["live"] != finding["desired"],
        "{finding}"
    );
    let diff = repo.strata(&["diff", "aws-cluster", "--config", &config]);
    assert_no_leak("diff of drifted objects", &diff.stdout);
    assert!(
        diff.stdout.contains("kubectl.kubernetes.io/last-applied-configuration: <redacted hmac:"),
        "{}",
        diff.stdout
    );

    // The cluster refuses an object and its error quotes the value: the quote is replaced.
    let corrected = repo.strata(&["drift", "aws-cluster", "--policy", "correct", "--config", &config]).ok();
    assert_no_leak("drift correction", &corrected.stdout);
    server.reject("databases", "/spec/password", "must be at most 8 characters");
    repo.edit("packs/hello-universe/manifests/credentials.yaml", "size: 1", "size: 2");
    repo.commit("a bigger database");
    for args in [
        &["apply", "aws-cluster"][..],
        &["apply", "aws-cluster", "--format", "json"],
        &["apply", "aws-cluster", "--dry-run"],
    ] {
        let mut all = args.to_vec();
        all.extend(["--config", &config]);
        let run = repo.strata(&all);
        assert_eq!(run.code, 1, "{args:?}: {}{}", run.stdout, run.stderr);
        let output = format!("{}{}", run.stdout, run.stderr);
        assert_no_leak(&format!("{args:?}"), &output);
        assert!(output.contains("password: Invalid value:") && output.contains(MARKER), "{args:?}: {output}");
    }
}

/// The ways a Secret can be written that a literal match on `apiVersion: v1` misses: the core
/// group spelled `/v1` is refused (the API server would store it as a Secret), and Secrets in a
/// List in a List are objects of their own, redacted in plans and written one by one.
#[test]
fn secrets_in_other_spellings_and_nested_lists_never_show_their_values() {
    let repo = Repo::example();
    repo.write(
        "packs/hello-universe/manifests/slash.yaml",
        &format!(
            "apiVersion: /v1\nkind: Secret\nmetadata: {{ name: slash }}\nstringData: {{ password: {} }}\n",
            secrets::PASSWORD
        ),
    );
    repo.commit("a Secret in the core group spelled /v1");
    let run = repo.strata(&["validate"]);
    assert_eq!(run.code, 1, "{}", run.stdout);
    assert!(
        run.stderr.contains("error[name]: packs/hello-universe/manifests/slash.yaml:1: profile aws-profile@1.0.0 layer hello-universe: apiVersion `/v1` is invalid: it must be the core group's version alone, without a slash: `v1`"),
        "{}",
        run.stderr
    );
    assert_no_leak("validate", &run.stderr);
    repo.remove("packs/hello-universe/manifests/slash.yaml");
    let before = repo.commit("no secrets yet");

    repo.write(
        "packs/hello-universe/manifests/nested.yaml",
        &format!(
            "apiVersion: v1\nkind: List\nitems:\n- apiVersion: v1\n  kind: List\n  items:\n  - apiVersion: v1\n    kind: ConfigMap\n    metadata: {{ name: plain }}\n  - apiVersion: v1\n    kind: SecretList\n    items:\n    - apiVersion: v1\n      kind: Secret\n      metadata: {{ name: nested }}\n      stringData: {{ token: {} }}\n",
            secrets::TOKEN
        ),
    );
    repo.commit("a Secret in a List in a List");
    for format in ["text", "markdown", "json"] {
        let run = repo.strata(&["plan", "--base", &before, "--format", format]).ok();
        assert_no_leak(&format!("plan --format {format}"), &run.stdout);
        assert!(run.stdout.contains("Secret/hello-universe/nested"), "{format}: {}", run.stdout);
    }
    let out = tempfile::tempdir().unwrap();
    let config = out.path().join("strata.yaml");
    std::fs::write(&config, format!("targets:\n  aws-cluster: {{ directory: {} }}\n", out.path().join("t").display()))
        .unwrap();
    let run = repo.strata(&["apply", "aws-cluster", "--config", config.to_str().unwrap()]).ok();
    assert_no_leak("apply", &run.stdout);
    let secret = std::fs::read_to_string(out.path().join("t/hello-universe/secret.nested.yaml")).unwrap();
    assert!(secret.starts_with("apiVersion: v1\nkind: Secret\n"), "written as an object of its own:\n{secret}");
    assert!(out.path().join("t/hello-universe/configmap.plain.yaml").exists());
}

/// A digest over Secret values is keyed: it tells two sets apart, but cannot be tested against
/// guessed values. Sets without Secrets keep digests anyone can recompute.
#[test]
fn digests_over_secret_values_are_keyed_and_others_are_not() {
    let repo = Repo::example();
    secrets::add(&repo);
    repo.commit("credentials");
    let digest = |cluster: &str| -> String {
        let out = repo.strata(&["render", cluster]).ok().stdout;
        out.lines().find(|l| l.starts_with("# digest ")).unwrap().to_string()
    };
    assert_ne!(digest("aws-cluster"), digest("aws-cluster"), "each process keys its own");
    assert_eq!(digest("edge-berlin"), digest("edge-berlin"), "no Secret: a plain content hash");
}

/// strata's own home — the namespace of its inventories, its own kinds, cluster Secrets — is no
/// place for a repository to write, unless the host config lets it.
#[test]
fn objects_in_strata_s_own_home_are_refused_unless_the_host_allows_the_namespace() {
    let repo = Repo::example();
    repo.write(
        "packs/hello-universe/manifests/home.yaml",
        "apiVersion: v1\nkind: ConfigMap\nmetadata: { name: strata-inventory-aws-cluster, namespace: strata-system }\n---\napiVersion: v1\nkind: Namespace\nmetadata: { name: strata-system }\n---\napiVersion: strata.dev/v1\nkind: ClusterState\nmetadata: { name: aws-cluster, namespace: strata }\n---\napiVersion: v1\nkind: Secret\nmetadata: { name: prod, labels: { strata.dev/target: prod } }\n",
    );
    repo.commit("into strata's home");
    let run = repo.strata(&["validate"]);
    assert_eq!(run.code, 1, "{}", run.stdout);
    let at = "packs/hello-universe/manifests/home.yaml";
    let layer = "profile aws-profile@1.0.0 layer hello-universe";
    for expected in [
        format!(
            "error[reserved]: {at}:1: {layer}: ConfigMap/strata-system/strata-inventory-aws-cluster is in namespace strata-system, where strata keeps its own state"
        ),
        format!(
            "error[reserved]: {at}:4: {layer}: Namespace/strata-system is the namespace strata keeps its own state in"
        ),
        format!("error[reserved]: {at}:8: {layer}: ClusterState.strata.dev/strata/aws-cluster is strata's own kind"),
        format!("error[reserved]: {at}:12: {layer}: Secret/hello-universe/prod is labelled strata.dev/target"),
    ] {
        assert!(run.stderr.contains(&expected), "expected {expected:?} in:\n{}", run.stderr);
    }

    repo.write(
        "packs/hello-universe/manifests/home.yaml",
        "apiVersion: v1\nkind: ConfigMap\nmetadata: { name: mine, namespace: strata-system }\n",
    );
    repo.commit("only a ConfigMap there");
    let out = tempfile::tempdir().unwrap();
    let config = out.path().join("strata.yaml");
    let targets = format!("targets:\n  aws-cluster: {{ directory: {} }}\n", out.path().join("t").display());
    std::fs::write(&config, &targets).unwrap();
    let refused = repo.strata(&["apply", "aws-cluster", "--config", config.to_str().unwrap()]);
    assert_eq!(refused.code, 1, "{}", refused.stdout);
    assert!(refused.stderr.contains("apply.allow_namespaces"), "says how to allow it: {}", refused.stderr);
    std::fs::write(&config, format!("apply: {{ allow_namespaces: [strata-system] }}\n{targets}")).unwrap();
    repo.strata(&["apply", "aws-cluster", "--config", config.to_str().unwrap()]).ok();
    assert!(out.path().join("t/strata-system/configmap.mine.yaml").exists());
}

/// kustomize prints the node a replacement does not fit, Secret values included: strata shows its
/// message by line, bounded, and without them — values of Secrets in the layer's manifests and
/// of its secretGenerators, base64 or not.
#[test]
fn a_failing_kustomize_quotes_no_secret_value() {
    let repo = Repo::example();
    repo.write(
        "profiles/kz/1.0.0/profile.yaml",
        "apiVersion: strata.dev/v1\nkind: Profile\nmetadata: { name: kz, version: 1.0.0 }\nspec:\n  layers:\n    - { name: app, type: kustomize, source: packs/kz, namespace: kz }\n",
    )
    .write(
        "clusters/kz.yaml",
        "apiVersion: strata.dev/v1\nkind: Cluster\nmetadata: { name: kz }\nspec:\n  profile: { name: kz, version: 1.0.0 }\n",
    )
    .write(
        "packs/kz/secret.yaml",
        &format!("apiVersion: v1\nkind: Secret\nmetadata: {{ name: s }}\nstringData: {{ token: {} }}\n", secrets::TOKEN),
    );
    for (what, kustomization) in [
        (
            "a Secret's stringData",
            "resources: [secret.yaml]\nreplacements:\n- source: { kind: Secret, name: s, fieldPath: metadata.name }\n  targets:\n  - select: { kind: Secret, name: s }\n    fieldPaths: [stringData.token.x]\n".to_string(),
        ),
        (
            "a generated Secret's data",
            format!(
                "secretGenerator:\n- name: g\n  options: {{ disableNameSuffixHash: true }}\n  literals: [password={}]\nreplacements:\n- source: {{ kind: Secret, name: g, fieldPath: metadata.name }}\n  targets:\n  - select: {{ kind: Secret, name: g }}\n    fieldPaths: [data.password.x]\n",
                secrets::PASSWORD
            ),
        ),
    ] {
        repo.write("packs/kz/kustomization.yaml", &kustomization);
        repo.commit(what);
        let run = repo.strata(&["validate"]);
        assert_eq!(run.code, 1, "{what}: {}", run.stdout);
        assert!(run.stderr.contains("error[tool]") && run.stderr.contains("unable to find field"), "{what}: {}", run.stderr);
        assert_no_leak(what, &run.stderr);
        let plan = repo.strata(&["plan", "--format", "json"]);
        assert_no_leak(what, &format!("{}{}", plan.stdout, plan.stderr));
    }
}
