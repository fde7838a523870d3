//! Replay: a stream's entries in an id range, from the archive, from Redis, or both with an
//! exact seam, written into a fresh stream with their original ids (in this namespace or a
//! sandbox one) or into a live stream with new ids and the original id in a field.
//!
//! The seam: the archive holds everything up to its manifest's last id; Redis is read from
//! just after it (`XRANGE (last …`), so an entry in both is taken once, from the archive, and
//! nothing between them is skipped as long as the stream was trimmed only below what was
//! archived. Entries come out in id order either way.

use std::path::Path;
use std::time::{Duration, Instant};

use fred::prelude::*;
use fred::types::Value;
use kitbash_schema::StreamName;

use crate::bulk;
use crate::format::{self, Entry};
use crate::store;

/// The field a replay into a live stream adds, holding the entry's original id.
pub const REPLAY_OF: &str = kitbash_schema::archive::REPLAY_OF;

/// Failures of a replay.
#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    /// Redis refused or could not be reached.
    #[error("redis: {0}")]
    Redis(#[from] fred::error::Error),
    /// The archive could not be read.
    #[error(transparent)]
    Store(#[from] store::StoreError),
    /// A reply of an unexpected shape.
    #[error(transparent)]
    Runtime(#[from] kitbash_runtime::RuntimeError),
    /// The target cannot take entries with their original ids.
    #[error("{0}")]
    Target(String),
    /// The bulk writer's connection failed, or Redis refused one of its commands.
    #[error("replay: {0}")]
    Bulk(String),
    /// The bulk writer's connection broke.
    #[error("replay connection: {0}")]
    Io(#[from] std::io::Error),
}

/// Where entries come from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Source {
    /// The stream in Redis only.
    Redis,
    /// The archive only.
    Archive,
    /// The archive up to its last id, then Redis after it.
    Both,
}

/// An inclusive id range (`ms-seq` pairs); `None` ends are open.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Range {
    /// First id, inclusive.
    pub from: Option<(u64, u64)>,
    /// Last id, inclusive.
    pub to: Option<(u64, u64)>,
}

impl Range {
    fn contains(&self, id: (u64, u64)) -> bool {
        self.from.is_none_or(|f| id >= f) && self.to.is_none_or(|t| id <= t)
    }
}

/// What was selected, by source.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Selection {
    /// The entries, in id order.
    pub entries: Vec<Entry>,
    /// How many came from the archive.
    pub from_archive: usize,
    /// How many came from Redis.
    pub from_redis: usize,
}

impl Selection {
    /// Entries per `type` field value (`-` for entries without one).
    pub fn types(&self) -> std::collections::BTreeMap<String, usize> {
        let mut m = std::collections::BTreeMap::new();
        for e in &self.entries {
            let t = e
                .fields
                .iter()
                .find(|(k, _)| k == b"type")
                .map_or("-".to_owned(), |(_, v)| {
                    String::from_utf8_lossy(v).into_owned()
                });
            *m.entry(t).or_insert(0) += 1;
        }
        m
    }
}

/// Selects the entries of `stream` in `range` from `source`. `archive_root` is the
/// namespace's archive directory; `key` the stream's key in Redis.
pub async fn select(
    client: &Client,
    archive_root: &Path,
    stream: StreamName,
    key: &str,
    range: Range,
    source: Source,
) -> Result<Selection, ReplayError> {
    let mut sel = Selection::default();
    let mut after: Option<(u64, u64)> = None;
    if source != Source::Redis {
        let manifest = store::read_manifest(&store::stream_dir(archive_root, stream), stream)?;
        after = manifest.last_id().and_then(|id| format::parse_id(id).ok());
        let mut archived = store::read_all(archive_root, stream)?;
        archived.retain(|e| format::parse_id(&e.id).is_ok_and(|id| range.contains(id)));
        sel.entries = archived;
        sel.from_archive = sel.entries.len();
    }
    if source != Source::Archive {
        let start = match (after, range.from) {
            (Some((ms, seq)), f) if f.is_none_or(|f| f <= (ms, seq)) => format!("({ms}-{seq}"),
            (_, Some((ms, seq))) => format!("{ms}-{seq}"),
            (_, None) => "-".to_owned(),
        };
        let end = range
            .to
            .map_or("+".to_owned(), |(ms, seq)| format!("{ms}-{seq}"));
        let mut cursor = start;
        loop {
            let v: Value = client
                .xrange(key, cursor.as_str(), end.as_str(), Some(1_000))
                .await?;
            let batch = kitbash_runtime::entries::parse_entries("XRANGE", &v)?;
            let Some(last) = batch.last().map(|e| e.id.clone()) else {
                break;
            };
            let n = batch.len();
            for e in batch {
                sel.entries.push(Entry {
                    id: e.id,
                    fields: e
                        .fields
                        .unwrap_or_default()
                        .into_iter()
                        .map(|(k, v)| (k.to_vec(), v.to_vec()))
                        .collect(),
                });
                sel.from_redis += 1;
            }
            if n < 1_000 {
                break;
            }
            cursor = format!("({last}");
        }
    }
    Ok(sel)
}

/// How the entries are written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ids {
    /// With their original ids (the target must be empty, or end below the first one).
    Original,
    /// With new ids (`*`), the original id in a [`REPLAY_OF`] field at the end.
    New,
}

/// How fast.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Pace {
    /// As fast as possible (pipelined).
    Max,
    /// At the recorded pace (entry id times) multiplied by this factor (1 = recorded speed).
    Speed(f64),
}

/// Writes `entries` to `target`; calls `progress(written)` now and then. Returns how many
/// were written.
pub async fn write(
    client: &Client,
    target: &str,
    entries: &[Entry],
    ids: Ids,
    pace: Pace,
    mut progress: impl FnMut(usize),
) -> Result<usize, ReplayError> {
    if let (Ids::Original, Some(first)) = (ids, entries.first()) {
        let top = top_id(client, target).await?;
        let first_id =
            format::parse_id(&first.id).map_err(|e| ReplayError::Target(e.to_string()))?;
        if top.is_some_and(|t| t >= first_id) {
            return Err(ReplayError::Target(format!(
                "{target} already holds ids up to {}-{}, at or above the first replayed id {}: \
                     replay keeping ids needs a fresh stream (or --new-ids)",
                top.map_or(0, |t| t.0),
                top.map_or(0, |t| t.1),
                first.id
            )));
        }
    }
    let started = Instant::now();
    let first_ms = entries
        .first()
        .and_then(|e| format::parse_id(&e.id).ok())
        .map(|i| i.0);
    let xadd = |e: &Entry| {
        let mut args: Vec<Value> = Vec::with_capacity(4 + 2 * e.fields.len());
        args.push(target.into());
        match ids {
            Ids::Original => args.push(e.id.as_str().into()),
            Ids::New => args.push("*".into()),
        }
        for (k, v) in &e.fields {
            args.push(Value::Bytes(k.clone().into()));
            args.push(Value::Bytes(v.clone().into()));
        }
        if ids == Ids::New {
            args.push(REPLAY_OF.into());
            args.push(e.id.as_str().into());
        }
        args
    };
    let cmd = || kitbash_runtime::redis::command_for_key("XADD", target, false);
    let mut written = 0;
    if pace == Pace::Max
        && let Some(endpoint) = bulk::Endpoint::of(client)
    {
        match bulk::open(&endpoint).await {
            Ok(conn) => return conn.write(target, entries, ids, &mut progress).await,
            Err(e) => tracing::warn!(error = %e,
                "replay: cannot open a connection of its own to Redis; writing through the client"),
        }
    }
    if pace == Pace::Max {
        // Several pipelines in flight on the one connection, sent strictly in entry order
        // (original ids must ascend; new ids follow the recorded order). A pipeline's `all()`
        // hands its commands to fred's router in its first poll, before it waits for the
        // replies: each is polled once here, in order, before the next is built; then the
        // oldest is awaited whenever the window is full.
        let mut window: std::collections::VecDeque<_> = std::collections::VecDeque::new();
        for chunk in entries.chunks(MAX_PIPELINE) {
            let pipe = client.pipeline();
            for e in chunk {
                pipe.custom::<Value, Value>(cmd(), xadd(e)).await?;
            }
            let mut sent = Box::pin(async move { pipe.all::<Vec<Value>>().await });
            if let std::task::Poll::Ready(r) = futures::poll!(sent.as_mut()) {
                written += r?.len();
                progress(written);
            } else {
                window.push_back(sent);
            }
            if window.len() >= PIPELINES_IN_FLIGHT
                && let Some(oldest) = window.pop_front()
            {
                written += oldest.await?.len();
                progress(written);
            }
        }
        for rest in window {
            written += rest.await?.len();
            progress(written);
        }
        return Ok(written);
    }
    for e in entries {
        let at = format::parse_id(&e.id).ok();
        if let (Pace::Speed(x), Some(base), Some((ms, _))) = (pace, first_ms, at) {
            let due =
                Duration::from_secs_f64(ms.saturating_sub(base) as f64 / 1000.0 / x.max(1e-9));
            if let Some(wait) = due.checked_sub(started.elapsed()) {
                tokio::time::sleep(wait).await;
            }
        }
        let _: Value = client.custom(cmd(), xadd(e)).await?;
        written += 1;
        progress(written);
    }
    Ok(written)
}

/// Entries per pipeline when replaying as fast as possible …
const MAX_PIPELINE: usize = 500;
/// … and pipelines in flight at once.
const PIPELINES_IN_FLIGHT: usize = 8;

async fn top_id(client: &Client, key: &str) -> Result<Option<(u64, u64)>, ReplayError> {
    let v: Value = client.xrevrange(key, "+", "-", Some(1)).await?;
    let last = kitbash_runtime::entries::parse_entries("XREVRANGE", &v)?;
    Ok(last.first().and_then(|e| format::parse_id(&e.id).ok()))
}
