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

use serde::Serialize;
use serde_json::{Value, json};

/// GitHub's limit, which every provider here accepts.
pub const MAX_DESCRIPTION: usize = 140;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum State {
    /// Applying, or a pending update awaiting approval.
    Pending,
    /// Applied and healthy.
    Success,
    /// Apply failed, unhealthy, or drift under `report`.
    Failure,
    /// The revision does not render.
    Error,
}

impl State {
    pub fn as_str(self) -> &'static str {
        match self {
            State::Pending => "pending",
            State::Success => "success",
            State::Failure => "failure",
            State::Error => "error",
        }
    }

    pub fn parse(text: &str) -> Option<State> {
        Some(match text {
            "pending" => State::Pending,
            "success" => State::Success,
            "failure" => State::Failure,
            "error" => State::Error,
            _ => return None,
        })
    }
}

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
pub fn truncate(text: &str) -> String {
    let text = text.lines().next().unwrap_or("").trim();
    if text.chars().count() <= MAX_DESCRIPTION {
        return text.to_string();
    }
    let mut out: String = text.chars().take(MAX_DESCRIPTION - 1).collect();
    out.push('…');
    out
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

    /// Lists a pull request's comments (first 100; strata's is found by its marker).
    pub fn list_comments_request(&self, pr: u64) -> Option<Request> {
        let path = match self.provider {
            Provider::Github => format!("/repos/{}/issues/{pr}/comments?per_page=100", self.repo),
            Provider::Gitea => format!("/api/v1/repos/{}/issues/{pr}/comments", self.repo),
            Provider::Gitlab => {
                format!("/api/v4/projects/{}/merge_requests/{pr}/notes?per_page=100", gitlab_project(&self.repo))
            }
            Provider::Bitbucket => return None,
        };
        Some(Request { method: "GET", url: self.url(&path), headers: self.json_headers(), body: None })
    }

    /// Creates a comment (`id: None`) or updates comment `id`.
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
            (Provider::Bitbucket, _) => return None,
        };
        Some(Request {
            method,
            url: self.url(&path),
            headers: self.json_headers(),
            body: Some(json!({ "body": body })),
        })
    }

    /// The id of the comment carrying `marker`, from a comment listing.
    pub fn find_comment(&self, listing: &Value, marker: &str) -> Option<u64> {
        listing.as_array()?.iter().find(|c| c["body"].as_str().is_some_and(|b| b.contains(marker)))?["id"].as_u64()
    }
}

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
    client.send(forge, &forge.status_request(status), token).await?;
    let mut posted = Posted { status: true, comment: None };
    let Some(pr) = pr else { return Ok(posted) };
    let Some(list) = forge.list_comments_request(pr) else {
        return Err(http::Failure::Refused(format!(
            "{:?} has no pull-request comments strata can write",
            forge.provider
        )));
    };
    let existing = forge.find_comment(&client.send(forge, &list, token).await?.body, marker);
    let request = forge.comment_request(pr, existing, comment).expect("listing implies commenting");
    let response = client.send(forge, &request, token).await?;
    let id = existing.or(response.body["id"].as_u64()).unwrap_or(0);
    posted.comment = Some((if existing.is_some() { "updated" } else { "created" }, id));
    Ok(posted)
}
