//! Test fixtures: scratch copies of the example repository, real Git commits, and the real
//! `strata` binary.

#![allow(dead_code)]

pub mod daemon;
pub mod kubemode;
pub mod kubernetes;
pub mod proc;
pub mod secrets;
pub mod truth;
pub mod webdriver;

use std::convert::Infallible;
use std::fs;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use http_body_util::Full;
use hyper::body::{Bytes, Incoming};

/// How often [`wait_until`] looks again unless told otherwise.
pub const POLL: Duration = Duration::from_millis(50);

/// Waits for something a test can observe: calls `observe` every `every` until `done` holds for
/// what it returned, and returns that. Past `within` it panics naming `what`, with the last
/// value seen and whatever `context` adds then (a daemon's log). Every wait in the suite is this
/// one: a deadline, a poll interval, and a description.
#[track_caller]
pub fn wait_until_with<V: std::fmt::Debug>(
    what: &str,
    within: Duration,
    every: Duration,
    mut observe: impl FnMut() -> V,
    mut done: impl FnMut(&V) -> bool,
    context: impl FnOnce() -> String,
) -> V {
    let started = Instant::now();
    loop {
        let seen = observe();
        if done(&seen) {
            return seen;
        }
        if started.elapsed() >= within {
            // A page or a log can be long: its start says enough.
            let mut shown = format!("{seen:#?}");
            if let Some((cut, _)) = shown.char_indices().nth(8000) {
                let more = shown.len() - cut;
                shown.truncate(cut);
                shown.push_str(&format!("… ({more} more bytes)"));
            }
            panic!("timed out after {within:?} waiting for {what}\nlast seen: {shown}\n{}", context());
        }
        std::thread::sleep(every);
    }
}

/// [`wait_until_with`] every [`POLL`], with nothing more to say on a timeout.
#[track_caller]
pub fn wait_until<V: std::fmt::Debug>(
    what: &str,
    within: Duration,
    observe: impl FnMut() -> V,
    done: impl FnMut(&V) -> bool,
) -> V {
    wait_until_with(what, within, POLL, observe, done, String::new)
}

/// Waits until `condition` holds (polled every [`POLL`]); for conditions with no value worth
/// showing on a timeout.
#[track_caller]
pub fn wait_for(what: &str, within: Duration, mut condition: impl FnMut() -> bool) {
    wait_until(what, within, &mut condition, |held| *held);
}

pub fn example_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("example-repo")
}

/// A scratch repository in a temporary directory.
pub struct Repo {
    dir: tempfile::TempDir,
    git: bool,
}

/// What a `strata` run printed and returned.
pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    #[track_caller]
    pub fn ok(self) -> Self {
        assert_eq!(self.code, 0, "expected success\nstdout:\n{}\nstderr:\n{}", self.stdout, self.stderr);
        self
    }
}

fn copy_dir(from: &Path, to: &Path) {
    fs::create_dir_all(to).unwrap();
    for entry in fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            fs::copy(entry.path(), target).unwrap();
        }
    }
}

fn git(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .args(["-c", "user.name=Strata Test", "-c", "user.email=test@strata.invalid", "-c", "commit.gpgsign=false"])
        .args(args)
        .current_dir(dir)
        .output()
        .expect("git runs");
    assert!(out.status.success(), "git {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

impl Repo {
    /// The example repository, committed as the first commit of a new Git repository.
    pub fn example() -> Repo {
        let repo = Repo::plain_example();
        git(repo.path(), &["init", "-q", "-b", "main"]);
        let repo = Repo { git: true, ..repo };
        repo.commit("example");
        repo
    }

    /// The example repository as a plain directory, no Git.
    pub fn plain_example() -> Repo {
        let dir = tempfile::tempdir().unwrap();
        copy_dir(&example_dir(), dir.path());
        Repo { dir, git: false }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn read(&self, file: &str) -> String {
        fs::read_to_string(self.path().join(file)).unwrap()
    }

    pub fn write(&self, file: &str, text: &str) -> &Self {
        let path = self.path().join(file);
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(path, text).unwrap();
        self
    }

    /// Replaces `from` with `to` in `file`; `from` must be there, so a fixture cannot silently
    /// stop testing what it says.
    #[track_caller]
    pub fn edit(&self, file: &str, from: &str, to: &str) -> &Self {
        let text = self.read(file);
        assert!(text.contains(from), "{file} does not contain {from:?}");
        self.write(file, &text.replacen(from, to, 1))
    }

    pub fn remove(&self, file: &str) -> &Self {
        let path = self.path().join(file);
        if path.is_dir() {
            fs::remove_dir_all(path).unwrap();
        } else {
            fs::remove_file(path).unwrap();
        }
        self
    }

    pub fn symlink(&self, target: &str, link: &str) -> &Self {
        let path = self.path().join(link);
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::os::unix::fs::symlink(target, path).unwrap();
        self
    }

    /// Commits everything and returns the new commit's id.
    pub fn commit(&self, message: &str) -> String {
        assert!(self.git, "not a Git repository");
        git(self.path(), &["add", "-A"]);
        git(self.path(), &["commit", "-q", "--allow-empty", "-m", message]);
        git(self.path(), &["rev-parse", "HEAD"])
    }

    /// The commit the branch is at.
    pub fn head(&self) -> String {
        git(self.path(), &["rev-parse", "HEAD"])
    }

    /// Commits everything as `author` (`Name <email>`), not as the test's own identity.
    pub fn commit_as(&self, author: &str, message: &str) -> String {
        assert!(self.git, "not a Git repository");
        git(self.path(), &["add", "-A"]);
        git(self.path(), &["commit", "-q", "--allow-empty", "--author", author, "-m", message]);
        git(self.path(), &["rev-parse", "HEAD"])
    }

    /// Runs `strata <args> --repo <this repository>`.
    pub fn strata(&self, args: &[&str]) -> Run {
        strata_with_env(args, self.path(), &[])
    }

    pub fn strata_env(&self, args: &[&str], env: &[(&str, &str)]) -> Run {
        strata_with_env(args, self.path(), env)
    }
}

pub fn strata_with_env(args: &[&str], repo: &Path, env: &[(&str, &str)]) -> Run {
    let mut command = Command::new(env!("CARGO_BIN_EXE_strata"));
    command.args(args).arg("--repo").arg(repo).env("NO_COLOR", "1");
    for (k, v) in env {
        command.env(k, v);
    }
    let out = command.output().expect("strata runs");
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8(out.stdout).unwrap(),
        stderr: String::from_utf8(out.stderr).unwrap(),
    }
}

/// Serves `handler` on `listener` from a thread of its own (HTTP/1.1), over TLS when `tls` is
/// given. Returns the base URL (`http://` or `https://` and 127.0.0.1:port).
pub fn serve<H, F>(listener: std::net::TcpListener, tls: Option<Arc<rustls::ServerConfig>>, handler: H) -> String
where
    H: Fn(hyper::Request<Incoming>) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = Result<hyper::Response<Full<Bytes>>, Infallible>> + Send + 'static,
{
    listener.set_nonblocking(true).unwrap();
    let scheme = if tls.is_some() { "https" } else { "http" };
    let url = format!("{scheme}://{}", listener.local_addr().unwrap());
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
        runtime.block_on(async move {
            let listener = tokio::net::TcpListener::from_std(listener).unwrap();
            let acceptor = tls.map(tokio_rustls::TlsAcceptor::from);
            loop {
                let Ok((stream, _)) = listener.accept().await else { continue };
                let (handler, acceptor) = (handler.clone(), acceptor.clone());
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(handler);
                    let http = hyper::server::conn::http1::Builder::new();
                    match acceptor {
                        Some(acceptor) => {
                            // A refused handshake is what some tests are about: nothing to serve.
                            let Ok(stream) = acceptor.accept(stream).await else { return };
                            let _ = http.serve_connection(hyper_util::rt::TokioIo::new(stream), service).await;
                        }
                        None => {
                            let _ = http.serve_connection(hyper_util::rt::TokioIo::new(stream), service).await;
                        }
                    }
                });
            }
        });
    });
    url
}
