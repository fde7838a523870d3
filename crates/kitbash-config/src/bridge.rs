//! `[bridge]`: the WebSocket broadcaster (`kitbash-bridge`), which speaks Centrifugo's client
//! protocol v2 (JSON) so Centrifugo's SDKs connect to it unchanged (`docs/PROTOCOL.md`).

use serde::Deserialize;

use crate::{ConfigError, Section};

/// `[bridge]`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BridgeConfig {
    /// Address of the HTTP server: the WebSocket endpoint at `path` and the dashboard at `/`.
    pub listen: String,
    /// Path of the WebSocket endpoint (Centrifugo's default, so SDK URLs keep working).
    pub path: String,
    /// HMAC secret of connection and subscription JWTs (HS256/384/512). Empty: read it from the
    /// environment variable `token_secret_env`; empty there too: no tokens are accepted.
    pub token_secret: String,
    /// The environment variable that holds the secret when `token_secret` is empty.
    pub token_secret_env: String,
    /// Whether a client may connect without a token (as the anonymous user `""`).
    pub anonymous: bool,
    /// Channel families any connected client may subscribe to without a subscription token
    /// (`physics`, `documents`, `reflex`, `fleet`); the others need a token whose `channel`
    /// claim names the channel.
    pub public: Vec<String>,
    /// Allowed `Origin` header values of browser connections; empty: only the bridge's own
    /// origin (the `Host` the request names), `"*"`: any. Clients that send no `Origin`
    /// (SDKs outside a browser) are always allowed.
    pub allowed_origins: Vec<String>,
    /// Bytes a connection may have queued for writing; a client that falls further behind is
    /// closed with 3008 (slow) while the others go on.
    pub max_queue_bytes: usize,
    /// Largest WebSocket frame or message a client may send, bytes.
    pub max_frame_bytes: usize,
    /// Connections one instance accepts; the next is closed with 3504.
    pub max_connections: usize,
    /// Subscriptions one connection may hold; the next subscribe gets error 106.
    pub max_subscriptions: usize,
    /// Commands a connection may send per second (a burst of as many is allowed); over it the
    /// command gets error 111 and a client that keeps going is closed with 3501.
    pub commands_per_s: u32,
    /// Server ping period, seconds (sent in the connect reply as `ping`; clients reconnect when
    /// nothing arrives within it plus their own margin).
    pub ping_s: u32,
    /// A client that has not answered a ping within this many seconds is closed with 3012.
    pub pong_timeout_s: u32,
    /// Most publications a recovery returns; more missed → `recovered: false` (Centrifugo: 300).
    pub recover_max: usize,
    /// Most stream entries a recovery reads to find a channel's publications (a per-symbol
    /// channel is a filtered view of the shared physics stream); more → `recovered: false`.
    pub recover_scan_max: usize,
    /// How often the fleet channel is published, ms.
    pub fleet_period_ms: u64,
    /// How often each backing stream's epoch is checked (a deleted or replaced stream changes
    /// it), ms.
    pub epoch_check_ms: u64,
    /// Entries one read of a backing stream returns at most.
    pub tail_batch: usize,
    /// WebSocket read buffer per connection, bytes (tungstenite's default is 128 KiB; a bridge
    /// with many idle clients wants it small). It is allocated for the connection's whole life,
    /// idle or not, so it is most of an idle client's memory; clients send little (connect,
    /// subscribe, pongs), and a larger frame still arrives whole (tungstenite grows the buffer to
    /// the frame), in more reads. 512 B: 6.7 KB of RSS per idle client against 10.3 KB at 4 KiB
    /// (docs/BENCHMARKS.md, bridge, session 11).
    pub read_buffer_bytes: usize,
    /// WebSocket write buffer per connection, bytes.
    pub write_buffer_bytes: usize,
}

impl Default for BridgeConfig {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:8000".into(),
            path: "/connection/websocket".into(),
            token_secret: String::new(),
            token_secret_env: "KITBASH_BRIDGE_SECRET".into(),
            anonymous: true,
            public: ["physics", "documents", "reflex", "fleet"]
                .map(String::from)
                .to_vec(),
            allowed_origins: Vec::new(),
            max_queue_bytes: 1 << 20,
            max_frame_bytes: 64 << 10,
            max_connections: 20_000,
            max_subscriptions: 128,
            commands_per_s: 100,
            ping_s: 25,
            pong_timeout_s: 8,
            recover_max: 300,
            recover_scan_max: 100_000,
            fleet_period_ms: 1000,
            epoch_check_ms: 1000,
            tail_batch: 1000,
            read_buffer_bytes: 512,
            write_buffer_bytes: 0,
        }
    }
}

impl BridgeConfig {
    /// The parsed `listen` address, `None` when empty (the bridge then serves nothing).
    pub fn listen_addr(&self) -> Option<std::net::SocketAddr> {
        self.listen.parse().ok()
    }

    /// The token secret: `token_secret`, else the environment variable it names; `None` when
    /// neither is set (no token is accepted).
    pub fn secret(&self) -> Option<Vec<u8>> {
        if !self.token_secret.is_empty() {
            return Some(self.token_secret.clone().into_bytes());
        }
        std::env::var(&self.token_secret_env)
            .ok()
            .filter(|s| !s.is_empty())
            .map(String::into_bytes)
    }
}

impl Section for BridgeConfig {
    const NAME: &'static str = "bridge";
    fn validate(&self) -> Result<(), ConfigError> {
        if !self.listen.is_empty() && self.listen_addr().is_none() {
            return Err(ConfigError::key(
                "listen",
                format!("{:?} is not host:port (or empty to disable)", self.listen),
            ));
        }
        if !self.path.starts_with('/') || self.path == "/" {
            return Err(ConfigError::key(
                "path",
                format!(
                    "{:?} must start with '/' and not be '/' (the dashboard)",
                    self.path
                ),
            ));
        }
        for f in &self.public {
            if !kitbash_schema::bridge::Channel::FAMILIES.contains(&f.as_str()) {
                return Err(ConfigError::key(
                    "public",
                    format!(
                        "{f:?} is not a channel family ({})",
                        kitbash_schema::bridge::Channel::FAMILIES.join(", ")
                    ),
                ));
            }
        }
        let positive = [
            ("max_queue_bytes", self.max_queue_bytes),
            ("max_frame_bytes", self.max_frame_bytes),
            ("max_connections", self.max_connections),
            ("max_subscriptions", self.max_subscriptions),
            ("recover_max", self.recover_max),
            ("recover_scan_max", self.recover_scan_max),
            ("tail_batch", self.tail_batch),
            ("read_buffer_bytes", self.read_buffer_bytes),
        ];
        for (k, v) in positive {
            if v == 0 {
                return Err(ConfigError::key(k, "must be > 0"));
            }
        }
        if self.commands_per_s == 0 {
            return Err(ConfigError::key("commands_per_s", "must be > 0"));
        }
        if self.ping_s == 0 || self.pong_timeout_s == 0 {
            return Err(ConfigError::key(
                "ping_s",
                "ping_s and pong_timeout_s must be > 0",
            ));
        }
        if self.fleet_period_ms < 100 || self.epoch_check_ms < 100 {
            return Err(ConfigError::key(
                "fleet_period_ms",
                "fleet_period_ms and epoch_check_ms must be ≥ 100",
            ));
        }
        Ok(())
    }
}
