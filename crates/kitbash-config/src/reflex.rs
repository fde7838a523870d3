//! `[reflex]`: how the reflex path's CMS records are laid out in Redis (seed 000), shared by
//! `kitbash-decay` (writes them), `kitbash-ghost` (reads the hot set) and the CLI/client
//! (reads them). Every instance against one Redis must agree; the layout written in
//! `kitbash:reflex:layout` makes a disagreeing instance refuse to start.

use kitbash_schema::reflex::Layout;
use serde::Deserialize;

use crate::{ConfigError, Section};

/// `[reflex]`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ReflexConfig {
    /// `seed`: the seed's keys (`cms:{h}`, `cms:{h}:grains`, `cms:{h}:resonance`), readable by
    /// the seed's Python with a plain `GET`. `compact`: one field per query in `buckets`
    /// hashes, about a sixth of the memory (docs/BENCHMARKS.md); read through `kitbash-client`
    /// or the record format in `kitbash_schema::reflex::CompactRecord`.
    pub layout: Layout,
    /// Compact layout: number of bucket hashes. Keep about 64 queries per bucket or fewer
    /// (buckets ≈ active queries / 64) so each stays a listpack (`hash-max-listpack-entries`,
    /// 128 by default); part of the layout, so it cannot change under live data.
    pub buckets: u32,
    /// Compact layout: a record not hit for this long is forgotten by the decay leader's sweep
    /// (the seed's 24 h TTL of `cms:{h}`).
    pub record_ttl_s: u64,
    /// Compact layout: buckets the sweep visits per decay cycle.
    pub sweep_buckets: u32,
    /// Grain ids kept per query (the latest hits'; the seed's 3): the compact record's list,
    /// and in the seed layout `cms:{h}:grains` is trimmed to this many.
    pub grains_per_query: u32,
}

impl Default for ReflexConfig {
    fn default() -> Self {
        Self {
            layout: Layout::Seed,
            buckets: 1_024,
            record_ttl_s: 86_400,
            sweep_buckets: 1_024,
            grains_per_query: 3,
        }
    }
}

impl Section for ReflexConfig {
    const NAME: &'static str = "reflex";
    fn validate(&self) -> Result<(), ConfigError> {
        if self.buckets == 0 || self.buckets > 1 << 24 {
            return Err(ConfigError::key("buckets", "must be in 1..=16777216"));
        }
        if self.record_ttl_s == 0 {
            return Err(ConfigError::key("record_ttl_s", "must be > 0"));
        }
        if self.sweep_buckets == 0 {
            return Err(ConfigError::key("sweep_buckets", "must be > 0"));
        }
        if self.grains_per_query == 0 || self.grains_per_query > 16 {
            return Err(ConfigError::key("grains_per_query", "must be in 1..=16"));
        }
        Ok(())
    }
}
