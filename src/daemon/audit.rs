//! The audit trail: who did what, when, to which cluster or rollout, from where and how.
//!
//! ```text
//!   API, view, CLI (through the API), sign-in ──> record ──┬─> store: append (both backends), pruned by age and count
//!   (approve, promote, pause/resume/abort,                  └─> log line, target `audit` (JSON with --log-format json)
//!    suspend/resume, sign-in/out, refusals)
//!   strata audit, GET /api/v1/audit, /audit ──> store: entries, newest first, filtered
//! ```
//!
//! Entries are only ever added; the store forgets the oldest beyond `audit.retention` (one year
//! by default) and `audit.max_entries`. An entry is written before the action's answer goes
//! out, in the same synchronous call as the action's own record, so what was answered is in
//! the trail even if the daemon is killed right after. A trail that cannot be written does not
//! stop the action (the state it changed is written already): the failure is logged with the
//! entry, so a log shipper still has it.

use crate::daemon::store::Store as _;
use serde::{Deserialize, Serialize};
use tracing::{error, info};

use super::Shared;
use super::store::now_ms;

/// What happened to what was asked.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    Done,
    Refused,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Done => "done",
            Outcome::Refused => "refused",
        }
    }

    pub fn parse(text: &str) -> Option<Outcome> {
        match text {
            "done" => Some(Outcome::Done),
            "refused" => Some(Outcome::Refused),
            _ => None,
        }
    }
}

/// Where a request came from: the status view, the API, or the CLI (which talks to the API and
/// says so with [`CLIENT_HEADER`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Via {
    View,
    Api,
    Cli,
}

impl Via {
    pub fn as_str(self) -> &'static str {
        match self {
            Via::View => "view",
            Via::Api => "api",
            Via::Cli => "cli",
        }
    }

    pub fn parse(text: &str) -> Option<Via> {
        match text {
            "view" => Some(Via::View),
            "api" => Some(Via::Api),
            "cli" => Some(Via::Cli),
            _ => None,
        }
    }

    /// The API's requests: from the CLI when it says so.
    pub fn of_api(headers: &axum::http::HeaderMap) -> Via {
        match headers.get(CLIENT_HEADER).and_then(|v| v.to_str().ok()) {
            Some("cli") => Via::Cli,
            _ => Via::Api,
        }
    }
}

/// The header the CLI sends with its requests to the API, so the trail tells the two apart.
pub const CLIENT_HEADER: &str = "x-strata-client";

/// One entry of the trail.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    /// Milliseconds since the epoch.
    pub at: i64,
    /// approve, promote, pause, resume, abort, suspend, resume-cluster, sign-in, sign-out, or
    /// the action a refusal refused (`write` when the guard refused before knowing which).
    pub action: String,
    pub outcome: Outcome,
    /// Who: the identity's recorded name (`api (alice)`, `ci`, `alice`), `-` when nobody showed.
    pub who: String,
    pub cluster: Option<String>,
    pub rollout: Option<String>,
    pub revision: Option<String>,
    /// What was done, or why it was refused.
    pub detail: String,
    /// The client's address.
    pub from: Option<String>,
    pub via: Via,
}

impl Entry {
    pub fn new(action: &str, outcome: Outcome, who: &str, via: Via, from: Option<std::net::SocketAddr>) -> Entry {
        Entry {
            at: now_ms(),
            action: action.to_string(),
            outcome,
            who: who.to_string(),
            cluster: None,
            rollout: None,
            revision: None,
            detail: String::new(),
            from: from.map(|a| a.ip().to_string()),
            via,
        }
    }

    pub fn cluster(mut self, cluster: &str) -> Entry {
        self.cluster = Some(cluster.to_string());
        self
    }

    pub fn rollout(mut self, rollout: &str) -> Entry {
        self.rollout = Some(rollout.to_string());
        self
    }

    pub fn revision(mut self, revision: Option<&str>) -> Entry {
        self.revision = revision.filter(|r| !r.is_empty()).map(str::to_string);
        self
    }

    pub fn detail(mut self, detail: impl Into<String>) -> Entry {
        self.detail = detail.into();
        self
    }
}

/// Who acts, through which path, from which address: what every entry of theirs carries.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Actor {
    /// As recorded: `ci`, `alice`, `api (alice)`.
    pub who: String,
    /// The identity approval rules count (`api` for `api (alice)`), and its groups.
    pub identity: String,
    pub groups: Vec<String>,
    pub via: Via,
    pub from: Option<std::net::SocketAddr>,
}

impl Actor {
    /// Someone known by the name recorded alone (no groups).
    pub fn new(who: &str, via: Via, from: Option<std::net::SocketAddr>) -> Actor {
        let identity = who.split(" (").next().unwrap_or(who).to_string();
        Actor { who: who.to_string(), identity, groups: Vec::new(), via, from }
    }

    /// An identity (a token's, a signed-in person's) recorded as `who`.
    pub fn of(
        identity: &crate::daemon::http::auth::Identity,
        who: &str,
        via: Via,
        from: Option<std::net::SocketAddr>,
    ) -> Actor {
        Actor { who: who.to_string(), identity: identity.name.clone(), groups: identity.groups.clone(), via, from }
    }

    /// What an approval by this actor records.
    pub fn approver(&self) -> super::store::Approver {
        super::store::Approver {
            recorded: self.who.clone(),
            identity: self.identity.clone(),
            groups: self.groups.clone(),
        }
    }

    /// An entry of this actor's.
    pub fn entry(&self, action: &str, outcome: Outcome) -> Entry {
        Entry::new(action, outcome, &self.who, self.via, self.from)
    }
}

/// Which entries to read: since a time, of a cluster, by a user (the name as recorded, or the
/// identity before ` (`), newest first, at most `limit`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Query {
    pub since: Option<i64>,
    pub cluster: Option<String>,
    pub user: Option<String>,
    pub limit: usize,
}

impl Query {
    /// Entries answered at most per request.
    pub const MOST: usize = 10_000;

    pub fn matches(&self, e: &Entry) -> bool {
        self.since.is_none_or(|s| e.at >= s)
            && self.cluster.as_ref().is_none_or(|c| e.cluster.as_ref() == Some(c))
            && self.user.as_ref().is_none_or(|u| &e.who == u || e.who.split(" (").next() == Some(u.as_str()))
    }
}

/// Appends `entry` to the trail and logs it (target `audit`).
pub async fn record(shared: &Shared, entry: Entry) {
    let logged = |stored: &str| {
        info!(
            target: "audit",
            action = %entry.action,
            outcome = entry.outcome.as_str(),
            who = %entry.who,
            cluster = entry.cluster.as_deref(),
            rollout = entry.rollout.as_deref(),
            revision = entry.revision.as_deref(),
            from = entry.from.as_deref(),
            via = entry.via.as_str(),
            at = entry.at,
            stored,
            "{}",
            entry.detail
        );
    };
    match shared.store.audit(&entry).await {
        Ok(()) => logged("yes"),
        Err(e) => {
            error!(target: "audit", error = %e, "The audit trail cannot be written; this entry is in the log only.");
            logged("no");
        }
    }
}

/// Forgets what is older than the retention or beyond the bound; returns how many went.
pub async fn prune(shared: &Shared) -> usize {
    let audit = &shared.config.audit;
    let before = now_ms() - audit.retention.as_millis() as i64;
    shared.stored("prune the audit trail", shared.store.prune_audit(before, audit.max_entries).await).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queries_filter_by_time_cluster_and_the_person_behind_a_shared_token() {
        let mut e = Entry::new("approve", Outcome::Done, "api (alice)", Via::Cli, None).cluster("prod-1");
        e.at = 1_000;
        let q = |since: Option<i64>, cluster: Option<&str>, user: Option<&str>| Query {
            since,
            cluster: cluster.map(String::from),
            user: user.map(String::from),
            limit: 10,
        };
        assert!(q(Some(1_000), Some("prod-1"), Some("api (alice)")).matches(&e));
        assert!(q(None, None, Some("api")).matches(&e), "the token's name");
        assert!(!q(None, None, Some("alice")).matches(&e));
        assert!(!q(Some(1_001), None, None).matches(&e));
        assert!(!q(None, Some("prod-2"), None).matches(&e));
        assert_eq!(Via::parse(Via::Cli.as_str()), Some(Via::Cli));
        assert_eq!(Outcome::parse("refused"), Some(Outcome::Refused));
    }
}
