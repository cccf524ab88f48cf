//! What rendering a profile version reads: a tree and a profile in, the paths whose content can
//! change what it renders out.
//!
//! ```text
//!   profile.yaml ───────────────────────────────┐
//!   manifests layer: its source (file or directory) ┼──> paths ──> a plan renders a cluster only
//!   helm layer: its chart, its valuesFiles        │              when a changed path is among
//!   kustomize layer: every kustomization and file ┘              them (or its own file changed)
//!                    it names, wherever they are
//! ```
//!
//! A path stands for itself and everything below it. Symlinks make the set larger than it looks
//! (a link inside a source can lead anywhere in the repository, and a link changed elsewhere can
//! change where it leads): when a source reaches anything through a link, the profile version is
//! taken to read the whole repository. That is conservative, and exact otherwise.

use crate::diag::Diagnostics;
use crate::model::{LayerKind, Model, Profile};
use crate::source::{self, EntryKind, Tree};

use super::kustomization;

/// What a profile version's rendering reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reads {
    /// Anything in the repository (a source reaches something through a symlink).
    Everything,
    /// These paths and everything below them.
    Paths(Vec<String>),
}

impl Reads {
    /// Whether a change to the paths `touched` says are changed can change what is read.
    pub fn touched_by(&self, changes: &source::Changes) -> bool {
        match self {
            Reads::Everything => !changes.is_empty(),
            Reads::Paths(paths) => paths.iter().any(|p| changes.touches(p)),
        }
    }
}

/// The paths `profile`'s rendering reads in `tree`. A source that does not resolve reads
/// [`Reads::Everything`]: whatever made it fail may be fixed anywhere.
pub fn reads(tree: &dyn Tree, profile: &Profile) -> Reads {
    let mut paths = vec![profile.file.clone()];
    for layer in &profile.layers {
        let reached = match layer.kind {
            LayerKind::Manifests => below(tree, &layer.source),
            // The chart and the values files given to helm before the layer's own values.
            LayerKind::Helm => {
                std::iter::once(&layer.source).chain(&layer.values_files).try_fold(Vec::new(), |mut all, path| {
                    all.extend(below(tree, path)?);
                    Some(all)
                })
            }
            LayerKind::Kustomize => kustomization::reached(tree, &layer.source),
        };
        match reached {
            Some(more) => paths.extend(more),
            None => return Reads::Everything,
        }
    }
    paths.sort();
    paths.dedup();
    // A path stands for everything below it: what is below another need not be listed.
    let below_another = |p: &String| {
        paths.iter().any(|q| p.len() > q.len() && p.starts_with(q.as_str()) && p.as_bytes()[q.len()] == b'/')
    };
    let kept = paths.iter().filter(|p| !below_another(p)).cloned().collect();
    Reads::Paths(kept)
}

/// The paths the tools of `model`'s layers (helm and kustomize, of every profile version) read
/// from a checkout: what a checkout must hold decrypted. `None` when a source reaches anything
/// through a link (then anywhere).
pub fn tool_reads(tree: &dyn Tree, model: &crate::model::Model) -> Option<Vec<String>> {
    let mut paths = Vec::new();
    for layer in model.profiles.values().flatten().flat_map(|p| &p.layers) {
        match layer.kind {
            LayerKind::Manifests => {}
            LayerKind::Helm => {
                for path in std::iter::once(&layer.source).chain(&layer.values_files) {
                    paths.extend(below(tree, path)?);
                }
            }
            LayerKind::Kustomize => paths.extend(kustomization::reached(tree, &layer.source)?),
        }
    }
    paths.sort();
    paths.dedup();
    Some(paths)
}

/// A source and everything below it, when no link is on the way; `None` otherwise.
fn below(tree: &dyn Tree, path: &str) -> Option<Vec<String>> {
    let written = source::join("", path)?;
    let (real, kind) = source::resolve(tree, path).ok()?;
    if real != written {
        return None;
    }
    if kind == EntryKind::Dir {
        let files = source::walk_files(tree, path).ok()?;
        if files.iter().any(|(shown, real)| shown != real) {
            return None;
        }
    }
    Some(vec![real])
}

/// Every SOPS file the model's profiles read decrypts: an `error[decrypt]` for each that does
/// not. Files strata does not read (another team's secrets in the same repository) are not
/// looked at.
pub fn decrypts(tree: &dyn Tree, model: &Model) -> Result<(), Diagnostics> {
    let mut paths: Vec<String> = Vec::new();
    for profile in model.profiles.values().flatten() {
        match reads(tree, profile) {
            Reads::Everything => {
                paths = vec![String::new()];
                break;
            }
            Reads::Paths(read) => paths.extend(read),
        }
    }
    paths.sort();
    paths.dedup();
    crate::source::sops::check_paths(tree, &paths)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::source::DirTree;

    fn tree(files: &[&str], links: &[(&str, &str)]) -> (tempfile::TempDir, DirTree, crate::model::Model) {
        let dir = tempfile::tempdir().unwrap();
        let write = |path: &str, text: &str| {
            let path = dir.path().join(path);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, text).unwrap();
        };
        for file in files {
            write(file, "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: x}\n");
        }
        for (target, link) in links {
            std::os::unix::fs::symlink(target, dir.path().join(link)).unwrap();
        }
        write(
            "profiles/p/1.0.0/profile.yaml",
            "apiVersion: strata.dev/v1\nkind: Profile\nmetadata: {name: p, version: 1.0.0}\nspec:\n  layers:\n  - {name: app, type: manifests, source: packs/app}\n  - {name: k, type: kustomize, source: packs/k/overlay}\n",
        );
        write("packs/k/overlay/kustomization.yaml", "resources: [../base, extra.yaml]\n");
        write("packs/k/overlay/extra.yaml", "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: e}\n");
        write("packs/k/base/kustomization.yaml", "resources: [cm.yaml]\n");
        write("packs/k/base/cm.yaml", "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: b}\n");
        let tree = DirTree::new(dir.path());
        let model = crate::repo::load(&tree).unwrap();
        (dir, tree, model)
    }

    #[test]
    fn a_profile_reads_its_file_its_sources_and_what_its_kustomizations_name() {
        let (_dir, tree, model) = tree(&["packs/app/a.yaml", "packs/other/b.yaml"], &[]);
        let reads = reads(&tree, &model.profiles["p"][0]);
        assert_eq!(
            reads,
            Reads::Paths(vec![
                "packs/app".into(),
                "packs/k/base".into(),
                "packs/k/overlay".into(),
                "profiles/p/1.0.0/profile.yaml".into(),
            ])
        );
    }

    #[test]
    fn a_helm_layer_reads_its_chart_and_its_values_files() {
        let mut tree = crate::source::MemTree::new();
        tree.file(
            "profiles/m/1.0.0/profile.yaml",
            "apiVersion: strata.dev/v1\nkind: Profile\nmetadata: {name: m, version: 1.0.0}\nspec:\n  layers:\n  - {name: m, type: helm, source: charts/m, valuesFiles: [values/m/base.yaml, values/eu.yaml]}\n",
        )
        .file("charts/m/Chart.yaml", "apiVersion: v2\nname: m\nversion: 0.1.0\n")
        .file("values/m/base.yaml", "a: 1\n")
        .file("values/eu.yaml", "b: 1\n")
        .file("values/us.yaml", "b: 2\n");
        let model = crate::repo::load(&tree).unwrap();
        assert_eq!(
            reads(&tree, &model.profiles["m"][0]),
            Reads::Paths(vec![
                "charts/m".into(),
                "profiles/m/1.0.0/profile.yaml".into(),
                "values/eu.yaml".into(),
                "values/m/base.yaml".into(),
            ])
        );
    }

    #[test]
    fn a_source_that_reaches_through_a_link_reads_everything() {
        let (_dir, tree, model) = tree(&["packs/shared/a.yaml"], &[("shared", "packs/app")]);
        assert_eq!(reads(&tree, &model.profiles["p"][0]), Reads::Everything);
    }
}
