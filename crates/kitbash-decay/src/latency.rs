//! `metrics:latency:p95` and `metrics:latency:p99` kept true: recomputed from the latency
//! histogram (`kitbash:metrics:latency:hist`, buckets 2% wide, see `kitbash_schema::reflex`)
//! that query events and `Reflex::metrics_record_query` fill. Every instance may run it: each
//! writes the same value for the same histogram.

use fred::prelude::*;
use kitbash_runtime::DaemonContext;
use kitbash_schema::Keys;
use kitbash_schema::reflex::latency_quantile;

/// The periodic task.
#[derive(Clone)]
pub struct LatencyMetrics {
    /// The daemon's command connection.
    client: Client,
    /// Key builder.
    keys: Keys,
}

impl std::fmt::Debug for LatencyMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LatencyMetrics").finish_non_exhaustive()
    }
}

impl LatencyMetrics {
    /// The task of one instance.
    pub fn new(ctx: &DaemonContext) -> Self {
        Self {
            client: ctx.redis.client.clone(),
            keys: ctx.keys.clone(),
        }
    }

    /// Reads the histogram and writes the two percentiles (ms, three decimals).
    pub async fn refresh(&self) {
        if let Err(e) = self.try_refresh().await {
            tracing::debug!(error = %e, "cannot refresh the latency metrics");
        }
    }

    async fn try_refresh(&self) -> Result<(), fred::error::Error> {
        let raw: std::collections::HashMap<String, u64> =
            self.client.hgetall(self.keys.latency_histogram()).await?;
        let buckets: Vec<(u32, u64)> = raw
            .into_iter()
            .filter_map(|(b, c)| Some((b.parse().ok()?, c)))
            .collect();
        if let (Some(p95), Some(p99)) = (
            latency_quantile(&buckets, 0.95),
            latency_quantile(&buckets, 0.99),
        ) {
            let pipe = self.client.pipeline();
            let _: () = pipe
                .set(
                    self.keys.metrics_latency_p95(),
                    format!("{p95:.3}"),
                    None,
                    None,
                    false,
                )
                .await?;
            let _: () = pipe
                .set(
                    self.keys.metrics_latency_p99(),
                    format!("{p99:.3}"),
                    None,
                    None,
                    false,
                )
                .await?;
            let _: Vec<fred::types::Value> = pipe.all().await?;
        }
        Ok(())
    }
}
