//! [`RedisCluster`]: N real cluster-enabled `redis-server`s joined by `redis-cli --cluster create`,
//! returned once every node reports `cluster_state:ok` with all 16384 slots assigned.

use std::fs::File;
use std::process::{Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use crate::binary::find_redis_cli;
use crate::error::{Result, TestkitError};
use crate::server::{
    Appendfsync, RedisServer, RedisServerBuilder, connect_and_auth, log_tail, redis_cli,
};

/// Slots of a Redis cluster (fixed by Redis).
pub const CLUSTER_SLOTS: u32 = 16_384;

/// Default deadline for `redis-cli --cluster create` plus convergence.
pub const DEFAULT_READY_TIMEOUT: Duration = Duration::from_secs(30);

/// How often cluster state is re-checked while waiting for convergence (another process's
/// state: there is nothing to block on).
const POLL_INTERVAL: Duration = Duration::from_millis(50);

/// Settings of a [`RedisCluster`] before it starts. Get one from [`RedisCluster::builder`].
#[derive(Clone, Debug)]
pub struct RedisClusterBuilder {
    /// Number of masters (`redis-cli --cluster create` needs at least 3).
    masters: usize,
    /// Options applied to every node.
    node: RedisServerBuilder,
    /// Deadline for creation and convergence, also the default of `wait_until_ok`.
    ready_timeout: Duration,
}

impl Default for RedisClusterBuilder {
    fn default() -> Self {
        Self {
            masters: 3,
            node: RedisServer::builder().cluster_node(),
            ready_timeout: DEFAULT_READY_TIMEOUT,
        }
    }
}

impl RedisClusterBuilder {
    /// Number of masters, at least 3 (default 3). There are no replicas.
    pub fn masters(mut self, masters: usize) -> Self {
        self.masters = masters;
        self
    }

    /// `appendonly yes` with this fsync policy on every node.
    pub fn appendonly(mut self, fsync: Appendfsync) -> Self {
        self.node = self.node.appendonly(fsync);
        self
    }

    /// Any other `--key value` option on every node.
    pub fn config(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.node = self.node.config(key, value);
        self
    }

    /// Loads these ACL rules on every node (see [`RedisServerBuilder::acl_file`]). The rules
    /// must leave the `default` user able to run `CLUSTER` commands: the cluster is created and
    /// checked as `default`, like an operator's own login.
    pub fn acl_file(mut self, text: impl Into<String>) -> Self {
        self.node = self.node.acl_file(text);
        self
    }

    /// Deadline for the cluster to form (default 30 s).
    pub fn ready_timeout(mut self, timeout: Duration) -> Self {
        self.ready_timeout = timeout;
        self
    }

    /// Starts the nodes, creates the cluster and waits until every node sees it healthy.
    pub fn start(self) -> Result<RedisCluster> {
        if self.masters < 3 {
            return Err(TestkitError::InvalidConfig(format!(
                "a cluster needs at least 3 masters, {} requested",
                self.masters
            )));
        }
        let nodes = (0..self.masters)
            .map(|_| self.node.clone().start())
            .collect::<Result<Vec<_>>>()?;
        let cluster = RedisCluster {
            nodes,
            ready_timeout: self.ready_timeout,
        };
        cluster.create()?;
        cluster.wait_until_ok(self.ready_timeout)?;
        Ok(cluster)
    }
}

/// A Redis cluster of real processes on `127.0.0.1`: N masters, no replicas, node timeout 2 s.
///
/// Dropping it kills every node and removes their dirs.
#[derive(Debug)]
pub struct RedisCluster {
    /// The nodes, in the order given to `redis-cli --cluster create` (slots ascend with it).
    nodes: Vec<RedisServer>,
    /// Deadline used by `create`.
    ready_timeout: Duration,
}

impl RedisCluster {
    /// Starts a 3-master cluster.
    pub fn start() -> Result<Self> {
        Self::builder().start()
    }

    /// A builder for the number of masters and node options.
    pub fn builder() -> RedisClusterBuilder {
        RedisClusterBuilder::default()
    }

    /// The first node's URL; a cluster client discovers the rest from it.
    pub fn url(&self) -> String {
        self.nodes[0].url()
    }

    /// Every node's URL, in node order.
    pub fn urls(&self) -> Vec<String> {
        self.nodes.iter().map(RedisServer::url).collect()
    }

    /// A cluster URL naming every node, in the form fred (and kitbash's `[redis] url`) reads:
    /// `redis-cluster://127.0.0.1:P1?node=127.0.0.1:P2&node=127.0.0.1:P3`.
    pub fn cluster_url(&self) -> String {
        let addrs: Vec<String> = self
            .nodes
            .iter()
            .map(|n| format!("127.0.0.1:{}", n.port()))
            .collect();
        let (first, rest) = addrs
            .split_first()
            .map_or(("", &[][..]), |(f, r)| (f.as_str(), r));
        let query: Vec<String> = rest.iter().map(|a| format!("node={a}")).collect();
        if query.is_empty() {
            format!("redis-cluster://{first}")
        } else {
            format!("redis-cluster://{first}?{}", query.join("&"))
        }
    }

    /// The nodes.
    pub fn nodes(&self) -> &[RedisServer] {
        &self.nodes
    }

    /// Node `i`.
    ///
    /// # Panics
    /// If `i >= nodes().len()`.
    pub fn node(&self, i: usize) -> &RedisServer {
        &self.nodes[i]
    }

    /// Node `i`, for fault injection (`kill`, `pause`, `restart` …).
    ///
    /// # Panics
    /// If `i >= nodes().len()`.
    pub fn node_mut(&mut self, i: usize) -> &mut RedisServer {
        &mut self.nodes[i]
    }

    /// Runs one command with `redis-cli -c` against the first node, following redirects.
    pub fn cmd(&self, args: &[&str]) -> Result<String> {
        redis_cli(self.nodes[0].port(), None, true, args)
    }

    /// Waits until every node answers `CLUSTER INFO` with `cluster_state:ok`, all 16384 slots
    /// assigned and every node known. Use it after restarting a node.
    pub fn wait_until_ok(&self, timeout: Duration) -> Result<()> {
        let started = Instant::now();
        loop {
            let last = match self.first_unhealthy() {
                Ok(None) => return Ok(()),
                Ok(Some(problem)) => problem,
                Err(e) => e.to_string(),
            };
            if started.elapsed() >= timeout {
                return Err(TestkitError::Timeout {
                    what: format!("the cluster to report ok; last seen: {last}"),
                    waited: timeout,
                });
            }
            thread::sleep(POLL_INTERVAL);
        }
    }

    /// `None` when every node is healthy, else a description of the first that is not.
    fn first_unhealthy(&self) -> Result<Option<String>> {
        let known = self.nodes.len().to_string();
        let slots = CLUSTER_SLOTS.to_string();
        for node in &self.nodes {
            let mut conn = connect_and_auth(node.port(), None, Duration::from_secs(2))?;
            let info = conn
                .command(&["CLUSTER", "INFO"])?
                .as_text()
                .unwrap_or_default();
            let field = |name: &str| {
                info.lines()
                    .find_map(|l| l.strip_prefix(name)?.strip_prefix(':'))
                    .map(str::trim)
                    .unwrap_or("?")
                    .to_owned()
            };
            let (state, assigned, nodes) = (
                field("cluster_state"),
                field("cluster_slots_assigned"),
                field("cluster_known_nodes"),
            );
            if state != "ok" || assigned != slots || nodes != known {
                return Ok(Some(format!(
                    "node {}: cluster_state:{state} cluster_slots_assigned:{assigned} cluster_known_nodes:{nodes}",
                    node.port()
                )));
            }
        }
        Ok(None)
    }

    /// `redis-cli --cluster create … --cluster-replicas 0 --cluster-yes`, with its output in
    /// the first node's dir and a deadline (it can wait forever for nodes that never join).
    fn create(&self) -> Result<()> {
        let cli = find_redis_cli()?;
        let log_path = self.nodes[0].dir().join("cluster-create.log");
        let log = File::create(&log_path)
            .map_err(|e| TestkitError::io(format!("creating {}", log_path.display()), e))?;
        let log_err = log
            .try_clone()
            .map_err(|e| TestkitError::io("duplicating the log file handle", e))?;
        let addrs: Vec<String> = self
            .nodes
            .iter()
            .map(|n| format!("127.0.0.1:{}", n.port()))
            .collect();
        let display = format!(
            "redis-cli --cluster create {} --cluster-replicas 0 --cluster-yes",
            addrs.join(" ")
        );
        let mut child = Command::new(&cli)
            .args(["--cluster", "create"])
            .args(&addrs)
            .args(["--cluster-replicas", "0", "--cluster-yes"])
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log_err)
            .spawn()
            .map_err(|e| TestkitError::io(format!("spawning `{display}`"), e))?;
        let started = Instant::now();
        loop {
            let status = child
                .try_wait()
                .map_err(|e| TestkitError::io(format!("waiting for `{display}`"), e))?;
            match status {
                Some(status) if status.success() => return Ok(()),
                Some(status) => {
                    return Err(TestkitError::CommandFailed {
                        command: display,
                        status: status.to_string(),
                        output: log_tail(&log_path, 0),
                    });
                }
                None if started.elapsed() >= self.ready_timeout => {
                    // Already-exited races are fine: wait() reaps it either way.
                    let _ = child.kill();
                    let _ = child.wait();
                    return Err(TestkitError::Timeout {
                        what: format!("`{display}`; its output:\n{}", log_tail(&log_path, 0)),
                        waited: self.ready_timeout,
                    });
                }
                None => thread::sleep(POLL_INTERVAL),
            }
        }
    }
}
