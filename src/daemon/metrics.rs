//! Prometheus metrics, served at `/metrics`.

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

/// A rollout's clusters in one state: held, updating, updated, failed, rolling-back, rolled-back.
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
        Metrics {
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

    /// Drops the gauges of a rollout whose policy left the repository.
    pub fn forget_rollout(&self, rollout: &str) {
        let label = RolloutLabel { rollout: rollout.to_string() };
        self.rollout_wave.remove(&label);
        self.rollout_halted.remove(&label);
        for state in ["held", "updating", "updated", "failed", "rolling-back", "rolled-back", "awaiting-approval"] {
            self.rollout_clusters.remove(&RolloutStateLabel { rollout: rollout.to_string(), state: state.into() });
        }
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
