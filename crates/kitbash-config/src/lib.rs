//! `kitbash-config`: the configuration of a kitbash deployment, in layers —
//! `config/default.toml`, then `config/{profile}.toml`, then environment variables
//! `KITBASH__SECTION__KEY`. Unknown keys are refused; a bad value names its key.
//!
//! # Layout
//! - this file: the [`Config`] aggregate, where it is loaded from ([`ConfigSource`]), errors,
//!   and the [`Section`] trait each section implements to validate what types cannot.
//! - [`runtime`]: `[redis]`, `[telemetry]`, `[admin]`, `[consumer]`, `[fleet]`.
//! - one module per daemon section (`feynman`, …), owned by that daemon: adding a daemon adds a
//!   module here and a field to [`Config`], and touches no file of `kitbash-runtime`.
//!
//! **Invariant:** every section of every daemon is declared in [`Config`], so each binary
//! validates the whole file the same way: a typo in `[feynman]` stops `kitbash-decay` too,
//! instead of lurking until the feynman instance restarts.

pub mod archive;
pub mod bridge;
pub mod client;
pub mod decay;
pub mod entity;
pub mod example;
pub mod feynman;
pub mod ghost;
pub mod ratelimit;
pub mod reflex;
pub mod runtime;

use std::path::{Path, PathBuf};

use serde::Deserialize;

pub use archive::{ArchiveConfig, StreamTrim, StreamTrimOverride};
pub use bridge::BridgeConfig;
pub use client::ClientConfig;
pub use decay::DecayConfig;
pub use entity::EntityConfig;
pub use example::ExampleConfig;
pub use feynman::FeynmanConfig;
pub use ghost::GhostConfig;
pub use ratelimit::{FailPolicyConfig, RateLimitConfig};
pub use reflex::ReflexConfig;
pub use runtime::{
    AdminConfig, ConsumerConfig, Credentials, FleetConfig, KeyStyleConfig, LogFormat, RedisConfig,
    Secret, TelemetryConfig, TlsFiles,
};

/// A configuration section: its name in the file and the checks its types cannot express.
pub trait Section {
    /// The table name (`feynman` for `[feynman]`); error messages prefix keys with it.
    const NAME: &'static str;
    /// Ranges, formats, cross-field rules. Report the failing key relative to the section
    /// (`"lease_ms"`); [`Config::validate`] prefixes the section name.
    fn validate(&self) -> Result<(), ConfigError> {
        Ok(())
    }
}

/// Why configuration could not be loaded. `Display` is the one line printed before exit 64.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// A file could not be read or parsed.
    #[error("{0}")]
    Source(String),
    /// A key is unknown, missing or of the wrong type.
    #[error("key `{key}`: {why}")]
    Key {
        /// Dotted path of the key (`consumer.batch`).
        key: String,
        /// What is wrong.
        why: String,
    },
}

impl ConfigError {
    /// An error about `key` (dotted path).
    pub fn key(key: &str, why: impl Into<String>) -> Self {
        ConfigError::Key {
            key: key.to_owned(),
            why: why.into(),
        }
    }
}

/// The whole configuration of a kitbash deployment.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// How to reach Redis and name keys.
    pub redis: RedisConfig,
    /// Logging.
    pub telemetry: TelemetryConfig,
    /// The per-instance admin HTTP endpoint.
    pub admin: AdminConfig,
    /// Defaults of every consumer-group loop.
    pub consumer: ConsumerConfig,
    /// Fleet bookkeeping (heartbeats).
    pub fleet: FleetConfig,
    /// The physics writer.
    pub feynman: FeynmanConfig,
    /// The entity updater.
    pub entity: EntityConfig,
    /// The resonance decayer.
    pub decay: DecayConfig,
    /// The ghost precomputer.
    pub ghost: GhostConfig,
    /// The reflex path's record layout (decay, ghost, the CLI).
    pub reflex: ReflexConfig,
    /// The WebSocket bridge.
    pub bridge: BridgeConfig,
    /// The archival consumer.
    pub archive: ArchiveConfig,
    /// The example daemon of `docs/adding-a-daemon.md` (`kitbash-example`).
    pub example: ExampleConfig,
    /// `kitbash-client`'s rate limiter (seed 004).
    pub ratelimit: RateLimitConfig,
    /// `kitbash-client`'s sessions and array storage (seeds 003, 004).
    pub client: ClientConfig,
}

/// Where configuration comes from.
#[derive(Clone, Debug)]
pub struct ConfigSource {
    /// Directory holding `default.toml` and `{profile}.toml`.
    pub dir: PathBuf,
    /// Profile name (`KITBASH_PROFILE`), e.g. `production`.
    pub profile: Option<String>,
    /// Whether to read `KITBASH__*` environment variables.
    pub env: bool,
}

impl ConfigSource {
    /// `KITBASH_CONFIG_DIR` (default `config`), `KITBASH_PROFILE`, environment on.
    pub fn from_env() -> Self {
        Self {
            dir: std::env::var_os("KITBASH_CONFIG_DIR")
                .map(PathBuf::from)
                .unwrap_or_else(|| PathBuf::from("config")),
            profile: std::env::var("KITBASH_PROFILE")
                .ok()
                .filter(|p| !p.is_empty()),
            env: true,
        }
    }

    /// Only the files in `dir` (tests).
    pub fn files_only(dir: impl AsRef<Path>) -> Self {
        Self {
            dir: dir.as_ref().to_owned(),
            profile: None,
            env: false,
        }
    }
}

impl Config {
    /// Loads and validates the configuration.
    pub fn load(src: &ConfigSource) -> Result<Self, ConfigError> {
        Self::load_with(src, std::iter::empty())
    }

    /// Loads with extra `(dotted.key, value)` overrides applied last (the CLI's flags).
    pub fn load_with<'a>(
        src: &ConfigSource,
        overrides: impl IntoIterator<Item = (&'a str, String)>,
    ) -> Result<Self, ConfigError> {
        let mut b = config::Config::builder().add_source(
            config::File::from(src.dir.join("default.toml"))
                .format(config::FileFormat::Toml)
                .required(false),
        );
        if let Some(p) = &src.profile {
            let path = src.dir.join(format!("{p}.toml"));
            if !path.exists() {
                return Err(ConfigError::Source(format!(
                    "profile {p:?}: {} does not exist",
                    path.display()
                )));
            }
            b = b.add_source(config::File::from(path).format(config::FileFormat::Toml));
        }
        if src.env {
            b = b.add_source(
                config::Environment::with_prefix("KITBASH")
                    .prefix_separator("__")
                    .separator("__")
                    .try_parsing(true),
            );
        }
        for (k, v) in overrides {
            b = b
                .set_override(k, v)
                .map_err(|e| ConfigError::Source(e.to_string()))?;
        }
        let raw = b.build().map_err(|e| ConfigError::Source(e.to_string()))?;
        // serde_path_to_error names the exact key that failed (`consumer.batch`).
        let cfg: Config = serde_path_to_error::deserialize(raw).map_err(|e| {
            let path = e.path().to_string();
            ConfigError::key(&path, e.into_inner().to_string())
        })?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// Checks what types cannot, section by section; the error names `section.key`.
    pub fn validate(&self) -> Result<(), ConfigError> {
        fn check<S: Section>(s: &S) -> Result<(), ConfigError> {
            s.validate().map_err(|e| match e {
                ConfigError::Key { key, why } => ConfigError::Key {
                    key: format!("{}.{key}", S::NAME),
                    why,
                },
                other => other,
            })
        }
        check(&self.redis)?;
        check(&self.telemetry)?;
        check(&self.admin)?;
        check(&self.consumer)?;
        check(&self.fleet)?;
        check(&self.feynman)?;
        check(&self.entity)?;
        check(&self.example)?;
        check(&self.archive)?;
        check(&self.bridge)?;
        check(&self.ratelimit)?;
        check(&self.client)?;
        check(&self.decay)?;
        check(&self.ghost)?;
        check(&self.reflex)?;
        // A marker must outlive the reclaim of an entry whose acknowledgement was lost.
        for (key, ttl_s) in [
            ("decay.marker_ttl_s", self.decay.marker_ttl_s),
            ("ghost.marker_ttl_s", self.ghost.marker_ttl_s),
        ] {
            if ttl_s.saturating_mul(1000) <= self.consumer.claim_idle_ms {
                return Err(ConfigError::key(
                    key,
                    "must exceed consumer.claim_idle_ms: an entry reclaimed after its marker \
                     expired would be applied twice",
                ));
            }
        }
        // The archive trims only what it archives: trim settings for another stream would be
        // silently ignored while that stream's own owner trims it by its own bound.
        let archived = self.archived_streams();
        for s in self.archive.retention.keys() {
            let archived_here = kitbash_schema::StreamName::parse(s)
                .is_some_and(|stream| archived.contains(&stream));
            if !archived_here {
                let owner = match kitbash_schema::StreamName::parse(s).map(|x| x.trim_owner()) {
                    Some(kitbash_schema::TrimOwner::Daemon { kind, key }) => {
                        format!("{kind}.{key} trims it")
                    }
                    _ => "nothing trims it".to_owned(),
                };
                return Err(ConfigError::key(
                    &format!("archive.retention.{s}"),
                    format!(
                        "{s} is not archived (archive.streams, feynman.partitions, \
                         entity.partitions), so the archive does not trim it ({owner}); add it \
                         to archive.streams or remove this table"
                    ),
                ));
            }
        }
        if self.reflex.layout == kitbash_schema::reflex::Layout::Compact
            && self.decay.refresh_hottest > 0
        {
            return Err(ConfigError::key(
                "decay.refresh_hottest",
                "keeps cms:{h}:resonance current for plain-GET readers; the compact layout has no such key (set 0 or reflex.layout = \"seed\")",
            ));
        }
        Ok(())
    }
}

impl Config {
    /// The bound the owner of stream `s` trims it near (the value of its
    /// [`kitbash_schema::StreamName::trim_owner`] key); `None` when nothing trims it, or its
    /// bound is 0 (never trimmed).
    pub fn stream_bound(&self, s: kitbash_schema::StreamName) -> Option<u64> {
        let kitbash_schema::TrimOwner::Daemon { kind, key } = s.trim_owner() else {
            return None;
        };
        use kitbash_schema::DaemonKind as K;
        let v = match (kind, key) {
            (K::Feynman, "tick_stream_max") => self.feynman.tick_stream_max,
            (K::Feynman, "physics_stream_max") => self.feynman.physics_stream_max,
            (K::Entity, "stream_max") => self.entity.stream_max,
            (K::Entity, "changes_max") => self.entity.changes_max,
            (K::Decay, "queries_stream_max") => self.decay.queries_stream_max,
            (K::Ghost, "crossings_stream_max") => self.ghost.crossings_stream_max,
            (K::Archive, "memory_stream_max") => self.archive.memory_stream_max,
            // A new owner key fails `every_trim_owner_key_has_a_bound` until it is listed here.
            _ => return None,
        };
        (v > 0).then_some(v)
    }

    /// The streams the archive archives: `[archive] streams`, or every stream of the fleet
    /// (`StreamName::all` with `[feynman]` and `[entity]` partition counts).
    pub fn archived_streams(&self) -> Vec<kitbash_schema::StreamName> {
        let all = kitbash_schema::StreamName::all(self.feynman.partitions, self.entity.partitions);
        if self.archive.streams.is_empty() {
            all
        } else {
            self.archive
                .streams
                .iter()
                .filter_map(|s| kitbash_schema::StreamName::parse(s))
                .collect()
        }
    }

    /// Whether the archive claims the trim of `stream` while it archives it (it archives the
    /// stream and `archive.trim` holds for it). The claim is what stops the stream's other
    /// owner: see `kitbash_runtime::trim`.
    pub fn archive_trims(&self, stream: kitbash_schema::StreamName) -> bool {
        self.archived_streams().contains(&stream) && self.archive.trim_for(&stream.logical()).trim
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kitbash_schema::{StreamName, TrimOwner};

    #[test]
    fn every_trim_owner_key_has_a_bound() {
        let c = Config::default();
        for s in StreamName::families() {
            match s.trim_owner() {
                TrimOwner::Daemon { kind, key } => assert!(
                    c.stream_bound(s).is_some(),
                    "{s}: {kind}.{key} is not mapped by Config::stream_bound"
                ),
                TrimOwner::Exempt(_) => assert_eq!(c.stream_bound(s), None, "{s}"),
            }
        }
        let mut c = Config::default();
        c.feynman.physics_stream_max = 0;
        assert_eq!(
            c.stream_bound(StreamName::Physics),
            None,
            "0 = never trimmed"
        );
        c.ghost.crossings_stream_max = 7;
        assert_eq!(c.stream_bound(StreamName::Crossings), Some(7));
    }
}
