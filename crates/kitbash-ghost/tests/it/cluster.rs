//! The reflex path on a 3-master Redis Cluster. With a `redis-cluster://` URL every reflex key
//! ends in the `crossings` stream's hash tag (`Keys::with_reflex_slot`), so decay's and ghost's
//! scripts — each touching a record, the global cycle and index and the stream — run there
//! unchanged. In-process, in both layouts: every hot query's ghost equals the brute force, a hat
//! switch recomputes them, the client's lookup reads one, and every key the path wrote is in
//! the crossings stream's slot — also under the tagged key style. As the binary: the same work, then SIGTERM stops it with
//! status 0. A plain URL at a cluster node is refused, naming the cluster URL.

use std::process::Stdio;

use fred::prelude::*;
use kitbash_client::Producer;
use kitbash_client::reflex::{Reflex, parse_grains, query_hash};
use kitbash_runtime::config::KeyStyleConfig;
use kitbash_schema::reflex::{Layout, compact_id};
use kitbash_schema::{DaemonKind, Keys, StreamName};
use kitbash_testkit::RedisCluster;

use crate::compact::want_under;
use crate::{SAMPLE, client, config, eventually, signal, spawn_ghost_with, wait_exit};

/// The id a query's ghost is stored under in `layout`.
fn ghost_id(layout: Layout, text: &str) -> String {
    let h = query_hash(text);
    match layout {
        Layout::Seed => h,
        Layout::Compact => compact_id(&h).expect("a sha256 starts with 16 hex digits"),
    }
}

async fn ghosts(c: &Client, k: &Keys, layout: Layout, texts: &[String]) -> Vec<Option<String>> {
    let mut out = Vec::new();
    for t in texts {
        let g: Option<String> = c.get(k.ghost(&ghost_id(layout, t))).await.expect("get");
        out.push(g);
    }
    out
}

/// `CLUSTER KEYSLOT key`.
fn slot(cluster: &RedisCluster, key: &str) -> u16 {
    cluster
        .cmd(&["CLUSTER", "KEYSLOT", key])
        .expect("keyslot")
        .trim()
        .parse()
        .expect("a slot number")
}

/// Six hits on each of `texts` through the client, as an application records them.
async fn hit_each(reflex: &Reflex, producer: &Producer, texts: &[String]) {
    for t in texts {
        for _ in 0..6 {
            reflex
                .record_hit(producer, t, &[7, 9, 11], Some(1.5))
                .await
                .expect("hit");
        }
    }
}

async fn reflex_path_on_a_cluster(layout: Layout, style: KeyStyleConfig) {
    let cluster = RedisCluster::start().expect("cluster");
    let ns = kitbash_testkit::namespace();
    let url = cluster.cluster_url();
    let mut cfg = config(&url, &ns);
    cfg.reflex.layout = layout;
    cfg.redis.key_style = style;
    let k = cfg.redis.keys();
    assert!(
        k.reflex_slot(),
        "a redis-cluster:// URL puts the reflex path in one slot"
    );
    let c = client(&url).await;
    let reflex = Reflex::new(c.clone(), k.clone(), 0.9).with_layout(layout, cfg.reflex.buckets);
    let grains = parse_grains(SAMPLE, 256).expect("sample grains");
    reflex.hat_init().await.expect("hats on a cluster");
    reflex
        .grains_import(&grains)
        .await
        .expect("grains on a cluster");
    let (s1, _) = kitbash_runtime::shutdown::manual();
    let (s2, _) = kitbash_runtime::shutdown::manual();
    let (stop1, stop2) = (s1.shutdown.clone(), s2.shutdown.clone());
    let decay = tokio::spawn(kitbash_decay::run(cfg.clone(), s1));
    let ghost = tokio::spawn(kitbash_ghost::run(cfg.clone(), s2));
    let producer = Producer::new(c.clone(), k.clone(), 1);
    let texts: Vec<String> = (0..8)
        .map(|i| format!("cluster query about entropy {i}"))
        .collect();
    hit_each(&reflex, &producer, &texts).await;
    let want = want_under(&grains, &texts, "analytical");
    eventually("every hot query has its ghost on the cluster", || async {
        let n: Option<u64> = c.get(k.ghost_activations()).await.expect("get");
        ghosts(&c, &k, layout, &texts).await == want && n == Some(8)
    })
    .await;
    let look = reflex.lookup(&texts[0]).await.expect("lookup on a cluster");
    assert_eq!(look.count, Some(6));
    assert!(look.resonance > 0.8, "{}", look.resonance);
    let ids: Vec<String> = look.ghost_ids().iter().map(u64::to_string).collect();
    assert_eq!(Some(ids.join(",")), want[0]);
    assert_eq!(look.hat.as_deref(), Some("analytical"));
    // A hat switch (a script over the hat keys and the version) recomputes every ghost.
    assert!(reflex.hat_set("creative").await.expect("hat set"));
    let creative = want_under(&grains, &texts, "creative");
    assert_ne!(creative, want);
    eventually("ghosts under the creative hat", || async {
        ghosts(&c, &k, layout, &texts).await == creative
    })
    .await;
    // One crossing per query, in the stream whose slot the path shares.
    let crossings: u64 = c.xlen(k.stream(StreamName::Crossings)).await.expect("xlen");
    assert_eq!(crossings, 8);
    let home = slot(&cluster, &k.stream(StreamName::Crossings));
    let id = ghost_id(layout, &texts[0]);
    let mut written = vec![
        k.ghost(&id),
        k.ghost_activations(),
        k.decay_cycle(),
        k.decay_clock(),
        k.reflex_version(),
        k.reflex_layout(),
        k.hat_current(),
        k.hat_mask("creative"),
        k.grain_sig(grains[0].id),
        k.grain_bits_plus(grains[0].id),
        k.grain_index(),
        k.metrics_queries_count(),
        k.latency_histogram(),
        k.leader(DaemonKind::Decay, "decay-cycle"),
        k.leader(DaemonKind::Ghost, "ghost-recompute"),
    ];
    match layout {
        Layout::Seed => written.extend([
            k.cms(&id),
            k.cms_grains(&id),
            k.cms_resonance(&id),
            k.resonance_index(),
        ]),
        Layout::Compact => written.extend([k.reflex_hot(), k.reflex_hot_text()]),
    }
    for key in &written {
        let n: u64 = c.exists(key).await.expect("exists");
        assert_eq!(n, 1, "{key} was written");
        assert_eq!(slot(&cluster, key), home, "{key} is in the crossings slot");
    }
    stop1.cancel();
    stop2.cancel();
    decay
        .await
        .expect("join")
        .expect("decay ran on the cluster");
    ghost
        .await
        .expect("join")
        .expect("ghost ran on the cluster");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_reflex_path_runs_on_a_cluster_in_the_seed_layout() {
    reflex_path_on_a_cluster(Layout::Seed, KeyStyleConfig::Seed).await;
}

/// The tagged key style changes the other families' names, not the reflex path's slot.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_reflex_path_runs_on_a_cluster_under_the_tagged_key_style() {
    reflex_path_on_a_cluster(Layout::Seed, KeyStyleConfig::Tagged).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_reflex_path_runs_on_a_cluster_in_the_compact_layout() {
    reflex_path_on_a_cluster(Layout::Compact, KeyStyleConfig::Seed).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_binary_runs_on_a_cluster_and_stops_on_sigterm() {
    let cluster = RedisCluster::start().expect("cluster");
    let ns = kitbash_testkit::namespace();
    let url = cluster.cluster_url();
    let cfg = config(&url, &ns);
    let k = cfg.redis.keys();
    let c = client(&url).await;
    let reflex = Reflex::new(c.clone(), k.clone(), 0.9);
    let grains = parse_grains(SAMPLE, 256).expect("sample grains");
    reflex.hat_init().await.expect("hats");
    reflex.grains_import(&grains).await.expect("grains");
    // Decay in-process (its binary on a cluster is in its own suite), ghost as the binary.
    let (s1, _) = kitbash_runtime::shutdown::manual();
    let stop = s1.shutdown.clone();
    let decay = tokio::spawn(kitbash_decay::run(cfg.clone(), s1));
    let mut ghost = spawn_ghost_with(&url, &ns, &[], Stdio::null());
    let producer = Producer::new(c.clone(), k.clone(), 1);
    let texts: Vec<String> = (0..4)
        .map(|i| format!("binary cluster query {i}"))
        .collect();
    hit_each(&reflex, &producer, &texts).await;
    let want = want_under(&grains, &texts, "analytical");
    eventually("the binaries made every ghost", || async {
        ghosts(&c, &k, Layout::Seed, &texts).await == want
    })
    .await;
    signal(&ghost, "-TERM");
    assert_eq!(wait_exit(&mut ghost).await.code(), Some(0));
    stop.cancel();
    decay
        .await
        .expect("join")
        .expect("decay ran on the cluster");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plain_url_at_a_cluster_node_is_refused_naming_the_cluster_url() {
    let cluster = RedisCluster::start().expect("cluster");
    let ns = kitbash_testkit::namespace();
    for daemon in ["decay", "ghost"] {
        let (signals, _) = kitbash_runtime::shutdown::manual();
        let cfg = config(&cluster.url(), &ns);
        let run = async move {
            match daemon {
                "decay" => kitbash_decay::run(cfg, signals).await,
                _ => kitbash_ghost::run(cfg, signals).await,
            }
        };
        let err = tokio::time::timeout(std::time::Duration::from_secs(30), run)
            .await
            .expect("refused at start, not running")
            .expect_err("refused");
        assert!(
            err.to_string().contains("redis-cluster://"),
            "{daemon}: {err}"
        );
    }
}
