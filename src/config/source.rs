//! Where the configuration comes from: `repository` (the fleet's Git repository, how to fetch it
//! and which signatures to trust) and `decryption` (the age identities SOPS files open with).

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;
use serde_saphyr::Spanned;

use super::reader::{RawTls, Reader};
use super::{Tls, Verify, VerifyMode};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawRepository {
    url: String,
    #[serde(default)]
    branch: Option<String>,
    #[serde(default)]
    path: Option<String>,
    #[serde(default)]
    interval: Option<Spanned<String>>,
    #[serde(default)]
    credentials: RawCredentials,
    ca_file: Option<String>,
    system_roots: Option<bool>,
    client_cert_file: Option<String>,
    client_key_file: Option<String>,
    #[serde(default)]
    verify: Option<Spanned<RawVerify>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawCredentials {
    username: Option<String>,
    token_file: Option<String>,
    ssh_key_file: Option<String>,
    known_hosts: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawVerify {
    mode: Option<Spanned<String>>,
    ssh_allowed_signers: Option<String>,
    gpg_keyring: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawDecryption {
    #[serde(default)]
    age_key_files: Vec<String>,
    /// Also accepted in the singular, as one file.
    age_key_file: Option<String>,
    /// Kubernetes mode: a Secret in strata's namespace whose `*.agekey` keys hold identities.
    secret: Option<Spanned<String>>,
}

/// Where the daemon reads the repository from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RepoLocation {
    /// A repository on this machine, watched for new commits.
    Local(PathBuf),
    /// A remote, fetched into a bare mirror under the state directory.
    Remote(String),
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Credentials {
    pub username: Option<String>,
    pub token_file: Option<PathBuf>,
    pub ssh_key_file: Option<PathBuf>,
    pub known_hosts: Option<PathBuf>,
}

#[derive(Clone, Debug)]
pub struct Repository {
    pub location: RepoLocation,
    pub branch: String,
    /// Sub-directory holding profiles/ and clusters/.
    pub path: Option<String>,
    /// How often a remote is fetched (local repositories are watched, and polled this often too).
    pub interval: Duration,
    pub credentials: Credentials,
    pub tls: Tls,
    /// Only commits signed by an allowed key are evaluated (`repository.verify`).
    pub verify: Option<Verify>,
}

/// Where the age identities for SOPS files come from (`decryption`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Decryption {
    /// age-keygen identity files, read at every evaluation (so keys rotate without a restart).
    pub age_key_files: Vec<PathBuf>,
    /// Kubernetes mode: a Secret in strata's namespace; every data key ending in `.agekey`
    /// holds identities (as Flux's `sops-age` Secret).
    pub secret: Option<String>,
}

/// `repository`: where the daemon reads the fleet from; `None` when the section is absent.
pub(super) fn repository(cx: &mut Reader, raw: Option<Spanned<RawRepository>>) -> Option<Repository> {
    let r = raw?;
    let resolve = cx.resolver();
    let line = r.referenced.line() as usize;
    let interval = cx.duration(&r.value.interval, "repository.interval", Duration::from_secs(60));
    let raw_tls = RawTls {
        ca_file: r.value.ca_file,
        system_roots: r.value.system_roots,
        client_cert_file: r.value.client_cert_file,
        client_key_file: r.value.client_key_file,
    };
    let tls = cx.tls(line, "repository", raw_tls);
    let verify = r.value.verify.map(|v| verify(cx, v));
    let c = r.value.credentials;
    Some(Repository {
        location: location(&r.value.url, resolve),
        branch: r.value.branch.unwrap_or_else(|| "main".to_string()),
        path: r.value.path.filter(|p| p != "." && !p.is_empty()),
        interval,
        credentials: Credentials {
            username: c.username,
            token_file: c.token_file.as_deref().map(resolve),
            ssh_key_file: c.ssh_key_file.as_deref().map(resolve),
            known_hosts: c.known_hosts.as_deref().map(resolve),
        },
        tls,
        verify,
    })
}

/// `repository.verify`: only commits signed by these keys are evaluated.
fn verify(cx: &mut Reader, v: Spanned<RawVerify>) -> Verify {
    let resolve = cx.resolver();
    let vline = v.referenced.line() as usize;
    let mode = match v.value.mode.as_ref().map(|m| m.value.as_str()) {
        None | Some("head") => VerifyMode::Head,
        Some("all") => VerifyMode::All,
        Some(other) => {
            cx.schema(
                v.value.mode.as_ref().map_or(vline, |m| m.referenced.line() as usize),
                format!("repository.verify.mode `{other}` is not a mode"),
                "use head (the evaluated commit is signed) or all (every commit since the last evaluated one is)",
            );
            VerifyMode::Head
        }
    };
    if v.value.ssh_allowed_signers.is_none() && v.value.gpg_keyring.is_none() {
        cx.schema(
            vline,
            "repository.verify names no key: no commit could be verified",
            "set ssh_allowed_signers: FILE (OpenSSH allowed signers) and/or gpg_keyring: FILE (gpg --export --armor)",
        );
    }
    Verify {
        mode,
        ssh_allowed_signers: v.value.ssh_allowed_signers.as_deref().map(resolve),
        gpg_keyring: v.value.gpg_keyring.as_deref().map(resolve),
    }
}

/// A URL with a scheme (or scp-like `user@host:path`) is a remote; anything else a local path.
fn location(url: &str, resolve: impl Fn(&str) -> PathBuf) -> RepoLocation {
    let scp_like = url.contains('@') && url.contains(':') && !url.contains("://");
    if url.contains("://") || scp_like {
        RepoLocation::Remote(url.to_string())
    } else {
        RepoLocation::Local(resolve(url))
    }
}

/// `decryption`: where the age identities come from; a Secret only in Kubernetes mode
/// (`kubernetes_mode`, from the `kubernetes` and `state` sections).
pub(super) fn decryption(cx: &mut Reader, raw: Option<Spanned<RawDecryption>>, kubernetes_mode: bool) -> Decryption {
    let Some(d) = raw else { return Decryption::default() };
    let resolve = cx.resolver();
    let line = d.referenced.line() as usize;
    let d = d.value;
    let files: Vec<PathBuf> = d.age_key_files.iter().chain(&d.age_key_file).map(|f| resolve(f)).collect();
    let secret = d.secret.map(|s| {
        if !kubernetes_mode {
            cx.schema(
                s.referenced.line() as usize,
                "decryption.secret needs Kubernetes mode (kubernetes:)",
                "on a single host, list the age identity files in decryption.age_key_files",
            );
        }
        s.value
    });
    if files.is_empty() && secret.is_none() {
        cx.schema(
            line,
            "decryption names no age key",
            "e.g. decryption: { age_key_files: [/etc/strata/age.key] } (age-keygen -o FILE makes one)",
        );
    }
    Decryption { age_key_files: files, secret }
}
