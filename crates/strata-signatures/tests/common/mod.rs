//! Real git, ssh-keygen and gpg in temporary directories: every signature
//! these tests verify was made by the tools users sign with.
#![allow(dead_code)]

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use tempfile::TempDir;

/// Whether every tool is on PATH; prints why the test is skipped if not.
pub fn have(tools: &[&str]) -> bool {
    for tool in tools {
        let probe = match *tool {
            "ssh-keygen" => Command::new(tool).arg("-?").output(),
            _ => Command::new(tool).arg("--version").output(),
        };
        if probe.is_err() {
            eprintln!("skipping: `{tool}` is not installed");
            return false;
        }
    }
    true
}

fn check(what: &str, out: Output) -> Output {
    assert!(
        out.status.success(),
        "{what} failed: {}\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// A sandbox: a HOME with no user configuration, UTC, C locale.
pub struct Sandbox {
    pub dir: TempDir,
}

impl Sandbox {
    pub fn new() -> Self {
        Sandbox { dir: tempfile::Builder::new().prefix("sig").tempdir().expect("temp dir") }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn command(&self, program: &str) -> Command {
        let mut cmd = Command::new(program);
        cmd.current_dir(self.path())
            .env("HOME", self.path())
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .env("GIT_CONFIG_GLOBAL", "/dev/null")
            .env("TZ", "UTC")
            .env("LC_ALL", "C")
            .env_remove("GNUPGHOME")
            .env_remove("GIT_DIR")
            .env_remove("GIT_WORK_TREE");
        cmd
    }

    pub fn write(&self, name: &str, contents: impl AsRef<[u8]>) -> PathBuf {
        let path = self.path().join(name);
        std::fs::write(&path, contents).expect("write");
        path
    }
}

/// A git repository whose commits are signed by whatever `-c` options a
/// commit is given.
pub struct Repo {
    pub sandbox: Sandbox,
    pub gnupghome: Option<PathBuf>,
    counter: std::cell::Cell<u32>,
}

impl Repo {
    pub fn new() -> Self {
        let repo = Repo { sandbox: Sandbox::new(), gnupghome: None, counter: 0.into() };
        repo.git(&["init", "-q", "-b", "main"]);
        repo.git(&["config", "user.name", "Dev Eloper"]);
        repo.git(&["config", "user.email", "dev@example.com"]);
        repo.git(&["config", "commit.gpgsign", "false"]);
        repo
    }

    pub fn with_gnupg(gpg: &Gpg) -> Self {
        let mut repo = Repo::new();
        repo.gnupghome = Some(gpg.home.path().to_owned());
        repo
    }

    pub fn path(&self) -> &Path {
        self.sandbox.path()
    }

    pub fn command(&self, args: &[&str]) -> Command {
        let mut cmd = self.sandbox.command("git");
        if let Some(home) = &self.gnupghome {
            cmd.env("GNUPGHOME", home);
        }
        cmd.args(args);
        cmd
    }

    pub fn git(&self, args: &[&str]) -> Vec<u8> {
        check(&format!("git {args:?}"), self.command(args).output().expect("run git")).stdout
    }

    pub fn git_text(&self, args: &[&str]) -> String {
        String::from_utf8(self.git(args)).expect("utf-8").trim().to_owned()
    }

    /// Commits a change to a fresh file, with extra `git -c` settings (for
    /// signing) and extra `git commit` arguments; returns the commit id.
    pub fn commit(&self, message: &str, config: &[&str], args: &[&str]) -> String {
        self.commit_env(message, config, args, &[])
    }

    pub fn commit_env(&self, message: &str, config: &[&str], args: &[&str], env: &[(&str, &str)]) -> String {
        let n = self.counter.get() + 1;
        self.counter.set(n);
        self.sandbox.write(&format!("file{n}.txt"), format!("change {n}\n"));
        self.git(&["add", "."]);
        let mut full: Vec<&str> = Vec::new();
        for c in config {
            full.extend(["-c", c]);
        }
        full.extend(["commit", "-q", "-m", message]);
        full.extend(args);
        let mut cmd = self.command(&full);
        for (k, v) in env {
            cmd.env(k, v);
        }
        check("git commit", cmd.output().expect("run git commit"));
        self.git_text(&["rev-parse", "HEAD"])
    }

    pub fn cat(&self, id: &str) -> Vec<u8> {
        let kind = self.git_text(&["cat-file", "-t", id]);
        self.git(&["cat-file", &kind, id])
    }

    /// Stores raw object bytes as they are (even if altered) and returns the id.
    pub fn write_object(&self, kind: &str, raw: &[u8]) -> String {
        let mut child = self
            .command(&["hash-object", "-t", kind, "-w", "--literally", "--stdin"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn git hash-object");
        child.stdin.take().expect("stdin").write_all(raw).expect("write object");
        let out = check("git hash-object", child.wait_with_output().expect("wait"));
        String::from_utf8(out.stdout).expect("utf-8").trim().to_owned()
    }

    /// `git verify-commit` / `git verify-tag` with the given `-c` settings:
    /// whether git accepts the signature.
    pub fn git_verifies(&self, kind: &str, id: &str, config: &[&str]) -> bool {
        let mut full: Vec<&str> = Vec::new();
        for c in config {
            full.extend(["-c", c]);
        }
        let verb = if kind == "tag" { "verify-tag" } else { "verify-commit" };
        full.extend([verb, id]);
        let out = self.command(&full).output().expect("run git verify");
        out.status.success()
    }
}

/// An SSH key pair made by ssh-keygen.
pub struct SshKey {
    pub private: PathBuf,
    /// The public key line, `type base64 comment`.
    pub public: String,
}

pub fn ssh_keygen(sandbox: &Sandbox, name: &str, kind: &[&str]) -> SshKey {
    let private = sandbox.path().join(name);
    let mut args = vec!["-q", "-N", "", "-C", name, "-f", private.to_str().expect("utf-8 path")];
    args.extend(kind);
    check("ssh-keygen", sandbox.command("ssh-keygen").args(&args).output().expect("run ssh-keygen"));
    let public = std::fs::read_to_string(private.with_extension("pub")).expect("read .pub");
    SshKey { private, public: public.trim().to_owned() }
}

impl SshKey {
    /// `git -c` settings that sign with this key.
    pub fn git_config(&self) -> Vec<String> {
        vec!["gpg.format=ssh".into(), format!("user.signingkey={}", self.private.display())]
    }
}

pub fn strs(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

/// A GnuPG home of its own; its agent is stopped when dropped.
pub struct Gpg {
    pub home: TempDir,
    sandbox: Sandbox,
}

impl Gpg {
    pub fn new() -> Self {
        let home = tempfile::Builder::new().prefix("gh").tempdir().expect("gnupg home");
        Gpg { home, sandbox: Sandbox::new() }
    }

    pub fn command(&self, args: &[&str]) -> Command {
        let mut cmd = self.sandbox.command("gpg");
        cmd.env("GNUPGHOME", self.home.path())
            .args(["--batch", "--yes", "--pinentry-mode", "loopback", "--passphrase", ""])
            .args(args);
        cmd
    }

    pub fn run(&self, args: &[&str]) -> Vec<u8> {
        check(&format!("gpg {args:?}"), self.command(args).output().expect("run gpg")).stdout
    }

    /// Runs an interactive `--edit-key` session fed from `answers`.
    pub fn edit_key(&self, extra: &[&str], fingerprint: &str, answers: &str) {
        let mut args = extra.to_vec();
        args.extend(["--command-fd", "0", "--status-fd", "2", "--edit-key", fingerprint]);
        let mut child = self
            .command(&args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn gpg");
        child.stdin.take().expect("stdin").write_all(answers.as_bytes()).expect("answers");
        check("gpg --edit-key", child.wait_with_output().expect("wait"));
    }

    /// Generates a key without passphrase; returns its primary fingerprint.
    pub fn generate(&self, uid: &str, algo: &str, usage: &str, extra: &[&str]) -> String {
        let mut args = extra.to_vec();
        args.extend(["--quick-gen-key", uid, algo, usage, "never"]);
        self.run(&args);
        self.fingerprint(uid)
    }

    pub fn fingerprint(&self, query: &str) -> String {
        self.fingerprints(query).into_iter().next().expect("a fingerprint")
    }

    /// Primary and subkey fingerprints, in order.
    pub fn fingerprints(&self, query: &str) -> Vec<String> {
        let out = self.run(&["--with-colons", "--list-keys", query]);
        String::from_utf8(out)
            .expect("utf-8")
            .lines()
            .filter(|l| l.starts_with("fpr:"))
            .map(|l| l.split(':').nth(9).expect("fpr field").to_owned())
            .collect()
    }

    pub fn export(&self, query: &[&str], armor: bool) -> Vec<u8> {
        let mut args = vec!["--export"];
        if armor {
            args.insert(0, "--armor");
        }
        args.extend(query);
        let out = self.run(&args);
        assert!(!out.is_empty(), "nothing exported for {query:?}");
        out
    }

    /// The revocation certificate gpg made with the key, usable as is
    /// (gpg puts a `:` before its BEGIN line against accidental import).
    pub fn revocation_certificate(&self, fingerprint: &str) -> Vec<u8> {
        let path = self.home.path().join("openpgp-revocs.d").join(format!("{fingerprint}.rev"));
        let text = std::fs::read_to_string(path).expect("revocation certificate");
        text.replace(":-----BEGIN PGP PUBLIC KEY BLOCK-----", "-----BEGIN PGP PUBLIC KEY BLOCK-----").into_bytes()
    }

    pub fn import(&self, data: &[u8]) {
        let path = self.sandbox.write("import.asc", data);
        self.run(&["--import", path.to_str().expect("utf-8 path")]);
    }

    /// `git -c` settings that sign with this key.
    pub fn git_config(&self, fingerprint: &str) -> Vec<String> {
        vec!["gpg.format=openpgp".into(), format!("user.signingkey={fingerprint}")]
    }
}

impl Drop for Gpg {
    fn drop(&mut self) {
        let _ = self.sandbox.command("gpgconf").env("GNUPGHOME", self.home.path()).args(["--kill", "all"]).output();
    }
}

/// Replaces the first occurrence of `from` in `raw`.
pub fn replace_once(raw: &[u8], from: &[u8], to: &[u8]) -> Vec<u8> {
    let at = raw.windows(from.len()).position(|w| w == from).unwrap_or_else(|| {
        panic!("{:?} not found in {:?}", String::from_utf8_lossy(from), String::from_utf8_lossy(raw))
    });
    [&raw[..at], to, &raw[at + from.len()..]].concat()
}

/// The `gpgsig` header of a raw commit, with its continuation lines.
pub fn gpgsig_header(raw: &[u8]) -> Vec<u8> {
    let text = String::from_utf8_lossy(raw);
    let mut out = String::new();
    let mut inside = false;
    for line in text.split_inclusive('\n') {
        if line.starts_with("gpgsig ") {
            inside = true;
        } else if !line.starts_with(' ') {
            inside = false;
        }
        if inside {
            out.push_str(line);
        }
    }
    assert!(!out.is_empty(), "no gpgsig header");
    out.into_bytes()
}

/// Puts an armored signature into a commit's header as git's
/// `add_header_signature` does: before the blank line, continuation lines
/// indented by one space.
pub fn insert_gpgsig(unsigned: &[u8], signature: &[u8]) -> Vec<u8> {
    let end = unsigned.windows(2).position(|w| w == b"\n\n").expect("header end") + 1;
    let mut header = b"gpgsig".to_vec();
    for line in signature.split_inclusive(|&b| b == b'\n') {
        header.push(b' ');
        header.extend_from_slice(line);
    }
    [&unsigned[..end], &header, &unsigned[end..]].concat()
}
