//! The `sops` metadata: reading it from a document tree (or from dotenv's
//! flattened `sops_*` keys) and writing it back.

use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::error::Error;
use crate::rules::{EncryptionRule, Rules};
use crate::text::Text;
use crate::tree::{Entry, Node};

/// The metadata key of YAML and JSON files.
pub(crate) const SOPS_KEY: &str = "sops";
/// The prefix of dotenv's flattened metadata keys.
pub(crate) const DOTENV_PREFIX: &str = "sops_";

/// The SOPS release whose file layout `encrypt` writes (metadata keys in
/// sorted order, no empty key lists).
pub(crate) const WRITTEN_VERSION: &str = "3.10.2";

/// Key types SOPS knows besides age; a file wrapped only for these is refused.
const OTHER_KEY_TYPES: [&str; 5] = ["pgp", "kms", "gcp_kms", "azure_kv", "hc_vault"];

/// One `sops.age[]` entry.
#[derive(Clone, Debug)]
pub(crate) struct AgeStanza {
    pub(crate) recipient: String,
    /// The armored age file holding the data key.
    pub(crate) enc: String,
}

/// What this crate reads from, and writes to, the `sops` metadata.
#[derive(Debug)]
pub(crate) struct Metadata {
    pub(crate) age: Vec<AgeStanza>,
    /// Other key types present (their metadata names), kept for error messages.
    pub(crate) other_kinds: Vec<&'static str>,
    /// `lastmodified` as written in the file.
    pub(crate) lastmodified: String,
    pub(crate) mac: String,
    pub(crate) rules: Rules,
    pub(crate) version: String,
}

fn field_error(field: &str, problem: &'static str) -> Error {
    Error::Metadata { field: format!("sops.{field}"), problem, source: None }
}

fn scalar_string(node: &Node) -> Option<String> {
    match node {
        Node::Str(s) => Some(s.to_string()),
        Node::Int(i) => Some(i.to_string()),
        Node::Float(f) => Some(crate::tree::go_float(*f)),
        Node::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

fn get<'a>(entries: &'a [Entry], key: &str) -> Option<&'a Node> {
    entries.iter().find_map(|e| match e {
        Entry::Pair(k, v) if k.as_str() == key => Some(v),
        _ => None,
    })
}

fn string_field(entries: &[Entry], key: &str) -> Result<Option<String>, Error> {
    match get(entries, key) {
        None | Some(Node::Null) => Ok(None),
        Some(node) => scalar_string(node).map(Some).ok_or_else(|| field_error(key, "is not a string")),
    }
}

/// Age stanzas of one key list, and whether the other key types are non-empty.
fn read_group(entries: &[Entry], prefix: &str) -> Result<(Vec<AgeStanza>, Vec<&'static str>), Error> {
    let mut age = Vec::new();
    match get(entries, "age") {
        None | Some(Node::Null) => {}
        Some(Node::Seq(items)) => {
            for (i, item) in items.iter().filter(|n| !matches!(n, Node::Comment(_))).enumerate() {
                let Node::Map(fields) = item else {
                    return Err(field_error(&format!("{prefix}age[{i}]"), "is not a mapping"));
                };
                let recipient = string_field(fields, "recipient")?
                    .ok_or_else(|| field_error(&format!("{prefix}age[{i}].recipient"), "is missing"))?;
                let enc = string_field(fields, "enc")?
                    .ok_or_else(|| field_error(&format!("{prefix}age[{i}].enc"), "is missing"))?;
                age.push(AgeStanza { recipient: recipient.trim().to_owned(), enc });
            }
        }
        Some(_) => return Err(field_error(&format!("{prefix}age"), "is not a list")),
    }
    let mut other = Vec::new();
    for kind in OTHER_KEY_TYPES {
        if let Some(Node::Seq(items)) = get(entries, kind)
            && items.iter().any(|n| !matches!(n, Node::Comment(_)))
        {
            other.push(kind);
        }
    }
    Ok((age, other))
}

impl Metadata {
    /// Reads the metadata mapping (the value of `sops`, or dotenv's
    /// unflattened keys).
    pub(crate) fn from_node(node: &Node) -> Result<Self, Error> {
        let Node::Map(entries) = node else {
            return Err(field_error("", "is not a mapping"));
        };
        let (mut age, mut other_kinds) = read_group(entries, "")?;
        match get(entries, "key_groups") {
            None | Some(Node::Null) => {}
            Some(Node::Seq(groups)) => {
                let groups: Vec<&Node> = groups.iter().filter(|n| !matches!(n, Node::Comment(_))).collect();
                if groups.len() > 1 {
                    return Err(Error::Unsupported {
                        feature: "key groups with Shamir secret sharing (more than one entry in sops.key_groups)",
                    });
                }
                for group in groups {
                    let Node::Map(fields) = group else {
                        return Err(field_error("key_groups[0]", "is not a mapping"));
                    };
                    let (a, o) = read_group(fields, "key_groups[0].")?;
                    age.extend(a);
                    other_kinds.extend(o);
                }
            }
            Some(_) => return Err(field_error("key_groups", "is not a list")),
        }
        other_kinds.sort_unstable();
        other_kinds.dedup();

        let lastmodified =
            string_field(entries, "lastmodified")?.ok_or_else(|| field_error("lastmodified", "is missing"))?;
        go_rfc3339(&lastmodified)?;
        let mac = string_field(entries, "mac")?.ok_or_else(|| field_error("mac", "is missing"))?;
        let version = string_field(entries, "version")?.unwrap_or_default();

        let mut rule = None;
        for field in EncryptionRule::FIELDS {
            if let Some(value) = string_field(entries, field)?.filter(|v| !v.is_empty()) {
                if rule.is_some() {
                    return Err(field_error(
                        field,
                        "is a second encryption rule: SOPS allows only one of the *_suffix and *_regex fields",
                    ));
                }
                rule = EncryptionRule::from_field(field, value);
            }
        }
        let mac_only_encrypted = match get(entries, "mac_only_encrypted") {
            None | Some(Node::Null) => false,
            Some(Node::Bool(b)) => *b,
            Some(Node::Str(s)) if s.as_str() == "true" => true,
            Some(Node::Str(s)) if s.as_str() == "false" || s.is_empty() => false,
            Some(_) => return Err(field_error("mac_only_encrypted", "is not a boolean")),
        };
        let rules = Rules::new(rule.unwrap_or_default(), mac_only_encrypted)?;
        Ok(Metadata { age, other_kinds, lastmodified, mac, rules, version })
    }

    /// The metadata as the `sops` mapping `encrypt` writes.
    pub(crate) fn to_node(&self) -> Node {
        let mut fields: Vec<Entry> = Vec::new();
        let age = self
            .age
            .iter()
            .map(|s| {
                Node::Map(vec![
                    Entry::pair("recipient", Node::Str(Text::from(s.recipient.as_str()))),
                    Entry::pair("enc", Node::Str(Text::from(s.enc.as_str()))),
                ])
            })
            .collect();
        fields.push(Entry::pair("age", Node::Seq(age)));
        fields.push(Entry::pair(self.rules.rule.field(), Node::Str(Text::from(self.rules.rule.value()))));
        fields.push(Entry::pair("lastmodified", Node::Str(Text::from(self.lastmodified.as_str()))));
        fields.push(Entry::pair("mac", Node::Str(Text::from(self.mac.as_str()))));
        if self.rules.mac_only_encrypted {
            fields.push(Entry::pair("mac_only_encrypted", Node::Bool(true)));
        }
        fields.push(Entry::pair("version", Node::Str(Text::from(self.version.as_str()))));
        // SOPS writes its metadata keys in sorted order.
        fields.sort_by(|a, b| match (a, b) {
            (Entry::Pair(ka, _), Entry::Pair(kb, _)) => ka.as_str().cmp(kb.as_str()),
            _ => std::cmp::Ordering::Equal,
        });
        Node::Map(fields)
    }
}

/// `lastmodified` as Go's `time.Format(time.RFC3339)` writes it after
/// `time.Parse`: whole seconds, `Z` for a zero offset. This string, not the
/// one in the file, is the additional data of the encrypted MAC.
pub(crate) fn go_rfc3339(raw: &str) -> Result<String, Error> {
    let t = OffsetDateTime::parse(raw, &Rfc3339).map_err(|source| Error::Metadata {
        field: "sops.lastmodified".to_owned(),
        problem: "is not an RFC 3339 timestamp",
        source: Some(Box::new(source)),
    })?;
    Ok(format_go(t))
}

fn format_go(t: OffsetDateTime) -> String {
    let offset = t.offset();
    let zone = if offset.is_utc() {
        "Z".to_owned()
    } else {
        let (h, m, _) = offset.as_hms();
        let sign = if offset.is_negative() { '-' } else { '+' };
        format!("{sign}{:02}:{:02}", h.unsigned_abs(), m.unsigned_abs())
    };
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}{zone}",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second()
    )
}

/// Now, in UTC, as `lastmodified`.
pub(crate) fn now() -> String {
    format_go(OffsetDateTime::now_utc())
}

/// Turns dotenv's flattened metadata (`age__list_0__map_enc`, ...) back into
/// a mapping, as SOPS' `Unflatten` does.
pub(crate) fn unflatten(items: Vec<(String, Text)>) -> Node {
    enum Token {
        Key(String),
        Index(usize),
    }
    fn tokenize(path: &str) -> Vec<Token> {
        let mut tokens = Vec::new();
        let mut rest = path;
        let mut current = Token::Key(String::new());
        loop {
            let next_map = rest.find("__map_");
            let next_list = rest.find("__list_");
            let (pos, is_map) = match (next_map, next_list) {
                (Some(m), Some(l)) if m < l => (m, true),
                (Some(_), Some(l)) => (l, false),
                (Some(m), None) => (m, true),
                (None, Some(l)) => (l, false),
                (None, None) => break,
            };
            let text = &rest[..pos];
            tokens.push(match current {
                Token::Key(_) => Token::Key(text.to_owned()),
                Token::Index(_) => Token::Index(text.parse().unwrap_or(0)),
            });
            if is_map {
                current = Token::Key(String::new());
                rest = &rest[pos + "__map_".len()..];
            } else {
                current = Token::Index(0);
                rest = &rest[pos + "__list_".len()..];
            }
        }
        tokens.push(match current {
            Token::Key(_) => Token::Key(rest.to_owned()),
            Token::Index(_) => Token::Index(rest.parse().unwrap_or(0)),
        });
        tokens
    }
    fn insert(node: &mut Node, tokens: &[Token], value: Text) {
        let Some((first, rest)) = tokens.split_first() else {
            *node = Node::Str(value);
            return;
        };
        let child = match first {
            Token::Key(k) => {
                if !matches!(node, Node::Map(_)) {
                    *node = Node::Map(Vec::new());
                }
                let Node::Map(entries) = node else { unreachable!() };
                let pos = entries.iter().position(|e| matches!(e, Entry::Pair(key, _) if key.as_str() == k));
                let pos = pos.unwrap_or_else(|| {
                    entries.push(Entry::pair(k.as_str(), Node::Null));
                    entries.len() - 1
                });
                let Entry::Pair(_, v) = &mut entries[pos] else { unreachable!() };
                v
            }
            Token::Index(i) => {
                if !matches!(node, Node::Seq(_)) {
                    *node = Node::Seq(Vec::new());
                }
                let Node::Seq(items) = node else { unreachable!() };
                if items.len() <= *i {
                    items.resize(*i + 1, Node::Null);
                }
                &mut items[*i]
            }
        };
        insert(child, rest, value);
    }
    let mut root = Node::Map(Vec::new());
    for (key, value) in items {
        insert(&mut root, &tokenize(&key), value);
    }
    root
}

/// Flattens the metadata mapping into dotenv keys (without the `sops_`
/// prefix), sorted as SOPS sorts them.
pub(crate) fn flatten(node: &Node) -> Vec<(String, Text)> {
    fn visit(node: &Node, prefix: String, out: &mut Vec<(String, Text)>) {
        match node {
            Node::Map(entries) => {
                for entry in entries {
                    if let Entry::Pair(k, v) = entry {
                        let key =
                            if prefix.is_empty() { k.to_string() } else { format!("{prefix}__map_{}", k.as_str()) };
                        visit(v, key, out);
                    }
                }
            }
            Node::Seq(items) => {
                for (i, v) in items.iter().enumerate() {
                    visit(v, format!("{prefix}__list_{i}"), out);
                }
            }
            Node::Null | Node::Comment(_) => {}
            other => {
                if let Some(s) = scalar_string(other) {
                    out.push((prefix, Text::from(s)));
                }
            }
        }
    }
    let mut out = Vec::new();
    visit(node, String::new(), &mut out);
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lastmodified_is_reformatted_as_go_does() {
        assert_eq!(go_rfc3339("2024-11-12T13:33:42Z").unwrap(), "2024-11-12T13:33:42Z");
        assert_eq!(go_rfc3339("2024-11-12T13:33:42.123456Z").unwrap(), "2024-11-12T13:33:42Z");
        assert_eq!(go_rfc3339("2024-11-12T13:33:42+00:00").unwrap(), "2024-11-12T13:33:42Z");
        assert_eq!(go_rfc3339("2021-03-31T09:51:59+02:00").unwrap(), "2021-03-31T09:51:59+02:00");
        assert_eq!(go_rfc3339("2021-03-31T09:51:59-05:30").unwrap(), "2021-03-31T09:51:59-05:30");
        assert!(go_rfc3339("yesterday").is_err());
    }

    #[test]
    fn flatten_and_unflatten_are_inverse() {
        let node = Node::Map(vec![
            Entry::pair(
                "age",
                Node::Seq(vec![Node::Map(vec![
                    Entry::pair("recipient", Node::Str("age1x".into())),
                    Entry::pair("enc", Node::Str("line1\nline2\n".into())),
                ])]),
            ),
            Entry::pair("lastmodified", Node::Str("2024-01-01T00:00:00Z".into())),
        ]);
        let flat = flatten(&node);
        let keys: Vec<&str> = flat.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(keys, ["age__list_0__map_enc", "age__list_0__map_recipient", "lastmodified"]);
        let back = unflatten(flat);
        let Node::Map(entries) = &back else { panic!() };
        let Some(Node::Seq(age)) = get(entries, "age") else { panic!() };
        let Node::Map(stanza) = &age[0] else { panic!() };
        assert_eq!(scalar_string(get(stanza, "enc").unwrap()).unwrap(), "line1\nline2\n");
    }
}
