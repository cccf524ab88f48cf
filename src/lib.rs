//! strata: GitOps reconciliation for fleets of Kubernetes clusters described as versioned profiles.
//!
//! ```text
//!   source   (git2 commit tree | directory)  ->  Snapshot { revision, tree }
//!   repo     (load + validate, pure)         ->  Model { profiles, clusters, rollouts, approval rules } | Diagnostics (file:line)
//!   model    (resolve, pure)                 ->  the profile version each cluster runs
//!   render   (pure, tools at the edge)       ->  DesiredSet per cluster, with digests
//!   plan     (pure)                          ->  per cluster: upgrade | rollback | in-place edit | override | ...
//!   rollout  (pure)                          ->  which governed changes go now, in waves; which wait
//!   redact   (pure)                          ->  the copies of objects that may be shown: Secret values as keyed hashes
//!   apply    (over a Target)                 ->  staged server-side apply, inventory, prune, health, drift
//!   target   (kube | directory)              ->  the IO edge to clusters, configured on the host (config)
//!   daemon   (strata run)                    ->  watch Git, decide by policy, workers per cluster, state
//!   net      (one HTTP client)               ->  proxies, CAs, client certificates for Git, forges, clusters
//! ```
//!
//! Everything up to `plan` is plain functions over plain data; the only IO there is reading the
//! snapshot and running kustomize or helm for layers that need them. `apply` talks to clusters
//! only through the [`target::Target`] trait.

pub mod apply;
pub mod approval;
pub mod backoff;
pub mod config;
pub mod daemon;
pub mod diag;
#[doc(hidden)]
pub mod fuzzing;
pub mod model;
pub mod names;
pub mod net;
pub mod plan;
pub mod redact;
pub mod render;
pub mod repo;
pub mod report;
pub mod rollout;
pub mod source;
pub mod target;
pub mod units;
pub mod verify;
pub mod window;
pub mod yaml;
