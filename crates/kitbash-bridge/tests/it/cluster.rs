//! The bridge on a 3-master Redis Cluster (issue 19): two instances in-process share each
//! stream's epoch (its hash sits in the stream's slot, `kitbash:bridge:epoch:{physics}`),
//! publish live entries of the physics and entity-changes streams (different slots) with the
//! offsets of their ids, recover a client that comes back on the other instance, refuse a
//! recovery whose history was trimmed, and publish the fleet view and the hat (keys of many
//! slots, read one `GET` each); then the real binary does the same exchange and stops on SIGTERM.

use kitbash_schema::bridge::offset_of;
use kitbash_testkit::RedisCluster;
use kitbash_testkit::support::{daemon_command, free_local_addr, signal, wait_exit};
use serde_json::json;

use super::*;

fn offsets(s: &Json) -> Vec<u64> {
    s["publications"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|p| p["offset"].as_u64().unwrap_or(0))
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_bridges_on_a_redis_cluster_publish_recover_and_agree_on_epochs() {
    let cluster = RedisCluster::start().expect("cluster");
    let url = cluster.cluster_url();
    let ns = kitbash_testkit::namespace();
    // A cluster's keys: the reflex path's (the hat) in the crossings stream's slot.
    let keys = ns_keys(&ns).with_reflex_slot(true);
    let c = client(&url).await;
    let a = Bridge::start(config(&url, &ns, free_local_addr())).await;
    let b = Bridge::start(config(&url, &ns, free_local_addr())).await;

    let mut wa = Ws::connected(a.addr).await;
    let mut wb = Ws::connected(b.addr).await;
    let pa = subscribe(&mut wa, 2, json!({"channel": "physics:SPY"})).await;
    let pb = subscribe(&mut wb, 2, json!({"channel": "physics:SPY"})).await;
    let ca = subscribe(&mut wa, 3, json!({"channel": "quantum:status"})).await;
    let cb = subscribe(&mut wb, 3, json!({"channel": "quantum:status"})).await;
    let physics_epoch = pa["epoch"].as_str().expect("epoch").to_owned();
    let changes_epoch = ca["epoch"].as_str().expect("epoch").to_owned();
    assert_eq!(
        pa["epoch"], pb["epoch"],
        "one physics epoch, whichever instance"
    );
    assert_eq!(ca["epoch"], cb["epoch"], "one entity-changes epoch");
    let stored: Option<String> = c
        .hget(
            keys.bridge_epoch(StreamName::Physics),
            kitbash_schema::bridge::epoch::EPOCH,
        )
        .await
        .expect("hget");
    assert_eq!(stored.as_deref(), Some(physics_epoch.as_str()));

    // Live: both instances publish the same entries with the same offsets.
    let p1 = add_physics(&c, &keys, "SPY", 500.0).await;
    let d1 = add_change(&c, &keys, "quantum:status", 1, r#"{"phase":"run"}"#).await;
    for w in [&mut wa, &mut wb] {
        let (o, data) = w.next_pub("physics:SPY").await;
        assert_eq!(Some(o), offset_of(&p1));
        assert_eq!(data["price"], 500.0);
        let (o, data) = w.next_pub("quantum:status").await;
        assert_eq!(Some(o), offset_of(&d1));
        assert_eq!(data["data"], json!({"phase": "run"}));
    }
    let (seen_p, seen_c) = (offset_of(&p1).unwrap_or(0), offset_of(&d1).unwrap_or(0));
    drop(wa);

    // Missed while away; B reads them (so they are before its subscriptions' positions).
    let mut missed_p = Vec::new();
    let mut missed_c = Vec::new();
    for i in 0..3u32 {
        add_physics(&c, &keys, "QQQ", 1.0).await;
        missed_p.push(add_physics(&c, &keys, "SPY", 501.0 + f64::from(i)).await);
        missed_c.push(
            add_change(
                &c,
                &keys,
                "quantum:status",
                u64::from(i) + 2,
                &format!("{{\"n\":{i}}}"),
            )
            .await,
        );
    }
    for id in &missed_p {
        assert_eq!(
            wb.next_pub("physics:SPY").await.0,
            offset_of(id).unwrap_or(0)
        );
    }
    for id in &missed_c {
        assert_eq!(
            wb.next_pub("quantum:status").await.0,
            offset_of(id).unwrap_or(0)
        );
    }
    // The client of A comes back on B with its offsets and epochs: exactly what it missed.
    let mut back = Ws::connected(b.addr).await;
    let s = subscribe(
        &mut back,
        2,
        json!({"channel": "physics:SPY", "recover": true, "offset": seen_p, "epoch": physics_epoch}),
    )
    .await;
    assert_eq!(s["recovered"], true, "{s}");
    assert_eq!(
        offsets(&s),
        missed_p
            .iter()
            .filter_map(|i| offset_of(i))
            .collect::<Vec<_>>()
    );
    let s = subscribe(
        &mut back,
        3,
        json!({"channel": "quantum:status", "recover": true, "offset": seen_c, "epoch": changes_epoch}),
    )
    .await;
    assert_eq!(s["recovered"], true, "{s}");
    assert_eq!(
        offsets(&s),
        missed_c
            .iter()
            .filter_map(|i| offset_of(i))
            .collect::<Vec<_>>()
    );
    // Live after the seam, no repeat.
    let next = add_physics(&c, &keys, "SPY", 9.0).await;
    assert_eq!(
        back.next_pub("physics:SPY").await.0,
        offset_of(&next).unwrap_or(0)
    );

    // History trimmed past the client's position: told, not silently skipped.
    let _: i64 = c
        .xtrim(
            keys.stream(StreamName::Physics),
            ("MINID", "=", next.as_str()),
        )
        .await
        .expect("xtrim");
    let mut w = Ws::connected(a.addr).await;
    let s = subscribe(
        &mut w,
        2,
        json!({"channel": "physics:SPY", "recover": true, "offset": seen_p, "epoch": physics_epoch}),
    )
    .await;
    assert!(!s["recovered"].as_bool().unwrap_or(false), "{s}");
    assert_eq!(s["epoch"], physics_epoch.as_str(), "a trim keeps the epoch");

    // The fleet view and the hat read keys of many slots.
    eventually("a fleet view with both bridges is published", || async {
        let mut w = Ws::connected(b.addr).await;
        let f = subscribe(&mut w, 2, json!({"channel": "fleet"})).await;
        f["publications"][0]["data"]["daemons"]
            .as_array()
            .is_some_and(|d| {
                d.iter()
                    .filter(|i| i["kind"] == "bridge" && i["alive"] == true)
                    .count()
                    == 2
            })
    })
    .await;
    let _: () = c
        .set(keys.hat_current(), "creative", None, None, false)
        .await
        .expect("set");
    let mut w = Ws::connected(a.addr).await;
    let s = subscribe(&mut w, 2, json!({"channel": "reflex:hat"})).await;
    let mut hat = s["publications"][0]["data"].clone();
    while hat["hat"] != "creative" {
        hat = w.next_pub("reflex:hat").await.1;
    }
    a.stop().await;
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_binary_on_a_redis_cluster_publishes_recovers_and_stops_on_sigterm() {
    let cluster = RedisCluster::start().expect("cluster");
    let url = cluster.cluster_url();
    let ns = kitbash_testkit::namespace();
    // A cluster's keys: the reflex path's (the hat) in the crossings stream's slot.
    let keys = ns_keys(&ns).with_reflex_slot(true);
    let c = client(&url).await;
    let addr = free_local_addr();
    let mut child = daemon_command(env!("CARGO_BIN_EXE_kitbash-bridge"), &url, &ns)
        .env("KITBASH__BRIDGE__LISTEN", addr.to_string())
        .env("KITBASH__BRIDGE__EPOCH_CHECK_MS", "200")
        .spawn()
        .expect("spawn");
    eventually("the binary answers subscribes", || async {
        let Ok(mut w) = Ws::try_open(addr).await else {
            return false;
        };
        w.send("{\"id\":1,\"connect\":{}}\n{\"id\":2,\"subscribe\":{\"channel\":\"physics:SPY\"}}\n{\"id\":3,\"subscribe\":{\"channel\":\"changes\"}}")
            .await;
        let mut ok = true;
        for id in [1, 2, 3] {
            ok &= reply(&mut w, id).await.get("error").is_none();
        }
        ok
    })
    .await;
    let mut ws = Ws::connected(addr).await;
    let s = subscribe(&mut ws, 2, json!({"channel": "changes"})).await;
    let epoch = s["epoch"].clone();
    let first = add_change(&c, &keys, "entity:claude:identity", 1, r#"{"n":1}"#).await;
    let (seen, _) = ws.next_pub("changes").await;
    assert_eq!(Some(seen), offset_of(&first));
    drop(ws);
    let mut watcher = Ws::connected(addr).await;
    subscribe(&mut watcher, 2, json!({"channel": "changes"})).await;
    let mut missed = Vec::new();
    for v in 2..=3 {
        missed.push(add_change(&c, &keys, "entity:claude:identity", v, r#"{"n":2}"#).await);
    }
    for id in &missed {
        assert_eq!(
            watcher.next_pub("changes").await.0,
            offset_of(id).unwrap_or(0)
        );
    }
    let mut ws = Ws::connected(addr).await;
    let s = subscribe(
        &mut ws,
        2,
        json!({"channel": "changes", "recover": true, "offset": seen, "epoch": epoch}),
    )
    .await;
    assert_eq!(s["recovered"], true, "{s}");
    assert_eq!(
        offsets(&s),
        missed
            .iter()
            .filter_map(|i| offset_of(i))
            .collect::<Vec<_>>()
    );
    signal(&child, "-TERM");
    assert_eq!(ws.close_code().await, 3001);
    let status = wait_exit(&mut child).await;
    assert!(status.success(), "exit {status:?}");
}
