//! Caches (seed 004): a memory token fetched twice (the second fetch hits Redis) and a
//! relevance score. Runs against `KITBASH__REDIS__URL` (default `redis://127.0.0.1:6379`).

use std::time::Duration;

use kitbash_client::cache::{MemoryTokenCache, ScoreCache};
use kitbash_schema::{Keys, Namespace};

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
    let tokens = MemoryTokenCache::new(client.clone(), keys.clone());
    let load =
        || async { Ok::<_, std::io::Error>(br#"{"text":"the meeting moved to 3pm"}"#.to_vec()) };
    let (_, first) = tokens.fetch("m42", load).await?;
    let (token, second) = tokens.fetch("m42", load).await?;
    println!(
        "token m42: first fetch {first:?}, second {second:?}: {}",
        String::from_utf8_lossy(&token)
    );
    let scores = ScoreCache::new(client, keys);
    let (score, how) = scores
        .fetch("alice", "ctx1", "m42", || async {
            Ok::<_, std::io::Error>(0.8125)
        })
        .await?;
    println!(
        "score of m42 for alice in ctx1 = {score} ({how:?}); stats {:?}",
        tokens.stats()
    );
    tokens.invalidate("m42").await?;
    scores.invalidate("alice", "ctx1", "m42").await?;
    Ok(())
}
