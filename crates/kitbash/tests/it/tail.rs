//! `kitbash tail`: decoded entries live, one line each, from `--from`; SIGTERM stops it with
//! exit 0; it creates no consumer group.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

use fred::prelude::*;
use kitbash_client::Producer;
use kitbash_schema::messages::Tick;
use kitbash_schema::{Keys, Namespace, StreamName};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tail_prints_decoded_entries_live_and_stops_on_sigterm() {
    let server = kitbash_testkit::RedisServer::start().expect("redis");
    let cfg = kitbash_runtime::config::RedisConfig {
        url: server.url(),
        ..Default::default()
    };
    let c = kitbash_runtime::redis::connect_client(&cfg, std::time::Duration::from_secs(10))
        .await
        .expect("connect");
    let keys = Keys::new(Namespace::new("t".to_owned()).expect("ns"));
    let producer = Producer::new(c.clone(), keys.clone(), 8);
    let tick = |i: u64| Tick {
        symbol: "SPY".into(),
        price: 100.0 + i as f64,
        size: 1.0,
        trades: i,
        ts: 1.0,
    };
    producer
        .publish(StreamName::Ticks(0), &tick(1))
        .await
        .expect("publish");
    let key = keys.stream(StreamName::Ticks(0));
    let _: String = c
        .xadd(&key, false, None, "*", vec![("not", "an envelope")])
        .await
        .expect("xadd");
    let mut child = Command::new(env!("CARGO_BIN_EXE_kitbash"))
        .args(["tail", "ticks:0", "--from", "0", "--json"])
        .env("KITBASH_CONFIG_DIR", "/nonexistent")
        .env_remove("KITBASH_PROFILE")
        .env("KITBASH__REDIS__URL", server.url())
        .env("KITBASH__REDIS__NAMESPACE", "t")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn");
    let stdout = child.stdout.take().expect("stdout");
    let lines = std::thread::spawn(move || {
        BufReader::new(stdout)
            .lines()
            .take(3)
            .map(|l| l.expect("line"))
            .collect::<Vec<_>>()
    });
    // One more while it runs: a live entry.
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    producer
        .publish(StreamName::Ticks(0), &tick(2))
        .await
        .expect("publish");
    let lines = tokio::task::spawn_blocking(move || lines.join().expect("reader"))
        .await
        .expect("join");
    let json: Vec<serde_json::Value> = lines
        .iter()
        .map(|l| serde_json::from_str(l).expect("json line"))
        .collect();
    assert_eq!(json[0]["type"], "tick");
    assert_eq!(json[0]["body"]["price"], 101.0);
    assert_eq!(
        json[1]["fields"][0],
        serde_json::json!(["not", "an envelope"])
    );
    assert_eq!(json[2]["body"]["trades"], 2);
    kitbash_testkit::support::signal(&child, "-TERM");
    let status = kitbash_testkit::support::wait_exit(&mut child).await;
    assert_eq!(status.code(), Some(0));
    let groups: fred::types::Value = c.xinfo_groups(&key).await.expect("groups");
    assert!(
        matches!(groups, fred::types::Value::Array(ref a) if a.is_empty()),
        "{groups:?}"
    );
}
