//! `kitbash bench redis`: Redis's own `redis-benchmark` on this machine (compared with the
//! reference figures of the performance notes), and our fred client stack compared with
//! `redis-benchmark` in the same run.

use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use fred::prelude::*;
use hdrhistogram::Histogram;
use kitbash_runtime::config::RedisConfig;
use kitbash_testkit::RedisServer;

use super::{BenchOptions, Record};

/// Reference figures from the performance notes (2-core machine, Redis 7.0, loopback).
const REF_SET_C50: f64 = 140_000.0;
const REF_SET_P16: f64 = 1_800_000.0;
const REF_XADD_C50: f64 = 120_000.0;
const REF_XADD_P32: f64 = 800_000.0;

/// A `redis-benchmark` result row.
#[derive(Debug, Clone, Copy)]
pub struct RbRow {
    /// Requests per second.
    pub rps: f64,
    /// Median latency, ms.
    pub p50_ms: f64,
    /// 99th percentile latency, ms.
    pub p99_ms: f64,
}

/// Where the suite's Redis lives: a server it started (dropped at the end) or a given URL.
pub struct Target {
    _server: Option<RedisServer>,
    /// Host.
    pub host: String,
    /// Port.
    pub port: u16,
    /// URL for fred.
    pub url: String,
}

/// Starts a private `redis-server`, or parses `opts.redis_url`.
pub fn target(opts: &BenchOptions) -> anyhow::Result<Target> {
    if let Some(url) = &opts.redis_url {
        let rest = url
            .trim_start_matches("redis://")
            .rsplit('@')
            .next()
            .unwrap_or_default()
            .split('/')
            .next()
            .unwrap_or_default();
        let (host, port) = rest.rsplit_once(':').unwrap_or((rest, "6379"));
        return Ok(Target {
            _server: None,
            host: host.to_owned(),
            port: port.parse()?,
            url: url.clone(),
        });
    }
    let server = RedisServer::start()?;
    Ok(Target {
        host: "127.0.0.1".into(),
        port: server.port(),
        url: server.url(),
        _server: Some(server),
    })
}

/// Runs `redis-benchmark` with `args` and returns its CSV rows by test name.
pub fn redis_benchmark(t: &Target, args: &[&str]) -> anyhow::Result<Vec<(String, RbRow)>> {
    let bin = std::env::var("KITBASH_REDIS_BENCHMARK").unwrap_or_else(|_| "redis-benchmark".into());
    let out = Command::new(&bin)
        .args(["-h", &t.host, "-p", &t.port.to_string(), "--csv"])
        .args(args)
        .output()
        .map_err(|e| anyhow::anyhow!("cannot run {bin}: {e} (install redis-tools)"))?;
    anyhow::ensure!(
        out.status.success(),
        "redis-benchmark failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    let mut rows = Vec::new();
    for line in text.lines().skip(1) {
        let cols: Vec<String> = line
            .split("\",\"")
            .map(|c| c.trim_matches('"').to_owned())
            .collect();
        if cols.len() >= 7 {
            let f = |i: usize| cols[i].parse::<f64>().unwrap_or(0.0);
            rows.push((
                cols[0].clone(),
                RbRow {
                    rps: f(1),
                    p50_ms: f(4),
                    p99_ms: f(6),
                },
            ));
        }
    }
    anyhow::ensure!(!rows.is_empty(), "redis-benchmark printed no rows: {text}");
    Ok(rows)
}

/// `redis-benchmark` appending two small fields to a capped stream, 50 clients, optionally
/// pipelined: the baseline of every stream-bound suite.
pub fn xadd_baseline(
    t: &Target,
    n: usize,
    pipeline: Option<u32>,
) -> anyhow::Result<Vec<(String, RbRow)>> {
    let key = kitbash_schema::Keys::default().bench("xadd");
    let (n, p) = (n.to_string(), pipeline.unwrap_or(1).to_string());
    redis_benchmark(
        t,
        &[
            "-n", &n, "-c", "50", "-P", &p, "XADD", &key, "MAXLEN", "~", "100000", "*", "f1", "v1",
            "f2", "v2",
        ],
    )
}

fn first(rows: &[(String, RbRow)]) -> RbRow {
    rows.first().map(|r| r.1).unwrap_or(RbRow {
        rps: 0.0,
        p50_ms: 0.0,
        p99_ms: 0.0,
    })
}

/// Runs the suite.
pub async fn run(opts: &BenchOptions) -> anyhow::Result<Vec<Record>> {
    let t = target(opts)?;
    let n = if opts.long { 1_000_000 } else { 200_000 };
    let ns = n.to_string();
    let mut out = Vec::new();
    eprintln!("redis-benchmark: SET/GET, 50 clients …");
    let set = redis_benchmark(&t, &["-t", "set", "-n", &ns, "-c", "50"])?;
    out.push(
        Record::new(
            "redis",
            "set_c50_rps",
            first(&set).rps,
            "ops/s",
            REF_SET_C50,
        )
        .with("baseline_kind", "reference")
        .with("p50_ms", first(&set).p50_ms),
    );
    let setp = redis_benchmark(
        &t,
        &[
            "-t",
            "set",
            "-n",
            &(n * 5).to_string(),
            "-c",
            "50",
            "-P",
            "16",
        ],
    )?;
    out.push(
        Record::new(
            "redis",
            "set_c50_p16_rps",
            first(&setp).rps,
            "ops/s",
            REF_SET_P16,
        )
        .with("baseline_kind", "reference"),
    );
    eprintln!("redis-benchmark: XADD …");
    let xadd = xadd_baseline(&t, n, None)?;
    out.push(
        Record::new(
            "redis",
            "xadd_c50_rps",
            first(&xadd).rps,
            "ops/s",
            REF_XADD_C50,
        )
        .with("baseline_kind", "reference"),
    );
    let xaddp = xadd_baseline(&t, n * 2, Some(32))?;
    out.push(
        Record::new(
            "redis",
            "xadd_c50_p32_rps",
            first(&xaddp).rps,
            "ops/s",
            REF_XADD_P32,
        )
        .with("baseline_kind", "reference"),
    );

    // Our client stack against redis-benchmark in the same run.
    let cfg = RedisConfig {
        url: t.url.clone(),
        ..RedisConfig::default()
    };
    let client = kitbash_runtime::redis::connect_client(&cfg, Duration::from_secs(10)).await?;
    let client = Arc::new(client);

    eprintln!("fred: INCR from 1000 concurrent tasks on one client …");
    let incr_rb = redis_benchmark(
        &t,
        &[
            "-t",
            "incr",
            "-n",
            &(n * 5).to_string(),
            "-c",
            "50",
            "-P",
            "16",
        ],
    )?;
    let per_task = (n / 1000).max(50);
    let start = Instant::now();
    let mut tasks = Vec::with_capacity(1000);
    for _ in 0..1000 {
        let c = client.clone();
        tasks.push(tokio::spawn(async move {
            for _ in 0..per_task {
                let _: i64 = c
                    .incr(kitbash_schema::Keys::default().bench("counter"))
                    .await?;
            }
            Ok::<(), fred::error::Error>(())
        }));
    }
    for t in tasks {
        t.await??;
    }
    let fred_rps = (per_task * 1000) as f64 / start.elapsed().as_secs_f64();
    out.push(
        Record::new(
            "redis",
            "fred_incr_1000_tasks_rps",
            fred_rps,
            "ops/s",
            first(&incr_rb).rps,
        )
        .with(
            "baseline_kind",
            "redis-benchmark INCR -c 50 -P 16, same run",
        ),
    );

    eprintln!("fred: sequential GET round trips …");
    let rb1 = redis_benchmark(&t, &["-t", "get", "-n", &(n / 4).to_string(), "-c", "1"])?;
    let _: () = client
        .set(
            kitbash_schema::Keys::default().bench("key"),
            "value",
            None,
            None,
            false,
        )
        .await?;
    let mut h = Histogram::<u64>::new(3)?;
    for _ in 0..(n / 4) {
        let s = Instant::now();
        let _: Option<String> = client
            .get(kitbash_schema::Keys::default().bench("key"))
            .await?;
        h.record(s.elapsed().as_nanos() as u64)?;
    }
    let rb1 = first(&rb1);
    out.push(
        Record::new(
            "redis",
            "fred_get_p50_ms",
            h.value_at_quantile(0.5) as f64 / 1e6,
            "ms",
            rb1.p50_ms,
        )
        .with("baseline_kind", "redis-benchmark GET -c 1, same run"),
    );
    out.push(
        Record::new(
            "redis",
            "fred_get_p99_ms",
            h.value_at_quantile(0.99) as f64 / 1e6,
            "ms",
            rb1.p99_ms,
        )
        .with("baseline_kind", "redis-benchmark GET -c 1, same run"),
    );
    let _ = client.quit().await;
    Ok(out)
}
