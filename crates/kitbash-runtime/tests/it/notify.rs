//! systemd notifications from an in-process daemon to a fake `NOTIFY_SOCKET` this test listens
//! on: `READY=1` once ready, `WATCHDOG=1` while its consumer loop comes round, none while the
//! loop is stuck in its handler (the notifier says `STATUS=stuck: …` at each skipped feed), fed
//! again once it moves, and `STOPPING=1` when the drain begins.

use std::sync::Arc;
use std::time::Duration;

use kitbash_runtime::notify::{Notifier, SystemdLink};
use kitbash_runtime::{Components, DaemonContext, Delivery, Handler, Outcome, shutdown};
use kitbash_schema::messages::Tick;
use kitbash_schema::{DaemonKind, StreamName};
use kitbash_testkit::RedisServer;

use crate::support::*;

/// Acknowledges every batch, but first waits for the gate when told to hang.
struct GateHandler {
    gate: tokio::sync::watch::Receiver<bool>,
    entered: Arc<tokio::sync::Notify>,
}

impl Handler<Tick> for GateHandler {
    async fn handle(&mut self, batch: Vec<Delivery<Tick>>) -> Vec<Outcome> {
        if batch.iter().any(|d| d.message.symbol == "HANG") {
            self.entered.notify_one();
            let _ = self.gate.wait_for(|open| *open).await;
        }
        batch.iter().map(|_| Outcome::Ack).collect()
    }
}

/// The next datagram (a generous deadline only so a broken notifier fails instead of hanging).
async fn next(rx: &tokio::net::UnixDatagram) -> String {
    let mut buf = vec![0u8; 4096];
    let n = tokio::time::timeout(Duration::from_secs(30), rx.recv(&mut buf))
        .await
        .expect("a notification within 30 s")
        .expect("recv");
    String::from_utf8_lossy(&buf[..n]).into_owned()
}

/// Reads until a datagram satisfies `want`; returns it and everything before it.
async fn until(
    rx: &tokio::net::UnixDatagram,
    want: impl Fn(&str) -> bool,
) -> (String, Vec<String>) {
    let mut before = Vec::new();
    loop {
        let m = next(rx).await;
        if want(&m) {
            return (m, before);
        }
        before.push(m);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ready_watchdog_from_the_main_loops_and_stopping_reach_notify_socket() {
    let server = RedisServer::start().expect("redis");
    let dir = tempfile::tempdir().expect("dir");
    let path = dir.path().join("notify.sock");
    let rx = tokio::net::UnixDatagram::bind(&path).expect("bind the fake NOTIFY_SOCKET");

    let keys = keys();
    let mut cfg = kitbash_runtime::Config::default();
    cfg.redis.url = server.url();
    cfg.redis.namespace = keys.namespace().to_string();
    cfg.admin.listen = String::new();
    cfg.fleet.heartbeat_ms = 100;
    cfg.fleet.stuck_after_ms = 200;
    cfg.consumer = fast_consumer();
    let (signals, _) = shutdown::manual();
    let stop = signals.shutdown.clone();
    let link = SystemdLink {
        notifier: Notifier::to(path.to_str().expect("utf-8 path")).expect("notifier"),
        watchdog: Some(Duration::from_millis(100)),
    };
    let ctx = DaemonContext::start_with(DaemonKind::Example, cfg, signals, link)
        .await
        .expect("context");
    let (gate_tx, gate) = tokio::sync::watch::channel(false);
    let entered = Arc::new(tokio::sync::Notify::new());
    let handler = GateHandler {
        gate,
        entered: entered.clone(),
    };
    let run = tokio::spawn(
        Components::new(&ctx)
            .consume::<Tick, _>(StreamName::Entity, handler)
            .run(),
    );

    let (ready, _) = until(&rx, |m| m.starts_with("READY=1")).await;
    assert!(ready.contains("STATUS=ready"), "{ready}");
    assert!(
        ctx.health.ready(),
        "READY=1 only once /readyz would say ready"
    );
    until(&rx, |m| m == "WATCHDOG=1").await;
    until(&rx, |m| m == "WATCHDOG=1").await;

    // The consumer loop gets stuck in its handler: the watchdog is no longer fed.
    let r = connect(&server.url()).await;
    let hang = Tick {
        symbol: "HANG".into(),
        price: 1.0,
        size: 1.0,
        trades: 1,
        ts: 1.0,
    };
    xadd_msg(&r, &keys, StreamName::Entity, &hang).await;
    entered.notified().await;
    let stuck = |m: &str| m.starts_with("STATUS=stuck: consume ");
    let (first, _) = until(&rx, stuck).await;
    assert!(first.contains("entity"), "names the stuck loop: {first}");
    for _ in 0..3 {
        let (_, between) = until(&rx, stuck).await;
        assert!(
            !between.iter().any(|m| m == "WATCHDOG=1"),
            "fed while the loop was stuck: {between:?}"
        );
    }

    // The loop moves again: fed again.
    gate_tx.send(true).expect("open the gate");
    until(&rx, |m| m == "WATCHDOG=1").await;

    stop.cancel();
    let (stopping, _) = until(&rx, |m| m.starts_with("STOPPING=1")).await;
    assert!(stopping.contains("STATUS=draining"), "{stopping}");
    run.await.expect("join").expect("components");
    ctx.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_ready_before_redis_answers() {
    // Redis is not there: the daemon is not ready, so no READY=1; a STATUS says why.
    let dir = tempfile::tempdir().expect("dir");
    let path = dir.path().join("notify.sock");
    let rx = tokio::net::UnixDatagram::bind(&path).expect("bind");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port();
    let mut cfg = kitbash_runtime::Config::default();
    cfg.redis.url = format!("redis://127.0.0.1:{port}");
    cfg.admin.listen = String::new();
    let (signals, _) = shutdown::manual();
    let stop = signals.shutdown.clone();
    let link = SystemdLink {
        notifier: Notifier::to(path.to_str().expect("utf-8 path")).expect("notifier"),
        watchdog: None,
    };
    let ctx = DaemonContext::start_with(DaemonKind::Example, cfg, signals, link)
        .await
        .expect("context");
    let run = tokio::spawn(Components::new(&ctx).run());
    let (status, before) = until(&rx, |m| m.starts_with("STATUS=not ready")).await;
    assert!(status.contains("redis"), "{status}");
    assert!(
        !before.iter().any(|m| m.starts_with("READY=1")),
        "{before:?}"
    );
    stop.cancel();
    let (_, before) = until(&rx, |m| m.starts_with("STOPPING=1")).await;
    assert!(
        !before.iter().any(|m| m.starts_with("READY=1")),
        "{before:?}"
    );
    run.await.expect("join").expect("components");
    ctx.finish().await;
}
