//! A running `strata run` for end-to-end tests: its own state directory and host config, raw
//! HTTP to its listen address, and its CLI.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::Value;

use super::Repo;

pub const AWS_1_0_0: &str = "profiles/aws-profile/1.0.0/profile.yaml";
pub const AWS_CLUSTER: &str = "clusters/aws-cluster.yaml";
pub const TOKEN: &str = "test-api-token";
pub const HOOK_SECRET: &str = "It's a Secret to Everybody";

/// A running daemon with its own state directory and host config.
pub struct Daemon {
    pub dir: tempfile::TempDir,
    pub config: PathBuf,
    pub child: Option<Child>,
    /// Extra environment for the daemon process (fault injection).
    pub env: Vec<(String, String)>,
}

impl Daemon {
    /// Writes a host config (`repository` and `targets` as given) and starts `strata run`.
    pub fn start(repository: &str, targets: &str) -> Daemon {
        Daemon::start_with(repository, targets, "")
    }

    /// As [`Daemon::start`], with more host configuration (a `status` section).
    pub fn start_with(repository: &str, targets: &str, extra: &str) -> Daemon {
        Daemon::start_env(repository, targets, extra, &[])
    }

    /// As [`Daemon::start_with`], with environment variables for the daemon.
    pub fn start_env(repository: &str, targets: &str, extra: &str, env: &[(&str, &str)]) -> Daemon {
        let mut daemon = Daemon::configure(repository, targets, extra);
        daemon.env = env.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        daemon.spawn();
        daemon
    }

    /// Writes `config` as the whole host config (`state_dir` and `listen` added) and starts `strata
    /// run` with `env`; waits until it listens, not until it is ready (a daemon given a broken
    /// setting never is).
    pub fn start_config(config: &str, env: &[(&str, &str)]) -> Daemon {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("strata.yaml");
        let mut daemon = Daemon { dir, config: path, child: None, env: Vec::new() };
        daemon.rewrite(config);
        daemon.env = env.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        daemon.launch();
        daemon.wait_for("the daemon to listen", Duration::from_secs(20), |d| d.get("/readyz").0 != 0);
        daemon
    }

    /// Replaces a host config [`Daemon::start_config`] wrote (keeping `state_dir` and `listen`)
    /// and sends SIGHUP.
    pub fn reload(&self, config: &str) {
        self.rewrite(config);
        self.hangup();
    }

    fn rewrite(&self, config: &str) {
        std::fs::write(&self.config, format!("{config}state_dir: ./state\nlisten: 127.0.0.1:0\n")).unwrap();
    }

    /// Writes the host config and the secrets it names, and starts nothing.
    pub fn configure(repository: &str, targets: &str, extra: &str) -> Daemon {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("api-token"), format!("{TOKEN}\n")).unwrap();
        std::fs::write(dir.path().join("hook-secret"), HOOK_SECRET).unwrap();
        let config = dir.path().join("strata.yaml");
        std::fs::write(
            &config,
            format!(
                "repository: {repository}\nstate_dir: ./state\nlisten: 127.0.0.1:0\napi: {{ token_file: ./api-token }}\nwebhooks: {{ github_secret_file: ./hook-secret, gitea_secret_file: ./hook-secret, gitlab_token_file: ./hook-secret }}\ndrift: {{ interval: 1h }}\napply: {{ health_timeout: 2s }}\n{extra}targets:\n{targets}"
            ),
        )
        .unwrap();
        Daemon { dir, config, child: None, env: Vec::new() }
    }

    /// Replaces the `api` section with the shared token and named ones, `(name, group)`: each
    /// reads `./NAME-token`, which holds `NAME-secret`. For a daemon configured, not started.
    pub fn name_tokens(&mut self, tokens: &[(&str, &str)]) {
        let mut named = Vec::new();
        for (name, group) in tokens {
            std::fs::write(self.dir.path().join(format!("{name}-token")), format!("{name}-secret\n")).unwrap();
            named.push(format!("{{ name: {name}, token_file: ./{name}-token, groups: [{group}] }}"));
        }
        let config = std::fs::read_to_string(&self.config).unwrap();
        let start = config.find("api: {").unwrap();
        let end = start + config[start..].find('\n').unwrap();
        let api = format!("api: {{ token_file: ./api-token, tokens: [{}] }}", named.join(", "));
        std::fs::write(&self.config, format!("{}{api}{}", &config[..start], &config[end..])).unwrap();
    }

    pub fn spawn(&mut self) {
        self.spawn_under(&[]);
    }

    /// Starts `strata run` through `wrapper` (e.g. `prlimit --nofile=…`, which execs it: the
    /// daemon keeps the wrapper's process id), and waits until it is ready.
    pub fn spawn_under(&mut self, wrapper: &[&str]) {
        self.launch_under(wrapper);
        self.wait_for("the daemon to be ready", Duration::from_secs(20), |d| d.get("/readyz").0 == 200);
    }

    /// Starts the process without waiting for it to be ready.
    pub fn launch(&mut self) {
        self.launch_under(&[]);
    }

    fn launch_under(&mut self, wrapper: &[&str]) {
        let log =
            std::fs::OpenOptions::new().create(true).append(true).open(self.dir.path().join("daemon.log")).unwrap();
        let mut command = match wrapper.split_first() {
            Some((program, args)) => {
                let mut command = Command::new(program);
                command.args(args).arg(env!("CARGO_BIN_EXE_strata"));
                command
            }
            None => Command::new(env!("CARGO_BIN_EXE_strata")),
        };
        // The proxy settings a daemon sees are its test's alone.
        for name in
            ["HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy", "NO_PROXY", "no_proxy"]
        {
            command.env_remove(name);
        }
        let child = command
            .args(["run", "--config"])
            .arg(&self.config)
            .env("RUST_LOG", "info")
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        self.child = Some(child);
    }

    /// Whether the process is still running.
    pub fn alive(&mut self) -> bool {
        self.child.as_mut().is_some_and(|c| c.try_wait().unwrap().is_none())
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    /// The token file the daemon reads (rewrite it to change the API token).
    pub fn token_file(&self) -> PathBuf {
        self.dir.path().join("api-token")
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("daemon.log")).unwrap_or_default()
    }

    pub fn address(&self) -> Option<String> {
        std::fs::read_to_string(self.dir.path().join("state/listen-address")).ok()
    }

    pub fn out(&self, path: &str) -> PathBuf {
        self.dir.path().join("out").join(path)
    }

    /// Raw HTTP, so tests can send exactly the headers forges send: (status, body).
    pub fn request(&self, method: &str, path: &str, headers: &[(&str, &str)], body: &str) -> (u16, String) {
        let (code, _, body) = self.raw(method, path, headers, body);
        (code, body)
    }

    pub fn get(&self, path: &str) -> (u16, String) {
        self.request("GET", path, &[], "")
    }

    pub fn strata(&self, args: &[&str]) -> super::Run {
        let mut all: Vec<&str> = args.to_vec();
        all.extend(["--config", self.config.to_str().unwrap()]);
        let out = Command::new(env!("CARGO_BIN_EXE_strata")).args(&all).env("USER", "alice").output().unwrap();
        super::Run {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    /// Waits until every cluster of the example repository is applied.
    #[track_caller]
    pub fn wait_example_applied(&self, within: Duration) {
        self.wait_for("every cluster applied", within, |d| {
            ["aws-cluster", "aws-staging", "edge-berlin", "edge-lab"]
                .iter()
                .all(|c| d.cluster(c)["cluster"]["sync"] == "applied")
        });
    }

    /// Sets `drift.interval` (1h as configured) before the daemon is spawned.
    pub fn set_drift_interval(&self, interval: &str) {
        let config = std::fs::read_to_string(&self.config).unwrap();
        let changed = config.replace("drift: { interval: 1h }", &format!("drift: {{ interval: {interval} }}"));
        std::fs::write(&self.config, changed).unwrap();
    }

    pub fn cluster(&self, name: &str) -> Value {
        let (code, body) = self.get(&format!("/api/v1/clusters/{name}"));
        if code != 200 {
            return Value::Null;
        }
        serde_json::from_str(&body).unwrap_or(Value::Null)
    }

    #[track_caller]
    pub fn wait_for(&self, what: &str, timeout: Duration, mut done: impl FnMut(&Daemon) -> bool) {
        super::wait_until_with(what, timeout, super::POLL, || done(self), |held| *held, || self.log_section());
    }

    /// The logs of several replicas, for a failure message.
    pub fn logs_of<'a>(replicas: impl IntoIterator<Item = &'a Daemon>) -> String {
        let logs: Vec<String> =
            replicas.into_iter().enumerate().map(|(i, d)| format!("--- replica {i} ---\n{}", d.log())).collect();
        logs.join("\n")
    }

    /// The daemon's log, for a failure message.
    pub fn log_section(&self) -> String {
        format!("--- daemon log ---\n{}", self.log())
    }

    /// `/api/v1/revision`: the head evaluated, the evaluations of late, the clusters reconciling
    /// (null when the daemon does not answer).
    pub fn revision(&self) -> Value {
        let bearer = format!("Bearer {TOKEN}");
        let (mut code, mut body) = self.request("GET", "/api/v1/revision", &[("Authorization", &bearer)], "");
        if code == 401 {
            // The shared token rotated: reads may be open.
            (code, body) = self.get("/api/v1/revision");
        }
        if code != 200 {
            return Value::Null;
        }
        serde_json::from_str(&body).unwrap_or(Value::Null)
    }

    /// Waits until the daemon has done everything `head` asks of it: evaluated it (loaded or
    /// rejected), evaluates nothing, and has no cluster left to apply — seen on three polls in a
    /// row with no evaluation in between (the verdict is recorded a moment before the decisions
    /// go to the workers, and a re-evaluation an apply asks for comes within the polls). What a
    /// test then finds unchanged, this revision did not change.
    #[track_caller]
    pub fn wait_settled(&self, head: &str) {
        self.wait_settled_or(head, &[], String::new);
    }

    /// [`Daemon::wait_settled`] but for `retrying`: clusters whose apply fails or stays unhealthy,
    /// which keep something to apply for good.
    #[track_caller]
    pub fn wait_settled_but(&self, head: &str, retrying: &[&str]) {
        self.wait_settled_or(head, retrying, String::new);
    }

    /// [`Daemon::wait_settled_but`], with more to say on a timeout.
    #[track_caller]
    pub fn wait_settled_or(&self, head: &str, retrying: &[&str], context: impl FnOnce() -> String) {
        let mut quiet = 0;
        let mut last = Value::Null;
        super::wait_until_with(
            &format!("the daemon to settle on {head}"),
            Duration::from_secs(60),
            Duration::from_millis(150),
            || {
                let r = self.revision();
                let done = r["head"] == head
                    && r["evaluating"].is_null()
                    && r["reconciling"].as_array().is_some_and(|a| a.iter().all(|c| retrying.iter().any(|r| c == r)))
                    && r["evaluations"][0]["head"] == head;
                let same = r["evaluations"][0] == last["evaluations"][0]
                    && r["evaluations"].as_array().map(Vec::len) == last["evaluations"].as_array().map(Vec::len);
                quiet = if done && same { quiet + 1 } else { 0 };
                last = r.clone();
                (quiet, r)
            },
            |(quiet, _)| *quiet >= 3,
            || format!("{}\n{}", context(), self.log_section()),
        );
    }

    /// A sequence point: has the daemon decide again on its head (resuming `cluster`, which is
    /// not suspended, changes nothing else) and waits until it has, and is settled. Triggers are
    /// taken in order, so whatever a request before this one set off has been acted on by then.
    #[track_caller]
    pub fn wait_reevaluated(&self, cluster: &str) {
        self.wait_reevaluated_but(cluster, &[]);
    }

    /// [`Daemon::wait_reevaluated`], settled but for `retrying` (see [`Daemon::wait_settled_but`]).
    #[track_caller]
    pub fn wait_reevaluated_but(&self, cluster: &str, retrying: &[&str]) {
        let before = self.revision();
        let newest = before["evaluations"][0]["started_ms"].as_i64().unwrap_or(0);
        let run = self.strata(&["resume", cluster]);
        assert_eq!(run.code, 0, "strata resume {cluster}: {}{}", run.stdout, run.stderr);
        let after = super::wait_until_with(
            &format!("a new evaluation after resuming {cluster}"),
            Duration::from_secs(30),
            super::POLL,
            || self.revision(),
            |r| {
                r["evaluations"].as_array().is_some_and(|all| {
                    all.iter().any(|e| e["started_ms"].as_i64() > Some(newest) && e["verdict"] != "evaluating")
                })
            },
            || self.log_section(),
        );
        self.wait_settled_but(after["evaluations"][0]["head"].as_str().expect("a head evaluated"), retrying);
    }

    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill(); // SIGKILL
            let _ = child.wait();
        }
    }

    /// SIGHUP: the daemon reads its API tokens (and proxy and TLS material) again.
    pub fn hangup(&self) {
        let _ = Command::new("kill").args(["-HUP", &self.pid().to_string()]).status();
    }

    pub fn terminate(&mut self) -> std::process::ExitStatus {
        let child = self.child.take().expect("running");
        let _ = Command::new("kill").args(["-TERM", &child.id().to_string()]).status();
        let mut child = child;
        child.wait().unwrap()
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// The hex HMAC-SHA256 of `body` with the webhook secret, as GitHub and Gitea sign deliveries.
pub fn signature(body: &str) -> String {
    use hmac::{Hmac, KeyInit, Mac};
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(HOOK_SECRET.as_bytes()).unwrap();
    mac.update(body.as_bytes());
    mac.finalize().into_bytes().iter().map(|b| format!("{b:02x}")).collect()
}

pub fn directory_targets(names: &[(&str, &str)]) -> String {
    names.iter().map(|(target, dir)| format!("  {target}: {{ directory: ./out/{dir} }}\n")).collect()
}

pub fn example_targets() -> String {
    directory_targets(&[
        ("aws-cluster", "aws-cluster"),
        ("aws-staging", "aws-staging"),
        ("edge-berlin", "edge-berlin"),
        ("lab", "lab"),
    ])
}

pub fn file(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

pub fn local(repo: &Repo) -> String {
    format!("{{ url: {}, branch: main, interval: 1h }}", repo.path().display())
}

/// The session cookie from a login answer.
pub fn session_cookie(response_headers: &str) -> String {
    response_headers
        .lines()
        .find_map(|l| l.strip_prefix("set-cookie: ").or_else(|| l.strip_prefix("Set-Cookie: ")))
        .and_then(|c| c.split(';').next())
        .unwrap_or("")
        .to_string()
}

impl Daemon {
    /// Raw HTTP with the Host a client of this address sends (the daemon answers no other):
    /// (status, head, body); status 0 when the daemon could not be reached.
    pub fn raw(&self, method: &str, path: &str, headers: &[(&str, &str)], body: &str) -> (u16, String, String) {
        let Some(address) = self.address() else { return (0, String::new(), String::new()) };
        let address = address.trim();
        self.raw_to(method, path, &[("Host", address)], headers, body)
    }

    /// Raw HTTP with exactly the `head` headers given (no Host unless there is one in it), then
    /// `headers`.
    pub fn raw_to(
        &self,
        method: &str,
        path: &str,
        head: &[(&str, &str)],
        headers: &[(&str, &str)],
        body: &str,
    ) -> (u16, String, String) {
        let Some(address) = self.address() else { return (0, String::new(), String::new()) };
        let Ok(mut stream) = std::net::TcpStream::connect(address.trim()) else {
            return (0, String::new(), String::new());
        };
        // A daemon that stopped answering fails the wait that asked, instead of hanging the test.
        stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut request = format!("{method} {path} HTTP/1.1\r\n");
        for (k, v) in head.iter().chain([("Connection", "close")].iter()).chain(headers) {
            request.push_str(&format!("{k}: {v}\r\n"));
        }
        request.push_str(&format!("Content-Length: {}\r\n\r\n{body}", body.len()));
        if stream.write_all(request.as_bytes()).is_err() {
            return (0, String::new(), String::new());
        }
        let mut response = String::new();
        let _ = stream.read_to_string(&mut response);
        let code = response.split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
        let (head, body) = response.split_once("\r\n\r\n").unwrap_or((&response, ""));
        (code, head.to_string(), body.to_string())
    }
}
