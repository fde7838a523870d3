//! The example daemon end to end against a real redis-server: in-process (counts, a copy
//! re-sent with the same mid, a poison entry, a too-long text; every component kind in
//! [`kinds`]) and as the real binary (SIGTERM drains and exits 0).

use std::time::Duration;

use fred::prelude::*;
use fred::types::Value;
use kitbash_client::Producer;
use kitbash_runtime::Config;
use kitbash_schema::messages::QueryEvent;
use kitbash_schema::{Keys, Namespace, StreamName};
use kitbash_testkit::RedisServer;
use kitbash_testkit::support::{daemon_command, eventually, signal, wait_exit};

fn config(url: &str, ns: &str) -> Config {
    let mut c = Config::default();
    c.redis.url = url.to_owned();
    c.redis.namespace = ns.to_owned();
    c.admin.listen = String::new();
    c.consumer.block_ms = 100;
    c.example.max_text_bytes = 20;
    c
}

async fn client(url: &str) -> Client {
    let cfg = kitbash_runtime::config::RedisConfig {
        url: url.to_owned(),
        ..Default::default()
    };
    kitbash_runtime::redis::connect_client(&cfg, Duration::from_secs(10))
        .await
        .expect("connect")
}

fn query(text: &str) -> QueryEvent {
    QueryEvent {
        text: text.into(),
        hash: None,
        ts: 1_766_318_400.0,
        grains: vec![],
        latency_ms: None,
    }
}

async fn tally(c: &Client, keys: &Keys, text: &str) -> Option<i64> {
    c.hget(keys.example_tally(), text).await.expect("hget")
}

mod kinds;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn counts_queries_once_and_dead_letters_what_it_cannot() {
    let server = RedisServer::start().expect("redis");
    let ns = kitbash_testkit::namespace();
    let keys = Keys::new(Namespace::new(ns.clone()).expect("ns"));
    let c = client(&server.url()).await;
    let producer = Producer::new(c.clone(), keys.clone(), 8);
    producer
        .publish(StreamName::Queries, &query("what is resonance"))
        .await
        .expect("publish");
    producer
        .publish(StreamName::Queries, &query("what is resonance"))
        .await
        .expect("publish");
    // The producer never learnt whether this one landed and sends it again, same mid.
    producer
        .publish_with_mid(StreamName::Queries, &query("ghosts"), "mid-7")
        .await
        .expect("publish");
    producer
        .publish_with_mid(StreamName::Queries, &query("ghosts"), "mid-7")
        .await
        .expect("publish");
    producer
        .publish(
            StreamName::Queries,
            &query("a query text far too long for the limit"),
        )
        .await
        .expect("publish");
    let _: String = c
        .xadd(
            keys.stream(StreamName::Queries),
            false,
            None,
            "*",
            vec![("type", "query"), ("ct", "json"), ("d", "{not json")],
        )
        .await
        .expect("xadd");

    let (signals, _) = kitbash_runtime::shutdown::manual();
    let stop = signals.shutdown.clone();
    let task = tokio::spawn(kitbash_example::run(config(&server.url(), &ns), signals));
    eventually("counted", || async {
        tally(&c, &keys, "what is resonance").await == Some(2)
            && tally(&c, &keys, "ghosts").await == Some(1)
    })
    .await;
    eventually("both rejects dead-lettered", || async {
        let n: u64 = c
            .xlen(keys.dead_letter(StreamName::Queries))
            .await
            .expect("xlen");
        n == 2
    })
    .await;
    stop.cancel();
    task.await.expect("join").expect("run");
    assert_eq!(
        tally(&c, &keys, "ghosts").await,
        Some(1),
        "the re-sent copy was dropped"
    );
    let v: Value = c
        .xrange(keys.dead_letter(StreamName::Queries), "-", "+", None)
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
    assert!(
        reasons
            .iter()
            .any(|r| r.contains("example.max_text_bytes = 20")),
        "{reasons:?}"
    );
    assert!(
        reasons.iter().any(|r| r.contains("does not decode")),
        "{reasons:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_binary_counts_and_drains_on_sigterm() {
    let server = RedisServer::start().expect("redis");
    let ns = kitbash_testkit::namespace();
    let keys = Keys::new(Namespace::new(ns.clone()).expect("ns"));
    let c = client(&server.url()).await;
    let producer = Producer::new(c.clone(), keys.clone(), 8);
    let mut child = daemon_command(env!("CARGO_BIN_EXE_kitbash-example"), &server.url(), &ns)
        .spawn()
        .expect("spawn kitbash-example");
    for _ in 0..50 {
        producer
            .publish(StreamName::Queries, &query("hello"))
            .await
            .expect("publish");
    }
    eventually("counted by the binary", || async {
        tally(&c, &keys, "hello").await == Some(50)
    })
    .await;
    signal(&child, "-TERM");
    let status = wait_exit(&mut child).await;
    assert_eq!(status.code(), Some(0));
    let pending: Value = c
        .xpending(keys.stream(StreamName::Queries), "example", ())
        .await
        .expect("xpending");
    assert!(
        matches!(pending, Value::Array(ref a) if a.first() == Some(&Value::Integer(0))),
        "{pending:?}"
    );
}
