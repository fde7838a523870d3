//! The archive as the trim owner of what it archives, against a real redis-server: it trims
//! nothing while a required group is missing, then exactly up to a lagging group's oldest
//! pending entry, then further once that group has acknowledged; nothing it trims was not
//! archived first; while it runs the stream's own owner (decay's bound) trims nothing; its
//! claim is given back on shutdown.

use fred::prelude::*;
use fred::types::Value;
use kitbash_archive::store;
use kitbash_schema::{Keys, StreamName};
use kitbash_testkit::RedisServer;

use crate::support::*;

const Q: StreamName = StreamName::Queries;

async fn first_id(c: &Client, key: &str) -> Option<String> {
    xrange(c, key).await.first().map(|e| e.id.clone())
}

async fn holder(c: &Client, k: &Keys) -> Option<String> {
    c.hget(k.trim_claim(Q), Keys::TRIM_HOLDER)
        .await
        .expect("claim")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_archive_trims_only_below_what_is_archived_and_what_every_group_still_needs() {
    let server = RedisServer::start().expect("redis");
    let ns = kitbash_testkit::namespace();
    let (c, k) = (client(&server.url()).await, keys(&ns));
    let dir = tempfile::tempdir().expect("tmp");
    let mut cfg = config(&server.url(), &ns, dir.path());
    cfg.archive.streams = vec!["queries".into()];
    cfg.archive.trim_interval_ms = 100;
    cfg.archive.retention_ms = 0;
    let key = k.stream(Q);
    let bodies = tick_stream_bodies(200);
    let mut ids = Vec::new();
    for f in &bodies {
        ids.push(xadd(&c, &key, f).await);
    }
    let original = xrange(&c, &key).await;
    let (signals, _) = kitbash_runtime::shutdown::manual();
    let stop = signals.shutdown.clone();
    let task = tokio::spawn(kitbash_archive::run(cfg, signals));
    eventually("everything archived", || async {
        pending(&c, &key).await == 0
            && store::read_all(&dir.path().join(&ns), Q)
                .unwrap_or_default()
                .len()
                == 200
    })
    .await;
    // decay (queries' processing group) does not exist yet: nothing may go.
    eventually("a trim ran and found decay missing", || async {
        holder(&c, &k).await.as_deref() == Some("group decay missing")
    })
    .await;
    assert_eq!(c.xlen::<u64, _>(&key).await.expect("xlen"), 200);
    // decay exists and lags: delivered 100, acknowledged the first 40.
    let _: Value = c
        .xgroup_create(&key, "decay", "0", false)
        .await
        .expect("group");
    let _: Value = c
        .xreadgroup("decay", "d", Some(100), None, false, &key, ">")
        .await
        .expect("read");
    let _: i64 = c
        .xack(&key, "decay", ids[..40].to_vec())
        .await
        .expect("ack");
    eventually("trimmed up to decay's oldest pending entry", || async {
        first_id(&c, &key).await.as_deref() == Some(ids[40].as_str())
    })
    .await;
    assert_eq!(
        holder(&c, &k).await.as_deref(),
        Some("group decay (pending)")
    );
    // While the archive holds the claim, decay's own bound trims nothing.
    let removed = kitbash_runtime::trim::safe_trim(&c, Q, &key, 10, &[])
        .await
        .expect("safe_trim");
    assert_eq!(removed, 0, "one trimmer at a time");
    assert_eq!(first_id(&c, &key).await.as_deref(), Some(ids[40].as_str()));
    // decay catches up: everything archived and acknowledged goes.
    let _: i64 = c
        .xack(&key, "decay", ids[40..100].to_vec())
        .await
        .expect("ack");
    let _: Value = c
        .xreadgroup("decay", "d", Some(100), None, false, &key, ">")
        .await
        .expect("read");
    let _: i64 = c
        .xack(&key, "decay", ids[100..].to_vec())
        .await
        .expect("ack");
    eventually("trimmed further once decay acknowledged", || async {
        c.xlen::<u64, _>(&key).await.expect("xlen") == 0
    })
    .await;
    stop.cancel();
    task.await.expect("join").expect("run");
    // Nothing was trimmed before it was archived: the archive holds every original entry.
    assert_eq!(
        store::read_all(&dir.path().join(&ns), Q).expect("archive"),
        original
    );
    let claim: u64 = c.exists(k.trim_claim(Q)).await.expect("exists");
    assert_eq!(claim, 0, "the claim is given back on shutdown");
}

/// A tick partition has no group: its reader is the partition worker, whose checkpoint's
/// `snap_id` is where its recovery replays from. Nothing goes before that checkpoint exists,
/// then nothing at or after its `snap_id`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partition_is_trimmed_only_below_its_checkpoints_snap_id() {
    const T: StreamName = StreamName::Ticks(0);
    let server = RedisServer::start().expect("redis");
    let ns = kitbash_testkit::namespace();
    let (c, k) = (client(&server.url()).await, keys(&ns));
    let dir = tempfile::tempdir().expect("tmp");
    let mut cfg = config(&server.url(), &ns, dir.path());
    cfg.archive.streams = vec!["ticks:0".into()];
    cfg.archive.trim_interval_ms = 100;
    cfg.archive.retention_ms = 0;
    let key = k.stream(T);
    let mut ids = Vec::new();
    for f in &tick_stream_bodies(100) {
        ids.push(xadd(&c, &key, f).await);
    }
    let (signals, _) = kitbash_runtime::shutdown::manual();
    let stop = signals.shutdown.clone();
    let task = tokio::spawn(kitbash_archive::run(cfg, signals));
    let held = || async {
        c.hget::<Option<String>, _, _>(k.trim_claim(T), Keys::TRIM_HOLDER)
            .await
            .expect("claim")
    };
    eventually("archived, and held by the missing checkpoint", || async {
        pending(&c, &key).await == 0 && held().await.as_deref() == Some("checkpoint missing")
    })
    .await;
    assert_eq!(c.xlen::<u64, _>(&key).await.expect("xlen"), 100);
    let _: () = c
        .hset(
            k.checkpoint(T),
            (Keys::CHECKPOINT_SNAP_ID, ids[60].as_str()),
        )
        .await
        .expect("checkpoint");
    eventually("trimmed up to snap_id", || async {
        first_id(&c, &key).await.as_deref() == Some(ids[60].as_str())
    })
    .await;
    assert_eq!(held().await.as_deref(), Some("checkpoint"));
    stop.cancel();
    task.await.expect("join").expect("run");
}
