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

use crate::daemon::store::Store as _;
use std::path::PathBuf;
use std::sync::Arc;

use tracing::info;

use super::super::audit::{self, Actor, Outcome};
use super::super::selection::{self, Invalid, Selection, Selector};
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
    /// The approval rules in force do not let this person approve (or not again, or not
    /// their own commit): why, naming the rule.
    Forbidden(String),
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
            Refused::Forbidden(why) => write!(f, "{why}"),
            Refused::Internal(e) => write!(f, "{e}"),
        }
    }
}

/// Why `actor` may not approve `cluster`'s update at `revision` under the approval rules in
/// force, if they may not ([`crate::approval::refusal`]).
pub async fn forbidden(
    shared: &Shared,
    cluster: &str,
    revision: &str,
    actor: &Actor,
) -> Result<Option<String>, String> {
    let in_force = shared.approval_rules.lock().unwrap_or_else(|p| p.into_inner()).get(cluster).cloned();
    let Some(in_force) = in_force.filter(|r| !r.rules.is_empty()) else { return Ok(None) };
    let given: Vec<crate::approval::Given> = shared
        .store
        .approvals(cluster)
        .await
        .map_err(|e| e.to_string())?
        .into_iter()
        .filter(|a| a.revision == revision)
        .map(|a| crate::approval::Given { identity: a.identity, groups: a.groups })
        .collect();
    let applying: Vec<&crate::approval::Rule> = in_force.rules.iter().collect();
    let person = crate::approval::Person { identity: &actor.identity, groups: &actor.groups };
    Ok(crate::approval::refusal(&applying, &given, &in_force.authors, &person))
}

/// The first cluster of `selection` whose approval rules do not let `actor` approve it, and why:
/// what the view says instead of offering the form.
pub async fn forbidden_in(shared: &Shared, selection: &Selection, actor: &Actor) -> Option<String> {
    for (cluster, at) in &selection.clusters {
        if let Some(why) = forbidden(shared, cluster, at, actor).await.unwrap_or_else(Some) {
            return Some(format!("{cluster}: {why}"));
        }
    }
    None
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
    actor: &Actor,
) -> Result<Approval, Refused> {
    let result = approve_one(shared, cluster, revision, actor).await;
    let entry = match &result {
        Ok(approval) => actor
            .entry("approve", Outcome::Done)
            .revision(Some(&approval.revision))
            .detail("approved the pending update"),
        Err(refused) => actor.entry("approve", Outcome::Refused).revision(revision).detail(refused.to_string()),
    };
    audit::record(shared, entry.cluster(cluster)).await;
    result
}

async fn approve_one(
    shared: &Arc<Shared>,
    cluster: &str,
    revision: Option<&str>,
    actor: &Actor,
) -> Result<Approval, Refused> {
    let (by, via) = (actor.who.as_str(), actor.via.as_str());
    let wanted = parse_revision(revision.filter(|r| !r.trim().is_empty()).ok_or(Refused::MissingRevision)?)?;
    let store = &shared.store;
    store.cluster(cluster).await.map_err(|e| Refused::Internal(e.to_string()))?.ok_or(Refused::NoCluster)?;
    let pending =
        store.pending(cluster).await.map_err(|e| Refused::Internal(e.to_string()))?.ok_or(Refused::NothingPending)?;
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
    if let Some(why) = forbidden(shared, cluster, &pending.head_revision, actor).await.map_err(Refused::Internal)? {
        return Err(Refused::Forbidden(why));
    }
    let approval = store
        .approve(cluster, &pending.head_revision, &actor.approver())
        .await
        .map_err(|e| Refused::Internal(e.to_string()))?;
    info!(cluster, revision = %pending.head_revision, by = ?by, via, "Pending update approved.");
    shared.touch();
    let _ = shared.triggers.try_send(Trigger::Reevaluate(format!("approval of {cluster}")));
    Ok(approval)
}

/// What the approver was shown of a selection: the digest of the exact set (the view, the CLI),
/// or the names themselves (scripts that list them).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Seen {
    Digest(String),
    Clusters(Vec<String>),
}

/// Why a selection was not approved.
#[derive(Debug, PartialEq, Eq)]
pub enum SelectionRefused {
    Invalid(Invalid),
    /// A revision is needed, and it must be a commit id: as for one cluster.
    Revision(Refused),
    /// Neither a digest nor the clusters shown.
    MissingSeen,
    /// No pending update that waits for approval is selected.
    Nothing {
        selects: String,
    },
    /// The selected updates are at more than one revision: each needs its own review.
    Revisions(Vec<(String, usize)>),
    /// The selected updates are at another revision than the one reviewed.
    Stale {
        pending: String,
        selection: Selection,
    },
    /// The set is not the one shown (a cluster joined or left): shown again as it is now.
    Changed {
        selection: Selection,
    },
    /// The approval rules in force for a cluster of the selection do not let this person
    /// approve it: nothing of the selection is approved.
    Forbidden {
        cluster: String,
        why: String,
    },
    Internal(String),
}

impl std::fmt::Display for SelectionRefused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SelectionRefused::Invalid(e) => write!(f, "{e}"),
            SelectionRefused::Revision(r) => write!(f, "{r}"),
            SelectionRefused::MissingSeen => write!(
                f,
                "say what you were shown: `digest` (of the selection, as GET /api/v1/approvals gives it) or `clusters` (every name)"
            ),
            SelectionRefused::Nothing { selects } => {
                write!(f, "{selects}: no pending update waits for approval (strata status lists what is pending)")
            }
            SelectionRefused::Revisions(revisions) => {
                let list: Vec<String> =
                    revisions.iter().map(|(r, n)| format!("{} ({n} cluster{})", short(r), plural(*n))).collect();
                write!(
                    f,
                    "the selection holds updates at {} revisions: {}; review and approve each (narrow it with a tag, or approve per cluster)",
                    revisions.len(),
                    list.join(", ")
                )
            }
            SelectionRefused::Stale { pending, selection } => write!(
                f,
                "the selected updates are now at {}, not the revision you reviewed ({} cluster{}); review {} and approve that",
                short(pending),
                selection.clusters.len(),
                plural(selection.clusters.len()),
                short(pending)
            ),
            SelectionRefused::Changed { selection } => write!(
                f,
                "the selection changed since it was shown: it is now {} cluster{} ({}); look at it again and approve that",
                selection.clusters.len(),
                plural(selection.clusters.len()),
                crate::rollout::gate::some_names(&selection.names(), 10),
            ),
            SelectionRefused::Forbidden { cluster, why } => {
                write!(f, "{cluster}: {why}; nothing of the selection was approved")
            }
            SelectionRefused::Internal(e) => write!(f, "{e}"),
        }
    }
}

fn short(revision: &str) -> &str {
    &revision[..revision.len().min(7)]
}

fn plural(n: usize) -> &'static str {
    if n == 1 { "" } else { "s" }
}

/// What `selector` selects now: the pending updates that wait for approval, each at its revision.
pub async fn current(shared: &Shared, selector: &Selector) -> Result<Selection, SelectionRefused> {
    let rollouts = shared.rollouts.lock().unwrap_or_else(|p| p.into_inner()).clone();
    selector.validate(&rollouts).map_err(SelectionRefused::Invalid)?;
    let internal = |e: super::super::store::StoreError| SelectionRefused::Internal(e.to_string());
    let fleet = shared.store.fleet().await.map_err(internal)?;
    let progress =
        if selector.rollout.is_some() { shared.store.rollouts().await.map_err(internal)? } else { Vec::new() };
    let tags = shared.tags.lock().unwrap_or_else(|p| p.into_inner()).clone();
    Ok(selection::select(selector, &fleet, &tags, &progress))
}

/// Records `by`'s approval of every pending update `selector` selects, at `revision`, provided
/// the selection is exactly what was `seen`; wakes the main loop once. Each cluster's approval
/// names the revision it is for, as one cluster's does.
pub async fn approve_selection(
    shared: &Arc<Shared>,
    selector: &Selector,
    revision: Option<&str>,
    seen: Option<&Seen>,
    actor: &Actor,
) -> Result<(Selection, Vec<Approval>), SelectionRefused> {
    let result = approve_selected(shared, selector, revision, seen, actor).await;
    match &result {
        // One entry per cluster: the trail of a cluster tells every approval of it.
        Ok((selection, approvals)) => {
            for approval in approvals {
                let detail = format!("approved with {} ({} clusters)", selector.describe(), selection.clusters.len());
                let entry = actor.entry("approve", Outcome::Done).cluster(&approval.cluster);
                audit::record(shared, entry.revision(Some(&approval.revision)).detail(detail)).await;
            }
        }
        Err(refused) => {
            let entry = actor.entry("approve", Outcome::Refused).revision(revision);
            audit::record(shared, entry.detail(format!("{}: {refused}", selector.describe()))).await;
        }
    }
    result
}

async fn approve_selected(
    shared: &Arc<Shared>,
    selector: &Selector,
    revision: Option<&str>,
    seen: Option<&Seen>,
    actor: &Actor,
) -> Result<(Selection, Vec<Approval>), SelectionRefused> {
    let (by, via) = (actor.who.as_str(), actor.via.as_str());
    let revision =
        revision.filter(|r| !r.trim().is_empty()).ok_or(SelectionRefused::Revision(Refused::MissingRevision))?;
    let wanted = parse_revision(revision).map_err(SelectionRefused::Revision)?;
    let seen = seen.ok_or(SelectionRefused::MissingSeen)?;
    let selection = current(shared, selector).await?;
    if selection.clusters.is_empty() {
        return Err(SelectionRefused::Nothing { selects: selector.describe() });
    }
    let revisions = selection.revisions();
    if revisions.len() > 1 {
        let counts = revisions
            .iter()
            .map(|r| (r.to_string(), selection.clusters.iter().filter(|(_, at)| at == r).count()))
            .collect();
        return Err(SelectionRefused::Revisions(counts));
    }
    let head = revisions.into_iter().next().expect("one revision").to_string();
    if !head.to_ascii_lowercase().starts_with(&wanted) {
        return Err(SelectionRefused::Stale { pending: head, selection });
    }
    let same = match seen {
        Seen::Digest(digest) => digest.trim().eq_ignore_ascii_case(&selection.digest),
        Seen::Clusters(names) => {
            let mut names: Vec<&str> = names.iter().map(String::as_str).collect();
            names.sort_unstable();
            names.dedup();
            names == selection.names()
        }
    };
    if !same {
        return Err(SelectionRefused::Changed { selection });
    }
    if wanted.len() < head.len() {
        let (dir, prefix, full) = (git_dir(shared), wanted.clone(), head.to_ascii_lowercase());
        let unique = tokio::task::spawn_blocking(move || names_only(dir, &prefix, &full))
            .await
            .map_err(|e| SelectionRefused::Internal(e.to_string()))?
            .map_err(SelectionRefused::Revision)?;
        if !unique {
            return Err(SelectionRefused::Revision(Refused::Ambiguous(wanted)));
        }
    }
    for (cluster, at) in &selection.clusters {
        if let Some(why) = forbidden(shared, cluster, at, actor).await.map_err(SelectionRefused::Internal)? {
            return Err(SelectionRefused::Forbidden { cluster: cluster.clone(), why });
        }
    }
    let mut approvals = Vec::with_capacity(selection.clusters.len());
    for (cluster, at) in &selection.clusters {
        // Approved is what was shown: a cluster whose update moved on in the meantime gets an
        // approval of the reviewed revision, which its newer update does not take.
        let approval = shared
            .store
            .approve(cluster, at, &actor.approver())
            .await
            .map_err(|e| SelectionRefused::Internal(e.to_string()))?;
        approvals.push(approval);
    }
    info!(
        selects = %selector.describe(),
        clusters = selection.clusters.len(),
        revision = %head,
        by = ?by,
        via,
        "Pending updates approved: {}.",
        crate::rollout::gate::some_names(&selection.names(), 10)
    );
    shared.touch();
    let _ = shared.triggers.try_send(Trigger::Reevaluate(format!("approval of {}", selector.describe())));
    Ok((selection, approvals))
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
