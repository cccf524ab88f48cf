//! Commit statuses as Git notes under `refs/notes/strata`, for teams without a forge API:
//! `git log --notes=strata` shows them. One note per commit, one line per context.

use std::path::Path;

use super::Status;

pub const NOTES_REF: &str = "refs/notes/strata";

/// The note text with `status`'s line put in (replacing that context's old line), lines sorted
/// by context: `strata/aws-cluster success: applied aws-profile@1.0.0 (3 created)`.
pub fn merge(existing: &str, status: &Status) -> String {
    let prefix = format!("{} ", status.context);
    let mut lines: Vec<String> =
        existing.lines().filter(|l| !l.trim().is_empty() && !l.starts_with(&prefix)).map(str::to_string).collect();
    let mut line = format!("{} {}: {}", status.context, status.state.as_str(), status.description);
    if let Some(url) = &status.target_url {
        line.push_str(&format!(" <{url}>"));
    }
    lines.push(line);
    lines.sort();
    lines.join("\n") + "\n"
}

/// The state and description a note records for `context` on a commit, if any.
pub fn read(repo: &git2::Repository, revision: &str, context: &str) -> Option<String> {
    let oid = git2::Oid::from_str(revision).ok()?;
    let note = repo.find_note(Some(NOTES_REF), oid).ok()?;
    let prefix = format!("{context} ");
    note.message().ok()?.lines().find(|l| l.starts_with(&prefix)).map(|l| l[prefix.len()..].to_string())
}

/// Why a note could not be written: the step, with git's error (its class and code) as the source.
#[derive(Debug, thiserror::Error)]
pub enum NoteError {
    #[error("{}: {}", path.display(), source.message())]
    Open {
        path: std::path::PathBuf,
        #[source]
        source: git2::Error,
    },
    #[error("{}", source.message())]
    Revision {
        #[source]
        source: git2::Error,
    },
    #[error("writing the note on {revision}: {}", source.message())]
    Write {
        revision: String,
        #[source]
        source: git2::Error,
    },
}

/// Writes `status` into the note of its commit in the repository at `path`.
pub fn write(path: &Path, status: &Status) -> Result<(), NoteError> {
    let repo = git2::Repository::open(path).map_err(|source| NoteError::Open { path: path.to_path_buf(), source })?;
    let oid = git2::Oid::from_str(&status.revision).map_err(|source| NoteError::Revision { source })?;
    let existing = repo
        .find_note(Some(NOTES_REF), oid)
        .ok()
        .and_then(|n| n.message().ok().map(str::to_string))
        .unwrap_or_default();
    let text = merge(&existing, status);
    if text == existing {
        return Ok(());
    }
    let write = |source| NoteError::Write { revision: status.revision.clone(), source };
    let signature = git2::Signature::now("strata", "strata@localhost").map_err(write)?;
    repo.note(&signature, &signature, Some(NOTES_REF), oid, &text, true).map_err(write)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::{State, context};

    #[test]
    fn one_line_per_context_replaced_in_place() {
        let applying = Status::new("r", context("aws-cluster"), State::Pending, "applying aws-profile@1.0.0", None);
        let note = merge("", &applying);
        assert_eq!(note, "strata/aws-cluster pending: applying aws-profile@1.0.0\n");
        let other = Status::new("r", context("aws-staging"), State::Success, "applied", None);
        let note = merge(&note, &other);
        let done = Status::new(
            "r",
            context("aws-cluster"),
            State::Success,
            "applied aws-profile@1.0.0",
            Some("http://s/c".into()),
        );
        assert_eq!(
            merge(&note, &done),
            "strata/aws-cluster success: applied aws-profile@1.0.0 <http://s/c>\nstrata/aws-staging success: applied\n"
        );
    }
}
