//! Epochs: the name of a backing stream's incarnation, shared by every bridge instance through
//! `kitbash:bridge:epoch:{stream}` ([`Keys::bridge_epoch`]).
//!
//! One script reads the stream's `XINFO STREAM` and the stored hash atomically. Within one
//! incarnation `entries-added` and `last-generated-id` only grow; when either is below what was
//! stored (the stream was deleted and recreated, or replaced by an older copy), or the hash is
//! missing, or the caller names the stored epoch as stale (its reader saw the stream go behind
//! it), the script stores a new random epoch. Every instance runs the check every
//! `[bridge] epoch_check_ms`, so they agree within that period; a client's epoch that is not the
//! current one gets `recovered: false`.
//!
//! Limit: a stream deleted and recreated between two checks with more entries than the old one
//! ever had keeps its epoch (both counters look like growth). The readers' own checks
//! (`TailReader`'s `Behind`) catch a recreated stream whose ids are below their position.

use std::sync::LazyLock;

use fred::prelude::*;
use fred::types::Value;
use fred::types::scripts::Script;
use kitbash_runtime::RuntimeError;
use kitbash_runtime::entries::string_of;
use kitbash_schema::bridge::epoch as f;
use kitbash_schema::{Keys, StreamName};

static SCRIPT: LazyLock<Script> = LazyLock::new(|| {
    Script::from_lua(format!(
        r#"
local added, last = 0, '0-0'
local info = redis.pcall('XINFO', 'STREAM', KEYS[1])
if type(info) == 'table' and info.err == nil then
  for i = 1, #info, 2 do
    if info[i] == 'entries-added' then added = tonumber(info[i + 1]) end
    if info[i] == 'last-generated-id' then last = info[i + 1] end
  end
end
local function lt(a, b)
  local am, as = string.match(a, '^(%d+)-(%d+)$')
  local bm, bs = string.match(b, '^(%d+)-(%d+)$')
  am, as, bm, bs = tonumber(am), tonumber(as), tonumber(bm), tonumber(bs)
  return am < bm or (am == bm and as < bs)
end
local cur = redis.call('HMGET', KEYS[2], '{e}', '{a}', '{l}')
local stale = ARGV[2] ~= '' and cur[1] == ARGV[2]
if (not cur[1]) or stale or added < tonumber(cur[2] or '0') or lt(last, cur[3] or '0-0') then
  redis.call('HSET', KEYS[2], '{e}', ARGV[1], '{a}', added, '{l}', last)
  return ARGV[1]
end
if tonumber(cur[2]) ~= added or cur[3] ~= last then
  redis.call('HSET', KEYS[2], '{a}', added, '{l}', last)
end
return cur[1]
"#,
        e = f::EPOCH,
        a = f::ADDED,
        l = f::LAST,
    ))
});

/// A new random epoch name (8 hex digits, as Centrifugo's are short strings).
fn fresh() -> String {
    hex::encode(rand::random::<[u8; 4]>())
}

/// The current epoch of `stream`; `stale` names an epoch the caller knows is no longer true.
pub async fn check(
    client: &Client,
    keys: &Keys,
    stream: StreamName,
    stale: Option<&str>,
) -> Result<String, RuntimeError> {
    let keys_ = vec![keys.stream(stream), keys.bridge_epoch(stream)];
    let args = vec![fresh(), stale.unwrap_or("").to_owned()];
    let v: Value = SCRIPT.evalsha_with_reload(client, keys_, args).await?;
    string_of(&v).ok_or_else(|| RuntimeError::Reply {
        command: "EVALSHA bridge epoch",
        detail: format!("{v:?}"),
    })
}
