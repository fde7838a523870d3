//! `kitbash-runtime`: what every kitbash daemon stands on.
//!
//! # The door: what a daemon author uses
//! [`Components`] (built from a [`DaemonContext`]) and [`daemon::main`] / [`daemon::run`];
//! the kinds' contracts — [`Handler`] / [`Delivery`] / [`Outcome`] for consumer groups,
//! [`RawHandler`] / [`RawEntry`] / [`Acks`] / [`TakeError`] for raw consumption with deferred
//! acknowledgement,
//! [`partition::PartitionLogic`] / [`partition::PartitionSpec`] / [`partition::Effects`] for
//! ordered partitions, [`leader::LeaderTerm`] for leader tasks, [`TaskCtx`] / [`Restart`] /
//! [`Readiness`] for long-running tasks; [`subscriber::Subscriber`] and [`tail::TailReader`] for
//! pub/sub with gap reports and group-less stream tails; and the tools a handler may
//! call: [`idempotency::apply_once`], [`trim::safe_trim`], [`bounds::Bounds`], [`Backoff`], [`metrics::Metrics`],
//! [`health::Health`], [`redis::Redis`], [`RuntimeError`]. Everything else is the runtime's own.
//!
//! # Layout
//! Public (the door, and what the CLI and tests read):
//! - [`config`]: layered configuration (files, profile, `KITBASH__*` env), validated up front.
//! - [`shutdown`]: SIGTERM/SIGINT → a cancellation token; SIGHUP → a reload counter.
//! - [`redis`]: fred clients with timeouts, bounded buffers, credentials; `redact` for logs.
//! - [`tls`]: the rustls configuration of `rediss://` from `[redis]`'s PEM files, and what a
//!   failed handshake means.
//! - [`entries`]: stream replies parsed from raw RESP (also `kitbash status`/`tail`).
//! - [`component`]: the component layer — a daemon declares consume / partitioned / every /
//!   leader / task / serve components and start-up checks, and the runtime runs them.
//! - [`consumer`]: the consumer-group loop (own pending first, reclaim, dead-letter, batched ack).
//! - [`partition`]: ordered work over partitioned streams (leases, fenced checkpoints, snapshots).
//! - [`lease`], [`leader`]: leases with per-acquisition tokens; leader tasks.
//! - [`trim`]: the safe trims (floor and trim in one script), the archive's trim claim.
//! - [`bounds`]: a daemon's periodic bounds task — the trims of the streams it owns
//!   ([`kitbash_schema::StreamName::trim_owner`]) and the dead-letter alarm of those it reads.
//! - [`subscriber`]: pub/sub from `[redis]`, resubscribing after a reconnect and reporting gaps.
//! - [`tail`]: `XREAD BLOCK` without a group, telling trimmed and restarted streams apart.
//! - [`task`], [`serve`]: long-running tasks (restart policies, readiness) and served routers
//!   (bound address in the heartbeat, drained on shutdown).
//! - [`idempotency`]: apply an effect at most once, atomically with its marker.
//! - [`backoff`]: the one backoff policy every retry loop uses.
//! - [`clock`]: this host's clock and Redis's (`TIME`).
//! - [`heartbeat`]: the fleet register behind `kitbash status`.
//! - [`health`], [`metrics`], [`admin`]: `/healthz`, `/readyz`, `/metrics`.
//! - [`notify`]: systemd's `READY=1`, `WATCHDOG=1` (fed by the main loops' beats in
//!   [`health::Health`]) and `STOPPING=1`, as datagrams to `$NOTIFY_SOCKET`.
//! - [`daemon`]: the life of a daemon binary, so every `main.rs` is one call.
//!
//! Crate-private: `telemetry` (tracing subscriber, text or JSON), `dedup` (producer `mid`s),
//! `dead` (dead letters, built in one place), `periodic` (periodic tasks that stop with the
//! daemon), `args` (a daemon's `--help` and `--version`), `partition::{balance, worker}`.
//!
//! **Invariant:** nothing here spells a key; every name comes from `kitbash-schema`.

pub mod admin;
pub(crate) mod args;
pub mod backoff;
pub mod bounds;
pub mod clock;
pub mod component;
/// The configuration lives in its own crate (`kitbash-config`) so a daemon owns its section
/// without touching the runtime; re-exported here under its old path.
pub use kitbash_config as config;
pub mod consumer;
pub mod daemon;
pub(crate) mod dead;
pub(crate) mod dedup;
pub mod entries;
pub mod error;
pub mod health;
pub mod heartbeat;
pub mod idempotency;
pub mod leader;
pub mod lease;
pub mod metrics;
pub mod notify;
pub mod partition;
pub(crate) mod periodic;
pub mod redis;
pub mod resp;
pub mod serve;
pub mod shutdown;
pub mod subscriber;
pub mod tail;
pub mod task;
pub(crate) mod telemetry;
pub mod tls;
pub mod trim;

pub use backoff::Backoff;
pub use component::Components;
pub use config::Config;
pub use consumer::{
    Acks, Delivery, Handler, LoopStats, Outcome, RawConsumer, RawEntry, RawHandler, StreamConsumer,
    TakeError,
};
pub use daemon::DaemonContext;
pub use error::RuntimeError;
pub use redis::Redis;
pub use shutdown::{CancellationToken, Signals};
pub use task::{Readiness, Restart, TaskCtx};
