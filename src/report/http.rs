//! Sending forge requests through strata's one client ([`crate::net`]: proxy, `status.ca_file`,
//! client certificate, connect/read/total timeouts), the token added at the last moment and never
//! logged, and rate-limit answers turned into a wait.

use std::time::Duration;

use http_body_util::Full;
use hyper::body::Bytes;
use serde_json::Value;

use super::{Forge, Request};

#[derive(Clone)]
pub struct Client {
    inner: crate::net::Client,
}

#[derive(Debug)]
pub struct Response {
    pub status: u16,
    pub headers: http::HeaderMap,
    pub body: Value,
}

/// Why a delivery did not succeed, and what to do.
#[derive(Debug, PartialEq, Eq)]
pub enum Failure {
    /// Try again after this long (rate limits, Retry-After).
    Later(Duration, String),
    /// Credentials, permissions or the repository are wrong; retrying alone will not help.
    Refused(String),
    /// The forge is down or unreachable, or answered 5xx: retry with backoff.
    Transient(String),
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Failure::Later(wait, m) => write!(f, "{m} (retrying in {}s)", wait.as_secs()),
            Failure::Refused(m) | Failure::Transient(m) => f.write_str(m),
        }
    }
}

impl Client {
    /// Over `inner`, built from the host config's `status` TLS settings and proxy.
    pub fn new(inner: crate::net::Client) -> Client {
        Client { inner }
    }

    /// The client for `status`: its TLS settings, the host's proxy, forge timeouts.
    pub fn for_status(
        network: &crate::net::Network,
        tls: &crate::net::settings::Tls,
    ) -> Result<Client, crate::net::SetupError> {
        let inner = network.client(tls, "status.", crate::net::Settings::status(), crate::net::Timeouts::FORGE)?;
        Ok(Client::new(inner))
    }

    /// Sends `request` authenticated with `token`, and sorts the answer.
    pub async fn send(&self, forge: &Forge, request: &Request, token: &str) -> Result<Response, Failure> {
        let mut builder = hyper::Request::builder().method(request.method).uri(&request.url);
        for (name, value) in &request.headers {
            builder = builder.header(*name, value);
        }
        let (name, value) = forge.auth_header(token);
        builder = builder.header(name, value);
        let body = request.body.as_ref().map(|b| b.to_string()).unwrap_or_default();
        let http_request =
            builder.body(Full::new(Bytes::from(body))).map_err(|e| Failure::Refused(format!("bad request: {e}")))?;
        let what = format!("{} {}", request.method, request.url);
        // Certificates, proxies and timeouts: the text says what failed and what to check.
        let (parts, bytes) = self.inner.exchange(http_request).await.map_err(|e| Failure::Transient(e.to_string()))?;
        let status = parts.status.as_u16();
        let headers = parts.headers;
        let body: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        let message = message(&body);
        if let Some(wait) = rate_limited(status, &headers) {
            return Err(Failure::Later(wait, format!("{what}: rate limited ({status})")));
        }
        match status {
            200..=299 => Ok(Response { status, headers, body }),
            401 => Err(Failure::Refused(format!(
                "{what}: 401 unauthorized — the token was refused; check status.token_file {message}"
            ))),
            403 => Err(Failure::Refused(format!(
                "{what}: 403 forbidden — the token lacks permission to write commit statuses on {} {message}",
                forge.repo
            ))),
            404 => Err(Failure::Refused(format!(
                "{what}: 404 — repository {} or the commit not found, or the token cannot see it; check status.repo and status.api",
                forge.repo
            ))),
            500..=599 => Err(Failure::Transient(format!("{what}: {status} {message}"))),
            _ => Err(Failure::Refused(format!("{what}: {status} {message}"))),
        }
    }
}

/// What a forge's error answer says: GitHub's `message` and each `errors[].message` ("Validation
/// Failed: Body is too long (maximum is 65536 characters)"), GitLab's `message`, Bitbucket
/// Cloud's `error.message`, Bitbucket Server's `errors[].message`.
fn message(body: &Value) -> String {
    let mut parts: Vec<String> = Vec::new();
    if let Some(m) = body["message"].as_str().or(body["error"]["message"].as_str()) {
        parts.push(m.to_string());
    } else if !body["message"].is_null() {
        // GitLab's validation errors: `{"message": {"note": ["is too long (…)"]}}`.
        parts.push(body["message"].to_string());
    }
    for e in body["errors"].as_array().into_iter().flatten() {
        if let Some(m) = e["message"].as_str().filter(|m| !parts.iter().any(|p| p == m)) {
            parts.push(m.to_string());
        }
    }
    parts.join(": ")
}

fn header_u64(headers: &http::HeaderMap, name: &str) -> Option<u64> {
    headers.get(name)?.to_str().ok()?.trim().parse().ok()
}

/// How long a rate-limited answer asks to wait: `Retry-After` (GitHub secondary limits, 429s),
/// else `x-ratelimit-remaining: 0` with `x-ratelimit-reset` (epoch seconds, GitHub) or
/// `ratelimit-reset` (GitLab).
pub fn rate_limited(status: u16, headers: &http::HeaderMap) -> Option<Duration> {
    if !matches!(status, 403 | 429) {
        return None;
    }
    if let Some(seconds) = header_u64(headers, "retry-after") {
        return Some(Duration::from_secs(seconds.max(1)));
    }
    let remaining = header_u64(headers, "x-ratelimit-remaining").or(header_u64(headers, "ratelimit-remaining"));
    if remaining == Some(0) {
        let reset = header_u64(headers, "x-ratelimit-reset").or(header_u64(headers, "ratelimit-reset"))?;
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
        return Some(Duration::from_secs(reset.saturating_sub(now).max(1)));
    }
    // A 429 without advice: a minute, as GitHub's documentation suggests.
    (status == 429).then_some(Duration::from_secs(60))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> http::HeaderMap {
        let mut h = http::HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, v.parse().unwrap());
        }
        h
    }

    #[test]
    fn rate_limits_are_read_from_the_headers_forges_send() {
        assert_eq!(rate_limited(403, &headers(&[("retry-after", "30")])), Some(Duration::from_secs(30)));
        assert_eq!(rate_limited(429, &headers(&[])), Some(Duration::from_secs(60)));
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
        let reset = (now + 120).to_string();
        let wait =
            rate_limited(403, &headers(&[("x-ratelimit-remaining", "0"), ("x-ratelimit-reset", &reset)])).unwrap();
        assert!(wait >= Duration::from_secs(118) && wait <= Duration::from_secs(120), "{wait:?}");
        assert_eq!(
            rate_limited(403, &headers(&[("x-ratelimit-remaining", "12")])),
            None,
            "a plain 403 is a permission problem"
        );
        assert_eq!(rate_limited(200, &headers(&[("retry-after", "5")])), None);
    }
}
