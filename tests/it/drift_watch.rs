//! Drift found through watches: `strata run` against the API server stand-in, with the full
//! drift check an hour away (`drift.interval` and `drift.resync`), so whatever is found within
//! the test's time was found by a watch. Edits come from `kubectl`, as someone's would.

use crate::apiserver;
use crate::common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use apiserver::{ApiServer, Logged};
use common::Repo;
use common::daemon::*;

fn kubectl(kubeconfig: &Path, args: &[&str]) {
    let out = Command::new("kubectl").arg("--kubeconfig").arg(kubeconfig).args(args).output().expect("kubectl runs");
    assert!(out.status.success(), "kubectl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
}

/// A daemon applying aws-cluster (drift policy as given) to a fresh stand-in, once its watches run.
struct Watched {
    server: ApiServer,
    _kube: tempfile::TempDir,
    kubeconfig: PathBuf,
    daemon: Daemon,
    _repo: Repo,
}

fn watched(policy: &str) -> Watched {
    let server = ApiServer::start();
    let kube = tempfile::tempdir().unwrap();
    let kubeconfig = server.kubeconfig(kube.path());
    let repo = Repo::example();
    repo.edit(AWS_CLUSTER, "drift: correct", &format!("drift: {policy}"));
    repo.commit("drift policy");
    let targets = format!("  aws-cluster: {{ kubeconfig: {} }}\n", kubeconfig.display());
    let daemon = Daemon::start(&local(&repo), &targets);
    daemon.wait_for("aws-cluster applied", Duration::from_secs(20), |d| {
        d.cluster("aws-cluster")["cluster"]["sync"] == "applied"
    });
    let w = Watched { server, _kube: kube, kubeconfig, daemon, _repo: repo };
    w.wait_watching();
    w
}

impl Watched {
    fn replicas(&self) -> i64 {
        self.server.object("deployments", Some("hello-universe"), "ui").unwrap()["spec"]["replicas"].as_i64().unwrap()
    }

    fn scale(&self, replicas: u32) {
        kubectl(
            &self.kubeconfig,
            &["scale", "deployment", "ui", "-n", "hello-universe", &format!("--replicas={replicas}")],
        );
    }

    /// Until every kind's watch is open (the daemon logs how many kinds it watches).
    fn wait_watching(&self) {
        self.daemon.wait_for("the watches open", Duration::from_secs(20), |d| {
            let log = d.log();
            let kinds = log
                .lines()
                .rev()
                .find(|l| l.contains("Watching for drift."))
                .and_then(|l| l.split("kinds=").nth(1))
                .and_then(|n| n.split_whitespace().next())
                .and_then(|n| n.parse::<usize>().ok());
            kinds.is_some_and(|kinds| self.server.watch_count() >= kinds)
        });
    }

    fn drift(&self) -> Vec<String> {
        let detail = self.daemon.cluster("aws-cluster");
        detail["drift"]
            .as_array()
            .map(|rows| {
                rows.iter()
                    .map(|r| format!("{} {}", r["object"].as_str().unwrap(), r["path"].as_str().unwrap()))
                    .collect()
            })
            .unwrap_or_default()
    }
}

fn deployment_requests(server: &ApiServer) -> Vec<Logged> {
    server.requests().into_iter().filter(|r| r.path.ends_with("/deployments")).collect()
}

#[test]
fn a_live_edit_and_a_deletion_are_corrected_within_seconds_not_at_the_interval() {
    let w = watched("correct");
    w.scale(5);
    w.daemon.wait_for("the edit corrected", Duration::from_secs(15), |_| w.replicas() == 1);
    assert!(w.daemon.log().contains("Drift found."), "{}", w.daemon.log());

    kubectl(&w.kubeconfig, &["delete", "deployment", "ui", "-n", "hello-universe"]);
    w.daemon.wait_for("the deleted Deployment created again", Duration::from_secs(15), |_| {
        w.server.object("deployments", Some("hello-universe"), "ui").is_some()
    });
    assert_eq!(w.replicas(), 1);
}

#[test]
fn a_live_edit_is_reported_within_seconds_and_the_finding_goes_when_it_is_undone() {
    let w = watched("report");
    w.scale(4);
    w.daemon.wait_for("the edit reported", Duration::from_secs(15), |_| {
        w.drift() == ["Deployment/hello-universe/ui /spec/replicas"]
    });
    let detail = w.daemon.cluster("aws-cluster");
    let row = &detail["drift"][0];
    assert_eq!((row["live"].as_str(), row["desired"].as_str()), (Some("4"), Some("1")), "{detail}");
    assert_eq!(w.replicas(), 4, "reported, not corrected");

    // Someone puts it back: the watch sees it is what strata applied, and the finding goes.
    w.scale(1);
    w.daemon.wait_for("the finding cleared", Duration::from_secs(15), |_| w.drift().is_empty());
}

#[test]
fn a_closed_watch_resumes_from_where_it_was_and_still_sees_edits() {
    let w = watched("correct");
    w.server.clear_requests();
    // As when an API server restarts: every watch ends.
    w.server.close_watches();
    w.daemon.wait_for("the watch resumed", Duration::from_secs(15), |_| {
        deployment_requests(&w.server)
            .iter()
            .any(|r| r.watch && r.query.contains("resourceVersion=") && !r.query.contains("resourceVersion=0&"))
    });
    w.wait_watching();
    let relisted = deployment_requests(&w.server).iter().any(|r| !r.watch);
    assert!(!relisted, "resumed, not listed again: {:?}", deployment_requests(&w.server));

    w.scale(3);
    w.daemon.wait_for("the edit corrected", Duration::from_secs(15), |_| w.replicas() == 1);
}

#[test]
fn a_watch_whose_history_is_gone_lists_again_and_finds_what_changed_meanwhile() {
    let w = watched("correct");
    // A partition: the open watches go silent for good. The edit made meanwhile reaches none.
    w.server.set_black_hole(true);
    w.server.set_black_hole(false);
    w.scale(6);
    // No watch open to deliver it (the full check is an hour away): nothing can correct it yet.
    assert_eq!(w.server.watch_count(), 0, "every watch was cut off before the edit");
    assert_eq!(w.replicas(), 6, "no watch saw it");
    // The history it happened in is compacted away; then the silent watches end, and resuming
    // from where they were is 410 Gone.
    w.server.compact();
    w.server.clear_requests();
    w.server.close_watches();
    w.daemon.wait_for("the edit found by the relist and corrected", Duration::from_secs(20), |_| w.replicas() == 1);
    let requests = deployment_requests(&w.server);
    let resumed = requests.iter().position(|r| r.watch && r.query.contains("resourceVersion="));
    let listed = requests.iter().rposition(|r| !r.watch);
    assert!(
        matches!((resumed, listed), (Some(r), Some(l)) if r < l),
        "a resume (answered 410), then a list: {requests:?}"
    );
}
