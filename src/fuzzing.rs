//! Fuzz target bodies: bytes in, nothing out but a panic when strata mishandles them.
//!
//! ```text
//!   fuzz/fuzz_targets/<name>.rs (cargo fuzz, libFuzzer) ─┐
//!                                                        ├──> TARGETS[name](bytes)
//!   tests/it/fuzz.rs (seed corpus + seeded mutations, CI) ──┘
//! ```
//!
//! Each body feeds hostile input to one parser the way strata meets it — a repository, a
//! maintenance window, templates and values, the host config, a webhook signature, a forge's
//! answer — and checks, beyond "does not panic", what must hold for every input. Inputs with more
//! than one part are text archives (see [`archive`]), so a seed corpus stays readable and a
//! mutation can move bytes between files.

use std::path::Path;

use serde_json::Value;

use crate::render::tools::{HelmRequest, ToolError, Tools, Workspace};
use crate::source::MemTree;

/// A target's body: any bytes, a panic when strata mishandles them.
pub type Target = fn(&[u8]);

/// Every target, by the name of its cargo-fuzz binary and corpus directory.
pub const TARGETS: &[(&str, Target)] = &[
    ("repo", repo),
    ("window", window),
    ("template", template),
    ("config", config),
    ("webhook", webhook),
    ("forge", forge),
];

/// For the cargo-fuzz binaries, before each input: libfuzzer-sys installs a panic hook that
/// aborts on every panic, even one strata catches itself (a template engine panic that becomes a
/// diagnostic). Putting std's hook back leaves the rest to libfuzzer-sys, which aborts — a crash
/// for libFuzzer — on any panic that unwinds out of strata.
pub fn let_strata_catch_panics() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| drop(std::panic::take_hook()));
}

/// Splits an input into named parts: a line `>>> NAME` starts part NAME, which runs to the next
/// such line. Bytes before the first header are part `""`.
///
/// ```text
/// >>> clusters/a.yaml
/// apiVersion: strata.dev/v1
/// ...
/// >>> packs/app -> ../elsewhere          (in `repo`: a symlink)
/// ```
pub fn archive(data: &[u8]) -> Vec<(String, &[u8])> {
    const HEADER: &[u8] = b">>> ";
    let mut parts = Vec::new();
    let mut name = String::new();
    let mut start = 0;
    let mut at = 0;
    while at <= data.len() {
        let line_end = data[at..].iter().position(|b| *b == b'\n').map_or(data.len(), |i| at + i);
        if data[at..line_end].starts_with(HEADER) {
            parts.push((std::mem::take(&mut name), &data[start..at.saturating_sub(1).max(start)]));
            name = String::from_utf8_lossy(&data[at + HEADER.len()..line_end]).trim().to_string();
            start = (line_end + 1).min(data.len());
        }
        at = line_end + 1;
    }
    parts.push((name, &data[start.min(data.len())..]));
    parts.retain(|(name, bytes)| !(name.is_empty() && bytes.is_empty()));
    parts
}

/// kustomize and helm are processes; a fuzzer runs none. Layers that need them fail as a missing
/// tool does.
struct NoTools;

impl Tools for NoTools {
    fn kustomize(&self, _workspace: &Workspace, _dir: &Path) -> Result<String, ToolError> {
        Err(ToolError::Missing { tool: "kustomize", help: "not run while fuzzing" })
    }

    fn helm_template(&self, _workspace: &Workspace, _request: &HelmRequest) -> Result<String, ToolError> {
        Err(ToolError::Missing { tool: "helm", help: "not run while fuzzing" })
    }
}

/// The repository loader and everything after it that is pure: the input is an archive of the
/// repository's files (`>>> path`, or `>>> path -> target` for a symlink); it is loaded,
/// validated, and every cluster that loads is rendered and planned as new, in all three formats.
pub fn repo(data: &[u8]) {
    let tree = repo_tree(data);
    let (model, diags) = crate::repo::load_partial(&tree);
    for d in diags.iter() {
        assert!(!d.to_string().is_empty());
    }
    let head =
        crate::plan::Side { revision: Some("0123456789abcdef0123456789abcdef01234567"), tree: &tree, model: &model };
    if let Ok(plan) = crate::plan::plan(None, head, None, &NoTools, crate::render::Settings::process()) {
        crate::plan::format::text(&plan, false);
        assert!(crate::plan::format::markdown(&plan).starts_with(crate::plan::format::MARKDOWN_MARKER));
        let json: Value = serde_json::from_str(&crate::plan::format::json(&plan)).expect("plan JSON parses");
        assert!(json.is_object());
    }
}

/// The repository an archive describes (at most 64 entries).
pub fn repo_tree(data: &[u8]) -> MemTree {
    let mut tree = MemTree::new();
    for (name, content) in archive(data).into_iter().take(64) {
        match name.split_once(" -> ") {
            Some((link, target)) => tree.symlink(link.trim(), target.trim()),
            None => tree.file(&name, content),
        };
    }
    tree
}

/// The maintenance window parser: a window that parses must print as what was written, parse
/// again to the same window, and answer `is_open` for any instant.
pub fn window(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let Ok(window) = crate::window::Window::parse(&text) else { return };
    let again = crate::window::Window::parse(&window.to_string()).expect("a window's text parses again");
    assert_eq!(window, again);
    let seed = data.iter().fold(0i64, |acc, b| acc.wrapping_mul(31).wrapping_add(*b as i64));
    for unix in [i64::MIN, -1, 0, 1_795_824_000, i64::MAX, seed, seed.wrapping_mul(7919)] {
        window.is_open(unix);
    }
}

/// A `manifests` layer with fuzzed templates and values: parts `>>> values` (YAML) and any other
/// `>>> NAME` (a template file of the layer; an input without headers is one template), rendered
/// for one cluster through the whole renderer (templates, YAML parsing, checks, stamping).
pub fn template(data: &[u8]) {
    let mut tree = MemTree::new();
    let mut values = Value::Object(Default::default());
    for (name, content) in archive(data).into_iter().take(16) {
        if name == "values" {
            let text = String::from_utf8_lossy(content);
            if let Ok(v @ Value::Object(_)) = crate::yaml::parse::<Value>(&text) {
                values = v;
            }
        } else {
            let name = if name.is_empty() { "template.yaml".to_string() } else { name };
            tree.file(&format!("packs/app/{name}"), content);
        }
    }
    tree.file(
        "profiles/p/1.0.0/profile.yaml",
        format!(
            "apiVersion: strata.dev/v1\nkind: Profile\nmetadata: {{name: p, version: 1.0.0}}\nspec:\n  layers:\n  - {{name: app, type: manifests, source: packs/app, namespace: apps, values: {values}}}\n"
        ),
    );
    tree.file(
        "clusters/c.yaml",
        "apiVersion: strata.dev/v1\nkind: Cluster\nmetadata: {name: c, tags: [env:fuzz]}\nspec:\n  profile: {name: p, version: 1.0.0}\n",
    );
    let Ok(model) = crate::repo::load(&tree) else { return };
    let renderer = crate::render::Renderer::new(&tree, &model, &NoTools);
    if let Ok(set) = renderer.render(&model.clusters["c"]) {
        set.to_yaml(Some("0123456789abcdef0123456789abcdef01234567"));
        set.pack().unpack();
    }
}

/// The host config (`strata.yaml`).
pub fn config(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    if let Err(diags) = crate::config::Config::parse(Path::new("/etc/strata/strata.yaml"), &text) {
        assert!(!diags.is_empty());
    }
}

/// The webhook signature check (`X-Hub-Signature-256`, `X-Gitea-Signature`): the input is a
/// secret line, a signature line and the body. The check must accept exactly the HMAC-SHA256 of
/// the body in hex (either case, with or without `sha256=`): the given signature, and the right
/// one with one character changed where the input's second-to-last byte says, to its last byte.
///
/// The rest of webhook handling (reading headers, GitLab's token compared in constant time,
/// the event name) is not a pure function today; it is exercised over HTTP in tests/it/daemon.rs.
pub fn webhook(data: &[u8]) {
    use hmac::{Hmac, KeyInit, Mac};
    let mut lines = data.splitn(3, |b| *b == b'\n');
    let secret = lines.next().unwrap_or_default();
    let signature = String::from_utf8_lossy(lines.next().unwrap_or_default()).into_owned();
    let body = lines.next().unwrap_or_default();
    let Ok(mut mac) = Hmac::<sha2::Sha256>::new_from_slice(secret) else { return };
    mac.update(body);
    let expected: String = mac.finalize().into_bytes().iter().map(|b| format!("{b:02x}")).collect();
    let check = crate::daemon::http::valid_hmac;
    let right = |sig: &str| sig.strip_prefix("sha256=").unwrap_or(sig).eq_ignore_ascii_case(&expected);
    assert_eq!(check(secret, body, &signature), right(&signature), "signature {signature:?}");
    assert!(check(secret, body, &format!("sha256={expected}")));
    let (position, replacement) = match data {
        [.., at, by] => (*at as usize % expected.len(), *by as char),
        _ => (0, '+'),
    };
    let mut edited: Vec<char> = expected.chars().collect();
    edited[position] = replacement;
    let edited: String = edited.into_iter().collect();
    assert_eq!(check(secret, body, &edited), right(&edited), "signature {edited:?}");
}

/// A forge's answer to a comment listing: a status line, header lines, a blank line, the body.
/// Rate limits are read from it, strata's comment looked for, and the next page taken only ever
/// on the API's own host.
pub fn forge(data: &[u8]) {
    use crate::report::{Forge, Provider};
    let text = String::from_utf8_lossy(data);
    let (head, body) = text.split_once("\n\n").unwrap_or((&text, ""));
    let mut lines = head.lines();
    let status: u16 = lines.next().and_then(|l| l.trim().parse().ok()).unwrap_or(200);
    let mut headers = http::HeaderMap::new();
    for line in lines {
        let Some((name, value)) = line.split_once(':') else { continue };
        if let (Ok(name), Ok(value)) =
            (http::HeaderName::try_from(name.trim()), http::HeaderValue::try_from(value.trim()))
        {
            headers.append(name, value);
        }
    }
    crate::report::http::rate_limited(status, &headers);
    let listing: Value = serde_json::from_str(body).unwrap_or(Value::Null);
    for provider in [Provider::Github, Provider::Gitea, Provider::Gitlab] {
        let forge = Forge { provider, api: "https://forge.example.com/api".into(), repo: "platform/fleet".into() };
        forge.find_comment(&listing, crate::plan::format::MARKDOWN_MARKER);
        let request = forge.list_comments_request(7).expect("these providers list comments");
        if let Ok(Some(next)) = forge.next_page(&request, &headers) {
            let url = url::Url::parse(&next.url).expect("a next page is a URL");
            assert_eq!(url.origin(), url::Url::parse("https://forge.example.com/").unwrap().origin(), "{}", next.url);
            assert!(next.url.parse::<http::Uri>().is_ok(), "{} is a URI hyper can send to", next.url);
        }
    }
}
