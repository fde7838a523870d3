//! `kitbash bench reflex`: seed 000's reflex path, each figure against a baseline of the same
//! run.
//!
//! - `lookup_p99_ms`: the one-round-trip reflex lookup (`Reflex::lookup_hash`) open-loop at
//!   10,000 lookups/s over 10k CMS records (written by decay's own hit script) and 1k grains,
//!   every lookup timed from its scheduled start; baseline: `redis-benchmark -c 1` GET p99.
//! - `decay_cycle_1m`: one fenced decay cycle (decay's own script) over 1M index entries;
//!   baseline: rewriting every record's resonance (1M `SET`s, pipelined). Also
//!   `refresh_hottest_1k_ms`, the cost of keeping plain-`GET` readers current for 1,000 records.
//! - `crossing_to_ghost_p99_ms`: `XADD` of a crossing → `ghost:{h}` written by a ghost daemon
//!   (in its own runtime), at 1,000 crossings/s, arrival seen through keyspace notifications;
//!   baseline: `redis-benchmark -c 1` XADD p99.
//! - `memory_10k_cms_1k_grains_mb`: `used_memory` delta of that load as the daemons write it
//!   (idempotency markers and streams excluded), cross-checked with `RedisMemoryModel`;
//!   baseline: the seed's 9.2 MB.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use fred::prelude::*;
use fred::types::Value;
use hdrhistogram::Histogram;
use kitbash_client::Producer;
use kitbash_client::reflex::{Grain, Reflex, query_hash};
use kitbash_runtime::leader::LeaderTerm;
use kitbash_runtime::{Config, DaemonContext};
use kitbash_schema::budget::{BudgetParams, RecordEncoding, RedisMemoryModel, SeedEstimate};
use kitbash_schema::messages::{Crossing, GrainSig, QueryEvent};
use kitbash_schema::{DaemonKind, Keys, StreamName};
use kitbash_ternary::TernaryVector;

use super::memory::used_memory;
use super::redis::{Target, redis_benchmark, target};
use super::{BenchOptions, Record};

const SUITE: &str = "reflex";

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
}

fn config(url: &str) -> Config {
    let mut c = Config::default();
    c.redis.url = url.to_owned();
    c.admin.listen = String::new();
    c.consumer.block_ms = 20;
    c.decay.period_ms = 3_600_000;
    c.ghost.poll_ms = 200;
    c
}

fn grains(n: u64, rng: &mut Rng) -> Vec<Grain> {
    (1..=n)
        .map(|id| {
            let trits: Vec<i8> = (0..256)
                .map(|_| match rng.next() % 7 {
                    0 => 1,
                    1 => -1,
                    _ => 0,
                })
                .collect();
            let vector = TernaryVector::from_i8(&trits).unwrap_or_else(|_| {
                TernaryVector::zeros(256).unwrap_or_else(|_| unreachable!("256 is a valid dim"))
            });
            Grain {
                id,
                sig: GrainSig {
                    popcount: vector.nonzero_count(),
                    axiom: format!("axiom {}", id % 17),
                    weight: 1.0,
                    ternary_value: vector.ternary_value(),
                    confidence: vector.confidence(),
                },
                vector,
            }
        })
        .collect()
}

fn texts(n: usize) -> Vec<String> {
    (0..n)
        .map(|i| format!("what is topic number {i}?"))
        .collect()
}

/// 10k queries through decay's hit script (one in ten hit six times: hot, with a ghost), 1k
/// grains, the seed's hats. Returns the query texts.
async fn load_reference(ctx: &DaemonContext, reflex: &Reflex) -> anyhow::Result<Vec<String>> {
    let hits = kitbash_decay::hits::Hits::new(ctx);
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    reflex.hat_init().await?;
    reflex.grains_import(&grains(1000, &mut rng)).await?;
    let qs = texts(10_000);
    let mut events = Vec::new();
    for (i, t) in qs.iter().enumerate() {
        let times = if i % 10 == 0 { 6 } else { 1 };
        for j in 0..times {
            let g = 1 + rng.next() % 1000;
            events.push((
                format!("{}-{j}", i + 1),
                QueryEvent {
                    text: t.clone(),
                    hash: None,
                    ts: 1_766_318_400.0,
                    grains: vec![g, 1 + (g * 7) % 1000, 1 + (g * 13) % 1000],
                    latency_ms: Some(1.0 + (rng.next() % 100) as f64 / 50.0),
                },
            ));
        }
    }
    for chunk in events.chunks(500) {
        let r = futures::future::join_all(chunk.iter().map(|(id, q)| hits.apply(id, q))).await;
        for x in r {
            x?;
        }
    }
    Ok(qs)
}

async fn delete_matching(client: &Client, pattern: &str) -> anyhow::Result<u64> {
    let mut cursor = "0".to_owned();
    let mut n = 0;
    loop {
        let (next, batch): (String, Vec<String>) = client
            .custom(
                fred::cmd!("SCAN"),
                vec![
                    cursor.clone(),
                    "MATCH".into(),
                    pattern.into(),
                    "COUNT".into(),
                    "1000".into(),
                ],
            )
            .await?;
        if !batch.is_empty() {
            n += batch.len() as u64;
            let _: i64 = client.del(batch).await?;
        }
        if next == "0" {
            return Ok(n);
        }
        cursor = next;
    }
}

/// The 1-minute load average: these figures are only comparable on an unloaded machine.
fn load_avg() -> f64 {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .unwrap_or(-1.0)
}

fn p99_ms(h: &Histogram<u64>) -> f64 {
    h.value_at_quantile(0.99) as f64 / 1000.0
}

async fn lookup_and_memory(t: &Target, long: bool) -> anyhow::Result<Vec<Record>> {
    let cfg = config(&t.url);
    let client =
        kitbash_runtime::redis::connect_client(&cfg.redis, Duration::from_secs(10)).await?;
    let _: () = client.flushall(false).await?;
    let (signals, _) = kitbash_runtime::shutdown::manual();
    let stop = signals.shutdown.clone();
    let ctx = DaemonContext::start(DaemonKind::Decay, cfg.clone(), signals).await?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let before = used_memory(&client).await?;
    let keys = Keys::default();
    let reflex = Reflex::new(client.clone(), keys.clone(), 0.9);
    eprintln!("reflex: loading 10k CMS records through decay's script, 1k grains, 5 hats …");
    let qs = load_reference(&ctx, &reflex).await?;
    // Ghosts of the hot tenth, as the ghost daemon writes them.
    let pipe = client.pipeline();
    for (i, q) in qs.iter().enumerate().step_by(10) {
        let g = 1 + (i as u64 * 31) % 1000;
        let _: () = pipe
            .set(
                keys.ghost(&query_hash(q)),
                format!("{g},{},{}", 1 + (g * 3) % 1000, 1 + (g * 5) % 1000),
                Some(Expiration::EX(3600)),
                None,
                false,
            )
            .await?;
    }
    let _: Vec<Value> = pipe.all().await?;
    // What production keeps beside the dataset only transiently: markers, streams.
    for s in [StreamName::Queries, StreamName::Crossings] {
        delete_matching(&client, &format!("{}*", keys.stream(s))).await?;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let after = used_memory(&client).await?;
    let delta = after.saturating_sub(before);
    let model_params = BudgetParams {
        cms_record: RecordEncoding::Hash {
            fields: 5,
            field_len: 9,
            value_len: 18,
        },
        grain_sig: RecordEncoding::String { len: 120 },
        ..BudgetParams::default()
    };
    let model = RedisMemoryModel::default()
        .estimate(&model_params)
        .total_bytes;
    let compact = RedisMemoryModel::default()
        .estimate(&BudgetParams {
            grains_key: false,
            resonance_key: false,
            hash_len: 16,
            cms_record: RecordEncoding::Hash {
                fields: 4,
                field_len: 5,
                value_len: 12,
            },
            ..BudgetParams::default()
        })
        .total_bytes;
    let seed_mb = SeedEstimate::default().total_mb();
    let mut out = vec![
        Record::new(
            SUITE,
            "memory_10k_cms_1k_grains_mb",
            delta as f64 / 1e6,
            "MB",
            seed_mb,
        )
        .with("baseline_kind", "the seed's own estimate (9.2)")
        .with("model_mb", model as f64 / 1e6)
        .with("measured_over_model", delta as f64 / model as f64)
        .with("compact_layout_model_mb", compact as f64 / 1e6)
        .with("target_mb", 4.0)
        .with(
            "layout",
            "seed (cms:{h} hash + :grains + :resonance, index, 64-hex hashes)",
        ),
    ];

    // One lookup at a time (closed loop): the cost of one round trip, without queueing.
    let mut single = Histogram::<u64>::new(3)?;
    let mut rng = Rng(3);
    let hashes_v: Vec<String> = qs.iter().map(|q| query_hash(q)).collect();
    for _ in 0..if long { 20_000 } else { 5_000 } {
        let i = (rng.next() % 10_000) as usize;
        let t0 = Instant::now();
        reflex.lookup_hash(&hashes_v[i]).await?;
        let _ = single.record((t0.elapsed().as_micros() as u64).max(1));
    }

    // Open-loop lookups at 10k/s, each timed from its scheduled start.
    let rate = 10_000u64;
    let secs = if long { 10 } else { 3 };
    eprintln!("reflex: {} lookups at {rate}/s …", rate * secs);
    let hashes: Arc<Vec<String>> = Arc::new(qs.iter().map(|q| query_hash(q)).collect());
    let hist = Arc::new(Mutex::new(Histogram::<u64>::new(3)?));
    let errors = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let start = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    let per_ms = rate / 1000;
    let mut rng = Rng(7);
    for ms in 0..secs * 1000 {
        let due = start + Duration::from_millis(ms);
        tokio::time::sleep_until(due.into()).await;
        for _ in 0..per_ms {
            // Half the lookups go to the hot tenth (ghost, three grains), half anywhere.
            let i = if rng.next().is_multiple_of(2) {
                (rng.next() % 1000 * 10) as usize
            } else {
                (rng.next() % 10_000) as usize
            };
            let (reflex, hashes, hist, errors) =
                (reflex.clone(), hashes.clone(), hist.clone(), errors.clone());
            tasks.spawn(async move {
                let r = reflex.lookup_hash(&hashes[i]).await;
                let us = due.elapsed().as_micros() as u64;
                if r.is_err() {
                    errors.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                }
                if let Ok(mut h) = hist.lock() {
                    let _ = h.record(us.max(1));
                }
            });
        }
        while tasks.try_join_next().is_some() {}
    }
    while tasks.join_next().await.is_some() {}
    let h = hist
        .lock()
        .map_err(|_| anyhow::anyhow!("poisoned"))?
        .clone();
    eprintln!("reflex: redis-benchmark single-client GET …");
    let key = keys.cms_resonance(&hashes[0]);
    let rb = redis_benchmark(t, &["-c", "1", "-n", "100000", "GET", &key])?;
    let base = rb.first().map_or(0.0, |r| r.1.p99_ms);
    out.insert(
        0,
        Record::new(SUITE, "lookup_p99_ms", p99_ms(&h), "ms", base)
            .with("baseline_kind", "redis-benchmark -c 1 GET p99, same server")
            .with("rate_per_s", rate)
            .with("lookups", h.len())
            .with("errors", errors.load(std::sync::atomic::Ordering::Relaxed))
            .with("p50_ms", h.value_at_quantile(0.5) as f64 / 1000.0)
            .with("p999_ms", h.value_at_quantile(0.999) as f64 / 1000.0)
            .with(
                "single_client_p50_ms",
                single.value_at_quantile(0.5) as f64 / 1000.0,
            )
            .with("single_client_p99_ms", p99_ms(&single))
            .with("load_avg_1m", load_avg())
            .with("cms_records", 10_000)
            .with("grains", 1_000)
            .with("target_ms", 0.25),
    );
    stop.cancel();
    let _ = client.quit().await;
    Ok(out)
}

async fn decay_cycle(t: &Target, long: bool) -> anyhow::Result<Vec<Record>> {
    let cfg = config(&t.url);
    let client =
        kitbash_runtime::redis::connect_client(&cfg.redis, Duration::from_secs(10)).await?;
    let _: () = client.flushall(false).await?;
    let keys = Keys::default();
    let n: u64 = 1_000_000;
    eprintln!("reflex: loading {n} index entries and resonance keys …");
    let mut rng = Rng(11);
    let mut ids = Vec::with_capacity(n as usize);
    for chunk in 0..(n / 10_000) {
        let pipe = client.pipeline();
        let mut members: Vec<(f64, String)> = Vec::with_capacity(10_000);
        for _ in 0..10_000 {
            let h = format!("{:016x}", rng.next());
            let r = (rng.next() % 1000) as f64 / 1000.0 + 1e-3;
            let _: () = pipe
                .set(keys.cms_resonance(&h), format!("{r}"), None, None, false)
                .await?;
            members.push((r.ln(), h.clone()));
            ids.push(h);
        }
        let _: () = pipe
            .zadd(keys.resonance_index(), None, None, false, false, members)
            .await?;
        let _: Vec<Value> = pipe.all().await?;
        if chunk % 25 == 0 {
            eprint!(".");
        }
    }
    eprintln!();
    let (signals, _) = kitbash_runtime::shutdown::manual();
    let stop = signals.shutdown.clone();
    let ctx = DaemonContext::start(DaemonKind::Decay, cfg.clone(), signals).await?;
    let cycle = kitbash_decay::cycle::DecayCycle::new(&ctx);
    let term = LeaderTerm {
        key: keys.leader(DaemonKind::Decay, "bench"),
        token: "bench#1".into(),
    };
    let _: () = client
        .set(&term.key, &term.token, None, None, false)
        .await?;
    cycle.apply_due(&term).await?; // starts the clock
    let runs = if long { 200 } else { 50 };
    let mut times = Vec::with_capacity(runs);
    for _ in 0..runs {
        // One period due: move the clock back by one period.
        let _: i64 = client
            .hincrby(keys.decay_clock(), "last_ms", -(cfg.decay.period_ms as i64))
            .await?;
        let t0 = Instant::now();
        let run = cycle.apply_due(&term).await?;
        times.push(t0.elapsed().as_secs_f64() * 1000.0);
        anyhow::ensure!(run.applied == 1, "one cycle per run: {run:?}");
    }
    times.sort_by(f64::total_cmp);
    let cycle_ms = times[times.len() / 2];
    eprintln!("reflex: refresh of the hottest 1,000 …");
    let t0 = Instant::now();
    cycle.refresh(1000).await?;
    let refresh_ms = t0.elapsed().as_secs_f64() * 1000.0;
    eprintln!("reflex: baseline: rewriting {n} resonances …");
    let t0 = Instant::now();
    for chunk in ids.chunks(10_000) {
        let pipe = client.pipeline();
        for h in chunk {
            let _: () = pipe
                .set(keys.cms_resonance(h), "0.5", None, None, false)
                .await?;
        }
        let _: Vec<Value> = pipe.all().await?;
    }
    let rewrite_ms = t0.elapsed().as_secs_f64() * 1000.0;
    stop.cancel();
    let _: () = client.flushall(false).await?;
    let _ = client.quit().await;
    Ok(vec![
        Record::new(SUITE, "decay_cycle_1m", cycle_ms, "ms", rewrite_ms)
            .with(
                "baseline_kind",
                "rewriting every record's resonance (1M SETs, pipelined)",
            )
            .with("records", n)
            .with("runs", runs as u64)
            .with("what", "median round trip of the fenced cycle script")
            .with("target_ratio", 0.001),
        Record::new(SUITE, "refresh_hottest_1k_ms", refresh_ms, "ms", rewrite_ms)
            .with(
                "baseline_kind",
                "rewriting every record's resonance (1M SETs, pipelined)",
            )
            .with(
                "what",
                "[decay] refresh_hottest = 1000: extra cost per cycle",
            ),
    ])
}

async fn crossing_to_ghost(t: &Target, long: bool) -> anyhow::Result<Vec<Record>> {
    let cfg = config(&t.url);
    let client =
        kitbash_runtime::redis::connect_client(&cfg.redis, Duration::from_secs(10)).await?;
    let _: () = client.flushall(false).await?;
    let keys = Keys::default();
    let reflex = Reflex::new(client.clone(), keys.clone(), 0.9);
    reflex.hat_init().await?;
    reflex.grains_import(&grains(1000, &mut Rng(5))).await?;
    let _: () = client.config_set("notify-keyspace-events", "K$").await?;
    // The ghost daemon in a runtime of its own, as its own process would be.
    let (signals, _) = kitbash_runtime::shutdown::manual();
    let stop = signals.shutdown.clone();
    let daemon_cfg = cfg.clone();
    let daemon = std::thread::spawn(move || {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .map(|rt| rt.block_on(kitbash_ghost::run(daemon_cfg, signals)))
    });
    // Wait until the bank is loaded: a crossing is written.
    let producer = Producer::new(client.clone(), keys.clone(), 1);
    let warm = Crossing {
        hash: query_hash("warm"),
        text: "warm".into(),
        resonance: 0.81,
        cycle: 0,
    };
    producer.publish(StreamName::Crossings, &warm).await?;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let g: Option<String> = client.get(keys.ghost(&warm.hash)).await?;
        if g.is_some() {
            break;
        }
        anyhow::ensure!(Instant::now() < deadline, "the ghost daemon did not start");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let sub = fred::types::Builder::from_config(fred::types::config::Config::from_url(&t.url)?)
        .with_performance_config(|p| p.broadcast_channel_capacity = 1 << 16)
        .build_subscriber_client()?;
    sub.init().await?;
    // fred hands `__keyspace@…` messages to the keyspace-event receiver, not `message_rx`.
    let mut rx = sub.keyspace_event_rx();
    let prefix = "__keyspace@0__:";
    sub.psubscribe(format!("{prefix}{}", keys.ghost("*")))
        .await?;
    let sent: Arc<Mutex<HashMap<String, Instant>>> = Arc::default();
    let hist = Arc::new(Mutex::new(Histogram::<u64>::new(3)?));
    let rate = 1000u64;
    let secs = if long { 10 } else { 3 };
    let total = rate * secs;
    let collector = {
        let (sent, hist) = (sent.clone(), hist.clone());
        let ghost_prefix = keys.ghost("");
        tokio::spawn(async move {
            let mut seen = 0u64;
            while seen < total {
                let msg = match rx.recv().await {
                    Ok(m) => m,
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => continue,
                    Err(_) => break,
                };
                let now = Instant::now();
                let key = msg.key.as_str().unwrap_or_default().to_owned();
                let Some(h) = key.strip_prefix(ghost_prefix.as_str()) else {
                    continue;
                };
                let t0 = sent.lock().ok().and_then(|mut m| m.remove(h));
                if let (Some(t0), Ok(mut hist)) = (t0, hist.lock()) {
                    let _ = hist.record((now - t0).as_micros() as u64);
                    seen += 1;
                }
            }
        })
    };
    eprintln!("reflex: {total} crossings at {rate}/s into the ghost daemon …");
    let start = Instant::now();
    for i in 0..total {
        let due = start + Duration::from_micros(i * 1_000_000 / rate);
        tokio::time::sleep_until(due.into()).await;
        let text = format!("crossing query {i}");
        let c = Crossing {
            hash: query_hash(&text),
            text,
            resonance: 0.81,
            cycle: 0,
        };
        if let Ok(mut m) = sent.lock() {
            m.insert(c.hash.clone(), due);
        }
        let p = producer.clone();
        tokio::spawn(async move { p.publish(StreamName::Crossings, &c).await });
    }
    let _ = tokio::time::timeout(Duration::from_secs(30), collector).await;
    let activations: Option<u64> = client.get(keys.ghost_activations()).await?;
    eprintln!(
        "reflex: {} ghosts written for {total} crossings",
        activations.unwrap_or(0)
    );
    stop.cancel();
    let _ = daemon.join();
    let _ = sub.quit().await;
    let h = hist
        .lock()
        .map_err(|_| anyhow::anyhow!("poisoned"))?
        .clone();
    eprintln!("reflex: redis-benchmark single-client XADD …");
    let key = keys.bench("xadd");
    let rb = redis_benchmark(
        t,
        &[
            "-c", "1", "-n", "50000", "XADD", &key, "MAXLEN", "~", "10000", "*", "f", "v",
        ],
    )?;
    let base = rb.first().map_or(0.0, |r| r.1.p99_ms);
    let _: () = client.flushall(false).await?;
    let _ = client.quit().await;
    Ok(vec![
        Record::new(SUITE, "crossing_to_ghost_p99_ms", p99_ms(&h), "ms", base)
            .with(
                "baseline_kind",
                "redis-benchmark -c 1 XADD p99, same server",
            )
            .with("rate_per_s", rate)
            .with("crossings", h.len())
            .with("sent", total)
            .with("p50_ms", h.value_at_quantile(0.5) as f64 / 1000.0)
            .with("load_avg_1m", load_avg())
            .with("grains", 1_000)
            .with("target_ms", 5.0),
    ])
}

/// Runs the suite on a private server (the loads need an empty keyspace).
pub async fn run(opts: &BenchOptions) -> anyhow::Result<Vec<Record>> {
    let private = BenchOptions {
        redis_url: None,
        ..opts.clone()
    };
    let t = target(&private)?;
    let only = std::env::var("KITBASH_BENCH_REFLEX_ONLY").unwrap_or_default();
    let mut out = Vec::new();
    if only.is_empty() || only == "lookup" {
        out.extend(lookup_and_memory(&t, opts.long).await?);
    }
    if only.is_empty() || only == "crossing" {
        out.extend(crossing_to_ghost(&t, opts.long).await?);
    }
    if !(only.is_empty() || only == "decay") {
        return Ok(out);
    }
    out.extend(decay_cycle(&t, opts.long).await?);
    Ok(out)
}
