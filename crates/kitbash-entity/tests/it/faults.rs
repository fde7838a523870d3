//! Faults against a real redis-server: a Redis crash and restart with AOF plus a few seconds
//! of outage while entity is mid-stream, Redis refusing writes (`maxmemory` 1) for a few seconds
//! mid-backlog, and a shutdown (the in-process SIGTERM) in the middle of a backlog. Every
//! document's updates are applied exactly once and in stream order.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use fred::prelude::*;
use kitbash_client::Producer;
use kitbash_runtime::entries::id_cmp;
use kitbash_schema::messages::{EntityOp, EntityTarget, EntityUpdate};
use kitbash_schema::{Envelope, Keys, StreamName};
use kitbash_testkit::RedisServer;
use serde_json::{Value, json};

use crate::support::*;

pub(crate) fn target(d: usize) -> EntityTarget {
    EntityTarget::Entity {
        name: format!("f{d}"),
        part: "state".into(),
    }
}

/// For every document, rounds `from..from + rounds` of an increment of `n` and a merge of
/// `last` (which shows the order).
pub(crate) fn updates(docs: usize, rounds: usize, from: usize) -> Vec<EntityUpdate> {
    let mut out = Vec::new();
    for i in from..from + rounds {
        for d in 0..docs {
            out.push(EntityUpdate::with_op(
                target(d),
                EntityOp::Increment,
                json!({"n": 1}),
            ));
            out.push(EntityUpdate::merge(target(d), json!({"last": i})));
        }
    }
    out
}

pub(crate) async fn publish(producer: &Producer, us: &[EntityUpdate]) {
    let mut by: BTreeMap<StreamName, Vec<EntityUpdate>> = BTreeMap::new();
    for u in us {
        by.entry(Producer::entity_stream(&u.target, PARTITIONS))
            .or_default()
            .push(u.clone());
    }
    for (s, v) in by {
        for chunk in v.chunks(200) {
            producer.publish_batch(s, chunk).await.expect("publish");
        }
    }
}

/// Every document's changes, from the changes stream: versions 1..=2·rounds without gap or
/// repeat, each `last` the next in stream order, and the stored document the final one.
/// And nothing dead-lettered.
pub(crate) async fn assert_exactly_once_in_order(
    c: &Client,
    keys: &Keys,
    docs: usize,
    rounds: usize,
) {
    assert_changes_once_in_order(c, keys, docs, rounds).await;
    assert!(dead_reasons(c, keys).await.is_empty());
}

/// [`assert_exactly_once_in_order`] without the dead-letter check (a test that also sends a
/// bad update to another document checks its dead letters itself).
pub(crate) async fn assert_changes_once_in_order(
    c: &Client,
    keys: &Keys,
    docs: usize,
    rounds: usize,
) {
    let mut seen: BTreeMap<String, Vec<(u64, Value)>> = BTreeMap::new();
    for (_, pairs) in read_all(c, &keys.stream(StreamName::EntityChanges)).await {
        let key = String::from_utf8_lossy(field(&pairs, "key")).into_owned();
        let v: u64 = String::from_utf8_lossy(field(&pairs, "version"))
            .parse()
            .expect("version");
        let data: Value = serde_json::from_slice(field(&pairs, "data")).expect("data");
        seen.entry(key).or_default().push((v, data));
    }
    assert_eq!(seen.len(), docs);
    for (key, changes) in &seen {
        assert_eq!(changes.len(), 2 * rounds, "{key}: every update once");
        for (k, (v, data)) in changes.iter().enumerate() {
            assert_eq!(*v, k as u64 + 1, "{key}: versions in order");
            assert_eq!(data["n"], json!(k / 2 + 1), "{key}: change {k}");
            if k % 2 == 1 {
                assert_eq!(data["last"], json!(k / 2), "{key}: merge {k} in order");
            }
        }
        let (doc, version) = stored(c, keys, key).await;
        assert_eq!(version as usize, 2 * rounds, "{key}");
        let doc: Value = serde_json::from_str(&doc.expect("doc")).expect("json");
        assert_eq!(doc, json!({"n": rounds, "last": rounds - 1}), "{key}");
    }
}

async fn wait_reconnected(c: &Client) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while c.ping::<String>(None).await.is_err() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "client never reconnected"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_crash_restart_with_aof_and_an_outage_lose_and_repeat_nothing() {
    const DOCS: usize = 24;
    const ROUNDS: usize = 200;
    let mut server = RedisServer::builder()
        .appendonly(kitbash_testkit::Appendfsync::Always)
        .start()
        .expect("redis");
    let ns = kitbash_testkit::namespace();
    let keys = keys(&ns);
    let c = client(&server.url()).await;
    let producer = Producer::new(c.clone(), keys.clone(), 1);
    let a = start(config(&server.url(), &ns));
    let b = start(config(&server.url(), &ns));
    // The first half is acknowledged by Redis (so in the AOF), and entity is still applying it
    // when Redis dies: batches are cut between their document commits and their checkpoints.
    publish(&producer, &updates(DOCS, ROUNDS / 2, 0)).await;
    server.kill().expect("kill -9 redis");
    // The outage itself (not a synchronisation): the instances keep failing to reach Redis
    // for a few seconds and must stay up.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(
        a.is_running() && b.is_running(),
        "instances survive the outage"
    );
    server.restart().expect("restart redis (AOF replays)");
    wait_reconnected(&c).await;
    publish(&producer, &updates(DOCS, ROUNDS / 2, ROUNDS / 2)).await;
    caught_up(&c, &keys).await;
    assert!(
        a.is_running() && b.is_running(),
        "instances resumed by themselves"
    );
    a.stop().await;
    b.stop().await;
    assert_exactly_once_in_order(&c, &keys, DOCS, ROUNDS).await;
}

/// The shutdown token is what SIGTERM cancels in the binary. Cancelled in the middle of a
/// backlog, the instance finishes the batch in hand: afterwards every document holds exactly
/// the updates up to its partition's checkpoint — none half-done past it, none missing before
/// it. A second instance then finishes the backlog, each update once and in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_mid_backlog_commits_the_batch_in_hand() {
    const DOCS: usize = 48;
    const ROUNDS: usize = 300;
    let server = RedisServer::start().expect("redis");
    let ns = kitbash_testkit::namespace();
    let keys = keys(&ns);
    let c = client(&server.url()).await;
    let producer = Producer::new(c.clone(), keys.clone(), 1);
    publish(&producer, &updates(DOCS, ROUNDS, 0)).await;
    let mut cfg = config(&server.url(), &ns);
    // Keep every change: the check reads them all back.
    cfg.entity.changes_max = 1_000_000;
    let grace = Duration::from_millis(cfg.consumer.grace_ms);
    let first = start(cfg.clone());
    // Wait until it has committed at least one batch somewhere, then stop it mid-backlog.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    'working: loop {
        for p in 0..PARTITIONS {
            let cp: Option<String> = c
                .hget(
                    keys.checkpoint(StreamName::EntityPart(p)),
                    Keys::CHECKPOINT_LAST_ID,
                )
                .await
                .expect("hget");
            if cp.is_some() {
                break 'working;
            }
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "entity never committed"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let stopped = first.stop_within(grace).await;
    assert!(stopped, "the instance stopped within consumer.grace_ms");
    assert!(
        !kitbash_entity::caught_up(&c, &keys, PARTITIONS)
            .await
            .expect("caught_up"),
        "stopped with work left (the test means a mid-backlog stop)"
    );

    // Per document: its version equals the number of its updates at or before its partition's
    // checkpoint.
    let mut below: HashMap<String, u64> = HashMap::new();
    for p in 0..PARTITIONS {
        let s = StreamName::EntityPart(p);
        let cp: Option<String> = c
            .hget(keys.checkpoint(s), Keys::CHECKPOINT_LAST_ID)
            .await
            .expect("hget");
        let Some(cp) = cp else { continue };
        for (id, pairs) in read_all(&c, &keys.stream(s)).await {
            if id_cmp(&id, &cp).is_gt() {
                break;
            }
            let env =
                Envelope::from_fields(pairs.iter().map(|(k, v)| (k.as_bytes(), v.as_slice())))
                    .expect("envelope");
            let u: EntityUpdate = env.decode().expect("update");
            *below.entry(u.target.key(&keys)).or_default() += 1;
        }
    }
    for d in 0..DOCS {
        let key = target(d).key(&keys);
        let (_, version) = stored(&c, &keys, &key).await;
        assert_eq!(
            version,
            below.get(&key).copied().unwrap_or(0),
            "{key}: committed exactly up to its partition's checkpoint"
        );
    }

    let second = start(cfg);
    caught_up(&c, &keys).await;
    second.stop().await;
    assert_exactly_once_in_order(&c, &keys, DOCS, ROUNDS).await;
}

/// The JSON envelope's fields of `m`, as text (for
/// [`kitbash_testkit::support::append_to_streams_then_refuse_writes`]).
fn json_fields<M: kitbash_schema::Message>(m: &M) -> Vec<(&'static str, String)> {
    Envelope::json(m)
        .expect("encode")
        .to_fields()
        .into_iter()
        .map(|(k, v)| (k, String::from_utf8(v).expect("JSON is text")))
        .collect()
}

/// Redis refusing writes (`maxmemory` 1 byte, `noeviction`) for a few seconds in the middle of
/// a backlog, with more updates appended to every partition just before: the partitions hold
/// their batches and report not ready meanwhile, nothing is dead-lettered, and afterwards every
/// document has each of its updates exactly once, in stream order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn while_redis_refuses_writes_updates_are_held_then_each_applied_once_in_order_and_none_dead()
{
    use kitbash_testkit::support::{
        EntryFields, allow_writes, append_to_streams_then_refuse_writes, eventually,
        free_local_addr, readiness,
    };
    const DOCS: usize = 24;
    const ROUNDS: usize = 100;
    const HELD: usize = 5;
    let server = RedisServer::start().expect("redis");
    let ns = kitbash_testkit::namespace();
    let keys = keys(&ns);
    let c = client(&server.url()).await;
    let producer = Producer::new(c.clone(), keys.clone(), 1);
    let mut cfg = config(&server.url(), &ns);
    cfg.entity.changes_max = 1_000_000;
    let admin = free_local_addr();
    cfg.admin.listen = admin.to_string();
    publish(&producer, &updates(DOCS, ROUNDS, 0)).await;
    let instance = start(cfg);
    eventually("a first batch committed", || async {
        let mut any = false;
        for p in 0..PARTITIONS {
            let cp: Option<String> = c
                .hget(
                    keys.checkpoint(StreamName::EntityPart(p)),
                    Keys::CHECKPOINT_LAST_ID,
                )
                .await
                .expect("hget");
            any |= cp.is_some();
        }
        any
    })
    .await;
    // The last rounds, appended behind the backlog of each partition in the same MULTI that
    // makes Redis refuse writes.
    let mut held: BTreeMap<String, Vec<EntryFields>> = BTreeMap::new();
    let mut partitions: Vec<u32> = Vec::new();
    for u in updates(DOCS, HELD, ROUNDS) {
        let p = kitbash_schema::streams::partition_of(&u.target.route_key(), PARTITIONS);
        if !partitions.contains(&p) {
            partitions.push(p);
        }
        held.entry(keys.stream(StreamName::EntityPart(p)))
            .or_default()
            .push(json_fields(&u));
    }
    let streams: Vec<(&str, &[EntryFields])> = held
        .iter()
        .map(|(s, e)| (s.as_str(), e.as_slice()))
        .collect();
    let checks: Vec<String> = partitions
        .iter()
        .map(|p| format!("entity partition {p}"))
        .collect();
    // Every partition taken before the fault: a lease not yet acquired cannot be while Redis
    // refuses writes (`SET` is refused too), and its partition would have no worker to hold.
    kitbash_testkit::support::every_check_passing(admin, &checks).await;
    append_to_streams_then_refuse_writes(&server, &streams).expect("refuse writes");
    eventually(
        "every partition with held updates not ready while Redis refuses writes",
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
        dead_reasons(&c, &keys).await,
        Vec::<String>::new(),
        "nothing dead-lettered while Redis refuses writes"
    );
    assert!(
        instance.is_running(),
        "the instance waits, it does not fail"
    );
    allow_writes(&server).expect("allow writes");
    caught_up(&c, &keys).await;
    eventually("every partition ready again, /readyz 200", || async {
        checks
            .iter()
            .all(|check| readiness(admin, check) == (200, Some(true)))
    })
    .await;
    instance.stop().await;
    assert_exactly_once_in_order(&c, &keys, DOCS, ROUNDS + HELD).await;
}
