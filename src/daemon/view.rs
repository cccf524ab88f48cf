//! The status view: server-rendered pages on the daemon's listen address.
//!
//! ```text
//!   /                          the fleet: filter by tag and profile, sort; refreshed every 2 s
//!   /clusters/NAME             layers and objects, drift findings, history, approvals
//!   /clusters/NAME/pending     the pending update's diff side by side, and Approve
//!   /login  /logout            a session from the API token (a cookie: HttpOnly, SameSite=Strict)
//! ```
//!
//! Pages are read-only without a session (or the token for reading too, with
//! `view.require_token`). Approving is a POST carrying the session's CSRF token, recorded with the
//! name given at login. Assets are compiled into the binary; the only script polls the table.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::{Method, Request, Response, StatusCode};
use subtle::ConstantTimeEq;
use tracing::info;

use super::Shared;
use super::store::ClusterState;
use crate::config::{StatusSink, read_secret};
use crate::report::Provider;

type Reply = Response<Full<Bytes>>;

const STYLE: &str = include_str!("assets/style.css");
const SCRIPT: &str = include_str!("assets/app.js");
const SESSION_COOKIE: &str = "strata_session";
const SESSION_LIFETIME: Duration = Duration::from_secs(12 * 3600);

struct Session {
    name: String,
    csrf: String,
    expires: Instant,
}

#[derive(Default)]
pub struct Sessions {
    map: Mutex<HashMap<String, Session>>,
}

/// 32 random bytes from the kernel, hex: session ids and CSRF tokens.
fn random_token() -> String {
    use std::io::Read;
    let mut bytes = [0u8; 32];
    std::fs::File::open("/dev/urandom").and_then(|mut f| f.read_exact(&mut bytes)).expect("/dev/urandom is readable");
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Escapes text for HTML content and attribute values.
pub fn esc(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

fn html(code: StatusCode, body: String) -> Reply {
    Response::builder()
        .status(code)
        .header("content-type", "text/html; charset=utf-8")
        .header("cache-control", "no-store")
        .header("x-frame-options", "DENY")
        .header(
            "content-security-policy",
            "default-src 'self'; style-src 'self'; script-src 'self'; frame-ancestors 'none'",
        )
        .body(Full::new(Bytes::from(body)))
        .expect("valid response")
}

fn redirect(to: &str, cookie: Option<String>) -> Reply {
    let mut builder = Response::builder().status(StatusCode::SEE_OTHER).header("location", to);
    if let Some(cookie) = cookie {
        builder = builder.header("set-cookie", cookie);
    }
    builder.body(Full::new(Bytes::new())).expect("valid response")
}

fn asset(content_type: &str, body: &'static str) -> Reply {
    Response::builder()
        .header("content-type", content_type)
        .header("cache-control", "max-age=300")
        .body(Full::new(Bytes::from_static(body.as_bytes())))
        .expect("valid response")
}

fn query(req: &Request<Incoming>) -> HashMap<String, String> {
    parse_form(req.uri().query().unwrap_or(""))
}

/// `application/x-www-form-urlencoded`.
pub fn parse_form(text: &str) -> HashMap<String, String> {
    text.split('&')
        .filter(|p| !p.is_empty())
        .map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            (decode(k), decode(v))
        })
        .collect()
}

fn decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 3 <= bytes.len() => {
                match std::str::from_utf8(&bytes[i + 1..i + 3]).ok().and_then(|h| u8::from_str_radix(h, 16).ok()) {
                    Some(b) => {
                        out.push(b);
                        i += 2;
                    }
                    None => out.push(b'%'),
                }
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn encode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' | b'@' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

impl Sessions {
    fn get(&self, id: &str) -> Option<(String, String)> {
        let mut map = self.map.lock().expect("sessions lock");
        map.retain(|_, s| s.expires > Instant::now());
        map.get(id).map(|s| (s.name.clone(), s.csrf.clone()))
    }

    fn create(&self, name: &str) -> String {
        let id = random_token();
        let session =
            Session { name: name.to_string(), csrf: random_token(), expires: Instant::now() + SESSION_LIFETIME };
        self.map.lock().expect("sessions lock").insert(id.clone(), session);
        id
    }

    fn remove(&self, id: &str) {
        self.map.lock().expect("sessions lock").remove(id);
    }
}

fn cookie(req: &Request<Incoming>) -> Option<String> {
    let header = req.headers().get("cookie")?.to_str().ok()?;
    header.split(';').map(str::trim).find_map(|c| c.strip_prefix(&format!("{SESSION_COOKIE}=")).map(str::to_string))
}

/// Who is signed in: (name, CSRF token), from the session cookie or an API bearer token.
fn viewer(shared: &Shared, req: &Request<Incoming>) -> Option<(String, Option<String>)> {
    if let Some(id) = cookie(req)
        && let Some((name, csrf)) = shared.sessions.get(&id)
    {
        return Some((name, Some(csrf)));
    }
    let bearer = req.headers().get("authorization")?.to_str().ok()?.strip_prefix("Bearer ")?;
    token_matches(shared, bearer).then(|| ("api".to_string(), None))
}

fn token_matches(shared: &Shared, given: &str) -> bool {
    let Some(file) = &shared.config.api_token_file else { return false };
    let Ok(token) = read_secret(file) else { return false };
    !token.is_empty() && bool::from(given.as_bytes().ct_eq(token.as_bytes()))
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

fn page(title: &str, who: Option<&str>, body: &str) -> String {
    let account = match who {
        Some(name) => format!(
            "<span class=\"who\">signed in as {} <form class=\"inline\" method=\"post\" action=\"/logout\"><button class=\"secondary\">Sign out</button></form></span>",
            esc(name)
        ),
        None => "<span class=\"who\"><a href=\"/login\">Sign in to approve</a></span>".to_string(),
    };
    format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>{} · strata</title><link rel=\"stylesheet\" href=\"/assets/style.css\"></head><body>\
         <header><h1><a href=\"/\">strata</a></h1><span class=\"muted\">{}</span>{account}</header><main>{body}</main>\
         <script src=\"/assets/app.js\"></script></body></html>",
        esc(title),
        esc(title)
    )
}

/// Routes the view's pages; `None` when the path is not one of them.
pub async fn handle(shared: &Shared, req: Request<Incoming>) -> Result<Reply, Request<Incoming>> {
    let view = &shared.config.view;
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    let parts: Vec<&str> = path.split('/').filter(|p| !p.is_empty()).collect();
    let is_view = matches!(
        (&method, parts.as_slice()),
        (
            &Method::GET,
            [] | ["fragment", "clusters"] | ["clusters", _] | ["clusters", _, "pending"] | ["login"] | ["assets", _]
        ) | (&Method::POST, ["login"] | ["logout"] | ["clusters", _, "approve"])
    );
    if !is_view {
        return Err(req);
    }
    if !view.enabled {
        return Ok(html(
            StatusCode::NOT_FOUND,
            page("not found", None, "<p>The status view is turned off on this host.</p>"),
        ));
    }
    let who = viewer(shared, &req);
    let reading_needs_login = view.require_token && who.is_none();
    let name = who.as_ref().map(|(n, _)| n.as_str());
    Ok(match (&method, parts.as_slice()) {
        (&Method::GET, ["assets", "style.css"]) => asset("text/css; charset=utf-8", STYLE),
        (&Method::GET, ["assets", "app.js"]) => asset("text/javascript; charset=utf-8", SCRIPT),
        (&Method::GET, ["assets", _]) => html(StatusCode::NOT_FOUND, String::new()),
        (&Method::GET, ["login"]) => login_page(&query(&req), None),
        (&Method::POST, ["login"]) => login(shared, req).await,
        (&Method::POST, ["logout"]) => {
            if let Some(id) = cookie(&req) {
                shared.sessions.remove(&id);
            }
            redirect("/", Some(format!("{SESSION_COOKIE}=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0")))
        }
        _ if reading_needs_login => redirect(&format!("/login?next={}", encode(&path)), None),
        (&Method::GET, []) => fleet_page(shared, &query(&req), name),
        (&Method::GET, ["fragment", "clusters"]) => fragment(shared, &req),
        (&Method::GET, ["clusters", cluster]) => cluster_page(shared, cluster, name),
        (&Method::GET, ["clusters", cluster, "pending"]) => {
            pending_page(shared, cluster, who.as_ref().map(|(n, c)| (n.as_str(), c.as_deref())))
        }
        (&Method::POST, ["clusters", cluster, "approve"]) => {
            let cluster = cluster.to_string();
            approve(shared, &cluster, who, req).await
        }
        _ => html(StatusCode::NOT_FOUND, String::new()),
    })
}

fn login_page(q: &HashMap<String, String>, problem: Option<&str>) -> Reply {
    let next = q.get("next").cloned().unwrap_or_else(|| "/".into());
    let problem = problem.map(|p| format!("<p class=\"drift\">{}</p>", esc(p))).unwrap_or_default();
    let code = if problem.is_empty() { StatusCode::OK } else { StatusCode::UNAUTHORIZED };
    html(
        code,
        page(
            "sign in",
            None,
            &format!(
                "{problem}<form class=\"login\" method=\"post\" action=\"/login\">\
                 <label>Your name (recorded with approvals)<br><input name=\"name\" required autocomplete=\"username\"></label>\
                 <label>API token<br><input name=\"token\" type=\"password\" required autocomplete=\"current-password\"></label>\
                 <input type=\"hidden\" name=\"next\" value=\"{}\"><button>Sign in</button></form>",
                esc(&next)
            ),
        ),
    )
}

async fn form(req: Request<Incoming>) -> HashMap<String, String> {
    use http_body_util::BodyExt;
    let body = http_body_util::Limited::new(req.into_body(), 64 * 1024)
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    parse_form(&String::from_utf8_lossy(&body))
}

/// Only paths on this site are followed after login.
fn local(next: &str) -> &str {
    if next.starts_with('/') && !next.starts_with("//") { next } else { "/" }
}

async fn login(shared: &Shared, req: Request<Incoming>) -> Reply {
    let fields = form(req).await;
    let name = fields.get("name").map(|n| n.trim()).filter(|n| !n.is_empty()).unwrap_or("").to_string();
    let token = fields.get("token").cloned().unwrap_or_default();
    if name.is_empty() || !token_matches(shared, &token) {
        return login_page(&fields, Some("Wrong token (or no name)."));
    }
    let id = shared.sessions.create(&name);
    info!(user = %name, "Signed in to the status view.");
    let next = local(fields.get("next").map(String::as_str).unwrap_or("/")).to_string();
    redirect(
        &next,
        Some(format!(
            "{SESSION_COOKIE}={id}; Path=/; HttpOnly; SameSite=Strict; Max-Age={}",
            SESSION_LIFETIME.as_secs()
        )),
    )
}

fn sync_badge(c: &ClusterState) -> String {
    let sync = if c.suspended { "suspended" } else { c.sync.as_str() };
    format!("<span class=\"badge s-{}\">{}</span>", esc(sync), esc(sync))
}

fn short(rev: &Option<String>) -> String {
    rev.as_deref().map(|r| r.chars().take(7).collect()).unwrap_or_else(|| "-".into())
}

fn revision_link(shared: &Shared, rev: &Option<String>) -> String {
    match rev.as_deref().and_then(|r| commit_url(shared, r)) {
        Some(url) => format!("<a class=\"mono\" href=\"{}\">{}</a>", esc(&url), esc(&short(rev))),
        None => format!("<span class=\"mono\">{}</span>", esc(&short(rev))),
    }
}

/// The fleet table's rows for the filters in `q`.
fn rows(shared: &Shared, q: &HashMap<String, String>) -> Result<String, String> {
    let tags = shared.tags.lock().expect("tags lock").clone();
    let tag = q.get("tag").map(|t| t.trim()).filter(|t| !t.is_empty());
    let profile = q.get("profile").map(|p| p.trim()).filter(|p| !p.is_empty());
    let mut fleet: Vec<_> = shared
        .store
        .fleet()?
        .into_iter()
        .filter(|(c, _)| {
            let have = tags.get(&c.name).map(Vec::as_slice).unwrap_or(&[]);
            tag.is_none_or(|t| crate::model::has_tag(have, t))
        })
        .filter(|(c, _)| {
            profile.is_none_or(|p| {
                let (name, version) = (c.profile.as_deref().unwrap_or(""), c.version.as_deref().unwrap_or(""));
                p == name || p == format!("{name}@{version}")
            })
        })
        .collect();
    match q.get("sort").map(String::as_str) {
        Some("profile") => {
            fleet.sort_by(|a, b| (&a.0.profile, &a.0.version, &a.0.name).cmp(&(&b.0.profile, &b.0.version, &b.0.name)))
        }
        Some("sync") => fleet.sort_by(|a, b| (&a.0.sync, &a.0.name).cmp(&(&b.0.sync, &b.0.name))),
        Some("drift") => fleet.sort_by(|a, b| b.0.drifted.cmp(&a.0.drifted).then(a.0.name.cmp(&b.0.name))),
        Some("pending") => fleet.sort_by(|a, b| b.1.is_some().cmp(&a.1.is_some()).then(a.0.name.cmp(&b.0.name))),
        _ => {}
    }
    let mut out = String::with_capacity(fleet.len() * 400);
    for (c, pending) in &fleet {
        let name = esc(&c.name);
        let pending = match pending {
            Some(p) => format!(
                "<a class=\"badge pending\" href=\"/clusters/{name}/pending\" title=\"{}\">update pending · {}</a>",
                esc(&p.summary),
                esc(&p.head_revision.chars().take(7).collect::<String>())
            ),
            None => String::new(),
        };
        let drift = if c.drifted > 0 { format!("<span class=\"drift\">{}</span>", c.drifted) } else { "0".into() };
        let health = c.health.as_deref().unwrap_or("unknown");
        let cluster_tags: String =
            tags.get(&c.name).into_iter().flatten().map(|t| format!("<span class=\"tag\">{}</span>", esc(t))).collect();
        let _ = write!(
            out,
            "<tr data-cluster=\"{name}\"><td><a href=\"/clusters/{name}\">{name}</a></td><td>{}@{}</td><td>{}</td><td>{}</td>\
             <td><span class=\"badge h-{}\">{}</span></td><td>{drift}</td><td>{pending}</td><td>{cluster_tags}</td></tr>",
            esc(c.profile.as_deref().unwrap_or("-")),
            esc(c.version.as_deref().unwrap_or("-")),
            revision_link(shared, &c.cluster_revision),
            sync_badge(c),
            esc(health),
            esc(health),
        );
    }
    if fleet.is_empty() {
        out.push_str("<tr><td colspan=\"8\" class=\"muted\">No cluster matches.</td></tr>");
    }
    Ok(out)
}

fn version(shared: &Shared) -> String {
    format!("\"{}\"", shared.version.load(std::sync::atomic::Ordering::Relaxed))
}

fn fleet_page(shared: &Shared, q: &HashMap<String, String>, who: Option<&str>) -> Reply {
    let rows = match rows(shared, q) {
        Ok(r) => r,
        Err(e) => return html(StatusCode::INTERNAL_SERVER_ERROR, page("error", who, &esc(&e))),
    };
    let mut profiles: Vec<String> = shared
        .store
        .clusters()
        .unwrap_or_default()
        .into_iter()
        .filter_map(|c| Some(vec![c.profile.clone()?, format!("{}@{}", c.profile?, c.version?)]))
        .flatten()
        .collect();
    profiles.sort();
    profiles.dedup();
    let selected = q.get("profile").cloned().unwrap_or_default();
    let options: String = std::iter::once(String::new())
        .chain(profiles)
        .map(|p| {
            let label = if p.is_empty() { "all profiles".to_string() } else { p.clone() };
            let sel = if p == selected { " selected" } else { "" };
            format!("<option value=\"{}\"{sel}>{}</option>", esc(&p), esc(&label))
        })
        .collect();
    let sort = q.get("sort").cloned().unwrap_or_default();
    let sorts: String = [
        ("", "name"),
        ("profile", "profile"),
        ("sync", "sync state"),
        ("drift", "drift"),
        ("pending", "pending first"),
    ]
    .iter()
    .map(|(v, l)| format!("<option value=\"{v}\"{}>{l}</option>", if *v == sort { " selected" } else { "" }))
    .collect();
    let body = format!(
        "{}<form class=\"filters\" method=\"get\" action=\"/\">\
         <label>Tag<input name=\"tag\" placeholder=\"service:hello-universe-frontend\" value=\"{}\"></label>\
         <label>Profile<select name=\"profile\">{options}</select></label>\
         <label>Sort by<select name=\"sort\">{sorts}</select></label>\
         <button>Filter</button> <a href=\"/\">clear</a></form>\
         <table><thead><tr><th>Cluster</th><th>Profile</th><th>Applied revision</th><th>Sync</th><th>Health</th><th>Drift</th><th>Update</th><th>Tags</th></tr></thead>\
         <tbody data-live data-version=\"{}\">{rows}</tbody></table>",
        shared.network.notice_html(esc),
        esc(q.get("tag").map(String::as_str).unwrap_or("")),
        esc(&version(shared)),
    );
    html(StatusCode::OK, page("fleet", who, &body))
}

fn fragment(shared: &Shared, req: &Request<Incoming>) -> Reply {
    let etag = version(shared);
    if req.headers().get("if-none-match").and_then(|v| v.to_str().ok()) == Some(etag.as_str()) {
        return Response::builder()
            .status(StatusCode::NOT_MODIFIED)
            .body(Full::new(Bytes::new()))
            .expect("valid response");
    }
    match rows(shared, &query(req)) {
        Ok(rows) => Response::builder()
            .header("content-type", "text/html; charset=utf-8")
            .header("etag", etag)
            .header("cache-control", "no-cache")
            .body(Full::new(Bytes::from(rows)))
            .expect("valid response"),
        Err(e) => html(StatusCode::INTERNAL_SERVER_ERROR, esc(&e)),
    }
}

fn cluster_page(shared: &Shared, name: &str, who: Option<&str>) -> Reply {
    let store = &shared.store;
    let Ok(Some(c)) = store.cluster(name) else {
        return html(
            StatusCode::NOT_FOUND,
            page("not found", who, &format!("<p>No cluster named <code>{}</code>.</p>", esc(name))),
        );
    };
    let mut body = format!(
        "<h2>{} <span class=\"muted\">{}@{}</span> {}</h2><p>Applied revision {} · health <span class=\"badge h-{h}\">{h}</span>{}</p>",
        esc(&c.name),
        esc(c.profile.as_deref().unwrap_or("-")),
        esc(c.version.as_deref().unwrap_or("-")),
        sync_badge(&c),
        revision_link(shared, &c.cluster_revision),
        c.message.as_deref().map(|m| format!(" · <span class=\"muted\">{}</span>", esc(m))).unwrap_or_default(),
        h = esc(c.health.as_deref().unwrap_or("unknown")),
    );
    if let Ok(Some(p)) = store.pending(name) {
        let _ = write!(
            body,
            "<p class=\"approve\"><span class=\"badge pending\">update pending</span> {} <a href=\"/clusters/{}/pending\">Review the changes</a></p>",
            esc(&p.summary),
            esc(name)
        );
    }
    let objects = store.objects(name).unwrap_or_default();
    let mut layers: Vec<&str> = Vec::new();
    for (_, layer, _) in &objects {
        if !layers.contains(&layer.as_str()) {
            layers.push(layer);
        }
    }
    let _ = write!(body, "<section><h2>Layers and objects</h2>");
    for layer in layers {
        let _ = write!(
            body,
            "<h3 class=\"muted\">{}</h3><table><thead><tr><th>Object</th><th>Last apply</th></tr></thead><tbody>",
            esc(layer)
        );
        for (object, _, action) in objects.iter().filter(|(_, l, _)| l == layer) {
            let _ = write!(body, "<tr><td class=\"mono\">{}</td><td>{}</td></tr>", esc(object), esc(action));
        }
        body.push_str("</tbody></table>");
    }
    body.push_str("</section>");
    let drift = store.drift(name).unwrap_or_default();
    let _ = write!(body, "<section><h2>Drift</h2>");
    if drift.is_empty() {
        body.push_str("<p class=\"muted\">No drift found at the last check.</p>");
    } else {
        body.push_str(
            "<table><thead><tr><th>Object</th><th>Field</th><th>Live</th><th>Desired</th></tr></thead><tbody>",
        );
        for d in &drift {
            let field = if d.path.is_empty() { "(deleted)".to_string() } else { d.path.clone() };
            let _ = write!(
                body,
                "<tr><td class=\"mono\">{}</td><td class=\"mono\">{}</td><td class=\"mono\">{}</td><td class=\"mono\">{}</td></tr>",
                esc(&d.object),
                esc(&field),
                esc(d.live.as_deref().unwrap_or("(absent)")),
                esc(d.desired.as_deref().unwrap_or("(absent)"))
            );
        }
        body.push_str("</tbody></table>");
    }
    body.push_str("</section><section><h2>History</h2><table><thead><tr><th>When</th><th>Revision</th><th>Result</th><th>Summary</th></tr></thead><tbody>");
    for h in store.history(name, 50).unwrap_or_default() {
        let _ = write!(
            body,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            esc(&crate::daemon::store::rfc3339(h.at)),
            revision_link(shared, &h.revision),
            esc(&h.result),
            esc(&h.summary)
        );
    }
    body.push_str("</tbody></table></section>");
    let approvals = store.approvals(name).unwrap_or_default();
    if !approvals.is_empty() {
        body.push_str("<section><h2>Approvals</h2><table><thead><tr><th>When</th><th>Revision</th><th>By</th></tr></thead><tbody>");
        for a in approvals {
            let _ = write!(
                body,
                "<tr><td>{}</td><td>{}</td><td>{}</td></tr>",
                esc(&crate::daemon::store::rfc3339(a.approved_at)),
                revision_link(shared, &Some(a.revision.clone())),
                esc(&a.approved_by)
            );
        }
        body.push_str("</tbody></table></section>");
    }
    html(StatusCode::OK, page(name, who, &body))
}

/// A unified diff as rows of (left line, right line): context on both sides, removals left,
/// additions right, paired up within each change.
pub fn side_by_side(diff: &str) -> String {
    let mut out =
        String::from("<table class=\"diff\"><colgroup><col class=\"n\"><col><col class=\"n\"><col></colgroup>");
    let (mut left_no, mut right_no) = (0usize, 0usize);
    let mut dels: Vec<(usize, &str)> = Vec::new();
    let mut adds: Vec<(usize, &str)> = Vec::new();
    let flush = |out: &mut String, dels: &mut Vec<(usize, &str)>, adds: &mut Vec<(usize, &str)>| {
        for i in 0..dels.len().max(adds.len()) {
            let cell = |side: Option<&(usize, &str)>, class: &str| match side {
                Some((n, text)) => format!("<td class=\"num\">{n}</td><td class=\"{class}\">{}</td>", esc(text)),
                None => "<td class=\"num\"></td><td></td>".to_string(),
            };
            let _ = write!(out, "<tr>{}{}</tr>", cell(dels.get(i), "del"), cell(adds.get(i), "add"));
        }
        dels.clear();
        adds.clear();
    };
    for line in diff.lines() {
        if let Some(name) = line.strip_prefix("--- base/") {
            flush(&mut out, &mut dels, &mut adds);
            let _ = write!(out, "<tr class=\"object\"><td colspan=\"4\">{}</td></tr>", esc(name));
        } else if line.starts_with("+++ ") {
        } else if let Some(hunk) = line.strip_prefix("@@") {
            flush(&mut out, &mut dels, &mut adds);
            // @@ -12,7 +12,7 @@
            let mut nums = hunk
                .split_whitespace()
                .filter_map(|p| p.trim_start_matches(['-', '+']).split(',').next()?.parse::<usize>().ok());
            left_no = nums.next().unwrap_or(1);
            right_no = nums.next().unwrap_or(1);
            let _ = write!(out, "<tr class=\"hunk\"><td colspan=\"4\">@@{}</td></tr>", esc(hunk));
        } else if let Some(text) = line.strip_prefix('-') {
            dels.push((left_no, text));
            left_no += 1;
        } else if let Some(text) = line.strip_prefix('+') {
            adds.push((right_no, text));
            right_no += 1;
        } else {
            flush(&mut out, &mut dels, &mut adds);
            let text = line.strip_prefix(' ').unwrap_or(line);
            let _ = write!(
                out,
                "<tr><td class=\"num\">{left_no}</td><td>{}</td><td class=\"num\">{right_no}</td><td>{}</td></tr>",
                esc(text),
                esc(text)
            );
            left_no += 1;
            right_no += 1;
        }
    }
    flush(&mut out, &mut dels, &mut adds);
    out.push_str("</table>");
    out
}

fn pending_page(shared: &Shared, name: &str, who: Option<(&str, Option<&str>)>) -> Reply {
    let viewer = who.map(|(n, _)| n);
    let Ok(Some(p)) = shared.store.pending(name) else {
        return html(
            StatusCode::NOT_FOUND,
            page(
                name,
                viewer,
                &format!(
                    "<p>{} has no pending update. <a href=\"/clusters/{}\">Back to the cluster</a></p>",
                    esc(name),
                    esc(name)
                ),
            ),
        );
    };
    let action = match who {
        Some((user, Some(csrf))) => format!(
            "<form method=\"post\" action=\"/clusters/{}/approve\"><input type=\"hidden\" name=\"csrf\" value=\"{}\">\
             <input type=\"hidden\" name=\"revision\" value=\"{}\"><button id=\"approve\">Approve and apply</button></form>\
             <span class=\"muted\">as {}</span>",
            esc(name),
            esc(csrf),
            esc(&p.head_revision),
            esc(user)
        ),
        _ => format!("<a href=\"/login?next={}\">Sign in to approve</a>", encode(&format!("/clusters/{name}/pending"))),
    };
    let body = format!(
        "<h2>Pending update for <a href=\"/clusters/{n}\">{n}</a></h2>\
         <div class=\"approve\"><span>{}: base {} → head {}</span>{action}</div>\
         <p class=\"muted\">Left: what the cluster runs. Right: what approving applies.</p>{}",
        esc(&p.summary),
        revision_link(shared, &Some(p.base_revision.clone())),
        revision_link(shared, &Some(p.head_revision.clone())),
        side_by_side(&p.diff),
        n = esc(name),
    );
    html(StatusCode::OK, page(&format!("{name}: pending update"), viewer, &body))
}

async fn approve(shared: &Shared, name: &str, who: Option<(String, Option<String>)>, req: Request<Incoming>) -> Reply {
    let forbidden =
        |message: &str| html(StatusCode::FORBIDDEN, page("forbidden", None, &format!("<p>{}</p>", esc(message))));
    let Some((user, csrf)) = who else {
        return redirect(&format!("/login?next={}", encode(&format!("/clusters/{name}/pending"))), None);
    };
    // A browser session must prove the form came from this site; API clients use the token.
    let same_origin = match (
        req.headers().get("origin").and_then(|o| o.to_str().ok()),
        req.headers().get("host").and_then(|h| h.to_str().ok()),
    ) {
        (Some(origin), Some(host)) => origin.split_once("://").map(|(_, h)| h) == Some(host),
        (None, _) => true,
        _ => false,
    };
    let fields = form(req).await;
    if let Some(expected) = &csrf {
        let given = fields.get("csrf").map(String::as_str).unwrap_or("");
        if !same_origin || !bool::from(given.as_bytes().ct_eq(expected.as_bytes())) {
            return forbidden(
                "This approval did not come from a page of this site (CSRF check failed). Reload the page and try again.",
            );
        }
    }
    let pending = match shared.store.pending(name) {
        Ok(Some(p)) => p,
        _ => {
            return html(
                StatusCode::CONFLICT,
                page("nothing to approve", Some(&user), &format!("<p>{} has no pending update.</p>", esc(name))),
            );
        }
    };
    // The update shown is the one approved: a newer commit needs its own look.
    if fields.get("revision").is_some_and(|r| r != &pending.head_revision) {
        return html(
            StatusCode::CONFLICT,
            page(
                "changed",
                Some(&user),
                &format!(
                    "<p>The pending update changed since the page was loaded. <a href=\"/clusters/{}/pending\">Review it again</a>.</p>",
                    esc(name)
                ),
            ),
        );
    }
    match shared.store.approve(name, &pending.head_revision, &user) {
        Ok(_) => {
            info!(cluster = name, revision = %pending.head_revision, by = %user, "Pending update approved in the status view.");
            shared.touch();
            let _ = shared.triggers.try_send(super::Trigger::Reevaluate(format!("approval of {name}")));
            redirect(&format!("/clusters/{}", encode(name)), None)
        }
        Err(e) => html(StatusCode::INTERNAL_SERVER_ERROR, page("error", Some(&user), &esc(&e))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escaping_and_forms() {
        assert_eq!(esc("<a href=\"x\">&'"), "&lt;a href=&quot;x&quot;&gt;&amp;&#39;");
        let f = parse_form("name=alice+b&token=a%2Fb%3D&next=%2Fclusters%2Faws");
        assert_eq!(f["name"], "alice b");
        assert_eq!(f["token"], "a/b=");
        assert_eq!(f["next"], "/clusters/aws");
        assert_eq!(local("//evil.example.com"), "/");
        assert_eq!(local("https://evil.example.com"), "/");
        assert_eq!(local("/clusters/aws"), "/clusters/aws");
    }

    #[test]
    fn diffs_side_by_side() {
        let diff = "--- base/Deployment/hello-universe/ui\n+++ head/Deployment/hello-universe/ui\n@@ -12,3 +12,3 @@\n spec:\n-  replicas: 1\n+  replicas: 3\n   selector:\n";
        let html = side_by_side(diff);
        assert!(html.contains("<tr class=\"object\"><td colspan=\"4\">Deployment/hello-universe/ui</td></tr>"));
        assert!(html.contains("<td class=\"num\">13</td><td class=\"del\">  replicas: 1</td><td class=\"num\">13</td><td class=\"add\">  replicas: 3</td>"));
        assert!(html.contains("<td class=\"num\">12</td><td>spec:</td><td class=\"num\">12</td><td>spec:</td>"));
    }
}
