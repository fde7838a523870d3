//! decay owns the `queries` bound: with `queries_stream_max` = 50 a running instance trims the
//! stream to about 50 entries, but never past an entry its group has delivered and not had
//! acknowledged (held here by a consumer that never acknowledges).

use fred::prelude::*;
use fred::types::Value;
use kitbash_runtime::entries::parse_entries;
use kitbash_schema::{Envelope, StreamName};
use kitbash_testkit::RedisServer;

use crate::support::{client, config, eventually, keys, query};

/// Entries per stream node: `XTRIM MINID ~` removes whole nodes only, so this is the slack.
const NODE: u64 = 10;
const MAX: u64 = 50;

/// `n` query events with ids `{from}-0`, `{from+1}-0`, …: one per millisecond, so the trim's
/// even-rate estimate of the cap is exact.
async fn add(c: &Client, key: &str, from: u64, n: u64) {
    for i in from..from + n {
        let env = Envelope::msgpack(&query(&format!("query {}", i % 10))).expect("encode");
        let fields: Vec<(&str, Value)> = env
            .to_fields()
            .into_iter()
            .map(|(k, v)| (k, Value::Bytes(v.into())))
            .collect();
        let _: String = c
            .xadd(key, false, None, format!("{i}-0").as_str(), fields)
            .await
            .expect("xadd");
    }
}

async fn ids(c: &Client, key: &str, from: &str, to: &str) -> Vec<String> {
    let v: Value = c.xrange(key, from, to, None).await.expect("xrange");
    parse_entries("XRANGE", &v)
        .expect("entries")
        .into_iter()
        .map(|e| e.id)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn decay_keeps_queries_near_its_bound_but_never_trims_unacknowledged_entries() {
    let server = RedisServer::start().expect("redis");
    let ns = kitbash_testkit::namespace();
    let k = keys(&ns);
    let c = client(&server.url()).await;
    let _: () = c
        .config_set("stream-node-max-entries", NODE)
        .await
        .expect("config set");
    let q = k.stream(StreamName::Queries);
    let _: Value = c
        .xgroup_create(&q, "decay", "0", true)
        .await
        .expect("group");
    // A consumer of the decay group takes the first 200, acknowledges 150 and holds 50.
    add(&c, &q, 1000, 200).await;
    let _: Value = c
        .xreadgroup("decay", "holder", Some(200), None, false, &q, ">")
        .await
        .expect("read");
    let first: Vec<String> = (1000..1150).map(|i| format!("{i}-0")).collect();
    let _: i64 = c.xack(&q, "decay", first).await.expect("ack");
    add(&c, &q, 1200, 300).await;

    let mut cfg = config(&server.url(), &ns);
    cfg.decay.queries_stream_max = MAX;
    cfg.decay.trim_interval_ms = 20;
    // decay must not reclaim what the holder holds.
    cfg.consumer.claim_idle_ms = 3_600_000;
    let (signals, _) = kitbash_runtime::shutdown::manual();
    let stop = signals.shutdown.clone();
    let decay = tokio::spawn(kitbash_decay::run(cfg, signals));

    let len = || async {
        let n: u64 = c.xlen(&q).await.expect("xlen");
        n
    };
    // The cap would leave 1449..; the held entries stop the trim at 1150.
    eventually("trimmed up to the oldest unacknowledged entry", || async {
        len().await <= 350 + NODE
    })
    .await;
    let held = ids(&c, &q, "1150-0", "1199-0").await;
    assert_eq!(held.len(), 50, "no unacknowledged entry trimmed");
    assert!(
        ids(&c, &q, "-", "1149-0").await.len() < NODE as usize,
        "acknowledged entries before them are gone"
    );
    let held_ids: Vec<String> = (1150..1200).map(|i| format!("{i}-0")).collect();
    let _: i64 = c.xack(&q, "decay", held_ids).await.expect("ack");
    eventually(
        "trimmed to the bound once they are acknowledged",
        || async { len().await <= MAX + NODE },
    )
    .await;
    // And decay applied every event it was delivered (the trim took nothing it needed).
    eventually("every event applied", || async {
        let n: Option<u64> = c.get(k.metrics_queries_count()).await.expect("get");
        n == Some(300)
    })
    .await;
    stop.cancel();
    decay.await.expect("join").expect("run");
}
