//! JSON documents: read with `serde_json` into the crate's ordered tree (keys kept in document
//! order by a visitor of our own, not by serde_json's `preserve_order`, which would change the
//! map type of every crate that shares serde_json), written by hand into a zeroizing buffer,
//! tab-indented as SOPS writes them.

use std::fmt;
use std::io::Write as _;

use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};

use crate::error::SyntaxError;
use crate::text::{SecretBuf, Text};
use crate::tree::{Entry, Node, go_float};

/// Largest integer a float64 holds exactly; SOPS reads every JSON number as
/// a float64, so beyond this an integer is kept as a float to hash as SOPS does.
const EXACT_INT: i64 = 1 << 53;

pub(crate) fn parse(input: &[u8]) -> Result<Vec<Entry>, SyntaxError> {
    let Ordered(node) =
        serde_json::from_slice(input).map_err(|e| SyntaxError::new("invalid JSON").at_line(e.line()).caused_by(e))?;
    match node {
        Node::Map(entries) => Ok(entries),
        _ => Err(SyntaxError::new("SOPS only handles JSON documents whose top level is an object")),
    }
}

/// A JSON value as the crate's tree, objects in document order. A key given twice keeps its
/// first place and its last value, as an insertion-ordered map would.
struct Ordered(Node);

impl<'de> Deserialize<'de> for Ordered {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(OrderedVisitor).map(Ordered)
    }
}

struct OrderedVisitor;

fn int(i: i64) -> Node {
    if (-EXACT_INT..=EXACT_INT).contains(&i) { Node::Int(i) } else { Node::Float(i as f64) }
}

impl<'de> Visitor<'de> for OrderedVisitor {
    type Value = Node;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_unit<E: de::Error>(self) -> Result<Node, E> {
        Ok(Node::Null)
    }

    fn visit_bool<E: de::Error>(self, b: bool) -> Result<Node, E> {
        Ok(Node::Bool(b))
    }

    fn visit_i64<E: de::Error>(self, i: i64) -> Result<Node, E> {
        Ok(int(i))
    }

    fn visit_u64<E: de::Error>(self, u: u64) -> Result<Node, E> {
        Ok(i64::try_from(u).map(int).unwrap_or(Node::Float(u as f64)))
    }

    fn visit_f64<E: de::Error>(self, f: f64) -> Result<Node, E> {
        Ok(Node::Float(f))
    }

    fn visit_str<E: de::Error>(self, s: &str) -> Result<Node, E> {
        Ok(Node::Str(Text::from(s.to_owned())))
    }

    fn visit_string<E: de::Error>(self, s: String) -> Result<Node, E> {
        Ok(Node::Str(Text::from(s)))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Node, A::Error> {
        let mut items = Vec::new();
        while let Some(Ordered(item)) = seq.next_element()? {
            items.push(item);
        }
        Ok(Node::Seq(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Node, A::Error> {
        let mut entries: Vec<Entry> = Vec::new();
        while let Some((key, Ordered(value))) = map.next_entry::<String, Ordered>()? {
            let existing = entries.iter_mut().find_map(|e| match e {
                Entry::Pair(k, v) if k.as_str() == key.as_str() => Some(v),
                _ => None,
            });
            match existing {
                Some(slot) => *slot = value,
                None => entries.push(Entry::Pair(Text::from(key), value)),
            }
        }
        Ok(Node::Map(entries))
    }
}

pub(crate) fn emit(entries: &[Entry], out: &mut SecretBuf) -> Result<(), SyntaxError> {
    emit_map(entries, 0, out)?;
    out.push(b'\n');
    Ok(())
}

fn indent(out: &mut SecretBuf, level: usize) {
    out.push(b'\n');
    out.extend(std::iter::repeat_n(b'\t', level));
}

fn emit_map(entries: &[Entry], level: usize, out: &mut SecretBuf) -> Result<(), SyntaxError> {
    let pairs: Vec<(&Text, &Node)> = entries
        .iter()
        .filter_map(|e| match e {
            Entry::Pair(k, v) => Some((k, v)),
            Entry::Comment(_) => None,
        })
        .collect();
    if pairs.is_empty() {
        out.extend_from_slice(b"{}");
        return Ok(());
    }
    out.push(b'{');
    for (i, (key, value)) in pairs.into_iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        indent(out, level + 1);
        string(key, out);
        out.extend_from_slice(b": ");
        emit_value(value, level + 1, out)?;
    }
    indent(out, level);
    out.push(b'}');
    Ok(())
}

fn emit_value(node: &Node, level: usize, out: &mut SecretBuf) -> Result<(), SyntaxError> {
    match node {
        Node::Map(entries) => emit_map(entries, level, out)?,
        Node::Seq(items) => {
            let items: Vec<&Node> = items.iter().filter(|n| !matches!(n, Node::Comment(_))).collect();
            if items.is_empty() {
                out.extend_from_slice(b"[]");
            } else {
                out.push(b'[');
                for (i, item) in items.into_iter().enumerate() {
                    if i > 0 {
                        out.push(b',');
                    }
                    indent(out, level + 1);
                    emit_value(item, level + 1, out)?;
                }
                indent(out, level);
                out.push(b']');
            }
        }
        Node::Str(s) => string(s, out),
        Node::Int(i) => {
            let _ = write!(out, "{i}");
        }
        Node::Float(f) => {
            if !f.is_finite() {
                return Err(SyntaxError::new("JSON cannot hold a NaN or infinite number"));
            }
            out.extend_from_slice(go_float(*f).as_bytes());
        }
        Node::Bool(b) => out.extend_from_slice(if *b { b"true" } else { b"false" }),
        Node::Bytes(b) => match std::str::from_utf8(b) {
            Ok(s) => string(s, out),
            Err(_) => {
                use base64::Engine as _;
                let encoded = zeroize::Zeroizing::new(base64::engine::general_purpose::STANDARD.encode(b.as_slice()));
                string(&encoded, out)
            }
        },
        Node::Null => out.extend_from_slice(b"null"),
        Node::Comment(_) => {}
    }
    Ok(())
}

/// Writes a JSON string literal.
pub(crate) fn string(s: &str, out: &mut SecretBuf) {
    out.push(b'"');
    for c in s.chars() {
        match c {
            '"' => out.extend_from_slice(b"\\\""),
            '\\' => out.extend_from_slice(b"\\\\"),
            '\n' => out.extend_from_slice(b"\\n"),
            '\r' => out.extend_from_slice(b"\\r"),
            '\t' => out.extend_from_slice(b"\\t"),
            c if (c as u32) < 0x20 || c == '\u{2028}' || c == '\u{2029}' => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => {
                let mut buf = [0u8; 4];
                out.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
            }
        }
    }
    out.push(b'"');
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_order_and_types() {
        let doc = br#"{"z": 1, "a": {"y": [true, null, 1.5, "s"]}, "big": 12345678901234567890}"#;
        let entries = parse(doc).unwrap();
        let mut out = SecretBuf::default();
        emit(&entries, &mut out).unwrap();
        let text = String::from_utf8(out.as_slice().to_vec()).unwrap();
        assert_eq!(
            text,
            "{\n\t\"z\": 1,\n\t\"a\": {\n\t\t\"y\": [\n\t\t\ttrue,\n\t\t\tnull,\n\t\t\t1.5,\n\t\t\t\"s\"\n\t\t]\n\t},\n\t\"big\": 12345678901234567000\n}\n"
        );
    }

    #[test]
    fn a_key_given_twice_keeps_its_first_place_and_its_last_value() {
        let entries = parse(br#"{"a": 1, "b": 2, "a": 3}"#).unwrap();
        let mut out = SecretBuf::default();
        emit(&entries, &mut out).unwrap();
        assert_eq!(String::from_utf8(out.as_slice().to_vec()).unwrap(), "{\n\t\"a\": 3,\n\t\"b\": 2\n}\n");
    }

    #[test]
    fn refuses_top_level_arrays() {
        assert!(parse(b"[1]").is_err());
    }
}
