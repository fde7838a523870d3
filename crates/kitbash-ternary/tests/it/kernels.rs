//! Every available kernel returns exactly the scalar reference's scores and the brute-force
//! top k, on random and edge-case inputs, single, batched and multi-threaded.

use kitbash_ternary::{GrainBank, HatMask, Kernel, SearchOptions, TernaryError, TernaryVector};
use proptest::prelude::*;

use crate::support::{brute_top_k, dim, hat, naive_dot, vector};

/// A dimension, `n` grains with distinct ids, and a query.
fn bank_case(
    max_grains: usize,
    dims: BoxedStrategy<usize>,
) -> impl Strategy<Value = (usize, Vec<(u64, TernaryVector)>, TernaryVector)> {
    dims.prop_flat_map(move |d| {
        (
            Just(d),
            prop::collection::hash_set(any::<u64>(), 0..=max_grains),
            vector(d),
        )
    })
    .prop_flat_map(|(d, ids, query)| {
        let ids: Vec<u64> = ids.into_iter().collect();
        let n = ids.len();
        (
            Just(d),
            Just(ids),
            prop::collection::vec(vector(d), n),
            Just(query),
        )
    })
    .prop_map(|(d, ids, grains, query)| (d, ids.into_iter().zip(grains).collect(), query))
}

fn bank_of(dim: usize, grains: &[(u64, TernaryVector)]) -> GrainBank {
    let mut bank = GrainBank::new(dim).unwrap();
    for (id, g) in grains {
        bank.insert(*id, g).unwrap();
    }
    bank
}

fn check_all_kernels(
    dim: usize,
    grains: &[(u64, TernaryVector)],
    query: &TernaryVector,
    hat: Option<HatMask>,
    k: usize,
) -> Result<(), TestCaseError> {
    let bank = bank_of(dim, grains);
    let mut opts = SearchOptions::top(k);
    opts.hat = hat;
    let reference = bank
        .scores(query, &opts.with_kernel(Kernel::Scalar))
        .unwrap();
    // The reference itself against the i8 model, in storage order.
    let hatted = hat.map_or_else(|| query.clone(), |h| query.with_hat(&h));
    for (id, score) in bank.ids().iter().zip(&reference) {
        let grain = &grains.iter().find(|(g, _)| g == id).unwrap().1;
        prop_assert_eq!(*score, naive_dot(&hatted, grain));
    }
    let expected = brute_top_k(grains, query, hat.as_ref(), k);
    for kernel in Kernel::available() {
        let forced = opts.with_kernel(kernel);
        prop_assert_eq!(
            &bank.scores(query, &forced).unwrap(),
            &reference,
            "kernel {}",
            kernel
        );
        prop_assert_eq!(
            &bank.search(query, &forced).unwrap(),
            &expected,
            "kernel {}",
            kernel
        );
        prop_assert_eq!(
            &bank.search(query, &forced.with_threads(3)).unwrap(),
            &expected,
            "kernel {} on 3 threads",
            kernel
        );
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn kernels_match_the_reference_on_small_banks(
        (d, grains, query) in bank_case(24, dim().boxed()),
        hat in proptest::option::of(hat()),
        k in 0usize..8,
    ) {
        check_all_kernels(d, &grains, &query, hat, k)?;
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]

    /// Banks larger than one scoring block (256 grains), so blocks, remainders and thread
    /// splits are all crossed.
    #[test]
    fn kernels_match_the_reference_across_blocks(
        (d, grains, query) in bank_case(
            600,
            prop_oneof![Just(1usize), Just(100usize), Just(256usize), Just(320usize)].boxed(),
        ),
        hat in proptest::option::of(hat()),
        k in prop_oneof![Just(1usize), Just(3usize), Just(50usize)],
    ) {
        check_all_kernels(d, &grains, &query, hat, k)?;
    }

    /// The batch search returns, for every query, what a single search returns.
    #[test]
    fn batch_equals_single_searches(
        (d, grains, query) in bank_case(300, dim().boxed()),
        extra in prop::collection::vec(any::<u64>(), 0..6),
        hat in proptest::option::of(hat()),
        threads in 1usize..3,
    ) {
        let bank = bank_of(d, &grains);
        // More queries derived from the first by flipping signs under random masks.
        let mut queries = vec![query.clone()];
        queries.extend(extra.iter().map(|&w| query.with_hat(&HatMask::from_words([w, !w, w.rotate_left(7), w ^ 0xff]))));
        for kernel in Kernel::available() {
            let mut opts = SearchOptions::top(3).with_kernel(kernel).with_threads(threads);
            opts.hat = hat;
            let batch = bank.search_batch(&queries, &opts).unwrap();
            prop_assert_eq!(batch.len(), queries.len());
            for (q, hits) in queries.iter().zip(&batch) {
                prop_assert_eq!(hits, &bank.search(q, &opts.with_threads(1)).unwrap());
            }
        }
    }
}

#[test]
fn empty_bank_and_k_beyond_n() {
    let bank = GrainBank::new(100).unwrap();
    let query = TernaryVector::zeros(100).unwrap();
    for kernel in Kernel::available() {
        let opts = SearchOptions::top(5).with_kernel(kernel).with_threads(4);
        assert!(bank.search(&query, &opts).unwrap().is_empty());
        assert_eq!(
            bank.search_batch(std::slice::from_ref(&query), &opts)
                .unwrap(),
            vec![vec![]]
        );
        assert!(bank.search_batch(&[], &opts).unwrap().is_empty());
    }
    let mut bank = GrainBank::new(100).unwrap();
    bank.insert(9, &TernaryVector::from_i8(&[1; 100]).unwrap())
        .unwrap();
    bank.insert(4, &TernaryVector::from_i8(&[1; 100]).unwrap())
        .unwrap();
    let hits = bank
        .top_k(&TernaryVector::from_i8(&[1; 100]).unwrap(), 10)
        .unwrap();
    assert_eq!(
        hits.iter().map(|h| (h.id, h.score)).collect::<Vec<_>>(),
        vec![(4, 100), (9, 100)]
    );
}

#[test]
fn detection_and_forcing() {
    let available = Kernel::available();
    assert_eq!(available.first(), Some(&Kernel::Scalar));
    assert!(available.contains(&Kernel::detect()));
    for kernel in Kernel::ALL {
        assert_eq!(Kernel::from_name(kernel.name()), Some(kernel));
    }
    let bank = GrainBank::new(8).unwrap();
    let query = TernaryVector::zeros(8).unwrap();
    if let Some(missing) = Kernel::ALL.into_iter().find(|k| !k.is_available()) {
        assert_eq!(
            bank.search(&query, &SearchOptions::top(1).with_kernel(missing)),
            Err(TernaryError::KernelUnavailable(missing))
        );
        let mut bank = bank.clone();
        assert_eq!(
            bank.set_kernel(missing),
            Err(TernaryError::KernelUnavailable(missing))
        );
    }
}

#[test]
fn a_query_of_the_wrong_dimension_is_refused() {
    let bank = GrainBank::new(8).unwrap();
    let query = TernaryVector::zeros(9).unwrap();
    assert_eq!(
        bank.top_k(&query, 1),
        Err(TernaryError::DimensionMismatch {
            expected: 8,
            found: 9
        })
    );
}
