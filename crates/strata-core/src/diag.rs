//! Diagnostics: what strata tells a user about their repository.
//!
//! A diagnostic is a finding about user input (a file, a line, an object) with a stable code and,
//! where there is one, a hint at what to do. Diagnostics are collected, not thrown: loading and
//! rendering report every problem they find in one pass, so a user fixes a broken commit in one
//! round trip. Program failures (an unreadable object database, a crashed tool) are separate
//! error types in the stage that hits them.

use std::fmt;

use serde::{Deserialize, Serialize};

/// Stable, kebab-case identifiers for each kind of finding. They appear in output (`error[semver]`)
/// and in JSON, so tests and scripts can match on them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Code {
    /// Not a repository strata understands (no `profiles/` or `clusters/`).
    Layout,
    /// YAML that does not parse, or parses past a size or alias budget.
    Yaml,
    /// A file larger than strata reads.
    TooLarge,
    /// A document that does not match the schema (unknown field, wrong type, wrong kind).
    Schema,
    /// A version or range that is not semver.
    Semver,
    /// `metadata.name` / `metadata.version` differ from the directory they live in.
    Mismatch,
    /// Two profile versions, clusters or layers with the same identity.
    Duplicate,
    /// A cluster naming a profile, version or layer that does not exist.
    Unresolved,
    /// A layer `source` outside the repository or missing.
    Path,
    /// `dependsOn` naming an unknown layer, or a cycle.
    DependsOn,
    /// A name that cannot be used as a Kubernetes label value.
    Name,
    /// A template that fails to compile or render.
    Template,
    /// A rendered manifest without apiVersion, kind or metadata.name.
    Manifest,
    /// Two layers (or two files) rendering the same object.
    Collision,
    /// kustomize or helm missing or failing.
    Tool,
    /// A helm chart that cannot render: a dependency not vendored (or at another version than
    /// Chart.lock says), or a template that fails (named by file and line where helm names it).
    Helm,
    /// A reference to something outside the repository that a tool would fetch (a URL, a Git
    /// remote, a chart repository).
    Remote,
    /// Rendered output past a size budget.
    Budget,
    /// A rollout policy that cannot work: overlapping rollouts, a selector that selects no
    /// cluster, a wave nothing can reach.
    Rollout,
    /// An object in strata's own home: its namespace, its state, a cluster Secret.
    Reserved,
    /// A SOPS-encrypted file strata cannot decrypt: no key for it, or a MAC that does not match.
    Decrypt,
}

impl Code {
    pub fn as_str(self) -> &'static str {
        match self {
            Code::Layout => "layout",
            Code::Yaml => "yaml",
            Code::TooLarge => "too-large",
            Code::Schema => "schema",
            Code::Semver => "semver",
            Code::Mismatch => "mismatch",
            Code::Duplicate => "duplicate",
            Code::Unresolved => "unresolved",
            Code::Path => "path",
            Code::DependsOn => "depends-on",
            Code::Name => "name",
            Code::Template => "template",
            Code::Manifest => "manifest",
            Code::Collision => "collision",
            Code::Tool => "tool",
            Code::Helm => "helm",
            Code::Remote => "remote",
            Code::Budget => "budget",
            Code::Rollout => "rollout",
            Code::Reserved => "reserved",
            Code::Decrypt => "decrypt",
        }
    }
}

/// One finding about user input.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Diagnostic {
    pub code: Code,
    /// Path relative to the repository root (the `--path` sub-directory when one is given).
    pub file: Option<String>,
    /// 1-based line in `file`, where known.
    pub line: Option<usize>,
    /// The object the finding is about: `cluster aws-cluster`, `profile aws-profile@1.0.0 layer kubecost`.
    pub object: Option<String>,
    pub message: String,
    /// What to do about it.
    pub help: Option<String>,
}

impl Diagnostic {
    pub fn new(code: Code, message: impl Into<String>) -> Self {
        Diagnostic { code, file: None, line: None, object: None, message: message.into(), help: None }
    }

    pub fn in_file(mut self, file: impl Into<String>) -> Self {
        self.file = Some(file.into());
        self
    }

    /// Sets the line; 0 means "unknown" (serde-saphyr's convention) and is dropped.
    pub fn at_line(mut self, line: usize) -> Self {
        self.line = (line > 0).then_some(line);
        self
    }

    pub fn about(mut self, object: impl Into<String>) -> Self {
        self.object = Some(object.into());
        self
    }

    pub fn help(mut self, help: impl Into<String>) -> Self {
        self.help = Some(help.into());
        self
    }

    /// `file:line` as editors and terminals link it.
    pub fn location(&self) -> Option<String> {
        match (&self.file, self.line) {
            (Some(file), Some(line)) => Some(format!("{file}:{line}")),
            (Some(file), None) => Some(file.clone()),
            (None, _) => None,
        }
    }
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "error[{}]: ", self.code.as_str())?;
        if let Some(location) = self.location() {
            write!(f, "{location}: ")?;
        }
        if let Some(object) = &self.object {
            write!(f, "{object}: ")?;
        }
        f.write_str(&self.message)?;
        if let Some(help) = &self.help {
            write!(f, "\n  help: {help}")?;
        }
        Ok(())
    }
}

/// Every problem found in one pass, in file and line order.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Diagnostics(Vec<Diagnostic>);

impl Diagnostics {
    pub fn new() -> Self {
        Diagnostics(Vec::new())
    }

    pub fn push(&mut self, diagnostic: Diagnostic) {
        self.0.push(diagnostic);
    }

    pub fn extend(&mut self, other: Diagnostics) {
        self.0.extend(other.0);
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn iter(&self) -> impl Iterator<Item = &Diagnostic> {
        self.0.iter()
    }

    /// Sorted by file and line, duplicates removed (two clusters on one broken profile would
    /// otherwise report the profile's problem twice).
    pub fn sorted(mut self) -> Self {
        self.0.sort_by(|a, b| (&a.file, a.line, &a.object, &a.message).cmp(&(&b.file, b.line, &b.object, &b.message)));
        self.0.dedup();
        self
    }

    /// `Ok(value)` when nothing was found, otherwise the findings.
    pub fn into_result<T>(self, value: T) -> Result<T, Diagnostics> {
        if self.is_empty() { Ok(value) } else { Err(self.sorted()) }
    }
}

impl From<Diagnostic> for Diagnostics {
    fn from(diagnostic: Diagnostic) -> Self {
        Diagnostics(vec![diagnostic])
    }
}

impl IntoIterator for Diagnostics {
    type Item = Diagnostic;
    type IntoIter = std::vec::IntoIter<Diagnostic>;
    fn into_iter(self) -> Self::IntoIter {
        self.0.into_iter()
    }
}

impl FromIterator<Diagnostic> for Diagnostics {
    fn from_iter<I: IntoIterator<Item = Diagnostic>>(iter: I) -> Self {
        Diagnostics(iter.into_iter().collect())
    }
}

impl fmt::Display for Diagnostics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for diagnostic in &self.0 {
            writeln!(f, "{diagnostic}")?;
        }
        let n = self.0.len();
        write!(f, "{n} problem{} found", if n == 1 { "" } else { "s" })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_names_code_location_object_and_help() {
        let d = Diagnostic::new(Code::Semver, "`1.0` is not a semver version")
            .in_file("profiles/aws-profile/1.0/profile.yaml")
            .at_line(4)
            .about("profile aws-profile")
            .help("use MAJOR.MINOR.PATCH, e.g. 1.0.0");
        assert_eq!(
            d.to_string(),
            "error[semver]: profiles/aws-profile/1.0/profile.yaml:4: profile aws-profile: `1.0` is not a semver version\n  help: use MAJOR.MINOR.PATCH, e.g. 1.0.0"
        );
    }

    #[test]
    fn line_zero_means_unknown() {
        let d = Diagnostic::new(Code::Yaml, "bad").in_file("a.yaml").at_line(0);
        assert_eq!(d.location().as_deref(), Some("a.yaml"));
    }

    #[test]
    fn sorted_orders_by_file_then_line_and_dedups() {
        let a = Diagnostic::new(Code::Schema, "x").in_file("b.yaml").at_line(2);
        let b = Diagnostic::new(Code::Schema, "y").in_file("a.yaml").at_line(9);
        let diags: Diagnostics = [a.clone(), b.clone(), a.clone()].into_iter().collect();
        let sorted: Vec<_> = diags.sorted().into_iter().collect();
        assert_eq!(sorted, vec![b, a]);
    }
}
