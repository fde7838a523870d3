//! Sessions and caches: the seed's table (a session persists, a second fetch hits the cache, a
//! TTL expiry removes the entry), sliding refresh, CSRF, and errors — not panics — while Redis
//! is away.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use fred::prelude::*;
use kitbash_client::cache::{FetchError, Lookup, MemoryTokenCache, ScoreCache};
use kitbash_client::session::SessionStore;
use kitbash_testkit::RedisServer;
use serde_json::json;

use crate::support::{connect, connect_impatient, eventually, keys};

#[tokio::test]
async fn a_session_persists_and_checks_its_csrf_token() {
    let server = RedisServer::start().expect("redis");
    let keys = keys();
    let login = SessionStore::new(connect(&server.url()).await, keys.clone());
    let s = login
        .create("alice", json!({"role": "admin", "jwt": "abc"}))
        .await
        .expect("create");

    // Another process (another client) sees the same session.
    let client = connect(&server.url()).await;
    let other = SessionStore::new(client.clone(), keys.clone());
    let got = other
        .get("alice")
        .await
        .expect("get")
        .expect("session exists");
    assert_eq!(got.data, json!({"role": "admin", "jwt": "abc"}));
    assert_eq!(got.csrf_token, s.csrf_token);
    let ttl: i64 = client.pttl(keys.session("alice")).await.expect("pttl");
    assert!(ttl > 0 && ttl <= 1_800_000, "{ttl}");

    assert!(
        other
            .verify_csrf("alice", &s.csrf_token)
            .await
            .expect("verify")
    );
    assert!(!other.verify_csrf("alice", "0000").await.expect("verify"));
    assert!(
        !other
            .verify_csrf("nobody", &s.csrf_token)
            .await
            .expect("verify")
    );
    let rotated = other
        .rotate_csrf("alice")
        .await
        .expect("rotate")
        .expect("session");
    assert!(
        !other
            .verify_csrf("alice", &s.csrf_token)
            .await
            .expect("verify")
    );
    assert!(other.verify_csrf("alice", &rotated).await.expect("verify"));

    assert!(
        other
            .update("alice", &json!({"role": "viewer"}))
            .await
            .expect("update")
    );
    assert_eq!(
        login.get("alice").await.expect("get").map(|s| s.data),
        Some(json!({"role": "viewer"}))
    );
    assert!(!other.update("nobody", &json!({})).await.expect("update"));
    assert_eq!(other.get("nobody").await.expect("get"), None);

    assert!(other.destroy("alice").await.expect("destroy"));
    assert_eq!(login.get("alice").await.expect("get"), None);
}

#[tokio::test]
async fn sliding_sessions_are_extended_by_reads() {
    let server = RedisServer::start().expect("redis");
    let client = connect(&server.url()).await;
    let keys = keys();
    let sliding = SessionStore::new(client.clone(), keys.clone());
    let fixed = SessionStore::new(client.clone(), keys.clone()).with_sliding(false);
    for (store, user) in [(&sliding, "s"), (&fixed, "f")] {
        store.create(user, json!({})).await.expect("create");
        let _: i64 = client
            .pexpire(keys.session(user), 100_000, None)
            .await
            .expect("shorten");
        store.get(user).await.expect("get").expect("exists");
    }
    let s: i64 = client.pttl(keys.session("s")).await.expect("pttl");
    let f: i64 = client.pttl(keys.session("f")).await.expect("pttl");
    assert!(s > 100_000, "sliding read did not extend: {s}");
    assert!(f <= 100_000, "fixed read extended: {f}");
}

#[tokio::test]
async fn a_second_fetch_hits_the_cache() {
    let server = RedisServer::start().expect("redis");
    let client = connect(&server.url()).await;
    let keys = keys();
    let cache = MemoryTokenCache::new(client.clone(), keys.clone());
    let loads = Arc::new(AtomicU32::new(0));
    let load = || {
        let loads = loads.clone();
        async move {
            loads.fetch_add(1, Ordering::SeqCst);
            Ok::<_, std::io::Error>(br#"{"text":"remember this"}"#.to_vec())
        }
    };
    let (v1, first) = cache.fetch("m1", load).await.expect("fetch");
    let (v2, second) = cache.fetch("m1", load).await.expect("fetch");
    assert_eq!((first, second), (Lookup::Miss, Lookup::Hit));
    assert_eq!(v1, v2);
    assert_eq!(loads.load(Ordering::SeqCst), 1);
    assert_eq!(cache.stats().hits, 1);
    assert_eq!(cache.stats().misses, 1);
    let ttl: i64 = client.pttl(keys.memory("m1")).await.expect("pttl");
    assert!(ttl > 0 && ttl <= 3_600_000, "{ttl}");

    // A failing loader caches nothing.
    let e = cache
        .fetch("m2", || async {
            Err::<Vec<u8>, _>(std::io::Error::other("db down"))
        })
        .await
        .unwrap_err();
    assert!(matches!(e, FetchError::Load(_)), "{e}");
    assert_eq!(cache.get("m2").await.expect("get"), None);

    let scores = ScoreCache::new(client.clone(), keys.clone());
    let (s, l) = scores
        .fetch("u", "c", "t", || async { Ok::<_, std::io::Error>(0.5) })
        .await
        .expect("fetch");
    assert_eq!((s, l), (0.5, Lookup::Miss));
    let (s, l) = scores
        .fetch("u", "c", "t", || async { Ok::<_, std::io::Error>(9.0) })
        .await
        .expect("fetch");
    assert_eq!((s, l), (0.5, Lookup::Hit));
    let ttl: i64 = client.pttl(keys.score("u", "c", "t")).await.expect("pttl");
    assert!(ttl > 0 && ttl <= 900_000, "{ttl}");
    assert!(scores.put("u", "c", "t", f64::NAN).await.is_err());
}

#[tokio::test]
async fn a_ttl_expiry_removes_the_cache_entry() {
    let server = RedisServer::start().expect("redis");
    let client = connect(&server.url()).await;
    let keys = keys();
    let scores = ScoreCache::new(client.clone(), keys.clone()).with_ttl(Duration::from_millis(150));
    let tokens =
        MemoryTokenCache::new(client.clone(), keys.clone()).with_ttl(Duration::from_millis(150));
    scores.put("u", "c", "t", 0.75).await.expect("put");
    tokens.put("m", b"token").await.expect("put");
    assert_eq!(scores.get("u", "c", "t").await.expect("get"), Some(0.75));
    assert_eq!(tokens.get("m").await.expect("get"), Some(b"token".to_vec()));
    eventually("the score to expire", || async {
        scores.get("u", "c", "t").await.expect("get").is_none()
    })
    .await;
    eventually("the token to expire", || async {
        tokens.get("m").await.expect("get").is_none()
    })
    .await;
}

#[tokio::test]
async fn caches_and_sessions_return_errors_when_redis_is_away() {
    let mut server = RedisServer::start().expect("redis");
    let client = connect_impatient(&server.url()).await;
    let keys = keys();
    let tokens = MemoryTokenCache::new(client.clone(), keys.clone());
    let scores = ScoreCache::new(client.clone(), keys.clone());
    let sessions = SessionStore::new(client.clone(), keys.clone());
    tokens.put("m", b"x").await.expect("put");
    server.kill().expect("kill");

    assert!(tokens.get("m").await.is_err());
    assert!(tokens.put("m", b"x").await.is_err());
    let e = tokens
        .fetch("m", || async { Ok::<_, std::io::Error>(b"x".to_vec()) })
        .await
        .unwrap_err();
    assert!(matches!(e, FetchError::Cache(_)), "{e}");
    assert!(scores.get("u", "c", "t").await.is_err());
    assert!(sessions.get("alice").await.is_err());
    assert!(sessions.create("alice", json!({})).await.is_err());
    assert!(sessions.verify_csrf("alice", "t").await.is_err());
}
