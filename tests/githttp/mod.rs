//! A Git smart-HTTP server for tests: `git http-backend` (Git's own CGI program) behind HTTP Basic
//! authentication with a token, on 127.0.0.1.

#![allow(dead_code)]

use std::convert::Infallible;
use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};

use base64::Engine as _;
use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper::{Request, Response};

pub struct GitHttp {
    pub url: String,
    /// (method, path, authorised) of every request.
    pub seen: Arc<Mutex<Vec<(String, String, bool)>>>,
}

impl GitHttp {
    /// Serves the repositories under `root`, for `user` with `token`.
    pub fn start(root: PathBuf, user: &str, token: &str) -> GitHttp {
        GitHttp::start_with(root, user, token, None)
    }

    /// As [`GitHttp::start`], over TLS with `tls` (a certificate from the test's own CA).
    pub fn start_with(root: PathBuf, user: &str, token: &str, tls: Option<Arc<rustls::ServerConfig>>) -> GitHttp {
        let expected = format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(format!("{user}:{token}")));
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let served = seen.clone();
        let user = user.to_string();
        let url = super::common::serve(listener, tls, move |req| {
            handle(req, root.clone(), expected.clone(), user.clone(), served.clone())
        });
        GitHttp { url, seen }
    }
}

async fn handle(
    req: Request<Incoming>,
    root: PathBuf,
    expected: String,
    user: String,
    seen: Arc<Mutex<Vec<(String, String, bool)>>>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let method = req.method().to_string();
    let path = req.uri().path().to_string();
    let query = req.uri().query().unwrap_or("").to_string();
    let content_type = req.headers().get("content-type").and_then(|v| v.to_str().ok()).unwrap_or("").to_string();
    let authorised = req.headers().get("authorization").and_then(|v| v.to_str().ok()) == Some(expected.as_str());
    seen.lock().unwrap().push((method.clone(), path.clone(), authorised));
    if !authorised {
        return Ok(Response::builder()
            .status(401)
            .header("www-authenticate", "Basic realm=\"git\"")
            .body(Full::new(Bytes::from("unauthorized")))
            .unwrap());
    }
    let body = req.into_body().collect().await.map(|b| b.to_bytes()).unwrap_or_default();
    let output = tokio::task::spawn_blocking(move || {
        let mut child = Command::new("git")
            .arg("http-backend")
            .env("GIT_PROJECT_ROOT", &root)
            .env("GIT_HTTP_EXPORT_ALL", "1")
            .env("REQUEST_METHOD", &method)
            .env("PATH_INFO", &path)
            .env("QUERY_STRING", &query)
            .env("CONTENT_TYPE", &content_type)
            .env("CONTENT_LENGTH", body.len().to_string())
            .env("REMOTE_USER", &user)
            .env("REMOTE_ADDR", "127.0.0.1")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        child.stdin.take().unwrap().write_all(&body).unwrap();
        child.wait_with_output().unwrap().stdout
    })
    .await
    .unwrap();
    // CGI: headers, a blank line, the body.
    let split = output
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|i| (i, 4))
        .or_else(|| output.windows(2).position(|w| w == b"\n\n").map(|i| (i, 2)));
    let (head, body) = match split {
        Some((i, n)) => (String::from_utf8_lossy(&output[..i]).into_owned(), output[i + n..].to_vec()),
        None => (String::new(), output),
    };
    let mut response = Response::builder();
    for line in head.lines() {
        let Some((name, value)) = line.split_once(':') else { continue };
        if name.eq_ignore_ascii_case("status") {
            let code: u16 = value.split_whitespace().next().and_then(|c| c.parse().ok()).unwrap_or(500);
            response = response.status(code);
        } else {
            response = response.header(name.trim(), value.trim());
        }
    }
    Ok(response.body(Full::new(Bytes::from(body))).unwrap())
}
