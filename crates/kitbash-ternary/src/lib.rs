//! `kitbash-ternary`: bit-sliced ternary vectors, hat masks and top-k search, with SIMD kernels
//! chosen at run time and a scalar reference they are tested against.
//!
//! A *grain* is a vector of trits (−1, 0, +1) stored as two disjoint bit planes: the plus
//! plane has a bit set where the trit is +1, the minus plane where it is −1. The ghost daemon
//! keeps every grain in a [`GrainBank`], turns a query's text into a [`TernaryVector`] with
//! [`signature()`], applies the current [`HatMask`] and asks the bank for the top 3 grains by
//! ternary dot product:
//!
//! ```text
//! score(q, g) = pc((q+ & g+) | (q− & g−)) − pc((q+ & g−) | (q− & g+))
//! ```
//!
//! # Layout
//! - [`vector`]: [`TernaryVector`], packing to and from `i8` and Redis byte planes (bit order),
//!   dot product, agreement and Hamming counts, the seed's `ternary_value` and `confidence`.
//! - [`hat`]: [`HatMask`], 256-bit sign-flip masks; why they swap planes instead of XOR-ing.
//! - [`bank`]: [`GrainBank`], aligned structure-of-arrays storage, insert / update / remove,
//!   single, batch and multi-threaded top-k search.
//! - [`kernel`]: [`Kernel`], the scalar reference and the POPCNT, AVX2, AVX-512 and NEON
//!   kernels with run-time detection; the only module with `unsafe`.
//! - [`topk`]: [`Hit`] and the branch-light top-k selection (higher score, then lower id).
//! - [`signature`](mod@signature): signed feature hashing of text into trits (FNV-1a 64).
//! - [`bench`](mod@bench): the measurements behind `kitbash bench ternary`.
//! - [`error`]: the one error type, [`TernaryError`], and the dimension bound [`MAX_DIM`].
//!
//! **Invariants:** this crate does no I/O and depends on `std` alone; every vector keeps
//! `plus & minus == 0` and zero padding; every SIMD kernel returns exactly the scalar
//! reference's scores (property-tested), and a kernel the CPU lacks can never be called.
//!
//! # Performance
//! On a 2-core Zen 3 with AVX2 (figures and commands in `docs/BENCHMARKS.md`): top-3 over
//! 1,000 × 256-trit grains in ≈ 2.7 µs (≈ 23× a naive `i8` scan), over 10,000 × 4,096 trits
//! in ≈ 0.33 ms (at read speed when the bank comes from DRAM; 1.6× an L3-resident read, where
//! AVX2's table popcount is the limit). Measure with `cargo bench -p kitbash-ternary` or the
//! `bench_figures` example.
//!
//! # Example
//! Pack two grains from the byte planes Redis stores, apply a hat, search the top k:
//!
//! ```
//! use kitbash_ternary::{GrainBank, HatMask, SearchOptions, TernaryVector};
//!
//! # fn main() -> Result<(), kitbash_ternary::TernaryError> {
//! // 16 trits: trit i is bit (i % 8) of byte (i / 8) of each plane.
//! let g42 = TernaryVector::from_planes(16, &[0b0000_1111, 0], &[0, 0b1111_0000])?;
//! let g17 = TernaryVector::from_i8(&[-1, -1, -1, -1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0])?;
//! assert_eq!(g17.plus_bytes(), vec![0, 0]);
//! assert_eq!(g17.minus_bytes(), vec![0b0000_1111, 0]);
//!
//! let mut bank = GrainBank::new(16)?;
//! bank.insert(42, &g42)?;
//! bank.insert(17, &g17)?;
//!
//! // The query agrees with grain 42 on its first four trits.
//! let mut query = TernaryVector::zeros(16)?;
//! for i in 0..4 {
//!     query.set(i, 1)?;
//! }
//! let hits = bank.top_k(&query, 3)?;
//! assert_eq!((hits[0].id, hits[0].score), (42, 4));
//! assert_eq!((hits[1].id, hits[1].score), (17, -4));
//!
//! // A hat flipping trits 0..4 reverses the ranking; it costs O(dim) because it is applied to
//! // the query, which scores the same as applying it to every grain.
//! let mut mask = [0u8; 32];
//! mask[0] = 0b0000_1111;
//! let hat = HatMask::from_bytes(&mask)?;
//! let hits = bank.search(&query, &SearchOptions::top(1).with_hat(hat))?;
//! assert_eq!((hits[0].id, hits[0].score), (17, 4));
//! assert_eq!(query.with_hat(&hat).dot(&g17)?, query.dot(&g17.with_hat(&hat))?);
//! # Ok(())
//! # }
//! ```

pub mod bank;
pub mod bench;
pub mod error;
pub mod hat;
pub mod kernel;
pub mod signature;
pub mod topk;
pub mod vector;

pub use bank::{GrainBank, SearchOptions};
pub use error::{MAX_DIM, TernaryError};
pub use hat::{HAT_BITS, HAT_BYTES, HatMask};
pub use kernel::Kernel;
pub use signature::{SignatureOptions, signature, signature_with};
pub use topk::Hit;
pub use vector::{Agreement, PlaneSummary, TernaryVector, plane_bytes};
