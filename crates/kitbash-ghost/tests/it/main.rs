//! kitbash-ghost (with kitbash-decay feeding it) against a real redis-server: ghosts equal a
//! brute-force search under each of the seed's hats, a hat switch recomputes them, every seed
//! key has the seed's shape and TTL as redis-py reads it, crossings are applied once across a
//! `kill -9` and a restart, poison crossings are dead-lettered, SIGTERM drains; `crossings` is
//! kept near its bound without trimming unacknowledged entries ([`bounds`]). The compact
//! layout and its start-up check are in [`compact`]; the recompute leader in [`leader`]; Redis
//! refusing writes in [`faults`].

mod bounds;
mod cluster;
mod compact;
mod faults;
mod fence;
mod leader;

use std::collections::HashMap;
use std::process::{Command, Stdio};
use std::time::Duration;

use fred::prelude::*;
use fred::types::Value;
use kitbash_client::Producer;
use kitbash_client::reflex::{Grain, Reflex, hat_mask_of, parse_grains, query_hash};
use kitbash_runtime::Config;
use kitbash_schema::messages::Crossing;
use kitbash_schema::reflex::SEED_HATS;
use kitbash_schema::{Keys, Namespace, StreamName};
use kitbash_ternary::{HatMask, signature};
use kitbash_testkit::RedisServer;

pub(crate) use kitbash_testkit::support::{eventually, signal, wait_exit};

pub(crate) const SAMPLE: &str = include_str!("../../../../config/demo/grains.jsonl");

pub(crate) fn config(url: &str, ns: &str) -> Config {
    let mut c = Config::default();
    c.redis.url = url.to_owned();
    c.redis.namespace = ns.to_owned();
    c.admin.listen = String::new();
    c.consumer.block_ms = 50;
    c.ghost.poll_ms = 100;
    c.decay.period_ms = 3_600_000;
    c
}

pub(crate) async fn client(url: &str) -> Client {
    let cfg = kitbash_runtime::config::RedisConfig {
        url: url.to_owned(),
        ..Default::default()
    };
    kitbash_runtime::redis::connect_client(&cfg, Duration::from_secs(10))
        .await
        .expect("connect")
}

/// The top 3 by a naive i8 dot product over every grain, the hat applied to each grain.
pub(crate) fn brute_force(grains: &[Grain], text: &str, hat: &HatMask) -> String {
    let q = signature(text, 256).expect("sig").to_i8();
    let mut scored: Vec<(i32, u64)> = grains
        .iter()
        .map(|g| {
            let g8 = g.vector.with_hat(hat).to_i8();
            let s: i32 = q
                .iter()
                .zip(&g8)
                .map(|(a, b)| i32::from(*a) * i32::from(*b))
                .sum();
            (s, g.id)
        })
        .collect();
    scored.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
    scored
        .iter()
        .take(3)
        .map(|(_, id)| id.to_string())
        .collect::<Vec<_>>()
        .join(",")
}

async fn ghosts(c: &Client, k: &Keys, texts: &[String]) -> Vec<Option<String>> {
    let mut out = Vec::new();
    for t in texts {
        let g: Option<String> = c.get(k.ghost(&query_hash(t))).await.expect("get");
        out.push(g);
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ghosts_equal_brute_force_under_each_hat_and_seed_keys_read_back_in_python() {
    let server = RedisServer::start().expect("redis");
    let ns = kitbash_testkit::namespace();
    let k = Keys::new(Namespace::new(ns.clone()).expect("ns"));
    let c = client(&server.url()).await;
    let reflex = Reflex::new(c.clone(), k.clone(), 0.9);
    let grains = parse_grains(SAMPLE, 256).expect("sample grains");
    reflex.hat_init().await.expect("hats");
    reflex.grains_import(&grains).await.expect("import");
    let (s1, _) = kitbash_runtime::shutdown::manual();
    let (s2, _) = kitbash_runtime::shutdown::manual();
    let (stop1, stop2) = (s1.shutdown.clone(), s2.shutdown.clone());
    let decay = tokio::spawn(kitbash_decay::run(config(&server.url(), &ns), s1));
    let ghost = tokio::spawn(kitbash_ghost::run(config(&server.url(), &ns), s2));
    let producer = Producer::new(c.clone(), k.clone(), 1);
    let texts: Vec<String> = (0..12)
        .map(|i| format!("what is the entropy of system {i}"))
        .collect();
    for t in &texts {
        for _ in 0..6 {
            reflex
                .record_hit(&producer, t, &[7, 9, 11], Some(1.5))
                .await
                .expect("hit");
        }
    }
    let analytical = HatMask::from_bytes(&hat_mask_of("analytical")).expect("mask");
    let want: Vec<Option<String>> = texts
        .iter()
        .map(|t| Some(brute_force(&grains, t, &analytical)))
        .collect();
    // (A ghost may first come from the recompute leader's start-up pass; the crossings then
    // rewrite the same value and count.)
    eventually(
        "every hot query has its ghost, one activation per crossing",
        || async {
            let n: Option<u64> = c.get(k.ghost_activations()).await.expect("get");
            ghosts(&c, &k, &texts).await == want && n == Some(12)
        },
    )
    .await;
    // The one-round-trip lookup sees it all.
    let look = reflex.lookup(&texts[0]).await.expect("lookup");
    // Its counts reach `metrics:grains:lookups` / `metrics:cache:hits` in batches (read below).
    reflex.flush_counters().await.expect("counters");
    assert_eq!(look.count, Some(6));
    assert!(look.resonance > 0.8);
    let mut g = look.grains.clone();
    g.sort_unstable();
    assert_eq!(g, vec![7, 9, 11]);
    assert_eq!(look.hat.as_deref(), Some("analytical"));
    assert_eq!(
        look.hat_mask.as_deref(),
        Some(&hat_mask_of("analytical")[..])
    );
    let ids: Vec<String> = look.ghost_ids().iter().map(u64::to_string).collect();
    assert_eq!(Some(ids.join(",")), want[0]);
    for g in &look.ghost {
        let stored = grains.iter().find(|x| x.id == g.id).expect("grain");
        assert_eq!(g.plus, stored.vector.plus_bytes());
        assert_eq!(g.minus, stored.vector.minus_bytes());
        assert_eq!(g.sig.as_ref(), Some(&stored.sig));
    }
    // Every hat: a switch recomputes every hot query's ghost to the brute force under it.
    let mut per_hat: HashMap<&str, Vec<Option<String>>> = HashMap::new();
    for hat in SEED_HATS.iter().rev() {
        assert!(reflex.hat_set(hat).await.expect("hat set"));
        let mask = HatMask::from_bytes(&hat_mask_of(hat)).expect("mask");
        let want: Vec<Option<String>> = texts
            .iter()
            .map(|t| Some(brute_force(&grains, t, &mask)))
            .collect();
        eventually(&format!("ghosts under {hat}"), || async {
            ghosts(&c, &k, &texts).await == want
        })
        .await;
        per_hat.insert(hat, want);
    }
    assert_ne!(
        per_hat["analytical"], per_hat["creative"],
        "a hat switch changes the results"
    );
    assert!(!reflex.hat_set("no-such-hat").await.expect("hat set"));
    let activations: u64 = c.get(k.ghost_activations()).await.expect("get");
    assert_eq!(activations, 12, "recomputations are not activations");
    eventually("latency metrics written", || async {
        let p: Option<String> = c.get(k.metrics_latency_p95()).await.expect("get");
        p.is_some()
    })
    .await;
    // The seed's shapes and TTLs, read as the seed's Python would.
    let script = format!(
        r#"
import json, re, sys, hashlib, redis
r = redis.Redis(port={port}, decode_responses=False)
ns = "{ns}:"
h = hashlib.sha256("{text}".encode()).hexdigest()
rec = r.hgetall(ns + "cms:" + h)
assert int(rec[b"count"]) == 6, rec
assert 0.8 < float(rec[b"resonance_score"]) < 1.0, rec
assert re.match(rb"^\d{{4}}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z$", rec[b"last_accessed"]), rec
assert 0 < r.ttl(ns + "cms:" + h) <= 86400
assert r.type(ns + "cms:" + h + ":grains") == b"zset"
assert sorted(int(m) for m in r.zrange(ns + "cms:" + h + ":grains", 0, -1)) == [7, 9, 11]
assert 0 < r.ttl(ns + "cms:" + h + ":grains") <= 86400
res = float(r.get(ns + "cms:" + h + ":resonance"))
assert 0.8 < res < 1.0
assert 86400 < r.ttl(ns + "cms:" + h + ":resonance") <= 432000
ghost = r.get(ns + "ghost:" + h).decode()
assert re.match(r"^\d+,\d+,\d+$", ghost), ghost
assert 0 < r.ttl(ns + "ghost:" + h) <= 3600
assert int(r.get(ns + "ghost:activations")) == 12
for gid in ghost.split(","):
    sig = json.loads(r.get(ns + "grain:" + gid + ":sig"))
    assert set(sig) >= {{"popcount", "axiom", "weight"}}, sig
    assert len(r.get(ns + "grain:" + gid + ":bits:+")) == 32
    assert len(r.get(ns + "grain:" + gid + ":bits:-")) == 32
    assert r.ttl(ns + "grain:" + gid + ":sig") == -1
assert r.sismember(ns + "grain:index", "42")
assert r.scard(ns + "grain:index") == 200
assert r.get(ns + "hat:current") == b"analytical"
for hat in ["analytical", "creative", "empathetic", "deliberative", "neutral"]:
    m = r.get(ns + "hat:" + hat + ":mask")
    assert m == hashlib.sha256(hat.encode()).digest(), hat
    assert r.ttl(ns + "hat:" + hat + ":mask") == -1
assert int(r.get(ns + "metrics:queries:count")) == 72
assert 1.4 < float(r.get(ns + "metrics:latency:p95")) < 1.6
assert 1.4 < float(r.get(ns + "metrics:latency:p99")) < 1.6
assert int(r.get(ns + "metrics:grains:lookups")) >= 3
assert int(r.get(ns + "metrics:cache:hits")) >= 1
for m in ["queries:count", "latency:p95", "latency:p99", "grains:lookups", "cache:hits"]:
    assert r.ttl(ns + "metrics:" + m) == -1, m
print("ok")
"#,
        port = server.port(),
        ns = ns,
        text = texts[0],
    );
    let out = kitbash_testkit::python::python3(&["redis"])
        .args(["-c", &script])
        .output()
        .expect("python3");
    assert!(
        out.status.success() && String::from_utf8_lossy(&out.stdout).trim() == "ok",
        "redis-py: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    stop1.cancel();
    stop2.cancel();
    decay.await.expect("join").expect("run");
    ghost.await.expect("join").expect("run");
}

fn spawn_ghost(url: &str, ns: &str) -> kitbash_testkit::KillOnDrop {
    spawn_ghost_with(url, ns, &[], Stdio::null())
}

/// The binary with the test settings plus `env`, its stderr to `stderr`.
pub(crate) fn spawn_ghost_with(
    url: &str,
    ns: &str,
    env: &[(&str, &str)],
    stderr: Stdio,
) -> kitbash_testkit::KillOnDrop {
    Command::new(env!("CARGO_BIN_EXE_kitbash-ghost"))
        .env("KITBASH_CONFIG_DIR", "/nonexistent")
        .env("KITBASH__REDIS__URL", url)
        .env("KITBASH__REDIS__NAMESPACE", ns)
        .env("KITBASH__ADMIN__LISTEN", "")
        .env("KITBASH__CONSUMER__BLOCK_MS", "50")
        .env("KITBASH__CONSUMER__CLAIM_IDLE_MS", "500")
        .env("KITBASH__CONSUMER__CLAIM_INTERVAL_MS", "200")
        .envs(env.iter().copied())
        .stdout(Stdio::null())
        .stderr(stderr)
        .spawn()
        .expect("spawn kitbash-ghost")
        .into()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crossings_count_once_across_kill_9_and_restart_poison_is_dead_lettered() {
    let server = RedisServer::start().expect("redis");
    let ns = kitbash_testkit::namespace();
    let k = Keys::new(Namespace::new(ns.clone()).expect("ns"));
    let c = client(&server.url()).await;
    let reflex = Reflex::new(c.clone(), k.clone(), 0.9);
    reflex.hat_init().await.expect("hats");
    reflex
        .grains_import(&parse_grains(SAMPLE, 256).expect("grains"))
        .await
        .expect("import");
    let producer = Producer::new(c.clone(), k.clone(), 1);
    let crossings: Vec<Crossing> = (0..3000)
        .map(|i| {
            let text = format!("crossing query {i}");
            Crossing {
                hash: query_hash(&text),
                text,
                resonance: 0.81,
                cycle: 0,
            }
        })
        .collect();
    for chunk in crossings.chunks(500) {
        producer
            .publish_batch(StreamName::Crossings, chunk)
            .await
            .expect("publish");
    }
    let stream = k.stream(StreamName::Crossings);
    for d in [
        r#"{"hash":"","text":"x","resonance":0.9,"cycle":0}"#,
        r#"{"text":"x"}"#,
    ] {
        let _: String = c
            .xadd(
                &stream,
                false,
                None,
                "*",
                vec![("type", "crossing"), ("ct", "json"), ("d", d)],
            )
            .await
            .expect("xadd");
    }
    let activations = || async {
        let n: Option<u64> = c.get(k.ghost_activations()).await.expect("get");
        n.unwrap_or(0)
    };
    let mut first = spawn_ghost(&server.url(), &ns);
    eventually("some written", || async { activations().await >= 300 }).await;
    signal(&first, "-KILL");
    let _ = wait_exit(&mut first).await;
    let mut second = spawn_ghost(&server.url(), &ns);
    eventually("all written", || async { activations().await >= 3000 }).await;
    eventually("poison dead-lettered", || async {
        let n: u64 = c
            .xlen(k.dead_letter(StreamName::Crossings))
            .await
            .expect("xlen");
        n == 2
    })
    .await;
    signal(&second, "-TERM");
    assert_eq!(wait_exit(&mut second).await.code(), Some(0));
    assert_eq!(activations().await, 3000, "each crossing counted once");
    let v: Value = c.xpending(&stream, "ghost", ()).await.expect("xpending");
    assert!(
        matches!(v, Value::Array(ref a) if a.first() == Some(&Value::Integer(0))),
        "{v:?}"
    );
}
