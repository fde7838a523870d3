//! `kitbash-entity`: the entity updater daemon (seed 002) — ordered, atomic changes to the
//! quantum memory's JSON documents (`quantum:status`, `quantum:session:current`,
//! `quantum:daily:{date}`, `quantum:work:summary24h`, `entity:{name}:{part}`).
//!
//! # Layout
//! - [`document`]: the operations (RFC 7396 merge patch, increments, replace, delete) in Rust.
//! - [`store`]: the storage seam ([`store::DocumentStore`]) and the JSON-string store with its
//!   compare-and-set commit script.
//! - [`partition`]: the partition logic run by the runtime's partitioned component.
//! - [`migrate`]: `kitbash migrate DIR`, importing a `quantum_states/` tree through the store.
//!
//! Every entity instance also keeps `entity-changes` bounded (its trim owner, see
//! `StreamName::trim_owner`): every `[entity] trim_interval_ms` it trims the stream near
//! `changes_max` through the runtime's safe trim (never past what a group — the archive, once
//! it runs — has not acknowledged), and measures the partitions' dead-letter streams against
//! the alarm ([`kitbash_runtime::bounds::Bounds`]). The partitions themselves are trimmed by
//! their workers (`stream_max`, never past the checkpoint's `snap_id`). Each document's timeline
//! (`{key}:timeline`) is not a work stream: its commit caps it exactly at `timeline_max`.
//!
//! **Invariant:** a document changes only through [`store::DocumentStore::commit`], a
//! compare-and-set on its version and last applied entry; updates of one document are applied in
//! the order they entered its partition stream, each exactly once.

pub mod document;
pub mod migrate;
pub mod partition;
pub mod store;

use std::time::Duration;

use kitbash_runtime::bounds::Bounds;
use kitbash_runtime::{Components, Config, DaemonContext, RuntimeError, Signals};
use kitbash_schema::{DaemonKind, StreamName};

/// What an entity instance runs: the entity partitions, and the bounds of `entity-changes`
/// (its trim) and of the partitions' dead letters (their alarm).
pub fn components(ctx: &DaemonContext) -> Components {
    let cfg = ctx.config.entity.clone();
    let store =
        store::StringStore::new(ctx.redis.client.clone(), ctx.keys.clone(), cfg.timeline_max);
    let bounds = Bounds::of(ctx)
        .trim(StreamName::EntityChanges, cfg.changes_max)
        .watch_dead_letters((0..cfg.partitions).map(StreamName::EntityPart));
    let period = Duration::from_millis(cfg.trim_interval_ms);
    let logic = partition::Documents::new(cfg, ctx.keys.clone(), store, ctx.metrics.clone());
    let spec = logic.spec();
    Components::new(ctx).partitioned(spec, logic).every(
        "entity-changes bounds",
        period,
        move || bounds.clone().run_owned(),
    )
}

/// Runs one entity instance until `signals.shutdown` (the binary's and the tests' entry).
pub async fn run(config: Config, signals: Signals) -> Result<(), RuntimeError> {
    kitbash_runtime::daemon::run(DaemonKind::Entity, config, signals, components).await
}

/// Whether every entity partition's checkpoint has reached the end of its stream (tests,
/// benchmarks and operators waiting for a backlog to drain).
pub async fn caught_up(
    client: &fred::prelude::Client,
    keys: &kitbash_schema::Keys,
    partitions: u32,
) -> Result<bool, RuntimeError> {
    use fred::prelude::*;
    for p in 0..partitions {
        let s = kitbash_schema::StreamName::EntityPart(p);
        let last: fred::types::Value = client.xrevrange(keys.stream(s), "+", "-", Some(1)).await?;
        let Some(last) = kitbash_runtime::entries::parse_entries("XREVRANGE", &last)?
            .into_iter()
            .next()
        else {
            continue;
        };
        let cp: Option<String> = client
            .hget(keys.checkpoint(s), kitbash_schema::Keys::CHECKPOINT_LAST_ID)
            .await?;
        if cp.as_deref() != Some(last.id.as_str()) {
            return Ok(false);
        }
    }
    Ok(true)
}
