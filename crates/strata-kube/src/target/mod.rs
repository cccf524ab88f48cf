//! Targets: how strata reaches a cluster. The IO edge of apply.
//!
//! ```text
//!   strata.yaml (host)            Target
//!   targets:                      ├── KubeTarget       kubeconfig + context, or in-cluster:
//!     aws-cluster: {kubeconfig}   │                    discovery, server-side apply, dry-run
//!     lab: {directory}            └── DirectoryTarget  one file per object, read back as "live"
//!   cluster Secrets (Kubernetes mode, [`secret`]): a kubeconfig, or Argo CD's server + config
//! ```
//!
//! The repository never chooses credentials: a cluster file names a target, the host config maps
//! the name. The reconciler in [`crate::apply`] is written against the [`Target`] trait only.

pub mod directory;
pub mod inventory;
pub mod kube;
pub mod secret;

use std::collections::{BTreeSet, HashSet};
use std::fmt;
use std::future::Future;
use std::path::PathBuf;

use serde_json::Value;
use tokio::sync::mpsc;

use crate::render::object::ObjectId;
use crate::target::inventory::Inventory;

/// How the host configuration reaches one target cluster (`targets:` in strata.yaml).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TargetConfig {
    Kubeconfig {
        path: PathBuf,
        context: Option<String>,
    },
    InCluster,
    Directory(PathBuf),
    /// A cluster Secret in the management cluster (Kubernetes mode), as it was last read.
    Secret(std::sync::Arc<secret::ClusterSecret>),
}

/// A resolved kind: what discovery says about it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Resource {
    pub api_version: String,
    pub group: String,
    pub version: String,
    pub kind: String,
    pub plural: String,
    pub namespaced: bool,
}

/// What went wrong talking to a target, sorted by what strata does about it (the reconciler
/// stops at `Unreachable`, takes fields over at `Conflict`). The text is what users read; the
/// error it came from (kube's, the file system's) stays reachable through
/// [`std::error::Error::source`] for logs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TargetError {
    /// The API server could not be reached (connection refused, timeout, TLS).
    Unreachable(Said),
    /// A field manager conflict (server-side apply without force).
    Conflict(Said),
    /// The server refused the object (validation, admission).
    Invalid(Said),
    /// Credentials were refused.
    Forbidden(Said),
    /// strata's own account of a failure, with no lower error under it.
    Other(String),
    /// A lower layer failed (the file system, the kube client, a kubeconfig) in a way strata
    /// does not sort further: shown and counted as [`TargetError::Other`], its cause kept.
    Failed(Said),
}

/// A message, and the error it was made from when there is one. Two are equal when they say the
/// same: the cause is for logs, and errors are compared in tests by what users see.
#[derive(Clone, Debug)]
pub struct Said {
    message: String,
    cause: Option<std::sync::Arc<dyn std::error::Error + Send + Sync + 'static>>,
}

impl Said {
    /// `message`, made from `cause`.
    pub fn caused(message: impl Into<String>, cause: impl std::error::Error + Send + Sync + 'static) -> Said {
        Said { message: message.into(), cause: Some(std::sync::Arc::new(cause)) }
    }

    pub fn message(&self) -> &str {
        &self.message
    }
}

impl From<String> for Said {
    fn from(message: String) -> Said {
        Said { message, cause: None }
    }
}

impl From<&str> for Said {
    fn from(message: &str) -> Said {
        Said::from(message.to_string())
    }
}

impl PartialEq for Said {
    fn eq(&self, other: &Said) -> bool {
        self.message == other.message
    }
}

impl Eq for Said {}

impl fmt::Display for Said {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl TargetError {
    /// A short label for metrics and results.
    pub fn label(&self) -> &'static str {
        match self {
            TargetError::Unreachable(_) => "unreachable",
            TargetError::Conflict(_) => "conflict",
            TargetError::Invalid(_) => "invalid",
            TargetError::Forbidden(_) => "forbidden",
            TargetError::Other(_) | TargetError::Failed(_) => "error",
        }
    }
}

impl fmt::Display for TargetError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            // The message names the step that failed and the kubeconfig setting to check.
            TargetError::Unreachable(m) => write!(f, "cluster unreachable: {m}"),
            TargetError::Conflict(m) => write!(f, "conflict: {m}"),
            TargetError::Invalid(m) => write!(f, "rejected: {m}"),
            TargetError::Forbidden(m) => write!(f, "forbidden: {m} (check the target's credentials and RBAC)"),
            TargetError::Other(m) => f.write_str(m),
            TargetError::Failed(m) => m.fmt(f),
        }
    }
}

impl std::error::Error for TargetError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            TargetError::Unreachable(said)
            | TargetError::Conflict(said)
            | TargetError::Invalid(said)
            | TargetError::Forbidden(said)
            | TargetError::Failed(said) => said.cause.as_deref().map(|e| e as _),
            TargetError::Other(_) => None,
        }
    }
}

/// The operations apply, prune, health and drift need from a cluster.
pub trait Target: Sync {
    /// Discovery: the resource for a kind, `None` when the cluster does not serve it (yet).
    fn resource(
        &self,
        api_version: &str,
        kind: &str,
    ) -> impl Future<Output = Result<Option<Resource>, TargetError>> + Send;
    /// Forgets cached discovery (after CRDs are created).
    fn refresh_discovery(&self);
    fn get(
        &self,
        resource: &Resource,
        namespace: Option<&str>,
        name: &str,
    ) -> impl Future<Output = Result<Option<Value>, TargetError>> + Send;
    /// Every object of a resource in a namespace (or cluster-wide).
    fn list(
        &self,
        resource: &Resource,
        namespace: Option<&str>,
    ) -> impl Future<Output = Result<Vec<Value>, TargetError>> + Send;
    /// Server-side apply as field manager `strata`; `dry_run` validates without persisting.
    fn apply(
        &self,
        resource: &Resource,
        manifest: &Value,
        dry_run: bool,
        force: bool,
    ) -> impl Future<Output = Result<Value, TargetError>> + Send;
    /// Deletes an object; an object already gone is not an error.
    fn delete(
        &self,
        resource: &Resource,
        namespace: Option<&str>,
        name: &str,
    ) -> impl Future<Output = Result<(), TargetError>> + Send;
    fn read_inventory(&self, cluster: &str) -> impl Future<Output = Result<Option<Inventory>, TargetError>> + Send;
    fn write_inventory(&self, inventory: &Inventory) -> impl Future<Output = Result<(), TargetError>> + Send;
    /// Whether live objects carry status that health checks can read (not for directories).
    fn reports_health(&self) -> bool;
    /// Watches the objects of each kind labelled as `cluster`'s: every one as listed, then
    /// every change, resumed where it left off, listed again when the server no longer has
    /// that point. Across namespaces, or in the given ones where the credentials may not watch
    /// across them. `recent`: lists read the latest state (for health), not the server's cache.
    /// `None`: this target cannot watch (its caller polls).
    fn watch(&self, cluster: &str, kinds: Vec<(Resource, BTreeSet<String>)>, recent: bool) -> Option<Watch> {
        let _ = (cluster, kinds, recent);
        None
    }
}

/// What a watch saw.
#[derive(Debug)]
pub enum Observed {
    /// One of strata's objects as the cluster now has it; `None`: deleted.
    Object { id: ObjectId, live: Option<Value> },
    /// A (re)list of one kind (in one namespace, or all) completed with these objects: any other
    /// object of that kind strata applied there is gone.
    Listed { group: String, kind: String, namespace: Option<String>, present: HashSet<ObjectId> },
}

/// Running watches and what they see; dropping it stops them.
pub struct Watch {
    pub events: mpsc::Receiver<Observed>,
    tasks: Vec<tokio::task::AbortHandle>,
}

impl Watch {
    pub fn new(events: mpsc::Receiver<Observed>, tasks: Vec<tokio::task::AbortHandle>) -> Watch {
        Watch { events, tasks }
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

/// A target chosen at run time from the host config.
pub enum AnyTarget {
    Kube(Box<kube::KubeTarget>),
    Directory(directory::DirectoryTarget),
}

macro_rules! dispatch {
    ($self:ident, $t:ident => $e:expr) => {
        match $self {
            AnyTarget::Kube($t) => $e,
            AnyTarget::Directory($t) => $e,
        }
    };
}

impl Target for AnyTarget {
    async fn resource(&self, api_version: &str, kind: &str) -> Result<Option<Resource>, TargetError> {
        dispatch!(self, t => t.resource(api_version, kind).await)
    }
    fn refresh_discovery(&self) {
        dispatch!(self, t => t.refresh_discovery())
    }
    async fn get(
        &self,
        resource: &Resource,
        namespace: Option<&str>,
        name: &str,
    ) -> Result<Option<Value>, TargetError> {
        dispatch!(self, t => t.get(resource, namespace, name).await)
    }
    async fn list(&self, resource: &Resource, namespace: Option<&str>) -> Result<Vec<Value>, TargetError> {
        dispatch!(self, t => t.list(resource, namespace).await)
    }
    async fn apply(
        &self,
        resource: &Resource,
        manifest: &Value,
        dry_run: bool,
        force: bool,
    ) -> Result<Value, TargetError> {
        dispatch!(self, t => t.apply(resource, manifest, dry_run, force).await)
    }
    async fn delete(&self, resource: &Resource, namespace: Option<&str>, name: &str) -> Result<(), TargetError> {
        dispatch!(self, t => t.delete(resource, namespace, name).await)
    }
    async fn read_inventory(&self, cluster: &str) -> Result<Option<Inventory>, TargetError> {
        dispatch!(self, t => t.read_inventory(cluster).await)
    }
    async fn write_inventory(&self, inventory: &Inventory) -> Result<(), TargetError> {
        dispatch!(self, t => t.write_inventory(inventory).await)
    }
    fn reports_health(&self) -> bool {
        dispatch!(self, t => t.reports_health())
    }
    fn watch(&self, cluster: &str, kinds: Vec<(Resource, BTreeSet<String>)>, recent: bool) -> Option<Watch> {
        dispatch!(self, t => t.watch(cluster, kinds, recent))
    }
}

/// Connects to a configured target, through the host's proxy and trust material (`network`).
/// Nothing is sent until the first request.
pub async fn connect(config: &TargetConfig, network: &crate::net::Network) -> Result<AnyTarget, TargetError> {
    Ok(match config {
        TargetConfig::Directory(path) => AnyTarget::Directory(directory::DirectoryTarget::new(path)),
        cluster => AnyTarget::Kube(Box::new(kube::KubeTarget::connect(cluster, network).await?)),
    })
}
