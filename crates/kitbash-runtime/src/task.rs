//! Long-running tasks: work that lives as long as the daemon (a pub/sub watcher, a WebSocket
//! hub), run by [`crate::Components::task`].
//!
//! A task gets a [`TaskCtx`]: the shutdown token (it must return soon after it fires — the
//! daemon's grace period, `[consumer] grace_ms`, bounds the whole drain) and a [`Readiness`]
//! handle for its own `/readyz` check, `task {name}`, which starts false and which the task
//! sets once it is in place. What happens when the task fails is its [`Restart`] policy:
//!
//! - [`Restart::Never`]: an error (or a panic) stops the daemon, so the service manager restarts
//!   it whole; returning `Ok` ends the task and nothing else.
//! - [`Restart::Backoff`]: an error, a panic, or an `Ok` return before shutdown restarts the task
//!   after a [`crate::Backoff`] delay (jittered, doubling from `min` to `max`; back to `min`
//!   after a run that lasted longer than `max`). Meanwhile its check is false and each restart
//!   is counted in `kitbash_task_restarts_total{task}`.
//!
//! A task with a main loop calls [`TaskCtx::beat`] each time round, with how long its next
//! round may take: the loop is then watched like the consumers' (`task {name}` in
//! [`Health::stuck`]), so one that stops coming round — a call that never returns — starves
//! systemd's watchdog and gets the unit restarted. The beat is forgotten when a run ends (a
//! restarting task is not ready, but not stuck either).

use std::future::Future;
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use crate::backoff::Backoff;
use crate::error::RuntimeError;
use crate::health::Health;
use crate::metrics::Metrics;

/// What happens when a long-running task fails.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Restart {
    /// The daemon stops on the task's error.
    Never,
    /// The task is restarted after a backoff from `min` doubling to `max`.
    Backoff {
        /// First delay.
        min: Duration,
        /// Longest delay.
        max: Duration,
    },
}

impl Restart {
    /// Restart after 100 ms, doubling to 10 s: the policy for watchers whose failures are
    /// Redis's (a lost connection), not the daemon's.
    pub const DEFAULT_BACKOFF: Restart = Restart::Backoff {
        min: Duration::from_millis(100),
        max: Duration::from_secs(10),
    };
}

/// The handle of one task's readiness check (`task {name}` in `/readyz`).
#[derive(Clone, Debug)]
pub struct Readiness {
    health: Health,
    name: String,
}

impl Readiness {
    /// A handle for the check `name` in `health`.
    pub(crate) fn new(health: Health, name: String) -> Self {
        Self { health, name }
    }

    /// Sets the check.
    pub fn set(&self, ok: bool) {
        self.health.set(self.name.clone(), ok);
    }

    /// The check's name as `/readyz` lists it.
    pub fn name(&self) -> &str {
        &self.name
    }
}

/// What a task run is given.
#[derive(Clone, Debug)]
pub struct TaskCtx {
    /// Fires on SIGTERM/SIGINT (or when another component failed): return soon after.
    pub shutdown: CancellationToken,
    /// The task's readiness check, false at the start of every run.
    pub ready: Readiness,
    /// Runs of this task before this one (0 at the first start).
    pub restarts: u32,
    /// The health registry the beats go to, and the beat's name (`task {name}`).
    beats: (Health, String),
}

impl TaskCtx {
    /// The task's main loop came round; its next round is due within `cadence` (its poll
    /// period, a blocking read's timeout). From the first beat on, the loop counts as stuck
    /// once it overruns `cadence` by `[fleet] stuck_after_ms`.
    pub fn beat(&self, cadence: Duration) {
        self.beats.0.beat(&self.beats.1, cadence);
    }
}

/// The check name of task `name`.
pub fn check_name(name: &str) -> String {
    format!("task {name}")
}

/// Runs `task` under `policy` until shutdown (see the module doc).
pub(crate) async fn run<F, Fut>(
    name: &'static str,
    policy: Restart,
    health: Health,
    metrics: Metrics,
    shutdown: CancellationToken,
    mut task: F,
) -> Result<(), RuntimeError>
where
    F: FnMut(TaskCtx) -> Fut + Send + 'static,
    Fut: Future<Output = Result<(), RuntimeError>> + Send + 'static,
{
    let ready = Readiness::new(health.clone(), check_name(name));
    let mut backoff = match policy {
        Restart::Never => None,
        Restart::Backoff { min, max } => Some(Backoff::new(min, max)),
    };
    let mut restarts = 0u32;
    loop {
        ready.set(false);
        let ctx = TaskCtx {
            shutdown: shutdown.clone(),
            ready: ready.clone(),
            restarts,
            beats: (health.clone(), ready.name().to_owned()),
        };
        let started = Instant::now();
        // Spawned, so a panic is an error of this run rather than of the daemon's task set.
        let outcome = match tokio::spawn(task(ctx)).await {
            Ok(r) => r,
            Err(e) => Err(RuntimeError::Reply {
                command: "task",
                detail: format!("task {name} panicked: {e}"),
            }),
        };
        health.forget_beat(ready.name());
        if shutdown.is_cancelled() {
            health.clear(ready.name());
            return outcome;
        }
        let Some(backoff) = backoff.as_mut() else {
            if outcome.is_ok() {
                health.clear(ready.name());
            }
            return outcome;
        };
        match &outcome {
            Ok(()) => tracing::warn!(task = name, "task returned before shutdown; restarting"),
            Err(e) => {
                tracing::warn!(task = name, error = %e, "task failed; restarting after a backoff")
            }
        }
        metrics.inc(
            "kitbash_task_restarts_total",
            "Restarts of long-running tasks after an error, a panic or an early return.",
            &[("task", name)],
            1,
        );
        if started.elapsed() > backoff.max {
            backoff.reset();
        }
        restarts += 1;
        if !backoff.wait(&shutdown).await {
            health.clear(ready.name());
            return Ok(());
        }
    }
}
