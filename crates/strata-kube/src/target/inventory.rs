//! Inventory: what strata applied to a cluster, recorded in that cluster (DESIGN §5).
//!
//! Pruning is "in the old inventory, not in the new desired set": never anything strata did not
//! apply. Each entry remembers whether strata created the object, so Namespaces and CRDs that
//! existed before strata touched them are never deleted.
//!
//! The lifecycle of one apply, as Kubernetes' cli-utils runs it, so that a process killed at any
//! instruction leaves every object it may have created tracked:
//!
//! ```text
//!   old ──inventory-add──> old ∪ new   written before the first object is   (covering)
//!                                      (old's profile, version, digest and revision: what was
//!                                       last applied completely)
//!       ──apply, prune──>  new ∪ what could not be pruned, with the new       (after_apply +
//!                          profile, version, digest and revision               with_pending)
//! ```

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

use crate::render::DesiredSet;
use crate::render::object::{ObjectId, is_stage_zero};

/// One inventory per strata cluster, stored as a ConfigMap `strata-system/strata-inventory-<cluster>`
/// (or a file, for directory targets).
pub const INVENTORY_NAMESPACE: &str = crate::render::object::STRATA_NAMESPACE;
pub const INVENTORY_PREFIX: &str = "strata-inventory-";
pub const INVENTORY_KEY: &str = "inventory.json";

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Inventory {
    pub cluster: String,
    pub profile: String,
    pub version: String,
    pub digest: String,
    pub revision: Option<String>,
    pub entries: Vec<Entry>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    /// `group/kind/namespace/name` ([`ObjectId::inventory_key`]).
    pub id: String,
    pub api_version: String,
    /// Whether strata created the object (it did not exist before strata's first apply).
    pub created: bool,
}

impl Entry {
    pub fn object_id(&self) -> Option<ObjectId> {
        let mut parts = self.id.splitn(4, '/');
        let (group, kind, namespace, name) = (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
        Some(ObjectId {
            group: group.to_string(),
            kind: kind.to_string(),
            namespace: (!namespace.is_empty()).then(|| namespace.to_string()),
            name: name.to_string(),
        })
    }
}

impl Inventory {
    /// The inventory after applying `set`: its objects, keeping `created` from `old` for objects
    /// strata already managed, and marking as created those in `created_now`.
    pub fn after_apply(
        set: &DesiredSet,
        revision: Option<&str>,
        old: Option<&Inventory>,
        created_now: &BTreeSet<ObjectId>,
    ) -> Inventory {
        let entries = set
            .apply_order()
            .into_iter()
            .map(|(_, o)| {
                let id = o.id.inventory_key();
                let was_created =
                    old.and_then(|old| old.entries.iter().find(|e| e.id == id)).is_some_and(|e| e.created);
                Entry {
                    api_version: o.manifest["apiVersion"].as_str().unwrap_or_default().to_string(),
                    created: was_created || created_now.contains(&o.id),
                    id,
                }
            })
            .collect();
        Inventory {
            cluster: set.cluster.clone(),
            profile: set.profile.clone(),
            version: set.version.clone(),
            digest: set.digest.clone(),
            revision: revision.map(str::to_string),
            entries,
        }
    }

    /// Entries of `self` that `set` no longer has, in prune order: the reverse of apply order,
    /// Namespaces and CRDs last (everything inside them goes first).
    pub fn prune_candidates(&self, set: &DesiredSet) -> Vec<Entry> {
        let keep: BTreeSet<String> = set.apply_order().into_iter().map(|(_, o)| o.id.inventory_key()).collect();
        let gone: Vec<Entry> = self.entries.iter().filter(|e| !keep.contains(&e.id)).cloned().collect();
        let (last, mut first): (Vec<Entry>, Vec<Entry>) =
            gone.into_iter().partition(|e| e.object_id().is_some_and(|id| is_stage_zero(&id)));
        first.reverse();
        let mut last = last;
        last.reverse();
        first.extend(last);
        first
    }

    /// inventory-add: what must be tracked before `set` is applied. Every entry of `old`, then
    /// every object of `set` it lacks; an object `absent` from the cluster now is marked created,
    /// as strata is about to create it. The metadata stays `old`'s (none for a first apply): it
    /// names the last apply that completed, which this one has not yet.
    pub fn covering(old: Option<&Inventory>, set: &DesiredSet, absent: &BTreeSet<ObjectId>) -> Inventory {
        let mut out = match old {
            Some(old) => old.clone(),
            None => Inventory { cluster: set.cluster.clone(), ..Inventory::default() },
        };
        for (_, o) in set.apply_order() {
            let id = o.id.inventory_key();
            let created = absent.contains(&o.id);
            match out.entries.iter_mut().find(|e| e.id == id) {
                Some(entry) => entry.created |= created,
                None => out.entries.push(Entry {
                    api_version: o.manifest["apiVersion"].as_str().unwrap_or_default().to_string(),
                    id,
                    created,
                }),
            }
        }
        out
    }

    /// `new`'s entries followed by `pending` ones still tracked (not yet pruned, or not
    /// prunable right now).
    pub fn with_pending(new: &Inventory, pending: &[Entry]) -> Inventory {
        let mut out = new.clone();
        out.entries.extend(pending.iter().cloned());
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::render::{LayerSet, Object};
    use serde_json::json;
    use strata_core::model::LayerKind;

    fn object(api_version: &str, kind: &str, ns: Option<&str>, name: &str) -> Object {
        Object {
            id: ObjectId::new(api_version, kind, ns, name),
            file: String::new(),
            line: 0,
            manifest: json!({"apiVersion": api_version, "kind": kind, "metadata": {"name": name}}),
            ignore: vec![],
            sensitive: vec![],
        }
    }

    fn set(objects: Vec<Object>) -> DesiredSet {
        DesiredSet {
            cluster: "c".into(),
            profile: "p".into(),
            version: "1.0.0".into(),
            layers: vec![LayerSet { name: "l".into(), kind: LayerKind::Manifests, objects, digest: String::new() }],
            digest: "sha256:x".into(),
        }
    }

    #[test]
    fn created_is_remembered_across_applies() {
        let v1 =
            set(vec![object("v1", "Namespace", None, "kubecost"), object("v1", "ConfigMap", Some("kubecost"), "a")]);
        let created: BTreeSet<_> = [ObjectId::new("v1", "Namespace", None, "kubecost")].into();
        let first = Inventory::after_apply(&v1, Some("r1"), None, &created);
        assert!(first.entries[0].created);
        assert!(!first.entries[1].created);
        let second = Inventory::after_apply(&v1, Some("r2"), Some(&first), &BTreeSet::new());
        assert!(second.entries[0].created, "still strata's namespace");
    }

    #[test]
    fn prune_removes_what_left_namespaces_and_crds_last() {
        let v11 = set(vec![
            object("v1", "Namespace", None, "hello-universe"),
            object("v1", "Namespace", None, "kubecost"),
            object("apps/v1", "Deployment", Some("hello-universe"), "ui"),
            object("v1", "Service", Some("kubecost"), "cost"),
            object("apps/v1", "Deployment", Some("kubecost"), "cost"),
        ]);
        let v10 = set(vec![
            object("v1", "Namespace", None, "hello-universe"),
            object("apps/v1", "Deployment", Some("hello-universe"), "ui"),
        ]);
        let inventory = Inventory::after_apply(&v11, None, None, &BTreeSet::new());
        let prune: Vec<_> = inventory.prune_candidates(&v10).into_iter().map(|e| e.id).collect();
        assert_eq!(prune, ["apps/Deployment/kubecost/cost", "/Service/kubecost/cost", "/Namespace//kubecost"]);
    }

    #[test]
    fn the_inventory_written_before_applying_covers_old_and_new() {
        let v1 = set(vec![object("v1", "Namespace", None, "a"), object("v1", "ConfigMap", Some("a"), "one")]);
        let old = Inventory::after_apply(&v1, Some("r1"), None, &[ObjectId::new("v1", "Namespace", None, "a")].into());
        let v2 = set(vec![object("v1", "Namespace", None, "b"), object("v1", "ConfigMap", Some("b"), "two")]);
        let absent: BTreeSet<_> = [ObjectId::new("v1", "Namespace", None, "b")].into();
        let covering = Inventory::covering(Some(&old), &v2, &absent);
        let ids: Vec<&str> = covering.entries.iter().map(|e| e.id.as_str()).collect();
        assert_eq!(ids, ["/Namespace//a", "/ConfigMap/a/one", "/Namespace//b", "/ConfigMap/b/two"]);
        assert!(covering.entries[0].created && covering.entries[2].created && !covering.entries[3].created);
        assert_eq!(covering.revision.as_deref(), Some("r1"), "still what was last applied completely");
        let first = Inventory::covering(None, &v2, &absent);
        assert_eq!((first.revision, first.digest.as_str(), first.entries.len()), (None, "", 2));
    }

    #[test]
    fn entry_ids_round_trip() {
        let id = ObjectId::new("apps/v1", "Deployment", Some("ns"), "ui");
        let entry = Entry { id: id.inventory_key(), api_version: "apps/v1".into(), created: true };
        assert_eq!(entry.object_id(), Some(id));
        let ns = ObjectId::new("v1", "Namespace", None, "kubecost");
        assert_eq!(Entry { id: ns.inventory_key(), api_version: "v1".into(), created: true }.object_id(), Some(ns));
    }
}
