//! The benchmarks' one seeded random generator: reproducible loads from a fixed seed
//! (`rand`'s `StdRng`, so every suite draws from the same generator). `kitbash-ternary` keeps
//! its own small xorshift in `kitbash_ternary::bench`: that crate depends on `std` only.

use rand::{Rng as _, SeedableRng};

/// A deterministic generator: the same seed gives the same load on every run and machine.
pub(crate) struct Rng(rand::rngs::StdRng);

impl Rng {
    /// A generator seeded with `seed`.
    pub(crate) fn new(seed: u64) -> Self {
        Self(rand::rngs::StdRng::seed_from_u64(seed))
    }

    /// 64 random bits.
    pub(crate) fn next(&mut self) -> u64 {
        self.0.random()
    }

    /// Uniform in (0, 1] (never 0, so `ln` of it is finite).
    pub(crate) fn unit(&mut self) -> f64 {
        1.0 - self.0.random::<f64>()
    }

    /// 64 lowercase hex digits (a sha256-shaped id).
    pub(crate) fn hex64(&mut self) -> String {
        format!(
            "{:016x}{:016x}{:016x}{:016x}",
            self.next(),
            self.next(),
            self.next(),
            self.next()
        )
    }
}
