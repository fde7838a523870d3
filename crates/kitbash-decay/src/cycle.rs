//! The decay cycle: O(1) whatever the number of records.
//!
//! Resonance is stored normalised to cycle 0 (`kitbash_schema::reflex`), so a cycle is one
//! `INCRBY` of `kitbash:decay:cycle`. The leader's script reads Redis `TIME` and
//! `kitbash:decay:clock` (`last_ms`, the time of the newest applied cycle) and applies
//! `floor((now − last_ms) / period)` cycles at once, advancing `last_ms` by that many periods:
//! the cycle number is a function of Redis time, so a new leader after a handover catches up
//! exactly the periods its predecessor did not apply, and running the script twice in one
//! period applies nothing the second time. The script is fenced by the leader's lease
//! (`LeaderTerm::FENCE_LUA`): a paused ex-leader that wakes up changes nothing.
//!
//! After a cycle the same script forgets, at most 1,000 at a time, index entries whose
//! resonance fell below 1e-9 (amortised O(1) per record over its life). When
//! `[decay] refresh_hottest` is N > 0, a second script rewrites `cms:{h}:resonance` and the
//! record's `resonance_score`/`cycle` of the N hottest queries, for plain `GET` readers.
//!
//! In the compact layout the same script prunes `kitbash:reflex:hot` instead: members whose
//! resonance fell to the threshold or below, with their text. Then [`DecayCycle::sweep`] visits
//! `[reflex] sweep_buckets` buckets (from the cursor `kitbash:cms:sweep`, in scripts of at most
//! 64 buckets so Redis is never blocked long) and deletes the records not hit for
//! `[reflex] record_ttl_s` by Redis time: the seed's 24 h TTL, which a hash field cannot carry
//! in Redis 7.0. A sweep is fenced like the cycle.

use fred::prelude::*;
use fred::types::Value;
use fred::types::scripts::Script;
use kitbash_runtime::DaemonContext;
use kitbash_runtime::leader::LeaderTerm;
use kitbash_runtime::metrics::Metrics;
use kitbash_schema::Keys;
use kitbash_schema::reflex::Layout;

/// Resonance below which an index entry is forgotten.
pub const FORGET_BELOW: f64 = 1e-9;

static CYCLE: std::sync::LazyLock<Script> = std::sync::LazyLock::new(|| {
    Script::from_lua(format!("{}{}", LeaderTerm::FENCE_LUA, CYCLE_LUA))
});
static SWEEP: std::sync::LazyLock<Script> = std::sync::LazyLock::new(|| {
    Script::from_lua(format!("{}{}", LeaderTerm::FENCE_LUA, SWEEP_LUA))
});
static REFRESH: std::sync::LazyLock<Script> =
    std::sync::LazyLock::new(|| Script::from_lua(REFRESH_LUA));

/// KEYS: lease, cycle, clock, index (seed) or hot set (compact)[, hot text (compact)]. ARGV:
/// token, period ms, ln f, ln of the resonance below which members go (FORGET_BELOW, or the
/// threshold for the hot set). Returns {cycle, cycles applied now, members forgotten}.
const CYCLE_LUA: &str = r#"
local period = tonumber(ARGV[2])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local cycle = tonumber(redis.call('GET', KEYS[2]) or '0')
local last = redis.call('HGET', KEYS[3], 'last_ms')
if not last then
  redis.call('SET', KEYS[2], string.format('%.0f', cycle))
  redis.call('HSET', KEYS[3], 'last_ms', string.format('%.0f', now),
    'origin_ms', string.format('%.0f', now - cycle * period))
  return {cycle, 0, 0}
end
last = tonumber(last)
local due = math.floor((now - last) / period)
if due <= 0 then return {cycle, 0, 0} end
cycle = redis.call('INCRBY', KEYS[2], due)
redis.call('HSET', KEYS[3], 'last_ms', string.format('%.0f', last + due * period))
local bound = tonumber(ARGV[4]) - cycle * tonumber(ARGV[3])
local gone = redis.call('ZRANGE', KEYS[4], '-inf', '(' .. string.format('%.17g', bound),
  'BYSCORE', 'LIMIT', 0, 1000)
if #gone > 0 then
  redis.call('ZREM', KEYS[4], unpack(gone))
  if KEYS[5] then redis.call('HDEL', KEYS[5], unpack(gone)) end
end
return {cycle, due, #gone}
"#;

/// KEYS: lease, cursor, buckets…. ARGV: token, next cursor, record ttl s. Deletes the fields
/// whose record's `last_s` is older than Redis time − ttl (a malformed record is left alone).
/// Returns the number deleted.
const SWEEP_LUA: &str = r#"
local t = redis.call('TIME')
local cutoff = tonumber(t[1]) - tonumber(ARGV[3])
local gone = 0
for i = 3, #KEYS do
  local all = redis.call('HGETALL', KEYS[i])
  local dead = {}
  for j = 1, #all, 2 do
    local last = string.match(all[j + 1], '^%d+|(%-?%d+)|')
    if last and tonumber(last) < cutoff then dead[#dead + 1] = all[j] end
  end
  if #dead > 0 then
    redis.call('HDEL', KEYS[i], unpack(dead))
    gone = gone + #dead
  end
end
redis.call('SET', KEYS[2], ARGV[2])
return gone
"#;

/// Buckets per sweep script.
const SWEEP_CHUNK: u32 = 64;

/// KEYS: index, cycle. ARGV: N, ln f, cms prefix, record suffix, resonance suffix.
const REFRESH_LUA: &str = r#"
local cycle = tonumber(redis.call('GET', KEYS[2]) or '0')
local lnf = tonumber(ARGV[2])
local top = redis.call('ZRANGE', KEYS[1], '+inf', '-inf', 'BYSCORE', 'REV', 'LIMIT', 0,
  tonumber(ARGV[1]), 'WITHSCORES')
local n = 0
for i = 1, #top, 2 do
  local h = top[i]
  local r = string.format('%.17g', math.exp(tonumber(top[i + 1]) + cycle * lnf))
  local rec = ARGV[3] .. h .. ARGV[4]
  if redis.call('EXISTS', rec) == 1 then
    redis.call('HSET', rec, 'resonance_score', r, 'cycle', string.format('%.0f', cycle))
  end
  local res = ARGV[3] .. h .. ARGV[5]
  if redis.call('EXISTS', res) == 1 then
    redis.call('SET', res, r, 'KEEPTTL')
  end
  n = n + 1
end
return n
"#;

/// The leader task.
#[derive(Clone)]
pub struct DecayCycle {
    /// The daemon's command connection.
    client: Client,
    /// Key builder.
    keys: Keys,
    /// Metrics behind `/metrics`.
    metrics: Metrics,
    /// `[decay] period_ms`.
    period_ms: u64,
    /// `ln([decay] factor)`.
    ln_factor: f64,
    /// `[decay] refresh_hottest`.
    refresh_hottest: u64,
    /// `ln([decay] threshold)`.
    ln_threshold: f64,
    /// `[reflex]`.
    reflex: kitbash_runtime::config::ReflexConfig,
}

impl std::fmt::Debug for DecayCycle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DecayCycle")
            .field("period_ms", &self.period_ms)
            .finish_non_exhaustive()
    }
}

/// What one run of the cycle script did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CycleRun {
    /// The cycle counter after the run.
    pub cycle: u64,
    /// Cycles applied by this run (0: none due, or not the leader).
    pub applied: u64,
    /// Index entries forgotten.
    pub forgotten: u64,
    /// False when the fence refused the run (the lease is someone else's).
    pub fenced_in: bool,
}

impl DecayCycle {
    /// The task of one instance.
    pub fn new(ctx: &DaemonContext) -> Self {
        let c = &ctx.config.decay;
        Self {
            client: ctx.redis.client.clone(),
            keys: ctx.keys.clone(),
            metrics: ctx.metrics.clone(),
            period_ms: c.period_ms,
            ln_factor: c.factor.ln(),
            refresh_hottest: c.refresh_hottest,
            ln_threshold: c.threshold.ln(),
            reflex: ctx.config.reflex.clone(),
        }
    }

    /// One leader tick: apply the cycles due, then refresh the hottest records if configured.
    pub async fn run(&self, term: &LeaderTerm) {
        let started = std::time::Instant::now();
        match self.apply_due(term).await {
            Ok(run) => {
                if run.applied > 0 {
                    self.metrics.inc(
                        "kitbash_decay_cycles_total",
                        "Decay cycles applied by this instance.",
                        &[],
                        run.applied,
                    );
                    self.metrics.set(
                        "kitbash_decay_cycle",
                        "The global decay cycle counter.",
                        &[],
                        run.cycle as f64,
                    );
                    if self.refresh_hottest > 0
                        && let Err(e) = self.refresh(self.refresh_hottest).await
                    {
                        tracing::warn!(error = %e, "cannot refresh the hottest records");
                    }
                    if self.reflex.layout == Layout::Compact {
                        match self.sweep(term, self.reflex.sweep_buckets).await {
                            Ok(n) => self.metrics.inc(
                                "kitbash_decay_swept_total",
                                "Compact records forgotten by the sweep (not hit for record_ttl_s).",
                                &[],
                                n,
                            ),
                            Err(e) => tracing::warn!(error = %e, "cannot sweep expired records"),
                        }
                    }
                    self.metrics.observe(
                        "kitbash_decay_cycle_seconds",
                        "Time of one decay-cycle run (script and refresh).",
                        &[],
                        started.elapsed().as_secs_f64(),
                    );
                }
            }
            Err(e) => tracing::warn!(error = %e, "decay cycle failed; retried next tick"),
        }
    }

    /// Runs the fenced cycle script once.
    pub async fn apply_due(&self, term: &LeaderTerm) -> Result<CycleRun, fred::error::Error> {
        let k = &self.keys;
        let mut keys = vec![term.key.clone(), k.decay_cycle(), k.decay_clock()];
        let forget_below = match self.reflex.layout {
            Layout::Seed => {
                keys.push(k.resonance_index());
                FORGET_BELOW.ln()
            }
            Layout::Compact => {
                keys.push(k.reflex_hot());
                keys.push(k.reflex_hot_text());
                // `(bound` is exclusive: members exactly at the threshold are not hot either.
                self.ln_threshold.next_up()
            }
        };
        let v: Value = CYCLE
            .evalsha_with_reload(
                &self.client,
                keys,
                vec![
                    term.token.clone(),
                    self.period_ms.to_string(),
                    format!("{:e}", self.ln_factor),
                    format!("{:e}", forget_below),
                ],
            )
            .await?;
        let Value::Array(a) = v else {
            return Ok(CycleRun::default());
        };
        let n = |i: usize| a.get(i).and_then(Value::as_u64).unwrap_or(0);
        Ok(CycleRun {
            cycle: n(0),
            applied: n(1),
            forgotten: n(2),
            fenced_in: true,
        })
    }

    /// Compact layout: sweeps `n` buckets from the stored cursor, deleting records not hit for
    /// `[reflex] record_ttl_s`; returns how many were deleted (0 when the fence refused).
    pub async fn sweep(&self, term: &LeaderTerm, n: u32) -> Result<u64, fred::error::Error> {
        let total = self.reflex.buckets;
        let cursor: Option<u32> = self.client.get(self.keys.cms_sweep()).await?;
        let mut at = cursor.unwrap_or(0) % total;
        let mut left = n.min(total);
        let mut gone = 0;
        while left > 0 {
            let take = left.min(SWEEP_CHUNK);
            let mut keys = vec![term.key.clone(), self.keys.cms_sweep()];
            keys.extend((0..take).map(|i| self.keys.cms_bucket((at + i) % total)));
            let next = (at + take) % total;
            let v: Value = SWEEP
                .evalsha_with_reload(
                    &self.client,
                    keys,
                    vec![
                        term.token.clone(),
                        next.to_string(),
                        self.reflex.record_ttl_s.to_string(),
                    ],
                )
                .await?;
            gone += v.as_u64().unwrap_or(0);
            at = next;
            left -= take;
        }
        Ok(gone)
    }

    /// Rewrites the plain keys of the `n` hottest queries; returns how many.
    pub async fn refresh(&self, n: u64) -> Result<u64, fred::error::Error> {
        let (pre, rec, res) = self.keys.cms_affixes();
        REFRESH
            .evalsha_with_reload(
                &self.client,
                vec![self.keys.resonance_index(), self.keys.decay_cycle()],
                vec![
                    n.to_string(),
                    format!("{:e}", self.ln_factor),
                    pre,
                    rec,
                    res,
                ],
            )
            .await
    }
}
