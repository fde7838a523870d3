//! Where documents live: the [`DocumentStore`] seam, and [`StringStore`], which keeps each
//! document as a JSON string (`GET` + parse for readers; this Debian Redis has no JSON module).
//! A RedisJSON-backed store would implement the same trait.
//!
//! A commit is one script per document: a compare-and-set on the document's `version` and
//! `applied` (its metadata hash, in the document's cluster slot), then `SET` of the new bytes,
//! one entry per change in the changes stream and in the document's bounded timeline, and one
//! `PUBLISH quantum:updates` per change carrying the change's stream id. The script only moves
//! bytes Rust produced: Lua's `cjson` never touches a document.
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
        matches!(self, StoreError::Redis(e) if kitbash_runtime::redis::is_transient(e))
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

/// Decodes the metadata's rejected list (empty when absent or unreadable: it is advisory).
fn decode_rejected(v: Option<&Value>) -> Vec<(String, String)> {
    let bytes: Option<Vec<u8>> = match v {
        Some(Value::Bytes(b)) => Some(b.to_vec()),
        Some(Value::String(s)) => Some(s.as_bytes().to_vec()),
        _ => None,
    };
    bytes
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

/// The commit script. KEYS: document, metadata, timeline, changes stream. ARGV: expected
/// version, expected applied, new applied, deleted ('1'/'0'), document bytes, new version, ttl,
/// timeline max, channel, document key, rejected, then 7 words per change: version, entry, op,
/// patch, data, publish prefix, publish suffix.
static COMMIT: LazyLock<Script> = LazyLock::new(|| {
    let (fv, fa, fr) = (
        Keys::DOCUMENT_VERSION,
        Keys::DOCUMENT_APPLIED,
        Keys::DOCUMENT_REJECTED,
    );
    Script::from_lua(format!(
        r#"
local v = redis.call('HGET', KEYS[2], '{fv}') or '0'
local a = redis.call('HGET', KEYS[2], '{fa}') or ''
if v ~= ARGV[1] or a ~= ARGV[2] then
  return {{0, v, a, redis.call('GET', KEYS[1]), redis.call('HGET', KEYS[2], '{fr}') or '[]'}}
end
local ttl = tonumber(ARGV[7])
if ARGV[4] == '1' then redis.call('DEL', KEYS[1]) else
  redis.call('SET', KEYS[1], ARGV[5])
  if ttl > 0 then redis.call('EXPIRE', KEYS[1], ttl) end
end
redis.call('HSET', KEYS[2], '{fv}', ARGV[6], '{fa}', ARGV[3], '{fr}', ARGV[11])
local i = 12
while i + 6 <= #ARGV do
  local id = redis.call('XADD', KEYS[4], '*', '{key}', ARGV[10],
    '{ver}', ARGV[i], '{op}', ARGV[i + 2], '{entry}', ARGV[i + 1], '{data}', ARGV[i + 4])
  redis.call('XADD', KEYS[3], 'MAXLEN', ARGV[8], '*', '{ver}', ARGV[i], '{op}', ARGV[i + 2],
    '{entry}', ARGV[i + 1], '{patch}', ARGV[i + 3], '{change}', id)
  redis.call('PUBLISH', ARGV[9], ARGV[i + 5] .. id .. ARGV[i + 6])
  i = i + 7
end
if ttl > 0 then
  redis.call('EXPIRE', KEYS[2], ttl)
  redis.call('EXPIRE', KEYS[3], ttl)
end
return {{1}}
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

    async fn commit_one(&self, c: &DocCommit) -> Result<Committed, StoreError> {
        let keys: Vec<String> = vec![
            c.key.clone(),
            self.keys.document_meta(&c.key),
            self.keys.document_timeline(&c.key),
            self.changes.clone(),
        ];
        let mut args: Vec<Value> = vec![
            c.expect.0.to_string().into(),
            c.expect.1.as_str().into(),
            c.applied.as_str().into(),
            if c.doc.is_none() { "1" } else { "0" }.into(),
            Value::Bytes(c.doc.clone().unwrap_or_default().into()),
            c.version.to_string().into(),
            c.ttl_secs.to_string().into(),
            self.timeline_max.to_string().into(),
            self.channel.as_str().into(),
            c.key.as_str().into(),
            Value::Bytes(encode_rejected(&c.rejected).into()),
        ];
        for ch in &c.changes {
            args.push(ch.version.to_string().into());
            args.push(ch.entry.as_str().into());
            args.push(ch.op.into());
            args.push(Value::Bytes(ch.patch.clone().into()));
            args.push(Value::Bytes(ch.data.clone().into()));
            args.push(Value::Bytes(ch.publish.0.clone().into()));
            args.push(Value::Bytes(ch.publish.1.clone().into()));
        }
        let reply: Vec<Value> = COMMIT.evalsha_with_reload(&self.client, keys, args).await?;
        if matches!(reply.first(), Some(Value::Integer(1))) {
            return Ok(Committed::Yes);
        }
        let text = |i: usize| reply.get(i).and_then(Value::as_string).unwrap_or_default();
        let raw = match reply.get(3) {
            Some(Value::Bytes(b)) => Some(b.to_vec()),
            Some(Value::String(s)) => Some(s.as_bytes().to_vec()),
            _ => None,
        };
        Ok(Committed::Moved(Stored {
            doc: Self::parse(&c.key, raw)?,
            version: text(1).parse().unwrap_or(0),
            applied: text(2),
            rejected: decode_rejected(reply.get(4)),
        }))
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
        Ok(out)
    }

    async fn commit(&self, commits: &[DocCommit]) -> Vec<Result<Committed, StoreError>> {
        // One script per document (each in its own slot on a cluster), sent concurrently: fred
        // pipelines them on the connection.
        futures::future::join_all(commits.iter().map(|c| self.commit_one(c))).await
    }
}
