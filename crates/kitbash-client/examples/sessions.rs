//! Sessions (seed 004): log in, read the session back, check and rotate the CSRF token, log
//! out. Runs against `KITBASH__REDIS__URL` (default `redis://127.0.0.1:6379`).

use std::time::Duration;

use kitbash_client::session::SessionStore;
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
    let sessions = SessionStore::new(client, keys);
    let s = sessions
        .create("alice", serde_json::json!({"role": "admin"}))
        .await?;
    println!("session created; CSRF token {}…", &s.csrf_token[..8]);
    let back = sessions.get("alice").await?;
    println!("read back: {:?}", back.map(|s| s.data));
    println!(
        "right token accepted: {}",
        sessions.verify_csrf("alice", &s.csrf_token).await?
    );
    println!(
        "wrong token accepted: {}",
        sessions.verify_csrf("alice", "forged").await?
    );
    let rotated = sessions.rotate_csrf("alice").await?;
    println!("token rotated: {}", rotated.is_some());
    println!("logged out: {}", sessions.destroy("alice").await?);
    Ok(())
}
