//! Taking a signature out of a raw git object the way git does, so that the
//! payload handed to the verifier is byte for byte what the signer signed.
//!
//! * Commits carry the signature in a `gpgsig` header (`gpgsig-sha256` in a
//!   SHA-256 repository) whose value continues on lines starting with one
//!   space. The payload is the commit with that header removed; a signature
//!   header of the *other* object format (present in repositories converting
//!   between SHA-1 and SHA-256) is removed from the payload too. This is
//!   git's `parse_buffer_signed_by_header`.
//! * Annotated tags carry the signature after the message: it starts at the
//!   last line beginning an armored signature. The payload is everything
//!   before it, with any `gpgsig*` header removed. This is git's
//!   `parse_signature`.
//!
//! Which header is "ours" depends on the repository's object format. The
//! raw bytes say it: a `tree` (commit) or `object` (tag) id of 40 hex
//! digits is SHA-1, of 64 is SHA-256.

use crate::time::UnixTime;

/// A signed object taken apart: the bytes that were signed and the
/// armored signature over them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SignedPayload {
    /// The object without its signature, exactly as the signer signed it.
    pub payload: Vec<u8>,
    /// The armored signature (`-----BEGIN … SIGNATURE-----` … `-----END …`),
    /// with its line breaks.
    pub signature: Vec<u8>,
}

/// The lines that begin an armored signature, as git's `gpg-interface.c`
/// knows them.
const SIGNATURE_STARTS: [&[u8]; 4] = [
    b"-----BEGIN PGP SIGNATURE-----",
    b"-----BEGIN PGP MESSAGE-----",
    b"-----BEGIN SIGNED MESSAGE-----",
    b"-----BEGIN SSH SIGNATURE-----",
];

/// Lines of `buf`, each with its `\n` when it has one.
fn lines(buf: &[u8]) -> impl Iterator<Item = &[u8]> {
    buf.split_inclusive(|&b| b == b'\n')
}

/// The header of an object: the lines before the first empty line.
fn header_lines(raw: &[u8]) -> impl Iterator<Item = &[u8]> {
    lines(raw).take_while(|line| *line != b"\n")
}

/// Whether an object id in the header line `key <id>` is a SHA-256 one.
fn is_sha256_object(raw: &[u8], key: &[u8]) -> bool {
    header_lines(raw)
        .find_map(|line| line.strip_prefix(key).and_then(|rest| rest.strip_prefix(b" ")))
        .map(|id| id.trim_ascii_end().len() == 64)
        .unwrap_or(false)
}

/// Splits a raw commit (`git cat-file commit <id>`) into payload and
/// signature. `None` when the commit carries no signature for its own
/// object format.
pub fn split_commit(raw: &[u8]) -> Option<SignedPayload> {
    let ours: &[u8] = if is_sha256_object(raw, b"tree") { b"gpgsig-sha256" } else { b"gpgsig" };
    let mut payload = Vec::with_capacity(raw.len());
    let mut signature = Vec::new();
    let (mut in_signature, mut in_other_signature, mut saw_signature) = (false, false, false);
    let mut rest = raw;
    while !rest.is_empty() {
        let len = rest.iter().position(|&b| b == b'\n').map_or(rest.len(), |i| i + 1);
        let line = &rest[..len];
        let sig_value = if in_signature && line.starts_with(b" ") {
            Some(&line[1..])
        } else if let Some(value) = line.strip_prefix(ours).and_then(|r| r.strip_prefix(b" ")) {
            in_other_signature = false;
            Some(value)
        } else {
            if line.starts_with(b"gpgsig") {
                in_other_signature = true;
            } else if in_other_signature && !line.starts_with(b" ") {
                in_other_signature = false;
            }
            None
        };
        match sig_value {
            Some(value) => {
                signature.extend_from_slice(value);
                saw_signature = true;
                in_signature = true;
                rest = &rest[len..];
            }
            None if line == b"\n" => {
                // End of the header: the message is signed as it stands.
                payload.extend_from_slice(rest);
                break;
            }
            None => {
                if !in_other_signature {
                    payload.extend_from_slice(line);
                }
                in_signature = false;
                rest = &rest[len..];
            }
        }
    }
    saw_signature.then_some(SignedPayload { payload, signature })
}

/// Splits a raw annotated tag (`git cat-file tag <name>`) into payload and
/// signature. `None` when no signature follows the message.
pub fn split_tag(raw: &[u8]) -> Option<SignedPayload> {
    let mut offset = 0;
    let mut start = None;
    for line in lines(raw) {
        if SIGNATURE_STARTS.iter().any(|s| line.starts_with(s)) {
            start = Some(offset);
        }
        offset += line.len();
    }
    let start = start?;
    let (payload, signature) = raw.split_at(start);
    Some(SignedPayload { payload: remove_signature_headers(payload), signature: signature.to_vec() })
}

/// A tag's payload without `gpgsig`/`gpgsig-sha256` headers (git's
/// `remove_signature`).
fn remove_signature_headers(buf: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(buf.len());
    let mut in_signature = false;
    let mut offset = 0;
    for line in lines(buf) {
        offset += line.len();
        if in_signature && line.starts_with(b" ") {
            continue;
        }
        if line.starts_with(b"gpgsig ") || line.starts_with(b"gpgsig-sha256 ") {
            in_signature = true;
            continue;
        }
        in_signature = false;
        out.extend_from_slice(line);
        if line == b"\n" {
            out.extend_from_slice(&buf[offset..]);
            break;
        }
    }
    out
}

/// Who committed (or tagged) and when, read from the `committer` or
/// `tagger` header: `Name <email> <seconds> <±hhmm>`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Ident {
    pub(crate) email: String,
    pub(crate) time: UnixTime,
}

pub(crate) fn ident(raw: &[u8], key: &[u8]) -> Option<Ident> {
    let line = header_lines(raw).find_map(|line| line.strip_prefix(key).and_then(|rest| rest.strip_prefix(b" ")))?;
    let line = line.trim_ascii_end();
    let open = line.iter().rposition(|&b| b == b'<')?;
    let close = open + line[open..].iter().position(|&b| b == b'>')?;
    let email = String::from_utf8_lossy(&line[open + 1..close]).into_owned();
    let after = std::str::from_utf8(&line[close + 1..]).ok()?.trim_ascii();
    let seconds = after.split_ascii_whitespace().next()?;
    Some(Ident { email, time: UnixTime(seconds.parse().ok()?) })
}

#[cfg(test)]
mod tests {
    use super::*;

    const TREE1: &str = "4b825dc642cb6eb9a060e54bf8d69288fbee4904";

    fn commit_with(headers: &str, message: &str) -> Vec<u8> {
        format!(
            "tree {TREE1}\nauthor A U Thor <a@example.com> 1700000000 +0100\n\
             committer C O Mitter <c@example.com> 1700000001 -0230\n{headers}\n{message}"
        )
        .into_bytes()
    }

    #[test]
    fn commit_signature_and_payload_are_git_s() {
        let raw = commit_with(
            "gpgsig -----BEGIN SSH SIGNATURE-----\n U1NIU0lH\n -----END SSH SIGNATURE-----\n",
            "msg\n\ngpgsig not a header\n",
        );
        let split = split_commit(&raw).unwrap();
        assert_eq!(split.signature, b"-----BEGIN SSH SIGNATURE-----\nU1NIU0lH\n-----END SSH SIGNATURE-----\n");
        assert_eq!(split.payload, commit_with("", "msg\n\ngpgsig not a header\n"));
    }

    #[test]
    fn other_format_signature_is_dropped_from_payload() {
        let raw = commit_with(
            "gpgsig-sha256 -----BEGIN PGP SIGNATURE-----\n abc\n -----END PGP SIGNATURE-----\n\
             gpgsig -----BEGIN PGP SIGNATURE-----\n def\n -----END PGP SIGNATURE-----\n\
             mergetag object x\n continued\n",
            "m\n",
        );
        let split = split_commit(&raw).unwrap();
        assert_eq!(split.signature, b"-----BEGIN PGP SIGNATURE-----\ndef\n-----END PGP SIGNATURE-----\n");
        assert_eq!(split.payload, commit_with("mergetag object x\n continued\n", "m\n"));
    }

    #[test]
    fn sha256_commits_use_their_own_header() {
        let raw = format!(
            "tree {}\ncommitter C <c@x> 1 +0000\n\
             gpgsig -----BEGIN PGP SIGNATURE-----\n sha1sig\n\
             gpgsig-sha256 -----BEGIN PGP SIGNATURE-----\n sha256sig\n\nm\n",
            "a".repeat(64)
        );
        let split = split_commit(raw.as_bytes()).unwrap();
        assert_eq!(split.signature, b"-----BEGIN PGP SIGNATURE-----\nsha256sig\n");
        assert_eq!(split.payload, format!("tree {}\ncommitter C <c@x> 1 +0000\n\nm\n", "a".repeat(64)).into_bytes());
    }

    #[test]
    fn unsigned_commits_and_message_lookalikes() {
        assert_eq!(split_commit(&commit_with("", "m\n")), None);
        assert_eq!(split_commit(&commit_with("", "gpgsig -----BEGIN PGP SIGNATURE-----\n x\n")), None);
        assert_eq!(split_commit(b""), None);
    }

    #[test]
    fn tag_signature_is_the_last_armor_block() {
        let raw = b"object 4b825dc642cb6eb9a060e54bf8d69288fbee4904\ntype commit\ntag v1\n\
                    tagger T <t@x> 5 +0000\n\nrelease\n-----BEGIN PGP SIGNATURE-----\nquoted\n\
                    -----END PGP SIGNATURE-----\n-----BEGIN SSH SIGNATURE-----\nreal\n\
                    -----END SSH SIGNATURE-----\n";
        let split = split_tag(raw).unwrap();
        assert!(split.signature.starts_with(b"-----BEGIN SSH SIGNATURE-----\nreal"));
        assert!(split.payload.ends_with(b"-----END PGP SIGNATURE-----\n"));
        assert_eq!(split_tag(b"object x\ntype commit\n\nplain\n"), None);
    }

    #[test]
    fn tag_payload_loses_gpgsig_headers() {
        let raw = b"object a\ntype commit\ntag v\ntagger T <t@x> 5 +0000\n\
                    gpgsig-sha256 -----BEGIN PGP SIGNATURE-----\n other\n\nmsg\n\
                    -----BEGIN PGP SIGNATURE-----\nsig\n-----END PGP SIGNATURE-----\n";
        let split = split_tag(raw).unwrap();
        assert_eq!(split.payload, b"object a\ntype commit\ntag v\ntagger T <t@x> 5 +0000\n\nmsg\n");
    }

    #[test]
    fn committer_identity_and_time() {
        let raw = commit_with("", "m\n");
        assert_eq!(
            ident(&raw, b"committer"),
            Some(Ident { email: "c@example.com".into(), time: UnixTime(1_700_000_001) })
        );
        assert_eq!(ident(&raw, b"tagger"), None);
        let odd = b"tree x\ncommitter Name <with> bracket> <e@x> -5 +0000\n\nm\n";
        assert_eq!(ident(odd, b"committer").unwrap().time, UnixTime(-5));
        assert_eq!(ident(b"committer N <e@x>\n\n", b"committer"), None);
    }
}
