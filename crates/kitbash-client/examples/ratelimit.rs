//! Rate limiting (seed 004): 101 requests against a 100-per-minute limit; the last is refused,
//! with the headers an HTTP service would send. Runs against `KITBASH__REDIS__URL`
//! (default `redis://127.0.0.1:6379`) in a throwaway namespace.

use std::time::Duration;

use kitbash_client::ratelimit::{Limits, RateLimiter};
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
    let limiter = RateLimiter::new(client, keys, Limits::default().with_tier("pro", 1000));
    let mut admitted = 0;
    for _ in 0..100 {
        admitted += u32::from(limiter.check("alice", "free", "/search").await?.allowed);
    }
    let d = limiter.check("alice", "free", "/search").await?;
    println!(
        "admitted {admitted} of 100; request 101 allowed: {}",
        d.allowed
    );
    for (name, value) in d.headers() {
        println!("  {name}: {value}");
    }
    let pro = limiter.check("alice", "pro", "/other").await?;
    println!(
        "a pro-tier request elsewhere: allowed {}, {} remaining",
        pro.allowed, pro.remaining
    );
    limiter.reset("alice", "/search").await?;
    limiter.reset("alice", "/other").await?;
    println!("windows reset");
    Ok(())
}
