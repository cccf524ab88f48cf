//! What of a tool's error message may leave strata: the message by line, bounded, with every
//! value that is — or looks like — a secret replaced.
//!
//! ```text
//!   kustomize / helm stderr ──> lines (at most MAX_LINES, each cut at MAX_LINE) ──> known values → markers ──> secret-looking tokens → <redacted>
//!   the layer's inputs ──> Secrets' data and stringData, secretGenerator literals, files and envs, helm values under credential-like keys
//! ```
//!
//! Tools print what they were working on when they fail: kustomize quotes the node a replacement
//! did not fit, Secret values included. The values strata can know are those of its inputs; they
//! become the same markers plans show (base64 and escaped forms included, as in
//! [`Redactor::scrub`]). What it cannot know — a value a chart computes, one in a file of a shape
//! strata does not parse — is caught by its look: a long token of base64 characters mixing upper
//! case, lower case and digits, or a PEM block.

use serde_json::{Map, Value, json};

use crate::model::{Layer, LayerKind};
use crate::redact::{Redactor, is_secret};
use crate::source::{self, EntryKind, Tree};

/// Lines of a tool's message kept, and characters of each.
const MAX_LINES: usize = 20;
const MAX_LINE: usize = 240;
/// Bytes of the layer's inputs read to find secret values: the error path stays bounded too.
const MAX_INPUT_BYTES: u64 = 32 * 1024 * 1024;
/// Shortest token taken for a secret by its look.
const MIN_LOOKS_SECRET: usize = 16;

/// `message`, as it may be shown: bounded, secret values of the layer's inputs as markers, and
/// anything else that looks like a secret replaced.
pub fn tool_message(
    message: &str,
    tree: &dyn Tree,
    layer: &Layer,
    values: &Map<String, Value>,
    redactor: &Redactor,
) -> String {
    let bounded = bounded(message);
    let mut text = bounded;
    for secret in known_secrets(tree, layer, values) {
        text = redactor.scrub(&text, &secret, &[]);
    }
    looks_secret_replaced(&text)
}

/// The first [`MAX_LINES`] lines, each at most [`MAX_LINE`] characters, and how many were left.
fn bounded(message: &str) -> String {
    let lines: Vec<&str> = message.lines().collect();
    let mut out: Vec<String> = lines
        .iter()
        .take(MAX_LINES)
        .map(|line| {
            let mut cut: String = line.chars().take(MAX_LINE).collect();
            if line.chars().nth(MAX_LINE).is_some() {
                cut.push('…');
            }
            cut
        })
        .collect();
    if lines.len() > MAX_LINES {
        out.push(format!("({} more lines: run the tool by hand to see them)", lines.len() - MAX_LINES));
    }
    out.join("\n")
}

/// Secrets (real or made up to carry values) holding every secret value the layer's inputs
/// give the tool.
fn known_secrets(tree: &dyn Tree, layer: &Layer, values: &Map<String, Value>) -> Vec<Value> {
    let mut secrets = Vec::new();
    let mut generated = Map::new();
    let roots = match layer.kind {
        LayerKind::Kustomize => super::kustomization::reached(tree, &layer.source).unwrap_or_default(),
        _ => vec![layer.source.clone()],
    };
    let mut budget = MAX_INPUT_BYTES;
    let mut read = |path: &str| -> Option<String> {
        let bytes = source::read_file(tree, path).ok()?;
        budget = budget.checked_sub(bytes.len() as u64)?;
        String::from_utf8(bytes).ok()
    };
    let mut files = Vec::new();
    for root in roots {
        match source::resolve(tree, &root) {
            Ok((_, EntryKind::Dir)) => {
                files.extend(source::walk_files(tree, &root).unwrap_or_default().into_iter().map(|(shown, _)| shown))
            }
            Ok(_) => files.push(root),
            Err(_) => {}
        }
    }
    for file in &files {
        let file = file.as_str();
        let name = file.rsplit('/').next().unwrap_or(file);
        let is_yaml = [".yaml", ".yml", ".json"].iter().any(|ext| name.ends_with(ext)) || name == "Kustomization";
        if !is_yaml {
            continue;
        }
        let Some(text) = read(file) else { continue };
        let Ok(docs) = crate::yaml::parse_documents(&text) else { continue };
        let dir = file.rsplit_once('/').map(|(d, _)| d).unwrap_or("");
        for doc in docs {
            if is_secret(&doc.value) {
                secrets.push(doc.value);
            } else if matches!(name, "kustomization.yaml" | "kustomization.yml" | "Kustomization") {
                generator_values(&doc.value, dir, &mut read, &mut generated);
            }
        }
    }
    // The values a SOPS-encrypted input holds encrypted are secrets, whatever their keys (a helm
    // values file, a ConfigMap someone encrypted, a generator's file).
    let encrypted = files.iter().chain(if layer.kind == LayerKind::Helm { &layer.values_files[..] } else { &[] });
    for file in encrypted {
        let Ok((real, _)) = source::resolve(tree, file) else { continue };
        for value in crate::source::sops::encrypted_values(tree, &real) {
            generated.insert(format!("v{}", generated.len()), Value::String(value));
        }
    }
    credential_values(values, &mut generated);
    if !generated.is_empty() {
        secrets.push(json!({"apiVersion": "v1", "kind": "Secret", "stringData": generated}));
    }
    secrets
}

/// The values a kustomization's secretGenerators make Secrets of: literals, files and env files.
fn generator_values(
    kustomization: &Value,
    dir: &str,
    read: &mut dyn FnMut(&str) -> Option<String>,
    out: &mut Map<String, Value>,
) {
    let generators = kustomization["secretGenerator"].as_array().into_iter().flatten();
    let mut add = |value: &str| {
        let key = format!("v{}", out.len());
        out.insert(key, Value::String(value.to_string()));
    };
    for generator in generators {
        for literal in generator["literals"].as_array().into_iter().flatten().filter_map(Value::as_str) {
            add(literal.split_once('=').map(|(_, v)| v).unwrap_or(literal));
        }
        let in_dir = |path: &str| source::join(dir, path);
        for file in generator["files"].as_array().into_iter().flatten().filter_map(Value::as_str) {
            let path = file.split_once('=').map(|(_, p)| p).unwrap_or(file);
            if let Some(content) = in_dir(path).and_then(|p| read(&p)) {
                add(content.trim_end());
            }
        }
        let envs =
            generator["envs"].as_array().into_iter().flatten().chain(generator.get("env")).filter_map(Value::as_str);
        for env in envs {
            let Some(content) = in_dir(env).and_then(|p| read(&p)) else { continue };
            for line in content.lines().map(str::trim).filter(|l| !l.is_empty() && !l.starts_with('#')) {
                add(line.split_once('=').map(|(_, v)| v).unwrap_or(line));
            }
        }
    }
}

/// String values under keys that name a credential (`password`, `token`, `secret`, `key`, …),
/// anywhere in a helm layer's values.
fn credential_values(values: &Map<String, Value>, out: &mut Map<String, Value>) {
    const WORDS: &[&str] = &["pass", "secret", "token", "key", "cred", "auth", "cert", "private"];
    let mut pending: Vec<(&str, &Value)> = values.iter().map(|(k, v)| (k.as_str(), v)).collect();
    while let Some((key, value)) = pending.pop() {
        match value {
            Value::Object(map) => pending.extend(map.iter().map(|(k, v)| (k.as_str(), v))),
            Value::Array(items) => pending.extend(items.iter().map(|v| (key, v))),
            Value::String(s) if !s.is_empty() => {
                let lower = key.to_ascii_lowercase();
                if WORDS.iter().any(|w| lower.contains(w)) {
                    let name = format!("v{}", out.len());
                    out.insert(name, Value::String(s.clone()));
                }
            }
            _ => {}
        }
    }
}

/// `text` with every token that looks like a secret — [`MIN_LOOKS_SECRET`] or more characters
/// of the base64 alphabets mixing upper case, lower case and digits — and every PEM block
/// replaced by `<redacted>`. Names (lower case), digests (hex) and words are left as they are.
fn looks_secret_replaced(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut in_pem = false;
    for (i, line) in text.split('\n').enumerate() {
        if i > 0 {
            out.push('\n');
        }
        if line.contains("-----BEGIN ") {
            in_pem = !line.contains("-----END ");
            out.push_str("<redacted PEM block>");
            continue;
        }
        if in_pem {
            in_pem = !line.contains("-----END ");
            continue;
        }
        let mut token = String::new();
        for c in line.chars() {
            if c.is_ascii_alphanumeric() || matches!(c, '+' | '/' | '=' | '_' | '-') {
                token.push(c);
            } else {
                flush(&mut token, &mut out);
                out.push(c);
            }
        }
        flush(&mut token, &mut out);
    }
    out
}

fn flush(token: &mut String, out: &mut String) {
    let looks = token.len() >= MIN_LOOKS_SECRET
        && token.chars().any(|c| c.is_ascii_uppercase())
        && token.chars().any(|c| c.is_ascii_lowercase())
        && token.chars().any(|c| c.is_ascii_digit());
    out.push_str(if looks { "<redacted>" } else { token });
    token.clear();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_are_cut_to_lines_and_characters() {
        let long = "x".repeat(500);
        let message = format!("{long}\n{}", "line\n".repeat(30));
        let shown = bounded(&message);
        assert_eq!(shown.lines().count(), MAX_LINES + 1);
        assert!(shown.lines().next().unwrap().ends_with('…'));
        assert!(shown.ends_with("(11 more lines: run the tool by hand to see them)"), "{shown}");
    }

    #[test]
    fn tokens_that_look_like_secrets_are_replaced_and_names_are_not() {
        let text = "unable to find field \"spec.x\" in target ConfigMap/apps/hello-universe-frontend: node contents:\n  password: SGVsbG8tV29ybGQtMjAyNg==\n  token: tok-Ex4mple-91c2e0b\n  digest: sha256:0123456789abcdef0123456789abcdef\n-----BEGIN RSA PRIVATE KEY-----\nMIIEpAIBAAKCAQEA\n-----END RSA PRIVATE KEY-----\nafter";
        let shown = looks_secret_replaced(text);
        for gone in ["SGVsbG8tV29ybGQtMjAyNg==", "tok-Ex4mple-91c2e0b", "MIIEpAIBAAKCAQEA"] {
            assert!(!shown.contains(gone), "{gone}: {shown}");
        }
        for kept in ["hello-universe-frontend", "sha256:0123456789abcdef0123456789abcdef", "spec.x", "after"] {
            assert!(shown.contains(kept), "{kept}: {shown}");
        }
    }
}
