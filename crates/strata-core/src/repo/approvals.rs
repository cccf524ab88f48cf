//! Approval rules in: `approvals/*.yaml` read with the rest of the repository and checked.
//! Every problem is a diagnostic naming the file and line.
//!
//! ```yaml
//! apiVersion: strata.dev/v1
//! kind: ApprovalRules
//! metadata: { name: prod }
//! spec:
//!   rules:
//!     - name: two-sre                   # optional: the rule is then prod/two-sre, else prod/1
//!       profiles: [aws-profile]         # selectors, all optional; every one given must match
//!       tags: ["env:prod"]
//!       waves: [prod-eu]                # the cluster's wave in the rollout governing its change
//!       approvers: { groups: [sre], users: [carol] }
//!       required: 2                     # distinct people (default 1)
//! ```

use serde::Deserialize;
use serde_saphyr::Spanned;

use super::{RawMeta, check_header, check_name, line, read_yaml, yaml_files};
use crate::approval::{APPROVALS_DIR, Rule};
use crate::diag::{Code, Diagnostic, Diagnostics};
use crate::model::Model;
use crate::source::Tree;

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RawRules {
    api_version: Spanned<String>,
    kind: Spanned<String>,
    metadata: RawMeta,
    spec: RawSpec,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSpec {
    rules: Spanned<Vec<Spanned<RawRule>>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRule {
    #[serde(default)]
    name: Option<Spanned<String>>,
    #[serde(default)]
    profiles: Vec<Spanned<String>>,
    #[serde(default)]
    tags: Vec<Spanned<String>>,
    #[serde(default)]
    waves: Vec<Spanned<String>>,
    approvers: Spanned<RawApprovers>,
    #[serde(default)]
    required: Option<Spanned<u64>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawApprovers {
    #[serde(default)]
    groups: Vec<String>,
    #[serde(default)]
    users: Vec<String>,
}

/// Loads every rule under `approvals/`, checked against `model`'s profiles and rollouts.
pub fn load(tree: &dyn Tree, model: &Model, diags: &mut Diagnostics) -> Vec<Rule> {
    let mut rules: Vec<Rule> = Vec::new();
    for file in yaml_files(tree, APPROVALS_DIR, diags) {
        for rule in load_one(tree, &file, model, diags) {
            if let Some(other) = rules.iter().find(|r| r.name == rule.name) {
                diags.push(
                    Diagnostic::new(Code::Duplicate, format!("approval rule `{}` is also defined in {}", rule.name, other.file))
                        .in_file(&file)
                        .at_line(rule.line)
                        .help("metadata.name of each approvals file is unique across the repository, and rule names within one"),
                );
                continue;
            }
            rules.push(rule);
        }
    }
    rules
}

fn load_one(tree: &dyn Tree, file: &str, model: &Model, diags: &mut Diagnostics) -> Vec<Rule> {
    let raw: RawRules = match read_yaml(tree, file) {
        Ok(raw) => raw,
        Err(d) => {
            diags.push(d);
            return Vec::new();
        }
    };
    let mut ok = check_header(&raw.api_version, &raw.kind, "ApprovalRules", file, diags);
    let set = raw.metadata.name.value.clone();
    ok &= check_name(&set, "approval rules name", file, line(&raw.metadata.name), diags);
    if raw.spec.rules.value.is_empty() {
        diags.push(
            Diagnostic::new(Code::Schema, "`rules` is empty")
                .in_file(file)
                .at_line(line(&raw.spec.rules))
                .about(format!("approval rules {set}"))
                .help("give at least one rule, or remove the file"),
        );
        return Vec::new();
    }
    let waves: Vec<&str> = model.rollouts.values().flat_map(|r| r.waves.iter().map(|w| w.name.as_str())).collect();
    let mut rules = Vec::new();
    for (i, raw_rule) in raw.spec.rules.value.into_iter().enumerate() {
        let at = line(&raw_rule);
        let r = raw_rule.value;
        let name = match &r.name {
            Some(n) => {
                ok &= check_name(&n.value, "approval rule name", file, line(n), diags);
                format!("{set}/{}", n.value)
            }
            None => format!("{set}/{}", i + 1),
        };
        let object = format!("approval rule {name}");
        let mut push = |at: usize, code: Code, message: String, help: &str| {
            ok = false;
            diags.push(Diagnostic::new(code, message).in_file(file).at_line(at).about(&object).help(help));
        };
        for p in &r.profiles {
            if !model.profiles.contains_key(&p.value) {
                let known: Vec<&str> = model.profiles.keys().map(String::as_str).collect();
                push(
                    line(p),
                    Code::Unresolved,
                    format!("profile `{}` does not exist", p.value),
                    &format!("known profiles: {}", known.join(", ")),
                );
            }
        }
        for t in &r.tags {
            if t.value.trim().is_empty() || t.value.chars().any(char::is_whitespace) {
                push(
                    line(t),
                    Code::Schema,
                    format!("tag `{}` is not a tag", t.value),
                    "write key:value, or key for any value",
                );
            }
        }
        for w in &r.waves {
            if !waves.contains(&w.value.as_str()) {
                push(
                    line(w),
                    Code::Unresolved,
                    format!("wave `{}` is in no rollout", w.value),
                    &format!(
                        "name a wave of a rollout under rollouts/ (waves: {})",
                        if waves.is_empty() { "none".to_string() } else { waves.join(", ") }
                    ),
                );
            }
        }
        let approvers = &r.approvers.value;
        if approvers.groups.is_empty() && approvers.users.is_empty() {
            push(
                line(&r.approvers),
                Code::Schema,
                "`approvers` names nobody".into(),
                "give groups (from api.tokens or the OpenID provider's groups claim) or users (identity names)",
            );
        }
        let required = match &r.required {
            None => 1,
            Some(n) if n.value == 0 => {
                push(
                    line(n),
                    Code::Schema,
                    "`required` is 0".into(),
                    "give how many distinct people must approve, at least 1",
                );
                1
            }
            Some(n) => n.value.min(100) as usize,
        };
        if ok {
            rules.push(Rule {
                name,
                file: file.to_string(),
                line: at,
                profiles: r.profiles.into_iter().map(|p| p.value).collect(),
                tags: r.tags.into_iter().map(|t| t.value).collect(),
                waves: r.waves.into_iter().map(|w| w.value).collect(),
                groups: approvers.groups.clone(),
                users: approvers.users.clone(),
                required,
            });
        }
    }
    let _ = raw.metadata.description;
    rules
}

#[cfg(test)]
mod tests {
    use crate::source::DirTree;

    const PROFILE: &str = "apiVersion: strata.dev/v1\nkind: Profile\nmetadata: { name: aws-profile, version: 1.0.0 }\nspec:\n  layers: []\n";
    const CLUSTER: &str = "apiVersion: strata.dev/v1\nkind: Cluster\nmetadata: { name: prod-1, tags: [\"env:prod\"] }\nspec:\n  profile: { name: aws-profile, version: \"1.0.0\" }\n";

    /// A repository with profile aws-profile, cluster prod-1 on it, and `files`.
    fn load(files: &[(&str, &str)]) -> Result<Vec<crate::approval::Rule>, String> {
        let dir = tempfile::tempdir().unwrap();
        let write = |path: &str, text: &str| {
            let path = dir.path().join(path);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, text).unwrap();
        };
        write("profiles/aws-profile/1.0.0/profile.yaml", PROFILE);
        write("clusters/prod-1.yaml", CLUSTER);
        for (path, text) in files {
            write(path, text);
        }
        let (model, diags) = crate::repo::load_partial(&DirTree::new(dir.path().to_path_buf()));
        if diags.iter().next().is_some() { Err(diags.to_string()) } else { Ok(model.approval_rules) }
    }

    #[test]
    fn rules_load_and_bad_ones_are_reported_at_their_line() {
        let good = "apiVersion: strata.dev/v1\nkind: ApprovalRules\nmetadata: { name: prod }\nspec:\n  rules:\n    - name: two-sre\n      profiles: [aws-profile]\n      tags: [\"env:prod\"]\n      approvers: { groups: [sre], users: [carol] }\n      required: 2\n    - approvers: { users: [alice] }\n";
        let rules = load(&[("approvals/prod.yaml", good)]).unwrap();
        assert_eq!(rules.len(), 2);
        assert_eq!((rules[0].name.as_str(), rules[0].line, rules[0].required), ("prod/two-sre", 6, 2));
        assert_eq!((rules[1].name.as_str(), rules[1].required), ("prod/2", 1));
        let bad = "apiVersion: strata.dev/v1\nkind: ApprovalRules\nmetadata: { name: prod }\nspec:\n  rules:\n    - profiles: [nope]\n      waves: [canary]\n      approvers: {}\n      required: 0\n";
        let text = load(&[("approvals/prod.yaml", bad)]).unwrap_err();
        for want in [
            "approvals/prod.yaml:6: approval rule prod/1: profile `nope` does not exist",
            "approvals/prod.yaml:7: approval rule prod/1: wave `canary` is in no rollout",
            "approvals/prod.yaml:8: approval rule prod/1: `approvers` names nobody",
            "approvals/prod.yaml:9: approval rule prod/1: `required` is 0",
        ] {
            assert!(text.contains(want), "{want}\n{text}");
        }
        let unknown = good.replace("required: 2", "requried: 2");
        let text = load(&[("approvals/prod.yaml", &unknown)]).unwrap_err();
        assert!(text.contains("approvals/prod.yaml:10") && text.contains("requried"), "{text}");
    }
}
