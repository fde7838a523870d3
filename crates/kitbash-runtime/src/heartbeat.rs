//! The fleet register: each instance refreshes `kitbash:heartbeat:{kind}:{instance}` (its
//! self-description, expiring after three periods) and its score in the `kitbash:fleet` sorted
//! set, so `kitbash status` lists the fleet with one `ZRANGE` instead of a `SCAN`.
//!
//! Beats are scored with Redis's clock (`TIME`), and liveness is judged against it too, so a
//! host whose clock runs ahead or behind neither looks alive forever nor dead at once.

use std::time::Duration;

use fred::prelude::*;
use fred::types::Expiration;
use kitbash_schema::messages::Heartbeat;
use kitbash_schema::{DaemonKind, Keys};
use tokio_util::sync::CancellationToken;

use crate::health::Health;
use crate::redis::Redis;

/// Entries of instances silent for this long are pruned from `kitbash:fleet`.
pub const PRUNE_AFTER_MS: i64 = 24 * 3600 * 1000;

/// The member name in `kitbash:fleet`.
pub fn fleet_member(kind: DaemonKind, instance: &str) -> String {
    format!("{}/{instance}", kind.name())
}

/// Members of the fleet register (`kind/instance`) that beat within `horizon_ms`, by Redis's
/// clock.
pub async fn live_members(
    client: &Client,
    keys: &Keys,
    horizon_ms: u64,
) -> Result<Vec<String>, fred::error::Error> {
    let now = crate::clock::server_now_ms(client).await?;
    client
        .zrangebyscore(
            keys.fleet(),
            (now - horizon_ms as i64) as f64,
            f64::INFINITY,
            false,
            None,
        )
        .await
}

/// Beats every `period` until `shutdown`, then removes the instance from the register. A
/// failed beat is logged at `warn` and counted in `kitbash_heartbeat_failures_total`.
#[allow(clippy::too_many_arguments)]
pub async fn run(
    redis: Redis,
    keys: Keys,
    mut beat: Heartbeat,
    served: crate::serve::Served,
    kind: DaemonKind,
    period: Duration,
    health: Health,
    metrics: crate::metrics::Metrics,
    shutdown: CancellationToken,
) {
    let key = keys.heartbeat(kind, &beat.instance);
    let fleet = keys.fleet();
    let member = fleet_member(kind, &beat.instance);
    let ttl_ms = (period.as_millis() as i64 * 3).max(1_000);
    crate::periodic::every(period, shutdown.clone(), || {
        beat.ready = health.ready();
        beat.serves = served.snapshot();
        beat.stats = served.stats();
        let mut beat = beat.clone();
        let (client, key, fleet, member) = (
            redis.client.clone(),
            key.clone(),
            fleet.clone(),
            member.clone(),
        );
        let metrics = metrics.clone();
        async move {
            let r: Result<(), fred::error::Error> = async {
                let now = crate::clock::server_now_ms(&client).await?;
                beat.beat_ms = now;
                let body = serde_json::to_string(&beat).unwrap_or_default();
                client
                    .set::<(), _, _>(&key, body, Some(Expiration::PX(ttl_ms)), None, false)
                    .await?;
                client
                    .zadd::<(), _, _>(
                        &fleet,
                        None,
                        None,
                        false,
                        false,
                        (now as f64, member.as_str()),
                    )
                    .await?;
                client
                    .zremrangebyscore::<(), _, _, _>(
                        &fleet,
                        f64::NEG_INFINITY,
                        (now - PRUNE_AFTER_MS) as f64,
                    )
                    .await?;
                Ok(())
            }
            .await;
            if let Err(e) = r {
                tracing::warn!(error = %e, "heartbeat failed; will retry");
                metrics.inc(
                    "kitbash_heartbeat_failures_total",
                    "Heartbeats that failed to reach Redis (the fleet register may lose this instance).",
                    &[],
                    1,
                );
            }
        }
    })
    .await;
    let _ = redis.client.del::<(), _>(&key).await;
    let _ = redis.client.zrem::<(), _, _>(&fleet, member.as_str()).await;
}
