//! The one backoff policy of the runtime: every retry loop (consumer errors, acknowledgements,
//! transient batch failures, task restarts, store retries) waits through a [`Backoff`].
//!
//! Exponential from `min` to `max`, each delay scaled by a random factor in
//! `[1 - jitter, 1]` ("equal jitter" toward shorter waits, so a fleet that failed together does not
//! retry in lock-step), and cut short by the daemon's shutdown token. [`Backoff::reset`] after a
//! success returns to `min`.

use std::time::Duration;

use rand::Rng;
use tokio_util::sync::CancellationToken;

/// Exponential backoff with jitter. `Default` is 50 ms doubling to 2 s with 20 % jitter.
#[derive(Clone, Debug)]
pub struct Backoff {
    /// First delay.
    pub min: Duration,
    /// Longest delay.
    pub max: Duration,
    /// Fraction of each delay that may be taken off at random (0 = none, 1 = full jitter).
    pub jitter: f64,
    /// Failures since the last [`Backoff::reset`]; read by callers that log or count attempts.
    attempt: u32,
}

impl Default for Backoff {
    fn default() -> Self {
        Self::new(Duration::from_millis(50), Duration::from_secs(2))
    }
}

impl Backoff {
    /// Doubling from `min` to `max`, 20 % jitter.
    pub fn new(min: Duration, max: Duration) -> Self {
        Self {
            min,
            max: max.max(min),
            jitter: 0.2,
            attempt: 0,
        }
    }

    /// The same policy without jitter (deterministic delays, for tests and docs).
    pub fn without_jitter(mut self) -> Self {
        self.jitter = 0.0;
        self
    }

    /// Failures counted since the last reset.
    pub fn attempts(&self) -> u32 {
        self.attempt
    }

    /// The delay before the next attempt, counting one more failure.
    pub fn next_delay(&mut self) -> Duration {
        let base = self
            .min
            .saturating_mul(1u32 << self.attempt.min(20))
            .min(self.max);
        self.attempt = self.attempt.saturating_add(1);
        let jitter = self.jitter.clamp(0.0, 1.0);
        if jitter == 0.0 {
            return base;
        }
        let f = 1.0 - jitter * rand::rng().random::<f64>();
        base.mul_f64(f)
    }

    /// Waits the next delay, or until `shutdown`. Returns `false` when shutdown cut it short.
    pub async fn wait(&mut self, shutdown: &CancellationToken) -> bool {
        let d = self.next_delay();
        tokio::select! {
            biased;
            _ = shutdown.cancelled() => false,
            _ = tokio::time::sleep(d) => true,
        }
    }

    /// Back to the shortest delay.
    pub fn reset(&mut self) {
        self.attempt = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_to_the_cap_and_resets() {
        let mut b =
            Backoff::new(Duration::from_millis(10), Duration::from_millis(50)).without_jitter();
        let d: Vec<u64> = (0..5).map(|_| b.next_delay().as_millis() as u64).collect();
        assert_eq!(d, [10, 20, 40, 50, 50]);
        assert_eq!(b.attempts(), 5);
        b.reset();
        assert_eq!(b.next_delay(), Duration::from_millis(10));
    }

    #[test]
    fn jitter_only_shortens_within_its_fraction() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_millis(100));
        for _ in 0..200 {
            let d = b.next_delay();
            assert!(
                d <= Duration::from_millis(100) && d >= Duration::from_millis(80),
                "{d:?}"
            );
        }
    }
}
