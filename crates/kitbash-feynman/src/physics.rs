//! The physics vector over a rolling tick window, computed as the original FeynmanService does.
//!
//! # Layout
//! - [`TickWindow`]: the last N ticks of one symbol (default [`DEFAULT_WINDOW_CAPACITY`]), with
//!   [`TickWindow::push`] and [`TickWindow::vector`]. It serialises (serde) to a compact
//!   checkpoint of its raw columns, so the daemon can store it and restore it after a crash.
//! - `EqualWidthBins`: numpy's `np.histogram` equal-width bins and its classic `"auto"` bin rule.
//! - `hill_tail_index`: the original HeavyTailEstimator's Hill estimator.
//! - `pairwise_sum`: numpy's pairwise summation, so means and standard deviations round alike.
//!
//! # The formulas (P last price, H/L window max/min price, V last size, r log returns)
//! - mass = V · CLV, CLV = ((P − L) − (H − P)) / (H − L); CLV = 0 when H − L ≤ 1e-9
//! - momentum = mass · ln(P_t / P_{t−1})
//! - friction = trades_t / V; 0 when V = 0
//! - entropy = Shannon entropy in bits of the histogram of r (`"auto"` bins, empty bins dropped);
//!   needs more than 5 prices, else 0
//! - nash_dist = (P − mode) / std(prices), mode = midpoint of the fullest bin of the `"auto"`
//!   price histogram (the first such bin on ties, as `np.argmax`), std the population standard
//!   deviation; needs more than 10 prices, else 0; 0 when std ≤ 1e-9 (the original's guard)
//! - alpha_coefficient = Hill estimator on |r|: n returns, p = 0.10 (n < 30), 0.05 (n < 500),
//!   0.03 otherwise, k = max(⌊n·p⌋, 10); with X sorted descending, threshold X\[k\] (the
//!   (k+1)-th largest, as the original indexes it), α = 1 / mean(ln(X\[i\] / X\[k\])) for i < k,
//!   clipped to [0.5, 10]. [`DEFAULT_ALPHA`] (3.0) when there are fewer than 20 returns, when
//!   the threshold is 0 (more than n − k returns are zero) or when the mean is not positive (the
//!   k largest all equal the threshold) — the original's three fallbacks.
//! - regime = [`Regime::from_alpha`]
//!
//! With fewer than 2 ticks the vector is all zeros with α = [`DEFAULT_ALPHA`] (the original
//! returns its "empty vector" there, which has no α). Every output is finite: divisions are
//! guarded as above, and a result that would overflow (possible only with inputs near
//! `f64::MAX`) saturates to ±`f64::MAX`.
//!
//! # Fidelity to numpy
//! The tests compare against `fixtures/physics_cases.json`, produced by
//! `fixtures/gen_physics_fixtures.py` (numpy). Bins, bin edges, bin assignment (including
//! numpy's ±1 correction at the edges), percentiles (linear interpolation, numpy's `_lerp`),
//! the ±0.5 widening of a zero range and pairwise summation follow numpy's code step by step;
//! the fixtures agree to within 21 ulps (entropy, where numpy normalises densities rather than
//! counts) and 1 ulp elsewhere.
//!
//! The `"auto"` rule is numpy's classic one (numpy ≤ 2.2), as the design brief states it: bin
//! width = min(FD, Sturges) when the Freedman–Diaconis width is non-zero, else Sturges; bins =
//! ⌈ptp / width⌉. numpy 2.3 changed `"auto"` (FD widened to at least half the square-root-rule
//! width), which gives different bin counts for heavy-tailed or mostly-flat data.
//!
//! # Cost
//! The window keeps its prices and its log returns in sorted order as well as in time order
//! (a binary search and one `copy_within` per sorted column per push, ~0.2 µs at 1000 ticks), so
//! `vector()` reads min, max and percentiles directly; counts each histogram bin as a run of the
//! sorted values (numpy's index for the run's first value, then a chunked, vectorised count or
//! a galloping search for the bin's upper edge: O(bins), not O(n)); takes the k + 1 largest
//! |returns| from both ends of the sorted returns; and caches the entropy terms p·ln p per
//! thread. The one full pass left is the standard deviation (two vectorised pairwise sums).
//! About 2.5 µs per vector at 1000 ticks; `examples/physics_speed.rs` measures it.
//!
//! # Memory
//! Four columns of 8-byte values (prices and their logs in time order, prices and log returns
//! sorted), allocated as ticks arrive (nothing is reserved for the capacity): ≤ 512 bytes of
//! columns for 10 ticks, ~32 KB at 1000. Sizes and trade counts are kept for the newest tick
//! only, the one the vector reads. The only scratch space is
//! per thread (the entropy-term cache) or per call, never per window.

use std::collections::VecDeque;
use std::f64::consts::LN_2;

use kitbash_schema::messages::{PhysicsVector, Regime, Tick};
use serde::de::Error as _;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Ticks a window keeps unless configured otherwise (the original's ring buffer size).
pub const DEFAULT_WINDOW_CAPACITY: usize = 1000;

/// Tail index reported when the Hill estimator has too little data (the original's default).
pub const DEFAULT_ALPHA: f64 = 3.0;

/// Price range (H − L) at or below which CLV is 0.
const CLV_MIN_RANGE: f64 = 1e-9;
/// Standard deviation at or below which the Nash distance is 0.
const NASH_MIN_STD: f64 = 1e-9;
/// Entropy needs more than 5 prices.
const ENTROPY_MIN_PRICES: usize = 6;
/// The Nash distance needs more than 10 prices.
const NASH_MIN_PRICES: usize = 11;
/// The Hill estimator needs at least 20 returns.
const HILL_MIN_RETURNS: usize = 20;
/// The Hill estimator uses at least 10 tail values.
const HILL_MIN_TAIL: usize = 10;
/// The clip range of α.
const ALPHA_MIN: f64 = 0.5;
const ALPHA_MAX: f64 = 10.0;
/// Largest bin count. numpy would try to allocate the counts (8 TiB at this size) and fail;
/// here the bin count costs nothing, and the cap keeps bin indices exact in `f64`.
const MAX_BINS: u64 = 1 << 40;
/// numpy's pairwise-summation block (`PW_BLOCKSIZE`).
const PAIRWISE_BLOCK: usize = 128;

/// Why [`TickWindow::push`] refused a tick (the window is unchanged).
#[derive(Clone, Copy, Debug, PartialEq, thiserror::Error)]
pub enum TickRejected {
    /// The price is not finite and positive.
    #[error("price {0} is not a finite positive number")]
    Price(f64),
    /// The size is not finite and non-negative.
    #[error("size {0} is not a finite non-negative number")]
    Size(f64),
}

/// Why a checkpoint could not be restored into a [`TickWindow`].
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum CheckpointError {
    /// Capacity 0.
    #[error("window capacity is 0")]
    ZeroCapacity,
    /// The price, size and trade columns differ in length.
    #[error("columns differ in length: {prices} prices, {sizes} sizes, {trades} trade counts")]
    ColumnLengths {
        /// Number of prices.
        prices: usize,
        /// Number of sizes.
        sizes: usize,
        /// Number of trade counts.
        trades: usize,
    },
    /// More ticks than the capacity.
    #[error("{ticks} ticks exceed the window capacity {capacity}")]
    OverCapacity {
        /// Ticks in the checkpoint.
        ticks: usize,
        /// Its capacity.
        capacity: usize,
    },
    /// A stored tick is invalid.
    #[error("tick {index}: {reason}")]
    Tick {
        /// Position in the window, 0 = oldest.
        index: usize,
        /// What is wrong with it.
        reason: TickRejected,
    },
}

/// The last N ticks of one symbol and everything [`TickWindow::vector`] needs to compute the
/// physics vector over them.
///
/// Serialises as its checkpoint: `{capacity, prices, sizes, trades}`, the raw columns oldest
/// first (about 20 KB for 1000 ticks in MessagePack). Deserialising validates the checkpoint and
/// rebuilds the derived columns, so a restored window computes bit-identical vectors.
#[derive(Clone, Debug, PartialEq)]
pub struct TickWindow {
    /// Most ticks kept. Set by [`TickWindow::new`] or [`TickWindow::set_capacity`]; read by push.
    capacity: usize,
    /// Prices, oldest first.
    prices: VecDeque<f64>,
    /// `ln(price)` for each entry of `prices`, computed once at push; the log returns are their
    /// differences, exactly as numpy's `np.diff(np.log(prices))`.
    ln_prices: VecDeque<f64>,
    /// The newest tick's size (volume) and trade count: the only ones the vector reads (mass
    /// and friction are of the last tick), so no column of them is kept. The checkpoint still
    /// carries `sizes` and `trades` columns as long as `prices`, for readers of the old format.
    last_size: f64,
    last_trades: u64,
    /// The window's prices, ascending (total order). Min, max, percentiles and the price
    /// histogram read it.
    sorted_prices: Vec<f64>,
    /// The window's log returns `ln p[i] − ln p[i−1]` (one fewer than prices), ascending.
    sorted_returns: Vec<f64>,
}

impl Default for TickWindow {
    fn default() -> Self {
        TickWindow::new(DEFAULT_WINDOW_CAPACITY)
    }
}

impl TickWindow {
    /// An empty window keeping the last `capacity` ticks (at least 1). Nothing is allocated
    /// until ticks arrive: the columns grow with the ticks held (amortised doubling), so a
    /// symbol seen a few times costs a few hundred bytes whatever the capacity.
    pub fn new(capacity: usize) -> Self {
        TickWindow {
            capacity: capacity.max(1),
            prices: VecDeque::new(),
            ln_prices: VecDeque::new(),
            last_size: 0.0,
            last_trades: 0,
            sorted_prices: Vec::new(),
            sorted_returns: Vec::new(),
        }
    }

    /// Ticks in the window.
    pub fn len(&self) -> usize {
        self.prices.len()
    }

    /// Whether the window holds no tick.
    pub fn is_empty(&self) -> bool {
        self.prices.is_empty()
    }

    /// Bytes the window holds on the heap (the capacity of its columns). Grows with the ticks
    /// held, up to about 32 bytes per tick at full capacity; nothing is reserved up front.
    pub fn heap_bytes(&self) -> usize {
        8 * (self.prices.capacity()
            + self.ln_prices.capacity()
            + self.sorted_prices.capacity()
            + self.sorted_returns.capacity())
    }

    /// Most ticks the window keeps.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Changes the capacity (at least 1), dropping the oldest ticks if the window is now too
    /// long. For a restored checkpoint whose capacity differs from the configured one.
    pub fn set_capacity(&mut self, capacity: usize) {
        self.capacity = capacity.max(1);
        while self.prices.len() > self.capacity {
            if let Some((price, oldest_return)) = self.pop_oldest() {
                remove_sorted(&mut self.sorted_prices, price);
                if let Some(oldest_return) = oldest_return {
                    remove_sorted(&mut self.sorted_returns, oldest_return);
                }
            }
        }
    }

    /// Appends a tick, dropping the oldest one when the window is full. Refuses (and leaves the
    /// window unchanged) a price that is not finite and positive or a size that is not finite
    /// and non-negative; the symbol is the caller's business (one window per symbol).
    pub fn push(&mut self, tick: &Tick) -> Result<(), TickRejected> {
        self.push_sample(tick.price, tick.size, tick.trades)
    }

    fn push_sample(&mut self, price: f64, size: f64, trades: u64) -> Result<(), TickRejected> {
        validate_sample(price, size)?;
        let ln_price = price.ln();

        let evicted = if self.prices.len() >= self.capacity {
            self.pop_oldest()
        } else {
            None
        };
        let new_return = self
            .ln_prices
            .back()
            .map(|&ln_previous| ln_price - ln_previous);

        match evicted {
            Some((old_price, _)) => replace_sorted(&mut self.sorted_prices, old_price, price),
            None => insert_sorted(&mut self.sorted_prices, price),
        }
        match (evicted.and_then(|(_, old_return)| old_return), new_return) {
            (Some(old), Some(new)) => replace_sorted(&mut self.sorted_returns, old, new),
            (None, Some(new)) => insert_sorted(&mut self.sorted_returns, new),
            (Some(old), None) => remove_sorted(&mut self.sorted_returns, old),
            (None, None) => {}
        }

        self.prices.push_back(price);
        self.ln_prices.push_back(ln_price);
        self.last_size = size;
        self.last_trades = trades;
        Ok(())
    }

    /// Pops the oldest tick from the time-ordered columns (not the sorted ones): its price and,
    /// if a tick follows it, the log return that leaves the window with it.
    fn pop_oldest(&mut self) -> Option<(f64, Option<f64>)> {
        let price = self.prices.pop_front()?;
        let ln_price = self.ln_prices.pop_front()?;
        let oldest_return = self.ln_prices.front().map(|&ln_next| ln_next - ln_price);
        Some((price, oldest_return))
    }

    /// The physics vector over the window (see the module documentation for the formulas).
    pub fn vector(&self) -> PhysicsVector {
        let n = self.prices.len();
        let Some(&price) = self.prices.back() else {
            return at_rest_vector();
        };
        let (size, trades) = (self.last_size, self.last_trades);
        if n < 2 {
            return at_rest_vector();
        }
        let previous_price = self.prices[n - 2];
        let low = self.sorted_prices[0];
        let high = self.sorted_prices[n - 1];

        let mass = size * close_location_value(price, low, high);
        let momentum = mass * log_velocity(price, previous_price);
        let friction = if size > 0.0 {
            trades as f64 / size
        } else {
            0.0
        };
        let entropy = if n >= ENTROPY_MIN_PRICES {
            shannon_entropy_bits(&self.sorted_returns)
        } else {
            0.0
        };
        let nash_dist = if n >= NASH_MIN_PRICES {
            let (older, newer) = self.prices.as_slices();
            nash_distance(price, &self.sorted_prices, older, newer)
        } else {
            0.0
        };
        let alpha = hill_tail_index(&self.sorted_returns);

        PhysicsVector {
            mass: saturate(mass),
            momentum: saturate(momentum),
            friction: saturate(friction),
            entropy: saturate(entropy),
            nash_dist: saturate(nash_dist),
            regime: Regime::from_alpha(alpha),
            alpha_coefficient: alpha,
        }
    }
}

/// The vector for a window with fewer than 2 ticks.
fn at_rest_vector() -> PhysicsVector {
    PhysicsVector {
        mass: 0.0,
        momentum: 0.0,
        friction: 0.0,
        entropy: 0.0,
        nash_dist: 0.0,
        regime: Regime::from_alpha(DEFAULT_ALPHA),
        alpha_coefficient: DEFAULT_ALPHA,
    }
}

fn validate_sample(price: f64, size: f64) -> Result<(), TickRejected> {
    if !(price.is_finite() && price > 0.0) {
        return Err(TickRejected::Price(price));
    }
    if !(size.is_finite() && size >= 0.0) {
        return Err(TickRejected::Size(size));
    }
    Ok(())
}

/// NaN → 0, ±∞ → ±`f64::MAX`: only reachable with inputs near `f64::MAX`.
fn saturate(value: f64) -> f64 {
    if value.is_nan() {
        0.0
    } else {
        value.clamp(-f64::MAX, f64::MAX)
    }
}

// --- the checkpoint --------------------------------------------------------------------------

/// What a [`TickWindow`] serialises as (borrowing its columns). `sizes` and `trades` are as
/// long as `prices`, every entry the newest tick's value: the format stays the one every
/// earlier version wrote and reads, and restoring from it computes the same vectors (only the
/// newest size and trade count enter a vector).
#[derive(Serialize)]
struct CheckpointRef<'a> {
    capacity: usize,
    prices: &'a VecDeque<f64>,
    sizes: Repeat<f64>,
    trades: Repeat<u64>,
}

/// `n` copies of one value, serialised as a sequence without being allocated.
struct Repeat<T>(T, usize);

impl<T: Serialize> Serialize for Repeat<T> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeSeq as _;
        let mut seq = serializer.serialize_seq(Some(self.1))?;
        for _ in 0..self.1 {
            seq.serialize_element(&self.0)?;
        }
        seq.end()
    }
}

/// What a [`TickWindow`] deserialises from.
#[derive(Deserialize)]
struct Checkpoint {
    capacity: usize,
    prices: Vec<f64>,
    sizes: Vec<f64>,
    trades: Vec<u64>,
}

impl Serialize for TickWindow {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        CheckpointRef {
            capacity: self.capacity,
            prices: &self.prices,
            sizes: Repeat(self.last_size, self.prices.len()),
            trades: Repeat(self.last_trades, self.prices.len()),
        }
        .serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for TickWindow {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let checkpoint = Checkpoint::deserialize(deserializer)?;
        TickWindow::try_from(checkpoint).map_err(D::Error::custom)
    }
}

impl TryFrom<Checkpoint> for TickWindow {
    type Error = CheckpointError;

    fn try_from(checkpoint: Checkpoint) -> Result<Self, CheckpointError> {
        let Checkpoint {
            capacity,
            prices,
            sizes,
            trades,
        } = checkpoint;
        if capacity == 0 {
            return Err(CheckpointError::ZeroCapacity);
        }
        if prices.len() != sizes.len() || prices.len() != trades.len() {
            return Err(CheckpointError::ColumnLengths {
                prices: prices.len(),
                sizes: sizes.len(),
                trades: trades.len(),
            });
        }
        if prices.len() > capacity {
            return Err(CheckpointError::OverCapacity {
                ticks: prices.len(),
                capacity,
            });
        }
        for (index, (&price, &size)) in prices.iter().zip(&sizes).enumerate() {
            validate_sample(price, size)
                .map_err(|reason| CheckpointError::Tick { index, reason })?;
        }

        let ln_prices: VecDeque<f64> = prices.iter().map(|p| p.ln()).collect();
        let mut sorted_returns: Vec<f64> = ln_prices
            .iter()
            .zip(ln_prices.iter().skip(1))
            .map(|(ln_previous, ln_price)| ln_price - ln_previous)
            .collect();
        sorted_returns.sort_unstable_by(f64::total_cmp);
        let mut sorted_prices = prices.clone();
        sorted_prices.sort_unstable_by(f64::total_cmp);

        Ok(TickWindow {
            capacity,
            prices: prices.into(),
            ln_prices,
            last_size: sizes.last().copied().unwrap_or(0.0),
            last_trades: trades.last().copied().unwrap_or(0),
            sorted_prices,
            sorted_returns,
        })
    }
}

// --- sorted columns --------------------------------------------------------------------------

/// Index of the first element not less than `value` (total order).
fn lower_bound(sorted: &[f64], value: f64) -> usize {
    sorted.partition_point(|probe| probe.total_cmp(&value).is_lt())
}

/// Index of an element bit-equal to `value`, if any.
fn find_sorted(sorted: &[f64], value: f64) -> Option<usize> {
    let at = lower_bound(sorted, value);
    (sorted.get(at)?.total_cmp(&value).is_eq()).then_some(at)
}

fn insert_sorted(sorted: &mut Vec<f64>, value: f64) {
    let at = lower_bound(sorted, value);
    sorted.insert(at, value);
}

fn remove_sorted(sorted: &mut Vec<f64>, value: f64) {
    if let Some(at) = find_sorted(sorted, value) {
        sorted.remove(at);
    } else {
        debug_assert!(false, "value {value} missing from a sorted column");
    }
}

/// Removes `old` and inserts `new` with one shift of the elements between their positions.
fn replace_sorted(sorted: &mut Vec<f64>, old: f64, new: f64) {
    let Some(old_at) = find_sorted(sorted, old) else {
        debug_assert!(false, "value {old} missing from a sorted column");
        insert_sorted(sorted, new);
        return;
    };
    let new_at = lower_bound(sorted, new);
    if new_at > old_at {
        // Everything in old_at+1..new_at is below `new`: shift it down over `old`.
        sorted.copy_within(old_at + 1..new_at, old_at);
        sorted[new_at - 1] = new;
    } else {
        // Everything in new_at..old_at is at or above `new`: shift it up over `old`.
        sorted.copy_within(new_at..old_at, new_at + 1);
        sorted[new_at] = new;
    }
}

// --- the formulas ----------------------------------------------------------------------------

/// Close-location value of `price` in [low, high]: +1 at the high, −1 at the low.
fn close_location_value(price: f64, low: f64, high: f64) -> f64 {
    let range = high - low;
    if range > CLV_MIN_RANGE {
        ((price - low) - (high - price)) / range
    } else {
        0.0
    }
}

/// ln(price / previous), as the original computes it (`np.log(p / p_prev)`).
fn log_velocity(price: f64, previous_price: f64) -> f64 {
    if previous_price <= 0.0 {
        return 0.0;
    }
    let velocity = (price / previous_price).ln();
    if velocity.is_finite() {
        velocity
    } else {
        // The ratio over- or underflowed (prices ~1e300 apart): the difference of logs is finite.
        price.ln() - previous_price.ln()
    }
}

/// Shannon entropy, in bits, of the `"auto"` histogram of `sorted` (ascending, non-empty).
/// Empty bins contribute nothing; probabilities are count / total.
fn shannon_entropy_bits(sorted: &[f64]) -> f64 {
    let total = sorted.len();
    if total == 0 {
        return 0.0;
    }
    let bins = EqualWidthBins::auto(sorted);
    let mut nats = 0.0;
    let cached = total <= ENTROPY_TERM_CACHE_LIMIT
        && ENTROPY_TERMS
            .try_with(|cell| {
                let Ok(mut terms) = cell.try_borrow_mut() else {
                    return false;
                };
                if terms.len() <= total {
                    terms.resize(total + 1, (0, 0.0));
                }
                bins.for_each_run(sorted, |_, count| {
                    let entry = &mut terms[count];
                    if entry.0 != total {
                        *entry = (total, entropy_term(count, total));
                    }
                    nats -= entry.1;
                });
                true
            })
            .unwrap_or(false);
    if !cached {
        bins.for_each_run(sorted, |_, count| nats -= entropy_term(count, total));
    }
    nats / LN_2
}

/// p · ln p for p = count / total.
fn entropy_term(count: usize, total: usize) -> f64 {
    let probability = count as f64 / total as f64;
    probability * probability.ln()
}

/// Largest total whose entropy terms are cached (16 bytes per possible count, per thread).
const ENTROPY_TERM_CACHE_LIMIT: usize = 8192;

thread_local! {
    /// `entropy_term(count, total)` by count, tagged with the total it was computed for; a
    /// stale tag means "not computed". Bins repeat the same few counts tick after tick, and
    /// the cached value is the very one `entropy_term` returns, so results are unchanged.
    static ENTROPY_TERMS: std::cell::RefCell<Vec<(usize, f64)>> =
        const { std::cell::RefCell::new(Vec::new()) };
}

/// (price − mode) / std, mode the midpoint of the fullest `"auto"` bin of the prices.
/// `sorted_prices` is the window ascending; `older` then `newer` the same prices in time order
/// (the standard deviation sums in that order, as numpy does).
fn nash_distance(price: f64, sorted_prices: &[f64], older: &[f64], newer: &[f64]) -> f64 {
    if sorted_prices.is_empty() {
        return 0.0;
    }
    let bins = EqualWidthBins::auto(sorted_prices);
    let mut fullest = (0, 0);
    bins.for_each_run(sorted_prices, |bin, count| {
        // Runs come in ascending bin order; strict > keeps the first maximum, as np.argmax.
        if count > fullest.1 {
            fullest = (bin, count);
        }
    });
    let mode = (bins.edge(fullest.0) + bins.edge(fullest.0 + 1)) / 2.0;
    let sigma = population_std(older, newer);
    if sigma > NASH_MIN_STD {
        (price - mode) / sigma
    } else {
        0.0
    }
}

/// `np.std` (ddof 0) of `older` followed by `newer`.
fn population_std(older: &[f64], newer: &[f64]) -> f64 {
    let n = (older.len() + newer.len()) as f64;
    let mean = pairwise_sum(older, newer, |x| x) / n;
    let squares = pairwise_sum(older, newer, |x| {
        let deviation = x - mean;
        deviation * deviation
    });
    (squares / n).sqrt()
}

/// The Hill tail index of |returns| (`sorted_returns` ascending), as the original
/// HeavyTailEstimator computes it; see the module documentation.
fn hill_tail_index(sorted_returns: &[f64]) -> f64 {
    let n = sorted_returns.len();
    if n < HILL_MIN_RETURNS {
        return DEFAULT_ALPHA;
    }
    let tail_fraction = if n < 30 {
        0.10
    } else if n < 500 {
        0.05
    } else {
        0.03
    };
    // `int(n * p)` truncates, as here; n ≥ 20 makes k ≤ n − 1, so the threshold exists.
    let k = ((n as f64 * tail_fraction) as usize).max(HILL_MIN_TAIL);
    let Some(threshold) = LargestMagnitudes::new(sorted_returns).nth(k) else {
        return DEFAULT_ALPHA;
    };
    if threshold <= 0.0 {
        return DEFAULT_ALPHA;
    }
    // numpy: np.mean(np.log(tail / x_min)) over the k largest, in descending order.
    let log_ratios = LargestMagnitudes::new(sorted_returns)
        .take(k)
        .map(|magnitude| (magnitude / threshold).ln());
    let mut on_stack = [0.0; PAIRWISE_BLOCK];
    let sum = if k <= PAIRWISE_BLOCK {
        for (slot, log_ratio) in on_stack.iter_mut().zip(log_ratios) {
            *slot = log_ratio;
        }
        pairwise_sum(&on_stack[..k], &[], |x| x)
    } else {
        let on_heap: Vec<f64> = log_ratios.collect();
        pairwise_sum(&on_heap, &[], |x| x)
    };
    let mean = sum / k as f64;
    if mean > 0.0 {
        (1.0 / mean).clamp(ALPHA_MIN, ALPHA_MAX)
    } else {
        DEFAULT_ALPHA
    }
}

/// |x| of an ascending slice in descending order, merging from both ends (the largest
/// magnitude is always at one end of what is left).
struct LargestMagnitudes<'a> {
    sorted: &'a [f64],
    /// First unvisited index from the low (most negative) end.
    low: usize,
    /// One past the last unvisited index from the high end.
    high: usize,
}

impl<'a> LargestMagnitudes<'a> {
    fn new(sorted: &'a [f64]) -> Self {
        LargestMagnitudes {
            sorted,
            low: 0,
            high: sorted.len(),
        }
    }
}

impl Iterator for LargestMagnitudes<'_> {
    type Item = f64;

    fn next(&mut self) -> Option<f64> {
        if self.low >= self.high {
            return None;
        }
        let from_low = self.sorted[self.low].abs();
        let from_high = self.sorted[self.high - 1].abs();
        if from_low > from_high {
            self.low += 1;
            Some(from_low)
        } else {
            self.high -= 1;
            Some(from_high)
        }
    }
}

// --- numpy's histogram -----------------------------------------------------------------------

/// numpy's equal-width histogram bins over [first, last]: `np.linspace` edges and
/// `np.histogram`'s bin assignment.
#[derive(Clone, Copy, Debug, PartialEq)]
struct EqualWidthBins {
    /// Left edge of bin 0 (the data minimum, or minimum − 0.5 for a zero range).
    first: f64,
    /// Right edge of the last bin (closed).
    last: f64,
    /// `last − first`.
    span: f64,
    /// Number of bins (≥ 1).
    count: u64,
    /// `span / count`, `np.linspace`'s step.
    step: f64,
}

impl EqualWidthBins {
    /// `count` bins over [first, last].
    fn new(first: f64, last: f64, count: u64) -> Self {
        let count = count.clamp(1, MAX_BINS);
        let span = last - first;
        EqualWidthBins {
            first,
            last,
            span,
            count,
            step: span / count as f64,
        }
    }

    /// numpy's classic `bins="auto"` (≤ 2.2) for ascending, non-empty `sorted`.
    fn auto(sorted: &[f64]) -> Self {
        let (Some(&min), Some(&max)) = (sorted.first(), sorted.last()) else {
            return EqualWidthBins::new(0.0, 1.0, 1);
        };
        if min == max {
            // `_get_outer_edges` widens an empty range; both widths are 0, so one bin.
            return EqualWidthBins::new(min - 0.5, max + 0.5, 1);
        }
        let n = sorted.len() as f64;
        let ptp = max - min;
        let sturges_width = ptp / (n.log2() + 1.0);
        let iqr = percentile(sorted, 0.75) - percentile(sorted, 0.25);
        let fd_width = 2.0 * iqr * n.powf(-1.0 / 3.0);
        let width = if fd_width != 0.0 {
            fd_width.min(sturges_width)
        } else {
            sturges_width
        };
        let count = (ptp / width).ceil();
        let count = if count >= MAX_BINS as f64 {
            MAX_BINS
        } else if count >= 1.0 {
            count as u64
        } else {
            1
        };
        EqualWidthBins::new(min, max, count)
    }

    /// Edge `i` (0..=count) as `np.linspace(first, last, count + 1)` computes it.
    fn edge(&self, i: u64) -> f64 {
        if i >= self.count {
            self.last
        } else if self.step != 0.0 {
            i as f64 * self.step + self.first
        } else {
            // linspace's path for a step that underflows to 0.
            i as f64 / self.count as f64 * self.span + self.first
        }
    }

    /// The bin numpy puts `x` in (x within [first, last]): the scaled estimate, then its ±1
    /// correction against the edges; the last bin is closed.
    fn index_of(&self, x: f64) -> u64 {
        if self.count == 1 {
            return 0;
        }
        let estimate = ((x - self.first) / self.span) * self.count as f64;
        // `astype(np.intp)` truncates; the value is ≥ 0 and ≤ count here.
        let mut bin = (estimate as u64).min(self.count);
        if bin == self.count {
            bin -= 1;
        }
        if bin > 0 && x < self.edge(bin) {
            bin -= 1;
        }
        if bin != self.count - 1 && x >= self.edge(bin + 1) {
            bin += 1;
        }
        bin
    }

    /// Whether `index_of` is non-decreasing over ascending input, so a bin's values are one
    /// contiguous run of the sorted data. True when the bins are wide compared to the rounding
    /// of the edges (2^-36 of the magnitude; then numpy's corrected index is exactly "the bin
    /// whose edges enclose x"), i.e. always but for ranges within ~1e-11 of the values.
    fn runs_are_contiguous(&self) -> bool {
        let magnitude = self.first.abs().max(self.last.abs());
        self.count == 1 || self.step > magnitude * (2.0_f64).powi(-36)
    }

    /// Calls `visit(bin, count)` for every non-empty bin of `sorted` (ascending), in ascending
    /// bin order, with the counts numpy's histogram gives.
    fn for_each_run(&self, sorted: &[f64], mut visit: impl FnMut(u64, usize)) {
        if self.runs_are_contiguous() {
            self.gallop_runs(sorted, &mut visit);
        } else {
            self.counted_runs(sorted, &mut visit);
        }
    }

    /// Finds each bin's run by galloping: numpy's index for the run's first value, then an
    /// exponential and a binary search for the first value at or above the bin's upper edge
    /// (where numpy's corrected index moves on, bins being contiguous). O(bins · log run).
    fn gallop_runs(&self, sorted: &[f64], visit: &mut impl FnMut(u64, usize)) {
        let n = sorted.len();
        let mut start = 0;
        let mut bin = match sorted.first() {
            Some(&x) => self.index_of(x),
            None => return,
        };
        while start < n {
            if bin + 1 >= self.count {
                // The last bin is closed: everything left is in it.
                visit(bin, n - start);
                return;
            }
            let upper_edge = self.edge(bin + 1);
            let beyond = run_end(sorted, start + 1, upper_edge);
            visit(bin, beyond - start);
            start = beyond;
            if let Some(&x) = sorted.get(start) {
                // x ≥ the upper edge: usually it lies in the very next bin, which saves
                // index_of's division; otherwise bins were skipped and numpy's index decides.
                bin = if bin + 2 >= self.count || x < self.edge(bin + 2) {
                    bin + 1
                } else {
                    self.index_of(x)
                };
            }
        }
    }

    /// Indexes every value, then counts equal indices: exact for any input, O(n log n).
    fn counted_runs(&self, sorted: &[f64], visit: &mut impl FnMut(u64, usize)) {
        let mut bins: Vec<u64> = sorted.iter().map(|&x| self.index_of(x)).collect();
        bins.sort_unstable();
        let mut start = 0;
        while let Some(&bin) = bins.get(start) {
            let run = bins[start..].partition_point(|&b| b == bin);
            visit(bin, run);
            start += run;
        }
    }
}

/// The first index at or after `from` whose value is ≥ `upper_edge` (`sorted` ascending, `n`
/// if none). Short runs, the common case, are counted a chunk at a time with branch-free
/// comparisons that vectorise; a run longer than two chunks switches to galloping.
fn run_end(sorted: &[f64], from: usize, upper_edge: f64) -> usize {
    const CHUNK: usize = 32;
    let n = sorted.len();
    let mut end = from;
    for _ in 0..2 {
        let chunk_end = (end + CHUNK).min(n);
        let below = sorted[end..chunk_end]
            .iter()
            .filter(|&&x| x < upper_edge)
            .count();
        end += below;
        if end < chunk_end || chunk_end == n {
            return end;
        }
    }
    // Invariant: sorted[in_run] < upper_edge; sorted[beyond] ≥ upper_edge (or beyond = n).
    let mut in_run = end - 1;
    let mut stride = 1;
    let beyond = loop {
        let probe = end + stride;
        if probe >= n {
            break n;
        }
        if sorted[probe] >= upper_edge {
            break probe;
        }
        in_run = probe;
        stride *= 2;
    };
    in_run + 1 + sorted[in_run + 1..beyond].partition_point(|&x| x < upper_edge)
}

/// `np.percentile(sorted, 100·q)` with the default linear interpolation, on ascending input.
fn percentile(sorted: &[f64], quantile: f64) -> f64 {
    let Some(&largest) = sorted.last() else {
        return 0.0;
    };
    let last_index = sorted.len() - 1;
    let virtual_index = last_index as f64 * quantile;
    if virtual_index >= last_index as f64 {
        return largest;
    }
    let below = virtual_index.floor();
    let gamma = virtual_index - below;
    let index = below as usize;
    let (a, b) = (sorted[index], sorted[index + 1]);
    // numpy's `_lerp`: interpolate from the nearer end.
    let difference = b - a;
    if gamma >= 0.5 {
        b - difference * (1.0 - gamma)
    } else {
        a + difference * gamma
    }
}

/// numpy's pairwise summation of `term(x)` over `head` followed by `tail`: blocks of at most
/// 128 summed with 8 interleaved accumulators, larger ranges split in two at a multiple of 8.
/// Bit-identical to `np.sum` of the mapped array.
fn pairwise_sum(head: &[f64], tail: &[f64], term: impl Fn(f64) -> f64 + Copy) -> f64 {
    fn block_sum(values: &[f64], term: impl Fn(f64) -> f64) -> f64 {
        if values.len() < 8 {
            let mut sum = -0.0;
            for &x in values {
                sum += term(x);
            }
            return sum;
        }
        let (unrolled, rest) = values.split_at(values.len() - values.len() % 8);
        let mut lanes = [0.0; 8];
        for (lane, &x) in lanes.iter_mut().zip(&unrolled[..8]) {
            *lane = term(x);
        }
        // Named accumulators stay in registers (and vectorise); same order as numpy's r[0..8].
        let [
            mut r0,
            mut r1,
            mut r2,
            mut r3,
            mut r4,
            mut r5,
            mut r6,
            mut r7,
        ] = lanes;
        for chunk in unrolled[8..].chunks_exact(8) {
            r0 += term(chunk[0]);
            r1 += term(chunk[1]);
            r2 += term(chunk[2]);
            r3 += term(chunk[3]);
            r4 += term(chunk[4]);
            r5 += term(chunk[5]);
            r6 += term(chunk[6]);
            r7 += term(chunk[7]);
        }
        let mut sum = ((r0 + r1) + (r2 + r3)) + ((r4 + r5) + (r6 + r7));
        for &x in rest {
            sum += term(x);
        }
        sum
    }

    fn range_sum(
        head: &[f64],
        tail: &[f64],
        start: usize,
        len: usize,
        term: impl Fn(f64) -> f64 + Copy,
    ) -> f64 {
        if len <= PAIRWISE_BLOCK {
            let end = start + len;
            if end <= head.len() {
                return block_sum(&head[start..end], term);
            }
            if start >= head.len() {
                return block_sum(&tail[start - head.len()..end - head.len()], term);
            }
            // The block straddles the two slices: gather it.
            let mut gathered = [0.0; PAIRWISE_BLOCK];
            let from_head = &head[start..];
            let from_tail = &tail[..end - head.len()];
            gathered[..from_head.len()].copy_from_slice(from_head);
            gathered[from_head.len()..len].copy_from_slice(from_tail);
            return block_sum(&gathered[..len], term);
        }
        let mut half = len / 2;
        half -= half % 8;
        range_sum(head, tail, start, half, term)
            + range_sum(head, tail, start + half, len - half, term)
    }

    range_sum(head, tail, 0, head.len() + tail.len(), term)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn tick(price: f64, size: f64, trades: u64) -> Tick {
        Tick {
            symbol: "TEST".into(),
            price,
            size,
            trades,
            ts: 0.0,
        }
    }

    fn window_of(capacity: usize, ticks: &[(f64, f64, u64)]) -> TickWindow {
        let mut window = TickWindow::new(capacity);
        for &(price, size, trades) in ticks {
            window.push(&tick(price, size, trades)).unwrap();
        }
        window
    }

    fn close(actual: f64, expected: f64, relative: f64) -> bool {
        (actual - expected).abs() <= relative * actual.abs().max(expected.abs()) + 1e-12
    }

    fn sorted(values: &[f64]) -> Vec<f64> {
        let mut values = values.to_vec();
        values.sort_by(f64::total_cmp);
        values
    }

    /// A small deterministic generator for property-style tests (no dependency on rand here).
    struct SplitMix(u64);
    impl SplitMix {
        fn next_f64(&mut self) -> f64 {
            self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = self.0;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^= z >> 31;
            (z >> 11) as f64 / (1u64 << 53) as f64
        }
    }

    // --- fixtures (numpy reference) ----------------------------------------------------------

    #[derive(Deserialize)]
    struct FixtureFile {
        cases: Vec<FixtureCase>,
    }

    #[derive(Deserialize)]
    struct FixtureCase {
        name: String,
        capacity: usize,
        ticks: Vec<(f64, f64, u64)>,
        expected: Vec<FixtureVector>,
    }

    #[derive(Deserialize)]
    struct FixtureVector {
        after: usize,
        vector: PhysicsVector,
    }

    /// Relative tolerance against numpy. Observed: ≤ 21 ulps (entropy: numpy normalises
    /// densities, here counts), ≤ 1 ulp elsewhere (JSON float parsing).
    const FIXTURE_TOLERANCE: f64 = 1e-12;

    fn fixtures() -> FixtureFile {
        serde_json::from_str(include_str!("../fixtures/physics_cases.json")).unwrap()
    }

    fn assert_vector_matches(
        case: &str,
        after: usize,
        actual: &PhysicsVector,
        expected: &PhysicsVector,
    ) {
        let fields = [
            ("mass", actual.mass, expected.mass),
            ("momentum", actual.momentum, expected.momentum),
            ("friction", actual.friction, expected.friction),
            ("entropy", actual.entropy, expected.entropy),
            ("nash_dist", actual.nash_dist, expected.nash_dist),
            (
                "alpha_coefficient",
                actual.alpha_coefficient,
                expected.alpha_coefficient,
            ),
        ];
        for (field, a, e) in fields {
            assert!(
                close(a, e, FIXTURE_TOLERANCE),
                "{case} after {after} ticks: {field} = {a:e}, numpy says {e:e}"
            );
        }
        assert_eq!(
            actual.regime, expected.regime,
            "{case} after {after} ticks: regime"
        );
    }

    #[test]
    fn matches_the_numpy_fixtures() {
        let file = fixtures();
        assert!(file.cases.len() >= 10);
        let mut compared = 0;
        for case in &file.cases {
            let mut window = TickWindow::new(case.capacity);
            let mut pushed = 0;
            for expected in &case.expected {
                while pushed < expected.after {
                    let (price, size, trades) = case.ticks[pushed];
                    window.push(&tick(price, size, trades)).unwrap();
                    pushed += 1;
                }
                assert_eq!(window.len(), expected.after.min(case.capacity));
                assert_vector_matches(
                    &case.name,
                    expected.after,
                    &window.vector(),
                    &expected.vector,
                );
                compared += 1;
            }
        }
        assert!(compared >= 50);
    }

    #[test]
    fn fixtures_cover_every_threshold() {
        let file = fixtures();
        let lengths: Vec<(usize, usize)> = file
            .cases
            .iter()
            .flat_map(|c| {
                c.expected
                    .iter()
                    .map(|e| (e.after.min(c.capacity), c.capacity))
            })
            .collect();
        let has = |f: &dyn Fn(usize) -> bool| lengths.iter().any(|&(n, _)| f(n));
        assert!(has(&|n| n < 5));
        assert!(has(&|n| (6..=10).contains(&n)));
        assert!(has(&|n| (11..=20).contains(&n)));
        assert!(has(&|n| n == 21)); // 20 returns: first Hill estimate
        assert!(has(&|n| n >= 501)); // 500 returns: p = 0.03
        assert!(file.cases.iter().any(|c| c.ticks.len() > c.capacity)); // rolling
    }

    #[test]
    fn a_restored_checkpoint_computes_the_same_vectors() {
        let file = fixtures();
        let case = file
            .cases
            .iter()
            .find(|c| c.name == "rolling_capacity_100")
            .unwrap();
        let mut live = TickWindow::new(case.capacity);
        for (i, &(price, size, trades)) in case.ticks.iter().enumerate() {
            live.push(&tick(price, size, trades)).unwrap();
            if i % 37 == 0 {
                let packed = rmp_serde::to_vec(&live).unwrap();
                let mut restored: TickWindow = rmp_serde::from_slice(&packed).unwrap();
                assert_eq!(restored, live);
                let json = serde_json::to_vec(&live).unwrap();
                assert_eq!(serde_json::from_slice::<TickWindow>(&json).unwrap(), live);
                // Both continue identically.
                if let Some(&(p, s, t)) = case.ticks.get(i + 1) {
                    restored.push(&tick(p, s, t)).unwrap();
                    let mut next = live.clone();
                    next.push(&tick(p, s, t)).unwrap();
                    assert_eq!(restored.vector(), next.vector());
                }
            }
        }
    }

    /// The window keeps only the newest size and trade count, but its checkpoint keeps the
    /// format every earlier version wrote: a checkpoint written before (a size and a count per
    /// tick) restores to the window that pushed those ticks, and a new one has columns as long
    /// as `prices` that an earlier version restores (the newest values repeated).
    #[test]
    fn the_checkpoint_format_is_unchanged_without_the_size_columns() {
        let ticks = [
            (100.0, 5.0, 1),
            (101.0, 7.5, 4),
            (99.5, 0.0, 2),
            (100.2, 12.0, 9),
        ];
        let live = window_of(10, &ticks);
        let old = r#"{"capacity":10,"prices":[100.0,101.0,99.5,100.2],"sizes":[5.0,7.5,0.0,12.0],"trades":[1,4,2,9]}"#;
        let restored: TickWindow = serde_json::from_str(old).unwrap();
        assert_eq!(restored, live);
        assert_eq!(restored.vector(), live.vector());
        let written: serde_json::Value = serde_json::to_value(&live).unwrap();
        assert_eq!(
            written,
            serde_json::json!({
                "capacity": 10,
                "prices": [100.0, 101.0, 99.5, 100.2],
                "sizes": [12.0, 12.0, 12.0, 12.0],
                "trades": [9, 9, 9, 9],
            })
        );
        let empty = serde_json::to_value(TickWindow::new(3)).unwrap();
        assert_eq!(
            empty,
            serde_json::json!({"capacity": 3, "prices": [], "sizes": [], "trades": []})
        );
    }

    #[test]
    fn the_checkpoint_is_compact() {
        let mut window = TickWindow::default();
        let mut rng = SplitMix(7);
        let mut price = 100.0;
        for _ in 0..1000 {
            price *= 1.0 + (rng.next_f64() - 0.5) * 0.002;
            window
                .push(&tick(price, (rng.next_f64() * 500.0).round(), 3))
                .unwrap();
        }
        let packed = rmp_serde::to_vec(&window).unwrap();
        assert!(packed.len() < 20_000, "{} bytes", packed.len());
    }

    #[test]
    fn a_corrupt_checkpoint_is_refused() {
        let refuse = |json: &str| {
            serde_json::from_str::<TickWindow>(json)
                .unwrap_err()
                .to_string()
        };
        assert!(
            refuse(r#"{"capacity":0,"prices":[],"sizes":[],"trades":[]}"#)
                .contains("capacity is 0")
        );
        assert!(
            refuse(r#"{"capacity":5,"prices":[1.0],"sizes":[],"trades":[1]}"#)
                .contains("differ in length")
        );
        assert!(
            refuse(r#"{"capacity":1,"prices":[1.0,2.0],"sizes":[1,1],"trades":[1,1]}"#)
                .contains("exceed")
        );
        assert!(
            refuse(r#"{"capacity":5,"prices":[1.0,-2.0],"sizes":[1,1],"trades":[1,1]}"#)
                .contains("tick 1: price -2")
        );
        assert!(
            refuse(r#"{"capacity":5,"prices":[1.0],"sizes":[-1],"trades":[1]}"#)
                .contains("tick 0: size -1")
        );
    }

    // --- the window --------------------------------------------------------------------------

    #[test]
    fn push_rolls_and_keeps_sorted_columns_in_step() {
        let mut rng = SplitMix(1);
        for capacity in [1, 2, 3, 10, 64] {
            let mut window = TickWindow::new(capacity);
            let mut price = 50.0;
            let mut all = Vec::new();
            for _ in 0..300 {
                // Many repeated prices: exercises equal keys in the sorted columns.
                if rng.next_f64() < 0.5 {
                    price = (price * (1.0 + (rng.next_f64() - 0.5) * 0.01) * 100.0).round() / 100.0;
                }
                window.push(&tick(price, 1.0, 1)).unwrap();
                all.push(price);
                let kept = &all[all.len().saturating_sub(capacity)..];
                assert_eq!(window.len(), kept.len());
                assert_eq!(window.sorted_prices, sorted(kept));
                let returns: Vec<f64> = kept.windows(2).map(|w| w[1].ln() - w[0].ln()).collect();
                assert_eq!(window.sorted_returns, sorted(&returns));
            }
        }
    }

    #[test]
    fn a_window_grows_with_the_ticks_it_holds() {
        // Memory per symbol follows the ticks held, not the configured capacity: a symbol seen
        // ten times in a 1000-tick window costs a few hundred bytes, not 4 × 8 KB.
        let mut window = TickWindow::new(DEFAULT_WINDOW_CAPACITY);
        assert_eq!(window.heap_bytes(), 0);
        for i in 0..10 {
            window.push(&tick(100.0 + f64::from(i), 1.0, 1)).unwrap();
        }
        // Four columns of at most 16 slots of 8 bytes.
        assert!(window.heap_bytes() <= 4 * 16 * 8, "{}", window.heap_bytes());
        // A full window holds about its capacity, and no more than twice it.
        for i in 0..2000 {
            window
                .push(&tick(100.0 + f64::from(i % 37), 1.0, 1))
                .unwrap();
        }
        assert_eq!(window.len(), DEFAULT_WINDOW_CAPACITY);
        let full = window.heap_bytes();
        assert!(full >= 4 * 8 * DEFAULT_WINDOW_CAPACITY, "{full}");
        assert!(full <= 2 * 4 * 8 * DEFAULT_WINDOW_CAPACITY, "{full}");
        // A restored window is as small as its ticks.
        let restored: TickWindow = rmp_serde::from_slice(
            &rmp_serde::to_vec_named(&window_of(1000, &[(1.0, 1.0, 1), (2.0, 1.0, 1)])).unwrap(),
        )
        .unwrap();
        assert!(
            restored.heap_bytes() <= 4 * 4 * 8,
            "{}",
            restored.heap_bytes()
        );
    }

    #[test]
    fn set_capacity_drops_the_oldest() {
        let ticks: Vec<(f64, f64, u64)> = (1..=20).map(|i| (f64::from(i), 1.0, 1)).collect();
        let mut window = window_of(20, &ticks);
        window.set_capacity(5);
        assert_eq!(window, window_of(5, &ticks));
        window.set_capacity(0);
        assert_eq!(window.capacity(), 1);
        assert_eq!(window.len(), 1);
    }

    #[test]
    fn invalid_ticks_are_refused_and_change_nothing() {
        let mut window = window_of(10, &[(10.0, 1.0, 1)]);
        let before = window.clone();
        for price in [0.0, -1.0, f64::NAN, f64::INFINITY] {
            assert_eq!(
                window
                    .push(&tick(price, 1.0, 1))
                    .unwrap_err()
                    .to_string()
                    .split(' ')
                    .next(),
                Some("price")
            );
        }
        for size in [-1.0, f64::NAN, f64::INFINITY] {
            assert!(matches!(
                window.push(&tick(10.0, size, 1)),
                Err(TickRejected::Size(_))
            ));
        }
        assert_eq!(window, before);
    }

    #[test]
    fn fewer_than_two_ticks_give_the_rest_vector() {
        for window in [TickWindow::default(), window_of(10, &[(10.0, 5.0, 2)])] {
            let v = window.vector();
            assert_eq!(
                (v.mass, v.momentum, v.friction, v.entropy, v.nash_dist),
                (0.0, 0.0, 0.0, 0.0, 0.0)
            );
            assert_eq!(v.alpha_coefficient, 3.0);
            assert_eq!(v.regime, Regime::LevyStable);
        }
    }

    #[test]
    fn outputs_stay_finite_at_the_extremes() {
        let extremes = [
            (f64::MAX, f64::MAX, u64::MAX),
            (f64::MIN_POSITIVE, 5e-324, u64::MAX),
            (1e300, 1e300, 1),
            (1e-300, 0.0, 0),
            (1.0, 1.0, 1),
        ];
        let mut window = TickWindow::new(50);
        let mut rng = SplitMix(3);
        for i in 0..400 {
            let (price, size, trades) = extremes[(rng.next_f64() * 5.0) as usize % 5];
            window.push(&tick(price, size, trades)).unwrap();
            let v = window.vector();
            for x in [
                v.mass,
                v.momentum,
                v.friction,
                v.entropy,
                v.nash_dist,
                v.alpha_coefficient,
            ] {
                assert!(x.is_finite(), "tick {i}: {v:?}");
            }
        }
    }

    // --- each formula on hand-checkable input -------------------------------------------------

    #[test]
    fn mass_is_volume_times_clv() {
        assert_eq!(close_location_value(10.0, 10.0, 20.0), -1.0);
        assert_eq!(close_location_value(20.0, 10.0, 20.0), 1.0);
        assert_eq!(close_location_value(15.0, 10.0, 20.0), 0.0);
        assert_eq!(close_location_value(17.5, 10.0, 20.0), 0.5);
        assert_eq!(close_location_value(10.0, 10.0, 10.0 + 1e-10), 0.0); // range ≤ 1e-9
        // Window 10, 20, 17.5 with size 8 on the last tick: 8 × 0.5.
        let v = window_of(10, &[(10.0, 1.0, 1), (20.0, 1.0, 1), (17.5, 8.0, 2)]).vector();
        assert_eq!(v.mass, 4.0);
    }

    #[test]
    fn momentum_is_mass_times_the_last_log_return() {
        let v = window_of(10, &[(10.0, 1.0, 1), (20.0, 1.0, 1), (17.5, 8.0, 2)]).vector();
        assert!(close(v.momentum, 4.0 * (17.5f64 / 20.0).ln(), 1e-15));
        // Two ticks at the same price: range 0, so mass and momentum are 0.
        let v = window_of(10, &[(10.0, 1.0, 1), (10.0, 3.0, 1)]).vector();
        assert_eq!((v.mass, v.momentum), (0.0, 0.0));
    }

    #[test]
    fn friction_is_trades_per_volume() {
        assert_eq!(
            window_of(10, &[(10.0, 1.0, 1), (11.0, 8.0, 2)])
                .vector()
                .friction,
            0.25
        );
        assert_eq!(
            window_of(10, &[(10.0, 1.0, 1), (11.0, 0.0, 0)])
                .vector()
                .friction,
            0.0
        );
        assert_eq!(
            window_of(10, &[(10.0, 1.0, 1), (11.0, 0.0, 7)])
                .vector()
                .friction,
            0.0
        );
    }

    #[test]
    fn numpy_auto_bins_on_small_inputs() {
        // x = 0..9 (n = 10): ptp 9, Sturges 9 / (log2 10 + 1) = 2.0824,
        // IQR = 6.75 − 2.25 = 4.5, FD = 9 / 10^(1/3) = 4.177 → width 2.0824 → ⌈4.32⌉ = 5 bins.
        let x: Vec<f64> = (0..10).map(f64::from).collect();
        let bins = EqualWidthBins::auto(&x);
        assert_eq!(bins.count, 5);
        assert_eq!((bins.first, bins.last), (0.0, 9.0));
        assert_eq!(percentile(&x, 0.25), 2.25);
        assert_eq!(percentile(&x, 0.75), 6.75);
        // np.histogram(range(10), bins=5) == [2, 2, 2, 2, 2]
        let mut counts = Vec::new();
        bins.for_each_run(&x, |bin, count| counts.push((bin, count)));
        assert_eq!(counts, vec![(0, 2), (1, 2), (2, 2), (3, 2), (4, 2)]);
        // A constant input: one bin [x − 0.5, x + 0.5].
        let bins = EqualWidthBins::auto(&[3.0; 7]);
        assert_eq!((bins.count, bins.edge(0), bins.edge(1)), (1, 2.5, 3.5));
        // Mostly equal values: IQR 0, so Sturges: 1 / (log2 8 + 1) = 0.25 → 4 bins.
        let bins = EqualWidthBins::auto(&[0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 1.0]);
        assert_eq!(bins.count, 4);
    }

    #[test]
    fn entropy_of_hand_checkable_histograms() {
        // Two equal halves: 1 bit.
        let two_values = [-1.0, -1.0, -1.0, 1.0, 1.0, 1.0];
        assert!(close(shannon_entropy_bits(&two_values), 1.0, 1e-15));
        // 0..9 in 5 bins of 2: log2 5.
        let x: Vec<f64> = (0..10).map(f64::from).collect();
        assert!(close(shannon_entropy_bits(&x), 5f64.log2(), 1e-15));
        // One bin: 0.
        assert_eq!(shannon_entropy_bits(&[0.0; 9]), 0.0);
        // Through the window: 6 prices alternating → returns ±ln 2, two bins (3 and 2): H(0.6).
        let v = window_of(
            10,
            &[
                (1.0, 1.0, 1),
                (2.0, 1.0, 1),
                (1.0, 1.0, 1),
                (2.0, 1.0, 1),
                (1.0, 1.0, 1),
                (2.0, 1.0, 1),
            ],
        )
        .vector();
        let h = -(0.6f64 * 0.6f64.log2() + 0.4 * 0.4f64.log2());
        assert!(close(v.entropy, h, 1e-15));
        // 5 prices: entropy needs more than 5.
        let v = window_of(
            10,
            &[
                (1.0, 1.0, 1),
                (2.0, 1.0, 1),
                (1.0, 1.0, 1),
                (2.0, 1.0, 1),
                (1.0, 1.0, 1),
            ],
        )
        .vector();
        assert_eq!(v.entropy, 0.0);
    }

    #[test]
    fn nash_distance_from_the_price_mode() {
        // 11 prices: eight 10s, then 11, 12, 13 (last). Sturges: ptp 3 / (log2 11 + 1) = 0.6655;
        // IQR = 10.5 − 10 = 0.5, FD = 2 · 0.5 / 11^(1/3) = 0.4498 → width 0.4498, 7 bins of 3/7.
        // The fullest bin is [10, 10 + 3/7): mode 10 + 3/14.
        let prices = [
            10.0, 10.0, 10.0, 10.0, 10.0, 10.0, 10.0, 10.0, 11.0, 12.0, 13.0,
        ];
        let ticks: Vec<(f64, f64, u64)> = prices.iter().map(|&p| (p, 1.0, 1)).collect();
        let v = window_of(20, &ticks).vector();
        let mean = prices.iter().sum::<f64>() / 11.0;
        let std = (prices.iter().map(|p| (p - mean).powi(2)).sum::<f64>() / 11.0).sqrt();
        let mode = 10.0 + 3.0 / 14.0;
        assert!(
            close(v.nash_dist, (13.0 - mode) / std, 1e-12),
            "{}",
            v.nash_dist
        );
        // 10 prices: needs more than 10.
        assert_eq!(window_of(20, &ticks[..10]).vector().nash_dist, 0.0);
        // Ties for the fullest bin: the first (lowest) wins, as np.argmax.
        let tied = [1.0, 1.0, 2.0, 2.0];
        let bins = EqualWidthBins::new(1.0, 2.0, 2);
        let mut fullest = (u64::MAX, 0);
        bins.for_each_run(&tied, |bin, count| {
            if count > fullest.1 {
                fullest = (bin, count);
            }
        });
        assert_eq!(fullest, (0, 2));
    }

    #[test]
    fn nash_distance_is_zero_for_constant_prices() {
        let ticks = vec![(42.0, 1.0, 1); 30];
        assert_eq!(window_of(100, &ticks).vector().nash_dist, 0.0);
    }

    #[test]
    fn hill_estimator_on_hand_checkable_tails() {
        // 20 returns: p = 0.10 → k = max(2, 10) = 10. Magnitudes 20, 19, …, 1 (mixed signs):
        // the threshold is the 11th largest, 10; α = 1 / mean(ln(20/10 … 11/10)).
        let returns: Vec<f64> = (1..=20)
            .map(|i| {
                if i % 2 == 0 {
                    f64::from(i)
                } else {
                    -f64::from(i)
                }
            })
            .collect();
        let expected = 1.0 / ((11..=20).map(|i| (f64::from(i) / 10.0).ln()).sum::<f64>() / 10.0);
        assert!(close(hill_tail_index(&sorted(&returns)), expected, 1e-14));
        // 19 returns: the default.
        assert_eq!(hill_tail_index(&sorted(&returns[..19])), 3.0);
        // All magnitudes equal: the mean is 0 → the default.
        assert_eq!(hill_tail_index(&sorted(&[0.5; 40])), 3.0);
        // Threshold 0 (mostly zero returns) → the default.
        let mut mostly_zero = vec![0.0; 30];
        mostly_zero[..5].copy_from_slice(&[0.1, -0.2, 0.3, 0.4, -0.5]);
        assert_eq!(hill_tail_index(&sorted(&mostly_zero)), 3.0);
        // A Pareto-like tail far out: α clipped to 0.5; a flat-ish tail: clipped to 10.
        let mut wild: Vec<f64> = vec![1.0; 40];
        wild[..3].copy_from_slice(&[1e30, 1e20, 1e10]);
        assert_eq!(hill_tail_index(&sorted(&wild)), 0.5);
        let mut flat: Vec<f64> = vec![1.0; 40];
        flat[0] = 1.0001;
        assert_eq!(hill_tail_index(&sorted(&flat)), 10.0);
    }

    #[test]
    fn hill_tail_size_follows_n() {
        // k = ⌊n·p⌋ (≥ 10) and the threshold is the (k+1)-th largest: with magnitudes n, n−1, …, 1
        // the threshold is n − k; check k through it.
        for (n, k) in [
            (20usize, 10usize),
            (29, 10),
            (30, 10),
            (250, 12),
            (499, 24),
            (500, 15),
            (999, 29),
        ] {
            let returns: Vec<f64> = (1..=n).map(|i| i as f64).collect();
            let threshold = (n - k) as f64;
            let mean = ((n - k + 1)..=n)
                .map(|i| (i as f64 / threshold).ln())
                .sum::<f64>()
                / k as f64;
            assert!(
                close(
                    hill_tail_index(&returns),
                    (1.0 / mean).clamp(0.5, 10.0),
                    1e-12
                ),
                "n = {n}"
            );
        }
    }

    #[test]
    fn largest_magnitudes_come_in_descending_order() {
        let values = sorted(&[-5.0, -1.0, 0.0, 2.0, 3.0, -4.0, 6.0]);
        let order: Vec<f64> = LargestMagnitudes::new(&values).collect();
        assert_eq!(order, vec![6.0, 5.0, 4.0, 3.0, 2.0, 1.0, 0.0]);
    }

    #[test]
    fn regime_follows_alpha() {
        assert_eq!(Regime::from_alpha(3.0), Regime::LevyStable);
        let file = fixtures();
        for case in &file.cases {
            for e in &case.expected {
                assert_eq!(
                    e.vector.regime,
                    Regime::from_alpha(e.vector.alpha_coefficient)
                );
            }
        }
    }

    // --- numpy's arithmetic ------------------------------------------------------------------

    #[test]
    fn pairwise_sum_matches_its_definition_across_slice_splits() {
        let mut rng = SplitMix(11);
        for n in [0, 1, 7, 8, 9, 100, 128, 129, 300, 1000, 1001] {
            let values: Vec<f64> = (0..n).map(|_| rng.next_f64() * 1e3 - 1e-3).collect();
            let whole = pairwise_sum(&values, &[], |x| x);
            for split in [0, n / 3, n / 2, n] {
                let (head, tail) = values.split_at(split);
                assert_eq!(
                    pairwise_sum(head, tail, |x| x).to_bits(),
                    whole.to_bits(),
                    "n {n} split {split}"
                );
            }
            let naive: f64 = values.iter().sum();
            assert!(close(whole, naive, 1e-12));
        }
    }

    #[test]
    fn galloping_and_counting_give_the_same_histogram() {
        let mut rng = SplitMix(5);
        for round in 0..200 {
            let n = 2 + round * 7 % 900;
            let spread = [1e-3, 1.0, 1e3][round % 3];
            let mut values: Vec<f64> = (0..n)
                .map(|_| {
                    let u = rng.next_f64();
                    // Mix a body and a few far-out values, and repeated values.
                    if u < 0.05 {
                        (u - 0.025) * 1e3 * spread
                    } else {
                        ((u * 50.0).round() / 50.0 - 0.5) * spread
                    }
                })
                .collect();
            values.sort_by(f64::total_cmp);
            let bins = EqualWidthBins::auto(&values);
            let mut galloped = Vec::new();
            bins.gallop_runs(&values, &mut |bin, count| galloped.push((bin, count)));
            let mut counted = Vec::new();
            bins.counted_runs(&values, &mut |bin, count| counted.push((bin, count)));
            assert_eq!(galloped, counted, "round {round}");
            assert_eq!(galloped.iter().map(|r| r.1).sum::<usize>(), n);
        }
    }

    #[test]
    fn tiny_ranges_use_the_exact_counting_path() {
        // Prices that differ in the last bits: bins narrower than the edge rounding.
        let base = 100.0f64;
        let values: Vec<f64> = (0..50)
            .map(|i| base + f64::from(i % 7) * base * f64::EPSILON)
            .collect();
        let values = sorted(&values);
        let bins = EqualWidthBins::auto(&values);
        assert!(!bins.runs_are_contiguous());
        let mut total = 0;
        bins.for_each_run(&values, |_, count| total += count);
        assert_eq!(total, values.len());
    }
}
