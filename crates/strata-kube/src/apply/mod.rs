//! Apply: a [`DesiredSet`] onto a [`Target`], the way Flux's kustomize-controller does it.
//!
//! ```text
//!   survey     discovery, GET live, server-side dry-run of every object   ── any failure: nothing written
//!   inventory  old ∪ new, written before the first object (cli-utils' inventory-add), so a
//!              process killed at any instruction leaves every object it may create tracked
//!   stage 0    Namespaces and CRDs (wait until CRDs are Established)
//!   stage n    each layer in dependsOn order, objects in parallel under a bound
//!   prune      old inventory − new set, reverse order, Namespaces/CRDs last and only if strata made them
//!   inventory  the new set and whatever could not be pruned (inventory-set)
//!   health     rollouts complete, or the per-cluster timeout
//! ```
//!
//! An object whose dry-run result equals the live object is `unchanged` and not written, so an
//! unchanged re-apply makes no writes. Nothing that leaves here carries a sensitive value: results'
//! messages are scrubbed, drift findings and diffs are of redacted copies ([`crate::redact`]). The `strata.dev/revision` annotation records the revision
//! at which strata last changed an object, so a new commit that leaves an object as it is does not
//! rewrite it either.

pub mod drift;
pub mod health;
pub use crate::target::inventory;

use std::collections::{BTreeSet, HashMap, HashSet};
use std::fmt;
use std::time::{Duration, Instant};

use futures::stream::{self, StreamExt};
use serde::Serialize;
use serde_json::Value;

use crate::redact::Redactor;
use crate::render::object::{
    ANNOTATION_APPLIED, ANNOTATION_REVISION, LABEL_CLUSTER, ObjectId, is_stage_zero, stamp_revision,
};
use crate::render::{DesiredSet, LayerSet, Object};
use crate::target::{Observed, Resource, Target, TargetError};
use drift::Finding;
use health::Health;
use inventory::{Entry, Inventory};
use sha2::{Digest as _, Sha256};

#[derive(Clone, Debug)]
pub struct Options {
    /// Validate and report what would change, write nothing.
    pub dry_run: bool,
    /// Objects applied at once within a stage.
    pub concurrency: usize,
    /// How long to wait for rollouts before the result says unhealthy.
    pub health_timeout: Duration,
    pub poll_interval: Duration,
    /// Allow a desired set with no objects to prune everything strata applied before.
    pub allow_empty: bool,
    /// How sensitive values appear in results, drift findings and diffs: the daemon's key, or
    /// one of this process's own.
    pub redactor: Redactor,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            dry_run: false,
            concurrency: 16,
            health_timeout: Duration::from_secs(300),
            poll_interval: Duration::from_millis(500),
            allow_empty: false,
            redactor: Redactor::default(),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    Created,
    Configured,
    Unchanged,
    Pruned,
    Skipped,
    Failed,
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Action::Created => "created",
            Action::Configured => "configured",
            Action::Unchanged => "unchanged",
            Action::Pruned => "pruned",
            Action::Skipped => "skipped",
            Action::Failed => "failed",
        })
    }
}

#[derive(Clone, Debug, Serialize)]
pub struct ObjectResult {
    pub id: ObjectId,
    pub layer: String,
    pub action: Action,
    /// Time spent on this object's write (or dry-run, for a dry run).
    pub millis: u64,
    /// Why it failed or was skipped; the conflict it overrode.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// What one reconcile did, like Flux's change set.
#[derive(Clone, Debug, Serialize)]
pub struct ChangeSet {
    pub cluster: String,
    pub revision: Option<String>,
    pub dry_run: bool,
    pub objects: Vec<ObjectResult>,
    /// Objects that did not become healthy in time, and why.
    pub unhealthy: Vec<(ObjectId, Health)>,
    pub millis: u64,
}

impl ChangeSet {
    pub fn count(&self, action: Action) -> usize {
        self.objects.iter().filter(|o| o.action == action).count()
    }

    /// Anything failed or unhealthy.
    pub fn failed(&self) -> bool {
        self.count(Action::Failed) > 0 || !self.unhealthy.is_empty()
    }

    /// `3 created, 1 configured, 5 unchanged, 2 pruned`
    pub fn summary(&self) -> String {
        let parts: Vec<String> =
            [Action::Created, Action::Configured, Action::Unchanged, Action::Pruned, Action::Skipped, Action::Failed]
                .into_iter()
                .filter_map(|a| {
                    let n = self.count(a);
                    (n > 0).then(|| format!("{n} {a}"))
                })
                .collect();
        let mut out = if parts.is_empty() { "nothing to do".to_string() } else { parts.join(", ") };
        if !self.unhealthy.is_empty() {
            out.push_str(&format!(", {} unhealthy", self.unhealthy.len()));
        }
        out
    }
}

/// Why a reconcile did not start writing (nothing was written), or stopped.
#[derive(Debug)]
pub enum ReconcileError {
    /// The cluster could not be read or written at all.
    Target(TargetError),
    /// Validation failed: these objects would not apply. Nothing was written.
    Rejected(Vec<ObjectResult>),
    /// The desired set is empty and would prune every object strata applied before.
    EmptyPrune { objects: usize },
}

impl fmt::Display for ReconcileError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ReconcileError::Target(e) => write!(f, "{e}"),
            ReconcileError::Rejected(objects) => {
                write!(f, "validation failed, nothing was applied:")?;
                for o in objects {
                    write!(f, "\n  {} (layer {}): {}", o.id, o.layer, o.message.as_deref().unwrap_or(""))?;
                }
                Ok(())
            }
            ReconcileError::EmptyPrune { objects } => write!(
                f,
                "the desired set is empty and would prune all {objects} objects strata applied; refusing (allow it explicitly if that is the intent)"
            ),
        }
    }
}

impl std::error::Error for ReconcileError {}

impl From<TargetError> for ReconcileError {
    fn from(e: TargetError) -> Self {
        ReconcileError::Target(e)
    }
}

/// One object as the cluster sees it now, and what applying it would do.
struct Survey<'a> {
    layer: &'a LayerSet,
    object: &'a Object,
    /// `None` until the kind is served (a CRD in this set not yet created).
    resource: Option<Resource>,
    live: Option<Value>,
    /// The manifest to apply: stamped with a revision, ignored fields left out of existing objects.
    manifest: Value,
    /// The dry-run result of applying `manifest` (what the object would become).
    dry_run: Option<Value>,
    action: Action,
    message: Option<String>,
    /// Checked only after stage 0: its kind or its namespace comes with this very set.
    deferred: bool,
}

impl Survey<'_> {
    fn result(&self, action: Action, millis: u64, message: Option<String>) -> ObjectResult {
        ObjectResult { id: self.object.id.clone(), layer: self.layer.name.clone(), action, millis, message }
    }
}

/// The manifest to apply for `object`: stamped with the revision the live object carries (else
/// `revision`), and without ignored fields once the object exists (they are left to whoever owns them).
/// The applied-digest annotation is over the manifest without ignored fields either way, so an
/// object just created with their first values is the same, to a drift check, as one updated.
fn manifest_for(object: &Object, live: Option<&Value>, revision: Option<&str>) -> Value {
    let mut without = object.manifest.clone();
    for pointer in &object.ignore {
        drift::remove_pointer(&mut without, pointer);
    }
    let digest = {
        let mut hasher = Sha256::new();
        hasher.update(serde_json::to_vec(&without).expect("manifests serialise"));
        crate::render::hex_digest(hasher)
    };
    let mut manifest = if live.is_some() { without } else { object.manifest.clone() };
    if let Some(annotations) = manifest["metadata"]["annotations"].as_object_mut() {
        annotations.insert(ANNOTATION_APPLIED.into(), Value::String(digest));
    }
    let kept = live.and_then(|l| l["metadata"]["annotations"][ANNOTATION_REVISION].as_str());
    if let Some(rev) = kept.or(revision) {
        stamp_revision(&mut manifest, rev);
    }
    manifest
}

/// Whether `live` provably already is what applying `manifest` makes it: it carries the digest
/// of this very configuration (so strata set no field since that it does not set now) and every
/// field of the configuration holds the applied value. Anything else goes to a server-side dry-run.
fn unchanged_without_asking(live: &Value, manifest: &Value) -> bool {
    let applied = &manifest["metadata"]["annotations"][ANNOTATION_APPLIED];
    applied.is_string()
        && live["metadata"]["annotations"][ANNOTATION_APPLIED] == *applied
        && drift::contains(live, manifest)
}

/// What stage 0 of this set will create, which objects of later stages may need before they can
/// be checked against the cluster: CRDs' kinds, and namespaces that do not exist yet.
#[derive(Default)]
struct Pending {
    kinds: HashSet<(String, String)>,
    namespaces: HashSet<String>,
}

/// (apiVersion, kind, namespace) → name → live object.
type Lists = HashMap<(String, String, String), HashMap<String, Value>>;

/// Objects of one kind in one namespace, listed once instead of fetched one by one.
#[derive(Default)]
struct Prefetched {
    /// Each object is taken out once it is used.
    lists: std::sync::Mutex<Lists>,
    /// Namespaces this apply has just created: nothing of strata's can be in them yet.
    fresh: HashSet<String>,
}

/// A kind with at least this many objects in one namespace is listed rather than fetched per
/// object: one request instead of many. Cluster-scoped kinds are always fetched per object
/// (listing every CRD of a cluster would be far more data than the few strata applies).
const LIST_THRESHOLD: usize = 3;

impl Prefetched {
    /// Lists the groups of `objects` large enough to be worth it.
    async fn fetch<T: Target>(
        target: &T,
        objects: &[(&Object, Option<&Resource>)],
        concurrency: usize,
    ) -> Result<Prefetched, TargetError> {
        let mut groups: HashMap<(String, String, String), (&Resource, usize)> = HashMap::new();
        for (object, resource) in objects {
            if let (Some(resource), Some(ns)) = (resource, &object.id.namespace)
                && resource.namespaced
            {
                groups
                    .entry((resource.api_version.clone(), resource.kind.clone(), ns.clone()))
                    .or_insert((resource, 0))
                    .1 += 1;
            }
        }
        let wanted: Vec<_> = groups.into_iter().filter(|(_, (_, n))| *n >= LIST_THRESHOLD).collect();
        let listed: Vec<Result<_, TargetError>> =
            stream::iter(wanted.into_iter().map(|(key, (resource, _))| async move {
                let items = target.list(resource, Some(&key.2)).await?;
                let by_name =
                    items.into_iter().filter_map(|o| Some((o["metadata"]["name"].as_str()?.to_string(), o))).collect();
                Ok((key, by_name))
            }))
            .buffer_unordered(concurrency.max(1))
            .collect()
            .await;
        Ok(Prefetched {
            lists: std::sync::Mutex::new(listed.into_iter().collect::<Result<_, _>>()?),
            ..Default::default()
        })
    }

    /// `Some(live)` when the object's group was listed (each object is asked for once), or its
    /// namespace was just created.
    fn live(&self, resource: &Resource, object: &Object) -> Option<Option<Value>> {
        if object.id.namespace.as_ref().is_some_and(|ns| self.fresh.contains(ns)) {
            return Some(None);
        }
        let key = (resource.api_version.clone(), resource.kind.clone(), object.id.namespace.clone()?);
        let mut lists = self.lists.lock().expect("prefetch lock");
        lists.get_mut(&key).map(|by_name| by_name.remove(&object.id.name))
    }
}

/// Live state and a dry-run for one object whose resource discovery found (or did not).
async fn survey_one<'a, T: Target>(
    target: &T,
    layer: &'a LayerSet,
    object: &'a Object,
    resource: Option<Resource>,
    revision: Option<&str>,
    pending: &Pending,
    prefetched: &Prefetched,
) -> Result<Survey<'a>, TargetError> {
    let api_version = object.manifest["apiVersion"].as_str().unwrap_or_default();
    let mut survey = Survey {
        layer,
        object,
        resource,
        live: None,
        manifest: manifest_for(object, None, revision),
        dry_run: None,
        action: Action::Created,
        message: None,
        deferred: false,
    };
    let Some(resource) = &survey.resource else {
        if pending.kinds.contains(&(object.id.group.clone(), object.id.kind.clone())) {
            survey.deferred = true;
        } else {
            survey.action = Action::Failed;
            survey.message = Some(format!(
                "the cluster does not serve {api_version} {}: install its CustomResourceDefinition first, or add it to the profile",
                object.id.kind
            ));
        }
        return Ok(survey);
    };
    if object.id.namespace.as_ref().is_some_and(|ns| pending.namespaces.contains(ns)) {
        // Its namespace is created in stage 0; the API server refuses even a dry-run before that.
        survey.deferred = true;
        return Ok(survey);
    }
    survey.live = match prefetched.live(resource, object) {
        Some(live) => live,
        None => target.get(resource, object.id.namespace.as_deref(), &object.id.name).await?,
    };
    // An existing object is compared with the revision it already carries, so only real changes
    // count; a new one gets the new revision.
    let candidate = manifest_for(object, survey.live.as_ref(), if survey.live.is_some() { None } else { revision });
    if survey.live.as_ref().is_some_and(|live| unchanged_without_asking(live, &candidate)) {
        survey.action = Action::Unchanged;
        survey.manifest = candidate;
        return Ok(survey);
    }
    let dry = match target.apply(resource, &candidate, true, false).await {
        Ok(dry) => Ok(dry),
        Err(TargetError::Conflict(message)) => {
            survey.message = Some(format!("took over fields from another manager: {message}"));
            target.apply(resource, &candidate, true, true).await
        }
        Err(e) => Err(e),
    };
    match dry {
        Ok(dry) => {
            survey.action = match &survey.live {
                None => Action::Created,
                Some(live) if drift::same(live, &dry, &object.ignore) => Action::Unchanged,
                Some(_) => Action::Configured,
            };
            survey.dry_run = Some(dry);
        }
        Err(TargetError::Unreachable(m)) => return Err(TargetError::Unreachable(m)),
        Err(e) => {
            survey.action = Action::Failed;
            survey.message = Some(e.to_string());
        }
    }
    survey.manifest = candidate;
    if survey.action == Action::Configured
        && let Some(rev) = revision
    {
        stamp_revision(&mut survey.manifest, rev);
    }
    Ok(survey)
}

async fn survey_all<'a, T: Target>(
    target: &T,
    set: &'a DesiredSet,
    revision: Option<&str>,
    concurrency: usize,
) -> Result<Vec<Survey<'a>>, TargetError> {
    let (zero, rest): (Vec<_>, Vec<_>) = set.apply_order().into_iter().partition(|(_, o)| is_stage_zero(&o.id));
    let mut surveys = survey_batch(target, zero, revision, &Pending::default(), HashSet::new(), concurrency).await?;
    let pending = Pending {
        kinds: surveys
            .iter()
            .filter(|s| s.object.id.kind == "CustomResourceDefinition")
            .filter_map(|s| {
                let spec = &s.object.manifest["spec"];
                Some((spec["group"].as_str()?.to_string(), spec["names"]["kind"].as_str()?.to_string()))
            })
            .collect(),
        namespaces: surveys
            .iter()
            .filter(|s| s.object.id.kind == "Namespace" && s.live.is_none())
            .map(|s| s.object.id.name.clone())
            .collect(),
    };
    surveys.extend(survey_batch(target, rest, revision, &pending, HashSet::new(), concurrency).await?);
    Ok(surveys)
}

fn api_version_of(object: &Object) -> String {
    object.manifest["apiVersion"].as_str().unwrap_or_default().to_string()
}

/// Discovery for each kind of `objects`, each group version asked for once: one kind of each
/// first, then the others from what that fetched.
async fn resolve_kinds<'a, T: Target>(
    target: &T,
    objects: impl Iterator<Item = &'a Object>,
    concurrency: usize,
) -> Result<HashMap<(String, String), Option<Resource>>, TargetError> {
    let mut first: Vec<(String, String)> = Vec::new();
    let mut rest: Vec<(String, String)> = Vec::new();
    for object in objects {
        let key = (api_version_of(object), object.id.kind.clone());
        if first.contains(&key) || rest.contains(&key) {
            continue;
        }
        if first.iter().any(|(v, _)| *v == key.0) { rest.push(key) } else { first.push(key) }
    }
    let mut resolved = HashMap::new();
    for batch in [first, rest] {
        let found: Vec<Result<_, TargetError>> = stream::iter(batch.into_iter().map(|key| async move {
            let resource = target.resource(&key.0, &key.1).await?;
            Ok((key, resource))
        }))
        .buffer_unordered(concurrency.max(1))
        .collect()
        .await;
        for entry in found {
            let (key, resource) = entry?;
            resolved.insert(key, resource);
        }
    }
    Ok(resolved)
}

/// Surveys `objects`; those in a namespace of `fresh` (created by this apply a moment ago) are
/// known absent without asking.
async fn survey_batch<'a, T: Target>(
    target: &T,
    objects: Vec<(&'a LayerSet, &'a Object)>,
    revision: Option<&str>,
    pending: &Pending,
    fresh: HashSet<String>,
    concurrency: usize,
) -> Result<Vec<Survey<'a>>, TargetError> {
    let kinds = resolve_kinds(target, objects.iter().map(|(_, o)| *o), concurrency).await?;
    let resources: Vec<Option<Resource>> =
        objects.iter().map(|(_, o)| kinds.get(&(api_version_of(o), o.id.kind.clone())).cloned().flatten()).collect();
    // Objects in namespaces that stage 0 creates are not looked up now (see survey_one).
    let lookups: Vec<(&Object, Option<&Resource>)> = objects
        .iter()
        .zip(&resources)
        .filter(|((_, o), _)| {
            !o.id.namespace.as_ref().is_some_and(|ns| pending.namespaces.contains(ns) || fresh.contains(ns))
        })
        .map(|((_, o), r)| (*o, r.as_ref()))
        .collect();
    let prefetched = Prefetched { fresh, ..Prefetched::fetch(target, &lookups, concurrency).await? };
    let surveys: Vec<Result<Survey, TargetError>> =
        stream::iter(objects.into_iter().zip(resources).map(|((layer, object), resource)| {
            survey_one(target, layer, object, resource, revision, pending, &prefetched)
        }))
        .buffered(concurrency.max(1))
        .collect()
        .await;
    surveys.into_iter().collect()
}

/// Applies `set` to `target` as of `revision`. Errors mean nothing was written; a change set
/// with failed or unhealthy objects means the apply ran and those did not make it.
pub async fn reconcile<T: Target>(
    target: &T,
    set: &DesiredSet,
    revision: Option<&str>,
    options: &Options,
) -> Result<ChangeSet, ReconcileError> {
    let started = Instant::now();
    let mut surveys = survey_all(target, set, revision, options.concurrency).await?;
    let mut rejected: Vec<ObjectResult> = surveys
        .iter()
        .filter(|s| s.action == Action::Failed)
        .map(|s| s.result(Action::Failed, 0, s.message.clone()))
        .collect();
    if !rejected.is_empty() {
        scrub_messages(set, &mut rejected, &options.redactor);
        return Err(ReconcileError::Rejected(rejected));
    }

    let old = target.read_inventory(&set.cluster).await?;
    let prune = old.as_ref().map(|o| o.prune_candidates(set)).unwrap_or_default();
    if set.object_count() == 0 && !prune.is_empty() && !options.allow_empty {
        return Err(ReconcileError::EmptyPrune { objects: prune.len() });
    }

    let mut results: Vec<ObjectResult> = Vec::new();
    if options.dry_run {
        for s in &surveys {
            let message = if s.deferred {
                Some("checked against the cluster once its namespace or CRD exists".to_string())
            } else {
                s.message.clone()
            };
            results.push(s.result(s.action, 0, message));
        }
        for entry in &prune {
            if let Some(id) = entry.object_id() {
                results.push(ObjectResult {
                    id,
                    layer: String::new(),
                    action: Action::Pruned,
                    millis: 0,
                    message: None,
                });
            }
        }
        scrub_messages(set, &mut results, &options.redactor);
        return Ok(ChangeSet {
            cluster: set.cluster.clone(),
            revision: revision.map(str::to_string),
            dry_run: true,
            objects: results,
            unhealthy: Vec::new(),
            millis: started.elapsed().as_millis() as u64,
        });
    }

    // inventory-add: from here on a kill leaves nothing untracked.
    let absent: BTreeSet<ObjectId> = surveys.iter().filter(|s| s.live.is_none()).map(|s| s.object.id.clone()).collect();
    let covering = Inventory::covering(old.as_ref(), set, &absent);
    if old.as_ref() != Some(&covering) {
        target.write_inventory(&covering).await?;
    }

    let mut created: BTreeSet<ObjectId> = BTreeSet::new();
    let mut failed_layer: Option<String> = None;

    // Stage 0: Namespaces and CRDs, then wait for the CRDs, then learn their kinds.
    let (zero, rest): (Vec<usize>, Vec<usize>) =
        (0..surveys.len()).partition(|&i| is_stage_zero(&surveys[i].object.id));
    let outcomes = apply_batch(target, &surveys, &zero, options.concurrency).await;
    record(&surveys, &zero, outcomes, &mut results, &mut created, &mut failed_layer);
    if failed_layer.is_none() && surveys.iter().any(|s| s.deferred) {
        // New kinds are served once their CRDs are; nothing else changes what discovery says.
        if surveys.iter().any(|s| s.object.id.kind == "CustomResourceDefinition" && s.action != Action::Unchanged) {
            wait_established(target, &surveys, options).await;
            target.refresh_discovery();
        }
        let fresh: HashSet<String> = surveys
            .iter()
            .filter(|s| s.object.id.kind == "Namespace" && s.live.is_none() && created.contains(&s.object.id))
            .map(|s| s.object.id.name.clone())
            .collect();
        let deferred: Vec<usize> = (0..surveys.len()).filter(|&i| surveys[i].deferred).collect();
        let batch: Vec<(&LayerSet, &Object)> =
            deferred.iter().map(|&i| (surveys[i].layer, surveys[i].object)).collect();
        match survey_batch(target, batch, revision, &Pending::default(), fresh, options.concurrency).await {
            Ok(fresh) => {
                for (i, survey) in deferred.into_iter().zip(fresh) {
                    surveys[i] = survey;
                }
            }
            Err(e) => {
                for i in deferred {
                    surveys[i].action = Action::Failed;
                    surveys[i].message = Some(e.to_string());
                }
            }
        }
    }

    // Then each layer in order; a failed layer stops the layers after it.
    let mut layers: Vec<&str> = Vec::new();
    for &i in &rest {
        if !layers.contains(&surveys[i].layer.name.as_str()) {
            layers.push(&surveys[i].layer.name);
        }
    }
    for layer in layers {
        let batch: Vec<usize> = rest.iter().copied().filter(|&i| surveys[i].layer.name == layer).collect();
        if let Some(failed) = &failed_layer {
            for &i in &batch {
                results.push(surveys[i].result(Action::Skipped, 0, Some(format!("layer `{failed}` failed"))));
            }
            continue;
        }
        let outcomes = apply_batch(target, &surveys, &batch, options.concurrency).await;
        record(&surveys, &batch, outcomes, &mut results, &mut created, &mut failed_layer);
    }

    // inventory-set: the new set, and what is still to be pruned.
    let new = Inventory::after_apply(set, revision, old.as_ref(), &created);
    let last = if failed_layer.is_none() {
        let pruned = prune_all(target, &set.cluster, &prune, &mut results).await?;
        let kept: Vec<Entry> = prune.into_iter().filter(|e| !pruned.contains(&e.id)).collect();
        Inventory::with_pending(&new, &kept)
    } else {
        // Nothing is pruned after a failed layer; the metadata stays that of the last apply
        // that completed, the entries say which objects exist now.
        Inventory { entries: Inventory::with_pending(&new, &prune).entries, ..covering.clone() }
    };
    if last != covering {
        target.write_inventory(&last).await?;
    }

    let unhealthy = if target.reports_health() && failed_layer.is_none() {
        wait_healthy(target, &set.cluster, &surveys, options).await
    } else {
        Vec::new()
    };
    scrub_messages(set, &mut results, &options.redactor);
    Ok(ChangeSet {
        cluster: set.cluster.clone(),
        revision: revision.map(str::to_string),
        dry_run: false,
        objects: results,
        unhealthy,
        millis: started.elapsed().as_millis() as u64,
    })
}

/// Error text from the cluster may echo what it refused (an API server quotes an invalid value):
/// every message about an object leaves with that object's sensitive values replaced by markers.
fn scrub_messages(set: &DesiredSet, results: &mut [ObjectResult], redactor: &Redactor) {
    let objects: HashMap<&ObjectId, &Object> = set.layers.iter().flat_map(|l| &l.objects).map(|o| (&o.id, o)).collect();
    for result in results {
        if let (Some(message), Some(object)) = (&mut result.message, objects.get(&result.id)) {
            *message = redactor.scrub(message, &object.manifest, &object.sensitive);
        }
    }
}

/// Applies the objects at `indices` that need it, in parallel; returns (index, outcome, millis).
async fn apply_batch<T: Target>(
    target: &T,
    surveys: &[Survey<'_>],
    indices: &[usize],
    concurrency: usize,
) -> Vec<(usize, Result<Action, TargetError>, u64)> {
    stream::iter(indices.iter().copied().map(|i| async move {
        let s = &surveys[i];
        let started = Instant::now();
        let outcome = match (&s.resource, s.action) {
            (_, Action::Unchanged) => Ok(Action::Unchanged),
            (_, Action::Failed) => Err(TargetError::Other(s.message.clone().unwrap_or_default())),
            (None, _) => Err(TargetError::Other(format!("the cluster does not serve {}", s.object.id.kind))),
            (Some(resource), action) => target.apply(resource, &s.manifest, false, true).await.map(|_| action),
        };
        (i, outcome, started.elapsed().as_millis() as u64)
    }))
    .buffer_unordered(concurrency.max(1))
    .collect()
    .await
}

fn record(
    surveys: &[Survey<'_>],
    indices: &[usize],
    mut outcomes: Vec<(usize, Result<Action, TargetError>, u64)>,
    results: &mut Vec<ObjectResult>,
    created: &mut BTreeSet<ObjectId>,
    failed_layer: &mut Option<String>,
) {
    outcomes.sort_by_key(|(i, _, _)| indices.iter().position(|x| x == i));
    for (i, outcome, millis) in outcomes {
        let s = &surveys[i];
        match outcome {
            Ok(action) => {
                if action == Action::Created {
                    created.insert(s.object.id.clone());
                }
                results.push(s.result(action, millis, s.message.clone()));
            }
            Err(e) => {
                failed_layer.get_or_insert_with(|| s.layer.name.clone());
                results.push(s.result(Action::Failed, millis, Some(e.to_string())));
            }
        }
    }
}

/// Deletes what left the desired set; returns the ids pruned (or found already gone).
async fn prune_all<T: Target>(
    target: &T,
    cluster: &str,
    prune: &[Entry],
    results: &mut Vec<ObjectResult>,
) -> Result<BTreeSet<String>, TargetError> {
    let mut done = BTreeSet::new();
    for entry in prune {
        let Some(id) = entry.object_id() else { continue };
        let started = Instant::now();
        let skip = |message: &str| ObjectResult {
            id: id.clone(),
            layer: String::new(),
            action: Action::Skipped,
            millis: 0,
            message: Some(message.to_string()),
        };
        if is_stage_zero(&id) && !entry.created {
            // It existed before strata applied it: leave it, stop tracking it.
            results.push(skip("existed before strata; left in place"));
            done.insert(entry.id.clone());
            continue;
        }
        let Some(resource) = target.resource(&entry.api_version, &id.kind).await? else {
            done.insert(entry.id.clone());
            continue;
        };
        match target.get(&resource, id.namespace.as_deref(), &id.name).await? {
            None => {
                done.insert(entry.id.clone());
            }
            Some(live) if live["metadata"]["labels"][LABEL_CLUSTER].as_str() != Some(cluster) => {
                results.push(skip("no longer labelled as this cluster's; left in place"));
                done.insert(entry.id.clone());
            }
            Some(_) => match target.delete(&resource, id.namespace.as_deref(), &id.name).await {
                Ok(()) => {
                    results.push(ObjectResult {
                        id,
                        layer: String::new(),
                        action: Action::Pruned,
                        millis: started.elapsed().as_millis() as u64,
                        message: None,
                    });
                    done.insert(entry.id.clone());
                }
                Err(e) => results.push(ObjectResult {
                    id,
                    layer: String::new(),
                    action: Action::Failed,
                    millis: started.elapsed().as_millis() as u64,
                    message: Some(format!("prune: {e}")),
                }),
            },
        }
    }
    Ok(done)
}

async fn wait_established<T: Target>(target: &T, surveys: &[Survey<'_>], options: &Options) {
    let crds: Vec<&Survey> = surveys.iter().filter(|s| s.object.id.kind == "CustomResourceDefinition").collect();
    let deadline = Instant::now() + options.health_timeout;
    loop {
        let mut pending = false;
        for s in &crds {
            let Some(resource) = &s.resource else { continue };
            if let Ok(Some(live)) = target.get(resource, None, &s.object.id.name).await
                && health::assess(&s.object.id.group, "CustomResourceDefinition", &live) != Health::Ready
            {
                pending = true;
            }
        }
        if !pending || Instant::now() >= deadline {
            return;
        }
        tokio::time::sleep(options.poll_interval).await;
    }
}

/// Watches the tracked objects (workloads, Jobs, CRDs) until all are ready, one fails, or the
/// timeout passes: one watch per kind, so a rollout that completes is seen when it does, not at
/// the next poll. Returns those not ready.
async fn wait_healthy<T: Target>(
    target: &T,
    cluster: &str,
    surveys: &[Survey<'_>],
    options: &Options,
) -> Vec<(ObjectId, Health)> {
    let tracked: Vec<(&Object, &Resource)> = surveys
        .iter()
        .filter(|s| health::is_tracked(&s.object.id.group, &s.object.id.kind))
        .filter_map(|s| Some((s.object, s.resource.as_ref()?)))
        .collect();
    if tracked.is_empty() {
        return Vec::new();
    }
    let mut states: HashMap<ObjectId, Health> =
        tracked.iter().map(|(o, _)| (o.id.clone(), Health::Progressing("not seen yet".into()))).collect();
    let kinds = watched_kinds(tracked.iter().map(|(o, r)| (*o, *r)));
    // A failure is final once every kind was listed: the result names every object not ready.
    let mut unlisted: HashSet<(String, String)> =
        kinds.iter().map(|(r, _)| (r.group.clone(), r.kind.clone())).collect();
    let Some(mut watch) = target.watch(cluster, kinds, true) else {
        return Vec::new();
    };
    let not_ready = |states: &HashMap<ObjectId, Health>| -> Vec<(ObjectId, Health)> {
        let mut out: Vec<_> =
            states.iter().filter(|(_, h)| **h != Health::Ready).map(|(i, h)| (i.clone(), h.clone())).collect();
        out.sort_by(|a, b| a.0.cmp(&b.0));
        out
    };
    let deadline = tokio::time::Instant::now() + options.health_timeout;
    loop {
        let event = match tokio::time::timeout_at(deadline, watch.events.recv()).await {
            Ok(Some(event)) => event,
            Ok(None) | Err(_) => return not_ready(&states),
        };
        match event {
            Observed::Object { id, live } => {
                if let Some(state) = states.get_mut(&id) {
                    *state = match live {
                        Some(live) => health::assess(&id.group, &id.kind, &live),
                        None => Health::Failed("object disappeared".into()),
                    };
                }
            }
            Observed::Listed { group, kind, namespace, present } => {
                for (id, state) in states.iter_mut() {
                    let listed_here = namespace.is_none() || id.namespace == namespace;
                    if id.group == group && id.kind == kind && listed_here && !present.contains(id) {
                        *state = Health::Failed("object disappeared".into());
                    }
                }
                unlisted.remove(&(group, kind));
            }
        }
        let failed = unlisted.is_empty() && states.values().any(|h| matches!(h, Health::Failed(_)));
        if failed || states.values().all(|h| *h == Health::Ready) {
            return not_ready(&states);
        }
    }
}

/// The kinds of `objects` with the namespaces they are in: what a watch of them covers.
pub fn watched_kinds<'a>(
    objects: impl Iterator<Item = (&'a Object, &'a Resource)>,
) -> Vec<(Resource, BTreeSet<String>)> {
    let mut kinds: Vec<(Resource, BTreeSet<String>)> = Vec::new();
    for (object, resource) in objects {
        let at = match kinds.iter().position(|(r, _)| r == resource) {
            Some(at) => at,
            None => {
                kinds.push((resource.clone(), BTreeSet::new()));
                kinds.len() - 1
            }
        };
        kinds[at].1.extend(object.id.namespace.clone());
    }
    kinds
}

/// Drift of every object in `set` (what strata last applied): fields changed by someone else,
/// and objects deleted, minus ignore rules. Findings are judged on real values and carry the
/// redacted ones.
pub async fn detect_drift<T: Target>(
    target: &T,
    set: &DesiredSet,
    options: &Options,
) -> Result<Vec<Finding>, TargetError> {
    let surveys = survey_all(target, set, None, options.concurrency).await?;
    let mut findings = Vec::new();
    for s in &surveys {
        let found = match (&s.live, &s.dry_run) {
            (None, _) => drift::compare(&s.object.id, &s.layer.name, None, &s.object.manifest, &[]),
            (Some(live), Some(dry)) => drift::compare(&s.object.id, &s.layer.name, Some(live), dry, &s.object.ignore),
            // Proven unchanged without a dry-run: nothing drifted.
            (Some(_), None) => Vec::new(),
        };
        let (manifest, sensitive) = (&s.object.manifest, &s.object.sensitive);
        let shown =
            |path: &str, value: Option<Value>| value.map(|v| options.redactor.shown_at(manifest, sensitive, path, &v));
        findings.extend(found.into_iter().map(|f| Finding {
            live: shown(&f.path, f.live),
            desired: shown(&f.path, f.desired),
            ..f
        }));
    }
    Ok(findings)
}

/// Drift of the objects of `set` named in `ids`, judged as [`detect_drift`] judges them (read
/// live, server-side dry-run): for what a watch saw change.
pub async fn detect_drift_among<T: Target>(
    target: &T,
    set: &DesiredSet,
    ids: &BTreeSet<ObjectId>,
    options: &Options,
) -> Result<Vec<Finding>, TargetError> {
    let layers = set
        .layers
        .iter()
        .map(|l| LayerSet {
            name: l.name.clone(),
            kind: l.kind,
            objects: l.objects.iter().filter(|o| ids.contains(&o.id)).cloned().collect(),
            digest: l.digest.clone(),
        })
        .filter(|l| !l.objects.is_empty())
        .collect();
    let subset = DesiredSet {
        cluster: set.cluster.clone(),
        profile: set.profile.clone(),
        version: set.version.clone(),
        layers,
        digest: set.digest.clone(),
    };
    detect_drift(target, &subset, options).await
}

/// Whether `live` (as a watch delivered it) provably still is what strata applied of `object`,
/// so that it needs no look at all; anything else is for [`detect_drift_among`].
pub fn provably_unchanged(object: &Object, live: &Value) -> bool {
    unchanged_without_asking(live, &manifest_for(object, Some(live), None))
}

/// Live against desired for every object, like `kubectl diff`: (object, layer, live YAML or
/// empty when absent, desired YAML), both redacted. Objects that would be pruned come last with
/// an empty desired side and, like `flux diff`, only their identity on the live side: the rules
/// that said which of their fields are sensitive may have left the repository with them.
pub async fn diff<T: Target>(
    target: &T,
    set: &DesiredSet,
    revision: Option<&str>,
    options: &Options,
) -> Result<Vec<(ObjectId, String, String, String)>, TargetError> {
    let surveys = survey_all(target, set, revision, options.concurrency).await?;
    let mut out = Vec::new();
    for s in surveys.iter().filter(|s| s.action != Action::Unchanged) {
        let live = s.live.as_ref().map(|l| drift::normalise(l, &s.object.ignore));
        let desired = match &s.dry_run {
            Some(dry) => drift::normalise(dry, &s.object.ignore),
            None => s.manifest.clone(),
        };
        if live.as_ref() != Some(&desired) {
            let shown = |v: &Value| crate::yaml::to_string(&options.redactor.shown(v, &s.object.sensitive));
            out.push((
                s.object.id.clone(),
                s.layer.name.clone(),
                live.as_ref().map(shown).unwrap_or_default(),
                shown(&desired),
            ));
        }
    }
    if let Some(old) = target.read_inventory(&set.cluster).await? {
        for entry in old.prune_candidates(set) {
            let Some(id) = entry.object_id() else { continue };
            let Some(resource) = target.resource(&entry.api_version, &id.kind).await? else { continue };
            if target.get(&resource, id.namespace.as_deref(), &id.name).await?.is_some() {
                let mut identity = serde_json::json!({
                    "apiVersion": entry.api_version,
                    "kind": id.kind,
                    "metadata": { "name": id.name },
                });
                if let Some(ns) = &id.namespace {
                    identity["metadata"]["namespace"] = Value::String(ns.clone());
                }
                out.push((id, String::new(), crate::yaml::to_string(&identity), String::new()));
            }
        }
    }
    Ok(out)
}
