//! Served routers: an HTTP/WebSocket `axum::Router` bound to a configured address for the
//! daemon's life, run by [`crate::Components::serve`].
//!
//! The runtime binds the address when the daemon starts (a port in use stops the daemon with the
//! address in the error), sets the readiness check `listening {name}` once bound, records the
//! bound address in the instance's heartbeat (`serves`, next to `admin`; `kitbash status`
//! reads it there, and with port 0 it is the only place the port is known) and in
//! [`crate::DaemonContext::served_addr`], and on shutdown stops accepting and drains the
//! requests in flight (axum's graceful shutdown) within the grace period.
//!
//! **Upgraded connections are the router's own:** axum's graceful shutdown does not wait for
//! WebSocket connections, so a handler holding one watches the daemon's shutdown token
//! (`ctx.signals.shutdown`) and closes it (with its protocol's "server shutting down" code).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};

use tokio_util::sync::CancellationToken;

use crate::error::RuntimeError;
use crate::health::Health;

/// The addresses this instance serves on, by router name, and the figures it reports about
/// itself ([`crate::DaemonContext::report`]): what the heartbeat publishes.
#[derive(Clone, Debug, Default)]
pub struct Served {
    addrs: Arc<Mutex<BTreeMap<String, SocketAddr>>>,
    stats: Arc<Mutex<BTreeMap<String, u64>>>,
}

impl Served {
    /// Sets figure `name` (see [`crate::DaemonContext::reporter`]).
    pub fn report(&self, name: &str, value: u64) {
        self.stats
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(name.into(), value);
    }

    /// The reported figures, as the heartbeat spells them.
    pub fn stats(&self) -> BTreeMap<String, u64> {
        self.stats
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    fn set(&self, name: &str, addr: SocketAddr) {
        self.addrs
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(name.into(), addr);
    }

    fn remove(&self, name: &str) {
        self.addrs
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(name);
    }

    /// The bound address of router `name`, once bound.
    pub fn get(&self, name: &str) -> Option<SocketAddr> {
        self.addrs
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(name)
            .copied()
    }

    /// Every router's address, as the heartbeat spells it.
    pub fn snapshot(&self) -> BTreeMap<String, String> {
        self.addrs
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .map(|(k, v)| (k.clone(), v.to_string()))
            .collect()
    }
}

/// The readiness check of router `name`.
pub fn check_name(name: &str) -> String {
    format!("listening {name}")
}

/// Binds `addr`, serves `router` until `shutdown`, then drains.
pub(crate) async fn run(
    name: &'static str,
    addr: SocketAddr,
    router: axum::Router,
    health: Health,
    served: Served,
    shutdown: CancellationToken,
) -> Result<(), RuntimeError> {
    let check = check_name(name);
    health.set(check.clone(), false);
    let listener =
        tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|e| RuntimeError::Refused {
                check: "listen address",
                why: format!("{name} cannot listen on {addr}: {e}"),
            })?;
    let bound = listener.local_addr()?;
    served.set(name, bound);
    health.set(check.clone(), true);
    tracing::info!(router = name, addr = %bound, "listening");
    let stop = shutdown.clone();
    let r = axum::serve(listener, router)
        .with_graceful_shutdown(async move { stop.cancelled().await })
        .await;
    served.remove(name);
    health.clear(&check);
    r.map_err(RuntimeError::from)
}
