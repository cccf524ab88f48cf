//! A Kubernetes cluster through its API server: discovery (cached per cluster), server-side
//! apply as field manager `strata`, server-side dry-run, delete, and the inventory ConfigMap.
//!
//! Connections go through strata's one connector ([`crate::net`]) under kube's request stack
//! (base URI, credentials, impersonation headers, retries): the kubeconfig's CA, client
//! certificate, `tls-server-name` and `insecure-skip-tls-verify` as kubectl reads them; its
//! `proxy-url`, else the host's proxy (`proxy:` or HTTPS_PROXY/NO_PROXY, as kubectl honours them).

use std::collections::{BTreeSet, HashMap, HashSet};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{APIResource, APIResourceList};
use kube::api::{Api, ApiResource, DeleteParams, DynamicObject, GetParams, ListParams, Patch, PatchParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::core::Request;
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, Config};
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use serde_json::{Value, json};
use tokio::sync::mpsc;

use super::{Observed, Resource, Said, Target, TargetError, Watch};
use crate::net::proxy::{Router, Source};
use crate::net::{Network, Settings, Timeouts};
use crate::render::object::{FIELD_MANAGER, LABEL_CLUSTER, LABEL_MANAGED_BY, ObjectId};
use crate::target::inventory::{INVENTORY_KEY, INVENTORY_NAMESPACE, INVENTORY_PREFIX, Inventory};

pub struct KubeTarget {
    client: Client,
    /// The same server, for watches: reads on these connections may wait for minutes.
    watches: Client,
    /// apiVersion → the resources it serves (subresources left out).
    discovery: Mutex<HashMap<String, Arc<Vec<APIResource>>>>,
    /// The inventories' namespace is known to exist.
    inventory_namespace: AtomicBool,
}

/// The most one request may take in all: a server that answers a byte at a time never trips the
/// read timeout, which restarts with every read.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);

/// `request`, or `Unreachable` when it takes longer than [`REQUEST_TIMEOUT`].
async fn bounded<T>(
    request: impl Future<Output = Result<T, kube::Error>>,
) -> Result<Result<T, kube::Error>, TargetError> {
    tokio::time::timeout(REQUEST_TIMEOUT, request).await.map_err(|e| {
        TargetError::Unreachable(Said::caused(format!("no answer within {}s", REQUEST_TIMEOUT.as_secs()), e))
    })
}

fn config_error(what: &str, e: impl std::error::Error + Send + Sync + 'static) -> TargetError {
    TargetError::Failed(Said::caused(format!("{what}: {e}"), e))
}

/// The `proxy-url` of the cluster the chosen context points at.
fn kubeconfig_proxy(kubeconfig: &Kubeconfig, context: Option<&str>) -> Option<String> {
    let context = context.map(str::to_string).or_else(|| kubeconfig.current_context.clone())?;
    let cluster = &kubeconfig.contexts.iter().find(|c| c.name == context)?.context.as_ref()?.cluster;
    let named = kubeconfig.clusters.iter().find(|c| &c.name == cluster)?;
    named.cluster.as_ref()?.proxy_url.clone().filter(|url| !url.is_empty())
}

impl KubeTarget {
    /// A target for a configured cluster: a kubeconfig file, the service account, or a cluster
    /// Secret (Kubernetes mode).
    pub async fn connect(config: &crate::target::TargetConfig, network: &Network) -> Result<Self, TargetError> {
        let (config, router, settings) = connection(config, network).await?;
        Self::from_config(config, network, router, settings)
    }

    /// A target from a kubeconfig file and (optionally) one of its contexts.
    pub async fn from_kubeconfig(path: &Path, context: Option<&str>, network: &Network) -> Result<Self, TargetError> {
        let config =
            crate::target::TargetConfig::Kubeconfig { path: path.to_path_buf(), context: context.map(str::to_string) };
        Self::connect(&config, network).await
    }

    /// The cluster strata runs in, through its service account.
    pub fn in_cluster(network: &Network) -> Result<Self, TargetError> {
        let (config, router, settings) = in_cluster_connection(network)?;
        Self::from_config(config, network, router, settings)
    }

    /// A target on strata's connector for `config`; see [`client_from_config`].
    pub fn from_config(
        config: Config,
        network: &Network,
        router: Arc<Router>,
        settings: Settings,
    ) -> Result<Self, TargetError> {
        let mut target =
            Self::from_client(client_from_config(&config, network, router.clone(), settings.clone(), Timeouts::KUBE)?);
        // Watches get connections of their own, whose reads may wait as long as a watch is quiet.
        target.watches = client_from_config(&config, network, router, settings, Timeouts::KUBE_WATCH)?;
        Ok(target)
    }

    pub fn from_client(client: Client) -> Self {
        KubeTarget {
            watches: client.clone(),
            client,
            discovery: Mutex::new(HashMap::new()),
            inventory_namespace: AtomicBool::new(false),
        }
    }

    /// Requests for a resource (in a namespace, for namespaced ones). Responses are decoded
    /// straight into JSON values: strata never needs typed objects, and skipping them saves
    /// much of the CPU spent per request.
    fn request(&self, resource: &Resource, namespace: Option<&str>) -> Result<Request, TargetError> {
        let namespace = if resource.namespaced { namespace } else { None };
        Ok(Request::new(collection_path(resource, namespace)?))
    }

    async fn send(
        &self,
        request: Result<http::Request<Vec<u8>>, kube::core::request::Error>,
    ) -> Result<Result<Value, kube::Error>, TargetError> {
        match request {
            Ok(request) => bounded(self.client.request::<Value>(request)).await,
            Err(e) => Ok(Err(kube::Error::BuildRequest(e))),
        }
    }

    /// Server-side apply, with the API server's own error.
    async fn patch(
        &self,
        resource: &Resource,
        manifest: &Value,
        dry_run: bool,
        force: bool,
    ) -> Result<Result<Value, kube::Error>, TargetError> {
        let name = manifest["metadata"]["name"].as_str().unwrap_or_default();
        let namespace = manifest["metadata"]["namespace"].as_str();
        let mut params = PatchParams::apply(FIELD_MANAGER);
        if force {
            params = params.force();
        }
        if dry_run {
            params = params.dry_run();
        }
        self.send(self.request(resource, namespace)?.patch(&segment(name)?, &params, &Patch::Apply(manifest))).await
    }

    async fn resources(&self, api_version: &str) -> Result<Option<Arc<Vec<APIResource>>>, TargetError> {
        if let Some(hit) = self.discovery.lock().expect("discovery lock").get(api_version) {
            return Ok(Some(hit.clone()));
        }
        let (group, version) = api_version.rsplit_once('/').unwrap_or(("", api_version));
        let path = group_path(group, version)?;
        let request =
            http::Request::get(path).body(Vec::new()).map_err(|e| TargetError::Failed(Said::caused(e.to_string(), e)));
        let listed = bounded(self.client.request::<APIResourceList>(request?)).await?;
        let list = match listed {
            Ok(list) => list,
            Err(kube::Error::Api(status)) if status.code == 404 => return Ok(None),
            Err(e) => return Err(classify(e)),
        };
        let resources: Vec<APIResource> = list.resources.into_iter().filter(|r| !r.name.contains('/')).collect();
        let resources = Arc::new(resources);
        self.discovery.lock().expect("discovery lock").insert(api_version.to_string(), resources.clone());
        Ok(Some(resources))
    }
}

/// How to reach a configured cluster: kube's configuration, the proxy route and the settings
/// messages name. A kubeconfig file, the service account, or a cluster Secret's kubeconfig.
async fn connection(
    config: &crate::target::TargetConfig,
    network: &Network,
) -> Result<(Config, Arc<Router>, Settings), TargetError> {
    use crate::target::TargetConfig;
    match config {
        TargetConfig::Kubeconfig { path, context } => {
            let file = path.display().to_string();
            let kubeconfig = Kubeconfig::read_from(path).map_err(|e| config_error(&format!("kubeconfig {file}"), e))?;
            kubeconfig_connection(kubeconfig, context.as_deref(), &file, network).await
        }
        TargetConfig::InCluster => in_cluster_connection(network),
        TargetConfig::Secret(secret) => {
            kubeconfig_connection(secret.kubeconfig().clone(), None, &secret.to_string(), network).await
        }
        TargetConfig::Directory(path) => {
            Err(TargetError::Other(format!("{} is a directory target, not a Kubernetes cluster", path.display())))
        }
    }
}

/// The cluster `kubeconfig`'s context (or its current one) points at; `shown` names where the
/// kubeconfig came from in messages (a file, or a Secret), never its content.
async fn kubeconfig_connection(
    kubeconfig: Kubeconfig,
    context: Option<&str>,
    shown: &str,
    network: &Network,
) -> Result<(Config, Arc<Router>, Settings), TargetError> {
    let proxy = kubeconfig_proxy(&kubeconfig, context);
    let options = KubeConfigOptions { context: context.map(str::to_string), cluster: None, user: None };
    let config = Config::from_custom_kubeconfig(kubeconfig, &options)
        .await
        .map_err(|e| config_error(&format!("kubeconfig {shown} context {}", context.unwrap_or("(current)")), e))?;
    // kubectl: a cluster's proxy-url replaces the environment's proxy, NO_PROXY included.
    let router = match proxy {
        Some(url) => Arc::new(
            Router::fixed(&url, Source::Kubeconfig(shown.to_string())).map_err(|e| config_error("kubeconfig", e))?,
        ),
        None => network.router().clone(),
    };
    Ok((config, router, Settings::kubeconfig(shown)))
}

fn in_cluster_connection(network: &Network) -> Result<(Config, Arc<Router>, Settings), TargetError> {
    let config = Config::incluster().map_err(|e| config_error("in-cluster config", e))?;
    Ok((config, network.router().clone(), Settings::in_cluster()))
}

/// One client for a configured cluster, whose reads may wait as long as a quiet watch: the
/// management cluster's (Kubernetes mode), where state and Secrets are watched and every other
/// request is bounded by its caller. Builds kube's request stack, which spawns onto the current
/// runtime: call it on the runtime the client will be used on.
pub async fn client(config: &crate::target::TargetConfig, network: &Network) -> Result<Client, TargetError> {
    let (config, router, settings) = connection(config, network).await?;
    client_from_config(&config, network, router, settings, Timeouts::KUBE_WATCH)
}

/// A client for `config` on strata's connector: the kubeconfig's trust and identity, with a
/// verifier that names the certificate it refuses.
fn client_from_config(
    config: &Config,
    network: &Network,
    router: Arc<Router>,
    settings: Settings,
    timeouts: Timeouts,
) -> Result<Client, TargetError> {
    use kube::client::ConfigExt;
    let mut rustls = config.rustls_client_config().map_err(|e| config_error(&settings.client_cert, e))?;
    let recorder = if config.accept_invalid_certs {
        None
    } else {
        let recorder = match &config.root_cert {
            Some(roots) => {
                let roots: Vec<_> =
                    roots.iter().map(|der| rustls::pki_types::CertificateDer::from(der.clone())).collect();
                network.verifier(false, &roots, &settings.ca, Path::new("(kubeconfig)"))
            }
            None => network.verifier(true, &[], &settings.ca, Path::new("-")),
        }
        .map_err(|e| config_error(&settings.ca, e))?;
        rustls.dangerous().set_certificate_verifier(recorder.clone());
        Some(recorder)
    };
    // HTTP/2 where the server speaks it (every kube-apiserver does over TLS): one connection
    // carries every concurrent request and watch instead of one handshake each.
    rustls.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    let auth = &config.auth_info;
    let tls = crate::net::connect::Tls {
        connector: tokio_rustls::TlsConnector::from(Arc::new(rustls)),
        recorder,
        server_name: config.tls_server_name.clone(),
        client_cert: auth.client_certificate.is_some() || auth.client_certificate_data.is_some(),
    };
    let proxy = router.clone();
    let connector = crate::net::connect::Connector::new(router, Some(tls), settings, timeouts);
    let http = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        // The pings below need a timer: without one, hyper panics on the first HTTP/2 connection
        // ("You must supply a timer"), which only a server that speaks HTTP/2 shows.
        .timer(hyper_util::rt::TokioTimer::new())
        // Pings keep an idle HTTP/2 connection's reads under the read timeout, and find a dead one.
        .http2_keep_alive_interval(Some(Duration::from_secs(20)))
        .http2_keep_alive_timeout(Duration::from_secs(20))
        .http2_keep_alive_while_idle(true)
        .build::<_, kube::client::Body>(connector);
    let retry =
        config.default_retry.then(|| tower::retry::RetryLayer::new(kube::client::retry::RetryPolicy::server_retry()));
    let service = tower::ServiceBuilder::new()
        .layer(config.base_uri_layer())
        .option_layer(retry)
        .option_layer(config.auth_layer().map_err(|e| config_error("kubeconfig credentials", e))?)
        .layer(config.extra_headers_layer().map_err(|e| config_error("kubeconfig headers", e))?)
        .map_request(move |mut request| {
            crate::net::proxy_authorization(&proxy, &mut request);
            request
        })
        .map_err(tower::BoxError::from)
        .service(http);
    Ok(Client::new(service, config.default_namespace.clone()))
}

/// What kind of failure a Kubernetes request met: what strata does about it, and the label
/// metrics count it under ([`FailureKind::as_str`]). The one sorting of `kube::Error` for the
/// target clusters (here) and the management cluster (the daemon's state, Leases, Secrets).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum FailureKind {
    /// 409: another writer got there first (a field manager, a resourceVersion).
    Conflict,
    /// 404: the object (or its namespace, or its kind) is not there.
    Missing,
    /// 401, 403: the credentials or their RBAC refuse it.
    Forbidden,
    /// 400, 422: the server refuses the object itself (validation, admission).
    Rejected,
    /// No usable answer: the connection failed, a proxy wants credentials (407), or the server
    /// is overloaded or failing (429, 5xx). Worth retrying.
    Unreachable,
    Other,
}

impl FailureKind {
    /// The label: `conflict`, `missing`, `forbidden`, `rejected`, `unreachable` or `other`.
    pub fn as_str(self) -> &'static str {
        match self {
            FailureKind::Conflict => "conflict",
            FailureKind::Missing => "missing",
            FailureKind::Forbidden => "forbidden",
            FailureKind::Rejected => "rejected",
            FailureKind::Unreachable => "unreachable",
            FailureKind::Other => "other",
        }
    }
}

/// Only a proxy answers 407 (plain HTTP goes through it in absolute form).
const PROXY_AUTH_HINT: &str = "the proxy requires authentication (407 Proxy Authentication Required); check the user:password in the kubeconfig's proxy-url, proxy.username and proxy.password_file, or HTTP_PROXY";

/// A failed Kubernetes request, sorted ([`Classified::of`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Classified {
    pub kind: FailureKind,
    /// The HTTP status the API server answered; `None` when no answer came.
    pub status: Option<u16>,
    /// What was said: the server's Status message (its reason when the message is empty), or,
    /// when it did not answer, strata's account of the connection (step, host, the setting to
    /// check), or kube's own message.
    pub said: String,
}

impl Classified {
    /// Sorts `e`, by the status the API server answered, else by whether the request reached it.
    pub fn of(e: &kube::Error) -> Classified {
        match e {
            kube::Error::Api(status) => {
                let said = if status.message.is_empty() { status.reason.clone() } else { status.message.clone() };
                let kind = match status.code {
                    409 => FailureKind::Conflict,
                    404 => FailureKind::Missing,
                    401 | 403 => FailureKind::Forbidden,
                    400 | 422 => FailureKind::Rejected,
                    407 | 429 | 500..=599 => FailureKind::Unreachable,
                    _ => FailureKind::Other,
                };
                Classified { kind, status: Some(status.code), said }
            }
            // strata's connector explains its failures (step, host, the kubeconfig setting to check).
            kube::Error::HyperError(e) => {
                Classified { kind: FailureKind::Unreachable, status: None, said: crate::net::failure_of(e).to_string() }
            }
            kube::Error::Service(e) => Classified {
                kind: FailureKind::Unreachable,
                status: None,
                said: crate::net::failure_of(e.as_ref()).to_string(),
            },
            other => Classified { kind: FailureKind::Other, status: None, said: other.to_string() },
        }
    }

    /// What to do about it that holds wherever the request went: empty for most; where it
    /// depends on whose credentials were refused, the caller says it.
    pub fn hint(&self) -> &'static str {
        match self.status {
            Some(407) => PROXY_AUTH_HINT,
            _ => "",
        }
    }
}

/// Sorts a kube error into what the reconciler does about it. A server that answers 429 or 5xx
/// did answer: for one object's request that is the object's failure (a failing admission
/// webhook answers 500), not the cluster's, so it stays `Other` here; only a request that found
/// no server (or a proxy that wants credentials) is `Unreachable`.
fn classify(e: kube::Error) -> TargetError {
    let sorted = Classified::of(&e);
    let said = |message: String| Said::caused(message, e);
    match (sorted.kind, sorted.status) {
        (FailureKind::Forbidden, _) => TargetError::Forbidden(said(sorted.said)),
        (FailureKind::Conflict, _) => TargetError::Conflict(said(sorted.said)),
        (FailureKind::Rejected, _) => TargetError::Invalid(said(sorted.said)),
        (FailureKind::Unreachable, Some(407)) => TargetError::Unreachable(said(sorted.hint().to_string())),
        (FailureKind::Unreachable, None) => TargetError::Unreachable(said(sorted.said)),
        (_, Some(code)) => TargetError::Failed(said(format!("API server answered {code}: {}", sorted.said))),
        (_, None) => TargetError::Failed(said(sorted.said)),
    }
}

/// Everything but RFC 3986's unreserved characters is escaped in a path segment.
const SEGMENT: &AsciiSet = &NON_ALPHANUMERIC.remove(b'-').remove(b'.').remove(b'_').remove(b'~');

/// One URL path segment: percent-encoded, so a name can never add segments, a query or a
/// fragment; an empty, `.` or `..` segment is refused, since servers and proxies normalise
/// those away (encoded or not) and the request would reach another resource.
fn segment(value: &str) -> Result<String, TargetError> {
    if value.is_empty() || value == "." || value == ".." {
        let shown: String = value.chars().take(80).flat_map(char::escape_debug).collect();
        return Err(TargetError::Invalid(format!("`{shown}` cannot be part of an API request path").into()));
    }
    Ok(utf8_percent_encode(value, SEGMENT).to_string())
}

/// `/api/v1` or `/apis/<group>/<version>`.
fn group_path(group: &str, version: &str) -> Result<String, TargetError> {
    Ok(if group.is_empty() {
        format!("/api/{}", segment(version)?)
    } else {
        format!("/apis/{}/{}", segment(group)?, segment(version)?)
    })
}

/// `/apis/apps/v1/namespaces/web/deployments`, every segment encoded.
fn collection_path(resource: &Resource, namespace: Option<&str>) -> Result<String, TargetError> {
    let mut path = group_path(&resource.group, &resource.version)?;
    if let Some(namespace) = namespace {
        path.push_str("/namespaces/");
        path.push_str(&segment(namespace)?);
    }
    path.push('/');
    path.push_str(&segment(&resource.plural)?);
    Ok(path)
}

fn inventory_name(cluster: &str) -> String {
    format!("{INVENTORY_PREFIX}{cluster}")
}

fn core(kind: &str, plural: &str, namespaced: bool) -> Resource {
    Resource {
        api_version: "v1".into(),
        group: String::new(),
        version: "v1".into(),
        kind: kind.into(),
        plural: plural.into(),
        namespaced,
    }
}

impl Target for KubeTarget {
    async fn resource(&self, api_version: &str, kind: &str) -> Result<Option<Resource>, TargetError> {
        let Some(resources) = self.resources(api_version).await? else { return Ok(None) };
        let Some(found) = resources.iter().find(|r| r.kind == kind) else { return Ok(None) };
        let (group, version) = match api_version.rsplit_once('/') {
            Some((g, v)) => (g.to_string(), v.to_string()),
            None => (String::new(), api_version.to_string()),
        };
        Ok(Some(Resource {
            api_version: api_version.to_string(),
            group,
            version,
            kind: kind.to_string(),
            plural: found.name.clone(),
            namespaced: found.namespaced,
        }))
    }

    fn refresh_discovery(&self) {
        self.discovery.lock().expect("discovery lock").clear();
    }

    async fn get(
        &self,
        resource: &Resource,
        namespace: Option<&str>,
        name: &str,
    ) -> Result<Option<Value>, TargetError> {
        match self.send(self.request(resource, namespace)?.get(&segment(name)?, &GetParams::default())).await? {
            Ok(object) => Ok(Some(object)),
            Err(kube::Error::Api(status)) if status.code == 404 => Ok(None),
            Err(e) => Err(classify(e)),
        }
    }

    async fn list(&self, resource: &Resource, namespace: Option<&str>) -> Result<Vec<Value>, TargetError> {
        let mut list =
            self.send(self.request(resource, namespace)?.list(&ListParams::default())).await?.map_err(classify)?;
        let items = match list.get_mut("items").map(Value::take) {
            Some(Value::Array(items)) => items,
            _ => Vec::new(),
        };
        // List items carry no apiVersion/kind of their own; give them theirs, as get would.
        Ok(items
            .into_iter()
            .map(|mut item| {
                item["apiVersion"] = Value::String(resource.api_version.clone());
                item["kind"] = Value::String(resource.kind.clone());
                item
            })
            .collect())
    }

    async fn apply(
        &self,
        resource: &Resource,
        manifest: &Value,
        dry_run: bool,
        force: bool,
    ) -> Result<Value, TargetError> {
        self.patch(resource, manifest, dry_run, force).await?.map_err(classify)
    }

    async fn delete(&self, resource: &Resource, namespace: Option<&str>, name: &str) -> Result<(), TargetError> {
        match self.send(self.request(resource, namespace)?.delete(&segment(name)?, &DeleteParams::background())).await?
        {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(status)) if status.code == 404 => Ok(()),
            Err(e) => Err(classify(e)),
        }
    }

    async fn read_inventory(&self, cluster: &str) -> Result<Option<Inventory>, TargetError> {
        let configmaps = core("ConfigMap", "configmaps", true);
        let Some(cm) = self.get(&configmaps, Some(INVENTORY_NAMESPACE), &inventory_name(cluster)).await? else {
            return Ok(None);
        };
        // Its namespace exists: writing the inventory needs no apply of it.
        self.inventory_namespace.store(true, Ordering::Relaxed);
        let text = cm["data"][INVENTORY_KEY].as_str().unwrap_or("{}");
        serde_json::from_str(text).map(Some).map_err(|e| {
            let message = format!("inventory {INVENTORY_NAMESPACE}/{} is corrupt: {e}", inventory_name(cluster));
            TargetError::Failed(Said::caused(message, e))
        })
    }

    async fn write_inventory(&self, inventory: &Inventory) -> Result<(), TargetError> {
        let labels = json!({ LABEL_MANAGED_BY: FIELD_MANAGER, LABEL_CLUSTER: inventory.cluster });
        let configmap = json!({
            "apiVersion": "v1", "kind": "ConfigMap",
            "metadata": { "name": inventory_name(&inventory.cluster), "namespace": INVENTORY_NAMESPACE, "labels": labels },
            "data": { INVENTORY_KEY: serde_json::to_string(inventory).expect("inventories serialise") },
        });
        let configmaps = core("ConfigMap", "configmaps", true);
        if self.inventory_namespace.load(Ordering::Relaxed) {
            match self.patch(&configmaps, &configmap, false, true).await? {
                // Someone deleted the namespace since: make it again.
                Err(kube::Error::Api(status)) if status.code == 404 => {}
                done => return done.map(drop).map_err(classify),
            }
        }
        let namespace = json!({
            "apiVersion": "v1", "kind": "Namespace",
            "metadata": { "name": INVENTORY_NAMESPACE, "labels": { LABEL_MANAGED_BY: FIELD_MANAGER } },
        });
        self.apply(&core("Namespace", "namespaces", false), &namespace, false, true).await?;
        self.inventory_namespace.store(true, Ordering::Relaxed);
        self.apply(&configmaps, &configmap, false, true).await?;
        Ok(())
    }

    fn reports_health(&self) -> bool {
        true
    }

    fn watch(&self, cluster: &str, kinds: Vec<(Resource, BTreeSet<String>)>, recent: bool) -> Option<Watch> {
        let (tx, rx) = mpsc::channel(WATCH_BUFFER);
        let selector = format!("{LABEL_MANAGED_BY}={FIELD_MANAGER},{LABEL_CLUSTER}={cluster}");
        let tasks = kinds
            .into_iter()
            .map(|(resource, namespaces)| {
                let kind = KindWatch {
                    client: self.watches.clone(),
                    resource,
                    selector: selector.clone(),
                    recent,
                    tx: tx.clone(),
                };
                tokio::spawn(kind.run(namespaces)).abort_handle()
            })
            .collect();
        Some(Watch::new(rx, tasks))
    }
}

/// Events a watch may have in hand before the one reading them catches up; past that the watch
/// waits (and the API server buffers), nothing is dropped.
const WATCH_BUFFER: usize = 256;

/// How long one watch request runs before the server ends it and it resumes from the last
/// resourceVersion seen (kube-apiserver sends a bookmark about once a minute meanwhile); kube's
/// watcher allows less than 295 s.
const WATCH_SECONDS: u32 = 290;

/// Every object of one kind labelled as one cluster's.
struct KindWatch {
    client: Client,
    resource: Resource,
    selector: String,
    recent: bool,
    tx: mpsc::Sender<Observed>,
}

/// Why a watch stopped.
#[derive(PartialEq)]
enum Stopped {
    /// Nobody reads its events any more.
    Unread,
    /// The credentials may not list or watch across namespaces.
    Forbidden,
}

impl KindWatch {
    /// One watch across namespaces; where that is forbidden and the kind is namespaced, one per
    /// namespace strata applies it to (what a namespace-scoped role allows).
    async fn run(self, namespaces: BTreeSet<String>) {
        let api = self.api_resource();
        let everywhere = Api::<DynamicObject>::all_with(self.client.clone(), &api);
        if self.follow(everywhere, None).await == Stopped::Forbidden && self.resource.namespaced {
            let each = namespaces
                .iter()
                .map(|ns| self.follow(Api::namespaced_with(self.client.clone(), ns, &api), Some(ns.clone())));
            futures::future::join_all(each).await;
        }
    }

    fn api_resource(&self) -> ApiResource {
        let r = &self.resource;
        ApiResource {
            group: r.group.clone(),
            version: r.version.clone(),
            api_version: r.api_version.clone(),
            kind: r.kind.clone(),
            plural: r.plural.clone(),
        }
    }

    /// Passes on what kube's watcher sees (it resumes from the last resourceVersion, lists
    /// again after 410 Gone, and backs off on errors) until nobody reads it.
    async fn follow(&self, api: Api<DynamicObject>, namespace: Option<String>) -> Stopped {
        let mut config = watcher::Config::default().labels(&self.selector).timeout(WATCH_SECONDS);
        if !self.recent {
            // A list from the server's watch cache: what changed since arrives as events anyway.
            config = config.any_semantic();
        }
        let stream = watcher::watcher(api, config).default_backoff();
        let mut stream = std::pin::pin!(stream);
        let mut listing: Option<HashSet<ObjectId>> = None;
        let mut forbidden_only = true;
        while let Some(event) = stream.next().await {
            let observed = match event {
                Ok(watcher::Event::Init) => {
                    listing = Some(HashSet::new());
                    continue;
                }
                Ok(watcher::Event::InitApply(object)) => {
                    let (id, live) = self.observed(object);
                    listing.get_or_insert_with(HashSet::new).insert(id.clone());
                    Observed::Object { id, live: Some(live) }
                }
                Ok(watcher::Event::InitDone) => Observed::Listed {
                    group: self.resource.group.clone(),
                    kind: self.resource.kind.clone(),
                    namespace: namespace.clone(),
                    present: listing.take().unwrap_or_default(),
                },
                Ok(watcher::Event::Apply(object)) => {
                    let (id, live) = self.observed(object);
                    Observed::Object { id, live: Some(live) }
                }
                Ok(watcher::Event::Delete(object)) => Observed::Object { id: self.observed(object).0, live: None },
                Err(e) => {
                    let forbidden = matches!(
                        &e,
                        watcher::Error::InitialListFailed(kube::Error::Api(s))
                            | watcher::Error::WatchStartFailed(kube::Error::Api(s))
                            if s.code == 403
                    );
                    if forbidden && forbidden_only && namespace.is_none() {
                        return Stopped::Forbidden;
                    }
                    forbidden_only &= forbidden;
                    if matches!(&e, watcher::Error::WatchError(s) if s.code == 410) {
                        tracing::debug!(kind = %self.resource.kind, "Watch history gone (410); listing again.");
                    } else {
                        tracing::warn!(kind = %self.resource.kind, error = %e, "Watch interrupted; resuming with backoff.");
                    }
                    continue;
                }
            };
            forbidden_only = false;
            if self.tx.send(observed).await.is_err() {
                return Stopped::Unread;
            }
        }
        Stopped::Unread
    }

    /// The object as JSON with its apiVersion and kind (list items come without them).
    fn observed(&self, object: DynamicObject) -> (ObjectId, Value) {
        let namespace = if self.resource.namespaced { object.metadata.namespace.clone() } else { None };
        let name = object.metadata.name.clone().unwrap_or_default();
        let id = ObjectId::new(&self.resource.api_version, &self.resource.kind, namespace.as_deref(), &name);
        let mut live = serde_json::to_value(object).unwrap_or(Value::Null);
        live["apiVersion"] = Value::String(self.resource.api_version.clone());
        live["kind"] = Value::String(self.resource.kind.clone());
        (id, live)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn configmaps() -> Resource {
        core("ConfigMap", "configmaps", true)
    }

    #[test]
    fn every_path_segment_is_encoded() {
        let path = collection_path(&configmaps(), Some("a/../b")).unwrap();
        assert_eq!(path, "/api/v1/namespaces/a%2F..%2Fb/configmaps");
        let request = Request::new(path).get(&segment("x?watch=1#y z%").unwrap(), &GetParams::default()).unwrap();
        assert_eq!(request.uri().path(), "/api/v1/namespaces/a%2F..%2Fb/configmaps/x%3Fwatch%3D1%23y%20z%25");
        let crd = Resource {
            api_version: "ex/ample.com/v1".into(),
            group: "ex/ample.com".into(),
            version: "v1".into(),
            kind: "W".into(),
            plural: "wid gets".into(),
            namespaced: false,
        };
        assert_eq!(collection_path(&crd, None).unwrap(), "/apis/ex%2Fample.com/v1/wid%20gets");
        assert_eq!(group_path("", "ü").unwrap(), "/api/%C3%BC");
    }

    #[test]
    fn dot_segments_are_refused() {
        for bad in ["", ".", ".."] {
            assert!(matches!(segment(bad), Err(TargetError::Invalid(_))), "{bad:?}");
            assert!(collection_path(&configmaps(), Some(bad)).is_err());
        }
        assert_eq!(segment("...").unwrap(), "...");
    }

    fn answered(code: u16, message: &str, reason: &str) -> kube::Error {
        let status = kube::core::Status { code, message: message.into(), reason: reason.into(), ..Default::default() };
        kube::Error::Api(Box::new(status))
    }

    #[test]
    fn the_api_servers_status_codes_sort_as_the_management_cluster_sorted_them() {
        let cases = [
            (409, FailureKind::Conflict, "conflict"),
            (404, FailureKind::Missing, "missing"),
            (401, FailureKind::Forbidden, "forbidden"),
            (403, FailureKind::Forbidden, "forbidden"),
            (400, FailureKind::Rejected, "rejected"),
            (422, FailureKind::Rejected, "rejected"),
            (429, FailureKind::Unreachable, "unreachable"),
            (500, FailureKind::Unreachable, "unreachable"),
            (503, FailureKind::Unreachable, "unreachable"),
            (407, FailureKind::Unreachable, "unreachable"),
            (410, FailureKind::Other, "other"),
            (301, FailureKind::Other, "other"),
        ];
        for (code, kind, label) in cases {
            let sorted = Classified::of(&answered(code, "it says", "Reason"));
            assert_eq!(sorted, Classified { kind, status: Some(code), said: "it says".into() }, "{code}");
            assert_eq!(sorted.kind.as_str(), label);
        }
        // No message: the reason is what was said.
        assert_eq!(Classified::of(&answered(403, "", "Forbidden")).said, "Forbidden");
        assert!(Classified::of(&answered(407, "", "")).hint().contains("proxy.password_file"));
        assert_eq!(Classified::of(&answered(403, "no", "")).hint(), "");
    }

    #[test]
    fn a_request_that_reached_no_server_is_unreachable_and_anything_else_other() {
        let refused = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "connection refused");
        let sorted = Classified::of(&kube::Error::Service(Box::new(refused)));
        assert_eq!((sorted.kind, sorted.status), (FailureKind::Unreachable, None));
        assert!(sorted.said.contains("connection refused"), "{}", sorted.said);
        let odd = Classified::of(&kube::Error::LinesCodecMaxLineLengthExceeded);
        assert_eq!((odd.kind, odd.status), (FailureKind::Other, None));
        assert_eq!(odd.said, kube::Error::LinesCodecMaxLineLengthExceeded.to_string());
    }

    #[test]
    fn a_target_says_what_it_said_before_and_keeps_kubes_error_as_the_source() {
        let said = |code: u16| classify(answered(code, "it says", "")).to_string();
        assert_eq!(said(403), "forbidden: it says (check the target's credentials and RBAC)");
        assert_eq!(said(409), "conflict: it says");
        assert_eq!(said(422), "rejected: it says");
        assert_eq!(said(404), "API server answered 404: it says");
        // A server that answers 5xx answered: the object failed, the cluster is not unreachable.
        assert_eq!(said(500), "API server answered 500: it says");
        assert_eq!(classify(answered(500, "", "")).label(), "error");
        assert!(said(407).starts_with("cluster unreachable: the proxy requires authentication (407"));
        assert_eq!(classify(answered(409, "x", "")).label(), "conflict");
        assert_eq!(classify(answered(400, "x", "")).label(), "invalid");

        let refused = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "connection refused");
        let e = classify(kube::Error::Service(Box::new(refused)));
        assert!(matches!(e, TargetError::Unreachable(_)), "{e:?}");
        assert!(e.to_string().starts_with("cluster unreachable: "), "{e}");

        // The status the server sent is reachable from the error, for logs.
        let e = classify(answered(403, "it says", "Forbidden"));
        let source = std::error::Error::source(&e).expect("a source");
        let Some(kube::Error::Api(status)) = source.downcast_ref::<kube::Error>() else { panic!("{source:?}") };
        assert_eq!((status.code, status.reason.as_str()), (403, "Forbidden"));
    }
}
