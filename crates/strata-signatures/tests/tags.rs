//! Signed annotated tags (signature after the message) made by real git,
//! verified by the crate and cross-checked with `git verify-tag`.

mod common;

use common::{Gpg, Repo, have, replace_once, ssh_keygen, strs};
use strata_signatures::{AllowedSigners, Keyring, Method, Policy, VerifyError, split_tag, verify_tag};

fn tag(repo: &Repo, name: &str, config: &[&str], sign: bool) -> String {
    let mut args: Vec<&str> = Vec::new();
    for c in config {
        args.extend(["-c", c]);
    }
    args.extend(["tag", if sign { "-s" } else { "-a" }, "-m", "release notes: all green", name]);
    repo.git(&args);
    repo.git_text(&["rev-parse", name])
}

#[test]
fn ssh_signed_tags() {
    if !have(&["git", "ssh-keygen"]) {
        return;
    }
    let repo = Repo::new();
    let key = ssh_keygen(&repo.sandbox, "signer", &["-t", "ed25519"]);
    repo.commit("base", &[], &[]);
    let allowed = format!("dev@example.com {}\n", key.public);
    let file = repo.sandbox.write("allowed_signers", &allowed);
    let verify_config = format!("gpg.ssh.allowedSignersFile={}", file.display());
    let policy = Policy { ssh_allowed_signers: Some(AllowedSigners::parse(&allowed).unwrap()), ..Policy::default() };

    let signed = tag(&repo, "v1.0.0", &strs(&key.git_config()), true);
    let raw = repo.cat(&signed);
    let v = verify_tag(&raw, &policy).unwrap();
    assert_eq!((v.method, v.signer.as_str()), (Method::Ssh, "dev@example.com"));
    assert!(repo.git_verifies("tag", &signed, &[&verify_config]));
    assert!(split_tag(&raw).unwrap().payload.ends_with(b"release notes: all green\n"));

    let tampered = repo.write_object("tag", &replace_once(&raw, b"all green", b"all GREEN"));
    assert!(matches!(verify_tag(&repo.cat(&tampered), &policy), Err(VerifyError::BadSignature { .. })));
    assert!(!repo.git_verifies("tag", &tampered, &[&verify_config]));
    let retagged = repo.write_object("tag", &replace_once(&raw, b"tag v1.0.0", b"tag v9.9.9"));
    assert!(matches!(verify_tag(&repo.cat(&retagged), &policy), Err(VerifyError::BadSignature { .. })));
    assert!(!repo.git_verifies("tag", &retagged, &[&verify_config]));

    let unsigned = tag(&repo, "v1.0.1", &[], false);
    assert!(matches!(verify_tag(&repo.cat(&unsigned), &policy), Err(VerifyError::Unsigned { .. })));
    assert!(!repo.git_verifies("tag", &unsigned, &[&verify_config]));

    // Validity is judged at the tagger's date.
    let expired = format!("dev@example.com valid-before=\"20210101Z\" {}\n", key.public);
    let strict = Policy { ssh_allowed_signers: Some(AllowedSigners::parse(&expired).unwrap()), ..Policy::default() };
    assert!(matches!(verify_tag(&raw, &strict), Err(VerifyError::ExpiredKey { .. })));
}

#[test]
fn openpgp_signed_tags() {
    if !have(&["git", "gpg", "gpgconf"]) {
        return;
    }
    let gpg = Gpg::new();
    let fpr = gpg.generate("Dev Eloper <dev@example.com>", "ed25519", "sign", &[]);
    let repo = Repo::with_gnupg(&gpg);
    repo.commit("base", &[], &[]);
    let policy = Policy { gpg_keyring: Some(Keyring::parse(&gpg.export(&[], true)).unwrap()), ..Policy::default() };

    let signed = tag(&repo, "v2.0.0", &strs(&gpg.git_config(&fpr)), true);
    let raw = repo.cat(&signed);
    let v = verify_tag(&raw, &policy).unwrap();
    assert_eq!((v.method, v.fingerprint.as_str()), (Method::OpenPgp, fpr.as_str()));
    assert!(repo.git_verifies("tag", &signed, &[]));

    let tampered = repo.write_object("tag", &replace_once(&raw, b"all green", b"all GREEN"));
    assert!(matches!(verify_tag(&repo.cat(&tampered), &policy), Err(VerifyError::BadSignature { .. })));
    assert!(!repo.git_verifies("tag", &tampered, &[]));
}
