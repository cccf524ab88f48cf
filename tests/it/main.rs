//! Every integration test in one binary (`cargo test --test it`; one suite: `cargo test --test it
//! daemon::`): the fixtures and the API server stand-in are compiled once and linked once, where
//! a binary per file compiled and linked them a score of times.
//!
//! A test module is a file beside this one; fixtures shared by several live one level up
//! (`tests/common`, `tests/apiserver`, the forge, Git-over-HTTP and network-lab stand-ins), where
//! the benchmarks reach them too.

#[path = "../apiserver/mod.rs"]
mod apiserver;
#[path = "../common/mod.rs"]
mod common;
#[path = "../forge/mod.rs"]
mod forge;
#[path = "../githttp/mod.rs"]
mod githttp;
#[path = "../netlab/mod.rs"]
mod netlab;
#[path = "../../benches/support/mod.rs"]
mod support;

mod apiserver_conformance;
mod apply;
mod broken;
mod browser;
mod budget;
mod cli;
mod confinement;
mod daemon;
mod deploy;
mod docs;
mod drift_watch;
mod fuzz;
mod golden;
mod helm;
mod image;
mod kubernetes;
mod network;
mod oidc;
mod replicas;
mod report;
mod rollouts;
mod sandbox;
mod secrets;
mod store;
mod supply;
mod tools;
mod truth;
mod web;
