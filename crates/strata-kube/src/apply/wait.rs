//! Wait: until what was applied is healthy — CRDs Established before the kinds they define are
//! applied, and workloads, Jobs and CRDs ready (or failed) after the apply, within
//! `health_timeout`. Health itself is read by [`super::health`].

use std::collections::{BTreeSet, HashMap, HashSet};
use std::time::Instant;

use super::Options;
use super::health::{self, Health};
use super::survey::Survey;
use crate::render::Object;
use crate::render::object::ObjectId;
use crate::target::{Observed, Resource, Target};

/// Until every CRD of `surveys` is Established, or `health_timeout`: polled.
pub(super) async fn established<T: Target>(target: &T, surveys: &[Survey<'_>], options: &Options) {
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
pub(super) async fn healthy<T: Target>(
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
