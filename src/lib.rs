//! strata: GitOps reconciliation for fleets of Kubernetes clusters described as versioned profiles.
//!
//! Three crates, each a floor of the architecture:
//!
//! ```text
//!   strata-core  (pure)       source, repo, model, render, plan, rollout, approval, redact, ...
//!                             a repository's tree in, per cluster what it should run and why out
//!   strata-kube  (the edge)   net (one HTTP client), target (kube | directory), apply (over a Target)
//!   strata       (this crate) config, report (forges, notes), daemon (strata run), the CLI
//! ```
//!
//! The core's modules are re-exported here under their own names (`strata::model`,
//! `crate::render`), so a path reads the same from every crate; what this crate owns is below:
//!
//! ```text
//!   config   (strata.yaml)          ->  each subsystem's settings, parsed and handed out
//!   report   (forges, git notes)    ->  commit statuses and pull-request plans, delivered
//!   verify   (repository.verify)    ->  which commits must be signed
//!   daemon   (strata run)           ->  watch Git, decide by policy, workers per cluster, state, web
//! ```

pub use strata_core::{
    approval, diag, model, names, plan, redact, render, repo, rollout, source, status, units, window, yaml,
};

pub use strata_kube::{apply, net, target};

pub mod backoff;
pub mod config;
pub mod daemon;
#[doc(hidden)]
pub mod fuzzing;
pub mod report;
pub mod verify;
