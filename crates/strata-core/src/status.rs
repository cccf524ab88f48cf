//! The state of a commit status, in the four words every forge uses: what strata reports on a
//! commit for each cluster (and for a rollout's run) ends in one of them. The rollout gate
//! decides them; the `report` module of the `strata` crate delivers them.

use serde::Serialize;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum State {
    /// Applying, or a pending update awaiting approval.
    Pending,
    /// Applied and healthy.
    Success,
    /// Apply failed, unhealthy, or drift under `report`.
    Failure,
    /// The revision does not render.
    Error,
}

impl State {
    pub fn as_str(self) -> &'static str {
        match self {
            State::Pending => "pending",
            State::Success => "success",
            State::Failure => "failure",
            State::Error => "error",
        }
    }

    pub fn parse(text: &str) -> Option<State> {
        Some(match text {
            "pending" => State::Pending,
            "success" => State::Success,
            "failure" => State::Failure,
            "error" => State::Error,
            _ => return None,
        })
    }
}
