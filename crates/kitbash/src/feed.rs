//! `kitbash feed ticks`: a synthetic market (geometric Brownian motion with jumps, fat tails and
//! regime switches) or a CSV replay, published to the tick partitions at a chosen rate; and the
//! small demo feed of entity updates `kitbash up` runs beside it ([`entity_updates`]).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use kitbash_client::Producer;
use kitbash_feynman::market::{CsvReplay, MarketSim};
use kitbash_runtime::CancellationToken;
use kitbash_schema::StreamName;
use kitbash_schema::messages::Tick;

/// What to publish.
#[derive(Clone, Debug)]
pub struct FeedOptions {
    /// Stop after this many ticks (`None` = until stopped).
    pub count: Option<u64>,
    /// Ticks per second (`None` = as fast as Redis takes them).
    pub rate: Option<f64>,
    /// Symbols of the synthetic market.
    pub symbols: Vec<String>,
    /// Replay this CSV (`symbol,price,size,trades,ts`) instead.
    pub csv: Option<std::path::PathBuf>,
    /// Seed of the synthetic market.
    pub seed: u64,
    /// Print progress to stderr every second.
    pub progress: bool,
}

/// The demo feeds' generator: xorshift64 from `seed` (made odd, never zero), deterministic so a
/// demo run can be repeated.
pub fn demo_rng(seed: u64) -> impl FnMut() -> u64 {
    let mut x = seed | 1;
    move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    }
}

/// Paces a demo feed at `rate` events per second in 50 ms steps (fractions carried over), until
/// `count` events or `stop`: [`Pacer::next`] says how many to send in this step.
#[derive(Debug)]
pub struct Pacer {
    per_step: f64,
    carry: f64,
    count: Option<u64>,
    sent: u64,
    interval: tokio::time::Interval,
    stop: CancellationToken,
}

impl Pacer {
    /// A pacer at `rate` per second, stopping after `count` (`None`: until `stop`).
    pub fn new(rate: f64, count: Option<u64>, stop: CancellationToken) -> Self {
        let step = Duration::from_millis(50);
        Self {
            per_step: (rate * step.as_secs_f64()).max(0.0),
            carry: 0.0,
            count,
            sent: 0,
            interval: tokio::time::interval(step),
            stop,
        }
    }

    /// Waits for the next step; how many events to send in it, or `None` when done.
    pub async fn next(&mut self) -> Option<usize> {
        if self.count.is_some_and(|c| self.sent >= c) {
            return None;
        }
        tokio::select! {
            _ = self.stop.cancelled() => return None,
            _ = self.interval.tick() => {}
        }
        self.carry += self.per_step;
        let n = self.carry.floor() as usize;
        self.carry -= n as f64;
        Some(n)
    }

    /// Counts `n` events as sent; returns the total so far.
    pub fn sent(&mut self, n: usize) -> u64 {
        self.sent += n as u64;
        self.sent
    }
}

fn now_s() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

/// Publishes ticks until `count`, the CSV's end, or `stop`. Returns how many were sent.
pub async fn ticks(
    producer: &Producer,
    opts: &FeedOptions,
    stop: CancellationToken,
) -> anyhow::Result<u64> {
    let mut csv: Option<std::vec::IntoIter<Tick>> = match &opts.csv {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
            Some(
                CsvReplay::parse_all(&text)
                    .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?
                    .into_iter(),
            )
        }
        None => None,
    };
    let mut sim = MarketSim::new(&opts.symbols, opts.seed).map_err(|e| anyhow::anyhow!("{e}"))?;
    let chunk_period = Duration::from_millis(20);
    let per_chunk = opts
        .rate
        .map_or(2_000.0, |r| (r * chunk_period.as_secs_f64()).max(1.0));
    let mut carry = 0.0;
    let started = Instant::now();
    let mut last_report = Instant::now();
    let mut sent: u64 = 0;
    let mut interval = tokio::time::interval(chunk_period);
    loop {
        if opts.rate.is_some() {
            tokio::select! {
                _ = stop.cancelled() => break,
                _ = interval.tick() => {}
            }
        } else if stop.is_cancelled() {
            break;
        }
        carry += per_chunk;
        let mut n = carry.floor() as u64;
        carry -= n as f64;
        if let Some(c) = opts.count {
            n = n.min(c - sent);
        }
        let mut by_stream: BTreeMap<StreamName, Vec<Tick>> = BTreeMap::new();
        let ts = now_s();
        let mut exhausted = false;
        for _ in 0..n {
            let t = match csv.as_mut() {
                Some(it) => match it.next() {
                    Some(t) => t,
                    None => {
                        exhausted = true;
                        break;
                    }
                },
                None => sim.next_tick(ts),
            };
            by_stream
                .entry(producer.tick_stream(&t.symbol))
                .or_default()
                .push(t);
        }
        for (s, batch) in by_stream {
            producer.publish_batch(s, &batch).await?;
            sent += batch.len() as u64;
        }
        if opts.progress && last_report.elapsed() >= Duration::from_secs(1) {
            let rate = sent as f64 / started.elapsed().as_secs_f64();
            eprintln!("feed: {sent} ticks sent ({rate:.0}/s)");
            last_report = Instant::now();
        }
        if exhausted || opts.count.is_some_and(|c| sent >= c) {
            break;
        }
    }
    if opts.progress {
        let secs = started.elapsed().as_secs_f64();
        eprintln!(
            "feed: done, {sent} ticks in {secs:.1} s ({:.0}/s)",
            sent as f64 / secs.max(1e-9)
        );
    }
    Ok(sent)
}

/// The demo feed of entity updates `kitbash up` runs: every `period`, a counter increment and a
/// merge patch to `quantum:status`, and a merge patch and an increment to `entity:claude:state`
/// and `entity:claude:counters`, through [`Producer::patch_entity`] (`entity_partitions` must be
/// `[entity] partitions`). Returns how many updates were sent when `stop` fires.
pub async fn entity_updates(
    producer: &Producer,
    entity_partitions: u32,
    period: Duration,
    stop: CancellationToken,
) -> anyhow::Result<u64> {
    use kitbash_schema::messages::{EntityOp, EntityTarget, EntityUpdate};
    use serde_json::json;
    const FOCUS: [&str; 6] = ["SPY", "QQQ", "AAPL", "MSFT", "NVDA", "BTC-USD"];
    const MOOD: [&str; 4] = ["curious", "focused", "calm", "playful"];
    let claude = |part: &str| EntityTarget::Entity {
        name: "claude".into(),
        part: part.into(),
    };
    let mut interval = tokio::time::interval(period);
    let mut sent = 0u64;
    let mut beat = 0usize;
    loop {
        tokio::select! {
            _ = stop.cancelled() => break,
            _ = interval.tick() => {}
        }
        let updates = [
            EntityUpdate::with_op(
                EntityTarget::Status,
                EntityOp::Increment,
                json!({"demo": {"updates": 1}}),
            ),
            EntityUpdate::merge(
                EntityTarget::Status,
                json!({"demo": {"mood": MOOD[beat % MOOD.len()], "at": now_s()}}),
            ),
            EntityUpdate::merge(
                claude("state"),
                json!({"attention": {"focus": FOCUS[beat % FOCUS.len()]}, "beat": beat}),
            ),
            EntityUpdate::with_op(claude("counters"), EntityOp::Increment, json!({"beats": 1})),
        ];
        for u in &updates {
            producer.patch_entity(u, entity_partitions).await?;
            sent += 1;
        }
        beat += 1;
    }
    Ok(sent)
}
