//! Where the daemon's revisions come from: a local repository (watched), or a remote fetched into a
//! bare mirror under the state directory.
//!
//! Remote fetches authenticate with a token (HTTPS, through [`super::smart_http`] on strata's one
//! client: proxy, `repository.ca_file`, client certificate) or a key (SSH); SSH host keys must match the configured known_hosts (plain or hashed
//! entries).
//! A force-push is accepted as a new revision and logged. A failed fetch leaves the mirror as it
//! was, so the last good revision keeps serving.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use base64::Engine as _;
use git2::{CertificateCheckStatus, Cred, CredentialType, FetchOptions, RemoteCallbacks, Repository};
use hmac::{Hmac, KeyInit, Mac};
use tracing::warn;

use crate::config::{Credentials, RepoLocation, Repository as RepoConfig, read_secret};
use crate::source::{GitSource, SourceError};

/// A whole fetch is given up after this long, even while data still trickles in (each read on
/// its own is bounded by the server timeout): the last good revision keeps serving meanwhile.
pub const FETCH_TIMEOUT: Duration = Duration::from_secs(300);

/// Why the repository could not be read, fetched or pushed to.
#[derive(Debug, thiserror::Error)]
pub enum GitError {
    #[error("{}: not a Git repository: {}", path.display(), source.message())]
    NotARepository {
        path: PathBuf,
        #[source]
        source: git2::Error,
    },
    #[error("cannot create the mirror {}: {}", path.display(), source.message())]
    Mirror {
        path: PathBuf,
        #[source]
        source: git2::Error,
    },
    #[error("{0}")]
    Source(#[from] SourceError),
    #[error("branch `{branch}` not found: {}", source.message())]
    NoBranch {
        branch: String,
        #[source]
        source: git2::Error,
    },
    #[error("remote {url}: {}", source.message())]
    Remote {
        url: String,
        #[source]
        source: git2::Error,
    },
    #[error("fetching from {url}: {}", source.message())]
    Fetch {
        url: String,
        #[source]
        source: git2::Error,
    },
    #[error("fetching from {url}: no complete fetch within {}s; trying again later", FETCH_TIMEOUT.as_secs())]
    FetchTimedOut { url: String },
    #[error("pushing {refname} to {url}: {}", source.message())]
    Push {
        refname: String,
        url: String,
        #[source]
        source: git2::Error,
    },
}

/// Connect and read timeouts for fetches, set once for the process (libgit2 options are global).
pub fn set_timeouts() {
    // SAFETY: libgit2 global options, set before any fetch starts.
    unsafe {
        let _ = git2::opts::set_server_connect_timeout_in_milliseconds(10_000);
        let _ = git2::opts::set_server_timeout_in_milliseconds(60_000);
    }
}

pub struct RepoSource {
    config: RepoConfig,
    /// `refs/pull` (GitHub, Gitea) or `refs/merge-requests` (GitLab): pull-request heads to fetch too.
    pull_refs: Option<&'static str>,
    /// The repository revisions are read from: the local one, or the mirror.
    git_dir: PathBuf,
    last: Option<git2::Oid>,
    /// Fetched commits already checked for tree entries git's fsck refuses.
    checked: std::collections::HashSet<git2::Oid>,
    /// What SOPS files are decrypted with: read again before every evaluation.
    keys: std::sync::Arc<crate::source::sops::Keys>,
}

/// The repository revisions are read from: the local one, or the mirror of a remote under the
/// state directory.
pub fn repository_dir(config: &RepoConfig, state_dir: &Path) -> PathBuf {
    match &config.location {
        RepoLocation::Local(path) => path.clone(),
        RepoLocation::Remote(_) => state_dir.join("mirror.git"),
    }
}

impl RepoSource {
    pub fn new(config: &RepoConfig, state_dir: &Path, pull_refs: Option<&'static str>) -> Result<RepoSource, GitError> {
        let git_dir = repository_dir(config, state_dir);
        match &config.location {
            RepoLocation::Local(path) => {
                Repository::open(path).map_err(|source| GitError::NotARepository { path: path.clone(), source })?;
            }
            RepoLocation::Remote(_) => {
                // http(s) remotes go through the transport registered by super::network.
                if Repository::open_bare(&git_dir).is_err() {
                    Repository::init_bare(&git_dir)
                        .map_err(|source| GitError::Mirror { path: git_dir.clone(), source })?;
                }
            }
        }
        Ok(RepoSource {
            config: config.clone(),
            pull_refs,
            git_dir,
            last: None,
            checked: Default::default(),
            keys: Default::default(),
        })
    }

    pub fn is_remote(&self) -> bool {
        matches!(self.config.location, RepoLocation::Remote(_))
    }

    /// Where revisions are snapshotted from, their SOPS files decrypted with the last keys set.
    pub fn git_source(&self) -> Result<GitSource, GitError> {
        let git =
            GitSource::open(&self.git_dir, self.config.path.as_deref())?.ok_or_else(|| GitError::NotARepository {
                path: self.git_dir.clone(),
                source: git2::Error::from_str("no Git directory here"),
            })?;
        Ok(git.with_keys(self.keys.clone()))
    }

    /// The keys snapshots decrypt SOPS files with from now on.
    pub fn set_keys(&mut self, keys: std::sync::Arc<crate::source::sops::Keys>) {
        self.keys = keys;
    }

    /// Pull-request heads as of the last fetch: (number, commit).
    pub fn pull_heads(&self) -> Vec<(u64, String)> {
        let (Some(ns), Ok(repo)) = (self.pull_refs, Repository::open(&self.git_dir)) else { return Vec::new() };
        let Ok(refs) = repo.references_glob(&format!("{ns}/*/head")) else { return Vec::new() };
        let mut heads: Vec<(u64, String)> = refs
            .flatten()
            .filter_map(|r| {
                let number = r.name().ok()?.strip_prefix(ns)?.strip_prefix('/')?.strip_suffix("/head")?.parse().ok()?;
                Some((number, r.target()?.to_string()))
            })
            .collect();
        heads.sort();
        heads
    }

    /// The repository revisions are read from (and notes written to).
    pub fn git_dir(&self) -> &Path {
        &self.git_dir
    }

    /// The remote URL and credentials, for a fetched repository.
    pub fn remote(&self) -> Option<(&str, &Credentials)> {
        match &self.config.location {
            RepoLocation::Remote(url) => Some((url, &self.config.credentials)),
            RepoLocation::Local(_) => None,
        }
    }

    /// Paths whose changes mean a new commit may be there (local repositories): the refs and
    /// the packed refs of the repository's Git directory.
    pub fn watch_paths(&self) -> Vec<PathBuf> {
        let Ok(repo) = Repository::open(&self.git_dir) else { return Vec::new() };
        let git_dir = repo.path().to_path_buf();
        vec![git_dir.join("refs").join("heads"), git_dir]
    }

    /// Fetches (for a remote) and returns the branch's commit. Blocking: run off the async runtime.
    pub fn poll(&mut self) -> Result<String, GitError> {
        let repo = Repository::open(&self.git_dir)
            .map_err(|source| GitError::NotARepository { path: self.git_dir.clone(), source })?;
        let branch = format!("refs/heads/{}", self.config.branch);
        if let RepoLocation::Remote(url) = &self.config.location {
            let mut refspecs = vec![format!("+{branch}:{branch}")];
            if let Some(ns) = self.pull_refs {
                refspecs.push(format!("+{ns}/*/head:{ns}/*/head"));
            }
            fetch(&repo, url, &refspecs, &self.config.credentials)?;
            self.check_fetched(&repo, &branch);
        }
        let oid = repo
            .refname_to_id(&branch)
            .map_err(|source| GitError::NoBranch { branch: self.config.branch.clone(), source })?;
        if let Some(last) = self.last
            && last != oid
            && !repo.graph_descendant_of(oid, last).unwrap_or(false)
        {
            warn!(from = %last, to = %oid, branch = %self.config.branch, "History was rewritten (force-push); following the new revision.");
        }
        self.last = Some(oid);
        Ok(oid.to_string())
    }
}

impl RepoSource {
    /// Names each fetched head (the branch and pull-request heads) whose tree holds entries git's
    /// fsck refuses. Such a commit is refused again whenever it is read (evaluated, planned), with
    /// a commit status; this says so as soon as it arrives.
    fn check_fetched(&mut self, repo: &Repository, branch: &str) {
        let Ok(source) = self.git_source() else { return };
        let mut heads: Vec<(String, git2::Oid)> = Vec::new();
        if let Ok(oid) = repo.refname_to_id(branch) {
            heads.push((branch.to_string(), oid));
        }
        for (number, commit) in self.pull_heads() {
            if let Ok(oid) = git2::Oid::from_str(&commit) {
                heads.push((format!("pull request {number}"), oid));
            }
        }
        for (name, oid) in heads {
            if !self.checked.insert(oid) {
                continue;
            }
            if let Err(e @ SourceError::BadEntry { .. }) = source.snapshot(&oid.to_string()) {
                warn!(reference = %name, commit = %oid, error = %e, "Fetched a commit whose tree git fsck refuses; it is never read.");
            }
        }
        if self.checked.len() > 10_000 {
            self.checked.clear();
        }
    }
}

/// Callbacks for talking to a remote: the configured token or key (one try, so bad credentials
/// fail fast) and SSH host keys checked against known_hosts.
fn callbacks(credentials: &Credentials) -> RemoteCallbacks<'_> {
    let mut callbacks = RemoteCallbacks::new();
    let mut attempts = 0;
    callbacks.credentials(move |_url, username_from_url, allowed| {
        attempts += 1;
        if attempts > 1 {
            return Err(git2::Error::from_str("the remote refused the configured credentials"));
        }
        if allowed.contains(CredentialType::USER_PASS_PLAINTEXT)
            && let Some(file) = &credentials.token_file
        {
            let token = read_secret(file).map_err(|e| git2::Error::from_str(&e.to_string()))?;
            let user = credentials.username.as_deref().unwrap_or("x-access-token");
            return Cred::userpass_plaintext(user, &token);
        }
        if allowed.contains(CredentialType::SSH_KEY)
            && let Some(key) = &credentials.ssh_key_file
        {
            let user = credentials.username.as_deref().or(username_from_url).unwrap_or("git");
            return Cred::ssh_key(user, None, key, None);
        }
        Err(git2::Error::from_str("the remote asks for credentials and none are configured (repository.credentials)"))
    });
    let known_hosts = credentials.known_hosts.clone();
    callbacks.certificate_check(move |cert, host| {
        let Some(hostkey) = cert.as_hostkey() else {
            // Not SSH: nothing for strata to check here.
            return Ok(CertificateCheckStatus::CertificatePassthrough);
        };
        let Some(key) = hostkey.hostkey() else {
            return Err(git2::Error::from_str("the SSH server sent no host key"));
        };
        let Some(file) = &known_hosts else {
            return Err(git2::Error::from_str(
                "SSH host keys are checked against repository.credentials.known_hosts, which is not configured",
            ));
        };
        let text = std::fs::read_to_string(file)
            .map_err(|e| git2::Error::from_str(&format!("cannot read known_hosts {}: {e}", file.display())))?;
        if known_host(&text, host, key) {
            Ok(CertificateCheckStatus::CertificateOk)
        } else {
            Err(git2::Error::from_str(&format!(
                "host key of {host} is not in {} (refusing to connect)",
                file.display()
            )))
        }
    });
    callbacks
}

/// Fetches `refspecs`; each starts with `+`, so a force-pushed ref is taken as it is now.
fn fetch(repo: &Repository, url: &str, refspecs: &[String], credentials: &Credentials) -> Result<(), GitError> {
    // URLs may carry credentials (`https://user:token@…`): errors show them without.
    let shown = crate::net::error::redact_url(url);
    let mut remote = repo.remote_anonymous(url).map_err(|source| GitError::Remote { url: shown.clone(), source })?;
    let deadline = Instant::now() + FETCH_TIMEOUT;
    let mut callbacks = callbacks(credentials);
    // Returning false cancels the transfer: a remote trickling bytes cannot hold the fetch forever.
    callbacks.transfer_progress(move |_| Instant::now() < deadline);
    let mut options = FetchOptions::new();
    options.remote_callbacks(callbacks).download_tags(git2::AutotagOption::None);
    remote.fetch(refspecs, Some(&mut options), None).map_err(|source| {
        if Instant::now() >= deadline {
            GitError::FetchTimedOut { url: shown.clone() }
        } else {
            GitError::Fetch { url: shown.clone(), source }
        }
    })
}

/// Pushes a ref (the status notes) from the repository at `path` to the remote.
pub fn push(path: &Path, url: &str, refname: &str, credentials: &Credentials) -> Result<(), GitError> {
    let repo =
        Repository::open(path).map_err(|source| GitError::NotARepository { path: path.to_path_buf(), source })?;
    // URLs may carry credentials (`https://user:token@…`): errors show them without.
    let shown = crate::net::error::redact_url(url);
    let mut remote = repo.remote_anonymous(url).map_err(|source| GitError::Remote { url: shown.clone(), source })?;
    let mut options = git2::PushOptions::new();
    options.remote_callbacks(callbacks(credentials));
    remote.push(&[format!("+{refname}:{refname}")], Some(&mut options)).map_err(|source| GitError::Push {
        refname: refname.to_string(),
        url: shown.clone(),
        source,
    })
}

/// Whether `known_hosts` text lists `key` for `host` (plain names, `[host]:port`, or hashed
/// `|1|salt|hash` entries as OpenSSH writes them with HashKnownHosts).
pub fn known_host(known_hosts: &str, host: &str, key: &[u8]) -> bool {
    let b64 = base64::engine::general_purpose::STANDARD;
    known_hosts.lines().map(str::trim).filter(|l| !l.is_empty() && !l.starts_with('#')).any(|line| {
        let mut fields = line.split_whitespace();
        let (Some(hosts), Some(_kind), Some(encoded)) = (fields.next(), fields.next(), fields.next()) else {
            return false;
        };
        let host_matches = hosts.split(',').any(|pattern| {
            if let Some(hashed) = pattern.strip_prefix("|1|") {
                let Some((salt, hash)) = hashed.split_once('|') else { return false };
                let (Ok(salt), Ok(hash)) = (b64.decode(salt), b64.decode(hash)) else { return false };
                let Ok(mut mac) = Hmac::<sha1::Sha1>::new_from_slice(&salt) else { return false };
                mac.update(host.as_bytes());
                mac.verify_slice(&hash).is_ok()
            } else {
                pattern == host
                    || pattern.strip_prefix('[').and_then(|p| p.split_once("]:")).is_some_and(|(h, _)| h == host)
            }
        });
        host_matches && b64.decode(encoded).is_ok_and(|k| k == key)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_hosts_plain_and_hashed() {
        let b64 = base64::engine::general_purpose::STANDARD;
        let key = b"\x00\x00\x00\x0bssh-ed25519fake-key-bytes";
        let encoded = b64.encode(key);
        let plain = format!("git.example.com,10.0.0.1 ssh-ed25519 {encoded}\n");
        assert!(known_host(&plain, "git.example.com", key));
        assert!(!known_host(&plain, "evil.example.com", key));
        assert!(!known_host(&plain, "git.example.com", b"another key"));

        let salt = b"0123456789abcdefghij";
        let mut mac = Hmac::<sha1::Sha1>::new_from_slice(salt).unwrap();
        mac.update(b"git.example.com");
        let hash = mac.finalize().into_bytes();
        let hashed = format!("|1|{}|{} ssh-ed25519 {encoded}\n", b64.encode(salt), b64.encode(hash));
        assert!(known_host(&hashed, "git.example.com", key));
        assert!(!known_host(&hashed, "other.example.com", key));
        assert!(known_host(&format!("[git.example.com]:2222 ssh-ed25519 {encoded}"), "git.example.com", key));
    }
}
