//! The bridge end to end against a real redis-server, with a raw WebSocket client speaking
//! Centrifugo's JSON protocol: the exchange, recovery and its refusals, epochs, tokens, bad
//! frames, slow clients, a Redis restart, two instances, and the real binary; the official SDKs
//! are driven in [`sdk`], a Redis Cluster in [`cluster`].

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::Duration;

use fred::prelude::*;
use futures::{SinkExt, StreamExt};
use kitbash_runtime::{CancellationToken, Config};
use kitbash_schema::bridge::offset_of;
use kitbash_schema::messages::{PhysicsRecord, PhysicsVector, Regime, entity_change};
use kitbash_schema::{Envelope, Keys, Namespace, StreamName};
use kitbash_testkit::RedisServer;
use kitbash_testkit::support::{eventually, free_local_addr};
use serde_json::{Value as Json, json};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

mod cluster;
mod dashboard;
mod faults;
mod sdk;

pub fn config(url: &str, ns: &str, listen: SocketAddr) -> Config {
    let mut c = Config::default();
    c.redis.url = url.to_owned();
    c.redis.namespace = ns.to_owned();
    c.admin.listen = String::new();
    c.fleet.heartbeat_ms = 200;
    c.bridge.listen = listen.to_string();
    c.bridge.epoch_check_ms = 200;
    c.bridge.fleet_period_ms = 200;
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

/// A bridge running in-process.
pub struct Bridge {
    pub addr: SocketAddr,
    stop: CancellationToken,
    task: tokio::task::JoinHandle<Result<(), kitbash_runtime::RuntimeError>>,
}

impl Bridge {
    pub async fn start(cfg: Config) -> Bridge {
        let addr: SocketAddr = cfg.bridge.listen.parse().expect("listen");
        let (signals, _) = kitbash_runtime::shutdown::manual();
        let stop = signals.shutdown.clone();
        let task = tokio::spawn(kitbash_bridge::run(cfg, signals));
        let b = Bridge { addr, stop, task };
        // Ready when a subscribe to a stream channel is answered (the feeds have read).
        eventually("bridge answers subscribes", || async {
            let Ok(mut ws) = Ws::try_open(addr).await else { return false };
            ws.send(r#"{"id":1,"connect":{}}"#).await;
            ws.recv().await;
            ws.send("{\"id\":2,\"subscribe\":{\"channel\":\"physics\"}}\n{\"id\":3,\"subscribe\":{\"channel\":\"changes\"}}\n{\"id\":4,\"subscribe\":{\"channel\":\"reflex:crossings\"}}").await;
            let mut ok = true;
            for _ in 0..3 {
                ok &= ws.recv().await.get("subscribe").is_some();
            }
            ok
        })
        .await;
        b
    }

    pub async fn stop(self) {
        self.stop.cancel();
        self.task.await.expect("join").expect("bridge run");
    }
}

/// A raw protocol client.
pub struct Ws {
    ws: WebSocketStream<MaybeTlsStream<TcpStream>>,
    queue: VecDeque<Json>,
    /// Publication pushes [`Ws::next_pub`] read while waiting for another channel's: channels
    /// of different streams are not ordered with each other, so none is dropped.
    stashed: VecDeque<Json>,
    pub closed: Option<(u16, String)>,
}

impl Ws {
    pub async fn try_open(addr: SocketAddr) -> Result<Ws, String> {
        let url = format!("ws://{addr}/connection/websocket");
        let (ws, _) = tokio_tungstenite::connect_async(url)
            .await
            .map_err(|e| e.to_string())?;
        Ok(Ws {
            ws,
            queue: VecDeque::new(),
            stashed: VecDeque::new(),
            closed: None,
        })
    }

    pub async fn open(addr: SocketAddr) -> Ws {
        Ws::try_open(addr).await.expect("websocket")
    }

    /// Opens and connects (anonymous).
    pub async fn connected(addr: SocketAddr) -> Ws {
        let mut ws = Ws::open(addr).await;
        ws.send(r#"{"id":1,"connect":{"name":"test"}}"#).await;
        let r = ws.recv().await;
        assert!(r["connect"]["client"].is_string(), "{r}");
        ws
    }

    pub async fn send(&mut self, text: &str) {
        self.ws.send(Message::text(text)).await.expect("send");
    }

    /// The next JSON object (replies and pushes; server pings `{}` skipped); `Null` once closed.
    pub async fn recv(&mut self) -> Json {
        loop {
            if let Some(v) = self.queue.pop_front() {
                if v.as_object().is_some_and(|o| o.is_empty()) {
                    continue;
                }
                return v;
            }
            if self.closed.is_some() {
                return Json::Null;
            }
            let msg = tokio::time::timeout(Duration::from_secs(15), self.ws.next())
                .await
                .expect("nothing from the bridge within 15 s");
            match msg {
                Some(Ok(Message::Text(t))) => {
                    for line in t.as_str().split('\n') {
                        self.queue
                            .push_back(serde_json::from_str(line).expect("json line"));
                    }
                }
                Some(Ok(Message::Close(f))) => {
                    self.closed = Some(f.map_or((1005, String::new()), |f| {
                        (f.code.into(), f.reason.to_string())
                    }));
                }
                Some(Ok(_)) => {}
                Some(Err(_)) | None => {
                    self.closed.get_or_insert((1006, String::new()));
                }
            }
        }
    }

    /// Reads until the connection closes; its close code.
    pub async fn close_code(&mut self) -> u16 {
        while self.recv().await != Json::Null {}
        self.closed.as_ref().map_or(0, |c| c.0)
    }

    /// The next publication push of `channel`: (offset, data). Other channels' publications
    /// read meanwhile are kept for their own `next_pub`; other messages are skipped.
    pub async fn next_pub(&mut self, channel: &str) -> (u64, Json) {
        let publication = |v: &Json| {
            let p = &v["push"]["pub"];
            (p["offset"].as_u64().unwrap_or(0), p["data"].clone())
        };
        if let Some(i) = self
            .stashed
            .iter()
            .position(|v| v["push"]["channel"] == channel)
            && let Some(v) = self.stashed.remove(i)
        {
            return publication(&v);
        }
        loop {
            let v = self.recv().await;
            assert_ne!(
                v,
                Json::Null,
                "closed while waiting for a publication: {:?}",
                self.closed
            );
            if v["push"].get("pub").is_some() {
                if v["push"]["channel"] == channel {
                    return publication(&v);
                }
                self.stashed.push_back(v);
            }
        }
    }
}

pub fn record(symbol: &str, price: f64) -> PhysicsRecord {
    PhysicsRecord {
        symbol: symbol.into(),
        ts: 1_766_318_400.0,
        price,
        vector: PhysicsVector {
            mass: 1.0,
            momentum: 0.5,
            friction: 0.1,
            entropy: 2.0,
            nash_dist: 0.3,
            regime: Regime::Gaussian,
            alpha_coefficient: 2.5,
        },
        source: "ticks:0/1-0".into(),
    }
}

/// Appends a physics record; its entry id.
pub async fn add_physics(c: &Client, keys: &Keys, symbol: &str, price: f64) -> String {
    let env = Envelope::msgpack(&record(symbol, price)).expect("encode");
    let fields: Vec<(&str, Vec<u8>)> = env.to_fields();
    c.xadd(keys.stream(StreamName::Physics), false, None, "*", fields)
        .await
        .expect("xadd")
}

/// Appends a document change; its entry id.
pub async fn add_change(c: &Client, keys: &Keys, doc: &str, version: u64, data: &str) -> String {
    c.xadd(
        keys.stream(StreamName::EntityChanges),
        false,
        None,
        "*",
        vec![
            (entity_change::KEY, keys.namespace().apply(doc)),
            (entity_change::VERSION, version.to_string()),
            (entity_change::OP, "merge".to_owned()),
            (entity_change::ENTRY, String::new()),
            (entity_change::DATA, data.to_owned()),
        ],
    )
    .await
    .expect("xadd")
}

pub fn ns_keys(ns: &str) -> Keys {
    Keys::new(Namespace::new(ns.to_owned()).expect("ns"))
}

/// Subscribes; the reply's `subscribe` object (panics on an error reply).
pub async fn subscribe(ws: &mut Ws, id: u32, body: Json) -> Json {
    ws.send(&json!({"id": id, "subscribe": body}).to_string())
        .await;
    loop {
        let r = ws.recv().await;
        assert_ne!(
            r,
            Json::Null,
            "closed while subscribing to {body}: {:?}",
            ws.closed
        );
        if r["id"] == id {
            assert!(r.get("error").is_none(), "subscribe {body}: {r}");
            return r["subscribe"].clone();
        }
    }
}

/// The reply with `id`, skipping pushes.
pub async fn reply(ws: &mut Ws, id: u32) -> Json {
    loop {
        let r = ws.recv().await;
        assert_ne!(r, Json::Null, "closed: {:?}", ws.closed);
        if r["id"] == id {
            return r;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publishes_stream_entries_with_offsets_from_their_ids() {
    let server = RedisServer::start().expect("redis");
    let ns = kitbash_testkit::namespace();
    let keys = ns_keys(&ns);
    let c = client(&server.url()).await;
    let b = Bridge::start(config(&server.url(), &ns, free_local_addr())).await;

    // connect and two subscribes in one frame, as centrifuge-js sends them.
    let mut ws = Ws::open(b.addr).await;
    ws.send("{\"id\":1,\"connect\":{\"name\":\"js\"}}\n{\"id\":2,\"subscribe\":{\"channel\":\"physics:SPY\",\"flag\":1}}\n{\"id\":3,\"subscribe\":{\"channel\":\"quantum:status\"}}").await;
    let r1 = ws.recv().await;
    assert_eq!(r1["id"], 1);
    assert_eq!(r1["connect"]["ping"], 25);
    assert_eq!(r1["connect"]["pong"], true);
    let r2 = ws.recv().await;
    assert_eq!(r2["id"], 2, "{r2}");
    let s = &r2["subscribe"];
    assert_eq!(s["recoverable"], true);
    assert_eq!(s["positioned"], true);
    assert!(s["epoch"].as_str().is_some_and(|e| !e.is_empty()), "{s}");
    let r3 = ws.recv().await;
    assert_eq!(r3["id"], 3, "{r3}");
    assert!(r3.get("subscribe").is_some(), "{r3}");

    let id1 = add_physics(&c, &keys, "SPY", 500.0).await;
    let _other = add_physics(&c, &keys, "QQQ", 400.0).await;
    let id2 = add_physics(&c, &keys, "SPY", 501.0).await;
    let doc = add_change(&c, &keys, "quantum:status", 4, r#"{"phase":"run"}"#).await;
    let (o1, d1) = ws.next_pub("physics:SPY").await;
    assert_eq!(Some(o1), offset_of(&id1));
    assert_eq!(d1["id"], id1);
    assert_eq!(d1["symbol"], "SPY");
    assert_eq!(d1["price"], 500.0);
    assert_eq!(d1["vector"]["regime"], "Gaussian");
    let (o2, _) = ws.next_pub("physics:SPY").await;
    assert_eq!(Some(o2), offset_of(&id2), "QQQ is not on physics:SPY");
    let (od, dd) = ws.next_pub("quantum:status").await;
    assert_eq!(Some(od), offset_of(&doc));
    assert_eq!(
        dd,
        json!({"id": doc, "key": "quantum:status", "version": 4, "op": "merge", "data": {"phase": "run"}})
    );

    // A fresh subscriber gets the channel's latest publication in the reply.
    let mut late = Ws::connected(b.addr).await;
    let s = subscribe(&mut late, 2, json!({"channel": "physics:SPY"})).await;
    assert_eq!(s["publications"].as_array().map(Vec::len), Some(1), "{s}");
    assert_eq!(s["publications"][0]["data"]["id"], id2);
    assert!(s["offset"].as_u64() >= offset_of(&id2), "{s}");

    // Methods the bridge refuses, each with its error, and the connection goes on.
    ws.send(r#"{"id":10,"publish":{"channel":"physics:SPY","data":{}}}"#)
        .await;
    assert_eq!(reply(&mut ws, 10).await["error"]["code"], 103);
    ws.send(r#"{"id":11,"history":{"channel":"physics:SPY"}}"#)
        .await;
    assert_eq!(reply(&mut ws, 11).await["error"]["code"], 108);
    ws.send(r#"{"id":12,"frobnicate":{}}"#).await;
    assert_eq!(reply(&mut ws, 12).await["error"]["code"], 104);
    ws.send(r#"{"id":13,"subscribe":{"channel":"no-such-family"}}"#)
        .await;
    assert_eq!(reply(&mut ws, 13).await["error"]["code"], 102);
    ws.send(r#"{"id":14,"subscribe":{"channel":"physics:SPY"}}"#)
        .await;
    assert_eq!(reply(&mut ws, 14).await["error"]["code"], 105);
    ws.send(r#"{"id":15,"unsubscribe":{"channel":"physics:SPY"}}"#)
        .await;
    assert_eq!(
        reply(&mut ws, 15).await,
        json!({"id": 15, "unsubscribe": {}})
    );
    let id3 = add_physics(&c, &keys, "SPY", 502.0).await;
    let doc2 = add_change(&c, &keys, "quantum:status", 5, r#"{"phase":"stop"}"#).await;
    let (od2, _) = ws.next_pub("quantum:status").await;
    assert_eq!(Some(od2), offset_of(&doc2));
    // The unsubscribed channel's publication never came before the later one.
    let (o3, _) = late.next_pub("physics:SPY").await;
    assert_eq!(Some(o3), offset_of(&id3));

    // Fleet and hat: no history, the latest on subscribe.
    let f = subscribe(&mut late, 3, json!({"channel": "fleet"})).await;
    assert_eq!(f.get("recoverable"), None, "{f}");
    eventually("a fleet view is published", || async {
        let mut w = Ws::connected(b.addr).await;
        let f = subscribe(&mut w, 2, json!({"channel": "fleet"})).await;
        f["publications"][0]["data"]["daemons"]
            .as_array()
            .is_some_and(|d| d.iter().any(|i| i["kind"] == "bridge"))
    })
    .await;
    let _: () = c
        .set(keys.hat_current(), "creative", None, None, false)
        .await
        .expect("set");
    let mut w = Ws::connected(b.addr).await;
    // The poller may have read the new hat before this subscribe (then the reply carries it)
    // or after (then a push follows); either way it arrives, and nothing else is waited for.
    let s = subscribe(&mut w, 2, json!({"channel": "reflex:hat"})).await;
    let mut hat = s["publications"][0]["data"].clone();
    while hat["hat"] != "creative" {
        hat = w.next_pub("reflex:hat").await.1;
    }
    assert_eq!(hat["hat"], "creative");

    // The heartbeat carries what `kitbash status` prints of the instance.
    eventually(
        "the heartbeat reports connections and subscriptions",
        || async {
            let members: Vec<String> = c
                .zrange(keys.fleet(), 0, -1, None, false, None, false)
                .await
                .expect("zrange");
            let Some(inst) = members.iter().find_map(|m| m.strip_prefix("bridge/")) else {
                return false;
            };
            let beat: Option<String> = c
                .get(keys.heartbeat(kitbash_schema::DaemonKind::Bridge, inst))
                .await
                .expect("get");
            let beat: Json = beat
                .and_then(|b| serde_json::from_str(&b).ok())
                .unwrap_or_default();
            beat["stats"]["connections"].as_u64() >= Some(3)
                && beat["stats"]["subscriptions"].as_u64() >= Some(3)
                && beat["serves"]["ws"] == b.addr.to_string()
        },
    )
    .await;
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recovers_exactly_what_was_missed_or_says_it_cannot() {
    let server = RedisServer::start().expect("redis");
    let ns = kitbash_testkit::namespace();
    let keys = ns_keys(&ns);
    let c = client(&server.url()).await;
    let mut cfg = config(&server.url(), &ns, free_local_addr());
    cfg.bridge.recover_max = 5;
    let b = Bridge::start(cfg).await;

    let mut ws = Ws::connected(b.addr).await;
    let s = subscribe(&mut ws, 2, json!({"channel": "physics:SPY"})).await;
    let epoch = s["epoch"].as_str().expect("epoch").to_owned();
    let first = add_physics(&c, &keys, "SPY", 1.0).await;
    let (seen, _) = ws.next_pub("physics:SPY").await;
    assert_eq!(Some(seen), offset_of(&first));
    drop(ws);

    // Missed while away: 3 of SPY among other symbols.
    let mut watcher = Ws::connected(b.addr).await;
    subscribe(&mut watcher, 2, json!({"channel": "physics:SPY"})).await;
    let mut missed = Vec::new();
    for i in 0..3 {
        add_physics(&c, &keys, "QQQ", 1.0).await;
        missed.push(add_physics(&c, &keys, "SPY", 2.0 + f64::from(i)).await);
    }
    for id in &missed {
        assert_eq!(
            watcher.next_pub("physics:SPY").await.0,
            offset_of(id).unwrap_or(0)
        );
    }
    let mut ws = Ws::connected(b.addr).await;
    let s = subscribe(
        &mut ws,
        2,
        json!({"channel": "physics:SPY", "recover": true, "offset": seen, "epoch": epoch}),
    )
    .await;
    assert_eq!(s["recovered"], true, "{s}");
    assert_eq!(s["was_recovering"], true);
    let got: Vec<u64> = s["publications"]
        .as_array()
        .expect("pubs")
        .iter()
        .map(|p| p["offset"].as_u64().unwrap_or(0))
        .collect();
    let want: Vec<u64> = missed.iter().filter_map(|i| offset_of(i)).collect();
    assert_eq!(got, want, "exactly the missed ones, in order");
    // Live after the seam: the next one only, no duplicate of a recovered one.
    let next = add_physics(&c, &keys, "SPY", 9.0).await;
    assert_eq!(
        ws.next_pub("physics:SPY").await.0,
        offset_of(&next).unwrap_or(0)
    );

    // Another epoch: not recovered; the current epoch and top come back.
    let mut w = Ws::connected(b.addr).await;
    let s = subscribe(
        &mut w,
        2,
        json!({"channel": "physics:SPY", "recover": true, "offset": seen, "epoch": "nope"}),
    )
    .await;
    assert!(!s["recovered"].as_bool().unwrap_or(false), "{s}");
    assert_eq!(s["was_recovering"], true);
    assert_eq!(s["epoch"], epoch.as_str());
    // Reject-unrecovered flag: error 112 instead.
    w.send(&json!({"id": 3, "subscribe": {"channel": "physics:QQQ", "recover": true, "offset": seen, "epoch": "nope", "flag": 3}}).to_string()).await;
    assert_eq!(reply(&mut w, 3).await["error"]["code"], 112);

    // More than recover_max (5) missed: not recovered. (The watcher waits until the bridge
    // has read them all, so they are all before the subscription's position.)
    let mut watcher = Ws::connected(b.addr).await;
    subscribe(&mut watcher, 2, json!({"channel": "physics:IWM"})).await;
    let mut w = Ws::connected(b.addr).await;
    let mut last = String::new();
    for _ in 0..6 {
        last = add_physics(&c, &keys, "IWM", 1.0).await;
    }
    while watcher.next_pub("physics:IWM").await.0 != offset_of(&last).unwrap_or(0) {}
    let s = subscribe(
        &mut w,
        2,
        json!({"channel": "physics:IWM", "recover": true, "offset": seen, "epoch": epoch}),
    )
    .await;
    assert!(!s["recovered"].as_bool().unwrap_or(false), "{s}");

    // Trimmed past the client's position: not recovered.
    let _: i64 = c
        .xtrim(
            keys.stream(StreamName::Physics),
            ("MINID", "=", next.as_str()),
        )
        .await
        .expect("xtrim");
    let mut w = Ws::connected(b.addr).await;
    let s = subscribe(
        &mut w,
        2,
        json!({"channel": "physics:SPY", "recover": true, "offset": seen, "epoch": epoch}),
    )
    .await;
    assert!(!s["recovered"].as_bool().unwrap_or(false), "{s}");
    // From a position still held: recovered (nothing after `next` for SPY).
    let s = subscribe(&mut w, 3, json!({"channel": "physics:QQQ", "recover": true, "offset": offset_of(&next), "epoch": epoch})).await;
    assert_eq!(s["recovered"], true, "{s}");

    // The stream deleted and written again: a new epoch; live subscribers are told (2500).
    let mut live = Ws::connected(b.addr).await;
    subscribe(&mut live, 2, json!({"channel": "physics:SPY"})).await;
    let _: i64 = c.del(keys.stream(StreamName::Physics)).await.expect("del");
    add_physics(&c, &keys, "SPY", 1.0).await;
    loop {
        let v = live.recv().await;
        assert_ne!(v, Json::Null, "closed");
        if let Some(u) = v["push"].get("unsubscribe") {
            assert_eq!(u["code"], 2500, "{v}");
            break;
        }
    }
    let mut w = Ws::connected(b.addr).await;
    let s = subscribe(&mut w, 2, json!({"channel": "physics:SPY", "recover": true, "offset": offset_of(&next), "epoch": epoch})).await;
    assert_ne!(s["epoch"], epoch.as_str(), "a new epoch: {s}");
    assert!(!s["recovered"].as_bool().unwrap_or(false), "{s}");
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn any_instance_recovers_a_client_of_another() {
    let server = RedisServer::start().expect("redis");
    let ns = kitbash_testkit::namespace();
    let keys = ns_keys(&ns);
    let c = client(&server.url()).await;
    let a = Bridge::start(config(&server.url(), &ns, free_local_addr())).await;
    let b = Bridge::start(config(&server.url(), &ns, free_local_addr())).await;
    let mut wa = Ws::connected(a.addr).await;
    let mut wb = Ws::connected(b.addr).await;
    let sa = subscribe(&mut wa, 2, json!({"channel": "changes"})).await;
    let sb = subscribe(&mut wb, 2, json!({"channel": "changes"})).await;
    assert_eq!(
        sa["epoch"], sb["epoch"],
        "one epoch per stream, whichever instance"
    );
    let id = add_change(&c, &keys, "entity:claude:identity", 1, r#"{"n":1}"#).await;
    let (oa, da) = wa.next_pub("changes").await;
    let (ob, db) = wb.next_pub("changes").await;
    assert_eq!((oa, &da), (ob, &db), "the same offset and data from both");
    assert_eq!(Some(oa), offset_of(&id));
    drop(wa);
    let mut ids = Vec::new();
    for v in 2..=4 {
        ids.push(
            add_change(
                &c,
                &keys,
                "entity:claude:identity",
                v,
                &format!("{{\"n\":{v}}}"),
            )
            .await,
        );
    }
    // B has read them (else the rest would come live after the reply, which is right too).
    for id in &ids {
        assert_eq!(wb.next_pub("changes").await.0, offset_of(id).unwrap_or(0));
    }
    // The client of A comes back on B.
    let mut w = Ws::connected(b.addr).await;
    let s = subscribe(&mut w, 2, json!({"channel": "entity:claude:identity", "recover": true, "offset": oa, "epoch": sa["epoch"]})).await;
    assert_eq!(s["recovered"], true, "{s}");
    let got: Vec<u64> = s["publications"]
        .as_array()
        .expect("pubs")
        .iter()
        .map(|p| p["offset"].as_u64().unwrap_or(0))
        .collect();
    assert_eq!(
        got,
        ids.iter().filter_map(|i| offset_of(i)).collect::<Vec<_>>()
    );
    a.stop().await;
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recovers_more_than_one_read_chunk() {
    let server = RedisServer::start().expect("redis");
    let ns = kitbash_testkit::namespace();
    let keys = ns_keys(&ns);
    let c = client(&server.url()).await;
    let mut cfg = config(&server.url(), &ns, free_local_addr());
    cfg.bridge.recover_max = 2500;
    let b = Bridge::start(cfg).await;
    let mut ws = Ws::connected(b.addr).await;
    let s = subscribe(&mut ws, 2, json!({"channel": "physics:R"})).await;
    let (offset, epoch) = (s["offset"].as_u64().unwrap_or(0), s["epoch"].clone());
    drop(ws);
    let mut watcher = Ws::connected(b.addr).await;
    subscribe(&mut watcher, 2, json!({"channel": "physics:R"})).await;
    let mut ids = Vec::new();
    for i in 0..2345 {
        if i % 500 == 0 {
            eprintln!("added {i}");
        }
        ids.push(add_physics(&c, &keys, "R", f64::from(i)).await);
        if i % 3 == 0 {
            add_physics(&c, &keys, "OTHER", 1.0).await;
        }
    }
    eprintln!("watching");
    for id in &ids {
        assert_eq!(
            watcher.next_pub("physics:R").await.0,
            offset_of(id).unwrap_or(0)
        );
    }
    eprintln!("recovering");
    let mut w = Ws::connected(b.addr).await;
    let s = subscribe(
        &mut w,
        2,
        json!({"channel": "physics:R", "recover": true, "offset": offset, "epoch": epoch}),
    )
    .await;
    assert_eq!(
        s["recovered"],
        true,
        "{}",
        s.to_string().chars().take(300).collect::<String>()
    );
    let got: Vec<u64> = s["publications"]
        .as_array()
        .expect("pubs")
        .iter()
        .map(|p| p["offset"].as_u64().unwrap_or(0))
        .collect();
    assert_eq!(
        got,
        ids.iter().filter_map(|i| offset_of(i)).collect::<Vec<_>>()
    );
    b.stop().await;
}
