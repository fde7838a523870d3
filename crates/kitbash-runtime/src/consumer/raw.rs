//! Raw group consumption with deferred acknowledgement, for a consumer that makes entries
//! durable somewhere else (the archive's files) before they may leave the pending list.
//!
//! A [`RawConsumer`] reads one stream through one group like [`StreamConsumer`] — the group
//! created when missing, `XAUTOCLAIM` of what dead consumers left, `NOGROUP` recovery, dead
//! letters after `max_deliveries` — but hands entries over **as they are in Redis**: any
//! `type`, undecodable ones included, no producer-`mid` de-duplication (an archive keeps
//! everything that was written). Nothing is acknowledged when [`RawHandler::take`] returns;
//! the handler acknowledges later through [`Acks`], once the entries are durable, from the
//! loop's task or any other (an fsync on a blocking thread).
//!
//! Until then the entries are *held*: delivered, pending in Redis, and kept from being
//! reclaimed by other consumers — every `claim_idle_ms / 3` the loop resets their idle time
//! with `XCLAIM … 0 … JUSTID`, which counts no delivery. At `max_held` held entries it reads
//! nothing new until acknowledgements arrive (backpressure instead of unbounded memory).
//!
//! A [`TakeError::Transient`] from `take` keeps the batch: the loop hands the same entries to
//! `take` again under the runtime's [`Backoff`], reads nothing new and reports not ready
//! meanwhile; the delivery count does not move. [`RawHandler::tick`] runs after every step (at
//! least every `block_ms`), for time-based flushing; [`RawHandler::flush`] runs once on the way
//! out, before the last acknowledgements are sent. What is still held then stays pending and
//! comes back to another consumer by `XAUTOCLAIM` after `claim_idle_ms`: the handler must
//! tolerate seeing an entry again (an archive de-duplicates by entry id).

use std::collections::HashMap;
use std::future::Future;
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::{LoopStats, Phase, StreamConsumer};
use crate::backoff::Backoff;
use crate::entries::{self, StreamEntry};
use crate::error::RuntimeError;

/// One entry as it is in the stream.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RawEntry {
    /// Entry id (`ms-seq`): the key to acknowledge it by, and to de-duplicate redeliveries.
    pub id: String,
    /// Field/value pairs in `XADD` order, undecoded.
    pub fields: Vec<(Bytes, Bytes)>,
    /// How many times the entry has been delivered (1 on the first delivery).
    pub deliveries: u64,
}

/// What the handler said about held entries.
#[derive(Debug)]
enum Settle {
    /// Durable: acknowledge.
    Ack(Vec<String>),
    /// Can never be kept: dead-letter with the reason, then acknowledge.
    Dead(String, String),
}

/// The handle a [`RawHandler`] settles held entries with. Cloneable and `Send`: an
/// acknowledgement may come from another task. Settling is asynchronous — the loop sends the
/// `XACK` (or the dead letter) on its next step, within `block_ms` — and ids that are not held
/// (already settled, or unknown) are ignored. After the loop has stopped, settling does
/// nothing: the entries stay pending and are redelivered.
#[derive(Clone, Debug)]
pub struct Acks {
    tx: mpsc::UnboundedSender<Settle>,
}

impl Acks {
    /// Acknowledges `ids` (they are durable now).
    pub fn ack<I, S>(&self, ids: I)
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        let ids: Vec<String> = ids.into_iter().map(Into::into).collect();
        if !ids.is_empty() {
            let _ = self.tx.send(Settle::Ack(ids));
        }
    }

    /// Moves entry `id` to the stream's dead-letter stream with `reason`, then acknowledges it.
    /// The letter carries the entry as it is in the stream then (read back with `XRANGE`); an
    /// entry deleted meanwhile is only acknowledged.
    pub fn dead(&self, id: impl Into<String>, reason: impl Into<String>) {
        let _ = self.tx.send(Settle::Dead(id.into(), reason.into()));
    }
}

/// Why a [`RawHandler`] could not take a batch (or tick).
#[derive(Debug, thiserror::Error)]
pub enum TakeError {
    /// Not now (a full disk, Redis refusing writes): the loop keeps the batch and hands it
    /// over again under the backoff, reporting not ready meanwhile. Never dead-letters.
    #[error("transient: {0}")]
    Transient(String),
    /// Cannot go on at all: the loop stops and the daemon with it (the entries stay pending).
    #[error("{0}")]
    Fatal(String),
}

/// Takes raw entries and acknowledges them later (see the module docs). Calls are made from
/// the loop's task, one at a time; each should return promptly (well inside
/// `claim_idle_ms / 3`, or the held entries' idle time is not refreshed in time).
pub trait RawHandler: Send {
    /// Takes `batch` (in stream order; reclaimed entries may be older than ones taken
    /// before). Acknowledge through `acks`, now or later.
    fn take(
        &mut self,
        batch: Vec<RawEntry>,
        acks: &Acks,
    ) -> impl Future<Output = Result<(), TakeError>> + Send;

    /// [`RawHandler::take`] of a batch the loop keeps (to offer it again after a
    /// [`TakeError::Transient`]): the loop calls this one. A handler that copies what it needs
    /// out of the entries implements it and saves the loop a copy of every batch; by default
    /// the batch is copied for `take`.
    fn take_ref(
        &mut self,
        batch: &[RawEntry],
        acks: &Acks,
    ) -> impl Future<Output = Result<(), TakeError>> + Send {
        self.take(batch.to_vec(), acks)
    }

    /// Called after every step of the loop, at least every `block_ms`: flush by age here.
    fn tick(&mut self, acks: &Acks) -> impl Future<Output = Result<(), TakeError>> + Send {
        let _ = acks;
        async { Ok(()) }
    }

    /// Called once when the daemon stops, before the last acknowledgements are sent: make
    /// what is held durable and acknowledge it, or leave it pending for the next consumer.
    fn flush(&mut self, acks: &Acks) -> impl Future<Output = ()> + Send {
        let _ = acks;
        async {}
    }
}

/// One raw consumer of one group on one stream. Build it with [`StreamConsumer::raw`].
#[derive(Debug)]
pub struct RawConsumer {
    inner: StreamConsumer,
    /// Delivered (or waiting to be taken), not yet settled: id → delivery count. The entries
    /// themselves are the handler's (a dead letter reads its entry back from the stream): a
    /// second copy of every held entry would only be freed, cold, at the acknowledgement.
    held: HashMap<String, u64>,
    /// A batch the handler could not take yet ([`TakeError::Transient`]).
    waiting: Option<Vec<RawEntry>>,
    /// Settlements whose commit failed, retried on the next step.
    unsettled: Vec<Settle>,
    /// Take over every entry pending in the group before reading anything new
    /// ([`RawConsumer::exclusive`]); cleared once the first claim pass is through.
    takeover: bool,
}

impl StreamConsumer {
    /// This consumer as a raw one: same stream, group, name and settings.
    pub fn raw(self) -> RawConsumer {
        RawConsumer {
            inner: self,
            held: HashMap::new(),
            waiting: None,
            unsettled: Vec::new(),
            takeover: false,
        }
    }
}

impl RawConsumer {
    /// For a consumer that is the group's only legitimate reader (it holds a lease on the
    /// stream, as the archive does): before reading anything new, it claims every entry
    /// pending in the group at once, whatever its idle time — a dead predecessor's entries
    /// come first and in id order, instead of after `claim_idle_ms` and behind newer ones.
    pub fn exclusive(mut self) -> Self {
        self.takeover = true;
        self
    }

    /// Entries held right now (delivered, not settled).
    pub fn held(&self) -> usize {
        self.held.len()
    }

    fn labels(&self) -> [(&'static str, String); 2] {
        [
            ("stream", self.inner.stream.logical()),
            ("group", self.inner.group.clone()),
        ]
    }

    fn gauge_held(&self) {
        let labels = self.labels();
        let labels: Vec<(&str, &str)> = labels.iter().map(|(k, v)| (*k, v.as_str())).collect();
        self.inner.metrics.set(
            "kitbash_raw_held",
            "Entries a raw consumer holds delivered but not yet acknowledged.",
            &labels,
            self.held.len() as f64,
        );
    }

    fn not_ready(&mut self) {
        self.inner.health.set(self.inner.check_name(), false);
        self.inner.degraded = true;
    }

    /// Runs until `shutdown`, then calls [`RawHandler::flush`], sends the last
    /// acknowledgements and returns. An error only for [`TakeError::Fatal`].
    pub async fn run<H: RawHandler>(
        mut self,
        mut handler: H,
        shutdown: CancellationToken,
    ) -> Result<LoopStats, RuntimeError> {
        self.inner.shutdown = shutdown.clone();
        self.inner.blocking.connect_fred();
        let (tx, mut rx) = mpsc::unbounded_channel();
        let acks = Acks { tx };
        let mut backoff = Backoff::default();
        while !shutdown.is_cancelled() {
            match self.inner.ensure_group().await {
                Ok(()) => break,
                Err(e) => {
                    self.inner.health.set(self.inner.check_name(), false);
                    tracing::warn!(stream = %self.inner.stream, error = %e, "cannot create consumer group yet");
                    backoff.wait(&shutdown).await;
                }
            }
        }
        let mut phase = Phase::Own("0".into());
        let mut next_claim = Instant::now();
        let mut refreshed = Instant::now();
        let mut take_backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(5));
        let mut result = Ok(());
        let beat = format!("consume raw {} as {}", self.inner.stream, self.inner.group);
        let cadence = Duration::from_millis(self.inner.cfg.block_ms);
        while !shutdown.is_cancelled() {
            self.inner.health.beat(&beat, cadence);
            let step = self
                .step(
                    &mut phase,
                    &mut next_claim,
                    &mut refreshed,
                    &mut take_backoff,
                    &mut handler,
                    &acks,
                    &mut rx,
                )
                .await;
            match step {
                Ok(()) => {
                    backoff.reset();
                    if self.inner.degraded && self.waiting.is_none() {
                        self.inner.degraded = false;
                        self.inner.health.set(self.inner.check_name(), true);
                    }
                }
                Err(e @ RuntimeError::Component { .. }) => {
                    tracing::error!(stream = %self.inner.stream, group = %self.inner.group, error = %e,
                        "raw consumer's handler gave up; stopping (held entries stay pending)");
                    result = Err(e);
                    break;
                }
                Err(e) if e.is_nogroup() => {
                    if let Err(e) = self.inner.recover_group().await {
                        tracing::warn!(stream = %self.inner.stream, error = %e, "cannot recreate consumer group yet");
                        backoff.wait(&shutdown).await;
                    }
                    phase = Phase::New;
                }
                Err(e) => {
                    tracing::warn!(stream = %self.inner.stream, group = %self.inner.group, error = %e,
                        "raw consumer loop error; backing off");
                    backoff.wait(&shutdown).await;
                }
            }
        }
        if result.is_ok() {
            handler.flush(&acks).await;
        }
        if let Err(e) = self.settle(&mut rx, None).await {
            tracing::warn!(stream = %self.inner.stream, error = %e,
                "last acknowledgements failed; the entries stay pending for redelivery");
        }
        if !self.held.is_empty() {
            tracing::info!(stream = %self.inner.stream, group = %self.inner.group, held = self.held.len(),
                "stopping with unacknowledged entries; they stay pending for the next consumer");
        }
        self.inner.leave().await;
        self.inner.blocking.quit().await;
        tracing::info!(stream = %self.inner.stream, group = %self.inner.group, stats = ?self.inner.stats,
            "raw consumer loop stopped");
        result.map(|()| self.inner.stats)
    }

    #[allow(clippy::too_many_arguments)]
    async fn step<H: RawHandler>(
        &mut self,
        phase: &mut Phase,
        next_claim: &mut Instant,
        refreshed: &mut Instant,
        take_backoff: &mut Backoff,
        handler: &mut H,
        acks: &Acks,
        rx: &mut mpsc::UnboundedReceiver<Settle>,
    ) -> Result<(), RuntimeError> {
        self.settle(rx, None).await?;
        let refresh_every = Duration::from_millis((self.inner.cfg.claim_idle_ms / 3).max(100));
        if !self.held.is_empty() && refreshed.elapsed() >= refresh_every {
            let ids: Vec<&str> = self.held.keys().map(String::as_str).collect();
            match self.inner.refresh_idle_ids(ids.into_iter()).await {
                Ok(()) => *refreshed = Instant::now(),
                Err(e) => {
                    tracing::warn!(stream = %self.inner.stream, error = %e, held = self.held.len(),
                        "cannot refresh the idle time of held entries; another consumer may reclaim them");
                }
            }
        }
        if self.waiting.is_some() {
            self.offer(handler, acks, take_backoff).await?;
            return self.tick(handler, acks).await;
        }
        let room = self.inner.cfg.max_held.saturating_sub(self.held.len());
        if room == 0 {
            // Backpressure: wait for acknowledgements (or a block's worth of time, or shutdown).
            let first = tokio::select! {
                biased;
                _ = self.inner.shutdown.cancelled() => None,
                m = rx.recv() => m,
                _ = tokio::time::sleep(Duration::from_millis(self.inner.cfg.block_ms)) => None,
            };
            self.settle(rx, first).await?;
            return self.tick(handler, acks).await;
        }
        if self.takeover {
            let idle = std::mem::replace(&mut self.inner.cfg.claim_idle_ms, 0);
            let claimed = self.inner.autoclaim().await;
            self.inner.cfg.claim_idle_ms = idle;
            let claimed = claimed?;
            if self.inner.claim_cursor == "0-0" {
                self.takeover = false;
            }
            self.admit(claimed, true).await?;
            self.offer(handler, acks, take_backoff).await?;
            return self.tick(handler, acks).await;
        }
        if Instant::now() >= *next_claim {
            let claimed = self.inner.autoclaim().await?;
            if self.inner.claim_cursor == "0-0" {
                *next_claim =
                    Instant::now() + Duration::from_millis(self.inner.cfg.claim_interval_ms);
                self.inner.forget_dead_consumers().await?;
            }
            if !claimed.is_empty() {
                self.admit(claimed, true).await?;
                self.offer(handler, acks, take_backoff).await?;
                return self.tick(handler, acks).await;
            }
        }
        let current = phase.clone();
        let batch = self
            .inner
            .read(&current, room.min(self.inner.cfg.batch))
            .await?;
        let counted = match current {
            Phase::Own(_) => {
                match batch.last() {
                    None => *phase = Phase::New,
                    Some(last) => *phase = Phase::Own(last.id.clone()),
                }
                true
            }
            Phase::New => false,
        };
        self.admit(batch, counted).await?;
        self.offer(handler, acks, take_backoff).await?;
        self.tick(handler, acks).await
    }

    /// Sorts a read (or reclaimed) batch: deleted entries are acknowledged (nothing to keep),
    /// entries delivered more than `max_deliveries` times are dead-lettered, entries already
    /// held are ours and skipped; the rest become held and wait to be offered to the handler.
    async fn admit(&mut self, batch: Vec<StreamEntry>, counted: bool) -> Result<(), RuntimeError> {
        let (Some(first), Some(last)) = (batch.first(), batch.last()) else {
            return Ok(());
        };
        if self
            .inner
            .last_seen
            .as_deref()
            .is_none_or(|s| entries::id_cmp(&last.id, s).is_gt())
        {
            self.inner.last_seen = Some(last.id.clone());
        }
        let counts = if counted {
            self.inner
                .delivery_counts(&first.id, &last.id, batch.len())
                .await?
        } else {
            HashMap::new()
        };
        let (mut ack, mut dead, mut out) = (Vec::new(), Vec::new(), Vec::new());
        for entry in batch {
            if self.held.contains_key(&entry.id) {
                continue;
            }
            let n = counts.get(&entry.id).copied().unwrap_or(1);
            match &entry.fields {
                None => {
                    self.inner.stats.vanished += 1;
                    ack.push(entry.id);
                }
                Some(_) if n > self.inner.cfg.max_deliveries => {
                    let reason = format!(
                        "delivered {n} times without acknowledgement (consumer.max_deliveries = {})",
                        self.inner.cfg.max_deliveries
                    );
                    dead.push((entry, reason, n));
                }
                Some(_) => {
                    self.held.insert(entry.id.clone(), n);
                    out.push(RawEntry {
                        id: entry.id,
                        fields: entry.fields.unwrap_or_default(),
                        deliveries: n,
                    });
                }
            }
        }
        let n_dead = dead.len() as u64;
        self.inner.commit(ack, dead).await?;
        self.inner.stats.dead += n_dead;
        if !out.is_empty() {
            self.waiting = Some(out);
        }
        self.gauge_held();
        Ok(())
    }

    /// Hands the waiting batch to the handler; on a transient refusal keeps it (not ready,
    /// backing off, nothing new read).
    async fn offer<H: RawHandler>(
        &mut self,
        handler: &mut H,
        acks: &Acks,
        backoff: &mut Backoff,
    ) -> Result<(), RuntimeError> {
        let Some(batch) = self.waiting.take() else {
            return Ok(());
        };
        let n = batch.len() as u64;
        match handler.take_ref(&batch, acks).await {
            Ok(()) => {
                if backoff.attempts() > 0 {
                    tracing::info!(stream = %self.inner.stream, group = %self.inner.group, attempts = backoff.attempts(),
                        "held batch taken after a transient failure");
                }
                backoff.reset();
                Ok(())
            }
            Err(TakeError::Transient(reason)) => {
                if backoff.attempts() == 0 {
                    tracing::warn!(stream = %self.inner.stream, group = %self.inner.group, %reason, entries = n,
                        "handler cannot take the batch now: holding it and retrying (nothing new is read meanwhile)");
                }
                self.waiting = Some(batch);
                self.not_ready();
                self.inner.stats.transient += n;
                let labels = self.labels();
                let labels: Vec<(&str, &str)> =
                    labels.iter().map(|(k, v)| (*k, v.as_str())).collect();
                self.inner.metrics.inc(
                    "kitbash_transient_retries_total",
                    "Entries handed to the handler again after a transient failure.",
                    &labels,
                    n,
                );
                backoff.wait(&self.inner.shutdown).await;
                Ok(())
            }
            Err(TakeError::Fatal(why)) => Err(RuntimeError::Component {
                component: format!("raw consumer of {}", self.inner.stream),
                why,
            }),
        }
    }

    async fn tick<H: RawHandler>(
        &mut self,
        handler: &mut H,
        acks: &Acks,
    ) -> Result<(), RuntimeError> {
        match handler.tick(acks).await {
            Ok(()) => Ok(()),
            Err(TakeError::Transient(reason)) => {
                tracing::warn!(stream = %self.inner.stream, %reason, "raw handler tick failed; retried on the next step");
                self.not_ready();
                Ok(())
            }
            Err(TakeError::Fatal(why)) => Err(RuntimeError::Component {
                component: format!("raw consumer of {}", self.inner.stream),
                why,
            }),
        }
    }

    /// Sends what the handler settled (and what failed to commit before): one `XACK`, with the
    /// dead letters in the same `MULTI`. On failure the entries stay held and the settlement
    /// is retried on the next step; `NOGROUP` drops them (their pending list is gone).
    async fn settle(
        &mut self,
        rx: &mut mpsc::UnboundedReceiver<Settle>,
        first: Option<Settle>,
    ) -> Result<(), RuntimeError> {
        let mut msgs = std::mem::take(&mut self.unsettled);
        msgs.extend(first);
        while let Ok(m) = rx.try_recv() {
            msgs.push(m);
        }
        if msgs.is_empty() {
            return Ok(());
        }
        let (mut ack, mut dead) = (Vec::new(), Vec::new());
        let mut taken: Vec<(String, u64)> = Vec::new();
        let mut failed = None;
        for m in &msgs {
            match m {
                Settle::Ack(ids) => {
                    for id in ids {
                        if let Some((id, n)) = self.held.remove_entry(id) {
                            ack.push(id.clone());
                            taken.push((id, n));
                        }
                    }
                }
                Settle::Dead(id, reason) => {
                    let Some(&n) = self.held.get(id) else {
                        continue;
                    };
                    // The letter carries the entry as it is in the stream.
                    let entry = match self.inner.entry(id).await {
                        Ok(e) => e,
                        Err(e) => {
                            failed = Some(e);
                            break;
                        }
                    };
                    self.held.remove(id);
                    taken.push((id.clone(), n));
                    match entry {
                        Some(entry) => dead.push((entry, reason.clone(), n)),
                        // Deleted meanwhile: nothing left to keep.
                        None => {
                            self.inner.stats.vanished += 1;
                            ack.push(id.clone());
                        }
                    }
                }
            }
        }
        if let Some(e) = failed {
            // Keep them all held and try again next step.
            for (id, n) in taken {
                self.held.insert(id, n);
            }
            self.unsettled = msgs;
            self.gauge_held();
            return Err(e);
        }
        if ack.is_empty() && dead.is_empty() {
            return Ok(());
        }
        let (n_ack, n_dead) = (ack.len() as u64, dead.len() as u64);
        let result = self.inner.commit(ack, dead).await;
        match result {
            Ok(()) => {
                self.inner.stats.acked += n_ack;
                self.inner.stats.dead += n_dead;
            }
            Err(e) if e.is_nogroup() => {
                tracing::warn!(stream = %self.inner.stream, entries = n_ack + n_dead,
                    "group vanished before held entries were acknowledged; nothing left to acknowledge");
                self.gauge_held();
                return Err(e);
            }
            Err(e) => {
                // Keep them held (refreshed, never reclaimed) and try again next step.
                for (id, h) in taken {
                    self.held.insert(id, h);
                }
                self.unsettled = msgs;
                self.gauge_held();
                return Err(e);
            }
        }
        self.gauge_held();
        Ok(())
    }
}
