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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nogroup_after_a_redis_restart_without_persistence_is_recovered() {
    let mut server = RedisServer::start().expect("redis");
    let keys = keys();
    let r = connect(&server.url()).await;
    xadd_msg(&r, &keys, S, &tick(1)).await;
    let handler = Recorder::default();
    let seen = handler.seen.clone();
    let health = Health::new();
    let metrics = Metrics::new();
    let stop = CancellationToken::new();
    let c = StreamConsumer::new(
        r.clone(),
        &keys,
        S,
        "testgroup",
        "c1",
        fast_consumer(),
        metrics.clone(),
        health.clone(),
    );
    let task = tokio::spawn(c.run(handler, stop.clone()));
    eventually("first entry handled", || async {
        seen.lock().expect("lock").len() == 1
    })
    .await;

    server.kill().expect("kill");
    server.restart().expect("restart"); // no persistence: the stream and the group are gone
    eventually("client reconnected", || async { r.ping().await }).await;
    xadd_msg(&r, &keys, S, &tick(2)).await;
    xadd_msg(&r, &keys, S, &tick(3)).await;
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
