//! Targets from cluster Secrets (Kubernetes mode): a watch of the Secrets labelled
//! `strata.dev/target` in strata's namespace keeps a registry the evaluation asks for targets the
//! host config does not name.
//!
//! ```text
//!   watch Secrets (label strata.dev/target) ──> parse (target::secret) ──> registry by target name
//!        added / changed / removed ──────────────────────────────────────> Trigger::Reevaluate
//!   evaluate: host config targets first, then the registry
//! ```
//!
//! A Secret that cannot be used is logged (naming the Secret and the key, never a value) and
//! makes its target's clusters fail to render with that message; two Secrets naming one target
//! are both refused until one goes.

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};

use futures::StreamExt;
use k8s_openapi::api::core::v1::Secret;
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, Event};
use tracing::{info, warn};

use super::management::Management;
use crate::config::TargetConfig;
use crate::target::secret::{self, TARGET_LABEL};

/// One labelled Secret as last seen.
struct Registered {
    target: String,
    parsed: Result<TargetConfig, String>,
}

/// Targets registered as Secrets, by Secret name.
#[derive(Default)]
pub struct ClusterSecrets {
    secrets: RwLock<BTreeMap<String, Registered>>,
    namespace: String,
}

impl ClusterSecrets {
    /// Starts watching; `changed` hears of every Secret added, changed or removed (once the first
    /// list is in, of that too).
    pub fn watch(mgmt: &Arc<Management>, changed: impl Fn(String) + Send + Sync + 'static) -> Arc<ClusterSecrets> {
        let registry = Arc::new(ClusterSecrets { secrets: RwLock::default(), namespace: mgmt.namespace.clone() });
        mgmt.spawn(registry.clone().run(mgmt.api(), changed));
        registry
    }

    /// The target `name` as the Secrets say: `None` when no Secret names it.
    pub fn target(&self, name: &str) -> Option<Result<TargetConfig, String>> {
        let secrets = self.secrets.read().unwrap_or_else(|p| p.into_inner());
        let mut naming = secrets.iter().filter(|(_, r)| r.target == name);
        let (first, registered) = naming.next()?;
        let others: Vec<&String> = naming.map(|(n, _)| n).collect();
        if !others.is_empty() {
            let all: Vec<String> =
                std::iter::once(first).chain(others).map(|n| format!("{}/{n}", self.namespace)).collect();
            return Some(Err(format!(
                "several Secrets register target `{name}` ({}): label only one of them {TARGET_LABEL}={name}",
                all.join(", ")
            )));
        }
        Some(registered.parsed.clone())
    }

    /// Where the Secrets are watched.
    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    /// The target names registered, for messages.
    pub fn names(&self) -> Vec<String> {
        let secrets = self.secrets.read().unwrap_or_else(|p| p.into_inner());
        let mut names: Vec<String> = secrets.values().map(|r| r.target.clone()).collect();
        names.dedup();
        names
    }

    fn register(&self, object: &Secret) -> Option<String> {
        let name = object.metadata.name.clone()?;
        let target = object.metadata.labels.as_ref()?.get(TARGET_LABEL)?.clone();
        let mut data: BTreeMap<String, Vec<u8>> =
            object.data.clone().unwrap_or_default().into_iter().map(|(k, v)| (k, v.0)).collect();
        for (key, value) in object.string_data.clone().unwrap_or_default() {
            data.insert(key, value.into_bytes());
        }
        let parsed = secret::target(&self.namespace, &name, &target, &data).map_err(|e| e.to_string());
        match &parsed {
            Ok(_) => info!(secret = %name, target = %target, "Cluster Secret registered."),
            Err(e) => warn!(error = %e, "Cluster Secret cannot be used; its clusters keep what they run."),
        }
        let mut secrets = self.secrets.write().unwrap_or_else(|p| p.into_inner());
        let old = secrets.insert(name.clone(), Registered { target: target.clone(), parsed });
        // A relabelled Secret changes two targets.
        Some(match old {
            Some(old) if old.target != target => {
                format!("cluster Secret {name} moved from target {} to {target}", old.target)
            }
            _ => format!("cluster Secret {name} for target {target}"),
        })
    }

    fn forget(&self, object: &Secret) -> Option<String> {
        let name = object.metadata.name.clone()?;
        let old = self.secrets.write().unwrap_or_else(|p| p.into_inner()).remove(&name)?;
        info!(secret = %name, target = %old.target, "Cluster Secret removed: its clusters are no longer reconciled.");
        Some(format!("cluster Secret {name} for target {} removed", old.target))
    }

    async fn run(self: Arc<Self>, secrets: kube::Api<Secret>, changed: impl Fn(String) + Send + Sync + 'static) {
        let config = watcher::Config::default().labels(TARGET_LABEL);
        let mut events = watcher::watcher(secrets, config).default_backoff().boxed();
        let mut listing: Option<Vec<Secret>> = None;
        while let Some(event) = events.next().await {
            match event {
                Ok(Event::Init) => listing = Some(Vec::new()),
                Ok(Event::InitApply(object)) => listing.get_or_insert_with(Vec::new).push(object),
                Ok(Event::InitDone) => {
                    let listed = listing.take().unwrap_or_default();
                    let names: Vec<String> = listed.iter().filter_map(|s| s.metadata.name.clone()).collect();
                    // Secrets removed while the watch was down go now.
                    self.secrets.write().unwrap_or_else(|p| p.into_inner()).retain(|name, _| names.contains(name));
                    for object in &listed {
                        self.register(object);
                    }
                    changed(format!("{} cluster Secrets listed", listed.len()));
                }
                Ok(Event::Apply(object)) => {
                    if let Some(what) = self.register(&object) {
                        changed(what);
                    }
                }
                Ok(Event::Delete(object)) => {
                    if let Some(what) = self.forget(&object) {
                        changed(what);
                    }
                }
                Err(e) => warn!(error = %e, "Watching cluster Secrets failed; retrying."),
            }
        }
    }
}
