//! The daemon's HTTP side on its listen address: endpoints for machines, and the status view.
//!
//! ```text
//!   GET  /healthz /readyz                                   open: up, ready or not; /readyz's detail is a read
//!   GET  /metrics                                           read, or metrics.token_file's token (then needed)
//!   POST /hooks/{github,gitea,forgejo,gitlab}               open: the payload's signature is checked
//!   GET  /api/v1/revision                                   read: the head evaluated, loaded or rejected
//!   GET  /api/v1/clusters[/NAME]  /api/v1/rollouts[/NAME]   read
//!   GET  /api/v1/approvals?rollout=&wave=&tag=&all_pending= read: what approving that selection covers
//!   GET  /api/v1/audit?since=&cluster=&user=&limit=         read: the audit trail, newest first
//!   POST /api/v1/clusters/NAME/{approve,suspend,resume}     bearer token
//!   POST /api/v1/approvals                                  bearer token: a selection, revision and digest
//!   POST /api/v1/rollouts/NAME/{promote,pause,resume,abort} bearer token
//!   GET  /  /fragment/clusters  /clusters/NAME[/pending]    read (the view, [`view`])
//!   GET  /rollouts[/NAME]                                   read
//!   POST /clusters/NAME/approve  /rollouts/NAME/promote     session + CSRF token, or bearer token
//!   POST /approvals                                         the same: a selection's pending updates
//!   POST /logout                                            session + CSRF token
//!   GET  /login  /assets/*, POST /login                     open (sign-in is throttled)
//!   GET  /login/oidc  /login/oidc/callback                  open: sign-in through the OpenID provider
//! ```
//!
//! In: TCP connections from whoever reaches the address — hostile until shown otherwise. A request
//! passes, outermost first: the listener's bounds ([`listener`]: connections in all and per client,
//! the time to send a request head), the `Host` check (for every endpoint: probes name the
//! address they reach, which it admits), the request timeout and the budget of body bytes in
//! memory ([`guard`]), and for everything but the open endpoints one authentication layer shared
//! by API and view ([`auth`]). "Read" needs a session or the API token only with
//! `view.require_token`. Out: JSON, HTML from templates with automatic escaping, and triggers to
//! the main loop. A webhook payload only ever triggers a fetch; its content is never used. What
//! the open endpoints say to anyone names no URL, path, cluster or error text.

pub mod api;
pub mod approve;
pub mod auth;
pub mod diff;
pub mod fleet;
pub mod guard;
pub mod listener;
pub mod oidc;
pub mod revoke;
pub mod rollouts;
pub mod session;
pub mod view;

use crate::daemon::store::Store as _;
use std::sync::Arc;

use axum::Extension;
use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::from_fn_with_state;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::{Value, json};
use subtle::ConstantTimeEq;
use tower_http::set_header::SetResponseHeaderLayer;
use tower_http::timeout::TimeoutLayer;
use tracing::{info, warn};

use super::{Shared, Trigger};
use crate::config::read_secret;
use auth::{Access, Audience, Auth, Viewer};
use guard::{BodyBudget, Hosts};

pub use listener::serve;

/// Request bodies larger than this are refused (GitHub caps its own at 25 MB; pushes are small).
/// Defined with the listener's settings, which are checked against it.
pub use crate::config::MAX_BODY;

/// What every handler sees: the daemon's shared state and the web layer's own.
pub struct App {
    pub shared: Arc<Shared>,
    pub auth: Auth,
    pub hosts: Hosts,
    pub budget: BodyBudget,
    pub pages: view::Pages,
    /// The fleet as the page and the paged API list last read it.
    pub fleet: fleet::SnapshotCache,
    /// Sign-in through the OpenID provider, when `auth.oidc` is configured.
    pub oidc: Option<oidc::Oidc>,
}

impl App {
    /// `local` is the address the listener is bound to (its port, when the config says 0).
    pub fn new(shared: Arc<Shared>, local: std::net::SocketAddr) -> App {
        let config = &shared.config;
        App {
            auth: Auth::new(config),
            hosts: Hosts::new(local, config.view.public_url.as_ref(), &config.listener.allowed_hosts),
            budget: BodyBudget::new(config.listener.max_body_bytes_in_flight),
            pages: view::Pages::new(),
            fleet: fleet::SnapshotCache::default(),
            oidc: config.auth.oidc.clone().map(oidc::Oidc::new),
            shared,
        }
    }
}

/// Every route, with the layers that guard them.
pub fn router(app: Arc<App>) -> Router {
    let config = &app.shared.config;
    let open = Router::new().route("/healthz", get(healthz)).route("/hooks/{provider}", post(webhook));
    let probe = Router::new().route("/readyz", get(readyz));
    let scrape = Router::new().route("/metrics", get(metrics));
    let api_read = Router::new()
        .route("/api/v1/revision", get(api::revision))
        .route("/api/v1/clusters", get(api::clusters))
        .route("/api/v1/clusters/{name}", get(api::cluster))
        .route("/api/v1/rollouts", get(api::rollouts))
        .route("/api/v1/rollouts/{name}", get(api::rollout))
        .route("/api/v1/approvals", get(api::selection))
        .route("/api/v1/audit", get(api::audit_log));
    let api_write = Router::new()
        .route("/api/v1/approvals", post(api::approve_selection))
        .route("/api/v1/clusters/{name}/{action}", post(api::act))
        .route("/api/v1/rollouts/{name}/{action}", post(api::act_on_rollout));
    let mut routes = open
        .merge(auth::guard(&app, probe, Access::Probe, Audience::Api))
        .merge(auth::guard(&app, scrape, Access::Metrics, Audience::Api))
        .merge(auth::guard(&app, api_read, Access::Read, Audience::Api))
        .merge(auth::guard(&app, api_write, Access::Write, Audience::Api));
    if config.view.enabled {
        routes = routes.merge(view::routes(&app));
    }
    routes
        .fallback(not_found)
        .with_state(app.clone())
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .layer(from_fn_with_state(app.clone(), guard::body_budget))
        .layer(TimeoutLayer::with_status_code(StatusCode::REQUEST_TIMEOUT, config.listener.request_timeout))
        .layer(from_fn_with_state(app, guard::check_host))
        // Every answer is what its Content-Type says, never sniffed into HTML.
        .layer(SetResponseHeaderLayer::if_not_present(
            header::X_CONTENT_TYPE_OPTIONS,
            header::HeaderValue::from_static("nosniff"),
        ))
}

/// JSON, pretty-printed as before (people read the API with curl).
pub fn json_reply(code: StatusCode, body: &Value) -> Response {
    let text = serde_json::to_vec_pretty(body).expect("a JSON value serialises");
    (code, [(header::CONTENT_TYPE, "application/json"), (header::CACHE_CONTROL, "no-store")], text).into_response()
}

pub fn error(code: StatusCode, message: impl std::fmt::Display) -> Response {
    json_reply(code, &json!({ "error": message.to_string() }))
}

fn text(code: StatusCode, body: impl Into<String>) -> Response {
    (code, [(header::CONTENT_TYPE, "text/plain; charset=utf-8")], body.into()).into_response()
}

async fn not_found() -> Response {
    error(StatusCode::NOT_FOUND, "no such endpoint")
}

async fn healthz() -> Response {
    text(StatusCode::OK, "ok\n")
}

/// Readiness ([`Shared::readiness`]: the first revision evaluated, a usable state database), as
/// text, or JSON for `strata status`. To whoever may read (a session or the API token, or anyone
/// without `view.require_token`) also why not, what the network is failing at and, in Kubernetes
/// mode, which shards this replica holds; to others (probes, and whoever else reaches the address)
/// `ready` or `not ready` and nothing more: the reasons name URLs, proxies and files.
async fn readyz(
    State(app): State<Arc<App>>,
    Extension(viewer): Extension<Option<Viewer>>,
    headers: HeaderMap,
) -> Response {
    let verdict = app.shared.readiness().map_err(|why| format!("not ready: {why}"));
    let json =
        headers.get(header::ACCEPT).and_then(|a| a.to_str().ok()).is_some_and(|a| a.contains("application/json"));
    let code = if verdict.is_ok() { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    if viewer.is_none() && app.auth.require_token {
        if json {
            return json_reply(code, &json!({ "ready": verdict.is_ok() }));
        }
        return text(code, if verdict.is_ok() { "ready\n" } else { "not ready\n" });
    }
    let (code, mut body) = app.shared.network.readiness(verdict.as_ref().map(|_| ()).map_err(String::as_str), json);
    if app.shared.config.state_backend == crate::config::StateBackend::Kubernetes {
        let view = app.shared.shards.view();
        if json {
            let mut value: Value = serde_json::from_str(&body).expect("readiness is JSON");
            value["shards"] = json!(view);
            body = serde_json::to_string_pretty(&value).expect("serialises");
        } else {
            body.push_str(&shards_line(&view));
        }
    }
    let code = StatusCode::from_u16(code).expect("200 or 503");
    let content_type = if json { "application/json" } else { "text/plain; charset=utf-8" };
    (code, [(header::CONTENT_TYPE, content_type), (header::CACHE_CONTROL, "no-store")], body).into_response()
}

/// `shards: 3 of 8 held (0, 4, 6) by strata-7d9c-1a2b3c; 3 replicas`, and a failing Lease loop.
fn shards_line(view: &crate::daemon::shards::View) -> String {
    let held: Vec<String> = view.held.iter().map(u32::to_string).collect();
    let mut line = format!(
        "shards: {} of {} held ({}) by {}; {} replica{}\n",
        view.held.len(),
        view.shards,
        if held.is_empty() { "none: serving the view and the API".to_string() } else { held.join(", ") },
        view.identity,
        view.replicas,
        if view.replicas == 1 { "" } else { "s" },
    );
    if let Some(problem) = &view.problem {
        line.push_str(&format!("leases: {problem}\n"));
    }
    line
}

/// The Prometheus exposition, with the per-cluster series set from the state first (from the
/// fleet page's snapshot: one read of the state per change, whoever asks).
async fn metrics(State(app): State<Arc<App>>) -> Response {
    // A state database known broken is not read at every scrape (each read would count another
    // error of the kind it already reports): the per-cluster series keep their last values.
    if app.shared.store.usable() {
        match view::snapshot(&app).await {
            Ok(snapshot) => app.shared.metrics.clusters(snapshot.entries.iter().map(|e| {
                let healthy = e.state.health == Some(super::state::Health::Ready);
                (e.state.name.as_str(), e.sync(), healthy, e.state.drifted)
            })),
            Err(e) => warn!(error = %e, "/metrics: the per-cluster series keep their last values."),
        }
    }
    (
        [(header::CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")],
        app.shared.metrics.encode(),
    )
        .into_response()
}

/// `sha256=<hex>` (GitHub) or `<hex>` (Gitea, Forgejo): HMAC-SHA256 of the body, compared in
/// constant time.
pub fn valid_hmac(secret: &[u8], body: &[u8], signature: &str) -> bool {
    use hmac::{Hmac, KeyInit, Mac};
    let hex = signature.strip_prefix("sha256=").unwrap_or(signature);
    let Some(expected) = decode_hex(hex) else { return false };
    let Ok(mut mac) = Hmac::<sha2::Sha256>::new_from_slice(secret) else { return false };
    mac.update(body);
    mac.verify_slice(&expected).is_ok()
}

fn decode_hex(hex: &str) -> Option<Vec<u8>> {
    // from_str_radix alone would take "+f" for 0f: only hex digits make a signature.
    if !hex.len().is_multiple_of(2) || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    (0..hex.len()).step_by(2).map(|i| u8::from_str_radix(hex.get(i..i + 2)?, 16).ok()).collect()
}

async fn webhook(
    State(app): State<Arc<App>>,
    Path(provider): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let shared = &app.shared;
    let hooks = &shared.config.webhooks;
    let (secret_file, provider) = match provider.as_str() {
        "github" => (&hooks.github_secret_file, "github"),
        "gitea" => (&hooks.gitea_secret_file, "gitea"),
        "forgejo" => (&hooks.gitea_secret_file, "forgejo"),
        "gitlab" => (&hooks.gitlab_token_file, "gitlab"),
        _ => return error(StatusCode::NOT_FOUND, "unknown webhook provider (github, gitea, forgejo, gitlab)"),
    };
    let Some(secret_file) = secret_file else {
        return error(StatusCode::NOT_FOUND, "this webhook is not configured on this host");
    };
    let secret = match read_secret(secret_file) {
        Ok(s) => s,
        Err(e) => {
            warn!(error = %e, "Webhook secret unreadable.");
            return error(StatusCode::INTERNAL_SERVER_ERROR, "webhook secret unreadable");
        }
    };
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let (signature, event) = match provider {
        "github" => (header("x-hub-signature-256"), header("x-github-event")),
        "gitlab" => (header("x-gitlab-token"), header("x-gitlab-event")),
        _ => (
            header("x-gitea-signature").or(header("x-forgejo-signature")),
            header("x-gitea-event").or(header("x-forgejo-event")),
        ),
    };
    let authentic = match (provider, signature) {
        (_, None) => false,
        _ if secret.is_empty() => false,
        ("gitlab", Some(token)) => token.as_bytes().ct_eq(secret.as_bytes()).into(),
        (_, Some(signature)) => valid_hmac(secret.as_bytes(), &body, signature),
    };
    let count = |result: &str| {
        shared
            .metrics
            .webhooks
            .get_or_create(&super::metrics::ProviderLabel {
                provider: provider.to_string(),
                result: result.to_string(),
            })
            .inc();
    };
    if !authentic {
        count("unauthorized");
        warn!(provider, "Webhook with a missing or wrong signature refused.");
        return error(StatusCode::UNAUTHORIZED, "missing or invalid signature");
    }
    let push = matches!(event, Some("push") | Some("Push Hook"));
    if !push {
        count("ignored");
        return json_reply(StatusCode::OK, &json!({ "ignored": event }));
    }
    count("accepted");
    info!(provider, "Push webhook: fetching now.");
    let _ = shared.triggers.try_send(Trigger::Fetch(format!("{provider} webhook")));
    json_reply(StatusCode::ACCEPTED, &json!({ "fetch": "triggered" }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hmac_signatures_as_github_and_gitea_send_them() {
        // The example from GitHub's "Validating webhook deliveries" documentation.
        let secret = b"It's a Secret to Everybody";
        let body = b"Hello, World!";
        let signature = "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17";
        assert!(valid_hmac(secret, body, signature));
        assert!(valid_hmac(secret, body, signature.trim_start_matches("sha256=")));
        assert!(!valid_hmac(secret, b"Hello, World?", signature));
        assert!(!valid_hmac(b"wrong", body, signature));
        assert!(!valid_hmac(secret, body, "sha256=zz"));
        // Found by the `webhook` fuzz target: `+9` stood in for the byte 09.
        let right = "0943ba6f97ab9adee8db6cbbd77e3c4a0fe0419ae481b1fd0ea349f0fbd54c8e";
        assert!(valid_hmac(b"u", b"", right));
        assert!(!valid_hmac(b"u", b"", &right.replacen('0', "+", 1)));
    }
}
