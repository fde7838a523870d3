//! The crate's one error type: every fallible constructor and search returns [`TernaryError`].

use std::fmt;

use crate::kernel::Kernel;

/// The largest dimension (number of trits) a vector or a bank may have: 2^24 trits.
///
/// Scores are `i32` and counts `u32`; this bound keeps every sum far from overflow and turns an
/// absurd length read from Redis into an error instead of a giant allocation.
pub const MAX_DIM: usize = 1 << 24;

/// Why a vector, a mask, a bank operation or a search was refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TernaryError {
    /// The plus and minus byte planes do not both have the length `dim` requires (`ceil(dim / 8)`).
    PlaneLength {
        /// Bytes required by the dimension.
        expected: usize,
        /// Bytes in the plus plane.
        plus: usize,
        /// Bytes in the minus plane.
        minus: usize,
    },
    /// A trit is set in both planes (it would be +1 and −1 at once).
    Overlap {
        /// The first trit index set in both planes.
        index: usize,
    },
    /// A plane has a bit set at or beyond `dim` (padding must stay zero).
    PaddingSet {
        /// The first such bit index.
        index: usize,
    },
    /// An `i8` outside −1..=1 was given as a trit.
    InvalidTrit {
        /// Where it was.
        index: usize,
        /// What it was.
        value: i8,
    },
    /// A trit index at or beyond the dimension.
    IndexOutOfRange {
        /// The index asked for.
        index: usize,
        /// The vector's dimension.
        dim: usize,
    },
    /// Two vectors (or a vector and a bank) of different dimensions were combined.
    DimensionMismatch {
        /// The dimension required (the bank's, or the left operand's).
        expected: usize,
        /// The dimension given.
        found: usize,
    },
    /// A dimension above [`MAX_DIM`].
    DimensionTooLarge {
        /// The dimension asked for.
        dim: usize,
    },
    /// A hat mask that is not exactly 32 bytes (256 bits).
    HatLength {
        /// The number of bytes given.
        found: usize,
    },
    /// A kernel was forced that this CPU cannot run.
    KernelUnavailable(Kernel),
    /// `insert` of an id the bank already holds.
    DuplicateId(u64),
    /// `update` of an id the bank does not hold.
    UnknownId(u64),
}

impl fmt::Display for TernaryError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::PlaneLength {
                expected,
                plus,
                minus,
            } => write!(
                f,
                "bit planes must be {expected} bytes each, got plus {plus} and minus {minus}"
            ),
            Self::Overlap { index } => {
                write!(
                    f,
                    "trit {index} is set in both the plus and the minus plane"
                )
            }
            Self::PaddingSet { index } => {
                write!(f, "padding bit {index} (beyond the dimension) is set")
            }
            Self::InvalidTrit { index, value } => {
                write!(
                    f,
                    "value {value} at index {index} is not a trit (-1, 0 or 1)"
                )
            }
            Self::IndexOutOfRange { index, dim } => {
                write!(f, "trit index {index} is out of range for dimension {dim}")
            }
            Self::DimensionMismatch { expected, found } => {
                write!(
                    f,
                    "dimension mismatch: expected {expected} trits, got {found}"
                )
            }
            Self::DimensionTooLarge { dim } => {
                write!(f, "dimension {dim} exceeds the maximum of {MAX_DIM} trits")
            }
            Self::HatLength { found } => {
                write!(f, "a hat mask must be 32 bytes (256 bits), got {found}")
            }
            Self::KernelUnavailable(kernel) => {
                write!(f, "kernel {kernel} is not available on this CPU")
            }
            Self::DuplicateId(id) => write!(f, "grain {id} is already in the bank"),
            Self::UnknownId(id) => write!(f, "grain {id} is not in the bank"),
        }
    }
}

impl std::error::Error for TernaryError {}
