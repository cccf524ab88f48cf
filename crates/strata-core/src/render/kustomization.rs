//! The static check of a kustomize layer, before kustomize runs: a tree and the layer's
//! directory in, every problem out.
//!
//! ```text
//!   kustomization.yaml ──parse (strict schema)──> every path field ──resolve (as the filesystem
//!        ▲                                              │            would, inside the tree)
//!        └──── directories it pulls in (resources, ─────┘
//!              components, bases, generator dirs)
//! ```
//!
//! kustomize fetches whatever it cannot find locally (`github.com/org/repo//path?ref=v1`,
//! `https://…`, `git@…`), loads files over HTTP, and follows `..` wherever it leads. So every
//! kustomization the layer reaches is parsed with kustomize's own schema, unknown fields refused
//! (a field not checked here cannot smuggle a path), and every field that names a file or
//! directory must resolve — through links, as the kernel resolves them — to something that exists
//! inside the repository. Anything remote, and kustomize's helm inflation (which runs helm and
//! downloads charts), is refused. This is the first of three layers: kustomize then runs in a
//! checkout holding only the repository, inside a sandbox ([`super::sandbox`]).

use std::collections::HashSet;

use serde::Deserialize;
use serde::de::IgnoredAny;
use serde_json::Value;
use serde_saphyr::Spanned;

use crate::diag::{Code, Diagnostic, Diagnostics};
use crate::source::read_diag;
use crate::source::{self, EntryKind, ReadError, Tree};
use crate::yaml;

/// The names kustomize looks for in a directory, in its order.
pub const FILE_NAMES: [&str; 3] = ["kustomization.yaml", "kustomization.yml", "Kustomization"];

/// A kustomization as kustomize's `types.Kustomization` defines it (kustomize v5). Fields that
/// name no file are accepted as they are; fields that do are typed, so their paths are checked.
// Fields that name no file are accepted as kustomize defines them and never read.
#[allow(dead_code)]
#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct Kustomization {
    #[serde(default)]
    api_version: Option<IgnoredAny>,
    #[serde(default)]
    kind: Option<IgnoredAny>,
    #[serde(default)]
    metadata: Option<IgnoredAny>,
    #[serde(default)]
    openapi: Option<OpenApi>,
    #[serde(default)]
    name_prefix: Option<IgnoredAny>,
    #[serde(default)]
    name_suffix: Option<IgnoredAny>,
    #[serde(default)]
    namespace: Option<IgnoredAny>,
    #[serde(default)]
    common_labels: Option<IgnoredAny>,
    #[serde(default)]
    labels: Option<IgnoredAny>,
    #[serde(default)]
    common_annotations: Option<IgnoredAny>,
    #[serde(default)]
    patches_strategic_merge: Vec<Spanned<String>>,
    #[serde(default)]
    patches_json6902: Vec<PatchRef>,
    #[serde(default)]
    patches: Vec<PatchRef>,
    #[serde(default)]
    images: Option<IgnoredAny>,
    #[serde(default)]
    image_tags: Option<IgnoredAny>,
    #[serde(default)]
    replacements: Vec<ReplacementRef>,
    #[serde(default)]
    replicas: Option<IgnoredAny>,
    #[serde(default)]
    vars: Option<IgnoredAny>,
    #[serde(default)]
    sort_options: Option<IgnoredAny>,
    #[serde(default)]
    resources: Vec<Spanned<String>>,
    #[serde(default)]
    components: Vec<Spanned<String>>,
    #[serde(default)]
    crds: Vec<Spanned<String>>,
    #[serde(default)]
    bases: Vec<Spanned<String>>,
    #[serde(default)]
    config_map_generator: Vec<GeneratorArgs>,
    #[serde(default)]
    secret_generator: Vec<GeneratorArgs>,
    #[serde(default)]
    helm_globals: Option<Spanned<IgnoredAny>>,
    #[serde(default)]
    helm_charts: Option<Spanned<IgnoredAny>>,
    #[serde(default)]
    helm_chart_inflation_generator: Option<Spanned<IgnoredAny>>,
    #[serde(default)]
    generator_options: Option<IgnoredAny>,
    #[serde(default)]
    configurations: Vec<Spanned<String>>,
    #[serde(default)]
    generators: Vec<Spanned<String>>,
    #[serde(default)]
    transformers: Vec<Spanned<String>>,
    #[serde(default)]
    validators: Vec<Spanned<String>>,
    #[serde(default)]
    inventory: Option<IgnoredAny>,
    #[serde(default)]
    build_metadata: Option<IgnoredAny>,
}

// Fields that name no file are accepted as kustomize defines them and never read.
#[allow(dead_code)]
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct OpenApi {
    #[serde(default)]
    path: Option<Spanned<String>>,
    #[serde(default)]
    version: Option<IgnoredAny>,
}

// Fields that name no file are accepted as kustomize defines them and never read.
#[allow(dead_code)]
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PatchRef {
    #[serde(default)]
    path: Option<Spanned<String>>,
    #[serde(default)]
    patch: Option<IgnoredAny>,
    #[serde(default)]
    target: Option<IgnoredAny>,
    #[serde(default)]
    options: Option<IgnoredAny>,
}

// Fields that name no file are accepted as kustomize defines them and never read.
#[allow(dead_code)]
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ReplacementRef {
    #[serde(default)]
    path: Option<Spanned<String>>,
    #[serde(default)]
    source: Option<IgnoredAny>,
    #[serde(default)]
    targets: Option<IgnoredAny>,
}

/// configMapGenerator and secretGenerator entries (kustomize's `GeneratorArgs`).
// Fields that name no file are accepted as kustomize defines them and never read.
#[allow(dead_code)]
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct GeneratorArgs {
    #[serde(default)]
    name: Option<IgnoredAny>,
    #[serde(default)]
    namespace: Option<IgnoredAny>,
    #[serde(default)]
    behavior: Option<IgnoredAny>,
    #[serde(default)]
    literals: Option<IgnoredAny>,
    #[serde(default)]
    options: Option<IgnoredAny>,
    /// A Secret's type.
    #[serde(default, rename = "type")]
    kind: Option<IgnoredAny>,
    #[serde(default)]
    files: Vec<Spanned<String>>,
    #[serde(default)]
    envs: Vec<Spanned<String>>,
    #[serde(default)]
    env: Option<Spanned<String>>,
}

/// What a path field must name.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Want {
    File,
    /// A resource: a manifest file or a directory holding a kustomization.
    FileOrDir,
}

/// Whether a reference looks like something kustomize would fetch rather than read.
pub fn is_remote(value: &str) -> bool {
    let lower = value.to_ascii_lowercase();
    lower.contains("://")
        || lower.starts_with("git@")
        || lower.starts_with("git::")
        || lower.starts_with("ssh:")
        || lower.starts_with("http:")
        || lower.starts_with("https:")
        || lower.contains("?ref=")
        || lower.contains("?version=")
        || lower.contains("?timeout=")
        || lower.contains("?submodules=")
        || ["github.com/", "gitlab.com/", "bitbucket.org/", "dev.azure.com/"].iter().any(|host| lower.starts_with(host))
}

/// Checks the kustomization in `dir` (a path in the tree) and everything it pulls in.
/// `object` names the layer for diagnostics.
pub fn check(tree: &dyn Tree, dir: &str, object: &str) -> Result<(), Diagnostics> {
    let checker = checked(tree, dir, object);
    checker.diags.into_result(())
}

/// Every path kustomize reads building `dir`: the directories of the kustomizations it reaches
/// and each file they name, as real paths. `None` when one of them is reached through a symlink
/// (where it leads may change with the link) or the kustomization does not check.
pub fn reached(tree: &dyn Tree, dir: &str) -> Option<Vec<String>> {
    let checker = checked(tree, dir, "");
    (checker.diags.is_empty() && !checker.linked).then_some(checker.reached)
}

fn checked<'a>(tree: &'a dyn Tree, dir: &str, object: &'a str) -> Checker<'a> {
    let mut checker =
        Checker { tree, object, diags: Diagnostics::new(), seen: HashSet::new(), reached: Vec::new(), linked: false };
    match source::resolve(tree, dir) {
        Ok((real, EntryKind::Dir)) => {
            checker.linked |= source::join("", dir).as_deref() != Some(real.as_str());
            checker.kustomization(&real)
        }
        Ok(_) => checker.diags.push(
            Diagnostic::new(Code::Path, format!("`{dir}` is not a directory"))
                .in_file(dir)
                .about(object)
                .help("a kustomize layer's source is the directory holding kustomization.yaml"),
        ),
        Err(e) => checker.diags.push(read_diag(dir, e).about(object)),
    }
    checker
}

struct Checker<'a> {
    tree: &'a dyn Tree,
    object: &'a str,
    diags: Diagnostics,
    /// Kustomization directories checked already (real paths): bases shared by several overlays
    /// are checked once, and a cycle ends.
    seen: HashSet<String>,
    /// Real paths of what kustomize reads: kustomization directories and the files they name.
    reached: Vec<String>,
    /// Whether something was reached through a symlink.
    linked: bool,
}

/// Where a finding is: the kustomization file, the line, and the field.
struct At<'f> {
    file: &'f str,
    line: usize,
    field: &'f str,
}

impl Checker<'_> {
    fn push(&mut self, at: &At, code: Code, message: String, help: &str) {
        self.diags.push(
            Diagnostic::new(code, format!("{}: {message}", at.field))
                .in_file(at.file)
                .at_line(at.line)
                .about(self.object)
                .help(help),
        );
    }

    /// The kustomization file of a directory (real path), as kustomize picks it.
    fn kustomization(&mut self, dir: &str) {
        if !self.seen.insert(dir.to_string()) {
            return;
        }
        self.reached.push(dir.to_string());
        let present: Vec<String> = FILE_NAMES
            .iter()
            .map(|name| source::join(dir, name).unwrap_or_default())
            .filter(|path| self.tree.kind(path).is_some())
            .collect();
        let file = match present.as_slice() {
            [one] => one.clone(),
            [] => {
                return self.diags.push(
                    Diagnostic::new(Code::Path, format!("`{dir}` has no kustomization.yaml"))
                        .in_file(if dir.is_empty() { "." } else { dir })
                        .about(self.object)
                        .help("a directory kustomize builds holds a kustomization.yaml"),
                );
            }
            several => {
                return self.diags.push(
                    Diagnostic::new(
                        Code::Path,
                        format!("`{dir}` has more than one kustomization file: {}", several.join(", ")),
                    )
                    .in_file(&several[0])
                    .about(self.object)
                    .help("keep one; kustomize refuses a directory with several"),
                );
            }
        };
        let text = match source::read_file(self.tree, &file) {
            Ok(bytes) => String::from_utf8_lossy(&bytes).into_owned(),
            Err(e) => return self.diags.push(read_diag(&file, e).about(self.object)),
        };
        let k: Kustomization = match yaml::parse(&text) {
            Ok(k) => k,
            Err(e) => {
                let code = if e.message.contains("unknown field") { Code::Schema } else { Code::Yaml };
                return self.diags.push(
                    Diagnostic::new(code, e.message)
                        .in_file(&file)
                        .at_line(e.line)
                        .about(self.object)
                        .help("strata reads kustomizations with kustomize's schema and refuses fields it does not know, so none can name a file unchecked"),
                );
            }
        };
        self.fields(dir, &file, k);
    }

    fn fields(&mut self, dir: &str, file: &str, k: Kustomization) {
        for (field, inflation) in [
            ("helmCharts", &k.helm_charts),
            ("helmGlobals", &k.helm_globals),
            ("helmChartInflationGenerator", &k.helm_chart_inflation_generator),
        ] {
            if let Some(spanned) = inflation {
                let at = At { file, line: spanned.referenced.line() as usize, field };
                self.push(
                    &at,
                    Code::Remote,
                    "kustomize's helm inflation runs helm and downloads charts".to_string(),
                    "render the chart with a helm layer (its chart vendored in the repository) instead",
                );
            }
        }
        for (field, list) in [("resources", &k.resources), ("bases", &k.bases), ("components", &k.components)] {
            for entry in list {
                self.reference(dir, file, field, entry, Want::FileOrDir, true);
            }
        }
        for (field, list) in [("crds", &k.crds), ("configurations", &k.configurations)] {
            for entry in list {
                self.reference(dir, file, field, entry, Want::File, false);
            }
        }
        for entry in &k.patches_strategic_merge {
            // An entry is a file's path or, with a line break, an inline patch.
            if !entry.value.contains('\n') {
                self.reference(dir, file, "patchesStrategicMerge", entry, Want::File, false);
            }
        }
        for (field, list) in [("patches", &k.patches), ("patchesJson6902", &k.patches_json6902)] {
            for path in list.iter().filter_map(|p| p.path.as_ref()) {
                self.reference(dir, file, field, path, Want::File, false);
            }
        }
        for path in k.replacements.iter().filter_map(|r| r.path.as_ref()) {
            self.reference(dir, file, "replacements", path, Want::File, false);
        }
        if let Some(path) = k.openapi.as_ref().and_then(|o| o.path.as_ref()) {
            self.reference(dir, file, "openapi.path", path, Want::File, false);
        }
        for (field, generators) in
            [("configMapGenerator", &k.config_map_generator), ("secretGenerator", &k.secret_generator)]
        {
            for args in generators {
                self.generator_files(dir, file, field, args);
            }
        }
        for (field, list) in
            [("generators", &k.generators), ("transformers", &k.transformers), ("validators", &k.validators)]
        {
            for entry in list {
                self.plugin(dir, file, field, entry);
            }
        }
    }

    fn generator_files(&mut self, dir: &str, file: &str, field: &str, args: &GeneratorArgs) {
        for entry in &args.files {
            // `key=path` or `path`.
            let path = entry.value.split_once('=').map(|(_, path)| path).unwrap_or(&entry.value);
            let entry = Spanned { value: path.to_string(), referenced: entry.referenced, defined: entry.defined };
            self.reference(dir, file, field, &entry, Want::File, false);
        }
        for entry in args.envs.iter().chain(&args.env) {
            self.reference(dir, file, field, entry, Want::File, false);
        }
    }

    /// A generators/transformers/validators entry: inline configuration, a file of plugin
    /// configurations, or a directory whose kustomization produces them.
    fn plugin(&mut self, dir: &str, file: &str, field: &str, entry: &Spanned<String>) {
        let line = entry.referenced.line() as usize;
        if entry.value.contains('\n') {
            return self.plugin_configs(dir, file, line, field, &entry.value);
        }
        let Some((real, kind)) = self.reference(dir, file, field, entry, Want::FileOrDir, true) else { return };
        if kind == EntryKind::File {
            match source::read_file(self.tree, &real) {
                Ok(bytes) => self.plugin_configs(dir, &real, 0, field, &String::from_utf8_lossy(&bytes)),
                Err(e) => self.diags.push(read_diag(&real, e).about(self.object)),
            }
        }
    }

    /// Plugin configurations are kustomize's built-in generators and transformers; the ones that
    /// read files read them relative to the kustomization (`dir`), and are checked like its own
    /// fields. Helm inflation, KRM functions and other plugins are refused.
    fn plugin_configs(&mut self, dir: &str, file: &str, line: usize, field: &str, text: &str) {
        let docs = match yaml::parse_documents(text) {
            Ok(docs) => docs,
            Err(e) => {
                let at = At { file, line: if line > 0 { line } else { e.line }, field };
                return self.push(&at, Code::Yaml, e.message, "fix the plugin configuration");
            }
        };
        for doc in docs {
            let at_line = if line > 0 { line } else { doc.line };
            let at = At { file, line: at_line, field };
            let kind = doc.value["kind"].as_str().unwrap_or_default().to_string();
            let annotations = &doc.value["metadata"]["annotations"];
            if ["config.kubernetes.io/function", "config.k8s.io/function"].iter().any(|a| !annotations[a].is_null()) {
                self.push(
                    &at,
                    Code::Schema,
                    format!("`{kind}` is a KRM function (exec or container)"),
                    "strata runs kustomize's built-in plugins only",
                );
                continue;
            }
            let paths: Vec<&Value> = match kind.as_str() {
                "HelmChartInflationGenerator" => {
                    self.push(
                        &at,
                        Code::Remote,
                        "HelmChartInflationGenerator runs helm and downloads charts".to_string(),
                        "render the chart with a helm layer (its chart vendored in the repository) instead",
                    );
                    continue;
                }
                "ConfigMapGenerator" | "SecretGenerator" => {
                    let v = &doc.value;
                    let files = v["files"].as_array().into_iter().flatten();
                    let envs =
                        v["envs"].as_array().into_iter().flatten().chain(Some(&v["env"]).filter(|e| !e.is_null()));
                    files.chain(envs).collect()
                }
                "PatchTransformer" | "PatchJson6902Transformer" => vec![&doc.value["path"]],
                "PatchStrategicMergeTransformer" => doc.value["paths"].as_array().into_iter().flatten().collect(),
                "ReplacementTransformer" => {
                    doc.value["replacements"].as_array().into_iter().flatten().map(|r| &r["path"]).collect()
                }
                "AnnotationsTransformer"
                | "LabelTransformer"
                | "NamespaceTransformer"
                | "PrefixSuffixTransformer"
                | "PrefixTransformer"
                | "SuffixTransformer"
                | "ImageTagTransformer"
                | "ReplicaCountTransformer"
                | "HashTransformer"
                | "ValueAddTransformer"
                | "SortOrderTransformer"
                | "IAMPolicyGenerator" => vec![],
                other => {
                    self.push(
                        &at,
                        Code::Schema,
                        format!("`{other}` is not one of kustomize's built-in plugins"),
                        "strata runs kustomize's built-in generators and transformers only",
                    );
                    continue;
                }
            };
            for value in paths.into_iter().filter(|v| !v.is_null()) {
                let Some(text) = value.as_str() else {
                    self.push(
                        &at,
                        Code::Schema,
                        format!("`{kind}` names a file with a non-string"),
                        "give the path as a string",
                    );
                    continue;
                };
                let path = text.split_once('=').map(|(_, p)| p).unwrap_or(text);
                self.path(dir, &at, path, Want::File, false);
            }
        }
    }

    fn reference(
        &mut self,
        dir: &str,
        file: &str,
        field: &str,
        entry: &Spanned<String>,
        want: Want,
        recurse: bool,
    ) -> Option<(String, EntryKind)> {
        let at = At { file, line: entry.referenced.line() as usize, field };
        self.path(dir, &at, &entry.value, want, recurse)
    }

    /// Checks one path named in a kustomization in `dir`; a directory is followed into when
    /// `recurse` is set. Returns where it resolved to.
    fn path(&mut self, dir: &str, at: &At, value: &str, want: Want, recurse: bool) -> Option<(String, EntryKind)> {
        let shown: String = value.chars().take(200).flat_map(char::escape_debug).collect();
        if is_remote(value) {
            self.push(
                at,
                Code::Remote,
                format!("`{shown}` is remote: strata renders only what the repository holds and never fetches"),
                "vendor what it refers to into the repository and refer to it by a relative path",
            );
            return None;
        }
        if source::components(value).is_none() {
            self.push(
                at,
                Code::Path,
                format!("`{shown}` is an absolute path"),
                "refer to files by paths relative to the kustomization, inside the repository",
            );
            return None;
        }
        let joined = if dir.is_empty() { value.to_string() } else { format!("{dir}/{value}") };
        match source::resolve(self.tree, &joined) {
            Ok((real, kind)) => {
                self.linked |= source::join("", &joined).as_deref() != Some(real.as_str());
                self.reached.push(real.clone());
                if want == Want::File && kind != EntryKind::File {
                    self.push(
                        at,
                        Code::Path,
                        format!("`{shown}` is a directory, where a file is expected"),
                        "name the file",
                    );
                    return None;
                }
                if recurse && kind == EntryKind::Dir {
                    self.kustomization(&real);
                }
                Some((real, kind))
            }
            Err(ReadError::Escapes { through, .. }) => {
                let how = match through {
                    Some(link) => format!(" through the symlink `{link}`"),
                    None => String::new(),
                };
                self.push(
                    at,
                    Code::Path,
                    format!("`{shown}` leads outside the repository{how}"),
                    "kustomize layers may refer only to files inside the repository (as the filesystem resolves them): copy what you need in",
                );
                None
            }
            Err(ReadError::NotFound) => {
                self.push(
                    at,
                    Code::Path,
                    format!("`{shown}` does not exist in the repository"),
                    "fix the path (relative to the kustomization); kustomize would try to fetch a reference it cannot find, which strata does not allow",
                );
                None
            }
            Err(e) => {
                self.push(at, Code::Path, format!("`{shown}`: {e}"), "fix the path or the links along it");
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::source::DirTree;

    fn check_files(files: &[(&str, &str)], links: &[(&str, &str)]) -> Vec<String> {
        let outer = tempfile::tempdir().unwrap();
        let root = outer.path().join("repo");
        std::fs::create_dir_all(&root).unwrap();
        std::fs::create_dir_all(outer.path().join("outside")).unwrap();
        std::fs::write(outer.path().join("outside/kustomization.yaml"), "resources: []\n").unwrap();
        for (path, text) in files {
            let path = root.join(path);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, text).unwrap();
        }
        for (target, link) in links {
            std::os::unix::fs::symlink(target, root.join(link)).unwrap();
        }
        let tree = DirTree::new(&root);
        match check(&tree, "app", "layer app") {
            Ok(()) => vec![],
            Err(d) => d.iter().map(|d| d.to_string().lines().next().unwrap().to_string()).collect(),
        }
    }

    #[test]
    fn a_layout_with_bases_patches_and_generators_passes() {
        let found = check_files(
            &[
                ("base/kustomization.yaml", "resources: [d.yaml]\nconfigurations: [conf.yaml]\n"),
                ("base/d.yaml", "kind: X\n"),
                ("base/conf.yaml", "nameReference: []\n"),
                (
                    "app/kustomization.yaml",
                    "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\nresources: [../base, extra.yaml]\nnamePrefix: p-\npatches:\n- path: patch.yaml\n- patch: |\n    - op: add\n      path: /x\n      value: 1\n  target: {kind: X}\npatchesStrategicMerge:\n- patch.yaml\n- |\n  kind: X\nconfigMapGenerator:\n- name: c\n  files: [key=data.txt, data.txt]\n  envs: [vars.env]\n  literals: [a=b]\nreplacements:\n- path: repl.yaml\n- source: {kind: X}\n  targets: []\ntransformers: [labels.yaml]\nimages: [{name: a, newTag: b}]\n",
                ),
                ("app/extra.yaml", "kind: X\n"),
                ("app/patch.yaml", "kind: X\n"),
                ("app/data.txt", "x"),
                ("app/vars.env", "A=b"),
                ("app/repl.yaml", "source: {kind: X}\n"),
                (
                    "app/labels.yaml",
                    "apiVersion: builtin\nkind: LabelTransformer\nmetadata: {name: l}\nlabels: {a: b}\n",
                ),
            ],
            &[],
        );
        assert!(found.is_empty(), "{found:#?}");
    }

    #[test]
    fn every_escape_and_remote_reference_is_refused() {
        let found = check_files(
            &[(
                "app/kustomization.yaml",
                "resources:\n- ../../outside\n- /etc/kubernetes\n- https://example.com/x.yaml\n- github.com/org/repo//deploy?ref=v1\n- git@github.com:org/repo.git\n- missing-dir\n- linked\ncomponents: [../../outside]\nconfigMapGenerator:\n- name: c\n  files: [passwd=../../../../etc/passwd]\n  env: ../../outside/kustomization.yaml\npatches:\n- path: http://169.254.169.254/latest\nhelmCharts:\n- name: x\n  repo: https://charts.example.com\n",
            )],
            &[("../up/../outside", "app/linked"), ("..", "up")],
        );
        let expected = [
            "error[path]: app/kustomization.yaml:2: layer app: resources: `../../outside` leads outside the repository",
            "error[path]: app/kustomization.yaml:3: layer app: resources: `/etc/kubernetes` is an absolute path",
            "error[remote]: app/kustomization.yaml:4: layer app: resources: `https://example.com/x.yaml` is remote",
            "error[remote]: app/kustomization.yaml:5: layer app: resources: `github.com/org/repo//deploy?ref=v1` is remote",
            "error[remote]: app/kustomization.yaml:6: layer app: resources: `git@github.com:org/repo.git` is remote",
            "error[path]: app/kustomization.yaml:7: layer app: resources: `missing-dir` does not exist in the repository",
            "error[path]: app/kustomization.yaml:8: layer app: resources: `linked` leads outside the repository through the symlink `up`",
            "error[path]: app/kustomization.yaml:9: layer app: components: `../../outside` leads outside the repository",
            "error[path]: app/kustomization.yaml:12: layer app: configMapGenerator: `../../../../etc/passwd` leads outside",
            "error[path]: app/kustomization.yaml:13: layer app: configMapGenerator: `../../outside/kustomization.yaml` leads outside",
            "error[remote]: app/kustomization.yaml:15: layer app: patches: `http://169.254.169.254/latest` is remote",
            "error[remote]: app/kustomization.yaml:17: layer app: helmCharts: kustomize's helm inflation runs helm",
        ];
        for e in expected {
            assert!(found.iter().any(|f| f.starts_with(e)), "expected {e:?} in {found:#?}");
        }
        assert_eq!(found.len(), expected.len(), "{found:#?}");
    }

    #[test]
    fn bases_are_checked_too_and_unknown_fields_are_refused() {
        let found = check_files(
            &[
                ("app/kustomization.yaml", "resources: [../base]\n"),
                ("base/kustomization.yaml", "resources: [../app]\nsneaky: [../../outside]\n"),
                ("other/kustomization.yaml", "transformers: [t.yaml]\n"),
            ],
            &[],
        );
        assert_eq!(found.len(), 1, "{found:#?}");
        assert!(
            found[0].starts_with("error[schema]: base/kustomization.yaml:2: layer app: unknown field `sneaky`"),
            "{found:#?}"
        );
    }

    #[test]
    fn plugins_that_run_programs_or_read_outside_are_refused() {
        let found = check_files(
            &[
                (
                    "app/kustomization.yaml",
                    "generators: [gen.yaml]\ntransformers:\n- |\n  apiVersion: builtin\n  kind: PatchTransformer\n  metadata: {name: p}\n  path: ../../outside/kustomization.yaml\n",
                ),
                (
                    "app/gen.yaml",
                    "apiVersion: builtin\nkind: HelmChartInflationGenerator\nmetadata: {name: h}\n---\napiVersion: x\nkind: Exec\nmetadata:\n  name: e\n  annotations:\n    config.kubernetes.io/function: |\n      exec: {path: /bin/sh}\n---\napiVersion: builtin\nkind: SecretGenerator\nmetadata: {name: s}\nfiles: [../../../etc/shadow]\n",
                ),
            ],
            &[],
        );
        let expected = [
            "error[path]: app/kustomization.yaml:4: layer app: transformers: `../../outside/kustomization.yaml` leads outside",
            "error[remote]: app/gen.yaml:1: layer app: generators: HelmChartInflationGenerator runs helm",
            "error[schema]: app/gen.yaml:4: layer app: generators: `Exec` is a KRM function",
            "error[path]: app/gen.yaml:12: layer app: generators: `../../../etc/shadow` leads outside",
        ];
        for e in expected {
            assert!(found.iter().any(|f| f.starts_with(e)), "expected {e:?} in {found:#?}");
        }
        assert_eq!(found.len(), expected.len(), "{found:#?}");
    }
}
