//! A daemon's stream bounds, in one periodic task: the streams it owns are trimmed near their
//! configured bound ([`crate::trim::trim_or_warn`], so never past what a group or a partition's
//! recovery still needs), and the dead-letter streams of the streams it reads are measured
//! against `[consumer] dead_letter_alarm` — measured (the gauges [`LENGTH_METRIC`] and
//! [`ALARM_METRIC`], labelled `stream`), never trimmed.
//!
//! A stream the archive is archiving is skipped while the archive holds its trim claim (the
//! check is inside the trim script: see [`crate::trim`]).
//!
//! Which daemon owns which stream is the schema's ([`StreamName::trim_owner`]); a daemon runs
//! its `Bounds` through `Components::every`, on every instance (a trim is idempotent, and each
//! instance's `/metrics` then carries the dead-letter gauges):
//!
//! ```ignore
//! let bounds = Bounds::of(ctx)
//!     .trim(StreamName::Queries, cfg.queries_stream_max)
//!     .watch_dead_letters([StreamName::Queries]);
//! components.every("stream bounds", period, move || bounds.clone().run_owned())
//! ```

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex, PoisonError};

use fred::prelude::*;
use kitbash_schema::{Keys, StreamName};

pub use crate::dead::{ALARM_METRIC, LENGTH_METRIC};

use crate::daemon::DaemonContext;
use crate::metrics::Metrics;

/// The streams one daemon trims and the dead-letter streams it watches. Cheap to clone.
#[derive(Clone)]
pub struct Bounds {
    client: Client,
    keys: Keys,
    metrics: Metrics,
    trims: Vec<(StreamName, u64)>,
    dead: Vec<StreamName>,
    alarm: u64,
    /// The dead-letter streams above the alarm at the last check (a warning is logged when a
    /// stream enters it, an `info` when it leaves).
    over: Arc<Mutex<BTreeSet<StreamName>>>,
}

impl std::fmt::Debug for Bounds {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Bounds")
            .field("trims", &self.trims)
            .field("dead", &self.dead)
            .field("alarm", &self.alarm)
            .finish_non_exhaustive()
    }
}

impl Bounds {
    /// Bounds over `client`, alarming above `alarm` dead letters (`[consumer]
    /// dead_letter_alarm`).
    pub fn new(client: Client, keys: Keys, metrics: Metrics, alarm: u64) -> Self {
        Self {
            client,
            keys,
            metrics,
            trims: Vec::new(),
            dead: Vec::new(),
            alarm,
            over: Arc::default(),
        }
    }

    /// The daemon's bounds: its command connection, keys, metrics and dead-letter alarm.
    pub fn of(ctx: &DaemonContext) -> Self {
        Self::new(
            ctx.redis.client.clone(),
            ctx.keys.clone(),
            ctx.metrics.clone(),
            ctx.config.consumer.dead_letter_alarm,
        )
    }

    /// Also trims `stream` near `max` entries (0 = not trimmed).
    pub fn trim(mut self, stream: StreamName, max: u64) -> Self {
        self.trims.push((stream, max));
        self
    }

    /// Also measures the dead-letter streams of `streams` against the alarm.
    pub fn watch_dead_letters(mut self, streams: impl IntoIterator<Item = StreamName>) -> Self {
        self.dead.extend(streams);
        self
    }

    /// One round: every trim, then every dead-letter check. Failures are logged and counted
    /// (`kitbash_trim_failures_total`), never fatal: the next round tries again. Returns the
    /// entries trimmed.
    pub async fn run(&self) -> u64 {
        let mut removed = 0;
        for (stream, max) in &self.trims {
            let key = self.keys.stream(*stream);
            removed +=
                crate::trim::trim_or_warn(&self.client, &self.metrics, *stream, &key, *max, &[])
                    .await;
        }
        for stream in &self.dead {
            let key = self.keys.dead_letter(*stream);
            match crate::dead::check(&self.client, &self.metrics, *stream, &key, self.alarm).await {
                Ok((len, over)) => self.note(*stream, &key, len, over),
                Err(e) => {
                    tracing::warn!(stream = %stream, error = %e, "dead-letter check failed; will retry");
                }
            }
        }
        removed
    }

    /// [`Bounds::run`] on an owned copy (what a `Components::every` closure returns).
    pub async fn run_owned(self) {
        self.run().await;
    }

    fn note(&self, stream: StreamName, key: &str, len: u64, over: bool) {
        let mut set = self.over.lock().unwrap_or_else(PoisonError::into_inner);
        if over && set.insert(stream) {
            tracing::warn!(
                stream = %stream,
                dead_letters = %key,
                length = len,
                threshold = self.alarm,
                "dead-letter stream above [consumer] dead_letter_alarm: replay or delete its \
                 entries (they are never trimmed)"
            );
        } else if !over && set.remove(&stream) {
            tracing::info!(stream = %stream, length = len, threshold = self.alarm, "dead-letter stream back within its alarm threshold");
        }
    }
}
