//! The daemon's HTTP endpoints on its listen address.
//!
//! ```text
//!   GET  /healthz /readyz /metrics
//!   POST /hooks/github  /hooks/gitea  /hooks/gitlab        push events → fetch now (signature checked)
//!   GET  /api/v1/clusters[/NAME]                            status, pending update, drift, history
//!   POST /api/v1/clusters/NAME/{approve,suspend,resume}      bearer token required
//! ```
//!
//! A webhook payload only ever triggers a fetch; its content is never used.

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use http_body_util::{BodyExt, Full, Limited};
use hyper::body::{Bytes, Incoming};
use hyper::{Method, Request, Response, StatusCode};
use serde_json::{Value, json};
use subtle::ConstantTimeEq;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tracing::{info, warn};

use super::{Shared, Trigger};
use crate::config::read_secret;

/// Webhook bodies larger than this are refused (GitHub caps its own at 25 MB; pushes are small).
pub const MAX_BODY: usize = 1024 * 1024;

type Reply = Response<Full<Bytes>>;

fn json_reply(code: StatusCode, body: &Value) -> Reply {
    Response::builder()
        .status(code)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(serde_json::to_vec_pretty(body).expect("serialises"))))
        .expect("valid response")
}

fn text(code: StatusCode, body: impl Into<String>) -> Reply {
    Response::builder()
        .status(code)
        .header("content-type", "text/plain; charset=utf-8")
        .body(Full::new(Bytes::from(body.into())))
        .expect("valid response")
}

fn error(code: StatusCode, message: &str) -> Reply {
    json_reply(code, &json!({ "error": message }))
}

pub async fn serve(listener: TcpListener, shared: Arc<Shared>, mut shutdown: watch::Receiver<bool>) {
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let Ok((stream, _)) = accepted else { continue };
                let shared = shared.clone();
                tokio::spawn(async move {
                    let io = hyper_util::rt::TokioIo::new(stream);
                    let service = hyper::service::service_fn(move |req| handle(shared.clone(), req));
                    let _ = hyper::server::conn::http1::Builder::new().serve_connection(io, service).await;
                });
            }
            _ = shutdown.changed() => return,
        }
    }
}

async fn handle(shared: Arc<Shared>, req: Request<Incoming>) -> Result<Reply, Infallible> {
    let req = match super::view::handle(&shared, req).await {
        Ok(page) => return Ok(page),
        Err(req) => req,
    };
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    let parts: Vec<&str> = path.split('/').filter(|p| !p.is_empty()).collect();
    let reply = match (&method, parts.as_slice()) {
        (&Method::GET, ["healthz"]) => text(StatusCode::OK, "ok\n"),
        (&Method::GET, ["readyz"]) => {
            // With what the network is failing at, as text, or JSON for `strata status`.
            let json = header(&req, "accept").is_some_and(|a| a.contains("application/json"));
            let (code, body) = shared.network.readiness(shared.ready.load(Ordering::Relaxed), json);
            let code = StatusCode::from_u16(code).expect("200 or 503");
            if json { json_reply(code, &serde_json::from_str(&body).expect("JSON")) } else { text(code, body) }
        }
        (&Method::GET, ["metrics"]) => Response::builder()
            .header("content-type", "application/openmetrics-text; version=1.0.0; charset=utf-8")
            .body(Full::new(Bytes::from(shared.metrics.encode())))
            .expect("valid response"),
        (&Method::POST, ["hooks", provider]) => webhook(&shared, provider, req).await,
        (&Method::GET, ["api", "v1", "clusters"]) => clusters(&shared),
        (&Method::GET, ["api", "v1", "clusters", name]) => cluster(&shared, name),
        (&Method::POST, ["api", "v1", "clusters", name, action]) => {
            let name = name.to_string();
            let action = action.to_string();
            act(&shared, &name, &action, req).await
        }
        _ => error(StatusCode::NOT_FOUND, "no such endpoint"),
    };
    Ok(reply)
}

async fn read_body(req: Request<Incoming>) -> Result<Bytes, Reply> {
    match Limited::new(req.into_body(), MAX_BODY).collect().await {
        Ok(body) => Ok(body.to_bytes()),
        Err(e) if e.downcast_ref::<http_body_util::LengthLimitError>().is_some() => {
            Err(error(StatusCode::PAYLOAD_TOO_LARGE, "body larger than 1 MiB"))
        }
        Err(_) => Err(error(StatusCode::BAD_REQUEST, "unreadable body")),
    }
}

fn header<'a>(req: &'a Request<Incoming>, name: &str) -> Option<&'a str> {
    req.headers().get(name).and_then(|v| v.to_str().ok())
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
    if !hex.len().is_multiple_of(2) {
        return None;
    }
    (0..hex.len()).step_by(2).map(|i| u8::from_str_radix(hex.get(i..i + 2)?, 16).ok()).collect()
}

async fn webhook(shared: &Shared, provider: &str, req: Request<Incoming>) -> Reply {
    let hooks = &shared.config.webhooks;
    let secret_file = match provider {
        "github" => &hooks.github_secret_file,
        "gitea" | "forgejo" => &hooks.gitea_secret_file,
        "gitlab" => &hooks.gitlab_token_file,
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
    let (signature, event) = match provider {
        "github" => (
            header(&req, "x-hub-signature-256").map(str::to_string),
            header(&req, "x-github-event").map(str::to_string),
        ),
        "gitlab" => {
            (header(&req, "x-gitlab-token").map(str::to_string), header(&req, "x-gitlab-event").map(str::to_string))
        }
        _ => (
            header(&req, "x-gitea-signature").or(header(&req, "x-forgejo-signature")).map(str::to_string),
            header(&req, "x-gitea-event").or(header(&req, "x-forgejo-event")).map(str::to_string),
        ),
    };
    let body = match read_body(req).await {
        Ok(b) => b,
        Err(reply) => return reply,
    };
    let authentic = match (provider, &signature) {
        (_, None) => false,
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
    let push = matches!(event.as_deref(), Some("push") | Some("Push Hook"));
    if !push {
        count("ignored");
        return json_reply(StatusCode::OK, &json!({ "ignored": event }));
    }
    count("accepted");
    info!(provider, "Push webhook: fetching now.");
    let _ = shared.triggers.try_send(Trigger::Fetch(format!("{provider} webhook")));
    json_reply(StatusCode::ACCEPTED, &json!({ "fetch": "triggered" }))
}

fn clusters(shared: &Shared) -> Reply {
    let fleet = match shared.store.fleet() {
        Ok(f) => f,
        Err(e) => return error(StatusCode::INTERNAL_SERVER_ERROR, &e),
    };
    let tags = shared.tags.lock().expect("tags lock").clone();
    let rows: Vec<Value> = fleet
        .into_iter()
        .map(|(c, pending)| {
            json!({
                "cluster": c,
                "tags": tags.get(&c.name).cloned().unwrap_or_default(),
                "pending": pending.map(|p| json!({"head_revision": p.head_revision, "summary": p.summary, "hold": serde_json::from_str::<Value>(&p.hold).unwrap_or(Value::Null), "since": p.since})),
            })
        })
        .collect();
    json_reply(StatusCode::OK, &Value::Array(rows))
}

fn cluster(shared: &Shared, name: &str) -> Reply {
    let store = &shared.store;
    let state = match store.cluster(name) {
        Ok(Some(s)) => s,
        Ok(None) => return error(StatusCode::NOT_FOUND, &format!("no cluster named `{name}`")),
        Err(e) => return error(StatusCode::INTERNAL_SERVER_ERROR, &e),
    };
    let tags = shared.tags.lock().expect("tags lock").get(name).cloned().unwrap_or_default();
    json_reply(
        StatusCode::OK,
        &json!({
            "cluster": state,
            "tags": tags,
            "pending": store.pending(name).ok().flatten(),
            "drift": store.drift(name).unwrap_or_default(),
            "history": store.history(name, 50).unwrap_or_default(),
            "approvals": store.approvals(name).unwrap_or_default(),
        }),
    )
}

async fn act(shared: &Shared, name: &str, action: &str, req: Request<Incoming>) -> Reply {
    let Some(token_file) = &shared.config.api_token_file else {
        return error(
            StatusCode::FORBIDDEN,
            "this daemon has no API token configured (api.token_file), so it takes no actions",
        );
    };
    let token = match read_secret(token_file) {
        Ok(t) => t,
        Err(e) => return error(StatusCode::INTERNAL_SERVER_ERROR, &e),
    };
    let given = header(&req, "authorization").and_then(|h| h.strip_prefix("Bearer ")).unwrap_or("");
    if token.is_empty() || !bool::from(given.as_bytes().ct_eq(token.as_bytes())) {
        return error(StatusCode::UNAUTHORIZED, "missing or wrong bearer token");
    }
    let body = match read_body(req).await {
        Ok(b) => b,
        Err(reply) => return reply,
    };
    let by = serde_json::from_slice::<Value>(&body).ok().and_then(|v| v["by"].as_str().map(str::to_string));
    let by = by.filter(|b| !b.trim().is_empty()).unwrap_or_else(|| "api".to_string());
    match shared.store.cluster(name) {
        Ok(Some(_)) => {}
        Ok(None) => return error(StatusCode::NOT_FOUND, &format!("no cluster named `{name}`")),
        Err(e) => return error(StatusCode::INTERNAL_SERVER_ERROR, &e),
    }
    match action {
        "approve" => {
            let pending = match shared.store.pending(name) {
                Ok(Some(p)) => p,
                Ok(None) => return error(StatusCode::CONFLICT, &format!("`{name}` has no pending update to approve")),
                Err(e) => return error(StatusCode::INTERNAL_SERVER_ERROR, &e),
            };
            match shared.store.approve(name, &pending.head_revision, &by) {
                Ok(approval) => {
                    info!(cluster = name, revision = %pending.head_revision, by = %by, "Pending update approved.");
                    shared.touch();
                    let _ = shared.triggers.try_send(Trigger::Reevaluate(format!("approval of {name}")));
                    json_reply(StatusCode::ACCEPTED, &json!(approval))
                }
                Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, &e),
            }
        }
        "suspend" | "resume" => {
            let suspend = action == "suspend";
            match shared.store.set_suspended(name, suspend) {
                Ok(()) => {
                    info!(cluster = name, by = %by, "{}", if suspend { "Suspended." } else { "Resumed." });
                    shared.touch();
                    let _ = shared.triggers.try_send(Trigger::Reevaluate(format!("{action} of {name}")));
                    json_reply(StatusCode::OK, &json!({ "cluster": name, "suspended": suspend }))
                }
                Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, &e),
            }
        }
        _ => error(StatusCode::NOT_FOUND, "actions are approve, suspend and resume"),
    }
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
    }
}
