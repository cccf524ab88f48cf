//! Headless Chromium over WebDriver (chromedriver), for the tests that drive the view as a person
//! would: tests/it/browser.rs, and the sign-in through the OpenID provider in tests/it/oidc.rs.

use std::io::{Read, Write};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use base64::Engine as _;
use serde_json::{Value, json};

/// Whether Debian's chromium and chromium-driver are installed.
pub fn available() -> bool {
    ["chromium", "chromedriver"].iter().all(|t| strata::render::tools::which(t).is_some())
}

pub struct Killed(pub Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// One WebDriver command over HTTP/1.1, one connection each.
pub fn wd(port: u16, method: &str, path: &str, body: Option<Value>) -> Value {
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

pub struct Browser {
    port: u16,
    session: String,
    _driver: Killed,
}

impl Browser {
    pub fn start() -> Browser {
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
        super::wait_for("chromedriver to listen", Duration::from_secs(20), || {
            std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
        });
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

    pub fn cmd(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        wd(self.port, method, &format!("/session/{}{path}", self.session), body)
    }

    pub fn go(&self, url: &str) {
        self.cmd("POST", "/url", Some(json!({"url": url})));
    }

    pub fn find(&self, css: &str) -> String {
        let element = self.cmd("POST", "/element", Some(json!({"using": "css selector", "value": css})));
        element.as_object().and_then(|o| o.values().next()).and_then(Value::as_str).unwrap().to_string()
    }

    pub fn count(&self, css: &str) -> usize {
        self.cmd("POST", "/elements", Some(json!({"using": "css selector", "value": css})))
            .as_array()
            .map(Vec::len)
            .unwrap_or(0)
    }

    pub fn click(&self, css: &str) {
        let id = self.find(css);
        self.cmd("POST", &format!("/element/{id}/click"), Some(json!({})));
    }

    pub fn type_into(&self, css: &str, text: &str) {
        let id = self.find(css);
        self.cmd("POST", &format!("/element/{id}/clear"), Some(json!({})));
        self.cmd("POST", &format!("/element/{id}/value"), Some(json!({"text": text})));
    }

    pub fn text(&self, css: &str) -> String {
        let id = self.find(css);
        self.cmd("GET", &format!("/element/{id}/text"), None).as_str().unwrap_or("").to_string()
    }

    /// An attribute of the first element `css` selects.
    pub fn find_attribute(&self, css: &str, attribute: &str) -> String {
        let id = self.find(css);
        self.cmd("GET", &format!("/element/{id}/attribute/{attribute}"), None).as_str().unwrap_or("").to_string()
    }

    /// The window's size (the first screen a screenshot shows).
    pub fn resize(&self, width: u32, height: u32) {
        self.cmd("POST", "/window/rect", Some(json!({"width": width, "height": height})));
    }

    pub fn url(&self) -> String {
        self.cmd("GET", "/url", None).as_str().unwrap_or("").to_string()
    }

    pub fn screenshot(&self, name: &str) {
        let Some(dir) = std::env::var_os("STRATA_SCREENSHOTS") else { return };
        let png = self.cmd("GET", "/screenshot", None);
        let bytes = base64::engine::general_purpose::STANDARD.decode(png.as_str().unwrap()).unwrap();
        std::fs::write(PathBuf::from(dir).join(name), bytes).unwrap();
    }

    #[track_caller]
    pub fn wait(&self, what: &str, mut done: impl FnMut(&Browser) -> bool) {
        super::wait_until_with(
            what,
            Duration::from_secs(15),
            Duration::from_millis(100),
            || done(self),
            |held| *held,
            || format!("at {}", self.url()),
        );
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = std::panic::catch_unwind(|| wd(self.port, "DELETE", &format!("/session/{}", self.session), None));
    }
}
