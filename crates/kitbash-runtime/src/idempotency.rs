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
