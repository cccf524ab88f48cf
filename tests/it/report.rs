//! `strata plan --post` against a forge API stand-in: the exact requests each provider's REST
//! API documents, and the pull-request comment updated in place.

use crate::common;
use crate::forge;
use crate::support;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::Repo;
use forge::{Forge, Seen};

const AWS_1_0_0: &str = "profiles/aws-profile/1.0.0/profile.yaml";

/// A repository whose last commit edits aws-profile 1.0.0 in place, and a host config for `forge`.
fn setup(forge: &Forge, provider: &str, repo_name: &str) -> (Repo, tempfile::TempDir, PathBuf, String) {
    let repo = Repo::example();
    repo.edit(AWS_1_0_0, "replicas: 1", "replicas: 3");
    let head = repo.commit("three replicas");
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("token"), "s3cret\n").unwrap();
    let config = dir.path().join("strata.yaml");
    std::fs::write(
        &config,
        format!("status: {{ provider: {provider}, api: '{}', repo: {repo_name}, token_file: token, target_url: 'http://strata.example.com/{{cluster}}' }}\n", forge.url),
    )
    .unwrap();
    (repo, dir, config, head)
}

fn post(repo: &Repo, config: &Path, pr: Option<&str>) -> common::Run {
    let mut args = vec!["plan", "--post", "--config", config.to_str().unwrap(), "--format", "markdown"];
    if let Some(pr) = pr {
        args.extend(["--pr", pr]);
    }
    repo.strata(&args)
}

fn request<'a>(seen: &'a [Seen], method: &str, path: &str) -> &'a Seen {
    seen.iter().find(|s| s.method == method && s.path == path).unwrap_or_else(|| {
        panic!(
            "no {method} {path} among {:?}",
            seen.iter().map(|s| format!("{} {}", s.method, s.path)).collect::<Vec<_>>()
        )
    })
}

#[test]
fn github_plan_status_and_one_comment_updated_in_place() {
    let forge = Forge::start();
    let (repo, _dir, config, head) = setup(&forge, "github", "platform/fleet");
    let run = post(&repo, &config, Some("7"));
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(run.stderr.contains("comment 101 created") || run.stderr.contains("created"), "{}", run.stderr);
    let seen = forge.seen();
    let status = request(&seen, "POST", &format!("/repos/platform/fleet/statuses/{head}"));
    assert_eq!(status.headers["authorization"], "Bearer s3cret");
    assert_eq!(status.headers["accept"], "application/vnd.github+json");
    assert_eq!(status.headers["x-github-api-version"], "2022-11-28");
    assert_eq!(
        status.body,
        serde_json::json!({"state": "success", "context": "strata/plan", "description": "1 cluster changes: 1 pending update", "target_url": "http://strata.example.com/plan"})
    );
    request(&seen, "GET", "/repos/platform/fleet/issues/7/comments?per_page=100");
    let created = request(&seen, "POST", "/repos/platform/fleet/issues/7/comments");
    assert!(
        created.body["body"].as_str().unwrap().starts_with("<!-- strata-plan -->\n### strata plan: 1 cluster changes")
    );

    // A second run updates the same comment; there is still one.
    forge.clear();
    let run = post(&repo, &config, Some("7"));
    assert_eq!(run.code, 0, "{}", run.stderr);
    let seen = forge.seen();
    let id = forge.comments()[0].0;
    request(&seen, "PATCH", &format!("/repos/platform/fleet/issues/comments/{id}"));
    assert!(!seen.iter().any(|s| s.method == "POST" && s.path.ends_with("/comments")));
    assert_eq!(forge.comments().len(), 1);
    assert!(!run.stderr.contains("s3cret") && !run.stdout.contains("s3cret"));
}

#[test]
fn gitea_statuses_and_comments() {
    let forge = Forge::start();
    let (repo, _dir, config, head) = setup(&forge, "forgejo", "platform/fleet");
    post(&repo, &config, Some("3")).ok();
    post(&repo, &config, Some("3")).ok();
    let seen = forge.seen();
    let status = request(&seen, "POST", &format!("/api/v1/repos/platform/fleet/statuses/{head}"));
    assert_eq!(status.headers["authorization"], "token s3cret");
    assert_eq!(status.body["state"], "success");
    assert_eq!(status.body["context"], "strata/plan");
    request(&seen, "GET", "/api/v1/repos/platform/fleet/issues/3/comments");
    request(&seen, "POST", "/api/v1/repos/platform/fleet/issues/3/comments");
    let id = forge.comments()[0].0;
    request(&seen, "PATCH", &format!("/api/v1/repos/platform/fleet/issues/comments/{id}"));
    assert_eq!(forge.comments().len(), 1);
}

#[test]
fn gitlab_statuses_and_merge_request_notes() {
    let forge = Forge::start();
    let (repo, _dir, config, head) = setup(&forge, "gitlab", "platform/fleet");
    post(&repo, &config, Some("12")).ok();
    post(&repo, &config, Some("12")).ok();
    let seen = forge.seen();
    let status = request(&seen, "POST", &format!("/api/v4/projects/platform%2Ffleet/statuses/{head}"));
    assert_eq!(status.headers["private-token"], "s3cret");
    assert!(!status.headers.contains_key("authorization"));
    assert_eq!(status.body["state"], "success");
    assert_eq!(status.body["name"], "strata/plan");
    request(&seen, "GET", "/api/v4/projects/platform%2Ffleet/merge_requests/12/notes?per_page=100");
    request(&seen, "POST", "/api/v4/projects/platform%2Ffleet/merge_requests/12/notes");
    let id = forge.comments()[0].0;
    request(&seen, "PUT", &format!("/api/v4/projects/platform%2Ffleet/merge_requests/12/notes/{id}"));
}

#[test]
fn bitbucket_build_statuses() {
    let forge = Forge::start();
    let (repo, _dir, config, head) = setup(&forge, "bitbucket", "acme/fleet");
    post(&repo, &config, None).ok();
    let seen = forge.seen();
    let status = request(&seen, "POST", &format!("/2.0/repositories/acme/fleet/commit/{head}/statuses/build"));
    assert_eq!(status.headers["authorization"], "Bearer s3cret");
    assert_eq!(
        status.body,
        serde_json::json!({"key": "strata-plan", "state": "SUCCESSFUL", "name": "strata/plan", "url": "http://strata.example.com/plan", "description": "1 cluster changes: 1 pending update"})
    );
}

#[test]
fn bitbucket_plan_comment_created_then_updated_in_place() {
    let forge = Forge::start();
    let (repo, _dir, config, _) = setup(&forge, "bitbucket", "acme/fleet");
    busy_pull_request(&forge, 130, 0);
    post(&repo, &config, Some("5")).ok();
    post(&repo, &config, Some("5")).ok();
    let id = forge.comments().last().unwrap().0;
    assert_eq!(
        calls(&forge.seen()),
        [
            "GET /2.0/repositories/acme/fleet/pullrequests/5/comments?pagelen=100".to_string(),
            "GET /2.0/repositories/acme/fleet/pullrequests/5/comments?pagelen=100&page=2".into(),
            "POST /2.0/repositories/acme/fleet/pullrequests/5/comments".into(),
            "GET /2.0/repositories/acme/fleet/pullrequests/5/comments?pagelen=100".into(),
            "GET /2.0/repositories/acme/fleet/pullrequests/5/comments?pagelen=100&page=2".into(),
            format!("PUT /2.0/repositories/acme/fleet/pullrequests/5/comments/{id}"),
        ]
    );
    let created = request(&forge.seen(), "POST", "/2.0/repositories/acme/fleet/pullrequests/5/comments").clone();
    assert!(created.body["content"]["raw"].as_str().unwrap().starts_with("<!-- strata-plan -->\n"));
    assert_eq!(forge.comments().len(), 131);
}

/// Posts `comment` as strata does (status, then the pull request's one comment) to the stand-in
/// shaped as `provider`.
fn post_comment(
    forge: &Forge,
    provider: strata::report::Provider,
    comment: &str,
) -> Result<strata::report::Posted, String> {
    let api = forge.url.clone();
    let forge = strata::report::Forge { provider, api, repo: "acme/fleet".into() };
    let status = strata::report::Status::new(
        &"b".repeat(40),
        "strata/plan".into(),
        strata::report::State::Success,
        "plan",
        None,
    );
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    runtime.block_on(async {
        let network = strata::net::Network::new(None).unwrap();
        let client = strata::report::http::Client::for_status(&network, &Default::default()).unwrap();
        strata::report::post_plan(&client, &forge, "s3cret", &status, Some(9), comment, MARKER)
            .await
            .map_err(|e| e.to_string())
    })
}

/// The forges strata posts to, each with its limit on a comment and what it answers past it.
fn forges() -> Vec<(strata::report::Provider, usize, &'static str)> {
    use strata::report::Provider;
    vec![
        (Provider::Github, 65_536, "422 Validation Failed: Body is too long (maximum is 65536 characters)"),
        (Provider::Gitea, 65_536, ""),
        (
            Provider::Gitlab,
            1_000_000,
            "400 400 (Bad request) \"Note {:note=>[\"is too long (maximum is 1000000 characters)\"]}\" not given",
        ),
        (Provider::Bitbucket, 32_767, "400 "),
    ]
}

#[test]
fn a_plan_of_10000_clusters_is_posted_to_every_forge_within_its_limit() {
    use strata::plan::format;
    let (base, head) = ("a".repeat(40), "b".repeat(40));
    for rollout in [false, true] {
        let plan = support::plans::edit_everywhere(10_000, rollout);
        let whole =
            format::comment(&plan, &format::Fit { limit: usize::MAX, forge: "none".into(), rest: String::new() });
        assert!(whole.chars().count() > 100_000, "the whole plan is larger than GitHub or Bitbucket takes");
        for (provider, limit, refusal) in forges() {
            let forge = Forge::start();
            // As the daemon and `plan --post` fit it: the forge's limit, the rest pointed at.
            let fit = format::Fit::new(provider.comment_limit(), provider.label(), None, Some((&base, &head)));
            let comment = format::comment(&plan, &fit);
            let posted = post_comment(&forge, provider, &comment).unwrap_or_else(|e| panic!("{provider:?}: {e}"));
            assert_eq!(posted.comment.map(|c| c.0), Some("created"), "{provider:?}");
            let stored = &forge.comments()[0].1;
            assert!(stored.chars().count() <= limit, "{provider:?}: {}", stored.chars().count());
            assert!(stored.contains("**10,000 clusters change in 90 groups"), "{provider:?}");
            if whole.chars().count() > limit {
                assert!(stored.contains("(in CI, keep its output as a build artifact)"), "{provider:?}");
            } else {
                // GitLab takes the whole plan.
                assert_eq!(stored.replace(&fit.rest, ""), whole, "{provider:?}");
            }
            assert!(forge.too_long().is_empty(), "{provider:?}");
            // Posted again: updated in place, still one comment.
            post_comment(&forge, provider, &comment).unwrap();
            assert_eq!(forge.comments().len(), 1, "{provider:?}");

            // The stand-in answers what is too long as the forge does; strata does not send it.
            let too_long = format!("{MARKER}\n{}", "x".repeat(limit));
            let e = post_comment(&forge, provider, &too_long).unwrap_err();
            assert!(e.contains(&format!("takes at most {limit} in a comment")), "{provider:?}: {e}");
            if refusal.is_empty() {
                continue;
            }
            let direct = strata::report::Forge { provider, api: forge.url.clone(), repo: "acme/fleet".into() };
            let request = direct.comment_request(9, None, &too_long).unwrap();
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            let answer = runtime.block_on(async {
                let network = strata::net::Network::new(None).unwrap();
                let client = strata::report::http::Client::for_status(&network, &Default::default()).unwrap();
                client.send(&direct, &request, "s3cret").await
            });
            let e = answer.unwrap_err().to_string();
            assert!(e.contains(refusal), "{provider:?}: {e}");
            assert_eq!(forge.too_long().len(), 1, "{provider:?}");
        }
    }
}

#[test]
fn forge_errors_are_clear() {
    let forge = Forge::start();
    forge.set_mode(forge::Mode::Unauthorized);
    let (repo, _dir, config, _) = setup(&forge, "github", "platform/fleet");
    let run = post(&repo, &config, Some("7"));
    assert_eq!(run.code, 1);
    assert!(run.stderr.contains("401 unauthorized — the token was refused; check status.token_file"), "{}", run.stderr);
    assert!(!run.stderr.contains("s3cret"));
}

#[test]
fn a_head_that_does_not_load_is_an_error_status() {
    let forge = Forge::start();
    let (repo, _dir, config, _) = setup(&forge, "github", "platform/fleet");
    repo.edit(AWS_1_0_0, "version: 1.0.0", "version: one");
    let head = repo.commit("broken");
    let run = post(&repo, &config, None);
    assert_eq!(run.code, 1);
    let seen = forge.seen();
    let status = request(&seen, "POST", &format!("/repos/platform/fleet/statuses/{head}"));
    assert_eq!(status.body["state"], "error");
    assert!(
        status.body["description"]
            .as_str()
            .unwrap()
            .starts_with("does not load: profiles/aws-profile/1.0.0/profile.yaml:5:"),
        "{}",
        status.body
    );
}

#[test]
fn git_notes_without_a_forge() {
    let repo = Repo::example();
    repo.edit(AWS_1_0_0, "replicas: 1", "replicas: 3");
    repo.commit("three");
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("strata.yaml");
    std::fs::write(&config, "status: { provider: git-notes }\n").unwrap();
    post(&repo, &config, None).ok();
    let out = Command::new("git")
        .args(["log", "-1", "--notes=strata", "--format=%N"])
        .current_dir(repo.path())
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "strata/plan success: 1 cluster changes: 1 pending update");
}

const MARKER: &str = "<!-- strata-plan -->";

/// `n` comments by others, with strata's old plan as comment number `marker_at` (1-based); its id.
fn busy_pull_request(forge: &Forge, n: usize, marker_at: usize) -> u64 {
    let mut marker_id = 0;
    for i in 1..=n {
        if i == marker_at {
            marker_id = forge.add_comment(&format!("{MARKER}\n### strata plan: an older plan"));
        } else {
            forge.add_comment(&format!("comment {i}: lgtm"));
        }
    }
    marker_id
}

fn calls(seen: &[Seen]) -> Vec<String> {
    seen.iter().filter(|s| !s.path.contains("/statuses/")).map(|s| format!("{} {}", s.method, s.path)).collect()
}

#[test]
fn github_finds_its_comment_on_a_later_page_and_updates_it() {
    let forge = Forge::start();
    let (repo, _dir, config, _) = setup(&forge, "github", "platform/fleet");
    let id = busy_pull_request(&forge, 250, 220);
    let run = post(&repo, &config, Some("7"));
    assert_eq!(run.code, 0, "{}", run.stderr);
    let seen = forge.seen();
    assert_eq!(
        calls(&seen),
        [
            "GET /repos/platform/fleet/issues/7/comments?per_page=100".to_string(),
            "GET /repositories/4242/issues/7/comments?per_page=100&page=2".into(),
            "GET /repositories/4242/issues/7/comments?per_page=100&page=3".into(),
            format!("PATCH /repos/platform/fleet/issues/comments/{id}"),
        ]
    );
    assert!(seen.iter().filter(|s| s.method == "GET").all(|s| s.headers["authorization"] == "Bearer s3cret"));
    let comments = forge.comments();
    assert_eq!(comments.len(), 250, "no second plan comment");
    assert!(comments.iter().find(|(i, _)| *i == id).unwrap().1.contains("1 cluster changes"));
}

#[test]
fn gitlab_follows_link_headers_or_else_x_next_page_and_gitea_answers_at_once() {
    for with_links in [true, false] {
        let forge = Forge::start();
        if !with_links {
            forge.without_gitlab_links();
        }
        let (repo, _dir, config, _) = setup(&forge, "gitlab", "platform/fleet");
        let id = busy_pull_request(&forge, 130, 110);
        post(&repo, &config, Some("12")).ok();
        let second = if with_links { "?id=1&page=2&per_page=100" } else { "?per_page=100&page=2" };
        assert_eq!(
            calls(&forge.seen()),
            [
                "GET /api/v4/projects/platform%2Ffleet/merge_requests/12/notes?per_page=100".to_string(),
                format!("GET /api/v4/projects/platform%2Ffleet/merge_requests/12/notes{second}"),
                format!("PUT /api/v4/projects/platform%2Ffleet/merge_requests/12/notes/{id}"),
            ],
            "with Link headers: {with_links}"
        );
        assert_eq!(forge.comments().len(), 130);
    }
    // Gitea and Forgejo list every comment of an issue in one answer.
    let forge = Forge::start();
    let (repo, _dir, config, _) = setup(&forge, "gitea", "platform/fleet");
    let id = busy_pull_request(&forge, 120, 120);
    post(&repo, &config, Some("3")).ok();
    assert_eq!(
        calls(&forge.seen()),
        [
            "GET /api/v1/repos/platform/fleet/issues/3/comments".to_string(),
            format!("PATCH /api/v1/repos/platform/fleet/issues/comments/{id}"),
        ]
    );
}

#[test]
fn a_next_page_on_another_host_is_refused_and_gets_no_token() {
    let forge = Forge::start();
    let elsewhere = Forge::start();
    forge.link_next_pages_to(&elsewhere.url);
    let (repo, _dir, config, _) = setup(&forge, "github", "platform/fleet");
    busy_pull_request(&forge, 150, 0);
    let run = post(&repo, &config, Some("7"));
    assert_eq!(run.code, 1, "{}", run.stderr);
    assert!(run.stderr.contains("not following it with the token"), "{}", run.stderr);
    assert!(elsewhere.seen().is_empty(), "{:?}", calls(&elsewhere.seen()));
    assert!(!forge.seen().iter().any(|s| s.method == "POST" && s.path.ends_with("/comments")), "no comment posted");
}
