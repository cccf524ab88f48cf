//! TLS material for one client, loaded once (at start, and again on SIGHUP), never per request.
//!
//! ```text
//!   system roots (rustls-native-certs, cached per Network) ─┐
//!   ca_file (PEM bundle: added to them, or alone)          ├─> RootCertStore ─> WebPkiServerVerifier
//!                                                          │                     wrapped in Recorder
//!   client_cert_file + client_key_file (PEM) ──────────────┴─> ClientConfig (client auth when given)
//! ```
//!
//! The [`Recorder`] keeps what a server presented when its certificate is refused, so the error
//! can say whose certificate it was and who issued it — the two facts needed to pick the right
//! CA for `ca_file`.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};

use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};

/// A TLS setting that cannot be used, with the file and what to do.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("{setting} {file}: {problem}")]
pub struct TlsError {
    pub setting: String,
    pub file: String,
    pub problem: String,
}

impl TlsError {
    fn new(setting: &str, file: &Path, problem: impl Into<String>) -> TlsError {
        TlsError { setting: setting.to_string(), file: file.display().to_string(), problem: problem.into() }
    }
}

/// Reads every certificate of a PEM bundle.
pub fn read_certificates(setting: &str, file: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let bytes = std::fs::read(file).map_err(|e| TlsError::new(setting, file, format!("cannot read it: {e}")))?;
    let certificates: Vec<CertificateDer<'static>> =
        CertificateDer::pem_slice_iter(&bytes)
            .collect::<Result<_, _>>()
            .map_err(|e| TlsError::new(setting, file, format!("not a PEM certificate bundle: {e}")))?;
    if certificates.is_empty() {
        return Err(TlsError::new(setting, file, "holds no certificate (expected -----BEGIN CERTIFICATE-----)"));
    }
    Ok(certificates)
}

/// A root store from DER certificates; one that does not parse is an error naming where it came from.
pub fn root_store(
    certificates: &[CertificateDer<'static>],
    setting: &str,
    file: &Path,
) -> Result<RootCertStore, TlsError> {
    let mut store = RootCertStore::empty();
    for (i, certificate) in certificates.iter().enumerate() {
        store.add(certificate.clone()).map_err(|e| {
            TlsError::new(setting, file, format!("certificate {} is not a usable CA certificate: {e}", i + 1))
        })?;
    }
    Ok(store)
}

/// Why no certificate can be trusted: the system has no roots, or rustls refused to build a
/// verifier. The lower error (why the roots could not be loaded) is the source; it is cloned
/// with the error, which the network keeps for every later client.
#[derive(Clone, Debug, thiserror::Error)]
pub enum RootsError {
    #[error("no trusted root certificates found on this system ({})", why_none(.0))]
    NoneFound(#[source] Option<Arc<rustls_native_certs::Error>>),
    #[error("cannot build a certificate verifier: {0}")]
    Verifier(#[source] Arc<rustls::server::VerifierBuilderError>),
}

fn why_none(error: &Option<Arc<rustls_native_certs::Error>>) -> String {
    error.as_ref().map_or_else(|| "none installed".to_string(), |e| e.to_string())
}

/// The system's trusted roots, as the rest of the machine (curl, git) sees them.
pub fn system_roots() -> Result<Vec<CertificateDer<'static>>, RootsError> {
    let mut found = rustls_native_certs::load_native_certs();
    if found.certs.is_empty() {
        let why = (!found.errors.is_empty()).then(|| Arc::new(found.errors.swap_remove(0)));
        return Err(RootsError::NoneFound(why));
    }
    Ok(found.certs)
}

/// A client certificate and its key, from two PEM files.
pub fn read_identity(
    prefix: &str,
    cert_file: &Path,
    key_file: &Path,
) -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>), TlsError> {
    let chain = read_certificates(&format!("{prefix}client_cert_file"), cert_file)?;
    let setting = format!("{prefix}client_key_file");
    let bytes =
        std::fs::read(key_file).map_err(|e| TlsError::new(&setting, key_file, format!("cannot read it: {e}")))?;
    let key = PrivateKeyDer::from_pem_slice(&bytes).map_err(|e| {
        TlsError::new(&setting, key_file, format!("no private key in it (PKCS#8, PKCS#1 or SEC1 PEM): {e}"))
    })?;
    Ok((chain, key))
}

/// A client configuration over `verifier`, with a client certificate when one is given.
pub fn client_config(
    verifier: Arc<Recorder>,
    identity: Option<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>)>,
    identity_files: Option<(&Path, &Path)>,
    prefix: &str,
) -> Result<ClientConfig, TlsError> {
    let builder = ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .expect("ring supports the default protocol versions")
        .dangerous()
        .with_custom_certificate_verifier(verifier);
    let mut config = match (identity, identity_files) {
        (Some((chain, key)), Some((cert_file, _))) => builder.with_client_auth_cert(chain, key).map_err(|e| {
            TlsError::new(
                &format!("{prefix}client_cert_file"),
                cert_file,
                format!("does not go with the key in {prefix}client_key_file: {e}"),
            )
        })?,
        _ => builder.with_no_client_auth(),
    };
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

/// What a server presented, read from its certificate.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Presented {
    pub subject: String,
    pub issuer: String,
    /// DNS names and IP addresses from subjectAltName.
    pub names: Vec<String>,
    pub not_before: String,
    pub not_after: String,
}

impl Presented {
    pub fn read(der: &[u8]) -> Option<Presented> {
        let (_, certificate) = x509_parser::parse_x509_certificate(der).ok()?;
        let mut names = Vec::new();
        if let Ok(Some(san)) = certificate.subject_alternative_name() {
            for name in &san.value.general_names {
                match name {
                    x509_parser::extensions::GeneralName::DNSName(dns) => names.push(dns.to_string()),
                    x509_parser::extensions::GeneralName::IPAddress(bytes) => {
                        let ip = match bytes.len() {
                            4 => <[u8; 4]>::try_from(*bytes).ok().map(|b| std::net::IpAddr::from(b).to_string()),
                            16 => <[u8; 16]>::try_from(*bytes).ok().map(|b| std::net::IpAddr::from(b).to_string()),
                            _ => None,
                        };
                        names.extend(ip);
                    }
                    _ => {}
                }
            }
        }
        let time = |t: x509_parser::time::ASN1Time| t.to_rfc2822().unwrap_or_else(|_| t.to_string());
        Some(Presented {
            subject: certificate.subject().to_string(),
            issuer: certificate.issuer().to_string(),
            names,
            not_before: time(certificate.validity().not_before),
            not_after: time(certificate.validity().not_after),
        })
    }
}

/// A verifier that remembers, per server name, the certificate it last refused.
#[derive(Debug)]
pub struct Recorder {
    inner: Arc<dyn ServerCertVerifier>,
    refused: Mutex<HashMap<String, Presented>>,
}

impl Recorder {
    pub fn new(inner: Arc<dyn ServerCertVerifier>) -> Arc<Recorder> {
        Arc::new(Recorder { inner, refused: Mutex::new(HashMap::new()) })
    }

    /// Verifies against `roots` with rustls' WebPKI verifier.
    pub fn webpki(roots: RootCertStore) -> Result<Arc<Recorder>, RootsError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let inner = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider)
            .build()
            .map_err(|e| RootsError::Verifier(Arc::new(e)))?;
        Ok(Recorder::new(inner))
    }

    /// What `server` presented when it was last refused (taken: each failure reports its own).
    pub fn take_refused(&self, server: &str) -> Option<Presented> {
        self.refused.lock().expect("recorder lock").remove(server)
    }
}

impl ServerCertVerifier for Recorder {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let verdict = self.inner.verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now);
        if verdict.is_err()
            && let Some(presented) = Presented::read(end_entity)
        {
            self.refused.lock().expect("recorder lock").insert(server_name.to_str().into_owned(), presented);
        }
        verdict
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }

    fn requires_raw_public_keys(&self) -> bool {
        self.inner.requires_raw_public_keys()
    }

    fn root_hint_subjects(&self) -> Option<&[rustls::DistinguishedName]> {
        self.inner.root_hint_subjects()
    }
}
