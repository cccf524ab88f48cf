//! SSH-signed commits made by real git and ssh-keygen, verified by the
//! crate and cross-checked with `git verify-commit`.

mod common;

use std::time::{Duration, UNIX_EPOCH};

use common::{Repo, SshKey, gpgsig_header, have, insert_gpgsig, replace_once, ssh_keygen, strs};
use strata_signatures::{AllowedSigners, Method, Policy, VerifyError, split_commit, verify_commit};

const TOOLS: &[&str] = &["git", "ssh-keygen"];

/// A repository, a signing key, and an allowed_signers file for it.
struct Setup {
    repo: Repo,
    key: SshKey,
}

impl Setup {
    fn new(kind: &[&str]) -> Self {
        let repo = Repo::new();
        let key = ssh_keygen(&repo.sandbox, "signer", kind);
        Setup { repo, key }
    }

    fn signed_commit(&self, message: &str) -> String {
        self.repo.commit(message, &strs(&self.key.git_config()), &["-S"])
    }

    /// Our verdict and git's on `id`, with `allowed` as allowed_signers.
    fn verdicts(&self, id: &str, allowed: &str) -> (Result<strata_signatures::Verified, VerifyError>, bool) {
        let path = self.repo.sandbox.write("allowed_signers", allowed);
        let config = format!("gpg.ssh.allowedSignersFile={}", path.display());
        let git = self.repo.git_verifies("commit", id, &[&config]);
        let policy = Policy {
            ssh_allowed_signers: Some(AllowedSigners::parse(allowed).expect("allowed_signers parses")),
            ..Policy::default()
        };
        (verify_commit(&self.repo.cat(id), &policy), git)
    }

    fn allowed(&self, principals_and_options: &str) -> String {
        format!("{principals_and_options} {}\n", self.key.public)
    }

    /// The key's `SHA256:…` fingerprint as ssh-keygen prints it.
    fn fingerprint(&self) -> String {
        let out = self
            .repo
            .sandbox
            .command("ssh-keygen")
            .args(["-l", "-E", "sha256", "-f"])
            .arg(self.key.private.with_extension("pub"))
            .output()
            .expect("ssh-keygen -l");
        String::from_utf8(out.stdout).expect("utf-8").split_whitespace().nth(1).expect("fingerprint").to_owned()
    }
}

fn committer_time(raw: &[u8]) -> u64 {
    let text = String::from_utf8_lossy(raw);
    let line = text.lines().find(|l| l.starts_with("committer ")).expect("committer");
    line.rsplit(' ').nth(1).expect("time").parse().expect("seconds")
}

#[test]
fn good_signatures_by_every_key_type() {
    if !have(TOOLS) {
        return;
    }
    for kind in [
        &["-t", "ed25519"][..],
        &["-t", "ecdsa", "-b", "256"],
        &["-t", "ecdsa", "-b", "384"],
        &["-t", "rsa", "-b", "2048"],
    ] {
        let s = Setup::new(kind);
        let id = s.signed_commit("deploy v1");
        let (ours, git) = s.verdicts(&id, &s.allowed("dev@example.com"));
        let v = ours.unwrap_or_else(|e| panic!("{kind:?}: {e}"));
        assert!(git, "{kind:?}: git verify-commit disagrees");
        assert_eq!(v.method, Method::Ssh);
        assert_eq!(v.fingerprint, s.fingerprint(), "{kind:?}");
        assert_eq!(v.signer, "dev@example.com");
        assert_eq!(v.primary_fingerprint, None);
        let raw = s.repo.cat(&id);
        assert_eq!(v.signed_at, UNIX_EPOCH + Duration::from_secs(committer_time(&raw)));
    }
}

#[test]
fn unsigned_commit_is_refused() {
    if !have(TOOLS) {
        return;
    }
    let s = Setup::new(&["-t", "ed25519"]);
    let id = s.repo.commit("unsigned", &[], &[]);
    let (ours, git) = s.verdicts(&id, &s.allowed("dev@example.com"));
    assert!(matches!(ours, Err(VerifyError::Unsigned { .. })), "{ours:?}");
    assert!(!git);
    assert!(split_commit(&s.repo.cat(&id)).is_none());
}

#[test]
fn key_not_allowed_is_unknown_and_named() {
    if !have(TOOLS) {
        return;
    }
    let s = Setup::new(&["-t", "ed25519"]);
    let other = ssh_keygen(&s.repo.sandbox, "other", &["-t", "ed25519"]);
    let id = s.signed_commit("by a stranger");
    let (ours, git) = s.verdicts(&id, &format!("dev@example.com {}\n", other.public));
    let e = ours.unwrap_err();
    assert!(
        matches!(&e, VerifyError::UnknownKey { method: Method::Ssh, fingerprint } if *fingerprint == s.fingerprint())
    );
    let message = e.to_string();
    assert!(message.contains(&s.fingerprint()) && message.contains("add the key to ssh_allowed_signers"), "{message}");
    assert!(!git);

    let policy = Policy::default();
    let e = verify_commit(&s.repo.cat(&id), &policy).unwrap_err();
    assert!(matches!(e, VerifyError::MethodNotConfigured { method: Method::Ssh, .. }), "{e}");
}

#[test]
fn tampered_commits_no_longer_match() {
    if !have(TOOLS) {
        return;
    }
    let s = Setup::new(&["-t", "ed25519"]);
    let first = s.signed_commit("first");
    let id = s.signed_commit("release the kraken");
    let raw = s.repo.cat(&id);
    let other_tree = s.repo.git_text(&["rev-parse", &format!("{first}^{{tree}}")]);
    let tree = s.repo.git_text(&["rev-parse", &format!("{id}^{{tree}}")]);
    let allowed = s.allowed("dev@example.com");
    let tampered = [
        ("one byte of the message", replace_once(&raw, b"release the kraken", b"release the krakeN")),
        ("the author", replace_once(&raw, b"author Dev Eloper", b"author Mal Lory")),
        ("the tree", replace_once(&raw, tree.as_bytes(), other_tree.as_bytes())),
        (
            "the committer date",
            replace_once(
                &raw,
                b"committer Dev Eloper <dev@example.com> 1",
                b"committer Dev Eloper <dev@example.com> 2",
            ),
        ),
    ];
    for (what, bytes) in tampered {
        assert_ne!(bytes, raw);
        let tampered_id = s.repo.write_object("commit", &bytes);
        let (ours, git) = s.verdicts(&tampered_id, &allowed);
        let e = ours.expect_err(what);
        assert!(
            matches!(&e, VerifyError::BadSignature { method: Method::Ssh, fingerprint, .. } if *fingerprint == s.fingerprint()),
            "{what}: {e}"
        );
        assert!(std::error::Error::source(&e).is_some(), "{what}: cause kept");
        assert!(!git, "{what}: git accepted it");
    }
}

#[test]
fn signature_moved_from_another_commit() {
    if !have(TOOLS) {
        return;
    }
    let s = Setup::new(&["-t", "ed25519"]);
    let signed = s.signed_commit("signed one");
    let unsigned = s.repo.commit("unsigned one", &[], &[]);
    let unsigned_raw = s.repo.cat(&unsigned);
    let header = gpgsig_header(&s.repo.cat(&signed));
    let end = unsigned_raw.windows(2).position(|w| w == b"\n\n").unwrap() + 1;
    let forged = [&unsigned_raw[..end], &header, &unsigned_raw[end..]].concat();
    let forged_id = s.repo.write_object("commit", &forged);
    let (ours, git) = s.verdicts(&forged_id, &s.allowed("dev@example.com"));
    assert!(matches!(ours, Err(VerifyError::BadSignature { .. })), "{ours:?}");
    assert!(!git);
}

#[test]
fn validity_window_is_judged_at_the_committer_date() {
    if !have(TOOLS) {
        return;
    }
    let s = Setup::new(&["-t", "ed25519"]);
    let now = s.signed_commit("now");
    // valid-before in the past: expired.
    let (ours, git) = s.verdicts(&now, &s.allowed("dev@example.com valid-before=\"20210101Z\""));
    let e = ours.unwrap_err();
    assert!(matches!(e, VerifyError::ExpiredKey { method: Method::Ssh, .. }), "{e}");
    assert!(e.to_string().contains("expired at 2021-01-01T00:00:00Z"), "{e}");
    assert!(!git);
    // valid-after in the future: not yet valid (no Z: read as UTC, as ssh-keygen does under TZ=UTC).
    let (ours, git) = s.verdicts(&now, &s.allowed("dev@example.com valid-after=\"20991231\""));
    assert!(matches!(ours, Err(VerifyError::KeyNotYetValid { .. })), "{ours:?}");
    assert!(!git);
    // A commit dated inside the window is good under both bounds.
    let old = s.repo.commit_env(
        "dated 2020",
        &strs(&s.key.git_config()),
        &["-S"],
        &[("GIT_COMMITTER_DATE", "2020-06-01T12:00:00Z")],
    );
    let allowed = s.allowed("dev@example.com valid-after=\"20200101\",valid-before=\"202101010000Z\"");
    let (ours, git) = s.verdicts(&old, &allowed);
    assert!(ours.is_ok() && git, "{ours:?} / git {git}");
    let (ours, git) = s.verdicts(&now, &allowed);
    assert!(ours.is_err() && !git, "{ours:?} / git {git}");
}

#[test]
fn signature_for_another_namespace_is_refused() {
    if !have(TOOLS) {
        return;
    }
    let s = Setup::new(&["-t", "ed25519"]);
    let unsigned = s.repo.commit("to be signed as a file", &[], &[]);
    let raw = s.repo.cat(&unsigned);
    // Sign the commit's exact bytes, but in namespace "file", and glue it on.
    let payload = s.repo.sandbox.write("payload", &raw);
    let out = s
        .repo
        .sandbox
        .command("ssh-keygen")
        .args(["-Y", "sign", "-n", "file", "-f"])
        .arg(&s.key.private)
        .arg(&payload)
        .output()
        .expect("ssh-keygen -Y sign");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let signature = std::fs::read(payload.with_extension("sig")).expect("payload.sig");
    let glued = insert_gpgsig(&raw, &signature);
    assert_eq!(split_commit(&glued).unwrap().payload, raw, "the glued commit has the same payload");
    let id = s.repo.write_object("commit", &glued);
    let (ours, git) = s.verdicts(&id, &s.allowed("dev@example.com"));
    let e = ours.unwrap_err();
    assert!(matches!(&e, VerifyError::WrongNamespace { namespace, .. } if namespace == "file"), "{e}");
    assert!(e.to_string().contains(&s.fingerprint()), "{e}");
    assert!(!git);
}

#[test]
fn namespaces_option_must_allow_git() {
    if !have(TOOLS) {
        return;
    }
    let s = Setup::new(&["-t", "ed25519"]);
    let id = s.signed_commit("namespaced");
    let (ours, git) = s.verdicts(&id, &s.allowed("dev@example.com namespaces=\"file,email\""));
    let e = ours.unwrap_err();
    assert!(matches!(&e, VerifyError::WrongNamespace { namespace, .. } if namespace == "git"), "{e}");
    assert!(e.to_string().contains("line 1"), "{e}");
    assert!(!git);
    for ok in ["namespaces=\"file,g?t\"", "namespaces=\"*\"", "NAMESPACES=\"git\""] {
        let (ours, git) = s.verdicts(&id, &s.allowed(&format!("dev@example.com {ok}")));
        assert!(ours.is_ok() && git, "{ok}: {ours:?} / git {git}");
    }
    let (ours, git) = s.verdicts(&id, &s.allowed("dev@example.com namespaces=\"*,!git\""));
    assert!(matches!(ours, Err(VerifyError::WrongNamespace { .. })) && !git, "{ours:?} / git {git}");
}

#[test]
fn key_listed_on_several_lines_is_judged_as_git_and_ssh_keygen_judge_it() {
    if !have(TOOLS) {
        return;
    }
    let s = Setup::new(&["-t", "ed25519"]);
    let id = s.signed_commit("listed twice");
    // find-principals takes the first line valid at the commit date, whatever
    // its namespaces; verify -I then needs a line for that principal allowing "git".
    let cases = [
        (s.allowed("files@example.com namespaces=\"file\"") + &s.allowed("dev@example.com"), Err("namespace")),
        (s.allowed("dev@example.com namespaces=\"file\"") + &s.allowed("dev@example.com"), Ok("dev@example.com")),
        (s.allowed("old@example.com valid-before=\"20200101\"") + &s.allowed("dev@example.com"), Ok("dev@example.com")),
        (s.allowed("\"Dev Eloper,dev@example.com\""), Ok("Dev Eloper")),
        (s.allowed("ops@example.com,*@example.com namespaces=\"git\""), Ok("ops@example.com")),
    ];
    for (allowed, expected) in cases {
        let (ours, git) = s.verdicts(&id, &allowed);
        match (expected, ours) {
            (Ok(signer), Ok(v)) => {
                assert_eq!(v.signer, signer, "{allowed}");
                assert!(git, "git refused:\n{allowed}");
            }
            (Err(_), Err(e)) => {
                assert!(matches!(e, VerifyError::WrongNamespace { .. }), "{allowed}: {e}");
                assert!(!git, "git accepted:\n{allowed}");
            }
            (expected, ours) => panic!("{allowed}: expected {expected:?}, got {ours:?}"),
        }
    }
}

#[test]
fn cert_authority_lines_authorize_no_plain_key_and_certificates_are_refused() {
    if !have(TOOLS) {
        return;
    }
    let s = Setup::new(&["-t", "ed25519"]);
    let plain = s.signed_commit("plain key");
    let (ours, git) = s.verdicts(&plain, &s.allowed("dev@example.com cert-authority"));
    assert!(matches!(ours, Err(VerifyError::UnknownKey { .. })), "{ours:?}");
    assert!(!git);

    // A commit signed with a certificate issued by a CA in allowed_signers:
    // git accepts it; this crate refuses it, saying so.
    let ca = ssh_keygen(&s.repo.sandbox, "ca", &["-t", "ed25519"]);
    let out = s
        .repo
        .sandbox
        .command("ssh-keygen")
        .args(["-q", "-s"])
        .arg(&ca.private)
        .args(["-I", "dev", "-n", "dev@example.com"])
        .arg(s.key.private.with_extension("pub"))
        .output()
        .expect("ssh-keygen -s");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let cert_path = s.repo.path().join("signer-cert.pub");
    let config = ["gpg.format=ssh".to_owned(), format!("user.signingkey={}", cert_path.display())];
    let id = s.repo.commit("certificate", &strs(&config), &["-S"]);
    let (ours, git) = s.verdicts(&id, &format!("dev@example.com cert-authority {}\n", ca.public));
    let e = ours.unwrap_err();
    assert!(matches!(e, VerifyError::Unsupported { .. }), "{e}");
    assert!(e.to_string().contains("certificate") && e.to_string().contains(&s.fingerprint()), "{e}");
    assert!(git, "git accepts certificate signatures; the difference is deliberate");
}

#[test]
fn committer_identity_against_wildcard_principals() {
    if !have(TOOLS) {
        return;
    }
    let s = Setup::new(&["-t", "ed25519"]);
    let id = s.signed_commit("who am i");
    let raw = s.repo.cat(&id);
    let split = split_commit(&raw).unwrap();
    let payload = s.repo.sandbox.write("payload", &split.payload);
    let sig = s.repo.sandbox.write("payload.sig", &split.signature);
    for (principals, expect_ok) in [
        ("*@example.com", true),
        ("ops@example.org,d?v@example.*", true),
        ("*@example.com,!dev@*", false),
        ("ops@example.org", false),
        ("\"Dev Eloper\"", false),
    ] {
        let allowed = s.allowed(principals);
        let policy = Policy {
            ssh_allowed_signers: Some(AllowedSigners::parse(&allowed).unwrap()),
            require_committer_identity: true,
            ..Policy::default()
        };
        let ours = verify_commit(&raw, &policy);
        // What `ssh-keygen -Y verify -I <committer>` says of the same.
        let file = s.repo.sandbox.write("allowed_signers", &allowed);
        let keygen = s
            .repo
            .sandbox
            .command("ssh-keygen")
            .args(["-Y", "verify", "-n", "git", "-I", "dev@example.com", "-f"])
            .arg(&file)
            .arg("-s")
            .arg(&sig)
            .stdin(std::fs::File::open(&payload).unwrap())
            .output()
            .unwrap();
        assert_eq!(keygen.status.success(), expect_ok, "ssh-keygen on {principals}");
        match ours {
            Ok(v) => assert!(expect_ok, "{principals} accepted as {}", v.signer),
            Err(VerifyError::SignerNotCommitter { committer, .. }) => {
                assert!(!expect_ok, "{principals} refused");
                assert_eq!(committer, "dev@example.com");
            }
            Err(e) => panic!("{principals}: {e}"),
        }
        // Without the requirement, any listed principal will do.
        let lax = Policy { require_committer_identity: false, ..policy };
        assert!(verify_commit(&raw, &lax).is_ok());
    }
}

#[test]
fn odd_allowed_signers_file_reads_as_ssh_keygen_reads_it() {
    if !have(TOOLS) {
        return;
    }
    let s = Setup::new(&["-t", "ed25519"]);
    let other = ssh_keygen(&s.repo.sandbox, "other", &["-t", "ecdsa"]);
    let id = s.signed_commit("odd file");
    let split = split_commit(&s.repo.cat(&id)).unwrap();
    let sig = s.repo.sandbox.write("commit.sig", &split.signature);
    let text = format!(
        "# Team keys, reviewed 2026-01\n\
         \n\
         \t# an indented comment\n\
         ops@example.org namespaces=\"file\" {other}\n\
         \"Dev Eloper,dev@example.com\" namespaces=\"git,file\",valid-after=\"20000101\",valid-before=\"20990101Z\" {key} laptop key\n\
         *@example.com cert-authority {other}\n",
        other = other.public,
        key = s.key.public
    );
    let signers = AllowedSigners::parse(&text).unwrap();
    assert_eq!(signers.len(), 3);
    assert_eq!(signers.principals_for(&s.key.public), ["Dev Eloper,dev@example.com"]);
    let file = s.repo.sandbox.write("allowed_signers", &text);
    let out = s
        .repo
        .sandbox
        .command("ssh-keygen")
        .args(["-Y", "find-principals", "-f"])
        .arg(&file)
        .arg("-s")
        .arg(&sig)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    // ssh-keygen prints the principals one per line.
    let found: Vec<&str> = std::str::from_utf8(&out.stdout).unwrap().lines().collect();
    assert_eq!(found.join(","), "Dev Eloper,dev@example.com");
    let (ours, git) = s.verdicts(&id, &text);
    assert_eq!(ours.unwrap().signer, "Dev Eloper");
    assert!(git);
}

#[test]
fn damaged_signature_is_malformed() {
    if !have(TOOLS) {
        return;
    }
    let s = Setup::new(&["-t", "ed25519"]);
    let id = s.signed_commit("damaged");
    let raw = s.repo.cat(&id);
    // "U1NIU0lH" is the base64 of the "SSHSIG" magic that opens the blob.
    let damaged = s.repo.write_object("commit", &replace_once(&raw, b" U1NIU0lH", b" U1NIU0lI"));
    let (ours, git) = s.verdicts(&damaged, &s.allowed("dev@example.com"));
    let e = ours.unwrap_err();
    assert!(matches!(e, VerifyError::MalformedSignature { method: Method::Ssh, .. }), "{e}");
    assert!(!git);
}
