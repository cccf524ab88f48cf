//! Kubernetes mode end to end: several `strata run` processes share one management cluster (the
//! API server stand-in: state, shard Leases, cluster Secrets) and reconcile a fleet whose clusters
//! are a ConfigMap each on a second stand-in, whose request log counts every write: each cluster
//! applied by one replica, takeover after `kill -9` and fencing after `SIGSTOP`, approvals and
//! pending updates through any replica and across the loss of one, cluster Secrets live, a
//! rollout gated alike by every replica, and every request the replicas make allowed by the
//! shipped Role.

use crate::apiserver;
use crate::common;

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use common::Repo;
use common::daemon::{Daemon, TOKEN, local};
use common::kubemode::{APP_PROFILE, KubeMode, app_repo};
use common::kubernetes::{self, NAMESPACE};
use serde_json::{Value, json};

/// The management cluster and the clusters of the fleet, each a stand-in of its own.
struct World {
    kube: KubeMode,
    repo: Repo,
}

const PROFILE: &str = APP_PROFILE;

impl std::ops::Deref for World {
    type Target = KubeMode;
    fn deref(&self) -> &KubeMode {
        &self.kube
    }
}

impl World {
    /// A fleet of `clusters` clusters (c0, c1, …) on one workload API server; those named in
    /// `manual` take in-place edits only when approved.
    fn new(clusters: usize, manual: &[&str]) -> World {
        let kube = KubeMode::start();
        let repo = app_repo();
        for i in 0..clusters {
            let name = format!("c{i}");
            let updates = if manual.contains(&name.as_str()) { "manual" } else { "auto" };
            repo.write(
                &format!("clusters/{name}.yaml"),
                &format!("apiVersion: strata.dev/v1\nkind: Cluster\nmetadata: {{ name: {name} }}\nspec:\n  profile: {{ name: app, version: \"1.0.0\" }}\n  target: {}\n  updates: {updates}\n", target_of(&name)),
            );
        }
        repo.commit("a fleet");
        World { kube, repo }
    }

    /// A replica's host config: Kubernetes mode with short Leases, and `targets`.
    fn configure(&self, shards: u32, targets: &str) -> Daemon {
        Daemon::configure(&local(&self.repo), targets, &self.replica_config(shards))
    }

    /// A replica whose targets are all the workload server, started and ready.
    fn replica(&self, shards: u32) -> Daemon {
        let daemon = self.launch(shards);
        daemon.wait_for("the daemon to be ready", Duration::from_secs(20), |d| d.get("/readyz").0 == 200);
        daemon
    }

    /// As [`World::replica`], not waiting for it to be ready.
    fn launch(&self, shards: u32) -> Daemon {
        let mut daemon = self.configure(shards, &self.workload_target());
        daemon.launch();
        daemon
    }

    fn applied_at(&self, cluster: &str, revision: &str) -> bool {
        let state = self.state(cluster);
        state["status"]["clusterRevision"] == revision && state["status"]["sync"] == "applied"
    }

    /// Writes (not dry-runs) of cluster `name`'s ConfigMap on the workload server.
    fn writes(&self, cluster: &str) -> usize {
        let path = format!("/api/v1/namespaces/default/configmaps/cm-{cluster}");
        self.workload.requests().iter().filter(|r| r.is_write() && r.path == path).count()
    }

    fn greeting(&self, cluster: &str) -> Value {
        self.workload
            .object("configmaps", Some("default"), &format!("cm-{cluster}"))
            .map(|cm| cm["data"]["greeting"].clone())
            .unwrap_or(Value::Null)
    }

    fn lease(&self, name: &str) -> Value {
        self.mgmt.object("leases", Some(NAMESPACE), name).unwrap_or(Value::Null)
    }
}

fn target_of(_cluster: &str) -> &'static str {
    "workload"
}

/// `/readyz` as JSON: identity and held shards.
fn shards(daemon: &Daemon) -> Value {
    let (_, _, body) = daemon.raw("GET", "/readyz", &[("Accept", "application/json")], "");
    serde_json::from_str::<Value>(&body).map(|v| v["shards"].clone()).unwrap_or(Value::Null)
}

fn held(daemon: &Daemon) -> Vec<u64> {
    shards(daemon)["held"].as_array().map(|a| a.iter().filter_map(Value::as_u64).collect()).unwrap_or_default()
}

fn identity(daemon: &Daemon) -> String {
    shards(daemon)["identity"].as_str().unwrap_or_default().to_string()
}

/// How many times each cluster was applied, by the logs of all replicas.
fn applies(replicas: &[&Daemon], cluster: &str) -> usize {
    let needle = format!("Applied. cluster={cluster} ");
    replicas.iter().map(|d| d.log().lines().filter(|l| l.contains(&needle)).count()).sum()
}

/// The replica holding `cluster`'s shard, as `daemon` sees it: waits while the shard is between
/// holders (a Lease released or expired, under load).
#[track_caller]
fn holder(daemon: &Daemon, cluster: &str) -> String {
    let mut found = None;
    wait(&format!("{cluster}'s shard to have a holder"), LONG, &[daemon], || {
        found = daemon.cluster(cluster)["shard"]["holder"].as_str().map(str::to_string);
        found.is_some()
    });
    found.expect("found")
}

#[track_caller]
fn wait(what: &str, timeout: Duration, replicas: &[&Daemon], done: impl FnMut() -> bool) {
    common::wait_until_with(
        what,
        timeout,
        common::POLL,
        done,
        |held| *held,
        || Daemon::logs_of(replicas.iter().copied()),
    );
}

const CLUSTERS: usize = 8;
const LONG: Duration = Duration::from_secs(60);

/// Three replicas, four shards: every cluster is applied by exactly one replica, once per commit;
/// an approval made through a replica that does not hold the cluster is honoured by the one that
/// does; the status view and the API of any replica show the whole fleet.
#[test]
fn replicas_share_the_fleet_and_apply_each_cluster_once() {
    let world = World::new(CLUSTERS, &["c3"]);
    let first = world.repo.commit("nothing new");
    // From here on, every request to the management cluster is a replica's.
    world.mgmt.clear_requests();
    // Slow enough that replicas deciding the same cluster would all be in the middle of applying it.
    world.workload.set_latency(Duration::from_millis(50));
    // Started together: they all see the fleet at once.
    let replicas: Vec<Daemon> = (0..3).map(|_| world.launch(4)).collect();
    for daemon in &replicas {
        daemon.wait_for("the daemon to be ready", Duration::from_secs(30), |d| d.get("/readyz").0 == 200);
    }
    let all: Vec<&Daemon> = replicas.iter().collect();
    wait("every cluster applied", LONG, &all, || (0..CLUSTERS).all(|i| world.applied_at(&format!("c{i}"), &first)));
    wait("the shards shared out (2, 1, 1)", LONG, &all, || {
        let mut counts: Vec<usize> = replicas.iter().map(|d| held(d).len()).collect();
        counts.sort();
        counts == [1, 1, 2]
    });
    for i in 0..CLUSTERS {
        let c = format!("c{i}");
        assert_eq!(world.writes(&c), 1, "{c} written once");
        assert_eq!(applies(&all, &c), 1, "{c} applied by one replica");
        assert_eq!(world.greeting(&c), "hello");
    }
    // Each replica's view and API show every cluster, whoever reconciles it.
    for daemon in &replicas {
        let (code, body) = daemon.request("GET", "/api/v1/clusters", &[], "");
        assert_eq!(code, 200, "{body}");
        assert_eq!(serde_json::from_str::<Value>(&body).unwrap().as_array().unwrap().len(), CLUSTERS);
    }
    let holders: Vec<String> = (0..4)
        .map(|s| world.lease(&format!("strata-shard-{s}"))["spec"]["holderIdentity"].as_str().unwrap().to_string())
        .collect();
    let identities: Vec<String> = replicas.iter().map(identity).collect();
    assert!(holders.iter().all(|h| identities.contains(h)), "{holders:?} {identities:?}");

    // An in-place edit: applied to the auto clusters once, held for c3.
    world.repo.edit(PROFILE, "greeting: hello", "greeting: hi");
    let second = world.repo.commit("hi");
    let auto: Vec<String> = (0..CLUSTERS).map(|i| format!("c{i}")).filter(|c| c != "c3").collect();
    wait("the auto clusters applied again", LONG, &all, || auto.iter().all(|c| world.applied_at(c, &second)));
    wait("c3's update held", LONG, &all, || world.state("c3")["status"]["pending"]["headRevision"] == second);
    for c in &auto {
        assert_eq!((world.writes(c), applies(&all, c)), (2, 2), "{c}: once per commit");
        assert_eq!(world.greeting(c), "hi");
    }
    assert_eq!((world.writes("c3"), world.greeting("c3")), (1, json!("hello")));

    // Approved through a replica that does not reconcile c3.
    let owner = holder(&replicas[0], "c3");
    let other = replicas.iter().find(|d| identity(d) != owner).unwrap();
    let (code, body) = other.request(
        "POST",
        "/api/v1/clusters/c3/approve",
        &[("Authorization", &format!("Bearer {TOKEN}")), ("Content-Type", "application/json")],
        &json!({"revision": second, "by": "alice"}).to_string(),
    );
    assert_eq!(code, 202, "{body}");
    wait("c3 applied by its owner", LONG, &all, || world.applied_at("c3", &second));
    assert_eq!((world.writes("c3"), world.greeting("c3")), (2, json!("hi")));
    let owner_log = replicas.iter().find(|d| identity(d) == owner).unwrap().log();
    assert!(owner_log.contains("Applied. cluster=c3 "), "the owner applied it");
    assert!(!other.log().contains("Applied. cluster=c3 "), "the other did not");
    assert_eq!(world.state("c3")["spec"]["approvals"][0]["by"], "api (alice)");
    assert!(world.state("c3")["status"].get("pending").is_none());

    // What /readyz and /metrics say.
    let (_, text) = replicas[0].get("/readyz");
    assert!(text.starts_with("ready\nshards: "), "{text}");
    assert!(text.contains(" of 4 held (") && text.contains("; 3 replicas"), "{text}");
    let (_, metrics) = replicas[0].get("/metrics");
    let mine = held(&replicas[0]);
    assert!(!mine.is_empty());
    for s in &mine {
        assert!(metrics.contains(&format!("strata_shard_held{{shard=\"{s}\"}} 1\n")), "{metrics}");
    }
    assert!(metrics.contains("strata_lease_requests_total{result=\"renew\"}"), "{metrics}");
    let owned_clusters: usize = mine
        .iter()
        .map(|s| {
            let line = format!("strata_shard_clusters{{shard=\"{s}\"}} ");
            metrics.lines().find(|l| l.starts_with(&line)).map(|l| l[line.len()..].parse::<usize>().unwrap()).unwrap()
        })
        .sum();
    let expected = (0..CLUSTERS)
        .filter(|i| replicas[0].cluster(&format!("c{i}"))["shard"]["holder"] == identity(&replicas[0]))
        .count();
    assert_eq!(owned_clusters, expected, "{metrics}");
    let log = replicas[0].log();
    assert!(
        log.lines().any(|l| l.contains("worker{cluster=") && l.contains(" shard=")),
        "a worker's lines carry its cluster and shard: {log}"
    );

    // Everything the replicas asked of the management cluster, the shipped Role allows.
    let rules = kubernetes::shipped_role();
    let refused: Vec<String> = world
        .mgmt
        .requests()
        .iter()
        .filter_map(|r| kubernetes::role_allows(&rules, &r.method, &r.path, &r.query, r.watch).err())
        .collect();
    assert!(refused.is_empty(), "deploy/kubernetes/rbac.yaml does not allow: {refused:#?}");
    // Run with STRATA_APISERVER=h2 (scripts/test does), all of it went over TLS and HTTP/2.
    if apiserver::Transport::from_env() == apiserver::Transport::Tls {
        let versions: std::collections::BTreeSet<String> =
            world.mgmt.requests().iter().chain(world.workload.requests().iter()).map(|r| r.version.clone()).collect();
        assert_eq!(versions, std::collections::BTreeSet::from(["HTTP/2.0".to_string()]));
    }
}

/// A replica killed with SIGKILL: another takes its shards over within twice the lease duration
/// and applies what it held, once. A replica that is stopped (SIGSTOP) and resumed after its
/// Lease went to another finds itself fenced by its own clock: it applies nothing more.
#[test]
fn a_dead_or_stalled_holder_is_taken_over_without_a_double_apply() {
    let world = World::new(CLUSTERS, &[]);
    let first = world.repo.commit("start");
    let mut a = world.replica(2);
    let b = world.replica(2);
    wait("one shard each", LONG, &[&a, &b], || held(&a).len() == 1 && held(&b).len() == 1);
    wait("every cluster applied", LONG, &[&a, &b], || {
        (0..CLUSTERS).all(|i| world.applied_at(&format!("c{i}"), &first))
    });
    let a_shard = held(&a)[0];
    let lease_name = format!("strata-shard-{a_shard}");
    let a_clusters: Vec<String> =
        (0..CLUSTERS).map(|i| format!("c{i}")).filter(|c| b.cluster(c)["shard"]["index"] == a_shard).collect();
    assert!(!a_clusters.is_empty());

    a.kill9();
    let before = world.lease(&lease_name);
    world.repo.edit(PROFILE, "greeting: hello", "greeting: hi");
    let second = world.repo.commit("hi");
    wait("b to apply every cluster", LONG, &[&a, &b], || {
        (0..CLUSTERS).all(|i| world.applied_at(&format!("c{i}"), &second))
    });
    let after = world.lease(&lease_name);
    assert_eq!(after["spec"]["holderIdentity"], identity(&b));
    assert_eq!(after["spec"]["leaseTransitions"], before["spec"]["leaseTransitions"].as_i64().unwrap() + 1);
    let renewed = jiff(&before["spec"]["renewTime"]);
    let acquired = jiff(&after["spec"]["acquireTime"]);
    let gap = acquired.duration_since(renewed).expect("acquired after the last renewal").as_secs_f64();
    assert!(gap <= 8.0, "taken over {gap:.1}s after the last renewal; the lease is 4s");
    for c in &a_clusters {
        assert_eq!(world.writes(c), 2, "{c}: once per commit");
        assert_eq!(world.greeting(c), "hi");
    }

    // Stalled, not dead: c (started now) takes a shard from b. Stopped (SIGSTOP) in the middle of
    // applying a commit, its Lease expires and b takes the shard back and applies; resumed, c
    // finds itself fenced by its own clock and stops where it was: it applies nothing more.
    let mut c = world.replica(2);
    wait("c to hold a shard", LONG, &[&b, &c], || held(&c).len() == 1 && held(&b).len() == 1);
    let c_shard = held(&c)[0];
    let c_clusters: Vec<String> =
        (0..CLUSTERS).map(|i| format!("c{i}")).filter(|x| b.cluster(x)["shard"]["index"] == c_shard).collect();
    world.workload.set_latency(Duration::from_millis(700));
    let log_before = c.log().len();
    world.repo.edit(PROFILE, "greeting: hi", "greeting: hey");
    let third = world.repo.commit("hey");
    wait("c to start applying", LONG, &[&b, &c], || c.log()[log_before..].contains("Applying."));
    let pid = c.pid().to_string();
    assert!(std::process::Command::new("kill").args(["-STOP", &pid]).status().unwrap().success());
    let stopped_at = c.log().len();
    wait("b to take c's shard and apply", LONG, &[&b, &c], || {
        (0..CLUSTERS).all(|i| world.applied_at(&format!("c{i}"), &third))
    });
    world.workload.set_latency(Duration::ZERO);
    assert!(std::process::Command::new("kill").args(["-CONT", &pid]).status().unwrap().success());
    wait("c to see it lost its shard", LONG, &[&b, &c], || held(&c).is_empty() && c.log().len() > stopped_at);
    // An apply c had in flight is either fenced (logged) or its worker stopped (silently): no
    // event says it is over, and what is shown is that it never finishes. With the latency gone
    // one that went on would be done within milliseconds; two seconds is the margin.
    std::thread::sleep(Duration::from_secs(2));
    let resumed = &c.log()[stopped_at..];
    assert!(!resumed.contains("Applied."), "a fenced replica went on applying:\n{resumed}");
    for x in &c_clusters {
        assert_eq!(world.writes(x), 3, "{x}: once per commit");
        assert_eq!(world.greeting(x), "hey");
        assert!(world.state(x)["status"]["history"].as_array().unwrap().len() >= 3);
    }
    c.kill9();
    drop(a);
}

fn jiff(value: &Value) -> std::time::SystemTime {
    let text = value.as_str().expect("a time");
    let ts: jiff::Timestamp = text.parse().expect("RFC 3339");
    std::time::SystemTime::from(ts)
}

fn kubeconfig_secret(name: &str, target: &str, kubeconfig: &Path) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": name, "namespace": NAMESPACE, "labels": {"strata.dev/target": target}},
        "stringData": {"kubeconfig": std::fs::read_to_string(kubeconfig).unwrap()},
    })
}

/// Cluster Secrets: a cluster whose target no host config names waits for one; a Secret
/// registering it is picked up by the watch, changed and removed while running.
#[test]
fn cluster_secrets_are_picked_up_changed_and_removed_while_running() {
    let world = World::new(2, &[]);
    let first = world.repo.commit("start");
    let mut daemon = world.configure(1, "  unused: { directory: ./out/unused }\n");
    daemon.spawn();
    let all = [&daemon];
    wait("the clusters to wait for their target", LONG, &all, || {
        world.state("c0")["status"]["sync"] == "error"
            && world.state("c0")["status"]["message"].as_str().is_some_and(|m| m.contains("strata.dev/target=workload"))
    });
    assert_eq!(world.writes("c0"), 0);

    kubernetes::put_secret(
        &world.mgmt_kubeconfig(),
        kubeconfig_secret("workload-cluster", "workload", &world.workload_kubeconfig()),
    );
    wait("the clusters applied through the Secret", LONG, &all, || {
        world.applied_at("c0", &first) && world.applied_at("c1", &first)
    });
    assert_eq!(world.greeting("c0"), "hello");

    // Changed: Argo CD's form, with a bad server. The clusters reconnect and fail, naming it.
    let argo = json!({
        "apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": "workload-cluster", "namespace": NAMESPACE, "labels": {"strata.dev/target": "workload"}},
        "stringData": {"server": "http://127.0.0.1:9", "config": "{\"bearerToken\": \"s3cr3t-token\"}"},
    });
    kubernetes::put_secret(&world.mgmt_kubeconfig(), argo);
    world.repo.edit(PROFILE, "greeting: hello", "greeting: hi");
    let second = world.repo.commit("hi");
    wait("c0 to fail against the new server", LONG, &all, || world.state("c0")["status"]["sync"] == "failed");
    assert!(!daemon.log().contains("s3cr3t-token"), "a credential in the log");
    assert!(!world.state("c0").to_string().contains("s3cr3t-token"));

    // Back to the kubeconfig: applied.
    kubernetes::put_secret(
        &world.mgmt_kubeconfig(),
        kubeconfig_secret("workload-cluster", "workload", &world.workload_kubeconfig()),
    );
    wait("the clusters applied again", LONG, &all, || {
        world.applied_at("c0", &second) && world.applied_at("c1", &second)
    });
    assert_eq!(world.greeting("c0"), "hi");

    // Removed: no longer reconciled, whatever Git says.
    kubernetes::delete_secret(&world.mgmt_kubeconfig(), "workload-cluster");
    wait("c0 to lose its target", LONG, &all, || world.state("c0")["status"]["sync"] == "error");
    let writes = world.writes("c0");
    world.repo.edit(PROFILE, "greeting: hi", "greeting: hey");
    let hey = world.repo.commit("hey");
    daemon.wait_settled(&hey);
    assert_eq!((world.writes("c0"), world.greeting("c0")), (writes, json!("hi")), "not touched after the Secret went");
    let mut clusters = BTreeMap::new();
    clusters.insert("c0", world.state("c0")["status"]["message"].clone());
    assert!(clusters["c0"].as_str().unwrap().contains("target `workload` is not configured"), "{clusters:?}");
    daemon.terminate();
}

/// Four replicas, two shards: two replicas hold none and still serve the whole fleet. A pending
/// update outlives the replica that found it (killed), and an approval made through a replica
/// holding no shard is applied, once, by the shard's new holder.
#[test]
fn pending_updates_and_approvals_survive_the_loss_of_a_replica() {
    let world = World::new(4, &["c0"]);
    let first = world.repo.commit("start");
    let mut replicas: Vec<Daemon> = (0..4).map(|_| world.launch(2)).collect();
    for daemon in &replicas {
        daemon.wait_for("the daemon to be ready", Duration::from_secs(30), |d| d.get("/readyz").0 == 200);
    }
    let all: Vec<&Daemon> = replicas.iter().collect();
    wait("every cluster applied", LONG, &all, || (0..4).all(|i| world.applied_at(&format!("c{i}"), &first)));
    wait("one shard each for two replicas", LONG, &all, || {
        let mut counts: Vec<usize> = replicas.iter().map(|d| held(d).len()).collect();
        counts.sort();
        counts == [0, 0, 1, 1]
    });
    for daemon in replicas.iter().filter(|d| held(d).is_empty()) {
        let (code, text) = daemon.get("/readyz");
        assert_eq!(code, 200, "{text}");
        assert!(text.contains("held (none: serving the view and the API)"), "{text}");
        let (code, body) = daemon.request("GET", "/api/v1/clusters", &[], "");
        assert_eq!((code, serde_json::from_str::<Value>(&body).unwrap().as_array().unwrap().len()), (200, 4), "{body}");
    }

    world.repo.edit(PROFILE, "greeting: hello", "greeting: hi");
    let second = world.repo.commit("hi");
    drop(all);
    wait("c0's update held", LONG, &replicas.iter().collect::<Vec<_>>(), || {
        world.state("c0")["status"]["pending"]["headRevision"] == second
    });
    let owner = holder(&replicas[0], "c0");
    let index = replicas.iter().position(|d| identity(d) == owner).unwrap();
    let mut dead = replicas.remove(index);
    dead.kill9();
    let alive: Vec<&Daemon> = replicas.iter().collect();
    wait("c0's shard taken over", LONG, &alive, || {
        let holder = alive[0].cluster("c0")["shard"]["holder"].clone();
        holder.as_str().is_some_and(|h| h != owner && alive.iter().any(|d| identity(d) == h))
    });
    assert_eq!(
        world.state("c0")["status"]["pending"]["headRevision"],
        second,
        "the pending update outlived its finder"
    );
    assert_eq!((world.writes("c0"), world.greeting("c0")), (1, json!("hello")), "still held");

    let idle = *alive.iter().find(|d| held(d).is_empty()).expect("a replica holding no shard");
    let (code, body) = idle.request(
        "POST",
        "/api/v1/clusters/c0/approve",
        &[("Authorization", &format!("Bearer {TOKEN}")), ("Content-Type", "application/json")],
        &json!({"revision": second, "by": "bob"}).to_string(),
    );
    assert_eq!(code, 202, "{body}");
    wait("c0 applied by the new holder", LONG, &alive, || world.applied_at("c0", &second));
    assert_eq!((world.writes("c0"), world.greeting("c0")), (2, json!("hi")), "applied once");
    assert!(!idle.log().contains("Applied. cluster=c0 "));
    assert_eq!(world.state("c0")["spec"]["approvals"][0]["by"], "api (bob)");
}

/// A rollout over a fleet the replicas share: every replica gates it alike from the shared
/// progress (planning the clusters of others too), each releases only its own clusters; waves go
/// in order and `maxParallel: 1` holds for the whole fleet — one cluster at a time on the API
/// server, whichever replica applies it.
#[test]
fn a_rollout_holds_its_max_parallel_across_replicas() {
    const N: usize = 6;
    let world = World::new(N, &[]);
    // c0 and c1 go first; the rest after them, one at a time.
    for c in ["c0", "c1"] {
        world.repo.write(
            &format!("clusters/{c}.yaml"),
            &format!("apiVersion: strata.dev/v1\nkind: Cluster\nmetadata: {{ name: {c}, tags: [\"wave:first\"] }}\nspec:\n  profile: {{ name: app, version: \"1.0.0\" }}\n  target: workload\n  updates: auto\n"),
        );
    }
    world.repo.write(
        "rollouts/default.yaml",
        "apiVersion: strata.dev/v1\nkind: Rollout\nmetadata: { name: default }\nspec:\n  profiles: [app]\n  waves:\n    - name: first\n      selector: { tags: [\"wave:first\"] }\n    - name: rest\n      maxParallel: 1\n",
    );
    let first = world.repo.commit("a rollout policy");
    let replicas: Vec<Daemon> = (0..3).map(|_| world.launch(4)).collect();
    for daemon in &replicas {
        daemon.wait_for("the daemon to be ready", Duration::from_secs(30), |d| d.get("/readyz").0 == 200);
    }
    let all: Vec<&Daemon> = replicas.iter().collect();
    wait("every cluster applied", LONG, &all, || (0..N).all(|i| world.applied_at(&format!("c{i}"), &first)));
    wait("the shards shared out", LONG, &all, || replicas.iter().all(|d| !held(d).is_empty()));

    // Slow enough that applies released together would overlap.
    let latency = Duration::from_millis(300);
    world.workload.clear_requests();
    world.workload.set_latency(latency);
    world.repo.edit(PROFILE, "greeting: hello", "greeting: hi");
    let second = world.repo.commit("hi");
    wait("the rollout to reach every cluster", Duration::from_secs(120), &all, || {
        (0..N).all(|i| world.applied_at(&format!("c{i}"), &second))
    });
    let intervals: Vec<(String, std::time::Instant, std::time::Instant)> = (0..N)
        .map(|i| {
            let path = format!("/api/v1/namespaces/default/configmaps/cm-c{i}");
            // The apply's writes: not the reads and dry runs of drift checks, which a replica
            // that takes over a shard runs at once, whatever a rollout holds.
            let times: Vec<std::time::Instant> = world
                .workload
                .requests()
                .iter()
                .filter(|r| r.path == path && r.is_write())
                .map(|r| r.received)
                .collect();
            (format!("c{i}"), *times.first().unwrap(), *times.last().unwrap() + latency)
        })
        .collect();
    let (first, rest) = intervals.split_at(2);
    let first_done = first.iter().map(|(_, _, end)| *end).max().unwrap();
    assert!(rest.iter().all(|(_, start, _)| *start >= first_done), "the first wave before the rest: {intervals:?}");
    let most =
        rest.iter().map(|(_, start, _)| rest.iter().filter(|(_, s, e)| s <= start && start < e).count()).max().unwrap();
    assert_eq!(most, 1, "the rest one at a time: {intervals:?}");
    for i in 0..N {
        let c = format!("c{i}");
        // The request log starts at the second commit.
        assert_eq!((world.writes(&c), applies(&all, &c)), (1, 2), "{c}: once per commit");
        assert_eq!(world.greeting(&c), "hi");
    }
    // More than one replica applied it, and any replica shows the rollout done.
    let appliers = replicas.iter().filter(|d| d.log().matches("Applied. cluster=").count() > 0).count();
    assert!(appliers > 1, "the clusters were spread over the replicas");
    let auth = format!("Bearer {TOKEN}");
    for daemon in &replicas {
        wait("the rollout complete", LONG, &all, || {
            let (code, body) = daemon.request("GET", "/api/v1/rollouts/default", &[("Authorization", &auth)], "");
            code == 200 && serde_json::from_str::<Value>(&body).is_ok_and(|r| r["state"] == "complete")
        });
    }
}

/// A rollout over more clusters than strata-state keeps inline: its progress goes to chunk
/// ConfigMaps, which the replicas gate, record results in and report from as before, and
/// which are exactly those strata-state names once it is done.
#[test]
fn a_rollout_over_many_clusters_keeps_its_progress_in_chunks_across_replicas() {
    const N: usize = 64;
    let world = World::new(N, &[]);
    world.repo.write(
        "rollouts/default.yaml",
        "apiVersion: strata.dev/v1\nkind: Rollout\nmetadata: { name: default }\nspec:\n  profiles: [app]\n  waves:\n    - name: all\n      maxParallel: 16\n",
    );
    let first = world.repo.commit("a rollout policy");
    let replicas: Vec<Daemon> = (0..2).map(|_| world.launch(4)).collect();
    let all: Vec<&Daemon> = replicas.iter().collect();
    wait("every cluster applied", LONG, &all, || (0..N).all(|i| world.applied_at(&format!("c{i}"), &first)));

    world.repo.edit(PROFILE, "greeting: hello", "greeting: hi");
    let second = world.repo.commit("hi");
    wait("the rollout to reach every cluster", LONG, &all, || {
        (0..N).all(|i| world.applied_at(&format!("c{i}"), &second))
    });
    let auth = format!("Bearer {TOKEN}");
    for daemon in &replicas {
        wait("the rollout complete, every cluster updated", LONG, &all, || {
            let (code, body) = daemon.request("GET", "/api/v1/rollouts/default", &[("Authorization", &auth)], "");
            code == 200
                && serde_json::from_str::<Value>(&body).is_ok_and(|r| {
                    r["state"] == "complete" && r["waves"][0]["total"] == N && r["waves"][0]["updated"] == N
                })
        });
    }
    for i in 0..N {
        assert_eq!(world.greeting(&format!("c{i}")), "hi");
    }
    // What the management cluster holds: the chunks strata-state names and those of saves still
    // on their way (made, not yet swapped in or not yet deleted by the save that lost), which go.
    let held = || {
        let maps = kubernetes::configmaps(&world.mgmt_kubeconfig());
        let rollouts: Value = serde_json::from_str(maps["strata-state"]["data"]["rollouts"].as_str().unwrap()).unwrap();
        let named: std::collections::BTreeSet<String> = rollouts["default"]["chunks"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .filter(|c| !c.is_empty())
            .map(str::to_string)
            .collect();
        let kept: std::collections::BTreeSet<String> =
            maps.into_keys().filter(|name| name.starts_with("strata-progress-")).collect();
        (named, kept)
    };
    let (named, _) = held();
    assert!(!named.is_empty(), "in chunks");
    wait("none left behind by the saves that replaced them or lost", LONG, &all, || {
        let (named, kept) = held();
        named == kept
    });
}

/// SOPS in Kubernetes mode: the age identity comes from a Secret in strata's namespace (keys
/// ending in `.agekey`, Flux's layout), and an encrypted Secret in the repository reaches the
/// workload cluster decrypted.
#[test]
fn age_keys_from_a_secret_decrypt_the_repository_s_sops_files() {
    // sops' published test key and its recipient.
    const KEY: &str = "AGE-SECRET-KEY-1NJT5YCS2LWU4V4QAJQ6R4JNU7LXPDX602DZ9NUFANVU5GDTGUWCQ5T59M6";
    const RECIPIENT: &str = "age1yt3tfqlfrwdwx0z0ynwplcr6qxcxfaqycuprpmy89nr83ltx74tqdpszlw";
    let world = World::new(1, &[]);
    let plain = world.dir.path().join("db.yaml");
    std::fs::write(
        &plain,
        "apiVersion: v1\nkind: Secret\nmetadata: { name: db }\nstringData: { password: K8s-Sealed-61c0 }\n",
    )
    .unwrap();
    let sealed = world.repo.path().join("packs/config/db.yaml");
    let args = ["secret", "encrypt", plain.to_str().unwrap(), "--age", RECIPIENT, "--output", sealed.to_str().unwrap()];
    common::strata_with_env(&args, world.repo.path(), &[]).ok();
    let revision = world.repo.commit("an encrypted Secret");
    kubernetes::put_secret(
        &world.mgmt_kubeconfig(),
        json!({
            "apiVersion": "v1", "kind": "Secret",
            "metadata": {"name": "sops-age", "namespace": NAMESPACE},
            "stringData": {"identity.agekey": format!("# created by age-keygen\n{KEY}\n")},
        }),
    );
    let extra = format!(
        "kubernetes: {{ kubeconfig: {}, namespace: {NAMESPACE} }}\nstate: {{ backend: kubernetes }}\ndecryption: {{ secret: sops-age }}\n",
        world.mgmt_kubeconfig().display()
    );
    let mut daemon = Daemon::configure(&local(&world.repo), &world.workload_target(), &extra);
    daemon.spawn();
    wait("the encrypted Secret applied", LONG, &[&daemon], || world.applied_at("c0", &revision));
    let secret = world.workload.object("secrets", Some("default"), "db").expect("the Secret is applied");
    let password = secret["data"]["password"].as_str().unwrap_or_default().to_string();
    assert_eq!(password, common::secrets::b64("K8s-Sealed-61c0"), "{secret}");
    assert!(!daemon.log().contains("K8s-Sealed-61c0"));
    daemon.terminate();
}

/// A management API slow for one cluster's state holds up that cluster's work alone. Its worker
/// waits for its state to be written; meanwhile the web server answers at once and the other
/// cluster's worker applies the new revision (to a directory) and records it. Then the slow
/// one's state answers, and it is applied too.
#[test]
fn a_slow_management_api_holds_up_only_the_work_waiting_for_it() {
    /// How long the stand-in holds c0's next state request: longer than the checks below take.
    const HOLD: Duration = Duration::from_secs(15);
    /// What "at once" means for the web server here (it answers in milliseconds when free).
    const PROMPT: Duration = Duration::from_secs(2);
    let world = World::new(2, &[]);
    let first = world.repo.commit("start");
    let mut daemon = world.configure(1, "  workload: { directory: ./out/workload }\n");
    daemon.launch();
    daemon.wait_for("the daemon to be ready", Duration::from_secs(30), |d| d.get("/readyz").0 == 200);
    let greeting =
        |cluster: &str| common::daemon::file(&daemon.out(&format!("workload/default/configmap.cm-{cluster}.yaml")));
    wait("both clusters applied", LONG, &[&daemon], || {
        ["c0", "c1"].iter().all(|c| world.applied_at(c, &first) && greeting(c).contains("hello"))
    });

    world.mgmt.stall("/clusterstates/c0", HOLD, 1);
    world.repo.edit(PROFILE, "greeting: hello", "greeting: bonjour");
    let second = world.repo.commit("bonjour");
    wait("c0's worker to write its state", LONG, &[&daemon], || world.mgmt.stalled() == 1);
    let stalled = std::time::Instant::now();
    loop {
        let asked = std::time::Instant::now();
        let (code, body) = daemon.get("/healthz");
        let took = asked.elapsed();
        assert!(
            code == 200 && took < PROMPT,
            "/healthz answered {code} after {took:?} while c0's state was held ({body})\n--- daemon log ---\n{}",
            daemon.log()
        );
        if world.applied_at("c1", &second) && greeting("c1").contains("bonjour") {
            break;
        }
        assert!(
            stalled.elapsed() < HOLD - Duration::from_secs(3),
            "c1 was not applied while c0's state was held\n--- daemon log ---\n{}",
            daemon.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(greeting("c0").contains("hello"), "c0 waits for its state: {}", greeting("c0"));
    wait("c0 applied once its state answers", LONG, &[&daemon], || {
        world.applied_at("c0", &second) && greeting("c0").contains("bonjour")
    });
}
