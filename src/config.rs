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
// Settings types live with the subsystems that use them; this module parses the file and hands
// them out. Re-exported so `config::X` keeps naming everything the file sets.
use crate::diag::{Code, Diagnostic, Diagnostics};
pub use crate::net::settings::{Proxy, Tls, read_secret};
pub use crate::report::{StatusConfig, StatusSink};
pub use crate::target::TargetConfig;
pub use crate::units::{parse_duration, parse_size};
pub use crate::verify::{Verify, VerifyMode};
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
    render: RawRender,
    #[serde(default)]
    state_dir: Option<String>,
    #[serde(default)]
    listen: Option<Spanned<String>>,
    #[serde(default)]
    api: RawApi,
    #[serde(default)]
    auth: RawAuth,
    #[serde(default)]
    metrics: RawMetrics,
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
    #[serde(default)]
    listener: RawListener,
    #[serde(default)]
    kubernetes: Option<Spanned<RawKubernetes>>,
    #[serde(default)]
    state: Option<Spanned<RawState>>,
    #[serde(default)]
    shards: Option<Spanned<u64>>,
    #[serde(default)]
    leases: Option<Spanned<RawLeases>>,
    #[serde(default)]
    audit: RawAudit,
    decryption: Option<Spanned<RawDecryption>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawAudit {
    #[serde(default)]
    retention: Option<Spanned<String>>,
    #[serde(default)]
    max_entries: Option<Spanned<u64>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDecryption {
    #[serde(default)]
    age_key_files: Vec<String>,
    /// Also accepted in the singular, as one file.
    age_key_file: Option<String>,
    /// Kubernetes mode: a Secret in strata's namespace whose `*.agekey` keys hold identities.
    secret: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawVerify {
    mode: Option<Spanned<String>>,
    ssh_allowed_signers: Option<String>,
    gpg_keyring: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawKubernetes {
    kubeconfig: Option<String>,
    context: Option<String>,
    namespace: Option<Spanned<String>>,
    #[serde(default = "yes")]
    cluster_secrets: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawState {
    backend: Spanned<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLeases {
    duration: Option<Spanned<String>>,
    renew_deadline: Option<Spanned<String>>,
    retry_period: Option<Spanned<String>>,
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
    #[serde(default)]
    public_url: Option<Spanned<String>>,
}

fn yes() -> bool {
    true
}

impl Default for RawView {
    fn default() -> Self {
        RawView { enabled: true, require_token: false, public_url: None }
    }
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawListener {
    #[serde(default)]
    allowed_hosts: Vec<Spanned<String>>,
    header_timeout: Option<Spanned<String>>,
    request_timeout: Option<Spanned<String>>,
    max_connections: Option<usize>,
    max_connections_per_client: Option<usize>,
    max_body_bytes_in_flight: Option<Spanned<String>>,
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
    #[serde(default)]
    verify: Option<Spanned<RawVerify>>,
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
    timeout: Option<Spanned<String>>,
    #[serde(default)]
    allow_namespaces: Vec<String>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawRender {
    template_timeout: Option<Spanned<String>>,
    layer_timeout: Option<Spanned<String>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawApi {
    token_file: Option<String>,
    #[serde(default)]
    tokens: Vec<Spanned<RawToken>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawToken {
    name: String,
    token_file: String,
    #[serde(default)]
    groups: Vec<String>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawAuth {
    #[serde(default)]
    oidc: Option<Spanned<RawOidc>>,
    #[serde(default)]
    write_groups: Option<Vec<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawOidc {
    issuer: String,
    client_id: String,
    client_secret_file: Option<String>,
    scopes: Option<Vec<String>>,
    groups_claim: Option<String>,
    redirect_url: Option<String>,
    ca_file: Option<String>,
    system_roots: Option<bool>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawMetrics {
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
    resync: Option<Spanned<String>>,
    watch: Option<bool>,
}

/// Where the daemon keeps its state (`state.backend`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum StateBackend {
    /// `state_dir/strata.db`: one host.
    #[default]
    Sqlite,
    /// ClusterState objects and a ConfigMap in the management cluster, shared by replicas.
    Kubernetes,
}

/// The management cluster strata runs on (`kubernetes:`): where shared state, shard Leases and
/// cluster Secrets live. Present in Kubernetes mode.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KubernetesConfig {
    /// In-cluster (the pod's service account), or a kubeconfig for running outside it.
    pub connection: TargetConfig,
    /// The namespace of strata's objects; `None`: the service account's namespace, else
    /// [`DEFAULT_NAMESPACE`].
    pub namespace: Option<String>,
    /// Watch Secrets labelled `strata.dev/target` as targets.
    pub cluster_secrets: bool,
}

pub const DEFAULT_NAMESPACE: &str = "strata-system";

/// How clusters are split between replicas (`shards`, `leases`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Sharding {
    /// Shards, each held by one replica at a time through a Lease; clusters map to shards by
    /// rendezvous hashing of their names.
    pub shards: u32,
    /// How long a Lease holds without renewal (`leaseDurationSeconds`): a dead replica's shards
    /// are taken over after it.
    pub lease_duration: Duration,
    /// A holder that could not renew for this long stops reconciling the shard's clusters.
    pub renew_deadline: Duration,
    /// How often Leases are renewed and free ones looked for.
    pub retry_period: Duration,
}

impl Default for Sharding {
    fn default() -> Self {
        // client-go's leader-election defaults.
        Sharding {
            shards: 1,
            lease_duration: Duration::from_secs(15),
            renew_deadline: Duration::from_secs(10),
            retry_period: Duration::from_secs(2),
        }
    }
}

/// The most shards a fleet may be split into.
pub const MAX_SHARDS: u64 = 1024;

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

#[derive(Clone, Debug, Default)]
pub struct Webhooks {
    pub github_secret_file: Option<PathBuf>,
    pub gitea_secret_file: Option<PathBuf>,
    pub gitlab_token_file: Option<PathBuf>,
}

/// The status view in the browser.
#[derive(Clone, Debug)]
pub struct ViewConfig {
    pub enabled: bool,
    /// Reading (the pages and `GET /api/v1/…`) needs a signed-in session or the API token too.
    pub require_token: bool,
    /// Where people reach the view (`view.public_url`): its host is an allowed `Host`, and an
    /// `https` URL makes the session cookie `Secure`.
    pub public_url: Option<PublicUrl>,
}

/// The URL the view is served at, as browsers see it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PublicUrl {
    pub https: bool,
    /// Lower-case host, IPv6 literals in brackets.
    pub host: String,
    /// The port, explicit or the scheme's default.
    pub port: u16,
}

/// An API token with a name: who it is, as recorded with what it does (`api.tokens`; the
/// shared `api.token_file` is the token named `api`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ApiToken {
    pub name: String,
    pub file: PathBuf,
    /// Groups its holder is in (for `auth.write_groups`).
    pub groups: Vec<String>,
    /// `api.token_file`: one token for several people, who say who they are (`by`, the name at
    /// sign-in) beside it.
    pub shared: bool,
}

/// Who may do what, and how people sign in to the view (`auth:`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AuthConfig {
    pub oidc: Option<OidcConfig>,
    /// When set, actions (approve, suspend, resume, rollout actions) need an identity in one of
    /// these groups; others only read.
    pub write_groups: Option<Vec<String>>,
}

/// Sign-in through an OpenID Connect provider (`auth.oidc`): the authorization code flow with PKCE.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OidcConfig {
    /// The provider's issuer URL, exactly as its discovery document and ID tokens name it.
    pub issuer: String,
    pub client_id: String,
    /// The client's secret; `None` for a public client (PKCE alone).
    pub client_secret_file: Option<PathBuf>,
    /// Scopes asked for; `openid` always among them.
    pub scopes: Vec<String>,
    /// The claim holding the user's groups (ID token, else the userinfo answer).
    pub groups_claim: String,
    /// Where the provider sends the browser back: `…/login/oidc/callback` on this view.
    pub redirect_url: String,
    /// Trust for the provider's HTTPS endpoints.
    pub tls: Tls,
}

/// The path of the view that the provider sends people back to.
pub const OIDC_CALLBACK: &str = "/login/oidc/callback";

/// Bounds on what HTTP clients of the listen address may hold (DESIGN: every input is hostile).
#[derive(Clone, Debug)]
pub struct ListenerConfig {
    /// `Host` values accepted besides the listen address, localhost and the public URL's host.
    pub allowed_hosts: Vec<String>,
    /// A request's head must arrive within this; also how long an idle connection stays open.
    pub header_timeout: Duration,
    /// Reading a request's body and answering it.
    pub request_timeout: Duration,
    pub max_connections: usize,
    pub max_connections_per_client: usize,
    /// Request bodies held in memory at once, over all connections.
    pub max_body_bytes_in_flight: usize,
}

impl Default for ListenerConfig {
    fn default() -> Self {
        ListenerConfig {
            allowed_hosts: Vec::new(),
            header_timeout: Duration::from_secs(10),
            request_timeout: Duration::from_secs(30),
            max_connections: 512,
            max_connections_per_client: 64,
            max_body_bytes_in_flight: 16 * 1024 * 1024,
        }
    }
}

#[derive(Clone, Debug)]
pub struct Config {
    pub file: PathBuf,
    pub repository: Option<Repository>,
    pub targets: BTreeMap<String, TargetConfig>,
    pub apply: Options,
    /// Namespaces of strata's own that repositories may write to all the same
    /// ([`crate::render::Settings`]).
    pub allow_namespaces: Vec<String>,
    /// How long templates may render ([`crate::render::engine`]).
    pub render_limits: crate::render::engine::Limits,
    /// Clusters reconciled at once.
    pub cluster_concurrency: usize,
    /// The most one reconcile (or drift check) of one cluster may take in the daemon, health
    /// wait included; past it the reconcile stops where it is and is retried with backoff.
    pub reconcile_timeout: Duration,
    pub state_dir: PathBuf,
    pub listen: SocketAddr,
    /// The token the CLI sends to the local API: `api.token_file`, else the first of `api.tokens`.
    pub api_token_file: Option<PathBuf>,
    /// Every API token, by name (`api.token_file` is the one named `api`).
    pub api_tokens: Vec<ApiToken>,
    /// Groups that may act, and sign-in through an OpenID provider.
    pub auth: AuthConfig,
    /// A bearer token that opens `/metrics` and nothing else (for Prometheus); when set,
    /// `/metrics` needs it or the API token.
    pub metrics_token_file: Option<PathBuf>,
    pub webhooks: Webhooks,
    /// How often every object is checked where nothing watches the target (directories).
    pub drift_interval: Duration,
    /// Watch Kubernetes targets' objects, so a change is judged when it happens.
    pub drift_watch: bool,
    /// How often every object is checked where watches run: a safety net for what a watch
    /// could miss (a change to a field an event showed as it was, a silent connection).
    pub drift_resync: Duration,
    /// Delete the objects of a cluster whose file was removed from the repository.
    pub prune_removed_clusters: bool,
    /// How long in-flight applies may run on SIGTERM.
    pub shutdown_timeout: Duration,
    pub status: Option<StatusConfig>,
    pub view: ViewConfig,
    pub proxy: Option<Proxy>,
    pub listener: ListenerConfig,
    /// Kubernetes mode: the management cluster. `None` on a single host.
    pub kubernetes: Option<KubernetesConfig>,
    pub state_backend: StateBackend,
    pub sharding: Sharding,
    /// The audit trail's retention and bound.
    pub audit: AuditConfig,
    /// The age identities SOPS files in the repository are decrypted with.
    pub decryption: Decryption,
}

pub const DEFAULT_LISTEN: &str = "127.0.0.1:9477";

/// The largest request body the listener reads (1 MiB): every webhook and API body fits.
pub const MAX_BODY: usize = 1024 * 1024;

/// How long the audit trail is kept, and how many entries at most (the oldest go first).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuditConfig {
    pub retention: Duration,
    pub max_entries: u64,
}

impl Default for AuditConfig {
    fn default() -> Self {
        AuditConfig { retention: Duration::from_secs(365 * 86_400), max_entries: 1_000_000 }
    }
}

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

/// `http(s)://host[:port][/]`: the view is served at the root of its host.
fn parse_public_url(text: &str) -> Result<PublicUrl, &'static str> {
    let uri: http::Uri = text.trim().parse().map_err(|_| "is not a URL")?;
    let https = match uri.scheme_str() {
        Some("https") => true,
        Some("http") => false,
        _ => return Err("must start with https:// or http://"),
    };
    let authority = uri.authority().ok_or("has no host")?;
    if authority.as_str().contains('@') {
        return Err("must not carry a user name or password");
    }
    if !matches!(uri.path(), "" | "/") || uri.query().is_some() {
        return Err("must not have a path: the view is served at the root of its host");
    }
    let host = authority.host().to_ascii_lowercase();
    if host.is_empty() {
        return Err("has no host");
    }
    Ok(PublicUrl { https, host, port: authority.port_u16().unwrap_or(if https { 443 } else { 80 }) })
}

/// An allowed `Host` value: a host name or IP literal, with an optional port, nothing else.
fn valid_host(text: &str) -> bool {
    let Ok(authority) = text.parse::<http::uri::Authority>() else { return false };
    !text.is_empty() && !text.contains(['@', '/', '*']) && authority.as_str() == text && !authority.host().is_empty()
}

/// A token's name: what actions are recorded with, and what the log shows.
fn valid_token_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 63
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'@'))
}

/// `api.token_file` (the shared token, named `api`, first) and `api.tokens`, checked: names
/// valid and distinct.
fn api_tokens(diags: &mut Diagnostics, file: &str, raw: &RawApi, resolve: &impl Fn(&str) -> PathBuf) -> Vec<ApiToken> {
    let mut tokens: Vec<ApiToken> = raw
        .token_file
        .as_deref()
        .map(|f| ApiToken { name: "api".into(), file: resolve(f), groups: Vec::new(), shared: true })
        .into_iter()
        .collect();
    for token in &raw.tokens {
        let line = token.referenced.line() as usize;
        let t = &token.value;
        let problem = if !valid_token_name(&t.name) {
            Some(format!("api.tokens: `{}` is not a token name", t.name))
        } else if tokens.iter().any(|o| o.name == t.name) {
            Some(format!(
                "api.tokens: two tokens named `{}`{}",
                t.name,
                if t.name == "api" { " (api.token_file is the token named api)" } else { "" }
            ))
        } else {
            None
        };
        if let Some(problem) = problem {
            diags.push(
                Diagnostic::new(Code::Schema, problem)
                    .in_file(file)
                    .at_line(line)
                    .help("name each token once, in letters, digits, -, _, . or @ (up to 63): tokens: [{ name: ci, token_file: ci-token, groups: [deployers] }]"),
            );
            continue;
        }
        tokens.push(ApiToken {
            name: t.name.clone(),
            file: resolve(&t.token_file),
            groups: t.groups.clone(),
            shared: false,
        });
    }
    tokens
}

/// `auth.oidc`, checked: an https issuer (http only on loopback, for tests), a redirect URL on
/// this view (from `view.public_url` when not given).
fn oidc(
    diags: &mut Diagnostics,
    file: &str,
    raw: Spanned<RawOidc>,
    public: Option<&PublicUrl>,
    resolve: &impl Fn(&str) -> PathBuf,
) -> OidcConfig {
    let line = raw.referenced.line() as usize;
    let raw = raw.value;
    let mut problem = |message: String, help: &str| {
        diags.push(Diagnostic::new(Code::Schema, message).in_file(file).at_line(line).help(help));
    };
    let issuer = raw.issuer.trim().to_string();
    match url::Url::parse(&issuer) {
        Ok(url) if url.scheme() == "https" || (url.scheme() == "http" && loopback(&url)) => {
            if url.query().is_some() || url.fragment().is_some() || !url.username().is_empty() {
                problem(
                    format!("auth.oidc.issuer `{issuer}` must not carry a query, fragment or user"),
                    "write the issuer URL as the provider's discovery document names it",
                );
            }
        }
        _ => problem(
            format!("auth.oidc.issuer `{issuer}` is not an https URL"),
            "write the issuer URL as the provider's discovery document names it, e.g. https://login.example.com/realms/corp",
        ),
    }
    if raw.client_id.trim().is_empty() {
        problem("auth.oidc.client_id is empty".into(), "the client id the provider gave strata");
    }
    let redirect_url = match (&raw.redirect_url, public) {
        (Some(url), _) => url.trim().to_string(),
        (None, Some(public)) => {
            let scheme = if public.https { "https" } else { "http" };
            let default = if public.https { 443 } else { 80 };
            let port = if public.port == default { String::new() } else { format!(":{}", public.port) };
            format!("{scheme}://{}{port}{OIDC_CALLBACK}", public.host)
        }
        (None, None) => {
            problem(
                "auth.oidc needs redirect_url or view.public_url".into(),
                "e.g. redirect_url: https://strata.example.com/login/oidc/callback (registered with the provider)",
            );
            String::new()
        }
    };
    if !redirect_url.is_empty() {
        match url::Url::parse(&redirect_url) {
            Ok(url)
                if matches!(url.scheme(), "https" | "http") && url.path() == OIDC_CALLBACK && url.query().is_none() => {
            }
            _ => problem(
                format!("auth.oidc.redirect_url `{redirect_url}` must be an http(s) URL ending in {OIDC_CALLBACK}"),
                "e.g. redirect_url: https://strata.example.com/login/oidc/callback",
            ),
        }
    }
    let mut scopes = raw.scopes.unwrap_or_else(|| vec!["profile".into(), "email".into()]);
    scopes.retain(|s| s != "openid" && !s.trim().is_empty());
    scopes.insert(0, "openid".into());
    let tls = tls(
        diags,
        file,
        line,
        "auth.oidc",
        RawTls { ca_file: raw.ca_file, system_roots: raw.system_roots, client_cert_file: None, client_key_file: None },
        resolve,
    );
    OidcConfig {
        issuer,
        client_id: raw.client_id.trim().to_string(),
        client_secret_file: raw.client_secret_file.as_deref().map(resolve),
        scopes,
        groups_claim: raw.groups_claim.unwrap_or_else(|| "groups".into()),
        redirect_url,
        tls,
    }
}

fn loopback(url: &url::Url) -> bool {
    match url.host() {
        Some(url::Host::Domain(d)) => d == "localhost",
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        None => false,
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
        Config::parse(path, &text)
    }

    /// The host config written in `text`, as if read from `path`: diagnostics name that file, and
    /// relative paths are relative to its directory. Reads nothing.
    pub fn parse(path: &Path, text: &str) -> Result<Config, Diagnostics> {
        let shown = path.display().to_string();
        let raw: RawConfig = yaml::parse(text)
            .map_err(|e| Diagnostics::from(Diagnostic::new(Code::Schema, e.message).in_file(&shown).at_line(e.line)))?;
        let base = path.parent().unwrap_or(Path::new("."));
        // `components` drops the `.` of `./state`, so paths in messages read as written.
        let resolve = |p: &str| -> PathBuf {
            if Path::new(p).is_absolute() { PathBuf::from(p) } else { base.join(p).components().collect() }
        };
        let mut diags = Diagnostics::new();
        let mut apply = Options::default();
        if let Some(n) = raw.apply.concurrency {
            apply.concurrency = n.max(1);
        }
        apply.health_timeout =
            duration(&mut diags, &shown, &raw.apply.health_timeout, "health_timeout", apply.health_timeout);
        let reconcile_timeout = duration(
            &mut diags,
            &shown,
            &raw.apply.timeout,
            "apply.timeout",
            apply.health_timeout + Duration::from_secs(600),
        );
        let defaults = crate::render::engine::Limits::default();
        let render_limits = crate::render::engine::Limits {
            template: duration(
                &mut diags,
                &shown,
                &raw.render.template_timeout,
                "render.template_timeout",
                defaults.template,
            ),
            layer: duration(&mut diags, &shown, &raw.render.layer_timeout, "render.layer_timeout", defaults.layer),
        };
        let drift_interval =
            duration(&mut diags, &shown, &raw.drift.interval, "drift.interval", Duration::from_secs(300));
        let drift_resync = duration(&mut diags, &shown, &raw.drift.resync, "drift.resync", Duration::from_secs(3600));
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
            let verify = r.value.verify.map(|v| {
                let vline = v.referenced.line() as usize;
                let mode = match v.value.mode.as_ref().map(|m| m.value.as_str()) {
                    None | Some("head") => VerifyMode::Head,
                    Some("all") => VerifyMode::All,
                    Some(other) => {
                        diags.push(
                            Diagnostic::new(Code::Schema, format!("repository.verify.mode `{other}` is not a mode"))
                                .in_file(&shown)
                                .at_line(v.value.mode.as_ref().map_or(vline, |m| m.referenced.line() as usize))
                                .help("use head (the evaluated commit is signed) or all (every commit since the last evaluated one is)"),
                        );
                        VerifyMode::Head
                    }
                };
                if v.value.ssh_allowed_signers.is_none() && v.value.gpg_keyring.is_none() {
                    diags.push(
                        Diagnostic::new(Code::Schema, "repository.verify names no key: no commit could be verified")
                            .in_file(&shown)
                            .at_line(vline)
                            .help("set ssh_allowed_signers: FILE (OpenSSH allowed signers) and/or gpg_keyring: FILE (gpg --export --armor)"),
                    );
                }
                Verify {
                    mode,
                    ssh_allowed_signers: v.value.ssh_allowed_signers.as_deref().map(resolve),
                    gpg_keyring: v.value.gpg_keyring.as_deref().map(resolve),
                }
            });
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
                verify,
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
        let view = {
            let public_url = raw.view.public_url.as_ref().and_then(|u| {
                parse_public_url(&u.value)
                    .map_err(|problem| {
                        diags.push(
                            Diagnostic::new(Code::Schema, format!("view.public_url `{}` {problem}", u.value))
                                .in_file(&shown)
                                .at_line(u.referenced.line() as usize)
                                .help("write the URL people open, e.g. https://strata.example.com"),
                        )
                    })
                    .ok()
            });
            ViewConfig { enabled: raw.view.enabled, require_token: raw.view.require_token, public_url }
        };
        let api_tokens = api_tokens(&mut diags, &shown, &raw.api, &resolve);
        let auth = AuthConfig {
            oidc: raw.auth.oidc.map(|o| oidc(&mut diags, &shown, o, view.public_url.as_ref(), &resolve)),
            write_groups: raw.auth.write_groups,
        };
        if view.require_token && api_tokens.is_empty() && auth.oidc.is_none() {
            diags.push(
                Diagnostic::new(
                    Code::Schema,
                    "view.require_token needs api.token_file, api.tokens or auth.oidc: nobody could sign in",
                )
                .in_file(&shown)
                .help("set api: { token_file: PATH } to the file holding the API token"),
            );
        }
        let listener = {
            let defaults = ListenerConfig::default();
            let mut allowed_hosts = Vec::new();
            for host in &raw.listener.allowed_hosts {
                let value = host.value.trim().to_ascii_lowercase();
                if valid_host(&value) {
                    allowed_hosts.push(value);
                } else {
                    diags.push(
                        Diagnostic::new(Code::Schema, format!("listener.allowed_hosts: `{}` is not a host", host.value))
                            .in_file(&shown)
                            .at_line(host.referenced.line() as usize)
                            .help("write what clients send as Host: a name or address with an optional port, e.g. strata.internal:9477"),
                    );
                }
            }
            let r = &raw.listener;
            let header_timeout =
                duration(&mut diags, &shown, &r.header_timeout, "listener.header_timeout", defaults.header_timeout);
            let request_timeout =
                duration(&mut diags, &shown, &r.request_timeout, "listener.request_timeout", defaults.request_timeout);
            let max_body_bytes_in_flight = match &r.max_body_bytes_in_flight {
                None => defaults.max_body_bytes_in_flight,
                Some(v) => match parse_size(&v.value) {
                    Some(n) if n >= MAX_BODY && n <= u32::MAX as usize => n,
                    _ => {
                        diags.push(
                            Diagnostic::new(
                                Code::Schema,
                                format!(
                                    "listener.max_body_bytes_in_flight `{}` is not a size from 1MiB to 4GiB",
                                    v.value
                                ),
                            )
                            .in_file(&shown)
                            .at_line(v.referenced.line() as usize)
                            .help("write sizes like 16MiB (at least one whole webhook body, 1MiB)"),
                        );
                        defaults.max_body_bytes_in_flight
                    }
                },
            };
            for (what, timeout) in [("header_timeout", header_timeout), ("request_timeout", request_timeout)] {
                if timeout.is_zero() {
                    diags.push(
                        Diagnostic::new(Code::Schema, format!("listener.{what} must be longer than 0"))
                            .in_file(&shown)
                            .help("write durations like 10s"),
                    );
                }
            }
            ListenerConfig {
                allowed_hosts,
                header_timeout,
                request_timeout,
                max_connections: r.max_connections.unwrap_or(defaults.max_connections).max(1),
                max_connections_per_client: r
                    .max_connections_per_client
                    .unwrap_or(defaults.max_connections_per_client)
                    .max(1),
                max_body_bytes_in_flight,
            }
        };
        let state_backend = match raw.state.as_ref().map(|s| &s.value.backend) {
            None => StateBackend::Sqlite,
            Some(b) if b.value == "sqlite" => StateBackend::Sqlite,
            Some(b) if b.value == "kubernetes" => StateBackend::Kubernetes,
            Some(b) => {
                diags.push(
                    Diagnostic::new(Code::Schema, format!("state.backend `{}` is not a backend", b.value))
                        .in_file(&shown)
                        .at_line(b.referenced.line() as usize)
                        .help("use sqlite (one host, the default) or kubernetes (replicas sharing the management cluster)"),
                );
                StateBackend::Sqlite
            }
        };
        let kubernetes = match raw.kubernetes {
            Some(k) => {
                let line = k.referenced.line() as usize;
                let k = k.value;
                let connection = match (&k.kubeconfig, &k.context) {
                    (Some(path), context) => TargetConfig::Kubeconfig { path: resolve(path), context: context.clone() },
                    (None, None) => TargetConfig::InCluster,
                    (None, Some(_)) => {
                        diags.push(
                            Diagnostic::new(Code::Schema, "kubernetes.context needs kubernetes.kubeconfig")
                                .in_file(&shown)
                                .at_line(line)
                                .help(
                                    "name the kubeconfig file too, or leave both out to use the pod's service account",
                                ),
                        );
                        TargetConfig::InCluster
                    }
                };
                let namespace = k.namespace.map(|n| {
                    if !crate::names::is_dns1123_label(&n.value) {
                        diags.push(
                            Diagnostic::new(
                                Code::Schema,
                                format!("kubernetes.namespace `{}` is not a namespace name", n.value),
                            )
                            .in_file(&shown)
                            .at_line(n.referenced.line() as usize)
                            .help("a DNS label: lower-case letters, digits and `-`, at most 63 characters"),
                        );
                    }
                    n.value
                });
                Some(KubernetesConfig { connection, namespace, cluster_secrets: k.cluster_secrets })
            }
            // The shared state lives in the management cluster: strata runs in it.
            None if state_backend == StateBackend::Kubernetes => {
                Some(KubernetesConfig { connection: TargetConfig::InCluster, namespace: None, cluster_secrets: true })
            }
            None => None,
        };
        let decryption = match raw.decryption {
            None => Decryption::default(),
            Some(d) => {
                let line = d.referenced.line() as usize;
                let d = d.value;
                let files: Vec<PathBuf> = d.age_key_files.iter().chain(&d.age_key_file).map(|f| resolve(f)).collect();
                let secret = d.secret.map(|s| {
                    if kubernetes.is_none() {
                        diags.push(
                            Diagnostic::new(Code::Schema, "decryption.secret needs Kubernetes mode (kubernetes:)")
                                .in_file(&shown)
                                .at_line(s.referenced.line() as usize)
                                .help("on a single host, list the age identity files in decryption.age_key_files"),
                        );
                    }
                    s.value
                });
                if files.is_empty() && secret.is_none() {
                    diags.push(
                        Diagnostic::new(Code::Schema, "decryption names no age key")
                            .in_file(&shown)
                            .at_line(line)
                            .help("e.g. decryption: { age_key_files: [/etc/strata/age.key] } (age-keygen -o FILE makes one)"),
                    );
                }
                Decryption { age_key_files: files, secret }
            }
        };
        let mut sharding = Sharding::default();
        if let Some(shards) = &raw.shards {
            let line = shards.referenced.line() as usize;
            if shards.value == 0 || shards.value > MAX_SHARDS {
                diags.push(
                    Diagnostic::new(Code::Schema, format!("shards: {} is not from 1 to {MAX_SHARDS}", shards.value))
                        .in_file(&shown)
                        .at_line(line)
                        .help("a few per replica is plenty: e.g. shards: 8 for 3 replicas"),
                );
            } else if shards.value > 1 && state_backend != StateBackend::Kubernetes {
                diags.push(
                    Diagnostic::new(Code::Schema, "shards need the shared state: state: { backend: kubernetes }")
                        .in_file(&shown)
                        .at_line(line)
                        .help("replicas share pending updates, approvals and what each cluster runs through the management cluster"),
                );
            } else {
                sharding.shards = shards.value as u32;
            }
        }
        if let Some(leases) = raw.leases {
            let line = leases.referenced.line() as usize;
            let l = leases.value;
            let defaults = Sharding::default();
            sharding.lease_duration =
                duration(&mut diags, &shown, &l.duration, "leases.duration", defaults.lease_duration);
            sharding.renew_deadline =
                duration(&mut diags, &shown, &l.renew_deadline, "leases.renew_deadline", defaults.renew_deadline);
            sharding.retry_period =
                duration(&mut diags, &shown, &l.retry_period, "leases.retry_period", defaults.retry_period);
            let problem = if sharding.lease_duration.subsec_nanos() != 0 || sharding.lease_duration.is_zero() {
                Some("leases.duration must be a whole number of seconds (a Lease's leaseDurationSeconds)")
            } else if sharding.renew_deadline >= sharding.lease_duration {
                Some(
                    "leases.renew_deadline must be shorter than leases.duration: a holder stops before others may take over",
                )
            } else if sharding.retry_period.is_zero() || sharding.retry_period >= sharding.renew_deadline {
                Some("leases.retry_period must be longer than 0 and shorter than leases.renew_deadline")
            } else {
                None
            };
            if let Some(problem) = problem {
                diags.push(
                    Diagnostic::new(Code::Schema, problem)
                        .in_file(&shown)
                        .at_line(line)
                        .help("e.g. leases: { duration: 15s, renew_deadline: 10s, retry_period: 2s }"),
                );
                sharding = Sharding { shards: sharding.shards, ..Sharding::default() };
            }
        }
        let audit = {
            let defaults = AuditConfig::default();
            let retention = duration(&mut diags, &shown, &raw.audit.retention, "audit.retention", defaults.retention);
            let max_entries = match &raw.audit.max_entries {
                Some(n) if n.value == 0 => {
                    diags.push(
                        Diagnostic::new(Code::Schema, "audit.max_entries: 0 would keep no audit trail")
                            .in_file(&shown)
                            .at_line(n.referenced.line() as usize)
                            .help("give the most entries to keep, e.g. audit: { max_entries: 1000000 } (the default)"),
                    );
                    defaults.max_entries
                }
                Some(n) => n.value,
                None => defaults.max_entries,
            };
            if retention < Duration::from_secs(86_400) {
                diags.push(
                    Diagnostic::new(Code::Schema, "audit.retention is shorter than a day")
                        .in_file(&shown)
                        .at_line(raw.audit.retention.as_ref().map_or(0, |r| r.referenced.line() as usize))
                        .help("keep the audit trail a day at least, e.g. audit: { retention: 365d } (the default)"),
                );
            }
            AuditConfig { retention: retention.max(Duration::from_secs(86_400)), max_entries }
        };
        diags.into_result(Config {
            audit,
            file: path.to_path_buf(),
            repository,
            targets,
            apply,
            allow_namespaces: raw.apply.allow_namespaces,
            render_limits,
            cluster_concurrency: raw.apply.clusters.unwrap_or(4).max(1),
            reconcile_timeout,
            state_dir: raw.state_dir.as_deref().map(resolve).unwrap_or_else(|| base.join("state")),
            listen,
            api_token_file: api_tokens.first().map(|t| t.file.clone()),
            api_tokens,
            auth,
            metrics_token_file: raw.metrics.token_file.as_deref().map(resolve),
            webhooks: Webhooks {
                github_secret_file: raw.webhooks.github_secret_file.as_deref().map(resolve),
                gitea_secret_file: raw.webhooks.gitea_secret_file.as_deref().map(resolve),
                gitlab_token_file: raw.webhooks.gitlab_token_file.as_deref().map(resolve),
            },
            drift_interval,
            drift_watch: raw.drift.watch.unwrap_or(true),
            drift_resync,
            prune_removed_clusters: raw.prune_removed_clusters,
            shutdown_timeout,
            status,
            proxy,
            view,
            listener,
            kubernetes,
            state_backend,
            sharding,
            decryption,
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
                    match known.len() {
                        0 => "none".to_string(),
                        // A fleet's thousand names would bury the one line that matters.
                        n if n > 5 => format!("{}, … {n} in all", known[..5].join(", ")),
                        _ => known.join(", "),
                    }
                ))
        })
    }
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
    fn decryption_keys_and_signed_commits() {
        let config = load(
            "repository:\n  url: ../fleet\n  verify: { mode: all, ssh_allowed_signers: keys/allowed_signers, gpg_keyring: /etc/strata/keyring.asc }\ndecryption: { age_key_files: [age.key, /etc/strata/old.key] }\n",
        )
        .unwrap();
        let verify = config.repository.unwrap().verify.unwrap();
        assert_eq!(verify.mode, VerifyMode::All);
        assert!(verify.ssh_allowed_signers.unwrap().ends_with("keys/allowed_signers"));
        assert_eq!(verify.gpg_keyring.as_deref(), Some(Path::new("/etc/strata/keyring.asc")));
        assert_eq!(config.decryption.age_key_files.len(), 2);
        assert!(config.decryption.age_key_files[0].ends_with("age.key"));
        let head = load("repository: { url: ., verify: { ssh_allowed_signers: s } }\n").unwrap();
        assert_eq!(head.repository.unwrap().verify.unwrap().mode, VerifyMode::Head, "head is the default");

        // What cannot work is said on its line, with what to write.
        let errors = |text: &str| load(text).unwrap_err().to_string();
        let e = errors("repository:\n  url: .\n  verify: { mode: tip, ssh_allowed_signers: s }\n");
        assert!(e.contains("strata.yaml:3") && e.contains("`tip` is not a mode") && e.contains("head"), "{e}");
        let e = errors("repository:\n  url: .\n  verify: { mode: head }\n");
        assert!(e.contains("names no key") && e.contains("ssh_allowed_signers: FILE"), "{e}");
        let e = errors("decryption: {}\n");
        assert!(e.contains("decryption names no age key") && e.contains("age-keygen"), "{e}");
        let e = errors("decryption: { secret: sops-age }\n");
        assert!(e.contains("needs Kubernetes mode"), "{e}");
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
    fn the_audit_trail_is_kept_a_year_unless_configured_and_never_less_than_a_day() {
        let defaults = load("targets: {}\n").unwrap();
        assert_eq!(defaults.audit, AuditConfig::default());
        assert_eq!(defaults.audit.retention, Duration::from_secs(365 * 86_400));
        let set = load("targets: {}\naudit: { retention: 30d, max_entries: 5000 }\n").unwrap();
        assert_eq!((set.audit.retention, set.audit.max_entries), (Duration::from_secs(30 * 86_400), 5000));
        let text = load("targets: {}\naudit:\n  retention: 1h\n  max_entries: 0\n").unwrap_err().to_string();
        assert!(text.contains("strata.yaml:3: audit.retention is shorter than a day"), "{text}");
        assert!(text.contains("strata.yaml:4: audit.max_entries: 0 would keep no audit trail"), "{text}");
        let text = load("targets: {}\naudit: { keep: 1d }\n").unwrap_err().to_string();
        assert!(text.contains("keep"), "{text}");
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
    fn named_tokens_and_sign_in_through_a_provider() {
        let config = load(
            "api:\n  token_file: shared\n  tokens:\n    - { name: ci, token_file: /run/ci, groups: [deployers] }\nauth:\n  write_groups: [deployers]\n  oidc: { issuer: 'https://login.example.com/realms/corp', client_id: strata, client_secret_file: secret, scopes: [groups, openid] }\nview: { require_token: true, public_url: 'https://strata.example.com' }\n",
        )
        .unwrap();
        let names: Vec<(&str, bool)> = config.api_tokens.iter().map(|t| (t.name.as_str(), t.shared)).collect();
        assert_eq!(names, [("api", true), ("ci", false)]);
        assert_eq!(config.api_tokens[1].groups, ["deployers"]);
        assert!(config.api_token_file.as_ref().unwrap().ends_with("shared"), "the CLI sends the shared token");
        assert_eq!(config.auth.write_groups.as_deref(), Some(&["deployers".to_string()][..]));
        let oidc = config.auth.oidc.unwrap();
        assert_eq!(oidc.redirect_url, "https://strata.example.com/login/oidc/callback", "from view.public_url");
        assert_eq!(oidc.scopes, ["openid", "groups"]);
        assert_eq!(oidc.groups_claim, "groups");
        assert!(oidc.client_secret_file.unwrap().ends_with("secret"));
        // Only named tokens: the CLI sends the first.
        let config =
            load("api: { tokens: [{ name: ops, token_file: ops-token }] }\nview: { require_token: true }\n").unwrap();
        assert!(config.api_token_file.unwrap().ends_with("ops-token"));
        // A provider alone is enough for require_token.
        assert!(load("auth: { oidc: { issuer: 'https://i', client_id: c, redirect_url: 'https://s/login/oidc/callback' } }\nview: { require_token: true }\n").is_ok());

        for (text, expected) in [
            ("api: { token_file: t, tokens: [{ name: api, token_file: u }] }\n", "two tokens named `api`"),
            ("api: { tokens: [{ name: ci, token_file: a }, { name: ci, token_file: b }] }\n", "two tokens named `ci`"),
            ("api: { tokens: [{ name: 'c i', token_file: a }] }\n", "`c i` is not a token name"),
            (
                "auth: { oidc: { issuer: 'http://login.example.com', client_id: c, redirect_url: 'https://s/login/oidc/callback' } }\n",
                "is not an https URL",
            ),
            ("auth: { oidc: { issuer: 'https://i', client_id: c } }\n", "needs redirect_url or view.public_url"),
            (
                "auth: { oidc: { issuer: 'https://i', client_id: c, redirect_url: 'https://s/callback' } }\n",
                "must be an http(s) URL ending in /login/oidc/callback",
            ),
            ("view: { require_token: true }\n", "needs api.token_file, api.tokens or auth.oidc"),
        ] {
            let e = load(text).unwrap_err().to_string();
            assert!(e.contains(expected), "{expected}\n{e}");
        }
    }

    #[test]
    fn the_view_and_the_listener() {
        let config = load(
            "api: { token_file: t }\nview: { require_token: true, public_url: 'https://Strata.Example.com/' }\nlistener: { allowed_hosts: ['strata.internal:8080', 'Other.example'], header_timeout: 5s, request_timeout: 1m, max_connections: 100, max_connections_per_client: 10, max_body_bytes_in_flight: 8MiB }\n",
        )
        .unwrap();
        assert!(config.view.require_token);
        assert_eq!(
            config.view.public_url,
            Some(PublicUrl { https: true, host: "strata.example.com".into(), port: 443 })
        );
        let l = &config.listener;
        assert_eq!(l.allowed_hosts, ["strata.internal:8080", "other.example"]);
        assert_eq!((l.header_timeout, l.request_timeout), (Duration::from_secs(5), Duration::from_secs(60)));
        assert_eq!((l.max_connections, l.max_connections_per_client), (100, 10));
        assert_eq!(l.max_body_bytes_in_flight, 8 << 20);
        let defaults = load("{}\n").unwrap();
        assert_eq!(defaults.listener.header_timeout, Duration::from_secs(10));
        assert_eq!(defaults.listener.max_body_bytes_in_flight, 16 << 20);
        let plain = load("view: { public_url: 'http://10.0.0.5:9477' }\n").unwrap().view.public_url.unwrap();
        assert_eq!(plain, PublicUrl { https: false, host: "10.0.0.5".into(), port: 9477 });
    }

    #[test]
    fn view_and_listener_mistakes_are_reported_with_lines() {
        let e = load(
            "view:\n  require_token: true\n  public_url: 'https://strata.example.com/strata'\nlistener:\n  allowed_hosts: ['https://x', 'a b', 'u@x']\n  max_body_bytes_in_flight: 10KiB\n  header_timeout: 0s\n",
        )
        .unwrap_err()
        .to_string();
        for expected in [
            "view.require_token needs api.token_file",
            "strata.yaml:3: view.public_url `https://strata.example.com/strata` must not have a path",
            "strata.yaml:5: listener.allowed_hosts: `https://x` is not a host",
            "listener.allowed_hosts: `a b` is not a host",
            "listener.allowed_hosts: `u@x` is not a host",
            "strata.yaml:6: listener.max_body_bytes_in_flight `10KiB` is not a size",
            "listener.header_timeout must be longer than 0",
        ] {
            assert!(e.contains(expected), "{expected}\n{e}");
        }
        for bad in ["ftp://x", "strata.example.com", "https://user:pw@x"] {
            let e = load(&format!("view: {{ public_url: '{bad}' }}\n")).unwrap_err().to_string();
            assert!(e.contains("view.public_url"), "{bad}: {e}");
        }
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("16MiB"), Some(16 << 20));
        assert_eq!(parse_size("512KiB"), Some(512 << 10));
        assert_eq!(parse_size("1048576"), Some(1 << 20));
        assert_eq!(parse_size("16MB"), None);
        assert_eq!(parse_size("MiB"), None);
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("250ms"), Some(Duration::from_millis(250)));
        assert_eq!(parse_duration("5m"), Some(Duration::from_secs(300)));
        assert_eq!(parse_duration("5"), None);
        assert_eq!(parse_duration("m"), None);
        // Past u64 seconds once multiplied: a diagnostic, not an overflow.
        assert_eq!(parse_duration("9999999999999999h"), None);
        assert_eq!(parse_duration("999999999999999999m"), None);
        assert_eq!(parse_duration("99999999999999999999s"), None);
    }

    #[test]
    fn kubernetes_mode_state_and_shards() {
        let config = load(
            "kubernetes: { kubeconfig: mgmt.yaml, context: mgmt, namespace: strata }\nstate: { backend: kubernetes }\nshards: 8\nleases: { duration: 20s, renew_deadline: 12s, retry_period: 3s }\n",
        )
        .unwrap();
        let kubernetes = config.kubernetes.unwrap();
        assert!(
            matches!(&kubernetes.connection, TargetConfig::Kubeconfig { path, context } if path.is_absolute() && context.as_deref() == Some("mgmt"))
        );
        assert_eq!((kubernetes.namespace.as_deref(), kubernetes.cluster_secrets), (Some("strata"), true));
        assert_eq!(config.state_backend, StateBackend::Kubernetes);
        assert_eq!(
            config.sharding,
            Sharding {
                shards: 8,
                lease_duration: Duration::from_secs(20),
                renew_deadline: Duration::from_secs(12),
                retry_period: Duration::from_secs(3)
            }
        );
        // The shared state alone means running in the management cluster.
        let config = load("state: { backend: kubernetes }\n").unwrap();
        assert_eq!(config.kubernetes.unwrap().connection, TargetConfig::InCluster);
        let config = load("targets: {}\n").unwrap();
        assert_eq!((config.state_backend, config.kubernetes, config.sharding.shards), (StateBackend::Sqlite, None, 1));
    }

    #[test]
    fn kubernetes_mode_mistakes_are_reported_with_lines() {
        for (text, expected) in [
            ("state: { backend: etcd }\n", "strata.yaml:1: state.backend `etcd` is not a backend"),
            ("shards: 4\n", "strata.yaml:1: shards need the shared state: state: { backend: kubernetes }"),
            ("state: { backend: kubernetes }\nshards: 0\n", "strata.yaml:2: shards: 0 is not from 1 to 1024"),
            ("state: { backend: kubernetes }\nshards: 5000\n", "shards: 5000 is not from 1 to 1024"),
            ("kubernetes: { context: x }\n", "kubernetes.context needs kubernetes.kubeconfig"),
            (
                "kubernetes: { namespace: Strata_System }\n",
                "kubernetes.namespace `Strata_System` is not a namespace name",
            ),
            ("leases: { duration: 1500ms }\n", "leases.duration must be a whole number of seconds"),
            (
                "leases: { duration: 10s, renew_deadline: 10s }\n",
                "leases.renew_deadline must be shorter than leases.duration",
            ),
            (
                "leases: { duration: 15s, renew_deadline: 10s, retry_period: 10s }\n",
                "leases.retry_period must be longer than 0 and shorter",
            ),
        ] {
            let e = load(text).unwrap_err().to_string();
            assert!(e.contains(expected), "{expected}\n{e}");
        }
    }
}
