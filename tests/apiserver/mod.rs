//! A Kubernetes API server stand-in for tests, served over HTTP on 127.0.0.1 so that strata
//! (through a kubeconfig), kube-rs clients and `kubectl` can all talk to it. It follows the
//! documented API (api-concepts, server-side apply, the Lease API) for what it implements:
//!
//! - Discovery: `/version`, `/api`, `/apis`, resource lists with `status` and `scale`
//!   subresources; CRDs register their served versions at once (they are Established at
//!   once) and unregister, with their objects, when deleted.
//! - Reads: get, list (`labelSelector` with `=`, `==`, `!=`, `in`, `notin`, exists, `!`;
//!   `fieldSelector` on `metadata.name`, `metadata.namespace` and the fields kube-apiserver
//!   allows per kind), `limit`/`continue` paging over a consistent snapshot,
//!   `resourceVersion` / `resourceVersionMatch` (`Exact` lists an older snapshot).
//! - Watches: `?watch=true|1` (and the legacy `/watch/` paths), namespaced or across
//!   namespaces; `resourceVersion` unset or `0` starts with synthetic ADDED events, `N` resumes
//!   after revision N, `sendInitialEvents=true` ends its initial events with the
//!   `k8s.io/initial-events-end` BOOKMARK; `allowWatchBookmarks`, `timeoutSeconds`; objects
//!   entering or leaving a selector arrive as ADDED / DELETED. A resume from a revision older
//!   than the retained history gets an ERROR event with a 410 Expired Status.
//!   `resourceVersion` is one global counter, as in etcd.
//! - Writes: create (`generateName`, 409 AlreadyExists), replace (PUT, with the
//!   `metadata.resourceVersion` / UID preconditions: 409 Conflict when stale; Leases and custom
//!   resources require a resourceVersion, Leases may be created by PUT), merge, strategic-merge
//!   (built-in kinds only, 415 for custom resources as kube-apiserver) and JSON patches (a
//!   resourceVersion in the patched object is a precondition too), server-side apply with
//!   managed fields (conflicts between managers, `force`, fields a manager stops applying
//!   removed, a stale resourceVersion in the configuration is a 409), `dryRun=All`, delete
//!   (DeleteOptions preconditions, finalizers: deletionTimestamp until the last one goes),
//!   deletecollection. Field ownership follows structured-merge-diff: associative lists by
//!   key (containers, initContainers, volumes, env, ports by containerPort+protocol and Service
//!   ports by port+protocol, volumeMounts by mountPath, …; custom resources by their schema's
//!   `x-kubernetes-list-*`), sets by value, other lists atomic, label selectors and
//!   `nodeSelector` atomic; `managedFields` shows them in FieldsV1.
//! - Subresources: `status` for the kinds that have it and for CRDs declaring it (writes there
//!   change only status; writes to the main resource leave status alone); `scale` for
//!   Deployments and StatefulSets.
//! - Kinds: the built-in ones the tests use, Leases (`coordination.k8s.io/v1`: times stored
//!   as MicroTime, spec validated, nothing enforced beyond resourceVersion conflicts), and
//!   custom resources (pruned and type-checked against their structural schema;
//!   `fieldValidation=Strict`, kubectl's default, refuses undeclared fields instead).
//! - Around objects: server-side defaults for workloads, Services and Namespaces, the
//!   NamespaceLifecycle check, generation (per kind, as the registry strategies keep it), and a
//!   simulated controller that rolls workloads out (or, by `set_rollout`, does not).
//!
//! Transport: plain HTTP/1.1 by default; with `STRATA_APISERVER=h2` in the environment (or
//! [`ApiServer::start_with`]`(Transport::Tls)`), TLS with a certificate made at start (its CA in
//! the kubeconfig) and ALPN `h2`, `http/1.1`: clients that offer HTTP/2 — strata, kube-rs,
//! kubectl — speak it, others HTTP/1.1. The request log says which version each request came in.
//!
//! Knobs for tests: `set_rollout`, `set_latency` (every answer delayed), `requests` /
//! `clear_requests` (the request log, with when each arrived), `set_history_limit` (events kept for watch resumes;
//! small values force a 410 and a relist), `compact` (forget all history now),
//! `close_watches` (every open watch ends, as when an API server restarts),
//! `watch_count`, `send_bookmarks` / `set_bookmark_interval` (default one minute, as
//! kube-apiserver), `set_black_hole` (connections accepted, requests never answered, open
//! watches silent for good: a network partition), `fail_next` (answer the next requests with
//! an error status), `stall` (requests to some objects held before they are served: a slow
//! API server for those alone) and `stalled`, `revision`. `HARNESS_DEBUG=1` prints every request.
//!
//! Where it is coarser than kube-apiserver (do not rely on these): JSON only (no protobuf, no
//! Table output, no aggregated discovery; OpenAPI v3 documents list each resource's PATCH
//! operation and its parameters but carry no schemas, so client-side `kubectl apply` and
//! `kubectl explain` do not work); no authentication,
//! authorization or admission beyond NamespaceLifecycle; no schema for built-in kinds (unknown
//! fields are kept whatever `fieldValidation` says, types unchecked, Quantities not normalised); defaults only for the kinds
//! listed above; namespace and CRD deletion are immediate (no Terminating phase); a watch or
//! list at a future resourceVersion fails at once instead of waiting up to 3 s; bookmarks
//! carry the global revision; there is no default watch timeout; apply on `/scale` and
//! Update-operation `managedFields` show no `.` entries for maps; strategic merge
//! patches ignore `$setElementOrder`; conversion between custom resource versions only
//! rewrites `apiVersion`.

#![allow(dead_code)]

mod fields;
mod objects;
mod schema;
mod store;
mod watch;

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use http_body_util::BodyExt;
use hyper::body::{Bytes, Frame, Incoming, SizeHint};
use hyper::{Method, Request, Response, StatusCode};
use serde_json::{Value, json};

pub use objects::Rollout;
use schema::Kind;
use store::{ApiError, Op, PatchType, State, Write};
use watch::WatchBody;

/// One request as the server saw it.
#[derive(Clone, Debug)]
pub struct Logged {
    pub method: String,
    pub path: String,
    pub query: String,
    pub dry_run: bool,
    pub watch: bool,
    /// When it arrived (before any latency set by `set_latency`).
    pub received: Instant,
    /// `HTTP/1.1` or `HTTP/2.0`.
    pub version: String,
}

/// How clients reach the server.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transport {
    /// Plain HTTP/1.1.
    Plain,
    /// TLS offering `h2` and `http/1.1` (ALPN).
    Tls,
}

impl Transport {
    /// `STRATA_APISERVER=h2` runs the suites over TLS and HTTP/2; anything else, plain HTTP/1.1.
    pub fn from_env() -> Transport {
        match std::env::var("STRATA_APISERVER").as_deref() {
            Ok("h2") => Transport::Tls,
            _ => Transport::Plain,
        }
    }
}

impl Logged {
    /// Whether the request changed (or would have changed) stored state.
    pub fn is_write(&self) -> bool {
        !self.dry_run && self.method != "GET"
    }
}

/// A running API server. Dropping it stops it.
pub struct ApiServer {
    pub addr: SocketAddr,
    /// The CA certificate (PEM) clients trust, with [`Transport::Tls`].
    pub ca: Option<String>,
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
    /// Starts a server on 127.0.0.1 with a port of its own, on a thread of its own, over the
    /// transport the environment asks for ([`Transport::from_env`]).
    pub fn start() -> ApiServer {
        ApiServer::start_with(Transport::from_env())
    }

    pub fn start_with(transport: Transport) -> ApiServer {
        let state = Arc::new(Mutex::new(State::new(schema::builtin_kinds())));
        {
            let mut s = state.lock().unwrap();
            let namespaces = s.kinds.iter().find(|k| k.plural == "namespaces").unwrap().clone();
            for ns in ["default", "kube-system", "kube-public", "kube-node-lease"] {
                let body = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}});
                let write = Write {
                    kind: namespaces.clone(),
                    namespace: None,
                    name: None,
                    subresource: String::new(),
                    manager: "kube-apiserver".into(),
                    dry_run: false,
                    strict: false,
                    op: Op::Create(body),
                };
                s.write(write).unwrap();
            }
        }
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, mut rx) = tokio::sync::oneshot::channel::<()>();
        let served = state.clone();
        let (ca, acceptor) = match transport {
            Transport::Plain => (None, None),
            Transport::Tls => {
                let (ca, acceptor) = tls_acceptor();
                (Some(ca), Some(acceptor))
            }
        };
        let thread = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
            runtime.block_on(async move {
                tokio::spawn(bookmarks(served.clone()));
                let listener = tokio::net::TcpListener::from_std(listener).unwrap();
                loop {
                    tokio::select! {
                        _ = &mut rx => break,
                        accepted = listener.accept() => {
                            let Ok((stream, _)) = accepted else { continue };
                            let state = served.clone();
                            let acceptor = acceptor.clone();
                            tokio::spawn(async move {
                                let service = hyper::service::service_fn(move |req| handle(state.clone(), req));
                                let Some(acceptor) = acceptor else {
                                    let io = hyper_util::rt::TokioIo::new(stream);
                                    let _ = hyper::server::conn::http1::Builder::new().serve_connection(io, service).await;
                                    return;
                                };
                                let Ok(tls) = acceptor.accept(stream).await else { return };
                                let h2 = tls.get_ref().1.alpn_protocol() == Some(b"h2");
                                let io = hyper_util::rt::TokioIo::new(tls);
                                if h2 {
                                    let _ = hyper::server::conn::http2::Builder::new(hyper_util::rt::TokioExecutor::new())
                                        .serve_connection(io, service)
                                        .await;
                                } else {
                                    let _ = hyper::server::conn::http1::Builder::new().serve_connection(io, service).await;
                                }
                            });
                        }
                    }
                }
            });
            // Dropping the runtime cancels every connection, open watches and black-holed requests included.
            runtime.shutdown_background();
        });
        ApiServer { addr, ca, state, shutdown: Some(tx), thread: Some(thread) }
    }

    pub fn url(&self) -> String {
        match self.ca {
            Some(_) => format!("https://{}", self.addr),
            None => format!("http://{}", self.addr),
        }
    }

    /// Writes a kubeconfig for this server (context `harness`) into `dir`.
    pub fn kubeconfig(&self, dir: &Path) -> PathBuf {
        let path = kubeconfig_for(&self.url(), dir);
        if let Some(ca) = &self.ca {
            use base64::Engine as _;
            let data = base64::engine::general_purpose::STANDARD.encode(ca);
            let text = std::fs::read_to_string(&path).unwrap();
            // A token: over https, kubectl asks for a password for a user without credentials.
            let text = text
                .replacen(
                    &format!("    server: {}\n", self.url()),
                    &format!("    server: {}\n    certificate-authority-data: {data}\n", self.url()),
                    1,
                )
                .replacen("  user: {}\n", "  user: { token: harness }\n", 1);
            std::fs::write(&path, text).unwrap();
        }
        path
    }

    /// The stored object, as `kubectl get -o json` would show it.
    pub fn object(&self, plural: &str, namespace: Option<&str>, name: &str) -> Option<Value> {
        let s = self.state.lock().unwrap();
        let kind = s.kinds.iter().find(|k| k.plural == plural)?;
        s.get(kind, namespace, name).map(|o| s.render(o, kind))
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

    /// Refuses every write (dry-run too) of a `plural` object that has a value at `pointer`,
    /// quoting the value as kube-apiserver's validation does: `Database.example.com "orders" is
    /// invalid: spec.password: Invalid value: "…": <reason>`.
    pub fn reject(&self, plural: &str, pointer: &str, reason: &str) {
        self.state.lock().unwrap().rejections.push((plural.into(), pointer.into(), reason.into()));
    }

    pub fn set_latency(&self, latency: Duration) {
        self.state.lock().unwrap().latency = latency;
    }

    pub fn requests(&self) -> Vec<Logged> {
        self.state.lock().unwrap().log.clone()
    }

    pub fn clear_requests(&self) {
        self.state.lock().unwrap().log.clear();
    }

    /// The current (global) resourceVersion.
    pub fn revision(&self) -> u64 {
        self.state.lock().unwrap().revision
    }

    /// How many change events are kept for watches to resume from (10,000 by default).
    pub fn set_history_limit(&self, events: usize) {
        self.state.lock().unwrap().history.set_limit(events);
    }

    /// Forgets all history: resuming a watch or a paged list from any earlier revision is 410 Gone.
    pub fn compact(&self) {
        let mut s = self.state.lock().unwrap();
        let revision = s.revision;
        s.history.compact(revision);
    }

    /// Ends every open watch (clients see the stream close, as when an API server restarts).
    pub fn close_watches(&self) {
        let mut s = self.state.lock().unwrap();
        s.watchers.clear();
        s.frozen.clear();
    }

    /// Open watches still delivering events (closed ones are noticed at the next event or bookmark).
    pub fn watch_count(&self) -> usize {
        let mut s = self.state.lock().unwrap();
        s.watchers.retain(|w| !w.tx.is_closed());
        s.watchers.len()
    }

    /// A BOOKMARK now to every watch that allows them.
    pub fn send_bookmarks(&self) {
        self.state.lock().unwrap().send_bookmarks();
    }

    /// How often watches that allow bookmarks get one (one minute by default, as kube-apiserver).
    pub fn set_bookmark_interval(&self, every: Duration) {
        self.state.lock().unwrap().bookmark_interval = every;
    }

    /// On: connections are accepted and requests read but never answered, and every open watch
    /// goes silent for good (a network partition). Off: new requests are served again; what
    /// was cut off stays cut off.
    pub fn set_black_hole(&self, on: bool) {
        let mut s = self.state.lock().unwrap();
        s.black_hole = on;
        if on {
            let cut = std::mem::take(&mut s.watchers);
            s.frozen.extend(cut);
        }
    }

    /// The next `requests` requests (watches excepted) whose path contains `fragment`
    /// (`/clusterstates/c0`, `/configmaps/`) are each held `hold` before they are served: an
    /// API server slow for those objects alone, for a while. The request log has them when
    /// they are served; [`ApiServer::stalled`] counts them as they come in.
    pub fn stall(&self, fragment: &str, hold: Duration, requests: usize) {
        self.state.lock().unwrap().stalls.push((fragment.to_string(), hold, requests));
    }

    /// How many requests a [`ApiServer::stall`] has held so far (counted when they come in).
    pub fn stalled(&self) -> usize {
        self.state.lock().unwrap().stalled
    }

    /// Answers the next requests (watches excepted), one per status given, with that error.
    pub fn fail_next(&self, statuses: &[u16]) {
        let mut s = self.state.lock().unwrap();
        s.failures.extend(statuses.iter().map(|c| StatusCode::from_u16(*c).expect("a status code")));
    }
}

/// A CA certificate (PEM) and an acceptor serving a certificate it signed for 127.0.0.1 and
/// localhost, offering `h2` and `http/1.1`.
fn tls_acceptor() -> (String, tokio_rustls::TlsAcceptor) {
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca_params.distinguished_name.push(rcgen::DnType::CommonName, "apiserver stand-in CA");
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let issuer = rcgen::Issuer::new(ca_params, ca_key);
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::new(vec!["localhost".to_string()]).unwrap();
    params.subject_alt_names.push(rcgen::SanType::IpAddress("127.0.0.1".parse().unwrap()));
    let cert = params.signed_by(&key, &issuer).unwrap();
    let chain = vec![cert.der().clone()];
    let private = rustls::pki_types::PrivateKeyDer::try_from(key.serialize_der()).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(chain, private)
        .unwrap();
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    (ca.pem(), tokio_rustls::TlsAcceptor::from(Arc::new(config)))
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

/// Sends bookmarks at the configured interval.
async fn bookmarks(state: Arc<Mutex<State>>) {
    let mut last = Instant::now();
    loop {
        tokio::time::sleep(Duration::from_millis(50)).await;
        let mut s = state.lock().unwrap();
        if last.elapsed() >= s.bookmark_interval {
            last = Instant::now();
            if !s.black_hole {
                s.send_bookmarks();
            }
        }
    }
}

/// A response body: a document, or a watch's stream of events.
pub enum Body {
    Full(Option<Bytes>),
    Watch(WatchBody),
}

impl hyper::body::Body for Body {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        match self.get_mut() {
            Body::Full(bytes) => Poll::Ready(bytes.take().map(|b| Ok(Frame::data(b)))),
            Body::Watch(watch) => watch.poll_frame(cx).map(|frame| frame.map(Ok)),
        }
    }

    fn is_end_stream(&self) -> bool {
        matches!(self, Body::Full(None))
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            Body::Full(Some(b)) => SizeHint::with_exact(b.len() as u64),
            Body::Full(None) => SizeHint::with_exact(0),
            Body::Watch(_) => SizeHint::default(),
        }
    }
}

fn respond(code: StatusCode, body: &Value) -> Response<Body> {
    Response::builder()
        .status(code)
        .header("content-type", "application/json")
        .body(Body::Full(Some(Bytes::from(serde_json::to_vec(body).unwrap()))))
        .unwrap()
}

fn error(e: ApiError) -> Response<Body> {
    respond(e.code, &e.status())
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

/// A parsed request.
struct Call {
    method: Method,
    path: String,
    q: BTreeMap<String, String>,
    content_type: String,
    user_agent: String,
    body: Bytes,
}

/// What a resource path names.
struct Target {
    kind: Kind,
    namespace: Option<String>,
    name: Option<String>,
    subresource: String,
    /// Reached through the legacy `/watch/` prefix.
    watch: bool,
}

async fn handle(state: Arc<Mutex<State>>, req: Request<Incoming>) -> Result<Response<Body>, Infallible> {
    let version = format!("{:?}", req.version());
    let header = |name: &str| req.headers().get(name).and_then(|v| v.to_str().ok()).unwrap_or("").to_string();
    let (content_type, user_agent) = (header("content-type"), header("user-agent"));
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    let raw_query = req.uri().query().unwrap_or("").to_string();
    let q = query(&req);
    let body = match req.into_body().collect().await {
        Ok(b) => b.to_bytes(),
        Err(_) => return Ok(error(ApiError::bad_request("unreadable body"))),
    };
    if std::env::var_os("HARNESS_DEBUG").is_some() {
        eprintln!("{method} {path}?{raw_query} {content_type} {}", String::from_utf8_lossy(&body));
    }
    let received = Instant::now();
    let is_watch = q.get("watch").is_some_and(|v| v == "true" || v == "1") || path.contains("/watch/");
    let (latency, black_hole, stall) = {
        let mut s = state.lock().unwrap();
        let stall = match s.stalls.iter_mut().find(|(fragment, _, left)| *left > 0 && path.contains(fragment.as_str()))
        {
            Some((_, hold, left)) if !is_watch => {
                *left -= 1;
                Some(*hold)
            }
            _ => None,
        };
        if stall.is_some() {
            s.stalled += 1;
        }
        (s.latency, s.black_hole, stall)
    };
    if black_hole {
        std::future::pending::<()>().await;
    }
    if !latency.is_zero() {
        tokio::time::sleep(latency).await;
    }
    if let Some(hold) = stall {
        tokio::time::sleep(hold).await;
    }
    let mut s = state.lock().unwrap();
    s.log.push(Logged {
        method: method.to_string(),
        path: path.clone(),
        query: raw_query,
        dry_run: q.get("dryRun").is_some_and(|v| v == "All"),
        watch: is_watch,
        received,
        version,
    });
    if !is_watch && let Some(code) = s.failures.pop_front() {
        let reason = match code.as_u16() {
            429 => "TooManyRequests",
            503 => "ServiceUnavailable",
            504 => "Timeout",
            _ => "InternalError",
        };
        return Ok(respond(
            code,
            &json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                    "message": format!("injected failure ({code})"), "reason": reason, "code": code.as_u16()}),
        ));
    }
    if content_type.contains("protobuf") {
        return Ok(error(ApiError::unsupported_media("the harness speaks JSON only")));
    }
    let call = Call { method, path, q, content_type, user_agent, body };
    Ok(match s.route(&call) {
        Ok(Reply::Json(code, value)) => respond(code, &value),
        Ok(Reply::Watch(body)) => Response::builder()
            .status(StatusCode::OK)
            .header("content-type", "application/json")
            .body(Body::Watch(body))
            .unwrap(),
        Err(e) => error(e),
    })
}

enum Reply {
    Json(StatusCode, Value),
    Watch(WatchBody),
}

fn parse_body(content_type: &str, body: &[u8]) -> Result<Value, ApiError> {
    // Apply bodies are YAML by content type, and JSON (a subset) in practice.
    if let Ok(value) = serde_json::from_slice(body) {
        return Ok(value);
    }
    let text = std::str::from_utf8(body).map_err(|e| ApiError::bad_request(e.to_string()))?;
    if content_type.contains("yaml") {
        serde_saphyr::from_str(text).map_err(|e| ApiError::bad_request(e.to_string()))
    } else {
        serde_json::from_str(text).map_err(|e| ApiError::bad_request(e.to_string()))
    }
}

impl State {
    fn route(&mut self, call: &Call) -> Result<Reply, ApiError> {
        let parts: Vec<&str> = call.path.split('/').filter(|p| !p.is_empty()).collect();
        if call.method == Method::GET {
            let discovery = match parts.as_slice() {
                ["version"] => Some(
                    json!({"major": "1", "minor": "32", "gitVersion": "v1.32.0-strata-harness", "platform": "linux/amd64"}),
                ),
                ["api"] => Some(
                    json!({"kind": "APIVersions", "versions": ["v1"], "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": "127.0.0.1"}]}),
                ),
                ["apis"] => Some(schema::group_list(&self.kinds)),
                ["api", v] => {
                    Some(schema::resource_list(&self.kinds, "", v).ok_or_else(|| ApiError::no_route(&call.path))?)
                }
                ["apis", g, v] => {
                    Some(schema::resource_list(&self.kinds, g, v).ok_or_else(|| ApiError::no_route(&call.path))?)
                }
                ["openapi", "v3"] => Some(schema::openapi_root(&self.kinds)),
                ["openapi", "v3", "api", v] => {
                    Some(schema::openapi_document(&self.kinds, "", v).ok_or_else(|| ApiError::no_route(&call.path))?)
                }
                ["openapi", "v3", "apis", g, v] => {
                    Some(schema::openapi_document(&self.kinds, g, v).ok_or_else(|| ApiError::no_route(&call.path))?)
                }
                _ => None,
            };
            if let Some(document) = discovery {
                return Ok(Reply::Json(StatusCode::OK, document));
            }
        }
        let target = self.parse(&parts).ok_or_else(|| ApiError::no_route(&call.path))?;
        let sub = target.subresource.as_str();
        let served = match sub {
            "" => true,
            "status" => target.kind.status,
            "scale" => target.kind.scale,
            _ => false,
        };
        if !served || (target.name.is_none() && !sub.is_empty()) {
            return Err(ApiError::no_route(&call.path));
        }
        let q = &call.q;
        let dry_run = q.get("dryRun").is_some_and(|v| v == "All");
        let manager = q
            .get("fieldManager")
            .cloned()
            .unwrap_or_else(|| call.user_agent.split('/').next().unwrap_or("").to_string());
        let ns = target.namespace.as_deref();
        let write = |op: Op| Write {
            kind: target.kind.clone(),
            namespace: target.namespace.clone(),
            name: target.name.clone(),
            subresource: target.subresource.clone(),
            manager: manager.clone(),
            dry_run,
            strict: q.get("fieldValidation").is_some_and(|v| v == "Strict"),
            op,
        };
        let watching = target.watch || q.get("watch").is_some_and(|v| v == "true" || v == "1");
        let json = |r: Result<(StatusCode, Value), ApiError>| r.map(|(code, v)| Reply::Json(code, v));
        match (&call.method, &target.name) {
            (&Method::GET, None) if watching => self.watch(&target.kind, ns, q).map(Reply::Watch),
            (&Method::GET, Some(name)) if watching => {
                // A legacy watch of one object is a watch of the collection pinned by name.
                let mut q = q.clone();
                q.insert("fieldSelector".into(), format!("metadata.name={name}"));
                self.watch(&target.kind, ns, &q).map(Reply::Watch)
            }
            (&Method::GET, None) => self.list(&target.kind, ns, q).map(|v| Reply::Json(StatusCode::OK, v)),
            (&Method::GET, Some(name)) => {
                self.read(&target.kind, ns, name, sub).map(|v| Reply::Json(StatusCode::OK, v))
            }
            (&Method::POST, None) => json(self.write(write(Op::Create(parse_body(&call.content_type, &call.body)?)))),
            (&Method::PUT, Some(_)) => {
                json(self.write(write(Op::Replace(parse_body(&call.content_type, &call.body)?))))
            }
            (&Method::PATCH, Some(_)) => {
                let body = parse_body(&call.content_type, &call.body)?;
                let force = q.get("force").is_some_and(|v| v == "true");
                let ct = call.content_type.as_str();
                let patch = if ct.starts_with("application/apply-patch") {
                    if !q.contains_key("fieldManager") {
                        return Err(ApiError::new_invalid_options(
                            "PatchOptions",
                            "fieldManager: Required value: is required for apply patch",
                        ));
                    }
                    return json(self.write(write(Op::Apply { config: body, force })));
                } else if ct.starts_with("application/merge-patch+json") {
                    PatchType::Merge
                } else if ct.starts_with("application/strategic-merge-patch+json") {
                    PatchType::Strategic
                } else if ct.starts_with("application/json-patch+json") {
                    PatchType::Json
                } else {
                    return Err(ApiError::unsupported_media(format!(
                        "the body of the request was in an unknown format - accepted media types include: application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml, application/strategic-merge-patch+json (got {ct:?})"
                    )));
                };
                if force {
                    return Err(ApiError::new_invalid_options(
                        "PatchOptions",
                        "force: Forbidden: may not be specified for non-apply patch",
                    ));
                }
                json(self.write(write(Op::Patch(patch, body))))
            }
            (&Method::DELETE, Some(name)) => {
                let options =
                    if call.body.is_empty() { Value::Null } else { parse_body(&call.content_type, &call.body)? };
                let dry = dry_run || options["dryRun"].as_array().is_some_and(|d| d.iter().any(|v| v == "All"));
                json(self.delete(&target.kind, ns, name, &options, dry))
            }
            (&Method::DELETE, None) => {
                self.delete_collection(&target.kind, ns, q, dry_run).map(|v| Reply::Json(StatusCode::OK, v))
            }
            _ => Err(ApiError::method_not_allowed()),
        }
    }

    fn parse(&self, parts: &[&str]) -> Option<Target> {
        let (group, version, rest) = match parts {
            ["api", v, rest @ ..] => ("", *v, rest),
            ["apis", g, v, rest @ ..] => (*g, *v, rest),
            _ => return None,
        };
        let (watch, rest) = match rest {
            ["watch", rest @ ..] => (true, rest),
            _ => (false, rest),
        };
        let find = |plural: &str| {
            self.kinds.iter().find(|k| k.group == group && k.version == version && k.plural == plural).cloned()
        };
        let target = |kind: Kind, namespace: Option<&str>, tail: &[&str]| {
            (tail.len() <= 2).then(|| Target {
                kind,
                namespace: namespace.map(str::to_string),
                name: tail.first().map(|s| s.to_string()),
                subresource: tail.get(1).map(|s| s.to_string()).unwrap_or_default(),
                watch,
            })
        };
        match rest {
            ["namespaces", ns, plural, tail @ ..] if find(plural).is_some_and(|k| k.namespaced) => {
                target(find(plural)?, Some(ns), tail)
            }
            [plural, tail @ ..] => target(find(plural)?, None, tail),
            _ => None,
        }
    }
}

impl ApiError {
    fn new_invalid_options(what: &str, error: &str) -> ApiError {
        let mut e = ApiError::bad_request(format!("{what}.meta.k8s.io \"\" is invalid: {error}"));
        e.code = StatusCode::UNPROCESSABLE_ENTITY;
        e.reason = "Invalid";
        e
    }
}
