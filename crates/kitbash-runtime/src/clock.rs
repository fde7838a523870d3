//! Clocks: this host's (`now_ms`, for records that say when something happened here) and
//! Redis's (`server_now_ms`, `TIME`, for everything the fleet must agree on — heartbeats,
//! leases, TTL sweeps — so hosts with skewed clocks still agree).

use fred::prelude::*;

/// Current Unix time in ms.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// Redis's clock, Unix ms (`TIME`).
pub async fn server_now_ms(client: &Client) -> Result<i64, fred::error::Error> {
    let cmd =
        fred::types::CustomCommand::new_static("TIME", fred::types::ClusterHash::Random, false);
    let t: Vec<String> = client.custom(cmd, Vec::<fred::types::Value>::new()).await?;
    let secs: i64 = t.first().and_then(|s| s.parse().ok()).unwrap_or(0);
    let micros: i64 = t.get(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    Ok(secs * 1000 + micros / 1000)
}
