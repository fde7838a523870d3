//! `kitbash-bridge`: the WebSocket broadcaster (seed 001's `RedisBridge → StateBroadcaster →
//! WebSocket`, seed 002's dashboard feed). It speaks Centrifugo's client protocol v2 with JSON
//! encoding, so Centrifugo's SDKs (`centrifuge` on npm, `centrifuge-python`, …) connect,
//! subscribe, recover and refresh tokens against it unchanged (`docs/PROTOCOL.md`).
//!
//! | component | what it does | module |
//! |---|---|---|
//! | `task` × 3 | tails `physics`, `entity-changes`, `crossings` (no group: every instance reads all) and fans entries out to subscribers | [`feed`] |
//! | `every` | checks each stream's epoch (`kitbash:bridge:epoch:{stream}`) | [`epoch`] |
//! | `every` | publishes the `fleet` view and `reflex:hat` | [`fleet`] |
//! | `serve` | the WebSocket endpoint and the page at `/` (`[bridge] listen`) | [`web`], [`conn`] |
//!
//! **Positions.** A publication's `offset` is its stream entry id packed into one integer
//! ([`kitbash_schema::bridge::offset_of`]), so every instance gives the same publication the
//! same offset and any instance can recover any client. Recovery reads the backing stream
//! ([`recover`]); live publications come from the same stream, and the hub makes the seam
//! between the two exact ([`hub`]). The bridge writes nothing to Redis but the epoch hashes.
//!
//! **Invariant:** a client gets each publication of a channel at most once and in offset
//! order; when it cannot get one (history trimmed or replaced), it is told — an unsubscribe
//! push (2500) while live, `recovered: false` on subscribe — never silently skipped.

pub mod auth;
pub mod conn;
pub mod epoch;
pub mod feed;
pub mod fleet;
pub mod hub;
pub mod protocol;
pub mod recover;
pub mod web;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use kitbash_runtime::task::Restart;
use kitbash_runtime::{Components, Config, DaemonContext, RuntimeError, Signals};
use kitbash_schema::{DaemonKind, StreamName};

use crate::auth::Auth;
use crate::conn::Shared;
use crate::feed::{Feed, STREAMS};
use crate::hub::Hub;

fn feed_name(s: StreamName) -> &'static str {
    match s {
        StreamName::Physics => "physics feed",
        StreamName::EntityChanges => "entity-changes feed",
        _ => "crossings feed",
    }
}

/// What the daemon runs (the table in the crate docs).
pub fn components(ctx: &DaemonContext) -> Components {
    let cfg = Arc::new(ctx.config.bridge.clone());
    let hub = Hub::new(ctx.metrics.clone());
    let client = ctx.redis.client.clone();
    let secret = cfg.secret();
    let shared = Shared {
        hub: hub.clone(),
        cfg: cfg.clone(),
        auth: Arc::new(Auth::new(secret.as_deref())),
        client: client.clone(),
        keys: ctx.keys.clone(),
        metrics: ctx.metrics.clone(),
        connections: Arc::new(AtomicUsize::new(0)),
        shutdown: ctx.signals.shutdown.clone(),
        counters: Arc::default(),
    };
    // The feeds and the epoch check start once Redis answers (as they did behind the former
    // cluster refusal's probe): without this wait the stream-recreated test misses its 2500
    // push (root cause not yet understood; see the branch's report).
    let mut c = Components::new(ctx).check("Redis answers", {
        let (client, shutdown) = (client.clone(), ctx.signals.shutdown.clone());
        async move {
            use fred::interfaces::ClientLike;
            let mut backoff =
                kitbash_runtime::Backoff::new(Duration::from_millis(100), Duration::from_secs(2));
            loop {
                match client.ping::<String>(None).await {
                    Ok(_) => return Ok(()),
                    Err(e) => {
                        tracing::warn!(error = %e, "Redis does not answer yet; retrying");
                        if !backoff.wait(&shutdown).await {
                            return Ok(());
                        }
                    }
                }
            }
        }
    });
    for s in STREAMS {
        let feed = Feed {
            stream: s,
            redis: ctx.redis.clone(),
            keys: ctx.keys.clone(),
            hub: hub.clone(),
            metrics: ctx.metrics.clone(),
            batch: cfg.tail_batch,
        };
        c = c.task(feed_name(s), Restart::DEFAULT_BACKOFF, move |task| {
            let f = feed.clone();
            async move { f.run(task).await }
        });
    }
    c = c.every("epochs", Duration::from_millis(cfg.epoch_check_ms), {
        let (hub, client, keys, metrics) = (hub.clone(), client.clone(), ctx.keys.clone(), ctx.metrics.clone());
        move || {
            let (hub, client, keys, metrics) = (hub.clone(), client.clone(), keys.clone(), metrics.clone());
            async move {
                for s in STREAMS {
                    match epoch::check(&client, &keys, s, None).await {
                        Ok(e) => {
                            if hub.set_epoch(s, &e) {
                                tracing::warn!(stream = %s.logical(), epoch = %e, "the stream's history was lost: new epoch");
                                metrics.inc(
                                    "kitbash_bridge_epoch_changes_total",
                                    "Times a backing stream's epoch changed (deleted, recreated, restored).",
                                    &[("stream", s.logical().as_str())],
                                    1,
                                );
                            }
                        }
                        Err(e) => tracing::warn!(error = %e, "cannot check the epoch now"),
                    }
                }
            }
        }
    });
    c = c.every("fleet", Duration::from_millis(cfg.fleet_period_ms), {
        let (hub, client, keys, config) = (
            hub.clone(),
            client.clone(),
            ctx.keys.clone(),
            ctx.config.clone(),
        );
        let (instance, conns, metrics) = (
            ctx.instance.clone(),
            shared.connections.clone(),
            ctx.metrics.clone(),
        );
        let (daemon, counters) = (ctx.clone(), shared.counters.clone());
        move || {
            let (hub, client, keys, config) =
                (hub.clone(), client.clone(), keys.clone(), config.clone());
            let (instance, conns, metrics) = (instance.clone(), conns.clone(), metrics.clone());
            let (daemon, counters) = (daemon.clone(), counters.clone());
            async move {
                let connections = conns.load(Ordering::Relaxed);
                let subscriptions = hub.subscriptions();
                daemon.report("connections", connections as u64);
                daemon.report("subscriptions", subscriptions as u64);
                daemon.report("slow_closes", counters.slow_closes.load(Ordering::Relaxed));
                daemon.report("recovered", counters.recovered.load(Ordering::Relaxed));
                daemon.report(
                    "not_recovered",
                    counters.not_recovered.load(Ordering::Relaxed),
                );
                metrics.set(
                    "kitbash_bridge_connections",
                    "Open client connections.",
                    &[],
                    connections as f64,
                );
                metrics.set(
                    "kitbash_bridge_subscriptions",
                    "Channel subscriptions held.",
                    &[],
                    subscriptions as f64,
                );
                metrics.set(
                    "kitbash_bridge_channels",
                    "Channels with at least one subscriber.",
                    &[],
                    hub.channels() as f64,
                );
                let view = fleet::BridgeView {
                    instance,
                    connections,
                    subscriptions,
                };
                if let Err(e) = fleet::publish_fleet(&hub, &client, &keys, &config, view).await {
                    tracing::warn!(error = %e, "cannot read the fleet view now");
                }
            }
        }
    });
    let last_hat = Arc::new(Mutex::new(None));
    c = c.every("hat", Duration::from_millis(250), {
        let (hub, client, keys) = (hub.clone(), client.clone(), ctx.keys.clone());
        move || {
            let (hub, client, keys, last_hat) =
                (hub.clone(), client.clone(), keys.clone(), last_hat.clone());
            async move {
                let last = last_hat
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .clone();
                match fleet::publish_hat(&hub, &client, &keys, last).await {
                    Ok(now) => *last_hat.lock().unwrap_or_else(PoisonError::into_inner) = Some(now),
                    Err(e) => tracing::debug!(error = %e, "cannot read the hat now"),
                }
            }
        }
    });
    if let Some(addr) = cfg.listen_addr() {
        c = c.serve("ws", addr, web::router(shared));
    }
    c
}

/// Runs one instance in-process until `signals.shutdown` (what the binary runs; tests call it).
pub async fn run(config: Config, signals: Signals) -> Result<(), RuntimeError> {
    kitbash_runtime::daemon::run(DaemonKind::Bridge, config, signals, components).await
}
