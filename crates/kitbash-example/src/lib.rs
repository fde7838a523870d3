//! `kitbash-example`: a small complete kitbash daemon, the worked example of
//! `docs/adding-a-daemon.md`, with one component of every kind:
//!
//! | component | what it does here | module |
//! |---|---|---|
//! | `consume` | counts each query text of `queries` in `kitbash:example:{queries}:tally` | [`tally`] |
//! | `consume_raw` | journals `physics` entries as they are to a file, acknowledging them once fsynced (`[example] journal_dir`) | [`journal`] |
//! | `every` | publishes the tally's size as the gauge `kitbash_example_tally_texts` | here |
//! | `leader` | one instance records the most-counted text in `kitbash:example:{queries}:top` | here |
//! | `task` + `Subscriber` | counts grain-update announcements and the gaps after reconnects | [`watch`] |
//! | `task` + `TailReader` | follows `entity-changes` without a group, counting what it sees | [`watch`] |
//! | `serve` | `GET /tally/{text}` answers a text's count (`[example] listen`) | [`web`] |
//!
//! Everything else — connections, the consumer-group protocol (own pending first, reclaim,
//! dead letters, batched acknowledgement), de-duplication by producer `mid`, leases, readiness,
//! metrics, heartbeats, SIGTERM drain, SIGHUP reload, exit 64 on a bad config — comes from
//! `kitbash-runtime`. This crate holds handlers and tasks, their wiring, and nothing else; its
//! settings are `[example]` in `kitbash-config`.

pub mod journal;
pub mod tally;
pub mod watch;
pub mod web;

use std::time::Duration;

use fred::prelude::*;
use kitbash_runtime::metrics::Metrics;
use kitbash_runtime::task::Restart;
use kitbash_runtime::{Components, Config, DaemonContext, RuntimeError, Signals};
use kitbash_schema::{DaemonKind, StreamName};

pub use journal::Journal;
pub use tally::Tally;

/// What the daemon runs (the table in the crate docs).
pub fn components(ctx: &DaemonContext) -> Components {
    let cfg = &ctx.config.example;
    let (client, metrics) = (ctx.redis.client.clone(), ctx.metrics.clone());
    let (tally, top) = (ctx.keys.example_tally(), ctx.keys.example_top());
    let announcements = watch::Announcements::new(ctx);
    let changes = watch::Changes::new(ctx);
    let mut c = Components::new(ctx)
        .consume(StreamName::Queries, Tally::new(ctx))
        .every("tally size", Duration::from_secs(5), {
            let (client, tally) = (client.clone(), tally.clone());
            move || {
                let (client, metrics, tally) = (client.clone(), metrics.clone(), tally.clone());
                async move { tally_size(&client, &metrics, &tally).await }
            }
        })
        .leader(
            "top text",
            Duration::from_millis(cfg.top_period_ms),
            (cfg.top_period_ms * 3).max(1_000),
            move |_term| {
                let (client, tally, top) = (client.clone(), tally.clone(), top.clone());
                async move { top_text(&client, &tally, &top).await }
            },
        )
        .task("announcements", Restart::DEFAULT_BACKOFF, move |task| {
            let a = announcements.clone();
            async move { a.run(task).await }
        })
        .task("entity-changes", Restart::DEFAULT_BACKOFF, move |task| {
            let ch = changes.clone();
            async move { ch.run(task).await }
        });
    if !cfg.journal_dir.is_empty() {
        c = c.consume_raw(StreamName::Physics, Journal::new(ctx));
    }
    if let Some(addr) = cfg.listen_addr() {
        c = c.serve("tally", addr, web::router(ctx));
    }
    c
}

/// Runs one instance in-process until `signals.shutdown` (what the binary runs; tests call it).
pub async fn run(config: Config, signals: Signals) -> Result<(), RuntimeError> {
    kitbash_runtime::daemon::run(DaemonKind::Example, config, signals, components).await
}

/// `every`: the tally's number of texts as a gauge. A failure is logged and tried next period.
async fn tally_size(client: &Client, metrics: &Metrics, tally: &str) {
    match client.hlen::<u64, _>(tally).await {
        Ok(n) => metrics.set(
            "kitbash_example_tally_texts",
            "Distinct query texts in the example's tally.",
            &[],
            n as f64,
        ),
        Err(e) => tracing::warn!(error = %e, "cannot read the tally's size"),
    }
}

/// `leader`: one live instance records the most-counted text (ties: the smallest text). The
/// write is not fenced by the term — a stale leader could overwrite a fresher answer for one
/// period, and both are right answers; a leader task whose write must not happen twice checks
/// its `LeaderTerm` in the script that writes (`LeaderTerm::FENCE_LUA`, as decay's cycle does).
async fn top_text(client: &Client, tally: &str, top: &str) {
    // HGETALL suits an example's small hash; a large tally would keep a sorted set instead.
    let all: std::collections::HashMap<String, i64> = match client.hgetall(tally).await {
        Ok(m) => m,
        Err(e) => {
            tracing::warn!(error = %e, "cannot read the tally");
            return;
        }
    };
    let best = all
        .into_iter()
        .max_by(|a, b| a.1.cmp(&b.1).then_with(|| b.0.cmp(&a.0)));
    let Some((text, _)) = best else { return };
    if let Err(e) = client.set::<(), _, _>(top, text, None, None, false).await {
        tracing::warn!(error = %e, "cannot record the top text");
    }
}
