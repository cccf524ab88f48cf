//! The long run of the truth checks (`tests/common/truth.rs`): histories from random seeds, each
//! many steps long, against a running daemon and one restarted at every step, and against
//! `strata plan`. CI runs short histories with fixed seeds (`tests/it/truth.rs`); this runs
//! until told to stop, printing each seed before its history starts, so a failure (which prints
//! the seed and the operations so far) is repeated with `STRATA_SEED=<seed> cargo test --test
//! it truth::` or `cargo bench --bench truth -- --seed <seed>`.
//!
//! `cargo bench --bench truth` runs 5 histories of 60 steps. Options (after `--`):
//! `--histories N`, `--steps N`, `--seed S` (one history from that seed), `--api-servers`
//! (clusters behind API server stand-ins instead of directories).

#[path = "../tests/apiserver/mod.rs"]
mod apiserver;
#[path = "../tests/common/mod.rs"]
mod common;

use common::truth;
use std::time::Instant;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let option = |name: &str| args.iter().position(|a| a == name).and_then(|i| args.get(i + 1)).cloned();
    let number = |name: &str, default: u64| {
        option(name).map(|n| n.parse().unwrap_or_else(|_| panic!("{name} takes a number"))).unwrap_or(default)
    };
    let steps = number("--steps", 60) as usize;
    let api_servers = args.iter().any(|a| a == "--api-servers");
    let seeds: Vec<u64> = match option("--seed") {
        Some(seed) => vec![seed.parse().expect("--seed takes a number")],
        None => (0..number("--histories", 5)).map(|_| fastrand::u64(..)).collect(),
    };
    let started = Instant::now();
    for (i, seed) in seeds.iter().enumerate() {
        println!("history {} of {}: seed {seed}, {steps} steps", i + 1, seeds.len());
        let history = Instant::now();
        truth::run_on(*seed, steps, api_servers);
        println!("  held: {:.0} s", history.elapsed().as_secs_f64());
    }
    println!("{} histories, {} steps each, all held, in {:.0} s", seeds.len(), steps, started.elapsed().as_secs_f64());
}
