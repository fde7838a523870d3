//! `kitbash status` lists daemons, streams, groups, lag, pending and dead letters, and the tick
//! and entity partitions as partitions, each with its worker, an explicit lag and `caught_up`.

use std::process::Command;

use fred::prelude::*;
use fred::types::Value;
use kitbash_schema::{Keys, Namespace, StreamName};
use kitbash_testkit::RedisServer;

fn kitbash(args: &[&str], env: &[(&str, &str)]) -> std::process::Output {
    let mut c = Command::new(env!("CARGO_BIN_EXE_kitbash"));
    // The repository's own configuration, so no "no configuration found" notice.
    c.args(args)
        .env(
            "KITBASH_CONFIG_DIR",
            concat!(env!("CARGO_MANIFEST_DIR"), "/../../config"),
        )
        .env_remove("KITBASH_PROFILE");
    for (k, v) in env {
        c.env(k, v);
    }
    c.output().expect("run kitbash")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_json_reports_groups_lag_pending_dead_letters_and_daemons() {
    let server = RedisServer::start().expect("redis");
    let ns = kitbash_testkit::namespace();
    let keys = Keys::new(Namespace::new(ns.clone()).expect("ns"));
    let client = Client::new(
        fred::types::config::Config::from_url(&server.url()).expect("url"),
        None,
        None,
        None,
    );
    client.init().await.expect("connect");
    let q = keys.stream(StreamName::Queries);
    for i in 0..5 {
        let _: String = client
            .xadd(
                &q,
                false,
                None,
                "*",
                vec![("type", "query"), ("n", &i.to_string())],
            )
            .await
            .expect("xadd");
    }
    let _: Value = client
        .xgroup_create(&q, "decay", "0", false)
        .await
        .expect("group");
    // 2 delivered and pending, 3 not yet delivered (lag 3).
    let _: Value = client
        .xreadgroup("decay", "c1", Some(2), None, false, &q, ">")
        .await
        .expect("read");
    let _: String = client
        .xadd(
            keys.dead_letter(StreamName::Queries),
            false,
            None,
            "*",
            vec![("reason", "bad")],
        )
        .await
        .expect("dead");
    // A live-looking heartbeat and a stale one.
    let now = kitbash_runtime::clock::now_ms();
    let beat = serde_json::json!({"kind":"decay","instance":"decay-a","host":"h","pid":1,"started_ms":now,"beat_ms":now,"version":"0","ready":true});
    let _: () = client
        .set(
            keys.heartbeat(kitbash_schema::DaemonKind::Decay, "decay-a"),
            beat.to_string(),
            None,
            None,
            false,
        )
        .await
        .expect("set");
    let _: () = client
        .zadd(
            keys.fleet(),
            None,
            None,
            false,
            false,
            vec![
                (now as f64, "decay/decay-a"),
                ((now - 60_000) as f64, "ghost/ghost-old"),
            ],
        )
        .await
        .expect("zadd");

    let out = kitbash(
        &["status", "--json", "--namespace", &ns],
        &[("KITBASH__REDIS__URL", &server.url())],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let s: serde_json::Value = serde_json::from_slice(&out.stdout).expect("one JSON object");
    let queries = s["streams"]
        .as_array()
        .expect("streams")
        .iter()
        .find(|x| x["stream"] == "queries")
        .expect("queries");
    assert_eq!(queries["length"], 5);
    assert_eq!(queries["dead_letters"], 1);
    assert_eq!(queries["groups"][0]["name"], "decay");
    assert_eq!(queries["groups"][0]["pending"], 2);
    assert_eq!(queries["groups"][0]["lag"], 3);
    let daemons = s["daemons"].as_array().expect("daemons");
    let a = daemons
        .iter()
        .find(|d| d["instance"] == "decay-a")
        .expect("decay-a");
    assert_eq!(a["alive"], true);
    assert_eq!(a["kind"], "decay");
    let old = daemons
        .iter()
        .find(|d| d["instance"] == "ghost-old")
        .expect("ghost-old");
    assert_eq!(old["alive"], false);
    assert!(s["redis"]["used_memory"].as_u64().unwrap_or(0) > 0);
    assert!(
        s["redis"]["version"]
            .as_str()
            .unwrap_or("")
            .starts_with('7')
    );
    // 8 tick partitions, 4 other streams, 8 entity partitions and entity-changes by default.
    assert_eq!(s["streams"].as_array().map(Vec::len), Some(21));

    assert_eq!(queries["groups"][0]["caught_up"], false);
    // An empty stream's group: lag 0, caught up (not null).
    let e = keys.stream(StreamName::EntityChanges);
    let _: Value = client
        .xgroup_create(&e, "archive", "$", true)
        .await
        .expect("group on an empty stream");

    // Partitions: 1 has two ticks, one applied; 2 is empty and unowned; 3 is fully applied.
    let t1 = keys.stream(StreamName::Ticks(1));
    let first: String = client
        .xadd(&t1, false, None, "*", vec![("type", "tick")])
        .await
        .expect("xadd");
    let _: String = client
        .xadd(&t1, false, None, "*", vec![("type", "tick")])
        .await
        .expect("xadd");
    let t3 = keys.stream(StreamName::Ticks(3));
    let only: String = client
        .xadd(&t3, false, None, "*", vec![("type", "tick")])
        .await
        .expect("xadd");
    for (p, id) in [(1, &first), (3, &only)] {
        let _: () = client
            .hset(
                keys.partition_checkpoint(p),
                vec![
                    (Keys::CHECKPOINT_LAST_ID, id.as_str()),
                    (Keys::CHECKPOINT_CONSUMED, "1"),
                ],
            )
            .await
            .expect("checkpoint");
    }
    // Entity partition 2: two updates, one applied, owned by an entity instance.
    let e2 = StreamName::EntityPart(2);
    let applied: String = client
        .xadd(
            keys.stream(e2),
            false,
            None,
            "*",
            vec![("type", "entity_update")],
        )
        .await
        .expect("xadd");
    let _: String = client
        .xadd(
            keys.stream(e2),
            false,
            None,
            "*",
            vec![("type", "entity_update")],
        )
        .await
        .expect("xadd");
    let _: () = client
        .hset(
            keys.checkpoint(e2),
            vec![
                (Keys::CHECKPOINT_LAST_ID, applied.as_str()),
                (Keys::CHECKPOINT_CONSUMED, "1"),
            ],
        )
        .await
        .expect("checkpoint");
    let _: () = client
        .set(keys.lease(e2), "entity-h-2-fedcba#7", None, None, false)
        .await
        .expect("lease");
    let _: () = client
        .set(
            keys.partition_lease(1),
            "feynman-h-1-abcdef",
            None,
            None,
            false,
        )
        .await
        .expect("lease");
    let out = kitbash(
        &["status", "--json", "--namespace", &ns],
        &[("KITBASH__REDIS__URL", &server.url())],
    );
    let s: serde_json::Value = serde_json::from_slice(&out.stdout).expect("one JSON object");
    let stream = |name: &str| {
        s["streams"]
            .as_array()
            .and_then(|a| a.iter().find(|x| x["stream"] == name))
            .cloned()
            .unwrap_or_default()
    };
    let changes = stream("entity-changes");
    assert_eq!(changes["groups"][0]["lag"], 0, "{changes}");
    assert_eq!(changes["groups"][0]["caught_up"], true, "{changes}");
    let e2 = stream("entity:2");
    assert_eq!(e2["partition"]["worker"], "entity", "{e2}");
    assert_eq!(e2["partition"]["lag"], 1, "{e2}");
    assert_eq!(e2["partition"]["caught_up"], false, "{e2}");
    assert_eq!(e2["partition"]["owner"], "entity-h-2-fedcba", "{e2}");
    assert_eq!(stream("entity:5")["partition"]["lag"], 0);
    assert_eq!(stream("ticks:1")["partition"]["worker"], "feynman");
    let p1 = stream("ticks:1");
    assert_eq!(p1["groups"], serde_json::json!([]), "no fake group: {p1}");
    assert_eq!(p1["partition"]["lag"], 1, "{p1}");
    assert_eq!(p1["partition"]["caught_up"], false, "{p1}");
    assert_eq!(p1["partition"]["owner"], "feynman-h-1-abcdef", "{p1}");
    assert_eq!(p1["partition"]["position"], first.as_str(), "{p1}");
    let p2 = stream("ticks:2");
    assert_eq!(p2["partition"]["lag"], 0, "{p2}");
    assert_eq!(p2["partition"]["caught_up"], true, "{p2}");
    assert!(p2["partition"]["owner"].is_null(), "{p2}");
    let p3 = stream("ticks:3");
    assert_eq!(p3["partition"]["lag"], 0, "{p3}");
    assert_eq!(p3["partition"]["caught_up"], true, "{p3}");

    let table = kitbash(
        &["status", "--namespace", &ns],
        &[("KITBASH__REDIS__URL", &server.url())],
    );
    let text = String::from_utf8_lossy(&table.stdout);
    let row: Vec<&str> = text
        .lines()
        .find(|l| l.trim_start().starts_with("queries"))
        .map(|l| l.split_whitespace().collect())
        .unwrap_or_default();
    // queries: length 5, rate unknown, lag 3, pending 2, dead 1, read by decay.
    assert_eq!(row, ["queries", "5", "-", "3", "2", "1", "decay"], "{text}");
    assert!(text.contains("TICK PARTITIONS"), "{text}");
    assert!(text.contains("ENTITY PARTITIONS"), "{text}");
    assert!(
        text.lines()
            .any(|l| l.trim_start().starts_with("entity ×8") && l.contains("entity by partition")),
        "{text}"
    );
    assert!(
        text.lines()
            .any(|l| l.contains("p1") && l.contains("abcdef") && l.contains("lag 1")),
        "{text}"
    );
    let _ = client.quit().await;
}

#[test]
fn a_bad_config_exits_64_naming_the_key() {
    let out = kitbash(&["status"], &[("KITBASH__CONSUMER__BATCH", "lots")]);
    assert_eq!(out.status.code(), Some(64));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("consumer.batch"), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "one line: {err}");
}

#[test]
fn unreachable_redis_is_a_clear_error() {
    let out = kitbash(
        &["status"],
        &[("KITBASH__REDIS__URL", "redis://127.0.0.1:1")],
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("cannot reach Redis at redis://127.0.0.1:1")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_reports_the_reflex_path_in_either_layout() {
    use kitbash_client::reflex::Reflex;
    use kitbash_schema::reflex::Layout;
    for layout in [Layout::Seed, Layout::Compact] {
        let server = RedisServer::start().expect("redis");
        let ns = kitbash_testkit::namespace();
        let keys = Keys::new(Namespace::new(ns.clone()).expect("ns"));
        let mut cfg = kitbash_runtime::Config::default();
        cfg.redis.url = server.url();
        cfg.redis.namespace = ns.clone();
        cfg.admin.listen = String::new();
        cfg.consumer.block_ms = 20;
        cfg.reflex.layout = layout;
        let client =
            kitbash_runtime::redis::connect_client(&cfg.redis, std::time::Duration::from_secs(5))
                .await
                .expect("connect");
        let reflex =
            Reflex::new(client.clone(), keys.clone(), 0.9).with_layout(layout, cfg.reflex.buckets);
        reflex.hat_init().await.expect("hats");
        let (signals, _) = kitbash_runtime::shutdown::manual();
        let stop = signals.shutdown.clone();
        let decay = tokio::spawn(kitbash_decay::run(cfg.clone(), signals));
        let producer = kitbash_client::Producer::new(client.clone(), keys.clone(), 1);
        // Six hits make one query hot; one hit leaves another cold.
        for text in [
            "hot one", "hot one", "hot one", "hot one", "hot one", "hot one", "cold",
        ] {
            reflex
                .record_hit(&producer, text, &[1], Some(1.0))
                .await
                .expect("hit");
        }
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        loop {
            let n: Option<u64> = client.get(keys.metrics_queries_count()).await.expect("get");
            if n == Some(7) {
                break;
            }
            assert!(std::time::Instant::now() < deadline, "hits not applied");
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        let out = kitbash(
            &["status", "--json"],
            &[
                ("KITBASH__REDIS__URL", &server.url()),
                ("KITBASH__REDIS__NAMESPACE", &ns),
            ],
        );
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
        let r = &v["reflex"];
        let want_layout = match layout {
            Layout::Seed => "seed".to_owned(),
            Layout::Compact => format!("compact/{}", cfg.reflex.buckets),
        };
        assert_eq!(r["layout"], want_layout.as_str(), "{v}");
        assert_eq!(r["hot"], 1, "{layout:?}: {r}");
        assert_eq!(r["hat"], "analytical", "{r}");
        // The human report says the same in one line.
        let out = kitbash(
            &["status"],
            &[
                ("KITBASH__REDIS__URL", &server.url()),
                ("KITBASH__REDIS__NAMESPACE", &ns),
            ],
        );
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            text.lines().any(|l| l.starts_with("REFLEX")
                && l.contains(&want_layout)
                && l.contains("1 hot")),
            "{text}"
        );
        stop.cancel();
        decay.await.expect("join").expect("run");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_letter_stream_above_its_alarm_is_a_warning_naming_it_its_length_and_the_threshold()
{
    let server = RedisServer::start().expect("redis");
    let ns = kitbash_testkit::namespace();
    let keys = Keys::new(Namespace::new(ns.clone()).expect("ns"));
    let client = Client::new(
        fred::types::config::Config::from_url(&server.url()).expect("url"),
        None,
        None,
        None,
    );
    client.init().await.expect("connect");
    // crossings: 3 dead letters, above an alarm at 2; queries: 2, not above it.
    for (s, n) in [(StreamName::Crossings, 3), (StreamName::Queries, 2)] {
        for _ in 0..n {
            let _: String = client
                .xadd(
                    keys.dead_letter(s),
                    false,
                    None,
                    "*",
                    vec![("reason", "bad")],
                )
                .await
                .expect("dead");
        }
    }
    let env = [
        ("KITBASH__REDIS__URL", server.url()),
        ("KITBASH__CONSUMER__DEAD_LETTER_ALARM", "2".to_owned()),
    ];
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let out = kitbash(&["status", "--json", "--namespace", &ns], &env);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let s: serde_json::Value = serde_json::from_slice(&out.stdout).expect("one JSON object");
    let dead = keys.dead_letter(StreamName::Crossings);
    assert_eq!(
        s["dead_letter_alarms"],
        serde_json::json!([{"stream": "crossings", "key": dead, "length": 3, "threshold": 2}])
    );
    let out = kitbash(&["status", "--namespace", &ns], &env);
    assert!(out.status.success());
    // The line may be wrapped to the terminal's width.
    let text = String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ");
    assert_eq!(text.matches("WARNING").count(), 1, "{text}");
    assert!(
        text.contains(&format!(
            "WARNING dead letters: {dead} holds 3 entries (stream crossings), above \
             consumer.dead_letter_alarm = 2"
        )),
        "{text}"
    );
    // Within the alarm: no warning.
    let within = [env[0]];
    let out = kitbash(&["status", "--namespace", &ns], &within);
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(!text.contains("WARNING"), "{text}");
}

/// Each stream's trim floor and what holds it: ghost's pending entry on crossings, which the
/// archive trims (it holds the claim, and its last trim recorded what it had archived); decay's
/// missing group on queries, which decay trims by its bound while no archive runs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_shows_each_streams_trim_floor_what_holds_it_and_who_trims_it() {
    let server = RedisServer::start().expect("redis");
    let ns = kitbash_testkit::namespace();
    let keys = Keys::new(Namespace::new(ns.clone()).expect("ns"));
    let client = Client::new(
        fred::types::config::Config::from_url(&server.url()).expect("url"),
        None,
        None,
        None,
    );
    client.init().await.expect("connect");
    let (c, q) = (
        keys.stream(StreamName::Crossings),
        keys.stream(StreamName::Queries),
    );
    let mut ids = Vec::new();
    for i in 0..10 {
        ids.push(
            client
                .xadd::<String, _, _, _, _>(&c, false, None, "*", vec![("n", i.to_string())])
                .await
                .expect("xadd"),
        );
        let _: String = client
            .xadd(&q, false, None, "*", vec![("n", i.to_string())])
            .await
            .expect("xadd");
    }
    // ghost was delivered 6 crossings and acknowledged the first 3: entry 3 is pending.
    let _: Value = client
        .xgroup_create(&c, "ghost", "0", false)
        .await
        .expect("group");
    let _: Value = client
        .xreadgroup("ghost", "g", Some(6), None, false, &c, ">")
        .await
        .expect("read");
    let _: i64 = client
        .xack(&c, "ghost", ids[..3].to_vec())
        .await
        .expect("ack");
    // The archive holds crossings' trim claim and has archived all 10.
    kitbash_runtime::trim::claim(
        &client,
        &keys.trim_claim(StreamName::Crossings),
        "a#1",
        60_000,
    )
    .await
    .expect("claim");
    let archived = kitbash_runtime::trim::successor(&ids[9]);
    let _: () = client
        .hset(
            keys.trim_claim(StreamName::Crossings),
            (Keys::TRIM_ARCHIVED, archived.as_str()),
        )
        .await
        .expect("archived");
    let env = [
        ("KITBASH__REDIS__URL", server.url()),
        ("KITBASH__ARCHIVE__RETENTION_MS", "0".to_owned()),
    ];
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let out = kitbash(&["status", "--json", "--namespace", &ns], &env);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let s: serde_json::Value = serde_json::from_slice(&out.stdout).expect("one JSON object");
    let stream = |name: &str| {
        s["streams"]
            .as_array()
            .expect("streams")
            .iter()
            .find(|x| x["stream"] == name)
            .cloned()
            .expect("stream")
    };
    let crossings = stream("crossings");
    assert_eq!(crossings["trim"]["by"], "archive");
    assert_eq!(crossings["trim"]["floor"], ids[3].as_str());
    assert_eq!(crossings["trim"]["held_by"], "group ghost (pending)");
    let queries = stream("queries");
    assert_eq!(queries["trim"]["by"], "decay");
    assert_eq!(queries["trim"]["by_key"], "decay.queries_stream_max");
    assert_eq!(queries["trim"]["archive_absent"], true);
    assert_eq!(queries["trim"]["floor"], "0-0");
    assert_eq!(queries["trim"]["held_by"], "group decay missing");
    let out = kitbash(&["status", "--namespace", &ns], &env);
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    // The TRIM block, its lines wrapped to the terminal's width and joined again.
    let block = text
        .lines()
        .skip_while(|l| !l.starts_with("TRIM"))
        .take_while(|l| l.starts_with("TRIM") || l.starts_with("  "))
        .collect::<Vec<_>>()
        .join(" ")
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ");
    assert!(
        block.contains(&format!(
            "crossings floor {} held by group ghost (pending) · trimmed by archive",
            ids[3]
        )),
        "{block}"
    );
    assert!(
        block.contains(
            "queries floor 0-0 held by group decay missing · trimmed by decay by \
             decay.queries_stream_max (the archive is not trimming it)"
        ),
        "{block}"
    );
}
