//! Survey: what exists. For every object of a set, its kind from discovery, the live object
//! (objects of a kind many of which share a namespace listed once, not fetched one by one) and a
//! server-side dry-run of what strata would apply — unless the live object provably already is
//! that. Reads the cluster, writes nothing.
//!
//! Objects whose kind or namespace this very set brings (a CRD, a new Namespace) cannot be
//! checked before stage 0 creates them: they are `deferred`, and surveyed again after it.

use std::collections::{HashMap, HashSet};

use futures::stream::{self, StreamExt};
use serde_json::Value;
use sha2::{Digest as _, Sha256};

use super::{Action, ObjectResult, drift};
use crate::render::object::{ANNOTATION_APPLIED, ANNOTATION_REVISION, is_stage_zero, stamp_revision};
use crate::render::{DesiredSet, LayerSet, Object};
use crate::target::{Resource, Target, TargetError};

/// One object as the cluster sees it now, and what applying it would do.
pub(super) struct Survey<'a> {
    pub(super) layer: &'a LayerSet,
    pub(super) object: &'a Object,
    /// `None` until the kind is served (a CRD in this set not yet created).
    pub(super) resource: Option<Resource>,
    pub(super) live: Option<Value>,
    /// The manifest to apply: stamped with a revision, ignored fields left out of existing objects.
    pub(super) manifest: Value,
    /// The dry-run result of applying `manifest` (what the object would become).
    pub(super) dry_run: Option<Value>,
    pub(super) action: Action,
    pub(super) message: Option<String>,
    /// Checked only after stage 0: its kind or its namespace comes with this very set.
    pub(super) deferred: bool,
}

impl Survey<'_> {
    pub(super) fn result(&self, action: Action, millis: u64, message: Option<String>) -> ObjectResult {
        ObjectResult { id: self.object.id.clone(), layer: self.layer.name.clone(), action, millis, message }
    }
}

/// The manifest to apply for `object`: stamped with the revision the live object carries (else
/// `revision`), and without ignored fields once the object exists (they are left to whoever owns them).
/// The applied-digest annotation is over the manifest without ignored fields either way, so an
/// object just created with their first values is the same, to a drift check, as one updated.
pub(super) fn manifest_for(object: &Object, live: Option<&Value>, revision: Option<&str>) -> Value {
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
pub(super) fn unchanged_without_asking(live: &Value, manifest: &Value) -> bool {
    let applied = &manifest["metadata"]["annotations"][ANNOTATION_APPLIED];
    applied.is_string()
        && live["metadata"]["annotations"][ANNOTATION_APPLIED] == *applied
        && drift::contains(live, manifest)
}

/// What stage 0 of this set will create, which objects of later stages may need before they can
/// be checked against the cluster: CRDs' kinds, and namespaces that do not exist yet.
#[derive(Default)]
pub(super) struct Pending {
    pub(super) kinds: HashSet<(String, String)>,
    pub(super) namespaces: HashSet<String>,
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
async fn one<'a, T: Target>(
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

/// Surveys every object of `set`: stage 0 (Namespaces, CRDs) first, then the rest knowing what
/// stage 0 will create.
pub(super) async fn all<'a, T: Target>(
    target: &T,
    set: &'a DesiredSet,
    revision: Option<&str>,
    concurrency: usize,
) -> Result<Vec<Survey<'a>>, TargetError> {
    let (zero, rest): (Vec<_>, Vec<_>) = set.apply_order().into_iter().partition(|(_, o)| is_stage_zero(&o.id));
    let mut surveys = batch(target, zero, revision, &Pending::default(), HashSet::new(), concurrency).await?;
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
    surveys.extend(batch(target, rest, revision, &pending, HashSet::new(), concurrency).await?);
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
pub(super) async fn batch<'a, T: Target>(
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
    // Objects in namespaces that stage 0 creates are not looked up now (see `one`).
    let lookups: Vec<(&Object, Option<&Resource>)> = objects
        .iter()
        .zip(&resources)
        .filter(|((_, o), _)| {
            !o.id.namespace.as_ref().is_some_and(|ns| pending.namespaces.contains(ns) || fresh.contains(ns))
        })
        .map(|((_, o), r)| (*o, r.as_ref()))
        .collect();
    let prefetched = Prefetched { fresh, ..Prefetched::fetch(target, &lookups, concurrency).await? };
    let surveys: Vec<Result<Survey, TargetError>> = stream::iter(
        objects
            .into_iter()
            .zip(resources)
            .map(|((layer, object), resource)| one(target, layer, object, resource, revision, pending, &prefetched)),
    )
    .buffered(concurrency.max(1))
    .collect()
    .await;
    surveys.into_iter().collect()
}
