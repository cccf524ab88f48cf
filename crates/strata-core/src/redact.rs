//! Redaction: what of an object may leave strata.
//!
//! ```text
//!   object + its sensitive pointers ──> shown copy     every sensitive value → `<redacted hmac:1a2b3c4d>`
//!   object + a field's pointer/value ──> shown value    (a drift finding's live and desired sides)
//!   object + error text              ──> scrubbed text  every sensitive value the text echoes → its marker
//! ```
//!
//! Sensitive are every value under `data` and `stringData` of a core `v1` Secret, the fields a
//! profile layer or cluster declares `sensitive` (JSON pointers, `*` for any key or list item),
//! and — on any object with something sensitive — what copies its content: the
//! `kubectl.kubernetes.io/last-applied-configuration` annotation, strata's own applied digest
//! (an unkeyed hash that could be brute-forced) and `managedFields`.
//!
//! A marker is HMAC-SHA256 of the value's bytes (base64 `data` decoded first, so `data` and
//! `stringData` holding the same value get the same marker), truncated to 32 bits. A reviewer
//! sees that a key was added, removed or changed and whether two values are equal; without the
//! key nobody can test guesses against a marker. The daemon keeps one key for its lifetime and
//! across restarts ([`Redactor::from_key_file`], the one piece of IO here), so markers in stored
//! diffs and drift findings stay comparable; every CLI process draws its own.
//!
//! Plans, diffs, drift findings, statuses, logs, the API and the view show only redacted copies;
//! `strata render`, which exists to produce the manifests, shows real values.

use std::fmt;
use std::io::Write as _;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};

use aho_corasick::{AhoCorasick, MatchKind};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use hmac::{Hmac, KeyInit, Mac};
use serde_json::{Map, Value};
use sha2::Sha256;

/// How a marker starts: `<redacted hmac:1a2b3c4d>`.
pub const MARKER_PREFIX: &str = "<redacted hmac:";
/// Hex digits of the keyed hash a marker shows: enough to tell values apart in one review.
const MARKER_HEX: usize = 8;
/// Values shorter than this are scrubbed from error text only where it quotes them
/// (`Invalid value: "ab"`): replacing every bare `ab` would garble the message.
const MIN_BARE_SCRUB: usize = 4;

/// Pointers into every object that has anything sensitive: the places that copy its content.
const COPIES: &[&str] = &[
    "/metadata/annotations/kubectl.kubernetes.io~1last-applied-configuration",
    "/metadata/annotations/strata.dev~1applied-digest",
    "/metadata/managedFields",
];

/// Makes the copies of objects that may be shown. Cheap to clone; its key never leaves it.
#[derive(Clone)]
pub struct Redactor {
    key: [u8; 32],
}

impl fmt::Debug for Redactor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Redactor { key: <hidden> }")
    }
}

impl Default for Redactor {
    /// A fresh random key: markers are comparable within this process only.
    fn default() -> Self {
        Redactor::random()
    }
}

/// Why the daemon's redaction key cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("{}: {source} (the daemon keeps its redaction key there; check the state directory)", path.display())]
    Io { path: PathBuf, source: std::io::Error },
    #[error(
        "{}: {len} bytes, not a 32-byte strata redaction key (delete it and strata makes a new one; stored diffs are re-derived)",
        path.display()
    )]
    Corrupt { path: PathBuf, len: usize },
    #[error(
        "{}: readable by group or others (mode {mode:o}); run `chmod 600` on it, or delete it and strata makes a new one",
        path.display()
    )]
    Exposed { path: PathBuf, mode: u32 },
    #[error("the operating system's random source failed: {0}")]
    Random(String),
}

fn random_key() -> Result<[u8; 32], KeyError> {
    let mut key = [0u8; 32];
    getrandom::fill(&mut key).map_err(|e| KeyError::Random(e.to_string()))?;
    Ok(key)
}

impl Redactor {
    pub fn new(key: [u8; 32]) -> Redactor {
        Redactor { key }
    }

    /// A key from the operating system's random source (never a seeded PRNG: a guessable key
    /// would let anyone test guesses against markers).
    pub fn random() -> Redactor {
        Redactor::new(random_key().expect("the operating system's random source works"))
    }

    /// The daemon's key in `path`: read when it exists, else created with mode 0600 (written to
    /// a temporary file and linked into place, so a crash never leaves half a key).
    pub fn from_key_file(path: &Path) -> Result<Redactor, KeyError> {
        let io = |source| KeyError::Io { path: path.to_path_buf(), source };
        match std::fs::read(path) {
            Ok(bytes) => {
                let mode = std::fs::metadata(path).map_err(io)?.permissions().mode() & 0o777;
                if mode & 0o077 != 0 {
                    return Err(KeyError::Exposed { path: path.to_path_buf(), mode });
                }
                let key: [u8; 32] = bytes
                    .as_slice()
                    .try_into()
                    .map_err(|_| KeyError::Corrupt { path: path.to_path_buf(), len: bytes.len() })?;
                Ok(Redactor::new(key))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let key = random_key()?;
                let dir = path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
                // NamedTempFile creates its file 0600.
                let mut file = tempfile::NamedTempFile::new_in(dir).map_err(io)?;
                file.write_all(&key).and_then(|_| file.as_file().sync_all()).map_err(io)?;
                match file.persist_noclobber(path) {
                    Ok(_) => {
                        std::fs::File::open(dir).and_then(|d| d.sync_all()).map_err(io)?;
                        Ok(Redactor::new(key))
                    }
                    // Another process made one first: use that.
                    Err(e) if e.error.kind() == std::io::ErrorKind::AlreadyExists => Redactor::from_key_file(path),
                    Err(e) => Err(io(e.error)),
                }
            }
            Err(e) => Err(io(e)),
        }
    }

    /// `<redacted hmac:1a2b3c4d>` for `bytes`.
    pub fn marker(&self, bytes: &[u8]) -> String {
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.key).expect("HMAC takes any key length");
        mac.update(bytes);
        let digest = mac.finalize().into_bytes();
        let hex: String = digest.iter().take(MARKER_HEX / 2).map(|b| format!("{b:02x}")).collect();
        format!("{MARKER_PREFIX}{hex}>")
    }

    /// The copy of `object` that may be shown, `sensitive` being the pointers declared for it.
    pub fn shown(&self, object: &Value, sensitive: &[String]) -> Value {
        self.shown_at(object, sensitive, "", object)
    }

    /// `value`, found at `pointer` in `object`, as it may be shown: a drift finding's side.
    pub fn shown_at(&self, object: &Value, sensitive: &[String], pointer: &str, value: &Value) -> Value {
        let patterns = patterns(object, sensitive, true);
        if patterns.is_empty() {
            return value.clone();
        }
        let mut path = tokens(pointer);
        self.walk(&patterns, &mut path, value, Marks::Short)
    }

    /// What a digest of `object` is computed over when it holds anything sensitive: a copy with
    /// each sensitive value replaced by its whole keyed hash (not the 32 bits a marker shows, so
    /// every change of a value changes the digest). `None` when nothing in it is sensitive: its
    /// digest is of its content as it is. Digests stored and shown outside strata (inventories,
    /// ClusterStates, the API) so cannot be tested against guessed values without the key.
    pub fn keyed(&self, object: &Value, sensitive: &[String]) -> Option<Value> {
        let patterns = patterns(object, sensitive, false);
        if patterns.is_empty() {
            return None;
        }
        Some(self.walk(&patterns, &mut Vec::new(), object, Marks::Full))
    }

    /// `text` (an error about `object`, say an API server echoing an invalid value) with every
    /// sensitive value of `object` it contains replaced by that value's marker.
    pub fn scrub(&self, text: &str, object: &Value, sensitive: &[String]) -> String {
        // The metadata copies hold nothing the sensitive fields do not (their own leaves, such
        // as manager names, would only garble the text).
        let patterns = patterns(object, sensitive, false);
        if patterns.is_empty() {
            return text.to_string();
        }
        let mut found = Vec::new();
        self.collect(&patterns, &mut Vec::new(), object, &mut found);
        let mut needles: Vec<String> = Vec::new();
        let mut markers: Vec<String> = Vec::new();
        for (needle, marker) in found {
            let (needle, marker) = if needle.chars().count() >= MIN_BARE_SCRUB {
                (needle, marker)
            } else if !needle.is_empty() {
                (format!("\"{needle}\""), format!("\"{marker}\""))
            } else {
                continue;
            };
            if !needles.contains(&needle) {
                needles.push(needle);
                markers.push(marker);
            }
        }
        if needles.is_empty() {
            return text.to_string();
        }
        // Leftmost-longest in one pass: a value that contains another is replaced whole, and
        // no replacement is searched again.
        let matcher = AhoCorasick::builder()
            .match_kind(MatchKind::LeftmostLongest)
            .build(&needles)
            .expect("literal needles always build");
        matcher.replace_all(text, &markers)
    }

    fn walk(&self, patterns: &[Pattern], path: &mut Vec<String>, value: &Value, marks: Marks) -> Value {
        if let Some(pattern) = patterns.iter().find(|p| p.covers(path)) {
            // A declared pointer covering all of a Secret's `data` (say) would make it one
            // marker; its per-key markers hide as much and tell more.
            let refined = value.is_object() && patterns.iter().any(|p| p.per_key && p.leads_below(path));
            if !refined {
                // The base64 of a Secret's `data` is decoded only for the value at the key itself.
                let base64 = pattern.base64 && pattern.tokens.len() == path.len();
                return self.mark(value, base64, marks);
            }
        }
        if !patterns.iter().any(|p| p.leads_below(path)) {
            return value.clone();
        }
        match value {
            Value::Object(map) => {
                let mut out = Map::new();
                for (key, child) in map {
                    path.push(key.clone());
                    out.insert(key.clone(), self.walk(patterns, path, child, marks));
                    path.pop();
                }
                Value::Object(out)
            }
            Value::Array(items) => {
                let mut out = Vec::with_capacity(items.len());
                for (i, child) in items.iter().enumerate() {
                    path.push(i.to_string());
                    out.push(self.walk(patterns, path, child, marks));
                    path.pop();
                }
                Value::Array(out)
            }
            Value::Null => Value::Null,
            // A scalar where a sensitive field was expected inside it (`data: "…"`): it may be
            // that field's content in another shape, so it is not shown either.
            scalar => self.mark(scalar, false, marks),
        }
    }

    /// The marker for a sensitive value; `null` is shown as it is (it holds nothing).
    fn mark(&self, value: &Value, base64: bool, marks: Marks) -> Value {
        match (value, marks) {
            (Value::Null, _) => Value::Null,
            (value, Marks::Short) => Value::String(self.marker(&bytes_of(value, base64))),
            (value, Marks::Full) => Value::String(self.keyed_hash(&bytes_of(value, base64))),
        }
    }

    /// The whole keyed hash of `bytes`, hex.
    fn keyed_hash(&self, bytes: &[u8]) -> String {
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.key).expect("HMAC takes any key length");
        mac.update(bytes);
        mac.finalize().into_bytes().iter().map(|b| format!("{b:02x}")).collect()
    }

    /// Every sensitive scalar in `value` (at `path`), with the forms error text may echo it in.
    fn collect(&self, patterns: &[Pattern], path: &mut Vec<String>, value: &Value, out: &mut Vec<(String, String)>) {
        let covering = patterns.iter().find(|p| p.covers(path));
        if covering.is_none() && !patterns.iter().any(|p| p.leads_below(path)) {
            return;
        }
        match value {
            Value::Object(map) => {
                for (key, child) in map {
                    path.push(key.clone());
                    self.collect(patterns, path, child, out);
                    path.pop();
                }
            }
            Value::Array(items) => {
                for (i, child) in items.iter().enumerate() {
                    path.push(i.to_string());
                    self.collect(patterns, path, child, out);
                    path.pop();
                }
            }
            Value::Null => {}
            scalar => {
                let base64 = covering.is_some_and(|p| p.base64 && p.tokens.len() == path.len());
                let marker = self.marker(&bytes_of(scalar, base64));
                for form in echoed_forms(scalar, base64) {
                    out.push((form, marker.clone()));
                }
            }
        }
    }
}

/// The bytes a marker is computed over: base64 `data` decoded (as is invalid base64), strings
/// as they are, anything else as its JSON text.
fn bytes_of(value: &Value, base64: bool) -> Vec<u8> {
    match value {
        Value::String(s) if base64 => BASE64.decode(s).unwrap_or_else(|_| s.as_bytes().to_vec()),
        Value::String(s) => s.as_bytes().to_vec(),
        other => other.to_string().into_bytes(),
    }
}

/// How an error message may quote a value: as it is, JSON-escaped, escaped as Go's `%q` does
/// (the API server's validation errors), the plain text of a base64 value, the base64 of a
/// plain one (the API server stores `stringData` base64-encoded in `data`), and each line of a
/// value of several (a PEM key, which a message may quote a line of).
fn echoed_forms(value: &Value, base64: bool) -> Vec<String> {
    let text = match value {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    let mut forms = vec![text.clone()];
    let other = if base64 {
        BASE64.decode(&text).ok().and_then(|b| String::from_utf8(b).ok())
    } else {
        value.is_string().then(|| BASE64.encode(&text))
    };
    forms.extend(other);
    let lines: Vec<String> =
        forms.iter().filter(|f| f.contains('\n')).flat_map(|f| f.lines().map(str::trim).map(str::to_string)).collect();
    forms.extend(lines.into_iter().filter(|l| l.chars().count() >= MIN_BARE_SCRUB));
    for form in forms.clone() {
        let json = serde_json::to_string(&form).expect("strings serialise");
        for escaped in [json[1..json.len() - 1].to_string(), go_escaped(&form)] {
            if !forms.contains(&escaped) {
                forms.push(escaped);
            }
        }
    }
    forms
}

/// `text` as Go's `%q` writes it, without the quotes (for the ASCII controls where it differs
/// from JSON; printable text is kept as it is by both).
fn go_escaped(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '\x07' => out.push_str("\\a"),
            '\x08' => out.push_str("\\b"),
            '\x0c' => out.push_str("\\f"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\x0b' => out.push_str("\\v"),
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            c if (c as u32) < 0x20 || c == '\x7f' => out.push_str(&format!("\\x{:02x}", c as u32)),
            c => out.push(c),
        }
    }
    out
}

/// What a sensitive value becomes: a marker people see, or the whole keyed hash a digest covers.
#[derive(Clone, Copy)]
enum Marks {
    Short,
    Full,
}

/// A sensitive place: pointer tokens, `*` for any key or index.
#[derive(Debug)]
struct Pattern {
    tokens: Vec<String>,
    /// Values here are base64 (a Secret's `data`).
    base64: bool,
    /// A Secret's own `data` or `stringData`: a marker per key.
    per_key: bool,
}

impl Pattern {
    fn new(pointer: &str, base64: bool) -> Pattern {
        Pattern { tokens: tokens(pointer), base64, per_key: false }
    }

    fn per_key(pointer: &str, base64: bool) -> Pattern {
        Pattern { per_key: true, ..Pattern::new(pointer, base64) }
    }

    fn token_matches(token: &str, key: &str) -> bool {
        token == "*" || token == key
    }

    /// `path` is this place or inside it.
    fn covers(&self, path: &[String]) -> bool {
        self.tokens.len() <= path.len() && self.tokens.iter().zip(path).all(|(t, k)| Self::token_matches(t, k))
    }

    /// This place is strictly inside `path`.
    fn leads_below(&self, path: &[String]) -> bool {
        self.tokens.len() > path.len() && path.iter().zip(&self.tokens).all(|(k, t)| Self::token_matches(t, k))
    }
}

/// JSON pointer tokens, unescaped (`~1` is `/`, `~0` is `~`); `""` is the whole document.
fn tokens(pointer: &str) -> Vec<String> {
    if pointer.is_empty() {
        return Vec::new();
    }
    pointer.split('/').skip(1).map(|t| t.replace("~1", "/").replace("~0", "~")).collect()
}

/// Whether `object` is a core Secret, whose `data` and `stringData` are sensitive: judged from the
/// group its apiVersion names, as the API server parses it (`v1`, `/v1` and any other version of
/// the core group are all the core group), never from how the string is spelled.
pub fn is_secret(object: &Value) -> bool {
    let api_version = object["apiVersion"].as_str().unwrap_or_default();
    crate::names::group_of(api_version).is_empty() && object["kind"] == "Secret"
}

/// The sensitive places of `object`, with the metadata that copies them when `copies`.
fn patterns(object: &Value, sensitive: &[String], copies: bool) -> Vec<Pattern> {
    // A Secret's own places first: a declared pointer into its `data` must not stop the value
    // being decoded before it is hashed.
    let mut patterns = Vec::new();
    if is_secret(object) {
        patterns.push(Pattern::per_key("/data/*", true));
        patterns.push(Pattern::per_key("/stringData/*", false));
    }
    patterns.extend(sensitive.iter().map(|p| Pattern::new(p, false)));
    if copies && !patterns.is_empty() {
        patterns.extend(COPIES.iter().map(|p| Pattern::new(p, false)));
    }
    patterns
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn redactor() -> Redactor {
        Redactor::new([7; 32])
    }

    fn secret(body: Value) -> Value {
        let mut s = json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "db", "namespace": "app"}});
        for (k, v) in body.as_object().unwrap() {
            s[k] = v.clone();
        }
        s
    }

    /// Every string in `value`, to search for a leaked value.
    fn text(value: &Value) -> String {
        serde_json::to_string(value).unwrap()
    }

    #[test]
    fn secret_data_and_string_data_become_markers_equal_for_equal_values() {
        let r = redactor();
        let s = secret(json!({
            "data": {"password": BASE64.encode("hunter22"), "user": BASE64.encode("admin")},
            "stringData": {"again": "hunter22"},
            "type": "Opaque"
        }));
        let shown = r.shown(&s, &[]);
        let out = text(&shown);
        for leaked in ["hunter22", "admin", &BASE64.encode("hunter22"), &BASE64.encode("admin")] {
            assert!(!out.contains(leaked), "{leaked} in {out}");
        }
        let password = shown["data"]["password"].as_str().unwrap();
        assert!(
            password.starts_with(MARKER_PREFIX) && password.ends_with('>') && password.len() == 15 + 9,
            "{password}"
        );
        assert_eq!(shown["stringData"]["again"], shown["data"]["password"], "base64 data is hashed decoded");
        assert_ne!(shown["data"]["user"], shown["data"]["password"]);
        assert_eq!(shown["type"], "Opaque", "the rest is shown");
        assert_eq!(shown["metadata"]["name"], "db");
    }

    #[test]
    fn a_secret_is_known_by_its_group_however_the_version_is_spelled() {
        for api in ["v1", "/v1", "v2"] {
            assert!(is_secret(&json!({"apiVersion": api, "kind": "Secret"})), "{api}");
        }
        for (api, kind) in [("example.com/v1", "Secret"), ("v1", "ConfigMap"), ("v1", "secret")] {
            assert!(!is_secret(&json!({"apiVersion": api, "kind": kind})), "{api} {kind}");
        }
    }

    #[test]
    fn keyed_copies_hide_values_behind_whole_keyed_hashes() {
        let s = secret(json!({"stringData": {"k": "hunter22"}}));
        let keyed = redactor().keyed(&s, &[]).unwrap();
        let hash = keyed["stringData"]["k"].as_str().unwrap();
        assert_eq!(hash.len(), 64, "{hash}");
        assert_ne!(keyed, Redactor::new([8; 32]).keyed(&s, &[]).unwrap(), "keyed");
        assert!(redactor().keyed(&json!({"apiVersion": "v1", "kind": "ConfigMap"}), &[]).is_none());
    }

    #[test]
    fn markers_depend_on_the_key() {
        let s = secret(json!({"stringData": {"k": "v"}}));
        assert_ne!(redactor().shown(&s, &[]), Redactor::new([8; 32]).shown(&s, &[]));
        assert_eq!(redactor().shown(&s, &[]), redactor().shown(&s, &[]));
    }

    #[test]
    fn odd_secret_shapes_show_nothing_of_their_values() {
        let r = redactor();
        // Empty maps, nulls, numbers, nested maps, lists and a scalar where a map belongs.
        let s = secret(
            json!({"data": {}, "stringData": {"n": 12345678, "nested": {"deep": "s3cr3t-deep"}, "list": ["s3cr3t-item"], "none": null}}),
        );
        let shown = r.shown(&s, &[]);
        let out = text(&shown);
        for leaked in ["12345678", "s3cr3t-deep", "s3cr3t-item"] {
            assert!(!out.contains(leaked), "{leaked} in {out}");
        }
        assert_eq!(shown["data"], json!({}));
        assert_eq!(shown["stringData"]["none"], Value::Null);
        let scalar = secret(json!({"data": "c2VjcmV0LXNjYWxhcg==", "stringData": ["s3cr3t-in-a-list"]}));
        let out = text(&r.shown(&scalar, &[]));
        assert!(!out.contains("c2VjcmV0LXNjYWxhcg==") && !out.contains("s3cr3t-in-a-list"), "{out}");
        // Invalid base64 is hashed as it is, and not shown either.
        let invalid = secret(json!({"data": {"k": "not base64!"}}));
        assert!(!text(&r.shown(&invalid, &[])).contains("not base64!"));
    }

    #[test]
    fn copies_of_a_secret_in_metadata_are_redacted_too() {
        let r = redactor();
        let mut s = secret(json!({"data": {"k": BASE64.encode("s3cr3t")}}));
        s["metadata"]["annotations"] = json!({
            "kubectl.kubernetes.io/last-applied-configuration": format!("{{\"data\":{{\"k\":\"{}\"}}}}", BASE64.encode("s3cr3t")),
            "strata.dev/applied-digest": "sha256:0123",
            "team": "db"
        });
        s["metadata"]["managedFields"] = json!([{"manager": "kubectl", "fieldsV1": {"f:data": {"f:k": {}}}}]);
        let shown = r.shown(&s, &[]);
        let annotations = &shown["metadata"]["annotations"];
        assert!(!text(&shown).contains(&BASE64.encode("s3cr3t")));
        assert!(annotations["strata.dev/applied-digest"].as_str().unwrap().starts_with(MARKER_PREFIX));
        assert_eq!(annotations["team"], "db");
        assert!(shown["metadata"]["managedFields"].as_str().unwrap().starts_with(MARKER_PREFIX));
        // On objects with nothing sensitive, the same fields are shown.
        let cm =
            json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": s["metadata"].clone(), "data": {"k": "v"}});
        assert_eq!(r.shown(&cm, &[]), cm);
    }

    #[test]
    fn declared_paths_redact_nested_fields_subtrees_and_list_items() {
        let r = redactor();
        let db = json!({
            "apiVersion": "example.com/v1", "kind": "Database", "metadata": {"name": "orders"},
            "spec": {
                "password": "pw-top-secret",
                "replicas": 3,
                "credentials": {"user": "u-secret-user", "token": "t-secret-token"},
                "users": [{"name": "alice", "password": "pw-alice"}, {"name": "bob", "password": "pw-bob"}],
                "unset": null
            }
        });
        let sensitive =
            ["/spec/password", "/spec/credentials", "/spec/users/*/password", "/spec/unset", "/spec/absent"]
                .map(String::from);
        let shown = r.shown(&db, &sensitive);
        let out = text(&shown);
        for leaked in ["pw-top-secret", "u-secret-user", "t-secret-token", "pw-alice", "pw-bob"] {
            assert!(!out.contains(leaked), "{leaked} in {out}");
        }
        assert_eq!(shown["spec"]["replicas"], 3);
        assert_eq!(shown["spec"]["users"][1]["name"], "bob");
        assert!(shown["spec"]["credentials"].is_string(), "a sensitive subtree is one marker");
        assert_eq!(shown["spec"]["unset"], Value::Null);
        assert!(shown["spec"].get("absent").is_none(), "redaction adds nothing");
        // Without the declaration, a custom resource is shown as it is.
        assert_eq!(r.shown(&db, &[]), db);
    }

    #[test]
    fn pointers_declared_into_a_secret_keep_its_per_key_markers() {
        let r = redactor();
        let s = secret(json!({"data": {"k": BASE64.encode("s3cr3t")}, "stringData": {"same": "s3cr3t"}}));
        let shown = r.shown(&s, &["/data/k".into(), "/data".into()]);
        assert_eq!(shown["data"]["k"], shown["stringData"]["same"]);
    }

    #[test]
    fn a_field_is_shown_as_it_would_be_in_its_object() {
        let r = redactor();
        let s = secret(json!({"data": {"k": BASE64.encode("s3cr3t")}}));
        let whole = r.shown(&s, &[]);
        let at = |pointer: &str, value: Value| r.shown_at(&s, &[], pointer, &value);
        assert_eq!(at("/data/k", json!(BASE64.encode("s3cr3t"))), whole["data"]["k"]);
        assert_eq!(at("/data", json!({"k": BASE64.encode("s3cr3t")})), whole["data"]);
        assert_eq!(at("/stringData/k", json!("s3cr3t")), whole["data"]["k"]);
        assert_eq!(at("/type", json!("Opaque")), json!("Opaque"));
        let db = json!({"apiVersion": "example.com/v1", "kind": "Database", "metadata": {"name": "x"}});
        let sensitive = ["/spec/credentials".to_string()];
        let inner = r.shown_at(&db, &sensitive, "/spec/credentials/token", &json!("t0ken-value"));
        assert!(inner.as_str().unwrap().starts_with(MARKER_PREFIX));
        let outer = r.shown_at(&db, &sensitive, "/spec", &json!({"credentials": {"token": "t0ken-value"}, "size": 1}));
        assert!(!text(&outer).contains("t0ken-value"));
        assert_eq!(outer["size"], 1);
    }

    #[test]
    fn error_text_loses_every_form_of_a_value_it_echoes() {
        let r = redactor();
        let s = secret(
            json!({"data": {"k": BASE64.encode("s3cr3t\"x")}, "stringData": {"short": "ab", "plain": "pl4in-value"}}),
        );
        let marker = r.shown(&s, &[])["data"]["k"].as_str().unwrap().to_string();
        let text = format!(
            "Secret \"db\" is invalid: data[k]: Invalid value: \"s3cr3t\\\"x\" ({}) stringData[short]: \"ab\" about abc; {} {}",
            BASE64.encode("s3cr3t\"x"),
            BASE64.encode("pl4in-value"),
            "pl4in-value"
        );
        let scrubbed = r.scrub(&text, &s, &[]);
        for leaked in ["s3cr3t", &BASE64.encode("s3cr3t\"x"), "\"ab\"", "pl4in-value", &BASE64.encode("pl4in-value")] {
            assert!(!scrubbed.contains(leaked), "{leaked} in {scrubbed}");
        }
        assert!(scrubbed.contains(&marker), "{scrubbed}");
        assert!(scrubbed.contains("about abc"), "short values are replaced only where quoted: {scrubbed}");
        let control = secret(json!({"stringData": {"k": "bell\x07tab\tline\n"}}));
        let scrubbed = r.scrub("Invalid value: \"bell\\atab\\tline\\n\" or bell\\u0007tab\\tline\\n", &control, &[]);
        assert!(!scrubbed.contains("bell"), "Go's and JSON's escapes: {scrubbed}");
        let pem = secret(
            json!({"stringData": {"tls.key": "-----BEGIN KEY-----\nMIIEvQIBADANBgkqhkiG9w0B\n-----END KEY-----\n"}}),
        );
        let scrubbed = r.scrub("bad PEM block near MIIEvQIBADANBgkqhkiG9w0B", &pem, &[]);
        assert!(!scrubbed.contains("MIIEvQ"), "a line of a value: {scrubbed}");
        let db = json!({"apiVersion": "example.com/v1", "kind": "Database", "metadata": {"name": "x"}, "spec": {"password": "hunter2hunter2"}});
        let scrubbed =
            r.scrub("spec.password: Invalid value: \"hunter2hunter2\": too long", &db, &["/spec/password".into()]);
        assert!(!scrubbed.contains("hunter2"), "{scrubbed}");
        assert_eq!(r.scrub("nothing sensitive", &json!({"kind": "ConfigMap"}), &[]), "nothing sensitive");
    }

    #[test]
    fn the_daemon_key_is_made_once_private_and_kept() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("redaction.key");
        let first = Redactor::from_key_file(&path).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert_eq!(std::fs::read(&path).unwrap().len(), 32);
        let again = Redactor::from_key_file(&path).unwrap();
        assert_eq!(first.marker(b"x"), again.marker(b"x"));
        assert_ne!(first.marker(b"x"), Redactor::random().marker(b"x"));

        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let e = Redactor::from_key_file(&path).unwrap_err().to_string();
        assert!(e.contains("redaction.key") && e.contains("chmod 600"), "{e}");
        std::fs::write(&path, b"short").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        let e = Redactor::from_key_file(&path).unwrap_err().to_string();
        assert!(e.contains("5 bytes"), "{e}");
        assert!(!format!("{:?}", redactor()).contains("7, 7"), "the key is not in debug output");
    }
}
