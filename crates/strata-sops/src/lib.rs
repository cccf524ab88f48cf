//! Decrypt and encrypt [SOPS] files with [age] X25519 keys, in memory, so
//! that Kubernetes Secrets can live encrypted in a Git repository (as Flux's
//! kustomize-controller allows).
//!
//! ```text
//!   file bytes ──parse──▶ tree (ordered) + `sops` metadata
//!                              │                │
//!                              │      age stanza (sops.age[].enc)
//!                              │                │ Identities::unwrap (X25519)
//!                              │                ▼
//!                              │           data key (32 bytes)
//!                              ▼                │
//!        walk values in document order ◀────────┘
//!        ├─ rule says encrypted: AES-256-GCM open, AAD = "key:key:…:"
//!        └─ feed Go-formatted plaintext to SHA-512 (all values, or only the
//!           encrypted ones with mac_only_encrypted)
//!                              │
//!        stored MAC (AES-GCM, AAD = lastmodified) == computed?  ─no─▶ MacMismatch
//!                              │ yes
//!                              ▼
//!        emit tree without `sops` ──▶ Plaintext (zeroized on drop)
//! ```
//!
//! `encrypt` runs the same walk the other way: a fresh data key and fresh IVs
//! from the operating system's RNG, the data key wrapped once per recipient
//! as an armored age file, the MAC encrypted under `lastmodified`, and the
//! metadata laid out as SOPS 3.10 writes it, so the `sops` tool reads it.
//!
//! Supported: YAML (several documents, comments, anchors), JSON, dotenv and
//! SOPS' binary envelope; the encryption rules `unencrypted_suffix`,
//! `encrypted_suffix`, `unencrypted_regex`, `encrypted_regex`,
//! `unencrypted_comment_regex`, `encrypted_comment_regex` and
//! `mac_only_encrypted`; files wrapped for several age recipients and for
//! other key types besides age. Refused with a clear error: INI files, files
//! whose data key is wrapped only for PGP, KMS, GCP KMS, Azure Key Vault or
//! Vault, and Shamir key groups (more than one `key_groups` entry); age
//! plugin and SSH identities.
//!
//! Limits, as tested against sops 3.11.0: comments are placed where yaml.v3
//! places them in the usual layouts (before the key, trailing a value, at the
//! end of a block); an encrypted comment that ends up elsewhere is still
//! decrypted, by trying the additional data of every container. sops writes
//! some cleartext multi-line values in sequences with an indentation
//! indicator one level short (`- k: |4-`), which is not valid YAML; such
//! files are refused with a parse error, as spec-following YAML readers
//! refuse them. Plaintext lives in buffers that are zeroed when dropped (the
//! tree, the data key, the output); the YAML and JSON parsers' own buffers,
//! which see the plaintext when encrypting, are not.
//!
//! ```
//! use strata_sops::{EncryptOptions, Format, Identities, decrypt, encrypt, recipients};
//!
//! // age-keygen output: comments and AGE-SECRET-KEY-1… lines.
//! let identities = Identities::parse(include_str!("../tests/fixtures/sops/keys.txt"))?;
//! let public = identities.public_keys();
//!
//! let secret = b"apiVersion: v1\nkind: Secret\nstringData:\n    password: hunter2\n";
//! let file = encrypt(secret, Format::Yaml, &[public[0].as_str()], &EncryptOptions::default())?;
//! assert!(!String::from_utf8_lossy(&file).contains("hunter2"));
//! assert_eq!(recipients(&file, Format::Yaml)?, [public[0].clone()]);
//!
//! let plain = decrypt(&file, Format::Yaml, &identities)?;
//! assert!(String::from_utf8_lossy(plain.as_bytes()).contains("password: hunter2"));
//! # Ok::<(), strata_sops::Error>(())
//! ```
//!
//! [SOPS]: https://github.com/getsops/sops
//! [age]: https://age-encryption.org

use std::fmt;

use zeroize::Zeroizing;

mod cipher;
mod dotenv;
mod error;
mod format;
mod json;
mod keys;
mod metadata;
mod rules;
mod sops;
mod text;
mod tree;
mod yaml;

pub use error::{Error, KeyError, SyntaxError, ValueError};
pub use format::Format;
pub use keys::Identities;
pub use rules::EncryptionRule;

/// A decrypted document, in the format it was read in, without its `sops`
/// metadata. Its buffer is zeroed when dropped; `Debug` does not show it.
pub struct Plaintext {
    bytes: Zeroizing<Vec<u8>>,
    format: Format,
}

impl Plaintext {
    /// The document's bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// The format it is written in.
    pub fn format(&self) -> Format {
        self.format
    }
}

impl fmt::Debug for Plaintext {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Plaintext({}, {} bytes)", self.format, self.bytes.len())
    }
}

/// How `encrypt` chooses what to encrypt.
#[derive(Clone, Debug, Default)]
pub struct EncryptOptions {
    /// Which values to encrypt; SOPS' default is `unencrypted_suffix: _unencrypted`.
    pub rule: EncryptionRule,
    /// Compute the MAC over encrypted values only, so cleartext values may
    /// change without breaking it.
    pub mac_only_encrypted: bool,
}

/// Whether `input` is a SOPS file of `format`: it parses and carries `sops`
/// metadata (for dotenv, `sops_mac`, `sops_lastmodified` or `sops_version`).
pub fn is_encrypted(input: &[u8], format: Format) -> bool {
    sops::read(input, format).is_ok_and(|doc| matches!(doc.metadata, Some(tree::Node::Map(_))))
}

/// The age recipients (public keys) a SOPS file's data key is wrapped for.
/// Empty when it is wrapped only for other key types.
pub fn recipients(input: &[u8], format: Format) -> Result<Vec<String>, Error> {
    let doc = sops::read(input, format)?;
    let meta = sops::read_metadata(&doc, format)?;
    Ok(meta.age.into_iter().map(|s| s.recipient).collect())
}

/// Decrypts a SOPS file with age identities and verifies its MAC, returning
/// the plaintext document in the same format.
pub fn decrypt(input: &[u8], format: Format, identities: &Identities) -> Result<Plaintext, Error> {
    sops::decrypt(input, format, identities)
}

/// Encrypts a plaintext document for the given age recipients (`age1…`),
/// returning a SOPS file the `sops` tool can decrypt.
pub fn encrypt(
    plaintext: &[u8],
    format: Format,
    recipients: &[&str],
    options: &EncryptOptions,
) -> Result<Vec<u8>, Error> {
    sops::encrypt(plaintext, format, recipients, options)
}
