//! The archive on a 3-master Redis Cluster (issue 19): streams archived to Parquet, trimmed
//! below what is archived and acknowledged, verified, and replayed from the archive into
//! another namespace; memory tokens indexed in the cluster form (the indexes by one script in
//! the user's slot, `memory:{id}` and the score each beside a guard in its own slot) —
//! ranked, capped, stale events refused, an older event never replacing a newer record even
//! past the index; and the real binary archiving, indexing and dead-lettering a malformed
//! token with its reason.

use fred::prelude::*;
use kitbash_archive::index::{Indexed, Indexer};
use kitbash_archive::replay::{self, Ids, Pace, Range, Source};
use kitbash_archive::store;
use kitbash_client::Producer;
use kitbash_runtime::config::KeyStyleConfig;
use kitbash_runtime::metrics::Metrics;
use kitbash_schema::messages::MemoryToken;
use kitbash_schema::{Keys, StreamName};
use kitbash_testkit::RedisCluster;
use kitbash_testkit::support::{daemon_command, signal, wait_exit};

use crate::memory::{dead_reasons, expected_relevance, index_caught_up, now_s, start, token};
use crate::support::*;

const Q: StreamName = StreamName::Queries;
const M: StreamName = StreamName::Memory;

/// The context index of `user`/`ctx`, most relevant first: (memory id, rank).
async fn ranked(c: &Client, key: &str) -> Vec<(String, f64)> {
    c.zrevrange(key, 0, -1, true).await.expect("zrevrange")
}

async fn cached(c: &Client, k: &Keys, id: &str) -> Option<MemoryToken> {
    let v: Option<String> = c.get(k.memory(id)).await.expect("get");
    v.map(|j| serde_json::from_str(&j).expect("json"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_a_redis_cluster_streams_are_archived_trimmed_verified_replayed_and_tokens_indexed() {
    let cluster = RedisCluster::start().expect("cluster");
    let url = cluster.cluster_url();
    let ns = kitbash_testkit::namespace();
    let (c, k) = (client(&url).await, keys(&ns));
    let dir = tempfile::tempdir().expect("tmp");
    let mut cfg = config(&url, &ns, dir.path());
    cfg.archive.streams = vec!["queries".into(), "memory".into()];
    cfg.archive.roll_entries = 70;
    cfg.archive.trim_interval_ms = 100;
    cfg.archive.retention_ms = 0;
    cfg.archive.memory_index_max = 5;
    // The memory stream kept whole (what `index_caught_up` compares with).
    cfg.archive.retention.insert(
        "memory".into(),
        kitbash_runtime::config::StreamTrimOverride {
            retention_entries: Some(1_000),
            ..Default::default()
        },
    );
    let qkey = k.stream(Q);
    for f in tick_stream_bodies(200) {
        xadd(&c, &qkey, &f).await;
    }
    let original = xrange(&c, &qkey).await;
    // decay (the queries' required group) has read and acknowledged everything.
    let _: fred::types::Value = c
        .xgroup_create(&qkey, "decay", "$", false)
        .await
        .expect("group");

    // u1/c1: eight tokens of distinct relevance, one never accessed, a memory whose older state
    // arrives after its newer one; u2: one token sent twice under one mid.
    let producer = Producer::new(c.clone(), k.clone(), 1);
    let mut sent = Vec::new();
    for i in 0..8u64 {
        let t = token(
            &format!("m{i}"),
            "u1",
            "c1",
            (i * 600) as f64 + 1.0,
            1 + i * 7,
        );
        producer.publish(M, &t).await.expect("publish");
        sent.push(t);
    }
    let unused = token("m-none", "u1", "c1", 5.0, 0);
    let newer = token("m-moved", "u1", "c1", 30.0, 80);
    let older = MemoryToken {
        accesses: 2,
        content: serde_json::json!("older state"),
        ..newer.clone()
    };
    let other = token("m-u2", "u2", "c9", 5.0, 3);
    for t in [&unused, &newer, &older] {
        producer.publish(M, t).await.expect("publish");
    }
    for _ in 0..2 {
        producer
            .publish_with_mid(M, &other, "repeated-mid")
            .await
            .expect("publish");
    }
    sent.push(newer.clone());
    let started = now_s();
    let (stop, task) = start(cfg).await;
    let root = dir.path().join(&ns);
    eventually("the queries archived and trimmed to nothing", || async {
        store::read_all(&root, Q).unwrap_or_default().len() == 200
            && c.xlen::<u64, _>(&qkey).await.unwrap_or(1) == 0
    })
    .await;
    eventually("every token indexed", || async {
        index_caught_up(&c, &k).await
    })
    .await;
    let indexed_by = now_s();

    // Records: each token as JSON (the newer state kept over the late older one), guarded.
    for t in sent.iter().chain([&unused, &other]) {
        assert_eq!(cached(&c, &k, &t.id).await.as_ref(), Some(t), "{}", t.id);
        let src: Option<String> = c
            .hget(k.memory_source(&t.id), Keys::SOURCE_ID)
            .await
            .expect("hget");
        assert_eq!(src.as_deref(), Some(t.id.as_str()), "{} guard", t.id);
        let pttl: i64 = c.pttl(k.memory_source(&t.id)).await.expect("pttl");
        assert!(pttl > 0, "the guard expires with its record");
    }
    // Scores: the relevance when indexed (the newer state's, not the older's).
    for t in &sent {
        let s: String = c
            .get(k.score(&t.user, &t.context, &t.token))
            .await
            .expect("score");
        let s: f64 = s.parse().expect("decimal");
        let (hi, lo) = (
            expected_relevance(t, started),
            expected_relevance(t, indexed_by),
        );
        assert!(
            s <= hi * (1.0 + 1e-12) && s >= lo * (1.0 - 1e-12),
            "{}: {s} not within [{lo}, {hi}]",
            t.id
        );
    }
    // The context and user indexes: the five most relevant, in order; unused not ranked.
    let now = now_s();
    let mut want: Vec<&MemoryToken> = sent.iter().collect();
    want.sort_by(|a, b| expected_relevance(b, now).total_cmp(&expected_relevance(a, now)));
    let want: Vec<&str> = want.iter().take(5).map(|t| t.id.as_str()).collect();
    for key in [
        k.memory_context_index("u1", "c1"),
        k.memory_user_index("u1"),
    ] {
        let got = ranked(&c, &key).await;
        let ids: Vec<&str> = got.iter().map(|(id, _)| id.as_str()).collect();
        assert_eq!(ids, want, "{key}: ranked, capped at 5");
    }
    let u2 = ranked(&c, &k.memory_context_index("u2", "c9")).await;
    assert_eq!(u2.len(), 1, "the repeated mid applied once");
    assert!(dead_reasons(&c, &k).await.is_empty(), "no valid token dead");

    stop.cancel();
    task.await.expect("join");
    // Nothing trimmed before it was archived; the archive is whole.
    assert_eq!(store::read_all(&root, Q).expect("archive"), original);
    for s in [Q, M] {
        let report = store::verify(&root, s).expect("verify");
        assert!(report.problems.is_empty(), "{s}: {:?}", report.problems);
    }
    let archived_memory = store::read_all(&root, M).expect("archive");
    assert_eq!(archived_memory.len(), 13, "every memory entry archived");

    // Replay from the archive into another namespace, keeping the ids.
    let sandbox = keys(&kitbash_testkit::namespace());
    let target = sandbox.stream(Q);
    let sel = replay::select(&c, &root, Q, &qkey, Range::default(), Source::Both)
        .await
        .expect("select");
    assert_eq!((sel.from_archive, sel.from_redis), (200, 0));
    let n = replay::write(&c, &target, &sel.entries, Ids::Original, Pace::Max, |_| {})
        .await
        .expect("replay");
    assert_eq!(n, 200);
    assert_eq!(xrange(&c, &target).await, original, "same ids, same fields");
}

/// The cluster form under both key styles, driven directly: the same event twice is
/// idempotent, an older one stale, and an older one whose memory fell out of the index (as a
/// prune does) re-enters the index but never replaces the newer record or score; the index
/// is pruned to `memory_index_max`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cluster_indexer_is_idempotent_order_proof_and_prunes_under_both_key_styles() {
    let cluster = RedisCluster::start().expect("cluster");
    let url = cluster.cluster_url();
    let c = client(&url).await;
    let redis = kitbash_runtime::Redis { client: c.clone() };
    for style in [KeyStyleConfig::Seed, KeyStyleConfig::Tagged] {
        let ns = kitbash_testkit::namespace();
        let mut cfg = config(&url, &ns, std::path::Path::new("/nonexistent"));
        cfg.redis.key_style = style;
        let k = cfg.redis.keys();
        let ix = Indexer::with(&redis, k.clone(), Metrics::new(), 3, 0.01);
        let newer = token("m1", "u1", "c1", 10.0, 40);
        let older = MemoryToken {
            accesses: 1,
            content: serde_json::json!("older"),
            ..newer.clone()
        };
        assert_eq!(ix.index(&newer).await.expect("index"), Indexed::Written);
        assert_eq!(ix.index(&newer).await.expect("again"), Indexed::Written);
        assert_eq!(cached(&c, &k, "m1").await.as_ref(), Some(&newer));
        assert_eq!(
            ix.index(&older).await.expect("older"),
            Indexed::Stale,
            "{style:?}"
        );
        assert_eq!(cached(&c, &k, "m1").await.as_ref(), Some(&newer));
        let score_key = k.score("u1", "c1", &newer.token);
        let score = |c: Client, key: String| async move {
            let s: String = c.get(key).await.expect("score");
            s.parse::<f64>().expect("decimal")
        };
        let newer_score = score(c.clone(), score_key.clone()).await;
        // Gone from the index (pruned), then the older state arrives: the guards hold.
        let _: i64 = c
            .zrem(k.memory_context_index("u1", "c1"), "m1")
            .await
            .expect("zrem");
        assert_eq!(ix.index(&older).await.expect("older"), Indexed::Written);
        assert_eq!(
            cached(&c, &k, "m1").await.as_ref(),
            Some(&newer),
            "{style:?}: the record keeps the newer state"
        );
        let kept = score(c.clone(), score_key.clone()).await;
        assert!(
            kept > newer_score * 0.99,
            "{style:?}: the score keeps the newer relevance ({kept} vs {newer_score})"
        );
        // Pruned to three per index.
        for i in 2..=6u64 {
            let t = token(&format!("m{i}"), "u1", "c1", 1.0, 100 + i);
            assert_eq!(ix.index(&t).await.expect("index"), Indexed::Written);
        }
        let ids: Vec<String> = ranked(&c, &k.memory_context_index("u1", "c1"))
            .await
            .into_iter()
            .map(|(id, _)| id)
            .collect();
        assert_eq!(ids, ["m6", "m5", "m4"], "{style:?}");
        // The client's top-k reads them back across slots (no cross-slot MGET).
        let top = kitbash_client::memory::MemoryIndex::new(c.clone(), k.clone())
            .top_k("u1", "c1", 3)
            .await
            .expect("top_k on a cluster");
        let got: Vec<(&str, bool)> = top
            .iter()
            .map(|r| (r.id.as_str(), r.token.is_some()))
            .collect();
        assert_eq!(got, [("m6", true), ("m5", true), ("m4", true)], "{style:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_binary_on_a_redis_cluster_archives_indexes_and_dead_letters_a_malformed_token() {
    let cluster = RedisCluster::start().expect("cluster");
    let url = cluster.cluster_url();
    let ns = kitbash_testkit::namespace();
    let (c, k) = (client(&url).await, keys(&ns));
    let dir = tempfile::tempdir().expect("tmp");
    let mut child = daemon_command(env!("CARGO_BIN_EXE_kitbash-archive"), &url, &ns)
        .env("KITBASH__ARCHIVE__DIR", dir.path())
        .env("KITBASH__ARCHIVE__ROLL_MS", "200")
        .env("KITBASH__ARCHIVE__LEASE_MS", "1000")
        .spawn()
        .expect("spawn kitbash-archive");
    let producer = Producer::new(c.clone(), k.clone(), 1);
    let good = token("ok-1", "u1", "c1", 1.0, 3);
    producer.publish(M, &good).await.expect("publish");
    xadd(
        &c,
        &k.stream(M),
        &[
            (b"type".to_vec(), b"memory_token".to_vec()),
            (b"v".to_vec(), b"1".to_vec()),
            (b"ct".to_vec(), b"json".to_vec()),
            (b"d".to_vec(), b"{not json".to_vec()),
        ],
    )
    .await;
    let good2 = token("ok-2", "u1", "c1", 2.0, 9);
    producer.publish(M, &good2).await.expect("publish");
    let root = dir.path().join(&ns);
    eventually("indexed, dead-lettered and archived", || async {
        index_caught_up(&c, &k).await && store::read_all(&root, M).unwrap_or_default().len() == 3
    })
    .await;
    let dead = dead_reasons(&c, &k).await;
    assert_eq!(dead.len(), 1, "{dead:#?}");
    assert!(dead[0].contains("index"), "the group is named: {dead:#?}");
    assert!(
        !dead[0].contains("ok-"),
        "a valid token dead-lettered: {dead:#?}"
    );
    for t in [&good, &good2] {
        assert_eq!(cached(&c, &k, &t.id).await.as_ref(), Some(t));
    }
    let ids: Vec<String> = ranked(&c, &k.memory_context_index("u1", "c1"))
        .await
        .into_iter()
        .map(|(id, _)| id)
        .collect();
    assert_eq!(ids, ["ok-2", "ok-1"]);
    signal(&child, "-TERM");
    assert_eq!(wait_exit(&mut child).await.code(), Some(0));
    let report = store::verify(&root, M).expect("verify");
    assert!(report.problems.is_empty(), "{:?}", report.problems);
    assert_eq!(
        store::read_all(&root, M).expect("archive"),
        xrange(&c, &k.stream(M)).await
    );
}
