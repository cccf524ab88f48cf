//! strata: GitOps reconciliation for fleets of Kubernetes clusters described as versioned profiles.
//!
//! ```text
//!   source   (git2 commit tree | directory)  ->  Snapshot { revision, tree }
//!   repo     (load + validate, pure)         ->  Model { profiles, clusters }   | Diagnostics (file:line)
//!   model    (resolve, pure)                 ->  the profile version each cluster runs
//!   render   (pure, tools at the edge)       ->  DesiredSet per cluster, with digests
//!   plan     (pure)                          ->  per cluster: upgrade | rollback | in-place edit | override | ...
//! ```
//!
//! Everything here is plain functions over plain data; the only IO is reading the snapshot and
//! running kustomize or helm for layers that need them.

pub mod diag;
pub mod model;
pub mod plan;
pub mod render;
pub mod repo;
pub mod source;
pub mod yaml;
