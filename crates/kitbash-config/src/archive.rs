//! `[archive]`: the archival consumer (`kitbash-archive`).

use std::collections::BTreeMap;

use serde::Deserialize;

use crate::{ConfigError, Section};

/// The default `[archive] zstd_level`.
pub const DEFAULT_ZSTD_LEVEL: i32 = 6;

/// `[archive]`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ArchiveConfig {
    /// Root directory of the archive; each namespace and stream has its own directory below
    /// it (`{dir}/{namespace}/ticks/p=3/`).
    pub dir: String,
    /// Streams to archive, by logical name (`queries`, `ticks:0`, …); empty: every stream of
    /// the fleet (with `[feynman]` and `[entity]` partition counts).
    pub streams: Vec<String>,
    /// A file is closed after this many entries …
    pub roll_entries: usize,
    /// … or this many bytes of entries as they were in Redis …
    pub roll_bytes: usize,
    /// … or when its first entry was taken this long ago, ms. Entries are acknowledged only
    /// once their file is durable, so this bounds how long an entry stays pending.
    pub roll_ms: u64,
    /// zstd level of every column (1–22). Higher levels compress the float columns of physics
    /// vectors better at a cost in archive CPU; the default is chosen by `kitbash bench
    /// archive` (docs/BENCHMARKS.md). Readers do not care: any level decodes the same.
    pub zstd_level: i32,
    /// Each stream is archived by one instance at a time, holding a lease of this length, ms.
    pub lease_ms: u64,
    /// The archive is the trim owner of every stream it archives: while an instance archives
    /// a stream it claims the stream's trim (the stream's other owner, `StreamName::trim_owner`,
    /// stops trimming it until the claim expires) and trims it below what is archived and
    /// what every reader still needs, keeping the retention. `false`: the archive trims
    /// nothing and the other owners keep their bounds.
    pub trim: bool,
    /// How often the archive trims each stream it owns, ms.
    pub trim_interval_ms: u64,
    /// Keep at least this much of each stream in Redis, in stream time (ms of entry ids
    /// before the newest entry), even once archived. 0 = no time retention.
    pub retention_ms: u64,
    /// Keep at least this many of each stream's newest entries in Redis. 0 = none. A trim
    /// reads the ids this rule lets go (at most 10,000 per trim), not the ones it keeps.
    pub retention_entries: u64,
    /// Per-stream trim settings, keyed by logical stream name (`queries`, `"ticks:3"`), for
    /// streams the archive archives: these keys from here, the rest from `[archive]`.
    pub retention: BTreeMap<String, StreamTrimOverride>,
    /// The memory stream's bound when the archive does not archive it: the indexer trims it
    /// near this many entries (never past one not yet indexed). 0 = unbounded.
    pub memory_stream_max: u64,
    /// The most entries each relevance index keeps (per user, per user and context); the
    /// least relevant go first.
    pub memory_index_max: u64,
    /// Entries whose relevance fell below this leave the indexes at the next write to them
    /// (readers skip them too). Relevance is `e^(-age/τ) · ln(1 + accesses)`, τ = 1 h.
    pub memory_min_relevance: f64,
}

/// `[archive.retention.<logical stream>]`: one stream's trim settings. Absent keys keep the
/// `[archive]` value.
#[derive(Clone, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct StreamTrimOverride {
    /// Overrides `archive.trim`.
    pub trim: Option<bool>,
    /// Overrides `archive.retention_ms`.
    pub retention_ms: Option<u64>,
    /// Overrides `archive.retention_entries`.
    pub retention_entries: Option<u64>,
}

/// How the archive trims one stream ([`ArchiveConfig::trim_for`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StreamTrim {
    /// Whether the archive trims it (else its other owner does).
    pub trim: bool,
    /// `retention_ms` for it.
    pub retention_ms: u64,
    /// `retention_entries` for it.
    pub retention_entries: u64,
}

impl ArchiveConfig {
    /// The trim settings of the stream named `logical`: `[archive]` with its
    /// `[archive.retention.<logical>]` keys applied.
    pub fn trim_for(&self, logical: &str) -> StreamTrim {
        let o = self.retention.get(logical).cloned().unwrap_or_default();
        StreamTrim {
            trim: o.trim.unwrap_or(self.trim),
            retention_ms: o.retention_ms.unwrap_or(self.retention_ms),
            retention_entries: o.retention_entries.unwrap_or(self.retention_entries),
        }
    }
}

impl Default for ArchiveConfig {
    fn default() -> Self {
        Self {
            dir: "/var/lib/kitbash/archive".into(),
            streams: Vec::new(),
            roll_entries: 50_000,
            roll_bytes: 64 << 20,
            roll_ms: 10_000,
            zstd_level: DEFAULT_ZSTD_LEVEL,
            lease_ms: 10_000,
            trim: true,
            trim_interval_ms: 5_000,
            retention_ms: 600_000,
            retention_entries: 0,
            retention: BTreeMap::new(),
            memory_stream_max: 100_000,
            memory_index_max: 1_000,
            memory_min_relevance: kitbash_schema::memory::MIN_RELEVANCE,
        }
    }
}

impl Section for ArchiveConfig {
    const NAME: &'static str = "archive";
    fn validate(&self) -> Result<(), ConfigError> {
        if self.dir.is_empty() {
            return Err(ConfigError::key("dir", "must name a directory"));
        }
        for s in &self.streams {
            if kitbash_schema::StreamName::parse(s).is_none() {
                return Err(ConfigError::key(
                    "streams",
                    format!("{s:?} is not a stream name"),
                ));
            }
        }
        if self.roll_entries == 0 || self.roll_bytes == 0 || self.roll_ms == 0 {
            return Err(ConfigError::key(
                "roll_entries",
                "roll_entries, roll_bytes and roll_ms must be > 0",
            ));
        }
        if !(1..=22).contains(&self.zstd_level) {
            return Err(ConfigError::key("zstd_level", "must be 1–22"));
        }
        if self.lease_ms < 1_000 {
            return Err(ConfigError::key("lease_ms", "must be ≥ 1000"));
        }
        if self.trim_interval_ms == 0 {
            return Err(ConfigError::key("trim_interval_ms", "must be > 0"));
        }
        if self.memory_index_max == 0 {
            return Err(ConfigError::key("memory_index_max", "must be > 0"));
        }
        if !(self.memory_min_relevance.is_finite() && self.memory_min_relevance > 0.0) {
            return Err(ConfigError::key(
                "memory_min_relevance",
                "must be a number > 0 (relevance is e^(-age/τ)·ln(1+accesses))",
            ));
        }
        for s in self.retention.keys() {
            if kitbash_schema::StreamName::parse(s).is_none() {
                return Err(ConfigError::key(
                    &format!("retention.{s}"),
                    "is not a stream name (queries, crossings, memory, physics, entity-changes, \
                     ticks:N, entity:N)",
                ));
            }
        }
        Ok(())
    }
}
