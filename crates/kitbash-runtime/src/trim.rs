//! The one safe way to trim a stream: never past an entry that a consumer group has not
//! acknowledged (or not yet been delivered), nor past a position a partition checkpoint still
//! needs for recovery, nor — when the archive owns the trim — past what is not archived yet.
//!
//! `XTRIM MAXLEN` ignores the pending entries list (before Redis 8.2's `ACKED`), so it can delete
//! entries no group has processed. Instead the floor — the lowest id any reader still needs — is
//! computed and the stream trimmed below it (`XTRIM MINID`) **in one script** ([`TRIM_LUA`]), so
//! no group can be created, moved back (`XGROUP SETID`, a `NOGROUP` recovery) or handed an entry
//! between the computation and the trim. The floor is the minimum of: for every existing group,
//! its oldest pending entry and the entry after its `last-delivered-id`; `0-0` while one of the
//! stream's processing groups ([`StreamName::groups`]) does not exist yet (a group created later
//! would start from an already-trimmed stream and never see what was deleted; `kitbash status`
//! shows the missing group); the partition checkpoint's `snap_id` (what recovery replays from);
//! the callers' floors; and the retention or the cap.
//!
//! Two trimmers, one at a time:
//! - [`safe_trim`]: the stream's own owner ([`StreamName::trim_owner`]) trims near `max`
//!   entries — the cap's position is estimated from `XINFO STREAM` (length, first and last id)
//!   assuming an even rate, like `MAXLEN ~` — and `XTRIM MINID ~` below the floor. Observers
//!   ([`StreamName::observers`], the archive) bound it only while their group exists.
//! - [`trim_to_floor`] with [`TrimMode::Owner`]: the archive, for every stream it archives,
//!   trims exactly (`XTRIM MINID`, no `~`) below the floor, its own archived position
//!   (the manifest's last id + 1) and the retention. It does so while it holds the stream's
//!   trim claim ([`kitbash_schema::Keys::trim_claim`], taken with its archive lease,
//!   [`claim`]); **while a claim exists the owner's `safe_trim` trims nothing** — checked in
//!   the same script — so the two never race, and when the archive stops (its claim expires
//!   with its lease) the owner's bound applies again.
//!
//! On Redis ≥ 8.2 the archive's trim also passes `ACKED` (only entries every group has
//! acknowledged are deleted), detected by [`supports_acked`]; 7.0 relies on the floor alone.

use std::collections::HashMap;

use fred::prelude::*;
use fred::types::Value;
use fred::types::scripts::Script;
use kitbash_schema::{Group, Keys, StreamName};

use crate::entries::{self, id_cmp, parse_id};
use crate::error::RuntimeError;
use crate::metrics::Metrics;
use crate::redis::command_for_key;

fn fields(v: &Value) -> HashMap<String, Value> {
    match v {
        Value::Array(kv) => kv
            .chunks(2)
            .filter_map(|p| match p {
                [k, v] => entries::string_of(k).map(|k| (k, v.clone())),
                _ => None,
            })
            .collect(),
        Value::Map(m) => m
            .clone()
            .inner()
            .iter()
            .filter_map(|(k, v)| k.as_str().map(|k| (k.to_string(), v.clone())))
            .collect(),
        _ => HashMap::new(),
    }
}

fn int(m: &HashMap<String, Value>, k: &str) -> i64 {
    match m.get(k) {
        Some(Value::Integer(n)) => *n,
        Some(v) => entries::string_of(v)
            .and_then(|s| s.parse().ok())
            .unwrap_or(0),
        None => 0,
    }
}

fn first_id(v: Option<&Value>) -> Option<String> {
    match v {
        Some(Value::Array(e)) => e.first().and_then(entries::string_of),
        _ => None,
    }
}

/// The id just after `id` (`5-3` → `5-4`).
pub fn successor(id: &str) -> String {
    let (ms, seq) = parse_id(id);
    match seq.checked_add(1) {
        Some(s) => format!("{ms}-{s}"),
        None => format!("{}-0", ms + 1),
    }
}

/// What bounds a trim: the lowest id any reader still needs, and the groups that exist.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Floor {
    /// Each group's oldest pending entry and next undelivered one, and each caller floor, at
    /// their lowest. `None` when nothing constrains (no group, no floor).
    pub low: Option<String>,
    /// The names of the stream's consumer groups as `XINFO GROUPS` lists them.
    pub groups: Vec<String>,
}

/// The lowest id any reader still needs: each group's oldest pending entry and next
/// undelivered one, and each of `floors`; and which groups exist.
pub async fn safe_floor(
    client: &Client,
    stream_key: &str,
    floors: &[String],
) -> Result<Floor, RuntimeError> {
    let mut names = Vec::new();
    let mut low: Option<String> = None;
    let mut lower = |id: String| {
        if low.as_deref().is_none_or(|l| id_cmp(&id, l).is_lt()) {
            low = Some(id);
        }
    };
    for f in floors {
        lower(f.clone());
    }
    let cmd = command_for_key("XINFO", stream_key, false);
    let groups: Value = client
        .custom(cmd, vec![Value::from("GROUPS"), stream_key.into()])
        .await?;
    let Value::Array(groups) = groups else {
        return Ok(Floor { low, groups: names });
    };
    for g in &groups {
        let g = fields(g);
        let Some(name) = g.get("name").and_then(entries::string_of) else {
            continue;
        };
        names.push(name.clone());
        let delivered = g
            .get("last-delivered-id")
            .and_then(entries::string_of)
            .unwrap_or_else(|| "0-0".into());
        lower(successor(&delivered));
        if int(&g, "pending") > 0 {
            let cmd = command_for_key("XPENDING", stream_key, false);
            let summary: Value = client
                .custom(cmd, vec![Value::from(stream_key), name.as_str().into()])
                .await?;
            if let Value::Array(s) = summary
                && let Some(oldest) = s.get(1).and_then(entries::string_of)
            {
                lower(oldest);
            }
        }
    }
    Ok(Floor { low, groups: names })
}

/// Trims `stream_key` (the key of `stream`) near `max` entries, but never past [`safe_floor`],
/// and not at all while one of `stream.groups()` does not exist yet. Returns the entries
/// removed. `max = 0` trims nothing.
pub async fn safe_trim(
    client: &Client,
    stream: StreamName,
    stream_key: &str,
    max: u64,
    floors: &[String],
) -> Result<u64, RuntimeError> {
    safe_trim_for(client, stream.groups(), stream_key, max, floors).await
}

/// [`safe_trim`] with the required groups spelled out (tests use a plain stream with their
/// own groups).
pub async fn safe_trim_for(
    client: &Client,
    required: &[Group],
    stream_key: &str,
    max: u64,
    floors: &[String],
) -> Result<u64, RuntimeError> {
    if max == 0 {
        return Ok(0);
    }
    let cmd = command_for_key("XINFO", stream_key, false);
    let info: Value = match client
        .custom(cmd, vec![Value::from("STREAM"), stream_key.into()])
        .await
    {
        Ok(v) => v,
        Err(e) if e.details().contains("no such key") => return Ok(0),
        Err(e) => return Err(e.into()),
    };
    let info = fields(&info);
    let len = int(&info, "length").max(0) as u64;
    if len <= max {
        return Ok(0);
    }
    let (Some(first), Some(last)) = (
        first_id(info.get("first-entry")),
        first_id(info.get("last-entry")),
    ) else {
        return Ok(0);
    };
    // The cap's position, assuming entries arrived at an even rate between first and last.
    let (f_ms, _) = parse_id(&first);
    let (l_ms, _) = parse_id(&last);
    let excess = len - max;
    let cap_ms = f_ms + ((l_ms - f_ms) as u128 * u128::from(excess) / u128::from(len)) as u64;
    let cap = format!("{cap_ms}-0");
    let floor = floors.iter().min_by(|a, b| id_cmp(a, b)).cloned();
    let claim = kitbash_schema::keys::trim_claim_of(stream_key);
    let report = trim_to_floor(
        client,
        &TrimPlan {
            stream_key,
            claim_key: &claim,
            checkpoint_key: None,
            required,
            floor: floor.as_deref().map(|f| (f, "checkpoint")),
            retention_ms: 0,
            retention_entries: 0,
        },
        TrimMode::Fallback { cap: &cap },
    )
    .await?;
    match report.removed {
        Some(n) => Ok(n),
        None => {
            tracing::debug!(stream = %stream_key, why = %report.holder, "not trimmed: the archive owns its trim");
            Ok(0)
        }
    }
}

/// The floor and the trim, atomically. KEYS: the stream, its trim claim, the partition
/// checkpoint (the claim again when there is none). ARGV: mode (`dry`, `owner`, `fallback`),
/// the owner's token, the required groups (space-separated), `1` to honour the checkpoint, its
/// `snap_id` field, an extra floor (`''` none) and its holder's name, `retention_ms`,
/// `retention_entries`, the cap (`''` none), `~` or `=`, `1` for `ACKED`, then the claim's
/// field names (owner, floor, holder, archived, at, removed). Returns `{removed, floor,
/// holder, length}`; `removed = -1`: not trimmed because of the claim (`holder` says why).
///
/// Ids are compared as decimal strings (length, then bytes), so a sequence beyond 2^53 is
/// exact; the floor is the lowest candidate, and its holder the first candidate found there
/// (a missing group first).
pub const TRIM_LUA: &str = r#"
local function split(id)
  local d = string.find(id, '-', 1, true)
  if not d then return id, '0' end
  return string.sub(id, 1, d - 1), string.sub(id, d + 1)
end
local function numcmp(a, b)
  if #a ~= #b then if #a < #b then return -1 else return 1 end end
  if a == b then return 0 end
  if a < b then return -1 else return 1 end
end
local function cmp(a, b)
  local am, as = split(a)
  local bm, bs = split(b)
  local c = numcmp(am, bm)
  if c ~= 0 then return c end
  return numcmp(as, bs)
end
local function incr(s)
  local d = {}
  for i = 1, #s do d[i] = string.byte(s, i) - 48 end
  local i = #d
  while i >= 1 do
    if d[i] < 9 then d[i] = d[i] + 1; break end
    d[i] = 0
    i = i - 1
  end
  local out = ''
  if i < 1 then out = '1' end
  for j = 1, #d do out = out .. d[j] end
  return out
end
local function succ(id)
  local ms, seq = split(id)
  if seq == '18446744073709551615' then return incr(ms) .. '-0' end
  return ms .. '-' .. incr(seq)
end
local mode = ARGV[1]
if mode == 'owner' then
  if redis.call('HGET', KEYS[2], ARGV[13]) ~= ARGV[2] then
    return {-1, '', 'another instance holds the trim claim', 0}
  end
elseif mode == 'fallback' then
  if redis.call('EXISTS', KEYS[2]) == 1 then
    return {-1, '', 'the archive holds the trim claim', 0}
  end
end
local len = redis.call('XLEN', KEYS[1])
if len == 0 then return {0, '', 'empty stream', 0} end
local floor, holder = nil, nil
local function lower(id, why)
  if floor == nil or cmp(id, floor) < 0 then floor = id; holder = why end
end
local present = {}
for _, g in ipairs(redis.call('XINFO', 'GROUPS', KEYS[1])) do
  local f = {}
  for i = 1, #g, 2 do f[g[i]] = g[i + 1] end
  present[f['name']] = f
end
for name in string.gmatch(ARGV[3], '%S+') do
  if not present[name] then lower('0-0', 'group ' .. name .. ' missing') end
end
for name, f in pairs(present) do
  if tonumber(f['pending']) > 0 then
    local p = redis.call('XPENDING', KEYS[1], name)
    if p[2] then lower(p[2], 'group ' .. name .. ' (pending)') end
  end
  lower(succ(f['last-delivered-id']), 'group ' .. name .. ' (undelivered)')
end
if ARGV[4] == '1' then
  local snap = redis.call('HGET', KEYS[3], ARGV[5])
  if not snap or snap == '' then lower('0-0', 'checkpoint missing')
  else lower(snap, 'checkpoint') end
end
if ARGV[6] ~= '' then lower(ARGV[6], ARGV[7]) end
local rms = tonumber(ARGV[8])
if rms > 0 then
  local last = redis.call('XREVRANGE', KEYS[1], '+', '-', 'COUNT', 1)[1][1]
  local ms = split(last)
  local keep = tonumber(ms) - rms
  if keep <= 0 then lower('0-0', 'retention_ms') else lower(string.format('%.0f', keep) .. '-0', 'retention_ms') end
end
if ARGV[10] ~= '' then lower(ARGV[10], 'cap') end
local n = tonumber(ARGV[9])
if n > 0 then
  -- At most e = len - n entries may go. Read the entries below the floor so far, oldest
  -- first, up to m + 1 (m = min(e, 10000): the script never reads more ids than that): if
  -- there are more than m, the floor stops at the (m+1)-th, so at most m go this time.
  if len <= n then lower('0-0', 'retention_entries')
  elseif floor == nil or cmp(floor, '0-1') > 0 then
    local e = len - n
    local m = math.min(e, 10000)
    local upto = '+'
    if floor ~= nil then upto = '(' .. floor end
    local r = redis.call('XRANGE', KEYS[1], '-', upto, 'COUNT', m + 1)
    if #r > m then
      if m == e then lower(r[m + 1][1], 'retention_entries')
      else lower(r[m + 1][1], 'retention_entries (10000 ids per trim)') end
    end
  end
end
if floor == nil then return {0, '', 'no reader holds it', len} end
local removed = 0
if mode ~= 'dry' and cmp(floor, '0-1') > 0 then
  local args = {'XTRIM', KEYS[1], 'MINID'}
  if ARGV[11] == '~' then args[#args + 1] = '~' end
  args[#args + 1] = floor
  if ARGV[12] == '1' then args[#args + 1] = 'ACKED' end
  removed = redis.call(unpack(args))
end
if mode == 'owner' then
  local t = redis.call('TIME')
  redis.call('HSET', KEYS[2], ARGV[14], floor, ARGV[15], holder, ARGV[16], ARGV[6],
    ARGV[17], string.format('%.0f', tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)))
  redis.call('HINCRBY', KEYS[2], ARGV[18], removed)
end
return {removed, floor, holder, len - removed}
"#;

static TRIM_SCRIPT: std::sync::LazyLock<Script> =
    std::sync::LazyLock::new(|| Script::from_lua(TRIM_LUA));

/// What bounds one trim of one stream ([`trim_to_floor`]).
#[derive(Clone, Copy, Debug)]
pub struct TrimPlan<'a> {
    /// The stream's key.
    pub stream_key: &'a str,
    /// Its trim claim ([`Keys::trim_claim`]).
    pub claim_key: &'a str,
    /// The partition checkpoint whose `snap_id` bounds the trim (ticks, entity partitions:
    /// [`Keys::checkpoint`]); a missing checkpoint or `snap_id` trims nothing.
    pub checkpoint_key: Option<&'a str>,
    /// The groups that must exist before anything is trimmed ([`StreamName::groups`]).
    pub required: &'a [Group],
    /// One more floor and the name of what holds it (`archive`: the first id not archived).
    pub floor: Option<(&'a str, &'a str)>,
    /// Keep the entries within this many ms (stream time) of the newest one; 0 = none.
    pub retention_ms: u64,
    /// Keep at least this many newest entries; 0 = none. The script reads the ids it may
    /// remove by this rule, at most 10,000 per trim (so it may take several trims to catch up
    /// with a backlog; a trim that only holds the floor reads nothing more).
    pub retention_entries: u64,
}

/// Who trims, which decides the script's check of the claim.
#[derive(Clone, Copy, Debug)]
pub enum TrimMode<'a> {
    /// Compute the floor only (`kitbash status`): no trim, no check.
    Dry,
    /// The claim's holder (the archive): trims exactly below the floor only while the claim's
    /// owner is `token`, records the floor and its holder in the claim; `acked` adds `ACKED`
    /// (Redis ≥ 8.2).
    Owner {
        /// The archive lease token the claim was taken with.
        token: &'a str,
        /// Whether to pass `ACKED` ([`supports_acked`]).
        acked: bool,
    },
    /// The stream's own owner ([`safe_trim`]): trims near `cap` (`MINID ~`), and not at all
    /// while a claim exists.
    Fallback {
        /// The cap's estimated position.
        cap: &'a str,
    },
}

/// What one [`trim_to_floor`] found and did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TrimReport {
    /// Entries removed; `None` when the claim forbade the trim.
    pub removed: Option<u64>,
    /// The floor: entries below it may go, none at or above it (`None`: empty stream or
    /// nothing holds it).
    pub floor: Option<String>,
    /// What holds the floor there: `group decay (pending)`, `group decay (undelivered)`,
    /// `group decay missing`, `checkpoint`, `checkpoint missing`, `archive`, `retention_ms`,
    /// `retention_entries`, `cap`; or why nothing was trimmed.
    pub holder: String,
    /// The stream's length after the trim.
    pub length: u64,
}

/// Computes `plan`'s floor and, unless [`TrimMode::Dry`], trims below it — in one script
/// ([`TRIM_LUA`]), so nothing a concurrent reader does can move the floor in between.
pub async fn trim_to_floor(
    client: &Client,
    plan: &TrimPlan<'_>,
    mode: TrimMode<'_>,
) -> Result<TrimReport, RuntimeError> {
    let (mode_s, token, cap, approx, acked) = match mode {
        TrimMode::Dry => ("dry", "", "", "=", false),
        TrimMode::Owner { token, acked } => ("owner", token, "", "=", acked),
        TrimMode::Fallback { cap } => ("fallback", "", cap, "~", false),
    };
    let required: Vec<&str> = plan.required.iter().map(|g| g.as_str()).collect();
    let (floor, floor_holder) = plan.floor.unwrap_or(("", ""));
    let keys = vec![
        plan.stream_key.to_owned(),
        plan.claim_key.to_owned(),
        plan.checkpoint_key.unwrap_or(plan.claim_key).to_owned(),
    ];
    let args: Vec<Value> = vec![
        mode_s.into(),
        token.into(),
        required.join(" ").into(),
        if plan.checkpoint_key.is_some() {
            "1"
        } else {
            "0"
        }
        .into(),
        Keys::CHECKPOINT_SNAP_ID.into(),
        floor.into(),
        floor_holder.into(),
        Value::from(plan.retention_ms as i64),
        Value::from(plan.retention_entries as i64),
        cap.into(),
        approx.into(),
        if acked { "1" } else { "0" }.into(),
        Keys::TRIM_OWNER.into(),
        Keys::TRIM_FLOOR.into(),
        Keys::TRIM_HOLDER.into(),
        Keys::TRIM_ARCHIVED.into(),
        Keys::TRIM_AT.into(),
        Keys::TRIM_REMOVED.into(),
    ];
    let reply: Vec<Value> = TRIM_SCRIPT.evalsha_with_reload(client, keys, args).await?;
    let bad = || RuntimeError::Reply {
        command: "trim script",
        detail: format!("unexpected reply {reply:?}"),
    };
    let [removed, floor, holder, length] = reply.as_slice() else {
        return Err(bad());
    };
    let removed = removed.as_i64().ok_or_else(bad)?;
    let floor = entries::string_of(floor).filter(|f| !f.is_empty());
    Ok(TrimReport {
        removed: u64::try_from(removed).ok(),
        floor,
        holder: entries::string_of(holder).unwrap_or_default(),
        length: length.as_u64().unwrap_or(0),
    })
}

/// Whether this Redis knows `XTRIM … ACKED` (8.2+): probed on `stream_key` with `MINID 0`,
/// which removes nothing; 7.0 answers a syntax error.
pub async fn supports_acked(client: &Client, stream_key: &str) -> Result<bool, RuntimeError> {
    let cmd = command_for_key("XTRIM", stream_key, false);
    match client
        .custom::<Value, _>(
            cmd,
            vec![
                Value::from(stream_key),
                "MINID".into(),
                "0".into(),
                "ACKED".into(),
            ],
        )
        .await
    {
        Ok(_) => Ok(true),
        Err(e) if e.details().to_ascii_lowercase().contains("syntax") => Ok(false),
        Err(e) => Err(e.into()),
    }
}

const CLAIM_LUA: &str = r#"
redis.call('DEL', KEYS[1])
redis.call('HSET', KEYS[1], ARGV[3], ARGV[1])
redis.call('PEXPIRE', KEYS[1], ARGV[2])
return 1
"#;
const RENEW_CLAIM_LUA: &str = r#"
local owner = redis.call('HGET', KEYS[1], ARGV[3])
if owner and owner ~= ARGV[1] then return 0 end
if not owner then redis.call('HSET', KEYS[1], ARGV[3], ARGV[1]) end
redis.call('PEXPIRE', KEYS[1], ARGV[2])
return 1
"#;
const RELEASE_CLAIM_LUA: &str = r#"
if redis.call('HGET', KEYS[1], ARGV[2]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"#;
static CLAIM_SCRIPT: std::sync::LazyLock<Script> =
    std::sync::LazyLock::new(|| Script::from_lua(CLAIM_LUA));
static RENEW_CLAIM_SCRIPT: std::sync::LazyLock<Script> =
    std::sync::LazyLock::new(|| Script::from_lua(RENEW_CLAIM_LUA));
static RELEASE_CLAIM_SCRIPT: std::sync::LazyLock<Script> =
    std::sync::LazyLock::new(|| Script::from_lua(RELEASE_CLAIM_LUA));

/// Takes the trim claim `claim_key` for `token` for `ms` (replacing any claim: call it only
/// while holding the lease that makes the caller the stream's trimmer, the archive's).
pub async fn claim(
    client: &Client,
    claim_key: &str,
    token: &str,
    ms: u64,
) -> Result<(), RuntimeError> {
    let _: i64 = CLAIM_SCRIPT
        .evalsha_with_reload(
            client,
            vec![claim_key.to_owned()],
            vec![
                Value::from(token),
                Value::from(ms as i64),
                Value::from(Keys::TRIM_OWNER),
            ],
        )
        .await?;
    Ok(())
}

/// Extends the claim while `token` holds it (re-taking it if it expired); `false`: another
/// token holds it.
pub async fn renew_claim(
    client: &Client,
    claim_key: &str,
    token: &str,
    ms: u64,
) -> Result<bool, RuntimeError> {
    let n: i64 = RENEW_CLAIM_SCRIPT
        .evalsha_with_reload(
            client,
            vec![claim_key.to_owned()],
            vec![
                Value::from(token),
                Value::from(ms as i64),
                Value::from(Keys::TRIM_OWNER),
            ],
        )
        .await?;
    Ok(n == 1)
}

/// Gives the claim up if `token` holds it (the stream's own owner trims again at once).
pub async fn release_claim(
    client: &Client,
    claim_key: &str,
    token: &str,
) -> Result<bool, RuntimeError> {
    let n: i64 = RELEASE_CLAIM_SCRIPT
        .evalsha_with_reload(
            client,
            vec![claim_key.to_owned()],
            vec![Value::from(token), Value::from(Keys::TRIM_OWNER)],
        )
        .await?;
    Ok(n == 1)
}

/// [`safe_trim`] for a periodic task: a failure (an ACL without `XTRIM`, a lost connection)
/// is logged at `warn` and counted in `kitbash_trim_failures_total{stream}`, because a trim
/// that keeps failing is unbounded growth. Returns the entries removed (0 on failure).
pub async fn trim_or_warn(
    client: &Client,
    metrics: &Metrics,
    stream: StreamName,
    stream_key: &str,
    max: u64,
    floors: &[String],
) -> u64 {
    match safe_trim(client, stream, stream_key, max, floors).await {
        Ok(n) => n,
        Err(e) => {
            let logical = stream.logical();
            tracing::warn!(stream = %logical, error = %e, "stream trim failed; will retry");
            metrics.inc(
                "kitbash_trim_failures_total",
                "Stream trims that failed (the stream grows until one succeeds).",
                &[("stream", logical.as_str())],
                1,
            );
            0
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn successor_of_an_id() {
        assert_eq!(successor("5-3"), "5-4");
        assert_eq!(successor("0-0"), "0-1");
    }
}
