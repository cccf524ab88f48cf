//! Approving a pending update: the one action behind `POST /api/v1/clusters/NAME/approve`
//! (and so `strata approve`) and the view's Approve button.
//!
//! In: the cluster, the revision the approver reviewed, and who they are. Out: an approval
//! recorded for exactly that revision, or why not. An approval is bound to what was reviewed:
//! when the pending update moved on (an in-place edit committed after the review), the approval
//! is refused with the revision that is pending now, which needs its own review. A revision is
//! the full commit id or a prefix of at least 7 hex digits that names only that commit in the
//! repository (a prefix that also matches another object could be a commit pushed to collide
//! with the reviewed one).

use std::path::PathBuf;
use std::sync::Arc;

use tracing::info;

use super::super::store::Approval;
use super::super::{Shared, Trigger};

/// Why an approval was not recorded.
#[derive(Debug, PartialEq, Eq)]
pub enum Refused {
    NoCluster,
    NothingPending,
    /// No revision given.
    MissingRevision,
    /// Not a commit id or a prefix of one.
    Malformed(String),
    /// The reviewed revision is no longer the pending one; this one is.
    Stale {
        pending: String,
    },
    /// The prefix names more than one object in the repository.
    Ambiguous(String),
    /// A rollout holds the update until the cluster's wave comes.
    HeldByRollout {
        rollout: String,
        wave: String,
    },
    Internal(String),
}

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Refused::NoCluster => write!(f, "no such cluster"),
            Refused::NothingPending => write!(f, "there is no pending update to approve"),
            Refused::MissingRevision => {
                write!(f, "say which revision you reviewed: `revision` (the pending update's commit id)")
            }
            Refused::Malformed(r) => {
                write!(f, "revision {r:?} is not a commit id (give the full id, or at least its first 7 hex digits)")
            }
            Refused::Stale { pending } => write!(
                f,
                "the pending update is now at {pending}, not the revision you reviewed; review {} and approve that",
                &pending[..pending.len().min(7)]
            ),
            Refused::Ambiguous(r) => {
                write!(f, "revision prefix {r} names more than one object in the repository; give the full commit id")
            }
            Refused::HeldByRollout { rollout, wave } => write!(
                f,
                "rollout {rollout} holds this update until wave {wave} comes; approve it then (strata rollout status {rollout})"
            ),
            Refused::Internal(e) => write!(f, "{e}"),
        }
    }
}

/// A commit id, or a prefix of one, as the approver wrote it (lower-cased).
fn parse_revision(revision: &str) -> Result<String, Refused> {
    let revision = revision.trim();
    let hex = revision.bytes().all(|b| b.is_ascii_hexdigit());
    if !hex || revision.len() < 7 || revision.len() > 64 {
        return Err(Refused::Malformed(revision.chars().take(80).collect()));
    }
    Ok(revision.to_ascii_lowercase())
}

/// Where the daemon's repository lives, to look prefixes up in.
fn git_dir(shared: &Shared) -> Option<PathBuf> {
    let config = shared.config.repository.as_ref()?;
    Some(super::super::git::repository_dir(config, &shared.config.state_dir))
}

/// Whether `prefix` names `head` and nothing else in the repository.
fn names_only(git_dir: Option<PathBuf>, prefix: &str, head: &str) -> Result<bool, Refused> {
    let dir = git_dir.ok_or_else(|| Refused::Internal("no repository to look the revision up in".into()))?;
    let repo = git2::Repository::open(&dir)
        .map_err(|e| Refused::Internal(format!("cannot open the repository {}: {}", dir.display(), e.message())))?;
    match repo.find_object_by_prefix(prefix, None) {
        Ok(object) => Ok(object.id().to_string() == head),
        Err(e) if e.code() == git2::ErrorCode::Ambiguous => Ok(false),
        Err(e) => Err(Refused::Internal(format!("cannot look up revision {prefix}: {}", e.message()))),
    }
}

/// Records `by`'s approval of `cluster`'s pending update at `revision`, and wakes the main loop.
/// `via` says where it came from, for the audit log line.
pub async fn approve(
    shared: &Arc<Shared>,
    cluster: &str,
    revision: Option<&str>,
    by: &str,
    via: &str,
) -> Result<Approval, Refused> {
    let wanted = parse_revision(revision.filter(|r| !r.trim().is_empty()).ok_or(Refused::MissingRevision)?)?;
    let store = &shared.store;
    store.cluster(cluster).map_err(|e| Refused::Internal(e.to_string()))?.ok_or(Refused::NoCluster)?;
    let pending =
        store.pending(cluster).map_err(|e| Refused::Internal(e.to_string()))?.ok_or(Refused::NothingPending)?;
    if let super::super::decide::Hold::Rollout { rollout, wave, .. } = pending.hold {
        return Err(Refused::HeldByRollout { rollout, wave });
    }
    let head = pending.head_revision.to_ascii_lowercase();
    if !head.starts_with(&wanted) {
        return Err(Refused::Stale { pending: pending.head_revision });
    }
    if wanted.len() < head.len() {
        let (dir, prefix, full) = (git_dir(shared), wanted.clone(), head.clone());
        let unique = tokio::task::spawn_blocking(move || names_only(dir, &prefix, &full))
            .await
            .map_err(|e| Refused::Internal(e.to_string()))??;
        if !unique {
            return Err(Refused::Ambiguous(wanted));
        }
    }
    let approval = store.approve(cluster, &pending.head_revision, by).map_err(|e| Refused::Internal(e.to_string()))?;
    info!(cluster, revision = %pending.head_revision, by = ?by, via, "Pending update approved.");
    shared.touch();
    let _ = shared.triggers.try_send(Trigger::Reevaluate(format!("approval of {cluster}")));
    Ok(approval)
}

/// A name to record with an approval: what a person typed, without control characters, at most
/// 100 characters.
pub fn clean_name(name: &str) -> Option<String> {
    let name = name.trim();
    (!name.is_empty() && name.chars().count() <= 100 && !name.chars().any(char::is_control)).then(|| name.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn revisions_are_commit_ids_or_long_prefixes() {
        assert_eq!(parse_revision("9F3C2AA").unwrap(), "9f3c2aa");
        assert!(parse_revision(&"a".repeat(40)).is_ok());
        for bad in ["9f3c2a", "main", "HEAD~1", "9f3c2ag", &"a".repeat(65)] {
            assert!(matches!(parse_revision(bad), Err(Refused::Malformed(_))), "{bad}");
        }
    }

    #[test]
    fn names_are_printable() {
        assert_eq!(clean_name("  alice "), Some("alice".into()));
        assert_eq!(clean_name("alice\nINFO forged"), None);
        assert_eq!(clean_name(""), None);
        assert_eq!(clean_name(&"x".repeat(101)), None);
    }
}
