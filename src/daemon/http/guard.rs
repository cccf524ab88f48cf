//! Per-request bounds before any handler runs: which `Host` the request is for, and how many
//! body bytes all requests together may hold in memory.
//!
//! DNS rebinding turns a victim's browser into a client of a loopback-only daemon: a page of
//! `evil.example` re-resolves its own name to 127.0.0.1 and reads the answers. Its requests carry
//! `Host: evil.example`, so only hosts the operator configured are answered: the listen address,
//! localhost by name and address (with the port), the address the connection came in on, the
//! host of `view.public_url`, and `listener.allowed_hosts`. Others get 421 — at every endpoint,
//! probes included: Kubernetes' probes name the pod address they connect to, which is the address
//! the connection came in on.

use std::collections::HashSet;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use tokio::sync::Semaphore;
use tracing::{debug, warn};

use super::{App, MAX_BODY};
use crate::config::PublicUrl;

/// The two ends of the connection a request came on; the listener adds it to every request.
#[derive(Clone, Copy, Debug)]
pub struct ConnInfo {
    pub peer: SocketAddr,
    pub local: SocketAddr,
}

/// Who a client is, for per-client bounds: its address, and for IPv6 its /64, which one host
/// usually has to itself (and can take any address of).
pub fn client_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6((v6.to_bits() & !((1u128 << 64) - 1)).into()),
        },
        v4 => v4,
    }
}

/// The `Host` values this daemon answers to (lower case, `host` or `host:port`).
pub struct Hosts {
    allowed: HashSet<String>,
    /// When a refusal was last logged as a warning (seconds since the Unix epoch).
    warned: AtomicU64,
}

/// `ip:port` and `ip`, as a `Host` header names an address (IPv6 in brackets).
fn socket_forms(addr: SocketAddr) -> [String; 2] {
    let host = match addr.ip() {
        IpAddr::V4(ip) => ip.to_string(),
        IpAddr::V6(ip) => format!("[{ip}]"),
    };
    [format!("{host}:{}", addr.port()), host]
}

impl Hosts {
    pub fn new(listen: SocketAddr, public: Option<&PublicUrl>, extra: &[String]) -> Hosts {
        let port = listen.port();
        let mut allowed: HashSet<String> = extra.iter().map(|h| h.to_ascii_lowercase()).collect();
        // Listening on 0.0.0.0 or [::], that is what local clients (the CLI) may name.
        allowed.extend(socket_forms(listen));
        for name in ["localhost", "127.0.0.1", "[::1]"] {
            allowed.insert(format!("{name}:{port}"));
            if port == 80 {
                allowed.insert(name.to_string());
            }
        }
        if let Some(url) = public {
            allowed.insert(format!("{}:{}", url.host, url.port));
            if url.port == if url.https { 443 } else { 80 } {
                allowed.insert(url.host.clone());
            }
        }
        Hosts { allowed, warned: AtomicU64::new(0) }
    }

    /// Whether a request for `host` that came in on `local` is for this daemon.
    pub fn allows(&self, host: &str, local: SocketAddr) -> bool {
        let host = host.to_ascii_lowercase();
        // An IP literal naming the address the connection reached cannot be a rebound name. On a
        // `[::]` listener an IPv4 client reaches `::ffff:a.b.c.d` and names `a.b.c.d`.
        let canonical = SocketAddr::new(local.ip().to_canonical(), local.port());
        self.allowed.contains(&host) || socket_forms(local).contains(&host) || socket_forms(canonical).contains(&host)
    }
}

/// Whether a browser says the request comes from a page of this daemon: an `Origin` naming one
/// of its hosts (any scheme: a TLS proxy may stand in front), and no `Sec-Fetch-Site: cross-site`.
/// A request without `Origin` is not from a browser form of another site (browsers send it with
/// every cross-origin POST).
pub fn from_this_site(app: &App, headers: &axum::http::HeaderMap, conn: &ConnInfo) -> bool {
    let origin = match headers.get(header::ORIGIN).map(|o| o.to_str()) {
        None => true,
        Some(Ok(origin)) => origin
            .split_once("://")
            .is_some_and(|(_, authority)| !authority.contains('/') && app.hosts.allows(authority, conn.local)),
        Some(Err(_)) => false,
    };
    let cross_site = headers.get("sec-fetch-site").is_some_and(|s| s.as_bytes() == b"cross-site");
    origin && !cross_site
}

pub async fn check_host(State(app): State<Arc<App>>, req: Request, next: Next) -> Response {
    let Some(conn) = req.extensions().get::<ConnInfo>().copied() else {
        return refuse(StatusCode::INTERNAL_SERVER_ERROR, "the connection's addresses are unknown");
    };
    let mut hosts = req.headers().get_all(header::HOST).iter();
    let (host, more) = (hosts.next(), hosts.next());
    let host = match (host.and_then(|h| h.to_str().ok()), more) {
        (Some(host), None) => host,
        (None, None) => return refuse(StatusCode::BAD_REQUEST, "a request needs a Host header"),
        _ => return refuse(StatusCode::BAD_REQUEST, "a request needs exactly one readable Host header"),
    };
    // An absolute request target (`GET http://name/ HTTP/1.1`) names the host too: both must pass.
    let target = req.uri().authority().map(|a| a.as_str());
    if !app.hosts.allows(host, conn.local) || target.is_some_and(|t| !app.hosts.allows(t, conn.local)) {
        // Once a minute at most: a forge or proxy sending a name nobody allowed is worth a
        // warning; a flood of forged names is not worth a flood of lines.
        let now = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
        let last = app.hosts.warned.load(Ordering::Relaxed);
        if now >= last + 60
            && app.hosts.warned.compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed).is_ok()
        {
            warn!(host = ?host, client = %conn.peer, "Refused a request for a host this daemon does not serve (421); allow it with view.public_url or listener.allowed_hosts if it is yours.");
        } else {
            debug!(host = ?host, client = %conn.peer, "Refused a request for a host this daemon does not serve.");
        }
        return refuse(
            StatusCode::MISDIRECTED_REQUEST,
            "this daemon does not serve that host; an operator adds it to listener.allowed_hosts or sets view.public_url",
        );
    }
    next.run(req).await
}

fn refuse(code: StatusCode, message: &str) -> Response {
    let mut response = super::error(code, message);
    response.headers_mut().insert(header::CONNECTION, HeaderValue::from_static("close"));
    response
}

/// Bytes of request bodies in memory at once, over every connection.
pub struct BodyBudget {
    bytes: Arc<Semaphore>,
}

impl BodyBudget {
    pub fn new(bytes: usize) -> BodyBudget {
        BodyBudget { bytes: Arc::new(Semaphore::new(bytes.min(Semaphore::MAX_PERMITS))) }
    }
}

/// Reserves what a request's body may take before anything reads it — its Content-Length, or a
/// whole [`MAX_BODY`] when it is chunked — and holds it until the answer is made. When the budget
/// is spent the request is refused with 503 at once, instead of queueing bodies in memory.
pub async fn body_budget(State(app): State<Arc<App>>, req: Request, next: Next) -> Response {
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    let chunked = req.headers().contains_key(header::TRANSFER_ENCODING);
    let need = match declared {
        _ if chunked => MAX_BODY as u64,
        Some(n) => n,
        None => 0,
    };
    if need == 0 {
        return next.run(req).await;
    }
    if need > MAX_BODY as u64 {
        return refuse(StatusCode::PAYLOAD_TOO_LARGE, "body larger than 1 MiB");
    }
    let Ok(permit) = app.budget.bytes.clone().try_acquire_many_owned(need as u32) else {
        let mut response = refuse(StatusCode::SERVICE_UNAVAILABLE, "too many request bodies in flight; try again");
        response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        return response;
    };
    let response = next.run(req).await;
    drop(permit);
    response.into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_the_operator_configured_and_no_others() {
        let public = PublicUrl { https: true, host: "strata.example.com".into(), port: 443 };
        let hosts = Hosts::new("127.0.0.1:9477".parse().unwrap(), Some(&public), &["strata.internal:8080".into()]);
        let local: SocketAddr = "127.0.0.1:9477".parse().unwrap();
        for ok in [
            "127.0.0.1:9477",
            "127.0.0.1",
            "localhost:9477",
            "LOCALHOST:9477",
            "[::1]:9477",
            "strata.example.com",
            "strata.example.com:443",
            "strata.internal:8080",
        ] {
            assert!(hosts.allows(ok, local), "{ok}");
        }
        for refused in [
            "evil.example",
            "localhost",
            "localhost:80",
            "localhost.:9477",
            "127.0.0.1.nip.io:9477",
            "strata.internal",
            "strata.example.com:8443",
            "localhost:9477@evil.example",
            "",
        ] {
            assert!(!hosts.allows(refused, local), "{refused}");
        }
        // Listening everywhere: the address a connection reached is its own name.
        let any = Hosts::new("0.0.0.0:9477".parse().unwrap(), None, &[]);
        assert!(any.allows("10.1.2.3:9477", "10.1.2.3:9477".parse().unwrap()));
        assert!(any.allows("0.0.0.0:9477", "127.0.0.1:9477".parse().unwrap()));
        assert!(!any.allows("10.1.2.4:9477", "10.1.2.3:9477".parse().unwrap()));
        // A probe of an IPv4 pod address reaching a `[::]` listener.
        let v6 = Hosts::new("[::]:9477".parse().unwrap(), None, &[]);
        assert!(v6.allows("10.1.2.3:9477", "[::ffff:10.1.2.3]:9477".parse().unwrap()));
        assert!(v6.allows("[fd00::3]:9477", "[fd00::3]:9477".parse().unwrap()));
        assert!(!v6.allows("10.1.2.4:9477", "[::ffff:10.1.2.3]:9477".parse().unwrap()));
    }
}
