//! The reflex path of seed 000 for applications: record a query hit, the reflex lookup, hat
//! switching, grain import, and the seed's query metrics.
//!
//! The lookup is one Lua script (`EVALSHA`) in one round trip. What changes only with
//! `kitbash:reflex:version` — the ghost grains' signatures and bit planes, the hat masks — is
//! cached in the client ([`Reflex`] clones share the cache), keyed by that version: a hot
//! lookup's script reads only the record (and, in the seed layout, the index score and the
//! grain list), the cycle, the ghost, the current hat and the version (2 `redis.call`s in the
//! compact layout, 4 in the seed's). When the version it reads is not the cache's, or a grain
//! or mask is not cached yet, the lookup runs the full script instead (the record plus every
//! grain's signature and planes and the mask, with the version, in one atomic read) and
//! refills the cache from it; a newer version empties the cache first. Writers that change
//! grains or hats bump the version in the same transaction (`grains_import`, `hat_set`,
//! `hat_init`; other languages as docs/WIRE.md says), so a lookup after a change sees it.
//! [`Reflex::lookup_hash_uncached`] always runs the full script.
//!
//! Both scripts only read (`no-writes`): `metrics:grains:lookups` and `metrics:cache:hits`
//! are counted in the client and added to Redis in one pipeline every [`COUNTER_FLUSH_EVERY`]
//! lookups or [`COUNTER_FLUSH_MS`] (on the next lookup after it), off the lookup's path;
//! [`Reflex::flush_counters`] adds what is pending (before exit, in tests).
//!
//! The scripts build the grain and mask keys from the ids they read, so they run on a
//! standalone Redis (or a cluster only when every key is in one slot): the price of one round
//! trip.
//!
//! Both record layouts of `kitbash_schema::reflex` are read: the seed's keys, or the compact
//! layout's bucket field (select it with [`Reflex::with_layout`], as `[reflex]` configures the
//! daemons). [`Reflex::claim_layout`] checks (and on an empty Redis records) which one the
//! Redis holds, so a reader never looks in the wrong place.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use fred::prelude::*;
use fred::types::Value;
use fred::types::scripts::Script;
use kitbash_schema::messages::{GrainLine, GrainSig, MAX_AXIOM_LEN, QueryEvent, ReflexChange};
use kitbash_schema::reflex::{
    CompactRecord, Layout, SEED_HATS, compact_bucket, compact_id, decayed, latency_bucket,
    layout_tag, resonance_at,
};
use kitbash_schema::{Keys, StreamName};
use kitbash_ternary::{HAT_BYTES, TernaryVector};
use sha2::{Digest, Sha256};

use crate::{ClientError, Producer};

/// `sha256(text)` as 64 lowercase hex digits: the seed's query hash.
pub fn query_hash(text: &str) -> String {
    hex::encode(Sha256::digest(text.as_bytes()))
}

/// The mask of hat `name`: `sha256(name)`, 32 bytes (the seed's origin derives its masks so).
pub fn hat_mask_of(name: &str) -> [u8; HAT_BYTES] {
    Sha256::digest(name.as_bytes()).into()
}

/// One ghost grain as the lookup returns it.
#[derive(Clone, Debug, PartialEq)]
pub struct GhostGrain {
    /// Grain id.
    pub id: u64,
    /// `grain:{id}:sig`, if present and well-formed.
    pub sig: Option<GrainSig>,
    /// `grain:{id}:bits:+` as stored (under no hat).
    pub plus: Vec<u8>,
    /// `grain:{id}:bits:-` as stored.
    pub minus: Vec<u8>,
}

/// Everything the reflex path needs about one query, read in one round trip.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ReflexLookup {
    /// The query hash.
    pub hash: String,
    /// `count` of `cms:{h}`, when the record exists.
    pub count: Option<u64>,
    /// `last_accessed` of `cms:{h}`.
    pub last_accessed: Option<String>,
    /// The resonance now, exactly decayed to the current cycle (0 when unknown).
    pub resonance: f64,
    /// The current decay cycle.
    pub cycle: u64,
    /// `cms:{h}:grains`, oldest first.
    pub grains: Vec<u64>,
    /// `ghost:{h}` split into its grains, with their signatures and planes.
    pub ghost: Vec<GhostGrain>,
    /// `hat:current`.
    pub hat: Option<String>,
    /// `hat:{current}:mask` (32 bytes) when present.
    pub hat_mask: Option<Vec<u8>>,
}

impl ReflexLookup {
    /// The ghost grain ids, in rank order.
    pub fn ghost_ids(&self) -> Vec<u64> {
        self.ghost.iter().map(|g| g.id).collect()
    }
}

/// Why a grain file was refused: the first bad line, by number (1-based), and why.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("line {line}: {why}")]
pub struct GrainFileError {
    /// 1-based line (JSONL) or element (JSON array) number.
    pub line: usize,
    /// What is wrong.
    pub why: String,
}

/// A parsed grain, ready to store.
#[derive(Clone, Debug, PartialEq)]
pub struct Grain {
    /// Grain id.
    pub id: u64,
    /// Its trits.
    pub vector: TernaryVector,
    /// Its signature record.
    pub sig: GrainSig,
}

/// Parses a grain file (JSONL, or a JSON array) for `dim` trits; the first bad line is
/// reported with its number and nothing is returned for a file with any bad line.
pub fn parse_grains(text: &str, dim: usize) -> Result<Vec<Grain>, GrainFileError> {
    let trimmed = text.trim_start();
    let lines: Vec<(usize, GrainLine)> = if trimmed.starts_with('[') {
        let values: Vec<serde_json::Value> =
            serde_json::from_str(text).map_err(|e| GrainFileError {
                line: e.line(),
                why: e.to_string(),
            })?;
        let mut out = Vec::with_capacity(values.len());
        for (i, v) in values.into_iter().enumerate() {
            let g: GrainLine = serde_json::from_value(v).map_err(|e| GrainFileError {
                line: i + 1,
                why: format!("element {}: {e}", i + 1),
            })?;
            out.push((i + 1, g));
        }
        out
    } else {
        let mut out = Vec::new();
        for (i, l) in text.lines().enumerate() {
            if l.trim().is_empty() {
                continue;
            }
            let g: GrainLine = serde_json::from_str(l).map_err(|e| GrainFileError {
                line: i + 1,
                why: e.to_string(),
            })?;
            out.push((i + 1, g));
        }
        out
    };
    let mut seen = std::collections::HashSet::new();
    let mut grains = Vec::with_capacity(lines.len());
    for (line, g) in lines {
        let bad = |why: String| GrainFileError { line, why };
        if !seen.insert(g.id) {
            return Err(bad(format!("grain {} appears twice", g.id)));
        }
        if !g.weight.is_finite() {
            return Err(bad("weight is not finite".into()));
        }
        if g.axiom.len() > MAX_AXIOM_LEN {
            return Err(bad(format!("axiom longer than {MAX_AXIOM_LEN} bytes")));
        }
        let vector = match (&g.trits, &g.plus, &g.minus) {
            (Some(t), None, None) => {
                if t.len() != dim {
                    return Err(bad(format!("{} trits, expected {dim}", t.len())));
                }
                TernaryVector::from_i8(t).map_err(|e| bad(e.to_string()))?
            }
            (None, Some(p), Some(m)) => {
                let p = hex::decode(p).map_err(|e| bad(format!("plus: {e}")))?;
                let m = hex::decode(m).map_err(|e| bad(format!("minus: {e}")))?;
                TernaryVector::from_planes(dim, &p, &m).map_err(|e| bad(e.to_string()))?
            }
            _ => {
                return Err(bad(
                    "give either \"trits\" or both \"plus\" and \"minus\"".into()
                ));
            }
        };
        let sig = GrainSig {
            popcount: vector.nonzero_count(),
            axiom: g.axiom,
            weight: g.weight,
            ternary_value: vector.ternary_value(),
            confidence: vector.confidence(),
        };
        grains.push(Grain {
            id: g.id,
            vector,
            sig,
        });
    }
    Ok(grains)
}

static LOOKUP: std::sync::LazyLock<Script> =
    std::sync::LazyLock::new(|| Script::from_lua(format!("{LOOKUP_GHOST_LUA}{LOOKUP_LUA}")));

/// The full lookup's tail, shared by both layouts: the ghost's grains with their signature and
/// planes, the current hat and its mask. Expects the affixes in `ARGV[2..9]`.
const LOOKUP_GHOST_LUA: &str = r#"#!lua flags=no-writes
local function ghost_grains(ghost)
  local g = {}
  if not ghost then return g end
  local ids, keys = {}, {}
  for id in string.gmatch(ghost, '[^,]+') do
    ids[#ids + 1] = id
    keys[#keys + 1] = ARGV[2] .. id .. ARGV[3]
    keys[#keys + 1] = ARGV[4] .. id .. ARGV[5]
    keys[#keys + 1] = ARGV[6] .. id .. ARGV[7]
  end
  if #ids == 0 then return g end
  -- One MGET for every grain key (one call instead of three per grain).
  local v = redis.call('MGET', unpack(keys))
  for i, id in ipairs(ids) do
    g[#g + 1] = id
    g[#g + 1] = v[3 * i - 2]
    g[#g + 1] = v[3 * i - 1]
    g[#g + 1] = v[3 * i]
  end
  return g
end
local function hat_and_mask(hat_key)
  local hat = redis.call('GET', hat_key)
  local mask = false
  if hat then mask = redis.call('GET', ARGV[8] .. hat .. ARGV[9]) end
  return hat, mask
end
"#;

/// Seed layout, full. KEYS: cms, cms:grains, index, cycle, ghost, hat:current, version.
/// ARGV: h, grain and hat-mask affixes.
const LOOKUP_LUA: &str = r#"
local rec = redis.call('HMGET', KEYS[1], 'count', 'last_accessed', 'resonance_score', 'cycle')
local s = redis.call('ZSCORE', KEYS[3], ARGV[1])
local c = redis.call('GET', KEYS[4])
local grains = redis.call('ZRANGE', KEYS[2], 0, -1)
local ghost = redis.call('GET', KEYS[5])
local g = ghost_grains(ghost)
local hat, mask = hat_and_mask(KEYS[6])
return {rec, s, c, grains, hat, mask, g, redis.call('GET', KEYS[7]), ghost}
"#;

/// Compact layout, full. KEYS: bucket, cycle, ghost, hat:current, version. ARGV: id, grain and
/// hat-mask affixes.
const COMPACT_LOOKUP_LUA: &str = r#"
local rec = redis.call('HGET', KEYS[1], ARGV[1])
local c = redis.call('GET', KEYS[2])
local ghost = redis.call('GET', KEYS[3])
local g = ghost_grains(ghost)
local hat, mask = hat_and_mask(KEYS[4])
return {rec, c, hat, mask, g, redis.call('GET', KEYS[5]), ghost}
"#;

static COMPACT_LOOKUP: std::sync::LazyLock<Script> = std::sync::LazyLock::new(|| {
    Script::from_lua(format!("{LOOKUP_GHOST_LUA}{COMPACT_LOOKUP_LUA}"))
});

/// Seed layout, hot (grains and mask from the client's cache). KEYS as [`LOOKUP_LUA`]; ARGV: h.
/// Returns `{rec, s, c, grains, hat, false, ghost, version}`.
const HOT_LOOKUP_LUA: &str = r#"#!lua flags=no-writes
local rec = redis.call('HMGET', KEYS[1], 'count', 'last_accessed', 'resonance_score', 'cycle')
local s = redis.call('ZSCORE', KEYS[3], ARGV[1])
local grains = redis.call('ZRANGE', KEYS[2], 0, -1)
local m = redis.call('MGET', KEYS[4], KEYS[5], KEYS[6], KEYS[7])
return {rec, s, m[1], grains, m[3], false, m[2], m[4]}
"#;

static HOT_LOOKUP: std::sync::LazyLock<Script> =
    std::sync::LazyLock::new(|| Script::from_lua(HOT_LOOKUP_LUA));

/// Compact layout, hot. KEYS as [`COMPACT_LOOKUP_LUA`]; ARGV: id. Returns `{rec, c, hat,
/// false, ghost, version}`.
const HOT_COMPACT_LOOKUP_LUA: &str = r#"#!lua flags=no-writes
local rec = redis.call('HGET', KEYS[1], ARGV[1])
local m = redis.call('MGET', KEYS[2], KEYS[3], KEYS[4], KEYS[5])
return {rec, m[1], m[3], false, m[2], m[4]}
"#;

static HOT_COMPACT_LOOKUP: std::sync::LazyLock<Script> =
    std::sync::LazyLock::new(|| Script::from_lua(HOT_COMPACT_LOOKUP_LUA));

/// Lookups after which the client's counters are added to Redis.
pub const COUNTER_FLUSH_EVERY: u64 = 1_000;
/// Milliseconds after which they are added on the next lookup, however few.
pub const COUNTER_FLUSH_MS: u64 = 1_000;
/// Grains the cache keeps for one version; beyond it, it starts again (bounded memory).
const CACHED_GRAINS_MAX: usize = 100_000;

/// What changes only with `kitbash:reflex:version`, read by the full lookup script.
#[derive(Debug, Default)]
struct VersionCache {
    /// The version the entries were read at (`None`: empty).
    version: Option<u64>,
    /// Ghost grains by the id as `ghost:{h}` spells it: signature and planes (absent keys as
    /// the full script gives them).
    grains: HashMap<String, GhostGrain>,
    /// Hat masks by hat name (`None`: no mask key).
    masks: HashMap<String, Option<Vec<u8>>>,
}

impl VersionCache {
    /// Takes what a full lookup read at `version`: a newer version replaces everything, an
    /// older one (a reply overtaken by a newer) is ignored.
    fn fill(&mut self, version: u64, ghost: Option<&str>, look: &ReflexLookup) {
        match self.version {
            Some(v) if v > version => return,
            Some(v) if v == version && self.grains.len() < CACHED_GRAINS_MAX => {}
            _ => {
                self.grains.clear();
                self.masks.clear();
                self.version = Some(version);
            }
        }
        // The full script returns the grains of the ids it could parse, in order.
        let tokens = ghost
            .unwrap_or_default()
            .split(',')
            .filter(|t| !t.is_empty() && t.parse::<u64>().is_ok());
        for (token, g) in tokens.zip(&look.ghost) {
            self.grains.insert(token.to_owned(), g.clone());
        }
        if let Some(hat) = &look.hat {
            self.masks.insert(hat.clone(), look.hat_mask.clone());
        }
    }
}

/// Counters of the read path, kept in the client and added to Redis in batches.
#[derive(Debug)]
struct Counters {
    /// Ghost grains looked up since the last flush (`metrics:grains:lookups`).
    lookups: AtomicU64,
    /// Lookups that found a record (`metrics:cache:hits`).
    hits: AtomicU64,
    /// Lookups since the last flush.
    since: AtomicU64,
    /// When the last flush started.
    last: Mutex<Instant>,
    /// A flush is in flight.
    flushing: AtomicBool,
}

impl Default for Counters {
    fn default() -> Self {
        Self {
            lookups: AtomicU64::new(0),
            hits: AtomicU64::new(0),
            since: AtomicU64::new(0),
            last: Mutex::new(Instant::now()),
            flushing: AtomicBool::new(false),
        }
    }
}

/// `SET kitbash:reflex:layout tag NX GET`: the layout already recorded, or nil when this call
/// recorded `tag`.
const CLAIM_LAYOUT_LUA: &str = r#"
local cur = redis.call('GET', KEYS[1])
if not cur and ARGV[2] == '1' then redis.call('SET', KEYS[1], ARGV[1]) end
return cur
"#;

const HAT_SET_LUA: &str = r#"
if redis.call('EXISTS', KEYS[2]) == 0 then return -1 end
redis.call('SET', KEYS[1], ARGV[1])
return redis.call('INCR', KEYS[3])
"#;

/// The reflex path for an application.
#[derive(Clone)]
pub struct Reflex {
    client: Client,
    keys: Keys,
    /// Decay factor per cycle (must match `[decay] factor`).
    factor: f64,
    /// Record layout (must match `[reflex] layout`).
    layout: Layout,
    /// Compact layout: bucket count (must match `[reflex] buckets`).
    buckets: u32,
    /// Grains and masks of one `kitbash:reflex:version`, shared by clones; filled by full
    /// lookups, read by hot ones.
    cache: Arc<Mutex<VersionCache>>,
    /// The read path's counters, shared by clones; flushed by lookups and `flush_counters`.
    counters: Arc<Counters>,
}

impl std::fmt::Debug for Reflex {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reflex")
            .field("keys", &self.keys)
            .field("factor", &self.factor)
            .field("layout", &self.layout)
            .field("buckets", &self.buckets)
            .finish_non_exhaustive()
    }
}

fn text_of(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.to_string()),
        Value::Bytes(b) => String::from_utf8(b.to_vec()).ok(),
        Value::Integer(i) => Some(i.to_string()),
        Value::Double(d) => Some(d.to_string()),
        _ => None,
    }
}

fn bytes_of(v: &Value) -> Option<Vec<u8>> {
    match v {
        Value::String(s) => Some(s.as_bytes().to_vec()),
        Value::Bytes(b) => Some(b.to_vec()),
        _ => None,
    }
}

/// The ghost part of a lookup reply: (id, sig, plus, minus) per grain.
fn ghost_grains(v: &Value) -> Vec<GhostGrain> {
    array(v)
        .chunks(4)
        .filter_map(|c| {
            let id = text_of(c.first()?)?.parse().ok()?;
            Some(GhostGrain {
                id,
                sig: c
                    .get(1)
                    .and_then(text_of)
                    .and_then(|s| serde_json::from_str(&s).ok()),
                plus: c.get(2).and_then(bytes_of).unwrap_or_default(),
                minus: c.get(3).and_then(bytes_of).unwrap_or_default(),
            })
        })
        .collect()
}

fn array(v: &Value) -> &[Value] {
    match v {
        Value::Array(a) => a,
        _ => &[],
    }
}

/// `kitbash:reflex:version` as a script read it (0 when absent).
fn version_of(v: Option<&Value>) -> u64 {
    v.and_then(text_of)
        .and_then(|t| t.parse().ok())
        .unwrap_or(0)
}

/// How many ids `ghost` lists (what `metrics:grains:lookups` counts).
fn ghost_count(ghost: Option<&str>) -> u64 {
    ghost.map_or(0, |g| g.split(',').filter(|t| !t.is_empty()).count() as u64)
}

impl Reflex {
    /// The reflex path on a connected client; `factor` is `[decay] factor` (the seed: 0.9).
    pub fn new(client: Client, keys: Keys, factor: f64) -> Self {
        Self {
            client,
            keys,
            factor,
            layout: Layout::Seed,
            buckets: 1,
            cache: Arc::default(),
            counters: Arc::default(),
        }
    }

    /// The same, reading `layout` (with `buckets` for the compact layout), as `[reflex]`
    /// configures the daemons.
    #[must_use]
    pub fn with_layout(mut self, layout: Layout, buckets: u32) -> Self {
        self.layout = layout;
        self.buckets = buckets.max(1);
        self
    }

    /// The layout this client reads.
    pub fn layout(&self) -> Layout {
        self.layout
    }

    /// The id under which this layout stores query hash `h`: `h` itself (seed) or its first
    /// 16 hex digits (compact; `None` when `h` does not start with 16 hex digits). Crossings
    /// and `ghost:{id}` carry this id.
    pub fn query_id(&self, h: &str) -> Option<String> {
        match self.layout {
            Layout::Seed => Some(h.to_ascii_lowercase()),
            Layout::Compact => compact_id(h),
        }
    }

    /// Compact layout: the bucket key holding query id `id`.
    pub fn bucket_key(&self, id: &str) -> Option<String> {
        compact_bucket(id, self.buckets).map(|n| self.keys.cms_bucket(n))
    }

    /// Checks that this Redis holds this client's layout; with `record`, an empty Redis is
    /// marked with it (what writers do; readers pass false). Fails with
    /// [`ClientError::Layout`] when another layout is recorded.
    pub async fn claim_layout(&self, record: bool) -> Result<(), ClientError> {
        let tag = layout_tag(self.layout, self.buckets);
        let script = Script::from_lua(CLAIM_LAYOUT_LUA);
        let cur: Option<String> = script
            .evalsha_with_reload(
                &self.client,
                vec![self.keys.reflex_layout()],
                vec![tag.clone(), if record { "1" } else { "0" }.to_owned()],
            )
            .await?;
        match cur {
            Some(stored) if stored != tag => Err(ClientError::Layout {
                stored,
                configured: tag,
            }),
            _ => Ok(()),
        }
    }

    /// Records a query hit: appends a query event to the `queries` stream (decay applies it
    /// exactly once). Returns the entry id.
    pub async fn record_hit(
        &self,
        producer: &Producer,
        text: &str,
        grains: &[u64],
        latency_ms: Option<f64>,
    ) -> Result<String, ClientError> {
        let ev = QueryEvent {
            text: text.to_owned(),
            hash: Some(query_hash(text)),
            ts: now_secs(),
            grains: grains.to_vec(),
            latency_ms,
        };
        producer.publish(StreamName::Queries, &ev).await
    }

    /// The reflex lookup of query `text` in one round trip.
    pub async fn lookup(&self, text: &str) -> Result<ReflexLookup, ClientError> {
        self.lookup_hash(&query_hash(text)).await
    }

    /// The reflex lookup by query hash, in one round trip: the hot script when the version it
    /// reads is the cache's and the ghost's grains and the hat's mask are cached, else the full
    /// script (which refills the cache).
    pub async fn lookup_hash(&self, h: &str) -> Result<ReflexLookup, ClientError> {
        self.lookup_with(h, true).await
    }

    /// The reflex lookup by query hash without the client's cache: always the full script
    /// (which still refills the cache). Returns what [`Reflex::lookup_hash`] returns.
    pub async fn lookup_hash_uncached(&self, h: &str) -> Result<ReflexLookup, ClientError> {
        self.lookup_with(h, false).await
    }

    async fn lookup_with(&self, h: &str, cached: bool) -> Result<ReflexLookup, ClientError> {
        let (look, hit, ghost_ids) = match self.layout {
            Layout::Seed => self.lookup_seed(h, cached).await?,
            Layout::Compact => self.lookup_compact(h, cached).await?,
        };
        self.count(ghost_ids, hit);
        Ok(look)
    }

    /// The cached grains of `ghost` and mask of `hat`, if the cache holds `version` and all of
    /// them.
    fn cached_parts(
        &self,
        version: u64,
        ghost: Option<&str>,
        hat: Option<&str>,
    ) -> Option<(Vec<GhostGrain>, Option<Vec<u8>>)> {
        let c = self.cache.lock().ok()?;
        if c.version != Some(version) {
            return None;
        }
        let mut grains = Vec::new();
        // The full script's reply drops ids that are not numbers (`ghost_grains`): so does this.
        let tokens = ghost
            .unwrap_or_default()
            .split(',')
            .filter(|t| !t.is_empty() && t.parse::<u64>().is_ok());
        for token in tokens {
            grains.push(c.grains.get(token)?.clone());
        }
        let mask = match hat {
            Some(name) => c.masks.get(name)?.clone(),
            None => None,
        };
        Some((grains, mask))
    }

    /// Remembers what a full lookup read at `version`.
    fn fill_cache(&self, version: u64, ghost: Option<&str>, look: &ReflexLookup) {
        if let Ok(mut c) = self.cache.lock() {
            c.fill(version, ghost, look);
        }
    }

    /// Counts one lookup (its ghost's grains, whether it found a record) and starts a flush
    /// in the background when one is due.
    fn count(&self, ghost_ids: u64, hit: bool) {
        let c = &self.counters;
        if ghost_ids > 0 {
            c.lookups.fetch_add(ghost_ids, Ordering::Relaxed);
        }
        if hit {
            c.hits.fetch_add(1, Ordering::Relaxed);
        }
        let n = c.since.fetch_add(1, Ordering::Relaxed) + 1;
        let due = n >= COUNTER_FLUSH_EVERY
            || c.last.lock().map_or(true, |t| {
                t.elapsed() >= Duration::from_millis(COUNTER_FLUSH_MS)
            });
        if !due {
            return;
        }
        // Outside a tokio runtime the counts wait for `flush_counters`.
        let Ok(rt) = tokio::runtime::Handle::try_current() else {
            return;
        };
        if c.flushing.swap(true, Ordering::AcqRel) {
            return;
        }
        let this = self.clone();
        rt.spawn(async move {
            let _ = this.flush_counters().await;
            this.counters.flushing.store(false, Ordering::Release);
        });
    }

    /// Adds the lookups' pending counts to `metrics:grains:lookups` and `metrics:cache:hits`
    /// (one pipeline). On failure the counts stay pending for the next flush.
    pub async fn flush_counters(&self) -> Result<(), ClientError> {
        let c = &self.counters;
        c.since.store(0, Ordering::Relaxed);
        if let Ok(mut t) = c.last.lock() {
            *t = Instant::now();
        }
        let lookups = c.lookups.swap(0, Ordering::AcqRel);
        let hits = c.hits.swap(0, Ordering::AcqRel);
        if lookups == 0 && hits == 0 {
            return Ok(());
        }
        let pipe = self.client.pipeline();
        let queued: Result<(), fred::error::Error> = async {
            if lookups > 0 {
                let _: () = pipe
                    .incr_by(self.keys.metrics_grains_lookups(), lookups as i64)
                    .await?;
            }
            if hits > 0 {
                let _: () = pipe
                    .incr_by(self.keys.metrics_cache_hits(), hits as i64)
                    .await?;
            }
            Ok(())
        }
        .await;
        let sent = match queued {
            Ok(()) => pipe.all::<Vec<Value>>().await.map(|_| ()),
            Err(e) => Err(e),
        };
        if let Err(e) = sent {
            c.lookups.fetch_add(lookups, Ordering::AcqRel);
            c.hits.fetch_add(hits, Ordering::AcqRel);
            return Err(e.into());
        }
        Ok(())
    }

    /// Seed layout. Returns the lookup, whether a record was found, and the ghost's ids.
    async fn lookup_seed(
        &self,
        h: &str,
        cached: bool,
    ) -> Result<(ReflexLookup, bool, u64), ClientError> {
        let k = &self.keys;
        let keys = vec![
            k.cms(h),
            k.cms_grains(h),
            k.resonance_index(),
            k.decay_cycle(),
            k.ghost(h),
            k.hat_current(),
            k.reflex_version(),
        ];
        let hit = |v: &Value| {
            !matches!(
                array(array(v).first().unwrap_or(&Value::Null)).first(),
                None | Some(Value::Null)
            )
        };
        if cached {
            let v: Value = HOT_LOOKUP
                .evalsha_with_reload(&self.client, keys.clone(), vec![h.to_owned()])
                .await?;
            let parts = array(&v);
            let ghost = parts.get(6).and_then(text_of);
            let version = version_of(parts.get(7));
            let hat = parts.get(4).and_then(text_of);
            if let Some((grains, mask)) =
                self.cached_parts(version, ghost.as_deref(), hat.as_deref())
            {
                let mut look = self.decode_lookup(h, &v);
                look.ghost = grains;
                look.hat_mask = mask;
                return Ok((look, hit(&v), ghost_count(ghost.as_deref())));
            }
        }
        let args = self.lookup_args(h);
        let v: Value = LOOKUP.evalsha_with_reload(&self.client, keys, args).await?;
        let look = self.decode_lookup(h, &v);
        let parts = array(&v);
        let ghost = parts.get(8).and_then(text_of);
        self.fill_cache(version_of(parts.get(7)), ghost.as_deref(), &look);
        Ok((look, hit(&v), ghost_count(ghost.as_deref())))
    }

    /// ARGV of both full lookup scripts: the query's id, then the grain and hat-mask key
    /// affixes (`LOOKUP_GHOST_LUA` reads `ARGV[2..9]`).
    fn lookup_args(&self, id: &str) -> Vec<String> {
        let [sig, plus, minus] = self.keys.grain_affixes();
        let (hp, hs) = self.keys.hat_mask_affixes();
        vec![
            id.to_owned(),
            sig.0,
            sig.1,
            plus.0,
            plus.1,
            minus.0,
            minus.1,
            hp,
            hs,
        ]
    }

    async fn lookup_compact(
        &self,
        h: &str,
        cached: bool,
    ) -> Result<(ReflexLookup, bool, u64), ClientError> {
        let id = compact_id(h).ok_or_else(|| {
            ClientError::Invalid(format!(
                "query hash {h:?} does not start with 16 hex digits"
            ))
        })?;
        let k = &self.keys;
        let bucket = self
            .bucket_key(&id)
            .ok_or_else(|| ClientError::Invalid(format!("no bucket for {id:?}")))?;
        let keys = vec![
            bucket,
            k.decay_cycle(),
            k.ghost(&id),
            k.hat_current(),
            k.reflex_version(),
        ];
        let hit = |v: &Value| text_of(array(v).first().unwrap_or(&Value::Null)).is_some();
        if cached {
            let v: Value = HOT_COMPACT_LOOKUP
                .evalsha_with_reload(&self.client, keys.clone(), vec![id.clone()])
                .await?;
            let parts = array(&v);
            let ghost = parts.get(4).and_then(text_of);
            let version = version_of(parts.get(5));
            let hat = parts.get(2).and_then(text_of);
            if let Some((grains, mask)) =
                self.cached_parts(version, ghost.as_deref(), hat.as_deref())
            {
                let mut look = self.decode_compact(&id, &v)?;
                look.ghost = grains;
                look.hat_mask = mask;
                return Ok((look, hit(&v), ghost_count(ghost.as_deref())));
            }
        }
        let args = self.lookup_args(&id);
        let v: Value = COMPACT_LOOKUP
            .evalsha_with_reload(&self.client, keys, args)
            .await?;
        let look = self.decode_compact(&id, &v)?;
        let parts = array(&v);
        let ghost = parts.get(6).and_then(text_of);
        self.fill_cache(version_of(parts.get(5)), ghost.as_deref(), &look);
        Ok((look, hit(&v), ghost_count(ghost.as_deref())))
    }

    /// A compact reply `{rec, cycle, hat, mask, grains, …}` (the hot script's has `false` for
    /// the mask and the ghost's text for the grains, which the caller fills from the cache).
    fn decode_compact(&self, id: &str, v: &Value) -> Result<ReflexLookup, ClientError> {
        let parts = array(v);
        let get = |i: usize| parts.get(i).unwrap_or(&Value::Null);
        let cycle = text_of(get(1))
            .and_then(|c| c.parse::<u64>().ok())
            .unwrap_or(0);
        let rec = match text_of(get(0)) {
            Some(r) => {
                Some(CompactRecord::decode(&r).map_err(|e| ClientError::Reply(e.to_string()))?)
            }
            None => None,
        };
        Ok(ReflexLookup {
            hash: id.to_owned(),
            count: rec.as_ref().map(|r| r.count),
            last_accessed: rec
                .as_ref()
                .map(|r| kitbash_schema::time::rfc3339_utc(r.last_s.saturating_mul(1000))),
            resonance: rec
                .as_ref()
                .map_or(0.0, |r| r.resonance(cycle, self.factor)),
            cycle,
            grains: rec.map(|r| r.grains).unwrap_or_default(),
            ghost: ghost_grains(get(4)),
            hat: text_of(get(2)),
            hat_mask: bytes_of(get(3)),
        })
    }

    /// A seed reply `{rec, s, cycle, grains, hat, mask, ghost grains, …}` (the hot script's
    /// has `false` for the mask and the ghost's text for its grains, filled by the caller).
    fn decode_lookup(&self, h: &str, v: &Value) -> ReflexLookup {
        let parts = array(v);
        let get = |i: usize| parts.get(i).unwrap_or(&Value::Null);
        let rec = array(get(0));
        let rec_text = |i: usize| rec.get(i).and_then(text_of);
        let cycle = text_of(get(2))
            .and_then(|c| c.parse::<u64>().ok())
            .unwrap_or(0);
        let from_record = match (rec_text(2), rec_text(3)) {
            (Some(r), Some(c)) => match (r.parse::<f64>(), c.parse::<u64>()) {
                (Ok(r), Ok(c)) if r.is_finite() => Some(decayed(r, c, cycle, self.factor)),
                _ => None,
            },
            _ => None,
        };
        let from_index = text_of(get(1))
            .and_then(|s| s.parse::<f64>().ok())
            .map(|s| resonance_at(s, cycle, self.factor));
        let grains = array(get(3))
            .iter()
            .filter_map(|g| text_of(g)?.parse().ok())
            .collect();
        let ghost = ghost_grains(get(6));
        ReflexLookup {
            hash: h.to_owned(),
            count: rec_text(0).and_then(|c| c.parse().ok()),
            last_accessed: rec_text(1),
            resonance: from_record.or(from_index).unwrap_or(0.0),
            cycle,
            grains,
            ghost,
            hat: text_of(get(4)),
            hat_mask: bytes_of(get(5)),
        }
    }

    /// The seed's `metrics_record_query(latency_ms)`: counts a query and adds its latency to
    /// the histogram behind `metrics:latency:p95`/`p99` (which decay recomputes). For
    /// applications that do not publish query events (a query event with `latency_ms` does
    /// the same through decay, once).
    pub async fn metrics_record_query(&self, latency_ms: f64) -> Result<(), ClientError> {
        let pipe = self.client.pipeline();
        let _: () = pipe.incr(self.keys.metrics_queries_count()).await?;
        if latency_ms.is_finite() && latency_ms >= 0.0 {
            let _: () = pipe
                .hincrby(
                    self.keys.latency_histogram(),
                    latency_bucket(latency_ms).to_string(),
                    1,
                )
                .await?;
        }
        let _: Vec<Value> = pipe.all().await?;
        Ok(())
    }

    /// Switches the current hat (it must have a mask) and announces it. Returns false when no
    /// mask exists for `name`.
    pub async fn hat_set(&self, name: &str) -> Result<bool, ClientError> {
        let script = Script::from_lua(HAT_SET_LUA);
        let v: i64 = script
            .evalsha_with_reload(
                &self.client,
                vec![
                    self.keys.hat_current(),
                    self.keys.hat_mask(name),
                    self.keys.reflex_version(),
                ],
                vec![name.to_owned()],
            )
            .await?;
        if v < 0 {
            return Ok(false);
        }
        self.announce(ReflexChange::HAT, v as u64).await?;
        Ok(true)
    }

    /// Writes the seed's five hats (`hat:{name}:mask` = sha256(name)) and makes the first the
    /// current hat unless one is set. Returns the names.
    pub async fn hat_init(&self) -> Result<Vec<&'static str>, ClientError> {
        let trx = self.client.multi();
        for name in SEED_HATS {
            let _: () = trx
                .set(
                    self.keys.hat_mask(name),
                    hat_mask_of(name).to_vec(),
                    None,
                    None,
                    false,
                )
                .await?;
        }
        let _: () = trx
            .set(
                self.keys.hat_current(),
                SEED_HATS[0],
                None,
                Some(SetOptions::NX),
                false,
            )
            .await?;
        let _: () = trx.incr(self.keys.reflex_version()).await?;
        let out: Vec<Value> = trx.exec(true).await?;
        let v = out
            .last()
            .and_then(text_of)
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        self.announce(ReflexChange::HAT, v).await?;
        Ok(SEED_HATS.to_vec())
    }

    /// Stores `grains` in one transaction (all or nothing) and announces the change.
    pub async fn grains_import(&self, grains: &[Grain]) -> Result<u64, ClientError> {
        let trx = self.client.multi();
        for g in grains {
            let sig = serde_json::to_string(&g.sig)?;
            let _: () = trx
                .set(self.keys.grain_sig(g.id), sig, None, None, false)
                .await?;
            let _: () = trx
                .set(
                    self.keys.grain_bits_plus(g.id),
                    g.vector.plus_bytes(),
                    None,
                    None,
                    false,
                )
                .await?;
            let _: () = trx
                .set(
                    self.keys.grain_bits_minus(g.id),
                    g.vector.minus_bytes(),
                    None,
                    None,
                    false,
                )
                .await?;
            let _: () = trx.sadd(self.keys.grain_index(), g.id).await?;
        }
        let _: () = trx.incr(self.keys.reflex_version()).await?;
        let out: Vec<Value> = trx.exec(true).await?;
        let v = out
            .last()
            .and_then(text_of)
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        self.announce(ReflexChange::GRAINS, v).await?;
        Ok(v)
    }

    /// Every grain id with its signature record (sorted by id).
    pub async fn grains_list(&self) -> Result<Vec<(u64, Option<GrainSig>)>, ClientError> {
        let ids: Vec<String> = self.client.smembers(self.keys.grain_index()).await?;
        let mut ids: Vec<u64> = ids.iter().filter_map(|i| i.parse().ok()).collect();
        ids.sort_unstable();
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let sigs: Vec<Option<String>> = self
            .client
            .mget(
                ids.iter()
                    .map(|i| self.keys.grain_sig(*i))
                    .collect::<Vec<_>>(),
            )
            .await?;
        Ok(ids
            .into_iter()
            .zip(sigs)
            .map(|(id, s)| (id, s.and_then(|s| serde_json::from_str(&s).ok())))
            .collect())
    }

    async fn announce(&self, what: &str, version: u64) -> Result<(), ClientError> {
        let msg = ReflexChange {
            what: what.to_owned(),
            version,
        };
        let _: i64 = self
            .client
            .publish(self.keys.channel_grain_updates(), msg.to_json())
            .await?;
        Ok(())
    }
}

fn now_secs() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_hash_is_sha256_hex() {
        // python3 -c 'import hashlib; print(hashlib.sha256(b"what is DNA?").hexdigest())'
        assert_eq!(
            query_hash("what is DNA?"),
            "8ebee1bc98cb109bfcb3d9f489d66dae6f87474c702c71f7c5dc0adfbf60416c"
        );
        assert_eq!(hat_mask_of("analytical").len(), 32);
    }

    #[test]
    fn grain_files_report_the_bad_line() {
        let good = r#"{"id":1,"axiom":"a","weight":1.0,"trits":[1,0,-1,0,0,0,0,0]}"#;
        let ok = parse_grains(&format!("{good}\n\n"), 8);
        assert_eq!(ok.map(|g| g.len()), Ok(1));
        let bad = format!(
            "{good}\n{{\"id\":2,\"axiom\":\"b\",\"weight\":1.0,\"trits\":[2,0,0,0,0,0,0,0]}}\n"
        );
        assert_eq!(parse_grains(&bad, 8).map_err(|e| e.line), Err(2));
        let planes = r#"[{"id":3,"axiom":"c","weight":0.5,"plus":"0f","minus":"f0"}]"#;
        let g = parse_grains(planes, 8).unwrap_or_default();
        assert_eq!(g.len(), 1);
        assert_eq!(g[0].sig.popcount, 8);
        let overlap = r#"{"id":4,"axiom":"d","weight":0.5,"plus":"0f","minus":"0f"}"#;
        assert_eq!(parse_grains(overlap, 8).map_err(|e| e.line), Err(1));
        let dup = format!("{good}\n{good}");
        assert_eq!(parse_grains(&dup, 8).map_err(|e| e.line), Err(2));
    }
}
