//! Centrifugo's client protocol v2, JSON encoding: the commands a client sends, the replies and
//! pushes the bridge writes, and the error and close codes (`docs/PROTOCOL.md`).
//!
//! Keys are the protobuf definition's snake_case names; zero values are omitted; `data` is raw
//! JSON. Several commands (or replies) share one text frame, separated by `\n`.

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

/// One client command. Exactly one method field is set; none at all is a pong.
#[derive(Debug, Default, Deserialize)]
pub struct Command {
    /// Command id, echoed in the reply (0: no reply expected).
    #[serde(default)]
    pub id: u32,
    /// `connect`.
    pub connect: Option<ConnectRequest>,
    /// `subscribe`.
    pub subscribe: Option<SubscribeRequest>,
    /// `unsubscribe`.
    pub unsubscribe: Option<ChannelRequest>,
    /// `refresh` (a new connection token).
    pub refresh: Option<TokenRequest>,
    /// `sub_refresh` (a new subscription token).
    pub sub_refresh: Option<SubRefreshRequest>,
    /// `publish` (refused: the fleet writes, clients read).
    pub publish: Option<serde::de::IgnoredAny>,
    /// `presence` (not available).
    pub presence: Option<serde::de::IgnoredAny>,
    /// `presence_stats` (not available).
    pub presence_stats: Option<serde::de::IgnoredAny>,
    /// `history` (not available: recovery is the way to the past).
    pub history: Option<serde::de::IgnoredAny>,
    /// `rpc` (not available).
    pub rpc: Option<serde::de::IgnoredAny>,
    /// `send` (asynchronous message; dropped, no reply).
    pub send: Option<serde::de::IgnoredAny>,
}

/// What a command asks for.
#[derive(Debug)]
pub enum Method<'a> {
    /// An empty command: the answer to a server ping.
    Pong,
    /// See [`ConnectRequest`].
    Connect(&'a ConnectRequest),
    /// See [`SubscribeRequest`].
    Subscribe(&'a SubscribeRequest),
    /// See [`ChannelRequest`].
    Unsubscribe(&'a ChannelRequest),
    /// See [`TokenRequest`].
    Refresh(&'a TokenRequest),
    /// See [`SubRefreshRequest`].
    SubRefresh(&'a SubRefreshRequest),
    /// A client publication (refused with 103).
    Publish,
    /// A method the bridge does not offer (108): presence, presence_stats, history, rpc.
    NotAvailable(&'static str),
    /// An asynchronous `send` (ignored).
    Send,
    /// A command with an id but no method the bridge knows (104).
    Unknown,
}

impl Command {
    /// The method of this command.
    pub fn method(&self) -> Method<'_> {
        if let Some(c) = &self.connect {
            Method::Connect(c)
        } else if let Some(s) = &self.subscribe {
            Method::Subscribe(s)
        } else if let Some(u) = &self.unsubscribe {
            Method::Unsubscribe(u)
        } else if let Some(r) = &self.refresh {
            Method::Refresh(r)
        } else if let Some(r) = &self.sub_refresh {
            Method::SubRefresh(r)
        } else if self.publish.is_some() {
            Method::Publish
        } else if self.presence.is_some() {
            Method::NotAvailable("presence")
        } else if self.presence_stats.is_some() {
            Method::NotAvailable("presence_stats")
        } else if self.history.is_some() {
            Method::NotAvailable("history")
        } else if self.rpc.is_some() {
            Method::NotAvailable("rpc")
        } else if self.send.is_some() {
            Method::Send
        } else if self.id == 0 {
            Method::Pong
        } else {
            Method::Unknown
        }
    }
}

/// `connect`.
#[derive(Debug, Default, Deserialize)]
pub struct ConnectRequest {
    /// Connection JWT.
    #[serde(default)]
    pub token: String,
    /// SDK name (informational).
    #[serde(default)]
    pub name: String,
    /// SDK version (informational).
    #[serde(default)]
    pub version: String,
}

/// `subscribe`.
#[derive(Debug, Default, Deserialize)]
pub struct SubscribeRequest {
    /// Channel name.
    #[serde(default)]
    pub channel: String,
    /// Subscription JWT, for channels that are not public.
    #[serde(default)]
    pub token: String,
    /// Whether to recover from `offset` + `epoch`.
    #[serde(default)]
    pub recover: bool,
    /// Last offset the client saw (0 or absent: none).
    #[serde(default)]
    pub offset: u64,
    /// Epoch of that offset.
    #[serde(default)]
    pub epoch: String,
    /// Flag bits: 1 channel compaction (ignored), 2 reject an unrecoverable position (112).
    #[serde(default)]
    pub flag: u64,
}

/// The subscribe flag bit asking for error 112 instead of `recovered: false`.
pub const FLAG_REJECT_UNRECOVERED: u64 = 2;

/// `unsubscribe`.
#[derive(Debug, Default, Deserialize)]
pub struct ChannelRequest {
    /// Channel name.
    #[serde(default)]
    pub channel: String,
}

/// `refresh`.
#[derive(Debug, Default, Deserialize)]
pub struct TokenRequest {
    /// The new connection JWT.
    #[serde(default)]
    pub token: String,
}

/// `sub_refresh`.
#[derive(Debug, Default, Deserialize)]
pub struct SubRefreshRequest {
    /// Channel name.
    #[serde(default)]
    pub channel: String,
    /// The new subscription JWT.
    #[serde(default)]
    pub token: String,
}

fn is_zero(v: &u64) -> bool {
    *v == 0
}
fn is_false(v: &bool) -> bool {
    !*v
}

/// `connect` result.
#[derive(Debug, Serialize)]
pub struct ConnectResult<'a> {
    /// The connection's id (a UUID).
    pub client: &'a str,
    /// Server version.
    pub version: &'a str,
    /// Whether the token expires (the client then refreshes it).
    #[serde(skip_serializing_if = "is_false")]
    pub expires: bool,
    /// Seconds until it does.
    #[serde(skip_serializing_if = "is_zero")]
    pub ttl: u64,
    /// Server ping period, seconds.
    pub ping: u32,
    /// Whether the client must answer pings.
    pub pong: bool,
}

/// `refresh` result.
#[derive(Debug, Serialize)]
pub struct RefreshResult<'a> {
    /// The connection's id.
    pub client: &'a str,
    /// Server version.
    pub version: &'a str,
    /// Whether the new token expires.
    #[serde(skip_serializing_if = "is_false")]
    pub expires: bool,
    /// Seconds until it does.
    #[serde(skip_serializing_if = "is_zero")]
    pub ttl: u64,
}

/// `sub_refresh` result.
#[derive(Debug, Serialize)]
pub struct SubRefreshResult {
    /// Whether the new token expires.
    #[serde(skip_serializing_if = "is_false")]
    pub expires: bool,
    /// Seconds until it does.
    #[serde(skip_serializing_if = "is_zero")]
    pub ttl: u64,
}

/// `subscribe` result. `publications` are pre-encoded publication objects.
#[derive(Debug, Serialize)]
pub struct SubscribeResult<'a> {
    /// Whether the subscription token expires.
    #[serde(skip_serializing_if = "is_false")]
    pub expires: bool,
    /// Seconds until it does.
    #[serde(skip_serializing_if = "is_zero")]
    pub ttl: u64,
    /// Whether the channel keeps history a client can recover from.
    #[serde(skip_serializing_if = "is_false")]
    pub recoverable: bool,
    /// The history's incarnation.
    #[serde(skip_serializing_if = "str::is_empty")]
    pub epoch: &'a str,
    /// Publications: the recovered ones, or the channel's latest on a fresh subscribe.
    #[serde(skip_serializing_if = "<[_]>::is_empty")]
    pub publications: &'a [&'a RawValue],
    /// Whether every missed publication is in `publications`.
    #[serde(skip_serializing_if = "is_false")]
    pub recovered: bool,
    /// The channel's current position.
    #[serde(skip_serializing_if = "is_zero")]
    pub offset: u64,
    /// Whether the stream position is tracked (offsets are meaningful).
    #[serde(skip_serializing_if = "is_false")]
    pub positioned: bool,
    /// Whether the client asked to recover.
    #[serde(skip_serializing_if = "is_false")]
    pub was_recovering: bool,
}

/// A reply's error.
#[derive(Debug, Serialize)]
pub struct ErrorBody<'a> {
    /// Centrifugo's code.
    pub code: u32,
    /// Its message.
    pub message: &'a str,
    /// Whether retrying may succeed.
    #[serde(skip_serializing_if = "is_false")]
    pub temporary: bool,
}

/// One reply: `{"id":N,"<method>":{…}}` or `{"id":N,"error":{…}}`.
pub fn reply<T: Serialize>(id: u32, method: &str, result: &T) -> String {
    let body = serde_json::to_string(result).unwrap_or_else(|_| "{}".into());
    format!("{{\"id\":{id},\"{method}\":{body}}}")
}

/// An error reply.
pub fn error_reply(id: u32, e: ErrorCode) -> String {
    let body = ErrorBody {
        code: e.code(),
        message: e.message(),
        temporary: e.temporary(),
    };
    format!(
        "{{\"id\":{id},\"error\":{}}}",
        serde_json::to_string(&body).unwrap_or_default()
    )
}

/// A publication object: `{"data":…,"offset":N}` (`offset` omitted when 0).
pub fn publication(data: &str, offset: u64) -> String {
    if offset == 0 {
        format!("{{\"data\":{data}}}")
    } else {
        format!("{{\"data\":{data},\"offset\":{offset}}}")
    }
}

/// A publication push of `channel`, around a pre-encoded publication object.
pub fn pub_push(channel: &str, publication: &str) -> String {
    let ch = serde_json::to_string(channel).unwrap_or_default();
    format!("{{\"push\":{{\"channel\":{ch},\"pub\":{publication}}}}}")
}

/// A server-side unsubscribe push (code ≥ 2500: the SDK subscribes again, recovering).
pub fn unsubscribe_push(channel: &str, code: u32, reason: &str) -> String {
    let ch = serde_json::to_string(channel).unwrap_or_default();
    let reason = serde_json::to_string(reason).unwrap_or_default();
    format!(
        "{{\"push\":{{\"channel\":{ch},\"unsubscribe\":{{\"code\":{code},\"reason\":{reason}}}}}}}"
    )
}

/// The code an unsubscribe push carries when the bridge lost the channel's position live (a
/// trimmed or replaced stream): the SDK resubscribes and recovers, or learns it cannot.
pub const UNSUBSCRIBE_INSUFFICIENT: u32 = 2500;

/// Centrifugo's error codes the bridge answers with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorCode {
    /// 100, temporary.
    Internal,
    /// 101.
    Unauthorized,
    /// 102.
    UnknownChannel,
    /// 103.
    PermissionDenied,
    /// 104.
    MethodNotFound,
    /// 105.
    AlreadySubscribed,
    /// 106.
    LimitExceeded,
    /// 107.
    BadRequest,
    /// 108.
    NotAvailable,
    /// 109 (the SDK refreshes its token).
    TokenExpired,
    /// 111.
    TooManyRequests,
    /// 112.
    UnrecoverablePosition,
}

impl ErrorCode {
    /// The numeric code.
    pub fn code(self) -> u32 {
        match self {
            ErrorCode::Internal => 100,
            ErrorCode::Unauthorized => 101,
            ErrorCode::UnknownChannel => 102,
            ErrorCode::PermissionDenied => 103,
            ErrorCode::MethodNotFound => 104,
            ErrorCode::AlreadySubscribed => 105,
            ErrorCode::LimitExceeded => 106,
            ErrorCode::BadRequest => 107,
            ErrorCode::NotAvailable => 108,
            ErrorCode::TokenExpired => 109,
            ErrorCode::TooManyRequests => 111,
            ErrorCode::UnrecoverablePosition => 112,
        }
    }

    /// Centrifugo's message for it.
    pub fn message(self) -> &'static str {
        match self {
            ErrorCode::Internal => "internal server error",
            ErrorCode::Unauthorized => "unauthorized",
            ErrorCode::UnknownChannel => "unknown channel",
            ErrorCode::PermissionDenied => "permission denied",
            ErrorCode::MethodNotFound => "method not found",
            ErrorCode::AlreadySubscribed => "already subscribed",
            ErrorCode::LimitExceeded => "limit exceeded",
            ErrorCode::BadRequest => "bad request",
            ErrorCode::NotAvailable => "not available",
            ErrorCode::TokenExpired => "token expired",
            ErrorCode::TooManyRequests => "too many requests",
            ErrorCode::UnrecoverablePosition => "unrecoverable position",
        }
    }

    fn temporary(self) -> bool {
        matches!(self, ErrorCode::Internal)
    }
}

/// Close codes (the WebSocket close frame carries the code and the reason).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Close {
    /// 3001: the bridge is shutting down (reconnect).
    Shutdown,
    /// 3004: internal error (reconnect).
    Internal,
    /// 3005: the connection token expired without a refresh (reconnect with a new one).
    Expired,
    /// 3008: the client read too slowly (reconnect).
    Slow,
    /// 3012: no pong (reconnect).
    NoPong,
    /// 3500: invalid token (do not reconnect).
    InvalidToken,
    /// 3501: bad request — not JSON, a binary frame, an oversized frame, a command before
    /// `connect` (do not reconnect).
    BadRequest,
    /// 3504: the instance's connection limit (do not reconnect).
    ConnectionLimit,
}

impl Close {
    /// The close code.
    pub fn code(self) -> u16 {
        match self {
            Close::Shutdown => 3001,
            Close::Internal => 3004,
            Close::Expired => 3005,
            Close::Slow => 3008,
            Close::NoPong => 3012,
            Close::InvalidToken => 3500,
            Close::BadRequest => 3501,
            Close::ConnectionLimit => 3504,
        }
    }

    /// The close reason.
    pub fn reason(self) -> &'static str {
        match self {
            Close::Shutdown => "shutdown",
            Close::Internal => "internal server error",
            Close::Expired => "connection expired",
            Close::Slow => "slow",
            Close::NoPong => "no pong",
            Close::InvalidToken => "invalid token",
            Close::BadRequest => "bad request",
            Close::ConnectionLimit => "connection limit",
        }
    }

    /// The label metrics use.
    pub fn label(self) -> &'static str {
        match self {
            Close::Shutdown => "shutdown",
            Close::Internal => "internal",
            Close::Expired => "expired",
            Close::Slow => "slow",
            Close::NoPong => "no_pong",
            Close::InvalidToken => "invalid_token",
            Close::BadRequest => "bad_request",
            Close::ConnectionLimit => "connection_limit",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn methods_are_told_apart() {
        let m = |s: &str| {
            let c: Command = serde_json::from_str(s).expect(s);
            format!("{:?}", c.method())
                .split('(')
                .next()
                .unwrap_or("")
                .to_owned()
        };
        assert_eq!(m("{}"), "Pong");
        assert_eq!(m(r#"{"id":1,"connect":{"name":"js"}}"#), "Connect");
        assert_eq!(
            m(
                r#"{"id":2,"subscribe":{"channel":"x","recover":true,"offset":7,"epoch":"e","flag":1}}"#
            ),
            "Subscribe"
        );
        assert_eq!(
            m(r#"{"id":3,"publish":{"channel":"x","data":{}}}"#),
            "Publish"
        );
        assert_eq!(m(r#"{"id":4,"history":{"channel":"x"}}"#), "NotAvailable");
        assert_eq!(m(r#"{"id":5,"frobnicate":{}}"#), "Unknown");
    }

    #[test]
    fn golden_frames() {
        assert_eq!(
            reply(
                1,
                "connect",
                &ConnectResult {
                    client: "c",
                    version: "v",
                    expires: false,
                    ttl: 0,
                    ping: 25,
                    pong: true
                }
            ),
            r#"{"id":1,"connect":{"client":"c","version":"v","ping":25,"pong":true}}"#
        );
        let p = publication(r#"{"a":1}"#, 9);
        assert_eq!(
            pub_push("physics:SPY", &p),
            r#"{"push":{"channel":"physics:SPY","pub":{"data":{"a":1},"offset":9}}}"#
        );
        assert_eq!(
            error_reply(3, ErrorCode::TokenExpired),
            r#"{"id":3,"error":{"code":109,"message":"token expired"}}"#
        );
        assert_eq!(
            error_reply(3, ErrorCode::Internal),
            r#"{"id":3,"error":{"code":100,"message":"internal server error","temporary":true}}"#
        );
        assert_eq!(
            unsubscribe_push("c", 2500, "insufficient state"),
            r#"{"push":{"channel":"c","unsubscribe":{"code":2500,"reason":"insufficient state"}}}"#
        );
        let raw: Box<RawValue> = RawValue::from_string(p).expect("raw");
        let pubs = [raw.as_ref()];
        assert_eq!(
            reply(
                2,
                "subscribe",
                &SubscribeResult {
                    expires: false,
                    ttl: 0,
                    recoverable: true,
                    epoch: "ab",
                    publications: &pubs,
                    recovered: true,
                    offset: 9,
                    positioned: true,
                    was_recovering: true
                }
            ),
            r#"{"id":2,"subscribe":{"recoverable":true,"epoch":"ab","publications":[{"data":{"a":1},"offset":9}],"recovered":true,"offset":9,"positioned":true,"was_recovering":true}}"#
        );
    }
}
