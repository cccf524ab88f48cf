//! What the ClusterState objects and the strata-state ConfigMap hold: their shapes as written
//! (camelCase, as Kubernetes objects are), how they are read and encoded, and the changes made to
//! them (a commit-status outbox, a history entry). Pure data: no requests, no cache.

use super::*;

// The ClusterState resource: its CRD (deploy/kubernetes/crd.yaml, see [`crd`]) is generated from
// these types, so the schema the API server checks and the shapes strata writes cannot drift
// apart. The objects themselves are still read and written as `DynamicObject`s: an unreadable
// part is taken as empty (see [`decode`]) rather than failing the whole object. (Not doc
// comments: they would be the schema's descriptions. The types are `pub`, in this private module,
// as the derive's `ClusterStateObject` is.)
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, kube::CustomResource, schemars::JsonSchema)]
#[kube(
    group = "strata.dev",
    version = "v1",
    kind = "ClusterState",
    root = "ClusterStateObject",
    namespaced,
    status = "StatusDoc",
    shortname = "cst",
    label("app.kubernetes.io/name", "strata"),
    label("app.kubernetes.io/part-of", "strata"),
    printcolumn = r#"{"name": "Profile", "type": "string", "jsonPath": ".status.profile"}"#,
    printcolumn = r#"{"name": "Version", "type": "string", "jsonPath": ".status.version"}"#,
    printcolumn = r#"{"name": "Revision", "type": "string", "jsonPath": ".status.clusterRevision", "priority": 1}"#,
    printcolumn = r#"{"name": "Sync", "type": "string", "jsonPath": ".status.sync"}"#,
    printcolumn = r#"{"name": "Health", "type": "string", "jsonPath": ".status.health"}"#,
    printcolumn = r#"{"name": "Pending", "type": "string", "jsonPath": ".status.pending.headRevision"}"#,
    printcolumn = r#"{"name": "Suspended", "type": "boolean", "jsonPath": ".spec.suspended"}"#
)]
#[schemars(transform = crd_shape)]
#[serde(rename_all = "camelCase")]
pub struct Spec {
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    #[schemars(description = "strata leaves the cluster alone (strata suspend / resume).")]
    pub(super) suspended: bool,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(description = "Approved pending updates, by the revision reviewed; the newest 100.")]
    pub(super) approvals: Vec<ApprovalDoc>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[schemars(transform = crd_shape)]
#[serde(rename_all = "camelCase")]
pub struct ApprovalDoc {
    pub(super) revision: String,
    pub(super) by: String,
    #[schemars(description = "Unix seconds.")]
    pub(super) at: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(description = "The identity approval rules count (the token's or the provider's name).")]
    pub(super) identity: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(description = "The identity's groups when it approved.")]
    pub(super) groups: Vec<String>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[schemars(transform = crd_shape)]
#[serde(rename_all = "camelCase")]
pub struct StatusDoc {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(description = "The revision whose profile content is applied.")]
    pub(super) profile_revision: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(description = "The revision whose cluster file is applied.")]
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
    #[schemars(schema_with = "sync_schema")]
    pub(super) sync: Option<Sync>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) message: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "health_schema")]
    pub(super) health: Option<Health>,
    #[serde(default)]
    #[schemars(description = "Drifted fields at the last check.")]
    pub(super) drifted: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) updated_at: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(description = "An in-place edit held for approval or a window.")]
    pub(super) pending: Option<PendingDoc>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(description = "Drift findings (redacted), the first 1000 by object and path.")]
    pub(super) drift: Vec<DriftDoc>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(
        description = "The last 50 distinct events, oldest first; retries of one revision that end the same way are one entry with a count."
    )]
    pub(super) history: Vec<HistoryDoc>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub(super) objects: Vec<ObjectDoc>,
    #[serde(default, skip_serializing_if = "Outbox::is_empty")]
    #[schemars(description = "Commit statuses of this cluster, queued for the forge and delivered.")]
    pub(super) outbox: Outbox,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[schemars(transform = crd_shape)]
#[serde(rename_all = "camelCase")]
pub struct PendingDoc {
    pub(super) base_revision: String,
    pub(super) head_revision: String,
    #[schemars(schema_with = "hold_schema")]
    pub(super) hold: Hold,
    pub(super) summary: String,
    #[schemars(description = "Secret values redacted.")]
    pub(super) diff: String,
    pub(super) since: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(description = "The digest of the set the diff starts from.")]
    pub(super) base_digest: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[schemars(transform = crd_shape)]
#[serde(rename_all = "camelCase")]
pub struct DriftDoc {
    pub(super) object: String,
    pub(super) path: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) live: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) desired: Option<String>,
    pub(super) found_at: i64,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[schemars(transform = crd_shape)]
#[serde(rename_all = "camelCase")]
pub struct HistoryDoc {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) revision: Option<String>,
    #[schemars(schema_with = "string_schema")]
    pub(super) result: Sync,
    pub(super) summary: String,
    pub(super) at: i64,
    // Retries of one revision that ended the same way, in a row (absent: one). (Not a doc
    // comment: it would be the schema's description.)
    #[serde(default = "one", skip_serializing_if = "is_one")]
    #[schemars(schema_with = "count_schema")]
    pub(super) count: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) first_at: Option<i64>,
}

// The CRD's schema, as deploy/kubernetes/crd.yaml declares it: fields strata leaves out are
// absent, never null, and defaults are strata's, so the schema says neither (`crd_shape`); the
// states' enums are made of the states themselves; a hold's is its tag's values.

fn crd_shape(schema: &mut schemars::Schema) {
    if let Some(properties) = schema.get_mut("properties").and_then(|p| p.as_object_mut()) {
        for property in properties.values_mut() {
            let Some(property) = property.as_object_mut() else { continue };
            property.remove("default");
            if let Some(serde_json::Value::Array(types)) = property.get("type") {
                let types: Vec<_> = types.iter().filter(|t| *t != "null").cloned().collect();
                if let [only] = types.as_slice() {
                    property.insert("type".into(), only.clone());
                }
            }
        }
    }
}

/// The ClusterState CRD, as deploy/kubernetes/crd.yaml holds it: the derive's, with its root
/// schema holding spec and status only (no title or description of the generated type, and
/// spec not required: an object created for its status alone has an empty one), and listKind
/// spelled out as the file always had it (the API server's default, which the derive leaves out).
/// Only the test that holds the file to it needs it: the file is what gets installed.
#[cfg(test)]
pub fn crd() -> k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition {
    use kube::CustomResourceExt;
    let mut crd = ClusterStateObject::crd();
    crd.spec.names.list_kind = Some(format!("{KIND}List"));
    for version in &mut crd.spec.versions {
        if let Some(root) = version.schema.as_mut().and_then(|s| s.open_api_v3_schema.as_mut()) {
            (root.title, root.description, root.required) = (None, None, None);
            if let Some(status) = root.properties.as_mut().and_then(|p| p.get_mut("status")) {
                status.nullable = None;
            }
        }
    }
    crd
}

fn sync_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    let values: Vec<&str> = Sync::ALL.iter().map(|s| s.as_str()).collect();
    schemars::json_schema!({ "type": "string", "enum": values })
}

fn health_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    let values: Vec<&str> = Health::ALL.iter().map(|h| h.as_str()).collect();
    schemars::json_schema!({ "type": "string", "enum": values })
}

fn hold_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    let string = serde_json::json!({ "type": "string" });
    schemars::json_schema!({
        "type": "object",
        "required": ["until"],
        "properties": {
            "until": { "type": "string", "enum": ["approval", "window", "rollout"] },
            "window": string, "rollout": string, "wave": string, "why": string,
        }
    })
}

fn string_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({ "type": "string" })
}

fn int32_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({ "type": "integer", "format": "int32" })
}

fn count_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({ "type": "integer", "format": "int32", "minimum": 1 })
}

pub(super) fn one() -> u32 {
    1
}

pub(super) fn is_one(n: &u32) -> bool {
    *n == 1
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[schemars(transform = crd_shape)]
#[serde(rename_all = "camelCase")]
pub struct ObjectDoc {
    pub(super) object: String,
    pub(super) layer: String,
    pub(super) action: String,
}

/// Commit statuses of one cluster (or of none, in the ConfigMap): queued and delivered.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[schemars(transform = crd_shape)]
#[serde(rename_all = "camelCase")]
pub struct Outbox {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub(super) queued: Vec<QueuedDoc>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub(super) delivered: Vec<DeliveredDoc>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[schemars(transform = crd_shape)]
#[serde(rename_all = "camelCase")]
pub struct QueuedDoc {
    pub(super) revision: String,
    pub(super) context: String,
    pub(super) state: String,
    pub(super) description: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) target_url: Option<String>,
    pub(super) created_at: i64,
    #[schemars(schema_with = "int32_schema")]
    pub(super) attempts: u32,
    pub(super) next_attempt_ms: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) last_error: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[schemars(transform = crd_shape)]
#[serde(rename_all = "camelCase")]
pub struct DeliveredDoc {
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
    /// The ConfigMaps holding its clusters, one per bucket ("": none in it), when they are too
    /// many to hold here; see [`super::progress`].
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub(super) chunks: Vec<String>,
}

impl StoredRollout {
    /// Its progress as held here: without the clusters of its chunks.
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
}

impl QueuedDoc {
    pub(super) fn queued(&self) -> Queued {
        Queued {
            status: CommitStatus {
                revision: self.revision.clone(),
                context: self.context.clone(),
                state: State::parse(&self.state).unwrap_or(State::Error),
                description: self.description.clone(),
                target_url: self.target_url.clone(),
            },
            attempts: self.attempts,
        }
    }
}

/// One ClusterState as last read or written.
#[derive(Clone, Debug, Default)]
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

    /// Its pending update, with its diff.
    pub(super) fn pending(&self, name: &str) -> Option<Pending> {
        self.status.pending.as_ref().map(|p| pending_of(name, p, true))
    }
}

/// What the cache holds of one ClusterState: all of it for a cluster this process owns (its
/// work reads and writes every part), else its [`Brief`], what is read of every cluster of the
/// fleet (lists, totals, the rollout gate, approval verdicts). So a replica's memory grows with
/// the clusters it owns, not with the fleet; a part a brief leaves out (history, objects, drift
/// findings, a pending diff, delivered statuses) is read from the API server when asked for.
#[derive(Clone, Debug)]
pub(super) enum Held {
    Whole(Box<Doc>),
    Brief(Box<Brief>),
}

/// A ClusterState without its bulky parts; the strings many clusters share (revisions, digests,
/// profiles, versions, messages) are one allocation each ([`Strings`]).
#[derive(Clone, Debug)]
pub(super) struct Brief {
    resource_version: Option<Box<str>>,
    spec: Spec,
    profile_revision: Option<Arc<str>>,
    cluster_revision: Option<Arc<str>>,
    digest: Option<Arc<str>>,
    profile: Option<Arc<str>>,
    version: Option<Arc<str>>,
    message: Option<Arc<str>>,
    applied_at: Option<i64>,
    sync: Option<Sync>,
    health: Option<Health>,
    drifted: i64,
    /// When the newest drift finding was found (what the rollout gate reads).
    drift_at: Option<i64>,
    /// Without its diff.
    pending: Option<Box<PendingDoc>>,
    /// Statuses still to deliver (seldom any): delivered by whoever owns the cluster now.
    queued: Vec<QueuedDoc>,
    /// When the oldest status delivered for a revision the cluster neither runs nor holds was:
    /// from then on, pruning delivered statuses may have something to forget.
    forgettable_since: Option<i64>,
}

/// One copy of each string briefs hold.
#[derive(Debug, Default)]
pub(super) struct Strings {
    set: HashSet<Arc<str>>,
    /// How many there were after the last sweep.
    swept: usize,
}

impl Strings {
    fn get(&mut self, s: &str) -> Arc<str> {
        if let Some(held) = self.set.get(s) {
            return held.clone();
        }
        // Forget the strings no brief holds any more once there are twice as many as then.
        if self.set.len() >= 2 * self.swept + 1024 {
            self.set.retain(|s| Arc::strong_count(s) > 1);
            self.swept = self.set.len();
        }
        let held: Arc<str> = Arc::from(s);
        self.set.insert(held.clone());
        held
    }

    fn opt(&mut self, s: &Option<String>) -> Option<Arc<str>> {
        s.as_deref().map(|s| self.get(s))
    }
}

impl Held {
    /// `doc` held whole, or as its brief.
    pub(super) fn of(doc: Doc, whole: bool, strings: &mut Strings) -> Held {
        if whole {
            return Held::Whole(Box::new(doc));
        }
        let Doc { metadata, spec, status: s } = doc;
        let runs = [s.cluster_revision.as_deref(), s.pending.as_ref().map(|p| p.head_revision.as_str())];
        let forgettable_since =
            s.outbox.delivered.iter().filter(|d| !runs.contains(&Some(d.revision.as_str()))).map(|d| d.at).min();
        Held::Brief(Box::new(Brief {
            resource_version: metadata.resource_version.map(String::into_boxed_str),
            spec,
            profile_revision: strings.opt(&s.profile_revision),
            cluster_revision: strings.opt(&s.cluster_revision),
            digest: strings.opt(&s.digest),
            profile: strings.opt(&s.profile),
            version: strings.opt(&s.version),
            message: strings.opt(&s.message),
            applied_at: s.applied_at,
            sync: s.sync,
            health: s.health,
            drifted: s.drifted,
            drift_at: s.drift.iter().map(|d| d.found_at).max(),
            pending: s.pending.map(|p| Box::new(PendingDoc { diff: String::new(), ..p })),
            queued: s.outbox.queued,
            forgettable_since,
        }))
    }

    pub(super) fn whole(&self) -> Option<&Doc> {
        match self {
            Held::Whole(doc) => Some(doc),
            Held::Brief(_) => None,
        }
    }

    pub(super) fn resource_version(&self) -> Option<&str> {
        match self {
            Held::Whole(doc) => doc.metadata.resource_version.as_deref(),
            Held::Brief(b) => b.resource_version.as_deref(),
        }
    }

    pub(super) fn spec(&self) -> &Spec {
        match self {
            Held::Whole(doc) => &doc.spec,
            Held::Brief(b) => &b.spec,
        }
    }

    fn pending_doc(&self) -> Option<&PendingDoc> {
        match self {
            Held::Whole(doc) => doc.status.pending.as_ref(),
            Held::Brief(b) => b.pending.as_deref(),
        }
    }

    /// As [`Doc::known`].
    pub(super) fn known(&self) -> bool {
        match self {
            Held::Whole(doc) => doc.known(),
            Held::Brief(b) => b.sync.is_some() || b.digest.is_some() || b.spec != Spec::default(),
        }
    }

    pub(super) fn state(&self, name: &str) -> ClusterState {
        let b = match self {
            Held::Whole(doc) => return doc.state(name),
            Held::Brief(b) => b,
        };
        let owned = |s: &Option<Arc<str>>| s.as_deref().map(str::to_string);
        ClusterState {
            name: name.to_string(),
            profile_revision: owned(&b.profile_revision),
            cluster_revision: owned(&b.cluster_revision),
            digest: owned(&b.digest),
            profile: owned(&b.profile),
            version: owned(&b.version),
            applied_at: b.applied_at,
            sync: b.sync.unwrap_or(Sync::New),
            message: owned(&b.message),
            health: b.health,
            drifted: b.drifted,
            suspended: b.spec.suspended,
        }
    }

    /// Its pending update without the diff (empty).
    pub(super) fn pending_brief(&self, name: &str) -> Option<Pending> {
        self.pending_doc().map(|p| pending_of(name, p, false))
    }

    pub(super) fn has_pending(&self) -> bool {
        self.pending_doc().is_some()
    }

    /// The revisions the cluster runs and is held at (what delivered statuses are kept for).
    pub(super) fn revisions(&self) -> [Option<&str>; 2] {
        let head = self.pending_doc().map(|p| p.head_revision.as_str());
        match self {
            Held::Whole(doc) => [doc.status.cluster_revision.as_deref(), head],
            Held::Brief(b) => [b.cluster_revision.as_deref(), head],
        }
    }

    pub(super) fn queued(&self) -> &[QueuedDoc] {
        match self {
            Held::Whole(doc) => &doc.status.outbox.queued,
            Held::Brief(b) => &b.queued,
        }
    }

    /// Whether pruning statuses delivered before `cutoff` may forget some: for a whole object,
    /// whether one of them is for a revision outside `kept`; for a brief, whether one of them is
    /// for a revision the cluster neither runs nor holds (the whole object tells).
    pub(super) fn forgets(&self, cutoff: i64, kept: &HashSet<String>) -> bool {
        match self {
            Held::Whole(doc) => {
                doc.status.outbox.delivered.iter().any(|d| d.at < cutoff && !kept.contains(&d.revision))
            }
            Held::Brief(b) => b.forgettable_since.is_some_and(|at| at < cutoff),
        }
    }

    pub(super) fn drift_at(&self) -> Option<i64> {
        match self {
            Held::Whole(doc) => doc.status.drift.iter().map(|d| d.found_at).max(),
            Held::Brief(b) => b.drift_at,
        }
    }
}

fn pending_of(name: &str, p: &PendingDoc, diff: bool) -> Pending {
    Pending {
        cluster: name.to_string(),
        base_revision: p.base_revision.clone(),
        head_revision: p.head_revision.clone(),
        hold: p.hold.clone(),
        summary: p.summary.clone(),
        diff: if diff { p.diff.clone() } else { String::new() },
        since: p.since,
        base_digest: p.base_digest.clone(),
    }
}

/// A ClusterState read or watched, without its `managedFields`: the API server keeps them when
/// a write leaves them out, and they were more than half of what a cached object took.
pub(super) fn decode(mut object: DynamicObject) -> Option<(String, Doc)> {
    object.metadata.managed_fields = None;
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

    fn doc(revision: &str) -> Doc {
        let mut status = StatusDoc {
            profile_revision: Some(revision.into()),
            cluster_revision: Some(revision.into()),
            digest: Some("sha256:abc".into()),
            profile: Some("edge".into()),
            version: Some("1.2.0".into()),
            applied_at: Some(5),
            sync: Some(Sync::Applied),
            message: Some("3 created".into()),
            health: Some(Health::Ready),
            drifted: 2,
            pending: Some(PendingDoc {
                base_revision: "r0".into(),
                head_revision: "r9".into(),
                hold: Hold::Approval,
                summary: "pending update edge@1.3.0".into(),
                diff: "-  a: 1\n+  a: 2\n".into(),
                since: 7,
                base_digest: Some("sha256:abc".into()),
            }),
            ..StatusDoc::default()
        };
        for (path, at) in [("a", 30), ("b", 40), ("c", 20)] {
            status.drift.push(DriftDoc {
                object: "ConfigMap/x".into(),
                path: path.into(),
                live: None,
                desired: None,
                found_at: at,
            });
        }
        add_history(&mut status, Some(revision), Sync::Applied, "3 created", 5);
        status.outbox.delivered(&status_of("r0", State::Success, "applied"), 3);
        status.outbox.enqueue(&status_of(revision, State::Success, "applied"), 5, 5_000);
        let spec = Spec { suspended: true, approvals: Vec::new() };
        let metadata = ObjectMeta { resource_version: Some("17".into()), ..ObjectMeta::default() };
        Doc { metadata, spec, status }
    }

    fn status_of(revision: &str, state: State, description: &str) -> CommitStatus {
        CommitStatus::new(revision, "strata/edge".into(), state, description, None)
    }

    /// A brief answers what lists of the fleet, the rollout gate and approval verdicts read
    /// exactly as the whole object does; the strings many clusters share are held once; and
    /// strings no brief holds any longer are forgotten.
    #[test]
    fn a_brief_reads_as_the_whole_for_what_it_keeps() {
        let mut strings = Strings::default();
        let whole = Held::of(doc("r1"), true, &mut strings);
        let brief = Held::of(doc("r1"), false, &mut strings);
        assert!(whole.whole().is_some() && brief.whole().is_none());
        assert_eq!(brief.state("edge"), whole.state("edge"));
        assert_eq!(brief.spec(), whole.spec());
        assert_eq!(brief.pending_brief("edge"), whole.pending_brief("edge"));
        assert_eq!(brief.pending_brief("edge").unwrap().diff, "", "no diff in a brief");
        assert_eq!(whole.whole().unwrap().pending("edge").unwrap().diff, "-  a: 1\n+  a: 2\n");
        assert_eq!((brief.drift_at(), whole.drift_at()), (Some(40), Some(40)));
        assert_eq!(brief.revisions(), whole.revisions());
        assert_eq!(brief.queued(), whole.queued());
        assert_eq!(brief.resource_version(), Some("17"));
        assert!(brief.known() && brief.has_pending());
        assert_eq!(brief.queued().len(), 1);
        // r0 was delivered at 3 and the cluster runs r1: something to forget after 3.
        let none = HashSet::new();
        assert!(!brief.forgets(3, &none) && brief.forgets(4, &none));
        assert!(!whole.forgets(3, &none) && whole.forgets(4, &none));
        assert!(!whole.forgets(4, &HashSet::from(["r0".to_string()])), "another cluster runs r0");

        let other = Held::of(doc("r1"), false, &mut strings);
        let (Held::Brief(a), Held::Brief(b)) = (&brief, &other) else { panic!("briefs") };
        assert!(Arc::ptr_eq(a.cluster_revision.as_ref().unwrap(), b.cluster_revision.as_ref().unwrap()));
        assert!(Arc::ptr_eq(a.digest.as_ref().unwrap(), b.digest.as_ref().unwrap()));

        drop((brief, other));
        for n in 0..5000 {
            drop(Held::of(doc(&format!("r{n}")), false, &mut strings));
        }
        assert!(strings.set.len() < 3000, "{} strings kept of briefs long gone", strings.set.len());
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

#[cfg(test)]
mod crd_tests {
    use super::*;

    const FILE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/kubernetes/crd.yaml");

    /// What two CRDs mean alike compare equal: `required` is a set, and 1.0 is 1.
    fn normal(value: &mut serde_json::Value) {
        match value {
            serde_json::Value::Object(map) => {
                for (key, value) in map.iter_mut() {
                    normal(value);
                    if let (true, serde_json::Value::Array(items)) = (key == "required", value) {
                        items.sort_by_key(|item| item.to_string());
                    }
                }
            }
            serde_json::Value::Array(items) => items.iter_mut().for_each(normal),
            serde_json::Value::Number(n) => {
                if let Some(f) = n.as_f64().filter(|f| f.fract() == 0.0 && !n.is_i64() && !n.is_u64()) {
                    *value = serde_json::Value::from(f as i64);
                }
            }
            _ => {}
        }
    }

    /// The checked-in CRD is the one the types make. Run with STRATA_WRITE_CRD=1 to write it
    /// again from them (the file's leading comment is kept).
    #[test]
    fn the_crd_file_is_what_the_types_make() {
        let mut generated = serde_json::to_value(crd()).unwrap();
        let file = std::fs::read_to_string(FILE).unwrap();
        if std::env::var_os("STRATA_WRITE_CRD").is_some() {
            let comment: String = file.lines().take_while(|l| l.starts_with('#')).map(|l| format!("{l}\n")).collect();
            std::fs::write(FILE, comment + &serde_saphyr::to_string(&crd()).unwrap()).unwrap();
            return;
        }
        let mut declared: serde_json::Value = serde_saphyr::from_str(&file).unwrap();
        normal(&mut generated);
        normal(&mut declared);
        assert!(
            generated == declared,
            "deploy/kubernetes/crd.yaml is not the CRD the ClusterState types make; write it again with \
             `STRATA_WRITE_CRD=1 cargo test --lib the_crd_file_is_what_the_types_make`.\nfrom the types: {}",
            serde_json::to_string_pretty(&generated).unwrap()
        );
    }

    /// A ClusterState as the build before the derive wrote it (every field set) reads the same,
    /// through the typed resource as through `decode`, and is written back unchanged.
    #[test]
    fn objects_written_before_the_derive_are_read() {
        let object = serde_json::json!({
            "apiVersion": "strata.dev/v1",
            "kind": "ClusterState",
            "metadata": { "name": "aws", "namespace": "strata", "resourceVersion": "v-opaque" },
            "spec": {
                "suspended": true,
                "approvals": [{ "revision": "r1", "by": "ann", "at": 1700000000, "identity": "ann@example.org", "groups": ["ops"] }]
            },
            "status": {
                "profileRevision": "r1", "clusterRevision": "r2", "digest": "sha256:a", "profile": "eks",
                "version": "1.2.0", "appliedAt": 1700000001, "sync": "applied", "message": "ok",
                "health": "ready", "drifted": 2, "updatedAt": 1700000002,
                "pending": {
                    "baseRevision": "r1", "headRevision": "r3", "hold": { "until": "approval" },
                    "summary": "1 changed", "diff": "-a\n+b", "since": 1700000003, "baseDigest": "sha256:b"
                },
                "drift": [{ "object": "apps/v1/Deployment/x/y", "path": ".spec.replicas", "live": "2", "desired": "3", "foundAt": 1700000004 }],
                "history": [
                    { "revision": "r1", "result": "failed", "summary": "boom", "at": 1700000005, "count": 3, "firstAt": 1700000000 },
                    { "result": "applied", "summary": "fine", "at": 1700000006 }
                ],
                "objects": [{ "object": "v1/ConfigMap/x/y", "layer": "base", "action": "created" }],
                "outbox": {
                    "queued": [{
                        "revision": "r2", "context": "strata/aws", "state": "success", "description": "applied",
                        "targetUrl": "https://strata.example.org", "createdAt": 1700000007, "attempts": 1,
                        "nextAttemptMs": 1700000008000_i64, "lastError": "timeout"
                    }],
                    "delivered": [{ "revision": "r1", "context": "strata/aws", "state": "pending", "description": "held", "at": 1700000009 }]
                }
            }
        });
        let typed: ClusterStateObject = serde_json::from_value(object.clone()).expect("the typed resource reads it");
        let dynamic: DynamicObject = serde_json::from_value(object.clone()).unwrap();
        let (name, doc) = decode(dynamic).unwrap();
        assert_eq!(name, "aws");
        assert_eq!(typed.spec, doc.spec);
        assert_eq!(typed.status.as_ref(), Some(&doc.status));
        assert!(doc.spec.suspended && doc.status.pending.is_some() && doc.status.history[0].count == 3);
        assert_eq!(doc.status.history[1].count, 1, "absent: one");
        assert_eq!(serde_json::to_value(&doc.spec).unwrap(), object["spec"]);
        assert_eq!(serde_json::to_value(&doc.status).unwrap(), object["status"]);
    }
}
