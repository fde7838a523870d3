//! Memory-token indexing (seed 004) against a real redis-server: `memory:{id}`, the relevance
//! score and the per-user and per-context indexes written from the memory stream's `index`
//! group, read back in relevance order through `kitbash_client::memory`; stale events,
//! malformed entries (dead-lettered with their reason, valid ones never), Redis refusing
//! writes, a Redis restart, SIGTERM of the binary mid-feed, and the indexer's trim.

use std::collections::BTreeMap;
use std::time::Duration;

use fred::prelude::*;
use fred::types::Value;
use kitbash_client::Producer;
use kitbash_client::memory::MemoryIndex;
use kitbash_runtime::CancellationToken;
use kitbash_schema::messages::MemoryToken;
use kitbash_schema::{Group, Keys, StreamName};
use kitbash_testkit::RedisServer;
use kitbash_testkit::support::{daemon_command, signal, wait_exit};

use crate::support::*;

const M: StreamName = StreamName::Memory;

pub(crate) fn now_s() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs_f64()
}

/// Relevance as seed 004's formula says, written out here (not the schema's function).
pub(crate) fn expected_relevance(t: &MemoryToken, now: f64) -> f64 {
    (-(now - t.ts).max(0.0) / 3600.0).exp() * (1.0 + t.accesses as f64).ln()
}

pub(crate) fn token(id: &str, user: &str, ctx: &str, age_s: f64, accesses: u64) -> MemoryToken {
    MemoryToken {
        id: id.into(),
        user: user.into(),
        context: ctx.into(),
        token: format!("t-{id}"),
        content: serde_json::json!({ "text": format!("memory {id}"), "n": [1, 2.5] }),
        ts: now_s() - age_s,
        accesses,
    }
}

/// Entries the `index` group has delivered and not acknowledged (−1: no group yet).
pub(crate) async fn index_pending(c: &Client, k: &Keys) -> i64 {
    pending_in(c, &k.stream(M), Group::MEMORY_INDEX.as_str()).await
}

/// The `index` group's last delivered id equals the stream's last id, and nothing is pending.
pub(crate) async fn index_caught_up(c: &Client, k: &Keys) -> bool {
    let groups: Value = c.xinfo_groups(k.stream(M)).await.unwrap_or(Value::Null);
    let last: Value = c
        .xrevrange(k.stream(M), "+", "-", Some(1))
        .await
        .unwrap_or(Value::Null);
    let last_id = kitbash_runtime::entries::parse_entries("XREVRANGE", &last)
        .ok()
        .and_then(|e| e.first().map(|e| e.id.clone()));
    // Each group is a flat field/value list (RESP2) or a map (RESP3): its strings in order.
    let strings = |v: &Value| -> Vec<String> {
        match v {
            Value::Array(a) => a.iter().filter_map(Value::as_string).collect(),
            Value::Map(m) => m
                .clone()
                .inner()
                .iter()
                .flat_map(|(k, v)| [k.as_str().map(|s| s.to_string()), v.as_string()])
                .flatten()
                .collect(),
            _ => Vec::new(),
        }
    };
    let Value::Array(groups) = groups else {
        return false;
    };
    let delivered = groups.iter().map(strings).find_map(|g| {
        let field = |name: &str| {
            g.iter()
                .position(|s| s == name)
                .and_then(|i| g.get(i + 1).cloned())
        };
        (field("name").as_deref() == Some(Group::MEMORY_INDEX.as_str()))
            .then(|| field("last-delivered-id"))
            .flatten()
    });
    match (last_id, delivered) {
        (Some(last), Some(delivered)) => last == delivered && index_pending(c, k).await == 0,
        _ => false,
    }
}

pub(crate) async fn dead_reasons(c: &Client, k: &Keys) -> Vec<String> {
    let v: Value = c
        .xrange(k.dead_letter(M), "-", "+", None)
        .await
        .expect("xrange");
    kitbash_runtime::entries::parse_entries("XRANGE", &v)
        .expect("entries")
        .into_iter()
        .map(|e| {
            e.fields
                .unwrap_or_default()
                .into_iter()
                .map(|(f, v)| {
                    format!(
                        "{}={}",
                        String::from_utf8_lossy(&f),
                        String::from_utf8_lossy(&v)
                    )
                })
                .collect::<Vec<_>>()
                .join(" ")
        })
        .collect()
}

pub(crate) async fn start(
    cfg: kitbash_runtime::Config,
) -> (CancellationToken, tokio::task::JoinHandle<()>) {
    let (signals, _) = kitbash_runtime::shutdown::manual();
    let stop = signals.shutdown.clone();
    let task = tokio::spawn(async move {
        kitbash_archive::run(cfg, signals).await.expect("run");
    });
    (stop, task)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_are_cached_scored_and_ranked_per_user_and_context() {
    let server = RedisServer::start().expect("redis");
    let ns = kitbash_testkit::namespace();
    let (c, k) = (client(&server.url()).await, keys(&ns));
    let dir = tempfile::tempdir().expect("tmp");
    let mut cfg = config(&server.url(), &ns, dir.path());
    cfg.archive.streams = vec!["memory".into()];
    cfg.archive.memory_index_max = 12;
    let producer = Producer::new(c.clone(), k.clone(), 1);
    let (stop, task) = start(cfg).await;

    // u1: 30 tokens over two contexts, ages up to 3 h, 1–60 accesses (a fixed spread, so no two
    // relevances tie); one with no accesses; one 12 h old (relevance ≈ 4e-6, below the cut); a
    // memory sent twice with a mid repeated; a memory whose older state arrives after its newer.
    let mut sent: BTreeMap<String, MemoryToken> = BTreeMap::new();
    let started = now_s();
    for i in 0..30u64 {
        let ctx = if i % 3 == 0 { "c2" } else { "c1" };
        let t = token(
            &format!("m{i}"),
            "u1",
            ctx,
            (i * 347 % 10_800) as f64 + 0.5,
            1 + i * 37 % 60,
        );
        producer.publish(M, &t).await.expect("publish");
        sent.insert(t.id.clone(), t);
    }
    let unused = token("m-none", "u1", "c1", 10.0, 0);
    let ancient = token("m-old", "u1", "c1", 12.0 * 3600.0, 1);
    let other_user = token("m-u2", "u2", "c1", 5.0, 1_000);
    for t in [&unused, &ancient, &other_user] {
        producer.publish(M, t).await.expect("publish");
    }
    let newer = token("m-moved", "u1", "c1", 60.0, 50);
    let older = MemoryToken {
        accesses: 2,
        content: serde_json::json!("older state"),
        ..newer.clone()
    };
    producer.publish(M, &newer).await.expect("publish");
    producer.publish(M, &older).await.expect("publish");
    producer
        .publish_with_mid(M, &other_user, "repeated-mid")
        .await
        .expect("publish");
    producer
        .publish_with_mid(M, &other_user, "repeated-mid")
        .await
        .expect("publish");
    sent.insert(newer.id.clone(), newer.clone());

    eventually("every token indexed", || async {
        index_caught_up(&c, &k).await
    })
    .await;
    let indexed_by = now_s();

    // memory:{id}: the token as JSON for an hour; the newer state kept over the late older one.
    for t in sent.values().chain([&unused, &ancient, &other_user]) {
        let json: Option<String> = c.get(k.memory(&t.id)).await.expect("get");
        let back: MemoryToken =
            serde_json::from_str(&json.unwrap_or_else(|| panic!("{} cached", t.id))).expect("json");
        assert_eq!(&back, t, "{}", t.id);
        let pttl: i64 = c.pttl(k.memory(&t.id)).await.expect("pttl");
        assert!(
            (3_500_000..=3_600_000).contains(&pttl),
            "{}: pttl {pttl}",
            t.id
        );
    }
    // score:{user}:{ctx}:{token}: the relevance when it was indexed, for 15 minutes.
    for t in sent.values().chain([&unused]) {
        let key = k.score(&t.user, &t.context, &t.token);
        let s: String = c.get(&key).await.expect("get score");
        let s: f64 = s.parse().expect("decimal text");
        let (hi, lo) = (
            expected_relevance(t, started),
            expected_relevance(t, indexed_by),
        );
        assert!(
            s <= hi * (1.0 + 1e-12) && s >= lo * (1.0 - 1e-12),
            "{}: {s} not within [{lo}, {hi}]",
            t.id
        );
        let pttl: i64 = c.pttl(&key).await.expect("pttl");
        assert!((800_000..=900_000).contains(&pttl), "{key}: pttl {pttl}");
    }
    assert_eq!(
        MemoryIndex::new(c.clone(), k.clone())
            .cached_score("u1", "c1", &unused.token)
            .await
            .expect("score"),
        Some(0.0)
    );

    // Top-k per context: exactly the most relevant by the formula, in order, the index capped at
    // memory_index_max (12) entries; unaccessed and faded tokens not ranked.
    let index = MemoryIndex::new(c.clone(), k.clone());
    for ctx in ["c1", "c2"] {
        let got = index.top_k("u1", ctx, 100).await.expect("top k");
        let now = now_s();
        let mut want: Vec<&MemoryToken> = sent.values().filter(|t| t.context == ctx).collect();
        want.sort_by(|a, b| expected_relevance(b, now).total_cmp(&expected_relevance(a, now)));
        want.truncate(12);
        let got_ids: Vec<&str> = got.iter().map(|r| r.id.as_str()).collect();
        let want_ids: Vec<&str> = want.iter().map(|t| t.id.as_str()).collect();
        assert_eq!(
            got_ids, want_ids,
            "{ctx}: ranked by relevance, capped at 12"
        );
        for (r, t) in got.iter().zip(&want) {
            let e = expected_relevance(t, now);
            assert!(
                (r.relevance - e).abs() <= 1e-4 * e,
                "{}: {} vs {e}",
                t.id,
                r.relevance
            );
            assert_eq!(r.token.as_ref(), Some(*t), "{}: the cached token", t.id);
        }
        let card: i64 = c
            .zcard(k.memory_context_index("u1", ctx))
            .await
            .expect("zcard");
        assert!(card <= 12, "{ctx}: {card} entries");
        let top3 = index.top_k("u1", ctx, 3).await.expect("top 3");
        let top3_ids: Vec<&str> = top3.iter().map(|r| r.id.as_str()).collect();
        assert_eq!(top3_ids, got_ids[..3], "{ctx}: a smaller k is a prefix");
    }
    // Over all of u1's contexts.
    let all = index.top_k_user("u1", 5).await.expect("top k user");
    let now = now_s();
    let mut want: Vec<&MemoryToken> = sent.values().collect();
    want.sort_by(|a, b| expected_relevance(b, now).total_cmp(&expected_relevance(a, now)));
    let ids: Vec<&str> = all.iter().map(|r| r.id.as_str()).collect();
    let want_ids: Vec<&str> = want.iter().take(5).map(|t| t.id.as_str()).collect();
    assert_eq!(ids, want_ids);
    for absent in [&unused.id, &ancient.id] {
        let s: Option<f64> = c
            .zscore(k.memory_context_index("u1", "c1"), absent.as_str())
            .await
            .expect("zscore");
        assert_eq!(s, None, "{absent} is not ranked");
    }
    let u2 = index.top_k("u2", "c1", 10).await.expect("u2");
    assert_eq!(u2.len(), 1, "one memory for u2, its repeated mid dropped");
    assert_eq!(u2[0].token.as_ref(), Some(&other_user));

    assert!(
        dead_reasons(&c, &k).await.is_empty(),
        "no valid token dead-lettered"
    );
    stop.cancel();
    task.await.expect("join");
    // The stream itself was archived like every stream.
    let archived = kitbash_archive::store::read_all(&dir.path().join(&ns), M).unwrap_or_default();
    assert_eq!(archived, xrange(&c, &k.stream(M)).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_entries_are_dead_lettered_with_their_reason_and_valid_ones_indexed() {
    let server = RedisServer::start().expect("redis");
    let ns = kitbash_testkit::namespace();
    let (c, k) = (client(&server.url()).await, keys(&ns));
    let dir = tempfile::tempdir().expect("tmp");
    let mut cfg = config(&server.url(), &ns, dir.path());
    cfg.archive.streams = vec!["queries".into()];
    let producer = Producer::new(c.clone(), k.clone(), 1);
    let key = k.stream(M);
    let good = token("ok-1", "u1", "c1", 1.0, 3);
    producer.publish(M, &good).await.expect("publish");
    let bad_user = MemoryToken {
        user: "no spaces allowed".into(),
        ..token("bad-1", "u1", "c1", 1.0, 3)
    };
    producer.publish(M, &bad_user).await.expect("publish");
    let bad_ts = MemoryToken {
        ts: -5.0,
        ..token("bad-2", "u1", "c1", 1.0, 3)
    };
    producer.publish(M, &bad_ts).await.expect("publish");
    xadd(
        &c,
        &key,
        &[
            (b"type".to_vec(), b"memory_token".to_vec()),
            (b"v".to_vec(), b"1".to_vec()),
            (b"ct".to_vec(), b"json".to_vec()),
            (b"d".to_vec(), b"{not json".to_vec()),
        ],
    )
    .await;
    let good2 = token("ok-2", "u1", "c1", 2.0, 5);
    producer.publish(M, &good2).await.expect("publish");
    let (stop, task) = start(cfg).await;
    eventually("every entry settled", || async {
        index_caught_up(&c, &k).await
    })
    .await;
    let dead = dead_reasons(&c, &k).await;
    assert_eq!(dead.len(), 3, "{dead:#?}");
    assert!(dead.iter().any(|d| d.contains("user must be")), "{dead:#?}");
    assert!(dead.iter().any(|d| d.contains("ts is not")), "{dead:#?}");
    assert!(
        dead.iter().all(|d| d.contains("index")),
        "the group is named: {dead:#?}"
    );
    for d in &dead {
        assert!(
            !d.contains("ok-1") && !d.contains("ok-2"),
            "a valid token dead-lettered: {d}"
        );
    }
    let top = MemoryIndex::new(c.clone(), k.clone())
        .top_k("u1", "c1", 10)
        .await
        .expect("top");
    let ids: Vec<&str> = top.iter().map(|r| r.id.as_str()).collect();
    assert_eq!(ids, ["ok-2", "ok-1"]);
    stop.cancel();
    task.await.expect("join");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn while_redis_refuses_writes_tokens_are_held_then_indexed_and_none_dead() {
    use kitbash_testkit::support::{allow_writes, append_then_refuse_writes};
    let server = RedisServer::start().expect("redis");
    let ns = kitbash_testkit::namespace();
    let (c, k) = (client(&server.url()).await, keys(&ns));
    let dir = tempfile::tempdir().expect("tmp");
    let mut cfg = config(&server.url(), &ns, dir.path());
    cfg.archive.streams = vec!["queries".into()];
    let producer = Producer::new(c.clone(), k.clone(), 1);
    producer
        .publish(M, &token("warm", "u1", "c1", 1.0, 1))
        .await
        .expect("publish");
    let (stop, task) = start(cfg).await;
    eventually("the first token indexed", || async {
        index_caught_up(&c, &k).await
    })
    .await;
    let held: Vec<MemoryToken> = (0..20)
        .map(|i| token(&format!("held-{i}"), "u1", "c1", i as f64, 1 + i))
        .collect();
    let entries: Vec<Vec<(&str, String)>> = held
        .iter()
        .map(|t| {
            kitbash_schema::Envelope::json(t)
                .expect("encode")
                .to_fields()
                .into_iter()
                .map(|(f, v)| (f, String::from_utf8(v).expect("json is text")))
                .collect()
        })
        .collect();
    append_then_refuse_writes(&server, &k.stream(M), &entries).expect("refuse writes");
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(
        dead_reasons(&c, &k).await.is_empty(),
        "nothing dead while Redis refuses writes"
    );
    let none: Option<String> = c.get(k.memory("held-0")).await.expect("get");
    assert_eq!(none, None, "not written while refused");
    allow_writes(&server).expect("allow writes");
    eventually("every held token indexed", || async {
        index_caught_up(&c, &k).await
    })
    .await;
    let top = MemoryIndex::new(c.clone(), k.clone())
        .top_k("u1", "c1", 100)
        .await
        .expect("top");
    assert_eq!(top.len(), 21, "{top:?}");
    assert!(
        dead_reasons(&c, &k).await.is_empty(),
        "no valid token dead-lettered"
    );
    stop.cancel();
    task.await.expect("join");
}

/// Token `i` of the binary's test: seven users, one context.
fn numbered(i: u64) -> MemoryToken {
    token(
        &format!("b{i}"),
        &format!("u{}", i % 7),
        "c1",
        i as f64,
        1 + i % 9,
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_binary_indexes_across_a_redis_restart_and_a_sigterm_mid_feed() {
    // With an append-only file, so a restart keeps the stream, the groups and the indexes.
    let mut server = RedisServer::builder()
        .appendonly(kitbash_testkit::Appendfsync::Always)
        .start()
        .expect("redis");
    let ns = kitbash_testkit::namespace();
    let dir = tempfile::tempdir().expect("tmp");
    let spawn = |url: &str| {
        daemon_command(env!("CARGO_BIN_EXE_kitbash-archive"), url, &ns)
            .env("KITBASH__ARCHIVE__DIR", dir.path())
            .env("KITBASH__ARCHIVE__MEMORY_STREAM_MAX", "0")
            .spawn()
            .expect("spawn kitbash-archive")
    };
    let url = server.url();
    let mut first = spawn(&url);
    let (c, k) = (client(&url).await, keys(&ns));
    let producer = Producer::new(c.clone(), k.clone(), 1);
    let mut ids = Vec::new();
    for i in 0..300u64 {
        let t = numbered(i);
        producer.publish(M, &t).await.expect("publish");
        ids.push(t.id);
    }
    // SIGTERM while tokens keep arriving: the batch in hand is settled, the rest stays in the
    // stream for the next instance.
    signal(&first, "-TERM");
    for i in 300..600u64 {
        let t = numbered(i);
        producer.publish(M, &t).await.expect("publish");
        ids.push(t.id);
    }
    assert_eq!(
        wait_exit(&mut first).await.code(),
        Some(0),
        "drained and exited 0"
    );
    // The next instance, and Redis restarting under it (with its data, from the AOF): it
    // reconnects and goes on; tokens sent after the restart are indexed too.
    let mut second = spawn(&url);
    eventually("the second instance indexing", || async {
        let v: Option<String> = c.get(k.memory("b599")).await.unwrap_or(None);
        v.is_some()
    })
    .await;
    server.restart().expect("restart");
    for i in 600..700u64 {
        let t = numbered(i);
        // Retried with the same mid while Redis comes back: a duplicate is dropped.
        let mid = format!("after-restart-{i}");
        while producer.publish_with_mid(M, &t, &mid).await.is_err() {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        ids.push(t.id);
    }
    eventually("every token indexed after the restarts", || async {
        index_caught_up(&c, &k).await
    })
    .await;
    for id in &ids {
        let v: Option<String> = c.get(k.memory(id)).await.expect("get");
        assert!(v.is_some(), "{id} cached");
    }
    let mut ranked = 0;
    for u in 0..7 {
        ranked += MemoryIndex::new(c.clone(), k.clone())
            .top_k(&format!("u{u}"), "c1", 1_000)
            .await
            .expect("top")
            .len();
    }
    assert_eq!(ranked, 700, "each token ranked once for its user");
    assert!(
        dead_reasons(&c, &k).await.is_empty(),
        "no valid token dead-lettered"
    );
    signal(&second, "-TERM");
    assert_eq!(wait_exit(&mut second).await.code(), Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_indexer_trims_the_memory_stream_only_below_what_it_indexed() {
    let server = RedisServer::start().expect("redis");
    let ns = kitbash_testkit::namespace();
    let (c, k) = (client(&server.url()).await, keys(&ns));
    let dir = tempfile::tempdir().expect("tmp");
    let mut cfg = config(&server.url(), &ns, dir.path());
    // Not archived: the indexer is the stream's trim owner.
    cfg.archive.streams = vec!["queries".into()];
    cfg.archive.memory_stream_max = 100;
    let producer = Producer::new(c.clone(), k.clone(), 1);
    let tokens: Vec<MemoryToken> = (0..1_000)
        .map(|i| token(&format!("t{i}"), "u1", &format!("c{}", i % 50), 1.0, 1))
        .collect();
    producer.publish_batch(M, &tokens).await.expect("publish");
    let (stop, task) = start(cfg).await;
    eventually("trimmed near its bound once indexed", || async {
        let len: u64 = c.xlen(k.stream(M)).await.unwrap_or(u64::MAX);
        len < 1_000 && index_pending(&c, &k).await == 0
    })
    .await;
    // Everything trimmed had been indexed first.
    for t in &tokens {
        let v: Option<String> = c.get(k.memory(&t.id)).await.expect("get");
        assert!(v.is_some(), "{} indexed before its entry was trimmed", t.id);
    }
    stop.cancel();
    task.await.expect("join");
}
