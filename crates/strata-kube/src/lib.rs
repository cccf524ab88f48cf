//! strata's edge to clusters, over the pure core (`strata-core`).
//!
//! ```text
//!   net      (one HTTP client)   ->  proxies, CAs, client certificates: for Git, forges and clusters alike
//!   target   (kube | directory)  ->  a cluster to survey, apply to, prune from, watch; the inventory it keeps
//!   apply    (over a Target)     ->  staged server-side apply, inventory, prune, health, drift
//! ```
//!
//! `apply` talks to clusters only through the [`target::Target`] trait; `target` speaks
//! Kubernetes (kube-rs, through `net`) or writes a directory. Nothing here knows of Git, of the
//! daemon's state or of people: the `strata` crate holds those.

pub mod apply;
pub mod net;
pub mod target;

// The core's modules under their own names, so paths read the same in every crate.
pub(crate) use strata_core::{redact, render, yaml};
