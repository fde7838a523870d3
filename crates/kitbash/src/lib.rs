//! `kitbash` CLI library: every subcommand's logic, so integration tests can call it in-process.
//!
//! # Layout
//! - [`cli`]: argument parsing (clap) and dispatch.
//! - [`acl`]: `kitbash acl` — the Redis ACL file generated from the schema, passwords hashed.
//! - [`status`]: `kitbash status` — fleet, streams, groups, lag, pending, dead letters, Redis.
//! - [`bench`](mod@bench): `kitbash bench SUITE` — figures as ratios to same-run baselines.
//! - [`feed`]: `kitbash feed ticks` — a synthetic market or a CSV replay into the tick partitions.
//! - [`reflex`]: `kitbash grains`, `kitbash hat`, `kitbash feed queries` — seed 000's grains,
//!   hats and a demo query mix.
//! - [`up`]: `kitbash up` — a local Redis, every built daemon, demo feeds, a live status view.
//! - [`tether`]: `up`'s children die with it (`PR_SET_PDEATHSIG` through a trampoline).
//! - [`locate`]: where the configuration and the fleet are (`up.json`), and saying so.
//! - [`live`]: the status view as a pure function of a snapshot, a width and a height.
//! - [`ratelimit`]: `kitbash ratelimit show|reset USER [ENDPOINT]`.
//! - [`cache`]: `kitbash cache clear FAMILY [--dry-run]` (by SCAN, never KEYS).
//! - [`keys`]: `kitbash keys top` — largest keys by sampling, hottest under LFU.
//! - [`tail`]: `kitbash tail STREAM` — entries live, decoded, without a consumer group.
//! - [`archive`]: `kitbash archive ls|verify|export` — the Parquet archive's files, checks, DuckDB.
//! - [`memory`]: `kitbash memory top USER`, `kitbash feed memory` — seed 004's memory tokens.

pub mod acl;
pub mod archive;
pub mod bench;
pub mod cache;
pub mod cli;
pub mod feed;
pub mod keys;
pub mod live;
pub mod locate;
pub mod memory;
pub mod ratelimit;
pub mod reflex;
pub mod status;
pub mod tail;
pub mod tether;
pub mod up;
