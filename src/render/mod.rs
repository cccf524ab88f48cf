//! Render: a cluster of a [`Model`] in, its [`DesiredSet`] out.
//!
//! ```text
//!   layer values ⊕ cluster overrides ──> values ──┐
//!   layer source (templates | kustomization | chart) ──> documents ──> check ──> namespace ──> stamp ──> digest
//!                                                  (cached per layer and inputs)   (per cluster)
//! ```
//!
//! Rendering is a pure function of the snapshot and the model; the only IO is the external tools
//! of kustomize and helm layers, behind [`Tools`]. What many clusters share (a layer rendered
//! with the same values) is rendered once per [`Renderer`] and reused, which is what keeps
//! rendering a fleet fast.

pub mod budget;
pub mod kustomization;
pub mod names;
pub mod object;
pub mod sandbox;
pub mod template;
pub mod tools;

use std::cell::{OnceCell, RefCell};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::rc::Rc;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};
use sha2::{Digest as _, Sha256};

use crate::diag::{Code, Diagnostic, Diagnostics};
use crate::model::{Cluster, FieldRule, Layer, LayerKind, Model, Profile};
use crate::repo::read_diag;
use crate::source::{self, Tree};
use crate::yaml;
use object::{ObjectId, Stamp};
use template::LayerTemplates;
use tools::{HelmRequest, ToolError, Tools, Workspace};

/// Deep-merges `over` into `base`: maps merge key by key, anything else (lists included) is
/// replaced. This is how cluster overrides apply over layer values.
pub fn merge_values(base: &mut Map<String, Value>, over: &Map<String, Value>) {
    for (key, value) in over {
        match (base.get_mut(key), value) {
            (Some(Value::Object(b)), Value::Object(o)) => merge_values(b, o),
            _ => {
                base.insert(key.clone(), value.clone());
            }
        }
    }
}

/// The fully rendered, labelled objects one cluster should have at one revision.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DesiredSet {
    pub cluster: String,
    pub profile: String,
    pub version: String,
    /// In apply order.
    pub layers: Vec<LayerSet>,
    /// `sha256:…` over every layer's digest: equal digests, equal content.
    pub digest: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LayerSet {
    pub name: String,
    pub kind: LayerKind,
    pub objects: Vec<Object>,
    pub digest: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Object {
    pub id: ObjectId,
    /// The file (and line) the object came from, for diagnostics.
    pub file: String,
    pub line: usize,
    pub manifest: Value,
    /// JSON pointers of fields left to other controllers (from layer and cluster ignore rules).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ignore: Vec<String>,
    /// JSON pointers (`*` for any key or item) of fields whose values are never shown (from
    /// layer and cluster sensitive rules); a Secret's values need none (see [`crate::redact`]).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub sensitive: Vec<String>,
}

impl Object {
    /// The manifest as it may be shown outside strata.
    pub fn shown(&self, redactor: &crate::redact::Redactor) -> Value {
        redactor.shown(&self.manifest, &self.sensitive)
    }
}

/// A desired set kept for later, at a fraction of the memory of the parsed one: a daemon holds
/// one per cluster for as long as it runs, and uses it only to apply and to check drift.
#[derive(Debug, Clone)]
pub struct PackedSet {
    pub cluster: String,
    pub profile: String,
    pub version: String,
    pub digest: String,
    json: Vec<u8>,
}

impl PackedSet {
    pub fn unpack(&self) -> DesiredSet {
        serde_json::from_slice(&self.json).expect("a packed set unpacks")
    }
}

impl DesiredSet {
    pub fn pack(&self) -> PackedSet {
        PackedSet {
            cluster: self.cluster.clone(),
            profile: self.profile.clone(),
            version: self.version.clone(),
            digest: self.digest.clone(),
            json: serde_json::to_vec(self).expect("desired sets serialise"),
        }
    }

    /// Every object with its layer, Namespaces and CRDs of all layers first (they must exist
    /// before anything lands in them), then each layer's objects in layer order.
    pub fn apply_order(&self) -> Vec<(&LayerSet, &Object)> {
        let all = self.layers.iter().flat_map(|l| l.objects.iter().map(move |o| (l, o)));
        let (first, rest): (Vec<_>, Vec<_>) = all.partition(|(_, o)| object::is_stage_zero(&o.id));
        first.into_iter().chain(rest).collect()
    }

    pub fn object_count(&self) -> usize {
        self.layers.iter().map(|l| l.objects.len()).sum()
    }

    /// The desired set as a multi-document YAML stream, stamped with `revision` when there is one.
    pub fn to_yaml(&self, revision: Option<&str>) -> String {
        let mut out = String::new();
        for (_, object) in self.apply_order() {
            let mut manifest = object.manifest.clone();
            if let Some(revision) = revision {
                object::stamp_revision(&mut manifest, revision);
            }
            out.push_str("---\n");
            out.push_str(&yaml::to_string(&manifest));
        }
        out
    }
}

/// A document a layer produced, before it is checked and stamped.
#[derive(Debug)]
struct Doc {
    file: String,
    line: usize,
    value: Value,
}

type Shared<T> = Rc<Result<T, Diagnostics>>;

/// What a layer rendered to for one set of inputs: its documents and how many bytes of text they
/// came from (what the budgets count).
#[derive(Debug)]
struct Rendered {
    docs: Vec<Doc>,
    bytes: u64,
}

/// Renders clusters of one snapshot, sharing work between them.
pub struct Renderer<'a> {
    tree: &'a dyn Tree,
    model: &'a Model,
    tools: &'a dyn Tools,
    templates: RefCell<HashMap<String, Shared<LayerTemplates>>>,
    outputs: RefCell<HashMap<String, Shared<Rendered>>>,
    /// Rendered bytes held in `outputs`.
    cached_bytes: std::cell::Cell<u64>,
    scratch: OnceCell<tempfile::TempDir>,
}

/// Renders shared across clusters are kept up to this many (and up to [`budget::CACHE_BYTES`]);
/// past either the cache starts over, so a fleet where every cluster overrides values cannot
/// grow memory without bound.
const MAX_CACHED_OUTPUTS: usize = 4096;

impl<'a> Renderer<'a> {
    pub fn new(tree: &'a dyn Tree, model: &'a Model, tools: &'a dyn Tools) -> Self {
        Renderer {
            tree,
            model,
            tools,
            templates: RefCell::default(),
            outputs: RefCell::default(),
            cached_bytes: std::cell::Cell::new(0),
            scratch: OnceCell::new(),
        }
    }

    pub fn model(&self) -> &'a Model {
        self.model
    }

    /// Renders one cluster. Every problem in every layer is reported.
    pub fn render(&self, cluster: &Cluster) -> Result<DesiredSet, Diagnostics> {
        let profile = self.model.resolve(cluster).map_err(Diagnostics::from)?.profile;
        let mut diags = Diagnostics::new();
        let mut produced: Vec<(&Layer, Shared<Rendered>)> = Vec::new();
        let mut bytes = 0;
        for layer in &profile.layers {
            let rendered = self.layer_docs(cluster, profile, layer);
            match rendered.as_ref() {
                Err(d) => diags.extend(d.clone()),
                Ok(r) => bytes += r.bytes,
            }
            produced.push((layer, rendered));
            if bytes > budget::CLUSTER_BYTES {
                diags.push(
                    Diagnostic::new(
                        Code::Budget,
                        format!(
                            "its layers render to more than {} (this cluster's budget), the last being `{}`",
                            budget::mib(budget::CLUSTER_BYTES),
                            layer.name
                        ),
                    )
                    .in_file(&profile.file)
                    .at_line(layer.line)
                    .about(format!("cluster {} on profile {}", cluster.name, profile.id()))
                    .help("a cluster's manifests this large are not something strata applies: look for a layer that renders far more than it should"),
                );
                break;
            }
        }
        if !diags.is_empty() {
            return Err(diags.sorted());
        }

        // Custom resources are namespaced unless a CRD in this set says otherwise.
        let cluster_scoped: HashSet<(String, String)> = produced
            .iter()
            .flat_map(|(_, rendered)| rendered.as_ref().as_ref().expect("checked").docs.iter())
            .filter(|d| d.value["kind"] == "CustomResourceDefinition" && d.value["spec"]["scope"] == "Cluster")
            .filter_map(|d| {
                let spec = &d.value["spec"];
                Some((spec["group"].as_str()?.to_string(), spec["names"]["kind"].as_str()?.to_string()))
            })
            .collect();

        let version = profile.version.to_string();
        let mut seen: HashMap<ObjectId, (String, String, usize)> = HashMap::new();
        let mut layers = Vec::with_capacity(produced.len());
        for (layer, docs) in &produced {
            let object_name = format!("profile {} layer {}", profile.id(), layer.name);
            let stamp = Stamp { cluster: &cluster.name, profile: &profile.name, version: &version, layer: &layer.name };
            let mut objects = Vec::new();
            for doc in &docs.as_ref().as_ref().expect("checked").docs {
                match to_object(doc, layer, &cluster_scoped, &stamp) {
                    Ok(mut object) => {
                        let paths = |own: &[FieldRule], cluster: &[FieldRule]| -> Vec<String> {
                            own.iter()
                                .chain(cluster)
                                .filter(|r| r.matches(&layer.name, &object.id.kind, &object.id.name))
                                .map(|r| r.path.clone())
                                .collect()
                        };
                        object.ignore = paths(&layer.ignore, &cluster.ignore);
                        object.sensitive = paths(&layer.sensitive, &cluster.sensitive);
                        if let Some((other_layer, file, line)) = seen.get(&object.id) {
                            let place = if *line > 0 { format!("{file}:{line}") } else { file.clone() };
                            diags.push(
                                Diagnostic::new(
                                    Code::Collision,
                                    format!("{} is also rendered by layer `{other_layer}` ({place})", object.id),
                                )
                                .in_file(&object.file)
                                .at_line(object.line)
                                .about(&object_name)
                                .help("each object belongs to exactly one layer: remove one of the two, or rename it"),
                            );
                            continue;
                        }
                        seen.insert(object.id.clone(), (layer.name.clone(), object.file.clone(), object.line));
                        objects.push(object);
                    }
                    Err(d) => diags.push(d.about(&object_name)),
                }
            }
            objects.sort_by(|a, b| object::apply_order(&a.id, &b.id));
            let digest = layer_digest(&layer.name, &objects);
            layers.push(LayerSet { name: layer.name.clone(), kind: layer.kind, objects, digest });
        }
        if !diags.is_empty() {
            return Err(diags.sorted());
        }
        let mut hasher = Sha256::new();
        for layer in &layers {
            hasher.update(layer.name.as_bytes());
            hasher.update([0]);
            hasher.update(layer.digest.as_bytes());
        }
        Ok(DesiredSet {
            cluster: cluster.name.clone(),
            profile: profile.name.clone(),
            version,
            layers,
            digest: hex_digest(hasher),
        })
    }

    /// The documents a layer renders to for this cluster, shared with every other cluster whose
    /// inputs to the layer are the same.
    fn layer_docs(&self, cluster: &Cluster, profile: &Profile, layer: &Layer) -> Shared<Rendered> {
        let object_name = format!("profile {} layer {}", profile.id(), layer.name);
        let mut values = layer.values.clone();
        if let Some(over) = cluster.overrides.get(&layer.name) {
            merge_values(&mut values, over);
        }
        let templates = match layer.kind {
            LayerKind::Manifests => Some(self.templates(layer, &object_name)),
            _ => None,
        };
        let uses_cluster = match templates.as_deref() {
            Some(Ok(t)) => t.variables.contains("cluster"),
            Some(Err(e)) => return Rc::new(Err(e.clone())),
            None => false,
        };
        let values_json = serde_json::to_string(&values).expect("values serialise");
        let key = format!(
            "{}\0{}\0{}\0{}",
            profile.id(),
            layer.name,
            values_json,
            if uses_cluster { cluster.name.as_str() } else { "" }
        );
        if let Some(hit) = self.outputs.borrow().get(&key) {
            return hit.clone();
        }
        let docs = match templates.as_deref() {
            Some(Ok(templates)) => self.render_templates(templates, cluster, profile, layer, values, &object_name),
            _ => self.render_tool(layer, values, &object_name),
        };
        let docs = Rc::new(docs);
        let bytes = docs.as_ref().as_ref().map(|r| r.bytes).unwrap_or(0);
        let mut outputs = self.outputs.borrow_mut();
        if outputs.len() >= MAX_CACHED_OUTPUTS || self.cached_bytes.get() + bytes > budget::CACHE_BYTES {
            outputs.clear();
            self.cached_bytes.set(0);
        }
        if bytes <= budget::CACHE_BYTES {
            self.cached_bytes.set(self.cached_bytes.get() + bytes);
            outputs.insert(key, docs.clone());
        }
        docs
    }

    fn templates(&self, layer: &Layer, object_name: &str) -> Shared<LayerTemplates> {
        if let Some(hit) = self.templates.borrow().get(&layer.source) {
            return hit.clone();
        }
        let compiled = Rc::new(template::compile(self.tree, &layer.source, object_name));
        self.templates.borrow_mut().insert(layer.source.clone(), compiled.clone());
        compiled
    }

    fn render_templates(
        &self,
        templates: &LayerTemplates,
        cluster: &Cluster,
        profile: &Profile,
        layer: &Layer,
        values: Map<String, Value>,
        object_name: &str,
    ) -> Result<Rendered, Diagnostics> {
        let context = minijinja::Value::from(minijinja::value::Serde(json!({
            "values": values,
            "profile": { "name": profile.name, "version": profile.version.to_string() },
            "layer": { "name": layer.name, "namespace": layer.namespace },
            "cluster": { "name": cluster.name, "tags": cluster.tags },
        })));
        let outputs = templates.render(&context, object_name, budget::LAYER_BYTES)?;
        let mut docs = Vec::new();
        let mut diags = Diagnostics::new();
        let mut bytes = 0;
        for (file, text) in outputs {
            bytes += text.len() as u64;
            match parse_stream(&file, &text) {
                Ok(mut more) => docs.append(&mut more),
                Err(d) => diags
                    .push(d.about(object_name).help("the file is templated first: check what the template produces")),
            }
        }
        diags.into_result(Rendered { docs, bytes })
    }

    fn render_tool(
        &self,
        layer: &Layer,
        values: Map<String, Value>,
        object_name: &str,
    ) -> Result<Rendered, Diagnostics> {
        let tool_diag = |e: ToolError| {
            let (code, help) = match &e {
                ToolError::Missing { help, .. } => (Code::Tool, help.to_string()),
                ToolError::Failed { .. } => (
                    Code::Tool,
                    format!("run the {} layer's tool by hand on {} to see the problem", layer.kind, layer.source),
                ),
                ToolError::TimedOut { .. } => {
                    (Code::Tool, "check the layer for something that makes the tool hang".to_string())
                }
                ToolError::TooLarge { .. } => (
                    Code::Budget,
                    format!(
                        "a layer renders to at most {}: look for what makes it this large",
                        budget::mib(budget::LAYER_BYTES)
                    ),
                ),
            };
            Diagnostics::from(Diagnostic::new(code, e.to_string()).in_file(&layer.source).about(object_name).help(help))
        };
        if layer.kind == LayerKind::Kustomize {
            kustomization::check(self.tree, &layer.source, object_name)?;
        }
        let setup = |what: &str, e: &dyn std::fmt::Display| {
            Diagnostics::from(Diagnostic::new(Code::Tool, format!("cannot {what}: {e}")).about(object_name))
        };
        let scratch = self.scratch().map_err(|e| setup("create a scratch directory", &e))?;
        let checkout = self
            .tree
            .local_root(scratch)
            .map_err(|e| Diagnostics::from(read_diag(&layer.source, e).about(object_name)))?;
        // Each run gets a directory of its own, the only place it may write.
        let run = tempfile::Builder::new()
            .prefix("run-")
            .tempdir_in(scratch)
            .map_err(|e| setup("create a scratch directory", &e))?;
        let workspace = Workspace { checkout: &checkout, scratch: run.path() };
        let dir = checkout.join(&layer.source);
        let text = match layer.kind {
            LayerKind::Kustomize => self.tools.kustomize(&workspace, &dir).map_err(tool_diag)?,
            LayerKind::Helm => {
                let values_file = run.path().join("values.yaml");
                std::fs::write(&values_file, yaml::to_string(&Value::Object(values)))
                    .map_err(|e| setup("write helm values", &e))?;
                let request = HelmRequest {
                    release: layer.release_name.as_deref().unwrap_or(&layer.name),
                    chart: &dir,
                    namespace: layer.namespace.as_deref().unwrap_or("default"),
                    values_file: &values_file,
                };
                self.tools.helm_template(&workspace, &request).map_err(tool_diag)?
            }
            LayerKind::Manifests => unreachable!("manifests layers are templated"),
        };
        let docs = parse_stream(&layer.source, &text).map_err(|d| {
            Diagnostics::from(d.about(object_name).help(format!("the {} output does not parse", layer.kind)))
        })?;
        Ok(Rendered { docs, bytes: text.len() as u64 })
    }

    fn scratch(&self) -> std::io::Result<&std::path::Path> {
        if self.scratch.get().is_none() {
            let dir = tempfile::Builder::new().prefix("strata-render-").tempdir()?;
            let _ = self.scratch.set(dir);
        }
        Ok(self.scratch.get().expect("set above").path())
    }
}

/// Parses a rendered stream into documents, flattening `kind: List`.
fn parse_stream(file: &str, text: &str) -> Result<Vec<Doc>, Diagnostic> {
    let docs = yaml::parse_documents(text)
        .map_err(|e| Diagnostic::new(Code::Yaml, e.message).in_file(file).at_line(e.line))?;
    let mut out = Vec::with_capacity(docs.len());
    for doc in docs {
        match doc.value {
            Value::Object(ref map)
                if map.get("kind").and_then(Value::as_str).is_some_and(|k| k == "List" || k.ends_with("List"))
                    && map.get("items").is_some_and(Value::is_array) =>
            {
                let Value::Object(mut map) = doc.value else { unreachable!() };
                if let Some(Value::Array(items)) = map.remove("items") {
                    out.extend(items.into_iter().map(|value| Doc { file: file.to_string(), line: doc.line, value }));
                }
            }
            value => out.push(Doc { file: file.to_string(), line: doc.line, value }),
        }
    }
    Ok(out)
}

/// Checks a document is an object strata can apply, gives it its namespace, and stamps it.
fn to_object(
    doc: &Doc,
    layer: &Layer,
    cluster_scoped: &HashSet<(String, String)>,
    stamp: &Stamp,
) -> Result<Object, Diagnostic> {
    let bad = |message: &str| {
        Diagnostic::new(Code::Manifest, message.to_string())
            .in_file(&doc.file)
            .at_line(doc.line)
            .help("every manifest needs apiVersion, kind and metadata.name")
    };
    if !doc.value.is_object() {
        return Err(bad("document is not a mapping"));
    }
    let api_version =
        doc.value["apiVersion"].as_str().filter(|s| !s.is_empty()).ok_or_else(|| bad("manifest has no apiVersion"))?;
    let kind = doc.value["kind"].as_str().filter(|s| !s.is_empty()).ok_or_else(|| bad("manifest has no kind"))?;
    let name = doc.value["metadata"]["name"].as_str().filter(|s| !s.is_empty()).ok_or_else(|| {
        if doc.value["metadata"]["generateName"].is_string() {
            bad(&format!("{kind} uses generateName; strata applies objects by name"))
        } else {
            bad(&format!("{kind} has no metadata.name"))
        }
    })?;
    let group = object::group_of(api_version);
    let scoped = object::is_cluster_scoped_builtin(group, kind)
        || cluster_scoped.contains(&(group.to_string(), kind.to_string()));
    let mut manifest = doc.value.clone();
    let namespace = if scoped {
        if let Some(metadata) = manifest["metadata"].as_object_mut() {
            metadata.remove("namespace");
        }
        None
    } else {
        let ns = match doc.value["metadata"]["namespace"].as_str().filter(|s| !s.is_empty()) {
            Some(ns) => ns.to_string(),
            None => {
                let ns = layer.namespace.clone().unwrap_or_else(|| "default".to_string());
                manifest["metadata"]["namespace"] = Value::String(ns.clone());
                ns
            }
        };
        Some(ns)
    };
    let crd = (kind == "CustomResourceDefinition")
        .then(|| Some((doc.value["spec"]["names"]["plural"].as_str()?, doc.value["spec"]["group"].as_str()?)))
        .flatten();
    names::check_identity(api_version, kind, name, namespace.as_deref(), crd).map_err(|invalid| {
        Diagnostic::new(
            Code::Name,
            match invalid.field {
                "metadata.name" | "metadata.namespace" => format!(
                    "{} {} of a {kind} is invalid: it must be {}",
                    invalid.field,
                    shown(&invalid.value),
                    invalid.rule
                ),
                field => format!("{field} {} is invalid: it must be {}", shown(&invalid.value), invalid.rule),
            },
        )
        .in_file(&doc.file)
        .at_line(doc.line)
        .help(match invalid.field {
            "metadata.namespace" => "use a namespace the API server accepts, or leave it out to get the layer's",
            "metadata.name" => {
                "rename the object: the API server refuses this name, and strata never turns it into a path or URL"
            }
            _ => "fix the manifest: the API server refuses this identity, and strata never turns it into a path or URL",
        })
    })?;
    object::stamp(&mut manifest, stamp);
    Ok(Object {
        id: ObjectId::new(api_version, kind, namespace.as_deref(), name),
        file: doc.file.clone(),
        line: doc.line,
        manifest,
        ignore: Vec::new(),
        sensitive: Vec::new(),
    })
}

/// A value from a manifest as it can safely be shown in a diagnostic: quoted, escaped, and cut
/// short when it is long.
fn shown(value: &str) -> String {
    const MAX: usize = 80;
    let mut escaped: String = value.chars().take(MAX).flat_map(char::escape_debug).collect();
    if value.chars().nth(MAX).is_some() {
        escaped.push_str(&format!("… ({} bytes)", value.len()));
    }
    format!("`{escaped}`")
}

fn layer_digest(name: &str, objects: &[Object]) -> String {
    let mut hasher = Sha256::new();
    hasher.update(name.as_bytes());
    for object in objects {
        hasher.update([0]);
        hasher.update(serde_json::to_vec(&object.manifest).expect("manifests serialise"));
    }
    hex_digest(hasher)
}

pub(crate) fn hex_digest(hasher: Sha256) -> String {
    use std::fmt::Write;
    let bytes = hasher.finalize();
    let mut out = String::with_capacity(7 + 64);
    out.push_str("sha256:");
    for b in bytes.iter() {
        let _ = write!(out, "{b:02x}");
    }
    out
}

/// A fingerprint of everything that goes into rendering `cluster` at this snapshot: the cluster's
/// own settings, the profile version's file and the contents of its layers' sources. Equal
/// fingerprints guarantee equal desired sets, so a plan can skip rendering clusters whose
/// fingerprint did not change. Layers rendered by external tools may read outside their source
/// (`../base`), so for those the whole tree counts.
pub fn fingerprint(
    tree: &dyn Tree,
    model: &Model,
    cluster: &Cluster,
    cache: &mut BTreeMap<String, String>,
) -> Result<String, Diagnostics> {
    let profile = model.resolve(cluster).map_err(Diagnostics::from)?.profile;
    let profile_fp = match cache.get(&profile.id()) {
        Some(fp) => fp.clone(),
        None => {
            let mut hasher = Sha256::new();
            let mut paths: Vec<&str> = vec![profile.file.as_str()];
            for layer in &profile.layers {
                paths.push(if layer.kind == LayerKind::Manifests { &layer.source } else { "" });
            }
            for path in paths {
                hasher.update(path.as_bytes());
                hasher.update([0]);
                source::fingerprint(tree, path, &mut hasher).map_err(|e| Diagnostics::from(read_diag(path, e)))?;
            }
            let fp = hex_digest(hasher);
            cache.insert(profile.id(), fp.clone());
            fp
        }
    };
    let mut hasher = Sha256::new();
    let settings = json!({
        "name": cluster.name,
        "tags": cluster.tags,
        "overrides": cluster.overrides,
        "profile": profile.id(),
    });
    hasher.update(serde_json::to_vec(&settings).expect("serialises"));
    hasher.update(profile_fp.as_bytes());
    Ok(hex_digest(hasher))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::source::DirTree;
    use tools::SystemTools;

    /// A repository in a temporary directory: one profile `p@1.0.0` with one manifests layer
    /// `app` (namespace `apps`) whose files are given, and clusters `a` and `b` on it.
    fn fleet(files: &[(&str, &str)]) -> (tempfile::TempDir, DirTree, Model) {
        let dir = tempfile::tempdir().unwrap();
        let write = |path: &str, text: &str| {
            let path = dir.path().join(path);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, text).unwrap();
        };
        write(
            "profiles/p/1.0.0/profile.yaml",
            "apiVersion: strata.dev/v1\nkind: Profile\nmetadata: {name: p, version: 1.0.0}\nspec:\n  layers:\n  - {name: app, type: manifests, source: packs/app, namespace: apps, values: {n: 1}}\n",
        );
        for c in ["a", "b"] {
            write(
                &format!("clusters/{c}.yaml"),
                &format!(
                    "apiVersion: strata.dev/v1\nkind: Cluster\nmetadata: {{name: {c}}}\nspec:\n  profile: {{name: p, version: 1.0.0}}\n"
                ),
            );
        }
        for (path, text) in files {
            write(&format!("packs/app/{path}"), text);
        }
        let tree = DirTree::new(dir.path());
        let model = crate::repo::load(&tree).unwrap();
        (dir, tree, model)
    }

    fn ids(set: &DesiredSet) -> Vec<String> {
        set.apply_order().into_iter().map(|(_, o)| o.id.to_string()).collect()
    }

    #[test]
    fn namespaces_are_given_to_namespaced_objects_only() {
        let (_dir, tree, model) = fleet(&[(
            "all.yaml",
            "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: in-layer-ns}\n---\napiVersion: v1\nkind: ConfigMap\nmetadata: {name: own-ns, namespace: other}\n---\napiVersion: rbac.authorization.k8s.io/v1\nkind: ClusterRole\nmetadata: {name: reader, namespace: stray}\n",
        )]);
        let tools = SystemTools::default();
        let set = Renderer::new(&tree, &model, &tools).render(&model.clusters["a"]).unwrap();
        assert_eq!(ids(&set), ["ConfigMap/apps/in-layer-ns", "ConfigMap/other/own-ns", "ClusterRole/reader"]);
        let role = &set.layers[0].objects.iter().find(|o| o.id.kind == "ClusterRole").unwrap().manifest;
        assert!(role["metadata"].get("namespace").is_none(), "cluster-scoped objects carry no namespace");
    }

    #[test]
    fn a_crd_in_the_set_decides_the_scope_of_its_resources() {
        let (_dir, tree, model) = fleet(&[(
            "crd.yaml",
            "apiVersion: apiextensions.k8s.io/v1\nkind: CustomResourceDefinition\nmetadata: {name: tenants.example.com}\nspec:\n  group: example.com\n  scope: Cluster\n  names: {kind: Tenant, plural: tenants}\n---\napiVersion: example.com/v1\nkind: Tenant\nmetadata: {name: acme}\n---\napiVersion: example.com/v1\nkind: Widget\nmetadata: {name: w}\n",
        )]);
        let tools = SystemTools::default();
        let set = Renderer::new(&tree, &model, &tools).render(&model.clusters["a"]).unwrap();
        assert_eq!(
            ids(&set),
            ["CustomResourceDefinition/tenants.example.com", "Tenant.example.com/acme", "Widget.example.com/apps/w"]
        );
    }

    #[test]
    fn templates_that_read_the_cluster_are_rendered_per_cluster() {
        let (_dir, tree, model) = fleet(&[(
            "cm.yaml",
            "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: site}\ndata: {site: '{{ cluster.name }}', n: '{{ values.n }}'}\n",
        )]);
        let tools = SystemTools::default();
        let renderer = Renderer::new(&tree, &model, &tools);
        let a = renderer.render(&model.clusters["a"]).unwrap();
        let b = renderer.render(&model.clusters["b"]).unwrap();
        assert_eq!(a.layers[0].objects[0].manifest["data"]["site"], "a");
        assert_eq!(b.layers[0].objects[0].manifest["data"]["site"], "b");
        assert_ne!(a.digest, b.digest);
    }

    #[test]
    fn digests_are_stable_and_follow_content() {
        let (_dir, tree, model) = fleet(&[(
            "cm.yaml",
            "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: x}\ndata: {n: '{{ values.n }}'}\n",
        )]);
        let tools = SystemTools::default();
        let first = Renderer::new(&tree, &model, &tools).render(&model.clusters["a"]).unwrap();
        let again = Renderer::new(&tree, &model, &tools).render(&model.clusters["a"]).unwrap();
        assert_eq!(first.digest, again.digest);
        assert_eq!(first.layers[0].digest, again.layers[0].digest);
        let mut cluster = model.clusters["a"].clone();
        cluster.overrides.insert("app".into(), json!({"n": 2}).as_object().unwrap().clone());
        let changed = Renderer::new(&tree, &model, &tools).render(&cluster).unwrap();
        assert_ne!(first.digest, changed.digest);
        assert_eq!(changed.layers[0].objects[0].manifest["data"]["n"], "2");
    }

    #[test]
    fn overrides_merge_maps_and_replace_lists_and_scalars() {
        let mut base =
            json!({"replicas": 1, "image": {"repo": "a", "tag": "1"}, "ports": [80, 443]}).as_object().unwrap().clone();
        let over = json!({"replicas": 2, "image": {"tag": "2"}, "ports": [8080]}).as_object().unwrap().clone();
        merge_values(&mut base, &over);
        assert_eq!(Value::Object(base), json!({"replicas": 2, "image": {"repo": "a", "tag": "2"}, "ports": [8080]}));
    }

    #[test]
    fn sensitive_rules_of_the_layer_and_the_cluster_reach_the_objects_they_name() {
        let (_dir, tree, mut model) = fleet(&[(
            "db.yaml",
            "apiVersion: example.com/v1\nkind: Database\nmetadata: {name: orders}\n---\napiVersion: example.com/v1\nkind: Database\nmetadata: {name: users}\n---\napiVersion: v1\nkind: ConfigMap\nmetadata: {name: c}\n",
        )]);
        let rule = |path: &str, kind: Option<&str>, name: Option<&str>, layer: Option<&str>| FieldRule {
            path: path.into(),
            kind: kind.map(str::to_string),
            name: name.map(str::to_string),
            layer: layer.map(str::to_string),
        };
        model.profiles.get_mut("p").unwrap()[0].layers[0].sensitive =
            vec![rule("/spec/password", Some("Database"), None, None)];
        let mut cluster = model.clusters["a"].clone();
        cluster.sensitive = vec![
            rule("/spec/token", Some("Database"), Some("users"), Some("app")),
            rule("/data/x", None, None, Some("other-layer")),
        ];
        let tools = SystemTools::default();
        let set = Renderer::new(&tree, &model, &tools).render(&cluster).unwrap();
        let sensitive =
            |name: &str| set.layers[0].objects.iter().find(|o| o.id.name == name).unwrap().sensitive.clone();
        assert_eq!(sensitive("orders"), ["/spec/password"]);
        assert_eq!(sensitive("users"), ["/spec/password", "/spec/token"]);
        assert!(sensitive("c").is_empty());
    }

    #[test]
    fn lists_of_objects_are_flattened() {
        let docs = parse_stream("f.yaml", "apiVersion: v1\nkind: List\nitems:\n- {apiVersion: v1, kind: ConfigMap, metadata: {name: a}}\n- {apiVersion: v1, kind: ConfigMap, metadata: {name: b}}\n").unwrap();
        assert_eq!(docs.len(), 2);
        assert_eq!(docs[1].value["metadata"]["name"], "b");
    }
}
