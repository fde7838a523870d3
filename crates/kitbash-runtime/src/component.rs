//! The component layer: a daemon declares what it runs, the runtime runs it.
//!
//! ```no_run
//! # use kitbash_runtime::{Components, DaemonContext};
//! # fn handler(_: &DaemonContext) -> kitbash_runtime::component::NoopHandler { Default::default() }
//! fn components(ctx: &DaemonContext) -> Components {
//!     Components::new(ctx)
//!         // a consumer group on a stream, with its handler:
//!         .consume::<kitbash_schema::messages::QueryEvent, _>(kitbash_schema::StreamName::Queries, handler(ctx))
//! }
//! fn main() -> std::process::ExitCode {
//!     kitbash_runtime::daemon::main(kitbash_schema::DaemonKind::Example, components)
//! }
//! ```
//!
//! Seven kinds of component:
//! - [`Components::consume`]: a stream read through the daemon's consumer group
//!   ([`crate::consumer`]), with de-duplication by producer `mid`, dead letters, reclaim;
//! - [`Components::consume_raw`]: the same group reading, entries handed over undecoded and
//!   acknowledged later through an [`Acks`](crate::consumer::Acks) handle once the handler made them durable;
//! - [`Components::partitioned`]: ordered work over partitioned streams, one worker per
//!   partition in the fleet ([`crate::partition`]);
//! - [`Components::every`]: a periodic task on every instance;
//! - [`Components::leader`]: a periodic task on exactly one live instance ([`crate::leader`]);
//! - [`Components::task`]: a long-running task with a readiness handle and a restart policy
//!   ([`crate::task`]);
//! - [`Components::serve`]: an HTTP/WebSocket router bound for the daemon's life
//!   ([`crate::serve`]);
//!
//! and [`Components::check`], a start-up check that must pass before any of them starts.
//!
//! The runtime owns the rest: connections (each reader gets its own blocking connection),
//! readiness checks, metrics, heartbeats, drain on shutdown and lease release.

use std::future::Future;
use std::net::SocketAddr;

use fred::interfaces::ClientLike;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use kitbash_schema::{Group, Message, StreamName};

use crate::config::ConsumerConfig;
use crate::consumer::{Delivery, Handler, Outcome, RawHandler, StreamConsumer};
use crate::daemon::DaemonContext;
use crate::error::RuntimeError;
use crate::leader::LeaderTerm;
use crate::partition::{PartitionLogic, PartitionSpec};
use crate::task::{Restart, TaskCtx};

type Task = Pin<Box<dyn Future<Output = Result<(), RuntimeError>> + Send>>;

/// What one daemon runs. Build it from the [`DaemonContext`]; [`crate::daemon::main`] (or
/// [`crate::daemon::run`] in tests) runs it until shutdown.
#[must_use = "components do nothing until the daemon runs them"]
pub struct Components {
    ctx: DaemonContext,
    tasks: Vec<(String, Task)>,
    /// Start-up checks, run in order before any task starts.
    checks: Vec<(String, Task)>,
    /// The first error met while building (a connection that could not be configured).
    error: Option<RuntimeError>,
}

impl std::fmt::Debug for Components {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Components")
            .field(
                "tasks",
                &self.tasks.iter().map(|(n, _)| n).collect::<Vec<_>>(),
            )
            .finish_non_exhaustive()
    }
}

impl Components {
    /// No components yet.
    ///
    /// Every daemon starts with one check: a plain `redis://` URL must not point at a Redis
    /// Cluster node (commands would meet `MOVED` for most keys) — the daemon stops with a line
    /// saying to use `redis-cluster://`.
    pub fn new(ctx: &DaemonContext) -> Self {
        let c = Self {
            ctx: ctx.clone(),
            tasks: Vec::new(),
            checks: Vec::new(),
            error: None,
        };
        if ctx.redis.client.is_clustered() {
            // On a cluster, the first check waits until fred knows the slots: a script loaded
            // on `NOSCRIPT` before that fails with "Missing cluster routing state".
            let client = ctx.redis.client.clone();
            let shutdown = ctx.signals.shutdown.clone();
            return c.check("cluster state", async move {
                wait_for_cluster_state(&client, &shutdown).await;
                Ok(())
            });
        }
        let client = ctx.redis.client.clone();
        let shutdown = ctx.signals.shutdown.clone();
        c.check("cluster URL", async move {
            if is_cluster_node(&client, &shutdown).await {
                return Err(RuntimeError::Refused {
                    check: "cluster URL",
                    why: "[redis] url points at a Redis Cluster node through a plain URL: write \
                          it as redis-cluster://host:port (any node; the others are discovered) \
                          so that commands follow their hash slots"
                        .into(),
                });
            }
            Ok(())
        })
    }

    /// Reads `stream` through this daemon kind's consumer group and hands batches of decoded
    /// messages to `handler`. Settings: `[consumer]` with the stream's
    /// `[consumer.streams.<stream>]` overrides ([`crate::config::ConsumerConfig::for_stream`]).
    pub fn consume<M, H>(self, stream: StreamName, handler: H) -> Self
    where
        M: Message + Send + 'static,
        H: Handler<M> + 'static,
    {
        let cfg = self.ctx.config.consumer.for_stream(&stream.logical());
        self.consume_with(stream, cfg, handler)
    }

    /// [`Components::consume`] with settings of the daemon's own (a section of its config).
    pub fn consume_with<M, H>(self, stream: StreamName, cfg: ConsumerConfig, handler: H) -> Self
    where
        M: Message + Send + 'static,
        H: Handler<M> + 'static,
    {
        let group = self.ctx.kind.group();
        self.consume_in(group, stream, cfg, handler)
    }

    /// [`Components::consume_with`] through `group` instead of the daemon kind's own: a second
    /// job of the daemon on a stream it already reads in its own group (the archive archives
    /// the memory stream in `archive` and indexes it in [`kitbash_schema::Group::MEMORY_INDEX`]).
    /// Each group keeps its own position, pending list, de-duplication and dead letters.
    pub fn consume_in<M, H>(
        mut self,
        group: Group,
        stream: StreamName,
        cfg: ConsumerConfig,
        handler: H,
    ) -> Self
    where
        M: Message + Send + 'static,
        H: Handler<M> + 'static,
    {
        let consumer = self.stream_consumer(stream, group, cfg);
        let shutdown = self.ctx.signals.shutdown.clone();
        let name = if group == self.ctx.kind.group() {
            format!("consume {stream}")
        } else {
            format!("consume {stream} in {group}")
        };
        self.tasks.push((
            name,
            Box::pin(async move {
                consumer.run(handler, shutdown).await;
                Ok(())
            }),
        ));
        self
    }

    /// Reads `stream` raw through this daemon kind's consumer group, acknowledging only what
    /// `handler` settles through its [`Acks`](crate::consumer::Acks) handle ([`crate::consumer::RawConsumer`]): any
    /// `type`, undecodable entries included, held entries kept from reclaim, at most
    /// `max_held` of them, a flush hook on drain. Settings as for [`Components::consume`]; a
    /// [`crate::consumer::TakeError::Fatal`] stops the daemon.
    pub fn consume_raw<H: RawHandler + 'static>(self, stream: StreamName, handler: H) -> Self {
        let cfg = self.ctx.config.consumer.for_stream(&stream.logical());
        self.consume_raw_with(stream, cfg, handler)
    }

    /// [`Components::consume_raw`] with settings of the daemon's own.
    pub fn consume_raw_with<H: RawHandler + 'static>(
        mut self,
        stream: StreamName,
        cfg: ConsumerConfig,
        handler: H,
    ) -> Self {
        let consumer = self
            .stream_consumer(stream, self.ctx.kind.group(), cfg)
            .raw();
        let shutdown = self.ctx.signals.shutdown.clone();
        self.tasks.push((
            format!("consume raw {stream}"),
            Box::pin(async move { consumer.run(handler, shutdown).await.map(|_| ()) }),
        ));
        self
    }

    /// The consumer of `stream` for this daemon kind's group. It opens a blocking connection
    /// of its own when it runs (a `BLOCK` never waits behind another reader's).
    fn stream_consumer(
        &self,
        stream: StreamName,
        group: Group,
        cfg: ConsumerConfig,
    ) -> StreamConsumer {
        let ctx = &self.ctx;
        StreamConsumer::new(
            ctx.redis.clone(),
            &ctx.keys,
            stream,
            group.as_str(),
            ctx.instance.clone(),
            cfg,
            ctx.metrics.clone(),
            ctx.health.clone(),
        )
    }

    /// Ordered work over the partitioned streams `spec` describes, `logic` applying each batch.
    pub fn partitioned<L: PartitionLogic>(mut self, spec: PartitionSpec, logic: L) -> Self {
        let ctx = self.ctx.clone();
        let name = format!("partitioned {}", spec.group);
        self.tasks.push((
            name,
            Box::pin(crate::partition::balance::run(ctx, spec, Arc::new(logic))),
        ));
        self
    }

    /// Calls `task` every `period` on every instance until shutdown (first call at once).
    pub fn every<F, Fut>(mut self, name: &'static str, period: Duration, mut task: F) -> Self
    where
        F: FnMut() -> Fut + Send + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let shutdown = self.ctx.signals.shutdown.clone();
        let health = self.ctx.health.clone();
        let beat = format!("every {name}");
        self.tasks.push((
            format!("every {name}"),
            Box::pin(async move {
                // A call that never returns stops the beats: systemd's watchdog starves.
                crate::periodic::every(period, shutdown, || {
                    health.beat(&beat, period);
                    task()
                })
                .await;
                health.forget_beat(&beat);
                Ok(())
            }),
        ));
        self
    }

    /// Runs `task` for the daemon's life (a watcher, a hub): it gets the shutdown token and its
    /// readiness check `task {name}`; `restart` says whether its error stops the daemon or
    /// restarts it after a backoff ([`crate::task`]).
    pub fn task<F, Fut>(mut self, name: &'static str, restart: Restart, task: F) -> Self
    where
        F: FnMut(TaskCtx) -> Fut + Send + 'static,
        Fut: Future<Output = Result<(), RuntimeError>> + Send + 'static,
    {
        let ctx = &self.ctx;
        let run = crate::task::run(
            name,
            restart,
            ctx.health.clone(),
            ctx.metrics.clone(),
            ctx.signals.shutdown.clone(),
            task,
        );
        self.tasks.push((format!("task {name}"), Box::pin(run)));
        self
    }

    /// Serves `router` on `addr` for the daemon's life: readiness `listening {name}`, the bound
    /// address in the heartbeat and [`DaemonContext::served_addr`], requests in flight drained
    /// on shutdown ([`crate::serve`]; WebSocket handlers close their own connections on the
    /// shutdown token). A port in use stops the daemon.
    pub fn serve(mut self, name: &'static str, addr: SocketAddr, router: axum::Router) -> Self {
        let ctx = &self.ctx;
        let run = crate::serve::run(
            name,
            addr,
            router,
            ctx.health.clone(),
            ctx.served.clone(),
            ctx.signals.shutdown.clone(),
        );
        self.tasks.push((format!("serve {name}"), Box::pin(run)));
        self
    }

    /// Calls `task` every `period` on exactly one live instance of this daemon kind, chosen by
    /// a lease of `lease_ms` (see [`crate::leader`]).
    pub fn leader<F, Fut>(
        mut self,
        name: &'static str,
        period: Duration,
        lease_ms: u64,
        task: F,
    ) -> Self
    where
        F: FnMut(LeaderTerm) -> Fut + Send + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let ctx = self.ctx.clone();
        self.tasks.push((
            format!("leader {name}"),
            Box::pin(async move {
                crate::leader::run(ctx, name, period, lease_ms, task).await;
                Ok(())
            }),
        ));
        self
    }

    /// Runs `check` once before any other component starts; an error stops the daemon before
    /// it touches a stream (exit code 1, the error logged), so a misconfigured instance fails
    /// at start instead of dead-lettering its input. For agreements that live in Redis, such as
    /// which layout a key family uses.
    pub fn check<Fut>(mut self, name: &'static str, check: Fut) -> Self
    where
        Fut: Future<Output = Result<(), RuntimeError>> + Send + 'static,
    {
        self.checks.push((format!("check {name}"), Box::pin(check)));
        self
    }

    /// Runs every component until shutdown; returns the first error. A component that fails
    /// stops the daemon (the others drain), so a service manager restarts it whole.
    pub async fn run(self) -> Result<(), RuntimeError> {
        if let Some(e) = self.error {
            return Err(e);
        }
        let shutdown = self.ctx.signals.shutdown.clone();
        for (name, check) in self.checks {
            if let Err(e) = check.await {
                tracing::error!(component = %name, error = %e, "start-up check failed; stopping the daemon");
                shutdown.cancel();
                return Err(e);
            }
        }
        let mut set = tokio::task::JoinSet::new();
        for (name, task) in self.tasks {
            set.spawn(async move { (name, task.await) });
        }
        // Every component's checks register as it starts; systemd's READY=1 waits for this.
        self.ctx.started.set();
        let mut first: Option<RuntimeError> = None;
        while let Some(done) = set.join_next().await {
            match done {
                Ok((_, Ok(()))) => {}
                Ok((name, Err(e))) => {
                    tracing::error!(component = %name, error = %e, "component failed; stopping the daemon");
                    shutdown.cancel();
                    first.get_or_insert(e);
                }
                Err(e) => {
                    tracing::error!(error = %e, "component panicked; stopping the daemon");
                    shutdown.cancel();
                    first.get_or_insert(RuntimeError::Reply {
                        command: "component",
                        detail: e.to_string(),
                    });
                }
            }
        }
        first.map_or(Ok(()), Err)
    }
}

/// A handler that acknowledges everything (for examples and tests of the plumbing).
#[derive(Clone, Copy, Debug, Default)]
pub struct NoopHandler;

impl<M: Send + 'static> Handler<M> for NoopHandler {
    async fn handle(&mut self, batch: Vec<Delivery<M>>) -> Vec<Outcome> {
        batch.iter().map(|_| Outcome::Ack).collect()
    }
}

/// Waits (backing off) until `client`, a cluster client, has connected and knows the
/// cluster's slots, or until shutdown.
async fn wait_for_cluster_state(
    client: &fred::prelude::Client,
    shutdown: &crate::CancellationToken,
) {
    use fred::prelude::*;
    let mut backoff = crate::Backoff::new(Duration::from_millis(50), Duration::from_secs(2));
    loop {
        if client.cached_cluster_state().is_some() {
            return;
        }
        match client.wait_for_connect().await {
            Ok(()) if client.cached_cluster_state().is_some() => return,
            Ok(()) => {}
            Err(e) => tracing::warn!(error = %e, "cannot reach the cluster yet; retrying"),
        }
        if !backoff.wait(shutdown).await {
            return;
        }
    }
}

/// Whether the node `client` talks to says `cluster_enabled:1`; waits for Redis (backing off)
/// rather than failing while it is still starting (`false` when shut down meanwhile).
async fn is_cluster_node(
    client: &fred::prelude::Client,
    shutdown: &crate::CancellationToken,
) -> bool {
    use fred::prelude::*;
    let mut backoff = crate::Backoff::new(Duration::from_millis(100), Duration::from_secs(2));
    loop {
        match client
            .info::<String>(Some(fred::types::InfoKind::Cluster))
            .await
        {
            Ok(info) => return info.lines().any(|l| l.trim() == "cluster_enabled:1"),
            Err(e) => {
                tracing::warn!(error = %e, "cannot ask Redis whether it is a cluster yet; retrying");
                if !backoff.wait(shutdown).await {
                    return false;
                }
            }
        }
    }
}
