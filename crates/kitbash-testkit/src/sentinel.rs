//! [`RedisSentinelSet`]: a master, a replica and three Sentinels (`redis-server --sentinel`),
//! each a real process on a free port, for failover tests. [`RedisSentinelSet::url`] is the
//! `redis+sentinel://` URL a daemon is given; [`RedisSentinelSet::failover`] makes the Sentinels
//! promote the replica (`SENTINEL FAILOVER`) and returns once it is the master they announce.
//!
//! ```no_run
//! let set = kitbash_testkit::RedisSentinelSet::start()?;
//! let url = set.url(); // redis+sentinel://127.0.0.1:P1?sentinelServiceName=kitbash&node=…
//! set.failover()?;
//! # Ok::<(), kitbash_testkit::TestkitError>(())
//! ```

use std::fs;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use crate::port::PortReservation;
use crate::resp::{RespConnection, RespValue};
use crate::server::{Appendfsync, RedisServer};
use crate::{Result, TestkitError};

/// The Sentinels' name for the master.
pub const SERVICE: &str = "kitbash";

const READY: Duration = Duration::from_secs(30);

/// One Sentinel process.
struct Sentinel {
    port: PortReservation,
    child: Option<Child>,
}

impl Sentinel {
    fn start(dir: &std::path::Path, i: usize, master_port: u16) -> Result<Self> {
        let port = PortReservation::pick(false)?;
        let conf = dir.join(format!("sentinel-{i}.conf"));
        // Sentinel rewrites its file (it records what it learns), so each has its own.
        let text = format!(
            "port {p}\nbind 127.0.0.1\ndir {d}\nlogfile {d}/sentinel-{i}.log\n\
             sentinel monitor {SERVICE} 127.0.0.1 {master_port} 2\n\
             sentinel down-after-milliseconds {SERVICE} 1000\n\
             sentinel failover-timeout {SERVICE} 5000\n\
             sentinel parallel-syncs {SERVICE} 1\n",
            p = port.port(),
            d = dir.display(),
        );
        fs::write(&conf, text)
            .map_err(|e| TestkitError::io(format!("writing {}", conf.display()), e))?;
        let child = Command::new(crate::find_redis_server()?)
            .arg(&conf)
            .arg("--sentinel")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| TestkitError::io("spawning redis-server --sentinel", e))?;
        let s = Self {
            port,
            child: Some(child),
        };
        wait_for(
            &format!("sentinel on {} to answer PING", s.port.port()),
            || {
                Ok(
                    RespConnection::connect(s.port.port(), Duration::from_secs(1))
                        .and_then(|mut c| c.command(&["PING"]))
                        .is_ok(),
                )
            },
        )?;
        Ok(s)
    }

    fn command(&self, args: &[&str]) -> Result<RespValue> {
        RespConnection::connect(self.port.port(), Duration::from_secs(5))?.command(args)
    }
}

impl Drop for Sentinel {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// A master, a replica and three Sentinels watching them (quorum 2, a master is down after
/// 1 s without answers).
pub struct RedisSentinelSet {
    /// The two data servers; which one is the master changes with failovers.
    servers: [RedisServer; 2],
    sentinels: Vec<Sentinel>,
    dir: PathBuf,
}

impl RedisSentinelSet {
    /// Starts the set and returns once the replica is in sync and every Sentinel knows the
    /// replica and the other two Sentinels (so a failover can be agreed on).
    pub fn start() -> Result<Self> {
        let master = RedisServer::builder()
            .appendonly(Appendfsync::Everysec)
            .start()?;
        let replica = RedisServer::builder()
            .appendonly(Appendfsync::Everysec)
            .start()?;
        replica.cmd(&["REPLICAOF", "127.0.0.1", &master.port().to_string()])?;
        wait_for("the replica to sync with the master", || {
            Ok(replica
                .cmd(&["INFO", "replication"])?
                .contains("master_link_status:up"))
        })?;
        let dir = master.dir().join("sentinels");
        fs::create_dir_all(&dir).map_err(|e| TestkitError::io("creating the sentinels' dir", e))?;
        let sentinels = (0..3)
            .map(|i| Sentinel::start(&dir, i, master.port()))
            .collect::<Result<Vec<_>>>()?;
        let set = Self {
            servers: [master, replica],
            sentinels,
            dir,
        };
        for s in &set.sentinels {
            wait_for(
                "each sentinel to know the replica and the other sentinels",
                || {
                    let replicas = s.command(&["SENTINEL", "REPLICAS", SERVICE])?;
                    let others = s.command(&["SENTINEL", "SENTINELS", SERVICE])?;
                    Ok(len(&replicas) == 1 && len(&others) == 2)
                },
            )?;
        }
        Ok(set)
    }

    /// `redis+sentinel://` with every Sentinel and the service name: what a daemon's
    /// `[redis] url` is set to.
    pub fn url(&self) -> String {
        let mut ports = self.sentinels.iter().map(|s| s.port.port());
        let first = ports.next().unwrap_or_default();
        let nodes: String = ports.map(|p| format!("&node=127.0.0.1:{p}")).collect();
        format!("redis+sentinel://127.0.0.1:{first}?sentinelServiceName={SERVICE}{nodes}")
    }

    /// The port of the master the Sentinels announce.
    pub fn master_port(&self) -> Result<u16> {
        let v = self.sentinels[0].command(&["SENTINEL", "GET-MASTER-ADDR-BY-NAME", SERVICE])?;
        match v {
            RespValue::Array(a) => a
                .get(1)
                .and_then(RespValue::as_text)
                .and_then(|p| p.parse().ok())
                .ok_or_else(|| TestkitError::Protocol(format!("master address {a:?}"))),
            other => Err(TestkitError::Protocol(format!("master address {other:?}"))),
        }
    }

    /// The server that is the master now.
    pub fn master(&self) -> Result<&RedisServer> {
        let port = self.master_port()?;
        self.servers
            .iter()
            .find(|s| s.port() == port)
            .ok_or_else(|| TestkitError::Protocol(format!("no server of the set on {port}")))
    }

    /// `SENTINEL FAILOVER`: the replica is promoted and the old master made its replica.
    /// Returns the new master's port once the Sentinels announce it, it says `role:master`,
    /// and the old master follows it.
    pub fn failover(&self) -> Result<u16> {
        let before = self.master_port()?;
        self.sentinels[0].command(&["SENTINEL", "FAILOVER", SERVICE])?;
        let mut after = before;
        wait_for("the sentinels to announce the promoted replica", || {
            after = self.master_port()?;
            Ok(after != before)
        })?;
        let (new, old) = match self.servers.iter().position(|s| s.port() == after) {
            Some(i) => (&self.servers[i], &self.servers[1 - i]),
            None => return Err(TestkitError::Protocol(format!("no server on {after}"))),
        };
        wait_for("the new master to say role:master", || {
            Ok(new.cmd(&["INFO", "replication"])?.contains("role:master"))
        })?;
        wait_for("the old master to follow the new one", || {
            let info = old.cmd(&["INFO", "replication"])?;
            Ok(info.contains("role:slave") && info.contains("master_link_status:up"))
        })?;
        Ok(after)
    }

    /// Where the Sentinels' files and logs are.
    pub fn dir(&self) -> &std::path::Path {
        &self.dir
    }
}

fn len(v: &RespValue) -> usize {
    match v {
        RespValue::Array(a) => a.len(),
        _ => 0,
    }
}

fn wait_for(what: &str, mut cond: impl FnMut() -> Result<bool>) -> Result<()> {
    let started = Instant::now();
    loop {
        let last = match cond() {
            Ok(true) => return Ok(()),
            Ok(false) => "not yet".to_owned(),
            Err(e) => e.to_string(),
        };
        if started.elapsed() > READY {
            return Err(TestkitError::Timeout {
                what: format!("{what} (last: {last})"),
                waited: READY,
            });
        }
        thread::sleep(Duration::from_millis(100));
    }
}
