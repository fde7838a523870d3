//! Scoring kernels: the scalar reference, x86-64 POPCNT / AVX2 / AVX-512 and aarch64 NEON,
//! chosen at run time.
//!
//! Every kernel computes the same thing: for each grain record in a block of the bank, the
//! ternary dot product with one prepared query, written to an `i32` per grain. Top-k selection
//! is shared code outside the kernels, so two kernels that agree on scores agree on results.
//!
//! Kernels work on the bank's storage layout: a grain record is `2 * stride` words, the
//! non-zero plane `g± = g+ | g−` then the plus plane `g+`, each padded with zero words to
//! `stride`, a multiple of `LANE_WORDS` (four words, one 256-bit register). Queries are
//! prepared to the same stride. Per word (or register) every fast kernel computes
//!
//! ```text
//! both     = q± & g±             // both trits non-zero
//! differ   = q+ ^ g+             // where both are non-zero: the signs differ
//! agree    = both & !differ      // = (q+ & g+) | (q− & g−)
//! disagree = both &  differ      // = (q+ & g−) | (q− & g+)
//! score   += pc(agree) − pc(disagree)
//! ```
//!
//! four logic operations instead of the textbook six, on two loaded planes.
//!
//! **Invariant:** a kernel that the CPU lacks is never called: the dispatcher only accepts a
//! `Resolved` kernel, which only `Kernel::resolve` makes, after checking the CPU.
//!
//! The `unsafe` code lives in the architecture modules (`x86.rs`, `neon.rs`) and nowhere else
//! in the crate.

use std::fmt;

use crate::error::TernaryError;
use crate::hat::HatMask;
use crate::vector::TernaryVector;

#[cfg(target_arch = "aarch64")]
mod neon;
#[cfg(target_arch = "x86_64")]
mod x86;

/// Words per SIMD lane group: each plane of a stored record is padded to a multiple of this.
pub(crate) const LANE_WORDS: usize = 4;

/// A scoring kernel. Every variant exists on every platform so code naming one compiles
/// everywhere; [`Kernel::is_available`] says whether this CPU can run it.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub enum Kernel {
    /// Portable Rust, `u64::count_ones` on the baseline target (no POPCNT instruction on
    /// plain x86-64). The reference every other kernel is tested against.
    Scalar,
    /// x86-64 scalar loop compiled with the POPCNT instruction.
    Popcnt,
    /// x86-64 AVX2: nibble-table popcount (`vpshufb`) with byte accumulators.
    Avx2,
    /// x86-64 AVX-512F with VPOPCNTDQ: 512-bit lanes, hardware 64-bit popcount.
    Avx512,
    /// aarch64 NEON: `cnt` byte popcount with pairwise widening accumulation.
    Neon,
}

impl Kernel {
    /// Every kernel; on any one CPU, the available ones are listed slowest first.
    pub const ALL: [Kernel; 5] = [
        Kernel::Scalar,
        Kernel::Popcnt,
        Kernel::Avx2,
        Kernel::Avx512,
        Kernel::Neon,
    ];

    /// The fastest kernel this CPU can run.
    pub fn detect() -> Kernel {
        // Measured (docs/BENCHMARKS.md): AVX2 beats POPCNT, which beats the portable loop, at
        // 256 and 4,096 trits alike; on an AVX-512 VPOPCNTDQ Xeon (session 15) AVX-512 beats
        // AVX2 at both sizes (0.63–0.65× its time at 256 trits, 0.76–0.85× at 4,096).
        [Kernel::Avx512, Kernel::Avx2, Kernel::Neon, Kernel::Popcnt]
            .into_iter()
            .find(|k| k.is_available())
            .unwrap_or(Kernel::Scalar)
    }

    /// Every kernel this CPU can run, the scalar reference first.
    pub fn available() -> Vec<Kernel> {
        Kernel::ALL
            .into_iter()
            .filter(|k| k.is_available())
            .collect()
    }

    /// Whether this CPU can run the kernel.
    pub fn is_available(self) -> bool {
        match self {
            Kernel::Scalar => true,
            #[cfg(target_arch = "x86_64")]
            Kernel::Popcnt => std::arch::is_x86_feature_detected!("popcnt"),
            #[cfg(target_arch = "x86_64")]
            Kernel::Avx2 => std::arch::is_x86_feature_detected!("avx2"),
            #[cfg(target_arch = "x86_64")]
            Kernel::Avx512 => {
                std::arch::is_x86_feature_detected!("avx512f")
                    && std::arch::is_x86_feature_detected!("avx512vpopcntdq")
            }
            // NEON is part of the aarch64 baseline the standard targets are built for.
            #[cfg(target_arch = "aarch64")]
            Kernel::Neon => cfg!(target_feature = "neon"),
            #[allow(unreachable_patterns)]
            _ => false,
        }
    }

    /// A short lowercase name (`scalar`, `popcnt`, `avx2`, `avx512`, `neon`).
    pub fn name(self) -> &'static str {
        match self {
            Kernel::Scalar => "scalar",
            Kernel::Popcnt => "popcnt",
            Kernel::Avx2 => "avx2",
            Kernel::Avx512 => "avx512",
            Kernel::Neon => "neon",
        }
    }

    /// Parses a [`Kernel::name`].
    pub fn from_name(name: &str) -> Option<Kernel> {
        Kernel::ALL.into_iter().find(|k| k.name() == name)
    }

    /// Checks the CPU and returns the token the dispatcher requires.
    pub(crate) fn resolve(self) -> Result<Resolved, TernaryError> {
        if self.is_available() {
            Ok(Resolved(self))
        } else {
            Err(TernaryError::KernelUnavailable(self))
        }
    }
}

impl fmt::Display for Kernel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A kernel this CPU is known to support. The field is private to this module, so the only way
/// to make one is [`Kernel::resolve`].
#[derive(Clone, Copy, Debug)]
pub(crate) struct Resolved(Kernel);

impl Resolved {
    /// The kernel behind the token.
    pub(crate) fn kernel(self) -> Kernel {
        self.0
    }
}

/// A query laid out for the kernels: planes padded to the bank's stride, the hat already
/// applied, and the masks the kernels want precomputed. One allocation holds all five planes.
#[derive(Clone, Debug)]
pub(crate) struct PreparedQuery {
    /// Words per plane.
    stride: usize,
    /// Five planes of `stride` words, in order: plus (+1), minus (−1), non-zero
    /// (`plus | minus`), non-zero with only the low nibble of every byte kept, and with only
    /// the high nibble kept. ANDed into a grain plane, the last two yield table indices
    /// directly (the AVX2 kernel's nibble popcount).
    words: Vec<u64>,
}

/// The low nibble of every byte.
const LOW_NIBBLES: u64 = 0x0f0f_0f0f_0f0f_0f0f;

impl PreparedQuery {
    /// Pads `query` to `stride` words per plane and applies `hat` to it.
    pub(crate) fn new(query: &TernaryVector, hat: Option<&HatMask>, stride: usize) -> Self {
        let mut words = vec![0u64; 5 * stride];
        let (plus, rest) = words.split_at_mut(stride);
        let (minus, rest) = rest.split_at_mut(stride);
        let (nonzero, rest) = rest.split_at_mut(stride);
        let (lo, hi) = rest.split_at_mut(stride);
        let used = query.plus_words().len().min(stride);
        plus[..used].copy_from_slice(&query.plus_words()[..used]);
        minus[..used].copy_from_slice(&query.minus_words()[..used]);
        if let Some(hat) = hat {
            hat.apply_to_planes(plus, minus);
        }
        for i in 0..stride {
            nonzero[i] = plus[i] | minus[i];
            lo[i] = nonzero[i] & LOW_NIBBLES;
            hi[i] = nonzero[i] & !LOW_NIBBLES;
        }
        Self { stride, words }
    }

    /// Words per plane.
    pub(crate) fn stride(&self) -> usize {
        self.stride
    }

    fn plane(&self, index: usize) -> &[u64] {
        &self.words[index * self.stride..(index + 1) * self.stride]
    }

    /// Bit set: the query trit is +1.
    pub(crate) fn plus(&self) -> &[u64] {
        self.plane(0)
    }

    /// Bit set: the query trit is −1.
    pub(crate) fn minus(&self) -> &[u64] {
        self.plane(1)
    }

    /// `plus | minus`.
    pub(crate) fn nonzero(&self) -> &[u64] {
        self.plane(2)
    }

    /// `nonzero` with the high nibble of every byte cleared.
    pub(crate) fn nonzero_lo(&self) -> &[u64] {
        self.plane(3)
    }

    /// `nonzero` with the low nibble of every byte cleared.
    pub(crate) fn nonzero_hi(&self) -> &[u64] {
        self.plane(4)
    }
}

/// Scores every record of `records` (each `2 * q.stride()` words) against `q` into `out`,
/// one `i32` per record. `records.len()` must be `out.len() * 2 * q.stride()`.
pub(crate) fn score_records(kernel: Resolved, q: &PreparedQuery, records: &[u64], out: &mut [i32]) {
    let stride = q.stride();
    debug_assert_eq!(stride % LANE_WORDS, 0);
    debug_assert_eq!(records.len(), out.len() * 2 * stride);
    if stride == 0 {
        out.fill(0);
        return;
    }
    match kernel.0 {
        #[cfg(target_arch = "x86_64")]
        Kernel::Popcnt => x86::score_popcnt(kernel, q, records, out),
        #[cfg(target_arch = "x86_64")]
        Kernel::Avx2 => x86::score_avx2(kernel, q, records, out),
        #[cfg(target_arch = "x86_64")]
        Kernel::Avx512 => x86::score_avx512(kernel, q, records, out),
        #[cfg(target_arch = "aarch64")]
        Kernel::Neon => neon::score_neon(q, records, out),
        _ => score_scalar(q, records, out),
    }
}

/// The reference: the dot product exactly as the design states it,
/// `pc((q+ & g+) | (q− & g−)) − pc((q+ & g−) | (q− & g+))`, word by word, after
/// recovering the grain's minus plane from the stored non-zero plane.
fn score_scalar(q: &PreparedQuery, records: &[u64], out: &mut [i32]) {
    let stride = q.stride();
    for (record, score) in records.chunks_exact(2 * stride).zip(out.iter_mut()) {
        let (gn, gp) = record.split_at(stride);
        let mut agree = 0u32;
        let mut disagree = 0u32;
        let (qp, qm) = (q.plus(), q.minus());
        for w in 0..stride {
            let gm = gn[w] & !gp[w];
            agree += ((qp[w] & gp[w]) | (qm[w] & gm)).count_ones();
            disagree += ((qp[w] & gm) | (qm[w] & gp[w])).count_ones();
        }
        *score = agree as i32 - disagree as i32;
    }
}
