//! Rollout progress larger than a ConfigMap holds: the clusters' part kept in chunks.
//!
//! ```text
//!   strata-state  rollouts: { canary: { generation: 7, progress (waves, state; no clusters),
//!                                       chunks: [strata-progress-<rollout>-<save>-0, "", …] } }
//!   strata-progress-<rollout>-<save>-<bucket>   immutable ConfigMaps, one per non-empty bucket:
//!                                               the clusters whose name hashes to it
//! ```
//!
//! A rollout of up to [`INLINE_CLUSTERS`] clusters taking up to [`INLINE_BYTES`] keeps them
//! inline, as it always did. A larger one spreads them over a power of two of buckets (about
//! [`CHUNK_CLUSTERS`] each) by a hash of their names, so a save that changes one cluster writes
//! one chunk. A save creates the
//! chunks that changed under names no other save uses, then compare-and-swaps the head in
//! strata-state on its generation as before: the head is the commit point, so a reader sees the
//! chunks of one generation or of the next, never a mix, and a chunk is never changed once
//! written (immutable: any copy of it is the same, so the cache of them needs no ordering). The
//! winner deletes the chunks its save left behind, the loser those it made; what a killed
//! process leaves is swept by the hourly housekeeping once [`ORPHAN_AGE`] old.

use super::*;
use crate::rollout::gate::ClusterProgress;
use sha2::{Digest, Sha256};
use std::sync::atomic::{AtomicU64, Ordering};

/// The clusters' part of one rollout's progress, or of one chunk of it.
pub(super) type Clusters = BTreeMap<String, ClusterProgress>;

/// Clusters' progress up to this size (and [`INLINE_CLUSTERS`]) stays inline in strata-state:
/// small enough that many rollouts fit there beside each other.
pub(super) const INLINE_BYTES: usize = 16 * 1024;
pub(super) const INLINE_CLUSTERS: usize = 50;
/// About this many clusters to a chunk (~300 bytes each).
const CHUNK_CLUSTERS: usize = 200;
/// A chunk is kept under this size (a ConfigMap holds 1 MiB): past it the buckets double.
const CHUNK_BYTES: usize = 512 * 1024;
/// The label of a chunk: the hash of the rollout it is of.
pub(super) const CHUNK_LABEL: &str = "strata.dev/rollout-progress";
/// The annotation naming the rollout a chunk is of, for people.
const ROLLOUT_ANNOTATION: &str = "strata.dev/rollout";
/// The data key of a chunk's clusters.
const CHUNK_KEY: &str = "clusters";
/// A chunk no head names is deleted by the housekeeping once this old (a save takes far less
/// between creating its chunks and naming them).
pub(super) const ORPHAN_AGE: Duration = Duration::from_secs(600);

fn hex(bytes: &[u8], len: usize) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect::<String>()[..len].to_string()
}

/// The bucket of a cluster among `buckets`: the same in every process and every release.
pub(super) fn bucket(cluster: &str, buckets: usize) -> usize {
    let digest = Sha256::digest(cluster.as_bytes());
    let n = u64::from_be_bytes(digest[..8].try_into().expect("8 bytes"));
    (n % buckets as u64) as usize
}

/// How many buckets `clusters` clusters spread over: `previous` while it stays within a factor
/// of two of what their number asks for (so chunks are reused), else that number.
pub(super) fn buckets_for(clusters: usize, previous: usize) -> usize {
    let wanted = clusters.div_ceil(CHUNK_CLUSTERS).max(1).next_power_of_two();
    if previous.is_power_of_two() && previous * 2 >= wanted && previous <= wanted * 2 { previous } else { wanted }
}

/// One bucket's clusters, in name order, borrowed.
pub(super) type Bucket<'a> = Vec<(&'a String, &'a ClusterProgress)>;

/// The clusters of each of `buckets` buckets.
pub(super) fn spread(clusters: &Clusters, buckets: usize) -> Vec<Bucket<'_>> {
    let mut parts = vec![Bucket::new(); buckets];
    for (name, progress) in clusters {
        parts[bucket(name, buckets)].push((name, progress));
    }
    parts
}

/// Whether a chunk holds exactly a bucket's clusters.
pub(super) fn holds(chunk: &Clusters, part: &Bucket) -> bool {
    chunk.len() == part.len() && chunk.iter().zip(part).all(|((k, v), (pk, pv))| k == *pk && v == *pv)
}

/// The chunks to write for `clusters`, against the chunks `old` of the save before (those
/// holding a bucket as it is now are named again): for each bucket its chunk's name ("" for an
/// empty bucket), and the chunks to make with their clusters and encoding. A chunk past
/// [`CHUNK_BYTES`] doubles the buckets.
pub(super) fn chunks_for(
    clusters: &Clusters,
    old: &[String],
    cached: impl Fn(&str) -> Option<Arc<Clusters>>,
    name: impl Fn(usize) -> String,
) -> (Vec<String>, Vec<(String, Clusters, String)>) {
    let mut buckets = buckets_for(clusters.len(), old.len());
    'spread: loop {
        let (mut names, mut made) = (Vec::with_capacity(buckets), Vec::new());
        for (i, part) in spread(clusters, buckets).into_iter().enumerate() {
            let kept = old
                .get(i)
                .filter(|n| old.len() == buckets && !n.is_empty() && cached(n).is_some_and(|c| holds(&c, &part)));
            if let Some(kept) = kept {
                names.push(kept.clone());
            } else if part.is_empty() {
                names.push(String::new());
            } else {
                let owned: Clusters = part.into_iter().map(|(k, v)| (k.clone(), v.clone())).collect();
                let json = encoded(&owned);
                if json.len() > CHUNK_BYTES && owned.len() > 1 {
                    buckets *= 2;
                    continue 'spread;
                }
                names.push(name(i));
                made.push((name(i), owned, json));
            }
        }
        return (names, made);
    }
}

pub(super) fn encoded(clusters: &Clusters) -> String {
    serde_json::to_string(clusters).expect("progress serialises")
}

/// A name for chunk `bucket` of a save: unique to the save (this process, its start and a
/// count), so no two saves, here or on other replicas, ever make the same name.
pub(super) fn chunk_name(rollout: &str, save: &str, bucket: usize) -> String {
    format!("strata-progress-{}-{save}-{bucket}", rollout_hash(rollout))
}

pub(super) fn rollout_hash(rollout: &str) -> String {
    hex(&Sha256::digest(rollout.as_bytes()), 10)
}

/// A name no other save uses: the process's identity, start and a count of its saves.
pub(super) fn save_id(identity: &str) -> String {
    static STARTED: std::sync::OnceLock<u128> = std::sync::OnceLock::new();
    static SAVES: AtomicU64 = AtomicU64::new(0);
    let started = *STARTED
        .get_or_init(|| std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos()));
    let n = SAVES.fetch_add(1, Ordering::Relaxed);
    let mut hash = Sha256::new();
    hash.update(identity.as_bytes());
    hash.update(started.to_be_bytes());
    hash.update(std::process::id().to_be_bytes());
    hash.update(n.to_be_bytes());
    hex(&hash.finalize(), 12)
}

/// The ConfigMap of one chunk, its clusters `encoded`.
pub(super) fn chunk_map(name: &str, rollout: &str, encoded: String) -> ConfigMap {
    let mut labels = labels();
    labels.insert(CHUNK_LABEL.into(), rollout_hash(rollout));
    ConfigMap {
        metadata: ObjectMeta {
            name: Some(name.into()),
            labels: Some(labels),
            annotations: Some(BTreeMap::from([(ROLLOUT_ANNOTATION.into(), rollout.into())])),
            ..ObjectMeta::default()
        },
        data: Some(BTreeMap::from([(CHUNK_KEY.into(), encoded)])),
        immutable: Some(true),
        ..ConfigMap::default()
    }
}

/// The clusters a chunk's ConfigMap holds (`None`: unreadable).
pub(super) fn chunk_clusters(map: &ConfigMap) -> Option<Clusters> {
    let text = map.data.as_ref()?.get(CHUNK_KEY)?;
    serde_json::from_str(text).ok()
}

/// Chunks read or made, by name: immutable, so any copy is the one.
#[derive(Default)]
pub(super) struct Chunks(Mutex<HashMap<String, Held>>);

/// A chunk's clusters, and when this process made it (`None`: read).
type Held = (Arc<Clusters>, Option<std::time::Instant>);

/// A chunk this process made is kept this long before its head names it (a save's calls take
/// [`CALL_TIMEOUT`] at most each).
const MADE_KEPT: Duration = Duration::from_secs(60);

impl Chunks {
    pub(super) fn get(&self, name: &str) -> Option<Arc<Clusters>> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).get(name).map(|(c, _)| c.clone())
    }

    /// Keeps a chunk read (`made`: made here, named by no head yet).
    pub(super) fn insert(&self, name: String, clusters: Arc<Clusters>, made: bool) {
        let made = made.then(std::time::Instant::now);
        self.0.lock().unwrap_or_else(|p| p.into_inner()).insert(name, (clusters, made));
    }

    pub(super) fn remove(&self, name: &str) {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).remove(name);
    }

    /// Forgets the chunks none of `heads` names, but for those just made here.
    pub(super) fn keep_only<'a>(&self, heads: impl Iterator<Item = &'a StoredRollout>) {
        let named: HashSet<&str> = heads.flat_map(|h| h.chunks.iter().map(String::as_str)).collect();
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|name, (_, made)| named.contains(name.as_str()) || made.is_some_and(|at| at.elapsed() < MADE_KEPT));
    }
}

impl Inner {
    /// Creates the chunks of a save (kept as made here).
    pub(super) async fn create_chunks(&self, rollout: &str, made: Vec<(String, Clusters, String)>) -> Result<()> {
        let params = PostParams { field_manager: Some(FIELD_MANAGER.into()), ..PostParams::default() };
        let results = each(made, |(name, clusters, encoded)| {
            let map = chunk_map(&name, rollout, encoded);
            let params = &params;
            async move {
                let object = format!("ConfigMap {}/{name}", self.mgmt.namespace);
                self.configmaps.create(params, &map).await.map_err(|e| api_error(&object, &e))?;
                self.chunks.insert(name, Arc::new(clusters), true);
                Ok::<_, StoreError>(())
            }
        })
        .await;
        results.into_iter().collect()
    }

    /// Reads chunks into the cache; those gone are left out (the caller reads the head again).
    pub(super) async fn read_chunks(&self, names: Vec<String>) -> Result<()> {
        let results = each(names, |name| async move {
            let object = format!("ConfigMap {}/{name}", self.mgmt.namespace);
            let Some(map) = self.configmaps.get_opt(&name).await.map_err(|e| api_error(&object, &e))? else {
                return Ok(());
            };
            let clusters = chunk_clusters(&map)
                .ok_or_else(|| store_error(&object, "unreadable", "not rollout progress as strata writes it"))?;
            self.chunks.insert(name, Arc::new(clusters), false);
            Ok::<_, StoreError>(())
        })
        .await;
        results.into_iter().collect()
    }

    /// Deletes chunks (those gone already included).
    pub(super) async fn delete_chunks(&self, names: Vec<String>) -> Result<()> {
        let results = each(names, |name| async move {
            self.chunks.remove(&name);
            let object = format!("ConfigMap {}/{name}", self.mgmt.namespace);
            match self.configmaps.delete(&name, &DeleteParams::default()).await {
                Ok(_) => Ok(()),
                Err(e) if Failure::is(&e, 404) => Ok(()),
                Err(e) => Err(api_error(&object, &e)),
            }
        })
        .await;
        results.into_iter().collect()
    }

    /// Every chunk in the namespace, with when it was made (milliseconds).
    pub(super) async fn list_chunks(&self) -> Result<Vec<(String, Option<i64>)>> {
        let object = format!("ConfigMaps {}/strata-progress-*", self.mgmt.namespace);
        let list = self
            .configmaps
            .list(&ListParams::default().labels(CHUNK_LABEL))
            .await
            .map_err(|e| api_error(&object, &e))?;
        Ok(list
            .items
            .into_iter()
            .filter_map(|m| {
                let created = m.metadata.creation_timestamp.as_ref().map(|t| t.0.as_millisecond());
                Some((m.metadata.name?, created))
            })
            .collect())
    }
}

/// Chunk requests in flight at once.
const CHUNK_REQUESTS: usize = 8;

/// `request` for each of `items`, [`CHUNK_REQUESTS`] at a time: their results, in any order.
async fn each<T, R, F: Future<Output = R>>(items: Vec<T>, request: impl FnMut(T) -> F) -> Vec<R> {
    futures::stream::iter(items.into_iter().map(request)).buffer_unordered(CHUNK_REQUESTS).collect().await
}

/// A rollout's progress whole: its head with the clusters of its chunks (`None`: a chunk is not
/// in `chunks`).
pub(super) fn assembled(head: &StoredRollout, chunks: &Chunks) -> Option<Progress> {
    let mut progress = head.progress();
    for name in head.chunks.iter().filter(|n| !n.is_empty()) {
        let part = chunks.get(name)?;
        progress.clusters.extend(part.iter().map(|(k, v)| (k.clone(), v.clone())));
    }
    Some(progress)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rollout::Cause;
    use crate::rollout::gate::ClusterRun;

    fn clusters(n: usize) -> Clusters {
        (0..n)
            .map(|i| {
                let progress = ClusterProgress {
                    wave: "rest".into(),
                    cause: Cause::InPlaceEdit,
                    to: "edge@1.1.0".into(),
                    target: format!("sha256:{:064x}", i),
                    state: ClusterRun::Waiting,
                    released_at: None,
                    finished_at: None,
                    before: None,
                    message: None,
                };
                (format!("cluster-{i:06}"), progress)
            })
            .collect()
    }

    fn chunks(all: &Clusters, old: &[String], cache: &HashMap<String, Arc<Clusters>>) -> (Vec<String>, Vec<String>) {
        let (names, made) = chunks_for(all, old, |n| cache.get(n).cloned(), |i| format!("new-{i}"));
        (names, made.into_iter().map(|(name, _, _)| name).collect())
    }

    #[test]
    fn clusters_spread_over_buckets_that_stay_as_the_fleet_changes_a_little() {
        let mut all = clusters(100_000);
        let (names, made) = chunks_for(&all, &[], |_| None, |i| format!("first-{i}"));
        assert_eq!(names.len(), 512, "100,000 / 200 → 500, rounded up to a power of two");
        assert_eq!(made.len(), 512);
        assert_eq!(made.iter().map(|(_, c, _)| c.len()).sum::<usize>(), 100_000);
        let largest = made.iter().map(|(_, _, json)| json.len()).max().unwrap();
        assert!(largest < 150 * 1024, "a chunk is small: {largest} bytes");
        for (name, clusters, _) in &made {
            assert!(clusters.keys().all(|c| format!("first-{}", bucket(c, 512)) == *name));
        }
        // One cluster changed: one chunk made again, the rest named again.
        let cache: HashMap<String, Arc<Clusters>> = made.into_iter().map(|(n, c, _)| (n, Arc::new(c))).collect();
        all.get_mut("cluster-000042").unwrap().state = ClusterRun::Updated;
        let (again, made) = chunks(&all, &names, &cache);
        let changed = bucket("cluster-000042", 512);
        assert_eq!(made, [format!("new-{changed}")]);
        assert!(again.iter().enumerate().all(|(i, n)| (i == changed) != (*n == names[i])));
        // Somewhat fewer or more clusters keep the buckets; far fewer, fewer buckets.
        assert_eq!(buckets_for(130_000, 512), 512);
        assert_eq!(buckets_for(60_000, 512), 512);
        assert_eq!(buckets_for(10_000, 512), 64);
        // Not what is cached: made again.
        assert_eq!(chunks(&all, &names, &HashMap::new()).1.len(), 512);
    }

    #[test]
    fn clusters_too_large_for_a_chunk_double_the_buckets() {
        let mut all = clusters(400);
        for progress in all.values_mut() {
            progress.message = Some("x".repeat(4000));
        }
        let (names, made) = chunks_for(&all, &[], |_| None, |i| i.to_string());
        assert!(names.len() > 2, "{} buckets", names.len());
        assert!(made.iter().all(|(_, _, json)| json.len() <= CHUNK_BYTES));
        assert_eq!(made.iter().map(|(_, c, _)| c.len()).sum::<usize>(), 400);
    }

    #[test]
    fn save_names_are_never_the_same_twice_and_fit_a_configmap_name() {
        let a = save_id("replica-0");
        let b = save_id("replica-0");
        assert_ne!(a, b);
        let name = chunk_name("canary", &a, 511);
        assert!(crate::names::is_dns1123_subdomain(&name) && name.len() < 64, "{name}");
    }
}
