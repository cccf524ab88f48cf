//! Inventory: what strata applied to a cluster, recorded in that cluster (DESIGN §5).
//!
//! Pruning is "in the old inventory, not in the new desired set": never anything strata did not
//! apply. Each entry remembers whether strata created the object, so Namespaces and CRDs that
//! existed before strata touched them are never deleted.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

use crate::render::DesiredSet;
use crate::render::object::{ObjectId, is_stage_zero};

/// One inventory per strata cluster, stored as a ConfigMap `strata-system/strata-inventory-<cluster>`
/// (or a file, for directory targets).
pub const INVENTORY_NAMESPACE: &str = "strata-system";
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

    /// A copy without `entries` whose ids are in `remove`.
    pub fn without(&self, remove: &BTreeSet<String>) -> Inventory {
        let mut out = self.clone();
        out.entries.retain(|e| !remove.contains(&e.id));
        out
    }

    /// The inventory that covers both: `new`'s entries followed by those of `old` still awaiting
    /// prune. Written before pruning, so a crash in the middle leaves nothing untracked.
    pub fn with_pending(new: &Inventory, pending: &[Entry]) -> Inventory {
        let mut out = new.clone();
        out.entries.extend(pending.iter().cloned());
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::LayerKind;
    use crate::render::{LayerSet, Object};
    use serde_json::json;

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
    fn entry_ids_round_trip() {
        let id = ObjectId::new("apps/v1", "Deployment", Some("ns"), "ui");
        let entry = Entry { id: id.inventory_key(), api_version: "apps/v1".into(), created: true };
        assert_eq!(entry.object_id(), Some(id));
        let ns = ObjectId::new("v1", "Namespace", None, "kubecost");
        assert_eq!(Entry { id: ns.inventory_key(), api_version: "v1".into(), created: true }.object_id(), Some(ns));
    }
}
