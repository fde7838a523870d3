//! The compact layout (`[reflex] layout = "compact"`): ghosts of decay-made crossings are
//! written under the compact id and equal a brute-force top 3, a hat switch recomputes the hot
//! ones (read from `kitbash:reflex:hot` and its texts) and only those, and a ghost refuses to
//! start against a Redis that holds the seed layout.

use std::process::Stdio;

use fred::prelude::*;
use kitbash_client::Producer;
use kitbash_client::reflex::{Grain, Reflex, hat_mask_of, parse_grains, query_hash};
use kitbash_runtime::{Config, RuntimeError};
use kitbash_schema::reflex::{Layout, compact_id};
use kitbash_schema::{DaemonKind, Keys, Namespace};
use kitbash_ternary::HatMask;
use kitbash_testkit::RedisServer;

use crate::{SAMPLE, brute_force, client, config, eventually, spawn_ghost_with, wait_exit};

/// The test settings with `[reflex] layout = "compact"`.
pub(crate) fn compact_config(url: &str, ns: &str) -> Config {
    let mut c = config(url, ns);
    c.reflex.layout = Layout::Compact;
    c
}

/// The compact ids of `texts`.
pub(crate) fn ids_of(texts: &[String]) -> Vec<String> {
    texts
        .iter()
        .map(|t| compact_id(&query_hash(t)).expect("a sha256 starts with 16 hex digits"))
        .collect()
}

/// `ghost:{id}` of each id.
pub(crate) async fn ghosts_by_id(c: &Client, k: &Keys, ids: &[String]) -> Vec<Option<String>> {
    let mut out = Vec::new();
    for id in ids {
        let g: Option<String> = c.get(k.ghost(id)).await.expect("get");
        out.push(g);
    }
    out
}

/// The brute-force ghost of each text under hat `hat`.
pub(crate) fn want_under(grains: &[Grain], texts: &[String], hat: &str) -> Vec<Option<String>> {
    let mask = HatMask::from_bytes(&hat_mask_of(hat)).expect("mask");
    texts
        .iter()
        .map(|t| Some(brute_force(grains, t, &mask)))
        .collect()
}

/// `kitbash:reflex:version` and `kitbash:ghost:recomputed`.
pub(crate) async fn versions(c: &Client, k: &Keys) -> (u64, Option<u64>) {
    let v: Option<u64> = c.get(k.reflex_version()).await.expect("get");
    let r: Option<u64> = c.get(k.ghost_recomputed()).await.expect("get");
    (v.unwrap_or(0), r)
}

/// A compact Redis with the seed's hats and the sample grains; returns the client, keys, the
/// compact reflex client and the grains.
pub(crate) async fn setup(server: &RedisServer, ns: &str) -> (Client, Keys, Reflex, Vec<Grain>) {
    let k = Keys::new(Namespace::new(ns.to_owned()).expect("ns"));
    let c = client(&server.url()).await;
    let reflex = Reflex::new(c.clone(), k.clone(), 0.9).with_layout(
        Layout::Compact,
        compact_config(&server.url(), ns).reflex.buckets,
    );
    let grains = parse_grains(SAMPLE, 256).expect("sample grains");
    reflex.hat_init().await.expect("hats");
    reflex.grains_import(&grains).await.expect("import");
    (c, k, reflex, grains)
}

/// Sends `hits` hits for each of `texts` through the `queries` stream.
pub(crate) async fn hit(c: &Client, k: &Keys, reflex: &Reflex, texts: &[String], hits: usize) {
    let producer = Producer::new(c.clone(), k.clone(), 1);
    for t in texts {
        for _ in 0..hits {
            reflex
                .record_hit(&producer, t, &[7, 9, 11], Some(1.5))
                .await
                .expect("hit");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compact_ghosts_of_decay_crossings_and_after_a_hat_switch_equal_brute_force() {
    let server = RedisServer::start().expect("redis");
    let ns = kitbash_testkit::namespace();
    let (c, k, reflex, grains) = setup(&server, &ns).await;
    let (s1, _) = kitbash_runtime::shutdown::manual();
    let (s2, _) = kitbash_runtime::shutdown::manual();
    let (stop1, stop2) = (s1.shutdown.clone(), s2.shutdown.clone());
    let decay = tokio::spawn(kitbash_decay::run(compact_config(&server.url(), &ns), s1));
    let ghost = tokio::spawn(kitbash_ghost::run(compact_config(&server.url(), &ns), s2));
    let hot: Vec<String> = (0..12)
        .map(|i| format!("what is the entropy of system {i}"))
        .collect();
    let cold: Vec<String> = (0..3).map(|i| format!("a lukewarm question {i}")).collect();
    hit(&c, &k, &reflex, &hot, 6).await;
    hit(&c, &k, &reflex, &cold, 2).await;
    let (hot_ids, cold_ids) = (ids_of(&hot), ids_of(&cold));
    let want = want_under(&grains, &hot, "analytical");
    eventually(
        "every hot query has its ghost under its compact id, one activation per crossing",
        || async {
            let n: Option<u64> = c.get(k.ghost_activations()).await.expect("get");
            ghosts_by_id(&c, &k, &hot_ids).await == want && n == Some(12)
        },
    )
    .await;
    eventually("the cold queries are applied", || async {
        let n: Option<u64> = c.get(k.metrics_queries_count()).await.expect("get");
        n == Some(12 * 6 + 3 * 2)
    })
    .await;
    // The compact layout really is in use: the hot set, no seed record.
    let members: u64 = c.zcard(k.reflex_hot()).await.expect("zcard");
    assert_eq!(members, 12);
    let seed_record: u64 = c.exists(k.cms(&query_hash(&hot[0]))).await.expect("exists");
    assert_eq!(seed_record, 0);
    // The compact lookup reads what the ghost wrote.
    let look = reflex.lookup(&hot[0]).await.expect("lookup");
    let ids: Vec<String> = look.ghost_ids().iter().map(u64::to_string).collect();
    assert_eq!(Some(ids.join(",")), want[0]);
    // A hat switch recomputes the hot ghosts under the new hat, and no cold one.
    assert!(reflex.hat_set("creative").await.expect("hat set"));
    let creative = want_under(&grains, &hot, "creative");
    assert_ne!(creative, want, "the switch changes the results");
    eventually(
        "hot ghosts under creative, the version recorded",
        || async {
            let (v, r) = versions(&c, &k).await;
            ghosts_by_id(&c, &k, &hot_ids).await == creative && r == Some(v)
        },
    )
    .await;
    assert_eq!(
        ghosts_by_id(&c, &k, &cold_ids).await,
        vec![None; cold.len()],
        "cold queries get no ghost"
    );
    // Three cycles later (0.82·0.9³ < 0.8) nothing is hot, though the hot set still lists the
    // queries until decay prunes them: a switch recomputes none of them.
    let _: u64 = c.incr_by(k.decay_cycle(), 3).await.expect("incrby");
    assert!(reflex.hat_set("empathetic").await.expect("hat set"));
    eventually("the switch to empathetic is recorded", || async {
        let (v, r) = versions(&c, &k).await;
        r == Some(v)
    })
    .await;
    assert_eq!(
        ghosts_by_id(&c, &k, &hot_ids).await,
        creative,
        "queries that cooled keep their ghost"
    );
    let activations: u64 = c.get(k.ghost_activations()).await.expect("get");
    assert_eq!(activations, 12, "recomputations are not activations");
    stop1.cancel();
    stop2.cancel();
    decay.await.expect("join").expect("run");
    ghost.await.expect("join").expect("run");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_compact_ghost_refuses_a_seed_redis_naming_both_layouts_and_marks_no_empty_one() {
    let server = RedisServer::start().expect("redis");
    let ns = kitbash_testkit::namespace();
    let k = Keys::new(Namespace::new(ns.clone()).expect("ns"));
    let c = client(&server.url()).await;
    // An empty Redis: the reader starts and leaves the layout for the writer to record.
    let (s, _) = kitbash_runtime::shutdown::manual();
    let stop = s.shutdown.clone();
    let ghost = tokio::spawn(kitbash_ghost::run(compact_config(&server.url(), &ns), s));
    eventually("the recompute leader ran", || async {
        versions(&c, &k).await.1.is_some()
    })
    .await;
    stop.cancel();
    ghost.await.expect("join").expect("run");
    let layout: Option<String> = c.get(k.reflex_layout()).await.expect("get");
    assert_eq!(layout, None, "a reader does not mark the layout");
    // A seed writer marks it; a compact ghost then refuses, in-process …
    Reflex::new(c.clone(), k.clone(), 0.9)
        .claim_layout(true)
        .await
        .expect("claim seed");
    let (s, _) = kitbash_runtime::shutdown::manual();
    let r = kitbash_ghost::run(compact_config(&server.url(), &ns), s).await;
    let Err(RuntimeError::Refused { check, why }) = r else {
        panic!("expected a refusal, got {r:?}");
    };
    assert_eq!(check, "reflex layout");
    assert!(
        why.contains("\"seed\"") && why.contains("\"compact/1024\""),
        "{why}"
    );
    // … and as a binary: exit code 1, the reason on stderr.
    let mut child = spawn_ghost_with(
        &server.url(),
        &ns,
        &[("KITBASH__REFLEX__LAYOUT", "compact")],
        Stdio::piped(),
    );
    let status = wait_exit(&mut child).await;
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().expect("stderr"), &mut stderr)
        .expect("read stderr");
    assert_eq!(status.code(), Some(1), "{stderr}");
    let line = stderr
        .lines()
        .find(|l| l.contains("start-up check failed"))
        .unwrap_or_else(|| panic!("no refusal on stderr: {stderr}"));
    assert!(
        line.contains("seed") && line.contains("compact/1024"),
        "{line}"
    );
    // The refused instances started no component: no recompute leader.
    let leader: u64 = c
        .exists(k.leader(DaemonKind::Ghost, "ghost-recompute"))
        .await
        .expect("exists");
    assert_eq!(leader, 0);
}
