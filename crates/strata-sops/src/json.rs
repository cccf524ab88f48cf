//! JSON documents: read with `serde_json` (keeping key order), written by
//! hand into a zeroizing buffer, tab-indented as SOPS writes them.

use std::io::Write as _;

use serde_json::Value;

use crate::error::SyntaxError;
use crate::text::{SecretBuf, Text};
use crate::tree::{Entry, Node, go_float};

/// Largest integer a float64 holds exactly; SOPS reads every JSON number as
/// a float64, so beyond this an integer is kept as a float to hash as SOPS does.
const EXACT_INT: i64 = 1 << 53;

pub(crate) fn parse(input: &[u8]) -> Result<Vec<Entry>, SyntaxError> {
    let value: Value =
        serde_json::from_slice(input).map_err(|e| SyntaxError::new("invalid JSON").at_line(e.line()).caused_by(e))?;
    match value {
        Value::Object(map) => Ok(map.into_iter().map(|(k, v)| Entry::Pair(Text::from(k), convert(v))).collect()),
        _ => Err(SyntaxError::new("SOPS only handles JSON documents whose top level is an object")),
    }
}

fn convert(value: Value) -> Node {
    match value {
        Value::Null => Node::Null,
        Value::Bool(b) => Node::Bool(b),
        Value::Number(n) => match n.as_i64() {
            Some(i) if (-EXACT_INT..=EXACT_INT).contains(&i) => Node::Int(i),
            _ => Node::Float(n.as_f64().unwrap_or(f64::NAN)),
        },
        Value::String(s) => Node::Str(Text::from(s)),
        Value::Array(items) => Node::Seq(items.into_iter().map(convert).collect()),
        Value::Object(map) => Node::Map(map.into_iter().map(|(k, v)| Entry::Pair(Text::from(k), convert(v))).collect()),
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
    fn refuses_top_level_arrays() {
        assert!(parse(b"[1]").is_err());
    }
}
