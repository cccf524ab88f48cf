//! Sharding: which clusters this replica reconciles, decided with `coordination.k8s.io/v1` Leases.
//!
//! ```text
//!   cluster name ──rendezvous hash──> shard 0..N            (the same on every replica)
//!   every retry_period, on the management thread:
//!     list Leases (one request) ──> renew strata-replica-<identity> (membership)
//!                               ──> renew the shards held; release those beyond a fair share
//!                               ──> take free or expired ones up to a fair share (N / replicas, the
//!                                   remainder to the first by identity: every replica computes the same)
//!   holds(shard): the Lease was renewed by this replica less than renew_deadline ago, by its own
//!                 clock ──> workers check it before every apply and stop the moment it goes
//! ```
//!
//! The Lease semantics are client-go's leader election, which kube-apiserver documents for
//! Leases: a holder renews `renewTime` every retry period; another replica takes a Lease over only
//! when it has seen the same record unchanged for `leaseDurationSeconds` by its own clock (never
//! by comparing clocks across machines), and every write carries the resourceVersion it was based
//! on, so of two replicas racing for one Lease exactly one wins (409 Conflict for the other). A
//! holder stops reconciling a shard once renew_deadline (< the lease duration) has passed since
//! its last successful renewal, so it has stopped before anyone may take over: no cluster is
//! reconciled by two replicas at once. A dead replica's shards are free after at most
//! lease duration + retry period, and taken at the next round.
//!
//! Why not a crate: kube-leader-election 0.44 takes an expired Lease with a merge patch that
//! carries no resourceVersion (two replicas can both win) and judges expiry by comparing its clock
//! with the holder's `renewTime`; kube-lease-manager needs kube 5. Both manage one Lease, while
//! sharding needs the whole set (and membership) seen at once.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use kube::api::{Api, DeleteParams, ListParams, ObjectMeta, PostParams, Preconditions};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use serde::Serialize;
use sha2::{Digest, Sha256};
use tokio::sync::watch;
use tracing::{info, warn};

use super::management::{Failure, Management};
use super::metrics::{ResultLabel, ShardLabel};
use crate::config::Sharding;
use crate::render::object::{FIELD_MANAGER, LABEL_MANAGED_BY};

/// Lease names: `strata-shard-<n>` and `strata-replica-<identity>`, labelled with what they are.
pub const SHARD_PREFIX: &str = "strata-shard-";
pub const REPLICA_PREFIX: &str = "strata-replica-";
pub const LEASE_LABEL: &str = "strata.dev/lease";

/// The shard a cluster belongs to: the one scoring highest for its name (rendezvous hashing), so
/// changing the number of shards moves only the clusters that must move.
pub fn shard_of(cluster: &str, shards: u32) -> u32 {
    if shards <= 1 {
        return 0;
    }
    (0..shards).max_by_key(|&shard| (score(cluster, shard), std::cmp::Reverse(shard))).unwrap_or(0)
}

fn score(name: &str, shard: u32) -> u64 {
    let mut hash = Sha256::new();
    hash.update(name.as_bytes());
    hash.update([0]);
    hash.update(shard.to_be_bytes());
    u64::from_be_bytes(hash.finalize()[..8].try_into().expect("8 bytes"))
}

/// How many shards `me` should hold among the live `members`: N / R each, and one more for the
/// first N mod R by identity, so every replica computes the same split and the shares add up.
fn fair_share(shards: u32, members: &[String], me: &str) -> usize {
    let mut sorted: Vec<&String> = members.iter().collect();
    sorted.sort();
    sorted.dedup();
    let replicas = sorted.len().max(1);
    let rank = sorted.iter().position(|m| *m == me).unwrap_or(replicas - 1);
    let (each, rest) = (shards as usize / replicas, shards as usize % replicas);
    each + usize::from(rank < rest)
}

/// What `/readyz`, the API and the metrics show about sharding.
#[derive(Clone, Debug, Default, Serialize)]
pub struct View {
    pub identity: String,
    pub shards: u32,
    /// The shards this replica holds now.
    pub held: Vec<u32>,
    /// Each shard's holder as last seen (`None`: free).
    pub holders: Vec<Option<String>>,
    /// Replicas whose membership Lease is live.
    pub replicas: usize,
    /// The last failure talking to the Leases, until a round succeeds again.
    pub problem: Option<String>,
}

/// Metric families the Lease loop keeps.
#[derive(Clone, Default)]
pub struct LeaseMetrics {
    pub held: Family<ShardLabel, Gauge>,
    pub transitions: Family<ShardLabel, Gauge>,
    pub requests: Family<ResultLabel, Counter>,
}

struct Table {
    /// Per shard: until when this replica may act on it (its own clock); `None`: not held.
    valid_until: Vec<Option<Instant>>,
    /// Per shard: on its way out (beyond a fair share): fenced now, released at the next round.
    releasing: Vec<bool>,
    holders: Vec<Option<String>>,
    replicas: usize,
    problem: Option<String>,
}

/// Which shards this replica holds. With one shard and no management cluster (a single host),
/// it holds everything, always.
pub struct Shards {
    count: u32,
    identity: String,
    /// `None`: a single host, owning everything.
    leases: Option<Sharding>,
    table: Mutex<Table>,
    /// Bumped whenever shards are gained or lost.
    changes: watch::Sender<u64>,
    metrics: LeaseMetrics,
}

/// What the loop remembers of a Lease between rounds: when this replica first saw its current
/// record (the start of its expiry, by this replica's clock).
struct Seen {
    version: String,
    at: Instant,
}

fn now_micro() -> MicroTime {
    MicroTime(k8s_openapi::jiff::Timestamp::now())
}

impl Shards {
    /// A single host: every cluster is this process's.
    pub fn all() -> Arc<Shards> {
        Arc::new(Shards::new(1, String::new(), None, LeaseMetrics::default()))
    }

    fn new(count: u32, identity: String, leases: Option<Sharding>, metrics: LeaseMetrics) -> Shards {
        let n = count as usize;
        Shards {
            count,
            identity,
            leases,
            table: Mutex::new(Table {
                valid_until: vec![None; n],
                releasing: vec![false; n],
                holders: vec![None; n],
                replicas: 0,
                problem: None,
            }),
            changes: watch::channel(0).0,
            metrics,
        }
    }

    /// Starts taking and renewing shard Leases in `mgmt`'s namespace.
    pub fn start(mgmt: &Arc<Management>, sharding: &Sharding, metrics: LeaseMetrics) -> Arc<Shards> {
        let shards = Arc::new(Shards::new(sharding.shards, mgmt.identity.clone(), Some(sharding.clone()), metrics));
        mgmt.spawn(shards.clone().run(mgmt.api()));
        shards
    }

    pub fn count(&self) -> u32 {
        self.count
    }

    pub fn identity(&self) -> &str {
        &self.identity
    }

    pub fn shard_of(&self, cluster: &str) -> u32 {
        shard_of(cluster, self.count)
    }

    fn table(&self) -> std::sync::MutexGuard<'_, Table> {
        self.table.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether this replica may act on `shard` now: it holds the Lease and renewed it less than
    /// renew_deadline ago, by its own clock.
    pub fn holds(&self, shard: u32) -> bool {
        if self.leases.is_none() {
            return true;
        }
        let table = self.table();
        let i = shard as usize;
        !table.releasing.get(i).copied().unwrap_or(true)
            && table.valid_until.get(i).copied().flatten().is_some_and(|until| Instant::now() < until)
    }

    /// Whether `cluster` is this replica's to reconcile now.
    /// Whether Leases share the fleet between replicas (what a replica owns can change).
    pub fn sharded(&self) -> bool {
        self.leases.is_some()
    }

    pub fn owns(&self, cluster: &str) -> bool {
        // One process without Leases owns every cluster: no hash of the name to work out.
        self.leases.is_none() || self.holds(self.shard_of(cluster))
    }

    /// Whether this replica does the fleet-wide work (planning pull requests, statuses naming no
    /// cluster): the holder of shard 0.
    pub fn leads(&self) -> bool {
        self.holds(0)
    }

    /// Ownership changes: the value is bumped whenever shards are gained or lost.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.changes.subscribe()
    }

    /// Resolves when this replica may no longer act on `shard`: the Lease was lost, is being
    /// released, or was not renewed within renew_deadline.
    pub async fn fenced(&self, shard: u32) {
        if self.leases.is_none() {
            return std::future::pending().await;
        }
        let mut changes = self.subscribe();
        loop {
            changes.borrow_and_update();
            let until = {
                let table = self.table();
                let i = shard as usize;
                match (table.releasing.get(i), table.valid_until.get(i).copied().flatten()) {
                    (Some(false), Some(until)) if Instant::now() < until => until,
                    _ => return,
                }
            };
            tokio::select! {
                _ = tokio::time::sleep_until(tokio::time::Instant::from_std(until)) => {}
                _ = changes.changed() => {}
            }
        }
    }

    pub fn view(&self) -> View {
        let table = self.table();
        View {
            identity: self.identity.clone(),
            shards: self.count,
            held: (0..self.count).filter(|&s| self.leases.is_none() || self.holds_locked(&table, s)).collect(),
            holders: table.holders.clone(),
            replicas: table.replicas,
            problem: table.problem.clone(),
        }
    }

    fn holds_locked(&self, table: &Table, shard: u32) -> bool {
        let i = shard as usize;
        !table.releasing[i] && table.valid_until[i].is_some_and(|until| Instant::now() < until)
    }

    fn changed(&self) {
        self.changes.send_modify(|n| *n += 1);
    }

    fn count_request(&self, result: &str) {
        self.metrics.requests.get_or_create(&ResultLabel { result: result.to_string() }).inc();
    }

    async fn run(self: Arc<Self>, leases: Api<Lease>) {
        let Some(timing) = self.leases.clone() else { return };
        let mut seen: HashMap<String, Seen> = HashMap::new();
        let mut rounds = 0u64;
        loop {
            let started = Instant::now();
            // A round that hangs must not outlive the holds it is meant to renew.
            let round = tokio::time::timeout(timing.renew_deadline, self.round(&leases, &timing, &mut seen, rounds));
            let problem = match round.await {
                Ok(Ok(())) => None,
                Ok(Err(problem)) => Some(problem),
                Err(_) => Some(format!("a round of Lease requests took longer than {:?}", timing.renew_deadline)),
            };
            if let Some(problem) = &problem {
                warn!(error = %problem, "Shard Leases: round failed; shards not renewed in time stop being reconciled.");
            }
            self.table().problem = problem;
            self.expire();
            rounds += 1;
            let wait = timing.retry_period.saturating_sub(started.elapsed());
            // A little jitter keeps replicas from hitting the API server in step.
            tokio::time::sleep(wait.mul_f64(0.9 + fastrand::f64() * 0.2)).await;
        }
    }

    /// Drops the holds whose renewal is overdue (the API server could not be reached).
    fn expire(&self) {
        let now = Instant::now();
        let lost: Vec<usize> = {
            let mut table = self.table();
            let lost: Vec<usize> =
                (0..table.valid_until.len()).filter(|&i| table.valid_until[i].is_some_and(|u| u <= now)).collect();
            for &i in &lost {
                table.valid_until[i] = None;
            }
            lost
        };
        for i in &lost {
            warn!(
                shard = i,
                "Shard Lease not renewed within renew_deadline: its clusters are left alone until it is held again."
            );
            self.metrics.held.get_or_create(&ShardLabel { shard: i.to_string() }).set(0);
        }
        if !lost.is_empty() {
            self.changed();
        }
    }

    async fn round(
        &self,
        leases: &Api<Lease>,
        timing: &Sharding,
        seen: &mut HashMap<String, Seen>,
        rounds: u64,
    ) -> Result<(), String> {
        let listed = leases.list(&ListParams::default().labels(LEASE_LABEL)).await;
        self.count_request(if listed.is_ok() { "list" } else { "failed" });
        let listed = listed.map_err(|e| format!("listing Leases: {}", Failure::of(&e).message))?;
        let now = Instant::now();
        let mut records: HashMap<String, Lease> = HashMap::new();
        for lease in listed.items {
            let (Some(name), Some(version)) = (lease.metadata.name.clone(), lease.metadata.resource_version.clone())
            else {
                continue;
            };
            match seen.get(&name) {
                Some(s) if s.version == version => {}
                _ => {
                    seen.insert(name.clone(), Seen { version, at: now });
                }
            }
            records.insert(name, lease);
        }
        seen.retain(|name, _| records.contains_key(name));
        let expired = |name: &str, lease: &Lease| -> bool {
            let spec = lease.spec.as_ref();
            let holder = spec.and_then(|s| s.holder_identity.as_deref()).unwrap_or("");
            let duration = Duration::from_secs(spec.and_then(|s| s.lease_duration_seconds).unwrap_or(0).max(0) as u64);
            holder.is_empty() || seen.get(name).is_none_or(|s| now.duration_since(s.at) > duration)
        };

        // Membership: this replica's own Lease, renewed like a shard's.
        let me = format!("{REPLICA_PREFIX}{}", self.identity);
        let mut problems = Vec::new();
        if let Err(problem) = self.renew_or_take(leases, &me, records.get(&me), timing, false).await {
            problems.push(problem);
        }
        let mut members = vec![self.identity.clone()];
        for (name, lease) in records.iter().filter(|(n, _)| n.starts_with(REPLICA_PREFIX) && **n != me) {
            if !expired(name, lease) {
                members.push(name[REPLICA_PREFIX.len()..].to_string());
            } else if seen.get(name).is_some_and(|s| now.duration_since(s.at) > timing.lease_duration * 4) {
                // Long dead: tidy up, unless it came back meanwhile (the precondition).
                let version = lease.metadata.resource_version.clone();
                let params = DeleteParams {
                    preconditions: Some(Preconditions { resource_version: version, uid: None }),
                    ..DeleteParams::default()
                };
                let _ = leases.delete(name, &params).await;
                self.count_request("delete");
            }
        }
        let replicas = members.len();
        let fair = fair_share(self.count, &members, &self.identity);

        // The shards: renew or release what is held, then take what is free up to a fair share.
        let mut held = 0;
        let mut free = Vec::new();
        for shard in 0..self.count {
            let name = format!("{SHARD_PREFIX}{shard}");
            let record = records.get(&name);
            let holder = record.and_then(|l| l.spec.as_ref()).and_then(|s| s.holder_identity.clone());
            let transitions = record.and_then(|l| l.spec.as_ref()).and_then(|s| s.lease_transitions).unwrap_or(0);
            self.metrics.transitions.get_or_create(&ShardLabel { shard: shard.to_string() }).set(transitions as i64);
            let mine = holder.as_deref() == Some(self.identity.as_str());
            let (was_held, releasing) = {
                let mut table = self.table();
                table.holders[shard as usize] = holder.clone().filter(|h| !h.is_empty());
                (table.valid_until[shard as usize].is_some(), table.releasing[shard as usize])
            };
            if was_held && !mine {
                // Taken by someone else (this replica's renewals failed for long enough).
                self.lose(shard, holder.as_deref().unwrap_or("nobody"));
                continue;
            }
            if mine && releasing {
                self.release(leases, shard, &name, record).await;
                continue;
            }
            if mine {
                match self.renew_or_take(leases, &name, record, timing, true).await {
                    Ok(Some(sent)) => {
                        held += 1;
                        if !was_held {
                            info!(shard, "Shard held again.");
                            self.hold(shard, sent, timing);
                            self.changed();
                        } else {
                            self.hold(shard, sent, timing);
                        }
                    }
                    // Changed since it was listed: the next round sees by whom.
                    Ok(None) => {}
                    Err(problem) => problems.push(problem),
                }
                continue;
            }
            if record.is_none_or(|lease| expired(&name, lease)) {
                free.push(shard);
            }
        }
        self.table().replicas = replicas;
        if held > fair {
            // Beyond a fair share: fenced now, released at the next round, when no apply of its
            // clusters can still be running.
            let mut mine: Vec<u32> = (0..self.count).filter(|&s| self.holds(s)).collect();
            mine.sort_by_key(|&s| std::cmp::Reverse(score(&self.identity, s)));
            for &shard in mine.iter().skip(fair) {
                info!(shard, replicas, "Releasing a shard to another replica.");
                self.table().releasing[shard as usize] = true;
                self.metrics.held.get_or_create(&ShardLabel { shard: shard.to_string() }).set(0);
            }
            self.changed();
        } else if rounds > 0 {
            // Not in the first round: by the second, this replica has seen the others' membership.
            free.sort_by_key(|&s| std::cmp::Reverse(score(&self.identity, s)));
            for shard in free.into_iter().take(fair - held) {
                let name = format!("{SHARD_PREFIX}{shard}");
                match self.renew_or_take(leases, &name, records.get(&name), timing, true).await {
                    Ok(Some(sent)) => {
                        let previous =
                            records.get(&name).and_then(|l| l.spec.as_ref()).and_then(|s| s.holder_identity.clone());
                        info!(
                            shard,
                            previous = previous.as_deref().filter(|p| !p.is_empty()).unwrap_or("-"),
                            "Shard taken."
                        );
                        self.hold(shard, sent, timing);
                        self.changed();
                    }
                    Ok(None) => {}
                    Err(problem) => problems.push(problem),
                }
            }
        }
        if problems.is_empty() { Ok(()) } else { Err(problems.join("; ")) }
    }

    /// Renews (or takes) Lease `name` for this replica, with the resourceVersion it was listed
    /// at: when it was sent if it went through, `None` when another replica got there first.
    async fn renew_or_take(
        &self,
        leases: &Api<Lease>,
        name: &str,
        record: Option<&Lease>,
        timing: &Sharding,
        shard: bool,
    ) -> Result<Option<Instant>, String> {
        let sent = Instant::now();
        let now = now_micro();
        let spec = record.and_then(|l| l.spec.clone()).unwrap_or_default();
        let ours = spec.holder_identity.as_deref() == Some(self.identity.as_str());
        let transitions = spec.lease_transitions.unwrap_or(0);
        // As client-go counts them: every change of holder, a released Lease's included.
        let taken_from_someone = !ours && record.is_some();
        let lease = Lease {
            metadata: ObjectMeta {
                name: Some(name.to_string()),
                resource_version: record.and_then(|l| l.metadata.resource_version.clone()),
                labels: Some(
                    [
                        (LABEL_MANAGED_BY.to_string(), FIELD_MANAGER.to_string()),
                        (LEASE_LABEL.to_string(), if shard { "shard" } else { "replica" }.to_string()),
                    ]
                    .into(),
                ),
                ..ObjectMeta::default()
            },
            spec: Some(LeaseSpec {
                holder_identity: Some(self.identity.clone()),
                lease_duration_seconds: Some(timing.lease_duration.as_secs() as i32),
                acquire_time: if ours { spec.acquire_time.clone() } else { Some(now.clone()) },
                renew_time: Some(now),
                lease_transitions: Some(if taken_from_someone { transitions + 1 } else { transitions }),
                ..LeaseSpec::default()
            }),
        };
        let params = PostParams { field_manager: Some(FIELD_MANAGER.into()), ..PostParams::default() };
        let result = match record {
            None => leases.create(&params, &lease).await,
            Some(_) => leases.replace(name, &params, &lease).await,
        };
        match result {
            Ok(_) => {
                self.count_request(if ours { "renew" } else { "acquire" });
                Ok(Some(sent))
            }
            Err(e) if Failure::is(&e, 409) => {
                self.count_request("conflict");
                Ok(None)
            }
            Err(e) => {
                self.count_request("failed");
                Err(format!("Lease {name}: {}", Failure::of(&e).message))
            }
        }
    }

    /// Holds `shard` until renew_deadline after `sent`, when the renewal that went through was
    /// sent: anyone who saw the record before saw it before then, so their wait for its expiry
    /// ends later than this hold.
    fn hold(&self, shard: u32, sent: Instant, timing: &Sharding) {
        {
            let mut table = self.table();
            table.valid_until[shard as usize] = Some(sent + timing.renew_deadline);
            table.releasing[shard as usize] = false;
        }
        self.metrics.held.get_or_create(&ShardLabel { shard: shard.to_string() }).set(1);
    }

    fn lose(&self, shard: u32, to: &str) {
        warn!(shard, holder = to, "Shard lost to another replica: its clusters are left to it.");
        {
            let mut table = self.table();
            table.valid_until[shard as usize] = None;
            table.releasing[shard as usize] = false;
        }
        self.metrics.held.get_or_create(&ShardLabel { shard: shard.to_string() }).set(0);
        self.changed();
    }

    /// Gives a shard up: holder cleared, so any replica may take it at once.
    async fn release(&self, leases: &Api<Lease>, shard: u32, name: &str, record: Option<&Lease>) {
        if let Some(record) = record {
            let mut lease = record.clone();
            if let Some(spec) = lease.spec.as_mut() {
                spec.holder_identity = None;
                spec.lease_duration_seconds = Some(1);
                spec.renew_time = Some(now_micro());
            }
            let params = PostParams { field_manager: Some(FIELD_MANAGER.into()), ..PostParams::default() };
            let released = leases.replace(name, &params, &lease).await;
            self.count_request(if released.is_ok() { "release" } else { "failed" });
        }
        let mut table = self.table();
        table.valid_until[shard as usize] = None;
        table.releasing[shard as usize] = false;
    }

    /// On shutdown: fence every shard and give them up, so others take over without waiting
    /// for the Leases to expire. Bounded; what is not released expires.
    pub async fn release_all(self: Arc<Self>, leases: Api<Lease>) {
        if self.leases.is_none() {
            return;
        }
        let held: Vec<u32> = (0..self.count).filter(|&s| self.table().valid_until[s as usize].is_some()).collect();
        {
            let mut table = self.table();
            for &s in &held {
                table.releasing[s as usize] = true;
            }
        }
        self.changed();
        for shard in held {
            let name = format!("{SHARD_PREFIX}{shard}");
            if let Ok(Some(record)) = leases.get_opt(&name).await
                && record.spec.as_ref().and_then(|s| s.holder_identity.as_deref()) == Some(self.identity.as_str())
            {
                self.release(&leases, shard, &name, Some(&record)).await;
            }
        }
        let me = format!("{REPLICA_PREFIX}{}", self.identity);
        let _ = leases.delete(&me, &DeleteParams::default()).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rendezvous_hashing_spreads_clusters_and_moves_few_when_shards_are_added() {
        let names: Vec<String> = (0..4000).map(|i| format!("cluster-{i}")).collect();
        let mut per = [0usize; 8];
        for name in &names {
            per[shard_of(name, 8) as usize] += 1;
        }
        assert!(per.iter().all(|&n| (400..600).contains(&n)), "{per:?}");
        let moved = names.iter().filter(|n| shard_of(n, 8) != shard_of(n, 9)).count();
        // Only the clusters the new shard takes move: about one in nine.
        assert!((300..600).contains(&moved), "{moved}");
        assert!(names.iter().filter(|n| shard_of(n, 9) != 8).all(|n| shard_of(n, 8) == shard_of(n, 9)));
        assert_eq!(shard_of("aws-cluster", 1), 0);
        assert_eq!(shard_of("aws-cluster", 8), shard_of("aws-cluster", 8), "stable");
    }

    #[test]
    fn fair_shares_add_up_and_every_replica_computes_the_same() {
        let members: Vec<String> = ["c", "a", "b"].iter().map(|s| s.to_string()).collect();
        let shares: Vec<usize> = ["a", "b", "c"].iter().map(|m| fair_share(8, &members, m)).collect();
        assert_eq!(shares, [3, 3, 2]);
        assert_eq!(fair_share(4, &members, "c"), 1);
        assert_eq!(fair_share(2, &members, "c"), 0, "a replica may hold none");
        assert_eq!(fair_share(8, &["me".to_string()], "me"), 8);
    }

    #[test]
    fn a_single_host_owns_everything_and_is_never_fenced() {
        let shards = Shards::all();
        assert!(shards.owns("anything") && shards.leads());
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let fenced =
            runtime.block_on(async { tokio::time::timeout(Duration::from_millis(20), shards.fenced(0)).await });
        assert!(fenced.is_err(), "never");
    }

    #[test]
    fn a_hold_ends_with_its_deadline_by_the_replicas_own_clock() {
        let timing = Sharding {
            shards: 2,
            lease_duration: Duration::from_secs(1),
            renew_deadline: Duration::from_millis(200),
            retry_period: Duration::from_millis(50),
        };
        let shards = Shards::new(2, "me".into(), Some(timing.clone()), LeaseMetrics::default());
        assert!(!shards.holds(0));
        shards.hold(0, Instant::now(), &timing);
        assert!(shards.holds(0) && !shards.holds(1));
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let started = Instant::now();
        runtime.block_on(shards.fenced(0));
        assert!(started.elapsed() >= Duration::from_millis(100), "{:?}", started.elapsed());
        assert!(!shards.holds(0), "not renewed: fenced");
        shards.hold(1, Instant::now(), &timing);
        shards.table().releasing[1] = true;
        assert!(!shards.holds(1), "releasing is fenced at once");
    }
}
