//! `crossing_to_ghost_p99_ms`: `XADD` of a crossing to `ghost:{h}` written by a ghost daemon.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use fred::prelude::*;
use hdrhistogram::Histogram;
use kitbash_client::Producer;
use kitbash_client::reflex::{Reflex, query_hash};
use kitbash_schema::messages::Crossing;
use kitbash_schema::reflex::Layout;
use kitbash_schema::{Keys, StreamName};

use crate::bench::Record;
use crate::bench::redis::{Target, redis_benchmark};

use super::*;
use crate::bench::openloop::*;
use crate::bench::rng::Rng;

pub(super) async fn crossing_to_ghost(t: &Target, long: bool) -> anyhow::Result<Vec<Record>> {
    let cfg = config(&t.url, Layout::Seed);
    let client =
        kitbash_runtime::redis::connect_client(&cfg.redis, Duration::from_secs(10)).await?;
    let _: () = client.flushall(false).await?;
    let keys = Keys::default();
    let reflex = Reflex::new(client.clone(), keys.clone(), 0.9);
    reflex.hat_init().await?;
    reflex
        .grains_import(&grains(1000, &mut Rng::new(5)))
        .await?;
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
    let rate = 1000.0;
    let total = if long { 10_000 } else { 3_000 };
    let collector = {
        let (sent, hist) = (sent.clone(), hist.clone());
        let ghost_prefix = keys.ghost("");
        tokio::spawn(async move {
            let mut seen = 0;
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
                    record(&mut hist, now - t0);
                    seen += 1;
                }
            }
        })
    };
    eprintln!("reflex: {total} crossings, Poisson arrivals at {rate}/s, into the ghost daemon …");
    let crossings: Arc<Vec<Crossing>> = Arc::new(
        (0..total)
            .map(|i| {
                let text = format!("crossing query {i}");
                Crossing {
                    hash: query_hash(&text),
                    text,
                    resonance: 0.81,
                    cycle: 0,
                }
            })
            .collect(),
    );
    // Warm-up, not recorded (the collector only times crossings in `sent`): half a second.
    let warm: Arc<Vec<Crossing>> = Arc::new(
        (0..500)
            .map(|i| {
                let text = format!("warm-up crossing {i}");
                Crossing {
                    hash: query_hash(&text),
                    text,
                    resonance: 0.81,
                    cycle: 0,
                }
            })
            .collect(),
    );
    {
        let producer = producer.clone();
        let handle = tokio::runtime::Handle::current();
        open_loop(handle, poisson_schedule(rate, 500, 17), move |k, _| {
            let (p, c) = (producer.clone(), warm[k].clone());
            async move { p.publish(StreamName::Crossings, &c).await.is_ok() }
        })
        .await?;
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let run = {
        let (sent, producer) = (sent.clone(), producer.clone());
        let handle = tokio::runtime::Handle::current();
        open_loop(handle, poisson_schedule(rate, total, 13), move |k, due| {
            let c = crossings[k].clone();
            if let Ok(mut m) = sent.lock() {
                m.insert(c.hash.clone(), due);
            }
            let p = producer.clone();
            async move { p.publish(StreamName::Crossings, &c).await.is_ok() }
        })
        .await?
    };
    let _ = tokio::time::timeout(Duration::from_secs(30), collector).await;
    let load = load_avg();
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
    let late = &run.lateness;
    Ok(vec![
        Record::new(
            SUITE,
            "crossing_to_ghost_p99_ms",
            q_ms(&h, 0.99),
            "ms",
            base,
        )
        .with(
            "baseline_kind",
            "redis-benchmark -c 1 XADD p99, same server",
        )
        .with(
            "arrivals",
            "poisson, exponential gaps, seed 13, issued by an OS thread (std::thread::sleep)",
        )
        .with("rate_per_s", rate)
        .with("warmup_crossings", 500)
        .with("crossings", h.len())
        .with("sent", total)
        .with("publish_errors", run.errors)
        .with("p50_ms", q_ms(&h, 0.5))
        .with("p999_ms", q_ms(&h, 0.999))
        .with("max_ms", h.max() as f64 / 1e6)
        .with("xadd_p99_ms", q_ms(&run.latency, 0.99))
        .with("generator_lateness_p50_ms", q_ms(late, 0.5))
        .with("generator_lateness_p99_ms", q_ms(late, 0.99))
        .with(
            "generator_timer_slack_ns",
            run.timer_slack_ns
                .map_or(serde_json::Value::Null, Into::into),
        )
        .with(
            "generator_nice",
            run.nice.map_or(serde_json::Value::Null, Into::into),
        )
        .with("load_avg_1m", load)
        .with("grains", 1_000)
        .with("target_ms", 5.0),
    ])
}
