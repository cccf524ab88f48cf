//! SSH signatures (git's `gpg.format = ssh`): the SSHSIG format of
//! OpenSSH's PROTOCOL.sshsig, checked against an `allowed_signers` file as
//! `ssh-keygen -Y find-principals` and `ssh-keygen -Y verify -n git` do.

use ssh_key::{HashAlg, PublicKey, SshSig};

use crate::error::{AllowedSignersError, BoxError, Method, VerifyError};
use crate::pattern::{self, ListMatch};
use crate::time::{UnixTime, parse_ssh_time};

/// The namespace git signs commits and tags in.
const GIT_NAMESPACE: &str = "git";

/// Trusted SSH keys, parsed from a file in OpenSSH's `allowed_signers`
/// format (ssh-keygen(1), "ALLOWED SIGNERS"):
///
/// ```text
/// # comment
/// alice@example.com ssh-ed25519 AAAAC3Nza… alice's laptop
/// *@ops.example.com,!intern@ops.example.com namespaces="git",valid-before="20270101Z" ecdsa-sha2-nistp256 AAAA…
/// "Bob the Builder" valid-after="20240101" ssh-rsa AAAA…
/// ```
///
/// * principals: a comma-separated pattern-list (`*`, `?`, `!negation`),
///   double-quoted when it holds spaces;
/// * options (case-insensitive, comma-separated, values double-quoted):
///   `namespaces="…"` (a pattern-list the namespace `git` must match),
///   `valid-after="…"` and `valid-before="…"` (`YYYYMMDD[Z]` or
///   `YYYYMMDDHHMM[SS][Z]`, read as UTC — OpenSSH reads a time without
///   `Z` in local time), and `cert-authority`;
/// * the public key, with an optional comment.
///
/// Lines marked `cert-authority` are read but authorize nothing: signatures
/// made with SSH certificates are refused (see
/// [`VerifyError::Unsupported`]), so list the signing keys themselves.
#[derive(Clone, Debug)]
pub struct AllowedSigners {
    entries: Vec<Entry>,
}

#[derive(Clone, Debug)]
struct Entry {
    line: usize,
    principals: String,
    namespaces: Option<String>,
    valid_after: Option<UnixTime>,
    valid_before: Option<UnixTime>,
    cert_authority: bool,
    key: PublicKey,
}

fn line_error(line: usize, reason: impl Into<String>) -> AllowedSignersError {
    AllowedSignersError { line, reason: reason.into(), source: None }
}

impl AllowedSigners {
    /// Reads an `allowed_signers` file. Any line that OpenSSH would refuse
    /// is an error naming its line number; nothing is skipped silently.
    pub fn parse(text: &str) -> Result<Self, AllowedSignersError> {
        let mut entries = Vec::new();
        for (index, line) in text.lines().enumerate() {
            let line_no = index + 1;
            let line = line.trim_start_matches([' ', '\t', '\r']);
            if line.is_empty() || line.starts_with('#') || line.trim_end().is_empty() {
                continue;
            }
            entries.push(parse_line(line_no, line)?);
        }
        Ok(AllowedSigners { entries })
    }

    /// How many keys are listed.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether no key is listed.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The principals listed for a key given in OpenSSH form
    /// (`ssh-ed25519 AAAA…`), in file order. For diagnostics and tests.
    pub fn principals_for(&self, openssh_key: &str) -> Vec<&str> {
        let Ok(key) = PublicKey::from_openssh(openssh_key.trim()) else {
            return Vec::new();
        };
        self.entries
            .iter()
            .filter(|e| !e.cert_authority && e.key.key_data() == key.key_data())
            .map(|e| e.principals.as_str())
            .collect()
    }
}

/// Splits one whitespace-delimited field, honouring a double-quoted one.
/// Returns the field and the rest, whitespace skipped.
fn principals_field(line_no: usize, line: &str) -> Result<(String, &str), AllowedSignersError> {
    let (field, rest) = if let Some(quoted) = line.strip_prefix('"') {
        let end = quoted.find('"').ok_or_else(|| line_error(line_no, "the quoted principals have no closing quote"))?;
        (&quoted[..end], &quoted[end + 1..])
    } else {
        let end = line.find([' ', '\t']).unwrap_or(line.len());
        let field = &line[..end];
        if field.contains('"') {
            return Err(line_error(line_no, "a quote inside the principals; quote the whole field"));
        }
        (field, &line[end..])
    };
    if field.is_empty() {
        return Err(line_error(line_no, "empty principals"));
    }
    Ok((field.to_owned(), rest.trim_start_matches([' ', '\t'])))
}

/// Whether a word names an SSH public key type, so it starts the key
/// rather than the options.
fn is_key_type(word: &str) -> bool {
    matches!(
        word,
        "ssh-ed25519" | "ssh-rsa" | "ssh-dss" | "ecdsa-sha2-nistp256" | "ecdsa-sha2-nistp384" | "ecdsa-sha2-nistp521"
    ) || (word.contains('@') && !word.contains(['=', '"', ',']))
}

fn parse_line(line_no: usize, line: &str) -> Result<Entry, AllowedSignersError> {
    let (principals, rest) = principals_field(line_no, line)?;
    let first_word = rest.split([' ', '\t']).next().unwrap_or("");
    let (options, key_text) = if first_word.is_empty() {
        return Err(line_error(line_no, "no public key after the principals"));
    } else if is_key_type(first_word) {
        ("", rest)
    } else {
        // Options run to the first blank outside double quotes; `\"` is
        // an escaped quote (OpenSSH's `sshkey_advance_past_options`).
        let bytes = rest.as_bytes();
        let (mut quoted, mut i, mut end) = (false, 0, None);
        while i < bytes.len() {
            match bytes[i] {
                b'\\' if bytes.get(i + 1) == Some(&b'"') => i += 1,
                b'"' => quoted = !quoted,
                b' ' | b'\t' if !quoted => {
                    end = Some(i);
                    break;
                }
                _ => {}
            }
            i += 1;
        }
        if quoted {
            return Err(line_error(line_no, "an option value has no closing quote"));
        }
        let end = end.ok_or_else(|| line_error(line_no, "no public key after the options"))?;
        (&rest[..end], rest[end..].trim_start_matches([' ', '\t']))
    };
    let key_text = key_text.trim_end();
    if key_text.is_empty() {
        return Err(line_error(line_no, "no public key after the options"));
    }
    let key = PublicKey::from_openssh(key_text).map_err(|e| AllowedSignersError {
        line: line_no,
        reason: format!(
            "not a public key in OpenSSH form (\"ssh-ed25519 AAAA… comment\"): {:?}",
            truncate(key_text, 40)
        ),
        source: Some(Box::new(e)),
    })?;
    let mut entry = Entry {
        line: line_no,
        principals,
        namespaces: None,
        valid_after: None,
        valid_before: None,
        cert_authority: false,
        key,
    };
    parse_options(line_no, options, &mut entry)?;
    Ok(entry)
}

fn truncate(text: &str, max: usize) -> String {
    match text.char_indices().nth(max) {
        Some((i, _)) => format!("{}…", &text[..i]),
        None => text.to_owned(),
    }
}

/// Reads `namespaces="…"`, `valid-after="…"`, `valid-before="…"` and
/// `cert-authority`, as OpenSSH's `sshsigopt_parse` does.
fn parse_options(line_no: usize, mut opts: &str, entry: &mut Entry) -> Result<(), AllowedSignersError> {
    while !opts.is_empty() {
        let name_end = opts.find(['=', ',']).unwrap_or(opts.len());
        let name = opts[..name_end].to_ascii_lowercase();
        opts = &opts[name_end..];
        if name == "cert-authority" {
            if opts.starts_with('=') {
                return Err(line_error(line_no, "cert-authority takes no value"));
            }
            entry.cert_authority = true;
        } else {
            if !matches!(name.as_str(), "namespaces" | "valid-after" | "valid-before") {
                return Err(line_error(
                    line_no,
                    format!(
                        "unknown option {name:?} (known: namespaces, valid-after, \
                         valid-before, cert-authority)"
                    ),
                ));
            }
            let value = match opts.strip_prefix("=\"") {
                Some(quoted) => {
                    let mut value = String::new();
                    let mut chars = quoted.char_indices();
                    let mut end = None;
                    while let Some((i, c)) = chars.next() {
                        match c {
                            '\\' if quoted[i + 1..].starts_with('"') => {
                                value.push('"');
                                chars.next();
                            }
                            '"' => {
                                end = Some(i + 1);
                                break;
                            }
                            c => value.push(c),
                        }
                    }
                    let end = end.ok_or_else(|| line_error(line_no, format!("option {name}: no closing quote")))?;
                    opts = &quoted[end..];
                    value
                }
                None => {
                    return Err(line_error(
                        line_no,
                        format!("option {name} needs a double-quoted value: {name}=\"…\""),
                    ));
                }
            };
            let time = |what: &str, value: &str| {
                parse_ssh_time(value).map_err(|reason| line_error(line_no, format!("{what}: {reason}")))
            };
            let duplicate = || line_error(line_no, format!("option {name} given twice"));
            match name.as_str() {
                "namespaces" if entry.namespaces.is_none() => entry.namespaces = Some(value),
                "valid-after" if entry.valid_after.is_none() => entry.valid_after = Some(time("valid-after", &value)?),
                "valid-before" if entry.valid_before.is_none() => {
                    entry.valid_before = Some(time("valid-before", &value)?)
                }
                _ => return Err(duplicate()),
            }
        }
        match opts.strip_prefix(',') {
            Some(rest) => opts = rest,
            None if opts.is_empty() => {}
            None => {
                return Err(line_error(line_no, format!("unexpected text after an option: {:?}", truncate(opts, 20))));
            }
        }
    }
    if let (Some(after), Some(before)) = (entry.valid_after, entry.valid_before)
        && before <= after
    {
        return Err(line_error(line_no, "valid-before is not after valid-after"));
    }
    Ok(())
}

/// Minimal reading of the SSHSIG wire format, to tell apart what
/// `ssh-key` would only report as "cannot decode": certificates, SHA-1 RSA
/// signatures, unknown hashes.
struct Envelope {
    /// `SHA256:…` of the signer's key blob, as ssh-keygen prints it.
    key_fingerprint: String,
    key_algorithm: String,
    hash_algorithm: String,
    signature_algorithm: String,
}

fn read_string<'a>(buf: &mut &'a [u8]) -> Option<&'a [u8]> {
    let (len, rest) = buf.split_first_chunk::<4>()?;
    let len = usize::try_from(u32::from_be_bytes(*len)).ok()?;
    if rest.len() < len {
        return None;
    }
    let (s, rest) = rest.split_at(len);
    *buf = rest;
    Some(s)
}

fn envelope(armored: &str) -> Option<Envelope> {
    let body: String = armored
        .lines()
        .map(str::trim)
        .skip_while(|l| *l != "-----BEGIN SSH SIGNATURE-----")
        .skip(1)
        .take_while(|l| *l != "-----END SSH SIGNATURE-----")
        .collect();
    use base64ct::Encoding as _;
    let blob = base64ct::Base64::decode_vec(&body).ok()?;
    let mut buf = blob.strip_prefix(b"SSHSIG")?.get(4..)?;
    let key_blob = read_string(&mut buf)?;
    let mut key = key_blob;
    let key_algorithm = read_string(&mut key)?;
    let _namespace = read_string(&mut buf)?;
    let _reserved = read_string(&mut buf)?;
    let hash_algorithm = read_string(&mut buf)?;
    let mut signature = read_string(&mut buf)?;
    let signature_algorithm = read_string(&mut signature)?;
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    let plain = certified_key(key_blob);
    let digest = HashAlg::Sha256.digest(plain.as_deref().unwrap_or(key_blob));
    let key_fingerprint = format!("SHA256:{}", base64ct::Base64Unpadded::encode_string(&digest));
    Some(Envelope {
        key_fingerprint,
        key_algorithm: text(key_algorithm),
        hash_algorithm: text(hash_algorithm),
        signature_algorithm: text(signature_algorithm),
    })
}

/// The plain key blob inside a certificate blob, which ssh-keygen names a
/// certificate by (`ssh_key::Certificate` cannot be used: in 0.6 it fails
/// to decode certificates valid "forever").
fn certified_key(cert: &[u8]) -> Option<Vec<u8>> {
    let mut buf = cert;
    let algorithm = std::str::from_utf8(read_string(&mut buf)?).ok()?;
    let plain = algorithm.strip_suffix("-cert-v01@openssh.com")?;
    let _nonce = read_string(&mut buf)?;
    let fields = match plain {
        "ssh-ed25519" => 1,
        "ssh-rsa" | "ecdsa-sha2-nistp256" | "ecdsa-sha2-nistp384" | "ecdsa-sha2-nistp521" => 2,
        "sk-ssh-ed25519@openssh.com" => 2,
        "sk-ecdsa-sha2-nistp256@openssh.com" => 3,
        "ssh-dss" => 4,
        _ => return None,
    };
    let start = buf;
    for _ in 0..fields {
        read_string(&mut buf)?;
    }
    let key_fields = &start[..start.len() - buf.len()];
    let mut out = Vec::with_capacity(4 + plain.len() + key_fields.len());
    out.extend_from_slice(&u32::try_from(plain.len()).ok()?.to_be_bytes());
    out.extend_from_slice(plain.as_bytes());
    out.extend_from_slice(key_fields);
    Some(out)
}

/// What an SSH verification needs besides the signature.
pub(crate) struct Context<'a> {
    /// The committer's (tagger's) time: keys are judged valid at it, as git
    /// passes `-Overify-time` to ssh-keygen.
    pub(crate) signed_at: UnixTime,
    /// When the policy requires it, the committer's email, which must match
    /// the principals of the key's line.
    pub(crate) committer: Option<&'a str>,
}

pub(crate) struct SshVerified {
    pub(crate) fingerprint: String,
    /// The principal accepted: one of the key's line, or the committer.
    pub(crate) principal: String,
}

fn malformed(reason: impl Into<String>, source: Option<BoxError>) -> VerifyError {
    VerifyError::MalformedSignature { method: Method::Ssh, reason: reason.into(), source }
}

pub(crate) fn verify(
    signers: &AllowedSigners,
    payload: &[u8],
    armored: &[u8],
    cx: &Context<'_>,
) -> Result<SshVerified, VerifyError> {
    let armored =
        std::str::from_utf8(armored).map_err(|e| malformed("the armored signature is not ASCII", Some(Box::new(e))))?;
    let envelope =
        envelope(armored).ok_or_else(|| malformed("not an SSHSIG signature (bad armor, base64 or layout)", None))?;
    if envelope.key_algorithm.ends_with("-cert-v01@openssh.com") {
        return Err(VerifyError::Unsupported {
            what: "an SSH signature made with a certificate".into(),
            reason: format!(
                "{} certificate of key {} is not accepted; list the signing key itself in \
                 ssh_allowed_signers",
                envelope.key_algorithm, envelope.key_fingerprint
            ),
        });
    }
    if envelope.signature_algorithm == "ssh-rsa" {
        return Err(VerifyError::WeakHash {
            method: Method::Ssh,
            fingerprint: envelope.key_fingerprint,
            algorithm: "SHA-1 (ssh-rsa)".into(),
        });
    }
    let sig = SshSig::from_pem(armored).map_err(|e| {
        malformed(
            format!(
                "cannot decode the SSHSIG by {} ({} key, {} signature, {} hash)",
                envelope.key_fingerprint, envelope.key_algorithm, envelope.signature_algorithm, envelope.hash_algorithm
            ),
            Some(Box::new(e)),
        )
    })?;
    let fingerprint = sig.public_key().fingerprint(HashAlg::Sha256).to_string();
    if sig.namespace() != GIT_NAMESPACE {
        return Err(VerifyError::WrongNamespace {
            namespace: sig.namespace().to_owned(),
            detail: format!(
                "the signature was made for namespace {:?}, not \"git\": it is not a git \
                 signature (ssh-keygen -Y sign -n git makes one); re-sign the object with git",
                sig.namespace()
            ),
            fingerprint,
        });
    }
    let listed: Vec<&Entry> =
        signers.entries.iter().filter(|e| !e.cert_authority && e.key.key_data() == sig.public_key()).collect();
    let Some(first) = listed.first().copied() else {
        return Err(VerifyError::UnknownKey { method: Method::Ssh, fingerprint });
    };
    first.key.verify(GIT_NAMESPACE, payload, &sig).map_err(|e| VerifyError::BadSignature {
        method: Method::Ssh,
        fingerprint: fingerprint.clone(),
        source: Some(Box::new(e)),
    })?;
    decide(&listed, &fingerprint, cx)
}

/// Which principal the signature is accepted for, as git decides with
/// ssh-keygen:
///
/// 1. `find-principals`: the first line listing the key whose validity
///    window contains the committer date gives the candidate principals
///    (its comma-separated principals field, split). Namespaces play no
///    part in this step.
/// 2. `verify -I <principal>` for each candidate in turn: accepted when any
///    line listing the key has a principals pattern-list matching the
///    candidate, allows namespace `git` and is valid at the date.
///
/// With [`Context::committer`], step 1 is skipped and the committer's email
/// is the only candidate (`ssh-keygen -Y verify -I <email>`).
fn decide(listed: &[&Entry], fingerprint: &str, cx: &Context<'_>) -> Result<SshVerified, VerifyError> {
    let candidates: Vec<&str> = match cx.committer {
        Some(committer) => vec![committer],
        None => {
            let found = listed.iter().find(|e| check_time(e, fingerprint, cx).is_ok());
            let Some(found) = found else {
                return Err(check_time(listed[0], fingerprint, cx).expect_err("no line is valid then"));
            };
            found.principals.split(',').collect()
        }
    };
    let mut first_error = None;
    for candidate in candidates {
        for entry in listed.iter().filter(|e| pattern::match_list(candidate, &e.principals) == ListMatch::Yes) {
            match check_namespace(entry, fingerprint).and_then(|()| check_time(entry, fingerprint, cx)) {
                Ok(()) => {
                    return Ok(SshVerified { fingerprint: fingerprint.to_owned(), principal: candidate.to_owned() });
                }
                Err(e) => {
                    first_error.get_or_insert(e);
                }
            }
        }
    }
    Err(first_error.unwrap_or_else(|| VerifyError::SignerNotCommitter {
        method: Method::Ssh,
        fingerprint: fingerprint.to_owned(),
        committer: cx.committer.unwrap_or_default().to_owned(),
        signer: listed.iter().map(|e| e.principals.as_str()).collect::<Vec<_>>().join(" / "),
    }))
}

fn check_namespace(entry: &Entry, fingerprint: &str) -> Result<(), VerifyError> {
    if let Some(namespaces) = &entry.namespaces
        && pattern::match_list(GIT_NAMESPACE, namespaces) != ListMatch::Yes
    {
        return Err(VerifyError::WrongNamespace {
            fingerprint: fingerprint.to_owned(),
            namespace: GIT_NAMESPACE.into(),
            detail: format!(
                "allowed_signers line {} allows the key only for namespaces {namespaces:?}; \
                 add \"git\" to its namespaces= option",
                entry.line
            ),
        });
    }
    Ok(())
}

fn check_time(entry: &Entry, fingerprint: &str, cx: &Context<'_>) -> Result<(), VerifyError> {
    if let Some(after) = entry.valid_after
        && cx.signed_at < after
    {
        return Err(VerifyError::KeyNotYetValid {
            method: Method::Ssh,
            fingerprint: fingerprint.to_owned(),
            valid_from: after.to_system_time(),
            signed_at: cx.signed_at.to_system_time(),
        });
    }
    if let Some(before) = entry.valid_before
        && cx.signed_at > before
    {
        return Err(VerifyError::ExpiredKey {
            method: Method::Ssh,
            fingerprint: fingerprint.to_owned(),
            expired_at: before.to_system_time(),
            signed_at: cx.signed_at.to_system_time(),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const ED: &str = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIDmtXQmBnnbvUhCtaQT5Krh0pMhqBIc3Ncgz4CKXfkQN";

    fn one(text: &str) -> Entry {
        let signers = AllowedSigners::parse(text).unwrap_or_else(|e| panic!("{text}: {e}"));
        assert_eq!(signers.len(), 1);
        signers.entries.into_iter().next().unwrap()
    }

    fn error(text: &str) -> AllowedSignersError {
        match AllowedSigners::parse(text) {
            Ok(_) => panic!("{text:?} should be refused"),
            Err(e) => e,
        }
    }

    /// An SSHSIG envelope in wire format, to test its classification
    /// (no cryptography involved: these never reach verification).
    fn envelope_pem(key_algorithm: &str, signature_algorithm: &str) -> String {
        fn string(out: &mut Vec<u8>, s: &[u8]) {
            out.extend_from_slice(&u32::try_from(s.len()).unwrap().to_be_bytes());
            out.extend_from_slice(s);
        }
        let (mut key, mut sig, mut blob) = (Vec::new(), Vec::new(), b"SSHSIG\0\0\0\x01".to_vec());
        string(&mut key, key_algorithm.as_bytes());
        string(&mut key, &[7; 32]);
        string(&mut sig, signature_algorithm.as_bytes());
        string(&mut sig, &[9; 64]);
        for field in [&key[..], b"git", b"", b"sha512", &sig] {
            string(&mut blob, field);
        }
        use base64ct::Encoding as _;
        let body = base64ct::Base64::encode_string(&blob);
        format!("-----BEGIN SSH SIGNATURE-----\n{body}\n-----END SSH SIGNATURE-----\n")
    }

    #[test]
    fn sha1_rsa_and_certificate_envelopes_are_named() {
        let signers = AllowedSigners::parse("").unwrap();
        let cx = Context { signed_at: UnixTime(0), committer: None };
        let e = verify(&signers, b"", envelope_pem("ssh-rsa", "ssh-rsa").as_bytes(), &cx).err().unwrap();
        assert!(matches!(&e, VerifyError::WeakHash { fingerprint, .. } if fingerprint.starts_with("SHA256:")), "{e}");
        let pem = envelope_pem("ssh-ed25519-cert-v01@openssh.com", "ssh-ed25519");
        let e = verify(&signers, b"", pem.as_bytes(), &cx).err().unwrap();
        assert!(matches!(e, VerifyError::Unsupported { .. }) && e.to_string().contains("SHA256:"), "{e}");
        let e = verify(&signers, b"", b"-----BEGIN SSH SIGNATURE-----\n!!\n", &cx).err().unwrap();
        assert!(matches!(e, VerifyError::MalformedSignature { .. }), "{e}");
    }

    #[test]
    fn comments_blank_lines_and_key_comments() {
        let text = format!("# team keys\n\n   \t\n  # indented comment\nalice@example.com {ED} alice laptop\r\n");
        let signers = AllowedSigners::parse(&text).unwrap();
        assert_eq!(signers.len(), 1);
        let e = &signers.entries[0];
        assert_eq!((e.line, e.principals.as_str()), (5, "alice@example.com"));
        assert_eq!(e.key.comment(), "alice laptop");
        assert_eq!(signers.principals_for(ED), ["alice@example.com"]);
    }

    #[test]
    fn quoted_principals_with_spaces() {
        let e = one(&format!("\"Alice Example,bob smith\" {ED}"));
        assert_eq!(e.principals, "Alice Example,bob smith");
        let e = one(&format!("\"*@x.org\" namespaces=\"git\" {ED}"));
        assert_eq!(e.principals, "*@x.org");
        assert_eq!(e.namespaces.as_deref(), Some("git"));
    }

    #[test]
    fn all_options_together() {
        let e = one(&format!(
            "a@x,b@x Namespaces=\"git,file\",VALID-AFTER=\"20240101\",valid-before=\"202501011200Z\" {ED}"
        ));
        assert_eq!(e.principals, "a@x,b@x");
        assert_eq!(e.namespaces.as_deref(), Some("git,file"));
        assert_eq!(e.valid_after, Some(UnixTime(1_704_067_200)));
        assert_eq!(e.valid_before, Some(UnixTime(1_735_732_800)));
        assert!(!e.cert_authority);
        let e = one(&format!("*@x cert-authority,namespaces=\"a b\\\"c\" {ED}"));
        assert!(e.cert_authority);
        assert_eq!(e.namespaces.as_deref(), Some("a b\"c"));
    }

    #[test]
    fn malformed_lines_name_their_line() {
        let cases = [
            ("a@x", "no public key"),
            ("a@x namespaces=\"git\"", "no public key"),
            (&format!("a@x unknown=\"1\" {ED}"), "unknown option"),
            (&format!("a@x namespaces=git {ED}"), "double-quoted"),
            (&format!("a@x namespaces=\"git {ED}"), "no closing quote"),
            (&format!("\"a@x {ED}"), "no closing quote"),
            (&format!("a\"b {ED}"), "quote inside"),
            (&format!("a@x valid-after=\"2024\" {ED}"), "valid-after"),
            (&format!("a@x valid-after=\"20240102\",valid-before=\"20240101\" {ED}"), "not after"),
            (&format!("a@x namespaces=\"a\",namespaces=\"b\" {ED}"), "twice"),
            (&format!("a@x cert-authority=\"1\" {ED}"), "no value"),
            (&format!("a@x namespaces=\"git\"x {ED}"), "unexpected text"),
            ("a@x ssh-ed25519 AAAAnotbase64!", "not a public key"),
            ("a@x ssh-ed25519", "not a public key"),
        ];
        for (line, expected) in cases {
            let text = format!("# header\n\n{line}\n");
            let e = error(&text);
            assert_eq!(e.line, 3, "{line}: {e}");
            assert!(e.to_string().contains(expected), "{line}: {e}");
            assert!(e.to_string().starts_with("allowed_signers line 3: "), "{e}");
        }
        let e = error("a@x ssh-ed25519 AAAAnotbase64!");
        assert!(std::error::Error::source(&e).is_some(), "the key error is kept");
    }
}
