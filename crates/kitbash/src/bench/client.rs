//! `kitbash bench client`: `kitbash-client`'s rate limiter and array storage against baselines
//! measured in the same run — a `GET` through the same client under the same open-loop
//! arrivals (and `redis-benchmark`'s single-client `GET`) for a check's latency, one check per
//! call for pipelined checks, the earlier scripts under the same `redis-benchmark` load, a
//! plain `SET`/`GET` of the same bytes for an array round trip — plus the figures that do not
//! move with a noisy machine: Redis's µs per check (`INFO commandstats`, per inner command) and
//! the client's instructions per check (`valgrind --tool=callgrind`, when installed).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use fred::prelude::*;
use fred::types::Value;
use kitbash_client::array::{ArrayData, NdArray};
use kitbash_client::arrays::ArrayStore;
use kitbash_client::ratelimit::{Limits, RateLimiter};
use kitbash_runtime::config::RedisConfig;
use kitbash_schema::{Keys, Namespace};

use super::commandstats::{CommandStats, command_stats, cost_per_unit, delta};
use super::openloop::{SideRuntime, load_avg, open_loop, poisson_schedule, q_ms};
use super::redis::{redis_benchmark, target};
use super::rng::Rng;
use super::{BenchOptions, Record};

/// The issue's targets (issue 20).
const TARGET_CHECKS_PER_S: f64 = 150_000.0;
/// `ratelimit_check_p99_ms` ≤ this × the `GET` p99 of the same run.
const TARGET_P99_RATIO: f64 = 1.3;
/// Paced checks per second in the latency run.
const CHECK_RATE: f64 = 10_000.0;
/// Users in the latency run; a tenth of the checks go to [`HOT_USERS`] more, who hit the limit.
const USERS: usize = 10_000;
const HOT_USERS: usize = 10;
/// Requests per `check_many` batch (a gateway's batch).
const BATCH: usize = 64;

/// The limiter's check before the list (a sorted-set log: trim by score, count, add), kept only
/// as a baseline of `ratelimit_script_rps_redis_benchmark`. ARGV: limit, window.
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

/// The previous list log (pops every element that left the window, so one check after a pause
/// walks the backlog), kept only as a baseline. ARGV: limit, window.
const PREVIOUS_LIST_LOG_LUA: &str = r#"
local key = KEYS[1]
local limit = tonumber(ARGV[1])
local window = tonumber(ARGV[2])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local newest = redis.pcall('LINDEX', key, 0)
if type(newest) == 'table' and newest.err then
  if redis.call('TYPE', key).ok ~= 'zset' then return redis.error_reply(newest.err) end
  local old = redis.call('ZRANGE', key, 0, -1, 'WITHSCORES')
  redis.call('DEL', key)
  for i = 2, #old, 2 do redis.call('LPUSH', key, old[i]) end
  newest = redis.call('LINDEX', key, 0)
end
if newest and tonumber(newest) > now then now = tonumber(newest) end
local horizon = now - window
local oldest = false
if newest then
  if tonumber(newest) <= horizon then
    -- the whole window has passed: one DEL instead of popping each entry
    redis.call('DEL', key)
  else
    oldest = redis.call('LINDEX', key, -1)
    while tonumber(oldest) <= horizon do
      redis.call('RPOP', key)
      oldest = redis.call('LINDEX', key, -1)
    end
  end
end
local n = 0
if oldest then n = redis.call('LLEN', key) end
if n >= limit then
  -- refused: nothing written, the key's expiry already outlives its newest entry
  return {0, n, tonumber(oldest) + window - now, now}
end
local stamp = string.format('%.0f', now)
n = redis.call('LPUSH', key, stamp)
if not oldest then oldest = stamp end
redis.call('PEXPIRE', key, math.floor(window / 1000) + 1)
return {1, n, tonumber(oldest) + window - now, now}
"#;

/// Redis's cost per check from two `INFO commandstats` snapshots around `checks` checks: the
/// scripts' µs per check, and per inner command (calls and µs per check) — commands a script
/// runs are counted under their own names too.
fn redis_cost_per_check(
    before: &CommandStats,
    after: &CommandStats,
    checks: u64,
) -> (f64, serde_json::Value) {
    let script_us = delta(before, after, "evalsha").1 as f64 / checks.max(1) as f64;
    let inner = cost_per_unit(before, after, checks, "check", |name| {
        matches!(name, "evalsha" | "get" | "set" | "mset") || name.starts_with("script")
    });
    (script_us, inner)
}

/// Runs the suite.
pub async fn run(opts: &BenchOptions) -> anyhow::Result<Vec<Record>> {
    let t = target(opts)?;
    let mut out = Vec::new();
    let cfg = RedisConfig {
        url: t.url.clone(),
        ..RedisConfig::default()
    };
    let client = kitbash_runtime::redis::connect_client(&cfg, Duration::from_secs(10)).await?;
    let keys = Keys::new(Namespace::new("kbbench")?);

    // ---- check latency: open loop at 10k checks/s, 10,000 users --------------------------------
    let n = if opts.long { 200_000 } else { 50_000 };
    eprintln!("redis-benchmark: GET, 1 client (the earlier baseline) …");
    let rb = redis_benchmark(&t, &["-t", "get", "-n", &n.to_string(), "-c", "1"])?;
    let rb_get_p99 = rb.first().map_or(0.0, |r| r.1.p99_ms);
    let limiter = RateLimiter::new(client.clone(), keys.clone(), Limits::default());
    limiter.load_scripts().await?;
    let names: Arc<Vec<String>> = Arc::new(
        (0..USERS)
            .map(|u| format!("user{u}"))
            .chain((0..HOT_USERS).map(|u| format!("hot{u}")))
            .collect(),
    );
    let mut rng = Rng::new(31);
    let picks: Arc<Vec<usize>> = Arc::new(
        (0..n)
            .map(|_| {
                if rng.next().is_multiple_of(10) {
                    USERS + (rng.next() % HOT_USERS as u64) as usize
                } else {
                    (rng.next() % USERS as u64) as usize
                }
            })
            .collect(),
    );
    let allowed = Arc::new(AtomicU64::new(0));
    let checks = {
        let (names, picks, allowed) = (names.clone(), picks.clone(), allowed.clone());
        move |l: RateLimiter| {
            let (names, picks, allowed) = (names.clone(), picks.clone(), allowed.clone());
            move |k: usize, _: Instant| {
                let (l, user, allowed) = (
                    l.clone(),
                    names[picks[k % picks.len()]].clone(),
                    allowed.clone(),
                );
                async move {
                    match l.check(&user, "free", "/search").await {
                        Ok(d) => {
                            allowed.fetch_add(u64::from(d.allowed), Ordering::Relaxed);
                            true
                        }
                        Err(_) => false,
                    }
                }
            }
        }
    };
    let get_keys: Arc<Vec<String>> = Arc::new(
        names
            .iter()
            .map(|u| keys.bench(&format!("get:{u}")))
            .collect(),
    );
    for chunk in get_keys.chunks(1_000) {
        let pairs: Vec<(String, String)> = chunk.iter().map(|k| (k.clone(), "v".into())).collect();
        let _: () = client.mset(pairs).await?;
    }
    let gets = {
        let (get_keys, picks) = (get_keys.clone(), picks.clone());
        move |c: Client| {
            let (get_keys, picks) = (get_keys.clone(), picks.clone());
            move |k: usize, _: Instant| {
                let (c, key) = (c.clone(), get_keys[picks[k % picks.len()]].clone());
                async move { c.get::<Option<String>, _>(key).await.is_ok() }
            }
        }
    };
    // The client (its own connection) on a current-thread runtime of its own thread, for the
    // checks and the GETs alike: one thread for the tasks and fred's connection task, so no
    // hand-offs between the bench's worker threads on a 2-core machine (as the reflex suite).
    let side = SideRuntime::start()?;
    let side_client = {
        let cfg = cfg.clone();
        side.handle
            .spawn(async move {
                kitbash_runtime::redis::connect_client(&cfg, Duration::from_secs(10)).await
            })
            .await??
    };
    let side_limiter = RateLimiter::new(side_client.clone(), keys.clone(), Limits::default());
    let handle = side.handle.clone();
    let schedule = poisson_schedule(CHECK_RATE, n, 23);
    let warmup = poisson_schedule(CHECK_RATE, 5_000, 99);
    eprintln!(
        "rate limiter: {n} checks, Poisson arrivals at 10k/s, {USERS} users (+{HOT_USERS} hot) …"
    );
    open_loop(handle.clone(), warmup.clone(), checks(side_limiter.clone())).await?;
    // The warm-up counted too: the hot users start the timed run at their limit.
    allowed.store(0, Ordering::Relaxed);
    let stats0 = command_stats(&client).await?;
    let run = open_loop(handle.clone(), schedule.clone(), checks(side_limiter)).await?;
    let stats1 = command_stats(&client).await?;
    let (script_us, inner) = redis_cost_per_check(&stats0, &stats1, n as u64);
    let load_check = load_avg();
    eprintln!("GET: the same arrivals through the same client …");
    open_loop(handle.clone(), warmup, gets(side_client.clone())).await?;
    let get_run = open_loop(handle, schedule, gets(side_client.clone())).await?;
    let _ = side_client.quit().await;
    drop(side);
    let get_p99 = q_ms(&get_run.latency, 0.99);
    let p99 = q_ms(&run.latency, 0.99);
    out.push(
        Record::new("client", "ratelimit_check_p99_ms", p99, "ms", get_p99)
            .with(
                "baseline_kind",
                "GET through the same fred client (current-thread runtime of its own), the same open-loop arrivals and keys, same run",
            )
            .with("target_ratio", format!("<= {TARGET_P99_RATIO}"))
            .with("target_met", p99 <= TARGET_P99_RATIO * get_p99)
            .with("p50_ms", q_ms(&run.latency, 0.5))
            .with("p999_ms", q_ms(&run.latency, 0.999))
            .with("get_p50_ms", q_ms(&get_run.latency, 0.5))
            .with("get_p999_ms", q_ms(&get_run.latency, 0.999))
            .with("redis_benchmark_get_p99_ms", rb_get_p99)
            .with(
                "ratio_vs_redis_benchmark_get",
                if rb_get_p99 > 0.0 {
                    p99 / rb_get_p99
                } else {
                    f64::NAN
                },
            )
            .with(
                "arrivals",
                "poisson, each check timed from its scheduled instant",
            )
            .with("rate_per_s", CHECK_RATE)
            .with("checks", n as u64)
            .with("errors", run.errors)
            .with("users", USERS as u64)
            .with("hot_users", HOT_USERS as u64)
            .with("allowed", allowed.load(Ordering::Relaxed))
            .with("generator_lateness_p99_ms", q_ms(&run.lateness, 0.99))
            .with("redis_usec_per_check", script_us)
            .with("redis_inner_commands_per_check", inner)
            .with("load_avg_1m", load_check),
    );

    // ---- throughput from one process -------------------------------------------------------------
    let total = if opts.long { 1_000_000 } else { 300_000 };
    let tasks = 256;
    eprintln!(
        "rate limiter: {total} checks from {tasks} tasks on one client, one check per call …"
    );
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
    let mut single_allowed = 0;
    for h in handles {
        single_allowed += h.await??;
    }
    let single_rps = (per_task * tasks) as f64 / start.elapsed().as_secs_f64();

    let batch_tasks = 16;
    let batches = total / BATCH / batch_tasks;
    eprintln!(
        "rate limiter: {} checks as check_many batches of {BATCH} from {batch_tasks} tasks …",
        batches * batch_tasks * BATCH
    );
    let stats0 = command_stats(&client).await?;
    let start = Instant::now();
    let mut handles = Vec::with_capacity(batch_tasks);
    for task in 0..batch_tasks {
        let l = limiter.clone();
        handles.push(tokio::spawn(async move {
            let mut ok = 0u64;
            for b in 0..batches {
                let users: Vec<String> = (0..BATCH)
                    .map(|i| format!("m{}", ((task * batches + b) * BATCH + i) % 10_000))
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
    let many_checks = (batches * batch_tasks * BATCH) as u64;
    let many_rps = many_checks as f64 / start.elapsed().as_secs_f64();
    let stats1 = command_stats(&client).await?;
    let (many_script_us, many_inner) = redis_cost_per_check(&stats0, &stats1, many_checks);
    out.push(
        Record::new(
            "client",
            "ratelimit_checks_per_s",
            many_rps,
            "ops/s",
            single_rps,
        )
        .with(
            "baseline_kind",
            "one check per call from 256 tasks (the earlier ratelimit_checks_per_s method), same run",
        )
        .with("method", "check_many: batches of 64 from 16 tasks, one script call per batch, pipelined")
        .with("target", TARGET_CHECKS_PER_S)
        .with("target_met", many_rps >= TARGET_CHECKS_PER_S)
        .with("ratelimit_checks_per_s_single", single_rps)
        .with("single_allowed", single_allowed)
        .with("batch", BATCH as u64)
        .with("tasks", batch_tasks as u64)
        .with("allowed", many_allowed)
        .with("redis_usec_per_check", many_script_us)
        .with("redis_inner_commands_per_check", many_inner),
    );

    // ---- the scripts alone, under redis-benchmark's load at the limit ---------------------------
    // 1,000 keys, 200 checks each: every window fills to its limit of 100 and half the checks
    // are refused — the case where a log's size matters. The same load through the earlier
    // scripts (what a user of an earlier version runs): baselines measured here, not remembered.
    eprintln!(
        "redis-benchmark: EVALSHA of the check script and of the earlier ones, at the limit …"
    );
    let at_limit = |sha: String, key: String, args: [&str; 2]| {
        let t = &t;
        redis_benchmark(
            t,
            &[
                "-n", "200000", "-c", "50", "-P", "16", "-r", "1000", "EVALSHA", &sha, "1", &key,
                args[0], args[1],
            ],
        )
        .map(|r| r.first().map_or(0.0, |r| r.1.rps))
    };
    let sha = limiter.check_script_sha().to_owned();
    let new_at_limit = at_limit(
        sha,
        keys.rate("rbl__rand_int__", "/feed"),
        ["60000000", "100"],
    )?;
    let zset_sha: String = client.script_load(SORTED_SET_LOG_LUA).await?;
    let zset_at_limit = at_limit(
        zset_sha,
        keys.rate("rbz__rand_int__", "/feed"),
        ["100", "60000000"],
    )?;
    let prev_sha: String = client.script_load(PREVIOUS_LIST_LOG_LUA).await?;
    let prev_at_limit = at_limit(
        prev_sha,
        keys.rate("rbp__rand_int__", "/feed"),
        ["100", "60000000"],
    )?;
    out.push(
        Record::new(
            "client",
            "ratelimit_script_rps_redis_benchmark",
            new_at_limit,
            "ops/s",
            prev_at_limit,
        )
        .with(
            "baseline_kind",
            "the previous list script (pops every stale element), same redis-benchmark load (50 clients, pipeline 16, 1,000 keys at their limit of 100)",
        )
        .with("sorted_set_script_rps", zset_at_limit),
    );

    // ---- instructions per check in Redis (callgrind, when installed) ----------------------------
    match redis_instructions().await {
        Ok(Some(rec)) => out.extend(rec),
        Ok(None) => eprintln!("valgrind not found: no Redis instruction counts"),
        Err(e) => eprintln!("callgrind of redis-server failed, no Redis instruction counts: {e:#}"),
    }

    // ---- instructions per check in this process (callgrind, when installed) --------------------
    let url = t.url.clone();
    match tokio::task::spawn_blocking(move || client_instructions(&url)).await? {
        Ok(Some(rec)) => out.extend(rec),
        Ok(None) => eprintln!("valgrind not found: no client instruction counts"),
        Err(e) => eprintln!("callgrind run failed, no client instruction counts: {e:#}"),
    }

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
    let (cpu, kernel) = super::machine();
    for r in &mut out {
        r.extra.insert("cpu".into(), cpu.clone().into());
        r.extra.insert("kernel".into(), kernel.clone().into());
    }
    Ok(out)
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

/// The client's instructions per operation, from `valgrind --tool=callgrind` runs of this
/// binary's `client-probe` suite (see [`probe`]) against the suite's Redis: each operation run
/// twice with different counts, the difference divided by the extra operations, so start-up
/// and connection cost cancel out. `None` when valgrind is not installed.
fn client_instructions(url: &str) -> anyhow::Result<Option<Vec<Record>>> {
    use anyhow::Context as _;
    if std::process::Command::new("valgrind")
        .arg("--version")
        .output()
        .is_err()
    {
        return Ok(None);
    }
    let exe = std::env::current_exe()?;
    let instructions = |mode: &str, n: usize| -> anyhow::Result<u64> {
        let file = std::env::temp_dir().join(format!(
            "kitbash-callgrind-{}-{mode}-{n}.out",
            std::process::id()
        ));
        let status = std::process::Command::new("valgrind")
            .arg("--tool=callgrind")
            .arg(format!("--callgrind-out-file={}", file.display()))
            .arg(&exe)
            .args(["bench", &format!("client-probe:{mode}:{n}")])
            .env("KITBASH__REDIS__URL", url)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status()?;
        anyhow::ensure!(
            status.success(),
            "valgrind … client-probe:{mode}:{n}: {status}"
        );
        let text = std::fs::read_to_string(&file)?;
        let _ = std::fs::remove_file(&file);
        text.lines()
            .find_map(|l| {
                l.strip_prefix("summary:")
                    .or_else(|| l.strip_prefix("totals:"))
            })
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
            .context("no instruction total in the callgrind output")
    };
    let per_op = |mode: &str, n1: usize, n2: usize, checks_per_op: usize| -> anyhow::Result<f64> {
        eprintln!("callgrind: client-probe {mode} × {n1} and × {n2} …");
        let (a, b) = (instructions(mode, n1)?, instructions(mode, n2)?);
        Ok(b.saturating_sub(a) as f64 / ((n2 - n1) * checks_per_op) as f64)
    };
    let get = per_op("get", 300, 900, 1)?;
    let check = per_op("check", 300, 900, 1)?;
    let many = per_op("many", 10, 30, BATCH)?;
    let method = "valgrind --tool=callgrind of `kitbash bench client-probe:MODE:N`, N and 3N operations, (Ir(3N) − Ir(N)) / 2N";
    Ok(Some(vec![
        Record::new(
            "client",
            "ratelimit_client_instructions_per_check",
            check,
            "instructions",
            get,
        )
        .with(
            "baseline_kind",
            "instructions per GET through the same client, same method",
        )
        .with("method", method),
        Record::new(
            "client",
            "ratelimit_client_instructions_per_check_many",
            many,
            "instructions",
            check,
        )
        .with(
            "baseline_kind",
            "instructions per single check (ratelimit_client_instructions_per_check)",
        )
        .with("batch", BATCH as u64)
        .with("method", method),
    ]))
}

/// Redis's instructions per operation: a `redis-server` of its own under `valgrind
/// --tool=callgrind`, counters zeroed before and dumped after `N` and then `3N` operations sent
/// one at a time by this process (`GET` of an absent key, a check, a `check_many` batch of 64),
/// the difference divided by the extra operations — what a check costs Redis, to the
/// instruction, however busy the machine. `None` when valgrind is not installed.
async fn redis_instructions() -> anyhow::Result<Option<Vec<Record>>> {
    use anyhow::Context as _;
    let installed = |tool: &str| {
        std::process::Command::new(tool)
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success())
    };
    if !installed("valgrind") || !installed("callgrind_control") {
        return Ok(None);
    }
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let dir = tempfile::tempdir()?;
    let file = dir.path().join("redis.callgrind");
    let mut server = tokio::process::Command::new("valgrind")
        .arg("--tool=callgrind")
        .arg(format!("--callgrind-out-file={}", file.display()))
        .args([
            "redis-server",
            "--port",
            &port.to_string(),
            "--save",
            "",
            "--appendonly",
            "no",
        ])
        .arg("--dir")
        .arg(dir.path())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()?;
    let pid = server.id().context("valgrind exited at once")?.to_string();
    // Under valgrind the server takes seconds to listen; the client refuses a refused port at
    // once, so wait for it here.
    let deadline = Instant::now() + Duration::from_secs(60);
    while tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .is_err()
    {
        anyhow::ensure!(
            Instant::now() < deadline,
            "redis-server under valgrind did not listen within 60 s"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let cfg = RedisConfig {
        url: format!("redis://127.0.0.1:{port}"),
        command_timeout_ms: 30_000,
        ..RedisConfig::default()
    };
    let client = kitbash_runtime::redis::connect_client(&cfg, Duration::from_secs(60)).await?;
    let keys = Keys::new(Namespace::new("kbcg")?);
    let limiter = RateLimiter::new(client.clone(), keys.clone(), Limits::default());
    limiter.load_scripts().await?;
    let absent = keys.bench("cg-absent");
    let users: Vec<String> = (0..1_000).map(|u| format!("c{u}")).collect();
    let mut dumps = 0;
    let mut measure = async |mode: &str, n: usize| -> anyhow::Result<u64> {
        let control = |arg: &str| {
            std::process::Command::new("callgrind_control")
                .args([arg, &pid])
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .status()
        };
        anyhow::ensure!(control("-z")?.success(), "callgrind_control -z failed");
        for k in 0..n {
            match mode {
                "get" => {
                    let _: Option<String> = client.get(&absent).await?;
                }
                "check" => {
                    limiter
                        .check(&users[k % users.len()], "free", "/cg")
                        .await?;
                }
                _ => {
                    let reqs: Vec<(&str, &str, &str)> = (0..BATCH)
                        .map(|i| (users[(k * BATCH + i) % users.len()].as_str(), "free", "/cg"))
                        .collect();
                    for d in limiter.check_many(&reqs).await {
                        d?;
                    }
                }
            }
        }
        anyhow::ensure!(control("-d")?.success(), "callgrind_control -d failed");
        dumps += 1;
        let dump = dir.path().join(format!("redis.callgrind.{dumps}"));
        let text = std::fs::read_to_string(&dump)
            .with_context(|| format!("reading {}", dump.display()))?;
        text.lines()
            .find_map(|l| {
                l.strip_prefix("summary:")
                    .or_else(|| l.strip_prefix("totals:"))
            })
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
            .context("no instruction total in the callgrind dump")
    };
    eprintln!("callgrind: redis-server, GET / check / check_many, N and 3N each …");
    let mut per_op = async |mode: &str, n: usize, checks_per_op: usize| -> anyhow::Result<f64> {
        let a = measure(mode, n).await?;
        let b = measure(mode, 3 * n).await?;
        Ok(b.saturating_sub(a) as f64 / (2 * n * checks_per_op) as f64)
    };
    // The first pass warms Redis up (keys created, script compiled); only its counts are thrown away.
    per_op("check", 100, 1).await?;
    let get = per_op("get", 300, 1).await?;
    let check = per_op("check", 300, 1).await?;
    let many = per_op("many", 10, BATCH).await?;
    let _ = client
        .custom::<Value, Value>(
            fred::types::CustomCommand::new_static(
                "SHUTDOWN",
                fred::types::ClusterHash::FirstKey,
                false,
            ),
            vec![Value::from("NOSAVE")],
        )
        .await;
    let _ = tokio::time::timeout(Duration::from_secs(30), server.wait()).await;
    let method = "valgrind --tool=callgrind redis-server; callgrind_control -z / -d around N and 3N operations sent one at a time; (Ir(3N) − Ir(N)) / 2N";
    Ok(Some(vec![
        Record::new(
            "client",
            "ratelimit_redis_instructions_per_check",
            check,
            "instructions",
            get,
        )
        .with(
            "baseline_kind",
            "Redis instructions per GET of the same connection, same method",
        )
        .with("method", method),
        Record::new(
            "client",
            "ratelimit_redis_instructions_per_check_many",
            many,
            "instructions",
            check,
        )
        .with(
            "baseline_kind",
            "Redis instructions per single check (ratelimit_redis_instructions_per_check)",
        )
        .with("batch", BATCH as u64)
        .with("method", method),
    ]))
}

/// The `client-probe:MODE:N` suite, which the `client` suite runs under callgrind: `N`
/// operations one after another on a current-thread runtime of their own thread (so an
/// instruction count repeats), after a warm-up of 50 — `get` (a `GET` of an absent key), `check` (one rate-limit check) or
/// `many` (a `check_many` batch of 64) — against the Redis of `--redis-url` /
/// `KITBASH__REDIS__URL`. Reports nothing.
pub async fn probe(spec: &str, opts: &BenchOptions) -> anyhow::Result<Vec<Record>> {
    use anyhow::Context as _;
    let mut parts = spec.split(':').skip(1);
    let mode = parts.next().unwrap_or_default().to_owned();
    let n: usize = parts
        .next()
        .and_then(|v| v.parse().ok())
        .context("client-probe:MODE:N needs a count")?;
    let url = opts
        .redis_url
        .clone()
        .context("client-probe needs --redis-url or KITBASH__REDIS__URL")?;
    let side = SideRuntime::start()?;
    side.handle
        .spawn(async move {
            let cfg = RedisConfig {
                url,
                ..RedisConfig::default()
            };
            let client =
                kitbash_runtime::redis::connect_client(&cfg, Duration::from_secs(30)).await?;
            let keys = Keys::new(Namespace::new("kbprobe")?);
            let limiter = RateLimiter::new(client.clone(), keys.clone(), Limits::default());
            limiter.load_scripts().await?;
            let absent = keys.bench("probe-absent");
            let users: Vec<String> = (0..1_000).map(|u| format!("p{u}")).collect();
            for k in 0..50 + n {
                match mode.as_str() {
                    "get" => {
                        let _: Option<String> = client.get(&absent).await?;
                    }
                    "check" => {
                        limiter
                            .check(&users[k % users.len()], "free", "/probe")
                            .await?;
                    }
                    "many" => {
                        let reqs: Vec<(&str, &str, &str)> = (0..BATCH)
                            .map(|i| {
                                (
                                    users[(k * BATCH + i) % users.len()].as_str(),
                                    "free",
                                    "/probe",
                                )
                            })
                            .collect();
                        for d in limiter.check_many(&reqs).await {
                            d?;
                        }
                    }
                    other => {
                        anyhow::bail!("client-probe: unknown mode {other:?} (get, check, many)")
                    }
                }
            }
            let _ = client.quit().await;
            Ok::<(), anyhow::Error>(())
        })
        .await??;
    Ok(Vec::new())
}
