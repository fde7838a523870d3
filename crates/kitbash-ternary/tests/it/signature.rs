//! The signature contract: the algorithm re-implemented from its documentation, plus golden
//! values that must never change (they are stored data).

use kitbash_ternary::signature::{fmix64, fnv1a64, token_hash, tokens};
use kitbash_ternary::{SignatureOptions, signature, signature_with};
use proptest::prelude::*;

/// The documented algorithm, written out independently of the library.
fn spec_signature(text: &str, dim: usize, bigrams: bool) -> Vec<i8> {
    let mut toks: Vec<String> = Vec::new();
    let mut cur = String::new();
    for c in text.chars() {
        if c.is_alphanumeric() {
            for l in c.to_lowercase() {
                cur.push(l);
            }
        } else if !cur.is_empty() {
            toks.push(std::mem::take(&mut cur));
        }
    }
    if !cur.is_empty() {
        toks.push(cur);
    }
    let mut features = toks.clone();
    if bigrams {
        for w in toks.windows(2) {
            features.push(format!("{} {}", w[0], w[1]));
        }
    }
    let mut sums = vec![0i64; dim];
    for f in features {
        let mut h: u64 = 0xcbf29ce484222325;
        for b in f.bytes() {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x100000001b3);
        }
        h ^= h >> 33;
        h = h.wrapping_mul(0xff51afd7ed558ccd);
        h ^= h >> 33;
        h = h.wrapping_mul(0xc4ceb9fe1a85ec53);
        h ^= h >> 33;
        if dim > 0 {
            sums[(h % dim as u64) as usize] += if h >> 63 == 1 { -1 } else { 1 };
        }
    }
    sums.into_iter().map(|s| s.signum() as i8).collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    #[test]
    fn library_matches_the_documented_algorithm(
        text in "[a-zA-Z0-9 ,.!?éÉßΣ-]{0,60}",
        dim in prop_oneof![Just(0usize), Just(1usize), Just(7usize), Just(256usize), Just(4096usize), 1usize..1000],
        bigrams in any::<bool>(),
    ) {
        let sig = signature_with(&text, &SignatureOptions { dim, bigrams }).unwrap();
        prop_assert_eq!(sig.to_i8(), spec_signature(&text, dim, bigrams));
    }
}

#[test]
fn hash_reference_values() {
    // FNV-1a 64 published test vectors.
    assert_eq!(fnv1a64(b""), 0xcbf29ce484222325);
    assert_eq!(fnv1a64(b"a"), 0xaf63dc4c8601ec8c);
    assert_eq!(fnv1a64(b"foobar"), 0x85944171f73967e8);
    assert_eq!(fmix64(0), 0);
    assert_eq!(token_hash("dna"), fmix64(fnv1a64(b"dna")));
}

#[test]
fn golden_signature_of_the_seed_query() {
    // Locked: changing these changes every stored ghost result.
    assert_eq!(tokens("what is DNA?"), vec!["what", "is", "dna"]);
    let sig = signature("what is DNA?", 256).unwrap();
    let nonzero: Vec<(usize, i8)> = sig
        .to_i8()
        .into_iter()
        .enumerate()
        .filter(|(_, t)| *t != 0)
        .collect();
    assert_eq!(nonzero, GOLDEN_WHAT_IS_DNA);
    assert_eq!(token_hash("dna"), GOLDEN_DNA_HASH);
}

const GOLDEN_WHAT_IS_DNA: &[(usize, i8)] = &[(61, 1), (203, 1), (239, 1)];
const GOLDEN_DNA_HASH: u64 = 0x4c1573567d9321ef;
