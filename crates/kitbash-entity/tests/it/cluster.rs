//! entity on a 3-master Redis Cluster, where the changes stream is in another slot than the
//! documents: two in-process instances under both key styles apply every update once and in
//! order, and every change reaches the changes stream, its document's timeline and
//! `quantum:updates` with the same stream id; a changes stream that refuses its entries holds
//! the batch (documents committed, changes kept in their outbox, nothing dead-lettered but the
//! one bad update) and a fresh instance flushes the outbox when it is writable again; the real
//! binary runs there and stops cleanly on SIGTERM; a plain URL at a cluster node is refused
//! with a line naming `redis-cluster://`.

use std::collections::{BTreeMap, BTreeSet};

use fred::prelude::*;
use kitbash_client::Producer;
use kitbash_runtime::config::KeyStyleConfig;
use kitbash_schema::messages::{EntityOp, EntityTarget, EntityUpdate, entity_change};
use kitbash_schema::{Keys, StreamName};
use kitbash_testkit::RedisCluster;
use kitbash_testkit::support::{daemon_command, eventually, signal, wait_exit};
use serde_json::json;

use crate::faults::{
    assert_changes_once_in_order, assert_exactly_once_in_order, publish, target, updates,
};
use crate::support::*;

/// (key → stream ids) of the changes stream.
async fn change_ids(c: &Client, keys: &Keys) -> BTreeMap<String, Vec<String>> {
    let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (id, pairs) in read_all(c, &keys.stream(StreamName::EntityChanges)).await {
        let key = String::from_utf8_lossy(field(&pairs, entity_change::KEY)).into_owned();
        out.entry(key).or_default().push(id);
    }
    out
}

/// Whether any of the first `docs` documents' metadata still holds an outbox.
async fn outboxes(c: &Client, keys: &Keys, docs: usize) -> usize {
    let mut n = 0;
    for d in 0..docs {
        let meta = keys.document_meta(&target(d).key(keys));
        let ob: Option<String> = c.hget(meta, Keys::DOCUMENT_OUTBOX).await.expect("hget");
        n += usize::from(ob.is_some());
    }
    n
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_on_a_cluster_apply_every_update_once_and_publish_every_change() {
    two_instances_on_a_cluster(KeyStyleConfig::Seed).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_on_a_cluster_with_tagged_keys_apply_every_update_once() {
    two_instances_on_a_cluster(KeyStyleConfig::Tagged).await;
}

async fn two_instances_on_a_cluster(style: KeyStyleConfig) {
    const DOCS: usize = 16;
    const ROUNDS: usize = 40;
    let cluster = RedisCluster::start().expect("cluster");
    let url = cluster.cluster_url();
    let ns = kitbash_testkit::namespace();
    let mut cfg = config(&url, &ns);
    cfg.redis.key_style = style;
    let keys = cfg.redis.keys();
    let c = client(&url).await;
    let sub = fred::clients::SubscriberClient::new(
        fred::types::config::Config::from_url(&url).expect("url"),
        Some(fred::types::config::PerformanceConfig {
            broadcast_channel_capacity: 1 << 16,
            ..Default::default()
        }),
        None,
        None,
    );
    sub.init().await.expect("subscriber");
    let mut messages = sub.message_rx();
    sub.subscribe(keys.channel_quantum_updates())
        .await
        .expect("subscribe");
    // Drained while the instances run (the receiver's buffer is small).
    let (tx, mut publications) = tokio::sync::mpsc::unbounded_channel();
    let drain = tokio::spawn(async move {
        while let Ok(msg) = messages.recv().await {
            let body: serde_json::Value =
                serde_json::from_slice(msg.value.as_bytes().expect("bytes")).expect("json");
            let id = body["stream_id"].as_str().expect("stream_id").to_owned();
            if tx.send(id).is_err() {
                return;
            }
        }
    });
    let a = start(cfg.clone());
    let b = start(cfg);
    let producer = Producer::new(c.clone(), keys.clone(), 1);
    publish(&producer, &updates(DOCS, ROUNDS, 0)).await;
    caught_up(&c, &keys).await;
    a.stop().await;
    b.stop().await;
    assert_exactly_once_in_order(&c, &keys, DOCS, ROUNDS).await;
    assert_eq!(outboxes(&c, &keys, DOCS).await, 0, "every outbox flushed");

    // Every change is in its document's timeline with its changes-stream id.
    let ids = change_ids(&c, &keys).await;
    for d in 0..DOCS {
        let key = target(d).key(&keys);
        let timeline: Vec<String> = read_all(&c, &keys.document_timeline(&key))
            .await
            .iter()
            .map(|(_, p)| String::from_utf8_lossy(field(p, entity_change::CHANGE)).into_owned())
            .collect();
        let want = ids.get(&key).cloned().unwrap_or_default();
        // The timeline keeps the newest `timeline_max` changes.
        assert!(!timeline.is_empty(), "{key}: a timeline");
        assert_eq!(
            timeline.as_slice(),
            &want[want.len() - timeline.len()..],
            "{key}: timeline ids are the changes stream's"
        );
    }
    // One publication per change, each naming its change's stream id.
    let all: BTreeSet<String> = ids.values().flatten().cloned().collect();
    let mut published = BTreeSet::new();
    while published.len() < all.len() {
        let id = tokio::time::timeout(std::time::Duration::from_secs(30), publications.recv())
            .await
            .expect("a publication for every change")
            .expect("the subscriber did not lag or close");
        assert!(all.contains(&id), "{id} is a change in the stream");
        assert!(published.insert(id), "each change published once");
    }
    drain.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_a_cluster_a_changes_stream_refusing_entries_holds_the_batch_and_loses_nothing() {
    const DOCS: usize = 6;
    const ROUNDS: usize = 5;
    let cluster = RedisCluster::start().expect("cluster");
    let url = cluster.cluster_url();
    let ns = kitbash_testkit::namespace();
    let cfg = config(&url, &ns);
    let keys = cfg.redis.keys();
    let c = client(&url).await;
    // The changes stream's key holds a string: every XADD to it fails (WRONGTYPE), as long as
    // an operator has not fixed it.
    let changes = keys.stream(StreamName::EntityChanges);
    let _: () = c
        .set(&changes, "not a stream", None, None, false)
        .await
        .expect("set");
    let producer = Producer::new(c.clone(), keys.clone(), 1);
    let bad = EntityTarget::Entity {
        name: "bad".into(),
        part: "state".into(),
    };
    producer
        .patch_entity(
            &EntityUpdate::with_op(bad.clone(), EntityOp::Increment, json!({"n": "x"})),
            PARTITIONS,
        )
        .await
        .expect("publish");
    publish(&producer, &updates(DOCS, ROUNDS, 0)).await;
    let a = start(cfg.clone());
    // Documents are committed (their first change), their changes wait in their outboxes.
    eventually(
        "every document committed with its changes in its outbox",
        || {
            let (c, keys) = (c.clone(), keys.clone());
            async move { outboxes(&c, &keys, DOCS).await == DOCS }
        },
    )
    .await;
    assert!(
        a.is_running(),
        "the instance holds the batch, it does not stop"
    );
    let kind: String = c.r#type(&changes).await.expect("type");
    assert_eq!(kind, "string", "nothing was written around the refusal");
    // Only the bad update may be dead-lettered (its partition goes on); no held update is.
    for why in dead_reasons(&c, &keys).await {
        assert!(
            why.contains("number"),
            "a valid update was dead-lettered: {why}"
        );
    }
    // The instance stops (SIGTERM) while holding; another one starts once the stream is
    // writable: it loads the documents, flushes their outboxes, and finishes the backlog.
    assert!(a.stop_within(std::time::Duration::from_secs(20)).await);
    let _: i64 = c.del(&changes).await.expect("del");
    let b = start(cfg);
    caught_up(&c, &keys).await;
    b.stop().await;
    assert_eq!(outboxes(&c, &keys, DOCS).await, 0);
    let reasons = dead_reasons(&c, &keys).await;
    assert_eq!(reasons.len(), 1, "only the bad update: {reasons:?}");
    assert!(reasons[0].contains("number"), "{reasons:?}");
    // Each change once: nothing was written before the refusal, so nothing twice.
    assert!(!change_ids(&c, &keys).await.contains_key(&bad.key(&keys)));
    assert_changes_once_in_order(&c, &keys, DOCS, ROUNDS).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_binary_runs_on_a_cluster_and_stops_cleanly_on_sigterm() {
    const DOCS: usize = 8;
    const ROUNDS: usize = 20;
    let cluster = RedisCluster::start().expect("cluster");
    let url = cluster.cluster_url();
    let ns = kitbash_testkit::namespace();
    let keys = keys(&ns);
    let c = client(&url).await;
    let mut child = daemon_command(env!("CARGO_BIN_EXE_kitbash-entity"), &url, &ns)
        .env("KITBASH__ENTITY__PARTITIONS", PARTITIONS.to_string())
        .env("KITBASH__ENTITY__LEASE_MS", "600")
        .spawn()
        .expect("spawn kitbash-entity");
    let producer = Producer::new(c.clone(), keys.clone(), 1);
    publish(&producer, &updates(DOCS, ROUNDS, 0)).await;
    caught_up(&c, &keys).await;
    signal(&child, "-TERM");
    let status = wait_exit(&mut child).await;
    assert!(status.success(), "{status:?}");
    assert_exactly_once_in_order(&c, &keys, DOCS, ROUNDS).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plain_url_at_a_cluster_node_is_refused_naming_the_cluster_url() {
    let cluster = RedisCluster::start().expect("cluster");
    let ns = kitbash_testkit::namespace();
    let (signals, _) = kitbash_runtime::shutdown::manual();
    let run = kitbash_entity::run(config(&cluster.url(), &ns), signals);
    let err = tokio::time::timeout(std::time::Duration::from_secs(30), run)
        .await
        .expect("refused at start, not running")
        .expect_err("refused");
    assert!(err.to_string().contains("redis-cluster://"), "{err}");
}
