//! The clusters: `targets` (what the names cluster files use mean on this host), and Kubernetes
//! mode — `kubernetes` (the management cluster), `state` (where shared state lives), `shards`
//! and `leases` (how replicas split the fleet).

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Deserialize;
use serde_saphyr::Spanned;

use super::TargetConfig;
use super::reader::{Reader, yes};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawTarget {
    kubeconfig: Option<String>,
    context: Option<String>,
    #[serde(default)]
    in_cluster: bool,
    directory: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawKubernetes {
    kubeconfig: Option<String>,
    context: Option<String>,
    namespace: Option<Spanned<String>>,
    #[serde(default = "yes")]
    cluster_secrets: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawState {
    backend: Spanned<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawLeases {
    duration: Option<Spanned<String>>,
    renew_deadline: Option<Spanned<String>>,
    retry_period: Option<Spanned<String>>,
}

/// Where the daemon keeps its state (`state.backend`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum StateBackend {
    /// `state_dir/strata.db`: one host.
    #[default]
    Sqlite,
    /// ClusterState objects and a ConfigMap in the management cluster, shared by replicas.
    Kubernetes,
}

/// The management cluster strata runs on (`kubernetes:`): where shared state, shard Leases and
/// cluster Secrets live. Present in Kubernetes mode.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KubernetesConfig {
    /// In-cluster (the pod's service account), or a kubeconfig for running outside it.
    pub connection: TargetConfig,
    /// The namespace of strata's objects; `None`: the service account's namespace, else
    /// [`DEFAULT_NAMESPACE`].
    pub namespace: Option<String>,
    /// Watch Secrets labelled `strata.dev/target` as targets.
    pub cluster_secrets: bool,
}

pub const DEFAULT_NAMESPACE: &str = "strata-system";

/// How clusters are split between replicas (`shards`, `leases`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Sharding {
    /// Shards, each held by one replica at a time through a Lease; clusters map to shards by
    /// rendezvous hashing of their names.
    pub shards: u32,
    /// How long a Lease holds without renewal (`leaseDurationSeconds`): a dead replica's shards
    /// are taken over after it.
    pub lease_duration: Duration,
    /// A holder that could not renew for this long stops reconciling the shard's clusters.
    pub renew_deadline: Duration,
    /// How often Leases are renewed and free ones looked for.
    pub retry_period: Duration,
}

impl Default for Sharding {
    fn default() -> Self {
        // client-go's leader-election defaults.
        Sharding {
            shards: 1,
            lease_duration: Duration::from_secs(15),
            renew_deadline: Duration::from_secs(10),
            retry_period: Duration::from_secs(2),
        }
    }
}

/// The most shards a fleet may be split into.
pub const MAX_SHARDS: u64 = 1024;

/// `targets`: each name mapped to exactly one kind of target.
pub(super) fn targets(cx: &mut Reader, raw: BTreeMap<String, Spanned<RawTarget>>) -> BTreeMap<String, TargetConfig> {
    let resolve = cx.resolver();
    let mut targets = BTreeMap::new();
    for (name, target) in raw {
        let line = target.referenced.line() as usize;
        let t = target.value;
        let chosen = match (&t.kubeconfig, t.in_cluster, &t.directory) {
            (Some(kubeconfig), false, None) => {
                Some(TargetConfig::Kubeconfig { path: resolve(kubeconfig), context: t.context.clone() })
            }
            (None, true, None) if t.context.is_none() => Some(TargetConfig::InCluster),
            (None, false, Some(dir)) if t.context.is_none() => Some(TargetConfig::Directory(resolve(dir))),
            _ => None,
        };
        match chosen {
            Some(c) => {
                targets.insert(name, c);
            }
            None => cx.schema(
                line,
                format!("target `{name}` must be exactly one kind of target"),
                "use {kubeconfig: PATH, context: NAME}, {in_cluster: true} or {directory: PATH}",
            ),
        }
    }
    targets
}

/// `state.backend`: SQLite on one host unless said otherwise.
pub(super) fn state_backend(cx: &mut Reader, raw: Option<&Spanned<RawState>>) -> StateBackend {
    match raw.map(|s| &s.value.backend) {
        None => StateBackend::Sqlite,
        Some(b) if b.value == "sqlite" => StateBackend::Sqlite,
        Some(b) if b.value == "kubernetes" => StateBackend::Kubernetes,
        Some(b) => {
            cx.schema(
                b.referenced.line() as usize,
                format!("state.backend `{}` is not a backend", b.value),
                "use sqlite (one host, the default) or kubernetes (replicas sharing the management cluster)",
            );
            StateBackend::Sqlite
        }
    }
}

/// `kubernetes`: the management cluster; implied (in-cluster) by the shared state alone.
pub(super) fn kubernetes(
    cx: &mut Reader,
    raw: Option<Spanned<RawKubernetes>>,
    state_backend: StateBackend,
) -> Option<KubernetesConfig> {
    let resolve = cx.resolver();
    match raw {
        Some(k) => {
            let line = k.referenced.line() as usize;
            let k = k.value;
            let connection = match (&k.kubeconfig, &k.context) {
                (Some(path), context) => TargetConfig::Kubeconfig { path: resolve(path), context: context.clone() },
                (None, None) => TargetConfig::InCluster,
                (None, Some(_)) => {
                    cx.schema(
                        line,
                        "kubernetes.context needs kubernetes.kubeconfig",
                        "name the kubeconfig file too, or leave both out to use the pod's service account",
                    );
                    TargetConfig::InCluster
                }
            };
            let namespace = k.namespace.map(|n| {
                if !crate::names::is_dns1123_label(&n.value) {
                    cx.schema(
                        n.referenced.line() as usize,
                        format!("kubernetes.namespace `{}` is not a namespace name", n.value),
                        "a DNS label: lower-case letters, digits and `-`, at most 63 characters",
                    );
                }
                n.value
            });
            Some(KubernetesConfig { connection, namespace, cluster_secrets: k.cluster_secrets })
        }
        // The shared state lives in the management cluster: strata runs in it.
        None if state_backend == StateBackend::Kubernetes => {
            Some(KubernetesConfig { connection: TargetConfig::InCluster, namespace: None, cluster_secrets: true })
        }
        None => None,
    }
}

/// `shards` and `leases`: more than one shard only with the shared state, and Lease timings
/// that let a holder stop before another takes over.
pub(super) fn sharding(
    cx: &mut Reader,
    shards: Option<&Spanned<u64>>,
    leases: Option<Spanned<RawLeases>>,
    state_backend: StateBackend,
) -> Sharding {
    let mut sharding = Sharding::default();
    if let Some(shards) = shards {
        let line = shards.referenced.line() as usize;
        if shards.value == 0 || shards.value > MAX_SHARDS {
            cx.schema(
                line,
                format!("shards: {} is not from 1 to {MAX_SHARDS}", shards.value),
                "a few per replica is plenty: e.g. shards: 8 for 3 replicas",
            );
        } else if shards.value > 1 && state_backend != StateBackend::Kubernetes {
            cx.schema(
                line,
                "shards need the shared state: state: { backend: kubernetes }",
                "replicas share pending updates, approvals and what each cluster runs through the management cluster",
            );
        } else {
            sharding.shards = shards.value as u32;
        }
    }
    if let Some(leases) = leases {
        let line = leases.referenced.line() as usize;
        let l = leases.value;
        let defaults = Sharding::default();
        sharding.lease_duration = cx.duration(&l.duration, "leases.duration", defaults.lease_duration);
        sharding.renew_deadline = cx.duration(&l.renew_deadline, "leases.renew_deadline", defaults.renew_deadline);
        sharding.retry_period = cx.duration(&l.retry_period, "leases.retry_period", defaults.retry_period);
        let problem = if sharding.lease_duration.subsec_nanos() != 0 || sharding.lease_duration.is_zero() {
            Some("leases.duration must be a whole number of seconds (a Lease's leaseDurationSeconds)")
        } else if sharding.renew_deadline >= sharding.lease_duration {
            Some(
                "leases.renew_deadline must be shorter than leases.duration: a holder stops before others may take over",
            )
        } else if sharding.retry_period.is_zero() || sharding.retry_period >= sharding.renew_deadline {
            Some("leases.retry_period must be longer than 0 and shorter than leases.renew_deadline")
        } else {
            None
        };
        if let Some(problem) = problem {
            cx.schema(line, problem, "e.g. leases: { duration: 15s, renew_deadline: 10s, retry_period: 2s }");
            sharding = Sharding { shards: sharding.shards, ..Sharding::default() };
        }
    }
    sharding
}
