//! The reflex path's shared arithmetic (seed 000): how resonance is stored normalised to decay
//! cycle 0, the hit-increment rule, the latency histogram's buckets and the seed's hats. Writers
//! (decay, the client) and readers (the client's lookup, the ghost, other languages) must agree
//! on these, so they live beside the keys.
//!
//! # Resonance
//! Every decay cycle multiplies every resonance by `f` (0.9). Instead of rewriting every record,
//! decay keeps a global cycle counter `C` (`kitbash:decay:cycle`) and stores in
//! `kitbash:resonance:index` the score `s = ln r − c·ln f` of a resonance `r` current at cycle
//! `c`; at cycle `C` the resonance is `exp(s + C·ln f)` ([`resonance_at`]). A decay cycle is one
//! `INCRBY` of `C`. The `cms:{h}` record also keeps `resonance_score` with its `cycle`, so
//! `r·f^(C−c)` ([`decayed`]) gives the same value without logarithms.
//!
//! # The hit rule
//! A hit moves resonance a fixed share `alpha` of the way to 1: `r' = r + alpha·(1 − r)` where
//! `r` is the decayed value at the hit's cycle ([`hit`]). Resonance stays in [0, 1); from 0,
//! `alpha = 0.25` crosses 0.8 on the sixth hit in a row.
//!
//! # Layouts
//! [`Layout::Seed`] writes the seed's keys (`cms:{h}`, `cms:{h}:grains`, `cms:{h}:resonance`,
//! the resonance index) — three keys and an index member per query, about 980 B each.
//! [`Layout::Compact`] packs every query into one field of one of `buckets` hashes
//! (`kitbash:cms:{n}`): field = the first 16 hex digits of the query's sha256 ([`compact_id`]),
//! bucket `n = u64(id, hex) mod buckets` ([`compact_bucket`]), value a [`CompactRecord`]
//! (`count|last_s|score|g1,g2,g3`). Small hashes are listpacks in Redis, so a query costs its
//! field and value plus a few bytes. Only hot queries keep more: `kitbash:reflex:hot` (score =
//! normalised resonance) and their text in `kitbash:reflex:hot:text`, which the ghost's
//! recomputation reads. Records expire by a sweep of the decay leader (no per-field TTL in Redis
//! 7.0). Which layout a Redis holds is written once in `kitbash:reflex:layout`
//! ([`layout_tag`]); every writer checks it, so the two never mix.

use serde::{Deserialize, Serialize};

/// The seed's decay factor per cycle.
pub const DECAY_FACTOR: f64 = 0.9;
/// The seed's ghost threshold.
pub const GHOST_THRESHOLD: f64 = 0.8;
/// The seed's top-k.
pub const GHOST_TOP_K: usize = 3;
/// The five hats of the seed's origin (acausal/Kitbash_Project); `kitbash hat init` writes their
/// masks as `sha256(name)` (32 bytes).
pub const SEED_HATS: [&str; 5] = [
    "analytical",
    "creative",
    "empathetic",
    "deliberative",
    "neutral",
];

/// The normalised index score of resonance `r` current at cycle `cycle`: `ln r − cycle·ln f`.
/// `r = 0` gives `-inf` (Redis accepts `-inf` as a sorted-set score).
pub fn normalised(r: f64, cycle: u64, factor: f64) -> f64 {
    r.ln() - cycle as f64 * factor.ln()
}

/// The resonance at cycle `cycle` of normalised score `s`.
pub fn resonance_at(s: f64, cycle: u64, factor: f64) -> f64 {
    (s + cycle as f64 * factor.ln()).exp()
}

/// `r` current at cycle `from`, decayed to cycle `to` (`to < from` is treated as no decay).
pub fn decayed(r: f64, from: u64, to: u64, factor: f64) -> f64 {
    let n = to.saturating_sub(from);
    r * factor.powi(i32::try_from(n).unwrap_or(i32::MAX))
}

/// The hit rule: `r + alpha·(1 − r)`.
pub fn hit(r: f64, alpha: f64) -> f64 {
    r + alpha * (1.0 - r)
}

/// Growth factor between latency buckets: bucket edges are `1.02^b` µs, so a percentile read off
/// the histogram is within 2% of the exact one.
pub const LATENCY_BUCKET_GROWTH: f64 = 1.02;

/// The bucket of a latency in ms: `floor(log_1.02(µs))`, µs at least 1.
pub fn latency_bucket(ms: f64) -> u32 {
    let us = (ms * 1000.0).max(1.0);
    (us.ln() / LATENCY_BUCKET_GROWTH.ln()).floor() as u32
}

/// The upper edge of a bucket, in ms.
pub fn latency_bucket_upper_ms(bucket: u32) -> f64 {
    LATENCY_BUCKET_GROWTH.powf(f64::from(bucket) + 1.0) / 1000.0
}

/// The `q` quantile (0–1) of a histogram given as (bucket, count), as the upper edge of the
/// bucket holding it, in ms; `None` when empty.
pub fn latency_quantile(buckets: &[(u32, u64)], q: f64) -> Option<f64> {
    let total: u64 = buckets.iter().map(|(_, c)| c).sum();
    if total == 0 {
        return None;
    }
    let mut sorted = buckets.to_vec();
    sorted.sort_unstable();
    let rank = ((q * total as f64).ceil() as u64).clamp(1, total);
    let mut seen = 0;
    for (b, c) in sorted {
        seen += c;
        if seen >= rank {
            return Some(latency_bucket_upper_ms(b));
        }
    }
    None
}

/// The field of the seed layout's `cms:{h}` hash holding the query's text.
pub const CMS_TEXT: &str = "text";

/// Fields of `kitbash:decay:clock` ([`crate::Keys::decay_clock`]), written by the decay
/// leader's cycle script.
pub mod clock {
    /// Redis time (ms) of cycle 0: cycle `n` is due at `origin_ms + n × [decay] period_ms`.
    pub const ORIGIN_MS: &str = "origin_ms";
    /// Redis time (ms) of the newest cycle applied.
    pub const LAST_MS: &str = "last_ms";
}

/// Parses a ghost value (`"42,17,88"`, [`crate::Keys::ghost`]); ids that do not parse are
/// left out.
pub fn ghost_ids(v: &str) -> Vec<u64> {
    v.split(',').filter_map(|x| x.trim().parse().ok()).collect()
}

/// How the CMS records of the reflex path are stored (see the module docs).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Layout {
    /// The seed's keys: `cms:{h}` (hash), `cms:{h}:grains`, `cms:{h}:resonance`, plus the
    /// resonance index. What seed-era readers doing a plain `GET` expect.
    #[default]
    Seed,
    /// One field per query in `buckets` listpack hashes; hot queries indexed apart.
    Compact,
}

/// What `kitbash:reflex:layout` holds for a layout: `seed`, or `compact/{buckets}` (the bucket
/// count is part of the layout: a reader with another count would look in the wrong bucket).
pub fn layout_tag(layout: Layout, buckets: u32) -> String {
    match layout {
        Layout::Seed => "seed".to_owned(),
        Layout::Compact => format!("compact/{buckets}"),
    }
}

/// Hex digits of a query id in the compact layout (64 bits of the sha256).
pub const COMPACT_ID_LEN: usize = 16;

/// The compact layout's id of a query hash: its first 16 hex digits, lowercased; `None` when
/// `h` does not start with 16 hex digits.
pub fn compact_id(h: &str) -> Option<String> {
    let head = h.get(..COMPACT_ID_LEN)?;
    head.bytes()
        .all(|b| b.is_ascii_hexdigit())
        .then(|| head.to_ascii_lowercase())
}

/// The bucket of a compact id: the id read as a hexadecimal `u64`, modulo `buckets`
/// (`int(id, 16) % buckets` in Python). `None` for an id that is not 16 hex digits or for
/// zero buckets.
pub fn compact_bucket(id: &str, buckets: u32) -> Option<u32> {
    if id.len() != COMPACT_ID_LEN || buckets == 0 {
        return None;
    }
    let v = u64::from_str_radix(id, 16).ok()?;
    u32::try_from(v % u64::from(buckets)).ok()
}

/// One query's record in the compact layout: `count|last_s|score|g1,g2,g3`.
///
/// - `count`: hits applied;
/// - `last_s`: Redis time (Unix seconds) of the last hit applied — the sweep forgets records
///   not hit for `[reflex] record_ttl_s`, as the seed's 24 h TTL would;
/// - `score`: the resonance normalised to cycle 0 ([`normalised`]), shortest round-trip
///   decimal; the resonance at cycle `C` is [`resonance_at`]`(score, C, f)`;
/// - grains: the grain ids of the latest hits, oldest first, distinct, at most
///   `[reflex] grains_per_query` (empty when none).
#[derive(Clone, Debug, PartialEq)]
pub struct CompactRecord {
    /// Hits applied.
    pub count: u64,
    /// Redis time of the last hit, Unix seconds.
    pub last_s: i64,
    /// Normalised resonance (`ln r − c·ln f`).
    pub score: f64,
    /// Grain ids, oldest first.
    pub grains: Vec<u64>,
}

/// Why a compact record could not be read.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("compact record {record:?}: {why}")]
pub struct RecordError {
    /// The record as stored (cut to 80 bytes).
    pub record: String,
    /// What is wrong.
    pub why: &'static str,
}

impl CompactRecord {
    /// The stored form.
    pub fn encode(&self) -> String {
        let grains: Vec<String> = self.grains.iter().map(u64::to_string).collect();
        format!(
            "{}|{}|{}|{}",
            self.count,
            self.last_s,
            self.score,
            grains.join(",")
        )
    }

    /// Reads the stored form.
    pub fn decode(s: &str) -> Result<Self, RecordError> {
        let bad = |why| RecordError {
            record: s.chars().take(80).collect(),
            why,
        };
        let mut parts = s.split('|');
        let (Some(count), Some(last), Some(score), Some(grains), None) = (
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
        ) else {
            return Err(bad("expected four fields separated by '|'"));
        };
        let score: f64 = score.parse().map_err(|_| bad("score is not a number"))?;
        if score.is_nan() {
            return Err(bad("score is NaN"));
        }
        Ok(Self {
            count: count.parse().map_err(|_| bad("count is not an integer"))?,
            last_s: last.parse().map_err(|_| bad("last_s is not an integer"))?,
            score,
            grains: if grains.is_empty() {
                Vec::new()
            } else {
                grains
                    .split(',')
                    .map(|g| g.parse().map_err(|_| bad("a grain id is not an integer")))
                    .collect::<Result<_, _>>()?
            },
        })
    }

    /// The resonance at `cycle`.
    pub fn resonance(&self, cycle: u64, factor: f64) -> f64 {
        resonance_at(self.score, cycle, factor)
    }
}

/// Lua helpers for scripts that read and write [`CompactRecord`]s (prepend to the script):
/// `rec_decode(v)` returns `count, last_s, score, grains` (a table of id strings) or `nil` for
/// a malformed value; `rec_encode(count, last_s, score, grains)` the stored form (score as
/// `%.17g`, which [`CompactRecord::decode`] reads back exactly); `rec_grains(old, new, max)` the
/// grain list after a hit naming `new` (oldest first, distinct, at most `max`).
pub const COMPACT_RECORD_LUA: &str = r#"
local function rec_decode(v)
  local c, t, s, g = string.match(v, '^(%d+)|(%-?%d+)|([^|]+)|([%d,]*)$')
  if not c then return nil end
  local grains = {}
  for id in string.gmatch(g, '%d+') do grains[#grains + 1] = id end
  return tonumber(c), tonumber(t), tonumber(s), grains
end
local function rec_encode(count, t, s, grains)
  return string.format('%.0f|%.0f|%.17g|', count, t, s) .. table.concat(grains, ',')
end
local function rec_grains(old, new, max)
  local out, seen = {}, {}
  for i = #new, 1, -1 do
    if not seen[new[i]] and #out < max then seen[new[i]] = true; table.insert(out, 1, new[i]) end
  end
  for i = #old, 1, -1 do
    if not seen[old[i]] and #out < max then seen[old[i]] = true; table.insert(out, 1, old[i]) end
  end
  return out
end
"#;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalised_round_trips() {
        let s = normalised(0.5, 10, DECAY_FACTOR);
        let r = resonance_at(s, 12, DECAY_FACTOR);
        assert!((r - 0.5 * 0.81).abs() < 1e-12);
        assert!((decayed(0.5, 10, 12, DECAY_FACTOR) - 0.405).abs() < 1e-15);
        assert_eq!(decayed(0.5, 12, 10, DECAY_FACTOR), 0.5);
    }

    #[test]
    fn hits_cross_on_the_sixth() {
        let mut r = 0.0;
        let mut n = 0;
        while r <= GHOST_THRESHOLD {
            r = hit(r, 0.25);
            n += 1;
        }
        assert_eq!(n, 6);
    }

    #[test]
    fn quantiles_within_two_percent() {
        let samples: Vec<f64> = (1..=1000).map(|i| f64::from(i) * 0.01).collect();
        let mut h: std::collections::BTreeMap<u32, u64> = Default::default();
        for s in &samples {
            *h.entry(latency_bucket(*s)).or_default() += 1;
        }
        let v: Vec<(u32, u64)> = h.into_iter().collect();
        let p99 = latency_quantile(&v, 0.99).unwrap_or(0.0);
        assert!((p99 / 9.9 - 1.0).abs() <= 0.021, "{p99}");
        assert_eq!(latency_quantile(&[], 0.5), None);
    }

    #[test]
    fn compact_records_round_trip() {
        let r = CompactRecord {
            count: 6,
            last_s: 1_766_318_400,
            score: normalised(0.822, 17, DECAY_FACTOR),
            grains: vec![42, 17, 88],
        };
        let s = r.encode();
        assert_eq!(CompactRecord::decode(&s), Ok(r.clone()));
        assert!(s.starts_with("6|1766318400|"), "{s}");
        assert!(s.ends_with("|42,17,88"), "{s}");
        let none = CompactRecord {
            grains: vec![],
            ..r
        };
        assert_eq!(CompactRecord::decode(&none.encode()), Ok(none));
        for bad in [
            "",
            "1|2|3",
            "1|2|x|",
            "a|2|0.5|",
            "1|2|0.5|4,x",
            "1|2|0.5|3|9",
            "1|2|NaN|",
        ] {
            assert!(CompactRecord::decode(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn compact_ids_and_buckets() {
        let h = "9F86D081884C7D659A2FEAA0C55AD015A3BF4F1B2B0B822CD15D6C15B0F00A08";
        assert_eq!(compact_id(h).as_deref(), Some("9f86d081884c7d65"));
        assert_eq!(compact_id("9f86d0"), None);
        assert_eq!(compact_id("zz86d081884c7d659a"), None);
        let id = "9f86d081884c7d65";
        // int('9f86d081884c7d65', 16) % 1024 in Python
        assert_eq!(compact_bucket(id, 1024), Some(357));
        assert_eq!(compact_bucket(id, 0), None);
        assert_eq!(compact_bucket("9f86", 8), None);
        assert_eq!(layout_tag(Layout::Compact, 1024), "compact/1024");
        assert_eq!(layout_tag(Layout::Seed, 1024), "seed");
    }
}
