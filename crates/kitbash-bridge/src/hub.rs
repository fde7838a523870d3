//! The hub: which connection subscribes to which channel, each backing stream's position and
//! epoch, each channel's latest publication, and the fan-out of publications to connections'
//! write queues.
//!
//! **The seam.** A stream's feed dispatches a batch of entries and moves the stream's position
//! under the hub's lock; a subscription registers under the same lock and is told that position
//! `P`. Every entry at or before `P` was dispatched before the subscriber existed (recovery reads
//! those from the stream, up to `P`), every entry after `P` is dispatched to it. So recovered and
//! live publications meet with no gap and no duplicate.
//!
//! **Slow clients.** A connection's queue counts its bytes; a push that would take it past
//! `[bridge] max_queue_bytes` is not queued, and the connection is told to close with 3008. The
//! other connections are not held up: a push is a reference-counted frame cloned into each
//! queue, never a wait.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use axum::extract::ws::Utf8Bytes;
use kitbash_runtime::metrics::Metrics;
use kitbash_schema::StreamName;
use kitbash_schema::bridge::Channel;
use tokio::sync::{Notify, mpsc};

use crate::protocol;

/// What the hub puts in a connection's queue.
#[derive(Debug)]
pub enum Out {
    /// One push frame for subscription `sub`.
    Push {
        /// The subscription it is for (a push for a subscription since removed is dropped).
        sub: u64,
        /// The publication's offset (0: none); the connection drops one at or below the
        /// position a client recovered to from another instance.
        offset: u64,
        /// The frame's text.
        text: Utf8Bytes,
    },
    /// The hub ended subscription `sub` (its stream's history was lost live): tell the client
    /// with an unsubscribe push (code 2500), so it subscribes again and recovers.
    Unsubscribe {
        /// The subscription.
        sub: u64,
        /// Its channel.
        channel: String,
    },
}

/// The sending side of one connection's queue.
#[derive(Clone, Debug)]
pub struct Outbound {
    tx: mpsc::UnboundedSender<Out>,
    queued: Arc<AtomicUsize>,
    slow: Arc<AtomicBool>,
    wake: Arc<Notify>,
    max: usize,
}

/// The receiving side, held by the connection.
#[derive(Debug)]
pub struct Inbound {
    /// The queue.
    pub rx: mpsc::UnboundedReceiver<Out>,
    /// Bytes queued and not yet written.
    pub queued: Arc<AtomicUsize>,
    /// Set when a push did not fit.
    pub slow: Arc<AtomicBool>,
    /// Notified when `slow` is set.
    pub wake: Arc<Notify>,
}

/// A connection's queue, bounded at `max` bytes.
pub fn queue(max: usize) -> (Outbound, Inbound) {
    let (tx, rx) = mpsc::unbounded_channel();
    let queued = Arc::new(AtomicUsize::new(0));
    let slow = Arc::new(AtomicBool::new(false));
    let wake = Arc::new(Notify::new());
    (
        Outbound {
            tx,
            queued: queued.clone(),
            slow: slow.clone(),
            wake: wake.clone(),
            max,
        },
        Inbound {
            rx,
            queued,
            slow,
            wake,
        },
    )
}

impl Outbound {
    /// Queues `text` for subscription `sub`; false when it does not fit (the connection is
    /// then marked slow) or the connection is gone.
    pub fn push(&self, sub: u64, offset: u64, text: &Utf8Bytes) -> bool {
        if self.slow.load(Ordering::Relaxed) {
            return false;
        }
        let n = text.len();
        if self.queued.fetch_add(n, Ordering::Relaxed) + n > self.max {
            self.queued.fetch_sub(n, Ordering::Relaxed);
            self.slow.store(true, Ordering::Relaxed);
            self.wake.notify_one();
            return false;
        }
        if self
            .tx
            .send(Out::Push {
                sub,
                offset,
                text: text.clone(),
            })
            .is_err()
        {
            self.queued.fetch_sub(n, Ordering::Relaxed);
            return false;
        }
        true
    }

    fn unsubscribe(&self, sub: u64, channel: &Channel) {
        let _ = self.tx.send(Out::Unsubscribe {
            sub,
            channel: channel.to_string(),
        });
    }

    /// Whether the connection was marked slow.
    pub fn is_slow(&self) -> bool {
        self.slow.load(Ordering::Relaxed)
    }
}

struct Member {
    sub: u64,
    out: Outbound,
}

#[derive(Default)]
struct StreamState {
    /// Id of the last entry dispatched; `None` until the feed's first read.
    position: Option<String>,
    /// The epoch; `None` until the first check.
    epoch: Option<String>,
}

#[derive(Default)]
struct Inner {
    members: HashMap<Channel, Vec<Member>>,
    streams: HashMap<StreamName, StreamState>,
    latest: HashMap<Channel, Arc<str>>,
}

/// Most channels whose latest publication the hub keeps (one per symbol and document).
pub const MAX_LATEST: usize = 200_000;

/// Shared by the feeds, the connections and the periodic publishers.
#[derive(Clone)]
pub struct Hub {
    inner: Arc<Mutex<Inner>>,
    metrics: Metrics,
}

impl std::fmt::Debug for Hub {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Hub")
    }
}

/// What a subscription registered at.
#[derive(Clone, Debug)]
pub struct Registered {
    /// The stream position `P` (see the module docs), for a stream-backed channel.
    pub position: Option<String>,
    /// The stream's epoch.
    pub epoch: Option<String>,
    /// The channel's latest publication object, if known.
    pub latest: Option<Arc<str>>,
}

/// One publication a feed dispatches: its channels, and the publication object.
#[derive(Debug)]
pub struct Publication {
    /// Channels it goes to.
    pub channels: Vec<Channel>,
    /// `{"data":…,"offset":N}`.
    pub object: Arc<str>,
    /// Its offset.
    pub offset: u64,
}

impl Hub {
    /// An empty hub.
    pub fn new(metrics: Metrics) -> Self {
        Self {
            inner: Arc::new(Mutex::new(Inner::default())),
            metrics,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Registers subscription `sub` of `out` on `channel`.
    pub fn subscribe(&self, channel: &Channel, sub: u64, out: Outbound) -> Registered {
        let mut g = self.lock();
        g.members
            .entry(channel.clone())
            .or_default()
            .push(Member { sub, out });
        let (position, epoch) = match channel.stream().and_then(|s| g.streams.get(&s)) {
            Some(st) => (st.position.clone(), st.epoch.clone()),
            None => (None, None),
        };
        Registered {
            position,
            epoch,
            latest: g.latest.get(channel).cloned(),
        }
    }

    /// Removes subscription `sub` from `channel`.
    pub fn unsubscribe(&self, channel: &Channel, sub: u64) {
        let mut g = self.lock();
        if let Some(v) = g.members.get_mut(channel) {
            v.retain(|m| m.sub != sub);
            if v.is_empty() {
                g.members.remove(channel);
            }
        }
    }

    /// Subscriptions now held, over every channel.
    pub fn subscriptions(&self) -> usize {
        self.lock().members.values().map(Vec::len).sum()
    }

    /// Channels with at least one subscriber.
    pub fn channels(&self) -> usize {
        self.lock().members.len()
    }

    /// Dispatches a feed's batch of `stream` and moves its position to `position`. Returns the
    /// deliveries made.
    pub fn dispatch(&self, stream: StreamName, pubs: &[Publication], position: &str) -> u64 {
        let mut delivered = 0u64;
        let mut slow = 0u64;
        let mut g = self.lock();
        for p in pubs {
            for ch in &p.channels {
                if let Some(members) = g.members.get(ch) {
                    let text: Utf8Bytes = protocol::pub_push(&ch.to_string(), &p.object).into();
                    for m in members {
                        if m.out.push(m.sub, p.offset, &text) {
                            delivered += 1;
                        } else if m.out.is_slow() {
                            slow += 1;
                        }
                    }
                }
                if g.latest.len() < MAX_LATEST || g.latest.contains_key(ch) {
                    g.latest.insert(ch.clone(), p.object.clone());
                }
            }
        }
        g.streams.entry(stream).or_default().position = Some(position.to_owned());
        drop(g);
        self.count(delivered, slow);
        delivered
    }

    fn count(&self, delivered: u64, dropped: u64) {
        if delivered > 0 {
            self.metrics.inc(
                "kitbash_bridge_deliveries_total",
                "Publications queued to a client connection.",
                &[],
                delivered,
            );
        }
        if dropped > 0 {
            self.metrics.inc(
                "kitbash_bridge_dropped_total",
                "Publications not queued because the client was over its queue limit (it is closed with 3008).",
                &[],
                dropped,
            );
        }
    }

    /// Moves `stream`'s position with nothing to dispatch (the feed's first read).
    pub fn set_position(&self, stream: StreamName, position: &str) {
        self.lock().streams.entry(stream).or_default().position = Some(position.to_owned());
    }

    /// `stream`'s position, if known.
    pub fn position(&self, stream: StreamName) -> Option<String> {
        self.lock()
            .streams
            .get(&stream)
            .and_then(|s| s.position.clone())
    }

    /// `stream`'s epoch, if known.
    pub fn epoch(&self, stream: StreamName) -> Option<String> {
        self.lock()
            .streams
            .get(&stream)
            .and_then(|s| s.epoch.clone())
    }

    /// Records `stream`'s epoch; when it replaces another, every subscription of the stream's
    /// channels is ended (their positions mean nothing now). Returns whether it changed.
    pub fn set_epoch(&self, stream: StreamName, epoch: &str) -> bool {
        let mut g = self.lock();
        let st = g.streams.entry(stream).or_default();
        let changed = st.epoch.as_deref().is_some_and(|e| e != epoch);
        st.epoch = Some(epoch.to_owned());
        if changed {
            Self::end_stream(&mut g, stream);
        }
        changed
    }

    /// The stream lost history while being read live (trimmed past the position, replaced,
    /// an entry without an offset): every subscription of its channels is ended with an
    /// unsubscribe push (2500), so clients recover — or learn that they cannot.
    pub fn lost(&self, stream: StreamName) -> usize {
        let mut g = self.lock();
        Self::end_stream(&mut g, stream)
    }

    fn end_stream(g: &mut Inner, stream: StreamName) -> usize {
        let chans: Vec<Channel> = g
            .members
            .keys()
            .filter(|c| c.stream() == Some(stream))
            .cloned()
            .collect();
        let mut n = 0;
        for c in chans {
            if let Some(ms) = g.members.remove(&c) {
                for m in ms {
                    m.out.unsubscribe(m.sub, &c);
                    n += 1;
                }
            }
            g.latest.remove(&c);
        }
        g.latest.retain(|c, _| c.stream() != Some(stream));
        n
    }

    /// Publishes on a channel with no history (fleet, hat): kept as its latest and pushed to
    /// its subscribers.
    pub fn publish_latest(&self, channel: &Channel, data: &str) -> u64 {
        let object: Arc<str> = protocol::publication(data, 0).into();
        let mut g = self.lock();
        let mut delivered = 0;
        let mut slow = 0;
        if let Some(members) = g.members.get(channel) {
            let text: Utf8Bytes = protocol::pub_push(&channel.to_string(), &object).into();
            for m in members {
                if m.out.push(m.sub, 0, &text) {
                    delivered += 1;
                } else if m.out.is_slow() {
                    slow += 1;
                }
            }
        }
        g.latest.insert(channel.clone(), object);
        drop(g);
        self.count(delivered, slow);
        delivered
    }

    /// The latest publication of `channel`, if any.
    pub fn latest(&self, channel: &Channel) -> Option<Arc<str>> {
        self.lock().latest.get(channel).cloned()
    }
}
