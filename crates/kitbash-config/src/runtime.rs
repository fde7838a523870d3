//! The sections every binary uses: `[redis]`, `[telemetry]`, `[admin]`, `[consumer]`, `[fleet]`.

use std::net::SocketAddr;

use kitbash_schema::{KeyStyle, Keys, Namespace};
use serde::Deserialize;

use crate::{ConfigError, Section};

/// `url` as fred parses it: `redis+sentinel://` (the spelling of redis-py and most clients)
/// becomes fred's `redis-sentinel://`, `rediss+sentinel://` its `rediss-sentinel://`.
pub fn fred_url(url: &str) -> String {
    for (ours, freds) in [
        ("redis+sentinel://", "redis-sentinel://"),
        ("rediss+sentinel://", "rediss-sentinel://"),
    ] {
        if let Some(rest) = url.strip_prefix(ours) {
            return format!("{freds}{rest}");
        }
    }
    url.to_owned()
}

/// `[redis]`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RedisConfig {
    /// `redis://[user:password@]host:port[/db]`, `rediss://` for TLS,
    /// `redis-cluster://host:port?node=host2:port2` for a cluster, or
    /// `redis+sentinel://sentinel1:26379?sentinelServiceName=NAME&node=sentinel2:26379` for a
    /// master found through Sentinel (`rediss+sentinel://` with TLS; `redis-sentinel://`, fred's
    /// spelling, works too).
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
    /// The ACL user to authenticate as (`kitbash acl` prints one per daemon kind); empty = the
    /// URL's user, else Redis's `default` user. Overrides a user in the URL.
    pub username: String,
    /// The password; empty = from `password_file`, else from the URL. Better given as the
    /// environment variable `KITBASH__REDIS__PASSWORD` or a file than written in a config file.
    pub password: Secret,
    /// A file holding the password (its first line; e.g. a systemd credential,
    /// `$CREDENTIALS_DIRECTORY/redis-password`). Read at start; empty = none.
    pub password_file: String,
    /// PEM file of the CA certificates that sign the server's certificate, for `rediss://`;
    /// empty = the system's trust store.
    pub tls_ca_file: String,
    /// PEM file of a client certificate, for servers with `tls-auth-clients yes`; needs
    /// `tls_key_file`.
    pub tls_cert_file: String,
    /// PEM file of the client certificate's private key (PKCS#8, PKCS#1 or SEC1).
    pub tls_key_file: String,
}

/// A password: never printed by `Debug` (a config dumped into a log shows `***`).
#[derive(Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(transparent)]
pub struct Secret(pub String);

impl Secret {
    /// The secret itself.
    pub fn expose(&self) -> &str {
        &self.0
    }
    /// Whether no secret is set.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.is_empty() { "\"\"" } else { "***" })
    }
}

/// Who a connection authenticates as, resolved from `[redis]` ([`RedisConfig::credentials`]).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Credentials {
    /// The ACL user; `None` = the URL's, else `default`.
    pub username: Option<String>,
    /// The password; `None` = the URL's, else none.
    pub password: Option<Secret>,
}

/// The TLS files of `[redis]`, for a `rediss://` URL ([`RedisConfig::tls_files`]).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TlsFiles {
    /// `tls_ca_file`, when set.
    pub ca: Option<std::path::PathBuf>,
    /// `tls_cert_file` and `tls_key_file`, when both are set.
    pub client: Option<(std::path::PathBuf, std::path::PathBuf)>,
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
            username: String::new(),
            password: Secret::default(),
            password_file: String::new(),
            tls_ca_file: String::new(),
            tls_cert_file: String::new(),
            tls_key_file: String::new(),
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
    /// The key builder this configuration describes (validated by [`Config::validate`](crate::Config::validate)).
    pub fn keys(&self) -> Keys {
        let ns = Namespace::new(self.namespace.clone()).unwrap_or_default();
        let style = match self.key_style {
            KeyStyleConfig::Seed => KeyStyle::Seed,
            KeyStyleConfig::Tagged => KeyStyle::Tagged,
        };
        Keys::new(ns)
            .with_style(style)
            .with_reflex_slot(self.is_cluster())
    }

    /// Whether `url` names a Redis Cluster (`redis-cluster://`, `rediss-cluster://`).
    pub fn is_cluster(&self) -> bool {
        self.url.starts_with("redis-cluster://") || self.url.starts_with("rediss-cluster://")
    }

    /// The user and password to authenticate with: `username`, then `password` or the first
    /// line of `password_file`; what is not set here comes from the URL
    /// (`redis://user:pass@host`). An unreadable `password_file` is an error naming it.
    pub fn credentials(&self) -> Result<Credentials, ConfigError> {
        let username = (!self.username.is_empty()).then(|| self.username.clone());
        let password = if !self.password.is_empty() {
            Some(self.password.clone())
        } else if !self.password_file.is_empty() {
            let text = std::fs::read_to_string(&self.password_file).map_err(|e| {
                ConfigError::key(
                    "password_file",
                    format!("cannot read {}: {e}", self.password_file),
                )
            })?;
            let first = text.lines().next().unwrap_or("").to_owned();
            if first.is_empty() {
                return Err(ConfigError::key(
                    "password_file",
                    format!("{} is empty", self.password_file),
                ));
            }
            Some(Secret(first))
        } else {
            None
        };
        Ok(Credentials { username, password })
    }

    /// Whether the URL asks for TLS (`rediss://`, `rediss-cluster://`).
    pub fn is_tls(&self) -> bool {
        self.url.starts_with("rediss")
    }

    /// The TLS files set in `[redis]`.
    pub fn tls_files(&self) -> TlsFiles {
        let path = |s: &str| (!s.is_empty()).then(|| std::path::PathBuf::from(s));
        TlsFiles {
            ca: path(&self.tls_ca_file),
            client: path(&self.tls_cert_file).zip(path(&self.tls_key_file)),
        }
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

/// `[consumer]`: the settings of every consumer-group loop, with per-stream overrides in
/// `[consumer.streams.<logical stream>]` ([`ConsumerConfig::for_stream`]).
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
    /// Dead-letter streams are never trimmed (a dead letter stays until an operator replays or
    /// deletes it); one longer than this raises an alarm: the gauge
    /// `kitbash_dead_letter_alarm{stream}` = 1 on the stream owner's `/metrics`, a warning in
    /// its log and in `kitbash status`. 0 = alarm at the first dead letter.
    pub dead_letter_alarm: u64,
    /// The former `dead_letter_max` (a cap by deletion), refused with a pointer to
    /// `dead_letter_alarm`.
    #[serde(default, rename = "dead_letter_max")]
    pub removed_dead_letter_max: Option<serde::de::IgnoredAny>,
    /// Consumers of the group idle this long with nothing pending (processes that died; their
    /// entries were reclaimed) are deleted from the group, ms.
    pub forget_idle_ms: u64,
    /// Producer message ids remembered per stream and group, so a message re-sent with the same
    /// `mid` (a producer retrying an `XADD` whose outcome it did not learn) is applied once;
    /// kept in Redis, so it survives restarts. 0 turns de-duplication off.
    pub dedup_window: u64,
    /// Entries a raw consumer (deferred acknowledgement, e.g. the archive) may hold delivered
    /// but unacknowledged; at the limit it reads nothing new until acknowledgements come in.
    pub max_held: usize,
    /// Per-stream overrides, keyed by logical stream name (`queries`, `"ticks:3"`): a consumer
    /// of that stream takes these keys from here and the rest from `[consumer]`.
    pub streams: std::collections::BTreeMap<String, ConsumerOverride>,
}

/// `[consumer.streams.<logical stream>]`: the `[consumer]` keys one stream's consumers set
/// differently. Absent keys keep the `[consumer]` value.
#[derive(Clone, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct ConsumerOverride {
    /// Overrides `consumer.batch`.
    pub batch: Option<usize>,
    /// Overrides `consumer.block_ms`.
    pub block_ms: Option<u64>,
    /// Overrides `consumer.claim_idle_ms`.
    pub claim_idle_ms: Option<u64>,
    /// Overrides `consumer.claim_interval_ms`.
    pub claim_interval_ms: Option<u64>,
    /// Overrides `consumer.max_deliveries`.
    pub max_deliveries: Option<u64>,
    /// Overrides `consumer.start`.
    pub start: Option<String>,
    /// Overrides `consumer.max_held`.
    pub max_held: Option<usize>,
}

impl ConsumerConfig {
    /// The settings of a consumer of the stream named `logical`: `[consumer]` with that
    /// stream's `[consumer.streams.<logical>]` keys applied (no overrides: `[consumer]` as is).
    pub fn for_stream(&self, logical: &str) -> ConsumerConfig {
        let mut cfg = self.clone();
        if let Some(o) = self.streams.get(logical) {
            cfg.batch = o.batch.unwrap_or(cfg.batch);
            cfg.block_ms = o.block_ms.unwrap_or(cfg.block_ms);
            cfg.claim_idle_ms = o.claim_idle_ms.unwrap_or(cfg.claim_idle_ms);
            cfg.claim_interval_ms = o.claim_interval_ms.unwrap_or(cfg.claim_interval_ms);
            cfg.max_deliveries = o.max_deliveries.unwrap_or(cfg.max_deliveries);
            cfg.start = o.start.clone().unwrap_or(cfg.start);
            cfg.max_held = o.max_held.unwrap_or(cfg.max_held);
        }
        cfg.streams.clear();
        cfg
    }

    /// Checks the merged loop settings (what [`Section::validate`] checks for `[consumer]`
    /// and every override).
    fn check_loop(&self) -> Result<(), ConfigError> {
        if self.batch == 0 || self.batch > 10_000 {
            return Err(ConfigError::key("batch", "must be within 1..=10000"));
        }
        if self.max_deliveries == 0 {
            return Err(ConfigError::key("max_deliveries", "must be ≥ 1"));
        }
        if self.block_ms == 0 {
            return Err(ConfigError::key("block_ms", "must be > 0"));
        }
        if self.start != "0" && self.start != "$" {
            return Err(ConfigError::key("start", "must be \"0\" or \"$\""));
        }
        if self.max_held == 0 {
            return Err(ConfigError::key("max_held", "must be ≥ 1"));
        }
        Ok(())
    }
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
            dead_letter_alarm: 1_000,
            removed_dead_letter_max: None,
            forget_idle_ms: 3_600_000,
            dedup_window: 100_000,
            max_held: 50_000,
            streams: std::collections::BTreeMap::new(),
        }
    }
}

/// `[fleet]`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FleetConfig {
    /// Heartbeat period, ms; an instance silent for 3 periods is reported dead.
    pub heartbeat_ms: u64,
    /// A main loop (a consumer, a partition worker, a periodic or leader task) that has not
    /// come round for this long beyond its own cadence counts as stuck: the daemon stops
    /// feeding systemd's watchdog (`WatchdogSec=`), which then restarts it, ms.
    pub stuck_after_ms: u64,
}

impl Default for FleetConfig {
    fn default() -> Self {
        Self {
            heartbeat_ms: 2_000,
            stuck_after_ms: 30_000,
        }
    }
}

impl Section for RedisConfig {
    const NAME: &'static str = "redis";
    fn validate(&self) -> Result<(), ConfigError> {
        let url = &self.url;
        if ![
            "redis://",
            "rediss://",
            "redis-cluster://",
            "rediss-cluster://",
            "redis+sentinel://",
            "rediss+sentinel://",
            "redis-sentinel://",
            "rediss-sentinel://",
        ]
        .iter()
        .any(|s| url.starts_with(s))
        {
            return Err(ConfigError::key(
                "url",
                format!(
                    "{url:?} must start with redis://, rediss://, redis-cluster:// or \
                     redis+sentinel://"
                ),
            ));
        }
        fred::types::config::Config::from_url(&fred_url(url))
            .map_err(|e| ConfigError::key("url", e.details().to_string()))?;
        Namespace::new(self.namespace.clone())
            .map_err(|e| ConfigError::key("namespace", e.to_string()))?;
        if self.command_timeout_ms == 0 {
            return Err(ConfigError::key("command_timeout_ms", "must be > 0"));
        }
        if !self.password.is_empty() && !self.password_file.is_empty() {
            return Err(ConfigError::key(
                "password_file",
                "password and password_file are both set: keep one",
            ));
        }
        self.credentials()?;
        let tls_keys = [
            ("tls_ca_file", &self.tls_ca_file),
            ("tls_cert_file", &self.tls_cert_file),
            ("tls_key_file", &self.tls_key_file),
        ];
        for (key, file) in tls_keys {
            if file.is_empty() {
                continue;
            }
            if !self.is_tls() {
                return Err(ConfigError::key(
                    key,
                    format!("is set but url {url:?} is not rediss:// (TLS)"),
                ));
            }
            if let Err(e) = std::fs::metadata(file) {
                return Err(ConfigError::key(key, format!("cannot read {file}: {e}")));
            }
        }
        if self.tls_cert_file.is_empty() != self.tls_key_file.is_empty() {
            return Err(ConfigError::key(
                "tls_key_file",
                "tls_cert_file and tls_key_file go together: set both or neither",
            ));
        }
        Ok(())
    }
}

impl Section for TelemetryConfig {
    const NAME: &'static str = "telemetry";
}

impl Section for AdminConfig {
    const NAME: &'static str = "admin";
    fn validate(&self) -> Result<(), ConfigError> {
        if !self.listen.is_empty() && self.addr().is_none() {
            return Err(ConfigError::key(
                "listen",
                format!("{:?} is not host:port (or empty to disable)", self.listen),
            ));
        }
        Ok(())
    }
}

impl Section for ConsumerConfig {
    const NAME: &'static str = "consumer";
    fn validate(&self) -> Result<(), ConfigError> {
        self.check_loop()?;
        for stream in self.streams.keys() {
            if kitbash_schema::StreamName::parse(stream).is_none() {
                return Err(ConfigError::key(
                    &format!("streams.{stream}"),
                    "is not a stream name (queries, crossings, memory, physics, entity-changes, \
                     ticks:N, entity:N)",
                ));
            }
            self.for_stream(stream).check_loop().map_err(|e| match e {
                ConfigError::Key { key, why } => ConfigError::Key {
                    key: format!("streams.{stream}.{key}"),
                    why,
                },
                other => other,
            })?;
        }
        if self.removed_dead_letter_max.is_some() {
            return Err(ConfigError::key(
                "dead_letter_max",
                "was removed: dead-letter streams are no longer trimmed; set dead_letter_alarm \
                 (the length above which a dead-letter stream raises an alarm) instead",
            ));
        }
        Ok(())
    }
}

impl Section for FleetConfig {
    const NAME: &'static str = "fleet";
    fn validate(&self) -> Result<(), ConfigError> {
        if self.heartbeat_ms < 100 {
            return Err(ConfigError::key("heartbeat_ms", "must be ≥ 100"));
        }
        if self.stuck_after_ms == 0 {
            return Err(ConfigError::key("stuck_after_ms", "must be > 0"));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sentinel_urls_are_accepted_in_both_spellings() {
        let url = "redis+sentinel://10.0.0.7:26379?sentinelServiceName=kb&node=10.0.0.8:26379";
        assert_eq!(
            fred_url(url),
            "redis-sentinel://10.0.0.7:26379?sentinelServiceName=kb&node=10.0.0.8:26379"
        );
        assert_eq!(
            fred_url("rediss+sentinel://h:1?sentinelServiceName=x"),
            "rediss-sentinel://h:1?sentinelServiceName=x"
        );
        assert_eq!(fred_url("redis://h:1"), "redis://h:1");
        for url in [url, "redis-sentinel://h:26379?sentinelServiceName=kb"] {
            let cfg = RedisConfig {
                url: url.into(),
                ..Default::default()
            };
            assert!(cfg.validate().is_ok(), "{url}: {:?}", cfg.validate().err());
        }
        // The service name is required: named by the error.
        let cfg = RedisConfig {
            url: "redis+sentinel://h:26379".into(),
            ..Default::default()
        };
        let err = cfg.validate().expect_err("no service name").to_string();
        assert!(err.contains("url"), "{err}");
    }
}
