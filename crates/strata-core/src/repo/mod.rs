//! Load and validate: a [`Tree`] in, a [`Model`] (or every problem found) out.
//!
//! ```text
//!   profiles/<name>/<version>/profile.yaml ─┐  parse (raw, spanned)   check names, versions,
//!   clusters/**/*.yaml ─────────────────────┼─────────────────────> sources, dependsOn, ranges ──> Model
//!   rollouts/*.yaml (rollouts) ─────────────┤                        waves, selectors, overlaps   │
//!   approvals/*.yaml (approvals) ───────────┘                        rules                        │
//!                                                                                                 └─> Diagnostics (file:line)
//! ```
//!
//! Raw types mirror what users write and keep line numbers; the validated types in
//! [`crate::model`] are what the rest of strata uses. Loading never stops at the first problem.

pub mod approvals;
pub mod rollouts;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

use rayon::prelude::*;
use semver::Version;
use serde::Deserialize;
use serde_json::{Map, Value};
use serde_saphyr::Spanned;

use crate::diag::{Code, Diagnostic, Diagnostics};
use crate::model::{
    API_VERSION, Cluster, DriftPolicy, FieldRule, Layer, LayerKind, Model, Profile, UpdatePolicy, VersionSpec,
};
use crate::source::{self, Changes, EntryKind, ReadError, Tree};
use crate::yaml;

pub const PROFILES_DIR: &str = "profiles";
pub const CLUSTERS_DIR: &str = "clusters";
pub const PROFILE_FILE: &str = "profile.yaml";

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RawProfile {
    api_version: Spanned<String>,
    kind: Spanned<String>,
    metadata: RawProfileMeta,
    spec: RawProfileSpec,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawProfileMeta {
    name: Spanned<String>,
    version: Spanned<String>,
    #[serde(default)]
    description: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawProfileSpec {
    layers: Vec<RawLayer>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RawLayer {
    name: Spanned<String>,
    #[serde(rename = "type")]
    kind: Spanned<LayerKind>,
    source: Spanned<String>,
    #[serde(default)]
    namespace: Option<Spanned<String>>,
    #[serde(default)]
    values: Option<Spanned<Value>>,
    #[serde(default)]
    depends_on: Vec<Spanned<String>>,
    #[serde(default)]
    release_name: Option<Spanned<String>>,
    #[serde(default)]
    values_files: Vec<Spanned<String>>,
    #[serde(default)]
    kube_version: Option<Spanned<String>>,
    #[serde(default)]
    api_versions: Vec<Spanned<String>>,
    #[serde(default)]
    ignore: Vec<Spanned<FieldRule>>,
    #[serde(default)]
    sensitive: Vec<Spanned<FieldRule>>,
}

/// The metadata of a rollout policy or an approval rules file: a name and what it is for.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawMeta {
    name: Spanned<String>,
    #[serde(default)]
    description: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RawCluster {
    api_version: Spanned<String>,
    kind: Spanned<String>,
    metadata: RawClusterMeta,
    spec: RawClusterSpec,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawClusterMeta {
    name: Spanned<String>,
    #[serde(default)]
    tags: Vec<String>,
    #[serde(default)]
    description: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawClusterSpec {
    profile: Spanned<RawProfileRef>,
    #[serde(default)]
    overrides: BTreeMap<String, Spanned<Value>>,
    #[serde(default)]
    updates: UpdatePolicy,
    #[serde(default)]
    window: Option<Spanned<String>>,
    #[serde(default)]
    drift: DriftPolicy,
    #[serde(default)]
    target: Option<String>,
    #[serde(default, rename = "kubeVersion")]
    kube_version: Option<Spanned<String>>,
    #[serde(default, rename = "apiVersions")]
    api_versions: Vec<Spanned<String>>,
    #[serde(default)]
    ignore: Vec<Spanned<FieldRule>>,
    #[serde(default)]
    sensitive: Vec<Spanned<FieldRule>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawProfileRef {
    name: Spanned<String>,
    version: Spanned<String>,
}

pub(crate) fn line<T>(spanned: &Spanned<T>) -> usize {
    spanned.referenced.line() as usize
}

/// Loads and validates the repository in `tree`. Every problem is reported, not just the first.
pub fn load(tree: &dyn Tree) -> Result<Model, Diagnostics> {
    let (model, diags) = load_partial(tree);
    diags.into_result(model)
}

/// Loads `tree` knowing it differs from the tree `other` was loaded from only in `changes`:
/// cluster files outside them are taken from `other` rather than read and parsed again, which is
/// most of the work for a fleet of a thousand clusters.
pub fn load_reusing(tree: &dyn Tree, other: &Model, changes: &Changes) -> Result<Model, Diagnostics> {
    let (model, diags) = load_with(tree, Some((other, changes)));
    diags.into_result(model)
}

/// Loads what can be loaded: the model holds every profile version and cluster that is valid on
/// its own, the diagnostics every problem. `validate` uses it to go on and render the clusters
/// that did load, so one run reports problems in files and in templates alike.
pub fn load_partial(tree: &dyn Tree) -> (Model, Diagnostics) {
    load_with(tree, None)
}

fn load_with(tree: &dyn Tree, reuse: Option<(&Model, &Changes)>) -> (Model, Diagnostics) {
    let mut diags = Diagnostics::new();
    let has = |dir| tree.kind(dir) == Some(EntryKind::Dir);
    if !has(PROFILES_DIR) && !has(CLUSTERS_DIR) {
        diags.push(
            Diagnostic::new(Code::Layout, "no `profiles/` or `clusters/` directory: this is not a strata repository")
                .help("point --repo (and --path, for a sub-directory) at the directory that holds profiles/ and clusters/"),
        );
        return (Model::default(), diags);
    }

    let mut model = Model::default();
    // Profiles with a version that failed to load: a cluster that cannot resolve against one of
    // them is reported through the profile's own problem, not again as unresolvable.
    let mut broken = HashSet::new();
    // Profiles every version of which is `other`'s, as it was.
    let mut kept = HashSet::new();
    if has(PROFILES_DIR) {
        load_profiles(tree, reuse, &mut model, &mut broken, &mut kept, &mut diags);
    }
    // The clusters parsed anew, when every other one is `other`'s as it was.
    let fresh = if has(CLUSTERS_DIR) { load_clusters(tree, reuse, &mut model, &mut diags) } else { None };
    // A cluster taken as it was from `other`, on a profile kept as it was, resolves as it did
    // there, where nothing was found (`other.checked`): not resolved again (a fleet's thousands;
    // when every profile was kept, not even looked at).
    let checked = reuse.filter(|(other, _)| other.checked);
    let all_kept = |other: &Model| kept.len() == model.profiles.len() && other.profiles.len() == model.profiles.len();
    let to_check: Vec<&Arc<Cluster>> = match (checked, &fresh) {
        (Some((other, _)), Some(fresh)) if all_kept(other) => {
            fresh.iter().filter_map(|name| model.clusters.get(name)).collect()
        }
        _ => {
            let mut before = checked.map(|(other, _)| other.clusters.iter().peekable());
            let mut was = |name: &String| {
                let before = before.as_mut()?;
                while before.next_if(|(other, _)| *other < name).is_some() {}
                before.next_if(|(other, _)| *other == name).map(|(_, c)| c)
            };
            model
                .clusters
                .iter()
                .filter(|(name, cluster)| {
                    !(was(name).is_some_and(|was| Arc::ptr_eq(was, cluster)) && kept.contains(&cluster.profile))
                })
                .map(|(_, cluster)| cluster)
                .collect()
        }
    };
    for cluster in to_check {
        match model.resolve(cluster) {
            Ok(resolution) => check_overrides(cluster, resolution.profile, &mut diags),
            Err(_) if broken.contains(&cluster.profile) => {}
            Err(d) => diags.push(d),
        }
    }
    model.rollouts = rollouts::load(tree, &model, &mut diags);
    model.approval_rules = approvals::load(tree, &model, &mut diags);
    model.checked = diags.is_empty();
    (model, diags)
}

/// Reads a YAML file, turning every failure into a diagnostic on that file.
pub(crate) fn read_yaml<T: for<'de> Deserialize<'de>>(tree: &dyn Tree, path: &str) -> Result<T, Diagnostic> {
    let bytes = source::read_file(tree, path).map_err(|e| source::read_diag(path, e))?;
    let text = String::from_utf8(bytes).map_err(|_| Diagnostic::new(Code::Yaml, "file is not UTF-8").in_file(path))?;
    yaml::parse::<T>(&text).map_err(|e| {
        let code = if e.message.contains("unknown field")
            || e.message.contains("missing field")
            || e.message.contains("invalid")
            || e.message.contains("unknown variant")
        {
            Code::Schema
        } else {
            Code::Yaml
        };
        Diagnostic::new(code, e.message).in_file(path).at_line(e.line)
    })
}

/// The YAML files under `dir` (`rollouts/`, `approvals/`), none when it does not exist; a
/// directory that cannot be read is a diagnostic.
pub(crate) fn yaml_files(tree: &dyn Tree, dir: &str, diags: &mut Diagnostics) -> Vec<String> {
    if tree.kind(dir).is_none() {
        return Vec::new();
    }
    match source::walk_files(tree, dir) {
        Ok(files) => {
            files.into_iter().map(|(file, _)| file).filter(|f| f.ends_with(".yaml") || f.ends_with(".yml")).collect()
        }
        Err(e) => {
            diags.push(source::read_diag(dir, e));
            Vec::new()
        }
    }
}

/// The other tree's profile version from `file`, when neither the file nor anything loading it
/// checks changed: its layers' sources and helm values files, reached without a link (where a link leads can change
/// without the link changing).
fn unchanged_profile(tree: &dyn Tree, other: &Model, changes: &Changes, file: &str) -> Option<Profile> {
    let profile = other.profiles.values().flatten().find(|p| p.file == file)?;
    let untouched = !changes.touches(file)
        && profile.layers.iter().all(|l| {
            std::iter::once(&l.source)
                .chain(&l.values_files)
                .all(|path| !changes.touches(path) && source::resolve(tree, path).is_ok_and(|(real, _)| &real == path))
        });
    untouched.then(|| profile.clone())
}

fn load_profiles(
    tree: &dyn Tree,
    reuse: Option<(&Model, &Changes)>,
    model: &mut Model,
    broken: &mut HashSet<String>,
    kept: &mut HashSet<String>,
    diags: &mut Diagnostics,
) {
    let names = match tree.list(PROFILES_DIR) {
        Ok(names) => names,
        Err(e) => return diags.push(source::read_diag(PROFILES_DIR, e)),
    };
    for (name, kind) in names {
        if kind != EntryKind::Dir {
            continue;
        }
        let dir = format!("{PROFILES_DIR}/{name}");
        let versions = match tree.list(&dir) {
            Ok(versions) => versions,
            Err(e) => {
                diags.push(source::read_diag(&dir, e));
                continue;
            }
        };
        let mut loaded: Vec<Profile> = Vec::new();
        let before = diags.len();
        let mut all_reused = true;
        for (version_dir, kind) in versions {
            if kind != EntryKind::Dir {
                continue;
            }
            let file = format!("{dir}/{version_dir}/{PROFILE_FILE}");
            let Ok(dir_version) = Version::parse(&version_dir) else {
                diags.push(
                    Diagnostic::new(Code::Semver, format!("version directory `{version_dir}` is not a semver version"))
                        .in_file(format!("{dir}/{version_dir}"))
                        .about(format!("profile {name}"))
                        .help("name version directories MAJOR.MINOR.PATCH, e.g. 1.0.0"),
                );
                continue;
            };
            if tree.kind(&file).is_none() {
                diags.push(
                    Diagnostic::new(Code::Layout, format!("no {PROFILE_FILE} in this version directory"))
                        .in_file(format!("{dir}/{version_dir}"))
                        .about(format!("profile {name}@{dir_version}"))
                        .help(format!("add {PROFILE_FILE}, or remove the directory")),
                );
                continue;
            }
            let reused = reuse.and_then(|(other, changes)| unchanged_profile(tree, other, changes, &file));
            all_reused &= reused.is_some();
            if let Some(profile) = reused.or_else(|| load_profile(tree, &file, &name, &dir_version, diags)) {
                if let Some(other) = loaded.iter().find(|p| p.version.cmp_precedence(&profile.version).is_eq()) {
                    diags.push(
                        Diagnostic::new(
                            Code::Duplicate,
                            format!(
                                "version {} duplicates {} (build metadata does not make a new version)",
                                profile.version, other.version
                            ),
                        )
                        .in_file(&file)
                        .about(format!("profile {name}"))
                        .help(format!("give this version a number of its own; {} already exists", other.file)),
                    );
                    continue;
                }
                loaded.push(profile);
            }
        }
        if diags.len() > before {
            broken.insert(name.clone());
        } else if all_reused
            && !loaded.is_empty()
            && reuse.is_some_and(|(other, _)| other.profiles.get(&name).map_or(0, Vec::len) == loaded.len())
        {
            kept.insert(name.clone());
        }
        loaded.sort_by(|a, b| a.version.cmp_precedence(&b.version));
        if !loaded.is_empty() {
            model.profiles.insert(name, loaded);
        }
    }
}

fn load_profile(
    tree: &dyn Tree,
    file: &str,
    dir_name: &str,
    dir_version: &Version,
    diags: &mut Diagnostics,
) -> Option<Profile> {
    let raw: RawProfile = match read_yaml(tree, file) {
        Ok(raw) => raw,
        Err(d) => {
            diags.push(d);
            return None;
        }
    };
    let object = format!("profile {dir_name}@{dir_version}");
    let mut ok = check_header(&raw.api_version, &raw.kind, "Profile", file, diags);
    let name = raw.metadata.name.value.clone();
    if name != dir_name {
        ok = false;
        diags.push(
            Diagnostic::new(Code::Mismatch, format!("metadata.name `{name}` differs from its directory `{dir_name}`"))
                .in_file(file)
                .at_line(line(&raw.metadata.name))
                .help(format!("set metadata.name to `{dir_name}`, or move the file to profiles/{name}/")),
        );
    }
    match Version::parse(raw.metadata.version.value.trim()) {
        Ok(version) if &version == dir_version => {}
        Ok(version) => {
            ok = false;
            diags.push(
                Diagnostic::new(
                    Code::Mismatch,
                    format!("metadata.version {version} differs from its directory {dir_version}"),
                )
                .in_file(file)
                .at_line(line(&raw.metadata.version))
                .about(&object)
                .help("a profile version lives in the directory named after it: fix one of the two"),
            );
        }
        Err(e) => {
            ok = false;
            diags.push(
                Diagnostic::new(
                    Code::Semver,
                    format!("metadata.version `{}` is not semver: {e}", raw.metadata.version.value),
                )
                .in_file(file)
                .at_line(line(&raw.metadata.version))
                .about(&object)
                .help("use MAJOR.MINOR.PATCH, e.g. 1.0.0"),
            );
        }
    }
    ok &= check_name(&name, "profile name", file, line(&raw.metadata.name), diags);

    let mut layers = Vec::new();
    let mut seen: HashMap<String, usize> = HashMap::new();
    for raw_layer in raw.spec.layers {
        let layer_name = raw_layer.name.value.clone();
        let at = line(&raw_layer.name);
        if let Some(first) = seen.insert(layer_name.clone(), at) {
            ok = false;
            diags.push(
                Diagnostic::new(
                    Code::Duplicate,
                    format!("layer `{layer_name}` is declared twice (first at line {first})"),
                )
                .in_file(file)
                .at_line(at)
                .about(&object)
                .help("give each layer of a profile a unique name"),
            );
            continue;
        }
        match check_layer(tree, raw_layer, file, &object, diags) {
            Some(layer) => layers.push(layer),
            None => ok = false,
        }
    }
    let ordered = order_layers(layers, file, &object, diags)?;
    ok.then(|| Profile {
        name,
        version: dir_version.clone(),
        description: raw.metadata.description,
        file: file.to_string(),
        layers: ordered,
    })
}

pub(crate) fn check_header(
    api_version: &Spanned<String>,
    kind: &Spanned<String>,
    want: &str,
    file: &str,
    diags: &mut Diagnostics,
) -> bool {
    let mut ok = true;
    if api_version.value != API_VERSION {
        ok = false;
        diags.push(
            Diagnostic::new(Code::Schema, format!("apiVersion `{}` is not supported", api_version.value))
                .in_file(file)
                .at_line(line(api_version))
                .help(format!("use `apiVersion: {API_VERSION}`")),
        );
    }
    if kind.value != want {
        ok = false;
        diags.push(
            Diagnostic::new(Code::Schema, format!("kind `{}` where a {want} is expected", kind.value))
                .in_file(file)
                .at_line(line(kind))
                .help(format!("use `kind: {want}`")),
        );
    }
    ok
}

/// Names end up as label values and object names: DNS-1123 labels (lowercase alphanumerics and
/// `-`, at most 63 characters, starting and ending alphanumeric).
pub(crate) fn check_name(name: &str, what: &str, file: &str, at: usize, diags: &mut Diagnostics) -> bool {
    if crate::names::is_dns1123_label(name) {
        return true;
    }
    diags.push(
        Diagnostic::new(Code::Name, format!("{what} `{name}` is not a valid name"))
            .in_file(file)
            .at_line(at)
            .help("use at most 63 lowercase letters, digits and '-', starting and ending with a letter or digit"),
    );
    false
}

fn check_layer(tree: &dyn Tree, raw: RawLayer, file: &str, profile: &str, diags: &mut Diagnostics) -> Option<Layer> {
    let at = line(&raw.name);
    let name = raw.name.value;
    let object = format!("{profile} layer {name}");
    let kind = raw.kind.value;
    let mut ok = check_name(&name, "layer name", file, at, diags);

    let source_line = line(&raw.source);
    let source_diag = |message: String, help: &str| {
        Diagnostic::new(Code::Path, message).in_file(file).at_line(source_line).about(&object).help(help)
    };
    let leaves = || {
        source_diag(
            format!("source `{}` leaves the repository", raw.source.value),
            "give a path relative to the repository root, without `..` above it",
        )
    };
    // Resolved as the filesystem would: `..` after a symlink steps back from where the link led.
    let source = match source::components(&raw.source.value) {
        None => {
            diags.push(leaves());
            None
        }
        Some(parts) => {
            let path = parts.join("/");
            match source::resolve(tree, &path) {
                Ok((real, found)) => {
                    let problem = match (kind, found) {
                        (LayerKind::Manifests, _) => None,
                        (_, EntryKind::Dir) => {
                            let marker: &[&str] = match kind {
                                LayerKind::Kustomize => &["kustomization.yaml", "kustomization.yml", "Kustomization"],
                                _ => &["Chart.yaml"],
                            };
                            (!marker.iter().any(|m| tree.kind(&format!("{real}/{m}")).is_some()))
                                .then(|| format!("source `{path}` has no {}", marker[0]))
                        }
                        _ => Some(format!("source `{path}` is a file; a {kind} layer needs a directory")),
                    };
                    match problem {
                        Some(message) => {
                            diags.push(source_diag(
                                message,
                                "point source at the directory that holds the layer's files",
                            ));
                            None
                        }
                        // A path that climbs back with `..` is kept as the place it reached, so files
                        // are named where they really are; otherwise as written.
                        None if parts.contains(&"..") => Some(real),
                        None => Some(path),
                    }
                }
                Err(ReadError::NotFound) => {
                    diags.push(source_diag(
                        format!("source `{path}` does not exist"),
                        "check the path; it is relative to the repository root",
                    ));
                    None
                }
                Err(ReadError::Escapes { through: None, .. }) => {
                    diags.push(leaves());
                    None
                }
                Err(ReadError::Escapes { through: Some(link), .. }) => {
                    diags.push(source_diag(
                        format!("source `{path}` goes through a symlink that points outside the repository (`{link}`)"),
                        "layer files must live in the repository: copy them in instead of linking",
                    ));
                    None
                }
                Err(e) => {
                    diags.push(source_diag(format!("source `{path}`: {e}"), "fix the path or the links along it"));
                    None
                }
            }
        }
    };
    ok &= source.is_some();

    let namespace = raw.namespace.map(|ns| {
        ok &= check_name(&ns.value, "namespace", file, line(&ns), diags);
        ns.value
    });
    let values = match raw.values {
        None => Map::new(),
        Some(Spanned { value: Value::Object(map), .. }) => map,
        Some(Spanned { value: Value::Null, .. }) => Map::new(),
        Some(other) => {
            ok = false;
            diags.push(
                Diagnostic::new(Code::Schema, "values must be a mapping")
                    .in_file(file)
                    .at_line(line(&other))
                    .about(&object),
            );
            Map::new()
        }
    };
    if kind == LayerKind::Kustomize && !values.is_empty() {
        ok = false;
        diags.push(
            Diagnostic::new(Code::Schema, "kustomize layers take no values")
                .in_file(file)
                .at_line(at)
                .about(&object)
                .help("express per-profile changes as patches in the kustomization, or use a manifests layer"),
        );
    }
    let release_name = raw.release_name.and_then(|r| {
        if kind != LayerKind::Helm {
            ok = false;
            diags.push(
                Diagnostic::new(Code::Schema, "releaseName is only for helm layers")
                    .in_file(file)
                    .at_line(line(&r))
                    .about(&object),
            );
            return None;
        }
        ok &= check_name(&r.value, "releaseName", file, line(&r), diags);
        Some(r.value)
    });
    let helm_only = |field: &str, at: usize, diags: &mut Diagnostics| {
        diags.push(
            Diagnostic::new(Code::Schema, format!("{field} is only for helm layers"))
                .in_file(file)
                .at_line(at)
                .about(&object),
        );
    };
    if kind != LayerKind::Helm {
        let helm_fields = [
            raw.values_files.first().map(|v| ("valuesFiles", line(v))),
            raw.kube_version.as_ref().map(|v| ("kubeVersion", line(v))),
            raw.api_versions.first().map(|v| ("apiVersions", line(v))),
        ];
        for (field, at) in helm_fields.into_iter().flatten() {
            ok = false;
            helm_only(field, at, diags);
        }
    }
    let mut values_files = Vec::new();
    for written in &raw.values_files {
        match check_values_file(tree, written, file, &object) {
            Ok(path) => values_files.push(path),
            Err(d) => {
                ok = false;
                diags.push(d);
            }
        }
    }
    let (kube_version, api_versions) =
        check_capabilities(raw.kube_version, raw.api_versions, file, &object, diags, &mut ok);
    let ignore = check_field_rules(raw.ignore, "ignore", false, file, &object, diags, &mut ok);
    let sensitive = check_field_rules(raw.sensitive, "sensitive", false, file, &object, diags, &mut ok);
    ok.then(|| Layer {
        ignore,
        sensitive,
        name,
        kind,
        source: source.unwrap_or_default(),
        namespace,
        values,
        depends_on: raw.depends_on.into_iter().map(|d| d.value).collect(),
        release_name,
        values_files,
        kube_version,
        api_versions,
        line: at,
    })
}

/// Orders layers so each comes after what it depends on, keeping the declared order otherwise.
/// Unknown dependencies and cycles are reported and make the profile invalid.
fn order_layers(layers: Vec<Layer>, file: &str, object: &str, diags: &mut Diagnostics) -> Option<Vec<Layer>> {
    let names: HashSet<&str> = layers.iter().map(|l| l.name.as_str()).collect();
    let mut ok = true;
    for layer in &layers {
        for dep in &layer.depends_on {
            let problem = if dep == &layer.name {
                Some(format!("layer `{}` depends on itself", layer.name))
            } else if !names.contains(dep.as_str()) {
                Some(format!("layer `{}` depends on `{dep}`, which this profile does not have", layer.name))
            } else {
                None
            };
            if let Some(message) = problem {
                ok = false;
                diags.push(
                    Diagnostic::new(Code::DependsOn, message)
                        .in_file(file)
                        .at_line(layer.line)
                        .about(object)
                        .help(format!("dependsOn names other layers of this profile: {}", sorted(&names))),
                );
            }
        }
    }
    if !ok {
        return None;
    }
    let mut done: Vec<Layer> = Vec::with_capacity(layers.len());
    let mut left = layers;
    while !left.is_empty() {
        let ready = left.iter().position(|l| l.depends_on.iter().all(|d| done.iter().any(|x| &x.name == d)));
        match ready {
            Some(i) => done.push(left.remove(i)),
            None => {
                let cycle: Vec<_> = left.iter().map(|l| l.name.as_str()).collect();
                diags.push(
                    Diagnostic::new(
                        Code::DependsOn,
                        format!("dependsOn forms a cycle among layers {}", cycle.join(", ")),
                    )
                    .in_file(file)
                    .at_line(left[0].line)
                    .about(object)
                    .help("remove one of the dependencies so the layers can be applied in order"),
                );
                return None;
            }
        }
    }
    Some(done)
}

fn sorted(names: &HashSet<&str>) -> String {
    let mut v: Vec<_> = names.iter().copied().collect();
    v.sort();
    v.join(", ")
}

/// Loads `clusters/`; when the clusters are `reuse`'s but those of the files it changed, returns
/// the names of those parsed anew.
fn load_clusters(
    tree: &dyn Tree,
    reuse: Option<(&Model, &Changes)>,
    model: &mut Model,
    diags: &mut Diagnostics,
) -> Option<Vec<String>> {
    if let Some((other, changes)) = reuse
        && let Some((clusters, fresh)) = changed_clusters(tree, other, changes)
    {
        model.clusters = clusters;
        model.flat_clusters = true;
        return Some(fresh);
    }
    let files = match source::walk_files(tree, CLUSTERS_DIR) {
        Ok(files) => files,
        Err(e) => {
            diags.push(source::read_diag(CLUSTERS_DIR, e));
            return None;
        }
    };
    let prefix = format!("{CLUSTERS_DIR}/");
    model.flat_clusters = files
        .iter()
        .all(|(file, real)| file == real && file.strip_prefix(&prefix).is_some_and(|name| !name.contains('/')));
    // A cluster depends on its file alone: unchanged (as written and where a link leads), the
    // other tree's parse of it is this one's.
    let by_file: HashMap<&str, &Arc<Cluster>> =
        reuse.iter().flat_map(|(other, _)| other.clusters.values()).map(|c| (c.file.as_str(), c)).collect();
    // Parsed on every core (a fleet has thousands of cluster files), then taken in path order so
    // the findings come out as they always do.
    let loaded: Vec<(String, Option<Arc<Cluster>>, Diagnostics)> = files
        .into_par_iter()
        .filter(|(file, _)| file.ends_with(".yaml") || file.ends_with(".yml"))
        .map(|(file, real)| {
            let mut found = Diagnostics::new();
            let unchanged = reuse.is_some_and(|(_, changes)| !changes.touches(&file) && !changes.touches(&real));
            // Shared with the other model, not copied: a fleet's clusters are most of a model.
            let reused = unchanged.then(|| by_file.get(file.as_str()).map(|c| Arc::clone(c))).flatten();
            let cluster = reused.or_else(|| load_cluster(tree, &file, &mut found).map(Arc::new));
            (file, cluster, found)
        })
        .collect();
    for (file, cluster, found) in loaded {
        diags.extend(found);
        let Some(cluster) = cluster else { continue };
        if let Some(other) = model.clusters.get(&cluster.name) {
            diags.push(
                Diagnostic::new(
                    Code::Duplicate,
                    format!("cluster `{}` is also defined in {}", cluster.name, other.file),
                )
                .in_file(&file)
                .help("cluster names are unique across the repository"),
            );
            continue;
        }
        model.clusters.insert(cluster.name.clone(), cluster);
    }
    None
}

/// A model's clusters.
type ClustersByName = BTreeMap<String, Arc<Cluster>>;

/// The clusters of `tree` from those of `other` and the cluster files `changes` holds, without
/// listing `clusters/`: at 10,000 clusters, listing and matching every file costs more than the
/// commit. Only where the result is sure to be what a full load gives: both sides flat (plain
/// files directly in `clusters/`), every changed cluster file a plain file or gone, and nothing
/// to report (a finding is left to the full load, so findings come out as they always do).
/// Returns them with the names of those parsed anew.
fn changed_clusters(tree: &dyn Tree, other: &Model, changes: &Changes) -> Option<(ClustersByName, Vec<String>)> {
    if !other.flat_clusters || changes.paths().any(|p| p == CLUSTERS_DIR) {
        return None;
    }
    let prefix = format!("{CLUSTERS_DIR}/");
    let changed: Vec<&str> = changes.paths().filter(|p| p.starts_with(&prefix)).collect();
    if changed.iter().any(|p| p[prefix.len()..].contains('/')) {
        return None;
    }
    // Copied whole (the clusters shared, not parsed again), then those of the changed files
    // taken out: found by name where a file bears its cluster's (as fleets name them), by
    // looking at all only for the others.
    let mut clusters: ClustersByName = other.clusters.clone();
    let mut elsewhere: Vec<&str> = Vec::new();
    for file in &changed {
        let stem = file[prefix.len()..].strip_suffix(".yaml").or_else(|| file[prefix.len()..].strip_suffix(".yml"));
        match stem.filter(|stem| clusters.get(*stem).is_some_and(|c| c.file == *file)) {
            Some(stem) => {
                clusters.remove(stem);
            }
            None => elsewhere.push(file),
        }
    }
    if !elsewhere.is_empty() {
        clusters.retain(|_, c| !elsewhere.contains(&c.file.as_str()));
    }
    let mut fresh = Vec::new();
    for file in changed.into_iter().filter(|f| f.ends_with(".yaml") || f.ends_with(".yml")) {
        match tree.kind(file) {
            None => continue,
            Some(EntryKind::File) => {}
            Some(_) => return None,
        }
        let mut found = Diagnostics::new();
        let cluster = load_cluster(tree, file, &mut found)?;
        if !found.is_empty() || clusters.contains_key(&cluster.name) {
            return None;
        }
        fresh.push(cluster.name.clone());
        clusters.insert(cluster.name.clone(), Arc::new(cluster));
    }
    Some((clusters, fresh))
}

fn load_cluster(tree: &dyn Tree, file: &str, diags: &mut Diagnostics) -> Option<Cluster> {
    let raw: RawCluster = match read_yaml(tree, file) {
        Ok(raw) => raw,
        Err(d) => {
            diags.push(d);
            return None;
        }
    };
    let mut ok = check_header(&raw.api_version, &raw.kind, "Cluster", file, diags);
    let name_line = line(&raw.metadata.name);
    let name = raw.metadata.name.value;
    ok &= check_name(&name, "cluster name", file, name_line, diags);
    let object = format!("cluster {name}");
    let profile_line = line(&raw.spec.profile);
    let profile_ref = raw.spec.profile.value;
    let version = match VersionSpec::parse(&profile_ref.version.value) {
        Ok(v) => Some(v),
        Err(e) => {
            diags.push(
                Diagnostic::new(
                    Code::Semver,
                    format!("version `{}` is neither a version nor a range: {e}", profile_ref.version.value),
                )
                .in_file(file)
                .at_line(line(&profile_ref.version))
                .about(&object)
                .help("pin a version (1.0.0) or give a semver range (~1.1, ^1, >=1.0.0, <2.0.0)"),
            );
            None
        }
    };
    let mut overrides = BTreeMap::new();
    for (layer, values) in raw.spec.overrides {
        match values.value {
            Value::Object(map) => {
                overrides.insert(layer, map);
            }
            Value::Null => {}
            _ => {
                ok = false;
                diags.push(
                    Diagnostic::new(Code::Schema, format!("overrides for layer `{layer}` must be a mapping of values"))
                        .in_file(file)
                        .at_line(values.referenced.line() as usize)
                        .about(&object),
                );
            }
        }
    }
    let target = raw.spec.target.unwrap_or_else(|| name.clone());
    let (kube_version, api_versions) =
        check_capabilities(raw.spec.kube_version, raw.spec.api_versions, file, &object, diags, &mut ok);
    let ignore = check_field_rules(raw.spec.ignore, "ignore", true, file, &object, diags, &mut ok);
    let sensitive = check_field_rules(raw.spec.sensitive, "sensitive", true, file, &object, diags, &mut ok);
    let window = raw.spec.window.and_then(|w| match crate::window::Window::parse(&w.value) {
        Ok(window) => Some(window),
        Err(e) => {
            ok = false;
            diags.push(
                Diagnostic::new(Code::Schema, format!("window: {e}"))
                    .in_file(file)
                    .at_line(line(&w))
                    .about(&object)
                    .help(crate::window::WindowError::HELP),
            );
            None
        }
    });
    Some(Cluster {
        name,
        file: file.to_string(),
        description: raw.metadata.description,
        tags: raw.metadata.tags,
        profile: profile_ref.name.value,
        version: version?,
        overrides,
        updates: raw.spec.updates,
        window,
        drift: raw.spec.drift,
        target,
        kube_version,
        api_versions,
        ignore,
        sensitive,
        profile_line,
    })
    .filter(|_| ok)
}

/// A helm layer's values file: a file in the repository, named relative to its root and resolved
/// as the filesystem would (as a layer's `source` is). Kept as written unless `..` climbs back,
/// then as the place it reached.
fn check_values_file(
    tree: &dyn Tree,
    written: &Spanned<String>,
    file: &str,
    object: &str,
) -> Result<String, Diagnostic> {
    let path_diag = |message: String, help: &str| {
        Diagnostic::new(Code::Path, format!("valuesFiles: {message}"))
            .in_file(file)
            .at_line(line(written))
            .about(object)
            .help(help)
    };
    let leaves = || {
        path_diag(
            format!("`{}` leaves the repository", written.value),
            "give a path relative to the repository root, without `..` above it",
        )
    };
    let Some(parts) = source::components(&written.value).filter(|p| !p.is_empty()) else {
        return Err(leaves());
    };
    let path = parts.join("/");
    match source::resolve(tree, &path) {
        Ok((real, EntryKind::File)) => Ok(if parts.contains(&"..") { real } else { path }),
        Ok(_) => Err(path_diag(format!("`{path}` is a directory"), "name a YAML file of values")),
        Err(ReadError::NotFound) => {
            Err(path_diag(format!("`{path}` does not exist"), "check the path; it is relative to the repository root"))
        }
        Err(ReadError::Escapes { through: None, .. }) => Err(leaves()),
        Err(ReadError::Escapes { through: Some(link), .. }) => Err(path_diag(
            format!("`{path}` goes through a symlink that points outside the repository (`{link}`)"),
            "values files must live in the repository: copy them in instead of linking",
        )),
        Err(e) => Err(path_diag(format!("`{path}`: {e}"), "fix the path or the links along it")),
    }
}

/// `kubeVersion` and `apiVersions` of a helm layer or a cluster: what `helm template` takes as
/// `--kube-version` and `--api-versions`.
fn check_capabilities(
    kube_version: Option<Spanned<String>>,
    api_versions: Vec<Spanned<String>>,
    file: &str,
    object: &str,
    diags: &mut Diagnostics,
    ok: &mut bool,
) -> (Option<String>, Vec<String>) {
    let mut bad = |message: String, at: usize, help: &str| {
        *ok = false;
        diags.push(Diagnostic::new(Code::Schema, message).in_file(file).at_line(at).about(object).help(help));
    };
    let kube_version = kube_version.and_then(|v| {
        if is_kube_version(&v.value) {
            return Some(v.value);
        }
        bad(
            format!("kubeVersion `{}` is not a Kubernetes version", v.value),
            line(&v),
            "write MAJOR.MINOR or MAJOR.MINOR.PATCH, with an optional `v` and suffix: 1.30, v1.30.2, v1.29.3-eks-1",
        );
        None
    });
    let mut kept = Vec::new();
    for api in api_versions {
        if is_api_version(&api.value) {
            kept.push(api.value);
        } else {
            bad(
                format!("apiVersions entry `{}` is not an API version", api.value),
                line(&api),
                "write group/version (monitoring.coreos.com/v1), a core version (v1), or group/version/Kind",
            );
        }
    }
    (kube_version, kept)
}

/// `1.30`, `v1.30.2`, `v1.29.3-eks-1`, `1.30.2+k3s1`: what Helm parses as a Kubernetes version.
pub(crate) fn is_kube_version(text: &str) -> bool {
    let text = text.strip_prefix('v').unwrap_or(text);
    let end = text.find(['-', '+']).unwrap_or(text.len());
    let (core, suffix) = text.split_at(end);
    let numbers: Vec<&str> = core.split('.').collect();
    (2..=3).contains(&numbers.len())
        && numbers.iter().all(|n| !n.is_empty() && n.len() <= 9 && n.bytes().all(|b| b.is_ascii_digit()))
        && suffix.len() <= 64
        && suffix.bytes().skip(1).all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'+'))
        && suffix.len() != 1
}

/// `v1`, `apps/v1`, `monitoring.coreos.com/v1`, `monitoring.coreos.com/v1/ServiceMonitor`.
pub(crate) fn is_api_version(text: &str) -> bool {
    let parts: Vec<&str> = text.split('/').collect();
    text.len() <= 253
        && (1..=3).contains(&parts.len())
        && parts.iter().all(|p| {
            p.bytes().next().is_some_and(|b| b.is_ascii_alphanumeric())
                && p.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-')
        })
}

/// `ignore` and `sensitive` rules name a JSON pointer; `layer` only makes sense on a cluster's rules.
fn check_field_rules(
    rules: Vec<Spanned<FieldRule>>,
    what: &str,
    cluster: bool,
    file: &str,
    object: &str,
    diags: &mut Diagnostics,
    ok: &mut bool,
) -> Vec<FieldRule> {
    let mut out = Vec::new();
    for rule in rules {
        let at = line(&rule);
        let problem = if !rule.value.path.starts_with('/') {
            Some(format!("{what} path `{}` is not a JSON pointer", rule.value.path))
        } else if rule.value.layer.is_some() && !cluster {
            Some(format!("`layer` in `{what}` rules is for cluster files; a layer's rules already apply to that layer"))
        } else {
            None
        };
        match problem {
            Some(message) => {
                *ok = false;
                diags.push(Diagnostic::new(Code::Schema, message).in_file(file).at_line(at).about(object).help(
                    "write paths as JSON pointers, e.g. /spec/replicas or /metadata/annotations/example.com~1owner",
                ));
            }
            None => out.push(rule.value),
        }
    }
    out
}

fn check_overrides(cluster: &Cluster, profile: &Profile, diags: &mut Diagnostics) {
    for layer_name in cluster.overrides.keys() {
        let problem = match profile.layer(layer_name) {
            None => Some(format!("overrides name layer `{layer_name}`, which {} does not have", profile.id())),
            Some(layer) if layer.kind == LayerKind::Kustomize => {
                Some(format!("layer `{layer_name}` is a kustomize layer, which takes no values"))
            }
            Some(_) => None,
        };
        if let Some(message) = problem {
            let layers: Vec<_> = profile.layers.iter().map(|l| l.name.as_str()).collect();
            diags.push(
                Diagnostic::new(Code::Unresolved, message)
                    .in_file(&cluster.file)
                    .about(format!("cluster {}", cluster.name))
                    .help(format!("layers of {}: {}", profile.id(), layers.join(", "))),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::source::MemTree;

    /// A cluster is resolved again from another revision unless it and every version of its
    /// profile are as they were there, and that revision loaded without a finding: a profile
    /// edited under an unchanged cluster, or a revision with findings to load from, still has the
    /// cluster's overrides checked.
    #[test]
    fn unchanged_clusters_are_checked_again_when_their_profile_changed_or_the_other_had_findings() {
        let profile = |layers: &str| {
            format!(
                "apiVersion: strata.dev/v1\nkind: Profile\nmetadata: {{name: p, version: 1.0.0}}\nspec:\n  layers:\n{layers}"
            )
        };
        let both = "  - {name: app, type: manifests, source: packs/app}\n  - {name: web, type: manifests, source: packs/app}\n";
        let app_only = "  - {name: app, type: manifests, source: packs/app}\n";
        let tree = |layers: &str| {
            let mut tree = MemTree::new();
            tree.file("profiles/p/1.0.0/profile.yaml", profile(layers));
            tree.file("packs/app/cm.yaml", "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: x}\n");
            tree.file(
                "clusters/c.yaml",
                "apiVersion: strata.dev/v1\nkind: Cluster\nmetadata: {name: c}\nspec:\n  profile: {name: p, version: 1.0.0}\n  overrides:\n    web: {replicas: 2}\n",
            );
            tree
        };
        let good = load(&tree(both)).unwrap();
        assert!(good.checked);
        let edited = Changes::new(["profiles/p/1.0.0/profile.yaml".to_string()]);
        let found = load_reusing(&tree(app_only), &good, &edited).expect_err("the override names a layer gone");
        assert!(found.to_string().contains("overrides name layer `web`"), "{found}");

        let (partial, findings) = load_partial(&tree(app_only));
        assert!(!findings.is_empty() && !partial.checked);
        let again = load_reusing(&tree(app_only), &partial, &Changes::default()).expect_err("found again");
        assert_eq!(again.to_string(), findings.sorted().to_string());
        // And from a revision without findings, nothing changed: as it was.
        assert!(load_reusing(&tree(both), &good, &Changes::default()).is_ok());
    }

    /// Loading a revision from another (`load_reusing`, which lists only the cluster files that
    /// changed when it can) is loading it from scratch: the same clusters, or the same findings,
    /// over random histories of cluster files — added, edited, removed, renamed, duplicated,
    /// broken, linked, nested, not YAML, overriding a layer that is not there, and `clusters/`
    /// itself replaced. The seed is printed on failure (`STRATA_SEED` replays one).
    #[test]
    fn loading_from_another_revision_is_loading_from_scratch() {
        let seeds: Vec<u64> = match std::env::var("STRATA_SEED") {
            Ok(seed) => vec![seed.parse().expect("STRATA_SEED is a number")],
            Err(_) => (0..40).collect(),
        };
        for seed in seeds {
            let result = std::panic::catch_unwind(|| random_history(seed));
            assert!(result.is_ok(), "seed {seed} (STRATA_SEED={seed} replays it)");
        }
    }

    fn random_history(seed: u64) {
        let mut rng = fastrand::Rng::with_seed(seed);
        let profile = "apiVersion: strata.dev/v1\nkind: Profile\nmetadata: {name: p, version: 1.0.0}\nspec:\n  layers:\n  - name: app\n    type: manifests\n    source: packs/app\n";
        let cluster = |name: &str, replicas: u32| {
            format!(
                "apiVersion: strata.dev/v1\nkind: Cluster\nmetadata: {{name: {name}}}\nspec:\n  profile: {{name: p, version: 1.0.0}}\n  overrides:\n    app: {{ replicas: {replicas} }}\n"
            )
        };
        // The files of `clusters/` (path → content; a content starting with `->` is a link).
        let mut files: BTreeMap<String, String> = BTreeMap::new();
        for i in 0..6 {
            files.insert(format!("clusters/c{i}.yaml"), cluster(&format!("c{i}"), 1));
        }
        let tree_of = |files: &BTreeMap<String, String>| {
            let mut tree = MemTree::new();
            tree.file("profiles/p/1.0.0/profile.yaml", profile);
            tree.file("packs/app/cm.yaml", "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: x}\n");
            for (path, content) in files {
                match content.strip_prefix("->") {
                    Some(target) => tree.symlink(path, target),
                    None => tree.file(path, content.as_bytes()),
                };
            }
            tree
        };
        let mut good: (BTreeMap<String, String>, Model) = (files.clone(), load(&tree_of(&files)).unwrap());
        for step in 0..30 {
            let n = rng.u32(0..9);
            let path = format!("clusters/c{n}.yaml");
            match rng.u32(0..100) {
                0..=39 => {
                    files.insert(path, cluster(&format!("c{n}"), rng.u32(1..5)));
                }
                40..=54 => {
                    files.remove(&path);
                }
                55..=62 => {
                    // Renamed: the same cluster in another file.
                    if let Some(content) = files.remove(&path) {
                        files.insert(format!("clusters/r{n}.yml"), content);
                    }
                }
                63..=68 => {
                    files.insert(format!("clusters/dup{n}.yaml"), cluster(&format!("c{}", rng.u32(0..6)), 1));
                }
                69..=73 => {
                    files.insert(path, "apiVersion: strata.dev/v1\nkind: Cluster\nmetadata: [".to_string());
                }
                74..=77 => {
                    files.insert(format!("clusters/notes{n}.txt"), "not a cluster".to_string());
                }
                78..=82 => {
                    files.insert(format!("clusters/l{n}.yaml"), format!("->c{}.yaml", rng.u32(0..9)));
                }
                83..=87 => {
                    files.insert(format!("clusters/team/c1{n}.yaml"), cluster(&format!("c1{n}"), 2));
                }
                88..=91 => {
                    files.retain(|p, _| !p.starts_with("clusters/team/") && !p.starts_with("clusters/l"));
                }
                92..=94 => {
                    // Overrides of a layer the profile does not have: found on the new file alone.
                    let text = cluster(&format!("c{n}"), 1).replace("app: {", "nope: {");
                    files.insert(path, text);
                }
                _ => {
                    // Some steps change several files at once.
                    for m in 0..3 {
                        files.insert(format!("clusters/c{m}.yaml"), cluster(&format!("c{m}"), rng.u32(1..5)));
                    }
                }
            }
            let (before, model) = &good;
            let changed = before
                .keys()
                .chain(files.keys())
                .filter(|p| before.get(*p) != files.get(*p))
                .cloned()
                .collect::<Vec<_>>();
            let tree = tree_of(&files);
            let reused = load_reusing(&tree, model, &Changes::new(changed.clone()));
            let scratch = load(&tree);
            match (reused, scratch) {
                (Ok(reused), Ok(scratch)) => {
                    assert_eq!(reused.clusters, scratch.clusters, "seed {seed}, step {step}, changed {changed:?}");
                    good = (files.clone(), reused);
                }
                (Err(reused), Err(scratch)) => {
                    assert_eq!(reused.to_string(), scratch.to_string(), "seed {seed}, step {step}");
                }
                (reused, scratch) => panic!(
                    "seed {seed}, step {step}, changed {changed:?}: from another revision {:?}, from scratch {:?}",
                    reused.map(|m| m.clusters.len()),
                    scratch.map(|m| m.clusters.len())
                ),
            }
        }
    }

    #[test]
    fn kubernetes_versions_and_api_versions_are_what_helm_takes() {
        for good in ["1.30", "v1.30.2", "1.29.3-eks-1", "v1.30.2+k3s1", "1.31.0-rc.1+build.5"] {
            assert!(is_kube_version(good), "{good}");
        }
        for bad in ["", "1", "v", "twenty", "1.30.", "1.30-", "1.2.3.4", "--kube-version=1.30", "1.30 "] {
            assert!(!is_kube_version(bad), "{bad}");
        }
        for good in ["v1", "apps/v1", "monitoring.coreos.com/v1", "example.com/v1/Widget"] {
            assert!(is_api_version(good), "{good}");
        }
        for bad in ["", "/v1", "a//v1", "-a/v1", "a/v1,b/v1", "a/b/c/d", "a b/v1"] {
            assert!(!is_api_version(bad), "{bad}");
        }
    }

    #[test]
    fn helm_layers_and_clusters_declare_what_charts_see() {
        let mut tree = MemTree::new();
        tree.file(
            "profiles/p/1.0.0/profile.yaml",
            "apiVersion: strata.dev/v1\nkind: Profile\nmetadata: {name: p, version: 1.0.0}\nspec:\n  layers:\n  - name: app\n    type: helm\n    source: charts/app\n    valuesFiles: [values/a.yaml, ./values/../values/b.yaml]\n    kubeVersion: 1.30\n    apiVersions: [monitoring.coreos.com/v1]\n",
        )
        .file("charts/app/Chart.yaml", "apiVersion: v2\nname: app\nversion: 0.1.0\n")
        .file("values/a.yaml", "a: 1\n")
        .file("values/b.yaml", "b: 1\n")
        .file(
            "clusters/c.yaml",
            "apiVersion: strata.dev/v1\nkind: Cluster\nmetadata: {name: c}\nspec:\n  profile: {name: p, version: 1.0.0}\n  kubeVersion: v1.31.2\n  apiVersions: [example.com/v1]\n",
        );
        let model = load(&tree).unwrap();
        let layer = &model.profiles["p"][0].layers[0];
        assert_eq!(layer.values_files, ["values/a.yaml", "values/b.yaml"]);
        assert_eq!(layer.kube_version.as_deref(), Some("1.30"), "an unquoted 1.30 is the version, not 1.3");
        assert_eq!(layer.api_versions, ["monitoring.coreos.com/v1"]);
        let cluster = &model.clusters["c"];
        assert_eq!(cluster.kube_version.as_deref(), Some("v1.31.2"));
        assert_eq!(cluster.api_versions, ["example.com/v1"]);
    }
}
