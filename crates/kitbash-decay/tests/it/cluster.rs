//! Decay on a 3-master Redis Cluster: with a `redis-cluster://` URL the reflex path's keys
//! share the `crossings` stream's slot (`Keys::with_reflex_slot`), so the hit script, the
//! fenced cycle and the latency metrics run unchanged. Resonance equals the naive reference
//! over many cycles, one crossing per rise, every query counted; the records, the index, the
//! cycle, the hit markers and the leader's lease are in the crossings stream's slot. The binary
//! applies every query there and stops on SIGTERM with status 0. A plain
//! URL at a cluster node is refused (in `kitbash-ghost`'s suite, for both reflex daemons).

use fred::prelude::*;
use kitbash_schema::{DaemonKind, StreamName};
use kitbash_testkit::RedisCluster;

use crate::support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resonance_equals_the_reference_on_a_cluster_with_the_path_in_one_slot() {
    let cluster = RedisCluster::start().expect("cluster");
    let ns = kitbash_testkit::namespace();
    let url = cluster.cluster_url();
    let cfg = config(&url, &ns);
    let k = cfg.redis.keys();
    assert!(k.reflex_slot());
    let c = client(&url).await;
    let (signals, _) = kitbash_runtime::shutdown::manual();
    let stop = signals.shutdown.clone();
    let task = tokio::spawn(kitbash_decay::run(cfg, signals));
    let mut d = Driver::new(c.clone(), k.clone(), 3);
    for i in 0..72 {
        d.step(i).await;
    }
    assert!(cycle(&c, &k).await >= 10, "ran over many cycles");
    d.check().await;
    let n: u64 = c.get(k.metrics_queries_count()).await.expect("get");
    assert_eq!(n, 72);
    eventually("p99 written on the cluster", || async {
        let p: Option<f64> = c.get(k.metrics_latency_p99()).await.expect("get");
        p.is_some_and(|p| (2.0..=2.04).contains(&p))
    })
    .await;
    let slot = |key: &str| -> String {
        cluster
            .cmd(&["CLUSTER", "KEYSLOT", key])
            .expect("keyslot")
            .trim()
            .to_owned()
    };
    let home = slot(&k.stream(StreamName::Crossings));
    let h = kitbash_client::reflex::query_hash("query number 0");
    for key in [
        k.cms(&h),
        k.cms_grains(&h),
        k.cms_resonance(&h),
        k.resonance_index(),
        k.decay_cycle(),
        k.decay_clock(),
        k.hit_marker("1-0"),
        k.leader(DaemonKind::Decay, "decay-cycle"),
        k.metrics_latency_p99(),
    ] {
        assert_eq!(slot(&key), home, "{key}");
    }
    stop.cancel();
    task.await.expect("join").expect("run");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_binary_runs_on_a_cluster_and_stops_on_sigterm() {
    let cluster = RedisCluster::start().expect("cluster");
    let ns = kitbash_testkit::namespace();
    let url = cluster.cluster_url();
    let k = config(&url, &ns).redis.keys();
    let c = client(&url).await;
    let mut child = spawn_decay(&url, &ns);
    let producer = kitbash_client::Producer::new(c.clone(), k.clone(), 1);
    for i in 0..50 {
        producer
            .publish(
                StreamName::Queries,
                &query(&format!("binary query {}", i % 5)),
            )
            .await
            .expect("publish");
    }
    eventually("the binary applied every query", || async {
        let n: Option<u64> = c.get(k.metrics_queries_count()).await.expect("get");
        n == Some(50)
    })
    .await;
    let h = kitbash_client::reflex::query_hash("binary query 0");
    let count: Option<u64> = c.hget(k.cms(&h), "count").await.expect("hget");
    assert_eq!(count, Some(10));
    signal(&child, "-TERM");
    assert_eq!(wait_exit(&mut child).await.code(), Some(0));
}
