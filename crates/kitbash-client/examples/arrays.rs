//! Array storage (seed 003): a working-memory pattern, a spike train found by time window, and
//! attention weights, plus memory statistics per family. numpy can read each stored `npy` field
//! (see docs/WIRE.md). Runs against `KITBASH__REDIS__URL` (default `redis://127.0.0.1:6379`).

use std::time::Duration;

use kitbash_client::array::{ArrayData, NdArray};
use kitbash_client::arrays::ArrayStore;
use kitbash_schema::{KeyFamily, Keys, Namespace};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let url =
        std::env::var("KITBASH__REDIS__URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
    let cfg = kitbash_runtime::config::RedisConfig {
        url,
        ..Default::default()
    };
    let client = kitbash_runtime::redis::connect_client(&cfg, Duration::from_secs(5)).await?;
    let keys = Keys::new(Namespace::new(format!("example{}", std::process::id()))?);
    let store = ArrayStore::new(client.clone(), keys.clone());

    let pattern = NdArray::new(
        vec![100, 50],
        ArrayData::F64((0..5000).map(|i| (i as f64).sin()).collect()),
    )?;
    store
        .put_working_memory(
            "visual_pattern_123",
            &pattern,
            1.7e9,
            &serde_json::json!({"source": "visual_cortex"}),
        )
        .await?;
    let back = store.get_working_memory("visual_pattern_123").await?;
    println!(
        "working-memory pattern shape {:?}",
        back.map(|w| w.pattern.shape().to_vec())
    );

    let spikes = NdArray::new(
        vec![1000, 100],
        ArrayData::I8((0..100_000).map(|i| i8::from(i % 17 == 0)).collect()),
    )?;
    for t in 1..=3 {
        store
            .put_spike_train(
                t * 1_000_000,
                &spikes,
                &(0..100).collect::<Vec<u64>>(),
                Duration::from_secs(60),
            )
            .await?;
    }
    let window = store.spike_trains_between(1_500_000, 3_000_000, 10).await?;
    println!(
        "spike trains in [1.5 s, 3 s]: {:?}",
        window.iter().map(|t| t.timestamp_us).collect::<Vec<_>>()
    );

    store
        .put_attention(
            "visual_attention",
            &NdArray::from_f64(vec![1.0 / 256.0; 256]),
            1.7e9,
        )
        .await?;
    println!(
        "attention weights: {:?}",
        store
            .get_attention("visual_attention")
            .await?
            .map(|a| a.weights.shape().to_vec())
    );

    for s in store.memory_stats().await? {
        println!(
            "  {:<10} {:>3} keys {:>9} bytes",
            s.family.name(),
            s.keys,
            s.bytes
        );
    }
    for f in [
        KeyFamily::WorkingMemory,
        KeyFamily::Spikes,
        KeyFamily::Attention,
    ] {
        kitbash_client::families::clear(&client, &keys, f, false).await?;
    }
    println!("cleaned up");
    Ok(())
}
