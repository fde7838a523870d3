//! The admin endpoint answers `/healthz`, `/readyz` and `/metrics` over real HTTP.

use std::io::{Read, Write};

use kitbash_runtime::CancellationToken;
use kitbash_runtime::admin;
use kitbash_runtime::consumer::{Delivery, Handler, Outcome, StreamConsumer};
use kitbash_runtime::health::Health;
use kitbash_runtime::metrics::Metrics;
use kitbash_schema::StreamName;
use kitbash_schema::messages::Tick;
use kitbash_testkit::RedisServer;

use crate::support::{connect, eventually, fast_consumer, keys, xadd_msg};

fn get(addr: std::net::SocketAddr, path: &str) -> (u16, String) {
    let mut s = std::net::TcpStream::connect(addr).expect("connect");
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .expect("write");
    let mut out = String::new();
    s.read_to_string(&mut out).expect("read");
    let code = out
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    (code, out)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_readiness_and_metrics() {
    let server = RedisServer::start().expect("redis");
    let r = connect(&server.url()).await;
    let health = Health::new();
    let metrics = Metrics::new();
    metrics.inc(
        "kitbash_entries_acked_total",
        "Acked.",
        &[("stream", "queries")],
        7,
    );
    health.set("group decay on queries", false);
    let stop = CancellationToken::new();
    let addr = admin::serve(
        "127.0.0.1:0".parse().expect("addr"),
        r.clone(),
        health.clone(),
        metrics,
        "decay",
        "decay-test".into(),
        stop.clone(),
    )
    .await
    .expect("serve");

    let body = tokio::task::spawn_blocking(move || {
        let healthz = get(addr, "/healthz");
        let not_ready = get(addr, "/readyz");
        health.set("group decay on queries", true);
        let ready = get(addr, "/readyz");
        let metrics = get(addr, "/metrics");
        (healthz, not_ready, ready, metrics)
    })
    .await
    .expect("join");
    assert_eq!(body.0.0, 200);
    assert_eq!(body.1.0, 503);
    assert!(body.1.1.contains("\"name\":\"group decay on queries\""));
    assert_eq!(body.2.0, 200);
    assert_eq!(body.3.0, 200);
    assert!(
        body.3
            .1
            .contains("kitbash_entries_acked_total{stream=\"queries\"} 7")
    );
    assert!(
        body.3
            .1
            .contains("kitbash_ready{kind=\"decay\",instance=\"decay-test\"} 1")
    );
    stop.cancel();
}

/// `GET path` with a 1 s read deadline: `None` when the endpoint does not answer in time.
fn get_within_a_second(addr: std::net::SocketAddr, path: &str) -> Option<u16> {
    let mut s = std::net::TcpStream::connect(addr).ok()?;
    s.set_read_timeout(Some(std::time::Duration::from_secs(1)))
        .ok()?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    out.split_whitespace().nth(1).and_then(|c| c.parse().ok())
}

/// Redis hangs (SIGSTOP): a 1 s readiness probe still gets an answer — 503 once the daemon has
/// noticed — instead of waiting out the 5 s command timeout; and 200 again after it resumes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readiness_answers_at_once_while_redis_hangs() {
    let mut server = RedisServer::start().expect("redis");
    let mut cfg = kitbash_runtime::Config::default();
    cfg.redis.url = server.url();
    cfg.redis.namespace = kitbash_testkit::namespace();
    cfg.admin.listen = "127.0.0.1:0".into();
    let (signals, _) = kitbash_runtime::shutdown::manual();
    let stop = signals.shutdown.clone();
    let ctx =
        kitbash_runtime::DaemonContext::start(kitbash_schema::DaemonKind::Example, cfg, signals)
            .await
            .expect("context");
    let addr = ctx.admin_addr.expect("admin");
    crate::support::eventually("ready", || async {
        tokio::task::spawn_blocking(move || get_within_a_second(addr, "/readyz"))
            .await
            .expect("join")
            == Some(200)
    })
    .await;
    server.pause().expect("pause");
    crate::support::eventually("not ready while Redis hangs", || async {
        let code = tokio::task::spawn_blocking(move || get_within_a_second(addr, "/readyz"))
            .await
            .expect("join");
        assert!(code.is_some(), "/readyz did not answer within 1 s");
        code == Some(503)
    })
    .await;
    server.resume().expect("resume");
    crate::support::eventually("ready again", || async {
        tokio::task::spawn_blocking(move || get_within_a_second(addr, "/readyz"))
            .await
            .expect("join")
            == Some(200)
    })
    .await;
    stop.cancel();
    ctx.finish().await;
}

/// Acknowledges everything.
struct AckAll;

impl Handler<Tick> for AckAll {
    async fn handle(&mut self, batch: Vec<Delivery<Tick>>) -> Vec<Outcome> {
        vec![Outcome::Ack; batch.len()]
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_carry_batch_histograms_after_a_batch() {
    let server = RedisServer::start().expect("redis");
    let r = connect(&server.url()).await;
    let keys = keys();
    let metrics = Metrics::new();
    for i in 0..3 {
        let t = Tick {
            symbol: "SPY".into(),
            price: 100.0 + f64::from(i),
            size: 1.0,
            trades: 1,
            ts: 1.0,
        };
        xadd_msg(&r, &keys, StreamName::Queries, &t).await;
    }
    let stop = CancellationToken::new();
    let c = StreamConsumer::new(
        r.clone(),
        &keys,
        StreamName::Queries,
        "histgroup",
        "c1",
        fast_consumer(),
        metrics.clone(),
        Health::new(),
    );
    let task = tokio::spawn(c.run(AckAll, stop.clone()));
    let labels = [("stream", "queries"), ("group", "histgroup")];
    eventually("three entries acknowledged", || async {
        metrics.get("kitbash_entries_acked_total", &labels) == 3.0
    })
    .await;
    let batches = metrics
        .histogram("kitbash_batch_entries", &labels)
        .expect("batch sizes recorded");
    assert_eq!(batches.sum, 3.0, "{batches:?}");
    assert!(batches.count >= 1);
    let addr = admin::serve(
        "127.0.0.1:0".parse().expect("addr"),
        r.clone(),
        Health::new(),
        metrics,
        "decay",
        "decay-test".into(),
        stop.clone(),
    )
    .await
    .expect("serve");
    let (code, text) = tokio::task::spawn_blocking(move || get(addr, "/metrics"))
        .await
        .expect("join");
    assert_eq!(code, 200);
    assert!(text.contains("application/openmetrics-text"), "{text}");
    assert!(
        text.contains("# TYPE kitbash_batch_seconds histogram"),
        "{text}"
    );
    for line in [
        "kitbash_batch_seconds_bucket{le=\"0.00005\",stream=\"queries\",group=\"histgroup\"} ",
        "kitbash_batch_seconds_bucket{le=\"+Inf\",stream=\"queries\",group=\"histgroup\"} ",
        "kitbash_batch_seconds_count{stream=\"queries\",group=\"histgroup\"} ",
        "kitbash_batch_entries_bucket{le=\"10000.0\",stream=\"queries\",group=\"histgroup\"} ",
        "kitbash_batch_entries_sum{stream=\"queries\",group=\"histgroup\"} 3",
    ] {
        assert!(text.contains(line), "no {line:?} in {text}");
    }
    stop.cancel();
    task.await.expect("join");
}
