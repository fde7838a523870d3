//! `kitbash` CLI library: every subcommand's logic, so integration tests can call it in-process.
//!
//! # Layout
//! - [`cli`]: argument parsing (clap) and dispatch.
//! - [`status`]: `kitbash status` — fleet, streams, groups, lag, pending, dead letters, Redis.
//! - [`bench`]: `kitbash bench SUITE` — figures as ratios to same-run baselines.
//! - [`feed`]: `kitbash feed ticks` — a synthetic market or a CSV replay into the tick partitions.
//! - [`up`]: `kitbash up` — a local Redis, every built daemon, demo feeds, a live status view.
//! - [`ratelimit`]: `kitbash ratelimit show|reset USER [ENDPOINT]`.
//! - [`cache`]: `kitbash cache clear FAMILY [--dry-run]` (by SCAN, never KEYS).
//! - [`keys`]: `kitbash keys top` — largest keys by sampling, hottest under LFU.

pub mod bench;
pub mod cache;
pub mod cli;
pub mod feed;
pub mod keys;
pub mod ratelimit;
pub mod status;
pub mod up;
