//! YAML documents: read from `saphyr-parser`'s event stream (which keeps key
//! order) and written by hand.
//!
//! The parser reports no comments, but it reports where every scalar starts
//! and ends; a `#` outside every scalar, at the start of a line or after a
//! blank, is a comment. Comments are placed in the tree where yaml.v3 (which
//! SOPS uses) puts them in the common cases: a comment on the line of a scalar
//! goes before that item, a comment on the line of a key whose value is a
//! block goes before that key, other comments go to the innermost mapping or
//! sequence that is open and indented no deeper than the comment. Plain
//! scalars are typed as yaml.v3 types them for SOPS (YAML 1.2 core schema, Go
//! integer syntax, 1.1 octals, timestamps left as strings).

use std::borrow::Cow;
use std::collections::HashMap;
use std::io::Write as _;
use std::sync::LazyLock;

use regex::Regex;
use saphyr_parser::{Event, Parser, ScalarStyle, Span, Tag};

use crate::error::SyntaxError;
use crate::text::{SecretBuf, Text};
use crate::tree::{Entry, Node};

/// Nodes an alias may copy in all, against "billion laughs" documents.
const ALIAS_BUDGET: usize = 1_000_000;

struct Comment {
    pos: usize,
    line: usize,
    col: usize,
    text: String,
}

enum Frame {
    Map {
        entries: Vec<Entry>,
        key: Option<(Text, usize)>,
        col: usize,
        flow: bool,
        anchor: usize,
        /// Line of the scalar value that completed the last entry, and where
        /// that entry is, for a trailing comment on that line.
        last_scalar: Option<(usize, usize)>,
    },
    Seq {
        items: Vec<Node>,
        col: usize,
        flow: bool,
        anchor: usize,
        last_scalar: Option<(usize, usize)>,
    },
}

impl Frame {
    fn place_comment(&mut self, comment: Comment) {
        let text = Text::from(comment.text);
        match self {
            Frame::Map { entries, last_scalar, .. } => match last_scalar {
                Some((line, index)) if *line == comment.line => {
                    entries.insert(*index, Entry::Comment(text));
                    *index += 1;
                }
                _ => entries.push(Entry::Comment(text)),
            },
            Frame::Seq { items, last_scalar, .. } => match last_scalar {
                Some((line, index)) if *line == comment.line => {
                    items.insert(*index, Node::Comment(text));
                    *index += 1;
                }
                _ => items.push(Node::Comment(text)),
            },
        }
    }
}

/// Byte offsets of every character, since the parser counts characters.
struct Offsets(Vec<usize>);

impl Offsets {
    fn new(text: &str) -> Self {
        let mut v: Vec<usize> = text.char_indices().map(|(i, _)| i).collect();
        v.push(text.len());
        Offsets(v)
    }
    fn byte(&self, char_index: usize) -> usize {
        self.0.get(char_index).copied().unwrap_or_else(|| *self.0.last().expect("non-empty"))
    }
}

fn find_comments(text: &str, scalars: &[(usize, usize)]) -> Vec<Comment> {
    let bytes = text.as_bytes();
    let mut comments = Vec::new();
    let mut scalar = 0;
    let mut line = 1;
    let mut line_start = 0;
    let mut i = 0;
    while i < bytes.len() {
        while scalar < scalars.len() && scalars[scalar].1 <= i {
            scalar += 1;
        }
        if scalar < scalars.len() && scalars[scalar].0 <= i {
            // Inside a scalar: jump over it, counting its lines.
            let end = scalars[scalar].1;
            for (j, b) in bytes[i..end].iter().enumerate() {
                if *b == b'\n' {
                    line += 1;
                    line_start = i + j + 1;
                }
            }
            i = end;
            continue;
        }
        match bytes[i] {
            b'\n' => {
                line += 1;
                line_start = i + 1;
            }
            b'#' if i == line_start || matches!(bytes[i - 1], b' ' | b'\t') => {
                let end = text[i..].find('\n').map_or(text.len(), |n| i + n);
                let body = text[i + 1..end].strip_suffix('\r').unwrap_or(&text[i + 1..end]);
                comments.push(Comment {
                    pos: i,
                    line,
                    col: text[line_start..i].chars().count(),
                    text: body.to_owned(),
                });
                i = end;
                continue;
            }
            _ => {}
        }
        i += 1;
    }
    comments
}

fn is_core(tag: &Tag, suffix: &str) -> bool {
    (tag.handle == "!!" || tag.handle == "tag:yaml.org,2002:") && tag.suffix == suffix
}

static YAML_FLOAT: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"^[-+]?(\.[0-9]+|[0-9]+(\.[0-9]*)?)([eE][-+]?[0-9]+)?$").expect("valid regex"));

/// Go's `strconv.ParseInt(s, 0, 64)`.
fn go_parse_int(s: &str) -> Option<i64> {
    let (negative, digits) = match s.as_bytes().first()? {
        b'-' => (true, &s[1..]),
        b'+' => (false, &s[1..]),
        _ => (false, s),
    };
    let (radix, body) = if let Some(r) = digits.strip_prefix("0x").or_else(|| digits.strip_prefix("0X")) {
        (16, r)
    } else if let Some(r) = digits.strip_prefix("0o").or_else(|| digits.strip_prefix("0O")) {
        (8, r)
    } else if let Some(r) = digits.strip_prefix("0b").or_else(|| digits.strip_prefix("0B")) {
        (2, r)
    } else if digits.len() > 1 && digits.starts_with('0') {
        (8, &digits[1..])
    } else {
        (10, digits)
    };
    if body.is_empty() || !body.chars().all(|c| c.is_digit(radix)) {
        return None;
    }
    let magnitude = u64::from_str_radix(body, radix).ok()?;
    if negative {
        if magnitude <= i64::MAX as u64 + 1 { Some((magnitude as i64).wrapping_neg()) } else { None }
    } else {
        i64::try_from(magnitude).ok()
    }
}

/// Types a plain scalar as yaml.v3 does when decoding into `interface{}`.
pub(crate) fn resolve_plain(s: &str) -> Node {
    match s {
        "" | "~" | "null" | "Null" | "NULL" => return Node::Null,
        "true" | "True" | "TRUE" => return Node::Bool(true),
        "false" | "False" | "FALSE" => return Node::Bool(false),
        ".inf" | ".Inf" | ".INF" | "+.inf" | "+.Inf" | "+.INF" => return Node::Float(f64::INFINITY),
        "-.inf" | "-.Inf" | "-.INF" => return Node::Float(f64::NEG_INFINITY),
        ".nan" | ".NaN" | ".NAN" => return Node::Float(f64::NAN),
        _ => {}
    }
    let first = s.as_bytes()[0];
    if first.is_ascii_digit() || matches!(first, b'-' | b'+' | b'.') {
        let plain = s.replace('_', "");
        if let Some(i) = go_parse_int(&plain) {
            return Node::Int(i);
        }
        let unsigned = plain.strip_prefix('+').unwrap_or(&plain);
        if !unsigned.is_empty()
            && unsigned.bytes().all(|b| b.is_ascii_digit())
            && let Ok(u) = unsigned.parse::<u64>()
        {
            return Node::Float(u as f64);
        }
        if YAML_FLOAT.is_match(&plain)
            && let Ok(f) = plain.parse::<f64>()
        {
            return Node::Float(f);
        }
    }
    Node::Str(Text::from(s))
}

fn scalar_node(value: Cow<'_, str>, style: ScalarStyle, tag: Option<&Tag>) -> Result<Node, SyntaxError> {
    let plain = style == ScalarStyle::Plain;
    let Some(tag) = tag else {
        return Ok(if plain { resolve_plain(&value) } else { Node::Str(Text::from(value.into_owned())) });
    };
    let wrong = |kind: &str| SyntaxError::new(format!("a scalar tagged !!{kind} is not a valid {kind}"));
    Ok(if is_core(tag, "str") {
        Node::Str(Text::from(value.into_owned()))
    } else if is_core(tag, "null") {
        Node::Null
    } else if is_core(tag, "bool") {
        match resolve_plain(&value) {
            n @ Node::Bool(_) => n,
            _ => return Err(wrong("bool")),
        }
    } else if is_core(tag, "int") {
        match resolve_plain(&value) {
            n @ Node::Int(_) => n,
            _ => return Err(wrong("int")),
        }
    } else if is_core(tag, "float") {
        match resolve_plain(&value) {
            n @ (Node::Float(_) | Node::Int(_)) => match n {
                Node::Int(i) => Node::Float(i as f64),
                n => n,
            },
            _ => return Err(wrong("float")),
        }
    } else if plain {
        resolve_plain(&value)
    } else {
        Node::Str(Text::from(value.into_owned()))
    })
}

fn node_size(node: &Node) -> usize {
    match node {
        Node::Map(entries) => {
            1 + entries
                .iter()
                .map(|e| match e {
                    Entry::Pair(_, v) => 1 + node_size(v),
                    Entry::Comment(_) => 1,
                })
                .sum::<usize>()
        }
        Node::Seq(items) => 1 + items.iter().map(node_size).sum::<usize>(),
        _ => 1,
    }
}

struct Builder<'t> {
    comments: std::iter::Peekable<std::vec::IntoIter<Comment>>,
    stack: Vec<Frame>,
    docs: Vec<Vec<Entry>>,
    anchors: HashMap<usize, Node>,
    alias_budget: usize,
    offsets: &'t Offsets,
}

impl Builder<'_> {
    fn pos(&self, span: &Span) -> usize {
        self.offsets.byte(span.start.index())
    }

    /// Gives every comment before `pos` to the innermost open frame.
    fn flush_before(&mut self, pos: usize) {
        while let Some(c) = self.comments.next_if(|c| c.pos < pos) {
            match self.stack.last_mut() {
                Some(frame) => frame.place_comment(c),
                None => match self.docs.last_mut() {
                    Some(doc) => doc.push(Entry::Comment(Text::from(c.text))),
                    None => self.docs.push(vec![Entry::Comment(Text::from(c.text))]),
                },
            }
        }
    }

    /// Before a mapping or sequence starts: a comment on the line of the
    /// key it is the value of belongs to the parent; in a sequence, comments
    /// before the item belong to the sequence.
    fn flush_before_start(&mut self, pos: usize) {
        match self.stack.last() {
            Some(Frame::Map { key: Some((_, key_line)), flow: false, .. }) => {
                let key_line = *key_line;
                while let Some(c) = self.comments.next_if(|c| c.pos < pos && c.line == key_line) {
                    self.stack.last_mut().expect("checked").place_comment(c);
                }
            }
            Some(Frame::Map { .. }) | None => {}
            Some(Frame::Seq { .. }) => self.flush_before(pos),
        }
    }

    /// Before a mapping or sequence ends: comments indented at least as deep
    /// as its entries (any comment, for a flow collection).
    fn flush_before_end(&mut self, pos: usize) {
        let (col, flow) = match self.stack.last() {
            Some(Frame::Map { col, flow, .. } | Frame::Seq { col, flow, .. }) => (*col, *flow),
            None => return,
        };
        while let Some(c) = self.comments.next_if(|c| c.pos < pos && (flow || c.col >= col)) {
            self.stack.last_mut().expect("checked").place_comment(c);
        }
    }

    /// Hands a finished value to the frame below (or to a new document).
    fn complete(&mut self, node: Node, anchor: usize, scalar_line: Option<usize>) -> Result<(), SyntaxError> {
        if anchor != 0 {
            self.anchors.insert(anchor, node.clone());
        }
        match self.stack.last_mut() {
            None => {
                let entries = match node {
                    Node::Map(entries) => entries,
                    Node::Null => Vec::new(),
                    Node::Seq(_) => {
                        return Err(SyntaxError::new(
                            "SOPS does not handle YAML documents whose top level is a sequence",
                        ));
                    }
                    _ => {
                        return Err(SyntaxError::new(
                            "SOPS does not handle YAML documents whose top level is a scalar",
                        ));
                    }
                };
                match self.docs.last_mut() {
                    Some(doc) if doc.iter().all(|e| matches!(e, Entry::Comment(_))) && !doc.is_empty() => {
                        let mut all = std::mem::take(doc);
                        all.extend(entries);
                        *doc = all;
                    }
                    _ => self.docs.push(entries),
                }
            }
            Some(Frame::Map { entries, key, last_scalar, .. }) => match key.take() {
                None => match node {
                    Node::Str(s) => *key = Some((s, scalar_line.unwrap_or(0))),
                    _ => return Err(SyntaxError::new("SOPS only handles YAML mapping keys that are plain strings")),
                },
                Some((k, _)) => {
                    entries.push(Entry::Pair(k, node));
                    *last_scalar = scalar_line.map(|line| (line, entries.len() - 1));
                }
            },
            Some(Frame::Seq { items, last_scalar, .. }) => {
                items.push(node);
                *last_scalar = scalar_line.map(|line| (line, items.len() - 1));
            }
        }
        Ok(())
    }

    fn expecting_key(&self) -> bool {
        matches!(self.stack.last(), Some(Frame::Map { key: None, .. }))
    }
}

pub(crate) fn parse(text: &str) -> Result<Vec<Vec<Entry>>, SyntaxError> {
    let offsets = Offsets::new(text);
    let mut events = Vec::new();
    let mut parser = Parser::new_from_str(text);
    while let Some(event) = parser.next_event() {
        let (event, span) =
            event.map_err(|e| SyntaxError::new(format!("invalid YAML: {}", e.info())).at_line(e.marker().line()))?;
        events.push((event, span));
    }
    let scalars: Vec<(usize, usize)> = events
        .iter()
        .filter(|(e, _)| matches!(e, Event::Scalar(..) | Event::Alias(_)))
        .map(|(_, s)| (offsets.byte(s.start.index()), offsets.byte(s.end.index())))
        .collect();
    let mut b = Builder {
        comments: find_comments(text, &scalars).into_iter().peekable(),
        stack: Vec::new(),
        docs: Vec::new(),
        anchors: HashMap::new(),
        alias_budget: ALIAS_BUDGET,
        offsets: &offsets,
    };
    let mut in_document = false;
    for (event, span) in events {
        let pos = b.pos(&span);
        let line = span.start.line();
        match event {
            Event::StreamStart | Event::Nothing => {}
            Event::DocumentStart(_) => {
                b.flush_before(pos);
                in_document = true;
            }
            Event::DocumentEnd | Event::StreamEnd => {
                b.flush_before(pos);
                if in_document && b.docs.is_empty() {
                    b.docs.push(Vec::new());
                }
                in_document = false;
            }
            Event::Scalar(value, style, anchor, tag) => {
                b.flush_before(pos);
                let node = if b.expecting_key() {
                    Node::Str(Text::from(value.into_owned()))
                } else {
                    scalar_node(value, style, tag.as_deref()).map_err(|e| e.at_line(line))?
                };
                let end_line = span.end.line();
                let scalar_line = if b.expecting_key() { line } else { end_line };
                b.complete(node, anchor, Some(scalar_line)).map_err(|e| e.at_line(line))?;
            }
            Event::Alias(id) => {
                b.flush_before(pos);
                let node = b
                    .anchors
                    .get(&id)
                    .cloned()
                    .ok_or_else(|| SyntaxError::new("alias to an unknown anchor").at_line(line))?;
                let size = node_size(&node);
                b.alias_budget = b
                    .alias_budget
                    .checked_sub(size)
                    .ok_or_else(|| SyntaxError::new("aliases expand to too large a document").at_line(line))?;
                let scalar_line = (!matches!(node, Node::Map(_) | Node::Seq(_))).then_some(line);
                b.complete(node, 0, scalar_line).map_err(|e| e.at_line(line))?;
            }
            Event::MappingStart(anchor, _) | Event::SequenceStart(anchor, _) => {
                if b.expecting_key() {
                    return Err(
                        SyntaxError::new("SOPS only handles YAML mapping keys that are plain strings").at_line(line)
                    );
                }
                b.flush_before_start(pos);
                let flow = text[pos..].starts_with(['{', '['])
                    || text[pos..].starts_with('&') && {
                        // an anchored flow collection: `&a {` / `&a [`
                        let rest = &text[pos..];
                        rest.find(char::is_whitespace)
                            .map(|n| rest[n..].trim_start().starts_with(['{', '[']))
                            .unwrap_or(false)
                    };
                let col = span.start.col();
                b.stack.push(if matches!(event, Event::MappingStart(..)) {
                    Frame::Map { entries: Vec::new(), key: None, col, flow, anchor, last_scalar: None }
                } else {
                    Frame::Seq { items: Vec::new(), col, flow, anchor, last_scalar: None }
                });
            }
            Event::MappingEnd | Event::SequenceEnd => {
                b.flush_before_end(pos);
                let frame = b.stack.pop().ok_or_else(|| SyntaxError::new("unbalanced YAML events").at_line(line))?;
                let (node, anchor) = match frame {
                    Frame::Map { entries, anchor, .. } => (Node::Map(entries), anchor),
                    Frame::Seq { items, anchor, .. } => (Node::Seq(items), anchor),
                };
                b.complete(node, anchor, None).map_err(|e| e.at_line(line))?;
            }
        }
    }
    let rest: Vec<Comment> = b.comments.collect();
    if !rest.is_empty() {
        let doc = match b.docs.last_mut() {
            Some(doc) => doc,
            None => {
                b.docs.push(Vec::new());
                b.docs.last_mut().expect("pushed")
            }
        };
        doc.extend(rest.into_iter().map(|c| Entry::Comment(Text::from(c.text))));
    }
    Ok(b.docs)
}

// ---------------------------------------------------------------------------
// Writing

const INDENT: usize = 4;

pub(crate) fn emit(docs: &[Vec<Entry>], out: &mut SecretBuf) -> Result<(), SyntaxError> {
    for (i, doc) in docs.iter().enumerate() {
        if i > 0 {
            out.extend_from_slice(b"---\n");
        }
        if doc.is_empty() {
            out.extend_from_slice(b"{}\n");
        } else {
            emit_entries(doc, 0, false, out);
        }
    }
    Ok(())
}

fn pad(out: &mut SecretBuf, n: usize) {
    out.extend(std::iter::repeat_n(b' ', n));
}

fn comment_line(text: &str, indent: usize, out: &mut SecretBuf) {
    pad(out, indent);
    out.push(b'#');
    out.extend_from_slice(text.as_bytes());
    out.push(b'\n');
}

/// Writes mapping entries at `indent`; with `inline`, the cursor already
/// stands at `indent` (after a sequence's `- `).
fn emit_entries(entries: &[Entry], indent: usize, mut inline: bool, out: &mut SecretBuf) {
    for entry in entries {
        match entry {
            Entry::Comment(c) => {
                comment_line(c, if inline { 0 } else { indent }, out);
            }
            Entry::Pair(key, value) => {
                if !inline {
                    pad(out, indent);
                }
                key_repr(key, out);
                out.push(b':');
                emit_value_after(value, indent + INDENT, out);
            }
        }
        inline = false;
    }
}

/// Writes a value that follows `key:` or `-` on the same line (the cursor is
/// right after the indicator), `child` being the indentation of its content.
fn emit_value_after(value: &Node, child: usize, out: &mut SecretBuf) {
    match value {
        Node::Map(entries) if entries.is_empty() => out.extend_from_slice(b" {}\n"),
        Node::Seq(items) if items.is_empty() => out.extend_from_slice(b" []\n"),
        Node::Map(entries) => {
            out.push(b'\n');
            emit_entries(entries, child, false, out);
        }
        Node::Seq(items) => {
            out.push(b'\n');
            emit_seq(items, child, false, out);
        }
        Node::Comment(_) => out.push(b'\n'),
        scalar => {
            out.push(b' ');
            scalar_repr(scalar, child, out);
            out.push(b'\n');
        }
    }
}

fn emit_seq(items: &[Node], indent: usize, mut inline: bool, out: &mut SecretBuf) {
    for item in items {
        if !inline {
            pad(out, indent);
        }
        inline = false;
        match item {
            Node::Comment(c) => comment_line(c, 0, out),
            Node::Map(entries) if matches!(entries.first(), Some(Entry::Pair(..))) => {
                out.extend_from_slice(b"- ");
                emit_entries(entries, indent + 2, true, out);
            }
            Node::Seq(items) if items.first().is_some_and(|n| !matches!(n, Node::Comment(_))) => {
                out.extend_from_slice(b"- ");
                emit_seq(items, indent + 2, true, out);
            }
            other => {
                out.push(b'-');
                emit_value_after(other, indent + 2, out);
            }
        }
    }
}

fn key_repr(key: &str, out: &mut SecretBuf) {
    if key == "<<" || plain_ok(key) {
        out.extend_from_slice(key.as_bytes());
    } else {
        double_quoted(key, out);
    }
}

fn scalar_repr(node: &Node, block_indent: usize, out: &mut SecretBuf) {
    match node {
        Node::Str(s) => string_repr(s, block_indent, out),
        Node::Int(i) => {
            let _ = write!(out, "{i}");
        }
        Node::Float(f) => {
            if f.is_nan() {
                out.extend_from_slice(b".nan");
            } else if f.is_infinite() {
                out.extend_from_slice(if *f > 0.0 { b".inf" } else { b"-.inf" });
            } else {
                let s = format!("{f}");
                out.extend_from_slice(s.as_bytes());
                if !s.contains(['.', 'e', 'E']) {
                    out.extend_from_slice(b".0");
                }
            }
        }
        Node::Bool(b) => out.extend_from_slice(if *b { b"true" } else { b"false" }),
        Node::Null => out.extend_from_slice(b"null"),
        Node::Bytes(b) => match std::str::from_utf8(b) {
            Ok(s) => string_repr(s, block_indent, out),
            Err(_) => {
                use base64::Engine as _;
                out.extend_from_slice(b"!!binary ");
                let encoded = zeroize::Zeroizing::new(base64::engine::general_purpose::STANDARD.encode(b.as_slice()));
                double_quoted(&encoded, out);
            }
        },
        Node::Map(_) | Node::Seq(_) | Node::Comment(_) => unreachable!("not a scalar"),
    }
}

fn string_repr(s: &str, block_indent: usize, out: &mut SecretBuf) {
    if plain_ok(s) {
        out.extend_from_slice(s.as_bytes());
    } else if literal_ok(s) {
        literal(s, block_indent, out);
    } else {
        double_quoted(s, out);
    }
}

fn printable(c: char) -> bool {
    !(c.is_control() || matches!(c, '\u{feff}' | '\u{2028}' | '\u{2029}'))
}

/// Whether a string can be written as a plain scalar and read back as the
/// same string by any YAML 1.1 or 1.2 reader.
fn plain_ok(s: &str) -> bool {
    let Some(first) = s.chars().next() else { return false };
    if first.is_ascii_digit() || "-?:,[]{}#&*!|>'\"%@`+.~= \t".contains(first) {
        return false;
    }
    if s.ends_with([' ', '\t', ':']) || s.contains(": ") || s.contains(" #") || !s.chars().all(printable) {
        return false;
    }
    !matches!(s.to_ascii_lowercase().as_str(), "y" | "n" | "yes" | "no" | "on" | "off" | "true" | "false" | "null")
}

/// Whether a multi-line string can be a literal block scalar.
fn literal_ok(s: &str) -> bool {
    s.contains('\n')
        && s.chars().all(|c| c == '\n' || c == '\t' || printable(c))
        && s.split('\n').find(|l| !l.is_empty()).is_some_and(|l| !l.starts_with([' ', '\t']))
}

fn literal(s: &str, indent: usize, out: &mut SecretBuf) {
    let body = s.trim_end_matches('\n');
    let trailing = s.len() - body.len();
    out.extend_from_slice(match trailing {
        0 => b"|-".as_slice(),
        1 => b"|".as_slice(),
        _ => b"|+".as_slice(),
    });
    for line in body.split('\n') {
        out.push(b'\n');
        if !line.is_empty() {
            pad(out, indent);
            out.extend_from_slice(line.as_bytes());
        }
    }
    for _ in 1..trailing {
        out.push(b'\n');
    }
}

fn double_quoted(s: &str, out: &mut SecretBuf) {
    out.push(b'"');
    for c in s.chars() {
        match c {
            '"' => out.extend_from_slice(b"\\\""),
            '\\' => out.extend_from_slice(b"\\\\"),
            '\n' => out.extend_from_slice(b"\\n"),
            '\t' => out.extend_from_slice(b"\\t"),
            '\r' => out.extend_from_slice(b"\\r"),
            '\0' => out.extend_from_slice(b"\\0"),
            '\u{85}' => out.extend_from_slice(b"\\N"),
            '\u{2028}' => out.extend_from_slice(b"\\L"),
            '\u{2029}' => out.extend_from_slice(b"\\P"),
            c if !printable(c) => {
                let _ = write!(out, "\\u{:04X}", c as u32);
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

    fn round_trip(text: &str) -> String {
        let docs = parse(text).unwrap();
        let mut out = SecretBuf::default();
        emit(&docs, &mut out).unwrap();
        String::from_utf8(out.as_slice().to_vec()).unwrap()
    }

    #[test]
    fn types_plain_scalars_as_yaml_v3_does() {
        assert_eq!(resolve_plain("12"), Node::Int(12));
        assert_eq!(resolve_plain("-0x1F"), Node::Int(-31));
        assert_eq!(resolve_plain("0o17"), Node::Int(15));
        assert_eq!(resolve_plain("017"), Node::Int(15));
        assert_eq!(resolve_plain("1_000"), Node::Int(1000));
        assert_eq!(resolve_plain("1.5"), Node::Float(1.5));
        assert_eq!(resolve_plain("1e3"), Node::Float(1000.0));
        assert_eq!(resolve_plain("True"), Node::Bool(true));
        assert_eq!(resolve_plain("yes"), Node::Str("yes".into()));
        assert_eq!(resolve_plain("~"), Node::Null);
        assert_eq!(resolve_plain("2001-12-14"), Node::Str("2001-12-14".into()));
        assert_eq!(resolve_plain("1.2.3"), Node::Str("1.2.3".into()));
    }

    #[test]
    fn keeps_order_comments_and_types() {
        let text = "# head\nz: 1 # trailing\nb:\n    # inside b\n    c: \"quoted # not\"\n    d: |\n        # not a comment\n        line2\nlist:\n    - x\n    # between\n    - k: v\n      w: 2\n    - 1.0\n";
        let out = round_trip(text);
        assert_eq!(
            out,
            "# head\n# trailing\nz: 1\nb:\n    # inside b\n    c: \"quoted # not\"\n    d: |\n        # not a comment\n        line2\nlist:\n    - x\n    # between\n    - k: v\n      w: 2\n    - 1.0\n"
        );
        assert_eq!(round_trip(&out), out);
    }

    #[test]
    fn quotes_what_would_change_type() {
        let docs = vec![vec![
            Entry::pair("a", Node::Str("123".into())),
            Entry::pair("b", Node::Str("yes".into())),
            Entry::pair("c", Node::Str("".into())),
            Entry::pair("d", Node::Str(" lead".into())),
            Entry::pair("e", Node::Str("x: y".into())),
            Entry::pair("f", Node::Str("tab\there\u{1}".into())),
        ]];
        let mut out = SecretBuf::default();
        emit(&docs, &mut out).unwrap();
        let text = String::from_utf8(out.as_slice().to_vec()).unwrap();
        assert_eq!(parse(&text).unwrap(), docs);
    }

    #[test]
    fn anchors_are_expanded_and_bounded() {
        let docs = parse("a: &x {k: v}\nb: *x\n").unwrap();
        assert_eq!(docs[0][1], Entry::pair("b", Node::Map(vec![Entry::pair("k", Node::Str("v".into()))])));
        let mut bomb = String::from("a: &a [x, x, x, x, x, x, x, x, x, x]\n");
        for i in 0..8 {
            let prev = if i == 0 { "a".to_owned() } else { format!("l{}", i - 1) };
            bomb.push_str(&format!("l{i}: &l{i} [*{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}]\n"));
        }
        assert!(parse(&bomb).is_err());
    }

    #[test]
    fn refuses_what_sops_refuses() {
        assert!(parse("- a\n- b\n").is_err());
        assert!(parse("just a scalar\n").is_err());
        assert!(parse("? [a, b]\n: c\n").is_err());
    }

    #[test]
    fn reads_several_documents() {
        let docs = parse("a: 1\n---\nb: 2\n").unwrap();
        assert_eq!(docs.len(), 2);
    }
}
