//! `decay_cycle_1m`: one fenced decay cycle over 1M index entries against rewriting every
//! record, and `refresh_hottest_1k_ms`.

use std::time::{Duration, Instant};

use fred::prelude::*;
use fred::types::Value;
use kitbash_runtime::DaemonContext;
use kitbash_runtime::leader::LeaderTerm;
use kitbash_schema::reflex::Layout;
use kitbash_schema::{DaemonKind, Keys};

use crate::bench::Record;
use crate::bench::redis::Target;

use super::*;
use crate::bench::rng::Rng;

pub(super) async fn decay_cycle(t: &Target, long: bool) -> anyhow::Result<Vec<Record>> {
    let cfg = config(&t.url, Layout::Seed);
    let client =
        kitbash_runtime::redis::connect_client(&cfg.redis, Duration::from_secs(10)).await?;
    let _: () = client.flushall(false).await?;
    let keys = Keys::default();
    let n: u64 = 1_000_000;
    eprintln!("reflex: loading {n} index entries and resonance keys …");
    let mut rng = Rng::new(11);
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
