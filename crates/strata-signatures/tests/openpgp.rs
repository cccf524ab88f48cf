//! OpenPGP-signed commits made by real git and gpg (each test in its own
//! GNUPGHOME), verified by the crate and cross-checked with
//! `git verify-commit`.

mod common;

use std::path::Path;
use std::time::{Duration, UNIX_EPOCH};

use common::{Gpg, Repo, gpgsig_header, have, replace_once, strs};
use strata_signatures::{Keyring, Method, Policy, Verified, VerifyError, verify_commit};

const TOOLS: &[&str] = &["git", "gpg", "gpgconf"];
const UID: &str = "Dev Eloper <dev@example.com>";

fn policy(keyring: &[u8]) -> Policy {
    Policy { gpg_keyring: Some(Keyring::parse(keyring).expect("keyring parses")), ..Policy::default() }
}

/// Our verdict on `id` with `keyring`, and git's with the repository's GNUPGHOME.
fn verdicts(repo: &Repo, id: &str, keyring: &[u8]) -> (Result<Verified, VerifyError>, bool) {
    (verify_commit(&repo.cat(id), &policy(keyring)), repo.git_verifies("commit", id, &[]))
}

/// Git's verdict with another GNUPGHOME.
fn git_verifies_with(repo: &Repo, id: &str, home: &Path) -> bool {
    repo.command(&["verify-commit", id]).env("GNUPGHOME", home).output().expect("git verify-commit").status.success()
}

/// A `gpg.program` that runs gpg with extra options (a faked clock, a weak digest).
fn gpg_wrapper(repo: &Repo, name: &str, options: &str) -> String {
    let path = repo.sandbox.write(name, format!("#!/bin/sh\nexec gpg {options} \"$@\"\n"));
    std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o755)).expect("chmod");
    format!("gpg.program={}", path.display())
}

fn unix(seconds: u64) -> std::time::SystemTime {
    UNIX_EPOCH + Duration::from_secs(seconds)
}

#[test]
fn good_signatures_by_ed25519_and_rsa_keys() {
    if !have(TOOLS) {
        return;
    }
    for algo in ["ed25519", "rsa2048"] {
        let gpg = Gpg::new();
        let fpr = gpg.generate(UID, algo, "sign", &[]);
        let repo = Repo::with_gnupg(&gpg);
        let id = repo.commit("deploy v2", &strs(&gpg.git_config(&fpr)), &["-S"]);
        for armor in [true, false] {
            let (ours, git) = verdicts(&repo, &id, &gpg.export(&[], armor));
            let v = ours.unwrap_or_else(|e| panic!("{algo}: {e}"));
            assert!(git, "{algo}: git disagrees");
            assert_eq!(v.method, Method::OpenPgp);
            assert_eq!(v.fingerprint, fpr);
            assert_eq!(v.primary_fingerprint.as_deref(), Some(fpr.as_str()));
            assert_eq!(v.signer, UID);
            let committed: u64 = repo.git_text(&["log", "-1", "--format=%ct", &id]).parse().unwrap();
            let drift = v.signed_at.duration_since(unix(committed)).unwrap_or_default();
            assert!(drift < Duration::from_secs(60), "{algo}: signed {drift:?} after committing");
        }
    }
}

#[test]
fn signing_subkey_is_reported_with_its_primary() {
    if !have(TOOLS) {
        return;
    }
    let gpg = Gpg::new();
    let primary = gpg.generate(UID, "ed25519", "cert", &[]);
    gpg.run(&["--quick-add-key", &primary, "ed25519", "sign", "never"]);
    let fprs = gpg.fingerprints(&primary);
    assert_eq!(fprs.len(), 2);
    let repo = Repo::with_gnupg(&gpg);
    let id = repo.commit("by subkey", &strs(&gpg.git_config(&primary)), &["-S"]);
    let (ours, git) = verdicts(&repo, &id, &gpg.export(&[], true));
    let v = ours.unwrap();
    assert!(git);
    assert_eq!(v.fingerprint, fprs[1]);
    assert_eq!(v.primary_fingerprint.as_deref(), Some(primary.as_str()));

    // The subkey revoked (gpg --edit-key: key 1, revkey, no reason given).
    gpg.edit_key(&[], &primary, "key 1\nrevkey\ny\n0\n\ny\nsave\n");
    let (ours, git) = verdicts(&repo, &id, &gpg.export(&[], true));
    let e = ours.unwrap_err();
    assert!(matches!(&e, VerifyError::RevokedKey { fingerprint, .. } if *fingerprint == fprs[1]), "{e}");
    assert!(!git);
}

#[test]
fn unsigned_and_unknown_keys() {
    if !have(TOOLS) {
        return;
    }
    let gpg = Gpg::new();
    let fpr = gpg.generate(UID, "ed25519", "sign", &[]);
    let stranger = Gpg::new();
    stranger.generate("Stranger <stranger@example.org>", "ed25519", "sign", &[]);
    let repo = Repo::with_gnupg(&gpg);

    let unsigned = repo.commit("unsigned", &[], &[]);
    let (ours, git) = verdicts(&repo, &unsigned, &gpg.export(&[], true));
    assert!(matches!(ours, Err(VerifyError::Unsigned { .. })), "{ours:?}");
    assert!(!git);

    let id = repo.commit("signed", &strs(&gpg.git_config(&fpr)), &["-S"]);
    let e = verify_commit(&repo.cat(&id), &policy(&stranger.export(&[], true))).unwrap_err();
    assert!(
        matches!(&e, VerifyError::UnknownKey { method: Method::OpenPgp, fingerprint } if *fingerprint == fpr),
        "{e}"
    );
    assert!(e.to_string().contains(&fpr) && e.to_string().contains("add the key to gpg_keyring"), "{e}");
    assert!(!git_verifies_with(&repo, &id, stranger.home.path()));

    let ssh_only = Policy::default();
    let e = verify_commit(&repo.cat(&id), &ssh_only).unwrap_err();
    assert!(matches!(e, VerifyError::MethodNotConfigured { method: Method::OpenPgp, .. }), "{e}");
}

#[test]
fn keyrings_of_several_certificates() {
    if !have(TOOLS) {
        return;
    }
    let gpg = Gpg::new();
    gpg.generate("First <first@example.org>", "ed25519", "sign", &[]);
    let fpr = gpg.generate(UID, "ed25519", "sign", &[]);
    gpg.generate("Third <third@example.org>", "rsa2048", "sign", &[]);
    let repo = Repo::with_gnupg(&gpg);
    let id = repo.commit("many keys", &strs(&gpg.git_config(&fpr)), &["-S"]);
    let one_block = gpg.export(&[], true);
    let separate_blocks = [
        gpg.export(&["first@example.org"], true),
        b"\nsome text between blocks\n".to_vec(),
        gpg.export(&["third@example.org"], true),
        gpg.export(&[&fpr], true),
    ]
    .concat();
    let binary = gpg.export(&[], false);
    for keyring in [one_block, separate_blocks, binary] {
        let parsed = Keyring::parse(&keyring).unwrap();
        assert_eq!(parsed.len(), 3);
        assert!(parsed.fingerprints().contains(&fpr));
        let (ours, git) = verdicts(&repo, &id, &keyring);
        assert_eq!(ours.unwrap().fingerprint, fpr);
        assert!(git);
    }
    let secret = gpg.run(&["--armor", "--export-secret-keys"]);
    let e = Keyring::parse(&secret).unwrap_err();
    assert!(e.to_string().contains("secret key material"), "{e}");
}

#[test]
fn tampered_commits_no_longer_match() {
    if !have(TOOLS) {
        return;
    }
    let gpg = Gpg::new();
    let fpr = gpg.generate(UID, "ed25519", "sign", &[]);
    let repo = Repo::with_gnupg(&gpg);
    let config = gpg.git_config(&fpr);
    let first = repo.commit("first", &strs(&config), &["-S"]);
    let id = repo.commit("scale to 3 replicas", &strs(&config), &["-S"]);
    let raw = repo.cat(&id);
    let tree = repo.git_text(&["rev-parse", &format!("{id}^{{tree}}")]);
    let other_tree = repo.git_text(&["rev-parse", &format!("{first}^{{tree}}")]);
    let keyring = gpg.export(&[], true);
    let unsigned = repo.commit("unsigned", &[], &[]);
    let unsigned_raw = repo.cat(&unsigned);
    let end = unsigned_raw.windows(2).position(|w| w == b"\n\n").unwrap() + 1;
    let moved = [&unsigned_raw[..end], &gpgsig_header(&raw)[..], &unsigned_raw[end..]].concat();
    let cases = [
        ("one byte of the message", replace_once(&raw, b"scale to 3 replicas", b"scale to 9 replicas")),
        ("the author", replace_once(&raw, b"author Dev Eloper", b"author Mal Lory")),
        ("the tree", replace_once(&raw, tree.as_bytes(), other_tree.as_bytes())),
        ("the signature moved to another commit", moved),
    ];
    for (what, bytes) in cases {
        let tampered = repo.write_object("commit", &bytes);
        let (ours, git) = verdicts(&repo, &tampered, &keyring);
        let e = ours.expect_err(what);
        assert!(
            matches!(&e, VerifyError::BadSignature { method: Method::OpenPgp, fingerprint, .. } if *fingerprint == fpr),
            "{what}: {e}"
        );
        assert!(std::error::Error::source(&e).is_some(), "{what}: cause kept");
        assert!(!git, "{what}: git accepted it");
    }
}

#[test]
fn expired_key_is_judged_at_signature_time() {
    if !have(TOOLS) {
        return;
    }
    let gpg = Gpg::new();
    let fpr = gpg.generate(UID, "ed25519", "sign", &["--faked-system-time", "20200101T000000!"]);
    let repo = Repo::with_gnupg(&gpg);
    let config = gpg.git_config(&fpr);
    let mut in_2020 = strs(&config);
    let wrapper = gpg_wrapper(&repo, "gpg-2020", "--faked-system-time 20200102T000000!");
    in_2020.push(&wrapper);
    let signed_while_valid = repo.commit("signed on 2020-01-02", &in_2020, &["-S"]);
    let signed_now = repo.commit("signed now", &strs(&config), &["-S"]);
    // On 2020-01-05 the key was set to expire a day later.
    gpg.run(&["--faked-system-time", "20200105T000000!", "--quick-set-expire", &fpr, "1d"]);
    let keyring = gpg.export(&[], true);

    let (ours, git) = verdicts(&repo, &signed_now, &keyring);
    let e = ours.unwrap_err();
    assert!(matches!(e, VerifyError::ExpiredKey { method: Method::OpenPgp, .. }), "{e}");
    let message = e.to_string();
    assert!(message.contains(&fpr) && message.contains("expired at 2020-01-06T00:00:00Z"), "{message}");
    assert!(!git);

    // Signed while the key was valid: good here; gpg (so git) judges expiry now.
    let (ours, git) = verdicts(&repo, &signed_while_valid, &keyring);
    let v = ours.unwrap();
    assert_eq!(v.signed_at, unix(1_577_923_200));
    assert_eq!(v.signer, UID);
    assert!(!git, "git calls any signature by an expired key bad");
}

#[test]
fn revoked_key_in_every_keyring_form() {
    if !have(TOOLS) {
        return;
    }
    let gpg = Gpg::new();
    let fpr = gpg.generate(UID, "ed25519", "sign", &[]);
    let other = gpg.generate("Other <other@example.org>", "ed25519", "sign", &[]);
    let repo = Repo::with_gnupg(&gpg);
    let id = repo.commit("signed before revocation", &strs(&gpg.git_config(&fpr)), &["-S"]);
    let by_other = repo.commit("by the other key", &strs(&gpg.git_config(&other)), &["-S"]);
    let before = gpg.export(&[], true);
    let revocation = gpg.revocation_certificate(&fpr);
    assert!(verify_commit(&repo.cat(&id), &policy(&before)).is_ok());

    // 1. The revocation certificate given alongside the keyring, unimported.
    let loose = [before.clone(), revocation.clone()].concat();
    let e = verify_commit(&repo.cat(&id), &policy(&loose)).unwrap_err();
    assert!(matches!(&e, VerifyError::RevokedKey { fingerprint, .. } if *fingerprint == fpr), "{e}");
    assert!(e.to_string().contains(&fpr) && e.to_string().contains("revoked"), "{e}");
    // ... and first, before the certificates.
    let first = [revocation.clone(), before.clone()].concat();
    assert!(matches!(verify_commit(&repo.cat(&id), &policy(&first)), Err(VerifyError::RevokedKey { .. })));
    // The other certificate is untouched by it.
    assert!(verify_commit(&repo.cat(&by_other), &policy(&loose)).is_ok());

    // 2. Imported into gpg, then exported (armored and binary) with the certificate.
    gpg.import(&revocation);
    for armor in [true, false] {
        let (ours, git) = verdicts(&repo, &id, &gpg.export(&[], armor));
        assert!(matches!(ours, Err(VerifyError::RevokedKey { .. })), "{ours:?}");
        assert!(!git);
    }
    let (ours, git) = verdicts(&repo, &by_other, &gpg.export(&[], true));
    assert!(ours.is_ok() && git, "{ours:?} / git {git}");
}

#[test]
fn key_retired_after_signing_keeps_earlier_signatures() {
    if !have(TOOLS) {
        return;
    }
    let gpg = Gpg::new();
    let fpr = gpg.generate(UID, "ed25519", "sign", &["--faked-system-time", "20200101T000000!"]);
    let repo = Repo::with_gnupg(&gpg);
    let config = gpg.git_config(&fpr);
    let wrapper = gpg_wrapper(&repo, "gpg-2020", "--faked-system-time 20200601T000000!");
    let mut in_2020 = strs(&config);
    in_2020.push(&wrapper);
    let old = repo.commit("signed in 2020", &in_2020, &["-S"]);
    let new = repo.commit("signed now", &strs(&config), &["-S"]);
    // Revoked on 2021-01-01 as superseded ("soft"): earlier signatures stand.
    gpg.edit_key(
        &["--faked-system-time", "20210101T000000!"],
        &fpr,
        "revkey\ny\n2\nreplaced by a new key\n\ny\nsave\n",
    );
    let keyring = gpg.export(&[], true);

    let (ours, git) = verdicts(&repo, &new, &keyring);
    let e = ours.unwrap_err();
    assert!(matches!(&e, VerifyError::RevokedKey { reason, .. } if reason.contains("replaced by a new key")), "{e}");
    assert!(!git);
    let (ours, git) = verdicts(&repo, &old, &keyring);
    assert!(ours.is_ok(), "{ours:?}");
    assert!(!git, "gpg (so git) calls every signature by a revoked key bad");
}

#[test]
fn sha1_signatures_are_refused() {
    if !have(TOOLS) {
        return;
    }
    let gpg = Gpg::new();
    let fpr = gpg.generate(UID, "rsa2048", "sign", &[]);
    let repo = Repo::with_gnupg(&gpg);
    let wrapper = gpg_wrapper(&repo, "gpg-sha1", "--digest-algo SHA1");
    let owned = gpg.git_config(&fpr);
    let mut config = strs(&owned);
    config.push(&wrapper);
    let id = repo.commit("weak digest", &config, &["-S"]);
    let (ours, git) = verdicts(&repo, &id, &gpg.export(&[], true));
    let e = ours.unwrap_err();
    assert!(
        matches!(&e, VerifyError::WeakHash { algorithm, fingerprint, .. } if algorithm == "SHA1" && *fingerprint == fpr),
        "{e}"
    );
    assert!(e.to_string().contains("SHA-256"), "{e}");
    assert!(git, "gpg 2.2 still accepts SHA-1 data signatures; refusing them is this crate's policy");
}

#[test]
fn committer_identity_against_user_ids() {
    if !have(TOOLS) {
        return;
    }
    let gpg = Gpg::new();
    let dev = gpg.generate(UID, "ed25519", "sign", &[]);
    gpg.run(&["--quick-add-uid", &dev, "Dev at work <DEV@work.example>"]);
    let other = gpg.generate("Someone Else <else@example.org>", "ed25519", "sign", &[]);
    let repo = Repo::with_gnupg(&gpg);
    let keyring = gpg.export(&[], true);
    let strict = Policy { require_committer_identity: true, ..policy(&keyring) };

    let own = repo.commit("own key", &strs(&gpg.git_config(&dev)), &["-S"]);
    assert!(verify_commit(&repo.cat(&own), &strict).is_ok());
    repo.git(&["config", "user.email", "dev@work.example"]);
    let second_uid = repo.commit("second uid", &strs(&gpg.git_config(&dev)), &["-S"]);
    assert!(verify_commit(&repo.cat(&second_uid), &strict).is_ok());

    let foreign = repo.commit("someone else's key", &strs(&gpg.git_config(&other)), &["-S"]);
    let e = verify_commit(&repo.cat(&foreign), &strict).unwrap_err();
    assert!(
        matches!(&e, VerifyError::SignerNotCommitter { committer, signer, .. }
            if committer == "dev@work.example" && signer == "Someone Else <else@example.org>"),
        "{e}"
    );
    assert!(verify_commit(&repo.cat(&foreign), &policy(&keyring)).is_ok());
}

#[test]
fn damaged_signature_is_malformed() {
    if !have(TOOLS) {
        return;
    }
    let gpg = Gpg::new();
    let fpr = gpg.generate(UID, "ed25519", "sign", &[]);
    let repo = Repo::with_gnupg(&gpg);
    let id = repo.commit("damaged", &strs(&gpg.git_config(&fpr)), &["-S"]);
    let raw = repo.cat(&id);
    // Drop the first line of the armored body (it follows the armor's blank line).
    let text = String::from_utf8(raw).unwrap();
    let lines: Vec<&str> = text.split_inclusive('\n').collect();
    let blank = lines.iter().position(|l| *l == " \n").expect("armor blank line");
    let damaged: String = lines.iter().enumerate().filter(|(i, _)| *i != blank + 1).map(|(_, l)| *l).collect();
    let damaged = repo.write_object("commit", damaged.as_bytes());
    let (ours, git) = verdicts(&repo, &damaged, &gpg.export(&[], true));
    let e = ours.unwrap_err();
    assert!(matches!(e, VerifyError::MalformedSignature { method: Method::OpenPgp, .. }), "{e}");
    // The parser's error is kept as the cause; damage that leaves packets of other kinds (the
    // dropped line shifts the base64, so which depends on the key) leaves no error to keep.
    assert!(
        std::error::Error::source(&e).is_some() || e.to_string().contains("holds no signature packet"),
        "cause kept: {e}"
    );
    assert!(!git);
}
