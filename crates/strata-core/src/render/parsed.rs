//! Rendered text in, parsed documents out — each distinct document parsed once.
//!
//! ```text
//!   a template's output ──split at `---`──> document texts ──(seen this text?)──> shared values
//!                                                  └── no: parse (YAML, under budget), keep ──┘
//! ```
//!
//! Parsing YAML is most of what rendering costs, and a fleet renders the same documents over and
//! over: clusters that override a layer's values still render most of its documents to the text
//! their neighbours got (a Namespace, a Service, a Deployment in one of six regions). Documents
//! are keyed by their whole text, so a hit is exact, and kept as shared values; the cache is
//! bounded by the bytes of text it holds and starts over past them.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use serde_json::Value;

use crate::yaml::{self, YamlError};

/// One parsed document: the line of the text it starts at, and its value. A `kind: List`
/// document is its items, each with the List's line.
pub type Parsed = (usize, Arc<Value>);

pub struct ParseCache {
    limit: u64,
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    docs: HashMap<Arc<str>, Arc<[Arc<Value>]>>,
    /// Bytes of text held as keys.
    bytes: u64,
}

impl ParseCache {
    /// A cache holding the parses of at most `limit` bytes of text.
    pub fn new(limit: u64) -> Self {
        ParseCache { limit, inner: Mutex::default() }
    }

    /// The documents of a multi-document stream, empty ones left out and `kind: List` flattened.
    pub fn parse(&self, text: &str) -> Result<Vec<Parsed>, YamlError> {
        let mut out = Vec::new();
        for (line, chunk) in yaml::split_documents(text) {
            let hit = self.lock().docs.get(chunk).cloned();
            let values = match hit {
                Some(values) => values,
                None => {
                    let values: Arc<[Arc<Value>]> = match yaml::parse_document(chunk, line)? {
                        Some(value) => flatten(value, line)?.into(),
                        None => Arc::from([]),
                    };
                    self.keep(chunk, values.clone());
                    values
                }
            };
            out.extend(values.iter().map(|v| (line, v.clone())));
        }
        Ok(out)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // The map holds only finished entries: a panic elsewhere leaves it usable.
        self.inner.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn keep(&self, text: &str, values: Arc<[Arc<Value>]>) {
        let size = text.len() as u64;
        if size > self.limit {
            return;
        }
        let mut inner = self.lock();
        if inner.bytes + size > self.limit {
            inner.docs.clear();
            inner.bytes = 0;
        }
        if inner.docs.insert(Arc::from(text), values).is_none() {
            inner.bytes += size;
        }
    }
}

/// How deep Lists may nest in one document.
const MAX_LIST_DEPTH: usize = 8;

/// A document's objects: the items of a `kind: List` (or `…List`), Lists in it flattened too, to
/// any depth up to [`MAX_LIST_DEPTH`] — every object is judged (named, redacted, applied) on
/// its own, never as the item of a List strata did not look into.
fn flatten(value: Value, line: usize) -> Result<Vec<Arc<Value>>, YamlError> {
    let mut out = Vec::new();
    let mut pending = vec![(value, 0)];
    while let Some((value, depth)) = pending.pop() {
        match value {
            Value::Object(mut map)
                if map.get("kind").and_then(Value::as_str).is_some_and(|k| k.ends_with("List"))
                    && map.get("items").is_some_and(Value::is_array) =>
            {
                if depth == MAX_LIST_DEPTH {
                    return Err(YamlError { line, message: format!("Lists nested more than {MAX_LIST_DEPTH} deep") });
                }
                let Some(Value::Array(items)) = map.remove("items") else { unreachable!("checked to be an array") };
                pending.extend(items.into_iter().rev().map(|item| (item, depth + 1)));
            }
            value => out.push(Arc::new(value)),
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_document_text_is_parsed_once_and_shared() {
        let cache = ParseCache::new(1 << 20);
        let a = cache.parse("kind: A\n---\nkind: B\n").unwrap();
        let b = cache.parse("kind: X\n---\nkind: B\n").unwrap();
        assert_eq!(a.iter().map(|(line, _)| *line).collect::<Vec<_>>(), [1, 2]);
        assert!(Arc::ptr_eq(&a[1].1, &b[1].1), "the second stream's `kind: B` is the first's");
        assert!(!Arc::ptr_eq(&a[0].1, &b[0].1));
    }

    #[test]
    fn lists_are_flattened_and_errors_point_into_the_stream() {
        let cache = ParseCache::new(1 << 20);
        let docs = cache.parse("---\nkind: List\nitems: [{kind: A}, {kind: B}]\n").unwrap();
        assert_eq!(docs.len(), 2);
        assert_eq!(docs[1].1["kind"], "B");
        let nested = cache
            .parse("kind: List\nitems:\n- {kind: A}\n- kind: List\n  items: [{kind: B}, {kind: SecretList, items: [{kind: C}]}]\n- {kind: D}\n")
            .unwrap();
        let kinds: Vec<&str> = nested.iter().map(|(_, v)| v["kind"].as_str().unwrap()).collect();
        assert_eq!(kinds, ["A", "B", "C", "D"], "Lists in Lists are flattened, in order");
        let deep =
            (0..=MAX_LIST_DEPTH).fold("{kind: X}".to_string(), |inner, _| format!("{{kind: List, items: [{inner}]}}"));
        assert!(cache.parse(&deep).unwrap_err().message.contains("nested more than"));
        let err = cache.parse("kind: A\n---\nkind: [\n").unwrap_err();
        assert!(err.line >= 3, "line {}", err.line);
    }

    #[test]
    fn past_its_limit_the_cache_starts_over() {
        let cache = ParseCache::new(16);
        let first = cache.parse("kind: Aaaaaaaaa\n").unwrap();
        cache.parse("kind: Bbbbbbbbb\n").unwrap();
        let again = cache.parse("kind: Aaaaaaaaa\n").unwrap();
        assert!(!Arc::ptr_eq(&first[0].1, &again[0].1), "dropped when the second came in");
        assert!(cache.lock().bytes <= 16);
    }
}
