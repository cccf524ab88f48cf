//! strata's pure core: a repository's tree in, per cluster what it should run (and why) out.
//!
//! ```text
//!   source   (git2 commit tree | directory)  ->  Snapshot { revision, tree }; SOPS files read decrypted
//!   repo     (load + validate)               ->  Model { profiles, clusters, rollouts, approval rules } | Diagnostics (file:line)
//!   model    (resolve)                       ->  the profile version each cluster runs
//!   render   (tools at the edge)             ->  DesiredSet per cluster, with digests
//!   plan                                     ->  per cluster: upgrade | rollback | in-place edit | override | ...; the waves it takes
//!   rollout                                  ->  which governed changes go now, in waves; which wait
//!   approval                                 ->  who may approve what, and whether enough have
//!   redact                                   ->  the copies of objects that may be shown: Secret values as keyed hashes
//! ```
//!
//! Everything here is plain functions over plain data: no runtime, no network, no state. The
//! only IO is reading the snapshot (a Git object database or a directory) and running kustomize,
//! helm and template workers for the layers that need them, confined. What talks to clusters is
//! `strata-kube`; what watches Git, keeps state and serves people is the `strata` crate.
//!
//! The modules are layered, lowest first, and none imports one above it (`scripts/modgraph`
//! checks): `diag`, `names`, `status`, `units`, `window`, `yaml` → `approval`, `redact`,
//! `source` → `rollout` → `model` → `render`, `repo` → `plan`.

pub mod approval;
pub mod diag;
pub mod model;
pub mod names;
pub mod plan;
pub mod redact;
pub mod render;
pub mod repo;
pub mod rollout;
pub mod source;
pub mod status;
pub mod units;
pub mod window;
pub mod yaml;
