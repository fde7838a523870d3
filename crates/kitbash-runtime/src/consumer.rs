//! The consumer-group loop every daemon runs: at-least-once delivery with idempotent effects.
//!
//! One [`StreamConsumer`] reads one stream as one consumer of one group:
//!
//! 1. create the group if missing (`XGROUP CREATE … MKSTREAM`, at `consumer.start`);
//! 2. re-read this consumer's own pending entries (`XREADGROUP … 0`) before anything new;
//! 3. read new entries in batches (`XREADGROUP … BLOCK … >`) on the blocking connection;
//! 4. every `claim_interval_ms`, take over entries other consumers left pending for longer than
//!    `claim_idle_ms` (`XAUTOCLAIM`), e.g. because their process was killed;
//! 5. decode each entry; undecodable entries and entries delivered more than `max_deliveries`
//!    times go to the stream's dead-letter stream with the reason;
//! 6. hand the decoded batch to the [`Handler`], which returns one [`Outcome`] per entry;
//! 7. acknowledge the batch in one `XACK` — together with its dead letters in one `MULTI`, which
//!    works on a cluster because a stream and its dead-letter stream share a hash tag.
//!
//! On shutdown the loop finishes the batch in hand, acknowledges it, and returns; the read in
//! flight is never cancelled (it returns within `block_ms`), so no entry is read and dropped.
//! `NOGROUP` (Redis restarted without persistence, or someone destroyed the group) recreates the
//! group at the last id this process saw and says so in a warning.

use std::collections::HashMap;
use std::future::Future;
use std::time::{Duration, Instant};

use fred::prelude::*;
use fred::types::Value;
use kitbash_schema::{Envelope, Keys, Message, StreamName};
use tokio_util::sync::CancellationToken;

use crate::backoff::Backoff;
use crate::config::ConsumerConfig;
use crate::entries::{self, StreamEntry};
use crate::error::RuntimeError;
use crate::health::Health;
use crate::metrics::Metrics;
use crate::redis::{Redis, command_for_key};

mod raw;
pub use raw::{Acks, RawConsumer, RawEntry, RawHandler, TakeError};

/// One decoded entry handed to a [`Handler`].
#[derive(Clone, Debug)]
pub struct Delivery<M> {
    /// Entry id in the stream (`ms-seq`): the natural idempotency key of its effects.
    pub id: String,
    /// The decoded, validated message.
    pub message: M,
    /// How many times the entry has been delivered (1 on the first delivery).
    pub deliveries: u64,
    /// The producer's message id, when it set one.
    pub mid: Option<String>,
}

/// What the handler decided for one entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Done: acknowledge.
    Ack,
    /// Failed for a reason of its own that may pass on a later delivery (a document that kept
    /// moving under other writers, a bank that kept changing): left pending, redelivered after
    /// `claim_idle_ms` (counting a delivery) and dead-lettered after `max_deliveries`.
    Retry(String),
    /// Failed because Redis cannot do it *now* (out of memory under `noeviction`, a lost
    /// connection, a failover — [`crate::redis::is_transient`]), nothing wrong with the entry.
    /// The loop holds it and reads nothing new: it is handed to the handler again under the
    /// runtime's [`Backoff`], with the same delivery count, its idle time refreshed so no other
    /// consumer reclaims it, and the consumer reported not ready (`/readyz` 503) until it
    /// passes. Never dead-lettered; on shutdown it stays pending for the next consumer.
    Transient(String),
    /// Can never succeed: move to the dead-letter stream with this reason, then acknowledge.
    Dead(String),
}

impl Outcome {
    /// The outcome of an entry whose effect failed with `e`: [`Outcome::Transient`] when Redis
    /// could not do it now ([`RuntimeError::is_transient`]), [`Outcome::Retry`] otherwise.
    pub fn from_error(e: &RuntimeError) -> Outcome {
        if e.is_transient() {
            Outcome::Transient(e.to_string())
        } else {
            Outcome::Retry(e.to_string())
        }
    }
}

/// Processes batches of decoded messages. Effects must be idempotent per entry id: after a
/// crash an entry can be delivered again.
pub trait Handler<M>: Send {
    /// Handles `batch`; returns one outcome per delivery, in order. A missing outcome counts as
    /// `Retry`.
    fn handle(&mut self, batch: Vec<Delivery<M>>) -> impl Future<Output = Vec<Outcome>> + Send;
}

/// Counters of one loop's life, returned when it stops.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LoopStats {
    /// Entries acknowledged after the handler said `Ack`.
    pub acked: u64,
    /// Entries moved to the dead-letter stream.
    pub dead: u64,
    /// Entries left pending for a retry.
    pub retried: u64,
    /// Entries taken over from other consumers.
    pub reclaimed: u64,
    /// Entries found deleted while pending (acknowledged, nothing to do).
    pub vanished: u64,
    /// Entries dropped because another entry carried the same producer `mid` first.
    pub duplicates: u64,
    /// Times the group had to be recreated after NOGROUP.
    pub group_recreated: u64,
    /// Times an entry was handed to the handler again after [`Outcome::Transient`].
    pub transient: u64,
}

/// Where the loop reads next.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Phase {
    /// Re-reading own pending entries after this id.
    Own(String),
    /// Reading new entries.
    New,
}

/// One consumer of one group on one stream. See the module docs for the protocol.
pub struct StreamConsumer {
    /// The command connection.
    redis: Redis,
    /// This loop's own connection for `XREADGROUP … BLOCK` (a `clone_new` of the command
    /// client, connected when the loop runs): a block never queues other commands behind it.
    blocking: crate::resp::StreamReader,
    /// The readiness check is false for a reason other than the group (a held batch, failing
    /// acknowledgements); set true again after the next successful step.
    degraded: bool,
    /// Logical stream, for logs, metrics and dead letters.
    stream: StreamName,
    /// Stream key.
    key: String,
    /// Dead-letter stream key.
    dead_key: String,
    /// Group name.
    group: String,
    /// This consumer's unique name (see [`crate::daemon::instance_name`]).
    consumer: String,
    /// Loop settings.
    cfg: ConsumerConfig,
    /// Metric registry.
    metrics: Metrics,
    /// Readiness registry: the loop's check is true while its group exists.
    health: Health,
    /// Highest id this process has seen; where a lost group is recreated.
    last_seen: Option<String>,
    /// XAUTOCLAIM scan position.
    claim_cursor: String,
    /// Counters.
    stats: LoopStats,
    /// The daemon's stop signal: bounds the acknowledgement retries.
    shutdown: CancellationToken,
    /// Producer mid → first entry id, for this group (see [`crate::dedup`]).
    mids_key: String,
    /// The same mids by entry time (the window's eviction order).
    mids_order_key: String,
}

impl std::fmt::Debug for StreamConsumer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StreamConsumer")
            .field("key", &self.key)
            .field("group", &self.group)
            .field("consumer", &self.consumer)
            .finish_non_exhaustive()
    }
}

impl StreamConsumer {
    /// A consumer of `group` on `stream`, named `consumer` (unique per process).
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        redis: Redis,
        keys: &Keys,
        stream: StreamName,
        group: impl Into<String>,
        consumer: impl Into<String>,
        cfg: ConsumerConfig,
        metrics: Metrics,
        health: Health,
    ) -> Self {
        let group: String = group.into();
        Self {
            blocking: crate::resp::StreamReader::new(redis.client.clone_new()),
            degraded: false,
            redis,
            stream,
            key: keys.stream(stream),
            dead_key: keys.dead_letter(stream),
            mids_key: keys.mids(stream, &group),
            mids_order_key: keys.mids_order(stream, &group),
            shutdown: CancellationToken::new(),
            group,
            consumer: consumer.into(),
            cfg,
            metrics,
            health,
            last_seen: None,
            claim_cursor: "0-0".into(),
            stats: LoopStats::default(),
        }
    }

    fn check_name(&self) -> String {
        format!("group {} on {}", self.group, self.stream.logical())
    }

    /// Creates the group when missing, at `position`. Returns whether it was created.
    async fn create_group(&self, position: &str) -> Result<bool, RuntimeError> {
        let cmd = command_for_key("XGROUP", &self.key, false);
        let args: Vec<Value> = vec![
            "CREATE".into(),
            self.key.as_str().into(),
            self.group.as_str().into(),
            position.into(),
            "MKSTREAM".into(),
        ];
        match self.redis.client.custom::<Value, Value>(cmd, args).await {
            Ok(_) => Ok(true),
            Err(e) if e.details().contains("BUSYGROUP") => Ok(false),
            Err(e) => Err(e.into()),
        }
    }

    async fn ensure_group(&mut self) -> Result<(), RuntimeError> {
        let created = self.create_group(&self.cfg.start.clone()).await?;
        if created {
            tracing::info!(stream = %self.stream, group = %self.group, start = %self.cfg.start,
                "created consumer group");
        }
        self.health.set(self.check_name(), true);
        Ok(())
    }

    /// NOGROUP: the group vanished under us. Recreate it where this process last read, never
    /// silently at `0` (reprocess everything) or `$` (skip everything).
    async fn recover_group(&mut self) -> Result<(), RuntimeError> {
        self.health.set(self.check_name(), false);
        let (position, why) = match &self.last_seen {
            // The stream itself was lost too (deleted, or Redis restored from an older file):
            // its entries may now carry ids below what we saw, which a group created at our
            // last id would never deliver. Read the new stream from its start.
            Some(id) if self.stream_restarted_below(id).await? => (
                "0".to_owned(),
                "the stream is new or its ids restarted below the last id this process saw",
            ),
            Some(id) => (id.clone(), "the last id this process saw"),
            None => (
                self.cfg.start.clone(),
                "consumer.start (this process saw no entry yet)",
            ),
        };
        let created = self.create_group(&position).await?;
        self.stats.group_recreated += 1;
        self.metrics.inc(
            "kitbash_group_recreated_total",
            "Consumer groups recreated after NOGROUP.",
            &[("stream", &self.stream.logical()), ("group", &self.group)],
            1,
        );
        if created {
            tracing::warn!(stream = %self.stream, group = %self.group, position = %position, reason = why,
                "consumer group was missing (Redis restarted without persistence, or the group was destroyed); recreated it");
        }
        self.health.set(self.check_name(), true);
        Ok(())
    }

    /// Whether the stream is missing, or its newest id ever generated is below `seen`: then
    /// the stream we read before is gone and this one started over.
    async fn stream_restarted_below(&self, seen: &str) -> Result<bool, RuntimeError> {
        let cmd = command_for_key("XINFO", &self.key, false);
        let args: Vec<Value> = vec!["STREAM".into(), self.key.as_str().into()];
        let info: Value = match self.redis.client.custom(cmd, args).await {
            Ok(v) => v,
            Err(e) if e.details().contains("no such key") => return Ok(true),
            Err(e) => return Err(e.into()),
        };
        let last = match &info {
            Value::Array(kv) => kv
                .chunks(2)
                .find(|p| {
                    p.first().and_then(entries::string_of).as_deref() == Some("last-generated-id")
                })
                .and_then(|p| p.get(1).and_then(entries::string_of)),
            Value::Map(m) => m
                .clone()
                .inner()
                .iter()
                .find(|(k, _)| k.as_str() == Some("last-generated-id"))
                .and_then(|(_, v)| entries::string_of(v)),
            _ => None,
        };
        Ok(last.is_none_or(|last| entries::id_cmp(&last, seen).is_lt()))
    }

    async fn read(
        &mut self,
        phase: &Phase,
        count: usize,
    ) -> Result<Vec<StreamEntry>, RuntimeError> {
        let (id, block) = match phase {
            Phase::Own(after) => (after.clone(), None),
            Phase::New => (">".to_owned(), Some(self.cfg.block_ms)),
        };
        let count = count.to_string();
        let mut args: Vec<&str> = vec!["GROUP", &self.group, &self.consumer, "COUNT", &count];
        let block_ms = block.map(|ms| ms.to_string());
        if let Some(ms) = &block_ms {
            args.extend(["BLOCK", ms]);
        }
        args.extend(["STREAMS", &self.key, &id]);
        if block.is_some() {
            // The command timeout must outlast the block itself.
            let timeout = Duration::from_millis(self.cfg.block_ms + 5_000);
            self.blocking
                .read("XREADGROUP", &self.key, &args, true, timeout)
                .await
        } else {
            let cmd = command_for_key("XREADGROUP", &self.key, false);
            let args: Vec<Value> = args.iter().map(|a| Value::from(*a)).collect();
            let reply: Value = self.redis.client.custom(cmd, args).await?;
            entries::parse_xread(&reply)
        }
    }

    async fn autoclaim(&mut self) -> Result<Vec<StreamEntry>, RuntimeError> {
        let cmd = command_for_key("XAUTOCLAIM", &self.key, false);
        let args: Vec<Value> = vec![
            self.key.as_str().into(),
            self.group.as_str().into(),
            self.consumer.as_str().into(),
            (self.cfg.claim_idle_ms as i64).into(),
            self.claim_cursor.as_str().into(),
            "COUNT".into(),
            (self.cfg.batch as i64).into(),
        ];
        let reply: Value = self.redis.client.custom(cmd, args).await?;
        let claim = entries::parse_autoclaim(&reply)?;
        self.claim_cursor = claim.cursor;
        if !claim.deleted.is_empty() {
            // Redis already removed them from the PEL; nothing is left to process or acknowledge.
            tracing::warn!(stream = %self.stream, group = %self.group, count = claim.deleted.len(),
                "pending entries were deleted from the stream before being processed");
            self.stats.vanished += claim.deleted.len() as u64;
        }
        if !claim.entries.is_empty() {
            tracing::info!(stream = %self.stream, group = %self.group, count = claim.entries.len(),
                "reclaimed entries abandoned by other consumers");
            self.stats.reclaimed += claim.entries.len() as u64;
            self.metrics.inc(
                "kitbash_reclaimed_total",
                "Entries taken over from stale consumers (XAUTOCLAIM).",
                &[("stream", &self.stream.logical()), ("group", &self.group)],
                claim.entries.len() as u64,
            );
        }
        Ok(claim.entries)
    }

    /// Entry `id` as it is in the stream (`None`: deleted or trimmed).
    async fn entry(&self, id: &str) -> Result<Option<StreamEntry>, RuntimeError> {
        let cmd = command_for_key("XRANGE", &self.key, false);
        let args: Vec<Value> = vec![
            self.key.as_str().into(),
            id.into(),
            id.into(),
            "COUNT".into(),
            1i64.into(),
        ];
        let reply: Value = self.redis.client.custom(cmd, args).await?;
        Ok(entries::parse_entries("XRANGE", &reply)?
            .into_iter()
            .find(|e| e.id == id && e.fields.is_some()))
    }

    /// Delivery counts of own pending entries in `[first, last]`.
    async fn delivery_counts(
        &self,
        first: &str,
        last: &str,
        n: usize,
    ) -> Result<HashMap<String, u64>, RuntimeError> {
        let cmd = command_for_key("XPENDING", &self.key, false);
        let args: Vec<Value> = vec![
            self.key.as_str().into(),
            self.group.as_str().into(),
            first.into(),
            last.into(),
            ((n * 4 + 16) as i64).into(),
            self.consumer.as_str().into(),
        ];
        let reply: Value = self.redis.client.custom(cmd, args).await?;
        Ok(entries::parse_pending(&reply)?
            .into_iter()
            .map(|r| (r.id, r.deliveries))
            .collect())
    }

    /// [`Self::process`], keeping the batch in hand while it fails transiently before the
    /// handler has decided (the delivery counts, the `mid` check or the acknowledgement could
    /// not reach Redis): the same entries are processed again under the backoff — never left
    /// for `XAUTOCLAIM`, which would count a delivery and end in a dead letter. The handler may
    /// see an entry twice; its effects are idempotent per entry id.
    async fn process_held<M, H>(
        &mut self,
        batch: Vec<StreamEntry>,
        fresh: bool,
        handler: &mut H,
    ) -> Result<(), RuntimeError>
    where
        M: Message + Send,
        H: Handler<M>,
    {
        let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(5));
        let refresh_every = Duration::from_millis((self.cfg.claim_idle_ms / 3).max(100));
        let mut refreshed = Instant::now();
        loop {
            match self.process(batch.clone(), fresh, handler).await {
                Err(e) if e.is_transient() && !self.shutdown.is_cancelled() => {
                    if backoff.attempts() == 0 {
                        tracing::warn!(stream = %self.stream, group = %self.group, error = %e,
                            entries = batch.len(), "transient failure: holding the batch and retrying it");
                    }
                    self.health.set(self.check_name(), false);
                    self.degraded = true;
                    if !backoff.wait(&self.shutdown).await {
                        return Err(e);
                    }
                    if refreshed.elapsed() >= refresh_every {
                        let _ = self.refresh_idle(&batch).await;
                        refreshed = Instant::now();
                    }
                }
                r => return r,
            }
        }
    }

    /// Decodes, hands to the handler, dead-letters and acknowledges one batch.
    async fn process<M, H>(
        &mut self,
        batch: Vec<StreamEntry>,
        fresh: bool,
        handler: &mut H,
    ) -> Result<(), RuntimeError>
    where
        M: Message + Send,
        H: Handler<M>,
    {
        let (Some(first), Some(last)) = (batch.first(), batch.last()) else {
            return Ok(());
        };
        let (started, entries) = (Instant::now(), batch.len());
        if self
            .last_seen
            .as_deref()
            .is_none_or(|s| entries::id_cmp(&last.id, s).is_gt())
        {
            self.last_seen = Some(last.id.clone());
        }
        let counts = if fresh {
            HashMap::new()
        } else {
            self.delivery_counts(&first.id, &last.id, batch.len())
                .await?
        };
        let mut ack: Vec<String> = Vec::with_capacity(batch.len());
        let mut dead: Vec<(StreamEntry, String, u64)> = Vec::new();
        let mut deliveries: Vec<Delivery<M>> = Vec::with_capacity(batch.len());
        let mut handed: Vec<StreamEntry> = Vec::with_capacity(batch.len());
        for entry in batch {
            let n = counts.get(&entry.id).copied().unwrap_or(1);
            if entry.fields.is_none() {
                self.stats.vanished += 1;
                ack.push(entry.id);
                continue;
            }
            if n > self.cfg.max_deliveries {
                let reason = format!(
                    "delivered {n} times without acknowledgement (consumer.max_deliveries = {})",
                    self.cfg.max_deliveries
                );
                dead.push((entry, reason, n));
                continue;
            }
            let decoded = Envelope::from_fields(entry.pairs()).and_then(|env| {
                let mid = env.mid.clone();
                env.decode::<M>().map(|m| (m, mid))
            });
            match decoded {
                Ok((message, mid)) => {
                    deliveries.push(Delivery {
                        id: entry.id.clone(),
                        message,
                        deliveries: n,
                        mid,
                    });
                    handed.push(entry);
                }
                Err(e) => dead.push((entry, e.to_string(), n)),
            }
        }

        if self.cfg.dedup_window > 0 && deliveries.iter().any(|d| d.mid.is_some()) {
            let first = crate::dedup::admit(
                &self.redis.client,
                &self.mids_key,
                &self.mids_order_key,
                self.cfg.dedup_window,
                crate::dedup::pairs(&deliveries),
            )
            .await?;
            let mut kept = Vec::with_capacity(deliveries.len());
            let mut kept_entries = Vec::with_capacity(handed.len());
            for ((d, entry), admit) in deliveries.into_iter().zip(handed).zip(first) {
                if admit {
                    kept.push(d);
                    kept_entries.push(entry);
                } else {
                    tracing::info!(stream = %self.stream, id = %entry.id, mid = ?d.mid,
                        "dropped a re-sent entry (its producer mid was applied already)");
                    self.stats.duplicates += 1;
                    self.metrics.inc(
                        "kitbash_duplicates_total",
                        "Re-sent entries dropped by their producer message id.",
                        &[("stream", &self.stream.logical()), ("group", &self.group)],
                        1,
                    );
                    ack.push(entry.id);
                }
            }
            deliveries = kept;
            handed = kept_entries;
        }

        let held = self
            .hand(handler, deliveries, handed, &counts, &mut ack, &mut dead)
            .await;
        let n_dead = dead.len() as u64;
        self.commit(ack, dead).await?;
        self.stats.dead += n_dead;
        if !held.is_empty() {
            self.hold::<M, H>(held, &counts, handler).await?;
        }
        let stream = self.stream.logical();
        let labels = [("stream", stream.as_str()), ("group", self.group.as_str())];
        self.metrics.observe_batch(&labels, started, entries);
        Ok(())
    }

    /// Hands `deliveries` (decoded from `handed`) to the handler and sorts the outcomes into
    /// `ack` and `dead`; returns the entries it said were [`Outcome::Transient`].
    async fn hand<M, H>(
        &mut self,
        handler: &mut H,
        deliveries: Vec<Delivery<M>>,
        handed: Vec<StreamEntry>,
        counts: &HashMap<String, u64>,
        ack: &mut Vec<String>,
        dead: &mut Vec<(StreamEntry, String, u64)>,
    ) -> Vec<StreamEntry>
    where
        M: Message + Send,
        H: Handler<M>,
    {
        let mut held = Vec::new();
        if deliveries.is_empty() {
            return held;
        }
        let expected = deliveries.len();
        let outcomes = handler.handle(deliveries).await;
        if outcomes.len() != expected {
            tracing::error!(stream = %self.stream, expected, got = outcomes.len(),
                "handler returned the wrong number of outcomes; the rest stay pending");
        }
        let mut outcomes = outcomes.into_iter();
        for entry in handed {
            match outcomes.next() {
                Some(Outcome::Ack) => {
                    self.stats.acked += 1;
                    ack.push(entry.id);
                }
                Some(Outcome::Dead(reason)) => {
                    let n = counts.get(&entry.id).copied().unwrap_or(1);
                    dead.push((entry, reason, n));
                }
                Some(Outcome::Retry(reason)) => {
                    tracing::warn!(stream = %self.stream, id = %entry.id, %reason, "entry will be retried");
                    self.stats.retried += 1;
                }
                Some(Outcome::Transient(reason)) => {
                    if held.is_empty() {
                        tracing::warn!(stream = %self.stream, group = %self.group, id = %entry.id, %reason,
                            "transient failure: holding the batch and retrying it (nothing new is read meanwhile)");
                    }
                    held.push(entry);
                }
                None => self.stats.retried += 1,
            }
        }
        held
    }

    /// Holds entries that failed transiently: hands them to the handler again under the
    /// backoff until none is transient (or shutdown), reading nothing new, reporting not ready
    /// meanwhile, and refreshing their idle time so no other consumer reclaims them. Their
    /// delivery count does not move: they are never re-read.
    async fn hold<M, H>(
        &mut self,
        mut held: Vec<StreamEntry>,
        counts: &HashMap<String, u64>,
        handler: &mut H,
    ) -> Result<(), RuntimeError>
    where
        M: Message + Send,
        H: Handler<M>,
    {
        let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(5));
        let refresh_every = Duration::from_millis((self.cfg.claim_idle_ms / 3).max(100));
        let mut refreshed = Instant::now();
        let check = self.check_name();
        self.health.set(&check, false);
        self.degraded = true;
        let stream = self.stream.logical();
        while !held.is_empty() {
            self.metrics.inc(
                "kitbash_transient_retries_total",
                "Entries handed to the handler again after a transient failure.",
                &[("stream", stream.as_str()), ("group", self.group.as_str())],
                held.len() as u64,
            );
            if !backoff.wait(&self.shutdown).await {
                tracing::info!(stream = %self.stream, held = held.len(),
                    "stopping with entries held after a transient failure; they stay pending for the next consumer");
                return Ok(());
            }
            if refreshed.elapsed() >= refresh_every {
                if let Err(e) = self.refresh_idle(&held).await {
                    tracing::warn!(stream = %self.stream, error = %e, "cannot refresh the idle time of held entries");
                }
                refreshed = Instant::now();
            }
            self.stats.transient += held.len() as u64;
            let mut deliveries = Vec::with_capacity(held.len());
            let mut handed = Vec::with_capacity(held.len());
            let (mut ack, mut dead) = (Vec::new(), Vec::new());
            for entry in held {
                let n = counts.get(&entry.id).copied().unwrap_or(1);
                // They decoded before; decoding is deterministic.
                match Envelope::from_fields(entry.pairs()).and_then(|env| {
                    let mid = env.mid.clone();
                    env.decode::<M>().map(|m| (m, mid))
                }) {
                    Ok((message, mid)) => {
                        deliveries.push(Delivery {
                            id: entry.id.clone(),
                            message,
                            deliveries: n,
                            mid,
                        });
                        handed.push(entry);
                    }
                    Err(e) => dead.push((entry, e.to_string(), n)),
                }
            }
            held = self
                .hand(handler, deliveries, handed, counts, &mut ack, &mut dead)
                .await;
            let n_dead = dead.len() as u64;
            self.commit(ack, dead).await?;
            self.stats.dead += n_dead;
        }
        tracing::info!(stream = %self.stream, group = %self.group, attempts = backoff.attempts(),
            "held batch went through after a transient failure");
        Ok(())
    }

    /// `XCLAIM … 0 ids JUSTID` on our own held entries: resets their idle time, so other
    /// consumers' `XAUTOCLAIM` leaves them alone, without counting a delivery.
    async fn refresh_idle(&self, held: &[StreamEntry]) -> Result<(), RuntimeError> {
        self.refresh_idle_ids(held.iter().map(|e| e.id.as_str()))
            .await
    }

    /// [`Self::refresh_idle`] by id, in commands of at most 1,000 ids.
    async fn refresh_idle_ids<'a>(
        &self,
        ids: impl Iterator<Item = &'a str>,
    ) -> Result<(), RuntimeError> {
        let ids: Vec<&str> = ids.collect();
        for chunk in ids.chunks(1_000) {
            let cmd = command_for_key("XCLAIM", &self.key, false);
            let mut args: Vec<Value> = vec![
                self.key.as_str().into(),
                self.group.as_str().into(),
                self.consumer.as_str().into(),
                0i64.into(),
            ];
            args.extend(chunk.iter().map(|id| Value::from(*id)));
            args.push("JUSTID".into());
            let _: Value = self.redis.client.custom(cmd, args).await?;
        }
        Ok(())
    }

    /// XACK (and dead-letter XADDs in the same MULTI). Retried on connection errors: both are
    /// safe to repeat (a repeated dead letter is a duplicate report, never a lost entry).
    async fn commit(
        &mut self,
        ack: Vec<String>,
        dead: Vec<(StreamEntry, String, u64)>,
    ) -> Result<(), RuntimeError> {
        let labels = [
            ("stream", self.stream.logical()),
            ("group", self.group.clone()),
        ];
        let labels: Vec<(&str, &str)> = labels.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let n_ack = ack.len() as u64;
        let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(2));
        loop {
            let result = if dead.is_empty() {
                if ack.is_empty() {
                    return Ok(());
                }
                self.redis
                    .client
                    .xack::<u64, _, _, _>(self.key.as_str(), self.group.as_str(), ack.clone())
                    .await
                    .map(|_| ())
            } else {
                self.commit_dead(&ack, &dead).await
            };
            // Retried while the daemon runs — for as long as the failure is transient (Redis
            // refusing writes: a dead letter is an `XADD`), 20 times otherwise — because a blip
            // must not cause redelivery; once shutdown has begun, give up at once: the entries
            // stay pending and are redelivered, which the idempotent effects absorb, and the
            // drain stays inside the grace period.
            match result {
                Ok(()) => break,
                // The group is gone (and its pending list with it): nothing to acknowledge;
                // the loop recreates the group where this process last read.
                Err(e) if e.details().contains("NOGROUP") => return Err(e.into()),
                Err(e)
                    if (crate::redis::is_transient(&e) || backoff.attempts() < 20)
                        && !self.shutdown.is_cancelled() =>
                {
                    if backoff.attempts() == 3 {
                        self.health.set(self.check_name(), false);
                        self.degraded = true;
                    }
                    tracing::warn!(stream = %self.stream, error = %e, attempt = backoff.attempts() + 1, "acknowledgement failed; retrying");
                    backoff.wait(&self.shutdown).await;
                }
                Err(e) => {
                    tracing::warn!(stream = %self.stream, error = %e, entries = n_ack,
                        "acknowledgement failed; leaving the entries pending for redelivery");
                    return Err(e.into());
                }
            }
        }
        for (entry, reason, _) in &dead {
            tracing::warn!(stream = %self.stream, group = %self.group, id = %entry.id, %reason,
                dead_letter = %self.dead_key, "entry moved to the dead-letter stream");
        }
        self.metrics.inc(
            "kitbash_entries_acked_total",
            "Entries processed and acknowledged.",
            &labels,
            n_ack,
        );
        if !dead.is_empty() {
            self.metrics.inc(
                "kitbash_dead_letters_total",
                "Entries moved to a dead-letter stream.",
                &labels,
                dead.len() as u64,
            );
        }
        Ok(())
    }

    async fn commit_dead(
        &self,
        ack: &[String],
        dead: &[(StreamEntry, String, u64)],
    ) -> Result<(), fred::error::Error> {
        let tx = self.redis.client.multi();
        let mut ids: Vec<String> = ack.to_vec();
        for (entry, reason, n) in dead {
            let letter = crate::dead::letter(
                self.stream,
                entry,
                reason.clone(),
                &self.group,
                &self.consumer,
                *n,
            );
            let mut words = crate::dead::xadd_words(&self.dead_key, &letter).into_iter();
            let name = words.next();
            debug_assert!(name.is_some());
            let cmd = command_for_key("XADD", &self.dead_key, false);
            tx.custom::<Value, Value>(cmd, words.collect()).await?;
            ids.push(entry.id.clone());
        }
        tx.xack::<Value, _, _, _>(self.key.as_str(), self.group.as_str(), ids)
            .await?;
        tx.exec::<Value>(true).await?;
        Ok(())
    }

    /// Runs until `shutdown` is cancelled, then finishes the batch in hand and returns.
    pub async fn run<M, H>(mut self, mut handler: H, shutdown: CancellationToken) -> LoopStats
    where
        M: Message + Send,
        H: Handler<M>,
    {
        self.shutdown = shutdown.clone();
        self.blocking.connect_fred();
        let mut backoff = Backoff::default();
        // Create the group before anything else; retry while Redis is away.
        while !shutdown.is_cancelled() {
            match self.ensure_group().await {
                Ok(()) => break,
                Err(e) => {
                    self.health.set(self.check_name(), false);
                    tracing::warn!(stream = %self.stream, error = %e, "cannot create consumer group yet");
                    backoff.wait(&shutdown).await;
                }
            }
        }
        let mut phase = Phase::Own("0".into());
        let mut next_claim = Instant::now();
        // One round is a blocking read of at most block_ms and its batch; a handler that never
        // returns stops the beats and so systemd's watchdog.
        let beat = format!("consume {} as {}", self.stream, self.group);
        let cadence = Duration::from_millis(self.cfg.block_ms);
        while !shutdown.is_cancelled() {
            self.health.beat(&beat, cadence);
            let step = self.step(&mut phase, &mut next_claim, &mut handler).await;
            match step {
                Ok(()) => {
                    backoff.reset();
                    if self.degraded {
                        self.degraded = false;
                        self.health.set(self.check_name(), true);
                    }
                }
                Err(e) if e.is_nogroup() => {
                    if let Err(e) = self.recover_group().await {
                        tracing::warn!(stream = %self.stream, error = %e, "cannot recreate consumer group yet");
                        backoff.wait(&shutdown).await;
                    }
                    phase = Phase::New;
                }
                Err(e) => {
                    tracing::warn!(stream = %self.stream, group = %self.group, error = %e, "consumer loop error; backing off");
                    backoff.wait(&shutdown).await;
                }
            }
        }
        self.health.forget_beat(&beat);
        self.leave().await;
        self.blocking.quit().await;
        tracing::info!(stream = %self.stream, group = %self.group, stats = ?self.stats, "consumer loop stopped");
        self.stats
    }

    async fn step<M, H>(
        &mut self,
        phase: &mut Phase,
        next_claim: &mut Instant,
        handler: &mut H,
    ) -> Result<(), RuntimeError>
    where
        M: Message + Send,
        H: Handler<M>,
    {
        if Instant::now() >= *next_claim {
            let claimed = self.autoclaim().await?;
            if self.claim_cursor == "0-0" {
                *next_claim = Instant::now() + Duration::from_millis(self.cfg.claim_interval_ms);
                self.forget_dead_consumers().await?;
            }
            if !claimed.is_empty() {
                return self.process_held(claimed, false, handler).await;
            }
        }
        let current = phase.clone();
        let batch = self.read(&current, self.cfg.batch).await?;
        match current {
            Phase::Own(_) => {
                match batch.last() {
                    None => *phase = Phase::New,
                    Some(last) => *phase = Phase::Own(last.id.clone()),
                }
                if !batch.is_empty() {
                    tracing::info!(stream = %self.stream, count = batch.len(), "re-processing own pending entries");
                }
                self.process_held(batch, false, handler).await
            }
            Phase::New => self.process_held(batch, true, handler).await,
        }
    }

    /// Deletes consumers that hold nothing and have been idle for `forget_idle_ms`: names of
    /// processes that died (their entries were reclaimed) would otherwise pile up in the group.
    async fn forget_dead_consumers(&self) -> Result<(), RuntimeError> {
        let cmd = command_for_key("XINFO", &self.key, false);
        let args: Vec<Value> = vec![
            "CONSUMERS".into(),
            self.key.as_str().into(),
            self.group.as_str().into(),
        ];
        let reply: Value = self.redis.client.custom(cmd, args).await?;
        let Value::Array(consumers) = reply else {
            return Ok(());
        };
        for c in consumers {
            let fields: std::collections::HashMap<String, Value> = match c {
                Value::Array(kv) => kv
                    .chunks(2)
                    .filter_map(|p| match p {
                        [k, v] => entries::string_of(k).map(|k| (k, v.clone())),
                        _ => None,
                    })
                    .collect(),
                _ => continue,
            };
            let int = |k: &str| match fields.get(k) {
                Some(Value::Integer(n)) => *n,
                _ => -1,
            };
            let Some(name) = fields.get("name").and_then(entries::string_of) else {
                continue;
            };
            if name != self.consumer
                && int("pending") == 0
                && int("idle") >= self.cfg.forget_idle_ms as i64
                && forget_if_idle(
                    &self.redis.client,
                    &self.key,
                    &self.group,
                    &name,
                    self.cfg.forget_idle_ms,
                )
                .await?
            {
                tracing::info!(stream = %self.stream, group = %self.group, consumer = %name,
                    "deleted an idle consumer with nothing pending");
            }
        }
        Ok(())
    }

    /// On the way out: delete this consumer from the group when it holds nothing pending, so
    /// names of finished processes do not pile up. Entries it still holds stay for XAUTOCLAIM.
    async fn leave(&self) {
        let pending = self.delivery_counts("-", "+", 0).await;
        if let Ok(p) = pending {
            if p.is_empty() {
                let _ = self
                    .redis
                    .client
                    .xgroup_delconsumer::<Value, _, _, _>(
                        self.key.as_str(),
                        self.group.as_str(),
                        self.consumer.as_str(),
                    )
                    .await;
            } else {
                tracing::warn!(stream = %self.stream, pending = p.len(),
                    "leaving entries pending for other consumers to reclaim");
            }
        }
    }
}

/// Deletes consumer `name` from `group` if, at that instant, it holds no pending entry and has
/// been idle for `min_idle_ms` — checked and deleted in one script, so an entry delivered to it
/// between a check and a delete can never be destroyed with it (`XGROUP DELCONSUMER` drops the
/// consumer's pending entries). Returns whether it was deleted.
pub async fn forget_if_idle(
    client: &Client,
    key: &str,
    group: &str,
    name: &str,
    min_idle_ms: u64,
) -> Result<bool, RuntimeError> {
    let n: i64 = FORGET_SCRIPT
        .evalsha_with_reload(
            client,
            vec![key.to_owned()],
            vec![
                Value::from(group),
                Value::from(name),
                Value::from(min_idle_ms as i64),
            ],
        )
        .await?;
    Ok(n == 1)
}

static FORGET_SCRIPT: std::sync::LazyLock<fred::types::scripts::Script> =
    std::sync::LazyLock::new(|| fred::types::scripts::Script::from_lua(FORGET));

const FORGET: &str = r#"
local pending = redis.call('XPENDING', KEYS[1], ARGV[1], '-', '+', 1, ARGV[2])
if #pending > 0 then return 0 end
for _, c in ipairs(redis.call('XINFO', 'CONSUMERS', KEYS[1], ARGV[1])) do
  local name, idle
  for i = 1, #c, 2 do
    if c[i] == 'name' then name = c[i + 1] elseif c[i] == 'idle' then idle = c[i + 1] end
  end
  if name == ARGV[2] then
    if idle and idle >= tonumber(ARGV[3]) then
      redis.call('XGROUP', 'DELCONSUMER', KEYS[1], ARGV[1], ARGV[2])
      return 1
    end
    return 0
  end
end
return 0
"#;
