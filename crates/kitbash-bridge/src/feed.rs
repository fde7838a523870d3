//! The feeds: one task per backing stream (`physics`, `entity-changes`, `crossings`) tails it
//! with the runtime's [`TailReader`] — no consumer group, every bridge instance reads every
//! entry — turns each entry into a publication and dispatches it through the [`Hub`].
//!
//! The live path is the stream itself, not pub/sub: a Redis restart or a lost connection makes
//! the reader retry from its position (nothing is skipped), and the only way to miss entries is
//! losing them from the stream (a trim past the reader, a replaced stream, an id without an
//! offset) — then every subscription of the stream's channels is ended with an unsubscribe push
//! (2500) and the clients recover or learn they cannot.
//!
//! [`decode`] is the one mapping of an entry to its publication; recovery uses it too, so a
//! publication recovered from the stream is byte-identical to the one delivered live.

use std::sync::Arc;
use std::time::Duration;

use kitbash_runtime::entries::StreamEntry;
use kitbash_runtime::metrics::Metrics;
use kitbash_runtime::tail::{Tail, TailReader, stream_info};
use kitbash_runtime::{Backoff, Redis, RuntimeError, TaskCtx};
use kitbash_schema::bridge::{self, Channel};
use kitbash_schema::messages::{Crossing, PhysicsRecord, entity_change};
use kitbash_schema::{Envelope, Keys, StreamName};

use crate::epoch;
use crate::hub::{Hub, Publication};

/// An entry's publication: its routing value and its `data` JSON.
#[derive(Debug, PartialEq)]
pub struct Decoded {
    /// Symbol (physics), document key without namespace (changes), empty (crossings).
    pub route: String,
    /// The publication's `data`.
    pub data: String,
}

/// What an entry of `stream` publishes; `Err` names why it publishes nothing (an entry the
/// producing daemon would have dead-lettered; the bridge skips it, live and in recovery alike).
pub fn decode(stream: StreamName, keys: &Keys, e: &StreamEntry) -> Result<Decoded, String> {
    if e.fields.is_none() {
        return Err("deleted".into());
    }
    match stream {
        StreamName::Physics => {
            let env = Envelope::from_fields(e.pairs()).map_err(|x| x.to_string())?;
            let r: PhysicsRecord = env.decode().map_err(|x| x.to_string())?;
            Ok(Decoded {
                data: bridge::physics_data(&e.id, &r),
                route: r.symbol,
            })
        }
        StreamName::Crossings => {
            let env = Envelope::from_fields(e.pairs()).map_err(|x| x.to_string())?;
            let c: Crossing = env.decode().map_err(|x| x.to_string())?;
            Ok(Decoded {
                data: bridge::crossing_data(&e.id, &c),
                route: String::new(),
            })
        }
        StreamName::EntityChanges => {
            let field = |name: &str| {
                e.pairs()
                    .find(|(k, _)| *k == name.as_bytes())
                    .map(|(_, v)| v)
            };
            let text = |name: &str| -> Result<&str, String> {
                let v = field(name).ok_or_else(|| format!("no {name} field"))?;
                std::str::from_utf8(v).map_err(|_| format!("{name} is not UTF-8"))
            };
            let key = text(entity_change::KEY)?;
            let version: u64 = text(entity_change::VERSION)?
                .parse()
                .map_err(|_| "version is not a number".to_owned())?;
            let op = text(entity_change::OP)?;
            let doc = text(entity_change::DATA).unwrap_or("");
            if !doc.is_empty() && serde_json::from_str::<&serde_json::value::RawValue>(doc).is_err()
            {
                return Err("data is not JSON".into());
            }
            let route = keys.namespace().strip(key).unwrap_or(key).to_owned();
            Ok(Decoded {
                data: bridge::change_data(&e.id, &route, version, op, doc),
                route,
            })
        }
        other => Err(format!("{} is not a bridge stream", other.logical())),
    }
}

/// The streams the bridge publishes.
pub const STREAMS: [StreamName; 3] = [
    StreamName::Physics,
    StreamName::EntityChanges,
    StreamName::Crossings,
];

/// One stream's feed.
#[derive(Clone, Debug)]
pub struct Feed {
    /// The stream.
    pub stream: StreamName,
    /// Connections.
    pub redis: Redis,
    /// Key builder.
    pub keys: Keys,
    /// The hub.
    pub hub: Hub,
    /// Metrics.
    pub metrics: Metrics,
    /// Entries per read.
    pub batch: usize,
}

impl Feed {
    /// Tails the stream from its newest entry until shutdown. Transient Redis errors are waited
    /// out under the runtime's backoff with the position kept (not ready meanwhile).
    pub async fn run(&self, task: TaskCtx) -> Result<(), RuntimeError> {
        let key = self.keys.stream(self.stream);
        let mut backoff = Backoff::default();
        let label = self.stream.logical();
        // Where to start: where this instance's feed was (a restarted task), else the stream's
        // newest id now — resolved here rather than by a first blocking read, so subscribes are
        // answered at once.
        let from = loop {
            if let Some(p) = self.hub.position(self.stream) {
                break p;
            }
            match stream_info(&self.redis.client, &key).await {
                Ok(info) => {
                    let p = info.map_or_else(|| "0-0".to_owned(), |i| i.last_generated);
                    self.hub.set_position(self.stream, &p);
                    break p;
                }
                Err(e) if e.is_transient() => {
                    tracing::warn!(error = %e, stream = %label, "cannot read the stream now; retrying");
                    if !backoff.wait(&task.shutdown).await {
                        return Ok(());
                    }
                }
                Err(e) => return Err(e),
            }
        };
        let mut tail = TailReader::new(
            &self.redis,
            key,
            from,
            self.batch,
            Duration::from_millis(1000),
        );
        // The epoch first: a subscription needs it and the position before it is answered.
        while self.hub.epoch(self.stream).is_none() {
            match epoch::check(&self.redis.client, &self.keys, self.stream, None).await {
                Ok(e) => {
                    self.hub.set_epoch(self.stream, &e);
                }
                Err(e) if e.is_transient() => {
                    tracing::warn!(error = %e, stream = %label, "cannot read the epoch now; retrying");
                    if !backoff.wait(&task.shutdown).await {
                        return Ok(());
                    }
                }
                Err(e) => return Err(e),
            }
        }
        loop {
            // A read blocks at most 1 s: a feed that stops coming round starves the watchdog.
            task.beat(Duration::from_secs(1));
            let next = tokio::select! {
                biased;
                _ = task.shutdown.cancelled() => return Ok(()),
                n = tail.next() => n,
            };
            let found = match next {
                Ok(f) => {
                    backoff.reset();
                    f
                }
                Err(e) if e.is_transient() => {
                    tracing::warn!(error = %e, stream = %label, "cannot read the stream now; retrying");
                    task.ready.set(false);
                    if !backoff.wait(&task.shutdown).await {
                        return Ok(());
                    }
                    continue;
                }
                Err(e) => return Err(e),
            };
            match found {
                Tail::Entries(entries) => self.dispatch(&entries, tail.position()),
                Tail::NoNews => {}
                Tail::Trimmed {
                    asked,
                    first_available,
                } => {
                    tracing::warn!(stream = %label, %asked, ?first_available, "entries were trimmed before the bridge read them; ending the stream's subscriptions so clients recover");
                    self.lost("trimmed");
                }
                Tail::Behind { asked, last } => {
                    tracing::warn!(stream = %label, %asked, %last, "the stream was replaced; new epoch");
                    let stale = self.hub.epoch(self.stream);
                    match epoch::check(
                        &self.redis.client,
                        &self.keys,
                        self.stream,
                        stale.as_deref(),
                    )
                    .await
                    {
                        Ok(e) => {
                            self.hub.set_epoch(self.stream, &e);
                        }
                        Err(e) => tracing::warn!(error = %e, "cannot renew the epoch now"),
                    }
                    self.lost("replaced");
                    self.hub.set_position(self.stream, tail.position());
                }
            }
            task.ready.set(self.hub.epoch(self.stream).is_some());
        }
    }

    fn lost(&self, why: &'static str) {
        let n = self.hub.lost(self.stream);
        self.metrics.inc(
            "kitbash_bridge_history_lost_total",
            "Times a backing stream lost entries before the bridge read them (its subscriptions were ended, code 2500).",
            &[("stream", self.stream.logical().as_str()), ("why", why)],
            1,
        );
        tracing::info!(stream = %self.stream.logical(), subscriptions = n, why, "subscriptions ended");
    }

    fn dispatch(&self, entries: &[StreamEntry], position: &str) {
        let mut pubs = Vec::with_capacity(entries.len());
        let mut skipped = 0u64;
        for e in entries {
            let Some(offset) = bridge::offset_of(&e.id) else {
                // Dispatch what came before, then end the subscriptions: this entry cannot be
                // given a position a client could recover from.
                let before = pubs.len();
                if before > 0 {
                    self.hub.dispatch(self.stream, &pubs, &e.id);
                    pubs.clear();
                }
                tracing::warn!(id = %e.id, "an entry id without an offset (sequence ≥ 2048)");
                self.lost("offset");
                continue;
            };
            match decode(self.stream, &self.keys, e) {
                Ok(d) => {
                    let object: Arc<str> = crate::protocol::publication(&d.data, offset).into();
                    let channels = bridge::channels_of(self.stream, &d.route)
                        .into_iter()
                        .flatten()
                        .collect::<Vec<Channel>>();
                    pubs.push(Publication {
                        channels,
                        object,
                        offset,
                    });
                }
                Err(why) => {
                    skipped += 1;
                    tracing::debug!(id = %e.id, %why, "entry publishes nothing");
                }
            }
        }
        let n = pubs.len() as u64;
        self.hub.dispatch(self.stream, &pubs, position);
        let stream = self.stream.logical();
        if n > 0 {
            self.metrics.inc(
                "kitbash_bridge_publications_total",
                "Stream entries published to channels.",
                &[("stream", stream.as_str())],
                n,
            );
        }
        if skipped > 0 {
            self.metrics.inc(
                "kitbash_bridge_skipped_total",
                "Stream entries that publish nothing (undecodable; their producer dead-letters such input).",
                &[("stream", stream.as_str())],
                skipped,
            );
        }
    }
}
