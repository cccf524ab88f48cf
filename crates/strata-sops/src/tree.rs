//! The ordered document tree SOPS works on, and the walk that visits its
//! values in document order.
//!
//! The shape follows SOPS' own `TreeBranch`: a mapping is an ordered list of
//! entries, where an entry is a key with its value or a comment line; a
//! sequence is an ordered list of values and comment lines. Order matters: the
//! MAC is a hash over the values in this order.

use zeroize::Zeroizing;

use crate::text::Text;

/// One value of a document.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Node {
    Map(Vec<Entry>),
    Seq(Vec<Node>),
    Str(Text),
    Int(i64),
    Float(f64),
    Bool(bool),
    /// SOPS' `type:bytes`; only ever produced by decryption.
    Bytes(Zeroizing<Vec<u8>>),
    Null,
    /// A comment line inside a sequence (without its leading `#`).
    Comment(Text),
}

/// One entry of a mapping.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Entry {
    Pair(Text, Node),
    /// A comment line inside a mapping (without its leading `#`).
    Comment(Text),
}

impl Entry {
    pub(crate) fn pair(key: impl Into<Text>, value: Node) -> Self {
        Entry::Pair(key.into(), value)
    }
}

/// The plaintext bytes SOPS feeds to its MAC (and encrypts) for a scalar: Go's
/// `strconv` forms, booleans as Python-era `True`/`False`.
pub(crate) fn scalar_bytes(node: &Node) -> Option<Zeroizing<Vec<u8>>> {
    let bytes = match node {
        Node::Str(s) | Node::Comment(s) => s.as_bytes().to_vec(),
        Node::Int(i) => i.to_string().into_bytes(),
        Node::Float(f) => go_float(*f).into_bytes(),
        Node::Bool(true) => b"True".to_vec(),
        Node::Bool(false) => b"False".to_vec(),
        Node::Bytes(b) => b.to_vec(),
        Node::Map(_) | Node::Seq(_) | Node::Null => return None,
    };
    Some(Zeroizing::new(bytes))
}

/// `strconv.FormatFloat(f, 'f', -1, 64)`: the shortest decimal that reads
/// back as `f`, never with an exponent. Rust's `Display` for `f64` is the same
/// for finite values.
pub(crate) fn go_float(f: f64) -> String {
    if f.is_nan() {
        "NaN".to_owned()
    } else if f.is_infinite() {
        if f > 0.0 { "+Inf" } else { "-Inf" }.to_owned()
    } else {
        format!("{f}")
    }
}

/// What a walk is told at each leaf.
pub(crate) struct Visit<'a> {
    /// The keys from the document root to the leaf (sequence positions are
    /// not part of a SOPS path).
    pub(crate) path: &'a [Text],
    /// For each open mapping or sequence, the comments seen since its last
    /// non-comment item, as SOPS keeps them for its comment regexes.
    pub(crate) comments: &'a [Vec<Text>],
}

/// Visits every scalar and comment of a branch in document order, letting the
/// visitor replace it. Nulls are skipped, as SOPS skips them.
pub(crate) trait Visitor {
    type Error;
    fn leaf(&mut self, node: &mut Node, at: &Visit<'_>) -> Result<(), Self::Error>;
    fn comment(&mut self, text: &mut Text, at: &Visit<'_>) -> Result<(), Self::Error>;
}

pub(crate) fn walk_branch<V: Visitor>(entries: &mut [Entry], visitor: &mut V) -> Result<(), V::Error> {
    let mut path = Vec::new();
    let mut comments = Vec::new();
    walk_map(entries, &mut path, &mut comments, visitor)
}

fn walk_map<V: Visitor>(
    entries: &mut [Entry],
    path: &mut Vec<Text>,
    comments: &mut Vec<Vec<Text>>,
    visitor: &mut V,
) -> Result<(), V::Error> {
    comments.push(Vec::new());
    for entry in entries.iter_mut() {
        match entry {
            Entry::Comment(text) => {
                comments.last_mut().expect("pushed above").push(text.clone());
                visitor.comment(text, &Visit { path, comments })?;
            }
            Entry::Pair(key, value) => {
                path.push(key.clone());
                let result = walk_value(value, path, comments, visitor);
                path.pop();
                result?;
                comments.last_mut().expect("pushed above").clear();
            }
        }
    }
    comments.pop();
    Ok(())
}

fn walk_seq<V: Visitor>(
    items: &mut [Node],
    path: &mut Vec<Text>,
    comments: &mut Vec<Vec<Text>>,
    visitor: &mut V,
) -> Result<(), V::Error> {
    comments.push(Vec::new());
    for item in items.iter_mut() {
        if let Node::Comment(text) = item {
            comments.last_mut().expect("pushed above").push(text.clone());
            visitor.comment(text, &Visit { path, comments })?;
        } else {
            walk_value(item, path, comments, visitor)?;
            comments.last_mut().expect("pushed above").clear();
        }
    }
    comments.pop();
    Ok(())
}

fn walk_value<V: Visitor>(
    node: &mut Node,
    path: &mut Vec<Text>,
    comments: &mut Vec<Vec<Text>>,
    visitor: &mut V,
) -> Result<(), V::Error> {
    match node {
        Node::Map(entries) => walk_map(entries, path, comments, visitor),
        Node::Seq(items) => walk_seq(items, path, comments, visitor),
        Node::Null => Ok(()),
        Node::Comment(text) => visitor.comment(text, &Visit { path, comments }),
        _ => visitor.leaf(node, &Visit { path, comments }),
    }
}

/// SOPS' additional data for a value: its path's keys, each followed by `:`.
pub(crate) fn aad(path: &[Text]) -> String {
    let mut s = String::new();
    for key in path {
        s.push_str(key);
        s.push(':');
    }
    if s.is_empty() {
        s.push(':');
    }
    s
}

/// Every key path of the branch that leads to a mapping or sequence, the root
/// included: where a comment may have been encrypted.
pub(crate) fn container_paths(entries: &[Entry]) -> Vec<Vec<Text>> {
    fn visit(node: &Node, path: &mut Vec<Text>, out: &mut Vec<Vec<Text>>) {
        match node {
            Node::Map(entries) => {
                out.push(path.clone());
                for entry in entries {
                    if let Entry::Pair(key, value) = entry {
                        path.push(key.clone());
                        visit(value, path, out);
                        path.pop();
                    }
                }
            }
            Node::Seq(items) => {
                out.push(path.clone());
                for item in items {
                    visit(item, path, out);
                }
            }
            _ => {}
        }
    }
    let mut out = vec![Vec::new()];
    let mut path = Vec::new();
    for entry in entries {
        if let Entry::Pair(key, value) = entry {
            path.push(key.clone());
            visit(value, &mut path, &mut out);
            path.pop();
        }
    }
    out.dedup();
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aad_is_keys_joined_with_trailing_colon() {
        assert_eq!(aad(&[Text::from("a"), Text::from("b")]), "a:b:");
        assert_eq!(aad(&[]), ":");
    }

    #[test]
    fn floats_format_as_go_does() {
        assert_eq!(go_float(1.0), "1");
        assert_eq!(go_float(1234.56789), "1234.56789");
        assert_eq!(go_float(1e21), "1000000000000000000000");
        assert_eq!(go_float(1e-7), "0.0000001");
        assert_eq!(go_float(-0.0), "-0");
        assert_eq!(go_float(f64::INFINITY), "+Inf");
        assert_eq!(go_float(f64::NEG_INFINITY), "-Inf");
        assert_eq!(go_float(f64::NAN), "NaN");
    }

    #[test]
    fn bools_are_titlecase_for_the_mac() {
        assert_eq!(scalar_bytes(&Node::Bool(true)).unwrap().as_slice(), b"True");
        assert_eq!(scalar_bytes(&Node::Bool(false)).unwrap().as_slice(), b"False");
    }
}
