//! One client connection: reads commands, answers them in order, writes the hub's pushes from
//! the connection's bounded queue, pings, and closes with Centrifugo's codes.
//!
//! The commands of one frame are processed strictly in order and their replies written as one
//! frame (centrifuge-js sends `connect` and its pending `subscribe`s together). A subscribe's
//! reply is written before any push of that subscription: pushes wait in the queue while the
//! reply (and its recovery) is prepared, and the hub only queues pushes after the position the
//! subscription registered at (see [`crate::hub`]). A push for a subscription that has since
//! ended is dropped when it reaches the front of the queue.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket};
use futures::{SinkExt, StreamExt};
use kitbash_runtime::CancellationToken;
use kitbash_runtime::metrics::Metrics;
use kitbash_schema::Keys;
use kitbash_schema::bridge::{self, Channel};
use serde_json::value::RawValue;

use crate::auth::{Auth, TokenError};
use crate::hub::{self, Hub, Inbound, Out, Outbound};
use crate::protocol::{
    self, Close, Command, ConnectResult, ErrorCode, Method, RefreshResult, SubRefreshResult,
    SubscribeRequest, SubscribeResult,
};
use crate::recover::{self, Limits, Recovery};

/// What every connection shares.
#[derive(Clone)]
pub struct Shared {
    /// The hub.
    pub hub: Hub,
    /// `[bridge]`.
    pub cfg: Arc<kitbash_runtime::config::BridgeConfig>,
    /// Token verifier.
    pub auth: Arc<Auth>,
    /// Redis (recovery reads).
    pub client: fred::prelude::Client,
    /// Key builder.
    pub keys: Keys,
    /// Metrics.
    pub metrics: Metrics,
    /// Open connections of this instance.
    pub connections: Arc<AtomicUsize>,
    /// The daemon's shutdown.
    pub shutdown: CancellationToken,
    /// What `kitbash status` shows of this instance.
    pub counters: Arc<Counters>,
}

/// Totals since start, reported in the heartbeat (`kitbash status`).
#[derive(Debug, Default)]
pub struct Counters {
    /// Connections closed with 3008.
    pub slow_closes: std::sync::atomic::AtomicU64,
    /// Subscribes that recovered every missed publication.
    pub recovered: std::sync::atomic::AtomicU64,
    /// Subscribes that asked to recover and could not.
    pub not_recovered: std::sync::atomic::AtomicU64,
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Shared")
    }
}

static NEXT_SUB: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);

/// The server version the connect reply names.
pub const VERSION: &str = concat!("kitbash-bridge ", env!("CARGO_PKG_VERSION"));

struct Sub {
    id: u64,
    channel: Channel,
    /// Subscription token expiry, Unix seconds.
    exp: Option<u64>,
}

struct Conn {
    sh: Shared,
    out: Outbound,
    /// Its id's 16 random bytes, formatted when a reply names it ([`client_id`]): 16 bytes in
    /// the connection rather than a 36-byte string on the heap.
    client: [u8; 16],
    user: Option<String>,
    exp: Option<u64>,
    subs: HashMap<String, Sub>,
    by_id: HashMap<u64, u64>,
    tokens: f64,
    refilled: Instant,
    pong_due: Option<Instant>,
}

/// The client id the connect and refresh replies name: `client`'s 16 random bytes as a UUID.
fn client_id(client: [u8; 16]) -> String {
    let h = hex::encode(client);
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

fn now_s() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Serves one upgraded socket until it closes or the daemon shuts down.
///
/// Not an `async fn`, for memory: an async fn keeps its arguments in its future for its whole
/// life, even once moved out, so the `WebSocket` (~0.4 KiB, moved into the split halves'
/// shared allocation at once) and a second `Shared` would sit in every idle connection's
/// future. The connection's state is built here; the future holds only what it uses.
pub fn serve(socket: WebSocket, sh: Shared) -> impl std::future::Future<Output = ()> + Send {
    let n = sh.connections.fetch_add(1, Ordering::Relaxed) + 1;
    let over = n > sh.cfg.max_connections;
    let (sink, stream) = socket.split();
    let (out, inbound) = hub::queue(sh.cfg.max_queue_bytes);
    let c = Conn {
        tokens: sh.cfg.commands_per_s as f64,
        sh,
        out,
        client: rand::random(),
        user: None,
        exp: None,
        subs: HashMap::new(),
        by_id: HashMap::new(),
        refilled: Instant::now(),
        pong_due: None,
    };
    run(c, inbound, sink, stream, over)
}

type Sink = futures::stream::SplitSink<WebSocket, Message>;
type Stream = futures::stream::SplitStream<WebSocket>;

async fn run(mut c: Conn, inbound: Inbound, mut sink: Sink, mut stream: Stream, over: bool) {
    if over {
        let _ = Box::pin(close(&mut sink, Close::ConnectionLimit, &c.sh.metrics)).await;
        c.sh.connections.fetch_sub(1, Ordering::Relaxed);
        return;
    }
    let ping_every = Duration::from_secs(u64::from(c.sh.cfg.ping_s));
    let mut next_ping = Instant::now() + ping_every;
    let why = loop {
        let timer = c.next_timer(next_ping);
        tokio::select! {
            biased;
            _ = c.sh.shutdown.cancelled() => break Close::Shutdown,
            _ = inbound.slowed() => {
                if inbound.is_slow() { break Close::Slow; }
            }
            msg = stream.next() => {
                let text = match msg {
                    Some(Ok(Message::Text(t))) => t,
                    Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
                    Some(Ok(Message::Binary(_))) => break Close::BadRequest,
                    Some(Ok(Message::Close(_))) | None => break Close::Shutdown,
                    Some(Err(e)) => {
                        tracing::debug!(error = %e, "websocket read failed");
                        // Oversized frames and protocol violations; a vanished peer gets the
                        // close frame nobody reads.
                        break Close::BadRequest;
                    }
                };
                // Boxed while it runs (here and below): awaited inline, the heaviest path
                // would size every idle connection's future (see the test at the end).
                match Box::pin(c.frame(&text)).await {
                    Ok(replies) if replies.is_empty() => {}
                    Ok(replies) => {
                        if Box::pin(sink.send(Message::Text(replies.into()))).await.is_err() { break Close::Shutdown; }
                    }
                    Err((replies, close_with)) => {
                        if !replies.is_empty() {
                            let _ = Box::pin(sink.send(Message::Text(replies.into()))).await;
                        }
                        break close_with;
                    }
                }
            }
            o = inbound.recv() => {
                if Box::pin(c.drain(o, &inbound, &mut sink)).await.is_err() { break Close::Shutdown; }
            }
            _ = tokio::time::sleep_until(timer.into()) => {
                let now = Instant::now();
                if c.pong_due.is_some_and(|d| now >= d) { break Close::NoPong; }
                if c.exp.is_some_and(|e| now_s() >= e) { break Close::Expired; }
                if let Some(push) = c.expire_subs()
                    && Box::pin(sink.send(Message::Text(push.into()))).await.is_err()
                {
                    break Close::Shutdown;
                }
                if now >= next_ping {
                    next_ping = now + ping_every;
                    if c.user.is_some() {
                        if Box::pin(sink.send(Message::Text(Utf8Bytes::from_static("{}")))).await.is_err() { break Close::Shutdown; }
                        if c.pong_due.is_none() {
                            c.pong_due = Some(now + Duration::from_secs(u64::from(c.sh.cfg.pong_timeout_s)));
                        }
                    }
                }
            }
        }
    };
    let sh = &c.sh;
    for (_, s) in c.subs.drain() {
        sh.hub.unsubscribe(&s.channel, s.id);
    }
    if why == Close::Slow {
        sh.counters.slow_closes.fetch_add(1, Ordering::Relaxed);
    }
    if why != Close::Shutdown || sh.shutdown.is_cancelled() {
        let _ = Box::pin(close(&mut sink, why, &sh.metrics)).await;
    }
    sh.connections.fetch_sub(1, Ordering::Relaxed);
}

async fn close<S>(sink: &mut S, why: Close, metrics: &Metrics) -> Result<(), axum::Error>
where
    S: futures::Sink<Message, Error = axum::Error> + Unpin,
{
    metrics.inc(
        "kitbash_bridge_closes_total",
        "Connections the bridge closed, by reason.",
        &[("reason", why.label())],
        1,
    );
    sink.send(Message::Close(Some(CloseFrame {
        code: why.code(),
        reason: Utf8Bytes::from_static(why.reason()),
    })))
    .await?;
    sink.close().await
}

/// Largest frame of pushes the writer joins from the queue, bytes.
const BATCH_BYTES: usize = 64 << 10;

/// The frame [`Conn::drain`] builds: nothing yet, one queued push's shared text as it is, or
/// several pieces joined by newlines (one command or push a line, as the protocol frames them).
#[derive(Default)]
enum Batch {
    #[default]
    Empty,
    One(Utf8Bytes),
    Joined(String),
}

impl Batch {
    /// Adds a queued push's text: kept as it is while it is the only piece.
    fn push(&mut self, text: Utf8Bytes) {
        match self {
            Batch::Empty => *self = Batch::One(text),
            _ => self.push_str(&text),
        }
    }

    /// Adds a piece, joining the batch into a string from the second piece on.
    fn push_str(&mut self, piece: &str) {
        match std::mem::take(self) {
            Batch::Empty => *self = Batch::Joined(piece.to_owned()),
            Batch::One(first) => {
                let mut s = String::with_capacity(first.len() + 1 + piece.len());
                s.push_str(&first);
                s.push('\n');
                s.push_str(piece);
                *self = Batch::Joined(s);
            }
            Batch::Joined(mut s) => {
                s.push('\n');
                s.push_str(piece);
                *self = Batch::Joined(s);
            }
        }
    }

    /// Its length in bytes.
    fn len(&self) -> usize {
        match self {
            Batch::Empty => 0,
            Batch::One(t) => t.len(),
            Batch::Joined(s) => s.len(),
        }
    }

    /// The frame's text; `None` when nothing is to be written.
    fn into_text(self) -> Option<Utf8Bytes> {
        match self {
            Batch::Empty => None,
            Batch::One(t) => Some(t),
            Batch::Joined(s) => Some(s.into()),
        }
    }
}

impl Conn {
    fn next_timer(&self, next_ping: Instant) -> Instant {
        let mut t = next_ping;
        if let Some(d) = self.pong_due {
            t = t.min(d);
        }
        let soonest_exp = self
            .subs
            .values()
            .filter_map(|s| s.exp)
            .chain(self.exp)
            .min();
        if let Some(e) = soonest_exp {
            let left = e.saturating_sub(now_s());
            t = t.min(Instant::now() + Duration::from_secs(left));
        }
        t
    }

    /// Ends subscriptions whose token expired without a refresh (code 2501: the SDK gets a new
    /// token and subscribes again).
    fn expire_subs(&mut self) -> Option<String> {
        let now = now_s();
        let gone: Vec<String> = self
            .subs
            .iter()
            .filter(|(_, s)| s.exp.is_some_and(|e| now >= e))
            .map(|(k, _)| k.clone())
            .collect();
        if gone.is_empty() {
            return None;
        }
        let mut frames = Vec::new();
        for name in gone {
            if let Some(s) = self.subs.remove(&name) {
                self.by_id.remove(&s.id);
                self.sh.hub.unsubscribe(&s.channel, s.id);
                frames.push(protocol::unsubscribe_push(
                    &name,
                    2501,
                    "subscription expired",
                ));
            }
        }
        Some(frames.join("\n"))
    }

    /// Writes `first` and whatever else is queued (up to [`BATCH_BYTES`]) as one frame.
    ///
    /// Most wake-ups find a single push queued (a client gets one publication at a time at
    /// ordinary rates): that push's text, the frame the hub encoded once and shares with every
    /// subscriber of the channel, is written as it is, with no batch string allocated and
    /// copied for it. Only a second item starts a joined batch.
    async fn drain<S>(
        &mut self,
        first: Out,
        inbound: &Inbound,
        sink: &mut S,
    ) -> Result<(), axum::Error>
    where
        S: futures::Sink<Message, Error = axum::Error> + Unpin,
    {
        let mut batch = Batch::default();
        let mut taken = 0usize;
        // Whether a pop found the queue empty (and so already freed its buffer).
        let mut drained = false;
        let mut next = Some(first);
        while let Some(o) = next.take() {
            match o {
                Out::Push { sub, offset, text } => {
                    taken += text.len();
                    let live = self
                        .by_id
                        .get(&sub)
                        .is_some_and(|skip| offset == 0 || offset > *skip);
                    if live {
                        batch.push(text);
                    }
                }
                Out::Unsubscribe { sub, channel } => {
                    if let Some(s) = self.subs.get(&channel).filter(|s| s.id == sub) {
                        let id = s.id;
                        self.subs.remove(&channel);
                        self.by_id.remove(&id);
                        batch.push_str(&protocol::unsubscribe_push(
                            &channel,
                            protocol::UNSUBSCRIBE_INSUFFICIENT,
                            "insufficient state",
                        ));
                    }
                }
            }
            if batch.len() < BATCH_BYTES {
                // Frees the queue's buffer when it finds the queue empty (see below).
                next = inbound.try_recv_or_release();
                drained = next.is_none();
            }
        }
        // Freed before the write rather than after: pushes that arrive meanwhile allocate a
        // buffer again either way.
        if !drained {
            inbound.release_if_empty();
        }
        let r = match batch.into_text() {
            None => Ok(()),
            Some(text) => sink.send(Message::Text(text)).await,
        };
        inbound.written(taken);
        r
    }

    fn allow(&mut self) -> bool {
        let rate = f64::from(self.sh.cfg.commands_per_s);
        let now = Instant::now();
        self.tokens =
            (self.tokens + now.duration_since(self.refilled).as_secs_f64() * rate).min(rate);
        self.refilled = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }

    /// Processes one text frame; `Err` closes the connection (after writing the replies).
    async fn frame(&mut self, text: &str) -> Result<String, (String, Close)> {
        let mut replies: Vec<String> = Vec::new();
        for line in text.split('\n') {
            if line.trim().is_empty() {
                continue;
            }
            let cmd: Command = match serde_json::from_str(line) {
                Ok(c) => c,
                Err(_) => return Err((replies.join("\n"), Close::BadRequest)),
            };
            let method = cmd.method();
            let name = method_name(&method);
            if self.user.is_none() && !matches!(method, Method::Connect(_)) {
                return Err((replies.join("\n"), Close::BadRequest));
            }
            if !matches!(method, Method::Pong) {
                self.sh.metrics.inc(
                    "kitbash_bridge_commands_total",
                    "Client commands, by method.",
                    &[("method", name)],
                    1,
                );
                if !self.allow() {
                    replies.push(protocol::error_reply(cmd.id, ErrorCode::TooManyRequests));
                    continue;
                }
            }
            match self.command(cmd.id, method).await {
                Ok(Some(r)) => replies.push(r),
                Ok(None) => {}
                Err(close) => return Err((replies.join("\n"), close)),
            }
        }
        Ok(replies.join("\n"))
    }

    async fn command(&mut self, id: u32, method: Method<'_>) -> Result<Option<String>, Close> {
        let err = |e: ErrorCode| Ok(Some(protocol::error_reply(id, e)));
        match method {
            Method::Pong => {
                self.pong_due = None;
                Ok(None)
            }
            Method::Connect(req) => {
                if self.user.is_some() {
                    return Err(Close::BadRequest);
                }
                let grant = if req.token.is_empty() {
                    if !self.sh.cfg.anonymous {
                        return err(ErrorCode::Unauthorized);
                    }
                    crate::auth::Grant {
                        user: String::new(),
                        exp: None,
                    }
                } else {
                    match self.sh.auth.connection(&req.token) {
                        Ok(g) => g,
                        Err(TokenError::Expired) => return err(ErrorCode::TokenExpired),
                        Err(_) => return Err(Close::InvalidToken),
                    }
                };
                self.user = Some(grant.user);
                self.exp = grant.exp;
                let client = client_id(self.client);
                let r = ConnectResult {
                    client: &client,
                    version: VERSION,
                    expires: grant.exp.is_some(),
                    ttl: grant.exp.map_or(0, Auth::ttl),
                    ping: self.sh.cfg.ping_s,
                    pong: true,
                };
                Ok(Some(protocol::reply(id, "connect", &r)))
            }
            Method::Refresh(req) => match self.sh.auth.connection(&req.token) {
                Ok(g) if Some(&g.user) == self.user.as_ref() => {
                    self.exp = g.exp;
                    let client = client_id(self.client);
                    let r = RefreshResult {
                        client: &client,
                        version: VERSION,
                        expires: g.exp.is_some(),
                        ttl: g.exp.map_or(0, Auth::ttl),
                    };
                    Ok(Some(protocol::reply(id, "refresh", &r)))
                }
                Err(TokenError::Expired) => err(ErrorCode::TokenExpired),
                _ => Err(Close::InvalidToken),
            },
            Method::SubRefresh(req) => {
                let user = self.user.clone().unwrap_or_default();
                let Some(sub) = self.subs.get_mut(&req.channel) else {
                    return err(ErrorCode::BadRequest);
                };
                match self.sh.auth.subscription(&req.token, &user, &req.channel) {
                    Ok(g) => {
                        sub.exp = g.exp;
                        let r = SubRefreshResult {
                            expires: g.exp.is_some(),
                            ttl: g.exp.map_or(0, Auth::ttl),
                        };
                        Ok(Some(protocol::reply(id, "sub_refresh", &r)))
                    }
                    Err(TokenError::Expired) => err(ErrorCode::TokenExpired),
                    Err(_) => err(ErrorCode::PermissionDenied),
                }
            }
            Method::Subscribe(req) => Ok(Some(self.subscribe(id, req).await)),
            Method::Unsubscribe(req) => {
                if let Some(s) = self.subs.remove(&req.channel) {
                    self.by_id.remove(&s.id);
                    self.sh.hub.unsubscribe(&s.channel, s.id);
                }
                Ok(Some(format!("{{\"id\":{id},\"unsubscribe\":{{}}}}")))
            }
            Method::Publish => err(ErrorCode::PermissionDenied),
            Method::NotAvailable(_) => err(ErrorCode::NotAvailable),
            Method::Send => Ok(None),
            Method::Unknown => err(ErrorCode::MethodNotFound),
        }
    }

    async fn subscribe(&mut self, id: u32, req: &SubscribeRequest) -> String {
        let fail = |e: ErrorCode| protocol::error_reply(id, e);
        let channel = match Channel::parse(&req.channel) {
            Ok(c) => c,
            Err(_) => return fail(ErrorCode::UnknownChannel),
        };
        if self.subs.contains_key(&req.channel) {
            return fail(ErrorCode::AlreadySubscribed);
        }
        if self.subs.len() >= self.sh.cfg.max_subscriptions {
            return fail(ErrorCode::LimitExceeded);
        }
        let mut exp = None;
        if !self.sh.cfg.public.iter().any(|f| f == channel.family()) {
            if req.token.is_empty() {
                return fail(ErrorCode::PermissionDenied);
            }
            let user = self.user.clone().unwrap_or_default();
            match self.sh.auth.subscription(&req.token, &user, &req.channel) {
                Ok(g) => exp = g.exp,
                Err(TokenError::Expired) => return fail(ErrorCode::TokenExpired),
                Err(_) => return fail(ErrorCode::PermissionDenied),
            }
        }
        // Unique in the process: the hub tells subscriptions of one channel apart by it.
        let sub_id = NEXT_SUB.fetch_add(1, Ordering::Relaxed);
        let reg = self.sh.hub.subscribe(&channel, sub_id, self.out.clone());
        let latest: Vec<Box<RawValue>> = reg
            .latest
            .iter()
            .filter_map(|l| RawValue::from_string(l.to_string()).ok())
            .collect();
        let mut result = SubscribeResult {
            expires: exp.is_some(),
            ttl: exp.map_or(0, Auth::ttl),
            recoverable: false,
            epoch: "",
            publications: &[],
            recovered: false,
            offset: 0,
            positioned: false,
            was_recovering: false,
        };
        let mut skip_upto = 0;
        let mut recovered_pubs: Vec<Box<RawValue>> = Vec::new();
        let Some(stream) = channel.stream() else {
            // No history: the latest publication, if any.
            let refs: Vec<&RawValue> = latest.iter().map(AsRef::as_ref).collect();
            result.publications = &refs;
            let reply = protocol::reply(id, "subscribe", &result);
            self.add(req, channel, sub_id, 0, exp);
            return reply;
        };
        let (Some(position), Some(epoch)) = (reg.position, reg.epoch) else {
            // The feed has not read its stream yet: temporary, the SDK tries again.
            self.sh.hub.unsubscribe(&channel, sub_id);
            return fail(ErrorCode::Internal);
        };
        let epoch_holder = epoch;
        let top = bridge::offset_of(&position).unwrap_or(0);
        result.recoverable = true;
        result.positioned = true;
        result.epoch = &epoch_holder;
        result.offset = top;
        let mut use_latest = true;
        if req.recover {
            result.was_recovering = true;
            let outcome = if !req.epoch.is_empty() && req.epoch != epoch_holder {
                Ok(Recovery::Incomplete("another epoch"))
            } else {
                let limits = Limits {
                    max_publications: self.sh.cfg.recover_max,
                    max_scan: self.sh.cfg.recover_scan_max,
                };
                recover::recover(
                    &self.sh.client,
                    &self.sh.keys,
                    stream,
                    &channel,
                    req.offset,
                    &position,
                    limits,
                )
                .await
            };
            match outcome {
                Ok(Recovery::Complete(pubs)) => {
                    result.recovered = true;
                    use_latest = false;
                    if req.offset > top {
                        skip_upto = req.offset;
                        result.offset = req.offset;
                    }
                    recovered_pubs = pubs
                        .into_iter()
                        .filter_map(|p| RawValue::from_string(p).ok())
                        .collect();
                    self.count_recovery("recovered");
                }
                Ok(Recovery::Incomplete(why)) => {
                    tracing::debug!(channel = %req.channel, why, "recovery incomplete");
                    self.count_recovery("not_recovered");
                    if req.flag & protocol::FLAG_REJECT_UNRECOVERED != 0 {
                        self.sh.hub.unsubscribe(&channel, sub_id);
                        return fail(ErrorCode::UnrecoverablePosition);
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, channel = %req.channel, "recovery failed");
                    self.sh.hub.unsubscribe(&channel, sub_id);
                    return fail(ErrorCode::Internal);
                }
            }
        }
        let refs: Vec<&RawValue> = if use_latest {
            latest.iter().map(AsRef::as_ref).collect()
        } else {
            recovered_pubs.iter().map(AsRef::as_ref).collect()
        };
        result.publications = &refs;
        let reply = protocol::reply(id, "subscribe", &result);
        self.add(req, channel, sub_id, skip_upto, exp);
        reply
    }

    fn add(
        &mut self,
        req: &SubscribeRequest,
        channel: Channel,
        id: u64,
        skip_upto: u64,
        exp: Option<u64>,
    ) {
        // Publications at or below `skip_upto` are not delivered (a client recovered to a
        // position this instance's reader had not reached yet).
        self.by_id.insert(id, skip_upto);
        self.subs
            .insert(req.channel.clone(), Sub { id, channel, exp });
    }

    fn count_recovery(&self, result: &'static str) {
        let c = if result == "recovered" {
            &self.sh.counters.recovered
        } else {
            &self.sh.counters.not_recovered
        };
        c.fetch_add(1, Ordering::Relaxed);
        self.sh.metrics.inc(
            "kitbash_bridge_recoveries_total",
            "Subscribes that asked to recover, by result.",
            &[("result", result)],
            1,
        );
    }
}

fn method_name(m: &Method<'_>) -> &'static str {
    match m {
        Method::Pong => "pong",
        Method::Connect(_) => "connect",
        Method::Subscribe(_) => "subscribe",
        Method::Unsubscribe(_) => "unsubscribe",
        Method::Refresh(_) => "refresh",
        Method::SubRefresh(_) => "sub_refresh",
        Method::Publish => "publish",
        Method::NotAvailable(n) => n,
        Method::Send => "send",
        Method::Unknown => "unknown",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_batch_keeps_one_push_as_it_is_and_joins_more_by_lines() {
        let mut b = Batch::default();
        assert_eq!(b.len(), 0);
        assert!(Batch::default().into_text().is_none(), "nothing to write");
        b.push(Utf8Bytes::from_static("{\"a\":1}"));
        assert!(matches!(b, Batch::One(_)), "a single push is not copied");
        assert_eq!(b.len(), 7);
        b.push(Utf8Bytes::from_static("{\"b\":2}"));
        b.push_str("{\"c\":3}");
        assert_eq!(b.len(), 23);
        let text = b.into_text().expect("text");
        assert_eq!(text.as_str(), "{\"a\":1}\n{\"b\":2}\n{\"c\":3}");
        let mut u = Batch::default();
        u.push_str("unsubscribe");
        u.push(Utf8Bytes::from_static("push"));
        assert_eq!(u.into_text().expect("text").as_str(), "unsubscribe\npush");
    }

    /// The size of the future `f` returns (without calling it).
    fn future_size<F, Fut>(_: F) -> usize
    where
        F: FnOnce(WebSocket, Shared) -> Fut,
        Fut: std::future::Future,
    {
        std::mem::size_of::<Fut>()
    }

    /// Every connection is one `serve` future, allocated whole for the connection's life: its
    /// size is the largest state it can be in, so a heavy command path awaited inline (a
    /// subscribe with recovery, a drain) would cost every idle client its bytes. The heavy
    /// paths are boxed while they run; this keeps the idle state small.
    #[test]
    fn an_idle_connection_future_stays_small() {
        let n = future_size(serve);
        eprintln!("serve future: {n} bytes");
        assert!(n <= 2048, "serve's future is {n} bytes");
    }
}
