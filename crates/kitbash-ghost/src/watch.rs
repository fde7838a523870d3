//! Keeps the bank current: subscribed to `kitbash:grain-updates` (fast path) and polling
//! `kitbash:reflex:version` every `[ghost] poll_ms` (pub/sub loses messages across a reconnect
//! or when the reader lags). On a new version it reloads grains and hat, swaps the snapshot in,
//! and recomputes the ghosts of every query hot now (resonance above `[decay] threshold`, read
//! off the resonance index as one range query), in batched searches. Recomputed ghosts do not
//! count `ghost:activations` (that counts crossings).

use std::time::Duration;

use fred::prelude::*;
use fred::types::Value;
use kitbash_runtime::metrics::Metrics;
use kitbash_runtime::{CancellationToken, DaemonContext};
use kitbash_schema::{Keys, ttl};

use crate::bank::{LoadError, Shared, Snapshot};
use crate::writer::{ghost_value, search};

/// The watcher of one instance.
#[derive(Clone)]
pub struct Watcher {
    /// The daemon's command connection.
    client: Client,
    /// `[redis]`, for the subscriber connection.
    redis: kitbash_runtime::config::RedisConfig,
    /// Key builder.
    keys: Keys,
    /// Metrics behind `/metrics`.
    metrics: Metrics,
    /// The bank in use.
    shared: Shared,
    /// Stops the watcher.
    shutdown: CancellationToken,
    /// `[ghost]`.
    ghost: kitbash_runtime::config::GhostConfig,
    /// `ln([decay] factor)`.
    ln_factor: f64,
    /// `[decay] threshold`.
    threshold: f64,
}

impl std::fmt::Debug for Watcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Watcher").finish_non_exhaustive()
    }
}

impl Watcher {
    /// The watcher of the daemon in `ctx`, installing snapshots into `shared`.
    pub fn new(ctx: &DaemonContext, shared: Shared) -> Self {
        Self {
            client: ctx.redis.client.clone(),
            redis: ctx.config.redis.clone(),
            keys: ctx.keys.clone(),
            metrics: ctx.metrics.clone(),
            shared,
            shutdown: ctx.signals.shutdown.clone(),
            ghost: ctx.config.ghost.clone(),
            ln_factor: ctx.config.decay.factor.ln(),
            threshold: ctx.config.decay.threshold,
        }
    }

    /// Watches until shutdown.
    pub async fn run(&self) {
        let sub = kitbash_runtime::redis::builder(&self.redis)
            .and_then(|b| {
                let mut b = b;
                b.with_performance_config(|p| p.broadcast_channel_capacity = 1024);
                Ok(b.build_subscriber_client()?)
            })
            .ok();
        let mut rx = None;
        if let Some(sub) = &sub {
            rx = Some(sub.message_rx());
            let _guard = sub.manage_subscriptions();
            let ready = async {
                sub.init().await?;
                sub.subscribe(self.keys.channel_grain_updates()).await
            };
            tokio::select! {
                _ = self.shutdown.cancelled() => return,
                r = ready => if let Err(e) = r {
                    tracing::warn!(error = %e, "cannot subscribe to grain updates; polling only");
                },
            }
        }
        let mut tick = tokio::time::interval(Duration::from_millis(self.ghost.poll_ms));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let announced = async {
                match rx.as_mut() {
                    Some(rx) => {
                        let _ = rx.recv().await;
                    }
                    None => std::future::pending::<()>().await,
                }
            };
            tokio::select! {
                _ = self.shutdown.cancelled() => break,
                _ = announced => {}
                _ = tick.tick() => {}
            }
            if let Err(e) = self.check().await {
                tracing::warn!(error = %e, "cannot reload the grain bank; retried next poll");
            }
        }
        if let Some(sub) = sub {
            // Redis may be gone already (stopped right after us): do not wait long for it.
            let _ = tokio::time::timeout(Duration::from_secs(1), sub.quit()).await;
        }
    }

    /// Reloads and recomputes when the version moved (or nothing is loaded yet). Returns
    /// whether it reloaded.
    pub async fn check(&self) -> Result<bool, LoadError> {
        let version: Option<u64> = self.client.get(self.keys.reflex_version()).await?;
        if let Some(s) = self.shared.get()
            && s.version == version.unwrap_or(0)
        {
            return Ok(false);
        }
        let snap = Snapshot::load(&self.client, &self.keys, self.ghost.dim).await?;
        tracing::info!(
            grains = snap.bank.len(),
            skipped = snap.skipped,
            hat = snap.hat_name.as_deref().unwrap_or("-"),
            version = snap.version,
            "grain bank loaded"
        );
        self.metrics.set(
            "kitbash_ghost_grains",
            "Grains in the in-memory bank.",
            &[],
            snap.bank.len() as f64,
        );
        self.shared.set(snap);
        let n = self.recompute().await?;
        self.metrics.inc(
            "kitbash_ghost_recomputed_total",
            "Ghosts of hot queries recomputed after a grain or hat change.",
            &[],
            n,
        );
        Ok(true)
    }

    /// Recomputes the ghost of every query hot now; returns how many were written.
    pub async fn recompute(&self) -> Result<u64, LoadError> {
        let Some(snap) = self.shared.get() else {
            return Ok(0);
        };
        if snap.bank.is_empty() {
            return Ok(0);
        }
        let cycle: Option<u64> = self.client.get(self.keys.decay_cycle()).await?;
        let bound = self.threshold.ln() - cycle.unwrap_or(0) as f64 * self.ln_factor;
        let hot: Vec<String> = self
            .client
            .zrevrangebyscore(
                self.keys.resonance_index(),
                "+inf",
                bound,
                false,
                Some((0, self.ghost.recompute_max as i64)),
            )
            .await?;
        let secs = ttl::GHOST.secs().unwrap_or(3600) as i64;
        let mut written = 0;
        for chunk in hot.chunks(self.ghost.recompute_batch) {
            let pipe = self.client.pipeline();
            for h in chunk {
                let _: () = pipe.hget(self.keys.cms(h), "text").await?;
            }
            let texts: Vec<Option<String>> = pipe.all().await?;
            let present: Vec<(&String, String)> = chunk
                .iter()
                .zip(texts)
                .filter_map(|(h, t)| Some((h, t?)))
                .collect();
            let refs: Vec<&str> = present.iter().map(|(_, t)| t.as_str()).collect();
            let hits = search(&snap, &refs, self.ghost.dim, self.ghost.top_k);
            let pipe = self.client.pipeline();
            for ((h, _), hit) in present.iter().zip(&hits) {
                if hit.is_empty() {
                    continue;
                }
                let _: () = pipe
                    .set(
                        self.keys.ghost(h),
                        ghost_value(hit),
                        Some(Expiration::EX(secs)),
                        None,
                        false,
                    )
                    .await?;
                written += 1;
            }
            let _: Vec<Value> = pipe.all().await?;
        }
        Ok(written)
    }
}
