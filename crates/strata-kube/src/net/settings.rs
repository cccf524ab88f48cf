//! What the host configuration says about connections: the proxy, TLS trust and identity per
//! endpoint, and secrets read from files. Parsed by the `strata` crate's `config`, used here.

use std::path::{Path, PathBuf};

/// The proxy every outbound connection goes through (`proxy:`); without it, the environment's
/// HTTPS_PROXY / HTTP_PROXY / NO_PROXY decide.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Proxy {
    /// `http://HOST:PORT`.
    pub url: String,
    /// Hosts reached directly, as NO_PROXY writes them: names (with their subdomains), addresses, CIDR ranges.
    pub no_proxy: Vec<String>,
    pub username: Option<String>,
    pub password_file: Option<PathBuf>,
}

/// Trust and identity for the TLS connections to one endpoint.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Tls {
    /// A PEM bundle of CA certificates to trust.
    pub ca_file: Option<PathBuf>,
    /// Trust the system's roots too (the default); `false` trusts `ca_file` alone.
    pub system_roots: bool,
    pub client_cert_file: Option<PathBuf>,
    pub client_key_file: Option<PathBuf>,
}

impl Default for Tls {
    fn default() -> Self {
        Tls { ca_file: None, system_roots: true, client_cert_file: None, client_key_file: None }
    }
}

/// A secret file that cannot be read: named, with the system's reason kept as the source.
#[derive(Debug, thiserror::Error)]
#[error("cannot read secret file {}: {source}", path.display())]
pub struct SecretFileError {
    pub path: PathBuf,
    #[source]
    pub source: std::io::Error,
}

/// Reads a secret from a file (a systemd credential), without its trailing newline. The error
/// names the file, never the content.
pub fn read_secret(path: &Path) -> Result<String, SecretFileError> {
    std::fs::read_to_string(path)
        .map(|s| s.trim_end_matches(['\n', '\r']).to_string())
        .map_err(|source| SecretFileError { path: path.to_path_buf(), source })
}
