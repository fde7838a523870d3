//! `kitbash bench client`: `kitbash-client`'s rate limiter and array storage against baselines
//! measured in the same run — `redis-benchmark`'s single-client `GET` p99 for a check's
//! latency, a plain `SET`/`GET` of the same bytes for an array round trip.

use std::sync::Arc;
use std::time::{Duration, Instant};

use fred::prelude::*;
use fred::types::Value;
use hdrhistogram::Histogram;
use kitbash_client::array::{ArrayData, NdArray};
use kitbash_client::arrays::ArrayStore;
use kitbash_client::ratelimit::{Limits, RateLimiter};
use kitbash_runtime::config::RedisConfig;
use kitbash_schema::{Keys, Namespace};

use super::redis::{redis_benchmark, target};
use super::reflex::probe::command_stat;
use super::{BenchOptions, Record};

/// The issue's targets.
const TARGET_CHECKS_PER_S: f64 = 100_000.0;

/// The limiter's check before the list (a sorted-set log: trim by score, count, add), kept only
/// as the baseline `ratelimit_script_rps_redis_benchmark` compares against.
const SORTED_SET_LOG_LUA: &str = r#"
local key = KEYS[1]
local limit = tonumber(ARGV[1])
local window = tonumber(ARGV[2])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local newest = redis.call('ZRANGE', key, -1, -1, 'WITHSCORES')
if newest[2] ~= nil and tonumber(newest[2]) > now then now = tonumber(newest[2]) end
redis.call('ZREMRANGEBYSCORE', key, '-inf', string.format('%.0f', now - window))
local n = redis.call('ZCARD', key)
local allowed = 0
if n < limit then
  redis.call('ZADD', key, string.format('%.0f', now), string.format('%.0f:%d', now, n))
  n = n + 1
  allowed = 1
end
local reset = 0
if n > 0 then
  local oldest = redis.call('ZRANGE', key, 0, 0, 'WITHSCORES')
  reset = tonumber(oldest[2]) + window - now
  redis.call('PEXPIRE', key, math.floor(window / 1000) + 1)
end
return {allowed, n, reset, now}
"#;
const CHECK_RATE: f64 = 10_000.0;

/// CPU model and kernel release, attached to every record.
fn machine() -> (String, String) {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|t| {
            t.lines()
                .find_map(|l| l.strip_prefix("model name"))
                .map(|v| v.trim_start_matches([' ', '\t', ':']).trim().to_owned())
        })
        .unwrap_or_else(|| "unknown".into());
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_owned())
        .unwrap_or_else(|_| "unknown".into());
    (cpu, kernel)
}

/// A deterministic stand-in for `np.random.rand`: uniform floats in [0, 1).
fn uniform(n: usize) -> Vec<f64> {
    let mut x = 0x9e37_79b9_7f4a_7c15_u64;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 11) as f64 / (1u64 << 53) as f64
        })
        .collect()
}

/// Runs the suite.
pub async fn run(opts: &BenchOptions) -> anyhow::Result<Vec<Record>> {
    let t = target(opts)?;
    let (cpu, kernel) = machine();
    let mut out = Vec::new();
    let cfg = RedisConfig {
        url: t.url.clone(),
        ..RedisConfig::default()
    };
    let client = kitbash_runtime::redis::connect_client(&cfg, Duration::from_secs(10)).await?;
    let keys = Keys::new(Namespace::new("kbbench")?);

    // ---- check latency at 10k checks/s -------------------------------------------------------
    let n = if opts.long { 200_000 } else { 50_000 };
    eprintln!("redis-benchmark: GET, 1 client (baseline) …");
    let rb = redis_benchmark(&t, &["-t", "get", "-n", &n.to_string(), "-c", "1"])?;
    let get_p99 = rb.first().map_or(0.0, |r| r.1.p99_ms);
    let limiter = RateLimiter::new(client.clone(), keys.clone(), Limits::default());
    limiter.load_scripts().await?;
    eprintln!("rate limiter: {n} checks paced at 10k/s, 1000 users …");
    let mut h = Histogram::<u64>::new(3)?;
    let users: Vec<String> = (0..1000).map(|u| format!("user{u}")).collect();
    let interval = Duration::from_secs_f64(1.0 / CHECK_RATE);
    let start = Instant::now();
    let mut allowed = 0u64;
    let evalsha0 = command_stat(&client, "evalsha").await?;
    for i in 0..n {
        let due = start + interval * i as u32;
        if let Some(wait) = due.checked_duration_since(Instant::now()) {
            tokio::time::sleep(wait).await;
        }
        let s = Instant::now();
        let d = limiter
            .check(&users[i % users.len()], "free", "/search")
            .await?;
        h.record(s.elapsed().as_nanos() as u64)?;
        allowed += u64::from(d.allowed);
    }
    let rate = n as f64 / start.elapsed().as_secs_f64();
    let evalsha1 = command_stat(&client, "evalsha").await?;
    let redis_us_per_check =
        (evalsha1.1 - evalsha0.1) as f64 / (evalsha1.0 - evalsha0.0).max(1) as f64;
    // The same pacing with a plain GET through the same client: how much of the p99 is the
    // client stack and this machine's scheduling rather than the limiter.
    let plain = keys.bench("get");
    let _: () = client.set(&plain, "v", None, None, false).await?;
    let mut hg = Histogram::<u64>::new(3)?;
    let start = Instant::now();
    for i in 0..n {
        let due = start + interval * i as u32;
        if let Some(wait) = due.checked_duration_since(Instant::now()) {
            tokio::time::sleep(wait).await;
        }
        let s = Instant::now();
        let _: Option<String> = client.get(&plain).await?;
        hg.record(s.elapsed().as_nanos() as u64)?;
    }
    out.push(
        Record::new(
            "client",
            "ratelimit_check_p99_ms",
            h.value_at_quantile(0.99) as f64 / 1e6,
            "ms",
            get_p99,
        )
        .with("baseline_kind", "redis-benchmark GET -c 1 p99, same run")
        .with("target_ratio", "<= 1.5")
        .with("p50_ms", h.value_at_quantile(0.5) as f64 / 1e6)
        .with("checks", n as u64)
        .with("achieved_rate", rate.round())
        .with(
            "fred_get_p99_ms_same_pacing",
            hg.value_at_quantile(0.99) as f64 / 1e6,
        )
        .with("allowed", allowed)
        .with(
            "redis_usec_per_check",
            (redis_us_per_check * 100.0).round() / 100.0,
        ),
    );

    // ---- throughput from one process ---------------------------------------------------------
    let total = if opts.long { 1_000_000 } else { 300_000 };
    let tasks = 256;
    eprintln!("rate limiter: {total} checks from {tasks} tasks on one client, 10k users …");
    let limiter = Arc::new(limiter);
    let per_task = total / tasks;
    let start = Instant::now();
    let mut handles = Vec::with_capacity(tasks);
    for task in 0..tasks {
        let l = limiter.clone();
        handles.push(tokio::spawn(async move {
            let mut ok = 0u64;
            for i in 0..per_task {
                let user = format!("t{}", (task * per_task + i) % 10_000);
                ok += u64::from(l.check(&user, "free", "/feed").await?.allowed);
            }
            Ok::<u64, kitbash_client::ClientError>(ok)
        }));
    }
    let mut allowed = 0;
    for h in handles {
        allowed += h.await??;
    }
    let rps = (per_task * tasks) as f64 / start.elapsed().as_secs_f64();
    // The ceiling Redis itself sets: redis-benchmark sending the same script, 50 clients,
    // pipeline 16, over 10k keys (`__rand_int__`).
    eprintln!("redis-benchmark: EVALSHA of the check script, 50 clients, pipeline 16 …");
    let sha = limiter.check_script_sha().to_owned();
    let rb_key = keys.rate("rb__rand_int__", "/feed");
    let ceiling = redis_benchmark(
        &t,
        &[
            "-n", "200000", "-c", "50", "-P", "16", "-r", "10000", "EVALSHA", &sha, "1", &rb_key,
            "100", "60000000",
        ],
    )?;
    let ceiling = ceiling.first().map_or(0.0, |r| r.1.rps);
    // The same load through the sorted-set log this limiter used before (the script a user of
    // the earlier version runs): the baseline of the change, measured here, not remembered.
    eprintln!("redis-benchmark: EVALSHA of the earlier sorted-set script, same load …");
    let old_sha: String = client.script_load(SORTED_SET_LOG_LUA).await?;
    let old_key = keys.rate("rbz__rand_int__", "/feed");
    // 1,000 keys: 200 checks each, so every window fills to its limit of 100 and half the
    // checks are refused — the case where a log's size matters.
    let at_limit = |sha: String, key: String| {
        let t = &t;
        move || {
            redis_benchmark(
                t,
                &[
                    "-n", "200000", "-c", "50", "-P", "16", "-r", "1000", "EVALSHA", &sha, "1",
                    &key, "100", "60000000",
                ],
            )
            .map(|r| r.first().map_or(0.0, |r| r.1.rps))
        }
    };
    let old_ceiling = at_limit(old_sha, old_key)()?;
    let new_at_limit = at_limit(sha.clone(), keys.rate("rbl__rand_int__", "/feed"))()?;
    out.push(
        Record::new(
            "client",
            "ratelimit_script_rps_redis_benchmark",
            new_at_limit,
            "ops/s",
            old_ceiling,
        )
        .with(
            "baseline_kind",
            "the earlier sorted-set script, same redis-benchmark load (50 clients, pipeline 16, 1,000 keys at their limit of 100)",
        ),
    );
    out.push(
        Record::new(
            "client",
            "ratelimit_checks_per_s",
            rps,
            "ops/s",
            TARGET_CHECKS_PER_S,
        )
        .with("baseline_kind", "target (issue 10)")
        .with("tasks", tasks as u64)
        .with("redis_benchmark_evalsha_c50_p16_rps", ceiling.round())
        .with("allowed", allowed),
    );

    // ---- check_many: a gateway's batches, pipelined ------------------------------------------
    let batches = total / 64;
    let batch_tasks = 16;
    eprintln!(
        "rate limiter: {total} checks as check_many batches of 64 from {batch_tasks} tasks …"
    );
    let start = Instant::now();
    let mut handles = Vec::with_capacity(batch_tasks);
    for task in 0..batch_tasks {
        let l = limiter.clone();
        handles.push(tokio::spawn(async move {
            let mut ok = 0u64;
            for b in 0..batches / batch_tasks {
                let users: Vec<String> = (0..64)
                    .map(|i| {
                        format!(
                            "m{}",
                            ((task * batches / batch_tasks + b) * 64 + i) % 10_000
                        )
                    })
                    .collect();
                let reqs: Vec<(&str, &str, &str)> = users
                    .iter()
                    .map(|u| (u.as_str(), "free", "/feed"))
                    .collect();
                for d in l.check_many(&reqs).await {
                    ok += u64::from(d?.allowed);
                }
            }
            Ok::<u64, kitbash_client::ClientError>(ok)
        }));
    }
    let mut many_allowed = 0;
    for h in handles {
        many_allowed += h.await??;
    }
    let many_rps =
        ((batches / batch_tasks) * batch_tasks * 64) as f64 / start.elapsed().as_secs_f64();
    out.push(
        Record::new(
            "client",
            "ratelimit_check_many_per_s",
            many_rps,
            "ops/s",
            rps,
        )
        .with(
            "baseline_kind",
            "ratelimit_checks_per_s (one check per call), same run",
        )
        .with("batch", 64)
        .with("tasks", batch_tasks as u64)
        .with("allowed", many_allowed),
    );

    // ---- array round trips ---------------------------------------------------------------------
    let iters = if opts.long { 500 } else { 100 };
    let store = ArrayStore::new(client.clone(), keys.clone());
    for (metric, array) in [
        (
            "array_roundtrip_mb_per_s",
            NdArray::from_f64(uniform(131_072)),
        ),
        (
            "array_roundtrip_compressible_mb_per_s",
            NdArray::new(
                vec![1024, 1024],
                ArrayData::I8((0..1_048_576).map(|i| i8::from(i % 13 == 0)).collect()),
            )?,
        ),
    ] {
        eprintln!("{metric}: {iters} round trips of 1 MiB …");
        let npy = array.to_npy()?;
        let bytes = npy.len() as f64 * iters as f64;
        // Baseline: the same bytes through a plain SET and GET.
        let plain = keys.bench("array-plain");
        let start = Instant::now();
        for _ in 0..iters {
            let _: () = client
                .set(&plain, Value::Bytes(npy.clone().into()), None, None, false)
                .await?;
            let back: Vec<u8> = client.get(&plain).await?;
            anyhow::ensure!(back.len() == npy.len(), "plain GET returned a short value");
        }
        let base = bytes / 1e6 / start.elapsed().as_secs_f64();
        let start = Instant::now();
        for _ in 0..iters {
            store.put_attention("bench", &array, 0.0).await?;
            let back = store.get_attention("bench").await?;
            anyhow::ensure!(
                back.map(|w| w.weights.data().len()) == Some(array.data().len()),
                "array round trip lost data"
            );
        }
        let ours = bytes / 1e6 / start.elapsed().as_secs_f64();
        let fields: std::collections::HashMap<String, Vec<u8>> =
            client.hgetall(keys.attention("bench")).await?;
        let enc = fields
            .get(Keys::ARRAY_ENC)
            .map(|e| String::from_utf8_lossy(e).into_owned())
            .unwrap_or_default();
        let stored = fields.get(Keys::ARRAY_NPY).map_or(0, Vec::len);
        out.push(
            Record::new("client", metric, ours, "MB/s", base)
                .with(
                    "baseline_kind",
                    "plain SET+GET of the same .npy bytes, same run",
                )
                .with("target_ratio", ">= 0.8")
                .with("dtype", array.data().dtype_name())
                .with("npy_bytes", npy.len() as u64)
                .with("stored_bytes", stored as u64)
                .with("enc", enc),
        );
    }
    let _ = client.quit().await;
    for r in &mut out {
        r.extra.insert("cpu".into(), cpu.clone().into());
        r.extra.insert("kernel".into(), kernel.clone().into());
    }
    Ok(out)
}
