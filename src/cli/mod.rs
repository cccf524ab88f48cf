//! The commands, by group: reading the repository ([`repo`]), acting on clusters ([`apply`]),
//! and the daemon with the commands that ask it ([`daemon`]). What they share: how a command fails,
//! how it opens the repository, and how it prints.

pub mod apply;
pub mod daemon;
pub mod repo;
pub mod rollout;
pub mod supply;

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
            // Git's failures are the host's, not the command's input.
            e @ (SourceError::Git(_) | SourceError::NotGitSnapshot | SourceError::Host(_)) => {
                Failure::Internal(e.to_string())
            }
            other => Failure::Usage(other.to_string()),
        }
    }
}

/// Says on stderr, when a command reads HEAD by default, how many files of the working
/// directory it does not see (edited, added, deleted, untracked), and what reads them.
pub fn warn_uncommitted(git: &source::GitSource, reads_them: &str) {
    if let Some(n) = git.uncommitted().filter(|n| *n > 0) {
        eprintln!(
            "warning: {n} file{} changed since HEAD {} not included; {reads_them}",
            plural(n),
            if n == 1 { "is" } else { "are" }
        );
    }
}

pub fn snapshot(cli: &Cli) -> Result<Snapshot, Failure> {
    Ok(source::open(&cli.repo, cli.path.as_deref(), cli.rev.as_deref(), cli.worktree, &keys(cli)?)?)
}

/// The age identities the command decrypts SOPS files with ([`strata::source::sops::Keys::for_cli`]).
pub fn keys(cli: &Cli) -> Result<std::sync::Arc<strata::source::sops::Keys>, Failure> {
    strata::source::sops::Keys::for_cli(&cli.age_key_file)
        .map(std::sync::Arc::new)
        .map_err(|e| Failure::Usage(e.to_string()))
}

/// As [`snapshot`], for commands given a host config: its `decryption.age_key_files` too (a
/// Kubernetes-mode `decryption.secret` is the daemon's alone).
pub fn snapshot_with(cli: &Cli, config: &Config) -> Result<Snapshot, Failure> {
    let files: Vec<std::path::PathBuf> =
        cli.age_key_file.iter().chain(&config.decryption.age_key_files).cloned().collect();
    let keys = strata::source::sops::Keys::for_cli(&files)
        .map(std::sync::Arc::new)
        .map_err(|e| Failure::Usage(e.to_string()))?;
    Ok(source::open(&cli.repo, cli.path.as_deref(), cli.rev.as_deref(), cli.worktree, &keys)?)
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
    model.clusters.get(name).map(|c| &**c).ok_or_else(|| {
        Failure::Usage(format!(
            "no cluster named `{name}`{}",
            did_you_mean(name, model.clusters.keys().map(String::as_str), "strata clusters")
        ))
    })
}

/// The known names closest to `name`, at most three, by edit distance (letters swapped count
/// once): `; did you mean `c0077`?`. Without a close one, where to see them all (`list`).
pub fn did_you_mean<'a>(name: &str, known: impl Iterator<Item = &'a str>, list: &str) -> String {
    let close = candidates(name, known);
    match close.as_slice() {
        [] => format!(" (`{list}` lists them)"),
        [one] => format!("; did you mean `{one}`?"),
        [rest @ .., last] => format!(
            "; did you mean {} or `{last}`?",
            rest.iter().map(|c| format!("`{c}`")).collect::<Vec<_>>().join(", ")
        ),
    }
}

/// Names within a third of `name`'s length in edits (at least one, at most three), closest
/// first, three at most.
pub fn candidates<'a>(name: &str, known: impl Iterator<Item = &'a str>) -> Vec<&'a str> {
    let most = (name.chars().count() / 3).clamp(1, 3);
    let mut close: Vec<(usize, &str)> = known
        .filter_map(|k| {
            let d = strsim::damerau_levenshtein(name, k);
            (d <= most).then_some((d, k))
        })
        .collect();
    close.sort();
    close.into_iter().take(3).map(|(_, k)| k).collect()
}

/// Prints `value` (what `-o json` shows) as `output` asks: JSON, YAML, the `names` (`-o name`),
/// or the `table` (`wide`: with more columns).
pub fn emit(
    output: crate::Output,
    value: &serde_json::Value,
    names: impl FnOnce() -> Vec<String>,
    table: impl FnOnce(bool) -> String,
) -> Result<u8, Failure> {
    use crate::Output;
    match output {
        Output::Json => print(&(serde_json::to_string_pretty(value).expect("serialises") + "\n")),
        Output::Yaml => print(&strata::yaml::to_string(value)),
        Output::Name => print(&names().into_iter().map(|n| n + "\n").collect::<String>()),
        Output::Text => print(&table(false)),
        Output::Wide => print(&table(true)),
    }
}

/// `1,234`.
pub fn thousands(n: usize) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, d) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(d);
    }
    out
}

/// `10,000 clusters: 9,990 applied, 10 failed`: counts of `states` in order of first
/// appearance, for the line after a listing.
pub fn tally<'a>(what: &str, states: impl Iterator<Item = &'a str>) -> String {
    let mut counts: Vec<(&str, usize)> = Vec::new();
    let mut total = 0;
    for state in states {
        total += 1;
        match counts.iter_mut().find(|(s, _)| *s == state) {
            Some((_, n)) => *n += 1,
            None => counts.push((state, 1)),
        }
    }
    let parts: Vec<String> = counts.iter().map(|(s, n)| format!("{} {s}", thousands(*n))).collect();
    if parts.is_empty() {
        return format!("0 {what}s");
    }
    format!("{} {what}{}: {}", thousands(total), plural(total), parts.join(", "))
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn of_10000_clusters_a_few_close_ones_are_proposed() {
        let names: Vec<String> = (0..10_000).map(|c| format!("c{c:05}")).collect();
        let close = |name: &str| candidates(name, names.iter().map(String::as_str));
        assert_eq!(close("c0077"), ["c00077", "c00177", "c00277"]);
        assert_eq!(close("c00770x"), ["c00770", "c00070", "c00170"]);
        assert!(close("prod-eu-1").is_empty());
        assert_eq!(
            did_you_mean("c00770x", names.iter().map(String::as_str), "strata clusters"),
            "; did you mean `c00770`, `c00070` or `c00170`?"
        );
        assert_eq!(did_you_mean("c0x", ["c01", "d02"].into_iter(), "strata clusters"), "; did you mean `c01`?");
        assert_eq!(did_you_mean("x", ["aws"].into_iter(), "strata clusters"), " (`strata clusters` lists them)");
        assert_eq!(tally("cluster", ["applied", "failed", "applied"].into_iter()), "3 clusters: 2 applied, 1 failed");
        assert_eq!(tally("cluster", std::iter::empty()), "0 clusters");
    }
}
