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
}
