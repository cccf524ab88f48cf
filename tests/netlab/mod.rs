//! An enterprise network on loopback: a private CA made in the test (rcgen) with server and client
//! certificates written as PEM files, TLS server configurations (optionally requiring a client
//! certificate), and a forward proxy that records what goes through it.
//!
//! The proxy speaks CONNECT (tunnels for HTTPS) and absolute-form requests (plain HTTP), can
//! require basic authentication, and refuses destinations off loopback with 403, as a corporate
//! proxy refuses what its allow-list does not name.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use base64::Engine as _;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose,
    SanType,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A certificate and its key, as PEM files.
#[derive(Clone, Debug)]
pub struct Pem {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// A private CA in a directory of its own.
pub struct Ca {
    pub name: String,
    pub dir: PathBuf,
    /// The CA's certificate (what `ca_file` gets).
    pub cert: PathBuf,
    issuer: Issuer<'static, KeyPair>,
}

impl Ca {
    pub fn new(dir: &Path, name: &str) -> Ca {
        std::fs::create_dir_all(dir).unwrap();
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.distinguished_name.push(DnType::CommonName, name);
        params.distinguished_name.push(DnType::OrganizationName, "strata tests");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages =
            vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
        let certificate = params.self_signed(&key).unwrap();
        let cert = dir.join(format!("{}.pem", file_name(name)));
        std::fs::write(&cert, certificate.pem()).unwrap();
        Ca { name: name.to_string(), dir: dir.to_path_buf(), cert, issuer: Issuer::new(params, key) }
    }

    fn issue(&self, common_name: &str, sans: &[&str], client: bool, expired: bool) -> Pem {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.distinguished_name.push(DnType::CommonName, common_name);
        for san in sans {
            params.subject_alt_names.push(match san.parse() {
                Ok(ip) => SanType::IpAddress(ip),
                Err(_) => SanType::DnsName((*san).try_into().unwrap()),
            });
        }
        params.extended_key_usages =
            vec![if client { ExtendedKeyUsagePurpose::ClientAuth } else { ExtendedKeyUsagePurpose::ServerAuth }];
        if expired {
            params.not_before = rcgen::date_time_ymd(2020, 1, 1);
            params.not_after = rcgen::date_time_ymd(2021, 1, 1);
        }
        let key = KeyPair::generate().unwrap();
        let certificate = params.signed_by(&key, &self.issuer).unwrap();
        let base = self.dir.join(file_name(common_name));
        let pem = Pem { cert: base.with_extension("crt.pem"), key: base.with_extension("key.pem") };
        std::fs::write(&pem.cert, certificate.pem()).unwrap();
        std::fs::write(&pem.key, key.serialize_pem()).unwrap();
        pem
    }

    /// A server certificate for these names (DNS names or IP addresses).
    pub fn server(&self, common_name: &str, sans: &[&str]) -> Pem {
        self.issue(common_name, sans, false, false)
    }

    /// A server certificate that expired in 2021.
    pub fn expired_server(&self, common_name: &str, sans: &[&str]) -> Pem {
        self.issue(common_name, sans, false, true)
    }

    pub fn client(&self, common_name: &str) -> Pem {
        self.issue(common_name, &[], true, false)
    }
}

fn file_name(name: &str) -> String {
    name.chars().map(|c| if c.is_ascii_alphanumeric() { c.to_ascii_lowercase() } else { '-' }).collect()
}

/// A TLS server configuration presenting `pem`; with `clients`, a certificate issued by that CA
/// is required of every client.
pub fn server_config(pem: &Pem, clients: Option<&Ca>) -> Arc<rustls::ServerConfig> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let chain: Vec<CertificateDer<'static>> =
        CertificateDer::pem_file_iter(&pem.cert).unwrap().collect::<Result<_, _>>().unwrap();
    let key = PrivateKeyDer::from_pem_file(&pem.key).unwrap();
    let builder =
        rustls::ServerConfig::builder_with_provider(provider.clone()).with_safe_default_protocol_versions().unwrap();
    let builder = match clients {
        Some(ca) => {
            let mut roots = rustls::RootCertStore::empty();
            roots.add(CertificateDer::from_pem_file(&ca.cert).unwrap()).unwrap();
            let verifier =
                rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider).build().unwrap();
            builder.with_client_cert_verifier(verifier)
        }
        None => builder.with_no_client_auth(),
    };
    Arc::new(builder.with_single_cert(chain, key).unwrap())
}

/// One request the proxy saw: `CONNECT host:port` or `GET http://host:port/path`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Through {
    pub method: String,
    pub target: String,
    pub proxy_authorization: Option<String>,
    /// What the proxy answered itself (200 for an opened tunnel, 407, 403), or 0 when it forwarded.
    pub answered: u16,
}

pub struct Proxy {
    pub url: String,
    seen: Arc<Mutex<Vec<Through>>>,
}

impl Proxy {
    pub fn start() -> Proxy {
        Proxy::start_with(None)
    }

    /// A proxy that wants `user:password` as basic authentication.
    pub fn start_with(credentials: Option<(&str, &str)>) -> Proxy {
        let expected = credentials
            .map(|(u, p)| format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(format!("{u}:{p}"))));
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let seen = Arc::new(Mutex::new(Vec::new()));
        let recorded = seen.clone();
        std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
            runtime.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener).unwrap();
                loop {
                    let Ok((stream, _)) = listener.accept().await else { continue };
                    tokio::spawn(relay(stream, expected.clone(), recorded.clone()));
                }
            });
        });
        Proxy { url, seen }
    }

    pub fn seen(&self) -> Vec<Through> {
        self.seen.lock().unwrap().clone()
    }

    /// Whether anything for `host:port` went through (a tunnel or a forwarded request).
    pub fn saw(&self, authority: &str) -> bool {
        self.seen().iter().any(|t| t.target == authority || t.target.contains(&format!("//{authority}/")))
    }
}

async fn relay(mut client: tokio::net::TcpStream, expected: Option<String>, seen: Arc<Mutex<Vec<Through>>>) {
    let mut buffer = Vec::new();
    let head_end = loop {
        let mut chunk = [0u8; 4096];
        let Ok(n) = client.read(&mut chunk).await else { return };
        if n == 0 {
            return;
        }
        buffer.extend_from_slice(&chunk[..n]);
        if let Some(i) = buffer.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        if buffer.len() > 64 * 1024 {
            return;
        }
    };
    let mut headers = [httparse::EMPTY_HEADER; 64];
    let mut request = httparse::Request::new(&mut headers);
    if !matches!(request.parse(&buffer[..head_end]), Ok(httparse::Status::Complete(_))) {
        return;
    }
    let method = request.method.unwrap_or("").to_string();
    let target = request.path.unwrap_or("").to_string();
    let authorization = request
        .headers
        .iter()
        .find(|h| h.name.eq_ignore_ascii_case("proxy-authorization"))
        .map(|h| String::from_utf8_lossy(h.value).into_owned());
    let authority = if method == "CONNECT" {
        target.clone()
    } else {
        target.split_once("://").map(|(_, rest)| rest.split('/').next().unwrap_or("").to_string()).unwrap_or_default()
    };
    let record = |answered: u16| {
        seen.lock().unwrap().push(Through {
            method: method.clone(),
            target: target.clone(),
            proxy_authorization: authorization.clone(),
            answered,
        })
    };
    if expected.is_some() && authorization != expected {
        record(407);
        let _ = client
            .write_all(b"HTTP/1.1 407 Proxy Authentication Required\r\nProxy-Authenticate: Basic realm=\"test proxy\"\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
            .await;
        return;
    }
    // Loopback only: this proxy never reaches past the machine.
    let host = authority.rsplit_once(':').map(|(h, _)| h).unwrap_or(&authority);
    if !matches!(host, "127.0.0.1" | "localhost" | "[::1]") {
        record(403);
        let _ = client.write_all(b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\nConnection: close\r\n\r\n").await;
        return;
    }
    let Ok(mut upstream) = tokio::net::TcpStream::connect(authority.replace("localhost", "127.0.0.1")).await else {
        record(502);
        let _ = client.write_all(b"HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\nConnection: close\r\n\r\n").await;
        return;
    };
    if method == "CONNECT" {
        record(200);
        if client.write_all(b"HTTP/1.1 200 Connection Established\r\n\r\n").await.is_err() {
            return;
        }
        if head_end < buffer.len() && upstream.write_all(&buffer[head_end..]).await.is_err() {
            return;
        }
    } else {
        record(0);
        if upstream.write_all(&buffer).await.is_err() {
            return;
        }
    }
    let _ = tokio::io::copy_bidirectional(&mut client, &mut upstream).await;
}
