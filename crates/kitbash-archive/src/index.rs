//! Memory-token indexing (seed 004): the `index` group on the memory stream
//! ([`kitbash_schema::Group::MEMORY_INDEX`]) turns each [`MemoryToken`] into
//!
//! - `memory:{id}` — the token as JSON, for one hour ([`ttl::MEMORY_TOKEN`]);
//! - `score:{user}:{ctx}:{token}` — its relevance as decimal text, for 15 minutes
//!   ([`ttl::RELEVANCE_SCORE`]), computed at indexing time;
//! - the relevance indexes `kitbash:memory:user:{user}` and
//!   `kitbash:memory:user:{user}:ctx:{ctx}`: sorted sets of memory ids by the time-free rank
//!   of [`kitbash_schema::memory`], so that a top-k read (`kitbash_client::memory`) is exact at
//!   any later time without rescoring.
//!
//! On a standalone Redis one script per token does all of it atomically, and the batch's
//! scripts are pipelined on one connection. It is idempotent and order-proof: an event whose
//! rank is below the one already indexed for its memory id (an older access count delivered
//! late, by another instance or after a crash) changes nothing; the same event again rewrites
//! the same values. Each write also prunes the two indexes it touches: entries below
//! `memory_min_relevance`, then the least relevant beyond `memory_index_max`; an index lives
//! one hour after its last write, like the tokens it ranks.
//!
//! **On a Redis Cluster** the four keys live in up to four slots (the seed's names
//! `memory:{id}` and `score:{user}:{ctx}:{token}` stay as they are, under either key style),
//! so the work is split in three scripts, each over keys of one slot ([`Indexer::index`]):
//!
//! 1. the two indexes (tagged by user, `kitbash:memory:user:{u1}`): the stale-rank check,
//!    the `ZADD` (or `ZREM`) and the prune — the decision, as on a standalone Redis;
//! 2. `memory:{id}` beside its guard `{memory:m1}:src` ([`Keys::memory_source`]), and
//! 3. the score beside its guard `{score:u1:c1:t1}:src` ([`Keys::score_source`]), each written
//!    only when its guard holds no higher rank of the same memory id — so two events of one
//!    memory racing between steps 1 and 2/3 (another instance, a reclaim) still leave the
//!    newer values, and the guards expire with the values they guard.
//!
//! Still idempotent and order-proof; what is weaker is atomicity: a crash (or a Redis error)
//! between step 1 and steps 2–3 leaves the indexes ahead of `memory:{id}` and the score until
//! the entry is delivered again, which it is (it is acknowledged only after all three), and a
//! reader may see the new rank in an index before the record it ranks.
//!
//! The indexer is also the memory stream's trim owner ([`StreamName::Memory`]'s
//! `memory_stream_max`): every few seconds it trims the stream, never past an entry the
//! `index` group has not acknowledged (the group is required) — and not at all while the
//! archiver holds the stream's trim claim, which it does while it archives the stream.

use std::time::Duration;

use fred::prelude::*;
use fred::types::scripts::Script;
use kitbash_runtime::bounds::Bounds;
use kitbash_runtime::consumer::{Delivery, Handler, Outcome};
use kitbash_runtime::metrics::Metrics;
use kitbash_runtime::{DaemonContext, Redis};
use kitbash_schema::messages::MemoryToken;
use kitbash_schema::{Keys, StreamName, memory, ttl};

/// The script: KEYS `memory:{id}`, the score key, the user index, the context index. ARGV: the
/// token's JSON, its relevance text, its rank (`-inf`: not ranked), the member (memory id), the
/// record's TTL ms, the score's TTL ms, the indexes' TTL ms, the most entries per index, the
/// rank floor (entries below it are pruned). Returns 1 when written, 0 when stale.
const INDEX_LUA: &str = r#"
local new = -math.huge
if ARGV[3] ~= '-inf' then new = tonumber(ARGV[3]) end
local old = redis.call('ZSCORE', KEYS[4], ARGV[4])
if old and tonumber(old) > new then return 0 end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[5])
redis.call('SET', KEYS[2], ARGV[2], 'PX', ARGV[6])
local max = tonumber(ARGV[8])
for i = 3, 4 do
  if ARGV[3] ~= '-inf' then
    redis.call('ZADD', KEYS[i], ARGV[3], ARGV[4])
  else
    redis.call('ZREM', KEYS[i], ARGV[4])
  end
  redis.call('ZREMRANGEBYSCORE', KEYS[i], '-inf', '(' .. ARGV[9])
  local n = redis.call('ZCARD', KEYS[i])
  if n > max then redis.call('ZREMRANGEBYRANK', KEYS[i], 0, n - max - 1) end
  if n > 0 then redis.call('PEXPIRE', KEYS[i], ARGV[7]) end
end
return 1
"#;

static INDEX: std::sync::LazyLock<Script> =
    std::sync::LazyLock::new(|| Script::from_lua(INDEX_LUA));

/// Cluster step 1: the same decision and index writes as [`INDEX_LUA`], over the indexes only.
/// KEYS: the user index, the context index (one slot: both tagged by user). ARGV: the rank
/// (`-inf`: not ranked), the member, the indexes' TTL ms, the most entries per index, the rank
/// floor. Returns 1 when written, 0 when stale.
const INDEXES_LUA: &str = r#"
local new = -math.huge
if ARGV[1] ~= '-inf' then new = tonumber(ARGV[1]) end
local old = redis.call('ZSCORE', KEYS[2], ARGV[2])
if old and tonumber(old) > new then return 0 end
local max = tonumber(ARGV[4])
for i = 1, 2 do
  if ARGV[1] ~= '-inf' then
    redis.call('ZADD', KEYS[i], ARGV[1], ARGV[2])
  else
    redis.call('ZREM', KEYS[i], ARGV[2])
  end
  redis.call('ZREMRANGEBYSCORE', KEYS[i], '-inf', '(' .. ARGV[5])
  local n = redis.call('ZCARD', KEYS[i])
  if n > max then redis.call('ZREMRANGEBYRANK', KEYS[i], 0, n - max - 1) end
  if n > 0 then redis.call('PEXPIRE', KEYS[i], ARGV[3]) end
end
return 1
"#;

static INDEXES: std::sync::LazyLock<Script> =
    std::sync::LazyLock::new(|| Script::from_lua(INDEXES_LUA));

/// Cluster steps 2 and 3: `SET KEYS[1] ARGV[1] PX ARGV[2]` and record the writer in the guard
/// `KEYS[2]` (same slot; fields ARGV[5], ARGV[6]: rank ARGV[3], memory id ARGV[4]), with the
/// same TTL — unless the guard holds a higher rank of the same memory id (an older event must
/// not replace a newer one's values; another memory's write to a shared score key is the
/// newer write, as on a standalone Redis). Returns 1 when written, 0 when stale.
const GUARDED_LUA: &str = r#"
local new = -math.huge
if ARGV[3] ~= '-inf' then new = tonumber(ARGV[3]) end
local g = redis.call('HMGET', KEYS[2], ARGV[5], ARGV[6])
if g[1] and g[2] == ARGV[4] then
  local old = -math.huge
  if g[1] ~= '-inf' then old = tonumber(g[1]) end
  if old > new then return 0 end
end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
redis.call('HSET', KEYS[2], ARGV[5], ARGV[3], ARGV[6], ARGV[4])
redis.call('PEXPIRE', KEYS[2], ARGV[2])
return 1
"#;

static GUARDED: std::sync::LazyLock<Script> =
    std::sync::LazyLock::new(|| Script::from_lua(GUARDED_LUA));

/// What indexing one token did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Indexed {
    /// Written (new, newer, or the same event again).
    Written,
    /// An older state of a memory already indexed: nothing changed.
    Stale,
}

/// The indexer: the `index` group's handler.
#[derive(Clone, Debug)]
pub struct Indexer {
    client: Client,
    keys: Keys,
    metrics: Metrics,
    index_max: u64,
    min_relevance: f64,
}

impl Indexer {
    /// The indexer of this daemon (`[archive] memory_*`).
    pub fn new(ctx: &DaemonContext) -> Self {
        Self::with(
            &ctx.redis,
            ctx.keys.clone(),
            ctx.metrics.clone(),
            ctx.config.archive.memory_index_max,
            ctx.config.archive.memory_min_relevance,
        )
    }

    /// An indexer on `redis` (tests and tools).
    pub fn with(
        redis: &Redis,
        keys: Keys,
        metrics: Metrics,
        index_max: u64,
        min_relevance: f64,
    ) -> Self {
        Self {
            client: redis.client.clone(),
            keys,
            metrics,
            index_max: index_max.max(1),
            min_relevance,
        }
    }

    /// Indexes one token: one script on a standalone Redis; on a Redis Cluster the three
    /// single-slot steps of the module docs, in order, stopping at the first error (the entry
    /// is then delivered again, and every step is idempotent).
    pub async fn index(&self, t: &MemoryToken) -> Result<Indexed, fred::error::Error> {
        let now_s = kitbash_runtime::clock::now_ms() as f64 / 1000.0;
        let relevance = memory::relevance(t.ts, t.accesses, now_s);
        let rank = score_arg(memory::rank(t.ts, t.accesses));
        let record = serde_json::to_string(t)
            .map_err(|e| fred::error::Error::new(fred::error::ErrorKind::Parse, e.to_string()))?;
        let k = &self.keys;
        let ms = |t: ttl::Ttl, fallback: u64| (t.secs().unwrap_or(fallback) * 1000).to_string();
        let (record_ms, score_ms) = (ms(ttl::MEMORY_TOKEN, 3600), ms(ttl::RELEVANCE_SCORE, 900));
        let index_ms = record_ms.clone();
        let floor = score_arg(memory::rank_floor(self.min_relevance, now_s));
        let score_key = k.score(&t.user, &t.context, &t.token);
        let indexes = vec![
            k.memory_user_index(&t.user),
            k.memory_context_index(&t.user, &t.context),
        ];
        if !self.client.is_clustered() {
            let mut keys = vec![k.memory(&t.id), score_key];
            keys.extend(indexes);
            let args = vec![
                record,
                memory::relevance_text(relevance),
                rank,
                t.id.clone(),
                record_ms,
                score_ms,
                index_ms,
                self.index_max.to_string(),
                floor,
            ];
            let v: Value = INDEX.evalsha_with_reload(&self.client, keys, args).await?;
            return Ok(written_or_stale(&v));
        }
        let args = vec![
            rank.clone(),
            t.id.clone(),
            index_ms,
            self.index_max.to_string(),
            floor,
        ];
        let v: Value = INDEXES
            .evalsha_with_reload(&self.client, indexes, args)
            .await?;
        if written_or_stale(&v) == Indexed::Stale {
            return Ok(Indexed::Stale);
        }
        let guarded = |value: String, ttl_ms: String| {
            vec![
                value,
                ttl_ms,
                rank.clone(),
                t.id.clone(),
                Keys::SOURCE_RANK.to_owned(),
                Keys::SOURCE_ID.to_owned(),
            ]
        };
        let record_keys = vec![k.memory(&t.id), k.memory_source(&t.id)];
        let _: Value = GUARDED
            .evalsha_with_reload(&self.client, record_keys, guarded(record, record_ms))
            .await?;
        let score_keys = vec![score_key, k.score_source(&t.user, &t.context, &t.token)];
        let _: Value = GUARDED
            .evalsha_with_reload(
                &self.client,
                score_keys,
                guarded(memory::relevance_text(relevance), score_ms),
            )
            .await?;
        Ok(Indexed::Written)
    }
}

/// A script's reply: 0 is stale, anything else written.
fn written_or_stale(v: &Value) -> Indexed {
    match v.as_i64() {
        Some(0) => Indexed::Stale,
        _ => Indexed::Written,
    }
}

/// A rank as Redis parses a sorted-set score: `-inf`, or the shortest text that round-trips.
fn score_arg(r: f64) -> String {
    if r == f64::NEG_INFINITY {
        "-inf".to_owned()
    } else {
        format!("{r:?}")
    }
}

impl Handler<MemoryToken> for Indexer {
    async fn handle(&mut self, batch: Vec<Delivery<MemoryToken>>) -> Vec<Outcome> {
        // Tokens of different memories commute, and one memory's events are ordered by rank
        // in the scripts (and, on a cluster, by the guards): the batch is applied
        // concurrently (fred pipelines the scripts).
        let this = &*self;
        let results = futures::future::join_all(batch.iter().map(|d| this.index(&d.message))).await;
        let (mut written, mut stale) = (0, 0);
        let out = results
            .into_iter()
            .map(|r| match r {
                Ok(Indexed::Written) => {
                    written += 1;
                    Outcome::Ack
                }
                Ok(Indexed::Stale) => {
                    stale += 1;
                    Outcome::Ack
                }
                // Redis cannot do it now (refusing writes, a lost connection): held and
                // retried with the same delivery count, never dead-lettered.
                Err(e) if kitbash_runtime::redis::is_transient(&e) => {
                    Outcome::Transient(e.to_string())
                }
                // Anything else is redelivered, then dead-lettered after max_deliveries.
                Err(e) => Outcome::Retry(e.to_string()),
            })
            .collect();
        self.metrics.inc(
            "kitbash_archive_memory_indexed_total",
            "Memory tokens written to memory:{id}, their score and the relevance indexes.",
            &[],
            written,
        );
        self.metrics.inc(
            "kitbash_archive_memory_stale_total",
            "Memory-token events older than what was indexed for their memory (no change).",
            &[],
            stale,
        );
        out
    }
}

/// How often the indexer trims the memory stream and measures its dead letters.
pub const TRIM_EVERY: Duration = Duration::from_secs(5);

/// The memory stream's bounds: trimmed near `[archive] memory_stream_max`, never past what
/// the `index` group still needs and not while the archiver holds the trim claim; its
/// dead-letter stream measured against `[consumer] dead_letter_alarm`.
pub fn bounds(ctx: &DaemonContext) -> Bounds {
    Bounds::of(ctx)
        .trim(StreamName::Memory, ctx.config.archive.memory_stream_max)
        .watch_dead_letters([StreamName::Memory])
}
