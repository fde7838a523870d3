//! Where documents live: the [`DocumentStore`] seam, and [`StringStore`], which keeps each
//! document as a JSON string (`GET` + parse for readers; this Debian Redis has no JSON module).
//! A RedisJSON-backed store would implement the same trait.
//!
//! A commit is a compare-and-set per document on its `version` and `applied` (its metadata
//! hash), then `SET` of the new bytes, one entry per change in the changes stream and in the
//! document's bounded timeline, and one `PUBLISH quantum:updates` per change carrying the
//! change's stream id. One script commits many documents of a batch at once (up to
//! [`DOCS_PER_SCRIPT`] documents or [`BYTES_PER_SCRIPT`] bytes of arguments; more go in further
//! scripts, pipelined), each with its own compare-and-set and its own outcome: a document whose
//! version moved is refused alone. A script that fails on one document's keys (a key of another
//! type) is sent again one document per script, so that document fails alone (the documents
//! the failed script already wrote then come back as moved to their new version, which the
//! partition logic recognises as applied). The script only moves bytes Rust produced: Lua's
//! `cjson` never touches a document.
//!
//! On a Redis Cluster the changes stream is in another slot than the documents, so a commit is
//! three steps instead of one script (see [`StringStore`]'s cluster path): the document's
//! script (compare-and-set, the bytes, the metadata with an *outbox* of the changes), then the
//! changes stream's entries, then `quantum:updates` and the timeline, which also clear the
//! outbox. A document with an outbox takes no further commit until it is flushed, and whoever
//! meets one (a load, a refused commit) flushes it first, so every committed change reaches the
//! changes stream in the document's order — at least once: a crash between the entries and the
//! outbox's removal writes them again (same `key` and `version`; readers that must not see a
//! change twice skip a `version` they already have).
//!
//! The changes stream is a work stream (`StreamName::EntityChanges`): the commit appends to it
//! without `MAXLEN`, and the entity daemon trims it safely (`[entity] changes_max`). The
//! timeline is a per-document history, not a `StreamName`: no group reads it, so its commit
//! caps it exactly (`XADD … MAXLEN timeline_max`), the document's newest changes.

use std::future::Future;
use std::sync::LazyLock;

use fred::prelude::*;
use fred::types::Value;
use fred::types::scripts::Script;
use kitbash_schema::messages::entity_change as f;
use kitbash_schema::{Keys, StreamName};

/// A store failure (Redis unreachable, an unexpected reply).
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// Redis failed or timed out.
    #[error("redis: {0}")]
    Redis(#[from] fred::error::Error),
    /// The commit script answered something else than one outcome per document.
    #[error("unexpected reply committing {key}: {why}")]
    Reply {
        /// The document key.
        key: String,
        /// What came back.
        why: String,
    },
    /// A change committed to its document (cluster) is not yet in the changes stream: the
    /// batch is held until it is (transient), because the document takes no other commit
    /// until then.
    #[error("{key}: committed, but its changes are not yet in the changes stream: {why}")]
    Outbox {
        /// The document key.
        key: String,
        /// What failed.
        why: String,
    },
    /// A stored document is not JSON (written by something else).
    #[error("document {key} is not JSON: {why}")]
    Corrupt {
        /// The document key.
        key: String,
        /// The parse error.
        why: String,
    },
}

impl StoreError {
    /// Whether Redis could not do it *now* (see [`kitbash_runtime::redis::is_transient`]):
    /// the batch is held and retried, never dead-lettered.
    pub fn is_transient(&self) -> bool {
        match self {
            StoreError::Redis(e) => kitbash_runtime::redis::is_transient(e),
            StoreError::Outbox { .. } => true,
            _ => false,
        }
    }
}

/// A document as stored, with its metadata.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Stored {
    /// The document (`None` = absent).
    pub doc: Option<serde_json::Value>,
    /// Committed changes so far (0 for a document never written, or expired).
    pub version: u64,
    /// The last entity-stream entry applied to it (`p/id`; empty if none).
    pub applied: String,
    /// Updates at or before `applied` that its commits rejected, with the reason (the latest
    /// [`REJECTED_KEPT`]): a batch re-read after a crash between the document's commit and
    /// the checkpoint's dead-letters them again instead of losing them.
    pub rejected: Vec<(String, String)>,
}

/// How many rejected updates a document's metadata remembers.
pub const REJECTED_KEPT: usize = 64;

/// Encodes a rejected list for the metadata hash.
pub fn encode_rejected(r: &[(String, String)]) -> Vec<u8> {
    serde_json::to_vec(r).unwrap_or_else(|_| b"[]".to_vec())
}

/// A bulk reply's bytes (`None` for nil and other shapes).
fn bytes_of(v: Option<&Value>) -> Option<Vec<u8>> {
    match v {
        Some(Value::Bytes(b)) => Some(b.to_vec()),
        Some(Value::String(s)) => Some(s.as_bytes().to_vec()),
        _ => None,
    }
}

/// Decodes the metadata's rejected list (empty when absent or unreadable: it is advisory).
fn decode_rejected(v: Option<&Value>) -> Vec<(String, String)> {
    bytes_of(v)
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_default()
}

/// One change of a [`DocCommit`].
#[derive(Clone, Debug)]
pub struct Change {
    /// The version this change makes.
    pub version: u64,
    /// The entity-stream entry behind it (`p/id`), or empty for a writer outside the daemon.
    pub entry: String,
    /// `merge`, `increment`, `replace`, `delete`, `write`.
    pub op: &'static str,
    /// The operation's argument, compact JSON.
    pub patch: Vec<u8>,
    /// The document after the change, compact JSON (empty = deleted).
    pub data: Vec<u8>,
    /// `quantum:updates` bytes before and after the change's stream id.
    pub publish: (Vec<u8>, Vec<u8>),
}

/// Everything committed for one document at once.
#[derive(Clone, Debug)]
pub struct DocCommit {
    /// The document key.
    pub key: String,
    /// The compare-and-set: the version and `applied` this commit was computed from.
    pub expect: (u64, String),
    /// `applied` after the commit.
    pub applied: String,
    /// The final document bytes (`None` = delete it).
    pub doc: Option<Vec<u8>>,
    /// The final version.
    pub version: u64,
    /// The document's rejected list after the commit (see [`Stored::rejected`]).
    pub rejected: Vec<(String, String)>,
    /// TTL of the document and its metadata, s (0 = none).
    pub ttl_secs: u64,
    /// The changes, in order.
    pub changes: Vec<Change>,
}

/// What a commit found.
#[derive(Clone, Debug, PartialEq)]
pub enum Committed {
    /// Written.
    Yes,
    /// The version or `applied` had moved: nothing was written; this is what is stored now.
    Moved(Stored),
}

/// The storage seam: reading documents with their metadata, and committing changes with a
/// compare-and-set on the version.
pub trait DocumentStore: Send + Sync + 'static {
    /// Reads `keys` (one round trip). `Err` when Redis could not answer at all; per document,
    /// `Err(reason)` when that one cannot be read (not JSON, a key of another type), so one
    /// bad document never fails its neighbours.
    fn load(
        &self,
        keys: &[String],
    ) -> impl Future<Output = Result<Vec<Result<Stored, String>>, StoreError>> + Send;
    /// Commits each document's changes if its version and `applied` are still as expected;
    /// one result per commit, in order (a failure of one does not hide the others' success).
    fn commit(
        &self,
        commits: &[DocCommit],
    ) -> impl Future<Output = Vec<Result<Committed, StoreError>>> + Send;
}

/// At most this many documents go in one commit script.
pub const DOCS_PER_SCRIPT: usize = 64;
/// A script takes documents until its arguments reach this many bytes (at least one document).
pub const BYTES_PER_SCRIPT: usize = 1 << 20;

/// Words of a document's header in the commit script's ARGV.
const DOC_WORDS: usize = 10;
/// Words per change in the commit script's ARGV.
const CHANGE_WORDS: usize = 7;

/// The commit script, for one or more documents. KEYS: the changes stream, then per document
/// its key, metadata and timeline. ARGV: channel, timeline max, then per document 10 words —
/// expected version, expected applied, new applied, deleted ('1'/'0'), document bytes, new
/// version, ttl, document key, rejected, number of changes — and 7 words per change: version,
/// entry, op, patch, data, publish prefix, publish suffix. Returns one element per document:
/// `1` (written), `{2, error}` (written, but the timeline refused its entries) or
/// `{0, version, applied, document, rejected}` (moved: nothing written).
static COMMIT: LazyLock<Script> = LazyLock::new(|| {
    let (fv, fa, fr) = (
        Keys::DOCUMENT_VERSION,
        Keys::DOCUMENT_APPLIED,
        Keys::DOCUMENT_REJECTED,
    );
    Script::from_lua(format!(
        r#"
local out = {{}}
local a = 3
local d = 0
while a <= #ARGV do
  d = d + 1
  local kd, km, kt = KEYS[3 * d - 1], KEYS[3 * d], KEYS[3 * d + 1]
  local n = tonumber(ARGV[a + 9])
  local meta = redis.call('HMGET', km, '{fv}', '{fa}')
  local v, ap = meta[1] or '0', meta[2] or ''
  if v ~= ARGV[a] or ap ~= ARGV[a + 1] then
    out[d] = {{0, v, ap, redis.call('GET', kd), redis.call('HGET', km, '{fr}') or '[]'}}
  else
    local ttl = tonumber(ARGV[a + 6])
    if ARGV[a + 3] == '1' then redis.call('DEL', kd)
    elseif ttl > 0 then redis.call('SET', kd, ARGV[a + 4], 'EX', ttl)
    else redis.call('SET', kd, ARGV[a + 4]) end
    redis.call('HSET', km, '{fv}', ARGV[a + 5], '{fa}', ARGV[a + 2], '{fr}', ARGV[a + 8])
    local i = a + {DOC_WORDS}
    local lost = false
    for _ = 1, n do
      local id = redis.call('XADD', KEYS[1], '*', '{key}', ARGV[a + 7],
        '{ver}', ARGV[i], '{op}', ARGV[i + 2], '{entry}', ARGV[i + 1], '{data}', ARGV[i + 4])
      -- The timeline is the document's own history, not a work stream: a key of another type
      -- there loses its entry (reported), never the committed change or its neighbours.
      local t = redis.pcall('XADD', kt, 'MAXLEN', ARGV[2], '*', '{ver}', ARGV[i],
        '{op}', ARGV[i + 2], '{entry}', ARGV[i + 1], '{patch}', ARGV[i + 3], '{change}', id)
      if type(t) == 'table' and t.err then lost = t.err end
      redis.call('PUBLISH', ARGV[1], ARGV[i + 5] .. id .. ARGV[i + 6])
      i = i + {CHANGE_WORDS}
    end
    if ttl > 0 then
      redis.call('EXPIRE', km, ttl)
      redis.call('EXPIRE', kt, ttl)
    end
    if lost then out[d] = {{2, lost}} else out[d] = 1 end
  end
  a = a + {DOC_WORDS} + {CHANGE_WORDS} * n
end
return out
"#,
        key = f::KEY,
        ver = f::VERSION,
        op = f::OP,
        entry = f::ENTRY,
        data = f::DATA,
        patch = f::PATCH,
        change = f::CHANGE,
    ))
});

/// The cluster form's first step, one document: KEYS its key and metadata; ARGV expected
/// version, expected applied, new applied, deleted ('1'/'0'), document bytes, new version, ttl,
/// rejected, outbox. Returns `1` (written, outbox stored) or `{0, version, applied, document,
/// rejected, outbox}` (moved, or an outbox not yet flushed: nothing written).
static COMMIT_DOC: LazyLock<Script> = LazyLock::new(|| {
    Script::from_lua(format!(
        r#"
local meta = redis.call('HMGET', KEYS[2], '{fv}', '{fa}', '{fo}')
local v, ap = meta[1] or '0', meta[2] or ''
if v ~= ARGV[1] or ap ~= ARGV[2] or meta[3] then
  return {{0, v, ap, redis.call('GET', KEYS[1]), redis.call('HGET', KEYS[2], '{fr}') or '[]',
    meta[3] or ''}}
end
local ttl = tonumber(ARGV[7])
if ARGV[4] == '1' then redis.call('DEL', KEYS[1])
elseif ttl > 0 then redis.call('SET', KEYS[1], ARGV[5], 'EX', ttl)
else redis.call('SET', KEYS[1], ARGV[5]) end
redis.call('HSET', KEYS[2], '{fv}', ARGV[6], '{fa}', ARGV[3], '{fr}', ARGV[8], '{fo}', ARGV[9])
if ttl > 0 then redis.call('EXPIRE', KEYS[2], ttl) end
return 1
"#,
        fv = Keys::DOCUMENT_VERSION,
        fa = Keys::DOCUMENT_APPLIED,
        fr = Keys::DOCUMENT_REJECTED,
        fo = Keys::DOCUMENT_OUTBOX,
    ))
});

/// The cluster form's last step: KEYS the metadata and the timeline; ARGV the version the
/// outbox belongs to, timeline max, ttl, then 5 words per change (version, op, entry, patch,
/// change id). When the outbox is still there and still that version's, appends the timeline
/// entries and removes it (`1`, or `{2, error}` when the timeline refused them); `0` when
/// another flush got there first (the timeline is then already written).
static SETTLE: LazyLock<Script> = LazyLock::new(|| {
    Script::from_lua(format!(
        r#"
local m = redis.call('HMGET', KEYS[1], '{fv}', '{fo}')
if m[1] ~= ARGV[1] or not m[2] then return 0 end
local kt = KEYS[2]
local lost = false
for i = 4, #ARGV, 5 do
  local t = redis.pcall('XADD', kt, 'MAXLEN', ARGV[2], '*', '{ver}', ARGV[i],
    '{op}', ARGV[i + 1], '{entry}', ARGV[i + 2], '{patch}', ARGV[i + 3], '{change}', ARGV[i + 4])
  if type(t) == 'table' and t.err then lost = t.err end
end
redis.call('HDEL', KEYS[1], '{fo}')
if tonumber(ARGV[3]) > 0 then redis.call('EXPIRE', kt, ARGV[3]) end
if lost then return {{2, lost}} end
return 1
"#,
        fv = Keys::DOCUMENT_VERSION,
        fo = Keys::DOCUMENT_OUTBOX,
        ver = f::VERSION,
        op = f::OP,
        entry = f::ENTRY,
        patch = f::PATCH,
        change = f::CHANGE,
    ))
});

/// A commit's changes not yet written outside the document's slot (cluster only; the format
/// of [`Keys::DOCUMENT_OUTBOX`]). Every byte string in it is JSON text Rust produced, so it
/// is carried as UTF-8.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
struct Outbox {
    key: String,
    ttl: u64,
    version: u64,
    changes: Vec<OutboxChange>,
}

/// One change of an [`Outbox`].
#[derive(Debug, serde::Serialize, serde::Deserialize)]
struct OutboxChange {
    version: u64,
    entry: String,
    op: String,
    patch: String,
    data: String,
    publish: (String, String),
}

impl Outbox {
    /// The outbox of `c` (`Err`: a byte string that is not UTF-8, which Rust never produces).
    fn of(c: &DocCommit) -> Result<Self, String> {
        let text = |b: &[u8]| String::from_utf8(b.to_vec()).map_err(|e| e.to_string());
        let changes = c
            .changes
            .iter()
            .map(|ch| {
                Ok(OutboxChange {
                    version: ch.version,
                    entry: ch.entry.clone(),
                    op: ch.op.to_owned(),
                    patch: text(&ch.patch)?,
                    data: text(&ch.data)?,
                    publish: (text(&ch.publish.0)?, text(&ch.publish.1)?),
                })
            })
            .collect::<Result<_, String>>()?;
        Ok(Self {
            key: c.key.clone(),
            ttl: c.ttl_secs,
            version: c.version,
            changes,
        })
    }
}

/// Documents as JSON strings, metadata in a hash beside each.
#[derive(Clone, Debug)]
pub struct StringStore {
    client: Client,
    keys: Keys,
    changes: String,
    channel: String,
    timeline_max: u64,
}

impl StringStore {
    /// A store writing through `client`; each document's timeline keeps its newest
    /// `timeline_max` entries. The changes stream is not capped here (the entity daemon trims
    /// it, `[entity] changes_max`).
    pub fn new(client: Client, keys: Keys, timeline_max: u64) -> Self {
        Self {
            changes: keys.stream(StreamName::EntityChanges),
            channel: keys.channel_quantum_updates(),
            client,
            keys,
            timeline_max,
        }
    }

    fn parse(key: &str, raw: Option<Vec<u8>>) -> Result<Option<serde_json::Value>, StoreError> {
        raw.map(|b| {
            serde_json::from_slice(&b).map_err(|e| StoreError::Corrupt {
                key: key.to_owned(),
                why: e.to_string(),
            })
        })
        .transpose()
    }

    /// Bytes a document's words take in the commit script (what [`BYTES_PER_SCRIPT`] bounds).
    fn arg_bytes(c: &DocCommit) -> usize {
        let doc = c.doc.as_ref().map_or(0, Vec::len) + c.key.len() + 64;
        c.changes.iter().fold(doc, |n, ch| {
            n + ch.patch.len() + ch.data.len() + ch.publish.0.len() + ch.publish.1.len() + 64
        })
    }

    /// Splits `commits` into the scripts that carry them: consecutive runs of at most
    /// [`DOCS_PER_SCRIPT`] documents and (beyond the first) [`BYTES_PER_SCRIPT`] bytes.
    pub fn script_chunks(commits: &[DocCommit]) -> Vec<&[DocCommit]> {
        let mut out = Vec::new();
        let (mut start, mut bytes) = (0, 0);
        for (i, c) in commits.iter().enumerate() {
            let b = Self::arg_bytes(c);
            if i > start && (i - start >= DOCS_PER_SCRIPT || bytes + b > BYTES_PER_SCRIPT) {
                out.push(&commits[start..i]);
                (start, bytes) = (i, 0);
            }
            bytes += b;
        }
        if start < commits.len() {
            out.push(&commits[start..]);
        }
        out
    }

    /// One commit script for `commits` (one result per document, in order), or the error of
    /// the whole script.
    async fn commit_script(
        &self,
        commits: &[DocCommit],
    ) -> Result<Vec<Result<Committed, StoreError>>, StoreError> {
        let mut keys: Vec<String> = Vec::with_capacity(1 + 3 * commits.len());
        keys.push(self.changes.clone());
        let words: usize = commits
            .iter()
            .map(|c| DOC_WORDS + CHANGE_WORDS * c.changes.len())
            .sum();
        let mut args: Vec<Value> = Vec::with_capacity(2 + words);
        args.push(self.channel.as_str().into());
        args.push(self.timeline_max.to_string().into());
        for c in commits {
            keys.push(c.key.clone());
            keys.push(self.keys.document_meta(&c.key));
            keys.push(self.keys.document_timeline(&c.key));
            args.push(c.expect.0.to_string().into());
            args.push(c.expect.1.as_str().into());
            args.push(c.applied.as_str().into());
            args.push(if c.doc.is_none() { "1" } else { "0" }.into());
            args.push(Value::Bytes(c.doc.clone().unwrap_or_default().into()));
            args.push(c.version.to_string().into());
            args.push(c.ttl_secs.to_string().into());
            args.push(c.key.as_str().into());
            args.push(Value::Bytes(encode_rejected(&c.rejected).into()));
            args.push(c.changes.len().to_string().into());
            for ch in &c.changes {
                args.push(ch.version.to_string().into());
                args.push(ch.entry.as_str().into());
                args.push(ch.op.into());
                args.push(Value::Bytes(ch.patch.clone().into()));
                args.push(Value::Bytes(ch.data.clone().into()));
                args.push(Value::Bytes(ch.publish.0.clone().into()));
                args.push(Value::Bytes(ch.publish.1.clone().into()));
            }
        }
        let reply: Vec<Value> = COMMIT.evalsha_with_reload(&self.client, keys, args).await?;
        Ok(commits
            .iter()
            .enumerate()
            .map(|(i, c)| Self::outcome(c, reply.get(i)))
            .collect())
    }

    /// One document's element of the script's reply.
    fn outcome(c: &DocCommit, v: Option<&Value>) -> Result<Committed, StoreError> {
        let moved = match v {
            Some(Value::Integer(1)) => return Ok(Committed::Yes),
            Some(Value::Array(a)) if matches!(a.first(), Some(Value::Integer(2))) => {
                let why = a.get(1).and_then(Value::as_string).unwrap_or_default();
                tracing::warn!(key = %c.key, error = %why, "document committed; its timeline refused the change entries");
                return Ok(Committed::Yes);
            }
            Some(Value::Array(a)) if matches!(a.first(), Some(Value::Integer(0))) => a,
            other => {
                return Err(StoreError::Reply {
                    key: c.key.clone(),
                    why: format!("the commit script answered {other:?}"),
                });
            }
        };
        let text = |i: usize| moved.get(i).and_then(Value::as_string).unwrap_or_default();
        Ok(Committed::Moved(Stored {
            doc: Self::parse(&c.key, bytes_of(moved.get(3)))?,
            version: text(1).parse().unwrap_or(0),
            applied: text(2),
            rejected: decode_rejected(moved.get(4)),
        }))
    }

    /// The cluster form of a commit, one document (see the module docs): its script, then
    /// its outbox flushed; a refused commit flushes the outbox it found first, so the caller's
    /// next attempt sees every committed change.
    async fn commit_clustered(&self, c: &DocCommit) -> Result<Committed, StoreError> {
        let outbox = Outbox::of(c).map_err(|why| StoreError::Reply {
            key: c.key.clone(),
            why: format!("a change is not UTF-8: {why}"),
        })?;
        let encoded = serde_json::to_vec(&outbox).map_err(|e| StoreError::Reply {
            key: c.key.clone(),
            why: format!("cannot encode the outbox: {e}"),
        })?;
        let keys = vec![c.key.clone(), self.keys.document_meta(&c.key)];
        let args: Vec<Value> = vec![
            c.expect.0.to_string().into(),
            c.expect.1.as_str().into(),
            c.applied.as_str().into(),
            if c.doc.is_none() { "1" } else { "0" }.into(),
            Value::Bytes(c.doc.clone().unwrap_or_default().into()),
            c.version.to_string().into(),
            c.ttl_secs.to_string().into(),
            Value::Bytes(encode_rejected(&c.rejected).into()),
            Value::Bytes(encoded.into()),
        ];
        let reply: Value = COMMIT_DOC
            .evalsha_with_reload(&self.client, keys, args)
            .await?;
        let found = match &reply {
            Value::Array(a) => bytes_of(a.get(5)).filter(|b| !b.is_empty()),
            _ => None,
        };
        let result = Self::outcome(c, Some(&reply))?;
        match (&result, found) {
            (Committed::Yes, _) => self.flush(&outbox).await?,
            (Committed::Moved(_), Some(raw)) => {
                self.flush(&Self::decode_outbox(&c.key, &raw)?).await?
            }
            (Committed::Moved(_), None) => {}
        }
        Ok(result)
    }

    fn decode_outbox(key: &str, raw: &[u8]) -> Result<Outbox, StoreError> {
        serde_json::from_slice(raw).map_err(|e| StoreError::Corrupt {
            key: key.to_owned(),
            why: format!("its outbox is not what entity writes: {e}"),
        })
    }

    /// Writes an outbox's changes to the changes stream (in order, one pipeline), then
    /// publishes them and appends them to the timeline while removing the outbox.
    async fn flush(&self, ob: &Outbox) -> Result<(), StoreError> {
        let fail = |e: fred::error::Error| StoreError::Outbox {
            key: ob.key.clone(),
            why: e.to_string(),
        };
        let ids: Vec<String> = if ob.changes.is_empty() {
            Vec::new()
        } else {
            let pipe = self.client.pipeline();
            for ch in &ob.changes {
                let fields: Vec<(&str, Value)> = vec![
                    (f::KEY, ob.key.as_str().into()),
                    (f::VERSION, ch.version.to_string().into()),
                    (f::OP, ch.op.as_str().into()),
                    (f::ENTRY, ch.entry.as_str().into()),
                    (f::DATA, ch.data.as_str().into()),
                ];
                let _: () = pipe
                    .xadd(self.changes.as_str(), false, None, "*", fields)
                    .await
                    .map_err(fail)?;
            }
            let ids: Vec<String> = pipe.all().await.map_err(fail)?;
            if ids.len() != ob.changes.len() {
                return Err(StoreError::Outbox {
                    key: ob.key.clone(),
                    why: format!("{} stream ids for {} changes", ids.len(), ob.changes.len()),
                });
            }
            ids
        };
        let publish = async {
            let pipe = self.client.pipeline();
            for (ch, id) in ob.changes.iter().zip(&ids) {
                let msg = format!("{}{id}{}", ch.publish.0, ch.publish.1);
                let _: () = pipe.publish(self.channel.as_str(), msg).await?;
            }
            let _: Vec<Value> = pipe.all().await?;
            Ok::<(), fred::error::Error>(())
        };
        let mut args: Vec<Value> = vec![
            ob.version.to_string().into(),
            self.timeline_max.to_string().into(),
            ob.ttl.to_string().into(),
        ];
        for (ch, id) in ob.changes.iter().zip(&ids) {
            args.push(ch.version.to_string().into());
            args.push(ch.op.as_str().into());
            args.push(ch.entry.as_str().into());
            args.push(ch.patch.as_str().into());
            args.push(id.as_str().into());
        }
        let keys = vec![
            self.keys.document_meta(&ob.key),
            self.keys.document_timeline(&ob.key),
        ];
        let settle = SETTLE.evalsha_with_reload::<Value, _, _>(&self.client, keys, args);
        let (published, settled) = futures::future::join(publish, settle).await;
        published.map_err(fail)?;
        if let Value::Array(a) = settled.map_err(fail)? {
            let why = a.get(1).and_then(Value::as_string).unwrap_or_default();
            tracing::warn!(key = %ob.key, error = %why, "document committed; its timeline refused the change entries");
        }
        Ok(())
    }

    /// The commits of one script; when the script fails on something other than a transient
    /// error (a key of another type under one document), each document again in a script of
    /// its own, so only that one fails.
    async fn commit_chunk(&self, commits: &[DocCommit]) -> Vec<Result<Committed, StoreError>> {
        match self.commit_script(commits).await {
            Ok(out) => out,
            Err(e) if e.is_transient() || commits.len() == 1 => {
                let e = match e {
                    StoreError::Redis(e) => e,
                    other => return vec![Err(other)],
                };
                commits
                    .iter()
                    .map(|_| Err(StoreError::Redis(e.clone())))
                    .collect()
            }
            Err(_) => {
                futures::future::join_all(commits.iter().map(|c| async move {
                    match self.commit_script(std::slice::from_ref(c)).await {
                        Ok(mut one) => one.pop().unwrap_or_else(|| {
                            Err(StoreError::Reply {
                                key: c.key.clone(),
                                why: "the commit script answered nothing".into(),
                            })
                        }),
                        Err(e) => Err(e),
                    }
                }))
                .await
            }
        }
    }
}

impl DocumentStore for StringStore {
    async fn load(&self, keys: &[String]) -> Result<Vec<Result<Stored, String>>, StoreError> {
        let pipe = self.client.pipeline();
        for k in keys {
            let _: () = pipe.get(k.as_str()).await?;
            let _: () = pipe
                .hmget(
                    self.keys.document_meta(k),
                    vec![
                        Keys::DOCUMENT_VERSION,
                        Keys::DOCUMENT_APPLIED,
                        Keys::DOCUMENT_REJECTED,
                        Keys::DOCUMENT_OUTBOX,
                    ],
                )
                .await?;
        }
        let replies: Vec<Result<Value, fred::error::Error>> = pipe.try_all().await;
        // Redis could not answer (a lost connection, OOM …): the whole load is transient.
        if let Some(Err(e)) = replies
            .iter()
            .find(|r| r.as_ref().is_err_and(kitbash_runtime::redis::is_transient))
        {
            return Err(StoreError::Redis(e.clone()));
        }
        let mut out = Vec::with_capacity(keys.len());
        let mut outboxes = Vec::new();
        for (i, k) in keys.iter().enumerate() {
            let raw = match replies.get(2 * i) {
                Some(Ok(Value::Bytes(b))) => Some(b.to_vec()),
                Some(Ok(Value::String(s))) => Some(s.as_bytes().to_vec()),
                Some(Ok(_)) => None,
                Some(Err(e)) => {
                    out.push(Err(format!("cannot read {k}: {e}")));
                    continue;
                }
                None => {
                    out.push(Err(format!("no reply for {k}")));
                    continue;
                }
            };
            let meta = match replies.get(2 * i + 1) {
                Some(Ok(Value::Array(a))) => a.clone(),
                Some(Err(e)) => {
                    out.push(Err(format!("cannot read the metadata of {k}: {e}")));
                    continue;
                }
                _ => Vec::new(),
            };
            let field = |j: usize| meta.get(j).and_then(Value::as_string).unwrap_or_default();
            // A commit not yet flushed (cluster): flushed before the document is used, so its
            // changes reach the changes stream before any later one.
            if let Some(raw) = bytes_of(meta.get(3)).filter(|b| !b.is_empty()) {
                match Self::decode_outbox(k, &raw) {
                    Ok(ob) => outboxes.push(ob),
                    Err(e) => {
                        out.push(Err(e.to_string()));
                        continue;
                    }
                }
            }
            out.push(match Self::parse(k, raw) {
                Ok(doc) => Ok(Stored {
                    doc,
                    version: field(0).parse().unwrap_or(0),
                    applied: field(1),
                    rejected: decode_rejected(meta.get(2)),
                }),
                Err(e) => Err(e.to_string()),
            });
        }
        for flushed in futures::future::join_all(outboxes.iter().map(|ob| self.flush(ob))).await {
            flushed?;
        }
        Ok(out)
    }

    async fn commit(&self, commits: &[DocCommit]) -> Vec<Result<Committed, StoreError>> {
        if self.client.is_clustered() {
            // One script per document (its slot), all sent at once; each then flushes its
            // outbox. Documents are independent, so they need not wait for one another.
            return futures::future::join_all(commits.iter().map(|c| self.commit_clustered(c)))
                .await;
        }
        // Standalone: many documents per script (every key is in one server); the scripts of
        // a large batch are sent concurrently, so fred pipelines them.
        let chunks = Self::script_chunks(commits);
        futures::future::join_all(chunks.into_iter().map(|c| self.commit_chunk(c)))
            .await
            .into_iter()
            .flatten()
            .collect()
    }
}
