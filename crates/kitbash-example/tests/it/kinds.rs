//! Every component kind of the example at once: the consumer, the raw journal (deferred
//! acknowledgement, the flush on drain), the periodic gauge, the leader, the two tasks (pub/sub
//! watcher, group-less tail) and the served router.

use std::net::SocketAddr;
use std::path::Path;

use fred::prelude::*;
use kitbash_client::Producer;
use kitbash_schema::{Keys, Namespace, StreamName};
use kitbash_testkit::RedisServer;
use kitbash_testkit::support::{eventually, free_local_addr, http_get, metric, readiness};

use crate::{client, config, query, tally};

async fn get(addr: SocketAddr, path: &'static str) -> (u16, String) {
    tokio::task::spawn_blocking(move || http_get(addr, path))
        .await
        .expect("join")
}

async fn metric_of(addr: SocketAddr, name: &'static str) -> f64 {
    tokio::task::spawn_blocking(move || metric(addr, name))
        .await
        .expect("join")
}

async fn ready(addr: SocketAddr, check: &'static str) -> bool {
    tokio::task::spawn_blocking(move || readiness(addr, check).1 == Some(true))
        .await
        .expect("join")
}

/// The journal's lines by entry id (`id k=v …`, hex), every instance's file.
fn journal_ids(dir: &Path) -> Vec<String> {
    let mut ids = Vec::new();
    for f in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let text = std::fs::read_to_string(f.path()).unwrap_or_default();
        ids.extend(
            text.lines()
                .filter_map(|l| l.split(' ').next())
                .map(str::to_owned),
        );
    }
    ids
}

async fn pending(c: &Client, keys: &Keys, s: StreamName) -> i64 {
    let v: fred::types::Value = c
        .xpending(keys.stream(s), "example", ())
        .await
        .unwrap_or(fred::types::Value::Null);
    match v {
        fred::types::Value::Array(a) => {
            a.first().and_then(fred::types::Value::as_i64).unwrap_or(-1)
        }
        _ => -1,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_component_kind_does_its_work_and_drains() {
    let server = RedisServer::start().expect("redis");
    let ns = kitbash_testkit::namespace();
    let keys = Keys::new(Namespace::new(ns.clone()).expect("ns"));
    let c = client(&server.url()).await;
    let journal = tempfile::tempdir().expect("tempdir");
    let (admin, web) = (free_local_addr(), free_local_addr());
    let mut cfg = config(&server.url(), &ns);
    cfg.admin.listen = admin.to_string();
    cfg.example.listen = web.to_string();
    cfg.example.journal_dir = journal.path().display().to_string();
    cfg.example.journal_sync_ms = 200;
    cfg.example.top_period_ms = 200;
    let (signals, _) = kitbash_runtime::shutdown::manual();
    let stop = signals.shutdown.clone();
    let task = tokio::spawn(kitbash_example::run(cfg, signals));

    // consume + serve + every + leader
    let producer = Producer::new(c.clone(), keys.clone(), 8);
    for text in ["ghosts", "ghosts", "ghosts", "resonance"] {
        producer
            .publish(StreamName::Queries, &query(text))
            .await
            .expect("publish");
    }
    eventually("counted", || async {
        tally(&c, &keys, "ghosts").await == Some(3)
    })
    .await;
    eventually("served", || async {
        get(web, "/tally/ghosts").await == (200, r#"{"text":"ghosts","count":3}"#.to_owned())
    })
    .await;
    assert_eq!(
        get(web, "/tally/nobody").await.1,
        r#"{"text":"nobody","count":0}"#
    );
    eventually("the leader recorded the top text", || async {
        c.get::<Option<String>, _>(keys.example_top())
            .await
            .ok()
            .flatten()
            .as_deref()
            == Some("ghosts")
    })
    .await;
    eventually("the periodic gauge", || async {
        metric_of(admin, "kitbash_example_tally_texts").await == 2.0
    })
    .await;

    // task + subscriber: subscribed once ready; publish until one arrives (a PUBLISH before the
    // subscription is confirmed reaches nobody, by pub/sub's design).
    eventually("watcher ready", || async {
        ready(admin, "task announcements").await
    })
    .await;
    eventually("an announcement counted", || async {
        let _: i64 = c
            .publish(keys.channel_grain_updates(), "7")
            .await
            .expect("publish");
        metric_of(admin, "kitbash_example_announcements_total").await >= 1.0
    })
    .await;

    // task + tail: entries added after it is ready are all seen, without a group.
    eventually("tail ready", || async {
        ready(admin, "task entity-changes").await
    })
    .await;
    for i in 0..5 {
        let _: String = c
            .xadd(
                keys.stream(StreamName::EntityChanges),
                false,
                None,
                "*",
                ("n", i),
            )
            .await
            .expect("xadd");
    }
    eventually("five changes seen", || async {
        metric_of(admin, "kitbash_example_changes_seen_total").await == 5.0
    })
    .await;
    let groups: fred::types::Value = c
        .xinfo_groups(keys.stream(StreamName::EntityChanges))
        .await
        .expect("xinfo groups");
    assert!(
        matches!(groups, fred::types::Value::Array(ref a) if a.is_empty()),
        "a tail has no group: {groups:?}"
    );

    // consume_raw: undecodable and foreign entries journaled as they are, acknowledged after
    // the fsync.
    let physics = keys.stream(StreamName::Physics);
    let mut ids = Vec::new();
    for fields in [
        vec![("type", "physics"), ("d", "\u{1}garbage")],
        vec![("who", "someone else")],
    ] {
        ids.push(
            c.xadd::<String, _, _, _, _>(&physics, false, None, "*", fields)
                .await
                .expect("xadd"),
        );
    }
    eventually("journaled and acknowledged", || async {
        journal_ids(journal.path()) == ids && pending(&c, &keys, StreamName::Physics).await == 0
    })
    .await;
    let line = std::fs::read_dir(journal.path())
        .expect("dir")
        .flatten()
        .map(|f| std::fs::read_to_string(f.path()).expect("read"))
        .collect::<String>();
    assert!(
        line.contains(&format!(
            "{} {}={}",
            ids[1],
            hex("who"),
            hex("someone else")
        )),
        "{line}"
    );

    assert_eq!(
        get(admin, "/readyz").await.0,
        200,
        "{}",
        get(admin, "/readyz").await.1
    );
    stop.cancel();
    task.await.expect("join").expect("run");
    assert_eq!(get(web, "/tally/ghosts").await.0, 0, "no longer served");
}

fn hex(s: &str) -> String {
    s.bytes().map(|b| format!("{b:02x}")).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_journal_holds_entries_until_fsynced_and_flushes_on_drain() {
    let server = RedisServer::start().expect("redis");
    let ns = kitbash_testkit::namespace();
    let keys = Keys::new(Namespace::new(ns.clone()).expect("ns"));
    let c = client(&server.url()).await;
    let journal = tempfile::tempdir().expect("tempdir");
    let mut cfg = config(&server.url(), &ns);
    cfg.example.journal_dir = journal.path().display().to_string();
    // Never by count or age during the test: only the drain's flush acknowledges.
    cfg.example.journal_sync_entries = 1_000_000;
    cfg.example.journal_sync_ms = 3_600_000;
    let (signals, _) = kitbash_runtime::shutdown::manual();
    let stop = signals.shutdown.clone();
    let task = tokio::spawn(kitbash_example::run(cfg, signals));
    let physics = keys.stream(StreamName::Physics);
    let mut ids = Vec::new();
    for i in 0..20 {
        ids.push(
            c.xadd::<String, _, _, _, _>(&physics, false, None, "*", ("i", i))
                .await
                .expect("xadd"),
        );
    }
    eventually("all delivered, none acknowledged", || async {
        let info: fred::types::Value = c.xinfo_groups(&physics).await.expect("groups");
        format!("{info:?}").contains("entries-read")
            && pending(&c, &keys, StreamName::Physics).await == 20
    })
    .await;
    stop.cancel();
    task.await.expect("join").expect("run");
    assert_eq!(
        pending(&c, &keys, StreamName::Physics).await,
        0,
        "the flush acknowledged them"
    );
    assert_eq!(
        journal_ids(journal.path()),
        ids,
        "every entry fsynced once, in order"
    );
}
