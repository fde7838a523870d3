//! Shared helpers: entries of every storage kind, configs, clients, stream reads.

use std::time::Duration;

use fred::prelude::*;
use fred::types::Value;
use kitbash_archive::format::Entry;
use kitbash_runtime::Config;
use kitbash_schema::messages::{PhysicsRecord, PhysicsVector, Regime, Tick};
use kitbash_schema::{Envelope, Keys, Namespace};

pub fn tick(i: u64) -> Tick {
    Tick {
        symbol: ["SPY", "QQQ", "IWM"][(i % 3) as usize].into(),
        price: 100.0 + (i as f64) * 0.01 + 1e-13,
        size: (i % 7) as f64 + 0.5,
        trades: i % 11,
        ts: 1_766_318_400.0 + i as f64 / 1000.0,
    }
}

pub fn physics(i: u64) -> PhysicsRecord {
    PhysicsRecord {
        symbol: "SPY".into(),
        ts: 1_766_318_400.0 + i as f64,
        price: 100.0 + i as f64,
        vector: PhysicsVector {
            mass: -0.0,
            momentum: f64::MIN_POSITIVE / 2.0,
            friction: 1.0 / 3.0,
            entropy: i as f64 * 0.1,
            nash_dist: -1.5,
            regime: [Regime::Gaussian, Regime::LevyStable, Regime::Critical][(i % 3) as usize],
            alpha_coefficient: 2.5,
        },
        source: format!("ticks:0/{i}-0"),
    }
}

fn owned(fields: Vec<(&str, Vec<u8>)>) -> Vec<(Vec<u8>, Vec<u8>)> {
    fields
        .into_iter()
        .map(|(k, v)| (k.as_bytes().to_vec(), v))
        .collect()
}

/// Field lists of every kind the format distinguishes, for a stream of ticks: typed ticks
/// (with and without a mid), a JSON tick, a tick of another version, a foreign type, fields in
/// another order, an empty value, binary garbage.
pub fn tick_stream_bodies(n: u64) -> Vec<Vec<(Vec<u8>, Vec<u8>)>> {
    let mut out = Vec::new();
    for i in 0..n {
        let t = tick(i);
        let f = match i % 8 {
            0..=2 => owned(Envelope::msgpack(&t).expect("enc").to_fields()),
            3 => owned(
                Envelope::msgpack(&t)
                    .expect("enc")
                    .with_mid(format!("m{i}"))
                    .to_fields(),
            ),
            4 => owned(Envelope::json(&t).expect("enc").to_fields()),
            5 => {
                let mut e = Envelope::msgpack(&t).expect("enc");
                e.version = 9;
                owned(e.to_fields())
            }
            6 => owned(vec![
                ("type", b"someone-elses".to_vec()),
                ("v", b"1".to_vec()),
                ("ct", b"msgpack".to_vec()),
                ("d", vec![0xc1, 0xff]),
            ]),
            _ => owned(vec![
                ("d", b"x".to_vec()),
                ("type", b"tick".to_vec()),
                ("", Vec::new()),
                ("bin", vec![0, 159, 146, 150]),
            ]),
        };
        out.push(f);
    }
    out
}

pub fn entries(bodies: Vec<Vec<(Vec<u8>, Vec<u8>)>>) -> Vec<Entry> {
    bodies
        .into_iter()
        .enumerate()
        .map(|(i, fields)| Entry {
            id: format!("{}-{}", 1_766_318_400_000 + i as u64 / 3, i % 3),
            fields,
        })
        .collect()
}

pub fn config(url: &str, ns: &str, dir: &std::path::Path) -> Config {
    let mut c = Config::default();
    c.redis.url = url.to_owned();
    c.redis.namespace = ns.to_owned();
    c.admin.listen = String::new();
    c.consumer.block_ms = 50;
    c.consumer.claim_interval_ms = 200;
    c.archive.dir = dir.display().to_string();
    c.archive.roll_ms = 300;
    c.archive.lease_ms = 1_000;
    c
}

pub async fn client(url: &str) -> Client {
    let cfg = kitbash_runtime::config::RedisConfig {
        url: url.to_owned(),
        ..Default::default()
    };
    kitbash_runtime::redis::connect_client(&cfg, Duration::from_secs(10))
        .await
        .expect("connect")
}

pub fn keys(ns: &str) -> Keys {
    Keys::new(Namespace::new(ns.to_owned()).expect("ns"))
}

pub async fn xadd(c: &Client, key: &str, fields: &[(Vec<u8>, Vec<u8>)]) -> String {
    // The fixtures' field names are UTF-8; values are any bytes.
    let fields: Vec<(String, Value)> = fields
        .iter()
        .map(|(k, v)| {
            (
                String::from_utf8_lossy(k).into_owned(),
                Value::Bytes(v.clone().into()),
            )
        })
        .collect();
    c.xadd(key, false, None, "*", fields).await.expect("xadd")
}

/// The stream as it is in Redis, exactly (ids and fields, bytes).
pub async fn xrange(c: &Client, key: &str) -> Vec<Entry> {
    let v: Value = c.xrange(key, "-", "+", None).await.expect("xrange");
    kitbash_runtime::entries::parse_entries("XRANGE", &v)
        .expect("entries")
        .into_iter()
        .map(|e| Entry {
            id: e.id,
            fields: e
                .fields
                .unwrap_or_default()
                .into_iter()
                .map(|(k, v)| (k.to_vec(), v.to_vec()))
                .collect(),
        })
        .collect()
}

pub async fn pending(c: &Client, key: &str) -> i64 {
    pending_in(c, key, "archive").await
}

/// Entries `group` has delivered and not acknowledged on `key` (−1: no such group).
pub async fn pending_in(c: &Client, key: &str, group: &str) -> i64 {
    let v: Value = c.xpending(key, group, ()).await.unwrap_or(Value::Null);
    match v {
        Value::Array(a) => a.first().and_then(Value::as_i64).unwrap_or(-1),
        _ => -1,
    }
}

pub use kitbash_testkit::support::eventually;
