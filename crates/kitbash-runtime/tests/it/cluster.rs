//! The consumer loop on a 3-master Redis Cluster: the stream, its dead-letter stream and the
//! idempotency markers share a hash tag, so dead-lettering (MULTI) and apply_once work there.

use std::sync::{Arc, Mutex};

use fred::prelude::*;
use kitbash_runtime::consumer::{Delivery, Handler, Outcome, StreamConsumer};
use kitbash_runtime::health::Health;
use kitbash_runtime::idempotency::apply_once;
use kitbash_runtime::metrics::Metrics;
use kitbash_runtime::{CancellationToken, Redis};
use kitbash_schema::StreamName;
use kitbash_schema::messages::Tick;
use kitbash_testkit::RedisCluster;

use crate::support::*;

#[derive(Clone, Default)]
struct Seen(Arc<Mutex<Vec<u64>>>);

impl Handler<Tick> for Seen {
    async fn handle(&mut self, batch: Vec<Delivery<Tick>>) -> Vec<Outcome> {
        self.0
            .lock()
            .expect("lock")
            .extend(batch.iter().map(|d| d.message.trades));
        vec![Outcome::Ack; batch.len()]
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consumer_loop_and_dead_letters_on_a_cluster() {
    let cluster = RedisCluster::start().expect("cluster");
    let r: Redis = connect(&cluster.cluster_url()).await;
    let keys = keys();
    let s = StreamName::Entity;
    for i in 1..=20u64 {
        let t = Tick {
            symbol: "SPY".into(),
            price: 1.0,
            size: 1.0,
            trades: i,
            ts: 0.0,
        };
        xadd_msg(&r, &keys, s, &t).await;
    }
    xadd_raw(
        &r,
        &keys,
        s,
        vec![("type", b"tick"), ("ct", b"json"), ("d", b"not json")],
    )
    .await;
    let seen = Seen::default();
    let stop = CancellationToken::new();
    let c = StreamConsumer::new(
        r.clone(),
        &keys,
        s,
        "g",
        "c1",
        fast_consumer(),
        Metrics::new(),
        Health::new(),
    );
    let task = tokio::spawn(c.run(seen.clone(), stop.clone()));
    eventually("all entries handled or dead-lettered", || async {
        seen.0.lock().expect("lock").len() == 20 && pending(&r, &keys, s, "g").await == 0
    })
    .await;
    stop.cancel();
    let stats = task.await.expect("join");
    assert_eq!(stats.dead, 1);
    assert_eq!(stats.acked, 20);
    let letters = dead_letters(&r, &keys, s).await;
    assert_eq!(letters.len(), 1);
    assert!(letters[0].reason.starts_with("body does not decode"));
    assert_eq!(
        *seen.0.lock().expect("lock"),
        (1..=20).collect::<Vec<u64>>(),
        "in order, once each"
    );

    // apply_once with a marker and an effect key in the stream's slot.
    let marker = keys.done_marker(s, "1-0");
    let effect = keys.stream(s) + ":n";
    let cmds = vec![vec!["INCR".into(), effect.as_str().into()]];
    assert!(
        apply_once(&r.client, &marker, 60, std::slice::from_ref(&effect), &cmds)
            .await
            .expect("first")
    );
    assert!(
        !apply_once(&r.client, &marker, 60, std::slice::from_ref(&effect), &cmds)
            .await
            .expect("second")
    );
    let n: i64 = r.client.get(&effect).await.expect("get");
    assert_eq!(n, 1);
}
