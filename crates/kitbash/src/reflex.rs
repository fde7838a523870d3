//! `kitbash grains …`, `kitbash hat …` and `kitbash feed queries`: the reflex path's shared
//! data (seed 000) and a demo query feed, on top of `kitbash_client::reflex`.

use std::path::Path;

use fred::prelude::*;
use kitbash_client::Producer;
use kitbash_client::reflex::{Reflex, parse_grains, query_hash};
use kitbash_runtime::CancellationToken;
use kitbash_schema::messages::QueryEvent;
use kitbash_schema::{Keys, StreamName};

/// `config/demo/grains.jsonl` as built into the binary (200 grains of 256 trits), used when the
/// configuration directory has no sample file.
pub const BUILT_IN_SAMPLE: &str = include_str!("../../../config/demo/grains.jsonl");

/// The sample grain file under the configuration directory (`config/demo/grains.jsonl`).
pub fn sample_grains(config_dir: &Path) -> std::path::PathBuf {
    config_dir.join("demo").join("grains.jsonl")
}

/// Imports a grain file all or nothing; a bad line is an error naming its number.
pub async fn grains_import(reflex: &Reflex, path: &Path, dim: usize) -> anyhow::Result<usize> {
    let text =
        std::fs::read_to_string(path).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    let grains = parse_grains(&text, dim)
        .map_err(|e| anyhow::anyhow!("{}: {e}; nothing imported", path.display()))?;
    reflex.grains_import(&grains).await?;
    Ok(grains.len())
}

/// The grains as text lines (`id axiom weight popcount ternary_value confidence`) or JSON.
pub async fn grains_list(reflex: &Reflex, json: bool) -> anyhow::Result<String> {
    let list = reflex.grains_list().await?;
    let mut out = String::new();
    for (id, sig) in list {
        if json {
            out.push_str(&serde_json::json!({"id": id, "sig": sig}).to_string());
        } else {
            match sig {
                Some(s) => out.push_str(&format!(
                    "{id:>8}  {:<20} weight {:<6} popcount {:<4} ternary_value {:+.3} confidence {:.3}",
                    s.axiom, s.weight, s.popcount, s.ternary_value, s.confidence
                )),
                None => out.push_str(&format!("{id:>8}  (no signature record)")),
            }
        }
        out.push('\n');
    }
    Ok(out)
}

/// Writes the seed's hats unless they exist, and the sample grains unless some grains exist.
pub async fn demo_setup(
    client: &Client,
    keys: &Keys,
    reflex: &Reflex,
    config_dir: &Path,
    dim: usize,
) -> anyhow::Result<String> {
    let mut notes = Vec::new();
    let current: Option<String> = client.get(keys.hat_current()).await?;
    if current.is_none() {
        reflex.hat_init().await?;
        notes.push("the seed's five hats".to_owned());
    }
    let grains: u64 = client.scard(keys.grain_index()).await?;
    if grains == 0 {
        let path = sample_grains(config_dir);
        if path.exists() {
            let n = grains_import(reflex, &path, dim).await?;
            notes.push(format!("{n} sample grains from {}", path.display()));
        } else {
            // No configuration directory: the copy built into the binary.
            let grains = parse_grains(BUILT_IN_SAMPLE, dim)
                .map_err(|e| anyhow::anyhow!("built-in sample grains: {e}"))?;
            reflex.grains_import(&grains).await?;
            notes.push(format!("{} built-in sample grains", grains.len()));
        }
    }
    Ok(notes.join(", "))
}

/// A demo query mix: 500 query texts drawn with a Zipf-like skew (a few hot, a long tail).
pub fn demo_texts() -> Vec<String> {
    const TOPICS: [&str; 25] = [
        "DNA",
        "entropy",
        "photosynthesis",
        "a black hole",
        "inflation",
        "a prime number",
        "resonance",
        "a neural network",
        "plate tectonics",
        "the immune system",
        "gravity",
        "a market maker",
        "quantum tunnelling",
        "osmosis",
        "a fourier transform",
        "evolution",
        "a hash function",
        "climate",
        "a transistor",
        "the krebs cycle",
        "topology",
        "game theory",
        "a supernova",
        "protein folding",
        "language",
    ];
    const FORMS: [&str; 20] = [
        "what is {}?",
        "explain {}",
        "how does {} work?",
        "why does {} matter?",
        "history of {}",
        "{} for beginners",
        "{} in one sentence",
        "examples of {}",
        "is {} real?",
        "who discovered {}?",
        "{} vs chaos",
        "measure {}",
        "define {}",
        "{} and thermodynamics",
        "teach me {}",
        "{} misconceptions",
        "model {}",
        "{} in biology",
        "{} in finance",
        "the future of {}",
    ];
    let mut out = Vec::new();
    for f in FORMS {
        for t in TOPICS {
            out.push(f.replace("{}", t));
        }
    }
    out
}

/// Publishes demo query events at `rate` per second until `count` or `stop`. Returns how many.
pub async fn queries(
    producer: &Producer,
    rate: f64,
    count: Option<u64>,
    seed: u64,
    stop: CancellationToken,
) -> anyhow::Result<u64> {
    let texts = demo_texts();
    let mut next = crate::feed::demo_rng(seed);
    let mut pacer = crate::feed::Pacer::new(rate, count, stop);
    let mut sent = 0u64;
    while let Some(n) = pacer.next().await {
        let mut batch = Vec::with_capacity(n);
        for _ in 0..n {
            // Zipf-like: the index is the square of a uniform draw, so low ranks are hot.
            let u = (next() % 10_000) as f64 / 10_000.0;
            let text = &texts[((u * u * u) * texts.len() as f64) as usize % texts.len()];
            let g = 1 + next() % 200;
            let latency = 0.2 + (next() % 1000) as f64 / 250.0 * ((next() % 4) as f64 + 0.2);
            batch.push(QueryEvent {
                text: text.clone(),
                hash: Some(query_hash(text)),
                ts: std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_secs_f64())
                    .unwrap_or(0.0),
                grains: vec![g, 1 + (g * 7) % 200],
                latency_ms: Some(latency),
            });
        }
        if !batch.is_empty() {
            producer.publish_batch(StreamName::Queries, &batch).await?;
            sent = pacer.sent(batch.len());
        }
    }
    Ok(sent)
}
