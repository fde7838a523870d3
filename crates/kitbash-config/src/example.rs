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
}

impl Default for ExampleConfig {
    fn default() -> Self {
        Self {
            max_text_bytes: 1024,
        }
    }
}

impl Section for ExampleConfig {
    const NAME: &'static str = "example";
    fn validate(&self) -> Result<(), ConfigError> {
        if self.max_text_bytes == 0 {
            return Err(ConfigError::key("max_text_bytes", "must be > 0"));
        }
        Ok(())
    }
}
