//! A recorded tick range, archived, partly trimmed from Redis, and replayed into a sandbox
//! namespace: feynman run there writes the same `physics:state` as the original run.

use std::time::Duration;

use fred::prelude::*;
use kitbash_archive::replay::{self, Ids, Pace, Range, Source};
use kitbash_client::Producer;
use kitbash_schema::StreamName;
use kitbash_schema::messages::Tick;
use kitbash_testkit::RedisServer;

use crate::support::*;

const SYMBOLS: [&str; 5] = ["SPY", "QQQ", "IWM", "DIA", "TLT"];

fn feed() -> Vec<Tick> {
    let mut price = [100.0f64; 5];
    let mut out = Vec::new();
    for i in 0..300u64 {
        for (s, sym) in SYMBOLS.iter().enumerate() {
            price[s] *= 1.0 + (((i * 7 + s as u64 * 13) % 17) as f64 - 8.0) / 1000.0;
            out.push(Tick {
                symbol: (*sym).into(),
                price: price[s],
                size: 1.0 + ((i + s as u64) % 9) as f64,
                trades: i + 1,
                ts: 1_766_318_400.0 + i as f64,
            });
        }
    }
    out
}

async fn run_feynman(url: &str, ns: &str) {
    let c = client(url).await;
    let k = keys(ns);
    let mut cfg = config(url, ns, std::path::Path::new("/nonexistent"));
    cfg.feynman.partitions = 2;
    cfg.feynman.lease_ms = 600;
    let (signals, _) = kitbash_runtime::shutdown::manual();
    let stop = signals.shutdown.clone();
    let task = tokio::spawn(kitbash_feynman::run(cfg, signals));
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while !kitbash_feynman::partition::caught_up(&c, &k, 2)
        .await
        .expect("checkpoints")
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "feynman did not catch up in {ns}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    stop.cancel();
    task.await.expect("join").expect("feynman");
}

async fn states(c: &Client, ns: &str) -> Vec<Option<String>> {
    let k = keys(ns);
    let mut out = Vec::new();
    for s in SYMBOLS {
        out.push(c.get(k.physics_state(s)).await.expect("get"));
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replaying_archived_ticks_into_a_sandbox_gives_feynman_the_same_state() {
    let server = RedisServer::start().expect("redis");
    let url = server.url();
    let ns = kitbash_testkit::namespace();
    let c = client(&url).await;
    let k = keys(&ns);
    let producer = Producer::new(c.clone(), k.clone(), 2);
    for chunk in feed().chunks(100) {
        for t in chunk {
            producer
                .publish(producer.tick_stream(&t.symbol), t)
                .await
                .expect("publish");
        }
    }
    // The original run, archived.
    let dir = tempfile::tempdir().expect("tmp");
    let mut cfg = config(&url, &ns, dir.path());
    cfg.archive.streams = vec!["ticks:0".into(), "ticks:1".into()];
    cfg.archive.roll_entries = 200;
    let (signals, _) = kitbash_runtime::shutdown::manual();
    let stop = signals.shutdown.clone();
    let archive = tokio::spawn(kitbash_archive::run(cfg, signals));
    run_feynman(&url, &ns).await;
    let original = states(&c, &ns).await;
    assert!(
        original.iter().all(Option::is_some),
        "every symbol has a state"
    );
    let root = dir.path().join(&ns);
    for p in 0..2 {
        let key = k.stream(StreamName::Ticks(p));
        eventually("archived", || async {
            pending(&c, &key).await == 0 && !xrange(&c, &key).await.is_empty()
        })
        .await;
    }
    stop.cancel();
    archive.await.expect("join").expect("archive");

    // Redis keeps only the newer half of each partition; the sandbox gets all of it back.
    let sandbox = format!("{ns}-sandbox");
    for p in 0..2 {
        let s = StreamName::Ticks(p);
        let key = k.stream(s);
        let all = xrange(&c, &key).await;
        let _: i64 = c
            .xtrim(&key, ("MINID", all[all.len() / 2].id.as_str()))
            .await
            .expect("trim");
        let sel = replay::select(&c, &root, s, &key, Range::default(), Source::Both)
            .await
            .expect("select");
        assert_eq!(sel.entries, all, "partition {p}");
        replay::write(
            &c,
            &keys(&sandbox).stream(s),
            &sel.entries,
            Ids::Original,
            Pace::Max,
            |_| {},
        )
        .await
        .expect("replay");
    }
    run_feynman(&url, &sandbox).await;
    assert_eq!(
        states(&c, &sandbox).await,
        original,
        "byte-identical physics:state"
    );
}
