//! A Kubernetes cluster through its API server: discovery (cached per cluster), server-side
//! apply as field manager `strata`, server-side dry-run, delete, and the inventory ConfigMap.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::APIResource;
use kube::api::{ApiResource, DeleteParams, DynamicObject, GetParams, ListParams, Patch, PatchParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::core::{Request, Resource as _};
use kube::{Client, Config};
use serde_json::{Value, json};

use super::{Resource, Target, TargetError};
use crate::apply::inventory::{INVENTORY_KEY, INVENTORY_NAMESPACE, INVENTORY_PREFIX, Inventory};
use crate::render::object::{FIELD_MANAGER, LABEL_CLUSTER, LABEL_MANAGED_BY};

pub struct KubeTarget {
    client: Client,
    /// apiVersion → the resources it serves (subresources left out).
    discovery: Mutex<HashMap<String, Arc<Vec<APIResource>>>>,
}

/// Connect and read timeouts: an unreachable cluster fails fast instead of stalling a worker.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
const READ_TIMEOUT: Duration = Duration::from_secs(30);
/// The most one request may take in all: a server that answers a byte at a time never trips the
/// read timeout, which restarts with every read.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);

/// `request`, or `Unreachable` when it takes longer than [`REQUEST_TIMEOUT`].
async fn bounded<T>(
    request: impl Future<Output = Result<T, kube::Error>>,
) -> Result<Result<T, kube::Error>, TargetError> {
    tokio::time::timeout(REQUEST_TIMEOUT, request)
        .await
        .map_err(|_| TargetError::Unreachable(format!("no answer within {}s", REQUEST_TIMEOUT.as_secs())))
}

fn config_error(what: &str, e: impl std::fmt::Display) -> TargetError {
    TargetError::Other(format!("{what}: {e}"))
}

impl KubeTarget {
    /// A target from a kubeconfig file and (optionally) one of its contexts.
    pub async fn from_kubeconfig(path: &Path, context: Option<&str>) -> Result<Self, TargetError> {
        let kubeconfig =
            Kubeconfig::read_from(path).map_err(|e| config_error(&format!("kubeconfig {}", path.display()), e))?;
        let options = KubeConfigOptions { context: context.map(str::to_string), cluster: None, user: None };
        let config = Config::from_custom_kubeconfig(kubeconfig, &options).await.map_err(|e| {
            config_error(&format!("kubeconfig {} context {}", path.display(), context.unwrap_or("(current)")), e)
        })?;
        Self::from_config(config)
    }

    /// The cluster strata runs in, through its service account.
    pub fn in_cluster() -> Result<Self, TargetError> {
        Self::from_config(Config::incluster().map_err(|e| config_error("in-cluster config", e))?)
    }

    pub fn from_config(mut config: Config) -> Result<Self, TargetError> {
        config.connect_timeout = Some(CONNECT_TIMEOUT);
        config.read_timeout = Some(READ_TIMEOUT);
        let client = Client::try_from(config).map_err(|e| config_error("client", e))?;
        Ok(Self::from_client(client))
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
    ) -> Result<Result<Value, kube::Error>, TargetError> {
        match request {
            Ok(request) => bounded(self.client.request::<Value>(request)).await,
            Err(e) => Ok(Err(kube::Error::BuildRequest(e))),
        }
    }

    async fn resources(&self, api_version: &str) -> Result<Option<Arc<Vec<APIResource>>>, TargetError> {
        if let Some(hit) = self.discovery.lock().expect("discovery lock").get(api_version) {
            return Ok(Some(hit.clone()));
        }
        let listed = if api_version.contains('/') {
            bounded(self.client.list_api_group_resources(api_version)).await?
        } else {
            bounded(self.client.list_core_api_resources(api_version)).await?
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
                code => TargetError::Other(format!("API server answered {code}: {message}")),
            }
        }
        kube::Error::HyperError(e) => TargetError::Unreachable(e.to_string()),
        kube::Error::Service(e) => TargetError::Unreachable(error_chain(e.as_ref())),
        other => TargetError::Other(other.to_string()),
    }
}

fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = s.source();
    }
    out
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
        match self.send(self.request(resource, namespace).get(name, &GetParams::default())).await? {
            Ok(object) => Ok(Some(object)),
            Err(kube::Error::Api(status)) if status.code == 404 => Ok(None),
            Err(e) => Err(classify(e)),
        }
    }

    async fn list(&self, resource: &Resource, namespace: Option<&str>) -> Result<Vec<Value>, TargetError> {
        let mut list =
            self.send(self.request(resource, namespace).list(&ListParams::default())).await?.map_err(classify)?;
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
            .await?
            .map_err(classify)
    }

    async fn delete(&self, resource: &Resource, namespace: Option<&str>, name: &str) -> Result<(), TargetError> {
        match self.send(self.request(resource, namespace).delete(name, &DeleteParams::background())).await? {
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
