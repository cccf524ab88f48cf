//! Every way a verification can fail, each saying which key and what to do.

use std::fmt;
use std::time::SystemTime;

use crate::time::Rfc3339;

/// A boxed cause, kept as the `source()` of an error.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// How an object was signed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Method {
    /// SSHSIG, git's `gpg.format = ssh`.
    Ssh,
    /// OpenPGP, git's `gpg.format = openpgp` (the default).
    OpenPgp,
}

impl Method {
    /// The [`Policy`](crate::Policy) field that lists trusted keys for this method.
    pub fn policy_setting(self) -> &'static str {
        match self {
            Method::Ssh => "ssh_allowed_signers",
            Method::OpenPgp => "gpg_keyring",
        }
    }
}

impl fmt::Display for Method {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Method::Ssh => "SSH",
            Method::OpenPgp => "OpenPGP",
        })
    }
}

/// The kind of git object being verified.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ObjectKind {
    /// A commit, signature in its `gpgsig` header.
    Commit,
    /// An annotated tag, signature after its message.
    Tag,
}

impl fmt::Display for ObjectKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ObjectKind::Commit => "commit",
            ObjectKind::Tag => "tag",
        })
    }
}

fn at(t: &SystemTime) -> Rfc3339 {
    Rfc3339(*t)
}

/// Why a signed object was not accepted.
///
/// Every variant that knows the signing key names its fingerprint
/// (`SHA256:…` for SSH, the hex v4/v6 fingerprint for OpenPGP).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum VerifyError {
    /// The object has no signature at all.
    #[error(
        "the {object} is not signed; only signed {object}s are applied — sign it \
         (`git commit -S`, `git tag -s`) with a key the policy trusts"
    )]
    Unsigned { object: ObjectKind },

    /// The object itself could not be read (e.g. no committer date).
    #[error("the {object} cannot be read: {reason}")]
    MalformedObject { object: ObjectKind, reason: String },

    /// The signature could not be decoded.
    #[error("the {method} signature cannot be read: {reason}")]
    MalformedSignature {
        method: Method,
        reason: String,
        #[source]
        source: Option<BoxError>,
    },

    /// A signature this verifier refuses by design (X.509, SSH certificates…).
    #[error("{what} is not supported: {reason}")]
    Unsupported { what: String, reason: String },

    /// The object is signed with a method the policy has no keys for.
    #[error(
        "the {object} is signed with {method}, but the policy has no {}; \
         configure it to accept {method} signatures",
        .method.policy_setting()
    )]
    MethodNotConfigured { object: ObjectKind, method: Method },

    /// The signing key is not in the policy.
    #[error(
        "signed by {method} key {fingerprint}, which is not in {}; \
         add the key to {} if its holder may sign",
        .method.policy_setting(), .method.policy_setting()
    )]
    UnknownKey { method: Method, fingerprint: String },

    /// The signature does not verify over the payload: the object was
    /// changed after signing, or the signature was taken from another one.
    #[error(
        "the {method} signature by {fingerprint} does not match the signed content: the \
         object was altered after signing or the signature belongs to another object; \
         do not apply it"
    )]
    BadSignature {
        method: Method,
        fingerprint: String,
        #[source]
        source: Option<BoxError>,
    },

    /// An SSH signature made for another namespace than `git`, or a key
    /// whose `namespaces=` option does not allow `git`.
    #[error("SSH key {fingerprint}: {detail}")]
    WrongNamespace {
        fingerprint: String,
        /// The namespace the signature was made for.
        namespace: String,
        detail: String,
    },

    /// The key had expired when the object was signed.
    #[error(
        "{method} key {fingerprint} expired at {} but signed at {}; \
         extend the key's validity or re-sign with a current key",
        at(.expired_at), at(.signed_at)
    )]
    ExpiredKey { method: Method, fingerprint: String, expired_at: SystemTime, signed_at: SystemTime },

    /// The key was not yet valid when the object was signed.
    #[error(
        "{method} key {fingerprint} is valid only from {} but signed at {}; \
         check the signer's clock or the key's validity",
        at(.valid_from), at(.signed_at)
    )]
    KeyNotYetValid { method: Method, fingerprint: String, valid_from: SystemTime, signed_at: SystemTime },

    /// The OpenPGP key (or its certificate) is revoked.
    #[error(
        "OpenPGP key {fingerprint} is revoked ({reason}, at {}); \
         its signatures are not trusted — re-sign with a current key",
        at(.revoked_at)
    )]
    RevokedKey { fingerprint: String, reason: String, revoked_at: SystemTime },

    /// The signature uses a hash function that is no longer collision-resistant.
    #[error(
        "the {method} signature by {fingerprint} uses {algorithm}, which is refused as \
         weak; re-sign with SHA-256 or stronger (gpg: --digest-algo SHA256)"
    )]
    WeakHash { method: Method, fingerprint: String, algorithm: String },

    /// The OpenPGP key that signed may not make signatures.
    #[error("OpenPGP key {fingerprint} is not a valid signing key: {reason}")]
    NotSigningKey { fingerprint: String, reason: String },

    /// The policy requires the signer to be the committer, and it is not.
    #[error(
        "{method} key {fingerprint} is trusted as {signer:?}, but the committer is \
         {committer:?}; commit as one of the key's identities or list the identity for the key"
    )]
    SignerNotCommitter { method: Method, fingerprint: String, committer: String, signer: String },
}

impl VerifyError {
    /// The fingerprint of the signing key, when the error knows it.
    pub fn fingerprint(&self) -> Option<&str> {
        match self {
            VerifyError::UnknownKey { fingerprint, .. }
            | VerifyError::BadSignature { fingerprint, .. }
            | VerifyError::WrongNamespace { fingerprint, .. }
            | VerifyError::ExpiredKey { fingerprint, .. }
            | VerifyError::KeyNotYetValid { fingerprint, .. }
            | VerifyError::RevokedKey { fingerprint, .. }
            | VerifyError::WeakHash { fingerprint, .. }
            | VerifyError::NotSigningKey { fingerprint, .. }
            | VerifyError::SignerNotCommitter { fingerprint, .. } => Some(fingerprint),
            _ => None,
        }
    }
}

/// A line of an `allowed_signers` file that cannot be used.
#[derive(Debug, thiserror::Error)]
#[error("allowed_signers line {line}: {reason}")]
pub struct AllowedSignersError {
    /// 1-based line number.
    pub line: usize,
    pub reason: String,
    #[source]
    pub source: Option<BoxError>,
}

/// A keyring that cannot be read.
#[derive(Debug, thiserror::Error)]
#[error("OpenPGP keyring: {reason}")]
pub struct KeyringError {
    pub reason: String,
    #[source]
    pub source: Option<BoxError>,
}
