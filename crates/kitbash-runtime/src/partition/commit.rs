//! The partition commit: one Lua script that compare-and-sets the partition checkpoint and, in
//! the same atomic step, writes every effect of the batch (for feynman: physics state, market
//! snapshots, physics-stream entries, `state_update` messages), its dead letters and its
//! snapshot writes.
//!
//! The compare-and-set on `last_id` is the fence: an instance whose lease expired while it was
//! paused fails its next commit as soon as the new owner has committed, and a commit that
//! succeeds is always a correct continuation of the partition, whoever made it. Because the
//! effects ride in the same script, a `kill -9` at any point leaves either the whole batch
//! applied (window, position and outputs) or none of it.
//!
//! On Redis Cluster the effects live in other slots than the checkpoint: [`run_split`] writes
//! them first and then moves the checkpoint (see its docs and ARCHITECTURE.md).

use fred::prelude::*;
use fred::types::Value;
use fred::types::scripts::Script;
use kitbash_schema::Keys;

/// The script. ARGV: expected `last_id` ('' = none), new `last_id`, owner, recent-mids blob
/// ('' = keep), snapshot id ('' = keep), the five checkpoint field names, entries consumed, then
/// commands as
/// `n, word1 … wordn`. A word starting with byte 0x01 is a template: the rest, with every
/// [`ID_PLACEHOLDER`] replaced by the id of the latest XADD.
/// Hashed once; `evalsha_with_reload` loads it on the first NOSCRIPT.
static COMMIT_SCRIPT: std::sync::LazyLock<Script> =
    std::sync::LazyLock::new(|| Script::from_lua(COMMIT));

const COMMIT: &str = r#"
local cp = KEYS[1]
local cur = redis.call('HGET', cp, ARGV[6]) or ''
if cur ~= ARGV[1] then return {0, cur, redis.call('HGET', cp, ARGV[7]) or ''} end
redis.call('HSET', cp, ARGV[6], ARGV[2], ARGV[7], ARGV[3])
if ARGV[4] ~= '' then redis.call('HSET', cp, ARGV[8], ARGV[4]) end
if ARGV[5] ~= '' then redis.call('HSET', cp, ARGV[9], ARGV[5]) end
redis.call('HINCRBY', cp, ARGV[10], ARGV[11])
local last = ''
local i = 12
while i <= #ARGV do
  local n = tonumber(ARGV[i])
  local cmd = {}
  for j = 1, n do
    local a = ARGV[i + j]
    if string.byte(a, 1) == 1 then a = string.gsub(string.sub(a, 2), '@@ID@@', last) end
    cmd[j] = a
  end
  local r = redis.call(unpack(cmd))
  if cmd[1] == 'XADD' then last = r end
  i = i + n + 1
end
return {1, ARGV[2]}
"#;

/// Lua: is stream id ARGV-style `a` newer than `b` (nil/false = nothing yet)?
const NEWER: &str = r#"
local function newer(a, b)
  if not b then return true end
  local am, as = string.match(a, '(%d+)-(%d+)')
  local bm, bs = string.match(b, '(%d+)-(%d+)')
  if not bm then return true end
  am, as, bm, bs = tonumber(am), tonumber(as), tonumber(bm), tonumber(bs)
  return am > bm or (am == bm and as > bs)
end
"#;

/// Cluster mode: `SET KEYS[1] ARGV[2]` and record the source tick id `ARGV[1]` in `KEYS[2]`, unless
/// `KEYS[2]` already holds a newer id (a fenced instance finishing late must not roll the state
/// back).
pub static GUARDED_SET: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
    format!(
        "{NEWER}\nif newer(ARGV[1], redis.call('GET', KEYS[2])) then redis.call('SET', KEYS[1], ARGV[2]); redis.call('SET', KEYS[2], ARGV[1]); return 1 end return 0"
    )
});

/// Cluster mode: `HSET KEYS[1] source ARGV[1] <ARGV[3..]>` and `EXPIRE KEYS[1] ARGV[2]`, unless
/// the hash's `source` is already newer.
pub static GUARDED_HSET: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
    format!(
        "{NEWER}\nif newer(ARGV[1], redis.call('HGET', KEYS[1], 'source')) then redis.call('HSET', KEYS[1], 'source', ARGV[1], unpack(ARGV, 3)); redis.call('EXPIRE', KEYS[1], ARGV[2]); return 1 end return 0"
    )
});

/// Marks a word as a template whose [`ID_PLACEHOLDER`]s become the latest XADD id.
pub const TEMPLATE: u8 = 1;
/// Stands for the latest XADD id inside a template word (never valid in a symbol or regime).
pub const ID_PLACEHOLDER: &str = "@@ID@@";

/// One batch's writes, built by the partition worker.
#[derive(Clone, Debug, Default)]
pub struct Commit {
    /// Keys the commands touch (declared to Redis), each once, in first-use order.
    pub keys: Vec<String>,
    /// Commands, each a list of words, with the key it touches (`None` for `PUBLISH`).
    pub commands: Vec<(Option<String>, Vec<Value>)>,
    /// The set behind `keys`' uniqueness: a batch of 1,000 symbols declares ~3,000 keys, and a
    /// linear scan per push made building the commit quadratic (seen in a profile).
    seen: std::collections::HashSet<String>,
}

impl Commit {
    /// Adds a command touching `key`.
    pub fn push(&mut self, key: &str, words: Vec<Value>) {
        if !self.seen.contains(key) {
            self.seen.insert(key.to_owned());
            self.keys.push(key.to_owned());
        }
        self.commands.push((Some(key.to_owned()), words));
    }

    /// The bytes of every command word (what the script call carries, before RESP framing).
    pub fn bytes(&self) -> usize {
        self.commands
            .iter()
            .flat_map(|(_, words)| words)
            .map(|w| match w {
                Value::Bytes(b) => b.len(),
                Value::String(s) => s.len(),
                _ => 8,
            })
            .sum()
    }

    /// Adds a command that touches no key (`PUBLISH`).
    pub fn push_keyless(&mut self, words: Vec<Value>) {
        self.commands.push((None, words));
    }
}

/// What the checkpoint said when the compare-and-set failed.
#[derive(Debug, PartialEq, Eq)]
pub enum CommitResult {
    /// Applied; the checkpoint is at the new id.
    Applied,
    /// Someone else moved the checkpoint (to this id): this instance no longer owns the
    /// partition's history and must stop or reload.
    Conflict(String),
}

/// The Redis Cluster form of [`run`]: a batch's outputs live in other slots than the partition
/// checkpoint, so they cannot share its script. They are written first (one pipeline, then the
/// `PUBLISH`es that carry the ids of the physics entries just added), and only then the
/// checkpoint moves, together with the commands in its own slot (dead letters). A crash between
/// the two re-applies the batch after recovery: the windows stay exact (they follow the
/// checkpoint), `physics:state` and `market:snapshot` are overwritten with the same values, and
/// the physics stream and `state_update` may carry the batch twice (each entry names its source
/// tick, so readers can drop repeats). A fenced (stale) instance's outputs are likewise correct
/// values computed from the same ticks.
pub async fn run_split(
    client: &Client,
    checkpoint_key: &str,
    owner: &str,
    advance: Advance<'_>,
    commit: Commit,
) -> Result<CommitResult, fred::error::Error> {
    let slot = fred::util::redis_keyslot(checkpoint_key.as_bytes());
    let mut local = Commit::default();
    let mut outputs: Vec<(Option<String>, Vec<Value>)> = Vec::new();
    for (key, words) in commit.commands {
        match key {
            Some(k) if fred::util::redis_keyslot(k.as_bytes()) == slot => local.push(&k, words),
            other => outputs.push((other, words)),
        }
    }
    // Phase 1: everything but templated words; remember where each XADD's reply will be.
    let pipe = client.pipeline();
    let mut templated: Vec<(usize, Vec<Value>)> = Vec::new();
    let mut xadd_at: Vec<usize> = Vec::new();
    let mut sent = 0usize;
    for (key, words) in outputs {
        let is_template = words
            .iter()
            .any(|w| matches!(w, Value::Bytes(b) if b.first() == Some(&TEMPLATE)));
        if is_template {
            templated.push((xadd_at.len(), words));
            continue;
        }
        let mut it = words.into_iter();
        let Some(name) = it.next().and_then(|v| v.as_string()) else {
            continue;
        };
        if name == "XADD" {
            xadd_at.push(sent);
        }
        // Routed by the key the command touches (for EVAL it is not the first argument).
        let hash = key.map_or(fred::types::ClusterHash::Offset(0), |k| {
            fred::types::ClusterHash::Custom(fred::util::redis_keyslot(k.as_bytes()))
        });
        let cmd = fred::types::CustomCommand::new(name, hash, false);
        let _: () = pipe.custom(cmd, it.collect::<Vec<Value>>()).await?;
        sent += 1;
    }
    let replies: Vec<Value> = pipe.all().await?;
    let ids: Vec<String> = xadd_at
        .iter()
        .map(|&i| {
            replies
                .get(i)
                .and_then(|v| v.as_string())
                .unwrap_or_default()
        })
        .collect();
    // Phase 2: the templated commands (PUBLISH with the physics entry id).
    let pipe = client.pipeline();
    for (n_xadds_before, words) in templated {
        let id = n_xadds_before
            .checked_sub(1)
            .and_then(|i| ids.get(i))
            .cloned()
            .unwrap_or_default();
        let mut it = words.into_iter().map(|w| match w {
            Value::Bytes(b) if b.first() == Some(&TEMPLATE) => {
                Value::from(String::from_utf8_lossy(&b[1..]).replace(ID_PLACEHOLDER, &id))
            }
            other => other,
        });
        let Some(name) = it.next().and_then(|v| v.as_string()) else {
            continue;
        };
        let cmd = fred::types::CustomCommand::new(name, fred::types::ClusterHash::Random, false);
        let _: () = pipe.custom(cmd, it.collect::<Vec<Value>>()).await?;
    }
    let _: Vec<Value> = pipe.all().await?;
    // Phase 3: move the checkpoint (and write the same-slot commands) atomically.
    run(client, checkpoint_key, owner, advance, local).await
}

/// How a commit moves the checkpoint.
#[derive(Clone, Copy, Debug)]
pub struct Advance<'a> {
    /// The `last_id` the worker started from (`""` = no checkpoint yet): the fence.
    pub expected: &'a str,
    /// The new `last_id` (the batch's last entry, or `expected` for a snapshot-only commit).
    pub new_last: &'a str,
    /// With a snapshot: the recent producer mids (encoded) and the new `snap_id`, the id from
    /// which recovery replays (the snapshot's own writes ride in the commit's commands).
    pub snapshot: Option<(&'a [u8], &'a str)>,
    /// Entries this commit consumed (for the lag `kitbash status` reports).
    pub consumed: u64,
}

/// Runs the commit script.
pub async fn run(
    client: &Client,
    checkpoint_key: &str,
    owner: &str,
    advance: Advance<'_>,
    commit: Commit,
) -> Result<CommitResult, fred::error::Error> {
    let Advance {
        expected: expected_last,
        new_last,
        snapshot,
        consumed,
    } = advance;
    let script = &*COMMIT_SCRIPT;
    let mut keys = Vec::with_capacity(commit.keys.len() + 1);
    keys.push(checkpoint_key.to_owned());
    keys.extend(commit.keys);
    let (snap, snap_id) = snapshot.unwrap_or((b"", ""));
    let mut args: Vec<Value> = vec![
        expected_last.into(),
        new_last.into(),
        owner.into(),
        Value::Bytes(snap.to_vec().into()),
        snap_id.into(),
        Keys::CHECKPOINT_LAST_ID.into(),
        Keys::CHECKPOINT_OWNER.into(),
        Keys::CHECKPOINT_MIDS.into(),
        Keys::CHECKPOINT_SNAP_ID.into(),
        Keys::CHECKPOINT_CONSUMED.into(),
        (consumed as i64).into(),
    ];
    for (_, c) in commit.commands {
        args.push((c.len() as i64).into());
        args.extend(c);
    }
    let reply: Vec<Value> = script.evalsha_with_reload(client, keys, args).await?;
    let ok = matches!(reply.first(), Some(Value::Integer(1)));
    if ok {
        return Ok(CommitResult::Applied);
    }
    let cur = reply.get(1).and_then(|v| v.as_string()).unwrap_or_default();
    let by = reply.get(2).and_then(|v| v.as_string()).unwrap_or_default();
    // fred re-sends a command whose reply a reconnect lost (`max_command_attempts`): if the
    // first send was applied, the second finds the checkpoint already at our new position,
    // moved by us. That is our own commit, not a fence.
    if new_last != expected_last && cur == new_last && by == owner {
        return Ok(CommitResult::Applied);
    }
    Ok(CommitResult::Conflict(cur))
}
