//! The API server stand-in (`tests/apiserver`) held to the documented Kubernetes API the way
//! real clients use it: kube-rs (typed `Api`s and the runtime watcher), client-go's
//! leader-election request pattern, kube-leader-election and kube-lease-manager, and the real
//! `kubectl`. What these tests pin down is what strata's watches, Leases and
//! optimistic-concurrency state may rely on.

use crate::apiserver;
use crate::common;

use std::collections::BTreeSet;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use apiserver::ApiServer;
use futures::{Stream, StreamExt};
use http_body_util::BodyExt;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Secret};
use kube::api::{
    Api, DeleteParams, DynamicObject, ListParams, Patch, PatchParams, PostParams, Preconditions, VersionMatch,
    WatchEvent, WatchParams,
};
use kube::core::{ApiResource, GroupVersionKind};
use kube::runtime::watcher;
use kube::{Client, Config};
use serde_json::{Value, json};

/// Long enough for anything this machine does; only ever waited for, never asserted on.
const PATIENCE: Duration = Duration::from_secs(20);

fn client(server: &ApiServer) -> Client {
    Client::try_from(Config::new(server.url().parse().unwrap())).unwrap()
}

fn configmap(name: &str, data: Value) -> ConfigMap {
    serde_json::from_value(json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name}, "data": data}))
        .unwrap()
}

async fn create_namespace(c: &Client, name: &str) {
    let namespaces: Api<Namespace> = Api::all(c.clone());
    let ns = serde_json::from_value(json!({"metadata": {"name": name}})).unwrap();
    namespaces.create(&PostParams::default(), &ns).await.unwrap();
}

/// The next item of a stream, or a panic naming what was awaited.
async fn next<S: Stream + Unpin>(stream: &mut S, what: &str) -> S::Item {
    tokio::time::timeout(PATIENCE, stream.next())
        .await
        .unwrap_or_else(|_| panic!("waited for {what}"))
        .unwrap_or_else(|| panic!("the stream ended while waiting for {what}"))
}

/// A watch event as (type, name, resourceVersion).
fn seen<K: kube::Resource>(event: &WatchEvent<K>) -> (String, String, String) {
    let meta =
        |k: &K| (k.meta().name.clone().unwrap_or_default(), k.meta().resource_version.clone().unwrap_or_default());
    let (kind, (name, rv)) = match event {
        WatchEvent::Added(k) => ("ADDED", meta(k)),
        WatchEvent::Modified(k) => ("MODIFIED", meta(k)),
        WatchEvent::Deleted(k) => ("DELETED", meta(k)),
        WatchEvent::Bookmark(b) => ("BOOKMARK", (String::new(), b.metadata.resource_version.clone())),
        WatchEvent::Error(e) => ("ERROR", (e.reason.clone(), e.code.to_string())),
    };
    (kind.to_string(), name, rv)
}

fn kind_and_name<K: kube::Resource>(event: WatchEvent<K>) -> (String, String) {
    let (kind, name, _) = seen(&event);
    (kind, name)
}

fn rv(of: &impl kube::Resource) -> u64 {
    of.meta().resource_version.as_deref().unwrap().parse().unwrap()
}

fn api_status(result: Result<impl std::fmt::Debug, kube::Error>) -> (u16, String, String) {
    match result {
        Err(kube::Error::Api(status)) => (status.code, status.reason.clone(), status.message.clone()),
        other => panic!("expected an API error, got {other:?}"),
    }
}

/// A request with full control over method, content type and body: (status, body).
async fn raw(c: &Client, method: &str, path: &str, content_type: &str, body: &Value) -> (u16, Value) {
    let request = http::Request::builder()
        .method(method)
        .uri(path)
        .header("content-type", content_type)
        .body(kube::client::Body::from(serde_json::to_vec(body).unwrap()))
        .unwrap();
    let response = c.send(request).await.unwrap();
    let status = response.status().as_u16();
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    (status, serde_json::from_slice(&bytes).unwrap_or(Value::Null))
}

type Watched<K> = tokio::sync::mpsc::UnboundedReceiver<Result<watcher::Event<K>, watcher::Error>>;

/// kube's watcher on a task of its own (it opens its watch only while polled), its events forwarded.
fn drive<K>(api: Api<K>, config: watcher::Config) -> Watched<K>
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug + Send + 'static,
{
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        let mut events = watcher(api, config).boxed();
        while let Some(event) = events.next().await {
            if tx.send(event).is_err() {
                break;
            }
        }
    });
    rx
}

async fn recv<T>(rx: &mut tokio::sync::mpsc::UnboundedReceiver<T>, what: &str) -> T {
    tokio::time::timeout(PATIENCE, rx.recv())
        .await
        .unwrap_or_else(|_| panic!("waited for {what}"))
        .unwrap_or_else(|| panic!("the channel closed while waiting for {what}"))
}

/// Waits until the server has seen `count` watch requests (each is open once logged).
async fn watch_requests(server: &ApiServer, count: usize) {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while server.requests().iter().filter(|r| r.watch).count() < count {
        assert!(tokio::time::Instant::now() < deadline, "waited for watch request {count}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// The list requests (not watches) the server saw for a path.
fn lists_of(server: &ApiServer, path: &str) -> usize {
    server.requests().iter().filter(|r| r.method == "GET" && !r.watch && r.path == path).count()
}

#[tokio::test]
async fn a_watch_resumes_after_a_resource_version_and_sees_each_later_change_once_in_order() {
    let server = ApiServer::start();
    let c = client(&server);
    let cms: Api<ConfigMap> = Api::namespaced(c.clone(), "default");
    let pp = PostParams::default();
    cms.create(&pp, &configmap("a", json!({"v": "1"}))).await.unwrap();
    let listed = cms.list(&ListParams::default()).await.unwrap();
    let from = listed.metadata.resource_version.clone().unwrap();
    assert_eq!(from, server.revision().to_string(), "a list carries the current revision");

    cms.create(&pp, &configmap("b", json!({}))).await.unwrap();
    cms.patch("a", &PatchParams::default(), &Patch::Merge(json!({"data": {"v": "2"}}))).await.unwrap();
    cms.delete("b", &DeleteParams::default()).await.unwrap();
    let elsewhere: Api<ConfigMap> = Api::namespaced(c.clone(), "kube-system");
    elsewhere.create(&pp, &configmap("other", json!({}))).await.unwrap();

    let mut events = cms.watch(&WatchParams::default(), &from).await.unwrap().boxed();
    let mut got = Vec::new();
    for _ in 0..3 {
        got.push(seen(&next(&mut events, "a replayed event").await.unwrap()));
    }
    let kinds: Vec<(&str, &str)> = got.iter().map(|(k, n, _)| (k.as_str(), n.as_str())).collect();
    assert_eq!(kinds, [("ADDED", "b"), ("MODIFIED", "a"), ("DELETED", "b")]);
    let versions: Vec<u64> = got.iter().map(|(_, _, rv)| rv.parse().unwrap()).collect();
    assert!(versions.windows(2).all(|w| w[0] < w[1]) && versions[0] > from.parse().unwrap(), "{versions:?}");

    // Live changes follow the replay; the other namespace's object never shows up here.
    cms.create(&pp, &configmap("d", json!({}))).await.unwrap();
    assert_eq!(seen(&next(&mut events, "the live ADDED").await.unwrap()).1, "d");

    // Across namespaces the same resume sees the kube-system object too, in revision order.
    let all: Api<ConfigMap> = Api::all(c.clone());
    let mut everywhere = all.watch(&WatchParams::default(), &from).await.unwrap().boxed();
    let mut names = Vec::new();
    for _ in 0..5 {
        names.push(seen(&next(&mut everywhere, "a cluster-wide event").await.unwrap()).1);
    }
    assert_eq!(names, ["b", "a", "b", "other", "d"]);

    // resourceVersion=0 starts with the current state as synthetic ADDED events.
    let mut fresh = cms.watch(&WatchParams::default(), "0").await.unwrap().boxed();
    let mut initial = BTreeSet::new();
    for _ in 0..2 {
        let (kind, name, _) = seen(&next(&mut fresh, "a synthetic ADDED").await.unwrap());
        assert_eq!(kind, "ADDED");
        initial.insert(name);
    }
    assert_eq!(initial, BTreeSet::from(["a".to_string(), "d".to_string()]));
}

#[tokio::test]
async fn resuming_from_a_compacted_revision_is_410_gone_and_kubes_watcher_relists() {
    let server = ApiServer::start();
    server.set_history_limit(3);
    let c = client(&server);
    let cms: Api<ConfigMap> = Api::namespaced(c.clone(), "default");
    let pp = PostParams::default();
    let first = cms.create(&pp, &configmap("first", json!({}))).await.unwrap();
    for i in 0..4 {
        cms.create(&pp, &configmap(&format!("cm{i}"), json!({}))).await.unwrap();
    }
    let mut stale = cms.watch(&WatchParams::default(), &rv(&first).to_string()).await.unwrap().boxed();
    match next(&mut stale, "the 410").await.unwrap() {
        WatchEvent::Error(status) => {
            assert_eq!((status.code, status.reason.as_str()), (410, "Expired"), "{status:?}");
            assert!(status.message.contains("too old resource version"), "{}", status.message);
        }
        other => panic!("expected an ERROR event, got {other:?}"),
    }
    assert!(stale.next().await.is_none(), "the server closes a watch after its 410");

    // kube's watcher: list, watch; its watch cut off after a compaction past its revision → relist.
    let path = "/api/v1/namespaces/default/configmaps";
    let watches_before = server.requests().iter().filter(|r| r.watch).count();
    let mut stream = drive(cms.clone(), watcher::Config::default());
    let mut listed = BTreeSet::new();
    loop {
        match recv(&mut stream, "the initial list").await.unwrap() {
            watcher::Event::InitApply(cm) => {
                listed.insert(cm.metadata.name.unwrap());
            }
            watcher::Event::InitDone => break,
            _ => {}
        }
    }
    assert_eq!(listed.len(), 5);
    assert_eq!(lists_of(&server, path), 1);
    watch_requests(&server, watches_before + 1).await;
    let elsewhere: Api<ConfigMap> = Api::namespaced(c.clone(), "kube-system");
    elsewhere.create(&pp, &configmap("unseen", json!({}))).await.unwrap();
    server.compact();
    server.close_watches();
    let mut gone = 0;
    let mut relisted = BTreeSet::new();
    loop {
        match recv(&mut stream, "the relist").await {
            Err(e) => {
                assert!(e.to_string().contains("410") || e.to_string().contains("Expired"), "{e}");
                gone += 1;
            }
            Ok(watcher::Event::InitApply(cm)) => {
                relisted.insert(cm.metadata.name.unwrap());
            }
            Ok(watcher::Event::InitDone) => break,
            Ok(_) => {}
        }
    }
    assert_eq!(gone, 1, "one 410 before the relist");
    assert_eq!(relisted, listed);
    assert_eq!(lists_of(&server, path), 2);
    cms.create(&pp, &configmap("late", json!({}))).await.unwrap();
    match recv(&mut stream, "the live event").await.unwrap() {
        watcher::Event::Apply(cm) => assert_eq!(cm.metadata.name.as_deref(), Some("late")),
        other => panic!("expected Apply(late), got {other:?}"),
    }
}

#[tokio::test]
async fn bookmarks_carry_the_revision_so_a_resumed_watch_needs_no_relist() {
    let server = ApiServer::start();
    let c = client(&server);
    let cms: Api<ConfigMap> = Api::namespaced(c.clone(), "default");
    let pp = PostParams::default();
    cms.create(&pp, &configmap("a", json!({}))).await.unwrap();

    // A raw watch that allows bookmarks gets one with the current revision.
    let mut events = cms.watch(&WatchParams::default(), "0").await.unwrap().boxed();
    assert_eq!(seen(&next(&mut events, "ADDED a").await.unwrap()).0, "ADDED");
    let elsewhere: Api<ConfigMap> = Api::namespaced(c.clone(), "kube-system");
    elsewhere.create(&pp, &configmap("unseen", json!({}))).await.unwrap();
    server.send_bookmarks();
    let (kind, _, at) = seen(&next(&mut events, "a bookmark").await.unwrap());
    assert_eq!((kind.as_str(), at.clone()), ("BOOKMARK", server.revision().to_string()));
    // One that does not allow them gets none: the next thing it sees is the next change.
    let mut plain = cms.watch(&WatchParams::default().disable_bookmarks(), &at).await.unwrap().boxed();
    server.send_bookmarks();
    cms.create(&pp, &configmap("b", json!({}))).await.unwrap();
    assert_eq!(seen(&next(&mut plain, "ADDED b").await.unwrap()).0, "ADDED");

    // Streaming lists: the initial events end with the initial-events-end bookmark.
    let mut streaming = cms.watch(&WatchParams::streaming_lists(), "").await.unwrap().boxed();
    let mut names = BTreeSet::new();
    loop {
        match next(&mut streaming, "the streamed list").await.unwrap() {
            WatchEvent::Added(cm) => {
                names.insert(cm.metadata.name.unwrap());
            }
            WatchEvent::Bookmark(b) => {
                assert_eq!(b.metadata.annotations.get("k8s.io/initial-events-end").map(String::as_str), Some("true"));
                break;
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(names, BTreeSet::from(["a".to_string(), "b".to_string()]));

    // kube's watcher keeps its place through bookmarks: after a compaction and a cut-off it
    // resumes from the bookmark's revision without listing again.
    let watches_before = server.requests().iter().filter(|r| r.watch).count();
    let mut stream = drive(cms.clone(), watcher::Config::default());
    while !matches!(recv(&mut stream, "the initial list").await.unwrap(), watcher::Event::InitDone) {}
    watch_requests(&server, watches_before + 1).await;
    elsewhere.create(&pp, &configmap("unseen-2", json!({}))).await.unwrap();
    server.send_bookmarks();
    server.compact();
    server.close_watches();
    cms.create(&pp, &configmap("c", json!({}))).await.unwrap();
    match recv(&mut stream, "the change after the resume").await.unwrap() {
        watcher::Event::Apply(cm) => assert_eq!(cm.metadata.name.as_deref(), Some("c")),
        other => panic!("expected Apply(c), got {other:?}"),
    }
    assert_eq!(lists_of(&server, "/api/v1/namespaces/default/configmaps"), 1);

    // And kube's watcher over streaming lists: no list request at all.
    let mut streamed = drive(cms.clone(), watcher::Config::default().streaming_lists());
    let mut count = 0;
    loop {
        match recv(&mut streamed, "the streamed initial state").await.unwrap() {
            watcher::Event::InitApply(_) => count += 1,
            watcher::Event::InitDone => break,
            _ => {}
        }
    }
    assert_eq!(count, 3);
    assert_eq!(lists_of(&server, "/api/v1/namespaces/default/configmaps"), 1);
}

#[tokio::test]
async fn label_and_field_selectors_filter_lists_and_watches_and_objects_moving_out_leave_as_deleted() {
    let server = ApiServer::start();
    let c = client(&server);
    create_namespace(&c, "strata-system").await;
    let secrets: Api<Secret> = Api::namespaced(c.clone(), "strata-system");
    let secret = |name: &str, target: Option<&str>| -> Secret {
        let mut s = json!({"metadata": {"name": name}, "type": "Opaque", "stringData": {"kubeconfig": "x"}});
        if let Some(t) = target {
            s["metadata"]["labels"] = json!({"strata.dev/target": t});
        }
        serde_json::from_value(s).unwrap()
    };
    let from = secrets.list(&ListParams::default()).await.unwrap().metadata.resource_version.unwrap();
    let mut events = secrets.watch(&WatchParams::default().labels("strata.dev/target"), &from).await.unwrap().boxed();
    let pp = PostParams::default();
    secrets.create(&pp, &secret("plain", None)).await.unwrap();
    secrets.create(&pp, &secret("prod", Some("prod"))).await.unwrap();
    // The unlabelled secret was filtered out: the first event is the labelled one.
    assert_eq!(
        kind_and_name(next(&mut events, "ADDED prod").await.unwrap()),
        ("ADDED".to_string(), "prod".to_string())
    );

    let label = |value: Value| Patch::Merge(json!({"metadata": {"labels": {"strata.dev/target": value}}}));
    secrets.patch("plain", &PatchParams::default(), &label(json!("stage"))).await.unwrap();
    assert_eq!(
        kind_and_name(next(&mut events, "plain entering").await.unwrap()),
        ("ADDED".to_string(), "plain".to_string())
    );
    let unlabelled = secrets.patch("prod", &PatchParams::default(), &label(Value::Null)).await.unwrap();
    let (kind, name, at) = seen(&next(&mut events, "prod leaving").await.unwrap());
    assert_eq!((kind.as_str(), name.as_str()), ("DELETED", "prod"));
    assert_eq!(at, unlabelled.metadata.resource_version.unwrap(), "leaving carries the change's revision");

    let names = |list: kube::api::ObjectList<Secret>| -> Vec<String> {
        list.items.into_iter().map(|s| s.metadata.name.unwrap()).collect()
    };
    secrets.create(&pp, &secret("edge", Some("edge"))).await.unwrap();
    let lp = |selector: &str| ListParams::default().labels(selector);
    assert_eq!(names(secrets.list(&lp("strata.dev/target in (stage, edge)")).await.unwrap()), ["edge", "plain"]);
    assert_eq!(names(secrets.list(&lp("strata.dev/target notin (edge)")).await.unwrap()), ["plain", "prod"]);
    assert_eq!(names(secrets.list(&lp("strata.dev/target!=edge")).await.unwrap()), ["plain", "prod"]);
    assert_eq!(names(secrets.list(&lp("!strata.dev/target")).await.unwrap()), ["prod"]);
    assert_eq!(names(secrets.list(&lp("strata.dev/target=edge,strata.dev/target")).await.unwrap()), ["edge"]);
    let fp = |selector: &str| ListParams::default().fields(selector);
    assert_eq!(names(secrets.list(&fp("metadata.name=plain")).await.unwrap()), ["plain"]);
    assert_eq!(names(secrets.list(&fp("metadata.name!=plain,type=Opaque")).await.unwrap()), ["edge", "prod"]);
    let all: Api<Secret> = Api::all(c.clone());
    assert_eq!(names(all.list(&fp("metadata.namespace=strata-system")).await.unwrap()).len(), 3);
    assert!(names(all.list(&fp("metadata.namespace=default")).await.unwrap()).is_empty());
    let (code, reason, message) = api_status(secrets.list(&fp("spec.nodeName=x")).await);
    assert_eq!((code, reason.as_str()), (400, "BadRequest"));
    assert!(message.contains("field label not supported: spec.nodeName"), "{message}");
    let (code, _, _) = api_status(secrets.list(&lp("strata.dev/target in (a")).await);
    assert_eq!(code, 400);

    // A watch pinned to one name by field selector.
    let mut one = secrets.watch(&WatchParams::default().fields("metadata.name=edge"), "0").await.unwrap().boxed();
    assert_eq!(kind_and_name(next(&mut one, "ADDED edge").await.unwrap()), ("ADDED".to_string(), "edge".to_string()));
    secrets.patch("plain", &PatchParams::default(), &label(json!("x"))).await.unwrap();
    secrets.delete("edge", &DeleteParams::default()).await.unwrap();
    assert_eq!(
        kind_and_name(next(&mut one, "DELETED edge").await.unwrap()),
        ("DELETED".to_string(), "edge".to_string())
    );
}

#[tokio::test]
async fn a_watch_with_timeout_seconds_ends_on_time() {
    let server = ApiServer::start();
    let c = client(&server);
    let cms: Api<ConfigMap> = Api::namespaced(c, "default");
    let mut events = cms.watch(&WatchParams::default().timeout(1).disable_bookmarks(), "").await.unwrap().boxed();
    let end = tokio::time::timeout(PATIENCE, events.next()).await.expect("the watch ends by itself");
    assert!(end.is_none(), "{end:?}");
    let watch = server.requests().into_iter().find(|r| r.watch).unwrap();
    assert!(watch.query.contains("timeoutSeconds=1"), "{}", watch.query);
}

/// A ConfigMap holds 1 MiB of keys and values at most, as kube-apiserver validates it.
#[tokio::test]
async fn a_configmap_over_one_mebibyte_is_invalid() {
    let server = ApiServer::start();
    let c = client(&server);
    let cms: Api<ConfigMap> = Api::namespaced(c, "default");
    let pp = PostParams::default();
    let fits = "x".repeat(1024 * 1024 - 1);
    cms.create(&pp, &configmap("fits", json!({ "k": fits }))).await.unwrap();
    let over = "x".repeat(1024 * 1024);
    let (code, reason, message) = api_status(cms.create(&pp, &configmap("over", json!({ "k": over }))).await);
    assert_eq!((code, reason.as_str()), (422, "Invalid"));
    assert_eq!(message, "ConfigMap \"over\" is invalid: []: Too long: may not be more than 1048576 bytes");
    let mut grown = cms.get("fits").await.unwrap();
    grown.data.as_mut().unwrap().insert("more".into(), "y".into());
    assert_eq!(api_status(cms.replace("fits", &pp, &grown).await).0, 422, "an update is held to it too");
}

#[tokio::test]
async fn stale_resource_versions_conflict_on_replace_patch_apply_and_delete() {
    let server = ApiServer::start();
    let c = client(&server);
    let cms: Api<ConfigMap> = Api::namespaced(c.clone(), "default");
    let pp = PostParams::default();
    let created = cms.create(&pp, &configmap("state", json!({"n": "0"}))).await.unwrap();
    let (code, reason, message) = api_status(cms.create(&pp, &configmap("state", json!({}))).await);
    assert_eq!((code, reason.as_str()), (409, "AlreadyExists"));
    assert_eq!(message, "configmaps \"state\" already exists");

    // PUT with the resourceVersion read: accepted once, then stale.
    let mut next_state = created.clone();
    next_state.data = Some([("n".to_string(), "1".to_string())].into());
    let replaced = cms.replace("state", &pp, &next_state).await.unwrap();
    assert!(rv(&replaced) > rv(&created));
    assert_eq!(rv(&cms.get("state").await.unwrap()), rv(&replaced), "GET shows the current resourceVersion");
    let (code, reason, message) = api_status(cms.replace("state", &pp, &next_state).await);
    assert_eq!((code, reason.as_str()), (409, "Conflict"));
    assert_eq!(
        message,
        "Operation cannot be fulfilled on configmaps \"state\": the object has been modified; please apply your changes to the latest version and try again"
    );

    let stale = created.metadata.resource_version.clone().unwrap();
    let current = replaced.metadata.resource_version.clone().unwrap();
    let merge = |rv: &str| Patch::Merge(json!({"metadata": {"resourceVersion": rv}, "data": {"n": "2"}}));
    assert_eq!(api_status(cms.patch("state", &PatchParams::default(), &merge(&stale)).await).0, 409);
    let patched = cms.patch("state", &PatchParams::default(), &merge(&current)).await.unwrap();
    // Without a resourceVersion a patch is unconditional.
    cms.patch("state", &PatchParams::default(), &Patch::Merge(json!({"data": {"m": "x"}}))).await.unwrap();
    let current = cms.get("state").await.unwrap().metadata.resource_version.unwrap();

    let test_then_set = |rv: &str| -> Patch<()> {
        Patch::Json(
            serde_json::from_value(json!([
                {"op": "test", "path": "/metadata/resourceVersion", "value": rv},
                {"op": "replace", "path": "/data/n", "value": "3"}
            ]))
            .unwrap(),
        )
    };
    assert_eq!(api_status(cms.patch("state", &PatchParams::default(), &test_then_set(&stale)).await).0, 422);
    cms.patch("state", &PatchParams::default(), &test_then_set(&current)).await.unwrap();
    assert_eq!(cms.get("state").await.unwrap().data.unwrap()["n"], "3");

    // Server-side apply treats a resourceVersion in the configuration as a precondition.
    let apply = |rv: &str| {
        Patch::Apply(json!({"apiVersion": "v1", "kind": "ConfigMap",
                            "metadata": {"name": "state", "resourceVersion": rv}, "data": {"n": "4"}}))
    };
    let (code, reason, _) = api_status(cms.patch("state", &PatchParams::apply("writer"), &apply(&stale)).await);
    assert_eq!((code, reason.as_str()), (409, "Conflict"));
    let current = cms.get("state").await.unwrap().metadata.resource_version.unwrap();
    let applied = cms.patch("state", &PatchParams::apply("writer").force(), &apply(&current)).await.unwrap();
    assert_eq!(applied.data.unwrap()["n"], "4");
    assert!(rv(&patched) < rv(&cms.get("state").await.unwrap()));

    // Delete preconditions.
    let with = |rv: &str| DeleteParams {
        preconditions: Some(Preconditions { resource_version: Some(rv.into()), uid: None }),
        ..DeleteParams::default()
    };
    let (code, _, message) = api_status(cms.delete("state", &with(&stale)).await);
    assert_eq!(code, 409);
    assert!(message.contains("Precondition failed: ResourceVersion in precondition"), "{message}");
    let current = cms.get("state").await.unwrap().metadata.resource_version.unwrap();
    cms.delete("state", &with(&current)).await.unwrap();
    assert!(cms.get_opt("state").await.unwrap().is_none());

    // A ConfigMap may be replaced unconditionally; a Lease may not.
    let fresh = cms.create(&pp, &configmap("free", json!({}))).await.unwrap();
    let mut unconditional = fresh.clone();
    unconditional.metadata.resource_version = None;
    cms.replace("free", &pp, &unconditional).await.unwrap();
    let leases: Api<Lease> = Api::namespaced(c, "default");
    let lease: Lease =
        serde_json::from_value(json!({"metadata": {"name": "l"}, "spec": {"holderIdentity": "a"}})).unwrap();
    leases.create(&pp, &lease).await.unwrap();
    let (code, reason, message) = api_status(leases.replace("l", &pp, &lease).await);
    assert_eq!((code, reason.as_str()), (422, "Invalid"));
    assert!(
        message.contains("metadata.resourceVersion") && message.contains("must be specified for an update"),
        "{message}"
    );
}

/// client-go's `tryAcquireOrRenew`: GET, then CREATE or an UPDATE carrying the resourceVersion
/// read; a 409 means another candidate got there first.
async fn try_acquire_or_renew(leases: &Api<Lease>, name: &str, id: &str, now: &str) -> Result<bool, kube::Error> {
    let Some(mut lease) = leases.get_opt(name).await? else {
        let lease = serde_json::from_value(json!({"metadata": {"name": name}, "spec": {
            "holderIdentity": id, "leaseDurationSeconds": 15, "acquireTime": now, "renewTime": now, "leaseTransitions": 0}}))
        .unwrap();
        return match leases.create(&PostParams::default(), &lease).await {
            Ok(_) => Ok(true),
            Err(kube::Error::Api(s)) if s.code == 409 => Ok(false),
            Err(e) => Err(e),
        };
    };
    let spec = lease.spec.get_or_insert_with(Default::default);
    let holder = spec.holder_identity.clone().unwrap_or_default();
    let renewed = spec.renew_time.as_ref().map(|t| t.0).unwrap();
    let duration = spec.lease_duration_seconds.unwrap_or(0) as i64;
    let now_t: k8s_openapi::jiff::Timestamp = now.parse().unwrap();
    if holder != id && !holder.is_empty() && renewed + k8s_openapi::jiff::SignedDuration::from_secs(duration) > now_t {
        return Ok(false);
    }
    if holder != id {
        spec.acquire_time = Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime(now_t));
        spec.lease_transitions = Some(spec.lease_transitions.unwrap_or(0) + 1);
        spec.holder_identity = Some(id.to_string());
    }
    spec.renew_time = Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime(now_t));
    match leases.replace(name, &PostParams::default(), &lease).await {
        Ok(_) => Ok(true),
        Err(kube::Error::Api(s)) if s.code == 409 => Ok(false),
        Err(e) => Err(e),
    }
}

#[tokio::test]
async fn leases_are_acquired_renewed_and_stolen_by_competing_clients_through_conflicts() {
    let server = ApiServer::start();
    let c = client(&server);
    create_namespace(&c, "strata-system").await;
    let leases: Api<Lease> = Api::namespaced(c.clone(), "strata-system");
    // Times are the candidates' own clocks; the server only stores them.
    let t0 = "2030-01-01T00:00:00Z";
    assert!(try_acquire_or_renew(&leases, "shard-0", "replica-a", t0).await.unwrap());
    assert!(!try_acquire_or_renew(&leases, "shard-0", "replica-b", "2030-01-01T00:00:05Z").await.unwrap());
    assert!(try_acquire_or_renew(&leases, "shard-0", "replica-a", "2030-01-01T00:00:10Z").await.unwrap());

    // replica-a dies; b and c both see the lease expired and race with the same resourceVersion.
    let later = "2030-01-01T00:01:00Z";
    let read = leases.get("shard-0").await.unwrap();
    let take = |id: &str| {
        let mut l = read.clone();
        let spec = l.spec.as_mut().unwrap();
        spec.holder_identity = Some(id.into());
        spec.lease_transitions = Some(spec.lease_transitions.unwrap() + 1);
        let now = k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime(later.parse().unwrap());
        spec.acquire_time = Some(now.clone());
        spec.renew_time = Some(now);
        l
    };
    let b = leases.replace("shard-0", &PostParams::default(), &take("replica-b")).await;
    let c2 = leases.replace("shard-0", &PostParams::default(), &take("replica-c")).await;
    assert!(b.is_ok(), "{b:?}");
    assert_eq!(api_status(c2).0, 409, "exactly one of two racing candidates wins");
    assert!(!try_acquire_or_renew(&leases, "shard-0", "replica-c", later).await.unwrap());
    assert!(try_acquire_or_renew(&leases, "shard-0", "replica-b", later).await.unwrap());
    let held = leases.get("shard-0").await.unwrap().spec.unwrap();
    assert_eq!(held.holder_identity.as_deref(), Some("replica-b"));
    assert_eq!(held.lease_transitions, Some(1));
    // The old holder's renewal with what it last read is refused: it knows it lost.
    let mut old = read.clone();
    old.spec.as_mut().unwrap().renew_time =
        Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime(later.parse().unwrap()));
    assert_eq!(api_status(leases.replace("shard-0", &PostParams::default(), &old).await).0, 409);

    // MicroTimes are stored as kube-apiserver stores them; invalid specs are refused.
    let (code, body) = raw(&c, "POST", "/apis/coordination.k8s.io/v1/namespaces/strata-system/leases", "application/json",
        &json!({"apiVersion": "coordination.k8s.io/v1", "kind": "Lease", "metadata": {"name": "shard-1"},
                "spec": {"holderIdentity": "x", "renewTime": "2030-01-01T01:00:00.5+01:00", "leaseDurationSeconds": 10}})).await;
    assert_eq!(code, 201, "{body}");
    assert_eq!(body["spec"]["renewTime"], "2030-01-01T00:00:00.500000Z");
    let (code, body) = raw(
        &c,
        "POST",
        "/apis/coordination.k8s.io/v1/namespaces/strata-system/leases",
        "application/json",
        &json!({"metadata": {"name": "shard-2"}, "spec": {"leaseDurationSeconds": 0}}),
    )
    .await;
    assert_eq!((code, body["reason"].as_str()), (422, Some("Invalid")), "{body}");
    // A Lease may be created by PUT, and shows up in discovery.
    let put = json!({"apiVersion": "coordination.k8s.io/v1", "kind": "Lease", "metadata": {"name": "shard-3"}, "spec": {"holderIdentity": "y"}});
    let (code, _) = raw(
        &c,
        "PUT",
        "/apis/coordination.k8s.io/v1/namespaces/strata-system/leases/shard-3",
        "application/json",
        &put,
    )
    .await;
    assert_eq!(code, 201);
    let (_, groups) = raw(&c, "GET", "/apis", "application/json", &Value::Null).await;
    assert!(groups["groups"].as_array().unwrap().iter().any(|g| g["name"] == "coordination.k8s.io"), "{groups}");
    let (_, resources) = raw(&c, "GET", "/apis/coordination.k8s.io/v1", "application/json", &Value::Null).await;
    assert_eq!(resources["resources"][0]["name"], "leases");
    // And Leases can be watched like anything else.
    let mut events = leases.watch(&WatchParams::default(), "0").await.unwrap().boxed();
    let mut names = BTreeSet::new();
    for _ in 0..3 {
        names.insert(seen(&next(&mut events, "a lease").await.unwrap()).1);
    }
    assert_eq!(names.len(), 3);
}

#[tokio::test]
async fn kube_leader_election_hands_a_lease_over() {
    use kube_leader_election::{LeaseLock, LeaseLockParams, LeaseLockResult};
    let server = ApiServer::start();
    let c = client(&server);
    let lock = |id: &str| {
        LeaseLock::new(
            c.clone(),
            "default",
            LeaseLockParams { lease_name: "leader".into(), holder_id: id.into(), lease_ttl: Duration::from_secs(30) },
        )
    };
    let (a, b) = (lock("a"), lock("b"));
    assert!(matches!(a.try_acquire_or_renew().await.unwrap(), LeaseLockResult::Acquired(_)));
    assert!(matches!(b.try_acquire_or_renew().await.unwrap(), LeaseLockResult::NotAcquired(_)));
    assert!(matches!(a.try_acquire_or_renew().await.unwrap(), LeaseLockResult::Acquired(_)));
    a.step_down().await.unwrap();
    // Stepping down leaves a one-second lease held by nobody; b takes it once that has passed.
    let taken = tokio::time::timeout(PATIENCE, async {
        loop {
            if let LeaseLockResult::Acquired(lease) = b.try_acquire_or_renew().await.unwrap() {
                return lease;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    })
    .await
    .expect("b acquires the lease a stepped down from");
    let spec = taken.spec.unwrap();
    assert_eq!((spec.holder_identity.as_deref(), spec.lease_transitions), (Some("b"), Some(1)));
}

#[tokio::test]
async fn kube_lease_manager_locks_through_server_side_apply_conflicts() {
    use kube_lease_manager::LeaseManagerBuilder;
    let server = ApiServer::start();
    let c = client(&server);
    let manager = |id: &str| {
        LeaseManagerBuilder::new(c.clone(), "shard-7").with_identity(id).with_duration(30).with_grace(5).build()
    };
    let a = manager("a").await.unwrap();
    let b = manager("b").await.unwrap();
    assert!(tokio::time::timeout(PATIENCE, a.changed()).await.unwrap().unwrap(), "a locks the free lease");
    let leases: Api<Lease> = Api::namespaced(c.clone(), "default");
    assert_eq!(leases.get("shard-7").await.unwrap().spec.unwrap().holder_identity.as_deref(), Some("a"));
    // b's soft lock (an apply without force) conflicts with a's ownership of holderIdentity.
    let (code, reason, message) = api_status(
        leases
            .patch(
                "shard-7",
                &PatchParams::apply("kube-lease-b"),
                &Patch::Apply(
                    json!({"apiVersion": "coordination.k8s.io/v1", "kind": "Lease", "spec": {"holderIdentity": "b"}}),
                ),
            )
            .await,
    );
    assert_eq!((code, reason.as_str()), (409, "Conflict"));
    assert!(message.contains(".spec.holderIdentity"), "{message}");
    a.release().await.unwrap();
    assert!(tokio::time::timeout(PATIENCE, b.changed()).await.unwrap().unwrap(), "b locks the released lease");
    let spec = leases.get("shard-7").await.unwrap().spec.unwrap();
    assert_eq!(spec.holder_identity.as_deref(), Some("b"));
    assert_eq!(spec.lease_transitions, Some(2));
}

fn widget_crd() -> Value {
    json!({"apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
        "metadata": {"name": "widgets.example.com"},
        "spec": {"group": "example.com", "scope": "Namespaced",
                 "names": {"kind": "Widget", "plural": "widgets", "singular": "widget", "listKind": "WidgetList"},
                 "versions": [{"name": "v1", "served": true, "storage": true, "subresources": {"status": {}},
                     "schema": {"openAPIV3Schema": {"type": "object", "properties": {
                         "spec": {"type": "object", "properties": {
                             "size": {"type": "integer"},
                             "parts": {"type": "array", "x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["name"],
                                       "items": {"type": "object", "required": ["name"], "properties": {
                                           "name": {"type": "string"}, "count": {"type": "integer"}}}}}},
                         "status": {"type": "object", "properties": {
                             "phase": {"type": "string"}, "observedGeneration": {"type": "integer"}}}}}}}]}})
}

#[tokio::test]
async fn a_crd_status_subresource_separates_spec_and_status_writes() {
    let server = ApiServer::start();
    let c = client(&server);
    let (code, body) =
        raw(&c, "POST", "/apis/apiextensions.k8s.io/v1/customresourcedefinitions", "application/json", &widget_crd())
            .await;
    assert_eq!(code, 201, "{body}");
    let (_, resources) = raw(&c, "GET", "/apis/example.com/v1", "application/json", &Value::Null).await;
    let names: Vec<&str> =
        resources["resources"].as_array().unwrap().iter().map(|r| r["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["widgets", "widgets/status"]);

    let gvk = GroupVersionKind::gvk("example.com", "v1", "Widget");
    let widgets: Api<DynamicObject> = Api::namespaced_with(c.clone(), "default", &ApiResource::from_gvk(&gvk));
    let w: DynamicObject = serde_json::from_value(json!({"apiVersion": "example.com/v1", "kind": "Widget",
        "metadata": {"name": "w"}, "spec": {"size": 1, "colour": "red"}, "status": {"phase": "Made"}}))
    .unwrap();
    let created = widgets.create(&PostParams::default(), &w).await.unwrap();
    assert_eq!(created.data["spec"], json!({"size": 1}), "unknown fields are pruned");
    assert!(created.data.get("status").is_none(), "create cannot set status");
    assert_eq!(created.metadata.generation, Some(1));
    // Strict field validation (kubectl's default) refuses what the schema does not declare,
    // on create and on apply; without it an applied unknown field is dropped and owned by nobody.
    let collection = "/apis/example.com/v1/namespaces/default/widgets";
    let colourful =
        json!({"apiVersion": "example.com/v1", "kind": "Widget", "metadata": {"name": "w"}, "spec": {"colour": "red"}});
    let (code, body) =
        raw(&c, "POST", &format!("{collection}?fieldValidation=Strict"), "application/json", &colourful).await;
    assert_eq!(code, 400, "{body}");
    assert!(body["message"].as_str().unwrap().contains("unknown field \"spec.colour\""), "{body}");
    let strict_apply = format!("{collection}/w?fieldManager=painter&fieldValidation=Strict");
    let (code, body) = raw(&c, "PATCH", &strict_apply, "application/apply-patch+yaml", &colourful).await;
    assert_eq!(code, 400, "{body}");
    assert!(body["message"].as_str().unwrap().contains(".spec.colour: field not declared in schema"), "{body}");
    let (code, body) =
        raw(&c, "PATCH", &format!("{collection}/w?fieldManager=painter"), "application/apply-patch+yaml", &colourful)
            .await;
    assert_eq!(code, 200, "{body}");
    assert!(body["spec"].get("colour").is_none(), "{body}");
    assert!(!body["metadata"]["managedFields"].to_string().contains("colour"), "{body}");

    // The status subresource changes status only, and generation not at all.
    let status = Patch::Merge(json!({"spec": {"size": 9}, "status": {"phase": "Ready", "observedGeneration": 1}}));
    let after = widgets.patch_status("w", &PatchParams::default(), &status).await.unwrap();
    assert_eq!((after.data["spec"]["size"].clone(), after.data["status"]["phase"].clone()), (json!(1), json!("Ready")));
    assert_eq!(after.metadata.generation, Some(1));
    // The main resource ignores status, and its spec changes bump generation.
    let main = Patch::Merge(json!({"spec": {"size": 2}, "status": {"phase": "Broken"}}));
    let after = widgets.patch("w", &PatchParams::default(), &main).await.unwrap();
    assert_eq!((after.data["spec"]["size"].clone(), after.data["status"]["phase"].clone()), (json!(2), json!("Ready")));
    assert_eq!(after.metadata.generation, Some(2));
    // Server-side apply to status is owned with the subresource named.
    let apply = Patch::Apply(json!({"apiVersion": "example.com/v1", "kind": "Widget", "metadata": {"name": "w"},
                                    "status": {"phase": "Degraded"}}));
    // The merge patch above made its (user-agent named) manager own status.phase: a plain apply conflicts.
    let (code, _, message) =
        api_status(widgets.patch_status("w", &PatchParams::apply("widget-controller"), &apply).await);
    assert!(
        code == 409 && message.contains(".status.phase") && message.contains("with subresource \"status\""),
        "{message}"
    );
    let after = widgets.patch_status("w", &PatchParams::apply("widget-controller").force(), &apply).await.unwrap();
    let entry = after
        .metadata
        .managed_fields
        .unwrap()
        .into_iter()
        .find(|m| m.manager.as_deref() == Some("widget-controller"))
        .unwrap();
    assert_eq!((entry.operation.as_deref(), entry.subresource.as_deref()), (Some("Apply"), Some("status")));
    assert_eq!(entry.fields_v1.unwrap().0, json!({"f:status": {"f:phase": {}}}));
    // PUT on /status with a stale resourceVersion conflicts like any other.
    let mut stale = created.clone();
    stale.data["status"] = json!({"phase": "Old"});
    let (code, _, _) = api_status(widgets.replace_status("w", &PostParams::default(), &stale).await);
    assert_eq!(code, 409);

    // Schema types are checked; custom resources take no strategic merge patch.
    let bad =
        json!({"apiVersion": "example.com/v1", "kind": "Widget", "metadata": {"name": "bad"}, "spec": {"size": "big"}});
    let (code, body) =
        raw(&c, "POST", "/apis/example.com/v1/namespaces/default/widgets", "application/json", &bad).await;
    assert_eq!(code, 422, "{body}");
    assert!(body["message"].as_str().unwrap().contains("spec.size in body must be of type integer"), "{body}");
    let (code, _) = raw(
        &c,
        "PATCH",
        "/apis/example.com/v1/namespaces/default/widgets/w",
        "application/strategic-merge-patch+json",
        &json!({"spec": {"size": 3}}),
    )
    .await;
    assert_eq!(code, 415);
    // A CRD without a schema is refused, as apiextensions.k8s.io/v1 requires one.
    let mut schemaless = widget_crd();
    schemaless["metadata"]["name"] = json!("gadgets.example.com");
    schemaless["spec"]["names"] = json!({"kind": "Gadget", "plural": "gadgets"});
    schemaless["spec"]["versions"][0].as_object_mut().unwrap().remove("schema");
    let (code, body) =
        raw(&c, "POST", "/apis/apiextensions.k8s.io/v1/customresourcedefinitions", "application/json", &schemaless)
            .await;
    assert_eq!(code, 422, "{body}");

    // Two managers own different items of the schema's associative list.
    let part = |manager: &str, name: &str, count: i64| {
        let config = json!({"apiVersion": "example.com/v1", "kind": "Widget", "metadata": {"name": "w"},
                            "spec": {"parts": [{"name": name, "count": count}]}});
        let widgets = widgets.clone();
        let manager = manager.to_string();
        async move { widgets.patch("w", &PatchParams::apply(&manager), &Patch::Apply(config)).await }
    };
    part("left", "l", 1).await.unwrap();
    let both = part("right", "r", 2).await.unwrap();
    assert_eq!(both.data["spec"]["parts"], json!([{"name": "l", "count": 1}, {"name": "r", "count": 2}]));
    assert_eq!(api_status(part("right", "l", 5).await).0, 409);

    // Deleting the CRD takes its kind and its objects away.
    let (code, _) = raw(
        &c,
        "DELETE",
        "/apis/apiextensions.k8s.io/v1/customresourcedefinitions/widgets.example.com",
        "application/json",
        &Value::Null,
    )
    .await;
    assert_eq!(code, 200);
    assert_eq!(api_status(widgets.get("w").await).0, 404);
    assert!(server.names("widgets").is_empty());
}

fn deployment(containers: Value) -> Value {
    json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web"},
           "spec": {"selector": {"matchLabels": {"app": "web"}},
                    "template": {"metadata": {"labels": {"app": "web"}}, "spec": {"containers": containers}}}})
}

/// Only what a manager that cares about one container applies.
fn containers_only(containers: Value) -> Value {
    json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web"},
           "spec": {"template": {"spec": {"containers": containers}}}})
}

fn container_names(d: &Deployment) -> Vec<String> {
    d.spec.as_ref().unwrap().template.spec.as_ref().unwrap().containers.iter().map(|c| c.name.clone()).collect()
}

#[tokio::test]
async fn two_managers_own_different_containers_env_and_ports_of_one_deployment() {
    let server = ApiServer::start();
    let c = client(&server);
    let deployments: Api<Deployment> = Api::namespaced(c.clone(), "default");
    let platform_config = |image: &str| {
        deployment(json!([{"name": "app", "image": image, "env": [{"name": "MODE", "value": "a"}],
                           "ports": [{"containerPort": 8080}]}]))
    };
    let apply = |manager: &str, config: Value| {
        let deployments = deployments.clone();
        let manager = manager.to_string();
        async move { deployments.patch("web", &PatchParams::apply(&manager), &Patch::Apply(config)).await }
    };
    apply("platform", platform_config("app:1")).await.unwrap();
    let both = apply("mesh", containers_only(json!([{"name": "proxy", "image": "proxy:1"}]))).await.unwrap();
    assert_eq!(container_names(&both), ["app", "proxy"]);
    let fields = |d: &Deployment, manager: &str| -> Value {
        d.metadata
            .managed_fields
            .as_ref()
            .unwrap()
            .iter()
            .find(|m| m.manager.as_deref() == Some(manager))
            .unwrap()
            .fields_v1
            .as_ref()
            .unwrap()
            .0["f:spec"]["f:template"]["f:spec"]["f:containers"]
            .clone()
    };
    let platform = fields(&both, "platform");
    assert!(
        platform["k:{\"name\":\"app\"}"]["f:ports"]["k:{\"containerPort\":8080,\"protocol\":\"TCP\"}"].is_object(),
        "{platform}"
    );
    assert!(platform["k:{\"name\":\"app\"}"]["f:env"]["k:{\"name\":\"MODE\"}"]["f:value"].is_object(), "{platform}");
    assert_eq!(fields(&both, "mesh"), json!({"k:{\"name\":\"proxy\"}": {".": {}, "f:image": {}, "f:name": {}}}));

    // The platform re-applies a new image: the mesh's container is left alone.
    let next = apply("platform", platform_config("app:2")).await.unwrap();
    assert_eq!(container_names(&next), ["app", "proxy"]);
    // The mesh adds an env var to the platform's container: a different key, no conflict, kept
    // when the platform applies again without it.
    apply(
        "mesh",
        containers_only(json!([{"name": "proxy", "image": "proxy:1"},
                                         {"name": "app", "env": [{"name": "MESH", "value": "on"}]}])),
    )
    .await
    .unwrap();
    let again = apply("platform", platform_config("app:2")).await.unwrap();
    // The applier's order wins for items both name: the mesh listed proxy first.
    assert_eq!(container_names(&again), ["proxy", "app"]);
    let app = &again.spec.as_ref().unwrap().template.spec.as_ref().unwrap().containers[1];
    let env: Vec<&str> = app.env.as_ref().unwrap().iter().map(|e| e.name.as_str()).collect();
    assert_eq!(env, ["MODE", "MESH"]);
    // Changing the platform's image is a conflict naming the item's field.
    let (code, _, message) =
        api_status(apply("mesh", containers_only(json!([{"name": "app", "image": "app:evil"}]))).await);
    assert_eq!(code, 409);
    assert!(
        message.contains("conflict with \"platform\"")
            && message.contains(".spec.template.spec.containers[name=\"app\"].image"),
        "{message}"
    );
    // The mesh stops applying its container: it goes; the platform's stays.
    let after = apply("mesh", containers_only(json!([{"name": "app", "env": [{"name": "MESH", "value": "on"}]}])))
        .await
        .unwrap();
    assert_eq!(container_names(&after), ["app"]);

    // Tolerations are an atomic list: one owner for the whole list.
    let with_tolerations = |key: &str| {
        json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web"},
               "spec": {"template": {"spec": {"tolerations": [{"key": key, "operator": "Exists"}]}}}})
    };
    apply("platform", {
        let mut d = deployment(json!([{"name": "app", "image": "app:2"}]));
        d["spec"]["template"]["spec"]["tolerations"] = json!([{"key": "a", "operator": "Exists"}]);
        d
    })
    .await
    .unwrap();
    let (code, _, message) = api_status(apply("mesh", with_tolerations("b")).await);
    assert_eq!(code, 409);
    assert!(message.contains(".spec.template.spec.tolerations"), "{message}");

    // A strategic merge patch merges containers by name too, and `$patch: delete` removes one.
    let smp = |containers: Value| Patch::Strategic(json!({"spec": {"template": {"spec": {"containers": containers}}}}));
    let patched = deployments
        .patch("web", &PatchParams::default(), &smp(json!([{"name": "debug", "image": "busybox"}])))
        .await
        .unwrap();
    assert_eq!(container_names(&patched), ["app", "debug"], "strategic merge appends new items");
    let patched = deployments
        .patch("web", &PatchParams::default(), &smp(json!([{"name": "debug", "$patch": "delete"}])))
        .await
        .unwrap();
    assert_eq!(container_names(&patched), ["app"]);
}

#[tokio::test]
async fn paged_lists_are_a_consistent_snapshot_until_compacted_and_exact_reads_go_back_in_time() {
    let server = ApiServer::start();
    let c = client(&server);
    let cms: Api<ConfigMap> = Api::namespaced(c.clone(), "default");
    let pp = PostParams::default();
    for name in ["a", "b", "c", "d", "e"] {
        cms.create(&pp, &configmap(name, json!({}))).await.unwrap();
    }
    let page = cms.list(&ListParams::default().limit(2)).await.unwrap();
    assert_eq!(page.items.len(), 2);
    assert_eq!(page.metadata.remaining_item_count, Some(3));
    let snapshot_rv = page.metadata.resource_version.clone().unwrap();
    cms.create(&pp, &configmap("f", json!({}))).await.unwrap();
    cms.delete("e", &DeleteParams::default()).await.unwrap();
    let mut names: Vec<String> = page.items.into_iter().map(|c| c.metadata.name.unwrap()).collect();
    let mut token = page.metadata.continue_.clone();
    while let Some(t) = token.filter(|t| !t.is_empty()) {
        let page = cms.list(&ListParams::default().limit(2).continue_token(&t)).await.unwrap();
        assert_eq!(page.metadata.resource_version.as_deref(), Some(snapshot_rv.as_str()));
        names.extend(page.items.into_iter().map(|c| c.metadata.name.unwrap()));
        token = page.metadata.continue_;
    }
    assert_eq!(names, ["a", "b", "c", "d", "e"], "pages come from the first page's snapshot");

    // An exact list at the old revision, then forgetting history expires both.
    let exact = ListParams::default().at(&snapshot_rv).matching(VersionMatch::Exact);
    let then: Vec<String> =
        cms.list(&exact).await.unwrap().items.into_iter().map(|c| c.metadata.name.unwrap()).collect();
    assert_eq!(then, ["a", "b", "c", "d", "e"]);
    let page = cms.list(&ListParams::default().limit(2)).await.unwrap();
    cms.create(&pp, &configmap("g", json!({}))).await.unwrap();
    server.compact();
    let (code, reason, message) = api_status(
        cms.list(&ListParams::default().limit(2).continue_token(page.metadata.continue_.as_deref().unwrap())).await,
    );
    assert_eq!((code, reason.as_str()), (410, "Expired"));
    assert!(message.contains("continue parameter is too old"), "{message}");
    assert_eq!(api_status(cms.list(&exact).await).0, 410);
    // resourceVersion=0 is served from the cache, which ignores limit (kube-rs leaves it out when paging).
    let (_, any) =
        raw(&c, "GET", "/api/v1/namespaces/default/configmaps?limit=2&resourceVersion=0", "", &Value::Null).await;
    assert_eq!(any["items"].as_array().unwrap().len(), 6);
    assert!(any["metadata"]["continue"].is_null());
}

#[tokio::test]
async fn finalizers_hold_a_delete_until_the_last_one_is_removed() {
    let server = ApiServer::start();
    let c = client(&server);
    let cms: Api<ConfigMap> = Api::namespaced(c.clone(), "default");
    let mut held = configmap("held", json!({}));
    held.metadata.finalizers = Some(vec!["strata.dev/cleanup".into()]);
    cms.create(&PostParams::default(), &held).await.unwrap();
    let mut events = cms.watch(&WatchParams::default(), "0").await.unwrap().boxed();
    assert_eq!(seen(&next(&mut events, "ADDED").await.unwrap()).0, "ADDED");
    let (code, body) =
        raw(&c, "DELETE", "/api/v1/namespaces/default/configmaps/held", "application/json", &Value::Null).await;
    assert_eq!(code, 202, "{body}");
    assert!(body["metadata"]["deletionTimestamp"].is_string());
    assert_eq!(seen(&next(&mut events, "MODIFIED (deleting)").await.unwrap()).0, "MODIFIED");
    assert!(cms.get("held").await.unwrap().metadata.deletion_timestamp.is_some());
    cms.patch("held", &PatchParams::default(), &Patch::Merge(json!({"metadata": {"finalizers": null}}))).await.unwrap();
    let mut kinds = Vec::new();
    for _ in 0..2 {
        kinds.push(seen(&next(&mut events, "the finalised delete").await.unwrap()).0);
    }
    assert_eq!(kinds, ["MODIFIED", "DELETED"]);
    assert!(cms.get_opt("held").await.unwrap().is_none());
}

#[tokio::test]
async fn the_failure_knobs_black_hole_requests_silence_watches_and_inject_errors() {
    let server = ApiServer::start();
    let c = client(&server);
    let cms: Api<ConfigMap> = Api::namespaced(c.clone(), "default");
    // (kube's client retries 503 and 429 by itself; a 500 it hands on.)
    server.fail_next(&[500]);
    assert_eq!(api_status(cms.get_opt("x").await).0, 500);
    assert!(cms.get_opt("x").await.unwrap().is_none(), "one injected failure, then served again");

    let mut cut = cms.watch(&WatchParams::default().disable_bookmarks(), "0").await.unwrap().boxed();
    assert_eq!(server.watch_count(), 1);
    server.set_black_hole(true);
    // A request in the black hole never gets an answer.
    assert!(tokio::time::timeout(Duration::from_millis(500), cms.get_opt("x")).await.is_err());
    server.set_black_hole(false);
    cms.create(&PostParams::default(), &configmap("after", json!({}))).await.unwrap();
    let mut fresh = cms.watch(&WatchParams::default().disable_bookmarks(), "0").await.unwrap().boxed();
    assert_eq!(seen(&next(&mut fresh, "a new watch's ADDED").await.unwrap()).1, "after");
    // The watch cut off by the black hole stays silent: the next thing it could see is never sent.
    assert!(tokio::time::timeout(Duration::from_millis(500), cut.next()).await.is_err());
    server.close_watches();
    assert!(tokio::time::timeout(PATIENCE, fresh.next()).await.unwrap().is_none(), "closed watches end");
    assert!(tokio::time::timeout(PATIENCE, cut.next()).await.unwrap().is_none());
}

fn kubectl(kubeconfig: &Path, args: &[&str]) -> std::process::Output {
    Command::new("kubectl").arg("--kubeconfig").arg(kubeconfig).args(args).output().expect("kubectl runs")
}

fn kubectl_ok(kubeconfig: &Path, args: &[&str]) -> String {
    let out = kubectl(kubeconfig, args);
    assert!(out.status.success(), "kubectl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

fn write(dir: &Path, name: &str, text: &str) -> String {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path.to_str().unwrap().to_string()
}

#[test]
fn kubectl_watches_applies_with_two_managers_pages_and_sees_conflicts() {
    let server = ApiServer::start();
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = server.kubeconfig(dir.path());
    let k = kubeconfig.as_path();
    let cm = write(
        dir.path(),
        "cm.json",
        r#"{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"first"},"data":{"a":"1"}}"#,
    );
    kubectl_ok(k, &["create", "--raw", "/api/v1/namespaces/default/configmaps", "-f", &cm]);

    // `kubectl get --watch`: the list, then the changes, as watch events.
    let mut watch = Command::new("kubectl")
        .arg("--kubeconfig")
        .arg(k)
        .args(["get", "configmaps", "-n", "default", "--watch", "--output-watch-events", "-o", "json"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = std::io::BufReader::new(watch.stdout.take().unwrap());
    let (tx, rx) = std::sync::mpsc::channel::<Value>();
    std::thread::spawn(move || {
        for event in serde_json::Deserializer::from_reader(stdout).into_iter::<Value>() {
            let Ok(event) = event else { break };
            if tx.send(event).is_err() {
                break;
            }
        }
    });
    let event = |what: &str| rx.recv_timeout(PATIENCE).unwrap_or_else(|_| panic!("kubectl shows {what}"));
    let first = event("the listed object");
    assert_eq!((first["type"].as_str(), first["object"]["metadata"]["name"].as_str()), (Some("ADDED"), Some("first")));
    // Only start changing things once kubectl's watch is open.
    common::wait_until_with(
        "kubectl to open a watch",
        PATIENCE,
        Duration::from_millis(20),
        || server.watch_count(),
        |n| *n > 0,
        String::new,
    );
    let a = write(
        dir.path(),
        "a.yaml",
        "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: web, namespace: default}\nspec:\n  selector: {matchLabels: {app: web}}\n  template:\n    metadata: {labels: {app: web}}\n    spec:\n      containers:\n      - {name: app, image: 'app:1'}\n",
    );
    let containers_of = |file: &str, container: &str| {
        let manifest = format!(
            "apiVersion: apps/v1\nkind: Deployment\nmetadata: {{name: web, namespace: default}}\nspec:\n  template:\n    spec:\n      containers:\n      - {container}\n"
        );
        write(dir.path(), file, &manifest)
    };
    let b = containers_of("b.yaml", "{name: proxy, image: 'proxy:1'}");
    let b_conflicting = containers_of("b2.yaml", "{name: app, image: 'app:evil'}");
    let second = write(
        dir.path(),
        "second.yaml",
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: second, namespace: default}\ndata: {b: '2'}\n",
    );
    kubectl_ok(k, &["apply", "--server-side", "-f", &second]);
    let added = event("the created object");
    assert_eq!((added["type"].as_str(), added["object"]["metadata"]["name"].as_str()), (Some("ADDED"), Some("second")));
    kubectl_ok(k, &["patch", "configmap", "second", "-n", "default", "--type=merge", "-p", r#"{"data":{"b":"3"}}"#]);
    let modified = event("the patched object");
    assert_eq!((modified["type"].as_str(), modified["object"]["data"]["b"].as_str()), (Some("MODIFIED"), Some("3")));
    kubectl_ok(k, &["delete", "configmap", "first", "-n", "default"]);
    assert_eq!(event("the delete")["type"], "DELETED");
    let _ = watch.kill();
    let _ = watch.wait();

    // Two field managers applying different containers with kubectl; a third would-be owner
    // of the app image conflicts until it forces.
    kubectl_ok(k, &["apply", "--server-side", "--field-manager=team-app", "-f", &a]);
    kubectl_ok(k, &["apply", "--server-side", "--field-manager=team-mesh", "-f", &b]);
    let web: Value =
        serde_json::from_str(&kubectl_ok(k, &["get", "deployment", "web", "-n", "default", "-o", "json"])).unwrap();
    let names: Vec<&str> = web["spec"]["template"]["spec"]["containers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["app", "proxy"]);
    let refused = kubectl(k, &["apply", "--server-side", "--field-manager=team-mesh", "-f", &b_conflicting]);
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success() && stderr.contains("conflict") && stderr.contains("team-app"), "{stderr}");
    kubectl_ok(k, &["apply", "--server-side", "--field-manager=team-mesh", "--force-conflicts", "-f", &b_conflicting]);
    let web: Value =
        serde_json::from_str(&kubectl_ok(k, &["get", "deployment", "web", "-n", "default", "-o", "json"])).unwrap();
    assert_eq!(web["spec"]["template"]["spec"]["containers"][0]["image"], "app:evil");

    // Paging through `kubectl get --raw`.
    for i in 0..3 {
        let f = write(
            dir.path(),
            &format!("p{i}.json"),
            &format!(r#"{{"apiVersion":"v1","kind":"ConfigMap","metadata":{{"name":"page-{i}"}}}}"#),
        );
        kubectl_ok(k, &["create", "--raw", "/api/v1/namespaces/default/configmaps", "-f", &f]);
    }
    let page: Value =
        serde_json::from_str(&kubectl_ok(k, &["get", "--raw", "/api/v1/namespaces/default/configmaps?limit=2"]))
            .unwrap();
    assert_eq!(page["items"].as_array().unwrap().len(), 2);
    let token = page["metadata"]["continue"].as_str().unwrap();
    let rest: Value = serde_json::from_str(&kubectl_ok(
        k,
        &[
            "get",
            "--raw",
            &format!("/api/v1/namespaces/default/configmaps?limit=2&continue={}", token.replace('=', "%3D")),
        ],
    ))
    .unwrap();
    assert_eq!(rest["items"].as_array().unwrap().len(), 2, "second and page-0..2 make four");

    // A stale `kubectl replace` is refused with kube-apiserver's words.
    let stale = kubectl_ok(k, &["get", "configmap", "second", "-n", "default", "-o", "json"]);
    kubectl_ok(k, &["patch", "configmap", "second", "-n", "default", "--type=merge", "-p", r#"{"data":{"b":"4"}}"#]);
    let stale = write(dir.path(), "stale.json", &stale);
    let refused = kubectl(k, &["replace", "-f", &stale]);
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success() && stderr.contains("the object has been modified"), "{stderr}");
    // Leases through kubectl.
    let lease = write(
        dir.path(),
        "lease.json",
        r#"{"apiVersion":"coordination.k8s.io/v1","kind":"Lease","metadata":{"name":"shard-0"},"spec":{"holderIdentity":"replica-a","leaseDurationSeconds":15}}"#,
    );
    kubectl_ok(k, &["create", "--raw", "/apis/coordination.k8s.io/v1/namespaces/default/leases", "-f", &lease]);
    let got: Value =
        serde_json::from_str(&kubectl_ok(k, &["get", "lease", "shard-0", "-n", "default", "-o", "json"])).unwrap();
    assert_eq!(got["spec"]["holderIdentity"], "replica-a");
}
