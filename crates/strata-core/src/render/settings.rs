//! What the host decides about rendering, whatever a repository says.
//!
//! ```text
//!   host config (apply.allow_namespaces, kubernetes.namespace) ──> Settings ──> Renderer
//!                                                                     ├─ refuses objects in strata's own home (error[reserved])
//!                                                                     └─ keys the digests of sets holding Secret values
//! ```
//!
//! strata's home in a cluster is the namespace it keeps inventories in (`strata-system`, in every
//! cluster it applies to) and, in Kubernetes mode, its own namespace (ClusterStates, Leases, the
//! shared state, cluster Secrets). A repository that could write there could approve its own
//! pending updates, forge another replica's state, register targets, or — with a `Namespace`
//! object it then stops declaring — have strata prune its own namespace. So objects there, the
//! `Namespace` objects themselves, strata's own kinds anywhere and Secrets labelled as cluster
//! Secrets are refused at render time, so plans show it; `apply.allow_namespaces` lifts it for a
//! namespace the operator means to manage from Git.

use std::collections::BTreeSet;
use std::sync::OnceLock;

use serde_json::Value;

use super::object::{ObjectId, STRATA_GROUP, STRATA_NAMESPACE, TARGET_LABEL};
use crate::redact::Redactor;

#[derive(Clone, Debug)]
pub struct Settings {
    /// Namespaces no object may be in, and no `Namespace` object may name.
    pub reserved_namespaces: BTreeSet<String>,
    /// What shows sensitive values as markers (plans, diffs) and keys the digests over them
    /// ([`Redactor::keyed`]).
    pub redactor: Redactor,
    /// Where templates render and how long they may ([`super::engine`]).
    pub engine: super::engine::Engine,
}

impl Settings {
    /// `own_namespace`: strata's namespace in Kubernetes mode; `allowed`: namespaces the host
    /// config lets repositories write to all the same.
    pub fn new(own_namespace: Option<&str>, allowed: &[String], redactor: Redactor) -> Settings {
        let reserved_namespaces = [Some(STRATA_NAMESPACE), own_namespace]
            .into_iter()
            .flatten()
            .filter(|ns| !allowed.iter().any(|a| a == ns))
            .map(str::to_string)
            .collect();
        Settings { reserved_namespaces, redactor, engine: Default::default() }
    }

    /// The same settings, renders stopping once `cancel` is set.
    pub fn cancelled_by(&self, cancel: std::sync::Arc<std::sync::atomic::AtomicBool>) -> Settings {
        let mut settings = self.clone();
        settings.engine.cancel = Some(cancel);
        settings
    }

    /// The same settings with the host's time limits for templates.
    pub fn with_limits(mut self, limits: super::engine::Limits) -> Settings {
        self.engine.limits = limits;
        self
    }

    /// The same settings with another redactor (a plan of a pull request gets a key of its own).
    pub fn with_redactor(&self, redactor: Redactor) -> Settings {
        Settings { redactor, ..self.clone() }
    }

    /// The settings of a process that was given none (the CLI without a host config, tests):
    /// `strata-system` reserved, a key of this process's own.
    pub fn process() -> &'static Settings {
        static SETTINGS: OnceLock<Settings> = OnceLock::new();
        SETTINGS.get_or_init(|| Settings::new(None, &[], Redactor::random()))
    }

    /// Why an object may not come from a repository, and what to do instead; `None` when it may.
    pub fn refusal(&self, id: &ObjectId, manifest: &Value) -> Option<(String, &'static str)> {
        const ALLOW: &str = "keep strata's namespaces out of the repository; an operator who means to manage one from Git lists it in the host config's `apply.allow_namespaces`";
        if let Some(ns) = id.namespace.as_deref().filter(|ns| self.reserved_namespaces.contains(*ns)) {
            return Some((format!("{id} is in namespace {ns}, where strata keeps its own state"), ALLOW));
        }
        if id.group.is_empty() && id.kind == "Namespace" && self.reserved_namespaces.contains(&id.name) {
            return Some((format!("{id} is the namespace strata keeps its own state in"), ALLOW));
        }
        let own_kind = id.group == STRATA_GROUP
            || (id.group == "apiextensions.k8s.io"
                && id.kind == "CustomResourceDefinition"
                && id.name.ends_with(&format!(".{STRATA_GROUP}")));
        if own_kind {
            return Some((
                format!("{id} is strata's own kind: its state is written by strata alone"),
                "remove it; strata's CRD comes with its deployment (deploy/kubernetes)",
            ));
        }
        let cluster_secret = id.group.is_empty()
            && id.kind == "Secret"
            && manifest["metadata"]["labels"].as_object().is_some_and(|l| l.contains_key(TARGET_LABEL));
        if cluster_secret {
            return Some((
                format!(
                    "{id} is labelled {TARGET_LABEL}: a cluster Secret names a target and its credentials for strata"
                ),
                "register targets in the host config or in strata's namespace by hand, never from the repository strata applies",
            ));
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn strata_s_home_is_refused_unless_the_host_allows_a_namespace() {
        let settings = Settings::new(Some("strata"), &[], Redactor::random());
        let id = |api: &str, kind: &str, ns: Option<&str>, name: &str| ObjectId::new(api, kind, ns, name);
        let plain = json!({});
        for (refused, what) in [
            (id("v1", "ConfigMap", Some("strata-system"), "strata-inventory-x"), "an inventory"),
            (id("coordination.k8s.io/v1", "Lease", Some("strata"), "strata-shard-0"), "a shard Lease"),
            (id("v1", "Namespace", None, "strata"), "strata's namespace"),
            (id("strata.dev/v1", "ClusterState", Some("elsewhere"), "c"), "a ClusterState anywhere"),
            (id("apiextensions.k8s.io/v1", "CustomResourceDefinition", None, "clusterstates.strata.dev"), "its CRD"),
        ] {
            assert!(settings.refusal(&refused, &plain).is_some(), "{what}");
        }
        let labelled = json!({"metadata": {"labels": {"strata.dev/target": "prod"}}});
        assert!(settings.refusal(&id("v1", "Secret", Some("apps"), "s"), &labelled).is_some());
        assert!(settings.refusal(&id("v1", "Secret", Some("apps"), "s"), &plain).is_none());
        assert!(settings.refusal(&id("v1", "ConfigMap", Some("apps"), "c"), &plain).is_none());
        let allowing = Settings::new(Some("strata"), &["strata".to_string()], Redactor::random());
        assert!(allowing.refusal(&id("v1", "ConfigMap", Some("strata"), "c"), &plain).is_none());
        assert!(allowing.refusal(&id("v1", "ConfigMap", Some("strata-system"), "c"), &plain).is_some());
    }
}
