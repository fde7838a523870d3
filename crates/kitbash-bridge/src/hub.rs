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

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use axum::extract::ws::Utf8Bytes;
use kitbash_runtime::metrics::Metrics;
use kitbash_schema::StreamName;
use kitbash_schema::bridge::Channel;
use tokio::sync::Notify;

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

/// One connection's queue, shared by its [`Outbound`]s (the hub's members, the connection's
/// own) and its [`Inbound`].
///
/// A `VecDeque` under a mutex rather than a tokio channel, for memory: an unbounded mpsc
/// allocates its first 32-slot block (~1.5 KiB) and its channel state (~0.5 KiB) when created
/// and keeps the block while the connection lives, idle or not; here an empty queue owns no
/// buffer ([`Inbound::release_if_empty`]) and the whole queue is one allocation of ~150 B.
/// The lock is held only to push or pop one item.
#[derive(Debug)]
struct Queue {
    items: Mutex<VecDeque<Out>>,
    /// Bytes queued and not yet written.
    queued: AtomicUsize,
    /// Set when a push did not fit.
    slow: AtomicBool,
    /// The connection (its [`Inbound`]) is gone: pushes fail.
    closed: AtomicBool,
    /// Notified when a push makes the queue non-empty (the connection waits on it when empty).
    ready: Notify,
    /// Notified when `slow` is set.
    wake: Notify,
    /// `[bridge] max_queue_bytes`.
    max: usize,
}

impl Queue {
    fn items(&self) -> std::sync::MutexGuard<'_, VecDeque<Out>> {
        self.items.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Queues `o`; false when the connection is gone.
    fn send(&self, o: Out) -> bool {
        let mut items = self.items();
        // Checked under the lock: `Inbound`'s drop sets it under the same lock, so nothing is
        // queued after the connection cleared its queue.
        if self.closed.load(Ordering::Relaxed) {
            return false;
        }
        let was_empty = items.is_empty();
        items.push_back(o);
        drop(items);
        // The connection only waits when it found the queue empty, so only the push that ends
        // an empty queue needs to wake it (a stored permit if it is not waiting yet).
        if was_empty {
            self.ready.notify_one();
        }
        true
    }
}

/// The sending side of one connection's queue.
#[derive(Clone, Debug)]
pub struct Outbound {
    q: Arc<Queue>,
}

/// The receiving side, held by the connection. Dropping it closes the queue: pushes fail and
/// what was queued is dropped.
#[derive(Debug)]
pub struct Inbound {
    q: Arc<Queue>,
}

/// A connection's queue, bounded at `max` bytes.
pub fn queue(max: usize) -> (Outbound, Inbound) {
    let q = Arc::new(Queue {
        items: Mutex::new(VecDeque::new()),
        queued: AtomicUsize::new(0),
        slow: AtomicBool::new(false),
        closed: AtomicBool::new(false),
        ready: Notify::new(),
        wake: Notify::new(),
        max,
    });
    (Outbound { q: q.clone() }, Inbound { q })
}

impl Inbound {
    /// The next item, waiting for one. Cancel-safe (an item is only taken when this returns),
    /// so it can be a `select!` branch. Never ends: the connection holds an [`Outbound`] of
    /// its own queue.
    pub async fn recv(&self) -> Out {
        loop {
            if let Some(o) = self.try_recv() {
                return o;
            }
            self.q.ready.notified().await;
        }
    }

    /// The next item, if one is queued.
    pub fn try_recv(&self) -> Option<Out> {
        self.q.items().pop_front()
    }

    /// The next item, if one is queued; when none is, frees the queue's buffer in the same
    /// lock (what [`Self::release_if_empty`] does): the end of a drain takes the lock once,
    /// not twice.
    pub fn try_recv_or_release(&self) -> Option<Out> {
        let mut items = self.q.items();
        let o = items.pop_front();
        if o.is_none() && items.capacity() > 0 {
            *items = VecDeque::new();
        }
        o
    }

    /// Frees the queue's buffer if nothing is queued (after a drain): a connection that once
    /// had a burst queued would otherwise keep its peak capacity while it idles.
    pub fn release_if_empty(&self) {
        let mut items = self.q.items();
        if items.is_empty() && items.capacity() > 0 {
            *items = VecDeque::new();
        }
    }

    /// `n` bytes taken from the queue were written (or dropped).
    pub fn written(&self, n: usize) {
        self.q.queued.fetch_sub(n, Ordering::Relaxed);
    }

    /// Whether a push did not fit (the connection is to close with 3008).
    pub fn is_slow(&self) -> bool {
        self.q.slow.load(Ordering::Relaxed)
    }

    /// Resolves when the connection is marked slow (check [`Self::is_slow`] after it).
    pub async fn slowed(&self) {
        self.q.wake.notified().await;
    }
}

impl Drop for Inbound {
    fn drop(&mut self) {
        let mut items = self.q.items();
        self.q.closed.store(true, Ordering::Relaxed);
        // The hub's members may outlive the connection for a moment: what they queued goes now.
        *items = VecDeque::new();
    }
}

impl Outbound {
    /// Queues `text` for subscription `sub`; false when it does not fit (the connection is
    /// then marked slow) or the connection is gone.
    pub fn push(&self, sub: u64, offset: u64, text: &Utf8Bytes) -> bool {
        let q = &self.q;
        if q.slow.load(Ordering::Relaxed) {
            return false;
        }
        let n = text.len();
        if q.queued.fetch_add(n, Ordering::Relaxed) + n > q.max {
            q.queued.fetch_sub(n, Ordering::Relaxed);
            q.slow.store(true, Ordering::Relaxed);
            q.wake.notify_one();
            return false;
        }
        if !q.send(Out::Push {
            sub,
            offset,
            text: text.clone(),
        }) {
            q.queued.fetch_sub(n, Ordering::Relaxed);
            return false;
        }
        true
    }

    fn unsubscribe(&self, sub: u64, channel: &Channel) {
        let _ = self.q.send(Out::Unsubscribe {
            sub,
            channel: channel.to_string(),
        });
    }

    /// Whether the connection was marked slow.
    pub fn is_slow(&self) -> bool {
        self.q.slow.load(Ordering::Relaxed)
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

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn text(s: &'static str) -> Utf8Bytes {
        Utf8Bytes::from_static(s)
    }

    fn pushed(o: Option<Out>) -> Option<(u64, String)> {
        match o? {
            Out::Push { sub, text, .. } => Some((sub, text.as_str().to_owned())),
            Out::Unsubscribe { .. } => None,
        }
    }

    #[tokio::test]
    async fn the_queue_keeps_order_and_wakes_a_waiting_connection() {
        let (out, inbound) = queue(1 << 20);
        assert!(out.push(1, 0, &text("a")));
        assert!(out.push(2, 0, &text("b")));
        assert_eq!(pushed(Some(inbound.recv().await)), Some((1, "a".into())));
        assert_eq!(pushed(inbound.try_recv()), Some((2, "b".into())));
        assert!(inbound.try_recv().is_none());
        // Waiting on an empty queue: a push from another task wakes it.
        let pusher = tokio::spawn({
            let out = out.clone();
            async move {
                tokio::time::sleep(Duration::from_millis(20)).await;
                out.push(3, 0, &text("c"))
            }
        });
        let got = tokio::time::timeout(Duration::from_secs(5), inbound.recv())
            .await
            .expect("woken");
        assert_eq!(pushed(Some(got)), Some((3, "c".into())));
        assert!(pusher.await.expect("join"));
    }

    #[tokio::test]
    async fn recv_is_cancel_safe() {
        let (out, inbound) = queue(1 << 20);
        // A recv dropped while waiting (another select! branch won) loses nothing.
        assert!(
            tokio::time::timeout(Duration::from_millis(10), inbound.recv())
                .await
                .is_err()
        );
        assert!(out.push(1, 0, &text("a")));
        assert_eq!(pushed(Some(inbound.recv().await)), Some((1, "a".into())));
    }

    #[test]
    fn an_empty_queue_gives_its_buffer_back() {
        let (out, inbound) = queue(1 << 20);
        for _ in 0..100 {
            assert!(out.push(1, 0, &text("a")));
        }
        inbound.release_if_empty();
        assert!(inbound.q.items().capacity() >= 100, "kept while not empty");
        while inbound.try_recv().is_some() {}
        inbound.release_if_empty();
        assert_eq!(inbound.q.items().capacity(), 0);
    }

    #[test]
    fn the_last_pop_of_a_drain_gives_the_buffer_back() {
        let (out, inbound) = queue(1 << 20);
        for _ in 0..10 {
            assert!(out.push(1, 0, &text("a")));
        }
        let mut n = 0;
        while inbound.try_recv_or_release().is_some() {
            n += 1;
            assert!(inbound.q.items().capacity() > 0 || n == 10);
        }
        assert_eq!(n, 10, "every item, in one drain");
        assert_eq!(inbound.q.items().capacity(), 0);
    }

    #[tokio::test]
    async fn over_its_bytes_the_connection_is_marked_slow() {
        let (out, inbound) = queue(3);
        assert!(out.push(1, 0, &text("ab")));
        assert!(!inbound.is_slow());
        assert!(!out.push(1, 0, &text("cd")));
        assert!(inbound.is_slow() && out.is_slow());
        tokio::time::timeout(Duration::from_secs(5), inbound.slowed())
            .await
            .expect("told");
        // Bytes written are counted off; a slow queue takes nothing more.
        inbound.written(2);
        assert!(!out.push(1, 0, &text("e")));
    }

    #[test]
    fn pushes_fail_once_the_connection_is_gone() {
        let (out, inbound) = queue(1 << 20);
        assert!(out.push(1, 0, &text("a")));
        drop(inbound);
        assert!(!out.push(1, 0, &text("b")));
        assert_eq!(
            out.q.queued.load(Ordering::Relaxed),
            1,
            "only the first counted"
        );
        assert!(out.q.items().is_empty(), "what was queued is dropped");
    }
}
