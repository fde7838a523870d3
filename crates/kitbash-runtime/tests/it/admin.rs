//! The admin endpoint answers `/healthz`, `/readyz` and `/metrics` over real HTTP.

use std::io::{Read, Write};

use kitbash_runtime::CancellationToken;
use kitbash_runtime::admin;
use kitbash_runtime::health::Health;
use kitbash_runtime::metrics::Metrics;
use kitbash_testkit::RedisServer;

use crate::support::connect;

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
