//! The fleet page's data: the overview and one page of the cluster list, from one snapshot of
//! the store.
//!
//! ```text
//!   store.fleet() + tags ──► Snapshot ──► overview()          totals, states, versions, attention
//!   (read again when the state       │         select(&Query)       one page of the filtered, sorted list
//!    version moves, at most 1 s old) └── the URL's query ─► Query::parse ─► Query::href (links keep it)
//! ```
//!
//! Plain functions over plain data: no HTTP, no templates, no store. The view ([`super::view`])
//! reads the snapshot, and the API pages with [`after`] the same way.

use std::collections::BTreeMap;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use serde::Serialize;

use super::view::segment;
use crate::daemon::decide::Hold;
use crate::daemon::state::{Health, Sync};
use crate::daemon::store::{ClusterState, FleetRow};
use crate::names::has_tag;
use crate::rollout::gate::RunState;

/// Clusters on one page of the list.
pub const PAGE_SIZE: usize = 50;
/// Clusters named per group of the overview's "needs attention"; the group links to the rest.
pub const ATTENTION_SHOWN: usize = 20;
/// A snapshot is read again when the state version moved, or when it is this old (another
/// replica may have changed the shared state without this one's version moving).
const SNAPSHOT_AGE: Duration = Duration::from_secs(1);

/// Sync states as the page shows them (`suspended` stands in for the sync of a suspended cluster).
const SYNC_STATES: [&str; 8] = ["failed", "error", "unhealthy", "applying", "new", "suspended", "removed", "applied"];
const HEALTH_STATES: [&str; 4] = ["failed", "progressing", "unknown", "ready"];

/// One cluster of the snapshot.
#[derive(Clone, Debug)]
pub struct Entry {
    pub state: ClusterState,
    pub pending: Option<PendingBrief>,
    pub tags: Vec<String>,
}

/// A pending update without its diff (the list and the overview never show it).
#[derive(Clone, Debug, Serialize)]
pub struct PendingBrief {
    pub head_revision: String,
    pub summary: String,
    pub hold: Hold,
    pub since: i64,
    /// `profile@version` the update brings, when it names one.
    #[serde(skip)]
    pub target: Option<String>,
}

impl Entry {
    pub fn from_row((state, pending): FleetRow, tags: Vec<String>) -> Entry {
        let pending = pending.map(|p| PendingBrief {
            target: p.target().map(str::to_string),
            head_revision: p.head_revision,
            summary: p.summary,
            hold: p.hold,
            since: p.since,
        });
        Entry { state, pending, tags }
    }

    /// The sync state as the page shows it: `suspended` wins.
    pub fn sync(&self) -> &'static str {
        if self.state.suspended { "suspended" } else { self.state.sync.as_str() }
    }

    pub fn health(&self) -> &'static str {
        self.state.health.map_or("unknown", Health::as_str)
    }

    fn awaits_approval(&self) -> bool {
        self.pending.as_ref().is_some_and(|p| p.hold == Hold::Approval)
    }

    fn is(&self, state: StateFilter) -> bool {
        match state {
            StateFilter::Sync(s) => self.sync() == s,
            StateFilter::Drifted => self.state.drifted > 0,
            StateFilter::Pending => self.pending.is_some(),
            StateFilter::AwaitingApproval => self.awaits_approval(),
            StateFilter::Window => self.pending.as_ref().is_some_and(|p| matches!(p.hold, Hold::Window { .. })),
            StateFilter::Rollout => self.pending.as_ref().is_some_and(|p| matches!(p.hold, Hold::Rollout { .. })),
            StateFilter::Attention => {
                matches!(self.sync(), "failed" | "error" | "unhealthy")
                    || self.state.drifted > 0
                    || self.awaits_approval()
            }
        }
    }

    /// Worst first: what sorting by state puts on top.
    fn severity(&self) -> usize {
        SYNC_STATES.iter().position(|s| *s == self.sync()).unwrap_or(SYNC_STATES.len())
    }
}

/// The whole fleet at one moment, by name.
pub struct Snapshot {
    version: u64,
    read: Instant,
    pub entries: Vec<Entry>,
    /// Worked out once per snapshot: every viewer's page and refresh shows the same.
    overview: OnceLock<Overview>,
}

impl Snapshot {
    pub fn new(version: u64, mut entries: Vec<Entry>) -> Snapshot {
        entries.sort_by(|a, b| a.state.name.cmp(&b.state.name));
        Snapshot { version, read: Instant::now(), entries, overview: OnceLock::new() }
    }

    /// What the top of the fleet page says.
    pub fn overview(&self) -> &Overview {
        self.overview.get_or_init(|| self.count())
    }
}

/// The last snapshot, shared by the page, its refreshes and every viewer.
#[derive(Default)]
pub struct SnapshotCache {
    /// An async lock: held while a new snapshot is read (from the store, awaited), so viewers
    /// arriving meanwhile wait for that one read instead of each making their own.
    last: tokio::sync::Mutex<Option<Arc<Snapshot>>>,
}

impl SnapshotCache {
    /// The snapshot at `version`: the cached one while it is that version and young, else `read`.
    pub async fn get<E, F>(&self, version: u64, read: impl FnOnce() -> F) -> Result<Arc<Snapshot>, E>
    where
        F: Future<Output = Result<Snapshot, E>>,
    {
        let mut last = self.last.lock().await;
        if let Some(s) = last.as_ref().filter(|s| s.version == version && s.read.elapsed() < SNAPSHOT_AGE) {
            return Ok(s.clone());
        }
        let fresh = Arc::new(read().await?);
        *last = Some(fresh.clone());
        Ok(fresh)
    }
}

/// A state the list filters on (`state=` in the URL).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StateFilter {
    /// A sync state, or `suspended`.
    Sync(&'static str),
    Drifted,
    Pending,
    AwaitingApproval,
    Window,
    Rollout,
    /// Failed, error, unhealthy, drifted or awaiting approval.
    Attention,
}

const STATE_WORDS: [(&str, StateFilter); 6] = [
    ("drifted", StateFilter::Drifted),
    ("pending", StateFilter::Pending),
    ("awaiting-approval", StateFilter::AwaitingApproval),
    ("waiting-for-window", StateFilter::Window),
    ("held-by-rollout", StateFilter::Rollout),
    ("attention", StateFilter::Attention),
];

impl StateFilter {
    fn parse(text: &str) -> Option<StateFilter> {
        if let Some(s) = SYNC_STATES.iter().find(|s| **s == text) {
            return Some(StateFilter::Sync(s));
        }
        STATE_WORDS.iter().find(|(w, _)| *w == text).map(|(_, f)| *f)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            StateFilter::Sync(s) => s,
            other => STATE_WORDS.iter().find(|(_, f)| *f == other).map(|(w, _)| *w).expect("every filter has a word"),
        }
    }

    /// Every value `state=` takes, for the form and for the error that lists them.
    pub fn all() -> impl Iterator<Item = &'static str> {
        SYNC_STATES.iter().copied().chain(STATE_WORDS.iter().map(|(w, _)| *w))
    }
}

/// How the list is ordered (`sort=` in the URL).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Sort {
    #[default]
    Name,
    Profile,
    /// Worst state first: failed, error, unhealthy, applying, new, suspended, removed, applied.
    State,
    Drift,
    Pending,
}

const SORTS: [(&str, Sort, &str); 5] = [
    ("", Sort::Name, "name"),
    ("profile", Sort::Profile, "profile and version"),
    ("state", Sort::State, "state, failed first"),
    ("drift", Sort::Drift, "drift, most first"),
    ("pending", Sort::Pending, "pending first"),
];

impl Sort {
    fn parse(text: &str) -> Option<Sort> {
        // `sync` is what links made before the overview said `state`.
        let text = if text == "sync" { "state" } else { text };
        SORTS.iter().find(|(w, _, _)| *w == text).map(|(_, s, _)| *s)
    }

    pub fn as_str(self) -> &'static str {
        SORTS.iter().find(|(_, s, _)| *s == self).map(|(w, _, _)| *w).expect("every sort has a word")
    }

    /// (value, label) of every sort, for the form.
    pub fn choices() -> impl Iterator<Item = (&'static str, &'static str)> {
        SORTS.iter().map(|(w, _, l)| (*w, *l))
    }
}

/// What the list shows: filters (all of them must hold), order and page — the URL's query.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Query {
    /// A part of the cluster's name, any case (`q=`).
    pub name: String,
    /// Tags the cluster has, every one (`tag=`, repeated, or several in one separated by spaces
    /// or commas); a tag without `:` matches any value of that key.
    pub tags: Vec<String>,
    /// `profile=NAME` or `profile=NAME@VERSION`.
    pub profile: String,
    /// The version applied (`version=`).
    pub version: String,
    pub state: Option<StateFilter>,
    /// `health=`: ready, progressing, failed, unknown.
    pub health: Option<&'static str>,
    pub sort: Sort,
    /// 1-based.
    pub page: usize,
}

/// A value of the list's query the page cannot use, said with the values it takes.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QueryError {
    #[error(
        "state={0:?} is not a state the list filters on; use one of: {states}",
        states = StateFilter::all().collect::<Vec<_>>().join(", ")
    )]
    State(String),
    #[error("health={0:?} is not a health state; use one of: {states}", states = HEALTH_STATES.join(", "))]
    Health(String),
    #[error(
        "sort={0:?} is not an order of the list; use one of: {sorts} (or none: by name)",
        sorts = Sort::choices().map(|(w, _)| w).filter(|w| !w.is_empty()).collect::<Vec<&str>>().join(", ")
    )]
    Sort(String),
    #[error("page={0:?} is not a page number (1, 2, …)")]
    Page(String),
}

impl Query {
    /// The query of `/?…` or `/fragment/clusters?…`. Unknown parameters are ignored (links
    /// carry others); a value the page cannot use is an error that says which values it takes.
    pub fn parse(query: Option<&str>) -> Result<Query, QueryError> {
        let mut q = Query { page: 1, ..Query::default() };
        for (key, value) in url::form_urlencoded::parse(query.unwrap_or("").as_bytes()) {
            let value = value.trim();
            match key.as_ref() {
                "q" => q.name = value.to_string(),
                "tag" => q.tags.extend(
                    value.split(|c: char| c == ',' || c.is_whitespace()).filter(|t| !t.is_empty()).map(str::to_string),
                ),
                "profile" => q.profile = value.to_string(),
                "version" => q.version = value.to_string(),
                "state" if value.is_empty() => q.state = None,
                "state" => {
                    q.state = Some(StateFilter::parse(value).ok_or_else(|| QueryError::State(value.to_string()))?)
                }
                "health" if value.is_empty() => q.health = None,
                "health" => {
                    q.health = Some(
                        HEALTH_STATES
                            .iter()
                            .copied()
                            .find(|h| *h == value)
                            .ok_or_else(|| QueryError::Health(value.to_string()))?,
                    )
                }
                "sort" => q.sort = Sort::parse(value).ok_or_else(|| QueryError::Sort(value.to_string()))?,
                "page" if value.is_empty() => {}
                "page" => {
                    q.page = value
                        .parse::<usize>()
                        .ok()
                        .filter(|p| *p >= 1)
                        .ok_or_else(|| QueryError::Page(value.to_string()))?
                }
                _ => {}
            }
        }
        Ok(q)
    }

    /// This query as a URL path (`/?…`), with nothing but what is set.
    pub fn href(&self) -> String {
        let mut parts: Vec<String> = Vec::new();
        let mut add = |key: &str, value: &str| {
            if !value.is_empty() {
                parts.push(format!("{key}={}", segment(value)));
            }
        };
        add("q", &self.name);
        for t in &self.tags {
            add("tag", t);
        }
        add("profile", &self.profile);
        add("version", &self.version);
        add("state", self.state.map_or("", StateFilter::as_str));
        add("health", self.health.unwrap_or(""));
        add("sort", self.sort.as_str());
        if self.page > 1 {
            add("page", &self.page.to_string());
        }
        if parts.is_empty() { "/".to_string() } else { format!("/?{}", parts.join("&")) }
    }

    /// The same filters and order on page `page`.
    pub fn at_page(&self, page: usize) -> Query {
        Query { page, ..self.clone() }
    }

    /// Whether anything narrows the list.
    pub fn filtered(&self) -> bool {
        !self.name.is_empty()
            || !self.tags.is_empty()
            || !self.profile.is_empty()
            || !self.version.is_empty()
            || self.state.is_some()
            || self.health.is_some()
    }

    fn matches(&self, e: &Entry, name: &str) -> bool {
        let c = &e.state;
        let (profile, version) = (c.profile.as_deref().unwrap_or(""), c.version.as_deref().unwrap_or(""));
        (name.is_empty() || c.name.to_lowercase().contains(name))
            && self.tags.iter().all(|t| has_tag(&e.tags, t))
            && (self.profile.is_empty()
                || self.profile == profile
                || self.profile.split_once('@') == Some((profile, version)))
            && (self.version.is_empty() || self.version == version)
            && self.state.is_none_or(|s| e.is(s))
            && self.health.is_none_or(|h| e.health() == h)
    }
}

/// One page of the list.
pub struct Page<'a> {
    pub rows: Vec<&'a Entry>,
    /// Clusters that match the filters, on every page.
    pub matched: usize,
    /// The page shown (the last one when the query asked for a page past it), 1-based.
    pub page: usize,
    pub pages: usize,
}

impl Snapshot {
    /// The clusters `query` selects, ordered, and the page of them it asks for.
    pub fn select(&self, query: &Query) -> Page<'_> {
        let name = query.name.to_lowercase();
        let mut rows: Vec<&Entry> = self.entries.iter().filter(|e| query.matches(e, &name)).collect();
        // The snapshot is by name: stable sorts keep that order within equal keys.
        match query.sort {
            Sort::Name => {}
            Sort::Profile => {
                rows.sort_by(|a, b| (&a.state.profile, &a.state.version).cmp(&(&b.state.profile, &b.state.version)))
            }
            Sort::State => rows.sort_by_key(|e| e.severity()),
            Sort::Drift => rows.sort_by_key(|e| std::cmp::Reverse(e.state.drifted)),
            Sort::Pending => rows.sort_by_key(|e| e.pending.is_none()),
        }
        let matched = rows.len();
        let pages = matched.div_ceil(PAGE_SIZE).max(1);
        let page = query.page.clamp(1, pages);
        let rows = rows.into_iter().skip((page - 1) * PAGE_SIZE).take(PAGE_SIZE).collect();
        Page { rows, matched, page, pages }
    }

    fn count(&self) -> Overview {
        let list = |state: Option<StateFilter>, health: Option<&'static str>| {
            Query { state, health, page: 1, ..Query::default() }.href()
        };
        let count_of = |values: &[&'static str], of: &dyn Fn(&Entry) -> &'static str| -> BTreeMap<&str, usize> {
            let mut counts: BTreeMap<&str, usize> = values.iter().map(|v| (*v, 0)).collect();
            for e in &self.entries {
                *counts.entry(of(e)).or_default() += 1;
            }
            counts
        };
        let syncs = count_of(&SYNC_STATES, &|e| e.sync());
        let sync = SYNC_STATES
            .iter()
            .filter(|s| syncs[**s] > 0)
            .map(|s| Count::new(s, syncs[*s], list(Some(StateFilter::Sync(s)), None)))
            .collect();
        let healths = count_of(&HEALTH_STATES, &|e| e.health());
        let health = HEALTH_STATES
            .iter()
            .filter(|h| healths[**h] > 0)
            .map(|h| Count::new(h, healths[*h], list(None, Some(h))))
            .collect();
        let count = |f: StateFilter| self.entries.iter().filter(|e| e.is(f)).count();
        let pending = [StateFilter::Pending, StateFilter::AwaitingApproval, StateFilter::Window, StateFilter::Rollout]
            .into_iter()
            .map(|f| Count::new(f.as_str(), count(f), list(Some(f), None)))
            .collect();
        let drifted = Count::new("drifted", count(StateFilter::Drifted), list(Some(StateFilter::Drifted), None));
        let drifted_objects = self.entries.iter().map(|e| e.state.drifted.max(0)).sum();

        let mut attention = Vec::new();
        for (title, filter) in [
            ("failed", StateFilter::Sync("failed")),
            ("not rendering (error)", StateFilter::Sync("error")),
            ("unhealthy", StateFilter::Sync("unhealthy")),
            ("drifted", StateFilter::Drifted),
            ("awaiting approval", StateFilter::AwaitingApproval),
        ] {
            let members: Vec<&Entry> = self.entries.iter().filter(|e| e.is(filter)).collect();
            if members.is_empty() {
                continue;
            }
            let clusters = members
                .iter()
                .take(ATTENTION_SHOWN)
                .map(|e| Named {
                    href: format!("/clusters/{}", segment(&e.state.name)),
                    name: e.state.name.clone(),
                    detail: match filter {
                        StateFilter::Drifted => format!("{} drifted", e.state.drifted),
                        StateFilter::AwaitingApproval => {
                            e.pending.as_ref().and_then(|p| p.target.clone()).unwrap_or_default()
                        }
                        _ => e.state.message.as_deref().map(|m| first_line(m, 120)).unwrap_or_default(),
                    },
                })
                .collect();
            attention.push(Attention { title, total: members.len(), href: list(Some(filter), None), clusters });
        }

        Overview {
            total: self.entries.len(),
            sync,
            health,
            pending,
            drifted,
            drifted_objects,
            profiles: self.versions(),
            unapplied: self.entries.iter().filter(|e| e.state.version.is_none()).count(),
            attention,
        }
    }

    /// Per profile, the clusters on each version and where those with an update are going.
    fn versions(&self) -> Vec<ProfileVersions> {
        #[derive(Default)]
        struct Tally {
            clusters: usize,
            applying: usize,
            pending: BTreeMap<String, usize>,
        }
        let mut by: BTreeMap<&str, BTreeMap<&str, Tally>> = BTreeMap::new();
        for e in &self.entries {
            // A cluster never applied runs no version (the overview counts it apart).
            let (Some(profile), Some(version)) = (e.state.profile.as_deref(), e.state.version.as_deref()) else {
                continue;
            };
            let tally = by.entry(profile).or_default().entry(version).or_default();
            tally.clusters += 1;
            tally.applying += usize::from(e.state.sync == Sync::Applying);
            if let Some(p) = &e.pending {
                let to = p.target.as_deref().map(|t| t.split_once('@').map_or(t, |(_, v)| v)).unwrap_or("?");
                *tally.pending.entry(to.to_string()).or_default() += 1;
            }
        }
        by.into_iter()
            .map(|(profile, versions)| {
                let mut versions: Vec<VersionCount> = versions
                    .into_iter()
                    .map(|(version, t)| VersionCount {
                        href: Query {
                            profile: profile.to_string(),
                            version: version.to_string(),
                            page: 1,
                            ..Query::default()
                        }
                        .href(),
                        version: version.to_string(),
                        clusters: t.clusters,
                        applying: t.applying,
                        pending: t.pending.into_iter().map(|(to, count)| Toward { to, count }).collect(),
                    })
                    .collect();
                versions.sort_by(|a, b| version_key(&a.version).cmp(&version_key(&b.version)));
                ProfileVersions {
                    href: Query { profile: profile.to_string(), page: 1, ..Query::default() }.href(),
                    clusters: versions.iter().map(|v| v.clusters).sum(),
                    profile: profile.to_string(),
                    versions,
                }
            })
            .collect()
    }
}

/// Versions in semver order where they parse, others after them by text.
fn version_key(v: &str) -> (Option<semver::Version>, &str) {
    (semver::Version::parse(v).ok(), v)
}

fn first_line(text: &str, max: usize) -> String {
    let line = text.lines().next().unwrap_or("");
    if line.chars().count() <= max {
        line.to_string()
    } else {
        format!("{}…", line.chars().take(max).collect::<String>())
    }
}

/// The overview at the top of the fleet page.
#[derive(Serialize)]
pub struct Overview {
    pub total: usize,
    pub sync: Vec<Count>,
    pub health: Vec<Count>,
    /// Pending updates: all of them, then by what holds them.
    pub pending: Vec<Count>,
    pub drifted: Count,
    pub drifted_objects: i64,
    pub profiles: Vec<ProfileVersions>,
    /// Clusters that run no version yet (never applied).
    pub unapplied: usize,
    /// Failed, error, unhealthy, drifted, awaiting approval: the first few of each.
    pub attention: Vec<Attention>,
}

#[derive(Serialize)]
pub struct Count {
    pub label: &'static str,
    pub count: usize,
    pub href: String,
}

impl Count {
    fn new(label: &'static str, count: usize, href: String) -> Count {
        Count { label, count, href }
    }
}

#[derive(Serialize)]
pub struct ProfileVersions {
    pub profile: String,
    pub clusters: usize,
    pub href: String,
    pub versions: Vec<VersionCount>,
}

#[derive(Serialize)]
pub struct VersionCount {
    pub version: String,
    pub clusters: usize,
    /// Of those, applying now.
    pub applying: usize,
    /// Of those, with an update held, by the version it brings.
    pub pending: Vec<Toward>,
    pub href: String,
}

#[derive(Serialize)]
pub struct Toward {
    pub to: String,
    pub count: usize,
}

#[derive(Serialize)]
pub struct Attention {
    pub title: &'static str,
    pub total: usize,
    /// The whole group, in the list.
    pub href: String,
    /// The first [`ATTENTION_SHOWN`].
    pub clusters: Vec<Named>,
}

#[derive(Serialize)]
pub struct Named {
    pub name: String,
    pub href: String,
    pub detail: String,
}

/// A rollout that is not complete, as the overview lists it.
#[derive(Serialize)]
pub struct RolloutLine {
    pub name: String,
    pub href: String,
    pub state: &'static str,
    /// `2 of 3: canary` — the wave it is at among those that hold clusters.
    pub wave: String,
    pub updated: usize,
    pub failed: usize,
    pub total: usize,
    pub next: String,
}

/// The rollouts under way (every one not complete), for the overview.
pub fn rollouts_under_way(
    policies: &BTreeMap<String, crate::rollout::Rollout>,
    progress: &[crate::rollout::gate::Progress],
    now: i64,
) -> Vec<RolloutLine> {
    use crate::rollout::gate::ClusterRun;
    progress
        .iter()
        .filter(|p| p.state != RunState::Complete)
        .filter_map(|p| {
            let policy = policies.get(&p.rollout)?;
            let (at, of, wave) = crate::daemon::rollouts::wave_at(policy, p, now);
            Some(RolloutLine {
                name: p.rollout.clone(),
                href: format!("/rollouts/{}", segment(&p.rollout)),
                state: p.state.as_str(),
                wave: match wave {
                    Some(name) => format!("{at} of {of}: {name}"),
                    None => format!("{at} of {of}"),
                },
                updated: p.count(ClusterRun::Updated),
                failed: p.count(ClusterRun::Failed),
                total: p.clusters.len(),
                next: p.next.clone(),
            })
        })
        .collect()
}

/// Clusters after `token` (a name, as [`continue_token`] made it), at most `limit`, and how many
/// remain after them: a page of the API's list, as Kubernetes lists page.
pub fn after(names_sorted: &[Entry], token: Option<&str>, limit: usize) -> (std::ops::Range<usize>, usize) {
    let start = match token {
        Some(last) => names_sorted.partition_point(|e| e.state.name.as_str() <= last),
        None => 0,
    };
    let end = (start + limit).min(names_sorted.len());
    (start..end, names_sorted.len() - end)
}

/// The opaque `continue` token after the cluster `last`.
pub fn continue_token(last: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(last)
}

/// The cluster name a `continue` token stands for, if this daemon made it.
pub fn read_continue(token: &str) -> Option<String> {
    use base64::Engine;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(token).ok()?;
    String::from_utf8(bytes).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cluster(name: &str) -> ClusterBuilder {
        ClusterBuilder(Entry {
            state: ClusterState {
                name: name.into(),
                profile_revision: None,
                cluster_revision: None,
                digest: None,
                profile: Some("web".into()),
                version: Some("1.0.0".into()),
                applied_at: None,
                sync: Sync::Applied,
                message: None,
                health: Some(Health::Ready),
                drifted: 0,
                suspended: false,
            },
            pending: None,
            tags: vec![],
        })
    }

    struct ClusterBuilder(Entry);

    impl ClusterBuilder {
        fn on(mut self, profile: &str, version: &str) -> Self {
            self.0.state.profile = Some(profile.into());
            self.0.state.version = Some(version.into());
            self
        }
        fn sync(mut self, sync: Sync) -> Self {
            self.0.state.sync = sync;
            self
        }
        fn drifted(mut self, n: i64) -> Self {
            self.0.state.drifted = n;
            self
        }
        fn tagged(mut self, tags: &[&str]) -> Self {
            self.0.tags = tags.iter().map(|t| t.to_string()).collect();
            self
        }
        fn awaiting(mut self, target: &str) -> Self {
            self.0.pending = Some(PendingBrief {
                head_revision: "abc".into(),
                summary: format!("pending update {target} — approve"),
                hold: Hold::Approval,
                since: 0,
                target: Some(target.into()),
            });
            self
        }
        fn done(self) -> Entry {
            self.0
        }
    }

    fn fleet(n: usize) -> Snapshot {
        let entries = (0..n)
            .map(|i| {
                let c = cluster(&format!("c{i:05}"))
                    .on(if i % 2 == 0 { "web" } else { "db" }, ["1.0.0", "1.2.0", "1.10.0"][i % 3])
                    .tagged(&[
                        if i % 10 == 0 { "env:staging" } else { "env:prod" },
                        ["region:eu", "region:us"][i % 4 / 2],
                    ]);
                match i {
                    997..=999 => c.sync(Sync::Failed),
                    5 | 6 => c.drifted(3),
                    8 => c.awaiting("web@1.10.0"),
                    _ => c,
                }
                .done()
            })
            .collect();
        Snapshot::new(1, entries)
    }

    fn q(text: &str) -> Query {
        Query::parse(Some(text)).unwrap()
    }

    #[test]
    fn the_list_pages_by_fifty_and_a_page_past_the_end_shows_the_last() {
        let snapshot = fleet(1000);
        let page = snapshot.select(&q(""));
        assert_eq!((page.rows.len(), page.matched, page.page, page.pages), (50, 1000, 1, 20));
        assert_eq!(page.rows[0].state.name, "c00000");
        let page = snapshot.select(&q("page=3"));
        assert_eq!(page.rows[0].state.name, "c00100");
        let page = snapshot.select(&q("page=99"));
        assert_eq!((page.page, page.rows.last().unwrap().state.name.as_str()), (20, "c00999"));
    }

    #[test]
    fn sorting_by_state_puts_the_failed_clusters_first() {
        let snapshot = fleet(1000);
        let names: Vec<&str> =
            snapshot.select(&q("sort=state")).rows.iter().map(|e| e.state.name.as_str()).take(3).collect();
        assert_eq!(names, ["c00997", "c00998", "c00999"]);
        // The links made before the overview say `sync`.
        assert_eq!(q("sort=sync").sort, Sort::State);
    }

    #[test]
    fn several_tags_must_all_match_and_filters_combine() {
        let snapshot = fleet(1000);
        let both = snapshot.select(&q("tag=env:staging&tag=region:eu"));
        assert!(both.matched > 0 && both.rows.iter().all(|e| e.tags == ["env:staging", "region:eu"]));
        assert_eq!(q("tag=env:staging+region:eu").tags, ["env:staging", "region:eu"]);
        assert_eq!(snapshot.select(&q("tag=env:staging,region:eu")).matched, both.matched);
        let narrowed = snapshot.select(&q("q=C0099&profile=db&version=1.0.0"));
        let expected = snapshot
            .entries
            .iter()
            .filter(|e| e.state.name.starts_with("c0099") && e.state.profile.as_deref() == Some("db"))
            .filter(|e| e.state.version.as_deref() == Some("1.0.0"))
            .count();
        assert!(expected > 0 && narrowed.matched == expected, "{} of {expected}", narrowed.matched);
        assert!(
            narrowed.rows.iter().all(|e| e.state.name.starts_with("c0099") && e.state.profile.as_deref() == Some("db"))
        );
        assert_eq!(
            snapshot.select(&q("profile=web@1.2.0")).matched,
            snapshot.select(&q("profile=web&version=1.2.0")).matched
        );
        assert_eq!(snapshot.select(&q("state=failed")).matched, 3);
        assert_eq!(snapshot.select(&q("state=attention")).matched, 6);
    }

    #[test]
    fn a_value_the_list_cannot_use_says_which_ones_it_takes() {
        let e = Query::parse(Some("state=broken")).unwrap_err().to_string();
        assert!(e.contains("state=\"broken\"") && e.contains("failed") && e.contains("awaiting-approval"), "{e}");
        assert!(Query::parse(Some("sort=size")).unwrap_err().to_string().contains("drift"));
        assert!(Query::parse(Some("page=0")).unwrap_err().to_string().contains("page number"));
        // Parameters of other pages are no error.
        assert_eq!(q("utm=x"), q(""));
    }

    #[test]
    fn links_keep_the_query_and_read_back_the_same() {
        let query = q("q=eu&tag=env:prod&tag=a%20b&profile=web&state=drifted&health=failed&sort=state&page=2");
        let href = query.href();
        assert_eq!(href, "/?q=eu&tag=env%3Aprod&tag=a&tag=b&profile=web&state=drifted&health=failed&sort=state&page=2");
        assert_eq!(
            Query::parse(href.strip_prefix("/?")).unwrap(),
            Query { tags: vec!["env:prod".into(), "a".into(), "b".into()], ..query.clone() }
        );
        assert!(!query.at_page(1).href().contains("page="));
        assert_eq!(q("").href(), "/");
    }

    #[test]
    fn the_overview_counts_states_and_versions_and_names_the_clusters_needing_attention() {
        let snapshot = fleet(1000);
        let o = snapshot.overview();
        assert_eq!(o.total, 1000);
        let failed = o.sync.iter().find(|c| c.label == "failed").unwrap();
        assert_eq!((failed.count, failed.href.as_str()), (3, "/?state=failed"));
        assert_eq!(o.drifted.count, 2);
        assert_eq!(o.drifted_objects, 6);
        let web = o.profiles.iter().find(|p| p.profile == "web").unwrap();
        assert_eq!(web.clusters, 500);
        let versions: Vec<&str> = web.versions.iter().map(|v| v.version.as_str()).collect();
        assert_eq!(versions, ["1.0.0", "1.2.0", "1.10.0"], "semver order");
        let on_pending = web.versions.iter().find(|v| !v.pending.is_empty()).unwrap();
        assert_eq!((on_pending.pending[0].to.as_str(), on_pending.pending[0].count), ("1.10.0", 1));
        let titles: Vec<&str> = o.attention.iter().map(|a| a.title).collect();
        assert_eq!(titles, ["failed", "drifted", "awaiting approval"]);
        assert_eq!(o.attention[2].clusters[0].detail, "web@1.10.0");
    }

    #[test]
    fn attention_groups_are_bounded_and_link_to_the_whole_group() {
        let entries = (0..500).map(|i| cluster(&format!("c{i:04}")).sync(Sync::Failed).done()).collect();
        let snapshot = Snapshot::new(1, entries);
        let o = snapshot.overview();
        assert_eq!((o.attention[0].total, o.attention[0].clusters.len()), (500, ATTENTION_SHOWN));
        assert_eq!(o.attention[0].href, "/?state=failed");
    }

    #[test]
    fn api_pages_continue_after_the_last_name_given() {
        let snapshot = fleet(120);
        let (first, remaining) = after(&snapshot.entries, None, 50);
        assert_eq!((first.clone(), remaining), (0..50, 70));
        let token = continue_token(&snapshot.entries[first.end - 1].state.name);
        let last = read_continue(&token).unwrap();
        let (second, remaining) = after(&snapshot.entries, Some(&last), 100);
        assert_eq!((second, remaining), (50..120, 0));
        assert_eq!(read_continue("not base64!"), None);
    }
}
