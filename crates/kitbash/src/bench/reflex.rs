//! `kitbash bench reflex`: seed 000's reflex path, each figure against a baseline of the same
//! run.
//!
//! - `lookup_p99_ms` (seed layout) and `lookup_p99_ms_compact` (compact layout, 1,024
//!   buckets): the one-round-trip reflex lookup (`Reflex::lookup_hash`) open-loop at 10,000
//!   lookups/s over 10k CMS records (written by decay's own hit script) and 1k grains. Arrivals
//!   are Poisson (exponential gaps, fixed seed), issued on time by an OS thread sleeping with
//!   `std::thread::sleep` (1 ns timer slack) and handed to the tokio runtime; every lookup is
//!   timed from its *scheduled* instant, so lateness of the generator or the system is
//!   charged to the figure (no coordinated omission). Baseline: `redis-benchmark -c 1` GET
//!   p99. Beside it: the generator's own lateness, Redis's time per `EVALSHA` (`INFO
//!   commandstats`), the CPU the client process and Redis spent per lookup, and closed-loop
//!   single-client figures (the lookup, the same `EVALSHA` without decoding, a plain `GET`
//!   through fred, and the exact `EVALSHA` replayed by `redis-benchmark`).
//! - `decay_cycle_1m`: one fenced decay cycle (decay's own script) over 1M index entries;
//!   baseline: rewriting every record's resonance (1M `SET`s, pipelined). Also
//!   `refresh_hottest_1k_ms`, the cost of keeping plain-`GET` readers current for 1,000 records.
//! - `crossing_to_ghost_p99_ms`: `XADD` of a crossing → `ghost:{h}` written by a ghost daemon
//!   (in its own runtime), Poisson arrivals at 1,000 crossings/s from the same generator,
//!   arrival seen through keyspace notifications; baseline: `redis-benchmark -c 1` XADD p99.
//! - `memory_10k_cms_1k_grains_mb` (seed layout) and `memory_10k_cms_1k_grains_compact_mb`:
//!   `used_memory` delta of that load as the daemons write it on a flushed server
//!   (idempotency markers and streams excluded), cross-checked with `RedisMemoryModel`;
//!   baseline: the seed's 9.2 MB.
//!
//! `KITBASH_BENCH_REFLEX_ONLY=lookup|crossing|decay` runs one part;
//! `KITBASH_BENCH_REFLEX_LAYOUT=seed|compact` one layout of the lookup part.

use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use fred::prelude::*;
use fred::types::Value;
use hdrhistogram::Histogram;
use kitbash_client::Producer;
use kitbash_client::reflex::{Grain, Reflex, query_hash};
use kitbash_runtime::leader::LeaderTerm;
use kitbash_runtime::{Config, DaemonContext};
use kitbash_schema::budget::{
    BudgetParams, CompactParams, RecordEncoding, RedisMemoryModel, SeedEstimate, family,
};
use kitbash_schema::messages::{Crossing, GrainSig, QueryEvent};
use kitbash_schema::reflex::{Layout, compact_id};
use kitbash_schema::{DaemonKind, Keys, StreamName};
use kitbash_ternary::TernaryVector;

use super::memory::used_memory;
use super::redis::{Target, redis_benchmark, target};
use super::{BenchOptions, Record};

const SUITE: &str = "reflex";

/// Arrivals of an open loop's warm-up (half a second at 10k/s), not recorded.
const WARMUP_LOOKUPS: usize = 5_000;

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// Uniform in (0, 1].
    fn unit(&mut self) -> f64 {
        ((self.next() >> 11) + 1) as f64 / (1u64 << 53) as f64
    }
}

fn config(url: &str, layout: Layout) -> Config {
    let mut c = Config::default();
    c.redis.url = url.to_owned();
    c.admin.listen = String::new();
    c.consumer.block_ms = 20;
    c.decay.period_ms = 3_600_000;
    c.ghost.poll_ms = 200;
    c.reflex.layout = layout;
    c
}

fn grains(n: u64, rng: &mut Rng) -> Vec<Grain> {
    (1..=n)
        .map(|id| {
            let trits: Vec<i8> = (0..256)
                .map(|_| match rng.next() % 7 {
                    0 => 1,
                    1 => -1,
                    _ => 0,
                })
                .collect();
            let vector = TernaryVector::from_i8(&trits).unwrap_or_else(|_| {
                TernaryVector::zeros(256).unwrap_or_else(|_| unreachable!("256 is a valid dim"))
            });
            Grain {
                id,
                sig: GrainSig {
                    popcount: vector.nonzero_count(),
                    axiom: format!("axiom {}", id % 17),
                    weight: 1.0,
                    ternary_value: vector.ternary_value(),
                    confidence: vector.confidence(),
                },
                vector,
            }
        })
        .collect()
}

fn texts(n: usize) -> Vec<String> {
    (0..n)
        .map(|i| format!("what is topic number {i}?"))
        .collect()
}

/// 10k queries through decay's hit script (one in ten hit six times: hot, with a ghost), 1k
/// grains, the seed's hats. Returns the query texts.
///
/// The events' idempotency markers are deleted after each batch of 500: the figure is the
/// dataset's, and 15,000 markers alive at once would leave the keyspace's bucket array sized
/// for them after they are gone (Redis shrinks a dict only below 10% fill), which would
/// count a history, not the layout.
async fn load_reference(ctx: &DaemonContext, reflex: &Reflex) -> anyhow::Result<Vec<String>> {
    let hits = kitbash_decay::hits::Hits::new(ctx);
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    reflex.hat_init().await?;
    reflex.grains_import(&grains(1000, &mut rng)).await?;
    let qs = texts(10_000);
    let mut events = Vec::new();
    for (i, t) in qs.iter().enumerate() {
        let times = if i % 10 == 0 { 6 } else { 1 };
        for j in 0..times {
            let g = 1 + rng.next() % 1000;
            events.push((
                format!("{}-{j}", i + 1),
                QueryEvent {
                    text: t.clone(),
                    hash: None,
                    ts: 1_766_318_400.0,
                    grains: vec![g, 1 + (g * 7) % 1000, 1 + (g * 13) % 1000],
                    latency_ms: Some(1.0 + (rng.next() % 100) as f64 / 50.0),
                },
            ));
        }
    }
    let keys = Keys::default();
    let client = &ctx.redis.client;
    for chunk in events.chunks(500) {
        let r = futures::future::join_all(chunk.iter().map(|(id, q)| hits.apply(id, q))).await;
        for x in r {
            x?;
        }
        let markers: Vec<String> = chunk
            .iter()
            .map(|(id, _)| keys.done_marker(StreamName::Queries, id))
            .collect();
        let _: i64 = client.del(markers).await?;
    }
    Ok(qs)
}

async fn delete_matching(client: &Client, pattern: &str) -> anyhow::Result<u64> {
    let mut cursor = "0".to_owned();
    let mut n = 0;
    loop {
        let (next, batch): (String, Vec<String>) = client
            .custom(
                fred::cmd!("SCAN"),
                vec![
                    cursor.clone(),
                    "MATCH".into(),
                    pattern.into(),
                    "COUNT".into(),
                    "1000".into(),
                ],
            )
            .await?;
        if !batch.is_empty() {
            n += batch.len() as u64;
            let _: i64 = client.del(batch).await?;
        }
        if next == "0" {
            return Ok(n);
        }
        cursor = next;
    }
}

/// The 1-minute load average: these figures are only comparable on an unloaded machine.
fn load_avg() -> f64 {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .unwrap_or(-1.0)
}

/// Quantile `q` of a histogram of nanoseconds, in ms.
fn q_ms(h: &Histogram<u64>, q: f64) -> f64 {
    h.value_at_quantile(q) as f64 / 1e6
}

/// Records a duration in ns (at least 1).
fn record(h: &mut Histogram<u64>, d: Duration) {
    let _ = h.record(u64::try_from(d.as_nanos()).unwrap_or(u64::MAX).max(1));
}

// ---- the open-loop generator ------------------------------------------------------------------

/// Offsets of `n` Poisson arrivals at `rate` per second (exponential gaps, fixed seed).
fn poisson_schedule(rate: f64, n: usize, seed: u64) -> Vec<Duration> {
    let mut rng = Rng(seed);
    let mut t = 0.0;
    (0..n)
        .map(|_| {
            t += -rng.unit().ln() / rate;
            Duration::from_secs_f64(t)
        })
        .collect()
}

/// What an open-loop run measured.
struct OpenLoop {
    /// Completion − scheduled instant, ns.
    latency: Histogram<u64>,
    /// Actual issue − scheduled instant (the generator's own lateness), ns.
    lateness: Histogram<u64>,
    /// Operations that failed.
    errors: u64,
    /// From the first scheduled instant to the last issue.
    issue_span: Duration,
    /// The generator thread's timer slack when known (1 ns when it could be set).
    timer_slack_ns: Option<u64>,
    /// The generator thread's nice value when it could be raised.
    nice: Option<i32>,
}

/// Runs `spawn` with the calling thread's timer slack at 1 ns, so the thread it starts
/// inherits it (`prctl(PR_SET_TIMERSLACK)` without `unsafe`: `/proc/self/timerslack_ns` is
/// the main thread's, writable by itself). Elsewhere than on the main thread it only runs
/// `spawn` (the slack stays the default 50 µs). Returns the slack the new thread has, if known.
fn with_fine_timer_slack<T>(spawn: impl FnOnce() -> T) -> (T, Option<u64>) {
    const SLACK: &str = "/proc/self/timerslack_ns";
    let old = (std::thread::current().name() == Some("main"))
        .then(|| std::fs::read_to_string(SLACK).ok())
        .flatten();
    let set = old.is_some() && std::fs::write(SLACK, "1").is_ok();
    let out = spawn();
    let slack = match &old {
        Some(old) if set => {
            let _ = std::fs::write(SLACK, old.trim());
            Some(1)
        }
        Some(old) => old.trim().parse().ok(),
        None => None,
    };
    (out, slack)
}

/// Raises the calling thread's priority to nice −10 (`setpriority(PRIO_PROCESS, tid)`, per
/// thread on Linux; needs `CAP_SYS_NICE`), so the arrival generator keeps its schedule while
/// Redis and the runtime keep the cores busy. It only wakes, spawns and sleeps again: a few
/// µs of CPU per arrival. Returns the nice value set, if it could be.
fn raise_priority() -> Option<i32> {
    const NICE: i32 = -10;
    let link = std::fs::read_link("/proc/thread-self").ok()?;
    let tid: i32 = link.file_name()?.to_str()?.parse().ok()?;
    let pid = rustix::process::Pid::from_raw(tid)?;
    rustix::process::setpriority_process(Some(pid), NICE)
        .ok()
        .map(|()| NICE)
}

/// Issues `op(k, scheduled)` at each instant of `schedule` (offsets from a start a few ms
/// ahead) and times each from its scheduled instant. A dedicated OS thread sleeps until each
/// instant and passes `(k, scheduled)` through a channel to a dispatcher task on the tokio
/// runtime of `handle`, which spawns the operation there. The thread itself allocates and
/// frees nothing per arrival: spawning from it directly put every task's allocation in its
/// malloc arena, to be freed by the runtime's threads under that arena's lock. A generator
/// or system that falls behind issues late, and the lateness counts in `latency`.
async fn open_loop<F, Fut>(
    handle: tokio::runtime::Handle,
    schedule: Vec<Duration>,
    op: F,
) -> anyhow::Result<OpenLoop>
where
    F: Fn(usize, Instant) -> Fut + Send + 'static,
    Fut: Future<Output = bool> + Send + 'static,
{
    let latency = Arc::new(Mutex::new(Histogram::<u64>::new(3)?));
    let errors = Arc::new(AtomicU64::new(0));
    let finished = Arc::new(Finished::default());
    let total = schedule.len();
    let (arrivals, mut arrived) = tokio::sync::mpsc::unbounded_channel::<(usize, Instant)>();
    {
        let (lat, err, fin) = (latency.clone(), errors.clone(), finished.clone());
        handle.spawn(async move {
            while let Some((k, due)) = arrived.recv().await {
                let fut = op(k, due);
                let (lat, err) = (lat.clone(), err.clone());
                // No JoinHandle is kept: a task's memory is freed when it ends, as in a
                // service, instead of piling up (and faulting in fresh pages) for the run.
                let done = Done(fin.clone(), total);
                tokio::spawn(async move {
                    let _done = done;
                    let ok = fut.await;
                    let took = due.elapsed();
                    if !ok {
                        err.fetch_add(1, Ordering::Relaxed);
                    }
                    if let Ok(mut h) = lat.lock() {
                        record(&mut h, took);
                    }
                });
            }
        });
    }
    let mut lateness = Histogram::<u64>::new(3)?;
    let (tx, rx) = tokio::sync::oneshot::channel();
    let fin = finished.clone();
    let (spawned, timer_slack_ns) = with_fine_timer_slack(move || {
        std::thread::Builder::new()
            .name("reflex-arrivals".into())
            .spawn(move || {
                let nice = raise_priority();
                let start = Instant::now() + Duration::from_millis(5);
                for (k, offset) in schedule.iter().enumerate() {
                    let due = start + *offset;
                    let now = Instant::now();
                    if due > now {
                        std::thread::sleep(due - now);
                    }
                    record(&mut lateness, Instant::now().saturating_duration_since(due));
                    if arrivals.send((k, due)).is_err() {
                        // The runtime is gone: what was not issued will not end either.
                        drop(Done(fin.clone(), total));
                        fin.count.fetch_add(total - k - 1, Ordering::AcqRel);
                        fin.notify.notify_one();
                        break;
                    }
                }
                let span = start.elapsed();
                let _ = tx.send((lateness, span, nice));
            })
    });
    spawned?;
    let (lateness, issue_span, nice) = rx
        .await
        .map_err(|_| anyhow::anyhow!("the arrival thread stopped early"))?;
    finished.wait(total).await;
    let latency = latency
        .lock()
        .map_err(|_| anyhow::anyhow!("poisoned"))?
        .clone();
    Ok(OpenLoop {
        latency,
        lateness,
        errors: errors.load(Ordering::Relaxed),
        issue_span,
        timer_slack_ns,
        nice,
    })
}

/// How many operations of an open loop have ended.
#[derive(Default)]
struct Finished {
    count: std::sync::atomic::AtomicUsize,
    notify: tokio::sync::Notify,
}

impl Finished {
    /// Waits until `total` have ended.
    async fn wait(&self, total: usize) {
        loop {
            let notified = self.notify.notified();
            if self.count.load(Ordering::Acquire) >= total {
                return;
            }
            notified.await;
        }
    }
}

/// Counts one operation as ended when dropped (also when its task panics).
struct Done(Arc<Finished>, usize);

impl Drop for Done {
    fn drop(&mut self) {
        if self.0.count.fetch_add(1, Ordering::AcqRel) + 1 >= self.1 {
            self.0.notify.notify_one();
        }
    }
}

/// A current-thread tokio runtime on a thread of its own, stopped when dropped.
struct SideRuntime {
    handle: tokio::runtime::Handle,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

impl SideRuntime {
    fn start() -> anyhow::Result<Self> {
        let (tx, rx) = std::sync::mpsc::channel();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        std::thread::Builder::new()
            .name("reflex-client".into())
            .spawn(move || {
                let rt = match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(rt) => rt,
                    Err(e) => {
                        let _ = tx.send(Err(e));
                        return;
                    }
                };
                let _ = tx.send(Ok(rt.handle().clone()));
                rt.block_on(async move {
                    let _ = stopped.await;
                });
            })?;
        Ok(Self {
            handle: rx.recv()??,
            stop: Some(stop),
        })
    }
}

impl Drop for SideRuntime {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

// ---- where the time goes ----------------------------------------------------------------------

/// CPU seconds used so far by this process (all threads, `/proc/self/stat` utime + stime at
/// the ABI's 100 ticks/s) and by the Redis server (`INFO cpu`).
async fn cpu_seconds(client: &Client) -> anyhow::Result<(f64, f64)> {
    let stat = std::fs::read_to_string("/proc/self/stat")?;
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    // After "pid (comm)": state is field 3, utime 14, stime 15.
    let own = (ticks(11) + ticks(12)) / 100.0;
    let info: String = client.info(Some(fred::types::InfoKind::Cpu)).await?;
    let get = |name: &str| {
        info.lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    Ok((own, get("used_cpu_sys:") + get("used_cpu_user:")))
}

/// Nanoseconds the threads of `/proc/{pid}/task/{tid}` (all threads when `tid` is `None`) have
/// spent runnable but waiting for a CPU (the second field of `schedstat`): how much the
/// machine's cores were contended while they had work.
fn runqueue_wait_ns(pid: &str, tid: Option<&str>) -> u64 {
    let wait = |dir: std::path::PathBuf| {
        std::fs::read_to_string(dir.join("schedstat"))
            .ok()
            .and_then(|s| s.split_whitespace().nth(1)?.parse::<u64>().ok())
            .unwrap_or(0)
    };
    let tasks = std::path::PathBuf::from(format!("/proc/{pid}/task"));
    match tid {
        Some(tid) => wait(tasks.join(tid)),
        None => std::fs::read_dir(&tasks)
            .map(|d| d.filter_map(Result::ok).map(|e| wait(e.path())).sum())
            .unwrap_or(0),
    }
}

/// Run-queue waits so far: (Redis's main thread, every thread of this process), ns.
async fn runqueue_waits(client: &Client) -> anyhow::Result<(u64, u64)> {
    let info: String = client.info(Some(fred::types::InfoKind::Server)).await?;
    let pid = info
        .lines()
        .find_map(|l| l.strip_prefix("process_id:"))
        .map(str::trim)
        .unwrap_or_default()
        .to_owned();
    let redis = if pid.is_empty() {
        0
    } else {
        runqueue_wait_ns(&pid, Some(&pid))
    };
    Ok((redis, runqueue_wait_ns("self", None)))
}

/// `(calls, usec)` of `cmd` in `INFO commandstats`.
async fn command_stat(client: &Client, cmd: &str) -> anyhow::Result<(u64, u64)> {
    let info: String = client
        .info(Some(fred::types::InfoKind::CommandStats))
        .await?;
    let prefix = format!("cmdstat_{cmd}:");
    let line = info
        .lines()
        .find_map(|l| l.strip_prefix(prefix.as_str()))
        .unwrap_or_default();
    let field = |name: &str| {
        line.split(',')
            .find_map(|kv| kv.strip_prefix(name)?.strip_prefix('='))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    Ok((field("calls"), field("usec")))
}

/// The exact command one `lookup` sends, read back from the slow log (threshold 0 for one
/// call). `None` when the log truncated an argument.
async fn captured_command<F, Fut>(client: &Client, lookup: F) -> anyhow::Result<Option<Vec<String>>>
where
    F: FnOnce() -> Fut,
    Fut: Future<Output = bool>,
{
    let set = |v: &'static str| {
        client.custom::<Value, _>(
            fred::cmd!("CONFIG"),
            vec!["SET", "slowlog-log-slower-than", v],
        )
    };
    let _ = set("0").await?;
    let _: Value = client.custom(fred::cmd!("SLOWLOG"), vec!["RESET"]).await?;
    let ok = lookup().await;
    let log: Value = client
        .custom(fred::cmd!("SLOWLOG"), vec!["GET", "10"])
        .await?;
    let _ = set("10000").await?;
    if !ok {
        return Ok(None);
    }
    let entries = match log {
        Value::Array(a) => a,
        _ => return Ok(None),
    };
    for e in entries {
        let Value::Array(parts) = e else { continue };
        let Some(Value::Array(args)) = parts.get(3) else {
            continue;
        };
        let args: Vec<String> = args.iter().filter_map(|a| a.as_string()).collect();
        let is_evalsha = args
            .first()
            .is_some_and(|c| c.eq_ignore_ascii_case("evalsha"));
        if is_evalsha && !args.iter().any(|a| a.contains("more ")) {
            return Ok(Some(args));
        }
    }
    Ok(None)
}

/// Selected `MEMORY STATS` fields (bytes): client buffers, script caches, the main and
/// expires dicts of db 0 (entries × 24 + slots × 8), the dataset.
async fn memory_stats(
    client: &Client,
) -> anyhow::Result<serde_json::Map<String, serde_json::Value>> {
    const KEEP: [&str; 6] = [
        "clients.normal",
        "lua.caches",
        "db.0.overhead.hashtable.main",
        "db.0.overhead.hashtable.expires",
        "keys.count",
        "dataset.bytes",
    ];
    fn walk(prefix: &str, v: Value, out: &mut serde_json::Map<String, serde_json::Value>) {
        let Ok(map) = v.into_map() else { return };
        for (k, v) in map.inner() {
            let name = format!("{prefix}{}", k.as_str().unwrap_or_default());
            match v {
                Value::Integer(i) if KEEP.contains(&name.as_str()) => {
                    out.insert(name, i.into());
                }
                Value::Array(_) | Value::Map(_) => walk(&format!("{name}."), v, out),
                _ => {}
            }
        }
    }
    let v: Value = client.custom(fred::cmd!("MEMORY"), vec!["STATS"]).await?;
    let mut out = serde_json::Map::new();
    walk("", v, &mut out);
    Ok(out)
}

/// Sum of `MEMORY USAGE key SAMPLES 0` over `keys`.
async fn memory_usage(client: &Client, keys: &[String]) -> anyhow::Result<u64> {
    let pipe = client.pipeline();
    for k in keys {
        let _: () = pipe
            .custom(
                fred::cmd!("MEMORY"),
                vec!["USAGE".to_owned(), k.clone(), "SAMPLES".into(), "0".into()],
            )
            .await?;
    }
    let out: Vec<Value> = pipe.all().await?;
    Ok(out.iter().filter_map(Value::as_u64).sum())
}

/// Closed loop: `n` calls of `op`, one at a time; (p50, p99) in ms.
async fn closed_loop<F, Fut>(n: usize, mut op: F) -> anyhow::Result<(f64, f64)>
where
    F: FnMut(usize) -> Fut,
    Fut: Future<Output = anyhow::Result<()>>,
{
    let mut h = Histogram::<u64>::new(3)?;
    for k in 0..n {
        let t0 = Instant::now();
        op(k).await?;
        record(&mut h, t0.elapsed());
    }
    Ok((q_ms(&h, 0.5), q_ms(&h, 0.99)))
}

// ---- memory and lookups, per layout ----------------------------------------------------------

/// What the compact layout's reference load looks like in Redis.
#[derive(Default)]
struct CompactShapes {
    /// `OBJECT ENCODING` of each bucket key (`absent` for an empty bucket).
    encodings: std::collections::BTreeMap<String, u64>,
    fields_max: u64,
    fields: u64,
    record_bytes: u64,
    hot_encoding: String,
    hot_members: u64,
    hot_text_encoding: String,
    text_bytes: u64,
}

fn text(v: &Value) -> String {
    v.as_string().unwrap_or_else(|| "absent".to_owned())
}

/// Mean `STRLEN` of `keys`.
async fn mean_strlen(client: &Client, keys: &[String]) -> anyhow::Result<f64> {
    let pipe = client.pipeline();
    for k in keys {
        let _: () = pipe.strlen(k).await?;
    }
    let out: Vec<Value> = pipe.all().await?;
    Ok(mean(
        out.iter().filter_map(Value::as_u64).sum(),
        keys.len() as u64,
    ))
}

/// Mean field count, field length and value length of the hashes `keys`.
async fn hash_shape(client: &Client, keys: &[String]) -> anyhow::Result<(f64, f64, f64)> {
    let pipe = client.pipeline();
    for k in keys {
        let _: () = pipe.custom(fred::cmd!("HGETALL"), vec![k.clone()]).await?;
    }
    let out: Vec<Value> = pipe.all().await?;
    let (mut fields, mut field_bytes, mut value_bytes) = (0, 0, 0);
    for v in &out {
        let Value::Array(a) = v else { continue };
        for pair in a.chunks(2) {
            let len = |v: &Value| v.as_bytes().map_or(0, |b| b.len() as u64);
            if let [f, v] = pair {
                fields += 1;
                field_bytes += len(f);
                value_bytes += len(v);
            }
        }
    }
    let n = keys.len() as u64;
    Ok((
        mean(fields, n),
        mean(field_bytes, fields),
        mean(value_bytes, fields),
    ))
}

async fn compact_shapes(
    client: &Client,
    keys: &Keys,
    buckets: u32,
) -> anyhow::Result<CompactShapes> {
    let mut s = CompactShapes::default();
    let pipe = client.pipeline();
    for n in 0..buckets {
        let key = keys.cms_bucket(n);
        let _: () = pipe
            .custom(
                fred::cmd!("OBJECT"),
                vec!["ENCODING".to_owned(), key.clone()],
            )
            .await?;
        let _: () = pipe.custom(fred::cmd!("HVALS"), vec![key]).await?;
    }
    let out: Vec<Value> = pipe.all().await?;
    for pair in out.chunks(2) {
        let [enc, vals] = pair else { continue };
        *s.encodings.entry(text(enc)).or_default() += 1;
        let vals = match vals {
            Value::Array(a) => a.as_slice(),
            _ => &[],
        };
        s.fields += vals.len() as u64;
        s.fields_max = s.fields_max.max(vals.len() as u64);
        s.record_bytes += vals
            .iter()
            .filter_map(Value::as_bytes)
            .map(|b| b.len() as u64)
            .sum::<u64>();
    }
    let encoding = |key: String| {
        client.custom::<Value, _>(fred::cmd!("OBJECT"), vec!["ENCODING".to_owned(), key])
    };
    s.hot_encoding = text(&encoding(keys.reflex_hot()).await?);
    s.hot_text_encoding = text(&encoding(keys.reflex_hot_text()).await?);
    s.hot_members = client.zcard(keys.reflex_hot()).await?;
    let texts: Vec<String> = client.hvals(keys.reflex_hot_text()).await?;
    s.text_bytes = texts.iter().map(|t| t.len() as u64).sum();
    Ok(s)
}

/// Mean of `total` over `n`, 0 for none.
fn mean(total: u64, n: u64) -> f64 {
    if n == 0 { 0.0 } else { total as f64 / n as f64 }
}

/// One layout on a flushed server: the reference load's memory, then the lookups (closed
/// loop, the diagnostics, open loop at 10k/s, the baselines). Returns (lookup, memory).
async fn layout_run(t: &Target, long: bool, layout: Layout) -> anyhow::Result<(Record, Record)> {
    let compact = layout == Layout::Compact;
    let suffix = if compact { "_compact" } else { "" };
    let cfg = config(&t.url, layout);
    let buckets = cfg.reflex.buckets;
    let client =
        kitbash_runtime::redis::connect_client(&cfg.redis, Duration::from_secs(10)).await?;
    let _: () = client.flushall(false).await?;
    // Scripts survive FLUSHALL: start each layout with an empty script cache, so both count
    // the body of their hit script (a few KB) alike.
    let _: () = client.script_flush(false).await?;
    let (signals, _) = kitbash_runtime::shutdown::manual();
    let stop = signals.shutdown.clone();
    let ctx = DaemonContext::start(DaemonKind::Decay, cfg.clone(), signals).await?;
    // Redis 7 keeps a latency histogram (≈ 24 KB) per command name the first time it runs;
    // the load's new commands would add ≈ 0.25 MB that is not the dataset's.
    let latency_tracking = |on: &'static str| {
        client.custom::<Value, _>(fred::cmd!("CONFIG"), vec!["SET", "latency-tracking", on])
    };
    let _ = latency_tracking("no").await?;
    let _: () = client.config_resetstat().await?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let before = used_memory(&client).await?;
    let stats_before = memory_stats(&client).await?;
    let keys = Keys::default();
    let reflex = Reflex::new(client.clone(), keys.clone(), 0.9).with_layout(layout, buckets);
    eprintln!(
        "reflex [{layout:?}]: loading 10k CMS records through decay's script, 1k grains, 5 hats …"
    );
    let qs = load_reference(&ctx, &reflex).await?;
    let hashes: Arc<Vec<String>> = Arc::new(qs.iter().map(|q| query_hash(q)).collect());
    // Ghosts of the hot tenth, as the ghost daemon writes them: under the layout's id.
    let pipe = client.pipeline();
    for (i, h) in hashes.iter().enumerate().step_by(10) {
        let id = if compact {
            compact_id(h)
        } else {
            Some(h.clone())
        };
        let id = id.ok_or_else(|| anyhow::anyhow!("{h:?} is not a query hash"))?;
        let g = 1 + (i as u64 * 31) % 1000;
        let _: () = pipe
            .set(
                keys.ghost(&id),
                format!("{g},{},{}", 1 + (g * 3) % 1000, 1 + (g * 5) % 1000),
                Some(Expiration::EX(3600)),
                None,
                false,
            )
            .await?;
    }
    let _: Vec<Value> = pipe.all().await?;
    // What production keeps beside the dataset only transiently: markers, streams.
    for s in [StreamName::Queries, StreamName::Crossings] {
        delete_matching(&client, &format!("{}*", keys.stream(s))).await?;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let after = used_memory(&client).await?;
    let delta = after.saturating_sub(before);
    let stats_after = memory_stats(&client).await?;
    let _ = latency_tracking("yes").await?;
    let grain_sig_keys: Vec<String> = (1..=1000).map(|g| keys.grain_sig(g)).collect();
    let sig_len = mean_strlen(&client, &grain_sig_keys).await?;
    let seed_mb = SeedEstimate::default().total_mb();
    let mut memory = if compact {
        let s = compact_shapes(&client, &keys, buckets).await?;
        let params = BudgetParams {
            compact: Some(CompactParams {
                buckets,
                record_len: mean(s.record_bytes, s.fields).round() as u32,
                text_len: mean(s.text_bytes, s.hot_members).round() as u32,
            }),
            grain_sig: RecordEncoding::String {
                len: sig_len.round() as u32,
            },
            ..BudgetParams::default()
        };
        let est = RedisMemoryModel::default().estimate(&params);
        let model = est.total_bytes;
        // MEMORY USAGE of the families the compact layout adds, against the model's.
        let bucket_keys: Vec<String> = (0..buckets).map(|n| keys.cms_bucket(n)).collect();
        let mut usage = serde_json::Map::new();
        for (family, ks) in [
            (family::CMS_BUCKETS, bucket_keys),
            (family::HOT, vec![keys.reflex_hot()]),
            (family::HOT_TEXT, vec![keys.reflex_hot_text()]),
        ] {
            let model = est.family(family).map_or(0, |f| f.memory_usage);
            let measured = memory_usage(&client, &ks).await?;
            usage.insert(family.to_owned(), serde_json::json!([measured, model]));
        }
        let what = format!(
            "compact ({buckets} listpack hashes kitbash:cms:{{n}}, field = 16-hex id; \
             hot set + hot text; ghost:{{id}})"
        );
        Record::new(
            SUITE,
            "memory_10k_cms_1k_grains_compact_mb",
            delta as f64 / 1e6,
            "MB",
            seed_mb,
        )
        .with("model_mb", model as f64 / 1e6)
        .with("measured_over_model", delta as f64 / model as f64)
        .with("bytes", delta)
        .with("model_bytes", model)
        .with("layout", what)
        .with("buckets", buckets)
        .with("bucket_encodings", serde_json::to_value(&s.encodings)?)
        .with("bucket_fields_max", s.fields_max)
        .with("records", s.fields)
        .with("record_len_avg", mean(s.record_bytes, s.fields))
        .with("hot_members", s.hot_members)
        .with("hot_encoding", s.hot_encoding)
        .with("hot_text_encoding", s.hot_text_encoding)
        .with("hot_text_len_avg", mean(s.text_bytes, s.hot_members))
        .with(
            "memory_usage_measured_model",
            serde_json::Value::Object(usage),
        )
    } else {
        // The shapes decay's seed script wrote: the cms:{h} hash's fields and values, the
        // resonance strings.
        let cms_keys: Vec<String> = hashes.iter().map(|h| keys.cms(h)).collect();
        let (fields, field_len, value_len) = hash_shape(&client, &cms_keys).await?;
        let res_keys: Vec<String> = hashes.iter().map(|h| keys.cms_resonance(h)).collect();
        let resonance_len = mean_strlen(&client, &res_keys).await?;
        let params = BudgetParams {
            cms_record: RecordEncoding::Hash {
                fields: fields.round() as u32,
                field_len: field_len.round() as u32,
                value_len: value_len.round() as u32,
            },
            resonance_len: resonance_len.round() as u32,
            grain_sig: RecordEncoding::String {
                len: sig_len.round() as u32,
            },
            ..BudgetParams::default()
        };
        let est = RedisMemoryModel::default().estimate(&params);
        let model = est.total_bytes;
        let per_query = |key: fn(&Keys, &str) -> String| -> Vec<String> {
            hashes.iter().map(|h| key(&keys, h)).collect()
        };
        let mut usage = serde_json::Map::new();
        for (family, ks) in [
            (family::CMS, per_query(Keys::cms)),
            (family::CMS_GRAINS, per_query(Keys::cms_grains)),
            (family::CMS_RESONANCE, per_query(Keys::cms_resonance)),
            (
                family::RESONANCE_INDEX,
                vec![keys.resonance_index(), keys.decay_cycle()],
            ),
        ] {
            let model = est.family(family).map_or(0, |f| f.memory_usage);
            let measured = memory_usage(&client, &ks).await?;
            usage.insert(family.to_owned(), serde_json::json!([measured, model]));
        }
        Record::new(
            SUITE,
            "memory_10k_cms_1k_grains_mb",
            delta as f64 / 1e6,
            "MB",
            seed_mb,
        )
        .with("model_mb", model as f64 / 1e6)
        .with("measured_over_model", delta as f64 / model as f64)
        .with("bytes", delta)
        .with("model_bytes", model)
        .with(
            "layout",
            "seed (cms:{h} hash + :grains + :resonance, index, 64-hex hashes)",
        )
        .with("cms_fields_avg", fields)
        .with("cms_field_len_avg", field_len)
        .with("cms_value_len_avg", value_len)
        .with("resonance_len_avg", resonance_len)
        .with(
            "memory_usage_measured_model",
            serde_json::Value::Object(usage),
        )
    };
    memory = memory
        .with("grain_sig_len_avg", sig_len)
        .with(
            "memory_stats_before",
            serde_json::Value::Object(stats_before),
        )
        .with("memory_stats_after", serde_json::Value::Object(stats_after))
        .with("baseline_kind", "the seed's own estimate (9.2)")
        .with("target_mb", 4.0)
        .with("load_avg_1m", load_avg());

    // Where a lookup's time goes, one at a time (closed loop).
    let n_single = if long { 20_000 } else { 5_000 };
    let hot = hashes[0].clone();
    let command = {
        let (r, h) = (reflex.clone(), hot.clone());
        captured_command(&client, || async move { r.lookup_hash(&h).await.is_ok() }).await?
    };
    let mut rng = Rng(3);
    let single = closed_loop(n_single, |_| {
        let (r, h) = (
            reflex.clone(),
            hashes[(rng.next() % 10_000) as usize].clone(),
        );
        async move {
            r.lookup_hash(&h).await?;
            Ok(())
        }
    })
    .await?;
    // The hot query alone: the lookup, the same EVALSHA through fred without building a
    // `ReflexLookup`, and replayed by redis-benchmark's C client (Redis's time per call read
    // from `INFO commandstats` around the replay).
    let hot_single = closed_loop(n_single, |_| {
        let (r, h) = (reflex.clone(), hot.clone());
        async move {
            r.lookup_hash(&h).await?;
            Ok(())
        }
    })
    .await?;
    let (raw, replay) = match &command {
        Some(args) if args.len() >= 3 => {
            let nk: usize = args[2].parse().unwrap_or(0);
            let sha = args[1].clone();
            let ks: Vec<String> = args.iter().skip(3).take(nk).cloned().collect();
            let argv: Vec<String> = args.iter().skip(3 + nk).cloned().collect();
            let raw_single = closed_loop(n_single, |_| {
                let (c, sha, ks, argv) = (client.clone(), sha.clone(), ks.clone(), argv.clone());
                async move {
                    let _: Value = c.evalsha(sha, ks, argv).await?;
                    Ok(())
                }
            })
            .await?;
            let refs: Vec<&str> = args.iter().map(String::as_str).collect();
            let mut rb_args = vec!["-c", "1", "-n", "20000"];
            rb_args.extend(refs);
            let _: () = client.config_resetstat().await?;
            let rb = redis_benchmark(t, &rb_args)?;
            let (calls, usec) = command_stat(&client, "evalsha").await?;
            // Only a replay Redis really ran counts (a NOSCRIPT reply would be fast too).
            let replay = rb
                .first()
                .filter(|_| calls >= 20_000)
                .map(|r| (r.1.p50_ms, r.1.p99_ms, mean(usec, calls)));
            (Some(raw_single), replay)
        }
        _ => (None, None),
    };
    let get_key = keys.hat_current();
    let fred_get = closed_loop(n_single, |_| {
        let (c, k) = (client.clone(), get_key.clone());
        async move {
            let _: Option<String> = c.get(k).await?;
            Ok(())
        }
    })
    .await?;

    // Open loop: Poisson arrivals at 10k/s, half of them to the hot tenth (ghost, three
    // grains), half anywhere.
    let rate = 10_000.0;
    let n = if long { 100_000 } else { 30_000 };
    let schedule = poisson_schedule(rate, n, 7);
    let mut rng = Rng(11);
    let picks: Vec<usize> = (0..n)
        .map(|_| {
            if rng.next().is_multiple_of(2) {
                (rng.next() % 1000 * 10) as usize
            } else {
                (rng.next() % 10_000) as usize
            }
        })
        .collect();
    let picks = Arc::new(picks);
    let lookups = |reflex: Reflex| {
        let (hashes, picks) = (hashes.clone(), picks.clone());
        move |k: usize, _: Instant| {
            let (r, h) = (reflex.clone(), hashes[picks[k]].clone());
            async move { r.lookup_hash(&h).await.is_ok() }
        }
    };
    let handle = tokio::runtime::Handle::current();
    // Warm-up, not recorded: the same rate for half a second, so the run measures the
    // steady state (allocator, buffers, caches), not first-touch page faults.
    let warmup = poisson_schedule(rate, WARMUP_LOOKUPS, 99);
    open_loop(handle.clone(), warmup.clone(), lookups(reflex.clone())).await?;
    eprintln!("reflex [{layout:?}]: {n} lookups, Poisson arrivals at {rate}/s …");
    let _: () = client.config_resetstat().await?;
    let (own0, redis0) = cpu_seconds(&client).await?;
    let (redis_wait0, own_wait0) = runqueue_waits(&client).await?;
    let run = open_loop(handle, schedule.clone(), lookups(reflex.clone())).await?;
    let (own1, redis1) = cpu_seconds(&client).await?;
    let (redis_wait1, own_wait1) = runqueue_waits(&client).await?;
    let (calls, usec) = command_stat(&client, "evalsha").await?;
    let load = load_avg();
    // The same arrivals with the client (its own connection) on a current-thread runtime of
    // its own thread: one thread for the lookup tasks and fred's connection task, so no
    // hand-offs between the bench's two worker threads on a 2-core machine.
    eprintln!("reflex [{layout:?}]: again, the client on a current-thread runtime …");
    let side = SideRuntime::start()?;
    let side_client = {
        let redis = cfg.redis.clone();
        side.handle
            .spawn(async move {
                kitbash_runtime::redis::connect_client(&redis, Duration::from_secs(10)).await
            })
            .await??
    };
    let side_reflex =
        Reflex::new(side_client.clone(), keys.clone(), 0.9).with_layout(layout, buckets);
    open_loop(side.handle.clone(), warmup, lookups(side_reflex.clone())).await?;
    let single_thread = open_loop(side.handle.clone(), schedule, lookups(side_reflex)).await?;
    let _ = side_client.quit().await;
    drop(side);
    eprintln!("reflex [{layout:?}]: redis-benchmark single-client GET …");
    let rb = redis_benchmark(t, &["-c", "1", "-n", "100000", "GET", &get_key])?;
    let (rb_p50, rb_p99) = rb.first().map_or((0.0, 0.0), |r| (r.1.p50_ms, r.1.p99_ms));
    let done = run.latency.len();
    let span = run.issue_span.as_secs_f64();
    let per_lookup_us = |s: f64| s * 1e6 / done.max(1) as f64;
    let lat = &run.latency;
    let late = &run.lateness;
    let mut lookup = Record::new(
        SUITE,
        format!("lookup_p99_ms{suffix}"),
        q_ms(lat, 0.99),
        "ms",
        rb_p99,
    )
    .with(
        "baseline_kind",
        "redis-benchmark -c 1 GET p99, same server, same layout run",
    )
    .with("layout", format!("{layout:?}").to_lowercase())
    .with(
        "arrivals",
        "poisson, exponential gaps, seed 7, issued by an OS thread (std::thread::sleep)",
    )
    .with("rate_per_s", rate)
    .with("warmup_lookups", WARMUP_LOOKUPS)
    .with("lookups", done)
    .with("errors", run.errors)
    .with("p50_ms", q_ms(lat, 0.5))
    .with("p999_ms", q_ms(lat, 0.999))
    .with("max_ms", lat.max() as f64 / 1e6)
    .with("issue_rate_per_s", n as f64 / span.max(1e-9))
    .with("generator_lateness_p50_ms", q_ms(late, 0.5))
    .with("generator_lateness_p99_ms", q_ms(late, 0.99))
    .with("generator_lateness_max_ms", late.max() as f64 / 1e6)
    .with(
        "generator_timer_slack_ns",
        run.timer_slack_ns
            .map_or(serde_json::Value::Null, Into::into),
    )
    .with(
        "generator_nice",
        run.nice.map_or(serde_json::Value::Null, Into::into),
    )
    .with("redis_evalsha_calls", calls)
    .with("redis_evalsha_usec_per_call", mean(usec, calls))
    .with("redis_cpu_us_per_lookup", per_lookup_us(redis1 - redis0))
    .with("client_cpu_us_per_lookup", per_lookup_us(own1 - own0))
    .with(
        "cores_busy",
        (redis1 - redis0 + own1 - own0) / span.max(1e-9),
    )
    .with(
        "redis_runqueue_wait_ms",
        redis_wait1.saturating_sub(redis_wait0) as f64 / 1e6,
    )
    .with(
        "client_runqueue_wait_ms",
        own_wait1.saturating_sub(own_wait0) as f64 / 1e6,
    )
    .with("run_ms", span * 1e3)
    .with("single_client_p50_ms", single.0)
    .with("single_client_p99_ms", single.1)
    .with("hot_single_p50_ms", hot_single.0)
    .with("hot_single_p99_ms", hot_single.1)
    .with("fred_get_single_p50_ms", fred_get.0)
    .with("rb_get_p50_ms", rb_p50)
    .with("load_avg_1m", load)
    .with("cms_records", 10_000)
    .with("grains", 1_000)
    .with("target_ms", 0.25);
    let st = &single_thread.latency;
    lookup = lookup
        .with("current_thread_p50_ms", q_ms(st, 0.5))
        .with("current_thread_p99_ms", q_ms(st, 0.99))
        .with("current_thread_p999_ms", q_ms(st, 0.999))
        .with("current_thread_errors", single_thread.errors)
        .with(
            "current_thread_generator_lateness_p99_ms",
            q_ms(&single_thread.lateness, 0.99),
        );
    if let Some((p50, p99)) = raw {
        lookup = lookup
            .with("fred_evalsha_raw_single_p50_ms", p50)
            .with("fred_evalsha_raw_single_p99_ms", p99);
    }
    if let Some((p50, p99, usec)) = replay {
        lookup = lookup
            .with("rb_evalsha_single_p50_ms", p50)
            .with("rb_evalsha_single_p99_ms", p99)
            .with("rb_evalsha_redis_usec_per_call", usec);
    }
    stop.cancel();
    let _ = client.quit().await;
    Ok((lookup, memory))
}

async fn lookup_and_memory(t: &Target, long: bool) -> anyhow::Result<Vec<Record>> {
    let only = std::env::var("KITBASH_BENCH_REFLEX_LAYOUT").unwrap_or_default();
    let mut lookups = Vec::new();
    let mut memory = Vec::new();
    for (layout, name) in [(Layout::Seed, "seed"), (Layout::Compact, "compact")] {
        if only.is_empty() || only == name {
            let (l, m) = layout_run(t, long, layout).await?;
            lookups.push(l);
            memory.push(m);
        }
    }
    lookups.extend(memory);
    Ok(lookups)
}

async fn decay_cycle(t: &Target, long: bool) -> anyhow::Result<Vec<Record>> {
    let cfg = config(&t.url, Layout::Seed);
    let client =
        kitbash_runtime::redis::connect_client(&cfg.redis, Duration::from_secs(10)).await?;
    let _: () = client.flushall(false).await?;
    let keys = Keys::default();
    let n: u64 = 1_000_000;
    eprintln!("reflex: loading {n} index entries and resonance keys …");
    let mut rng = Rng(11);
    let mut ids = Vec::with_capacity(n as usize);
    for chunk in 0..(n / 10_000) {
        let pipe = client.pipeline();
        let mut members: Vec<(f64, String)> = Vec::with_capacity(10_000);
        for _ in 0..10_000 {
            let h = format!("{:016x}", rng.next());
            let r = (rng.next() % 1000) as f64 / 1000.0 + 1e-3;
            let _: () = pipe
                .set(keys.cms_resonance(&h), format!("{r}"), None, None, false)
                .await?;
            members.push((r.ln(), h.clone()));
            ids.push(h);
        }
        let _: () = pipe
            .zadd(keys.resonance_index(), None, None, false, false, members)
            .await?;
        let _: Vec<Value> = pipe.all().await?;
        if chunk % 25 == 0 {
            eprint!(".");
        }
    }
    eprintln!();
    let (signals, _) = kitbash_runtime::shutdown::manual();
    let stop = signals.shutdown.clone();
    let ctx = DaemonContext::start(DaemonKind::Decay, cfg.clone(), signals).await?;
    let cycle = kitbash_decay::cycle::DecayCycle::new(&ctx);
    let term = LeaderTerm {
        key: keys.leader(DaemonKind::Decay, "bench"),
        token: "bench#1".into(),
    };
    let _: () = client
        .set(&term.key, &term.token, None, None, false)
        .await?;
    cycle.apply_due(&term).await?; // starts the clock
    let runs = if long { 200 } else { 50 };
    let mut times = Vec::with_capacity(runs);
    for _ in 0..runs {
        // One period due: move the clock back by one period.
        let _: i64 = client
            .hincrby(keys.decay_clock(), "last_ms", -(cfg.decay.period_ms as i64))
            .await?;
        let t0 = Instant::now();
        let run = cycle.apply_due(&term).await?;
        times.push(t0.elapsed().as_secs_f64() * 1000.0);
        anyhow::ensure!(run.applied == 1, "one cycle per run: {run:?}");
    }
    times.sort_by(f64::total_cmp);
    let cycle_ms = times[times.len() / 2];
    eprintln!("reflex: refresh of the hottest 1,000 …");
    let t0 = Instant::now();
    cycle.refresh(1000).await?;
    let refresh_ms = t0.elapsed().as_secs_f64() * 1000.0;
    eprintln!("reflex: baseline: rewriting {n} resonances …");
    let t0 = Instant::now();
    for chunk in ids.chunks(10_000) {
        let pipe = client.pipeline();
        for h in chunk {
            let _: () = pipe
                .set(keys.cms_resonance(h), "0.5", None, None, false)
                .await?;
        }
        let _: Vec<Value> = pipe.all().await?;
    }
    let rewrite_ms = t0.elapsed().as_secs_f64() * 1000.0;
    stop.cancel();
    let _: () = client.flushall(false).await?;
    let _ = client.quit().await;
    Ok(vec![
        Record::new(SUITE, "decay_cycle_1m", cycle_ms, "ms", rewrite_ms)
            .with(
                "baseline_kind",
                "rewriting every record's resonance (1M SETs, pipelined)",
            )
            .with("records", n)
            .with("runs", runs as u64)
            .with("what", "median round trip of the fenced cycle script")
            .with("target_ratio", 0.001),
        Record::new(SUITE, "refresh_hottest_1k_ms", refresh_ms, "ms", rewrite_ms)
            .with(
                "baseline_kind",
                "rewriting every record's resonance (1M SETs, pipelined)",
            )
            .with(
                "what",
                "[decay] refresh_hottest = 1000: extra cost per cycle",
            ),
    ])
}

async fn crossing_to_ghost(t: &Target, long: bool) -> anyhow::Result<Vec<Record>> {
    let cfg = config(&t.url, Layout::Seed);
    let client =
        kitbash_runtime::redis::connect_client(&cfg.redis, Duration::from_secs(10)).await?;
    let _: () = client.flushall(false).await?;
    let keys = Keys::default();
    let reflex = Reflex::new(client.clone(), keys.clone(), 0.9);
    reflex.hat_init().await?;
    reflex.grains_import(&grains(1000, &mut Rng(5))).await?;
    let _: () = client.config_set("notify-keyspace-events", "K$").await?;
    // The ghost daemon in a runtime of its own, as its own process would be.
    let (signals, _) = kitbash_runtime::shutdown::manual();
    let stop = signals.shutdown.clone();
    let daemon_cfg = cfg.clone();
    let daemon = std::thread::spawn(move || {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .map(|rt| rt.block_on(kitbash_ghost::run(daemon_cfg, signals)))
    });
    // Wait until the bank is loaded: a crossing is written.
    let producer = Producer::new(client.clone(), keys.clone(), 1);
    let warm = Crossing {
        hash: query_hash("warm"),
        text: "warm".into(),
        resonance: 0.81,
        cycle: 0,
    };
    producer.publish(StreamName::Crossings, &warm).await?;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let g: Option<String> = client.get(keys.ghost(&warm.hash)).await?;
        if g.is_some() {
            break;
        }
        anyhow::ensure!(Instant::now() < deadline, "the ghost daemon did not start");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let sub = fred::types::Builder::from_config(fred::types::config::Config::from_url(&t.url)?)
        .with_performance_config(|p| p.broadcast_channel_capacity = 1 << 16)
        .build_subscriber_client()?;
    sub.init().await?;
    // fred hands `__keyspace@…` messages to the keyspace-event receiver, not `message_rx`.
    let mut rx = sub.keyspace_event_rx();
    let prefix = "__keyspace@0__:";
    sub.psubscribe(format!("{prefix}{}", keys.ghost("*")))
        .await?;
    let sent: Arc<Mutex<HashMap<String, Instant>>> = Arc::default();
    let hist = Arc::new(Mutex::new(Histogram::<u64>::new(3)?));
    let rate = 1000.0;
    let total = if long { 10_000 } else { 3_000 };
    let collector = {
        let (sent, hist) = (sent.clone(), hist.clone());
        let ghost_prefix = keys.ghost("");
        tokio::spawn(async move {
            let mut seen = 0;
            while seen < total {
                let msg = match rx.recv().await {
                    Ok(m) => m,
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => continue,
                    Err(_) => break,
                };
                let now = Instant::now();
                let key = msg.key.as_str().unwrap_or_default().to_owned();
                let Some(h) = key.strip_prefix(ghost_prefix.as_str()) else {
                    continue;
                };
                let t0 = sent.lock().ok().and_then(|mut m| m.remove(h));
                if let (Some(t0), Ok(mut hist)) = (t0, hist.lock()) {
                    record(&mut hist, now - t0);
                    seen += 1;
                }
            }
        })
    };
    eprintln!("reflex: {total} crossings, Poisson arrivals at {rate}/s, into the ghost daemon …");
    let crossings: Arc<Vec<Crossing>> = Arc::new(
        (0..total)
            .map(|i| {
                let text = format!("crossing query {i}");
                Crossing {
                    hash: query_hash(&text),
                    text,
                    resonance: 0.81,
                    cycle: 0,
                }
            })
            .collect(),
    );
    // Warm-up, not recorded (the collector only times crossings in `sent`): half a second.
    let warm: Arc<Vec<Crossing>> = Arc::new(
        (0..500)
            .map(|i| {
                let text = format!("warm-up crossing {i}");
                Crossing {
                    hash: query_hash(&text),
                    text,
                    resonance: 0.81,
                    cycle: 0,
                }
            })
            .collect(),
    );
    {
        let producer = producer.clone();
        let handle = tokio::runtime::Handle::current();
        open_loop(handle, poisson_schedule(rate, 500, 17), move |k, _| {
            let (p, c) = (producer.clone(), warm[k].clone());
            async move { p.publish(StreamName::Crossings, &c).await.is_ok() }
        })
        .await?;
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let run = {
        let (sent, producer) = (sent.clone(), producer.clone());
        let handle = tokio::runtime::Handle::current();
        open_loop(handle, poisson_schedule(rate, total, 13), move |k, due| {
            let c = crossings[k].clone();
            if let Ok(mut m) = sent.lock() {
                m.insert(c.hash.clone(), due);
            }
            let p = producer.clone();
            async move { p.publish(StreamName::Crossings, &c).await.is_ok() }
        })
        .await?
    };
    let _ = tokio::time::timeout(Duration::from_secs(30), collector).await;
    let load = load_avg();
    let activations: Option<u64> = client.get(keys.ghost_activations()).await?;
    eprintln!(
        "reflex: {} ghosts written for {total} crossings",
        activations.unwrap_or(0)
    );
    stop.cancel();
    let _ = daemon.join();
    let _ = sub.quit().await;
    let h = hist
        .lock()
        .map_err(|_| anyhow::anyhow!("poisoned"))?
        .clone();
    eprintln!("reflex: redis-benchmark single-client XADD …");
    let key = keys.bench("xadd");
    let rb = redis_benchmark(
        t,
        &[
            "-c", "1", "-n", "50000", "XADD", &key, "MAXLEN", "~", "10000", "*", "f", "v",
        ],
    )?;
    let base = rb.first().map_or(0.0, |r| r.1.p99_ms);
    let _: () = client.flushall(false).await?;
    let _ = client.quit().await;
    let late = &run.lateness;
    Ok(vec![
        Record::new(
            SUITE,
            "crossing_to_ghost_p99_ms",
            q_ms(&h, 0.99),
            "ms",
            base,
        )
        .with(
            "baseline_kind",
            "redis-benchmark -c 1 XADD p99, same server",
        )
        .with(
            "arrivals",
            "poisson, exponential gaps, seed 13, issued by an OS thread (std::thread::sleep)",
        )
        .with("rate_per_s", rate)
        .with("warmup_crossings", 500)
        .with("crossings", h.len())
        .with("sent", total)
        .with("publish_errors", run.errors)
        .with("p50_ms", q_ms(&h, 0.5))
        .with("p999_ms", q_ms(&h, 0.999))
        .with("max_ms", h.max() as f64 / 1e6)
        .with("xadd_p99_ms", q_ms(&run.latency, 0.99))
        .with("generator_lateness_p50_ms", q_ms(late, 0.5))
        .with("generator_lateness_p99_ms", q_ms(late, 0.99))
        .with(
            "generator_timer_slack_ns",
            run.timer_slack_ns
                .map_or(serde_json::Value::Null, Into::into),
        )
        .with(
            "generator_nice",
            run.nice.map_or(serde_json::Value::Null, Into::into),
        )
        .with("load_avg_1m", load)
        .with("grains", 1_000)
        .with("target_ms", 5.0),
    ])
}

/// Runs the suite on a private server (the loads need an empty keyspace).
pub async fn run(opts: &BenchOptions) -> anyhow::Result<Vec<Record>> {
    let private = BenchOptions {
        redis_url: None,
        ..opts.clone()
    };
    let t = target(&private)?;
    let only = std::env::var("KITBASH_BENCH_REFLEX_ONLY").unwrap_or_default();
    let mut out = Vec::new();
    if only.is_empty() || only == "lookup" {
        out.extend(lookup_and_memory(&t, opts.long).await?);
    }
    if only.is_empty() || only == "crossing" {
        out.extend(crossing_to_ghost(&t, opts.long).await?);
    }
    if !(only.is_empty() || only == "decay") {
        return Ok(out);
    }
    out.extend(decay_cycle(&t, opts.long).await?);
    Ok(out)
}
