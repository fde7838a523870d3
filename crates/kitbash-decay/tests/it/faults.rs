//! Faults: poison events, a redelivered event, `kill -9` mid-batch and a restart, SIGTERM
//! mid-batch, a Redis restart (AOF).

use std::collections::HashMap;

use fred::prelude::*;
use fred::types::Value;
use kitbash_client::Producer;
use kitbash_client::reflex::query_hash;
use kitbash_decay::hits::{Applied, Hits};
use kitbash_runtime::DaemonContext;
use kitbash_schema::{DaemonKind, StreamName};
use kitbash_testkit::{Appendfsync, RedisServer};

use crate::support::*;

async fn count(c: &Client, k: &kitbash_schema::Keys, text: &str) -> u64 {
    let n: Option<u64> = c
        .hget(k.cms(&query_hash(text)), "count")
        .await
        .expect("hget");
    n.unwrap_or(0)
}

async fn pending(c: &Client, k: &kitbash_schema::Keys) -> i64 {
    let v: Value = c
        .xpending(k.stream(StreamName::Queries), "decay", ())
        .await
        .expect("xpending");
    match v {
        Value::Array(a) => a.first().and_then(Value::as_i64).unwrap_or(-1),
        _ => -1,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn poison_events_are_dead_lettered_and_redeliveries_change_nothing() {
    let server = RedisServer::start().expect("redis");
    let ns = kitbash_testkit::namespace();
    let k = keys(&ns);
    let c = client(&server.url()).await;
    let stream = k.stream(StreamName::Queries);
    let bodies: [(&str, &str, &str); 6] = [
        ("1", "json", "{not json"),
        ("1", "json", r#"{"text":"ok","ts":1.0,"latency_ms":-3}"#),
        ("1", "json", r#"{"text":"   ","ts":1.0}"#),
        ("1", "json", r#"{"ts":1.0}"#),
        ("1", "json", r#"{"text":"x","ts":1.0,"hash":"nothex"}"#),
        ("9", "json", r#"{"text":"x","ts":1.0}"#),
    ];
    for (v, ct, d) in bodies {
        let _: String = c
            .xadd(
                &stream,
                false,
                None,
                "*",
                vec![("type", "query"), ("v", v), ("ct", ct), ("d", d)],
            )
            .await
            .expect("xadd");
    }
    let producer = Producer::new(c.clone(), k.clone(), 1);
    producer
        .publish(StreamName::Queries, &query("a good one"))
        .await
        .expect("publish");
    let (signals, _) = kitbash_runtime::shutdown::manual();
    let stop = signals.shutdown.clone();
    let task = tokio::spawn(kitbash_decay::run(config(&server.url(), &ns), signals));
    eventually("good one counted, poison dead-lettered", || async {
        let dead: u64 = c
            .xlen(k.dead_letter(StreamName::Queries))
            .await
            .expect("xlen");
        count(&c, &k, "a good one").await == 1 && dead == 6
    })
    .await;
    stop.cancel();
    task.await.expect("join").expect("run");
    let v: Value = c
        .xrange(k.dead_letter(StreamName::Queries), "-", "+", None)
        .await
        .expect("xrange");
    let reasons: Vec<String> = kitbash_runtime::entries::parse_entries("XRANGE", &v)
        .expect("entries")
        .iter()
        .map(|e| {
            kitbash_schema::wire::DeadLetter::from_fields(e.pairs())
                .expect("letter")
                .reason
        })
        .collect();
    for needle in [
        "does not decode",
        "latency_ms",
        "empty query text",
        "text",
        "hash",
        "version",
    ] {
        assert!(
            reasons.iter().any(|r| r.contains(needle)),
            "{needle}: {reasons:?}"
        );
    }
    // A redelivered entry (same id) is applied once.
    let (signals, _) = kitbash_runtime::shutdown::manual();
    let ctx = DaemonContext::start(DaemonKind::Decay, config(&server.url(), &ns), signals)
        .await
        .expect("ctx");
    let hits = Hits::new(&ctx);
    let q = query("redelivered");
    assert!(matches!(
        hits.apply("5-0", &q).await.expect("apply"),
        Applied::Now { .. }
    ));
    assert_eq!(hits.apply("5-0", &q).await.expect("apply"), Applied::Before);
    assert_eq!(count(&c, &k, "redelivered").await, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_mid_batch_then_restart_counts_every_event_once_and_sigterm_drains() {
    let server = RedisServer::start().expect("redis");
    let ns = kitbash_testkit::namespace();
    let k = keys(&ns);
    let c = client(&server.url()).await;
    let producer = Producer::new(c.clone(), k.clone(), 1);
    let texts: Vec<String> = (0..10).map(|i| format!("load {i}")).collect();
    let mut want: HashMap<String, u64> = HashMap::new();
    let mut batch = Vec::new();
    for i in 0..4000 {
        let t = &texts[i % texts.len()];
        *want.entry(t.clone()).or_default() += 1;
        batch.push(query(t));
    }
    for chunk in batch.chunks(500) {
        producer
            .publish_batch(StreamName::Queries, chunk)
            .await
            .expect("publish");
    }
    let total = || async {
        let mut n = 0;
        for t in &texts {
            n += count(&c, &k, t).await;
        }
        n
    };
    let mut first = spawn_decay(&server.url(), &ns);
    eventually("some applied", || async { total().await >= 400 }).await;
    signal(&first, "-KILL");
    let _ = wait_exit(&mut first).await;
    assert!(total().await < 4000, "killed mid-run");
    let mut second = spawn_decay(&server.url(), &ns);
    eventually("everything applied", || async { total().await >= 4000 }).await;
    for t in &texts {
        assert_eq!(count(&c, &k, t).await, want[t], "{t}: once each");
    }
    // SIGTERM mid-batch: the batch in hand is finished and acknowledged, exit 0.
    for chunk in batch.chunks(500) {
        producer
            .publish_batch(StreamName::Queries, chunk)
            .await
            .expect("publish");
    }
    eventually("some of the second load applied", || async {
        total().await >= 4400
    })
    .await;
    signal(&second, "-TERM");
    assert_eq!(wait_exit(&mut second).await.code(), Some(0));
    eventually("nothing pending of the living", || async {
        // The killed first instance's own pending entries were reclaimed by the second.
        pending(&c, &k).await == 0
    })
    .await;
    let n: u64 = c.get(k.metrics_queries_count()).await.expect("get");
    assert_eq!(
        n,
        total().await,
        "the seed's query count matches the records"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn survives_a_redis_restart() {
    let mut server = RedisServer::builder()
        .appendonly(Appendfsync::Always)
        .start()
        .expect("redis");
    let ns = kitbash_testkit::namespace();
    let k = keys(&ns);
    let url = server.url();
    let (signals, _) = kitbash_runtime::shutdown::manual();
    let stop = signals.shutdown.clone();
    let task = tokio::spawn(kitbash_decay::run(config(&url, &ns), signals));
    {
        let c = client(&url).await;
        let producer = Producer::new(c.clone(), k.clone(), 1);
        producer
            .publish(StreamName::Queries, &query("before"))
            .await
            .expect("publish");
        eventually("before applied", || async {
            count(&c, &k, "before").await == 1
        })
        .await;
        let _ = c.quit().await;
    }
    server.kill().expect("kill redis");
    server.restart().expect("restart redis");
    let c = client(&url).await;
    let producer = Producer::new(c.clone(), k.clone(), 1);
    producer
        .publish(StreamName::Queries, &query("after"))
        .await
        .expect("publish");
    eventually("after applied", || async {
        count(&c, &k, "after").await == 1
    })
    .await;
    let from = cycle(&c, &k).await;
    eventually("cycles continue", || async {
        cycle(&c, &k).await > from + 2
    })
    .await;
    assert_eq!(count(&c, &k, "before").await, 1);
    stop.cancel();
    task.await.expect("join").expect("run");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_query_keeps_only_its_latest_grains_in_either_layout() {
    use kitbash_client::reflex::Reflex;
    use kitbash_schema::reflex::Layout;
    for layout in [Layout::Seed, Layout::Compact] {
        let server = RedisServer::start().expect("redis");
        let ns = kitbash_testkit::namespace();
        let k = keys(&ns);
        let c = client(&server.url()).await;
        let mut cfg = config(&server.url(), &ns);
        cfg.reflex.layout = layout;
        let (signals, _) = kitbash_runtime::shutdown::manual();
        let ctx = DaemonContext::start(DaemonKind::Decay, cfg.clone(), signals)
            .await
            .expect("ctx");
        let hits = Hits::new(&ctx);
        // Six hits, each naming two new grains, one second apart in event time.
        for i in 0..6u64 {
            let mut q = query("many grains");
            q.ts += i as f64;
            q.grains = vec![100 + 2 * i, 101 + 2 * i];
            hits.apply(&format!("{}-0", i + 1), &q)
                .await
                .expect("apply");
        }
        let look = Reflex::new(c.clone(), k.clone(), 0.9)
            .with_layout(layout, cfg.reflex.buckets)
            .lookup("many grains")
            .await
            .expect("lookup");
        let mut got = look.grains.clone();
        got.sort_unstable();
        assert_eq!(
            got,
            vec![109, 110, 111],
            "{layout:?}: the latest three grains"
        );
        if layout == Layout::Seed {
            let n: u64 = c
                .zcard(k.cms_grains(&query_hash("many grains")))
                .await
                .expect("zcard");
            assert_eq!(n, 3, "cms:{{h}}:grains is bounded");
        }
    }
}

/// The JSON envelope's fields of `m`, as text (for [`append_then_refuse_writes`]).
pub fn json_fields<M: kitbash_schema::Message>(m: &M) -> Vec<(&'static str, String)> {
    kitbash_schema::Envelope::json(m)
        .expect("encode")
        .to_fields()
        .into_iter()
        .map(|(k, v)| (k, String::from_utf8(v).expect("JSON is text")))
        .collect()
}

/// Redis refusing writes (`maxmemory` 1 byte, `noeviction`) for a few seconds while events
/// wait: nothing is dead-lettered, the consumer reports not ready meanwhile, and afterwards
/// every event is counted exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn while_redis_refuses_writes_events_are_held_then_each_applied_once_and_none_dead() {
    use kitbash_testkit::support::{
        allow_writes, append_then_refuse_writes, free_local_addr, readiness,
    };
    let server = RedisServer::start().expect("redis");
    let ns = kitbash_testkit::namespace();
    let k = keys(&ns);
    let c = client(&server.url()).await;
    let mut cfg = config(&server.url(), &ns);
    let admin = free_local_addr();
    cfg.admin.listen = admin.to_string();
    let producer = Producer::new(c.clone(), k.clone(), 1);
    producer
        .publish(StreamName::Queries, &query("warm up"))
        .await
        .expect("publish");
    let (signals, _) = kitbash_runtime::shutdown::manual();
    let stop = signals.shutdown.clone();
    let task = tokio::spawn(kitbash_decay::run(cfg, signals));
    let check = "group decay on queries";
    eventually("the first event counted and the consumer ready", || async {
        count(&c, &k, "warm up").await == 1 && readiness(admin, check).1 == Some(true)
    })
    .await;
    let texts: Vec<String> = (0..30).map(|i| format!("held {i}")).collect();
    let entries: Vec<Vec<(&str, String)>> = texts.iter().map(|t| json_fields(&query(t))).collect();
    append_then_refuse_writes(&server, &k.stream(StreamName::Queries), &entries)
        .expect("refuse writes");
    eventually("not ready while Redis refuses writes", || async {
        readiness(admin, check) == (503, Some(false))
    })
    .await;
    tokio::time::sleep(std::time::Duration::from_secs(2)).await;
    let dead: u64 = c
        .xlen(k.dead_letter(StreamName::Queries))
        .await
        .expect("xlen");
    assert_eq!(dead, 0, "nothing dead-lettered while Redis refuses writes");
    allow_writes(&server).expect("allow writes");
    eventually("every held event counted once, ready again", || async {
        let mut all = true;
        for t in &texts {
            all &= count(&c, &k, t).await == 1;
        }
        all && readiness(admin, check).1 == Some(true)
    })
    .await;
    let dead: u64 = c
        .xlen(k.dead_letter(StreamName::Queries))
        .await
        .expect("xlen");
    assert_eq!(dead, 0, "no valid event dead-lettered");
    assert_eq!(pending(&c, &k).await, 0);
    for t in &texts {
        assert_eq!(count(&c, &k, t).await, 1, "{t}");
    }
    stop.cancel();
    task.await.expect("join").expect("run");
}
