//! A Kubernetes API server stand-in for tests, served over HTTP on 127.0.0.1 so that both
//! strata (through a kubeconfig) and `kubectl` can talk to it.
//!
//! It implements what apply, prune, health and drift exercise, the way kube-apiserver does:
//! legacy discovery (`/api`, `/apis`, resource lists, CRDs registering their kinds once
//! Established), get/list (label selectors), create, server-side apply with managed fields
//! (conflicts between managers, `force`, fields a manager stops applying are removed),
//! merge/strategic patches as `Update` operations that take field ownership (what `kubectl scale`
//! and `kubectl patch` do, including the `scale` subresource), `dryRun=All`, delete, server-side
//! defaults, the NamespaceLifecycle check, generation/resourceVersion bookkeeping, and a
//! simulated controller that rolls workloads out (or, on request, does not). Lists are atomic
//! for field ownership, which is coarser than the real server's associative lists but the same
//! for every field these tests touch. `HARNESS_DEBUG=1` prints every request it receives.

#![allow(dead_code)]

use std::collections::{BTreeMap, BTreeSet};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper::{Method, Request, Response, StatusCode};
use serde_json::{Map, Value, json};

type Path_ = Vec<String>;

#[derive(Clone, Debug)]
struct Kind {
    group: String,
    version: String,
    kind: String,
    plural: String,
    namespaced: bool,
}

impl Kind {
    fn api_version(&self) -> String {
        if self.group.is_empty() { self.version.clone() } else { format!("{}/{}", self.group, self.version) }
    }
}

const BUILTIN: &[(&str, &str, &str, &str, bool)] = &[
    ("", "v1", "Namespace", "namespaces", false),
    ("", "v1", "ConfigMap", "configmaps", true),
    ("", "v1", "Secret", "secrets", true),
    ("", "v1", "Service", "services", true),
    ("", "v1", "ServiceAccount", "serviceaccounts", true),
    ("", "v1", "Pod", "pods", true),
    ("", "v1", "PersistentVolumeClaim", "persistentvolumeclaims", true),
    ("apps", "v1", "Deployment", "deployments", true),
    ("apps", "v1", "DaemonSet", "daemonsets", true),
    ("apps", "v1", "StatefulSet", "statefulsets", true),
    ("batch", "v1", "Job", "jobs", true),
    ("batch", "v1", "CronJob", "cronjobs", true),
    ("rbac.authorization.k8s.io", "v1", "Role", "roles", true),
    ("rbac.authorization.k8s.io", "v1", "RoleBinding", "rolebindings", true),
    ("rbac.authorization.k8s.io", "v1", "ClusterRole", "clusterroles", false),
    ("rbac.authorization.k8s.io", "v1", "ClusterRoleBinding", "clusterrolebindings", false),
    ("networking.k8s.io", "v1", "Ingress", "ingresses", true),
    ("policy", "v1", "PodDisruptionBudget", "poddisruptionbudgets", true),
    ("autoscaling", "v2", "HorizontalPodAutoscaler", "horizontalpodautoscalers", true),
    ("apiextensions.k8s.io", "v1", "CustomResourceDefinition", "customresourcedefinitions", false),
];

/// How the simulated controller treats a workload.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Rollout {
    /// Rolled out at once (the default).
    Ready,
    /// Never becomes available.
    Stuck,
    /// Reports ProgressDeadlineExceeded.
    Failed,
}

#[derive(Clone, Debug)]
struct Managed {
    operation: &'static str,
    api_version: String,
    fields: BTreeSet<Path_>,
}

#[derive(Clone, Debug)]
struct Stored {
    object: Value,
    managers: BTreeMap<String, Managed>,
}

/// One request as the server saw it.
#[derive(Clone, Debug)]
pub struct Logged {
    pub method: String,
    pub path: String,
    pub dry_run: bool,
}

impl Logged {
    /// Whether the request changed (or would have changed) stored state.
    pub fn is_write(&self) -> bool {
        !self.dry_run && self.method != "GET"
    }
}

#[derive(Default)]
struct State {
    kinds: Vec<Kind>,
    objects: BTreeMap<(String, String, String, String), Stored>,
    rollouts: BTreeMap<(String, String, String), Rollout>,
    log: Vec<Logged>,
    /// Added to every response, to make applies slow enough to interrupt.
    latency: std::time::Duration,
    revision: u64,
    uids: u64,
}

/// A running API server. Dropping it stops it.
pub struct ApiServer {
    pub addr: SocketAddr,
    state: Arc<Mutex<State>>,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Drop for ApiServer {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl ApiServer {
    /// Starts a server on 127.0.0.1 with a port of its own, on a thread of its own.
    pub fn start() -> ApiServer {
        let state = Arc::new(Mutex::new(State {
            kinds: BUILTIN
                .iter()
                .map(|(g, v, k, p, n)| Kind {
                    group: g.to_string(),
                    version: v.to_string(),
                    kind: k.to_string(),
                    plural: p.to_string(),
                    namespaced: *n,
                })
                .collect(),
            ..State::default()
        }));
        for ns in ["default", "kube-system"] {
            let mut s = state.lock().unwrap();
            let body = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}});
            s.apply(&body, "", "namespaces", None, ns, "kube-apiserver", true, false).unwrap();
        }
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, mut rx) = tokio::sync::oneshot::channel::<()>();
        let served = state.clone();
        let thread = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
            runtime.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener).unwrap();
                loop {
                    tokio::select! {
                        _ = &mut rx => break,
                        accepted = listener.accept() => {
                            let Ok((stream, _)) = accepted else { continue };
                            let state = served.clone();
                            tokio::spawn(async move {
                                let io = hyper_util::rt::TokioIo::new(stream);
                                let service = hyper::service::service_fn(move |req| handle(state.clone(), req));
                                let _ = hyper::server::conn::http1::Builder::new().serve_connection(io, service).await;
                            });
                        }
                    }
                }
            });
        });
        ApiServer { addr, state, shutdown: Some(tx), thread: Some(thread) }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Writes a kubeconfig for this server (context `harness`) into `dir`.
    pub fn kubeconfig(&self, dir: &Path) -> PathBuf {
        kubeconfig_for(&self.url(), dir)
    }

    /// The stored object, as `kubectl get -o json` would show it.
    pub fn object(&self, plural: &str, namespace: Option<&str>, name: &str) -> Option<Value> {
        let s = self.state.lock().unwrap();
        let kind = s.kinds.iter().find(|k| k.plural == plural)?;
        let key = (kind.group.clone(), plural.to_string(), namespace.unwrap_or("").to_string(), name.to_string());
        s.objects.get(&key).map(|o| s.render(o))
    }

    /// Names of the stored objects of a resource (`namespace/name` or `name`), sorted.
    pub fn names(&self, plural: &str) -> Vec<String> {
        let s = self.state.lock().unwrap();
        s.objects
            .keys()
            .filter(|(_, p, _, _)| p == plural)
            .map(|(_, _, ns, name)| if ns.is_empty() { name.clone() } else { format!("{ns}/{name}") })
            .collect()
    }

    /// Every stored object as `plural/namespace/name` (namespace empty for cluster-scoped ones).
    pub fn all(&self) -> Vec<String> {
        let s = self.state.lock().unwrap();
        s.objects.keys().map(|(_, plural, ns, name)| format!("{plural}/{ns}/{name}")).collect()
    }

    pub fn set_rollout(&self, namespace: &str, name: &str, rollout: Rollout) {
        self.state.lock().unwrap().rollouts.insert(("deployments".into(), namespace.into(), name.into()), rollout);
    }

    pub fn set_latency(&self, latency: std::time::Duration) {
        self.state.lock().unwrap().latency = latency;
    }

    pub fn requests(&self) -> Vec<Logged> {
        self.state.lock().unwrap().log.clone()
    }

    pub fn clear_requests(&self) {
        self.state.lock().unwrap().log.clear();
    }
}

pub fn kubeconfig_for(server: &str, dir: &Path) -> PathBuf {
    let path = dir.join("kubeconfig");
    std::fs::write(
        &path,
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: harness\n  cluster:\n    server: {server}\nusers:\n- name: harness\n  user: {{}}\ncontexts:\n- name: harness\n  context:\n    cluster: harness\n    user: harness\ncurrent-context: harness\n"
        ),
    )
    .unwrap();
    path
}

fn status(code: StatusCode, reason: &str, message: &str) -> Response<Full<Bytes>> {
    let body = json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure", "message": message, "reason": reason, "code": code.as_u16()});
    respond(code, &body)
}

fn respond(code: StatusCode, body: &Value) -> Response<Full<Bytes>> {
    Response::builder()
        .status(code)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(serde_json::to_vec(body).unwrap())))
        .unwrap()
}

fn query(req: &Request<Incoming>) -> BTreeMap<String, String> {
    req.uri()
        .query()
        .unwrap_or("")
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (k.to_string(), percent_decode(v))
        })
        .collect()
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = (bytes[i] == b'%' && i + 3 <= bytes.len())
            .then(|| std::str::from_utf8(&bytes[i + 1..i + 3]).ok().and_then(|h| u8::from_str_radix(h, 16).ok()))
            .flatten();
        match hex {
            Some(b) => {
                out.push(b);
                i += 3;
            }
            None => {
                out.push(if bytes[i] == b'+' { b' ' } else { bytes[i] });
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// A parsed resource path.
struct Target {
    kind: Kind,
    namespace: Option<String>,
    name: Option<String>,
    subresource: Option<String>,
}

async fn handle(state: Arc<Mutex<State>>, req: Request<Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    let q = query(&req);
    let content_type = req.headers().get("content-type").and_then(|v| v.to_str().ok()).unwrap_or("").to_string();
    let dry_run = q.get("dryRun").is_some_and(|v| v == "All");
    let body = match req.into_body().collect().await {
        Ok(b) => b.to_bytes(),
        Err(_) => return Ok(status(StatusCode::BAD_REQUEST, "BadRequest", "unreadable body")),
    };
    if std::env::var_os("HARNESS_DEBUG").is_some() {
        eprintln!("{method} {path} {content_type} {}", String::from_utf8_lossy(&body));
    }
    if content_type.contains("protobuf") {
        return Ok(status(StatusCode::UNSUPPORTED_MEDIA_TYPE, "UnsupportedMediaType", "the harness speaks JSON only"));
    }
    let latency = state.lock().unwrap().latency;
    if !latency.is_zero() {
        tokio::time::sleep(latency).await;
    }
    let mut s = state.lock().unwrap();
    s.log.push(Logged { method: method.to_string(), path: path.clone(), dry_run });
    Ok(s.route(&method, &path, &q, &content_type, &body, dry_run))
}

fn parse_body(content_type: &str, body: &[u8]) -> Result<Value, String> {
    // Apply bodies are YAML by content type, and JSON (a subset) in practice.
    if let Ok(value) = serde_json::from_slice(body) {
        return Ok(value);
    }
    if content_type.contains("yaml") {
        let text = std::str::from_utf8(body).map_err(|e| e.to_string())?;
        serde_saphyr::from_str(text).map_err(|e| e.to_string())
    } else {
        serde_json::from_slice(body).map_err(|e| e.to_string())
    }
}

impl State {
    fn route(
        &mut self,
        method: &Method,
        path: &str,
        q: &BTreeMap<String, String>,
        content_type: &str,
        body: &[u8],
        dry_run: bool,
    ) -> Response<Full<Bytes>> {
        let parts: Vec<&str> = path.split('/').filter(|p| !p.is_empty()).collect();
        match (method, parts.as_slice()) {
            (&Method::GET, ["version"]) => {
                return respond(
                    StatusCode::OK,
                    &json!({"major": "1", "minor": "32", "gitVersion": "v1.32.0-strata-harness", "platform": "linux/amd64"}),
                );
            }
            (&Method::GET, ["api"]) => {
                return respond(
                    StatusCode::OK,
                    &json!({"kind": "APIVersions", "versions": ["v1"], "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": "127.0.0.1"}]}),
                );
            }
            (&Method::GET, ["apis"]) => return respond(StatusCode::OK, &self.group_list()),
            (&Method::GET, ["api", v]) => return self.resource_list("", v),
            (&Method::GET, ["apis", g, v]) => return self.resource_list(g, v),
            _ => {}
        }
        let target = match self.parse(&parts) {
            Some(t) => t,
            None => {
                return status(
                    StatusCode::NOT_FOUND,
                    "NotFound",
                    &format!("the server could not find the requested resource ({path})"),
                );
            }
        };
        let manager = q.get("fieldManager").cloned();
        match (method, &target.name) {
            (&Method::GET, None) => self.list(&target, q.get("labelSelector").map(String::as_str)),
            (&Method::GET, Some(name)) => match self.get(&target.kind, target.namespace.as_deref(), name) {
                Some(stored) if target.subresource.as_deref() == Some("scale") => {
                    respond(StatusCode::OK, &scale_of(&self.render(stored)))
                }
                Some(stored) => respond(StatusCode::OK, &self.render(stored)),
                None => not_found(&target.kind, name),
            },
            (&Method::PATCH, Some(name)) => {
                let patch = match parse_body(content_type, body) {
                    Ok(v) => v,
                    Err(e) => return status(StatusCode::BAD_REQUEST, "BadRequest", &e),
                };
                if content_type.contains("apply-patch") {
                    let Some(manager) = manager else {
                        return status(
                            StatusCode::BAD_REQUEST,
                            "BadRequest",
                            "fieldManager is required for apply requests",
                        );
                    };
                    let force = q.get("force").is_some_and(|v| v == "true");
                    let kind = target.kind.clone();
                    match self.apply(
                        &patch,
                        &kind.group,
                        &kind.plural,
                        target.namespace.as_deref(),
                        name,
                        &manager,
                        force,
                        dry_run,
                    ) {
                        Ok((code, obj)) => respond(code, &obj),
                        Err(resp) => *resp,
                    }
                } else {
                    let manager = manager.unwrap_or_else(|| "kubectl-patch".into());
                    self.update_patch(&target, name, &patch, &manager, dry_run)
                }
            }
            (&Method::POST, None) => {
                let object = match parse_body(content_type, body) {
                    Ok(v) => v,
                    Err(e) => return status(StatusCode::BAD_REQUEST, "BadRequest", &e),
                };
                let Some(name) = object["metadata"]["name"].as_str().map(str::to_string) else {
                    return status(StatusCode::UNPROCESSABLE_ENTITY, "Invalid", "metadata.name: Required value");
                };
                if self.get(&target.kind, target.namespace.as_deref(), &name).is_some() {
                    return status(
                        StatusCode::CONFLICT,
                        "AlreadyExists",
                        &format!("{} \"{name}\" already exists", target.kind.plural),
                    );
                }
                let manager = manager.unwrap_or_else(|| "kubectl-create".into());
                self.update_patch(&target, &name, &object, &manager, dry_run)
            }
            (&Method::DELETE, Some(name)) => self.delete(&target, name, dry_run),
            _ => status(StatusCode::METHOD_NOT_ALLOWED, "MethodNotAllowed", "not supported by the harness"),
        }
    }

    fn group_list(&self) -> Value {
        let mut groups: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for k in &self.kinds {
            if !k.group.is_empty() {
                groups.entry(k.group.clone()).or_default().insert(k.version.clone());
            }
        }
        let groups: Vec<Value> = groups
            .into_iter()
            .map(|(g, vs)| {
                let versions: Vec<Value> =
                    vs.iter().map(|v| json!({"groupVersion": format!("{g}/{v}"), "version": v})).collect();
                json!({"name": g, "versions": versions.clone(), "preferredVersion": versions[0]})
            })
            .collect();
        json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": groups})
    }

    fn resource_list(&self, group: &str, version: &str) -> Response<Full<Bytes>> {
        let kinds: Vec<&Kind> = self.kinds.iter().filter(|k| k.group == group && k.version == version).collect();
        if kinds.is_empty() {
            return status(StatusCode::NOT_FOUND, "NotFound", "the server could not find the requested resource");
        }
        let verbs = json!(["create", "delete", "deletecollection", "get", "list", "patch", "update", "watch"]);
        let mut resources: Vec<Value> = Vec::new();
        for k in kinds {
            resources.push(json!({"name": k.plural, "singularName": k.kind.to_lowercase(), "namespaced": k.namespaced, "kind": k.kind, "verbs": verbs}));
            if k.kind == "Deployment" || k.kind == "StatefulSet" {
                resources.push(json!({"name": format!("{}/scale", k.plural), "singularName": "", "namespaced": true, "group": "autoscaling", "version": "v1", "kind": "Scale", "verbs": ["get", "patch", "update"]}));
            }
        }
        let gv = if group.is_empty() { version.to_string() } else { format!("{group}/{version}") };
        respond(
            StatusCode::OK,
            &json!({"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": gv, "resources": resources}),
        )
    }

    fn parse(&self, parts: &[&str]) -> Option<Target> {
        let (group, version, rest) = match parts {
            ["api", v, rest @ ..] => ("", *v, rest),
            ["apis", g, v, rest @ ..] => (*g, *v, rest),
            _ => return None,
        };
        let find = |plural: &str| {
            self.kinds.iter().find(|k| k.group == group && k.version == version && k.plural == plural).cloned()
        };
        match rest {
            ["namespaces", ns, plural, tail @ ..] if find(plural).is_some_and(|k| k.namespaced) => Some(Target {
                kind: find(plural)?,
                namespace: Some(ns.to_string()),
                name: tail.first().map(|s| s.to_string()),
                subresource: tail.get(1).map(|s| s.to_string()),
            }),
            [plural, tail @ ..] => {
                let kind = find(plural)?;
                Some(Target {
                    kind,
                    namespace: None,
                    name: tail.first().map(|s| s.to_string()),
                    subresource: tail.get(1).map(|s| s.to_string()),
                })
            }
            _ => None,
        }
    }

    fn key(kind: &Kind, namespace: Option<&str>, name: &str) -> (String, String, String, String) {
        let ns = if kind.namespaced { namespace.unwrap_or("default") } else { "" };
        (kind.group.clone(), kind.plural.clone(), ns.to_string(), name.to_string())
    }

    fn get(&self, kind: &Kind, namespace: Option<&str>, name: &str) -> Option<&Stored> {
        self.objects.get(&Self::key(kind, namespace, name))
    }

    fn list(&self, target: &Target, selector: Option<&str>) -> Response<Full<Bytes>> {
        let wanted: Vec<(String, String)> = selector
            .unwrap_or("")
            .split(',')
            .filter(|s| !s.is_empty())
            .filter_map(|s| s.split_once('=').map(|(k, v)| (k.trim_end_matches('=').to_string(), v.to_string())))
            .collect();
        let items: Vec<Value> = self
            .objects
            .iter()
            .filter(|((g, p, ns, _), _)| {
                g == &target.kind.group
                    && p == &target.kind.plural
                    && target.namespace.as_deref().is_none_or(|want| want == ns)
            })
            .map(|(_, o)| self.render(o))
            .filter(|o| wanted.iter().all(|(k, v)| o["metadata"]["labels"][k].as_str() == Some(v)))
            .collect();
        respond(
            StatusCode::OK,
            &json!({"kind": format!("{}List", target.kind.kind), "apiVersion": target.kind.api_version(), "metadata": {"resourceVersion": self.revision.to_string()}, "items": items}),
        )
    }

    /// The object with `metadata.managedFields` as the API shows it.
    fn render(&self, stored: &Stored) -> Value {
        let mut object = stored.object.clone();
        let managed: Vec<Value> = stored
            .managers
            .iter()
            .filter(|(_, m)| !m.fields.is_empty())
            .map(|(name, m)| {
                json!({"manager": name, "operation": m.operation, "apiVersion": m.api_version, "time": now(), "fieldsType": "FieldsV1", "fieldsV1": fields_v1(&m.fields)})
            })
            .collect();
        object["metadata"]["managedFields"] = Value::Array(managed);
        object
    }

    fn next_revision(&mut self) -> String {
        self.revision += 1;
        self.revision.to_string()
    }

    fn namespace_exists(&self, ns: &str) -> bool {
        self.objects.contains_key(&(String::new(), "namespaces".into(), String::new(), ns.to_string()))
    }

    /// Server-side apply.
    #[allow(clippy::too_many_arguments)]
    fn apply(
        &mut self,
        applied: &Value,
        group: &str,
        plural: &str,
        namespace: Option<&str>,
        name: &str,
        manager: &str,
        force: bool,
        dry_run: bool,
    ) -> Result<(StatusCode, Value), Box<Response<Full<Bytes>>>> {
        let kind = self.kinds.iter().find(|k| k.group == group && k.plural == plural).cloned().expect("routed");
        if applied["metadata"]["name"].as_str() != Some(name) {
            return Err(Box::new(status(
                StatusCode::BAD_REQUEST,
                "BadRequest",
                "the name of the object does not match the name on the URL",
            )));
        }
        if kind.namespaced {
            let ns = namespace.unwrap_or("default");
            if !self.namespace_exists(ns) {
                return Err(Box::new(status(
                    StatusCode::NOT_FOUND,
                    "NotFound",
                    &format!("namespaces \"{ns}\" not found"),
                )));
            }
        }
        let key = Self::key(&kind, namespace, name);
        let existing = self.objects.get(&key).cloned();
        let fields = leaf_paths(applied);
        let (mut stored, created) = match existing {
            Some(s) => (s, false),
            None => (
                Stored {
                    object: json!({"apiVersion": kind.api_version(), "kind": kind.kind, "metadata": {"name": name}}),
                    managers: BTreeMap::new(),
                },
                true,
            ),
        };
        // Conflicts: another manager owns a field this apply sets to a different value.
        let mut conflicts = Vec::new();
        for (other, m) in &stored.managers {
            if other == manager {
                continue;
            }
            for f in m.fields.intersection(&fields) {
                if get_path(&stored.object, f) != get_path(applied, f) {
                    conflicts.push((other.clone(), f.clone()));
                }
            }
        }
        if !conflicts.is_empty() && !force {
            let list: Vec<String> = conflicts
                .iter()
                .map(|(m, f)| format!("conflict with \"{m}\" using {}: .{}", kind.api_version(), f.join(".")))
                .collect();
            return Err(Box::new(status(
                StatusCode::CONFLICT,
                "Conflict",
                &format!(
                    "Apply failed with {} conflict{}: {}",
                    list.len(),
                    if list.len() == 1 { "" } else { "s" },
                    list.join("\n")
                ),
            )));
        }
        for (other, f) in &conflicts {
            if let Some(m) = stored.managers.get_mut(other) {
                m.fields.remove(f);
            }
        }
        // Fields this manager applied before and no longer does, that nobody else owns, go away.
        let before = stored.managers.get(manager).map(|m| m.fields.clone()).unwrap_or_default();
        let before_object = stored.object.clone();
        for f in before.difference(&fields) {
            if !stored.managers.iter().any(|(o, m)| o != manager && m.fields.contains(f)) {
                remove_path(&mut stored.object, f);
            }
        }
        merge(&mut stored.object, applied);
        stored
            .managers
            .insert(manager.to_string(), Managed { operation: "Apply", api_version: kind.api_version(), fields });
        Ok(self.finish(&kind, namespace, name, stored, &before_object, created, dry_run))
    }

    /// Defaults, bookkeeping, the simulated controller; stores unless dry-run.
    #[allow(clippy::too_many_arguments)]
    fn finish(
        &mut self,
        kind: &Kind,
        namespace: Option<&str>,
        name: &str,
        mut stored: Stored,
        before: &Value,
        created: bool,
        dry_run: bool,
    ) -> (StatusCode, Value) {
        let key = Self::key(kind, namespace, name);
        {
            let obj = &mut stored.object;
            obj["apiVersion"] = json!(kind.api_version());
            obj["kind"] = json!(kind.kind);
            obj["metadata"]["name"] = json!(name);
            if kind.namespaced {
                obj["metadata"]["namespace"] = json!(key.2);
            } else if let Some(m) = obj["metadata"].as_object_mut() {
                m.remove("namespace");
            }
            default(&kind.kind, obj);
        }
        let changed_spec = strip_meta_status(&stored.object) != strip_meta_status(before);
        let generation = before["metadata"]["generation"].as_i64().unwrap_or(0);
        if created {
            self.uids += 1;
            stored.object["metadata"]["uid"] = json!(format!("00000000-0000-4000-8000-{:012}", self.uids));
            stored.object["metadata"]["creationTimestamp"] = json!(now());
            stored.object["metadata"]["generation"] = json!(1);
        } else if changed_spec {
            stored.object["metadata"]["generation"] = json!(generation + 1);
        } else {
            stored.object["metadata"]["generation"] = json!(generation.max(1));
        }
        let unchanged = !created && stored.object == *before;
        if !dry_run && !unchanged {
            stored.object["metadata"]["resourceVersion"] = json!(self.next_revision());
        }
        let rollout = self
            .rollouts
            .get(&(kind.plural.clone(), key.2.clone(), name.to_string()))
            .copied()
            .unwrap_or(Rollout::Ready);
        simulate_controller(&kind.kind, &mut stored.object, rollout);
        if kind.kind == "CustomResourceDefinition" && !dry_run {
            self.register_crd(&stored.object);
        }
        let shown = self.render(&stored);
        if !dry_run {
            self.objects.insert(key, stored);
        }
        (if created { StatusCode::CREATED } else { StatusCode::OK }, shown)
    }

    fn register_crd(&mut self, crd: &Value) {
        let spec = &crd["spec"];
        let (Some(group), Some(kind), Some(plural)) =
            (spec["group"].as_str(), spec["names"]["kind"].as_str(), spec["names"]["plural"].as_str())
        else {
            return;
        };
        let namespaced = spec["scope"].as_str() != Some("Cluster");
        for v in spec["versions"].as_array().into_iter().flatten() {
            let Some(version) = v["name"].as_str() else { continue };
            if !self.kinds.iter().any(|k| k.group == group && k.version == version && k.kind == kind) {
                self.kinds.push(Kind {
                    group: group.into(),
                    version: version.into(),
                    kind: kind.into(),
                    plural: plural.into(),
                    namespaced,
                });
            }
        }
    }

    /// A merge or strategic-merge patch, or a create: an `Update` operation that takes
    /// ownership of every field it changes.
    fn update_patch(
        &mut self,
        target: &Target,
        name: &str,
        patch: &Value,
        manager: &str,
        dry_run: bool,
    ) -> Response<Full<Bytes>> {
        let kind = target.kind.clone();
        if kind.namespaced {
            let ns = target.namespace.as_deref().unwrap_or("default");
            if !self.namespace_exists(ns) {
                return status(StatusCode::NOT_FOUND, "NotFound", &format!("namespaces \"{ns}\" not found"));
            }
        }
        let key = Self::key(&kind, target.namespace.as_deref(), name);
        let (mut stored, created) = match self.objects.get(&key).cloned() {
            Some(s) => (s, false),
            None if patch["metadata"]["name"].is_string() => (
                Stored {
                    object: json!({"apiVersion": kind.api_version(), "kind": kind.kind, "metadata": {"name": name}}),
                    managers: BTreeMap::new(),
                },
                true,
            ),
            None => return not_found(&kind, name),
        };
        let before = stored.object.clone();
        let patch = if target.subresource.as_deref() == Some("scale") {
            json!({"spec": {"replicas": patch["spec"]["replicas"].clone()}})
        } else {
            patch.clone()
        };
        merge_patch(&mut stored.object, &patch);
        let changed: BTreeSet<Path_> = leaf_paths(&patch)
            .into_iter()
            .filter(|p| get_path(&before, p) != get_path(&stored.object, p) || created)
            .collect();
        for m in stored.managers.values_mut() {
            m.fields.retain(|f| !changed.contains(f));
        }
        let entry = stored.managers.entry(manager.to_string()).or_insert_with(|| Managed {
            operation: "Update",
            api_version: kind.api_version(),
            fields: BTreeSet::new(),
        });
        entry.fields.extend(changed);
        let (code, obj) = self.finish(&kind, target.namespace.as_deref(), name, stored, &before, created, dry_run);
        if target.subresource.as_deref() == Some("scale") {
            respond(code, &scale_of(&obj))
        } else {
            respond(code, &obj)
        }
    }

    fn delete(&mut self, target: &Target, name: &str, dry_run: bool) -> Response<Full<Bytes>> {
        let key = Self::key(&target.kind, target.namespace.as_deref(), name);
        let Some(stored) = self.objects.get(&key).cloned() else { return not_found(&target.kind, name) };
        if !dry_run {
            self.objects.remove(&key);
            if target.kind.kind == "Namespace" {
                self.objects.retain(|(_, _, ns, _), _| ns != name);
            }
            self.next_revision();
        }
        respond(StatusCode::OK, &self.render(&stored))
    }
}

fn not_found(kind: &Kind, name: &str) -> Response<Full<Bytes>> {
    let what = if kind.group.is_empty() { kind.plural.clone() } else { format!("{}.{}", kind.plural, kind.group) };
    status(StatusCode::NOT_FOUND, "NotFound", &format!("{what} \"{name}\" not found"))
}

fn scale_of(object: &Value) -> Value {
    json!({
        "apiVersion": "autoscaling/v1", "kind": "Scale",
        "metadata": {"name": object["metadata"]["name"], "namespace": object["metadata"]["namespace"], "resourceVersion": object["metadata"]["resourceVersion"]},
        "spec": {"replicas": object["spec"]["replicas"]},
        "status": {"replicas": object["status"]["replicas"]},
    })
}

fn strip_meta_status(object: &Value) -> Value {
    let mut o = object.clone();
    if let Some(m) = o.as_object_mut() {
        m.remove("metadata");
        m.remove("status");
    }
    o
}

/// Leaf paths of an applied configuration, as field ownership sees them: maps recurse, lists
/// and scalars are leaves. Identity fields are not owned.
fn leaf_paths(value: &Value) -> BTreeSet<Path_> {
    fn walk(v: &Value, path: &mut Path_, out: &mut BTreeSet<Path_>) {
        match v {
            Value::Object(map) if !map.is_empty() => {
                for (k, child) in map {
                    path.push(k.clone());
                    walk(child, path, out);
                    path.pop();
                }
            }
            _ => {
                out.insert(path.clone());
            }
        }
    }
    let mut out = BTreeSet::new();
    walk(value, &mut Vec::new(), &mut out);
    out.retain(|p| {
        let p: Vec<&str> = p.iter().map(String::as_str).collect();
        !matches!(
            p.as_slice(),
            ["apiVersion"] | ["kind"] | ["metadata", "name"] | ["metadata", "namespace"] | ["status", ..]
        )
    });
    out
}

fn fields_v1(fields: &BTreeSet<Path_>) -> Value {
    let mut root = Map::new();
    for path in fields {
        let mut node = &mut root;
        for part in path {
            node = node.entry(format!("f:{part}")).or_insert_with(|| json!({})).as_object_mut().unwrap();
        }
    }
    Value::Object(root)
}

fn get_path<'a>(value: &'a Value, path: &[String]) -> Option<&'a Value> {
    path.iter().try_fold(value, |v, k| v.get(k))
}

fn remove_path(value: &mut Value, path: &[String]) {
    let Some((last, parent)) = path.split_last() else { return };
    let mut node = value;
    for k in parent {
        match node.get_mut(k) {
            Some(n) => node = n,
            None => return,
        }
    }
    if let Some(m) = node.as_object_mut() {
        m.remove(last);
    }
}

/// Applied configuration over live: maps merge, everything else replaces.
fn merge(target: &mut Value, applied: &Value) {
    match (target, applied) {
        (Value::Object(t), Value::Object(a)) => {
            for (k, v) in a {
                match t.get_mut(k) {
                    Some(existing) if existing.is_object() && v.is_object() => merge(existing, v),
                    _ => {
                        t.insert(k.clone(), v.clone());
                    }
                }
            }
        }
        (t, a) => *t = a.clone(),
    }
}

/// RFC 7386 merge patch: `null` removes.
fn merge_patch(target: &mut Value, patch: &Value) {
    match (target, patch) {
        (Value::Object(t), Value::Object(p)) => {
            for (k, v) in p {
                if v.is_null() {
                    t.remove(k);
                } else if let (Some(existing), true) = (t.get_mut(k), v.is_object()) {
                    if existing.is_object() {
                        merge_patch(existing, v);
                    } else {
                        *existing = v.clone();
                    }
                } else {
                    t.insert(k.clone(), v.clone());
                }
            }
        }
        (t, p) => *t = p.clone(),
    }
}

fn set_default(obj: &mut Value, path: &[&str], value: Value) {
    let mut node = obj;
    for (i, k) in path.iter().enumerate() {
        if !node.is_object() {
            return;
        }
        let last = i + 1 == path.len();
        let map = node.as_object_mut().unwrap();
        if last {
            map.entry(k.to_string()).or_insert(value);
            return;
        }
        node = map.entry(k.to_string()).or_insert_with(|| json!({}));
    }
}

fn default_pod_spec(spec: &mut Value) {
    set_default(spec, &["restartPolicy"], json!("Always"));
    set_default(spec, &["dnsPolicy"], json!("ClusterFirst"));
    set_default(spec, &["schedulerName"], json!("default-scheduler"));
    set_default(spec, &["terminationGracePeriodSeconds"], json!(30));
    set_default(spec, &["securityContext"], json!({}));
    for c in spec["containers"].as_array_mut().into_iter().flatten() {
        let latest = c["image"].as_str().is_some_and(|i| i.ends_with(":latest") || !i.contains(':'));
        set_default(c, &["imagePullPolicy"], json!(if latest { "Always" } else { "IfNotPresent" }));
        set_default(c, &["terminationMessagePath"], json!("/dev/termination-log"));
        set_default(c, &["terminationMessagePolicy"], json!("File"));
        set_default(c, &["resources"], json!({}));
        for p in c["ports"].as_array_mut().into_iter().flatten() {
            set_default(p, &["protocol"], json!("TCP"));
        }
    }
}

/// What kube-apiserver's defaulting adds, for the kinds the tests use.
fn default(kind: &str, obj: &mut Value) {
    match kind {
        "Deployment" => {
            set_default(obj, &["spec", "replicas"], json!(1));
            set_default(obj, &["spec", "revisionHistoryLimit"], json!(10));
            set_default(obj, &["spec", "progressDeadlineSeconds"], json!(600));
            set_default(
                obj,
                &["spec", "strategy"],
                json!({"type": "RollingUpdate", "rollingUpdate": {"maxSurge": "25%", "maxUnavailable": "25%"}}),
            );
            if let Some(spec) = obj.pointer_mut("/spec/template/spec") {
                default_pod_spec(spec);
            }
        }
        "DaemonSet" | "StatefulSet" => {
            set_default(obj, &["spec", "revisionHistoryLimit"], json!(10));
            if let Some(spec) = obj.pointer_mut("/spec/template/spec") {
                default_pod_spec(spec);
            }
        }
        "Service" => {
            set_default(obj, &["spec", "type"], json!("ClusterIP"));
            set_default(obj, &["spec", "sessionAffinity"], json!("None"));
            set_default(obj, &["spec", "ipFamilies"], json!(["IPv4"]));
            set_default(obj, &["spec", "ipFamilyPolicy"], json!("SingleStack"));
            set_default(obj, &["spec", "internalTrafficPolicy"], json!("Cluster"));
            let name = obj["metadata"]["name"].as_str().unwrap_or("").len() as u64;
            set_default(obj, &["spec", "clusterIP"], json!(format!("10.96.{}.{}", name % 250, 10 + name % 200)));
            let ip = obj["spec"]["clusterIP"].clone();
            set_default(obj, &["spec", "clusterIPs"], json!([ip]));
            let lb = obj["spec"]["type"] == "LoadBalancer";
            for (i, p) in obj["spec"]["ports"].as_array_mut().into_iter().flatten().enumerate() {
                set_default(p, &["protocol"], json!("TCP"));
                let port = p["port"].clone();
                set_default(p, &["targetPort"], port);
                if lb {
                    set_default(p, &["nodePort"], json!(30000 + i as u64));
                }
            }
            if lb {
                set_default(obj, &["spec", "externalTrafficPolicy"], json!("Cluster"));
                set_default(obj, &["spec", "allocateLoadBalancerNodePorts"], json!(true));
            }
        }
        "Namespace" => {
            let name = obj["metadata"]["name"].clone();
            set_default(obj, &["metadata", "labels", "kubernetes.io/metadata.name"], name);
            set_default(obj, &["spec", "finalizers"], json!(["kubernetes"]));
            obj["status"] = json!({"phase": "Active"});
        }
        "ServiceAccount" | "ConfigMap" | "Secret" => {}
        _ => {}
    }
}

/// The controllers: status as a rolled-out (or stuck) workload would have it.
fn simulate_controller(kind: &str, obj: &mut Value, rollout: Rollout) {
    let generation = obj["metadata"]["generation"].clone();
    match kind {
        "Deployment" => {
            let replicas = obj["spec"]["replicas"].as_i64().unwrap_or(1);
            obj["status"] = match rollout {
                Rollout::Ready => json!({
                    "observedGeneration": generation, "replicas": replicas, "updatedReplicas": replicas,
                    "readyReplicas": replicas, "availableReplicas": replicas,
                    "conditions": [
                        {"type": "Available", "status": "True", "reason": "MinimumReplicasAvailable"},
                        {"type": "Progressing", "status": "True", "reason": "NewReplicaSetAvailable"}
                    ]
                }),
                Rollout::Stuck => json!({
                    "observedGeneration": generation, "replicas": replicas, "updatedReplicas": replicas,
                    "readyReplicas": 0, "availableReplicas": 0, "unavailableReplicas": replicas,
                    "conditions": [{"type": "Progressing", "status": "True", "reason": "ReplicaSetUpdated"}]
                }),
                Rollout::Failed => json!({
                    "observedGeneration": generation, "replicas": replicas, "updatedReplicas": replicas,
                    "readyReplicas": 0, "availableReplicas": 0, "unavailableReplicas": replicas,
                    "conditions": [{"type": "Progressing", "status": "False", "reason": "ProgressDeadlineExceeded",
                                    "message": "ReplicaSet has timed out progressing."}]
                }),
            };
        }
        "DaemonSet" => {
            obj["status"] = json!({"observedGeneration": generation, "desiredNumberScheduled": 1, "currentNumberScheduled": 1,
                                   "updatedNumberScheduled": 1, "numberAvailable": 1, "numberReady": 1});
        }
        "StatefulSet" => {
            let replicas = obj["spec"]["replicas"].as_i64().unwrap_or(1);
            obj["status"] = json!({"observedGeneration": generation, "replicas": replicas, "readyReplicas": replicas,
                                   "updatedReplicas": replicas, "currentRevision": "r1", "updateRevision": "r1"});
        }
        "Job" => {
            obj["status"] = json!({"succeeded": 1, "conditions": [{"type": "Complete", "status": "True"}]});
        }
        "CustomResourceDefinition" => {
            obj["status"] = json!({"conditions": [{"type": "NamesAccepted", "status": "True"}, {"type": "Established", "status": "True"}],
                                   "acceptedNames": obj["spec"]["names"].clone()});
        }
        _ => {}
    }
}

fn now() -> String {
    strata::daemon::store::rfc3339(strata::daemon::store::now())
}
