//! The host configuration (`strata.yaml`): what operators write on the machine strata runs on.
//!
//! It maps the target names cluster files use to real clusters (kubeconfig + context, the
//! in-cluster service account, or a directory), so the repository never chooses credentials.
//! Raw (as written, with lines) → validated ([`Config`]); relative paths are relative to the file.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use serde_saphyr::Spanned;

use crate::apply::Options;
use crate::diag::{Code, Diagnostic, Diagnostics};
use crate::yaml;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    #[serde(default)]
    targets: BTreeMap<String, Spanned<RawTarget>>,
    #[serde(default)]
    apply: RawApply,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RawTarget {
    kubeconfig: Option<String>,
    context: Option<String>,
    #[serde(default)]
    in_cluster: bool,
    directory: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RawApply {
    concurrency: Option<usize>,
    clusters: Option<usize>,
    health_timeout: Option<Spanned<String>>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TargetConfig {
    Kubeconfig { path: PathBuf, context: Option<String> },
    InCluster,
    Directory(PathBuf),
}

#[derive(Clone, Debug)]
pub struct Config {
    pub file: PathBuf,
    pub targets: BTreeMap<String, TargetConfig>,
    pub apply: Options,
    /// Clusters reconciled at once.
    pub cluster_concurrency: usize,
}

/// `300ms`, `30s`, `5m`, `1h`.
pub fn parse_duration(text: &str) -> Option<Duration> {
    let text = text.trim();
    let split = text.find(|c: char| !c.is_ascii_digit())?;
    let (n, unit) = text.split_at(split);
    let n: u64 = n.parse().ok()?;
    Some(match unit {
        "ms" => Duration::from_millis(n),
        "s" => Duration::from_secs(n),
        "m" => Duration::from_secs(n * 60),
        "h" => Duration::from_secs(n * 3600),
        _ => return None,
    })
}

impl Config {
    pub fn load(path: &Path) -> Result<Config, Diagnostics> {
        let shown = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|e| {
            Diagnostics::from(
                Diagnostic::new(Code::Layout, format!("cannot read the host config: {e}"))
                    .in_file(&shown)
                    .help("pass --config with the path of strata.yaml"),
            )
        })?;
        let raw: RawConfig = yaml::parse(&text)
            .map_err(|e| Diagnostics::from(Diagnostic::new(Code::Schema, e.message).in_file(&shown).at_line(e.line)))?;
        let base = path.parent().unwrap_or(Path::new("."));
        let resolve = |p: &str| if Path::new(p).is_absolute() { PathBuf::from(p) } else { base.join(p) };
        let mut diags = Diagnostics::new();
        let mut targets = BTreeMap::new();
        for (name, target) in raw.targets {
            let line = target.referenced.line() as usize;
            let t = target.value;
            let chosen = match (&t.kubeconfig, t.in_cluster, &t.directory) {
                (Some(kubeconfig), false, None) => {
                    Some(TargetConfig::Kubeconfig { path: resolve(kubeconfig), context: t.context.clone() })
                }
                (None, true, None) if t.context.is_none() => Some(TargetConfig::InCluster),
                (None, false, Some(dir)) if t.context.is_none() => Some(TargetConfig::Directory(resolve(dir))),
                _ => None,
            };
            match chosen {
                Some(c) => {
                    targets.insert(name, c);
                }
                None => diags.push(
                    Diagnostic::new(Code::Schema, format!("target `{name}` must be exactly one kind of target"))
                        .in_file(&shown)
                        .at_line(line)
                        .help("use {kubeconfig: PATH, context: NAME}, {inCluster: true} or {directory: PATH}"),
                ),
            }
        }
        let mut apply = Options::default();
        if let Some(n) = raw.apply.concurrency {
            apply.concurrency = n.max(1);
        }
        if let Some(timeout) = raw.apply.health_timeout {
            match parse_duration(&timeout.value) {
                Some(d) => apply.health_timeout = d,
                None => diags.push(
                    Diagnostic::new(Code::Schema, format!("healthTimeout `{}` is not a duration", timeout.value))
                        .in_file(&shown)
                        .at_line(timeout.referenced.line() as usize)
                        .help("write durations like 90s, 5m or 1h"),
                ),
            }
        }
        diags.into_result(Config {
            file: path.to_path_buf(),
            targets,
            apply,
            cluster_concurrency: raw.apply.clusters.unwrap_or(4).max(1),
        })
    }

    /// The target a cluster names, or a diagnostic saying how to configure it.
    pub fn target(&self, cluster: &str, target: &str) -> Result<&TargetConfig, Diagnostic> {
        self.targets.get(target).ok_or_else(|| {
            let known: Vec<_> = self.targets.keys().map(String::as_str).collect();
            Diagnostic::new(Code::Unresolved, format!("target `{target}` is not configured on this host"))
                .in_file(self.file.display().to_string())
                .about(format!("cluster {cluster}"))
                .help(format!(
                    "add `targets: {{ {target}: {{ kubeconfig: PATH, context: NAME }} }}` (configured: {})",
                    if known.is_empty() { "none".to_string() } else { known.join(", ") }
                ))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(text: &str) -> Result<Config, Diagnostics> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("strata.yaml");
        std::fs::write(&path, text).unwrap();
        Config::load(&path)
    }

    #[test]
    fn targets_of_each_kind_with_paths_relative_to_the_file() {
        let config = load(
            "targets:\n  aws: {kubeconfig: kube/aws.yaml, context: aws}\n  lab: {directory: /srv/lab}\n  here: {inCluster: true}\napply: {healthTimeout: 90s, concurrency: 4}\n",
        )
        .unwrap();
        match &config.targets["aws"] {
            TargetConfig::Kubeconfig { path, context } => {
                assert!(path.ends_with("kube/aws.yaml") && path.is_absolute());
                assert_eq!(context.as_deref(), Some("aws"));
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(config.targets["lab"], TargetConfig::Directory("/srv/lab".into()));
        assert_eq!(config.targets["here"], TargetConfig::InCluster);
        assert_eq!(config.apply.health_timeout, Duration::from_secs(90));
        assert_eq!(config.apply.concurrency, 4);
    }

    #[test]
    fn ambiguous_targets_and_bad_durations_are_reported_with_lines() {
        let e = load("targets:\n  x: {kubeconfig: a, directory: b}\napply:\n  healthTimeout: soon\n").unwrap_err();
        let text = e.to_string();
        assert!(text.contains("strata.yaml:2: target `x` must be exactly one kind of target"), "{text}");
        assert!(text.contains("strata.yaml:4: healthTimeout `soon` is not a duration"), "{text}");
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("250ms"), Some(Duration::from_millis(250)));
        assert_eq!(parse_duration("5m"), Some(Duration::from_secs(300)));
        assert_eq!(parse_duration("5"), None);
        assert_eq!(parse_duration("m"), None);
    }
}
