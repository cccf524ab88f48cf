//! Plan: two revisions in, per cluster what changes and why.
//!
//! ```text
//!   base (Model, Tree) ─┐   fingerprint equal? ── yes ──> unchanged (nothing rendered)
//!   head (Model, Tree) ─┴──────────────────────── no ───> render both ──> classify ──> object diffs
//! ```
//!
//! Classification follows the three ways a fleet changes (DESIGN §1): a new profile version
//! (upgrade / rollback), an in-place edit of the version a cluster runs, a cluster override —
//! plus new and removed clusters. A cluster with `updates: manual` shows an in-place edit as a
//! pending update. Clusters whose inputs did not change are settled by fingerprint, so a plan
//! that touches one profile version renders only the clusters on it.
//!
//! Object diffs are of the redacted copies ([`crate::redact`]): a plan — and so a pull-request
//! comment, a stored pending update — shows that a Secret's key changed, never its value.

pub mod format;

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use serde::Serialize;

use crate::diag::Diagnostics;
use crate::model::{Cluster, Model, UpdatePolicy};
use crate::redact::Redactor;
use crate::render::object::ObjectId;
use crate::render::tools::Tools;
use crate::render::{self, DesiredSet, Object, Renderer};
use crate::source::Tree;
use crate::yaml;

/// Why a cluster's desired set changes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ChangeKind {
    NewCluster,
    RemovedCluster,
    /// The cluster moved to another profile altogether.
    ProfileSwitch,
    Upgrade,
    Rollback,
    /// The profile version the cluster runs was edited in place.
    InPlaceEdit,
    /// The cluster's own file changed what it renders (overrides, tags used by templates).
    Override,
    Unchanged,
}

impl ChangeKind {
    pub fn label(self) -> &'static str {
        match self {
            ChangeKind::NewCluster => "new cluster",
            ChangeKind::RemovedCluster => "removed cluster",
            ChangeKind::ProfileSwitch => "profile switch",
            ChangeKind::Upgrade => "upgrade",
            ChangeKind::Rollback => "rollback",
            ChangeKind::InPlaceEdit => "in-place edit",
            ChangeKind::Override => "override",
            ChangeKind::Unchanged => "unchanged",
        }
    }
}

impl fmt::Display for ChangeKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.label())
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    Added,
    Changed,
    Removed,
}

#[derive(Debug, Clone, Serialize)]
pub struct ObjectChange {
    pub id: ObjectId,
    pub layer: String,
    pub action: Action,
    /// Unified diff of the object's YAML, sensitive values redacted (empty for objects of new and
    /// removed clusters).
    pub diff: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct ClusterPlan {
    pub cluster: String,
    /// The main reason, `reasons[0]`; `unchanged` when there is none.
    pub kind: ChangeKind,
    /// Every reason that applies, e.g. an in-place edit and an override in one commit.
    pub reasons: Vec<ChangeKind>,
    /// `profile@version` before and after.
    pub from: Option<String>,
    pub to: Option<String>,
    pub updates: UpdatePolicy,
    /// An in-place edit on a cluster with `updates: manual`: held until approved.
    pub pending: bool,
    /// A newer version of the profile outside what the cluster pins.
    pub update_available: Option<String>,
    pub base_digest: Option<String>,
    pub head_digest: Option<String>,
    pub objects: Vec<ObjectChange>,
}

impl ClusterPlan {
    pub fn changed(&self) -> bool {
        self.kind != ChangeKind::Unchanged
    }

    pub fn count(&self, action: Action) -> usize {
        self.objects.iter().filter(|o| o.action == action).count()
    }

    /// `in-place edit + override`, `pending update (in-place edit)`.
    pub fn describe(&self) -> String {
        let reasons: Vec<_> = self.reasons.iter().map(|r| r.label()).collect();
        let reasons = if reasons.is_empty() { ChangeKind::Unchanged.label().to_string() } else { reasons.join(" + ") };
        if self.pending { format!("pending update ({reasons})") } else { reasons }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Plan {
    pub base: Option<String>,
    pub head: Option<String>,
    pub clusters: Vec<ClusterPlan>,
    /// The rollouts that hold some of these changes, with their waves.
    pub rollouts: Vec<crate::rollout::plan::RolloutPlan>,
}

impl Plan {
    pub fn changed(&self) -> impl Iterator<Item = &ClusterPlan> {
        self.clusters.iter().filter(|c| c.changed())
    }

    pub fn has_changes(&self) -> bool {
        self.changed().next().is_some()
    }

    /// One line for a commit status or a PR title: `3 clusters change: 1 upgrade, 2 pending updates`.
    pub fn summary(&self) -> String {
        let changed: Vec<_> = self.changed().collect();
        if changed.is_empty() {
            return "no cluster changes".to_string();
        }
        let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
        for c in &changed {
            let key = if c.pending { "pending update" } else { c.kind.label() };
            *counts.entry(key).or_default() += 1;
        }
        let order = [
            "new cluster",
            "removed cluster",
            "profile switch",
            "upgrade",
            "rollback",
            "in-place edit",
            "pending update",
            "override",
        ];
        let parts: Vec<String> =
            order.iter().filter_map(|k| counts.get(k).map(|n| format!("{n} {}", plural(k, *n)))).collect();
        let n = changed.len();
        format!(
            "{n} cluster{} change{}: {}",
            if n == 1 { "" } else { "s" },
            if n == 1 { "s" } else { "" },
            parts.join(", ")
        )
    }
}

fn plural(word: &str, n: usize) -> String {
    if n == 1 {
        word.to_string()
    } else if word.ends_with("edit")
        || word.ends_with("update")
        || word.ends_with("cluster")
        || word.ends_with("upgrade")
        || word.ends_with("rollback")
        || word.ends_with("override")
    {
        format!("{word}s")
    } else if word.ends_with("switch") {
        format!("{word}es")
    } else {
        word.to_string()
    }
}

/// One side of a plan: a revision's tree and validated model.
pub struct Side<'a> {
    pub revision: Option<&'a str>,
    pub tree: &'a dyn Tree,
    pub model: &'a Model,
}

/// Plans every cluster from `base` (absent: an empty repository) to `head`; diffs show sensitive
/// values as `redactor`'s markers.
pub fn plan(base: Option<Side>, head: Side, tools: &dyn Tools, redactor: &Redactor) -> Result<Plan, Diagnostics> {
    let empty = Model::default();
    let base_model = base.as_ref().map(|b| b.model).unwrap_or(&empty);
    let base_renderer = base.as_ref().map(|b| Renderer::new(b.tree, b.model, tools));
    let head_renderer = Renderer::new(head.tree, head.model, tools);
    let mut base_fps = BTreeMap::new();
    let mut head_fps = BTreeMap::new();

    let names: BTreeSet<&String> = base_model.clusters.keys().chain(head.model.clusters.keys()).collect();
    let mut clusters = Vec::with_capacity(names.len());
    let mut diags = Diagnostics::new();
    for name in names {
        let before = base_model.clusters.get(name);
        let after = head.model.clusters.get(name);
        let result = match (before, after) {
            (None, Some(after)) => {
                head_renderer.render(after).map(|set| one_sided(after, set, head.model, ChangeKind::NewCluster))
            }
            (Some(before), None) => base_renderer
                .as_ref()
                .expect("a base cluster implies a base")
                .render(before)
                .map(|set| one_sided(before, set, base_model, ChangeKind::RemovedCluster)),
            (Some(before), Some(after)) => {
                let base = base.as_ref().expect("a base cluster implies a base");
                compare(
                    (before, base.tree, base_renderer.as_ref().expect("base"), &mut base_fps),
                    (after, head.tree, &head_renderer, &mut head_fps),
                    redactor,
                )
            }
            (None, None) => unreachable!("name came from one of the two"),
        };
        match result {
            Ok(plan) => clusters.push(plan),
            Err(d) => diags.extend(d),
        }
    }
    let rollouts = crate::rollout::plan::section(&clusters, base_model, head.model);
    diags.into_result(Plan {
        base: base.and_then(|b| b.revision.map(str::to_string)),
        head: head.revision.map(str::to_string),
        clusters,
        rollouts,
    })
}

fn one_sided(cluster: &Cluster, set: DesiredSet, model: &Model, kind: ChangeKind) -> ClusterPlan {
    let id = format!("{}@{}", set.profile, set.version);
    let action = if kind == ChangeKind::NewCluster { Action::Added } else { Action::Removed };
    let objects = set
        .apply_order()
        .into_iter()
        .map(|(layer, object)| ObjectChange {
            id: object.id.clone(),
            layer: layer.name.clone(),
            action,
            diff: String::new(),
        })
        .collect();
    let new = kind == ChangeKind::NewCluster;
    ClusterPlan {
        cluster: cluster.name.clone(),
        kind,
        reasons: vec![kind],
        from: (!new).then(|| id.clone()),
        to: new.then_some(id),
        updates: cluster.updates,
        pending: false,
        update_available: if new { update_available(model, cluster) } else { None },
        base_digest: (!new).then(|| set.digest.clone()),
        head_digest: new.then_some(set.digest),
        objects,
    }
}

fn update_available(model: &Model, cluster: &Cluster) -> Option<String> {
    model.resolve(cluster).ok()?.update_available.map(|v| v.to_string())
}

/// One side of a per-cluster comparison: the cluster, and the tree, renderer and fingerprint cache
/// of the revision its profiles come from (the daemon compares against what each cluster runs).
pub type SideOf<'r, 'a> = (&'r Cluster, &'r dyn Tree, &'r Renderer<'a>, &'r mut BTreeMap<String, String>);

/// Plans one cluster from `base` to `head`; clusters whose inputs did not change are settled by
/// fingerprint without rendering.
pub fn compare(base: SideOf, head: SideOf, redactor: &Redactor) -> Result<ClusterPlan, Diagnostics> {
    let (before, base_tree, base_renderer, base_fps) = base;
    let (after, head_tree, head_renderer, head_fps) = head;
    let base_model = base_renderer.model();
    let head_model = head_renderer.model();
    let from = base_model.resolve(before).map_err(Diagnostics::from)?.profile;
    let resolution = head_model.resolve(after).map_err(Diagnostics::from)?;
    let to = resolution.profile;
    let mut plan = ClusterPlan {
        cluster: after.name.clone(),
        kind: ChangeKind::Unchanged,
        reasons: Vec::new(),
        from: Some(from.id()),
        to: Some(to.id()),
        updates: after.updates,
        pending: false,
        update_available: resolution.update_available.map(|v| v.to_string()),
        base_digest: None,
        head_digest: None,
        objects: Vec::new(),
    };

    let base_fp = render::fingerprint(base_tree, base_model, before, base_fps)?;
    let head_fp = render::fingerprint(head_tree, head_model, after, head_fps)?;
    if base_fp == head_fp {
        return Ok(plan);
    }
    let old = base_renderer.render(before)?;
    let new = head_renderer.render(after)?;
    plan.base_digest = Some(old.digest.clone());
    plan.head_digest = Some(new.digest.clone());
    if old.digest == new.digest {
        return Ok(plan);
    }

    if from.name != to.name {
        plan.reasons.push(ChangeKind::ProfileSwitch);
    } else if to.version > from.version {
        plan.reasons.push(ChangeKind::Upgrade);
    } else if to.version < from.version {
        plan.reasons.push(ChangeKind::Rollback);
    } else {
        // Same profile version: was the version itself edited, or the cluster's settings?
        if base_fps.get(&from.id()) != head_fps.get(&to.id()) {
            plan.reasons.push(ChangeKind::InPlaceEdit);
        }
        if before.overrides != after.overrides || before.tags != after.tags || plan.reasons.is_empty() {
            plan.reasons.push(ChangeKind::Override);
        }
    }
    plan.kind = plan.reasons[0];
    plan.pending = after.updates == UpdatePolicy::Manual && plan.reasons.contains(&ChangeKind::InPlaceEdit);
    plan.objects = diff_sets(&old, &new, redactor);
    Ok(plan)
}

/// Object-level differences between two desired sets, in the head's apply order (removed
/// objects last, in the base's order). Whether an object changed is judged on its real content;
/// what the diff shows is its redacted copy on each side.
pub fn diff_sets(old: &DesiredSet, new: &DesiredSet, redactor: &Redactor) -> Vec<ObjectChange> {
    let before: BTreeMap<&ObjectId, &Object> = old.apply_order().into_iter().map(|(_, o)| (&o.id, o)).collect();
    let shown = |object: &Object| yaml::to_string(&object.shown(redactor));
    let mut seen = BTreeSet::new();
    let mut changes = Vec::new();
    for (layer, object) in new.apply_order() {
        seen.insert(&object.id);
        let (action, diff) = match before.get(&object.id) {
            None => (Action::Added, unified(&object.id, "", &shown(object))),
            Some(old) if old.manifest != object.manifest => {
                (Action::Changed, unified(&object.id, &shown(old), &shown(object)))
            }
            Some(_) => continue,
        };
        changes.push(ObjectChange { id: object.id.clone(), layer: layer.name.clone(), action, diff });
    }
    for (layer, object) in old.apply_order() {
        if !seen.contains(&object.id) {
            changes.push(ObjectChange {
                id: object.id.clone(),
                layer: layer.name.clone(),
                action: Action::Removed,
                diff: unified(&object.id, &shown(object), ""),
            });
        }
    }
    changes
}

fn unified(id: &ObjectId, old: &str, new: &str) -> String {
    similar::TextDiff::from_lines(old, new)
        .unified_diff()
        .context_radius(3)
        .header(&format!("base/{id}"), &format!("head/{id}"))
        .to_string()
}
