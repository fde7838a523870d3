//! Effects applied at most once per entry: a Lua script that sets a marker key with `SET NX`
//! and, only if it was not there, runs the effect's commands — all in one atomic step, so a
//! crash can neither apply an effect without its marker nor mark it without applying it.
//!
//! On Redis Cluster every key the commands touch must share the marker's slot (hash tags);
//! [`kitbash_schema::Keys::done_marker`] shares the stream's tag for that reason.

use fred::prelude::*;
use fred::types::Value;
use fred::types::scripts::Script;

use crate::error::RuntimeError;

/// Hashed once; `evalsha_with_reload` loads it on the first NOSCRIPT.
static APPLY_ONCE_SCRIPT: std::sync::LazyLock<Script> =
    std::sync::LazyLock::new(|| Script::from_lua(APPLY_ONCE));

const APPLY_ONCE: &str = r#"
if not redis.call('SET', KEYS[1], '1', 'NX', 'EX', ARGV[1]) then
  return 0
end
local i = 2
while i <= #ARGV do
  local n = tonumber(ARGV[i])
  local cmd = {}
  for j = 1, n do cmd[j] = ARGV[i + j] end
  redis.call(unpack(cmd))
  i = i + n + 1
end
return 1
"#;

/// [`apply_once_if`]'s script: the guard is checked before the marker is set, so a refused
/// effect leaves no marker and can be applied later. KEYS[1] marker, KEYS[2] guard key;
/// ARGV[1] ttl, ARGV[2] the guard's expected value (a missing key reads as `ARGV[3]`).
static APPLY_ONCE_IF_SCRIPT: std::sync::LazyLock<Script> =
    std::sync::LazyLock::new(|| Script::from_lua(APPLY_ONCE_IF));

const APPLY_ONCE_IF: &str = r#"
local v = redis.call('GET', KEYS[2]) or ARGV[3]
if v ~= ARGV[2] then return -1 end
if not redis.call('SET', KEYS[1], '1', 'NX', 'EX', ARGV[1]) then
  return 0
end
local i = 4
while i <= #ARGV do
  local n = tonumber(ARGV[i])
  local cmd = {}
  for j = 1, n do cmd[j] = ARGV[i + j] end
  redis.call(unpack(cmd))
  i = i + n + 1
end
return 1
"#;

/// What [`apply_once_if`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Guarded {
    /// The commands ran (and the marker is set).
    Applied,
    /// The marker was there: applied before.
    AlreadyApplied,
    /// The guard key did not hold the expected value: nothing ran, no marker set.
    GuardFailed,
}

/// Like [`apply_once`], but only while `guard` (a key) holds `expected` — checked in the same
/// script, so an effect computed from a state that has moved on (a grain bank at an older
/// `kitbash:reflex:version`) is never written over one computed from the new state. A missing
/// guard key reads as `missing`.
pub async fn apply_once_if(
    client: &Client,
    marker: &str,
    ttl_secs: u64,
    (guard, expected, missing): (&str, &str, &str),
    keys: &[String],
    commands: &[Command],
) -> Result<Guarded, RuntimeError> {
    let script = &*APPLY_ONCE_IF_SCRIPT;
    let mut all_keys: Vec<String> = Vec::with_capacity(keys.len() + 2);
    all_keys.push(marker.to_owned());
    all_keys.push(guard.to_owned());
    all_keys.extend(keys.iter().cloned());
    let mut args: Vec<Value> = vec![
        (ttl_secs.max(1) as i64).into(),
        expected.into(),
        missing.into(),
    ];
    for c in commands {
        args.push((c.len() as i64).into());
        args.extend(c.iter().cloned());
    }
    let r: i64 = script.evalsha_with_reload(client, all_keys, args).await?;
    Ok(match r {
        1 => Guarded::Applied,
        0 => Guarded::AlreadyApplied,
        _ => Guarded::GuardFailed,
    })
}

/// One Redis command as words (`["HSET", key, field, value]`).
pub type Command = Vec<Value>;

/// Runs `commands` atomically unless `marker` exists; the marker then lives `ttl_secs`.
/// Returns `true` when the commands ran, `false` when they had already been applied.
/// `keys` lists every key the commands touch (declared to Redis, required on a cluster).
pub async fn apply_once(
    client: &Client,
    marker: &str,
    ttl_secs: u64,
    keys: &[String],
    commands: &[Command],
) -> Result<bool, RuntimeError> {
    let script = &*APPLY_ONCE_SCRIPT;
    let mut all_keys: Vec<String> = Vec::with_capacity(keys.len() + 1);
    all_keys.push(marker.to_owned());
    all_keys.extend(keys.iter().cloned());
    let mut args: Vec<Value> = vec![(ttl_secs.max(1) as i64).into()];
    for c in commands {
        args.push((c.len() as i64).into());
        args.extend(c.iter().cloned());
    }
    let applied: i64 = script.evalsha_with_reload(client, all_keys, args).await?;
    Ok(applied == 1)
}
