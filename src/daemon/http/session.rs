//! Sessions that every replica reads: the session is the cookie, sealed with a key the replicas
//! share, and nothing about it is kept in a process.
//!
//! ```text
//!   shared secret (32 bytes)  Secret strata-session-key (Kubernetes mode) | state_dir/session.key (0600)
//!     ├── HMAC-SHA256(secret, "strata session v1 seal")         AES-256-GCM key: cookies
//!     ├── HMAC-SHA256(secret, "strata session v1 csrf")         CSRF tokens: HMAC(key, sid)
//!     ├── HMAC-SHA256(secret, "strata session v1 token")        API token fingerprints
//!     └── HMAC-SHA256(secret, "strata session v1 principal")    keys of the revocation record
//!
//!   cookie value: "v1." base64url(nonce (12 random bytes) || AES-256-GCM(JSON claims) || tag)
//!                 associated data: the purpose ("session", "oidc"), so one cookie is never
//!                 taken for the other
//! ```
//!
//! A cookie cannot be read or forged without the secret: the claims ([`Claims`]) say who (name,
//! groups, how they signed in), until when, the session's generation in the revocation record
//! ([`super::revoke`]) and, for a session a token opened, that token's fingerprint, so a rotated
//! token ends it on every replica that read the new one. Nonces are random: with 96 bits, the
//! chance of a repeat stays negligible far beyond the number of sign-ins a daemon sees.

use std::io::Write as _;
use std::path::{Path, PathBuf};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use hmac::{Hmac, KeyInit, Mac};
use ring::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

/// The cookie's format version (its value starts with it).
const VERSION: &str = "v1.";

/// What a browser may hold at most for one cookie; the claims are kept well under it.
pub const MAX_COOKIE: usize = 3800;

/// Groups a session carries at most, and the length of each; more are dropped (logged).
pub const MAX_GROUPS: usize = 64;
pub const MAX_GROUP_LEN: usize = 128;

/// The keys derived from the replicas' shared secret.
pub struct Keys {
    seal: LessSafeKey,
    csrf: [u8; 32],
    token: [u8; 32],
    principal: [u8; 32],
}

fn derive(secret: &[u8; 32], label: &str) -> [u8; 32] {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("any key length");
    mac.update(label.as_bytes());
    mac.finalize().into_bytes().into()
}

fn hmac(key: &[u8; 32], data: &[u8]) -> [u8; 32] {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("any key length");
    mac.update(data);
    mac.finalize().into_bytes().into()
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// `n` random bytes from the kernel.
pub fn random<const N: usize>() -> [u8; N] {
    let mut bytes = [0u8; N];
    getrandom::fill(&mut bytes).expect("the kernel's random source is available");
    bytes
}

impl Keys {
    pub fn new(secret: &[u8; 32]) -> Keys {
        let seal = derive(secret, "strata session v1 seal");
        Keys {
            seal: LessSafeKey::new(UnboundKey::new(&AES_256_GCM, &seal).expect("a 32-byte key")),
            csrf: derive(secret, "strata session v1 csrf"),
            token: derive(secret, "strata session v1 token"),
            principal: derive(secret, "strata session v1 principal"),
        }
    }

    /// `value` as JSON, encrypted and authenticated for `purpose`.
    pub fn seal(&self, purpose: &str, value: &impl Serialize) -> String {
        let mut buffer = serde_json::to_vec(value).expect("claims serialise");
        let nonce: [u8; NONCE_LEN] = random();
        self.seal
            .seal_in_place_append_tag(Nonce::assume_unique_for_key(nonce), Aad::from(purpose.as_bytes()), &mut buffer)
            .expect("AES-GCM seals any claims this size");
        let mut all = nonce.to_vec();
        all.extend_from_slice(&buffer);
        format!("{VERSION}{}", B64.encode(all))
    }

    /// What [`Keys::seal`] sealed for `purpose`; `None` for anything else (another key, another
    /// purpose, a changed byte, an older format).
    pub fn open<T: serde::de::DeserializeOwned>(&self, purpose: &str, text: &str) -> Option<T> {
        let bytes = B64.decode(text.strip_prefix(VERSION)?).ok()?;
        if bytes.len() < NONCE_LEN + AES_256_GCM.tag_len() {
            return None;
        }
        let (nonce, sealed) = bytes.split_at(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(nonce).ok()?;
        let mut sealed = sealed.to_vec();
        let plain = self.seal.open_in_place(nonce, Aad::from(purpose.as_bytes()), &mut sealed).ok()?;
        serde_json::from_slice(plain).ok()
    }

    /// The CSRF token of session `sid`: any replica derives it, nobody without the key can.
    pub fn csrf(&self, sid: &str) -> String {
        hex(&hmac(&self.csrf, sid.as_bytes()))
    }

    /// A keyed fingerprint of an API token: compared instead of the token (one length, constant
    /// time), and carried in the sessions the token opens.
    pub fn fingerprint(&self, token: &str) -> [u8; 32] {
        hmac(&self.token, token.as_bytes())
    }

    /// The key under which a principal's generation is recorded: says nothing of the name.
    pub fn principal(&self, principal: &str) -> String {
        format!("p-{}", hex(&hmac(&self.principal, principal.as_bytes())[..16]))
    }
}

/// How a session was opened.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum Via {
    /// With API token `name`; `fp` is the hex fingerprint of the token as it was then.
    Token { name: String, fp: String },
    /// Through the OpenID provider; `sub` is the subject it named.
    Oidc { sub: String },
}

/// What a session cookie says.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Claims {
    /// The identity: a token's name, or the provider's user name.
    pub name: String,
    /// What someone typed at sign-in with the shared token: shown beside the identity.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
    #[serde(default)]
    pub groups: Vec<String>,
    pub via: Via,
    /// Random: what the CSRF token is derived from.
    pub sid: String,
    /// Issued and expiring, in seconds since the epoch.
    pub iat: i64,
    pub exp: i64,
    /// The principal's generation when the session was opened (see [`Claims::principal`]).
    pub generation: u64,
    /// For a token's session: the token's generation then (bumped when it is rotated).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_generation: Option<u64>,
}

impl Claims {
    /// Whose sessions a sign-out ends: a token's holder (with the name they gave for the shared
    /// token), or a provider's subject.
    pub fn principal(&self) -> String {
        principal(&self.via, self.note.as_deref())
    }
}

pub fn principal(via: &Via, note: Option<&str>) -> String {
    match via {
        Via::Token { name, .. } => format!("token:{name}:{}", note.unwrap_or("")),
        Via::Oidc { sub } => format!("oidc:{sub}"),
    }
}

/// The revocation record's entry for token `name` (bumped when the token changes).
pub fn token_principal(name: &str) -> String {
    format!("token:{name}")
}

/// Groups as a session keeps them: printable, bounded in number and length.
pub fn clean_groups(groups: impl IntoIterator<Item = String>) -> Vec<String> {
    let mut out: Vec<String> = groups
        .into_iter()
        .filter(|g| !g.is_empty() && g.len() <= MAX_GROUP_LEN && !g.chars().any(char::is_control))
        .collect();
    out.sort();
    out.dedup();
    if out.len() > MAX_GROUPS {
        tracing::warn!(
            groups = out.len(),
            kept = MAX_GROUPS,
            "More groups than a session keeps; the rest are dropped."
        );
        out.truncate(MAX_GROUPS);
    }
    out
}

/// Why the session key file cannot be used: the file, what to do, and the file system's error
/// as the source where there is one.
#[derive(Debug, thiserror::Error)]
pub enum KeyFileError {
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{} is readable by others (mode {mode:o}); chmod 600 it", path.display())]
    Readable { path: PathBuf, mode: u32 },
    #[error("{} holds {size} bytes, not 32; delete it and strata makes a new one", path.display())]
    Size { path: PathBuf, size: usize },
}

/// Why a session cannot be opened or ended.
#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    #[error("the session key cannot be had (the daemon's log says why)")]
    NoKey,
    #[error(transparent)]
    Revocations(#[from] super::revoke::RevokeError),
    #[error("the session would not fit in a cookie ({0} bytes): fewer or shorter groups")]
    TooLarge(usize),
}

/// The shared secret in `path` (32 bytes, mode 0600), made by the first process that finds none.
pub fn key_file(path: &Path) -> Result<[u8; 32], KeyFileError> {
    use std::os::unix::fs::PermissionsExt as _;
    fn io(at: &Path) -> impl FnOnce(std::io::Error) -> KeyFileError + '_ {
        move |source| KeyFileError::Io { path: at.to_path_buf(), source }
    }
    match std::fs::read(path) {
        Ok(bytes) => {
            let mode = std::fs::metadata(path).map_err(io(path))?.permissions().mode() & 0o777;
            if mode & 0o077 != 0 {
                return Err(KeyFileError::Readable { path: path.to_path_buf(), mode });
            }
            <[u8; 32]>::try_from(bytes.as_slice())
                .map_err(|_| KeyFileError::Size { path: path.to_path_buf(), size: bytes.len() })
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let key: [u8; 32] = random();
            let dir = path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
            std::fs::create_dir_all(dir).map_err(io(dir))?;
            // NamedTempFile creates its file 0600.
            let mut file = tempfile::NamedTempFile::new_in(dir).map_err(io(dir))?;
            file.write_all(&key).and_then(|_| file.as_file().sync_all()).map_err(io(path))?;
            match file.persist_noclobber(path) {
                Ok(_) => Ok(key),
                Err(e) if e.error.kind() == std::io::ErrorKind::AlreadyExists => key_file(path),
                Err(e) => Err(io(path)(e.error)),
            }
        }
        Err(e) => Err(io(path)(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claims() -> Claims {
        Claims {
            name: "alice".into(),
            note: None,
            groups: vec!["deployers".into()],
            via: Via::Oidc { sub: "123".into() },
            sid: hex(&random::<16>()),
            iat: 1,
            exp: 2,
            generation: 0,
            token_generation: None,
        }
    }

    #[test]
    fn cookies_open_only_with_the_same_key_and_purpose() {
        let keys = Keys::new(&[7; 32]);
        let sealed = keys.seal("session", &claims());
        assert!(sealed.starts_with("v1.") && sealed.len() < MAX_COOKIE);
        let opened: Claims = keys.open("session", &sealed).unwrap();
        assert_eq!(opened.name, "alice");
        assert!(keys.open::<Claims>("oidc", &sealed).is_none(), "another purpose");
        assert!(Keys::new(&[8; 32]).open::<Claims>("session", &sealed).is_none(), "another key");
        // Any changed character is refused.
        let mut bytes = sealed.into_bytes();
        let last = bytes.len() - 5;
        bytes[last] = if bytes[last] == b'A' { b'B' } else { b'A' };
        assert!(keys.open::<Claims>("session", &String::from_utf8(bytes).unwrap()).is_none());
        assert!(keys.open::<Claims>("session", "v1.").is_none());
        assert!(keys.open::<Claims>("session", &"0".repeat(64)).is_none());
        // Two seals of the same claims differ (random nonces).
        assert_ne!(keys.seal("session", &claims()), keys.seal("session", &claims()));
    }

    #[test]
    fn csrf_tokens_and_fingerprints_are_keyed() {
        let (a, b) = (Keys::new(&[1; 32]), Keys::new(&[2; 32]));
        assert_eq!(a.csrf("s"), Keys::new(&[1; 32]).csrf("s"));
        assert_ne!(a.csrf("s"), b.csrf("s"));
        assert_ne!(a.csrf("s"), a.csrf("t"));
        assert_ne!(a.fingerprint("t"), b.fingerprint("t"));
        assert!(a.principal("oidc:1").starts_with("p-") && a.principal("oidc:1").len() == 34);
    }

    #[test]
    fn the_key_file_is_made_once_and_kept_private() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("session.key");
        let key = key_file(&path).unwrap();
        assert_eq!(key_file(&path).unwrap(), key);
        assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert!(key_file(&path).unwrap_err().to_string().contains("readable by others"));
    }
}
