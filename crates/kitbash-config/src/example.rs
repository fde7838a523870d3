//! `[example]`: the section of `kitbash-example`, the small daemon `docs/adding-a-daemon.md`
//! walks through. A real daemon's section looks the same: a struct with `deny_unknown_fields`,
//! a `///` on every field (they are the user's documentation), defaults, and a
//! [`Section::validate`] for what types cannot say.

use serde::Deserialize;

use crate::{ConfigError, Section};

/// `[example]`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ExampleConfig {
    /// Longest query text the example tallies, in bytes; longer ones are dead-lettered.
    pub max_text_bytes: usize,
    /// Directory of the raw journal of the `physics` stream (one file per instance, entries
    /// acknowledged only once fsynced). Empty: no journal, and no `example` group on `physics`
    /// (an existing group holds back that stream's trim until it acknowledges).
    pub journal_dir: String,
    /// The journal fsyncs (and acknowledges) after this many entries …
    pub journal_sync_entries: usize,
    /// … or when its oldest unsynced entry is this old, ms.
    pub journal_sync_ms: u64,
    /// Address of the example's HTTP endpoint (`GET /tally/{text}`); empty: not served.
    pub listen: String,
    /// How often the leader records the most-counted text, ms.
    pub top_period_ms: u64,
}

impl Default for ExampleConfig {
    fn default() -> Self {
        Self {
            max_text_bytes: 1024,
            journal_dir: String::new(),
            journal_sync_entries: 1000,
            journal_sync_ms: 1000,
            listen: String::new(),
            top_period_ms: 10_000,
        }
    }
}

impl ExampleConfig {
    /// The parsed `listen` address, `None` when empty.
    pub fn listen_addr(&self) -> Option<std::net::SocketAddr> {
        self.listen.parse().ok()
    }
}

impl Section for ExampleConfig {
    const NAME: &'static str = "example";
    fn validate(&self) -> Result<(), ConfigError> {
        if self.max_text_bytes == 0 {
            return Err(ConfigError::key("max_text_bytes", "must be > 0"));
        }
        if self.journal_sync_entries == 0 {
            return Err(ConfigError::key("journal_sync_entries", "must be > 0"));
        }
        if self.top_period_ms < 100 {
            return Err(ConfigError::key("top_period_ms", "must be ≥ 100"));
        }
        if !self.listen.is_empty() && self.listen_addr().is_none() {
            return Err(ConfigError::key(
                "listen",
                format!("{:?} is not host:port (or empty to disable)", self.listen),
            ));
        }
        Ok(())
    }
}
