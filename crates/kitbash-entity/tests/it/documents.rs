//! In-process entity instances: 8 concurrent producers × 10,000 patches to one document lose
//! nothing and equal the sequential reference; fidelity of stored and published bytes; bad
//! updates dead-lettered while the partition keeps going; a writer outside the daemon is never
//! lost (the version compare-and-set).

use std::time::Duration;

use fred::prelude::*;
use kitbash_client::Producer;
use kitbash_entity::document;
use kitbash_entity::store::{Change, Committed, DocCommit, DocumentStore, StringStore};
use kitbash_schema::messages::{EntityOp, EntityTarget, EntityUpdate, QuantumUpdate};
use kitbash_schema::{Envelope, StreamName};
use kitbash_testkit::RedisServer;
use serde_json::{Value, json};

use crate::support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eight_producers_times_ten_thousand_patches_to_one_document_lose_nothing() {
    const PRODUCERS: usize = 8;
    const EACH: usize = 10_000;
    let server = RedisServer::start().expect("redis");
    let ns = kitbash_testkit::namespace();
    let keys = keys(&ns);
    let c = client(&server.url()).await;
    let a = start(config(&server.url(), &ns));
    let b = start(config(&server.url(), &ns));
    let target = EntityTarget::Status;
    let stream = Producer::entity_stream(&target, PARTITIONS);
    let mut tasks = Vec::new();
    for w in 0..PRODUCERS {
        let producer = Producer::new(c.clone(), keys.clone(), 1);
        let target = target.clone();
        tasks.push(tokio::spawn(async move {
            let updates: Vec<EntityUpdate> = (0..EACH)
                .map(|i| {
                    if i % 2 == 0 {
                        let by = json!({"total": 1, "by": {format!("w{w}"): 1}});
                        EntityUpdate::with_op(target.clone(), EntityOp::Increment, by)
                    } else {
                        // Merge patches do not commute: the last writer's value must be the
                        // one that entered the stream last.
                        EntityUpdate::merge(target.clone(), json!({"last": {"w": w, "i": i}}))
                    }
                })
                .collect();
            for chunk in updates.chunks(250) {
                producer
                    .publish_batch(stream, chunk)
                    .await
                    .expect("publish");
            }
        }));
    }
    for t in tasks {
        t.await.expect("producer");
    }
    caught_up(&c, &keys).await;
    a.stop().await;
    b.stop().await;

    // The sequential reference: the stream's entries folded in order.
    let mut reference: Option<Value> = None;
    for (_, pairs) in read_all(&c, &keys.stream(stream)).await {
        let env = Envelope::from_fields(pairs.iter().map(|(k, v)| (k.as_bytes(), v.as_slice())))
            .expect("envelope");
        let u: EntityUpdate = env.decode().expect("update");
        reference = document::apply(reference.as_ref(), u.op, &u.patch).expect("applies");
    }
    let key = keys.quantum_status();
    let (doc, version) = stored(&c, &keys, &key).await;
    let doc: Value = serde_json::from_str(&doc.expect("document")).expect("json");
    assert_eq!(
        doc["total"],
        json!(PRODUCERS * EACH / 2),
        "no increment lost"
    );
    for w in 0..PRODUCERS {
        assert_eq!(doc["by"][format!("w{w}")], json!(EACH / 2));
    }
    assert_eq!(
        Some(&doc),
        reference.as_ref(),
        "equals the sequential reference"
    );
    assert_eq!(version as usize, PRODUCERS * EACH, "one version per change");
    assert!(dead_reasons(&c, &keys).await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn documents_and_messages_keep_every_byte() {
    let server = RedisServer::start().expect("redis");
    let ns = kitbash_testkit::namespace();
    let keys = keys(&ns);
    let c = client(&server.url()).await;
    let sub = fred::types::Builder::from_config(
        fred::types::config::Config::from_url(&server.url()).expect("url"),
    )
    .build_subscriber_client()
    .expect("subscriber");
    sub.init().await.expect("subscriber connects");
    let mut rx = sub.message_rx();
    sub.subscribe(keys.channel_quantum_updates())
        .await
        .expect("subscribe");
    let inst = start(config(&server.url(), &ns));
    let producer = Producer::new(c.clone(), keys.clone(), 1);
    let target = EntityTarget::Entity {
        name: "claude".into(),
        part: "identity".into(),
    };
    let text = r#"{"z":0.1,"big":9007199254740993,"huge":18446744073709551615,"tiny":5e-324,"ea":[],"eo":{},"s":"Lévy 😀 \"q\" \u0001","deep":[[[[[[[[[[[[[[[[[[[[{"k":[{}]}]]]]]]]]]]]]]]]]]]]],"a":-0.0}"#;
    let original: Value = serde_json::from_str(text).expect("json");
    producer
        .patch_entity(
            &EntityUpdate::with_op(target.clone(), EntityOp::Replace, original.clone()),
            PARTITIONS,
        )
        .await
        .expect("publish");
    producer
        .patch_entity(
            &EntityUpdate::merge(target.clone(), json!({"z": null, "n": 1.5})),
            PARTITIONS,
        )
        .await
        .expect("publish");
    let mut want = original.clone();
    document::merge_patch(&mut want, &json!({"z": null, "n": 1.5}));
    let key = target.key(&keys);
    let mut got = Vec::new();
    while got.len() < 2 {
        let m = tokio::time::timeout(Duration::from_secs(20), rx.recv())
            .await
            .expect("a message in time")
            .expect("message");
        got.push(m.value.as_bytes().map(<[u8]>::to_vec).unwrap_or_default());
    }
    let (doc, version) = stored(&c, &keys, &key).await;
    assert_eq!(version, 2);
    assert_eq!(
        doc.as_deref().map(str::as_bytes),
        Some(document::to_bytes(&want).as_slice())
    );
    let reader = kitbash_client::Reader::new(c.clone(), keys.clone());
    assert_eq!(
        reader.get_entity(&target).await.expect("get"),
        Some((want.clone(), 2))
    );
    // Key order, integers beyond 2^53, [] vs {}, unicode and depth all survive.
    let back: Value = serde_json::from_str(doc.as_deref().unwrap_or("")).expect("json");
    assert_eq!(back["big"], json!(9007199254740993u64));
    assert_eq!(back["huge"], json!(u64::MAX));
    assert_eq!(back["ea"], json!([]));
    assert_eq!(back["eo"], json!({}));
    // The published bytes are json.dumps of the seed's shape plus version and stream id.
    let changes = read_all(&c, &keys.stream(StreamName::EntityChanges)).await;
    assert_eq!(changes.len(), 2);
    for (i, (data, version)) in [(original, 1u64), (want, 2)].into_iter().enumerate() {
        let expected = QuantumUpdate {
            kind: "entity_update".into(),
            key: key.clone(),
            data,
            version: Some(version),
            stream_id: Some(changes[i].0.clone()),
        };
        assert_eq!(got[i], expected.to_json(), "message {i}");
    }
    inst.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_updates_are_dead_lettered_with_a_reason_and_the_partition_keeps_going() {
    let server = RedisServer::start().expect("redis");
    let ns = kitbash_testkit::namespace();
    let keys = keys(&ns);
    let c = client(&server.url()).await;
    let mut cfg = config(&server.url(), &ns);
    cfg.entity.max_document_bytes = 200;
    let inst = start(cfg);
    let producer = Producer::new(c.clone(), keys.clone(), 1);
    let t = EntityTarget::WorkSummary24h;
    let stream = Producer::entity_stream(&t, PARTITIONS);
    let sk = keys.stream(stream);
    // Not JSON at all.
    let _: String = c
        .xadd(
            sk.as_str(),
            false,
            None,
            "*",
            vec![
                ("type", "entity_update"),
                ("ct", "json"),
                ("d", "{not json"),
            ],
        )
        .await
        .expect("xadd");
    let good = |v: i64| EntityUpdate::merge(t.clone(), json!({"v": v}));
    let mut stale = EntityUpdate::merge(t.clone(), json!({"v": 99}));
    stale.expected_version = Some(7);
    let cases = vec![
        good(1),
        EntityUpdate::with_op(t.clone(), EntityOp::Merge, json!([1, 2])),
        EntityUpdate::with_op(t.clone(), EntityOp::Increment, json!({"v": "x"})),
        stale,
        EntityUpdate::merge(t.clone(), json!({"blob": "x".repeat(500)})),
        good(2),
    ];
    for u in &cases {
        producer.patch_entity(u, PARTITIONS).await.expect("publish");
    }
    caught_up(&c, &keys).await;
    let (doc, version) = stored(&c, &keys, &t.key(&keys)).await;
    assert_eq!(doc.as_deref(), Some(r#"{"v":2}"#));
    assert_eq!(version, 2);
    let reasons = dead_reasons(&c, &keys).await;
    assert_eq!(reasons.len(), 5, "{reasons:#?}");
    for needle in [
        "does not decode",
        "must be a JSON object",
        "not a number",
        "version conflict",
        "max_document_bytes",
    ] {
        assert!(
            reasons.iter().any(|r| r.contains(needle)),
            "a reason naming {needle:?} in {reasons:#?}"
        );
    }
    inst.stop().await;
}

/// A writer outside the daemon commits through the same compare-and-set; the daemon's cached
/// copy is then stale, its commit is refused, it rereads and re-applies: both changes survive.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_writer_outside_the_daemon_is_never_lost() {
    let server = RedisServer::start().expect("redis");
    let ns = kitbash_testkit::namespace();
    let keys = keys(&ns);
    let c = client(&server.url()).await;
    let inst = start(config(&server.url(), &ns));
    let producer = Producer::new(c.clone(), keys.clone(), 1);
    let t = EntityTarget::Daily {
        date: "2025-07-01".into(),
    };
    let key = t.key(&keys);
    producer
        .patch_entity(&EntityUpdate::merge(t.clone(), json!({"a": 1})), PARTITIONS)
        .await
        .expect("publish");
    caught_up(&c, &keys).await;
    // The outside writer: read, change, compare-and-set.
    let store = StringStore::new(c.clone(), keys.clone(), 10);
    let now = store
        .load(std::slice::from_ref(&key))
        .await
        .expect("load")
        .remove(0)
        .expect("a JSON document");
    assert_eq!(now.version, 1);
    let doc = json!({"a": 1, "outside": true});
    let commit = DocCommit {
        key: key.clone(),
        expect: (now.version, now.applied.clone()),
        applied: now.applied.clone(),
        rejected: Vec::new(),
        doc: Some(document::to_bytes(&doc)),
        version: 2,
        ttl_secs: 0,
        changes: vec![Change {
            version: 2,
            entry: String::new(),
            op: "write",
            patch: document::to_bytes(&doc),
            data: document::to_bytes(&doc),
            publish: kitbash_schema::messages::quantum_update_parts("daily_update", &key, &doc, 2),
        }],
    };
    let done: Vec<Committed> = store
        .commit(std::slice::from_ref(&commit))
        .await
        .into_iter()
        .collect::<Result<_, _>>()
        .expect("commit");
    assert_eq!(done, vec![Committed::Yes]);
    // The same commit again is refused: the version moved.
    assert!(matches!(
        store.commit(std::slice::from_ref(&commit)).await.pop(),
        Some(Ok(Committed::Moved(_)))
    ));
    producer
        .patch_entity(&EntityUpdate::merge(t.clone(), json!({"b": 2})), PARTITIONS)
        .await
        .expect("publish");
    caught_up(&c, &keys).await;
    let (doc, version) = stored(&c, &keys, &key).await;
    assert_eq!(doc.as_deref(), Some(r#"{"a":1,"outside":true,"b":2}"#));
    assert_eq!(version, 3);
    inst.stop().await;
}
