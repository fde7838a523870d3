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
    /// The physics stream is trimmed near this many entries — safely: never past what a
    /// consumer group has not acknowledged. 0 = never trimmed.
    pub physics_stream_max: u64,
    /// How often the physics stream's trim runs, ms.
    pub trim_interval_ms: u64,
    /// Each tick partition stream is trimmed near this many entries — never past what recovery
    /// needs (the checkpoint's `snap_id`) or a group has not acknowledged. 0 = never trimmed.
    pub tick_stream_max: u64,
    /// A symbol with no tick for this long (by stream time) is forgotten: its window is dropped
    /// from memory and from the snapshot; a later tick starts a fresh window. ms; 0 = never.
    pub idle_symbol_ms: u64,
    /// Most symbols one partition keeps; beyond it the least recently ticked are forgotten.
    pub max_symbols_per_partition: usize,
    /// A changed window is snapshotted only once it has waited this long since its first
    /// unsnapshotted tick, ms (0 = at the next snapshot). A busy symbol's window is then encoded
    /// once per this period instead of once per `snapshot_ms`; recovery replays at most about
    /// this much more of the partition's tail.
    pub snapshot_item_ms: u64,
    /// Most windows encoded into one commit's snapshot; more changed windows are spread over
    /// the next commits (recovery replays from the oldest one not yet written).
    pub snapshot_max_items: usize,
    /// Most snapshot bytes encoded into one commit (the windows are encoded until this is
    /// reached, at least one per commit). A due snapshot is spread over the partition's next
    /// commits in pieces of this size, so no batch waits for every changed window to be
    /// encoded and written at once; a round still unfinished when the next one falls due is
    /// finished in that commit, so recovery replays at most about two `snapshot_ms`.
    pub snapshot_max_bytes: usize,
    /// A commit's words are kept near this many bytes under a backlog: a partition's first
    /// read takes 16 ticks; when a batch's commit is larger, it reads half as many ticks next
    /// time (16 at least), and doubles (up to `[consumer] batch`) while twice the last commit
    /// would fit. Bounds the daemon's transient memory (each commit is held as words and as the encoded frame) when
    /// a batch holds ticks of many symbols; any batch boundary gives the same state.
    pub commit_max_bytes: usize,
}

impl Default for FeynmanConfig {
    fn default() -> Self {
        Self {
            partitions: 8,
            window: 1000,
            lease_ms: 5_000,
            snapshot_ms: 1_000,
            physics_stream_max: 100_000,
            tick_stream_max: 1_000_000,
            trim_interval_ms: 5_000,
            idle_symbol_ms: 3_600_000,
            max_symbols_per_partition: 50_000,
            snapshot_max_items: 256,
            snapshot_max_bytes: 256 * 1024,
            commit_max_bytes: 256 * 1024,
            snapshot_item_ms: 0,
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
        if self.max_symbols_per_partition == 0 {
            return Err(ConfigError::key("max_symbols_per_partition", "must be ≥ 1"));
        }
        if self.snapshot_max_items == 0 {
            return Err(ConfigError::key("snapshot_max_items", "must be ≥ 1"));
        }
        if self.commit_max_bytes == 0 {
            return Err(ConfigError::key("commit_max_bytes", "must be ≥ 1"));
        }
        if self.snapshot_max_bytes == 0 {
            return Err(ConfigError::key("snapshot_max_bytes", "must be ≥ 1"));
        }
        if self.window < 2 {
            return Err(ConfigError::key("window", "must be ≥ 2"));
        }
        Ok(())
    }
}
