//! The recompute leader: with two instances a hat switch is recomputed by exactly one of them
//! (each instance's `/metrics`), a `kill -9`'d leader is replaced, and a version whose
//! recomputation was left behind (`kitbash:ghost:recomputed` < `kitbash:reflex:version`, what a
//! leader dying mid-way leaves) is caught up by the next instance to start.

use std::net::SocketAddr;
use std::process::Stdio;

use fred::prelude::*;
use kitbash_runtime::heartbeat::fleet_member;
use kitbash_schema::{DaemonKind, Keys};
use kitbash_testkit::RedisServer;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::compact::{compact_config, ghosts_by_id, hit, ids_of, setup, versions, want_under};
use crate::{eventually, signal, spawn_ghost_with, wait_exit};

/// The admin addresses of the ghost instances in the fleet register.
async fn admins(c: &Client, k: &Keys) -> Vec<SocketAddr> {
    let members: Vec<String> = c
        .zrange(k.fleet(), 0, -1, None, false, None, false)
        .await
        .expect("zrange");
    let prefix = fleet_member(DaemonKind::Ghost, "");
    let mut out = Vec::new();
    for m in members {
        let Some(instance) = m.strip_prefix(&prefix) else {
            continue;
        };
        let body: Option<String> = c
            .get(k.heartbeat(DaemonKind::Ghost, instance))
            .await
            .expect("get");
        let admin: Option<SocketAddr> = body
            .and_then(|b| serde_json::from_str::<serde_json::Value>(&b).ok())
            .and_then(|b| b["admin"].as_str()?.parse().ok());
        out.extend(admin);
    }
    out
}

/// The value of the sample `name` (no labels) on the `/metrics` of `addr` (0 when absent).
async fn metric(addr: SocketAddr, name: &str) -> f64 {
    let mut s = tokio::net::TcpStream::connect(addr).await.expect("connect");
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .expect("write");
    let mut out = String::new();
    s.read_to_string(&mut out).await.expect("read");
    out.lines()
        .filter_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse::<f64>().ok())
        .sum()
}

/// Per instance: (ghosts recomputed, recomputations completed, bank version).
async fn recompute_metrics(addrs: &[SocketAddr]) -> Vec<(f64, f64, f64)> {
    let mut out = Vec::new();
    for a in addrs {
        out.push((
            metric(*a, "kitbash_ghost_recomputed_total").await,
            metric(*a, "kitbash_ghost_recomputations_total").await,
            metric(*a, "kitbash_ghost_bank_version").await,
        ));
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_two_instances_each_hat_switch_is_recomputed_by_exactly_one() {
    let server = RedisServer::start().expect("redis");
    let ns = kitbash_testkit::namespace();
    let (c, k, reflex, grains) = setup(&server, &ns).await;
    let mut cfg = compact_config(&server.url(), &ns);
    cfg.admin.listen = "127.0.0.1:0".to_owned();
    cfg.fleet.heartbeat_ms = 200;
    let mut stops = Vec::new();
    let (s, _) = kitbash_runtime::shutdown::manual();
    stops.push(s.shutdown.clone());
    let decay = tokio::spawn(kitbash_decay::run(cfg.clone(), s));
    let mut ghosts = Vec::new();
    for _ in 0..2 {
        let (s, _) = kitbash_runtime::shutdown::manual();
        stops.push(s.shutdown.clone());
        ghosts.push(tokio::spawn(kitbash_ghost::run(cfg.clone(), s)));
    }
    let hot: Vec<String> = (0..12)
        .map(|i| format!("what is the entropy of system {i}"))
        .collect();
    let ids = ids_of(&hot);
    hit(&c, &k, &reflex, &hot, 6).await;
    let want = want_under(&grains, &hot, "analytical");
    eventually("ghosts of the crossings, the version recorded", || async {
        let n: Option<u64> = c.get(k.ghost_activations()).await.expect("get");
        let (v, r) = versions(&c, &k).await;
        ghosts_by_id(&c, &k, &ids).await == want && n == Some(12) && r == Some(v)
    })
    .await;
    eventually("both instances in the fleet register", || async {
        admins(&c, &k).await.len() == 2
    })
    .await;
    let addrs = admins(&c, &k).await;
    let settled = |v: u64| {
        let addrs = addrs.clone();
        async move {
            recompute_metrics(&addrs)
                .await
                .iter()
                .all(|m| m.2 == v as f64)
        }
    };
    let (v, _) = versions(&c, &k).await;
    eventually("both banks loaded", || settled(v)).await;
    // Several switches: an instance that recomputed on its own would show in the next step's
    // count at the latest, since it reloads for that step only after its recomputation.
    for hat in ["creative", "empathetic", "deliberative"] {
        let before = recompute_metrics(&addrs).await;
        assert!(reflex.hat_set(hat).await.expect("hat set"));
        let want = want_under(&grains, &hot, hat);
        let (v, _) = versions(&c, &k).await;
        eventually(
            &format!("ghosts under {hat}, both banks at {v}"),
            || async {
                let (_, r) = versions(&c, &k).await;
                ghosts_by_id(&c, &k, &ids).await == want && r == Some(v) && settled(v).await
            },
        )
        .await;
        let after = recompute_metrics(&addrs).await;
        let ghosts: Vec<f64> = after.iter().zip(&before).map(|(a, b)| a.0 - b.0).collect();
        let passes: Vec<f64> = after.iter().zip(&before).map(|(a, b)| a.1 - b.1).collect();
        assert_eq!(
            (ghosts.iter().sum::<f64>(), passes.iter().sum::<f64>()),
            (12.0, 1.0),
            "{hat}: recomputed by exactly one instance, once (ghosts {ghosts:?}, passes {passes:?})"
        );
        assert!(
            ghosts.contains(&12.0),
            "{hat}: one instance did it all: {ghosts:?}"
        );
    }
    for s in &stops {
        s.cancel();
    }
    decay.await.expect("join").expect("run");
    for g in ghosts {
        g.await.expect("join").expect("run");
    }
}

/// A child process killed when dropped (a failed test leaves no daemon behind).
struct Proc(kitbash_testkit::KillOnDrop);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_recompute_leader_is_replaced_and_a_version_left_behind_is_caught_up() {
    let server = RedisServer::start().expect("redis");
    let ns = kitbash_testkit::namespace();
    let (c, k, reflex, grains) = setup(&server, &ns).await;
    let (s, _) = kitbash_runtime::shutdown::manual();
    let stop_decay = s.shutdown.clone();
    let decay = tokio::spawn(kitbash_decay::run(compact_config(&server.url(), &ns), s));
    let env = [
        ("KITBASH__REFLEX__LAYOUT", "compact"),
        ("KITBASH__GHOST__POLL_MS", "100"),
    ];
    let mut procs: Vec<Proc> = (0..2)
        .map(|_| Proc(spawn_ghost_with(&server.url(), &ns, &env, Stdio::null())))
        .collect();
    let hot: Vec<String> = (0..12)
        .map(|i| format!("what is the entropy of system {i}"))
        .collect();
    let ids = ids_of(&hot);
    hit(&c, &k, &reflex, &hot, 6).await;
    let want = want_under(&grains, &hot, "analytical");
    eventually("ghosts of the crossings, the version recorded", || async {
        let (v, r) = versions(&c, &k).await;
        ghosts_by_id(&c, &k, &ids).await == want && r == Some(v)
    })
    .await;
    // The leader is killed right after the version moves: whether it recorded the version, did
    // part of the work or none, the survivor ends with every hot ghost under the new hat.
    let lease = k.leader(DaemonKind::Ghost, "ghost-recompute");
    let token: String = c.get(&lease).await.expect("a leader holds the lease");
    let leader = procs
        .iter()
        .position(|p| token.contains(&format!("-{}-", p.0.id())))
        .expect("the lease names one of the processes");
    assert!(reflex.hat_set("creative").await.expect("hat set"));
    let mut killed = procs.remove(leader);
    signal(&killed.0, "-KILL");
    let _ = wait_exit(&mut killed.0).await;
    let want = want_under(&grains, &hot, "creative");
    eventually("the survivor recomputed under creative", || async {
        let (v, r) = versions(&c, &k).await;
        ghosts_by_id(&c, &k, &ids).await == want && r == Some(v)
    })
    .await;
    let mut survivor = procs.remove(0);
    signal(&survivor.0, "-TERM");
    assert_eq!(wait_exit(&mut survivor.0).await.code(), Some(0));
    // No ghost runs: the version moves, the recomputation is left behind with what a leader
    // dying mid-way would leave (some ghosts rewritten, others not).
    assert!(reflex.hat_set("empathetic").await.expect("hat set"));
    let (v, r) = versions(&c, &k).await;
    assert_eq!(r, Some(v - 1));
    for id in &ids[..6] {
        let _: () = c
            .set(k.ghost(id), "1,2,3", None, None, false)
            .await
            .expect("set");
    }
    let mut next = Proc(spawn_ghost_with(&server.url(), &ns, &env, Stdio::null()));
    let want = want_under(&grains, &hot, "empathetic");
    eventually("the next instance caught up", || async {
        let (v, r) = versions(&c, &k).await;
        ghosts_by_id(&c, &k, &ids).await == want && r == Some(v)
    })
    .await;
    signal(&next.0, "-TERM");
    assert_eq!(wait_exit(&mut next.0).await.code(), Some(0));
    stop_decay.cancel();
    decay.await.expect("join").expect("run");
}
