//! Signed commits: which commits of a repository carry a valid signature by an allowed key.
//!
//! ```text
//!   repository.verify { mode, ssh_allowed_signers, gpg_keyring } ──> Policy (files read now)
//!   head, last verified revision ──> the commits to verify: head alone (mode head), or every
//!                                    commit reachable from head and not from the last verified
//!                                    one, all parents (mode all)
//!   each: `git cat-file commit` bytes ──> strata_signatures::verify_commit ──> Verified | Refusal
//! ```
//!
//! The daemon refuses to evaluate a head with a refusal (it keeps the last verified revision);
//! `strata verify` asks the same question by hand, `strata plan` marks an unsigned head.

use std::fmt;
use std::path::{Path, PathBuf};

use strata_signatures::{AllowedSigners, Keyring, Policy, Verified, VerifyError};

/// Which commits must be signed (`repository.verify.mode`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VerifyMode {
    /// The commit evaluated: the branch head.
    Head,
    /// Every commit since the last one evaluated (all parents): none may slip in unsigned below a
    /// signed head.
    All,
}

/// `repository.verify`: the keys commits must be signed with, as files read at every
/// verification (so keys rotate without a restart).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Verify {
    pub mode: VerifyMode,
    /// OpenSSH allowed-signers file (`ssh-keygen -Y verify`'s `-f`; git's
    /// `gpg.ssh.allowedSignersFile`).
    pub ssh_allowed_signers: Option<PathBuf>,
    /// OpenPGP public keys, armored or binary (`gpg --export [--armor]`).
    pub gpg_keyring: Option<PathBuf>,
}

/// The most commits mode `all` verifies in one go: a history longer than this since the last
/// verified commit is refused rather than walked for minutes.
pub const MAX_COMMITS: usize = 10_000;

/// Why the keys of `repository.verify` cannot be used: the setting, the file, what to do. The
/// read or parse error is the source.
#[derive(Debug, thiserror::Error)]
pub enum KeysError {
    #[error("repository.verify.{setting}: cannot read {}: {source}", file.display())]
    Read {
        setting: &'static str,
        file: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "repository.verify.ssh_allowed_signers: {}: {source} (one `PRINCIPALS [OPTIONS] KEYTYPE KEY` per line, as ssh-keygen -Y verify reads it)",
        file.display()
    )]
    AllowedSigners {
        file: PathBuf,
        #[source]
        source: strata_signatures::AllowedSignersError,
    },
    #[error(
        "repository.verify.gpg_keyring: {}: {source} (export the allowed keys with gpg --export --armor KEYID…)",
        file.display()
    )]
    Keyring {
        file: PathBuf,
        #[source]
        source: strata_signatures::KeyringError,
    },
}

/// The keys of `repository.verify`, read from their files now (so a rotated file counts at the
/// next verification). The error names the file and what to do.
pub fn policy(verify: &Verify) -> Result<Policy, KeysError> {
    fn unreadable<'a>(setting: &'static str, file: &'a Path) -> impl FnOnce(std::io::Error) -> KeysError + 'a {
        move |source| KeysError::Read { setting, file: file.to_path_buf(), source }
    }
    let ssh_allowed_signers = match &verify.ssh_allowed_signers {
        None => None,
        Some(file) => {
            let text = std::fs::read_to_string(file).map_err(unreadable("ssh_allowed_signers", file))?;
            Some(
                AllowedSigners::parse(&text)
                    .map_err(|source| KeysError::AllowedSigners { file: file.clone(), source })?,
            )
        }
    };
    let gpg_keyring = match &verify.gpg_keyring {
        None => None,
        Some(file) => {
            let bytes = std::fs::read(file).map_err(unreadable("gpg_keyring", file))?;
            Some(Keyring::parse(&bytes).map_err(|source| KeysError::Keyring { file: file.clone(), source })?)
        }
    };
    Ok(Policy { ssh_allowed_signers, gpg_keyring, require_committer_identity: false })
}

/// A commit that may not be evaluated, and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Refusal {
    /// The full commit id.
    pub commit: String,
    /// The first line of its message.
    pub subject: String,
    /// Who signed it, as far as the signature says (`SSH key SHA256:…`), or that nobody did.
    pub signer: String,
    /// Why it is refused, and what to do.
    pub reason: String,
    /// Why, in a few words (`unsigned`, `key not allowed`): what fits a commit status.
    pub why: &'static str,
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "commit {} ({}) signed by {}: {}", short(&self.commit), self.subject, self.signer, self.reason)
    }
}

/// A commit that verified.
#[derive(Clone, Debug)]
pub struct Signed {
    pub commit: String,
    pub verified: Verified,
}

impl fmt::Display for Signed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let v = &self.verified;
        write!(f, "commit {}: good {} signature by {} ({})", short(&self.commit), v.method, v.signer, v.fingerprint)
    }
}

fn short(commit: &str) -> &str {
    commit.get(..12).unwrap_or(commit)
}

/// Why verification could not be done at all (not the commit's fault).
#[derive(Debug, thiserror::Error)]
pub enum Failure {
    /// The keys could not be read.
    #[error(transparent)]
    Keys(#[from] KeysError),
    /// The repository could not be read; git's error is the source.
    #[error("git: {}", .0.message())]
    Git(#[source] git2::Error),
    /// The commits to verify are too many.
    #[error(
        "more than {MAX_COMMITS} commits between the last verified {} and {}: verify them by hand (strata verify --rev) and restart with mode head, or sign a merge",
        short(since),
        short(head)
    )]
    TooMany { since: String, head: String },
    /// A commit is not signed as the policy demands.
    #[error("{0}")]
    Refused(Refusal),
}

/// What `verify_commit` says of the commit `oid`, with who signed it for the record.
fn check_one(repo: &git2::Repository, oid: git2::Oid, policy: &Policy) -> Result<Signed, Refusal> {
    let refusal = |signer: String, reason: String, why: &'static str| {
        let subject = repo
            .find_commit(oid)
            .ok()
            .and_then(|c| c.summary().ok().flatten().map(|s| s.chars().take(80).collect()))
            .unwrap_or_default();
        Refusal { commit: oid.to_string(), subject, signer, reason, why }
    };
    let unreadable =
        |e: git2::Error| refusal("nobody".into(), format!("cannot read the commit: {}", e.message()), "unreadable");
    let odb = repo.odb().map_err(unreadable)?;
    let object = odb.read(oid).map_err(unreadable)?;
    if object.kind() != git2::ObjectType::Commit {
        return Err(refusal("nobody".into(), "not a commit".into(), "not a commit"));
    }
    match strata_signatures::verify_commit(object.data(), policy) {
        Ok(verified) => Ok(Signed { commit: oid.to_string(), verified }),
        Err(e) => {
            let signer = match (&e, e.fingerprint()) {
                (VerifyError::Unsigned { .. }, _) => "nobody (no signature)".to_string(),
                (VerifyError::UnknownKey { method, fingerprint }, _) => format!("{method} key {fingerprint}"),
                (_, Some(fingerprint)) => format!("key {fingerprint}"),
                (VerifyError::MethodNotConfigured { method, .. }, None) => format!("an {method} key"),
                (_, None) => "an unreadable signature".to_string(),
            };
            let why = match &e {
                VerifyError::Unsigned { .. } => "unsigned",
                VerifyError::UnknownKey { .. } => "key not allowed",
                VerifyError::BadSignature { .. } => "signature does not match the commit",
                VerifyError::ExpiredKey { .. } | VerifyError::KeyNotYetValid { .. } => "key not valid then",
                VerifyError::RevokedKey { .. } => "key revoked",
                VerifyError::MethodNotConfigured { .. } => "no keys of this kind allowed",
                VerifyError::WeakHash { .. } => "weak hash",
                _ => "signature refused",
            };
            Err(refusal(signer, e.to_string(), why))
        }
    }
}

/// Verifies `head` (and with mode `all`, every commit reachable from it and not from `since`,
/// the last verified revision) in the repository at `git_dir`. Returns what verified, head first.
pub fn verify(
    git_dir: &Path,
    head: &str,
    since: Option<&str>,
    mode: VerifyMode,
    policy: &Policy,
) -> Result<Vec<Signed>, Failure> {
    let git = Failure::Git;
    let repo = git2::Repository::open(git_dir).map_err(git)?;
    let head_oid = repo.revparse_single(head).and_then(|o| o.peel_to_commit()).map_err(git)?.id();
    let mut commits = vec![head_oid];
    if mode == VerifyMode::All
        && let Some(since) = since
        && let Ok(since_oid) = repo.revparse_single(since).and_then(|o| o.peel_to_commit()).map(|c| c.id())
    {
        let mut walk = repo.revwalk().map_err(git)?;
        walk.push(head_oid).map_err(git)?;
        walk.hide(since_oid).map_err(git)?;
        commits.clear();
        for oid in walk {
            commits.push(oid.map_err(git)?);
            if commits.len() > MAX_COMMITS {
                return Err(Failure::TooMany { since: since.to_string(), head: head_oid.to_string() });
            }
        }
    }
    let mut signed = Vec::with_capacity(commits.len());
    for oid in commits {
        signed.push(check_one(&repo, oid, policy).map_err(Failure::Refused)?);
    }
    Ok(signed)
}

/// The policy of `verify`, and then [`verify`]: one call for the daemon and the CLI.
pub fn check(verify_config: &Verify, git_dir: &Path, head: &str, since: Option<&str>) -> Result<Vec<Signed>, Failure> {
    let policy = policy(verify_config)?;
    verify(git_dir, head, since, verify_config.mode, &policy)
}
