//! systemd's service notifications (`sd_notify(3)`), spoken directly: `READY=1` once the
//! daemon is ready as `/readyz` says it, `WATCHDOG=1` every half `WATCHDOG_USEC` while every
//! main loop comes round ([`crate::health::Health::beat`]), `STOPPING=1` when the drain
//! begins, `STATUS=…` lines saying why it is not ready. One datagram per message to the Unix
//! socket `$NOTIFY_SOCKET` (a path, or an abstract name written `@name`); nothing at all when
//! the variable is unset (not under systemd, or `Type=simple`).

use std::io;
use std::os::unix::net::UnixDatagram;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use crate::health::Health;

/// Where notifications go: a datagram socket to `$NOTIFY_SOCKET`, or nowhere.
#[derive(Debug, Default)]
pub struct Notifier {
    /// The unbound sending socket and the address; `None` when notifications are off.
    target: Option<(UnixDatagram, std::os::unix::net::SocketAddr)>,
}

impl Notifier {
    /// From `$NOTIFY_SOCKET`; off when unset or unusable (logged).
    pub fn from_env() -> Self {
        match std::env::var("NOTIFY_SOCKET") {
            Ok(addr) if !addr.is_empty() => Self::to(&addr).unwrap_or_else(|e| {
                tracing::warn!(notify_socket = %addr, error = %e, "cannot use NOTIFY_SOCKET; not notifying systemd");
                Self::default()
            }),
            _ => Self::default(),
        }
    }

    /// Notifications to `addr`: a filesystem path, or `@name` for an abstract socket.
    pub fn to(addr: &str) -> io::Result<Self> {
        let address = match addr.strip_prefix('@') {
            Some(name) => {
                use std::os::linux::net::SocketAddrExt as _;
                std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes())?
            }
            None => std::os::unix::net::SocketAddr::from_pathname(addr)?,
        };
        let socket = UnixDatagram::unbound()?;
        // Never block a daemon on a full receive queue: a lost notification is re-sent.
        socket.set_nonblocking(true)?;
        Ok(Self {
            target: Some((socket, address)),
        })
    }

    /// Whether notifications go anywhere.
    pub fn enabled(&self) -> bool {
        self.target.is_some()
    }

    /// Sends `state` (`READY=1`, `WATCHDOG=1`, newline-separated assignments) as one datagram.
    pub fn send(&self, state: &str) -> io::Result<()> {
        match &self.target {
            Some((socket, addr)) => socket.send_to_addr(state.as_bytes(), addr).map(drop),
            None => Ok(()),
        }
    }
}

/// The link to systemd: where notifications go and the watchdog period, from the environment
/// ([`SystemdLink::from_env`]) or given by a test.
#[derive(Debug, Default)]
pub struct SystemdLink {
    /// Where notifications go.
    pub notifier: Notifier,
    /// The watchdog period (`WATCHDOG_USEC`), `None` without a watchdog.
    pub watchdog: Option<Duration>,
}

impl SystemdLink {
    /// `$NOTIFY_SOCKET` and `$WATCHDOG_USEC`.
    pub fn from_env() -> Self {
        Self {
            notifier: Notifier::from_env(),
            watchdog: watchdog_from_env(),
        }
    }
}

/// The watchdog period systemd asks for (`WATCHDOG_USEC`, for this process when
/// `WATCHDOG_PID` is set); `None` when there is no watchdog.
pub fn watchdog_from_env() -> Option<Duration> {
    if let Ok(pid) = std::env::var("WATCHDOG_PID")
        && pid.trim() != std::process::id().to_string()
    {
        return None;
    }
    let usec: u64 = std::env::var("WATCHDOG_USEC").ok()?.trim().parse().ok()?;
    (usec > 0).then(|| Duration::from_micros(usec))
}

/// Set once every component has been started ([`crate::Components::run`]): readiness before
/// that would be the readiness of a daemon that has not registered its checks yet.
#[derive(Clone, Debug, Default)]
pub struct Started(Arc<AtomicBool>);

impl Started {
    /// Marks the components started.
    pub fn set(&self) {
        self.0.store(true, Ordering::Release);
    }
    fn get(&self) -> bool {
        self.0.load(Ordering::Acquire)
    }
}

/// How often readiness is looked at.
const POLL: Duration = Duration::from_millis(100);

/// Notifies until `shutdown`, then sends `STOPPING=1` and returns. `READY=1` goes out once the
/// components are started and `health` has been ready on two polls in a row (checks register
/// as their components start); `WATCHDOG=1` every `watchdog / 2` while no main loop is stuck
/// ([`Health::stuck`]) — a stuck loop stops it and logs which loop, so systemd restarts the
/// daemon after `WatchdogSec`.
pub async fn run(link: SystemdLink, health: Health, started: Started, shutdown: CancellationToken) {
    let SystemdLink { notifier, watchdog } = link;
    if !notifier.enabled() {
        return;
    }
    let send = |state: &str| {
        if let Err(e) = notifier.send(state) {
            tracing::debug!(error = %e, state, "cannot notify systemd");
        }
    };
    let mut ready_sent = false;
    let mut ready_polls = 0u32;
    let mut last_status = String::new();
    let feed_every = watchdog.map(|w| (w / 2).max(Duration::from_millis(10)));
    let mut next_feed = Instant::now();
    let mut starving: Vec<String> = Vec::new();
    let tick = feed_every.map_or(POLL, |f| f.min(POLL));
    loop {
        let (ready, checks) = health.snapshot();
        let ready = ready && started.get();
        ready_polls = if ready { ready_polls + 1 } else { 0 };
        let status = if ready {
            "ready".to_owned()
        } else {
            let failing: Vec<String> = checks
                .iter()
                .filter(|(_, ok)| !ok)
                .map(|(n, _)| n.clone())
                .collect();
            if failing.is_empty() {
                "starting".to_owned()
            } else {
                format!("not ready: {}", failing.join(", "))
            }
        };
        if !ready_sent && ready_polls >= 2 {
            send(&format!("READY=1\nSTATUS={status}"));
            ready_sent = true;
            last_status = status;
        } else if status != last_status && (ready_sent || status != "ready") {
            send(&format!("STATUS={status}"));
            last_status = status;
        }
        if let Some(every) = feed_every
            && Instant::now() >= next_feed
        {
            next_feed = Instant::now() + every;
            let stuck = health.stuck(Instant::now());
            if stuck.is_empty() {
                if !starving.is_empty() {
                    tracing::info!("every main loop comes round again: feeding systemd's watchdog");
                    send(&format!("STATUS={last_status}"));
                }
                send("WATCHDOG=1");
            } else {
                if stuck != starving {
                    tracing::error!(loops = ?stuck, "a main loop is stuck: not feeding systemd's watchdog (the unit will be restarted)");
                }
                // Said at every skipped feed, so `systemctl status` (and a test) sees it.
                send(&format!("STATUS=stuck: {}", stuck.join(", ")));
            }
            starving = stuck;
        }
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = tokio::time::sleep(tick) => {}
        }
    }
    send("STOPPING=1\nSTATUS=draining");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_datagram_reaches_a_path_and_an_abstract_socket() {
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("notify");
        let rx = UnixDatagram::bind(&path).expect("bind");
        Notifier::to(path.to_str().expect("utf-8"))
            .expect("notifier")
            .send("READY=1")
            .expect("send");
        let mut buf = [0u8; 64];
        let n = rx.recv(&mut buf).expect("recv");
        assert_eq!(&buf[..n], b"READY=1");

        use std::os::linux::net::SocketAddrExt as _;
        let name = format!("kitbash-notify-test-{}", std::process::id());
        let addr =
            std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes()).expect("addr");
        let rx = UnixDatagram::bind_addr(&addr).expect("bind abstract");
        Notifier::to(&format!("@{name}"))
            .expect("notifier")
            .send("WATCHDOG=1")
            .expect("send");
        let n = rx.recv(&mut buf).expect("recv");
        assert_eq!(&buf[..n], b"WATCHDOG=1");
        assert!(!Notifier::default().enabled());
        assert!(Notifier::default().send("READY=1").is_ok());
    }
}
