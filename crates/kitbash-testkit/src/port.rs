//! Picking a free 127.0.0.1 port, and remembering which ports this process's servers own.
//!
//! Ports come from the kernel (bind `:0`, read the port, release it). Between the release and
//! `redis-server` binding it, another test may take the same port: within this process the
//! [`PortReservation`] set prevents that; across processes the server start retries with a new
//! port when redis reports `Address already in use`.

use std::collections::BTreeSet;
use std::net::{Ipv4Addr, TcpListener};
use std::sync::{Mutex, MutexGuard, PoisonError};

use crate::error::{Result, TestkitError};

/// Offset of the cluster bus port from the client port (fixed by Redis).
pub(crate) const CLUSTER_BUS_OFFSET: u16 = 10_000;
/// Highest client port we hand out, so that `port + 10000` is still a valid port.
const MAX_PORT: u16 = 55_000;
const ATTEMPTS: u32 = 200;

/// Ports held by live servers of this process, including while a server is killed and waiting
/// for `restart()`: it must get its own port back.
static RESERVED: Mutex<BTreeSet<u16>> = Mutex::new(BTreeSet::new());

fn reserved() -> MutexGuard<'static, BTreeSet<u16>> {
    // A panic while holding this lock leaves the set consistent (insert/remove are atomic).
    RESERVED.lock().unwrap_or_else(PoisonError::into_inner)
}

/// A port owned by one server of this process until dropped.
#[derive(Debug)]
pub(crate) struct PortReservation {
    port: u16,
}

impl PortReservation {
    /// A free port below 55000 (so its cluster bus port also exists); with `with_bus`, the bus
    /// port `port + 10000` is free too.
    pub(crate) fn pick(with_bus: bool) -> Result<Self> {
        for _ in 0..ATTEMPTS {
            let port = kernel_port()?;
            if port >= MAX_PORT || port == 0 {
                continue;
            }
            if with_bus && !is_free(port + CLUSTER_BUS_OFFSET) {
                continue;
            }
            if reserved().insert(port) {
                return Ok(Self { port });
            }
        }
        Err(TestkitError::NoFreePort { attempts: ATTEMPTS })
    }

    /// Reserves a port the caller chose; fails if a server of this process already has it.
    pub(crate) fn fixed(port: u16) -> Result<Self> {
        if reserved().insert(port) {
            Ok(Self { port })
        } else {
            Err(TestkitError::InvalidConfig(format!(
                "port {port} is already used by another RedisServer of this process"
            )))
        }
    }

    pub(crate) fn port(&self) -> u16 {
        self.port
    }
}

impl Drop for PortReservation {
    fn drop(&mut self) {
        reserved().remove(&self.port);
    }
}

fn kernel_port() -> Result<u16> {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .map_err(|e| TestkitError::io("binding 127.0.0.1:0 to find a free port", e))?;
    let port = listener
        .local_addr()
        .map_err(|e| TestkitError::io("reading the port of 127.0.0.1:0", e))?
        .port();
    Ok(port)
}

fn is_free(port: u16) -> bool {
    TcpListener::bind((Ipv4Addr::LOCALHOST, port)).is_ok()
}
