//! Pub/sub channel names (before the namespace is applied; use [`crate::Keys`] to get the
//! final names).

/// Physics updates, seed 001 §3.1.
pub const STATE_UPDATE: &str = "state_update";
/// Trade signals, seed 001 §3.2.
pub const TRADE_SIGNALS: &str = "trade_signals";
/// Quantum-memory updates, seed 002.
pub const QUANTUM_UPDATES: &str = "quantum:updates";
/// Grain bank changes (insert/update/remove of a grain), read by ghost.
pub const GRAIN_UPDATES: &str = "kitbash:grain-updates";
/// Fleet-wide reload request, the pub/sub twin of SIGHUP.
pub const RELOAD: &str = "kitbash:reload";
