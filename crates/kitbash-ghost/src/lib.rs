//! `kitbash-ghost`: the ghost precomputer of seed 000.
//!
//! # Layout
//! - [`bank`]: [`bank::Snapshot`], the grain bank (`kitbash_ternary::GrainBank`) and the current
//!   hat, loaded from Redis; [`bank::Shared`] swaps a new snapshot in whole.
//! - [`writer`]: [`writer::GhostWriter`], the handler of the `crossings` stream: scores each
//!   crossing query's signature against every grain under the current hat (one batched search
//!   per batch) and writes `ghost:{h}` = `"42,17,88"` (1 h) and `INCR ghost:activations`, once
//!   per crossing (idempotency marker).
//! - [`watch`]: reloads the bank when grains or the hat change (announced on
//!   `kitbash:grain-updates`, and polled through `kitbash:reflex:version` in case a message was
//!   missed), then recomputes the ghosts of the queries that are hot now, in batches.
//!
//! Settings are `[ghost]` in `kitbash-config`; the resonance arithmetic (which queries are hot)
//! is `kitbash_schema::reflex` with `[decay]`'s factor and threshold.

pub mod bank;
pub mod watch;
pub mod writer;

use std::time::Duration;

use kitbash_runtime::{Components, Config, DaemonContext, RuntimeError, Signals};
use kitbash_schema::{DaemonKind, StreamName};

/// What the daemon runs: the `crossings` consumer and the bank watcher.
pub fn components(ctx: &DaemonContext) -> Components {
    let shared = bank::Shared::default();
    let watcher = watch::Watcher::new(ctx, shared.clone());
    Components::new(ctx)
        .consume(StreamName::Crossings, writer::GhostWriter::new(ctx, shared))
        .every(
            "grain-watch",
            Duration::from_millis(ctx.config.ghost.poll_ms),
            move || {
                let watcher = watcher.clone();
                // Runs until shutdown (subscribed, polling meanwhile); called again if it
                // returns early on an error.
                async move { watcher.run().await }
            },
        )
}

/// Runs one instance in-process until `signals.shutdown` (what the binary runs; tests call it).
pub async fn run(config: Config, signals: Signals) -> Result<(), RuntimeError> {
    kitbash_runtime::daemon::run(DaemonKind::Ghost, config, signals, components).await
}
