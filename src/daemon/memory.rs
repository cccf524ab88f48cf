//! Giving freed memory back to the system.
//!
//! glibc keeps what a process frees in its arenas, for its next allocations. A daemon's work comes
//! in bursts — an evaluation, a fleet's applies, the drift checks after a start — and each burst
//! frees far more than the daemon holds between them: after the first apply of 10,000 clusters,
//! 230 MB of free heap stayed resident beside 85 MB in use. The `strata` binary allocates with
//! jemalloc (src/main.rs), whose own threads give freed pages back within a second; what is
//! still allocated with glibc's malloc — by the C libraries, libgit2 and SQLite, whose tree reads
//! and caches come and go with the same bursts — is handed back here: `malloc_trim` walks that
//! heap, so it runs once a burst is over, not after every piece of work: evaluations that freed
//! much trim at their end, and the workers' applies and renders are counted and trimmed after
//! every few seconds that had any.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::sync::watch;
use tracing::debug;

/// How often the workers' work is looked at: at most one trim per period.
const PERIOD: Duration = Duration::from_secs(10);

/// What the workers did that freed memory since the daemon started.
#[derive(Debug, Default)]
pub struct Freed {
    work: AtomicU64,
}

impl Freed {
    /// One apply, or one set rendered again, done: what it allocated is free now.
    pub fn note(&self) {
        self.work.fetch_add(1, Ordering::Relaxed);
    }
}

/// Trims every [`PERIOD`] in which the workers did something, until the daemon stops.
pub async fn run(freed: std::sync::Arc<Freed>, mut stopped: watch::Receiver<bool>) {
    let mut seen = freed.work.load(Ordering::Relaxed);
    loop {
        tokio::select! {
            _ = tokio::time::sleep(PERIOD) => {}
            _ = stopped.changed() => return,
        }
        let now = freed.work.load(Ordering::Relaxed);
        if now == seen {
            continue;
        }
        seen = now;
        let started = std::time::Instant::now();
        let _ = tokio::task::spawn_blocking(give_back).await;
        debug!(millis = started.elapsed().as_millis() as u64, "Gave freed memory back.");
    }
}

/// Hands the free pages of every arena back to the system.
pub fn give_back() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only returns free memory to the system; it has no preconditions.
    unsafe {
        libc::malloc_trim(0);
    }
}
