//! `[client]`: settings of `kitbash-client`'s sessions and array storage (seeds 003 and 004).
//! The cache TTLs themselves are the seeds' (`kitbash_schema::ttl`).

use serde::Deserialize;

use crate::{ConfigError, Section};

/// `[client]`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ClientConfig {
    /// Whether reading a session pushes its expiry back by the full session TTL (30 min).
    pub session_sliding: bool,
    /// Arrays whose `.npy` bytes are longer than this are compressed (zlib) when it pays
    /// (seed 003: 1024 bytes).
    pub compress_threshold: usize,
    /// Attempts per array operation when the connection fails (reply errors are never retried).
    pub retry_attempts: u32,
    /// First retry delay in milliseconds; doubled after each failed attempt (seed 003: 100).
    pub retry_initial_ms: u64,
    /// Longest retry delay in milliseconds.
    pub retry_max_ms: u64,
}

impl Default for ClientConfig {
    fn default() -> Self {
        Self {
            session_sliding: true,
            compress_threshold: 1024,
            retry_attempts: 3,
            retry_initial_ms: 100,
            retry_max_ms: 2_000,
        }
    }
}

impl Section for ClientConfig {
    const NAME: &'static str = "client";
    fn validate(&self) -> Result<(), ConfigError> {
        if self.retry_attempts == 0 {
            return Err(ConfigError::key("retry_attempts", "must be >= 1"));
        }
        if self.retry_initial_ms > self.retry_max_ms {
            return Err(ConfigError::key(
                "retry_initial_ms",
                "must be <= retry_max_ms",
            ));
        }
        Ok(())
    }
}
