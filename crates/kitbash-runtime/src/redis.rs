//! Redis connections with the reliability notes applied: command timeouts, a bounded buffer
//! while disconnected, exponential reconnect; blocking reads open their own connections.
//!
//! Connection failures are reported fast and true: [`connect_client`] answers a refused
//! connection, an unknown host or a rejected password at once with a [`ConnectError`] that names
//! the URL and the cause (the connect timeout is only for a network that does not answer), and
//! [`Redis::connect`] logs the same line while a daemon keeps retrying.

use std::time::{Duration, Instant};

use fred::prelude::*;
use fred::types::config::{Config as FredConfig, ReconnectPolicy, TcpConfig};
use fred::types::{ClusterHash, CustomCommand};

use crate::config::RedisConfig;
use crate::error::RuntimeError;

/// The command connection of one daemon instance. Blocking reads never share it: each reader
/// (a consumer loop, a partition worker, a tail) opens its own connection with
/// `Client::clone_new` or [`builder`], so a `BLOCK` never queues other commands behind it.
#[derive(Clone)]
pub struct Redis {
    /// Every non-blocking command. fred pipelines concurrent commands on it automatically.
    pub client: Client,
}

impl std::fmt::Debug for Redis {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Redis").finish_non_exhaustive()
    }
}

/// Whether `e` is *transient*: Redis cannot do it now but will later, and nothing about the
/// command or its data is wrong — the connection dropped or timed out, the client's buffer is
/// full, or the server answered `OOM` (maxmemory with `noeviction`), `LOADING`, `BUSY`,
/// `READONLY` / `MASTERDOWN` (a failover), `MISCONF` (persistence failing), `TRYAGAIN`,
/// `CLUSTERDOWN` or `NOREPLICAS`. A batch that fails transiently is held and retried, never
/// dead-lettered (see [`crate::consumer::Outcome::Transient`]).
pub fn is_transient(e: &fred::error::Error) -> bool {
    use fred::error::ErrorKind;
    if matches!(
        e.kind(),
        ErrorKind::IO | ErrorKind::Timeout | ErrorKind::Canceled | ErrorKind::Backpressure
    ) {
        return true;
    }
    const CODES: [&str; 9] = [
        "OOM",
        "LOADING",
        "BUSY",
        "READONLY",
        "MASTERDOWN",
        "MISCONF",
        "TRYAGAIN",
        "CLUSTERDOWN",
        "NOREPLICAS",
    ];
    // The code starts the reply, or follows a script's wrapper ("ERR Error running script …:
    // OOM command not allowed …", "… @user_script:1: OOM …").
    let d = e.details();
    d.split(|c: char| c.is_whitespace() || c == ':' || c == '-')
        .any(|w| CODES.contains(&w))
        && !d.contains("BUSYGROUP")
        && !d.contains("BUSYKEY")
}

/// A fred builder configured from `[redis]`: the URL, then `username` and `password` /
/// `password_file` over the URL's, then TLS from `tls_*_file` for a `rediss://` URL.
pub fn builder(cfg: &RedisConfig) -> Result<Builder, RuntimeError> {
    let mut fred_cfg = FredConfig::from_url(&kitbash_config::runtime::fred_url(&cfg.url))?;
    let credentials = cfg.credentials()?;
    if let Some(user) = credentials.username {
        fred_cfg.username = Some(user);
    }
    if let Some(password) = credentials.password {
        fred_cfg.password = Some(password.expose().to_owned());
    }
    if cfg.is_tls() {
        let tls = crate::tls::client_config(&cfg.tls_files())?;
        fred_cfg.tls = Some(fred::types::config::TlsConnector::from(tls).into());
    }
    // Keep retrying the first connection like any later one: a daemon started before Redis
    // waits for it (and reports not-ready) instead of crash-looping.
    fred_cfg.fail_fast = false;
    let mut b = Builder::from_config(fred_cfg);
    let cmd_timeout = Duration::from_millis(cfg.command_timeout_ms);
    let connect_timeout = Duration::from_millis(cfg.connect_timeout_ms);
    let max_buffer = cfg.max_command_buffer;
    let pubsub_capacity = cfg.pubsub_capacity;
    b.with_connection_config(|c| {
        c.connection_timeout = connect_timeout;
        c.internal_command_timeout = cmd_timeout;
        c.max_command_buffer_len = max_buffer;
        c.reconnect_on_auth_error = true;
        c.tcp = TcpConfig {
            nodelay: Some(true),
            ..Default::default()
        };
    })
    .with_performance_config(|p| {
        p.default_command_timeout = cmd_timeout;
        p.broadcast_channel_capacity = pubsub_capacity;
    })
    .set_policy(ReconnectPolicy::new_exponential(
        0,
        cfg.reconnect_min_ms,
        cfg.reconnect_max_ms,
        2,
    ));
    Ok(b)
}

impl Redis {
    /// Builds the client and starts connecting. Does not wait for Redis: commands issued
    /// before it answers wait in the bounded buffer until their timeout.
    pub fn connect(cfg: &RedisConfig) -> Result<Self, RuntimeError> {
        let client = builder(cfg)?.build()?;
        watch_connection(&client, cfg);
        client.connect();
        Ok(Self { client })
    }

    /// Waits until the command client has connected once (or `timeout` passes).
    pub async fn wait_connected(&self, timeout: Duration) -> Result<(), RuntimeError> {
        match tokio::time::timeout(timeout, self.client.wait_for_connect()).await {
            Ok(r) => Ok(r?),
            Err(_) => Err(RuntimeError::Reply {
                command: "CONNECT",
                detail: format!("no connection within {timeout:?}"),
            }),
        }
    }

    /// `PING`, for readiness.
    pub async fn ping(&self) -> bool {
        self.client.ping::<String>(None).await.is_ok()
    }

    /// Closes the client.
    pub async fn quit(&self) {
        let _ = self.client.quit().await;
    }
}

/// Why a connection to Redis failed, as a person would say it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConnectCause {
    /// Nothing listens on the host and port (`ECONNREFUSED`): Redis is not running there.
    Refused,
    /// The host name does not resolve.
    UnknownHost,
    /// No answer within the connect timeout (a slow or filtered network).
    Timeout,
    /// Redis refused the user or password (`WRONGPASS`, `NOAUTH`, `NOPERM`).
    Auth,
    /// The TLS handshake failed: the server's certificate is not signed by the configured CA,
    /// is not valid for the URL's host name, or the port does not speak TLS.
    Tls,
    /// The URL cannot be parsed.
    BadUrl,
    /// Anything else (unreachable network, TLS, protocol); the detail says what.
    Other,
}

impl ConnectCause {
    /// A stable machine-readable name (`refused`, `unknown_host`, …), used in JSON errors.
    pub fn code(self) -> &'static str {
        match self {
            ConnectCause::Refused => "refused",
            ConnectCause::UnknownHost => "unknown_host",
            ConnectCause::Timeout => "timeout",
            ConnectCause::Auth => "auth",
            ConnectCause::Tls => "tls",
            ConnectCause::BadUrl => "bad_url",
            ConnectCause::Other => "other",
        }
    }

    /// Classifies an error fred reported while connecting. fred keeps only the text of the I/O
    /// error (`Os { code: 111, kind: ConnectionRefused, … }`), so this reads the text.
    pub fn of_fred(e: &fred::error::Error) -> Self {
        let d = e.details();
        if *e.kind() == fred::error::ErrorKind::Auth
            || ["WRONGPASS", "NOAUTH", "NOPERM", "invalid password"]
                .iter()
                .any(|m| d.contains(m))
        {
            ConnectCause::Auth
        } else if *e.kind() == fred::error::ErrorKind::Tls
            || d.contains("InvalidCertificate")
            || d.contains("invalid peer certificate")
            || d.contains("InvalidContentType")
            || d.contains("CorruptMessage")
        {
            ConnectCause::Tls
        } else if d.contains("ConnectionRefused") || d.contains("Connection refused") {
            ConnectCause::Refused
        } else if d.contains("lookup address")
            || d.contains("Name or service not known")
            || d.contains("nodename nor servname")
        {
            ConnectCause::UnknownHost
        } else if *e.kind() == fred::error::ErrorKind::Timeout
            || d.contains("TimedOut")
            || d.contains("timed out")
        {
            ConnectCause::Timeout
        } else if *e.kind() == fred::error::ErrorKind::Url {
            ConnectCause::BadUrl
        } else {
            ConnectCause::Other
        }
    }
}

/// A connection to Redis that could not be made. `Display` is the one line a person reads:
/// `cannot reach Redis at redis://127.0.0.1:6390: connection refused (…)`.
#[derive(Clone, Debug, thiserror::Error)]
#[error("cannot reach Redis at {url}: {}", self.explain())]
pub struct ConnectError {
    /// The URL, password redacted.
    pub url: String,
    /// What went wrong.
    pub cause: ConnectCause,
    /// The underlying error or the address tried.
    pub detail: String,
}

impl ConnectError {
    fn new(url: &str, cause: ConnectCause, detail: impl Into<String>) -> Self {
        Self {
            url: redact(url),
            cause,
            detail: detail.into(),
        }
    }

    /// The error fred reported while connecting with `cfg`, classified; a failed TLS
    /// handshake is explained with the CA file and the URL's host.
    fn of_fred(cfg: &RedisConfig, e: &fred::error::Error) -> Self {
        let cause = ConnectCause::of_fred(e);
        let mut detail = e.details().to_string();
        if cause == ConnectCause::Tls {
            let host = FredConfig::from_url(&kitbash_config::runtime::fred_url(&cfg.url))
                .ok()
                .and_then(|c| c.server.hosts().first().map(|h| h.host.to_string()))
                .unwrap_or_default();
            let ca = cfg.tls_files().ca;
            if let Some(line) = crate::tls::explain_handshake(&detail, ca.as_deref(), &host) {
                detail = line;
            }
        }
        Self::new(&cfg.url, cause, detail)
    }

    /// The cause in words, with the detail and what to do.
    pub fn explain(&self) -> String {
        let d = &self.detail;
        match self.cause {
            ConnectCause::Refused => {
                format!("connection refused ({d}): is redis-server running there?")
            }
            ConnectCause::UnknownHost => format!("unknown host ({d})"),
            ConnectCause::Timeout => format!("timed out ({d})"),
            ConnectCause::Auth => {
                format!("authentication failed ({d}): check the user and password in the URL")
            }
            ConnectCause::BadUrl => format!("bad URL ({d})"),
            ConnectCause::Tls => d.clone(),
            ConnectCause::Other => d.clone(),
        }
    }
}

/// Opens a TCP connection to each server of `url` in turn and says why none answered. Refusals
/// and unknown hosts come back at once; only silence waits, up to `timeout` per address.
pub async fn probe(url: &str, timeout: Duration) -> Result<(), ConnectError> {
    let cfg = FredConfig::from_url(&kitbash_config::runtime::fred_url(url))
        .map_err(|e| ConnectError::new(url, ConnectCause::BadUrl, e.details()))?;
    let mut first_failure = None;
    for server in cfg.server.hosts() {
        let host = server.host.to_string();
        let port = server.port;
        let failure = match probe_one(&host, port, timeout).await {
            Ok(()) => return Ok(()),
            Err(f) => f,
        };
        first_failure.get_or_insert(failure);
    }
    let (cause, detail) =
        first_failure.unwrap_or((ConnectCause::BadUrl, "no server in the URL".to_owned()));
    Err(ConnectError::new(url, cause, detail))
}

async fn probe_one(host: &str, port: u16, timeout: Duration) -> Result<(), (ConnectCause, String)> {
    let addrs = match tokio::time::timeout(timeout, tokio::net::lookup_host((host, port))).await {
        Err(_) => {
            return Err((
                ConnectCause::Timeout,
                format!("resolving {host} took longer than {timeout:?}"),
            ));
        }
        Ok(Err(e)) => return Err((ConnectCause::UnknownHost, format!("{host}: {e}"))),
        Ok(Ok(a)) => a.collect::<Vec<_>>(),
    };
    let mut last = (ConnectCause::UnknownHost, format!("{host}: no address"));
    for addr in addrs {
        match tokio::time::timeout(timeout, tokio::net::TcpStream::connect(addr)).await {
            Ok(Ok(_)) => return Ok(()),
            Ok(Err(e)) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
                last = (ConnectCause::Refused, format!("nothing listens on {addr}"));
            }
            Ok(Err(e)) => last = (ConnectCause::Other, format!("{addr}: {e}")),
            Err(_) => {
                last = (
                    ConnectCause::Timeout,
                    format!("no answer from {addr} within {timeout:?}, [redis] connect_timeout_ms"),
                )
            }
        }
    }
    Err(last)
}

/// Builds a client from `[redis]`, connects, and checks with a `PING` that Redis accepts it.
/// A refused connection, an unknown host or a rejected password fail at once with a
/// [`ConnectError`] (as a [`RuntimeError::Connect`]); a network that does not answer fails after
/// at most `wait` (and each address after `connect_timeout_ms`). Once connected, the client
/// reconnects by itself like every other.
///
/// Every long-lived client should come from here (or [`builder`]): a client made with fred's
/// defaults (`Client::new(config, None, None, None)`) has no reconnect policy and no command
/// timeout, so after a Redis restart its commands hang forever — seen in this workspace's own
/// tests before they switched to this function.
pub async fn connect_client(cfg: &RedisConfig, wait: Duration) -> Result<Client, RuntimeError> {
    let deadline = Instant::now() + wait;
    let per_address = Duration::from_millis(cfg.connect_timeout_ms).min(wait);
    probe(&cfg.url, per_address).await?;
    let client = builder(cfg)
        .map_err(|e| match e {
            RuntimeError::Redis(e) => RuntimeError::Connect(ConnectError::new(
                &cfg.url,
                ConnectCause::BadUrl,
                e.details(),
            )),
            other => other,
        })?
        .build()?;
    let mut errors = client.error_rx();
    client.connect();
    let outcome = {
        let connected = client.wait_for_connect();
        tokio::pin!(connected);
        let mut last_error: Option<fred::error::Error> = None;
        loop {
            tokio::select! {
                r = &mut connected => break Ok(r),
                e = errors.recv() => match e {
                    // fred keeps retrying (fail_fast = false); a wrong password or a certificate
                    // that does not verify will not get better.
                    Ok((e, _)) if matches!(ConnectCause::of_fred(&e), ConnectCause::Auth | ConnectCause::Tls) => break Ok(Err(e)),
                    Ok((e, _)) => last_error = Some(e),
                    Err(_) => {}
                },
                _ = tokio::time::sleep_until(deadline.into()) => {
                    let mut detail = last_error.as_ref().map_or_else(
                        || format!("no connection within {wait:?}"),
                        |e| format!("no connection within {wait:?}; last error: {}", e.details()),
                    );
                    if cfg.is_tls() {
                        // A plain Redis port waits for the rest of what it takes for a command.
                        detail.push_str(
                            "; a rediss:// URL on a port without TLS waits like this: is it the server's tls-port?",
                        );
                    }
                    break Err(ConnectError::new(&cfg.url, ConnectCause::Timeout, detail));
                }
            }
        }
    };
    let outcome = match outcome {
        Ok(r) => r,
        Err(timeout) => {
            close_quietly(&client).await;
            return Err(timeout.into());
        }
    };
    // A server with a password accepts the connection and refuses the first command.
    let checked = match outcome {
        Ok(()) => client.ping::<String>(None).await.map(|_| ()),
        Err(e) => Err(e),
    };
    match checked {
        Ok(()) => Ok(client),
        Err(e) => {
            close_quietly(&client).await;
            Err(ConnectError::of_fred(cfg, &e).into())
        }
    }
}

/// Stops a client that never got going without waiting on a server that does not answer.
async fn close_quietly(client: &Client) {
    let _ = tokio::time::timeout(Duration::from_millis(200), client.quit()).await;
}

/// Logs, while a daemon waits for Redis, why it cannot connect: at once on the first failure,
/// again when the cause changes or every 30 s while it lasts, and once when it connects again.
/// Needs a tokio runtime; without one it does nothing.
fn watch_connection(client: &Client, cfg: &RedisConfig) {
    let Ok(rt) = tokio::runtime::Handle::try_current() else {
        return;
    };
    let url = redact(&cfg.url);
    let cfg = cfg.clone();
    let mut errors = client.error_rx();
    let mut reconnects = client.reconnect_rx();
    rt.spawn(async move {
        let mut reported: Option<(ConnectCause, Instant)> = None;
        loop {
            tokio::select! {
                e = errors.recv() => match e {
                    Ok((e, _)) => {
                        let cause = ConnectCause::of_fred(&e);
                        let due = reported.is_none_or(|(c, at)| {
                            c != cause || at.elapsed() >= Duration::from_secs(30)
                        });
                        if due {
                            let line = ConnectError::of_fred(&cfg, &e);
                            tracing::error!(cause = cause.code(), "{line}; retrying");
                            reported = Some((cause, Instant::now()));
                        }
                    }
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                    Err(_) => return,
                },
                r = reconnects.recv() => match r {
                    Ok(_) => {
                        if reported.take().is_some() {
                            tracing::info!(redis = %url, "connected to Redis again");
                        }
                    }
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                    Err(_) => return,
                },
            }
        }
    });
}

/// A custom command routed by the cluster slot of `key`.
pub fn command_for_key(name: &'static str, key: &str, blocking: bool) -> CustomCommand {
    let slot = fred::util::redis_keyslot(key.as_bytes());
    CustomCommand::new_static(name, ClusterHash::Custom(slot), blocking)
}

/// The server's version as (major, minor), from `INFO server`.
pub async fn server_version(client: &Client) -> Result<(u32, u32), RuntimeError> {
    let info: String = client.info(Some(fred::types::InfoKind::Server)).await?;
    let v = info
        .lines()
        .find_map(|l| l.strip_prefix("redis_version:"))
        .ok_or(RuntimeError::Reply {
            command: "INFO",
            detail: "no redis_version".into(),
        })?;
    let mut it = v.trim().split('.').map(|p| p.parse::<u32>().unwrap_or(0));
    Ok((it.next().unwrap_or(0), it.next().unwrap_or(0)))
}

/// `redis://:secret@host` → `redis://:***@host`, for logs.
pub fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => format!("{}***{}", &url[..s + 3], &url[at..]),
        _ => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use fred::error::{Error, ErrorKind};

    use super::is_transient;

    #[test]
    fn transient_errors_are_told_from_permanent_ones() {
        let t = |kind, details: &str| is_transient(&Error::new(kind, details.to_owned()));
        assert!(t(ErrorKind::IO, "broken pipe"));
        assert!(t(ErrorKind::Timeout, "Request timed out."));
        assert!(t(
            ErrorKind::Unknown,
            "OOM command not allowed when used memory > 'maxmemory'."
        ));
        assert!(t(
            ErrorKind::Unknown,
            "ERR Error running script (call to f_1): @user_script:3: OOM command not allowed when used memory > 'maxmemory'."
        ));
        assert!(t(
            ErrorKind::Unknown,
            "LOADING Redis is loading the dataset in memory"
        ));
        assert!(t(
            ErrorKind::Unknown,
            "READONLY You can't write against a read only replica."
        ));
        assert!(t(ErrorKind::Cluster, "CLUSTERDOWN The cluster is down"));
        assert!(!t(
            ErrorKind::Unknown,
            "BUSYGROUP Consumer Group name already exists"
        ));
        assert!(!t(
            ErrorKind::InvalidArgument,
            "WRONGTYPE Operation against a key"
        ));
        assert!(!t(
            ErrorKind::Unknown,
            "NOPERM this user has no permissions to run the 'xtrim' command"
        ));
        assert!(!t(ErrorKind::Unknown, "ERR unknown command 'FOO'"));
        assert!(!t(
            ErrorKind::Unknown,
            "NOGROUP No such key 'k' or consumer group 'g'"
        ));
    }
}
