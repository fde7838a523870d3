//! `kitbash bench feynman`: ticks through the physics writer with Redis on the same machine.
//!
//! - `ticks_per_s`: a backlog of ticks (synthetic market, 16 symbols, 8 partitions, window
//!   1000) drained by one in-process feynman instance, from its start until every partition's
//!   checkpoint reaches the end of its stream. Baseline: `redis-benchmark` pipelined XADD
//!   (`-c 50 -P 32`) in the same run — how fast Redis alone takes entries in.
//! - `p99_tick_to_update_ms`: ticks published one by one at a fixed 10,000/s; latency from the
//!   tick's XADD to receiving its `state_update` (HDR histogram; a coalesced update counts for
//!   the last tick of its batch). The daemon runs as its own process (`kitbash-feynman` next to
//!   this binary; in-process when it is not built — the `daemon` field says which). Baseline:
//!   `redis-benchmark -c 1` GET p99 in the same run (a bare round trip). Extras: CPU cores of
//!   the benchmark process (producer + subscriber) and of the daemon at that load.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use fred::prelude::*;
use fred::types::Value;
use hdrhistogram::Histogram;
use kitbash_client::Producer;
use kitbash_feynman::market::MarketSim;
use kitbash_runtime::{Config, shutdown};
use kitbash_schema::messages::Tick;
use kitbash_schema::{Keys, Namespace, StreamName};

use super::redis::{redis_benchmark, target, xadd_baseline};
use super::{BenchOptions, Record};

fn cpu_seconds() -> f64 {
    cpu_of("/proc/self/stat")
}

fn process_cpu_seconds(pid: u32) -> f64 {
    cpu_of(&format!("/proc/{pid}/stat"))
}

fn cpu_of(stat: &str) -> f64 {
    // utime + stime, in clock ticks (100 Hz on Linux).
    std::fs::read_to_string(stat)
        .ok()
        .and_then(|s| {
            let after = s.rsplit_once(')')?.1.to_owned();
            let f: Vec<&str> = after.split_whitespace().collect();
            Some((f.get(11)?.parse::<f64>().ok()? + f.get(12)?.parse::<f64>().ok()?) / 100.0)
        })
        .unwrap_or(0.0)
}

fn bench_config(url: &str, ns: &str) -> Config {
    let mut c = Config::default();
    c.redis.url = url.to_owned();
    c.redis.namespace = ns.to_owned();
    c.admin.listen = String::new();
    c.feynman.partitions = 8;
    c.feynman.window = 1000;
    c.consumer.batch = 1000;
    c.consumer.block_ms = 100;
    c
}

/// Runs the suite.
pub async fn run(opts: &BenchOptions) -> anyhow::Result<Vec<Record>> {
    let t = target(opts)?;
    let n: usize = if opts.long { 1_000_000 } else { 200_000 };
    let cfg = kitbash_runtime::config::RedisConfig {
        url: t.url.clone(),
        ..Default::default()
    };
    let client = kitbash_runtime::redis::connect_client(&cfg, Duration::from_secs(10)).await?;
    let mut out = Vec::new();

    // ---- throughput: drain a backlog ----
    eprintln!("feynman: baseline redis-benchmark XADD -P 32 …");
    let xadd = xadd_baseline(&t, 400_000, Some(32))?;
    let xadd_rps = xadd.first().map_or(0.0, |r| r.1.rps);
    let ns = format!("bench{}", std::process::id());
    let keys = Keys::new(Namespace::new(ns.clone())?);
    let cfg = bench_config(&t.url, &ns);
    let producer = Producer::new(client.clone(), keys.clone(), cfg.feynman.partitions);
    let symbols: Vec<String> = (0..16).map(|i| format!("SYM{i}")).collect();
    let mut sim = MarketSim::new(&symbols, 7).map_err(|e| anyhow::anyhow!("{e}"))?;
    eprintln!("feynman: loading a backlog of {n} ticks …");
    let mut by_stream: HashMap<StreamName, Vec<Tick>> = HashMap::new();
    for i in 0..n {
        let tk = sim.next_tick(1_766_318_400.0 + i as f64 * 1e-3);
        by_stream
            .entry(producer.tick_stream(&tk.symbol))
            .or_default()
            .push(tk);
    }
    for (s, ticks) in &by_stream {
        for chunk in ticks.chunks(2_000) {
            producer.publish_batch(*s, chunk).await?;
        }
    }
    eprintln!("feynman: draining …");
    let (signals, _reload) = shutdown::manual();
    let stop = signals.shutdown.clone();
    let cpu0 = cpu_seconds();
    let start = Instant::now();
    let daemon = tokio::spawn(kitbash_feynman::run(cfg.clone(), signals));
    while !kitbash_feynman::partition::caught_up(&client, &keys, cfg.feynman.partitions).await? {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let secs = start.elapsed().as_secs_f64();
    let cpu = (cpu_seconds() - cpu0) / secs;
    out.push(
        Record::new(
            "feynman",
            "ticks_per_s",
            n as f64 / secs,
            "ticks/s",
            xadd_rps,
        )
        .with(
            "baseline_kind",
            "redis-benchmark XADD -c 50 -P 32, same run",
        )
        .with("ticks", n as u64)
        .with("target", 200_000)
        .with("cpu_cores", (cpu * 100.0).round() / 100.0),
    );

    stop.cancel();
    let _ = daemon.await;

    // ---- latency at a fixed 10k ticks/s ----
    // The daemon runs as its own process here, as in production, so the benchmark's producer
    // and subscriber do not share its async runtime; in-process when the binary is not built.
    let binary = std::env::current_exe()
        .ok()
        .and_then(|e| e.parent().map(|d| d.join("kitbash-feynman")))
        .filter(|p| p.exists());
    let mut child = None;
    let mut in_process = None;
    match &binary {
        Some(bin) => {
            let c = std::process::Command::new(bin)
                .env("KITBASH_CONFIG_DIR", "/nonexistent")
                .env_remove("KITBASH_PROFILE")
                .env("KITBASH__REDIS__URL", &t.url)
                .env("KITBASH__REDIS__NAMESPACE", &ns)
                .env("KITBASH__ADMIN__LISTEN", "")
                .env(
                    "KITBASH__FEYNMAN__PARTITIONS",
                    cfg.feynman.partitions.to_string(),
                )
                .env("KITBASH__FEYNMAN__WINDOW", cfg.feynman.window.to_string())
                .env("KITBASH__CONSUMER__BATCH", cfg.consumer.batch.to_string())
                .env(
                    "KITBASH__CONSUMER__BLOCK_MS",
                    cfg.consumer.block_ms.to_string(),
                )
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .spawn()?;
            child = Some(c);
        }
        None => {
            let (signals, _reload) = shutdown::manual();
            let token = signals.shutdown.clone();
            in_process = Some((
                token,
                tokio::spawn(kitbash_feynman::run(cfg.clone(), signals)),
            ));
        }
    }
    // Wait until every partition has an owner.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let mut owned = 0;
        for p in 0..cfg.feynman.partitions {
            let o: Option<String> = client.get(keys.partition_lease(p)).await?;
            owned += usize::from(o.is_some());
        }
        if owned == cfg.feynman.partitions as usize {
            break;
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "feynman did not take its partitions"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    eprintln!("feynman: baseline redis-benchmark GET -c 1 …");
    let rtt = redis_benchmark(&t, &["-t", "get", "-n", "50000", "-c", "1"])?;
    let rtt_p99 = rtt.first().map_or(0.0, |r| r.1.p99_ms);
    let sub = Builder::from_config(fred::types::config::Config::from_url(&t.url)?)
        .with_performance_config(|p| p.broadcast_channel_capacity = 1 << 16)
        .build_subscriber_client()?;
    sub.init().await?;
    let mut rx = sub.message_rx();
    sub.subscribe(keys.channel_state_update()).await?;
    let sent: Arc<Mutex<HashMap<(String, u64), Instant>>> = Arc::default();
    let hist = Arc::new(Mutex::new(Histogram::<u64>::new(3)?));
    let collector = {
        let (sent, hist) = (sent.clone(), hist.clone());
        tokio::spawn(async move {
            while let Ok(msg) = rx.recv().await {
                let now = Instant::now();
                let Some(bytes) = msg.value.as_bytes() else {
                    continue;
                };
                let Ok(v) = serde_json::from_slice::<serde_json::Value>(bytes) else {
                    continue;
                };
                let (Some(sym), Some(price)) = (v["symbol"].as_str(), v["data"]["price"].as_f64())
                else {
                    continue;
                };
                if let Some(t0) = sent
                    .lock()
                    .map(|mut m| m.remove(&(sym.to_owned(), price.to_bits())))
                    .ok()
                    .flatten()
                    && let Ok(mut h) = hist.lock()
                {
                    let _ = h.record(now.duration_since(t0).as_micros() as u64);
                }
            }
        })
    };
    let secs = if opts.long { 30 } else { 6 };
    eprintln!("feynman: 10,000 ticks/s for {secs} s …");
    let rate_start = Instant::now();
    let cpu0 = cpu_seconds();
    let daemon_cpu0 = child.as_ref().map_or(0.0, |c| process_cpu_seconds(c.id()));
    let total = 10_000 * secs;
    let mut interval = tokio::time::interval(Duration::from_millis(1));
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let mut i = 0u64;
    while i < total {
        interval.tick().await;
        // 10 ticks per millisecond, each its own XADD (no batching: the latency a producer sees).
        for _ in 0..10 {
            let tk = sim.next_tick(1_766_400_000.0 + i as f64 * 1e-4);
            if let Ok(mut m) = sent.lock() {
                m.insert((tk.symbol.clone(), tk.price.to_bits()), Instant::now());
            }
            let p = producer.clone();
            tokio::spawn(async move { p.publish_tick(&tk).await });
            i += 1;
        }
    }
    let wall = rate_start.elapsed().as_secs_f64();
    let cpu = (cpu_seconds() - cpu0) / wall;
    let daemon_cpu = child
        .as_ref()
        .map(|c| (process_cpu_seconds(c.id()) - daemon_cpu0) / wall);
    tokio::time::sleep(Duration::from_millis(500)).await;
    if let Some(mut c) = child {
        let _ = std::process::Command::new("kill")
            .args(["-TERM", &c.id().to_string()])
            .status();
        let _ = tokio::task::spawn_blocking(move || c.wait()).await;
    }
    if let Some((token, task)) = in_process {
        token.cancel();
        let _ = task.await;
    }
    collector.abort();
    let _ = sub.quit().await;
    let h = hist
        .lock()
        .map_err(|_| anyhow::anyhow!("histogram lock"))?
        .clone();
    out.push(
        Record::new(
            "feynman",
            "p99_tick_to_update_ms",
            h.value_at_quantile(0.99) as f64 / 1000.0,
            "ms",
            rtt_p99,
        )
        .with("baseline_kind", "redis-benchmark GET -c 1 p99, same run")
        .with("p50_ms", h.value_at_quantile(0.5) as f64 / 1000.0)
        .with("p999_ms", h.value_at_quantile(0.999) as f64 / 1000.0)
        .with("updates", h.len())
        .with("offered_ticks_per_s", (total as f64 / wall).round())
        .with("cpu_cores", (cpu * 100.0).round() / 100.0)
        .with(
            "daemon",
            if binary.is_some() {
                "process"
            } else {
                "in-process"
            },
        )
        .with(
            "daemon_cpu_cores",
            daemon_cpu.map_or(serde_json::Value::Null, |c| {
                ((c * 100.0).round() / 100.0).into()
            }),
        )
        .with("target_ms", 2.0),
    );
    // Leave a server that is not ours as we found it: remove the benchmark's namespace.
    let mut cursor = "0".to_owned();
    loop {
        let v: Value = client
            .custom(
                fred::cmd!("SCAN"),
                vec![
                    Value::from(cursor.as_str()),
                    "MATCH".into(),
                    format!("{ns}:*").into(),
                    "COUNT".into(),
                    1000.into(),
                ],
            )
            .await?;
        let Value::Array(parts) = v else { break };
        cursor = parts
            .first()
            .and_then(kitbash_runtime::entries::string_of)
            .unwrap_or_else(|| "0".into());
        if let Some(Value::Array(found)) = parts.get(1) {
            let found: Vec<String> = found
                .iter()
                .filter_map(kitbash_runtime::entries::string_of)
                .collect();
            if !found.is_empty() {
                let _: i64 = client.unlink(found).await?;
            }
        }
        if cursor == "0" {
            break;
        }
    }
    let _ = client.quit().await;
    Ok(out)
}
