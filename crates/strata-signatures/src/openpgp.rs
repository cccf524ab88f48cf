//! OpenPGP signatures (git's default `gpg.format`), verified with rPGP
//! against a keyring the caller supplies, judged at the signature's
//! creation time:
//!
//! * the issuer must be a primary key or subkey of a certificate in the
//!   keyring, and the signature must verify over the payload;
//! * the data signature's hash must not be MD5, SHA-1 or RIPEMD-160;
//! * the certificate must have a valid self-signature, and the key must
//!   not have expired by then (the newest self-signature, or subkey
//!   binding, made at or before the signature decides; when every one is
//!   newer — gpg replaces self-signatures when an expiry changes — the
//!   earliest of them does);
//! * the signing key must be allowed to sign: the primary's key flags, or
//!   a subkey's binding flags plus its back-signature;
//! * neither the certificate nor the subkey may be revoked: a revocation
//!   for "superseded" or "retired" counts from its own date on, any other
//!   (compromised, no reason) for all time. Revocations count whether they
//!   came inside the certificate (after `gpg --import rev.asc`) or as a
//!   separate revocation certificate in the keyring file.
//!
//! Not supported: designated revokers, third-party certifications (no web
//! of trust: being in the keyring is the trust), v3 signatures.

use std::io::Cursor;

use pgp::composed::{SignedPublicKey, SignedPublicKeyParser};
use pgp::crypto::hash::HashAlgorithm;
use pgp::packet::{Packet, PacketParser, PacketTrait, RevocationCode, Signature, SignatureType, SubpacketData};
use pgp::types::{Fingerprint, KeyDetails, Tag, Timestamp};

use crate::error::{BoxError, KeyringError, Method, VerifyError};
use crate::time::UnixTime;

/// Trusted OpenPGP certificates: the output of `gpg --export` (binary) or
/// `gpg --export --armor` (one or more armored blocks), optionally with
/// revocation certificates (`gpg --gen-revoke`, or the files gpg leaves in
/// `openpgp-revocs.d/` with the `:` before `-----BEGIN` removed).
#[derive(Clone, Debug)]
pub struct Keyring {
    certs: Vec<SignedPublicKey>,
}

fn keyring_error(reason: impl Into<String>, source: Option<pgp::errors::Error>) -> KeyringError {
    KeyringError { reason: reason.into(), source: source.map(|e| Box::new(e) as BoxError) }
}

/// The armored blocks of a text, each from its `-----BEGIN PGP` line to
/// its `-----END PGP` line.
fn armored_blocks(bytes: &[u8]) -> Vec<&[u8]> {
    let mut blocks = Vec::new();
    let mut start = None;
    let mut offset = 0;
    for line in bytes.split_inclusive(|&b| b == b'\n') {
        let trimmed = line.trim_ascii_start();
        if trimmed.starts_with(b"-----BEGIN PGP ") && start.is_none() {
            start = Some(offset);
        } else if trimmed.starts_with(b"-----END PGP ")
            && let Some(s) = start.take()
        {
            blocks.push(&bytes[s..offset + line.len()]);
        }
        offset += line.len();
    }
    blocks
}

fn dearmor(block: &[u8]) -> Result<Vec<u8>, pgp::errors::Error> {
    let mut reader = pgp::armor::Dearmor::new(Cursor::new(block));
    let mut out = Vec::new();
    std::io::Read::read_to_end(&mut reader, &mut out)?;
    Ok(out)
}

fn packets(binary: &[u8]) -> Result<Vec<Packet>, pgp::errors::Error> {
    PacketParser::new(Cursor::new(binary)).collect()
}

impl Keyring {
    /// Reads certificates, armored or binary, several concatenated or in
    /// separate armored blocks.
    pub fn parse(bytes: &[u8]) -> Result<Self, KeyringError> {
        let blocks = armored_blocks(bytes);
        let binaries: Vec<Vec<u8>> = if !blocks.is_empty() {
            blocks
                .iter()
                .enumerate()
                .map(|(i, block)| {
                    dearmor(block)
                        .map_err(|e| keyring_error(format!("armored block {} cannot be decoded", i + 1), Some(e)))
                })
                .collect::<Result<_, _>>()?
        } else if bytes.first().is_some_and(|b| b & 0x80 != 0) {
            vec![bytes.to_vec()]
        } else {
            return Err(keyring_error(
                "neither armored (-----BEGIN PGP PUBLIC KEY BLOCK-----) nor binary OpenPGP \
                 data; export it with gpg --export [--armor]",
                None,
            ));
        };

        let mut groups: Vec<Vec<Packet>> = Vec::new();
        let mut revocations = Vec::new();
        for binary in &binaries {
            let packets = packets(binary).map_err(|e| keyring_error("an OpenPGP packet cannot be read", Some(e)))?;
            let mut in_block = false;
            for packet in packets {
                match packet {
                    Packet::PublicKey(_) => {
                        groups.push(vec![packet]);
                        in_block = true;
                    }
                    Packet::SecretKey(_) | Packet::SecretSubkey(_) => {
                        return Err(keyring_error(
                            "secret key material found; give public keys only (gpg --export)",
                            None,
                        ));
                    }
                    // Key revocations stand on their own: they are matched to
                    // their certificate by verifying them, wherever they are.
                    Packet::Signature(sig) if sig.typ() == Some(SignatureType::KeyRevocation) => revocations.push(sig),
                    Packet::Trust(_) | Packet::Marker(_) | Packet::Padding(_) => {}
                    _ if in_block => groups.last_mut().expect("in a block").push(packet),
                    // A stray certification outside any certificate: no use here.
                    Packet::Signature(_) => {}
                    other => {
                        return Err(keyring_error(
                            format!("unexpected {:?} packet before any public key", other.tag()),
                            None,
                        ));
                    }
                }
            }
        }

        let mut certs = Vec::new();
        for (i, group) in groups.into_iter().enumerate() {
            let parser = SignedPublicKeyParser::from_packets(group.into_iter().map(Ok).peekable());
            for cert in parser {
                certs.push(cert.map_err(|e| keyring_error(format!("certificate {} cannot be read", i + 1), Some(e)))?);
            }
        }
        if certs.is_empty() {
            return Err(keyring_error("no public key found", None));
        }
        for revocation in revocations {
            for cert in &mut certs {
                if revocation.verify_key(&cert.primary_key).is_ok()
                    && !cert.details.revocation_signatures.contains(&revocation)
                {
                    cert.details.revocation_signatures.push(revocation.clone());
                }
            }
        }
        Ok(Keyring { certs })
    }

    /// How many certificates the keyring holds.
    pub fn len(&self) -> usize {
        self.certs.len()
    }

    /// Whether the keyring holds no certificate (never, once parsed).
    pub fn is_empty(&self) -> bool {
        self.certs.is_empty()
    }

    /// The primary fingerprints of the certificates, upper-case hex.
    pub fn fingerprints(&self) -> Vec<String> {
        self.certs.iter().map(|c| hex_fingerprint(&c.primary_key.fingerprint())).collect()
    }
}

pub(crate) fn hex_fingerprint(fp: &Fingerprint) -> String {
    format!("{fp:X}")
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02X}")).collect()
}

fn time(t: Timestamp) -> UnixTime {
    UnixTime(i64::from(t.as_secs()))
}

fn malformed(reason: impl Into<String>, source: Option<pgp::errors::Error>) -> VerifyError {
    VerifyError::MalformedSignature {
        method: Method::OpenPgp,
        reason: reason.into(),
        source: source.map(|e| Box::new(e) as BoxError),
    }
}

pub(crate) struct PgpVerified {
    pub(crate) fingerprint: String,
    pub(crate) primary_fingerprint: String,
    pub(crate) user_id: String,
    pub(crate) signed_at: UnixTime,
}

/// The signing key within a certificate.
#[derive(Clone, Copy)]
enum KeyRef {
    Primary,
    Subkey(usize),
}

impl KeyRef {
    fn fingerprint(self, cert: &SignedPublicKey) -> Fingerprint {
        match self {
            KeyRef::Primary => cert.primary_key.fingerprint(),
            KeyRef::Subkey(i) => cert.public_subkeys[i].key.fingerprint(),
        }
    }
}

pub(crate) fn verify(
    keyring: &Keyring,
    payload: &[u8],
    armored: &[u8],
    committer: Option<&str>,
) -> Result<PgpVerified, VerifyError> {
    let blocks = armored_blocks(armored);
    let [block] = blocks[..] else {
        return Err(malformed("expected one armored -----BEGIN PGP SIGNATURE----- block", None));
    };
    if !block.starts_with(b"-----BEGIN PGP SIGNATURE-----") {
        return Err(malformed("not a detached signature (-----BEGIN PGP SIGNATURE-----)", None));
    }
    let binary = dearmor(block).map_err(|e| malformed("the armor cannot be decoded", Some(e)))?;
    let packets = packets(&binary).map_err(|e| malformed("a packet cannot be read", Some(e)))?;
    let signatures: Vec<Signature> = packets
        .into_iter()
        .filter_map(|p| match p {
            Packet::Signature(s) => Some(s),
            _ => None,
        })
        .collect();
    let mut first_error = None;
    for sig in &signatures {
        match verify_one(keyring, payload, sig, committer) {
            Ok(v) => return Ok(v),
            Err(e) => {
                first_error.get_or_insert(e);
            }
        }
    }
    Err(first_error.unwrap_or_else(|| malformed("the armor holds no signature packet", None)))
}

/// How the signature names its issuer, for messages.
fn issuer_name(sig: &Signature) -> String {
    if let Some(fp) = sig.issuer_fingerprint().first() {
        hex_fingerprint(fp)
    } else if let Some(id) = sig.issuer_key_id().first() {
        format!("(key id {})", hex(id.as_ref()))
    } else {
        "(no issuer named)".into()
    }
}

fn names_key(sig: &Signature, key: &impl KeyDetails) -> bool {
    let fps = sig.issuer_fingerprint();
    let ids = sig.issuer_key_id();
    if fps.is_empty() && ids.is_empty() {
        return true;
    }
    fps.iter().any(|fp| **fp == key.fingerprint()) || ids.iter().any(|id| **id == key.legacy_key_id())
}

fn verify_one(
    keyring: &Keyring,
    payload: &[u8],
    sig: &Signature,
    committer: Option<&str>,
) -> Result<PgpVerified, VerifyError> {
    use pgp::packet::SignatureVersion;
    if !matches!(sig.version(), SignatureVersion::V4 | SignatureVersion::V6) {
        return Err(VerifyError::Unsupported {
            what: format!("an OpenPGP {:?} signature", sig.version()),
            reason: "only v4 and v6 signatures are accepted; re-sign with a current gpg".into(),
        });
    }
    if !matches!(sig.typ(), Some(SignatureType::Binary | SignatureType::Text)) {
        return Err(malformed(format!("a {:?} signature is not a signature over a document", sig.typ()), None));
    }
    let issuer = issuer_name(sig);
    let hash = sig.hash_alg();
    if let Some(weak @ (HashAlgorithm::Md5 | HashAlgorithm::Sha1 | HashAlgorithm::Ripemd160)) = hash {
        return Err(VerifyError::WeakHash {
            method: Method::OpenPgp,
            fingerprint: issuer,
            algorithm: weak.to_string(),
        });
    }
    let created = sig.created().map(time).ok_or_else(|| malformed("the signature has no creation time", None))?;

    let mut candidates = Vec::new();
    for cert in &keyring.certs {
        if names_key(sig, &cert.primary_key) {
            candidates.push((cert, KeyRef::Primary));
        }
        for (i, sub) in cert.public_subkeys.iter().enumerate() {
            if names_key(sig, &sub.key) {
                candidates.push((cert, KeyRef::Subkey(i)));
            }
        }
    }
    if candidates.is_empty() {
        return Err(VerifyError::UnknownKey { method: Method::OpenPgp, fingerprint: issuer });
    }
    let mut bad = None;
    for &(cert, key) in &candidates {
        let result = match key {
            KeyRef::Primary => sig.verify(&cert.primary_key, payload),
            KeyRef::Subkey(i) => sig.verify(&cert.public_subkeys[i].key, payload),
        };
        match result {
            Ok(()) => {
                check_key(cert, key, created)?;
                let user_id = user_id(cert, created).unwrap_or_else(|| "(no valid user id)".into());
                if let Some(committer) = committer {
                    check_committer(cert, key, created, committer, &user_id)?;
                }
                return Ok(PgpVerified {
                    fingerprint: hex_fingerprint(&key.fingerprint(cert)),
                    primary_fingerprint: hex_fingerprint(&cert.primary_key.fingerprint()),
                    user_id,
                    signed_at: created,
                });
            }
            Err(e) => {
                bad.get_or_insert((hex_fingerprint(&key.fingerprint(cert)), e));
            }
        }
    }
    let (fingerprint, e) = bad.expect("at least one candidate failed");
    Err(VerifyError::BadSignature { method: Method::OpenPgp, fingerprint, source: Some(Box::new(e)) })
}

/// Whether a revocation applies at `t`: "superseded" and "retired" from
/// their date on, anything else (compromised, no or unknown reason) always.
fn revocation_applies(rev: &Signature, t: UnixTime) -> bool {
    match rev.revocation_reason_code() {
        Some(RevocationCode::KeySuperseded | RevocationCode::KeyRetired) => {
            rev.created().map(time).is_some_and(|r| r <= t)
        }
        _ => true,
    }
}

fn revoked_error(fp: &Fingerprint, rev: &Signature) -> VerifyError {
    let reason = match rev.revocation_reason_code() {
        None => "no reason given".to_owned(),
        Some(code) => {
            let text = rev
                .revocation_reason_string()
                .map(|s| String::from_utf8_lossy(s).trim().to_owned())
                .filter(|s| !s.is_empty());
            match text {
                Some(text) => format!("{code:?}: {text}"),
                None => format!("{code:?}"),
            }
        }
    };
    VerifyError::RevokedKey {
        fingerprint: hex_fingerprint(fp),
        reason,
        revoked_at: rev.created().map(time).unwrap_or(UnixTime(0)).to_system_time(),
    }
}

/// Self-signatures binding the primary key: direct-key signatures and
/// certifications of its user IDs by itself, all verified.
fn self_signatures(cert: &SignedPublicKey) -> Vec<&Signature> {
    let primary = &cert.primary_key;
    let direct = cert
        .details
        .direct_signatures
        .iter()
        .filter(|s| s.typ() == Some(SignatureType::Key) && s.verify_key(primary).is_ok());
    let certifications = cert.details.users.iter().flat_map(|user| {
        user.signatures.iter().filter(move |s| {
            s.is_certification()
                && names_key(s, primary)
                && s.verify_certification(primary, Tag::UserId, &user.id).is_ok()
        })
    });
    direct.chain(certifications).collect()
}

/// The binding in force at `t`: the newest of `sigs` made at or before
/// `t`. When all were made later — gpg keeps only the newest self-signature,
/// so changing a key's expiry leaves no older one — the earliest of them
/// stands in: the key itself existed at `t` (its creation time is checked
/// apart), and that binding's expiry is the one closest to `t`.
fn binding_at<'a>(
    sigs: impl IntoIterator<Item = &'a Signature>,
    t: UnixTime,
    fp: &Fingerprint,
    what: &str,
) -> Result<&'a Signature, VerifyError> {
    select_at(sigs, t).ok_or_else(|| VerifyError::NotSigningKey {
        fingerprint: hex_fingerprint(fp),
        reason: format!("it has no valid {what}"),
    })
}

/// See [`binding_at`]: newest at or before `t`, else earliest after.
fn select_at<'a>(sigs: impl IntoIterator<Item = &'a Signature>, t: UnixTime) -> Option<&'a Signature> {
    let mut newest_before: Option<(&Signature, UnixTime)> = None;
    let mut earliest_after: Option<(&Signature, UnixTime)> = None;
    for sig in sigs {
        let Some(c) = sig.created().map(time) else {
            continue;
        };
        if c <= t {
            if newest_before.is_none_or(|(_, n)| c >= n) {
                newest_before = Some((sig, c));
            }
        } else if earliest_after.is_none_or(|(_, e)| c < e) {
            earliest_after = Some((sig, c));
        }
    }
    newest_before.or(earliest_after).map(|(sig, _)| sig)
}

fn check_expiry(binding: &Signature, key_created: UnixTime, t: UnixTime, fp: &Fingerprint) -> Result<(), VerifyError> {
    if let Some(lifetime) = binding.key_expiration_time() {
        let secs = std::time::Duration::from(lifetime).as_secs();
        if secs > 0 {
            let expires = UnixTime(key_created.0 + i64::try_from(secs).unwrap_or(i64::MAX / 2));
            if expires <= t {
                return Err(VerifyError::ExpiredKey {
                    method: Method::OpenPgp,
                    fingerprint: hex_fingerprint(fp),
                    expired_at: expires.to_system_time(),
                    signed_at: t.to_system_time(),
                });
            }
        }
    }
    Ok(())
}

fn has_key_flags(sig: &Signature) -> bool {
    sig.config().is_some_and(|c| c.hashed_subpackets().any(|p| matches!(p.data, SubpacketData::KeyFlags(_))))
}

fn not_yet_valid(fp: &Fingerprint, from: UnixTime, t: UnixTime) -> VerifyError {
    VerifyError::KeyNotYetValid {
        method: Method::OpenPgp,
        fingerprint: hex_fingerprint(fp),
        valid_from: from.to_system_time(),
        signed_at: t.to_system_time(),
    }
}

/// Whether `key` of `cert` could make a valid signature at `t`.
fn check_key(cert: &SignedPublicKey, key: KeyRef, t: UnixTime) -> Result<(), VerifyError> {
    let primary = &cert.primary_key;
    let primary_fp = primary.fingerprint();
    for rev in &cert.details.revocation_signatures {
        if rev.typ() == Some(SignatureType::KeyRevocation)
            && rev.verify_key(primary).is_ok()
            && revocation_applies(rev, t)
        {
            return Err(revoked_error(&primary_fp, rev));
        }
    }
    let primary_created = time(primary.created_at());
    if primary_created > t {
        return Err(not_yet_valid(&primary_fp, primary_created, t));
    }
    let self_sigs = self_signatures(cert);
    let self_sig = binding_at(self_sigs.iter().copied(), t, &primary_fp, "self-signature")?;
    check_expiry(self_sig, primary_created, t, &primary_fp)?;

    match key {
        KeyRef::Primary => {
            if has_key_flags(self_sig) && !self_sig.key_flags().sign() {
                return Err(VerifyError::NotSigningKey {
                    fingerprint: hex_fingerprint(&primary_fp),
                    reason: "its key flags do not allow signing".into(),
                });
            }
        }
        KeyRef::Subkey(i) => {
            let sub = &cert.public_subkeys[i];
            let sub_fp = sub.key.fingerprint();
            for rev in &sub.signatures {
                if rev.typ() == Some(SignatureType::SubkeyRevocation)
                    && rev.verify_subkey_binding(primary, &sub.key).is_ok()
                    && revocation_applies(rev, t)
                {
                    return Err(revoked_error(&sub_fp, rev));
                }
            }
            let sub_created = time(sub.key.created_at());
            if sub_created > t {
                return Err(not_yet_valid(&sub_fp, sub_created, t));
            }
            let bindings = sub.signatures.iter().filter(|s| {
                s.typ() == Some(SignatureType::SubkeyBinding) && s.verify_subkey_binding(primary, &sub.key).is_ok()
            });
            let binding = binding_at(bindings, t, &sub_fp, "subkey binding signature")?;
            check_expiry(binding, sub_created, t, &sub_fp)?;
            if !binding.key_flags().sign() {
                return Err(VerifyError::NotSigningKey {
                    fingerprint: hex_fingerprint(&sub_fp),
                    reason: "the subkey's binding does not allow signing".into(),
                });
            }
            let back_signed = binding
                .embedded_signature()
                .is_some_and(|back| back.verify_primary_key_binding(&sub.key, primary).is_ok());
            if !back_signed {
                return Err(VerifyError::NotSigningKey {
                    fingerprint: hex_fingerprint(&sub_fp),
                    reason: "the signing subkey has no valid back-signature \
                             (primary key binding); it may belong to someone else"
                        .into(),
                });
            }
        }
    }
    Ok(())
}

/// The certificate's user IDs that are bound and not revoked at `t`,
/// the primary one first.
fn valid_user_ids(cert: &SignedPublicKey, t: UnixTime) -> Vec<String> {
    let primary = &cert.primary_key;
    let mut ids: Vec<(bool, UnixTime, String)> = Vec::new();
    for user in &cert.details.users {
        let verified =
            |s: &&Signature| names_key(s, primary) && s.verify_certification(primary, Tag::UserId, &user.id).is_ok();
        let newest = select_at(user.signatures.iter().filter(verified), t);
        if let Some(newest) = newest
            && newest.typ() != Some(SignatureType::CertRevocation)
        {
            let created = newest.created().map(time).unwrap_or(UnixTime(0));
            ids.push((newest.is_primary(), created, String::from_utf8_lossy(user.id.id()).into_owned()));
        }
    }
    // Primary first, then the most recently bound.
    ids.sort_by(|a, b| b.0.cmp(&a.0).then(b.1.cmp(&a.1)));
    ids.into_iter().map(|(_, _, id)| id).collect()
}

fn user_id(cert: &SignedPublicKey, t: UnixTime) -> Option<String> {
    valid_user_ids(cert, t).into_iter().next()
}

/// The address in a user ID: what is inside `<…>`, or the whole ID when it
/// is a bare address.
fn email_of(user_id: &str) -> Option<&str> {
    match (user_id.rfind('<'), user_id.rfind('>')) {
        (Some(open), Some(close)) if open < close => Some(&user_id[open + 1..close]),
        _ if user_id.contains('@') && !user_id.contains(' ') => Some(user_id),
        _ => None,
    }
}

fn check_committer(
    cert: &SignedPublicKey,
    key: KeyRef,
    t: UnixTime,
    committer: &str,
    user_id: &str,
) -> Result<(), VerifyError> {
    let ids = valid_user_ids(cert, t);
    if ids.iter().filter_map(|id| email_of(id)).any(|email| email.eq_ignore_ascii_case(committer)) {
        return Ok(());
    }
    Err(VerifyError::SignerNotCommitter {
        method: Method::OpenPgp,
        fingerprint: hex_fingerprint(&key.fingerprint(cert)),
        committer: committer.to_owned(),
        signer: user_id.to_owned(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn emails_in_user_ids() {
        assert_eq!(email_of("Alice <alice@example.com>"), Some("alice@example.com"));
        assert_eq!(email_of("alice@example.com"), Some("alice@example.com"));
        assert_eq!(email_of("Alice (work)"), None);
        assert_eq!(email_of("x> <y"), None);
    }

    #[test]
    fn keyring_refuses_what_is_not_openpgp() {
        for bad in [&b""[..], b"hello", b"ssh-ed25519 AAAA"] {
            let e = Keyring::parse(bad).unwrap_err();
            assert!(e.to_string().contains("neither armored"), "{e}");
        }
        let e = Keyring::parse(b"-----BEGIN PGP PUBLIC KEY BLOCK-----\n\n!!!!\n-----END PGP PUBLIC KEY BLOCK-----\n")
            .unwrap_err();
        assert!(e.to_string().starts_with("OpenPGP keyring: "), "{e}");
    }

    #[test]
    fn armored_blocks_are_found_between_text() {
        let text = b"junk\n-----BEGIN PGP A-----\nx\n-----END PGP A-----\nmid\n\
                     -----BEGIN PGP B-----\ny\n-----END PGP B-----";
        let blocks = armored_blocks(text);
        assert_eq!(blocks.len(), 2);
        assert!(blocks[0].ends_with(b"-----END PGP A-----\n"));
        assert!(blocks[1].ends_with(b"-----END PGP B-----"));
    }
}
