//! Recovery: the publications of one channel after a client's offset, read from the backing
//! stream up to the position the subscription registered at.
//!
//! The range is read first (`XRANGE (from P`, in chunks), then `XINFO STREAM` says whether
//! anything after the client's position was trimmed or deleted ([`kitbash_runtime::tail::StreamInfo::lost_after`]):
//! a trim can only move the stream's start forward, so one that happened before or during the
//! read shows in the check after it. The answer is complete only when nothing was lost, every
//! entry has an offset, at most `[bridge] recover_scan_max` entries had to be read and at most
//! `recover_max` publications were found.

use fred::prelude::*;
use fred::types::Value;
use kitbash_runtime::RuntimeError;
use kitbash_runtime::entries::{self, id_cmp};
use kitbash_runtime::redis::command_for_key;
use kitbash_runtime::tail::stream_info;
use kitbash_schema::bridge::{self, Channel};
use kitbash_schema::{Keys, StreamName};

use crate::feed;

/// What a recovery found.
#[derive(Debug, PartialEq)]
pub enum Recovery {
    /// Every publication after the client's offset, oldest first (publication objects).
    Complete(Vec<String>),
    /// Not every one can be given (trimmed, too many, an entry without an offset): the client
    /// gets `recovered: false` and reloads.
    Incomplete(&'static str),
}

/// Limits of one recovery.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// Most publications returned.
    pub max_publications: usize,
    /// Most entries read.
    pub max_scan: usize,
}

const CHUNK: usize = 1000;

/// The publications of `channel` after `offset` up to stream position `upto` (inclusive).
pub async fn recover(
    client: &Client,
    keys: &Keys,
    stream: StreamName,
    channel: &Channel,
    offset: u64,
    upto: &str,
    limits: Limits,
) -> Result<Recovery, RuntimeError> {
    let Some(from) = bridge::id_of(offset) else {
        return Ok(Recovery::Incomplete("offset out of range"));
    };
    match id_cmp(&from, upto) {
        // The client is ahead of this instance's reader (it came from another instance that
        // had read further): nothing to recover, if the stream really holds its position —
        // the connection skips the live publications up to it.
        std::cmp::Ordering::Greater => {
            let key = keys.stream(stream);
            return Ok(match stream_info(client, &key).await? {
                Some(info) if !id_cmp(&info.last_generated, &from).is_lt() => {
                    Recovery::Complete(Vec::new())
                }
                _ => Recovery::Incomplete("position ahead of the stream"),
            });
        }
        // Nothing was added after the client's position before it subscribed here.
        std::cmp::Ordering::Equal => return Ok(Recovery::Complete(Vec::new())),
        std::cmp::Ordering::Less => {}
    }
    let key = keys.stream(stream);
    let mut pubs = Vec::new();
    let mut scanned = 0usize;
    let mut start = format!("({from}");
    {
        loop {
            let cmd = command_for_key("XRANGE", &key, false);
            let args: Vec<Value> = vec![
                key.as_str().into(),
                start.as_str().into(),
                upto.into(),
                "COUNT".into(),
                (CHUNK as i64).into(),
            ];
            let reply: Value = client.custom(cmd, args).await?;
            let got = entries::parse_entries("XRANGE", &reply)?;
            let Some(last) = got.last() else { break };
            let last = last.id.clone();
            scanned += got.len();
            for e in &got {
                let Some(o) = bridge::offset_of(&e.id) else {
                    return Ok(Recovery::Incomplete("an entry without an offset"));
                };
                if let Ok(d) = feed::decode(stream, keys, e) {
                    let chans = bridge::channels_of(stream, &d.route);
                    if chans.iter().flatten().any(|c| c == channel) {
                        pubs.push(crate::protocol::publication(&d.data, o));
                        if pubs.len() > limits.max_publications {
                            return Ok(Recovery::Incomplete("more than recover_max publications"));
                        }
                    }
                }
            }
            if got.len() < CHUNK || id_cmp(&last, upto).is_ge() {
                break;
            }
            if scanned >= limits.max_scan {
                return Ok(Recovery::Incomplete("more than recover_scan_max entries"));
            }
            start = format!("({last}");
        }
    }
    match stream_info(client, &key).await? {
        Some(info) if info.lost_after(&from) => Ok(Recovery::Incomplete("trimmed")),
        // A missing stream with a position to recover from: its history is gone.
        None if offset > 0 => Ok(Recovery::Incomplete("no stream")),
        _ => Ok(Recovery::Complete(pubs)),
    }
}
