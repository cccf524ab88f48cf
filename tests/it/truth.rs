//! What strata says is what it does, over random histories of commits and approvals (the model
//! and both checks are in `tests/common/truth.rs`): a running daemon decides as one restarted at
//! every step, and `strata plan` lists what the daemon then does. A fixed seed and a bounded
//! number of steps here; `cargo bench --bench truth` runs long histories from random seeds.

use crate::common::truth;

fn seed_and_steps(steps: usize) -> (u64, usize) {
    let seed = std::env::var("STRATA_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or(20261207);
    let steps = std::env::var("STRATA_TRUTH_STEPS").ok().and_then(|s| s.parse().ok()).unwrap_or(steps);
    (seed, steps)
}

#[test]
fn a_running_daemon_decides_as_a_restarted_one_and_as_the_plan_says() {
    let (seed, steps) = seed_and_steps(24);
    truth::run_on(seed, steps, false);
}

/// The same on clusters behind API servers (the stand-in): applies, watches, drift and hand edits
/// through the Kubernetes API.
#[test]
fn the_same_on_api_servers() {
    let (seed, steps) = seed_and_steps(12);
    truth::run_on(seed ^ 0x5eed, steps, true);
}
