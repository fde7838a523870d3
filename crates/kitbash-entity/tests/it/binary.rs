//! The real `kitbash-entity` binary: three instances, one `kill -9`'d mid-stream, another
//! SIGTERM'd: every document's updates are applied exactly once and in stream order.

use std::collections::BTreeMap;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use fred::prelude::*;
use kitbash_client::Producer;
use kitbash_schema::messages::{EntityOp, EntityTarget, EntityUpdate};
use kitbash_schema::{Keys, StreamName};
use kitbash_testkit::{KillOnDrop, RedisServer};
use serde_json::{Value, json};

use crate::support::*;

fn spawn(url: &str, ns: &str) -> KillOnDrop {
    Command::new(env!("CARGO_BIN_EXE_kitbash-entity"))
        .env("KITBASH_CONFIG_DIR", "/nonexistent")
        .env("KITBASH__REDIS__URL", url)
        .env("KITBASH__REDIS__NAMESPACE", ns)
        .env("KITBASH__ADMIN__LISTEN", "")
        .env("KITBASH__FLEET__HEARTBEAT_MS", "200")
        .env("KITBASH__CONSUMER__BLOCK_MS", "100")
        .env("KITBASH__ENTITY__PARTITIONS", PARTITIONS.to_string())
        .env("KITBASH__ENTITY__LEASE_MS", "600")
        .env("KITBASH__ENTITY__SNAPSHOT_MS", "200")
        .env("KITBASH__ENTITY__CHANGES_MAX", "1000000")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn kitbash-entity")
        .into()
}

fn signal(child: &Child, sig: &str) {
    let ok = Command::new("kill")
        .args([sig, &child.id().to_string()])
        .status()
        .expect("kill");
    assert!(ok.success());
}

fn wait_exit(child: &mut Child) -> std::process::ExitStatus {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(s) = child.try_wait().expect("wait") {
            return s;
        }
        assert!(std::time::Instant::now() < deadline, "daemon did not exit");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Waits until some entity partition checkpoint was last committed by the process `pid`.
async fn wait_committed_by(c: &Client, keys: &Keys, pid: u32) {
    let marker = format!("-{pid}-");
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        for p in 0..PARTITIONS {
            let owner: Option<String> = c
                .hget(
                    keys.checkpoint(StreamName::EntityPart(p)),
                    Keys::CHECKPOINT_OWNER,
                )
                .await
                .expect("hget");
            if owner.is_some_and(|o| o.contains(&marker)) {
                return;
            }
        }
        assert!(
            std::time::Instant::now() < deadline,
            "process {pid} never committed"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn updates(docs: usize, per_doc: usize, from: usize) -> Vec<EntityUpdate> {
    let mut out = Vec::new();
    for i in from..from + per_doc {
        for d in 0..docs {
            let t = EntityTarget::Entity {
                name: format!("e{d}"),
                part: "state".into(),
            };
            // Each update changes the document, and `last` shows which one came last.
            out.push(EntityUpdate::with_op(
                t.clone(),
                EntityOp::Increment,
                json!({"n": 1}),
            ));
            out.push(EntityUpdate::merge(t, json!({"last": i})));
        }
    }
    out
}

async fn publish(producer: &Producer, us: &[EntityUpdate]) {
    let mut by: BTreeMap<StreamName, Vec<EntityUpdate>> = BTreeMap::new();
    for u in us {
        by.entry(Producer::entity_stream(&u.target, PARTITIONS))
            .or_default()
            .push(u.clone());
    }
    for (s, v) in by {
        for chunk in v.chunks(200) {
            producer.publish_batch(s, chunk).await.expect("publish");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_binaries_one_killed_apply_every_update_once_and_in_order() {
    const DOCS: usize = 24;
    const PER: usize = 300;
    let server = RedisServer::start().expect("redis");
    let ns = kitbash_testkit::namespace();
    let keys = keys(&ns);
    let c = client(&server.url()).await;
    let producer = Producer::new(c.clone(), keys.clone(), 1);
    let mut first = spawn(&server.url(), &ns);
    let mut second = spawn(&server.url(), &ns);
    let mut third = spawn(&server.url(), &ns);
    publish(&producer, &updates(DOCS, PER / 2, 0)).await;
    wait_committed_by(&c, &keys, first.id()).await;
    signal(&first, "-KILL");
    wait_exit(&mut first);
    publish(&producer, &updates(DOCS, PER / 2, PER / 2)).await;
    signal(&second, "-TERM");
    assert_eq!(wait_exit(&mut second).code(), Some(0), "SIGTERM exits 0");
    caught_up(&c, &keys).await;
    signal(&third, "-TERM");
    assert_eq!(wait_exit(&mut third).code(), Some(0));

    // Per document: versions 1..=2·PER without gap or repeat, and the `last` of every change is
    // the next in stream order.
    let mut seen: BTreeMap<String, Vec<(u64, Value)>> = BTreeMap::new();
    for (_, pairs) in read_all(&c, &keys.stream(StreamName::EntityChanges)).await {
        let key = String::from_utf8_lossy(field(&pairs, "key")).into_owned();
        let v: u64 = String::from_utf8_lossy(field(&pairs, "version"))
            .parse()
            .expect("version");
        let data: Value = serde_json::from_slice(field(&pairs, "data")).expect("data");
        seen.entry(key).or_default().push((v, data));
    }
    assert_eq!(seen.len(), DOCS);
    for (key, changes) in &seen {
        assert_eq!(changes.len(), 2 * PER, "{key}: every update once");
        for (k, (v, data)) in changes.iter().enumerate() {
            assert_eq!(*v, k as u64 + 1, "{key}: versions in order");
            assert_eq!(data["n"], json!(k / 2 + 1), "{key}: change {k}");
            if k % 2 == 1 {
                assert_eq!(
                    data["last"],
                    json!(k / 2),
                    "{key}: merge {k} in stream order"
                );
            }
        }
        let (doc, version) = stored(&c, &keys, key).await;
        assert_eq!(version as usize, 2 * PER);
        let doc: Value = serde_json::from_str(&doc.expect("doc")).expect("json");
        assert_eq!(doc, json!({"n": PER, "last": PER - 1}));
    }
    assert!(dead_reasons(&c, &keys).await.is_empty());
}
