//! The daemon: one long-running task per archived stream. The task takes the stream's lease
//! (one instance archives a stream at a time), increments the stream's fencing epoch, opens
//! the stream's [`Store`], and runs an exclusive raw consumer of the `archive` group whose
//! handler ([`Writer`]) buffers entries into a segment and commits it by count, size or age —
//! acknowledging the entries only after the commit. Losing the lease stops the consumer (its
//! flush commits what it holds, fenced by the epoch) and the task goes back to waiting for the
//! lease; SIGTERM does the same and returns.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use fred::prelude::*;
use kitbash_runtime::config::{ArchiveConfig, ConsumerConfig};
use kitbash_runtime::consumer::{Acks, RawEntry, RawHandler, StreamConsumer, TakeError};
use kitbash_runtime::health::Health;
use kitbash_runtime::metrics::Metrics;
use kitbash_runtime::{CancellationToken, DaemonContext, Redis, RuntimeError, TaskCtx};
use kitbash_schema::{DaemonKind, Keys, StreamName};

use crate::format::{self, Entry, Layout, Segment};
use crate::store::{Store, StoreError};

/// The streams this instance archives: `[archive] streams`, or every stream of the fleet.
pub fn streams(ctx: &DaemonContext) -> Vec<StreamName> {
    let cfg = &ctx.config;
    if cfg.archive.streams.is_empty() {
        StreamName::all(cfg.feynman.partitions, cfg.entity.partitions)
    } else {
        cfg.archive
            .streams
            .iter()
            .filter_map(|s| StreamName::parse(s))
            .collect()
    }
}

/// The archive root of this deployment's namespace.
pub fn root(ctx: &DaemonContext) -> PathBuf {
    PathBuf::from(&ctx.config.archive.dir).join(&ctx.config.redis.namespace)
}

/// One stream's archiving task.
#[derive(Clone, Debug)]
pub struct Archiver {
    stream: StreamName,
    redis: Redis,
    keys: Keys,
    instance: String,
    consumer: ConsumerConfig,
    cfg: ArchiveConfig,
    root: PathBuf,
    metrics: Metrics,
    health: Health,
}

impl Archiver {
    /// The task of `stream` in this daemon.
    pub fn new(ctx: &DaemonContext, stream: StreamName) -> Self {
        let cfg = ctx.config.archive.clone();
        let mut consumer = ctx.config.consumer.for_stream(&stream.logical());
        // A segment must be able to fill up before anything is acknowledged.
        consumer.max_held = consumer.max_held.max(cfg.roll_entries * 2);
        Self {
            stream,
            redis: ctx.redis.clone(),
            keys: ctx.keys.clone(),
            instance: ctx.instance.clone(),
            consumer,
            root: root(ctx),
            cfg,
            metrics: ctx.metrics.clone(),
            health: ctx.health.clone(),
        }
    }

    /// Archives the stream whenever this instance holds its lease, until shutdown.
    pub async fn run(&self, task: TaskCtx) -> Result<(), RuntimeError> {
        let lease_key = self.keys.leader(
            DaemonKind::Archive,
            &format!("stream:{}", self.stream.logical()),
        );
        let client = &self.redis.client;
        // Not holding the lease is a normal state (another instance archives the stream):
        // the task is ready while it waits.
        task.ready.set(true);
        let poll = Duration::from_millis(self.cfg.lease_ms / 3);
        loop {
            let token = kitbash_runtime::lease::token(&self.instance);
            let held = loop {
                match kitbash_runtime::lease::acquire(client, &lease_key, &token, self.cfg.lease_ms)
                    .await
                {
                    Ok(true) => break true,
                    Ok(false) => {}
                    Err(e) => {
                        tracing::warn!(stream = %self.stream, error = %e, "cannot ask for the archive lease yet")
                    }
                }
                tokio::select! {
                    biased;
                    _ = task.shutdown.cancelled() => break false,
                    _ = tokio::time::sleep(poll) => {}
                }
            };
            if !held {
                return Ok(());
            }
            let result = self.hold(&task, &lease_key, &token).await;
            let _ = kitbash_runtime::lease::release(client, &lease_key, &token).await;
            result?;
            if task.shutdown.is_cancelled() {
                return Ok(());
            }
        }
    }

    /// Archives while the lease is held.
    async fn hold(&self, task: &TaskCtx, lease_key: &str, token: &str) -> Result<(), RuntimeError> {
        let client = &self.redis.client;
        let epoch: u64 = client.incr(self.keys.archive_epoch(self.stream)).await?;
        let (root, stream) = (self.root.clone(), self.stream);
        let store = tokio::task::spawn_blocking(move || Store::open(&root, stream, epoch))
            .await
            .map_err(|e| component(self.stream, e.to_string()))?
            .map_err(|e| component(self.stream, e.to_string()))?;
        tracing::info!(stream = %self.stream, epoch, last = ?store.last_id(), "archiving");
        let lost = task.shutdown.child_token();
        let renew = tokio::spawn(renew(
            client.clone(),
            lease_key.to_owned(),
            token.to_owned(),
            self.cfg.lease_ms,
            lost.clone(),
        ));
        let consumer = StreamConsumer::new(
            self.redis.clone(),
            &self.keys,
            self.stream,
            DaemonKind::Archive.group().as_str(),
            format!("{}-{epoch}", self.instance),
            self.consumer.clone(),
            self.metrics.clone(),
            self.health.clone(),
        )
        .raw()
        .exclusive();
        let writer = Writer::new(self, store);
        let result = consumer.run(writer, lost.clone()).await;
        lost.cancel();
        renew.abort();
        match result {
            Ok(_) => Ok(()),
            // Fenced, or the disk refused for good: wait for the lease again (the task's
            // restart policy would also do, but losing the lease is ordinary).
            Err(e) => {
                tracing::warn!(stream = %self.stream, error = %e, "archiving stopped; waiting for the lease again");
                Ok(())
            }
        }
    }
}

fn component(stream: StreamName, why: String) -> RuntimeError {
    RuntimeError::Component {
        component: format!("archive {stream}"),
        why,
    }
}

/// Renews the lease every third of its length; cancels `lost` when it is gone (or could not
/// be renewed for a whole lease length).
async fn renew(client: Client, key: String, token: String, ms: u64, lost: CancellationToken) {
    let mut last_ok = Instant::now();
    loop {
        tokio::select! {
            biased;
            _ = lost.cancelled() => return,
            _ = tokio::time::sleep(Duration::from_millis(ms / 3)) => {}
        }
        match kitbash_runtime::lease::renew(&client, &key, &token, ms).await {
            Ok(true) => last_ok = Instant::now(),
            Ok(false) => {
                tracing::warn!(lease = %key, "archive lease lost");
                lost.cancel();
                return;
            }
            Err(e) if last_ok.elapsed() < Duration::from_millis(ms) => {
                tracing::warn!(lease = %key, error = %e, "cannot renew the archive lease; retrying");
            }
            Err(e) => {
                tracing::warn!(lease = %key, error = %e, "archive lease could not be renewed in time; stopping");
                lost.cancel();
                return;
            }
        }
    }
}

/// The raw handler: entries into the segment, the segment into the store, then the acks.
#[derive(Debug)]
pub struct Writer {
    stream: StreamName,
    store: Option<Store>,
    segment: Option<Segment>,
    /// Ids in the segment (acknowledged after its commit).
    ids: Vec<String>,
    /// The newest id in the store: anything at or below is archived already.
    archived: Option<(u64, u64)>,
    /// The newest id in the store or the segment: anything at or below was taken already.
    high: Option<(u64, u64)>,
    started: Option<Instant>,
    cfg: Arc<ArchiveConfig>,
    metrics: Metrics,
}

impl Writer {
    fn new(a: &Archiver, store: Store) -> Self {
        Self {
            stream: a.stream,
            archived: store.last_id(),
            high: store.last_id(),
            store: Some(store),
            segment: Some(Segment::new(Layout::of(a.stream))),
            ids: Vec::new(),
            started: None,
            cfg: Arc::new(a.cfg.clone()),
            metrics: a.metrics.clone(),
        }
    }

    fn full(&self) -> bool {
        self.segment.as_ref().is_some_and(|s| {
            s.len() >= self.cfg.roll_entries || s.raw_bytes() >= self.cfg.roll_bytes
        })
    }

    /// Commits the segment on a blocking thread, then acknowledges its entries.
    async fn commit(&mut self, acks: &Acks) -> Result<(), TakeError> {
        if self.segment.as_ref().is_none_or(Segment::is_empty) {
            return Ok(());
        }
        let (Some(mut store), Some(mut segment)) = (self.store.take(), self.segment.take()) else {
            return Err(TakeError::Fatal("store lost by an earlier failure".into()));
        };
        let joined = tokio::task::spawn_blocking(move || {
            let r = store.commit(&mut segment);
            (store, segment, r)
        })
        .await;
        let (store, segment, r) =
            joined.map_err(|e| TakeError::Fatal(format!("commit task: {e}")))?;
        self.store = Some(store);
        self.segment = Some(segment);
        match r {
            Ok(file) => {
                let labels = [("stream", self.stream.logical())];
                let labels: Vec<(&str, &str)> =
                    labels.iter().map(|(k, v)| (*k, v.as_str())).collect();
                self.metrics.inc(
                    "kitbash_archive_entries_total",
                    "Entries archived (durable, acknowledged).",
                    &labels,
                    file.rows,
                );
                self.metrics.inc(
                    "kitbash_archive_files_total",
                    "Archive files committed.",
                    &labels,
                    1,
                );
                self.metrics.inc(
                    "kitbash_archive_bytes_total",
                    "Bytes of archive files committed.",
                    &labels,
                    file.bytes,
                );
                tracing::debug!(stream = %self.stream, file = %file.name, rows = file.rows, bytes = file.bytes, "committed");
                acks.ack(std::mem::take(&mut self.ids));
                self.archived = self.high;
                self.started = None;
                Ok(())
            }
            Err(e @ StoreError::Fenced { .. }) => Err(TakeError::Fatal(e.to_string())),
            Err(e) => Err(TakeError::Transient(e.to_string())),
        }
    }
}

impl RawHandler for Writer {
    async fn take(&mut self, batch: Vec<RawEntry>, acks: &Acks) -> Result<(), TakeError> {
        let mut already = Vec::new();
        for e in batch {
            let Ok(id) = format::parse_id(&e.id) else {
                return Err(TakeError::Fatal(format!(
                    "entry id {:?} is not ms-seq",
                    e.id
                )));
            };
            if self.archived.is_some_and(|h| id <= h) {
                // In the archive already (a crash between the manifest and the acknowledgement).
                already.push(e.id);
                continue;
            }
            if self.high.is_some_and(|h| id <= h) {
                // In the segment (the same batch offered again after a refused commit).
                continue;
            }
            let entry = Entry {
                id: e.id.clone(),
                fields: e
                    .fields
                    .iter()
                    .map(|(k, v)| (k.to_vec(), v.to_vec()))
                    .collect(),
            };
            let Some(segment) = self.segment.as_mut() else {
                return Err(TakeError::Fatal(
                    "segment lost by an earlier failure".into(),
                ));
            };
            segment
                .push(&entry)
                .map_err(|err| TakeError::Fatal(err.to_string()))?;
            self.ids.push(e.id);
            self.high = Some(id);
            self.started.get_or_insert_with(Instant::now);
            // Files hold at most roll_entries: commit as soon as the segment is full.
            if self.full() {
                acks.ack(std::mem::take(&mut already));
                self.commit(acks).await?;
            }
        }
        acks.ack(already);
        Ok(())
    }

    async fn tick(&mut self, acks: &Acks) -> Result<(), TakeError> {
        let due = self
            .started
            .is_some_and(|t| t.elapsed() >= Duration::from_millis(self.cfg.roll_ms));
        if due || self.full() {
            self.commit(acks).await?;
        }
        Ok(())
    }

    async fn flush(&mut self, acks: &Acks) {
        if let Err(e) = self.commit(acks).await {
            tracing::warn!(stream = %self.stream, error = %e, entries = self.ids.len(),
                "cannot commit the open segment on the way out; its entries stay pending");
        }
    }
}
