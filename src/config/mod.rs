//! The host configuration (`strata.yaml`): what operators write on the machine strata runs on.
//!
//! It maps the target names cluster files use to real clusters (kubeconfig + context, the
//! in-cluster service account, or a directory), so the repository never chooses credentials, and
//! says where the daemon finds the repository, keeps its state and listens. Keys are snake_case as
//! in DESIGN §3. Raw (as written, with lines) → validated ([`Config`]); relative paths are
//! relative to the file.
//!
//! [`Config::parse`] reads the file into its raw shape, then hands each top-level section to its
//! step, which returns the section's settings and pushes its diagnostics on the way:
//!
//! ```text
//!   strata.yaml ──yaml──> RawConfig ─┬─ source     repository, decryption
//!                                    ├─ clusters   targets, state, kubernetes, shards, leases
//!                                    ├─ reconcile  apply, render, drift, audit
//!                                    ├─ outbound   status, proxy
//!                                    └─ serve      listen, api, auth, view, listener, metrics, webhooks
//!                        each step ──> its settings + diagnostics (file, line, help) ──> Config | Diagnostics
//! ```
//!
//! A few sections read another's result: `auth.oidc` defaults its redirect URL from
//! `view.public_url`, `view.require_token` needs a token or a provider, `kubernetes` is implied by
//! `state.backend: kubernetes`, and `decryption.secret` and `shards` need Kubernetes mode. The
//! checks the steps share (durations, TLS keys, relative paths) are the `reader::Reader`'s.

mod clusters;
mod outbound;
mod reader;
mod reconcile;
mod serve;
mod source;
#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use serde_saphyr::Spanned;

use crate::apply::Options;
use crate::diag::{Code, Diagnostic, Diagnostics};
use crate::yaml;
// Settings types live with the subsystems that use them; this module parses the file and hands
// them out. Re-exported so `config::X` keeps naming everything the file sets.
pub use crate::net::settings::{Proxy, Tls, read_secret};
pub use crate::report::{StatusConfig, StatusSink};
pub use crate::target::TargetConfig;
pub use crate::units::{parse_duration, parse_size};
pub use crate::verify::{Verify, VerifyMode};
// The settings this module defines, by section.
pub use clusters::{DEFAULT_NAMESPACE, KubernetesConfig, MAX_SHARDS, Sharding, StateBackend};
use clusters::{RawKubernetes, RawLeases, RawState, RawTarget};
use outbound::{RawProxy, RawStatus};
use reader::Reader;
pub use reconcile::AuditConfig;
use reconcile::{RawApply, RawAudit, RawDrift, RawRender};
pub use serve::{
    ApiToken, AuthConfig, DEFAULT_LISTEN, ListenerConfig, MAX_BODY, OIDC_CALLBACK, OidcConfig, PublicUrl, ViewConfig,
    Webhooks,
};
use serve::{RawApi, RawAuth, RawListener, RawMetrics, RawView, RawWebhooks};
pub use source::{Credentials, Decryption, RepoLocation, Repository};
use source::{RawDecryption, RawRepository};

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
        let cx = &mut Reader { file: &shown, base, diags: Diagnostics::new() };
        let resolve = cx.resolver();

        let apply = reconcile::apply(cx, raw.apply);
        let render_limits = reconcile::render(cx, &raw.render);
        let drift = reconcile::drift(cx, &raw.drift);
        let shutdown_timeout = cx.duration(&raw.shutdown_timeout, "shutdown_timeout", Duration::from_secs(30));
        let repository = source::repository(cx, raw.repository);
        let targets = clusters::targets(cx, raw.targets);
        let status = outbound::status(cx, raw.status);
        let listen = serve::listen(cx, raw.listen.as_ref());
        let proxy = outbound::proxy(cx, raw.proxy);
        let view = serve::view(cx, &raw.view);
        let api_tokens = serve::api_tokens(cx, &raw.api);
        let auth = serve::auth(cx, raw.auth, view.public_url.as_ref());
        serve::sign_in(cx, &view, &api_tokens, &auth);
        let listener = serve::listener(cx, &raw.listener);
        let state_backend = clusters::state_backend(cx, raw.state.as_ref());
        let kubernetes = clusters::kubernetes(cx, raw.kubernetes, state_backend);
        let decryption = source::decryption(cx, raw.decryption, kubernetes.is_some());
        let sharding = clusters::sharding(cx, raw.shards.as_ref(), raw.leases, state_backend);
        let audit = reconcile::audit(cx, &raw.audit);
        let metrics_token_file = serve::metrics_token_file(cx, &raw.metrics);
        let webhooks = serve::webhooks(cx, &raw.webhooks);

        let diags = std::mem::take(&mut cx.diags);
        diags.into_result(Config {
            audit,
            file: path.to_path_buf(),
            repository,
            targets,
            apply: apply.options,
            allow_namespaces: apply.allow_namespaces,
            render_limits,
            cluster_concurrency: apply.cluster_concurrency,
            reconcile_timeout: apply.reconcile_timeout,
            state_dir: raw.state_dir.as_deref().map(resolve).unwrap_or_else(|| base.join("state")),
            listen,
            api_token_file: api_tokens.first().map(|t| t.file.clone()),
            api_tokens,
            auth,
            metrics_token_file,
            webhooks,
            drift_interval: drift.interval,
            drift_watch: drift.watch,
            drift_resync: drift.resync,
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
