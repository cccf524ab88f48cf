//! Verification of git commit and tag signatures, so that strata applies
//! only what a trusted key signed — the job of Flux's `verify` on a
//! GitRepository and of Argo CD's source integrity.
//!
//! The crate is pure: it reads no files and runs no programs. Its input is
//! a raw object, exactly what `git cat-file commit <id>` (or `… tag <name>`)
//! prints, and a [`Policy`] built from the caller's trusted keys; its output
//! is who signed, or why the object is refused.
//!
//! ```text
//!  raw commit ──split_commit──▶ payload + armored signature ──┐
//!  (gpgsig header removed       (byte-exact, as git does)     │
//!   from the header)                                          ▼
//!                                  ┌─ BEGIN SSH SIGNATURE ─▶ ssh: SSHSIG, namespace "git",
//!                                  │                          key in ssh_allowed_signers,
//!                                  │                          options at the committer time
//!                   armor kind ────┤
//!                                  ├─ BEGIN PGP SIGNATURE ─▶ openpgp: issuer in gpg_keyring,
//!                                  │                          signature verifies, hash not SHA-1,
//!                                  │                          key bound, unexpired, unrevoked and
//!                                  │                          signing-capable at signature time
//!                                  └─ anything else ───────▶ Unsupported / MalformedSignature
//!                                                                          │
//!                  Ok(Verified { method, fingerprint, signer, signed_at }) ◀┘ or Err(VerifyError)
//! ```
//!
//! ```no_run
//! use strata_signatures::{AllowedSigners, Keyring, Policy, verify_commit};
//!
//! let policy = Policy {
//!     ssh_allowed_signers: Some(AllowedSigners::parse(
//!         "alice@example.com ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIDmtXQmBnnbvUhCtaQT5Krh0pMhqBIc3Ncgz4CKXfkQN",
//!     )?),
//!     gpg_keyring: Some(Keyring::parse(&std::fs::read("trusted.asc")?)?),
//!     ..Policy::default()
//! };
//! let raw: Vec<u8> = std::process::Command::new("git")
//!     .args(["cat-file", "commit", "HEAD"])
//!     .output()?
//!     .stdout;
//! match verify_commit(&raw, &policy) {
//!     Ok(v) => println!("{} signature by {} ({})", v.method, v.signer, v.fingerprint),
//!     Err(e) => eprintln!("refusing HEAD: {e}"),
//! }
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! Where this verifier is stricter than `git verify-commit`: SHA-1 (and
//! older) OpenPGP signatures are refused, as are SSH signatures made with
//! certificates and X.509 (gpgsm) signatures; a GnuPG trust database plays
//! no part (a key in the keyring is trusted, and only it). Where it is more
//! lenient: an OpenPGP key is judged at the signature's creation time, so a
//! signature made before the key expired, or before it was retired or
//! superseded, stays good (gpg judges expiry and revocation now; a
//! revocation for compromise or without reason counts for all time here
//! too). An SSH signature
//! carries no time of its own, so SSH keys are judged at the committer's
//! (tagger's) date, as git does; that date is the signer's claim.

mod error;
mod object;
mod openpgp;
mod pattern;
mod ssh;
mod time;

use std::time::SystemTime;

pub use error::{AllowedSignersError, BoxError, KeyringError, Method, ObjectKind, VerifyError};
pub use object::{SignedPayload, split_commit, split_tag};
pub use openpgp::Keyring;
pub use ssh::AllowedSigners;

/// Which keys may sign, and what else a signature must satisfy.
#[derive(Clone, Debug, Default)]
pub struct Policy {
    /// Trusted SSH keys; `None` refuses every SSH signature.
    pub ssh_allowed_signers: Option<AllowedSigners>,
    /// Trusted OpenPGP certificates; `None` refuses every OpenPGP signature.
    pub gpg_keyring: Option<Keyring>,
    /// Also require the signer to be the committer (tagger): for SSH, the
    /// committer's email must match the principals of the key's
    /// `allowed_signers` line (as `ssh-keygen -Y verify -I <email>` would);
    /// for OpenPGP, it must be the address of one of the certificate's
    /// valid user IDs. Off by default, as in git.
    pub require_committer_identity: bool,
}

/// A signature that passed the policy.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Verified {
    /// How the object was signed.
    pub method: Method,
    /// The signing key: `SHA256:…` for SSH; for OpenPGP the upper-case hex
    /// v4/v6 fingerprint of the (sub)key that signed.
    pub fingerprint: String,
    /// For OpenPGP, the certificate's primary key fingerprint (equal to
    /// `fingerprint` when the primary key signed); `None` for SSH.
    pub primary_fingerprint: Option<String>,
    /// Who signed: for SSH the principal accepted, as `git verify-commit`
    /// reports it (the first principal of the key's `allowed_signers` line
    /// that verifies, or the committer's email when
    /// [`Policy::require_committer_identity`] is set); for OpenPGP the
    /// certificate's primary user ID.
    pub signer: String,
    /// When: the OpenPGP signature's creation time, or for SSH (whose
    /// signatures carry no time) the committer's or tagger's date.
    pub signed_at: SystemTime,
}

/// Verifies a raw commit (`git cat-file commit <id>`) against the policy.
pub fn verify_commit(raw: &[u8], policy: &Policy) -> Result<Verified, VerifyError> {
    let split = split_commit(raw).ok_or(VerifyError::Unsigned { object: ObjectKind::Commit })?;
    verify_split(raw, &split, ObjectKind::Commit, policy)
}

/// Verifies a raw annotated tag (`git cat-file tag <name>`) against the policy.
pub fn verify_tag(raw: &[u8], policy: &Policy) -> Result<Verified, VerifyError> {
    let split = split_tag(raw).ok_or(VerifyError::Unsigned { object: ObjectKind::Tag })?;
    verify_split(raw, &split, ObjectKind::Tag, policy)
}

fn verify_split(
    raw: &[u8],
    split: &SignedPayload,
    object: ObjectKind,
    policy: &Policy,
) -> Result<Verified, VerifyError> {
    let ident_key: &[u8] = match object {
        ObjectKind::Commit => b"committer",
        ObjectKind::Tag => b"tagger",
    };
    let ident = object::ident(raw, ident_key);
    let committer = |ident: &Option<object::Ident>| -> Result<Option<String>, VerifyError> {
        if !policy.require_committer_identity {
            return Ok(None);
        }
        match ident {
            Some(i) => Ok(Some(i.email.clone())),
            None => Err(VerifyError::MalformedObject {
                object,
                reason: format!("no {} header to compare the signer with", String::from_utf8_lossy(ident_key)),
            }),
        }
    };
    let sig = split.signature.trim_ascii_start();
    if sig.starts_with(b"-----BEGIN SSH SIGNATURE-----") {
        let signers = policy
            .ssh_allowed_signers
            .as_ref()
            .ok_or(VerifyError::MethodNotConfigured { object, method: Method::Ssh })?;
        let Some(signed_at) = ident.as_ref().map(|i| i.time) else {
            return Err(VerifyError::MalformedObject {
                object,
                reason: format!("no dated {} header, which SSH keys are judged at", String::from_utf8_lossy(ident_key)),
            });
        };
        let committer = committer(&ident)?;
        let cx = ssh::Context { signed_at, committer: committer.as_deref() };
        let v = ssh::verify(signers, &split.payload, &split.signature, &cx)?;
        Ok(Verified {
            method: Method::Ssh,
            fingerprint: v.fingerprint,
            primary_fingerprint: None,
            signer: v.principal,
            signed_at: signed_at.to_system_time(),
        })
    } else if sig.starts_with(b"-----BEGIN PGP SIGNATURE-----") {
        let keyring =
            policy.gpg_keyring.as_ref().ok_or(VerifyError::MethodNotConfigured { object, method: Method::OpenPgp })?;
        let committer = committer(&ident)?;
        let v = openpgp::verify(keyring, &split.payload, &split.signature, committer.as_deref())?;
        Ok(Verified {
            method: Method::OpenPgp,
            fingerprint: v.fingerprint,
            primary_fingerprint: Some(v.primary_fingerprint),
            signer: v.user_id,
            signed_at: v.signed_at.to_system_time(),
        })
    } else if sig.starts_with(b"-----BEGIN SIGNED MESSAGE-----") {
        Err(VerifyError::Unsupported {
            what: "an X.509 (gpgsm) signature".into(),
            reason: "only SSH and OpenPGP signatures are verified; sign with \
                     gpg.format ssh or openpgp"
                .into(),
        })
    } else if sig.starts_with(b"-----BEGIN PGP MESSAGE-----") {
        Err(VerifyError::MalformedSignature {
            method: Method::OpenPgp,
            reason: "an OpenPGP message, not a detached signature".into(),
            source: None,
        })
    } else {
        let first_line = sig.split(|&b| b == b'\n').next().unwrap_or_default();
        Err(VerifyError::Unsupported {
            what: "an unrecognised signature".into(),
            reason: format!(
                "it starts with {:?}; expected an SSH or OpenPGP armored signature",
                String::from_utf8_lossy(&first_line[..first_line.len().min(40)])
            ),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEADER: &str = "tree 4b825dc642cb6eb9a060e54bf8d69288fbee4904\n\
                          author A <a@example.com> 1700000000 +0000\n";

    fn commit(committer: bool, armor: &str) -> Vec<u8> {
        let committer = if committer { "committer C <c@example.com> 1700000000 +0000\n" } else { "" };
        let sig: String = armor.lines().map(|l| format!(" {l}\n")).collect();
        format!("{HEADER}{committer}gpgsig{}\nmessage\n", &sig[..]).into_bytes()
    }

    fn both() -> Policy {
        Policy {
            ssh_allowed_signers: Some(AllowedSigners::parse("").unwrap()),
            gpg_keyring: None,
            require_committer_identity: false,
        }
    }

    #[test]
    fn signatures_are_dispatched_by_their_armor() {
        let x509 = commit(true, "-----BEGIN SIGNED MESSAGE-----\nMIIB\n-----END SIGNED MESSAGE-----");
        let e = verify_commit(&x509, &both()).unwrap_err();
        assert!(matches!(e, VerifyError::Unsupported { .. }) && e.to_string().contains("X.509"), "{e}");

        let message = commit(true, "-----BEGIN PGP MESSAGE-----\nowE\n-----END PGP MESSAGE-----");
        let e = verify_commit(&message, &both()).unwrap_err();
        assert!(matches!(e, VerifyError::MalformedSignature { method: Method::OpenPgp, .. }), "{e}");

        let junk = commit(true, "hello");
        let e = verify_commit(&junk, &both()).unwrap_err();
        assert!(matches!(e, VerifyError::Unsupported { .. }) && e.to_string().contains("\"hello\""), "{e}");

        let pgp = commit(true, "-----BEGIN PGP SIGNATURE-----\n\niQ\n-----END PGP SIGNATURE-----");
        let e = verify_commit(&pgp, &both()).unwrap_err();
        assert!(matches!(e, VerifyError::MethodNotConfigured { method: Method::OpenPgp, .. }), "{e}");
        assert!(e.to_string().contains("gpg_keyring"), "{e}");
    }

    #[test]
    fn ssh_needs_a_committer_date_and_sshsig_armor() {
        let armor = "-----BEGIN SSH SIGNATURE-----\nU1NIU0lH\n-----END SSH SIGNATURE-----";
        let e = verify_commit(&commit(false, armor), &both()).unwrap_err();
        assert!(matches!(e, VerifyError::MalformedObject { object: ObjectKind::Commit, .. }), "{e}");
        let e = verify_commit(&commit(true, armor), &both()).unwrap_err();
        assert!(matches!(e, VerifyError::MalformedSignature { method: Method::Ssh, .. }), "{e}");
    }

    #[test]
    fn unsigned_objects() {
        let plain = format!("{HEADER}committer C <c@x> 1 +0000\n\nmessage\n");
        let e = verify_commit(plain.as_bytes(), &both()).unwrap_err();
        assert!(matches!(e, VerifyError::Unsigned { object: ObjectKind::Commit }), "{e}");
        assert!(e.to_string().contains("git commit -S"), "{e}");
        let e = verify_tag(b"object a\ntype commit\ntag v1\n\nnotes\n", &both()).unwrap_err();
        assert!(matches!(e, VerifyError::Unsigned { object: ObjectKind::Tag }), "{e}");
    }
}
