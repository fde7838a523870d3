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

use fred::prelude::*;
use fred::types::Value;
use fred::types::scripts::Script;
use kitbash_runtime::DaemonContext;
use kitbash_runtime::leader::LeaderTerm;
use kitbash_runtime::metrics::Metrics;
use kitbash_schema::Keys;

/// Resonance below which an index entry is forgotten.
pub const FORGET_BELOW: f64 = 1e-9;

static CYCLE: std::sync::LazyLock<Script> = std::sync::LazyLock::new(|| {
    Script::from_lua(format!("{}{}", LeaderTerm::FENCE_LUA, CYCLE_LUA))
});
static REFRESH: std::sync::LazyLock<Script> =
    std::sync::LazyLock::new(|| Script::from_lua(REFRESH_LUA));

/// KEYS: lease, cycle, clock, index. ARGV: token, period ms, ln f, ln FORGET_BELOW.
/// Returns {cycle, cycles applied now, index entries forgotten}.
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
if #gone > 0 then redis.call('ZREM', KEYS[4], unpack(gone)) end
return {cycle, due, #gone}
"#;

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
        let v: Value = CYCLE
            .evalsha_with_reload(
                &self.client,
                vec![
                    term.key.clone(),
                    k.decay_cycle(),
                    k.decay_clock(),
                    k.resonance_index(),
                ],
                vec![
                    term.token.clone(),
                    self.period_ms.to_string(),
                    format!("{:e}", self.ln_factor),
                    format!("{:e}", FORGET_BELOW.ln()),
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
