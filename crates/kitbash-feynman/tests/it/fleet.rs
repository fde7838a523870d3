//! In-process feynman instances: outputs against the reference, ordering and exact counts with
//! three instances while one is killed, bad ticks to the dead-letter stream, output formats.

use std::time::Duration;

use fred::prelude::*;
use fred::types::Value;
use kitbash_client::Producer;
use kitbash_runtime::shutdown;
use kitbash_schema::StreamName;
use kitbash_testkit::RedisServer;

use crate::support::*;

/// The next pub/sub message, skipping over a lagged receiver (fred's channel holds 32).
async fn next_message(
    rx: &mut tokio::sync::broadcast::Receiver<fred::types::Message>,
) -> fred::types::Message {
    tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match rx.recv().await {
                Ok(m) => return m,
                Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => continue,
                Err(e) => panic!("subscriber closed: {e}"),
            }
        }
    })
    .await
    .expect("a message within 10 s")
}

struct Instance {
    task: tokio::task::JoinHandle<Result<(), kitbash_runtime::RuntimeError>>,
    stop: kitbash_runtime::CancellationToken,
}

fn start(url: &str, ns: &str) -> Instance {
    start_with(config(url, ns))
}

fn start_with(cfg: kitbash_runtime::Config) -> Instance {
    let (signals, _reload) = shutdown::manual();
    let stop = signals.shutdown.clone();
    let task = tokio::spawn(kitbash_feynman::run(cfg, signals));
    Instance { task, stop }
}

impl Instance {
    async fn stop(self) {
        self.stop.cancel();
        self.task.await.expect("join").expect("run");
    }
    /// Like kill -9 for this instance's work: its tasks die without committing or releasing.
    async fn kill(self) {
        self.task.abort();
        let _ = self.task.await;
        // Its heartbeat task is separate in-process; stop it as the process death would.
        self.stop.cancel();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_instance_writes_the_seed_outputs_matching_the_reference() {
    let server = RedisServer::start().expect("redis");
    let ns = kitbash_testkit::namespace();
    let keys = keys(&ns);
    let c = client(&server.url()).await;
    let sub = fred::clients::SubscriberClient::new(
        fred::types::config::Config::from_url(&server.url()).expect("url"),
        None,
        None,
        None,
    );
    sub.init().await.expect("sub");
    let mut messages = sub.message_rx();
    sub.subscribe(keys.channel_state_update())
        .await
        .expect("subscribe");

    let producer = Producer::new(c.clone(), keys.clone(), PARTITIONS);
    let input = ticks(&["SPY", "QQQ", "AAPL"], 300, 7);
    let inst = start(&server.url(), &ns);
    publish(&producer, &input).await;
    caught_up(&c, &keys).await;

    let reference = reference(&input);
    for (symbol, (_, vector)) in &reference {
        assert_eq!(
            physics_state(&c, &keys, symbol).await.as_ref(),
            Some(vector),
            "{symbol}"
        );
        let raw: String = c.get(keys.physics_state(symbol)).await.expect("get");
        assert!(raw.starts_with("{\"mass\":"), "seed field order: {raw}");
        let snap: std::collections::HashMap<String, String> = c
            .hgetall(keys.market_snapshot(symbol))
            .await
            .expect("snapshot");
        assert!(
            snap.contains_key("price")
                && snap.contains_key("volume")
                && snap.contains_key("timestamp")
        );
        let ttl: i64 = c.ttl(keys.market_snapshot(symbol)).await.expect("ttl");
        assert!((1..=60).contains(&ttl), "snapshot TTL {ttl}");
        let ttl: i64 = c.ttl(keys.physics_state(symbol)).await.expect("ttl");
        assert_eq!(ttl, -1, "physics:state has no TTL");
    }
    // state_update carries the seed's envelope and points into the physics stream.
    let msg = next_message(&mut messages).await;
    let body: serde_json::Value =
        serde_json::from_slice(msg.value.as_bytes().expect("bytes")).expect("json");
    assert_eq!(body["event"], "PHYSICS_UPDATE");
    assert!(body["data"]["alpha"].is_number() && body["data"]["regime"].is_string());
    assert!(body["timestamp"].as_str().unwrap_or("").ends_with('Z'));
    let sid = body["data"]["stream_id"]
        .as_str()
        .expect("stream_id")
        .to_owned();
    let at: Value = c
        .xrange(
            keys.stream(StreamName::Physics),
            sid.as_str(),
            sid.as_str(),
            None,
        )
        .await
        .expect("xrange");
    assert_eq!(
        kitbash_runtime::entries::parse_entries("XRANGE", &at)
            .expect("entries")
            .len(),
        1
    );

    inst.stop().await;
    let counts = checkpointed(&c, &keys).await;
    for (symbol, (n, _)) in &reference {
        assert_eq!(
            counts.get(symbol),
            Some(n),
            "{symbol} applied exactly once each"
        );
    }
}

/// 100,000 ticks over 8 symbols; one of three instances dies a third of the way in.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_instances_one_killed_lose_and_reorder_nothing() {
    one_of_three_killed(0, None).await;
}

/// The same with windows snapshotted only after waiting 700 ms, at most 2 per commit, over 32
/// symbols: the victim dies with windows of different ages unwritten, and the survivors must
/// replay each from the oldest unwritten change (seen red with the replay position set to the
/// commit's own position instead).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_aged_snapshots_one_killed_of_three_loses_and_reorders_nothing() {
    one_of_three_killed(700, None).await;
}

/// The same with snapshots in pieces of one window per commit over 32 symbols: each round is
/// spread over many commits, so the victim dies in the middle of rounds, and recovery must
/// replay from the oldest window the round had not written yet. Commits are also capped at
/// 4 KiB (a few vectors), so every partition's reads shrink to the minimum and grow back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_snapshots_in_pieces_one_killed_of_three_loses_and_reorders_nothing() {
    one_of_three_killed(0, Some(1)).await;
}

async fn one_of_three_killed(snapshot_item_ms: u64, piece_bytes: Option<usize>) {
    let server = RedisServer::start().expect("redis");
    let ns = kitbash_testkit::namespace();
    let keys = keys(&ns);
    let c = client(&server.url()).await;
    let producer = Producer::new(c.clone(), keys.clone(), PARTITIONS);
    let many: Vec<String> = (0..32).map(|i| format!("S{i}")).collect();
    let symbols: Vec<&str> = if snapshot_item_ms == 0 && piece_bytes.is_none() {
        vec!["SPY", "QQQ", "AAPL", "MSFT", "TSLA", "NVDA", "AMZN", "GOOG"]
    } else {
        many.iter().map(String::as_str).collect()
    };
    let input = ticks(&symbols, 100_000 / symbols.len(), 11);
    let (first, rest) = input.split_at(input.len() / 3);

    let cfg = || {
        let mut c = config(&server.url(), &ns);
        c.feynman.snapshot_item_ms = snapshot_item_ms;
        if snapshot_item_ms > 0 {
            c.feynman.snapshot_max_items = 2;
        }
        if let Some(b) = piece_bytes {
            c.feynman.snapshot_max_bytes = b;
            c.feynman.commit_max_bytes = 4_096;
        }
        c
    };
    let a = start_with(cfg());
    let b = start_with(cfg());
    let victim = start_with(cfg());
    publish(&producer, first).await;
    // Wait until all three instances own partitions (so the victim holds some), then kill it
    // while ticks are still arriving.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let mut owners = std::collections::BTreeSet::new();
        for p in 0..PARTITIONS {
            let o: Option<String> = c.get(keys.partition_lease(p)).await.expect("get");
            // A lease holds `{instance}#{token}`: count instances.
            owners.extend(o.map(|t| kitbash_runtime::lease::instance_of(&t).to_owned()));
        }
        if owners.len() == 3 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "three owners never appeared: {owners:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (mid, last) = rest.split_at(rest.len() / 2);
    let publishing = {
        let producer = producer.clone();
        let mid = mid.to_vec();
        tokio::spawn(async move { publish(&producer, &mid).await })
    };
    victim.kill().await;
    publishing.await.expect("publish");
    publish(&producer, last).await;
    caught_up(&c, &keys).await;
    a.stop().await;
    b.stop().await;

    let reference = reference(&input);
    let counts = checkpointed(&c, &keys).await;
    for (symbol, (n, vector)) in &reference {
        assert_eq!(
            counts.get(symbol),
            Some(n),
            "{symbol}: every tick applied exactly once"
        );
        assert_eq!(
            physics_state(&c, &keys, symbol).await.as_ref(),
            Some(vector),
            "{symbol}: applied in order"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_ticks_go_to_the_dead_letter_stream() {
    let server = RedisServer::start().expect("redis");
    let ns = kitbash_testkit::namespace();
    let keys = keys(&ns);
    let c = client(&server.url()).await;
    let producer = Producer::new(c.clone(), keys.clone(), PARTITIONS);
    let stream = producer.tick_stream("SPY");
    let bad = [
        r#"{"symbol":"SPY","price":-1,"size":1,"trades":1,"ts":1}"#,
        r#"{"symbol":"SPY","price":1e999,"size":1,"trades":1,"ts":1}"#,
        r#"{"symbol":"spy lower","price":1,"size":1,"trades":1,"ts":1}"#,
        r#"{"symbol":"SPY","price":1,"size":-5,"trades":1,"ts":1}"#,
        r#"{"symbol":"SPY","price":"x"}"#,
    ];
    for b in bad {
        let _: String = c
            .xadd(
                keys.stream(stream),
                false,
                None,
                "*",
                vec![("type", "tick"), ("ct", "json"), ("d", b)],
            )
            .await
            .expect("xadd");
    }
    let good = ticks(&["SPY"], 20, 3);
    publish(&producer, &good).await;
    let inst = start(&server.url(), &ns);
    caught_up(&c, &keys).await;
    inst.stop().await;
    let n: u64 = c.xlen(keys.dead_letter(stream)).await.expect("xlen");
    assert_eq!(n, bad.len() as u64);
    let v: Value = c
        .xrange(keys.dead_letter(stream), "-", "+", None)
        .await
        .expect("xrange");
    let letters: Vec<String> = kitbash_runtime::entries::parse_entries("XRANGE", &v)
        .expect("entries")
        .iter()
        .map(|e| {
            kitbash_schema::wire::DeadLetter::from_fields(e.pairs())
                .expect("letter")
                .reason
        })
        .collect();
    assert!(letters[0].contains("price -1"), "{letters:?}");
    assert!(letters[2].contains("symbol"), "{letters:?}");
    assert!(letters[3].contains("size -5"), "{letters:?}");
    assert!(letters[4].contains("does not decode"), "{letters:?}");
    assert_eq!(checkpointed(&c, &keys).await.get("SPY"), Some(&20));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_restart_with_aof_loses_and_repeats_nothing() {
    let mut server = RedisServer::builder()
        .appendonly(kitbash_testkit::Appendfsync::Always)
        .start()
        .expect("redis");
    let ns = kitbash_testkit::namespace();
    let keys = keys(&ns);
    let c = client(&server.url()).await;
    let producer = Producer::new(c.clone(), keys.clone(), PARTITIONS);
    let input = ticks(&["SPY", "QQQ", "AAPL"], 2000, 13);
    let (a, b) = input.split_at(input.len() / 2);
    let inst = start(&server.url(), &ns);
    publish(&producer, a).await;
    caught_up(&c, &keys).await;

    server.kill().expect("kill -9 redis");
    server.restart().expect("restart redis (AOF replays)");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while c.ping::<String>(None).await.is_err() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "client never reconnected"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    publish(&producer, b).await;
    caught_up(&c, &keys).await;
    inst.stop().await;

    let reference = reference(&input);
    let counts = checkpointed(&c, &keys).await;
    for (symbol, (n, vector)) in &reference {
        assert_eq!(
            counts.get(symbol),
            Some(n),
            "{symbol}: exact count across a Redis restart"
        );
        assert_eq!(
            physics_state(&c, &keys, symbol).await.as_ref(),
            Some(vector),
            "{symbol}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_on_a_redis_cluster_write_the_reference_outputs() {
    on_a_cluster(kitbash_runtime::config::KeyStyleConfig::Seed).await;
}

/// The tagged style puts each symbol's keys in the symbol's slot: the guarded state write
/// touches `physics:state:{SYM}` and its guard together, so they must share it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_on_a_redis_cluster_with_tagged_keys_write_the_reference_outputs() {
    on_a_cluster(kitbash_runtime::config::KeyStyleConfig::Tagged).await;
}

async fn on_a_cluster(style: kitbash_runtime::config::KeyStyleConfig) {
    let cluster = kitbash_testkit::RedisCluster::start().expect("cluster");
    let url = cluster.cluster_url();
    let ns = kitbash_testkit::namespace();
    let mut cfg = config(&url, &ns);
    cfg.redis.key_style = style;
    let keys = cfg.redis.keys();
    let c = client(&url).await;
    let producer = Producer::new(c.clone(), keys.clone(), PARTITIONS);
    let input = ticks(&["SPY", "QQQ", "AAPL", "MSFT"], 1000, 17);
    let sub = fred::clients::SubscriberClient::new(
        fred::types::config::Config::from_url(&url).expect("url"),
        None,
        None,
        None,
    );
    sub.init().await.expect("sub");
    let mut messages = sub.message_rx();
    sub.subscribe(keys.channel_state_update())
        .await
        .expect("subscribe");
    let a = start_with(cfg.clone());
    let b = start_with(cfg.clone());
    publish(&producer, &input).await;
    caught_up(&c, &keys).await;
    a.stop().await;
    b.stop().await;
    let reference = reference(&input);
    let counts = checkpointed(&c, &keys).await;
    for (symbol, (n, vector)) in &reference {
        assert_eq!(counts.get(symbol), Some(n), "{symbol}: every tick once");
        assert_eq!(
            physics_state(&c, &keys, symbol).await.as_ref(),
            Some(vector),
            "{symbol}"
        );
    }
    let physics: u64 = c
        .xlen(keys.stream(StreamName::Physics))
        .await
        .expect("xlen");
    assert!(physics > 0);
    // state_update carries the id of a real physics entry on a cluster too.
    let msg = next_message(&mut messages).await;
    let body: serde_json::Value =
        serde_json::from_slice(msg.value.as_bytes().expect("bytes")).expect("json");
    let sid = body["data"]["stream_id"]
        .as_str()
        .expect("stream_id")
        .to_owned();
    let at: Value = c
        .xrange(
            keys.stream(StreamName::Physics),
            sid.as_str(),
            sid.as_str(),
            None,
        )
        .await
        .expect("xrange");
    let found = kitbash_runtime::entries::parse_entries("XRANGE", &at).expect("entries");
    assert_eq!(found.len(), 1, "{sid}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_re_sent_tick_with_the_same_mid_is_applied_once() {
    let server = RedisServer::start().expect("redis");
    let ns = kitbash_testkit::namespace();
    let keys = keys(&ns);
    let c = client(&server.url()).await;
    let producer = Producer::new(c.clone(), keys.clone(), PARTITIONS);
    let input = ticks(&["SPY"], 30, 19);
    let stream = producer.tick_stream("SPY");
    let inst = start(&server.url(), &ns);
    for (i, t) in input.iter().enumerate() {
        let mid = format!("retry-{i}");
        producer
            .publish_with_mid(stream, t, &mid)
            .await
            .expect("xadd");
        if i % 3 == 0 {
            // The producer did not learn the outcome and sends the same tick again.
            producer
                .publish_with_mid(stream, t, &mid)
                .await
                .expect("re-send");
        }
    }
    caught_up(&c, &keys).await;
    inst.stop().await;
    let (n, vector) = reference(&input).remove("SPY").expect("SPY");
    assert_eq!(checkpointed(&c, &keys).await.get("SPY"), Some(&n));
    assert_eq!(n, 30);
    assert_eq!(physics_state(&c, &keys, "SPY").await, Some(vector));
}

fn xinfo_field(v: &Value, name: &str) -> i64 {
    match v {
        Value::Array(kv) => kv
            .chunks(2)
            .find(|p| p[0].as_str().as_deref() == Some(name))
            .and_then(|p| p[1].as_i64())
            .unwrap_or(-1),
        Value::Map(m) => m
            .clone()
            .inner()
            .into_iter()
            .find(|(k, _)| k.as_str() == Some(name))
            .and_then(|(_, v)| v.as_i64())
            .unwrap_or(-1),
        _ => -1,
    }
}

/// A group that has not read the physics stream holds it: the trim (set far below what is
/// written) removes nothing until the group has read and acknowledged, then trims.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_physics_stream_is_never_trimmed_past_what_a_group_has_not_read() {
    let server = RedisServer::start().expect("redis");
    let ns = kitbash_testkit::namespace();
    let keys = keys(&ns);
    let c = client(&server.url()).await;
    let physics = keys.stream(StreamName::Physics);
    let _: Value = c
        .xgroup_create(&physics, "archive", "0", true)
        .await
        .expect("group");
    let mut cfg = config(&server.url(), &ns);
    cfg.feynman.physics_stream_max = 10;
    cfg.feynman.trim_interval_ms = 100;
    cfg.consumer.batch = 5; // many small batches: many physics entries
    let producer = Producer::new(c.clone(), keys.clone(), PARTITIONS);
    let inst = start_with(cfg);
    publish(&producer, &ticks(&["SPY", "QQQ", "AAPL"], 200, 5)).await;
    caught_up(&c, &keys).await;
    let info = || async {
        let v: Value = c
            .custom(
                fred::types::CustomCommand::new_static(
                    "XINFO",
                    fred::types::ClusterHash::FirstKey,
                    false,
                ),
                vec![Value::from("STREAM"), physics.as_str().into()],
            )
            .await
            .expect("xinfo");
        (xinfo_field(&v, "length"), xinfo_field(&v, "entries-added"))
    };
    // Ten trim rounds pass with the group behind: nothing may go.
    for _ in 0..10 {
        let (len, added) = info().await;
        assert!(added > 100, "{added}");
        assert_eq!(len, added, "nothing trimmed the group has not read");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The group reads and acknowledges everything: now the trim may cut.
    let v: Value = c
        .xreadgroup("archive", "a1", Some(100_000), None, false, &physics, ">")
        .await
        .expect("read");
    let ids: Vec<String> = kitbash_runtime::entries::parse_xread(&v)
        .expect("entries")
        .into_iter()
        .map(|e| e.id)
        .collect();
    let (_, added) = info().await;
    assert_eq!(ids.len() as i64, added, "the group read every entry");
    let _: i64 = c.xack(&physics, "archive", ids).await.expect("ack");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while info().await.0 >= added {
        assert!(tokio::time::Instant::now() < deadline, "never trimmed");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    inst.stop().await;
}

/// Memory follows the data: beyond `max_symbols_per_partition` the least recently ticked
/// symbols are forgotten, and symbols idle for `idle_symbol_ms` of stream time are forgotten —
/// from memory and from the snapshot.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_symbols_are_forgotten_and_a_partition_keeps_at_most_its_cap() {
    let server = RedisServer::start().expect("redis");
    let ns = kitbash_testkit::namespace();
    let keys = keys(&ns);
    let c = client(&server.url()).await;
    let mut cfg = config(&server.url(), &ns);
    cfg.feynman.partitions = 1;
    cfg.feynman.max_symbols_per_partition = 5;
    cfg.feynman.idle_symbol_ms = 1_000;
    let stream = keys.stream(StreamName::Ticks(0));
    let add = |symbol: String, ms: u64| {
        let (c, stream) = (c.clone(), stream.clone());
        async move {
            let t = kitbash_schema::messages::Tick {
                symbol,
                price: 10.0,
                size: 1.0,
                trades: 1,
                ts: ms as f64 / 1000.0,
            };
            let env = kitbash_schema::Envelope::msgpack(&t).expect("encode");
            let fields: Vec<(&str, Value)> = env
                .to_fields()
                .into_iter()
                .map(|(k, v)| (k, Value::Bytes(v.into())))
                .collect();
            let _: String = c
                .xadd(&stream, false, None, format!("{ms}-0").as_str(), fields)
                .await
                .expect("xadd");
        }
    };
    // Stream time 1.000 s … 1.019 s: twenty symbols, one tick each.
    for i in 0..20u64 {
        add(format!("S{i:02}"), 1_000 + i).await;
    }
    let inst = start_with(cfg.clone());
    caught_up_n(&c, &keys, 1).await;
    inst.stop().await;
    let kept = kitbash_feynman::partition::snapshotted_counts(&c, &keys, 1)
        .await
        .expect("snapshot");
    let names: Vec<&str> = kept.keys().map(String::as_str).collect();
    assert_eq!(
        names,
        ["S15", "S16", "S17", "S18", "S19"],
        "the five most recent"
    );
    // Stream time 10 s: everything else has been idle for more than a second.
    add("LATE".into(), 10_000).await;
    let inst = start_with(cfg);
    caught_up_n(&c, &keys, 1).await;
    inst.stop().await;
    let kept = kitbash_feynman::partition::snapshotted_counts(&c, &keys, 1)
        .await
        .expect("snapshot");
    let names: Vec<&str> = kept.keys().map(String::as_str).collect();
    assert_eq!(names, ["LATE"], "idle symbols forgotten");
}
