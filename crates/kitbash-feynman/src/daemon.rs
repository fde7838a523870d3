//! The feynman daemon: balances tick partitions across live instances through leases and runs
//! one [`crate::partition`] worker per owned partition.
//!
//! Every `lease_ms / 3` the balancer renews its leases (stopping workers whose lease was lost),
//! counts live feynman instances from the fleet register, and aims at `ceil(P / live)`
//! partitions: it takes free partitions while under target (or any partition left free for more
//! than two lease periods, so a stale fleet view cannot strand one) and hands extras back when
//! over target. A handed-back partition's worker commits a final snapshot before the lease is
//! released, so the next owner resumes exactly where it stopped.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use fred::prelude::*;
use kitbash_runtime::{DaemonContext, RuntimeError};
use kitbash_schema::DaemonKind;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::lease;
use crate::partition::{self, Shared};

struct Owned {
    /// Stops the partition's worker.
    cancel: CancellationToken,
    /// Handed back for rebalancing: the worker is finishing its batch. The lease is still
    /// renewed until it stops, so no other instance starts on the partition meanwhile.
    releasing: bool,
}

/// Partitions this instance is working on (not being handed back).
fn active(owned: &BTreeMap<u32, Owned>) -> usize {
    owned.values().filter(|o| !o.releasing).count()
}

/// Runs the daemon until `ctx.signals.shutdown`; then stops every worker (each commits its
/// batch in hand and a snapshot) and releases the leases.
pub async fn run(ctx: DaemonContext) -> Result<(), RuntimeError> {
    let cfg = ctx.config.clone();
    let shared = Arc::new(Shared {
        config: cfg.clone(),
        keys: ctx.keys.clone(),
        client: ctx.redis.client.clone(),
        instance: ctx.instance.clone(),
        metrics: ctx.metrics.clone(),
    });
    let shutdown = ctx.signals.shutdown.clone();
    let partitions = cfg.feynman.partitions;
    let lease_ms = cfg.feynman.lease_ms;
    let me = ctx.instance.clone();
    let offset = me
        .bytes()
        .fold(0u32, |a, b| a.wrapping_mul(31).wrapping_add(u32::from(b)));
    let mut owned: BTreeMap<u32, Owned> = BTreeMap::new();
    let mut workers: JoinSet<(u32, Result<(), partition::PartitionError>)> = JoinSet::new();
    let mut free_since: HashMap<u32, Instant> = HashMap::new();
    let mut tick = tokio::time::interval(Duration::from_millis((lease_ms / 3).max(100)));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ctx.health.set("partitions balanced", false);

    loop {
        tokio::select! {
            _ = shutdown.cancelled() => break,
            Some(done) = workers.join_next() => {
                if let Ok((p, result)) = done {
                    if let Err(e) = &result {
                        tracing::warn!(partition = p, error = %e, "partition worker stopped");
                    }
                    // Handed back, lost, or failed: the worker has committed what it will, so the
                    // lease can go (a no-op when it is no longer ours). The next round — ours or
                    // another instance's — starts a fresh worker from the checkpoint.
                    owned.remove(&p);
                    let _ = lease::release(&shared.client, &shared.keys.partition_lease(p), &me).await;
                }
            }
            _ = tick.tick() => {
                if let Err(e) = balance(&ctx, &shared, &mut owned, &mut workers, &mut free_since, partitions, offset).await {
                    ctx.health.set("partitions balanced", false);
                    tracing::warn!(error = %e, "partition balancing failed; retrying");
                } else {
                    ctx.health.set("partitions balanced", true);
                }
                ctx.metrics.set("kitbash_feynman_partitions_owned", "Tick partitions this instance owns.", &[], owned.len() as f64);
            }
        }
    }
    for o in owned.values() {
        o.cancel.cancel();
    }
    while let Some(done) = workers.join_next().await {
        if let Ok((p, Err(e))) = done {
            tracing::warn!(partition = p, error = %e, "partition worker stopped with an error during shutdown");
        }
    }
    for p in owned.keys() {
        let _ = lease::release(&shared.client, &shared.keys.partition_lease(*p), &me).await;
    }
    tracing::info!(released = owned.len(), "feynman stopped; leases released");
    ctx.finish().await;
    Ok(())
}

async fn live_instances(ctx: &DaemonContext) -> Result<usize, fred::error::Error> {
    let now = kitbash_runtime::heartbeat::now_ms();
    let horizon = now - 3 * ctx.config.fleet.heartbeat_ms as i64;
    let members: Vec<String> = ctx
        .redis
        .client
        .zrangebyscore(ctx.keys.fleet(), horizon as f64, f64::INFINITY, false, None)
        .await?;
    let prefix = format!("{}/", DaemonKind::Feynman.name());
    let mut n = members.iter().filter(|m| m.starts_with(&prefix)).count();
    let me = kitbash_runtime::heartbeat::fleet_member(DaemonKind::Feynman, &ctx.instance);
    if !members.contains(&me) {
        n += 1; // our own first heartbeat may not have landed yet
    }
    Ok(n.max(1))
}

#[allow(clippy::too_many_arguments)]
async fn balance(
    ctx: &DaemonContext,
    shared: &Arc<Shared>,
    owned: &mut BTreeMap<u32, Owned>,
    workers: &mut JoinSet<(u32, Result<(), partition::PartitionError>)>,
    free_since: &mut HashMap<u32, Instant>,
    partitions: u32,
    offset: u32,
) -> Result<(), RuntimeError> {
    let client = &shared.client;
    let me = &ctx.instance;
    let lease_ms = ctx.config.feynman.lease_ms;
    // 1. Renew; stop workers whose lease is gone.
    let mut lost = Vec::new();
    for p in owned.keys() {
        if !lease::renew(client, &shared.keys.partition_lease(*p), me, lease_ms).await? {
            lost.push(*p);
        }
    }
    for p in lost {
        if let Some(o) = owned.remove(&p) {
            tracing::warn!(partition = p, "lease lost; stopping the partition worker");
            o.cancel.cancel();
        }
    }
    // 2. Target share.
    let live = live_instances(ctx).await?;
    let target = (partitions as usize).div_ceil(live);
    // 3. Hand back extras (highest partitions first); the worker snapshots before release.
    while active(owned) > target && live > 1 {
        let Some((&p, o)) = owned.iter_mut().rev().find(|(_, o)| !o.releasing) else {
            break;
        };
        tracing::info!(
            partition = p,
            target,
            live,
            "handing partition back for rebalancing"
        );
        // The lease is released once the worker has committed and stopped (the join arm in
        // `run`); until then it is renewed like any other.
        o.releasing = true;
        o.cancel.cancel();
    }
    // 4. Take free partitions while under target (or ones free for too long).
    let now = Instant::now();
    for i in 0..partitions {
        let p = (i + offset) % partitions;
        if owned.contains_key(&p) {
            free_since.remove(&p);
            continue;
        }
        let key = shared.keys.partition_lease(p);
        // A lease still in our name without a worker (the worker failed, e.g. during a Redis
        // restart) is adopted again rather than waited out.
        let adopt = match lease::owner(client, &key).await? {
            Some(owner) if &owner == me => lease::renew(client, &key, me, lease_ms).await?,
            Some(_) => {
                free_since.remove(&p);
                continue;
            }
            None => false,
        };
        let first_free = *free_since.entry(p).or_insert(now);
        let stranded = now.duration_since(first_free) > Duration::from_millis(2 * lease_ms);
        if adopt
            || ((active(owned) < target || stranded)
                && lease::acquire(client, &key, me, lease_ms).await?)
        {
            free_since.remove(&p);
            let cancel = ctx.signals.shutdown.child_token();
            let reader = kitbash_runtime::redis::builder(&ctx.config.redis)?.build()?;
            reader.connect();
            let (s, c) = (shared.clone(), cancel.clone());
            workers.spawn(async move {
                let r = partition::run(s, p, reader.clone(), c).await;
                let _ = reader.quit().await;
                (p, r)
            });
            tracing::info!(partition = p, target, live, "partition lease acquired");
            owned.insert(
                p,
                Owned {
                    cancel,
                    releasing: false,
                },
            );
        }
    }
    Ok(())
}
