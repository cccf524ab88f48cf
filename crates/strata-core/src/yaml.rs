//! YAML in and out, with limits.
//!
//! Every YAML strata reads goes through [`parse`] or [`parse_documents`], which parse with a tight
//! budget (aliases, nodes, depth) so an alias bomb fails in milliseconds with a clear error rather
//! than eating the daemon's memory. Output goes through [`to_string`], which writes keys sorted,
//! so the same objects always serialise to the same bytes.

use serde::de::DeserializeOwned;
use serde_json::Value;

/// Parse options for user YAML of `len` bytes. Kubernetes manifests rarely use anchors at all;
/// the limits leave room for large CRDs (tens of thousands of nodes) and refuse exponential
/// alias expansion. The node and event budgets grow with the text past their floor (a node takes
/// a byte or more to write without aliases): a host config naming 100,000 targets loads, and
/// what aliases can add stays linear in what was read.
fn options(len: usize) -> serde_saphyr::Options {
    let mut budget = serde_saphyr::Budget::default();
    budget.max_aliases = 1_000;
    budget.max_anchors = 1_000;
    budget.max_recorded_anchor_events = 20_000;
    budget.max_recorded_anchor_bytes = 1024 * 1024;
    budget.max_nodes = len.saturating_mul(2).max(200_000);
    budget.max_events = len.saturating_mul(4).max(400_000);
    budget.max_documents = 10_000;
    budget.max_total_scalar_bytes = 16 * 1024 * 1024;
    let mut options = serde_saphyr::Options::default();
    options.budget = Some(budget);
    options
}

/// A YAML error with the line it points at (1-based, 0 when unknown).
#[derive(Debug)]
pub struct YamlError {
    pub line: usize,
    pub message: String,
}

impl YamlError {
    fn from_saphyr(e: &serde_saphyr::Error, line_offset: usize) -> Self {
        let line = e.location().map(|l| l.line() as usize).unwrap_or(0);
        let mut message = e.without_snippet().to_string();
        // The location is reported separately (file:line); drop serde-saphyr's own suffix.
        if let Some(i) = message.rfind(" at line ") {
            message.truncate(i);
        }
        if message.starts_with("budget breached") {
            message = format!("{message} (too many nodes or aliases: is this an alias bomb?)");
        }
        YamlError { line: if line > 0 { line + line_offset } else { 0 }, message }
    }
}

/// Parses one document into `T`.
pub fn parse<T: DeserializeOwned>(text: &str) -> Result<T, YamlError> {
    serde_saphyr::from_str_with_options(text, options(text.len())).map_err(|e| YamlError::from_saphyr(&e, 0))
}

/// One document of a multi-document stream: its first line and its value.
#[derive(Debug)]
pub struct Document {
    pub line: usize,
    pub value: Value,
}

/// Parses a multi-document stream, keeping the line each document starts at so later errors
/// (a manifest without `kind`) can point at it. Empty documents are skipped.
pub fn parse_documents(text: &str) -> Result<Vec<Document>, YamlError> {
    let mut docs = Vec::new();
    for (start, chunk) in split_documents(text) {
        if let Some(value) = parse_document(chunk, start)? {
            docs.push(Document { line: start, value });
        }
    }
    Ok(docs)
}

/// Parses one document of a stream as [`split_documents`] cut it, `start` being the line it
/// starts at (errors point into the whole stream). `None` for an empty document. Each document
/// parses on its own, so a caller may parse a stream's documents separately and keep them.
pub fn parse_document(chunk: &str, start: usize) -> Result<Option<Value>, YamlError> {
    let value: Value = serde_saphyr::from_str_with_options(chunk, options(chunk.len()))
        .map_err(|e| YamlError::from_saphyr(&e, start - 1))?;
    Ok((!value.is_null()).then_some(value))
}

/// Splits a stream at `---` lines. Returns (1-based first line, text) per document. A `---` can
/// only start a line at column 0 between documents (block scalar content is indented), so a line
/// scan is exact for the documents Kubernetes tools write.
pub fn split_documents(text: &str) -> Vec<(usize, &str)> {
    let mut out = Vec::new();
    let mut start_byte = 0;
    let mut start_line = 1;
    let mut offset = 0;
    for (i, line) in text.split_inclusive('\n').enumerate() {
        let trimmed = line.trim_end();
        let is_marker =
            trimmed == "---" || trimmed.starts_with("--- ") || trimmed.starts_with("---\t") || trimmed == "...";
        if is_marker {
            out.push((start_line, &text[start_byte..offset]));
            // Content after `--- ` on the same line belongs to the next document.
            start_byte = if trimmed == "..." { offset + line.len() } else { offset + 3 };
            start_line = if trimmed == "..." { i + 2 } else { i + 1 };
        }
        offset += line.len();
    }
    out.push((start_line, &text[start_byte..]));
    out.retain(|(_, chunk)| !chunk.trim().is_empty());
    out
}

/// Serialises a value as block YAML with sorted keys (serde_json maps are ordered).
pub fn to_string(value: &Value) -> String {
    serde_saphyr::to_string(value).expect("a JSON value always serialises to YAML")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn documents_keep_their_first_line() {
        let docs = parse_documents("a: 1\n---\n# c\nb: 2\n--- \n\n---\nc: 3\n").unwrap();
        let lines: Vec<_> = docs.iter().map(|d| d.line).collect();
        assert_eq!(lines, vec![1, 2, 7]);
        assert_eq!(docs[1].value["b"], 2);
    }

    #[test]
    fn errors_point_at_the_line_in_the_whole_stream() {
        let err = parse_documents("a: 1\n---\nb: 2\nc: [\n").unwrap_err();
        assert!(err.line >= 4, "line {} for {}", err.line, err.message);
    }

    #[test]
    fn alias_bomb_fails_fast() {
        let mut bomb = String::from("a: &a [x,x,x,x,x,x,x,x,x]\n");
        let names = ["a", "b", "c", "d", "e", "f", "g", "h", "i"];
        for w in names.windows(2) {
            let refs = vec![format!("*{}", w[0]); 9].join(",");
            bomb.push_str(&format!("{}: &{} [{refs}]\n", w[1], w[1]));
        }
        let started = std::time::Instant::now();
        let err = parse::<Value>(&bomb).unwrap_err();
        assert!(started.elapsed() < std::time::Duration::from_secs(1));
        assert!(err.message.contains("budget"), "{}", err.message);
    }

    /// A large document of plain nodes (a host config naming 100,000 targets) is not a bomb.
    #[test]
    fn a_document_as_large_as_its_nodes_loads() {
        let mut text = String::from("targets:\n");
        for i in 0..100_000 {
            text.push_str(&format!("  c{i:05}: {{ directory: ./out/c{i:05} }}\n"));
        }
        let v: Value = parse(&text).unwrap();
        assert_eq!(v["targets"].as_object().unwrap().len(), 100_000);
    }

    #[test]
    fn output_is_sorted_and_stable() {
        let v: Value = parse("b: 1\na: {d: x, c: 'yes'}\n").unwrap();
        assert_eq!(to_string(&v), "a:\n  c: \"yes\"\n  d: x\nb: 1\n");
    }
}
