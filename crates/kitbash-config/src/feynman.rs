//! `[feynman]`: the physics writer's section, owned by `kitbash-feynman`.

use serde::Deserialize;

use crate::{ConfigError, Section};

/// `[feynman]`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FeynmanConfig {
    /// Number of tick partitions (streams `ticks:0` … `ticks:P-1`). Changing it re-routes
    /// symbols: drain the tick streams first.
    pub partitions: u32,
    /// Ticks kept per symbol window.
    pub window: usize,
    /// Partition lease length, ms: a dead instance's partitions move after at most this long.
    pub lease_ms: u64,
    /// How often a partition's windows are snapshotted into its checkpoint, ms. Recovery
    /// replays at most this much of the partition's tail.
    pub snapshot_ms: u64,
    /// The physics stream is capped near this many entries (XADD MAXLEN ~).
    pub physics_stream_max: u64,
}

impl Default for FeynmanConfig {
    fn default() -> Self {
        Self {
            partitions: 8,
            window: 1000,
            lease_ms: 5_000,
            snapshot_ms: 1_000,
            physics_stream_max: 100_000,
        }
    }
}

impl Section for FeynmanConfig {
    const NAME: &'static str = "feynman";
    fn validate(&self) -> Result<(), ConfigError> {
        if self.partitions == 0 || self.partitions > 1024 {
            return Err(ConfigError::key("partitions", "must be within 1..=1024"));
        }
        if self.lease_ms < 300 {
            return Err(ConfigError::key("lease_ms", "must be ≥ 300"));
        }
        if self.window < 2 {
            return Err(ConfigError::key("window", "must be ≥ 2"));
        }
        Ok(())
    }
}
