//! The validated model: profiles and clusters as they are known to be good.
//!
//! [`crate::repo`] turns what users wrote into these types and refuses anything invalid, so code
//! past it (resolve, render, plan) never re-checks input. Resolution — which profile version a
//! cluster runs — lives here because it is a question about the model alone.

use std::collections::BTreeMap;
use std::fmt;

use semver::{Version, VersionReq};
use serde::Serialize;
use serde_json::{Map, Value};

use crate::diag::{Code, Diagnostic};

/// The `apiVersion` of strata's own files.
pub const API_VERSION: &str = "strata.dev/v1";

/// Profiles (every version, ascending), clusters and rollout policies, keyed by name.
#[derive(Debug, Default)]
pub struct Model {
    pub profiles: BTreeMap<String, Vec<Profile>>,
    pub clusters: BTreeMap<String, std::sync::Arc<Cluster>>,
    pub rollouts: BTreeMap<String, crate::rollout::Rollout>,
    /// Who may approve which pending updates (`approvals/*.yaml`), in file order.
    pub approval_rules: Vec<crate::approval::Rule>,
    /// Whether `clusters/` holds only plain files, directly (no links, no sub-directories): then
    /// another revision loaded from this one lists only the cluster files that changed.
    pub flat_clusters: bool,
    /// Whether it loaded without a finding: then another revision loaded from it takes its
    /// clusters' resolution as found (for those unchanged on unchanged profiles).
    pub checked: bool,
}

#[derive(Debug, Clone)]
pub struct Profile {
    pub name: String,
    pub version: Version,
    pub description: Option<String>,
    /// `profiles/<name>/<version>/profile.yaml`.
    pub file: String,
    /// In apply order: `dependsOn` first, otherwise as declared.
    pub layers: Vec<Layer>,
}

impl Profile {
    /// `aws-profile@1.0.0`
    pub fn id(&self) -> String {
        format!("{}@{}", self.name, self.version)
    }

    pub fn layer(&self, name: &str) -> Option<&Layer> {
        self.layers.iter().find(|l| l.name == name)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LayerKind {
    /// Plain YAML files, templated with the layer's values.
    Manifests,
    /// A kustomization directory, built with `kustomize build` / `kubectl kustomize`.
    Kustomize,
    /// A Helm chart directory, rendered with `helm template`.
    Helm,
}

impl fmt::Display for LayerKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            LayerKind::Manifests => "manifests",
            LayerKind::Kustomize => "kustomize",
            LayerKind::Helm => "helm",
        })
    }
}

#[derive(Debug, Clone)]
pub struct Layer {
    pub name: String,
    pub kind: LayerKind,
    /// Repository-relative, normalised path of the layer's files.
    pub source: String,
    /// Namespace given to namespaced objects that name none.
    pub namespace: Option<String>,
    pub values: Map<String, Value>,
    pub depends_on: Vec<String>,
    /// Helm release name (defaults to the layer name).
    pub release_name: Option<String>,
    /// Helm layers: files of values in the repository (repository-relative, normalised), given
    /// to helm in order before the layer's own values and the cluster's overrides.
    pub values_files: Vec<String>,
    /// Helm layers: the Kubernetes version charts see as `.Capabilities.KubeVersion`, unless the
    /// cluster declares its own.
    pub kube_version: Option<String>,
    /// Helm layers: API versions added to `.Capabilities.APIVersions` (the cluster's are added too).
    pub api_versions: Vec<String>,
    /// Fields other controllers own (an HPA's `spec.replicas`): not compared for drift, and not
    /// re-applied to objects that already exist.
    pub ignore: Vec<FieldRule>,
    /// Fields that hold credentials (a custom resource's `spec.password`): shown only as keyed
    /// hashes, as Secret values are (see [`crate::redact`]).
    pub sensitive: Vec<FieldRule>,
    /// Line of the layer's `name` in the profile file.
    pub line: usize,
}

/// Fields of some objects: a JSON pointer, optionally only on objects of one kind or name. An
/// `ignore` rule leaves them to others; a `sensitive` rule keeps their values from being shown.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FieldRule {
    /// JSON pointer into the object, e.g. `/spec/replicas` (in `sensitive` rules a `*` token
    /// stands for any key or list item: `/spec/users/*/password`).
    pub path: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// For cluster-level rules: only objects of this layer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub layer: Option<String>,
}

impl FieldRule {
    pub fn matches(&self, layer: &str, kind: &str, name: &str) -> bool {
        self.kind.as_deref().is_none_or(|k| k == kind)
            && self.name.as_deref().is_none_or(|n| n == name)
            && self.layer.as_deref().is_none_or(|l| l == layer)
    }
}

/// What a cluster asks for: one exact version, or the highest version in a range.
#[derive(Debug, Clone, PartialEq)]
pub enum VersionSpec {
    Exact(Version),
    Range(VersionReq),
}

impl VersionSpec {
    /// A bare version (`1.0.0`) pins exactly; anything else is a semver range (`~1.1`, `>=1, <2`).
    /// (The semver crate alone would read `1.0.0` as `^1.0.0`, which is not what a pin means.)
    pub fn parse(text: &str) -> Result<VersionSpec, semver::Error> {
        let text = text.trim();
        if let Ok(version) = Version::parse(text) {
            return Ok(VersionSpec::Exact(version));
        }
        VersionReq::parse(text).map(VersionSpec::Range)
    }

    pub fn matches(&self, version: &Version) -> bool {
        match self {
            VersionSpec::Exact(exact) => exact == version,
            VersionSpec::Range(range) => range.matches(version),
        }
    }
}

impl fmt::Display for VersionSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            VersionSpec::Exact(v) => write!(f, "{v}"),
            VersionSpec::Range(r) => write!(f, "{r}"),
        }
    }
}

/// When in-place edits of the profile version a cluster runs reach it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum UpdatePolicy {
    /// Applied as soon as they are committed.
    #[default]
    Auto,
    /// Held as a pending update until approved.
    Manual,
}

/// What happens when a live object no longer matches what strata applied.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DriftPolicy {
    /// Re-apply, so the cluster matches Git again.
    #[default]
    Correct,
    /// Report the drifted fields and leave the object alone.
    Report,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Cluster {
    pub name: String,
    /// `clusters/<file>.yaml`.
    pub file: String,
    pub description: Option<String>,
    pub tags: Vec<String>,
    pub profile: String,
    pub version: VersionSpec,
    /// Per-layer values deep-merged over the layer's own.
    pub overrides: BTreeMap<String, Map<String, Value>>,
    pub updates: UpdatePolicy,
    /// With `updates: auto`, in-place edits wait for this window.
    pub window: Option<crate::window::Window>,
    pub drift: DriftPolicy,
    /// The host-side target this cluster is reached through (defaults to the cluster name).
    pub target: String,
    /// The cluster's Kubernetes version, as its helm layers see it (`.Capabilities.KubeVersion`).
    pub kube_version: Option<String>,
    /// API versions the cluster serves, added to its helm layers' `.Capabilities.APIVersions`.
    pub api_versions: Vec<String>,
    /// Fields left to other controllers on this cluster (see [`FieldRule`]).
    pub ignore: Vec<FieldRule>,
    /// Fields whose values are never shown, on this cluster's objects.
    pub sensitive: Vec<FieldRule>,
    /// Line of `spec.profile` in the cluster file, for resolution errors.
    pub profile_line: usize,
}

impl Cluster {
    /// Tags are `key:value` strings (or bare keys); a filter matches a whole tag exactly, or every
    /// tag with that key when the filter has no `:`.
    pub fn has_tag(&self, filter: &str) -> bool {
        has_tag(&self.tags, filter)
    }
}

pub use crate::names::has_tag;

/// The profile version a cluster runs, and whether a newer one exists that it does not take.
#[derive(Debug, Clone)]
pub struct Resolution<'m> {
    pub profile: &'m Profile,
    /// The highest version above the resolved one, when the cluster's pin or range excludes it.
    pub update_available: Option<&'m Version>,
}

impl Model {
    pub fn profile(&self, name: &str, version: &Version) -> Option<&Profile> {
        self.profiles.get(name)?.iter().find(|p| &p.version == version)
    }

    /// Resolves a cluster's profile: the exact version, or the highest matching its range.
    pub fn resolve<'m>(&'m self, cluster: &Cluster) -> Result<Resolution<'m>, Diagnostic> {
        let where_ = |d: Diagnostic| {
            d.in_file(&cluster.file).at_line(cluster.profile_line).about(format!("cluster {}", cluster.name))
        };
        let Some(versions) = self.profiles.get(&cluster.profile) else {
            let known: Vec<_> = self.profiles.keys().map(String::as_str).collect();
            return Err(where_(Diagnostic::new(
                Code::Unresolved,
                format!("profile `{}` does not exist", cluster.profile),
            ))
            .help(if known.is_empty() {
                "add it under profiles/<name>/<version>/profile.yaml".to_string()
            } else {
                format!("known profiles: {}", known.join(", "))
            }));
        };
        let Some(profile) = versions.iter().rev().find(|p| cluster.version.matches(&p.version)) else {
            let available: Vec<_> = versions.iter().map(|p| p.version.to_string()).collect();
            let what = match cluster.version {
                VersionSpec::Exact(_) => "version",
                VersionSpec::Range(_) => "range",
            };
            return Err(where_(Diagnostic::new(
                Code::Unresolved,
                format!("no version of profile `{}` satisfies {what} `{}`", cluster.profile, cluster.version),
            ))
            .help(format!("available versions: {}", available.join(", "))));
        };
        let newest = &versions.last().expect("a profile has at least one version").version;
        let update_available = (newest > &profile.version).then_some(newest);
        Ok(Resolution { profile, update_available })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn profile(version: &str) -> Profile {
        Profile {
            name: "web".into(),
            version: Version::parse(version).unwrap(),
            description: None,
            file: format!("profiles/web/{version}/profile.yaml"),
            layers: vec![],
        }
    }

    fn cluster(version: &str) -> Cluster {
        Cluster {
            name: "c".into(),
            file: "clusters/c.yaml".into(),
            description: None,
            tags: vec!["service:web".into(), "env:prod".into()],
            profile: "web".into(),
            version: VersionSpec::parse(version).unwrap(),
            overrides: BTreeMap::new(),
            updates: UpdatePolicy::Auto,
            window: None,
            drift: DriftPolicy::Correct,
            target: "c".into(),
            kube_version: None,
            api_versions: vec![],
            ignore: vec![],
            sensitive: vec![],
            profile_line: 7,
        }
    }

    fn model() -> Model {
        let mut model = Model::default();
        model.profiles.insert("web".into(), ["1.0.0", "1.1.0", "1.1.3", "2.0.0"].map(profile).to_vec());
        model
    }

    #[test]
    fn a_bare_version_pins_exactly() {
        let model = model();
        let r = model.resolve(&cluster("1.1.0")).unwrap();
        assert_eq!(r.profile.version.to_string(), "1.1.0");
        assert_eq!(r.update_available.map(|v| v.to_string()).as_deref(), Some("2.0.0"));
    }

    #[test]
    fn a_range_takes_the_highest_match_and_reports_newer_outside_it() {
        let model = model();
        let r = model.resolve(&cluster("~1.1")).unwrap();
        assert_eq!(r.profile.version.to_string(), "1.1.3");
        assert_eq!(r.update_available.map(|v| v.to_string()).as_deref(), Some("2.0.0"));
        let r = model.resolve(&cluster(">=1.0.0")).unwrap();
        assert_eq!(r.profile.version.to_string(), "2.0.0");
        assert_eq!(r.update_available, None);
    }

    #[test]
    fn unsatisfiable_ranges_and_unknown_profiles_name_the_cluster_file_and_line() {
        let model = model();
        let d = model.resolve(&cluster("^3")).unwrap_err();
        assert_eq!(d.code, Code::Unresolved);
        assert_eq!(d.location().as_deref(), Some("clusters/c.yaml:7"));
        assert!(d.help.unwrap().contains("1.0.0, 1.1.0, 1.1.3, 2.0.0"));
        let mut c = cluster("1.0.0");
        c.profile = "nope".into();
        assert!(model.resolve(&c).unwrap_err().message.contains("`nope` does not exist"));
    }

    #[test]
    fn tag_filters_match_whole_tags_or_keys() {
        let c = cluster("1.0.0");
        assert!(c.has_tag("service:web"));
        assert!(c.has_tag("env"));
        assert!(!c.has_tag("service:api"));
        assert!(!c.has_tag("serv"));
    }
}
