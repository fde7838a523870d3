//! De-duplication by producer message id (`mid`) for consumer-group daemons.
//!
//! A producer that retries an `XADD` whose outcome it never learnt re-sends the message with
//! the same `mid`, so the stream can hold it twice under two entry ids. Per group, a hash maps
//! each recent mid to the entry id that first carried it and a sorted set orders them by entry
//! time; one script checks and records a whole batch. An entry is admitted when its mid is new
//! (now recorded) or when it *is* the first carrier (a redelivery after a crash must still be
//! processed); a later carrier is acknowledged without reaching the handler. The window keeps
//! the newest `consumer.dedup_window` mids and lives in Redis, so it survives restarts and is
//! shared by every instance of the group. Both keys share the stream's hash tag.

use fred::prelude::*;
use fred::types::Value;
use fred::types::scripts::Script;

use crate::consumer::Delivery;
use crate::entries::parse_id;
use crate::error::RuntimeError;

static ADMIT_SCRIPT: std::sync::LazyLock<Script> =
    std::sync::LazyLock::new(|| Script::from_lua(ADMIT));

// KEYS: mids hash, order zset. ARGV: window, then (mid, id, ms) triples ('' mid = none).
const ADMIT: &str = r#"
local out = {}
local n = 0
for i = 2, #ARGV, 3 do
  local mid, id = ARGV[i], ARGV[i + 1]
  n = n + 1
  if mid == '' then
    out[n] = 1
  else
    local first = redis.call('HGET', KEYS[1], mid)
    if not first then
      redis.call('HSET', KEYS[1], mid, id)
      redis.call('ZADD', KEYS[2], ARGV[i + 2], mid)
      out[n] = 1
    elseif first == id then
      out[n] = 1
    else
      out[n] = 0
    end
  end
end
local window = tonumber(ARGV[1])
local size = redis.call('ZCARD', KEYS[2])
if size > window then
  local old = redis.call('ZRANGE', KEYS[2], 0, size - window - 1)
  redis.call('ZREMRANGEBYRANK', KEYS[2], 0, size - window - 1)
  for j = 1, #old, 500 do
    redis.call('HDEL', KEYS[1], unpack(old, j, math.min(j + 499, #old)))
  end
end
return out
"#;

/// The (mid, entry id) pairs of a batch, for [`admit`].
pub fn pairs<M>(batch: &[Delivery<M>]) -> Vec<(Option<String>, String)> {
    batch
        .iter()
        .map(|d| (d.mid.clone(), d.id.clone()))
        .collect()
}

/// For each (mid, entry id), whether to hand the entry to the handler (see the module docs).
pub async fn admit(
    client: &Client,
    mids_key: &str,
    order_key: &str,
    window: u64,
    batch: Vec<(Option<String>, String)>,
) -> Result<Vec<bool>, RuntimeError> {
    let mut args: Vec<Value> = Vec::with_capacity(1 + batch.len() * 3);
    args.push((window as i64).into());
    for (mid, id) in &batch {
        args.push(mid.as_deref().unwrap_or("").into());
        args.push(id.as_str().into());
        args.push((parse_id(id).0 as i64).into());
    }
    let reply: Vec<i64> = ADMIT_SCRIPT
        .evalsha_with_reload(
            client,
            vec![mids_key.to_owned(), order_key.to_owned()],
            args,
        )
        .await?;
    if reply.len() != batch.len() {
        return Err(RuntimeError::Reply {
            command: "EVALSHA",
            detail: format!("dedup answered {} of {} entries", reply.len(), batch.len()),
        });
    }
    Ok(reply.into_iter().map(|r| r == 1).collect())
}
