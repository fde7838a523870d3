//! The daemon against a real redis-server: everything archived byte-identical and acknowledged
//! only after its commit; SIGTERM commits the open segment; entries a dead holder left pending
//! come first, and those its manifest already lists are acknowledged without a second copy;
//! `kill -9` of the binary mid-feed loses and repeats nothing.

use std::path::Path;

use fred::prelude::*;
use fred::types::Value;
use kitbash_archive::store;
use kitbash_schema::StreamName;
use kitbash_testkit::RedisServer;
use kitbash_testkit::support::{daemon_command, signal, wait_exit};

use crate::support::*;

const T: StreamName = StreamName::Ticks(0);
const Q: StreamName = StreamName::Queries;

fn archived(dir: &Path, ns: &str, s: StreamName) -> Vec<kitbash_archive::format::Entry> {
    store::read_all(&dir.join(ns), s).unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_entry_is_archived_byte_identical_and_acknowledged_after_its_commit() {
    let server = RedisServer::start().expect("redis");
    let ns = kitbash_testkit::namespace();
    let (c, k) = (client(&server.url()).await, keys(&ns));
    let dir = tempfile::tempdir().expect("tmp");
    let mut cfg = config(&server.url(), &ns, dir.path());
    cfg.archive.streams = vec!["ticks:0".into(), "queries".into()];
    cfg.archive.roll_entries = 70;
    let (tkey, qkey) = (k.stream(T), k.stream(Q));
    for f in tick_stream_bodies(200) {
        xadd(&c, &tkey, &f).await;
        xadd(&c, &qkey, &f).await;
    }
    let (signals, _) = kitbash_runtime::shutdown::manual();
    let stop = signals.shutdown.clone();
    let task = tokio::spawn(kitbash_archive::run(cfg, signals));
    eventually("both streams archived and acknowledged", || async {
        pending(&c, &tkey).await == 0
            && pending(&c, &qkey).await == 0
            && archived(dir.path(), &ns, T).len() == 200
            && archived(dir.path(), &ns, Q).len() == 200
    })
    .await;
    // More while it runs: rolled by age (roll_ms).
    for f in tick_stream_bodies(30) {
        xadd(&c, &tkey, &f).await;
    }
    eventually("the rest rolled by age", || async {
        archived(dir.path(), &ns, T).len() == 230 && pending(&c, &tkey).await == 0
    })
    .await;
    stop.cancel();
    task.await.expect("join").expect("run");
    assert_eq!(archived(dir.path(), &ns, T), xrange(&c, &tkey).await);
    assert_eq!(archived(dir.path(), &ns, Q), xrange(&c, &qkey).await);
    let report = store::verify(&dir.path().join(&ns), T).expect("verify");
    assert!(report.problems.is_empty(), "{:?}", report.problems);
    assert!(report.files >= 4, "rolled by count: {}", report.files);
    let dead: u64 = c.xlen(k.dead_letter(T)).await.expect("xlen");
    assert_eq!(
        dead, 0,
        "nothing is dead-lettered: the archive keeps everything"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_commits_the_open_segment_before_acknowledging() {
    let server = RedisServer::start().expect("redis");
    let ns = kitbash_testkit::namespace();
    let (c, k) = (client(&server.url()).await, keys(&ns));
    let dir = tempfile::tempdir().expect("tmp");
    let mut cfg = config(&server.url(), &ns, dir.path());
    cfg.archive.streams = vec!["ticks:0".into()];
    cfg.archive.roll_ms = 3_600_000;
    let key = k.stream(T);
    for f in tick_stream_bodies(120) {
        xadd(&c, &key, &f).await;
    }
    let (signals, _) = kitbash_runtime::shutdown::manual();
    let stop = signals.shutdown.clone();
    let task = tokio::spawn(kitbash_archive::run(cfg, signals));
    eventually("all delivered, none acknowledged", || async {
        pending(&c, &key).await == 120
    })
    .await;
    assert!(
        archived(dir.path(), &ns, T).is_empty(),
        "nothing committed before the roll"
    );
    stop.cancel();
    task.await.expect("join").expect("run");
    assert_eq!(pending(&c, &key).await, 0);
    assert_eq!(archived(dir.path(), &ns, T), xrange(&c, &key).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_holders_entries_come_first_and_what_its_manifest_lists_is_not_written_twice() {
    let server = RedisServer::start().expect("redis");
    let ns = kitbash_testkit::namespace();
    let (c, k) = (client(&server.url()).await, keys(&ns));
    let dir = tempfile::tempdir().expect("tmp");
    let key = k.stream(T);
    for f in tick_stream_bodies(100) {
        xadd(&c, &key, &f).await;
    }
    // A holder that died between its manifest and its XACK: it read all 100, committed the
    // first 60, acknowledged nothing.
    let _: Value = c
        .xgroup_create(&key, "archive", "0", true)
        .await
        .expect("group");
    let _: Value = c
        .xreadgroup("archive", "dead-holder", Some(100), None, false, &key, ">")
        .await
        .expect("read");
    let stream = xrange(&c, &key).await;
    {
        let mut st = store::Store::open(&dir.path().join(&ns), T, 1).expect("open");
        let mut seg = kitbash_archive::format::Segment::new(kitbash_archive::format::Layout::Ticks);
        for e in &stream[..60] {
            seg.push(e).expect("push");
        }
        st.commit(&mut seg).expect("commit");
    }
    let _: i64 = c.incr(k.archive_epoch(T)).await.expect("epoch 1 taken");
    let mut cfg = config(&server.url(), &ns, dir.path());
    cfg.archive.streams = vec!["ticks:0".into()];
    // Far above the test's deadline: only the exclusive takeover can claim them in time.
    cfg.consumer.claim_idle_ms = 600_000;
    for f in tick_stream_bodies(10) {
        xadd(&c, &key, &f).await;
    }
    let (signals, _) = kitbash_runtime::shutdown::manual();
    let stop = signals.shutdown.clone();
    let task = tokio::spawn(kitbash_archive::run(cfg, signals));
    eventually("all 110 archived once", || async {
        pending(&c, &key).await == 0 && archived(dir.path(), &ns, T).len() == 110
    })
    .await;
    stop.cancel();
    task.await.expect("join").expect("run");
    assert_eq!(
        archived(dir.path(), &ns, T),
        xrange(&c, &key).await,
        "in id order, no copy"
    );
    let report = store::verify(&dir.path().join(&ns), T).expect("verify");
    assert!(report.problems.is_empty(), "{:?}", report.problems);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_of_the_binary_mid_feed_loses_and_repeats_nothing() {
    let server = RedisServer::start().expect("redis");
    let ns = kitbash_testkit::namespace();
    let (c, k) = (client(&server.url()).await, keys(&ns));
    let dir = tempfile::tempdir().expect("tmp");
    let key = k.stream(T);
    let spawn = || {
        daemon_command(env!("CARGO_BIN_EXE_kitbash-archive"), &server.url(), &ns)
            .env("KITBASH__ARCHIVE__DIR", dir.path())
            .env("KITBASH__ARCHIVE__ROLL_ENTRIES", "50")
            .env("KITBASH__ARCHIVE__ROLL_MS", "200")
            .env("KITBASH__ARCHIVE__LEASE_MS", "1000")
            .env("KITBASH__CONSUMER__CLAIM_IDLE_MS", "1000")
            .spawn()
            .expect("spawn kitbash-archive")
    };
    let mut first = spawn();
    let bodies = tick_stream_bodies(2_000);
    for f in &bodies[..1_000] {
        xadd(&c, &key, f).await;
    }
    eventually("some archived", || async {
        !archived(dir.path(), &ns, T).is_empty()
    })
    .await;
    // Killed while the feed goes on: entries held, a segment open, maybe a commit under way.
    for f in &bodies[1_000..1_100] {
        xadd(&c, &key, f).await;
    }
    signal(&first, "-9");
    let _ = wait_exit(&mut first).await;
    for f in &bodies[1_100..] {
        xadd(&c, &key, f).await;
    }
    let mut second = spawn();
    eventually("everything archived after the restart", || async {
        archived(dir.path(), &ns, T).len() >= 2_000 && pending(&c, &key).await == 0
    })
    .await;
    signal(&second, "-TERM");
    assert_eq!(wait_exit(&mut second).await.code(), Some(0));
    assert_eq!(
        archived(dir.path(), &ns, T),
        xrange(&c, &key).await,
        "nothing lost, nothing twice"
    );
    let report = store::verify(&dir.path().join(&ns), T).expect("verify");
    assert!(report.problems.is_empty(), "{:?}", report.problems);
}

/// A commit the disk refuses (here: a directory where the file's temporary name goes) is
/// retried, before anything newer, until it goes through; meanwhile nothing after the
/// archive's end is acknowledged, and afterwards every entry is archived once, in order,
/// byte-identical — whether the refused commit ran behind the next segment's reads or not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_commit_is_retried_first_and_nothing_is_acknowledged_before_it() {
    let server = RedisServer::start().expect("redis");
    let ns = kitbash_testkit::namespace();
    let (c, k) = (client(&server.url()).await, keys(&ns));
    let dir = tempfile::tempdir().expect("tmp");
    let mut cfg = config(&server.url(), &ns, dir.path());
    cfg.archive.streams = vec!["ticks:0".into()];
    cfg.archive.roll_entries = 100;
    let key = k.stream(T);
    let base = 1_766_318_400_000u64;
    let bodies = tick_stream_bodies(400);
    let add = |from: usize, to: usize| {
        let pipe = c.pipeline();
        let bodies = &bodies;
        let key = &key;
        async move {
            for (i, f) in bodies.iter().enumerate().take(to).skip(from) {
                let fields: Vec<(String, Value)> = f
                    .iter()
                    .map(|(k, v)| {
                        (
                            String::from_utf8_lossy(k).into_owned(),
                            Value::Bytes(v.clone().into()),
                        )
                    })
                    .collect();
                let id = format!("{}-0", base + i as u64);
                let _: () = pipe
                    .xadd(key.as_str(), false, None, id.as_str(), fields)
                    .await
                    .expect("queued");
            }
            let _: Vec<Value> = pipe.all().await.expect("xadd");
        }
    };
    add(0, 100).await;
    let (signals, _) = kitbash_runtime::shutdown::manual();
    let stop = signals.shutdown.clone();
    let task = tokio::spawn(kitbash_archive::run(cfg, signals));
    eventually("the first file", || async {
        archived(dir.path(), &ns, T).len() == 100 && pending(&c, &key).await == 0
    })
    .await;
    let stream_dir = store::stream_dir(&dir.path().join(&ns), T);
    let blocker = stream_dir.join(format!(
        "{}{}",
        kitbash_schema::archive::file_name(base + 100, 0),
        kitbash_schema::archive::TMP_SUFFIX
    ));
    std::fs::create_dir(&blocker).expect("blocker");
    add(100, 400).await;
    eventually("the next entries delivered and held", || async {
        pending(&c, &key).await >= 100
    })
    .await;
    // Refused and retried for a while: nothing after the first file is durable or acknowledged.
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    assert_eq!(archived(dir.path(), &ns, T).len(), 100);
    assert!(pending(&c, &key).await >= 100, "held while refused");
    std::fs::remove_dir(&blocker).expect("unblock");
    eventually("everything archived and acknowledged", || async {
        archived(dir.path(), &ns, T).len() == 400 && pending(&c, &key).await == 0
    })
    .await;
    stop.cancel();
    task.await.expect("join").expect("run");
    assert_eq!(archived(dir.path(), &ns, T), xrange(&c, &key).await);
    let report = store::verify(&dir.path().join(&ns), T).expect("verify");
    assert!(report.problems.is_empty(), "{:?}", report.problems);
    assert_eq!(report.files, 4, "one file per 100 entries, none twice");
}
