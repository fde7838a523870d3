//! Packing, the dot product and counts against trit-by-trit models, and the hat algebra.

use kitbash_ternary::{HatMask, TernaryError, TernaryVector, plane_bytes};
use proptest::prelude::*;

use crate::support::{dim, hat, naive_dot, vector};

fn pair() -> impl Strategy<Value = (TernaryVector, TernaryVector)> {
    dim().prop_flat_map(|d| (vector(d), vector(d)))
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn i8_and_byte_planes_round_trip(v in dim().prop_flat_map(vector)) {
        prop_assert_eq!(TernaryVector::from_i8(&v.to_i8()).unwrap(), v.clone());
        let (plus, minus) = (v.plus_bytes(), v.minus_bytes());
        prop_assert_eq!(plus.len(), plane_bytes(v.dim()));
        prop_assert_eq!(TernaryVector::from_planes(v.dim(), &plus, &minus).unwrap(), v.clone());
        // Trit i is bit i % 8 of byte i / 8.
        for (i, t) in v.to_i8().into_iter().enumerate() {
            prop_assert_eq!(plus[i / 8] >> (i % 8) & 1 == 1, t == 1);
            prop_assert_eq!(minus[i / 8] >> (i % 8) & 1 == 1, t == -1);
        }
    }

    #[test]
    fn dot_and_counts_match_the_trit_model((a, b) in pair()) {
        let (ta, tb) = (a.to_i8(), b.to_i8());
        let agree = ta.iter().zip(&tb).filter(|(x, y)| **x != 0 && x == y).count() as u32;
        let disagree = ta.iter().zip(&tb).filter(|(x, y)| **x != 0 && **y != 0 && x != y).count() as u32;
        let hamming = ta.iter().zip(&tb).filter(|(x, y)| x != y).count() as u32;
        let counts = a.agreement(&b).unwrap();
        prop_assert_eq!((counts.agree, counts.disagree, counts.hamming), (agree, disagree, hamming));
        prop_assert_eq!(a.dot(&b).unwrap(), naive_dot(&a, &b));
        prop_assert_eq!(a.dot(&b).unwrap(), b.dot(&a).unwrap());
        prop_assert_eq!(a.hamming(&b).unwrap(), hamming);
    }

    #[test]
    fn summary_follows_the_seed(v in dim().prop_flat_map(vector)) {
        let t = v.to_i8();
        let plus = t.iter().filter(|&&x| x == 1).count() as f64;
        let minus = t.iter().filter(|&&x| x == -1).count() as f64;
        let s = v.summary();
        prop_assert_eq!((f64::from(s.plus), f64::from(s.minus)), (plus, minus));
        let value = if plus + minus == 0.0 { 0.0 } else { (plus - minus) / (plus + minus) };
        prop_assert_eq!(v.ternary_value(), value);
        let confidence = if v.dim() == 0 { 0.0 } else { ((plus + minus) / v.dim() as f64).min(1.0) };
        prop_assert_eq!(v.confidence(), confidence);
    }

    #[test]
    fn a_hat_flips_signs_under_its_tiled_mask(v in dim().prop_flat_map(vector), mask in hat()) {
        let flipped = v.with_hat(&mask);
        for (i, (before, after)) in v.to_i8().into_iter().zip(flipped.to_i8()).enumerate() {
            let expect = if mask.flips(i) { -before } else { before };
            prop_assert_eq!(after, expect, "trit {}", i);
        }
        // Still a valid vector (no trit in both planes, padding zero), and an involution.
        prop_assert!(TernaryVector::from_planes(v.dim(), &flipped.plus_bytes(), &flipped.minus_bytes()).is_ok());
        prop_assert_eq!(flipped.with_hat(&mask), v);
    }

    /// The identity that lets search apply the hat to the query only:
    /// dot(hat(q), g) = dot(q, hat(g)).
    #[test]
    fn a_hat_on_the_query_scores_like_a_hat_on_the_grain((q, g) in pair(), mask in hat()) {
        prop_assert_eq!(q.with_hat(&mask).dot(&g).unwrap(), q.dot(&g.with_hat(&mask)).unwrap());
    }
}

#[test]
fn xoring_a_mask_into_both_planes_would_break_the_invariant() {
    let v = TernaryVector::from_i8(&[0, 1, -1, 0]).unwrap();
    let (plus, minus) = (v.plus_bytes()[0] ^ 0b1111, v.minus_bytes()[0] ^ 0b1111);
    assert_eq!(
        TernaryVector::from_planes(4, &[plus], &[minus]),
        Err(TernaryError::Overlap { index: 0 })
    );
    assert_eq!(v.with_hat(&HatMask::FULL).to_i8(), vec![0, -1, 1, 0]);
}

#[test]
fn construction_errors_are_typed() {
    assert_eq!(
        TernaryVector::from_planes(16, &[0, 0], &[0]),
        Err(TernaryError::PlaneLength {
            expected: 2,
            plus: 2,
            minus: 1
        })
    );
    assert_eq!(
        TernaryVector::from_planes(12, &[0, 0b0001_0000], &[0, 0]),
        Err(TernaryError::PaddingSet { index: 12 })
    );
    // Trit 65 is inside a 70-trit vector; bit 70 is padding.
    assert!(TernaryVector::from_planes(70, &[0; 9], &[0, 0, 0, 0, 0, 0, 0, 0, 0b10]).is_ok());
    assert_eq!(
        TernaryVector::from_planes(70, &[0; 9], &[0, 0, 0, 0, 0, 0, 0, 0, 0b0100_0000]),
        Err(TernaryError::PaddingSet { index: 70 })
    );
    let mut v = TernaryVector::zeros(3).unwrap();
    assert_eq!(
        v.set(3, 1),
        Err(TernaryError::IndexOutOfRange { index: 3, dim: 3 })
    );
    assert_eq!(
        v.set(0, 5),
        Err(TernaryError::InvalidTrit { index: 0, value: 5 })
    );
    assert_eq!(v.get(3), None);
    let a = TernaryVector::zeros(3).unwrap();
    let b = TernaryVector::zeros(4).unwrap();
    assert_eq!(
        a.dot(&b),
        Err(TernaryError::DimensionMismatch {
            expected: 3,
            found: 4
        })
    );
    assert!(matches!(
        TernaryVector::zeros(kitbash_ternary::MAX_DIM + 1),
        Err(TernaryError::DimensionTooLarge { .. })
    ));
    // Every error has a one-line message.
    assert!(!TernaryError::UnknownId(7).to_string().contains('\n'));
}
