//! The example's long-running tasks: a pub/sub watcher and a group-less stream tail.
//!
//! Both run under [`kitbash_runtime::Components::task`] with the runtime's default restart
//! backoff, get the shutdown token and a readiness handle (`task announcements`,
//! `task entity-changes` in `/readyz`), and return `Ok` soon after shutdown.

use std::time::Duration;

use kitbash_runtime::config::RedisConfig;
use kitbash_runtime::metrics::Metrics;
use kitbash_runtime::subscriber::{Notice, Subscriber};
use kitbash_runtime::tail::{Tail, TailReader};
use kitbash_runtime::{Backoff, DaemonContext, Redis, RuntimeError, TaskCtx};
use kitbash_schema::StreamName;

/// Counts the reflex grain-update announcements (`kitbash:grain-updates`) in
/// `kitbash_example_announcements_total`. A gap (a reconnect, a lagged receiver: announcements
/// may have been missed) is what a real watcher reloads its state on; the runtime counts it in
/// `kitbash_pubsub_gaps_total{name="example-announcements"}` and this one logs it.
#[derive(Clone, Debug)]
pub struct Announcements {
    redis: RedisConfig,
    channel: String,
    metrics: Metrics,
}

impl Announcements {
    /// The watcher of this daemon.
    pub fn new(ctx: &DaemonContext) -> Self {
        Self {
            redis: ctx.config.redis.clone(),
            channel: ctx.keys.channel_grain_updates(),
            metrics: ctx.metrics.clone(),
        }
    }

    /// Watches until shutdown; a subscriber that stops is an error (the task restarts).
    pub async fn run(&self, task: TaskCtx) -> Result<(), RuntimeError> {
        let channels = [self.channel.clone()];
        let open = Subscriber::open(
            &self.redis,
            &self.metrics,
            "example-announcements",
            &channels,
            &[],
        );
        let mut sub = tokio::select! {
            biased;
            _ = task.shutdown.cancelled() => return Ok(()),
            s = open => s?,
        };
        task.ready.set(true);
        loop {
            let notice = tokio::select! {
                biased;
                _ = task.shutdown.cancelled() => return Ok(()),
                n = sub.recv() => n,
            };
            match notice {
                Some(Notice::Message { .. }) => self.metrics.inc(
                    "kitbash_example_announcements_total",
                    "Grain-update announcements the example saw.",
                    &[],
                    1,
                ),
                Some(Notice::Gap(gap)) => {
                    tracing::info!(
                        reason = gap.reason.label(),
                        "announcements may have been missed"
                    );
                }
                None => {
                    return Err(RuntimeError::Reply {
                        command: "SUBSCRIBE",
                        detail: "the announcements subscriber stopped".into(),
                    });
                }
            }
        }
    }
}

/// Follows `entity-changes` from the moment it starts, without a consumer group (every instance
/// sees every entry), counting entries in `kitbash_example_changes_seen_total` and entries it
/// could not see (trimmed before it read them, or a stream that was replaced) in
/// `kitbash_example_changes_missed_total`.
#[derive(Clone, Debug)]
pub struct Changes {
    redis: Redis,
    key: String,
    metrics: Metrics,
}

impl Changes {
    /// The tail of this daemon.
    pub fn new(ctx: &DaemonContext) -> Self {
        Self {
            redis: ctx.redis.clone(),
            key: ctx.keys.stream(StreamName::EntityChanges),
            metrics: ctx.metrics.clone(),
        }
    }

    /// Follows until shutdown. A transient Redis error (a restart, a timeout) is waited out
    /// under the runtime's backoff with the position kept, not ready meanwhile; any other
    /// error ends the run (the task restarts, from the newest entry).
    pub async fn run(&self, task: TaskCtx) -> Result<(), RuntimeError> {
        let mut tail = TailReader::new(
            &self.redis,
            self.key.clone(),
            "$".into(),
            256,
            Duration::from_millis(500),
        );
        let mut backoff = Backoff::default();
        loop {
            // Each round blocks at most 500 ms: a read that never returns is a stuck loop
            // (systemd's watchdog starves). A subscriber loop, idle by nature, does not beat.
            task.beat(Duration::from_millis(500));
            let next = tokio::select! {
                biased;
                _ = task.shutdown.cancelled() => return Ok(()),
                n = tail.next() => n,
            };
            match next {
                Ok(found) => {
                    backoff.reset();
                    task.ready.set(true);
                    self.count(found);
                }
                Err(e) if e.is_transient() => {
                    tracing::warn!(error = %e, position = tail.position(), "cannot read entity-changes now; retrying");
                    task.ready.set(false);
                    if !backoff.wait(&task.shutdown).await {
                        return Ok(());
                    }
                }
                Err(e) => return Err(e),
            }
        }
    }

    fn count(&self, found: Tail) {
        match found {
            Tail::Entries(entries) => self.metrics.inc(
                "kitbash_example_changes_seen_total",
                "entity-changes entries the example's tail read.",
                &[],
                entries.len() as u64,
            ),
            Tail::NoNews => {}
            Tail::Trimmed {
                asked,
                first_available,
            } => {
                tracing::warn!(%asked, ?first_available, "entity-changes was trimmed past the tail's position");
                self.missed();
            }
            Tail::Behind { asked, last } => {
                tracing::warn!(%asked, %last, "entity-changes was replaced; reading it from its start");
                self.missed();
            }
        }
    }

    fn missed(&self) {
        self.metrics.inc(
            "kitbash_example_changes_missed_total",
            "Times the example's tail found entries it could not read (trimmed or replaced).",
            &[],
            1,
        );
    }
}
