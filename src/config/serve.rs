//! What the daemon serves: `listen` (the address), `api` (tokens), `auth` (who may act, sign-in
//! through an OpenID provider), `view` (the browser view), `listener` (bounds on HTTP clients),
//! `metrics` and `webhooks` (the secrets that open them).
//!
//! ```text
//!   view.public_url ──> auth.oidc's redirect URL (when not given)
//!   api tokens + auth.oidc ──> view.require_token has someone to let in
//! ```

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;
use serde_saphyr::Spanned;

use super::reader::{RawTls, Reader, yes};
use super::{Tls, parse_size};
use crate::diag::{Code, Diagnostic};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawView {
    #[serde(default = "yes")]
    enabled: bool,
    #[serde(default)]
    require_token: bool,
    #[serde(default)]
    public_url: Option<Spanned<String>>,
}

impl Default for RawView {
    fn default() -> Self {
        RawView { enabled: true, require_token: false, public_url: None }
    }
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawListener {
    #[serde(default)]
    allowed_hosts: Vec<Spanned<String>>,
    header_timeout: Option<Spanned<String>>,
    request_timeout: Option<Spanned<String>>,
    max_connections: Option<usize>,
    max_connections_per_client: Option<usize>,
    max_body_bytes_in_flight: Option<Spanned<String>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawApi {
    token_file: Option<String>,
    #[serde(default)]
    tokens: Vec<Spanned<RawToken>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawToken {
    name: String,
    token_file: String,
    #[serde(default)]
    groups: Vec<String>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawAuth {
    #[serde(default)]
    oidc: Option<Spanned<RawOidc>>,
    #[serde(default)]
    write_groups: Option<Vec<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawOidc {
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
pub(super) struct RawMetrics {
    token_file: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawWebhooks {
    github_secret_file: Option<String>,
    gitea_secret_file: Option<String>,
    gitlab_token_file: Option<String>,
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

/// The largest request body the listener reads (1 MiB): every webhook and API body fits.
pub const MAX_BODY: usize = 1024 * 1024;

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

fn loopback(url: &url::Url) -> bool {
    match url.host() {
        Some(url::Host::Domain(d)) => d == "localhost",
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        None => false,
    }
}

pub const DEFAULT_LISTEN: &str = "127.0.0.1:9477";

/// `listen`: HOST:PORT, [`DEFAULT_LISTEN`] unless given.
pub(super) fn listen(cx: &mut Reader, raw: Option<&Spanned<String>>) -> SocketAddr {
    match raw {
        None => DEFAULT_LISTEN.parse().expect("valid default"),
        Some(l) => l.value.parse().unwrap_or_else(|_| {
            cx.schema(
                l.referenced.line() as usize,
                format!("listen `{}` is not an address", l.value),
                "write HOST:PORT, e.g. 127.0.0.1:9477",
            );
            DEFAULT_LISTEN.parse().expect("valid default")
        }),
    }
}

/// `view`: on unless turned off; its public URL, checked.
pub(super) fn view(cx: &mut Reader, raw: &RawView) -> ViewConfig {
    let public_url = raw.public_url.as_ref().and_then(|u| {
        parse_public_url(&u.value)
            .map_err(|problem| {
                cx.schema(
                    u.referenced.line() as usize,
                    format!("view.public_url `{}` {problem}", u.value),
                    "write the URL people open, e.g. https://strata.example.com",
                )
            })
            .ok()
    });
    ViewConfig { enabled: raw.enabled, require_token: raw.require_token, public_url }
}

/// `api.token_file` (the shared token, named `api`, first) and `api.tokens`, checked: names
/// valid and distinct.
pub(super) fn api_tokens(cx: &mut Reader, raw: &RawApi) -> Vec<ApiToken> {
    let resolve = cx.resolver();
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
            cx.schema(line, problem, "name each token once, in letters, digits, -, _, . or @ (up to 63): tokens: [{ name: ci, token_file: ci-token, groups: [deployers] }]");
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

/// `auth`: the write groups as written, and the provider checked against the view's URL.
pub(super) fn auth(cx: &mut Reader, raw: RawAuth, public: Option<&PublicUrl>) -> AuthConfig {
    AuthConfig { oidc: raw.oidc.map(|o| oidc(cx, o, public)), write_groups: raw.write_groups }
}

/// `auth.oidc`, checked: an https issuer (http only on loopback, for tests), a redirect URL on
/// this view (from `view.public_url` when not given).
fn oidc(cx: &mut Reader, raw: Spanned<RawOidc>, public: Option<&PublicUrl>) -> OidcConfig {
    let resolve = cx.resolver();
    let file = cx.file;
    let line = raw.referenced.line() as usize;
    let raw = raw.value;
    let diags = &mut cx.diags;
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
    let tls = cx.tls(
        line,
        "auth.oidc",
        RawTls { ca_file: raw.ca_file, system_roots: raw.system_roots, client_cert_file: None, client_key_file: None },
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

/// Across `view`, `api` and `auth`: a view that asks for a token must have a way to sign in.
pub(super) fn sign_in(cx: &mut Reader, view: &ViewConfig, api_tokens: &[ApiToken], auth: &AuthConfig) {
    if view.require_token && api_tokens.is_empty() && auth.oidc.is_none() {
        cx.diags.push(
            Diagnostic::new(
                Code::Schema,
                "view.require_token needs api.token_file, api.tokens or auth.oidc: nobody could sign in",
            )
            .in_file(cx.file)
            .help("set api: { token_file: PATH } to the file holding the API token"),
        );
    }
}

/// `listener`: allowed hosts, timeouts longer than 0, a body budget of at least one body.
pub(super) fn listener(cx: &mut Reader, raw: &RawListener) -> ListenerConfig {
    let defaults = ListenerConfig::default();
    let mut allowed_hosts = Vec::new();
    for host in &raw.allowed_hosts {
        let value = host.value.trim().to_ascii_lowercase();
        if valid_host(&value) {
            allowed_hosts.push(value);
        } else {
            cx.schema(
                host.referenced.line() as usize,
                format!("listener.allowed_hosts: `{}` is not a host", host.value),
                "write what clients send as Host: a name or address with an optional port, e.g. strata.internal:9477",
            );
        }
    }
    let r = raw;
    let header_timeout = cx.duration(&r.header_timeout, "listener.header_timeout", defaults.header_timeout);
    let request_timeout = cx.duration(&r.request_timeout, "listener.request_timeout", defaults.request_timeout);
    let max_body_bytes_in_flight = match &r.max_body_bytes_in_flight {
        None => defaults.max_body_bytes_in_flight,
        Some(v) => match parse_size(&v.value) {
            Some(n) if n >= MAX_BODY && n <= u32::MAX as usize => n,
            _ => {
                cx.schema(
                    v.referenced.line() as usize,
                    format!("listener.max_body_bytes_in_flight `{}` is not a size from 1MiB to 4GiB", v.value),
                    "write sizes like 16MiB (at least one whole webhook body, 1MiB)",
                );
                defaults.max_body_bytes_in_flight
            }
        },
    };
    for (what, timeout) in [("header_timeout", header_timeout), ("request_timeout", request_timeout)] {
        if timeout.is_zero() {
            cx.diags.push(
                Diagnostic::new(Code::Schema, format!("listener.{what} must be longer than 0"))
                    .in_file(cx.file)
                    .help("write durations like 10s"),
            );
        }
    }
    ListenerConfig {
        allowed_hosts,
        header_timeout,
        request_timeout,
        max_connections: r.max_connections.unwrap_or(defaults.max_connections).max(1),
        max_connections_per_client: r.max_connections_per_client.unwrap_or(defaults.max_connections_per_client).max(1),
        max_body_bytes_in_flight,
    }
}

/// `metrics`: the token that opens `/metrics` alone.
pub(super) fn metrics_token_file(cx: &Reader, raw: &RawMetrics) -> Option<PathBuf> {
    raw.token_file.as_deref().map(cx.resolver())
}

/// `webhooks`: the secrets each forge's webhook is checked with.
pub(super) fn webhooks(cx: &Reader, raw: &RawWebhooks) -> Webhooks {
    let resolve = cx.resolver();
    Webhooks {
        github_secret_file: raw.github_secret_file.as_deref().map(resolve),
        gitea_secret_file: raw.gitea_secret_file.as_deref().map(resolve),
        gitlab_token_file: raw.gitlab_token_file.as_deref().map(resolve),
    }
}
