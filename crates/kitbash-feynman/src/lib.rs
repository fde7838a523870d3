//! `kitbash-feynman`: the physics writer daemon (seed 001).
//!
//! # Layout
//! - [`physics`]: the physics vector over a rolling tick window (the formulas).
//! - [`market`]: a synthetic market and CSV replay for `kitbash feed ticks` and tests.
//! - [`daemon`]: partition balancing through leases; one worker per owned partition.
//! - [`partition`]: a partition's worker: restore, read in order, apply, commit.
//! - [`commit`]: the atomic checkpoint + effects script (the fence against stale owners).
//! - [`lease`]: lease acquire / renew / release.
//!
//! **Invariant:** a tick partition is applied by at most one instance at a time, in stream
//! order, and every commit is a compare-and-set on the partition checkpoint.

pub mod commit;
pub mod daemon;
pub mod lease;
pub mod market;
pub mod partition;
pub mod physics;

use kitbash_runtime::{Config, DaemonContext, RuntimeError, Signals};
use kitbash_schema::DaemonKind;

/// Runs one feynman instance until `signals.shutdown` (the binary's and the tests' entry).
pub async fn run(config: Config, signals: Signals) -> Result<(), RuntimeError> {
    let ctx = DaemonContext::start(DaemonKind::Feynman, config, signals).await?;
    daemon::run(ctx).await
}
