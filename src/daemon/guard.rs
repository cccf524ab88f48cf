//! Containment: nothing a repository contains may end the daemon.
//!
//! ```text
//!   evaluate a revision (blocking thread) ──catch──> Panicked: the revision is rejected
//!   render one cluster                    ──catch──> that cluster fails at this revision
//!   apply / drift check in a worker       ──catch──> that reconcile fails, retried with backoff
//! ```
//!
//! A panic is a bug, but one a hostile or merely unusual commit can trigger; the daemon treats
//! it as it treats a revision that does not load: logged with where it happened, counted, the
//! last good revision keeps serving. The release profile must keep `panic = "unwind"` for this.

use std::any::Any;
use std::cell::RefCell;
use std::future::Future;
use std::panic::{AssertUnwindSafe, catch_unwind};

use futures::FutureExt as _;

thread_local! {
    /// Where the last panic on this thread happened, as the panic hook saw it.
    static LOCATION: RefCell<Option<String>> = const { RefCell::new(None) };
}

/// A caught panic: its message and where it was raised.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{message} (at {location})")]
pub struct Panic {
    pub message: String,
    pub location: String,
}

impl Panic {
    fn from_payload(payload: Box<dyn Any + Send>) -> Panic {
        let message = payload
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| payload.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "a panic without a message".to_string());
        let location = LOCATION.with(|l| l.borrow_mut().take()).unwrap_or_else(|| "unknown".to_string());
        Panic { message, location }
    }
}

/// Routes panic reports through the log (with the thread's location kept for [`Panic`]), instead
/// of the default hook's bare stderr line.
pub fn install_hook() {
    std::panic::set_hook(Box::new(|info| {
        let location = info.location().map(|l| format!("{}:{}", l.file(), l.line())).unwrap_or_default();
        let message = info
            .payload()
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| info.payload().downcast_ref::<String>().cloned())
            .unwrap_or_default();
        tracing::error!(%location, panic = %message, "Panicked.");
        LOCATION.with(|l| *l.borrow_mut() = Some(location));
    }));
}

/// Runs `f`, turning a panic into an error.
pub fn catch<T>(f: impl FnOnce() -> T) -> Result<T, Panic> {
    catch_unwind(AssertUnwindSafe(f)).map_err(Panic::from_payload)
}

/// Polls `future` to completion, turning a panic in any poll into an error.
pub async fn catch_async<F: Future>(future: F) -> Result<F::Output, Panic> {
    AssertUnwindSafe(future).catch_unwind().await.map_err(Panic::from_payload)
}

/// Fault injection for the end-to-end tests, in debug builds only:
/// `STRATA_INJECT_PANIC=stage:subject[,stage:subject…]` panics when `stage` reaches `subject`
/// (a cluster name): `revision` (loading a revision that has the cluster), `render` (evaluating
/// that cluster), `apply` (a worker applying it). Release builds compile this to nothing.
#[cfg(debug_assertions)]
pub fn inject(stage: &str, subject: &str) {
    static PLAN: std::sync::OnceLock<Vec<(String, String)>> = std::sync::OnceLock::new();
    let plan = PLAN.get_or_init(|| {
        std::env::var("STRATA_INJECT_PANIC")
            .unwrap_or_default()
            .split(',')
            .filter_map(|item| item.split_once(':'))
            .map(|(s, c)| (s.to_string(), c.to_string()))
            .collect()
    });
    if plan.iter().any(|(s, c)| s == stage && c == subject) {
        panic!("injected panic: {stage} of {subject}");
    }
}

#[cfg(not(debug_assertions))]
#[inline(always)]
pub fn inject(_stage: &str, _subject: &str) {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn panics_become_errors_with_their_message() {
        let caught = catch(|| -> u32 { panic!("boom {}", 42) }).unwrap_err();
        assert_eq!(caught.message, "boom 42");
        assert_eq!(catch(|| 7).unwrap(), 7);
        let runtime = tokio::runtime::Builder::new_current_thread().build().unwrap();
        let caught = runtime.block_on(catch_async(async { panic!("in a future") })).unwrap_err();
        assert_eq!(caught.message, "in a future");
    }
}
