//! The daemon's network material, and what went wrong with the network lately.
//!
//! ```text
//!   strata.yaml: proxy, repository.{ca_file, client_*_file}, status.{…}   (start, and SIGHUP)
//!     └─> Material { Network, status client } ── repository client registered with the Git transport
//!          generation +1 on reload ──> workers reconnect their Kubernetes targets
//!   fetch / delivery fails ──> problems["repository" | "status"] ──> /readyz, strata status, the view
//!   fetch / delivery works ──> cleared
//! ```
//!
//! Certificates, keys and the proxy password are read when the material is built, never per
//! request; a reload that fails keeps the material in use and says which file is wrong.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use serde::Serialize;

use super::store::{now_ms, rfc3339};
use crate::config::{Config, RepoLocation, StatusSink};
use crate::net::{Network, Settings, Timeouts};
use crate::report::http::Client as ForgeClient;

/// Where a network failure happened: the repository's remote or the status provider.
pub const REPOSITORY: &str = "repository";
pub const STATUS: &str = "status";

/// The latest failure of one kind of outbound traffic, as data for the endpoints and the view.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Problem {
    /// `repository` or `status`.
    pub source: &'static str,
    /// The failure as logged: step, host, setting to check. Never a credential.
    pub message: String,
    /// When it first failed (RFC 3339), and how many times in a row.
    pub since: String,
    pub failures: u64,
}

/// Why the network material could not be (re)loaded: the host config named, with what failed
/// (a proxy, a CA file, a client certificate) as the source; or, on a reload, the config's own
/// diagnostics.
#[derive(Debug, thiserror::Error)]
pub enum MaterialError {
    #[error("{file}: {source}")]
    Setup {
        file: String,
        #[source]
        source: crate::net::SetupError,
    },
    #[error("{0}")]
    Config(crate::diag::Diagnostics),
}

/// Loaded from the host config.
pub struct Material {
    pub network: Arc<Network>,
    /// The forge client for commit statuses and pull-request plans.
    pub status: Option<ForgeClient>,
}

impl Material {
    /// Builds everything, and points the Git transport at the repository's client.
    pub fn load(config: &Config) -> Result<Material, MaterialError> {
        let setup = |source| MaterialError::Setup { file: config.file.display().to_string(), source };
        let network = Arc::new(Network::new(config.proxy.as_ref()).map_err(setup)?);
        if let Some(repository) = &config.repository
            && let RepoLocation::Remote(url) = &repository.location
            && (url.starts_with("https://") || url.starts_with("http://"))
        {
            let client =
                network.client(&repository.tls, "repository.", Settings::repository(), Timeouts::GIT).map_err(setup)?;
            super::smart_http::register(client, &repository.credentials);
        }
        let status = match &config.status {
            Some(status) if matches!(status.sink, StatusSink::Forge { .. }) => {
                Some(ForgeClient::for_status(&network, &status.tls).map_err(setup)?)
            }
            _ => None,
        };
        Ok(Material { network, status })
    }
}

pub struct NetworkState {
    current: RwLock<Arc<Material>>,
    generation: AtomicU64,
    problems: Mutex<BTreeMap<&'static str, Problem>>,
}

impl NetworkState {
    pub fn load(config: &Config) -> Result<NetworkState, MaterialError> {
        Ok(NetworkState {
            current: RwLock::new(Arc::new(Material::load(config)?)),
            generation: AtomicU64::new(0),
            problems: Mutex::new(BTreeMap::new()),
        })
    }

    /// Reads the host config again and replaces the proxy and TLS material (SIGHUP). Other
    /// settings take effect on restart.
    pub fn reload(&self, file: &Path) -> Result<(), MaterialError> {
        let config = Config::load(file).map_err(MaterialError::Config)?;
        let material = Material::load(&config)?;
        *self.current.write().expect("network lock") = Arc::new(material);
        self.generation.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    pub fn current(&self) -> Arc<Material> {
        self.current.read().expect("network lock").clone()
    }

    /// Bumped by every reload: a connection made before it uses old material.
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Relaxed)
    }

    /// Notes a failure of `source` (kept until it works again).
    pub fn failed(&self, source: &'static str, message: &str) {
        let mut problems = self.problems.lock().expect("problems lock");
        let entry = problems.entry(source).or_insert_with(|| Problem {
            source,
            message: String::new(),
            since: rfc3339(now_ms() / 1000),
            failures: 0,
        });
        entry.message = message.to_string();
        entry.failures += 1;
    }

    pub fn recovered(&self, source: &'static str) {
        self.problems.lock().expect("problems lock").remove(source);
    }

    pub fn problems(&self) -> Vec<Problem> {
        self.problems.lock().expect("problems lock").values().cloned().collect()
    }

    /// `/readyz`: the daemon serves its last good revision whatever the network does, so it stays
    /// ready; the body says what is failing. JSON for `strata status`, text for people and probes.
    /// `/readyz`'s answer: the daemon's own verdict (`Err(why)` while not ready), with what the
    /// network is failing at — which never makes the daemon unready on its own: the last good
    /// revision keeps serving. As text, or JSON for `strata status`.
    pub fn readiness(&self, verdict: Result<(), &str>, json: bool) -> (u16, String) {
        let code = if verdict.is_ok() { 200 } else { 503 };
        let problems = self.problems();
        if json {
            let body = serde_json::json!({ "ready": verdict.is_ok(), "reason": verdict.err(), "problems": problems });
            return (code, serde_json::to_string_pretty(&body).expect("serialises"));
        }
        let mut text = match verdict {
            Ok(()) => "ready\n".to_string(),
            Err(why) => format!("{why}\n"),
        };
        for p in problems {
            text.push_str(&format!("{}: failing since {} ({}×): {}\n", p.source, p.since, p.failures, p.message));
        }
        (code, text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state() -> NetworkState {
        NetworkState {
            current: RwLock::new(Arc::new(Material {
                network: Arc::new(Network::with_router(crate::net::Router::direct())),
                status: None,
            })),
            generation: AtomicU64::new(0),
            problems: Mutex::new(BTreeMap::new()),
        }
    }

    #[test]
    fn failures_are_kept_until_recovery_and_shown_in_readyz() {
        let state = state();
        assert_eq!(state.readiness(Ok(()), false), (200, "ready\n".to_string()));
        state.failed(REPOSITORY, "GET https://git.example/x: connection refused");
        state.failed(REPOSITORY, "GET https://git.example/x: TLS: untrusted");
        let (code, text) = state.readiness(Ok(()), false);
        assert_eq!(code, 200, "the last good revision keeps serving");
        assert!(text.starts_with("ready\nrepository: failing since "), "{text}");
        assert!(text.contains("(2×): GET https://git.example/x: TLS: untrusted"), "{text}");
        let (_, json) = state.readiness(Ok(()), true);
        let json: serde_json::Value = serde_json::from_str(&json).unwrap();
        assert_eq!(json["problems"][0]["source"], "repository");
        assert_eq!(json["problems"][0]["failures"], 2);
        assert_eq!(state.readiness(Err("starting"), false).0, 503);
        state.recovered(REPOSITORY);
        assert!(state.problems().is_empty());
    }
}
