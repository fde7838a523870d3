//! `kitbash ratelimit show|reset`, `kitbash cache clear` and `kitbash keys top` as the binary,
//! against a real Redis: what they print, what they delete, and what they leave alone (other
//! users, other families, other namespaces) — also on a 3-master cluster, where they visit every
//! primary.

use std::process::Command;
use std::time::Duration;

use fred::prelude::*;
use kitbash_client::ratelimit::{Limits, RateLimiter};
use kitbash_schema::{Keys, Namespace};
use kitbash_testkit::RedisServer;

fn kitbash(args: &[&str], url: &str, ns: &str) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_kitbash"))
        .args(args)
        .env(
            "KITBASH_CONFIG_DIR",
            concat!(env!("CARGO_MANIFEST_DIR"), "/../../config"),
        )
        .env_remove("KITBASH_PROFILE")
        .env("KITBASH__REDIS__URL", url)
        .env("KITBASH__REDIS__NAMESPACE", ns)
        .output()
        .expect("run kitbash");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

async fn connect(url: &str) -> Client {
    let cfg = kitbash_runtime::config::RedisConfig {
        url: url.to_owned(),
        ..Default::default()
    };
    kitbash_runtime::redis::connect_client(&cfg, Duration::from_secs(10))
        .await
        .expect("connect")
}

fn keys(ns: &str) -> Keys {
    Keys::new(Namespace::new(ns.to_owned()).expect("ns"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ratelimit_show_counts_the_window_and_reset_forgets_only_that_user() {
    let server = RedisServer::start().expect("redis");
    let ns = kitbash_testkit::namespace();
    let k = keys(&ns);
    let c = connect(&server.url()).await;
    // The repository config's window (60 s), so the CLI reads the same windows.
    let limiter = RateLimiter::new(
        c.clone(),
        k.clone(),
        Limits::new(100, Duration::from_secs(60)),
    );
    for _ in 0..3 {
        limiter
            .check("alice", "free", "/search")
            .await
            .expect("check");
    }
    limiter
        .check("alice", "free", "/upload")
        .await
        .expect("check");
    limiter
        .check("bob", "free", "/search")
        .await
        .expect("check");

    let (ok, out, err) = kitbash(&["ratelimit", "show", "alice"], &server.url(), &ns);
    assert!(ok, "{err}");
    let line = |e: &str| {
        out.lines()
            .find(|l| l.split_whitespace().next() == Some(e))
            .map(|l| l.split_whitespace().nth(1).unwrap_or_default().to_owned())
    };
    assert_eq!(line("/search").as_deref(), Some("3"), "{out}");
    assert_eq!(line("/upload").as_deref(), Some("1"), "{out}");

    let (ok, out, err) = kitbash(
        &["ratelimit", "reset", "alice", "/search"],
        &server.url(),
        &ns,
    );
    assert!(ok, "{err}");
    assert!(out.contains("reset 1 "), "{out}");
    let (_, out, _) = kitbash(&["ratelimit", "show", "alice"], &server.url(), &ns);
    assert!(
        !out.lines().any(|l| l.starts_with("/search")),
        "reset window still listed: {out}"
    );
    assert!(out.lines().any(|l| l.starts_with("/upload")), "{out}");
    let (ok, out, _) = kitbash(&["ratelimit", "reset", "alice"], &server.url(), &ns);
    assert!(ok && out.contains("reset 1 "), "{out}");
    let (_, out, _) = kitbash(&["ratelimit", "show", "alice"], &server.url(), &ns);
    assert!(out.contains("no rate-limit windows"), "{out}");
    // bob was never touched.
    let n: u64 = c.exists(k.rate("bob", "/search")).await.expect("exists");
    assert_eq!(n, 1, "another user's window survives");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cache_clear_deletes_one_family_of_one_namespace_and_dry_run_deletes_nothing() {
    let server = RedisServer::start().expect("redis");
    let ns = kitbash_testkit::namespace();
    let k = keys(&ns);
    let other = keys(&format!("{ns}x"));
    let c = connect(&server.url()).await;
    for i in 0..1_500 {
        let _: () = c
            .set(k.memory(&format!("m{i}")), "v", None, None, false)
            .await
            .expect("set");
    }
    let _: () = c
        .set(k.session("u1"), "s", None, None, false)
        .await
        .expect("set");
    let _: () = c
        .set(other.memory("m1"), "v", None, None, false)
        .await
        .expect("set");

    let (ok, out, err) = kitbash(
        &["cache", "clear", "memory", "--dry-run"],
        &server.url(),
        &ns,
    );
    assert!(ok, "{err}");
    assert!(out.contains("would delete 1500 keys"), "{out}");
    let n: u64 = c.dbsize().await.expect("dbsize");
    assert_eq!(n, 1_502, "a dry run deletes nothing");

    let (ok, out, err) = kitbash(&["cache", "clear", "memory"], &server.url(), &ns);
    assert!(ok, "{err}");
    assert!(out.contains("deleted 1500 keys"), "{out}");
    let left: u64 = c
        .exists(vec![k.session("u1"), other.memory("m1")])
        .await
        .expect("exists");
    assert_eq!(left, 2, "other families and namespaces are left alone");
    let n: u64 = c.dbsize().await.expect("dbsize");
    assert_eq!(n, 2);

    let (ok, _, err) = kitbash(&["cache", "clear", "nonsense"], &server.url(), &ns);
    assert!(!ok, "an unknown family is refused");
    assert!(err.contains("families: "), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_top_ranks_by_size_and_only_claims_hotness_under_lfu() {
    let server = RedisServer::start().expect("redis");
    let ns = kitbash_testkit::namespace();
    let k = keys(&ns);
    let c = connect(&server.url()).await;
    for i in 0..50 {
        let _: () = c
            .set(k.memory(&format!("small{i}")), "v", None, None, false)
            .await
            .expect("set");
    }
    let big = k.memory("big");
    let _: () = c
        .set(&big, "x".repeat(100_000), None, None, false)
        .await
        .expect("set");
    // Outside the namespace: never sampled.
    let _: () = c
        .set("elsewhere:huge", "y".repeat(500_000), None, None, false)
        .await
        .expect("set");

    let (ok, out, err) = kitbash(&["keys", "top", "--json", "-n", "3"], &server.url(), &ns);
    assert!(ok, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).expect("json");
    assert_eq!(v["sampled"], 51, "{v}");
    assert_eq!(v["largest"][0]["key"], big.as_str(), "{v}");
    assert!(
        v["largest"][0]["bytes"].as_u64().unwrap_or(0) >= 100_000,
        "{v}"
    );
    assert_eq!(v["largest"].as_array().map(Vec::len), Some(3));
    assert!(v["hottest"].is_null(), "no LFU policy, no hotness: {v}");

    let _: () = c
        .config_set("maxmemory-policy", "allkeys-lfu")
        .await
        .expect("config set");
    for _ in 0..200 {
        let _: Option<String> = c.get(k.memory("small7")).await.expect("get");
    }
    let (ok, out, err) = kitbash(&["keys", "top", "--json", "-n", "3"], &server.url(), &ns);
    assert!(ok, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).expect("json");
    assert_eq!(v["policy"], "allkeys-lfu");
    assert_eq!(
        v["hottest"][0]["key"],
        k.memory("small7").as_str(),
        "the key read 200 times is the hottest: {v}"
    );
}

/// On a 3-master cluster each primary holds only its slots' keys: `cache clear`, `keys top`
/// (a `--sample` shared between the primaries) and `status` visit every primary (one node's
/// `SCAN` would see about a third), and
/// clearing deletes keys of many slots without a cross-slot `UNLINK`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_a_cluster_cache_clear_keys_top_and_status_visit_every_primary() {
    let cluster = kitbash_testkit::RedisCluster::builder()
        .config("maxmemory-policy", "allkeys-lfu")
        .start()
        .expect("cluster");
    let url = cluster.cluster_url();
    let ns = kitbash_testkit::namespace();
    let k = keys(&ns);
    let c = connect(&url).await;
    for i in 0..600 {
        let _: () = c
            .set(k.memory(&format!("m{i}")), "v", None, None, false)
            .await
            .expect("set");
    }
    let big = k.memory("big");
    let _: () = c
        .set(&big, "x".repeat(100_000), None, None, false)
        .await
        .expect("set");
    for _ in 0..200 {
        let _: Option<String> = c.get(k.memory("m7")).await.expect("get");
    }
    let _: () = c
        .set(k.session("u1"), "s", None, None, false)
        .await
        .expect("set");

    let (ok, out, err) = kitbash(&["cache", "clear", "memory", "--dry-run"], &url, &ns);
    assert!(ok, "{err}");
    assert!(out.contains("would delete 601 keys"), "{out}");

    let (ok, out, err) = kitbash(&["keys", "top", "--json", "-n", "3"], &url, &ns);
    assert!(ok, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).expect("json");
    assert_eq!(v["sampled"], 602, "{v}");
    assert_eq!(v["largest"][0]["key"], big.as_str(), "{v}");
    assert_eq!(v["hottest"][0]["key"], k.memory("m7").as_str(), "{v}");

    // A small sample is shared between the primaries, not filled from the first one.
    let (ok, out, err) = kitbash(
        &["keys", "top", "--json", "--sample", "30", "-n", "30"],
        &url,
        &ns,
    );
    assert!(ok, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).expect("json");
    assert_eq!(v["sampled"], 30, "{v}");
    let owners: std::collections::BTreeSet<usize> = v["largest"]
        .as_array()
        .expect("largest")
        .iter()
        .filter_map(|x| {
            let key = x["key"].as_str()?;
            (0..3).find(|&i| {
                cluster
                    .node(i)
                    .cmd(&["EXISTS", key])
                    .is_ok_and(|r| r.trim() == "1")
            })
        })
        .collect();
    assert_eq!(owners.len(), 3, "the sample covers every primary: {v}");

    let (ok, out, err) = kitbash(&["status", "--json"], &url, &ns);
    assert!(ok, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).expect("json");
    assert_eq!(v["redis"]["nodes"], 3, "{v}");

    let (ok, out, err) = kitbash(&["cache", "clear", "memory"], &url, &ns);
    assert!(ok, "{err}");
    assert!(out.contains("deleted 601 keys"), "{out}");
    let (_, out, _) = kitbash(&["cache", "clear", "memory", "--dry-run"], &url, &ns);
    assert!(out.contains("would delete 0 keys"), "{out}");
    let n: u64 = c.exists(k.session("u1")).await.expect("exists");
    assert_eq!(n, 1, "another family is left alone");
}
