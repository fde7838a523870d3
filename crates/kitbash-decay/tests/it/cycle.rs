//! The decay cycle: equal to a naive reference over many cycles, in-process and across a
//! leader `kill -9`; a stale leader is fenced out; O(1) bookkeeping stays consistent.

use fred::prelude::*;
use kitbash_decay::cycle::DecayCycle;
use kitbash_runtime::DaemonContext;
use kitbash_runtime::leader::LeaderTerm;
use kitbash_schema::DaemonKind;
use kitbash_testkit::RedisServer;

use crate::support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resonance_equals_the_naive_reference_over_many_cycles() {
    let server = RedisServer::start().expect("redis");
    let ns = kitbash_testkit::namespace();
    let k = keys(&ns);
    let c = client(&server.url()).await;
    let (signals, _) = kitbash_runtime::shutdown::manual();
    let stop = signals.shutdown.clone();
    let task = tokio::spawn(kitbash_decay::run(config(&server.url(), &ns), signals));
    let mut d = Driver::new(c.clone(), k.clone(), 3);
    for i in 0..160 {
        d.step(i).await;
    }
    assert!(cycle(&c, &k).await >= 30, "ran over many cycles");
    d.check().await;
    // The seed's metrics: every query counted, latency percentiles from the histogram.
    let n: u64 = c.get(k.metrics_queries_count()).await.expect("get");
    assert_eq!(n, 160);
    eventually("p99 written", || async {
        let p: Option<f64> = c.get(k.metrics_latency_p99()).await.expect("get");
        // every latency was 2.0 ms: the bucket's upper edge is within 2%
        p.is_some_and(|p| (2.0..=2.04).contains(&p))
    })
    .await;
    stop.cancel();
    task.await.expect("join").expect("run");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stale_leader_is_fenced_out_and_the_clock_stays_consistent() {
    let server = RedisServer::start().expect("redis");
    let ns = kitbash_testkit::namespace();
    let k = keys(&ns);
    let c = client(&server.url()).await;
    let mut cfg = config(&server.url(), &ns);
    cfg.decay.period_ms = 1000;
    let (signals, _) = kitbash_runtime::shutdown::manual();
    let ctx = DaemonContext::start(DaemonKind::Decay, cfg, signals)
        .await
        .expect("ctx");
    let decay = DecayCycle::new(&ctx);
    let lease = k.leader(DaemonKind::Decay, "decay-cycle");
    let mine = LeaderTerm {
        key: lease.clone(),
        token: "me#1".into(),
    };
    let _: () = c.set(&lease, "me#1", None, None, false).await.expect("set");
    // First run starts the clock; a period later cycles are due.
    let first = decay.apply_due(&mine).await.expect("run");
    assert!(first.fenced_in);
    assert_eq!(first.applied, 0);
    // Pretend the clock started 5.5 periods ago: exactly 5 cycles are due, once.
    let last: i64 = c.hget(k.decay_clock(), "last_ms").await.expect("hget");
    let _: () = c
        .hset(k.decay_clock(), ("last_ms", last - 5_500))
        .await
        .expect("hset");
    // A paused ex-leader whose lease was taken over changes nothing.
    let _: () = c
        .set(&lease, "other#9", None, None, false)
        .await
        .expect("set");
    let stale = decay.apply_due(&mine).await.expect("run");
    assert!(!stale.fenced_in, "{stale:?}");
    assert_eq!(cycle(&c, &k).await, 0);
    let _: () = c.set(&lease, "me#1", None, None, false).await.expect("set");
    let run = decay.apply_due(&mine).await.expect("run");
    assert_eq!((run.applied, run.cycle), (5, 5));
    let again = decay.apply_due(&mine).await.expect("run");
    assert_eq!(again.applied, 0, "never twice for one period");
    let now_last: i64 = c.hget(k.decay_clock(), "last_ms").await.expect("hget");
    assert_eq!(now_last, last - 500, "the clock advanced by whole periods");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_killed_mid_run_is_replaced_without_skipping_or_repeating_a_cycle() {
    let server = RedisServer::start().expect("redis");
    let ns = kitbash_testkit::namespace();
    let k = keys(&ns);
    let c = client(&server.url()).await;
    let mut a = spawn_decay(&server.url(), &ns);
    let mut b = spawn_decay(&server.url(), &ns);
    let lease = k.leader(DaemonKind::Decay, "decay-cycle");
    let mut d = Driver::new(c.clone(), k.clone(), 3);
    for i in 0..80 {
        d.step(i).await;
    }
    // Who leads? The lease holds `decay-{host}-{pid}-{rand}#{n}`.
    let token: String = c.get(&lease).await.expect("lease");
    let instance = token.rsplit_once('#').map_or(token.as_str(), |(i, _)| i);
    let pid: u32 = instance
        .rsplit('-')
        .nth(1)
        .and_then(|p| p.parse().ok())
        .expect("pid in the instance name");
    let (leader, survivor) = if a.id() == pid {
        (&mut a, &mut b)
    } else {
        (&mut b, &mut a)
    };
    assert_eq!(leader.id(), pid);
    signal(leader, "-KILL");
    let _ = wait_exit(leader).await;
    let at_kill = cycle(&c, &k).await;
    // The survivor takes the lease over and catches up every period missed meanwhile.
    eventually("the survivor leads", || async {
        let t: Option<String> = c.get(&lease).await.expect("get");
        t.is_some_and(|t| !t.contains(&format!("-{pid}-")))
    })
    .await;
    for i in 80..160 {
        d.step(i).await;
    }
    assert!(cycle(&c, &k).await > at_kill + 5);
    d.check().await;
    // The cycle count is exactly the whole periods of Redis time between the clock's origin and
    // its newest cycle: none skipped, none twice (read atomically).
    let trx = c.multi();
    let _: () = trx.get(k.decay_cycle()).await.expect("get");
    let _: () = trx
        .hmget(k.decay_clock(), vec!["origin_ms", "last_ms"])
        .await
        .expect("hmget");
    let out: Vec<fred::types::Value> = trx.exec(true).await.expect("exec");
    let int = |v: &fred::types::Value| v.as_i64().expect("integer");
    let n = int(&out[0]);
    let clock = match &out[1] {
        fred::types::Value::Array(a) => a.clone(),
        other => panic!("{other:?}"),
    };
    let (origin, last) = (int(&clock[0]), int(&clock[1]));
    assert_eq!((last - origin) % PERIOD_MS as i64, 0);
    assert_eq!(
        (last - origin) / PERIOD_MS as i64,
        n,
        "cycles = periods elapsed"
    );
    signal(survivor, "-TERM");
    assert_eq!(wait_exit(survivor).await.code(), Some(0));
}
