//! A Kubernetes cluster through its API server: discovery (cached per cluster), server-side
//! apply as field manager `strata`, server-side dry-run, delete, and the inventory ConfigMap.
//!
//! Connections go through strata's one connector ([`crate::net`]) under kube's request stack
//! (base URI, credentials, impersonation headers, retries): the kubeconfig's CA, client
//! certificate, `tls-server-name` and `insecure-skip-tls-verify` as kubectl reads them; its
//! `proxy-url`, else the host's proxy (`proxy:` or HTTPS_PROXY/NO_PROXY, as kubectl honours them).

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::APIResource;
use kube::api::{ApiResource, DeleteParams, DynamicObject, GetParams, ListParams, Patch, PatchParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::core::{Request, Resource as _};
use kube::{Client, Config};
use serde_json::{Value, json};

use super::{Resource, Target, TargetError};
use crate::apply::inventory::{INVENTORY_KEY, INVENTORY_NAMESPACE, INVENTORY_PREFIX, Inventory};
use crate::net::proxy::{Router, Source};
use crate::net::{Network, Settings, Timeouts};
use crate::render::object::{FIELD_MANAGER, LABEL_CLUSTER, LABEL_MANAGED_BY};

pub struct KubeTarget {
    client: Client,
    /// apiVersion → the resources it serves (subresources left out).
    discovery: Mutex<HashMap<String, Arc<Vec<APIResource>>>>,
}

fn config_error(what: &str, e: impl std::fmt::Display) -> TargetError {
    TargetError::Other(format!("{what}: {e}"))
}

/// The `proxy-url` of the cluster the chosen context points at.
fn kubeconfig_proxy(kubeconfig: &Kubeconfig, context: Option<&str>) -> Option<String> {
    let context = context.map(str::to_string).or_else(|| kubeconfig.current_context.clone())?;
    let cluster = &kubeconfig.contexts.iter().find(|c| c.name == context)?.context.as_ref()?.cluster;
    let named = kubeconfig.clusters.iter().find(|c| &c.name == cluster)?;
    named.cluster.as_ref()?.proxy_url.clone().filter(|url| !url.is_empty())
}

impl KubeTarget {
    /// A target from a kubeconfig file and (optionally) one of its contexts.
    pub async fn from_kubeconfig(path: &Path, context: Option<&str>, network: &Network) -> Result<Self, TargetError> {
        let file = path.display().to_string();
        let kubeconfig = Kubeconfig::read_from(path).map_err(|e| config_error(&format!("kubeconfig {file}"), e))?;
        let proxy = kubeconfig_proxy(&kubeconfig, context);
        let options = KubeConfigOptions { context: context.map(str::to_string), cluster: None, user: None };
        let config = Config::from_custom_kubeconfig(kubeconfig, &options)
            .await
            .map_err(|e| config_error(&format!("kubeconfig {file} context {}", context.unwrap_or("(current)")), e))?;
        // kubectl: a cluster's proxy-url replaces the environment's proxy, NO_PROXY included.
        let router = match proxy {
            Some(url) => Arc::new(
                Router::fixed(&url, Source::Kubeconfig(file.clone())).map_err(|e| config_error("kubeconfig", e))?,
            ),
            None => network.router().clone(),
        };
        Self::from_config(config, network, router, Settings::kubeconfig(&file))
    }

    /// The cluster strata runs in, through its service account.
    pub fn in_cluster(network: &Network) -> Result<Self, TargetError> {
        let config = Config::incluster().map_err(|e| config_error("in-cluster config", e))?;
        Self::from_config(config, network, network.router().clone(), Settings::in_cluster())
    }

    /// A client for `config` on strata's connector: the kubeconfig's trust and identity, with a
    /// verifier that names the certificate it refuses.
    pub fn from_config(
        config: Config,
        network: &Network,
        router: Arc<Router>,
        settings: Settings,
    ) -> Result<Self, TargetError> {
        use kube::client::ConfigExt;
        let tls_error = |e: &dyn std::fmt::Display| config_error(&settings.ca, e);
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
            .map_err(|e| tls_error(&e))?;
            rustls.dangerous().set_certificate_verifier(recorder.clone());
            Some(recorder)
        };
        rustls.alpn_protocols = vec![b"http/1.1".to_vec()];
        let auth = &config.auth_info;
        let tls = crate::net::connect::Tls {
            connector: tokio_rustls::TlsConnector::from(Arc::new(rustls)),
            recorder,
            server_name: config.tls_server_name.clone(),
            client_cert: auth.client_certificate.is_some() || auth.client_certificate_data.is_some(),
        };
        let proxy = router.clone();
        let connector = crate::net::connect::Connector::new(router, Some(tls), settings, Timeouts::KUBE);
        let http = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
            .build::<_, kube::client::Body>(connector);
        let retry = config
            .default_retry
            .then(|| tower::retry::RetryLayer::new(kube::client::retry::RetryPolicy::server_retry()));
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
        Ok(Self::from_client(Client::new(service, config.default_namespace)))
    }

    pub fn from_client(client: Client) -> Self {
        KubeTarget { client, discovery: Mutex::new(HashMap::new()) }
    }

    /// Requests for a resource (in a namespace, for namespaced ones). Responses are decoded
    /// straight into JSON values: strata never needs typed objects, and skipping them saves
    /// much of the CPU spent per request.
    fn request(&self, resource: &Resource, namespace: Option<&str>) -> Request {
        let ar = ApiResource {
            group: resource.group.clone(),
            version: resource.version.clone(),
            api_version: resource.api_version.clone(),
            kind: resource.kind.clone(),
            plural: resource.plural.clone(),
        };
        let namespace = if resource.namespaced { namespace } else { None };
        Request::new(DynamicObject::url_path(&ar, namespace))
    }

    async fn send(
        &self,
        request: Result<http::Request<Vec<u8>>, kube::core::request::Error>,
    ) -> Result<Value, kube::Error> {
        let request = request.map_err(kube::Error::BuildRequest)?;
        self.client.request::<Value>(request).await
    }

    async fn resources(&self, api_version: &str) -> Result<Option<Arc<Vec<APIResource>>>, TargetError> {
        if let Some(hit) = self.discovery.lock().expect("discovery lock").get(api_version) {
            return Ok(Some(hit.clone()));
        }
        let listed = if api_version.contains('/') {
            self.client.list_api_group_resources(api_version).await
        } else {
            self.client.list_core_api_resources(api_version).await
        };
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

/// Sorts a kube error into what strata does about it.
fn classify(e: kube::Error) -> TargetError {
    match e {
        kube::Error::Api(status) => {
            let message = if status.message.is_empty() { status.reason.clone() } else { status.message.clone() };
            match status.code {
                401 | 403 => TargetError::Forbidden(message),
                409 => TargetError::Conflict(message),
                400 | 422 => TargetError::Invalid(message),
                // Only a proxy answers 407 (plain HTTP goes through it in absolute form).
                407 => TargetError::Unreachable(
                    "the proxy requires authentication (407 Proxy Authentication Required); check the user:password in the kubeconfig's proxy-url, proxy.username and proxy.password_file, or HTTP_PROXY"
                        .into(),
                ),
                code => TargetError::Other(format!("API server answered {code}: {message}")),
            }
        }
        // strata's connector explains its failures (step, host, the kubeconfig setting to check).
        kube::Error::HyperError(e) => TargetError::Unreachable(crate::net::failure_of(&e).to_string()),
        kube::Error::Service(e) => TargetError::Unreachable(crate::net::failure_of(e.as_ref()).to_string()),
        other => TargetError::Other(other.to_string()),
    }
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
        match self.send(self.request(resource, namespace).get(name, &GetParams::default())).await {
            Ok(object) => Ok(Some(object)),
            Err(kube::Error::Api(status)) if status.code == 404 => Ok(None),
            Err(e) => Err(classify(e)),
        }
    }

    async fn list(&self, resource: &Resource, namespace: Option<&str>) -> Result<Vec<Value>, TargetError> {
        let mut list =
            self.send(self.request(resource, namespace).list(&ListParams::default())).await.map_err(classify)?;
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
        let name = manifest["metadata"]["name"].as_str().unwrap_or_default();
        let namespace = manifest["metadata"]["namespace"].as_str();
        let mut params = PatchParams::apply(FIELD_MANAGER);
        if force {
            params = params.force();
        }
        if dry_run {
            params = params.dry_run();
        }
        self.send(self.request(resource, namespace).patch(name, &params, &Patch::Apply(manifest)))
            .await
            .map_err(classify)
    }

    async fn delete(&self, resource: &Resource, namespace: Option<&str>, name: &str) -> Result<(), TargetError> {
        match self.send(self.request(resource, namespace).delete(name, &DeleteParams::background())).await {
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
        let text = cm["data"][INVENTORY_KEY].as_str().unwrap_or("{}");
        serde_json::from_str(text).map(Some).map_err(|e| {
            TargetError::Other(format!("inventory {INVENTORY_NAMESPACE}/{} is corrupt: {e}", inventory_name(cluster)))
        })
    }

    async fn write_inventory(&self, inventory: &Inventory) -> Result<(), TargetError> {
        let labels = json!({ LABEL_MANAGED_BY: FIELD_MANAGER, LABEL_CLUSTER: inventory.cluster });
        let namespace = json!({
            "apiVersion": "v1", "kind": "Namespace",
            "metadata": { "name": INVENTORY_NAMESPACE, "labels": { LABEL_MANAGED_BY: FIELD_MANAGER } },
        });
        self.apply(&core("Namespace", "namespaces", false), &namespace, false, true).await?;
        let configmap = json!({
            "apiVersion": "v1", "kind": "ConfigMap",
            "metadata": { "name": inventory_name(&inventory.cluster), "namespace": INVENTORY_NAMESPACE, "labels": labels },
            "data": { INVENTORY_KEY: serde_json::to_string(inventory).expect("inventories serialise") },
        });
        self.apply(&core("ConfigMap", "configmaps", true), &configmap, false, true).await?;
        Ok(())
    }

    fn reports_health(&self) -> bool {
        true
    }
}
