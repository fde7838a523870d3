//! The compact layout (`[reflex] layout = "compact"`): the decayed resonance equals the naive
//! reference over many cycles with crossings once per rise and the hot set pruned to exactly
//! the hot queries; the sweep forgets idle records by Redis time; a Redis holding the other
//! layout is refused at start (in-process and by the binary); records are readable by
//! redis-py with the documented rule.
//!
//! Cycles here are driven by the test, through the real leader: the period is an hour, and the
//! test moves `kitbash:decay:clock`'s `last_ms` back by k periods, so the leader's next tick
//! applies exactly k cycles. The cycle at which each hit is applied is then known exactly
//! (the compact record keeps no cycle of its own).

use std::process::{Command, Stdio};
use std::time::Duration;

use fred::prelude::*;
use kitbash_client::Producer;
use kitbash_client::reflex::{Reflex, query_hash};
use kitbash_runtime::{Config, RuntimeError};
use kitbash_schema::reflex::{CompactRecord, Layout, compact_bucket, compact_id};
use kitbash_schema::{Keys, StreamName};
use kitbash_testkit::RedisServer;

use crate::support::*;

const HOUR_MS: u64 = 3_600_000;
const BUCKETS: u32 = 8;

fn compact_config(url: &str, ns: &str) -> Config {
    let mut c = config(url, ns);
    c.decay.period_ms = HOUR_MS;
    c.decay.lease_ms = 300;
    c.decay.tick_ms = 20;
    c.reflex.layout = Layout::Compact;
    c.reflex.buckets = BUCKETS;
    c
}

fn reflex(c: &Client, k: &Keys) -> Reflex {
    Reflex::new(c.clone(), k.clone(), 0.9).with_layout(Layout::Compact, BUCKETS)
}

/// The stored record of `text`, if any.
async fn record(c: &Client, k: &Keys, text: &str) -> Option<CompactRecord> {
    let id = compact_id(&query_hash(text)).expect("id");
    let bucket = compact_bucket(&id, BUCKETS).expect("bucket");
    let v: Option<String> = c.hget(k.cms_bucket(bucket), &id).await.expect("hget");
    v.map(|v| CompactRecord::decode(&v).expect("a well-formed record"))
}

/// Makes the leader apply `n` more cycles and waits until it has.
async fn advance(c: &Client, k: &Keys, n: u64) {
    let from = cycle(c, k).await;
    eventually("the clock started", || async {
        let last: Option<u64> = c.hget(k.decay_clock(), "last_ms").await.expect("hget");
        last.is_some()
    })
    .await;
    let last: u64 = c
        .hget::<Option<u64>, _, _>(k.decay_clock(), "last_ms")
        .await
        .expect("hget")
        .unwrap_or(0);
    let _: () = c
        .hset(
            k.decay_clock(),
            ("last_ms", (last - n * HOUR_MS).to_string()),
        )
        .await
        .expect("hset");
    eventually("cycles applied", || async { cycle(c, k).await == from + n }).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compact_resonance_equals_the_reference_and_the_hot_set_is_exactly_the_hot_queries() {
    let server = RedisServer::start().expect("redis");
    let ns = kitbash_testkit::namespace();
    let k = keys(&ns);
    let c = client(&server.url()).await;
    let (signals, _) = kitbash_runtime::shutdown::manual();
    let stop = signals.shutdown.clone();
    let task = tokio::spawn(kitbash_decay::run(
        compact_config(&server.url(), &ns),
        signals,
    ));
    let producer = Producer::new(c.clone(), k.clone(), 1);
    let texts: Vec<String> = (0..4).map(|i| format!("compact query {i}")).collect();
    let mut reference = Reference::default();
    let mut counts = std::collections::HashMap::<String, u64>::new();
    let mut rng = 0x2545_f491_4f6c_dd1d_u64;
    let mut next = move || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng
    };
    for i in 0..120usize {
        if i % 12 == 11 {
            advance(&c, &k, 1 + next() % 10).await;
        }
        let text = if i % 12 < 6 {
            texts[(i / 12) % texts.len()].clone()
        } else {
            texts[(next() % texts.len() as u64) as usize].clone()
        };
        let at = cycle(&c, &k).await;
        producer
            .publish(StreamName::Queries, &query(&text))
            .await
            .expect("publish");
        let want = counts.get(&text).copied().unwrap_or(0) + 1;
        counts.insert(text.clone(), want);
        eventually("hit applied", || async {
            let n = record(&c, &k, &text).await.map_or(0, |r| r.count);
            assert!(n <= want, "{text}: applied twice");
            n == want
        })
        .await;
        reference.hit(&text, at);
    }
    // One more cycle: the leader prunes the hot set to what is still above the threshold.
    advance(&c, &k, 1).await;
    let now = cycle(&c, &k).await;
    assert!(now >= 30, "ran over many cycles ({now})");
    let r = reflex(&c, &k);
    let mut hot_want = Vec::new();
    for text in &texts {
        let got = r.lookup(text).await.expect("lookup");
        let want = reference.at(text, got.cycle);
        assert!(
            (got.resonance - want).abs() <= 1e-12 * want,
            "{text} at cycle {}: {} vs reference {want}",
            got.cycle,
            got.resonance
        );
        assert_eq!(got.count, counts.get(text).copied());
        assert_eq!(
            got.grains,
            vec![42, 17],
            "the latest hits' grains, oldest first"
        );
        assert_eq!(got.hash, compact_id(&query_hash(text)).expect("id"));
        if want > 0.8 {
            hot_want.push(got.hash.clone());
        }
    }
    let crossings: u64 = c.xlen(k.stream(StreamName::Crossings)).await.expect("xlen");
    assert_eq!(crossings, reference.crossings, "one crossing per rise");
    assert!(reference.crossings >= 2, "the run rose more than once");
    let mut hot: Vec<String> = c
        .zrange(k.reflex_hot(), 0, -1, None, false, None, false)
        .await
        .expect("zrange");
    hot.sort();
    hot_want.sort();
    assert_eq!(hot, hot_want, "the hot set holds exactly the hot queries");
    let texts_kept: u64 = c.hlen(k.reflex_hot_text()).await.expect("hlen");
    assert_eq!(
        texts_kept,
        hot.len() as u64,
        "hot texts pruned with the set"
    );
    // Nothing of the seed layout was written.
    for text in &texts {
        let h = query_hash(text);
        let n: u64 = c
            .exists(vec![k.cms(&h), k.cms_grains(&h), k.cms_resonance(&h)])
            .await
            .expect("exists");
        assert_eq!(n, 0, "seed keys of {text}");
    }
    let n: u64 = c.exists(k.resonance_index()).await.expect("exists");
    assert_eq!(n, 0, "no resonance index");
    let layout: Option<String> = c.get(k.reflex_layout()).await.expect("get");
    assert_eq!(layout.as_deref(), Some("compact/8"));
    stop.cancel();
    task.await.expect("join").expect("run");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sweep_forgets_records_idle_for_their_ttl_by_redis_time() {
    let server = RedisServer::start().expect("redis");
    let ns = kitbash_testkit::namespace();
    let k = keys(&ns);
    let c = client(&server.url()).await;
    let mut cfg = compact_config(&server.url(), &ns);
    cfg.reflex.record_ttl_s = 1;
    cfg.reflex.sweep_buckets = 3; // fewer than the buckets: the cursor carries on
    let (signals, _) = kitbash_runtime::shutdown::manual();
    let stop = signals.shutdown.clone();
    let task = tokio::spawn(kitbash_decay::run(cfg, signals));
    let producer = Producer::new(c.clone(), k.clone(), 1);
    let old: Vec<String> = (0..20).map(|i| format!("idle query {i}")).collect();
    for t in &old {
        producer
            .publish(StreamName::Queries, &query(t))
            .await
            .expect("publish");
    }
    for t in &old {
        eventually("applied", || async { record(&c, &k, t).await.is_some() }).await;
    }
    // Two seconds of Redis time later, one more query is hit: it is fresh, the others idle.
    tokio::time::sleep(Duration::from_millis(2_100)).await;
    producer
        .publish(StreamName::Queries, &query("fresh"))
        .await
        .expect("publish");
    eventually("fresh applied", || async {
        record(&c, &k, "fresh").await.is_some()
    })
    .await;
    // Three cycles sweep 9 ≥ 8 buckets: every bucket visited once.
    advance(&c, &k, 1).await;
    advance(&c, &k, 1).await;
    advance(&c, &k, 1).await;
    eventually("idle records swept", || async {
        let mut left = 0;
        for t in &old {
            left += u32::from(record(&c, &k, t).await.is_some());
        }
        left == 0
    })
    .await;
    assert!(
        record(&c, &k, "fresh").await.is_some(),
        "a fresh record survives the sweep"
    );
    let cursor: Option<u32> = c.get(k.cms_sweep()).await.expect("get");
    assert_eq!(cursor, Some(9 % BUCKETS), "the cursor carries on");
    // A forgotten query starts again from nothing.
    producer
        .publish(StreamName::Queries, &query(&old[0]))
        .await
        .expect("publish");
    eventually("counted afresh", || async {
        record(&c, &k, &old[0]).await.is_some_and(|r| r.count == 1)
    })
    .await;
    stop.cancel();
    task.await.expect("join").expect("run");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_holding_the_other_layout_is_refused_at_start() {
    let server = RedisServer::start().expect("redis");
    let ns = kitbash_testkit::namespace();
    let k = keys(&ns);
    let c = client(&server.url()).await;
    let _: () = c
        .set(k.reflex_layout(), "seed", None, None, false)
        .await
        .expect("set");
    // In-process: `run` returns the refusal, naming both layouts.
    let (signals, _) = kitbash_runtime::shutdown::manual();
    let err = tokio::time::timeout(
        Duration::from_secs(30),
        kitbash_decay::run(compact_config(&server.url(), &ns), signals),
    )
    .await
    .expect("refused at once, not run")
    .expect_err("refused");
    assert!(matches!(err, RuntimeError::Refused { .. }), "{err:?}");
    let msg = err.to_string();
    assert!(
        msg.contains("\"seed\"") && msg.contains("\"compact/8\""),
        "{msg}"
    );
    // Nothing was consumed or written meanwhile.
    let n: u64 = c
        .exists(k.stream(StreamName::Queries))
        .await
        .expect("exists");
    assert_eq!(n, 0, "no consumer group created");
    // The binary: non-zero exit, the reason on stderr.
    let out = Command::new(env!("CARGO_BIN_EXE_kitbash-decay"))
        .env("KITBASH_CONFIG_DIR", "/nonexistent")
        .env("KITBASH__REDIS__URL", server.url())
        .env("KITBASH__REDIS__NAMESPACE", &ns)
        .env("KITBASH__ADMIN__LISTEN", "")
        .env("KITBASH__REFLEX__LAYOUT", "compact")
        .env("KITBASH__REFLEX__BUCKETS", "8")
        .stdin(Stdio::null())
        .output()
        .expect("run kitbash-decay");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "exit: {:?}\n{stderr}", out.status);
    assert!(
        stderr.contains("reflex layout") && stderr.contains("compact/8"),
        "{stderr}"
    );
    // The same binary configured for the seed layout starts (then stops on SIGTERM).
    let mut ok = spawn_decay(&server.url(), &ns);
    let lease = k.leader(kitbash_schema::DaemonKind::Decay, "decay-cycle");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let n: u64 = c.exists(&lease).await.expect("exists");
        if n == 1 || ok.try_wait().expect("wait").is_some() {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "never led");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        ok.try_wait().expect("wait").is_none(),
        "the seed instance runs"
    );
    signal(&ok, "-TERM");
    assert!(wait_exit(&mut ok).await.success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compact_records_read_back_with_redis_py_by_the_documented_rule() {
    let server = RedisServer::start().expect("redis");
    let ns = kitbash_testkit::namespace();
    let k = keys(&ns);
    let c = client(&server.url()).await;
    let (signals, _) = kitbash_runtime::shutdown::manual();
    let stop = signals.shutdown.clone();
    let task = tokio::spawn(kitbash_decay::run(
        compact_config(&server.url(), &ns),
        signals,
    ));
    let producer = Producer::new(c.clone(), k.clone(), 1);
    for _ in 0..6 {
        producer
            .publish(StreamName::Queries, &query("python reads this"))
            .await
            .expect("publish");
    }
    eventually("six hits", || async {
        record(&c, &k, "python reads this")
            .await
            .is_some_and(|r| r.count == 6)
    })
    .await;
    let want = reflex(&c, &k)
        .lookup("python reads this")
        .await
        .expect("lookup");
    // What docs say a reader in another language does: id = sha256 hex[:16], bucket =
    // int(id, 16) % buckets, record = count|last_s|score|grains, r = exp(score + C ln f).
    let script = format!(
        r#"
import hashlib, math, redis
r = redis.Redis(port={port}, decode_responses=True)
ns = "{ns}:"
h = hashlib.sha256("python reads this".encode()).hexdigest()
qid = h[:16]
bucket = int(qid, 16) % {buckets}
rec = r.hget(ns + "kitbash:cms:" + str(bucket), qid)
count, last_s, score, grains = rec.split("|")
cycle = int(r.get(ns + "kitbash:decay:cycle") or 0)
res = math.exp(float(score) + cycle * math.log(0.9))
assert int(count) == 6, rec
assert [int(g) for g in grains.split(",")] == [42, 17], rec
assert r.zscore(ns + "kitbash:reflex:hot", qid) is not None
assert r.hget(ns + "kitbash:reflex:hot:text", qid) == "python reads this"
print(repr(res))
"#,
        port = server.port(),
        ns = ns,
        buckets = BUCKETS,
    );
    let out = kitbash_testkit::python::python3(&["redis"])
        .args(["-c", &script])
        .output()
        .expect("python3");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "redis-py: {stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let py: f64 = stdout.trim().parse().expect("a float");
    assert!(
        (py - want.resonance).abs() <= 1e-12,
        "python {py} vs client {}",
        want.resonance
    );
    stop.cancel();
    task.await.expect("join").expect("run");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redelivered_event_changes_nothing_in_the_compact_layout() {
    use kitbash_decay::hits::{Applied, Hits};
    let server = RedisServer::start().expect("redis");
    let ns = kitbash_testkit::namespace();
    let k = keys(&ns);
    let c = client(&server.url()).await;
    let (signals, _) = kitbash_runtime::shutdown::manual();
    let ctx = kitbash_runtime::DaemonContext::start(
        kitbash_schema::DaemonKind::Decay,
        compact_config(&server.url(), &ns),
        signals,
    )
    .await
    .expect("ctx");
    let hits = Hits::new(&ctx);
    let q = query("said twice");
    let first = hits.apply("7-0", &q).await.expect("apply");
    assert!(
        matches!(first, Applied::Now { crossed: false, .. }),
        "{first:?}"
    );
    let before = record(&c, &k, "said twice").await.expect("record");
    assert_eq!(hits.apply("7-0", &q).await.expect("apply"), Applied::Before);
    assert_eq!(record(&c, &k, "said twice").await, Some(before.clone()));
    assert_eq!(before.count, 1);
    // Six distinct entries cross once; a seventh does not cross again.
    let mut crossed = 0;
    for i in 1..=6 {
        if let Applied::Now { crossed: true, .. } =
            hits.apply(&format!("8-{i}"), &q).await.expect("apply")
        {
            crossed += 1;
        }
    }
    assert_eq!(crossed, 1, "one crossing per rise");
    let n: u64 = c.xlen(k.stream(StreamName::Crossings)).await.expect("xlen");
    assert_eq!(n, 1);
    let queries: Option<u64> = c.get(k.metrics_queries_count()).await.expect("get");
    assert_eq!(queries, Some(7), "a redelivery is not counted");
}
