//! The consumer-group loop: crash recovery by reclaim, poison entries, retries, NOGROUP after a
//! Redis restart, and draining on shutdown.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use fred::prelude::*;
use fred::types::Value;
use kitbash_runtime::consumer::{Delivery, Handler, Outcome, StreamConsumer};
use kitbash_runtime::health::Health;
use kitbash_runtime::idempotency::apply_once;
use kitbash_runtime::metrics::Metrics;
use kitbash_runtime::{CancellationToken, Redis};
use kitbash_schema::messages::Tick;
use kitbash_schema::{Keys, StreamName};
use kitbash_testkit::RedisServer;
use tokio::sync::mpsc;

use crate::support::*;

const S: StreamName = StreamName::Queries;

fn tick(i: u64) -> Tick {
    Tick {
        symbol: "SPY".into(),
        price: 100.0 + i as f64,
        size: 1.0,
        trades: i,
        ts: i as f64,
    }
}

fn consumer(r: &Redis, keys: &Keys, name: &str, health: &Health) -> StreamConsumer {
    StreamConsumer::new(
        r.clone(),
        keys,
        S,
        "testgroup",
        name,
        fast_consumer(),
        Metrics::new(),
        health.clone(),
    )
}

/// Applies each tick once (idempotently, via `apply_once`) by incrementing `effects` by
/// `trades`; records what it saw.
#[derive(Clone)]
struct CountingHandler {
    redis: Redis,
    keys: Keys,
    seen: Arc<Mutex<Vec<String>>>,
    /// When set, the handler applies the first `n` entries of its first batch, reports, and then
    /// hangs forever (the test aborts it: a consumer killed mid-batch).
    crash_after: Option<(usize, mpsc::UnboundedSender<()>)>,
}

impl CountingHandler {
    fn new(redis: &Redis, keys: &Keys) -> Self {
        Self {
            redis: redis.clone(),
            keys: keys.clone(),
            seen: Arc::default(),
            crash_after: None,
        }
    }

    async fn apply(&self, d: &Delivery<Tick>) {
        let effects = self.keys.stream(S) + ":effects";
        let marker = self.keys.done_marker(S, &d.id);
        apply_once(
            &self.redis.client,
            &marker,
            3600,
            std::slice::from_ref(&effects),
            &[vec![
                "HINCRBY".into(),
                effects.as_str().into(),
                d.id.as_str().into(),
                1.into(),
            ]],
        )
        .await
        .expect("apply_once");
    }
}

impl Handler<Tick> for CountingHandler {
    async fn handle(&mut self, batch: Vec<Delivery<Tick>>) -> Vec<Outcome> {
        if let Some((n, tx)) = self.crash_after.take() {
            for d in batch.iter().take(n) {
                self.apply(d).await;
            }
            let _ = tx.send(());
            std::future::pending::<()>().await;
        }
        for d in &batch {
            self.apply(d).await;
            self.seen.lock().expect("lock").push(d.id.clone());
        }
        vec![Outcome::Ack; batch.len()]
    }
}

async fn effects(r: &Redis, keys: &Keys) -> HashMap<String, i64> {
    r.client
        .hgetall(keys.stream(S) + ":effects")
        .await
        .expect("hgetall")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_consumer_mid_batch_is_reclaimed_and_effects_apply_once() {
    let server = RedisServer::start().expect("redis");
    let keys = keys();
    let r = connect(&server.url()).await;
    let mut ids = Vec::new();
    for i in 0..25 {
        ids.push(xadd_msg(&r, &keys, S, &tick(i)).await);
    }

    // Consumer A applies 4 of its first batch of 10 and dies.
    let (tx, mut rx) = mpsc::unbounded_channel();
    let mut a_handler = CountingHandler::new(&r, &keys);
    a_handler.crash_after = Some((4, tx));
    let a_redis = connect(&server.url()).await;
    let a = consumer(&a_redis, &keys, "consumer-a", &Health::new());
    let a_task = tokio::spawn(a.run(a_handler, CancellationToken::new()));
    rx.recv().await.expect("A reached its crash point");
    a_task.abort();
    assert_eq!(
        pending(&r, &keys, S, "testgroup").await,
        10,
        "A's batch is stranded in its PEL"
    );

    // Consumer B takes over A's entries once they are idle and processes everything.
    let b_handler = CountingHandler::new(&r, &keys);
    let seen = b_handler.seen.clone();
    let stop = CancellationToken::new();
    let b = tokio::spawn(
        consumer(&r, &keys, "consumer-b", &Health::new()).run(b_handler, stop.clone()),
    );
    eventually("every entry applied", || async {
        effects(&r, &keys).await.len() == ids.len()
    })
    .await;
    eventually("nothing pending", || async {
        pending(&r, &keys, S, "testgroup").await == 0
    })
    .await;
    stop.cancel();
    let stats = b.await.expect("join");

    let fx = effects(&r, &keys).await;
    for id in &ids {
        assert_eq!(fx.get(id), Some(&1), "entry {id} applied exactly once");
    }
    assert_eq!(stats.reclaimed, 10);
    let mut seen = seen.lock().expect("lock").clone();
    seen.sort();
    seen.dedup();
    assert_eq!(seen.len(), ids.len(), "B handled every entry");
}

/// Acks what decodes, dead-letters the rest with the reason, keeps going.
#[derive(Clone, Default)]
struct Recorder {
    seen: Arc<Mutex<Vec<Tick>>>,
    retry_symbol: Option<String>,
    dead_symbol: Option<String>,
}

impl Handler<Tick> for Recorder {
    async fn handle(&mut self, batch: Vec<Delivery<Tick>>) -> Vec<Outcome> {
        batch
            .into_iter()
            .map(|d| {
                if Some(&d.message.symbol) == self.retry_symbol.as_ref() {
                    return Outcome::Retry("downstream unavailable".into());
                }
                if Some(&d.message.symbol) == self.dead_symbol.as_ref() {
                    return Outcome::Dead("symbol is delisted".into());
                }
                self.seen.lock().expect("lock").push(d.message);
                Outcome::Ack
            })
            .collect()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn poison_entries_go_to_the_dead_letter_stream_with_the_reason() {
    let server = RedisServer::start().expect("redis");
    let keys = keys();
    let r = connect(&server.url()).await;
    xadd_msg(&r, &keys, S, &tick(1)).await;
    let no_body = xadd_raw(&r, &keys, S, vec![("type", b"tick"), ("ct", b"msgpack")]).await;
    let garbage = xadd_raw(
        &r,
        &keys,
        S,
        vec![("type", b"tick"), ("ct", b"msgpack"), ("d", b"\xc1\xff")],
    )
    .await;
    let wrong_type = xadd_raw(
        &r,
        &keys,
        S,
        vec![("type", b"query"), ("ct", b"json"), ("d", b"{}")],
    )
    .await;
    let bad_price = xadd_raw(
        &r,
        &keys,
        S,
        vec![
            ("type", b"tick"),
            ("ct", b"json"),
            (
                "d",
                br#"{"symbol":"SPY","price":-3,"size":1,"trades":1,"ts":0}"#,
            ),
        ],
    )
    .await;
    let future_version = xadd_raw(
        &r,
        &keys,
        S,
        vec![
            ("type", b"tick"),
            ("v", b"9"),
            ("ct", b"json"),
            ("d", b"{}"),
        ],
    )
    .await;
    let bad_utf8 = xadd_raw(
        &r,
        &keys,
        S,
        vec![("type", b"\xff\xfe"), ("ct", b"json"), ("d", b"{}")],
    )
    .await;
    let json_ok = xadd_raw(
        &r,
        &keys,
        S,
        vec![
            ("type", b"tick"),
            ("ct", b"json"),
            (
                "d",
                br#"{"symbol":"QQQ","price":3.5,"size":0,"trades":0,"ts":1}"#,
            ),
        ],
    )
    .await;
    let delisted = xadd_msg(
        &r,
        &keys,
        S,
        &Tick {
            symbol: "DEAD".into(),
            ..tick(3)
        },
    )
    .await;
    xadd_msg(&r, &keys, S, &tick(2)).await;

    let handler = Recorder {
        dead_symbol: Some("DEAD".into()),
        ..Recorder::default()
    };
    let seen = handler.seen.clone();
    let stop = CancellationToken::new();
    let task = tokio::spawn(consumer(&r, &keys, "c1", &Health::new()).run(handler, stop.clone()));
    eventually("three good entries handled", || async {
        seen.lock().expect("lock").len() == 3
    })
    .await;
    eventually("nothing pending", || async {
        pending(&r, &keys, S, "testgroup").await == 0
    })
    .await;
    stop.cancel();
    let stats = task.await.expect("join");
    assert_eq!(stats.dead, 7);
    assert!(
        seen.lock().expect("lock").iter().any(|t| t.symbol == "QQQ"),
        "JSON bodies from foreign producers are accepted"
    );

    let letters = dead_letters(&r, &keys, S).await;
    let reason = |id: &str| {
        letters
            .iter()
            .find(|l| l.id == id)
            .map(|l| l.reason.clone())
            .unwrap_or_else(|| panic!("{id} not dead-lettered"))
    };
    assert_eq!(reason(&no_body), "missing field `d`");
    assert!(
        reason(&garbage).starts_with("body does not decode"),
        "{}",
        reason(&garbage)
    );
    assert_eq!(reason(&wrong_type), "expected type `tick`, got `query`");
    assert!(reason(&bad_price).contains("price -3 is not a finite positive number"));
    assert!(reason(&future_version).contains("version 9 is newer"));
    assert!(reason(&bad_utf8).contains("not valid UTF-8"));
    assert_eq!(reason(&delisted), "symbol is delisted");
    assert!(!letters.iter().any(|l| l.id == json_ok));
    // The original fields travel with the letter, so the entry can be replayed after a fix.
    let g = letters
        .iter()
        .find(|l| l.id == garbage)
        .expect("garbage letter");
    assert!(g.fields.iter().any(|(k, v)| k == b"d" && v == b"\xc1\xff"));
    assert_eq!(g.group, "testgroup");
    assert_eq!(g.stream, "queries");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_entry_that_keeps_failing_is_dead_lettered_after_max_deliveries() {
    let server = RedisServer::start().expect("redis");
    let keys = keys();
    let r = connect(&server.url()).await;
    let flaky = xadd_msg(
        &r,
        &keys,
        S,
        &Tick {
            symbol: "FLAKY".into(),
            ..tick(1)
        },
    )
    .await;
    xadd_msg(&r, &keys, S, &tick(2)).await;
    let handler = Recorder {
        retry_symbol: Some("FLAKY".into()),
        ..Recorder::default()
    };
    let stop = CancellationToken::new();
    let task = tokio::spawn(consumer(&r, &keys, "c1", &Health::new()).run(handler, stop.clone()));
    eventually("flaky entry dead-lettered", || async {
        !dead_letters(&r, &keys, S).await.is_empty()
    })
    .await;
    stop.cancel();
    let stats = task.await.expect("join");
    let letters = dead_letters(&r, &keys, S).await;
    assert_eq!(letters.len(), 1);
    assert_eq!(letters[0].id, flaky);
    assert_eq!(letters[0].deliveries, 4);
    assert!(
        letters[0].reason.contains("delivered 4 times"),
        "{}",
        letters[0].reason
    );
    assert_eq!(stats.retried, 3);
    assert_eq!(pending(&r, &keys, S, "testgroup").await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn own_pending_entries_are_processed_first_after_a_restart() {
    let server = RedisServer::start().expect("redis");
    let keys = keys();
    let r = connect(&server.url()).await;
    for i in 0..5 {
        xadd_msg(&r, &keys, S, &tick(i)).await;
    }
    // A previous life of the same consumer read 5 entries and died before acknowledging.
    let _: Value = r
        .client
        .xgroup_create(keys.stream(S), "testgroup", "0", true)
        .await
        .expect("group");
    let _: Value = r
        .client
        .xreadgroup(
            "testgroup",
            "same-name",
            Some(5),
            None,
            false,
            keys.stream(S),
            ">",
        )
        .await
        .expect("read");
    assert_eq!(pending(&r, &keys, S, "testgroup").await, 5);
    let handler = Recorder::default();
    let seen = handler.seen.clone();
    let stop = CancellationToken::new();
    let mut cfg = fast_consumer();
    cfg.claim_idle_ms = 3_600_000; // reclaim cannot be what picks them up
    let c = StreamConsumer::new(
        r.clone(),
        &keys,
        S,
        "testgroup",
        "same-name",
        cfg,
        Metrics::new(),
        Health::new(),
    );
    let task = tokio::spawn(c.run(handler, stop.clone()));
    eventually("own pending entries processed", || async {
        seen.lock().expect("lock").len() == 5
    })
    .await;
    eventually("nothing pending", || async {
        pending(&r, &keys, S, "testgroup").await == 0
    })
    .await;
    stop.cancel();
    task.await.expect("join");
}

/// Records what it handles; while `hold` is set, waits in its batch until the test opens it.
struct Gated {
    seen: Arc<Mutex<Vec<Tick>>>,
    in_batch: mpsc::UnboundedSender<()>,
    gate: tokio::sync::watch::Receiver<bool>,
}

impl Handler<Tick> for Gated {
    async fn handle(&mut self, batch: Vec<Delivery<Tick>>) -> Vec<Outcome> {
        let _ = self.in_batch.send(());
        let _ = self.gate.wait_for(|open| *open).await;
        let mut seen = self.seen.lock().expect("lock");
        seen.extend(batch.iter().map(|d| d.message.clone()));
        vec![Outcome::Ack; batch.len()]
    }
}

/// The consumer is held inside its first batch while Redis restarts without persistence and new
/// entries arrive: so the group is certainly missing, and those entries certainly exist, when
/// the consumer next reads. Recreating the group at `$` would skip them every time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nogroup_after_a_redis_restart_without_persistence_is_recovered() {
    let mut server = RedisServer::start().expect("redis");
    let keys = keys();
    let r = connect(&server.url()).await;
    xadd_msg(&r, &keys, S, &tick(1)).await;
    let (in_batch, mut entered) = mpsc::unbounded_channel();
    let (open, gate) = tokio::sync::watch::channel(false);
    let seen: Arc<Mutex<Vec<Tick>>> = Arc::default();
    let handler = Gated {
        seen: seen.clone(),
        in_batch,
        gate,
    };
    let health = Health::new();
    let stop = CancellationToken::new();
    let c = StreamConsumer::new(
        r.clone(),
        &keys,
        S,
        "testgroup",
        "c1",
        fast_consumer(),
        Metrics::new(),
        health.clone(),
    );
    let task = tokio::spawn(c.run(handler, stop.clone()));
    entered.recv().await.expect("first batch");

    server.kill().expect("kill");
    server.restart().expect("restart"); // no persistence: the stream and the group are gone
    eventually("client reconnected", || async { r.ping().await }).await;
    xadd_msg(&r, &keys, S, &tick(2)).await;
    xadd_msg(&r, &keys, S, &tick(3)).await;
    open.send_replace(true);
    eventually("entries after the restart handled", || async {
        seen.lock().expect("lock").len() == 3
    })
    .await;
    stop.cancel();
    let stats = task.await.expect("join");
    assert!(stats.group_recreated >= 1);
    assert!(health.ready());
    let trades: Vec<u64> = seen
        .lock()
        .expect("lock")
        .iter()
        .map(|t| t.trades)
        .collect();
    assert_eq!(trades, vec![1, 2, 3], "nothing lost, nothing repeated");
}

/// The stream itself is lost with its group and comes back with ids *below* the last one the
/// consumer saw (Redis restored from an older file, or the stream deleted and refilled with
/// explicit ids): recreating the group at the last id seen would never deliver them; it must be
/// created at `0`. Held inside the first batch while the stream is replaced, as above.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_stream_refilled_with_smaller_ids_is_read_from_its_start() {
    let server = RedisServer::start().expect("redis");
    let keys = keys();
    let r = connect(&server.url()).await;
    xadd_msg(&r, &keys, S, &tick(1)).await;
    let (in_batch, mut entered) = mpsc::unbounded_channel();
    let (open, gate) = tokio::sync::watch::channel(false);
    let seen: Arc<Mutex<Vec<Tick>>> = Arc::default();
    let handler = Gated {
        seen: seen.clone(),
        in_batch,
        gate,
    };
    let stop = CancellationToken::new();
    let c = StreamConsumer::new(
        r.clone(),
        &keys,
        S,
        "testgroup",
        "c1",
        fast_consumer(),
        Metrics::new(),
        Health::new(),
    );
    let task = tokio::spawn(c.run(handler, stop.clone()));
    entered.recv().await.expect("first batch");
    // The stream (and its group with it) is gone; a new one holds ids far below the first one's.
    let _: i64 = r.client.del(keys.stream(S)).await.expect("del");
    for (i, id) in [(2, "5-1"), (3, "5-2")] {
        let env = kitbash_schema::Envelope::msgpack(&tick(i)).expect("encode");
        let fields: Vec<(&str, Value)> = env
            .to_fields()
            .into_iter()
            .map(|(k, v)| (k, Value::Bytes(v.into())))
            .collect();
        let _: String = r
            .client
            .xadd(keys.stream(S), false, None, id, fields)
            .await
            .expect("xadd");
    }
    open.send_replace(true);
    eventually("entries of the new stream handled", || async {
        seen.lock().expect("lock").len() == 3
    })
    .await;
    stop.cancel();
    let stats = task.await.expect("join");
    assert!(stats.group_recreated >= 1);
}

/// Cancels shutdown as soon as it holds a batch, then takes its time finishing it.
struct SlowDrainer {
    stop: CancellationToken,
    handled: Arc<Mutex<usize>>,
}

impl Handler<Tick> for SlowDrainer {
    async fn handle(&mut self, batch: Vec<Delivery<Tick>>) -> Vec<Outcome> {
        self.stop.cancel();
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
        *self.handled.lock().expect("lock") += batch.len();
        vec![Outcome::Ack; batch.len()]
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_finishes_and_acknowledges_the_batch_in_hand() {
    let server = RedisServer::start().expect("redis");
    let keys = keys();
    let r = connect(&server.url()).await;
    for i in 0..25 {
        xadd_msg(&r, &keys, S, &tick(i)).await;
    }
    let stop = CancellationToken::new();
    let handled = Arc::new(Mutex::new(0));
    let handler = SlowDrainer {
        stop: stop.clone(),
        handled: handled.clone(),
    };
    let stats = consumer(&r, &keys, "c1", &Health::new())
        .run(handler, stop)
        .await;
    assert_eq!(
        *handled.lock().expect("lock"),
        10,
        "exactly the batch in hand"
    );
    assert_eq!(stats.acked, 10);
    assert_eq!(
        pending(&r, &keys, S, "testgroup").await,
        0,
        "the batch in hand was acknowledged"
    );
    // The consumer left the group since it held nothing.
    let consumers: Value = r
        .client
        .xinfo_consumers(keys.stream(S), "testgroup")
        .await
        .expect("xinfo");
    assert!(
        matches!(consumers, Value::Array(ref a) if a.is_empty()),
        "{consumers:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn apply_once_applies_effects_a_single_time() {
    let server = RedisServer::start().expect("redis");
    let keys = keys();
    let r = connect(&server.url()).await;
    let marker = keys.done_marker(S, "1-0");
    let counter = keys.stream(S) + ":n";
    let cmds = vec![vec![Value::from("INCR"), Value::from(counter.as_str())]];
    assert!(
        apply_once(
            &r.client,
            &marker,
            60,
            std::slice::from_ref(&counter),
            &cmds
        )
        .await
        .expect("first")
    );
    assert!(
        !apply_once(
            &r.client,
            &marker,
            60,
            std::slice::from_ref(&counter),
            &cmds
        )
        .await
        .expect("second")
    );
    let n: i64 = r.client.get(&counter).await.expect("get");
    assert_eq!(n, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_consumers_of_dead_processes_are_forgotten_once_empty() {
    let server = RedisServer::start().expect("redis");
    let keys = keys();
    let r = connect(&server.url()).await;
    xadd_msg(&r, &keys, S, &tick(1)).await;
    let _: Value = r
        .client
        .xgroup_create(keys.stream(S), "testgroup", "0", true)
        .await
        .expect("group");
    // A dead process's consumer that still holds an entry, and one that holds nothing.
    let _: Value = r
        .client
        .xreadgroup(
            "testgroup",
            "dead-with-entry",
            Some(1),
            None,
            false,
            keys.stream(S),
            ">",
        )
        .await
        .expect("read");
    let _: Value = r
        .client
        .xgroup_createconsumer(keys.stream(S), "testgroup", "dead-empty")
        .await
        .expect("create");
    let mut cfg = fast_consumer();
    cfg.forget_idle_ms = 200;
    cfg.claim_idle_ms = 3_600_000; // keep the entry where it is: its holder must survive
    let c = StreamConsumer::new(
        r.clone(),
        &keys,
        S,
        "testgroup",
        "alive",
        cfg,
        Metrics::new(),
        Health::new(),
    );
    let stop = CancellationToken::new();
    let task = tokio::spawn(c.run(Recorder::default(), stop.clone()));
    let names = || async {
        let v: Value = r
            .client
            .xinfo_consumers(keys.stream(S), "testgroup")
            .await
            .expect("xinfo");
        format!("{v:?}")
    };
    eventually("the empty dead consumer is deleted", || async {
        !names().await.contains("dead-empty")
    })
    .await;
    assert!(
        names().await.contains("dead-with-entry"),
        "a consumer holding entries is kept"
    );
    assert!(names().await.contains("alive"));
    stop.cancel();
    task.await.expect("join");
}

/// (entry id, producer mid) of every delivery.
type Seen = Arc<Mutex<Vec<(String, Option<String>)>>>;

/// Hands back `Retry` the first time it sees an entry, `Ack` after; records every delivery.
#[derive(Default, Clone)]
struct RetryOnce {
    seen: Seen,
    failed: Arc<Mutex<std::collections::HashSet<String>>>,
}

impl Handler<Tick> for RetryOnce {
    async fn handle(&mut self, batch: Vec<Delivery<Tick>>) -> Vec<Outcome> {
        let mut out = Vec::new();
        for d in &batch {
            self.seen
                .lock()
                .expect("lock")
                .push((d.id.clone(), d.mid.clone()));
            if self.failed.lock().expect("lock").insert(d.id.clone()) {
                out.push(Outcome::Retry("first try".into()));
            } else {
                out.push(Outcome::Ack);
            }
        }
        out
    }
}

async fn xadd_with_mid(r: &Redis, keys: &Keys, t: &Tick, mid: &str) -> String {
    let env = kitbash_schema::Envelope::msgpack(t)
        .expect("encode")
        .with_mid(mid);
    let fields: Vec<(&str, Value)> = env
        .to_fields()
        .into_iter()
        .map(|(k, v)| (k, Value::Bytes(v.into())))
        .collect();
    r.client
        .xadd::<String, _, _, _, _>(keys.stream(S), false, None, "*", fields)
        .await
        .expect("xadd")
}

/// A producer re-sends a message with the same `mid` (twice now, once more after the consumer
/// restarted): the handler sees one carrier — and sees it again when it asks for a retry, since
/// a redelivery of the first carrier is not a copy.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_re_sent_with_the_same_mid_is_handled_once_across_restarts() {
    let server = RedisServer::start().expect("redis");
    let keys = keys();
    let r = connect(&server.url()).await;
    let first = xadd_with_mid(&r, &keys, &tick(1), "m-1").await;
    xadd_with_mid(&r, &keys, &tick(1), "m-1").await;
    xadd_with_mid(&r, &keys, &tick(2), "m-2").await;
    let handler = RetryOnce::default();
    let seen = handler.seen.clone();
    let stop = CancellationToken::new();
    let task =
        tokio::spawn(consumer(&r, &keys, "c1", &Health::new()).run(handler.clone(), stop.clone()));
    eventually("both messages acknowledged", || async {
        seen.lock().expect("lock").len() == 4 && pending(&r, &keys, S, "testgroup").await == 0
    })
    .await;
    stop.cancel();
    let stats = task.await.expect("join");
    assert_eq!(stats.duplicates, 1);
    let firsts: Vec<String> = seen
        .lock()
        .expect("lock")
        .iter()
        .filter(|(_, m)| m.as_deref() == Some("m-1"))
        .map(|(id, _)| id.clone())
        .collect();
    assert_eq!(
        firsts,
        vec![first.clone(), first],
        "the first carrier, delivered twice"
    );

    // A new process (new consumer): the window lives in Redis.
    xadd_with_mid(&r, &keys, &tick(1), "m-1").await;
    xadd_with_mid(&r, &keys, &tick(3), "m-3").await;
    let stop = CancellationToken::new();
    let task = tokio::spawn(consumer(&r, &keys, "c2", &Health::new()).run(handler, stop.clone()));
    eventually("the new message handled", || async {
        seen.lock()
            .expect("lock")
            .iter()
            .filter(|(_, m)| m.as_deref() == Some("m-3"))
            .count()
            == 2
    })
    .await;
    stop.cancel();
    let stats = task.await.expect("join");
    assert_eq!(stats.duplicates, 1, "the third copy of m-1 was dropped");
    assert_eq!(pending(&r, &keys, S, "testgroup").await, 0);
}

/// Cancels shutdown as soon as it holds a batch and freezes Redis before answering.
struct FreezeRedis {
    stop: CancellationToken,
    freeze: mpsc::UnboundedSender<()>,
    frozen: tokio::sync::watch::Receiver<bool>,
}

impl Handler<Tick> for FreezeRedis {
    async fn handle(&mut self, batch: Vec<Delivery<Tick>>) -> Vec<Outcome> {
        let _ = self.freeze.send(());
        let _ = self.frozen.wait_for(|f| *f).await;
        self.stop.cancel();
        vec![Outcome::Ack; batch.len()]
    }
}

/// The acknowledgement cannot reach Redis (paused) after shutdown began: the loop gives up at
/// once and leaves the entries pending (they are redelivered), instead of retrying past the
/// grace period.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledgement_retries_stop_at_shutdown() {
    let mut server = RedisServer::start().expect("redis");
    let keys = keys();
    let r = connect(&server.url()).await;
    for i in 0..3 {
        xadd_msg(&r, &keys, S, &tick(i)).await;
    }
    let (freeze, mut want_freeze) = mpsc::unbounded_channel();
    let (frozen_tx, frozen) = tokio::sync::watch::channel(false);
    let stop = CancellationToken::new();
    let handler = FreezeRedis {
        stop: stop.clone(),
        freeze,
        frozen,
    };
    let task = tokio::spawn(consumer(&r, &keys, "c1", &Health::new()).run(handler, stop));
    want_freeze.recv().await.expect("in batch");
    server.pause().expect("pause");
    frozen_tx.send_replace(true);
    // The default grace period is 10 s; each attempt waits the 2 s command timeout.
    let grace = std::time::Duration::from_millis(
        kitbash_runtime::config::ConsumerConfig::default().grace_ms,
    );
    let stats = tokio::time::timeout(grace, task).await;
    server.resume().expect("resume");
    let stats = stats
        .expect("the loop stops within the grace period")
        .expect("join");
    assert_eq!(
        stats.acked, 3,
        "handled; the acknowledgement is what timed out"
    );
    // Whether the XACK the frozen server had buffered ran after the resume is unknown (a
    // timed-out command is "unknown", never "failed"): either nothing or everything is pending.
    let left = pending(&r, &keys, S, "testgroup").await;
    assert!(left == 0 || left == 3, "{left}");
}

/// Between "holds nothing" and the delete, an entry is delivered to the idle consumer: the
/// atomic forget keeps it (a two-step check-then-delete would destroy its pending entry).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forgetting_an_idle_consumer_never_destroys_an_entry_delivered_meanwhile() {
    let server = RedisServer::start().expect("redis");
    let keys = keys();
    let r = connect(&server.url()).await;
    let key = keys.stream(S);
    let _: Value = r
        .client
        .xgroup_create(&key, "testgroup", "$", true)
        .await
        .expect("group");
    let _: Value = r
        .client
        .xgroup_createconsumer(&key, "testgroup", "sleepy")
        .await
        .expect("create");
    // The sweep saw "sleepy" idle with nothing pending; now an entry reaches it.
    xadd_msg(&r, &keys, S, &tick(1)).await;
    let _: Value = r
        .client
        .xreadgroup("testgroup", "sleepy", Some(1), None, false, &key, ">")
        .await
        .expect("read");
    let deleted =
        kitbash_runtime::consumer::forget_if_idle(&r.client, &key, "testgroup", "sleepy", 0)
            .await
            .expect("forget");
    assert!(!deleted, "a consumer holding an entry is kept");
    assert_eq!(
        pending(&r, &keys, S, "testgroup").await,
        1,
        "its entry is still pending"
    );
    let _: i64 = r.client.xack(&key, "testgroup", "0-1").await.expect("ack");
    let ids: Value = r.client.xrange(&key, "-", "+", None).await.expect("xrange");
    let id = kitbash_runtime::entries::parse_entries("XRANGE", &ids).expect("entries")[0]
        .id
        .clone();
    let _: i64 = r.client.xack(&key, "testgroup", id).await.expect("ack");
    assert!(
        kitbash_runtime::consumer::forget_if_idle(&r.client, &key, "testgroup", "sleepy", 0)
            .await
            .expect("forget"),
        "once empty it is forgotten"
    );
}
