//! `kitbash` CLI library: every subcommand's logic, so integration tests can call it in-process.
//!
//! # Layout
//! - [`cli`]: argument parsing (clap) and dispatch.
//! - [`status`]: `kitbash status` — fleet, streams, groups, lag, pending, dead letters, Redis.
//! - [`bench`]: `kitbash bench SUITE` — figures as ratios to same-run baselines.

pub mod bench;
pub mod cli;
pub mod status;
