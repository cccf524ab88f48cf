//! The one HTTP client behind everything strata sends out: Git over HTTPS, forge APIs, Kubernetes
//! API servers, and the CLI's calls to the daemon.
//!
//! ```text
//!   host config (proxy:, *.ca_file, *.client_*_file) + environment (HTTPS_PROXY, NO_PROXY, …)
//!     │  loaded at start and again on SIGHUP, never per request
//!     v
//!   Network { proxy Router, system roots (read once) }
//!     ├── client(repository tls) ─> Client ─ Connector ─ route → TCP / CONNECT → TLS (Recorder)
//!     ├── client(status tls)     ─> Client
//!     └── connector(kubeconfig)  ─> Connector under kube's client stack
//!   send(request) ─> Response | NetError { request, Failure: step, host, setting to check }
//! ```
//!
//! Every failure is a [`Failure`] made where it happened, so logs, `strata status`, the status
//! view, `/readyz` and commit statuses all carry the same text. See [`error`] for the wording.

pub mod connect;
pub mod error;
pub mod proxy;
pub mod settings;
pub mod tls;

use std::path::Path;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use rustls::pki_types::CertificateDer;

pub use error::{Failure, Kind, NetError, Settings};
pub use proxy::{ProxyError, Router};
pub use tls::TlsError;

use settings::Tls as TlsConfig;

/// How long each part of an exchange may take.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Timeouts {
    /// Resolving, TCP, the proxy tunnel and the TLS handshake together.
    pub connect: Duration,
    /// Any single read once connected.
    pub read: Duration,
    /// The whole exchange, answer body included (`None`: Git packs take as long as they take).
    pub total: Option<Duration>,
}

impl Timeouts {
    pub const GIT: Timeouts = Timeouts { connect: Duration::from_secs(10), read: Duration::from_secs(60), total: None };
    pub const FORGE: Timeouts = Timeouts {
        connect: Duration::from_secs(10),
        read: Duration::from_secs(30),
        total: Some(Duration::from_secs(60)),
    };
    /// Kubernetes API servers: a whole request is also bounded, per request, by the target.
    pub const KUBE: Timeouts =
        Timeouts { connect: Duration::from_secs(10), read: Duration::from_secs(30), total: None };
    /// Kubernetes watches: quiet for up to a watch's server-side timeout (bookmarks come about
    /// once a minute); a dead connection is found by the watch's own idle timeout first.
    pub const KUBE_WATCH: Timeouts =
        Timeouts { connect: Duration::from_secs(10), read: Duration::from_secs(15 * 60), total: None };
    pub const DAEMON: Timeouts = Timeouts {
        connect: Duration::from_secs(5),
        read: Duration::from_secs(30),
        total: Some(Duration::from_secs(60)),
    };
}

/// A network setting that cannot be used: the setting, the file, what to do.
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    #[error(transparent)]
    Proxy(#[from] ProxyError),
    #[error(transparent)]
    Tls(#[from] TlsError),
    #[error(transparent)]
    Roots(#[from] tls::RootsError),
}

/// The proxy and trust material of the host, loaded once.
pub struct Network {
    router: Arc<Router>,
    system_roots: OnceLock<Result<Arc<Vec<CertificateDer<'static>>>, tls::RootsError>>,
}

impl Network {
    /// From the host config's `proxy:` (or the environment when there is none).
    pub fn new(proxy: Option<&settings::Proxy>) -> Result<Network, SetupError> {
        Ok(Network::with_router(Router::new(proxy)?))
    }

    pub fn with_router(router: Router) -> Network {
        Network { router: Arc::new(router), system_roots: OnceLock::new() }
    }

    pub fn router(&self) -> &Arc<Router> {
        &self.router
    }

    /// The system's roots, read on first use.
    pub fn system_roots(&self) -> Result<Arc<Vec<CertificateDer<'static>>>, SetupError> {
        self.system_roots.get_or_init(|| tls::system_roots().map(Arc::new)).clone().map_err(SetupError::Roots)
    }

    /// A verifier trusting the system's roots (when `system` is set) and `extra` CA certificates.
    pub fn verifier(
        &self,
        system: bool,
        extra: &[CertificateDer<'static>],
        setting: &str,
        file: &Path,
    ) -> Result<Arc<tls::Recorder>, SetupError> {
        let mut all: Vec<CertificateDer<'static>> = Vec::new();
        if system {
            match self.system_roots() {
                Ok(roots) => all.extend(roots.iter().cloned()),
                // A minimal image without a CA bundle still works with its own ca_file.
                Err(e) if !extra.is_empty() => tracing::warn!(error = %e, "Trusting {setting} alone."),
                Err(e) => return Err(e),
            }
        }
        let own = tls::root_store(extra, setting, file)?;
        let mut store = rustls::RootCertStore::empty();
        // System bundles carry the odd certificate webpki cannot use; skip those rather than fail.
        store.add_parsable_certificates(all);
        store.roots.extend(own.roots);
        tls::Recorder::webpki(store).map_err(SetupError::Roots)
    }

    /// A client for one configured endpoint (`prefix` is its section: `repository.`, `status.`).
    pub fn client(
        &self,
        config: &TlsConfig,
        prefix: &str,
        settings: Settings,
        timeouts: Timeouts,
    ) -> Result<Client, SetupError> {
        let extra = match &config.ca_file {
            Some(file) => tls::read_certificates(&format!("{prefix}ca_file"), file)?,
            None => Vec::new(),
        };
        let ca_file = config.ca_file.as_deref().unwrap_or(Path::new("-"));
        let recorder = self.verifier(config.system_roots, &extra, &format!("{prefix}ca_file"), ca_file)?;
        let files = config.client_cert_file.as_deref().zip(config.client_key_file.as_deref());
        let identity = files.map(|(cert, key)| tls::read_identity(prefix, cert, key)).transpose()?;
        let client_cert = identity.is_some();
        let rustls = tls::client_config(recorder.clone(), identity, files, prefix)?;
        let tls = connect::Tls {
            connector: tokio_rustls::TlsConnector::from(Arc::new(rustls)),
            recorder: Some(recorder),
            server_name: None,
            client_cert,
        };
        Ok(Client::new(self.router.clone(), Some(tls), settings, timeouts))
    }

    /// Plain HTTP through the host's proxy rules (the CLI reaching a daemon on another machine).
    pub fn plain_client(&self, settings: Settings, timeouts: Timeouts) -> Client {
        Client::new(self.router.clone(), None, settings, timeouts)
    }
}

/// An HTTP/1.1 client over the [`connect::Connector`]: pooled connections, proxy credentials on
/// plain-HTTP requests through a proxy, the total timeout.
#[derive(Clone)]
pub struct Client {
    http: hyper_util::client::legacy::Client<connect::Connector, Full<Bytes>>,
    router: Arc<Router>,
    settings: Settings,
    timeouts: Timeouts,
}

impl Client {
    pub fn new(router: Arc<Router>, tls: Option<connect::Tls>, settings: Settings, timeouts: Timeouts) -> Client {
        let connector = connect::Connector::new(router.clone(), tls, settings.clone(), timeouts);
        let http = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(30))
            .build(connector);
        Client { http, router, settings, timeouts }
    }

    /// Plain HTTP only, never through a proxy: the CLI talking to its own daemon.
    pub fn local(settings: Settings, timeouts: Timeouts) -> Client {
        Client::new(Arc::new(Router::direct()), None, settings, timeouts)
    }

    /// Sends `request`; the answer's body is left to the caller (streamed, with the read timeout).
    pub async fn send(&self, mut request: hyper::Request<Full<Bytes>>) -> Result<hyper::Response<Incoming>, NetError> {
        let shown = format!("{} {}", request.method(), error::redact_url(&request.uri().to_string()));
        proxy_authorization(&self.router, &mut request);
        let route = if request.uri().scheme_str() == Some("http") { self.router.route(request.uri()) } else { None };
        let host = request.uri().host().unwrap_or_default().to_string();
        let port = request.uri().port_u16().unwrap_or(80);
        let sent = self.http.request(request);
        let answer = match self.timeouts.total {
            Some(total) => tokio::time::timeout(total, sent)
                .await
                .map_err(|_| NetError { request: shown.clone(), failure: Failure::total_timeout(&host, total) })?,
            None => sent.await,
        };
        let response = answer.map_err(|e| NetError { request: shown.clone(), failure: failure_of(&e) })?;
        // Plain HTTP through a proxy: the proxy's own refusal comes back as an answer.
        if response.status() == http::StatusCode::PROXY_AUTHENTICATION_REQUIRED
            && let Some(route) = route
        {
            let peer = error::Peer { host, port, settings: self.settings.clone(), client_cert: false };
            let reason = response.status().canonical_reason().unwrap_or("");
            return Err(NetError { request: shown, failure: Failure::proxy_answer(&peer, &route, 407, reason) });
        }
        Ok(response)
    }

    /// Sends `request` and reads the whole answer, all within the total timeout.
    pub async fn exchange(
        &self,
        request: hyper::Request<Full<Bytes>>,
    ) -> Result<(http::response::Parts, Bytes), NetError> {
        let shown = format!("{} {}", request.method(), error::redact_url(&request.uri().to_string()));
        let host = request.uri().host().unwrap_or_default().to_string();
        let work = async {
            let (parts, body) = self.send(request).await?.into_parts();
            let bytes = body
                .collect()
                .await
                .map_err(|e| NetError { request: shown.clone(), failure: failure_of(&e) })?
                .to_bytes();
            Ok((parts, bytes))
        };
        match self.timeouts.total {
            Some(total) => tokio::time::timeout(total, work)
                .await
                .map_err(|_| NetError { request: shown.clone(), failure: Failure::total_timeout(&host, total) })?,
            None => work.await,
        }
    }
}

/// Plain HTTP through a proxy goes in absolute form, and the proxy reads its credentials from
/// this header (HTTPS carries them in the CONNECT instead).
pub fn proxy_authorization<B>(router: &Router, request: &mut hyper::Request<B>) {
    if request.uri().scheme_str() == Some("http")
        && let Some(auth) = router.route(request.uri()).and_then(|route| route.auth)
    {
        request.headers_mut().insert(http::header::PROXY_AUTHORIZATION, auth);
    }
}

/// The [`Failure`] an error carries, or one holding its whole chain.
pub fn failure_of(e: &(dyn std::error::Error + 'static)) -> Failure {
    error::find_failure(e).cloned().unwrap_or_else(|| Failure::other(error::chain(e), None))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A server that accepts connections and then says nothing.
    async fn silent() -> (String, tokio::task::JoinHandle<()>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap().to_string();
        let task = tokio::spawn(async move {
            let mut open = Vec::new();
            while let Ok((stream, _)) = listener.accept().await {
                open.push(stream);
            }
        });
        (address, task)
    }

    fn get(url: &str) -> hyper::Request<Full<Bytes>> {
        hyper::Request::get(url).body(Full::default()).unwrap()
    }

    #[tokio::test]
    async fn plain_http_goes_to_the_proxy_in_absolute_form_and_a_407_names_the_setting() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let proxy = listener.local_addr().unwrap().to_string();
        let seen = tokio::spawn(async move {
            let (mut stream, _) = listener.accept().await.unwrap();
            let mut head = vec![0u8; 1024];
            let n = stream.read(&mut head).await.unwrap();
            stream.write_all(b"HTTP/1.1 407 Proxy Authentication Required\r\ncontent-length: 0\r\n\r\n").await.unwrap();
            String::from_utf8_lossy(&head[..n]).into_owned()
        });
        let env = format!("http://{proxy}");
        let router = Router::from_env(&|name| (name == "HTTP_PROXY").then(|| env.clone())).unwrap();
        let client = Network::with_router(router).plain_client(Settings::daemon(), Timeouts::DAEMON);
        let e = client.send(get("http://daemon.corp.example:9477/readyz")).await.unwrap_err();
        assert_eq!(e.kind(), Kind::ProxyAuth);
        assert_eq!(
            e.to_string(),
            format!(
                "GET http://daemon.corp.example:9477/readyz: the proxy {proxy} (from HTTP_PROXY) requires authentication (407 Proxy Authentication Required); set the user:password in HTTP_PROXY"
            )
        );
        assert!(seen.await.unwrap().starts_with("GET http://daemon.corp.example:9477/readyz HTTP/1.1\r\n"));
    }

    #[tokio::test]
    async fn each_timeout_says_which_it_was() {
        let (address, _server) = silent().await;
        let quick = |total| Timeouts { connect: Duration::from_millis(300), read: Duration::from_millis(200), total };
        let network = Network::with_router(Router::direct());

        let plain = network.plain_client(Settings::status(), quick(None));
        let e = plain.send(get(&format!("http://{address}/x"))).await.unwrap_err();
        assert_eq!(e.kind(), Kind::ReadTimeout, "{e}");
        assert_eq!(e.to_string(), format!("GET http://{address}/x: read timeout: {address} sent nothing for 200ms"));

        let total = network.plain_client(Settings::status(), quick(Some(Duration::from_millis(100))));
        let e = total.send(get(&format!("http://{address}/x"))).await.unwrap_err();
        assert_eq!(e.kind(), Kind::TotalTimeout, "{e}");
        assert!(e.to_string().ends_with("total timeout: no complete answer from 127.0.0.1 within 100ms"), "{e}");

        let tls = network.client(&TlsConfig::default(), "status.", Settings::status(), quick(None)).unwrap();
        let e = tls.send(get(&format!("https://{address}/x"))).await.unwrap_err();
        assert_eq!(e.kind(), Kind::ConnectTimeout, "{e}");
        assert!(
            e.to_string().ends_with(&format!(
                "connect timeout: the TLS handshake with {address} did not finish within 300ms; check that {address} is reachable from here (firewall, proxy settings)"
            )),
            "{e}"
        );
    }
}
