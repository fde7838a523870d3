//! `kitbash-archive`: every stream kept as Parquet files any engine reads (DuckDB, pyarrow,
//! polars), entries acknowledged only once their file and the manifest are durable, so
//! Redis's pending list is the write-ahead log.
//!
//! - [`format`](mod@format): segments to Parquet files and back, byte-identical (the layout is
//!   `kitbash_schema::archive`);
//! - [`store`]: one stream's directory — temporary file, fsync, rename, directory fsync,
//!   fenced manifest — and its verification;
//! - [`archiver`]: the daemon, one long-running task per stream under the stream's lease;
//! - [`replay`]: an id range from the archive and/or Redis (an exact seam) into a stream (at
//!   full speed by `bulk`, RESP streamed on a connection of its own);
//! - [`index`]: seed 004's memory-token indexing, the `index` group on the memory stream.

pub mod archiver;
mod bulk;
pub mod format;
pub mod index;
pub mod replay;
pub mod store;

use kitbash_runtime::task::Restart;
use kitbash_runtime::{Components, Config, DaemonContext, RuntimeError, Signals};
use kitbash_schema::messages::MemoryToken;
use kitbash_schema::{DaemonKind, Group, StreamName};

/// What the daemon runs: a task per archived stream, and the memory-token indexer (the
/// `index` group on the memory stream, and its trim).
pub fn components(ctx: &DaemonContext) -> Components {
    // `[consumer]` with `[consumer.streams.memory]`, as the archiver of the stream reads it.
    let indexing = ctx
        .config
        .consumer
        .for_stream(&StreamName::Memory.logical());
    let bounds = index::bounds(ctx);
    let mut c = Components::new(ctx)
        .consume_in::<MemoryToken, _>(
            Group::MEMORY_INDEX,
            StreamName::Memory,
            indexing,
            index::Indexer::new(ctx),
        )
        .every("memory stream bounds", index::TRIM_EVERY, move || {
            bounds.clone().run_owned()
        });
    for stream in archiver::streams(ctx) {
        let a = archiver::Archiver::new(ctx, stream);
        // Task names are 'static; a daemon names its streams once, at start.
        let name: &'static str = Box::leak(format!("archive {stream}").into_boxed_str());
        c = c.task(name, Restart::DEFAULT_BACKOFF, move |task| {
            let a = a.clone();
            async move { a.run(task).await }
        });
    }
    c
}

/// Runs one instance in-process until `signals.shutdown` (what the binary runs; tests call it).
pub async fn run(config: Config, signals: Signals) -> Result<(), RuntimeError> {
    kitbash_runtime::daemon::run(DaemonKind::Archive, config, signals, components).await
}
