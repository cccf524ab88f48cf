//! Render: a cluster of a [`Model`] in, its [`DesiredSet`] out.
//!
//! ```text
//!   layer values ⊕ cluster overrides ──> values ──┐
//!   layer source (templates | kustomization | chart) ──> documents ──> check ──> namespace ──> stamp ──> digest
//!                                                  (cached per layer and inputs)   (per cluster)
//! ```
//!
//! Rendering is a pure function of the snapshot and the model; the only IO is the external tools
//! of kustomize and helm layers, behind [`Tools`]. What many clusters share is done once per
//! [`Renderer`] and reused: a layer rendered with the same values, and — since clusters that
//! override values still render most documents to the same text — each distinct document's parse
//! ([`parsed`]). A renderer is shared by threads, so a fleet renders on every core.

pub mod budget;
pub mod engine;
pub mod helm;
pub mod kustomization;
pub use crate::names;
pub mod object;
pub mod packed;
pub mod parsed;
pub mod reads;
pub mod sandbox;
pub mod scrub;
pub mod settings;
pub mod template;
pub mod tools;

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};
use sha2::{Digest as _, Sha256};

use crate::diag::{Code, Diagnostic, Diagnostics};
use crate::model::{Cluster, FieldRule, Layer, LayerKind, Model, Profile};
use crate::source::read_diag;
use crate::source::{self, Tree};
use crate::yaml;
pub use packed::PackedSet;
pub use reads::{Reads, reads};
pub use settings::Settings;

use object::{ObjectId, Stamp};
use parsed::ParseCache;
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

impl DesiredSet {
    /// The set as a daemon keeps it between uses ([`packed`]).
    pub fn pack(&self) -> PackedSet {
        PackedSet::pack(self)
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

/// A document a layer produced, before it is checked and stamped: shared by every cluster
/// whose layer rendered the same text.
#[derive(Debug)]
struct Doc {
    file: Arc<str>,
    line: usize,
    value: Arc<Value>,
}

type Shared<T> = Arc<Result<T, Diagnostics>>;

/// A value computed once by whichever thread asks first; the others wait for it.
type Once<T> = Arc<OnceLock<Shared<T>>>;

/// What a layer rendered to for one set of inputs: its documents and how many bytes of text they
/// came from (what the budgets count).
#[derive(Debug)]
struct Rendered {
    docs: Vec<Doc>,
    bytes: u64,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    Render,
    Check,
}

enum Assembled {
    Set(DesiredSet),
    Count(usize),
}

/// Renders clusters of one snapshot, sharing work between them — from any number of threads.
pub struct Renderer<'a> {
    tree: &'a dyn Tree,
    model: &'a Model,
    tools: &'a dyn Tools,
    templates: Mutex<HashMap<String, Once<LayerTemplates>>>,
    outputs: Mutex<Outputs>,
    parsed: ParseCache,
    scratch: Mutex<Option<tempfile::TempDir>>,
    settings: &'a Settings,
}

#[derive(Default)]
struct Outputs {
    layers: HashMap<String, Once<Rendered>>,
    /// Rendered bytes held in `layers`.
    bytes: u64,
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
            templates: Mutex::default(),
            outputs: Mutex::default(),
            parsed: ParseCache::new(budget::PARSED_BYTES),
            scratch: Mutex::default(),
            settings: Settings::process(),
        }
    }

    /// The host's settings ([`Settings`]) instead of the process's defaults.
    pub fn with_settings(mut self, settings: &'a Settings) -> Self {
        self.settings = settings;
        self
    }

    pub fn model(&self) -> &'a Model {
        self.model
    }

    pub fn tree(&self) -> &'a dyn Tree {
        self.tree
    }

    /// Renders one cluster. Every problem in every layer is reported.
    pub fn render(&self, cluster: &Cluster) -> Result<DesiredSet, Diagnostics> {
        self.assemble(cluster, Mode::Render).map(|assembled| match assembled {
            Assembled::Set(set) => set,
            Assembled::Count(_) => unreachable!("rendering assembles a set"),
        })
    }

    /// Everything [`Renderer::render`] does but assemble the stamped objects and their digests:
    /// every problem render would report, or how many objects the cluster's set has. What
    /// `strata validate` needs, for a fraction of the work.
    pub fn check(&self, cluster: &Cluster) -> Result<usize, Diagnostics> {
        self.assemble(cluster, Mode::Check).map(|assembled| match assembled {
            Assembled::Count(count) => count,
            Assembled::Set(set) => set.object_count(),
        })
    }

    fn assemble(&self, cluster: &Cluster, mode: Mode) -> Result<Assembled, Diagnostics> {
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
        let mut seen: HashMap<ObjectId, (&str, &str, usize)> = HashMap::new();
        let mut layers = Vec::with_capacity(produced.len());
        let mut count = 0;
        for (layer, docs) in &produced {
            let object_name = format!("profile {} layer {}", profile.id(), layer.name);
            let stamp = Stamp { cluster: &cluster.name, profile: &profile.name, version: &version, layer: &layer.name };
            let mut objects = Vec::new();
            for doc in &docs.as_ref().as_ref().expect("checked").docs {
                let identity = match identify(doc, layer, &cluster_scoped) {
                    Ok(identity) => identity,
                    Err(d) => {
                        diags.push(d.about(&object_name));
                        continue;
                    }
                };
                if let Some((other_layer, file, line)) = seen.get(&identity.id) {
                    let place = if *line > 0 { format!("{file}:{line}") } else { file.to_string() };
                    diags.push(
                        Diagnostic::new(
                            Code::Collision,
                            format!("{} is also rendered by layer `{other_layer}` ({place})", identity.id),
                        )
                        .in_file(&*doc.file)
                        .at_line(doc.line)
                        .about(&object_name)
                        .help("each object belongs to exactly one layer: remove one of the two, or rename it"),
                    );
                    continue;
                }
                if let Some((message, help)) = self.settings.refusal(&identity.id, &doc.value) {
                    diags.push(
                        Diagnostic::new(Code::Reserved, message)
                            .in_file(&*doc.file)
                            .at_line(doc.line)
                            .about(&object_name)
                            .help(help),
                    );
                    continue;
                }
                count += 1;
                if mode == Mode::Check {
                    seen.insert(identity.id, (&layer.name, &doc.file, doc.line));
                    continue;
                }
                seen.insert(identity.id.clone(), (&layer.name, &doc.file, doc.line));
                let mut object = to_object(doc, identity, &stamp);
                let paths = |own: &[FieldRule], cluster: &[FieldRule]| -> Vec<String> {
                    own.iter()
                        .chain(cluster)
                        .filter(|r| r.matches(&layer.name, &object.id.kind, &object.id.name))
                        .map(|r| r.path.clone())
                        .collect()
                };
                object.ignore = paths(&layer.ignore, &cluster.ignore);
                object.sensitive = paths(&layer.sensitive, &cluster.sensitive);
                objects.push(object);
            }
            if mode == Mode::Render {
                objects.sort_by(|a, b| object::apply_order(&a.id, &b.id));
                let digest = layer_digest(&layer.name, &objects, &self.settings.redactor);
                layers.push(LayerSet { name: layer.name.clone(), kind: layer.kind, objects, digest });
            }
        }
        if !diags.is_empty() {
            return Err(diags.sorted());
        }
        if mode == Mode::Check {
            return Ok(Assembled::Count(count));
        }
        let mut hasher = Sha256::new();
        for layer in &layers {
            hasher.update(layer.name.as_bytes());
            hasher.update([0]);
            hasher.update(layer.digest.as_bytes());
        }
        Ok(Assembled::Set(DesiredSet {
            cluster: cluster.name.clone(),
            profile: profile.name.clone(),
            version,
            layers,
            digest: hex_digest(hasher),
        }))
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
            Some(Err(e)) => return Arc::new(Err(e.clone())),
            None => false,
        };
        let values_json = serde_json::to_string(&values).expect("values serialise");
        let capabilities = Capabilities::of(cluster, layer);
        let key = format!(
            "{}\0{}\0{}\0{}\0{}",
            profile.id(),
            layer.name,
            values_json,
            if uses_cluster { cluster.name.as_str() } else { "" },
            capabilities.key(),
        );
        let cell = {
            let mut outputs = lock(&self.outputs);
            if let Some(hit) = outputs.layers.get(&key) {
                hit.clone()
            } else {
                if outputs.layers.len() >= MAX_CACHED_OUTPUTS || outputs.bytes > budget::CACHE_BYTES {
                    outputs.layers.clear();
                    outputs.bytes = 0;
                }
                outputs.layers.entry(key.clone()).or_default().clone()
            }
        };
        let mut rendered_here = false;
        let docs = cell
            .get_or_init(|| {
                rendered_here = true;
                Arc::new(match templates.as_deref() {
                    Some(Ok(templates)) => {
                        self.render_templates(templates, cluster, profile, layer, values, &object_name)
                    }
                    _ => self.render_tool(layer, values, &capabilities, &object_name),
                })
            })
            .clone();
        if rendered_here {
            let bytes = docs.as_ref().as_ref().map(|r| r.bytes).unwrap_or(0);
            let mut outputs = lock(&self.outputs);
            if bytes > budget::CACHE_BYTES {
                outputs.layers.remove(&key);
            } else {
                outputs.bytes += bytes;
            }
        }
        docs
    }

    fn templates(&self, layer: &Layer, object_name: &str) -> Shared<LayerTemplates> {
        let cell = lock(&self.templates).entry(layer.source.clone()).or_default().clone();
        cell.get_or_init(|| Arc::new(template::compile(self.tree, &layer.source, object_name))).clone()
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
        let context = json!({
            "values": values,
            "profile": { "name": profile.name, "version": profile.version.to_string() },
            "layer": { "name": layer.name, "namespace": layer.namespace },
            "cluster": { "name": cluster.name, "tags": cluster.tags },
        });
        let outputs = templates.render(&context, object_name, budget::LAYER_BYTES, &self.settings.engine)?;
        let mut docs = Vec::new();
        let mut diags = Diagnostics::new();
        let mut bytes = 0;
        for (file, text) in outputs {
            bytes += text.len() as u64;
            match self.parse_stream(&file, &text) {
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
        capabilities: &Capabilities,
        object_name: &str,
    ) -> Result<Rendered, Diagnostics> {
        let tool_diag = |e: ToolError, values: &Map<String, Value>| {
            // The tool's message is shown by line, bounded, without the secret values it echoes.
            let e = match e {
                ToolError::Failed { tool, message } => ToolError::Failed {
                    tool,
                    message: scrub::tool_message(&message, self.tree, layer, values, &self.settings.redactor),
                },
                other => other,
            };
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
        // What helm is given before the layer's own values: the values files, parsed here so a
        // broken one is named by file and line, and so their credential-like values are known
        // to the scrubbing of helm's messages.
        let mut helm_inputs = Map::new();
        match layer.kind {
            LayerKind::Kustomize => kustomization::check(self.tree, &layer.source, object_name)?,
            LayerKind::Helm => {
                helm::check_dependencies(self.tree, &layer.source, object_name)?;
                for file in &layer.values_files {
                    merge_values(&mut helm_inputs, &self.values_file(file, object_name)?);
                }
                merge_values(&mut helm_inputs, &values);
            }
            LayerKind::Manifests => {}
        }
        // The SOPS files the tool reads decrypt, or the layer fails here naming them: the
        // checkout leaves out what does not decrypt, and a tool must never read ciphertext.
        let inputs: Vec<String> = match layer.kind {
            LayerKind::Kustomize => {
                kustomization::reached(self.tree, &layer.source).unwrap_or_else(|| vec![layer.source.clone()])
            }
            _ => std::iter::once(&layer.source).chain(&layer.values_files).cloned().collect(),
        };
        crate::source::sops::check_paths(self.tree, &inputs)
            .map_err(|d| d.into_iter().map(|d| d.about(object_name)).collect::<Diagnostics>())?;
        let setup = |what: &str, e: &dyn std::fmt::Display| {
            Diagnostics::from(Diagnostic::new(Code::Tool, format!("cannot {what}: {e}")).about(object_name))
        };
        let scratch = self.scratch().map_err(|e| setup("create a scratch directory", &e))?;
        let scratch = scratch.as_path();
        // Decrypted files go into the checkout only where the model's tools read.
        self.tree.tools_read(&|| reads::tool_reads(self.tree, self.model));
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
            LayerKind::Kustomize => self.tools.kustomize(&workspace, &dir).map_err(|e| tool_diag(e, &values))?,
            LayerKind::Helm => {
                let values_file = run.path().join("values.yaml");
                std::fs::write(&values_file, yaml::to_string(&Value::Object(values.clone())))
                    .map_err(|e| setup("write helm values", &e))?;
                let mut values_files = Vec::with_capacity(layer.values_files.len());
                for file in &layer.values_files {
                    let (real, _) = source::resolve(self.tree, file)
                        .map_err(|e| Diagnostics::from(read_diag(file, e).about(object_name)))?;
                    values_files.push(checkout.join(real));
                }
                let request = HelmRequest {
                    release: layer.release_name.as_deref().unwrap_or(&layer.name),
                    chart: &dir,
                    namespace: layer.namespace.as_deref().unwrap_or("default"),
                    values_files: &values_files,
                    values_file: &values_file,
                    kube_version: capabilities.kube_version.as_deref(),
                    api_versions: &capabilities.api_versions,
                };
                self.tools.helm_template(&workspace, &request).map_err(|e| match e {
                    ToolError::Failed { message, .. } => self.helm_failed(layer, &message, &helm_inputs, object_name),
                    other => tool_diag(other, &helm_inputs),
                })?
            }
            LayerKind::Manifests => unreachable!("manifests layers are templated"),
        };
        let docs = self.parse_stream(&layer.source, &text).map_err(|d| {
            Diagnostics::from(d.about(object_name).help(format!("the {} output does not parse", layer.kind)))
        })?;
        Ok(Rendered { docs, bytes: text.len() as u64 })
    }

    /// A helm layer's values file as a mapping of values.
    fn values_file(&self, file: &str, object_name: &str) -> Result<Map<String, Value>, Diagnostics> {
        let bytes =
            source::read_file(self.tree, file).map_err(|e| Diagnostics::from(read_diag(file, e).about(object_name)))?;
        let in_file = |code: Code, message: String, line: usize| {
            Diagnostics::from(Diagnostic::new(code, message).in_file(file).at_line(line).about(object_name))
        };
        let text = String::from_utf8(bytes).map_err(|_| in_file(Code::Yaml, "file is not UTF-8".into(), 0))?;
        if text.trim().is_empty() {
            return Ok(Map::new());
        }
        match yaml::parse::<Value>(&text) {
            Ok(Value::Object(map)) => Ok(map),
            Ok(Value::Null) => Ok(Map::new()),
            Ok(_) => Err(in_file(Code::Schema, "a values file must hold a mapping of values".into(), 1)),
            Err(e) => Err(in_file(Code::Yaml, e.message, e.line)),
        }
    }

    /// `helm template` failed: error[helm] at the template and line helm names (the chart
    /// directory otherwise), with the message bounded and scrubbed of the secret values strata
    /// knows (`inputs`: the values files' values and the layer's) and of what looks like one.
    fn helm_failed(&self, layer: &Layer, message: &str, inputs: &Map<String, Value>, object_name: &str) -> Diagnostics {
        let message = message.trim();
        let message = message.strip_prefix("Error: ").unwrap_or(message);
        let (file, line, help) = match helm::failure_location(self.tree, &layer.source, message) {
            Some((file, line)) => (
                file,
                line,
                "the chart fails on these values: check the values this template reads (the chart's defaults, the layer's valuesFiles and values, the cluster's overrides)".to_string(),
            ),
            None => (
                layer.source.clone(),
                None,
                format!("run `helm template` on {} by hand to see the problem", layer.source),
            ),
        };
        let shown = scrub::tool_message(message, self.tree, layer, inputs, &self.settings.redactor);
        Diagnostics::from(
            Diagnostic::new(Code::Helm, format!("`helm template` failed: {shown}"))
                .in_file(file)
                .at_line(line.unwrap_or(0))
                .about(object_name)
                .help(help),
        )
    }

    fn scratch(&self) -> std::io::Result<std::path::PathBuf> {
        let mut scratch = lock(&self.scratch);
        if scratch.is_none() {
            *scratch = Some(tempfile::Builder::new().prefix("strata-render-").tempdir()?);
        }
        Ok(scratch.as_ref().expect("set above").path().to_path_buf())
    }

    /// Parses a rendered stream into documents, flattening `kind: List`; a document another
    /// render already produced is not parsed again.
    fn parse_stream(&self, file: &str, text: &str) -> Result<Vec<Doc>, Diagnostic> {
        let docs = self
            .parsed
            .parse(text)
            .map_err(|e| Diagnostic::new(Code::Yaml, e.message).in_file(file).at_line(e.line))?;
        let file: Arc<str> = Arc::from(file);
        Ok(docs.into_iter().map(|(line, value)| Doc { file: file.clone(), line, value }).collect())
    }
}

/// A renderer's caches hold only finished entries, so one left by a panicking thread is usable.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Who a document is, once checked to be an object strata can apply.
struct Identity {
    id: ObjectId,
    /// The namespace it gets when it names none.
    namespace_given: Option<String>,
    /// Cluster-scoped: a namespace it names is dropped.
    scoped: bool,
}

/// Checks a document is an object strata can apply, and works out its identity and namespace.
fn identify(doc: &Doc, layer: &Layer, cluster_scoped: &HashSet<(String, String)>) -> Result<Identity, Diagnostic> {
    let bad = |message: &str| {
        Diagnostic::new(Code::Manifest, message.to_string())
            .in_file(&*doc.file)
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
    let mut namespace_given = None;
    let namespace = if scoped {
        None
    } else {
        let ns = match doc.value["metadata"]["namespace"].as_str().filter(|s| !s.is_empty()) {
            Some(ns) => ns.to_string(),
            None => {
                let ns = layer.namespace.clone().unwrap_or_else(|| "default".to_string());
                namespace_given = Some(ns.clone());
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
        .in_file(&*doc.file)
        .at_line(doc.line)
        .help(match invalid.field {
            "metadata.namespace" => "use a namespace the API server accepts, or leave it out to get the layer's",
            "metadata.name" => {
                "rename the object: the API server refuses this name, and strata never turns it into a path or URL"
            }
            _ => "fix the manifest: the API server refuses this identity, and strata never turns it into a path or URL",
        })
    })?;
    Ok(Identity { id: ObjectId::new(api_version, kind, namespace.as_deref(), name), namespace_given, scoped })
}

/// The object a document renders to: its own copy, with its namespace, stamped.
fn to_object(doc: &Doc, identity: Identity, stamp: &Stamp) -> Object {
    let mut manifest = Value::clone(&doc.value);
    if identity.scoped {
        if let Some(metadata) = manifest["metadata"].as_object_mut() {
            metadata.remove("namespace");
        }
    } else if let Some(ns) = identity.namespace_given {
        manifest["metadata"]["namespace"] = Value::String(ns);
    }
    object::stamp(&mut manifest, stamp);
    Object {
        id: identity.id,
        file: doc.file.to_string(),
        line: doc.line,
        manifest,
        ignore: Vec::new(),
        sensitive: Vec::new(),
    }
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

/// A layer's digest: over its objects' manifests, those holding sensitive values over their
/// [`keyed`](crate::redact::Redactor::keyed) copies.
fn layer_digest(name: &str, objects: &[Object], key: &crate::redact::Redactor) -> String {
    let mut hasher = Sha256::new();
    hasher.update(name.as_bytes());
    for object in objects {
        hasher.update([0]);
        let keyed = key.keyed(&object.manifest, &object.sensitive);
        let hashed = keyed.as_ref().unwrap_or(&object.manifest);
        serde_json::to_writer(HashWriter(&mut hasher), hashed).expect("manifests serialise");
        // Fields left to others are not applied: which they are is part of what strata applies.
        if !object.ignore.is_empty() {
            hasher.update(b"\0ignore");
            for pointer in &object.ignore {
                hasher.update([0]);
                hasher.update(pointer.as_bytes());
            }
        }
    }
    hex_digest(hasher)
}

/// Feeds what is written to a hasher: a manifest's JSON is hashed as it is written, without
/// holding it.
struct HashWriter<'h>(&'h mut Sha256);

impl std::io::Write for HashWriter<'_> {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.update(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// `sha256:<hex>` of what `hasher` was fed: the form of every digest strata shows and stores.
pub fn hex_digest(hasher: Sha256) -> String {
    use std::fmt::Write;
    let bytes = hasher.finalize();
    let mut out = String::with_capacity(7 + 64);
    out.push_str("sha256:");
    for b in bytes.iter() {
        let _ = write!(out, "{b:02x}");
    }
    out
}

/// Whether two versions of a cluster file render alike over the same profile version: rendering
/// reads of a cluster its name, its tags, its overrides, what its helm layers see of it, and its
/// field rules (ignore rules reach what is applied, sensitive rules how the digest hashes values:
/// both reach the digest).
pub fn same_inputs(a: &Cluster, b: &Cluster) -> bool {
    a.name == b.name
        && a.tags == b.tags
        && a.overrides == b.overrides
        && a.ignore == b.ignore
        && a.sensitive == b.sensitive
        && a.kube_version == b.kube_version
        && a.api_versions == b.api_versions
}

/// What a helm layer's chart sees of its cluster (`.Capabilities`): the cluster's Kubernetes
/// version, else the layer's (helm's own default when neither says); the layer's API versions,
/// then the cluster's. Other layers see nothing of it.
#[derive(Default)]
struct Capabilities {
    kube_version: Option<String>,
    api_versions: Vec<String>,
}

impl Capabilities {
    fn of(cluster: &Cluster, layer: &Layer) -> Capabilities {
        if layer.kind != LayerKind::Helm {
            return Capabilities::default();
        }
        let mut api_versions: Vec<String> = Vec::new();
        for api in layer.api_versions.iter().chain(&cluster.api_versions) {
            if !api_versions.contains(api) {
                api_versions.push(api.clone());
            }
        }
        Capabilities { kube_version: cluster.kube_version.clone().or_else(|| layer.kube_version.clone()), api_versions }
    }

    /// For the key of rendered layers: layers that see the same render alike.
    fn key(&self) -> String {
        format!("{}\0{}", self.kube_version.as_deref().unwrap_or(""), self.api_versions.join(","))
    }
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
        let mut cluster = Cluster::clone(&model.clusters["a"]);
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
        let mut cluster = Cluster::clone(&model.clusters["a"]);
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
    fn a_template_that_crashes_the_engine_is_a_diagnostic() {
        // Found by the `template` fuzz target: minijinja 3.1 panics compiling this.
        let (_dir, tree, model) = fleet(&[
            ("_helpers.yaml", "{% macro name(x) %}{{ x }}{% endmacro %}"),
            ("cm.yaml", "{% import \"_helpers.yaml\" as -h %}\napiVersion: v1\nkind: ConfigMap\nmetadata: {name: x}\n"),
        ]);
        let tools = SystemTools::default();
        let e = Renderer::new(&tree, &model, &tools).render(&model.clusters["a"]).unwrap_err().to_string();
        assert!(
            e.contains("packs/app/cm.yaml: profile p@1.0.0 layer app: the template engine failed on this template"),
            "{e}"
        );
    }

    #[test]
    fn lists_of_objects_are_flattened() {
        let (_dir, tree, model) = fleet(&[(
            "list.yaml",
            "apiVersion: v1\nkind: List\nitems:\n- {apiVersion: v1, kind: ConfigMap, metadata: {name: a}}\n- {apiVersion: v1, kind: ConfigMap, metadata: {name: b}}\n",
        )]);
        let tools = SystemTools::default();
        let set = Renderer::new(&tree, &model, &tools).render(&model.clusters["a"]).unwrap();
        assert_eq!(ids(&set), ["ConfigMap/apps/a", "ConfigMap/apps/b"]);
    }
}
