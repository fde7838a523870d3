//! Rate limiting (seed 004): an exact sliding window per `rate:{user}:{endpoint}`, checked by one
//! atomic Lua script.
//!
//! # Algorithm: a sliding-window log capped at the limit
//! The key is a list of the server times (µs) of the latest admissions, newest first, never
//! longer than `limit`. A request at `now` is admitted iff the list is shorter than `limit` or
//! its oldest element is outside the window (`≤ now − window`): the list then holds the last
//! `limit` admissions, so "the `limit`-th latest admission left the window" is exactly "fewer
//! than `limit` admissions are in it". An admission pushes `now` on the head; a refusal writes
//! nothing. Elements that left the window are dropped from the tail, at most
//! [`STALE_POPS_PER_CHECK`] per check, so a check is a fixed handful of O(1) list calls
//! (`LINDEX` of the head and the tail, `LLEN`, `LPUSH`, `PEXPIRE`) whatever the limit — a limit of 10,000 costs what a limit
//! of 10 costs, and no single check ever walks a long backlog. Redis runs scripts one at a time,
//! so concurrent checks — from tasks, processes or machines — are serialised and the promise
//! holds exactly: **no half-open interval of length `window` ever contains more than `limit`
//! admitted requests**. The 101st request within any minute is refused, with the exact time
//! until the oldest admission leaves the window.
//!
//! `remaining` and `reset` are exact whenever the tail has caught up (always, for a caller
//! whose rate does not drop sharply). After a burst followed by a pause, more than
//! [`STALE_POPS_PER_CHECK`] elements may have left the window at once; until the next checks
//! have dropped them, the count includes them — `remaining` is then lower than the truth
//! (never higher) and `reset` is zero (a slot is free now). Admission decisions are exact in
//! every case.
//!
//! Why not GCRA: GCRA keeps one number per key and is cheaper, but it promises a *rate*
//! (a burst of `limit`, then one request every `window / limit`), which admits up to
//! `2·limit − 1` requests in some windows. The seed asks that "the 101st request in a minute
//! fails"; only a window log keeps that promise. Cost: one list element per admission, at most
//! `limit` (≈ 17 bytes each in a listpack; under 2 KB for a full 100/min key); the key expires
//! one window after its last admission, so an idle user leaves nothing behind.
//!
//! [`RateLimiter::check_many`] checks a gateway's batch: one script call per cluster slot (the
//! whole batch on a standalone Redis), chunks of [`CHECK_MANY_CHUNK`] pipelined, one decision or
//! typed error per request.
//!
//! The clock is Redis's (`TIME` inside the script, once per call), never the callers'; if it
//! steps backwards the script keeps using the newest time it has recorded, so windows never run
//! backwards.
//!
//! # Upgrading with live windows
//! The key's spelling and type are those of the previous list limiter, which kept only the
//! admissions still in the window: its lists are valid capped logs, so old and new clients can
//! share keys during a rolling upgrade. A key still holding the sorted set of the limiter before
//! that is converted in place on its first check (its newest `limit` in-window admissions,
//! once), so an upgrade admits nobody past the limit; any other type under the key is a
//! `WRONGTYPE` error for that request alone.
//!
//! # When Redis is away
//! [`FailPolicy::Open`] (the default) admits and marks the decision
//! [`degraded`](Decision::degraded): the limiter protects capacity and fairness, and refusing
//! everything while Redis is away would turn a cache outage into an API outage.
//! [`FailPolicy::Closed`] refuses (for logins and other endpoints where an unmetered burst is
//! worse than downtime). Only connection failures and timeouts trigger the policy; a reply
//! error (say `WRONGTYPE` from a foreign value under the key) is returned as an error.

use std::collections::HashMap;
use std::time::Duration;

use fred::error::{Error as RedisError, ErrorKind};
use fred::prelude::*;
use fred::types::scripts::Script;
use fred::types::{ClusterHash, CustomCommand, FromValue, Value};
use kitbash_schema::Keys;

use crate::ClientError;

/// At most this many admissions that left the window are dropped from a key per check (a
/// bound, so a check's cost does not depend on how long the caller paused).
pub const STALE_POPS_PER_CHECK: usize = 3;

/// [`RateLimiter::check_many`] sends at most this many checks per script call, so one call
/// holds Redis for tens of microseconds, not milliseconds.
pub const CHECK_MANY_CHUNK: usize = 64;

/// The check script. `KEYS` = the windows; `ARGV[1]` = the window (µs), `ARGV[1 + i]` = the
/// limit of `KEYS[i]`. Returns one item per key: `{allowed (0/1), count after the check, µs
/// until the oldest admission leaves the window, now (µs)}`, or the error text for that key
/// alone (a foreign type under it).
///
/// Per key: `LINDEX 0` (the newest, for the clock guard; `WRONGTYPE` here, before any write,
/// sends a sorted set of the earlier limiter to the conversion), `LLEN`, `LINDEX -1` (the
/// oldest; `RPOP` and `LINDEX -1` again for each that left the window, at most
/// [`STALE_POPS_PER_CHECK`]), then `LPUSH` and `PEXPIRE` on admission: 5 calls for an
/// admission, 3 for a refusal, at most 11. `#!lua` without flags: Redis refuses the whole call up front under `OOM`, never
/// half a batch.
const CHECK_LUA: &str = r#"#!lua
local window = tonumber(ARGV[1])
local ttl = math.floor(window / 1000) + 1
local t = redis.call('TIME')
local clock = t[1] * 1000000 + t[2]
local out = {}
for i, key in ipairs(KEYS) do
  local limit = tonumber(ARGV[i + 1])
  local now = clock
  local newest = redis.pcall('LINDEX', key, 0)
  local failed = nil
  if type(newest) == 'table' then
    if redis.call('TYPE', key).ok == 'zset' then
      -- the sorted set of the earlier limiter: keep its newest `limit` in-window admissions
      local z = redis.call('ZRANGE', key, '+inf', string.format('(%.0f', now - window),
        'BYSCORE', 'REV', 'LIMIT', 0, limit, 'WITHSCORES')
      redis.call('DEL', key)
      for j = 2, #z, 2 do redis.call('RPUSH', key, tonumber(z[j])) end
      if #z > 0 then redis.call('PEXPIRE', key, ttl) end
      newest = redis.call('LINDEX', key, 0)
    else
      failed = newest.err
    end
  end
  if failed then
    out[i] = failed
  else
    local reset = window
    local n = 0
    local refused = false
    if newest then
      newest = tonumber(newest)
      if newest > now then now = newest end
    end
    local horizon = now - window
    if newest and newest > horizon then
      n = redis.call('LLEN', key)
      if n > limit then
        -- the limit was lowered: keep the newest `limit`
        redis.call('LTRIM', key, 0, limit - 1)
        n = limit
      end
      -- admissions that left the window go from the tail, at most three per check (the head
      -- is inside the window, so the tail is never empty here)
      local oldest = tonumber(redis.call('LINDEX', key, -1))
      local stale = 0
      while oldest <= horizon and stale < 3 do
        redis.call('RPOP', key)
        stale = stale + 1
        oldest = tonumber(redis.call('LINDEX', key, -1))
      end
      n = n - stale
      if oldest > horizon then reset = oldest + window - now else reset = 0 end
      if n >= limit then
        refused = true
        out[i] = {0, n, reset, now}
      end
    elseif newest then
      -- the whole log has left the window
      redis.call('DEL', key)
    end
    if not refused then
      n = redis.call('LPUSH', key, now)
      redis.call('PEXPIRE', key, ttl)
      out[i] = {1, n, reset, now}
    end
  end
end
return out
"#;

/// The read-only count behind `kitbash ratelimit show`: {count in window, µs until the oldest
/// leaves, now (µs)}. Reads the whole window (an operator's command, not a hot path); also
/// reads a key the earlier sorted-set limiter left.
const PEEK_LUA: &str = r#"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local window = tonumber(ARGV[1])
local times = {}
if redis.call('TYPE', KEYS[1]).ok == 'zset' then
  local z = redis.call('ZRANGE', KEYS[1], 0, -1, 'WITHSCORES')
  for i = #z, 2, -2 do times[#times + 1] = z[i] end
else
  times = redis.call('LRANGE', KEYS[1], 0, -1)
end
if times[1] ~= nil and tonumber(times[1]) > now then now = tonumber(times[1]) end
local n, oldest = 0, nil
for _, v in ipairs(times) do
  if tonumber(v) > now - window then n = n + 1; oldest = tonumber(v) end
end
local reset = 0
if oldest then reset = oldest + window - now end
return {n, reset, now}
"#;

/// What a check does when Redis cannot answer (connection lost, timeout).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum FailPolicy {
    /// Admit, with [`Decision::degraded`] set. The default (see the module docs for why).
    #[default]
    Open,
    /// Refuse, with [`Decision::degraded`] set and a one-second `Retry-After`.
    Closed,
}

/// Limits per tier and endpoint: the most specific match wins — the endpoint's limit for the
/// tier, then the endpoint's `"*"` limit, then the tier's limit, then the default.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Requests per window when nothing more specific applies (seed 004: 100).
    pub default_limit: u64,
    /// The sliding window (seed 004: one minute).
    pub window: Duration,
    /// Limit by tier name.
    pub tiers: HashMap<String, u64>,
    /// Limit by endpoint, then tier (`"*"` = every tier not named).
    pub endpoints: HashMap<String, HashMap<String, u64>>,
}

impl Default for Limits {
    /// The seed's policy: 100 requests per minute for everyone.
    fn default() -> Self {
        Self::new(100, Duration::from_secs(60))
    }
}

impl Limits {
    /// `default_limit` requests per `window` for everyone (both at least 1).
    pub fn new(default_limit: u64, window: Duration) -> Self {
        Self {
            default_limit: default_limit.max(1),
            window: window.max(Duration::from_micros(1)),
            tiers: HashMap::new(),
            endpoints: HashMap::new(),
        }
    }

    /// Sets the limit of a tier.
    pub fn with_tier(mut self, tier: impl Into<String>, limit: u64) -> Self {
        self.tiers.insert(tier.into(), limit.max(1));
        self
    }

    /// Sets the limit of a tier (`"*"`: every tier) on one endpoint.
    pub fn with_endpoint(
        mut self,
        endpoint: impl Into<String>,
        tier: impl Into<String>,
        limit: u64,
    ) -> Self {
        self.endpoints
            .entry(endpoint.into())
            .or_default()
            .insert(tier.into(), limit.max(1));
        self
    }

    /// The limit that applies to `tier` on `endpoint`.
    pub fn limit_for(&self, tier: &str, endpoint: &str) -> u64 {
        self.endpoints
            .get(endpoint)
            .and_then(|by_tier| by_tier.get(tier).or_else(|| by_tier.get("*")))
            .or_else(|| self.tiers.get(tier))
            .copied()
            .unwrap_or(self.default_limit)
    }
}

/// The outcome of one check: enough for the IETF `RateLimit`/`RateLimit-Policy` fields, the de
/// facto `X-RateLimit-*` headers and `Retry-After` (see [`Decision::headers`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Decision {
    /// Whether the request may proceed.
    pub allowed: bool,
    /// The limit that applied.
    pub limit: u64,
    /// Requests still admissible in the current window after this one.
    pub remaining: u64,
    /// Until the oldest admission leaves the window and a slot frees (zero when the window is
    /// empty).
    pub reset: Duration,
    /// When refused: how long until a request would be admitted.
    pub retry_after: Option<Duration>,
    /// The window length.
    pub window: Duration,
    /// Redis's clock at the check, µs since the Unix epoch (0 when degraded).
    pub server_time_us: u64,
    /// Redis could not be asked; the decision follows the [`FailPolicy`].
    pub degraded: bool,
}

impl Decision {
    /// Response header fields for this decision:
    /// - `RateLimit-Policy: "default";q=100;w=60` and `RateLimit: "default";r=42;t=17`
    ///   (draft-ietf-httpapi-ratelimit-headers-08 and later: quota, window, remaining,
    ///   seconds until reset);
    /// - `X-RateLimit-Limit`, `X-RateLimit-Remaining`, `X-RateLimit-Reset` (Unix seconds when
    ///   a slot frees, as GitHub and Twitter send it);
    /// - `Retry-After` (seconds, rounded up) when refused.
    ///
    /// A degraded decision carries only the policy and, when refused, `Retry-After`: the
    /// counts are unknown.
    ///
    /// ```
    /// use std::time::Duration;
    /// use kitbash_client::ratelimit::Decision;
    /// let d = Decision {
    ///     allowed: false, limit: 100, remaining: 0,
    ///     reset: Duration::from_millis(12_300), retry_after: Some(Duration::from_millis(12_300)),
    ///     window: Duration::from_secs(60), server_time_us: 1_700_000_000_000_000, degraded: false,
    /// };
    /// let h = d.headers();
    /// assert!(h.contains(&("RateLimit-Policy", "\"default\";q=100;w=60".to_owned())));
    /// assert!(h.contains(&("RateLimit", "\"default\";r=0;t=13".to_owned())));
    /// assert!(h.contains(&("Retry-After", "13".to_owned())));
    /// assert!(h.contains(&("X-RateLimit-Reset", "1700000013".to_owned())));
    /// ```
    pub fn headers(&self) -> Vec<(&'static str, String)> {
        let secs_up = |d: Duration| d.as_micros().div_ceil(1_000_000);
        let mut h = vec![(
            "RateLimit-Policy",
            format!("\"default\";q={};w={}", self.limit, secs_up(self.window)),
        )];
        if !self.degraded {
            h.push((
                "RateLimit",
                format!("\"default\";r={};t={}", self.remaining, secs_up(self.reset)),
            ));
            let reset_at =
                (self.server_time_us + self.reset.as_micros() as u64).div_ceil(1_000_000);
            h.push(("X-RateLimit-Limit", self.limit.to_string()));
            h.push(("X-RateLimit-Remaining", self.remaining.to_string()));
            h.push(("X-RateLimit-Reset", reset_at.to_string()));
        }
        if let Some(after) = self.retry_after.filter(|_| !self.allowed) {
            h.push(("Retry-After", secs_up(after).max(1).to_string()));
        }
        h
    }
}

/// A window's current state, without admitting anything (`kitbash ratelimit show`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WindowState {
    /// Requests admitted in the current window.
    pub count: u64,
    /// Until the oldest of them leaves the window.
    pub reset: Duration,
}

/// True for the errors that mean "Redis could not be asked" (connection, timeout, back
/// pressure), as opposed to an error reply.
pub fn is_connection_error(e: &fred::error::Error) -> bool {
    use fred::error::ErrorKind;
    matches!(
        e.kind(),
        ErrorKind::IO | ErrorKind::Timeout | ErrorKind::Canceled | ErrorKind::Backpressure
    )
}

/// Checks requests against [`Limits`] in Redis.
#[derive(Clone)]
pub struct RateLimiter {
    /// The connected client every check goes through (fred pipelines concurrent checks).
    client: Client,
    /// Where `rate:{user}:{endpoint}` lives.
    keys: Keys,
    /// The limits; read on every check.
    limits: Limits,
    /// What a check does when Redis is away.
    fail: FailPolicy,
    /// The check script, hashed once; sent by `EVALSHA` (loaded on `NOSCRIPT`).
    check: Script,
    /// `check`'s SHA-1 as an argument, built once (a cheap clone per call).
    check_sha: Value,
    /// The read-only window script.
    peek: Script,
}

impl std::fmt::Debug for RateLimiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RateLimiter")
            .field("keys", &self.keys)
            .field("limits", &self.limits)
            .field("fail", &self.fail)
            .finish_non_exhaustive()
    }
}

impl RateLimiter {
    /// A limiter on a connected client, failing open.
    ///
    /// ```no_run
    /// # async fn demo(client: fred::prelude::Client) -> Result<(), kitbash_client::ClientError> {
    /// use kitbash_client::ratelimit::{Limits, RateLimiter};
    /// let limiter = RateLimiter::new(client, kitbash_schema::Keys::default(), Limits::default());
    /// let d = limiter.check("alice", "free", "/search").await?;
    /// if !d.allowed {
    ///     println!("429, retry in {:?}", d.retry_after);
    /// }
    /// # Ok(()) }
    /// ```
    pub fn new(client: Client, keys: Keys, limits: Limits) -> Self {
        let check = Script::from_lua(CHECK_LUA);
        Self {
            client,
            keys,
            limits,
            fail: FailPolicy::default(),
            check_sha: Value::String(check.sha1().clone()),
            check,
            peek: Script::from_lua(PEEK_LUA),
        }
    }

    /// Same limiter with another [`FailPolicy`].
    pub fn with_fail_policy(mut self, fail: FailPolicy) -> Self {
        self.fail = fail;
        self
    }

    /// The limits in force.
    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// The SHA-1 of the check script (for `redis-benchmark EVALSHA` comparisons).
    pub fn check_script_sha(&self) -> &str {
        self.check.sha1()
    }

    /// Loads the scripts now (otherwise the first check does, on `NOSCRIPT`).
    pub async fn load_scripts(&self) -> Result<(), ClientError> {
        self.check.load(&self.client).await?;
        self.peek.load(&self.client).await?;
        Ok(())
    }

    /// Checks (and, if admitted, counts) one request of `user` in `tier` on `endpoint`.
    pub async fn check(
        &self,
        user: &str,
        tier: &str,
        endpoint: &str,
    ) -> Result<Decision, ClientError> {
        self.check_with_limit(user, endpoint, self.limits.limit_for(tier, endpoint))
            .await
    }

    /// Checks one request against an explicit `limit` per window.
    ///
    /// ```no_run
    /// # async fn demo(limiter: kitbash_client::ratelimit::RateLimiter) -> Result<(), kitbash_client::ClientError> {
    /// let d = limiter.check_with_limit("bob", "/upload", 10).await?;
    /// for (name, value) in d.headers() {
    ///     println!("{name}: {value}");
    /// }
    /// # Ok(()) }
    /// ```
    pub async fn check_with_limit(
        &self,
        user: &str,
        endpoint: &str,
        limit: u64,
    ) -> Result<Decision, ClientError> {
        let limit = limit.max(1);
        let argv = |sha: Value| {
            vec![
                sha,
                Value::Integer(1),
                Value::from(self.keys.rate(user, endpoint)),
                self.window_arg(),
                Value::Integer(limit_arg(limit)),
            ]
        };
        let reply: Result<Value, _> = self.evalsha(&self.check, &self.check_sha, argv).await;
        match reply {
            Ok(v) => match check_items(v, 1).pop() {
                Some(item) => item.and_then(|v| self.decision(limit, &v)),
                None => Err(ClientError::Reply(
                    "rate-limit script returned no item".into(),
                )),
            },
            Err(e) if is_connection_error(&e) => Ok(self.degraded(limit)),
            Err(e) => Err(e.into()),
        }
    }

    /// Checks many requests at once — a gateway's batch: `(user, tier, endpoint)` each, one
    /// decision (or error) per request, in order. The checks of one cluster slot (the whole
    /// batch on a standalone Redis) go to the check script together, [`CHECK_MANY_CHUNK`] keys
    /// per call, and every call is pipelined: one round trip for the batch. Each key is checked
    /// exactly as by [`RateLimiter::check`], so the window promise holds per key whatever else
    /// the batch carries; two requests of one key are counted in batch order. A foreign value
    /// under one key fails that request alone; a connection failure follows the
    /// [`FailPolicy`] for the requests it cut.
    pub async fn check_many(
        &self,
        requests: &[(&str, &str, &str)],
    ) -> Vec<Result<Decision, ClientError>> {
        let limits: Vec<u64> = requests
            .iter()
            .map(|(_, tier, endpoint)| self.limits.limit_for(tier, endpoint).max(1))
            .collect();
        let keys: Vec<String> = requests
            .iter()
            .map(|(user, _, endpoint)| self.keys.rate(user, endpoint))
            .collect();
        let calls = self.calls_of(&keys);
        let mut replies = self.pipelined(&calls, &keys, &limits).await;
        // A restarted or flushed Redis forgot the script: load it and send the calls that were
        // refused again (a refused call counted nothing).
        if replies
            .iter()
            .any(|r| matches!(r, Err(e) if e.details().starts_with("NOSCRIPT")))
        {
            // A failed load shows again as NOSCRIPT in the second round's errors.
            let _ = self.check.load(&self.client).await;
            let again: Vec<usize> = (0..calls.len())
                .filter(|&c| matches!(&replies[c], Err(e) if e.details().starts_with("NOSCRIPT")))
                .collect();
            let retried: Vec<Vec<usize>> = again.iter().map(|&c| calls[c].clone()).collect();
            for (c, r) in again
                .into_iter()
                .zip(self.pipelined(&retried, &keys, &limits).await)
            {
                replies[c] = r;
            }
        }
        let mut out: Vec<Option<Result<Decision, ClientError>>> =
            (0..requests.len()).map(|_| None).collect();
        for (call, reply) in calls.iter().zip(replies) {
            match reply {
                Ok(v) => {
                    for (&i, item) in call.iter().zip(check_items(v, call.len())) {
                        out[i] = Some(item.and_then(|v| self.decision(limits[i], &v)));
                    }
                }
                Err(e) => {
                    for &i in call {
                        out[i] = Some(if is_connection_error(&e) {
                            Ok(self.degraded(limits[i]))
                        } else {
                            Err(e.clone().into())
                        });
                    }
                }
            }
        }
        out.into_iter()
            .map(|d| d.unwrap_or_else(|| Err(ClientError::Reply("no reply for this check".into()))))
            .collect()
    }

    /// The script calls of a batch: indices into `keys`, grouped by cluster slot (one group on a
    /// standalone Redis), in batch order within a group, at most [`CHECK_MANY_CHUNK`] per call.
    fn calls_of(&self, keys: &[String]) -> Vec<Vec<usize>> {
        let mut groups: Vec<(u16, Vec<usize>)> = Vec::new();
        let clustered = self.client.is_clustered();
        for (i, key) in keys.iter().enumerate() {
            let slot = if clustered {
                fred::util::redis_keyslot(key.as_bytes())
            } else {
                0
            };
            match groups.iter_mut().find(|(s, _)| *s == slot) {
                Some((_, members)) => members.push(i),
                None => groups.push((slot, vec![i])),
            }
        }
        groups
            .into_iter()
            .flat_map(|(_, members)| {
                members
                    .chunks(CHECK_MANY_CHUNK)
                    .map(<[usize]>::to_vec)
                    .collect::<Vec<_>>()
            })
            .collect()
    }

    /// Sends `calls` (each an `EVALSHA` of the check script over its keys) in one pipeline.
    async fn pipelined(
        &self,
        calls: &[Vec<usize>],
        keys: &[String],
        limits: &[u64],
    ) -> Vec<Result<Value, RedisError>> {
        let pipe = self.client.pipeline();
        for call in calls {
            let mut argv = Vec::with_capacity(3 + 2 * call.len());
            argv.push(self.check_sha.clone());
            argv.push(Value::Integer(call.len() as i64));
            argv.extend(call.iter().map(|&i| Value::from(keys[i].as_str())));
            argv.push(self.window_arg());
            argv.extend(call.iter().map(|&i| Value::Integer(limit_arg(limits[i]))));
            // Queued, not sent: the pipeline sends everything at `try_all`.
            let _ = pipe.custom::<Value, Value>(evalsha_cmd(), argv).await;
        }
        pipe.try_all::<Value>().await
    }

    /// The window argument of the check script (µs).
    fn window_arg(&self) -> Value {
        Value::Integer(self.limits.window.as_micros().clamp(1, i64::MAX as u128) as i64)
    }

    /// A decision from one item of the check script's reply.
    fn decision(&self, limit: u64, v: &[i64]) -> Result<Decision, ClientError> {
        let [allowed, count, reset_us, now_us] = v[..] else {
            return Err(ClientError::Reply(format!(
                "rate-limit script returned {v:?}"
            )));
        };
        let allowed = allowed == 1;
        let reset = Duration::from_micros(reset_us.max(0) as u64);
        Ok(Decision {
            allowed,
            limit,
            remaining: limit.saturating_sub(count.max(0) as u64),
            reset,
            retry_after: (!allowed).then_some(reset),
            window: self.limits.window,
            server_time_us: now_us.max(0) as u64,
            degraded: false,
        })
    }

    /// `EVALSHA sha numkeys keys… args…` as a custom command (`argv(sha)` builds the arguments),
    /// and on `NOSCRIPT` (a restarted or flushed Redis) `SCRIPT LOAD` and once more. fred sends
    /// its typed `EVALSHA` alone on the connection — never pipelined — which caps a client at
    /// one check per round trip (~20k/s here); a custom command is pipelined with everything
    /// else.
    async fn evalsha<R: FromValue>(
        &self,
        script: &Script,
        sha: &Value,
        argv: impl Fn(Value) -> Vec<Value>,
    ) -> Result<R, RedisError> {
        match self.client.custom(evalsha_cmd(), argv(sha.clone())).await {
            Err(e) if e.details().starts_with("NOSCRIPT") => {
                script.load(&self.client).await?;
                self.client.custom(evalsha_cmd(), argv(sha.clone())).await
            }
            other => other,
        }
    }

    fn degraded(&self, limit: u64) -> Decision {
        let allowed = self.fail == FailPolicy::Open;
        Decision {
            allowed,
            limit,
            remaining: 0,
            reset: Duration::ZERO,
            retry_after: (!allowed).then_some(Duration::from_secs(1)),
            window: self.limits.window,
            server_time_us: 0,
            degraded: true,
        }
    }

    /// The window of `user` on `endpoint`, without counting a request.
    pub async fn peek(&self, user: &str, endpoint: &str) -> Result<WindowState, ClientError> {
        let key = self.keys.rate(user, endpoint);
        let v: Vec<i64> = self
            .evalsha(
                &self.peek,
                &Value::String(self.peek.sha1().clone()),
                |sha| {
                    vec![
                        sha,
                        Value::Integer(1),
                        Value::from(key.as_str()),
                        self.window_arg(),
                    ]
                },
            )
            .await?;
        let [count, reset_us, _now] = v[..] else {
            return Err(ClientError::Reply(format!("peek script returned {v:?}")));
        };
        Ok(WindowState {
            count: count.max(0) as u64,
            reset: Duration::from_micros(reset_us.max(0) as u64),
        })
    }

    /// Forgets every request of `user` on `endpoint`. Returns whether a window existed.
    pub async fn reset(&self, user: &str, endpoint: &str) -> Result<bool, ClientError> {
        let n: i64 = self.client.del(self.keys.rate(user, endpoint)).await?;
        Ok(n > 0)
    }
}

/// `EVALSHA` as a custom command, hashed on its first key (argument 2: sha, numkeys, key) so a
/// cluster routes it to the key's slot.
fn evalsha_cmd() -> CustomCommand {
    CustomCommand::new_static("EVALSHA", ClusterHash::Offset(2), false)
}

/// A limit as the script's argument.
fn limit_arg(limit: u64) -> i64 {
    i64::try_from(limit).unwrap_or(i64::MAX)
}

/// The items of a check-script reply: `expected` of them, each four integers or the error
/// text of that key (a `WRONGTYPE` from a foreign value), typed as the error Redis would send.
fn check_items(reply: Value, expected: usize) -> Vec<Result<Vec<i64>, ClientError>> {
    let items = match reply {
        Value::Array(items) if items.len() == expected => items,
        other => {
            let what = format!("rate-limit script returned {other:?} for {expected} checks");
            return (0..expected)
                .map(|_| Err(ClientError::Reply(what.clone())))
                .collect();
        }
    };
    items
        .into_iter()
        .map(|item| match item {
            Value::Array(_) => Vec::<i64>::from_value(item)
                .map_err(|e| ClientError::Reply(format!("rate-limit script item: {e}"))),
            Value::String(text) => Err(ClientError::Redis(reply_error(&text))),
            Value::Bytes(b) => Err(ClientError::Redis(reply_error(&String::from_utf8_lossy(
                &b,
            )))),
            other => Err(ClientError::Reply(format!(
                "rate-limit script returned the item {other:?}"
            ))),
        })
        .collect()
}

/// An error reply's text as fred would type it.
fn reply_error(text: &str) -> RedisError {
    let kind = if text.starts_with("WRONGTYPE") {
        ErrorKind::InvalidArgument
    } else {
        ErrorKind::Unknown
    };
    RedisError::new(kind, text.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_script_drops_as_many_stale_elements_as_documented() {
        assert!(CHECK_LUA.contains(&format!("stale < {STALE_POPS_PER_CHECK} do")));
    }

    #[test]
    fn a_reply_of_the_wrong_shape_fails_every_check_it_carried() {
        let items = check_items(Value::Array(vec![]), 2);
        assert_eq!(items.len(), 2);
        assert!(
            items
                .iter()
                .all(|i| matches!(i, Err(ClientError::Reply(_))))
        );
        let items = check_items(
            Value::Array(vec![
                Value::Array(vec![1.into(), 1.into(), 5.into(), 9.into()]),
                Value::from("WRONGTYPE Operation against a key holding the wrong kind of value"),
            ]),
            2,
        );
        assert_eq!(items[0].as_ref().ok(), Some(&vec![1, 1, 5, 9]));
        let e = items[1].as_ref().expect_err("an error item");
        assert!(matches!(e, ClientError::Redis(r) if *r.kind() == ErrorKind::InvalidArgument));
    }
}
