//! `[decay]`: the section of `kitbash-decay`, the resonance decayer of seed 000.

use serde::Deserialize;

use crate::{ConfigError, Section};

/// `[decay]`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DecayConfig {
    /// Length of one decay cycle, in ms. Cycles are counted from Redis time: periods missed
    /// while no instance led are caught up in one step, never skipped.
    pub period_ms: u64,
    /// How often the leader checks for due cycles, in ms: a cycle is applied at most this late
    /// (or `period_ms`, if shorter). A check with nothing due is one cheap script call.
    pub tick_ms: u64,
    /// Factor applied to every resonance per cycle (the seed: 0.9).
    pub factor: f64,
    /// Share of the way to 1 a hit moves resonance: `r' = r + hit_alpha·(1 − r)`.
    pub hit_alpha: f64,
    /// Resonance above which a query is hot: rising above it emits a crossing (the seed: 0.8).
    pub threshold: f64,
    /// Lease of the decay leader, in ms: a dead leader is replaced after at most this long.
    pub lease_ms: u64,
    /// After each cycle, rewrite `cms:{h}:resonance` and the record's `resonance_score` of the
    /// hottest N queries, so plain `GET` readers of those keys see the decayed value (0 = none;
    /// the cost is O(N) per cycle, see docs/BENCHMARKS.md).
    pub refresh_hottest: u64,
    /// Period of the `metrics:latency:p95` / `p99` recomputation from the histogram, in ms.
    pub metrics_ms: u64,
    /// Idempotency markers of applied query events live this long, in seconds: longer than an
    /// applied entry can wait to be redelivered (its acknowledgement lost, reclaimed after
    /// `consumer.claim_idle_ms` — which it must exceed — or found pending when a stopped fleet
    /// restarts). Not tied to `queries_stream_max`: a trim never removes a pending entry, so
    /// the stream's length says nothing about how long a redelivery can take. A marker costs
    /// about 150 bytes of Redis memory, so markers take about `event rate × marker_ttl_s × 150`
    /// bytes.
    pub marker_ttl_s: u64,
    /// The `queries` stream is trimmed near this many entries by the decay instances — safely:
    /// never past what a consumer group has not acknowledged or been delivered, and not at all
    /// while the `decay` group does not exist. 0 = never trimmed.
    pub queries_stream_max: u64,
    /// How often the `queries` trim and the check of its dead-letter stream run, ms.
    pub trim_interval_ms: u64,
}

impl Default for DecayConfig {
    fn default() -> Self {
        Self {
            period_ms: 60_000,
            tick_ms: 1_000,
            factor: 0.9,
            hit_alpha: 0.25,
            threshold: 0.8,
            lease_ms: 5_000,
            refresh_hottest: 0,
            metrics_ms: 1_000,
            marker_ttl_s: 86_400,
            queries_stream_max: 100_000,
            trim_interval_ms: 5_000,
        }
    }
}

impl Section for DecayConfig {
    const NAME: &'static str = "decay";
    fn validate(&self) -> Result<(), ConfigError> {
        if self.period_ms < 10 {
            return Err(ConfigError::key("period_ms", "must be at least 10"));
        }
        if self.tick_ms < 10 {
            return Err(ConfigError::key("tick_ms", "must be at least 10"));
        }
        if !(self.factor > 0.0 && self.factor < 1.0) {
            return Err(ConfigError::key("factor", "must be in (0, 1)"));
        }
        if !(self.hit_alpha > 0.0 && self.hit_alpha < 1.0) {
            return Err(ConfigError::key("hit_alpha", "must be in (0, 1)"));
        }
        if !(self.threshold > 0.0 && self.threshold < 1.0) {
            return Err(ConfigError::key("threshold", "must be in (0, 1)"));
        }
        if self.lease_ms < 100 {
            return Err(ConfigError::key("lease_ms", "must be at least 100"));
        }
        if self.refresh_hottest > 100_000 {
            return Err(ConfigError::key(
                "refresh_hottest",
                "must be at most 100000",
            ));
        }
        if self.metrics_ms < 10 {
            return Err(ConfigError::key("metrics_ms", "must be at least 10"));
        }
        if self.marker_ttl_s == 0 {
            return Err(ConfigError::key("marker_ttl_s", "must be > 0"));
        }
        if self.trim_interval_ms < 10 {
            return Err(ConfigError::key("trim_interval_ms", "must be at least 10"));
        }
        Ok(())
    }
}
