//! Kubernetes mode: a management cluster (strata's namespace and CRD installed) and a workload
//! cluster, each an API server stand-in with a kubeconfig of its own, the host config of a
//! replica there, and the one-profile repository such tests roll out.

use std::path::PathBuf;

use serde_json::Value;

use super::Repo;
use super::kubernetes::{self, NAMESPACE};
use crate::apiserver::ApiServer;

/// The profile of [`app_repo`]: one ConfigMap per cluster, its greeting from `values`.
pub const APP_PROFILE: &str = "profiles/app/1.0.0/profile.yaml";

/// The management and workload stand-ins; kubeconfigs in `dir` (`mgmt/`, `workload/`).
pub struct KubeMode {
    pub mgmt: ApiServer,
    pub workload: ApiServer,
    pub dir: tempfile::TempDir,
}

impl KubeMode {
    pub fn start() -> KubeMode {
        let (mgmt, workload) = (ApiServer::start(), ApiServer::start());
        let dir = tempfile::tempdir().unwrap();
        for (server, sub) in [(&mgmt, "mgmt"), (&workload, "workload")] {
            std::fs::create_dir_all(dir.path().join(sub)).unwrap();
            server.kubeconfig(&dir.path().join(sub));
        }
        kubernetes::install(&dir.path().join("mgmt/kubeconfig"));
        KubeMode { mgmt, workload, dir }
    }

    pub fn mgmt_kubeconfig(&self) -> PathBuf {
        self.dir.path().join("mgmt/kubeconfig")
    }

    pub fn workload_kubeconfig(&self) -> PathBuf {
        self.dir.path().join("workload/kubeconfig")
    }

    /// The host config of a replica: state in ClusterStates on the management cluster, `shards`
    /// shards under short Leases (4 s).
    pub fn replica_config(&self, shards: u32) -> String {
        format!(
            "kubernetes: {{ kubeconfig: {}, namespace: {NAMESPACE} }}\nstate: {{ backend: kubernetes }}\nshards: {shards}\nleases: {{ duration: 4s, renew_deadline: 3s, retry_period: 500ms }}\n",
            self.mgmt_kubeconfig().display()
        )
    }

    /// `targets:` with the one target `workload`, the workload stand-in.
    pub fn workload_target(&self) -> String {
        format!("  workload: {{ kubeconfig: {} }}\n", self.workload_kubeconfig().display())
    }

    /// The ClusterState of `cluster`, as the management cluster holds it.
    pub fn state(&self, cluster: &str) -> Value {
        self.mgmt.object("clusterstates", Some(NAMESPACE), cluster).unwrap_or(Value::Null)
    }
}

/// The example repository (a Git repository, its first commit made) with its profiles, packs
/// and clusters replaced by [`APP_PROFILE`] and its pack, not committed.
pub fn app_repo() -> Repo {
    let repo = Repo::example();
    repo.remove("profiles").remove("clusters").remove("packs");
    repo.write(
        APP_PROFILE,
        "apiVersion: strata.dev/v1\nkind: Profile\nmetadata: { name: app, version: 1.0.0 }\nspec:\n  layers:\n    - name: config\n      type: manifests\n      source: packs/config\n      namespace: default\n      values: { greeting: hello }\n",
    );
    repo.write(
        "packs/config/cm.yaml",
        "apiVersion: v1\nkind: ConfigMap\nmetadata: { name: \"cm-{{ cluster.name }}\" }\ndata: { greeting: \"{{ values.greeting }}\" }\n",
    );
    repo
}
