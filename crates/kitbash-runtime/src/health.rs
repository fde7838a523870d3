//! Readiness checks shared between the loops that set them and the admin endpoint that
//! reports them.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

/// Named readiness checks; the instance is ready when every registered check is true. Also the
/// main loops' beats, which feed systemd's watchdog ([`crate::notify`]).
#[derive(Clone, Debug, Default)]
pub struct Health {
    checks: Arc<Mutex<BTreeMap<String, bool>>>,
    /// Per main loop: its last beat and its cadence (how long one round may take).
    beats: Arc<Mutex<BTreeMap<String, (Instant, Duration)>>>,
    /// How long a loop may overrun its cadence before it counts as stuck (`[fleet]
    /// stuck_after_ms`); zero = the default, 30 s.
    stuck_after: Duration,
}

/// [`Health::stuck`]'s margin when none is configured.
pub const DEFAULT_STUCK_AFTER: Duration = Duration::from_secs(30);

impl Health {
    /// A registry with no checks.
    pub fn new() -> Self {
        Self::default()
    }

    /// A registry whose loops count as stuck once `stuck_after` past their cadence.
    pub fn with_stuck_after(stuck_after: Duration) -> Self {
        Self {
            stuck_after,
            ..Self::default()
        }
    }

    /// A main loop `name` came round; its next round is due within `cadence` (a blocking
    /// read's `BLOCK`, a periodic task's period). Registers the loop on its first beat.
    pub fn beat(&self, name: &str, cadence: Duration) {
        let mut beats = self.beats.lock().unwrap_or_else(PoisonError::into_inner);
        match beats.get_mut(name) {
            Some(b) => *b = (Instant::now(), cadence),
            None => {
                beats.insert(name.to_owned(), (Instant::now(), cadence));
            }
        }
    }

    /// Loop `name` ended (shutdown, a partition handed over): it is no longer watched.
    pub fn forget_beat(&self, name: &str) {
        self.beats
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(name);
    }

    /// The loops that have not come round within their cadence plus the stuck margin, at `now`.
    pub fn stuck(&self, now: Instant) -> Vec<String> {
        let margin = if self.stuck_after.is_zero() {
            DEFAULT_STUCK_AFTER
        } else {
            self.stuck_after
        };
        self.beats
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .filter(|(_, (last, cadence))| now.saturating_duration_since(*last) > *cadence + margin)
            .map(|(n, _)| n.clone())
            .collect()
    }

    /// Sets (and registers) a check.
    pub fn set(&self, name: impl Into<String>, ok: bool) {
        self.checks
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(name.into(), ok);
    }

    /// Forgets a check (a partition that moved to another instance is no longer ours to
    /// report).
    pub fn clear(&self, name: &str) {
        self.checks
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(name);
    }

    /// All checks and whether all pass.
    pub fn snapshot(&self) -> (bool, Vec<(String, bool)>) {
        let checks = self.checks.lock().unwrap_or_else(PoisonError::into_inner);
        let list: Vec<(String, bool)> = checks.iter().map(|(k, v)| (k.clone(), *v)).collect();
        (list.iter().all(|(_, ok)| *ok), list)
    }

    /// Whether all registered checks pass.
    pub fn ready(&self) -> bool {
        self.snapshot().0
    }
}

/// The readiness check the daemon's Redis watcher keeps (a `PING` every 500 ms answered within
/// 250 ms); `/healthz` reports it too.
pub const REDIS_CHECK: &str = "redis";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_loop_that_stops_beating_is_stuck_and_a_forgotten_one_is_not() {
        let h = Health::with_stuck_after(Duration::from_millis(100));
        h.beat("consume queries", Duration::from_millis(500));
        let t0 = Instant::now();
        assert!(h.stuck(t0).is_empty());
        let later = t0 + Duration::from_millis(700);
        assert_eq!(h.stuck(later), vec!["consume queries".to_owned()]);
        h.beat("consume queries", Duration::from_millis(500));
        assert!(h.stuck(Instant::now()).is_empty());
        h.forget_beat("consume queries");
        assert!(h.stuck(later + Duration::from_secs(10)).is_empty());
    }
}
