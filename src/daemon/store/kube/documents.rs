//! What the ClusterState objects and the strata-state ConfigMap hold: their shapes as written
//! (camelCase, as Kubernetes objects are), how they are read and encoded, and the changes made to
//! them (a commit-status outbox, a history entry). Pure data: no requests, no cache.

use super::*;

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct Spec {
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub(super) suspended: bool,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub(super) approvals: Vec<ApprovalDoc>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct ApprovalDoc {
    pub(super) revision: String,
    pub(super) by: String,
    pub(super) at: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) identity: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub(super) groups: Vec<String>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct StatusDoc {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) profile_revision: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) cluster_revision: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) digest: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) profile: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) version: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) applied_at: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) sync: Option<Sync>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) message: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) health: Option<Health>,
    #[serde(default)]
    pub(super) drifted: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) updated_at: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) pending: Option<PendingDoc>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub(super) drift: Vec<DriftDoc>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub(super) history: Vec<HistoryDoc>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub(super) objects: Vec<ObjectDoc>,
    #[serde(default, skip_serializing_if = "Outbox::is_empty")]
    pub(super) outbox: Outbox,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct PendingDoc {
    pub(super) base_revision: String,
    pub(super) head_revision: String,
    pub(super) hold: Hold,
    pub(super) summary: String,
    pub(super) diff: String,
    pub(super) since: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) base_digest: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct DriftDoc {
    pub(super) object: String,
    pub(super) path: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) live: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) desired: Option<String>,
    pub(super) found_at: i64,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct HistoryDoc {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) revision: Option<String>,
    pub(super) result: Sync,
    pub(super) summary: String,
    pub(super) at: i64,
    /// Retries of one revision that ended the same way, in a row (absent: one).
    #[serde(default = "one", skip_serializing_if = "is_one")]
    pub(super) count: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) first_at: Option<i64>,
}

pub(super) fn one() -> u32 {
    1
}

pub(super) fn is_one(n: &u32) -> bool {
    *n == 1
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct ObjectDoc {
    pub(super) object: String,
    pub(super) layer: String,
    pub(super) action: String,
}

/// Commit statuses of one cluster (or of none, in the ConfigMap): queued and delivered.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct Outbox {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub(super) queued: Vec<QueuedDoc>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub(super) delivered: Vec<DeliveredDoc>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct QueuedDoc {
    pub(super) revision: String,
    pub(super) context: String,
    pub(super) state: String,
    pub(super) description: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) target_url: Option<String>,
    pub(super) created_at: i64,
    pub(super) attempts: u32,
    pub(super) next_attempt_ms: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) last_error: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct DeliveredDoc {
    pub(super) revision: String,
    pub(super) context: String,
    pub(super) state: String,
    pub(super) description: String,
    pub(super) at: i64,
}

/// What the strata-state ConfigMap holds, one JSON document per key.
#[derive(Clone, Debug, Default, PartialEq)]
pub(super) struct Global {
    pub(super) revision: Option<RevisionState>,
    pub(super) meta: BTreeMap<String, String>,
    pub(super) outbox: Outbox,
    /// Where each rollout stands, by name: fleet-wide, like the rollout itself.
    pub(super) rollouts: BTreeMap<String, StoredRollout>,
}

/// A rollout's progress with the generation it was saved at (the SQLite backend's column).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub(super) struct StoredRollout {
    pub(super) generation: u64,
    pub(super) progress: Progress,
    /// The replica that saved it: a replica hears of the saves of others only.
    #[serde(default)]
    pub(super) by: String,
}

impl StoredRollout {
    pub(super) fn progress(&self) -> Progress {
        Progress { generation: self.generation, ..self.progress.clone() }
    }
}

impl Outbox {
    pub(super) fn is_empty(&self) -> bool {
        self.queued.is_empty() && self.delivered.is_empty()
    }

    /// The SQLite backend's `enqueue`, on one cluster's statuses.
    pub(super) fn enqueue(&mut self, status: &CommitStatus, now: i64, now_ms: i64) -> bool {
        let same = self.delivered.iter().any(|d| {
            d.revision == status.revision
                && d.context == status.context
                && d.state == status.state.as_str()
                && d.description == status.description
        });
        let at = self.queued.iter().position(|q| q.revision == status.revision && q.context == status.context);
        if same {
            if let Some(at) = at {
                self.queued.remove(at);
            }
            return false;
        }
        let entry = QueuedDoc {
            revision: status.revision.clone(),
            context: status.context.clone(),
            state: status.state.as_str().to_string(),
            description: status.description.clone(),
            target_url: status.target_url.clone(),
            created_at: now,
            attempts: 0,
            next_attempt_ms: now_ms,
            last_error: None,
        };
        match at {
            // Replaced in place: it keeps its age in the queue.
            Some(at) => self.queued[at] = QueuedDoc { created_at: self.queued[at].created_at, ..entry },
            None => self.queued.push(entry),
        }
        true
    }

    pub(super) fn delivered(&mut self, status: &CommitStatus, now: i64) {
        self.queued.retain(|q| {
            !(q.revision == status.revision
                && q.context == status.context
                && q.state == status.state.as_str()
                && q.description == status.description)
        });
        self.delivered.retain(|d| !(d.revision == status.revision && d.context == status.context));
        self.delivered.push(DeliveredDoc {
            revision: status.revision.clone(),
            context: status.context.clone(),
            state: status.state.as_str().to_string(),
            description: status.description.clone(),
            at: now,
        });
        if self.delivered.len() > DELIVERED_PER_CLUSTER {
            let excess = self.delivered.len() - DELIVERED_PER_CLUSTER;
            self.delivered.drain(..excess);
        }
    }

    pub(super) fn retry(&mut self, status: &CommitStatus, next_ms: i64, error: &str) {
        for q in self.queued.iter_mut().filter(|q| q.revision == status.revision && q.context == status.context) {
            q.attempts += 1;
            q.next_attempt_ms = next_ms;
            q.last_error = Some(error.to_string());
        }
    }

    /// Drops delivered statuses older than `cutoff` unless their revision is still run or held.
    pub(super) fn prune(&mut self, cutoff: i64, kept: &HashSet<String>) -> usize {
        let before = self.delivered.len();
        self.delivered.retain(|d| d.at >= cutoff || kept.contains(&d.revision));
        before - self.delivered.len()
    }

    pub(super) fn queued(&self) -> impl Iterator<Item = Queued> + '_ {
        self.queued.iter().map(|q| Queued {
            status: CommitStatus {
                revision: q.revision.clone(),
                context: q.context.clone(),
                state: State::parse(&q.state).unwrap_or(State::Error),
                description: q.description.clone(),
                target_url: q.target_url.clone(),
            },
            attempts: q.attempts,
        })
    }
}

/// One ClusterState as last read or written.
#[derive(Clone, Debug)]
pub(super) struct Doc {
    pub(super) metadata: ObjectMeta,
    pub(super) spec: Spec,
    pub(super) status: StatusDoc,
}

impl Doc {
    /// Whether the object stands for a cluster the daemon knows (applied, seeded, synced or
    /// intended for), not just one holding statuses or objects for it.
    pub(super) fn known(&self) -> bool {
        self.status.sync.is_some() || self.status.digest.is_some() || self.spec != Spec::default()
    }

    pub(super) fn state(&self, name: &str) -> ClusterState {
        let s = &self.status;
        ClusterState {
            name: name.to_string(),
            profile_revision: s.profile_revision.clone(),
            cluster_revision: s.cluster_revision.clone(),
            digest: s.digest.clone(),
            profile: s.profile.clone(),
            version: s.version.clone(),
            applied_at: s.applied_at,
            sync: s.sync.unwrap_or(Sync::New),
            message: s.message.clone(),
            health: s.health,
            drifted: s.drifted,
            suspended: self.spec.suspended,
        }
    }

    pub(super) fn pending(&self, name: &str) -> Option<Pending> {
        self.status.pending.as_ref().map(|p| Pending {
            cluster: name.to_string(),
            base_revision: p.base_revision.clone(),
            head_revision: p.head_revision.clone(),
            hold: p.hold.clone(),
            summary: p.summary.clone(),
            diff: p.diff.clone(),
            since: p.since,
            base_digest: p.base_digest.clone(),
        })
    }
}

pub(super) fn decode(object: DynamicObject) -> Option<(String, Doc)> {
    let name = object.metadata.name.clone()?;
    let part = |key: &str| object.data.get(key).cloned().unwrap_or(serde_json::Value::Null);
    let spec = match part("spec") {
        serde_json::Value::Null => Spec::default(),
        value => serde_json::from_value(value).unwrap_or_else(|e| {
            warn!(cluster = %name, error = %e, "ClusterState spec unreadable; taken as empty.");
            Spec::default()
        }),
    };
    let status = match part("status") {
        serde_json::Value::Null => StatusDoc::default(),
        value => serde_json::from_value(value).unwrap_or_else(|e| {
            warn!(cluster = %name, error = %e, "ClusterState status unreadable; taken as empty and derived again.");
            StatusDoc::default()
        }),
    };
    Some((name, Doc { metadata: object.metadata, spec, status }))
}

pub(super) fn decode_global(map: &ConfigMap) -> Global {
    let data = map.data.clone().unwrap_or_default();
    pub(super) fn part<T: serde::de::DeserializeOwned + Default>(data: &BTreeMap<String, String>, key: &str) -> T {
        match data.get(key) {
            None => T::default(),
            Some(text) => serde_json::from_str(text).unwrap_or_else(|e| {
                warn!(key, error = %e, "ConfigMap {GLOBAL}: a key is unreadable; taken as empty.");
                T::default()
            }),
        }
    }
    Global {
        revision: part(&data, "revision"),
        meta: part(&data, "meta"),
        outbox: part(&data, "outbox"),
        rollouts: part(&data, "rollouts"),
    }
}

pub(super) fn encode_global(global: &Global, mut data: BTreeMap<String, String>) -> BTreeMap<String, String> {
    let json = |value: serde_json::Result<String>| value.expect("state serialises");
    data.insert("revision".into(), json(serde_json::to_string(&global.revision)));
    data.insert("meta".into(), json(serde_json::to_string(&global.meta)));
    data.insert("outbox".into(), json(serde_json::to_string(&global.outbox)));
    data.insert("rollouts".into(), json(serde_json::to_string(&global.rollouts)));
    data
}

pub(super) fn add_history(status: &mut StatusDoc, revision: Option<&str>, result: Sync, summary: &str, at: i64) {
    if let Some(newest) = status
        .history
        .last_mut()
        .filter(|h| crate::daemon::store::repeats(Some((h.revision.as_deref(), h.result)), revision, result))
    {
        newest.first_at.get_or_insert(newest.at);
        newest.summary = summary.to_string();
        newest.at = at;
        newest.count = newest.count.saturating_add(1);
        return;
    }
    status.history.push(HistoryDoc {
        revision: revision.map(str::to_string),
        result,
        summary: summary.to_string(),
        at,
        count: 1,
        first_at: None,
    });
    if status.history.len() > HISTORY_KEPT {
        let excess = status.history.len() - HISTORY_KEPT;
        status.history.drain(..excess);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(revision: &str, state: State, description: &str) -> CommitStatus {
        CommitStatus::new(revision, "strata/a".into(), state, description, None)
    }

    #[test]
    fn an_outbox_coalesces_keeps_its_age_and_bounds_what_it_remembers() {
        let mut outbox = Outbox::default();
        assert!(outbox.enqueue(&status("r1", State::Pending, "applying"), 10, 10_000));
        assert!(outbox.enqueue(&status("r1", State::Success, "applied"), 20, 20_000));
        assert_eq!(outbox.queued.len(), 1);
        assert_eq!((outbox.queued[0].state.as_str(), outbox.queued[0].created_at), ("success", 10));
        outbox.delivered(&status("r1", State::Success, "applied"), 30);
        assert!(outbox.queued.is_empty());
        assert!(!outbox.enqueue(&status("r1", State::Success, "applied"), 40, 40_000), "already delivered");
        for i in 0..DELIVERED_PER_CLUSTER + 5 {
            outbox.delivered(&status(&format!("x{i}"), State::Success, "applied"), 50 + i as i64);
        }
        assert_eq!(outbox.delivered.len(), DELIVERED_PER_CLUSTER);
        assert_eq!(outbox.delivered.last().unwrap().revision, format!("x{}", DELIVERED_PER_CLUSTER + 4));
        let kept = HashSet::from(["x104".to_string()]);
        assert_eq!(outbox.prune(1000, &kept), DELIVERED_PER_CLUSTER - 1);
    }
}
