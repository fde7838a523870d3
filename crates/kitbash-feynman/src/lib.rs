//! `kitbash-feynman`: the physics writer daemon (seed 001).
//!
//! # Layout
//! - [`physics`]: the physics vector over a rolling tick window (the formulas).
//! - [`market`]: a synthetic market and CSV replay for `kitbash feed ticks` and tests.
//! - [`partition`]: the partition logic — windows per symbol, one vector and its outputs per
//!   symbol per batch — run by the runtime's partitioned component.
//!
//! The runtime does the rest ([`kitbash_runtime::partition`]): leases balanced over the live
//! instances, ordered `XREAD` per partition, the fenced atomic commit, snapshots, trimming.
//!
//! **Invariant:** a tick partition is applied by at most one instance at a time, in stream
//! order, and every commit is a compare-and-set on the partition checkpoint.

pub mod market;
pub mod partition;
pub mod physics;

use std::time::Duration;

use fred::interfaces::ClientLike;

use kitbash_runtime::bounds::Bounds;
use kitbash_runtime::{Components, Config, DaemonContext, RuntimeError, Signals};
use kitbash_schema::{DaemonKind, StreamName};

/// What a feynman instance runs: the tick partitions (each worker trims its own partition near
/// `tick_stream_max`), and the bounds task: the physics stream's safe trim and the alarm of the
/// tick partitions' dead-letter streams.
pub fn components(ctx: &DaemonContext) -> Components {
    let cfg = ctx.config.feynman.clone();
    let logic = partition::Physics::new(
        cfg.clone(),
        ctx.keys.clone(),
        ctx.redis.client.is_clustered(),
    );
    let spec = logic.spec();
    let bounds = Bounds::of(ctx)
        .trim(StreamName::Physics, cfg.physics_stream_max)
        .watch_dead_letters((0..cfg.partitions).map(StreamName::Ticks));
    let trim_every = Duration::from_millis(cfg.trim_interval_ms.max(100));
    Components::new(ctx).partitioned(spec, logic).every(
        "trim physics stream",
        trim_every,
        move || bounds.clone().run_owned(),
    )
}

/// Runs one feynman instance until `signals.shutdown` (the binary's and the tests' entry).
pub async fn run(config: Config, signals: Signals) -> Result<(), RuntimeError> {
    kitbash_runtime::daemon::run(DaemonKind::Feynman, config, signals, components).await
}
