//! Long-running tasks and served routers: restart policies, readiness, a task's beats watched
//! like a main loop's, the bound address in the heartbeat, drain on shutdown.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use fred::prelude::*;
use kitbash_runtime::{Components, DaemonContext, Restart, RuntimeError, shutdown};
use kitbash_schema::DaemonKind;
use kitbash_testkit::RedisServer;
use kitbash_testkit::support::http_get;

use crate::support::*;

async fn context(url: &str) -> (DaemonContext, kitbash_runtime::CancellationToken) {
    let mut cfg = kitbash_runtime::Config::default();
    cfg.redis.url = url.to_owned();
    cfg.redis.namespace = keys().namespace().to_string();
    cfg.admin.listen = String::new();
    cfg.fleet.heartbeat_ms = 100;
    cfg.fleet.stuck_after_ms = 200;
    let (signals, _) = shutdown::manual();
    let stop = signals.shutdown.clone();
    let ctx = DaemonContext::start(DaemonKind::Example, cfg, signals)
        .await
        .expect("context");
    (ctx, stop)
}

fn check(ctx: &DaemonContext, name: &str) -> Option<bool> {
    let (_, checks) = ctx.health.snapshot();
    checks
        .into_iter()
        .find(|(n, _)| n == name)
        .map(|(_, ok)| ok)
}

fn fast_backoff() -> Restart {
    Restart::Backoff {
        min: Duration::from_millis(10),
        max: Duration::from_millis(40),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_task_is_restarted_under_backoff_counted_and_not_ready_meanwhile() {
    let server = RedisServer::start().expect("redis");
    let (ctx, stop) = context(&server.url()).await;
    let runs = Arc::new(AtomicU32::new(0));
    let (gate_tx, gate) = tokio::sync::watch::channel(false);
    let r = runs.clone();
    let comps = Components::new(&ctx).task("flaky", fast_backoff(), move |t| {
        let r = r.clone();
        let mut gate = gate.clone();
        async move {
            let n = r.fetch_add(1, Ordering::SeqCst);
            match n {
                0 => Err(RuntimeError::Reply {
                    command: "test",
                    detail: "first run fails".into(),
                }),
                1 => panic!("second run panics"),
                2 => Ok(()), // an early return restarts too
                _ => {
                    assert_eq!(t.restarts, n, "each run is told how many came before");
                    // Not ready until the test opens the gate.
                    let _ = gate.wait_for(|open| *open).await;
                    t.ready.set(true);
                    t.shutdown.cancelled().await;
                    Ok(())
                }
            }
        }
    });
    let run = tokio::spawn(comps.run());
    eventually("the fourth run started", || async {
        runs.load(Ordering::SeqCst) >= 4
    })
    .await;
    assert_eq!(
        check(&ctx, "task flaky"),
        Some(false),
        "not ready before it says so"
    );
    gate_tx.send(true).expect("gate");
    eventually("the task says it is ready", || async {
        check(&ctx, "task flaky") == Some(true)
    })
    .await;
    let metrics = ctx.metrics.render();
    assert!(
        metrics.contains(r#"kitbash_task_restarts_total{task="flaky"} 3"#),
        "{metrics}"
    );
    stop.cancel();
    run.await
        .expect("join")
        .expect("a restarted task does not stop the daemon");
    assert_eq!(runs.load(Ordering::SeqCst), 4, "no run after shutdown");
    ctx.finish().await;
}

/// A task that beats is watched: while its loop comes round nothing is stuck; once it stops
/// coming round (a call that never returns) it is listed as stuck — what stops the systemd
/// watchdog; when its run ends the beat is forgotten.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_that_stops_coming_round_is_stuck_and_forgotten_when_it_ends() {
    let server = RedisServer::start().expect("redis");
    let (ctx, stop) = context(&server.url()).await;
    let rounds = Arc::new(AtomicU32::new(0));
    let (hang_tx, hang) = tokio::sync::watch::channel(false);
    let r = rounds.clone();
    let comps = Components::new(&ctx).task("looping", Restart::Never, move |t| {
        let (r, hang) = (r.clone(), hang.clone());
        async move {
            while !*hang.borrow() {
                t.beat(Duration::from_millis(50));
                r.fetch_add(1, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            // The hung call: only shutdown ends it.
            t.shutdown.cancelled().await;
            Ok(())
        }
    });
    let run = tokio::spawn(comps.run());
    eventually("the loop went round 30 times", || async {
        rounds.load(Ordering::SeqCst) >= 30
    })
    .await;
    assert!(
        ctx.health.stuck(std::time::Instant::now()).is_empty(),
        "a loop that comes round is not stuck"
    );
    hang_tx.send(true).expect("hang");
    eventually("the hung loop is listed as stuck", || async {
        ctx.health.stuck(std::time::Instant::now()) == vec!["task looping".to_owned()]
    })
    .await;
    stop.cancel();
    run.await.expect("join").expect("run");
    assert!(
        ctx.health.stuck(std::time::Instant::now()).is_empty(),
        "an ended task is no longer watched"
    );
    ctx.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_without_restart_stops_the_daemon_with_its_error() {
    let server = RedisServer::start().expect("redis");
    let (ctx, stop) = context(&server.url()).await;
    let other_stopped = Arc::new(AtomicU32::new(0));
    let o = other_stopped.clone();
    let r = Components::new(&ctx)
        .task("fatal", Restart::Never, |_| async {
            Err(RuntimeError::Reply {
                command: "test",
                detail: "broken for good".into(),
            })
        })
        .task("bystander", Restart::Never, move |t| {
            let o = o.clone();
            async move {
                t.shutdown.cancelled().await;
                o.fetch_add(1, Ordering::SeqCst);
                Ok(())
            }
        })
        .run()
        .await;
    let e = r.expect_err("the daemon stops on the error");
    assert!(e.to_string().contains("broken for good"), "{e}");
    assert!(
        stop.is_cancelled(),
        "the other components were told to stop"
    );
    assert_eq!(other_stopped.load(Ordering::SeqCst), 1, "and drained");
    ctx.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_served_router_listens_reports_its_address_and_drains_on_shutdown() {
    let server = RedisServer::start().expect("redis");
    let (ctx, stop) = context(&server.url()).await;
    let router = axum::Router::new().route("/hello", axum::routing::get(|| async { "hi\n" }));
    let any: std::net::SocketAddr = "127.0.0.1:0".parse().expect("addr");
    let run = tokio::spawn(Components::new(&ctx).serve("web", any, router).run());
    eventually("the router is bound", || async {
        ctx.served_addr("web").is_some()
    })
    .await;
    let addr = ctx.served_addr("web").expect("bound");
    assert_ne!(addr.port(), 0, "the bound port, not the configured 0");
    assert_eq!(check(&ctx, "listening web"), Some(true));
    let (status, body) = tokio::task::spawn_blocking(move || http_get(addr, "/hello"))
        .await
        .expect("get");
    assert_eq!((status, body.trim()), (200, "hi"));
    // The heartbeat carries the address (what `kitbash status` shows).
    let r = connect(&server.url()).await;
    let hb_key = ctx.keys.heartbeat(DaemonKind::Example, &ctx.instance);
    eventually("the heartbeat lists the router", || async {
        let hb: Option<String> = r.client.get(&hb_key).await.expect("get");
        hb.is_some_and(|h| h.contains(&format!(r#""serves":{{"web":"{addr}"}}"#)))
    })
    .await;
    stop.cancel();
    run.await.expect("join").expect("clean stop");
    assert_eq!(ctx.served_addr("web"), None, "no longer served");
    let (status, _) = tokio::task::spawn_blocking(move || http_get(addr, "/hello"))
        .await
        .expect("get");
    assert_eq!(status, 0, "the port is closed after the drain");
    ctx.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_port_in_use_stops_the_daemon_naming_the_address() {
    let server = RedisServer::start().expect("redis");
    let (ctx, _stop) = context(&server.url()).await;
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = taken.local_addr().expect("addr");
    let e = Components::new(&ctx)
        .serve("web", addr, axum::Router::new())
        .run()
        .await
        .expect_err("cannot listen");
    assert!(e.to_string().contains(&addr.to_string()), "{e}");
    ctx.finish().await;
}
