//! Prometheus metrics, served at `/metrics`.
//!
//! Every counter and gauge is registered at start, at zero, with the label values known then
//! (results, stages, kinds, the webhooks configured): `rate()` and `absent()` alerts work before
//! the first event. Counters end in `_total` (the client library adds it), durations in
//! `_seconds`. Per cluster: `strata_cluster_sync{cluster,state}` (one series per cluster, its
//! state in the label, value 1), `strata_cluster_healthy{cluster}` (1 ready, 0 otherwise) and
//! `strata_drifted_objects{cluster}`, set from the state at each scrape ([`Metrics::clusters`]).

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabel {
    pub result: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ClusterLabel {
    pub cluster: String,
}

/// What kind of state database failure (corrupt, readonly, full, busy, io, other).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabel {
    pub kind: String,
}

/// Where a panic was caught: evaluate (a whole revision), render (one cluster), worker.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StageLabel {
    pub stage: String,
}

/// A shard, by number (Kubernetes mode).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ShardLabel {
    pub shard: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RolloutLabel {
    pub rollout: String,
}

/// A rollout's clusters in one state: waiting, updating, updated, failed, rolling-back, rolled-back.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RolloutStateLabel {
    pub rollout: String,
    pub state: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ProviderLabel {
    pub provider: String,
    pub result: String,
}

/// The build: `strata_build_info{version,revision} 1`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct BuildLabel {
    pub version: String,
    pub revision: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ClusterStateLabel {
    pub cluster: String,
    pub state: String,
}

/// The commit strata was built from: `STRATA_REVISION` at build time (the Containerfile passes
/// it), else `unknown`.
pub const BUILD_REVISION: &str = match option_env!("STRATA_REVISION") {
    Some(revision) => revision,
    None => "unknown",
};

/// Label values known before any event, registered at zero.
pub const RECONCILE_RESULTS: [&str; 6] = ["applied", "unhealthy", "failed", "timeout", "crashed", "fenced"];
pub const REVISION_RESULTS: [&str; 5] = ["loaded", "invalid", "unreadable", "crashed", "store"];
pub const PANIC_STAGES: [&str; 5] = ["evaluate", "render", "worker", "fetch", "pull-requests"];
pub const STORE_ERROR_KINDS: [&str; 6] = ["corrupt", "readonly", "full", "busy", "io", "other"];
pub const DELIVERY_RESULTS: [&str; 4] = ["delivered", "failed", "rate_limited", "refused"];
pub const WEBHOOK_RESULTS: [&str; 3] = ["accepted", "unauthorized", "ignored"];
/// A rollout's clusters by state, as `strata_rollout_clusters` labels them.
pub const ROLLOUT_STATES: [&str; 7] =
    ["waiting", "updating", "updated", "failed", "rolling-back", "rolled-back", "awaiting-approval"];

pub struct Metrics {
    registry: Registry,
    /// Reconciles by result: applied, unchanged, failed, unhealthy, rejected.
    pub reconciles: Family<ResultLabel, Counter>,
    pub reconcile_seconds: Histogram,
    pub drifted_objects: Family<ClusterLabel, Gauge>,
    pub pending_updates: Gauge,
    /// Pending updates that wait for a person's approval (`updates: manual`).
    pub pending_approvals: Gauge,
    /// Reads of the repository's branch (fetches, for a remote), successful or not.
    pub fetches: Counter,
    pub fetch_errors: Counter,
    /// Webhook deliveries by provider and result (accepted, unauthorized, ignored).
    pub webhooks: Family<ProviderLabel, Counter>,
    /// Revisions evaluated: loaded, invalid (does not load), crashed (evaluating it panicked).
    pub revisions: Family<ResultLabel, Counter>,
    /// Panics caught instead of ending the process, by stage.
    pub panics: Family<StageLabel, Counter>,
    /// State database failures by kind (the store counts them).
    pub store_errors: Family<KindLabel, Counter>,
    /// Commit status deliveries: delivered, failed, rate_limited, refused.
    pub deliveries: Family<ResultLabel, Counter>,
    pub outbox: Gauge,
    /// Clusters this replica reconciles, per shard it holds.
    pub shard_clusters: Family<ShardLabel, Gauge>,
    /// What the shard Lease loop keeps: held shards, lease transitions, requests.
    pub leases: super::shards::LeaseMetrics,
    /// The wave a rollout is at (1 = its first wave holding clusters; 0 when it has none).
    pub rollout_wave: Family<RolloutLabel, Gauge>,
    /// A rollout's clusters by state.
    pub rollout_clusters: Family<RolloutStateLabel, Gauge>,
    /// 1 while a rollout is halted or aborted.
    pub rollout_halted: Family<RolloutLabel, Gauge>,
    /// One series per cluster: its sync state (or `suspended`) in the label, value 1.
    pub cluster_sync: Family<ClusterStateLabel, Gauge>,
    /// 1 while the cluster's health is `ready`, else 0.
    pub cluster_healthy: Family<ClusterLabel, Gauge>,
    /// 1 while the branch head is not what the clusters are decided on (not evaluated yet,
    /// rejected, or its evaluation postponed), 0 once it loaded.
    pub revision_behind: Gauge,
    /// When the repository was last read successfully (Unix seconds).
    pub last_fetch: Gauge,
    /// The state each cluster's series carries now, to drop the old one when it changes.
    shown: std::sync::Mutex<std::collections::HashMap<String, &'static str>>,
}

impl Metrics {
    /// The daemon's metrics; `store_errors` is the store's own counter and `leases` the shard
    /// Lease loop's families, registered here.
    pub fn new(store_errors: Family<KindLabel, Counter>, leases: super::shards::LeaseMetrics) -> Metrics {
        let mut registry = Registry::with_prefix("strata");
        let reconciles = Family::<ResultLabel, Counter>::default();
        registry.register("reconciles", "Cluster reconciles, by result", reconciles.clone());
        let reconcile_seconds = Histogram::new(exponential_buckets(0.005, 2.0, 16));
        registry.register("reconcile_duration_seconds", "Time one cluster reconcile took", reconcile_seconds.clone());
        let drifted_objects = Family::<ClusterLabel, Gauge>::default();
        registry.register("drifted_objects", "Objects found drifted at the last drift check", drifted_objects.clone());
        let pending_approvals = Gauge::default();
        registry.register(
            "pending_approvals",
            "Pending updates that wait for a person's approval (updates: manual), in rollouts or not",
            pending_approvals.clone(),
        );
        let pending_updates = Gauge::default();
        registry.register(
            "pending_updates",
            "Clusters with an update held for approval or a window",
            pending_updates.clone(),
        );
        let fetches = Counter::default();
        registry.register("fetches", "Reads of the repository's branch (fetches, for a remote)", fetches.clone());
        let fetch_errors = Counter::default();
        registry.register("fetch_errors", "Failed fetches or reads of the repository", fetch_errors.clone());
        let webhooks = Family::<ProviderLabel, Counter>::default();
        registry.register("webhooks", "Webhook deliveries, by provider and result", webhooks.clone());
        let revisions = Family::<ResultLabel, Counter>::default();
        registry.register("revisions", "Revisions evaluated, by result", revisions.clone());
        let deliveries = Family::<ResultLabel, Counter>::default();
        registry.register("report_deliveries", "Commit status deliveries, by result", deliveries.clone());
        let outbox = Gauge::default();
        registry.register("outbox", "Commit statuses waiting to be delivered", outbox.clone());
        let panics = Family::<StageLabel, Counter>::default();
        registry.register("panics", "Panics caught instead of ending the process, by stage", panics.clone());
        registry.register("store_errors", "State database failures, by kind", store_errors.clone());
        let shard_clusters = Family::<ShardLabel, Gauge>::default();
        registry.register(
            "shard_clusters",
            "Clusters this replica reconciles, per shard it holds",
            shard_clusters.clone(),
        );
        registry.register(
            "shard_held",
            "Whether this replica holds the shard's Lease (1) or not (0)",
            leases.held.clone(),
        );
        registry.register(
            "shard_lease_transitions",
            "The shard Lease's leaseTransitions: how often it changed hands",
            leases.transitions.clone(),
        );
        registry.register(
            "lease_requests",
            "Requests for shard and membership Leases, by what they did",
            leases.requests.clone(),
        );
        let rollout_wave = Family::<RolloutLabel, Gauge>::default();
        registry.register(
            "rollout_wave",
            "The wave a rollout is at (1 = its first wave that holds clusters, 0 = none)",
            rollout_wave.clone(),
        );
        let rollout_clusters = Family::<RolloutStateLabel, Gauge>::default();
        registry.register("rollout_clusters", "A rollout's clusters, by state", rollout_clusters.clone());
        let rollout_halted = Family::<RolloutLabel, Gauge>::default();
        registry.register("rollout_halted", "1 while a rollout is halted or aborted", rollout_halted.clone());
        let build = Family::<BuildLabel, Gauge>::default();
        build
            .get_or_create(&BuildLabel { version: env!("CARGO_PKG_VERSION").into(), revision: BUILD_REVISION.into() })
            .set(1);
        registry.register("build_info", "The strata build: version and the commit it was built from", build);
        let cluster_sync = Family::<ClusterStateLabel, Gauge>::default();
        registry.register(
            "cluster_sync",
            "A cluster's sync state (new, applying, applied, unhealthy, failed, error, removed, suspended): one series per cluster, value 1",
            cluster_sync.clone(),
        );
        let cluster_healthy = Family::<ClusterLabel, Gauge>::default();
        registry.register(
            "cluster_healthy",
            "1 while the cluster's workloads are ready, else 0",
            cluster_healthy.clone(),
        );
        let revision_behind = Gauge::default();
        registry.register(
            "revision_behind_head",
            "1 while the branch head is not the revision clusters are decided on (rejected, or not evaluated yet)",
            revision_behind.clone(),
        );
        let last_fetch = Gauge::default();
        registry.register(
            "last_fetch_success_timestamp_seconds",
            "When the repository's branch was last read successfully",
            last_fetch.clone(),
        );
        for (family, values) in [
            (&reconciles, &RECONCILE_RESULTS[..]),
            (&revisions, &REVISION_RESULTS[..]),
            (&deliveries, &DELIVERY_RESULTS[..]),
        ] {
            for result in values {
                family.get_or_create(&ResultLabel { result: result.to_string() }).inc_by(0);
            }
        }
        for stage in PANIC_STAGES {
            panics.get_or_create(&StageLabel { stage: stage.into() }).inc_by(0);
        }
        for kind in STORE_ERROR_KINDS {
            store_errors.get_or_create(&KindLabel { kind: kind.into() }).inc_by(0);
        }
        Metrics {
            cluster_sync,
            cluster_healthy,
            revision_behind,
            last_fetch,
            shown: Default::default(),
            shard_clusters,
            leases,
            rollout_wave,
            rollout_clusters,
            rollout_halted,
            panics,
            store_errors,
            deliveries,
            outbox,
            registry,
            reconciles,
            reconcile_seconds,
            drifted_objects,
            pending_updates,
            pending_approvals,
            fetches,
            fetch_errors,
            webhooks,
            revisions,
        }
    }

    pub fn result(&self, family: &Family<ResultLabel, Counter>, result: &str) {
        family.get_or_create(&ResultLabel { result: result.to_string() }).inc();
    }

    /// Registers a rollout policy's gauges (at zero when it has not run yet).
    pub fn know_rollout(&self, rollout: &str) {
        let label = RolloutLabel { rollout: rollout.to_string() };
        self.rollout_wave.get_or_create(&label).inc_by(0);
        self.rollout_halted.get_or_create(&label).inc_by(0);
        for state in ROLLOUT_STATES {
            self.rollout_clusters
                .get_or_create(&RolloutStateLabel { rollout: rollout.to_string(), state: state.into() })
                .inc_by(0);
        }
    }

    /// Drops the gauges of a rollout whose policy left the repository.
    pub fn forget_rollout(&self, rollout: &str) {
        let label = RolloutLabel { rollout: rollout.to_string() };
        self.rollout_wave.remove(&label);
        self.rollout_halted.remove(&label);
        for state in ROLLOUT_STATES {
            self.rollout_clusters.remove(&RolloutStateLabel { rollout: rollout.to_string(), state: state.into() });
        }
    }

    /// Registers the webhook counters of the providers configured, at zero.
    pub fn webhooks_configured(&self, providers: &[&str]) {
        for provider in providers {
            for result in WEBHOOK_RESULTS {
                self.webhooks
                    .get_or_create(&ProviderLabel { provider: provider.to_string(), result: result.into() })
                    .inc_by(0);
            }
        }
    }

    /// Sets the per-cluster series from the state: `(name, sync or "suspended", healthy,
    /// drifted objects)`, every cluster known. A cluster gone from the state loses its series;
    /// one whose state changed loses the series of its old state.
    pub fn clusters<'a>(&self, clusters: impl Iterator<Item = (&'a str, &'static str, bool, i64)>) {
        let mut shown = self.shown.lock().unwrap_or_else(|p| p.into_inner());
        let mut seen = std::collections::HashSet::new();
        for (name, state, healthy, drifted) in clusters {
            seen.insert(name);
            let label = ClusterLabel { cluster: name.to_string() };
            match shown.get(name) {
                Some(old) if *old == state => {}
                old => {
                    if let Some(old) = old {
                        self.cluster_sync.remove(&ClusterStateLabel { cluster: name.into(), state: old.to_string() });
                    }
                    shown.insert(name.to_string(), state);
                    self.cluster_sync
                        .get_or_create(&ClusterStateLabel { cluster: name.into(), state: state.into() })
                        .set(1);
                }
            }
            self.cluster_healthy.get_or_create(&label).set(healthy.into());
            self.drifted_objects.get_or_create(&label).set(drifted);
        }
        shown.retain(|name, state| {
            let keep = seen.contains(name.as_str());
            if !keep {
                let label = ClusterLabel { cluster: name.clone() };
                self.cluster_sync.remove(&ClusterStateLabel { cluster: name.clone(), state: state.to_string() });
                self.cluster_healthy.remove(&label);
                self.drifted_objects.remove(&label);
            }
            keep
        });
    }

    pub fn panicked(&self, stage: &str) {
        self.panics.get_or_create(&StageLabel { stage: stage.to_string() }).inc();
    }

    /// The Prometheus text exposition.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry).expect("writing to a String");
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn metrics() -> Metrics {
        let leases = crate::daemon::shards::LeaseMetrics::default();
        Metrics::new(Family::default(), leases)
    }

    #[test]
    fn counters_exist_at_zero_before_their_first_event() {
        let m = metrics();
        m.webhooks_configured(&["github"]);
        let text = m.encode();
        for line in [
            "strata_panics_total{stage=\"worker\"} 0",
            "strata_store_errors_total{kind=\"corrupt\"} 0",
            "strata_reconciles_total{result=\"failed\"} 0",
            "strata_revisions_total{result=\"invalid\"} 0",
            "strata_webhooks_total{provider=\"github\",result=\"unauthorized\"} 0",
            "strata_fetch_errors_total 0",
            "strata_revision_behind_head 0",
        ] {
            assert!(text.contains(line), "{line} missing:\n{text}");
        }
        assert!(
            text.contains(&format!(
                "strata_build_info{{version=\"{}\",revision=\"{BUILD_REVISION}\"}} 1",
                env!("CARGO_PKG_VERSION")
            )),
            "{text}"
        );
        assert!(!text.contains("provider=\"gitlab\""), "only the webhooks configured");
    }

    #[test]
    fn a_cluster_has_one_sync_series_which_follows_its_state() {
        let m = metrics();
        m.clusters([("a", "failed", false, 2), ("b", "applied", true, 0)].into_iter());
        let text = m.encode();
        assert!(text.contains("strata_cluster_sync{cluster=\"a\",state=\"failed\"} 1"), "{text}");
        assert!(
            text.contains("strata_cluster_healthy{cluster=\"b\"} 1")
                && text.contains("strata_drifted_objects{cluster=\"a\"} 2")
        );
        m.clusters([("a", "applied", true, 0)].into_iter());
        let text = m.encode();
        assert!(text.contains("strata_cluster_sync{cluster=\"a\",state=\"applied\"} 1"), "{text}");
        assert!(!text.contains("state=\"failed\"") && !text.contains("cluster=\"b\""), "old series dropped:\n{text}");
    }
}
