//! `kitbash bench memory`: loads seed 000's reflex-path keys (10k CMS records, 1k grains, the
//! seed's layout and TTLs) into a fresh Redis, measures the `used_memory` delta, and compares it
//! with the seed's own estimate (`SeedEstimate`, 9.2 MB) and with kitbash's allocation model
//! (`RedisMemoryModel`).

use std::time::Duration;

use fred::prelude::*;
use fred::types::{Expiration, Value};
use kitbash_schema::budget::{BudgetParams, RedisMemoryModel, SeedEstimate};
use kitbash_schema::{Keys, ttl};

use super::redis::target;
use super::rng::Rng;
use super::{BenchOptions, Record};

/// `used_memory` from `INFO memory`.
pub async fn used_memory(client: &Client) -> anyhow::Result<u64> {
    let info: String = client.info(Some(fred::types::InfoKind::Memory)).await?;
    info.lines()
        .find_map(|l| l.strip_prefix("used_memory:"))
        .and_then(|v| v.trim().parse().ok())
        .ok_or_else(|| anyhow::anyhow!("INFO memory has no used_memory"))
}

/// Writes the seed's layout for `p.queries` queries and `p.grains` grains (the shapes the
/// budget model describes: 64-hex hashes, 74-byte CMS JSON, 3 grains per query, `"0.726"`
/// resonance, ghosts for one query in ten, D/8-byte planes, 5 hats, 6 counters).
pub async fn load_seed_layout(
    client: &Client,
    keys: &Keys,
    p: &BudgetParams,
) -> anyhow::Result<()> {
    let mut rng = Rng::new(0x9e37_79b9_7f4a_7c15);
    let secs = |t: ttl::Ttl| t.secs().unwrap_or(0) as i64;
    let mut pipe = client.pipeline();
    let now = 1_766_318_400i64;
    for q in 0..p.queries {
        let h = rng.hex64();
        let record = format!(
            r#"{{"count":47,"resonance_score":0.87,"last_accessed":"2026-02-12T20:00:{:02}Z"}}"#,
            q % 60
        );
        let _: () = pipe
            .set(
                keys.cms(&h),
                record,
                Some(Expiration::EX(secs(ttl::CMS_RECORD))),
                None,
                false,
            )
            .await?;
        let grains: Vec<(f64, String)> = (0..3)
            .map(|i| ((now + i) as f64, (rng.next() % p.grains.max(1)).to_string()))
            .collect();
        let _: () = pipe
            .zadd(keys.cms_grains(&h), None, None, false, false, grains)
            .await?;
        let _: () = pipe
            .expire(keys.cms_grains(&h), secs(ttl::CMS_GRAINS), None)
            .await?;
        let _: () = pipe
            .set(
                keys.cms_resonance(&h),
                "0.726",
                Some(Expiration::EX(secs(ttl::RESONANCE))),
                None,
                false,
            )
            .await?;
        if q % 10 == 0 {
            let _: () = pipe
                .set(
                    keys.ghost(&h),
                    "42,17,88",
                    Some(Expiration::EX(secs(ttl::GHOST))),
                    None,
                    false,
                )
                .await?;
        }
        if q % 1000 == 999 {
            // `all()` keeps the commands (fred pipelines are reusable): a fresh one per batch.
            let _: Vec<Value> = std::mem::replace(&mut pipe, client.pipeline())
                .all()
                .await?;
        }
    }
    let plane = (p.dims / 8) as usize;
    for g in 0..p.grains {
        let sig = format!(
            r#"{{"popcount":156,"axiom":"thermodynamics","weight":1.58,"ternary_value":0.12,"confidence":0.6{:02}}}"#,
            g % 100
        );
        let _: () = pipe.set(keys.grain_sig(g), sig, None, None, false).await?;
        let plus: Vec<u8> = (0..plane).map(|_| rng.next() as u8).collect();
        let minus: Vec<u8> = (0..plane).map(|_| rng.next() as u8).collect();
        let _: () = pipe
            .set(
                keys.grain_bits_plus(g),
                Value::Bytes(plus.into()),
                None,
                None,
                false,
            )
            .await?;
        let _: () = pipe
            .set(
                keys.grain_bits_minus(g),
                Value::Bytes(minus.into()),
                None,
                None,
                false,
            )
            .await?;
        let _: () = pipe.sadd(keys.grain_index(), g.to_string()).await?;
    }
    for hat in [
        "analytical",
        "creative",
        "empathetic",
        "deliberative",
        "neutral",
    ] {
        let mask: Vec<u8> = (0..32).map(|_| rng.next() as u8).collect();
        let _: () = pipe
            .set(
                keys.hat_mask(hat),
                Value::Bytes(mask.into()),
                None,
                None,
                false,
            )
            .await?;
    }
    let _: () = pipe
        .set(keys.hat_current(), "analytical", None, None, false)
        .await?;
    for k in [
        keys.metrics_queries_count(),
        keys.metrics_grains_lookups(),
        keys.metrics_cache_hits(),
        keys.ghost_activations(),
    ] {
        let _: () = pipe.set(k, 4827, None, None, false).await?;
    }
    for k in [keys.metrics_latency_p95(), keys.metrics_latency_p99()] {
        let _: () = pipe.set(k, "8.3", None, None, false).await?;
    }
    let _: Vec<Value> = pipe.all().await?;
    Ok(())
}

/// Loads the seed layout into an empty server and returns the `used_memory` delta.
pub async fn measure(client: &Client, keys: &Keys, p: &BudgetParams) -> anyhow::Result<u64> {
    let before = used_memory(client).await?;
    load_seed_layout(client, keys, p).await?;
    // Let the main dictionary finish its incremental rehash before reading.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let after = used_memory(client).await?;
    Ok(after.saturating_sub(before))
}

/// Runs the suite (always on a private server: the load needs an empty keyspace).
pub async fn run(opts: &BenchOptions) -> anyhow::Result<Vec<Record>> {
    let private = BenchOptions {
        redis_url: None,
        ..opts.clone()
    };
    let t = target(&private)?;
    let cfg = kitbash_runtime::config::RedisConfig {
        url: t.url.clone(),
        ..Default::default()
    };
    let client = kitbash_runtime::redis::connect_client(&cfg, Duration::from_secs(10)).await?;
    let p = BudgetParams::seed_layout();
    eprintln!(
        "memory: loading {} CMS records and {} grains …",
        p.queries, p.grains
    );
    let measured = measure(&client, &Keys::default(), &p).await?;
    let seed_bytes = SeedEstimate::default().total_mb() * 1024.0 * 1024.0;
    let model = RedisMemoryModel::default().estimate(&p).total_bytes;
    let _ = client.quit().await;
    Ok(vec![
        Record::new(
            "memory",
            "seed_layout_10k_1k_bytes",
            measured as f64,
            "B",
            seed_bytes,
        )
        .with("baseline_kind", "the seed's own estimate (9.2 MB)")
        .with("model_bytes", model)
        .with(
            "model_ratio",
            (measured as f64 / model as f64 * 1000.0).round() / 1000.0,
        )
        .with("target_bytes", 4 * 1024 * 1024),
    ])
}
