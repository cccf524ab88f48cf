//! dotenv documents, read and written line by line as SOPS' dotenv store
//! does: `KEY=value` (a literal `\n` in the value is a newline), `#comment`
//! lines, blank lines dropped.

use crate::error::SyntaxError;
use crate::text::{SecretBuf, Text};
use crate::tree::{Entry, Node};

pub(crate) fn parse(input: &[u8]) -> Result<Vec<Entry>, SyntaxError> {
    let text = std::str::from_utf8(input).map_err(|e| SyntaxError::new("dotenv input is not UTF-8").caused_by(e))?;
    let mut entries = Vec::new();
    for (i, line) in text.split('\n').enumerate() {
        if line.is_empty() {
            continue;
        }
        if let Some(comment) = line.strip_prefix('#') {
            entries.push(Entry::Comment(Text::from(comment)));
            continue;
        }
        let (key, value) =
            line.split_once('=').ok_or_else(|| SyntaxError::new("a dotenv line has no `=`").at_line(i + 1))?;
        entries.push(Entry::Pair(Text::from(key), Node::Str(Text::from(value.replace("\\n", "\n")))));
    }
    Ok(entries)
}

pub(crate) fn emit(entries: &[Entry], out: &mut SecretBuf) -> Result<(), SyntaxError> {
    for entry in entries {
        match entry {
            Entry::Comment(c) => {
                out.push(b'#');
                out.extend_from_slice(c.as_bytes());
            }
            Entry::Pair(key, value) => {
                out.extend_from_slice(key.as_bytes());
                out.push(b'=');
                let s: std::borrow::Cow<'_, str> = match value {
                    Node::Str(s) => s.as_str().into(),
                    Node::Int(i) => i.to_string().into(),
                    Node::Float(f) => crate::tree::go_float(*f).into(),
                    Node::Bool(b) => b.to_string().into(),
                    Node::Null => "".into(),
                    Node::Bytes(b) => String::from_utf8_lossy(b),
                    Node::Map(_) | Node::Seq(_) | Node::Comment(_) => {
                        return Err(SyntaxError::new("a dotenv file cannot hold a nested value"));
                    }
                };
                for (i, part) in s.split('\n').enumerate() {
                    if i > 0 {
                        out.extend_from_slice(b"\\n");
                    }
                    out.extend_from_slice(part.as_bytes());
                }
            }
        }
        out.push(b'\n');
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_comments_and_newlines() {
        let input = b"# a comment\nA=1\n\nB=two\\nlines\nC=x=y\n";
        let entries = parse(input).unwrap();
        assert_eq!(entries.len(), 4);
        let mut out = SecretBuf::default();
        emit(&entries, &mut out).unwrap();
        assert_eq!(out.as_slice(), b"# a comment\nA=1\nB=two\\nlines\nC=x=y\n");
    }

    #[test]
    fn names_the_line_without_its_content() {
        let err = parse(b"A=1\nSECRETVALUE\n").unwrap_err();
        assert_eq!(err.line(), Some(2));
        assert!(!err.to_string().contains("SECRETVALUE"));
    }
}
