//! Sentinel failover under load: feynman and entity (the real binaries) reach their Redis
//! through `redis+sentinel://`, the Sentinels promote the replica in the middle of a run, and
//! nothing that was acknowledged is lost or applied twice — every tick reaches its symbol's
//! physics state and every increment is counted exactly once.

use std::time::Duration;

use fred::prelude::*;
use kitbash_e2e::*;
use kitbash_schema::messages::{EntityOp, EntityTarget, EntityUpdate, Tick};
use kitbash_schema::{Keys, Namespace};
use kitbash_testkit::RedisSentinelSet;

const SYMBOLS: [&str; 3] = ["SPY", "QQQ", "IWM"];
const BATCHES: u64 = 20;
const TICKS_PER_BATCH: u64 = 150;

/// Waits until the replica has everything the master has (so the batch just written survives
/// a failover): the producers' half of "acknowledged".
fn replicated(set: &RedisSentinelSet) {
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let info = set
            .master()
            .and_then(|m| m.cmd(&["INFO", "replication"]))
            .unwrap_or_default();
        let field = |name: &str| {
            info.lines()
                .find_map(|l| l.strip_prefix(name))
                .map(|v| v.trim().to_owned())
        };
        let master_offset = field("master_repl_offset:");
        // slave0:ip=…,port=…,state=online,offset=N,lag=0
        let replica_offset = field("slave0:").and_then(|s| {
            s.split(',')
                .find_map(|kv| kv.strip_prefix("offset=").map(str::to_owned))
        });
        if master_offset.is_some() && master_offset == replica_offset {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "replication did not catch up: {info}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn a_failover_in_the_middle_of_a_feynman_and_an_entity_run_loses_nothing() {
    let set = RedisSentinelSet::start().expect("master, replica and three sentinels");
    let url = set.url();
    let ns = kitbash_testkit::namespace();
    let keys = Keys::new(Namespace::new(ns.clone()).expect("ns"));
    let spawn = |name: &str| {
        command(name, &url, &ns)
            .env("KITBASH__ENTITY__LEASE_MS", "600")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {name}: {e}"))
    };
    let mut feynman = spawn("kitbash-feynman");
    let mut entity = spawn("kitbash-entity");
    let cfg = kitbash_runtime::config::RedisConfig {
        url: url.clone(),
        namespace: ns.clone(),
        ..Default::default()
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let partitions = kitbash_runtime::config::FeynmanConfig::default().partitions;
    let entity_partitions = kitbash_runtime::config::EntityConfig::default().partitions;
    let mut last_tick: std::collections::BTreeMap<&str, String> = Default::default();
    let mut promoted = None;
    rt.block_on(async {
        let client = kitbash_runtime::redis::connect_client(&cfg, Duration::from_secs(10))
            .await
            .expect("the producer finds the master through the sentinels");
        let producer = kitbash_client::Producer::new(client.clone(), keys.clone(), partitions);
        for b in 0..BATCHES {
            if b == BATCHES / 2 {
                // The daemons are busy with the batches before: promote the replica now.
                promoted = Some(set.failover().expect("failover"));
            }
            for i in 0..TICKS_PER_BATCH {
                let n = b * TICKS_PER_BATCH + i;
                let symbol = SYMBOLS[(n % 3) as usize];
                let tick = Tick {
                    symbol: symbol.into(),
                    price: 100.0 + (n as f64 * 0.37).sin(),
                    size: 1.0 + (n % 5) as f64,
                    trades: 1,
                    ts: 1_766_318_400.0 + n as f64 / 100.0,
                };
                // Retried with the same mid while the failover is under way.
                let mid = format!("tick-{n}");
                let stream = producer.tick_stream(symbol);
                let id = loop {
                    match producer.publish_with_mid(stream, &tick, &mid).await {
                        Ok(id) => break id,
                        Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
                    }
                };
                last_tick.insert(symbol, id);
            }
            let inc = EntityUpdate::with_op(
                EntityTarget::Status,
                EntityOp::Increment,
                serde_json::json!({"failover": {"count": 1}}),
            );
            let mid = format!("inc-{b}");
            while producer
                .patch_entity_with_mid(&inc, entity_partitions, &mid)
                .await
                .is_err()
            {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            replicated(&set);
        }
        let _ = client.quit().await;
    });
    let promoted = promoted.expect("the failover ran");
    assert_eq!(set.master_port().expect("master"), promoted);

    let master = set.master().expect("master");
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let done = || {
        let counted = master
            .cmd(&["GET", &keys.quantum_status()])
            .ok()
            .and_then(|v| serde_json::from_str::<serde_json::Value>(v.trim()).ok())
            .and_then(|d| d["failover"]["count"].as_u64());
        // The newest physics records name the tick each came from (`ticks:p/ID`).
        let recent = master
            .cmd(&[
                "XREVRANGE",
                &keys.stream(kitbash_schema::StreamName::Physics),
                "+",
                "-",
                "COUNT",
                "30",
            ])
            .unwrap_or_default();
        (counted, recent)
    };
    loop {
        let (counted, recent) = done();
        let all_ticks = SYMBOLS
            .iter()
            .all(|s| recent.contains(&format!("/{}", last_tick[s])));
        if counted == Some(BATCHES) && all_ticks {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "after the failover: count {counted:?} of {BATCHES}, last ticks {last_tick:?} not \
             all in the newest physics records:\n{recent}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    // Exactly once: a little later the count is still the number of increments sent.
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(done().0, Some(BATCHES), "each increment applied once");
    for child in [&mut feynman, &mut entity] {
        signal(child, "-TERM");
        assert_eq!(wait_exit(child).code(), Some(0), "drained and exited 0");
    }
}
