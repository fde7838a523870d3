//! Ordered work over partitioned streams: exactly one worker per partition in the whole fleet,
//! by lease, with a fenced checkpoint — lifted out of feynman so every daemon that needs
//! per-key order (feynman's ticks, entity's documents) gets the same guarantees.
//!
//! # Layout
//! - this file: what a daemon provides ([`PartitionLogic`]) and how it describes its streams
//!   ([`PartitionSpec`]).
//! - `balance`: the lease manager: renews, counts live instances, aims at `ceil(P / live)`
//!   partitions, and keeps a registry of workers by identity.
//! - `worker`: one partition's worker: restore (snapshot + replay), read in order with
//!   `XREAD`, hand batches to the logic, commit each batch with its effects.
//! - [`commit`]: the commit script (compare-and-set on `last_id`: the fence) and its cluster form.
//! - [`snapshot`]: incremental snapshots of the logic's items and recent producer mids.
//! - [`determinism`]: the check every logic must pass — any batch split = replay entry by entry.
//!
//! **Invariant:** a partition is worked on by at most one worker at a time in one process, and
//! every commit is a compare-and-set on the partition checkpoint, so any commit that succeeds is
//! a correct continuation of the partition whoever made it.

pub(crate) mod balance;
pub mod commit;
pub mod determinism;
pub mod snapshot;
pub(crate) mod worker;

use std::future::Future;

use kitbash_schema::{Message, StreamName};

pub use commit::{Advance, Commit, CommitResult};

/// One message of a batch handed to [`PartitionLogic::apply`].
#[derive(Clone, Debug)]
pub struct Entry<M> {
    /// Stream entry id (`ms-seq`).
    pub id: String,
    /// The decoded, validated, correctly routed message.
    pub message: M,
}

/// A batch that cannot be applied now but will be later (see [`PartitionLogic::apply`]); the
/// reason is logged.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Transient(pub String);

impl std::fmt::Display for Transient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// What one batch produced besides the logic's state changes.
#[derive(Debug, Default)]
pub struct Effects {
    /// Writes committed atomically with the checkpoint (standalone) or just before it
    /// (cluster); see [`commit`].
    pub commit: Commit,
    /// Item keys changed other than the routing keys of the batch's messages (the runtime marks
    /// those itself), e.g. items the logic evicted: they are written (or deleted) at the next
    /// snapshot.
    pub dirty: Vec<String>,
}

/// What a partitioned daemon does with its messages. The runtime owns leases, reading, routing
/// checks, de-duplication by producer `mid`, dead letters, commits, snapshots and metrics.
///
/// State is kept per *item* (a symbol, a document), named by the message's routing key: the
/// runtime snapshots changed items incrementally and, on recovery, replays to each item only the
/// entries newer than its own snapshot.
pub trait PartitionLogic: Send + Sync + 'static {
    /// The stream's message type.
    type Message: Message + Send + Sync;
    /// Everything one partition keeps in memory.
    type State: Send + Sync + 'static;

    /// The key that routes a message to its partition (`partition_of(key, P)`): the symbol of a
    /// tick, the document of a patch. Entries found in the wrong partition are dead-lettered.
    fn route_key<'a>(&self, message: &'a Self::Message) -> &'a str;

    /// An empty state for partition `p`.
    fn empty(&self, p: u32) -> Self::State;

    /// Restores one snapshotted item into `state`.
    fn restore_item(&self, state: &mut Self::State, key: &str, bytes: &[u8]) -> Result<(), String>;

    /// Re-applies an already committed entry during recovery: state only, no effects.
    fn replay(&self, state: &mut Self::State, entry: &Entry<Self::Message>);

    /// Applies a batch in stream order, adding its effects to `out`. Returns one result per
    /// entry: `Err(reason)` dead-letters that entry (its state changes must not have happened).
    ///
    /// `Err(Transient)` says the whole batch could not be applied *now* (Redis refused a write
    /// the logic makes itself, [`crate::redis::is_transient`]): the runtime keeps the batch,
    /// reads nothing new, reports the partition not ready, and calls `apply` again with the
    /// same batch and a fresh `out` under its backoff — so the state must be as before, or
    /// such that applying the batch again gives the same result (entity's per-document
    /// `applied` position makes its partial commits so). Nothing is dead-lettered for it.
    fn apply(
        &self,
        state: &mut Self::State,
        batch: &[Entry<Self::Message>],
        out: &mut Effects,
    ) -> impl Future<Output = Result<Vec<Result<(), String>>, Transient>> + Send;

    /// The item's snapshot bytes, or `None` when it no longer exists (deleted from the snapshot).
    fn encode_item(&self, state: &Self::State, key: &str) -> Option<Vec<u8>>;
}

/// Which streams a partitioned component works on and how.
#[derive(Clone, Debug)]
pub struct PartitionSpec {
    /// Partition `p`'s stream (`StreamName::Ticks`).
    pub stream: fn(u32) -> StreamName,
    /// Number of partitions.
    pub partitions: u32,
    /// Lease length, ms: a dead instance's partitions move after at most this long.
    pub lease_ms: u64,
    /// How often changed items are snapshotted, ms; recovery replays about this much.
    pub snapshot_ms: u64,
    /// An item is snapshotted only once it has waited this long since its first unsnapshotted
    /// change, ms (0 = at the next snapshot): a busy item is encoded once per this period
    /// instead of once per `snapshot_ms`; recovery replays at most about this much more.
    pub snapshot_item_ms: u64,
    /// Most items encoded per commit; more changed items are spread over the next commits (the
    /// snapshot position is the oldest unsnapshotted change, so recovery stays exact).
    pub snapshot_max_items: usize,
    /// Most snapshot bytes encoded per commit (at least one item): a due snapshot is written
    /// in pieces over the next commits, so one batch never waits for every changed item at
    /// once. A round still unfinished when the next falls due is finished in that commit.
    pub snapshot_max_bytes: usize,
    /// A commit's words are kept near this many bytes: a worker's first read takes
    /// 16 entries (`MIN_READ`); after a larger commit it reads half as many (that many at
    /// least), and doubles up to `[consumer] batch` while twice the last commit would fit. Any
    /// batch boundary gives the same state ([`determinism::split_equals_replay`]), so this bounds memory, not results.
    pub commit_max_bytes: usize,
    /// The partition streams are trimmed (safely, see [`crate::trim`]) near this many entries;
    /// 0 = never trimmed.
    pub stream_max: u64,
    /// The name used for the partitions' dead letters' `group` field and metrics (`feynman`).
    pub group: &'static str,
}
