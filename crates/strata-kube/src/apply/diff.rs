//! Diff: live against desired, without writing. Drift (what someone else changed of what strata
//! applied, judged on a server-side dry-run so defaults and other managers' fields never count)
//! and `kubectl diff`-like pairs for `strata diff`; both from a survey, both redacted.

use std::collections::BTreeSet;

use serde_json::Value;

use super::drift::{self, Finding};
use super::survey;
use super::{Action, Options};
use crate::render::object::ObjectId;
use crate::render::{DesiredSet, LayerSet, Object};
use crate::target::{Target, TargetError};

/// Drift of every object in `set` (what strata last applied): fields changed by someone else,
/// and objects deleted, minus ignore rules. Findings are judged on real values and carry the
/// redacted ones.
pub async fn detect_drift<T: Target>(
    target: &T,
    set: &DesiredSet,
    options: &Options,
) -> Result<Vec<Finding>, TargetError> {
    let surveys = survey::all(target, set, None, options.concurrency).await?;
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
    survey::unchanged_without_asking(live, &survey::manifest_for(object, Some(live), None))
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
    let surveys = survey::all(target, set, revision, options.concurrency).await?;
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
