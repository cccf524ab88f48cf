//! The listen address under attack (issue 9): the real daemon on loopback, driven as an attacker
//! would — reads without credentials, forged `Host` headers, approvals of what nobody reviewed,
//! guessed tokens, `next` tricks, half-sent requests, unfinished bodies and descriptor exhaustion.
//! docs/security.md names these tests as the evidence for each boundary.

use crate::common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::Repo;
use common::daemon::*;
use common::proc::{cpu_ticks, open_descriptors, proc_status};
use serde_json::Value;

const FORM: (&str, &str) = ("Content-Type", "application/x-www-form-urlencoded");
const JSON: (&str, &str) = ("Content-Type", "application/json");

fn bearer() -> String {
    format!("Bearer {TOKEN}")
}

fn header<'a>(head: &'a str, name: &str) -> Option<&'a str> {
    head.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

/// A daemon on the example, every cluster applied.
fn applied(repo: &Repo, extra: &str) -> Daemon {
    let daemon = Daemon::start_with(&local(repo), &example_targets(), extra);
    let ui = daemon.out("aws-cluster/hello-universe/deployment.ui.yaml");
    daemon.wait_for("aws-cluster applied", Duration::from_secs(10), |_| file(&ui).contains("replicas: 1"));
    daemon
}

/// Signs in at /login; returns (status, head).
fn sign_in(daemon: &Daemon, name: &str, token: &str, next: &str) -> (u16, String) {
    let (code, head, _) = daemon.raw("POST", "/login", &[FORM], &format!("name={name}&token={token}&next={next}"));
    (code, head)
}

/// Waits until the daemon closes `stream` (a read returns end of file or an error).
fn closed_by_daemon(stream: &mut TcpStream, within: Duration) -> bool {
    let started = Instant::now();
    let mut buf = [0u8; 1024];
    while started.elapsed() < within {
        stream.set_read_timeout(Some(Duration::from_millis(200))).unwrap();
        match stream.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => {}
            Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {}
            Err(_) => return true,
        }
    }
    false
}

#[test]
fn reads_need_a_session_or_the_token_when_the_token_is_required() {
    let repo = Repo::example();
    let daemon = Daemon::start_with(&local(&repo), &example_targets(), "view: { require_token: true }\n");
    let auth = bearer();
    daemon.wait_for("aws-cluster applied", Duration::from_secs(10), |d| {
        d.raw("GET", "/api/v1/clusters/aws-cluster", &[("Authorization", &auth)], "").2.contains("\"applied\"")
    });

    // Nothing about the fleet answers without credentials, not even whether a cluster exists.
    for path in
        ["/api/v1/clusters", "/api/v1/clusters/aws-cluster", "/api/v1/clusters/no-such-cluster", "/fragment/clusters"]
    {
        let (code, head, body) = daemon.raw("GET", path, &[], "");
        assert_eq!(code, 401, "{path}: {body}");
        assert!(!body.contains("aws-") && !body.contains("hello-universe"), "{path}: {body}");
        assert_eq!(header(&head, "www-authenticate"), Some("Bearer realm=\"strata\""), "{path}");
    }
    for path in ["/", "/?tag=env:prod", "/clusters/aws-cluster", "/clusters/aws-cluster/pending"] {
        let (code, head, body) = daemon.raw("GET", path, &[], "");
        assert_eq!(code, 303, "{path}");
        assert!(header(&head, "location").unwrap().starts_with("/login?next=%2F"), "{path}: {head}");
        assert!(!body.contains("aws-"), "{path}");
    }
    for wrong in ["Bearer wrong", "Basic dGVzdDp0ZXN0", "Bearer", TOKEN] {
        let (code, _, body) = daemon.raw("GET", "/api/v1/clusters", &[("Authorization", wrong)], "");
        assert_eq!(code, 401, "{wrong}: {body}");
    }
    // A session cookie that was never issued is nobody's.
    let (code, _, _) =
        daemon.raw("GET", "/api/v1/clusters", &[("Cookie", &format!("strata_session={}", "0".repeat(64)))], "");
    assert_eq!(code, 401);

    // What stays open: probes (saying nothing but up and ready), signed webhooks, sign-in and its
    // assets. Metrics name every cluster: they need the token.
    for path in ["/healthz", "/readyz", "/login", "/assets/style.css", "/assets/app.js"] {
        let (code, _, body) = daemon.raw("GET", path, &[], "");
        assert_eq!(code, 200, "{path}");
        assert!(!body.contains("aws-") && !body.contains(&repo.path().display().to_string()), "{path}: {body}");
    }
    assert_eq!(daemon.raw("GET", "/readyz", &[], "").2, "ready\n");
    let (code, _, body) = daemon.raw("GET", "/metrics", &[], "");
    assert_eq!(code, 401, "{body}");
    assert!(!body.contains("strata_"), "{body}");
    let body = r#"{"ref":"refs/heads/main"}"#;
    let signed = format!("sha256={}", signature(body));
    let (code, _) =
        daemon.request("POST", "/hooks/github", &[("X-GitHub-Event", "push"), ("X-Hub-Signature-256", &signed)], body);
    assert_eq!(code, 202);

    // The token opens everything, a session the pages and the API's reads.
    let (code, _, body) = daemon.raw("GET", "/api/v1/clusters", &[("Authorization", &auth)], "");
    assert_eq!(code, 200);
    assert_eq!(serde_json::from_str::<Value>(&body).unwrap().as_array().unwrap().len(), 4);
    let (code, _, body) = daemon.raw("GET", "/metrics", &[("Authorization", &auth)], "");
    assert_eq!(code, 200);
    assert!(body.contains("strata_reconciles_total"), "{body}");
    let (code, head) = sign_in(&daemon, "alice", TOKEN, "%2F");
    assert_eq!(code, 303);
    let cookie = session_cookie(&head);
    for path in [
        "/",
        "/clusters/aws-cluster",
        "/api/v1/clusters",
        "/api/v1/clusters/aws-cluster",
        "/fragment/clusters",
        "/metrics",
    ] {
        assert_eq!(daemon.raw("GET", path, &[("Cookie", &cookie)], "").0, 200, "{path}");
    }
    // The API's actions take the token itself, never a cookie.
    let (code, _, _) = daemon.raw("POST", "/api/v1/clusters/edge-lab/suspend", &[("Cookie", &cookie), JSON], "{}");
    assert_eq!(code, 401);
    // And the CLI sends the token with its reads.
    let run = daemon.strata(&["status"]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(run.stdout.contains("aws-cluster"), "{}", run.stdout);
}

#[test]
fn only_the_hosts_the_operator_configured_are_answered() {
    let repo = Repo::example();
    let daemon = applied(
        &repo,
        "view: { public_url: 'https://strata.example.com' }\nlistener: { allowed_hosts: ['strata.internal:8080'] }\n",
    );
    let address = daemon.address().unwrap();
    let port = address.trim().rsplit_once(':').unwrap().1.to_string();
    let get = |host: &str, path: &str| daemon.raw_to("GET", path, &[("Host", host)], &[], "").0;

    // A rebound name, and names that only look like ours.
    for host in [
        "evil.example".to_string(),
        format!("evil.example:{port}"),
        format!("127.0.0.1.nip.io:{port}"),
        format!("localhost.:{port}"),
        format!("localhost:{port}.evil.example"),
        format!("localhost:{port}@evil.example"),
        "strata.example.com.evil.example".into(),
        "strata.example.com:8443".into(),
        "strata.internal".into(),
        "localhost".into(),
        "localhost:1".into(),
    ] {
        for path in ["/", "/api/v1/clusters", "/api/v1/clusters/aws-cluster", "/metrics", "/login", "/assets/app.js"] {
            assert_eq!(get(&host, path), 421, "{host} {path}");
        }
        let (code, _, _) =
            daemon.raw_to("POST", "/login", &[("Host", &host)], &[FORM], &format!("name=a&token={TOKEN}"));
        assert_eq!(code, 421, "{host}");
    }
    // The operator hears of it (once a minute at most), in case the name is theirs.
    assert_eq!(daemon.log().matches("Refused a request for a host this daemon does not serve").count(), 1);
    // Probes too: they name the address they reach (`probes_name_the_address_they_reach…`).
    assert_eq!(get("evil.example", "/healthz"), 421);
    assert_eq!(get("evil.example", "/readyz"), 421);
    assert_eq!(get(&format!("evil.example:{port}"), "/readyz"), 421);

    for host in [
        format!("127.0.0.1:{port}"),
        "127.0.0.1".into(),
        format!("localhost:{port}"),
        format!("LocalHost:{port}"),
        format!("[::1]:{port}"),
        "strata.example.com".into(),
        "strata.example.com:443".into(),
        "strata.internal:8080".into(),
    ] {
        assert_eq!(get(&host, "/api/v1/clusters"), 200, "{host}");
    }
    // An absolute request target names the host too; a request names exactly one host.
    let ours = format!("127.0.0.1:{port}");
    let (code, _, _) = daemon.raw_to("GET", "http://evil.example/api/v1/clusters", &[("Host", &ours)], &[], "");
    assert_eq!(code, 421);
    assert_eq!(daemon.raw_to("GET", "/api/v1/clusters", &[], &[], "").0, 400, "no Host");
    let (code, _, _) = daemon.raw_to("GET", "/api/v1/clusters", &[("Host", &ours), ("Host", "evil.example")], &[], "");
    assert_eq!(code, 400, "two Hosts");
}

#[test]
fn approvals_are_bound_to_the_revision_that_was_reviewed() {
    let repo = Repo::example();
    let daemon = applied(&repo, "");
    let ui = daemon.out("aws-cluster/hello-universe/deployment.ui.yaml");
    repo.edit(AWS_1_0_0, "replicas: 1", "replicas: 3");
    let reviewed = repo.commit("three replicas");
    daemon.wait_for("the reviewed update pending", Duration::from_secs(5), |d| {
        d.cluster("aws-cluster")["pending"]["head_revision"] == reviewed.as_str()
    });
    // After the review, another in-place edit lands on the same version.
    repo.edit(AWS_1_0_0, "replicas: 3", "replicas: 30");
    let sneaked = repo.commit("thirty replicas");
    daemon.wait_for("the newer update pending", Duration::from_secs(5), |d| {
        d.cluster("aws-cluster")["pending"]["head_revision"] == sneaked.as_str()
    });

    let auth = bearer();
    let approve = |body: &str| {
        daemon.raw("POST", "/api/v1/clusters/aws-cluster/approve", &[("Authorization", &auth), JSON], body)
    };
    for reviewed in [reviewed.as_str(), &reviewed[..7], &reviewed.to_uppercase()] {
        let (code, _, body) = approve(&format!(r#"{{"by": "alice", "revision": "{reviewed}"}}"#));
        assert_eq!(code, 409, "{body}");
        let answer: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(answer["pending_revision"], sneaked.as_str(), "{body}");
        assert!(answer["error"].as_str().unwrap().contains(&sneaked), "{body}");
    }
    for body in [r#"{"by": "alice"}"#, "{}", "", r#"{"revision": "main"}"#, r#"{"revision": "abc12"}"#, "not json"] {
        let (code, _, answer) = approve(body);
        assert_eq!(code, 400, "{body}: {answer}");
    }
    // The view's form carries the revision its page showed, and is held to it.
    let (_, head) = sign_in(&daemon, "alice", TOKEN, "%2F");
    let cookie = session_cookie(&head);
    let (_, _, page) = daemon.raw("GET", "/clusters/aws-cluster/pending", &[("Cookie", &cookie)], "");
    assert!(page.contains(&format!("name=\"revision\" value=\"{sneaked}\"")), "{page}");
    let csrf = page.split("name=\"csrf\" value=\"").nth(1).and_then(|s| s.split('"').next()).unwrap().to_string();
    let form = |body: &str| daemon.raw("POST", "/clusters/aws-cluster/approve", &[FORM, ("Cookie", &cookie)], body);
    assert_eq!(form(&format!("csrf={csrf}&revision={reviewed}")).0, 409);
    assert_eq!(form(&format!("csrf={csrf}")).0, 400);
    // `strata approve --revision` pinned to the reviewed revision is refused, naming what is pending.
    let run = daemon.strata(&["approve", "aws-cluster", "--revision", &reviewed]);
    assert_eq!(run.code, 1, "{}", run.stdout);
    assert!(run.stderr.contains(&sneaked), "{}", run.stderr);
    assert!(daemon.cluster("aws-cluster")["approvals"].as_array().unwrap().is_empty());
    // Whatever the refusals set off is over once a re-evaluation asked after them is.
    daemon.wait_reevaluated("edge-lab");
    assert!(file(&ui).contains("replicas: 1"), "nothing applied");

    // `strata approve` shows what it approves, and approves exactly that.
    let run = daemon.strata(&["approve", "aws-cluster"]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(run.stdout.contains(&format!("approving {sneaked}")), "{}", run.stdout);
    assert!(run.stdout.contains("~ Deployment/hello-universe/ui"), "{}", run.stdout);
    daemon.wait_for("the approved update applied", Duration::from_secs(5), |_| file(&ui).contains("replicas: 30"));
    let approvals = daemon.cluster("aws-cluster")["approvals"].clone();
    assert_eq!(approvals.as_array().unwrap().len(), 1);
    assert_eq!(approvals[0]["revision"], sneaked.as_str());
    assert_eq!(approvals[0]["approved_by"], "api (alice)");

    // A 7-digit prefix that names only the pending commit is enough.
    repo.edit(AWS_1_0_0, "replicas: 30", "replicas: 4");
    let next = repo.commit("four replicas");
    daemon.wait_for("the next update pending", Duration::from_secs(5), |d| {
        d.cluster("aws-cluster")["pending"]["head_revision"] == next.as_str()
    });
    let (code, _, body) = approve(&format!(r#"{{"by": "bob", "revision": "{}"}}"#, &next[..7]));
    assert_eq!(code, 202, "{body}");
    daemon.wait_for("applied", Duration::from_secs(5), |_| file(&ui).contains("replicas: 4"));
}

#[test]
fn guessing_the_token_is_throttled_and_logged() {
    let repo = Repo::example();
    let daemon = applied(&repo, "");
    for i in 0..10 {
        let (code, _) = sign_in(&daemon, "mallory", &format!("guess-{i}"), "%2F");
        assert_eq!(code, 401, "guess {i}");
    }
    let (code, head) = sign_in(&daemon, "mallory", "guess-10", "%2F");
    assert_eq!(code, 429);
    let wait: u64 = header(&head, "retry-after").unwrap().parse().unwrap();
    assert!((1..=60).contains(&wait), "{head}");
    // Throttled before the token is compared: the right one is no way to tell.
    assert_eq!(sign_in(&daemon, "mallory", TOKEN, "%2F").0, 429);
    // Bearer tokens are guesses too, counted with the same client's.
    let (code, head, _) = daemon.raw("GET", "/api/v1/clusters", &[("Authorization", "Bearer guess-11")], "");
    assert_eq!(code, 429);
    assert!(header(&head, "retry-after").is_some());
    let (code, _, _) = daemon.raw("POST", "/api/v1/clusters/aws-cluster/suspend", &[("Authorization", "Bearer x")], "");
    assert_eq!(code, 429);
    // Every failure is logged with the client; no guess is.
    let log = daemon.log();
    assert!(log.matches("Wrong API token refused.").count() >= 10, "{log}");
    assert!(log.contains("client=127.0.0.1"), "{log}");
    assert!(!log.contains("guess-"), "{log}");
}

#[test]
fn sessions_end_with_the_token_and_sign_in_only_goes_back_to_this_site() {
    let repo = Repo::example();
    let daemon = Daemon::start_with(&local(&repo), &example_targets(), "view: { require_token: true }\n");
    let (code, head) = sign_in(&daemon, "alice", TOKEN, "%2Fclusters%2Faws-cluster");
    assert_eq!(code, 303);
    assert_eq!(header(&head, "location"), Some("/clusters/aws-cluster"));
    let set_cookie = header(&head, "set-cookie").unwrap();
    assert!(set_cookie.contains("HttpOnly") && set_cookie.contains("SameSite=Strict"), "{set_cookie}");
    assert!(!set_cookie.contains("Secure"), "plain HTTP: {set_cookie}");
    let cookie = session_cookie(&head);
    assert_eq!(daemon.raw("GET", "/", &[("Cookie", &cookie)], "").0, 200);

    // The token changes, and the daemon is told (SIGHUP): every session it opened ends.
    std::fs::write(daemon.token_file(), "rotated-token\n").unwrap();
    assert_eq!(daemon.raw("GET", "/", &[("Cookie", &cookie)], "").0, 200, "read again on SIGHUP only");
    daemon.hangup();
    daemon.wait_for("the rotated token read", Duration::from_secs(10), |d| d.log().contains("API tokens read again"));
    assert_eq!(daemon.raw("GET", "/", &[("Cookie", &cookie)], "").0, 303);
    assert_eq!(daemon.raw("GET", "/api/v1/clusters", &[("Cookie", &cookie)], "").0, 401);
    assert_eq!(sign_in(&daemon, "alice", "rotated-token", "%2F").0, 303);

    // `next` is a path of this site or nothing.
    for next in [
        "%2F%5Cevil.example",                 // /\evil.example
        "%2F%5C%2Fevil.example",              // /\/evil.example
        "%2F%2Fevil.example",                 // //evil.example
        "https%3A%2F%2Fevil.example",         // https://evil.example
        "%2F%09%2Fevil.example",              // /<tab>/evil.example
        "%5C%5Cevil.example",                 // \\evil.example
        "javascript%3Aalert(1)",              // javascript:alert(1)
        "%2F%0D%0ASet-Cookie%3A%20pwned%3D1", // /<CR><LF>Set-Cookie: pwned=1
        "%2F%0ALocation%3A%20%2F%2Fevil.example",
    ] {
        let (code, head) = sign_in(&daemon, "alice", "rotated-token", next);
        assert_eq!(code, 303, "{next}: {head}");
        assert_eq!(header(&head, "location"), Some("/"), "{next}: {head}");
        assert!(!head.contains("pwned") && !head.contains("evil"), "{next}: {head}");
    }
    // The sign-in page does not carry a foreign `next` either.
    let (_, _, page) = daemon.raw("GET", "/login?next=%2F%5Cevil.example", &[], "");
    assert!(page.contains("name=\"next\" value=\"&#x2f;\"") && !page.contains("evil"), "{page}");
    // A CR or LF anywhere in a request never reaches a header, and the daemon keeps answering.
    let (code, head, _) = daemon.raw("GET", "/clusters/a%0D%0ASet-Cookie:%20pwned=1/pending", &[], "");
    assert_eq!(code, 303);
    assert!(!head.to_ascii_lowercase().contains("set-cookie: pwned"), "{head}");
    assert_eq!(daemon.raw("GET", "/healthz", &[], "").0, 200);
}

#[test]
fn session_cookies_are_secure_when_the_view_is_served_over_https() {
    let repo = Repo::example();
    let daemon = applied(&repo, "view: { public_url: 'https://strata.example.com' }\n");
    let host = ("Host", "strata.example.com");
    let (code, head, _) =
        daemon.raw_to("POST", "/login", &[host], &[FORM], &format!("name=alice&token={TOKEN}&next=%2F"));
    assert_eq!(code, 303, "{head}");
    let set_cookie = header(&head, "set-cookie").unwrap();
    assert!(set_cookie.starts_with("__Host-strata_session="), "{set_cookie}");
    for attribute in ["Secure", "HttpOnly", "SameSite=Strict", "Path=/"] {
        assert!(set_cookie.contains(attribute), "{attribute}: {set_cookie}");
    }
    assert!(!set_cookie.contains("Domain"), "{set_cookie}");
    let cookie = session_cookie(&head);
    let (_, _, page) = daemon.raw_to("GET", "/", &[host], &[("Cookie", &cookie)], "");
    assert!(page.contains("signed in as api (alice)"), "{page}");
}

#[test]
fn half_sent_requests_and_slow_heads_are_cut_off() {
    let repo = Repo::example();
    let daemon =
        applied(&repo, "listener: { header_timeout: 2s, max_connections: 100, max_connections_per_client: 1000 }\n");
    let address = daemon.address().unwrap().trim().to_string();
    let pid = daemon.pid();
    let base = open_descriptors(pid);
    // 300 requests whose head never ends.
    let mut held: Vec<TcpStream> = (0..300)
        .map(|_| {
            let mut s = TcpStream::connect(&address).unwrap();
            let _ = write!(s, "GET / HTTP/1.1\r\nHost: {address}\r\nX-Slow: a");
            s
        })
        .collect();
    // A limit shows as time passing with no more accepted: no event says the daemon would take
    // no more, so half a second of it.
    std::thread::sleep(Duration::from_millis(500));
    let during = open_descriptors(pid);
    // (A little slack for the descriptors the daemon opens for its own work meanwhile.)
    assert!(during <= base + 100 + 10, "at most max_connections held: {base} → {during}");
    // The daemon still answers (as soon as a slot frees), and every half-sent request is closed.
    assert_eq!(daemon.get("/healthz").0, 200);
    for (i, stream) in held.iter_mut().enumerate() {
        assert!(closed_by_daemon(stream, Duration::from_secs(30)), "connection {i} is still open");
    }

    // A head sent one byte at a time, each in time to keep a per-read timeout happy.
    let mut slow = TcpStream::connect(&address).unwrap();
    let head = format!("GET /api/v1/clusters HTTP/1.1\r\nHost: {address}\r\nX-Padding: {}\r\n\r\n", "x".repeat(200));
    let started = Instant::now();
    let mut cut = false;
    for byte in head.as_bytes() {
        if slow.write_all(&[*byte]).is_err() || started.elapsed() > Duration::from_secs(30) {
            cut = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(cut || closed_by_daemon(&mut slow, Duration::from_secs(5)), "a slow head is cut off");
    let mut response = String::new();
    let _ = slow.read_to_string(&mut response);
    assert!(!response.contains("aws-cluster"), "{response}");
    assert_eq!(daemon.get("/healthz").0, 200);
}

#[test]
fn unfinished_webhook_bodies_do_not_grow_memory() {
    let repo = Repo::example();
    let daemon = applied(&repo, "listener: { max_connections: 1000, max_connections_per_client: 1000 }\n");
    let address = daemon.address().unwrap().trim().to_string();
    let pid = daemon.pid();
    let before = proc_status(pid, "VmHWM:");
    const BODY: usize = 960 * 1024;
    // 400 webhook deliveries that stop one byte short of their announced length.
    let senders: Vec<_> = (0..20)
        .map(|_| {
            let address = address.clone();
            std::thread::spawn(move || {
                let body = vec![b'x'; BODY - 1];
                (0..20)
                    .filter_map(|_| {
                        let mut s = TcpStream::connect(&address).ok()?;
                        s.set_write_timeout(Some(Duration::from_secs(20))).unwrap();
                        let _ = write!(
                            s,
                            "POST /hooks/github HTTP/1.1\r\nHost: {address}\r\nX-GitHub-Event: push\r\nX-Hub-Signature-256: sha256=00\r\nContent-Length: {BODY}\r\n\r\n"
                        );
                        let _ = s.write_all(&body);
                        Some(s)
                    })
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    let held: Vec<TcpStream> = senders.into_iter().flat_map(|s| s.join().unwrap()).collect();
    assert_eq!(held.len(), 400);
    // The daemon reads what arrived at its own pace and shows nothing of it but its memory,
    // which is what is measured: half a second for it to take the bytes in.
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(daemon.get("/healthz").0, 200);
    let peak = proc_status(pid, "VmHWM:");
    eprintln!("peak RSS of the daemon: {before} kB before, {peak} kB with 400 unfinished bodies");
    assert!(
        peak < before + 64 * 1024,
        "400 unfinished bodies grew the daemon's peak memory from {before} kB to {peak} kB"
    );
    drop(held);
}

#[test]
fn a_daemon_out_of_descriptors_backs_off_and_recovers() {
    let repo = Repo::example();
    let mut daemon = Daemon::configure(
        &local(&repo),
        &example_targets(),
        "listener: { header_timeout: 10s, max_connections_per_client: 1000 }\n",
    );
    daemon.spawn_under(&["prlimit", "--nofile=64:64"]);
    let pid = daemon.pid();
    let address = daemon.address().unwrap().trim().to_string();
    let held: Vec<TcpStream> = (0..150).filter_map(|_| TcpStream::connect(&address).ok()).collect();
    daemon.wait_for("accept to fail with EMFILE", Duration::from_secs(10), |d| {
        d.log().contains("Cannot accept a connection")
    });
    // Out of descriptors with connections waiting: a loop that retried at once would burn a core.
    let before = cpu_ticks(pid);
    // A rate: CPU over a stretch of time, so the stretch stays.
    std::thread::sleep(Duration::from_secs(3));
    let used = cpu_ticks(pid) - before;
    eprintln!("{used} ticks of CPU in 3 s out of descriptors");
    assert!(used < 30, "{used} ticks of CPU in 3 s while out of descriptors");
    // The descriptors come back: the daemon answers again.
    drop(held);
    daemon.wait_for("/healthz answering again", Duration::from_secs(30), |d| d.get("/healthz").0 == 200);
}

/// Raw HTTP to `to` from the loopback address `from` (the client socket bound to it before it
/// connects): (status, head, body).
fn raw_from(
    from: [u8; 4],
    to: std::net::SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> (u16, String, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let mut request = format!("{method} {path} HTTP/1.1\r\nConnection: close\r\n");
    for (k, v) in headers {
        request.push_str(&format!("{k}: {v}\r\n"));
    }
    request.push_str(&format!("Content-Length: {}\r\n\r\n{body}", body.len()));
    let response = runtime.block_on(async {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.bind((std::net::Ipv4Addr::from(from), 0).into()).unwrap();
        let mut stream = socket.connect(to).await.unwrap();
        stream.write_all(request.as_bytes()).await.unwrap();
        let mut response = Vec::new();
        tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut response)).await.unwrap().unwrap();
        String::from_utf8_lossy(&response).into_owned()
    });
    let code = response.split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    let (head, body) = response.split_once("\r\n\r\n").unwrap_or((&response, ""));
    (code, head.to_string(), body.to_string())
}

/// Finding 6: probes pass the `Host` check by naming the address they reach — as Kubernetes'
/// probes name the pod's address on a daemon listening on 0.0.0.0 — and anyone without the token
/// learns up or ready and nothing more; /metrics needs the API token or `metrics.token_file`'s,
/// which opens nothing else.
#[test]
fn probes_name_the_address_they_reach_and_strangers_learn_only_up_and_ready() {
    let repo = Repo::example();
    let mut daemon = Daemon::configure(
        &local(&repo),
        &example_targets(),
        "view: { require_token: true }\nmetrics: { token_file: ./metrics-token }\n",
    );
    std::fs::write(daemon.dir.path().join("metrics-token"), "scrape-token\n").unwrap();
    let config = std::fs::read_to_string(&daemon.config).unwrap().replace("listen: 127.0.0.1:0", "listen: 0.0.0.0:0");
    std::fs::write(&daemon.config, config).unwrap();
    daemon.spawn();
    let auth = bearer();
    daemon.wait_for("aws-cluster applied", Duration::from_secs(10), |d| {
        d.raw("GET", "/api/v1/clusters/aws-cluster", &[("Authorization", &auth)], "").2.contains("\"applied\"")
    });
    let port: u16 = daemon.address().unwrap().trim().rsplit_once(':').unwrap().1.parse().unwrap();
    // A pod's address: the connection reaches 127.0.0.2, which the daemon was not told about.
    let pod = std::net::SocketAddr::from(([127, 0, 0, 2], port));
    let probe = |host: &str, path: &str, headers: &[(&str, &str)]| {
        let all: Vec<(&str, &str)> = [("Host", host)].into_iter().chain(headers.iter().copied()).collect();
        raw_from([127, 0, 0, 9], pod, "GET", path, &all, "")
    };
    let here = format!("127.0.0.2:{port}");
    assert_eq!(probe(&here, "/healthz", &[]).2, "ok\n");
    let (code, _, body) = probe(&here, "/readyz", &[]);
    assert_eq!((code, body.as_str()), (200, "ready\n"));
    let (code, _, body) = probe(&here, "/readyz", &[("Accept", "application/json")]);
    assert_eq!(code, 200);
    assert_eq!(serde_json::from_str::<Value>(&body).unwrap(), serde_json::json!({ "ready": true }));
    // Another address, or a name, is not the one the connection reached.
    for host in [format!("127.0.0.3:{port}"), "evil.example".into(), format!("evil.example:{port}")] {
        for path in ["/healthz", "/readyz", "/metrics"] {
            assert_eq!(probe(&host, path, &[]).0, 421, "{host} {path}");
        }
    }

    // Metrics: not for strangers; the API token, a session or the metrics token.
    let (code, _, body) = probe(&here, "/metrics", &[]);
    assert_eq!(code, 401);
    assert!(!body.contains("strata_"), "{body}");
    let scrape = "Bearer scrape-token";
    for authorization in [auth.as_str(), scrape] {
        let (code, _, body) = probe(&here, "/metrics", &[("Authorization", authorization)]);
        assert_eq!(code, 200, "{authorization}");
        assert!(body.contains("strata_reconciles_total"), "{body}");
    }
    assert_eq!(probe(&here, "/metrics", &[("Authorization", "Bearer scrape-tokem")]).0, 401);
    // The metrics token opens nothing else, and is no way to sign in.
    for path in ["/api/v1/clusters", "/readyz"] {
        assert_eq!(probe(&here, path, &[("Authorization", scrape)]).0, 401, "{path}");
    }
    let (code, _, _) = daemon.raw("POST", "/login", &[FORM], "name=prometheus&token=scrape-token&next=%2F");
    assert_eq!(code, 401);
}

/// Finding 6: what `/readyz` knows — the repository's URL and why it fails, the state
/// database's path — is for the token's holders (and `strata status`), not for strangers.
#[test]
fn readiness_details_are_for_the_token_only() {
    let dead = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/secret-fleet.git", dead.local_addr().unwrap());
    drop(dead);
    let daemon = Daemon::start_with(
        &format!("{{ url: '{url}', branch: main, interval: 1h }}"),
        &example_targets(),
        "view: { require_token: true }\n",
    );
    let auth = bearer();
    daemon.wait_for("the repository failing", Duration::from_secs(20), |d| {
        d.raw("GET", "/readyz", &[("Authorization", &auth)], "").2.contains("repository: failing since")
    });
    let (code, _, detail) = daemon.raw("GET", "/readyz", &[("Authorization", &auth)], "");
    assert_eq!(code, 200);
    assert!(detail.contains("secret-fleet.git"), "{detail}");
    let (_, _, json) = daemon.raw("GET", "/readyz", &[("Authorization", &auth), ("Accept", "application/json")], "");
    assert_eq!(serde_json::from_str::<Value>(&json).unwrap()["problems"][0]["source"], "repository", "{json}");
    // `strata status` reads it with the token from its config.
    let run = daemon.strata(&["status"]);
    assert!(
        run.stdout.contains("repository: failing since") && run.stdout.contains("secret-fleet.git"),
        "{}",
        run.stdout
    );
    // Without the token: ready, and nothing more.
    let (code, _, body) = daemon.raw("GET", "/readyz", &[], "");
    assert_eq!((code, body.as_str()), (200, "ready\n"));
    let (_, _, json) = daemon.raw("GET", "/readyz", &[("Accept", "application/json")], "");
    assert_eq!(serde_json::from_str::<Value>(&json).unwrap(), serde_json::json!({ "ready": true }));
    // A session shows the details as the token does; a wrong token is refused, not answered.
    let (_, head) = sign_in(&daemon, "alice", TOKEN, "%2F");
    let cookie = session_cookie(&head);
    assert!(daemon.raw("GET", "/readyz", &[("Cookie", &cookie)], "").2.contains("secret-fleet.git"));
    assert_eq!(daemon.raw("GET", "/readyz", &[("Authorization", "Bearer wrong")], "").0, 401);

    // Not ready, because the state database is not one: why (its path) only with the token.
    let repo = Repo::example();
    let mut broken = Daemon::configure(&local(&repo), &example_targets(), "view: { require_token: true }\n");
    std::fs::create_dir_all(broken.dir.path().join("state")).unwrap();
    let db = broken.dir.path().join("state/strata.db");
    std::fs::write(&db, vec![0x5a; 16384]).unwrap();
    broken.launch();
    broken.wait_for("not ready", Duration::from_secs(20), |d| d.get("/readyz").0 == 503);
    let (code, _, body) = broken.raw("GET", "/readyz", &[], "");
    assert_eq!((code, body.as_str()), (503, "not ready\n"));
    let (code, _, body) = broken.raw("GET", "/readyz", &[("Authorization", &auth)], "");
    assert_eq!(code, 503);
    assert!(body.contains(&db.display().to_string()), "{body}");
}

/// Finding 7: guesses from many addresses used to fill the global bucket and lock every token
/// holder out. Now a client that did not fail is heard whatever others do; the guessers wait.
#[test]
fn guesses_from_many_addresses_hold_back_only_the_guessers() {
    let repo = Repo::example();
    let daemon = applied(&repo, "");
    let address: std::net::SocketAddr = daemon.address().unwrap().trim().parse().unwrap();
    let host = address.to_string();
    let get = |from: u8, token: &str| {
        let authorization = format!("Bearer {token}");
        raw_from(
            [127, 0, 0, from],
            address,
            "GET",
            "/api/v1/clusters",
            &[("Host", &host), ("Authorization", &authorization)],
            "",
        )
    };
    let sign_in_from = |from: u8, token: &str| {
        let body = format!("name=alice&token={token}&next=%2F");
        raw_from([127, 0, 0, from], address, "POST", "/login", &[("Host", &host), FORM], &body)
    };
    // Up to 9 guesses from each of 59 addresses, each stopping when held back: past 100, the
    // flood holds back every address that failed in it.
    let mut held = 0;
    for from in 2..=60u8 {
        for i in 0..9 {
            let guess = format!("guess-{from}-{i}");
            let (code, head, _) = if i % 2 == 0 { get(from, &guess) } else { sign_in_from(from, &guess) };
            if i == 0 {
                assert_eq!(code, 401, "127.0.0.{from}: an address that never failed is heard");
            }
            if code == 429 {
                assert!(header(&head, "retry-after").is_some(), "{head}");
                held += 1;
                break;
            }
            assert_eq!(code, 401, "127.0.0.{from} guess {i}");
        }
    }
    assert!(held >= 40, "the flood holds back the guessers: {held} held");
    // The right token from an address that never failed: the API, sign-in and the CLI.
    assert_eq!(get(61, TOKEN).0, 200);
    let (code, head, _) = sign_in_from(62, TOKEN);
    assert_eq!(code, 303, "{head}");
    assert!(header(&head, "set-cookie").is_some());
    let run = daemon.strata(&["status"]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    // The guessers' own addresses: 429 with Retry-After, the right token included (no oracle).
    for from in [2, 30, 60] {
        for (code, head) in [get(from, TOKEN), sign_in_from(from, TOKEN)].map(|(c, h, _)| (c, h)) {
            assert_eq!(code, 429, "127.0.0.{from}");
            let wait: u64 = header(&head, "retry-after").unwrap().parse().unwrap();
            assert!((1..=600).contains(&wait), "{head}");
        }
    }
    // A newcomer that guesses during the flood gets its one answer, then waits with the others.
    assert_eq!(get(63, "guess").0, 401);
    assert_eq!(get(63, TOKEN).0, 429);
}

#[test]
fn the_fleet_list_takes_several_tags_and_the_api_pages_like_kubernetes() {
    let repo = Repo::example();
    let daemon = applied(&repo, "");
    // At start, one line about the fleet.
    daemon.wait_for("the start-up line", Duration::from_secs(10), |d| {
        d.log().contains("Fleet: 4 clusters in the repository (")
    });

    // Two tags, both required: this was a raw 400.
    let (code, page) = daemon.get("/?tag=service:hello-universe-frontend&tag=env:staging");
    assert_eq!(code, 200, "{page}");
    assert_eq!(page.matches("<tr data-cluster=").count(), 1, "{page}");
    assert!(page.contains("data-cluster=\"aws-staging\""));
    // Several in one field, as the form sends them.
    let (_, same) = daemon.get("/?tag=service%3Ahello-universe-frontend+env%3Astaging");
    assert_eq!(same.matches("<tr data-cluster=").count(), 1);
    // A filter the list does not know says which ones it takes.
    let (code, bad) = daemon.get("/?state=broken");
    assert_eq!(code, 400);
    assert!(bad.contains("state=&quot;broken&quot;") && bad.contains("awaiting-approval"), "{bad}");

    // The refresh: the overview and the page shown, then 304 while nothing changes.
    let (code, head, fragment) = daemon.raw("GET", "/fragment/clusters?sort=state", &[], "");
    assert_eq!(code, 200);
    assert!(fragment.contains("id=\"overview\"") && fragment.contains("id=\"list\""), "{fragment}");
    let etag = header(&head, "etag").unwrap().to_string();
    assert!(header(&head, "server-timing").is_some_and(|t| t.starts_with("app;dur=")), "{head}");
    let (code, _, _) = daemon.raw("GET", "/fragment/clusters?sort=state", &[("If-None-Match", &etag)], "");
    assert_eq!(code, 304);

    // Unpaged, the API answers the array it always did.
    let (_, all) = daemon.get("/api/v1/clusters");
    let all: Value = serde_json::from_str(&all).unwrap();
    assert_eq!(all.as_array().unwrap().len(), 4);
    // Paged: `limit` and `continue`, as Kubernetes lists.
    let mut names = Vec::new();
    let mut next = "/api/v1/clusters?limit=3".to_string();
    loop {
        let (code, body) = daemon.get(&next);
        assert_eq!(code, 200, "{body}");
        let page: Value = serde_json::from_str(&body).unwrap();
        names.extend(
            page["items"].as_array().unwrap().iter().map(|i| i["cluster"]["name"].as_str().unwrap().to_string()),
        );
        match page["metadata"]["continue"].as_str() {
            Some(token) => {
                assert_eq!(page["metadata"]["remainingItemCount"], 1);
                next = format!("/api/v1/clusters?limit=3&continue={token}");
            }
            None => break,
        }
    }
    assert_eq!(names, ["aws-cluster", "aws-staging", "edge-berlin", "edge-lab"]);
    let (code, body) = daemon.get("/api/v1/clusters?limit=3&continue=%25%25");
    assert_eq!(code, 400);
    assert!(body.contains("without `continue`"), "{body}");
    let (code, body) = daemon.get("/api/v1/clusters?limit=many");
    assert_eq!(code, 400);
    assert!(body.contains("limit=N"), "{body}");
}

#[test]
fn metrics_exist_before_their_first_event_and_name_each_cluster_once() {
    let repo = Repo::example();
    repo.write(
        "rollouts/default.yaml",
        "apiVersion: strata.dev/v1\nkind: Rollout\nmetadata: { name: default }\nspec:\n  profiles: [aws-profile]\n  waves:\n    - name: all\n",
    );
    repo.commit("a rollout policy");
    let daemon = applied(&repo, "");
    let (code, text) = daemon.get("/metrics");
    assert_eq!(code, 200);
    for line in [
        "strata_panics_total{stage=\"worker\"} 0",
        "strata_store_errors_total{kind=\"corrupt\"} 0",
        "strata_webhooks_total{provider=\"github\",result=\"unauthorized\"} 0",
        "strata_cluster_sync{cluster=\"aws-cluster\",state=\"applied\"} 1",
        "strata_cluster_healthy{cluster=\"aws-cluster\"}",
        "strata_revision_behind_head 0",
        "strata_rollout_halted{rollout=\"default\"} 0",
    ] {
        assert!(text.contains(line), "{line} missing:\n{text}");
    }
    assert!(text.contains("strata_build_info{version=\"0.1.0\",revision="), "{text}");
    assert_eq!(text.matches("strata_cluster_sync{cluster=\"aws-cluster\"").count(), 1, "{text}");
    // Every metric the sample alerting rules use is one the daemon serves.
    let rules = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/alerts.yaml")).unwrap();
    for name in metric_names(&rules) {
        assert!(
            text.lines().any(|l| l.starts_with(&format!("# TYPE {name} "))
                || l.starts_with(&format!("{name}{{"))
                || l.starts_with(&format!("{name} "))),
            "docs/alerts.yaml uses {name}, which /metrics does not serve"
        );
    }
}

/// The `strata_…` metric names an alerting rules file uses in its expressions, once each; the
/// file is checked to have the shape Prometheus reads (groups of rules with an alert, an
/// expression and a summary) on the way.
fn metric_names(rules: &str) -> Vec<String> {
    let parsed: Value = serde_saphyr::from_str(rules).expect("docs/alerts.yaml is YAML");
    let mut names = Vec::new();
    for group in parsed["groups"].as_array().expect("groups") {
        assert!(group["name"].is_string(), "a group without a name: {group}");
        for rule in group["rules"].as_array().expect("rules") {
            assert!(rule["alert"].is_string() && rule["annotations"]["summary"].is_string(), "{rule}");
            let expr = rule["expr"].as_str().expect("expr");
            names.extend(
                expr.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                    .filter(|w| w.starts_with("strata_"))
                    .map(str::to_string),
            );
        }
    }
    names.sort();
    names.dedup();
    assert!(!names.is_empty(), "no strata_ metric in the rules");
    names
}
