//! Git's smart HTTP protocol for libgit2, over hyper and rustls.
//!
//! libgit2's own HTTPS transport links OpenSSL and initialises it in every process that touches
//! Git (about 15 ms here, paid by every CLI run). Registering this transport for `http://` and
//! `https://` instead keeps TLS on rustls with the system's roots — the same stack as the
//! Kubernetes and forge clients — and costs nothing until a remote is fetched.
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
use std::sync::{Mutex, Once, mpsc};

use base64::Engine as _;
use git2::transport::{Service, SmartSubtransport, SmartSubtransportStream, Transport};
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;

use crate::config::{Credentials, read_secret};

static CREDENTIALS: Mutex<Option<Credentials>> = Mutex::new(None);
static REGISTER: Once = Once::new();

/// Makes libgit2 use this transport for http(s) remotes, with these credentials.
pub fn register(credentials: &Credentials) {
    *CREDENTIALS.lock().expect("credentials lock") = Some(credentials.clone());
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

impl SmartSubtransport for SmartHttp {
    fn action(&self, url: &str, action: Service) -> Result<Box<dyn SmartSubtransportStream>, git2::Error> {
        let base = url.trim_end_matches('/');
        let (method, url, content_type) = match action {
            Service::UploadPackLs => ("GET", format!("{base}/info/refs?service=git-upload-pack"), None),
            Service::UploadPack => ("POST", format!("{base}/git-upload-pack"), Some("upload-pack")),
            Service::ReceivePackLs => ("GET", format!("{base}/info/refs?service=git-receive-pack"), None),
            Service::ReceivePack => ("POST", format!("{base}/git-receive-pack"), Some("receive-pack")),
        };
        let credentials = CREDENTIALS.lock().expect("credentials lock").clone().unwrap_or_default();
        let authorization = match &credentials.token_file {
            Some(file) => {
                let token = read_secret(file).map_err(|e| git2::Error::from_str(&e))?;
                let user = credentials.username.as_deref().unwrap_or("x-access-token");
                Some(format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(format!("{user}:{token}"))))
            }
            None => None,
        };
        Ok(Box::new(Stream {
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
    method: &'static str,
    url: String,
    /// `upload-pack` / `receive-pack` for POSTs.
    content_type: Option<&'static str>,
    authorization: Option<String>,
    body: Vec<u8>,
    /// The answer's chunks as they arrive, once the request is sent.
    answer: Option<mpsc::Receiver<io::Result<Bytes>>>,
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
            match self.answer.as_ref().expect("sent").recv() {
                Ok(Ok(chunk)) => self.chunk = chunk,
                Ok(Err(e)) => return Err(e),
                Err(_) => return Ok(0), // the answer is complete
            }
        }
        let n = out.len().min(self.chunk.len());
        out[..n].copy_from_slice(&self.chunk[..n]);
        self.chunk = self.chunk.slice(n..);
        Ok(n)
    }
}

impl Stream {
    /// Sends the request on a thread of its own (libgit2 calls from a blocking context) and
    /// returns the channel its answer arrives on.
    fn send(&mut self) -> mpsc::Receiver<io::Result<Bytes>> {
        let (tx, rx) = mpsc::sync_channel(16);
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
        let url = self.url.clone();
        std::thread::spawn(move || {
            let fail = |tx: &mpsc::SyncSender<io::Result<Bytes>>, message: String| {
                let _ = tx.send(Err(io::Error::other(message)));
            };
            let request = match request {
                Ok(r) => r,
                Err(e) => return fail(&tx, format!("{url}: {e}")),
            };
            let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
                Ok(r) => r,
                Err(e) => return fail(&tx, e.to_string()),
            };
            runtime.block_on(async move {
                let connector = match hyper_rustls::HttpsConnectorBuilder::new().with_native_roots() {
                    Ok(b) => b.https_or_http().enable_http1().build(),
                    Err(e) => return fail(&tx, format!("cannot load the system's TLS roots: {e}")),
                };
                let client =
                    hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new()).build(connector);
                let timeout = std::time::Duration::from_secs(60);
                let response = match tokio::time::timeout(timeout, client.request(request)).await {
                    Err(_) => return fail(&tx, format!("{url}: no answer within {}s", timeout.as_secs())),
                    Ok(Err(e)) => return fail(&tx, format!("{url}: {e}")),
                    Ok(Ok(r)) => r,
                };
                match response.status().as_u16() {
                    200 => {}
                    401 | 403 => {
                        return fail(
                            &tx,
                            format!(
                                "{url}: {} — the remote refused the configured credentials (repository.credentials)",
                                response.status()
                            ),
                        );
                    }
                    code => return fail(&tx, format!("{url}: the remote answered {code}")),
                }
                let mut body = response.into_body();
                loop {
                    match tokio::time::timeout(timeout, body.frame()).await {
                        Err(_) => return fail(&tx, format!("{url}: stalled for {}s", timeout.as_secs())),
                        Ok(None) => return,
                        Ok(Some(Err(e))) => return fail(&tx, format!("{url}: {e}")),
                        Ok(Some(Ok(frame))) => {
                            if let Ok(data) = frame.into_data()
                                && tx.send(Ok(data)).is_err()
                            {
                                return;
                            }
                        }
                    }
                }
            });
        });
        rx
    }
}
