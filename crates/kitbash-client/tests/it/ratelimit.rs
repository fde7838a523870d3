//! The rate limiter: the seed's "101st request in a minute fails", exactness under 8 tasks and
//! under 2 processes (every admission's server time is checked against the window promise),
//! and the fail policy while Redis is away.

use std::process::Stdio;
use std::time::Duration;

use fred::prelude::*;
use kitbash_client::ratelimit::{FailPolicy, Limits, RateLimiter};
use kitbash_schema::{Keys, Namespace};
use kitbash_testkit::RedisServer;

use crate::support::{connect, connect_impatient, keys};

/// Asserts that no half-open window of length `window_us` holds more than `limit` admissions.
fn assert_window_promise(mut admitted_us: Vec<u64>, limit: usize, window_us: u64) {
    admitted_us.sort_unstable();
    for i in 0..admitted_us.len().saturating_sub(limit) {
        let span = admitted_us[i + limit] - admitted_us[i];
        assert!(
            span >= window_us,
            "{} admissions within {span} µs (window {window_us} µs): {:?}",
            limit + 1,
            &admitted_us[i..=i + limit]
        );
    }
}

#[tokio::test]
async fn the_101st_request_in_a_minute_is_refused_with_the_time_to_retry() {
    let server = RedisServer::start().expect("redis");
    let client = connect(&server.url()).await;
    let keys = keys();
    let limiter = RateLimiter::new(client.clone(), keys.clone(), Limits::default());
    for i in 0..100 {
        let d = limiter
            .check("alice", "free", "/search")
            .await
            .expect("check");
        assert!(d.allowed, "request {} refused", i + 1);
        assert_eq!(d.limit, 100);
        assert_eq!(d.remaining, 99 - i);
        assert!(!d.degraded);
    }
    let d = limiter
        .check("alice", "free", "/search")
        .await
        .expect("check");
    assert!(!d.allowed, "the 101st request was admitted");
    assert_eq!(d.remaining, 0);
    let retry = d.retry_after.expect("retry-after");
    assert!(
        retry > Duration::ZERO && retry <= Duration::from_secs(60),
        "{retry:?}"
    );
    let headers = d.headers();
    let get = |name: &str| {
        headers
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v.clone())
    };
    assert_eq!(
        get("RateLimit-Policy").as_deref(),
        Some("\"default\";q=100;w=60")
    );
    assert_eq!(get("X-RateLimit-Remaining").as_deref(), Some("0"));
    let after: u64 = get("Retry-After")
        .expect("Retry-After")
        .parse()
        .expect("secs");
    assert!((1..=60).contains(&after), "{after}");

    // Another endpoint and another user have windows of their own.
    assert!(
        limiter
            .check("alice", "free", "/other")
            .await
            .expect("check")
            .allowed
    );
    assert!(
        limiter
            .check("bob", "free", "/search")
            .await
            .expect("check")
            .allowed
    );

    // The key is the seed's, and it expires with the window.
    let ttl: i64 = client
        .pttl(keys.rate("alice", "/search"))
        .await
        .expect("pttl");
    assert!(ttl > 0 && ttl <= 60_001, "{ttl}");

    // peek does not count; reset forgets.
    let w = limiter.peek("alice", "/search").await.expect("peek");
    assert_eq!(w.count, 100);
    assert!(limiter.reset("alice", "/search").await.expect("reset"));
    assert!(
        limiter
            .check("alice", "free", "/search")
            .await
            .expect("check")
            .allowed
    );
}

#[test]
fn limits_resolve_endpoint_then_tier_then_default() {
    let l = Limits::new(100, Duration::from_secs(60))
        .with_tier("pro", 1000)
        .with_endpoint("/search", "free", 20)
        .with_endpoint("/search", "*", 200);
    assert_eq!(l.limit_for("free", "/search"), 20);
    assert_eq!(l.limit_for("pro", "/search"), 200);
    assert_eq!(l.limit_for("pro", "/other"), 1000);
    assert_eq!(l.limit_for("free", "/other"), 100);
    assert_eq!(l.limit_for("unknown", "/other"), 100);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eight_tasks_never_admit_more_than_the_limit() {
    let server = RedisServer::start().expect("redis");
    let client = connect(&server.url()).await;
    let keys = keys();

    // A long window: exactly `limit` of 8 × 40 attempts get through.
    let limiter = RateLimiter::new(
        client.clone(),
        keys.clone(),
        Limits::new(50, Duration::from_secs(60)),
    );
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let l = limiter.clone();
        tasks.push(tokio::spawn(async move {
            let mut n = 0;
            for _ in 0..40 {
                n += usize::from(l.check("u", "t", "/hot").await.expect("check").allowed);
            }
            n
        }));
    }
    let mut admitted = 0;
    for t in tasks {
        admitted += t.await.expect("task");
    }
    assert_eq!(admitted, 50);

    // A short window that slides many times during the run: every window holds ≤ limit.
    let window = Duration::from_millis(50);
    let limiter = RateLimiter::new(client.clone(), keys.clone(), Limits::new(10, window));
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let l = limiter.clone();
        tasks.push(tokio::spawn(async move {
            let mut times = Vec::new();
            for _ in 0..400 {
                let d = l.check("u", "t", "/slide").await.expect("check");
                if d.allowed {
                    times.push(d.server_time_us);
                }
            }
            times
        }));
    }
    let mut times = Vec::new();
    for t in tasks {
        times.extend(t.await.expect("task"));
    }
    assert!(times.len() >= 10);
    assert_window_promise(times, 10, window.as_micros() as u64);
}

/// Environment of the child process of [`two_processes_never_admit_more_than_the_limit`].
const CHILD_URL: &str = "KITBASH_TEST_RATELIMIT_CHILD_URL";
const CHILD_NS: &str = "KITBASH_TEST_RATELIMIT_CHILD_NS";
const CHILD_LIMIT: u64 = 60;
const CHILD_WINDOW: Duration = Duration::from_millis(200);

/// Not a test on its own: when the parent test runs this binary with the environment above,
/// it waits for the parent's go signal, hammers one limit from 4 tasks and prints the server
/// time of every admission.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn child_hammer() {
    let (Ok(url), Ok(ns)) = (std::env::var(CHILD_URL), std::env::var(CHILD_NS)) else {
        return;
    };
    let client = connect(&url).await;
    let keys = Keys::new(Namespace::new(ns.clone()).expect("namespace"));
    let go: Option<(String, String)> = client
        .blpop(format!("{ns}:go"), 30.0)
        .await
        .expect("go signal");
    assert!(go.is_some(), "no go signal");
    let limiter = RateLimiter::new(client, keys, Limits::new(CHILD_LIMIT, CHILD_WINDOW));
    let mut tasks = Vec::new();
    for _ in 0..4 {
        let l = limiter.clone();
        tasks.push(tokio::spawn(async move {
            let mut times = Vec::new();
            for _ in 0..500 {
                let d = l.check("shared", "t", "/hot").await.expect("check");
                if d.allowed {
                    times.push(d.server_time_us);
                }
            }
            times
        }));
    }
    for t in tasks {
        for us in t.await.expect("task") {
            println!("ADMITTED {us}");
        }
    }
}

#[tokio::test]
async fn two_processes_never_admit_more_than_the_limit() {
    let server = RedisServer::start().expect("redis");
    let client = connect(&server.url()).await;
    let ns = kitbash_testkit::namespace();
    let exe = std::env::current_exe().expect("test binary");
    let children: Vec<_> = (0..2)
        .map(|_| {
            tokio::process::Command::new(&exe)
                .args(["ratelimit::child_hammer", "--exact", "--nocapture"])
                .env(CHILD_URL, server.url())
                .env(CHILD_NS, &ns)
                .stdout(Stdio::piped())
                .stderr(Stdio::inherit())
                .kill_on_drop(true)
                .spawn()
                .expect("spawn child")
        })
        .collect();
    // Both children block on the list until it holds their two tokens: they start together.
    let _: i64 = client
        .rpush(format!("{ns}:go"), vec!["a", "b"])
        .await
        .expect("go");
    let mut admitted = Vec::new();
    for child in children {
        let out = child.wait_with_output().await.expect("child output");
        assert!(out.status.success(), "child failed: {:?}", out.status);
        let text = String::from_utf8_lossy(&out.stdout);
        let mine: Vec<u64> = text
            .lines()
            .filter_map(|l| l.strip_prefix("ADMITTED "))
            .map(|v| v.trim().parse().expect("time"))
            .collect();
        assert!(!mine.is_empty(), "child admitted nothing: {text}");
        admitted.extend(mine);
    }
    assert!(admitted.len() >= CHILD_LIMIT as usize);
    assert_window_promise(
        admitted,
        CHILD_LIMIT as usize,
        CHILD_WINDOW.as_micros() as u64,
    );
}

#[tokio::test]
async fn redis_away_follows_the_fail_policy() {
    let mut server = RedisServer::start().expect("redis");
    let client = connect_impatient(&server.url()).await;
    let keys = keys();
    let open = RateLimiter::new(client.clone(), keys.clone(), Limits::default());
    let closed = open.clone().with_fail_policy(FailPolicy::Closed);
    assert!(!open.check("u", "free", "/e").await.expect("check").degraded);

    server.kill().expect("kill");
    let d = open.check("u", "free", "/e").await.expect("fail open");
    assert!(d.allowed && d.degraded, "{d:?}");
    let d = closed.check("u", "free", "/e").await.expect("fail closed");
    assert!(!d.allowed && d.degraded, "{d:?}");
    assert_eq!(d.retry_after, Some(Duration::from_secs(1)));
    assert!(d.headers().iter().any(|(n, _)| *n == "Retry-After"));

    // A reply error is not an outage: it is returned, whatever the policy.
    server.restart().expect("restart");
    crate::support::until_ok(|| async {
        client
            .set::<(), _, _>(keys.rate("u", "/wrongtype"), "x", None, None, false)
            .await
    })
    .await;
    let e = open.check("u", "free", "/wrongtype").await.unwrap_err();
    assert!(e.to_string().contains("WRONGTYPE"), "{e}");
}

/// `check_many` (one pipeline): per key exactly `limit` admitted, in batch order, each
/// admission's server time inside the window promise; other keys in the same batch unaffected.
#[tokio::test]
async fn check_many_admits_exactly_the_limit_per_key_in_batch_order() {
    let server = RedisServer::start().expect("redis");
    let client = connect(&server.url()).await;
    let limiter = RateLimiter::new(
        client.clone(),
        keys(),
        Limits::new(100, Duration::from_secs(60)),
    );
    // 150 for one key interleaved with 50 for another, in one batch.
    let mut batch = Vec::new();
    for i in 0..200 {
        batch.push(if i % 4 == 3 {
            ("bob", "free", "/b")
        } else {
            ("alice", "free", "/a")
        });
    }
    let out = limiter.check_many(&batch).await;
    assert_eq!(out.len(), batch.len());
    let mut alice = Vec::new();
    let mut bob = 0;
    for (req, d) in batch.iter().zip(&out) {
        let d = d.as_ref().expect("decision");
        if req.0 == "alice" {
            alice.push(d.allowed);
        } else {
            bob += usize::from(d.allowed);
        }
    }
    assert_eq!(bob, 50, "every bob request fits its own window");
    assert_eq!(alice.iter().filter(|a| **a).count(), 100);
    assert!(
        alice[..100].iter().all(|a| *a) && alice[100..].iter().all(|a| !*a),
        "admitted in batch order"
    );
    // A second batch after the script cache was flushed still works (NOSCRIPT → load → again).
    let _: () = client.script_flush(false).await.expect("script flush");
    let again = limiter.check_many(&[("alice", "free", "/a")]).await;
    let d = again[0].as_ref().expect("decision after SCRIPT FLUSH");
    assert!(!d.allowed && d.remaining == 0);
}

/// A window the earlier sorted-set limiter left under the key keeps counting: it is converted in
/// place on the first check, so an upgrade admits nobody past the limit.
#[tokio::test]
async fn a_window_left_by_the_sorted_set_limiter_is_carried_over() {
    let server = RedisServer::start().expect("redis");
    let client = connect(&server.url()).await;
    let keys = keys();
    let limiter = RateLimiter::new(
        client.clone(),
        keys.clone(),
        Limits::new(10, Duration::from_secs(60)),
    );
    let (secs, micros): (String, String) = client
        .custom(
            fred::types::CustomCommand::new_static(
                "TIME",
                fred::types::ClusterHash::FirstKey,
                false,
            ),
            Vec::<String>::new(),
        )
        .await
        .expect("time");
    let now: u64 = secs.parse::<u64>().expect("s") * 1_000_000 + micros.parse::<u64>().expect("us");
    let key = keys.rate("carol", "/z");
    for i in 0..9u64 {
        let t = now - 1_000 * (9 - i);
        let _: () = client
            .zadd(
                &key,
                None,
                None,
                false,
                false,
                (t as f64, format!("{t}:{i}")),
            )
            .await
            .expect("zadd");
    }
    let first = limiter.check("carol", "free", "/z").await.expect("check");
    assert!(first.allowed && first.remaining == 0, "{first:?}");
    let second = limiter.check("carol", "free", "/z").await.expect("check");
    assert!(
        !second.allowed,
        "the 11th request in the window was admitted after the upgrade"
    );
    let t: String = client.r#type(&key).await.expect("type");
    assert_eq!(t, "list");
    let w = limiter.peek("carol", "/z").await.expect("peek");
    assert_eq!(w.count, 10);
}
