//! The status view: server-rendered pages on the daemon's listen address.
//!
//! ```text
//!   /                          the fleet: overview (totals, states, versions, attention, rollouts),
//!                              then the list, 50 a page, filtered and sorted by the URL's query
//!                              ([`super::fleet`]); refreshed every 2 s
//!   /fragment/clusters         the overview and the page shown, for that refresh (304 while
//!                              nothing changed)
//!   /clusters/NAME             layers and objects, drift findings, history, approvals
//!   /clusters/NAME/pending     the pending update's diff side by side, and Approve
//!   POST /approvals            one form for a selection's pending updates (a wave, a tag, all)
//!   /rollouts[/NAME]           rollouts: waves as progress bars, their clusters, Promote ([`super::rollouts`])
//!   /audit                     the audit trail, newest first, by cluster or user
//!   /login  /logout            a session from an API token (a cookie: HttpOnly, SameSite=Strict)
//!   /login/oidc[/callback]     a session through the OpenID provider ([`super::oidc`])
//! ```
//!
//! In: the store's state, and from the browser filters, forms and the session the
//! authentication layer found. Out: HTML from the templates in `daemon/templates/`, which escape
//! every value (minijinja's automatic HTML escaping), under a strict Content-Security-Policy.
//! Approving goes through [`super::approve::approve`], as the API's does. Assets are compiled into
//! the binary; the only script polls the overview and the page of the list.

use crate::daemon::store::Store as _;
use std::collections::BTreeMap;
use std::sync::Arc;

use axum::extract::{Form, Path, Query, RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Router};
use minijinja::value::Serde;
use minijinja::{Environment, UndefinedBehavior, Value, context};
use serde::{Deserialize, Serialize};
use tracing::{error, info, warn};

use super::App;
use super::approve::{self, Refused, Seen, SelectionRefused, clean_name};
use super::auth::{self, Access, Audience, Identity, Refusal, Viewer, local_path};
use super::diff::side_by_side;
use super::fleet::{
    Entry, PAGE_SIZE, Query as ListQuery, RolloutLine, Snapshot, Sort, StateFilter, rollouts_under_way,
};
use super::guard::{ConnInfo, from_this_site};
use super::oidc::{FLOW_LIFETIME, Flow};
use super::session::Via;
use crate::config::StatusSink;
use crate::daemon::Shared;
use crate::daemon::audit::{self, Actor, Outcome, Via as AuditVia};
use crate::daemon::decide::Hold;
use crate::daemon::selection::{self, Selector};
use crate::daemon::store::{ClusterState, rfc3339};
use crate::report::Provider;

const STYLE: &str = include_str!("../assets/style.css");
const SCRIPT: &str = include_str!("../assets/app.js");

const TEMPLATES: [(&str, &str); 15] = [
    ("base.html", include_str!("../templates/base.html")),
    ("macros.html", include_str!("../templates/macros.html")),
    ("rows.html", include_str!("../templates/rows.html")),
    ("overview.html", include_str!("../templates/overview.html")),
    ("list.html", include_str!("../templates/list.html")),
    ("live.html", include_str!("../templates/live.html")),
    ("fleet.html", include_str!("../templates/fleet.html")),
    ("cluster.html", include_str!("../templates/cluster.html")),
    ("pending.html", include_str!("../templates/pending.html")),
    ("login.html", include_str!("../templates/login.html")),
    ("message.html", include_str!("../templates/message.html")),
    ("rollouts.html", include_str!("../templates/rollouts.html")),
    ("rollout.html", include_str!("../templates/rollout.html")),
    ("continue.html", include_str!("../templates/continue.html")),
    ("audit.html", include_str!("../templates/audit.html")),
];

/// The view's templates, parsed once.
pub struct Pages {
    env: Environment<'static>,
}

impl Default for Pages {
    fn default() -> Self {
        Self::new()
    }
}

/// Percent-encodes a path segment or query value: every byte but the unreserved ones.
pub fn segment(text: &str) -> String {
    use percent_encoding::{NON_ALPHANUMERIC, utf8_percent_encode};
    const UNRESERVED: &percent_encoding::AsciiSet =
        &NON_ALPHANUMERIC.remove(b'-').remove(b'_').remove(b'.').remove(b'~');
    utf8_percent_encode(text, UNRESERVED).to_string()
}

impl Pages {
    pub fn new() -> Pages {
        let mut env = Environment::new();
        // A template that names a value the handler did not give is a bug to see, not a blank.
        env.set_undefined_behavior(UndefinedBehavior::Strict);
        env.add_filter("segment", |text: &str| segment(text));
        env.add_filter("time", |ms: i64| rfc3339(ms.div_euclid(1000)));
        for (name, source) in TEMPLATES {
            env.add_template(name, source).expect("the view's templates parse");
        }
        Pages { env }
    }

    pub(super) fn render(&self, name: &str, ctx: Value) -> Result<String, minijinja::Error> {
        self.env.get_template(name)?.render(ctx)
    }

    /// A page with `code`, or a plain 500 naming the template that failed.
    pub(super) fn page(&self, code: StatusCode, name: &str, ctx: Value) -> Response {
        match self.render(name, ctx) {
            Ok(body) => html(code, body),
            Err(e) => {
                error!(template = name, error = %e, "A page of the status view failed to render.");
                super::text(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "this page failed to render; the daemon's log says why\n",
                )
            }
        }
    }

    pub(super) fn message(
        &self,
        code: StatusCode,
        title: &str,
        who: &Option<Who>,
        message: &str,
        link: Option<Link>,
    ) -> Response {
        self.page(code, "message.html", context! { title, who => Serde(who), message, link => Serde(link) })
    }
}

#[derive(Serialize)]
pub(super) struct Link {
    href: String,
    text: &'static str,
}

impl Link {
    pub(super) fn to(href: &str, text: &'static str) -> Link {
        Link { href: href.to_string(), text }
    }
}

/// Who the page is for, as the header shows them.
#[derive(Serialize)]
pub(super) struct Who {
    pub(super) name: String,
    /// For a session's forms; a token holder needs none.
    pub(super) csrf: Option<String>,
    /// Why they may not act here, shown in place of the forms (`auth.write_groups`).
    pub(super) cannot: Option<String>,
}

pub(super) fn who(viewer: &Option<Viewer>) -> Option<Who> {
    viewer.as_ref().map(|v| Who {
        name: v.name().to_string(),
        csrf: match v {
            Viewer::Session { csrf, .. } => Some(csrf.clone()),
            Viewer::Token { .. } => None,
        },
        cannot: (!v.identity().may_write).then(|| {
            "you are in none of the groups that may act here (auth.write_groups): you may look, not act".to_string()
        }),
    })
}

fn html(code: StatusCode, body: String) -> Response {
    (
        code,
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CACHE_CONTROL, "no-store"),
            (header::X_FRAME_OPTIONS, "DENY"),
            (header::REFERRER_POLICY, "same-origin"),
            (
                header::CONTENT_SECURITY_POLICY,
                "default-src 'self'; style-src 'self'; script-src 'self'; frame-ancestors 'none'; form-action 'self'; base-uri 'none'",
            ),
        ],
        body,
    )
        .into_response()
}

/// 303 to a path of this site, which [`local_path`] or this module made.
pub(super) fn redirect(to: &str, cookie: Option<HeaderValue>) -> Response {
    let location = HeaderValue::try_from(to).unwrap_or(HeaderValue::from_static("/"));
    let mut response = (StatusCode::SEE_OTHER, [(header::LOCATION, location)]).into_response();
    if let Some(cookie) = cookie {
        response.headers_mut().insert(header::SET_COOKIE, cookie);
    }
    response
}

/// Where a browser without the session a page needs is sent: sign in, then back here.
pub fn to_login(method: &axum::http::Method, uri: &Uri) -> Response {
    let here = uri.path_and_query().map(|p| p.as_str()).unwrap_or("/");
    match local_path(here).filter(|_| method == axum::http::Method::GET) {
        Some(here) => redirect(&format!("/login?next={}", segment(here)), None),
        None => redirect("/login", None),
    }
}

pub fn routes(app: &Arc<App>) -> Router<Arc<App>> {
    let read = Router::new()
        .route("/", get(fleet))
        .route("/clusters/{name}", get(cluster))
        .route("/clusters/{name}/pending", get(pending))
        .route("/rollouts", get(super::rollouts::list))
        .route("/rollouts/{name}", get(super::rollouts::page))
        .route("/audit", get(audit_page))
        .route("/logout", post(logout));
    let fragment = Router::new().route("/fragment/clusters", get(fragment));
    let write = Router::new()
        .route("/clusters/{name}/approve", post(approve))
        .route("/approvals", post(approve_selection))
        .route("/rollouts/{name}/promote", post(super::rollouts::promote));
    let open = Router::new()
        .route("/login", get(login_page).post(login))
        .route("/login/oidc", get(oidc_start))
        .route(crate::config::OIDC_CALLBACK, get(oidc_callback))
        .route("/assets/{file}", get(asset));
    open.merge(auth::guard(app, read, Access::Read, Audience::Page))
        .merge(auth::guard(app, fragment, Access::Read, Audience::Fragment))
        .merge(auth::guard(app, write, Access::Write, Audience::Page))
}

async fn asset(Path(file): Path<String>) -> Response {
    let (content_type, body) = match file.as_str() {
        "style.css" => ("text/css; charset=utf-8", STYLE),
        "app.js" => ("text/javascript; charset=utf-8", SCRIPT),
        _ => return super::text(StatusCode::NOT_FOUND, "no such asset\n"),
    };
    ([(header::CONTENT_TYPE, content_type), (header::CACHE_CONTROL, "max-age=300")], body).into_response()
}

/// A revision as the pages show it: short, linked to the forge when there is one.
#[derive(Serialize)]
pub(super) struct Rev {
    pub(super) short: String,
    pub(super) full: String,
    pub(super) url: Option<String>,
}

pub(super) fn rev(shared: &Shared, revision: Option<&str>) -> Rev {
    let full = revision.unwrap_or("").to_string();
    Rev {
        short: if full.is_empty() { "-".into() } else { full.chars().take(7).collect() },
        url: revision.and_then(|r| commit_url(shared, r)),
        full,
    }
}

/// The web page of a commit on the configured forge, when there is one.
fn commit_url(shared: &Shared, revision: &str) -> Option<String> {
    let StatusSink::Forge { forge, .. } = &shared.config.status.as_ref()?.sink else { return None };
    let web = forge.api.trim_end_matches('/');
    Some(match forge.provider {
        Provider::Github if web == "https://api.github.com" => {
            format!("https://github.com/{}/commit/{revision}", forge.repo)
        }
        Provider::Github => format!("{}/{}/commit/{revision}", web.trim_end_matches("/api/v3"), forge.repo),
        Provider::Gitea => format!("{web}/{}/commit/{revision}", forge.repo),
        Provider::Gitlab => format!("{web}/{}/-/commit/{revision}", forge.repo),
        Provider::Bitbucket => format!("https://bitbucket.org/{}/commits/{revision}", forge.repo),
    })
}

fn sync_of(c: &ClusterState) -> &'static str {
    if c.suspended { "suspended" } else { c.sync.as_str() }
}

#[derive(Serialize)]
struct PendingBadge {
    summary: String,
    short: String,
    /// `update pending`, or the rollout and wave that hold it.
    label: String,
    href: String,
}

#[derive(Serialize)]
struct FleetRow {
    name: String,
    profile: String,
    version: String,
    revision: Rev,
    sync: String,
    health: String,
    drifted: i64,
    pending: Option<PendingBadge>,
    tags: Vec<String>,
}

fn fleet_row(shared: &Shared, e: &Entry) -> FleetRow {
    let c = &e.state;
    FleetRow {
        revision: rev(shared, c.cluster_revision.as_deref()),
        sync: e.sync().to_string(),
        health: e.health().to_string(),
        drifted: c.drifted,
        pending: e.pending.as_ref().map(|p| {
            let (label, href) = match &p.hold {
                Hold::Rollout { rollout, wave, .. } => {
                    (format!("rollout {rollout}: wave {wave}"), format!("/rollouts/{}", segment(rollout)))
                }
                _ => ("update pending".to_string(), format!("/clusters/{}/pending", segment(&c.name))),
            };
            PendingBadge { short: p.head_revision.chars().take(7).collect(), summary: p.summary.clone(), label, href }
        }),
        tags: e.tags.clone(),
        profile: c.profile.clone().unwrap_or_else(|| "-".into()),
        version: c.version.clone().unwrap_or_else(|| "-".into()),
        name: c.name.clone(),
    }
}

/// The fleet as the page and the paged API read it: the cached snapshot while no cluster's
/// state changed (and for at most a second), else read again.
pub(super) async fn snapshot(app: &App) -> Result<Arc<Snapshot>, String> {
    let shared = &app.shared;
    let version = shared.version.load(std::sync::atomic::Ordering::Relaxed);
    app.fleet
        .get(version, || async {
            let rows = shared.store.fleet().await.map_err(|e| format!("the state database could not be read: {e}"))?;
            let tags = shared.tags.lock().expect("tags lock");
            let entries = rows
                .into_iter()
                .map(|row| {
                    let have = tags.get(&row.0.name).cloned().unwrap_or_default();
                    Entry::from_row(row, have)
                })
                .collect();
            Ok(Snapshot::new(version, entries))
        })
        .await
}

/// The fleet page's ETag: bumped whenever a cluster's state changes.
fn version(shared: &Shared) -> String {
    format!("\"{}\"", shared.version.load(std::sync::atomic::Ordering::Relaxed))
}

#[derive(Serialize)]
struct Choice {
    value: String,
    label: String,
}

fn choices(all: &str, values: impl IntoIterator<Item = String>) -> Vec<Choice> {
    std::iter::once(Choice { value: String::new(), label: all.into() })
        .chain(values.into_iter().map(|v| Choice { label: v.clone(), value: v }))
        .collect()
}

/// One page of the list, with its pager's links.
#[derive(Serialize)]
struct ListPage {
    rows: Vec<FleetRow>,
    matched: usize,
    total: usize,
    filtered: bool,
    page: usize,
    pages: usize,
    /// 1-based positions of the first and last row shown.
    from: usize,
    to: usize,
    first: Option<String>,
    prev: Option<String>,
    next: Option<String>,
    last: Option<String>,
}

fn list_page(shared: &Shared, snapshot: &Snapshot, query: &ListQuery) -> ListPage {
    let page = snapshot.select(query);
    let link = |to: usize, shown: bool| shown.then(|| query.at_page(to).href());
    let from = (page.page - 1) * PAGE_SIZE;
    ListPage {
        from: if page.matched == 0 { 0 } else { from + 1 },
        to: from + page.rows.len(),
        first: link(1, page.page > 2),
        prev: link(page.page - 1, page.page > 1),
        next: link(page.page + 1, page.page < page.pages),
        last: link(page.pages, page.page + 1 < page.pages),
        rows: page.rows.iter().map(|e| fleet_row(shared, e)).collect(),
        matched: page.matched,
        total: snapshot.entries.len(),
        filtered: query.filtered(),
        page: page.page,
        pages: page.pages,
    }
}

/// The rollouts that are not complete, for the overview.
async fn rollouts_now(shared: &Shared) -> Vec<RolloutLine> {
    let policies = shared.rollouts.lock().unwrap_or_else(|p| p.into_inner()).clone();
    match shared.store.rollouts().await {
        Ok(progress) => rollouts_under_way(&policies, &progress, crate::daemon::store::now_ms()),
        Err(e) => {
            warn!(error = %e, "The fleet page shows no rollouts: their progress could not be read.");
            Vec::new()
        }
    }
}

/// `Server-Timing`: what the daemon spent on the answer, for the browser's network panel and
/// the benchmark.
fn timed(mut response: Response, started: std::time::Instant) -> Response {
    let value = format!("app;dur={:.2}", started.elapsed().as_secs_f64() * 1e3);
    if let Ok(value) = HeaderValue::try_from(value) {
        response.headers_mut().insert("server-timing", value);
    }
    response
}

async fn fleet(
    State(app): State<Arc<App>>,
    Extension(viewer): Extension<Option<Viewer>>,
    RawQuery(raw): RawQuery,
) -> Response {
    let started = std::time::Instant::now();
    let shared = &app.shared;
    let who = who(&viewer);
    let query = match ListQuery::parse(raw.as_deref()) {
        Ok(q) => q,
        Err(e) => {
            let message = format!("The fleet list cannot show this: {e}.");
            return app.pages.message(
                StatusCode::BAD_REQUEST,
                "bad filter",
                &who,
                &message,
                Some(Link::to("/", "The whole fleet")),
            );
        }
    };
    let snapshot = match snapshot(&app).await {
        Ok(s) => s,
        Err(e) => return app.pages.message(StatusCode::INTERNAL_SERVER_ERROR, "error", &who, &e, None),
    };
    let mut profiles: Vec<String> = Vec::new();
    let mut versions: Vec<String> = Vec::new();
    for e in &snapshot.entries {
        if let (Some(p), Some(v)) = (&e.state.profile, &e.state.version) {
            if profiles.last() != Some(p) {
                profiles.push(p.clone());
            }
            versions.push(v.clone());
            profiles.push(format!("{p}@{v}"));
        }
    }
    profiles.sort();
    profiles.dedup();
    versions.sort();
    versions.dedup();
    // The pending updates the page's tags (or, with no filter, the whole fleet) select that wait
    // for approval: one form approves them all. Other filters cannot be said as a selection, so
    // with them the form is not offered.
    let only_tags = query.name.is_empty()
        && query.profile.is_empty()
        && query.version.is_empty()
        && query.state.is_none()
        && query.health.is_none();
    let selector = match query.tags.is_empty() {
        false => Selector { tags: query.tags.clone(), ..Selector::default() },
        true => Selector { all_pending: true, ..Selector::default() },
    };
    // From the page's snapshot: no store read per page view, whatever the fleet's size.
    let waiting = snapshot.entries.iter().filter_map(|e| {
        let pending = e.pending.as_ref().filter(|p| p.hold == Hold::Approval)?;
        Some((e.state.name.as_str(), pending.head_revision.as_str(), e.tags.as_slice()))
    });
    let selection = match Some(selection::select_from(&selector, waiting, &[]))
        .filter(|s| only_tags && selector.validate(&BTreeMap::new()).is_ok() && !s.clusters.is_empty())
    {
        Some(s) => {
            let mut json = s.to_json(&selector);
            if let Some(v) = &viewer {
                let actor = Actor::of(v.identity(), v.name(), AuditVia::View, None);
                json["forbidden"] = serde_json::json!(approve::forbidden_in(shared, &s, &actor).await);
            }
            Some(json)
        }
        None => None,
    };
    let what = match query.tags.is_empty() {
        false => format!("tagged {}", query.tags.join(" ")),
        true => "in the fleet".to_string(),
    };
    let here = query.href();
    let states: Vec<Choice> = choices("any state", StateFilter::all().map(str::to_string));
    let healths: Vec<Choice> = choices("any health", ["ready", "progressing", "failed", "unknown"].map(String::from));
    let sorts: Vec<Choice> =
        Sort::choices().map(|(value, label)| Choice { value: value.into(), label: label.into() }).collect();
    let response = app.pages.page(
        StatusCode::OK,
        "fleet.html",
        context! {
            title => "fleet",
            who => Serde(who),
            problems => Serde(shared.network.problems()),
            o => Serde(snapshot.overview()),
            rollouts => Serde(rollouts_now(shared).await),
            list => Serde(list_page(shared, &snapshot, &query)),
            profiles => Serde(choices("all profiles", profiles)),
            versions => Serde(choices("all versions", versions)),
            states => Serde(states),
            healths => Serde(healths),
            selection => Serde(selection),
            what,
            here,
            sorts => Serde(sorts),
            q => query.name,
            tag => query.tags.join(" "),
            profile => query.profile,
            version_filter => query.version,
            state => query.state.map_or("", |s| s.as_str()),
            health => query.health.unwrap_or(""),
            sort => query.sort.as_str(),
            version => version(shared),
        },
    );
    timed(response, started)
}

/// What the page's refresh asks for: the overview and the current page of the list, as HTML
/// (`live.html`); 304 while no cluster's state changed.
async fn fragment(State(app): State<Arc<App>>, RawQuery(raw): RawQuery, headers: HeaderMap) -> Response {
    let started = std::time::Instant::now();
    let etag = version(&app.shared);
    if headers.get(header::IF_NONE_MATCH).is_some_and(|v| v.as_bytes() == etag.as_bytes()) {
        return timed(StatusCode::NOT_MODIFIED.into_response(), started);
    }
    let query = match ListQuery::parse(raw.as_deref()) {
        Ok(q) => q,
        Err(e) => return super::text(StatusCode::BAD_REQUEST, format!("{e}\n")),
    };
    let rollouts = rollouts_now(&app.shared).await;
    let rendered = snapshot(&app).await.and_then(|snapshot| {
        let ctx = context! {
            o => Serde(snapshot.overview()),
            rollouts => Serde(rollouts),
            list => Serde(list_page(&app.shared, &snapshot, &query)),
            version => etag.clone(),
        };
        app.pages.render("live.html", ctx).map_err(|e| {
            error!(error = %e, "The fleet page's refresh failed to render.");
            "the fleet page's refresh failed to render; the daemon's log says why".to_string()
        })
    });
    let response = match rendered {
        Ok(body) => {
            let mut response = html(StatusCode::OK, body);
            let headers = response.headers_mut();
            headers.insert(header::ETAG, HeaderValue::try_from(etag).expect("a quoted number"));
            headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
            response
        }
        Err(e) => super::text(StatusCode::INTERNAL_SERVER_ERROR, format!("{e}\n")),
    };
    timed(response, started)
}

#[derive(Deserialize, Default)]
struct AuditFilters {
    cluster: Option<String>,
    user: Option<String>,
}

/// The audit trail: the newest entries, filtered by cluster and user.
async fn audit_page(
    State(app): State<Arc<App>>,
    Extension(viewer): Extension<Option<Viewer>>,
    Query(filters): Query<AuditFilters>,
) -> Response {
    let who = who(&viewer);
    let keep = |v: Option<String>| v.map(|v| v.trim().to_string()).filter(|v| !v.is_empty());
    let (cluster, user) = (keep(filters.cluster), keep(filters.user));
    let limit = 500;
    let query = audit::Query { since: None, cluster: cluster.clone(), user: user.clone(), limit };
    match app.shared.store.audit_log(&query).await {
        Ok(entries) => app.pages.page(
            StatusCode::OK,
            "audit.html",
            context! {
                title => "audit", who => Serde(who), entries => Serde(entries), limit,
                cluster => cluster.unwrap_or_default(), user => user.unwrap_or_default(),
            },
        ),
        Err(e) => app.pages.message(StatusCode::INTERNAL_SERVER_ERROR, "error", &who, &e.to_string(), None),
    }
}

#[derive(Serialize)]
struct ObjectRow {
    object: String,
    action: String,
}

#[derive(Serialize)]
struct Layer {
    name: String,
    objects: Vec<ObjectRow>,
}

/// A cluster's page when the state database cannot be read: 500, saying so.
fn unreadable(app: &App, who: &Option<Who>, name: &str, e: &dyn std::fmt::Display) -> Response {
    let message = format!(
        "The state of cluster {name} cannot be read now: {e}. Nothing is shown rather than something incomplete; /readyz and the daemon's log say more."
    );
    app.pages.message(StatusCode::INTERNAL_SERVER_ERROR, "error", who, &message, None)
}

fn no_cluster(app: &App, name: &str, who: &Option<Who>) -> Response {
    let message = format!("No cluster named {name:?}.");
    app.pages.message(
        StatusCode::NOT_FOUND,
        "not found",
        who,
        &message,
        Some(Link { href: "/".into(), text: "The fleet" }),
    )
}

async fn cluster(
    State(app): State<Arc<App>>,
    Extension(viewer): Extension<Option<Viewer>>,
    Path(name): Path<String>,
) -> Response {
    let shared = &app.shared;
    let store = &shared.store;
    let who = who(&viewer);
    // A read that fails is an error page, never an empty section that looks like "nothing".
    macro_rules! read {
        ($e:expr) => {
            match $e {
                Ok(v) => v,
                Err(e) => return unreadable(&app, &who, &name, &e),
            }
        };
    }
    let Some(c) = read!(store.cluster(&name).await) else { return no_cluster(&app, &name, &who) };
    let mut layers: Vec<Layer> = Vec::new();
    for (object, layer, action) in read!(store.objects(&name).await) {
        let row = ObjectRow { object, action };
        match layers.iter_mut().find(|l| l.name == layer) {
            Some(l) => l.objects.push(row),
            None => layers.push(Layer { name: layer, objects: vec![row] }),
        }
    }
    let drift: Vec<BTreeMap<&str, String>> = read!(store.drift(&name).await)
        .into_iter()
        .map(|d| {
            BTreeMap::from([
                ("field", if d.path.is_empty() { "(deleted)".to_string() } else { d.path }),
                ("live", d.live.unwrap_or_else(|| "(absent)".into())),
                ("desired", d.desired.unwrap_or_else(|| "(absent)".into())),
                ("object", d.object),
            ])
        })
        .collect();
    let history: Vec<Value> = read!(store.history(&name, crate::daemon::store::HISTORY_KEPT).await)
        .into_iter()
        .map(|h| {
            context! {
                at => rfc3339(h.at),
                since => (h.count > 1).then(|| rfc3339(h.since)),
                count => h.count,
                revision => Serde(rev(shared, h.revision.as_deref())),
                result => h.result.as_str(),
                summary => h.summary,
            }
        })
        .collect();
    let approvals: Vec<Value> = read!(store.approvals(&name).await)
        .into_iter()
        .map(|a| context! { at => rfc3339(a.approved_at), revision => Serde(rev(shared, Some(&a.revision))), by => a.approved_by })
        .collect();
    let pending = read!(store.pending(&name).await).map(|p| context! { summary => p.summary });
    let c = context! {
        name => c.name.clone(),
        profile => c.profile.clone().unwrap_or_else(|| "-".into()),
        version => c.version.clone().unwrap_or_else(|| "-".into()),
        sync => sync_of(&c),
        revision => Serde(rev(shared, c.cluster_revision.as_deref())),
        health => c.health.map_or("unknown", |h| h.as_str()),
        message => c.message,
    };
    app.pages.page(
        StatusCode::OK,
        "cluster.html",
        context! { title => &name, who => Serde(who), c, pending, layers => Serde(layers), drift => Serde(drift), history, approvals },
    )
}

async fn pending(
    State(app): State<Arc<App>>,
    Extension(viewer): Extension<Option<Viewer>>,
    Path(name): Path<String>,
) -> Response {
    let shared = &app.shared;
    let who = who(&viewer);
    let Ok(Some((state, Some(p)))) = shared.store.cluster_row(&name).await else {
        let link = Link { href: format!("/clusters/{}", segment(&name)), text: "Back to the cluster" };
        let message = format!("{name} has no pending update.");
        return app.pages.message(StatusCode::NOT_FOUND, &name, &who, &message, Some(link));
    };
    // Shown only while it starts from what the cluster runs; approving waits for that too.
    let diff = p.diff_from(&state).map(side_by_side);
    // The approval rules in force may not let this person approve: the page says why instead.
    let forbidden = match viewer.as_ref() {
        Some(v) => {
            let actor = Actor::of(v.identity(), v.name(), AuditVia::View, None);
            approve::forbidden(shared, &name, &p.head_revision, &actor).await.unwrap_or_else(Some)
        }
        None => None,
    };
    app.pages.page(
        StatusCode::OK,
        "pending.html",
        context! {
            title => format!("{name}: pending update"),
            here => format!("/clusters/{}/pending", segment(&name)),
            who => Serde(who),
            summary => p.summary,
            base => Serde(rev(shared, Some(&p.base_revision))),
            head => Serde(rev(shared, Some(&p.head_revision))),
            stale => diff.is_none().then_some(crate::daemon::store::STALE_DIFF),
            rows => Serde(diff.unwrap_or_default()),
            rollout => match &p.hold { Hold::Rollout { rollout, .. } => Some(rollout.clone()), _ => None },
            forbidden,
            name,
        },
    )
}

#[derive(Deserialize)]
struct ApproveForm {
    csrf: Option<String>,
    revision: Option<String>,
}

async fn approve(
    State(app): State<Arc<App>>,
    Extension(viewer): Extension<Option<Viewer>>,
    Extension(conn): Extension<ConnInfo>,
    Path(name): Path<String>,
    headers: HeaderMap,
    Form(form): Form<ApproveForm>,
) -> Response {
    let refused = |viewer: &Viewer| {
        warn!(cluster = ?name, user = ?viewer.name(), "Approval refused: the form failed the CSRF check.");
    };
    let (viewer, who) =
        match signed_in_form(&app, viewer, &conn, &headers, form.csrf.as_deref(), "approve", refused).await {
            Ok(checked) => checked,
            Err(response) => return response,
        };
    let review = Link { href: format!("/clusters/{}/pending", segment(&name)), text: "Review it again" };
    let actor = Actor::of(viewer.identity(), viewer.name(), AuditVia::View, Some(conn.peer));
    match approve::approve(&app.shared, &name, form.revision.as_deref(), &actor).await {
        Ok(_) => redirect(&format!("/clusters/{}", segment(&name)), None),
        Err(Refused::NoCluster) => no_cluster(&app, &name, &who),
        Err(refused @ (Refused::Stale { .. } | Refused::NothingPending)) => {
            let message = format!("The pending update changed since the page was loaded: {refused}.");
            app.pages.message(StatusCode::CONFLICT, "changed", &who, &message, Some(review))
        }
        Err(refused @ Refused::Forbidden(_)) => app.pages.message(
            StatusCode::FORBIDDEN,
            "not yours to approve",
            &who,
            &format!("Not approved: {refused}."),
            Some(review),
        ),
        Err(refused @ Refused::HeldByRollout { .. }) => {
            app.pages.message(StatusCode::CONFLICT, "held", &who, &format!("Not approved: {refused}."), Some(review))
        }
        Err(refused @ Refused::Internal(_)) => {
            app.pages.message(StatusCode::INTERNAL_SERVER_ERROR, "error", &who, &refused.to_string(), None)
        }
        Err(refused) => {
            app.pages.message(StatusCode::BAD_REQUEST, "not approved", &who, &refused.to_string(), Some(review))
        }
    }
}

/// Approves a selection's pending updates from the form [`approve_selection`'s macro] shows:
/// the selector, and the revision and digest of what the page showed.
async fn approve_selection(
    State(app): State<Arc<App>>,
    Extension(viewer): Extension<Option<Viewer>>,
    Extension(conn): Extension<ConnInfo>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    let mut selector = Selector::default();
    let (mut csrf, mut revision, mut digest, mut next) = (None, None, None, None);
    for (key, value) in url::form_urlencoded::parse(&body) {
        let value = value.trim().to_string();
        match key.as_ref() {
            "csrf" => csrf = Some(value),
            "revision" => revision = Some(value),
            "digest" => digest = Some(value),
            "next" => next = Some(value),
            "rollout" if !value.is_empty() => selector.rollout = Some(value),
            "wave" if !value.is_empty() => selector.wave = Some(value),
            "tag" if !value.is_empty() => selector.tags.push(value),
            "all_pending" => selector.all_pending = value == "true",
            _ => {}
        }
    }
    let refused = |viewer: &Viewer| {
        warn!(selects = %selector.describe(), user = ?viewer.name(), "Approval refused: the form failed the CSRF check.");
    };
    let (viewer, who) = match signed_in_form(&app, viewer, &conn, &headers, csrf.as_deref(), "approve", refused).await {
        Ok(checked) => checked,
        Err(response) => return response,
    };
    let back = next_or_home(next.as_deref()).to_string();
    let seen = digest.map(Seen::Digest);
    let actor = Actor::of(viewer.identity(), viewer.name(), AuditVia::View, Some(conn.peer));
    let approved = approve::approve_selection(&app.shared, &selector, revision.as_deref(), seen.as_ref(), &actor);
    match approved.await {
        Ok(_) => redirect(&back, None),
        Err(refused @ SelectionRefused::Internal(_)) => {
            app.pages.message(StatusCode::INTERNAL_SERVER_ERROR, "error", &who, &refused.to_string(), None)
        }
        Err(refused) => {
            let code = match &refused {
                SelectionRefused::Invalid(_) | SelectionRefused::Revision(_) | SelectionRefused::MissingSeen => {
                    StatusCode::BAD_REQUEST
                }
                SelectionRefused::Forbidden { .. } => StatusCode::FORBIDDEN,
                _ => StatusCode::CONFLICT,
            };
            let message = format!("Nothing was approved: {refused}.");
            app.pages.message(code, "not approved", &who, &message, Some(Link::to(&back, "Look again")))
        }
    }
}

/// The person behind a form that changes something, with who they are shown as: signed in, and
/// the form posted from this site with their CSRF token. Otherwise the answer to give: the login
/// page, or 403 naming the problem (after `refused` logged it and the audit trail got it as a
/// refused `action`).
#[allow(clippy::result_large_err)] // the error is the response, returned at once
pub(super) async fn signed_in_form(
    app: &App,
    viewer: Option<Viewer>,
    conn: &ConnInfo,
    headers: &HeaderMap,
    csrf: Option<&str>,
    action: &str,
    refused: impl FnOnce(&Viewer),
) -> Result<(Viewer, Option<Who>), Response> {
    let Some(viewer) = viewer else { return Err(redirect("/login", None)) };
    let who = who(&Some(viewer.clone()));
    match viewer.check_form(from_this_site(app, headers, conn), csrf) {
        Ok(()) => Ok((viewer, who)),
        Err(problem) => {
            refused(&viewer);
            let entry = audit::Entry::new(action, Outcome::Refused, viewer.name(), AuditVia::View, Some(conn.peer));
            audit::record(&app.shared, entry.detail("the form failed the CSRF check")).await;
            Err(app.pages.message(StatusCode::FORBIDDEN, "forbidden", &who, problem, None))
        }
    }
}

#[derive(Deserialize)]
struct LoginQuery {
    next: Option<String>,
}

/// `next` when it is a path of this site, else the fleet.
fn next_or_home(next: Option<&str>) -> &str {
    next.and_then(local_path).unwrap_or("/")
}

/// The sign-in page: the provider's button and the token form, as configured.
fn login_form(app: &App, code: StatusCode, next: &str, name: &str, problem: Option<&str>) -> Response {
    app.pages.page(
        code,
        "login.html",
        context! {
            title => "sign in", who => Serde(None::<Who>), next, name, problem,
            tokens => app.auth.has_tokens(), oidc => app.oidc.is_some(),
        },
    )
}

async fn login_page(State(app): State<Arc<App>>, Query(q): Query<LoginQuery>) -> Response {
    let next = next_or_home(q.next.as_deref());
    login_form(&app, StatusCode::OK, next, "", None)
}

#[derive(Deserialize)]
struct LoginForm {
    name: Option<String>,
    token: Option<String>,
    next: Option<String>,
}

async fn login(
    State(app): State<Arc<App>>,
    Extension(conn): Extension<ConnInfo>,
    Form(form): Form<LoginForm>,
) -> Response {
    let next = next_or_home(form.next.as_deref());
    let typed = form.name.as_deref().map(str::trim).unwrap_or("");
    let again = |code: StatusCode, problem: &str, name: &str| login_form(&app, code, next, name, Some(problem));
    let said = match typed {
        "" => None,
        name => match clean_name(name) {
            Some(name) => Some(name),
            None => return again(StatusCode::BAD_REQUEST, "Names are up to 100 printable characters.", ""),
        },
    };
    let client = conn.peer.ip();
    let context = format!("sign-in as {:?}", said.as_deref().unwrap_or(""));
    let verified = app.auth.verify(client, form.token.as_deref().unwrap_or(""), &context);
    if let Err(refusal @ (Refusal::Wrong | Refusal::NotAllowed | Refusal::NoToken)) = &verified {
        let who = said.as_deref().map_or("-".to_string(), |n| format!("- ({n})"));
        let entry = audit::Entry::new("sign-in", Outcome::Refused, &who, AuditVia::View, Some(conn.peer));
        audit::record(&app.shared, entry.detail(format!("with a token: {refusal:?}"))).await;
    }
    let viewer = match verified {
        Ok(viewer) => viewer,
        Err(Refusal::Throttled(wait)) => {
            let mut response =
                again(StatusCode::TOO_MANY_REQUESTS, "Too many wrong tokens. Wait a little and try again.", typed);
            response.headers_mut().insert(header::RETRY_AFTER, Refusal::retry_after(wait));
            return response;
        }
        Err(Refusal::Wrong | Refusal::NotAllowed) => return again(StatusCode::UNAUTHORIZED, "Wrong token.", typed),
        Err(Refusal::NoToken) => {
            return again(
                StatusCode::FORBIDDEN,
                "This daemon has no API token (api.token_file, api.tokens): nobody signs in with one.",
                typed,
            );
        }
        Err(Refusal::Unreadable) => {
            return again(
                StatusCode::INTERNAL_SERVER_ERROR,
                "The API token file is unreadable; see the daemon's log.",
                typed,
            );
        }
    };
    // The shared token's holders say who they are; a named token is who it is.
    let viewer = viewer.saying(said.as_deref());
    let identity = viewer.identity().clone();
    let Some(fp) = app.auth.token_fingerprint(&identity.name) else {
        return again(
            StatusCode::INTERNAL_SERVER_ERROR,
            "The API token file is unreadable; see the daemon's log.",
            typed,
        );
    };
    match app.auth.open_session(&identity, Via::Token { name: identity.name.clone(), fp }).await {
        Ok(cookie) => {
            info!(user = ?viewer.name(), via = "token", client = %client, "Signed in to the status view.");
            let entry = audit::Entry::new("sign-in", Outcome::Done, viewer.name(), AuditVia::View, Some(conn.peer));
            audit::record(&app.shared, entry.detail(format!("with API token {}", identity.name))).await;
            redirect(next, Some(cookie))
        }
        Err(e) => {
            error!(error = %e, "No session opened.");
            again(StatusCode::SERVICE_UNAVAILABLE, "No session could be opened; see the daemon's log.", typed)
        }
    }
}

#[derive(Deserialize)]
struct LogoutForm {
    csrf: Option<String>,
}

/// Signs out: the cookie goes, and the person's sessions end on every replica (the revocation
/// record: [`super::revoke`]).
async fn logout(
    State(app): State<Arc<App>>,
    Extension(viewer): Extension<Option<Viewer>>,
    Extension(conn): Extension<ConnInfo>,
    headers: HeaderMap,
    Form(form): Form<LogoutForm>,
) -> Response {
    if let Some(viewer @ Viewer::Session { claims, .. }) = &viewer {
        let who = who(&Some(viewer.clone()));
        if let Err(problem) = viewer.check_form(from_this_site(&app, &headers, &conn), form.csrf.as_deref()) {
            return app.pages.message(StatusCode::FORBIDDEN, "forbidden", &who, problem, None);
        }
        if let Err(e) = app.auth.end_session(claims).await {
            error!(user = ?viewer.name(), error = %e, "Sign-out not recorded: the session ends in this browser only.");
            let mut response = app.pages.message(
                StatusCode::SERVICE_UNAVAILABLE,
                "signed out here only",
                &None,
                "This browser is signed out, but the sign-out could not be recorded for the other replicas: a copy of the session cookie stays good until it expires. Try signing in and out again; the daemon's log says why.",
                Some(Link::to("/", "The fleet")),
            );
            response.headers_mut().insert(header::SET_COOKIE, app.auth.cookie(None));
            return response;
        }
        info!(user = ?viewer.name(), "Signed out of the status view.");
        let entry = audit::Entry::new("sign-out", Outcome::Done, viewer.name(), AuditVia::View, Some(conn.peer));
        audit::record(&app.shared, entry.detail("on every replica")).await;
    }
    redirect("/", Some(app.auth.cookie(None)))
}

/// The cookie that carries a sign-in through the provider, sealed like a session.
const FLOW: &str = "oidc";

/// Starts a sign-in through the provider.
async fn oidc_start(State(app): State<Arc<App>>, Query(q): Query<LoginQuery>) -> Response {
    let Some(oidc) = &app.oidc else { return super::text(StatusCode::NOT_FOUND, "no OpenID provider is configured\n") };
    let next = next_or_home(q.next.as_deref());
    if !app.auth.sessions() {
        return login_form(
            &app,
            StatusCode::SERVICE_UNAVAILABLE,
            next,
            "",
            Some("Sessions are unavailable; see the daemon's log."),
        );
    }
    let network = app.shared.network.current().network.clone();
    match oidc.start(&network, next).await {
        Ok((url, flow)) => {
            let sealed = app.auth.keys.seal(FLOW, &flow);
            // Lax: the provider's redirect back is a cross-site navigation.
            let cookie = app.auth.make_cookie("strata_oidc", Some(&sealed), FLOW_LIFETIME, cookie::SameSite::Lax);
            let location = HeaderValue::try_from(url).unwrap_or(HeaderValue::from_static("/login"));
            let mut response = (StatusCode::SEE_OTHER, [(header::LOCATION, location)]).into_response();
            response.headers_mut().insert(header::SET_COOKIE, cookie);
            response
        }
        Err(e) => {
            error!(error = %e, "Sign-in through the OpenID provider cannot start.");
            login_form(
                &app,
                StatusCode::BAD_GATEWAY,
                next,
                "",
                Some("The sign-in provider cannot be reached; see the daemon's log."),
            )
        }
    }
}

#[derive(Deserialize)]
struct Callback {
    code: Option<String>,
    state: Option<String>,
    error: Option<String>,
}

/// The provider sends the browser back here: the flow this browser started is finished.
async fn oidc_callback(
    State(app): State<Arc<App>>,
    Extension(conn): Extension<ConnInfo>,
    headers: HeaderMap,
    Query(q): Query<Callback>,
) -> Response {
    let Some(oidc) = &app.oidc else { return super::text(StatusCode::NOT_FOUND, "no OpenID provider is configured\n") };
    let clear = app.auth.make_cookie("strata_oidc", None, FLOW_LIFETIME, cookie::SameSite::Lax);
    let refuse = |code: StatusCode, message: &str| {
        let mut response =
            app.pages.message(code, "not signed in", &None, message, Some(Link::to("/login", "Sign in again")));
        response.headers_mut().insert(header::SET_COOKIE, clear.clone());
        response
    };
    let flow: Option<Flow> = app.auth.read_cookie(&headers, "strata_oidc").and_then(|v| app.auth.keys.open(FLOW, &v));
    let Some(flow) = flow.filter(|f| f.exp > crate::daemon::store::now_ms() / 1000) else {
        return refuse(StatusCode::BAD_REQUEST, "This sign-in was not started from this browser, or took too long.");
    };
    let state_ok = q
        .state
        .as_deref()
        .is_some_and(|s| bool::from(subtle::ConstantTimeEq::ct_eq(s.as_bytes(), flow.state.as_bytes())));
    if !state_ok {
        warn!("Sign-in through the OpenID provider refused: the state is not the one this browser was given.");
        return refuse(StatusCode::BAD_REQUEST, "This sign-in was not started from this browser.");
    }
    if let Some(error) = q.error.as_deref() {
        let error: String = error.chars().filter(|c| c.is_ascii_graphic()).take(100).collect();
        warn!(error = %error, "The OpenID provider did not sign anyone in.");
        return refuse(StatusCode::UNAUTHORIZED, &format!("The sign-in provider answered: {error}."));
    }
    let Some(code) = q.code.as_deref().filter(|c| !c.is_empty()) else {
        return refuse(StatusCode::BAD_REQUEST, "The sign-in provider sent no code.");
    };
    let network = app.shared.network.current().network.clone();
    let person = match oidc.finish(&network, &flow, code).await {
        Ok(person) => person,
        Err(e) => {
            warn!(error = %e, "Sign-in through the OpenID provider refused.");
            let entry = audit::Entry::new("sign-in", Outcome::Refused, "-", AuditVia::View, Some(conn.peer));
            audit::record(&app.shared, entry.detail(format!("through the OpenID provider: {e}"))).await;
            return refuse(StatusCode::UNAUTHORIZED, "The sign-in could not be verified; the daemon's log says why.");
        }
    };
    let identity = Identity::new(&person.name, None, person.groups.clone());
    let session = match app.auth.open_session(&identity, Via::Oidc { sub: person.sub.clone() }).await {
        Ok(cookie) => cookie,
        Err(e) => {
            error!(error = %e, "No session opened.");
            return refuse(StatusCode::SERVICE_UNAVAILABLE, "No session could be opened; see the daemon's log.");
        }
    };
    info!(user = ?person.name, sub = ?person.sub, groups = ?person.groups, via = "oidc", "Signed in to the status view.");
    let entry = audit::Entry::new("sign-in", Outcome::Done, &person.name, AuditVia::View, Some(conn.peer));
    audit::record(
        &app.shared,
        entry.detail(format!("through the OpenID provider (groups: {})", person.groups.join(", "))),
    )
    .await;
    let next = next_or_home(Some(&flow.next)).to_string();
    let mut response = app.pages.page(
        StatusCode::OK,
        "continue.html",
        context! { title => "signed in", who => Serde(None::<Who>), next },
    );
    response.headers_mut().append(header::SET_COOKIE, session);
    response.headers_mut().append(header::SET_COOKIE, clear);
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_are_escaped_and_path_segments_encoded() {
        let pages = Pages::new();
        let row = FleetRow {
            name: "<script>x</script>".into(),
            profile: "p\"".into(),
            version: "1".into(),
            revision: Rev { short: "abc".into(), full: "abc".into(), url: Some("https://f/\"><x".into()) },
            sync: "applied\" onclick=\"x".into(),
            health: "ready".into(),
            drifted: 0,
            pending: None,
            tags: vec!["<b>".into()],
        };
        let html = pages.render("rows.html", context! { rows => Serde(vec![row]) }).unwrap();
        assert!(!html.contains("<script>") && !html.contains("<b>") && !html.contains("\" onclick"), "{html}");
        assert!(html.contains("href=\"/clusters/%3Cscript%3Ex%3C%2Fscript%3E\""), "{html}");
        assert_eq!(segment("a b/c\r\n?"), "a%20b%2Fc%0D%0A%3F");
    }

    #[test]
    fn every_template_renders() {
        let pages = Pages::new();
        let who = Some(Who { name: "alice".into(), csrf: Some("c".into()), cannot: None });
        let r = || Rev { short: "abc1234".into(), full: "abc1234ff".into(), url: None };
        let login = context! { title => "sign in", who => Serde(None::<Who>), next => "/", name => "", problem => None::<String>, tokens => true, oidc => true };
        let pending = context! {
            title => "t", here => "/clusters/a/pending", who => Serde(who), summary => "s", base => Serde(r()), head => Serde(r()),
            rows => Serde(side_by_side("--- base/A/b\n+++ head/A/b\n@@ -1 +1 @@\n-x\n+y\n")), name => "a", rollout => None::<String>, stale => None::<String>,
            forbidden => None::<String>,
        };
        assert!(pages.render("login.html", login).unwrap().contains("name=\"next\" value=\"&#x2f;\""));
        let pending = pages.render("pending.html", pending).unwrap();
        assert!(pending.contains("name=\"csrf\" value=\"c\"") && pending.contains("id=\"approve\""), "{pending}");
        assert!(pending.contains("<td class=\"del\">x</td>") && pending.contains("<td class=\"add\">y</td>"));
        let message = context! { title => "t", who => Serde(None::<Who>), message => "m", link => Serde(None::<Link>) };
        assert!(pages.render("message.html", message).unwrap().contains("<p>m</p>"));
        let next = context! { title => "t", who => Serde(None::<Who>), next => "/clusters/a" };
        assert!(pages.render("continue.html", next).unwrap().contains("content=\"0; url=&#x2f;clusters&#x2f;a\""));
    }

    #[test]
    fn the_audit_page_lists_entries_escaped_with_links_to_what_they_are_about() {
        let mut entry = audit::Entry::new("approve", Outcome::Refused, "<b>mallory</b>", AuditVia::Cli, None)
            .cluster("prod-1")
            .revision(Some("9f3c2aa5d0e4"))
            .detail("the pending update is now at 4be1f07");
        entry.at = 1_795_824_000_000;
        let ctx = context! {
            title => "audit", who => Serde(None::<Who>), entries => Serde(vec![entry]), limit => 500, cluster => "", user => "",
        };
        let html = Pages::new().render("audit.html", ctx).unwrap();
        assert!(html.contains("&lt;b&gt;mallory&lt;&#x2f;b&gt;") && !html.contains("<b>mallory"), "{html}");
        assert!(html.contains("href=\"/clusters/prod-1\"") && html.contains(">9f3c2aa<"), "{html}");
        assert!(html.contains("2026-11-28T00:00:00Z") && html.contains("refused") && html.contains(">cli<"), "{html}");
    }

    #[test]
    fn the_fleet_page_offers_one_form_for_the_pending_updates_its_tag_selects() {
        use crate::daemon::selection::{Selection, digest};
        let rev = "9f3c2aa5d0e4c1b7a9e8f6d3c2b1a0f9e8d7c6b5";
        let names: Vec<String> = (0..12).map(|i| format!("prod-{i:02}")).collect();
        let clusters: Vec<(String, String)> = names.iter().map(|n| (n.clone(), rev.to_string())).collect();
        let selection = Selection { digest: digest(clusters.iter().map(|(c, r)| (c.as_str(), r.as_str()))), clusters };
        let selector = Selector { tags: vec!["env:prod".into()], ..Selector::default() };
        let page = |who: Option<Who>| {
            let snapshot = Snapshot::new(1, Vec::new());
            let list = ListPage {
                rows: Vec::new(),
                matched: 0,
                total: 0,
                filtered: true,
                page: 1,
                pages: 1,
                from: 0,
                to: 0,
                first: None,
                prev: None,
                next: None,
                last: None,
            };
            let none = || Serde(Vec::<Choice>::new());
            let ctx = context! {
                title => "fleet", who => Serde(who), problems => Serde(Vec::<String>::new()),
                o => Serde(snapshot.overview()), rollouts => Serde(Vec::<RolloutLine>::new()), list => Serde(list),
                selection => Serde(Some(selection.to_json(&selector))), what => "tagged env:prod", here => "/?tag=env%3Aprod",
                profiles => none(), versions => none(), states => none(), healths => none(), sorts => none(),
                q => "", tag => "env:prod", profile => "", version_filter => "", state => "", health => "", sort => "", version => "1",
            };
            Pages::new().render("fleet.html", ctx).unwrap()
        };
        let html = page(Some(Who { name: "alice".into(), csrf: Some("the-csrf".into()), cannot: None }));
        assert!(html.contains("12 pending updates tagged env:prod wait for approval"), "{html}");
        assert!(html.contains("prod-09</a>, … (2 more)") && !html.contains(">prod-10<"), "ten names: {html}");
        for field in [
            "name=\"csrf\" value=\"the-csrf\"".to_string(),
            "name=\"tag\" value=\"env:prod\"".to_string(),
            format!("name=\"revision\" value=\"{rev}\""),
            format!("name=\"digest\" value=\"{}\"", selection.digest),
        ] {
            assert!(html.contains(&field), "{field}: {html}");
        }
        assert!(html.contains("Approve 12 at 9f3c2aa"), "{html}");
        let signed_out = page(None);
        assert!(!signed_out.contains("action=\"/approvals\"") && signed_out.contains("Sign in to approve"));
        // Signed in but in none of auth.write_groups: the form is not offered, the reason is.
        let cannot = Some("you are in none of the groups that may act here (auth.write_groups)".to_string());
        let looker = page(Some(Who { name: "bob".into(), csrf: Some("c".into()), cannot }));
        assert!(
            !looker.contains("action=\"/approvals\"") && looker.contains("none of the groups that may act"),
            "{looker}"
        );
    }
}
