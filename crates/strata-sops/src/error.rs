//! The one error type of the crate.
//!
//! No message here ever carries plaintext or key material: values are named
//! by their path (keys are cleartext in a SOPS file), keys by their public
//! half, and parse errors by a line number. `tests/errors.rs` checks this for
//! every path it can provoke.

use std::error::Error as StdError;
use std::fmt;

use crate::Format;

/// Everything that can go wrong reading, decrypting or encrypting a SOPS file.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The document has no `sops` metadata (for dotenv: no `sops_*` keys).
    #[error("not a SOPS-encrypted {format} file: it has no `sops` metadata")]
    NotEncrypted {
        /// The format the document was read as.
        format: Format,
    },

    /// `encrypt` was handed a document that already carries `sops` metadata.
    #[error("the {format} document is already SOPS-encrypted (it has `sops` metadata)")]
    AlreadyEncrypted {
        /// The format the document was read as.
        format: Format,
    },

    /// The document is not valid in its format, or has a shape SOPS refuses
    /// (a top-level sequence, a non-string key, ...).
    #[error("cannot read the {format} document")]
    Parse {
        /// The format the document was read as.
        format: Format,
        /// What is wrong, and where.
        #[source]
        source: SyntaxError,
    },

    /// The plaintext tree cannot be written in the requested format (a nested
    /// value in a dotenv file, a non-finite float in JSON, ...).
    #[error("cannot write the document as {format}")]
    Emit {
        /// The format that was to be written.
        format: Format,
        /// What could not be written.
        #[source]
        source: SyntaxError,
    },

    /// A SOPS store this crate does not implement (INI).
    #[error("SOPS {format} files are not supported (only YAML, JSON, dotenv and binary)")]
    UnsupportedFormat {
        /// The format's name.
        format: &'static str,
    },

    /// A field of the `sops` metadata is missing or malformed.
    #[error("malformed SOPS metadata: field `{field}` {problem}")]
    Metadata {
        /// The metadata field, as it is spelled in the file (`sops.lastmodified`).
        field: String,
        /// What is wrong with it.
        problem: &'static str,
        /// The underlying error, if any.
        #[source]
        source: Option<Box<dyn StdError + Send + Sync>>,
    },

    /// The file's data key is only wrapped for key types other than age.
    #[error(
        "this file's data key is only encrypted with {} key(s); only age is supported",
        .kinds.join(", ")
    )]
    UnsupportedKeyType {
        /// The metadata names of the key types found (`pgp`, `kms`, `gcp_kms`,
        /// `azure_kv`, `hc_vault`).
        kinds: Vec<&'static str>,
    },

    /// A SOPS feature this crate refuses (Shamir key groups, ...).
    #[error("unsupported SOPS feature: {feature}")]
    Unsupported {
        /// What it is.
        feature: &'static str,
    },

    /// None of the given identities opens any age stanza of the file.
    #[error(
        "no age identity opens this file: it is encrypted for age recipient(s) [{}]; identities tried (public keys): [{}]",
        .recipients.join(", "),
        .tried.join(", ")
    )]
    NoMatchingKey {
        /// The age recipients (public keys) the file was encrypted for.
        recipients: Vec<String>,
        /// The public keys of the identities that were tried.
        tried: Vec<String>,
        /// The last error age gave, if a stanza was tried and failed.
        #[source]
        source: Option<age::DecryptError>,
    },

    /// An age stanza opened, but what it held is not a SOPS data key.
    #[error("the data key wrapped for age recipient {recipient} is malformed")]
    DataKey {
        /// The recipient whose stanza it was.
        recipient: String,
        /// Why it was refused.
        #[source]
        source: Box<dyn StdError + Send + Sync>,
    },

    /// The MAC computed over the decrypted values differs from the one stored
    /// in the file, or the stored one does not decrypt (its additional data is
    /// `sops.lastmodified`): the file was changed after it was encrypted.
    #[error("MAC mismatch: the file was modified after it was encrypted (tampered or corrupted)")]
    MacMismatch {
        /// Set when the stored MAC itself does not decrypt.
        #[source]
        source: Option<ValueError>,
    },

    /// A value does not decrypt with the file's data key.
    #[error("the value at `{path}` does not decrypt")]
    Value {
        /// The value's key path, `a:b:c` as SOPS writes it (`:` for top-level comments).
        path: String,
        /// Why.
        #[source]
        source: ValueError,
    },

    /// A line of an identity text is not an age X25519 identity.
    #[error("line {line} of the age identities is not an X25519 identity (AGE-SECRET-KEY-1...)")]
    InvalidIdentity {
        /// 1-based line number.
        line: usize,
        /// What age said.
        #[source]
        source: KeyError,
    },

    /// An identity text holds no identity at all.
    #[error("no age identity (AGE-SECRET-KEY-1...) found")]
    NoIdentities,

    /// A recipient given to `encrypt` is not an age X25519 recipient.
    #[error("invalid age recipient `{recipient}`")]
    InvalidRecipient {
        /// The recipient as given (a public key).
        recipient: String,
        /// What age said.
        #[source]
        source: KeyError,
    },

    /// `encrypt` was given no recipient.
    #[error("encryption needs at least one age recipient")]
    NoRecipients,

    /// An `encrypted_regex`-style option is not a valid regular expression.
    #[error("invalid regular expression in `{field}`")]
    InvalidRegex {
        /// The metadata field or option.
        field: &'static str,
        /// The regex crate's error.
        #[source]
        source: regex::Error,
    },

    /// The operating system's random number generator failed.
    #[error("the operating system's random number generator failed")]
    Random {
        /// getrandom's error.
        #[source]
        source: getrandom::Error,
    },

    /// age failed to wrap the data key for a recipient.
    #[error("cannot wrap the data key for age recipient {recipient}")]
    Wrap {
        /// The recipient.
        recipient: String,
        /// What failed.
        #[source]
        source: Box<dyn StdError + Send + Sync>,
    },
}

/// Why a document could not be read or written. Carries a line number, never
/// the offending text.
#[derive(Debug)]
pub struct SyntaxError {
    message: String,
    line: Option<usize>,
    source: Option<Box<dyn StdError + Send + Sync>>,
}

impl SyntaxError {
    pub(crate) fn new(message: impl Into<String>) -> Self {
        SyntaxError { message: message.into(), line: None, source: None }
    }

    pub(crate) fn at_line(mut self, line: usize) -> Self {
        self.line = Some(line);
        self
    }

    pub(crate) fn caused_by(mut self, source: impl StdError + Send + Sync + 'static) -> Self {
        self.source = Some(Box::new(source));
        self
    }

    /// The 1-based line the problem was found on, when known.
    pub fn line(&self) -> Option<usize> {
        self.line
    }
}

impl fmt::Display for SyntaxError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)?;
        if let Some(line) = self.line {
            write!(f, " (line {line})")?;
        }
        Ok(())
    }
}

impl StdError for SyntaxError {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        self.source.as_deref().map(|e| e as &(dyn StdError + 'static))
    }
}

/// Why one `ENC[AES256_GCM,...]` value does not decrypt.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ValueError {
    /// The value is not of the form `ENC[AES256_GCM,data:...,iv:...,tag:...,type:...]`.
    #[error("not a SOPS encrypted value (ENC[AES256_GCM,data:...,iv:...,tag:...,type:...])")]
    NotEncrypted,
    /// A base64 field does not decode.
    #[error("field `{field}` is not valid base64")]
    Base64 {
        /// `data`, `iv` or `tag`.
        field: &'static str,
        /// base64's error.
        #[source]
        source: base64::DecodeError,
    },
    /// The IV or tag has a length SOPS never writes.
    #[error("field `{field}` has length {len}, expected {expected}")]
    Length {
        /// `iv` or `tag`.
        field: &'static str,
        /// Its length.
        len: usize,
        /// What SOPS writes.
        expected: usize,
    },
    /// AES-GCM authentication failed: wrong data key, value moved to another
    /// path, or ciphertext altered.
    #[error("AES-GCM authentication failed (wrong key, value moved, or ciphertext altered)")]
    Authentication,
    /// The `type:` is none of str, int, int64, float, bool, bytes, comment.
    #[error("unknown value type `{0}`")]
    UnknownType(String),
    /// The plaintext does not parse as its declared type.
    #[error("the decrypted value is not a valid `{0}`")]
    BadPlaintext(&'static str),
}

/// What age said about a key it could not parse.
#[derive(Debug)]
pub struct KeyError(pub(crate) &'static str);

impl fmt::Display for KeyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0)
    }
}

impl StdError for KeyError {}
