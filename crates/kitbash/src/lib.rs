//! `kitbash` CLI library: every subcommand's logic, so integration tests can call it in-process.
//!
//! # Layout
//! - [`cli`]: argument parsing (clap) and dispatch.
//! - [`status`]: `kitbash status` — fleet, streams, groups, lag, pending, dead letters, Redis.
//! - [`bench`]: `kitbash bench SUITE` — figures as ratios to same-run baselines.
//! - [`feed`]: `kitbash feed ticks` — a synthetic market or a CSV replay into the tick partitions.
//! - [`up`]: `kitbash up` — a local Redis, every built daemon, demo feeds, a live status view.

pub mod bench;
pub mod cli;
pub mod feed;
pub mod status;
pub mod up;
