//! `[archive]`: the archival consumer (`kitbash-archive`).

use serde::Deserialize;

use crate::{ConfigError, Section};

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
    /// Each stream is archived by one instance at a time, holding a lease of this length, ms.
    pub lease_ms: u64,
}

impl Default for ArchiveConfig {
    fn default() -> Self {
        Self {
            dir: "/var/lib/kitbash/archive".into(),
            streams: Vec::new(),
            roll_entries: 50_000,
            roll_bytes: 64 << 20,
            roll_ms: 10_000,
            lease_ms: 10_000,
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
        if self.lease_ms < 1_000 {
            return Err(ConfigError::key("lease_ms", "must be ≥ 1000"));
        }
        Ok(())
    }
}
