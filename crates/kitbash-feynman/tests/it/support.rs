//! Helpers: a feynman config for tests, a producer, waiting for partitions to catch up, and the
//! reference computation the daemon's output is compared with.

use std::collections::BTreeMap;
use std::time::Duration;

use fred::prelude::*;
use kitbash_client::Producer;
use kitbash_feynman::physics::TickWindow;
use kitbash_runtime::Config;
use kitbash_schema::messages::{PhysicsVector, Tick};
use kitbash_schema::{Keys, Namespace, StreamName};

/// Six partitions, so three instances settle at two each.
pub const PARTITIONS: u32 = 6;
pub const WINDOW: usize = 50;

pub fn config(url: &str, ns: &str) -> Config {
    let mut c = Config::default();
    c.redis.url = url.to_owned();
    c.redis.namespace = ns.to_owned();
    c.admin.listen = String::new();
    c.fleet.heartbeat_ms = 200;
    c.consumer.block_ms = 100;
    c.consumer.batch = 64;
    c.feynman.partitions = PARTITIONS;
    c.feynman.window = WINDOW;
    c.feynman.lease_ms = 600;
    c.feynman.snapshot_ms = 200;
    c
}

/// A client built like the daemons' (timeouts, reconnect), so it survives a Redis restart.
pub async fn client(url: &str) -> Client {
    let cfg = kitbash_runtime::config::RedisConfig {
        url: url.to_owned(),
        command_timeout_ms: 2_000,
        ..Default::default()
    };
    kitbash_runtime::redis::connect_client(&cfg, Duration::from_secs(10))
        .await
        .expect("connect")
}

pub fn keys(ns: &str) -> Keys {
    Keys::new(Namespace::new(ns).expect("ns"))
}

/// Ticks for `symbols`, `per_symbol` each, prices on a random walk; `trades` counts up per symbol
/// so order is visible.
pub fn ticks(symbols: &[&str], per_symbol: usize, seed: u64) -> Vec<Tick> {
    let mut x = seed | 1;
    let mut next = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        (x >> 11) as f64 / (1u64 << 53) as f64
    };
    let mut price: Vec<f64> = symbols.iter().map(|_| 100.0).collect();
    let mut out = Vec::with_capacity(symbols.len() * per_symbol);
    for i in 0..per_symbol {
        for (s, sym) in symbols.iter().enumerate() {
            price[s] *= 1.0 + (next() - 0.5) * 0.02;
            out.push(Tick {
                symbol: (*sym).to_owned(),
                price: price[s],
                size: 1.0 + (next() * 100.0).floor(),
                trades: i as u64 + 1,
                ts: 1_766_318_400.0 + i as f64,
            });
        }
    }
    out
}

pub async fn publish(producer: &Producer, ticks: &[Tick]) {
    let mut by_stream: BTreeMap<StreamName, Vec<Tick>> = BTreeMap::new();
    for t in ticks {
        by_stream
            .entry(producer.tick_stream(&t.symbol))
            .or_default()
            .push(t.clone());
    }
    for (s, ts) in by_stream {
        for chunk in ts.chunks(500) {
            producer.publish_batch(s, chunk).await.expect("publish");
        }
    }
}

/// The reference: each symbol's ticks in order through a fresh window.
pub fn reference(ticks: &[Tick]) -> BTreeMap<String, (u64, PhysicsVector)> {
    let mut w: BTreeMap<String, (u64, TickWindow)> = BTreeMap::new();
    for t in ticks {
        let e = w
            .entry(t.symbol.clone())
            .or_insert_with(|| (0, TickWindow::new(WINDOW)));
        e.1.push(t).expect("valid tick");
        e.0 += 1;
    }
    w.into_iter()
        .map(|(s, (n, w))| (s, (n, w.vector())))
        .collect()
}

/// Waits until every partition's checkpoint reached the end of its stream.
pub async fn caught_up(c: &Client, keys: &Keys) {
    caught_up_n(c, keys, PARTITIONS).await;
}

/// [`caught_up`] for a deployment of `partitions` partitions.
pub async fn caught_up_n(c: &Client, keys: &Keys, partitions: u32) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while !kitbash_feynman::partition::caught_up(c, keys, partitions)
        .await
        .expect("checkpoints readable")
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "partitions did not catch up"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The windows as snapshotted (after the instances stopped and wrote every changed window).
pub async fn checkpointed(c: &Client, keys: &Keys) -> BTreeMap<String, u64> {
    kitbash_feynman::partition::snapshotted_counts(c, keys, PARTITIONS)
        .await
        .expect("snapshot readable")
}

pub async fn physics_state(c: &Client, keys: &Keys, symbol: &str) -> Option<PhysicsVector> {
    let s: Option<String> = c.get(keys.physics_state(symbol)).await.expect("get");
    s.map(|s| serde_json::from_str(&s).expect("physics json"))
}
