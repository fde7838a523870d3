//! Shared helpers: configs, clients, polling with a deadline, the naive reference model and the
//! sequential hit driver whose every hit's cycle is read back from its record.

use std::collections::HashMap;
use std::process::{Command, Stdio};
use std::time::Duration;

use fred::prelude::*;
use kitbash_client::Producer;
use kitbash_client::reflex::{Reflex, query_hash};
use kitbash_runtime::Config;
use kitbash_schema::messages::QueryEvent;
use kitbash_schema::{Keys, Namespace, StreamName};

/// Long enough that six hits in a row land within a cycle or two even on a loaded machine (the
/// reference does not depend on it; the "rose more than once" precondition does).
pub const PERIOD_MS: u64 = 200;

pub fn config(url: &str, ns: &str) -> Config {
    let mut c = Config::default();
    c.redis.url = url.to_owned();
    c.redis.namespace = ns.to_owned();
    c.admin.listen = String::new();
    c.consumer.block_ms = 50;
    c.decay.period_ms = PERIOD_MS;
    c.decay.lease_ms = 600;
    c.decay.metrics_ms = 50;
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

pub fn query(text: &str) -> QueryEvent {
    QueryEvent {
        text: text.into(),
        hash: None,
        ts: 1_766_318_400.0,
        grains: vec![42, 17],
        latency_ms: Some(2.0),
    }
}

pub async fn cycle(c: &Client, k: &Keys) -> u64 {
    let v: Option<u64> = c.get(k.decay_cycle()).await.expect("get cycle");
    v.unwrap_or(0)
}

/// The naive reference: each query's resonance, multiplied by 0.9 once per cycle.
#[derive(Default, Debug)]
pub struct Reference {
    /// Per query hash: resonance and the cycle it is current at.
    pub r: HashMap<String, (f64, u64)>,
    /// Crossings expected so far.
    pub crossings: u64,
}

impl Reference {
    pub fn hit(&mut self, h: &str, cycle: u64) {
        let (mut r, at) = self.r.get(h).copied().unwrap_or((0.0, cycle));
        for _ in at..cycle {
            r *= 0.9;
        }
        let before = r;
        r += 0.25 * (1.0 - r);
        if before <= 0.8 && r > 0.8 {
            self.crossings += 1;
        }
        self.r.insert(h.to_owned(), (r, cycle));
    }

    pub fn at(&self, h: &str, cycle: u64) -> f64 {
        let (mut r, at) = self.r.get(h).copied().unwrap_or((0.0, cycle));
        for _ in at..cycle {
            r *= 0.9;
        }
        r
    }
}

/// Sends hits one at a time, each after the previous was applied, and records the cycle each
/// was applied at (the record's `cycle` field, written by the same script). Every `pause`
/// hits it waits until a few cycles have passed, so resonances fall and rise again.
pub struct Driver {
    pub c: Client,
    pub k: Keys,
    pub producer: Producer,
    pub reference: Reference,
    pub counts: HashMap<String, u64>,
    pub texts: Vec<String>,
    pub rng: u64,
}

impl Driver {
    pub fn new(c: Client, k: Keys, queries: usize) -> Self {
        Self {
            producer: Producer::new(c.clone(), k.clone(), 1),
            c,
            k,
            reference: Reference::default(),
            counts: HashMap::new(),
            texts: (0..queries).map(|i| format!("query number {i}")).collect(),
            rng: 0x9e37_79b9_7f4a_7c15,
        }
    }

    fn next(&mut self) -> u64 {
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 7;
        self.rng ^= self.rng << 17;
        self.rng
    }

    pub async fn step(&mut self, i: usize) {
        if i % 12 == 11 {
            let wait = 1 + self.next() % 10;
            let from = cycle(&self.c, &self.k).await;
            let (c, k) = (self.c.clone(), self.k.clone());
            eventually("cycles pass", || {
                let (c, k) = (c.clone(), k.clone());
                async move { cycle(&c, &k).await >= from + wait }
            })
            .await;
        }
        // Each block of 12 starts with six hits in a row on one query (it rises above the
        // threshold), then mixes queries at random, then waits for cycles (it falls again).
        let pick = if i % 12 < 6 {
            (i / 12) % self.texts.len()
        } else {
            (self.next() % self.texts.len() as u64) as usize
        };
        let text = self.texts[pick].clone();
        let h = query_hash(&text);
        self.producer
            .publish(StreamName::Queries, &query(&text))
            .await
            .expect("publish");
        let want = self.counts.get(&h).copied().unwrap_or(0) + 1;
        self.counts.insert(h.clone(), want);
        let cms = self.k.cms(&h);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        let applied_at = loop {
            let (count, cyc): (Option<u64>, Option<u64>) = self
                .c
                .hmget(&cms, vec!["count", "cycle"])
                .await
                .expect("hmget");
            if count == Some(want) {
                break cyc.expect("cycle field");
            }
            assert!(count.unwrap_or(0) < want, "{text}: applied twice");
            assert!(tokio::time::Instant::now() < deadline, "hit not applied");
            tokio::time::sleep(Duration::from_millis(2)).await;
        };
        self.reference.hit(&h, applied_at);
    }

    /// Compares every query's resonance through the client API with the reference, and the
    /// crossings stream with the expected crossings.
    pub async fn check(&self) {
        let reflex = Reflex::new(self.c.clone(), self.k.clone(), 0.9);
        for h in self.reference.r.keys() {
            let got = reflex.lookup_hash(h).await.expect("lookup");
            let want = self.reference.at(h, got.cycle);
            assert!(
                (got.resonance - want).abs() <= 1e-12 * want.max(1e-300) + 1e-300,
                "{h} at cycle {}: {} vs reference {want}",
                got.cycle,
                got.resonance
            );
            assert_eq!(got.count, self.counts.get(h).copied());
        }
        let n: u64 = self
            .c
            .xlen(self.k.stream(StreamName::Crossings))
            .await
            .expect("xlen");
        assert_eq!(n, self.reference.crossings, "one crossing per rise");
        assert!(self.reference.crossings >= 2, "the run rose more than once");
    }
}

pub fn spawn_decay(url: &str, ns: &str) -> kitbash_testkit::KillOnDrop {
    Command::new(env!("CARGO_BIN_EXE_kitbash-decay"))
        .env("KITBASH_CONFIG_DIR", "/nonexistent")
        .env("KITBASH__REDIS__URL", url)
        .env("KITBASH__REDIS__NAMESPACE", ns)
        .env("KITBASH__ADMIN__LISTEN", "")
        .env("KITBASH__CONSUMER__BLOCK_MS", "50")
        .env("KITBASH__CONSUMER__CLAIM_IDLE_MS", "500")
        .env("KITBASH__CONSUMER__CLAIM_INTERVAL_MS", "200")
        .env("KITBASH__DECAY__PERIOD_MS", PERIOD_MS.to_string())
        .env("KITBASH__DECAY__LEASE_MS", "600")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn kitbash-decay")
        .into()
}

pub use kitbash_testkit::support::{eventually, signal, wait_exit};
