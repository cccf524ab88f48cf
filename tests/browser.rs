//! The status view in a real browser: headless Chromium driven over WebDriver (chromedriver),
//! against the daemon running the example. Filter by the tutorial's tag, review the pending
//! in-place edit, sign in, approve, and watch the fleet page update by itself.
//!
//! With STRATA_SCREENSHOTS=DIR set, the fleet and pending-update pages are saved there as PNGs
//! (that is how docs/ gets its pictures).

mod common;

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine as _;
use common::Repo;
use serde_json::{Value, json};

const TOKEN: &str = "view-test-token";

struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// One WebDriver command over HTTP/1.1, one connection each.
fn wd(port: u16, method: &str, path: &str, body: Option<Value>) -> Value {
    let body = body.map(|b| b.to_string()).unwrap_or_default();
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    // chromedriver keeps connections open: read the head, then exactly the body it announces.
    let mut response = Vec::new();
    let mut byte = [0u8; 4096];
    let (head, mut body) = loop {
        let n = stream.read(&mut byte).unwrap();
        assert!(n > 0, "{method} {path}: connection closed before an answer");
        response.extend_from_slice(&byte[..n]);
        if let Some(i) = response.windows(4).position(|w| w == b"\r\n\r\n") {
            break (String::from_utf8_lossy(&response[..i]).to_ascii_lowercase(), response[i + 4..].to_vec());
        }
    };
    let length =
        head.lines().find_map(|l| l.strip_prefix("content-length:")).and_then(|v| v.trim().parse::<usize>().ok());
    let chunked = head.contains("transfer-encoding: chunked");
    while match length {
        Some(n) => body.len() < n,
        None if chunked => !body.ends_with(b"0\r\n\r\n"),
        None => false,
    } {
        let n = stream.read(&mut byte).unwrap();
        if n == 0 {
            break;
        }
        body.extend_from_slice(&byte[..n]);
    }
    let body = String::from_utf8_lossy(&body).into_owned();
    let json = if chunked { dechunk(&body) } else { body };
    let value: Value = serde_json::from_str(&json).unwrap_or_else(|e| panic!("{method} {path}: {e}: {json}"));
    assert!(value["value"]["error"].is_null(), "{method} {path}: {}", value["value"]);
    value["value"].clone()
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

struct Browser {
    port: u16,
    session: String,
    _driver: Killed,
}

impl Browser {
    fn start() -> Browser {
        for tool in ["chromium", "chromedriver"] {
            assert!(
                strata::render::tools::which(tool).is_some(),
                "the browser test needs Debian's chromium and chromium-driver: scripts/test installs them"
            );
        }
        let port = free_port();
        let driver = Killed(
            Command::new("chromedriver")
                .arg(format!("--port={port}"))
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap(),
        );
        let started = Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(started.elapsed() < Duration::from_secs(20), "chromedriver did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
        let profile = tempfile::tempdir().unwrap().keep();
        let session = wd(
            port,
            "POST",
            "/session",
            Some(json!({"capabilities": {"alwaysMatch": {"browserName": "chrome", "goog:chromeOptions": {
                "binary": strata::render::tools::which("chromium").unwrap(),
                "args": ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                         "--disable-background-networking", "--disable-component-update", "--disable-sync",
                         "--disable-dev-shm-usage", "--window-size=1280,720", format!("--user-data-dir={}", profile.display())]
            }}}})),
        );
        Browser { port, session: session["sessionId"].as_str().unwrap().to_string(), _driver: driver }
    }

    fn cmd(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        wd(self.port, method, &format!("/session/{}{path}", self.session), body)
    }

    fn go(&self, url: &str) {
        self.cmd("POST", "/url", Some(json!({"url": url})));
    }

    fn find(&self, css: &str) -> String {
        let element = self.cmd("POST", "/element", Some(json!({"using": "css selector", "value": css})));
        element.as_object().and_then(|o| o.values().next()).and_then(Value::as_str).unwrap().to_string()
    }

    fn count(&self, css: &str) -> usize {
        self.cmd("POST", "/elements", Some(json!({"using": "css selector", "value": css})))
            .as_array()
            .map(Vec::len)
            .unwrap_or(0)
    }

    fn click(&self, css: &str) {
        let id = self.find(css);
        self.cmd("POST", &format!("/element/{id}/click"), Some(json!({})));
    }

    fn type_into(&self, css: &str, text: &str) {
        let id = self.find(css);
        self.cmd("POST", &format!("/element/{id}/clear"), Some(json!({})));
        self.cmd("POST", &format!("/element/{id}/value"), Some(json!({"text": text})));
    }

    fn text(&self, css: &str) -> String {
        let id = self.find(css);
        self.cmd("GET", &format!("/element/{id}/text"), None).as_str().unwrap_or("").to_string()
    }

    fn url(&self) -> String {
        self.cmd("GET", "/url", None).as_str().unwrap_or("").to_string()
    }

    fn screenshot(&self, name: &str) {
        let Some(dir) = std::env::var_os("STRATA_SCREENSHOTS") else { return };
        let png = self.cmd("GET", "/screenshot", None);
        let bytes = base64::engine::general_purpose::STANDARD.decode(png.as_str().unwrap()).unwrap();
        std::fs::write(PathBuf::from(dir).join(name), bytes).unwrap();
    }

    fn wait(&self, what: &str, mut done: impl FnMut(&Browser) -> bool) {
        let started = Instant::now();
        while !done(self) {
            assert!(started.elapsed() < Duration::from_secs(15), "timed out waiting for {what}; at {}", self.url());
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = std::panic::catch_unwind(|| wd(self.port, "DELETE", &format!("/session/{}", self.session), None));
    }
}

fn start_daemon(repo: &Repo, dir: &Path) -> (Killed, String) {
    std::fs::write(dir.join("token"), TOKEN).unwrap();
    let targets: String = [
        ("aws-cluster", "aws-cluster"),
        ("aws-staging", "aws-staging"),
        ("edge-berlin", "edge-berlin"),
        ("lab", "lab"),
    ]
    .iter()
    .map(|(t, d)| format!("  {t}: {{ directory: ./out/{d} }}\n"))
    .collect();
    std::fs::write(
        dir.join("strata.yaml"),
        format!(
            "repository: {{ url: {}, branch: main, interval: 1h }}\nstate_dir: ./state\nlisten: 127.0.0.1:0\napi: {{ token_file: ./token }}\ntargets:\n{targets}",
            repo.path().display()
        ),
    )
    .unwrap();
    let child = Killed(
        Command::new(env!("CARGO_BIN_EXE_strata"))
            .args(["run", "--config"])
            .arg(dir.join("strata.yaml"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let started = Instant::now();
    loop {
        if let Ok(address) = std::fs::read_to_string(dir.join("state/listen-address")) {
            let base = format!("http://{}", address.trim());
            if dir.join("out/aws-cluster/hello-universe/deployment.ui.yaml").exists() {
                return (child, base);
            }
        }
        assert!(started.elapsed() < Duration::from_secs(20), "the daemon did not apply the example");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn review_and_approve_a_pending_update_in_the_browser() {
    let repo = Repo::example();
    let dir = tempfile::tempdir().unwrap();
    let (_daemon, base) = start_daemon(&repo, dir.path());
    repo.edit("profiles/aws-profile/1.0.0/profile.yaml", "replicas: 1", "replicas: 3");
    repo.commit("aws-profile 1.0.0: three replicas");

    let browser = Browser::start();
    browser.go(&format!("{base}/"));
    browser.wait("four clusters", |b| b.count("tbody tr[data-cluster]") == 4);
    browser.wait("the pending badge", |b| b.count("tr[data-cluster=aws-cluster] a.pending") == 1);

    // Filter by the tutorial's tag.
    browser.type_into("input[name=tag]", "service:hello-universe-frontend");
    browser.click("form.filters button");
    browser.wait("the filtered fleet", |b| b.url().contains("tag=service%3Ahello-universe-frontend"));
    assert_eq!(browser.count("tbody tr[data-cluster]"), 2);
    assert!(browser.text("tbody").contains("aws-staging"));
    browser.screenshot("fleet.png");

    // Review the pending in-place edit, side by side.
    browser.click("tr[data-cluster=aws-cluster] a.pending");
    browser.wait("the pending page", |b| b.url().ends_with("/clusters/aws-cluster/pending"));
    assert_eq!(browser.text("td.del").trim(), "replicas: 1");
    assert_eq!(browser.text("td.add").trim(), "replicas: 3");
    browser.screenshot("pending-update.png");

    // Read-only until signed in.
    assert_eq!(browser.count("#approve"), 0);
    browser.click(".approve a");
    browser.wait("the login page", |b| b.url().contains("/login"));
    browser.type_into("input[name=name]", "alice");
    browser.type_into("input[name=token]", TOKEN);
    browser.click("form.login button");
    browser.wait("back on the pending page", |b| {
        b.url().ends_with("/clusters/aws-cluster/pending") && b.count("#approve") == 1
    });

    browser.click("#approve");
    browser.wait("the cluster page", |b| b.url().ends_with("/clusters/aws-cluster"));
    let ui = dir.path().join("out/aws-cluster/hello-universe/deployment.ui.yaml");
    let started = Instant::now();
    while !std::fs::read_to_string(&ui).unwrap_or_default().contains("replicas: 3") {
        assert!(started.elapsed() < Duration::from_secs(10), "the approved update was not applied");
        std::thread::sleep(Duration::from_millis(50));
    }
    browser.go(&format!("{base}/clusters/aws-cluster"));
    assert!(browser.text("body").contains("alice"), "the approval is recorded with who");

    // The fleet page follows without a reload.
    browser.go(&format!("{base}/"));
    browser.wait("the fleet page", |b| b.count("tbody tr[data-cluster]") == 4);
    repo.edit("clusters/edge-berlin.yaml", "replicas: 3", "replicas: 4");
    repo.edit("profiles/edge-profile/2.0.0/profile.yaml", "replicas: 2", "replicas: 5");
    repo.commit("edge-profile 2.0.0 in place");
    browser.wait("edge-berlin's pending badge, live", |b| b.count("tr[data-cluster=edge-berlin] a.pending") == 1);
}
