//! Keeps this instance's bank current: subscribed to `kitbash:grain-updates` (fast path, the
//! runtime's [`Subscriber`], whose gap reports trigger a check too) and polling
//! `kitbash:reflex:version` every `[ghost] poll_ms` (a belt to the braces: a lost message costs
//! at most one poll). On a new version it reloads grains and hat and swaps the
//! snapshot in. Every instance does this (each searches its own bank); recomputing the ghosts of
//! the hot queries is the leader's job ([`crate::recompute`]).

use std::time::Duration;

use kitbash_runtime::subscriber::{Notice, Subscriber};
use kitbash_runtime::{DaemonContext, RuntimeError, TaskCtx};
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
    /// Where the subscriber counts its gaps.
    metrics: kitbash_runtime::metrics::Metrics,
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
            metrics: ctx.metrics.clone(),
            poll_ms: ctx.config.ghost.poll_ms,
        }
    }

    /// Watches until `task.shutdown`: a long-running task ([`kitbash_runtime::task`]) with the
    /// runtime's default restart backoff. Its readiness check (`task grain-watch`) turns true
    /// once subscribed and the bank checked; a gap the subscriber reports (a reconnect, a
    /// lagged receiver) triggers a check at once, as an announcement does. A subscriber that
    /// stops is an error: the task restarts, resubscribing.
    pub async fn run(&self, task: TaskCtx) -> Result<(), RuntimeError> {
        let channels = [self.keys.channel_grain_updates()];
        let open = Subscriber::open(&self.redis, &self.metrics, "grain-updates", &channels, &[]);
        let mut sub = tokio::select! {
            biased;
            _ = task.shutdown.cancelled() => return Ok(()),
            s = open => s?,
        };
        let period = Duration::from_millis(self.poll_ms);
        let mut tick = tokio::time::interval(period);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            // Round at least every poll: a check that never returns starves the watchdog.
            task.beat(period);
            tokio::select! {
                biased;
                _ = task.shutdown.cancelled() => return Ok(()),
                notice = sub.recv() => match notice {
                    // A message or a gap: either way the version may have moved.
                    Some(Notice::Message { .. } | Notice::Gap(_)) => {}
                    None => {
                        return Err(RuntimeError::Reply {
                            command: "SUBSCRIBE",
                            detail: "the grain-updates subscriber stopped".into(),
                        });
                    }
                },
                _ = tick.tick() => {}
            }
            if let Err(e) = self.check().await {
                tracing::warn!(error = %e, "cannot reload the grain bank; retried next poll");
            }
            task.ready.set(true);
        }
    }

    /// Reloads when the version moved (or nothing is loaded yet). Returns whether it reloaded.
    pub async fn check(&self) -> Result<bool, LoadError> {
        Ok(self.bank.current().await?.1)
    }
}
