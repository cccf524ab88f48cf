//! SOPS: files a repository keeps encrypted, decrypted in memory as strata reads them.
//!
//! ```text
//!   host config decryption.age_key_files ─┐   (the CLI: --age-key-file, SOPS_AGE_KEY_FILE,
//!   Kubernetes mode: decryption.secret ───┴─> Keys     SOPS_AGE_KEY, ~/.config/sops/age/keys.txt)
//!                                              │
//!   Snapshot.tree ──> Decrypting(tree, keys) ──┴─> read(path): a `.yaml`/`.yml`/`.json`/`.env`
//!                                                   file with `sops` metadata is decrypted, its
//!                                                   MAC checked; anything else passes unchanged
//!                          │                                        │
//!                          │                       cannot: ReadError::Decrypt ──> error[decrypt]
//!                          v                                        (file, recipients, what to do)
//!   local_root (kustomize, helm) ──> the private checkout holds the decrypted files: the one place
//!                                    on disk they are written, removed with the render's scratch
//! ```
//!
//! Every reader above [`crate::source`] sees decrypted files and nothing else changes: templates,
//! values files, kustomizations and charts read the plaintext, and the Secrets they make are
//! redacted as every Secret is ([`crate::redact`]). An encrypted file in a `manifests` layer is
//! used as it is, never as a template: its values are data, and a `{{` in one is not an expression.
//! The plaintext is never in an error: strata-sops names values by their key path only.
//!
//! [`check`] decrypts every encrypted file the profiles read, so the daemon rejects a revision
//! with a file it cannot decrypt as it rejects one that does not load, before any cluster renders.

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use strata_sops::{Format, Identities};
use zeroize::Zeroizing;

use crate::diag::{Code, Diagnostic, Diagnostics};
use crate::source::{self, EntryKind, ReadError, Snapshot, Tree};

/// The age identities strata decrypts with, and where they came from (for messages: never the keys).
#[derive(Clone, Default)]
pub struct Keys {
    identities: Option<Identities>,
    /// Where the identities were read from: files, a Secret, an environment variable.
    pub sources: Vec<String>,
    /// Read SOPS files as they are in Git, ciphertext and metadata, without decrypting them.
    opaque: bool,
}

impl fmt::Debug for Keys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Keys({:?}, from {:?})", self.public_keys(), self.sources)
    }
}

impl Keys {
    /// No keys: every encrypted file is an `error[decrypt]`.
    pub fn none() -> Keys {
        Keys::default()
    }

    /// SOPS files read as they are in Git, never decrypted (and never templated): for plans of
    /// pull requests, whose author chooses what the plan shows and could otherwise route a
    /// decrypted value into an object that is not redacted.
    pub fn opaque() -> Keys {
        Keys { opaque: true, ..Keys::default() }
    }

    /// The identities in `texts`, each (where it came from, age-keygen text).
    pub fn parse(texts: &[(String, Zeroizing<String>)]) -> Result<Keys, KeyError> {
        let mut all = Zeroizing::new(String::new());
        for (from, text) in texts {
            Identities::parse(text).map_err(|source| KeyError::Parse { from: from.clone(), source })?;
            all.push_str(text);
            all.push('\n');
        }
        let identities = if texts.is_empty() { None } else { Some(Identities::parse(&all)?) };
        Ok(Keys { identities, sources: texts.iter().map(|(from, _)| from.clone()).collect(), opaque: false })
    }

    /// The identities in these files (age-keygen's output), all of them together.
    pub fn from_files(files: &[PathBuf]) -> Result<Keys, KeyError> {
        let mut texts = Vec::new();
        for file in files {
            let text = std::fs::read_to_string(file).map_err(|source| KeyError::Read {
                path: file.clone(),
                source,
                help: " (create it with age-keygen -o FILE)",
            })?;
            texts.push((file.display().to_string(), Zeroizing::new(text)));
        }
        Keys::parse(&texts)
    }

    /// Keys for the command line, where sops finds them: `files` (from `--age-key-file`), else
    /// `SOPS_AGE_KEY_FILE`, `SOPS_AGE_KEY`, and `$XDG_CONFIG_HOME/sops/age/keys.txt` (or
    /// `~/.config/…`) when it exists.
    pub fn for_cli(files: &[PathBuf]) -> Result<Keys, KeyError> {
        let mut texts = Vec::new();
        let read = |file: &Path, texts: &mut Vec<(String, Zeroizing<String>)>| -> Result<(), KeyError> {
            let text = std::fs::read_to_string(file).map_err(|source| KeyError::Read {
                path: file.to_path_buf(),
                source,
                help: "",
            })?;
            texts.push((file.display().to_string(), Zeroizing::new(text)));
            Ok(())
        };
        for file in files {
            read(file, &mut texts)?;
        }
        if let Some(file) = std::env::var_os("SOPS_AGE_KEY_FILE").filter(|f| !f.is_empty()) {
            read(Path::new(&file), &mut texts).map_err(|e| KeyError::FromEnvironment(Box::new(e)))?;
        }
        if let Ok(text) = std::env::var("SOPS_AGE_KEY")
            && !text.trim().is_empty()
        {
            texts.push(("SOPS_AGE_KEY".to_string(), Zeroizing::new(text)));
        }
        let config = std::env::var_os("XDG_CONFIG_HOME")
            .map(PathBuf::from)
            .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".config")));
        if let Some(default) = config.map(|c| c.join("sops/age/keys.txt"))
            && default.is_file()
        {
            read(&default, &mut texts)?;
        }
        Keys::parse(&texts)
    }

    /// The public keys (age recipients) of the identities.
    pub fn public_keys(&self) -> Vec<String> {
        self.identities.as_ref().map(Identities::public_keys).unwrap_or_default()
    }

    pub fn is_empty(&self) -> bool {
        self.identities.is_none()
    }
}

/// Age keys that cannot be loaded: which file or variable, and git-style what to do. The I/O or
/// parse error is kept as the source.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// A key file that cannot be read; `help` is what the caller suggests (may be empty).
    #[error("cannot read the age key file {}: {source}{help}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
        help: &'static str,
    },
    /// One key text (a file, `SOPS_AGE_KEY`) that is not age-keygen's output.
    #[error("{from}: {source} (write the keys as age-keygen does)")]
    Parse {
        from: String,
        #[source]
        source: strata_sops::Error,
    },
    /// The keys that parse one by one but not together.
    #[error(transparent)]
    Together(#[from] strata_sops::Error),
    /// The file `SOPS_AGE_KEY_FILE` names.
    #[error("SOPS_AGE_KEY_FILE: {0}")]
    FromEnvironment(#[source] Box<KeyError>),
}

/// A file strata could not decrypt: why (never a value), and the recipients it is encrypted for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DecryptFailure {
    pub reason: String,
    pub recipients: Vec<String>,
    /// What to do about it.
    pub help: &'static str,
}

impl fmt::Display for DecryptFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "cannot decrypt (SOPS): {}", self.reason)?;
        if !self.reason.contains("encrypted for age recipient") {
            match self.recipients.as_slice() {
                [] => f.write_str(" (it is encrypted for no age recipient)")?,
                all => write!(f, " (encrypted for age recipients {})", all.join(", "))?,
            }
        }
        Ok(())
    }
}

/// The format strata reads a repository file in when it is SOPS-encrypted: by extension, as sops
/// itself decides. Other files (a template partial without one, a chart's `.tpl`) are never
/// taken for SOPS files.
fn format_of(path: &str) -> Option<Format> {
    let name = path.rsplit('/').next().unwrap_or(path).to_ascii_lowercase();
    if name.ends_with(".yaml") || name.ends_with(".yml") {
        Some(Format::Yaml)
    } else if name.ends_with(".json") {
        Some(Format::Json)
    } else if name.ends_with(".env") {
        Some(Format::Dotenv)
    } else {
        None
    }
}

/// Whether `bytes`, read from `path`, is a SOPS file: it must name `sops` somewhere before it is
/// parsed, so reading an ordinary file costs one search.
pub fn is_encrypted(path: &str, bytes: &[u8]) -> bool {
    let Some(format) = format_of(path) else { return false };
    memchr_sops(bytes) && strata_sops::is_encrypted(bytes, format)
}

fn memchr_sops(bytes: &[u8]) -> bool {
    bytes.windows(4).any(|w| w == b"sops")
}

/// Decrypts one SOPS file (`bytes`, read from `path`) with `keys`.
pub fn decrypt(path: &str, bytes: &[u8], keys: &Keys) -> Result<Zeroizing<Vec<u8>>, DecryptFailure> {
    let format = format_of(path).unwrap_or(Format::Yaml);
    let recipients = strata_sops::recipients(bytes, format).unwrap_or_default();
    let Some(identities) = &keys.identities else {
        return Err(DecryptFailure {
            reason: "strata has no age key".to_string(),
            recipients,
            help: "give strata the age identity of one of these recipients: decryption.age_key_files in the host config (the daemon), --age-key-file or SOPS_AGE_KEY_FILE (the command line)",
        });
    };
    match strata_sops::decrypt(bytes, format, identities) {
        Ok(plain) => Ok(Zeroizing::new(plain.as_bytes().to_vec())),
        Err(e) => {
            let help = match &e {
                strata_sops::Error::NoMatchingKey { .. } => {
                    "give strata the identity of one of these recipients, or encrypt the file again for strata's key (sops updatekeys, or strata secret encrypt)"
                }
                strata_sops::Error::MacMismatch { .. } | strata_sops::Error::Value { .. } => {
                    "the file was changed after it was encrypted (by hand, or by a merge): encrypt it again from its plaintext with sops or strata secret encrypt"
                }
                _ => "check the file with `strata secret decrypt FILE`, or encrypt it again from its plaintext",
            };
            Err(DecryptFailure { reason: describe(&e), recipients, help })
        }
    }
}

/// The error with its causes, as strata-sops words them (they never hold a value or a key).
fn describe(e: &strata_sops::Error) -> String {
    let mut text = e.to_string();
    let mut cause = std::error::Error::source(e);
    while let Some(c) = cause {
        let more = c.to_string();
        if !text.contains(&more) {
            text.push_str(": ");
            text.push_str(&more);
        }
        cause = c.source();
    }
    text
}

/// What an `error[decrypt]` says about `path`.
pub fn diagnostic(path: &str, failure: &DecryptFailure) -> Diagnostic {
    Diagnostic::new(Code::Decrypt, failure.to_string()).in_file(path).help(failure.help)
}

type Decrypted = Result<Arc<Zeroizing<Vec<u8>>>, DecryptFailure>;

/// A tree whose SOPS files read decrypted. Each file is decrypted once per tree (the renders of
/// a fleet's clusters share it), keyed by its path and its content.
pub struct Decrypting {
    inner: Box<dyn Tree>,
    keys: Arc<Keys>,
    decrypted: Mutex<HashMap<String, Decrypted>>,
    /// Whether each file read so far is a SOPS file: [`Tree::decrypted`] without reading it again.
    encrypted: Mutex<HashMap<String, bool>>,
    /// Where tools read ([`Tree::tools_read`]): a checkout holds decrypted files only there.
    tool_paths: std::sync::OnceLock<Option<Vec<String>>>,
    local: Mutex<Option<PathBuf>>,
}

impl Decrypting {
    pub fn new(inner: Box<dyn Tree>, keys: Arc<Keys>) -> Decrypting {
        Decrypting {
            inner,
            keys,
            decrypted: Mutex::default(),
            encrypted: Mutex::default(),
            tool_paths: std::sync::OnceLock::new(),
            local: Mutex::default(),
        }
    }
}

impl Tree for Decrypting {
    fn kind(&self, path: &str) -> Option<EntryKind> {
        self.inner.kind(path)
    }

    fn list(&self, dir: &str) -> Result<Vec<(String, EntryKind)>, ReadError> {
        self.inner.list(dir)
    }

    fn read(&self, path: &str, limit: u64) -> Result<Vec<u8>, ReadError> {
        let bytes = self.inner.read(path, limit)?;
        let encrypted = is_encrypted(path, &bytes);
        self.encrypted.lock().unwrap_or_else(|p| p.into_inner()).insert(path.to_string(), encrypted);
        if self.keys.opaque || !encrypted {
            return Ok(bytes);
        }
        let key = format!("{path}\0{}", hex(&bytes));
        let mut cache = self.decrypted.lock().unwrap_or_else(|p| p.into_inner());
        let result = cache.entry(key).or_insert_with(|| decrypt(path, &bytes, &self.keys).map(Arc::new)).clone();
        drop(cache);
        match result {
            Ok(plain) => Ok(plain.to_vec()),
            Err(failure) => Err(ReadError::Decrypt(failure)),
        }
    }

    fn read_link(&self, path: &str) -> Result<String, ReadError> {
        self.inner.read_link(path)
    }

    fn object_id(&self, path: &str) -> Option<String> {
        self.inner.object_id(path)
    }

    fn local_root(&self, scratch: &Path) -> Result<PathBuf, ReadError> {
        source::checkout(self, &self.local, scratch)
    }

    fn decrypted(&self, path: &str) -> bool {
        if let Some(known) = self.encrypted.lock().unwrap_or_else(|p| p.into_inner()).get(path) {
            return *known;
        }
        self.inner.read(path, source::MAX_FILE_BYTES).is_ok_and(|bytes| is_encrypted(path, &bytes))
    }

    fn read_raw(&self, path: &str, limit: u64) -> Result<Vec<u8>, ReadError> {
        self.inner.read(path, limit)
    }

    fn tools_read(&self, paths: &dyn Fn() -> Option<Vec<String>>) {
        self.tool_paths.get_or_init(paths);
    }

    fn checkout_holds(&self, path: &str) -> bool {
        if self.keys.opaque || !self.decrypted(path) {
            return true;
        }
        match self.tool_paths.get() {
            // Not told (a caller that checks out without rendering), or tools may read anywhere.
            None | Some(None) => true,
            Some(Some(paths)) => paths.iter().any(|p| {
                p.is_empty()
                    || path == p
                    || (path.starts_with(p.as_str()) && path.as_bytes().get(p.len()) == Some(&b'/'))
            }),
        }
    }
}

/// The values of the file at `path` (resolved) that the repository holds encrypted, decrypted:
/// what a tool's message must not show (`render::scrub`). Empty for a file that is not a SOPS
/// file or does not decrypt. Found by walking the ciphertext and the plaintext side by side: a
/// value is secret where the ciphertext holds `ENC[…]`.
pub fn encrypted_values(tree: &dyn Tree, path: &str) -> Vec<String> {
    if !tree.decrypted(path) {
        return Vec::new();
    }
    let (Ok(raw), Ok(plain)) = (tree.read_raw(path, source::MAX_FILE_BYTES), tree.read(path, source::MAX_FILE_BYTES))
    else {
        return Vec::new();
    };
    let (raw, plain) = (String::from_utf8_lossy(&raw), Zeroizing::new(String::from_utf8_lossy(&plain).into_owned()));
    let mut out = Vec::new();
    if format_of(path) == Some(Format::Dotenv) {
        let pairs = |text: &str| -> Vec<(String, String)> {
            text.lines().filter_map(|l| l.split_once('=')).map(|(k, v)| (k.trim().to_string(), v.to_string())).collect()
        };
        let plain = pairs(&plain);
        for (key, value) in pairs(&raw) {
            if value.starts_with("ENC[")
                && let Some((_, decrypted)) = plain.iter().find(|(k, _)| *k == key)
            {
                out.push(decrypted.clone());
            }
        }
        return out;
    }
    let (Ok(raw), Ok(plain)) = (crate::yaml::parse_documents(&raw), crate::yaml::parse_documents(&plain)) else {
        return Vec::new();
    };
    for (raw, plain) in raw.iter().zip(&plain) {
        side_by_side(&raw.value, &plain.value, &mut out);
    }
    out
}

fn side_by_side(raw: &serde_json::Value, plain: &serde_json::Value, out: &mut Vec<String>) {
    use serde_json::Value;
    match (raw, plain) {
        (Value::Object(raw), Value::Object(plain)) => {
            for (key, value) in plain {
                if let Some(r) = raw.get(key) {
                    side_by_side(r, value, out);
                }
            }
        }
        (Value::Array(raw), Value::Array(plain)) => {
            for (r, p) in raw.iter().zip(plain) {
                side_by_side(r, p, out);
            }
        }
        (Value::String(enc), value) if enc.starts_with("ENC[") => match value {
            Value::String(s) => out.push(s.clone()),
            Value::Null | Value::Object(_) | Value::Array(_) => {}
            other => out.push(other.to_string()),
        },
        _ => {}
    }
}

/// A short content key: a SHA-256 of the ciphertext.
fn hex(bytes: &[u8]) -> String {
    use sha2::Digest as _;
    sha2::Sha256::digest(bytes).iter().map(|b| format!("{b:02x}")).collect()
}

/// `snapshot` with its SOPS files read decrypted with `keys`.
pub fn decrypting(snapshot: Snapshot, keys: &Arc<Keys>) -> Snapshot {
    Snapshot { revision: snapshot.revision, tree: Box::new(Decrypting::new(snapshot.tree, keys.clone())) }
}

/// Blob ids (with the format they were read in) remembered as holding no SOPS file (a few MB at most; forgotten all at once past it).
const MAX_PLAIN_BLOBS: usize = 100_000;

fn plain_blobs() -> std::sync::MutexGuard<'static, std::collections::HashSet<String>> {
    static PLAIN: std::sync::OnceLock<Mutex<std::collections::HashSet<String>>> = std::sync::OnceLock::new();
    PLAIN.get_or_init(Mutex::default).lock().unwrap_or_else(|p| p.into_inner())
}

/// Every SOPS file at or below `paths` decrypts (other read problems are reported by the readers).
pub fn check_paths(tree: &dyn Tree, paths: &[String]) -> Result<(), Diagnostics> {
    let mut diags = Diagnostics::new();
    let mut seen = std::collections::HashSet::new();
    for path in paths {
        let files = match source::resolve(tree, path) {
            Ok((real, EntryKind::Dir)) => source::walk_files(tree, &real).unwrap_or_default(),
            Ok((real, _)) => vec![(path.clone(), real)],
            Err(_) => continue,
        };
        for (shown, real) in files {
            if format_of(&real).is_none() || !seen.insert(real.clone()) {
                continue;
            }
            // A Git blob read before in the same format and found plain is plain again: the
            // daemon checks every revision, and most of a repository does not change between two.
            let blob = tree.object_id(&real).map(|id| format!("{:?} {id}", format_of(&real)));
            if blob.as_ref().is_some_and(|id| plain_blobs().contains(id)) {
                continue;
            }
            match tree.read_raw(&real, source::MAX_FILE_BYTES) {
                Ok(raw) if !is_encrypted(&real, &raw) => {
                    if let Some(id) = blob {
                        let mut plain = plain_blobs();
                        if plain.len() >= MAX_PLAIN_BLOBS {
                            plain.clear();
                        }
                        plain.insert(id);
                    }
                }
                Ok(_) => {
                    if let Err(ReadError::Decrypt(failure)) = tree.read(&real, source::MAX_FILE_BYTES) {
                        diags.push(diagnostic(&shown, &failure));
                    }
                }
                // Other read problems are the readers' to report.
                Err(_) => {}
            }
        }
    }
    diags.into_result(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_age_key_file_that_cannot_be_read_is_named_and_its_error_kept() {
        let missing = std::path::PathBuf::from("/nonexistent/strata/keys.txt");
        let e = Keys::from_files(std::slice::from_ref(&missing)).unwrap_err();
        let io = std::error::Error::source(&e).and_then(|s| s.downcast_ref::<std::io::Error>()).expect("io error");
        assert_eq!(io.kind(), std::io::ErrorKind::NotFound);
        assert_eq!(
            e.to_string(),
            format!("cannot read the age key file {}: {io} (create it with age-keygen -o FILE)", missing.display())
        );
        let e = Keys::parse(&[("k.txt".into(), Zeroizing::new("not a key".into()))]).unwrap_err();
        assert!(e.to_string().starts_with("k.txt: "), "{e}");
        assert!(e.to_string().ends_with(" (write the keys as age-keygen does)"), "{e}");
        assert!(std::error::Error::source(&e).is_some_and(|s| s.is::<strata_sops::Error>()));
    }
    use crate::source::MemTree;

    // sops' published test key (its repository's keys.txt).
    const KEY: &str = "AGE-SECRET-KEY-1NJT5YCS2LWU4V4QAJQ6R4JNU7LXPDX602DZ9NUFANVU5GDTGUWCQ5T59M6";

    fn keys() -> Arc<Keys> {
        Arc::new(Keys::parse(&[("test".into(), Zeroizing::new(KEY.to_string()))]).unwrap())
    }

    fn encrypted(plain: &str, keys: &Keys) -> Vec<u8> {
        let recipient = keys.public_keys().remove(0);
        strata_sops::encrypt(plain.as_bytes(), Format::Yaml, &[&recipient], &Default::default()).unwrap()
    }

    #[test]
    fn an_encrypted_file_reads_decrypted_and_others_unchanged() {
        let keys = keys();
        let mut tree = MemTree::new();
        tree.file("a/secret.yaml", encrypted("kind: Secret\nstringData:\n    token: hunter2\n", &keys))
            .file("a/plain.yaml", "kind: ConfigMap # mentions sops: in a comment\n");
        let tree = Decrypting::new(Box::new(tree), keys);
        let secret = String::from_utf8(source::read_file(&tree, "a/secret.yaml").unwrap()).unwrap();
        assert!(secret.contains("token: hunter2") && !secret.contains("sops"), "{secret}");
        assert!(tree.decrypted("a/secret.yaml") && !tree.decrypted("a/plain.yaml"));
        assert_eq!(
            source::read_file(&tree, "a/plain.yaml").unwrap(),
            b"kind: ConfigMap # mentions sops: in a comment\n"
        );
    }

    #[test]
    fn a_checkout_holds_decrypted_files_only_where_tools_read() {
        let keys = keys();
        let recipient = keys.public_keys().remove(0);
        let env = strata_sops::encrypt(b"TOKEN=tok-123\n", Format::Dotenv, &[&recipient], &Default::default()).unwrap();
        let mut tree = MemTree::new();
        tree.file("packs/app/kustomization.yaml", "secretGenerator: [{ name: app, envs: [app.env] }]\n")
            .file("packs/app/app.env", env)
            .file("packs/raw/secret.yaml", encrypted("kind: Secret\nstringData:\n    token: hunter2\n", &keys))
            .file("packs/raw/plain.yaml", "kind: ConfigMap\n");
        let scratch = tempfile::tempdir().unwrap();
        let tree = Decrypting::new(Box::new(tree), keys.clone());
        tree.tools_read(&|| Some(vec!["packs/app".to_string()]));
        tree.tools_read(&|| panic!("asked once"));
        let root = tree.local_root(scratch.path()).unwrap();
        let read = |p: &str| std::fs::read_to_string(root.join(p)).ok();
        assert_eq!(read("packs/app/app.env").as_deref(), Some("TOKEN=tok-123\n"), "decrypted where kustomize reads");
        assert_eq!(read("packs/raw/secret.yaml"), None, "never on disk where no tool reads");
        assert_eq!(read("packs/raw/plain.yaml").as_deref(), Some("kind: ConfigMap\n"), "plain files are all there");
        // A tree that was never told (a checkout without a render): every file, as before.
        let mut plain_tree = MemTree::new();
        plain_tree.file("packs/raw/secret.yaml", encrypted("token: hunter2\n", &keys));
        let untold = Decrypting::new(Box::new(plain_tree), keys);
        let other = tempfile::tempdir().unwrap();
        let root = untold.local_root(other.path()).unwrap();
        assert!(std::fs::read_to_string(root.join("packs/raw/secret.yaml")).unwrap().contains("hunter2"));
    }

    #[test]
    fn without_the_key_the_error_names_the_recipients_and_never_the_value() {
        let keys = keys();
        let mut tree = MemTree::new();
        tree.file("s.yaml", encrypted("token: hunter2\n", &keys));
        let tree = Decrypting::new(Box::new(tree), Arc::new(Keys::none()));
        let Err(ReadError::Decrypt(failure)) = source::read_file(&tree, "s.yaml") else { panic!("decrypted") };
        let text = diagnostic("s.yaml", &failure).to_string();
        assert!(text.contains("error[decrypt]") && text.contains(&keys.public_keys()[0]), "{text}");
        assert!(!text.contains("hunter2"));
    }

    #[test]
    fn the_values_held_encrypted_are_known_and_the_cleartext_ones_are_not() {
        let keys = keys();
        let recipient = keys.public_keys().remove(0);
        let options = strata_sops::EncryptOptions {
            rule: strata_sops::EncryptionRule::EncryptedRegex("^(data|stringData)$".into()),
            mac_only_encrypted: false,
        };
        let plain = "kind: Secret\nmetadata:\n    name: db\nstringData:\n    password: hunter2-x\n    port: 5432\n";
        let file = strata_sops::encrypt(plain.as_bytes(), Format::Yaml, &[&recipient], &options).unwrap();
        let env = strata_sops::encrypt(b"TOKEN=tok-123\n", Format::Dotenv, &[&recipient], &Default::default()).unwrap();
        let mut tree = MemTree::new();
        tree.file("s.yaml", file).file("app.env", env).file("plain.yaml", "a: b\n");
        let tree = Decrypting::new(Box::new(tree), keys);
        assert_eq!(encrypted_values(&tree, "s.yaml"), ["hunter2-x", "5432"]);
        assert_eq!(encrypted_values(&tree, "app.env"), ["tok-123"]);
        assert!(encrypted_values(&tree, "plain.yaml").is_empty());
    }

    #[test]
    fn a_tampered_value_is_a_mac_mismatch() {
        let keys = keys();
        let file = String::from_utf8(encrypted("a: one\nb: two\n", &keys)).unwrap();
        // A value's key path is its additional data: moved to another key, it no longer opens.
        let tampered = file.replacen("a: ENC", "c: ENC", 1);
        let mut tree = MemTree::new();
        tree.file("s.yaml", tampered);
        let tree = Decrypting::new(Box::new(tree), keys);
        let Err(ReadError::Decrypt(failure)) = source::read_file(&tree, "s.yaml") else { panic!("decrypted") };
        assert!(failure.help.contains("changed after it was encrypted"), "{failure:?}");
    }
}
