//! `kitbash-client`: what an application links to talk to a kitbash fleet.
//!
//! # Layout
//! - [`Producer`]: appends messages to the fleet's streams (ticks are routed to their partition).
//! - [`Reader`]: reads what the daemons wrote (physics state).
//! - [`reflex`]: seed 000's reflex path: record a query hit, the one-round-trip lookup, hats,
//!   grain import, `metrics_record_query`.
//!
//! Producers never retry an `XADD` by themselves: fred's automatic retry after a reconnect
//! could append an entry twice. Each entry carries a random `mid`; a caller that retries after
//! an error reuses it by calling [`Producer::publish_with_mid`], and consumers drop duplicates.

pub mod reflex;

use fred::prelude::*;
use fred::types::config::Options;
use fred::types::{Key, Value};
use kitbash_schema::messages::{PhysicsVector, Tick};
use kitbash_schema::streams::tick_partition;
use kitbash_schema::{Envelope, Keys, Message, StreamName, WireError};

/// What went wrong talking to the fleet.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// Redis error or timeout. For an `XADD` the outcome is unknown: the entry may or may not
    /// have been appended; retry with the same `mid`.
    #[error("redis: {0}")]
    Redis(#[from] fred::error::Error),
    /// The message could not be encoded, or a stored value did not decode.
    #[error("wire: {0}")]
    Wire(#[from] WireError),
    /// A stored JSON document did not parse.
    #[error("json: {0}")]
    Json(#[from] serde_json::Error),
}

/// A fresh random message id (128 bits, hex).
pub fn new_mid() -> String {
    let a: u64 = rand::random();
    let b: u64 = rand::random();
    format!("{a:016x}{b:016x}")
}

/// Appends messages to streams.
#[derive(Clone)]
pub struct Producer {
    client: Client,
    keys: Keys,
    partitions: u32,
}

impl std::fmt::Debug for Producer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Producer")
            .field("keys", &self.keys)
            .finish_non_exhaustive()
    }
}

impl Producer {
    /// A producer on a connected client. `partitions` must match `[feynman] partitions`.
    pub fn new(client: Client, keys: Keys, partitions: u32) -> Self {
        Self {
            client,
            keys,
            partitions: partitions.max(1),
        }
    }

    /// The stream a tick goes to.
    pub fn tick_stream(&self, symbol: &str) -> StreamName {
        StreamName::Ticks(tick_partition(symbol, self.partitions))
    }

    /// Appends a tick to its symbol's partition. Returns the entry id.
    pub async fn publish_tick(&self, tick: &Tick) -> Result<String, ClientError> {
        self.publish(self.tick_stream(&tick.symbol), tick).await
    }

    /// Appends `msg` to `stream` with a fresh `mid`.
    pub async fn publish<M: Message>(
        &self,
        stream: StreamName,
        msg: &M,
    ) -> Result<String, ClientError> {
        self.publish_with_mid(stream, msg, &new_mid()).await
    }

    /// Appends `msg` with the caller's `mid` (reuse it when retrying after an error).
    pub async fn publish_with_mid<M: Message>(
        &self,
        stream: StreamName,
        msg: &M,
        mid: &str,
    ) -> Result<String, ClientError> {
        let env = Envelope::msgpack(msg)?.with_mid(mid);
        let fields = fields_of(&env);
        let once = Options {
            max_attempts: Some(1),
            ..Default::default()
        };
        Ok(self
            .client
            .with_options(&once)
            .xadd(self.keys.stream(stream), false, None, "*", fields)
            .await?)
    }

    /// Appends many messages to `stream` in one pipeline (the feed's hot path). Returns ids.
    pub async fn publish_batch<M: Message>(
        &self,
        stream: StreamName,
        msgs: &[M],
    ) -> Result<Vec<String>, ClientError> {
        let pipe = self.client.pipeline();
        let key = self.keys.stream(stream);
        for m in msgs {
            let env = Envelope::msgpack(m)?.with_mid(new_mid());
            let _: () = pipe
                .xadd(key.as_str(), false, None, "*", fields_of(&env))
                .await?;
        }
        Ok(pipe.all().await?)
    }
}

fn fields_of(env: &Envelope) -> Vec<(Key, Value)> {
    env.to_fields()
        .into_iter()
        .map(|(k, v)| (Key::from(k), Value::Bytes(v.into())))
        .collect()
}

/// Reads what the daemons wrote.
#[derive(Clone)]
pub struct Reader {
    client: Client,
    keys: Keys,
}

impl std::fmt::Debug for Reader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reader")
            .field("keys", &self.keys)
            .finish_non_exhaustive()
    }
}

impl Reader {
    /// A reader on a connected client.
    pub fn new(client: Client, keys: Keys) -> Self {
        Self { client, keys }
    }

    /// `physics:state:{SYMBOL}`, if written.
    pub async fn physics_state(&self, symbol: &str) -> Result<Option<PhysicsVector>, ClientError> {
        let raw: Option<String> = self.client.get(self.keys.physics_state(symbol)).await?;
        Ok(match raw {
            Some(s) => Some(serde_json::from_str(&s)?),
            None => None,
        })
    }
}
