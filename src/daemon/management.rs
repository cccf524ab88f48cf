//! The management cluster: the API server strata's replicas share in Kubernetes mode.
//!
//! ```text
//!   strata.yaml kubernetes: ──> Management { client, namespace, identity }, on a thread of its own
//!        ├── store::kube   ClusterState objects and the strata-state ConfigMap (watched; writes
//!        │                 carry the resourceVersion they were based on)
//!        ├── shards        shard Leases: acquire, renew, release, take over
//!        ├── secrets       Secrets labelled strata.dev/target ──> targets
//!        ├── the redaction key, in Secret strata-redaction-key
//!        └── http::auth  the session key, in Secret strata-session-key, and the sessions'
//!                        revocation record, ConfigMap strata-sessions
//! ```
//!
//! Everything that talks to it runs on its own runtime thread: Lease renewals never wait for the
//! daemon's event loop (which may be busy for a while), and the store's calls await their answer
//! from there ([`Management::run`]) without holding up the daemon's thread, which runs every
//! worker, the web server and the main loop. Only what happens once at start (connecting, the
//! shared keys) and the evaluation's blocking thread wait synchronously ([`Management::call`]).

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, ObjectMeta, PostParams};
use tracing::info;

use crate::config::{DEFAULT_NAMESPACE, KubernetesConfig, TargetConfig};
use crate::net::Network;
use crate::redact::Redactor;
use crate::target::kube::{Classified, FailureKind};

/// Where the service account's namespace is mounted in a pod.
const NAMESPACE_FILE: &str = "/var/run/secrets/kubernetes.io/serviceaccount/namespace";

/// The Secret holding the replicas' shared redaction key.
pub const KEY_SECRET: &str = "strata-redaction-key";

/// The Secret holding the key the replicas seal session cookies with ([`crate::daemon::http::session`]).
pub const SESSION_KEY_SECRET: &str = "strata-session-key";

/// The management connection of this process, once made: the web layer finds it here.
static CURRENT: std::sync::OnceLock<Arc<Management>> = std::sync::OnceLock::new();

/// How long connecting (building the client) may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);

/// Why the management cluster cannot be used at start.
#[derive(Debug, thiserror::Error)]
pub enum ManagementError {
    #[error("cannot connect to the management cluster (`kubernetes:` in {config}): {message}")]
    Connect { config: String, message: String },
    #[error("the {what} in Secret {namespace}/{secret}: {message}")]
    Key { what: &'static str, secret: &'static str, namespace: String, message: String },
}

/// A failure of a request to the management cluster, sorted for metrics and messages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    /// conflict, missing, forbidden, rejected, unreachable or other.
    pub kind: &'static str,
    pub message: String,
}

impl Failure {
    /// Sorted as targets sort their failures ([`Classified::of`]: one reading of what the API
    /// server said), worded for the management cluster.
    pub fn of(e: &kube::Error) -> Failure {
        let sorted = Classified::of(e);
        let message = match sorted.status {
            Some(code) => {
                let hint = match sorted.kind {
                    FailureKind::Forbidden => {
                        " (check the Role bound to strata's service account: deploy/kubernetes/rbac.yaml)"
                    }
                    _ => "",
                };
                format!("the API server answered {code}: {}{hint}", sorted.said)
            }
            None => sorted.said,
        };
        Failure { kind: sorted.kind.as_str(), message }
    }

    pub fn is(e: &kube::Error, code: u16) -> bool {
        matches!(e, kube::Error::Api(status) if status.code == code)
    }
}

pub struct Management {
    pub client: kube::Client,
    /// Where strata's objects live: state, Leases, cluster Secrets.
    pub namespace: String,
    /// This process among the replicas: the holder identity of its Leases.
    pub identity: String,
    runtime: tokio::runtime::Handle,
}

impl Management {
    /// Starts the thread that talks to the management cluster and connects (nothing is sent
    /// until the first request).
    pub fn connect(
        config: &KubernetesConfig,
        network: &Arc<Network>,
        file: &str,
    ) -> Result<Arc<Management>, ManagementError> {
        let connect_error = |message: String| ManagementError::Connect { config: file.to_string(), message };
        let runtime = io_thread().map_err(|e| connect_error(format!("cannot start its thread: {e}")))?;
        let namespace = config.namespace.clone().unwrap_or_else(|| match config.connection {
            TargetConfig::InCluster => std::fs::read_to_string(NAMESPACE_FILE)
                .map(|n| n.trim().to_string())
                .ok()
                .filter(|n| crate::names::is_dns1123_label(n))
                .unwrap_or_else(|| DEFAULT_NAMESPACE.to_string()),
            _ => DEFAULT_NAMESPACE.to_string(),
        });
        let (connection, network) = (config.connection.clone(), network.clone());
        let client =
            call(&runtime, CONNECT_TIMEOUT, async move { crate::target::kube::client(&connection, &network).await })
                .ok_or_else(|| connect_error(format!("no client within {}s", CONNECT_TIMEOUT.as_secs())))?
                .map_err(|e| connect_error(e.to_string()))?;
        let identity = identity();
        info!(namespace = %namespace, identity = %identity, "Kubernetes mode: state, Leases and cluster Secrets in the management cluster.");
        let management = Arc::new(Management { client, namespace, identity, runtime });
        let _ = CURRENT.set(management.clone());
        Ok(management)
    }

    /// The connection [`Management::connect`] made in this process, if any.
    pub fn current() -> Option<Arc<Management>> {
        CURRENT.get().cloned()
    }

    /// Runs `work` on the management thread.
    pub fn spawn<F>(&self, work: F) -> tokio::task::JoinHandle<F::Output>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        self.runtime.spawn(work)
    }

    /// Runs `work` on the management thread and waits for it, at most `limit` (then it is
    /// cancelled): `None` when it took too long. For async code on any runtime: the caller's
    /// thread goes on with its other tasks meanwhile. Dropped while waiting, the work still
    /// finishes (a write is not cut off halfway through its retries).
    pub async fn run<T: Send + 'static>(
        &self,
        limit: Duration,
        work: impl Future<Output = T> + Send + 'static,
    ) -> Option<T> {
        let task = self.runtime.spawn(async move { tokio::time::timeout(limit, work).await.ok() });
        task.await.ok().flatten()
    }

    /// Runs `work` on the management thread and waits for it, blocking the calling thread, at
    /// most `limit` (then it is cancelled): `None` when it took too long. Only where blocking is
    /// harmless: at start, before the daemon serves anything, and on blocking threads; async
    /// code uses [`Management::run`].
    pub fn call<T: Send + 'static>(
        &self,
        limit: Duration,
        work: impl Future<Output = T> + Send + 'static,
    ) -> Option<T> {
        call(&self.runtime, limit, work)
    }

    pub fn api<K>(&self) -> Api<K>
    where
        K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope>,
        <K as kube::Resource>::DynamicType: Default,
    {
        Api::namespaced(self.client.clone(), &self.namespace)
    }

    /// The redaction key all replicas share, so the markers in stored pending diffs and drift
    /// findings compare whichever replica wrote them: read from Secret `strata-redaction-key`,
    /// made (32 random bytes) by the first replica that finds none.
    pub fn redaction_key(&self) -> Result<Redactor, ManagementError> {
        Ok(Redactor::new(self.shared_key(KEY_SECRET, "redaction key")?))
    }

    /// The key all replicas seal session cookies with, so a session opened through one replica
    /// is good on all: Secret `strata-session-key`, made as the redaction key is.
    pub fn session_key(&self) -> Result<[u8; 32], ManagementError> {
        self.shared_key(SESSION_KEY_SECRET, "session key")
    }

    /// 32 bytes under key `key` of Secret `name`, made (random) by the first replica that finds
    /// none: create-if-absent, so all replicas end up with the first one made.
    fn shared_key(&self, name: &'static str, what: &'static str) -> Result<[u8; 32], ManagementError> {
        let secrets: Api<Secret> = self.api();
        let namespace = self.namespace.clone();
        let key_error =
            |message: String| ManagementError::Key { what, secret: name, namespace: namespace.clone(), message };
        let read = async move {
            for _ in 0..3 {
                if let Some(secret) = secrets.get_opt(name).await.map_err(|e| Failure::of(&e).message)? {
                    let bytes =
                        secret.data.as_ref().and_then(|d| d.get("key")).map(|b| b.0.clone()).unwrap_or_default();
                    return <[u8; 32]>::try_from(bytes.as_slice()).map_err(|_| {
                        format!(
                            "key `key` holds {} bytes, not 32; delete the Secret and strata makes a new one",
                            bytes.len()
                        )
                    });
                }
                let mut key = [0u8; 32];
                getrandom::fill(&mut key).map_err(|e| format!("the operating system's random source failed: {e}"))?;
                let secret = Secret {
                    metadata: ObjectMeta {
                        name: Some(name.into()),
                        labels: Some(BTreeMap::from([(
                            crate::render::object::LABEL_MANAGED_BY.to_string(),
                            crate::render::object::FIELD_MANAGER.to_string(),
                        )])),
                        ..ObjectMeta::default()
                    },
                    data: Some(BTreeMap::from([("key".to_string(), ByteString(key.to_vec()))])),
                    type_: Some("Opaque".into()),
                    ..Secret::default()
                };
                match secrets.create(&PostParams::default(), &secret).await {
                    Ok(_) => return Ok(key),
                    // Another replica made one first: use that.
                    Err(e) if Failure::is(&e, 409) => continue,
                    Err(e) => return Err(Failure::of(&e).message),
                }
            }
            Err("created and deleted again while being read; try again".to_string())
        };
        self.call(CONNECT_TIMEOUT, read)
            .ok_or_else(|| key_error(format!("no answer within {}s", CONNECT_TIMEOUT.as_secs())))?
            .map_err(key_error)
    }
}

impl Management {
    /// The age identities in Secret `name` of strata's namespace (`decryption.secret`): every
    /// data key ending in `.agekey`, as Flux's kustomize-controller reads its `sops-age` Secret.
    /// Errors name the Secret and the key, never a value.
    pub fn age_keys(&self, name: &str) -> Result<Vec<(String, zeroize::Zeroizing<String>)>, String> {
        let secrets: Api<Secret> = self.api();
        let shown = format!("Secret {}/{name}", self.namespace);
        let owned = name.to_string();
        let read = async move { secrets.get_opt(&owned).await.map_err(|e| Failure::of(&e).message) };
        let secret = self
            .call(CONNECT_TIMEOUT, read)
            .ok_or_else(|| format!("{shown}: no answer within {}s", CONNECT_TIMEOUT.as_secs()))?
            .map_err(|e| format!("{shown}: {e}"))?
            .ok_or_else(|| {
                format!("{shown} does not exist: create it with the age identity under a key ending in .agekey (kubectl create secret generic {name} --from-file=identity.agekey=age.key)")
            })?;
        let mut texts = Vec::new();
        for (key, value) in secret.data.unwrap_or_default() {
            if !key.ends_with(".agekey") {
                continue;
            }
            let text = String::from_utf8(value.0).map_err(|_| format!("{shown}: key `{key}` is not text"))?;
            texts.push((format!("{shown} key {key}"), zeroize::Zeroizing::new(text)));
        }
        if texts.is_empty() {
            return Err(format!(
                "{shown} has no key ending in .agekey: put the age identity under one (identity.agekey)"
            ));
        }
        Ok(texts)
    }
}

fn call<T: Send + 'static>(
    runtime: &tokio::runtime::Handle,
    limit: Duration,
    work: impl Future<Output = T> + Send + 'static,
) -> Option<T> {
    let (tx, rx) = std::sync::mpsc::sync_channel(1);
    let task = runtime.spawn(async move {
        let _ = tx.send(work.await);
    });
    match rx.recv_timeout(limit) {
        Ok(value) => Some(value),
        Err(_) => {
            task.abort();
            None
        }
    }
}

/// A current-thread runtime on a thread of its own, for as long as the process lives.
fn io_thread() -> std::io::Result<tokio::runtime::Handle> {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let handle = runtime.handle().clone();
    std::thread::Builder::new().name("kube-io".into()).spawn(move || {
        runtime.block_on(std::future::pending::<()>());
    })?;
    Ok(handle)
}

/// `<pod or host name>-<random>`: unique per process, so a restarted replica never takes its
/// predecessor's Leases for its own, and readable in `kubectl get leases`.
fn identity() -> String {
    let base = std::env::var("POD_NAME")
        .ok()
        .or_else(|| std::fs::read_to_string("/proc/sys/kernel/hostname").ok())
        .unwrap_or_else(|| "strata".into());
    let mut clean: String = base
        .trim()
        .to_ascii_lowercase()
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .take(40)
        .collect();
    clean = clean.trim_matches('-').to_string();
    if clean.is_empty() {
        clean = "strata".into();
    }
    format!("{clean}-{:06x}", fastrand::u32(..0x100_0000))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identities_are_label_safe_and_unique_per_process() {
        let a = identity();
        assert!(crate::names::is_dns1123_label(&a), "{a}");
        assert_ne!(a, identity());
    }

    #[test]
    fn calls_run_on_the_thread_and_time_out() {
        let runtime = io_thread().unwrap();
        assert_eq!(call(&runtime, Duration::from_secs(5), async { 7 }), Some(7));
        let slow = call(&runtime, Duration::from_millis(50), async {
            tokio::time::sleep(Duration::from_secs(60)).await;
        });
        assert_eq!(slow, None);
    }
}
