//! Report back to Git: commit statuses per cluster, and plans on pull requests.
//!
//! ```text
//!   daemon events ──> Status { revision, context strata/<cluster>, state, description }
//!                        │ (outbox in the store: nothing lost while a forge is down)
//!                        v
//!   StatusSink ── GitHub · Gitea/Forgejo · GitLab · Bitbucket Cloud   (REST, exactly as documented)
//!             └── git notes under refs/notes/strata                  (no forge needed)
//! ```
//!
//! Requests are built by pure functions ([`Forge::status_request`] and friends) so each
//! provider's exact shape has a plain test; [`http`] sends them.

pub mod http;
pub mod notes;

use std::path::PathBuf;
use std::time::Duration;

use serde::Serialize;
use serde_json::{Value, json};

/// Where commit statuses go.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StatusSink {
    Forge {
        forge: Forge,
        token_file: PathBuf,
    },
    /// Git notes under refs/notes/strata in the watched repository.
    Notes,
}

#[derive(Clone, Debug)]
pub struct StatusConfig {
    pub sink: StatusSink,
    /// Link from each status, `{cluster}` and `{revision}` filled in (the status view).
    pub target_url: Option<String>,
    /// The least time between two writes to the forge (GitHub asks for a second between
    /// content-creating requests).
    pub min_interval: Duration,
    /// Also fetch pull-request heads and post a plan for every new one.
    pub pull_requests: bool,
    /// TLS for the forge's API.
    pub tls: crate::net::settings::Tls,
}

impl StatusConfig {
    pub fn target_url(&self, cluster: &str, revision: &str) -> Option<String> {
        self.target_url.as_ref().map(|t| t.replace("{cluster}", cluster).replace("{revision}", revision))
    }
}

/// GitHub's limit, which every provider here accepts.
pub const MAX_DESCRIPTION: usize = 140;

pub use strata_core::status::State;

/// One commit status.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Status {
    /// The commit (40 hex).
    pub revision: String,
    /// `strata/<cluster>` or `strata/plan`.
    pub context: String,
    pub state: State,
    /// At most 140 characters.
    pub description: String,
    pub target_url: Option<String>,
}

pub fn context(cluster: &str) -> String {
    format!("strata/{cluster}")
}

/// Cuts a description to 140 characters (not bytes), ending in `…` when cut.
///
/// Diagnostics end in what to do (`…; check repository.ca_file`): when one does not fit, its
/// beginning (what failed) and its last clause (what to do) are kept, the middle elided, so the
/// status still names the setting to check.
pub fn truncate(text: &str) -> String {
    let text = text.lines().next().unwrap_or("").trim();
    let length = text.chars().count();
    if length <= MAX_DESCRIPTION {
        return text.to_string();
    }
    let head = |n: usize| text.chars().take(n).collect::<String>();
    let advice = text
        .rsplit_once("; ")
        .map(|(_, advice)| advice)
        .filter(|a| (8..=MAX_DESCRIPTION / 2).contains(&a.chars().count()));
    match advice {
        Some(advice) => {
            let kept = MAX_DESCRIPTION - advice.chars().count() - 2;
            format!("{}…; {advice}", head(kept - 1).trim_end())
        }
        None => format!("{}…", head(MAX_DESCRIPTION - 1)),
    }
}

impl Status {
    pub fn new(revision: &str, context: String, state: State, description: &str, target_url: Option<String>) -> Status {
        Status { revision: revision.to_string(), context, state, description: truncate(description), target_url }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Provider {
    Github,
    Gitea,
    Gitlab,
    Bitbucket,
}

impl Provider {
    pub fn parse(text: &str) -> Option<Provider> {
        Some(match text {
            "github" => Provider::Github,
            "gitea" | "forgejo" => Provider::Gitea,
            "gitlab" => Provider::Gitlab,
            "bitbucket" => Provider::Bitbucket,
            _ => return None,
        })
    }

    /// The forge's name, for messages.
    pub fn label(self) -> &'static str {
        match self {
            Provider::Github => "GitHub",
            Provider::Gitea => "Gitea/Forgejo",
            Provider::Gitlab => "GitLab",
            Provider::Bitbucket => "Bitbucket",
        }
    }

    /// The most characters strata writes in one pull-request comment on this forge (the plan
    /// is cut to fit, see [`crate::plan::format::comment`]):
    /// - GitHub: 65,536. The REST API answers a longer body with `422 Validation Failed`,
    ///   `errors[0].message` "Body is too long (maximum is 65536 characters)" (as reported in
    ///   danger/danger#424, telia-oss/github-pr-resource#259; go-github#440 checks it locally).
    ///   Measurements (dead-claudia/github-limits#13) show the store's real bound is 262,144
    ///   bytes; 65,536 characters is within it for any text.
    /// - GitLab: 1,000,000. The notes API documents `body` as "Limited to 1,000,000
    ///   characters" (docs.gitlab.com/ee/api/notes.html, create new merge request note) and
    ///   answers `400` "Note {:note=>["is too long (maximum is 1000000 characters)"]}"
    ///   (NARKOZ/gitlab#610, runatlantis/atlantis#1755).
    /// - Gitea and Forgejo: no limit of their own (`CreateIssueCommentOption.Body` is only
    ///   `binding:"Required"`, modules/structs/issue_comment.go; comments are stored as
    ///   LONGTEXT); strata keeps to GitHub's 65,536, which reads alike and passes the request-body
    ///   limits of the proxies these often sit behind.
    /// - Bitbucket: 32,767. Bitbucket Server / Data Center answers a longer comment with `400`
    ///   "Please enter a non-empty value less than 32768 characters" (jfrog/frogbot#647,
    ///   checkmarx-ltd/cx-flow#374). Bitbucket Cloud documents no limit (runatlantis/atlantis
    ///   posted 200,000 characters; atlantis#1251 shows a bare `400 Bad Request` for larger
    ///   ones), so strata keeps to Server's.
    pub fn comment_limit(self) -> usize {
        match self {
            Provider::Github | Provider::Gitea => 65_536,
            Provider::Gitlab => 1_000_000,
            Provider::Bitbucket => 32_767,
        }
    }

    pub fn default_api(self) -> &'static str {
        match self {
            Provider::Github => "https://api.github.com",
            Provider::Gitea => "https://gitea.com",
            Provider::Gitlab => "https://gitlab.com",
            Provider::Bitbucket => "https://api.bitbucket.org",
        }
    }
}

/// A request as a forge's REST API documents it. The token is added when it is sent, so a
/// request can be logged or compared in a test without the secret.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Request {
    pub method: &'static str,
    pub url: String,
    /// Headers other than authentication.
    pub headers: Vec<(&'static str, String)>,
    pub body: Option<Value>,
}

/// A forge: provider, API base URL and repository.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Forge {
    pub provider: Provider,
    /// API base, without a trailing slash: `https://api.github.com`, `https://github.example.com/api/v3`,
    /// `https://gitea.example.com`, `https://gitlab.example.com`, `https://api.bitbucket.org`.
    pub api: String,
    /// `owner/name` (GitHub, Gitea), the project path or numeric id (GitLab), `workspace/slug` (Bitbucket).
    pub repo: String,
}

/// GitLab's project ids in URLs: a numeric id as it is, a path URL-encoded (`group%2Fproject`).
fn gitlab_project(repo: &str) -> String {
    repo.replace('%', "%25").replace('/', "%2F")
}

/// Why the next page of a forge's comment listing cannot be followed: the link, the setting,
/// and the URL parser's error as the source.
#[derive(Debug, thiserror::Error)]
pub enum PageError {
    #[error("{url}: {source}")]
    Url {
        url: String,
        #[source]
        source: url::ParseError,
    },
    #[error("the next page's link `{link}` is not a URL: {source}")]
    Link {
        link: String,
        #[source]
        source: url::ParseError,
    },
    #[error("status.api `{api}`: {source}")]
    Api {
        api: String,
        #[source]
        source: url::ParseError,
    },
    #[error("x-next-page `{page}` is not a page number")]
    NextPage {
        page: String,
        #[source]
        source: std::num::ParseIntError,
    },
    /// A next page anywhere but on the API's own origin: the token would be sent along.
    #[error(
        "the forge's next page of comments is on {next}, not on {api} (status.api); not following it with the token"
    )]
    Elsewhere { next: String, api: String },
}

impl Forge {
    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.api.trim_end_matches('/'))
    }

    fn json_headers(&self) -> Vec<(&'static str, String)> {
        let mut headers = vec![("content-type", "application/json".to_string()), ("user-agent", "strata".to_string())];
        if self.provider == Provider::Github {
            headers.push(("accept", "application/vnd.github+json".to_string()));
            headers.push(("x-github-api-version", "2022-11-28".to_string()));
        } else {
            headers.push(("accept", "application/json".to_string()));
        }
        headers
    }

    /// The authentication header for `token`.
    pub fn auth_header(&self, token: &str) -> (&'static str, String) {
        match self.provider {
            Provider::Github | Provider::Bitbucket => ("authorization", format!("Bearer {token}")),
            Provider::Gitea => ("authorization", format!("token {token}")),
            Provider::Gitlab => ("private-token", token.to_string()),
        }
    }

    /// Creates a commit status.
    /// - GitHub: `POST /repos/{owner}/{repo}/statuses/{sha}` `{state, target_url, description, context}`
    /// - Gitea/Forgejo: `POST /api/v1/repos/{owner}/{repo}/statuses/{sha}`, same body
    /// - GitLab: `POST /api/v4/projects/{id}/statuses/{sha}` `{state, name, description, target_url}`,
    ///   states pending | running | success | failed
    /// - Bitbucket: `POST /2.0/repositories/{workspace}/{slug}/commit/{sha}/statuses/build`
    ///   `{key, state, name, url, description}`, states INPROGRESS | SUCCESSFUL | FAILED
    pub fn status_request(&self, status: &Status) -> Request {
        let (path, body) = match self.provider {
            Provider::Github | Provider::Gitea => {
                let prefix = if self.provider == Provider::Gitea { "/api/v1" } else { "" };
                let mut body = json!({ "state": status.state.as_str(), "description": status.description, "context": status.context });
                if let Some(url) = &status.target_url {
                    body["target_url"] = json!(url);
                }
                (format!("{prefix}/repos/{}/statuses/{}", self.repo, status.revision), body)
            }
            Provider::Gitlab => {
                let state = match status.state {
                    State::Pending => "pending",
                    State::Success => "success",
                    State::Failure | State::Error => "failed",
                };
                let mut body = json!({ "state": state, "name": status.context, "description": status.description });
                if let Some(url) = &status.target_url {
                    body["target_url"] = json!(url);
                }
                (format!("/api/v4/projects/{}/statuses/{}", gitlab_project(&self.repo), status.revision), body)
            }
            Provider::Bitbucket => {
                let state = match status.state {
                    State::Pending => "INPROGRESS",
                    State::Success => "SUCCESSFUL",
                    State::Failure | State::Error => "FAILED",
                };
                // The key identifies the status on the commit (at most 40 characters); Bitbucket
                // requires a URL.
                let key: String = status.context.replace('/', "-").chars().take(40).collect();
                let url = status.target_url.clone().unwrap_or_else(|| format!("https://bitbucket.org/{}", self.repo));
                let body = json!({ "key": key, "state": state, "name": status.context, "url": url, "description": status.description });
                (format!("/2.0/repositories/{}/commit/{}/statuses/build", self.repo, status.revision), body)
            }
        };
        Request { method: "POST", url: self.url(&path), headers: self.json_headers(), body: Some(body) }
    }

    /// The first page of a pull request's comments (strata's is found by its marker; the rest
    /// come through [`Forge::next_page`]). GitHub and GitLab pages hold up to 100 comments,
    /// Bitbucket's too (`pagelen`, its maximum); Gitea and Forgejo answer with every comment of
    /// the issue at once.
    pub fn list_comments_request(&self, pr: u64) -> Option<Request> {
        let path = match self.provider {
            Provider::Github => format!("/repos/{}/issues/{pr}/comments?per_page=100", self.repo),
            Provider::Gitea => format!("/api/v1/repos/{}/issues/{pr}/comments", self.repo),
            Provider::Gitlab => {
                format!("/api/v4/projects/{}/merge_requests/{pr}/notes?per_page=100", gitlab_project(&self.repo))
            }
            Provider::Bitbucket => format!("/2.0/repositories/{}/pullrequests/{pr}/comments?pagelen=100", self.repo),
        };
        Some(Request { method: "GET", url: self.url(&path), headers: self.json_headers(), body: None })
    }

    /// Creates a comment (`id: None`) or updates comment `id`. Bitbucket Cloud:
    /// `POST|PUT /2.0/repositories/{workspace}/{slug}/pullrequests/{id}/comments[/{comment}]`
    /// with `{"content": {"raw": …}}`.
    pub fn comment_request(&self, pr: u64, id: Option<u64>, body: &str) -> Option<Request> {
        let (method, path) = match (self.provider, id) {
            (Provider::Github, None) => ("POST", format!("/repos/{}/issues/{pr}/comments", self.repo)),
            (Provider::Github, Some(id)) => ("PATCH", format!("/repos/{}/issues/comments/{id}", self.repo)),
            (Provider::Gitea, None) => ("POST", format!("/api/v1/repos/{}/issues/{pr}/comments", self.repo)),
            (Provider::Gitea, Some(id)) => ("PATCH", format!("/api/v1/repos/{}/issues/comments/{id}", self.repo)),
            (Provider::Gitlab, None) => {
                ("POST", format!("/api/v4/projects/{}/merge_requests/{pr}/notes", gitlab_project(&self.repo)))
            }
            (Provider::Gitlab, Some(id)) => {
                ("PUT", format!("/api/v4/projects/{}/merge_requests/{pr}/notes/{id}", gitlab_project(&self.repo)))
            }
            (Provider::Bitbucket, None) => {
                ("POST", format!("/2.0/repositories/{}/pullrequests/{pr}/comments", self.repo))
            }
            (Provider::Bitbucket, Some(id)) => {
                ("PUT", format!("/2.0/repositories/{}/pullrequests/{pr}/comments/{id}", self.repo))
            }
        };
        let body = match self.provider {
            Provider::Bitbucket => json!({ "content": { "raw": body } }),
            _ => json!({ "body": body }),
        };
        Some(Request { method, url: self.url(&path), headers: self.json_headers(), body: Some(body) })
    }

    /// The page after `request`, from the answer's headers ([`Forge::next_page`]) or, on
    /// Bitbucket, from the `next` URL in its body (held to the same origin).
    pub fn next_page_of(
        &self,
        request: &Request,
        headers: &::http::HeaderMap,
        body: &Value,
    ) -> Result<Option<Request>, PageError> {
        if self.provider != Provider::Bitbucket {
            return self.next_page(request, headers);
        }
        let Some(next) = body["next"].as_str().filter(|n| !n.is_empty()) else { return Ok(None) };
        let current =
            url::Url::parse(&request.url).map_err(|source| PageError::Url { url: request.url.clone(), source })?;
        let next = current.join(next).map_err(|source| PageError::Link { link: next.to_string(), source })?;
        let api = url::Url::parse(&self.url("/")).map_err(|source| PageError::Api { api: self.api.clone(), source })?;
        if next.origin() != api.origin() {
            return Err(PageError::Elsewhere {
                next: next.origin().ascii_serialization(),
                api: api.origin().ascii_serialization(),
            });
        }
        Ok(Some(Request { url: next.to_string(), ..request.clone() }))
    }

    /// The request for the page after `request`, from the answer's headers: `Link: <…>;
    /// rel="next"` (GitHub, Gitea, GitLab), else GitLab's `x-next-page`. `Ok(None)` on the last
    /// page. A next page anywhere but on the API's own scheme, host and port is refused: the
    /// token would be sent along.
    pub fn next_page(&self, request: &Request, headers: &::http::HeaderMap) -> Result<Option<Request>, PageError> {
        let current =
            url::Url::parse(&request.url).map_err(|source| PageError::Url { url: request.url.clone(), source })?;
        let linked = headers
            .get_all("link")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .find_map(link_next)
            .map(|target| current.join(target).map_err(|source| PageError::Link { link: target.to_string(), source }))
            .transpose()?;
        let next = match linked {
            Some(next) => next,
            None => {
                let page = headers.get("x-next-page").and_then(|v| v.to_str().ok()).map(str::trim).unwrap_or("");
                if page.is_empty() {
                    return Ok(None);
                }
                let page: u64 =
                    page.parse().map_err(|source| PageError::NextPage { page: page.to_string(), source })?;
                let mut next = current.clone();
                let kept: Vec<(String, String)> =
                    current.query_pairs().filter(|(k, _)| k != "page").map(|(k, v)| (k.into(), v.into())).collect();
                next.query_pairs_mut().clear().extend_pairs(kept).append_pair("page", &page.to_string());
                next
            }
        };
        let api = url::Url::parse(&self.url("/")).map_err(|source| PageError::Api { api: self.api.clone(), source })?;
        if next.origin() != api.origin() {
            return Err(PageError::Elsewhere {
                next: next.origin().ascii_serialization(),
                api: api.origin().ascii_serialization(),
            });
        }
        Ok(Some(Request { url: next.to_string(), ..request.clone() }))
    }

    /// The id of the comment carrying `marker`, from a comment listing: an array of comments
    /// with a `body` (GitHub, Gitea, GitLab) or Bitbucket's page, `values` with `content.raw`
    /// (deleted comments left out).
    pub fn find_comment(&self, listing: &Value, marker: &str) -> Option<u64> {
        let comments = listing.as_array().or(listing["values"].as_array())?;
        comments
            .iter()
            .filter(|c| c["deleted"] != true)
            .find(|c| c["body"].as_str().or(c["content"]["raw"].as_str()).is_some_and(|b| b.contains(marker)))?["id"]
            .as_u64()
    }
}

/// The target of the `rel="next"` link in one `Link` header value (RFC 8288):
/// `<https://…?page=2>; rel="next", <https://…?page=5>; rel="last"`. `rel` may list several
/// relation types, quoted or not, in any case.
fn link_next(value: &str) -> Option<&str> {
    let mut rest = value;
    loop {
        let start = rest.find('<')?;
        let end = start + rest[start..].find('>')?;
        let target = &rest[start + 1..end];
        rest = &rest[end + 1..];
        // The parameters run to the next link; a `<` cannot occur in them unquoted.
        let params = &rest[..rest.find('<').unwrap_or(rest.len())];
        let next = params.split(';').filter_map(|p| p.split_once('=')).any(|(name, relations)| {
            name.trim().eq_ignore_ascii_case("rel")
                && relations
                    .trim()
                    .trim_end_matches(',')
                    .trim()
                    .trim_matches('"')
                    .split_ascii_whitespace()
                    .any(|r| r.eq_ignore_ascii_case("next"))
        });
        if next {
            return Some(target);
        }
    }
}

/// A busy pull request's comments span pages; past this many, strata stops looking rather than
/// page on for ever through a broken or hostile forge's answers.
pub const MAX_COMMENT_PAGES: usize = 100;

#[cfg(test)]
mod tests {
    use super::*;

    fn status() -> Status {
        Status::new(
            "0123456789abcdef0123456789abcdef01234567",
            context("aws-cluster"),
            State::Pending,
            "pending update aws-profile@1.0.0 — approve: strata approve aws-cluster",
            Some("http://strata.example.com/clusters/aws-cluster".into()),
        )
    }

    fn forge(provider: Provider, api: &str, repo: &str) -> Forge {
        Forge { provider, api: api.into(), repo: repo.into() }
    }

    #[test]
    fn descriptions_fit_140_characters() {
        let long = "é".repeat(200);
        let cut = truncate(&long);
        assert_eq!(cut.chars().count(), 140);
        assert!(cut.ends_with('…'));
        assert_eq!(truncate("first line\nsecond"), "first line");
        // What to do survives: the beginning and the last clause are kept.
        let failure = format!(
            "cluster unreachable: TLS: the certificate of api.prod.example is not trusted: it is for {}; add its CA to certificate-authority-data",
            "\"CN=x\" ".repeat(30)
        );
        let cut = truncate(&failure);
        assert!(cut.chars().count() <= 140, "{cut}");
        assert!(cut.starts_with("cluster unreachable: TLS: the certificate of api.prod.example"), "{cut}");
        assert!(cut.ends_with("…; add its CA to certificate-authority-data"), "{cut}");
    }

    #[test]
    fn github_statuses_as_documented() {
        let r = forge(Provider::Github, "https://api.github.com", "platform/fleet").status_request(&status());
        assert_eq!(r.method, "POST");
        assert_eq!(
            r.url,
            "https://api.github.com/repos/platform/fleet/statuses/0123456789abcdef0123456789abcdef01234567"
        );
        assert!(r.headers.contains(&("accept", "application/vnd.github+json".into())));
        assert!(r.headers.contains(&("x-github-api-version", "2022-11-28".into())));
        assert_eq!(
            r.body.unwrap(),
            json!({"state": "pending", "context": "strata/aws-cluster", "target_url": "http://strata.example.com/clusters/aws-cluster",
                   "description": "pending update aws-profile@1.0.0 — approve: strata approve aws-cluster"})
        );
        let enterprise = forge(Provider::Github, "https://github.example.com/api/v3/", "p/f").status_request(&status());
        assert!(enterprise.url.starts_with("https://github.example.com/api/v3/repos/p/f/statuses/"));
    }

    #[test]
    fn gitlab_and_bitbucket_map_states_and_names() {
        let mut s = status();
        s.state = State::Error;
        let r = forge(Provider::Gitlab, "https://gitlab.example.com", "platform/fleet").status_request(&s);
        assert_eq!(
            r.url,
            "https://gitlab.example.com/api/v4/projects/platform%2Ffleet/statuses/0123456789abcdef0123456789abcdef01234567"
        );
        assert_eq!(r.body.as_ref().unwrap()["state"], "failed");
        assert_eq!(r.body.as_ref().unwrap()["name"], "strata/aws-cluster");
        let r = forge(Provider::Bitbucket, "https://api.bitbucket.org", "acme/fleet").status_request(&status());
        assert_eq!(
            r.url,
            "https://api.bitbucket.org/2.0/repositories/acme/fleet/commit/0123456789abcdef0123456789abcdef01234567/statuses/build"
        );
        let body = r.body.unwrap();
        assert_eq!(body["state"], "INPROGRESS");
        assert_eq!(body["key"], "strata-aws-cluster");
        assert_eq!(body["url"], "http://strata.example.com/clusters/aws-cluster");
    }

    #[test]
    fn auth_headers_per_provider() {
        assert_eq!(forge(Provider::Github, "", "").auth_header("t"), ("authorization", "Bearer t".into()));
        assert_eq!(forge(Provider::Gitea, "", "").auth_header("t"), ("authorization", "token t".into()));
        assert_eq!(forge(Provider::Gitlab, "", "").auth_header("t"), ("private-token", "t".into()));
    }

    fn headers(pairs: &[(&'static str, &str)]) -> ::http::HeaderMap {
        let mut h = ::http::HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, v.parse().unwrap());
        }
        h
    }

    #[test]
    fn the_next_page_of_comments_as_each_forge_links_it() {
        let github = forge(Provider::Github, "https://api.github.com", "p/f");
        let first = github.list_comments_request(7).unwrap();
        // GitHub links by repository id, not by name.
        let link = "<https://api.github.com/repositories/42/issues/7/comments?per_page=100&page=2>; rel=\"next\", \
                    <https://api.github.com/repositories/42/issues/7/comments?per_page=100&page=4>; rel=\"last\"";
        let next = github.next_page(&first, &headers(&[("link", link)])).unwrap().unwrap();
        assert_eq!(next.url, "https://api.github.com/repositories/42/issues/7/comments?per_page=100&page=2");
        assert_eq!((next.method, &next.headers), (first.method, &first.headers));
        let last = "<https://api.github.com/repositories/42/issues/7/comments?per_page=100&page=1>; rel=\"first\", \
                    <https://api.github.com/repositories/42/issues/7/comments?per_page=100&page=3>; rel=\"prev\"";
        assert_eq!(github.next_page(&next, &headers(&[("link", last)])).unwrap(), None);
        assert_eq!(github.next_page(&first, &headers(&[])).unwrap(), None);

        // Relation types in any case, unquoted, several at once; relative targets; several headers.
        for link in [
            "<?page=2>; REL=Next",
            "</x?page=2>; title=\"a;b\"; rel=\"prev next\"",
            "<https://api.github.com/x?page=2>;rel=next",
        ] {
            let next =
                github.next_page(&first, &headers(&[("link", "<https://api.github.com/y>; rel=prev"), ("link", link)]));
            assert!(next.unwrap().unwrap().url.contains("page=2"), "{link}");
        }

        let gitlab = forge(Provider::Gitlab, "https://gitlab.example.com", "g/p");
        let first = gitlab.list_comments_request(12).unwrap();
        let next = gitlab.next_page(&first, &headers(&[("x-next-page", "2"), ("x-page", "1")])).unwrap().unwrap();
        assert_eq!(
            next.url,
            "https://gitlab.example.com/api/v4/projects/g%2Fp/merge_requests/12/notes?per_page=100&page=2"
        );
        let third = gitlab.next_page(&next, &headers(&[("x-next-page", "3")])).unwrap().unwrap();
        assert_eq!(
            third.url,
            "https://gitlab.example.com/api/v4/projects/g%2Fp/merge_requests/12/notes?per_page=100&page=3"
        );
        assert_eq!(gitlab.next_page(&third, &headers(&[("x-next-page", "")])).unwrap(), None);
        assert!(
            gitlab
                .next_page(&third, &headers(&[("x-next-page", "two")]))
                .unwrap_err()
                .to_string()
                .contains("x-next-page `two`")
        );
    }

    #[test]
    fn a_next_page_on_another_host_is_not_followed_with_the_token() {
        let github = forge(Provider::Github, "https://github.example.com/api/v3", "p/f");
        let first = github.list_comments_request(7).unwrap();
        for elsewhere in [
            "<https://evil.example.com/api/v3/repos/p/f/issues/7/comments?page=2>; rel=\"next\"",
            "<http://github.example.com/api/v3/repos/p/f/issues/7/comments?page=2>; rel=\"next\"",
            "<https://github.example.com:8443/api/v3/repos/p/f/issues/7/comments?page=2>; rel=\"next\"",
            "<//evil.example.com/x>; rel=\"next\"",
        ] {
            let e = github.next_page(&first, &headers(&[("link", elsewhere)])).unwrap_err().to_string();
            assert!(e.contains("not following it with the token"), "{elsewhere}: {e}");
        }
        let enterprise = "<https://github.example.com/api/v3/repositories/9/issues/7/comments?page=2>; rel=\"next\"";
        assert!(github.next_page(&first, &headers(&[("link", enterprise)])).unwrap().is_some());
    }

    #[test]
    fn bitbucket_pull_request_comments_as_documented() {
        let f = forge(Provider::Bitbucket, "https://api.bitbucket.org", "acme/fleet");
        let list = f.list_comments_request(5).unwrap();
        assert_eq!(
            list.url,
            "https://api.bitbucket.org/2.0/repositories/acme/fleet/pullrequests/5/comments?pagelen=100"
        );
        let create = f.comment_request(5, None, "plan").unwrap();
        assert_eq!(
            (create.method, create.url.as_str()),
            ("POST", "https://api.bitbucket.org/2.0/repositories/acme/fleet/pullrequests/5/comments")
        );
        assert_eq!(create.body.unwrap(), json!({"content": {"raw": "plan"}}));
        let update = f.comment_request(5, Some(9), "plan").unwrap();
        assert_eq!(
            (update.method, update.url.as_str()),
            ("PUT", "https://api.bitbucket.org/2.0/repositories/acme/fleet/pullrequests/5/comments/9")
        );
        // A page: `values` with `content.raw`, deleted comments skipped, `next` in the body.
        let page = json!({"values": [
            {"id": 3, "content": {"raw": "<!-- strata-plan -->\nold"}, "deleted": true},
            {"id": 4, "content": {"raw": "lgtm"}},
            {"id": 8, "content": {"raw": "<!-- strata-plan -->\nplan"}}
        ], "next": "https://api.bitbucket.org/2.0/repositories/acme/fleet/pullrequests/5/comments?pagelen=100&page=2"});
        assert_eq!(f.find_comment(&page, "<!-- strata-plan -->"), Some(8));
        let next = f.next_page_of(&list, &::http::HeaderMap::new(), &page).unwrap().unwrap();
        assert!(next.url.ends_with("page=2"), "{}", next.url);
        assert_eq!(f.next_page_of(&next, &::http::HeaderMap::new(), &json!({"values": []})).unwrap(), None);
        let elsewhere = json!({"values": [], "next": "https://evil.example.com/2.0/x"});
        assert!(
            f.next_page_of(&list, &::http::HeaderMap::new(), &elsewhere)
                .unwrap_err()
                .to_string()
                .contains("not following it")
        );
    }

    #[test]
    fn comment_limits_per_forge() {
        assert_eq!(Provider::Github.comment_limit(), 65_536);
        assert_eq!(Provider::Gitea.comment_limit(), 65_536);
        assert_eq!(Provider::Gitlab.comment_limit(), 1_000_000);
        assert_eq!(Provider::Bitbucket.comment_limit(), 32_767);
    }

    #[test]
    fn comments_are_found_by_marker_and_updated_in_place() {
        let f = forge(Provider::Github, "https://api.github.com", "p/f");
        let listing = json!([{"id": 1, "body": "lgtm"}, {"id": 7, "body": "<!-- strata-plan -->\nold plan"}]);
        assert_eq!(f.find_comment(&listing, "<!-- strata-plan -->"), Some(7));
        let update = f.comment_request(12, Some(7), "new").unwrap();
        assert_eq!(
            (update.method, update.url.as_str()),
            ("PATCH", "https://api.github.com/repos/p/f/issues/comments/7")
        );
        let gl = forge(Provider::Gitlab, "https://gitlab.com", "g/p").comment_request(3, Some(9), "x").unwrap();
        assert_eq!(
            (gl.method, gl.url.as_str()),
            ("PUT", "https://gitlab.com/api/v4/projects/g%2Fp/merge_requests/3/notes/9")
        );
    }
}

/// How a plan comment to the configured forge fits: that forge's limit, and where the rest of
/// the plan is — what to run between `base` (none: the first commit) and `head`, and the
/// `strata/plan` status's link (`status.target_url`) when there is one.
pub fn plan_fit(status: Option<&StatusConfig>, base: Option<&str>, head: &str) -> crate::plan::format::Fit {
    use crate::plan::format::Fit;
    let revisions = base.map(|base| (base, head));
    let Some(status) = status else {
        return Fit::new(Provider::Github.comment_limit(), "GitHub", None, revisions);
    };
    let provider = match &status.sink {
        StatusSink::Forge { forge, .. } => forge.provider,
        StatusSink::Notes => Provider::Github,
    };
    let url = status.target_url("plan", head);
    Fit::new(provider.comment_limit(), provider.label(), url.as_deref(), revisions)
}

/// What `plan --post` did.
#[derive(Debug, Default)]
pub struct Posted {
    pub status: bool,
    /// `created` or `updated`, with the comment id.
    pub comment: Option<(&'static str, u64)>,
}

/// Sets `strata/plan` on the head commit and, with a pull request number, creates or updates
/// the one comment holding the plan (found again by its hidden marker).
pub async fn post_plan(
    client: &http::Client,
    forge: &Forge,
    token: &str,
    status: &Status,
    pr: Option<u64>,
    comment: &str,
    marker: &str,
) -> Result<Posted, http::Failure> {
    // A comment the forge would refuse is not sent (and the status is not set either: the
    // plan was made for a larger comment than this forge takes, which is strata's mistake).
    let length = comment.chars().count();
    if pr.is_some() && length > forge.provider.comment_limit() {
        return Err(http::Failure::Refused(format!(
            "the plan comment has {length} characters; {} takes at most {} in a comment",
            forge.provider.label(),
            forge.provider.comment_limit()
        )));
    }
    client.send(forge, &forge.status_request(status), token).await?;
    let mut posted = Posted { status: true, comment: None };
    let Some(pr) = pr else { return Ok(posted) };
    let Some(list) = forge.list_comments_request(pr) else {
        return Err(http::Failure::Refused(format!(
            "{:?} has no pull-request comments strata can write",
            forge.provider
        )));
    };
    let mut page = list;
    let mut pages = 1;
    let existing = loop {
        let response = client.send(forge, &page, token).await?;
        if let Some(id) = forge.find_comment(&response.body, marker) {
            break Some(id);
        }
        match forge
            .next_page_of(&page, &response.headers, &response.body)
            .map_err(|e| http::Failure::Refused(e.to_string()))?
        {
            None => break None,
            Some(_) if pages == MAX_COMMENT_PAGES => {
                return Err(http::Failure::Refused(format!(
                    "pull request {pr}: strata's plan comment is not in the first {MAX_COMMENT_PAGES} pages of comments; not posting another"
                )));
            }
            Some(next) => {
                page = next;
                pages += 1;
            }
        }
    };
    let request = forge.comment_request(pr, existing, comment).expect("listing implies commenting");
    let response = client.send(forge, &request, token).await?;
    let id = existing.or(response.body["id"].as_u64()).unwrap_or(0);
    posted.comment = Some((if existing.is_some() { "updated" } else { "created" }, id));
    Ok(posted)
}
