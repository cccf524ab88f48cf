//! Sign-in through a real, certified OpenID provider: `oidc-provider` (tests/oidc/provider.mjs,
//! pinned by its package-lock.json) on a loopback port, and `strata run` configured with
//! `auth.oidc`. The authorization code flow is driven end to end — strata's redirect, the
//! provider's own login and consent forms, the code back to strata — by an HTTP client that
//! keeps cookies as a browser does, and in headless Chromium when it is installed. ID tokens the
//! provider issued and that were then changed (another audience, expired, another issuer, signed
//! with another key, another sign-in's nonce) are refused, and so are callbacks that this
//! browser did not start. Groups from the provider decide who may approve (`auth.write_groups`).
//!
//! Needs node and `npm ci` in tests/oidc (scripts/test does both); without them each test says
//! so and passes.

use crate::common;

use std::collections::{BTreeMap, HashMap};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::Repo;
use common::daemon::*;
use common::webdriver::{self, Browser, Killed, free_port};

const FORM: (&str, &str) = ("Content-Type", "application/x-www-form-urlencoded");

fn provider_dir() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/oidc")
}

/// Why these tests cannot run here, if they cannot.
fn missing() -> Option<String> {
    if strata::render::tools::which("node").is_none() {
        return Some("node is not installed (scripts/test installs it)".into());
    }
    if !provider_dir().join("node_modules/oidc-provider").is_dir() {
        return Some("tests/oidc has no node_modules: run `npm ci` there (scripts/test does)".into());
    }
    None
}

macro_rules! needs_provider {
    () => {
        if let Some(why) = missing() {
            eprintln!("skipped: {why}");
            return;
        }
    };
}

/// The provider, redirecting to strata's callback on `strata_port`; its issuer URL.
fn provider(strata_port: u16, conform: bool) -> (Killed, String) {
    let mut child = Command::new("node")
        .arg("provider.mjs")
        .current_dir(provider_dir())
        .env("REDIRECT_URI", format!("http://127.0.0.1:{strata_port}/login/oidc/callback"))
        .env("CONFORM", if conform { "1" } else { "0" })
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    let mut out = BufReader::new(child.stdout.take().unwrap());
    out.read_line(&mut line).unwrap();
    // Whatever it prints later is read too: a closed pipe would end it at its next line.
    std::thread::spawn(move || std::io::copy(&mut out, &mut std::io::sink()));
    let issuer = line.strip_prefix("READY ").unwrap_or_else(|| panic!("the provider did not start: {line:?}"));
    (Killed(child), issuer.trim().to_string())
}

/// strata on `port` with `auth.oidc` for `issuer`, the example applied.
fn strata(repo: &Repo, port: u16, issuer: &str, extra: &str) -> Daemon {
    let mut daemon = Daemon::configure(
        &local(repo),
        &example_targets(),
        &format!(
            "view: {{ require_token: true }}\nauth:\n  oidc: {{ issuer: '{issuer}', client_id: strata, client_secret_file: ./client-secret, scopes: [profile, email, groups], redirect_url: 'http://127.0.0.1:{port}/login/oidc/callback' }}\n{extra}"
        ),
    );
    std::fs::write(daemon.dir.path().join("client-secret"), "test-client-secret\n").unwrap();
    let config = std::fs::read_to_string(&daemon.config).unwrap();
    std::fs::write(&daemon.config, config.replace("listen: 127.0.0.1:0", &format!("listen: 127.0.0.1:{port}")))
        .unwrap();
    daemon.spawn();
    daemon
}

/// A browser's share of HTTP: absolute URLs, cookies per host and port, redirects by hand.
#[derive(Default)]
struct Client {
    jar: HashMap<String, BTreeMap<String, String>>,
}

struct Answer {
    code: u16,
    head: String,
    body: String,
}

impl Answer {
    fn header(&self, name: &str) -> Option<&str> {
        self.head.lines().find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case(name).then(|| v.trim())
        })
    }
}

impl Client {
    fn send(&mut self, method: &str, url: &str, body: &str) -> Answer {
        let parsed = url::Url::parse(url).unwrap_or_else(|e| panic!("{url:?}: {e}"));
        let authority = format!("{}:{}", parsed.host_str().unwrap(), parsed.port_or_known_default().unwrap());
        let path = match parsed.query() {
            Some(q) => format!("{}?{q}", parsed.path()),
            None => parsed.path().to_string(),
        };
        let mut stream = TcpStream::connect(&authority).unwrap();
        stream.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        let cookies: Vec<String> =
            self.jar.get(&authority).into_iter().flatten().map(|(k, v)| format!("{k}={v}")).collect();
        let mut request = format!("{method} {path} HTTP/1.1\r\nHost: {authority}\r\nConnection: close\r\n");
        if !cookies.is_empty() {
            request.push_str(&format!("Cookie: {}\r\n", cookies.join("; ")));
        }
        if method == "POST" {
            request.push_str(&format!("{}: {}\r\nOrigin: {}://{authority}\r\n", FORM.0, FORM.1, parsed.scheme()));
        }
        request.push_str(&format!("Content-Length: {}\r\n\r\n{body}", body.len()));
        stream.write_all(request.as_bytes()).unwrap();
        let mut response = Vec::new();
        let read = stream.read_to_end(&mut response);
        let response = String::from_utf8_lossy(&response).into_owned();
        if std::env::var_os("OIDC_DEBUG").is_some() {
            eprintln!(">>> {request}\n<<< {read:?} {}", response.chars().take(300).collect::<String>());
        }
        let (head, body) = response.split_once("\r\n\r\n").unwrap_or((&response, ""));
        let code = head.split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
        for line in head.lines() {
            let Some((k, v)) = line.split_once(':') else { continue };
            if !k.eq_ignore_ascii_case("set-cookie") {
                continue;
            }
            let pair = v.trim().split(';').next().unwrap_or("");
            let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
            let expired = v.to_ascii_lowercase().contains("max-age=0") || value.is_empty();
            let jar = self.jar.entry(authority.clone()).or_default();
            if expired {
                jar.remove(name);
            } else {
                jar.insert(name.to_string(), value.to_string());
            }
        }
        let body = if head.to_ascii_lowercase().contains("transfer-encoding: chunked") {
            dechunk(body)
        } else {
            body.to_string()
        };
        Answer { code, head: head.to_string(), body }
    }

    fn cookie(&self, authority: &str, name: &str) -> Option<String> {
        self.jar.get(authority).and_then(|j| j.get(name)).cloned()
    }
}

fn dechunk(mut body: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = body.split_once("\r\n") {
        let Ok(size) = usize::from_str_radix(size.trim(), 16) else { break };
        if size == 0 || rest.len() < size {
            break;
        }
        out.push_str(&rest[..size]);
        body = rest[size..].trim_start_matches("\r\n");
    }
    out
}

/// The attribute `name` of the first tag in `html` that has it, after `from`.
fn attribute<'a>(html: &'a str, from: &str, name: &str) -> Option<&'a str> {
    let start = html.find(from)?;
    let rest = &html[start..];
    let at = rest.find(&format!("{name}=\""))? + name.len() + 2;
    Some(&rest[at..at + rest[at..].find('"')?])
}

/// Signs in as `login` from strata's `/login/oidc`: every redirect followed, the provider's
/// login and consent forms filled. Returns the answer of strata's callback.
fn sign_in(client: &mut Client, strata: &str, issuer: &str, login: &str, next: &str) -> Answer {
    let mut answer = client.send("GET", &format!("{strata}/login/oidc?next={next}"), "");
    assert_eq!(answer.code, 303, "{}", answer.body);
    let mut url = answer.header("location").unwrap().to_string();
    assert!(url.starts_with(&format!("{issuer}/auth?")), "{url}");
    for key in ["code_challenge_method=S256", "state=", "nonce=", "code_challenge=", "client_id=strata"] {
        assert!(url.contains(key), "{key}: {url}");
    }
    for _ in 0..20 {
        if url.starts_with(&format!("{strata}/login/oidc/callback")) {
            return client.send("GET", &url, "");
        }
        answer = client.send("GET", &url, "");
        if answer.code == 200 && answer.body.contains("<form") {
            let action =
                attribute(&answer.body, "<form", "action").unwrap().replace("&#x2F;", "/").replace("&#x3A;", ":");
            let form = if answer.body.contains("name=\"login\"") {
                format!("prompt=login&login={login}&password=anything")
            } else {
                "prompt=consent".to_string()
            };
            let action = if action.starts_with('/') { format!("{issuer}{action}") } else { action };
            answer = client.send("POST", &action, &form);
        }
        assert!(matches!(answer.code, 302 | 303), "{url}: {} {}", answer.code, answer.body);
        let location = answer.header("location").unwrap();
        url = if location.starts_with('/') { format!("{issuer}{location}") } else { location.to_string() };
    }
    panic!("the flow never came back to strata");
}

fn tamper(issuer: &str, mode: &str) {
    let answer = Client::default().send("GET", &format!("{issuer}/__test/tamper?mode={mode}"), "");
    assert_eq!(answer.code, 200);
}

#[test]
fn people_sign_in_through_the_provider_with_their_groups() {
    needs_provider!();
    let repo = Repo::example();
    let port = free_port();
    let (_provider, issuer) = provider(port, false);
    let daemon = strata(&repo, port, &issuer, "  write_groups: [deployers]\n");
    let strata_url = format!("http://127.0.0.1:{port}");
    let authority = format!("127.0.0.1:{port}");

    // The sign-in page offers the provider; there is no token form without... the token is
    // configured too (Daemon writes api.token_file), so both are there.
    let (code, _, page) = daemon.raw("GET", "/login", &[], "");
    assert_eq!(code, 200);
    assert!(page.contains("href=\"/login/oidc?next=%2F\"") && page.contains("name=\"token\""), "{page}");

    let mut alice = Client::default();
    let back = sign_in(&mut alice, &strata_url, &issuer, "alice", "%2Fclusters%2Faws-cluster");
    assert_eq!(back.code, 200, "{}\n{}", back.body, daemon.log());
    // The session cookie is set, the flow's cookie cleared, and the page goes on to `next`.
    assert!(back.body.contains("url=&#x2f;clusters&#x2f;aws-cluster"), "{}", back.body);
    let session = alice.cookie(&authority, "strata_session").expect("a session");
    assert!(alice.cookie(&authority, "strata_oidc").is_none());
    assert!(back.head.contains("SameSite=Strict") && back.head.contains("HttpOnly"), "{}", back.head);
    let page = alice.send("GET", &format!("{strata_url}/clusters/aws-cluster"), "");
    assert_eq!(page.code, 200);
    assert!(page.body.contains("signed in as alice"), "{}", page.body);
    assert!(daemon.log().contains("groups: [\"deployers\", \"everyone\"]") || daemon.log().contains("deployers"));

    // alice is in deployers: she gets past the groups check to the approval itself (nothing is
    // pending, so it is refused there). bob is not: 403 before anything is looked at.
    let csrf = attribute(&page.body, "name=\"csrf\"", "value").unwrap().to_string();
    let approve = |client: &mut Client, csrf: &str| {
        client.send(
            "POST",
            &format!("{strata_url}/clusters/aws-cluster/approve"),
            &format!("csrf={csrf}&revision=abcdef0"),
        )
    };
    let answer = approve(&mut alice, &csrf);
    assert_ne!(answer.code, 403, "{}", answer.body);
    let mut bob = Client::default();
    assert_eq!(sign_in(&mut bob, &strata_url, &issuer, "bob", "%2F").code, 200);
    let page = bob.send("GET", &format!("{strata_url}/"), "");
    assert!(page.body.contains("signed in as bob"), "{}", page.body);
    let bob_csrf = attribute(&page.body, "name=\"csrf\"", "value").unwrap().to_string();
    let answer = approve(&mut bob, &bob_csrf);
    assert_eq!(answer.code, 403, "{}", answer.body);
    assert!(answer.body.contains("auth.write_groups"), "{}", answer.body);
    // alice's CSRF token is hers: bob's session with it is refused.
    assert_eq!(approve(&mut bob, &csrf).code, 403);

    // Signing out ends the session: the cookie copied before is refused from then on.
    let out = alice.send("POST", &format!("{strata_url}/logout"), &format!("csrf={csrf}"));
    assert_eq!(out.code, 303, "{}", out.body);
    let (code, _, _) = daemon.raw("GET", "/api/v1/clusters", &[("Cookie", &format!("strata_session={session}"))], "");
    assert_eq!(code, 401);
    // bob is still signed in.
    assert_eq!(bob.send("GET", &format!("{strata_url}/"), "").code, 200);
}

#[test]
fn groups_come_from_userinfo_when_the_id_token_leaves_them_out() {
    needs_provider!();
    let repo = Repo::example();
    let port = free_port();
    let (_provider, issuer) = provider(port, true);
    let daemon = strata(&repo, port, &issuer, "  write_groups: [deployers]\n");
    let strata_url = format!("http://127.0.0.1:{port}");
    let mut alice = Client::default();
    let back = sign_in(&mut alice, &strata_url, &issuer, "alice", "%2F");
    assert_eq!(back.code, 200, "{}\n{}", back.body, daemon.log());
    let page = alice.send("GET", &format!("{strata_url}/"), "");
    let csrf = attribute(&page.body, "name=\"csrf\"", "value").unwrap().to_string();
    let answer = alice.send(
        "POST",
        &format!("{strata_url}/clusters/aws-cluster/approve"),
        &format!("csrf={csrf}&revision=abcdef0"),
    );
    assert_ne!(answer.code, 403, "deployers, from userinfo: {}", answer.body);
}

#[test]
fn changed_id_tokens_and_foreign_callbacks_are_refused() {
    needs_provider!();
    let repo = Repo::example();
    let port = free_port();
    let (_provider, issuer) = provider(port, false);
    let daemon = strata(&repo, port, &issuer, "");
    let strata_url = format!("http://127.0.0.1:{port}");
    let authority = format!("127.0.0.1:{port}");
    for (mode, why) in [
        ("aud", "not this client"),
        ("expired", "expired"),
        ("iss", "issued by"),
        ("signature", "not the provider's"),
        ("nonce", "nonce"),
    ] {
        tamper(&issuer, mode);
        let mut client = Client::default();
        let back = sign_in(&mut client, &strata_url, &issuer, "alice", "%2F");
        assert_eq!(back.code, 401, "{mode}: {}", back.body);
        assert!(client.cookie(&authority, "strata_session").is_none(), "{mode}");
        let log = daemon.log();
        let refused = log.lines().rfind(|l| l.contains("the ID token is refused")).unwrap_or_default().to_string();
        assert!(refused.contains(why), "{mode}: {refused}\n{log}");
    }
    tamper(&issuer, "none");

    // A callback this browser did not start: no flow cookie, or another flow's state.
    let mut mallory = Client::default();
    let (code, _, _) = daemon.raw("GET", "/login/oidc/callback?code=stolen&state=x", &[], "");
    assert_eq!(code, 400);
    let started = mallory.send("GET", &format!("{strata_url}/login/oidc?next=%2F"), "");
    assert_eq!(started.code, 303);
    let answer = mallory.send("GET", &format!("{strata_url}/login/oidc/callback?code=stolen&state=guessed"), "");
    assert_eq!(answer.code, 400);
    assert!(mallory.cookie(&authority, "strata_session").is_none());
    // A flow cookie is sealed: one written by hand is nobody's.
    let (code, _, _) = daemon.raw(
        "GET",
        "/login/oidc/callback?code=c&state=s",
        &[("Cookie", "strata_oidc=v1.AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA")],
        "",
    );
    assert_eq!(code, 400);

    // And after all that, the provider's token as issued signs in.
    let mut alice = Client::default();
    assert_eq!(sign_in(&mut alice, &strata_url, &issuer, "alice", "%2F").code, 200);
}

/// A person in headless Chromium: a page that needs a session, the provider's button, its login
/// and consent forms, and back on the page they asked for, signed in.
#[test]
fn a_person_signs_in_with_chromium() {
    needs_provider!();
    if !webdriver::available() {
        eprintln!("skipped: Debian's chromium and chromium-driver are not installed (scripts/test installs them)");
        return;
    }
    let repo = Repo::example();
    let port = free_port();
    let (_provider, issuer) = provider(port, false);
    let _daemon = strata(&repo, port, &issuer, "");
    let browser = Browser::start();
    browser.go(&format!("http://127.0.0.1:{port}/clusters/aws-cluster"));
    browser.wait("the sign-in page", |b| b.url().contains("/login?next=") && b.count("a.button") == 1);
    browser.screenshot("sign-in.png");
    browser.click("a.button");
    browser.wait("the provider's login form", |b| b.url().starts_with(&issuer) && b.count("input[name=login]") == 1);
    browser.type_into("input[name=login]", "alice");
    browser.type_into("input[name=password]", "any password");
    browser.click("button[type=submit]");
    browser.wait("the provider's consent form", |b| b.count("input[name=prompt][value=consent]") == 1);
    browser.click("button[type=submit]");
    browser.wait("the page asked for, signed in", |b| {
        b.url() == format!("http://127.0.0.1:{port}/clusters/aws-cluster") && b.count(".who form") == 1
    });
    assert!(browser.text(".who").contains("signed in as alice"), "{}", browser.text(".who"));
    browser.screenshot("oidc-signed-in.png");
}
