//! Fleet rollouts end to end: a fleet of clusters in a real Git repository, a rollout policy
//! under `rollouts/`, a new aws-profile version reached by the clusters' ranges, the real
//! `strata run` with directory targets and the API server stand-in, and the rollout watched as
//! an operator watches it (the targets, `strata rollout status`, the API, commit statuses).

use crate::apiserver;
use crate::common;

use std::collections::BTreeMap;
use std::process::Command;
use std::time::{Duration, Instant};

use apiserver::ApiServer;
use common::Repo;
use common::daemon::*;
use serde_json::Value;

const WAIT: Duration = Duration::from_secs(30);

fn image(tag: &str) -> String {
    format!("ghcr.io/spectrocloud/hello-universe:{tag}")
}

/// The image aws-profile `version` deploys: what tells which version a cluster runs (1.1.0 as
/// the example has it, the versions tests publish with a tag of their own).
fn deploys(version: &str) -> String {
    match version {
        "1.1.0" => image("1.2.0"),
        v => image(&format!("profile-{v}")),
    }
}

/// A policy `default` governing aws-profile with `waves` (YAML list items, indented by four)
/// and `more` spec fields.
fn policy(waves: &str, more: &str) -> String {
    format!(
        "apiVersion: strata.dev/v1\nkind: Rollout\nmetadata: {{ name: default }}\nspec:\n  profiles: [aws-profile]\n  waves:\n{waves}{more}"
    )
}

/// The strata notes on `revision` (commit statuses from `status: { provider: git-notes }`).
fn notes_on(repo: &Repo, revision: &str) -> String {
    let out = Command::new("git")
        .arg("--git-dir")
        .arg(repo.path().join(".git"))
        .args(["log", "-1", "--notes=strata", "--format=%N", revision])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A fleet: the example repository with its clusters replaced by `clusters` (name, tags), each
/// on aws-profile `^1` (1.1.0 at first), and a rollout policy `policy` in `rollouts/default.yaml`.
fn fleet(clusters: &[(&str, &[&str])], policy: &str) -> Repo {
    let repo = Repo::example();
    for old in ["aws-cluster", "aws-staging", "edge-berlin", "edge-lab"] {
        repo.remove(&format!("clusters/{old}.yaml"));
    }
    for (name, tags) in clusters {
        let tags: Vec<String> = tags.iter().map(|t| format!("{t:?}")).collect();
        repo.write(
            &format!("clusters/{name}.yaml"),
            &format!(
                "apiVersion: strata.dev/v1\nkind: Cluster\nmetadata:\n  name: {name}\n  tags: [{}]\nspec:\n  profile: {{ name: aws-profile, version: \"^1\" }}\n  updates: auto\n",
                tags.join(", ")
            ),
        );
    }
    repo.write("rollouts/default.yaml", policy);
    repo.commit("a fleet with a rollout policy");
    repo
}

/// Publishes aws-profile `version` (1.1.0 with the hello-universe image tagged `version`) and
/// commits it; returns the commit.
fn publish(repo: &Repo, version: &str) -> String {
    let profile = repo
        .read("profiles/aws-profile/1.1.0/profile.yaml")
        .replace("version: 1.1.0", &format!("version: {version}"))
        .replace(&deploys("1.1.0"), &deploys(version));
    repo.write(&format!("profiles/aws-profile/{version}/profile.yaml"), &profile);
    repo.commit(&format!("aws-profile {version}"))
}

fn targets(names: &[&str]) -> String {
    directory_targets(&names.iter().map(|n| (*n, *n)).collect::<Vec<_>>())
}

/// The hello-universe image a directory target holds ("" before the first apply).
fn runs(daemon: &Daemon, cluster: &str) -> String {
    let text = file(&daemon.out(&format!("{cluster}/hello-universe/deployment.ui.yaml")));
    let Some(at) = text.find(&image("")) else { return String::new() };
    let tag: String = text[at..].chars().take_while(|c| !c.is_whitespace() && *c != '"').collect();
    tag
}

fn rollout(daemon: &Daemon, name: &str) -> Value {
    let (code, body) = daemon.request(
        "GET",
        &format!("/api/v1/rollouts/{name}"),
        &[("Authorization", &format!("Bearer {TOKEN}"))],
        "",
    );
    assert_eq!(code, 200, "GET /api/v1/rollouts/{name}: {body}");
    serde_json::from_str(&body).unwrap_or_else(|e| panic!("{e}: {body}"))
}

fn wave<'a>(rollout: &'a Value, name: &str) -> &'a Value {
    rollout["waves"].as_array().and_then(|w| w.iter().find(|w| w["name"] == name)).unwrap_or(&Value::Null)
}

/// When each cluster was first seen running `want`, watching every `clusters` until all do or
/// `until` says to stop; every image each cluster was seen with, in order.
struct Watch {
    first: BTreeMap<String, Instant>,
    seen: BTreeMap<String, Vec<String>>,
}

impl Watch {
    fn new() -> Watch {
        Watch { first: BTreeMap::new(), seen: BTreeMap::new() }
    }

    fn look(&mut self, clusters: &[&str], now: impl Fn(&str) -> String, want: &str) {
        for c in clusters {
            let image = now(c);
            let seen = self.seen.entry(c.to_string()).or_default();
            if seen.last() != Some(&image) {
                seen.push(image.clone());
            }
            if image == want {
                self.first.entry(c.to_string()).or_insert_with(Instant::now);
            }
        }
    }
}

#[track_caller]
fn watch_until(
    daemon: &Daemon,
    watch: &mut Watch,
    clusters: &[&str],
    want: &str,
    what: &str,
    mut done: impl FnMut(&Daemon, &Watch) -> bool,
) {
    // What each cluster was seen running, shown on a timeout.
    common::wait_until_with(
        what,
        WAIT,
        Duration::from_millis(20),
        || {
            watch.look(clusters, |c| runs(daemon, c), want);
            (done(daemon, watch), watch.seen.clone())
        },
        |(done, _)| *done,
        || format!("rollout: {:#}\n{}", rollout(daemon, "default"), daemon.log_section()),
    );
}

#[test]
fn waves_go_in_order_each_after_the_bake_of_the_one_before() {
    let names = ["stage-1", "stage-2", "prod-a", "prod-b", "prod-c", "edge-1"];
    let clusters: &[(&str, &[&str])] = &[
        ("stage-1", &["env:staging"]),
        ("stage-2", &["env:staging"]),
        ("prod-a", &["env:prod"]),
        ("prod-b", &["env:prod"]),
        ("prod-c", &["env:prod"]),
        ("edge-1", &["env:edge"]),
    ];
    let repo = fleet(
        clusters,
        "apiVersion: strata.dev/v1\nkind: Rollout\nmetadata: { name: default }\nspec:\n  profiles: [aws-profile]\n  waves:\n    - name: staging\n      selector: { tags: [\"env:staging\"] }\n      bake: 2s\n    - name: canary\n      selector: { tags: [\"env:prod\"] }\n      maxClusters: 1\n      bake: 2s\n    - name: rest\n",
    );
    let daemon = Daemon::start(&local(&repo), &targets(&names));
    // New clusters are not held: the whole fleet gets 1.1.0 at once.
    daemon.wait_for("the fleet on 1.1.0", WAIT, |d| names.iter().all(|n| runs(d, n) == deploys("1.1.0")));
    assert_eq!(rollout(&daemon, "default")["state"], "idle");

    let head = publish(&repo, "1.2.0");
    let want = deploys("1.2.0");
    let mut watch = Watch::new();
    watch_until(&daemon, &mut watch, &names, &want, "staging updated", |_, w| {
        ["stage-1", "stage-2"].iter().all(|n| w.first.contains_key(*n))
    });
    let r = rollout(&daemon, "default");
    assert_eq!(r["revision"], head.as_str(), "{r}");
    assert_eq!(r["state"], "progressing", "{r}");
    // While staging bakes, nothing else moves.
    watch_until(&daemon, &mut watch, &names, &want, "staging baking", |d, _| {
        wave(&rollout(d, "default"), "staging")["state"] == "baking"
    });
    let status = daemon.strata(&["rollout", "status", "default"]).ok().stdout;
    assert!(status.contains("staging") && status.contains("baking"), "{status}");
    watch_until(&daemon, &mut watch, &names, &want, "the whole fleet on 1.2.0", |_, w| w.first.len() == names.len());

    // staging, then the canary (the first prod cluster by name), then the rest.
    let last = |ns: &[&str]| ns.iter().map(|n| watch.first[*n]).max().unwrap();
    let first = |ns: &[&str]| ns.iter().map(|n| watch.first[*n]).min().unwrap();
    let (staging, canary, rest) = (["stage-1", "stage-2"], ["prod-a"], ["edge-1", "prod-b", "prod-c"]);
    // Seen up to one poll late, so a bake of 2 s shows as at least 1.8 s between waves.
    let bake = Duration::from_millis(1800);
    assert!(first(&canary) >= last(&staging) + bake, "the canary waited for staging's bake: {:?}", watch.first);
    assert!(first(&rest) >= last(&canary) + bake, "the rest waited for the canary's bake: {:?}", watch.first);
    for n in names {
        assert_eq!(watch.seen[n], [deploys("1.1.0"), want.clone()], "{n} went straight from 1.1.0 to 1.2.0");
    }
    daemon.wait_for("the rollout complete", WAIT, |d| rollout(d, "default")["state"] == "complete");
    let r = rollout(&daemon, "default");
    let members = |w: &str| -> Vec<String> {
        wave(&r, w)["clusters"].as_array().unwrap().iter().map(|c| c["cluster"].as_str().unwrap().to_string()).collect()
    };
    assert_eq!(members("staging"), ["stage-1", "stage-2"]);
    assert_eq!(members("canary"), ["prod-a"]);
    assert_eq!(members("rest"), ["edge-1", "prod-b", "prod-c"]);
}

/// From the first write each API server answered to its last request (watches aside): the time
/// its cluster's apply was in flight (reads before it, as a starting daemon's look at the
/// inventories, are no apply).
fn in_flight(servers: &BTreeMap<&str, ApiServer>, latency: Duration) -> BTreeMap<String, (Instant, Instant)> {
    let mut out = BTreeMap::new();
    for (name, server) in servers {
        let requests: Vec<_> = server.requests().into_iter().filter(|r| !r.watch).collect();
        let first = requests.iter().find(|r| r.is_write());
        if let (Some(first), Some(last)) = (first, requests.last()) {
            out.insert(name.to_string(), (first.received, last.received + latency));
        }
    }
    out
}

/// The most intervals open at one instant.
fn most_at_once(intervals: &BTreeMap<String, (Instant, Instant)>) -> usize {
    intervals
        .values()
        .map(|(start, _)| intervals.values().filter(|(s, e)| s <= start && start < e).count())
        .max()
        .unwrap_or(0)
}

/// An API server stand-in for each cluster: the kubeconfigs' directory (kept while it lives),
/// the servers by cluster, and the host config's `targets` lines for them.
fn api_server_each<'a>(names: &[&'a str]) -> (tempfile::TempDir, BTreeMap<&'a str, ApiServer>, String) {
    let kube = tempfile::tempdir().unwrap();
    let mut servers = BTreeMap::new();
    let mut targets = String::new();
    for &name in names {
        let server = ApiServer::start();
        let dir = kube.path().join(name);
        std::fs::create_dir_all(&dir).unwrap();
        targets.push_str(&format!("  {name}: {{ kubeconfig: {} }}\n", server.kubeconfig(&dir).display()));
        servers.insert(name, server);
    }
    (kube, servers, targets)
}

#[test]
fn max_parallel_is_never_exceeded_on_the_api_server() {
    let names = ["w-1", "w-2", "w-3", "w-4", "w-5"];
    let clusters: Vec<(&str, &[&str])> = names.iter().map(|n| (*n, &["env:prod"][..])).collect();
    let repo = fleet(&clusters, &policy("    - name: prod\n      maxParallel: 40%\n", ""));
    let (_kube, servers, targets) = api_server_each(&names);
    let daemon = Daemon::start(&local(&repo), &targets);
    let ui = |s: &ApiServer| {
        s.object("deployments", Some("hello-universe"), "ui")
            .map(|d| d["spec"]["template"]["spec"]["containers"][0]["image"].as_str().unwrap_or("").to_string())
            .unwrap_or_default()
    };
    daemon.wait_for("the fleet on 1.1.0", WAIT, |d| {
        names.iter().all(|n| d.cluster(n)["cluster"]["sync"] == "applied" && ui(&servers[n]) == deploys("1.1.0"))
    });
    // Every request slow, so that applies last long enough to overlap if they may.
    let latency = Duration::from_millis(100);
    for server in servers.values() {
        server.clear_requests();
        server.set_latency(latency);
    }
    publish(&repo, "1.2.0");
    daemon.wait_for("the fleet on 1.2.0", Duration::from_secs(60), |_| {
        servers.values().all(|s| ui(s) == deploys("1.2.0"))
    });
    daemon.wait_for("the rollout complete", WAIT, |d| rollout(d, "default")["state"] == "complete");
    let intervals = in_flight(&servers, latency);
    assert_eq!(intervals.len(), names.len(), "every cluster was applied: {intervals:?}");
    // 40% of 5 clusters is 2 at a time: never more, and the slots were used.
    assert_eq!(most_at_once(&intervals), 2, "{intervals:?}");
}

/// A fleet whose middle wave has a cluster on the API server stand-in whose workload fails its
/// rollout once the change arrives; the rest on directory targets. Returns the daemon, the
/// repository, the server, and the commit rolled out, once the rollout halted.
fn fail_in_the_middle(on_failure: &str) -> (Daemon, Repo, ApiServer, String) {
    let names = ["stage-1", "prod-a", "prod-c", "edge-1", "edge-2"];
    let clusters: &[(&str, &[&str])] = &[
        ("stage-1", &["env:staging"]),
        ("prod-a", &["env:prod"]),
        ("prod-b", &["env:prod"]),
        ("prod-c", &["env:prod"]),
        ("edge-1", &["env:edge"]),
        ("edge-2", &["env:edge"]),
    ];
    let repo = fleet(
        clusters,
        &policy(
            "    - name: staging\n      selector: { tags: [\"env:staging\"] }\n    - name: prod\n      selector: { tags: [\"env:prod\"] }\n      maxParallel: 1\n    - name: edge\n",
            &format!("  onFailure: {on_failure}\n"),
        ),
    );
    let server = ApiServer::start();
    let kube = tempfile::tempdir().unwrap();
    let targets =
        format!("{}  prod-b: {{ kubeconfig: {} }}\n", targets(&names), server.kubeconfig(kube.path()).display());
    let daemon = Daemon::start_with(&local(&repo), &targets, "status: { provider: git-notes }\n");
    daemon.wait_for("the fleet on 1.1.0", WAIT, |d| {
        names.iter().all(|n| runs(d, n) == deploys("1.1.0")) && d.cluster("prod-b")["cluster"]["sync"] == "applied"
    });
    server.set_rollout("hello-universe", "ui", apiserver::Rollout::Failed);
    let head = publish(&repo, "1.2.0");
    daemon.wait_for("the rollout halted", WAIT, |d| rollout(d, "default")["state"] == "halted");
    drop(kube);
    (daemon, repo, server, head)
}

fn deployed(server: &ApiServer) -> String {
    server
        .object("deployments", Some("hello-universe"), "ui")
        .map(|d| d["spec"]["template"]["spec"]["containers"][0]["image"].as_str().unwrap_or("").to_string())
        .unwrap_or_default()
}

#[test]
fn a_failing_cluster_halts_the_rollout_and_later_waves_are_untouched() {
    let (daemon, repo, server, head) = fail_in_the_middle("halt");
    let r = rollout(&daemon, "default");
    assert!(r["halt"].to_string().contains("prod-b"), "the halt names the cluster: {r}");
    let state = |w: &str, c: &str| -> String {
        wave(&r, w)["clusters"].as_array().unwrap().iter().find(|x| x["cluster"] == c).unwrap()["state"]
            .as_str()
            .unwrap()
            .to_string()
    };
    assert_eq!(state("staging", "stage-1"), "updated");
    // prod goes one at a time by name: prod-a, then prod-b fails, prod-c is never released.
    assert_eq!(state("prod", "prod-a"), "updated");
    assert_eq!(state("prod", "prod-b"), "failed");
    assert_eq!(state("prod", "prod-c"), "waiting");
    assert_eq!(wave(&r, "prod")["state"], "halted");
    assert_eq!(wave(&r, "edge")["state"], "held");
    assert_eq!(deployed(&server), deploys("1.2.0"), "the failing cluster keeps what it got (halt, not rollback)");
    // Held, and held it stays when the daemon decides again (prod-b, unhealthy, keeps looking).
    daemon.wait_reevaluated_but("stage-1", &["prod-b"]);
    for held in ["prod-c", "edge-1", "edge-2"] {
        assert_eq!(runs(&daemon, held), deploys("1.1.0"), "{held} untouched");
        let pending = daemon.cluster(held)["pending"].to_string();
        assert!(pending.contains("rollout"), "{held}: {pending}");
    }
    assert_eq!(runs(&daemon, "stage-1"), deploys("1.2.0"));
    let status = daemon.strata(&["rollout", "status", "default"]).ok().stdout;
    assert!(status.contains("halted") && status.contains("prod-b"), "{status}");
    daemon.wait_for("a failure status naming the cluster", WAIT, |_| {
        let notes = notes_on(&repo, &head);
        notes.contains("strata/rollout/default failure") && notes.contains("prod-b")
    });
    let metrics = daemon.get("/metrics").1;
    assert!(metrics.contains("strata_rollout_clusters{rollout=\"default\",state=\"failed\"} 1"), "{metrics}");
    assert!(metrics.contains("strata_rollout_clusters{rollout=\"default\",state=\"waiting\"} 3"), "{metrics}");
    // One numbering of waves: the API's, the CLI's and the metric's (halted in prod, the second
    // of the three waves that hold clusters).
    let r = rollout(&daemon, "default");
    assert_eq!((wave(&r, "prod")["number"].as_u64(), wave(&r, "prod")["of"].as_u64()), (Some(2), Some(3)), "{r}");
    assert!(status.contains("\n2. prod  halted"), "{status}");
    assert!(metrics.contains("strata_rollout_wave{rollout=\"default\"} 2"), "{metrics}");
}

#[test]
fn with_on_failure_rollback_the_updated_clusters_return_to_what_they_ran() {
    let (daemon, _repo, server, _) = fail_in_the_middle("rollback");
    daemon.wait_for("stage-1 and prod-a back on 1.1.0", WAIT, |d| {
        runs(d, "stage-1") == deploys("1.1.0") && runs(d, "prod-a") == deploys("1.1.0")
    });
    daemon.wait_for("prod-b back on 1.1.0", WAIT, |_| deployed(&server) == deploys("1.1.0"));
    daemon.wait_for("every rollback recorded", WAIT, |d| {
        let r = rollout(d, "default");
        let states: Vec<String> = r["waves"]
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|w| w["clusters"].as_array().unwrap().iter())
            .map(|c| format!("{}={}", c["cluster"].as_str().unwrap(), c["state"].as_str().unwrap()))
            .collect();
        states
            == [
                "stage-1=rolled-back",
                "prod-a=rolled-back",
                "prod-b=rolled-back",
                "prod-c=waiting",
                "edge-1=waiting",
                "edge-2=waiting",
            ]
    });
    for held in ["prod-c", "edge-1", "edge-2"] {
        assert_eq!(runs(&daemon, held), deploys("1.1.0"), "{held} untouched");
    }
}

fn api_post(daemon: &Daemon, path: &str, token: Option<&str>) -> (u16, String) {
    let auth = token.map(|t| format!("Bearer {t}"));
    let headers: Vec<(&str, &str)> = auth.iter().map(|a| ("Authorization", a.as_str())).collect();
    daemon.request("POST", path, &headers, "{}")
}

#[test]
fn a_manual_wave_waits_for_promotion_and_manual_clusters_for_their_own_approval() {
    let names = ["stage-1", "prod-a", "prod-m", "edge-1"];
    let clusters: &[(&str, &[&str])] =
        &[("stage-1", &["env:staging"]), ("prod-a", &["env:prod"]), ("prod-m", &["env:prod"]), ("edge-1", &[])];
    let repo = fleet(
        clusters,
        &policy(
            "    - name: staging\n      selector: { tags: [\"env:staging\"] }\n    - name: prod\n      selector: { tags: [\"env:prod\"] }\n      approval: manual\n    - name: rest\n",
            "",
        ),
    );
    repo.edit("clusters/prod-m.yaml", "updates: auto", "updates: manual");
    repo.commit("prod-m: updates by approval");
    let daemon = Daemon::start(&local(&repo), &targets(&names));
    daemon.wait_for("the fleet on 1.1.0", WAIT, |d| names.iter().all(|n| runs(d, n) == deploys("1.1.0")));

    // An in-place edit of 1.1.0, which every cluster runs: governed by the rollout, and for
    // prod-m (`updates: manual`) also by its own approval.
    let edit = repo.read("profiles/aws-profile/1.1.0/profile.yaml").replace(&deploys("1.1.0"), &image("edited"));
    repo.write("profiles/aws-profile/1.1.0/profile.yaml", &edit);
    let edited = repo.commit("aws-profile 1.1.0: a new image in place");
    let want = image("edited");
    daemon.wait_for("prod waiting for its promotion", WAIT, |d| {
        wave(&rollout(d, "default"), "prod")["state"] == "waits-for-promotion"
    });
    assert_eq!(runs(&daemon, "stage-1"), want);
    daemon.wait_settled(&edited);
    for held in ["prod-a", "prod-m", "edge-1"] {
        assert_eq!(runs(&daemon, held), deploys("1.1.0"), "{held} held");
    }
    let status = daemon.strata(&["rollout", "status", "default"]).ok().stdout;
    assert!(status.contains("strata rollout promote default"), "{status}");
    let listed = daemon.strata(&["status"]).ok().stdout;
    assert!(listed.lines().any(|l| l.starts_with("prod-a") && l.contains("rollout")), "{listed}");

    // Promotion is an action: the API wants the token.
    assert_eq!(api_post(&daemon, "/api/v1/rollouts/default/promote", None).0, 401);
    assert_eq!(api_post(&daemon, "/api/v1/rollouts/default/promote", Some("wrong")).0, 401);
    // Through the view, with the session and its CSRF token, as Approve.
    const FORM: (&str, &str) = ("Content-Type", "application/x-www-form-urlencoded");
    let (_, head, _) = daemon.raw("POST", "/login", &[FORM], &format!("name=alice&token={TOKEN}&next=%2F"));
    let cookie = session_cookie(&head);
    let (code, _, page) = daemon.raw("GET", "/rollouts/default", &[("Cookie", &cookie)], "");
    assert_eq!(code, 200, "{page}");
    assert!(page.contains("Promote: start wave prod") && page.contains("<progress"), "{page}");
    let csrf = page.split("name=\"csrf\" value=\"").nth(1).and_then(|s| s.split('"').next()).unwrap().to_string();
    let revision = rollout(&daemon, "default")["revision"].as_str().unwrap().to_string();
    let promote = |body: &str| daemon.raw("POST", "/rollouts/default/promote", &[FORM, ("Cookie", &cookie)], body);
    assert_eq!(promote(&format!("wave=prod&revision={revision}")).0, 403, "no CSRF token");
    assert_eq!(daemon.raw("POST", "/rollouts/default/promote", &[FORM], &format!("csrf={csrf}&wave=prod")).0, 303);
    let stale = "0".repeat(40);
    assert_eq!(promote(&format!("csrf={csrf}&wave=prod&revision={stale}")).0, 409, "bound to the revision shown");
    assert_eq!(wave(&rollout(&daemon, "default"), "prod")["state"], "waits-for-promotion");
    let (code, head, _) = promote(&format!("csrf={csrf}&wave=prod&revision={revision}"));
    assert_eq!(code, 303, "{head}");
    daemon.wait_for("prod-a updated", WAIT, |d| runs(d, "prod-a") == want);
    assert_eq!(wave(&rollout(&daemon, "default"), "prod")["promoted"]["by"], "api (alice)");

    // prod-m is released by the wave, and waits for its own approval; the rest waits for it.
    daemon.wait_for("prod-m pending its approval", WAIT, |d| {
        d.strata(&["status"]).stdout.lines().any(|l| l.starts_with("prod-m") && l.ends_with("(approval)"))
    });
    daemon.wait_settled(&edited);
    assert_eq!(runs(&daemon, "prod-m"), deploys("1.1.0"));
    assert_eq!(runs(&daemon, "edge-1"), deploys("1.1.0"), "the rest waits for all of prod");
    let run = daemon.strata(&["approve", "prod-m"]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    daemon.wait_for("the rollout complete", WAIT, |d| rollout(d, "default")["state"] == "complete");
    for n in names {
        assert_eq!(runs(&daemon, n), want, "{n}");
    }
    let again = daemon.strata(&["rollout", "promote", "default"]);
    assert_eq!(again.code, 1, "{}", again.stdout);
    assert!(again.stderr.contains("default: nothing waits for promotion"), "{}", again.stderr);
}

#[test]
fn approval_rules_say_who_may_promote_a_wave_and_the_view_says_why_not() {
    let names = ["stage-1", "prod-a"];
    let clusters: &[(&str, &[&str])] = &[("stage-1", &["env:staging"]), ("prod-a", &["env:prod"])];
    let repo = fleet(
        clusters,
        &policy(
            "    - name: staging\n      selector: { tags: [\"env:staging\"] }\n    - name: prod\n      selector: { tags: [\"env:prod\"] }\n      approval: manual\n",
            "",
        ),
    );
    repo.write(
        "approvals/prod.yaml",
        "apiVersion: strata.dev/v1\nkind: ApprovalRules\nmetadata: { name: prod }\nspec:\n  rules:\n    - name: sre\n      waves: [prod]\n      approvers: { groups: [sre] }\n",
    );
    repo.commit("approval rules: sre promotes prod");
    let mut daemon = Daemon::configure(&local(&repo), &targets(&names), "");
    daemon.name_tokens(&[("ci", "sre"), ("dev", "dev")]);
    daemon.spawn();
    daemon.wait_for("the fleet on 1.1.0", WAIT, |d| names.iter().all(|n| runs(d, n) == deploys("1.1.0")));

    let edit = repo.read("profiles/aws-profile/1.1.0/profile.yaml").replace(&deploys("1.1.0"), &image("edited"));
    repo.write("profiles/aws-profile/1.1.0/profile.yaml", &edit);
    repo.commit("aws-profile 1.1.0: a new image in place");
    daemon.wait_for("prod waiting for its promotion", WAIT, |d| {
        wave(&rollout(d, "default"), "prod")["state"] == "waits-for-promotion"
    });
    // Someone the rule does not admit: 403 naming the rule, and nothing promoted.
    let (code, body) = api_post(&daemon, "/api/v1/rollouts/default/promote", Some("dev-secret"));
    assert_eq!(code, 403, "{body}");
    assert!(
        body.contains("dev (groups: dev) may not promote wave prod: rule prod/sre (approvals/prod.yaml:6): approvers are group sre"),
        "{body}"
    );
    // The view shows them the reason instead of the button.
    const FORM: (&str, &str) = ("Content-Type", "application/x-www-form-urlencoded");
    let (_, head, _) = daemon.raw("POST", "/login", &[FORM], "token=dev-secret&next=%2F");
    let cookie = session_cookie(&head);
    let page = daemon.raw("GET", "/rollouts/default", &[("Cookie", &cookie)], "").2;
    assert!(
        page.contains("<button id=\"promote\" disabled>")
            && page.contains("may not promote wave prod")
            && !page.contains("action=\"/rollouts/default/promote\""),
        "{page}"
    );
    // Whatever the refused promotion set off is over once a re-evaluation asked after it is.
    daemon.wait_reevaluated("stage-1");
    assert_eq!(runs(&daemon, "prod-a"), deploys("1.1.0"), "not promoted");
    assert_eq!(wave(&rollout(&daemon, "default"), "prod")["state"], "waits-for-promotion");
    // One of sre may.
    let (code, body) = api_post(&daemon, "/api/v1/rollouts/default/promote", Some("ci-secret"));
    assert!(code < 300, "{code}: {body}");
    daemon.wait_for("prod-a updated", WAIT, |d| runs(d, "prod-a") == image("edited"));
    let audit = daemon.strata(&["audit", "-o", "json"]).ok().stdout;
    let entries: Vec<Value> = serde_json::from_str(&audit).unwrap();
    let promotions: Vec<(&str, &str)> = entries
        .iter()
        .filter(|e| e["action"] == "promote")
        .map(|e| (e["who"].as_str().unwrap(), e["outcome"].as_str().unwrap()))
        .collect();
    assert_eq!(promotions, [("ci", "done"), ("dev", "refused")], "{audit}");
}

/// A daemon restarted while the head is rejected shows the rollouts of the last revision that
/// loaded, as one that kept running does (it showed none until a good revision came).
#[test]
fn restarted_on_a_rejected_head_the_rollouts_are_those_of_the_last_good_revision() {
    let names = ["stage-1", "prod-a"];
    let clusters: &[(&str, &[&str])] = &[("stage-1", &["env:staging"]), ("prod-a", &["env:prod"])];
    let repo = fleet(
        clusters,
        &policy(
            "    - name: staging\n      selector: { tags: [\"env:staging\"] }\n    - name: prod\n      selector: { tags: [\"env:prod\"] }\n",
            "",
        ),
    );
    let mut daemon = Daemon::start(&local(&repo), &targets(&names));
    daemon.wait_for("the fleet on 1.1.0", WAIT, |d| names.iter().all(|n| runs(d, n) == deploys("1.1.0")));
    let listed = |d: &Daemon| {
        let (code, body) = d.request("GET", "/api/v1/rollouts", &[("Authorization", &format!("Bearer {TOKEN}"))], "");
        assert_eq!(code, 200, "{body}");
        serde_json::from_str::<Value>(&body).unwrap()
    };
    // A head that does not load: the staging wave selects no cluster.
    repo.edit("clusters/stage-1.yaml", "env:staging", "env:lab");
    let rejected = repo.commit("stage-1 leaves staging: the wave selects nothing");
    daemon.wait_for("the head rejected", WAIT, |d| {
        let (_, body) = d.request("GET", "/api/v1/revision", &[("Authorization", &format!("Bearer {TOKEN}"))], "");
        body.contains(&rejected) && body.contains("rejected")
    });
    let running = listed(&daemon);
    assert_eq!(running[0]["rollout"], "default", "{running}");
    daemon.terminate();
    daemon.spawn();
    daemon.wait_for("the rejected head seen again", WAIT, |d| d.log().matches("Revision rejected").count() >= 2);
    assert_eq!(listed(&daemon), running, "the restarted daemon shows what the running one showed");
    assert_eq!(rollout(&daemon, "default")["rollout"], "default");
}

#[test]
fn a_newer_commit_supersedes_the_rollout_and_held_clusters_go_straight_to_it() {
    let names = ["stage-1", "stage-2", "prod-a", "prod-b"];
    let clusters: &[(&str, &[&str])] = &[
        ("stage-1", &["env:staging"]),
        ("stage-2", &["env:staging"]),
        ("prod-a", &["env:prod"]),
        ("prod-b", &["env:prod"]),
    ];
    let repo = fleet(
        clusters,
        &policy(
            "    - name: staging\n      selector: { tags: [\"env:staging\"] }\n      bake: 1h\n    - name: prod\n",
            "",
        ),
    );
    let daemon = Daemon::start_with(&local(&repo), &targets(&names), "status: { provider: git-notes }\n");
    daemon.wait_for("the fleet on 1.1.0", WAIT, |d| names.iter().all(|n| runs(d, n) == deploys("1.1.0")));

    let first = publish(&repo, "1.2.0");
    let mut watch = Watch::new();
    let want = deploys("1.2.1");
    watch_until(&daemon, &mut watch, &names, &want, "staging baking 1.2.0", |d, _| {
        wave(&rollout(d, "default"), "staging")["state"] == "baking"
    });
    assert_eq!(runs(&daemon, "stage-1"), deploys("1.2.0"));
    daemon.wait_for("a pending status naming the wave", WAIT, |_| {
        notes_on(&repo, &first).contains("strata/rollout/default pending")
    });

    // 1.2.1 while staging bakes 1.2.0: staging goes again, prod never sees 1.2.0.
    let second = publish(&repo, "1.2.1");
    watch_until(&daemon, &mut watch, &names, &want, "staging on 1.2.1", |_, w| {
        w.first.contains_key("stage-1") && w.first.contains_key("stage-2")
    });
    let r = rollout(&daemon, "default");
    assert_eq!(r["revision"], second.as_str(), "{r}");
    watch_until(&daemon, &mut watch, &names, &want, "staging baking 1.2.1", |d, _| {
        wave(&rollout(d, "default"), "staging")["state"] == "baking"
    });
    // A promotion ends the bake.
    let run = daemon.strata(&["rollout", "promote", "default"]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    watch_until(&daemon, &mut watch, &names, &want, "prod on 1.2.1", |_, w| w.first.len() == names.len());
    assert_eq!(watch.seen["prod-a"], [deploys("1.1.0"), want.clone()], "{:?}", watch.seen);
    assert_eq!(watch.seen["prod-b"], [deploys("1.1.0"), want.clone()], "{:?}", watch.seen);
    daemon.wait_for("the statuses of both commits", WAIT, |_| {
        notes_on(&repo, &first).contains("strata/rollout/default error: superseded by")
            && notes_on(&repo, &second).contains("strata/rollout/default success")
    });
}

#[test]
fn a_rollout_killed_mid_way_resumes_from_the_same_wave() {
    let names = ["stage-1", "prod-a", "prod-b", "edge-1"];
    let clusters: &[(&str, &[&str])] =
        &[("stage-1", &["env:staging"]), ("prod-a", &["env:prod"]), ("prod-b", &["env:prod"]), ("edge-1", &[])];
    let repo = fleet(
        clusters,
        &policy(
            "    - name: staging\n      selector: { tags: [\"env:staging\"] }\n      bake: 3s\n    - name: prod\n      selector: { tags: [\"env:prod\"] }\n      approval: manual\n    - name: rest\n",
            "",
        ),
    );
    let mut daemon = Daemon::start(&local(&repo), &targets(&names));
    daemon.wait_for("the fleet on 1.1.0", WAIT, |d| names.iter().all(|n| runs(d, n) == deploys("1.1.0")));
    let head = publish(&repo, "1.2.0");

    // Killed while staging bakes.
    daemon.wait_for("staging baking", WAIT, |d| {
        let staging = wave(&rollout(d, "default"), "staging").clone();
        staging["state"] == "baking" && staging["completedAt"].is_number()
    });
    let before = rollout(&daemon, "default");
    let applies = daemon.cluster("stage-1")["history"].as_array().map(Vec::len);
    daemon.kill9();
    daemon.spawn();
    let after = rollout(&daemon, "default");
    assert_eq!(after["startedAt"], before["startedAt"], "{after}");
    assert_eq!(wave(&after, "staging")["completedAt"], wave(&before, "staging")["completedAt"]);
    assert_eq!(wave(&after, "staging")["startedAt"], wave(&before, "staging")["startedAt"]);
    // The bake goes on from where it was, then prod waits for its promotion.
    daemon.wait_for("prod waiting for its promotion", WAIT, |d| {
        wave(&rollout(d, "default"), "prod")["state"] == "waits-for-promotion"
    });
    // Killed again while prod waits: it still waits afterwards, and staging is not applied again.
    daemon.kill9();
    daemon.spawn();
    assert_eq!(wave(&rollout(&daemon, "default"), "prod")["state"], "waits-for-promotion");
    daemon.wait_settled(&head);
    for held in ["prod-a", "prod-b", "edge-1"] {
        assert_eq!(runs(&daemon, held), deploys("1.1.0"), "{held} held");
    }
    assert_eq!(daemon.cluster("stage-1")["history"].as_array().map(Vec::len), applies, "stage-1 not applied again");
    let run = daemon.strata(&["rollout", "promote", "default"]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    daemon.wait_for("the rollout complete", WAIT, |d| rollout(d, "default")["state"] == "complete");
    for n in names {
        assert_eq!(runs(&daemon, n), deploys("1.2.0"), "{n}");
    }
}

#[test]
fn the_plan_lists_the_waves_and_what_each_cluster_gets() {
    let clusters: &[(&str, &[&str])] = &[
        ("stage-1", &["env:staging"]),
        ("prod-a", &["env:prod"]),
        ("prod-b", &["env:prod"]),
        ("prod-c", &["env:prod"]),
        ("edge-1", &[]),
    ];
    let repo = fleet(
        clusters,
        &policy(
            "    - name: staging\n      selector: { tags: [\"env:staging\"] }\n      bake: 10m\n    - name: canary\n      selector: { tags: [\"env:prod\"] }\n      maxClusters: 1\n    - name: prod\n      selector: { tags: [\"env:prod\"] }\n      maxParallel: 50%\n      approval: manual\n    - name: rest\n",
            "  onFailure: rollback\n",
        ),
    );
    // A cluster pinned to 1.1.0 whose override changes in the same commit: its own business, not held.
    repo.write(
        "clusters/solo.yaml",
        "apiVersion: strata.dev/v1\nkind: Cluster\nmetadata: { name: solo, tags: [\"env:prod\"] }\nspec:\n  profile: { name: aws-profile, version: \"1.1.0\" }\n",
    );
    repo.commit("solo");
    repo.edit(
        "clusters/solo.yaml",
        "version: \"1.1.0\" }\n",
        "version: \"1.1.0\" }\n  overrides:\n    hello-universe: { replicas: 2 }\n",
    );
    publish(&repo, "1.2.0");

    let text = repo.strata(&["plan"]).ok().stdout;
    let section: String =
        text.lines().skip_while(|l| !l.starts_with("rollout default")).take(10).collect::<Vec<_>>().join("\n");
    assert_eq!(
        section,
        "rollout default (rollouts/default.yaml): 5 clusters in 4 waves; on failure: rollback (at 1 failed cluster)
  1. staging  tags env:staging; maxParallel all, bake 10m
       stage-1: aws-profile@1.1.0 → aws-profile@1.2.0 (new version by range)
  2. canary  the first 1 of tags env:prod; maxParallel all, bake none
       prod-a: aws-profile@1.1.0 → aws-profile@1.2.0 (new version by range)
  3. prod  tags env:prod; maxParallel 50%, bake none, approval manual
       prod-b, prod-c: aws-profile@1.1.0 → aws-profile@1.2.0 (new version by range)
  4. rest  every cluster left; maxParallel all, bake none
       edge-1: aws-profile@1.1.0 → aws-profile@1.2.0 (new version by range)
",
        "{text}"
    );
    assert!(text.contains("prod-b  upgrade  aws-profile@1.1.0 → aws-profile@1.2.0  +0 ~6 -0\n  goes out with rollout default, wave 3 of 4 (prod)\n"), "{text}");
    let solo = text.lines().skip_while(|l| !l.starts_with("solo ")).take(2).collect::<Vec<_>>();
    assert!(solo[0].starts_with("solo  override") && !solo[1].contains("rollout"), "{text}");

    let json: Value = serde_json::from_str(&repo.strata(&["plan", "--format", "json"]).ok().stdout).unwrap();
    let waves = &json["rollouts"][0]["waves"];
    let members = |i: usize| -> Vec<&str> {
        waves[i]["clusters"].as_array().unwrap().iter().map(|c| c["cluster"].as_str().unwrap()).collect()
    };
    assert_eq!(
        (members(0), members(1), members(2), members(3)),
        (vec!["stage-1"], vec!["prod-a"], vec!["prod-b", "prod-c"], vec!["edge-1"])
    );
    assert_eq!(waves[2]["approval"], "manual");
    assert_eq!(waves[0]["clusters"][0]["to"], "aws-profile@1.2.0");

    // The pull-request comment is the markdown plan.
    let markdown = repo.strata(&["plan", "--format", "markdown"]).ok().stdout;
    assert!(markdown.contains("#### Rollout `default` (rollouts/default.yaml): 5 clusters in 4 waves"), "{markdown}");
    assert!(markdown.contains("| 3. prod | tags env:prod | maxParallel 50%, bake none, approval manual | prod-b, prod-c: aws-profile@1.1.0 → aws-profile@1.2.0 (new version by range) |"), "{markdown}");
    assert!(markdown.contains("| `prod-a` | upgrade · rollout default, wave 2 of 4 (canary) |"), "{markdown}");
}

/// `(cluster, start, end)` of every apply in the daemon's log since `from` (a line number), by
/// the worker's own lines: `Applying.` then `Applied.` or `Reconcile failed.`.
fn applies(log: &str, from: usize) -> Vec<(String, String, String)> {
    let mut open: BTreeMap<String, String> = BTreeMap::new();
    let mut done = Vec::new();
    for line in log.lines().skip(from) {
        let at = line.split_whitespace().next().unwrap_or("").to_string();
        let Some(cluster) = line.split("cluster=").nth(1).and_then(|c| c.split_whitespace().next()) else { continue };
        if line.contains(" Applying. ") {
            open.insert(cluster.to_string(), at);
        } else if (line.contains(" Applied. ") || line.contains(" Reconcile failed. "))
            && let Some(start) = open.remove(cluster)
        {
            done.push((cluster.to_string(), start, at));
        }
    }
    done
}

#[test]
fn three_dozen_clusters_one_failing_in_a_middle_wave() {
    // 3 staging, 24 in eu-central (the first 2 a canary), 9 in us-east.
    let mut clusters: Vec<(String, Vec<&str>)> = Vec::new();
    clusters.extend((1..=3).map(|i| (format!("stage-{i}"), vec!["env:staging"])));
    clusters.extend((1..=24).map(|i| (format!("eu-{i:02}"), vec!["env:prod", "region:eu-central"])));
    clusters.extend((1..=9).map(|i| (format!("us-{i}"), vec!["env:prod", "region:us-east"])));
    let refs: Vec<(&str, &[&str])> = clusters.iter().map(|(n, t)| (n.as_str(), t.as_slice())).collect();
    let names: Vec<&str> = refs.iter().map(|(n, _)| *n).collect();
    let repo = fleet(
        &refs,
        &policy(
            "    - name: staging\n      selector: { tags: [\"env:staging\"] }\n    - name: canary\n      selector: { tags: [\"env:prod\"] }\n      maxClusters: 2\n    - name: eu\n      selector: { tags: [\"region:eu-central\"] }\n      maxParallel: 25%\n    - name: rest\n      maxParallel: 10%\n",
            "",
        ),
    );
    let daemon =
        Daemon::start_with(&local(&repo), &targets(&names), "status: { provider: git-notes, min_interval: 10ms }\n");
    daemon.wait_for("the fleet on 1.1.0", Duration::from_secs(60), |d| {
        names.iter().all(|n| runs(d, n) == deploys("1.1.0"))
    });
    // eu-14's target stops being a directory: its apply fails.
    let broken = daemon.out("eu-14");
    std::fs::remove_dir_all(&broken).unwrap();
    std::fs::write(&broken, "not a directory").unwrap();
    let from = daemon.log().lines().count();
    let head = publish(&repo, "1.2.0");
    daemon.wait_for("the rollout halted", Duration::from_secs(60), |d| rollout(d, "default")["state"] == "halted");
    // In-flight applies of the eu wave finish; then nothing moves.
    daemon.wait_for("nothing in flight", WAIT, |d| {
        let r = rollout(d, "default");
        r["waves"]
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|w| w["clusters"].as_array().unwrap())
            .all(|c| c["state"] != "updating")
    });
    // Settled but for eu-14, whose apply fails and is tried again.
    daemon.wait_settled_but(&head, &["eu-14"]);

    let r = rollout(&daemon, "default");
    assert_eq!(r["halt"]["cluster"], "eu-14", "{r}");
    assert_eq!(wave(&r, "canary")["clusters"].as_array().unwrap().len(), 2);
    let updated: Vec<&str> = names.iter().copied().filter(|n| runs(&daemon, n) == deploys("1.2.0")).collect();
    // Staging, the canary (eu-01, eu-02), and eu by name in slots of 6 (25% of 22) up to and
    // including the slot eu-14 was in: none after it, no us cluster.
    assert!(updated.iter().all(|n| n.starts_with("stage-") || n.starts_with("eu-")), "{updated:?}");
    assert!(updated.contains(&"eu-13") && !updated.contains(&"eu-14"), "{updated:?}");
    let last_eu = updated.iter().filter(|n| n.starts_with("eu-")).max().unwrap();
    assert!(*last_eu <= "eu-19", "at most the slots of eu-14 released: {updated:?}");
    for n in names.iter().filter(|n| n.starts_with("us-")) {
        assert_eq!(runs(&daemon, n), deploys("1.1.0"), "{n} untouched");
    }
    // Order and parallelism, by the workers' own log lines.
    let applied = applies(&daemon.log(), from);
    let order: Vec<&str> = applied.iter().map(|(c, _, _)| c.as_str()).collect();
    let wave_of = |c: &str| match c {
        c if c.starts_with("stage-") => 0,
        "eu-01" | "eu-02" => 1,
        c if c.starts_with("eu-") => 2,
        _ => 3,
    };
    assert!(order.windows(2).all(|w| wave_of(w[0]) <= wave_of(w[1])), "waves in order: {order:?}");
    let eu: Vec<&(String, String, String)> = applied.iter().filter(|(c, _, _)| wave_of(c) == 2).collect();
    let at_once = eu.iter().map(|(_, start, _)| eu.iter().filter(|(_, s, e)| s <= start && start <= e).count()).max();
    assert!(at_once.unwrap() <= 6, "maxParallel 25% of the eu wave: {eu:?}");
    daemon.wait_for("a failure status naming eu-14", WAIT, |_| {
        notes_on(&repo, &head)
            .contains("strata/rollout/default failure: halted in wave 3 of 4 (eu): eu-14 apply failed")
    });
    let listed = daemon.strata(&["rollout", "status"]).ok().stdout;
    assert!(listed.lines().nth(1).is_some_and(|l| l.starts_with("default  halted")), "{listed}");
}

#[test]
fn pause_holds_the_next_wave_resume_goes_on_abort_returns_the_updated_clusters() {
    let names = ["stage-1", "prod-a", "edge-1"];
    let clusters: &[(&str, &[&str])] = &[("stage-1", &["env:staging"]), ("prod-a", &["env:prod"]), ("edge-1", &[])];
    let repo = fleet(
        clusters,
        &policy(
            "    - name: staging\n      selector: { tags: [\"env:staging\"] }\n      bake: 3s\n    - name: prod\n      selector: { tags: [\"env:prod\"] }\n    - name: rest\n      approval: manual\n",
            "",
        ),
    );
    let daemon = Daemon::start(&local(&repo), &targets(&names));
    daemon.wait_for("the fleet on 1.1.0", WAIT, |d| names.iter().all(|n| runs(d, n) == deploys("1.1.0")));
    publish(&repo, "1.2.0");
    daemon.wait_for("staging updated", WAIT, |d| runs(d, "stage-1") == deploys("1.2.0"));
    let bake_until = common::wait_until(
        "staging baking",
        WAIT,
        || wave(&rollout(&daemon, "default"), "staging")["bakeUntil"].as_i64(),
        Option::is_some,
    )
    .unwrap();
    let run = daemon.strata(&["rollout", "pause", "default"]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(run.stdout.contains("paused"), "{}", run.stdout);
    // The bake ends while paused: prod does not start. The bake is the clock's to end, so the
    // test waits it out; then the daemon decides again, after its end.
    let now_ms = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as i64;
    let left = bake_until - now_ms;
    if left > 0 {
        std::thread::sleep(Duration::from_millis(left as u64 + 100));
    }
    daemon.wait_reevaluated("edge-1");
    assert_eq!(runs(&daemon, "prod-a"), deploys("1.1.0"));
    let r = rollout(&daemon, "default");
    assert_eq!(r["state"], "paused", "{r}");
    assert_eq!(r["paused"]["by"], "api (alice)");
    let again = daemon.strata(&["rollout", "pause", "default"]);
    assert_eq!(again.code, 1);
    assert!(again.stderr.contains("already paused"), "{}", again.stderr);

    daemon.strata(&["rollout", "resume", "default"]).ok();
    daemon.wait_for("prod updated", WAIT, |d| runs(d, "prod-a") == deploys("1.2.0"));
    daemon.wait_for("rest waiting for promotion", WAIT, |d| {
        wave(&rollout(d, "default"), "rest")["state"] == "waits-for-promotion"
    });
    // Aborted: what it updated goes back, what it held stays.
    let run = daemon.strata(&["rollout", "abort", "default"]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    daemon.wait_for("staging and prod back on 1.1.0", WAIT, |d| {
        runs(d, "stage-1") == deploys("1.1.0") && runs(d, "prod-a") == deploys("1.1.0")
    });
    daemon.wait_for("aborted", WAIT, |d| rollout(d, "default")["state"] == "aborted");
    assert_eq!(runs(&daemon, "edge-1"), deploys("1.1.0"));
    let promote = daemon.strata(&["rollout", "promote", "default"]);
    assert_eq!(promote.code, 1);
    assert!(promote.stderr.contains("aborted by api (alice)"), "{}", promote.stderr);
}

#[test]
fn killed_while_an_apply_is_in_flight_the_rollout_finishes_it_after_the_restart() {
    let names = ["k-1", "k-2"];
    let clusters: Vec<(&str, &[&str])> = names.iter().map(|n| (*n, &["env:prod"][..])).collect();
    let repo = fleet(&clusters, &policy("    - name: prod\n      maxParallel: 1\n", ""));
    let (_kube, servers, targets) = api_server_each(&names);
    let mut daemon = Daemon::start(&local(&repo), &targets);
    daemon.wait_for("the fleet on 1.1.0", WAIT, |d| {
        names.iter().all(|n| d.cluster(n)["cluster"]["sync"] == "applied" && deployed(&servers[n]) == deploys("1.1.0"))
    });
    let latency = Duration::from_millis(150);
    for server in servers.values() {
        server.clear_requests();
        server.set_latency(latency);
    }
    publish(&repo, "1.2.0");
    // k-1 goes first (by name); killed once its apply has written something.
    daemon.wait_for("k-1's apply under way", WAIT, |_| servers["k-1"].requests().iter().any(|r| r.is_write()));
    daemon.kill9();
    assert_eq!(deployed(&servers["k-2"]), deploys("1.1.0"));
    for server in servers.values() {
        server.clear_requests();
    }
    daemon.spawn();
    daemon.wait_for("the rollout complete", Duration::from_secs(60), |d| rollout(d, "default")["state"] == "complete");
    for n in names {
        assert_eq!(deployed(&servers[n]), deploys("1.2.0"), "{n}");
    }
    // After the restart k-1 is finished first, and k-2 only after it: one at a time still.
    let intervals = in_flight(&servers, latency);
    assert_eq!(most_at_once(&intervals), 1, "{intervals:?}");
    assert!(intervals["k-1"].1 <= intervals["k-2"].0, "{intervals:?}");
}

#[test]
fn with_fail_on_drift_drift_on_an_updated_cluster_halts_the_rollout() {
    let names = ["stage-1", "prod-a"];
    let clusters: &[(&str, &[&str])] = &[("stage-1", &["env:staging"]), ("prod-a", &["env:prod"])];
    let repo = fleet(
        clusters,
        &policy(
            "    - name: staging\n      selector: { tags: [\"env:staging\"] }\n      bake: 1h\n    - name: prod\n",
            "  failOnDrift: true\n",
        ),
    );
    repo.edit("clusters/stage-1.yaml", "updates: auto", "updates: auto\n  drift: report");
    repo.commit("stage-1 reports drift");
    let mut daemon = Daemon::configure(&local(&repo), &targets(&names), "");
    daemon.set_drift_interval("1s");
    daemon.spawn();
    daemon.wait_for("the fleet on 1.1.0", WAIT, |d| names.iter().all(|n| runs(d, n) == deploys("1.1.0")));
    publish(&repo, "1.2.0");
    daemon.wait_for("staging baking", WAIT, |d| wave(&rollout(d, "default"), "staging")["state"] == "baking");
    // Someone edits what the rollout just put on stage-1.
    let ui = daemon.out("stage-1/hello-universe/deployment.ui.yaml");
    std::fs::write(&ui, file(&ui).replace("replicas: 1", "replicas: 5")).unwrap();
    daemon.wait_for("the rollout halted", WAIT, |d| rollout(d, "default")["state"] == "halted");
    let r = rollout(&daemon, "default");
    assert_eq!(r["halt"]["cluster"], "stage-1", "{r}");
    assert!(r["halt"]["reason"].as_str().unwrap().contains("drift"), "{r}");
    assert_eq!(runs(&daemon, "prod-a"), deploys("1.1.0"));
}

/// Issue 19 §4: a wave of `updates: manual` clusters stalls until each is approved. It says so
/// everywhere — the rollout's `next` and commit status, `strata rollout status`, `strata
/// status`, the metrics, the view — and one approval covers the wave, or a tag selection, bound
/// to the revision and the exact set shown.
#[test]
fn a_wave_waiting_for_its_clusters_approvals_says_so_everywhere_and_is_approved_at_once() {
    let names = ["stage-1", "prod-1", "prod-2", "prod-3", "prod-4", "prod-5", "edge-1"];
    let clusters: &[(&str, &[&str])] = &[
        ("stage-1", &["env:staging"]),
        ("prod-1", &["env:prod", "region:eu"]),
        ("prod-2", &["env:prod"]),
        ("prod-3", &["env:prod"]),
        ("prod-4", &["env:prod"]),
        ("prod-5", &["env:prod"]),
        ("edge-1", &[]),
    ];
    let repo = fleet(
        clusters,
        &policy(
            "    - name: staging\n      selector: { tags: [\"env:staging\"] }\n    - name: prod\n      selector: { tags: [\"env:prod\"] }\n    - name: rest\n",
            "",
        ),
    );
    for prod in &names[1..6] {
        repo.edit(&format!("clusters/{prod}.yaml"), "updates: auto", "updates: manual");
    }
    repo.commit("prod: updates by approval");
    let daemon = Daemon::start_with(&local(&repo), &targets(&names), "status: { provider: git-notes }\n");
    daemon.wait_for("the fleet on 1.1.0", WAIT, |d| names.iter().all(|n| runs(d, n) == deploys("1.1.0")));

    let edit = repo.read("profiles/aws-profile/1.1.0/profile.yaml").replace(&deploys("1.1.0"), &image("edited"));
    repo.write("profiles/aws-profile/1.1.0/profile.yaml", &edit);
    let edited = repo.commit("aws-profile 1.1.0: a new image in place");
    let want = image("edited");
    common::wait_until_with(
        "prod's five waiting for their approval",
        WAIT,
        common::POLL,
        || rollout(&daemon, "default"),
        |r| wave(r, "prod")["awaitingApproval"]["count"] == 5,
        || daemon.get("/api/v1/clusters").1,
    );
    assert_eq!(runs(&daemon, "stage-1"), want);
    let said =
        "waits for approval of 5 clusters: prod-1, prod-2, prod-3, … (strata approve --rollout default --wave prod)";
    let r = rollout(&daemon, "default");
    assert!(r["next"].as_str().unwrap().ends_with(said), "{r:#}");
    // The commit status says as much as fits its 140 characters: the count and the first names.
    daemon.wait_for("the commit status saying so", WAIT, |_| {
        notes_on(&repo, &edited)
            .contains("0 of 5 clusters updated; waits for approval of 5 clusters: prod-1, prod-2, prod-3, …")
    });
    let listed = daemon.strata(&["rollout", "status"]).ok().stdout;
    assert!(listed.contains(said), "{listed}");
    let detail = daemon.strata(&["rollout", "status", "default"]).ok().stdout;
    assert!(detail.contains("0 of 5 updated, 5 awaiting approval"), "{detail}");
    assert!(detail.contains("approve them: strata approve --rollout default --wave prod"), "{detail}");
    assert!(detail.contains("updating (awaits approval)"), "{detail}");
    let status = daemon.strata(&["status"]).ok().stdout;
    assert!(
        status.contains(
            "5 pending updates wait for approval: prod-1, prod-2, prod-3, prod-4, prod-5 (strata approve --all-pending)"
        ),
        "{status}"
    );
    daemon.wait_for("the metrics", WAIT, |d| {
        let metrics = d.get("/metrics").1;
        metrics.contains("strata_rollout_clusters{rollout=\"default\",state=\"awaiting-approval\"} 5")
            && metrics.contains("strata_pending_approvals 5")
    });

    // Without a terminal and without --yes, nothing is approved; it says how.
    let refused = daemon.strata(&["approve", "--rollout", "default", "--wave", "prod"]);
    assert_eq!(refused.code, 1, "{}", refused.stdout);
    assert!(
        refused.stdout.contains("rollout default, wave prod: 5 pending updates at ")
            && refused.stdout.contains("wait for approval: prod-1, prod-2, prod-3, prod-4, prod-5"),
        "{}",
        refused.stdout
    );
    assert!(refused.stderr.contains("add --yes to approve these 5 without asking"), "{}", refused.stderr);
    // The API: an action wants the token; a selection must be the one shown.
    let auth = format!("Bearer {TOKEN}");
    let (code, body) = daemon.request("GET", "/api/v1/approvals?rollout=default&wave=prod", &[], "");
    assert_eq!(code, 200, "{body}");
    let shown: Value = serde_json::from_str(&body).unwrap();
    assert_eq!((shown["count"].as_u64(), shown["revision"].as_str()), (Some(5), Some(edited.as_str())), "{shown:#}");
    let post = |body: Value, token: Option<&str>| {
        let headers: Vec<(&str, &str)> = token.map(|t| ("Authorization", t)).into_iter().collect();
        daemon.request("POST", "/api/v1/approvals", &headers, &body.to_string())
    };
    let wave_at =
        |digest: &str| serde_json::json!({"rollout": "default", "wave": "prod", "revision": edited, "digest": digest});
    assert_eq!(post(wave_at(shown["digest"].as_str().unwrap()), None).0, 401);
    let (code, body) = post(wave_at(&"0".repeat(64)), Some(&auth));
    assert_eq!(code, 409, "{body}");
    assert!(body.contains("the selection changed since it was shown: it is now 5 clusters"), "{body}");
    let fewer =
        serde_json::json!({"rollout": "default", "wave": "prod", "revision": edited, "clusters": ["prod-1", "prod-2"]});
    assert_eq!(post(fewer, Some(&auth)).0, 409, "a subset is not what is selected");
    let (code, body) = post(
        serde_json::json!({"rollout": "default", "wave": "canary", "revision": edited, "digest": "x"}),
        Some(&auth),
    );
    assert_eq!(code, 404, "{body}");
    assert!(body.contains("rollout default has no wave \\\"canary\\\": its waves are staging, prod, rest"), "{body}");
    // Whatever the refused approvals set off is over once a re-evaluation asked after them is.
    daemon.wait_reevaluated("stage-1");
    assert_eq!(runs(&daemon, "prod-1"), deploys("1.1.0"), "nothing approved yet");

    // The view: one form for the wave, with the session's CSRF token, the revision and digest.
    const FORM: (&str, &str) = ("Content-Type", "application/x-www-form-urlencoded");
    let (_, head, _) = daemon.raw("POST", "/login", &[FORM], &format!("name=alice&token={TOKEN}&next=%2F"));
    let cookie = session_cookie(&head);
    let page = |d: &Daemon| d.raw("GET", "/rollouts/default", &[("Cookie", &cookie)], "").2;
    let first = page(&daemon);
    assert!(first.contains("action=\"/approvals\"") && first.contains("Approve 5 at "), "{first}");
    let field = |html: &str, name: &str| {
        html.split(&format!("name=\"{name}\" value=\"")).nth(1).and_then(|s| s.split('"').next()).unwrap().to_string()
    };
    let (csrf, digest) = (field(&first, "csrf"), field(&first, "digest"));
    assert_eq!(digest, shown["digest"].as_str().unwrap());
    let submit = |csrf: &str, digest: &str| {
        let body = format!(
            "csrf={csrf}&rollout=default&wave=prod&revision={edited}&digest={digest}&next=%2Frollouts%2Fdefault"
        );
        daemon.raw("POST", "/approvals", &[FORM, ("Cookie", &cookie)], &body)
    };
    assert_eq!(submit("", &digest).0, 403, "no CSRF token");

    // One of them by tag: prod-1 alone has env:prod and region:eu.
    let run = daemon.strata(&["approve", "--tag", "env:prod", "--tag", "region:eu", "--yes"]);
    assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);
    assert!(run.stdout.contains("tags env:prod, region:eu: approved 1 pending update at "), "{}", run.stdout);
    daemon.wait_for("prod-1 applied", WAIT, |d| runs(d, "prod-1") == want);
    daemon.wait_for("four left in the wave", WAIT, |d| {
        wave(&rollout(d, "default"), "prod")["awaitingApproval"]["count"] == 4
    });
    // The form shown before is for five: refused, and the page says what it is now.
    let (code, _, answer) = submit(&csrf, &digest);
    assert_eq!(code, 409, "{answer}");
    assert!(answer.contains("it is now 4 clusters (prod-2, prod-3, prod-4, prod-5)"), "{answer}");
    for c in ["prod-2", "prod-3", "prod-4", "prod-5", "edge-1"] {
        assert_eq!(runs(&daemon, c), deploys("1.1.0"), "{c}");
    }
    let again = page(&daemon);
    assert!(again.contains("Approve 4 at "), "{again}");
    // The fleet page offers the same by tag, from its snapshot: the selection the API computes.
    let fleet = |query: &str| daemon.raw("GET", &format!("/{query}"), &[("Cookie", &cookie)], "").2;
    let tagged = fleet("?tag=env%3Aprod");
    assert!(
        tagged.contains("4 pending updates tagged env:prod wait for approval") && tagged.contains("Approve 4 at "),
        "{tagged}"
    );
    let (_, body) = daemon.request("GET", "/api/v1/approvals?tag=env:prod", &[], "");
    let by_tag: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(field(&tagged, "digest"), by_tag["digest"].as_str().unwrap(), "{tagged}");
    assert!(fleet("").contains("name=\"all_pending\" value=\"true\""), "unfiltered: every pending update");
    let narrowed = fleet("?tag=env%3Aprod&health=ready");
    assert!(!narrowed.contains("action=\"/approvals\""), "a filter a selection cannot say: no form: {narrowed}");
    let (code, head, _) = submit(&field(&again, "csrf"), &field(&again, "digest"));
    assert_eq!(code, 303, "{head}");
    daemon.wait_for("the rollout complete", WAIT, |d| rollout(d, "default")["state"] == "complete");
    for n in names {
        assert_eq!(runs(&daemon, n), want, "{n}");
    }
    let history = daemon.cluster("prod-4")["approvals"].to_string();
    assert!(history.contains("\"approved_by\":\"api (alice)\"") && history.contains(&edited), "{history}");
}
