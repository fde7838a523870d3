//! Periodic tasks that stop with the daemon: decay cycles, heartbeats, lease renewals.

use std::future::Future;
use std::time::Duration;

use tokio::time::MissedTickBehavior;
use tokio_util::sync::CancellationToken;

/// Calls `tick` every `period` until `shutdown`; a slow tick delays the next one instead of
/// bunching calls up. The first call happens at once.
pub async fn every<F, Fut>(period: Duration, shutdown: CancellationToken, mut tick: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = ()>,
{
    let mut interval = tokio::time::interval(period);
    interval.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        // Biased: once shutdown is signalled no further tick starts, even when the interval is
        // ready at the same moment (an unbiased select would pick either at random).
        tokio::select! {
            biased;
            _ = shutdown.cancelled() => return,
            _ = interval.tick() => tick().await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Shutdown arrives during a tick that outlasts the period, so when the tick ends the next
    /// one is already due as well: no further tick may start. Seen red without `biased` (an
    /// unbiased select picks the due tick about half the time).
    #[tokio::test]
    async fn no_tick_starts_after_shutdown() {
        let ticks = std::sync::Arc::new(std::sync::atomic::AtomicU32::new(0));
        for _ in 0..32 {
            let stop = CancellationToken::new();
            let (t, s) = (ticks.clone(), stop.clone());
            every(Duration::from_millis(1), stop, move || {
                t.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                s.cancel();
                tokio::time::sleep(Duration::from_millis(5))
            })
            .await;
        }
        assert_eq!(
            ticks.load(std::sync::atomic::Ordering::Relaxed),
            32,
            "one tick per run"
        );
    }
}
