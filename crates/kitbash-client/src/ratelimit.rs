//! Rate limiting (seed 004): an exact sliding window per `rate:{user}:{endpoint}`, checked by one
//! atomic Lua script.
//!
//! # Algorithm: sliding-window log in a list
//! The key is a list holding the server time (µs) of every request admitted in the last
//! `window`, newest first. One script per check: read Redis `TIME`, pop from the tail what left
//! the window, count (`LLEN`), admit (push the time) only if the count is below the limit, and
//! return the decision. Every admission is pushed once and popped once, and every other call
//! is O(1) on a list (head, tail, length), so a check costs the same for a limit of 10 or of
//! 10,000 — unlike the sorted set this limiter used before, whose listpack calls scan the
//! whole window (17–19 µs of Redis CPU per check at 100/min). Redis
//! runs scripts one at a time, so concurrent checks — from tasks, processes or machines — are
//! serialised and the promise holds exactly: **no half-open interval of length `window` ever
//! contains more than `limit` admitted requests**. The 101st request within any minute is
//! refused, with the exact time until the oldest admission leaves the window.
//!
//! Why not GCRA: GCRA keeps one number per key and is cheaper, but it promises a *rate*
//! (a burst of `limit`, then one request every `window / limit`), which admits up to
//! `2·limit − 1` requests in some windows. The seed asks that "the 101st request in a minute
//! fails"; only a window log keeps that promise. Cost: one list entry per admitted request
//! still in the window (≈ 17 bytes each in a listpack; under 2 KB for a full 100/min key), and a
//! handful of O(1) list calls inside one `EVALSHA` — a round trip like a `GET`. [`RateLimiter::check_many`]
//! sends many checks in one pipeline (a gateway's batch).
//!
//! The clock is Redis's (`TIME` inside the script), never the callers'; if it steps backwards
//! the script keeps using the newest time it has recorded, so windows never run backwards.
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

use fred::prelude::*;
use fred::types::scripts::Script;
use fred::types::{ClusterHash, CustomCommand, FromValue, Value};
use kitbash_schema::Keys;

use crate::ClientError;

/// The check script. KEYS[1] = the window key; ARGV = limit, window (µs).
/// Returns {allowed (0/1), count after the check, µs until the oldest entry leaves, now (µs)}.
///
/// The key is a list of admission times (µs, newest first) holding exactly the admissions still
/// in the window: what left it is popped from the tail before counting — each admission is
/// pushed once and popped once, so a check costs O(1) amortised whatever the limit — and a
/// request is admitted iff fewer than `limit` remain. A key still holding the sorted set of the
/// earlier limiter is converted in place on its first check (`WRONGTYPE` from `LINDEX`).
const CHECK_LUA: &str = r#"
local key = KEYS[1]
local limit = tonumber(ARGV[1])
local window = tonumber(ARGV[2])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local newest = redis.pcall('LINDEX', key, 0)
if type(newest) == 'table' and newest.err then
  if redis.call('TYPE', key).ok ~= 'zset' then return redis.error_reply(newest.err) end
  local old = redis.call('ZRANGE', key, 0, -1, 'WITHSCORES')
  redis.call('DEL', key)
  for i = 2, #old, 2 do redis.call('LPUSH', key, old[i]) end
  newest = redis.call('LINDEX', key, 0)
end
if newest and tonumber(newest) > now then now = tonumber(newest) end
local horizon = now - window
local oldest = false
if newest then
  if tonumber(newest) <= horizon then
    -- the whole window has passed: one DEL instead of popping each entry
    redis.call('DEL', key)
  else
    oldest = redis.call('LINDEX', key, -1)
    while tonumber(oldest) <= horizon do
      redis.call('RPOP', key)
      oldest = redis.call('LINDEX', key, -1)
    end
  end
end
local n = 0
if oldest then n = redis.call('LLEN', key) end
if n >= limit then
  -- refused: nothing written, the key's expiry already outlives its newest entry
  return {0, n, tonumber(oldest) + window - now, now}
end
local stamp = string.format('%.0f', now)
n = redis.call('LPUSH', key, stamp)
if not oldest then oldest = stamp end
redis.call('PEXPIRE', key, math.floor(window / 1000) + 1)
return {1, n, tonumber(oldest) + window - now, now}
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
        Self {
            client,
            keys,
            limits,
            fail: FailPolicy::default(),
            check: Script::from_lua(CHECK_LUA),
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
        let window = self.limits.window;
        let window_us = window.as_micros().max(1) as u64;
        let key = self.keys.rate(user, endpoint);
        let reply: Result<Vec<i64>, _> = self
            .evalsha(
                &self.check,
                key,
                vec![Value::from(limit as i64), Value::from(window_us as i64)],
            )
            .await;
        match reply {
            Ok(v) => self.decision(limit, &v),
            Err(e) if is_connection_error(&e) => Ok(self.degraded(limit)),
            Err(e) => Err(e.into()),
        }
    }

    /// Checks many requests in one pipeline — a gateway's batch: `(user, tier, endpoint)` each,
    /// one decision (or error) per request, in order. Each check is the same atomic script as
    /// [`RateLimiter::check`], so the window promise holds per key whatever else the pipeline
    /// carries; two requests of one key in a batch are counted in batch order.
    pub async fn check_many(
        &self,
        requests: &[(&str, &str, &str)],
    ) -> Vec<Result<Decision, ClientError>> {
        let window_us = self.limits.window.as_micros().max(1) as i64;
        let limits: Vec<u64> = requests
            .iter()
            .map(|(_, tier, endpoint)| self.limits.limit_for(tier, endpoint).max(1))
            .collect();
        let mut replies = self.pipelined(requests, &limits, window_us).await;
        // A restarted or flushed Redis forgot the script: load it and send the batch again (the
        // refused calls counted nothing).
        if replies
            .iter()
            .any(|r| matches!(r, Err(e) if e.details().starts_with("NOSCRIPT")))
        {
            // A failed load shows again as NOSCRIPT in the second round's errors.
            let _ = self.check.load(&self.client).await;
            replies = self.pipelined(requests, &limits, window_us).await;
        }
        replies
            .into_iter()
            .zip(&limits)
            .map(|(r, &limit)| match r {
                Ok(v) => self.decision(limit, &v),
                Err(e) if is_connection_error(&e) => Ok(self.degraded(limit)),
                Err(e) => Err(e.into()),
            })
            .collect()
    }

    async fn pipelined(
        &self,
        requests: &[(&str, &str, &str)],
        limits: &[u64],
        window_us: i64,
    ) -> Vec<Result<Vec<i64>, fred::error::Error>> {
        let cmd = CustomCommand::new_static("EVALSHA", ClusterHash::Offset(2), false);
        let pipe = self.client.pipeline();
        for ((user, _, endpoint), &limit) in requests.iter().zip(limits) {
            let argv = vec![
                Value::from(self.check.sha1().clone()),
                Value::from(1_i64),
                Value::from(self.keys.rate(user, endpoint)),
                Value::from(limit as i64),
                Value::from(window_us),
            ];
            // Queued, not sent: the pipeline sends everything at `try_all`.
            let _ = pipe.custom::<Value, Value>(cmd.clone(), argv).await;
        }
        pipe.try_all::<Vec<i64>>().await
    }

    /// A decision from the check script's reply.
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

    /// `EVALSHA sha 1 key args…` as a custom command, and on `NOSCRIPT` (a restarted or
    /// flushed Redis) `SCRIPT LOAD` and once more. fred sends its typed `EVALSHA` alone on the
    /// connection — never pipelined — which caps a client at one check per round trip
    /// (~20k/s here); a custom command is pipelined with everything else.
    async fn evalsha<R: FromValue>(
        &self,
        script: &Script,
        key: String,
        args: Vec<Value>,
    ) -> Result<R, fred::error::Error> {
        // Hash on the key (argument 2: sha, numkeys, key) so a cluster routes it to its slot.
        let cmd = CustomCommand::new_static("EVALSHA", ClusterHash::Offset(2), false);
        let mut argv: Vec<Value> = Vec::with_capacity(3 + args.len());
        argv.push(Value::from(script.sha1().clone()));
        argv.push(Value::from(1_i64));
        argv.push(Value::from(key));
        argv.extend(args);
        match self.client.custom(cmd.clone(), argv.clone()).await {
            Err(e) if e.details().starts_with("NOSCRIPT") => {
                script.load(&self.client).await?;
                self.client.custom(cmd, argv).await
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
        let window_us = self.limits.window.as_micros().max(1) as u64;
        let v: Vec<i64> = self
            .evalsha(
                &self.peek,
                self.keys.rate(user, endpoint),
                vec![Value::from(window_us as i64)],
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
