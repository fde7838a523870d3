//! [`HatMask`]: a 256-bit persona mask that flips the sign of the trits under it.
//!
//! # What a hat does
//! A set mask bit flips the sign of the trit at that position: +1 becomes −1, −1 becomes +1
//! and 0 stays 0. In bit planes that is a **swap of the plus and minus planes under the mask**:
//!
//! ```text
//! plus'  = (plus  & !mask) | (minus & mask)
//! minus' = (minus & !mask) | (plus  & mask)
//! ```
//!
//! The seed sketches "XOR the mask into the grain bits". XOR-ing one mask into *both* planes
//! is right for non-zero trits (`(1, 0)` becomes `(0, 1)`) but wrong for zeros: `(0, 0)`
//! becomes `(1, 1)`, a trit that is +1 and −1 at once, which breaks the `plus & minus == 0`
//! invariant and turns every masked zero into a spurious match and mismatch in the dot product.
//! The swap keeps zeros zero and is its own inverse.
//!
//! # Masks and dimensions
//! Masks are 256 bits (the 32 bytes stored in `hat:{name}:mask`, same bit order as the planes:
//! bit `i` is bit `i % 8` of byte `i / 8`). Against a vector of `dim` trits:
//! - longer vectors (`dim > 256`): the mask **tiles**, trit `i` is flipped when mask bit
//!   `i % 256` is set;
//! - shorter vectors (`dim < 256`): the mask is **truncated**, bits `dim..256` are ignored.
//!
//! # Hats on queries, not grains
//! The dot product is unchanged when both operands have the same positions sign-flipped, and a
//! hat is an involution, so `dot(hat(q), g) == dot(q, hat(g))`. Search therefore applies the
//! hat to the query once (O(dim)) instead of to every grain (O(n·dim)).

use crate::error::TernaryError;

/// Bits in a hat mask.
pub const HAT_BITS: usize = 256;

/// Bytes in a hat mask as Redis stores it.
pub const HAT_BYTES: usize = HAT_BITS / 8;

const HAT_WORDS: usize = HAT_BITS / 64;

/// A 256-bit hat mask: set bits flip the sign of the trits under them.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, Default)]
pub struct HatMask {
    /// Bit `i` is bit `i % 64` of word `i / 64`.
    words: [u64; HAT_WORDS],
}

impl HatMask {
    /// The mask that flips nothing (applying it is the identity).
    pub const EMPTY: Self = Self {
        words: [0; HAT_WORDS],
    };

    /// The mask that flips every trit (applying it negates the vector).
    pub const FULL: Self = Self {
        words: [u64::MAX; HAT_WORDS],
    };

    /// Reads the 32 bytes stored in `hat:{name}:mask`.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, TernaryError> {
        if bytes.len() != HAT_BYTES {
            return Err(TernaryError::HatLength { found: bytes.len() });
        }
        let mut words = [0u64; HAT_WORDS];
        for (word, chunk) in words.iter_mut().zip(bytes.chunks_exact(8)) {
            let mut le = [0u8; 8];
            le.copy_from_slice(chunk);
            *word = u64::from_le_bytes(le);
        }
        Ok(Self { words })
    }

    /// A mask from its four little-endian words.
    pub const fn from_words(words: [u64; HAT_WORDS]) -> Self {
        Self { words }
    }

    /// The 32 bytes to store in `hat:{name}:mask`.
    pub fn to_bytes(&self) -> [u8; HAT_BYTES] {
        let mut out = [0u8; HAT_BYTES];
        for (chunk, word) in out.chunks_exact_mut(8).zip(self.words) {
            chunk.copy_from_slice(&word.to_le_bytes());
        }
        out
    }

    /// The mask's words.
    pub fn words(&self) -> &[u64; HAT_WORDS] {
        &self.words
    }

    /// Whether bit `index % 256` is set (the tiling rule).
    pub fn flips(&self, index: usize) -> bool {
        let i = index % HAT_BITS;
        self.words[i / 64] >> (i % 64) & 1 == 1
    }

    /// Number of set bits.
    pub fn count_ones(&self) -> u32 {
        self.words.iter().map(|w| w.count_ones()).sum()
    }

    /// Swaps the planes under the (tiled) mask. Padding stays zero because a swap of two zero
    /// bits is zero.
    pub(crate) fn apply_to_planes(&self, plus: &mut [u64], minus: &mut [u64]) {
        for (w, (p, m)) in plus.iter_mut().zip(minus.iter_mut()).enumerate() {
            let mask = self.words[w % HAT_WORDS];
            let (old_p, old_m) = (*p, *m);
            *p = (old_p & !mask) | (old_m & mask);
            *m = (old_m & !mask) | (old_p & mask);
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use crate::vector::TernaryVector;

    #[test]
    fn bytes_round_trip_and_length_is_checked() {
        let bytes: Vec<u8> = (0..32).collect();
        let mask = HatMask::from_bytes(&bytes).unwrap();
        assert_eq!(mask.to_bytes().to_vec(), bytes);
        assert!(mask.flips(8)); // byte 1 = 0b1 → bit 8
        assert!(!mask.flips(0));
        assert_eq!(
            HatMask::from_bytes(&[0; 31]),
            Err(TernaryError::HatLength { found: 31 })
        );
    }

    #[test]
    fn swap_keeps_zeros_where_xor_would_not() {
        let v = TernaryVector::from_i8(&[1, -1, 0, 1]).unwrap();
        let flipped = v.with_hat(&HatMask::FULL);
        assert_eq!(flipped.to_i8(), vec![-1, 1, 0, -1]);
        // What XOR-ing the mask into both planes would give: trit 2 becomes +1 and −1.
        let xor_plus = v.plus_words()[0] ^ 0b1111;
        let xor_minus = v.minus_words()[0] ^ 0b1111;
        assert_ne!(xor_plus & xor_minus, 0);
    }

    #[test]
    fn mask_tiles_every_256_trits() {
        let mask = HatMask::from_words([1, 0, 0, 1 << 63]);
        let v = TernaryVector::from_i8(&vec![1; 600])
            .unwrap()
            .with_hat(&mask);
        let t = v.to_i8();
        for (i, &trit) in t.iter().enumerate() {
            let expect = if i % 256 == 0 || i % 256 == 255 {
                -1
            } else {
                1
            };
            assert_eq!(trit, expect, "trit {i}");
        }
    }
}
