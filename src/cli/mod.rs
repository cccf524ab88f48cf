//! The commands, by group: reading the repository ([`repo`]), acting on clusters ([`apply`]),
//! and the daemon with the commands that ask it ([`daemon`]). What they share: how a command fails,
//! how it opens the repository, and how it prints.

pub mod apply;
pub mod daemon;
pub mod repo;
pub mod rollout;

use std::io::Write;

use strata::config::Config;
use strata::diag::Diagnostics;
use strata::model::{Cluster, Model};
use strata::repo as loader;
use strata::source::{self, Snapshot, SourceError};

use crate::Cli;

/// Why a command failed, which decides its exit code.
pub enum Failure {
    /// Invalid input, with the findings.
    Invalid(Diagnostics, Option<String>),
    /// Invalid input that is not about the repository's files (bad flags, unknown revision).
    Usage(String),
    Internal(String),
}

impl From<SourceError> for Failure {
    fn from(e: SourceError) -> Self {
        if let Some(diagnostic) = e.diagnostic() {
            return Failure::Invalid(diagnostic.into(), None);
        }
        match e {
            SourceError::Git(message) => Failure::Internal(format!("git: {message}")),
            other => Failure::Usage(other.to_string()),
        }
    }
}

pub fn snapshot(cli: &Cli) -> Result<Snapshot, Failure> {
    Ok(source::open(&cli.repo, cli.path.as_deref(), cli.rev.as_deref(), cli.worktree)?)
}

pub fn at(snapshot: &Snapshot) -> String {
    format!("at {}", snapshot.short_revision())
}

pub fn load(snapshot: &Snapshot) -> Result<Model, Failure> {
    loader::load(snapshot.tree.as_ref()).map_err(|d| Failure::Invalid(d, Some(at(snapshot))))
}
pub fn plural(n: usize) -> &'static str {
    if n == 1 { "" } else { "s" }
}
pub fn find<'m>(model: &'m Model, name: &str) -> Result<&'m Cluster, Failure> {
    model.clusters.get(name).ok_or_else(|| {
        let known: Vec<_> = model.clusters.keys().map(String::as_str).collect();
        Failure::Usage(format!("no cluster named `{name}` (clusters: {})", known.join(", ")))
    })
}
pub fn print(text: &str) -> Result<u8, Failure> {
    let mut stdout = std::io::stdout().lock();
    match stdout.write_all(text.as_bytes()).and_then(|_| stdout.flush()) {
        // A closed pipe (`strata render x | head`) is not an error.
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(Failure::Internal(e.to_string())),
        _ => Ok(0),
    }
}
pub fn columns(rows: &[Vec<String>]) -> String {
    let width = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..width)
        .map(|i| rows.iter().filter_map(|r| r.get(i)).map(|c| c.chars().count()).max().unwrap_or(0))
        .collect();
    let mut out = String::new();
    for row in rows {
        let cells: Vec<String> = row
            .iter()
            .enumerate()
            .map(|(i, c)| if i + 1 == row.len() { c.clone() } else { format!("{c:<w$}", w = widths[i]) })
            .collect();
        out.push_str(cells.join("  ").trim_end());
        out.push('\n');
    }
    out
}
pub fn runtime() -> Result<tokio::runtime::Runtime, Failure> {
    // One thread: the work is waiting on the network, and a single-threaded runtime spares the
    // cross-thread wake-ups that otherwise cost more CPU than the requests themselves.
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| Failure::Internal(format!("cannot start the async runtime: {e}")))
}
/// What the host config (when one is given) decides about rendering: the namespaces it lets a
/// repository write to, and strata's own in Kubernetes mode. Markers and digests over Secret
/// values get a key of this process's own.
pub fn render_settings(config: Option<&Config>) -> strata::render::Settings {
    let own = config.and_then(|c| c.kubernetes.as_ref()).and_then(|k| k.namespace.as_deref());
    let allowed = config.map(|c| c.allow_namespaces.as_slice()).unwrap_or_default();
    let redactor = config.map(|c| c.apply.redactor.clone()).unwrap_or_else(strata::redact::Redactor::random);
    let settings = strata::render::Settings::new(own, allowed, redactor);
    match config {
        Some(config) => settings.with_limits(config.render_limits),
        None => settings,
    }
}

pub fn load_config(path: &std::path::Path) -> Result<Config, Failure> {
    Config::load(path).map_err(|d| Failure::Invalid(d, None))
}
