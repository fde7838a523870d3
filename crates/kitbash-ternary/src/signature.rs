//! Query signatures: deterministic signed feature hashing of a text's tokens into `dim` trits.
//!
//! # The algorithm (part of the data contract: never change it silently)
//! 1. **Tokenise**: a token is a maximal run of characters for which `char::is_alphanumeric`
//!    holds; everything else separates tokens. Each character is lowercased on its own with
//!    `char::to_lowercase` (no context rules such as the Greek final sigma).
//! 2. **Hash** each token's UTF-8 bytes with FNV-1a 64 (offset basis `0xcbf29ce484222325`,
//!    prime `0x100000001b3`), then finalise with MurmurHash3's `fmix64` so the low bits used
//!    for the bucket are as well mixed as the high ones (raw FNV-1a low bits depend only on the
//!    low bits of the input bytes): `h = fmix64(fnv1a64(token))`.
//! 3. **Bucket** `h % dim`; **sign** +1 when bit 63 of `h` is 0, −1 when it is 1.
//! 4. With [`SignatureOptions::bigrams`], each pair of adjacent tokens is hashed too, as the two
//!    tokens joined by one space (`"dna helix"`).
//! 5. Sum the signs per bucket; the trit is the sign of the sum (0 when the sum is 0).
//!
//! Everything is integer arithmetic on bytes, so the result is the same on every platform.
//! ASCII text hashes identically forever; for other scripts the classification and lowercasing
//! follow the Unicode tables of the Rust standard library, which Unicode's stability policies
//! keep fixed for characters already assigned.

use crate::error::TernaryError;
use crate::vector::TernaryVector;

/// FNV-1a 64 offset basis.
pub const FNV1A64_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
/// FNV-1a 64 prime.
pub const FNV1A64_PRIME: u64 = 0x0000_0100_0000_01b3;

/// FNV-1a, 64 bits.
pub fn fnv1a64(bytes: &[u8]) -> u64 {
    bytes.iter().fold(FNV1A64_OFFSET, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(FNV1A64_PRIME)
    })
}

/// MurmurHash3's 64-bit finaliser.
pub fn fmix64(mut h: u64) -> u64 {
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^= h >> 33;
    h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    h ^= h >> 33;
    h
}

/// The hash of one token (or joined bigram): `fmix64(fnv1a64(bytes))`.
pub fn token_hash(token: &str) -> u64 {
    fmix64(fnv1a64(token.as_bytes()))
}

/// The lowercased tokens of `text` (see the module docs).
pub fn tokens(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut current = String::new();
    for c in text.chars() {
        if c.is_alphanumeric() {
            current.extend(c.to_lowercase());
        } else if !current.is_empty() {
            out.push(std::mem::take(&mut current));
        }
    }
    if !current.is_empty() {
        out.push(current);
    }
    out
}

/// How to build a signature.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub struct SignatureOptions {
    /// Number of trits (the bank's dimension; 256 by default, matching the hat masks).
    pub dim: usize,
    /// Also hash adjacent token pairs.
    pub bigrams: bool,
}

impl Default for SignatureOptions {
    fn default() -> Self {
        Self {
            dim: 256,
            bigrams: false,
        }
    }
}

/// The signature of `text` in `dim` trits, unigrams only.
pub fn signature(text: &str, dim: usize) -> Result<TernaryVector, TernaryError> {
    signature_with(
        text,
        &SignatureOptions {
            dim,
            bigrams: false,
        },
    )
}

/// One FNV-1a 64 step.
fn fnv_step(h: u64, byte: u8) -> u64 {
    (h ^ u64::from(byte)).wrapping_mul(FNV1A64_PRIME)
}

/// The signature of `text` with explicit options.
///
/// Streams over the text without allocating per token: FNV-1a is computed byte by byte as the
/// lowercased characters arrive, and a bigram's hash continues from the previous token's raw
/// FNV state, a space, then the current token's bytes (the same bytes as hashing the joined
/// string).
pub fn signature_with(text: &str, opts: &SignatureOptions) -> Result<TernaryVector, TernaryError> {
    let mut out = TernaryVector::zeros(opts.dim)?;
    if opts.dim == 0 {
        return Ok(out);
    }
    let dim = opts.dim as u64;
    let mut sums = vec![0i32; opts.dim];
    let mut add = |raw: u64| {
        let h = fmix64(raw);
        sums[(h % dim) as usize] += if h >> 63 == 0 { 1 } else { -1 };
    };
    // Raw FNV states: the current token, the bigram (previous token + ' ' + current), and the
    // previous token; `None` outside a token / before the first one.
    let mut token: Option<u64> = None;
    let mut pair: Option<u64> = None;
    let mut previous: Option<u64> = None;
    let mut utf8 = [0u8; 4];
    for c in text.chars() {
        if c.is_alphanumeric() {
            if token.is_none() {
                token = Some(FNV1A64_OFFSET);
                pair = previous.filter(|_| opts.bigrams).map(|p| fnv_step(p, b' '));
            }
            for lower in c.to_lowercase() {
                for &byte in lower.encode_utf8(&mut utf8).as_bytes() {
                    token = token.map(|h| fnv_step(h, byte));
                    pair = pair.map(|h| fnv_step(h, byte));
                }
            }
        } else if let Some(raw) = token.take() {
            add(raw);
            if let Some(raw_pair) = pair.take() {
                add(raw_pair);
            }
            previous = Some(raw);
        }
    }
    if let Some(raw) = token {
        add(raw);
        if let Some(raw_pair) = pair {
            add(raw_pair);
        }
    }
    for (i, &sum) in sums.iter().enumerate() {
        if sum != 0 {
            out.set(i, sum.signum() as i8)?;
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn fnv1a64_reference_vectors() {
        assert_eq!(fnv1a64(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a64(b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(fnv1a64(b"foobar"), 0x8594_4171_f739_67e8);
    }

    #[test]
    fn tokenises_lowercase_on_non_alphanumeric() {
        assert_eq!(
            tokens("What is DNA?  x2-Ray"),
            vec!["what", "is", "dna", "x2", "ray"]
        );
        assert_eq!(tokens("Ünïcode ÉTÉ"), vec!["ünïcode", "été"]);
        assert!(tokens(" ,.; ").is_empty());
    }

    #[test]
    fn case_and_punctuation_do_not_change_the_signature() {
        let a = signature("What is DNA?", 256).unwrap();
        let b = signature("what   is dna", 256).unwrap();
        assert_eq!(a, b);
        assert!(a.nonzero_count() > 0 && a.nonzero_count() <= 3);
    }
}
