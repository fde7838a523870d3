//! Query events → CMS records. One script per event applies the hit rule to the resonance
//! decayed to the current cycle, writes the seed's three keys and the index entry, counts the
//! query and its latency, and appends a crossing when resonance rose above the threshold — all
//! guarded by the entry's idempotency marker, so a redelivered event changes nothing.
//!
//! With `[reflex] layout = "compact"` the script is [`COMPACT_HIT_LUA`]: the record is one
//! field of its bucket hash (`kitbash_schema::reflex::CompactRecord`), resonance lives in the
//! record, and a query that is hot after the hit is (re)scored in `kitbash:reflex:hot` with its
//! text in `kitbash:reflex:hot:text`. Crossings then carry the compact id, so the ghost writes
//! `ghost:{id}` where the compact lookup reads it.

use fred::prelude::*;
use fred::types::Value;
use fred::types::scripts::Script;
use kitbash_client::reflex::query_hash;
use kitbash_runtime::DaemonContext;
use kitbash_runtime::consumer::{Delivery, Handler, Outcome};
use kitbash_runtime::metrics::Metrics;
use kitbash_schema::messages::{Crossing, QueryEvent};
use kitbash_schema::reflex::{
    COMPACT_RECORD_LUA, Layout, compact_bucket, compact_id, latency_bucket, layout_tag,
};
use kitbash_schema::{Keys, Message, StreamName, ttl};

static HIT: std::sync::LazyLock<Script> = std::sync::LazyLock::new(|| Script::from_lua(HIT_LUA));
static COMPACT_HIT: std::sync::LazyLock<Script> =
    std::sync::LazyLock::new(|| Script::from_lua(format!("{COMPACT_RECORD_LUA}{COMPACT_HIT_LUA}")));

/// Compact layout. KEYS: marker, bucket, cycle, hot, hot text, crossings, queries count,
/// latency histogram, layout. ARGV: marker ttl, id, text, ln f, alpha, threshold, latency
/// bucket or '', crossing mid, crossing type, layout tag, grains kept, grain ids….
/// Returns {1, r', crossed}, {0} for a redelivery, {-1, stored layout} on a layout mismatch.
pub const COMPACT_HIT_LUA: &str = r#"
local lay = redis.call('GET', KEYS[9])
if not lay then redis.call('SET', KEYS[9], ARGV[10])
elseif lay ~= ARGV[10] then return {-1, lay} end
if not redis.call('SET', KEYS[1], '1', 'NX', 'EX', ARGV[1]) then return {0} end
local id = ARGV[2]
local lnf = tonumber(ARGV[4])
local alpha = tonumber(ARGV[5])
local thr = tonumber(ARGV[6])
local cycle = tonumber(redis.call('GET', KEYS[3]) or '0')
local count, r, old = 0, 0, {}
local v = redis.call('HGET', KEYS[2], id)
if v then
  local c, _, s, g = rec_decode(v)
  if c then count, r, old = c, math.exp(s + cycle * lnf), g end
end
local r2 = r + alpha * (1 - r)
local s2 = math.log(r2) - cycle * lnf
local new = {}
for i = 12, #ARGV do new[#new + 1] = ARGV[i] end
local now = redis.call('TIME')
redis.call('HSET', KEYS[2], id,
  rec_encode(count + 1, tonumber(now[1]), s2, rec_grains(old, new, tonumber(ARGV[11]))))
if r2 > thr then
  redis.call('ZADD', KEYS[4], string.format('%.17g', s2), id)
  redis.call('HSET', KEYS[5], id, ARGV[3])
end
redis.call('INCR', KEYS[7])
if ARGV[7] ~= '' then redis.call('HINCRBY', KEYS[8], ARGV[7], 1) end
local crossed = 0
if r <= thr and r2 > thr then
  local body = cjson.encode({hash = id, text = ARGV[3], resonance = r2, cycle = cycle})
  redis.call('XADD', KEYS[6], '*', 'type', ARGV[9], 'v', '1', 'ct', 'json', 'd', body,
    'mid', ARGV[8])
  crossed = 1
end
return {1, string.format('%.17g', r2), crossed}
"#;

/// KEYS: marker, cms, cms:grains, cms:resonance, index, cycle, crossings, queries count,
/// latency histogram. ARGV: marker ttl, h, text, last_accessed, grain score, ln f, alpha,
/// threshold, latency bucket or '', crossing mid, crossing type, record ttl, grains ttl,
/// resonance ttl, grains kept, grain ids….
const HIT_LUA: &str = r#"
if not redis.call('SET', KEYS[1], '1', 'NX', 'EX', ARGV[1]) then return {0} end
local function f17(x) return string.format('%.17g', x) end
local h = ARGV[2]
local lnf = tonumber(ARGV[6])
local alpha = tonumber(ARGV[7])
local thr = tonumber(ARGV[8])
local cycle = tonumber(redis.call('GET', KEYS[6]) or '0')
local r = 0
local s = redis.call('ZSCORE', KEYS[5], h)
if s then r = math.exp(tonumber(s) + cycle * lnf) end
local r2 = r + alpha * (1 - r)
redis.call('ZADD', KEYS[5], f17(math.log(r2) - cycle * lnf), h)
redis.call('HINCRBY', KEYS[2], 'count', 1)
redis.call('HSET', KEYS[2], 'resonance_score', f17(r2), 'last_accessed', ARGV[4],
  'cycle', string.format('%.0f', cycle), 'text', ARGV[3])
redis.call('EXPIRE', KEYS[2], ARGV[12])
redis.call('SET', KEYS[4], f17(r2), 'EX', ARGV[14])
if #ARGV >= 16 then
  for i = 16, #ARGV do redis.call('ZADD', KEYS[3], ARGV[5], ARGV[i]) end
  -- Keep the latest hits' grains only (by score, the hit's Unix second): bounded per query.
  redis.call('ZREMRANGEBYRANK', KEYS[3], 0, -(tonumber(ARGV[15]) + 1))
  redis.call('EXPIRE', KEYS[3], ARGV[13])
end
redis.call('INCR', KEYS[8])
if ARGV[9] ~= '' then redis.call('HINCRBY', KEYS[9], ARGV[9], 1) end
local crossed = 0
if r <= thr and r2 > thr then
  local body = cjson.encode({hash = h, text = ARGV[3], resonance = r2, cycle = cycle})
  redis.call('XADD', KEYS[7], '*', 'type', ARGV[11], 'v', '1', 'ct', 'json', 'd', body,
    'mid', ARGV[10])
  crossed = 1
end
return {1, f17(r2), crossed}
"#;

/// The handler of the `queries` stream.
#[derive(Clone)]
pub struct Hits {
    /// The daemon's command connection.
    client: Client,
    /// Key builder.
    keys: Keys,
    /// Metrics behind `/metrics`.
    metrics: Metrics,
    /// `ln([decay] factor)`.
    ln_factor: f64,
    /// `[decay] hit_alpha`.
    alpha: f64,
    /// `[decay] threshold`.
    threshold: f64,
    /// `[decay] marker_ttl_s`.
    marker_ttl_s: u64,
    /// `[reflex]`.
    reflex: kitbash_runtime::config::ReflexConfig,
}

impl std::fmt::Debug for Hits {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hits").finish_non_exhaustive()
    }
}

/// What applying one event did.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Applied {
    /// Applied now: the new resonance, and whether it crossed the threshold.
    Now {
        /// Resonance after the hit.
        resonance: f64,
        /// Whether a crossing was appended.
        crossed: bool,
    },
    /// The entry had already been applied (a redelivery).
    Before,
}

/// Why an event was not applied.
#[derive(Debug, thiserror::Error)]
pub enum HitError {
    /// Redis trouble (retried).
    #[error(transparent)]
    Redis(#[from] fred::error::Error),
    /// The event cannot be stored in this layout (dead-lettered).
    #[error("{0}")]
    Invalid(String),
    /// Redis holds another layout than this instance's (retried: nothing is lost while an
    /// operator fixes the configuration).
    #[error(
        "this Redis holds the reflex layout {stored:?} (kitbash:reflex:layout), this instance is configured for {configured:?}"
    )]
    Layout {
        /// Recorded in Redis.
        stored: String,
        /// This instance's.
        configured: String,
    },
    /// The hit script answered something this instance does not understand (retried, then
    /// dead-lettered; never acknowledged as applied).
    #[error("unexpected hit script reply: {0}")]
    Reply(String),
}

impl Hits {
    /// A handler writing through the daemon's command connection.
    pub fn new(ctx: &DaemonContext) -> Self {
        let c = &ctx.config.decay;
        Self {
            client: ctx.redis.client.clone(),
            keys: ctx.keys.clone(),
            metrics: ctx.metrics.clone(),
            ln_factor: c.factor.ln(),
            alpha: c.hit_alpha,
            threshold: c.threshold,
            marker_ttl_s: c.marker_ttl_s,
            reflex: ctx.config.reflex.clone(),
        }
    }

    /// Applies one query event (entry `id`) at most once.
    pub async fn apply(&self, id: &str, q: &QueryEvent) -> Result<Applied, HitError> {
        let h = match &q.hash {
            Some(h) => h.to_ascii_lowercase(),
            None => query_hash(&q.text),
        };
        if self.reflex.layout == Layout::Compact {
            return self.apply_compact(id, q, &h).await;
        }
        let k = &self.keys;
        let keys = vec![
            k.hit_marker(id),
            k.cms(&h),
            k.cms_grains(&h),
            k.cms_resonance(&h),
            k.resonance_index(),
            k.decay_cycle(),
            k.stream(StreamName::Crossings),
            k.metrics_queries_count(),
            k.latency_histogram(),
        ];
        let secs = |t: ttl::Ttl| t.secs().unwrap_or(86_400).to_string();
        let ms = (q.ts * 1000.0) as i64;
        let mut args: Vec<String> = vec![
            self.marker_ttl_s.to_string(),
            h,
            q.text.clone(),
            kitbash_schema::time::rfc3339_utc(ms),
            q.ts.floor().max(0.0).to_string(),
            format!("{:e}", self.ln_factor),
            format!("{:e}", self.alpha),
            format!("{:e}", self.threshold),
            q.latency_ms
                .map(|l| latency_bucket(l).to_string())
                .unwrap_or_default(),
            format!("decay:{id}"),
            Crossing::KIND.to_owned(),
            secs(ttl::CMS_RECORD),
            secs(ttl::CMS_GRAINS),
            secs(ttl::RESONANCE),
            self.reflex.grains_per_query.to_string(),
        ];
        args.extend(q.grains.iter().map(u64::to_string));
        let v: Value = HIT.evalsha_with_reload(&self.client, keys, args).await?;
        applied(&v)
    }

    /// [`Hits::apply`] in the compact layout.
    async fn apply_compact(&self, id: &str, q: &QueryEvent, h: &str) -> Result<Applied, HitError> {
        let bad = || {
            HitError::Invalid(format!(
                "query hash {h:?} does not start with 16 hex digits (the compact layout's id)"
            ))
        };
        let qid = compact_id(h).ok_or_else(bad)?;
        let bucket = compact_bucket(&qid, self.reflex.buckets).ok_or_else(bad)?;
        let k = &self.keys;
        let tag = layout_tag(Layout::Compact, self.reflex.buckets);
        let keys = vec![
            k.hit_marker(id),
            k.cms_bucket(bucket),
            k.decay_cycle(),
            k.reflex_hot(),
            k.reflex_hot_text(),
            k.stream(StreamName::Crossings),
            k.metrics_queries_count(),
            k.latency_histogram(),
            k.reflex_layout(),
        ];
        let mut args: Vec<String> = vec![
            self.marker_ttl_s.to_string(),
            qid,
            q.text.clone(),
            format!("{:e}", self.ln_factor),
            format!("{:e}", self.alpha),
            format!("{:e}", self.threshold),
            q.latency_ms
                .map(|l| latency_bucket(l).to_string())
                .unwrap_or_default(),
            format!("decay:{id}"),
            Crossing::KIND.to_owned(),
            tag.clone(),
            self.reflex.grains_per_query.to_string(),
        ];
        args.extend(q.grains.iter().map(u64::to_string));
        let v: Value = COMPACT_HIT
            .evalsha_with_reload(&self.client, keys, args)
            .await?;
        if let Value::Array(a) = &v
            && a.first().and_then(Value::as_i64) == Some(-1)
        {
            return Err(HitError::Layout {
                stored: a.get(1).and_then(Value::as_string).unwrap_or_default(),
                configured: tag,
            });
        }
        applied(&v)
    }
}

/// Reads the `{1, r', crossed}` / `{0}` reply of either hit script. Anything else is an error
/// (the entry is retried, then dead-lettered), never "already applied": acknowledging an
/// entry on a reply we do not understand would lose it.
fn applied(v: &Value) -> Result<Applied, HitError> {
    let unknown = || HitError::Reply(format!("{v:?}"));
    let Value::Array(parts) = v else {
        return Err(unknown());
    };
    match parts.first().and_then(Value::as_i64) {
        Some(0) if parts.len() == 1 => Ok(Applied::Before),
        Some(1) if parts.len() == 3 => {
            let resonance: f64 = parts
                .get(1)
                .and_then(Value::as_string)
                .and_then(|s| s.parse().ok())
                .filter(|r: &f64| r.is_finite())
                .ok_or_else(unknown)?;
            let crossed = match parts.get(2).and_then(Value::as_i64) {
                Some(0) => false,
                Some(1) => true,
                _ => return Err(unknown()),
            };
            Ok(Applied::Now { resonance, crossed })
        }
        _ => Err(unknown()),
    }
}

impl Handler<QueryEvent> for Hits {
    async fn handle(&mut self, batch: Vec<Delivery<QueryEvent>>) -> Vec<Outcome> {
        // Hits of one cycle commute (1 − r' = (1 − alpha)(1 − r)), so the batch is applied
        // concurrently; fred pipelines the scripts on the one connection.
        let this = &*self;
        let results =
            futures::future::join_all(batch.iter().map(|d| this.apply(&d.id, &d.message))).await;
        let mut hits = 0;
        let mut crossings = 0;
        let out = results
            .into_iter()
            .map(|r| match r {
                Ok(Applied::Now { crossed, .. }) => {
                    hits += 1;
                    crossings += u64::from(crossed);
                    Outcome::Ack
                }
                Ok(Applied::Before) => Outcome::Ack,
                Err(HitError::Invalid(why)) => Outcome::Dead(why),
                // Redis cannot do it now (OOM, a lost connection, a failover): held and
                // retried, never dead-lettered.
                Err(HitError::Redis(e)) if kitbash_runtime::redis::is_transient(&e) => {
                    Outcome::Transient(e.to_string())
                }
                // Another layout in Redis: held (the instance reports not ready) until an
                // operator fixes the configuration — nothing is dead-lettered meanwhile.
                Err(e @ HitError::Layout { .. }) => {
                    tracing::error!(error = %e, "query event not applied");
                    Outcome::Transient(e.to_string())
                }
                // Anything else (an unexpected script reply, an error of the command itself):
                // redelivered, dead-lettered after `consumer.max_deliveries`.
                Err(e) => Outcome::Retry(e.to_string()),
            })
            .collect();
        self.metrics.inc(
            "kitbash_decay_hits_total",
            "Query events applied to CMS records.",
            &[],
            hits,
        );
        self.metrics.inc(
            "kitbash_decay_crossings_total",
            "Crossings emitted (resonance rose above the threshold).",
            &[],
            crossings,
        );
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn arr(v: Vec<Value>) -> Value {
        Value::Array(v)
    }

    #[test]
    fn the_hit_script_reply_is_classified_strictly() {
        assert_eq!(
            applied(&arr(vec![Value::Integer(0)])).ok(),
            Some(Applied::Before)
        );
        assert_eq!(
            applied(&arr(vec![
                Value::Integer(1),
                Value::from("0.25"),
                Value::Integer(1)
            ]))
            .ok(),
            Some(Applied::Now {
                resonance: 0.25,
                crossed: true
            })
        );
        // Unknown replies are errors, never "already applied".
        for v in [
            Value::Null,
            Value::Integer(1),
            arr(vec![]),
            arr(vec![Value::Integer(2)]),
            arr(vec![Value::Integer(0), Value::Integer(0)]),
            arr(vec![Value::Integer(1)]),
            arr(vec![Value::Integer(1), Value::from("x"), Value::Integer(0)]),
            arr(vec![
                Value::Integer(1),
                Value::from("0.5"),
                Value::Integer(7),
            ]),
            arr(vec![Value::from("OK")]),
        ] {
            assert!(
                matches!(applied(&v), Err(HitError::Reply(_))),
                "{v:?} is not understood"
            );
        }
    }
}
