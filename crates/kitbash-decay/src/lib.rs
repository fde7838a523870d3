//! `kitbash-decay`: the resonance decayer of seed 000.
//!
//! # Layout
//! - [`hits`]: [`hits::Hits`], the handler of the `queries` stream: each query event is applied
//!   to its CMS record (`cms:{h}`, `cms:{h}:grains`, `cms:{h}:resonance`, the resonance index)
//!   by one script, with its entry's idempotency marker, and emits a crossing when resonance
//!   rises above the threshold.
//! - [`cycle`]: the decay cycle, a leader task: one `INCRBY` of the cycle counter, fenced by the
//!   leader's lease, with the number of cycles due computed from Redis time so that a handover
//!   neither skips nor repeats one; then the optional refresh of the hottest records.
//! - [`latency`]: `metrics:latency:p95` / `p99` recomputed from the latency histogram.
//!
//! Every decay instance also keeps `queries` bounded (its trim owner, see
//! `StreamName::trim_owner`): every `[decay] trim_interval_ms` it trims the stream near
//! `queries_stream_max` through the runtime's safe trim — never past what a group has not
//! acknowledged — and measures `queries`' dead-letter stream against the alarm
//! ([`kitbash_runtime::bounds::Bounds`]).
//!
//! `[reflex] layout` selects the seed's keys or the compact buckets; a start-up check
//! ([`layout_check`]) refuses to run against a Redis that holds the other layout.
//!
//! The arithmetic shared with readers (normalised resonance, the hit rule) is
//! `kitbash_schema::reflex`; settings are `[decay]` in `kitbash-config`.

pub mod cycle;
pub mod hits;
pub mod latency;

use std::time::Duration;

use kitbash_runtime::bounds::Bounds;
use kitbash_runtime::{Components, Config, DaemonContext, RuntimeError, Signals};
use kitbash_schema::{DaemonKind, StreamName};

/// What the daemon runs: the `queries` consumer, the decay cycle (leader), the latency metrics
/// and the bounds of `queries` (its trim and its dead letters' alarm).
pub fn components(ctx: &DaemonContext) -> Components {
    let cfg = &ctx.config.decay;
    let cycle = cycle::DecayCycle::new(ctx);
    let latency = latency::LatencyMetrics::new(ctx);
    let bounds = Bounds::of(ctx)
        .trim(StreamName::Queries, cfg.queries_stream_max)
        .watch_dead_letters([StreamName::Queries]);
    Components::new(ctx)
        .check("reflex-layout", layout_check(ctx, true))
        .consume(StreamName::Queries, hits::Hits::new(ctx))
        .leader(
            "decay-cycle",
            // Cycles are counted from Redis time; checking every tick bounds how late one is
            // applied (a check with none due changes nothing).
            Duration::from_millis(cfg.period_ms.min(cfg.tick_ms)),
            cfg.lease_ms,
            move |term| {
                let cycle = cycle.clone();
                async move { cycle.run(&term).await }
            },
        )
        .every(
            "latency-metrics",
            Duration::from_millis(cfg.metrics_ms),
            move || {
                let latency = latency.clone();
                async move { latency.refresh().await }
            },
        )
        .every(
            "queries bounds",
            Duration::from_millis(cfg.trim_interval_ms),
            move || bounds.clone().run_owned(),
        )
}

/// The start-up check of the reflex layout: this Redis must hold `[reflex]`'s layout (with
/// `record`, an empty Redis is marked with it). Shared with `kitbash-ghost`.
pub fn layout_check(
    ctx: &DaemonContext,
    record: bool,
) -> impl std::future::Future<Output = Result<(), RuntimeError>> + Send + 'static {
    let r = &ctx.config.reflex;
    let reflex = kitbash_client::reflex::Reflex::new(
        ctx.redis.client.clone(),
        ctx.keys.clone(),
        ctx.config.decay.factor,
    )
    .with_layout(r.layout, r.buckets);
    async move {
        reflex.claim_layout(record).await.map_err(|e| match e {
            kitbash_client::ClientError::Redis(e) => RuntimeError::Redis(e),
            other => RuntimeError::Refused {
                check: "reflex layout",
                why: other.to_string(),
            },
        })
    }
}

/// Runs one instance in-process until `signals.shutdown` (what the binary runs; tests call it).
pub async fn run(config: Config, signals: Signals) -> Result<(), RuntimeError> {
    kitbash_runtime::daemon::run(DaemonKind::Decay, config, signals, components).await
}
