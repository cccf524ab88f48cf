//! A forge API stand-in (GitHub, Gitea, GitLab, Bitbucket shapes) over HTTP on 127.0.0.1: it
//! records every request exactly as received, answers commit statuses and pull-request comments
//! (listed a page at a time as each forge pages them), refuses comments longer than each forge
//! takes as that forge does, and can be told to be down, to rate-limit, or to refuse the token.
//!
//! Comment limits, in characters (see `strata::report::Provider::comment_limit` for sources):
//! - GitHub: over 65,536, `422` `{"message": "Validation Failed", "errors": [{"resource":
//!   "IssueComment", "code": "unprocessable", "field": "data", "message": "Body is too long
//!   (maximum is 65536 characters)"}], …}`;
//! - GitLab: over 1,000,000, `400` `{"message": "400 (Bad request) \"Note {:note=>[\"is too
//!   long (maximum is 1000000 characters)\"]}\" not given"}`;
//! - Gitea and Forgejo: no limit (their API has none);
//! - Bitbucket Cloud: it documents none; the stand-in refuses what Bitbucket Server refuses
//!   (over 32,767), with the bare `400` Cloud answers oversized comments with.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper::{Request, Response};
use serde_json::{Value, json};

#[derive(Clone, Debug)]
pub struct Seen {
    pub method: String,
    pub path: String,
    pub headers: BTreeMap<String, String>,
    pub body: Value,
    pub at: Instant,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    Up,
    /// 503 to everything.
    Down,
    /// 401 to everything.
    Unauthorized,
}

#[derive(Default)]
struct State {
    seen: Vec<Seen>,
    mode: Option<Mode>,
    /// Answer the next this-many requests with 403 + `retry-after: 1`.
    rate_limit_next: usize,
    comments: Vec<(u64, String)>,
    next_id: u64,
    /// GitLab pages carry `x-next-page` only, without a `Link` header.
    no_gitlab_links: bool,
    /// Point `rel="next"` links at this base URL instead of the stand-in's own.
    foreign_next: Option<String>,
    /// Comments refused for their length: (path, characters).
    too_long: Vec<(String, usize)>,
}

/// The forge a request path is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Shape {
    Github,
    Gitea,
    Gitlab,
    Bitbucket,
}

impl Shape {
    fn of(path: &str) -> Shape {
        if path.starts_with("/api/v1/") {
            Shape::Gitea
        } else if path.starts_with("/api/v4/") {
            Shape::Gitlab
        } else if path.starts_with("/2.0/") {
            Shape::Bitbucket
        } else {
            Shape::Github
        }
    }

    /// The longest comment the forge takes, in characters (`None`: no limit).
    pub fn comment_limit(self) -> Option<usize> {
        match self {
            Shape::Github => Some(65_536),
            Shape::Gitlab => Some(1_000_000),
            Shape::Gitea => None,
            Shape::Bitbucket => Some(32_767),
        }
    }

    /// The forge's answer to a comment over its limit.
    fn too_long(self) -> Response<Full<Bytes>> {
        match self {
            Shape::Github => reply(
                422,
                json!({"message": "Validation Failed", "errors": [{"resource": "IssueComment", "code": "unprocessable", "field": "data", "message": "Body is too long (maximum is 65536 characters)"}], "documentation_url": "https://docs.github.com/rest/issues/comments#create-an-issue-comment"}),
                &[],
            ),
            Shape::Gitlab => reply(
                400,
                json!({"message": "400 (Bad request) \"Note {:note=>[\"is too long (maximum is 1000000 characters)\"]}\" not given"}),
                &[],
            ),
            Shape::Bitbucket => Response::builder()
                .status(400)
                .header("content-type", "text/html")
                .body(Full::new(Bytes::from("<h1>Bad Request (400)</h1>")))
                .unwrap(),
            Shape::Gitea => unreachable!("Gitea takes comments of any length"),
        }
    }
}

/// A comment's text in a create or update request: `body` (GitHub, Gitea, GitLab) or
/// `content.raw` (Bitbucket).
fn comment_text(body: &Value) -> String {
    body["body"].as_str().or(body["content"]["raw"].as_str()).unwrap_or("").to_string()
}

pub struct Forge {
    pub url: String,
    state: Arc<Mutex<State>>,
}

impl Forge {
    pub fn start() -> Forge {
        Forge::start_with(None)
    }

    /// Over TLS with `tls` (a certificate from the test's own CA).
    pub fn start_with(tls: Option<Arc<rustls::ServerConfig>>) -> Forge {
        let state = Arc::new(Mutex::new(State { next_id: 100, ..State::default() }));
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let served = state.clone();
        let url = super::common::serve(listener, tls, move |req| handle(served.clone(), req));
        Forge { url, state }
    }

    pub fn set_mode(&self, mode: Mode) {
        self.state.lock().unwrap().mode = Some(mode);
    }

    pub fn rate_limit_next(&self, n: usize) {
        self.state.lock().unwrap().rate_limit_next = n;
    }

    pub fn seen(&self) -> Vec<Seen> {
        self.state.lock().unwrap().seen.clone()
    }

    pub fn clear(&self) {
        self.state.lock().unwrap().seen.clear();
    }

    /// Commit statuses accepted (2xx answered), in order: (path, body).
    pub fn statuses(&self) -> Vec<Seen> {
        self.state
            .lock()
            .unwrap()
            .seen
            .iter()
            .filter(|s| s.path.contains("/statuses/") && s.headers.contains_key("x-answered-ok"))
            .cloned()
            .collect()
    }

    pub fn comments(&self) -> Vec<(u64, String)> {
        self.state.lock().unwrap().comments.clone()
    }

    /// A comment someone else wrote; its id.
    pub fn add_comment(&self, body: &str) -> u64 {
        let mut s = self.state.lock().unwrap();
        s.next_id += 1;
        let id = s.next_id;
        s.comments.push((id, body.to_string()));
        id
    }

    pub fn without_gitlab_links(&self) {
        self.state.lock().unwrap().no_gitlab_links = true;
    }

    pub fn link_next_pages_to(&self, base: &str) {
        self.state.lock().unwrap().foreign_next = Some(base.to_string());
    }

    /// Comments refused for their length: (path, characters).
    pub fn too_long(&self) -> Vec<(String, usize)> {
        self.state.lock().unwrap().too_long.clone()
    }
}

fn query_number(path: &str, name: &str) -> Option<usize> {
    let query = path.split_once('?')?.1;
    query.split('&').find_map(|pair| pair.strip_prefix(name)?.strip_prefix('=')?.parse().ok())
}

/// One page of comments as each forge answers a listing: GitHub (`per_page`, default 30, `Link`
/// by repository id), GitLab (`per_page`, default 20, `x-next-page` and `Link`), Gitea and
/// Forgejo (every comment of the issue at once, `x-total-count`).
fn comment_page(s: &State, path: &str, host: &str) -> Response<Full<Bytes>> {
    if Shape::of(path) == Shape::Bitbucket {
        return bitbucket_page(s, path, host);
    }
    let all: Vec<Value> = s.comments.iter().map(|(id, b)| json!({"id": id, "body": b})).collect();
    let total = all.len().to_string();
    if path.starts_with("/api/v1/") {
        return reply(200, Value::Array(all), &[("x-total-count", &total)]);
    }
    let gitlab = path.starts_with("/api/v4/");
    let per_page = query_number(path, "per_page").unwrap_or(if gitlab { 20 } else { 30 }).clamp(1, 100);
    let page = query_number(path, "page").unwrap_or(1).max(1);
    let items: Vec<Value> = all.iter().skip((page - 1) * per_page).take(per_page).cloned().collect();
    let more = page * per_page < all.len();
    let base = s.foreign_next.clone().unwrap_or_else(|| format!("http://{host}"));
    let route = path.split('?').next().unwrap_or("");
    let next = if gitlab {
        format!("{base}{route}?id=1&page={}&per_page={per_page}", page + 1)
    } else {
        // GitHub links pages by repository id: /repositories/{id}/issues/{n}/comments.
        let issue = route.split("/issues/").nth(1).unwrap_or("");
        format!("{base}/repositories/4242/issues/{issue}?per_page={per_page}&page={}", page + 1)
    };
    let link = format!("<{next}>; rel=\"next\"");
    let next_page = if more { (page + 1).to_string() } else { String::new() };
    let page_text = page.to_string();
    let mut headers: Vec<(&str, &str)> = Vec::new();
    if gitlab {
        headers.extend([("x-page", page_text.as_str()), ("x-next-page", next_page.as_str()), ("x-total", &total)]);
    }
    if more && !(gitlab && s.no_gitlab_links) {
        headers.push(("link", &link));
    }
    reply(200, Value::Array(items), &headers)
}

/// Bitbucket Cloud's paged listing: `{"values": […], "pagelen", "page", "size", "next"}`, the
/// comment's text in `content.raw`.
fn bitbucket_page(s: &State, path: &str, host: &str) -> Response<Full<Bytes>> {
    let pagelen = query_number(path, "pagelen").unwrap_or(10).clamp(1, 100);
    let page = query_number(path, "page").unwrap_or(1).max(1);
    let values: Vec<Value> = s
        .comments
        .iter()
        .skip((page - 1) * pagelen)
        .take(pagelen)
        .map(|(id, b)| json!({"id": id, "content": {"raw": b, "markup": "markdown"}, "deleted": false}))
        .collect();
    let mut body = json!({"values": values, "pagelen": pagelen, "page": page, "size": s.comments.len()});
    if page * pagelen < s.comments.len() {
        let route = path.split('?').next().unwrap_or("");
        body["next"] = json!(format!("http://{host}{route}?pagelen={pagelen}&page={}", page + 1));
    }
    reply(200, body, &[])
}

fn reply(code: u16, body: Value, extra: &[(&str, &str)]) -> Response<Full<Bytes>> {
    let mut builder = Response::builder().status(code).header("content-type", "application/json");
    for (k, v) in extra {
        builder = builder.header(*k, *v);
    }
    builder.body(Full::new(Bytes::from(body.to_string()))).unwrap()
}

async fn handle(state: Arc<Mutex<State>>, req: Request<Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    let host = req.headers().get("host").and_then(|h| h.to_str().ok()).unwrap_or("").to_string();
    let method = req.method().to_string();
    let path = req.uri().path_and_query().map(|p| p.to_string()).unwrap_or_default();
    let mut headers: BTreeMap<String, String> =
        req.headers().iter().map(|(k, v)| (k.as_str().to_string(), v.to_str().unwrap_or("").to_string())).collect();
    let bytes = req.into_body().collect().await.map(|b| b.to_bytes()).unwrap_or_default();
    let body: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    let mut s = state.lock().unwrap();
    let mode = s.mode.unwrap_or(Mode::Up);
    let limited = s.rate_limit_next > 0 && mode == Mode::Up;
    let response = match mode {
        Mode::Down => reply(503, json!({"message": "Service Unavailable"}), &[]),
        Mode::Unauthorized => reply(401, json!({"message": "Bad credentials"}), &[]),
        Mode::Up if limited => {
            s.rate_limit_next -= 1;
            reply(403, json!({"message": "You have exceeded a secondary rate limit."}), &[("retry-after", "1")])
        }
        Mode::Up => {
            headers.insert("x-answered-ok".into(), "1".into());
            if path.contains("/statuses/") {
                s.next_id += 1;
                reply(201, json!({"id": s.next_id, "state": body["state"]}), &[])
            } else if method == "GET" && (path.contains("/comments") || path.contains("/notes")) {
                comment_page(&s, &path, &host)
            } else if let Some(length) = (method != "GET")
                .then(|| comment_text(&body).chars().count())
                .filter(|n| Shape::of(&path).comment_limit().is_some_and(|limit| *n > limit))
            {
                headers.remove("x-answered-ok");
                s.too_long.push((path.clone(), length));
                Shape::of(&path).too_long()
            } else if method == "POST" && (path.contains("/comments") || path.contains("/notes")) {
                s.next_id += 1;
                let id = s.next_id;
                let text = comment_text(&body);
                s.comments.push((id, text.clone()));
                match Shape::of(&path) {
                    Shape::Bitbucket => reply(201, json!({"id": id, "content": {"raw": text}}), &[]),
                    _ => reply(201, json!({"id": id, "body": text}), &[]),
                }
            } else if method == "PATCH" || method == "PUT" {
                let id: u64 = path.rsplit('/').next().and_then(|i| i.parse().ok()).unwrap_or(0);
                let text = comment_text(&body);
                match s.comments.iter_mut().find(|(i, _)| *i == id) {
                    Some(comment) => {
                        comment.1 = text;
                        reply(200, json!({"id": id}), &[])
                    }
                    None => reply(404, json!({"message": "Not Found"}), &[]),
                }
            } else {
                reply(404, json!({"message": "Not Found"}), &[])
            }
        }
    };
    s.seen.push(Seen { method, path, headers, body, at: Instant::now() });
    Ok(response)
}
