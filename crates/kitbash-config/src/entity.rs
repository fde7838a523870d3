//! `[entity]`: the entity updater's section, owned by `kitbash-entity`.

use serde::Deserialize;

use crate::{ConfigError, Section};

/// `[entity]`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EntityConfig {
    /// Number of entity partitions (streams `entity:0` … `entity:P-1`); producers route a
    /// document with `FNV-1a(document key) % P`. Changing it re-routes documents: drain the
    /// entity streams first.
    pub partitions: u32,
    /// Partition lease length, ms: a dead instance's partitions move after at most this long.
    pub lease_ms: u64,
    /// How often a partition's checkpoint records its recent producer mids, ms.
    pub snapshot_ms: u64,
    /// Each entity partition stream is trimmed near this many entries (never past what recovery
    /// or a consumer group still needs). 0 = never trimmed.
    pub stream_max: u64,
    /// The changes stream (`entity-changes`, the bridge's resume positions) is trimmed near this
    /// many entries by the entity instances — safely: never past what a consumer group (the
    /// archive, once it runs) has not acknowledged. 0 = never trimmed.
    pub changes_max: u64,
    /// How often the changes stream's trim and the check of the partitions' dead-letter
    /// streams run, ms.
    pub trim_interval_ms: u64,
    /// Entries kept in each document's timeline (`{key}:timeline`).
    pub timeline_max: u64,
    /// Largest document accepted, in bytes of compact JSON: a change that would make a document
    /// larger is dead-lettered.
    pub max_document_bytes: usize,
    /// How many times a batch's commit of one document is retried after its version moved under
    /// it (another writer committed first); past this budget its updates are dead-lettered.
    pub conflict_retries: u32,
    /// Documents one partition keeps parsed in memory; beyond it the least recently changed are
    /// dropped (they are read again from Redis when next changed).
    pub max_cached_documents: usize,
}

impl Default for EntityConfig {
    fn default() -> Self {
        Self {
            partitions: 8,
            lease_ms: 5_000,
            snapshot_ms: 1_000,
            stream_max: 1_000_000,
            changes_max: 10_000,
            trim_interval_ms: 5_000,
            timeline_max: 100,
            max_document_bytes: 1 << 20,
            conflict_retries: 8,
            max_cached_documents: 10_000,
        }
    }
}

impl Section for EntityConfig {
    const NAME: &'static str = "entity";
    fn validate(&self) -> Result<(), ConfigError> {
        if self.partitions == 0 || self.partitions > 1024 {
            return Err(ConfigError::key("partitions", "must be within 1..=1024"));
        }
        if self.lease_ms < 300 {
            return Err(ConfigError::key("lease_ms", "must be ≥ 300"));
        }
        if self.max_document_bytes == 0 || self.max_document_bytes > 256 << 20 {
            return Err(ConfigError::key(
                "max_document_bytes",
                "must be within 1..=268435456",
            ));
        }
        if self.timeline_max == 0 {
            return Err(ConfigError::key("timeline_max", "must be ≥ 1"));
        }
        if self.trim_interval_ms < 10 {
            return Err(ConfigError::key("trim_interval_ms", "must be at least 10"));
        }
        if self.max_cached_documents == 0 {
            return Err(ConfigError::key("max_cached_documents", "must be ≥ 1"));
        }
        Ok(())
    }
}
