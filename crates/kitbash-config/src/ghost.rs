//! `[ghost]`: the section of `kitbash-ghost`, the ghost precomputer of seed 000.

use serde::Deserialize;

use crate::{ConfigError, Section};

/// `[ghost]`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GhostConfig {
    /// Trits per signature and grain, D (256 matches the 256-bit hat masks).
    pub dim: usize,
    /// Grains written per ghost (the seed: 3).
    pub top_k: usize,
    /// How often the grain/hat version is polled, in ms, in case a change announcement was
    /// missed.
    pub poll_ms: u64,
    /// Most hot queries recomputed after a grain or hat change.
    pub recompute_max: usize,
    /// Queries searched per batch during a recomputation.
    pub recompute_batch: usize,
    /// Idempotency markers of applied crossings live this long, in seconds: longer than an
    /// applied crossing can wait to be redelivered (see `[decay] marker_ttl_s`; not tied to
    /// `crossings_stream_max`).
    pub marker_ttl_s: u64,
    /// The `crossings` stream is trimmed near this many entries by the ghost instances —
    /// safely: never past what a consumer group has not acknowledged or been delivered, and
    /// not at all while the `ghost` group does not exist. 0 = never trimmed.
    pub crossings_stream_max: u64,
    /// How often the `crossings` trim and the check of its dead-letter stream run, ms.
    pub trim_interval_ms: u64,
}

impl Default for GhostConfig {
    fn default() -> Self {
        Self {
            dim: 256,
            top_k: 3,
            poll_ms: 1_000,
            recompute_max: 100_000,
            recompute_batch: 256,
            marker_ttl_s: 86_400,
            crossings_stream_max: 100_000,
            trim_interval_ms: 5_000,
        }
    }
}

impl Section for GhostConfig {
    const NAME: &'static str = "ghost";
    fn validate(&self) -> Result<(), ConfigError> {
        if self.dim == 0 || self.dim > 65_536 {
            return Err(ConfigError::key("dim", "must be in 1..=65536"));
        }
        if self.top_k == 0 || self.top_k > 64 {
            return Err(ConfigError::key("top_k", "must be in 1..=64"));
        }
        if self.poll_ms < 10 {
            return Err(ConfigError::key("poll_ms", "must be at least 10"));
        }
        if self.recompute_batch == 0 {
            return Err(ConfigError::key("recompute_batch", "must be > 0"));
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
