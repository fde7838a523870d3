//! Readiness checks shared between the loops that set them and the admin endpoint that
//! reports them.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, PoisonError};

/// Named readiness checks; the instance is ready when every registered check is true.
#[derive(Clone, Debug, Default)]
pub struct Health {
    checks: Arc<Mutex<BTreeMap<String, bool>>>,
}

impl Health {
    /// A registry with no checks.
    pub fn new() -> Self {
        Self::default()
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
