//! Producers send every write once (issue 7): a pipeline whose connection is cut after Redis
//! applied it — but before the replies reached the client — must not be replayed by fred.
//!
//! The cut is made deterministic by freezing Redis (SIGSTOP) while the pipeline and a
//! `CLIENT KILL` from a second, already-accepted connection wait in their sockets: on SIGCONT
//! one event-loop iteration reads both, in arrival order, so Redis applies every `XADD`, then
//! kills the producer's connection before the iteration ends and its replies are written.

use std::collections::HashSet;
use std::time::Duration;

use fred::prelude::*;
use fred::types::Value;
use kitbash_client::Producer;
use kitbash_schema::messages::Tick;
use kitbash_schema::{Envelope, StreamName};
use kitbash_testkit::RedisServer;

use crate::support::{connect, keys};

/// Bytes waiting in the receive queue of Redis's side of a connection on `port`, per socket
/// (from `/proc/net/tcp`: established sockets whose local port is the server's).
fn server_rx_queues(port: u16) -> Vec<u64> {
    let text = std::fs::read_to_string("/proc/net/tcp").unwrap_or_default();
    text.lines()
        .skip(1)
        .filter_map(|l| {
            let cols: Vec<&str> = l.split_whitespace().collect();
            let local_port = u16::from_str_radix(cols.get(1)?.rsplit(':').next()?, 16).ok()?;
            let established = *cols.get(3)? == "01";
            let rx = u64::from_str_radix(cols.get(4)?.rsplit(':').next()?, 16).ok()?;
            (local_port == port && established).then_some(rx)
        })
        .collect()
}

fn tick(i: u64) -> Tick {
    Tick {
        symbol: "SPY".into(),
        price: 100.0 + i as f64,
        size: 1.0,
        trades: 1,
        ts: 1_700_000_000.0 + i as f64,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pipeline_cut_after_redis_applied_it_is_never_replayed() {
    let mut server = RedisServer::start().expect("redis");
    let client = connect(&server.url()).await;
    let keys = keys();
    let producer = Producer::new(client.clone(), keys.clone(), 1);
    let stream = StreamName::Ticks(0);
    producer.publish(stream, &tick(0)).await.expect("warm-up");
    let mut killer = server.connect().expect("killer connection");
    assert_eq!(server_rx_queues(server.port()).iter().sum::<u64>(), 0);

    server.pause().expect("SIGSTOP");
    let batch: Vec<Tick> = (1..=20).map(tick).collect();
    let publish = tokio::spawn({
        let producer = producer.clone();
        async move { producer.publish_batch(stream, &batch).await }
    });
    // Wait until the pipeline sits in Redis's socket (state, not time).
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while server_rx_queues(server.port()).iter().all(|q| *q == 0) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "pipeline never reached the socket"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    killer
        .send(&["CLIENT", "KILL", "TYPE", "normal", "SKIPME", "yes"])
        .expect("send CLIENT KILL");
    server.resume().expect("SIGCONT");
    let killed = killer.read_reply().expect("CLIENT KILL reply");
    assert_eq!(killed.as_integer(), Some(1), "{killed:?}");

    // The outcome is unknown to the producer: an error, never a silent second append.
    let result = publish.await.expect("task");
    assert!(
        result.is_err(),
        "the cut pipeline reported success: {result:?}"
    );

    let entries: Vec<(String, Vec<(String, Value)>)> =
        crate::support::until_ok(|| client.xrange(keys.stream(stream), "-", "+", None)).await;
    // Redis applied what had reached it before the cut (usually the whole pipeline; under load
    // fred may have written only part of it): at least the warm-up and one more entry, never
    // more than were sent — and, below, never one twice.
    assert!(
        (2..=21).contains(&entries.len()),
        "{} entries",
        entries.len()
    );
    let mut mids = HashSet::new();
    for (id, fields) in &entries {
        let fields: Vec<(String, Vec<u8>)> = fields
            .iter()
            .map(|(k, v)| {
                (
                    k.clone(),
                    v.as_bytes().map(<[u8]>::to_vec).unwrap_or_default(),
                )
            })
            .collect();
        let env = Envelope::from_fields(fields.iter().map(|(k, v)| (k.as_bytes(), v.as_slice())))
            .expect("envelope");
        let mid = env.mid.expect("mid");
        assert!(mids.insert(mid.clone()), "entry {id} repeats mid {mid}");
    }
}
