//! Layered configuration: `config/default.toml`, then `config/{profile}.toml`, then environment
//! variables `KITBASH__SECTION__KEY`. Unknown keys are refused; a bad value names its key.
//!
//! Every section of every daemon is declared here, so each binary validates the whole file the
//! same way: a typo in `[feynman]` stops `kitbash-decay` too, instead of lurking until the
//! feynman instance restarts.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use kitbash_schema::{KeyStyle, Keys, Namespace};
use serde::Deserialize;

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
    fn key(key: &str, why: impl Into<String>) -> Self {
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
    pub entity: SectionPlaceholder,
    /// The resonance decayer.
    pub decay: SectionPlaceholder,
    /// The ghost precomputer.
    pub ghost: SectionPlaceholder,
    /// The WebSocket bridge.
    pub bridge: SectionPlaceholder,
    /// The archival consumer.
    pub archive: SectionPlaceholder,
}

/// `[redis]`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RedisConfig {
    /// `redis://[user:password@]host:port[/db]`, `rediss://` for TLS, or
    /// `redis-cluster://host:port?node=host2:port2` for a cluster.
    pub url: String,
    /// Key prefix; empty = the seeds' exact key names.
    pub namespace: String,
    /// `seed` (exact names) or `tagged` (hash-tagged ids, for Redis Cluster).
    pub key_style: KeyStyleConfig,
    /// Timeout of every command, ms (fred's default is none: a stuck server would hang us).
    pub command_timeout_ms: u64,
    /// Timeout of each connection attempt, ms.
    pub connect_timeout_ms: u64,
    /// Commands buffered while disconnected before new ones fail (fred's default is unbounded).
    pub max_command_buffer: usize,
    /// Reconnect backoff: first delay, ms.
    pub reconnect_min_ms: u32,
    /// Reconnect backoff: largest delay, ms.
    pub reconnect_max_ms: u32,
    /// Capacity of the pub/sub message channel per subscriber (fred's default 32 loses messages
    /// under load; lag is counted and logged).
    pub pubsub_capacity: usize,
}

impl Default for RedisConfig {
    fn default() -> Self {
        Self {
            url: "redis://127.0.0.1:6379".into(),
            namespace: String::new(),
            key_style: KeyStyleConfig::Seed,
            command_timeout_ms: 5_000,
            connect_timeout_ms: 3_000,
            max_command_buffer: 10_000,
            reconnect_min_ms: 50,
            reconnect_max_ms: 2_000,
            pubsub_capacity: 4_096,
        }
    }
}

/// Serde mirror of [`KeyStyle`].
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum KeyStyleConfig {
    /// Exact seed names.
    #[default]
    Seed,
    /// Hash-tagged ids.
    Tagged,
}

impl RedisConfig {
    /// The key builder this configuration describes (validated by [`Config::validate`]).
    pub fn keys(&self) -> Keys {
        let ns = Namespace::new(self.namespace.clone()).unwrap_or_default();
        let style = match self.key_style {
            KeyStyleConfig::Seed => KeyStyle::Seed,
            KeyStyleConfig::Tagged => KeyStyle::Tagged,
        };
        Keys::new(ns).with_style(style)
    }
}

/// `[telemetry]`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TelemetryConfig {
    /// `text` for people, `json` for log shippers.
    pub format: LogFormat,
    /// A tracing `EnvFilter` directive (`info`, `kitbash_runtime=debug,info`). `RUST_LOG`
    /// overrides it when set.
    pub level: String,
}

impl Default for TelemetryConfig {
    fn default() -> Self {
        Self {
            format: LogFormat::Text,
            level: "info".into(),
        }
    }
}

/// Log line format.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable.
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

/// `[admin]`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AdminConfig {
    /// Listen address of `/healthz`, `/readyz`, `/metrics`; port 0 picks a free port (the
    /// heartbeat records the actual address); empty disables the endpoint.
    pub listen: String,
}

impl Default for AdminConfig {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:0".into(),
        }
    }
}

impl AdminConfig {
    /// The parsed address, `None` when disabled.
    pub fn addr(&self) -> Option<SocketAddr> {
        if self.listen.is_empty() {
            None
        } else {
            self.listen.parse().ok()
        }
    }
}

/// `[consumer]`: defaults of every consumer-group loop.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ConsumerConfig {
    /// Entries per XREADGROUP.
    pub batch: usize,
    /// How long one XREADGROUP blocks, ms. Also bounds how long shutdown waits for the read in
    /// flight (it is never cancelled, so no entry is read and then dropped).
    pub block_ms: u64,
    /// An entry pending this long is considered abandoned and reclaimed (XAUTOCLAIM), ms.
    pub claim_idle_ms: u64,
    /// How often to look for abandoned entries, ms.
    pub claim_interval_ms: u64,
    /// Deliveries after which an entry goes to the dead-letter stream.
    pub max_deliveries: u64,
    /// Drain budget after SIGTERM, ms: the batch in hand is finished and acknowledged within it.
    pub grace_ms: u64,
    /// Where a newly created group starts: `0` (the whole stream) or `$` (new entries only).
    pub start: String,
    /// Dead-letter streams are capped near this many entries (XADD MAXLEN ~).
    pub dead_letter_max: u64,
    /// Consumers of the group idle this long with nothing pending (processes that died; their
    /// entries were reclaimed) are deleted from the group, ms.
    pub forget_idle_ms: u64,
}

impl Default for ConsumerConfig {
    fn default() -> Self {
        Self {
            batch: 256,
            block_ms: 500,
            claim_idle_ms: 30_000,
            claim_interval_ms: 5_000,
            max_deliveries: 5,
            grace_ms: 10_000,
            start: "0".into(),
            dead_letter_max: 100_000,
            forget_idle_ms: 3_600_000,
        }
    }
}

/// `[fleet]`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FleetConfig {
    /// Heartbeat period, ms; an instance silent for 3 periods is reported dead.
    pub heartbeat_ms: u64,
}

impl Default for FleetConfig {
    fn default() -> Self {
        Self {
            heartbeat_ms: 2_000,
        }
    }
}

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

/// A daemon section with no settings yet; it still rejects unknown keys.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SectionPlaceholder {}

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

    /// Checks what types cannot: ranges, URLs, addresses, names.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let url = &self.redis.url;
        if ![
            "redis://",
            "rediss://",
            "redis-cluster://",
            "rediss-cluster://",
        ]
        .iter()
        .any(|s| url.starts_with(s))
        {
            return Err(ConfigError::key(
                "redis.url",
                format!("{url:?} must start with redis://, rediss:// or redis-cluster://"),
            ));
        }
        fred::types::config::Config::from_url(url)
            .map_err(|e| ConfigError::key("redis.url", e.details().to_string()))?;
        Namespace::new(self.redis.namespace.clone())
            .map_err(|e| ConfigError::key("redis.namespace", e.to_string()))?;
        if self.redis.command_timeout_ms == 0 {
            return Err(ConfigError::key("redis.command_timeout_ms", "must be > 0"));
        }
        if !self.admin.listen.is_empty() && self.admin.addr().is_none() {
            return Err(ConfigError::key(
                "admin.listen",
                format!(
                    "{:?} is not host:port (or empty to disable)",
                    self.admin.listen
                ),
            ));
        }
        let c = &self.consumer;
        if c.batch == 0 || c.batch > 10_000 {
            return Err(ConfigError::key(
                "consumer.batch",
                "must be within 1..=10000",
            ));
        }
        if c.max_deliveries == 0 {
            return Err(ConfigError::key("consumer.max_deliveries", "must be ≥ 1"));
        }
        if c.block_ms == 0 {
            return Err(ConfigError::key("consumer.block_ms", "must be > 0"));
        }
        if c.start != "0" && c.start != "$" {
            return Err(ConfigError::key("consumer.start", "must be \"0\" or \"$\""));
        }
        if self.fleet.heartbeat_ms < 100 {
            return Err(ConfigError::key("fleet.heartbeat_ms", "must be ≥ 100"));
        }
        if self.feynman.partitions == 0 || self.feynman.partitions > 1024 {
            return Err(ConfigError::key(
                "feynman.partitions",
                "must be within 1..=1024",
            ));
        }
        if self.feynman.lease_ms < 300 {
            return Err(ConfigError::key("feynman.lease_ms", "must be ≥ 300"));
        }
        if self.feynman.window < 2 {
            return Err(ConfigError::key("feynman.window", "must be ≥ 2"));
        }
        Ok(())
    }
}
