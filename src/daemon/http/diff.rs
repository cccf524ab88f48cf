//! A unified diff (as the store keeps pending updates) as rows of a side-by-side table: context
//! on both sides, removals left, additions right, paired up within each change. Plain data; the
//! pending page's template draws it.

use serde::Serialize;

/// One line of one side.
#[derive(Serialize, Debug, PartialEq, Eq)]
pub struct Cell {
    pub number: usize,
    pub text: String,
}

#[derive(Serialize, Debug, PartialEq, Eq)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum Row {
    /// `kind/namespace/name` of the object the following rows are about.
    Object { name: String },
    /// A hunk header, `@@ -12,7 +12,7 @@` without the leading `@@`.
    Hunk { text: String },
    /// The same line on both sides.
    Context { left: Cell, right: Cell },
    /// A removed line, an added line, or one of each.
    Change { left: Option<Cell>, right: Option<Cell> },
}

pub fn side_by_side(diff: &str) -> Vec<Row> {
    let mut rows = Vec::new();
    let (mut left_no, mut right_no) = (0usize, 0usize);
    let mut dels: Vec<Cell> = Vec::new();
    let mut adds: Vec<Cell> = Vec::new();
    let flush = |rows: &mut Vec<Row>, dels: &mut Vec<Cell>, adds: &mut Vec<Cell>| {
        let mut adds = std::mem::take(adds).into_iter();
        for left in std::mem::take(dels) {
            rows.push(Row::Change { left: Some(left), right: adds.next() });
        }
        rows.extend(adds.map(|right| Row::Change { left: None, right: Some(right) }));
    };
    for line in diff.lines() {
        if let Some(name) = line.strip_prefix("--- base/") {
            flush(&mut rows, &mut dels, &mut adds);
            rows.push(Row::Object { name: name.to_string() });
        } else if line.starts_with("+++ ") {
        } else if let Some(hunk) = line.strip_prefix("@@") {
            flush(&mut rows, &mut dels, &mut adds);
            // @@ -12,7 +12,7 @@
            let mut numbers = hunk
                .split_whitespace()
                .filter_map(|p| p.trim_start_matches(['-', '+']).split(',').next()?.parse::<usize>().ok());
            left_no = numbers.next().unwrap_or(1);
            right_no = numbers.next().unwrap_or(1);
            rows.push(Row::Hunk { text: hunk.to_string() });
        } else if let Some(text) = line.strip_prefix('-') {
            dels.push(Cell { number: left_no, text: text.to_string() });
            left_no += 1;
        } else if let Some(text) = line.strip_prefix('+') {
            adds.push(Cell { number: right_no, text: text.to_string() });
            right_no += 1;
        } else {
            flush(&mut rows, &mut dels, &mut adds);
            let text = line.strip_prefix(' ').unwrap_or(line).to_string();
            rows.push(Row::Context {
                left: Cell { number: left_no, text: text.clone() },
                right: Cell { number: right_no, text },
            });
            left_no += 1;
            right_no += 1;
        }
    }
    flush(&mut rows, &mut dels, &mut adds);
    rows
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cell(number: usize, text: &str) -> Cell {
        Cell { number, text: text.to_string() }
    }

    #[test]
    fn diffs_side_by_side() {
        let diff = "--- base/Deployment/hello-universe/ui\n+++ head/Deployment/hello-universe/ui\n@@ -12,3 +12,4 @@\n spec:\n-  replicas: 1\n+  replicas: 3\n+  paused: true\n   selector:\n";
        assert_eq!(
            side_by_side(diff),
            [
                Row::Object { name: "Deployment/hello-universe/ui".into() },
                Row::Hunk { text: " -12,3 +12,4 @@".into() },
                Row::Context { left: cell(12, "spec:"), right: cell(12, "spec:") },
                Row::Change { left: Some(cell(13, "  replicas: 1")), right: Some(cell(13, "  replicas: 3")) },
                Row::Change { left: None, right: Some(cell(14, "  paused: true")) },
                Row::Context { left: cell(14, "  selector:"), right: cell(15, "  selector:") },
            ]
        );
    }
}
