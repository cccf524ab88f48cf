//! The revocation record: how a sign-out (or a rotated token) ends sessions on every replica,
//! though the sessions themselves live only in cookies ([`super::session`]).
//!
//! ```text
//!   principal (token:ci:, token:api:alice, oidc:<sub>, token:ci)  ──keyed hash──>  p-<32 hex>
//!   record: { p-…: "<generation> <when, seconds>" }
//!     Kubernetes mode: ConfigMap strata-sessions in strata's namespace (read-modify-write with
//!                      its resourceVersion; created by the first sign-out)
//!     one host:        state_dir/sessions.json (0600), the process's memory in front of it
//! ```
//!
//! A session carries its principal's generation as it was at sign-in (read fresh then), and is
//! good while that is at least the recorded one. A sign-out raises the generation to
//! max(old + 1, now in ms). Each replica reads the record at most once per [`TTL`], when a
//! session is checked: a cookie signed out through one replica is refused by the others within
//! [`TTL`] (plus one round trip to the API server). When the API server cannot be read, the last
//! record read is used for up to [`MAX_STALE`]; after that sessions are refused until it can be
//! read again (tokens still work). Entries older than the longest session are dropped at the next
//! sign-out: any session they ended has expired by then, and generations only ever grow (they
//! start from the clock), so a dropped entry revives nothing.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, ObjectMeta, PostParams};
use tracing::warn;

use crate::daemon::management::{Failure, Management};

/// How long a replica uses the record it read before reading it again.
pub const TTL: Duration = Duration::from_secs(5);
/// How long the last record read is used while the API server cannot be read.
pub const MAX_STALE: Duration = Duration::from_secs(30);
/// How long a request to the API server for the record may take.
const CALL: Duration = Duration::from_secs(3);

/// Why the revocation record cannot be read or written: where, and the lower error (the file
/// system's, the API server's) as the source.
#[derive(Debug, thiserror::Error)]
pub enum RevokeError {
    #[error("{}: {source}", path.display())]
    File {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The API server refused or failed the request; `message` is the sorted account of it.
    #[error("ConfigMap {namespace}/{CONFIGMAP}: {message}")]
    Kube {
        namespace: String,
        message: String,
        #[source]
        source: Box<kube::Error>,
    },
    #[error("the request to the management cluster failed: {0}")]
    Lost(#[source] tokio::task::JoinError),
    #[error("no answer from the management cluster within {}s", CALL.as_secs())]
    TimedOut,
    #[error("kept conflicting with other replicas' writes")]
    Conflicting,
}

impl RevokeError {
    fn kube(namespace: String, source: kube::Error) -> RevokeError {
        RevokeError::Kube { namespace, message: Failure::of(&source).message, source: Box::new(source) }
    }
}

pub const CONFIGMAP: &str = "strata-sessions";
pub const FILE: &str = "sessions.json";

/// One principal's entry: its generation, and when it was last raised (seconds since the epoch).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Entry {
    generation: u64,
    at: i64,
}

type Record = BTreeMap<String, Entry>;

fn parse(data: &BTreeMap<String, String>) -> Record {
    data.iter()
        .filter_map(|(k, v)| {
            let (generation, at) = v.split_once(' ')?;
            Some((k.clone(), Entry { generation: generation.parse().ok()?, at: at.parse().ok()? }))
        })
        .collect()
}

fn unparse(record: &Record) -> BTreeMap<String, String> {
    record.iter().map(|(k, e)| (k.clone(), format!("{} {}", e.generation, e.at))).collect()
}

fn now_secs() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap_or(0)
}

fn now_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

/// `record` with each of `keys` raised, and entries older than `keep` dropped.
fn raised(mut record: Record, keys: &[String], keep: Duration) -> Record {
    let now = now_secs();
    record.retain(|_, e| now.saturating_sub(e.at) <= keep.as_secs() as i64);
    for key in keys {
        let old = record.get(key).map_or(0, |e| e.generation);
        record.insert(key.clone(), Entry { generation: (old + 1).max(now_ms()), at: now });
    }
    record
}

enum Backend {
    File(PathBuf),
    Kube(Arc<Management>),
}

struct Cached {
    record: Record,
    /// When the record was last read from where replicas share it (`None`: never).
    read: Option<Instant>,
}

pub struct Revocations {
    backend: Backend,
    cached: Mutex<Cached>,
    /// One refresh at a time; the others wait for it and take its result.
    refreshing: tokio::sync::Mutex<()>,
    /// Entries older than this are dropped: the longest a session lives.
    keep: Duration,
}

impl Revocations {
    /// One host: the record in `state_dir/sessions.json`, read now.
    pub fn file(state_dir: &std::path::Path, keep: Duration) -> Revocations {
        let path = state_dir.join(FILE);
        let record = match std::fs::read(&path) {
            Ok(bytes) => match serde_json::from_slice::<BTreeMap<String, String>>(&bytes) {
                Ok(data) => parse(&data),
                Err(e) => {
                    warn!(file = %path.display(), error = %e, "The sessions' revocation record is unreadable: starting afresh.");
                    Record::new()
                }
            },
            Err(_) => Record::new(),
        };
        Revocations {
            backend: Backend::File(path),
            cached: Mutex::new(Cached { record, read: Some(Instant::now()) }),
            refreshing: tokio::sync::Mutex::new(()),
            keep,
        }
    }

    /// Kubernetes mode: ConfigMap strata-sessions, read when first needed.
    pub fn kube(mgmt: Arc<Management>, keep: Duration) -> Revocations {
        Revocations {
            backend: Backend::Kube(mgmt),
            cached: Mutex::new(Cached { record: Record::new(), read: None }),
            refreshing: tokio::sync::Mutex::new(()),
            keep,
        }
    }

    fn lookup(&self, keys: &[String]) -> Vec<u64> {
        let cached = self.cached.lock().expect("revocations lock");
        keys.iter().map(|k| cached.record.get(k).map_or(0, |e| e.generation)).collect()
    }

    fn age(&self) -> Option<Duration> {
        self.cached.lock().expect("revocations lock").read.map(|r| r.elapsed())
    }

    /// The generations of `keys` as the replicas share them: read again when the copy here is
    /// older than [`TTL`] (or at all, with `fresh`).
    pub async fn generations(&self, keys: &[String], fresh: bool) -> Result<Vec<u64>, RevokeError> {
        let Backend::Kube(mgmt) = &self.backend else { return Ok(self.lookup(keys)) };
        let due = |age: Option<Duration>| age.is_none_or(|a| fresh || a >= TTL);
        if !due(self.age()) {
            return Ok(self.lookup(keys));
        }
        let started = Instant::now();
        let _turn = self.refreshing.lock().await;
        // Someone else read it while this request waited.
        if self.age().is_some_and(|a| a <= started.elapsed()) {
            return Ok(self.lookup(keys));
        }
        match read(mgmt).await {
            Ok((record, _)) => {
                *self.cached.lock().expect("revocations lock") = Cached { record, read: Some(Instant::now()) };
                Ok(self.lookup(keys))
            }
            Err(e) if !fresh && self.age().is_some_and(|a| a < MAX_STALE) => {
                warn!(error = %e, "Cannot read the sessions' revocation record; using the last one read.");
                Ok(self.lookup(keys))
            }
            Err(e) => Err(e),
        }
    }

    /// Raises the generation of each of `keys`: their sessions end on every replica.
    pub async fn raise(&self, keys: &[String]) -> Result<(), RevokeError> {
        let record = match &self.backend {
            Backend::File(path) => {
                let record = raised(self.cached.lock().expect("revocations lock").record.clone(), keys, self.keep);
                write_file(path, &record)?;
                record
            }
            Backend::Kube(mgmt) => {
                let mut attempt = 0;
                loop {
                    attempt += 1;
                    let (old, object) = read(mgmt).await?;
                    let record = raised(old, keys, self.keep);
                    match write(mgmt, object, &record).await {
                        Ok(()) => break record,
                        Err(Conflict::Again) if attempt < 5 => continue,
                        Err(Conflict::Again) => return Err(RevokeError::Conflicting),
                        Err(Conflict::Failed(e)) => return Err(e),
                    }
                }
            }
        };
        *self.cached.lock().expect("revocations lock") = Cached { record, read: Some(Instant::now()) };
        Ok(())
    }
}

fn write_file(path: &std::path::Path, record: &Record) -> Result<(), RevokeError> {
    use std::io::Write as _;
    let failed = |source| RevokeError::File { path: path.to_path_buf(), source };
    let dir = path.parent().unwrap_or(std::path::Path::new("."));
    let mut file = tempfile::NamedTempFile::new_in(dir).map_err(failed)?;
    let text = serde_json::to_vec_pretty(&unparse(record)).expect("serialises");
    file.write_all(&text).and_then(|_| file.as_file().sync_all()).map_err(failed)?;
    file.persist(path).map_err(|e| failed(e.error))?;
    Ok(())
}

enum Conflict {
    Again,
    Failed(RevokeError),
}

/// Runs `work` on the management thread, at most [`CALL`].
async fn on_mgmt<T: Send + 'static>(
    mgmt: &Management,
    work: impl std::future::Future<Output = Result<T, RevokeError>> + Send + 'static,
) -> Result<T, RevokeError> {
    match tokio::time::timeout(CALL, mgmt.spawn(work)).await {
        Ok(Ok(result)) => result,
        Ok(Err(e)) => Err(RevokeError::Lost(e)),
        Err(_) => Err(RevokeError::TimedOut),
    }
}

async fn read(mgmt: &Management) -> Result<(Record, Option<ConfigMap>), RevokeError> {
    let configmaps: Api<ConfigMap> = mgmt.api();
    let namespace = mgmt.namespace.clone();
    on_mgmt(mgmt, async move {
        match configmaps.get_opt(CONFIGMAP).await {
            Ok(Some(object)) => Ok((object.data.as_ref().map(parse).unwrap_or_default(), Some(object))),
            Ok(None) => Ok((Record::new(), None)),
            Err(e) => Err(RevokeError::kube(namespace, e)),
        }
    })
    .await
}

async fn write(mgmt: &Management, old: Option<ConfigMap>, record: &Record) -> Result<(), Conflict> {
    let configmaps: Api<ConfigMap> = mgmt.api();
    let namespace = mgmt.namespace.clone();
    let data = unparse(record);
    let work = async move {
        let result = match old {
            Some(mut object) => {
                object.data = Some(data);
                configmaps.replace(CONFIGMAP, &PostParams::default(), &object).await
            }
            None => {
                let object = ConfigMap {
                    metadata: ObjectMeta {
                        name: Some(CONFIGMAP.into()),
                        labels: Some(BTreeMap::from([(
                            crate::render::object::LABEL_MANAGED_BY.to_string(),
                            crate::render::object::FIELD_MANAGER.to_string(),
                        )])),
                        ..ObjectMeta::default()
                    },
                    data: Some(data),
                    ..ConfigMap::default()
                };
                configmaps.create(&PostParams::default(), &object).await
            }
        };
        match result {
            Ok(_) => Ok(Ok(())),
            Err(e) if Failure::is(&e, 409) => Ok(Err(())),
            Err(e) => Err(RevokeError::kube(namespace, e)),
        }
    };
    match on_mgmt(mgmt, work).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(())) => Err(Conflict::Again),
        Err(e) => Err(Conflict::Failed(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generations_only_grow_and_old_entries_go() {
        let keep = Duration::from_secs(3600);
        let record = raised(Record::new(), &["p-a".into()], keep);
        let first = record["p-a"].generation;
        assert!(first >= now_ms() - 1000);
        let record = raised(record, &["p-a".into(), "p-b".into()], keep);
        assert!(record["p-a"].generation > first);
        // An entry older than the longest session is dropped; raised again, it is higher still.
        let mut old = record.clone();
        old.get_mut("p-a").unwrap().at -= 7200;
        let pruned = raised(old, &["p-b".into()], keep);
        assert!(!pruned.contains_key("p-a"));
        assert_eq!(parse(&unparse(&record)), record);
    }

    #[tokio::test]
    async fn one_host_keeps_the_record_in_its_state_directory() {
        let dir = tempfile::tempdir().unwrap();
        let keep = Duration::from_secs(3600);
        let revocations = Revocations::file(dir.path(), keep);
        assert_eq!(revocations.generations(&["p-a".into()], false).await.unwrap(), vec![0]);
        revocations.raise(&["p-a".into()]).await.unwrap();
        let raised = revocations.generations(&["p-a".into()], false).await.unwrap()[0];
        assert!(raised > 0);
        // A restarted daemon reads it back.
        let again = Revocations::file(dir.path(), keep);
        assert_eq!(again.generations(&["p-a".into(), "p-b".into()], true).await.unwrap(), vec![raised, 0]);
    }
}
