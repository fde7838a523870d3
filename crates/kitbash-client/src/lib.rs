//! `kitbash-client`: what an application links to talk to a kitbash fleet.
//!
//! # Layout
//! - [`Producer`]: appends messages to the fleet's streams (ticks are routed to their partition).
//! - [`Reader`]: reads what the daemons wrote (physics state).
//! - [`reflex`]: seed 000's reflex path: record a query hit, the one-round-trip lookup, hats,
//!   grain import, `metrics_record_query`.
//! - [`ratelimit`]: exact sliding-window rate limiting, one script per check (seed 004).
//! - [`session`]: sessions with CSRF tokens (seed 004).
//! - [`cache`]: the memory-token and relevance-score caches (seed 004).
//! - [`memory`]: the most relevant memory tokens of a user and context, from the indexes the
//!   archive's indexer keeps (seed 004).
//! - [`array`](mod@array): n-dimensional arrays as `.npy` bytes, and their compression (seed 003).
//! - [`arrays`]: working memory, spike trains and attention weights in Redis (seed 003).
//! - [`families`]: memory statistics and clearing of a key family, by `SCAN`.
//! - [`retry`]: exponential backoff on connection errors only.
//!
//! Every type takes a connected `fred::prelude::Client` and a [`Keys`] from the caller; long
//! lived clients should come with a command timeout and a reconnect policy (the daemons use
//! `kitbash_runtime::redis::connect_client`).
//!
//! Producers never retry an `XADD` by themselves: fred's automatic retry after a reconnect
//! could append an entry twice. Every producer command is sent with `max_attempts = 1`; each
//! entry carries a random `mid`, a caller that retries after an error reuses it (see
//! [`Producer::publish_with_mid`] and [`Producer::publish_batch_with_mids`]), and consumers
//! drop duplicates.

pub mod array;
pub mod arrays;
pub mod cache;
pub mod families;
pub mod memory;
pub mod ratelimit;
pub mod retry;
pub mod session;

pub mod reflex;

use fred::prelude::*;
use fred::types::config::Options;
use fred::types::{Key, Value};
use kitbash_schema::messages::{EntityTarget, EntityUpdate, PhysicsVector, Tick};
use kitbash_schema::streams::{partition_of, tick_partition};
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
    /// Redis answered something this client cannot interpret.
    #[error("unexpected reply: {0}")]
    Reply(String),
    /// The caller's input was refused before anything was sent.
    #[error("invalid input: {0}")]
    Invalid(String),
    /// This Redis holds the reflex path in another layout than this process is configured for
    /// (`kitbash:reflex:layout`).
    #[error(
        "this Redis holds the reflex layout {stored:?} (kitbash:reflex:layout) but this process is configured for {configured:?}: set [reflex] layout/buckets to match, or use a fresh Redis"
    )]
    Layout {
        /// The layout recorded in Redis.
        stored: String,
        /// This process's layout.
        configured: String,
    },
    /// The value under an array key is not an array this client can read.
    #[error("{key}: {source}")]
    Array {
        /// The key read.
        key: String,
        /// What is wrong with its value.
        source: array::ArrayError,
    },
}

/// A fresh message id, unique per message: this process's random 64-bit prefix (16 hex
/// digits, drawn once) and a counter (hex). Unique across producers with the odds of two
/// processes drawing the same 64 bits, and compressible: in the archive's `mid` column (prefix
/// deltas) a producer's ids cost about a byte each, where 128 random bits cost 18.
pub fn new_mid() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static PREFIX: std::sync::LazyLock<u64> = std::sync::LazyLock::new(rand::random);
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    format!("{:016x}{n:x}", *PREFIX)
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
        Ok(self
            .client
            .with_options(&once())
            .xadd(self.keys.stream(stream), false, None, "*", fields)
            .await?)
    }

    /// Appends many messages to `stream` in one pipeline (the feed's hot path), each with a
    /// fresh `mid`. Returns ids. On an error the outcome of each entry is unknown; to retry
    /// without duplicates, use [`Producer::publish_batch_with_mids`] with the same `mid`s.
    pub async fn publish_batch<M: Message>(
        &self,
        stream: StreamName,
        msgs: &[M],
    ) -> Result<Vec<String>, ClientError> {
        let mids: Vec<String> = msgs.iter().map(|_| new_mid()).collect();
        self.publish_batch_with_mids(stream, msgs, &mids).await
    }

    /// Appends `msgs[i]` with `mids[i]` in one pipeline, sent once: fred does not replay it
    /// after a reconnect (`max_attempts = 1`), so a pipeline cut mid-way appends each entry
    /// at most once, and the caller's retry with the same `mid`s is dropped by consumers where
    /// it repeats an entry that did land.
    ///
    /// ```no_run
    /// # async fn demo(p: kitbash_client::Producer, ticks: Vec<kitbash_schema::messages::Tick>) -> Result<(), kitbash_client::ClientError> {
    /// use kitbash_schema::StreamName;
    /// let mids: Vec<String> = ticks.iter().map(|_| kitbash_client::new_mid()).collect();
    /// let ids = match p.publish_batch_with_mids(StreamName::Ticks(0), &ticks, &mids).await {
    ///     Ok(ids) => ids,
    ///     // Outcome unknown: send the same entries again with the same mids.
    ///     Err(_) => p.publish_batch_with_mids(StreamName::Ticks(0), &ticks, &mids).await?,
    /// };
    /// # let _ = ids; Ok(()) }
    /// ```
    pub async fn publish_batch_with_mids<M: Message>(
        &self,
        stream: StreamName,
        msgs: &[M],
        mids: &[String],
    ) -> Result<Vec<String>, ClientError> {
        if msgs.len() != mids.len() {
            return Err(ClientError::Invalid(format!(
                "{} messages but {} mids",
                msgs.len(),
                mids.len()
            )));
        }
        // `with_options(..).pipeline()` would deref to the plain client and drop the options:
        // build the pipeline on the optioned client so every XADD in it carries them.
        let pipe = fred::clients::Pipeline::from(self.client.with_options(&once()));
        let key = self.keys.stream(stream);
        for (m, mid) in msgs.iter().zip(mids) {
            let env = Envelope::msgpack(m)?.with_mid(mid.as_str());
            let _: () = pipe
                .xadd(key.as_str(), false, None, "*", fields_of(&env))
                .await?;
        }
        Ok(pipe.all().await?)
    }
}

/// Command options for writes that must not be replayed by fred after a reconnect.
fn once() -> Options {
    Options {
        max_attempts: Some(1),
        ..Default::default()
    }
}

impl Producer {
    /// The entity partition stream of `target` among `entity_partitions` (`[entity] partitions`).
    pub fn entity_stream(target: &EntityTarget, entity_partitions: u32) -> StreamName {
        StreamName::EntityPart(partition_of(&target.route_key(), entity_partitions))
    }

    /// Appends an entity update to its document's partition (`entity_partitions` must match
    /// `[entity] partitions`). Returns the entry id; the change is applied in stream order.
    pub async fn patch_entity(
        &self,
        update: &EntityUpdate,
        entity_partitions: u32,
    ) -> Result<String, ClientError> {
        self.publish(
            Self::entity_stream(&update.target, entity_partitions),
            update,
        )
        .await
    }

    /// [`Producer::patch_entity`] with the caller's `mid` (reuse it when retrying after an error).
    pub async fn patch_entity_with_mid(
        &self,
        update: &EntityUpdate,
        entity_partitions: u32,
        mid: &str,
    ) -> Result<String, ClientError> {
        self.publish_with_mid(
            Self::entity_stream(&update.target, entity_partitions),
            update,
            mid,
        )
        .await
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

    /// A quantum-memory document and its version (`None` when absent). One round trip.
    pub async fn get_entity(
        &self,
        target: &EntityTarget,
    ) -> Result<Option<(serde_json::Value, u64)>, ClientError> {
        let key = target.key(&self.keys);
        let pipe = self.client.pipeline();
        let _: () = pipe.get(key.as_str()).await?;
        let _: () = pipe
            .hget(self.keys.document_meta(&key), Keys::DOCUMENT_VERSION)
            .await?;
        let (raw, version): (Option<String>, Option<u64>) = pipe.all().await?;
        Ok(match raw {
            Some(s) => Some((serde_json::from_str(&s)?, version.unwrap_or(0))),
            None => None,
        })
    }
}
