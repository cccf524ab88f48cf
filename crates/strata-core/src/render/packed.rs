//! Packed desired sets: a [`DesiredSet`] in, a compact copy out, and back.
//!
//! ```text
//!   each object ──remove the cluster's stamps──> JSON bytes ──intern by content──> shared bytes
//!   unpack: shared bytes ──parse──> stamp again (cluster, profile, version, layer) ──> the object
//! ```
//!
//! A daemon keeps one desired set per cluster for as long as it runs, and needs it only to apply
//! and to check drift. Parsed manifests take several times their JSON, and a fleet's clusters hold
//! mostly the same objects — differing in the stamps that name the cluster, and in the few values
//! a cluster overrides. So an object is kept as the JSON of its manifest without those stamps,
//! and equal JSON is held once for the whole process. Unpacking gives back exactly the set that
//! was packed: an object whose stamps are not the ones its set's identity gives is kept whole.

use std::collections::HashMap;
use std::hash::{BuildHasher, RandomState};
use std::sync::{Arc, LazyLock, Mutex, Weak};

use super::object::{self, ObjectId, Stamp};
use super::{DesiredSet, LayerSet, Object};
use crate::model::LayerKind;

/// A desired set kept for later, at a fraction of the memory of the parsed one — or only its
/// identity, for a set known by its digest and rendered when first needed.
#[derive(Debug, Clone)]
pub struct PackedSet {
    pub cluster: String,
    pub profile: String,
    pub version: String,
    pub digest: String,
    /// `None` for an identity only.
    layers: Option<Vec<PackedLayer>>,
}

#[derive(Debug, Clone)]
struct PackedLayer {
    name: String,
    kind: LayerKind,
    digest: String,
    objects: Vec<PackedObject>,
}

#[derive(Debug, Clone)]
struct PackedObject {
    id: ObjectId,
    file: Arc<[u8]>,
    line: usize,
    ignore: Vec<String>,
    sensitive: Vec<String>,
    /// The manifest's JSON, shared with every equal one.
    json: Arc<[u8]>,
    /// Whether the set's stamps were taken out (and go back in on unpacking).
    unstamped: bool,
}

impl PackedSet {
    pub fn pack(set: &DesiredSet) -> PackedSet {
        let layers = set
            .layers
            .iter()
            .map(|layer| {
                let stamp = stamp_of(set, &layer.name);
                let objects = layer
                    .objects
                    .iter()
                    .map(|o| {
                        let mut manifest = o.manifest.clone();
                        let unstamped = object::unstamp(&mut manifest, &stamp);
                        PackedObject {
                            id: o.id.clone(),
                            file: intern(o.file.as_bytes().to_vec()),
                            line: o.line,
                            ignore: o.ignore.clone(),
                            sensitive: o.sensitive.clone(),
                            json: intern(serde_json::to_vec(&manifest).expect("manifests serialise")),
                            unstamped,
                        }
                    })
                    .collect();
                PackedLayer { name: layer.name.clone(), kind: layer.kind, digest: layer.digest.clone(), objects }
            })
            .collect();
        PackedSet {
            cluster: set.cluster.clone(),
            profile: set.profile.clone(),
            version: set.version.clone(),
            digest: set.digest.clone(),
            layers: Some(layers),
        }
    }

    /// A set known only by what it is (say, from a record of what a cluster runs): its content
    /// has to be rendered before it can be unpacked.
    pub fn identity(cluster: &str, profile: &str, version: &str, digest: &str) -> PackedSet {
        PackedSet {
            cluster: cluster.to_string(),
            profile: profile.to_string(),
            version: version.to_string(),
            digest: digest.to_string(),
            layers: None,
        }
    }

    pub fn has_content(&self) -> bool {
        self.layers.is_some()
    }

    /// Its identity alone: what it is, without what it holds.
    pub fn to_identity(&self) -> PackedSet {
        PackedSet::identity(&self.cluster, &self.profile, &self.version, &self.digest)
    }

    /// Whether `other` is this very set: the same profile version and digest (the digest is
    /// over every object as applied, so equal digests are equal content).
    pub fn is(&self, other: &PackedSet) -> bool {
        (&self.digest, &self.profile, &self.version) == (&other.digest, &other.profile, &other.version)
    }

    /// Whether every layer renders within strata (manifests), without running kustomize or
    /// helm: a set that cheap to render again need not be kept.
    pub fn renders_in_process(&self) -> bool {
        self.layers.as_ref().is_some_and(|layers| layers.iter().all(|l| l.kind == LayerKind::Manifests))
    }

    /// The set. Only a set with content unpacks: an identity has nothing to apply, and taking it
    /// for an empty set would prune a cluster.
    pub fn unpack(&self) -> DesiredSet {
        let packed = self.layers.as_ref().expect("only a set with content is unpacked");
        let mut set = DesiredSet {
            cluster: self.cluster.clone(),
            profile: self.profile.clone(),
            version: self.version.clone(),
            layers: Vec::with_capacity(packed.len()),
            digest: self.digest.clone(),
        };
        let layers = packed
            .iter()
            .map(|layer| {
                let stamp = stamp_of(&set, &layer.name);
                let objects = layer
                    .objects
                    .iter()
                    .map(|o| {
                        let mut manifest = serde_json::from_slice(&o.json).expect("a packed manifest parses");
                        if o.unstamped {
                            object::stamp(&mut manifest, &stamp);
                        }
                        Object {
                            id: o.id.clone(),
                            file: String::from_utf8_lossy(&o.file).into_owned(),
                            line: o.line,
                            manifest,
                            ignore: o.ignore.clone(),
                            sensitive: o.sensitive.clone(),
                        }
                    })
                    .collect();
                LayerSet { name: layer.name.clone(), kind: layer.kind, objects, digest: layer.digest.clone() }
            })
            .collect();
        set.layers = layers;
        set
    }
}

fn stamp_of<'s>(set: &'s DesiredSet, layer: &'s str) -> Stamp<'s> {
    Stamp { cluster: &set.cluster, profile: &set.profile, version: &set.version, layer }
}

/// Byte strings held once per process: equal content, one allocation, freed with its last user.
static INTERNED: LazyLock<Mutex<Interner>> = LazyLock::new(Mutex::default);

#[derive(Default)]
struct Interner {
    hasher: RandomState,
    /// By hash of the content; a hit is compared byte for byte.
    entries: HashMap<u64, Vec<Weak<[u8]>>>,
    /// Entries added since the last sweep of dead ones.
    added: usize,
}

fn intern(bytes: Vec<u8>) -> Arc<[u8]> {
    let mut interner = INTERNED.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    let hash = interner.hasher.hash_one(&bytes);
    let bucket = interner.entries.entry(hash).or_default();
    if let Some(shared) = bucket.iter().filter_map(Weak::upgrade).find(|shared| **shared == *bytes) {
        return shared;
    }
    let shared: Arc<[u8]> = bytes.into();
    bucket.push(Arc::downgrade(&shared));
    interner.added += 1;
    // A dead entry still holds its allocation: sweep once as many were added as are kept, so
    // the table stays within twice what is in use.
    if interner.added > interner.entries.len().max(1024) {
        interner.entries.retain(|_, bucket| {
            bucket.retain(|weak| weak.strong_count() > 0);
            !bucket.is_empty()
        });
        interner.added = 0;
    }
    shared
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn object(name: &str, manifest: serde_json::Value) -> Object {
        Object {
            id: ObjectId::new("v1", "ConfigMap", Some("apps"), name),
            file: "packs/app/cm.yaml".into(),
            line: 3,
            manifest,
            ignore: vec!["/data/x".into()],
            sensitive: Vec::new(),
        }
    }

    fn set(cluster: &str, objects: Vec<Object>) -> DesiredSet {
        let mut set = DesiredSet {
            cluster: cluster.into(),
            profile: "p".into(),
            version: "1.0.0".into(),
            layers: vec![LayerSet {
                name: "app".into(),
                kind: LayerKind::Manifests,
                objects,
                digest: "sha256:l".into(),
            }],
            digest: "sha256:s".into(),
        };
        for layer in &mut set.layers {
            for o in &mut layer.objects {
                let stamp = Stamp { cluster, profile: "p", version: "1.0.0", layer: "app" };
                object::stamp(&mut o.manifest, &stamp);
            }
        }
        set
    }

    fn json_of(set: &DesiredSet) -> String {
        serde_json::to_string(set).unwrap()
    }

    #[test]
    fn a_set_unpacks_to_exactly_what_was_packed() {
        let original = set(
            "a",
            vec![
                object("plain", json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "plain"}})),
                object(
                    "labelled",
                    json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "labelled", "labels": {"app": "x"}, "annotations": {"note": "y"}}, "data": {"k": "v"}}),
                ),
            ],
        );
        assert_eq!(json_of(&original.pack().unpack()), json_of(&original));
    }

    #[test]
    fn clusters_share_the_objects_they_have_in_common() {
        let manifest = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "cm"}, "data": {"k": "v"}});
        let a = set("a", vec![object("cm", manifest.clone())]).pack();
        let b = set("b", vec![object("cm", manifest)]).pack();
        let json = |set: &PackedSet| set.layers.as_ref().unwrap()[0].objects[0].json.clone();
        assert!(Arc::ptr_eq(&json(&a), &json(&b)));
        assert_eq!(b.unpack().layers[0].objects[0].manifest["metadata"]["labels"][object::LABEL_CLUSTER], "b");
    }

    #[test]
    fn an_object_with_stamps_of_its_own_is_kept_whole() {
        let mut original = set("a", vec![object("cm", json!({"metadata": {"name": "cm"}}))]);
        // Not what the set's identity stamps: packing must not lose it.
        original.layers[0].objects[0].manifest["metadata"]["labels"][object::LABEL_LAYER] = json!("other");
        let packed = original.pack();
        assert!(!packed.layers.as_ref().unwrap()[0].objects[0].unstamped);
        assert_eq!(json_of(&packed.unpack()), json_of(&original));
    }
}
