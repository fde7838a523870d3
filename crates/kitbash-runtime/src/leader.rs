//! Leader tasks: exactly one live instance of a daemon kind runs the task, by lease
//! (`kitbash:leader:{kind}:{task}`); when that instance dies or stalls, another takes over
//! after at most one lease period.
//!
//! A lease is not a lock: an instance paused past its lease can wake up still believing it
//! leads. Each run of the task therefore gets the [`LeaderTerm`] (lease key and token), and a
//! task whose effects must never be applied twice checks the token in the same script as its
//! writes (`redis.call('GET', lease) == token`) — see [`LeaderTerm::FENCE_LUA`].

use std::future::Future;
use std::time::{Duration, Instant};

use crate::daemon::DaemonContext;
use crate::lease;

/// The current leadership: pass it to the scripts that must be fenced.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LeaderTerm {
    /// The lease key.
    pub key: String,
    /// This term's token (unique per acquisition).
    pub token: String,
}

impl LeaderTerm {
    /// Lua that returns early with `0` unless `KEYS[1]` (the lease) holds `ARGV[1]` (the
    /// token); prepend it to a script whose first key and argument are the lease and token.
    pub const FENCE_LUA: &'static str =
        "if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end\n";
}

/// Runs `task` every `period` on the one instance holding the lease, until shutdown.
pub async fn run<F, Fut>(
    ctx: DaemonContext,
    name: &'static str,
    period: Duration,
    lease_ms: u64,
    mut task: F,
) where
    F: FnMut(LeaderTerm) -> Fut + Send,
    Fut: Future<Output = ()> + Send,
{
    let key = ctx.keys.leader(ctx.kind, name);
    let client = ctx.redis.client.clone();
    let shutdown = ctx.signals.shutdown.clone();
    let step = Duration::from_millis((lease_ms / 3).max(50)).min(period);
    let mut term: Option<LeaderTerm> = None;
    let mut next_run = Instant::now();
    let labels = [("task", name)];
    let beat = format!("leader {name}");
    loop {
        // A task (or a lease command) that never returns stops the beats and the watchdog.
        ctx.health.beat(&beat, step.max(period));
        // Keep (or win) the lease.
        term = match term.take() {
            Some(t) => match lease::renew(&client, &key, &t.token, lease_ms).await {
                Ok(true) => Some(t),
                Ok(false) => {
                    tracing::warn!(task = name, "leadership lost");
                    None
                }
                Err(e) => {
                    tracing::warn!(task = name, error = %e, "cannot renew leadership");
                    Some(t) // the lease may still be ours; the fence protects the task's writes
                }
            },
            None => {
                let token = lease::token(&ctx.instance);
                match lease::acquire(&client, &key, &token, lease_ms).await {
                    Ok(true) => {
                        tracing::info!(task = name, "leadership acquired");
                        next_run = Instant::now();
                        Some(LeaderTerm {
                            key: key.clone(),
                            token,
                        })
                    }
                    _ => None,
                }
            }
        };
        ctx.metrics.set(
            "kitbash_leader",
            "1 while this instance runs the leader task.",
            &labels,
            if term.is_some() { 1.0 } else { 0.0 },
        );
        if let Some(t) = &term
            && Instant::now() >= next_run
        {
            next_run = Instant::now() + period;
            task(t.clone()).await;
        }
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = tokio::time::sleep(step) => {}
        }
    }
    ctx.health.forget_beat(&beat);
    if let Some(t) = term {
        let _ = lease::release(&client, &key, &t.token).await;
        tracing::info!(task = name, "leadership released");
    }
}
