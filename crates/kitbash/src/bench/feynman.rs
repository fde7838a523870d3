//! `kitbash bench feynman`: ticks through the physics writer with Redis on the same machine.
//!
//! Every phase runs in a namespace of its own on the suite's Redis (its own `redis-server`
//! unless `KITBASH__REDIS__URL` names one), 8 partitions, window 1000.
//!
//! - `ticks_per_s`: a backlog of ticks of **1,000 symbols** (synthetic market, round-robin, so a
//!   batch holds many symbols and few ticks of each) drained by one in-process feynman
//!   instance, from its start until every partition's checkpoint reaches the end of its stream.
//!   Baseline: `redis-benchmark` pipelined XADD (`-c 50 -P 32`) in the same run — how fast Redis
//!   alone takes entries in.
//! - `vectors_per_s`: physics vectors written during that drain (the physics stream's
//!   `entries-added`), per second. Baseline: the drain's `ticks_per_s`, so the ratio is vectors
//!   per tick (1 = no coalescing).
//! - `redis_usec_per_tick`: Redis's own time per tick of that drain, from `INFO commandstats`
//!   around it: the daemon's `evalsha` (commit and lease scripts, including the commands they
//!   run) + `xread` µs, ÷ ticks; every command's calls and µs per tick in `commands`. Baseline:
//!   Redis's `xadd` µs per tick while the same backlog was loaded. Redis times its commands by
//!   wall clock, so on a loaded machine this moves too (less than the throughput).
//! - `daemon_instructions_per_tick`: `kitbash-feynman` under `valgrind --tool=callgrind`
//!   draining 10,000 and then 30,000 ticks of 1,000 symbols, (Ir(3N) − Ir(N)) / 2N. Baseline: the
//!   same with 16 symbols. Skipped when valgrind is missing or `KITBASH_BENCH_FEYNMAN_CALLGRIND=0`.
//! - `ticks_per_s_16_symbols`: the same drain with 16 symbols — the method `ticks_per_s` used
//!   before; a batch then holds ~60 ticks per symbol and computes one vector for them.
//! - `p99_tick_to_update_ms`: 1,000 symbols, ticks published one by one at a fixed
//!   10,000/s after a warm-up (one tick per symbol, each symbol's update awaited: the daemon's
//!   first few hundred ms are not its steady state; `warmup_ms` says how long it took);
//!   **every tick** is timed from just before its XADD to the arrival of the first
//!   `state_update` that reflects it (same symbol, `data.source` ≥ the tick's id; HDR
//!   histogram). The daemon runs as its own process (`kitbash-feynman` next to this binary;
//!   in-process when it is not built — the `daemon` field says which). Baseline:
//!   `redis-benchmark -c 1` GET p99 in the same run (a bare round trip).
//!   Beside it, the daemon's own batch times over the timed run (`daemon_batch_*`: its
//!   `kitbash_batch_seconds` — read, decode, commit reply — scraped from its `/metrics` after
//!   the warm-up and at the end), to tell the daemon's share of the tail from the rest, and
//!   the delivery half's floor (`delivery_floor_*`: no daemon, the same generator
//!   `PUBLISH`es a `state_update` of the run at the same schedule to the same kind of
//!   subscriber).
//! - `p99_tick_to_update_ms_last_of_batch`: the old method on the same run — only the ticks an
//!   update names as its `source` (the last tick of the symbol in a coalesced batch).
//! - `rss_per_symbol_kb`: the daemon as its own process; RSS (`VmRSS`) once it owns its
//!   partitions, then after 10 ticks for each of 10,000 symbols, offered at 10,000 ticks/s,
//!   were applied and snapshotted; the difference divided by the symbols. Baseline: the
//!   checkpoint snapshot's bytes per symbol (what a symbol's state is when encoded), same run.
//! - `rss_per_symbol_kb_backlog`: the same ticks loaded first and drained as a backlog. Batches
//!   of 1000 ticks of ~1000 symbols make the largest commits; the allocator keeps the transient
//!   peak resident, so this figure measures that peak more than the symbols' state.
//!
//! `KITBASH_BENCH_FEYNMAN_SNAPSHOT_ITEM_MS` sets `[feynman] snapshot_item_ms` for every phase
//! (default: the config default); each record carries the value used, so runs with different
//! values can be compared. `KITBASH_BENCH_FEYNMAN_ONLY` runs only the phases it lists, comma
//! separated: `drain` (both drains), `latency`, `callgrind`, `rss` (both memory phases) — for
//! comparing one setting in a minute instead of several.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use fred::prelude::*;
use fred::types::Value;
use hdrhistogram::Histogram;
use kitbash_client::Producer;
use kitbash_feynman::market::MarketSim;
use kitbash_runtime::{Config, shutdown};
use kitbash_schema::messages::{StateUpdate, Tick};
use kitbash_schema::{DaemonKind, Keys, Namespace, StreamName};

use super::commandstats::{command_stats, cost_per_unit, delta};
use super::openloop::{even_schedule, open_loop, q_ms};
use super::redis::{Target, redis_benchmark, target, xadd_baseline};
use super::{BenchOptions, Record};

/// Symbols of the headline throughput and latency figures (performance.md: realistic
/// cardinality).
const SYMBOLS: usize = 1_000;
/// Symbols of the old throughput method.
const OLD_SYMBOLS: usize = 16;
/// Offered load of the latency phase.
const RATE: u64 = 10_000;
/// Symbols and ticks per symbol of the memory phase.
const RSS_SYMBOLS: usize = 10_000;
const RSS_TICKS_PER_SYMBOL: usize = 10;

fn cpu_seconds() -> f64 {
    cpu_of("/proc/self/stat")
}

pub(super) fn process_cpu_seconds(pid: u32) -> f64 {
    cpu_of(&format!("/proc/{pid}/stat"))
}

fn cpu_of(stat: &str) -> f64 {
    // utime + stime, in clock ticks (100 Hz on Linux).
    std::fs::read_to_string(stat)
        .ok()
        .and_then(|s| {
            let after = s.rsplit_once(')')?.1.to_owned();
            let f: Vec<&str> = after.split_whitespace().collect();
            Some((f.get(11)?.parse::<f64>().ok()? + f.get(12)?.parse::<f64>().ok()?) / 100.0)
        })
        .unwrap_or(0.0)
}

/// Resident set size of `pid`, KiB (`VmRSS` in `/proc/{pid}/status`).
pub(super) fn rss_kib(pid: u32) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| anyhow::anyhow!("no VmRSS for process {pid}"))
}

/// `[feynman] snapshot_item_ms` for this run (`KITBASH_BENCH_FEYNMAN_SNAPSHOT_ITEM_MS`).
fn snapshot_item_ms() -> u64 {
    std::env::var("KITBASH_BENCH_FEYNMAN_SNAPSHOT_ITEM_MS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(Config::default().feynman.snapshot_item_ms)
}

fn bench_config(url: &str, ns: &str) -> Config {
    let mut c = Config::default();
    c.feynman.snapshot_item_ms = snapshot_item_ms();
    c.redis.url = url.to_owned();
    c.redis.namespace = ns.to_owned();
    c.admin.listen = String::new();
    c.feynman.partitions = 8;
    c.feynman.window = 1000;
    c.consumer.batch = 1000;
    c.consumer.block_ms = 100;
    c
}

fn symbols(n: usize) -> Vec<String> {
    (0..n).map(|i| format!("SYM{i}")).collect()
}

fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

/// A stream id as a comparable pair.
fn id_key(id: &str) -> Option<(u64, u64)> {
    let (ms, seq) = id.split_once('-')?;
    Some((ms.parse().ok()?, seq.parse().ok()?))
}

/// Runs the suite.
pub async fn run(opts: &BenchOptions) -> anyhow::Result<Vec<Record>> {
    let t = target(opts)?;
    let cfg = kitbash_runtime::config::RedisConfig {
        url: t.url.clone(),
        ..Default::default()
    };
    let client = kitbash_runtime::redis::connect_client(&cfg, Duration::from_secs(10)).await?;
    let mut out = Vec::new();
    let run_id = std::process::id();
    let n: usize = if opts.long { 1_000_000 } else { 200_000 };
    let only = std::env::var("KITBASH_BENCH_FEYNMAN_ONLY").ok();
    let want = |phase: &str| {
        only.as_deref()
            .is_none_or(|o| o.split(',').any(|p| p == phase))
    };
    if want("drain") {
        // ---- throughput: drain a backlog ----
        eprintln!("feynman: baseline redis-benchmark XADD -P 32 …");
        let xadd_rps = xadd_baseline(&t, 400_000, Some(32))?
            .first()
            .map(|r| r.1.rps)
            .filter(|r| *r > 0.0)
            .context("redis-benchmark XADD -P 32 gave no rate: no baseline for ticks_per_s")?;
        let wide = drain(&t, &client, &format!("bench{run_id}a"), SYMBOLS, n).await?;
        out.push(
            Record::new(
                "feynman",
                "ticks_per_s",
                wide.ticks_per_s(),
                "ticks/s",
                xadd_rps,
            )
            .with(
                "baseline_kind",
                "redis-benchmark XADD -c 50 -P 32, same run",
            )
            .with("symbols", SYMBOLS)
            .with("ticks", n)
            .with("target", 250_000)
            .with("target_ratio", 0.5)
            .with("cpu_cores", round2(wide.cpu_cores)),
        );
        out.push(
            Record::new(
                "feynman",
                "vectors_per_s",
                wide.vectors as f64 / wide.secs,
                "vectors/s",
                wide.ticks_per_s(),
            )
            .with(
                "baseline_kind",
                "ticks_per_s of the same drain (ratio = vectors per tick)",
            )
            .with("symbols", SYMBOLS)
            .with("vectors", wide.vectors),
        );
        anyhow::ensure!(
            wide.xadd_usec_per_tick > 0.0,
            "INFO commandstats showed no XADD time for the backlog: no baseline for redis_usec_per_tick"
        );
        out.push(
        Record::new(
            "feynman",
            "redis_usec_per_tick",
            wide.redis_usec_per_tick,
            "us",
            wide.xadd_usec_per_tick,
        )
        .with(
            "baseline_kind",
            "Redis µs per tick of taking the same backlog in (the producer's XADDs), same server",
        )
        .with(
            "method",
            "INFO commandstats around the drain: (evalsha + xread usec) / ticks; commands by name in `commands`",
        )
        .with("symbols", SYMBOLS)
        .with("commands", wide.redis_cost.clone()),
    );
        let narrow = drain(&t, &client, &format!("bench{run_id}b"), OLD_SYMBOLS, n).await?;
        out.push(
            Record::new(
                "feynman",
                "ticks_per_s_16_symbols",
                narrow.ticks_per_s(),
                "ticks/s",
                xadd_rps,
            )
            .with(
                "baseline_kind",
                "redis-benchmark XADD -c 50 -P 32, same run",
            )
            .with(
                "method",
                "ticks_per_s before this change: 16 symbols, ~60 ticks per vector",
            )
            .with("symbols", OLD_SYMBOLS)
            .with("ticks", n)
            .with("vectors", narrow.vectors)
            .with("cpu_cores", round2(narrow.cpu_cores)),
        );
    }
    if want("latency") {
        // ---- latency at a fixed 10k ticks/s, every tick timed ----
        eprintln!("feynman: baseline redis-benchmark GET -c 1 …");
        let rtt_p99 = redis_benchmark(&t, &["-t", "get", "-n", "50000", "-c", "1"])?
            .first()
            .map(|r| r.1.p99_ms)
            .filter(|r| *r > 0.0)
            .context("redis-benchmark GET -c 1 gave no p99: no baseline for the latency")?;
        out.extend(latency(opts, &t, &client, &format!("bench{run_id}c"), rtt_p99).await?);
    }
    if want("callgrind") {
        // ---- the daemon's instructions per tick (callgrind, when installed) ----
        match daemon_instructions(&t, &client, run_id).await {
            Ok(Some(rec)) => out.push(rec),
            Ok(None) => {
                eprintln!("feynman: valgrind or kitbash-feynman not found: no instruction counts")
            }
            Err(e) => eprintln!("feynman: callgrind run failed, no instruction counts: {e:#}"),
        }
    }

    if want("rss") {
        // ---- memory per symbol ----
        out.push(rss_per_symbol(&t, &client, &format!("bench{run_id}d"), Load::Paced).await?);
        out.push(rss_per_symbol(&t, &client, &format!("bench{run_id}e"), Load::Backlog).await?);
    }

    for ns in ["a", "b", "c", "d", "e"] {
        remove_namespace(&client, &format!("bench{run_id}{ns}")).await?;
    }
    let _ = client.quit().await;
    let item_ms = snapshot_item_ms();
    let tunables = kitbash_runtime::daemon::glibc_tunables();
    // The machine is shared: the load average says how much of it the run had.
    let load = std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| s.split_whitespace().next().map(str::to_owned))
        .unwrap_or_default();
    Ok(out
        .into_iter()
        .map(|r| {
            r.with("snapshot_item_ms", item_ms)
                .with("load_average_1m", load.as_str())
                .with("glibc_tunables", tunables.as_str())
        })
        .collect())
}

/// What one drain measured.
struct Drain {
    ticks: usize,
    secs: f64,
    cpu_cores: f64,
    vectors: u64,
    /// Redis's µs per tick for the daemon's own commands (`evalsha` — the commit and lease
    /// scripts, which include the commands they run — and `xread`), from `INFO commandstats`.
    redis_usec_per_tick: f64,
    /// Redis's µs per tick for taking the backlog in (the producer's `XADD`s), same server.
    xadd_usec_per_tick: f64,
    /// Per command: calls and µs per tick, µs per call (`commandstats::cost_per_unit`).
    redis_cost: serde_json::Value,
}

impl Drain {
    fn ticks_per_s(&self) -> f64 {
        self.ticks as f64 / self.secs
    }
}

/// Loads `n` ticks of `n_symbols` symbols, then times one in-process instance draining them.
async fn drain(
    t: &Target,
    client: &Client,
    ns: &str,
    n_symbols: usize,
    n: usize,
) -> anyhow::Result<Drain> {
    let keys = Keys::new(Namespace::new(ns)?);
    let cfg = bench_config(&t.url, ns);
    eprintln!("feynman: loading a backlog of {n} ticks of {n_symbols} symbols …");
    let stats0 = command_stats(client).await?;
    load_backlog(client, &keys, cfg.feynman.partitions, n_symbols, n).await?;
    let stats1 = command_stats(client).await?;
    eprintln!("feynman: draining …");
    let (signals, _reload) = shutdown::manual();
    let stop = signals.shutdown.clone();
    let cpu0 = cpu_seconds();
    let start = Instant::now();
    let daemon = tokio::spawn(kitbash_feynman::run(cfg.clone(), signals));
    while !kitbash_feynman::partition::caught_up(client, &keys, cfg.feynman.partitions).await? {
        anyhow::ensure!(
            start.elapsed() < Duration::from_secs(300),
            "the backlog did not drain within 300 s"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let secs = start.elapsed().as_secs_f64();
    let cpu_cores = (cpu_seconds() - cpu0) / secs;
    let stats2 = command_stats(client).await?;
    stop.cancel();
    let _ = daemon.await;
    let vectors = entries_added(client, &keys.stream(StreamName::Physics)).await?;
    let per_tick = |(_, usec): (u64, u64)| usec as f64 / n.max(1) as f64;
    Ok(Drain {
        ticks: n,
        secs,
        cpu_cores,
        vectors,
        redis_usec_per_tick: per_tick(delta(&stats1, &stats2, "evalsha"))
            + per_tick(delta(&stats1, &stats2, "xread")),
        xadd_usec_per_tick: per_tick(delta(&stats0, &stats1, "xadd")),
        // The bench's own polling (`caught_up`: XREVRANGE, HGET) is left out; the scripts'
        // inner commands are listed under their own names too (and inside `evalsha`).
        redis_cost: cost_per_unit(&stats1, &stats2, n as u64, "tick", |name| {
            matches!(name, "xrevrange" | "hget")
        }),
    })
}

/// XADDs `n` ticks of `n_symbols` symbols (synthetic market, seed 7, round-robin) into the
/// tick partitions, 2,000 per pipelined batch.
async fn load_backlog(
    client: &Client,
    keys: &Keys,
    partitions: u32,
    n_symbols: usize,
    n: usize,
) -> anyhow::Result<()> {
    let producer = Producer::new(client.clone(), keys.clone(), partitions);
    let mut sim = MarketSim::new(&symbols(n_symbols), 7).map_err(|e| anyhow::anyhow!("{e}"))?;
    let mut by_stream: HashMap<StreamName, Vec<Tick>> = HashMap::new();
    for i in 0..n {
        let tk = sim.next_tick(1_766_318_400.0 + i as f64 * 1e-3);
        by_stream
            .entry(producer.tick_stream(&tk.symbol))
            .or_default()
            .push(tk);
    }
    for (s, ticks) in &by_stream {
        for chunk in ticks.chunks(2_000) {
            producer.publish_batch(*s, chunk).await?;
        }
    }
    Ok(())
}

/// Ticks of the shorter callgrind drain; the longer one has three times as many.
const CALLGRIND_TICKS: usize = 10_000;

/// The daemon's instructions per tick: `kitbash-feynman` under `valgrind --tool=callgrind`
/// draining a backlog of N and then 3N ticks (each in a fresh namespace, loaded before it
/// starts, stopped by SIGTERM once caught up), (Ir(3N) − Ir(N)) / 2N, so start-up, idle and
/// shutdown cancel out — with 1,000 symbols, and with 16 as the baseline. Counts repeat to
/// within the snapshots' timing (a snapshot is due by wall clock, which valgrind slows).
/// `None` when valgrind or the binary is missing, or `KITBASH_BENCH_FEYNMAN_CALLGRIND=0`.
/// With `KITBASH_BENCH_FEYNMAN_CALLGRIND_DIR` set, each drain's profile is kept there as
/// `{namespace}.callgrind`.
async fn daemon_instructions(
    t: &Target,
    client: &Client,
    run_id: u32,
) -> anyhow::Result<Option<Record>> {
    let wanted = std::env::var("KITBASH_BENCH_FEYNMAN_CALLGRIND").map_or(true, |v| v != "0");
    let installed = std::process::Command::new("valgrind")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    let Some(bin) = daemon_binary().filter(|_| wanted && installed) else {
        return Ok(None);
    };
    let mut per_tick = Vec::new();
    for (label, n_symbols) in [("w", SYMBOLS), ("n", OLD_SYMBOLS)] {
        let mut runs = Vec::new();
        for (i, n) in [CALLGRIND_TICKS, 3 * CALLGRIND_TICKS]
            .into_iter()
            .enumerate()
        {
            eprintln!(
                "feynman: callgrind of the daemon draining {n} ticks of {n_symbols} symbols …"
            );
            let ns = format!("bench{run_id}g{label}{i}");
            runs.push(callgrind_drain(t, client, &bin, &ns, n_symbols, n).await?);
            remove_namespace(client, &ns).await?;
        }
        let (ir, vectors) = (
            runs[1].0.saturating_sub(runs[0].0) as f64,
            runs[1].1.saturating_sub(runs[0].1) as f64,
        );
        per_tick.push((
            ir / (2 * CALLGRIND_TICKS) as f64,
            ir / vectors.max(1.0),
            vectors / (2 * CALLGRIND_TICKS) as f64,
        ));
    }
    let ((wide, wide_per_vector, wide_vpt), (narrow, _, _)) = (per_tick[0], per_tick[1]);
    Ok(Some(
        Record::new(
            "feynman",
            "daemon_instructions_per_tick",
            wide,
            "instructions",
            narrow,
        )
        .with(
            "baseline_kind",
            "the same daemon and method with 16 symbols (~60 ticks per vector)",
        )
        .with(
            "method",
            "valgrind --tool=callgrind of kitbash-feynman draining N and 3N ticks, (Ir(3N) − Ir(N)) / 2N",
        )
        .with("instructions_per_vector", wide_per_vector.round())
        .with("vectors_per_tick", wide_vpt)
        .with("ticks_n", CALLGRIND_TICKS)
        .with("symbols", SYMBOLS),
    ))
}

/// One callgrind drain: (instructions of the whole process, physics vectors written).
async fn callgrind_drain(
    t: &Target,
    client: &Client,
    bin: &std::path::Path,
    ns: &str,
    n_symbols: usize,
    n: usize,
) -> anyhow::Result<(u64, u64)> {
    let keys = Keys::new(Namespace::new(ns)?);
    let cfg = bench_config(&t.url, ns);
    load_backlog(client, &keys, cfg.feynman.partitions, n_symbols, n).await?;
    let dir = tempfile::tempdir()?;
    let file = dir.path().join("feynman.callgrind");
    let mut child = tokio::process::Command::new("valgrind")
        .arg("--tool=callgrind")
        .arg(format!("--callgrind-out-file={}", file.display()))
        .arg(bin)
        .envs(daemon_env(&cfg))
        .env_remove("KITBASH_PROFILE")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()?;
    let start = Instant::now();
    while !kitbash_feynman::partition::caught_up(client, &keys, cfg.feynman.partitions).await? {
        anyhow::ensure!(
            start.elapsed() < Duration::from_secs(600),
            "the daemon under callgrind did not drain {n} ticks within 600 s"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let pid = child
        .id()
        .context("valgrind exited before the drain ended")?;
    let _ = std::process::Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status();
    let status = child.wait().await?;
    anyhow::ensure!(
        status.success(),
        "kitbash-feynman under callgrind: {status}"
    );
    if let Some(keep) = std::env::var_os("KITBASH_BENCH_FEYNMAN_CALLGRIND_DIR") {
        // Kept for `callgrind_annotate`: where the instructions go, by function.
        std::fs::create_dir_all(&keep)?;
        std::fs::copy(
            &file,
            std::path::Path::new(&keep).join(format!("{ns}.callgrind")),
        )?;
    }
    let text = std::fs::read_to_string(&file)?;
    let ir = text
        .lines()
        .find_map(|l| {
            l.strip_prefix("summary:")
                .or_else(|| l.strip_prefix("totals:"))
        })
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .context("no instruction total in the callgrind output")?;
    let vectors = entries_added(client, &keys.stream(StreamName::Physics)).await?;
    Ok((ir, vectors))
}

/// `entries-added` of `XINFO STREAM key`: every entry ever appended, trimmed or not.
async fn entries_added(client: &Client, key: &str) -> anyhow::Result<u64> {
    let v: Value = client
        .custom(
            fred::cmd!("XINFO"),
            vec![Value::from("STREAM"), Value::from(key)],
        )
        .await?;
    let pairs: Vec<Value> = match v {
        Value::Array(a) => a,
        Value::Map(m) => m
            .inner()
            .into_iter()
            .flat_map(|(k, v)| [Value::from(k), v])
            .collect(),
        other => anyhow::bail!("XINFO STREAM: unexpected reply {other:?}"),
    };
    pairs
        .chunks(2)
        .find_map(|p| match p {
            [k, Value::Integer(n)]
                if kitbash_runtime::entries::string_of(k).as_deref() == Some("entries-added") =>
            {
                u64::try_from(*n).ok()
            }
            _ => None,
        })
        .context("XINFO STREAM has no entries-added (Redis 7.0 or newer needed)")
}

/// The environment that configures a `kitbash-feynman` process as `cfg`.
fn daemon_env(cfg: &Config) -> Vec<(&'static str, String)> {
    vec![
        ("KITBASH_CONFIG_DIR", "/nonexistent".into()),
        // As every launcher we ship runs the daemons (`kitbash_runtime::daemon::GLIBC_TUNABLES`).
        ("GLIBC_TUNABLES", kitbash_runtime::daemon::glibc_tunables()),
        ("KITBASH__REDIS__URL", cfg.redis.url.clone()),
        ("KITBASH__REDIS__NAMESPACE", cfg.redis.namespace.clone()),
        ("KITBASH__ADMIN__LISTEN", cfg.admin.listen.clone()),
        (
            "KITBASH__FEYNMAN__PARTITIONS",
            cfg.feynman.partitions.to_string(),
        ),
        ("KITBASH__FEYNMAN__WINDOW", cfg.feynman.window.to_string()),
        (
            "KITBASH__FEYNMAN__SNAPSHOT_ITEM_MS",
            cfg.feynman.snapshot_item_ms.to_string(),
        ),
        ("KITBASH__CONSUMER__BATCH", cfg.consumer.batch.to_string()),
        (
            "KITBASH__CONSUMER__BLOCK_MS",
            cfg.consumer.block_ms.to_string(),
        ),
    ]
}

/// `kitbash-feynman` next to this binary, when built.
fn daemon_binary() -> Option<std::path::PathBuf> {
    std::env::current_exe()
        .ok()
        .and_then(|e| e.parent().map(|d| d.join("kitbash-feynman")))
        .filter(|p| p.exists())
}

/// A running daemon: its own process, or an in-process task when the binary is not built.
enum Daemon {
    Process(std::process::Child),
    InProcess(
        kitbash_runtime::CancellationToken,
        tokio::task::JoinHandle<Result<(), kitbash_runtime::RuntimeError>>,
    ),
}

impl Daemon {
    /// Starts feynman with `cfg` as a process when `kitbash-feynman` sits next to this binary.
    fn start(cfg: &Config) -> anyhow::Result<Self> {
        let Some(bin) = daemon_binary() else {
            let (signals, _reload) = shutdown::manual();
            let token = signals.shutdown.clone();
            return Ok(Daemon::InProcess(
                token,
                tokio::spawn(kitbash_feynman::run(cfg.clone(), signals)),
            ));
        };
        let child = std::process::Command::new(bin)
            .envs(daemon_env(cfg))
            .env_remove("KITBASH_PROFILE")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()?;
        Ok(Daemon::Process(child))
    }

    fn pid(&self) -> Option<u32> {
        match self {
            Daemon::Process(c) => Some(c.id()),
            Daemon::InProcess(..) => None,
        }
    }

    fn kind(&self) -> &'static str {
        match self {
            Daemon::Process(_) => "process",
            Daemon::InProcess(..) => "in-process",
        }
    }

    /// Waits until every partition has an owner.
    async fn wait_owning(
        &self,
        client: &Client,
        keys: &Keys,
        partitions: u32,
    ) -> anyhow::Result<()> {
        super::wait_partitions_leased(
            client,
            keys,
            StreamName::Ticks,
            partitions,
            "the feynman instances",
        )
        .await
    }

    /// SIGTERM (or cancel) and wait for the exit.
    async fn stop(self) {
        match self {
            Daemon::Process(mut c) => {
                let _ = std::process::Command::new("kill")
                    .args(["-TERM", &c.id().to_string()])
                    .status();
                let _ = tokio::task::spawn_blocking(move || c.wait()).await;
            }
            Daemon::InProcess(token, task) => {
                token.cancel();
                let _ = task.await;
            }
        }
    }
}

/// A tick as the producer saw it: symbol, entry id, when its XADD was issued.
type Sent = (String, String, Instant);

/// A `state_update` as received: its `source` id and when it arrived.
type Arrival = ((u64, u64), Instant);

/// 10k ticks/s of 1,000 symbols, each tick timed to the first update reflecting it.
async fn latency(
    opts: &BenchOptions,
    t: &Target,
    client: &Client,
    ns: &str,
    rtt_p99: f64,
) -> anyhow::Result<Vec<Record>> {
    let keys = Keys::new(Namespace::new(ns)?);
    let mut cfg = bench_config(&t.url, ns);
    // The daemon's admin endpoint, to read its own batch times (`kitbash_batch_seconds`).
    let admin = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?;
    cfg.admin.listen = admin.to_string();
    let producer = Producer::new(client.clone(), keys.clone(), cfg.feynman.partitions);
    let mut sim = MarketSim::new(&symbols(SYMBOLS), 11).map_err(|e| anyhow::anyhow!("{e}"))?;
    // The daemon runs as its own process here, as in production, so the benchmark's producer
    // and subscriber do not share its async runtime.
    let daemon = Daemon::start(&cfg)?;
    daemon
        .wait_owning(client, &keys, cfg.feynman.partitions)
        .await?;
    // Updates per symbol in arrival order: (source id, arrival).
    let updates: Arc<Mutex<HashMap<String, Vec<Arrival>>>> = Arc::default();
    let lagged = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let sample: Arc<Mutex<Option<StateUpdate>>> = Arc::default();
    let (sub, collector) = {
        let (updates, sample) = (updates.clone(), sample.clone());
        collect_updates(
            t,
            keys.channel_state_update(),
            lagged.clone(),
            move |u, source, now| {
                if let Ok(mut s) = sample.lock()
                    && s.is_none()
                {
                    *s = Some(u.clone());
                }
                if let Ok(mut m) = updates.lock() {
                    m.entry(u.symbol).or_default().push((source, now));
                }
            },
        )
        .await?
    };

    // Warm-up, not timed: one tick per symbol, waited for until each symbol's update arrived.
    // The daemon's first few hundred ms after taking its leases (first script loads, every
    // window allocated, connections warming) are not the steady state the target is about;
    // timed from its start, a 6 s run's p99 measured that instead (ticks of the first 0.3 s
    // at 40–180 ms; gone after a 2 s pause, same binary).
    let warm_start = Instant::now();
    for i in 0..SYMBOLS {
        let tk = sim.next_tick(1_766_399_999.0 + i as f64 * 1e-6);
        producer.publish_tick(&tk).await?;
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    while updates.lock().map_or(0, |u| u.len()) < SYMBOLS {
        anyhow::ensure!(
            Instant::now() < deadline,
            "warm-up: not every symbol's first update arrived within 30 s"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let warmup_ms = warm_start.elapsed().as_secs_f64() * 1e3;
    let batches_before = daemon_batches(admin).await;

    let secs = if opts.long { 30 } else { 6 };
    eprintln!("feynman: {RATE} ticks/s of {SYMBOLS} symbols for {secs} s …");
    let sent: Arc<Mutex<Vec<Sent>>> = Arc::default();
    let failed = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let rate_start = Instant::now();
    let cpu0 = cpu_seconds();
    let daemon_cpu0 = daemon.pid().map(process_cpu_seconds);
    let total = RATE * secs;
    // Every tick its own XADD (no batching: the latency a producer sees), issued on an even
    // schedule by the shared open-loop generator and timed from its *scheduled* instant.
    let ticks: Arc<Vec<Tick>> = Arc::new(
        (0..total)
            .map(|i| sim.next_tick(1_766_400_000.0 + i as f64 * 1e-4))
            .collect(),
    );
    let schedule = even_schedule(RATE as f64, total as usize);
    let run = {
        let (producer, sent, failed) = (producer.clone(), sent.clone(), failed.clone());
        open_loop(
            tokio::runtime::Handle::current(),
            schedule,
            move |k, due| {
                let (p, sent, failed, ticks) = (
                    producer.clone(),
                    sent.clone(),
                    failed.clone(),
                    ticks.clone(),
                );
                async move {
                    let Some(tk) = ticks.get(k) else {
                        return false;
                    };
                    match p.publish_tick(tk).await {
                        Ok(id) => {
                            if let Ok(mut s) = sent.lock() {
                                s.push((tk.symbol.clone(), id, due));
                            }
                            true
                        }
                        Err(_) => {
                            failed.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                            false
                        }
                    }
                }
            },
        )
        .await?
    };
    let wall = rate_start.elapsed().as_secs_f64();
    let cpu = (cpu_seconds() - cpu0) / wall;
    let daemon_cpu = daemon
        .pid()
        .zip(daemon_cpu0)
        .map(|(pid, c0)| (process_cpu_seconds(pid) - c0) / wall);

    // Wait until every symbol's newest tick is reflected by an update received (or give up
    // after 10 s: whatever is still missing is reported as unmatched).
    let newest: HashMap<String, (u64, u64)> = {
        let sent = sent.lock().map_err(|_| anyhow::anyhow!("sent lock"))?;
        let mut m: HashMap<String, (u64, u64)> = HashMap::new();
        for (sym, id, _) in sent.iter() {
            if let Some(k) = id_key(id) {
                let e = m.entry(sym.clone()).or_insert(k);
                *e = (*e).max(k);
            }
        }
        m
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let all = updates.lock().is_ok_and(|u| {
            newest.iter().all(|(sym, id)| {
                u.get(sym)
                    .is_some_and(|v| v.iter().any(|(source, _)| source >= id))
            })
        });
        if all || Instant::now() >= deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let kind = daemon.kind();
    let batches = match (batches_before, daemon_batches(admin).await) {
        (Some(a), Some(b)) => Some(b.since(&a)),
        _ => None,
    };
    daemon.stop().await;
    collector.abort();
    let _ = sub.quit().await;
    let sample = sample.lock().ok().and_then(|s| s.clone());
    let floor = match sample {
        Some(u) => Some(delivery_floor(t, client, &format!("{ns}f"), u, secs).await?),
        None => None,
    };

    // Match each tick with the first update (in arrival order) whose source is ≥ its id.
    let updates = updates
        .lock()
        .map_err(|_| anyhow::anyhow!("updates lock"))?
        .clone();
    let sent = sent
        .lock()
        .map_err(|_| anyhow::anyhow!("sent lock"))?
        .clone();
    let mut every = Histogram::<u64>::new(3)?;
    let mut last_of_batch = Histogram::<u64>::new(3)?;
    let mut unmatched = 0u64;
    // Per symbol: the running maximum of sources in arrival order (non-decreasing), to binary
    // search the first update that covers an id.
    let running: BTreeMap<&str, Vec<Arrival>> = updates
        .iter()
        .map(|(sym, v)| {
            let mut max = (0, 0);
            let r = v
                .iter()
                .map(|(s, at)| {
                    max = max.max(*s);
                    (max, *at)
                })
                .collect();
            (sym.as_str(), r)
        })
        .collect();
    for (sym, id, t0) in &sent {
        let (Some(key), Some(ups)) = (id_key(id), running.get(sym.as_str())) else {
            unmatched += 1;
            continue;
        };
        let at = ups.partition_point(|(max, _)| *max < key);
        let Some((_, arrived)) = ups.get(at) else {
            unmatched += 1;
            continue;
        };
        let micros = arrived.saturating_duration_since(*t0).as_micros() as u64;
        every.record(micros.max(1))?;
        let named = updates
            .get(sym)
            .is_some_and(|v| v.iter().any(|(s, _)| *s == key));
        if named {
            last_of_batch.record(micros.max(1))?;
        }
    }
    anyhow::ensure!(
        !every.is_empty(),
        "no tick was matched to a state_update: nothing to report"
    );
    let ms = |h: &Histogram<u64>, q: f64| h.value_at_quantile(q) as f64 / 1000.0;
    let failed = failed.load(std::sync::atomic::Ordering::Relaxed);
    let lagged = lagged.load(std::sync::atomic::Ordering::Relaxed);
    let every_rec = Record::new(
        "feynman",
        "p99_tick_to_update_ms",
        ms(&every, 0.99),
        "ms",
        rtt_p99,
    )
    .with("baseline_kind", "redis-benchmark GET -c 1 p99, same run")
    .with(
        "method",
        "every tick, its scheduled instant (even schedule, shared open-loop generator) → first state_update whose data.source ≥ its id",
    )
    .with("p50_ms", ms(&every, 0.5))
    .with("p999_ms", ms(&every, 0.999))
    .with("max_ms", every.max() as f64 / 1000.0)
    .with("ticks_timed", every.len())
    .with("ticks_unmatched", unmatched)
    .with("xadd_failed", failed)
    .with("subscriber_lagged", lagged)
    .with("symbols", SYMBOLS)
    .with("offered_ticks_per_s", (total as f64 / run.issue_span.as_secs_f64().max(1e-9)).round())
    .with("generator_late_p99_ms", q_ms(&run.lateness, 0.99))
    .with("warmup_ms", round2(warmup_ms))
    .with(
        "warmup",
        "one tick per symbol sent and its update awaited before timing (not timed)",
    )
    .with("cpu_cores", round2(cpu))
    .with("daemon", kind)
    .with(
        "daemon_cpu_cores",
        daemon_cpu.map_or(serde_json::Value::Null, |c| round2(c).into()),
    )
    .with("target_ms", 2);
    let every_rec = match &floor {
        Some(f) => every_rec
            .with("delivery_floor_p50_ms", ms(f, 0.5))
            .with("delivery_floor_p99_ms", ms(f, 0.99))
            .with("delivery_floor_p999_ms", ms(f, 0.999))
            .with(
                "delivery_floor_kind",
                "no daemon: the same generator PUBLISHes a state_update of the run (its source the \
                 message's number) at the same schedule to the same kind of subscriber, which decodes \
                 it as above; scheduled instant → arrival",
            ),
        None => every_rec,
    };
    let every_rec = match &batches {
        Some(b) => every_rec
            .with("daemon_batches", b.count)
            .with("daemon_batch_ticks_mean", round2(b.entries / b.count.max(1) as f64))
            .with("daemon_batch_ms_p99_at_most", b.quantile_bound_ms(0.99))
            .with("daemon_batch_ms_p999_at_most", b.quantile_bound_ms(0.999))
            .with(
                "daemon_batch_kind",
                "the daemon's own kitbash_batch_seconds (read → decode → commit reply) over the timed run, \
                 scraped from its /metrics; quantiles as their histogram bucket's upper bound",
            ),
        None => every_rec,
    };
    let mut out = vec![every_rec];
    if !last_of_batch.is_empty() {
        out.push(
            Record::new(
                "feynman",
                "p99_tick_to_update_ms_last_of_batch",
                ms(&last_of_batch, 0.99),
                "ms",
                rtt_p99,
            )
            .with("baseline_kind", "redis-benchmark GET -c 1 p99, same run")
            .with(
                "method",
                "the old figure: only ticks an update names as its source (last of the symbol's coalesced batch)",
            )
            .with("p50_ms", ms(&last_of_batch, 0.5))
            .with("ticks_timed", last_of_batch.len())
            .with("symbols", SYMBOLS),
        );
    }
    Ok(out)
}

/// A subscriber to `channel` built as the latency phase's (a deep broadcast buffer) and the
/// task that decodes each message as a [`StateUpdate`] and hands it, its `data.source` as an
/// id and its arrival instant to `on`; messages the subscriber dropped are counted in `lagged`,
/// messages that are not an update with a source are skipped.
async fn collect_updates(
    t: &Target,
    channel: String,
    lagged: Arc<std::sync::atomic::AtomicU64>,
    mut on: impl FnMut(StateUpdate, (u64, u64), Instant) + Send + 'static,
) -> anyhow::Result<(fred::clients::SubscriberClient, tokio::task::JoinHandle<()>)> {
    let sub = Builder::from_config(fred::types::config::Config::from_url(&t.url)?)
        .with_performance_config(|p| p.broadcast_channel_capacity = 1 << 16)
        .build_subscriber_client()?;
    sub.init().await?;
    let mut rx = sub.message_rx();
    sub.subscribe(channel).await?;
    let task = tokio::spawn(async move {
        loop {
            let msg = match rx.recv().await {
                Ok(m) => m,
                Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                    lagged.fetch_add(n, std::sync::atomic::Ordering::Relaxed);
                    continue;
                }
                Err(_) => break,
            };
            let now = Instant::now();
            let Some(u) = msg
                .value
                .as_bytes()
                .and_then(|b| serde_json::from_slice::<StateUpdate>(b).ok())
            else {
                continue;
            };
            let Some(source) = u.data.source.as_deref().and_then(id_key) else {
                continue;
            };
            on(u, source, now);
        }
    });
    Ok((sub, task))
}

/// The tick path's floor without the daemon: the latency phase's generator, at the same even
/// schedule, `PUBLISH`es `sample` (its `data.source` set to each message's number) on the
/// `state_update` channel of namespace `ns`, and a subscriber built as the phase's decodes each
/// one; every message is timed from its scheduled instant to its arrival.
async fn delivery_floor(
    t: &Target,
    client: &Client,
    ns: &str,
    sample: StateUpdate,
    secs: u64,
) -> anyhow::Result<Histogram<u64>> {
    let channel = Keys::new(Namespace::new(ns)?).channel_state_update();
    let total = (RATE * secs) as usize;
    let arrived: Arc<Mutex<Vec<Option<Instant>>>> = Arc::new(Mutex::new(vec![None; total]));
    let received = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let lagged = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let (sub, collector) = {
        let (arrived, received) = (arrived.clone(), received.clone());
        collect_updates(t, channel.clone(), lagged.clone(), move |_, (k, _), now| {
            if let Ok(mut a) = arrived.lock()
                && let Some(slot) = a.get_mut(k as usize)
                && slot.replace(now).is_none()
            {
                received.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
        })
        .await?
    };
    eprintln!("feynman: the delivery floor, {RATE} PUBLISHes/s without the daemon …");
    let due: Arc<Mutex<Vec<Option<Instant>>>> = Arc::new(Mutex::new(vec![None; total]));
    {
        let (c, due, channel) = (client.clone(), due.clone(), channel.clone());
        let sample = Arc::new(sample);
        open_loop(
            tokio::runtime::Handle::current(),
            even_schedule(RATE as f64, total),
            move |k, at| {
                let mut u = (*sample).clone();
                u.data.source = Some(format!("{k}-0"));
                let (c, due, channel) = (c.clone(), due.clone(), channel.clone());
                async move {
                    if let Ok(mut d) = due.lock()
                        && let Some(slot) = d.get_mut(k)
                    {
                        *slot = Some(at);
                    }
                    c.publish::<i64, _, _>(channel, u.to_json()).await.is_ok()
                }
            },
        )
        .await?;
    }
    // Every message arrives, or is reported lost by the subscriber's lag, within the deadline.
    let deadline = Instant::now() + Duration::from_secs(10);
    let settled = || {
        let lost = usize::try_from(lagged.load(std::sync::atomic::Ordering::Relaxed));
        received
            .load(std::sync::atomic::Ordering::Relaxed)
            .saturating_add(lost.unwrap_or(usize::MAX))
            >= total
    };
    while !settled() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    collector.abort();
    let _ = sub.quit().await;
    let mut h = Histogram::<u64>::new(3)?;
    let (due, arrived) = (
        due.lock().map_err(|_| anyhow::anyhow!("due lock"))?.clone(),
        arrived
            .lock()
            .map_err(|_| anyhow::anyhow!("arrived lock"))?
            .clone(),
    );
    for (d, a) in due.iter().zip(&arrived) {
        if let (Some(d), Some(a)) = (d, a) {
            h.record((a.saturating_duration_since(*d).as_micros() as u64).max(1))?;
        }
    }
    anyhow::ensure!(!h.is_empty(), "the delivery floor received nothing");
    Ok(h)
}

/// The daemon's `kitbash_batch_seconds` histogram summed over its tick streams (the series of
/// its consumer group).
#[derive(Clone, Debug, Default)]
struct Batches {
    /// Cumulative counts per bucket upper bound (seconds), ascending.
    buckets: Vec<(f64, u64)>,
    count: u64,
    /// Sum of `kitbash_batch_entries`.
    entries: f64,
}

impl Batches {
    /// From an OpenMetrics text: the series of feynman's consumer group (its tick streams).
    fn parse(text: &str) -> Self {
        let group = format!("group=\"{}\"", DaemonKind::Feynman.group());
        let mut buckets: BTreeMap<u64, u64> = BTreeMap::new();
        let (mut count, mut entries) = (0u64, 0.0);
        for line in text.lines() {
            if !line.contains(&group) {
                continue;
            }
            let Some((series, value)) = line.rsplit_once(' ') else {
                continue;
            };
            if let Some(rest) = series.strip_prefix("kitbash_batch_seconds_bucket{le=\"") {
                let le = rest.split('"').next().unwrap_or_default();
                if let (Ok(le), Ok(n)) = (le.parse::<f64>(), value.parse::<f64>()) {
                    *buckets.entry(le.to_bits()).or_default() += n as u64;
                }
            } else if series.starts_with("kitbash_batch_seconds_count{") {
                count += value.parse::<f64>().unwrap_or(0.0) as u64;
            } else if series.starts_with("kitbash_batch_entries_sum{") {
                entries += value.parse::<f64>().unwrap_or(0.0);
            }
        }
        let mut buckets: Vec<(f64, u64)> = buckets
            .into_iter()
            .map(|(b, n)| (f64::from_bits(b), n))
            .collect();
        buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
        Self {
            buckets,
            count,
            entries,
        }
    }

    /// What was observed after `before`.
    fn since(&self, before: &Batches) -> Batches {
        let was = |le: f64| {
            before
                .buckets
                .iter()
                .find(|(b, _)| *b == le)
                .map_or(0, |(_, n)| *n)
        };
        Batches {
            buckets: self
                .buckets
                .iter()
                .map(|(le, n)| (*le, n.saturating_sub(was(*le))))
                .collect(),
            count: self.count.saturating_sub(before.count),
            entries: (self.entries - before.entries).max(0.0),
        }
    }

    /// The upper bound (ms) of the first bucket holding quantile `q`.
    fn quantile_bound_ms(&self, q: f64) -> f64 {
        let want = (self.count as f64 * q).ceil() as u64;
        self.buckets
            .iter()
            .find(|(_, n)| *n >= want)
            .map_or(f64::INFINITY, |(le, _)| le * 1e3)
    }
}

/// The daemon's batch histogram from its `/metrics`; `None` when it does not answer.
async fn daemon_batches(admin: std::net::SocketAddr) -> Option<Batches> {
    let (status, body) =
        tokio::task::spawn_blocking(move || kitbash_testkit::support::http_get(admin, "/metrics"))
            .await
            .ok()?;
    (status == 200).then(|| Batches::parse(&body))
}

/// How the memory phase offers its ticks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Load {
    /// 10,000 ticks/s, one XADD each, as producers send them: batches stay small.
    Paced,
    /// Everything XADDed first, then drained as a backlog (batches of 1000 ticks of ~1000
    /// symbols each: the largest commits, the highest transient memory).
    Backlog,
}

/// RSS of the daemon process per symbol held (10 ticks each, window 1000).
async fn rss_per_symbol(
    t: &Target,
    client: &Client,
    ns: &str,
    load: Load,
) -> anyhow::Result<Record> {
    let keys = Keys::new(Namespace::new(ns)?);
    let cfg = bench_config(&t.url, ns);
    let daemon = Daemon::start(&cfg)?;
    let Some(pid) = daemon.pid() else {
        daemon.stop().await;
        anyhow::bail!(
            "rss_per_symbol_kb needs the kitbash-feynman binary next to kitbash \
             (cargo build --release -p kitbash-feynman)"
        );
    };
    daemon
        .wait_owning(client, &keys, cfg.feynman.partitions)
        .await?;
    let before = rss_kib(pid)?;
    eprintln!(
        "feynman: {RSS_TICKS_PER_SYMBOL} ticks for each of {RSS_SYMBOLS} symbols, {load:?} (daemon RSS {before} KiB) …"
    );
    let producer = Producer::new(client.clone(), keys.clone(), cfg.feynman.partitions);
    let names: Vec<String> = (0..RSS_SYMBOLS).map(|i| format!("S{i:05}")).collect();
    let mut ticks = Vec::with_capacity(RSS_SYMBOLS * RSS_TICKS_PER_SYMBOL);
    for round in 0..RSS_TICKS_PER_SYMBOL {
        for (i, symbol) in names.iter().enumerate() {
            ticks.push(Tick {
                symbol: symbol.clone(),
                price: 100.0 + ((i * 7 + round * 13) % 50) as f64 * 0.01,
                size: 1.0 + (round % 3) as f64,
                trades: 1 + (i % 5) as u64,
                ts: 1_766_500_000.0 + round as f64,
            });
        }
    }
    match load {
        Load::Backlog => {
            let mut by_stream: HashMap<StreamName, Vec<Tick>> = HashMap::new();
            for tk in ticks {
                by_stream
                    .entry(producer.tick_stream(&tk.symbol))
                    .or_default()
                    .push(tk);
            }
            for (s, ticks) in &by_stream {
                for chunk in ticks.chunks(2_000) {
                    producer.publish_batch(*s, chunk).await?;
                }
            }
        }
        Load::Paced => {
            let mut interval = tokio::time::interval(Duration::from_millis(1));
            interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
            let mut tasks = Vec::with_capacity(ticks.len());
            for chunk in ticks.chunks((RATE / 1000) as usize) {
                interval.tick().await;
                for tk in chunk {
                    let (p, tk) = (producer.clone(), tk.clone());
                    tasks.push(tokio::spawn(async move { p.publish_tick(&tk).await }));
                }
            }
            for task in tasks {
                task.await??;
            }
        }
    }
    // At rest: every tick applied and every partition's snapshot written at its last tick.
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let mut settled = true;
        for p in 0..cfg.feynman.partitions {
            let (last, snap): (Option<String>, Option<String>) = client
                .hmget(
                    keys.partition_checkpoint(p),
                    vec![Keys::CHECKPOINT_LAST_ID, Keys::CHECKPOINT_SNAP_ID],
                )
                .await?;
            settled &= last.is_some() && last == snap;
        }
        if settled
            && kitbash_feynman::partition::caught_up(client, &keys, cfg.feynman.partitions).await?
        {
            break;
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "the memory phase did not settle within 120 s"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let after = rss_kib(pid)?;
    let mut snap_bytes = 0u64;
    for p in 0..cfg.feynman.partitions {
        // Every window as snapshotted (one field per symbol in the partition's state hash).
        let values: Vec<Vec<u8>> = client
            .hvals(keys.partition_state(StreamName::Ticks(p)))
            .await?;
        snap_bytes += values.iter().map(|v| v.len() as u64).sum::<u64>();
    }
    daemon.stop().await;
    anyhow::ensure!(
        snap_bytes > 0,
        "no checkpoint snapshot: no baseline for rss_per_symbol_kb"
    );
    let per_symbol_kib = after.saturating_sub(before) as f64 / RSS_SYMBOLS as f64;
    let (metric, how) = match load {
        Load::Paced => ("rss_per_symbol_kb", "paced: 10,000 ticks/s, one XADD each"),
        Load::Backlog => (
            "rss_per_symbol_kb_backlog",
            "backlog: all ticks XADDed first, drained in batches of 1000",
        ),
    };
    Ok(Record::new(
        "feynman",
        metric,
        per_symbol_kib,
        "KiB",
        snap_bytes as f64 / 1024.0 / RSS_SYMBOLS as f64,
    )
    .with(
        "baseline_kind",
        "checkpoint snapshot bytes per symbol (the state encoded), same run",
    )
    .with("load", how)
    .with("symbols", RSS_SYMBOLS)
    .with("ticks_per_symbol", RSS_TICKS_PER_SYMBOL)
    .with("window", cfg.feynman.window)
    .with("rss_before_kib", before)
    .with("rss_after_kib", after)
    .with("target", 2))
}

/// Leaves a server that is not ours as we found it: removes a namespace's keys.
pub(crate) async fn remove_namespace(client: &Client, ns: &str) -> anyhow::Result<()> {
    let mut cursor = "0".to_owned();
    loop {
        let v: Value = client
            .custom(
                fred::cmd!("SCAN"),
                vec![
                    Value::from(cursor.as_str()),
                    "MATCH".into(),
                    format!("{ns}:*").into(),
                    "COUNT".into(),
                    1000.into(),
                ],
            )
            .await?;
        let Value::Array(parts) = v else { break };
        cursor = parts
            .first()
            .and_then(kitbash_runtime::entries::string_of)
            .unwrap_or_else(|| "0".into());
        if let Some(Value::Array(found)) = parts.get(1) {
            let found: Vec<String> = found
                .iter()
                .filter_map(kitbash_runtime::entries::string_of)
                .collect();
            if !found.is_empty() {
                let _: i64 = client.unlink(found).await?;
            }
        }
        if cursor == "0" {
            break;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stream_ids_compare_numerically() {
        assert!(id_key("1766318400000-10") > id_key("1766318400000-9"));
        assert!(id_key("1766318400001-0") > id_key("1766318400000-99"));
        assert_eq!(id_key("nope"), None);
    }

    #[test]
    fn the_daemon_batch_histogram_is_summed_over_tick_streams_and_differenced() {
        let text = |n: [u64; 3], count: u64, entries: f64| {
            let mut t = String::new();
            for stream in ["ticks:0", "ticks:1"] {
                for (le, n) in ["0.001", "0.0025", "+Inf"].iter().zip(n) {
                    t.push_str(&format!(
                        "kitbash_batch_seconds_bucket{{le=\"{le}\",stream=\"{stream}\",group=\"feynman\"}} {n}\n"
                    ));
                }
                t.push_str(&format!(
                    "kitbash_batch_seconds_count{{stream=\"{stream}\",group=\"feynman\"}} {count}\n"
                ));
                t.push_str(&format!(
                    "kitbash_batch_entries_sum{{stream=\"{stream}\",group=\"feynman\"}} {entries}\n"
                ));
            }
            // Another stream's batches do not count.
            t.push_str(
                "kitbash_batch_seconds_bucket{le=\"0.001\",stream=\"physics\",group=\"x\"} 999\n",
            );
            t
        };
        let before = Batches::parse(&text([10, 10, 10], 10, 12.0));
        let after = Batches::parse(&text([990, 999, 1010], 1010, 1112.0));
        let d = after.since(&before);
        assert_eq!(d.count, 2000);
        assert_eq!(d.entries, 2200.0);
        assert_eq!(
            d.buckets,
            vec![(0.001, 1960), (0.0025, 1978), (f64::INFINITY, 2000)]
        );
        assert_eq!(d.quantile_bound_ms(0.98), 1.0);
        assert_eq!(d.quantile_bound_ms(0.985), 2.5);
        assert_eq!(d.quantile_bound_ms(0.99), f64::INFINITY);
    }
}
