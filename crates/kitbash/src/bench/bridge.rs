//! `kitbash bench bridge`: the WebSocket broadcaster under load, the bridge as its own process
//! (`kitbash-bridge` next to this binary) and the clients in separate processes
//! (`kitbash bench-ws-clients`, a hidden subcommand: many WebSocket connections in one process).
//!
//! - `p99_delivery_ms`: 5,000 clients, each subscribed to one of 50 symbols' `physics:{SYM}`
//!   channels; 1,000 physics records a second (20 per symbol) → 100,000 deliveries a second.
//!   Every delivery is timed, from the moment the publisher sent the `XADD` (its time is in the
//!   record's `ts`) to the client's receipt. Baseline: a plain Redis `SUBSCRIBE` client's
//!   `PUBLISH` → receive p99 at 1,000 messages a second, in the same run.
//! - `deliveries_per_cpu_s`: deliveries in that phase per second of the bridge's CPU
//!   (utime + stime from `/proc`). Baseline: Centrifugo's published figure, ≈ 12,500
//!   deliveries per CPU-second (its 1M-connection benchmark); Socket.IO 4.8 measured 46k–48k
//!   on this kind of machine.
//! - `bytes_per_client`: the bridge's RSS growth per connected, subscribed, idle client.
//!   Baseline: Socket.IO 4.8's 12.9 KB per idle client measured on this kind of machine.
//! - `resume_ms`: a client that missed 1,000 publications of its channel subscribes with
//!   recovery and has them all. Baseline: `XRANGE` of the same 1,000 entries straight from
//!   Redis in the same run.

use std::io::{BufRead, Write};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use fred::prelude::*;
use futures::{SinkExt, StreamExt};
use hdrhistogram::Histogram;
use kitbash_schema::messages::{PhysicsRecord, PhysicsVector, Regime};
use kitbash_schema::{Envelope, Keys, Namespace, StreamName};
use serde_json::{Value as Json, json};
use tokio_tungstenite::tungstenite::Message;

use super::feynman::{process_cpu_seconds, rss_kib};
use super::redis::target;
use super::{BenchOptions, Record};

const SUITE: &str = "bridge";
const CLIENTS: usize = 5_000;
const PROCESSES: usize = 4;
const SYMBOLS: usize = 50;
const RATE: u64 = 1_000;
const RESUME: usize = 1_000;

fn now_s() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

fn record(symbol: &str, ts: f64) -> PhysicsRecord {
    PhysicsRecord {
        symbol: symbol.into(),
        ts,
        price: 100.0,
        vector: PhysicsVector {
            mass: 1.0,
            momentum: 0.1,
            friction: 0.01,
            entropy: 2.5,
            nash_dist: 0.2,
            regime: Regime::Gaussian,
            alpha_coefficient: 2.1,
        },
        source: "ticks:0/1-0".into(),
    }
}

fn sibling(name: &str) -> anyhow::Result<std::path::PathBuf> {
    std::env::current_exe()
        .ok()
        .and_then(|e| e.parent().map(|d| d.join(name)))
        .filter(|p| p.exists())
        .with_context(|| {
            format!("bench bridge needs {name} next to kitbash (cargo build --release --bins)")
        })
}

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn open(url: &str) -> anyhow::Result<Ws> {
    let (ws, _) = tokio_tungstenite::connect_async(url).await?;
    Ok(ws)
}

/// Sends `frame`, returns the JSON objects of the next frames until `done` says stop.
async fn exchange(
    ws: &mut Ws,
    frame: &str,
    mut done: impl FnMut(&Json) -> bool,
) -> anyhow::Result<()> {
    ws.send(Message::text(frame)).await?;
    loop {
        let msg = tokio::time::timeout(Duration::from_secs(30), ws.next())
            .await
            .context("no answer from the bridge within 30 s")?
            .context("the bridge closed the connection")??;
        if let Message::Text(t) = msg {
            for line in t.as_str().split('\n') {
                let v: Json = serde_json::from_str(line)?;
                if done(&v) {
                    return Ok(());
                }
            }
        }
    }
}

/// The client side: `count` connections to `url`, connection `i` subscribed to
/// `physics:S{(first + i) % symbols}`. Prints `ready` once all are subscribed, then times
/// every publication (now − the record's `ts`) until stdin closes, and prints the histogram
/// as one JSON line: `{"count":N,"hist":[[µs,n],…]}`.
/// The record's `ts` of a publication line (`{"push":{…"pub":{"data":{…"ts":T…}…}}}`), found by
/// scanning for the one `"ts":` a physics record has rather than parsing the whole line: the
/// load generator shares the bridge's cores, and a full parse of every delivery was most of
/// its CPU (every publication is still timed). Anything else (a reply, another shape) falls
/// back to a full parse.
fn publication_ts(line: &str) -> Option<f64> {
    const KEY: &str = "\"ts\":";
    if line.starts_with("{\"push\":")
        && let Some(at) = line.find(KEY)
    {
        let rest = &line[at + KEY.len()..];
        let end = rest
            .find(|c: char| !(c.is_ascii_digit() || matches!(c, '.' | '-' | '+' | 'e' | 'E')))
            .unwrap_or(rest.len());
        if let Ok(ts) = rest[..end].parse::<f64>() {
            return Some(ts);
        }
    }
    let v: Json = serde_json::from_str(line).ok()?;
    v["push"]["pub"]["data"]["ts"].as_f64()
}

pub async fn clients(url: &str, count: usize, symbols: usize, first: usize) -> anyhow::Result<()> {
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<Vec<u64>>();
    let mut tasks = Vec::new();
    let (ready_tx, mut ready_rx) = tokio::sync::mpsc::unbounded_channel::<()>();
    // Ends the clients at the end, so each sends the deliveries it has not sent yet (a client
    // sends them in batches of 32; an open connection's last partial batch would be lost).
    let stop = kitbash_runtime::CancellationToken::new();
    for i in 0..count {
        let (url, tx, ready_tx, stop) =
            (url.to_owned(), tx.clone(), ready_tx.clone(), stop.clone());
        let channel = format!("physics:S{}", (first + i) % symbols);
        tasks.push(tokio::spawn(async move {
            let mut ws = match open(&url).await {
                Ok(w) => w,
                Err(e) => {
                    eprintln!("bench-ws-clients: {e}");
                    return;
                }
            };
            let frame = format!(
                "{{\"id\":1,\"connect\":{{}}}}\n{{\"id\":2,\"subscribe\":{{\"channel\":\"{channel}\"}}}}"
            );
            if exchange(&mut ws, &frame, |v| v["id"] == 2).await.is_err() {
                return;
            }
            let _ = ready_tx.send(());
            let mut batch = Vec::with_capacity(64);
            loop {
                let msg = tokio::select! {
                    _ = stop.cancelled() => break,
                    m = ws.next() => m,
                };
                let Some(Ok(msg)) = msg else { break };
                let Message::Text(t) = msg else { continue };
                let now = now_s();
                for line in t.as_str().split('\n') {
                    if line == "{}" {
                        let _ = ws.send(Message::text("{}")).await;
                        continue;
                    }
                    if let Some(ts) = publication_ts(line) {
                        batch.push(((now - ts) * 1e6).max(1.0) as u64);
                    }
                }
                if batch.len() >= 32 {
                    let _ = tx.send(std::mem::take(&mut batch));
                }
            }
            let _ = tx.send(batch);
        }));
    }
    drop(ready_tx);
    drop(tx);
    for _ in 0..count {
        ready_rx
            .recv()
            .await
            .context("a client could not subscribe")?;
    }
    println!("ready");
    std::io::stdout().flush()?;
    let mut hist = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?;
    let stdin_closed = tokio::task::spawn_blocking(|| {
        let mut s = String::new();
        let _ = std::io::stdin().read_line(&mut s);
    });
    tokio::pin!(stdin_closed);
    loop {
        tokio::select! {
            _ = &mut stdin_closed => break,
            b = rx.recv() => match b {
                Some(b) => for v in b { let _ = hist.record(v.min(60_000_000)); },
                None => break,
            },
        }
    }
    stop.cancel();
    for t in tasks {
        let _ = t.await;
    }
    // Every sender is gone now: this ends once the last batch is read.
    while let Some(b) = rx.recv().await {
        for v in b {
            let _ = hist.record(v.min(60_000_000));
        }
    }
    let pairs: Vec<[u64; 2]> = hist
        .iter_recorded()
        .map(|v| [v.value_iterated_to(), v.count_at_value()])
        .collect();
    println!("{}", json!({"count": hist.len(), "hist": pairs}));
    std::io::stdout().flush()?;
    Ok(())
}

struct ClientProcs(Vec<Child>);

impl Drop for ClientProcs {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Runs the suite.
pub async fn run(opts: &BenchOptions) -> anyhow::Result<Vec<Record>> {
    let t = target(opts)?;
    let secs = if opts.long { 30 } else { 10 };
    let ns = "bench-bridge".to_owned();
    let keys = Keys::new(Namespace::new(ns.clone())?);
    let cfg = kitbash_runtime::config::RedisConfig {
        url: t.url.clone(),
        namespace: ns.clone(),
        ..Default::default()
    };
    let c = kitbash_runtime::redis::connect_client(&cfg, Duration::from_secs(10)).await?;
    let _: i64 = c.del(keys.stream(StreamName::Physics)).await?;
    let listen = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?;
    let url = format!("ws://{listen}/connection/websocket");
    // The bridge's log, for when a phase fails.
    let log = std::env::temp_dir().join(format!("kitbash-bench-bridge-{}.log", std::process::id()));
    let mut bridge = Command::new(sibling("kitbash-bridge")?)
        .env("KITBASH_CONFIG_DIR", "/nonexistent")
        .env_remove("KITBASH_PROFILE")
        .env("KITBASH__REDIS__URL", &t.url)
        .env("KITBASH__REDIS__NAMESPACE", &ns)
        .env("KITBASH__ADMIN__LISTEN", "")
        .env("GLIBC_TUNABLES", kitbash_runtime::daemon::glibc_tunables())
        .env("KITBASH__BRIDGE__LISTEN", listen.to_string())
        .env("KITBASH__BRIDGE__RECOVER_MAX", (RESUME + 10).to_string())
        .env("RUST_LOG", "info,kitbash_bridge=debug")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log)?)
        .spawn()?;
    let pid = bridge.id();
    let result = async {
        // Ready: a subscribe is answered.
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(mut ws) = open(&url).await
                && exchange(&mut ws, "{\"id\":1,\"connect\":{}}\n{\"id\":2,\"subscribe\":{\"channel\":\"physics\"}}", |v| v["id"] == 2)
                    .await
                    .is_ok()
            {
                break;
            }
            anyhow::ensure!(Instant::now() < deadline, "the bridge did not answer within 30 s");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
        let rss_idle = rss_kib(pid)?;

        eprintln!("bridge: {CLIENTS} clients in {PROCESSES} processes …");
        let me = std::env::current_exe()?;
        let mut procs = ClientProcs(Vec::new());
        let mut outs = Vec::new();
        for p in 0..PROCESSES {
            let per = CLIENTS / PROCESSES;
            let mut child = Command::new(&me)
                .args(["bench-ws-clients", "--url", &url, "--count", &per.to_string(), "--symbols", &SYMBOLS.to_string(), "--first", &(p * per).to_string()])
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::inherit())
                .spawn()?;
            let out = std::io::BufReader::new(child.stdout.take().context("stdout")?);
            procs.0.push(child);
            outs.push(out);
        }
        let mut outs = tokio::task::spawn_blocking(move || -> anyhow::Result<_> {
            for o in &mut outs {
                let mut line = String::new();
                o.read_line(&mut line)?;
                anyhow::ensure!(line.trim() == "ready", "a client process failed: {line:?}");
            }
            Ok(outs)
        })
        .await??;
        tokio::time::sleep(Duration::from_millis(500)).await;
        let rss_clients = rss_kib(pid)?;
        let bytes_per_client = (rss_clients.saturating_sub(rss_idle) * 1024) as f64 / CLIENTS as f64;

        eprintln!("bridge: {RATE} records/s over {SYMBOLS} symbols for {secs} s …");
        let key = keys.stream(StreamName::Physics);
        let cpu0 = process_cpu_seconds(pid);
        // The load generator's own CPU: on a small box the clients compete with the bridge.
        let client_cpu = |procs: &[Child]| -> f64 {
            procs.iter().map(|c| process_cpu_seconds(c.id())).sum()
        };
        let clients_cpu0 = client_cpu(&procs.0);
        let started = Instant::now();
        let total = RATE * secs;
        let mut sent = 0u64;
        while sent < total {
            let due = started + Duration::from_micros(sent * 1_000_000 / RATE);
            tokio::time::sleep_until(due.into()).await;
            // Everything due by now, in one pipeline (a fresh one: fred's `all()` keeps the
            // commands and would send them again).
            let pipe = c.pipeline();
            let upto = ((started.elapsed().as_micros() as u64 * RATE) / 1_000_000 + 1).min(total);
            for i in sent..upto {
                let sym = format!("S{}", i as usize % SYMBOLS);
                let env = Envelope::msgpack(&record(&sym, now_s()))?;
                let _: () = pipe.xadd(&key, false, None, "*", env.to_fields()).await?;
            }
            let _: Vec<Value> = pipe.all().await?;
            sent = upto;
        }
        // Let the last deliveries land.
        tokio::time::sleep(Duration::from_millis(1000)).await;
        let cpu = process_cpu_seconds(pid) - cpu0;
        let clients_cpu = client_cpu(&procs.0) - clients_cpu0;
        let mut hist = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?;
        // Close their stdin, read their histograms (a child blocks on a full pipe until its
        // output is read), then reap them.
        for child in &mut procs.0 {
            drop(child.stdin.take());
        }
        let lines = tokio::task::spawn_blocking(move || -> anyhow::Result<Vec<String>> {
            let mut v = Vec::new();
            for o in &mut outs {
                let mut line = String::new();
                o.read_line(&mut line)?;
                v.push(line);
            }
            Ok(v)
        })
        .await??;
        for mut child in std::mem::take(&mut procs.0) {
            let _ = child.wait();
        }
        for line in lines {
            let v: Json = serde_json::from_str(&line).with_context(|| format!("client output {line:?}"))?;
            for pair in v["hist"].as_array().into_iter().flatten() {
                let (val, n) = (pair[0].as_u64().unwrap_or(1), pair[1].as_u64().unwrap_or(0));
                hist.record_n(val.max(1), n)?;
            }
        }
        let delivered = hist.len();
        let expected = total * (CLIENTS / SYMBOLS) as u64;
        let p99_ms = hist.value_at_quantile(0.99) as f64 / 1000.0;

        eprintln!("bridge: baseline — a Redis SUBSCRIBE client at {RATE} messages/s …");
        let floor_p99 = subscribe_floor(&t.url, secs.min(10)).await?;

        eprintln!("bridge: resume after {RESUME} missed publications …");
        let (resume_ms, xrange_ms) = resume(&c, &keys, &url).await?;

        Ok(vec![
            Record::new(SUITE, "p99_delivery_ms", p99_ms, "ms", floor_p99)
                .with("clients", CLIENTS as u64)
                .with("deliveries_per_s", (delivered as f64 / secs as f64).round())
                .with("records_per_s", RATE)
                .with("channels", SYMBOLS as u64)
                .with("deliveries", delivered)
                .with("deliveries_expected", expected)
                .with("p50_ms", hist.value_at_quantile(0.5) as f64 / 1000.0)
                .with("p999_ms", hist.value_at_quantile(0.999) as f64 / 1000.0)
                .with("max_ms", hist.max() as f64 / 1000.0)
                .with("baseline_is", "a Redis SUBSCRIBE client's PUBLISH → receive p99 at the same message rate")
                .with("target_ms", 50),
            Record::new(SUITE, "deliveries_per_cpu_s", delivered as f64 / cpu.max(0.01), "1/cpu-s", 12_500.0)
                .with("bridge_cpu_s", cpu)
                .with("clients_cpu_s", clients_cpu)
                .with("cores", std::thread::available_parallelism().map_or(0, |n| n.get() as u64))
                .with("seconds", secs)
                .with("baseline_is", "Centrifugo's published ≈12,500 deliveries per CPU-second (Socket.IO 4.8 measured 46k–48k here)")
                .with("target", 200_000),
            Record::new(SUITE, "bytes_per_client", bytes_per_client, "B", 12_900.0)
                .with("clients", CLIENTS as u64)
                .with("rss_idle_kib", rss_idle)
                .with("rss_with_clients_kib", rss_clients)
                .with("baseline_is", "Socket.IO 4.8's 12.9 KB per idle client measured on this kind of machine")
                .with("target", 8_000),
            Record::new(SUITE, "resume_ms", resume_ms, "ms", xrange_ms)
                .with("missed", RESUME as u64)
                .with("baseline_is", "XRANGE of the same entries straight from Redis"),
        ])
    }
    .await;
    let _ = Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status();
    let _ = tokio::task::spawn_blocking(move || bridge.wait()).await;
    match result {
        Ok(r) => {
            let _ = std::fs::remove_file(&log);
            Ok(r)
        }
        Err(e) => Err(e.context(format!("the bridge's log: {}", log.display()))),
    }
}

/// p99 of PUBLISH → receive for one plain Redis subscriber at [`RATE`] messages a second.
async fn subscribe_floor(url: &str, secs: u64) -> anyhow::Result<f64> {
    let cfg = kitbash_runtime::config::RedisConfig {
        url: url.to_owned(),
        ..Default::default()
    };
    let publisher = kitbash_runtime::redis::connect_client(&cfg, Duration::from_secs(10)).await?;
    let sub = fred::prelude::Builder::from_config(fred::prelude::Config::from_url(url)?)
        .build_subscriber_client()?;
    sub.init().await?;
    sub.subscribe("bench-bridge-floor").await?;
    let mut rx = sub.message_rx();
    let collect = tokio::spawn(async move {
        let mut hist = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).ok()?;
        while let Ok(m) = rx.recv().await {
            let now = now_s();
            let Some(s) = m.value.as_string() else {
                continue;
            };
            if s == "stop" {
                break;
            }
            if let Ok(ts) = s.parse::<f64>() {
                let _ = hist.record((((now - ts) * 1e6).max(1.0) as u64).min(60_000_000));
            }
        }
        Some(hist)
    });
    let started = Instant::now();
    let total = RATE * secs;
    for i in 0..total {
        tokio::time::sleep_until((started + Duration::from_micros(i * 1_000_000 / RATE)).into())
            .await;
        let _: i64 = publisher
            .publish("bench-bridge-floor", now_s().to_string())
            .await?;
    }
    let _: i64 = publisher.publish("bench-bridge-floor", "stop").await?;
    let hist = collect.await?.context("histogram")?;
    let _ = sub.quit().await;
    Ok(hist.value_at_quantile(0.99) as f64 / 1000.0)
}

/// (resume_ms, xrange_ms) for [`RESUME`] missed publications.
async fn resume(c: &Client, keys: &Keys, url: &str) -> anyhow::Result<(f64, f64)> {
    let channel = "physics:RESUME";
    let mut ws = open(url).await?;
    let mut pos = (0u64, String::new());
    exchange(&mut ws, &format!("{{\"id\":1,\"connect\":{{}}}}\n{{\"id\":2,\"subscribe\":{{\"channel\":\"{channel}\"}}}}"), |v| {
        if v["id"] == 2 {
            pos = (v["subscribe"]["offset"].as_u64().unwrap_or(0), v["subscribe"]["epoch"].as_str().unwrap_or("").to_owned());
            true
        } else {
            false
        }
    })
    .await?;
    drop(ws);
    // A watcher sees them all live, so the bridge has read them before the resume.
    let mut watcher = open(url).await?;
    exchange(&mut watcher, &format!("{{\"id\":1,\"connect\":{{}}}}\n{{\"id\":2,\"subscribe\":{{\"channel\":\"{channel}\"}}}}"), |v| v["id"] == 2).await?;
    let key = keys.stream(StreamName::Physics);
    let mut pipe = c.pipeline();
    let mut first = String::new();
    for i in 0..RESUME {
        let env = Envelope::msgpack(&record("RESUME", now_s()))?;
        let _: () = pipe.xadd(&key, false, None, "*", env.to_fields()).await?;
        if i % 100 == 99 {
            // `all()` keeps the commands (fred pipelines are reusable): a fresh one per batch.
            let ids: Vec<String> = std::mem::replace(&mut pipe, c.pipeline()).all().await?;
            if first.is_empty() {
                first = ids.first().cloned().unwrap_or_default();
            }
        }
    }
    let mut seen = 0;
    watcher.send(Message::text("{}")).await?;
    while seen < RESUME {
        let msg = tokio::time::timeout(Duration::from_secs(30), watcher.next())
            .await?
            .context("watcher closed")??;
        if let Message::Text(t) = msg {
            seen += t
                .as_str()
                .split('\n')
                .filter(|l| l.contains("\"pub\""))
                .count();
        }
    }
    let mut ws = open(url).await?;
    let frame = format!(
        "{{\"id\":1,\"connect\":{{}}}}\n{{\"id\":2,\"subscribe\":{{\"channel\":\"{channel}\",\"recover\":true,\"offset\":{},\"epoch\":\"{}\"}}}}",
        pos.0, pos.1
    );
    let started = Instant::now();
    let mut got = 0usize;
    let mut recovered = false;
    let mut reply = String::new();
    exchange(&mut ws, &frame, |v| {
        if v["id"] == 2 {
            let mut r = v.clone();
            if let Some(o) = r["subscribe"].as_object_mut() {
                o.remove("publications");
            }
            reply = r.to_string();
            recovered = v["subscribe"]["recovered"] == true;
            got = v["subscribe"]["publications"]
                .as_array()
                .map_or(0, Vec::len);
            true
        } else {
            false
        }
    })
    .await?;
    let resume_ms = started.elapsed().as_secs_f64() * 1000.0;
    anyhow::ensure!(
        recovered && got == RESUME,
        "the resume recovered {got} of {RESUME} (recovered: {recovered})"
    );
    let started = Instant::now();
    let v: Value = c.xrange(&key, first.as_str(), "+", None).await?;
    let n = match &v {
        Value::Array(a) => a.len(),
        _ => 0,
    };
    let xrange_ms = started.elapsed().as_secs_f64() * 1000.0;
    anyhow::ensure!(n >= RESUME, "XRANGE returned {n} entries");
    Ok((resume_ms, xrange_ms))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_scanned_ts_is_the_parsed_one() {
        for ts in [1_765_000_000.123_456_7, 0.5, 1e-7, 1_765_000_000.0] {
            let line = json!({
                "push": {"channel": "physics:S7", "pub": {"data": record("S7", ts), "offset": 42}}
            })
            .to_string();
            assert_eq!(publication_ts(&line), Some(ts), "{line}");
            let full: Json = serde_json::from_str(&line).expect("json");
            assert_eq!(full["push"]["pub"]["data"]["ts"].as_f64(), Some(ts));
        }
        assert_eq!(publication_ts(r#"{"id":2,"subscribe":{}}"#), None);
        assert_eq!(publication_ts("not json"), None);
    }
}
