//! The daemon: one long-running task per archived stream. The task takes the stream's lease
//! (one instance archives a stream at a time), increments the stream's fencing epoch, opens
//! the stream's [`Store`], and runs an exclusive raw consumer of the `archive` group whose
//! handler ([`Writer`]) buffers entries into a segment and commits it by count, size or age —
//! acknowledging the entries only after the commit. Losing the lease stops the consumer (its
//! flush commits what it holds, fenced by the epoch) and the task goes back to waiting for the
//! lease; SIGTERM does the same and returns.
//!
//! While it holds the lease the task also owns the stream's trim (unless `[archive] trim` is
//! off for it): it takes the stream's trim claim with the lease's token — the stream's other
//! owner then trims nothing — and every `trim_interval_ms` trims the stream exactly below the
//! lowest of: the first id not in the manifest (durable), every group's oldest pending and
//! next undelivered entry (nothing while a required group is missing), the partition
//! checkpoint's `snap_id`, and the retention ([`kitbash_runtime::trim::trim_to_floor`], one
//! script). The claim is renewed with the lease and given back with it.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use fred::prelude::*;
use kitbash_runtime::config::{ArchiveConfig, ConsumerConfig, StreamTrim};
use kitbash_runtime::consumer::{Acks, RawEntry, RawHandler, StreamConsumer, TakeError};
use kitbash_runtime::health::Health;
use kitbash_runtime::metrics::Metrics;
use kitbash_runtime::serve::Served;
use kitbash_runtime::trim::{self, TrimMode, TrimPlan};
use kitbash_runtime::{CancellationToken, DaemonContext, Redis, RuntimeError, TaskCtx};
use kitbash_schema::archive::{ManifestFile, stats};
use kitbash_schema::{DaemonKind, Keys, StreamName};
use tokio::sync::watch;

use crate::format::{self, Layout, Segment};
use crate::store::{Store, StoreError};

/// The streams this instance archives: `[archive] streams`, or every stream of the fleet.
pub fn streams(ctx: &DaemonContext) -> Vec<StreamName> {
    ctx.config.archived_streams()
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
    /// The heartbeat's figures (the archive's progress, [`kitbash_schema::archive::stats`]).
    reporter: Served,
    /// How the task trims the stream; `None`: it does not (`[archive] trim` off for it).
    trim: Option<StreamTrim>,
}

impl Archiver {
    /// An empty segment of this stream's layout and zstd level.
    fn segment(&self) -> Segment {
        empty_segment(self.stream, &self.cfg)
    }

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
            reporter: ctx.reporter(),
            trim: ctx
                .config
                .archive_trims(stream)
                .then(|| ctx.config.archive.trim_for(&stream.logical())),
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
        let claim_key = self.keys.trim_claim(self.stream);
        let claimed = match self.trim {
            Some(_) => {
                trim::claim(client, &claim_key, token, self.cfg.lease_ms).await?;
                Some(claim_key.clone())
            }
            None => None,
        };
        let renew = tokio::spawn(renew(
            client.clone(),
            lease_key.to_owned(),
            token.to_owned(),
            self.cfg.lease_ms,
            claimed.clone(),
            lost.clone(),
        ));
        let (archived_tx, archived_rx) = watch::channel(store.last_id());
        let trimmer = match self.trim {
            Some(settings) => {
                let stream_key = self.keys.stream(self.stream);
                let acked = trim::supports_acked(client, &stream_key)
                    .await
                    .unwrap_or(false);
                tracing::info!(stream = %self.stream, retention_ms = settings.retention_ms,
                    retention_entries = settings.retention_entries, acked,
                    "trimming the stream (its trim claim is taken)");
                let t = Trimmer {
                    client: client.clone(),
                    stream: self.stream,
                    checkpoint_key: self
                        .stream
                        .partitioned_by()
                        .map(|_| self.keys.checkpoint(self.stream)),
                    stream_key,
                    claim_key: claim_key.clone(),
                    token: token.to_owned(),
                    settings,
                    acked,
                    metrics: self.metrics.clone(),
                };
                Some(tokio::spawn(t.run(
                    Duration::from_millis(self.cfg.trim_interval_ms),
                    archived_rx,
                    lost.clone(),
                )))
            }
            None => None,
        };
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
        let gate = Arc::new(tokio::sync::Semaphore::new(1));
        let writer = Writer::new(self, store, archived_tx, gate.clone());
        let result = consumer.run(writer, lost.clone()).await;
        // A commit still running (the consumer stopped on an error) finishes before the lease
        // can pass to another holder; its entries stay pending.
        let _ = gate.acquire().await;
        lost.cancel();
        renew.abort();
        if let Some(t) = trimmer {
            // It stops at `lost`; a trim in flight is one script, finished or not sent.
            let _ = t.await;
        }
        if claimed.is_some() {
            let _ = trim::release_claim(client, &claim_key, token).await;
        }
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

/// The archive's trim of one stream while its task holds the lease and the trim claim.
#[derive(Debug)]
struct Trimmer {
    client: Client,
    stream: StreamName,
    stream_key: String,
    claim_key: String,
    checkpoint_key: Option<String>,
    token: String,
    settings: StreamTrim,
    acked: bool,
    metrics: Metrics,
}

impl Trimmer {
    /// Trims now and then every `period` until `lost`, each time below the newest archived
    /// position `archived` has seen.
    async fn run(
        self,
        period: Duration,
        archived: watch::Receiver<Option<(u64, u64)>>,
        lost: CancellationToken,
    ) {
        loop {
            let last = *archived.borrow();
            self.once(last).await;
            tokio::select! {
                biased;
                _ = lost.cancelled() => return,
                _ = tokio::time::sleep(period) => {}
            }
        }
    }

    async fn once(&self, archived: Option<(u64, u64)>) {
        // Everything at or below the manifest's last id is durable; `0-0` before the first
        // file: nothing may go.
        let floor = match archived {
            Some((ms, seq)) => trim::successor(&format!("{ms}-{seq}")),
            None => "0-0".to_owned(),
        };
        let plan = TrimPlan {
            stream_key: &self.stream_key,
            claim_key: &self.claim_key,
            checkpoint_key: self.checkpoint_key.as_deref(),
            required: self.stream.groups(),
            floor: Some((&floor, "archive")),
            retention_ms: self.settings.retention_ms,
            retention_entries: self.settings.retention_entries,
        };
        let mode = TrimMode::Owner {
            token: &self.token,
            acked: self.acked,
        };
        let logical = self.stream.logical();
        let labels = [("stream", logical.as_str())];
        match trim::trim_to_floor(&self.client, &plan, mode).await {
            Ok(r) => {
                let removed = r.removed.unwrap_or(0);
                self.metrics.inc(
                    "kitbash_archive_trimmed_total",
                    "Entries the archive trimmed from the streams it owns.",
                    &labels,
                    removed,
                );
                self.metrics.set(
                    "kitbash_archive_trim_kept_entries",
                    "Entries left in the stream after the archive's last trim (at or above its floor).",
                    &labels,
                    r.length as f64,
                );
                tracing::debug!(stream = %self.stream, removed, floor = ?r.floor, holder = %r.holder, length = r.length, "trimmed");
            }
            Err(e) => {
                tracing::warn!(stream = %self.stream, error = %e, "archive trim failed; will retry");
                self.metrics.inc(
                    "kitbash_trim_failures_total",
                    "Stream trims that failed (the stream grows until one succeeds).",
                    &labels,
                    1,
                );
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

/// Renews the lease (and the trim claim `claim`, when taken) every third of its length;
/// cancels `lost` when it is gone (or could not be renewed for a whole lease length).
async fn renew(
    client: Client,
    key: String,
    token: String,
    ms: u64,
    claim: Option<String>,
    lost: CancellationToken,
) {
    let mut last_ok = Instant::now();
    loop {
        tokio::select! {
            biased;
            _ = lost.cancelled() => return,
            _ = tokio::time::sleep(Duration::from_millis(ms / 3)) => {}
        }
        match kitbash_runtime::lease::renew(&client, &key, &token, ms).await {
            Ok(true) => {
                let kept = match &claim {
                    Some(c) => trim::renew_claim(&client, c, &token, ms).await,
                    None => Ok(true),
                };
                match kept {
                    Ok(true) => last_ok = Instant::now(),
                    Ok(false) => {
                        tracing::warn!(lease = %key, "the stream's trim claim is another instance's; stopping");
                        lost.cancel();
                        return;
                    }
                    Err(e) => {
                        tracing::warn!(lease = %key, error = %e, "cannot renew the trim claim; retrying");
                    }
                }
            }
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

/// An empty segment of `stream`'s layout at `[archive] zstd_level`.
fn empty_segment(stream: StreamName, cfg: &ArchiveConfig) -> Segment {
    Segment::new(Layout::of(stream)).with_zstd_level(cfg.zstd_level)
}

/// A full (or due) segment, sealed for its commit: its rows, the ids to acknowledge after
/// it, and its newest id.
#[derive(Debug)]
struct Sealed {
    segment: Segment,
    ids: Vec<String>,
    high: Option<(u64, u64)>,
}

type Committed = (Store, Sealed, Result<ManifestFile, StoreError>);

/// The raw handler: entries into the segment, the segment into the store, then the acks.
///
/// A segment sealed full while the stream has a backlog (the batch was a whole read) is
/// committed on a blocking thread while the next one fills — the read of the stream goes on
/// during the encoding and the fsyncs. One commit at a time and in id order: the next segment
/// is sealed only once the previous commit has finished, and a segment whose commit failed is
/// committed again before anything newer. At the stream's end (a short batch), on age and on
/// the way out the commit is waited for, so the acknowledgements do not wait for the next
/// read. Entries are acknowledged only after their own commit.
#[derive(Debug)]
pub struct Writer {
    stream: StreamName,
    /// The store, while no commit runs (a running commit has it).
    store: Option<Store>,
    /// The open segment.
    segment: Option<Segment>,
    /// Ids in the open segment (acknowledged after its commit).
    ids: Vec<String>,
    /// The commit running on a blocking thread, if any.
    committing: Option<tokio::task::JoinHandle<Committed>>,
    /// A segment whose commit failed: committed again first.
    failed: Option<Sealed>,
    /// An emptied segment, reused for the next one.
    spare: Option<Segment>,
    /// Entries a read asks for (`[consumer] batch`): a shorter batch is the stream's end.
    read_batch: usize,
    /// Held by a running commit; [`Archiver::hold`] takes it before it lets the lease go, so
    /// no commit of this writer outlives its consumer.
    gate: Arc<tokio::sync::Semaphore>,
    /// The newest id in the store: anything at or below is archived already.
    archived: Option<(u64, u64)>,
    /// The newest id in the store or a segment: anything at or below was taken already.
    high: Option<(u64, u64)>,
    started: Option<Instant>,
    cfg: Arc<ArchiveConfig>,
    metrics: Metrics,
    reporter: Served,
    /// Tells the trimmer each new archived position (only once the manifest is durable).
    archived_tx: watch::Sender<Option<(u64, u64)>>,
}

impl Writer {
    fn new(
        a: &Archiver,
        store: Store,
        archived_tx: watch::Sender<Option<(u64, u64)>>,
        gate: Arc<tokio::sync::Semaphore>,
    ) -> Self {
        let w = Self {
            archived_tx,
            stream: a.stream,
            archived: store.last_id(),
            high: store.last_id(),
            store: Some(store),
            segment: Some(a.segment()),
            ids: Vec::new(),
            committing: None,
            failed: None,
            spare: None,
            read_batch: a.consumer.batch,
            gate,
            started: None,
            cfg: Arc::new(a.cfg.clone()),
            metrics: a.metrics.clone(),
            reporter: a.reporter.clone(),
        };
        w.report();
        w
    }

    /// Puts the manifest's totals and the newest archived id in the heartbeat.
    fn report(&self) {
        let Some(store) = &self.store else { return };
        let files = &store.manifest().files;
        let stream = self.stream.logical();
        let put = |name: &str, v: u64| self.reporter.report(&stats::name(name, &stream), v);
        put(stats::FILES, files.len() as u64);
        put(stats::ROWS, files.iter().map(|f| f.rows).sum());
        put(stats::BYTES, files.iter().map(|f| f.bytes).sum());
        if let Some((ms, _)) = self.archived {
            put(stats::ARCHIVED_MS, ms);
        }
    }

    fn full(&self) -> bool {
        self.segment.as_ref().is_some_and(|s| {
            s.len() >= self.cfg.roll_entries || s.raw_bytes() >= self.cfg.roll_bytes
        })
    }

    /// Whether anything waits for a commit (the open segment, or one that failed).
    fn unsealed(&self) -> bool {
        self.failed.is_some() || self.segment.as_ref().is_some_and(|s| !s.is_empty())
    }

    /// Starts committing `sealed` on a blocking thread.
    async fn start(&mut self, sealed: Sealed) -> Result<(), TakeError> {
        let Some(mut store) = self.store.take() else {
            self.failed = Some(sealed);
            return Err(TakeError::Fatal("store lost by an earlier failure".into()));
        };
        let permit = self
            .gate
            .clone()
            .acquire_owned()
            .await
            .map_err(|e| TakeError::Fatal(format!("commit gate: {e}")))?;
        self.committing = Some(tokio::task::spawn_blocking(move || {
            let mut sealed = sealed;
            let r = store.commit(&mut sealed.segment);
            drop(permit);
            (store, sealed, r)
        }));
        Ok(())
    }

    /// Waits for the running commit, if any; acknowledges its entries once it is durable.
    async fn finish(&mut self, acks: &Acks) -> Result<(), TakeError> {
        let Some(task) = self.committing.take() else {
            return Ok(());
        };
        let (store, sealed, r) = task
            .await
            .map_err(|e| TakeError::Fatal(format!("commit task: {e}")))?;
        self.store = Some(store);
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
                acks.ack(sealed.ids);
                self.archived = sealed.high;
                self.archived_tx.send_replace(self.archived);
                self.report();
                self.spare = Some(sealed.segment);
                Ok(())
            }
            Err(e) => {
                // Kept (with its rows) and committed again before anything newer.
                self.failed = Some(sealed);
                match e {
                    StoreError::Fenced { .. } => Err(TakeError::Fatal(e.to_string())),
                    e => Err(TakeError::Transient(e.to_string())),
                }
            }
        }
    }

    /// Seals the open segment and starts its commit, after the running one has finished (and
    /// a failed one has been committed again, in the foreground). With `wait`, also waits for
    /// it.
    async fn commit(&mut self, acks: &Acks, wait: bool) -> Result<(), TakeError> {
        self.finish(acks).await?;
        if let Some(sealed) = self.failed.take() {
            self.start(sealed).await?;
            self.finish(acks).await?;
        }
        if self.segment.as_ref().is_some_and(|s| !s.is_empty()) {
            let next = self
                .spare
                .take()
                .unwrap_or_else(|| empty_segment(self.stream, &self.cfg));
            let Some(segment) = self.segment.replace(next) else {
                return Err(TakeError::Fatal(
                    "segment lost by an earlier failure".into(),
                ));
            };
            let sealed = Sealed {
                segment,
                ids: std::mem::take(&mut self.ids),
                high: self.high,
            };
            self.started = None;
            self.start(sealed).await?;
        }
        if wait {
            self.finish(acks).await?;
        }
        Ok(())
    }
}

impl RawHandler for Writer {
    async fn take(&mut self, batch: Vec<RawEntry>, acks: &Acks) -> Result<(), TakeError> {
        self.take_ref(&batch, acks).await
    }

    /// Copies each new entry into the segment as it is (the loop keeps the batch).
    async fn take_ref(&mut self, batch: &[RawEntry], acks: &Acks) -> Result<(), TakeError> {
        let backlog = batch.len() >= self.read_batch;
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
                already.push(e.id.clone());
                continue;
            }
            if self.high.is_some_and(|h| id <= h) {
                // In a segment (the same batch offered again after a refused commit).
                continue;
            }
            let Some(segment) = self.segment.as_mut() else {
                return Err(TakeError::Fatal(
                    "segment lost by an earlier failure".into(),
                ));
            };
            segment
                .push_fields(&e.id, &e.fields)
                .map_err(|err| TakeError::Fatal(err.to_string()))?;
            self.ids.push(e.id.clone());
            self.high = Some(id);
            self.started.get_or_insert_with(Instant::now);
            // Files hold at most roll_entries: seal as soon as the segment is full.
            if self.full() {
                acks.ack(std::mem::take(&mut already));
                self.commit(acks, false).await?;
            }
        }
        acks.ack(already);
        if !backlog {
            // Caught up: nothing to overlap the commit with.
            self.finish(acks).await?;
        }
        Ok(())
    }

    async fn tick(&mut self, acks: &Acks) -> Result<(), TakeError> {
        if self.committing.as_ref().is_some_and(|t| t.is_finished()) {
            self.finish(acks).await?;
        }
        let due = self
            .started
            .is_some_and(|t| t.elapsed() >= Duration::from_millis(self.cfg.roll_ms));
        if due || self.full() || self.failed.is_some() {
            self.commit(acks, true).await?;
        }
        Ok(())
    }

    async fn flush(&mut self, acks: &Acks) {
        if let Err(e) = self.commit(acks, true).await {
            tracing::warn!(stream = %self.stream, error = %e, entries = self.ids.len(),
                "cannot commit the open segment on the way out; its entries stay pending");
        }
        if self.unsealed() {
            tracing::warn!(stream = %self.stream,
                "entries not committed on the way out stay pending");
        }
    }
}
