//! [`RedisServer`]: one real `redis-server` process on a free port with its own temp dir, and
//! the faults a test can inject into it (kill, stop, restart, pause, dropped clients).

use std::fs::{self, OpenOptions};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use tempfile::TempDir;

use crate::binary::{find_redis_cli, find_redis_server};
use crate::error::{Result, TestkitError};
use crate::port::PortReservation;
use crate::resp::{RespConnection, RespValue};

/// Prefix of every server's temp dir; its path is on the server's command line (`--dir`), so
/// `pgrep -af kitbash-testkit-` finds servers orphaned by a killed test runner.
pub const TEMP_DIR_PREFIX: &str = "kitbash-testkit-";

/// Default deadline for a server to answer `PING` after it was spawned.
pub const DEFAULT_START_TIMEOUT: Duration = Duration::from_secs(10);

/// How long `stop()` waits for a graceful exit, and `pause()`/`resume()` for the state change.
const SIGNAL_TIMEOUT: Duration = Duration::from_secs(10);

/// How often readiness and exit are re-checked. We poll because we wait on another process's
/// state, which offers no notification we could block on.
const POLL_INTERVAL: Duration = Duration::from_millis(20);

/// Timeout of each readiness probe connection: short, so the deadline is re-checked often.
const PROBE_TIMEOUT: Duration = Duration::from_millis(500);

/// Timeout of the connections `connect()` opens.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(5);

/// How many fresh ports `start()` tries when another process takes the chosen one first.
const PORT_ATTEMPTS: u32 = 5;

/// How many times `restart()` retries its own port while something else holds it.
const RESTART_ATTEMPTS: u32 = 20;

/// Lines of the server log quoted in start errors.
const LOG_TAIL_LINES: usize = 30;

const LOG_FILE: &str = "redis.log";

/// The `appendfsync` policy of an append-only file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Appendfsync {
    /// fsync after every write: a write the client saw acknowledged survives SIGKILL.
    Always,
    /// fsync once a second (Redis's default): up to about a second is lost on power loss.
    Everysec,
    /// Leave flushing to the OS.
    No,
}

impl Appendfsync {
    fn as_arg(self) -> &'static str {
        match self {
            Self::Always => "always",
            Self::Everysec => "everysec",
            Self::No => "no",
        }
    }
}

/// Settings of a [`RedisServer`] before it starts. Get one from [`RedisServer::builder`].
#[derive(Clone, Debug)]
pub struct RedisServerBuilder {
    /// `Some` turns on `appendonly yes` with this fsync policy.
    appendfsync: Option<Appendfsync>,
    /// `requirepass`; also used by `url()`, `connect()` and `cmd()`.
    password: Option<String>,
    /// `--key value` pairs appended after the defaults, so they override them.
    extra: Vec<(String, String)>,
    /// Cluster node: adds the cluster options and requires the bus port to be free.
    cluster: bool,
    /// A fixed port instead of a free one (no retry on a taken port).
    port: Option<u16>,
    /// Deadline for the first `PONG`, at start and at every restart.
    start_timeout: Duration,
    /// An ACL file's text: written to `users.acl` in the server's dir, loaded with `--aclfile`.
    acl: Option<String>,
    /// TLS on a second port (the plain port stays, for the testkit's own probes).
    tls: Option<TlsServerFiles>,
}

/// The PEM files of a server with TLS ([`RedisServerBuilder::tls`]).
#[derive(Clone, Debug)]
pub struct TlsServerFiles {
    /// The server's certificate (`--tls-cert-file`).
    pub cert: PathBuf,
    /// Its private key (`--tls-key-file`).
    pub key: PathBuf,
    /// The CA that signs client certificates (`--tls-ca-cert-file`).
    pub ca: PathBuf,
    /// `--tls-auth-clients yes` (a client certificate is required) instead of `optional`.
    pub require_client_cert: bool,
}

impl Default for RedisServerBuilder {
    fn default() -> Self {
        Self {
            appendfsync: None,
            password: None,
            extra: Vec::new(),
            cluster: false,
            port: None,
            start_timeout: DEFAULT_START_TIMEOUT,
            acl: None,
            tls: None,
        }
    }
}

impl RedisServerBuilder {
    /// `--appendonly yes --appendfsync <fsync>`: data survives `kill()` + `restart()`.
    pub fn appendonly(mut self, fsync: Appendfsync) -> Self {
        self.appendfsync = Some(fsync);
        self
    }

    /// `--requirepass <password>`.
    pub fn requirepass(mut self, password: impl Into<String>) -> Self {
        self.password = Some(password.into());
        self
    }

    /// Any other `--key value` option (a leading `--` on `key` is optional). Later pairs win
    /// over earlier ones and over the defaults.
    pub fn config(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        let key = key.into();
        let key = key.strip_prefix("--").map(str::to_owned).unwrap_or(key);
        self.extra.push((key, value.into()));
        self
    }

    /// Listen on this port instead of a free one. A taken port is an error, not a retry.
    pub fn port(mut self, port: u16) -> Self {
        self.port = Some(port);
        self
    }

    /// Loads these ACL rules (the text of an ACL file, `user NAME …` lines) with `--aclfile`.
    /// Redis's `default` user stays as it is unless the text redefines it, so the testkit's
    /// own probes and [`RedisServer::cmd`] keep working.
    pub fn acl_file(mut self, text: impl Into<String>) -> Self {
        self.acl = Some(text.into());
        self
    }

    /// Also listens with TLS on a second free port ([`RedisServer::tls_port`]), with these
    /// certificates; the plain port stays.
    pub fn tls(mut self, files: TlsServerFiles) -> Self {
        self.tls = Some(files);
        self
    }

    /// Deadline for the server to answer `PING` (default 10 s), at start and restart.
    pub fn start_timeout(mut self, timeout: Duration) -> Self {
        self.start_timeout = timeout;
        self
    }

    /// Makes this a cluster node (`cluster-enabled yes`, `nodes.conf` in its dir, node timeout
    /// 2000 ms) whose bus port `port + 10000` is also free.
    pub(crate) fn cluster_node(mut self) -> Self {
        self.cluster = true;
        self
    }

    /// Spawns the server and waits until it answers `PING`.
    pub fn start(self) -> Result<RedisServer> {
        let binary = find_redis_server()?;
        let attempts = if self.port.is_some() {
            1
        } else {
            PORT_ATTEMPTS
        };
        let mut attempt = 0;
        loop {
            attempt += 1;
            let reservation = match self.port {
                Some(port) => PortReservation::fixed(port)?,
                None => PortReservation::pick(self.cluster)?,
            };
            let dir = tempfile::Builder::new()
                .prefix(TEMP_DIR_PREFIX)
                .tempdir()
                .map_err(|e| TestkitError::io("creating the server's temp dir", e))?;
            let mut args = self.args(dir.path());
            if let Some(text) = &self.acl {
                let path = dir.path().join("users.acl");
                std::fs::write(&path, text)
                    .map_err(|e| TestkitError::io(format!("writing {}", path.display()), e))?;
                args.extend(["--aclfile".to_owned(), path.display().to_string()]);
            }
            let tls_reservation = match &self.tls {
                None => None,
                Some(files) => {
                    let r = PortReservation::pick(false)?;
                    args.extend([
                        "--tls-port".to_owned(),
                        r.port().to_string(),
                        "--tls-cert-file".to_owned(),
                        files.cert.display().to_string(),
                        "--tls-key-file".to_owned(),
                        files.key.display().to_string(),
                        "--tls-ca-cert-file".to_owned(),
                        files.ca.display().to_string(),
                        "--tls-auth-clients".to_owned(),
                        if files.require_client_cert {
                            "yes"
                        } else {
                            "optional"
                        }
                        .to_owned(),
                    ]);
                    Some(r)
                }
            };
            let mut server = RedisServer {
                binary: binary.clone(),
                tls_reservation,
                args,
                password: self.password.clone(),
                start_timeout: self.start_timeout,
                log_path: dir.path().join(LOG_FILE),
                child: None,
                paused: false,
                reservation,
                dir,
            };
            match server.spawn_and_wait() {
                Ok(()) => return Ok(server),
                // Another process bound the port between our probe and redis's bind: the
                // dropped server frees its reservation and dir; try a fresh port.
                Err(Failure::PortTaken(_)) if attempt < attempts => continue,
                Err(Failure::PortTaken(e) | Failure::Other(e)) => return Err(e),
            }
        }
    }

    /// Every argument after `--port P`.
    fn args(&self, dir: &Path) -> Vec<String> {
        let mut args: Vec<String> = [
            "--bind",
            "127.0.0.1",
            "--daemonize",
            "no",
            "--save",
            "",
            "--dir",
        ]
        .iter()
        .map(|s| (*s).to_owned())
        .collect();
        args.push(dir.display().to_string());
        match self.appendfsync {
            None => args.extend(["--appendonly".to_owned(), "no".to_owned()]),
            Some(fsync) => args.extend([
                "--appendonly".to_owned(),
                "yes".to_owned(),
                "--appendfsync".to_owned(),
                fsync.as_arg().to_owned(),
            ]),
        }
        if let Some(password) = &self.password {
            args.extend(["--requirepass".to_owned(), password.clone()]);
        }
        if self.cluster {
            for (k, v) in [
                ("cluster-enabled", "yes"),
                ("cluster-config-file", "nodes.conf"),
                ("cluster-node-timeout", "2000"),
            ] {
                args.extend([format!("--{k}"), v.to_owned()]);
            }
        }
        for (k, v) in &self.extra {
            args.extend([format!("--{k}"), v.clone()]);
        }
        args
    }
}

/// Why a spawn did not produce a ready server.
enum Failure {
    /// redis could not bind its port (or bus port): worth retrying.
    PortTaken(TestkitError),
    /// Anything else.
    Other(TestkitError),
}

impl From<TestkitError> for Failure {
    fn from(e: TestkitError) -> Self {
        Self::Other(e)
    }
}

/// A real `redis-server` on `127.0.0.1`, with its own temp dir, for one test.
///
/// Dropping it SIGKILLs the process and removes the dir, also when the test panics. A test
/// runner that is itself SIGKILLed cannot run `Drop`: its servers are orphaned. Find them with
/// `pgrep -af kitbash-testkit-` (their `--dir` is `$TMPDIR/kitbash-testkit-*`), then end them by
/// pid and remove the dirs.
#[derive(Debug)]
pub struct RedisServer {
    /// The binary, found once at start; `restart()` reuses it.
    binary: PathBuf,
    /// Arguments after `--port P`; the same at every (re)start, so dir and options persist.
    args: Vec<String>,
    /// `requirepass`, used by `url()`, `connect()` and `cmd()`.
    password: Option<String>,
    /// Deadline for `PONG` at start and restart.
    start_timeout: Duration,
    /// The captured stdout/stderr of every run of this server (appended).
    log_path: PathBuf,
    /// The running process; `None` after `kill()`/`stop()` until `restart()`.
    child: Option<Child>,
    /// Set by `pause()`, cleared by `resume()` and by anything that ends the process.
    paused: bool,
    /// Keeps the port ours while the server lives, also between `kill()` and `restart()`.
    reservation: PortReservation,
    /// The TLS port, when started with [`RedisServerBuilder::tls`].
    tls_reservation: Option<PortReservation>,
    /// The server's `--dir`; removed on drop, after the process is gone.
    dir: TempDir,
}

impl RedisServer {
    /// Starts a server with the defaults: no persistence, no password.
    pub fn start() -> Result<Self> {
        Self::builder().start()
    }

    /// A builder for persistence, password, extra options and timeouts.
    pub fn builder() -> RedisServerBuilder {
        RedisServerBuilder::default()
    }

    /// `redis://127.0.0.1:P`, or `redis://:pw@127.0.0.1:P` with a password.
    pub fn url(&self) -> String {
        match &self.password {
            None => format!("redis://127.0.0.1:{}", self.port()),
            Some(pw) => format!("redis://:{}@127.0.0.1:{}", userinfo_escape(pw), self.port()),
        }
    }

    /// The client port.
    pub fn port(&self) -> u16 {
        self.reservation.port()
    }

    /// The TLS port, when started with [`RedisServerBuilder::tls`].
    pub fn tls_port(&self) -> Option<u16> {
        self.tls_reservation.as_ref().map(PortReservation::port)
    }

    /// The process id, or `None` after `kill()`/`stop()`.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// The server's working dir (`--dir`): AOF, RDB, `nodes.conf` and `redis.log` live here.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The file holding the server's stdout and stderr, across restarts.
    pub fn log_path(&self) -> &Path {
        &self.log_path
    }

    /// The password given to `requirepass`, if any.
    pub fn password(&self) -> Option<&str> {
        self.password.as_deref()
    }

    /// True while the process exists (paused counts as running). Reaps it if it died on its own.
    pub fn is_running(&mut self) -> bool {
        match self.child.as_mut().map(Child::try_wait) {
            Some(Ok(None)) => true,
            Some(Ok(Some(_)) | Err(_)) => {
                self.child = None;
                self.paused = false;
                false
            }
            None => false,
        }
    }

    /// A raw RESP connection, authenticated when a password is set (5 s timeouts).
    pub fn connect(&self) -> Result<RespConnection> {
        connect_and_auth(self.port(), self.password.as_deref(), COMMAND_TIMEOUT)
    }

    /// Runs one command with `redis-cli -e --raw -p P …` and returns its stdout without the
    /// final newline. An error reply is [`TestkitError::CommandFailed`].
    pub fn cmd(&self, args: &[&str]) -> Result<String> {
        redis_cli(self.port(), self.password.as_deref(), false, args)
    }

    /// `FLUSHALL`.
    pub fn flushall(&self) -> Result<()> {
        self.connect()?.command(&["FLUSHALL"]).map(drop)
    }

    /// Closes every normal and pub/sub client connection (`CLIENT KILL TYPE …`), as a network
    /// blip would. Returns how many were closed; the connection issuing the kill is skipped.
    pub fn drop_clients(&self) -> Result<i64> {
        let mut conn = self.connect()?;
        let mut closed = 0;
        for kind in ["normal", "pubsub"] {
            let reply = conn.command(&["CLIENT", "KILL", "TYPE", kind])?;
            closed += reply
                .as_integer()
                .ok_or_else(|| TestkitError::Protocol(format!("CLIENT KILL replied {reply:?}")))?;
        }
        Ok(closed)
    }

    /// SIGKILL (a crash: no AOF rewrite, no final save) and wait for the process to be gone.
    /// Connections are then refused until `restart()`. Does nothing if it is not running.
    pub fn kill(&mut self) -> Result<()> {
        self.paused = false;
        let Some(mut child) = self.child.take() else {
            return Ok(());
        };
        // An error here means it already exited; `wait` below reaps it either way.
        let _ = child.kill();
        child
            .wait()
            .map_err(|e| TestkitError::io("waiting for a killed redis-server", e))?;
        Ok(())
    }

    /// SIGTERM (graceful shutdown: redis flushes the AOF and saves if `save` points are set)
    /// and wait up to 10 s for the exit; after that it is SIGKILLed and this is an error.
    pub fn stop(&mut self) -> Result<()> {
        if !self.is_running() {
            return Ok(());
        }
        let pid = self.running_pid()?;
        send_signal("TERM", pid)?;
        if self.paused {
            // A stopped process only acts on SIGTERM once continued.
            send_signal("CONT", pid)?;
            self.paused = false;
        }
        let child = self.child.as_mut().expect("is_running() returned true");
        let exited = wait_for_exit(child, SIGNAL_TIMEOUT)?;
        if exited.is_none() {
            self.kill()?;
            return Err(TestkitError::Timeout {
                what: format!(
                    "redis-server (pid {pid}) to exit after SIGTERM; it was SIGKILLed instead"
                ),
                waited: SIGNAL_TIMEOUT,
            });
        }
        self.child = None;
        Ok(())
    }

    /// Starts the server again on the same port with the same dir and options, and waits for
    /// `PONG` (after the AOF is loaded). A running server is `stop()`ped first; use `kill()`
    /// before for a crash-restart.
    pub fn restart(&mut self) -> Result<()> {
        self.stop()?;
        let mut attempt = 0;
        loop {
            attempt += 1;
            match self.spawn_and_wait() {
                Ok(()) => return Ok(()),
                // Our port is reserved in this process, but another process may hold it
                // briefly (e.g. as the local end of an outgoing connection).
                Err(Failure::PortTaken(_)) if attempt < RESTART_ATTEMPTS => {
                    thread::sleep(Duration::from_millis(100));
                }
                Err(Failure::PortTaken(e) | Failure::Other(e)) => return Err(e),
            }
        }
    }

    /// SIGSTOP: the process keeps its sockets but answers nothing (a GC pause, a frozen VM).
    /// Returns once the kernel reports the process stopped.
    pub fn pause(&mut self) -> Result<()> {
        let pid = self.running_pid()?;
        send_signal("STOP", pid)?;
        self.paused = true;
        wait_for_proc_state(pid, |state| state == 'T' || state == 't', "stopped")
    }

    /// SIGCONT after `pause()`; returns once the kernel reports the process no longer stopped.
    pub fn resume(&mut self) -> Result<()> {
        let pid = self.running_pid()?;
        send_signal("CONT", pid)?;
        self.paused = false;
        wait_for_proc_state(pid, |state| state != 'T' && state != 't', "running")
    }

    fn running_pid(&self) -> Result<u32> {
        self.pid()
            .ok_or(TestkitError::NotRunning { port: self.port() })
    }

    /// Spawns the process and waits until it, not some other process, answers `PING`.
    fn spawn_and_wait(&mut self) -> Result<(), Failure> {
        let port = self.port();
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log_path)
            .map_err(|e| TestkitError::io(format!("opening {}", self.log_path.display()), e))?;
        let log_err = log
            .try_clone()
            .map_err(|e| TestkitError::io("duplicating the log file handle", e))?;
        // Errors quote only this run's output, not that of earlier runs of the same server.
        let log_start = log.metadata().map(|m| m.len()).unwrap_or(0);
        let child = Command::new(&self.binary)
            .arg("--port")
            .arg(port.to_string())
            .args(&self.args)
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log_err)
            .spawn()
            .map_err(|e| TestkitError::io(format!("spawning {}", self.binary.display()), e))?;
        self.child = Some(child);
        self.paused = false;

        let started = Instant::now();
        loop {
            let child = self.child.as_mut().expect("spawned just above");
            let pid = child.id();
            let status = child
                .try_wait()
                .map_err(|e| TestkitError::io("checking on redis-server", e))?;
            if let Some(status) = status {
                self.child = None;
                let log_tail = log_tail(&self.log_path, log_start);
                let error = TestkitError::StartFailed {
                    port,
                    reason: format!("redis-server exited ({status}) before answering PING"),
                    log_tail,
                };
                return Err(if error.to_string().contains("Address already in use") {
                    Failure::PortTaken(error)
                } else {
                    Failure::Other(error)
                });
            }
            let last = match probe(port, self.password.as_deref(), pid) {
                Ok(()) => return Ok(()),
                Err(e) => e,
            };
            if started.elapsed() >= self.start_timeout {
                // Don't leave a half-started server behind the error.
                self.kill()?;
                return Err(Failure::Other(TestkitError::StartFailed {
                    port,
                    reason: format!(
                        "no PONG within {:?}; last probe: {last}",
                        self.start_timeout
                    ),
                    log_tail: log_tail(&self.log_path, log_start),
                }));
            }
            thread::sleep(POLL_INTERVAL);
        }
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        // Errors cannot be reported from drop; SIGKILL also ends a paused process.
        let _ = self.kill();
    }
}

/// One readiness probe: `PONG` from a server whose `process_id` is `pid` (so a server of
/// another test that grabbed the port first is not mistaken for ours).
fn probe(port: u16, password: Option<&str>, pid: u32) -> Result<()> {
    let mut conn = connect_and_auth(port, password, PROBE_TIMEOUT)?;
    let pong = conn.command(&["PING"])?;
    if pong != RespValue::Simple("PONG".to_owned()) {
        return Err(TestkitError::Protocol(format!("PING replied {pong:?}")));
    }
    let info = conn
        .command(&["INFO", "server"])?
        .as_text()
        .unwrap_or_default();
    let theirs = info
        .lines()
        .find_map(|l| l.strip_prefix("process_id:"))
        .map(str::trim);
    if theirs == Some(pid.to_string().as_str()) {
        Ok(())
    } else {
        Err(TestkitError::Protocol(format!(
            "port {port} is answered by process {theirs:?}, not by our pid {pid}"
        )))
    }
}

pub(crate) fn connect_and_auth(
    port: u16,
    password: Option<&str>,
    timeout: Duration,
) -> Result<RespConnection> {
    let mut conn = RespConnection::connect(port, timeout)?;
    if let Some(password) = password {
        conn.command(&["AUTH", password])?;
    }
    Ok(conn)
}

/// `redis-cli [-c] -e --raw -h 127.0.0.1 -p P args…`; the password goes through
/// `REDISCLI_AUTH` so it is neither on the command line nor warned about.
pub(crate) fn redis_cli(
    port: u16,
    password: Option<&str>,
    cluster: bool,
    args: &[&str],
) -> Result<String> {
    let cli = find_redis_cli()?;
    let mut command = Command::new(&cli);
    if cluster {
        command.arg("-c");
    }
    command
        .args(["-e", "--raw", "-h", "127.0.0.1", "-p"])
        .arg(port.to_string())
        .args(args)
        .stdin(Stdio::null());
    if let Some(password) = password {
        command.env("REDISCLI_AUTH", password);
    }
    run(
        &mut command,
        &format!("redis-cli -p {port} {}", args.join(" ")),
    )
}

/// Runs `command` and returns its stdout without the final newline, or an error with its output.
pub(crate) fn run(command: &mut Command, display: &str) -> Result<String> {
    let out = command
        .output()
        .map_err(|e| TestkitError::io(format!("running `{display}`"), e))?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stdout = stdout.strip_suffix('\n').unwrap_or(&stdout).to_owned();
    if out.status.success() {
        Ok(stdout)
    } else {
        let stderr = String::from_utf8_lossy(&out.stderr);
        Err(TestkitError::CommandFailed {
            command: display.to_owned(),
            status: out.status.to_string(),
            output: format!("{stdout}\n{}", stderr.trim_end()).trim().to_owned(),
        })
    }
}

/// Sends a signal with the `kill` utility (the workspace forbids `unsafe`, so no `libc::kill`).
fn send_signal(signal: &str, pid: u32) -> Result<()> {
    run(
        Command::new("kill").args([format!("-{signal}"), pid.to_string()]),
        &format!("kill -{signal} {pid}"),
    )
    .map(drop)
}

/// `Some(status)` once `child` exits, `None` if it is still running after `timeout`.
fn wait_for_exit(child: &mut Child, timeout: Duration) -> Result<Option<ExitStatus>> {
    let started = Instant::now();
    loop {
        if let Some(status) = child
            .try_wait()
            .map_err(|e| TestkitError::io("waiting for redis-server to exit", e))?
        {
            return Ok(Some(status));
        }
        if started.elapsed() >= timeout {
            return Ok(None);
        }
        thread::sleep(POLL_INTERVAL);
    }
}

/// Waits until the state letter in `/proc/<pid>/stat` satisfies `done`. Without `/proc` (not
/// Linux) it returns at once: the signal was sent, and delivery is then near-immediate.
fn wait_for_proc_state(pid: u32, done: impl Fn(char) -> bool, wanted: &str) -> Result<()> {
    let stat_path = PathBuf::from(format!("/proc/{pid}/stat"));
    if !Path::new("/proc/self/stat").exists() {
        return Ok(());
    }
    let started = Instant::now();
    let mut last = None;
    loop {
        let stat = fs::read_to_string(&stat_path)
            .map_err(|e| TestkitError::io(format!("reading {}", stat_path.display()), e))?;
        // Format: `pid (comm) S …`; comm may contain spaces and parentheses.
        last = stat
            .rfind(')')
            .and_then(|i| stat[i + 1..].trim_start().chars().next())
            .or(last);
        if last.is_some_and(&done) {
            return Ok(());
        }
        if started.elapsed() >= SIGNAL_TIMEOUT {
            return Err(TestkitError::Timeout {
                what: format!("redis-server (pid {pid}) to be {wanted}; last state {last:?}"),
                waited: SIGNAL_TIMEOUT,
            });
        }
        thread::sleep(POLL_INTERVAL);
    }
}

/// The last lines of a log file from byte `start` on, or a note saying why there are none.
pub(crate) fn log_tail(path: &Path, start: u64) -> String {
    match fs::read(path) {
        Ok(bytes) => {
            let start = usize::try_from(start)
                .unwrap_or(usize::MAX)
                .min(bytes.len());
            let text = String::from_utf8_lossy(&bytes[start..]);
            let lines: Vec<&str> = text.lines().collect();
            lines[lines.len().saturating_sub(LOG_TAIL_LINES)..].join("\n")
        }
        Err(e) => format!("(could not read {}: {e})", path.display()),
    }
}

/// Percent-encodes a password for the userinfo part of a URL.
fn userinfo_escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_are_escaped_in_urls() {
        assert_eq!(userinfo_escape("abc-1_2.3~"), "abc-1_2.3~");
        assert_eq!(userinfo_escape("p@ss:w/rd"), "p%40ss%3Aw%2Frd");
    }

    #[test]
    fn extra_config_overrides_defaults_and_accepts_dashes() {
        let builder = RedisServer::builder()
            .appendonly(Appendfsync::Always)
            .config("--maxmemory", "10mb")
            .config("appendonly", "no");
        let args = builder.args(Path::new("/tmp/x"));
        let joined = args.join(" ");
        assert!(joined.contains("--appendonly yes --appendfsync always"));
        assert!(joined.ends_with("--maxmemory 10mb --appendonly no"));
        // An empty argument, not a missing one: `--save ""` disables RDB snapshots.
        let save = args.iter().position(|a| a == "--save").expect("save set");
        assert_eq!(args[save + 1], "");
    }

    #[test]
    fn log_tail_keeps_the_last_lines() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("log");
        let text: String = (0..100).map(|i| format!("line {i}\n")).collect();
        fs::write(&path, text).expect("write log");
        let tail = log_tail(&path, 0);
        assert!(tail.starts_with("line 70\n"));
        assert!(tail.ends_with("line 99"));
        let offset = "line 0\nline 1\n".len() as u64;
        let text: String = (0..5).map(|i| format!("line {i}\n")).collect();
        fs::write(&path, text).expect("write log");
        assert_eq!(log_tail(&path, offset), "line 2\nline 3\nline 4");
    }
}
