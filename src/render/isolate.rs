//! A closure run in a forked child with a ceiling on its heap: the closure and the ceiling in,
//! its result (sent back as JSON over a pipe) or why the child did not finish out.
//!
//! Template rendering runs here. minijinja can allocate a hundred megabytes in one instruction
//! (`"x" * 100000000`), more by concatenating such strings, and no amount of fuel prevents it;
//! in a child whose `RLIMIT_DATA` stops at the ceiling, such an allocation fails and ends the
//! child, not strata.
//!
//! The child is forked without exec, from a process that may have other threads. It relies on
//! what glibc guarantees after fork (its allocator's locks are reset in the child) and touches
//! nothing else another thread could hold: no logging, no stdio, no environment; it leaves with
//! `_exit`, so no destructor or exit handler of the parent's runs twice.

use std::io::{Read as _, Write as _};
use std::os::fd::{FromRawFd as _, OwnedFd};

use serde::Serialize;
use serde::de::DeserializeOwned;

#[derive(Debug, PartialEq, Eq)]
pub enum IsolateError {
    /// The child died of a signal: an allocation past the ceiling aborts it.
    Died(i32),
    /// The child sent back more than it may.
    ReplyTooLarge,
    /// The child could not be started, or failed otherwise; worth running the closure in-process.
    Unavailable(String),
}

/// Runs `f` in a child whose heap may grow by at most `memory` bytes, and returns what it
/// returned. The reply may be at most `max_reply` bytes of JSON.
pub fn run<T, F>(memory: u64, max_reply: u64, f: F) -> Result<T, IsolateError>
where
    T: Serialize + DeserializeOwned,
    F: FnOnce() -> T,
{
    let unavailable = |what: &str| IsolateError::Unavailable(format!("{what}: {}", std::io::Error::last_os_error()));
    let data = data_bytes();
    let mut fds = [0; 2];
    // SAFETY: pipe2 writes two descriptors into the array.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(unavailable("pipe"));
    }
    // SAFETY: both descriptors were just opened and are owned here alone.
    let (read, write) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    // SAFETY: see the module's documentation for what the child does and does not touch.
    match unsafe { libc::fork() } {
        -1 => Err(unavailable("fork")),
        0 => {
            drop(read);
            let ceiling = data.saturating_add(memory);
            let limit = libc::rlimit { rlim_cur: ceiling, rlim_max: ceiling };
            // SAFETY: setrlimit reads the struct it is given.
            unsafe { libc::setrlimit(libc::RLIMIT_DATA, &limit) };
            let code = match std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)) {
                Ok(value) => {
                    let mut out = std::io::BufWriter::new(std::fs::File::from(write));
                    let sent = serde_json::to_writer(&mut out, &value).is_ok() && out.flush().is_ok();
                    if sent { 0 } else { 1 }
                }
                Err(_) => 101,
            };
            // SAFETY: leaves the child at once, running nothing of the parent's.
            unsafe { libc::_exit(code) }
        }
        pid => {
            drop(write);
            let mut reply = Vec::new();
            let read = std::fs::File::from(read).take(max_reply + 1).read_to_end(&mut reply);
            let too_large = reply.len() as u64 > max_reply;
            if too_large {
                // SAFETY: the child is ours and not yet reaped.
                unsafe { libc::kill(pid, libc::SIGKILL) };
            }
            let mut status = 0;
            // SAFETY: waits for our own child.
            while unsafe { libc::waitpid(pid, &mut status, 0) } == -1 {
                if std::io::Error::last_os_error().kind() != std::io::ErrorKind::Interrupted {
                    return Err(unavailable("waitpid"));
                }
            }
            if too_large {
                return Err(IsolateError::ReplyTooLarge);
            }
            if libc::WIFSIGNALED(status) {
                return Err(IsolateError::Died(libc::WTERMSIG(status)));
            }
            if read.is_err() || !libc::WIFEXITED(status) || libc::WEXITSTATUS(status) != 0 {
                return Err(IsolateError::Unavailable(format!("the child failed (status {status})")));
            }
            serde_json::from_slice(&reply).map_err(|e| IsolateError::Unavailable(format!("unreadable reply: {e}")))
        }
    }
}

/// What this process's data segment (the part `RLIMIT_DATA` counts) holds now.
fn data_bytes() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: u64 = statm.split_whitespace().nth(5).and_then(|p| p.parse().ok()).unwrap_or(0);
    // SAFETY: sysconf only reads a configuration value.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) }.max(4096) as u64;
    pages * page
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn results_come_back() {
        let value: Vec<String> = run(64 << 20, 1 << 20, || vec!["a".to_string(), "b".repeat(3)]).unwrap();
        assert_eq!(value, ["a", "bbb"]);
    }

    #[test]
    fn an_allocation_past_the_ceiling_ends_the_child_not_the_caller() {
        let e = run::<usize, _>(64 << 20, 1 << 20, || "x".repeat(1 << 30).len()).unwrap_err();
        assert_eq!(e, IsolateError::Died(libc::SIGABRT));
    }

    #[test]
    fn replies_are_bounded() {
        let e = run::<String, _>(64 << 20, 1024, || "x".repeat(4096)).unwrap_err();
        assert_eq!(e, IsolateError::ReplyTooLarge);
    }
}
