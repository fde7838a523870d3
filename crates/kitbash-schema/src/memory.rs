//! Seed 004's memory-token relevance: the formula, and how the relevance indexes store it so
//! that their order never has to be recomputed as time passes.
//!
//! Relevance of a token created at `ts` (Unix seconds) with `accesses` accesses, at `now`:
//!
//! ```text
//! relevance = e^(-(now - ts)/τ) · ln(1 + accesses),   τ = 1 h
//! ```
//!
//! Every token decays by the same factor `e^(-Δt/τ)` over the same time, so the *order* of a
//! set of tokens never changes with time. The indexes (sorted sets,
//! [`crate::Keys::memory_user_index`], [`crate::Keys::memory_context_index`]) therefore store
//! the time-free rank
//!
//! ```text
//! rank = ts/τ + ln(ln(1 + accesses))      (so ln(relevance) = rank - now/τ)
//! ```
//!
//! and a reader turns a rank back into the relevance at its own `now` with
//! [`relevance_of_rank`]: a top-k read is one `ZREVRANGEBYSCORE … LIMIT 0 k`, exact at the
//! moment it is read, with no rescoring job. τ is fixed here (not configured) because writers
//! and readers must agree on it for ranks to mean relevances. A token with no accesses has
//! relevance 0 (`ln 1 = 0`, rank `-inf`): it is cached but not ranked.

/// τ, the relevance's time constant: one hour, in seconds.
pub const TAU_S: f64 = 3600.0;

/// Below this relevance an entry leaves an index (the default of `[archive]
/// memory_min_relevance`, and the readers' default cut): about 4.2 h after creation for one
/// access, 6.1 h for 100.
pub const MIN_RELEVANCE: f64 = 0.01;

/// The relevance at `now_s` of a token created at `ts_s` with `accesses` accesses (ages below
/// zero — a clock ahead of the reader's — count as zero).
pub fn relevance(ts_s: f64, accesses: u64, now_s: f64) -> f64 {
    let age = (now_s - ts_s).max(0.0);
    (-age / TAU_S).exp() * (accesses as f64).ln_1p()
}

/// The time-free rank an index stores for a token ([module docs](self)); `-inf` when it has
/// no accesses.
pub fn rank(ts_s: f64, accesses: u64) -> f64 {
    ts_s / TAU_S + (accesses as f64).ln_1p().ln()
}

/// The relevance at `now_s` of an index entry of rank `rank`. A rank from the future (a
/// writer's clock ahead of this reader's) gives at most the entry's undecayed relevance.
pub fn relevance_of_rank(rank: f64, now_s: f64) -> f64 {
    (rank - now_s / TAU_S).exp()
}

/// The lowest rank whose relevance at `now_s` is at least `min_relevance`: what a reader
/// passes to `ZREVRANGEBYSCORE` as its minimum, and below which a writer prunes.
pub fn rank_floor(min_relevance: f64, now_s: f64) -> f64 {
    now_s / TAU_S + min_relevance.ln()
}

/// A relevance as the decimal text `score:{user}:{ctx}:{token}` holds (shortest round-trip
/// form, `"0"` for none), readable by any client.
pub fn relevance_text(r: f64) -> String {
    if r == 0.0 {
        "0".to_owned()
    } else {
        r.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rank_orders_as_relevance_at_any_time() {
        let tokens = [
            (1_000.0, 1),
            (1_000.0, 9),
            (4_600.0, 1),
            (8_200.0, 3),
            (0.0, 1_000),
        ];
        for now in [8_200.0, 20_000.0, 1e6] {
            for a in tokens {
                let ra = relevance(a.0, a.1, now);
                assert!(
                    (relevance_of_rank(rank(a.0, a.1), now) - ra).abs() <= 1e-12 * ra.max(1e-300)
                );
                for b in tokens {
                    let rb = relevance(b.0, b.1, now);
                    assert_eq!(
                        rank(a.0, a.1) < rank(b.0, b.1),
                        ra < rb,
                        "{a:?} {b:?} at {now}"
                    );
                }
            }
        }
    }

    #[test]
    fn the_formula_as_documented() {
        // One hour old, e − 1 accesses: e^-1 · ln(e) = e^-1.
        let r = relevance(0.0, 0, 3600.0);
        assert_eq!(r, 0.0);
        assert_eq!(rank(5.0, 0), f64::NEG_INFINITY);
        let r = relevance(0.0, 1, 3600.0);
        assert!((r - (-1f64).exp() * 2f64.ln()).abs() < 1e-15);
        // The floor is exactly where relevance meets the minimum.
        let now = 1_766_318_400.0;
        let floor = rank_floor(MIN_RELEVANCE, now);
        assert!((relevance_of_rank(floor, now) - MIN_RELEVANCE).abs() < 1e-9);
        assert_eq!(relevance_text(0.0), "0");
        assert_eq!(relevance_text(0.5).parse::<f64>().ok(), Some(0.5));
    }
}
