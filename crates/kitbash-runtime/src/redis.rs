//! Redis connections with the reliability notes applied: command timeouts, a bounded buffer
//! while disconnected, exponential reconnect, and a separate connection for blocking reads.

use std::time::Duration;

use fred::prelude::*;
use fred::types::config::{Config as FredConfig, ReconnectPolicy, TcpConfig};
use fred::types::{ClusterHash, CustomCommand};

use crate::config::RedisConfig;
use crate::error::RuntimeError;

/// The connections one daemon instance uses.
#[derive(Clone)]
pub struct Redis {
    /// Every non-blocking command. fred pipelines concurrent commands on it automatically.
    pub client: Client,
    /// Only `XREADGROUP … BLOCK`: fred's default blocking policy would queue every other
    /// command behind a blocking read sharing its connection.
    pub blocking: Client,
}

impl std::fmt::Debug for Redis {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Redis").finish_non_exhaustive()
    }
}

/// A fred builder configured from `[redis]`.
pub fn builder(cfg: &RedisConfig) -> Result<Builder, RuntimeError> {
    let mut fred_cfg = FredConfig::from_url(&cfg.url)?;
    // Keep retrying the first connection like any later one: a daemon started before Redis
    // waits for it (and reports not-ready) instead of crash-looping.
    fred_cfg.fail_fast = false;
    let mut b = Builder::from_config(fred_cfg);
    let cmd_timeout = Duration::from_millis(cfg.command_timeout_ms);
    let connect_timeout = Duration::from_millis(cfg.connect_timeout_ms);
    let max_buffer = cfg.max_command_buffer;
    let pubsub_capacity = cfg.pubsub_capacity;
    b.with_connection_config(|c| {
        c.connection_timeout = connect_timeout;
        c.internal_command_timeout = cmd_timeout;
        c.max_command_buffer_len = max_buffer;
        c.reconnect_on_auth_error = true;
        c.tcp = TcpConfig {
            nodelay: Some(true),
            ..Default::default()
        };
    })
    .with_performance_config(|p| {
        p.default_command_timeout = cmd_timeout;
        p.broadcast_channel_capacity = pubsub_capacity;
    })
    .set_policy(ReconnectPolicy::new_exponential(
        0,
        cfg.reconnect_min_ms,
        cfg.reconnect_max_ms,
        2,
    ));
    Ok(b)
}

impl Redis {
    /// Builds both clients and starts connecting. Does not wait for Redis: commands issued
    /// before it answers wait in the bounded buffer until their timeout.
    pub fn connect(cfg: &RedisConfig) -> Result<Self, RuntimeError> {
        let b = builder(cfg)?;
        let client = b.build()?;
        // The blocking client must outlive a BLOCK of `block_ms`; its command timeout is raised
        // per call with `with_options`.
        let blocking = b.build()?;
        client.connect();
        blocking.connect();
        Ok(Self { client, blocking })
    }

    /// Waits until the command client has connected once (or `timeout` passes).
    pub async fn wait_connected(&self, timeout: Duration) -> Result<(), RuntimeError> {
        match tokio::time::timeout(timeout, self.client.wait_for_connect()).await {
            Ok(r) => Ok(r?),
            Err(_) => Err(RuntimeError::Reply {
                command: "CONNECT",
                detail: format!("no connection within {timeout:?}"),
            }),
        }
    }

    /// `PING`, for readiness.
    pub async fn ping(&self) -> bool {
        self.client.ping::<String>(None).await.is_ok()
    }

    /// Closes both clients.
    pub async fn quit(&self) {
        let _ = self.client.quit().await;
        let _ = self.blocking.quit().await;
    }
}

/// Builds a client from `[redis]`, starts connecting, and waits up to `wait` for the first
/// connection. Every long-lived client should come from here (or [`builder`]): a client made
/// with fred's defaults (`Client::new(config, None, None, None)`) has no reconnect policy and no
/// command timeout, so after a Redis restart its commands hang forever — seen in this
/// workspace's own tests before they switched to this function.
pub async fn connect_client(cfg: &RedisConfig, wait: Duration) -> Result<Client, RuntimeError> {
    let client = builder(cfg)?.build()?;
    client.connect();
    match tokio::time::timeout(wait, client.wait_for_connect()).await {
        Ok(Ok(())) => Ok(client),
        Ok(Err(e)) => {
            let _ = client.quit().await;
            Err(e.into())
        }
        Err(_) => {
            let _ = client.quit().await;
            Err(RuntimeError::Reply {
                command: "CONNECT",
                detail: format!("no connection within {wait:?}"),
            })
        }
    }
}

/// A custom command routed by the cluster slot of `key`.
pub fn command_for_key(name: &'static str, key: &str, blocking: bool) -> CustomCommand {
    let slot = fred::util::redis_keyslot(key.as_bytes());
    CustomCommand::new_static(name, ClusterHash::Custom(slot), blocking)
}

/// The server's version as (major, minor), from `INFO server`.
pub async fn server_version(client: &Client) -> Result<(u32, u32), RuntimeError> {
    let info: String = client.info(Some(fred::types::InfoKind::Server)).await?;
    let v = info
        .lines()
        .find_map(|l| l.strip_prefix("redis_version:"))
        .ok_or(RuntimeError::Reply {
            command: "INFO",
            detail: "no redis_version".into(),
        })?;
    let mut it = v.trim().split('.').map(|p| p.parse::<u32>().unwrap_or(0));
    Ok((it.next().unwrap_or(0), it.next().unwrap_or(0)))
}
