//! `kitbash-ghost`: the ghost precomputer of seed 000.
//!
//! # Layout
//! - [`bank`]: [`bank::Snapshot`], the grain bank (`kitbash_ternary::GrainBank`) and the current
//!   hat, loaded from Redis; [`bank::Bank`] reloads it (one load at a time) and swaps the new
//!   snapshot in whole.
//! - [`writer`]: [`writer::GhostWriter`], the handler of the `crossings` stream: scores each
//!   crossing query's signature against every grain under the current hat (one batched search
//!   per batch) and writes `ghost:{h}` = `"42,17,88"` (1 h) and `INCR ghost:activations`, once
//!   per crossing (idempotency marker).
//! - [`watch`]: on every instance, reloads the bank when grains or the hat change (announced on
//!   `kitbash:grain-updates`, and polled through `kitbash:reflex:version` in case a message was
//!   missed).
//! - [`recompute`]: a leader task (one instance of the fleet): when `kitbash:ghost:recomputed`
//!   is behind `kitbash:reflex:version`, recomputes the ghosts of the queries that are hot now,
//!   in batches fenced by its lease, then records the version.
//!
//! Every ghost instance also keeps `crossings` bounded (its trim owner, see
//! `StreamName::trim_owner`): every `[ghost] trim_interval_ms` it trims the stream near
//! `crossings_stream_max` through the runtime's safe trim — never past what a group has not
//! acknowledged — and measures `crossings`' dead-letter stream against the alarm
//! ([`kitbash_runtime::bounds::Bounds`]).
//!
//! `[reflex] layout` says where the hot queries are (the resonance index and `cms:{h}`, or the
//! compact hot set); a start-up check ([`layout_check`]) refuses a Redis that holds the other
//! layout. Settings are `[ghost]` in `kitbash-config`; the resonance arithmetic (which queries
//! are hot) is `kitbash_schema::reflex` with `[decay]`'s factor and threshold.

pub mod bank;
pub mod recompute;
pub mod watch;
pub mod writer;

use std::future::Future;
use std::time::Duration;

use kitbash_client::ClientError;
use kitbash_client::reflex::Reflex;
use kitbash_runtime::bounds::Bounds;
use kitbash_runtime::{Components, Config, DaemonContext, Restart, RuntimeError, Signals};
use kitbash_schema::{DaemonKind, StreamName};

/// What the daemon runs: the layout check, then the `crossings` consumer, the bank watcher,
/// the recompute leader and the bounds of `crossings` (its trim and its dead letters' alarm).
pub fn components(ctx: &DaemonContext) -> Components {
    let g = &ctx.config.ghost;
    let bank = bank::Bank::new(
        ctx.redis.client.clone(),
        ctx.keys.clone(),
        ctx.metrics.clone(),
        g.dim,
    );
    let watcher = watch::Watcher::new(ctx, bank.clone());
    let recompute = recompute::Recompute::new(ctx, bank.clone());
    let period = Duration::from_millis(g.poll_ms);
    let bounds = Bounds::of(ctx)
        .trim(StreamName::Crossings, g.crossings_stream_max)
        .watch_dead_letters([StreamName::Crossings]);
    Components::new(ctx)
        .check("reflex-layout", layout_check(ctx))
        .consume(StreamName::Crossings, writer::GhostWriter::new(ctx, bank))
        .task("grain-watch", Restart::DEFAULT_BACKOFF, move |task| {
            let watcher = watcher.clone();
            async move { watcher.run(task).await }
        })
        .leader(
            "ghost-recompute",
            period,
            recompute::lease_ms(g.poll_ms),
            move |term| {
                let recompute = recompute.clone();
                async move { recompute.tick(term).await }
            },
        )
        .every(
            "crossings bounds",
            Duration::from_millis(g.trim_interval_ms),
            move || bounds.clone().run_owned(),
        )
}

/// The start-up check of the reflex layout: this Redis must not hold another layout than
/// `[reflex]`'s. A reader: it does not mark an empty Redis (decay, the writer, does).
pub fn layout_check(
    ctx: &DaemonContext,
) -> impl Future<Output = Result<(), RuntimeError>> + Send + 'static {
    let r = &ctx.config.reflex;
    let reflex = Reflex::new(
        ctx.redis.client.clone(),
        ctx.keys.clone(),
        ctx.config.decay.factor,
    )
    .with_layout(r.layout, r.buckets);
    async move {
        reflex.claim_layout(false).await.map_err(|e| match e {
            ClientError::Redis(e) => RuntimeError::Redis(e),
            other => RuntimeError::Refused {
                check: "reflex layout",
                why: other.to_string(),
            },
        })
    }
}

/// Runs one instance in-process until `signals.shutdown` (what the binary runs; tests call it).
pub async fn run(config: Config, signals: Signals) -> Result<(), RuntimeError> {
    kitbash_runtime::daemon::run(DaemonKind::Ghost, config, signals, components).await
}
