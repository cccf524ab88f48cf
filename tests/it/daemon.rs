//! `strata run` end to end: a real Git repository, the daemon binary, its CLI (`status`,
//! `approve`), webhooks over HTTP, directory targets and the API server stand-in.

use crate::apiserver;
use crate::common;
use crate::forge;
use crate::githttp;

use std::io::Read;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use apiserver::{ApiServer, Rollout};
use common::Repo;
use common::daemon::*;
use serde_json::Value;

/// The strata notes on `revision` in the repository whose Git directory is `git_dir`.
fn notes_on(git_dir: &Path, revision: &str) -> String {
    let out = Command::new("git")
        .arg("--git-dir")
        .arg(git_dir)
        .args(["log", "-1", "--notes=strata", "--format=%N", revision])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The value of one series in a Prometheus exposition (every series exists from the start, at
/// zero: a test of an event reads its count).
fn counted(metrics: &str, series: &str) -> f64 {
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.split_whitespace().next()?.parse().ok())
        .unwrap_or_else(|| panic!("no {series} in:\n{metrics}"))
}

#[test]
fn the_tutorial_through_the_daemon() {
    let repo = Repo::example();
    let daemon = Daemon::start(&local(&repo), &example_targets());
    let ui = daemon.out("aws-cluster/hello-universe/deployment.ui.yaml");
    daemon.wait_for("aws-cluster applied", Duration::from_secs(10), |_| file(&ui).contains("replicas: 1"));

    // Tag and filter.
    let run = daemon.strata(&["status", "--tag", "service:hello-universe-frontend"]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    let lines: Vec<&str> = run.stdout.lines().collect();
    assert_eq!(lines.len(), 3, "{}", run.stdout);
    assert!(
        lines[1].starts_with("aws-cluster  aws-profile@1.0.0") && lines[2].starts_with("aws-staging"),
        "{}",
        run.stdout
    );

    // A new version: aws-cluster moves to 1.1.0 as soon as it is committed (a cluster-file change).
    let started = Instant::now();
    repo.edit(AWS_CLUSTER, "version: \"1.0.0\"", "version: \"1.1.0\"");
    repo.commit("aws-cluster: 1.1.0");
    let kubecost = daemon.out("aws-cluster/kubecost/deployment.cost-analyzer-cost-analyzer.yaml");
    daemon.wait_for("kubecost on aws-cluster", Duration::from_secs(5), |_| kubecost.exists());
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "a local commit is applied within seconds, took {:?}",
        started.elapsed()
    );

    // And back: kubecost is pruned.
    repo.edit(AWS_CLUSTER, "version: \"1.1.0\"", "version: \"1.0.0\"");
    repo.commit("aws-cluster: back to 1.0.0");
    daemon.wait_for("kubecost pruned", Duration::from_secs(5), |_| !kubecost.exists());

    // An override touches only its cluster.
    let staging = daemon.out("aws-staging/hello-universe/deployment.ui.yaml");
    let berlin = daemon.out("edge-berlin/edge/deployment.gateway.yaml");
    let (staging_before, berlin_before) = (file(&staging), file(&berlin));
    let history_before = daemon.cluster("edge-berlin")["history"].as_array().map(Vec::len);
    repo.edit("clusters/aws-staging.yaml", "hello-universe: { replicas: 2 }", "hello-universe: { replicas: 4 }");
    repo.commit("aws-staging: four replicas");
    daemon.wait_for("aws-staging at 4 replicas", Duration::from_secs(5), |_| file(&staging).contains("replicas: 4"));
    assert_ne!(file(&staging), staging_before);
    assert_eq!(file(&berlin), berlin_before, "edge-berlin untouched");
    assert_eq!(daemon.cluster("edge-berlin")["history"].as_array().map(Vec::len), history_before);

    // An in-place edit of 1.0.0 on aws-cluster (updates: manual) is held as a pending update.
    repo.edit(AWS_1_0_0, "replicas: 1", "replicas: 3");
    let edit = repo.commit("aws-profile 1.0.0: three replicas");
    daemon.wait_for("a pending update", Duration::from_secs(5), |d| {
        d.cluster("aws-cluster")["pending"]["head_revision"] == edit.as_str()
    });
    daemon.wait_settled(&edit);
    assert!(file(&ui).contains("replicas: 1"), "not applied before approval");
    let run = daemon.strata(&["status", "aws-cluster", "--diff"]);
    assert!(
        run.stdout.contains("pending update aws-profile@1.0.0 — approve: strata approve aws-cluster"),
        "{}",
        run.stdout
    );
    assert!(run.stdout.contains("-  replicas: 1\n+  replicas: 3\n"), "{}", run.stdout);
    let listed = daemon.strata(&["status"]).stdout;
    assert!(
        listed.lines().any(|l| l.starts_with("aws-cluster") && l.ends_with(&format!("{} (approval)", &edit[..7]))),
        "{listed}"
    );

    // Approve: applied, recorded with who and when.
    let run = daemon.strata(&["approve", "aws-cluster", "--as", "alice"]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    daemon.wait_for("the approved update applied", Duration::from_secs(5), |_| file(&ui).contains("replicas: 3"));
    let detail = daemon.cluster("aws-cluster");
    assert_eq!(detail["approvals"][0]["approved_by"], "api (alice)", "the shared token, and who said they used it");
    assert_eq!(detail["approvals"][0]["revision"], edit.as_str());
    daemon.wait_for("the pending update cleared", Duration::from_secs(5), |d| {
        d.cluster("aws-cluster")["pending"].is_null()
    });

    // Approving again: nothing is pending.
    let again = daemon.strata(&["approve", "aws-cluster"]);
    assert_eq!(again.code, 1);
    assert!(again.stderr.contains("no pending update"), "{}", again.stderr);

    // The in-place edit reached aws-staging? No: it runs 1.1.0.
    assert!(file(&staging).contains("replicas: 4"));
}

/// The number `strata_fetches_total` shows.
fn fetches(d: &Daemon) -> u64 {
    let metrics = d.get("/metrics").1;
    let line = metrics.lines().find(|l| l.starts_with("strata_fetches_total ")).expect("strata_fetches_total");
    line.rsplit(' ').next().unwrap().parse().unwrap()
}

/// A local repository is watched for changes; strata's own reads of it (polls and evaluations
/// open HEAD, config and packed-refs) must not count as changes, or the daemon reads it in a
/// loop, never idle, and a loop that always has a trigger ready starves its timers (a rollout's
/// bake never ended).
#[test]
fn reading_a_local_repository_does_not_trigger_another_read() {
    let repo = Repo::example();
    let daemon = Daemon::start(&local(&repo), &example_targets());
    let ui = daemon.out("aws-cluster/hello-universe/deployment.ui.yaml");
    daemon.wait_for("aws-cluster applied", Duration::from_secs(10), |_| file(&ui).contains("replicas: 1"));
    // Settled: the workers' applies and whatever they triggered are over.
    daemon.wait_settled(&repo.head());
    let before = fetches(&daemon);
    // A read that set off another would show within milliseconds (the watch's event, then the
    // loop's 50 ms debounce), over and over: what proves it does not is time passing with no
    // read, so this sleep stays.
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(fetches(&daemon), before, "the daemon kept reading an unchanged repository");
    // A commit is still a change, read at once.
    repo.edit(AWS_CLUSTER, "version: \"1.0.0\"", "version: \"1.1.0\"");
    repo.commit("aws-cluster: 1.1.0");
    daemon.wait_for("the commit read", Duration::from_secs(5), |d| fetches(d) > before);
}

#[test]
fn an_in_place_edit_with_an_override_applies_the_override_now_and_holds_the_edit() {
    let repo = Repo::example();
    let daemon = Daemon::start(&local(&repo), &example_targets());
    let ui = daemon.out("aws-cluster/hello-universe/deployment.ui.yaml");
    daemon.wait_for("aws-cluster applied", Duration::from_secs(10), |_| file(&ui).contains("replicas: 1"));
    repo.edit(AWS_1_0_0, "ghcr.io/spectrocloud/hello-universe:1.2.0", "ghcr.io/spectrocloud/hello-universe:1.3.0");
    repo.edit(AWS_CLUSTER, "  updates: manual", "  overrides:\n    hello-universe: { replicas: 2 }\n  updates: manual");
    repo.commit("new image in 1.0.0, and two replicas for aws-cluster");
    daemon.wait_for("the override applied", Duration::from_secs(5), |_| file(&ui).contains("replicas: 2"));
    let now = file(&ui);
    assert!(now.contains("hello-universe:1.2.0"), "the in-place edit waits: {now}");
    daemon.wait_for("the edit pending", Duration::from_secs(5), |d| !d.cluster("aws-cluster")["pending"].is_null());
    daemon.strata(&["approve", "aws-cluster"]);
    daemon.wait_for("the edit applied", Duration::from_secs(5), |_| file(&ui).contains("hello-universe:1.3.0"));
    assert!(file(&ui).contains("replicas: 2"));
}

/// An override that masked an in-place edit goes away: the override's removal applies at once on
/// the old profile content (one replica) and the edit (three) is held. Every diff shown meanwhile
/// starts from what the cluster runs: `1 → 3`, never the `2 → 3` of the set it ran before.
#[test]
fn a_pending_diff_always_starts_from_what_the_cluster_runs() {
    let repo = Repo::example();
    let daemon = Daemon::start(&local(&repo), &example_targets());
    let ui = daemon.out("aws-cluster/hello-universe/deployment.ui.yaml");
    daemon.wait_for("aws-cluster applied", Duration::from_secs(10), |_| file(&ui).contains("replicas: 1"));
    repo.edit(AWS_CLUSTER, "  updates: manual", "  overrides:\n    hello-universe: { replicas: 2 }\n  updates: manual");
    repo.commit("two replicas for aws-cluster");
    daemon.wait_for("the override applied", Duration::from_secs(10), |_| file(&ui).contains("replicas: 2"));
    repo.edit(AWS_1_0_0, "replicas: 1", "replicas: 3");
    let masked = repo.commit("three replicas in 1.0.0, masked by the override");
    daemon.wait_settled(&masked);
    assert!(daemon.cluster("aws-cluster")["pending"].is_null(), "the override masks the edit: nothing pending");

    repo.edit(AWS_CLUSTER, "  overrides:\n    hello-universe: { replicas: 2 }\n  updates: manual", "  updates: manual");
    repo.commit("the override goes");
    let started = std::time::Instant::now();
    let mut seen = Vec::new();
    while started.elapsed() < Duration::from_secs(15) {
        let detail = daemon.cluster("aws-cluster");
        let runs = file(&ui);
        if let Some(diff) = detail["pending"]["diff"].as_str() {
            let running = if runs.contains("replicas: 1") {
                1
            } else if runs.contains("replicas: 2") {
                2
            } else {
                0
            };
            seen.push((running, diff.to_string(), detail["cluster"]["digest"].clone()));
            if runs.contains("replicas: 1") && diff.contains("-  replicas: 1") && seen.len() > 20 {
                break;
            }
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(seen.iter().any(|(_, diff, _)| diff.contains("-  replicas: 1\n+  replicas: 3")), "{seen:#?}");
    for (_, diff, digest) in &seen {
        assert!(!diff.contains("replicas: 2"), "a diff from a set the cluster no longer runs ({digest}):\n{diff}");
    }
    assert!(file(&ui).contains("replicas: 1"), "the override's removal went ahead of the held edit");
}

#[test]
fn webhooks_need_valid_signatures_and_trigger_a_fetch_of_the_remote() {
    let remote = Repo::example();
    // A remote reached through a URL: fetched into the daemon's mirror, hourly unless a webhook says so.
    let url = format!("{{ url: 'file://{}', branch: main, interval: 1h }}", remote.path().display());
    let daemon = Daemon::start(&url, &example_targets());
    let ui = daemon.out("aws-staging/hello-universe/deployment.ui.yaml");
    daemon.wait_for("aws-staging applied", Duration::from_secs(10), |_| file(&ui).contains("replicas: 2"));

    remote.edit("clusters/aws-staging.yaml", "hello-universe: { replicas: 2 }", "hello-universe: { replicas: 5 }");
    remote.commit("five");
    let body = r#"{"ref":"refs/heads/main"}"#;
    // A wrong signature: 401, and nothing fetched.
    let (code, _) = daemon.request(
        "POST",
        "/hooks/github",
        &[
            ("X-GitHub-Event", "push"),
            ("X-Hub-Signature-256", "sha256=0000000000000000000000000000000000000000000000000000000000000000"),
        ],
        body,
    );
    assert_eq!(code, 401);
    let (code, _) = daemon.request("POST", "/hooks/github", &[("X-GitHub-Event", "push")], body);
    assert_eq!(code, 401, "no signature at all");
    let (code, _) =
        daemon.request("POST", "/hooks/gitlab", &[("X-Gitlab-Event", "Push Hook"), ("X-Gitlab-Token", "nope")], body);
    assert_eq!(code, 401);
    // Whatever the refused deliveries set off is acted on before a re-evaluation asked after them.
    daemon.wait_reevaluated("edge-lab");
    assert!(file(&ui).contains("replicas: 2"), "a refused webhook triggers nothing");
    let (_, metrics) = daemon.get("/metrics");
    assert!(metrics.contains(r#"strata_webhooks_total{provider="github",result="unauthorized"} 2"#), "{metrics}");

    // Too large a body: refused before anything else.
    let (code, _) =
        daemon.request("POST", "/hooks/github", &[("X-GitHub-Event", "push")], &"x".repeat(1024 * 1024 + 1));
    assert_eq!(code, 413);

    // The right signature: fetched and applied.
    let signature = signature(body);
    let (code, _) = daemon.request(
        "POST",
        "/hooks/github",
        &[("X-GitHub-Event", "push"), ("X-Hub-Signature-256", &format!("sha256={signature}"))],
        body,
    );
    assert_eq!(code, 202);
    daemon.wait_for("the pushed change applied", Duration::from_secs(5), |_| file(&ui).contains("replicas: 5"));

    // A force-push is a new revision like any other.
    let (code, _) = daemon.request(
        "POST",
        "/hooks/gitlab",
        &[("X-Gitlab-Event", "Push Hook"), ("X-Gitlab-Token", HOOK_SECRET)],
        body,
    );
    assert_eq!(code, 202);
}

#[test]
fn a_broken_commit_changes_nothing_and_the_next_good_one_applies() {
    let repo = Repo::example();
    let daemon = Daemon::start(&local(&repo), &example_targets());
    let ui = daemon.out("aws-staging/hello-universe/deployment.ui.yaml");
    daemon.wait_for("applied", Duration::from_secs(10), |_| file(&ui).contains("replicas: 2"));
    let before = file(&ui);
    repo.edit("clusters/aws-staging.yaml", "hello-universe: { replicas: 2 }", "hello-universe: { replicas: 3 }");
    repo.edit(AWS_1_0_0, "version: 1.0.0", "version: one");
    repo.commit("broken");
    daemon.wait_for("the broken revision rejected", Duration::from_secs(5), |d| d.log().contains("Revision rejected"));
    assert_eq!(file(&ui), before);
    assert!(daemon.log().contains("is not semver"), "the diagnostic is logged");
    repo.edit(AWS_1_0_0, "version: one", "version: 1.0.0");
    repo.commit("fixed");
    daemon.wait_for("the fixed revision applied", Duration::from_secs(5), |_| file(&ui).contains("replicas: 3"));
}

/// A cluster file on edge-profile 2.0.0 whose target is a directory named after it.
fn extra_cluster(name: &str) -> String {
    format!(
        "apiVersion: strata.dev/v1\nkind: Cluster\nmetadata: {{ name: {name} }}\nspec:\n  profile: {{ name: edge-profile, version: \"2.0.0\" }}\n"
    )
}

#[test]
fn commits_that_crash_the_evaluation_are_rejected_and_the_daemon_serves_on() {
    let repo = Repo::example();
    let git_dir = repo.path().join(".git");
    let targets = format!(
        "{}{}",
        example_targets(),
        directory_targets(&[("boom", "boom"), ("canary", "canary"), ("flaky", "flaky")])
    );
    // Panics that stay possible whatever parsers get fixed: loading a revision with a cluster
    // named `boom`, rendering `canary`, applying `flaky` (debug builds only).
    let mut daemon = Daemon::start_env(
        &local(&repo),
        &targets,
        "status: { provider: git-notes }\n",
        &[("STRATA_INJECT_PANIC", "revision:boom,render:canary,apply:flaky")],
    );
    let ui = daemon.out("aws-staging/hello-universe/deployment.ui.yaml");
    daemon.wait_for("applied", Duration::from_secs(10), |_| file(&ui).contains("replicas: 2"));
    let good = daemon.get("/api/v1/revision").1;

    // A window that is not one, with non-ASCII bytes where a weekday goes.
    repo.edit("clusters/aws-staging.yaml", "replicas: 2 }", "replicas: 3 }");
    repo.edit("clusters/aws-staging.yaml", "updates: auto", "updates: auto\n  window: \"éé 02:00-03:00\"");
    let bad_window = repo.commit("a window in another script");
    // The head recorded, not an evaluation of it (one still running names it too).
    daemon.wait_for("the revision rejected", Duration::from_secs(10), |d| d.revision()["head"] == bad_window.as_str());
    assert!(daemon.alive(), "the daemon is still running\n{}", daemon.log());
    assert!(file(&ui).contains("replicas: 2"), "the last good revision keeps serving");
    let revision: Value = serde_json::from_str(&daemon.get("/api/v1/revision").1).unwrap();
    assert_eq!(revision["verdict"], "rejected", "{revision}");
    assert_eq!(revision["last_good"], serde_json::from_str::<Value>(&good).unwrap()["head"]);
    daemon.wait_for("an error status on the commit", Duration::from_secs(10), |_| {
        notes_on(&git_dir, &bad_window).contains("strata/aws-staging error: revision does not load")
    });

    // A revision whose evaluation panics whatever the parsers do.
    repo.edit("clusters/aws-staging.yaml", "updates: auto\n  window: \"éé 02:00-03:00\"", "updates: auto");
    repo.write("clusters/boom.yaml", &extra_cluster("boom"));
    let crashing = repo.commit("boom");
    daemon.wait_for("the crashing revision rejected", Duration::from_secs(10), |d| {
        let revision: Value = serde_json::from_str(&d.get("/api/v1/revision").1).unwrap_or(Value::Null);
        revision["head"] == crashing.as_str() && revision["verdict"] == "rejected"
    });
    assert!(daemon.alive(), "the daemon is still running\n{}", daemon.log());
    assert!(file(&ui).contains("replicas: 2"));
    let revision: Value = serde_json::from_str(&daemon.get("/api/v1/revision").1).unwrap();
    assert!(revision["message"].as_str().unwrap().contains("injected panic: revision of boom"), "{revision}");
    daemon.wait_for("a crash status on the commit", Duration::from_secs(10), |_| {
        notes_on(&git_dir, &crashing)
            .contains("strata/aws-staging error: revision does not load: evaluating it crashed")
    });
    let listed = daemon.strata(&["status"]).stdout;
    assert!(listed.contains(&format!("revision {} rejected", &crashing[..7])), "{listed}");
    assert!(counted(&daemon.get("/metrics").1, "strata_panics_total{stage=\"evaluate\"}") >= 1.0);

    // One cluster whose rendering panics, one whose apply panics: the others go ahead.
    repo.remove("clusters/boom.yaml");
    repo.write("clusters/canary.yaml", &extra_cluster("canary"));
    repo.write("clusters/flaky.yaml", &extra_cluster("flaky"));
    let partly = repo.commit("canary and flaky");
    daemon.wait_for("the good clusters applied", Duration::from_secs(10), |_| file(&ui).contains("replicas: 3"));
    daemon.wait_for("canary in error", Duration::from_secs(10), |d| d.cluster("canary")["cluster"]["sync"] == "error");
    let canary = daemon.cluster("canary")["cluster"]["message"].as_str().unwrap_or("").to_string();
    assert!(canary.contains("rendering crashed: injected panic: render of canary"), "{canary}");
    daemon.wait_for("flaky failed", Duration::from_secs(10), |d| d.cluster("flaky")["cluster"]["sync"] == "failed");
    let flaky = daemon.cluster("flaky")["cluster"]["message"].as_str().unwrap_or("").to_string();
    assert!(flaky.contains("crashed: injected panic: apply of flaky"), "{flaky}");
    daemon.wait_for("statuses on the commit", Duration::from_secs(10), |_| {
        let notes = notes_on(&git_dir, &partly);
        notes.contains("strata/canary error: rendering crashed") && notes.contains("strata/aws-staging success")
    });

    // The next good commit applies, and the daemon is ready and alive throughout.
    repo.edit("clusters/aws-staging.yaml", "replicas: 3 }", "replicas: 5 }");
    repo.commit("five");
    daemon.wait_for("the next good commit applied", Duration::from_secs(10), |_| file(&ui).contains("replicas: 5"));
    assert!(daemon.alive());
    assert_eq!(daemon.get("/readyz").0, 200);
    let metrics = daemon.get("/metrics").1;
    assert!(counted(&metrics, "strata_panics_total{stage=\"render\"}") >= 1.0, "{metrics}");
    assert!(counted(&metrics, "strata_panics_total{stage=\"worker\"}") >= 1.0, "{metrics}");
}

#[test]
fn an_unreachable_cluster_does_not_delay_the_others() {
    let repo = Repo::example();
    let down = tempfile::tempdir().unwrap();
    let dead = apiserver::kubeconfig_for("http://127.0.0.1:1", down.path());
    let targets = format!(
        "{}  aws-cluster: {{ kubeconfig: {} }}\n",
        directory_targets(&[("aws-staging", "aws-staging"), ("edge-berlin", "edge-berlin"), ("lab", "lab")]),
        dead.display()
    );
    let started = Instant::now();
    let daemon = Daemon::start_with(&local(&repo), &targets, "status: { provider: git-notes }\n");
    for dir in ["aws-staging/hello-universe", "edge-berlin/edge", "lab/edge"] {
        daemon.wait_for(dir, Duration::from_secs(5), |d| d.out(dir).exists());
    }
    assert!(started.elapsed() < Duration::from_secs(5));
    daemon.wait_for("aws-cluster failed", Duration::from_secs(10), |d| {
        d.cluster("aws-cluster")["cluster"]["sync"] == "failed"
    });
    let message = daemon.cluster("aws-cluster")["cluster"]["message"].as_str().unwrap_or("").to_string();
    assert!(message.contains("cluster unreachable"), "{message}");
    // Not a failure of what was applied: an error naming what to check, on the commit.
    let head = repo.commit("nothing");
    let git_dir = repo.path().join(".git");
    daemon.wait_for("an error status for the unreachable cluster", Duration::from_secs(20), |_| {
        notes_on(&git_dir, &head)
            .contains("strata/aws-cluster error: cluster unreachable: cannot connect to 127.0.0.1:1")
    });
}

/// A TCP server that accepts connections and never answers: what a hung API server looks like.
struct BlackHole {
    url: String,
    _thread: std::thread::JoinHandle<()>,
}

impl BlackHole {
    fn start() -> BlackHole {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let thread = std::thread::spawn(move || {
            let mut held = Vec::new();
            for stream in listener.incoming().flatten() {
                held.push(stream);
            }
        });
        BlackHole { url, _thread: thread }
    }
}

#[test]
fn a_cluster_that_never_answers_delays_neither_commits_nor_other_clusters_nor_the_watchdog() {
    use std::os::unix::net::UnixDatagram;
    let repo = Repo::example();
    let hole = BlackHole::start();
    let kube_dir = tempfile::tempdir().unwrap();
    let kubeconfig = apiserver::kubeconfig_for(&hole.url, kube_dir.path());
    let targets = format!(
        "{}  aws-cluster: {{ kubeconfig: {} }}\n",
        directory_targets(&[("aws-staging", "aws-staging"), ("edge-berlin", "edge-berlin"), ("lab", "lab")]),
        kubeconfig.display()
    );
    let socket_dir = tempfile::tempdir().unwrap();
    let socket_path = socket_dir.path().join("notify.sock");
    let socket = UnixDatagram::bind(&socket_path).unwrap();
    socket.set_read_timeout(Some(Duration::from_millis(100))).unwrap();
    let daemon = Daemon::start_env(
        &local(&repo),
        &targets,
        "",
        &[("NOTIFY_SOCKET", socket_path.to_str().unwrap()), ("WATCHDOG_USEC", "1500000")],
    );
    let pings = || {
        let mut buf = [0u8; 256];
        let mut n = 0;
        while let Ok(len) = socket.recv(&mut buf) {
            n += String::from_utf8_lossy(&buf[..len]).matches("WATCHDOG=1").count();
        }
        n
    };
    let staging = daemon.out("aws-staging/hello-universe/deployment.ui.yaml");
    daemon.wait_for("aws-staging applied", Duration::from_secs(10), |_| file(&staging).contains("replicas: 2"));
    daemon.wait_for("aws-cluster's apply under way", Duration::from_secs(10), |d| {
        d.cluster("aws-cluster")["cluster"]["sync"] == "applying"
    });
    pings();
    // Commit churn; aws-cluster, never applied, is handed its desired state again on each: every
    // commit is noticed and applied to the healthy clusters while aws-cluster's apply still hangs.
    for replicas in 3..=16 {
        repo.edit(
            "clusters/aws-staging.yaml",
            &format!("hello-universe: {{ replicas: {} }}", replicas - 1),
            &format!("hello-universe: {{ replicas: {replicas} }}"),
        );
        repo.commit(&format!("{replicas} replicas"));
        daemon.wait_for(&format!("{replicas} replicas on aws-staging"), Duration::from_secs(10), |_| {
            file(&staging).contains(&format!("replicas: {replicas}"))
        });
    }
    assert_ne!(daemon.cluster("aws-cluster")["cluster"]["sync"], "applied", "it never answered");
    assert!(pings() > 0, "the watchdog is fed while a worker hangs");
}

#[test]
fn kill_9_in_the_middle_of_a_reconcile_then_restart_converges() {
    let server = ApiServer::start();
    let kube_dir = tempfile::tempdir().unwrap();
    let kubeconfig = server.kubeconfig(kube_dir.path());
    let repo = Repo::example();
    repo.edit(AWS_CLUSTER, "version: \"1.0.0\"", "version: \"1.1.0\"");
    repo.commit("aws-cluster on 1.1.0");
    // Every request takes a while, so the apply is surely under way when the daemon is killed.
    server.set_latency(Duration::from_millis(40));
    let targets = format!(
        "  aws-cluster: {{ kubeconfig: {} }}\n{}",
        kubeconfig.display(),
        directory_targets(&[("aws-staging", "s"), ("edge-berlin", "b"), ("lab", "l")])
    );
    let mut daemon = Daemon::start(&local(&repo), &targets);
    daemon.wait_for("the apply to start writing", Duration::from_secs(20), |_| {
        server.requests().iter().any(|r| r.is_write())
    });
    daemon.kill9();
    let written = server.names("deployments").len() + server.names("services").len();
    assert!(written < 4, "killed before the apply finished ({written} workloads written)");

    server.set_latency(Duration::ZERO);
    daemon.spawn();
    daemon.wait_for("aws-cluster applied", Duration::from_secs(20), |d| {
        d.cluster("aws-cluster")["cluster"]["sync"] == "applied"
    });
    assert_eq!(server.names("deployments"), ["hello-universe/ui", "kubecost/cost-analyzer-cost-analyzer"]);
    let inventory = server.object("configmaps", Some("strata-system"), "strata-inventory-aws-cluster").unwrap();
    let entries: Value = serde_json::from_str(inventory["data"]["inventory.json"].as_str().unwrap()).unwrap();
    assert_eq!(entries["entries"].as_array().unwrap().len(), 6);

    // A graceful stop: SIGTERM, exit 0.
    let status = daemon.terminate();
    assert!(status.success(), "{status:?}\n{}", daemon.log());
    assert!(daemon.log().contains("Stopping"));
}

#[test]
fn objects_created_before_a_kill_9_are_pruned_when_a_later_commit_removes_them() {
    let server = ApiServer::start();
    let kube_dir = tempfile::tempdir().unwrap();
    let kubeconfig = server.kubeconfig(kube_dir.path());
    let repo = Repo::example();
    repo.edit(AWS_CLUSTER, "version: \"1.0.0\"", "version: \"1.1.0\"");
    repo.commit("aws-cluster on 1.1.0");
    let before: Vec<String> = server.all();
    // Slow enough that the first apply is surely under way when the daemon is killed.
    server.set_latency(Duration::from_millis(60));
    let targets = format!(
        "  aws-cluster: {{ kubeconfig: {} }}\n{}",
        kubeconfig.display(),
        directory_targets(&[("aws-staging", "s"), ("edge-berlin", "b"), ("lab", "l")])
    );
    let mut daemon = Daemon::start(&local(&repo), &targets);
    daemon.wait_for("the first objects written", Duration::from_secs(30), |_| {
        server.names("namespaces").contains(&"hello-universe".to_string())
    });
    daemon.kill9();
    let created: Vec<String> =
        server.all().into_iter().filter(|o| !before.contains(o) && !o.contains("strata-system")).collect();
    assert!(!created.is_empty());
    assert!(server.names("deployments").len() < 2, "killed before the apply finished: {created:?}");

    // The next commit moves aws-cluster to another profile: all of aws-profile goes.
    repo.edit(AWS_CLUSTER, "name: aws-profile, version: \"1.1.0\"", "name: edge-profile, version: \"2.0.0\"");
    repo.commit("aws-cluster on edge-profile");
    server.set_latency(Duration::ZERO);
    daemon.spawn();
    daemon.wait_for("aws-cluster on edge-profile", Duration::from_secs(20), |d| {
        let c = d.cluster("aws-cluster");
        c["cluster"]["sync"] == "applied" && c["cluster"]["profile"] == "edge-profile"
    });
    let now = server.all();
    let orphans: Vec<&String> = created.iter().filter(|o| now.contains(o)).collect();
    assert!(orphans.is_empty(), "left behind: {orphans:?}\n{}", daemon.log());
    assert!(server.names("namespaces").contains(&"edge".to_string()));
}

/// Overwrites every page of the state database but the first (the header and schema) with
/// garbage, after folding the write-ahead log into it.
fn corrupt_state_database(path: &Path) {
    {
        let db = rusqlite::Connection::open(path).unwrap();
        db.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(())).unwrap();
    }
    let mut bytes = std::fs::read(path).unwrap();
    assert!(bytes.len() > 8192, "a database with tables");
    for (i, b) in bytes.iter_mut().enumerate().skip(4096) {
        *b = (i * 7 + 13) as u8;
    }
    std::fs::write(path, bytes).unwrap();
}

#[test]
fn a_corrupt_state_database_is_reported_not_taken_for_a_bad_revision_and_recovered() {
    let repo = Repo::example();
    let mut daemon = Daemon::start(&local(&repo), &example_targets());
    let ui = daemon.out("aws-cluster/hello-universe/deployment.ui.yaml");
    daemon.wait_for("applied", Duration::from_secs(10), |_| file(&ui).contains("replicas: 1"));
    daemon.wait_example_applied(Duration::from_secs(10));
    assert!(daemon.terminate().success());
    let db = daemon.dir.path().join("state/strata.db");
    corrupt_state_database(&db);

    // An in-place edit of aws-profile 1.0.0: aws-cluster (updates: manual) must hold it.
    repo.edit(AWS_1_0_0, "replicas: 1", "replicas: 3");
    let edit = repo.commit("aws-profile 1.0.0: three replicas");
    daemon.launch();
    daemon.wait_for("not ready, because of the state database", Duration::from_secs(20), |d| {
        let (code, body) = d.get("/readyz");
        code == 503 && body.contains(&format!("state database {}", db.display())) && body.contains("is corrupt")
    });
    assert_eq!(daemon.get("/healthz").0, 200, "alive");
    let log = daemon.log();
    assert!(log.contains("The state database cannot be used"), "{log}");
    assert!(!log.contains("Revision rejected"), "not taken for a bad revision\n{log}");
    assert!(daemon.get("/metrics").1.contains("strata_store_errors_total{kind=\"corrupt\"} 1"));
    daemon.wait_for("the new revision seen", Duration::from_secs(10), |d| d.log().contains(&edit));
    assert!(file(&ui).contains("replicas: 1"), "nothing decided without the state");
    assert!(daemon.alive());

    // The README's recovery: stop, recover-state, start.
    assert!(daemon.terminate().success());
    let run = daemon.strata(&["recover-state"]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(run.stdout.contains("corrupt; moved to") && run.stdout.contains("strata.db.corrupt-"), "{}", run.stdout);
    let again = daemon.strata(&["recover-state"]);
    assert!(again.stdout.contains("nothing to recover"), "{}", again.stdout);
    daemon.spawn();
    // What aws-cluster runs comes back from its inventory, so the edit is held, not applied.
    daemon.wait_for("the edit held for approval", Duration::from_secs(10), |d| {
        d.cluster("aws-cluster")["pending"]["head_revision"] == edit.as_str()
    });
    assert!(
        daemon.log().contains("clusters run from their inventories (the state knew nothing of them)"),
        "{}",
        daemon.log()
    );
    assert!(file(&ui).contains("replicas: 1"), "held");
    assert_eq!(daemon.strata(&["approve", "aws-cluster"]).code, 0);
    daemon.wait_for("the approved edit applied", Duration::from_secs(10), |_| file(&ui).contains("replicas: 3"));
}

#[test]
fn failing_state_database_writes_make_the_daemon_not_ready_until_they_work_again() {
    let repo = Repo::example();
    let daemon = Daemon::start(&local(&repo), &example_targets());
    let staging = daemon.out("aws-staging/hello-universe/deployment.ui.yaml");
    daemon.wait_for("applied", Duration::from_secs(10), |_| file(&staging).contains("replicas: 2"));
    daemon.wait_for("recorded", Duration::from_secs(10), |d| d.cluster("aws-staging")["cluster"]["sync"] == "applied");

    // Another process takes the database and keeps it: every write of the daemon fails.
    let db = daemon.dir.path().join("state/strata.db");
    let holder = rusqlite::Connection::open(&db).unwrap();
    holder.execute_batch("BEGIN EXCLUSIVE").unwrap();
    repo.edit("clusters/aws-staging.yaml", "hello-universe: { replicas: 2 }", "hello-universe: { replicas: 3 }");
    repo.commit("three");
    daemon.wait_for("not ready, naming the database", Duration::from_secs(20), |d| {
        let (code, body) = d.get("/readyz");
        code == 503
            && body.contains(&format!("state database {}", db.display()))
            && body.contains("another process holds it")
    });
    assert!(daemon.log().contains("State database: cannot"), "{}", daemon.log());
    assert!(counted(&daemon.get("/metrics").1, "strata_store_errors_total{kind=\"busy\"}") >= 1.0);

    holder.execute_batch("COMMIT").unwrap();
    drop(holder);
    daemon.wait_for("ready again", Duration::from_secs(30), |d| d.get("/readyz").0 == 200);
    daemon.wait_for("the commit applied and recorded", Duration::from_secs(30), |d| {
        file(&staging).contains("replicas: 3") && d.cluster("aws-staging")["cluster"]["sync"] == "applied"
    });
}

#[test]
fn unhealthy_rollouts_are_reported_and_retried() {
    let server = ApiServer::start();
    server.set_rollout("hello-universe", "ui", Rollout::Failed);
    let kube_dir = tempfile::tempdir().unwrap();
    let kubeconfig = server.kubeconfig(kube_dir.path());
    let repo = Repo::example();
    let targets = format!("  aws-cluster: {{ kubeconfig: {} }}\n", kubeconfig.display());
    let daemon = Daemon::start(&local(&repo), &targets);
    daemon.wait_for("aws-cluster unhealthy", Duration::from_secs(10), |d| {
        d.cluster("aws-cluster")["cluster"]["sync"] == "unhealthy"
    });
    let message = daemon.cluster("aws-cluster")["cluster"]["message"].as_str().unwrap_or("").to_string();
    assert!(message.contains("Deployment/hello-universe/ui") && message.contains("progress deadline"), "{message}");
}

#[test]
fn suspended_clusters_are_left_alone_until_resumed_and_removed_ones_are_let_go() {
    let repo = Repo::example();
    let daemon = Daemon::start(&local(&repo), &example_targets());
    let staging = daemon.out("aws-staging/hello-universe/deployment.ui.yaml");
    daemon.wait_for("applied", Duration::from_secs(10), |_| file(&staging).contains("replicas: 2"));

    let run = daemon.strata(&["suspend", "aws-staging"]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    repo.edit("clusters/aws-staging.yaml", "hello-universe: { replicas: 2 }", "hello-universe: { replicas: 6 }");
    let six = repo.commit("six");
    daemon.wait_settled(&six);
    assert!(file(&staging).contains("replicas: 2"), "suspended: not applied");
    assert!(daemon.strata(&["status"]).stdout.contains("(suspended)"));
    daemon.strata(&["resume", "aws-staging"]);
    daemon.wait_for("applied after resume", Duration::from_secs(5), |_| file(&staging).contains("replicas: 6"));

    // Without a token, no actions.
    let (code, _) = daemon.request("POST", "/api/v1/clusters/aws-staging/suspend", &[], "{}");
    assert_eq!(code, 401);
    let (code, _) =
        daemon.request("POST", "/api/v1/clusters/aws-staging/suspend", &[("Authorization", "Bearer wrong")], "{}");
    assert_eq!(code, 401);

    // The cluster file goes: management stops, the objects stay (prune_removed_clusters is off).
    repo.remove("clusters/edge-lab.yaml");
    repo.commit("retire edge-lab");
    daemon.wait_for("edge-lab removed", Duration::from_secs(5), |d| {
        d.cluster("edge-lab")["cluster"]["sync"] == "removed"
    });
    assert!(daemon.out("lab/edge/deployment.gateway.yaml").exists());
    // And back, as it was: managed again, applied anew (the plan calls it a new cluster).
    let restore = Command::new("git")
        .args(["checkout", "HEAD~1", "--", "clusters/edge-lab.yaml"])
        .current_dir(repo.path())
        .output()
        .unwrap();
    assert!(restore.status.success(), "{}", String::from_utf8_lossy(&restore.stderr));
    repo.commit("edge-lab again");
    daemon.wait_for("edge-lab applied again", Duration::from_secs(10), |d| {
        d.cluster("edge-lab")["cluster"]["sync"] == "applied"
    });
}

/// An object created with a field its ignore rule leaves to others gets that field's first value,
/// and is not drift a moment later: the applied-digest of a create is the one an update would
/// write (it was taken over the ignored field too, and the first drift check re-applied).
#[test]
fn an_object_created_with_an_ignored_field_is_not_drift() {
    let repo = Repo::example();
    repo.edit(
        "clusters/aws-staging.yaml",
        "  drift: correct\n",
        "  drift: correct\n  ignore: [{ kind: Deployment, path: /spec/replicas }]\n",
    );
    repo.commit("replicas are the autoscaler's");
    let mut daemon = Daemon::configure(&local(&repo), &example_targets(), "");
    daemon.set_drift_interval("1s");
    daemon.spawn();
    let ui = daemon.out("aws-staging/hello-universe/deployment.ui.yaml");
    daemon.wait_for("created", Duration::from_secs(10), |_| file(&ui).contains("replicas: 2"));
    // Drift checks every second (and the watches) look at the new objects; nothing is drift.
    // The daemon shows no clean drift check (no count, no time, no log line), so the checks are
    // waited out by the clock: two or three of them.
    std::thread::sleep(Duration::from_secs(3));
    let log = daemon.log();
    assert!(!log.contains("Drift found. cluster=aws-staging"), "{log}");
    assert!(file(&ui).contains("replicas: 2"), "the first value stays: {}", file(&ui));
    assert_eq!(daemon.cluster("aws-staging")["cluster"]["drifted"], 0);
}

#[test]
fn systemd_hears_ready_watchdog_and_stopping_and_logs_can_be_json() {
    use std::os::unix::net::UnixDatagram;
    let repo = Repo::example();
    let dir = tempfile::tempdir().unwrap();
    let socket_path = dir.path().join("notify.sock");
    let socket = UnixDatagram::bind(&socket_path).unwrap();
    socket.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    std::fs::write(
        dir.path().join("strata.yaml"),
        format!(
            "repository: {}\nstate_dir: ./state\nlisten: 127.0.0.1:0\ntargets:\n{}",
            local(&repo),
            example_targets()
        ),
    )
    .unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_strata"))
        .args(["run", "--log-format", "json", "--config"])
        .arg(dir.path().join("strata.yaml"))
        .env("NOTIFY_SOCKET", &socket_path)
        .env("WATCHDOG_USEC", "600000")
        .env_remove("WATCHDOG_PID")
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let mut heard = Vec::new();
    let mut buf = [0u8; 256];
    while !(heard.iter().any(|m: &String| m.contains("READY=1"))
        && heard.iter().filter(|m| m.contains("WATCHDOG=1")).count() >= 2)
    {
        let n = socket.recv(&mut buf).expect("a notification");
        heard.push(String::from_utf8_lossy(&buf[..n]).into_owned());
    }
    let _ = Command::new("kill").args(["-TERM", &child.id().to_string()]).status();
    loop {
        let n = socket.recv(&mut buf).expect("a notification");
        if String::from_utf8_lossy(&buf[..n]).contains("STOPPING=1") {
            break;
        }
    }
    let status = child.wait().unwrap();
    assert!(status.success());
    let mut stderr = String::new();
    child.stderr.take().unwrap().read_to_string(&mut stderr).unwrap();
    let first: Value = serde_json::from_str(stderr.lines().next().unwrap()).expect("JSON log lines");
    assert_eq!(first["level"], "INFO");
    assert!(stderr.lines().all(|l| serde_json::from_str::<Value>(l).is_ok()), "{stderr}");
    assert!(stderr.contains(r#""cluster":"aws-cluster""#), "{stderr}");
}

#[test]
fn a_remote_that_fails_keeps_the_last_good_revision_and_force_pushes_are_followed() {
    let remote = Repo::example();
    let url = format!("{{ url: 'file://{}', branch: main, interval: 1h }}", remote.path().display());
    let daemon = Daemon::start(&url, &example_targets());
    let staging = daemon.out("aws-staging/hello-universe/deployment.ui.yaml");
    daemon.wait_for("applied", Duration::from_secs(10), |_| file(&staging).contains("replicas: 2"));
    let gitea = |d: &Daemon| {
        let body = r#"{"ref":"refs/heads/main"}"#;
        let signature = signature(body);
        d.request("POST", "/hooks/gitea", &[("X-Gitea-Event", "push"), ("X-Gitea-Signature", &signature)], body).0
    };

    // The remote goes away: the fetch fails, is counted, and nothing changes.
    let moved = remote.path().with_extension("moved");
    std::fs::rename(remote.path(), &moved).unwrap();
    assert_eq!(gitea(&daemon), 202);
    daemon.wait_for("a fetch error", Duration::from_secs(5), |d| {
        d.get("/metrics").1.contains("strata_fetch_errors_total 1")
    });
    assert!(file(&staging).contains("replicas: 2"));
    assert_eq!(daemon.cluster("aws-staging")["cluster"]["sync"], "applied");
    std::fs::rename(&moved, remote.path()).unwrap();

    // History rewritten: the branch is reset and a different commit pushed in its place.
    let first = remote.commit("empty");
    remote.edit("clusters/aws-staging.yaml", "hello-universe: { replicas: 2 }", "hello-universe: { replicas: 7 }");
    remote.commit("seven");
    let _ = Command::new("git").args(["reset", "-q", "--hard", &first]).current_dir(remote.path()).status();
    remote.edit("clusters/aws-staging.yaml", "hello-universe: { replicas: 2 }", "hello-universe: { replicas: 8 }");
    remote.commit("eight, instead");
    assert_eq!(gitea(&daemon), 202);
    daemon.wait_for("the rewritten branch applied", Duration::from_secs(5), |_| file(&staging).contains("replicas: 8"));
    assert_eq!(gitea(&daemon), 202);
    remote.edit("clusters/aws-staging.yaml", "hello-universe: { replicas: 8 }", "hello-universe: { replicas: 7 }");
    remote.commit("seven again");
    let _ = Command::new("git").args(["reset", "-q", "--hard", &first]).current_dir(remote.path()).status();
    assert_eq!(gitea(&daemon), 202);
    daemon.wait_for("the force-push logged", Duration::from_secs(5), |d| d.log().contains("History was rewritten"));
    daemon.wait_for("back to two replicas", Duration::from_secs(5), |_| file(&staging).contains("replicas: 2"));
}

fn github_status(forge: &forge::Forge) -> String {
    std::fs::write(std::env::temp_dir().join("strata-test-forge-token"), "forge-token\n").unwrap();
    format!(
        "status: {{ provider: github, api: '{}', repo: platform/fleet, token_file: {}, target_url: 'http://strata.example.com/clusters/{{cluster}}', min_interval: 10ms }}\n",
        forge.url,
        std::env::temp_dir().join("strata-test-forge-token").display()
    )
}

/// (context, state, description) of the statuses the forge accepted for a commit.
fn statuses_on(forge: &forge::Forge, revision: &str) -> Vec<(String, String, String)> {
    forge
        .statuses()
        .into_iter()
        .filter(|s| s.path.ends_with(revision))
        .map(|s| {
            (
                s.body["context"].as_str().unwrap_or("").to_string(),
                s.body["state"].as_str().unwrap_or("").to_string(),
                s.body["description"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect()
}

#[test]
fn commit_statuses_for_the_tutorials_story() {
    let forge = forge::Forge::start();
    let repo = Repo::example();
    let head = repo.commit("start");
    let daemon = Daemon::start_with(&local(&repo), &example_targets(), &github_status(&forge));
    daemon.wait_for("aws-cluster success", Duration::from_secs(10), |_| {
        statuses_on(&forge, &head).iter().any(|(c, s, _)| c == "strata/aws-cluster" && s == "success")
    });
    let first = &forge.statuses()[0];
    assert_eq!(first.method, "POST");
    assert!(first.path.starts_with("/repos/platform/fleet/statuses/"), "{}", first.path);
    assert_eq!(first.headers["authorization"], "Bearer forge-token");
    assert_eq!(first.headers["accept"], "application/vnd.github+json");
    assert_eq!(first.headers["x-github-api-version"], "2022-11-28");
    assert!(first.headers.contains_key("user-agent"));
    let aws: Vec<_> = statuses_on(&forge, &head).into_iter().filter(|(c, _, _)| c == "strata/aws-cluster").collect();
    // `pending` while applying goes out unless the apply finished first (the outbox keeps the
    // latest state per commit and context); the last word is success.
    if aws.len() > 1 {
        assert_eq!(aws[0], ("strata/aws-cluster".into(), "pending".into(), "applying aws-profile@1.0.0".into()));
    }
    assert_eq!(aws.last().unwrap().1, "success");
    assert!(aws.last().unwrap().2.starts_with("applied aws-profile@1.0.0: 3 created"), "{aws:?}");
    let url =
        forge.statuses().iter().find(|s| s.body["context"] == "strata/aws-cluster").unwrap().body["target_url"].clone();
    assert_eq!(url, "http://strata.example.com/clusters/aws-cluster");

    // A pending update, on the commit that made the in-place edit.
    repo.edit(AWS_1_0_0, "replicas: 1", "replicas: 3");
    let edit = repo.commit("three replicas");
    daemon.wait_for("the pending status", Duration::from_secs(5), |_| !statuses_on(&forge, &edit).is_empty());
    assert_eq!(
        statuses_on(&forge, &edit),
        [(
            "strata/aws-cluster".to_string(),
            "pending".to_string(),
            "pending update aws-profile@1.0.0 — approve: strata approve aws-cluster".to_string()
        )]
    );

    // Nothing new: no writes, however often the daemon looks again.
    let before = forge.seen().len();
    for _ in 0..3 {
        daemon.strata(&["suspend", "edge-lab"]);
        daemon.strata(&["resume", "edge-lab"]);
    }
    // Those re-evaluations over, each re-queued aws-cluster's pending status and set the outbox
    // gauge after: 0 means none of them queued a write (one delivered meanwhile is in `seen`).
    daemon.wait_reevaluated("edge-lab");
    assert_eq!(counted(&daemon.get("/metrics").1, "strata_outbox"), 0.0, "a status queued again");
    assert_eq!(forge.seen().len(), before, "{:?}", &forge.seen()[before..]);

    // A commit that does not render: error, with the diagnostic.
    repo.edit("packs/hello-universe/manifests/ui.yaml", "{{ values.replicas }}", "{{ values.replicaz }}");
    let broken = repo.commit("typo");
    daemon.wait_for("error statuses", Duration::from_secs(5), |_| {
        statuses_on(&forge, &broken).iter().any(|(c, s, _)| c == "strata/aws-staging" && s == "error")
    });
    let (_, _, description) =
        statuses_on(&forge, &broken).into_iter().find(|(c, _, _)| c == "strata/aws-staging").unwrap();
    assert!(description.starts_with("does not render: packs/hello-universe/manifests/ui.yaml:8:"), "{description}");
    assert!(description.chars().count() <= 140);
}

#[test]
fn statuses_survive_a_forge_outage_and_a_restart_and_rate_limits_are_honoured() {
    let forge = forge::Forge::start();
    forge.set_mode(forge::Mode::Down);
    let repo = Repo::example();
    let head = repo.commit("start");
    let mut daemon = Daemon::start_with(&local(&repo), &example_targets(), &github_status(&forge));
    let staging = daemon.out("aws-staging/hello-universe/deployment.ui.yaml");
    daemon.wait_for("applied", Duration::from_secs(10), |_| file(&staging).contains("replicas: 2"));
    daemon.wait_for("a failed delivery", Duration::from_secs(5), |d| {
        counted(&d.get("/metrics").1, r#"strata_report_deliveries_total{result="failed"}"#) >= 1.0
    });
    assert!(forge.statuses().is_empty());

    // The daemon goes down while the forge is down; the queue is on disk.
    daemon.kill9();
    forge.clear();
    forge.set_mode(forge::Mode::Up);
    forge.rate_limit_next(1);
    daemon.spawn();
    daemon.wait_for("every cluster's success delivered", Duration::from_secs(20), |_| {
        ["aws-cluster", "aws-staging", "edge-berlin", "edge-lab"].iter().all(|c| {
            statuses_on(&forge, &head).iter().any(|(ctx, s, _)| ctx == &format!("strata/{c}") && s == "success")
        })
    });
    // Only the latest state per commit and context was delivered, each once.
    let delivered = statuses_on(&forge, &head);
    assert_eq!(delivered.len(), 4, "{delivered:?}");
    // The rate-limited answer asked for a second, and got it.
    let seen = forge.seen();
    let limited =
        seen.iter().position(|s| !s.headers.contains_key("x-answered-ok") && s.path.contains("/statuses/")).unwrap();
    let next = seen[limited + 1..].iter().find(|s| s.path.contains("/statuses/")).unwrap();
    assert!(next.at.duration_since(seen[limited].at) >= Duration::from_millis(950));
}

#[test]
fn refused_tokens_are_logged_clearly() {
    let forge = forge::Forge::start();
    forge.set_mode(forge::Mode::Unauthorized);
    let repo = Repo::example();
    let daemon = Daemon::start_with(&local(&repo), &example_targets(), &github_status(&forge));
    daemon.wait_for("a refusal", Duration::from_secs(10), |d| d.log().contains("401 unauthorized"));
    assert!(daemon.log().contains("check status.token_file"));
    assert!(!daemon.log().contains("forge-token"), "the token is never logged");
}

#[test]
fn git_notes_hold_the_statuses_without_a_forge() {
    let repo = Repo::example();
    let head = repo.commit("start");
    let daemon =
        Daemon::start_with(&local(&repo), &example_targets(), "status: { provider: git-notes, min_interval: 0ms }\n");
    let notes = || notes_on(&repo.path().join(".git"), &head);
    daemon.wait_for("notes for every cluster", Duration::from_secs(10), |_| {
        notes().matches(" success: applied").count() == 4
    });
    let text = notes();
    assert!(text.contains("strata/aws-cluster success: applied aws-profile@1.0.0: 3 created"), "{text}");
    assert!(text.lines().filter(|l| !l.is_empty()).all(|l| l.starts_with("strata/")), "{text}");
}

#[test]
fn the_daemon_plans_new_pull_request_heads() {
    let forge = forge::Forge::start();
    let remote = Repo::example();
    let base = remote.commit("base");
    // A pull request that exists before the daemon starts: the baseline, left alone.
    let git = |args: &[&str]| {
        let ok = Command::new("git")
            .args(["-c", "user.name=t", "-c", "user.email=t@t"])
            .args(args)
            .current_dir(remote.path())
            .output()
            .unwrap();
        assert!(ok.status.success(), "{args:?}: {}", String::from_utf8_lossy(&ok.stderr));
        String::from_utf8_lossy(&ok.stdout).trim().to_string()
    };
    git(&["update-ref", "refs/pull/1/head", &base]);
    let url = format!("{{ url: 'file://{}', branch: main, interval: 1h }}", remote.path().display());
    let status = github_status(&forge).replace("min_interval: 10ms }", "min_interval: 10ms, pull_requests: true }");
    let daemon = Daemon::start_with(&url, &example_targets(), &status);
    daemon.wait_for("applied", Duration::from_secs(10), |d| d.cluster("aws-cluster")["cluster"]["sync"] == "applied");

    // A new pull request edits aws-profile 1.0.0 in place.
    git(&["checkout", "-q", "-b", "pr"]);
    remote.edit(AWS_1_0_0, "replicas: 1", "replicas: 3");
    let head = remote.commit("three replicas");
    git(&["checkout", "-q", "main"]);
    git(&["update-ref", "refs/pull/5/head", &head]);
    daemon.request("POST", "/hooks/gitlab", &[("X-Gitlab-Event", "Push Hook"), ("X-Gitlab-Token", HOOK_SECRET)], "{}");
    daemon.wait_for("the plan posted", Duration::from_secs(10), |_| forge.comments().len() == 1);
    let plan = statuses_on(&forge, &head);
    assert_eq!(
        plan,
        [("strata/plan".to_string(), "success".to_string(), "1 cluster changes: 1 pending update".to_string())]
    );
    assert!(forge.comments()[0].1.contains("aws-cluster"));
    assert!(forge.seen().iter().any(|s| s.method == "POST" && s.path == "/repos/platform/fleet/issues/5/comments"));
    assert!(!forge.seen().iter().any(|s| s.path.contains("/issues/1/")), "the baseline pull request is left alone");

    // The pull request moves on: the same comment is updated.
    git(&["checkout", "-q", "pr"]);
    remote.edit(AWS_1_0_0, "replicas: 3", "replicas: 4");
    let next = remote.commit("four");
    git(&["checkout", "-q", "main"]);
    git(&["update-ref", "refs/pull/5/head", &next]);
    daemon.request("POST", "/hooks/gitlab", &[("X-Gitlab-Event", "Push Hook"), ("X-Gitlab-Token", HOOK_SECRET)], "{}");
    daemon
        .wait_for("the comment updated", Duration::from_secs(10), |_| forge.seen().iter().any(|s| s.method == "PATCH"));
    assert_eq!(forge.comments().len(), 1);
    assert!(forge.comments()[0].1.contains("+  replicas: 4"));
}

#[test]
fn git_notes_are_pushed_to_the_remote() {
    let work = Repo::example();
    let head = work.commit("start");
    // Remotes are bare repositories.
    let dir = tempfile::tempdir().unwrap();
    let bare = dir.path().join("fleet.git");
    assert!(
        Command::new("git").args(["clone", "-q", "--bare"]).arg(work.path()).arg(&bare).status().unwrap().success()
    );
    let url = format!("{{ url: 'file://{}', branch: main, interval: 1h }}", bare.display());
    let daemon = Daemon::start_with(&url, &example_targets(), "status: { provider: git-notes, min_interval: 0ms }\n");
    let notes = || notes_on(&bare, &head);
    daemon.wait_for("notes in the remote", Duration::from_secs(10), |_| {
        notes().matches(" success: applied").count() == 4
    });
}

#[test]
fn the_status_view_pages_login_csrf_and_audit() {
    let repo = Repo::example();
    let daemon = Daemon::start(&local(&repo), &example_targets());
    daemon.wait_for("applied", Duration::from_secs(10), |d| d.cluster("aws-cluster")["cluster"]["sync"] == "applied");
    repo.edit(AWS_1_0_0, "replicas: 1", "replicas: 3");
    let edit = repo.commit("three");
    daemon.wait_for("pending", Duration::from_secs(5), |d| !d.cluster("aws-cluster")["pending"].is_null());

    // Every page renders, read-only without a session.
    for path in [
        "/",
        "/?tag=env:prod&sort=drift",
        "/?profile=aws-profile%401.0.0",
        "/clusters/aws-cluster",
        "/clusters/aws-cluster/pending",
        "/login",
        "/assets/style.css",
        "/assets/app.js",
    ] {
        let (code, _, _) = daemon.raw("GET", path, &[], "");
        assert_eq!(code, 200, "{path}");
    }
    let (_, _, fleet) = daemon.raw("GET", "/?tag=service:hello-universe-frontend", &[], "");
    assert_eq!(fleet.matches("<tr data-cluster=").count(), 2);
    assert!(fleet.contains("update pending"));
    let (_, _, profile) = daemon.raw("GET", "/?profile=aws-profile%401.1.0", &[], "");
    assert_eq!(profile.matches("<tr data-cluster=").count(), 1);
    let (_, _, pending) = daemon.raw("GET", "/clusters/aws-cluster/pending", &[], "");
    assert!(pending.contains("Sign in to approve") && !pending.contains("id=\"approve\""));
    let (code, _, _) = daemon.raw("GET", "/clusters/nope", &[], "");
    assert_eq!(code, 404);

    // The live table: 304 until something changes.
    let (code, head, _) = daemon.raw("GET", "/fragment/clusters", &[], "");
    assert_eq!(code, 200);
    let etag = head.lines().find_map(|l| l.strip_prefix("etag: ")).unwrap().to_string();
    let (code, _, _) = daemon.raw("GET", "/fragment/clusters", &[("If-None-Match", &etag)], "");
    assert_eq!(code, 304);

    // Approving needs a session.
    let (code, head, _) = daemon.raw(
        "POST",
        "/clusters/aws-cluster/approve",
        &[("Content-Type", "application/x-www-form-urlencoded")],
        "csrf=x",
    );
    assert_eq!(code, 303);
    assert!(head.contains("location: /login"), "{head}");
    let (code, _, _) = daemon.raw(
        "POST",
        "/login",
        &[("Content-Type", "application/x-www-form-urlencoded")],
        "name=mallory&token=guess",
    );
    assert_eq!(code, 401);
    let (code, head, _) = daemon.raw(
        "POST",
        "/login",
        &[("Content-Type", "application/x-www-form-urlencoded")],
        &format!("name=alice&token={TOKEN}&next=%2Fclusters%2Faws-cluster%2Fpending"),
    );
    assert_eq!(code, 303);
    assert!(head.contains("location: /clusters/aws-cluster/pending"));
    let cookie = session_cookie(&head);
    assert!(head.to_ascii_lowercase().contains("httponly") && head.contains("SameSite=Strict"), "{head}");
    let (_, _, pending) = daemon.raw("GET", "/clusters/aws-cluster/pending", &[("Cookie", &cookie)], "");
    let csrf = pending.split("name=\"csrf\" value=\"").nth(1).and_then(|s| s.split('"').next()).unwrap().to_string();

    // A forged form (no or wrong CSRF token, or another origin) is refused.
    let form = ("Content-Type", "application/x-www-form-urlencoded");
    let (code, _, _) = daemon.raw("POST", "/clusters/aws-cluster/approve", &[form, ("Cookie", &cookie)], "csrf=wrong");
    assert_eq!(code, 403);
    let (code, _, _) = daemon.raw(
        "POST",
        "/clusters/aws-cluster/approve",
        &[form, ("Cookie", &cookie), ("Origin", "https://evil.example.com")],
        &format!("csrf={csrf}"),
    );
    assert_eq!(code, 403);
    let (code, _, _) = daemon.raw(
        "POST",
        "/clusters/aws-cluster/approve",
        &[form, ("Cookie", &cookie), ("Sec-Fetch-Site", "cross-site")],
        &format!("csrf={csrf}&revision={edit}"),
    );
    assert_eq!(code, 403);
    assert!(daemon.cluster("aws-cluster")["approvals"].as_array().unwrap().is_empty());

    // The real one: recorded with who and when, and applied.
    let (code, head, _) = daemon.raw(
        "POST",
        "/clusters/aws-cluster/approve",
        &[form, ("Cookie", &cookie)],
        &format!("csrf={csrf}&revision={edit}"),
    );
    assert_eq!(code, 303, "{head}");
    let approvals = daemon.cluster("aws-cluster")["approvals"].clone();
    assert_eq!(approvals[0]["approved_by"], "api (alice)");
    assert_eq!(approvals[0]["revision"], edit.as_str());
    let ui = daemon.out("aws-cluster/hello-universe/deployment.ui.yaml");
    daemon.wait_for("applied", Duration::from_secs(5), |_| file(&ui).contains("replicas: 3"));
    let (_, _, page) = daemon.raw("GET", "/clusters/aws-cluster", &[], "");
    // Values are HTML-escaped by the templates, `/` included (`&#x2f;`).
    assert!(page.contains("alice") && page.contains("Deployment&#x2f;hello-universe&#x2f;ui"), "{page}");
}

#[test]
fn the_status_view_can_require_the_token_or_be_off() {
    let repo = Repo::example();
    let locked = Daemon::start_with(&local(&repo), &example_targets(), "view: { require_token: true }\n");
    let (code, head, _) = locked.raw("GET", "/", &[], "");
    assert_eq!(code, 303);
    assert!(head.contains("location: /login?next=%2F"), "{head}");
    let (code, _, _) = locked.raw("GET", "/", &[("Authorization", &format!("Bearer {TOKEN}"))], "");
    assert_eq!(code, 200);
    let off = Daemon::start_with(&local(&repo), &example_targets(), "view: { enabled: false }\n");
    assert_eq!(off.raw("GET", "/", &[], "").0, 404);
    assert_eq!(off.raw("GET", "/healthz", &[], "").0, 200, "the rest keeps working");
}

#[test]
fn https_style_remotes_fetch_and_push_with_a_token() {
    let work = Repo::example();
    let head = work.commit("start");
    let repos = tempfile::tempdir().unwrap();
    let bare = repos.path().join("fleet.git");
    assert!(
        Command::new("git").args(["clone", "-q", "--bare"]).arg(work.path()).arg(&bare).status().unwrap().success()
    );
    let server = githttp::GitHttp::start(repos.path().to_path_buf(), "x-access-token", "git-token-123");
    let token = repos.path().join("git-token");
    std::fs::write(&token, "git-token-123\n").unwrap();
    let url = format!(
        "{{ url: '{}/fleet.git', branch: main, interval: 1h, credentials: {{ token_file: {} }} }}",
        server.url,
        token.display()
    );
    let daemon = Daemon::start_with(&url, &example_targets(), "status: { provider: git-notes, min_interval: 0ms }\n");
    let ui = daemon.out("aws-cluster/hello-universe/deployment.ui.yaml");
    daemon.wait_for("applied from the HTTP remote", Duration::from_secs(10), |_| file(&ui).contains("replicas: 1"));
    // Statuses are pushed back as notes over the same transport.
    let notes = || notes_on(&bare, &head);
    daemon.wait_for("notes pushed over HTTP", Duration::from_secs(10), |_| {
        notes().matches(" success: applied").count() == 4
    });
    let seen = server.seen.lock().unwrap().clone();
    assert!(seen.iter().any(|(m, p, _)| m == "POST" && p.ends_with("/git-upload-pack")), "{seen:?}");
    assert!(seen.iter().any(|(m, p, _)| m == "POST" && p.ends_with("/git-receive-pack")), "{seen:?}");
    assert!(seen.iter().all(|(_, _, authorised)| *authorised), "every request carries the token: {seen:?}");

    // A wrong token: the fetch fails clearly and nothing changes.
    std::fs::write(&token, "wrong\n").unwrap();
    let (code, _) = daemon.request(
        "POST",
        "/hooks/gitlab",
        &[("X-Gitlab-Event", "Push Hook"), ("X-Gitlab-Token", HOOK_SECRET)],
        "{}",
    );
    assert_eq!(code, 202);
    daemon.wait_for("the refusal logged", Duration::from_secs(10), |d| {
        d.log().contains("refused the configured credentials")
    });
    assert!(!daemon.log().contains("git-token-123"), "the token is never logged");
}

#[test]
fn secret_values_reach_neither_the_api_the_view_statuses_nor_logs() {
    use common::secrets::{self, MARKER, assert_no_leak, b64};
    let server = ApiServer::start();
    let kube_dir = tempfile::tempdir().unwrap();
    let kubeconfig = server.kubeconfig(kube_dir.path());
    let repo = Repo::example();
    secrets::add(&repo);
    repo.commit("credentials");
    let targets = format!(
        "  aws-cluster: {{ kubeconfig: {} }}\n{}",
        kubeconfig.display(),
        directory_targets(&[("aws-staging", "s"), ("edge-berlin", "b"), ("lab", "l")])
    );
    let mut daemon =
        Daemon::start_with(&local(&repo), &targets, "status: { provider: git-notes, min_interval: 0ms }\n");
    daemon.wait_for("aws-cluster applied", Duration::from_secs(20), |d| {
        d.cluster("aws-cluster")["cluster"]["sync"] == "applied"
    });
    let key = daemon.dir.path().join("state/redaction.key");
    use std::os::unix::fs::PermissionsExt as _;
    assert_eq!(std::fs::metadata(&key).unwrap().permissions().mode() & 0o777, 0o600);

    // An in-place edit held for approval: its diff, through the API, the CLI and the view.
    secrets::rotate(&repo);
    let edit = repo.commit("rotate the credentials");
    daemon.wait_for("the rotation pending", Duration::from_secs(10), |d| {
        d.cluster("aws-cluster")["pending"]["head_revision"] == edit.as_str()
    });
    let (_, api) = daemon.get("/api/v1/clusters/aws-cluster");
    assert_no_leak("GET /api/v1/clusters/aws-cluster", &api);
    let pending: Value = serde_json::from_str(&api).unwrap();
    let diff = pending["pending"]["diff"].as_str().unwrap().to_string();
    assert!(diff.contains("-  password: <redacted hmac:") && diff.contains("+  password: <redacted hmac:"), "{diff}");
    let status = daemon.strata(&["status", "aws-cluster", "--diff"]);
    assert_no_leak("strata status --diff", &status.stdout);
    assert!(status.stdout.contains(MARKER), "{}", status.stdout);
    for page in ["/clusters/aws-cluster/pending", "/clusters/aws-cluster", "/api/v1/clusters"] {
        let (code, body) = daemon.get(page);
        assert_eq!(code, 200, "{page}");
        assert_no_leak(page, &body);
    }

    // Someone edits the live Secret; after a restart (the first drift check comes at once) the
    // findings show markers, and the pending diff the same markers as before: the key is kept.
    let patch = serde_json::json!({"data": {"password": b64(secrets::LIVE_PASSWORD)}});
    let out = Command::new("kubectl")
        .arg("--kubeconfig")
        .arg(&kubeconfig)
        .args(["patch", "secret", "app-credentials", "-n", "hello-universe", "--type", "merge", "-p"])
        .arg(patch.to_string())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    daemon.kill9();
    daemon.spawn();
    daemon.wait_for("the edited Secret found drifted", Duration::from_secs(20), |d| {
        d.cluster("aws-cluster")["drift"]
            .as_array()
            .is_some_and(|rows| rows.iter().any(|r| r["path"] == "/data/password"))
    });
    let (_, api) = daemon.get("/api/v1/clusters/aws-cluster");
    assert_no_leak("drift findings in the API", &api);
    let detail: Value = serde_json::from_str(&api).unwrap();
    let row = detail["drift"].as_array().unwrap().iter().find(|r| r["path"] == "/data/password").unwrap().clone();
    assert!(row["live"].as_str().unwrap().contains(MARKER) && row["live"] != row["desired"], "{row}");
    assert_eq!(detail["pending"]["diff"].as_str().unwrap(), diff, "markers survive a restart");
    let (_, page) = daemon.get("/clusters/aws-cluster");
    assert_no_leak("the cluster page's drift table", &page);

    // The cluster refuses the update, quoting the database password: the failure's message,
    // history, commit status and log show a marker in its place.
    server.reject("databases", "/spec/password", "must be at most 8 characters");
    let run = daemon.strata(&["approve", "aws-cluster"]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    daemon.wait_for("the refused apply", Duration::from_secs(20), |d| {
        d.cluster("aws-cluster")["cluster"]["sync"] == "failed"
    });
    let (_, api) = daemon.get("/api/v1/clusters/aws-cluster");
    assert_no_leak("a refused apply in the API", &api);
    let detail: Value = serde_json::from_str(&api).unwrap();
    let message = detail["cluster"]["message"].as_str().unwrap();
    assert!(message.contains("spec.password: Invalid value: \"<redacted hmac:"), "{message}");
    let notes = || notes_on(&repo.path().join(".git"), &edit);
    daemon.wait_for("the failure's commit status", Duration::from_secs(10), |_| notes().contains("failure"));
    assert_no_leak("commit statuses", &notes());
    assert_no_leak("the daemon's log", &daemon.log());
}

#[test]
fn after_a_restart_what_a_cluster_runs_is_rendered_when_needed_and_drift_from_the_downtime_is_corrected() {
    let repo = Repo::example();
    let mut daemon = Daemon::start(&local(&repo), &example_targets());
    let ui = daemon.out("aws-cluster/hello-universe/deployment.ui.yaml");
    let service = daemon.out("aws-cluster/hello-universe/service.ui.yaml");
    daemon.wait_for("aws-cluster applied", Duration::from_secs(10), |_| file(&ui).contains("replicas: 1"));
    daemon.wait_example_applied(Duration::from_secs(10));
    assert!(daemon.terminate().success());

    // While it is down, someone scales the Deployment and deletes the Service.
    std::fs::write(&ui, file(&ui).replace("replicas: 1", "replicas: 7")).unwrap();
    std::fs::remove_file(&service).unwrap();

    // Nothing changed in Git: the store's record of what aws-cluster runs stands for its set
    // until the drift check needs the set itself.
    daemon.spawn();
    daemon.wait_for("the Deployment scaled back", Duration::from_secs(20), |_| file(&ui).contains("replicas: 1"));
    daemon.wait_for("the Service back", Duration::from_secs(20), |_| service.exists());
    let state = daemon.cluster("aws-cluster");
    assert_eq!(state["cluster"]["sync"], "applied", "{state}");
    assert_eq!(state["cluster"]["profile"], "aws-profile", "{state}");
}

/// Issue 25: once a set of manifests is applied its worker keeps only the set's identity, and
/// renders the set again for each drift check — from the head when the head renders that very
/// set, else at the revisions the cluster runs. Drift on a cluster holding an update is corrected
/// to what the cluster runs, not to the held edit; drift on one the commit did not reach, to what
/// it runs too.
#[test]
fn drift_is_corrected_to_what_a_cluster_runs_from_sets_rendered_again() {
    let repo = Repo::example();
    let mut daemon = Daemon::configure(&local(&repo), &example_targets(), "");
    daemon.set_drift_interval("1s");
    daemon.spawn();
    let held = daemon.out("aws-cluster/hello-universe/deployment.ui.yaml");
    let other = daemon.out("aws-staging/hello-universe/deployment.ui.yaml");
    daemon.wait_example_applied(Duration::from_secs(20));
    repo.edit(AWS_1_0_0, "replicas: 1", "replicas: 3");
    let edit = repo.commit("aws-profile 1.0.0: three replicas");
    daemon.wait_for("aws-cluster's update held", Duration::from_secs(10), |d| {
        d.cluster("aws-cluster")["pending"]["head_revision"] == edit.as_str()
    });

    std::fs::write(&held, file(&held).replace("replicas: 1", "replicas: 7")).unwrap();
    std::fs::write(&other, file(&other).replace("replicas: 2", "replicas: 9")).unwrap();
    daemon
        .wait_for("aws-cluster back to what it runs", Duration::from_secs(20), |_| file(&held).contains("replicas: 1"));
    daemon.wait_for("aws-staging back to what it runs", Duration::from_secs(20), |_| {
        file(&other).contains("replicas: 2")
    });
    // Checked again and again since: still what each runs, the update still held.
    std::thread::sleep(Duration::from_secs(2));
    assert!(file(&held).contains("replicas: 1"), "{}", file(&held));
    assert!(file(&other).contains("replicas: 2"), "{}", file(&other));
    assert_eq!(daemon.cluster("aws-cluster")["pending"]["head_revision"], edit.as_str());
    let log = daemon.log();
    assert!(!log.contains("Drift check failed"), "{log}");
    assert!(log.contains("Drift found. cluster=aws-cluster"), "{log}");
}

/// Issue 24 §4: after a session of mixed actions — through the CLI, the API and the view, some
/// refused — the audit trail has every one with who, what, from where and through which path,
/// and still has them after `kill -9`; the log has them as JSON lines with target `audit`.
#[test]
fn the_audit_trail_is_complete_after_mixed_actions_and_a_kill_9() {
    let repo = Repo::example();
    let mut daemon = Daemon::start(&local(&repo), &example_targets());
    let ui = daemon.out("aws-cluster/hello-universe/deployment.ui.yaml");
    daemon.wait_for("aws-cluster applied", Duration::from_secs(10), |_| file(&ui).contains("replicas: 1"));
    repo.edit(AWS_1_0_0, "replicas: 1", "replicas: 3");
    let edit = repo.commit("aws-profile 1.0.0: three replicas");
    daemon.wait_for("a pending update", Duration::from_secs(10), |d| {
        d.cluster("aws-cluster")["pending"]["head_revision"] == edit.as_str()
    });

    // 1. A refused approval (a revision nobody reviewed), through the API.
    let auth = format!("Bearer {TOKEN}");
    let (code, _) = daemon.request(
        "POST",
        "/api/v1/clusters/aws-cluster/approve",
        &[("Authorization", &auth)],
        &format!("{{\"by\": \"mallory\", \"revision\": \"{}\"}}", "0".repeat(40)),
    );
    assert_eq!(code, 409);
    // 2. A write with a wrong token: refused by the guard.
    let (code, _) =
        daemon.request("POST", "/api/v1/clusters/aws-staging/suspend", &[("Authorization", "Bearer nope")], "{}");
    assert_eq!(code, 401);
    // 3. A sign-in to the view, 4. a form without its CSRF token, 5. the approval through the view.
    const FORM: (&str, &str) = ("Content-Type", "application/x-www-form-urlencoded");
    let (_, head, _) = daemon.raw("POST", "/login", &[FORM], &format!("name=alice&token={TOKEN}&next=%2F"));
    let cookie = session_cookie(&head);
    let approve = |body: &str| daemon.raw("POST", "/clusters/aws-cluster/approve", &[FORM, ("Cookie", &cookie)], body);
    assert_eq!(approve(&format!("revision={edit}")).0, 403);
    let page = daemon.raw("GET", "/clusters/aws-cluster/pending", &[("Cookie", &cookie)], "").2;
    let csrf = page.split("name=\"csrf\" value=\"").nth(1).and_then(|s| s.split('"').next()).unwrap().to_string();
    assert_eq!(approve(&format!("csrf={csrf}&revision={edit}")).0, 303);
    daemon.wait_for("the approved update applied", Duration::from_secs(10), |_| file(&ui).contains("replicas: 3"));
    // 6. A suspension and 7. its end, through the CLI.
    daemon.strata(&["suspend", "aws-staging"]).ok();
    daemon.strata(&["resume", "aws-staging"]).ok();

    let expected = [
        ("resume-cluster", "done", "api (alice)", Some("aws-staging"), "cli"),
        ("suspend", "done", "api (alice)", Some("aws-staging"), "cli"),
        ("approve", "done", "api (alice)", Some("aws-cluster"), "view"),
        ("approve", "refused", "api (alice)", None, "view"),
        ("sign-in", "done", "api (alice)", None, "view"),
        ("write", "refused", "-", None, "api"),
        ("approve", "refused", "api (mallory)", Some("aws-cluster"), "api"),
    ];
    let check = |d: &Daemon| {
        let run = d.strata(&["audit", "-o", "json"]).ok();
        let entries: Vec<Value> = serde_json::from_str(&run.stdout).unwrap();
        let seen: Vec<(String, String, String, Option<String>, String)> = entries
            .iter()
            .map(|e| {
                let s = |k: &str| e[k].as_str().unwrap_or("").to_string();
                (s("action"), s("outcome"), s("who"), e["cluster"].as_str().map(String::from), s("via"))
            })
            .collect();
        let want: Vec<_> = expected
            .iter()
            .map(|(a, o, w, c, v)| (a.to_string(), o.to_string(), w.to_string(), c.map(String::from), v.to_string()))
            .collect();
        assert_eq!(seen, want, "{:#}", serde_json::json!(entries));
        for e in &entries {
            assert_eq!(e["from"], "127.0.0.1", "{e}");
        }
        let approved = entries.iter().find(|e| e["action"] == "approve" && e["outcome"] == "done").unwrap();
        assert_eq!(approved["revision"], edit.as_str());
        let refused = entries.iter().find(|e| e["who"] == "api (mallory)").unwrap();
        assert!(refused["detail"].as_str().unwrap().contains("not the revision you reviewed"), "{refused}");
        let wrong = entries.iter().find(|e| e["action"] == "write").unwrap();
        assert!(wrong["detail"].as_str().unwrap().starts_with("POST /api/v1/clusters/aws-staging/suspend"), "{wrong}");
    };
    check(&daemon);
    // Filters: by cluster, by user (the identity or as recorded), as a table.
    let staging = daemon.strata(&["audit", "--cluster", "aws-staging", "-o", "json"]).ok().stdout;
    assert_eq!(serde_json::from_str::<Vec<Value>>(&staging).unwrap().len(), 2, "{staging}");
    let mallory = daemon.strata(&["audit", "--user", "api (mallory)", "-o", "json"]).ok().stdout;
    assert_eq!(serde_json::from_str::<Vec<Value>>(&mallory).unwrap().len(), 1, "{mallory}");
    let table = daemon.strata(&["audit", "--since", "1h"]).ok().stdout;
    assert!(table.starts_with("WHEN") && table.contains("cluster/aws-cluster"), "{table}");
    let (code, body) = daemon.get("/api/v1/audit?user=api&cluster=aws-cluster");
    assert_eq!(code, 200, "{body}");
    assert_eq!(serde_json::from_str::<Vec<Value>>(&body).unwrap().len(), 2, "{body}");
    let page = daemon.raw("GET", "/audit?cluster=aws-staging", &[("Cookie", &cookie)], "").2;
    assert!(page.contains("resume-cluster") && !page.contains(">sign-in<"), "{page}");
    // The log has each as a line of its own.
    assert!(daemon.log().matches(" audit: ").count() >= expected.len(), "{}", daemon.log());

    // kill -9, and start again: the trail is whole.
    daemon.kill9();
    daemon.spawn();
    daemon.wait_for("the daemon back", Duration::from_secs(20), |d| d.get("/readyz").0 == 200);
    check(&daemon);
}

/// Issue 24 §3: approval rules in the repository. Two distinct people of group sre must approve
/// aws-cluster's update; another group is refused with 403 naming the rule, the same identity
/// twice counts once, and the update says who may still approve until both are in. A commit
/// that loosens the rules together with an edit is governed by the rules before it.
#[test]
fn approval_rules_need_two_people_of_the_group_and_bind_their_own_changes() {
    const RULES: &str = "apiVersion: strata.dev/v1\nkind: ApprovalRules\nmetadata: { name: prod }\nspec:\n  rules:\n    - name: two-sre\n      profiles: [aws-profile]\n      tags: [\"service:hello-universe-frontend\"]\n      approvers: { groups: [sre] }\n      required: 2\n";
    let repo = Repo::example();
    repo.write("approvals/prod.yaml", RULES);
    repo.commit("approval rules: two of sre for the frontend");
    let mut daemon = Daemon::configure(&local(&repo), &example_targets(), "");
    daemon.name_tokens(&[("ci", "sre"), ("ops", "sre"), ("dev", "dev"), ("test", "sre")]);
    daemon.spawn();
    let ui = daemon.out("aws-cluster/hello-universe/deployment.ui.yaml");
    daemon.wait_for("aws-cluster applied", Duration::from_secs(10), |_| file(&ui).contains("replicas: 1"));

    repo.edit(AWS_1_0_0, "replicas: 1", "replicas: 3");
    repo.commit("aws-profile 1.0.0: three replicas");
    // Someone else commits after it: the pending revision moves to their commit, and the edit's
    // author (test) is still an author of the change the cluster would take.
    let edit = repo.commit_as("Olga Ops <olga@example.com>", "an unrelated commit by someone else");
    daemon.wait_for("a pending update", Duration::from_secs(10), |d| {
        d.cluster("aws-cluster")["pending"]["head_revision"] == edit.as_str()
    });
    let summary = |d: &Daemon| d.cluster("aws-cluster")["pending"]["summary"].as_str().unwrap_or("").to_string();
    assert!(
        summary(&daemon).contains("needs 2 more approvals under rule prod/two-sre (group sre)"),
        "{}",
        summary(&daemon)
    );
    let approve = |token: &str| {
        daemon.request(
            "POST",
            "/api/v1/clusters/aws-cluster/approve",
            &[("Authorization", &format!("Bearer {token}"))],
            &format!("{{\"revision\": \"{edit}\"}}"),
        )
    };
    // Another group: 403, naming the rule and who may.
    let (code, body) = approve("dev-secret");
    assert_eq!(code, 403, "{body}");
    assert!(
        body.contains("dev (groups: dev) may not approve this update: rule prod/two-sre (approvals/prod.yaml:6): approvers are group sre"),
        "{body}"
    );
    // The edit's author, though in sre and though the head is another's commit: does not count.
    let (code, body) = approve("test-secret");
    assert_eq!(code, 403, "{body}");
    assert!(body.contains("test wrote a commit of this change, and an author's approval does not count"), "{body}");
    // One of sre: still pending, and it says who may still approve.
    assert_eq!(approve("ci-secret").0, 202);
    daemon.wait_for("one approval counted", Duration::from_secs(10), |d| {
        summary(d).contains("needs 1 more approval under rule prod/two-sre (group sre), approved by ci")
    });
    // The approval's re-evaluation is over once one asked after it is.
    daemon.wait_reevaluated("edge-lab");
    assert!(file(&ui).contains("replicas: 1"), "one person is not two");
    // The same identity again: refused, it counts once.
    let (code, body) = approve("ci-secret");
    assert_eq!(code, 403, "{body}");
    assert!(body.contains("ci approved this revision already; rule prod/two-sre"), "{body}");
    // The view shows the reason instead of the button to a person the rule does not admit.
    const FORM: (&str, &str) = ("Content-Type", "application/x-www-form-urlencoded");
    let (_, head, _) = daemon.raw("POST", "/login", &[FORM], "token=dev-secret&next=%2F");
    let cookie = session_cookie(&head);
    let page = daemon.raw("GET", "/clusters/aws-cluster/pending", &[("Cookie", &cookie)], "").2;
    assert!(
        page.contains("<button id=\"approve\" disabled>")
            && page.contains("may not approve this update: rule prod&#x2f;two-sre")
            && !page.contains("action=\"/clusters/aws-cluster/approve\""),
        "{page}"
    );
    // A second person of sre: applied.
    assert_eq!(approve("ops-secret").0, 202);
    daemon.wait_for("the approved update applied", Duration::from_secs(10), |_| file(&ui).contains("replicas: 3"));
    let audit = daemon.strata(&["audit", "--cluster", "aws-cluster", "-o", "json"]).ok().stdout;
    let entries: Vec<Value> = serde_json::from_str(&audit).unwrap();
    let outcomes: Vec<(String, String)> =
        entries.iter().map(|e| (e["who"].as_str().unwrap().into(), e["outcome"].as_str().unwrap().into())).collect();
    let expected = [("ops", "done"), ("ci", "refused"), ("ci", "done"), ("test", "refused"), ("dev", "refused")];
    assert_eq!(outcomes, expected.map(|(a, b)| (a.to_string(), b.to_string())), "{audit}");

    // A commit that loosens the rule (anyone of dev, one approval) and edits the profile again:
    // its own edit is still governed by the rule before it.
    repo.write(
        "approvals/prod.yaml",
        &RULES.replace("groups: [sre]", "groups: [dev]").replace("required: 2", "required: 1"),
    );
    repo.edit(AWS_1_0_0, "replicas: 3", "replicas: 4");
    let loosened = repo.commit("approval rules: dev may approve alone; four replicas");
    daemon.wait_for("the next pending update", Duration::from_secs(10), |d| {
        d.cluster("aws-cluster")["pending"]["head_revision"] == loosened.as_str()
    });
    let (code, body) = daemon.request(
        "POST",
        "/api/v1/clusters/aws-cluster/approve",
        &[("Authorization", "Bearer dev-secret")],
        &format!("{{\"revision\": \"{loosened}\"}}"),
    );
    assert_eq!(code, 403, "the rules before the commit govern it: {body}");
    assert!(body.contains("rule prod/two-sre (approvals/prod.yaml:6): approvers are group sre"), "{body}");
}

/// Bad approval rules are diagnostics with file and line, and the revision is rejected.
#[test]
fn invalid_approval_rules_are_reported_with_file_and_line() {
    let repo = Repo::example();
    repo.write(
        "approvals/prod.yaml",
        "apiVersion: strata.dev/v1\nkind: ApprovalRules\nmetadata: { name: prod }\nspec:\n  rules:\n    - approvers: { groups: [sre] }\n      required: 0\n",
    );
    repo.commit("a rule nobody can meet");
    let run = repo.strata(&["validate"]);
    assert_eq!(run.code, 1, "{}", run.stdout);
    assert!(
        run.stderr.contains("error[schema]: approvals/prod.yaml:7: approval rule prod/1: `required` is 0"),
        "{}",
        run.stderr
    );
}

/// A commit that changes one cluster's file decides that cluster again and leaves the others as
/// they run: the evaluation costs what the change reaches. (Debug builds decide the others all
/// the same and stop the evaluation if one of them had something to do.)
#[test]
fn a_commit_to_one_cluster_decides_only_that_cluster_again() {
    let repo = Repo::example();
    let daemon = Daemon::start(&local(&repo), &example_targets());
    let ui = daemon.out("aws-cluster/hello-universe/deployment.ui.yaml");
    daemon.wait_for("aws-cluster applied", Duration::from_secs(10), |_| file(&ui).contains("replicas: 1"));
    let (_, all) = daemon.get("/api/v1/clusters");
    let clusters = serde_json::from_str::<Value>(&all).unwrap().as_array().map_or(0, Vec::len);
    assert!(clusters > 1, "{all}");
    // The first evaluation after a start gives every worker its set; the next finds them running.
    for replicas in [2, 3] {
        repo.edit(
            AWS_CLUSTER,
            "  updates: manual",
            &format!("  overrides:\n    hello-universe: {{ replicas: {replicas} }}\n  updates: manual"),
        );
        let head = repo.commit(&format!("{replicas} replicas for aws-cluster"));
        daemon.wait_for("the override applied", Duration::from_secs(10), |_| {
            file(&ui).contains(&format!("replicas: {replicas}"))
        });
        daemon.wait_settled(&head);
        repo.edit(
            AWS_CLUSTER,
            &format!("  overrides:\n    hello-universe: {{ replicas: {replicas} }}\n  updates: manual"),
            "  updates: manual",
        );
    }
    let last = &daemon.revision()["evaluations"][0];
    assert_eq!(last["verdict"], "loaded", "{last}");
    assert_eq!(last["decided"], 1, "only aws-cluster is decided again: {last}");
    assert_eq!(last["unchanged"], clusters - 1, "{last}");
    // Nor were the others looked at one by one: the change and the writes since reached none of
    // them (the workers were all running already; debug builds look at them all the same and
    // stop the evaluation if that finds otherwise).
    let looked = last["looked_at"].as_u64().expect("looked_at");
    assert!(looked < clusters as u64 - 1, "the quiet clusters were all looked at: {last}");
}
