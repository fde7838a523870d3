//! Leader tasks: one of several instances runs the task; when it dies, another takes over; a
//! stale leader's fenced write is refused.

use std::time::Duration;

use fred::prelude::*;
use fred::types::Value;
use fred::types::scripts::Script;
use kitbash_runtime::leader::LeaderTerm;
use kitbash_runtime::{Components, DaemonContext, lease, shutdown};
use kitbash_schema::DaemonKind;
use kitbash_testkit::RedisServer;

use crate::support::*;

/// Appends this instance's name to a list, fenced by the leadership token.
const RECORD: &str = "redis.call('RPUSH', KEYS[2], ARGV[2]) return 1";

struct Instance {
    task: tokio::task::JoinHandle<()>,
    stop: kitbash_runtime::CancellationToken,
    name: String,
}

async fn start(url: &str, ns: &str, log: String) -> Instance {
    let mut cfg = kitbash_runtime::Config::default();
    cfg.redis.url = url.to_owned();
    cfg.redis.namespace = ns.to_owned();
    cfg.admin.listen = String::new();
    cfg.fleet.heartbeat_ms = 200;
    let (signals, _) = shutdown::manual();
    let stop = signals.shutdown.clone();
    let ctx = DaemonContext::start(DaemonKind::Example, cfg, signals)
        .await
        .expect("context");
    let name = ctx.instance.clone();
    let client = ctx.redis.client.clone();
    let me = name.clone();
    let script = Script::from_lua(format!("{}{RECORD}", LeaderTerm::FENCE_LUA));
    let task = tokio::spawn(async move {
        let _ = Components::new(&ctx)
            .leader(
                "tick",
                Duration::from_millis(50),
                600,
                move |term: LeaderTerm| {
                    let (client, log, me, script) =
                        (client.clone(), log.clone(), me.clone(), script.clone());
                    async move {
                        let _: Result<Value, _> = script
                            .evalsha_with_reload(&client, vec![term.key, log], vec![term.token, me])
                            .await;
                    }
                },
            )
            .run()
            .await;
        ctx.finish().await;
    });
    Instance { task, stop, name }
}

async fn log(r: &kitbash_runtime::Redis, key: &str) -> Vec<String> {
    r.client.lrange(key, 0, -1).await.expect("lrange")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_instance_leads_and_another_takes_over_when_it_dies() {
    let server = RedisServer::start().expect("redis");
    let keys = keys();
    let ns = keys.namespace().to_string();
    let r = connect(&server.url()).await;
    let key = keys.stream(kitbash_schema::StreamName::Queries) + ":leader-log";
    let a = start(&server.url(), &ns, key.clone()).await;
    let b = start(&server.url(), &ns, key.clone()).await;
    eventually("the task ran a few times", || async {
        log(&r, &key).await.len() >= 10
    })
    .await;
    let runs = log(&r, &key).await;
    let leader = runs[0].clone();
    assert!(
        runs.iter().all(|n| *n == leader),
        "one leader at a time: {runs:?}"
    );
    // The leader dies without releasing (like kill -9): the other takes over after the lease.
    let (dead, alive) = if leader == a.name { (a, b) } else { (b, a) };
    dead.task.abort();
    let _ = dead.task.await;
    dead.stop.cancel();
    let before = log(&r, &key).await.len();
    eventually("the other instance took over", || async {
        log(&r, &key).await[before..].contains(&alive.name)
    })
    .await;
    // A write with the dead leader's old term is refused by the fence.
    let lease_key = keys.leader(DaemonKind::Example, "tick");
    let stale = Script::from_lua(format!("{}{RECORD}", LeaderTerm::FENCE_LUA));
    let n: i64 = stale
        .evalsha_with_reload(
            &r.client,
            vec![lease_key.clone(), key.clone()],
            vec![format!("{}#1", dead.name), "stale".to_owned()],
        )
        .await
        .expect("eval");
    assert_eq!(n, 0, "a stale leader's write is fenced");
    let holder = lease::holder(&r.client, &lease_key)
        .await
        .expect("get")
        .expect("held");
    assert_eq!(lease::instance_of(&holder), alive.name);
    alive.stop.cancel();
    alive.task.await.expect("join");
    assert!(!log(&r, &key).await.contains(&"stale".to_owned()));
}
