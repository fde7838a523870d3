//! The rate limiter: the seed's "101st request in a minute fails", exactness under 8 tasks, under
//! 2 processes and under concurrent `check_many` batches (every admission's server time is
//! checked against the window promise), the same Redis work per check for a limit of 10 and of
//! 10,000, `check_many` deciding as sequential checks do, the windows of the earlier sorted-set
//! limiter, the key's expiry, and the fail policy while Redis is away.

use std::process::Stdio;
use std::time::Duration;

use fred::prelude::*;
use kitbash_client::ratelimit::{FailPolicy, Limits, RateLimiter};
use kitbash_schema::{Keys, Namespace};
use kitbash_testkit::RedisServer;

use crate::support::{connect, connect_impatient, keys};

/// Redis's clock (`TIME`), µs since the epoch.
async fn server_now_us(client: &Client) -> u64 {
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
    secs.parse::<u64>().expect("s") * 1_000_000 + micros.parse::<u64>().expect("us")
}

/// Every command Redis ran since `CONFIG RESETSTAT`, scripts' inner calls included, by name
/// (`INFO commandstats`), without the scripts themselves and the test's own `INFO`/`CONFIG`.
async fn inner_commands(client: &Client) -> std::collections::BTreeMap<String, u64> {
    let info: String = client
        .info(Some(fred::types::InfoKind::CommandStats))
        .await
        .expect("info");
    info.lines()
        .filter_map(|l| l.strip_prefix("cmdstat_"))
        .filter_map(|l| {
            let (name, rest) = l.split_once(':')?;
            let calls = rest
                .split(',')
                .find_map(|kv| kv.strip_prefix("calls="))?
                .parse()
                .ok()?;
            Some((name.to_owned(), calls))
        })
        .filter(|(name, _)| {
            !matches!(name.as_str(), "evalsha" | "info") && !name.starts_with("config")
        })
        .collect()
}

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
    let now = server_now_us(&client).await;
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

/// The cost of a check does not grow with the limit: with the same shape of window — half of
/// the log left the window, or the log full — a check runs the same commands (one `TIME`, a
/// fixed handful of O(1) list calls) for a limit of 10 and of 10,000, and the key never holds
/// more than `limit` elements. Asserted on the commands Redis counts, never on time.
#[tokio::test]
async fn a_limit_of_10_000_costs_the_redis_work_of_a_limit_of_10() {
    let server = RedisServer::start().expect("redis");
    let client = connect(&server.url()).await;
    let keys = keys();
    let window = Duration::from_secs(60);
    let limiter = RateLimiter::new(client.clone(), keys.clone(), Limits::new(10, window));
    limiter.load_scripts().await.expect("load");
    let mut by_limit = Vec::new();
    for limit in [10u64, 10_000] {
        let user = format!("u{limit}");
        let key = keys.rate(&user, "/e");
        // A full log whose older half left the window a second ago (a caller back from a pause).
        let now = server_now_us(&client).await;
        let stamps: Vec<String> = (0..limit)
            .map(|i| {
                if i < limit / 2 {
                    now - 1_000 - i
                } else {
                    now - window.as_micros() as u64 - 1_000_000 - i
                }
                .to_string()
            })
            .collect();
        for chunk in stamps.chunks(1_000) {
            let _: i64 = client.rpush(&key, chunk.to_vec()).await.expect("rpush");
        }
        let _: () = client.config_resetstat().await.expect("resetstat");
        let d = limiter
            .check_with_limit(&user, "/e", limit)
            .await
            .expect("check");
        assert!(d.allowed, "{d:?}");
        let after_pause = inner_commands(&client).await;
        let len: u64 = client.llen(&key).await.expect("llen");
        assert!(len <= limit, "{len} elements for a limit of {limit}");

        // The log full and inside the window: refused, and nothing written.
        let _: () = client.del(&key).await.expect("del");
        let now = server_now_us(&client).await;
        let fresh: Vec<String> = (0..limit).map(|i| (now - 1_000 - i).to_string()).collect();
        for chunk in fresh.chunks(1_000) {
            let _: i64 = client.rpush(&key, chunk.to_vec()).await.expect("rpush");
        }
        let _: () = client.config_resetstat().await.expect("resetstat");
        let d = limiter
            .check_with_limit(&user, "/e", limit)
            .await
            .expect("check");
        assert!(!d.allowed && d.remaining == 0, "{d:?}");
        let full = inner_commands(&client).await;
        let len: u64 = client.llen(&key).await.expect("llen");
        assert_eq!(len, limit);
        by_limit.push((after_pause, full));
    }
    let total = |m: &std::collections::BTreeMap<String, u64>| m.values().sum::<u64>();
    assert_eq!(
        by_limit[0], by_limit[1],
        "a check ran other commands for a limit of 10,000 than for 10"
    );
    let (after_pause, full) = &by_limit[1];
    assert!(total(after_pause) <= 12, "{after_pause:?}");
    assert!(total(full) <= 5, "{full:?}");
    assert!(!full.contains_key("lpush"), "a refusal wrote: {full:?}");

    // Filled through the limiter itself: the key holds exactly `limit` elements, never more.
    let batch: Vec<(&str, &str, &str)> = (0..10_050).map(|_| ("filler", "t", "/big")).collect();
    let big = RateLimiter::new(client.clone(), keys.clone(), Limits::new(10_000, window));
    let out = big.check_many(&batch).await;
    let admitted = out
        .iter()
        .filter(|d| d.as_ref().expect("decision").allowed)
        .count();
    assert_eq!(admitted, 10_000);
    let len: u64 = client
        .llen(keys.rate("filler", "/big"))
        .await
        .expect("llen");
    assert_eq!(len, 10_000);
    // The limit lowered: the next check trims the log to the new limit.
    let d = big
        .check_with_limit("filler", "/big", 10)
        .await
        .expect("check");
    assert!(!d.allowed, "{d:?}");
    let len: u64 = client
        .llen(keys.rate("filler", "/big"))
        .await
        .expect("llen");
    assert_eq!(len, 10);
}

/// `check_many` decides exactly what the same requests checked one by one decide (allowed and
/// remaining, in order), across several chunks of the pipeline; a foreign value under one key
/// fails that request alone, typed as Redis's `WRONGTYPE`.
#[tokio::test]
async fn check_many_decides_what_sequential_checks_decide() {
    let server = RedisServer::start().expect("redis");
    let client = connect(&server.url()).await;
    let limits = Limits::new(5, Duration::from_secs(60)).with_endpoint("/b", "*", 9);
    let one_by_one = RateLimiter::new(client.clone(), keys(), limits.clone());
    let batched_keys = keys();
    let batched = RateLimiter::new(client.clone(), batched_keys.clone(), limits);
    let users = ["ann", "ben", "cat", "dan", "eve", "fay", "gus"];
    let endpoints = ["/a", "/b", "/c"];
    // 300 requests (five chunks), a deterministic mix with repeats of every key.
    let mut x = 0x2545_f491_u64;
    let requests: Vec<(&str, &str, &str)> = (0..300)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (
                users[(x % users.len() as u64) as usize],
                "free",
                endpoints[((x >> 8) % endpoints.len() as u64) as usize],
            )
        })
        .collect();
    let mut sequential = Vec::new();
    for (u, t, e) in &requests {
        let d = one_by_one.check(u, t, e).await.expect("check");
        sequential.push((d.allowed, d.remaining));
    }
    let together: Vec<(bool, u64)> = batched
        .check_many(&requests)
        .await
        .into_iter()
        .map(|d| {
            let d = d.expect("decision");
            (d.allowed, d.remaining)
        })
        .collect();
    assert_eq!(together, sequential);
    assert!(sequential.iter().any(|d| d.0) && sequential.iter().any(|d| !d.0));

    // A string under one key: that request fails with WRONGTYPE, its neighbours are decided.
    let _: () = client
        .set(batched_keys.rate("zed", "/a"), "x", None, None, false)
        .await
        .expect("set");
    let out = batched
        .check_many(&[
            ("new1", "free", "/a"),
            ("zed", "free", "/a"),
            ("new2", "free", "/a"),
        ])
        .await;
    assert!(out[0].as_ref().expect("decision").allowed);
    assert!(out[2].as_ref().expect("decision").allowed);
    let e = out[1].as_ref().expect_err("WRONGTYPE");
    assert!(
        matches!(e, kitbash_client::ClientError::Redis(r) if r.details().starts_with("WRONGTYPE")),
        "{e}"
    );
}

/// Batches share one `TIME` per script call, so many admissions carry equal timestamps: four
/// tasks sending `check_many` batches at one hot key through a window that slides many times
/// during the run never get more than `limit` admissions into any window.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_batches_never_admit_more_than_the_limit() {
    let server = RedisServer::start().expect("redis");
    let client = connect(&server.url()).await;
    let window = Duration::from_millis(40);
    let limiter = RateLimiter::new(client.clone(), keys(), Limits::new(10, window));
    let mut tasks = Vec::new();
    for _ in 0..4 {
        let l = limiter.clone();
        tasks.push(tokio::spawn(async move {
            let mut times = Vec::new();
            for _ in 0..150 {
                let batch = [("hot", "t", "/k"); 8];
                for d in l.check_many(&batch).await {
                    let d = d.expect("decision");
                    if d.allowed {
                        times.push(d.server_time_us);
                    }
                }
            }
            times
        }));
    }
    let mut times = Vec::new();
    for t in tasks {
        times.extend(t.await.expect("task"));
    }
    assert!(times.len() > 10, "{}", times.len());
    let mut sorted = times.clone();
    sorted.sort_unstable();
    sorted.dedup();
    assert!(
        sorted.len() < times.len(),
        "no two admissions shared a timestamp"
    );
    assert_window_promise(times, 10, window.as_micros() as u64);
}

/// The key always expires: an admission sets the window as its TTL, a refusal leaves it alone,
/// and a full sorted-set window of the earlier limiter — converted on its first check, which
/// refuses — keeps at most `limit` of its in-window admissions and gets a TTL too (a user who
/// never comes back leaves nothing behind).
#[tokio::test]
async fn every_window_key_expires() {
    let server = RedisServer::start().expect("redis");
    let client = connect(&server.url()).await;
    let keys = keys();
    let window = Duration::from_secs(30);
    let limiter = RateLimiter::new(client.clone(), keys.clone(), Limits::new(3, window));
    let key = keys.rate("tia", "/t");
    assert!(
        limiter
            .check("tia", "free", "/t")
            .await
            .expect("check")
            .allowed
    );
    let ttl: i64 = client.pttl(&key).await.expect("pttl");
    assert!(ttl > 29_000 && ttl <= 30_001, "{ttl}");
    for _ in 0..2 {
        assert!(
            limiter
                .check("tia", "free", "/t")
                .await
                .expect("check")
                .allowed
        );
    }
    let _: () = client.pexpire(&key, 5_000, None).await.expect("pexpire");
    assert!(
        !limiter
            .check("tia", "free", "/t")
            .await
            .expect("check")
            .allowed
    );
    let ttl: i64 = client.pttl(&key).await.expect("pttl");
    assert!(ttl > 0 && ttl <= 5_000, "a refusal moved the expiry: {ttl}");

    // A full sorted set (5 in the window, 2 older), no TTL, as a crashed writer could leave it.
    let now = server_now_us(&client).await;
    let zkey = keys.rate("ugo", "/t");
    for (i, age_ms) in [1u64, 2, 3, 4, 5, 40_000, 50_000].into_iter().enumerate() {
        let t = now - age_ms * 1_000;
        let _: () = client
            .zadd(
                &zkey,
                None,
                None,
                false,
                false,
                (t as f64, format!("{t}:{i}")),
            )
            .await
            .expect("zadd");
    }
    let d = limiter.check("ugo", "free", "/t").await.expect("check");
    assert!(!d.allowed, "{d:?}");
    let t: String = client.r#type(&zkey).await.expect("type");
    assert_eq!(t, "list");
    let len: u64 = client.llen(&zkey).await.expect("llen");
    assert_eq!(len, 3, "the converted window holds more than the limit");
    let ttl: i64 = client.pttl(&zkey).await.expect("pttl");
    assert!(
        ttl > 0 && ttl <= 30_001,
        "the converted window has no expiry: {ttl}"
    );
}
