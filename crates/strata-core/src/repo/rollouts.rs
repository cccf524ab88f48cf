//! Rollout policies in: `rollouts/*.yaml` read with the rest of the repository, checked, and
//! turned into [`Rollout`]s. Every problem is a diagnostic naming the file and line.
//!
//! ```text
//!   rollouts/<name>.yaml ──parse (raw, spanned)──> check names, profiles, waves, selectors,
//!                                                  counts, percentages, durations, overlaps ──> Rollout
//! ```
//!
//! Checked against the clusters already loaded: a selector must select some cluster on the
//! profiles the rollout governs, and no profile may be governed by two rollouts.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use serde::Deserialize;
use serde_json::Value;
use serde_saphyr::Spanned;

use super::{RawMeta, check_header, check_name, line, read_yaml, yaml_files};
use crate::diag::{Code, Diagnostic, Diagnostics};
use crate::model::Model;
use crate::rollout::policy::{Approval, OnFailure, Parallel, ROLLOUTS_DIR, Rollout, Selector, UNSELECTED, Wave};
use crate::source::Tree;

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RawRollout {
    api_version: Spanned<String>,
    kind: Spanned<String>,
    metadata: RawMeta,
    spec: RawSpec,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RawSpec {
    #[serde(default)]
    profiles: Option<Spanned<Vec<Spanned<String>>>>,
    waves: Spanned<Vec<RawWave>>,
    #[serde(default)]
    on_failure: OnFailure,
    #[serde(default)]
    failure_threshold: Option<Spanned<u64>>,
    #[serde(default)]
    fail_on_drift: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RawWave {
    name: Spanned<String>,
    #[serde(default)]
    selector: Option<Spanned<Selector>>,
    #[serde(default)]
    max_clusters: Option<Spanned<u64>>,
    #[serde(default)]
    max_parallel: Option<Spanned<Value>>,
    #[serde(default)]
    bake: Option<Spanned<String>>,
    #[serde(default)]
    approval: Approval,
}

/// Loads every policy under `rollouts/`, checked against `model`'s profiles and clusters.
pub fn load(tree: &dyn Tree, model: &Model, diags: &mut Diagnostics) -> BTreeMap<String, Rollout> {
    let mut rollouts: BTreeMap<String, Rollout> = BTreeMap::new();
    for file in yaml_files(tree, ROLLOUTS_DIR, diags) {
        let Some(rollout) = load_one(tree, &file, model, diags) else { continue };
        if let Some(other) = rollouts.get(&rollout.name) {
            diags.push(
                Diagnostic::new(
                    Code::Duplicate,
                    format!("rollout `{}` is also defined in {}", rollout.name, other.file),
                )
                .in_file(&file)
                .at_line(rollout.line)
                .help("rollout names are unique across the repository"),
            );
            continue;
        }
        if let Some(other) = rollouts.values().find(|o| overlap(o, &rollout).is_some()) {
            let shared = overlap(other, &rollout).unwrap_or_default();
            diags.push(
                Diagnostic::new(
                    Code::Rollout,
                    format!("it governs {shared}, which rollout `{}` ({}) governs too", other.name, other.file),
                )
                .in_file(&file)
                .at_line(rollout.line)
                .about(format!("rollout {}", rollout.name))
                .help("a profile's changes follow one rollout: list distinct `profiles` in each (a rollout without `profiles` governs every profile)"),
            );
            continue;
        }
        rollouts.insert(rollout.name.clone(), rollout);
    }
    rollouts
}

/// What two rollouts both govern, if anything: `every profile` or `aws-profile, edge-profile`.
fn overlap(a: &Rollout, b: &Rollout) -> Option<String> {
    match (a.profiles.is_empty(), b.profiles.is_empty()) {
        (true, true) => Some("every profile".into()),
        (true, false) => Some(b.profiles.join(", ")),
        (false, true) => Some(a.profiles.join(", ")),
        (false, false) => {
            let both: Vec<&str> = a.profiles.iter().filter(|p| b.profiles.contains(p)).map(String::as_str).collect();
            (!both.is_empty()).then(|| both.join(", "))
        }
    }
}

fn load_one(tree: &dyn Tree, file: &str, model: &Model, diags: &mut Diagnostics) -> Option<Rollout> {
    let raw: RawRollout = match read_yaml(tree, file) {
        Ok(raw) => raw,
        Err(d) => {
            diags.push(d);
            return None;
        }
    };
    let mut ok = check_header(&raw.api_version, &raw.kind, "Rollout", file, diags);
    let name = raw.metadata.name.value.clone();
    ok &= check_name(&name, "rollout name", file, line(&raw.metadata.name), diags);
    let object = format!("rollout {name}");
    let diag = |at: usize, code: Code, message: String, help: &str| {
        Diagnostic::new(code, message).in_file(file).at_line(at).about(&object).help(help)
    };

    let mut profiles = Vec::new();
    let mut at = line(&raw.metadata.name);
    if let Some(listed) = raw.spec.profiles {
        at = line(&listed);
        if listed.value.is_empty() {
            ok = false;
            diags.push(diag(
                line(&listed),
                Code::Schema,
                "`profiles` is empty".into(),
                "name the profiles whose changes this rollout governs, or leave `profiles` out to govern them all",
            ));
        }
        for p in listed.value {
            if !model.profiles.contains_key(&p.value) {
                ok = false;
                let known: Vec<&str> = model.profiles.keys().map(String::as_str).collect();
                diags.push(diag(
                    line(&p),
                    Code::Unresolved,
                    format!("profile `{}` does not exist", p.value),
                    &format!("known profiles: {}", known.join(", ")),
                ));
            } else if profiles.contains(&p.value) {
                ok = false;
                diags.push(diag(
                    line(&p),
                    Code::Duplicate,
                    format!("profile `{}` is listed twice", p.value),
                    "list it once",
                ));
            } else {
                profiles.push(p.value);
            }
        }
    }
    let failure_threshold = match raw.spec.failure_threshold {
        None => 1,
        Some(Spanned { value: 0, .. }) => {
            ok = false;
            let at = raw.spec.failure_threshold.as_ref().map(line).unwrap_or(0);
            diags.push(diag(
                at,
                Code::Schema,
                "failureThreshold is 0".into(),
                "give the number of failed clusters that stop the rollout, at least 1",
            ));
            1
        }
        Some(n) => n.value.min(u32::MAX as u64) as usize,
    };

    // The clusters this rollout's changes can reach: those on the profiles it governs.
    let governed: Vec<(&str, &[String])> = model
        .clusters
        .values()
        .filter(|c| profiles.is_empty() || profiles.contains(&c.profile))
        .map(|c| (c.name.as_str(), c.tags.as_slice()))
        .collect();
    let on = if profiles.is_empty() { "any profile".to_string() } else { profiles.join(", ") };

    if raw.spec.waves.value.is_empty() {
        ok = false;
        diags.push(diag(
            line(&raw.spec.waves),
            Code::Schema,
            "`waves` is empty".into(),
            "give at least one wave; a wave without `selector` takes every cluster",
        ));
    }
    let mut waves: Vec<Wave> = Vec::new();
    let mut seen: HashMap<String, usize> = HashMap::new();
    let mut catch_all: Option<String> = None;
    for raw_wave in raw.spec.waves.value {
        let at = line(&raw_wave.name);
        let wave_name = raw_wave.name.value.clone();
        let mut wave_ok = check_name(&wave_name, "wave name", file, at, diags);
        if wave_name == UNSELECTED {
            wave_ok = false;
            diags.push(diag(
                at,
                Code::Schema,
                format!("`{UNSELECTED}` is the name strata gives the clusters no wave selects"),
                "name the wave otherwise",
            ));
        }
        if let Some(first) = seen.insert(wave_name.clone(), at) {
            wave_ok = false;
            diags.push(diag(
                at,
                Code::Duplicate,
                format!("wave `{wave_name}` is declared twice (first at line {first})"),
                "give each wave of a rollout a unique name",
            ));
        }
        if let Some(all) = &catch_all {
            wave_ok = false;
            diags.push(diag(
                at,
                Code::Rollout,
                format!(
                    "wave `{wave_name}` comes after `{all}`, which takes every cluster left: it would never hold one"
                ),
                "move the wave before the catch-all, or give the catch-all a selector",
            ));
        }
        if let Some(selector) = &raw_wave.selector {
            let s = &selector.value;
            if s.tags.is_empty() && s.clusters.is_empty() {
                wave_ok = false;
                diags.push(diag(
                    line(selector),
                    Code::Schema,
                    format!("wave `{wave_name}`: the selector selects nothing"),
                    "give `tags` or `clusters`, or leave `selector` out for a wave that takes every cluster left",
                ));
            } else {
                for missing in s.clusters.iter().filter(|c| !model.clusters.contains_key(*c)) {
                    wave_ok = false;
                    diags.push(diag(
                        line(selector),
                        Code::Unresolved,
                        format!("wave `{wave_name}` names cluster `{missing}`, which does not exist"),
                        "name clusters by their metadata.name (strata clusters lists them)",
                    ));
                }
                if wave_ok && !governed.iter().any(|(n, tags)| s.matches(n, tags)) {
                    wave_ok = false;
                    diags.push(diag(
                        line(selector),
                        Code::Rollout,
                        format!("wave `{wave_name}`: selector {s} matches no cluster on {on}"),
                        "check the tags (`strata clusters --tag …` shows what a tag selects), or remove the wave",
                    ));
                }
            }
        }
        let max_clusters = match raw_wave.max_clusters {
            Some(Spanned { value: 0, .. }) => {
                wave_ok = false;
                let at = raw_wave.max_clusters.as_ref().map(line).unwrap_or(at);
                diags.push(diag(
                    at,
                    Code::Schema,
                    format!("wave `{wave_name}`: maxClusters is 0"),
                    "give how many clusters of the selection the wave takes, at least 1, or leave it out for all",
                ));
                None
            }
            Some(n) => Some(n.value.min(u32::MAX as u64) as usize),
            None => None,
        };
        let max_parallel = match &raw_wave.max_parallel {
            None => Parallel::All,
            Some(spanned) => match parallel(&spanned.value) {
                Ok(p) => p,
                Err(message) => {
                    wave_ok = false;
                    diags.push(diag(
                        line(spanned),
                        Code::Schema,
                        format!("wave `{wave_name}`: maxParallel {message}"),
                        "give a count of clusters (2) or a percentage of the wave (25%), at least one cluster",
                    ));
                    Parallel::All
                }
            },
        };
        let bake = match &raw_wave.bake {
            None => Duration::ZERO,
            Some(b) => crate::units::parse_duration(&b.value).unwrap_or_else(|| {
                wave_ok = false;
                diags.push(diag(
                    line(b),
                    Code::Schema,
                    format!("wave `{wave_name}`: bake `{}` is not a duration", b.value),
                    "write durations like 90s, 10m or 1h",
                ));
                Duration::ZERO
            }),
        };
        if raw_wave.selector.is_none() && max_clusters.is_none() {
            catch_all = Some(wave_name.clone());
        }
        ok &= wave_ok;
        waves.push(Wave {
            name: wave_name,
            selector: raw_wave.selector.map(|s| s.value),
            max_clusters,
            max_parallel,
            bake,
            approval: raw_wave.approval,
            implicit: false,
            line: at,
        });
    }
    if catch_all.is_none() {
        waves.push(Wave {
            name: UNSELECTED.to_string(),
            selector: None,
            max_clusters: None,
            max_parallel: Parallel::All,
            bake: Duration::ZERO,
            approval: Approval::Auto,
            implicit: true,
            line: 0,
        });
    }
    let _ = raw.metadata.description;
    ok.then(|| Rollout {
        name,
        file: file.to_string(),
        profiles,
        waves,
        on_failure: raw.spec.on_failure,
        failure_threshold,
        fail_on_drift: raw.spec.fail_on_drift,
        line: at,
    })
}

/// Why a wave's `maxParallel` is refused, said after `maxParallel`.
#[derive(Debug, thiserror::Error)]
enum BadParallel {
    #[error("is 0")]
    Zero,
    #[error("`{0}` is not a count of clusters")]
    NotCount(serde_json::Number),
    #[error("`{0}` is neither a count nor a percentage")]
    Neither(String),
    #[error("`{0}` is not a percentage from 1% to 100%")]
    NotPercent(String),
}

/// `2` (clusters) or `25%` (of the wave).
fn parallel(value: &Value) -> Result<Parallel, BadParallel> {
    match value {
        Value::Number(n) => match n.as_u64() {
            Some(0) => Err(BadParallel::Zero),
            Some(n) => Ok(Parallel::Count(n.min(u32::MAX as u64) as usize)),
            None => Err(BadParallel::NotCount(n.clone())),
        },
        Value::String(s) => {
            let Some(number) = s.trim().strip_suffix('%') else {
                return match s.trim().parse::<u64>() {
                    Ok(0) => Err(BadParallel::Zero),
                    Ok(n) => Ok(Parallel::Count(n.min(u32::MAX as u64) as usize)),
                    Err(_) => Err(BadParallel::Neither(s.clone())),
                };
            };
            match number.trim().parse::<u8>() {
                Ok(p @ 1..=100) => Ok(Parallel::Percent(p)),
                _ => Err(BadParallel::NotPercent(s.clone())),
            }
        }
        other => Err(BadParallel::Neither(other.to_string())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::source::DirTree;

    const CLUSTER: &str = "apiVersion: strata.dev/v1\nkind: Cluster\nmetadata: { name: NAME, tags: [TAGS] }\nspec:\n  profile: { name: PROFILE, version: \"1.0.0\" }\n";
    const PROFILE: &str =
        "apiVersion: strata.dev/v1\nkind: Profile\nmetadata: { name: NAME, version: 1.0.0 }\nspec:\n  layers: []\n";

    /// A repository with profiles `web` and `db`, clusters on them, and these rollout files.
    fn load_with(rollouts: &[(&str, &str)]) -> (Model, Diagnostics) {
        let dir = tempfile::tempdir().unwrap();
        let write = |path: &str, text: &str| {
            let path = dir.path().join(path);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, text).unwrap();
        };
        for p in ["web", "db"] {
            write(&format!("profiles/{p}/1.0.0/profile.yaml"), &PROFILE.replace("NAME", p));
        }
        for (name, profile, tags) in
            [("stage-1", "web", "env:staging"), ("prod-1", "web", "env:prod"), ("db-1", "db", "env:prod")]
        {
            let text = CLUSTER.replace("NAME", name).replace("PROFILE", profile).replace("TAGS", tags);
            write(&format!("clusters/{name}.yaml"), &text);
        }
        for (file, text) in rollouts {
            write(&format!("rollouts/{file}"), text);
        }
        let tree = DirTree::new(dir.path().to_path_buf());
        crate::repo::load_partial(&tree)
    }

    fn messages(diags: &Diagnostics) -> Vec<String> {
        diags
            .clone()
            .sorted()
            .iter()
            .map(|d| format!("{}:{} {}", d.file.as_deref().unwrap_or(""), d.line.unwrap_or(0), d.message))
            .collect()
    }

    const GOOD: &str = "apiVersion: strata.dev/v1
kind: Rollout
metadata: { name: default }
spec:
  profiles: [web]
  waves:
    - name: staging
      selector: { tags: [\"env:staging\"] }
      maxParallel: 1
      bake: 10m
    - name: prod
      maxParallel: 25%
      approval: manual
  onFailure: rollback
";

    #[test]
    fn a_valid_policy_loads_with_its_waves() {
        let (model, diags) = load_with(&[("default.yaml", GOOD)]);
        assert!(diags.is_empty(), "{diags}");
        let r = &model.rollouts["default"];
        assert_eq!(r.profiles, ["web"]);
        assert_eq!(r.waves.len(), 2, "the catch-all makes no implicit wave");
        assert_eq!(r.waves[0].max_parallel, Parallel::Count(1));
        assert_eq!(r.waves[0].bake, Duration::from_secs(600));
        assert_eq!(r.waves[1].max_parallel, Parallel::Percent(25));
        assert_eq!(r.waves[1].approval, Approval::Manual);
        assert_eq!(r.on_failure, OnFailure::Rollback);
        assert_eq!(r.failure_threshold, 1);
        assert!(r.governs("web") && !r.governs("db"));
    }

    #[test]
    fn without_a_catch_all_the_clusters_no_wave_selects_get_a_wave_of_their_own() {
        let text = GOOD.replace("    - name: prod\n      maxParallel: 25%\n      approval: manual\n", "");
        let (model, diags) = load_with(&[("default.yaml", &text)]);
        assert!(diags.is_empty(), "{diags}");
        let waves = &model.rollouts["default"].waves;
        assert_eq!((waves[1].name.as_str(), waves[1].implicit), (UNSELECTED, true));
    }

    #[test]
    fn every_problem_is_reported_with_file_and_line() {
        let bad = "apiVersion: strata.dev/v1
kind: Rollout
metadata: { name: default }
spec:
  profiles: [web, nope]
  waves:
    - name: staging
      selector: { tags: [\"env:nowhere\"] }
      maxParallel: 0
      bake: ten minutes
    - name: staging
      maxParallel: 150%
    - name: late
      selector: { clusters: [ghost] }
      maxClusters: 0
  failureThreshold: 0
";
        let (model, diags) = load_with(&[("default.yaml", bad)]);
        assert!(model.rollouts.is_empty());
        assert_eq!(
            messages(&diags),
            [
                "rollouts/default.yaml:5 profile `nope` does not exist",
                "rollouts/default.yaml:8 wave `staging`: selector tags env:nowhere matches no cluster on web",
                "rollouts/default.yaml:9 wave `staging`: maxParallel is 0",
                "rollouts/default.yaml:10 wave `staging`: bake `ten minutes` is not a duration",
                "rollouts/default.yaml:11 wave `staging` is declared twice (first at line 7)",
                "rollouts/default.yaml:12 wave `staging`: maxParallel `150%` is not a percentage from 1% to 100%",
                "rollouts/default.yaml:13 wave `late` comes after `staging`, which takes every cluster left: it would never hold one",
                "rollouts/default.yaml:14 wave `late` names cluster `ghost`, which does not exist",
                "rollouts/default.yaml:15 wave `late`: maxClusters is 0",
                "rollouts/default.yaml:16 failureThreshold is 0",
            ]
        );
    }

    #[test]
    fn unknown_fields_and_two_rollouts_on_one_profile_are_refused() {
        let typo = GOOD.replace("bake: 10m", "bakeTime: 10m");
        let (_, diags) = load_with(&[("default.yaml", &typo)]);
        let d = diags.iter().next().unwrap();
        assert_eq!((d.code, d.line), (Code::Schema, Some(10)));
        assert!(d.message.contains("unknown field `bakeTime`"), "{}", d.message);

        let everything = GOOD.replace("  profiles: [web]\n", "").replace("name: default", "name: all");
        let (model, diags) = load_with(&[("a.yaml", GOOD), ("b.yaml", &everything)]);
        assert_eq!(
            messages(&diags),
            ["rollouts/b.yaml:3 it governs web, which rollout `default` (rollouts/a.yaml) governs too"]
        );
        assert_eq!(model.rollouts.keys().collect::<Vec<_>>(), ["default"]);
        let db = GOOD.replace("[web]", "[db]").replace("name: default", "name: db").replace("env:staging", "env:prod");
        let (model, diags) = load_with(&[("a.yaml", GOOD), ("b.yaml", &db)]);
        assert!(diags.is_empty(), "{diags}");
        assert_eq!(model.rollouts.len(), 2);
    }
}
