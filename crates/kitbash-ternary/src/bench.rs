//! Measurements behind `kitbash bench ternary`: top-3 search against baselines timed in the
//! same run on the same machine, on one core, with `std::time::Instant`.
//!
//! Each figure is a median (p50) over many repetitions, in microseconds, with its baseline:
//!
//! | metric | value | baseline | target ratio |
//! |---|---|---|---|
//! | `top3_10k_4096` | top-3 over 10,000 × 4,096-trit grains | a plain read (XOR) of the same plane words: the memory-bandwidth bound | ≤ 1.2 |
//! | `top3_1k_256_vs_naive` | top-3 over 1,000 × 256-trit grains | a naive `i8` multiply-accumulate scan, then top-3 | ≤ 0.05, and ≤ 10 µs |
//! | `batch64_per_query_10k_4096` | a batch search of 64 queries ÷ 64 | one single-query search | < 1 |
//!
//! and, for the record: `top3_10k_4096_cold`, the same search and read each timed after
//! evicting the caches (64 MB of other reads), i.e. from DRAM; the searches per available
//! kernel; against the naive scan at 4,096 trits; and split over two threads. Baseline and
//! measured code are timed in alternation, so drift on a shared machine hits both (except
//! against the 41 MB naive scan at 4,096 trits, which would evict the bank: each side gets its
//! own loop there). Data is
//! pseudo-random from a fixed seed ([`XorShift64`]): every run measures the same bytes.
//!
//! The 10 MB bank of `top3_10k_4096` fits the L3 cache of many servers: there the warm
//! "plain read" runs at L3 rather than DRAM bandwidth and the search is compute-bound, which
//! the `_cold` figure separates out.

use std::hint::black_box;
use std::time::Instant;

use crate::bank::{GrainBank, SearchOptions};
use crate::kernel::Kernel;
use crate::vector::TernaryVector;

/// One measured figure; `kitbash bench ternary --json` prints it with `ratio = value / baseline`.
#[derive(Clone, Debug, PartialEq)]
pub struct BenchFigure {
    /// Stable metric name, e.g. `top3_10k_4096`.
    pub metric: &'static str,
    /// The measured p50.
    pub value: f64,
    /// Unit of `value` and `baseline` (`us`).
    pub unit: &'static str,
    /// The baseline's p50, same unit, same run.
    pub baseline: f64,
    /// Extra numbers: p99s, throughput, sizes.
    pub extra: Vec<(&'static str, f64)>,
}

impl BenchFigure {
    /// `value / baseline`.
    pub fn ratio(&self) -> f64 {
        self.value / self.baseline
    }
}

/// How long to measure.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BenchOptions {
    /// Five times the repetitions of the default run (which takes a few seconds).
    pub long: bool,
}

/// A xorshift64 generator: deterministic benchmark data without a `rand` dependency.
#[derive(Clone, Debug)]
pub struct XorShift64(u64);

impl XorShift64 {
    /// A generator from `seed` (0 is replaced by a fixed non-zero seed).
    pub fn new(seed: u64) -> Self {
        Self(if seed == 0 {
            0x9e37_79b9_7f4a_7c15
        } else {
            seed
        })
    }

    /// The next 64 pseudo-random bits.
    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }
}

/// A pseudo-random vector: each trit is +1 or −1 with probability 1/4 each, else 0.
pub fn random_vector(rng: &mut XorShift64, dim: usize) -> TernaryVector {
    let words = dim.div_ceil(64);
    let mut plus = Vec::with_capacity(words);
    let mut minus = Vec::with_capacity(words);
    for w in 0..words {
        let valid = if (w + 1) * 64 <= dim {
            u64::MAX
        } else {
            (1u64 << (dim % 64)) - 1
        };
        let (a, b) = (rng.next_u64(), rng.next_u64());
        plus.push(a & !b & valid);
        minus.push(!a & b & valid);
    }
    // Disjoint by construction and padding is masked, so this cannot fail; fall back to zeros
    // rather than panic if it ever did.
    TernaryVector::from_words(dim, plus, minus)
        .or_else(|_| TernaryVector::zeros(dim))
        .unwrap_or_default()
}

/// A bank of `n` pseudo-random grains with ids `0..n`, plus the same grains as `i8` rows
/// (for the naive baseline) when `with_i8` is set.
fn random_bank(rng: &mut XorShift64, n: usize, dim: usize, with_i8: bool) -> (GrainBank, Vec<i8>) {
    let mut bank = GrainBank::with_capacity(dim, n).unwrap_or_else(|_| empty_bank());
    let mut rows = Vec::with_capacity(if with_i8 { n * dim } else { 0 });
    for id in 0..n as u64 {
        let grain = random_vector(rng, dim);
        if with_i8 {
            rows.extend(grain.to_i8());
        }
        // Ids are distinct and dimensions match, so insert cannot fail.
        let _ = bank.insert(id, &grain);
    }
    (bank, rows)
}

fn empty_bank() -> GrainBank {
    // Dimension 0 is always valid.
    GrainBank::new(0).unwrap_or_else(|_| unreachable!("dimension 0 is always valid"))
}

/// The baseline for memory-bound searches: XOR of every word, eight independent lanes.
pub fn plain_read(words: &[u64]) -> u64 {
    let mut acc = [0u64; 8];
    let (chunks, rest) = words.as_chunks::<8>();
    for chunk in chunks {
        for (a, w) in acc.iter_mut().zip(chunk) {
            *a ^= w;
        }
    }
    rest.iter().chain(&acc).fold(0, |x, w| x ^ w)
}

/// The naive baseline: one `i8` per trit, multiply-accumulate, then top-3 (higher score, then
/// lower id; ids are row numbers). Returns the three ids.
pub fn naive_top3(query: &[i8], rows: &[i8]) -> [u64; 3] {
    let mut best = [(i32::MIN, u64::MAX); 3];
    if query.is_empty() {
        return [u64::MAX; 3];
    }
    for (id, row) in rows.chunks_exact(query.len()).enumerate() {
        let score: i32 = query
            .iter()
            .zip(row)
            .map(|(&a, &b)| i32::from(a) * i32::from(b))
            .sum();
        let hit = (score, id as u64);
        let better = |a: (i32, u64), b: (i32, u64)| a.0 > b.0 || (a.0 == b.0 && a.1 < b.1);
        if better(hit, best[2]) {
            best[2] = hit;
            if better(best[2], best[1]) {
                best.swap(1, 2);
                if better(best[1], best[0]) {
                    best.swap(0, 1);
                }
            }
        }
    }
    best.map(|(_, id)| id)
}

/// p50, p99 and minimum of repeated timings, in microseconds.
#[derive(Clone, Copy, Debug)]
struct Timing {
    p50: f64,
    p99: f64,
}

fn timing(mut samples: Vec<f64>) -> Timing {
    samples.sort_by(f64::total_cmp);
    let at = |q: f64| {
        let i = ((samples.len() as f64 - 1.0) * q).round() as usize;
        samples.get(i).copied().unwrap_or(f64::NAN)
    };
    Timing {
        p50: at(0.5),
        p99: at(0.99),
    }
}

fn time_us(f: &mut impl FnMut()) -> f64 {
    let start = Instant::now();
    f();
    start.elapsed().as_secs_f64() * 1e6
}

/// Times `a` and `b` in alternation, each right after `evict` (untimed), `reps` times each.
fn measure_pair_cold(
    reps: usize,
    mut evict: impl FnMut(),
    mut a: impl FnMut(),
    mut b: impl FnMut(),
) -> (Timing, Timing) {
    let mut ta = Vec::with_capacity(reps);
    let mut tb = Vec::with_capacity(reps);
    for _ in 0..reps {
        evict();
        ta.push(time_us(&mut a));
        evict();
        tb.push(time_us(&mut b));
    }
    (timing(ta), timing(tb))
}

/// Times `f` alone, `reps` times after a short warm-up.
fn measure(reps: usize, mut f: impl FnMut()) -> Timing {
    for _ in 0..(reps / 10).max(2) {
        f();
    }
    timing((0..reps).map(|_| time_us(&mut f)).collect())
}

/// Bytes read between cold repetitions: twice the 32 MB L3 of the machines benched.
const EVICT_BYTES: usize = 64 << 20;

/// Times `a` and `b` in alternation, `reps` times each after a short warm-up.
fn measure_pair(reps: usize, mut a: impl FnMut(), mut b: impl FnMut()) -> (Timing, Timing) {
    for _ in 0..(reps / 10).max(2) {
        a();
        b();
    }
    let mut ta = Vec::with_capacity(reps);
    let mut tb = Vec::with_capacity(reps);
    for _ in 0..reps {
        ta.push(time_us(&mut a));
        tb.push(time_us(&mut b));
    }
    (timing(ta), timing(tb))
}

fn figure(
    metric: &'static str,
    value: Timing,
    baseline: Timing,
    extra: Vec<(&'static str, f64)>,
) -> BenchFigure {
    let mut all = vec![("p99", value.p99), ("baseline_p99", baseline.p99)];
    all.extend(extra);
    BenchFigure {
        metric,
        value: value.p50,
        unit: "us",
        baseline: baseline.p50,
        extra: all,
    }
}

fn metric_10k(kernel: Kernel) -> &'static str {
    match kernel {
        Kernel::Scalar => "top3_10k_4096_kernel_scalar",
        Kernel::Popcnt => "top3_10k_4096_kernel_popcnt",
        Kernel::Avx2 => "top3_10k_4096_kernel_avx2",
        Kernel::Avx512 => "top3_10k_4096_kernel_avx512",
        Kernel::Neon => "top3_10k_4096_kernel_neon",
    }
}

fn metric_1k(kernel: Kernel) -> &'static str {
    match kernel {
        Kernel::Scalar => "top3_1k_256_kernel_scalar",
        Kernel::Popcnt => "top3_1k_256_kernel_popcnt",
        Kernel::Avx2 => "top3_1k_256_kernel_avx2",
        Kernel::Avx512 => "top3_1k_256_kernel_avx512",
        Kernel::Neon => "top3_1k_256_kernel_neon",
    }
}

/// A kernel's position in [`Kernel::ALL`], reported as the `kernel` extra.
fn kernel_code(kernel: Kernel) -> f64 {
    Kernel::ALL
        .iter()
        .position(|&k| k == kernel)
        .map_or(-1.0, |i| i as f64)
}

/// Runs every measurement and returns the figures (a few seconds by default).
pub fn run(opts: &BenchOptions) -> Vec<BenchFigure> {
    let scale = if opts.long { 5 } else { 1 };
    let mut rng = XorShift64::new(0x6b69_7462_6173_6821);
    let mut figures = Vec::new();
    let detected = Kernel::detect();
    let kernel_extra = ("kernel", kernel_code(detected));

    // --- 1,000 × 256 trits: the ghost daemon's default shape. ---
    {
        let (bank, rows) = random_bank(&mut rng, 1_000, 256, true);
        let query = random_vector(&mut rng, 256);
        let query_i8 = query.to_i8();
        let top3 = SearchOptions::top(3);
        let search = || {
            black_box(bank.search(black_box(&query), &top3).ok());
        };
        let naive = || {
            black_box(naive_top3(black_box(&query_i8), black_box(&rows)));
        };
        let (fast, slow) = measure_pair(3_000 * scale, search, naive);
        let (_, read) = measure_pair(3_000 * scale, search, || {
            black_box(plain_read(black_box(bank.raw_words())));
        });
        figures.push(figure(
            "top3_1k_256_vs_naive",
            fast,
            slow,
            vec![kernel_extra, ("plain_read_us", read.p50)],
        ));
        for kernel in Kernel::available() {
            let opts = top3.with_kernel(kernel);
            let (t, naive_t) = measure_pair(
                1_000 * scale,
                || {
                    black_box(bank.search(black_box(&query), &opts).ok());
                },
                naive,
            );
            figures.push(figure(metric_1k(kernel), t, naive_t, vec![]));
        }
    }

    // --- 10,000 × 4,096 trits: 10 MB of planes, the memory-bound shape. ---
    {
        let (bank, _) = random_bank(&mut rng, 10_000, 4_096, false);
        let query = random_vector(&mut rng, 4_096);
        let top3 = SearchOptions::top(3);
        let bytes = std::mem::size_of_val(bank.raw_words()) as f64;
        let search = || {
            black_box(bank.search(black_box(&query), &top3).ok());
        };
        let read = || {
            black_box(plain_read(black_box(bank.raw_words())));
        };
        let (fast, base) = measure_pair(300 * scale, search, read);
        figures.push(figure(
            "top3_10k_4096",
            fast,
            base,
            vec![
                kernel_extra,
                ("search_gbytes_per_s", bytes / fast.p50 / 1e3),
                ("read_gbytes_per_s", bytes / base.p50 / 1e3),
            ],
        ));
        for kernel in Kernel::available() {
            let opts = top3.with_kernel(kernel);
            let (t, b) = measure_pair(
                100 * scale,
                || {
                    black_box(bank.search(black_box(&query), &opts).ok());
                },
                read,
            );
            figures.push(figure(metric_10k(kernel), t, b, vec![]));
        }

        let two = top3.with_threads(2);
        let (t2, t1) = measure_pair(
            200 * scale,
            || {
                black_box(bank.search(black_box(&query), &two).ok());
            },
            search,
        );
        figures.push(figure("top3_10k_4096_threads2_vs_1", t2, t1, vec![]));

        let scratch: Vec<u64> = (0..EVICT_BYTES / 8).map(|i| i as u64).collect();
        let (cold, cold_read) = measure_pair_cold(
            30 * scale,
            || {
                black_box(plain_read(black_box(&scratch)));
            },
            search,
            read,
        );
        figures.push(figure(
            "top3_10k_4096_cold",
            cold,
            cold_read,
            vec![
                ("search_gbytes_per_s", bytes / cold.p50 / 1e3),
                ("read_gbytes_per_s", bytes / cold_read.p50 / 1e3),
            ],
        ));

        let queries: Vec<TernaryVector> = (0..64).map(|_| random_vector(&mut rng, 4_096)).collect();
        let (batch, single) = measure_pair(
            15 * scale,
            || {
                black_box(bank.search_batch(black_box(&queries), &top3).ok());
            },
            || {
                for q in &queries {
                    black_box(bank.search(black_box(q), &top3).ok());
                }
            },
        );
        let per_query = |t: Timing| Timing {
            p50: t.p50 / 64.0,
            p99: t.p99 / 64.0,
        };
        figures.push(figure(
            "batch64_per_query_10k_4096",
            per_query(batch),
            per_query(single),
            vec![("queries", 64.0)],
        ));
    }

    // --- The naive scan at 4,096 trits (41 MB of i8): each side timed in its own loop, so
    // the naive scan's 41 MB do not evict the bank between searches. ---
    {
        let (bank, rows) = random_bank(&mut rng, 10_000, 4_096, true);
        let query = random_vector(&mut rng, 4_096);
        let query_i8 = query.to_i8();
        let top3 = SearchOptions::top(3);
        let naive = measure(10 * scale, || {
            black_box(naive_top3(black_box(&query_i8), black_box(&rows)));
        });
        let fast = measure(100 * scale, || {
            black_box(bank.search(black_box(&query), &top3).ok());
        });
        figures.push(figure("top3_10k_4096_vs_naive", fast, naive, vec![]));
    }

    figures
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn naive_baseline_agrees_with_the_bank() {
        let mut rng = XorShift64::new(7);
        let (bank, rows) = random_bank(&mut rng, 300, 100, true);
        let query = random_vector(&mut rng, 100);
        let hits = bank.top_k(&query, 3).unwrap();
        let ids: Vec<u64> = hits.iter().map(|h| h.id).collect();
        assert_eq!(naive_top3(&query.to_i8(), &rows).to_vec(), ids);
    }
}
