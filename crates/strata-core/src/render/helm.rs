//! What strata checks of a helm layer's chart before `helm template` runs, and where a failing
//! chart's message points.
//!
//! ```text
//!   Chart.yaml dependencies ──┐
//!   Chart.lock ───────────────┼──> each dependency vendored under charts/, at the locked version
//!   charts/<dir>/Chart.yaml,  │    (or one Chart.yaml's range allows when there is no lock) ──> error[helm]
//!   charts/<name>-<ver>.tgz ──┘    naming the chart, the dependency, file and line
//!
//!   helm's message ──> `…/templates/x.yaml:12:3…` ──> <chart dir>/templates/x.yaml, line 12
//! ```
//!
//! strata never fetches a chart (tools run without network): a dependency that is not in the
//! repository is the repository's to fix, and is said so before helm runs. Vendored directories
//! are checked in turn (their own `charts/`); archives are taken by their name, as `helm
//! dependency build` writes them.

use semver::{Version, VersionReq};
use serde::Deserialize;
use serde_json::Value;
use serde_saphyr::Spanned;

use crate::diag::{Code, Diagnostic, Diagnostics};
use crate::source::{self, EntryKind, Tree};

/// Subcharts checked below a chart at most this deep (charts of charts of charts…).
const MAX_DEPTH: usize = 8;

#[derive(Deserialize)]
struct DependencyList {
    #[serde(default)]
    name: Option<Value>,
    #[serde(default)]
    version: Option<Value>,
    #[serde(default)]
    dependencies: Option<Vec<Spanned<Value>>>,
}

/// A dependency as Chart.yaml or Chart.lock lists it.
struct Dependency {
    name: String,
    version: Option<String>,
    line: usize,
}

/// A chart vendored under `charts/`: its name, version and path.
struct Vendored {
    name: String,
    version: String,
    path: String,
}

/// Checks that every dependency of the chart at `chart` (a repository path) is vendored, at the
/// version Chart.lock names (or, without a lock, one Chart.yaml's range allows).
pub fn check_dependencies(tree: &dyn Tree, chart: &str, object: &str) -> Result<(), Diagnostics> {
    let mut diags = Diagnostics::new();
    check_chart(tree, chart, object, 0, &mut diags);
    diags.into_result(())
}

fn text(value: &Value) -> Option<String> {
    match value {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// What strata reads of a Chart.yaml or Chart.lock.
struct ChartList {
    name: Option<String>,
    version: Option<String>,
    dependencies: Vec<Dependency>,
}

/// A chart file's name, version and dependencies; `None` when it is absent or does not parse
/// (helm reports a broken Chart.yaml itself).
fn read_list(tree: &dyn Tree, path: &str) -> Option<ChartList> {
    let bytes = source::read_file(tree, path).ok()?;
    let list: DependencyList = crate::yaml::parse(std::str::from_utf8(&bytes).ok()?).ok()?;
    let dependencies = list
        .dependencies
        .unwrap_or_default()
        .into_iter()
        .filter_map(|d| {
            let line = d.referenced.line() as usize;
            Some(Dependency {
                name: d.value.get("name").and_then(text)?,
                version: d.value.get("version").and_then(text),
                line,
            })
        })
        .collect();
    Some(ChartList {
        name: list.name.as_ref().and_then(text),
        version: list.version.as_ref().and_then(text),
        dependencies,
    })
}

fn check_chart(tree: &dyn Tree, chart: &str, object: &str, depth: usize, diags: &mut Diagnostics) {
    let chart_file = format!("{chart}/Chart.yaml");
    let Some(ChartList { name, dependencies: wanted, .. }) = read_list(tree, &chart_file) else { return };
    let name = name.unwrap_or_else(|| chart.rsplit('/').next().unwrap_or(chart).to_string());
    let vendored = vendored(tree, chart);
    let lock_file = format!("{chart}/Chart.lock");
    let lock = read_list(tree, &lock_file).map(|list| list.dependencies);
    let charts_dir = format!("{chart}/charts/");
    for dependency in &wanted {
        let found: Vec<&Vendored> = vendored.iter().filter(|v| v.name == dependency.name).collect();
        let range = dependency.version.as_deref().unwrap_or("*");
        if found.is_empty() {
            diags.push(
                Diagnostic::new(
                    Code::Helm,
                    format!(
                        "chart `{name}` depends on `{}` ({range}), which is not vendored in {charts_dir}",
                        dependency.name
                    ),
                )
                .in_file(&chart_file)
                .at_line(dependency.line)
                .about(object)
                .help(
                    "strata never fetches charts: run `helm dependency build` and commit the chart's charts/ directory",
                ),
            );
            continue;
        }
        let versions = found.iter().map(|v| format!("{} ({})", v.version, v.path)).collect::<Vec<_>>().join(", ");
        match &lock {
            Some(locked) => {
                let Some(entry) = locked.iter().find(|l| l.name == dependency.name) else {
                    diags.push(
                        Diagnostic::new(
                            Code::Helm,
                            format!(
                                "chart `{name}` depends on `{}`, which its Chart.lock does not list",
                                dependency.name
                            ),
                        )
                        .in_file(&chart_file)
                        .at_line(dependency.line)
                        .about(object)
                        .help(
                            "Chart.lock is out of date: run `helm dependency update` and commit Chart.lock and charts/",
                        ),
                    );
                    continue;
                };
                let want = entry.version.as_deref().unwrap_or("");
                if !found.iter().any(|v| same_version(&v.version, want)) {
                    diags.push(
                        Diagnostic::new(
                            Code::Helm,
                            format!(
                                "chart `{name}`: dependency `{}` is vendored at {versions}, but Chart.lock says {want}",
                                dependency.name
                            ),
                        )
                        .in_file(&lock_file)
                        .at_line(entry.line)
                        .about(object)
                        .help("run `helm dependency build` to vendor the locked version, and commit charts/"),
                    );
                }
            }
            None => {
                if !found.iter().any(|v| allows(range, &v.version).unwrap_or(true)) {
                    diags.push(
                        Diagnostic::new(
                            Code::Helm,
                            format!(
                                "chart `{name}`: dependency `{}` is vendored at {versions}, which Chart.yaml's `{range}` does not allow",
                                dependency.name
                            ),
                        )
                        .in_file(&chart_file)
                        .at_line(dependency.line)
                        .about(object)
                        .help("vendor a version the range allows (`helm dependency update`), or change the range"),
                    );
                }
            }
        }
    }
    if let Some(locked) = &lock {
        for entry in locked.iter().filter(|l| !wanted.iter().any(|w| w.name == l.name)) {
            diags.push(
                Diagnostic::new(
                    Code::Helm,
                    format!("chart `{name}`: Chart.lock lists `{}`, which Chart.yaml does not depend on", entry.name),
                )
                .in_file(&lock_file)
                .at_line(entry.line)
                .about(object)
                .help("Chart.lock is out of date: run `helm dependency update` and commit Chart.lock and charts/"),
            );
        }
    }
    if depth < MAX_DEPTH {
        for sub in vendored.iter().filter(|v| !v.path.ends_with(".tgz")) {
            check_chart(tree, &sub.path, object, depth + 1, diags);
        }
    }
}

/// The charts under `chart/charts/`: directories with a Chart.yaml, and archives named
/// `<name>-<version>.tgz` (helm's own naming; the name is taken to end at the last `-` that a
/// digit follows).
fn vendored(tree: &dyn Tree, chart: &str) -> Vec<Vendored> {
    let dir = format!("{chart}/charts");
    let Ok((real, EntryKind::Dir)) = source::resolve(tree, &dir) else { return Vec::new() };
    let Ok(entries) = tree.list(&real) else { return Vec::new() };
    let mut out = Vec::new();
    for (entry, _) in entries {
        let path = source::child(&dir, &entry);
        match source::resolve(tree, &path) {
            Ok((_, EntryKind::Dir)) => {
                if let Some(ChartList { name: Some(name), version, .. }) =
                    read_list(tree, &format!("{path}/Chart.yaml"))
                {
                    out.push(Vendored { name, version: version.unwrap_or_default(), path });
                }
            }
            Ok((_, EntryKind::File)) => {
                let Some(stem) = entry.strip_suffix(".tgz") else { continue };
                let split = stem.match_indices('-').map(|(i, _)| i).rfind(|&i| {
                    stem[i + 1..].bytes().next().is_some_and(|b| b.is_ascii_digit() || b == b'v')
                        && stem[i + 1..].contains('.')
                });
                if let Some(i) = split {
                    out.push(Vendored { name: stem[..i].to_string(), version: stem[i + 1..].to_string(), path });
                }
            }
            _ => {}
        }
    }
    out
}

fn parse_version(text: &str) -> Option<Version> {
    let text = text.trim();
    let text = text.strip_prefix('v').unwrap_or(text);
    Version::parse(text).ok().or_else(|| {
        // Helm takes `1.2` for 1.2.0.
        let end = text.find(['-', '+']).unwrap_or(text.len());
        let (core, rest) = text.split_at(end);
        let padded = match core.split('.').count() {
            1 => format!("{core}.0.0{rest}"),
            2 => format!("{core}.0{rest}"),
            _ => return None,
        };
        Version::parse(&padded).ok()
    })
}

fn same_version(a: &str, b: &str) -> bool {
    match (parse_version(a), parse_version(b)) {
        (Some(a), Some(b)) => a == b,
        _ => a.trim() == b.trim(),
    }
}

/// Whether a Chart.yaml version range (Helm's syntax: comparators separated by spaces or commas,
/// `||` between alternatives, `a - b`, `~`, `^`, `x` wildcards) allows `version`; `None` when
/// either does not parse.
fn allows(range: &str, version: &str) -> Option<bool> {
    let version = parse_version(version)?;
    let mut any = false;
    for alternative in range.split("||") {
        let words: Vec<&str> = alternative.split([' ', ',', '\t']).filter(|w| !w.is_empty()).collect();
        let mut comparators: Vec<String> = Vec::new();
        let mut i = 0;
        while i < words.len() {
            if words.get(i + 1) == Some(&"-") && i + 2 < words.len() {
                comparators.push(format!(">={}", words[i].trim_start_matches('v')));
                comparators.push(format!("<={}", words[i + 2].trim_start_matches('v')));
                i += 3;
                continue;
            }
            let mut word = words[i].to_string();
            // An operator written apart from its version: `>= 1.2`.
            if word.bytes().all(|b| b"<>=!~^".contains(&b)) && i + 1 < words.len() {
                i += 1;
                word.push_str(words[i]);
            }
            let op_end = word.find(|c: char| !"<>=!~^".contains(c)).unwrap_or(word.len());
            let (op, rest) = word.split_at(op_end);
            let rest = rest.trim_start_matches('v');
            let op = match op {
                "" => "=",
                "~>" => "~",
                "!=" => {
                    let excluded = parse_version(rest)?;
                    if excluded == version {
                        comparators.push("<0.0.0".to_string());
                    }
                    i += 1;
                    continue;
                }
                other => other,
            };
            comparators.push(if rest == "*" || rest.eq_ignore_ascii_case("x") {
                "*".into()
            } else {
                format!("{op}{rest}")
            });
            i += 1;
        }
        if comparators.is_empty() {
            comparators.push("*".into());
        }
        let req = VersionReq::parse(&comparators.join(", ")).ok()?;
        any |= req.matches(&version);
    }
    Some(any)
}

/// Where a failing chart's message points: the first template path in it (`mychart/templates/
/// x.yaml:12:3`, `(mychart/charts/sub/templates/_helpers.tpl:4:8)`), as the repository path under
/// `chart` and the line, when that file is in the repository. Helm names templates from the
/// chart's name, which need not be its directory's: the first component is replaced by `chart`.
pub fn failure_location(tree: &dyn Tree, chart: &str, message: &str) -> Option<(String, Option<usize>)> {
    const MARKER: &str = "/templates/";
    let boundary = |c: char| c.is_whitespace() || "()\"'<>`,;:".contains(c);
    let mut from = 0;
    while let Some(found) = message[from..].find(MARKER) {
        let at = from + found;
        from = at + MARKER.len();
        let start = message[..at].rfind(boundary).map(|i| i + 1).unwrap_or(0);
        let end = message[at..].find(boundary).map(|i| at + i).unwrap_or(message.len());
        let helm_path = &message[start..end];
        let Some((_, within)) = helm_path.split_once('/') else { continue };
        if within.split('/').any(|part| part == "..") {
            continue;
        }
        let Some(path) = source::join(chart, within) else { continue };
        if !matches!(source::resolve(tree, &path), Ok((_, EntryKind::File))) {
            continue;
        }
        let line = message[end..]
            .strip_prefix(':')
            .map(|rest| rest.chars().take_while(char::is_ascii_digit).collect::<String>())
            .and_then(|digits| digits.parse().ok());
        return Some((path, line));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::source::MemTree;

    fn tree(files: &[(&str, &str)]) -> MemTree {
        let mut tree = MemTree::new();
        for (path, text) in files {
            tree.file(path, text.as_bytes());
        }
        tree
    }

    const APP: &str = "apiVersion: v2\nname: app\nversion: 1.0.0\ndependencies:\n- name: common\n  version: ~2.1.0\n  repository: https://charts.example.com\n- name: db\n  version: 12.x.x\n  repository: oci://registry.example.com/charts\n";

    fn errors(tree: &MemTree) -> Vec<String> {
        match check_dependencies(tree, "charts/app", "layer app") {
            Ok(()) => vec![],
            Err(d) => d.iter().map(|d| d.to_string()).collect(),
        }
    }

    #[test]
    fn vendored_dependencies_at_allowed_versions_pass() {
        let t = tree(&[
            ("charts/app/Chart.yaml", APP),
            ("charts/app/charts/common/Chart.yaml", "apiVersion: v2\nname: common\nversion: 2.1.4\ntype: library\n"),
            ("charts/app/charts/db-12.3.0.tgz", "not read"),
        ]);
        assert_eq!(errors(&t), Vec::<String>::new());
    }

    #[test]
    fn a_dependency_not_vendored_names_the_chart_the_dependency_and_the_line() {
        let t = tree(&[
            ("charts/app/Chart.yaml", APP),
            ("charts/app/charts/common/Chart.yaml", "apiVersion: v2\nname: common\nversion: 2.1.4\n"),
        ]);
        assert_eq!(
            errors(&t),
            [
                "error[helm]: charts/app/Chart.yaml:8: layer app: chart `app` depends on `db` (12.x.x), which is not vendored in charts/app/charts/\n  help: strata never fetches charts: run `helm dependency build` and commit the chart's charts/ directory"
            ]
        );
    }

    #[test]
    fn a_dependency_vendored_at_another_version_than_the_lock_is_refused() {
        let t = tree(&[
            ("charts/app/Chart.yaml", APP),
            (
                "charts/app/Chart.lock",
                "dependencies:\n- name: common\n  repository: https://charts.example.com\n  version: 2.1.5\n- name: db\n  repository: oci://registry.example.com/charts\n  version: 12.3.0\ndigest: sha256:0\ngenerated: \"2026-01-01T00:00:00Z\"\n",
            ),
            ("charts/app/charts/common/Chart.yaml", "apiVersion: v2\nname: common\nversion: 2.1.4\n"),
            ("charts/app/charts/db-12.3.0.tgz", ""),
        ]);
        let e = errors(&t);
        assert_eq!(e.len(), 1, "{e:?}");
        assert!(
            e[0].starts_with("error[helm]: charts/app/Chart.lock:2: layer app: chart `app`: dependency `common` is vendored at 2.1.4 (charts/app/charts/common), but Chart.lock says 2.1.5"),
            "{e:?}"
        );
    }

    #[test]
    fn without_a_lock_the_vendored_version_must_be_in_the_range() {
        let t = tree(&[
            ("charts/app/Chart.yaml", APP),
            ("charts/app/charts/common/Chart.yaml", "apiVersion: v2\nname: common\nversion: 2.2.0\n"),
            ("charts/app/charts/db-12.3.0.tgz", ""),
        ]);
        let e = errors(&t);
        assert_eq!(e.len(), 1, "{e:?}");
        assert!(e[0].contains("dependency `common` is vendored at 2.2.0 (charts/app/charts/common), which Chart.yaml's `~2.1.0` does not allow"), "{e:?}");
    }

    #[test]
    fn subcharts_are_checked_in_turn() {
        let t = tree(&[
            (
                "charts/app/Chart.yaml",
                "apiVersion: v2\nname: app\nversion: 1.0.0\ndependencies:\n- name: mid\n  version: 1.0.0\n",
            ),
            (
                "charts/app/charts/mid/Chart.yaml",
                "apiVersion: v2\nname: mid\nversion: 1.0.0\ndependencies:\n- {name: leaf, version: '>= 1.0, < 2'}\n",
            ),
        ]);
        let e = errors(&t);
        assert_eq!(e.len(), 1, "{e:?}");
        assert!(e[0].starts_with("error[helm]: charts/app/charts/mid/Chart.yaml:5: layer app: chart `mid` depends on `leaf` (>= 1.0, < 2)"), "{e:?}");
    }

    #[test]
    fn helm_ranges_are_understood() {
        for (range, version, expected) in [
            ("~2.1.0", "2.1.9", true),
            ("~2.1.0", "2.2.0", false),
            ("^1.2", "1.9.0", true),
            ("12.x.x", "12.3.0", true),
            ("12.x.x", "13.0.0", false),
            ("1.2.3", "1.2.3", true),
            ("1.2.3", "1.2.4", false),
            (">= 1.0, < 2", "1.5.0", true),
            (">=1.0 <2.0", "2.0.0", false),
            ("1.0 - 1.4", "1.4.0", true),
            ("<1.0 || >=3.0", "3.1.0", true),
            ("<1.0 || >=3.0", "2.0.0", false),
            ("*", "0.1.0", true),
            ("v1.2.x", "v1.2.7", true),
            ("!=1.2.3", "1.2.3", false),
        ] {
            assert_eq!(allows(range, version), Some(expected), "{range} {version}");
        }
        assert_eq!(allows(">=banana", "1.0.0"), None);
    }

    #[test]
    fn failures_point_at_the_template_and_line() {
        let t = tree(&[
            ("charts/metrics/Chart.yaml", "name: prometheus\n"),
            ("charts/metrics/templates/config.yaml", ""),
            ("charts/metrics/charts/sub/templates/_helpers.tpl", ""),
        ]);
        let at = |m: &str| failure_location(&t, "charts/metrics", m);
        assert_eq!(
            at("Error: execution error at (prometheus/templates/config.yaml:7:8): need .Values.x"),
            Some(("charts/metrics/templates/config.yaml".into(), Some(7)))
        );
        assert_eq!(
            at(
                "template: prometheus/templates/config.yaml:12:3: executing \"prometheus/templates/config.yaml\" at <.Values.x>: nil pointer"
            ),
            Some(("charts/metrics/templates/config.yaml".into(), Some(12)))
        );
        assert_eq!(
            at("prometheus/charts/sub/templates/_helpers.tpl:4:8\n  executing ..."),
            Some(("charts/metrics/charts/sub/templates/_helpers.tpl".into(), Some(4)))
        );
        assert_eq!(
            at("YAML parse error on prometheus/templates/config.yaml: error converting YAML to JSON"),
            Some(("charts/metrics/templates/config.yaml".into(), None))
        );
        assert_eq!(at("prometheus/templates/gone.yaml:3:1: x"), None);
        assert_eq!(at("../../etc/templates/passwd:1"), None);
        assert_eq!(at("chart requires kubeVersion: >=1.30"), None);
    }
}
