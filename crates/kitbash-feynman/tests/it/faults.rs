//! Faults: Redis refusing writes (`maxmemory` 1 byte, `noeviction`) for a few seconds in the
//! middle of a backlog — the partitions hold their batches and report not ready, nothing is
//! dead-lettered, and afterwards every tick is applied exactly once, in order.

use std::collections::BTreeMap;
use std::time::Duration;

use fred::prelude::*;
use kitbash_client::Producer;
use kitbash_runtime::shutdown;
use kitbash_schema::{Envelope, Keys, StreamName};
use kitbash_testkit::RedisServer;
use kitbash_testkit::support::{
    EntryFields, allow_writes, append_to_streams_then_refuse_writes, eventually, free_local_addr,
    readiness,
};

use crate::support::*;

/// The JSON envelope's fields of `m`, as text (for [`append_to_streams_then_refuse_writes`]).
fn json_fields<M: kitbash_schema::Message>(m: &M) -> Vec<(&'static str, String)> {
    Envelope::json(m)
        .expect("encode")
        .to_fields()
        .into_iter()
        .map(|(k, v)| (k, String::from_utf8(v).expect("JSON is text")))
        .collect()
}

async fn dead_letters(c: &Client, keys: &Keys) -> u64 {
    let mut n = 0;
    for p in 0..PARTITIONS {
        let len: u64 = c
            .xlen(keys.dead_letter(StreamName::Ticks(p)))
            .await
            .expect("xlen");
        n += len;
    }
    n
}

/// Redis refusing writes for a few seconds mid-backlog, with the last ticks of every symbol
/// appended just before: every partition holding ticks reports not ready meanwhile, none is
/// dead-lettered, and afterwards each symbol's tick count and physics state equal the
/// reference's (each tick once, in order).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn while_redis_refuses_writes_ticks_are_held_then_each_applied_once_in_order_and_none_dead() {
    let server = RedisServer::start().expect("redis");
    let ns = kitbash_testkit::namespace();
    let keys = keys(&ns);
    let c = client(&server.url()).await;
    let producer = Producer::new(c.clone(), keys.clone(), PARTITIONS);
    let symbols = ["SPY", "QQQ", "AAPL", "MSFT", "TSLA", "NVDA", "AMZN", "GOOG"];
    let input = ticks(&symbols, 600, 17);
    // Ticks are interleaved by round: the backlog is the first 500 rounds, the held ticks the
    // last 100.
    let (backlog, last) = input.split_at(symbols.len() * 500);
    let mut cfg = config(&server.url(), &ns);
    let admin = free_local_addr();
    cfg.admin.listen = admin.to_string();
    publish(&producer, backlog).await;
    let (signals, _reload) = shutdown::manual();
    let stop = signals.shutdown.clone();
    let task = tokio::spawn(kitbash_feynman::run(cfg, signals));
    eventually("a first batch committed", || async {
        let mut any = false;
        for p in 0..PARTITIONS {
            let cp: Option<String> = c
                .hget(keys.partition_checkpoint(p), Keys::CHECKPOINT_LAST_ID)
                .await
                .expect("hget");
            any |= cp.is_some();
        }
        any
    })
    .await;
    let mut held: BTreeMap<u32, Vec<EntryFields>> = BTreeMap::new();
    for t in last {
        let StreamName::Ticks(p) = producer.tick_stream(&t.symbol) else {
            panic!("a tick goes to a tick partition");
        };
        held.entry(p).or_default().push(json_fields(t));
    }
    let names: Vec<String> = held
        .keys()
        .map(|p| keys.stream(StreamName::Ticks(*p)))
        .collect();
    let streams: Vec<(&str, &[EntryFields])> = names
        .iter()
        .zip(held.values())
        .map(|(s, e)| (s.as_str(), e.as_slice()))
        .collect();
    let checks: Vec<String> = held
        .keys()
        .map(|p| format!("feynman partition {p}"))
        .collect();
    // Every partition taken before the fault: a lease not yet acquired cannot be while Redis
    // refuses writes (`SET` is refused too), and its partition would have no worker to hold.
    kitbash_testkit::support::every_check_passing(admin, &checks).await;
    append_to_streams_then_refuse_writes(&server, &streams).expect("refuse writes");
    eventually(
        "every partition with held ticks not ready while Redis refuses writes",
        || async {
            checks
                .iter()
                .all(|check| readiness(admin, check) == (503, Some(false)))
        },
    )
    .await;
    // The fault lasts a few seconds (its length, not a synchronisation).
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        dead_letters(&c, &keys).await,
        0,
        "nothing dead-lettered while Redis refuses writes"
    );
    assert!(!task.is_finished(), "the instance waits, it does not fail");
    allow_writes(&server).expect("allow writes");
    caught_up(&c, &keys).await;
    eventually("every partition ready again, /readyz 200", || async {
        checks
            .iter()
            .all(|check| readiness(admin, check) == (200, Some(true)))
    })
    .await;
    stop.cancel();
    task.await.expect("join").expect("run");
    assert_eq!(
        dead_letters(&c, &keys).await,
        0,
        "no valid tick dead-lettered"
    );
    let reference = reference(&input);
    let counts = checkpointed(&c, &keys).await;
    for (symbol, (n, vector)) in &reference {
        assert_eq!(
            counts.get(symbol),
            Some(n),
            "{symbol}: every tick applied exactly once"
        );
        assert_eq!(
            physics_state(&c, &keys, symbol).await.as_ref(),
            Some(vector),
            "{symbol}: applied in order"
        );
    }
}
