//! Git's smart HTTP protocol for libgit2, over hyper and rustls.
//!
//! libgit2's own HTTPS transport links OpenSSL and initialises it in every process that touches
//! Git (about 15 ms here, paid by every CLI run). Registering this transport for `http://` and
//! `https://` instead sends Git's requests through strata's one client ([`crate::net`]: proxy,
//! `repository.ca_file`, client certificate, errors that name the setting to check) and costs
//! nothing until a remote is fetched.
//!
//! ```text
//!   fetch:  GET  {url}/info/refs?service=git-upload-pack     (UploadPackLs)
//!           POST {url}/git-upload-pack                       (UploadPack, per negotiation round)
//!   push:   GET  {url}/info/refs?service=git-receive-pack    (ReceivePackLs)
//!           POST {url}/git-receive-pack                      (ReceivePack)
//! ```
//!
//! Each stream collects what libgit2 writes, sends the request on the first read, and hands the
//! answer back as it arrives. A token from the repository credentials goes in as HTTP Basic
//! authentication (what GitHub, GitLab and Gitea accept for HTTPS Git).

use std::io::{self, Read, Write};
use std::sync::{Arc, Once, OnceLock, RwLock};

use base64::Engine as _;
use git2::transport::{Service, SmartSubtransport, SmartSubtransportStream, Transport};
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;

use crate::config::{Credentials, read_secret};
use crate::net::Client;

/// The client (proxy, CA, client certificate) and credentials fetches use; replaced on SIGHUP.
static CURRENT: RwLock<Option<Arc<(Client, Credentials)>>> = RwLock::new(None);
static REGISTER: Once = Once::new();

/// Requests run here: libgit2 calls from blocking threads, and one runtime keeps the client's
/// connections (and TLS sessions) alive across the requests of a fetch.
fn runtime() -> &'static tokio::runtime::Runtime {
    static RUNTIME: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RUNTIME.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("strata-git-http")
            .enable_all()
            .build()
            .expect("a Tokio runtime for Git over HTTP")
    })
}

/// Makes libgit2 use this transport for http(s) remotes, through `client`, with these credentials.
pub fn register(client: Client, credentials: &Credentials) {
    *CURRENT.write().expect("transport lock") = Some(Arc::new((client, credentials.clone())));
    REGISTER.call_once(|| {
        for prefix in ["https", "http"] {
            // SAFETY: registered once, before any fetch; the factory is 'static.
            let registered =
                unsafe { git2::transport::register(prefix, |remote| Transport::smart(remote, true, SmartHttp)) };
            if let Err(e) = registered {
                tracing::warn!(prefix, error = %e.message(), "Cannot register the smart HTTP transport.");
            }
        }
    });
}

struct SmartHttp;

/// `https://user:password@host/…` → (`https://host/…`, Some((user, password))): userinfo goes
/// into the Authorization header, never into a request line or a message.
fn split_userinfo(url: &str) -> (String, Option<(String, String)>) {
    let shown = crate::net::error::redact_url(url);
    if shown == url {
        return (shown, None);
    }
    let rest = url.split_once("://").map(|(_, r)| r).unwrap_or(url);
    let userinfo = &rest[..rest.find('@').unwrap_or(0)];
    let (user, password) = userinfo.split_once(':').unwrap_or((userinfo, ""));
    let decode = |s: &str| percent_encoding::percent_decode_str(s).decode_utf8_lossy().into_owned();
    (shown, Some((decode(user), decode(password))))
}

impl SmartSubtransport for SmartHttp {
    fn action(&self, url: &str, action: Service) -> Result<Box<dyn SmartSubtransportStream>, git2::Error> {
        let (url, userinfo) = split_userinfo(url);
        let base = url.trim_end_matches('/');
        let (method, url, content_type) = match action {
            Service::UploadPackLs => ("GET", format!("{base}/info/refs?service=git-upload-pack"), None),
            Service::UploadPack => ("POST", format!("{base}/git-upload-pack"), Some("upload-pack")),
            Service::ReceivePackLs => ("GET", format!("{base}/info/refs?service=git-receive-pack"), None),
            Service::ReceivePack => ("POST", format!("{base}/git-receive-pack"), Some("receive-pack")),
        };
        let Some(current) = CURRENT.read().expect("transport lock").clone() else {
            return Err(git2::Error::from_str("the HTTP transport is not set up"));
        };
        let credentials = &current.1;
        let login = match &credentials.token_file {
            Some(file) => {
                let token = read_secret(file).map_err(|e| git2::Error::from_str(&e.to_string()))?;
                Some((credentials.username.clone().unwrap_or_else(|| "x-access-token".into()), token))
            }
            None => userinfo,
        };
        let authorization = login.map(|(user, password)| {
            format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}")))
        });
        Ok(Box::new(Stream {
            client: current.0.clone(),
            method,
            url,
            content_type,
            authorization,
            body: Vec::new(),
            answer: None,
            chunk: Bytes::new(),
        }))
    }

    fn close(&self) -> Result<(), git2::Error> {
        Ok(())
    }
}

struct Stream {
    client: Client,
    method: &'static str,
    url: String,
    /// `upload-pack` / `receive-pack` for POSTs.
    content_type: Option<&'static str>,
    authorization: Option<String>,
    body: Vec<u8>,
    /// The answer's chunks as they arrive, once the request is sent.
    answer: Option<tokio::sync::mpsc::Receiver<io::Result<Bytes>>>,
    chunk: Bytes,
}

impl Write for Stream {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        self.body.extend_from_slice(data);
        Ok(data.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Read for Stream {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        if self.answer.is_none() {
            self.answer = Some(self.send());
        }
        while self.chunk.is_empty() {
            match self.answer.as_mut().expect("sent").blocking_recv() {
                Some(Ok(chunk)) => self.chunk = chunk,
                Some(Err(e)) => return Err(e),
                None => return Ok(0), // the answer is complete
            }
        }
        let n = out.len().min(self.chunk.len());
        out[..n].copy_from_slice(&self.chunk[..n]);
        self.chunk = self.chunk.slice(n..);
        Ok(n)
    }
}

impl Stream {
    /// Sends the request on the transport's runtime (libgit2 calls from a blocking context) and
    /// returns the channel its answer arrives on.
    fn send(&mut self) -> tokio::sync::mpsc::Receiver<io::Result<Bytes>> {
        let (tx, rx) = tokio::sync::mpsc::channel(16);
        let mut request = hyper::Request::builder()
            .method(self.method)
            .uri(&self.url)
            .header("user-agent", "git/2.0 (strata)")
            .header("accept", "*/*");
        if let Some(service) = self.content_type {
            request = request
                .header("content-type", format!("application/x-git-{service}-request"))
                .header("accept", format!("application/x-git-{service}-result"));
        }
        if let Some(auth) = &self.authorization {
            request = request.header("authorization", auth);
        }
        let body = std::mem::take(&mut self.body);
        let request = request.body(Full::new(Bytes::from(body)));
        let (client, url) = (self.client.clone(), self.url.clone());
        runtime().spawn(async move {
            let fail = async |message: String| {
                let _ = tx.send(Err(io::Error::other(message))).await;
            };
            let request = match request {
                Ok(r) => r,
                Err(e) => return fail(format!("{url}: {e}")).await,
            };
            let response = match client.send(request).await {
                Ok(r) => r,
                Err(e) => return fail(e.to_string()).await,
            };
            let shown = crate::net::error::redact_url(&url);
            match response.status().as_u16() {
                200 => {}
                401 | 403 => {
                    return fail(format!(
                        "{shown}: {} — the remote refused the configured credentials (repository.credentials)",
                        response.status()
                    ))
                    .await;
                }
                code => return fail(format!("{shown}: the remote answered {code}")).await,
            }
            let mut body = response.into_body();
            loop {
                match body.frame().await {
                    None => return,
                    // Read timeouts and TLS failures arrive here already explained.
                    Some(Err(e)) => return fail(format!("{shown}: {}", crate::net::failure_of(&e))).await,
                    Some(Ok(frame)) => {
                        if let Ok(data) = frame.into_data()
                            && tx.send(Ok(data)).await.is_err()
                        {
                            return;
                        }
                    }
                }
            }
        });
        rx
    }
}
