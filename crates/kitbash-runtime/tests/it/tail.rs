//! `TailReader`: entries from `0` and from an id, no news on a quiet or missing stream, a trim
//! past the position (`Trimmed`), a recreated stream below it (`Behind`), two readers alike.

use std::time::Duration;

use fred::prelude::*;
use kitbash_runtime::Redis;
use kitbash_runtime::tail::{Tail, TailReader};
use kitbash_schema::StreamName;
use kitbash_testkit::RedisServer;

use crate::support::*;

const BLOCK: Duration = Duration::from_millis(100);

async fn add(r: &Redis, key: &str, id: &str) -> String {
    r.client
        .xadd::<String, _, _, _, _>(key, false, None, id, vec![("f", "v")])
        .await
        .expect("xadd")
}

async fn fill(r: &Redis, key: &str, n: usize) -> Vec<String> {
    let mut ids = Vec::new();
    for _ in 0..n {
        ids.push(add(r, key, "*").await);
    }
    ids
}

fn ids(t: &Tail) -> Vec<String> {
    match t {
        Tail::Entries(e) => e.iter().map(|e| e.id.clone()).collect(),
        other => panic!("expected entries, got {other:?}"),
    }
}

/// The next answer that is not `NoNews`, within a generous deadline.
async fn news(reader: &mut TailReader) -> Tail {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let t = reader.next().await.expect("next");
        if t != Tail::NoNews {
            return t;
        }
        assert!(tokio::time::Instant::now() < deadline, "no news for 30 s");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_entries_from_zero_and_from_an_id() {
    let server = RedisServer::start().expect("redis");
    let r = connect(&server.url()).await;
    let key = keys().stream(StreamName::Queries);
    let all = fill(&r, &key, 5).await;
    let mut from_zero = TailReader::new(&r, key.clone(), "0".into(), 10, BLOCK);
    assert_eq!(ids(&from_zero.next().await.expect("next")), all);
    assert_eq!(from_zero.position(), all[4]);
    let mut from_id = TailReader::new(&r, key.clone(), all[2].clone(), 10, BLOCK);
    assert_eq!(ids(&from_id.next().await.expect("next")), all[3..]);
    // In batches of `count`.
    let mut batches = TailReader::new(&r, key.clone(), "0".into(), 2, BLOCK);
    assert_eq!(ids(&batches.next().await.expect("next")), all[..2]);
    assert_eq!(ids(&batches.next().await.expect("next")), all[2..4]);
    assert_eq!(ids(&batches.next().await.expect("next")), all[4..]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_quiet_stream_and_a_missing_one_are_no_news() {
    let server = RedisServer::start().expect("redis");
    let r = connect(&server.url()).await;
    let keys = keys();
    let key = keys.stream(StreamName::Queries);
    let all = fill(&r, &key, 3).await;
    let mut quiet = TailReader::new(&r, key.clone(), "$".into(), 10, BLOCK);
    assert_eq!(quiet.next().await.expect("next"), Tail::NoNews);
    assert_eq!(quiet.position(), all[2], "`$` resolved to the last id");
    // An entry added between two reads is not skipped.
    let later = add(&r, &key, "*").await;
    assert_eq!(ids(&quiet.next().await.expect("next")), vec![later]);
    let mut missing = TailReader::new(&r, keys.stream(StreamName::Physics), "0".into(), 10, BLOCK);
    assert_eq!(missing.next().await.expect("next"), Tail::NoNews);
    assert_eq!(missing.next().await.expect("next"), Tail::NoNews);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trim_past_the_position_is_reported_once_then_reading_goes_on() {
    let server = RedisServer::start().expect("redis");
    let r = connect(&server.url()).await;
    let key = keys().stream(StreamName::Queries);
    let all = fill(&r, &key, 10).await;
    let mut reader = TailReader::new(&r, key.clone(), all[2].clone(), 10, BLOCK);
    let _: i64 = r.client.xtrim(&key, ("MAXLEN", 3)).await.expect("xtrim");
    assert_eq!(
        reader.next().await.expect("next"),
        Tail::Trimmed {
            asked: all[2].clone(),
            first_available: Some(all[7].clone()),
        }
    );
    assert_eq!(ids(&reader.next().await.expect("next")), all[7..]);
    assert_eq!(reader.next().await.expect("next"), Tail::NoNews);
    // A reader ahead of the trim is told nothing.
    let mut ahead = TailReader::new(&r, key.clone(), all[8].clone(), 10, BLOCK);
    assert_eq!(ids(&ahead.next().await.expect("next")), all[9..]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_recreated_below_the_position_is_behind() {
    let server = RedisServer::start().expect("redis");
    let r = connect(&server.url()).await;
    let key = keys().stream(StreamName::Queries);
    let old: Vec<String> = vec![
        add(&r, &key, "5-1").await,
        add(&r, &key, "5-2").await,
        add(&r, &key, "5-3").await,
    ];
    let mut reader = TailReader::new(&r, key.clone(), "0".into(), 10, BLOCK);
    assert_eq!(ids(&reader.next().await.expect("next")), old);
    let _: i64 = r.client.del(&key).await.expect("del");
    add(&r, &key, "1-1").await;
    assert_eq!(
        news(&mut reader).await,
        Tail::Behind {
            asked: "5-3".into(),
            last: "1-1".into(),
        }
    );
    assert_eq!(ids(&news(&mut reader).await), vec!["1-1".to_owned()]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_readers_both_see_every_entry() {
    let server = RedisServer::start().expect("redis");
    let r = connect(&server.url()).await;
    let key = keys().stream(StreamName::Queries);
    let mut a = TailReader::new(&r, key.clone(), "0".into(), 4, BLOCK);
    let mut b = TailReader::new(&r, key.clone(), "0".into(), 4, BLOCK);
    let all = fill(&r, &key, 10).await;
    for reader in [&mut a, &mut b] {
        let mut seen = Vec::new();
        while seen.len() < all.len() {
            seen.extend(ids(&news(reader).await));
        }
        assert_eq!(seen, all);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_entry_deleted_after_the_position_is_reported_once() {
    let server = RedisServer::start().expect("redis");
    let r = connect(&server.url()).await;
    let key = keys().stream(StreamName::Queries);
    let all = fill(&r, &key, 6).await;
    let mut reader = TailReader::new(&r, key.clone(), all[1].clone(), 10, BLOCK);
    let _: i64 = r.client.xdel(&key, &all[3]).await.expect("xdel");
    assert_eq!(
        reader.next().await.expect("next"),
        Tail::Trimmed {
            asked: all[1].clone(),
            first_available: Some(all[0].clone()),
        }
    );
    // The survivors after the position are still read, and the deletion is not reported again.
    let rest: Vec<String> = [&all[2], &all[4], &all[5]].into_iter().cloned().collect();
    assert_eq!(ids(&reader.next().await.expect("next")), rest);
    assert_eq!(reader.next().await.expect("next"), Tail::NoNews);
    assert_eq!(reader.next().await.expect("next"), Tail::NoNews);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_failure_is_an_error_and_the_reader_goes_on_after_it() {
    let mut server = RedisServer::builder()
        .appendonly(kitbash_testkit::Appendfsync::Always)
        .start()
        .expect("redis");
    let r = connect(&server.url()).await;
    let key = keys().stream(StreamName::Queries);
    let first = fill(&r, &key, 2).await;
    let mut reader = TailReader::new(&r, key.clone(), "0".into(), 10, BLOCK);
    assert_eq!(ids(&reader.next().await.expect("next")), first);
    server.kill().expect("kill");
    let e = reader.next().await.expect_err("redis is down");
    assert!(e.is_transient(), "{e}");
    assert_eq!(reader.position(), first[1], "position kept");
    server.restart().expect("restart");
    let later = add(&r, &key, "*").await;
    let mut got = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while got.is_empty() {
        match reader.next().await {
            Ok(Tail::Entries(e)) => got = e.into_iter().map(|e| e.id).collect(),
            Ok(other) => assert_eq!(other, Tail::NoNews),
            Err(e) => assert!(e.is_transient(), "{e}"),
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no entries for 30 s"
        );
    }
    assert_eq!(got, vec![later]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_the_reader_closes_its_connection() {
    let server = RedisServer::start().expect("redis");
    let r = connect(&server.url()).await;
    let key = keys().stream(StreamName::Queries);
    let clients = || {
        server
            .cmd(&["CLIENT", "LIST", "TYPE", "normal"])
            .expect("client list")
            .lines()
            .filter(|l| !l.contains("cmd=client"))
            .count()
    };
    let before = clients();
    let mut reader = TailReader::new(&r, key, "0".into(), 10, BLOCK);
    assert_eq!(reader.next().await.expect("next"), Tail::NoNews);
    assert_eq!(clients(), before + 1, "the reader has its own connection");
    drop(reader);
    eventually("the reader's connection closed", || async {
        clients() == before
    })
    .await;
}
