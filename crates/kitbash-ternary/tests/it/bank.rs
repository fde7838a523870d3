//! Bank bookkeeping against a `HashMap` model: insert, update, upsert and swap-remove keep ids,
//! slots and planes consistent, and search always agrees with brute force.

use std::collections::HashMap;

use kitbash_ternary::{GrainBank, HatMask, SearchOptions, TernaryError, TernaryVector};
use proptest::prelude::*;

use crate::support::{brute_top_k, vector};

#[derive(Clone, Debug)]
enum Op {
    Insert(u64, TernaryVector),
    Update(u64, TernaryVector),
    Upsert(u64, TernaryVector),
    Remove(u64),
}

fn ops(dim: usize) -> impl Strategy<Value = Vec<Op>> {
    // Few distinct ids so operations collide often.
    let id = 0u64..12;
    let op = prop_oneof![
        3 => (id.clone(), vector(dim)).prop_map(|(i, v)| Op::Insert(i, v)),
        1 => (id.clone(), vector(dim)).prop_map(|(i, v)| Op::Update(i, v)),
        1 => (id.clone(), vector(dim)).prop_map(|(i, v)| Op::Upsert(i, v)),
        2 => id.prop_map(Op::Remove),
    ];
    prop::collection::vec(op, 0..40)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    #[test]
    fn bank_follows_a_map_model(
        (d, ops, query) in prop_oneof![Just(5usize), Just(64usize), Just(200usize), Just(256usize)]
            .prop_flat_map(|d| (Just(d), ops(d), vector(d))),
        hat in any::<[u64; 4]>().prop_map(HatMask::from_words),
    ) {
        let mut bank = GrainBank::new(d).unwrap();
        let mut model: HashMap<u64, TernaryVector> = HashMap::new();
        for op in ops {
            match op {
                Op::Insert(id, v) => {
                    let expect = match model.entry(id) {
                        std::collections::hash_map::Entry::Occupied(_) => {
                            Err(TernaryError::DuplicateId(id))
                        }
                        std::collections::hash_map::Entry::Vacant(slot) => {
                            slot.insert(v.clone());
                            Ok(())
                        }
                    };
                    prop_assert_eq!(bank.insert(id, &v), expect);
                }
                Op::Update(id, v) => {
                    let expect = if let Some(slot) = model.get_mut(&id) {
                        *slot = v.clone();
                        Ok(())
                    } else {
                        Err(TernaryError::UnknownId(id))
                    };
                    prop_assert_eq!(bank.update(id, &v), expect);
                }
                Op::Upsert(id, v) => {
                    let replaced = model.insert(id, v.clone()).is_some();
                    prop_assert_eq!(bank.upsert(id, &v), Ok(replaced));
                }
                Op::Remove(id) => {
                    prop_assert_eq!(bank.remove(id), model.remove(&id).is_some());
                }
            }
            prop_assert_eq!(bank.len(), model.len());
        }
        let mut ids = bank.ids().to_vec();
        ids.sort_unstable();
        let mut expected_ids: Vec<u64> = model.keys().copied().collect();
        expected_ids.sort_unstable();
        prop_assert_eq!(ids, expected_ids);
        for (id, v) in &model {
            prop_assert_eq!(bank.get(*id), Some(v.clone()));
            prop_assert!(bank.contains(*id));
        }
        let grains: Vec<(u64, TernaryVector)> = model.into_iter().collect();
        prop_assert_eq!(bank.top_k(&query, 4).unwrap(), brute_top_k(&grains, &query, None, 4));
        // The hat on the query ranks exactly like the hat applied to every grain.
        let hatted: Vec<(u64, TernaryVector)> =
            grains.iter().map(|(id, g)| (*id, g.with_hat(&hat))).collect();
        prop_assert_eq!(
            bank.search(&query, &SearchOptions::top(4).with_hat(hat)).unwrap(),
            brute_top_k(&hatted, &query, None, 4)
        );
    }
}

#[test]
fn dimension_is_enforced_and_clear_empties() {
    let mut bank = GrainBank::with_capacity(10, 4).unwrap();
    assert_eq!(
        bank.insert(1, &TernaryVector::zeros(11).unwrap()),
        Err(TernaryError::DimensionMismatch {
            expected: 10,
            found: 11
        })
    );
    bank.insert(1, &TernaryVector::zeros(10).unwrap()).unwrap();
    assert_eq!(
        bank.update(1, &TernaryVector::zeros(9).unwrap()),
        Err(TernaryError::DimensionMismatch {
            expected: 10,
            found: 9
        })
    );
    assert!(!bank.remove(2));
    bank.clear();
    assert!(bank.is_empty());
    assert_eq!(bank.get(1), None);
    assert!(GrainBank::new(kitbash_ternary::MAX_DIM + 1).is_err());
}
