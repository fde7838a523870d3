//! Keeps this instance's bank current: subscribed to `kitbash:grain-updates` (fast path) and
//! polling `kitbash:reflex:version` every `[ghost] poll_ms` (pub/sub loses messages across a
//! reconnect or when the reader lags). On a new version it reloads grains and hat and swaps the
//! snapshot in. Every instance does this (each searches its own bank); recomputing the ghosts of
//! the hot queries is the leader's job ([`crate::recompute`]).

use std::time::Duration;

use fred::prelude::*;
use kitbash_runtime::{CancellationToken, DaemonContext};
use kitbash_schema::Keys;

use crate::bank::{Bank, LoadError};

/// The watcher of one instance.
#[derive(Clone)]
pub struct Watcher {
    /// `[redis]`, for the subscriber connection.
    redis: kitbash_runtime::config::RedisConfig,
    /// Key builder.
    keys: Keys,
    /// The instance's bank.
    bank: Bank,
    /// Stops the watcher.
    shutdown: CancellationToken,
    /// `[ghost] poll_ms`.
    poll_ms: u64,
}

impl std::fmt::Debug for Watcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Watcher").finish_non_exhaustive()
    }
}

impl Watcher {
    /// The watcher of the daemon in `ctx`, reloading `bank`.
    pub fn new(ctx: &DaemonContext, bank: Bank) -> Self {
        Self {
            redis: ctx.config.redis.clone(),
            keys: ctx.keys.clone(),
            bank,
            shutdown: ctx.signals.shutdown.clone(),
            poll_ms: ctx.config.ghost.poll_ms,
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
        let mut tick = tokio::time::interval(Duration::from_millis(self.poll_ms));
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

    /// Reloads when the version moved (or nothing is loaded yet). Returns whether it reloaded.
    pub async fn check(&self) -> Result<bool, LoadError> {
        Ok(self.bank.current().await?.1)
    }
}
