//! Replay decides exactly like live processing: the review's counter-example (`[X@0] |
//! [Y@1001, X@1002]` with `idle_symbol_ms = 1000` gave X 2 ticks live and 1 after replay), and
//! a property test through the runtime's `split_equals_replay` — random ticks of a few symbols
//! with gaps around the idle limit and a tight symbol cap, applied in random batch splits,
//! equal to the same entries replayed one by one.

use kitbash_feynman::partition::Physics;
use kitbash_runtime::config::FeynmanConfig;
use kitbash_runtime::partition::determinism::split_equals_replay;
use kitbash_runtime::partition::{Effects, Entry, PartitionLogic};
use kitbash_schema::Keys;
use kitbash_schema::messages::Tick;
use proptest::prelude::*;

fn physics(idle_ms: u64, cap: usize) -> Physics {
    let cfg = FeynmanConfig {
        window: 16,
        idle_symbol_ms: idle_ms,
        max_symbols_per_partition: cap,
        ..FeynmanConfig::default()
    };
    Physics::new(cfg, Keys::default(), false)
}

fn entry(symbol: &str, ms: u64, seq: u64, price: f64) -> Entry<Tick> {
    Entry {
        id: format!("{ms}-{seq}"),
        message: Tick {
            symbol: symbol.to_owned(),
            price,
            size: 10.0,
            trades: 1,
            ts: ms as f64 / 1000.0,
        },
    }
}

fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime")
        .block_on(f)
}

#[test]
fn the_reviews_counter_example_decides_alike_live_and_on_replay() {
    let logic = physics(1_000, 100);
    let entries = vec![
        entry("X", 0, 0, 100.0),
        entry("Y", 1_001, 0, 50.0),
        entry("X", 1_002, 0, 101.0),
    ];
    // Live: [X@0] then [Y@1001, X@1002].
    let mut live = logic.empty(0);
    for batch in [&entries[..1], &entries[1..]] {
        let mut out = Effects::default();
        let r = block_on(logic.apply(&mut live, batch, &mut out)).expect("no transient failure");
        assert!(r.iter().all(Result::is_ok));
    }
    let mut replayed = logic.empty(0);
    for e in &entries {
        logic.replay(&mut replayed, e);
    }
    let count =
        |s: &kitbash_feynman::partition::PartitionState| s.symbols.get("X").map(|x| x.count);
    assert_eq!(
        count(&live),
        Some(1),
        "X idle past the limit starts a fresh window"
    );
    assert_eq!(count(&live), count(&replayed));
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn any_batch_split_equals_replay_entry_by_entry(
        ticks in prop::collection::vec((0usize..5, 0u64..700, 1u32..2_000), 1..120),
        splits in prop::collection::vec(1usize..9, 1..6),
    ) {
        let symbols = ["A", "B", "C", "D", "E"];
        let logic = physics(1_000, 3);
        let mut ms = 1_000_000u64;
        let entries: Vec<Entry<Tick>> = ticks
            .iter()
            .enumerate()
            .map(|(i, (s, gap, price))| {
                ms += gap;
                entry(symbols[*s], ms, i as u64, f64::from(*price) / 10.0)
            })
            .collect();
        let keys: Vec<String> = symbols.iter().map(|s| (*s).to_owned()).collect();
        let r = block_on(split_equals_replay(&logic, 0, &entries, &splits, &keys));
        prop_assert!(r.is_ok(), "{}", r.err().unwrap_or_default());
    }

    /// A cap large enough for the 5 % eviction hysteresis to matter (cap 24 keeps 22 when it
    /// makes room), with idle symbols a sweep may or may not have dropped yet.
    #[test]
    fn the_eviction_hysteresis_decides_alike_in_batches_and_on_replay(
        ticks in prop::collection::vec((0usize..40, 0u64..200, 1u32..2_000), 1..300),
        splits in prop::collection::vec(1usize..40, 1..6),
    ) {
        let logic = physics(1_500, 24);
        let mut ms = 1_000_000u64;
        let entries: Vec<Entry<Tick>> = ticks
            .iter()
            .enumerate()
            .map(|(i, (s, gap, price))| {
                ms += gap;
                entry(&format!("S{s}"), ms, i as u64, f64::from(*price) / 10.0)
            })
            .collect();
        let keys: Vec<String> = (0..40).map(|s| format!("S{s}")).collect();
        let r = block_on(split_equals_replay(&logic, 0, &entries, &splits, &keys));
        prop_assert!(r.is_ok(), "{}", r.err().unwrap_or_default());
    }
}
