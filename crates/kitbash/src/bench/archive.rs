//! `kitbash bench archive`: the archive daemon as an operator meets it — a backlog of market
//! ticks (MarketSim, 20 symbols) and of the physics records feynman writes for them, archived
//! by `kitbash-archive` in-process with its shipped settings, every file fsynced and every
//! entry acknowledged — against baselines taken in the same run:
//!
//! - `entries_per_s`: ticks archived per second, from the daemon's start to the last entry
//!   acknowledged, over the rate at which our client reads the same entries with `XRANGE`
//!   (pages of 10,000): archiving cannot be faster than reading;
//! - `ticks_compression`, `physics_compression`: the MessagePack bodies' bytes over the Parquet
//!   files' bytes (the files also keep ids, types and mids);
//! - `replay_entries_per_s`: archived ticks replayed from the files into a fresh stream with
//!   their ids, over `redis-benchmark XADD -c 50 -P 32` in the same run;
//! - `day_query_ms`: one day of a ten-day archive of 1 M ticks (10 M with `--long`) read with
//!   pyarrow, over a full scan of it ([`day_query`]).

use std::time::{Duration, Instant};

use fred::prelude::*;
use fred::types::Value;
use kitbash_archive::replay::{self, Ids, Pace, Range, Source};
use kitbash_archive::store;
use kitbash_client::Producer;
use kitbash_feynman::market::MarketSim;
use kitbash_feynman::physics::TickWindow;
use kitbash_runtime::Config;
use kitbash_schema::messages::{PhysicsRecord, Tick};
use kitbash_schema::{Envelope, Keys, Namespace, StreamName};

use super::redis::{target, xadd_baseline};
use super::{BenchOptions, Record};

const SYMBOLS: usize = 20;

fn market(n: usize) -> anyhow::Result<(Vec<Tick>, Vec<PhysicsRecord>)> {
    let symbols: Vec<String> = (0..SYMBOLS).map(|i| format!("S{i:02}")).collect();
    let mut sim = MarketSim::new(&symbols, 7).map_err(|e| anyhow::anyhow!("{e}"))?;
    let mut windows: std::collections::HashMap<String, TickWindow> = Default::default();
    let (mut ticks, mut physics) = (Vec::with_capacity(n), Vec::with_capacity(n));
    for i in 0..n {
        let t = sim.next_tick(1_766_318_400.0 + i as f64 / 1000.0);
        let w = windows
            .entry(t.symbol.clone())
            .or_insert_with(|| TickWindow::new(100));
        w.push(&t).map_err(|e| anyhow::anyhow!("{e}"))?;
        physics.push(PhysicsRecord {
            symbol: t.symbol.clone(),
            ts: t.ts,
            price: t.price,
            vector: w.vector(),
            source: format!("ticks:0/{}-0", 1_766_318_400_000u64 + i as u64),
        });
        ticks.push(t);
    }
    Ok((ticks, physics))
}

fn body_bytes<M: kitbash_schema::Message>(msgs: &[M]) -> anyhow::Result<u64> {
    let mut n = 0u64;
    for m in msgs {
        n += Envelope::msgpack(m)?.body.len() as u64;
    }
    Ok(n)
}

async fn pending(c: &Client, key: &str) -> i64 {
    let v: Value = c.xpending(key, "archive", ()).await.unwrap_or(Value::Null);
    match v {
        Value::Array(a) => a.first().and_then(Value::as_i64).unwrap_or(-1),
        _ => -1,
    }
}

/// Archives `streams` with the daemon until every entry is acknowledged; returns the time.
async fn archive(
    config: &Config,
    c: &Client,
    keys: &Keys,
    streams: &[StreamName],
    n: u64,
) -> anyhow::Result<Duration> {
    let mut cfg = config.clone();
    cfg.archive.streams = streams.iter().map(|s| s.logical()).collect();
    let (signals, _) = kitbash_runtime::shutdown::manual();
    let stop = signals.shutdown.clone();
    let started = Instant::now();
    let task = tokio::spawn(kitbash_archive::run(cfg, signals));
    let deadline = started + Duration::from_secs(600);
    let root = std::path::PathBuf::from(&config.archive.dir).join(&config.redis.namespace);
    loop {
        let mut done = true;
        for &s in streams {
            let m = store::read_manifest(&store::stream_dir(&root, s), s)?;
            let rows: u64 = m.files.iter().map(|f| f.rows).sum();
            done &= rows == n && pending(c, &keys.stream(s)).await == 0;
        }
        if done {
            break;
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "the archive did not finish within 600 s"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let took = started.elapsed();
    stop.cancel();
    task.await??;
    Ok(took)
}

fn file_bytes(root: &std::path::Path, s: StreamName) -> anyhow::Result<u64> {
    let m = store::read_manifest(&store::stream_dir(root, s), s)?;
    Ok(m.files.iter().map(|f| f.bytes).sum())
}

/// Compressed bytes per column over every file of `s`, largest first.
fn columns(root: &std::path::Path, s: StreamName) -> anyhow::Result<Vec<(String, u64)>> {
    let dir = store::stream_dir(root, s);
    let m = store::read_manifest(&dir, s)?;
    let mut sizes: std::collections::BTreeMap<String, u64> = Default::default();
    for f in &m.files {
        let bytes = std::fs::read(dir.join(&f.name))?;
        for (c, n) in kitbash_archive::format::column_sizes(bytes.into())? {
            *sizes.entry(c).or_default() += n;
        }
    }
    let mut v: Vec<(String, u64)> = sizes.into_iter().collect();
    v.sort_by_key(|c| std::cmp::Reverse(c.1));
    Ok(v)
}

fn columns_json(cols: &[(String, u64)]) -> serde_json::Value {
    serde_json::Value::Object(cols.iter().map(|(c, n)| (c.clone(), (*n).into())).collect())
}

/// Runs the suite.
pub async fn run(opts: &BenchOptions) -> anyhow::Result<Vec<Record>> {
    let t = target(opts)?;
    let n = if opts.long { 1_000_000 } else { 200_000 };
    let dir = tempfile::tempdir()?;
    let ns = "bench-archive".to_owned();
    let mut config = Config::default();
    config.redis.url = t.url.clone();
    config.redis.namespace = ns.clone();
    config.admin.listen = String::new();
    config.archive.dir = dir.path().display().to_string();
    // `KITBASH_BENCH_ARCHIVE_ZSTD_LEVEL` compares levels (the default is the shipped setting).
    if let Some(level) = std::env::var("KITBASH_BENCH_ARCHIVE_ZSTD_LEVEL")
        .ok()
        .and_then(|v| v.parse().ok())
    {
        config.archive.zstd_level = level;
    }
    // `KITBASH_BENCH_ARCHIVE_BATCH` compares `[consumer] batch` values (default: shipped).
    if let Some(batch) = std::env::var("KITBASH_BENCH_ARCHIVE_BATCH")
        .ok()
        .and_then(|v| v.parse().ok())
    {
        config.consumer.batch = batch;
    }
    let keys = Keys::new(Namespace::new(ns.clone())?);
    let c = kitbash_runtime::redis::connect_client(&config.redis, Duration::from_secs(10)).await?;
    let (tick_stream, physics_stream) = (StreamName::Ticks(0), StreamName::Physics);
    for s in [tick_stream, physics_stream] {
        let _: i64 = c.del(keys.stream(s)).await?;
    }

    eprintln!("archive: {n} ticks and {n} physics records from MarketSim ({SYMBOLS} symbols) …");
    let (ticks, physics) = market(n)?;
    let producer = Producer::new(c.clone(), keys.clone(), 1);
    for chunk in ticks.chunks(1_000) {
        producer.publish_batch(tick_stream, chunk).await?;
    }
    for chunk in physics.chunks(1_000) {
        producer.publish_batch(physics_stream, chunk).await?;
    }

    eprintln!("archive: baseline — XRANGE of the {n} ticks …");
    let key = keys.stream(tick_stream);
    let started = Instant::now();
    let (mut cursor, mut read) = ("-".to_owned(), 0usize);
    loop {
        let v: Value = c.xrange(&key, cursor.as_str(), "+", Some(10_000)).await?;
        let page = kitbash_runtime::entries::parse_entries("XRANGE", &v)?;
        let Some(last) = page.last() else { break };
        read += page.len();
        cursor = format!("({}", last.id);
        if page.len() < 10_000 {
            break;
        }
    }
    let xrange_rate = read as f64 / started.elapsed().as_secs_f64();

    eprintln!("archive: kitbash-archive on ticks:0 …");
    let took = archive(&config, &c, &keys, &[tick_stream], n as u64).await?;
    let rate = n as f64 / took.as_secs_f64();
    eprintln!("archive: kitbash-archive on physics …");
    archive(&config, &c, &keys, &[physics_stream], n as u64).await?;
    let root = dir.path().join(&ns);
    let (tick_files, physics_files) = (
        file_bytes(&root, tick_stream)?,
        file_bytes(&root, physics_stream)?,
    );
    let (tick_bodies, physics_bodies) = (body_bytes(&ticks)?, body_bytes(&physics)?);
    let (tick_cols, physics_cols) = (
        columns(&root, tick_stream)?,
        columns(&root, physics_stream)?,
    );
    let mid = |cols: &[(String, u64)]| cols.iter().find(|c| c.0 == "mid").map_or(0, |c| c.1);

    eprintln!("archive: replay from the files, and redis-benchmark XADD -P 32 …");
    let fresh = keys.stream(StreamName::Ticks(1));
    let _: i64 = c.del(&fresh).await?;
    let started = Instant::now();
    let sel = replay::select(
        &c,
        &root,
        tick_stream,
        &key,
        Range::default(),
        Source::Archive,
    )
    .await?;
    let written = replay::write(&c, &fresh, &sel.entries, Ids::Original, Pace::Max, |_| {}).await?;
    let replay_rate = written as f64 / started.elapsed().as_secs_f64();
    anyhow::ensure!(written == n, "replay wrote {written} of {n}");
    let xadd = xadd_baseline(&t, n, Some(32))?;
    let xadd_rate = xadd.first().map_or(0.0, |r| r.1.rps);
    let _ = c.quit().await;

    Ok(vec![
        Record::new("archive", "entries_per_s", rate, "entries/s", xrange_rate)
            .with(
                "baseline_kind",
                "XRANGE read of the same entries, pages of 10000, same run",
            )
            .with("entries", n as u64)
            .with("zstd_level", i64::from(config.archive.zstd_level))
            .with("read_batch", config.consumer.batch as u64)
            .with("target", "≥ 0.5 of the baseline and ≥ 300000/s"),
        Record::new(
            "archive",
            "ticks_compression",
            tick_bodies as f64 / tick_files as f64,
            "x",
            1.0,
        )
        .with(
            "baseline_kind",
            "the MessagePack bodies themselves (ratio = bodies / files)",
        )
        .with("body_bytes", tick_bodies)
        .with("file_bytes", tick_files)
        .with("mid_column_bytes", mid(&tick_cols))
        .with("columns", columns_json(&tick_cols))
        .with("zstd_level", i64::from(config.archive.zstd_level))
        .with("target", "≥ 8"),
        Record::new(
            "archive",
            "physics_compression",
            physics_bodies as f64 / physics_files as f64,
            "x",
            1.0,
        )
        .with(
            "baseline_kind",
            "the MessagePack bodies themselves (ratio = bodies / files)",
        )
        .with("body_bytes", physics_bodies)
        .with("file_bytes", physics_files)
        .with("mid_column_bytes", mid(&physics_cols))
        .with("columns", columns_json(&physics_cols))
        .with("zstd_level", i64::from(config.archive.zstd_level))
        .with("target", "≥ 6"),
        Record::new(
            "archive",
            "replay_entries_per_s",
            replay_rate,
            "entries/s",
            xadd_rate,
        )
        .with(
            "baseline_kind",
            "redis-benchmark XADD -c 50 -P 32, same run",
        )
        .with("target", "≥ 0.5 of the baseline"),
        {
            eprintln!("archive: one day of a ten-day archive with pyarrow …");
            let ticks = if opts.long { 10_000_000 } else { 1_000_000 };
            tokio::task::block_in_place(|| day_query(ticks))?
        },
    ])
}

/// The record of issue 18: how long one day's ticks take to read from a ten-day archive of
/// `n` ticks (10 M with `--long`) with pyarrow, pruning files and row groups by `id_ms`,
/// against a full scan of the same archive in the same run. The files are written with
/// [`kitbash_archive::format::Segment`] in the archive's layout (50,000 ticks per file, named
/// by their first id), MarketSim ticks with producer mids; the archive daemon is not involved
/// (its rate is `entries_per_s`). Needs python3 with pyarrow (`tests/deps/install python`);
/// without it the record says so.
pub fn day_query(n: usize) -> anyhow::Result<Record> {
    use kitbash_archive::format::{Entry, Layout, Segment};
    const PER_FILE: usize = 50_000;
    const DAYS: f64 = 10.0;
    let dir = tempfile::tempdir()?;
    let symbols: Vec<String> = (0..SYMBOLS).map(|i| format!("S{i:02}")).collect();
    let mut sim = MarketSim::new(&symbols, 11).map_err(|e| anyhow::anyhow!("{e}"))?;
    let step = DAYS * 86_400.0 / n as f64;
    let base = 1_766_318_400.0;
    let mut seg = Segment::new(Layout::Ticks);
    let mut first: Option<u64> = None;
    let mut bytes = 0u64;
    for i in 0..n {
        let t = sim.next_tick(base + i as f64 * step);
        let ms = (t.ts * 1000.0) as u64;
        let fields = Envelope::msgpack(&t)?
            .with_mid(kitbash_client::new_mid())
            .to_fields()
            .into_iter()
            .map(|(k, v)| (k.as_bytes().to_vec(), v))
            .collect();
        first.get_or_insert(ms);
        seg.push(&Entry {
            id: format!("{ms}-{}", i % 2),
            fields,
        })?;
        if seg.len() == PER_FILE || i + 1 == n {
            let name = kitbash_schema::archive::file_name(first.take().unwrap_or(ms), 0);
            let mut buf = Vec::new();
            seg.write_to(&mut buf)?;
            bytes += buf.len() as u64;
            std::fs::write(dir.path().join(name), buf)?;
            seg.clear();
        }
    }
    let day_from = ((base + 4.0 * 86_400.0) * 1000.0) as u64;
    let day_to = day_from + 86_400_000;
    let script = r#"
import sys, time, json
import pyarrow.dataset as ds
d = ds.dataset(sys.argv[1], format="parquet")
lo, hi = int(sys.argv[2]), int(sys.argv[3])
t0 = time.perf_counter()
day = d.to_table(filter=(ds.field("id_ms") >= lo) & (ds.field("id_ms") < hi))
t1 = time.perf_counter()
full = d.to_table()
t2 = time.perf_counter()
print(json.dumps({"day_ms": (t1 - t0) * 1000, "day_rows": day.num_rows,
                  "full_ms": (t2 - t1) * 1000, "full_rows": full.num_rows}))
"#;
    let out = std::process::Command::new("python3")
        .env("PYTHONPATH", python_path())
        .args([
            "-c",
            script,
            &dir.path().display().to_string(),
            &day_from.to_string(),
            &day_to.to_string(),
        ])
        .output();
    let figures: Option<serde_json::Value> = out
        .as_ref()
        .ok()
        .filter(|o| o.status.success())
        .and_then(|o| serde_json::from_slice(&o.stdout).ok());
    let Some(f) = figures else {
        let why = match out {
            Ok(o) => String::from_utf8_lossy(&o.stderr).trim().to_owned(),
            Err(e) => e.to_string(),
        };
        anyhow::bail!(
            "the day query needs python3 with pyarrow (tests/deps/install python): {why}"
        );
    };
    let num = |k: &str| f[k].as_f64().unwrap_or(f64::NAN);
    Ok(Record::new(
        "archive",
        "day_query_ms",
        num("day_ms"),
        "ms",
        num("full_ms"),
    )
    .with(
        "baseline_kind",
        "pyarrow full scan of the same archive, same run (ratio = day / full)",
    )
    .with("ticks", n as u64)
    .with("files", n.div_ceil(PER_FILE) as u64)
    .with("archive_bytes", bytes)
    .with("day_rows", num("day_rows") as u64)
    .with("full_rows", num("full_rows") as u64)
    .with("target", "for the record"))
}

/// `PYTHONPATH` for the day query: where `tests/deps` installs pyarrow (`.kitbash/python` under
/// the current directory, and under the workspace the running binary was built in — a bench run
/// from a scratch directory still finds it), then whatever the caller had set.
fn python_path() -> std::ffi::OsString {
    let mut dirs = vec![crate::locate::absolute(std::path::Path::new(
        ".kitbash/python",
    ))];
    if let Ok(exe) = std::env::current_exe() {
        dirs.extend(
            exe.ancestors()
                .map(|a| a.join(".kitbash/python"))
                .filter(|d| d.is_dir())
                .take(1),
        );
    }
    if let Some(old) = std::env::var_os("PYTHONPATH") {
        dirs.extend(std::env::split_paths(&old));
    }
    std::env::join_paths(dirs).unwrap_or_default()
}
