//! `kitbash bench entity`: atomic JSON-document patches through the entity updater, with Redis
//! on the same machine. Three in-process entity instances (each with its own shutdown token)
//! share the default 8 entity partitions of one namespace on the suite's Redis.
//!
//! - `patches_per_s`: **8 concurrent producers** send counter increments to **1,000
//!   documents** (`entity:doc{i}:state`, spread evenly) while the instances apply them; timed
//!   from the first XADD until every partition's checkpoint reaches the end of its stream.
//!   Baseline: the naive read-modify-write path — the same 8 producers each doing `GET`, parse,
//!   add, `SET` on the same 1,000 documents (in another namespace) — in the same run.
//! - `lost_updates`: 8 producers × 2,500 increments of **one** document (`quantum:status`), the
//!   contended case of seed 002; the final counter is compared with the known number of
//!   increments. Baseline: what the naive Redis `GET`+`SET` path loses with the same 8 writers;
//!   the file baseline (8 tasks rewriting one JSON file, as the seed's services did) is
//!   reported beside it (`file_lost`), and kitbash's losses over the 1,000-document run too.
//! - `patch_to_publish_p99_ms`: merge patches offered one by one at a fixed 2,000/s to the 1,000
//!   documents (`entity:lat{i}:state`); **every patch** is timed from just before its XADD to
//!   the arrival of its own `quantum:updates` message (matched by the `seq` the patch writes,
//!   which the message's `data` carries; HDR histogram). Baseline: `redis-benchmark -c 1` GET
//!   p99 in the same run (a bare round trip).

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use fred::prelude::*;
use hdrhistogram::Histogram;
use kitbash_client::Producer;
use kitbash_runtime::{CancellationToken, Config, shutdown};
use kitbash_schema::messages::{EntityOp, EntityTarget, EntityUpdate, QuantumUpdate};
use kitbash_schema::{Keys, Namespace, StreamName};
use serde_json::{Value as Json, json};

use super::commandstats::{CommandStats, command_stats, cost_per_unit, delta};
use super::openloop::{even_schedule, open_loop, q_ms};
use super::redis::{Target, redis_benchmark, target};
use super::reflex::probe::cpu_seconds;
use super::{BenchOptions, Record};

/// Documents of the throughput and latency phases (performance.md: realistic cardinality).
const DOCS: usize = 1_000;
/// Concurrent producers (the issue's writers).
const PRODUCERS: usize = 8;
/// In-process entity instances.
const INSTANCES: usize = 3;
/// Increments per producer of the one-document (lost updates) phase.
const CONTENDED_EACH: usize = 2_500;
/// Offered patches per second of the latency phase.
const RATE: u64 = 2_000;
/// Issue 20's targets: `patches_per_s` and `patch_to_publish_p99_ms`.
const TARGET_PATCHES_PER_S: u64 = 40_000;
const TARGET_P99_MS: u64 = 2;

fn bench_config(url: &str, ns: &str) -> Config {
    let mut c = Config::default();
    c.redis.url = url.to_owned();
    c.redis.namespace = ns.to_owned();
    c.admin.listen = String::new();
    c.consumer.batch = 512;
    c.consumer.block_ms = 100;
    // The changes stream only serves resumes; the benchmark does not need 10k of them.
    c.entity.changes_max = 10_000;
    c
}

fn doc(prefix: &str, i: usize) -> EntityTarget {
    EntityTarget::Entity {
        name: format!("{prefix}{i}"),
        part: "state".into(),
    }
}

fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

/// The 1-minute load average (`/proc/loadavg`), reported with every figure: the machine is
/// shared.
fn load_average() -> Json {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse::<f64>().ok())
        .map_or(Json::Null, Json::from)
}

/// Three in-process entity instances of one namespace.
struct Instances(
    Vec<(
        CancellationToken,
        tokio::task::JoinHandle<Result<(), kitbash_runtime::RuntimeError>>,
    )>,
);

impl Instances {
    fn start(cfg: &Config) -> Self {
        Self(
            (0..INSTANCES)
                .map(|_| {
                    let (signals, _reload) = shutdown::manual();
                    let token = signals.shutdown.clone();
                    (
                        token,
                        tokio::spawn(kitbash_entity::run(cfg.clone(), signals)),
                    )
                })
                .collect(),
        )
    }

    /// Waits until every partition has an owner.
    async fn wait_owning(
        &self,
        client: &Client,
        keys: &Keys,
        partitions: u32,
    ) -> anyhow::Result<()> {
        super::wait_partitions_leased(
            client,
            keys,
            StreamName::EntityPart,
            partitions,
            "the entity instances",
        )
        .await
    }

    async fn stop(self) {
        for (token, _) in &self.0 {
            token.cancel();
        }
        for (_, task) in self.0 {
            let _ = task.await;
        }
    }
}

async fn wait_caught_up(client: &Client, keys: &Keys, partitions: u32) -> anyhow::Result<()> {
    let start = Instant::now();
    while !kitbash_entity::caught_up(client, keys, partitions).await? {
        anyhow::ensure!(
            start.elapsed() < Duration::from_secs(300),
            "the entity partitions did not catch up within 300 s"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    Ok(())
}

/// The counter `n` of each document (0 for an absent or unparsable one), summed.
async fn sum_of_n(client: &Client, keys: &[String]) -> anyhow::Result<u64> {
    let mut sum = 0;
    for chunk in keys.chunks(500) {
        let values: Vec<Option<String>> = client.mget(chunk.to_vec()).await?;
        for v in values.into_iter().flatten() {
            sum += serde_json::from_str::<Json>(&v)
                .ok()
                .and_then(|d| d["n"].as_u64())
                .unwrap_or(0);
        }
    }
    Ok(sum)
}

/// 8 producers send `patches[w]` through kitbash; returns the seconds until all are applied.
async fn kitbash_patches(
    client: &Client,
    keys: &Keys,
    partitions: u32,
    patches: Vec<Vec<EntityUpdate>>,
) -> anyhow::Result<f64> {
    let start = Instant::now();
    let mut tasks = Vec::new();
    for mine in patches {
        let producer = Producer::new(client.clone(), keys.clone(), 1);
        tasks.push(tokio::spawn(async move {
            for chunk in mine.chunks(256) {
                let mut by: BTreeMap<StreamName, Vec<EntityUpdate>> = BTreeMap::new();
                for u in chunk {
                    by.entry(Producer::entity_stream(&u.target, partitions))
                        .or_default()
                        .push(u.clone());
                }
                for (s, us) in by {
                    producer.publish_batch(s, &us).await?;
                }
            }
            anyhow::Ok(())
        }));
    }
    for t in tasks {
        t.await??;
    }
    wait_caught_up(client, keys, partitions).await?;
    Ok(start.elapsed().as_secs_f64())
}

/// The naive path: 8 tasks each `GET`, parse, add 1 to `n`, `SET`, for `keys_of[w]` in turn.
/// Returns the seconds taken.
async fn naive_get_set(client: &Client, keys_of: Vec<Vec<String>>) -> anyhow::Result<f64> {
    let start = Instant::now();
    let mut tasks = Vec::new();
    for mine in keys_of {
        let client = client.clone();
        tasks.push(tokio::spawn(async move {
            for key in mine {
                let raw: Option<String> = client.get(key.as_str()).await?;
                let mut d: Json = raw
                    .and_then(|r| serde_json::from_str(&r).ok())
                    .unwrap_or_else(|| json!({}));
                let n = d["n"].as_u64().unwrap_or(0);
                d["n"] = json!(n + 1);
                let _: () = client
                    .set(key.as_str(), d.to_string(), None, None, false)
                    .await?;
            }
            anyhow::Ok(())
        }));
    }
    for t in tasks {
        t.await??;
    }
    Ok(start.elapsed().as_secs_f64())
}

/// The file baseline: 8 threads each read, parse, add 1, rewrite one JSON file `each` times
/// (what the seed's services did). Returns (lost increments, reads that found the file empty
/// or half-written).
fn file_read_modify_write(each: usize) -> anyhow::Result<(u64, u64)> {
    let path =
        std::env::temp_dir().join(format!("kitbash-bench-entity-{}.json", std::process::id()));
    std::fs::write(&path, br#"{"n":0}"#)?;
    let broken = AtomicU64::new(0);
    std::thread::scope(|s| {
        for _ in 0..PRODUCERS {
            s.spawn(|| {
                for _ in 0..each {
                    let d: Option<Json> = std::fs::read(&path)
                        .ok()
                        .and_then(|b| serde_json::from_slice(&b).ok());
                    let n = match d {
                        Some(d) => d["n"].as_u64().unwrap_or(0),
                        None => {
                            // An empty or half-written file: the seed started again from {}.
                            broken.fetch_add(1, Ordering::Relaxed);
                            0
                        }
                    };
                    let _ = std::fs::write(&path, json!({ "n": n + 1 }).to_string());
                }
            });
        }
    });
    let final_n = std::fs::read(&path)
        .ok()
        .and_then(|b| serde_json::from_slice::<Json>(&b).ok())
        .and_then(|d| d["n"].as_u64())
        .unwrap_or(0);
    let _ = std::fs::remove_file(&path);
    let total = (PRODUCERS * each) as u64;
    Ok((
        total.saturating_sub(final_n),
        broken.load(Ordering::Relaxed),
    ))
}

/// Runs the suite.
pub async fn run(opts: &BenchOptions) -> anyhow::Result<Vec<Record>> {
    let t = target(opts)?;
    let rcfg = kitbash_runtime::config::RedisConfig {
        url: t.url.clone(),
        ..Default::default()
    };
    let client = kitbash_runtime::redis::connect_client(&rcfg, Duration::from_secs(10)).await?;
    let run_id = std::process::id();
    let (ns, naive_ns) = (format!("bench{run_id}n"), format!("bench{run_id}m"));
    let keys = Keys::new(Namespace::new(&ns)?);
    let naive_keys = Keys::new(Namespace::new(&naive_ns)?);
    let cfg = bench_config(&t.url, &ns);
    let partitions = cfg.entity.partitions;
    let total: usize = if opts.long { 800_000 } else { 160_000 };
    let each = total / PRODUCERS;
    let mut out = Vec::new();

    // ---- baselines of the same run ----
    eprintln!("entity: baseline naive GET+SET, {PRODUCERS} writers, {DOCS} documents …");
    let naive_keys_of: Vec<Vec<String>> = (0..PRODUCERS)
        .map(|w| {
            (0..each)
                .map(|i| doc("doc", (w * 7 + i) % DOCS).key(&naive_keys))
                .collect()
        })
        .collect();
    let all_naive: Vec<String> = (0..DOCS).map(|i| doc("doc", i).key(&naive_keys)).collect();
    let (_, naive_cpu0) = cpu_seconds(&client).await?;
    let naive_secs = naive_get_set(&client, naive_keys_of).await?;
    let (_, naive_cpu1) = cpu_seconds(&client).await?;
    let naive_redis_usec = (naive_cpu1 - naive_cpu0) * 1e6 / total as f64;
    let naive_rate = total as f64 / naive_secs;
    let naive_lost_1000 = (total as u64).saturating_sub(sum_of_n(&client, &all_naive).await?);
    eprintln!("entity: baseline naive GET+SET, {PRODUCERS} writers, one document …");
    let one_naive = EntityTarget::Status.key(&naive_keys);
    let naive_one: Vec<Vec<String>> = (0..PRODUCERS)
        .map(|_| vec![one_naive.clone(); CONTENDED_EACH])
        .collect();
    naive_get_set(&client, naive_one).await?;
    let contended = (PRODUCERS * CONTENDED_EACH) as u64;
    let naive_lost = contended.saturating_sub(sum_of_n(&client, &[one_naive]).await?);
    eprintln!("entity: baseline file read-modify-write, {PRODUCERS} writers, one file …");
    let (file_lost, file_broken) =
        tokio::task::spawn_blocking(move || file_read_modify_write(CONTENDED_EACH)).await??;

    // ---- kitbash: throughput over 1,000 documents ----
    let instances = Instances::start(&cfg);
    instances.wait_owning(&client, &keys, partitions).await?;
    eprintln!(
        "entity: {total} increments of {DOCS} documents by {PRODUCERS} producers, {INSTANCES} instances …"
    );
    let patches: Vec<Vec<EntityUpdate>> = (0..PRODUCERS)
        .map(|w| {
            (0..each)
                .map(|i| {
                    EntityUpdate::with_op(
                        doc("doc", (w * 7 + i) % DOCS),
                        EntityOp::Increment,
                        json!({"n": 1}),
                    )
                })
                .collect()
        })
        .collect();
    let stats0 = command_stats(&client).await?;
    let (cpu0, redis_cpu0) = cpu_seconds(&client).await?;
    let secs = kitbash_patches(&client, &keys, partitions, patches).await?;
    let (cpu1, redis_cpu1) = cpu_seconds(&client).await?;
    let stats1 = command_stats(&client).await?;
    let cpu_cores = (cpu1 - cpu0) / secs;
    let redis = RedisCost::between(&stats0, &stats1, redis_cpu1 - redis_cpu0, total as u64);
    let all_docs: Vec<String> = (0..DOCS).map(|i| doc("doc", i).key(&keys)).collect();
    let lost_1000 = (total as u64).saturating_sub(sum_of_n(&client, &all_docs).await?);
    out.push(
        Record::new(
            "entity",
            "patches_per_s",
            total as f64 / secs,
            "patches/s",
            naive_rate,
        )
        .with(
            "baseline_kind",
            "naive GET+parse+SET, the same 8 writers and 1,000 documents, same run",
        )
        .with("producers", PRODUCERS)
        .with("instances", INSTANCES)
        .with("partitions", partitions)
        .with("documents", DOCS)
        .with("patches", total)
        .with("secs", secs)
        .with("lost", lost_1000)
        .with("baseline_lost", naive_lost_1000)
        .with("cpu_cores", round2(cpu_cores))
        .with("load_avg_1m", load_average())
        .with("target", TARGET_PATCHES_PER_S),
    );
    out.push(
        redis
            .record("redis_cpu_usec_per_patch", naive_redis_usec)
            .with("phase", "patches_per_s (the throughput drain)")
            .with("patches", total),
    );

    // ---- kitbash: lost updates on one contended document ----
    eprintln!("entity: {PRODUCERS} producers × {CONTENDED_EACH} increments of one document …");
    let one = EntityTarget::Status;
    let patches: Vec<Vec<EntityUpdate>> = (0..PRODUCERS)
        .map(|_| {
            (0..CONTENDED_EACH)
                .map(|_| EntityUpdate::with_op(one.clone(), EntityOp::Increment, json!({"n": 1})))
                .collect()
        })
        .collect();
    kitbash_patches(&client, &keys, partitions, patches).await?;
    let lost = contended.saturating_sub(sum_of_n(&client, &[one.key(&keys)]).await?);
    out.push(
        Record::new(
            "entity",
            "lost_updates",
            lost as f64,
            "updates",
            naive_lost as f64,
        )
        .with(
            "baseline_kind",
            "increments the naive GET+SET path lost, 8 writers, one document, same run",
        )
        .with("increments", contended)
        .with("producers", PRODUCERS)
        .with("redis_get_set_lost", naive_lost)
        .with("file_lost", file_lost)
        .with("file_empty_or_partial_reads", file_broken)
        .with("lost_over_1000_documents", lost_1000)
        .with("load_avg_1m", load_average())
        .with("target", 0),
    );

    // ---- latency at a fixed 2,000 patches/s, every patch timed ----
    eprintln!("entity: baseline redis-benchmark GET -c 1 …");
    let rtt_p99 = redis_benchmark(&t, &["-t", "get", "-n", "50000", "-c", "1"])?
        .first()
        .map(|r| r.1.p99_ms)
        .filter(|r| *r > 0.0)
        .context("redis-benchmark GET -c 1 gave no p99: no baseline for the latency")?;
    out.push(latency(opts, &t, &client, &keys, partitions, rtt_p99).await?);
    instances.stop().await;

    for ns in [&ns, &naive_ns] {
        super::feynman::remove_namespace(&client, ns).await?;
    }
    let _ = client.quit().await;
    Ok(out)
}

/// Merge patches at [`RATE`]/s, each timed from its XADD to its own `quantum:updates` message.
async fn latency(
    opts: &BenchOptions,
    t: &Target,
    client: &Client,
    keys: &Keys,
    partitions: u32,
    rtt_p99: f64,
) -> anyhow::Result<Record> {
    let sub = Builder::from_config(fred::types::config::Config::from_url(&t.url)?)
        .with_performance_config(|p| p.broadcast_channel_capacity = 1 << 16)
        .build_subscriber_client()?;
    sub.init().await?;
    let mut rx = sub.message_rx();
    sub.subscribe(keys.channel_quantum_updates()).await?;
    // seq → arrival of its message.
    let arrived: Arc<Mutex<HashMap<u64, Instant>>> = Arc::default();
    let lagged = Arc::new(AtomicU64::new(0));
    let collector = {
        let (arrived, lagged) = (arrived.clone(), lagged.clone());
        tokio::spawn(async move {
            loop {
                let msg = match rx.recv().await {
                    Ok(m) => m,
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                        lagged.fetch_add(n, Ordering::Relaxed);
                        continue;
                    }
                    Err(_) => break,
                };
                let now = Instant::now();
                let Some(seq) = msg
                    .value
                    .as_bytes()
                    .and_then(|b| serde_json::from_slice::<QuantumUpdate>(b).ok())
                    .and_then(|u| u.data["seq"].as_u64())
                else {
                    continue;
                };
                if let Ok(mut m) = arrived.lock() {
                    m.entry(seq).or_insert(now);
                }
            }
        })
    };

    let secs = if opts.long { 30 } else { 5 };
    eprintln!("entity: {RATE} merge patches/s to {DOCS} documents for {secs} s …");
    let producer = Producer::new(client.clone(), keys.clone(), 1);
    let sent: Arc<Mutex<Vec<(u64, Instant)>>> = Arc::default();
    let failed = Arc::new(AtomicU64::new(0));
    let total = RATE * secs;
    let started = Instant::now();
    let stats0 = command_stats(client).await?;
    let (cpu0, redis_cpu0) = cpu_seconds(client).await?;
    // Every patch its own XADD, issued on an even schedule by the shared open-loop generator
    // and timed from its *scheduled* instant.
    let schedule = even_schedule(RATE as f64, total as usize);
    let run = {
        let (producer, sent, failed) = (producer.clone(), sent.clone(), failed.clone());
        open_loop(
            tokio::runtime::Handle::current(),
            schedule,
            move |k, due| {
                let (p, sent, failed) = (producer.clone(), sent.clone(), failed.clone());
                let seq = k as u64;
                async move {
                    let u = EntityUpdate::merge(doc("lat", k % DOCS), json!({ "seq": seq }));
                    match p.patch_entity(&u, partitions).await {
                        Ok(_) => {
                            if let Ok(mut v) = sent.lock() {
                                v.push((seq, due));
                            }
                            true
                        }
                        Err(_) => {
                            failed.fetch_add(1, Ordering::Relaxed);
                            false
                        }
                    }
                }
            },
        )
        .await?
    };
    let wall = started.elapsed().as_secs_f64();
    let (cpu1, redis_cpu1) = cpu_seconds(client).await?;
    let cpu = (cpu1 - cpu0) / wall;
    let sent = sent
        .lock()
        .map_err(|_| anyhow::anyhow!("sent lock"))?
        .clone();
    // Wait for every patch's message (or 10 s: what is missing is reported as unmatched).
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let n = arrived.lock().map(|m| m.len()).unwrap_or(0);
        if n >= sent.len() || Instant::now() >= deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    collector.abort();
    let _ = sub.quit().await;
    let stats1 = command_stats(client).await?;
    let redis = RedisCost::between(&stats0, &stats1, redis_cpu1 - redis_cpu0, total);
    let arrived = arrived
        .lock()
        .map_err(|_| anyhow::anyhow!("arrived lock"))?
        .clone();
    let mut h = Histogram::<u64>::new(3)?;
    let mut unmatched = 0u64;
    for (s, t0) in &sent {
        match arrived.get(s) {
            Some(at) => h.record((at.saturating_duration_since(*t0).as_micros() as u64).max(1))?,
            None => unmatched += 1,
        }
    }
    anyhow::ensure!(
        !h.is_empty(),
        "no patch was matched to a quantum:updates message: nothing to report"
    );
    let ms = |q: f64| h.value_at_quantile(q) as f64 / 1000.0;
    Ok(Record::new(
        "entity",
        "patch_to_publish_p99_ms",
        ms(0.99),
        "ms",
        rtt_p99,
    )
    .with("baseline_kind", "redis-benchmark GET -c 1 p99, same run")
    .with(
        "method",
        "every patch, its scheduled instant (even schedule, shared open-loop generator) → its own quantum:updates message (matched by the seq it writes)",
    )
    .with("p50_ms", ms(0.5))
    .with("p999_ms", ms(0.999))
    .with("max_ms", h.max() as f64 / 1000.0)
    .with("patches_timed", h.len())
    .with("patches_unmatched", unmatched)
    .with("xadd_failed", failed.load(Ordering::Relaxed))
    .with("subscriber_lagged", lagged.load(Ordering::Relaxed))
    .with("documents", DOCS)
    .with("instances", INSTANCES)
    .with("offered_patches_per_s", (total as f64 / run.issue_span.as_secs_f64().max(1e-9)).round())
    .with("generator_late_p99_ms", q_ms(&run.lateness, 0.99))
    .with("cpu_cores", round2(cpu))
    .with("load_avg_1m", load_average())
    .with("redis_commit_scripts_per_patch", redis.scripts_per_patch)
    .with("redis_script_usec_per_patch", redis.script_usec_per_patch)
    .with("redis_cpu_usec_per_patch", redis.cpu_usec_per_patch)
    .with("redis_commands_per_patch", redis.commands.clone())
    .with("target_ms", TARGET_P99_MS))
}

/// Redis's own cost of the patches of one phase (`INFO commandstats`, `INFO cpu`).
struct RedisCost {
    /// `EVALSHA` calls (the commit scripts and the runtime's checkpoint scripts) per patch.
    scripts_per_patch: f64,
    /// Redis µs inside those scripts (their inner commands included) per patch.
    script_usec_per_patch: f64,
    /// Redis's whole CPU (user + sys, every command and the event loop) per patch, µs.
    cpu_usec_per_patch: f64,
    /// Every command's calls and µs per patch (inner commands of scripts counted too).
    commands: Json,
}

impl RedisCost {
    fn between(
        before: &CommandStats,
        after: &CommandStats,
        redis_cpu_s: f64,
        patches: u64,
    ) -> Self {
        let n = patches.max(1) as f64;
        let (calls, usec) = delta(before, after, "evalsha");
        Self {
            scripts_per_patch: calls as f64 / n,
            script_usec_per_patch: usec as f64 / n,
            cpu_usec_per_patch: redis_cpu_s * 1e6 / n,
            commands: cost_per_unit(before, after, patches, "patch", |_| false),
        }
    }

    /// The figure: Redis's whole CPU per patch (producers' `XADD`s, partition reads, commit
    /// and checkpoint scripts) against Redis's CPU per update of the naive `GET`+`SET` path.
    fn record(&self, metric: &str, naive_usec: f64) -> Record {
        Record::new("entity", metric, self.cpu_usec_per_patch, "us", naive_usec)
            .with(
                "baseline_kind",
                "Redis CPU (INFO cpu) per update of the naive GET+SET path, same 8 writers and 1,000 documents, same run",
            )
            .with("redis_commit_scripts_per_patch", self.scripts_per_patch)
            .with("redis_script_usec_per_patch", self.script_usec_per_patch)
            .with("redis_commands_per_patch", self.commands.clone())
    }
}
