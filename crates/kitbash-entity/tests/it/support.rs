//! Helpers: an entity config for tests, clients, in-process instances, waiting for the
//! partitions to catch up, and reading documents, changes and dead letters back.

use std::time::Duration;

use fred::prelude::*;
use fred::types::Value;
use kitbash_runtime::Config;
use kitbash_runtime::entries;
use kitbash_runtime::shutdown;
use kitbash_schema::{Keys, Namespace, StreamName};

/// Six partitions, so three instances settle at two each.
pub const PARTITIONS: u32 = 6;

pub fn config(url: &str, ns: &str) -> Config {
    let mut c = Config::default();
    c.redis.url = url.to_owned();
    c.redis.namespace = ns.to_owned();
    c.admin.listen = String::new();
    c.fleet.heartbeat_ms = 200;
    c.consumer.block_ms = 100;
    c.consumer.batch = 128;
    c.entity.partitions = PARTITIONS;
    c.entity.lease_ms = 600;
    c.entity.snapshot_ms = 200;
    c
}

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

pub struct Instance {
    task: tokio::task::JoinHandle<Result<(), kitbash_runtime::RuntimeError>>,
    stop: kitbash_runtime::CancellationToken,
}

pub fn start(cfg: Config) -> Instance {
    let (signals, _reload) = shutdown::manual();
    let stop = signals.shutdown.clone();
    let task = tokio::spawn(kitbash_entity::run(cfg, signals));
    Instance { task, stop }
}

impl Instance {
    pub async fn stop(self) {
        self.stop.cancel();
        self.task.await.expect("join").expect("run");
    }

    /// Cancels (what SIGTERM does in the binary) and waits up to `grace` for a clean return.
    pub async fn stop_within(self, grace: Duration) -> bool {
        self.stop.cancel();
        match tokio::time::timeout(grace, self.task).await {
            Ok(r) => {
                r.expect("join").expect("run");
                true
            }
            Err(_) => false,
        }
    }

    /// The instance has not returned (it did not give up on an error).
    pub fn is_running(&self) -> bool {
        !self.task.is_finished()
    }
}

/// Waits until every entity partition's checkpoint reached the end of its stream.
pub async fn caught_up(c: &Client, keys: &Keys) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    'again: loop {
        assert!(
            tokio::time::Instant::now() < deadline,
            "entity partitions did not catch up"
        );
        for p in 0..PARTITIONS {
            let s = StreamName::EntityPart(p);
            let last: Value = c
                .xrevrange(keys.stream(s), "+", "-", Some(1))
                .await
                .expect("xrevrange");
            let Some(last) = entries::parse_entries("XREVRANGE", &last)
                .expect("entries")
                .into_iter()
                .next()
            else {
                continue;
            };
            let cp: Option<String> = c
                .hget(keys.checkpoint(s), Keys::CHECKPOINT_LAST_ID)
                .await
                .expect("hget");
            if cp.as_deref() != Some(last.id.as_str()) {
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue 'again;
            }
        }
        return;
    }
}

/// A document's bytes and version.
pub async fn stored(c: &Client, keys: &Keys, key: &str) -> (Option<String>, u64) {
    let doc: Option<String> = c.get(key).await.expect("get");
    let v: Option<u64> = c
        .hget(keys.document_meta(key), Keys::DOCUMENT_VERSION)
        .await
        .expect("hget");
    (doc, v.unwrap_or(0))
}

/// Every entry of a stream key as (id, field → value), read in pages (one XRANGE of 80k
/// entries can outlast the client's command timeout on a loaded machine).
pub async fn read_all(c: &Client, key: &str) -> Vec<(String, Vec<(String, Vec<u8>)>)> {
    let mut out = Vec::new();
    let mut from = "-".to_owned();
    loop {
        let v: Value = c
            .xrange(key, from.as_str(), "+", Some(2000))
            .await
            .expect("xrange");
        let page = entries::parse_entries("XRANGE", &v).expect("entries");
        let n = page.len();
        for e in page {
            from = format!("({}", e.id);
            let pairs = e
                .pairs()
                .map(|(k, v)| (String::from_utf8_lossy(k).into_owned(), v.to_vec()))
                .collect();
            out.push((e.id.clone(), pairs));
        }
        if n < 2000 {
            return out;
        }
    }
}

pub fn field<'a>(pairs: &'a [(String, Vec<u8>)], name: &str) -> &'a [u8] {
    pairs
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_slice())
        .unwrap_or_default()
}

/// The dead letters' reasons over every entity partition.
pub async fn dead_reasons(c: &Client, keys: &Keys) -> Vec<String> {
    let mut out = Vec::new();
    for p in 0..PARTITIONS {
        for (_, pairs) in read_all(c, &keys.dead_letter(StreamName::EntityPart(p))).await {
            out.push(String::from_utf8_lossy(field(&pairs, "reason")).into_owned());
        }
    }
    out
}
