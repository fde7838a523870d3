//! Retries with exponential backoff for idempotent operations (array storage, seed 003):
//! connection failures and timeouts are retried; a reply from Redis — even an error reply — is
//! an answer and is never retried.

use std::future::Future;
use std::time::Duration;

use crate::ratelimit::is_connection_error;

/// How often and how patiently to retry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Attempts in all, the first included (at least 1).
    pub attempts: u32,
    /// Delay before the second attempt; doubled for each next one (seed 003: 100 ms).
    pub initial: Duration,
    /// Longest delay.
    pub max: Duration,
}

impl Default for RetryPolicy {
    /// The seed's: 3 attempts, 100 ms then 200 ms.
    fn default() -> Self {
        Self {
            attempts: 3,
            initial: Duration::from_millis(100),
            max: Duration::from_secs(2),
        }
    }
}

impl RetryPolicy {
    /// The delay before attempt `n + 1` (n ≥ 1).
    pub fn delay(&self, n: u32) -> Duration {
        let factor = 1u32.checked_shl(n.saturating_sub(1)).unwrap_or(u32::MAX);
        self.initial.saturating_mul(factor).min(self.max)
    }

    /// Runs `op` until it returns anything but a connection error, or attempts run out.
    ///
    /// ```
    /// # tokio_test_block(async {
    /// use std::time::Duration;
    /// use kitbash_client::retry::RetryPolicy;
    /// let p = RetryPolicy { attempts: 4, initial: Duration::from_millis(100), max: Duration::from_millis(250) };
    /// assert_eq!([p.delay(1), p.delay(2), p.delay(3)],
    ///            [Duration::from_millis(100), Duration::from_millis(200), Duration::from_millis(250)]);
    /// let v: Result<u8, fred::error::Error> = p.run(|| async { Ok(7) }).await;
    /// assert_eq!(v.ok(), Some(7));
    /// # });
    /// # fn tokio_test_block(f: impl std::future::Future<Output = ()>) {
    /// #     tokio::runtime::Builder::new_current_thread().enable_time().build().map(|rt| rt.block_on(f)).ok();
    /// # }
    /// ```
    pub async fn run<T, F, Fut>(&self, mut op: F) -> Result<T, fred::error::Error>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, fred::error::Error>>,
    {
        let mut attempt = 1;
        loop {
            match op().await {
                Err(e) if is_connection_error(&e) && attempt < self.attempts.max(1) => {
                    tokio::time::sleep(self.delay(attempt)).await;
                    attempt += 1;
                }
                other => return other,
            }
        }
    }
}
