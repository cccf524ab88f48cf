//! Output budgets: how much a repository may make strata render, per template, per layer and
//! per cluster, and how much rendering may hold in memory.
//!
//! Fuel bounds what one template may do: minijinja (3.1) charges it for every instruction and
//! for the bytes an operation would allocate before it allocates them, so `'x' * 100000000` or a
//! string doubled in a loop runs out of fuel rather than memory. What fuel does not bound is how
//! much many templates, or a tool, write together: two thousand templates that each write two
//! megabytes are four gigabytes. So every rendering is also bounded in bytes (a writer that stops
//! at its budget, a tool killed when its output passes it), per template, per layer and per
//! cluster. The figures leave real layers far below them: a kube-prometheus-stack renders about
//! 5 MiB.

use std::io;

/// Bytes one template may write.
pub const TEMPLATE_BYTES: u64 = 8 * 1024 * 1024;
/// Bytes one layer may render to (all its templates, or a tool's whole output).
pub const LAYER_BYTES: u64 = 32 * 1024 * 1024;
/// Bytes one cluster's layers may render to together.
pub const CLUSTER_BYTES: u64 = 64 * 1024 * 1024;
/// Rendered bytes the renderer keeps to share between clusters.
pub const CACHE_BYTES: u64 = 64 * 1024 * 1024;
/// Bytes of distinct document text whose parses the renderer keeps to share between clusters
/// (the parsed values take several times that).
pub const PARSED_BYTES: u64 = 16 * 1024 * 1024;

/// `32 MiB` for people.
pub fn mib(bytes: u64) -> String {
    format!("{} MiB", bytes / (1024 * 1024))
}

/// A writer that takes at most `limit` bytes and fails past it, so a render stops the moment it
/// goes over instead of after it has produced everything.
pub struct Bounded {
    pub buf: Vec<u8>,
    pub limit: u64,
    /// Whether a write was refused for going past the limit.
    pub exceeded: bool,
}

impl Bounded {
    pub fn new(limit: u64) -> Self {
        Bounded { buf: Vec::new(), limit, exceeded: false }
    }
}

impl io::Write for Bounded {
    fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
        if self.buf.len() as u64 + bytes.len() as u64 > self.limit {
            self.exceeded = true;
            return Err(io::Error::new(io::ErrorKind::FileTooLarge, "output budget exceeded"));
        }
        self.buf.extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write as _;

    #[test]
    fn a_bounded_writer_stops_at_its_limit() {
        let mut w = Bounded::new(4);
        w.write_all(b"abc").unwrap();
        assert!(!w.exceeded);
        assert!(w.write_all(b"de").is_err());
        assert!(w.exceeded);
        assert_eq!(w.buf, b"abc");
    }
}
