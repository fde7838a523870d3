//! entity owns the `entity-changes` bound: the commit script appends without a cap, and a
//! running instance trims the stream near `changes_max` — never past what an existing group
//! (the archive, an observer) has not had delivered or acknowledged.

use fred::prelude::*;
use fred::types::Value;
use kitbash_client::Producer;
use kitbash_runtime::entries::parse_entries;
use kitbash_schema::StreamName;
use kitbash_schema::messages::{EntityTarget, EntityUpdate};
use kitbash_testkit::RedisServer;
use kitbash_testkit::support::eventually;
use serde_json::json;

use crate::support::*;

/// Entries per stream node: `XTRIM MINID ~` removes whole nodes only.
const NODE: u64 = 10;
const MAX: u64 = 50;

async fn ids(c: &Client, key: &str) -> Vec<String> {
    let v: Value = c.xrange(key, "-", "+", None).await.expect("xrange");
    parse_entries("XRANGE", &v)
        .expect("entries")
        .into_iter()
        .map(|e| e.id)
        .collect()
}

/// `n` changes of `quantum:status`, from value `from` on, applied before it returns.
async fn change(c: &Client, k: &kitbash_schema::Keys, producer: &Producer, from: u64, n: u64) {
    for v in from..from + n {
        let u = EntityUpdate::merge(EntityTarget::Status, json!({ "v": v }));
        producer
            .patch_entity(&u, PARTITIONS)
            .await
            .expect("publish");
    }
    caught_up(c, k).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn entity_keeps_its_changes_stream_near_its_bound_without_passing_a_groups_position() {
    let server = RedisServer::start().expect("redis");
    let ns = kitbash_testkit::namespace();
    let k = keys(&ns);
    let c = client(&server.url()).await;
    let _: () = c
        .config_set("stream-node-max-entries", NODE)
        .await
        .expect("config set");
    let changes = k.stream(StreamName::EntityChanges);
    let _: Value = c
        .xgroup_create(&changes, "archive", "0", true)
        .await
        .expect("group");
    let mut cfg = config(&server.url(), &ns);
    cfg.entity.changes_max = MAX;
    cfg.entity.trim_interval_ms = 20;
    let instance = start(cfg);
    let producer = Producer::new(c.clone(), k.clone(), 1);
    let len = || async {
        let n: u64 = c.xlen(&changes).await.expect("xlen");
        n
    };

    // The archive has read 100 changes, acknowledged 60 and holds 40.
    change(&c, &k, &producer, 0, 100).await;
    let _: Value = c
        .xreadgroup("archive", "holder", Some(100), None, false, &changes, ">")
        .await
        .expect("read");
    let read = ids(&c, &changes).await;
    assert_eq!(
        read.len(),
        100,
        "nothing trimmed before the archive read it"
    );
    let _: i64 = c
        .xack(&changes, "archive", read[..60].to_vec())
        .await
        .expect("ack");
    for wave in 0..4 {
        change(&c, &k, &producer, 100 + wave * 50, 50).await;
    }
    eventually(
        "trimmed up to the archive's oldest pending change",
        || async { len().await <= 240 + NODE },
    )
    .await;
    let kept = ids(&c, &changes).await;
    for id in &read[60..] {
        assert!(kept.contains(id), "pending change {id} trimmed");
    }
    let before = kept
        .iter()
        .position(|i| *i == read[60])
        .expect("the oldest pending change is kept");
    assert_eq!(kept.len() - before, 240, "nothing after it trimmed");

    // Once the archive has read and acknowledged everything, the bound applies.
    let _: Value = c
        .xreadgroup("archive", "holder", Some(1000), None, false, &changes, ">")
        .await
        .expect("read");
    let all = ids(&c, &changes).await;
    let _: i64 = c.xack(&changes, "archive", all).await.expect("ack");
    // Changes get `*` ids from the commit script, so the cap's even-rate estimate is not exact:
    // allow a second node.
    eventually("trimmed near changes_max", || async {
        len().await <= MAX + 2 * NODE
    })
    .await;
    // The stream kept the newest changes (the document's last version is in it).
    let last: Value = c
        .xrevrange(&changes, "+", "-", Some(1))
        .await
        .expect("xrevrange");
    assert_eq!(parse_entries("XREVRANGE", &last).expect("entries").len(), 1);
    let (_, version) = stored(&c, &k, &k.quantum_status()).await;
    assert_eq!(version, 300, "every change applied");
    instance.stop().await;
}
