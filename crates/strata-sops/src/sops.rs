//! Reading a SOPS file into a tree and its metadata, and the two walks over
//! it: decryption (with MAC verification) and encryption.

use sha2::{Digest, Sha512};
use zeroize::Zeroizing;

use crate::cipher::{DataKey, looks_encrypted};
use crate::error::{Error, ValueError};
use crate::metadata::{self, AgeStanza, DOTENV_PREFIX, Metadata, SOPS_KEY};
use crate::rules::Rules;
use crate::text::{SecretBuf, Text};
use crate::tree::{self, Entry, Node, Visit, Visitor};
use crate::{EncryptOptions, Format, Identities, Plaintext, dotenv, json, keys, yaml};

/// SOPS' prefix for the MAC when `mac_only_encrypted` is set: SHA-256("sops").
const MAC_ONLY_ENCRYPTED_INIT: [u8; 32] = [
    0x8a, 0x3f, 0xd2, 0xad, 0x54, 0xce, 0x66, 0x52, 0x7b, 0x10, 0x34, 0xf3, 0xd1, 0x47, 0xbe, 0x0b, 0x0b, 0x97, 0x5b,
    0x3b, 0xf4, 0x4f, 0x72, 0xc6, 0xfd, 0xad, 0xec, 0x81, 0x76, 0xf2, 0x7d, 0x69,
];

/// A document split into its data branches (one per YAML document) and the
/// `sops` metadata, if any.
pub(crate) struct Document {
    pub(crate) branches: Vec<Vec<Entry>>,
    pub(crate) metadata: Option<Node>,
}

pub(crate) fn read(input: &[u8], format: Format) -> Result<Document, Error> {
    let parse_error = |source| Error::Parse { format, source };
    let mut branches = match format {
        Format::Yaml => {
            let text = std::str::from_utf8(input)
                .map_err(|e| parse_error(crate::error::SyntaxError::new("YAML input is not UTF-8").caused_by(e)))?;
            yaml::parse(text).map_err(parse_error)?
        }
        Format::Json | Format::Binary => vec![json::parse(input).map_err(parse_error)?],
        Format::Dotenv => vec![dotenv::parse(input).map_err(parse_error)?],
    };
    let mut metadata = None;
    if format == Format::Dotenv {
        let branch = &mut branches[0];
        let mut flat = Vec::new();
        let mut kept = Vec::with_capacity(branch.len());
        for entry in branch.drain(..) {
            match entry {
                Entry::Pair(key, Node::Str(value)) if key.starts_with(DOTENV_PREFIX) => {
                    flat.push((key[DOTENV_PREFIX.len()..].to_owned(), value));
                }
                other => kept.push(other),
            }
        }
        *branch = kept;
        if flat.iter().any(|(k, _)| matches!(k.as_str(), "mac" | "lastmodified" | "version")) {
            metadata = Some(metadata::unflatten(flat));
        }
    } else {
        for branch in &mut branches {
            if let Some(pos) = branch.iter().position(|e| matches!(e, Entry::Pair(k, _) if k.as_str() == SOPS_KEY)) {
                let Entry::Pair(_, node) = branch.remove(pos) else { unreachable!() };
                if metadata.is_none() {
                    metadata = Some(node);
                }
            }
        }
    }
    Ok(Document { branches, metadata })
}

pub(crate) fn read_metadata(doc: &Document, format: Format) -> Result<Metadata, Error> {
    let node = doc.metadata.as_ref().ok_or(Error::NotEncrypted { format })?;
    Metadata::from_node(node)
}

struct Decrypter<'a> {
    key: &'a DataKey,
    rules: &'a Rules,
    mac: Sha512,
    /// Additional data of every container, to find where a comment was encrypted.
    comment_aads: Vec<String>,
}

fn typed(plain: Zeroizing<Vec<u8>>, kind: &str) -> Result<Node, ValueError> {
    let text = || std::str::from_utf8(&plain).ok();
    Ok(match kind {
        "str" => match std::str::from_utf8(&plain) {
            Ok(s) => Node::Str(Text::from(s)),
            Err(_) => Node::Bytes(plain),
        },
        "int" | "int64" => Node::Int(text().and_then(|s| s.parse().ok()).ok_or(ValueError::BadPlaintext("int"))?),
        "float" => Node::Float(text().and_then(|s| s.parse().ok()).ok_or(ValueError::BadPlaintext("float"))?),
        "bool" => Node::Bool(match text() {
            Some("1" | "t" | "T" | "true" | "True" | "TRUE") => true,
            Some("0" | "f" | "F" | "false" | "False" | "FALSE") => false,
            _ => return Err(ValueError::BadPlaintext("bool")),
        }),
        "bytes" => Node::Bytes(plain),
        other => return Err(ValueError::UnknownType(other.chars().take(32).collect())),
    })
}

impl Visitor for Decrypter<'_> {
    type Error = Error;

    fn leaf(&mut self, node: &mut Node, at: &Visit<'_>) -> Result<(), Error> {
        let encrypted = self.rules.should_encrypt(at.path, at.comments, false);
        if encrypted {
            let aad = tree::aad(at.path);
            let value_error = |source| Error::Value { path: aad.clone(), source };
            match node {
                Node::Str(s) if s.is_empty() => {}
                Node::Str(s) => {
                    let (plain, kind) = self.key.decrypt(s, aad.as_bytes()).map_err(value_error)?;
                    if kind == "comment" {
                        // SOPS turns a comment inside a sequence into an item
                        // when it encrypts it; decrypted, it is a comment again,
                        // and comments are not part of the MAC.
                        *node = Node::Comment(Text::from(String::from_utf8_lossy(&plain).into_owned()));
                        return Ok(());
                    }
                    *node = typed(plain, &kind).map_err(value_error)?;
                }
                _ => return Err(value_error(ValueError::NotEncrypted)),
            }
        }
        if (!self.rules.mac_only_encrypted || encrypted)
            && let Some(bytes) = tree::scalar_bytes(node)
        {
            self.mac.update(&bytes);
        }
        Ok(())
    }

    fn comment(&mut self, text: &mut Text, at: &Visit<'_>) -> Result<(), Error> {
        if !self.rules.should_encrypt(at.path, at.comments, true) || !looks_encrypted(text) {
            // SOPS leaves comments that are not encrypted as they are.
            return Ok(());
        }
        let own = tree::aad(at.path);
        let mut first_error = None;
        for aad in std::iter::once(&own).chain(self.comment_aads.iter().filter(|a| **a != own)) {
            match self.key.decrypt(text, aad.as_bytes()) {
                Ok((plain, _)) => {
                    *text = Text::from(String::from_utf8_lossy(&plain).into_owned());
                    return Ok(());
                }
                Err(e) => {
                    first_error.get_or_insert(e);
                }
            }
        }
        Err(Error::Value { path: own, source: first_error.expect("tried at least once") })
    }
}

fn mac_hasher(rules: &Rules) -> Sha512 {
    let mut mac = Sha512::new();
    if rules.mac_only_encrypted {
        mac.update(MAC_ONLY_ENCRYPTED_INIT);
    }
    mac
}

pub(crate) fn decrypt(input: &[u8], format: Format, identities: &Identities) -> Result<Plaintext, Error> {
    let mut doc = read(input, format)?;
    let meta = read_metadata(&doc, format)?;
    if meta.age.is_empty() {
        if meta.other_kinds.is_empty() {
            return Err(Error::Metadata {
                field: "sops.age".to_owned(),
                problem: "is empty: the file has no key to open it with",
                source: None,
            });
        }
        return Err(Error::UnsupportedKeyType { kinds: meta.other_kinds.clone() });
    }
    let key = identities.unwrap_data_key(&meta.age)?;

    let mut visitor =
        Decrypter { key: &key, rules: &meta.rules, mac: mac_hasher(&meta.rules), comment_aads: Vec::new() };
    for branch in &mut doc.branches {
        visitor.comment_aads = tree::container_paths(branch).iter().map(|p| tree::aad(p)).collect();
        tree::walk_branch(branch, &mut visitor)?;
    }
    let computed = hex::encode_upper(visitor.mac.finalize());
    let lastmodified = metadata::go_rfc3339(&meta.lastmodified)?;
    let (stored, _) = key
        .decrypt(&meta.mac, lastmodified.as_bytes())
        .map_err(|source| Error::MacMismatch { source: Some(source) })?;
    if stored.as_slice() != computed.as_bytes() {
        return Err(Error::MacMismatch { source: None });
    }

    let mut out = SecretBuf::with_capacity(input.len() + input.len() / 2);
    let emit_error = |source| Error::Emit { format, source };
    match format {
        Format::Yaml => yaml::emit(&doc.branches, &mut out).map_err(emit_error)?,
        Format::Json => json::emit(&doc.branches[0], &mut out).map_err(emit_error)?,
        Format::Dotenv => dotenv::emit(&doc.branches[0], &mut out).map_err(emit_error)?,
        Format::Binary => {
            let data = doc.branches[0].iter().find_map(|e| match e {
                Entry::Pair(k, Node::Str(s)) if k.as_str() == "data" => Some(s.as_bytes()),
                Entry::Pair(k, Node::Bytes(b)) if k.as_str() == "data" => Some(b.as_slice()),
                _ => None,
            });
            let data = data.ok_or_else(|| {
                emit_error(crate::error::SyntaxError::new("a binary SOPS file has no string `data` value"))
            })?;
            out.extend_from_slice(data);
        }
    }
    Ok(Plaintext { bytes: out.into_inner(), format })
}

struct Encrypter<'a> {
    key: &'a DataKey,
    rules: &'a Rules,
    mac: Sha512,
}

impl Visitor for Encrypter<'_> {
    type Error = Error;

    fn leaf(&mut self, node: &mut Node, at: &Visit<'_>) -> Result<(), Error> {
        let encrypted = self.rules.should_encrypt(at.path, at.comments, false);
        let Some(bytes) = tree::scalar_bytes(node) else { return Ok(()) };
        if !self.rules.mac_only_encrypted || encrypted {
            self.mac.update(&bytes);
        }
        if encrypted {
            let kind = match node {
                Node::Str(s) if s.is_empty() => return Ok(()),
                Node::Str(_) => "str",
                Node::Int(_) => "int",
                Node::Float(_) => "float",
                Node::Bool(_) => "bool",
                Node::Bytes(_) => "bytes",
                _ => return Ok(()),
            };
            let aad = tree::aad(at.path);
            *node = Node::Str(Text::from(self.key.encrypt(&bytes, kind, aad.as_bytes())?));
        }
        Ok(())
    }

    fn comment(&mut self, text: &mut Text, at: &Visit<'_>) -> Result<(), Error> {
        if text.is_empty() || !self.rules.should_encrypt(at.path, at.comments, true) {
            return Ok(());
        }
        let aad = tree::aad(at.path);
        *text = Text::from(self.key.encrypt(text.as_bytes(), "comment", aad.as_bytes())?);
        Ok(())
    }
}

pub(crate) fn encrypt(
    plaintext: &[u8],
    format: Format,
    recipients: &[&str],
    options: &EncryptOptions,
) -> Result<Vec<u8>, Error> {
    let recipients = keys::parse_recipients(recipients)?;
    let rules = Rules::new(options.rule.clone(), options.mac_only_encrypted)?;
    let mut branches = match format {
        Format::Binary => {
            let text = std::str::from_utf8(plaintext).map_err(|e| Error::Parse {
                format,
                source: crate::error::SyntaxError::new(
                    "SOPS keeps binary files as a JSON string: the input must be UTF-8",
                )
                .caused_by(e),
            })?;
            vec![vec![Entry::pair("data", Node::Str(Text::from(text)))]]
        }
        _ => {
            let doc = read(plaintext, format)?;
            let reserved = doc.metadata.is_some()
                || (format == Format::Dotenv
                    && doc.branches[0].iter().any(|e| matches!(e, Entry::Pair(k, _) if k.starts_with(DOTENV_PREFIX))));
            if reserved {
                return Err(Error::AlreadyEncrypted { format });
            }
            doc.branches
        }
    };

    let key = DataKey::generate()?;
    let mut visitor = Encrypter { key: &key, rules: &rules, mac: mac_hasher(&rules) };
    for branch in &mut branches {
        tree::walk_branch(branch, &mut visitor)?;
    }
    let mac = hex::encode_upper(visitor.mac.finalize());
    let lastmodified = metadata::now();
    let age = recipients
        .iter()
        .map(|(recipient, name)| {
            Ok(AgeStanza { recipient: name.clone(), enc: keys::wrap_data_key(&key, recipient, name)? })
        })
        .collect::<Result<Vec<_>, Error>>()?;
    let meta = Metadata {
        age,
        other_kinds: Vec::new(),
        mac: key.encrypt(mac.as_bytes(), "str", lastmodified.as_bytes())?,
        lastmodified,
        rules,
        version: metadata::WRITTEN_VERSION.to_owned(),
    };
    let meta_node = meta.to_node();

    let mut out = SecretBuf::with_capacity(plaintext.len() * 3 + 1024);
    let emit_error = |source| Error::Emit { format, source };
    match format {
        Format::Yaml => {
            for branch in &mut branches {
                branch.push(Entry::pair(SOPS_KEY, meta_node.clone()));
            }
            yaml::emit(&branches, &mut out).map_err(emit_error)?;
        }
        Format::Json | Format::Binary => {
            branches[0].push(Entry::pair(SOPS_KEY, meta_node));
            json::emit(&branches[0], &mut out).map_err(emit_error)?;
        }
        Format::Dotenv => {
            for (k, v) in metadata::flatten(&meta_node) {
                branches[0].push(Entry::Pair(Text::from(format!("{DOTENV_PREFIX}{k}")), Node::Str(v)));
            }
            dotenv::emit(&branches[0], &mut out).map_err(emit_error)?;
        }
    }
    // Ciphertext only: no need to keep it in a zeroizing buffer.
    Ok(std::mem::take(&mut *out.into_inner()))
}
