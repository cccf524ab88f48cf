//! The host configuration (`strata.yaml`): what operators write on the machine strata runs on.
//!
//! It maps the target names cluster files use to real clusters (kubeconfig + context, the
//! in-cluster service account, or a directory), so the repository never chooses credentials, and
//! says where the daemon finds the repository, keeps its state and listens. Keys are snake_case as
//! in DESIGN §3. Raw (as written, with lines) → validated ([`Config`]); relative paths are
//! relative to the file.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use serde_saphyr::Spanned;

use crate::apply::Options;
use crate::diag::{Code, Diagnostic, Diagnostics};
use crate::yaml;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    #[serde(default)]
    repository: Option<Spanned<RawRepository>>,
    #[serde(default)]
    targets: BTreeMap<String, Spanned<RawTarget>>,
    #[serde(default)]
    apply: RawApply,
    #[serde(default)]
    state_dir: Option<String>,
    #[serde(default)]
    listen: Option<Spanned<String>>,
    #[serde(default)]
    api: RawApi,
    #[serde(default)]
    webhooks: RawWebhooks,
    #[serde(default)]
    drift: RawDrift,
    #[serde(default)]
    prune_removed_clusters: bool,
    #[serde(default)]
    shutdown_timeout: Option<Spanned<String>>,
    #[serde(default)]
    status: Option<Spanned<RawStatus>>,
    #[serde(default)]
    view: RawView,
    #[serde(default)]
    proxy: Option<Spanned<RawProxy>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawProxy {
    url: String,
    #[serde(default)]
    no_proxy: Option<RawList>,
    username: Option<String>,
    password_file: Option<String>,
}

/// A list written as YAML (`[a, b]`) or as NO_PROXY is (`"a,b"`).
#[derive(Deserialize)]
#[serde(untagged)]
enum RawList {
    List(Vec<String>),
    Text(String),
}

impl RawList {
    fn items(self) -> Vec<String> {
        let all = match self {
            RawList::List(items) => items,
            RawList::Text(text) => text.split(',').map(str::to_string).collect(),
        };
        all.into_iter().map(|i| i.trim().to_string()).filter(|i| !i.is_empty()).collect()
    }
}

/// TLS keys, the same in `repository` and `status`.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawTls {
    ca_file: Option<String>,
    system_roots: Option<bool>,
    client_cert_file: Option<String>,
    client_key_file: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawView {
    #[serde(default = "yes")]
    enabled: bool,
    #[serde(default)]
    require_token: bool,
}

fn yes() -> bool {
    true
}

impl Default for RawView {
    fn default() -> Self {
        RawView { enabled: true, require_token: false }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawStatus {
    provider: String,
    api: Option<String>,
    repo: Option<String>,
    token_file: Option<String>,
    target_url: Option<String>,
    min_interval: Option<Spanned<String>>,
    #[serde(default)]
    pull_requests: bool,
    ca_file: Option<String>,
    system_roots: Option<bool>,
    client_cert_file: Option<String>,
    client_key_file: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRepository {
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
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawCredentials {
    username: Option<String>,
    token_file: Option<String>,
    ssh_key_file: Option<String>,
    known_hosts: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTarget {
    kubeconfig: Option<String>,
    context: Option<String>,
    #[serde(default)]
    in_cluster: bool,
    directory: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawApply {
    concurrency: Option<usize>,
    clusters: Option<usize>,
    health_timeout: Option<Spanned<String>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawApi {
    token_file: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawWebhooks {
    github_secret_file: Option<String>,
    gitea_secret_file: Option<String>,
    gitlab_token_file: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawDrift {
    interval: Option<Spanned<String>>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TargetConfig {
    Kubeconfig { path: PathBuf, context: Option<String> },
    InCluster,
    Directory(PathBuf),
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

/// The proxy every outbound connection goes through (`proxy:`); without it, the environment's
/// HTTPS_PROXY / HTTP_PROXY / NO_PROXY decide.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Proxy {
    /// `http://HOST:PORT`.
    pub url: String,
    /// Hosts reached directly, as NO_PROXY writes them: names (with their subdomains), addresses, CIDR ranges.
    pub no_proxy: Vec<String>,
    pub username: Option<String>,
    pub password_file: Option<PathBuf>,
}

/// Trust and identity for the TLS connections to one endpoint.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Tls {
    /// A PEM bundle of CA certificates to trust.
    pub ca_file: Option<PathBuf>,
    /// Trust the system's roots too (the default); `false` trusts `ca_file` alone.
    pub system_roots: bool,
    pub client_cert_file: Option<PathBuf>,
    pub client_key_file: Option<PathBuf>,
}

impl Default for Tls {
    fn default() -> Self {
        Tls { ca_file: None, system_roots: true, client_cert_file: None, client_key_file: None }
    }
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
}

#[derive(Clone, Debug, Default)]
pub struct Webhooks {
    pub github_secret_file: Option<PathBuf>,
    pub gitea_secret_file: Option<PathBuf>,
    pub gitlab_token_file: Option<PathBuf>,
}

/// Where commit statuses go.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StatusSink {
    Forge {
        forge: crate::report::Forge,
        token_file: PathBuf,
    },
    /// Git notes under refs/notes/strata in the watched repository.
    Notes,
}

#[derive(Clone, Debug)]
pub struct StatusConfig {
    pub sink: StatusSink,
    /// Link from each status, `{cluster}` and `{revision}` filled in (the status view).
    pub target_url: Option<String>,
    /// The least time between two writes to the forge (GitHub asks for a second between
    /// content-creating requests).
    pub min_interval: Duration,
    /// Also fetch pull-request heads and post a plan for every new one.
    pub pull_requests: bool,
    /// TLS for the forge's API.
    pub tls: Tls,
}

impl StatusConfig {
    pub fn target_url(&self, cluster: &str, revision: &str) -> Option<String> {
        self.target_url.as_ref().map(|t| t.replace("{cluster}", cluster).replace("{revision}", revision))
    }
}

/// The status view in the browser.
#[derive(Clone, Debug)]
pub struct ViewConfig {
    pub enabled: bool,
    /// Pages need a signed-in session (or the API token) for reading too.
    pub require_token: bool,
}

#[derive(Clone, Debug)]
pub struct Config {
    pub file: PathBuf,
    pub repository: Option<Repository>,
    pub targets: BTreeMap<String, TargetConfig>,
    pub apply: Options,
    /// Clusters reconciled at once.
    pub cluster_concurrency: usize,
    pub state_dir: PathBuf,
    pub listen: SocketAddr,
    /// The token the local API (approve, suspend) requires.
    pub api_token_file: Option<PathBuf>,
    pub webhooks: Webhooks,
    pub drift_interval: Duration,
    /// Delete the objects of a cluster whose file was removed from the repository.
    pub prune_removed_clusters: bool,
    /// How long in-flight applies may run on SIGTERM.
    pub shutdown_timeout: Duration,
    pub status: Option<StatusConfig>,
    pub view: ViewConfig,
    pub proxy: Option<Proxy>,
}

pub const DEFAULT_LISTEN: &str = "127.0.0.1:9477";

/// A duration setting, or its default with a diagnostic when it does not parse.
fn duration(
    diags: &mut Diagnostics,
    file: &str,
    value: &Option<Spanned<String>>,
    what: &str,
    default: Duration,
) -> Duration {
    match value {
        None => default,
        Some(v) => parse_duration(&v.value).unwrap_or_else(|| {
            diags.push(
                Diagnostic::new(Code::Schema, format!("{what} `{}` is not a duration", v.value))
                    .in_file(file)
                    .at_line(v.referenced.line() as usize)
                    .help("write durations like 90s, 5m or 1h"),
            );
            default
        }),
    }
}

/// `300ms`, `30s`, `5m`, `1h`.
pub fn parse_duration(text: &str) -> Option<Duration> {
    let text = text.trim();
    let split = text.find(|c: char| !c.is_ascii_digit())?;
    let (n, unit) = text.split_at(split);
    let n: u64 = n.parse().ok()?;
    Some(match unit {
        "ms" => Duration::from_millis(n),
        "s" => Duration::from_secs(n),
        "m" => Duration::from_secs(n * 60),
        "h" => Duration::from_secs(n * 3600),
        _ => return None,
    })
}

/// The TLS keys of `section`, checked: a certificate needs its key, and trusting `ca_file` alone
/// needs a `ca_file`.
fn tls(
    diags: &mut Diagnostics,
    file: &str,
    line: usize,
    section: &str,
    raw: RawTls,
    resolve: &impl Fn(&str) -> PathBuf,
) -> Tls {
    let tls = Tls {
        ca_file: raw.ca_file.as_deref().map(resolve),
        system_roots: raw.system_roots.unwrap_or(true),
        client_cert_file: raw.client_cert_file.as_deref().map(resolve),
        client_key_file: raw.client_key_file.as_deref().map(resolve),
    };
    if tls.client_cert_file.is_some() != tls.client_key_file.is_some() {
        diags.push(
            Diagnostic::new(Code::Schema, format!("{section}: client_cert_file and client_key_file go together"))
                .in_file(file)
                .at_line(line)
                .help("give both PEM files: the client certificate (with its chain) and its private key"),
        );
    }
    if !tls.system_roots && tls.ca_file.is_none() {
        diags.push(
            Diagnostic::new(Code::Schema, format!("{section}: system_roots: false trusts nothing without a ca_file"))
                .in_file(file)
                .at_line(line)
                .help("set ca_file to the PEM bundle of the CAs to trust, or drop system_roots: false"),
        );
    }
    tls
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

impl Config {
    pub fn load(path: &Path) -> Result<Config, Diagnostics> {
        let shown = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|e| {
            Diagnostics::from(
                Diagnostic::new(Code::Layout, format!("cannot read the host config: {e}"))
                    .in_file(&shown)
                    .help("pass --config with the path of strata.yaml"),
            )
        })?;
        let raw: RawConfig = yaml::parse(&text)
            .map_err(|e| Diagnostics::from(Diagnostic::new(Code::Schema, e.message).in_file(&shown).at_line(e.line)))?;
        let base = path.parent().unwrap_or(Path::new("."));
        let resolve = |p: &str| if Path::new(p).is_absolute() { PathBuf::from(p) } else { base.join(p) };
        let mut diags = Diagnostics::new();
        let mut apply = Options::default();
        if let Some(n) = raw.apply.concurrency {
            apply.concurrency = n.max(1);
        }
        apply.health_timeout =
            duration(&mut diags, &shown, &raw.apply.health_timeout, "health_timeout", apply.health_timeout);
        let drift_interval =
            duration(&mut diags, &shown, &raw.drift.interval, "drift.interval", Duration::from_secs(300));
        let shutdown_timeout =
            duration(&mut diags, &shown, &raw.shutdown_timeout, "shutdown_timeout", Duration::from_secs(30));
        let repository = raw.repository.map(|r| {
            let line = r.referenced.line() as usize;
            let interval =
                duration(&mut diags, &shown, &r.value.interval, "repository.interval", Duration::from_secs(60));
            let raw_tls = RawTls {
                ca_file: r.value.ca_file,
                system_roots: r.value.system_roots,
                client_cert_file: r.value.client_cert_file,
                client_key_file: r.value.client_key_file,
            };
            let tls = tls(&mut diags, &shown, line, "repository", raw_tls, &resolve);
            let c = r.value.credentials;
            Repository {
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
            }
        });

        let mut targets = BTreeMap::new();
        for (name, target) in raw.targets {
            let line = target.referenced.line() as usize;
            let t = target.value;
            let chosen = match (&t.kubeconfig, t.in_cluster, &t.directory) {
                (Some(kubeconfig), false, None) => {
                    Some(TargetConfig::Kubeconfig { path: resolve(kubeconfig), context: t.context.clone() })
                }
                (None, true, None) if t.context.is_none() => Some(TargetConfig::InCluster),
                (None, false, Some(dir)) if t.context.is_none() => Some(TargetConfig::Directory(resolve(dir))),
                _ => None,
            };
            match chosen {
                Some(c) => {
                    targets.insert(name, c);
                }
                None => diags.push(
                    Diagnostic::new(Code::Schema, format!("target `{name}` must be exactly one kind of target"))
                        .in_file(&shown)
                        .at_line(line)
                        .help("use {kubeconfig: PATH, context: NAME}, {in_cluster: true} or {directory: PATH}"),
                ),
            }
        }
        let status = raw.status.and_then(|st| {
            let line = st.referenced.line() as usize;
            let r = st.value;
            let min_interval = duration(&mut diags, &shown, &r.min_interval, "status.min_interval", Duration::from_secs(1));
            let raw_tls = RawTls {
                ca_file: r.ca_file,
                system_roots: r.system_roots,
                client_cert_file: r.client_cert_file,
                client_key_file: r.client_key_file,
            };
            let tls = tls(&mut diags, &shown, line, "status", raw_tls, &resolve);
            let sink = if r.provider == "git-notes" {
                Some(StatusSink::Notes)
            } else {
                match (crate::report::Provider::parse(&r.provider), r.repo, r.token_file) {
                    (Some(provider), Some(repo), Some(token_file)) => Some(StatusSink::Forge {
                        forge: crate::report::Forge {
                            provider,
                            api: r.api.unwrap_or_else(|| provider.default_api().to_string()).trim_end_matches('/').to_string(),
                            repo,
                        },
                        token_file: resolve(&token_file),
                    }),
                    (None, _, _) => {
                        diags.push(
                            Diagnostic::new(Code::Schema, format!("status.provider `{}` is not supported", r.provider))
                                .in_file(&shown)
                                .at_line(line)
                                .help("use github, gitea, forgejo, gitlab, bitbucket or git-notes"),
                        );
                        None
                    }
                    _ => {
                        diags.push(
                            Diagnostic::new(Code::Schema, "status needs `repo` and `token_file` for a forge")
                                .in_file(&shown)
                                .at_line(line)
                                .help("e.g. status: { provider: github, repo: platform/fleet, token_file: /run/credentials/strata.service/github-token }"),
                        );
                        None
                    }
                }
            };
            sink.map(|sink| StatusConfig { sink, target_url: r.target_url, min_interval, pull_requests: r.pull_requests, tls })
        });
        let listen = match &raw.listen {
            None => DEFAULT_LISTEN.parse().expect("valid default"),
            Some(l) => l.value.parse().unwrap_or_else(|_| {
                diags.push(
                    Diagnostic::new(Code::Schema, format!("listen `{}` is not an address", l.value))
                        .in_file(&shown)
                        .at_line(l.referenced.line() as usize)
                        .help("write HOST:PORT, e.g. 127.0.0.1:9477"),
                );
                DEFAULT_LISTEN.parse().expect("valid default")
            }),
        };
        let proxy = raw.proxy.map(|p| {
            let line = p.referenced.line() as usize;
            let p = p.value;
            if p.username.is_some() != p.password_file.is_some() {
                diags.push(
                    Diagnostic::new(Code::Schema, "proxy: username and password_file go together")
                        .in_file(&shown)
                        .at_line(line)
                        .help(
                            "the proxy's basic-auth password is read from password_file, never written in strata.yaml",
                        ),
                );
            }
            if let Err(e) = crate::net::proxy::Router::from_config(&Proxy { url: p.url.clone(), ..Proxy::default() }) {
                diags.push(
                    Diagnostic::new(Code::Schema, e.to_string()).in_file(&shown).at_line(line).help(
                        "e.g. proxy: { url: http://proxy.example.com:3128, no_proxy: [.example.com, 10.0.0.0/8] }",
                    ),
                );
            }
            Proxy {
                url: p.url,
                no_proxy: p.no_proxy.map(RawList::items).unwrap_or_default(),
                username: p.username,
                password_file: p.password_file.as_deref().map(resolve),
            }
        });
        diags.into_result(Config {
            file: path.to_path_buf(),
            repository,
            targets,
            apply,
            cluster_concurrency: raw.apply.clusters.unwrap_or(4).max(1),
            state_dir: raw.state_dir.as_deref().map(resolve).unwrap_or_else(|| base.join("state")),
            listen,
            api_token_file: raw.api.token_file.as_deref().map(resolve),
            webhooks: Webhooks {
                github_secret_file: raw.webhooks.github_secret_file.as_deref().map(resolve),
                gitea_secret_file: raw.webhooks.gitea_secret_file.as_deref().map(resolve),
                gitlab_token_file: raw.webhooks.gitlab_token_file.as_deref().map(resolve),
            },
            drift_interval,
            prune_removed_clusters: raw.prune_removed_clusters,
            shutdown_timeout,
            status,
            view: ViewConfig { enabled: raw.view.enabled, require_token: raw.view.require_token },
            proxy,
        })
    }

    /// The target a cluster names, or a diagnostic saying how to configure it.
    pub fn target(&self, cluster: &str, target: &str) -> Result<&TargetConfig, Diagnostic> {
        self.targets.get(target).ok_or_else(|| {
            let known: Vec<_> = self.targets.keys().map(String::as_str).collect();
            Diagnostic::new(Code::Unresolved, format!("target `{target}` is not configured on this host"))
                .in_file(self.file.display().to_string())
                .about(format!("cluster {cluster}"))
                .help(format!(
                    "add `targets: {{ {target}: {{ kubeconfig: PATH, context: NAME }} }}` (configured: {})",
                    if known.is_empty() { "none".to_string() } else { known.join(", ") }
                ))
        })
    }
}

/// Reads a secret from a file (a systemd credential), without its trailing newline. The error
/// names the file, never the content.
pub fn read_secret(path: &Path) -> Result<String, String> {
    std::fs::read_to_string(path)
        .map(|s| s.trim_end_matches(['\n', '\r']).to_string())
        .map_err(|e| format!("cannot read secret file {}: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(text: &str) -> Result<Config, Diagnostics> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("strata.yaml");
        std::fs::write(&path, text).unwrap();
        Config::load(&path)
    }

    #[test]
    fn targets_of_each_kind_with_paths_relative_to_the_file() {
        let config = load(
            "targets:\n  aws: {kubeconfig: kube/aws.yaml, context: aws}\n  lab: {directory: /srv/lab}\n  here: {in_cluster: true}\napply: {health_timeout: 90s, concurrency: 4}\n",
        )
        .unwrap();
        match &config.targets["aws"] {
            TargetConfig::Kubeconfig { path, context } => {
                assert!(path.ends_with("kube/aws.yaml") && path.is_absolute());
                assert_eq!(context.as_deref(), Some("aws"));
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(config.targets["lab"], TargetConfig::Directory("/srv/lab".into()));
        assert_eq!(config.targets["here"], TargetConfig::InCluster);
        assert_eq!(config.apply.health_timeout, Duration::from_secs(90));
        assert_eq!(config.apply.concurrency, 4);
        assert_eq!(config.listen.to_string(), DEFAULT_LISTEN);
    }

    #[test]
    fn the_daemon_sections() {
        let config = load(
            "repository: {url: https://git.example.com/platform/fleet.git, branch: prod, path: fleet, interval: 2m, credentials: {token_file: /run/credentials/strata/git-token}}\nstate_dir: /var/lib/strata\nlisten: 0.0.0.0:9000\ndrift: {interval: 10m}\nprune_removed_clusters: true\n",
        )
        .unwrap();
        let repo = config.repository.unwrap();
        assert_eq!(repo.location, RepoLocation::Remote("https://git.example.com/platform/fleet.git".into()));
        assert_eq!(repo.branch, "prod");
        assert_eq!(repo.path.as_deref(), Some("fleet"));
        assert_eq!(repo.interval, Duration::from_secs(120));
        assert_eq!(repo.credentials.token_file.as_deref(), Some(Path::new("/run/credentials/strata/git-token")));
        assert_eq!(config.state_dir, PathBuf::from("/var/lib/strata"));
        assert_eq!(config.drift_interval, Duration::from_secs(600));
        assert!(config.prune_removed_clusters);
        let local = load("repository: {url: ../fleet}\n").unwrap().repository.unwrap();
        assert!(matches!(local.location, RepoLocation::Local(p) if p.ends_with("fleet")));
        let scp = load("repository: {url: 'git@github.com:platform/fleet.git'}\n").unwrap().repository.unwrap();
        assert!(matches!(scp.location, RepoLocation::Remote(_)));
    }

    #[test]
    fn status_sinks() {
        let config = load("status: {provider: github, api: 'https://github.example.com/api/v3/', repo: p/f, token_file: t, target_url: 'http://s/{cluster}'}\n").unwrap();
        let status = config.status.unwrap();
        match &status.sink {
            StatusSink::Forge { forge, token_file } => {
                assert_eq!(forge.api, "https://github.example.com/api/v3");
                assert!(token_file.ends_with("t"));
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(status.target_url("aws", "r").as_deref(), Some("http://s/aws"));
        assert_eq!(load("status: {provider: git-notes}\n").unwrap().status.unwrap().sink, StatusSink::Notes);
        let e = load("status: {provider: gitlab}\n").unwrap_err().to_string();
        assert!(e.contains("status needs `repo` and `token_file`"), "{e}");
    }

    #[test]
    fn ambiguous_targets_and_bad_durations_are_reported_with_lines() {
        let e = load("targets:\n  x: {kubeconfig: a, directory: b}\napply:\n  health_timeout: soon\n").unwrap_err();
        let text = e.to_string();
        assert!(text.contains("strata.yaml:2: target `x` must be exactly one kind of target"), "{text}");
        assert!(text.contains("strata.yaml:4: health_timeout `soon` is not a duration"), "{text}");
    }

    #[test]
    fn the_shipped_examples_load() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        for file in ["systemd/strata.yaml", "docs/strata.yaml"] {
            Config::load(&root.join(file)).unwrap_or_else(|e| panic!("{file}: {e}"));
        }
    }

    #[test]
    fn proxy_and_tls_keys() {
        let config = load(
            "proxy: { url: 'http://proxy.corp:3128', no_proxy: '.corp.example, 10.0.0.0/8', username: strata, password_file: proxy-password }\nrepository: { url: 'https://git.corp.example/fleet.git', ca_file: corp-ca.pem, client_cert_file: c.pem, client_key_file: k.pem }\nstatus: { provider: gitea, api: 'https://git.corp.example', repo: p/f, token_file: t, ca_file: /etc/ca.pem, system_roots: false }\n",
        )
        .unwrap();
        let proxy = config.proxy.unwrap();
        assert_eq!(proxy.url, "http://proxy.corp:3128");
        assert_eq!(proxy.no_proxy, [".corp.example", "10.0.0.0/8"]);
        assert!(proxy.password_file.unwrap().ends_with("proxy-password"));
        let tls = config.repository.unwrap().tls;
        assert!(tls.ca_file.unwrap().is_absolute() && tls.system_roots);
        assert!(tls.client_key_file.unwrap().ends_with("k.pem"));
        let status = config.status.unwrap().tls;
        assert_eq!((status.ca_file.as_deref(), status.system_roots), (Some(Path::new("/etc/ca.pem")), false));
        let listed = load("proxy: { url: 'http://p:3128', no_proxy: [localhost, '::1'] }\n").unwrap();
        assert_eq!(listed.proxy.unwrap().no_proxy, ["localhost", "::1"]);

        let e = load("repository: { url: 'https://g/f.git', client_cert_file: c.pem }\nstatus: { provider: github, repo: p/f, token_file: t, system_roots: false }\nproxy: { url: 'socks5://p:1080', username: u }\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("strata.yaml:1: repository: client_cert_file and client_key_file go together"), "{e}");
        assert!(e.contains("strata.yaml:2: status: system_roots: false trusts nothing without a ca_file"), "{e}");
        assert!(e.contains("strata.yaml:3: proxy: username and password_file go together"), "{e}");
        assert!(e.contains("strata.yaml:3: proxy.url: `socks5://` proxies are not supported"), "{e}");
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("250ms"), Some(Duration::from_millis(250)));
        assert_eq!(parse_duration("5m"), Some(Duration::from_secs(300)));
        assert_eq!(parse_duration("5"), None);
        assert_eq!(parse_duration("m"), None);
    }
}
