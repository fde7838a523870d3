//! Dead-letter streams are never trimmed, whatever `[consumer] dead_letter_alarm` says; a
//! daemon's `Bounds` reports their length and raises the alarm gauge once one is longer than the
//! threshold, and lowers it once an operator deleted entries.

use fred::prelude::*;
use kitbash_runtime::bounds::{ALARM_METRIC, Bounds, LENGTH_METRIC};
use kitbash_runtime::consumer::{Delivery, Handler, Outcome, StreamConsumer};
use kitbash_runtime::health::Health;
use kitbash_runtime::metrics::Metrics;
use kitbash_runtime::{CancellationToken, config::ConsumerConfig};
use kitbash_schema::StreamName;
use kitbash_schema::messages::Tick;
use kitbash_testkit::RedisServer;

use crate::support::*;

const S: StreamName = StreamName::Queries;

/// Acknowledges everything it is given.
struct AckAll;

impl Handler<Tick> for AckAll {
    async fn handle(&mut self, batch: Vec<Delivery<Tick>>) -> Vec<Outcome> {
        batch.iter().map(|_| Outcome::Ack).collect()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_letters_are_kept_and_measured_against_the_alarm() {
    let server = RedisServer::start().expect("redis");
    let keys = keys();
    let r = connect(&server.url()).await;
    // Two entries per stream node: an `XADD … MAXLEN ~ 5` would now trim to about 6.
    let _: () = r
        .client
        .config_set("stream-node-max-entries", 2)
        .await
        .expect("config set");
    for i in 0..20u8 {
        xadd_raw(
            &r,
            &keys,
            S,
            vec![("type", b"tick"), ("ct", b"msgpack"), ("d", &[0xc1, i])],
        )
        .await;
    }
    let cfg = ConsumerConfig {
        dead_letter_alarm: 5,
        ..fast_consumer()
    };
    let consumer = StreamConsumer::new(
        r.clone(),
        &keys,
        S,
        "testgroup",
        "c1",
        cfg,
        Metrics::new(),
        Health::new(),
    );
    let stop = CancellationToken::new();
    let task = tokio::spawn(consumer.run(AckAll, stop.clone()));
    eventually("every undecodable entry dead-lettered", || async {
        dead_letters(&r, &keys, S).await.len() == 20
            && pending(&r, &keys, S, "testgroup").await == 0
    })
    .await;
    stop.cancel();
    assert_eq!(task.await.expect("join").dead, 20);
    let dead = keys.dead_letter(S);
    let len: u64 = r.client.xlen(&dead).await.expect("xlen");
    assert_eq!(len, 20, "no dead letter was trimmed");

    let metrics = Metrics::new();
    let bounds =
        Bounds::new(r.client.clone(), keys.clone(), metrics.clone(), 5).watch_dead_letters([S]);
    let labels = [("stream", "queries")];
    assert_eq!(bounds.run().await, 0, "nothing to trim");
    assert_eq!(metrics.get(LENGTH_METRIC, &labels), 20.0);
    assert_eq!(metrics.get(ALARM_METRIC, &labels), 1.0, "20 > 5");
    let len: u64 = r.client.xlen(&dead).await.expect("xlen");
    assert_eq!(len, 20, "measured, not trimmed");
    let rendered = metrics.render();
    assert!(
        rendered.contains("kitbash_dead_letter_alarm{stream=\"queries\"} 1"),
        "{rendered}"
    );
    // An operator replays and deletes all but 5: at the threshold is not above it.
    let _: u64 = r
        .client
        .xtrim(&dead, ("MAXLEN", "=", 5))
        .await
        .expect("xtrim");
    bounds.run().await;
    assert_eq!(metrics.get(LENGTH_METRIC, &labels), 5.0);
    assert_eq!(metrics.get(ALARM_METRIC, &labels), 0.0);
}
