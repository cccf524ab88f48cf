//! The repository as a supply chain (issue 23), through the real binary: SOPS-encrypted files in
//! layers decrypted with the host's age keys (and checked against the real sops and the npm
//! sops-age), and only commits signed by an allowed key evaluated (real `git commit -S` with
//! ssh-keygen and gpg keys).

use crate::common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::Repo;
use common::daemon::*;
use common::secrets::MARKER;

/// sops' published age test keys (its repository's keys.txt), and their recipients.
const KEY_1: &str = "AGE-SECRET-KEY-1NJT5YCS2LWU4V4QAJQ6R4JNU7LXPDX602DZ9NUFANVU5GDTGUWCQ5T59M6";
const RECIPIENT_1: &str = "age1yt3tfqlfrwdwx0z0ynwplcr6qxcxfaqycuprpmy89nr83ltx74tqdpszlw";
const KEY_2: &str = "AGE-SECRET-KEY-1T0Z66WSXS6RMNCPSL7P2E8N4Q7SUD8VMG9ND27S08JL7Y2XAU9EQECHDS7";
const RECIPIENT_2: &str = "age1tmaae3ld5vpevmsh5yacsauzx8jetg300mpvc4ugp5zr5l6ssq9sla97ep";

/// The values sealed in the repository: none may show anywhere but `strata render` and the target.
const TOKEN: &str = "sealed-Tok3n-{{ not.a.template }}-9d1f";
const NEW_TOKEN: &str = "sealed-Tok3n-rotated-5be2";
const SEALED: &str = "packs/hello-universe/manifests/sealed.yaml";

fn secret(token: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Secret\nmetadata:\n  name: sealed-credentials\ntype: Opaque\nstringData:\n  token: \"{token}\"\n"
    )
}

/// An environment with no age key of the user's: strata reads only what a test gives it.
fn no_user_keys(home: &Path) -> Vec<(&'static str, String)> {
    vec![
        ("XDG_CONFIG_HOME", home.display().to_string()),
        ("HOME", home.display().to_string()),
        ("SOPS_AGE_KEY_FILE", String::new()),
        ("SOPS_AGE_KEY", String::new()),
    ]
}

fn run(repo: &Repo, home: &Path, args: &[&str], more: &[(&str, &str)]) -> common::Run {
    let mut env: Vec<(&str, String)> = no_user_keys(home);
    env.extend(more.iter().map(|(k, v)| (*k, v.to_string())));
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    repo.strata_env(args, &env)
}

/// `strata secret encrypt` of `plain` (named like `to`, whose extension decides the format) for
/// `recipients`, written to `to` in the repository.
fn seal(repo: &Repo, plain: &str, to: &str, recipients: &[&str], regex: Option<&str>) {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join(Path::new(to).file_name().unwrap());
    std::fs::write(&input, plain).unwrap();
    let output = repo.path().join(to);
    std::fs::create_dir_all(output.parent().unwrap()).unwrap();
    let mut args: Vec<String> = vec!["secret".into(), "encrypt".into(), input.display().to_string()];
    for r in recipients {
        args.extend(["--age".into(), r.to_string()]);
    }
    if let Some(regex) = regex {
        args.extend(["--encrypted-regex".into(), regex.into()]);
    }
    args.extend(["--output".into(), output.display().to_string()]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    repo.strata(&args).ok();
    let written = std::fs::read_to_string(&output).unwrap();
    assert!(written.contains("sops") && !written.contains("sealed-Tok3n"), "{written}");
}

fn key_file(dir: &Path, name: &str, keys: &[&str]) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, keys.iter().map(|k| format!("{k}\n")).collect::<String>()).unwrap();
    path
}

/// Changes one character of the first encrypted value of `file`: the value no longer opens.
fn tamper(repo: &Repo, file: &str) {
    let text = repo.read(file);
    let at = text.find("ENC[AES256_GCM,data:").expect("an encrypted value") + "ENC[AES256_GCM,data:".len();
    let old = text.as_bytes()[at] as char;
    let new = if old == 'A' { 'B' } else { 'A' };
    repo.write(file, &format!("{}{new}{}", &text[..at], &text[at + 1..]));
}

#[test]
fn an_encrypted_secret_in_a_layer_renders_with_its_key_and_is_an_error_naming_file_and_recipients_without() {
    let repo = Repo::example();
    let home = tempfile::tempdir().unwrap();
    let keys = key_file(home.path(), "keys.txt", &[KEY_1]);
    let keys = keys.to_str().unwrap();
    seal(&repo, &secret(TOKEN), SEALED, &[RECIPIENT_1], Some("^(data|stringData)$"));
    repo.commit("a sealed Secret");

    // With the key: decrypted in memory, used as it is (a `{{` in a value is no template).
    let rendered = run(&repo, home.path(), &["render", "aws-cluster", "--age-key-file", keys], &[]).ok();
    assert!(rendered.stdout.contains("name: sealed-credentials"), "{}", rendered.stdout);
    assert!(rendered.stdout.contains(TOKEN), "render shows the value:\n{}", rendered.stdout);
    assert!(!rendered.stdout.contains("sops:") && !rendered.stdout.contains("ENC["), "{}", rendered.stdout);
    run(&repo, home.path(), &["validate"], &[("SOPS_AGE_KEY_FILE", keys)]).ok();

    // Without: error[decrypt] on the file, with the recipient it is encrypted for and what to do.
    let refused = run(&repo, home.path(), &["validate"], &[]);
    assert_eq!(refused.code, 1, "{}", refused.stderr);
    assert!(refused.stderr.contains(&format!("error[decrypt]: {SEALED}")), "{}", refused.stderr);
    assert!(refused.stderr.contains(RECIPIENT_1) && refused.stderr.contains("decryption.age_key_files"));
    assert_eq!(refused.stderr.matches("error[decrypt]").count(), 1, "said once:\n{}", refused.stderr);
    // The wrong key: the recipients, and the key tried.
    let other = key_file(home.path(), "other.txt", &[KEY_2]);
    let wrong = run(&repo, home.path(), &["render", "aws-cluster", "--age-key-file", other.to_str().unwrap()], &[]);
    assert_eq!(wrong.code, 1);
    assert!(wrong.stderr.contains("no age identity opens this file") && wrong.stderr.contains(RECIPIENT_2));

    // A plan of a rotated value: a marker, never the value.
    seal(&repo, &secret(NEW_TOKEN), SEALED, &[RECIPIENT_1], Some("^(data|stringData)$"));
    repo.commit("rotate the sealed token");
    for format in ["text", "json", "markdown"] {
        let plan = run(&repo, home.path(), &["plan", "-o", format, "--age-key-file", keys], &[]).ok();
        let all = format!("{}{}", plan.stdout, plan.stderr);
        assert!(all.contains("sealed-credentials") && all.contains(MARKER), "{format}:\n{all}");
        assert!(!all.contains("sealed-Tok3n"), "{format} shows a sealed value:\n{all}");
    }

    // A value changed in the file (not by encrypting again): refused, the value never shown.
    tamper(&repo, SEALED);
    let tampered = run(&repo, home.path(), &["validate", "--worktree", "--age-key-file", keys], &[]);
    assert_eq!(tampered.code, 1);
    assert!(tampered.stderr.contains(&format!("error[decrypt]: {SEALED}")), "{}", tampered.stderr);
    assert!(tampered.stderr.contains("changed after it was encrypted"), "{}", tampered.stderr);
    assert!(!tampered.stderr.contains("sealed-Tok3n"), "{}", tampered.stderr);

    // An encrypted partial: included into other templates, its values would leave their Secret.
    seal(&repo, "token: x\n", "packs/hello-universe/manifests/_sealed.yaml", &[RECIPIENT_1], None);
    let partial = run(&repo, home.path(), &["validate", "--worktree", "--age-key-file", keys], &[]);
    assert!(partial.stderr.contains("_sealed.yaml") && partial.stderr.contains("cannot be a partial"));

    // `strata secret decrypt` checks a file by hand.
    let path = repo.path().join(SEALED);
    let checked = run(&repo, home.path(), &["secret", "decrypt", path.to_str().unwrap(), "--age-key-file", keys], &[]);
    assert_eq!(checked.code, 1, "{}", checked.stderr);
    assert!(checked.stderr.contains("error[decrypt]"));
}

#[test]
fn a_kustomize_layer_reads_an_encrypted_env_file_through_its_generator() {
    let repo = Repo::example();
    let home = tempfile::tempdir().unwrap();
    let keys = key_file(home.path(), "keys.txt", &[KEY_1]);
    repo.write(
        "packs/sealed/kustomization.yaml",
        "secretGenerator:\n  - name: generated\n    envs: [app.enc.env]\n    options: { disableNameSuffixHash: true }\n",
    );
    seal(&repo, &format!("TOKEN={NEW_TOKEN}\nMODE=prod\n"), "packs/sealed/app.enc.env", &[RECIPIENT_1], None);
    repo.edit(
        "profiles/aws-profile/1.0.0/profile.yaml",
        "  layers:\n",
        "  layers:\n    - name: sealed\n      type: kustomize\n      source: packs/sealed\n      namespace: sealed\n",
    );
    repo.commit("a kustomize layer with an encrypted env file");
    let rendered = run(&repo, home.path(), &["render", "aws-cluster", "--age-key-file", keys.to_str().unwrap()], &[]);
    let rendered = rendered.ok().stdout;
    let b64 = common::secrets::b64(NEW_TOKEN);
    assert!(rendered.contains("name: generated") && rendered.contains(&b64), "{rendered}");

    // Without the key the layer fails naming the file; kustomize never sees the ciphertext.
    let refused = run(&repo, home.path(), &["render", "aws-cluster"], &[]);
    assert_eq!(refused.code, 1);
    assert!(refused.stderr.contains("error[decrypt]: packs/sealed/app.enc.env"), "{}", refused.stderr);
}

fn sops_binary() -> Option<PathBuf> {
    let candidates = [
        std::env::var_os("STRATA_SOPS_BIN").map(PathBuf::from),
        Some(Path::new(env!("CARGO_MANIFEST_DIR")).join("target/test-tools/sops/sops_binary/bin/sops")),
        Some(PathBuf::from("sops")),
    ];
    candidates.into_iter().flatten().find(|p| {
        Command::new(p)
            .arg("--version")
            .env("SOPS_DISABLE_VERSION_CHECK", "true")
            .output()
            .is_ok_and(|o| o.status.success())
    })
}

fn interop_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("crates/strata-sops/tests/interop")
}

#[test]
fn files_encrypted_by_sops_are_read_and_files_strata_encrypts_are_read_by_sops_and_sops_age() {
    let repo = Repo::example();
    let home = tempfile::tempdir().unwrap();
    let keys = key_file(home.path(), "keys.txt", &[KEY_1]);
    let mut checked = 0;

    // strata encrypts (for two recipients); the npm sops-age (an independent implementation) decrypts.
    seal(&repo, &secret(TOKEN), SEALED, &[RECIPIENT_1, RECIPIENT_2], None);
    if interop_dir().join("node_modules/sops-age").is_dir() {
        let out = Command::new("node")
            .arg(interop_dir().join("decrypt.mjs"))
            .arg(repo.path().join(SEALED))
            .arg("yaml")
            .arg(&keys)
            .output()
            .expect("node runs");
        assert!(out.status.success(), "sops-age: {}", String::from_utf8_lossy(&out.stderr));
        let decrypted: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(decrypted["stringData"]["token"], TOKEN, "{decrypted}");
        checked += 1;
    } else {
        println!("SKIPPED sops-age: run npm ci in crates/strata-sops/tests/interop (scripts/test does)");
    }

    let Some(sops) = sops_binary() else {
        println!("SKIPPED the sops tool: not installed (scripts/test installs sops 3.11.0); checked {checked}");
        return;
    };
    let sops_cmd = || {
        let mut c = Command::new(&sops);
        c.env("SOPS_DISABLE_VERSION_CHECK", "true").env("SOPS_AGE_KEY_FILE", &keys).env_remove("SOPS_AGE_KEY");
        c
    };
    // ... and the sops tool decrypts it too.
    let out = sops_cmd().arg("decrypt").arg(repo.path().join(SEALED)).output().unwrap();
    assert!(out.status.success(), "sops: {}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains(TOKEN));

    // sops encrypts (for two recipients, Flux's usual regex); strata decrypts with either key.
    let plain = home.path().join("by-sops.yaml");
    std::fs::write(&plain, secret(NEW_TOKEN).replace("sealed-credentials", "by-sops")).unwrap();
    let out = sops_cmd()
        .args(["encrypt", "--age", &format!("{RECIPIENT_1},{RECIPIENT_2}"), "--encrypted-regex", "^(data|stringData)$"])
        .arg(&plain)
        .output()
        .unwrap();
    assert!(out.status.success(), "sops: {}", String::from_utf8_lossy(&out.stderr));
    repo.write("packs/hello-universe/manifests/by-sops.yaml", &String::from_utf8(out.stdout).unwrap());
    repo.commit("files from sops and strata");
    let second = key_file(home.path(), "second.txt", &[KEY_2]);
    for key in [&keys, &second] {
        let rendered =
            run(&repo, home.path(), &["render", "aws-cluster", "--age-key-file", key.to_str().unwrap()], &[]);
        let rendered = rendered.ok().stdout;
        assert!(rendered.contains("name: by-sops") && rendered.contains(NEW_TOKEN), "{rendered}");
        assert!(rendered.contains(TOKEN), "strata's own file too");
    }
}

#[test]
fn the_daemon_applies_decrypted_secrets_keeps_the_last_good_revision_on_a_tampered_file_and_takes_rotated_keys() {
    let repo = Repo::example();
    seal(&repo, &secret(TOKEN), SEALED, &[RECIPIENT_1], Some("^(data|stringData)$"));
    repo.commit("a sealed Secret");
    let keys_dir = tempfile::tempdir().unwrap();
    let keys = key_file(keys_dir.path(), "age.key", &[KEY_1]);
    let daemon = Daemon::start_with(
        &local(&repo),
        &example_targets(),
        &format!("decryption: {{ age_key_files: [{}] }}\nstatus: {{ provider: git-notes }}\n", keys.display()),
    );
    // aws-staging takes in-place edits at once (aws-cluster holds them for approval).
    let applied = daemon.out("aws-staging/hello-universe/secret.sealed-credentials.yaml");
    let ui = daemon.out("aws-staging/hello-universe/deployment.ui.yaml");
    daemon.wait_for("the sealed Secret applied", Duration::from_secs(15), |_| file(&applied).contains(TOKEN));

    // A tampered file: the revision is rejected, every cluster keeps what it runs.
    repo.edit("clusters/aws-staging.yaml", "hello-universe: { replicas: 2 }", "hello-universe: { replicas: 3 }");
    tamper(&repo, SEALED);
    let tampered = repo.commit("tampered");
    daemon.wait_for("the tampered revision rejected", Duration::from_secs(15), |d| {
        d.get("/api/v1/revision").1.contains(&format!("\"head\": \"{tampered}\""))
            && d.log().contains("Revision rejected")
    });
    assert!(file(&applied).contains(TOKEN), "the last good revision keeps serving");
    assert!(file(&ui).contains("replicas: 2"), "no cluster took the rejected revision");
    let log = daemon.log();
    assert!(log.contains("error[decrypt]") && log.contains(SEALED) && log.contains(RECIPIENT_1), "{log}");
    let status = daemon.strata(&["status"]).stdout;
    assert!(status.contains(&format!("revision {} rejected", &tampered[..7])), "{status}");
    daemon.wait_for("an error status on the tampered commit", Duration::from_secs(15), |_| {
        let notes = notes_on(&repo.path().join(".git"), &tampered);
        notes.contains("error: revision does not load") && notes.contains("cannot decrypt")
    });

    // Keys rotated: the file encrypted for a new key only, which the host learns without a restart.
    seal(&repo, &secret(NEW_TOKEN), SEALED, &[RECIPIENT_2], Some("^(data|stringData)$"));
    let rotated = repo.commit("encrypted for the new key");
    daemon.wait_for("the revision for an unknown key rejected, naming its recipient", Duration::from_secs(15), |d| {
        let revision = d.get("/api/v1/revision").1;
        revision.contains(&format!("\"head\": \"{rotated}\""))
            && revision.contains("rejected")
            && d.log().contains(RECIPIENT_2)
    });
    assert!(file(&applied).contains(TOKEN), "the last good revision keeps serving");
    key_file(keys_dir.path(), "age.key", &[KEY_1, KEY_2]);
    repo.edit("clusters/aws-staging.yaml", "replicas: 3 }", "replicas: 4 }");
    repo.commit("the host has the new key now");
    daemon.wait_for("the rotated Secret applied", Duration::from_secs(15), |_| file(&applied).contains(NEW_TOKEN));
    daemon.wait_for("the rest applied", Duration::from_secs(15), |_| file(&ui).contains("replicas: 4"));

    // Nothing but the target ever saw a value.
    let log = daemon.log();
    assert!(!log.contains("sealed-Tok3n"), "{log}");
    for path in ["/api/v1/revision", "/api/v1/clusters", "/"] {
        let (_, body) = daemon.request("GET", path, &[("Authorization", &format!("Bearer {TOKEN_API}"))], "");
        assert!(!body.contains("sealed-Tok3n"), "{path}: {body}");
    }
}

const TOKEN_API: &str = common::daemon::TOKEN;

fn notes_on(git_dir: &Path, revision: &str) -> String {
    let out = Command::new("git")
        .arg("--git-dir")
        .arg(git_dir)
        .args(["log", "-1", "--notes=strata", "--format=%N", revision])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

// --- Signed commits -----------------------------------------------------------------------------

fn have(tools: &[&str]) -> bool {
    let missing: Vec<&&str> = tools.iter().filter(|t| tools_missing(t)).collect();
    if !missing.is_empty() {
        println!("SKIPPED: {missing:?} not installed (scripts/test installs them)");
        assert!(std::env::var_os("CI").is_none(), "CI runs these with real tools");
    }
    missing.is_empty()
}

fn tools_missing(tool: &str) -> bool {
    let arg = if tool == "ssh-keygen" { "-?" } else { "--version" };
    Command::new(tool).arg(arg).output().is_err()
}

/// Who signs: `git -c` settings, and for gpg its home.
struct Signer {
    config: Vec<String>,
    gnupghome: Option<PathBuf>,
}

/// An ed25519 key made by ssh-keygen in `dir`; its allowed-signers line.
fn ssh_signer(dir: &Path, name: &str) -> (Signer, String) {
    let key = dir.join(name);
    let out = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-C", &format!("{name}@example.com"), "-f"])
        .arg(&key)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let public = std::fs::read_to_string(key.with_extension("pub")).unwrap();
    let mut parts = public.split_whitespace();
    let line = format!("{name}@example.com {} {}\n", parts.next().unwrap(), parts.next().unwrap());
    let signer =
        Signer { config: vec!["gpg.format=ssh".into(), format!("user.signingkey={}", key.display())], gnupghome: None };
    (signer, line)
}

/// A key generated by gpg in a home of its own; its exported public key.
struct Gpg {
    home: tempfile::TempDir,
}

impl Gpg {
    fn new() -> Gpg {
        Gpg { home: tempfile::Builder::new().prefix("gh").tempdir().unwrap() }
    }

    fn run(&self, args: &[&str]) -> Vec<u8> {
        let out = Command::new("gpg")
            .env("GNUPGHOME", self.home.path())
            .args(["--batch", "--yes", "--pinentry-mode", "loopback", "--passphrase", ""])
            .args(args)
            .output()
            .unwrap();
        assert!(out.status.success(), "gpg {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        out.stdout
    }

    fn signer(&self, uid: &str) -> (Signer, Vec<u8>) {
        self.run(&["--quick-gen-key", uid, "ed25519", "sign", "never"]);
        let listing = String::from_utf8(self.run(&["--with-colons", "--list-keys", uid])).unwrap();
        let fpr = listing.lines().find(|l| l.starts_with("fpr:")).unwrap().split(':').nth(9).unwrap().to_string();
        let exported = self.run(&["--armor", "--export", &fpr]);
        let signer = Signer {
            config: vec!["gpg.format=openpgp".into(), format!("user.signingkey={fpr}")],
            gnupghome: Some(self.home.path().to_path_buf()),
        };
        (signer, exported)
    }
}

impl Drop for Gpg {
    fn drop(&mut self) {
        let _ = Command::new("gpgconf").env("GNUPGHOME", self.home.path()).args(["--kill", "all"]).output();
    }
}

fn git(repo: &Repo, args: &[&str], signer: Option<&Signer>) -> String {
    let mut command = Command::new("git");
    command.args(["-c", "user.name=Strata Test", "-c", "user.email=test@strata.invalid"]);
    if let Some(signer) = signer {
        for setting in &signer.config {
            command.args(["-c", setting]);
        }
        if let Some(home) = &signer.gnupghome {
            command.env("GNUPGHOME", home);
        }
    }
    let out = command.args(args).current_dir(repo.path()).output().unwrap();
    assert!(out.status.success(), "git {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

/// Commits everything, signed by `signer` (unsigned with `None`).
fn commit(repo: &Repo, message: &str, signer: Option<&Signer>) -> String {
    git(repo, &["add", "-A"], None);
    let sign = if signer.is_some() { "-S" } else { "--no-gpg-sign" };
    git(repo, &["commit", "-q", "--allow-empty", sign, "-m", message], signer);
    git(repo, &["rev-parse", "HEAD"], None)
}

/// The signed commit `id` again with another tree (HEAD~1's), its signature kept: what a forged
/// commit looks like. Returns the new commit's id, made the branch head.
fn swap_tree(repo: &Repo, id: &str) -> String {
    let raw = git(repo, &["cat-file", "commit", id], None);
    let other_tree = git(repo, &["rev-parse", &format!("{id}~1^{{tree}}")], None);
    let tree_line = raw.lines().next().unwrap().to_string();
    let forged = raw.replacen(&tree_line, &format!("tree {other_tree}"), 1) + "\n";
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("commit");
    std::fs::write(&path, forged).unwrap();
    let new = git(repo, &["hash-object", "-t", "commit", "-w", path.to_str().unwrap()], None);
    git(repo, &["update-ref", "refs/heads/main", &new], None);
    git(repo, &["reset", "-q", "--hard", &new], None);
    new
}

#[test]
fn only_commits_signed_by_an_allowed_key_are_evaluated_and_the_rest_are_said_everywhere() {
    if !have(&["ssh-keygen"]) {
        return;
    }
    let keys = tempfile::tempdir().unwrap();
    let (alice, alice_line) = ssh_signer(keys.path(), "alice");
    let (mallory, _) = ssh_signer(keys.path(), "mallory");
    std::fs::write(keys.path().join("allowed_signers"), &alice_line).unwrap();

    let repo = Repo::example();
    commit(&repo, "signed start", Some(&alice));
    let repository = format!(
        "{{ url: {}, branch: main, interval: 1h, verify: {{ mode: head, ssh_allowed_signers: {} }} }}",
        repo.path().display(),
        keys.path().join("allowed_signers").display()
    );
    let daemon = Daemon::start_with(&repository, &example_targets(), "status: { provider: git-notes }\n");
    let ui = daemon.out("aws-staging/hello-universe/deployment.ui.yaml");
    daemon.wait_for("the signed head applied", Duration::from_secs(15), |_| file(&ui).contains("replicas: 2"));
    assert!(daemon.log().contains("Signatures verified.") && daemon.log().contains("alice@example.com"));
    let git_dir = repo.path().join(".git");

    let mut replicas = 2;
    // aws-staging's replicas, one more each time, whatever the tree holds now.
    let mut change = |repo: &Repo| {
        replicas += 1;
        let text = repo.read("clusters/aws-staging.yaml");
        let start = text.find("hello-universe: { replicas: ").unwrap() + "hello-universe: { replicas: ".len();
        let end = start + text[start..].find(' ').unwrap();
        repo.write("clusters/aws-staging.yaml", &format!("{}{replicas}{}", &text[..start], &text[end..]));
        replicas
    };

    // Unsigned, signed by a key not allowed, signed but with its tree swapped: never evaluated.
    change(&repo);
    let unsigned = commit(&repo, "unsigned", None);
    let refused = |d: &Daemon, id: &str| {
        let revision: serde_json::Value = serde_json::from_str(&d.get("/api/v1/revision").1).unwrap_or_default();
        revision["head"] == id && revision["verdict"] == "rejected"
    };
    daemon.wait_for("the unsigned head refused", Duration::from_secs(15), |d| refused(d, &unsigned));
    assert!(file(&ui).contains("replicas: 2"), "the last verified revision keeps serving");
    let (code, ready) = daemon.get("/readyz");
    assert_eq!(code, 200, "still serving the last verified revision");
    assert!(ready.contains("signatures") && ready.contains(&unsigned[..12]) && ready.contains("nobody"), "{ready}");
    let status = daemon.strata(&["status"]).stdout;
    assert!(status.contains(&format!("revision {} rejected", &unsigned[..7])), "{status}");
    assert!(status.contains("not signed"), "{status}");
    daemon.wait_for("an error status on the unsigned commit", Duration::from_secs(10), |_| {
        notes_on(&git_dir, &unsigned).contains(&format!("error: not evaluated: commit {}", &unsigned[..7]))
    });
    assert!(notes_on(&git_dir, &unsigned).contains("signed by nobody"), "{}", notes_on(&git_dir, &unsigned));
    let (_, page) = daemon.request("GET", "/", &[("Authorization", &format!("Bearer {TOKEN_API}"))], "");
    assert!(page.contains("signatures") && page.contains(&unsigned[..12]), "the view says it:\n{page}");

    change(&repo);
    let wrong = commit(&repo, "signed by mallory", Some(&mallory));
    daemon.wait_for("mallory's head refused", Duration::from_secs(15), |d| refused(d, &wrong));
    let mallory_fpr = {
        let out = Command::new("ssh-keygen").arg("-lf").arg(keys.path().join("mallory.pub")).output().unwrap();
        String::from_utf8(out.stdout).unwrap().split_whitespace().nth(1).unwrap().to_string()
    };
    daemon.wait_for("the signer named", Duration::from_secs(10), |_| {
        notes_on(&git_dir, &wrong).contains(&format!("signed by SSH key {mallory_fpr}"))
    });
    assert!(daemon.log().contains(&mallory_fpr), "the log names the key found");

    // Alice's commit with the tree of mallory's (replicas 4) under it.
    change(&repo);
    let good = commit(&repo, "signed by alice", Some(&alice));
    let forged = swap_tree(&repo, &good);
    daemon.wait_for("the forged head refused", Duration::from_secs(15), |d| refused(d, &forged));
    assert!(daemon.get("/api/v1/revision").1.contains("does not match the signed content"));
    assert!(!file(&ui).contains("replicas: 4"), "the forged tree is never applied");

    // Signed by alice again: evaluated, and the refusal is no longer a problem.
    let last = change(&repo);
    commit(&repo, "signed again", Some(&alice));
    daemon.wait_for("the signed head applied", Duration::from_secs(15), |_| {
        file(&ui).contains(&format!("replicas: {last}"))
    });
    assert!(!daemon.get("/readyz").1.contains("signatures"), "{}", daemon.get("/readyz").1);

    // Keys rotate by editing the file, no restart: mallory's key allowed now, her next commit applies.
    let mallory_line = std::fs::read_to_string(keys.path().join("mallory.pub")).unwrap();
    let mut parts = mallory_line.split_whitespace();
    let line = format!("mallory@example.com {} {}\n", parts.next().unwrap(), parts.next().unwrap());
    std::fs::write(keys.path().join("allowed_signers"), format!("{alice_line}{line}")).unwrap();
    let last = change(&repo);
    commit(&repo, "signed by mallory, allowed now", Some(&mallory));
    daemon.wait_for("mallory's head applied", Duration::from_secs(15), |_| {
        file(&ui).contains(&format!("replicas: {last}"))
    });
}

#[test]
fn in_mode_all_an_unsigned_commit_below_a_signed_head_is_refused() {
    if !have(&["ssh-keygen"]) {
        return;
    }
    let keys = tempfile::tempdir().unwrap();
    let (alice, alice_line) = ssh_signer(keys.path(), "alice");
    std::fs::write(keys.path().join("allowed_signers"), &alice_line).unwrap();
    let repo = Repo::example();
    commit(&repo, "signed start", Some(&alice));
    let repository = format!(
        "{{ url: {}, branch: main, interval: 1h, verify: {{ mode: all, ssh_allowed_signers: {} }} }}",
        repo.path().display(),
        keys.path().join("allowed_signers").display()
    );
    let daemon = Daemon::start(&repository, &example_targets());
    let ui = daemon.out("aws-staging/hello-universe/deployment.ui.yaml");
    daemon.wait_for("applied", Duration::from_secs(15), |_| file(&ui).contains("replicas: 2"));
    repo.edit("clusters/aws-staging.yaml", "replicas: 2 }", "replicas: 3 }");
    let sneaked = commit(&repo, "sneaked in", None);
    // Pushed together with a signed commit on top: one fetch sees both.
    git(&repo, &["commit", "-q", "--allow-empty", "-S", "-m", "signed on top"], Some(&alice));
    let head = git(&repo, &["rev-parse", "HEAD"], None);
    // (The watch may see "sneaked in" alone first: wait for the verdict on the head itself.)
    daemon.wait_for("the head refused for the commit below", Duration::from_secs(15), |d| {
        let revision: serde_json::Value = serde_json::from_str(&d.get("/api/v1/revision").1).unwrap_or_default();
        revision["head"] == head.as_str() && revision["evaluating"].is_null()
    });
    let revision = daemon.get("/api/v1/revision").1;
    assert!(revision.contains("rejected") && revision.contains(&sneaked[..12]), "{revision}");
    assert!(file(&ui).contains("replicas: 2"));
}

#[test]
fn strata_verify_checks_ssh_and_openpgp_signatures_and_plan_marks_an_unsigned_head() {
    if !have(&["ssh-keygen", "gpg"]) {
        return;
    }
    let keys = tempfile::tempdir().unwrap();
    let (alice, alice_line) = ssh_signer(keys.path(), "alice");
    std::fs::write(keys.path().join("allowed_signers"), &alice_line).unwrap();
    let gpg = Gpg::new();
    let (bob, bob_key) = gpg.signer("Bob <bob@example.com>");
    std::fs::write(keys.path().join("keyring.asc"), &bob_key).unwrap();
    let config = keys.path().join("strata.yaml");
    std::fs::write(
        &config,
        format!(
            "repository: {{ url: ., verify: {{ ssh_allowed_signers: {0}/allowed_signers, gpg_keyring: {0}/keyring.asc }} }}\ntargets: {{}}\n",
            keys.path().display()
        ),
    )
    .unwrap();
    let config = config.to_str().unwrap();

    let repo = Repo::example();
    let by_alice = commit(&repo, "by alice", Some(&alice));
    let ok = repo.strata(&["verify", "--config", config]).ok();
    assert!(ok.stdout.contains("good SSH signature by alice@example.com"), "{}", ok.stdout);

    repo.edit("clusters/aws-staging.yaml", "replicas: 2 }", "replicas: 3 }");
    let by_bob = commit(&repo, "by bob", Some(&bob));
    let ok = repo.strata(&["verify", "--config", config]).ok();
    assert!(ok.stdout.contains("good OpenPGP signature by Bob <bob@example.com>"), "{}", ok.stdout);

    repo.edit("clusters/aws-staging.yaml", "replicas: 3 }", "replicas: 4 }");
    let unsigned = commit(&repo, "unsigned", None);
    let refused = repo.strata(&["verify", "--config", config]);
    assert_eq!(refused.code, 1);
    assert!(refused.stderr.contains(&unsigned[..12]) && refused.stderr.contains("not signed"), "{}", refused.stderr);
    // By hand, at an older revision; and every commit since one.
    repo.strata(&["verify", "--config", config, "--rev", &by_bob]).ok();
    let since = repo.strata(&["verify", "--config", config, "--rev", &by_bob, "--since", &by_alice]).ok();
    assert_eq!(since.stdout.lines().count(), 1, "{}", since.stdout);

    // A plan of the unsigned head is marked; it still shows what would change.
    let plan = repo.strata(&["plan", "--config", config]).ok();
    assert!(plan.stdout.starts_with("! unsigned head: commit"), "{}", plan.stdout);
    assert!(plan.stdout.contains("aws-staging"), "{}", plan.stdout);
    let plan = repo.strata(&["plan", "--config", config, "--rev", &by_bob]).ok();
    assert!(!plan.stdout.contains("unsigned head"), "{}", plan.stdout);

    // An OpenPGP-signed commit whose tree was swapped: the signature no longer matches.
    let forged = swap_tree(&repo, &by_bob);
    let refused = repo.strata(&["verify", "--config", config, "--rev", &forged]);
    assert_eq!(refused.code, 1);
    assert!(refused.stderr.contains("does not match the signed content"), "{}", refused.stderr);

    // Bob's key revoked (gpg's own revocation certificate, no reason given: it counts for all
    // time) and the keyring exported again: his commits no longer verify.
    let fpr = String::from_utf8(gpg.run(&["--with-colons", "--list-keys", "bob@example.com"])).unwrap();
    let fpr = fpr.lines().find(|l| l.starts_with("fpr:")).unwrap().split(':').nth(9).unwrap().to_string();
    let certificate = std::fs::read_to_string(gpg.home.path().join(format!("openpgp-revocs.d/{fpr}.rev"))).unwrap();
    let certificate =
        certificate.replace(":-----BEGIN PGP PUBLIC KEY BLOCK-----", "-----BEGIN PGP PUBLIC KEY BLOCK-----");
    let revocation = keys.path().join("revocation.asc");
    std::fs::write(&revocation, certificate).unwrap();
    gpg.run(&["--import", revocation.to_str().unwrap()]);
    std::fs::write(keys.path().join("keyring.asc"), gpg.run(&["--armor", "--export", &fpr])).unwrap();
    let revoked = repo.strata(&["verify", "--config", config, "--rev", &by_bob]);
    assert_eq!(revoked.code, 1, "{}", revoked.stdout);
    assert!(revoked.stderr.contains("revoked"), "{}", revoked.stderr);
}
