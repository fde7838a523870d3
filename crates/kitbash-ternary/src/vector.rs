//! [`TernaryVector`]: a vector of trits stored as two disjoint bit planes, and its scalar maths.
//!
//! # Bit order (part of the data contract)
//! Trit `i` lives in bit `i % 8` of byte `i / 8` of each plane (little-endian bit order), and
//! the bytes are read little-endian into 64-bit words, so trit `i` is bit `i % 64` of word
//! `i / 64`. The plus plane has a 1 where the trit is +1, the minus plane where it is −1; a trit
//! is never set in both, and bits at or beyond the dimension (the padding of the last byte and
//! word) are always zero. The byte form is what Redis stores in `grain:{id}:bits:+` and
//! `grain:{id}:bits:-`: exactly `ceil(dim / 8)` bytes each.

use crate::error::{MAX_DIM, TernaryError};
use crate::hat::HatMask;

/// Number of 64-bit words a plane of `dim` trits needs.
pub(crate) const fn words_for(dim: usize) -> usize {
    dim.div_ceil(64)
}

/// Number of bytes a plane of `dim` trits needs (`ceil(dim / 8)`).
pub const fn plane_bytes(dim: usize) -> usize {
    dim.div_ceil(8)
}

/// A vector of `dim` trits (−1, 0, +1) in two bit planes of `u64` words.
///
/// Invariants, kept by every constructor and method: `plus & minus == 0` word by word, both
/// planes are `ceil(dim / 64)` words long, and every bit at or beyond `dim` is zero.
#[derive(Clone, PartialEq, Eq, Hash, Debug, Default)]
pub struct TernaryVector {
    /// Number of trits.
    dim: usize,
    /// Bit `i` set: trit `i` is +1.
    plus: Vec<u64>,
    /// Bit `i` set: trit `i` is −1.
    minus: Vec<u64>,
}

/// How two vectors compare trit by trit.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, Default)]
pub struct Agreement {
    /// Positions where both trits are non-zero with the same sign.
    pub agree: u32,
    /// Positions where both trits are non-zero with opposite signs.
    pub disagree: u32,
    /// Positions where the trits differ at all (including zero against non-zero): the Hamming
    /// distance over the alphabet {−1, 0, +1}.
    pub hamming: u32,
}

impl Agreement {
    /// The ternary dot product: `agree − disagree`.
    pub fn dot(&self) -> i32 {
        // Both are at most MAX_DIM (2^24), so the difference fits an i32.
        self.agree as i32 - self.disagree as i32
    }
}

/// The per-grain summary the seed keeps in `grain:{id}:sig`.
#[derive(Clone, Copy, PartialEq, Debug, Default)]
pub struct PlaneSummary {
    /// `pc+`: trits equal to +1.
    pub plus: u32,
    /// `pc−`: trits equal to −1.
    pub minus: u32,
    /// `(pc+ − pc−) / (pc+ + pc−)`, 0 when the vector is all zeros.
    pub ternary_value: f64,
    /// `min(1, (pc+ + pc−) / dim)`, 0 when the dimension is 0.
    pub confidence: f64,
}

impl PlaneSummary {
    /// `pc+ + pc−`: the number of non-zero trits (the seed's `popcount`).
    pub fn popcount(&self) -> u32 {
        self.plus + self.minus
    }
}

fn check_dim(dim: usize) -> Result<(), TernaryError> {
    if dim > MAX_DIM {
        Err(TernaryError::DimensionTooLarge { dim })
    } else {
        Ok(())
    }
}

/// Bits of the last word that lie inside the dimension (all ones when `dim % 64 == 0`).
fn last_word_mask(dim: usize) -> u64 {
    match dim % 64 {
        0 => u64::MAX,
        r => (1u64 << r) - 1,
    }
}

fn popcount(words: &[u64]) -> u32 {
    words.iter().map(|w| w.count_ones()).sum()
}

impl TernaryVector {
    /// An all-zero vector of `dim` trits.
    pub fn zeros(dim: usize) -> Result<Self, TernaryError> {
        check_dim(dim)?;
        let words = words_for(dim);
        Ok(Self {
            dim,
            plus: vec![0; words],
            minus: vec![0; words],
        })
    }

    /// Packs one `i8` per trit; every value must be −1, 0 or 1.
    pub fn from_i8(trits: &[i8]) -> Result<Self, TernaryError> {
        let mut v = Self::zeros(trits.len())?;
        for (i, &t) in trits.iter().enumerate() {
            let bit = 1u64 << (i % 64);
            match t {
                1 => v.plus[i / 64] |= bit,
                -1 => v.minus[i / 64] |= bit,
                0 => {}
                value => return Err(TernaryError::InvalidTrit { index: i, value }),
            }
        }
        Ok(v)
    }

    /// Unpacks to one `i8` per trit.
    pub fn to_i8(&self) -> Vec<i8> {
        (0..self.dim)
            .map(|i| {
                let bit = 1u64 << (i % 64);
                if self.plus[i / 64] & bit != 0 {
                    1
                } else if self.minus[i / 64] & bit != 0 {
                    -1
                } else {
                    0
                }
            })
            .collect()
    }

    /// Builds a vector from the two byte planes stored in Redis (see the module docs for the
    /// bit order). Each plane must be exactly `ceil(dim / 8)` bytes, the planes must be
    /// disjoint, and bits at or beyond `dim` must be zero.
    pub fn from_planes(dim: usize, plus: &[u8], minus: &[u8]) -> Result<Self, TernaryError> {
        check_dim(dim)?;
        let expected = plane_bytes(dim);
        if plus.len() != expected || minus.len() != expected {
            return Err(TernaryError::PlaneLength {
                expected,
                plus: plus.len(),
                minus: minus.len(),
            });
        }
        Self::from_words(dim, pack_words(plus), pack_words(minus))
    }

    /// Builds a vector from plane words (trit `i` = bit `i % 64` of word `i / 64`). Each plane
    /// must be exactly `ceil(dim / 64)` words, disjoint, with zero padding.
    pub fn from_words(dim: usize, plus: Vec<u64>, minus: Vec<u64>) -> Result<Self, TernaryError> {
        check_dim(dim)?;
        let words = words_for(dim);
        if plus.len() != words || minus.len() != words {
            return Err(TernaryError::PlaneLength {
                expected: plane_bytes(dim),
                plus: plus.len() * 8,
                minus: minus.len() * 8,
            });
        }
        for (w, (&p, &m)) in plus.iter().zip(&minus).enumerate() {
            let both = p & m;
            if both != 0 {
                return Err(TernaryError::Overlap {
                    index: w * 64 + both.trailing_zeros() as usize,
                });
            }
        }
        if let (Some(&p), Some(&m)) = (plus.last(), minus.last()) {
            let outside = (p | m) & !last_word_mask(dim);
            if outside != 0 {
                return Err(TernaryError::PaddingSet {
                    index: (words - 1) * 64 + outside.trailing_zeros() as usize,
                });
            }
        }
        Ok(Self { dim, plus, minus })
    }

    /// The plus plane as the `ceil(dim / 8)` bytes Redis stores in `grain:{id}:bits:+`.
    pub fn plus_bytes(&self) -> Vec<u8> {
        unpack_words(&self.plus, plane_bytes(self.dim))
    }

    /// The minus plane as the `ceil(dim / 8)` bytes Redis stores in `grain:{id}:bits:-`.
    pub fn minus_bytes(&self) -> Vec<u8> {
        unpack_words(&self.minus, plane_bytes(self.dim))
    }

    /// The plus plane's words (trit `i` = bit `i % 64` of word `i / 64`).
    pub fn plus_words(&self) -> &[u64] {
        &self.plus
    }

    /// The minus plane's words.
    pub fn minus_words(&self) -> &[u64] {
        &self.minus
    }

    /// Number of trits.
    pub fn dim(&self) -> usize {
        self.dim
    }

    /// Trit `index`, or `None` beyond the dimension.
    pub fn get(&self, index: usize) -> Option<i8> {
        if index >= self.dim {
            return None;
        }
        let bit = 1u64 << (index % 64);
        Some(if self.plus[index / 64] & bit != 0 {
            1
        } else if self.minus[index / 64] & bit != 0 {
            -1
        } else {
            0
        })
    }

    /// Sets trit `index` to `trit` (−1, 0 or 1).
    pub fn set(&mut self, index: usize, trit: i8) -> Result<(), TernaryError> {
        if index >= self.dim {
            return Err(TernaryError::IndexOutOfRange {
                index,
                dim: self.dim,
            });
        }
        let (w, bit) = (index / 64, 1u64 << (index % 64));
        match trit {
            1 => {
                self.plus[w] |= bit;
                self.minus[w] &= !bit;
            }
            -1 => {
                self.plus[w] &= !bit;
                self.minus[w] |= bit;
            }
            0 => {
                self.plus[w] &= !bit;
                self.minus[w] &= !bit;
            }
            value => return Err(TernaryError::InvalidTrit { index, value }),
        }
        Ok(())
    }

    /// `pc+`: the number of +1 trits.
    pub fn plus_count(&self) -> u32 {
        popcount(&self.plus)
    }

    /// `pc−`: the number of −1 trits.
    pub fn minus_count(&self) -> u32 {
        popcount(&self.minus)
    }

    /// `pc+ + pc−`: the number of non-zero trits.
    pub fn nonzero_count(&self) -> u32 {
        self.plus_count() + self.minus_count()
    }

    /// The seed's `ternary_value = (pc+ − pc−) / (pc+ + pc−)`, 0 for an all-zero vector.
    pub fn ternary_value(&self) -> f64 {
        self.summary().ternary_value
    }

    /// The seed's `confidence = min(1, (pc+ + pc−) / bits)` with `bits` = the dimension; 0 for
    /// a vector of dimension 0.
    pub fn confidence(&self) -> f64 {
        self.summary().confidence
    }

    /// `pc+`, `pc−`, `ternary_value` and `confidence` in one pass.
    pub fn summary(&self) -> PlaneSummary {
        let plus = self.plus_count();
        let minus = self.minus_count();
        let nonzero = f64::from(plus + minus);
        let ternary_value = if plus + minus == 0 {
            0.0
        } else {
            (f64::from(plus) - f64::from(minus)) / nonzero
        };
        let confidence = if self.dim == 0 {
            0.0
        } else {
            (nonzero / self.dim as f64).min(1.0)
        };
        PlaneSummary {
            plus,
            minus,
            ternary_value,
            confidence,
        }
    }

    fn check_same_dim(&self, other: &Self) -> Result<(), TernaryError> {
        if self.dim == other.dim {
            Ok(())
        } else {
            Err(TernaryError::DimensionMismatch {
                expected: self.dim,
                found: other.dim,
            })
        }
    }

    /// The ternary dot product
    /// `pc((a+ & b+) | (a− & b−)) − pc((a+ & b−) | (a− & b+))` (portable scalar code; the
    /// bank's kernels compute the same number much faster for many grains).
    pub fn dot(&self, other: &Self) -> Result<i32, TernaryError> {
        Ok(self.agreement(other)?.dot())
    }

    /// Agreement, disagreement and Hamming counts against `other`.
    pub fn agreement(&self, other: &Self) -> Result<Agreement, TernaryError> {
        self.check_same_dim(other)?;
        let mut out = Agreement::default();
        for w in 0..self.plus.len() {
            let (ap, am, bp, bm) = (self.plus[w], self.minus[w], other.plus[w], other.minus[w]);
            out.agree += ((ap & bp) | (am & bm)).count_ones();
            out.disagree += ((ap & bm) | (am & bp)).count_ones();
            out.hamming += ((ap ^ bp) | (am ^ bm)).count_ones();
        }
        Ok(out)
    }

    /// The Hamming distance over {−1, 0, +1}: positions where the trits differ.
    pub fn hamming(&self, other: &Self) -> Result<u32, TernaryError> {
        Ok(self.agreement(other)?.hamming)
    }

    /// Flips the sign of every trit whose hat-mask bit is set (the mask tiles every 256 trits;
    /// see [`crate::hat`]). Zeros stay zero.
    pub fn apply_hat(&mut self, hat: &HatMask) {
        hat.apply_to_planes(&mut self.plus, &mut self.minus);
    }

    /// A copy with the hat applied.
    pub fn with_hat(&self, hat: &HatMask) -> Self {
        let mut v = self.clone();
        v.apply_hat(hat);
        v
    }

    /// The vector with every trit's sign flipped.
    pub fn negated(&self) -> Self {
        Self {
            dim: self.dim,
            plus: self.minus.clone(),
            minus: self.plus.clone(),
        }
    }
}

/// Little-endian bytes to words; a short last chunk is zero-extended.
fn pack_words(bytes: &[u8]) -> Vec<u64> {
    bytes
        .chunks(8)
        .map(|chunk| {
            let mut word = [0u8; 8];
            word[..chunk.len()].copy_from_slice(chunk);
            u64::from_le_bytes(word)
        })
        .collect()
}

/// Words to `len` little-endian bytes.
fn unpack_words(words: &[u64], len: usize) -> Vec<u8> {
    let mut out: Vec<u8> = words.iter().flat_map(|w| w.to_le_bytes()).collect();
    out.truncate(len);
    out
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn bit_order_is_little_endian() {
        let mut v = TernaryVector::zeros(20).unwrap();
        v.set(0, 1).unwrap();
        v.set(9, -1).unwrap();
        v.set(19, 1).unwrap();
        assert_eq!(v.plus_bytes(), vec![0b0000_0001, 0, 0b0000_1000]);
        assert_eq!(v.minus_bytes(), vec![0, 0b0000_0010, 0]);
        assert_eq!(v.plus_words(), &[1 | (1 << 19)]);
    }

    #[test]
    fn planes_are_validated() {
        assert_eq!(
            TernaryVector::from_planes(9, &[0, 0], &[0]),
            Err(TernaryError::PlaneLength {
                expected: 2,
                plus: 2,
                minus: 1
            })
        );
        assert_eq!(
            TernaryVector::from_planes(16, &[0, 0b100], &[0, 0b110]),
            Err(TernaryError::Overlap { index: 10 })
        );
        assert_eq!(
            TernaryVector::from_planes(9, &[0, 0b10], &[0, 0]),
            Err(TernaryError::PaddingSet { index: 9 })
        );
        assert_eq!(
            TernaryVector::from_i8(&[0, 2]),
            Err(TernaryError::InvalidTrit { index: 1, value: 2 })
        );
    }

    #[test]
    fn summary_matches_the_seed() {
        let v = TernaryVector::from_i8(&[1, 1, 1, -1, 0, 0, 0, 0]).unwrap();
        let s = v.summary();
        assert_eq!((s.plus, s.minus, s.popcount()), (3, 1, 4));
        assert_eq!(s.ternary_value, 0.5);
        assert_eq!(s.confidence, 0.5);
        let empty = TernaryVector::zeros(0).unwrap();
        assert_eq!(empty.ternary_value(), 0.0);
        assert_eq!(empty.confidence(), 0.0);
    }
}
