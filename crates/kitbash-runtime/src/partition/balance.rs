//! The lease manager of a partitioned component: every `lease_ms / 3` it renews its leases,
//! counts live instances of its kind from the fleet register (by Redis's clock), and aims at
//! `ceil(P / live)` partitions — taking free ones while under target (or any partition left free
//! for two lease periods, so a stale view cannot strand one), handing extras back when over.
//!
//! Workers are tracked by identity, not by partition number: a worker whose lease was lost or
//! handed back keeps its slot until it has exited, so a partition never has two workers in one
//! process, and each worker renews and releases only with its own lease token, so a draining
//! worker can neither keep nor delete a newer lease. On shutdown the leases are renewed until
//! every worker has drained, and only then released.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use super::worker::{self, PartitionError, WorkerShared};
use super::{PartitionLogic, PartitionSpec};
use crate::daemon::DaemonContext;
use crate::error::RuntimeError;
use crate::lease;

/// One worker this process started.
struct Slot {
    /// Identity of the worker (unique in the process).
    id: u64,
    /// The lease token it holds (`{instance}#{n}`).
    token: String,
    /// Stops it.
    cancel: CancellationToken,
    /// Handed back or lost: it is finishing its batch and will not be replaced until it exits.
    stopping: bool,
    /// Its lease is known to be lost: no more renewals.
    lost: bool,
}

type Joined = (u32, u64, Result<(), PartitionError>);

/// The state of one partitioned component in this process.
struct Balancer<L: PartitionLogic> {
    ctx: DaemonContext,
    sh: Arc<WorkerShared<L>>,
    spec: PartitionSpec,
    /// Partition → its worker (running or stopping). At most one per partition.
    slots: BTreeMap<u32, Slot>,
    workers: JoinSet<Joined>,
    /// Task id → (partition, worker id), to clear a slot whose worker panicked.
    tasks: HashMap<tokio::task::Id, (u32, u64)>,
    next_id: u64,
    free_since: HashMap<u32, Instant>,
    /// Where this instance starts looking for free partitions (spreads instances apart).
    offset: u32,
    check: String,
    /// Partitions whose worker failed (Redis, a snapshot item that does not restore, a panic):
    /// not restarted before the instant, under a backoff that grows while failures repeat.
    failed: HashMap<u32, (Instant, crate::Backoff)>,
}

impl<L: PartitionLogic> Balancer<L> {
    fn lease_key(&self, p: u32) -> String {
        self.ctx.keys.lease((self.spec.stream)(p))
    }

    fn active(&self) -> usize {
        self.slots.values().filter(|s| !s.stopping).count()
    }

    /// Renews every lease still held (stopping workers included, until they exit).
    async fn renew(&mut self) -> Result<(), RuntimeError> {
        let client = self.ctx.redis.client.clone();
        let ms = self.spec.lease_ms;
        let keys: Vec<(u32, String)> = self
            .slots
            .iter()
            .filter(|(_, s)| !s.lost)
            .map(|(p, s)| (*p, s.token.clone()))
            .collect();
        for (p, token) in keys {
            if !lease::renew(&client, &self.lease_key(p), &token, ms).await?
                && let Some(s) = self.slots.get_mut(&p)
            {
                tracing::warn!(stream = %(self.spec.stream)(p), "lease lost; stopping the partition worker");
                s.lost = true;
                s.stopping = true;
                s.cancel.cancel();
            }
        }
        Ok(())
    }

    fn start_worker(&mut self, p: u32, token: String) -> Result<(), RuntimeError> {
        self.next_id += 1;
        let id = self.next_id;
        let cancel = self.ctx.signals.shutdown.child_token();
        // Each worker reads on its own connection: blocking reads never queue behind each other.
        let client = crate::redis::builder(&self.ctx.config.redis)?.build()?;
        let mut reader = crate::resp::StreamReader::new(client);
        reader.connect_fred();
        let (sh, c) = (self.sh.clone(), cancel.clone());
        let handle = self.workers.spawn(async move {
            let r = worker::run(sh, p, &mut reader, c).await;
            // However the worker ended: a fred client left connected keeps its connection.
            reader.quit().await;
            (p, id, r)
        });
        self.tasks.insert(handle.id(), (p, id));
        self.slots.insert(
            p,
            Slot {
                id,
                token,
                cancel,
                stopping: false,
                lost: false,
            },
        );
        Ok(())
    }

    /// A worker task ended, normally or by panic.
    async fn ended(&mut self, r: Result<(tokio::task::Id, Joined), tokio::task::JoinError>) {
        match r {
            Ok((tid, done)) => {
                self.tasks.remove(&tid);
                self.joined(done).await;
            }
            Err(e) => {
                if let Some((p, id)) = self.tasks.remove(&e.id()) {
                    let why = PartitionError::Panicked(e.to_string());
                    self.joined((p, id, Err(why))).await;
                }
            }
        }
    }

    /// A worker exited: forget its slot (only if it is still that worker's) and release its
    /// lease — with its own token, so a newer lease is never touched.
    async fn joined(&mut self, (p, id, result): Joined) {
        match &result {
            // Ownership moved: nothing failed here.
            Err(e @ PartitionError::Fenced(..)) => {
                tracing::warn!(stream = %(self.spec.stream)(p), error = %e, "partition worker stopped");
                self.ctx
                    .health
                    .clear(&worker::check_name(self.spec.group, p));
            }
            Err(e) => {
                // Restarting at once would spin (and hide the failure): back off, count it,
                // and report the partition not ready until a worker restores it.
                let (at, backoff) = self.failed.entry(p).or_insert_with(|| {
                    (
                        Instant::now(),
                        crate::Backoff::new(Duration::from_millis(500), Duration::from_secs(30)),
                    )
                });
                let delay = backoff.next_delay();
                *at = Instant::now() + delay;
                let kind = if e.is_restore() {
                    "restore"
                } else if matches!(e, PartitionError::Panicked(_)) {
                    "panic"
                } else {
                    "redis"
                };
                tracing::warn!(stream = %(self.spec.stream)(p), error = %e, kind,
                    retry_in_ms = delay.as_millis() as u64, "partition worker failed; backing off");
                self.ctx.metrics.inc(
                    "kitbash_partition_failures_total",
                    "Partition workers that failed (kind: restore = a snapshot item did not restore, panic, redis).",
                    &[("stream", self.spec.group), ("kind", kind)],
                    1,
                );
                if e.is_restore() {
                    self.ctx.metrics.inc(
                        "kitbash_partition_restore_failures_total",
                        "Partition restores that failed on a snapshot item.",
                        &[("stream", self.spec.group)],
                        1,
                    );
                }
                self.ctx
                    .health
                    .set(worker::check_name(self.spec.group, p), false);
            }
            Ok(()) => {
                self.failed.remove(&p);
                self.ctx
                    .health
                    .clear(&worker::check_name(self.spec.group, p));
            }
        }
        if self.slots.get(&p).is_some_and(|s| s.id == id)
            && let Some(s) = self.slots.remove(&p)
            && !s.lost
        {
            let _ = lease::release(&self.ctx.redis.client, &self.lease_key(p), &s.token).await;
        }
    }

    async fn live_instances(&self) -> Result<usize, RuntimeError> {
        let ctx = &self.ctx;
        let horizon = 3 * ctx.config.fleet.heartbeat_ms;
        let members = crate::heartbeat::live_members(&ctx.redis.client, &ctx.keys, horizon).await?;
        let prefix = format!("{}/", ctx.kind.name());
        let me = crate::heartbeat::fleet_member(ctx.kind, &ctx.instance);
        let mut n = members.iter().filter(|m| m.starts_with(&prefix)).count();
        if !members.contains(&me) {
            n += 1; // our own first heartbeat may not have landed yet
        }
        Ok(n.max(1))
    }

    async fn balance(&mut self) -> Result<(), RuntimeError> {
        self.renew().await?;
        let partitions = self.spec.partitions;
        let live = self.live_instances().await?;
        let target = (partitions as usize).div_ceil(live);
        // Hand back extras (highest partitions first); the lease is released when the worker
        // has committed and exited (see `joined`), and renewed until then.
        while self.active() > target && live > 1 {
            let Some((&p, s)) = self.slots.iter_mut().rev().find(|(_, s)| !s.stopping) else {
                break;
            };
            tracing::info!(stream = %(self.spec.stream)(p), target, live, "handing partition back for rebalancing");
            s.stopping = true;
            s.cancel.cancel();
        }
        let client = self.ctx.redis.client.clone();
        let now = Instant::now();
        for i in 0..partitions {
            let p = (i + self.offset) % partitions;
            if self.slots.contains_key(&p) {
                // Running, or still draining: never a second worker in this process.
                self.free_since.remove(&p);
                continue;
            }
            if self.failed.get(&p).is_some_and(|(at, _)| now < *at) {
                continue;
            }
            let key = self.lease_key(p);
            // A lease still in this instance's name without a worker (it failed, e.g. while
            // Redis restarted) is adopted at once rather than waited out.
            let token = match lease::holder(&client, &key).await? {
                Some(t) if lease::instance_of(&t) == self.ctx.instance => {
                    if lease::renew(&client, &key, &t, self.spec.lease_ms).await? {
                        Some(t)
                    } else {
                        None
                    }
                }
                Some(_) => {
                    // Another instance works on it: not ours to report.
                    self.free_since.remove(&p);
                    if self.failed.remove(&p).is_some() {
                        self.ctx
                            .health
                            .clear(&worker::check_name(self.spec.group, p));
                    }
                    continue;
                }
                None => None,
            };
            let token = match token {
                Some(t) => Some(t),
                None => {
                    let first_free = *self.free_since.entry(p).or_insert(now);
                    let stranded = now.duration_since(first_free)
                        > Duration::from_millis(2 * self.spec.lease_ms);
                    let t = lease::token(&self.ctx.instance);
                    if (self.active() < target || stranded)
                        && lease::acquire(&client, &key, &t, self.spec.lease_ms).await?
                    {
                        Some(t)
                    } else {
                        None
                    }
                }
            };
            if let Some(t) = token {
                self.free_since.remove(&p);
                tracing::info!(stream = %(self.spec.stream)(p), target, live, "partition lease acquired");
                self.start_worker(p, t)?;
            }
        }
        Ok(())
    }

    fn gauge(&self) {
        self.ctx.metrics.set(
            "kitbash_partitions_owned",
            "Partitions this instance works on.",
            &[("stream", self.spec.group)],
            self.active() as f64,
        );
    }
}

/// Runs a partitioned component until `ctx.signals.shutdown`; then stops every worker (each
/// commits its batch in hand and its changed items), renewing the leases meanwhile, and
/// releases them.
pub async fn run<L: PartitionLogic>(
    ctx: DaemonContext,
    spec: PartitionSpec,
    logic: Arc<L>,
) -> Result<(), RuntimeError> {
    let sh = Arc::new(WorkerShared {
        logic,
        spec: spec.clone(),
        keys: ctx.keys.clone(),
        client: ctx.redis.client.clone(),
        instance: ctx.instance.clone(),
        metrics: ctx.metrics.clone(),
        consumer: ctx.config.consumer.clone(),
        health: ctx.health.clone(),
    });
    let offset = ctx
        .instance
        .bytes()
        .fold(0u32, |a, b| a.wrapping_mul(31).wrapping_add(u32::from(b)));
    let check = format!("{} partitions balanced", spec.group);
    let shutdown = ctx.signals.shutdown.clone();
    let mut b = Balancer {
        ctx,
        sh,
        spec: spec.clone(),
        slots: BTreeMap::new(),
        workers: JoinSet::new(),
        tasks: HashMap::new(),
        next_id: 0,
        free_since: HashMap::new(),
        offset,
        check,
        failed: HashMap::new(),
    };
    let period = Duration::from_millis((spec.lease_ms / 3).max(100));
    let mut tick = tokio::time::interval(period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    b.ctx.health.set(b.check.clone(), false);
    let beat = format!("balance {}", b.check);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => break,
            Some(done) = b.workers.join_next_with_id() => b.ended(done).await,
            _ = tick.tick() => {
                b.ctx.health.beat(&beat, period);
                match b.balance().await {
                    Ok(()) => b.ctx.health.set(b.check.clone(), true),
                    Err(e) => {
                        b.ctx.health.set(b.check.clone(), false);
                        tracing::warn!(error = %e, "partition balancing failed; retrying");
                    }
                }
                b.gauge();
            }
        }
    }
    b.ctx.health.forget_beat(&beat);
    // Drain: workers finish their batch; their leases stay renewed until each has exited.
    for s in b.slots.values_mut() {
        s.stopping = true;
        s.cancel.cancel();
    }
    while !b.workers.is_empty() {
        tokio::select! {
            Some(done) = b.workers.join_next_with_id() => b.ended(done).await,
            _ = tick.tick() => {
                if let Err(e) = b.renew().await {
                    tracing::warn!(error = %e, "lease renewal failed while draining");
                }
            }
        }
    }
    let released = b.slots.len();
    for (p, s) in std::mem::take(&mut b.slots) {
        if !s.lost {
            let _ = lease::release(&b.ctx.redis.client, &b.lease_key(p), &s.token).await;
        }
    }
    tracing::info!(
        stream = spec.group,
        released,
        "partitioned component stopped; leases released"
    );
    Ok(())
}
