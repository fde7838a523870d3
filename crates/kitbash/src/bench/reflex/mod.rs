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
//!   through fred, and the exact `EVALSHA` replayed by `redis-benchmark`). The floor of the
//!   open loop: the hot lookup's exact `EVALSHA` alone at the same arrivals, through fred
//!   (`hot_evalsha_open_fred_*`) and through a bare pipelined socket with no client library
//!   (`hot_evalsha_open_bare_*`: one task writes what has queued and reads the replies).
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
//!
//! # Layout
//! - this file: the shared load (grains, texts, the reference CMS records) and `run`;
//! - `lookup`: the lookup and memory figures per layout (`layout_run`);
//! - `decay`: the decay cycle against rewriting every record;
//! - `ghost`: crossing → ghost latency;
//! - `probe`: where the time goes (CPU, run-queue waits, command stats, memory).

mod decay;
mod ghost;
mod lookup;
pub(crate) mod probe;

use decay::decay_cycle;
use ghost::crossing_to_ghost;
use lookup::layout_run;

use fred::prelude::*;
use kitbash_client::reflex::{Grain, Reflex};
use kitbash_runtime::{Config, DaemonContext};
use kitbash_schema::Keys;
use kitbash_schema::messages::{GrainSig, QueryEvent};
use kitbash_schema::reflex::Layout;
use kitbash_ternary::TernaryVector;

use crate::bench::redis::{Target, target};
use crate::bench::{BenchOptions, Record};

use super::rng::Rng;

const SUITE: &str = "reflex";

/// Arrivals of an open loop's warm-up (half a second at 10k/s), not recorded.
const WARMUP_LOOKUPS: usize = 5_000;

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
    let mut rng = Rng::new(0x9e37_79b9_7f4a_7c15);
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
        let markers: Vec<String> = chunk.iter().map(|(id, _)| keys.hit_marker(id)).collect();
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

/// The lookup and memory figures of both layouts (or the one `KITBASH_BENCH_REFLEX_LAYOUT` names).
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
