//! Shared proptest strategies and brute-force models.

use kitbash_ternary::{HatMask, Hit, TernaryVector};
use proptest::prelude::*;

/// Dimensions that exercise every padding case: tiny, below one word, word and lane edges.
pub fn dim() -> impl Strategy<Value = usize> {
    prop_oneof![
        Just(0usize),
        Just(1usize),
        Just(63usize),
        Just(64usize),
        Just(65usize),
        Just(255usize),
        Just(256usize),
        Just(257usize),
        Just(511usize),
        1usize..700,
    ]
}

/// A vector of `dim` trits: mostly random, sometimes all zeros, all +1 or all −1.
pub fn vector(dim: usize) -> impl Strategy<Value = TernaryVector> {
    prop_oneof![
        6 => prop::collection::vec(-1i8..=1, dim),
        1 => Just(vec![0i8; dim]),
        1 => Just(vec![1i8; dim]),
        1 => Just(vec![-1i8; dim]),
    ]
    .prop_map(|trits| TernaryVector::from_i8(&trits).unwrap())
}

/// A hat: random, empty or full.
pub fn hat() -> impl Strategy<Value = HatMask> {
    prop_oneof![
        4 => any::<[u64; 4]>().prop_map(HatMask::from_words),
        1 => Just(HatMask::EMPTY),
        1 => Just(HatMask::FULL),
    ]
}

/// The dot product one trit at a time, from the `i8` form.
pub fn naive_dot(a: &TernaryVector, b: &TernaryVector) -> i32 {
    a.to_i8()
        .iter()
        .zip(b.to_i8())
        .map(|(&x, y)| i32::from(x) * i32::from(y))
        .sum()
}

/// The top k by brute force: score everything with `TernaryVector::dot`, sort, truncate.
pub fn brute_top_k(
    grains: &[(u64, TernaryVector)],
    query: &TernaryVector,
    hat: Option<&HatMask>,
    k: usize,
) -> Vec<Hit> {
    let query = hat.map_or_else(|| query.clone(), |h| query.with_hat(h));
    let mut hits: Vec<Hit> = grains
        .iter()
        .map(|(id, g)| Hit {
            id: *id,
            score: query.dot(g).unwrap(),
        })
        .collect();
    hits.sort_by(|a, b| a.rank(b));
    hits.truncate(k);
    hits
}
