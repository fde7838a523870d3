//! A tail reader: `XREAD BLOCK` from an id on its own connection, no consumer group (every instance sees every entry), telling apart entries, no news, and entries lost to a trim or a restarted stream.
//!
//! # The check
//! Before a read, the reader may check the stream with `XINFO STREAM` (Redis ≥ 7.0):
//! - `last-generated-id` below the position: the stream was deleted and recreated (or restored
//!   from an older file) — [`Tail::Behind`]; the reader then reads the new stream from its start
//!   (`0-0`).
//! - entries after the position were trimmed or deleted — [`Tail::Trimmed`]; the reader then
//!   goes on from the first entry still there (or from its position, if that entry is older).
//!   An `XDEL` is detected exactly: `max-deleted-entry-id` above the position. An `XTRIM` (or
//!   `MAXLEN` on `XADD`) does not move `max-deleted-entry-id` (checked on Redis 7.0.15); it shows
//!   as a first entry past the position while `entries-added` exceeds `length`. That never misses
//!   a trim past the position, but also reports one that ended exactly at it (the position
//!   itself trimmed, nothing after it) unless the first entry left is the very next id: a false
//!   alarm on the safe side.
//!
//! Each loss is reported once. The check runs on the first read (and after [`TailReader::seek`]),
//! after a read that returned a full batch (the reader is behind, where a trim overtakes it), and
//! after a block that timed out (a quiet stream, where the check is cheap and a recreated stream
//! whose ids are all below the position would otherwise never show). It does not run after a
//! partial batch: a trim that removes entries newer than what a caught-up reader has read, in
//! the moment between two reads, goes unreported until the next check. The check and the read
//! are two commands, so a trim between them is reported at the next check.
//!
//! A missing stream is no news. `$` as the start is resolved on the first read to the stream's
//! `last-generated-id` (`0-0` when missing), so no entry added between reads is skipped.
//! Redis errors are returned (see [`RuntimeError::is_transient`]); the reader stays usable and
//! its position unchanged. Dropping the reader aborts its connection task.

use std::time::Duration;

use fred::prelude::*;
use fred::types::{ConnectHandle, Value};

use crate::entries::{self, StreamEntry, id_cmp, parse_id};
use crate::error::RuntimeError;
use crate::redis::{Redis, command_for_key};

/// What one [`TailReader::next`] found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Tail {
    /// Entries after the position, oldest first.
    Entries(Vec<StreamEntry>),
    /// Nothing new within the block (or the stream does not exist).
    NoNews,
    /// Entries after `asked` were trimmed or deleted before they were read.
    Trimmed {
        /// The position the reader was at.
        asked: String,
        /// The oldest entry still in the stream, if any.
        first_available: Option<String>,
    },
    /// The stream's newest id ever generated is below `asked`: it was deleted and recreated (or
    /// restored from an older file). The reader now reads it from its start.
    Behind {
        /// The position the reader was at.
        asked: String,
        /// The stream's `last-generated-id`.
        last: String,
    },
}

/// The parts of `XINFO STREAM` the check reads ([`stream_info`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StreamInfo {
    /// `last-generated-id`.
    pub last_generated: String,
    /// `max-deleted-entry-id` (`0-0` before Redis 7.0).
    pub max_deleted: String,
    /// The oldest entry's id, if any.
    pub first_entry: Option<String>,
    /// `entries-added` exceeds `length`: some entry was trimmed or deleted (always true before
    /// Redis 7.0, which does not say).
    pub removed: bool,
}

impl StreamInfo {
    /// Whether any entry after `position` was trimmed or deleted, by the rule of the module
    /// docs (exact for `XDEL`; for a trim, safe-side: a trim that ended exactly at `position`
    /// may be reported too, unless the first entry left is the very next id).
    pub fn lost_after(&self, position: &str) -> bool {
        id_cmp(&self.max_deleted, position).is_gt()
            || (self.removed
                && self
                    .first_entry
                    .as_deref()
                    .is_some_and(|f| id_cmp(&predecessor(f), position).is_gt()))
    }
}

/// A reader of one stream from a position. See the module docs.
pub struct TailReader {
    client: Client,
    connection: Option<ConnectHandle>,
    key: String,
    position: String,
    count: usize,
    block: Duration,
    /// Check before the next read.
    check: bool,
    /// The highest `max-deleted-entry-id` already reported (or known not to matter).
    reported_deleted: String,
}

impl std::fmt::Debug for TailReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TailReader")
            .field("key", &self.key)
            .field("position", &self.position)
            .finish_non_exhaustive()
    }
}

impl Drop for TailReader {
    fn drop(&mut self) {
        if let Some(t) = self.connection.take() {
            t.abort();
        }
    }
}

impl TailReader {
    /// A reader of `key` after `from` (an id, `0` for everything, `$` for what comes next),
    /// `count` entries at most per read, blocking up to `block` (zero: no `BLOCK`, a poll).
    /// Its connection (a `clone_new` of `redis`) is made on the first read.
    pub fn new(redis: &Redis, key: String, from: String, count: usize, block: Duration) -> Self {
        Self {
            client: redis.client.clone_new(),
            connection: None,
            key,
            position: from,
            count: count.max(1),
            block,
            check: true,
            reported_deleted: "0-0".into(),
        }
    }

    /// The id after which the next read starts (`$` until the first read resolves it).
    pub fn position(&self) -> &str {
        &self.position
    }

    /// Moves to `id` (an id, `0` or `$`); the next read checks the stream first.
    pub fn seek(&mut self, id: impl Into<String>) {
        self.position = id.into();
        self.check = true;
        self.reported_deleted = "0-0".into();
    }

    /// Reads what comes after the position. See [`Tail`].
    pub async fn next(&mut self) -> Result<Tail, RuntimeError> {
        if self.connection.is_none() {
            self.connection = Some(self.client.connect());
        }
        if self.check || self.position == "$" {
            let info = self.info().await?;
            if self.position == "$" {
                self.position = info
                    .as_ref()
                    .map_or_else(|| "0-0".to_owned(), |i| i.last_generated.clone());
            }
            // `check` stays set until a read succeeds: a failed read checks again.
            if let Some(t) = info.and_then(|info| self.judge(info)) {
                return Ok(t);
            }
        }
        let mut args: Vec<Value> = vec!["COUNT".into(), (self.count as i64).into()];
        let blocking = !self.block.is_zero();
        if blocking {
            args.push("BLOCK".into());
            args.push((self.block.as_millis() as i64).into());
        }
        args.push("STREAMS".into());
        args.push(self.key.as_str().into());
        args.push(self.position.as_str().into());
        let cmd = command_for_key("XREAD", &self.key, blocking);
        // The command timeout must outlast the block itself.
        let opts = Options {
            timeout: Some(self.block + self.client.perf_config().default_command_timeout),
            ..Default::default()
        };
        let reply: Value = self.client.with_options(&opts).custom(cmd, args).await?;
        let got = entries::parse_xread(&reply)?;
        match got.last() {
            None => {
                self.check = true;
                Ok(Tail::NoNews)
            }
            Some(last) => {
                self.position = last.id.clone();
                self.check = got.len() >= self.count;
                Ok(Tail::Entries(got))
            }
        }
    }

    /// Applies the check to `info`; moves the position past a loss it reports.
    fn judge(&mut self, info: StreamInfo) -> Option<Tail> {
        let asked = self.position.clone();
        if id_cmp(&info.last_generated, &asked).is_lt() {
            self.position = "0-0".into();
            self.reported_deleted = "0-0".into();
            return Some(Tail::Behind {
                asked,
                last: info.last_generated,
            });
        }
        // XDEL after the position: exact. XTRIM does not move `max-deleted-entry-id` (Redis 7.0),
        // so a trim shows as a first entry past the position while entries were removed.
        let deleted = id_cmp(&info.max_deleted, &asked).is_gt()
            && id_cmp(&info.max_deleted, &self.reported_deleted).is_gt();
        // Some id lies between the position and the first entry, and something was removed.
        let trimmed = info.removed
            && info
                .first_entry
                .as_deref()
                .is_some_and(|f| id_cmp(&predecessor(f), &asked).is_gt());
        if deleted || trimmed {
            if deleted {
                self.reported_deleted = info.max_deleted;
            }
            if let Some(first) = &info.first_entry {
                let before_first = predecessor(first);
                if id_cmp(&before_first, &asked).is_gt() {
                    self.position = before_first;
                }
            }
            return Some(Tail::Trimmed {
                asked,
                first_available: info.first_entry,
            });
        }
        None
    }

    /// `XINFO STREAM`; `None` when the stream does not exist.
    async fn info(&self) -> Result<Option<StreamInfo>, RuntimeError> {
        stream_info(&self.client, &self.key).await
    }
}

/// `XINFO STREAM key`, the parts a reader's loss check needs; `None` when the stream does not
/// exist.
pub async fn stream_info(client: &Client, key: &str) -> Result<Option<StreamInfo>, RuntimeError> {
    let cmd = command_for_key("XINFO", key, false);
    let args: Vec<Value> = vec!["STREAM".into(), key.into()];
    let reply: Value = match client.custom(cmd, args).await {
        Ok(v) => v,
        Err(e) if e.details().contains("no such key") => return Ok(None),
        Err(e) => return Err(e.into()),
    };
    let pairs: Vec<(String, Value)> = match reply {
        Value::Array(kv) => kv
            .chunks(2)
            .filter_map(|p| match p {
                [k, v] => entries::string_of(k).map(|k| (k, v.clone())),
                _ => None,
            })
            .collect(),
        Value::Map(m) => m
            .inner()
            .into_iter()
            .filter_map(|(k, v)| k.as_str().map(|k| (k.to_string(), v)))
            .collect(),
        other => {
            return Err(RuntimeError::Reply {
                command: "XINFO",
                detail: format!("{other:?}"),
            });
        }
    };
    let field = |name: &str| pairs.iter().find(|(k, _)| k == name).map(|(_, v)| v);
    let last_generated = field("last-generated-id")
        .and_then(entries::string_of)
        .ok_or_else(|| RuntimeError::Reply {
            command: "XINFO",
            detail: "no last-generated-id".into(),
        })?;
    // Absent before Redis 7.0: no deletion can then be detected.
    let max_deleted = field("max-deleted-entry-id")
        .and_then(entries::string_of)
        .unwrap_or_else(|| "0-0".into());
    let first_entry = match field("first-entry") {
        Some(Value::Array(e)) => e.first().and_then(entries::string_of),
        _ => None,
    };
    let number = |name: &str| match field(name) {
        Some(Value::Integer(n)) => Some(*n),
        Some(v) => entries::string_of(v).and_then(|s| s.parse().ok()),
        None => None,
    };
    let removed = match (number("entries-added"), number("length")) {
        (Some(added), Some(length)) => added > length,
        // Before Redis 7.0: assume the worst when the first entry is past the position.
        _ => true,
    };
    Ok(Some(StreamInfo {
        last_generated,
        max_deleted,
        first_entry,
        removed,
    }))
}

/// The id just below `id` (`0-0` stays `0-0`).
fn predecessor(id: &str) -> String {
    match parse_id(id) {
        (0, 0) => "0-0".into(),
        (ms, 0) => format!("{}-{}", ms - 1, u64::MAX),
        (ms, seq) => format!("{ms}-{}", seq - 1),
    }
}

#[cfg(test)]
mod tests {
    use super::predecessor;

    #[test]
    fn predecessor_steps_back_one_id() {
        assert_eq!(predecessor("5-3"), "5-2");
        assert_eq!(predecessor("5-0"), format!("4-{}", u64::MAX));
        assert_eq!(predecessor("0-0"), "0-0");
    }
}
