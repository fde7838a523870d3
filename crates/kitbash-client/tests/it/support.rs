//! Shared helpers: a client for a test server, keys in a fresh namespace.

use std::time::Duration;

use fred::prelude::*;
use kitbash_runtime::config::RedisConfig;
use kitbash_schema::{Keys, Namespace};

pub fn redis_config(url: &str) -> RedisConfig {
    RedisConfig {
        url: url.to_owned(),
        command_timeout_ms: 2_000,
        ..RedisConfig::default()
    }
}

pub async fn connect(url: &str) -> Client {
    kitbash_runtime::redis::connect_client(&redis_config(url), Duration::from_secs(10))
        .await
        .expect("connected")
}

/// A client that gives up quickly when Redis is away (for the outage tests).
pub async fn connect_impatient(url: &str) -> Client {
    let cfg = RedisConfig {
        command_timeout_ms: 300,
        reconnect_max_ms: 100,
        ..redis_config(url)
    };
    kitbash_runtime::redis::connect_client(&cfg, Duration::from_secs(10))
        .await
        .expect("connected")
}

pub fn keys() -> Keys {
    Keys::new(Namespace::new(kitbash_testkit::namespace()).expect("namespace"))
}

/// Runs `op` until it succeeds (the client reconnecting after a restart), for at most 10 s.
pub async fn until_ok<T, E: std::fmt::Debug, F, Fut>(mut op: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, E>>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        match op().await {
            Ok(v) => return v,
            Err(e) if tokio::time::Instant::now() > deadline => panic!("still failing: {e:?}"),
            // Polling a reconnecting client, not standing in for synchronisation.
            Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
        }
    }
}

pub use kitbash_testkit::support::eventually;
