//! Raw group consumption with deferred acknowledgement: entries as they are in Redis,
//! acknowledged only when the handler settles them, held entries kept from reclaim, the
//! `max_held` backpressure, transient refusals that count no delivery, the flush on drain,
//! and poison entries that keep killing their holders.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use fred::prelude::*;
use fred::types::Value;
use kitbash_runtime::config::ConsumerConfig;
use kitbash_runtime::consumer::{Acks, RawEntry, RawHandler, StreamConsumer, TakeError};
use kitbash_runtime::health::Health;
use kitbash_runtime::metrics::Metrics;
use kitbash_runtime::{CancellationToken, LoopStats, Redis, RuntimeError};
use kitbash_schema::messages::Tick;
use kitbash_schema::{Keys, StreamName};
use kitbash_testkit::RedisServer;

use crate::support::*;

const S: StreamName = StreamName::Queries;
const GROUP: &str = "archivetest";
const CHECK: &str = "group archivetest on queries";

/// What a test handler does; shared with the test, which settles entries through `acks`.
#[derive(Clone, Default)]
struct Shared {
    seen: Arc<Mutex<Vec<RawEntry>>>,
    acks: Arc<Mutex<Option<Acks>>>,
    /// Takes refused with `TakeError::Transient` before the first one that succeeds.
    refuse: Arc<AtomicUsize>,
    /// Takes attempted (refused ones included).
    attempts: Arc<AtomicUsize>,
    /// On flush: acknowledge everything seen.
    ack_on_flush: bool,
    /// On take: fail fatally.
    fatal: bool,
}

impl Shared {
    fn seen(&self) -> Vec<RawEntry> {
        self.seen.lock().expect("lock").clone()
    }
    fn ids(&self) -> Vec<String> {
        self.seen().into_iter().map(|e| e.id).collect()
    }
    fn acks(&self) -> Acks {
        self.acks
            .lock()
            .expect("lock")
            .clone()
            .expect("handler took a batch")
    }
}

struct Keeper(Shared);

impl RawHandler for Keeper {
    async fn take(&mut self, batch: Vec<RawEntry>, acks: &Acks) -> Result<(), TakeError> {
        self.0.attempts.fetch_add(1, Ordering::SeqCst);
        *self.0.acks.lock().expect("lock") = Some(acks.clone());
        if self.0.fatal {
            return Err(TakeError::Fatal("the archive directory is gone".into()));
        }
        if self
            .0
            .refuse
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok()
        {
            return Err(TakeError::Transient("disk full".into()));
        }
        self.0.seen.lock().expect("lock").extend(batch);
        Ok(())
    }

    async fn flush(&mut self, acks: &Acks) {
        if self.0.ack_on_flush {
            acks.ack(self.0.ids());
        }
    }
}

fn consumer(
    r: &Redis,
    keys: &Keys,
    name: &str,
    cfg: ConsumerConfig,
    health: &Health,
) -> StreamConsumer {
    StreamConsumer::new(
        r.clone(),
        keys,
        S,
        GROUP,
        name,
        cfg,
        Metrics::new(),
        health.clone(),
    )
}

type Running = (
    CancellationToken,
    tokio::task::JoinHandle<Result<LoopStats, RuntimeError>>,
);

fn start(c: StreamConsumer, shared: &Shared) -> Running {
    let stop = CancellationToken::new();
    let task = tokio::spawn(c.raw().run(Keeper(shared.clone()), stop.clone()));
    (stop, task)
}

/// Pending entries of the group: (id, consumer, deliveries).
async fn pending_detail(r: &Redis, keys: &Keys) -> Vec<(String, String, u64)> {
    let v: Value = r
        .client
        .xpending(keys.stream(S), GROUP, ("-", "+", 1000))
        .await
        .expect("xpending");
    let Value::Array(rows) = v else {
        return Vec::new();
    };
    rows.into_iter()
        .filter_map(|row| match row {
            Value::Array(f) => Some((
                f.first()?.as_string()?,
                f.get(1)?.as_string()?,
                f.get(3)?.as_u64()?,
            )),
            _ => None,
        })
        .collect()
}

/// Five entries of three kinds: a valid tick envelope, undecodable bytes, an unknown `type`.
async fn feed_mixed(r: &Redis, keys: &Keys) -> Vec<String> {
    let t = Tick {
        symbol: "SPY".into(),
        price: 1.0,
        size: 1.0,
        trades: 1,
        ts: 1.0,
    };
    vec![
        xadd_msg(r, keys, S, &t).await,
        xadd_raw(
            r,
            keys,
            S,
            vec![("type", b"tick"), ("v", b"1"), ("d", &[0xff, 0x00, 0xc1])],
        )
        .await,
        xadd_raw(r, keys, S, vec![("garbage", b"\xff\xfe")]).await,
        xadd_raw(r, keys, S, vec![("type", b"someone-elses"), ("v", b"7")]).await,
        xadd_msg(r, keys, S, &t).await,
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn entries_stay_pending_until_settled_and_come_back_after_a_crash() {
    let server = RedisServer::start().expect("redis");
    let r = connect(&server.url()).await;
    let keys = keys();
    let ids = feed_mixed(&r, &keys).await;
    let a = Shared::default();
    let health = Health::new();
    let (_stop_a, task_a) = start(consumer(&r, &keys, "a", fast_consumer(), &health), &a);
    eventually(
        "a takes all five, undecodable and foreign ones too",
        || async { a.seen().len() == 5 },
    )
    .await;
    assert_eq!(a.ids(), ids);
    // Raw: exactly the fields written, in XADD order.
    let third = &a.seen()[2];
    assert_eq!(third.fields.len(), 1);
    assert_eq!(third.fields[0].0.as_ref(), b"garbage");
    assert_eq!(third.fields[0].1.as_ref(), b"\xff\xfe");
    assert!(a.seen().iter().all(|e| e.deliveries == 1));
    assert_eq!(
        pending(&r, &keys, S, GROUP).await,
        5,
        "nothing acknowledged on take"
    );

    a.acks().ack(ids[..2].to_vec());
    eventually("two acknowledged", || async {
        pending(&r, &keys, S, GROUP).await == 3
    })
    .await;

    // kill -9: the task vanishes without draining or leaving the group.
    task_a.abort();
    let _ = task_a.await;
    let b = Shared::default();
    let (stop_b, task_b) = start(consumer(&r, &keys, "b", fast_consumer(), &health), &b);
    eventually("b reclaims the three a never settled", || async {
        b.seen().len() == 3
    })
    .await;
    assert_eq!(b.ids(), ids[2..].to_vec());
    assert!(b.seen().iter().all(|e| e.deliveries == 2), "{:?}", b.seen());
    b.acks().ack(b.ids());
    eventually("all acknowledged", || async {
        pending(&r, &keys, S, GROUP).await == 0
    })
    .await;
    stop_b.cancel();
    let stats = task_b.await.expect("join").expect("run");
    assert_eq!(stats.acked, 3);
    assert!(dead_letters(&r, &keys, S).await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn held_entries_are_not_reclaimed_while_their_holder_lives() {
    let server = RedisServer::start().expect("redis");
    let r = connect(&server.url()).await;
    let keys = keys();
    let ids = feed_mixed(&r, &keys).await;
    let health = Health::new();
    let a = Shared::default();
    let (stop_a, task_a) = start(consumer(&r, &keys, "a", fast_consumer(), &health), &a);
    eventually("a holds all five", || async { a.seen().len() == 5 }).await;
    let b = Shared::default();
    let (stop_b, task_b) = start(consumer(&r, &keys, "b", fast_consumer(), &health), &b);
    // Ten times claim_idle_ms (300 ms), with b looking every claim_interval_ms (100 ms).
    tokio::time::sleep(Duration::from_millis(3_000)).await;
    assert!(
        b.seen().is_empty(),
        "b reclaimed held entries: {:?}",
        b.ids()
    );
    let detail = pending_detail(&r, &keys).await;
    assert_eq!(detail.len(), 5);
    for (id, owner, deliveries) in &detail {
        assert_eq!(owner, "a", "{id} moved to {owner}");
        assert_eq!(
            *deliveries, 1,
            "{id}: refreshing the idle time counted a delivery"
        );
    }
    a.acks().ack(ids);
    eventually("settled", || async {
        pending(&r, &keys, S, GROUP).await == 0
    })
    .await;
    stop_a.cancel();
    stop_b.cancel();
    task_a.await.expect("join").expect("run a");
    task_b.await.expect("join").expect("run b");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn at_max_held_nothing_new_is_read_until_acknowledgements_come_in() {
    let server = RedisServer::start().expect("redis");
    let r = connect(&server.url()).await;
    let keys = keys();
    let mut ids = Vec::new();
    for i in 0..10u8 {
        ids.push(xadd_raw(&r, &keys, S, vec![("n", &[i])]).await);
    }
    let cfg = ConsumerConfig {
        max_held: 4,
        ..fast_consumer()
    };
    let a = Shared::default();
    let (stop, task) = start(consumer(&r, &keys, "a", cfg, &Health::new()), &a);
    eventually("four taken", || async { a.seen().len() == 4 }).await;
    // Several block_ms (100 ms) periods: still four.
    tokio::time::sleep(Duration::from_millis(1_000)).await;
    assert_eq!(a.ids(), ids[..4].to_vec(), "read past max_held");
    a.acks().ack(ids[..3].to_vec());
    eventually("three more taken", || async { a.seen().len() == 7 }).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(a.seen().len(), 7);
    a.acks().ack(ids[3..7].to_vec());
    eventually("the rest taken", || async { a.seen().len() == 10 }).await;
    assert_eq!(a.ids(), ids);
    stop.cancel();
    task.await.expect("join").expect("run");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transient_refusal_keeps_the_batch_without_counting_a_delivery() {
    let server = RedisServer::start().expect("redis");
    let r = connect(&server.url()).await;
    let keys = keys();
    let ids = feed_mixed(&r, &keys).await;
    let health = Health::new();
    let a = Shared::default();
    // Long enough for several refreshes of the idle time and several reclaim passes.
    a.refuse.store(8, Ordering::SeqCst);
    let metrics = Metrics::new();
    let c = StreamConsumer::new(
        r.clone(),
        &keys,
        S,
        GROUP,
        "a",
        fast_consumer(),
        metrics.clone(),
        health.clone(),
    );
    let (stop, task) = start(c, &a);
    eventually("reported not ready while refused", || async {
        health.snapshot().1.iter().any(|(n, ok)| n == CHECK && !ok)
    })
    .await;
    eventually("taken after the refusals", || async { a.seen().len() == 5 }).await;
    assert_eq!(
        a.attempts.load(Ordering::SeqCst),
        9,
        "one batch, offered nine times"
    );
    assert_eq!(a.ids(), ids, "the same batch, nothing new read or lost");
    assert!(a.seen().iter().all(|e| e.deliveries == 1));
    for (id, _, deliveries) in pending_detail(&r, &keys).await {
        assert_eq!(
            deliveries, 1,
            "{id}: a transient refusal counted a delivery"
        );
    }
    eventually("ready again", || async {
        health.snapshot().1.iter().any(|(n, ok)| n == CHECK && *ok)
    })
    .await;
    let labels = [("stream", "queries"), ("group", GROUP)];
    assert_eq!(
        metrics.get("kitbash_transient_retries_total", &labels),
        40.0
    );
    a.acks().ack(ids);
    eventually("settled", || async {
        pending(&r, &keys, S, GROUP).await == 0
    })
    .await;
    stop.cancel();
    task.await.expect("join").expect("run");
    assert!(dead_letters(&r, &keys, S).await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_flush_hook_runs_on_drain_before_the_last_acknowledgements() {
    let server = RedisServer::start().expect("redis");
    let r = connect(&server.url()).await;
    let keys = keys();
    feed_mixed(&r, &keys).await;
    let a = Shared {
        ack_on_flush: true,
        ..Shared::default()
    };
    let (stop, task) = start(
        consumer(&r, &keys, "a", fast_consumer(), &Health::new()),
        &a,
    );
    eventually("taken", || async { a.seen().len() == 5 }).await;
    assert_eq!(pending(&r, &keys, S, GROUP).await, 5);
    stop.cancel();
    let stats = task.await.expect("join").expect("run");
    assert_eq!(stats.acked, 5, "the flush's acknowledgements were sent");
    assert_eq!(pending(&r, &keys, S, GROUP).await, 0);
    let consumers: Value = r
        .client
        .xinfo_consumers(keys.stream(S), GROUP)
        .await
        .expect("xinfo");
    assert!(
        matches!(consumers, Value::Array(ref a) if a.is_empty()),
        "left the group: {consumers:?}"
    );

    // A holder whose flush settles nothing leaves its entries pending, and stays in the group.
    feed_mixed(&r, &keys).await;
    let b = Shared::default();
    let (stop, task) = start(
        consumer(&r, &keys, "b", fast_consumer(), &Health::new()),
        &b,
    );
    eventually("taken", || async { b.seen().len() == 5 }).await;
    stop.cancel();
    task.await.expect("join").expect("run");
    assert_eq!(
        pending(&r, &keys, S, GROUP).await,
        5,
        "unsettled entries stay pending"
    );
}

/// A dead settlement reads the entry back from the stream for its letter (held entries are
/// not kept twice): the letter carries the entry's exact fields, and an entry deleted
/// meanwhile is only acknowledged (nothing left to keep, no letter).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_settlement_letters_the_entry_as_in_the_stream_or_acks_a_deleted_one() {
    let server = RedisServer::start().expect("redis");
    let r = connect(&server.url()).await;
    let keys = keys();
    let ids = feed_mixed(&r, &keys).await;
    let a = Shared::default();
    let (stop, task) = start(
        consumer(&r, &keys, "a", fast_consumer(), &Health::new()),
        &a,
    );
    eventually("taken", || async { a.seen().len() == 5 }).await;
    let _: i64 = r
        .client
        .xdel(keys.stream(S), ids[1].as_str())
        .await
        .expect("xdel");
    a.acks().dead(ids[1].clone(), "deleted before its letter");
    a.acks().dead(ids[2].clone(), "no column for field garbage");
    eventually("settled", || async {
        pending(&r, &keys, S, GROUP).await == 3
    })
    .await;
    let letters = dead_letters(&r, &keys, S).await;
    assert_eq!(letters.len(), 1, "no letter for the deleted entry");
    assert_eq!(letters[0].id, ids[2]);
    assert_eq!(
        letters[0].fields,
        vec![(b"garbage".to_vec(), b"\xff\xfe".to_vec())]
    );
    stop.cancel();
    let stats = task.await.expect("join").expect("run");
    assert_eq!(stats.vanished, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_settlements_and_poison_entries_go_to_the_dead_letter_stream() {
    let server = RedisServer::start().expect("redis");
    let r = connect(&server.url()).await;
    let keys = keys();
    let ids = feed_mixed(&r, &keys).await;
    let cfg = ConsumerConfig {
        max_deliveries: 2,
        ..fast_consumer()
    };
    let health = Health::new();
    // The handler refuses one entry for good.
    let a = Shared::default();
    let (stop, task) = start(consumer(&r, &keys, "a", cfg.clone(), &health), &a);
    eventually("taken", || async { a.seen().len() == 5 }).await;
    a.acks().dead(ids[2].clone(), "no column for field garbage");
    a.acks().ack(ids[..2].to_vec());
    eventually("dead-lettered", || async {
        dead_letters(&r, &keys, S).await.len() == 1
    })
    .await;
    let letter = &dead_letters(&r, &keys, S).await[0];
    assert_eq!(letter.id, ids[2]);
    assert_eq!(letter.reason, "no column for field garbage");
    // The last two kill whoever holds them: each holder dies before settling.
    task.abort();
    let _ = task.await;
    drop(stop);
    let b = Shared::default();
    let (_, task) = start(consumer(&r, &keys, "b", cfg.clone(), &health), &b);
    eventually("b reclaims them (delivery 2)", || async {
        b.seen().len() == 2
    })
    .await;
    task.abort();
    let _ = task.await;
    let c = Shared::default();
    let (stop, task) = start(consumer(&r, &keys, "c", cfg, &health), &c);
    eventually("dead-lettered after max_deliveries", || async {
        dead_letters(&r, &keys, S).await.len() == 3
    })
    .await;
    assert!(
        c.seen().is_empty(),
        "an entry over max_deliveries was handed over again"
    );
    let letters = dead_letters(&r, &keys, S).await;
    assert!(
        letters[1].reason.contains("delivered 3 times"),
        "{}",
        letters[1].reason
    );
    assert_eq!(pending(&r, &keys, S, GROUP).await, 0);
    stop.cancel();
    task.await.expect("join").expect("run");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fatal_take_stops_the_loop_with_the_entries_pending() {
    let server = RedisServer::start().expect("redis");
    let r = connect(&server.url()).await;
    let keys = keys();
    feed_mixed(&r, &keys).await;
    let a = Shared {
        fatal: true,
        ..Shared::default()
    };
    let (_stop, task) = start(
        consumer(&r, &keys, "a", fast_consumer(), &Health::new()),
        &a,
    );
    let err = tokio::time::timeout(Duration::from_secs(30), task)
        .await
        .expect("stops by itself")
        .expect("join")
        .expect_err("fatal");
    assert!(
        err.to_string().contains("the archive directory is gone"),
        "{err}"
    );
    assert_eq!(pending(&r, &keys, S, GROUP).await, 5);
    assert!(dead_letters(&r, &keys, S).await.is_empty());
}
