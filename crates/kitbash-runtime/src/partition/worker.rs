//! One partition's worker: restore the logic's state from the checkpoint (incremental snapshot +
//! replay of the tail), then read entries in order with `XREAD` on its own connection, check
//! and de-duplicate them, hand each batch to the [`PartitionLogic`] and commit the batch with
//! its effects, dead letters and due snapshot writes in one fenced step (see [`super::commit`]).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use fred::prelude::*;
use fred::types::Value;
use kitbash_config::ConsumerConfig;
use kitbash_schema::streams::partition_of;
use kitbash_schema::{Envelope, Keys, StreamName};
use tokio_util::sync::CancellationToken;

use super::commit::{self, Advance, Commit, CommitResult};
use super::snapshot::{Dirty, RecentMids, decode_stored, encode_stored};
use super::{Effects, Entry, PartitionLogic, PartitionSpec};
use crate::entries::{self, StreamEntry};
use crate::metrics::Metrics;
use crate::resp::StreamReader;

/// Errors that end a partition worker (the balancer starts a fresh one if still owned).
#[derive(Debug, thiserror::Error)]
pub enum PartitionError {
    /// Redis failed.
    #[error("redis: {0}")]
    Redis(#[from] fred::error::Error),
    /// A reply had an unexpected shape.
    #[error("runtime: {0}")]
    Runtime(#[from] crate::RuntimeError),
    /// A snapshotted item did not restore.
    #[error("partition snapshot item {key:?}: {why}")]
    Snapshot {
        /// The item.
        key: String,
        /// What failed.
        why: String,
    },
    /// Another worker committed to this partition: ownership moved.
    #[error("partition {0} was committed by another worker (checkpoint at {1})")]
    Fenced(u32, String),
    /// The worker task panicked (a bug in the logic).
    #[error("partition worker panicked: {0}")]
    Panicked(String),
}

impl PartitionError {
    /// Whether restoring the partition failed for its data (an item that does not restore), as
    /// opposed to Redis or a panic.
    pub fn is_restore(&self) -> bool {
        matches!(self, PartitionError::Snapshot { .. })
    }
}

/// The readiness check of partition `p` of `group` (false while its batch is held after a
/// transient failure, or while its worker is backing off after failing).
pub fn check_name(group: &str, p: u32) -> String {
    format!("{group} partition {p}")
}

/// What every worker of one partitioned component shares.
pub struct WorkerShared<L> {
    /// The daemon's logic.
    pub logic: Arc<L>,
    /// The streams and their settings.
    pub spec: PartitionSpec,
    /// Key builder.
    pub keys: Keys,
    /// Command client (commits, restores).
    pub client: Client,
    /// This instance's name (checkpoint `owner`, dead letters' `consumer`).
    pub instance: String,
    /// Metric registry.
    pub metrics: Metrics,
    /// Batch size, block time, dead-letter cap.
    pub consumer: ConsumerConfig,
    /// Readiness registry (the per-partition checks, see [`check_name`]).
    pub health: crate::health::Health,
}

/// Partition `p`'s keys.
struct PartKeys {
    stream: StreamName,
    stream_key: String,
    dead_key: String,
    checkpoint: String,
    state: String,
}

impl PartKeys {
    fn new(keys: &Keys, stream: StreamName) -> Self {
        Self {
            stream,
            stream_key: keys.stream(stream),
            dead_key: keys.dead_letter(stream),
            checkpoint: keys.checkpoint(stream),
            state: keys.partition_state(stream),
        }
    }
}

/// Decodes an entry: the message and the producer's mid, or why not.
fn decode<M: kitbash_schema::Message>(e: &StreamEntry) -> Result<(M, Option<String>), String> {
    if e.fields.is_none() {
        return Err("entry deleted".into());
    }
    Envelope::from_fields(e.pairs())
        .and_then(|env| env.decode::<M>().map(|m| (m, env.mid)))
        .map_err(|e| e.to_string())
}

/// A partition's in-memory life.
struct Worker<L: PartitionLogic> {
    sh: Arc<WorkerShared<L>>,
    p: u32,
    k: PartKeys,
    state: L::State,
    mids: RecentMids,
    dirty: Dirty,
    /// Position up to which everything is committed.
    last_id: String,
    /// Items' snapshot positions, kept only while recovering.
    as_of: HashMap<String, String>,
    /// When the snapshot round in progress fell due: it writes, a piece per commit, the items
    /// changed before then (see [`Worker::snapshot_piece`]).
    round: Option<Instant>,
}

impl<L: PartitionLogic> Worker<L> {
    /// Loads the checkpoint and the snapshotted items, then replays the tail without effects.
    async fn restore(sh: Arc<WorkerShared<L>>, p: u32) -> Result<Self, PartitionError> {
        let k = PartKeys::new(&sh.keys, (sh.spec.stream)(p));
        let cp: HashMap<String, Value> = sh.client.hgetall(&k.checkpoint).await?;
        let text = |f: &str| cp.get(f).and_then(entries::string_of).unwrap_or_default();
        let last_id = text(Keys::CHECKPOINT_LAST_ID);
        let snap_id = text(Keys::CHECKPOINT_SNAP_ID);
        let mids = match cp.get(Keys::CHECKPOINT_MIDS) {
            Some(Value::Bytes(b)) => RecentMids::decode(b),
            Some(Value::String(s)) => RecentMids::decode(s.as_bytes()),
            _ => RecentMids::default(),
        };
        let mut state = sh.logic.empty(p);
        let mut as_of = HashMap::new();
        let stored: HashMap<String, Value> = sh.client.hgetall(&k.state).await?;
        for (key, v) in stored {
            let bytes: &[u8] = match &v {
                Value::Bytes(b) => b,
                Value::String(s) => s.as_bytes(),
                _ => continue,
            };
            let Some((at, item)) = decode_stored(bytes) else {
                return Err(PartitionError::Snapshot {
                    key,
                    why: "no position prefix".into(),
                });
            };
            sh.logic
                .restore_item(&mut state, &key, item)
                .map_err(|why| PartitionError::Snapshot {
                    key: key.clone(),
                    why,
                })?;
            as_of.insert(key, at);
        }
        let mut w = Self {
            sh,
            p,
            k,
            state,
            mids,
            dirty: Dirty::default(),
            last_id,
            as_of,
            round: None,
        };
        let replayed = w.replay(&snap_id).await?;
        tracing::info!(stream = %w.k.stream, last_id = %w.last_id, snap_id = %snap_id, replayed,
            items = w.as_of.len(), "partition acquired; state restored");
        w.as_of = HashMap::new();
        Ok(w)
    }

    /// Replays `(snap_id, last_id]`: each entry to its item unless the item's snapshot is newer.
    async fn replay(&mut self, snap_id: &str) -> Result<u64, PartitionError> {
        if self.last_id.is_empty() || snap_id == self.last_id {
            return Ok(0);
        }
        let mut from = if snap_id.is_empty() {
            "-".to_owned()
        } else {
            format!("({snap_id}")
        };
        let mut n = 0;
        loop {
            let v: Value = self
                .sh
                .client
                .xrange(
                    &self.k.stream_key,
                    from.as_str(),
                    self.last_id.as_str(),
                    Some(1000),
                )
                .await?;
            let batch = entries::parse_entries("XRANGE", &v)?;
            let Some(last) = batch.last() else { break };
            from = format!("({}", last.id);
            for e in &batch {
                let Ok((m, mid)) = decode::<L::Message>(e) else {
                    continue;
                };
                let key = self.sh.logic.route_key(&m);
                if partition_of(key, self.sh.spec.partitions) != self.p
                    || !self.mids.admit(mid.as_deref(), &e.id)
                {
                    continue;
                }
                if self
                    .as_of
                    .get(key)
                    .is_some_and(|at| entries::id_cmp(&e.id, at).is_le())
                {
                    continue;
                }
                let entry = Entry {
                    id: e.id.clone(),
                    message: m,
                };
                self.sh.logic.replay(&mut self.state, &entry);
                n += 1;
            }
            if batch.len() < 1000 {
                break;
            }
        }
        Ok(n)
    }

    /// Reads the next batch (up to `count` entries) after `last_id` on the worker's own
    /// connection.
    async fn read(
        &self,
        reader: &mut StreamReader,
        count: usize,
    ) -> Result<Vec<StreamEntry>, PartitionError> {
        let cfg = &self.sh.consumer;
        let from = if self.last_id.is_empty() {
            "0-0"
        } else {
            self.last_id.as_str()
        };
        let (count, block) = (count.to_string(), cfg.block_ms.to_string());
        let args = [
            "COUNT",
            &count,
            "BLOCK",
            &block,
            "STREAMS",
            &self.k.stream_key,
            from,
        ];
        let timeout = Duration::from_millis(cfg.block_ms + 5_000);
        Ok(reader
            .read("XREAD", &self.k.stream_key, &args, true, timeout)
            .await?)
    }

    /// Encodes the oldest changed items into `c` — those that waited `min_age` and, with
    /// `marked_by`, changed no later than that — until `snapshot_max_items` items or `max_bytes`
    /// bytes (at least one item); returns the mids blob and the new replay position for the
    /// checkpoint.
    fn snapshot(
        &mut self,
        c: &mut Commit,
        new_last: &str,
        min_age: Duration,
        marked_by: Option<Instant>,
        max_bytes: usize,
    ) -> (Vec<u8>, String) {
        let mut put: Vec<Value> = Vec::new();
        let mut del: Vec<Value> = Vec::new();
        let (mut items, mut bytes) = (0, 0);
        while items < self.sh.spec.snapshot_max_items && bytes < max_bytes {
            let Some(key) = self.dirty.pop(min_age, marked_by) else {
                break;
            };
            items += 1;
            match self.sh.logic.encode_item(&self.state, &key) {
                Some(b) => {
                    bytes += key.len() + b.len();
                    put.push(key.into());
                    put.push(Value::Bytes(encode_stored(new_last, &b).into()));
                }
                None => del.push(key.into()),
            }
        }
        // Lua's unpack takes a few thousand values at most: write in slices.
        for chunk in put.chunks(512) {
            let mut words: Vec<Value> = vec!["HSET".into(), self.k.state.as_str().into()];
            words.extend(chunk.iter().cloned());
            c.push(&self.k.state, words);
        }
        for chunk in del.chunks(512) {
            let mut words: Vec<Value> = vec!["HDEL".into(), self.k.state.as_str().into()];
            words.extend(chunk.iter().cloned());
            c.push(&self.k.state, words);
        }
        (self.mids.encode(), self.dirty.replay_from(new_last))
    }

    /// Commits `c` with `advance`. A transient failure (Redis refusing writes, a lost
    /// connection) is retried with the same commit under the backoff while `cancel` allows,
    /// the partition reported not ready meanwhile; the script is a compare-and-set, so a
    /// retry never applies twice. A conflict whose checkpoint is already at our own new
    /// position is our own commit whose reply was lost (fred re-sends a command after a
    /// reconnect) and counts as applied.
    async fn commit(
        &self,
        advance: Advance<'_>,
        c: Commit,
        cancel: &CancellationToken,
    ) -> Result<(), PartitionError> {
        let sh = &self.sh;
        let mut backoff = crate::Backoff::new(Duration::from_millis(100), Duration::from_secs(5));
        let r = loop {
            let attempt = if sh.client.is_clustered() {
                commit::run_split(
                    &sh.client,
                    &self.k.checkpoint,
                    &sh.instance,
                    advance,
                    c.clone(),
                )
                .await
            } else {
                commit::run(
                    &sh.client,
                    &self.k.checkpoint,
                    &sh.instance,
                    advance,
                    c.clone(),
                )
                .await
            };
            match attempt {
                Ok(r) => break r,
                Err(e) if crate::redis::is_transient(&e) && !cancel.is_cancelled() => {
                    if backoff.attempts() == 0 {
                        tracing::warn!(stream = %self.k.stream, error = %e,
                            "commit failed transiently; holding the batch and retrying");
                    }
                    self.sh.health.set(check_name(sh.spec.group, self.p), false);
                    backoff.wait(cancel).await;
                }
                Err(e) => return Err(e.into()),
            }
        };
        if backoff.attempts() > 0 {
            self.sh.health.set(check_name(sh.spec.group, self.p), true);
        }
        match r {
            CommitResult::Applied => Ok(()),
            CommitResult::Conflict(cur) if cur == advance.new_last && cur != advance.expected => {
                tracing::info!(stream = %self.k.stream, at = %cur,
                    "commit reply was lost and the command re-sent: the checkpoint is at our own position");
                Ok(())
            }
            CommitResult::Conflict(cur) => {
                tracing::warn!(stream = %self.k.stream, expected = %advance.expected, found = %cur,
                    "checkpoint moved under us: another worker owns the partition now; stopping");
                sh.metrics.inc(
                    "kitbash_partition_fenced_total",
                    "Commits refused because another worker had moved the checkpoint.",
                    &[("stream", sh.spec.group)],
                    1,
                );
                Err(PartitionError::Fenced(self.p, cur))
            }
        }
    }

    /// One batch: check, de-duplicate, apply, commit. `Some(bytes of the batch's effect and
    /// dead-letter words)`, or `None` when stopping left the batch uncommitted.
    async fn step(
        &mut self,
        batch: Vec<StreamEntry>,
        snapshot_due: bool,
        cancel: &CancellationToken,
    ) -> Result<Option<usize>, PartitionError> {
        let Some(batch_last) = batch.last().map(|e| e.id.clone()) else {
            return Ok(Some(0));
        };
        let started = Instant::now();
        let sh = self.sh.clone();
        let mut out = Effects::default();
        let mut entries: Vec<Entry<L::Message>> = Vec::with_capacity(batch.len());
        let mut raw: Vec<&StreamEntry> = Vec::with_capacity(batch.len());
        let mut dead: Vec<(&StreamEntry, String)> = Vec::new();
        let mut duplicates = 0u64;
        for e in &batch {
            match decode::<L::Message>(e) {
                Ok((m, mid)) => {
                    let key = sh.logic.route_key(&m);
                    let expected = partition_of(key, sh.spec.partitions);
                    if expected != self.p {
                        dead.push((
                            e,
                            format!(
                                "routed to partition {} but its key {key:?} belongs to partition {expected} of {} (FNV-1a-64 % partitions): the producer uses another partition count",
                                self.p, sh.spec.partitions
                            ),
                        ));
                    } else if self.mids.admit(mid.as_deref(), &e.id) {
                        entries.push(Entry {
                            id: e.id.clone(),
                            message: m,
                        });
                        raw.push(e);
                    } else {
                        duplicates += 1;
                    }
                }
                Err(reason) => dead.push((e, reason)),
            }
        }
        let mut backoff = crate::Backoff::new(Duration::from_millis(100), Duration::from_secs(5));
        let results = loop {
            match sh.logic.apply(&mut self.state, &entries, &mut out).await {
                Ok(r) => break r,
                Err(why) => {
                    if backoff.attempts() == 0 {
                        tracing::warn!(stream = %self.k.stream, reason = %why,
                            "batch failed transiently; holding it and retrying (nothing new is read)");
                    }
                    sh.health.set(check_name(sh.spec.group, self.p), false);
                    sh.metrics.inc(
                        "kitbash_transient_retries_total",
                        "Batches applied again after a transient failure.",
                        &[("stream", sh.spec.group)],
                        1,
                    );
                    out = Effects::default();
                    if !backoff.wait(cancel).await {
                        // Stopping: nothing of this batch is committed; the next owner reads
                        // it again from the checkpoint.
                        return Ok(None);
                    }
                }
            }
        };
        if backoff.attempts() > 0 {
            sh.health.set(check_name(sh.spec.group, self.p), true);
        }
        let mut applied = 0u64;
        for (i, (entry, e)) in entries.iter().zip(&raw).enumerate() {
            match results.get(i) {
                Some(Err(reason)) => dead.push((e, reason.clone())),
                _ => {
                    applied += 1;
                    self.dirty
                        .mark(sh.logic.route_key(&entry.message), &self.last_id);
                }
            }
        }
        for key in &out.dirty {
            self.dirty.mark(key, &self.last_id);
        }
        let mut c = out.commit;
        for (e, reason) in &dead {
            tracing::warn!(stream = %self.k.stream, id = %e.id, %reason, "entry rejected to the dead-letter stream");
            let letter = crate::dead::letter(
                self.k.stream,
                e,
                reason.clone(),
                sh.spec.group,
                &sh.instance,
                1,
            );
            c.push(
                &self.k.dead_key,
                crate::dead::xadd_words(&self.k.dead_key, &letter),
            );
        }
        // What the batch itself costs (effects and dead letters): the read size follows it. A
        // snapshot piece rides along whatever the batch's size, so it does not count.
        let bytes = c.bytes();
        let snap = self.snapshot_piece(&mut c, &batch_last, snapshot_due);
        let expected = self.last_id.clone();
        self.commit(
            Advance {
                expected: &expected,
                new_last: &batch_last,
                snapshot: snap.as_ref().map(|(m, id)| (m.as_slice(), id.as_str())),
                consumed: batch.len() as u64,
            },
            c,
            cancel,
        )
        .await?;
        self.last_id = batch_last;
        let labels = [("stream", sh.spec.group)];
        sh.metrics.inc(
            "kitbash_partition_entries_total",
            "Entries applied by partition workers.",
            &labels,
            applied,
        );
        if duplicates > 0 {
            tracing::info!(stream = %self.k.stream, duplicates, "dropped re-sent entries (same producer mid)");
            sh.metrics.inc(
                "kitbash_duplicates_total",
                "Re-sent entries dropped by their producer message id.",
                &labels,
                duplicates,
            );
        }
        if !dead.is_empty() {
            sh.metrics.inc(
                "kitbash_dead_letters_total",
                "Entries moved to a dead-letter stream.",
                &labels,
                dead.len() as u64,
            );
        }
        let logical = self.k.stream.logical();
        sh.metrics.observe_batch(
            &[("stream", logical.as_str()), ("group", sh.spec.group)],
            started,
            batch.len(),
        );
        Ok(Some(bytes))
    }

    /// The snapshot writes this batch's commit carries, if any. A due snapshot opens a round
    /// over the items changed before it fell due, written oldest first in pieces of at most
    /// `snapshot_max_bytes` (and `snapshot_max_items`), one piece per commit, so no single
    /// batch waits for every changed item to be encoded and written — at full windows that is
    /// megabytes per partition. A round still open when the next falls due is finished in that
    /// commit (up to `snapshot_max_items`, whatever the bytes), so recovery replays about one
    /// to two `snapshot_ms`. Items are written once they waited
    /// `snapshot_item_ms`; while none has, a snapshot would write nothing and move nothing (the
    /// replay position is the oldest waiting change), so it is skipped. With nothing waiting
    /// at all, a due snapshot still moves the replay position (and the trim floor) up to this
    /// batch. Far more changed items than one commit writes (4 × `snapshot_max_items`) are
    /// written a piece per commit between rounds too.
    fn snapshot_piece(
        &mut self,
        c: &mut Commit,
        batch_last: &str,
        snapshot_due: bool,
    ) -> Option<(Vec<u8>, String)> {
        let spec = &self.sh.spec;
        let (max_items, piece) = (spec.snapshot_max_items, spec.snapshot_max_bytes);
        let min_age = Duration::from_millis(spec.snapshot_item_ms);
        let mut budget = piece;
        if snapshot_due {
            if self.round.is_some() {
                budget = usize::MAX;
            }
            self.round = Some(Instant::now());
        }
        let snap = if snapshot_due && self.dirty.is_empty() {
            Some(self.snapshot(c, batch_last, min_age, None, budget))
        } else if self.round.is_some() && self.dirty.ready(min_age, self.round) {
            Some(self.snapshot(c, batch_last, min_age, self.round, budget))
        } else if self.dirty.len() > max_items * 4 && self.dirty.has_aged(min_age) {
            Some(self.snapshot(c, batch_last, min_age, None, piece))
        } else {
            None
        };
        if !self.dirty.ready(min_age, self.round) {
            self.round = None;
        }
        snap
    }

    /// Writes every changed item (no entries consumed).
    async fn flush(&mut self, cancel: &CancellationToken) -> Result<(), PartitionError> {
        while !self.dirty.is_empty() {
            let mut c = Commit::default();
            let last = self.last_id.clone();
            let (mids, replay_from) =
                self.snapshot(&mut c, &last, Duration::ZERO, None, usize::MAX);
            self.commit(
                Advance {
                    expected: &last,
                    new_last: &last,
                    snapshot: Some((&mids, &replay_from)),
                    consumed: 0,
                },
                c,
                cancel,
            )
            .await?;
        }
        Ok(())
    }

    /// Trims the partition stream, never past what recovery or a group still needs.
    async fn trim(&self) {
        let max = self.sh.spec.stream_max;
        if max == 0 {
            return;
        }
        let floor: Option<String> = self
            .sh
            .client
            .hget(&self.k.checkpoint, Keys::CHECKPOINT_SNAP_ID)
            .await
            .ok()
            .flatten();
        let Some(floor) = floor.filter(|f| !f.is_empty()) else {
            return;
        };
        crate::trim::trim_or_warn(
            &self.sh.client,
            &self.sh.metrics,
            self.k.stream,
            &self.k.stream_key,
            max,
            &[floor],
        )
        .await;
    }
}

/// The fewest entries a partition reads at a time when its commits are over
/// [`PartitionSpec::commit_max_bytes`].
pub const MIN_READ: usize = 16;

/// The next read's size after a commit of `bytes`: half when over `max_bytes` (not below
/// [`MIN_READ`]), double while twice the commit would still fit (not above `batch`), else the
/// same. A commit grows at most linearly with its entries (less where they coalesce), so a
/// doubled read stays near the budget; reads grow whenever they can, because large batches
/// are what lets a logic coalesce (feynman: one vector per symbol per batch).
pub fn next_read(count: usize, bytes: usize, max_bytes: usize, batch: usize) -> usize {
    let batch = batch.max(1);
    if bytes > max_bytes {
        (count / 2).max(MIN_READ.min(batch))
    } else if bytes.saturating_mul(2) <= max_bytes {
        count.saturating_mul(2).min(batch)
    } else {
        count.min(batch)
    }
}

/// Runs partition `p` until `cancel`; writes every changed item on the way out so the next
/// owner replays nothing.
pub async fn run<L: PartitionLogic>(
    sh: Arc<WorkerShared<L>>,
    p: u32,
    reader: &mut StreamReader,
    cancel: CancellationToken,
) -> Result<(), PartitionError> {
    let mut w = Worker::restore(sh.clone(), p).await?;
    sh.health.set(check_name(sh.spec.group, p), true);
    let period = Duration::from_millis(sh.spec.snapshot_ms);
    // Partitions that start together snapshot at staggered instants (partition p of P first
    // falls due after (p + 1) / P of the period), so their rounds do not coincide.
    let parts = sh.spec.partitions.max(1);
    let mut snapshot_due =
        Instant::now() + period.mul_f64(f64::from(p % parts + 1) / f64::from(parts));
    // One round: a blocking read (its BLOCK) and the batch's commit.
    let beat = format!("partition {} {p}", sh.spec.group);
    let cadence = Duration::from_millis(sh.consumer.block_ms);
    // Slow start: the first reads are small and double while commits stay small, so a worker
    // that starts on a backlog never builds one oversized commit before it has measured one.
    let mut count = MIN_READ.min(sh.consumer.batch.max(1));
    while !cancel.is_cancelled() {
        sh.health.beat(&beat, cadence);
        let batch = w.read(reader, count).await?;
        let due = Instant::now() >= snapshot_due;
        if due {
            snapshot_due = Instant::now() + period;
        }
        if batch.is_empty() {
            if due && !w.dirty.is_empty() {
                // Idle: write what changed so a takeover replays nothing.
                w.flush(&cancel).await?;
                w.trim().await;
            }
            continue;
        }
        let Some(bytes) = w.step(batch, due, &cancel).await? else {
            break;
        };
        count = next_read(count, bytes, sh.spec.commit_max_bytes, sh.consumer.batch);
        if due {
            w.trim().await;
        }
    }
    // The drain's flush is not held up by a Redis that refuses writes (a cancelled token: no
    // retries); the changed items are then replayed by the next owner instead.
    sh.health.forget_beat(&beat);
    let no_retry = CancellationToken::new();
    no_retry.cancel();
    w.flush(&no_retry).await?;
    tracing::info!(stream = %w.k.stream, last_id = %w.last_id, "partition worker stopped");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_shrink_under_large_commits_and_grow_back() {
        let (max, batch) = (1_000, 1_000);
        assert_eq!(next_read(1_000, 5_000, max, batch), 500, "over: half");
        assert_eq!(
            next_read(20, 5_000, max, batch),
            MIN_READ,
            "never below MIN_READ"
        );
        assert_eq!(next_read(MIN_READ, 5_000, max, batch), MIN_READ);
        assert_eq!(
            next_read(500, 600, max, batch),
            500,
            "twice would not fit: kept"
        );
        assert_eq!(next_read(500, 500, max, batch), 1_000, "twice fits: double");
        assert_eq!(
            next_read(800, 100, max, batch),
            1_000,
            "never above the batch"
        );
        assert_eq!(
            next_read(4, 5_000, max, 4),
            4,
            "a batch under MIN_READ stays itself"
        );
        assert_eq!(next_read(1, 0, max, 1), 1);
    }
}
