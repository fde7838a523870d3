//! `kitbash-runtime`: what every kitbash daemon stands on.
//!
//! # Layout
//! - [`config`]: layered configuration (files, profile, `KITBASH__*` env), validated up front.
//! - [`telemetry`]: tracing subscriber, text or JSON.
//! - [`shutdown`]: SIGTERM/SIGINT → a cancellation token; SIGHUP → a reload counter.
//! - [`redis`]: fred clients with timeouts, bounded buffers and a separate blocking connection.
//! - [`entries`]: stream replies parsed from raw RESP.
//! - [`component`]: the component layer — a daemon declares consume / partitioned / every /
//!   leader components and the runtime runs them.
//! - [`consumer`]: the consumer-group loop (own pending first, reclaim, dead-letter, batched ack).
//! - [`dedup`]: de-duplication by producer `mid` for consumer groups.
//! - [`dead`]: dead letters, built in one place.
//! - [`partition`]: ordered work over partitioned streams (leases, fenced checkpoints, snapshots).
//! - [`lease`], [`leader`]: leases with per-acquisition tokens; leader tasks.
//! - [`trim`]: the one safe way to trim a stream.
//! - [`idempotency`]: apply an effect at most once, atomically with its marker.
//! - [`periodic`]: periodic tasks that stop with the daemon.
//! - [`backoff`]: the one backoff policy every retry loop uses.
//! - [`clock`]: this host's clock and Redis's (`TIME`).
//! - [`heartbeat`]: the fleet register behind `kitbash status`.
//! - [`health`], [`metrics`], [`admin`]: `/healthz`, `/readyz`, `/metrics`.
//! - [`daemon`]: the life of a daemon binary, so every `main.rs` is one call.
//! - [`args`]: a daemon's `--help` (its config section, environment) and `--version`.
//!
//! **Invariant:** nothing here spells a key; every name comes from `kitbash-schema`.

pub mod admin;
pub mod args;
pub mod backoff;
pub mod clock;
pub mod component;
/// The configuration lives in its own crate (`kitbash-config`) so a daemon owns its section
/// without touching the runtime; re-exported here under its old path.
pub use kitbash_config as config;
pub mod consumer;
pub mod daemon;
pub mod dead;
pub mod dedup;
pub mod entries;
pub mod error;
pub mod health;
pub mod heartbeat;
pub mod idempotency;
pub mod leader;
pub mod lease;
pub mod metrics;
pub mod partition;
pub mod periodic;
pub mod redis;
pub mod shutdown;
pub mod telemetry;
pub mod trim;

pub use backoff::Backoff;
pub use component::Components;
pub use config::Config;
pub use consumer::{Delivery, Handler, LoopStats, Outcome, StreamConsumer};
pub use daemon::DaemonContext;
pub use error::RuntimeError;
pub use redis::Redis;
pub use shutdown::{CancellationToken, Signals};
