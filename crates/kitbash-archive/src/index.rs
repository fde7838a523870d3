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
//! One script per token does all of it atomically, and the batch's scripts are pipelined on
//! one connection. It is idempotent and order-proof: an event whose rank is below the one
//! already indexed for its memory id (an older access count delivered late, by another
//! instance or after a crash) changes nothing; the same event again rewrites the same values.
//! Each write also prunes the two indexes it touches: entries below `memory_min_relevance`,
//! then the least relevant beyond `memory_index_max`; an index lives one hour after its last
//! write, like the tokens it ranks.
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

    /// Indexes one token.
    pub async fn index(&self, t: &MemoryToken) -> Result<Indexed, fred::error::Error> {
        let now_s = kitbash_runtime::clock::now_ms() as f64 / 1000.0;
        let relevance = memory::relevance(t.ts, t.accesses, now_s);
        let rank = memory::rank(t.ts, t.accesses);
        let record = serde_json::to_string(t)
            .map_err(|e| fred::error::Error::new(fred::error::ErrorKind::Parse, e.to_string()))?;
        let k = &self.keys;
        let keys = vec![
            k.memory(&t.id),
            k.score(&t.user, &t.context, &t.token),
            k.memory_user_index(&t.user),
            k.memory_context_index(&t.user, &t.context),
        ];
        let ms = |t: ttl::Ttl, fallback: u64| (t.secs().unwrap_or(fallback) * 1000).to_string();
        let args = vec![
            record,
            memory::relevance_text(relevance),
            score_arg(rank),
            t.id.clone(),
            ms(ttl::MEMORY_TOKEN, 3600),
            ms(ttl::RELEVANCE_SCORE, 900),
            ms(ttl::MEMORY_TOKEN, 3600),
            self.index_max.to_string(),
            score_arg(memory::rank_floor(self.min_relevance, now_s)),
        ];
        let v: Value = INDEX.evalsha_with_reload(&self.client, keys, args).await?;
        Ok(match v.as_i64() {
            Some(0) => Indexed::Stale,
            _ => Indexed::Written,
        })
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
        // in the script: the batch is applied concurrently (fred pipelines the scripts).
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
