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
//! The arithmetic shared with readers (normalised resonance, the hit rule) is
//! `kitbash_schema::reflex`; settings are `[decay]` in `kitbash-config`.

pub mod cycle;
pub mod hits;
pub mod latency;

use std::time::Duration;

use kitbash_runtime::{Components, Config, DaemonContext, RuntimeError, Signals};
use kitbash_schema::{DaemonKind, StreamName};

/// What the daemon runs: the `queries` consumer, the decay cycle (leader), the latency metrics.
pub fn components(ctx: &DaemonContext) -> Components {
    let cfg = &ctx.config.decay;
    let cycle = cycle::DecayCycle::new(ctx);
    let latency = latency::LatencyMetrics::new(ctx);
    Components::new(ctx)
        .consume(StreamName::Queries, hits::Hits::new(ctx))
        .leader(
            "decay-cycle",
            Duration::from_millis(cfg.period_ms),
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
}

/// Runs one instance in-process until `signals.shutdown` (what the binary runs; tests call it).
pub async fn run(config: Config, signals: Signals) -> Result<(), RuntimeError> {
    kitbash_runtime::daemon::run(DaemonKind::Decay, config, signals, components).await
}
