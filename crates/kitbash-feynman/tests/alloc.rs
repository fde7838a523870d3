//! Allocations of feynman's hot path, counted by a counting global allocator — its own test
//! binary with one test, because the allocator counts the whole process (the `it` binary runs
//! its tests on parallel threads).
//!
//! What it holds: applying a batch allocates nothing per tick (a batch of 10× the ticks of the
//! same symbols allocates exactly as often), and a fixed few times per vector (what the
//! runtime's `Commit` takes by value: one `Vec` per command and its key strings; and the
//! `state_update` timestamp).

use std::alloc::System;
use std::future::Future;
use std::pin::pin;
use std::task::{Context, Poll, Waker};

use kitbash_feynman::partition::Physics;
use kitbash_runtime::config::FeynmanConfig;
use kitbash_runtime::partition::{Effects, Entry, PartitionLogic};
use kitbash_schema::messages::Tick;
use kitbash_schema::{Keys, Namespace};
use stats_alloc::{INSTRUMENTED_SYSTEM, Region, StatsAlloc};

#[global_allocator]
static GLOBAL: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

/// Polls a future that never waits (`apply` is pure computation) without a runtime, so the
/// executor allocates nothing inside the counted region.
fn ready<F: Future>(f: F) -> F::Output {
    let mut f = pin!(f);
    let mut cx = Context::from_waker(Waker::noop());
    loop {
        if let Poll::Ready(v) = f.as_mut().poll(&mut cx) {
            return v;
        }
    }
}

fn batch(symbols: usize, ticks: usize, round: u64) -> Vec<Entry<Tick>> {
    (0..ticks)
        .map(|i| Entry {
            id: format!("{}-{i}", 1_766_318_400_000 + round),
            message: Tick {
                symbol: format!("SYM{}", i % symbols),
                price: 100.0 + ((i as u64 * 37 + round * 11) % 101) as f64 * 0.013,
                size: 1.0 + (i % 7) as f64 * 0.25,
                trades: 1 + (i % 3) as u64,
                ts: 1_766_318_400.0 + round as f64 + i as f64 * 1e-6,
            },
        })
        .collect()
}

/// (allocations + reallocations, vectors) of applying `b`.
fn counted(
    logic: &Physics,
    state: &mut <Physics as PartitionLogic>::State,
    b: &[Entry<Tick>],
) -> (usize, usize) {
    let mut out = Effects::default();
    let region = Region::new(GLOBAL);
    let results = ready(logic.apply(state, b, &mut out)).expect("pure computation");
    let change = region.change();
    assert!(results.iter().all(Result::is_ok));
    // One PUBLISH per vector.
    let vectors = out
        .commit
        .commands
        .iter()
        .filter(|(k, _)| k.is_none())
        .count();
    drop(out);
    (change.allocations + change.reallocations, vectors)
}

#[test]
fn a_batch_allocates_per_vector_not_per_tick() {
    const SYMBOLS: usize = 50;
    let cfg = FeynmanConfig {
        window: 100,
        ..FeynmanConfig::default()
    };
    let keys = Keys::new(Namespace::new("alloc").expect("namespace"));
    let logic = Physics::new(cfg, keys, false);
    let mut state = logic.empty(0);
    // Warm up: every window full (its columns at capacity), the scratch buffers grown.
    for round in 0..4 {
        counted(&logic, &mut state, &batch(SYMBOLS, SYMBOLS * 120, round));
    }
    let small = batch(SYMBOLS, SYMBOLS * 2, 10);
    let large = batch(SYMBOLS, SYMBOLS * 20, 11);
    let (a_small, v_small) = counted(&logic, &mut state, &small);
    let (a_large, v_large) = counted(&logic, &mut state, &large);
    assert_eq!((v_small, v_large), (SYMBOLS, SYMBOLS));
    // No per-tick allocation: ten times the ticks, the same allocations (± the few chunks of
    // the word buffer, whose fill differs with the windows' numbers).
    assert!(
        a_large <= a_small + 4,
        "{a_large} allocations for {} ticks vs {a_small} for {}",
        large.len(),
        small.len()
    );
    // A fixed few per vector: 5 command Vecs, the key strings the Commit keeps (3 per new
    // key, 1 per further command on it: 8), the timestamp — 14 — plus the per-batch results
    // and the Commit's own growth (16.5 measured with 50 symbols).
    let per_vector = a_small as f64 / v_small as f64;
    assert!(per_vector <= 20.0, "{per_vector} allocations per vector");
    eprintln!(
        "allocations per vector: {per_vector:.2} (batch of {} ticks: {a_large})",
        large.len()
    );
}
