//! The connector under every client: one connection, step by step, each step's failure named.
//!
//! ```text
//!   Uri ─> route? ── direct ──────────────> resolve + TCP ───────────────┐
//!               ├─ https via proxy ───────> TCP to proxy, CONNECT host:port ├─> TLS (https) ─> Conn
//!               └─ http via proxy ────────> TCP to proxy (absolute-form) ─┘     (read timeout)
//! ```
//!
//! The connect timeout covers all steps together; the read timeout applies to every read of the
//! connection afterwards. TLS errors that only arrive after the handshake (a TLS 1.3 server
//! refusing the client certificate) are turned into [`Failure`]s when they are read.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use http::Uri;
use hyper_util::client::legacy::connect::{Connected, Connection};
use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;
use tokio::time::{Instant, Sleep};
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;
use tower::Service;

use super::Timeouts;
use super::error::{Failure, Peer, Settings};
use super::proxy::{Route, Router};
use super::tls::Recorder;

/// TLS for `https://` destinations: the client configuration and the verifier inside it.
#[derive(Clone)]
pub struct Tls {
    pub connector: TlsConnector,
    /// `None` when verification is off (a kubeconfig's `insecure-skip-tls-verify`).
    pub recorder: Option<Arc<Recorder>>,
    /// Verify and send SNI for this name instead of the URL's host (a kubeconfig's `tls-server-name`).
    pub server_name: Option<String>,
    /// A client certificate is configured.
    pub client_cert: bool,
}

#[derive(Clone)]
pub struct Connector {
    inner: Arc<Inner>,
}

struct Inner {
    router: Arc<Router>,
    /// `None`: this client only speaks plain HTTP (the CLI to the daemon).
    tls: Option<Tls>,
    settings: Settings,
    timeouts: Timeouts,
}

impl Connector {
    pub fn new(router: Arc<Router>, tls: Option<Tls>, settings: Settings, timeouts: Timeouts) -> Connector {
        Connector { inner: Arc::new(Inner { router, tls, settings, timeouts }) }
    }
}

impl Service<Uri> for Connector {
    type Response = Conn;
    type Error = Failure;
    type Future = Pin<Box<dyn Future<Output = Result<Conn, Failure>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Failure>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, destination: Uri) -> Self::Future {
        let inner = self.inner.clone();
        Box::pin(async move { inner.connect(destination).await })
    }
}

/// Runs one step of connecting within what is left of the connect timeout.
async fn step<T>(
    peer: &Peer,
    deadline: Instant,
    timeout: Duration,
    name: impl FnOnce() -> String,
    work: impl Future<Output = Result<T, Failure>>,
) -> Result<T, Failure> {
    match tokio::time::timeout_at(deadline, work).await {
        Ok(result) => result,
        Err(_) => Err(Failure::connect_timeout(peer, &name(), timeout)),
    }
}

/// Resolves `host` and connects to the first address that answers.
async fn dial(peer: &Peer, proxy: Option<&Route>, host: &str, port: u16) -> Result<TcpStream, Failure> {
    let addresses: Vec<SocketAddr> =
        tokio::net::lookup_host((host, port)).await.map_err(|e| Failure::dns(peer, proxy, e))?.collect();
    let mut last = None;
    for address in addresses {
        match TcpStream::connect(address).await {
            Ok(stream) => {
                let _ = stream.set_nodelay(true);
                return Ok(stream);
            }
            Err(e) => last = Some((address, e)),
        }
    }
    match last {
        Some((address, e)) => Err(Failure::connect(peer, proxy, &address.to_string(), e)),
        None => Err(Failure::dns(peer, proxy, io::Error::new(io::ErrorKind::NotFound, "no addresses"))),
    }
}

/// Asks the proxy on `stream` for a tunnel to `authority` (HTTP CONNECT, RFC 9110 §9.3.6).
async fn open_tunnel(stream: &mut TcpStream, peer: &Peer, route: &Route, authority: &str) -> Result<(), Failure> {
    let mut request = format!("CONNECT {authority} HTTP/1.1\r\nHost: {authority}\r\n").into_bytes();
    if let Some(auth) = &route.auth {
        request.extend_from_slice(b"Proxy-Authorization: ");
        request.extend_from_slice(auth.as_bytes());
        request.extend_from_slice(b"\r\n");
    }
    request.extend_from_slice(b"\r\n");
    let broken = |what: &str, e: io::Error| Failure::proxy_broken(peer, route, what, Some(Arc::new(e)));
    stream.write_all(&request).await.map_err(|e| broken("closed the connection", e))?;
    // Byte by byte up to the blank line: whatever follows belongs to the tunnel.
    let mut head = Vec::with_capacity(256);
    while !head.ends_with(b"\r\n\r\n") {
        if head.len() >= 16 * 1024 {
            return Err(Failure::proxy_broken(peer, route, "sent an answer too long to be HTTP", None));
        }
        let byte = stream.read_u8().await.map_err(|e| broken("closed the connection", e))?;
        head.push(byte);
    }
    let mut headers = [httparse::EMPTY_HEADER; 64];
    let mut answer = httparse::Response::new(&mut headers);
    match answer.parse(&head) {
        Ok(httparse::Status::Complete(_)) => {}
        _ => return Err(Failure::proxy_broken(peer, route, "answered something that is not HTTP", None)),
    }
    match answer.code.unwrap_or(0) {
        200..=299 => Ok(()),
        code => Err(Failure::proxy_answer(peer, route, code, answer.reason.unwrap_or(""))),
    }
}

/// The host of a URI without IPv6 brackets.
fn bare_host(uri: &Uri) -> String {
    uri.host().unwrap_or_default().trim_start_matches('[').trim_end_matches(']').to_string()
}

impl Inner {
    async fn connect(&self, destination: Uri) -> Result<Conn, Failure> {
        let https = destination.scheme_str() == Some("https");
        let host = bare_host(&destination);
        let port = destination.port_u16().unwrap_or(if https { 443 } else { 80 });
        let peer = Arc::new(Peer {
            host: host.clone(),
            port,
            settings: self.settings.clone(),
            client_cert: self.tls.as_ref().is_some_and(|t| t.client_cert),
        });
        if host.is_empty() {
            return Err(Failure::other(format!("{destination}: no host; check {}", self.settings.url), None));
        }
        let route = self.router.route(&destination);
        let timeout = self.timeouts.connect;
        let deadline = Instant::now() + timeout;
        let tcp = match &route {
            None => {
                step(
                    &peer,
                    deadline,
                    timeout,
                    || format!("connecting to {host}:{port}"),
                    dial(&peer, None, &host, port),
                )
                .await?
            }
            Some(route) if https => {
                let opened = async {
                    let (proxy_host, proxy_port) = (bare_host(&route.proxy), route.proxy.port_u16().unwrap_or(80));
                    let mut stream = dial(&peer, Some(route), &proxy_host, proxy_port).await?;
                    let authority = match destination.host() {
                        Some(h) => format!("{h}:{port}"),
                        None => format!("{host}:{port}"),
                    };
                    open_tunnel(&mut stream, &peer, route, &authority).await?;
                    Ok(stream)
                };
                let name = || format!("opening a tunnel to {host}:{port} through the proxy {}", route.address());
                step(&peer, deadline, timeout, name, opened).await?
            }
            Some(route) => {
                let (proxy_host, proxy_port) = (bare_host(&route.proxy), route.proxy.port_u16().unwrap_or(80));
                let name = || format!("connecting to the proxy {}", route.address());
                step(&peer, deadline, timeout, name, dial(&peer, Some(route), &proxy_host, proxy_port)).await?
            }
        };
        let (io, verified_name) = if https {
            let Some(tls) = &self.tls else {
                return Err(Failure::other(format!("{destination}: this client does not speak HTTPS"), None));
            };
            let name = tls.server_name.clone().unwrap_or_else(|| host.clone());
            let server_name = ServerName::try_from(name.clone()).map_err(|e| {
                Failure::other(
                    format!("`{name}` is not a valid TLS server name: {e}; check {}", self.settings.url),
                    None,
                )
            })?;
            let handshake =
                async { tls.connector.connect(server_name, tcp).await.map_err(|e| tls_failure(&peer, tls, &name, e)) };
            let stream =
                step(&peer, deadline, timeout, || format!("the TLS handshake with {host}:{port}"), handshake).await?;
            (Io::Tls(Box::new(stream)), name)
        } else {
            (Io::Plain(tcp), host)
        };
        Ok(Conn {
            io: TokioIo::new(io),
            peer,
            recorder: self.tls.as_ref().and_then(|t| t.recorder.clone()),
            verified_name,
            read_timeout: self.timeouts.read,
            sleep: None,
            proxied: route.is_some() && !https,
        })
    }
}

/// A handshake error: a [`Failure`] naming the certificate when rustls refused one.
fn tls_failure(peer: &Peer, tls: &Tls, server_name: &str, e: io::Error) -> Failure {
    match e.get_ref().and_then(|inner| inner.downcast_ref::<rustls::Error>()) {
        Some(error) => {
            Failure::tls(peer, error.clone(), tls.recorder.as_ref().and_then(|r| r.take_refused(server_name)))
        }
        None => Failure::other(
            format!(
                "TLS handshake with {}:{} failed: {e}; check that it speaks HTTPS on that port",
                peer.host, peer.port
            ),
            Some(Arc::new(e)),
        ),
    }
}

enum Io {
    Plain(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
}

impl AsyncRead for Io {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Io::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Io {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Io::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Io::Plain(s) => Pin::new(s).poll_flush(cx),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Io::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

/// A connection: reads time out, and TLS errors read from it say what they mean.
pub struct Conn {
    io: TokioIo<Io>,
    peer: Arc<Peer>,
    recorder: Option<Arc<Recorder>>,
    /// The name the server's certificate was checked against.
    verified_name: String,
    read_timeout: Duration,
    /// Armed while a read waits.
    sleep: Option<Pin<Box<Sleep>>>,
    /// Plain HTTP through a proxy: requests go out in absolute form.
    proxied: bool,
}

impl Conn {
    fn explain(&self, e: io::Error) -> io::Error {
        match e.get_ref().and_then(|inner| inner.downcast_ref::<rustls::Error>()) {
            Some(error) => {
                let presented = self.recorder.as_ref().and_then(|r| r.take_refused(&self.verified_name));
                io::Error::new(e.kind(), Failure::tls(&self.peer, error.clone(), presented))
            }
            None => e,
        }
    }
}

impl hyper::rt::Read for Conn {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: hyper::rt::ReadBufCursor<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        match Pin::new(&mut this.io).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                this.sleep = None;
                Poll::Ready(Ok(()))
            }
            Poll::Ready(Err(e)) => {
                this.sleep = None;
                Poll::Ready(Err(this.explain(e)))
            }
            Poll::Pending => {
                let timeout = this.read_timeout;
                let sleep = this.sleep.get_or_insert_with(|| Box::pin(tokio::time::sleep(timeout)));
                match sleep.as_mut().poll(cx) {
                    Poll::Ready(()) => {
                        this.sleep = None;
                        let failure = Failure::read_timeout(&this.peer, timeout);
                        Poll::Ready(Err(io::Error::new(io::ErrorKind::TimedOut, failure)))
                    }
                    Poll::Pending => Poll::Pending,
                }
            }
        }
    }
}

impl hyper::rt::Write for Conn {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        match Pin::new(&mut this.io).poll_write(cx, buf) {
            Poll::Ready(Err(e)) => Poll::Ready(Err(this.explain(e))),
            other => other,
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
}

impl Connection for Conn {
    /// HTTP/2 when the server chose it in the TLS handshake (only clients that offer `h2` by
    /// ALPN can be answered so: the Kubernetes one).
    fn connected(&self) -> Connected {
        let connected = Connected::new().proxy(self.proxied);
        match self.io.inner() {
            Io::Tls(stream) if stream.get_ref().1.alpn_protocol() == Some(b"h2") => connected.negotiated_h2(),
            _ => connected,
        }
    }
}
