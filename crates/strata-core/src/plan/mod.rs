//! Plan: two revisions in, per cluster what changes and why.
//!
//! ```text
//!   base (Model, Tree) ─┐   changed paths (a diff of the two trees)
//!   head (Model, Tree) ─┴─> reach a cluster? ── no ──> unchanged (nothing rendered)
//!                           (its file's settings,  └─ yes ─> render both ──> classify ──> object diffs
//!                            the version it runs, what that version reads)     (in parallel)
//! ```
//!
//! Classification follows the three ways a fleet changes (DESIGN §1): a new profile version
//! (upgrade / rollback), an in-place edit of the version a cluster runs, a cluster override —
//! plus new and removed clusters. A cluster with `updates: manual` shows an in-place edit as a
//! pending update. Which clusters a change can reach is worked out before rendering, from the
//! paths it changed and what each profile version reads ([`render::reads`]): a plan that edits
//! one profile version renders only the clusters on it, so its cost follows the change.
//!
//! Object diffs are of the redacted copies ([`crate::redact`]): a plan — and so a pull-request
//! comment, a stored pending update — shows that a Secret's key changed, never its value.

pub mod format;
pub mod group;
pub mod rollouts;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;
use std::sync::Mutex;

use rayon::prelude::*;
use serde::Serialize;

use crate::diag::Diagnostics;
use crate::model::{Cluster, Model, Profile, UpdatePolicy};
use crate::redact::Redactor;
use crate::render::object::ObjectId;
use crate::render::tools::Tools;
use crate::render::{self, DesiredSet, Object, Renderer, Settings};
use crate::source::{Changes, Tree};
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
    /// The cluster's own file changed its field rules: which fields strata leaves to others
    /// (`ignore`: what is applied changes) or never shows (`sensitive`).
    FieldRules,
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
            ChangeKind::FieldRules => "field rules",
            ChangeKind::Unchanged => "unchanged",
        }
    }

    /// A change made in the cluster's own file: it applies at once, even beside a held edit.
    pub fn from_cluster_file(self) -> bool {
        matches!(self, ChangeKind::Override | ChangeKind::FieldRules)
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
    /// An in-place edit on a cluster with `updates: auto` and a maintenance window: the daemon
    /// applies it while the window is open (and holds it until then).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub window: Option<String>,
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
    /// The rollouts that hold some of these changes, with their waves (left out of the JSON
    /// when there are none, so plans of repositories without rollouts read as before).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub rollouts: Vec<rollouts::RolloutPlan>,
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
            "field rules",
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

/// Plans every cluster from `base` (absent: an empty repository) to `head`. `changes` are the
/// paths the two differ in (`None`: take every path as changed); only clusters they can reach
/// are rendered, both sides, on every core, with the host's `settings`. Diffs show sensitive
/// values as its redactor's markers.
pub fn plan(
    base: Option<Side>,
    head: Side,
    changes: Option<&Changes>,
    tools: &dyn Tools,
    settings: &Settings,
) -> Result<Plan, Diagnostics> {
    let redactor = &settings.redactor;
    let empty = Model::default();
    let base_model = base.as_ref().map(|b| b.model).unwrap_or(&empty);
    let base_renderer = base.as_ref().map(|b| Renderer::new(b.tree, b.model, tools).with_settings(settings));
    let head_renderer = Renderer::new(head.tree, head.model, tools).with_settings(settings);
    let edits = base.as_ref().map(|b| Edits::new(changes, b.tree, head.tree));

    let names: BTreeSet<&String> = base_model.clusters.keys().chain(head.model.clusters.keys()).collect();
    let names: Vec<&String> = names.into_iter().collect();
    let results: Vec<Result<ClusterPlan, Diagnostics>> = names
        .par_iter()
        .map(|name| match (base_model.clusters.get(*name), head.model.clusters.get(*name)) {
            (None, Some(after)) => {
                head_renderer.render(after).map(|set| one_sided(after, set, head.model, ChangeKind::NewCluster))
            }
            (Some(before), None) => base_renderer
                .as_ref()
                .expect("a base cluster implies a base")
                .render(before)
                .map(|set| one_sided(before, set, base_model, ChangeKind::RemovedCluster)),
            (Some(before), Some(after)) => compare(
                (before, base_renderer.as_ref().expect("a base cluster implies a base")),
                (after, &head_renderer),
                edits.as_ref().expect("a base cluster implies a base"),
                redactor,
            ),
            (None, None) => unreachable!("name came from one of the two"),
        })
        .collect();
    let mut clusters = Vec::with_capacity(names.len());
    let mut diags = Diagnostics::new();
    for result in results {
        match result {
            Ok(plan) => clusters.push(plan),
            Err(d) => diags.extend(d),
        }
    }
    let rollouts = rollouts::section(&clusters, base_model, head.model);
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
        window: None,
        update_available: if new { update_available(model, cluster) } else { None },
        base_digest: (!new).then(|| set.digest.clone()),
        head_digest: new.then_some(set.digest),
        objects,
    }
}

fn update_available(model: &Model, cluster: &Cluster) -> Option<String> {
    model.resolve(cluster).ok()?.update_available.map(|v| v.to_string())
}

/// Which profile versions a change edited in place, from the paths it changed and what each
/// version's rendering reads — worked out before anything renders, once per version.
pub struct Edits<'a> {
    /// `None`: every path counts as changed.
    changes: Option<&'a Changes>,
    base: &'a dyn Tree,
    head: &'a dyn Tree,
    known: Mutex<HashMap<String, bool>>,
}

impl<'a> Edits<'a> {
    /// `changes` between the trees `base` and `head` (`None` when unknown).
    pub fn new(changes: Option<&'a Changes>, base: &'a dyn Tree, head: &'a dyn Tree) -> Self {
        Edits { changes, base, head, known: Mutex::default() }
    }

    /// Whether the change can have edited this profile version (`base` and `head` are the same
    /// version on the two sides): a changed path is among what either side reads.
    pub fn edited(&self, base: &Profile, head: &Profile) -> bool {
        let Some(changes) = self.changes else { return true };
        if changes.is_empty() {
            return false;
        }
        let known = |known: &Mutex<HashMap<String, bool>>| {
            known.lock().unwrap_or_else(|p| p.into_inner()).get(&head.id()).copied()
        };
        if let Some(edited) = known(&self.known) {
            return edited;
        }
        let edited =
            render::reads(self.base, base).touched_by(changes) || render::reads(self.head, head).touched_by(changes);
        self.known.lock().unwrap_or_else(|p| p.into_inner()).insert(head.id(), edited);
        edited
    }
}

/// One side of a per-cluster comparison: the cluster, and the renderer of the revision its
/// profiles come from (the daemon compares against what each cluster runs).
pub type SideOf<'r, 'a> = (&'r Cluster, &'r Renderer<'a>);

/// Plans one cluster from `base` to `head`; a cluster the change cannot reach (same settings, same
/// profile version, not edited) is settled without rendering.
pub fn compare(base: SideOf, head: SideOf, edits: &Edits, redactor: &Redactor) -> Result<ClusterPlan, Diagnostics> {
    let (before, base_renderer) = base;
    let (after, head_renderer) = head;
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
        window: None,
        update_available: resolution.update_available.map(|v| v.to_string()),
        base_digest: None,
        head_digest: None,
        objects: Vec::new(),
    };

    let same_version = from.id() == to.id();
    let edited = same_version && edits.edited(from, to);
    if same_version && !edited && render::same_inputs(before, after) {
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
        if edited {
            plan.reasons.push(ChangeKind::InPlaceEdit);
        }
        let overridden = before.overrides != after.overrides || before.tags != after.tags;
        if overridden {
            plan.reasons.push(ChangeKind::Override);
        }
        if before.ignore != after.ignore || before.sensitive != after.sensitive {
            plan.reasons.push(ChangeKind::FieldRules);
        }
        if plan.reasons.is_empty() {
            plan.reasons.push(ChangeKind::Override);
        }
    }
    plan.kind = plan.reasons[0];
    plan.pending = after.updates == UpdatePolicy::Manual && plan.reasons.contains(&ChangeKind::InPlaceEdit);
    if after.updates == UpdatePolicy::Auto && plan.reasons.contains(&ChangeKind::InPlaceEdit) {
        plan.window = after.window.as_ref().map(|w| w.to_string());
    }
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
