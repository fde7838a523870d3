//! A pub/sub subscriber built from `[redis]` that resubscribes after a reconnect and tells its user when messages may have been lost (a [`Gap`]).
//!
//! Pub/sub delivers at most once: messages published while the connection is down, or dropped
//! because the reader fell `[redis] pubsub_capacity` messages behind, are gone. A
//! [`Subscriber`] does not hide that; it reports it in band, as [`Notice::Gap`]:
//! - [`GapReason::Reconnected`]: the connection dropped and came back. The gap is reported only
//!   once the subscriptions are confirmed again, and after every message received before the
//!   reconnect was seen, so a user that reloads its state on the gap misses nothing published
//!   after it reloads, and never applies a message older than the reload on top of it.
//! - [`GapReason::Lagged`]: the reader fell behind the channel's capacity; `n` messages dropped.
//!
//! Gaps are counted in `kitbash_pubsub_gaps_total{subscriber, reason}` when reported.
//!
//! [`Subscriber::open`] returns once Redis has confirmed every subscription: a message published
//! after it returns is received. Dropping the subscriber aborts its connection task and its
//! resubscribe task, which closes the connection.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use bytes::Bytes;
use fred::clients::SubscriberClient;
use fred::prelude::*;
use fred::types::{ConnectHandle, Message};
use tokio::sync::broadcast::error::{RecvError, TryRecvError};
use tokio::sync::{broadcast, mpsc};
use tokio::task::JoinHandle;

use crate::config::RedisConfig;
use crate::error::RuntimeError;
use crate::metrics::Metrics;

/// What [`Subscriber::recv`] hands over.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Notice {
    /// A message published on one of the channels (or matching one of the patterns).
    Message {
        /// The channel it was published on.
        channel: String,
        /// Its payload.
        payload: Bytes,
    },
    /// Messages may have been lost here.
    Gap(Gap),
}

/// Messages may have been lost between the previous notice and the next.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Gap {
    /// Why.
    pub reason: GapReason,
}

/// Why a [`Gap`] happened.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GapReason {
    /// The connection dropped and was made again; subscriptions are confirmed again.
    Reconnected,
    /// The reader fell behind the channel capacity; this many messages were dropped.
    Lagged(u64),
}

impl GapReason {
    /// The `reason` label of `kitbash_pubsub_gaps_total`.
    pub fn label(self) -> &'static str {
        match self {
            GapReason::Reconnected => "reconnected",
            GapReason::Lagged(_) => "lagged",
        }
    }
}

/// A subscriber on its own connection. See the module docs.
pub struct Subscriber {
    client: SubscriberClient,
    /// Messages, as fred broadcasts them (capacity `[redis] pubsub_capacity`).
    messages: broadcast::Receiver<Message>,
    /// Reconnect gaps from the resubscribe task, sent once subscriptions are confirmed again.
    gaps: mpsc::UnboundedReceiver<()>,
    /// A reconnect gap seen, reported after this many messages queued before it.
    pending: Option<usize>,
    /// True once every subscription is confirmed; false from a reconnect until confirmed again.
    subscribed: Arc<AtomicBool>,
    /// The connection task; `None` once it ended.
    connection: Option<ConnectHandle>,
    /// The resubscribe task.
    resubscribe: Option<JoinHandle<()>>,
    /// The `subscriber` label.
    name: String,
    metrics: Metrics,
}

impl std::fmt::Debug for Subscriber {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Subscriber")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

impl Drop for Subscriber {
    fn drop(&mut self) {
        if let Some(t) = self.resubscribe.take() {
            t.abort();
        }
        if let Some(t) = self.connection.take() {
            t.abort();
        }
    }
}

impl Subscriber {
    /// Connects, subscribes to `channels` and `patterns`, and returns once Redis has confirmed
    /// them all. Waits for Redis while it is away (wrap it in a timeout to bound that); dropping
    /// the future leaves nothing running. `name` labels the gap counter.
    pub async fn open(
        cfg: &RedisConfig,
        metrics: &Metrics,
        name: &str,
        channels: &[String],
        patterns: &[String],
    ) -> Result<Self, RuntimeError> {
        let client = crate::redis::builder(cfg)?.build_subscriber_client()?;
        let messages = client.message_rx();
        let mut reconnects = client.reconnect_rx();
        let (gap_tx, gaps) = mpsc::unbounded_channel();
        let subscribed = Arc::new(AtomicBool::new(false));
        let mut sub = Self {
            messages,
            gaps,
            pending: None,
            subscribed: subscribed.clone(),
            connection: None,
            resubscribe: None,
            name: name.to_owned(),
            metrics: metrics.clone(),
            client: client.clone(),
        };
        // Armed before connecting: fred announces the first connection on the same channel, and
        // every later one is a reconnect.
        sub.connection = Some(client.connect());
        let task_client = client.clone();
        sub.resubscribe = Some(tokio::spawn(async move {
            let mut first = true;
            loop {
                match reconnects.recv().await {
                    Ok(_) | Err(RecvError::Lagged(_)) => {}
                    Err(RecvError::Closed) => return,
                }
                if std::mem::take(&mut first) {
                    continue;
                }
                subscribed.store(false, Ordering::SeqCst);
                let mut backoff = crate::Backoff::default();
                loop {
                    match task_client.resubscribe_all().await {
                        Ok(()) => break,
                        Err(e) => {
                            tracing::warn!(error = %e, "cannot resubscribe after a reconnect; retrying");
                            tokio::time::sleep(backoff.next_delay()).await;
                        }
                    }
                }
                subscribed.store(true, Ordering::SeqCst);
                if gap_tx.send(()).is_err() {
                    return;
                }
            }
        }));
        client.wait_for_connect().await?;
        if !channels.is_empty() {
            client.subscribe(channels.to_vec()).await?;
        }
        if !patterns.is_empty() {
            client.psubscribe(patterns.to_vec()).await?;
        }
        sub.subscribed.store(true, Ordering::SeqCst);
        Ok(sub)
    }

    /// Whether every subscription is confirmed and the connection is up.
    pub fn is_subscribed(&self) -> bool {
        self.subscribed.load(Ordering::SeqCst) && self.client.is_connected()
    }

    /// Messages received from Redis and not yet handed over (more than the capacity: a lag
    /// that the next [`recv`](Self::recv) reports).
    pub fn queued(&self) -> usize {
        self.messages.len()
    }

    /// The next message or gap; `None` once the connection task has ended for good.
    pub async fn recv(&mut self) -> Option<Notice> {
        loop {
            if let Some(before) = self.pending {
                if before == 0 {
                    self.pending = None;
                    return Some(self.gap(GapReason::Reconnected));
                }
                match self.messages.try_recv() {
                    Ok(m) => {
                        self.pending = Some(before - 1);
                        return Some(notice_of(m));
                    }
                    Err(TryRecvError::Lagged(n)) => {
                        self.pending = Some(self.messages.len());
                        return Some(self.gap(GapReason::Lagged(n)));
                    }
                    Err(TryRecvError::Empty | TryRecvError::Closed) => {
                        self.pending = Some(0);
                        continue;
                    }
                }
            }
            let ended = async {
                match self.connection.as_mut() {
                    Some(t) => {
                        let _ = t.await;
                    }
                    None => std::future::pending::<()>().await,
                }
            };
            tokio::select! {
                biased;
                g = self.gaps.recv() => match g {
                    Some(()) => self.pending = Some(self.messages.len()),
                    None => return None,
                },
                m = self.messages.recv() => match m {
                    Ok(m) => return Some(notice_of(m)),
                    Err(RecvError::Lagged(n)) => return Some(self.gap(GapReason::Lagged(n))),
                    Err(RecvError::Closed) => return None,
                },
                () = ended => {
                    self.connection = None;
                    return None;
                }
            }
        }
    }

    fn gap(&self, reason: GapReason) -> Notice {
        self.metrics.inc(
            "kitbash_pubsub_gaps_total",
            "Pub/sub gaps reported to a subscriber (messages may have been lost): after a reconnect, or when the reader lagged.",
            &[("subscriber", self.name.as_str()), ("reason", reason.label())],
            1,
        );
        tracing::warn!(subscriber = %self.name, reason = reason.label(), ?reason, "pub/sub gap: messages may have been lost");
        Notice::Gap(Gap { reason })
    }
}

fn notice_of(m: Message) -> Notice {
    let payload = match m.value {
        Value::Bytes(b) => b,
        Value::String(s) => Bytes::copy_from_slice(s.as_bytes()),
        Value::Integer(i) => Bytes::from(i.to_string()),
        Value::Double(d) => Bytes::from(d.to_string()),
        _ => Bytes::new(),
    };
    Notice::Message {
        channel: m.channel.to_string(),
        payload,
    }
}
