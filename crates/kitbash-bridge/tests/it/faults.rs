//! What goes wrong: tokens (missing, invalid, expired, wrong channel), bad frames, a slow
//! client, a Redis restart mid-stream, the connection limit, an origin, and SIGTERM of the real
//! binary.

use std::time::Duration;

use jsonwebtoken::{EncodingKey, Header, encode};
use kitbash_schema::bridge::offset_of;
use kitbash_testkit::RedisServer;
use kitbash_testkit::server::Appendfsync;
use kitbash_testkit::support::{daemon_command, free_local_addr, signal, wait_exit};
use serde_json::{Value as Json, json};

use super::*;

fn token(claims: Json) -> String {
    encode(
        &Header::default(),
        &claims,
        &EncodingKey::from_secret(b"test-secret"),
    )
    .expect("jwt")
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_are_answered_as_centrifugo_does() {
    let server = RedisServer::start().expect("redis");
    let ns = kitbash_testkit::namespace();
    let mut cfg = config(&server.url(), &ns, free_local_addr());
    cfg.bridge.token_secret = "test-secret".into();
    cfg.bridge.anonymous = false;
    cfg.bridge.public = vec!["physics".into()];
    let addr = cfg.bridge.listen.parse().expect("addr");
    let (signals, _) = kitbash_runtime::shutdown::manual();
    let stop = signals.shutdown.clone();
    let task = tokio::spawn(kitbash_bridge::run(cfg, signals));
    eventually("listening", || async { Ws::try_open(addr).await.is_ok() }).await;
    eventually("the feeds have their positions", || async {
        let mut w = Ws::open(addr).await;
        w.send(&json!({"id":1,"connect":{"token": token(json!({"sub":"ann"}))}}).to_string())
            .await;
        w.recv().await;
        w.send(r#"{"id":2,"subscribe":{"channel":"physics"}}"#)
            .await;
        w.recv().await.get("subscribe").is_some()
    })
    .await;

    // Missing: 101.
    let mut w = Ws::open(addr).await;
    w.send(r#"{"id":1,"connect":{}}"#).await;
    assert_eq!(reply(&mut w, 1).await["error"]["code"], 101);
    // Expired: 109 (the SDK fetches a new token).
    let mut w = Ws::open(addr).await;
    w.send(
        &json!({"id":1,"connect":{"token": token(json!({"sub":"ann","exp": now() - 10}))}})
            .to_string(),
    )
    .await;
    assert_eq!(reply(&mut w, 1).await["error"]["code"], 109);
    // Invalid (another secret): closed with 3500.
    let bad = encode(
        &Header::default(),
        &json!({"sub":"ann"}),
        &EncodingKey::from_secret(b"other"),
    )
    .expect("jwt");
    let mut w = Ws::open(addr).await;
    w.send(&json!({"id":1,"connect":{"token": bad}}).to_string())
        .await;
    assert_eq!(w.close_code().await, 3500);
    // Valid with exp: expires + ttl; refresh works.
    let mut w = Ws::open(addr).await;
    w.send(
        &json!({"id":1,"connect":{"token": token(json!({"sub":"ann","exp": now() + 60}))}})
            .to_string(),
    )
    .await;
    let r = reply(&mut w, 1).await;
    assert_eq!(r["connect"]["expires"], true, "{r}");
    assert!(
        r["connect"]["ttl"]
            .as_u64()
            .is_some_and(|t| t > 0 && t <= 60)
    );
    w.send(
        &json!({"id":2,"refresh":{"token": token(json!({"sub":"ann","exp": now() + 120}))}})
            .to_string(),
    )
    .await;
    assert!(
        reply(&mut w, 2).await["refresh"]["ttl"]
            .as_u64()
            .is_some_and(|t| t > 60)
    );
    // A public family needs no subscription token; the others do.
    subscribe(&mut w, 3, json!({"channel": "physics:SPY"})).await;
    w.send(r#"{"id":4,"subscribe":{"channel":"fleet"}}"#).await;
    assert_eq!(reply(&mut w, 4).await["error"]["code"], 103, "no token");
    w.send(&json!({"id":5,"subscribe":{"channel":"fleet","token": token(json!({"sub":"ann","channel":"changes"}))}}).to_string()).await;
    assert_eq!(
        reply(&mut w, 5).await["error"]["code"],
        103,
        "wrong channel"
    );
    w.send(&json!({"id":6,"subscribe":{"channel":"fleet","token": token(json!({"sub":"bo","channel":"fleet"}))}}).to_string()).await;
    assert_eq!(
        reply(&mut w, 6).await["error"]["code"],
        103,
        "another user's"
    );
    w.send(&json!({"id":7,"subscribe":{"channel":"fleet","token": token(json!({"sub":"ann","channel":"fleet","exp": now() - 1}))}}).to_string()).await;
    assert_eq!(reply(&mut w, 7).await["error"]["code"], 109, "expired");
    w.send(&json!({"id":8,"subscribe":{"channel":"fleet","token": token(json!({"sub":"ann","channel":"fleet","exp": now() + 60}))}}).to_string()).await;
    let r = reply(&mut w, 8).await;
    assert_eq!(r["subscribe"]["expires"], true, "{r}");
    stop.cancel();
    task.await.expect("join").expect("run");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_frames_get_their_close_codes_and_the_server_carries_on() {
    let server = RedisServer::start().expect("redis");
    let ns = kitbash_testkit::namespace();
    let mut cfg = config(&server.url(), &ns, free_local_addr());
    cfg.bridge.max_frame_bytes = 4096;
    cfg.bridge.max_connections = 4;
    cfg.bridge.commands_per_s = 5;
    let b = Bridge::start(cfg).await;
    // Before connect: 3501.
    let mut w = Ws::open(b.addr).await;
    w.send(r#"{"id":1,"subscribe":{"channel":"physics"}}"#)
        .await;
    assert_eq!(w.close_code().await, 3501);
    // Not JSON: 3501.
    let mut w = Ws::connected(b.addr).await;
    w.send("{not json").await;
    assert_eq!(w.close_code().await, 3501);
    // Binary: 3501.
    let mut w = Ws::connected(b.addr).await;
    w.ws.send(Message::binary(vec![1u8, 2, 3]))
        .await
        .expect("send");
    assert_eq!(w.close_code().await, 3501);
    // Oversized: closed.
    let mut w = Ws::connected(b.addr).await;
    let big = format!(
        r#"{{"id":2,"subscribe":{{"channel":"{}"}}}}"#,
        "x".repeat(8000)
    );
    let _ = w.ws.send(Message::text(big)).await;
    let code = w.close_code().await;
    assert!(
        code == 3501 || code == 1009,
        "oversized frame closed with {code}"
    );
    // Too many commands: 111, the connection stays.
    let mut w = Ws::connected(b.addr).await;
    let mut codes = Vec::new();
    for id in 2..12 {
        w.send(&format!(r#"{{"id":{id},"frobnicate":{{}}}}"#)).await;
        codes.push(
            reply(&mut w, id).await["error"]["code"]
                .as_u64()
                .unwrap_or(0),
        );
    }
    assert!(codes.contains(&111), "{codes:?}");
    assert!(codes.contains(&104), "{codes:?}");
    // A foreign origin is refused; none or our own is fine.
    let req = tokio_tungstenite::tungstenite::http::Request::builder()
        .uri(format!("ws://{}/connection/websocket", b.addr))
        .header("Host", b.addr.to_string())
        .header("Origin", "http://evil.example")
        .header("Connection", "Upgrade")
        .header("Upgrade", "websocket")
        .header("Sec-WebSocket-Version", "13")
        .header("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ==")
        .body(())
        .expect("req");
    assert!(
        tokio_tungstenite::connect_async(req).await.is_err(),
        "foreign origin refused"
    );
    // Connection limit (4): connections past it are closed with 3504. (Connections the test
    // dropped may still count for a moment, so fewer than 4 may open first.)
    drop(w);
    let mut keep = Vec::new();
    let mut refused = false;
    for _ in 0..8 {
        let mut w = Ws::open(b.addr).await;
        w.send(r#"{"id":1,"connect":{}}"#).await;
        if w.recv().await == Json::Null {
            assert_eq!(w.closed.as_ref().map(|c| c.0), Some(3504));
            refused = true;
            break;
        }
        keep.push(w);
    }
    assert!(
        refused && keep.len() <= 4,
        "refused past the limit, after {} connections",
        keep.len()
    );
    drop(keep);
    // And the server goes on.
    eventually("a connection is accepted again", || async {
        let mut w = Ws::open(b.addr).await;
        w.send(r#"{"id":1,"connect":{}}"#).await;
        w.recv().await != Json::Null
    })
    .await;
    b.stop().await;
}

/// The read buffer (`[bridge] read_buffer_bytes`) is small to keep idle clients cheap; a frame
/// many times its size still arrives whole, and so does the next one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn frames_larger_than_the_read_buffer_arrive_whole() {
    let server = RedisServer::start().expect("redis");
    let ns = kitbash_testkit::namespace();
    let mut cfg = config(&server.url(), &ns, free_local_addr());
    cfg.bridge.read_buffer_bytes = 64;
    // 121 commands at once: under the rate limit.
    cfg.bridge.commands_per_s = 1000;
    let b = Bridge::start(cfg).await;
    let mut w = Ws::connected(b.addr).await;
    let subscribes: Vec<String> = (0..60)
        .map(|i| {
            format!(
                r#"{{"id":{},"subscribe":{{"channel":"physics:S{i}"}}}}"#,
                i + 2
            )
        })
        .collect();
    let frame = subscribes.join("\n");
    assert!(frame.len() > 40 * 64, "{} bytes", frame.len());
    w.send(&frame).await;
    for i in 0..60 {
        let r = reply(&mut w, i + 2).await;
        assert!(r.get("subscribe").is_some(), "{r}");
    }
    let unsubscribes: Vec<String> = (0..60)
        .map(|i| {
            format!(
                r#"{{"id":{},"unsubscribe":{{"channel":"physics:S{i}"}}}}"#,
                i + 100
            )
        })
        .collect();
    w.send(&unsubscribes.join("\n")).await;
    for i in 0..60 {
        let r = reply(&mut w, i + 100).await;
        assert!(r.get("unsubscribe").is_some(), "{r}");
    }
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_client_is_closed_while_a_fast_one_gets_everything() {
    let server = RedisServer::start().expect("redis");
    let ns = kitbash_testkit::namespace();
    let keys = ns_keys(&ns);
    let c = client(&server.url()).await;
    let mut cfg = config(&server.url(), &ns, free_local_addr());
    cfg.bridge.max_queue_bytes = 256 << 10;
    let b = Bridge::start(cfg).await;
    let mut fast = Ws::connected(b.addr).await;
    subscribe(&mut fast, 2, json!({"channel": "changes"})).await;
    let mut slow = Ws::connected(b.addr).await;
    subscribe(&mut slow, 2, json!({"channel": "changes"})).await;
    // ~16 MB of changes, past the socket buffers and the slow client's 256 KiB queue. The slow
    // client reads nothing; the fast one reads everything, and the writer never gets more than
    // 16 changes (64 KB) ahead of it — so under any load the fast client's queue stays far
    // below the limit and only the slow one can pass it.
    let doc = format!(r#"{{"blob":"{}"}}"#, "z".repeat(4_000));
    let n = 4000u64;
    let (read_tx, mut read_rx) = tokio::sync::watch::channel(0u64);
    let writer = {
        let (c, keys, doc) = (c.clone(), keys.clone(), doc.clone());
        tokio::spawn(async move {
            let mut last = String::new();
            for v in 1..=n {
                read_rx
                    .wait_for(|read| v <= read + 16)
                    .await
                    .expect("the reader is alive");
                last = add_change(&c, &keys, "quantum:status", v, &doc).await;
            }
            last
        })
    };
    let mut versions = Vec::new();
    while versions.len() < n as usize {
        let (_, d) = fast.next_pub("changes").await;
        versions.push(d["version"].as_u64().unwrap_or(0));
        read_tx.send_replace(versions.len() as u64);
    }
    assert_eq!(
        versions,
        (1..=n).collect::<Vec<_>>(),
        "the fast client got every change in order"
    );
    writer.await.expect("writer");
    assert_eq!(
        slow.close_code().await,
        3008,
        "the slow client is closed with 3008"
    );
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_restart_mid_stream_loses_nothing() {
    let mut server = RedisServer::builder()
        .appendonly(Appendfsync::Always)
        .start()
        .expect("redis");
    let ns = kitbash_testkit::namespace();
    let keys = ns_keys(&ns);
    let c = client(&server.url()).await;
    let b = Bridge::start(config(&server.url(), &ns, free_local_addr())).await;
    let mut ws = Ws::connected(b.addr).await;
    subscribe(&mut ws, 2, json!({"channel": "physics:SPY"})).await;
    let mut want = Vec::new();
    for i in 0..5 {
        want.push(add_physics(&c, &keys, "SPY", f64::from(i)).await);
    }
    server.kill().expect("kill");
    tokio::time::sleep(Duration::from_millis(500)).await;
    server.restart().expect("restart");
    let c = client(&server.url()).await;
    for i in 5..10 {
        want.push(add_physics(&c, &keys, "SPY", f64::from(i)).await);
    }
    let mut got = Vec::new();
    while got.len() < want.len() {
        got.push(ws.next_pub("physics:SPY").await.0);
    }
    assert_eq!(
        got,
        want.iter().filter_map(|i| offset_of(i)).collect::<Vec<_>>(),
        "every entry once, in order"
    );
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_binary_closes_clients_with_3001_on_sigterm() {
    let server = RedisServer::start().expect("redis");
    let ns = kitbash_testkit::namespace();
    let addr = free_local_addr();
    let mut child = daemon_command(env!("CARGO_BIN_EXE_kitbash-bridge"), &server.url(), &ns)
        .env("KITBASH__BRIDGE__LISTEN", addr.to_string())
        .spawn()
        .expect("spawn");
    eventually("the binary listens", || async {
        Ws::try_open(addr).await.is_ok()
    })
    .await;
    let mut ws = Ws::connected(addr).await;
    eventually("subscribed", || async {
        let mut w = Ws::connected(addr).await;
        w.send(r#"{"id":2,"subscribe":{"channel":"physics"}}"#)
            .await;
        reply(&mut w, 2).await.get("subscribe").is_some()
    })
    .await;
    subscribe(&mut ws, 2, json!({"channel": "physics"})).await;
    signal(&child, "-TERM");
    assert_eq!(ws.close_code().await, 3001);
    let status = wait_exit(&mut child).await;
    assert!(status.success(), "exit {status:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_does_not_pong_is_closed_with_3012_and_one_that_does_stays() {
    let server = RedisServer::start().expect("redis");
    let ns = kitbash_testkit::namespace();
    let mut cfg = config(&server.url(), &ns, free_local_addr());
    cfg.bridge.ping_s = 1;
    cfg.bridge.pong_timeout_s = 1;
    let b = Bridge::start(cfg).await;
    let mut silent = Ws::connected(b.addr).await;
    let mut polite = Ws::connected(b.addr).await;
    let mut pings = 0;
    while pings < 4 {
        let msg = tokio::time::timeout(Duration::from_secs(10), polite.ws.next())
            .await
            .expect("a ping within 10 s");
        if let Some(Ok(Message::Text(t))) = msg {
            if t.as_str() == "{}" {
                pings += 1;
                polite.send("{}").await;
            }
        } else {
            panic!("the answering client was closed: {msg:?}");
        }
    }
    assert_eq!(silent.close_code().await, 3012, "no pong");
    subscribe(&mut polite, 2, json!({"channel": "physics"})).await;
    b.stop().await;
}
