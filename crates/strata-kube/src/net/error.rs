//! Network failures people can act on: each says what failed, for which host, and which setting
//! to check. A [`Failure`] is made where it happens (resolving, connecting, tunnelling, the TLS
//! handshake, reading), so its text already names the step; the cause stays reachable through
//! [`std::error::Error::source`]. No text here ever holds a credential: proxies and URLs are
//! shown without userinfo, tokens never reach this module.

use std::error::Error as StdError;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use rustls::{AlertDescription, CertificateError};

use super::proxy::Route;
use super::tls::Presented;

/// The settings that fix each kind of failure, as named for one client.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Settings {
    /// Where the URL or address is configured: `repository.url`.
    pub url: String,
    /// Where extra trusted CAs go: `repository.ca_file`.
    pub ca: String,
    /// Where the client certificate goes.
    pub client_cert: String,
}

impl Settings {
    /// For a section of strata.yaml with `url`-like, `ca_file` and `client_*_file` keys.
    pub fn section(section: &str, url_key: &str) -> Settings {
        Settings {
            url: format!("{section}.{url_key}"),
            ca: format!("{section}.ca_file"),
            client_cert: format!("{section}.client_cert_file and {section}.client_key_file"),
        }
    }

    pub fn repository() -> Settings {
        Settings::section("repository", "url")
    }

    pub fn status() -> Settings {
        Settings::section("status", "api")
    }

    /// A Kubernetes target: everything is in its kubeconfig, as kubectl reads it.
    pub fn kubeconfig(file: &str) -> Settings {
        Settings {
            url: format!("the cluster's server in the kubeconfig {file}"),
            ca: format!("certificate-authority(-data) in the kubeconfig {file}"),
            client_cert: format!("client-certificate(-data) and client-key(-data) in the kubeconfig {file}"),
        }
    }

    pub fn in_cluster() -> Settings {
        Settings {
            url: "KUBERNETES_SERVICE_HOST/KUBERNETES_SERVICE_PORT".into(),
            ca: "the service account's ca.crt".into(),
            client_cert: "the service account".into(),
        }
    }

    /// The CLI talking to the daemon.
    pub fn daemon() -> Settings {
        Settings { url: "listen".into(), ca: "-".into(), client_cert: "-".into() }
    }
}

/// What kind of failure: for tests, metrics and callers that decide on it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Dns,
    Refused,
    Connect,
    ProxyConnect,
    ProxyAuth,
    ProxyRefused,
    Untrusted,
    NameMismatch,
    Expired,
    NotYetValid,
    ClientCertRequired,
    ClientCertRefused,
    Tls,
    ConnectTimeout,
    ReadTimeout,
    TotalTimeout,
    Other,
}

impl Kind {
    pub fn label(self) -> &'static str {
        match self {
            Kind::Dns => "dns",
            Kind::Refused => "refused",
            Kind::Connect => "connect",
            Kind::ProxyConnect => "proxy_connect",
            Kind::ProxyAuth => "proxy_auth",
            Kind::ProxyRefused => "proxy_refused",
            Kind::Untrusted => "untrusted_certificate",
            Kind::NameMismatch => "name_mismatch",
            Kind::Expired => "expired_certificate",
            Kind::NotYetValid => "certificate_not_yet_valid",
            Kind::ClientCertRequired => "client_certificate_required",
            Kind::ClientCertRefused => "client_certificate_refused",
            Kind::Tls => "tls",
            Kind::ConnectTimeout => "connect_timeout",
            Kind::ReadTimeout => "read_timeout",
            Kind::TotalTimeout => "total_timeout",
            Kind::Other => "other",
        }
    }
}

type Cause = Arc<dyn StdError + Send + Sync>;

/// One network failure, its text complete (step, host, setting to check).
#[derive(Clone, Debug)]
pub struct Failure {
    pub kind: Kind,
    message: String,
    source: Option<Cause>,
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl StdError for Failure {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        self.source.as_deref().map(|e| e as &(dyn StdError + 'static))
    }
}

/// The host and port being reached, with the settings that name them.
#[derive(Clone, Debug)]
pub struct Peer {
    pub host: String,
    pub port: u16,
    pub settings: Settings,
    /// A client certificate is configured (changes the advice when the server refuses one).
    pub client_cert: bool,
}

impl Failure {
    fn new(kind: Kind, message: String, source: Option<Cause>) -> Failure {
        Failure { kind, message, source }
    }

    pub fn other(message: String, source: Option<Cause>) -> Failure {
        Failure::new(Kind::Other, message, source)
    }

    /// A host name did not resolve: the destination's, or the proxy's.
    pub fn dns(peer: &Peer, proxy: Option<&Route>, e: std::io::Error) -> Failure {
        let message = match proxy {
            None => format!(
                "cannot resolve the host name {}: {e}; check the host in {} and this machine's DNS",
                peer.host, peer.settings.url
            ),
            Some(route) => format!(
                "cannot resolve the proxy's host name {} (from {}): {e}; check {}",
                route.proxy.host().unwrap_or("?"),
                route.source,
                route.source.setting()
            ),
        };
        Failure::new(Kind::Dns, message, Some(Arc::new(e)))
    }

    /// No TCP connection to `address`: the destination, or the proxy.
    pub fn connect(peer: &Peer, proxy: Option<&Route>, address: &str, e: std::io::Error) -> Failure {
        let refused = e.kind() == std::io::ErrorKind::ConnectionRefused;
        let what = if refused { "connection refused".to_string() } else { e.to_string() };
        let (kind, message) = match proxy {
            None => (
                if refused { Kind::Refused } else { Kind::Connect },
                format!(
                    "cannot connect to {}: {what}; check the host and port in {} and that the server is up",
                    shown_address(peer, address),
                    peer.settings.url
                ),
            ),
            Some(route) => (
                Kind::ProxyConnect,
                format!(
                    "cannot connect to the proxy {address} (from {}): {what}; check {}, or add {} to {} if it is reachable directly",
                    route.source,
                    route.source.setting(),
                    peer.host,
                    route.source.bypass_setting()
                ),
            ),
        };
        Failure::new(kind, message, Some(Arc::new(e)))
    }

    /// The proxy answered the CONNECT with something other than 2xx.
    pub fn proxy_answer(peer: &Peer, route: &Route, code: u16, reason: &str) -> Failure {
        let proxy = format!("the proxy {} (from {})", route.address(), route.source);
        let (kind, message) = match code {
            407 if route.auth.is_some() => (
                Kind::ProxyAuth,
                format!("{proxy} refused the credentials (407 {reason}); check {}", route.source.auth_setting()),
            ),
            407 => (
                Kind::ProxyAuth,
                format!("{proxy} requires authentication (407 {reason}); set {}", route.source.auth_setting()),
            ),
            _ => (
                Kind::ProxyRefused,
                format!(
                    "{proxy} refused to open a tunnel to {}:{} ({code} {reason}); have the proxy allow it, or add {} to {} if it is reachable directly",
                    peer.host,
                    peer.port,
                    peer.host,
                    route.source.bypass_setting()
                ),
            ),
        };
        Failure::new(kind, message, None)
    }

    /// The proxy broke off, or answered something that is not HTTP, while opening a tunnel.
    pub fn proxy_broken(peer: &Peer, route: &Route, what: &str, source: Option<Cause>) -> Failure {
        Failure::new(
            Kind::ProxyConnect,
            format!(
                "the proxy {} (from {}) {what} while opening a tunnel to {}:{}; check {}",
                route.address(),
                route.source,
                peer.host,
                peer.port,
                route.source.setting()
            ),
            source,
        )
    }

    /// A step of connecting took longer than the connect timeout.
    pub fn connect_timeout(peer: &Peer, step: &str, after: Duration) -> Failure {
        Failure::new(
            Kind::ConnectTimeout,
            format!(
                "connect timeout: {step} did not finish within {after:?}; check that {}:{} is reachable from here (firewall, proxy settings)",
                peer.host, peer.port
            ),
            None,
        )
    }

    pub fn read_timeout(peer: &Peer, after: Duration) -> Failure {
        Failure::new(
            Kind::ReadTimeout,
            format!("read timeout: {}:{} sent nothing for {after:?}", peer.host, peer.port),
            None,
        )
    }

    pub fn total_timeout(host: &str, after: Duration) -> Failure {
        Failure::new(
            Kind::TotalTimeout,
            format!("total timeout: no complete answer from {host} within {after:?}"),
            None,
        )
    }

    /// A TLS error, during the handshake or after it (a TLS 1.3 server refuses a client
    /// certificate only once the client has finished its side), with what the server presented
    /// when its certificate was refused.
    pub fn tls(peer: &Peer, error: rustls::Error, presented: Option<Presented>) -> Failure {
        let host = &peer.host;
        let certificate = |p: &Option<Presented>| match p {
            Some(p) => format!(" \"{}\" (issued by \"{}\")", p.subject, p.issuer),
            None => String::new(),
        };
        let (kind, message) = match &error {
            rustls::Error::InvalidCertificate(e) => match e {
                CertificateError::UnknownIssuer | CertificateError::BadSignature => (
                    Kind::Untrusted,
                    match &presented {
                        Some(p) => format!(
                            "TLS: the certificate of {host} is not trusted: it is for \"{}\", issued by \"{}\", and no trusted CA vouches for that issuer; add the issuer's CA certificate (PEM) to {}",
                            p.subject, p.issuer, peer.settings.ca
                        ),
                        None => format!(
                            "TLS: the certificate of {host} is not trusted: its issuer is not a trusted CA; add the issuer's CA certificate (PEM) to {}",
                            peer.settings.ca
                        ),
                    },
                ),
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. } => {
                    let names = match (&presented, e) {
                        (Some(p), _) if !p.names.is_empty() => p.names.join(", "),
                        (_, CertificateError::NotValidForNameContext { presented, .. }) => presented.join(", "),
                        _ => "other names".into(),
                    };
                    (
                        Kind::NameMismatch,
                        format!(
                            "TLS: the certificate {host} presented{} is for {names}, not {host}; use one of those names in {}, or have the certificate reissued for {host}",
                            certificate(&presented),
                            peer.settings.url
                        ),
                    )
                }
                CertificateError::Expired | CertificateError::ExpiredContext { .. } => (
                    Kind::Expired,
                    format!(
                        "TLS: the certificate of {host}{} expired{}; have it renewed on the server (or check this machine's clock)",
                        certificate(&presented),
                        presented.as_ref().map(|p| format!(" on {}", p.not_after)).unwrap_or_default()
                    ),
                ),
                CertificateError::NotValidYet | CertificateError::NotValidYetContext { .. } => (
                    Kind::NotYetValid,
                    format!(
                        "TLS: the certificate of {host}{} is not valid yet{}; check this machine's clock",
                        certificate(&presented),
                        presented.as_ref().map(|p| format!(" (not before {})", p.not_before)).unwrap_or_default()
                    ),
                ),
                other => (
                    Kind::Tls,
                    format!(
                        "TLS: the certificate of {host}{} was refused: {other}; check {}",
                        certificate(&presented),
                        peer.settings.ca
                    ),
                ),
            },
            rustls::Error::AlertReceived(alert) if client_certificate_alert(*alert) => {
                if peer.client_cert {
                    (
                        Kind::ClientCertRefused,
                        format!(
                            "TLS: {host} refused the client certificate from {} (alert: {alert:?}); check that it is issued by a CA {host} trusts and has not expired",
                            peer.settings.client_cert
                        ),
                    )
                } else {
                    (
                        Kind::ClientCertRequired,
                        format!(
                            "TLS: {host} requires a client certificate (alert: {alert:?}) and none is configured; set {}",
                            peer.settings.client_cert
                        ),
                    )
                }
            }
            other => (Kind::Tls, format!("TLS with {host}:{} failed: {other}", peer.port)),
        };
        Failure::new(kind, message, Some(Arc::new(error)))
    }
}

/// `host:port`, with the address it resolved to when that says more (`git.corp:443 (10.0.0.7:443)`).
fn shown_address(peer: &Peer, address: &str) -> String {
    let named = format!("{}:{}", peer.host, peer.port);
    if address == named || address == format!("[{}]:{}", peer.host, peer.port) {
        named
    } else {
        format!("{named} ({address})")
    }
}

/// Alerts a server sends when it wants a (different) client certificate.
fn client_certificate_alert(alert: AlertDescription) -> bool {
    matches!(
        alert,
        AlertDescription::CertificateRequired
            | AlertDescription::HandshakeFailure
            | AlertDescription::BadCertificate
            | AlertDescription::UnsupportedCertificate
            | AlertDescription::CertificateRevoked
            | AlertDescription::CertificateExpired
            | AlertDescription::CertificateUnknown
            | AlertDescription::UnknownCA
            | AlertDescription::AccessDenied
    )
}

/// What went wrong with one request: the request (method and URL, without credentials) and the
/// failure.
#[derive(Debug)]
pub struct NetError {
    pub request: String,
    pub failure: Failure,
}

impl fmt::Display for NetError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.request, self.failure)
    }
}

impl StdError for NetError {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        Some(&self.failure)
    }
}

impl NetError {
    pub fn kind(&self) -> Kind {
        self.failure.kind
    }
}

/// The first [`Failure`] in an error's chain, looking inside `io::Error`s too (hyper and libgit2
/// hand failures back wrapped).
pub fn find_failure<'a>(error: &'a (dyn StdError + 'static)) -> Option<&'a Failure> {
    let mut next = Some(error);
    while let Some(e) = next {
        if let Some(failure) = e.downcast_ref::<Failure>() {
            return Some(failure);
        }
        if let Some(io) = e.downcast_ref::<std::io::Error>()
            && let Some(failure) = io.get_ref().and_then(|inner| inner.downcast_ref::<Failure>())
        {
            return Some(failure);
        }
        next = e.source();
    }
    None
}

/// An error and its causes on one line, each cause once.
pub fn chain(error: &(dyn StdError + 'static)) -> String {
    let mut out = error.to_string();
    let mut next = error.source();
    while let Some(e) = next {
        let text = e.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        next = e.source();
    }
    out
}

/// A URL as it may be shown: without userinfo (`https://user:token@host/` → `https://host/`).
pub fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else { return url.to_string() };
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    match rest[..authority_end].rfind('@') {
        Some(at) => format!("{scheme}://{}", &rest[at + 1..]),
        None => url.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer(client_cert: bool) -> Peer {
        Peer { host: "git.corp.example".into(), port: 443, settings: Settings::repository(), client_cert }
    }

    fn presented() -> Presented {
        Presented {
            subject: "CN=git.corp.example".into(),
            issuer: "CN=Corp Root CA, O=Corp".into(),
            names: vec!["git.corp.example".into(), "10.0.0.7".into()],
            not_before: "Mon, 01 Jan 2024 00:00:00 +0000".into(),
            not_after: "Wed, 01 Jan 2025 00:00:00 +0000".into(),
        }
    }

    #[test]
    fn certificate_failures_name_the_certificate_and_the_setting() {
        let unknown = Failure::tls(
            &peer(false),
            rustls::Error::InvalidCertificate(CertificateError::UnknownIssuer),
            Some(presented()),
        );
        assert_eq!(unknown.kind, Kind::Untrusted);
        assert_eq!(
            unknown.to_string(),
            "TLS: the certificate of git.corp.example is not trusted: it is for \"CN=git.corp.example\", issued by \"CN=Corp Root CA, O=Corp\", and no trusted CA vouches for that issuer; add the issuer's CA certificate (PEM) to repository.ca_file"
        );
        let name = Failure::tls(
            &Peer { host: "localhost".into(), ..peer(false) },
            rustls::Error::InvalidCertificate(CertificateError::NotValidForName),
            Some(presented()),
        );
        assert_eq!(name.kind, Kind::NameMismatch);
        assert!(
            name.to_string()
                .contains("is for git.corp.example, 10.0.0.7, not localhost; use one of those names in repository.url"),
            "{name}"
        );
        let expired =
            Failure::tls(&peer(false), rustls::Error::InvalidCertificate(CertificateError::Expired), Some(presented()));
        assert!(
            expired.to_string().contains("expired on Wed, 01 Jan 2025 00:00:00 +0000; have it renewed"),
            "{expired}"
        );
    }

    #[test]
    fn a_refused_handshake_asks_for_a_client_certificate_or_questions_the_one_given() {
        let alert = || rustls::Error::AlertReceived(AlertDescription::CertificateRequired);
        let without = Failure::tls(&peer(false), alert(), None);
        assert_eq!(without.kind, Kind::ClientCertRequired);
        assert!(
            without
                .to_string()
                .ends_with("none is configured; set repository.client_cert_file and repository.client_key_file"),
            "{without}"
        );
        let with = Failure::tls(&peer(true), rustls::Error::AlertReceived(AlertDescription::UnknownCA), None);
        assert_eq!(with.kind, Kind::ClientCertRefused);
        assert!(with.to_string().contains("refused the client certificate from repository.client_cert_file"), "{with}");
    }

    #[test]
    fn failures_are_found_inside_io_errors_and_urls_lose_their_userinfo() {
        let failure = Failure::read_timeout(&peer(false), Duration::from_secs(60));
        let wrapped = std::io::Error::other(failure);
        let found = find_failure(&wrapped).unwrap();
        assert_eq!(found.kind, Kind::ReadTimeout);
        assert_eq!(found.to_string(), "read timeout: git.corp.example:443 sent nothing for 60s");
        assert_eq!(
            redact_url("https://x-access-token:s3cret@git.example.com/fleet.git"),
            "https://git.example.com/fleet.git"
        );
        assert_eq!(redact_url("https://git.example.com/a@b"), "https://git.example.com/a@b");
    }
}
