//! `kitbash up`: the whole system on one machine — a Redis it starts itself (data under
//! `<state dir>/redis`, AOF on, `noeviction`) unless one already answers at the configured URL,
//! every daemon binary that is built, a demo market feed and a demo feed of entity updates, and a
//! live status view.
//!
//! `up` owns its children. Whatever ends it, they stop too:
//! - SIGINT (Ctrl-C), SIGTERM (`timeout`, a service manager), SIGHUP (the terminal closed),
//!   SIGQUIT, or its output going away (`up | tee log` after `tee` died; writes fail with
//!   `EPIPE`, which `up` ignores rather than dying of): the feed stops, the daemons get SIGTERM
//!   and drain (a second signal makes them exit at once), then Redis gets SIGTERM.
//! - `kill -9` of `up`, or a panic: the kernel sends each child SIGTERM (see [`crate::tether`]).
//!
//! It records itself and its children's pids in `<state dir>/up.json` ([`UpRecord`]), which
//! the other commands read to find this Redis, and removes the record when it stops.

use std::collections::BTreeMap;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Child, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use fred::prelude::*;
use kitbash_client::Producer;
use kitbash_runtime::{CancellationToken, Config};
use kitbash_schema::DaemonKind;
use rustix::process::Signal;
use tokio::signal::unix::{SignalKind, signal};

use crate::live::LiveView;
use crate::locate::{ChildRecord, UpRecord};
use crate::tether;

/// Options of `kitbash up`.
#[derive(Clone, Debug)]
pub struct UpOptions {
    /// Ticks per second of the demo feed (0 = no feed).
    pub feed_rate: f64,
    /// Where Redis keeps its data and the daemons their logs; created when missing.
    pub state_dir: PathBuf,
    /// The profile the configuration was loaded with (passed on to the daemons).
    pub profile: Option<String>,
    /// The configuration directory (passed on to the daemons).
    pub config_dir: PathBuf,
}

/// Symbols of the demo feed whose physics state the view shows.
const SHOWN_SYMBOLS: [&str; 2] = ["SPY", "BTC-USD"];

/// stderr that never kills `up`: a write that fails (pipe closed, terminal gone) marks the
/// output as gone instead of panicking like `eprintln!` would, and later writes are skipped.
#[derive(Debug, Default)]
struct Console {
    /// Set by the first failed write; read by the live loop, which then stops everything.
    gone: AtomicBool,
}

impl Console {
    fn write(&self, text: &str) {
        if self.gone.load(Ordering::Relaxed) {
            return;
        }
        let mut err = std::io::stderr().lock();
        if err
            .write_all(text.as_bytes())
            .and_then(|()| err.flush())
            .is_err()
        {
            self.gone.store(true, Ordering::Relaxed);
        }
    }

    fn line(&self, text: &str) {
        self.write(&format!("{text}\n"));
    }

    fn redraw(&self, lines: &[String]) {
        self.write(&format!("\x1b[H\x1b[2J{}\n", lines.join("\n")));
    }

    fn gone(&self) -> bool {
        self.gone.load(Ordering::Relaxed)
    }
}

/// The signals that stop `up`.
struct StopSignals {
    int: tokio::signal::unix::Signal,
    term: tokio::signal::unix::Signal,
    hup: tokio::signal::unix::Signal,
    quit: tokio::signal::unix::Signal,
}

impl StopSignals {
    fn install() -> std::io::Result<Self> {
        Ok(Self {
            int: signal(SignalKind::interrupt())?,
            term: signal(SignalKind::terminate())?,
            hup: signal(SignalKind::hangup())?,
            quit: signal(SignalKind::quit())?,
        })
    }

    async fn recv(&mut self) -> &'static str {
        tokio::select! {
            _ = self.int.recv() => "SIGINT",
            _ = self.term.recv() => "SIGTERM",
            _ = self.hup.recv() => "SIGHUP",
            _ = self.quit.recv() => "SIGQUIT",
        }
    }
}

/// One child process of `up`.
#[derive(Debug)]
struct Member {
    name: String,
    child: Child,
    log: PathBuf,
    /// Set once it has exited (and been reaped).
    exited: Option<ExitStatus>,
}

impl Member {
    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn record(&self) -> ChildRecord {
        ChildRecord {
            name: self.name.clone(),
            pid: self.pid(),
            log: self.log.clone(),
        }
    }

    /// Reaps it if it has exited; true when it has.
    fn poll(&mut self) -> bool {
        if self.exited.is_none()
            && let Ok(Some(s)) = self.child.try_wait()
        {
            self.exited = Some(s);
        }
        self.exited.is_some()
    }
}

/// Everything `up` started.
#[derive(Debug, Default)]
struct Fleet {
    /// The redis-server `up` started (none when it uses a running one).
    redis: Option<Member>,
    daemons: Vec<Member>,
}

impl Fleet {
    /// Stops the daemons (SIGTERM: they drain; SIGKILL after `grace` + 5 s), then Redis.
    async fn stop(&mut self, console: &Console, signals: &mut StopSignals, grace: Duration) {
        for d in self.daemons.iter_mut() {
            if d.poll() {
                continue;
            }
            console.line(&format!("up: stopping {} (pid {})", d.name, d.pid()));
            tether::signal(d.pid(), Signal::TERM);
        }
        wait_exited(
            &mut self.daemons,
            grace + Duration::from_secs(5),
            console,
            signals,
        )
        .await;
        if let Some(r) = self.redis.as_mut().filter(|r| r.exited.is_none()) {
            console.line(&format!("up: stopping redis-server (pid {})", r.pid()));
            tether::signal(r.pid(), Signal::TERM);
            wait_exited(
                std::slice::from_mut(r),
                Duration::from_secs(15),
                console,
                signals,
            )
            .await;
        }
    }

    /// Children that exited since the last call, as lines for the view.
    fn exited_notes(&mut self) -> Vec<String> {
        let mut notes = Vec::new();
        for m in self.daemons.iter_mut().chain(self.redis.as_mut()) {
            if m.poll()
                && let Some(s) = m.exited
            {
                notes.push(format!(
                    "{} (pid {}) exited ({s}): see {}",
                    m.name,
                    m.pid(),
                    m.log.display()
                ));
            }
        }
        notes
    }
}

impl Drop for Fleet {
    /// Last resort (an early return or a panic between start and stop): never leave a child.
    fn drop(&mut self) {
        for m in self.daemons.iter_mut().chain(self.redis.as_mut()) {
            if !m.poll() {
                tether::signal(m.pid(), Signal::TERM);
            }
        }
    }
}

/// Waits until every member has exited. Another stop signal meanwhile is passed on (a daemon
/// exits at once on its second SIGTERM); past `limit` the rest are killed.
async fn wait_exited(
    members: &mut [Member],
    limit: Duration,
    console: &Console,
    signals: &mut StopSignals,
) {
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        let mut running = false;
        for m in members.iter_mut() {
            let was = m.exited.is_some();
            if m.poll() {
                if !was && let Some(s) = m.exited {
                    console.line(&format!("up: {} exited ({s})", m.name));
                }
            } else {
                running = true;
            }
        }
        if !running {
            return;
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(50)) => {}
            sig = signals.recv() => {
                console.line(&format!("up: {sig} again: telling the rest to stop at once"));
                for m in members.iter_mut().filter(|m| m.exited.is_none()) {
                    tether::signal(m.pid(), Signal::TERM);
                }
            }
            _ = tokio::time::sleep_until(deadline) => {
                for m in members.iter_mut() {
                    if m.poll() {
                        continue;
                    }
                    console.line(&format!("up: {} did not stop within {limit:?}; killing it", m.name));
                    let _ = m.child.kill();
                    m.exited = m.child.wait().ok();
                }
                return;
            }
        }
    }
}

fn host_port(url: &str) -> (String, u16) {
    let rest = url.split("://").nth(1).unwrap_or(url);
    let rest = rest
        .rsplit('@')
        .next()
        .unwrap_or(rest)
        .split(['/', '?'])
        .next()
        .unwrap_or(rest);
    match rest.rsplit_once(':') {
        Some((h, p)) => (h.to_owned(), p.parse().unwrap_or(6379)),
        None => (rest.to_owned(), 6379),
    }
}

fn ping(host: &str, port: u16) -> bool {
    use std::io::Read;
    use std::net::ToSocketAddrs as _;
    let Some(addr) = (host, port)
        .to_socket_addrs()
        .ok()
        .and_then(|mut a| a.next())
    else {
        return false;
    };
    let Ok(mut s) = std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(300)) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_millis(500)));
    let mut buf = [0u8; 64];
    // A Redis with a password answers -NOAUTH: it is a Redis all the same.
    s.write_all(b"PING\r\n").is_ok()
        && s.read(&mut buf)
            .map(|n| buf[..n].starts_with(b"+PONG") || buf[..n].starts_with(b"-NOAUTH"))
            .unwrap_or(false)
}

/// Starts redis-server on `port` with its data in `dir`, tied to `up`.
async fn start_redis(port: u16, dir: &Path, console: &Console) -> anyhow::Result<Member> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let bin = kitbash_testkit::find_redis_server()?;
    let log_path = dir.join("redis.log");
    let log = std::fs::File::create(&log_path)
        .with_context(|| format!("cannot create {}", log_path.display()))?;
    let child = tether::command(&bin)?
        .args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--dir"])
        .arg(dir)
        .args([
            "--appendonly",
            "yes",
            "--appendfsync",
            "everysec",
            "--save",
            "",
            "--maxmemory-policy",
            "noeviction",
        ])
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .spawn()
        .with_context(|| format!("cannot start {}", bin.display()))?;
    let mut member = Member {
        name: "redis-server".into(),
        child,
        log: log_path,
        exited: None,
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if ping("127.0.0.1", port) {
            console.line(&format!(
                "up: started redis-server on 127.0.0.1:{port} (pid {}, data in {})",
                member.pid(),
                dir.display()
            ));
            return Ok(member);
        }
        if member.poll() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Dropping `member` would only signal it; stop and reap it here.
    let _ = member.child.kill();
    let _ = member.child.wait();
    member.exited = Some(ExitStatus::default());
    anyhow::bail!(
        "redis-server did not answer on port {port}; see {}",
        member.log.display()
    )
}

/// Where `up` has the bridge listen: `[bridge] listen` when that port is free, else a free port
/// on the same host (a second local fleet, or a test, beside a running one); `None` when the
/// bridge serves nothing (`listen = ""`).
fn bridge_addr(cfg: &kitbash_runtime::config::BridgeConfig) -> Option<std::net::SocketAddr> {
    let want = cfg.listen_addr()?;
    if std::net::TcpListener::bind(want).is_ok() {
        return Some(want);
    }
    let free = std::net::TcpListener::bind((want.ip(), 0)).ok()?;
    free.local_addr().ok()
}

fn daemon_binary(kind: DaemonKind) -> Option<PathBuf> {
    let exe = std::env::current_exe().ok()?;
    let p = exe.parent()?.join(format!("kitbash-{}", kind.name()));
    p.exists().then_some(p)
}

/// What `up` runs besides its children: the status client and the demo feed.
#[derive(Default)]
struct Session {
    client: Option<Client>,
    feed: Option<(
        CancellationToken,
        tokio::task::JoinHandle<anyhow::Result<u64>>,
    )>,
    /// The demo feed of entity updates (seed 002), stopped with the market feed.
    entities: Option<(
        CancellationToken,
        tokio::task::JoinHandle<anyhow::Result<u64>>,
    )>,
    /// The demo query feed (seed 000), stopped with the market feed.
    queries: Option<(
        CancellationToken,
        tokio::task::JoinHandle<anyhow::Result<u64>>,
    )>,
    /// The demo memory-token feed (seed 004), stopped with the market feed.
    memories: Option<(
        CancellationToken,
        tokio::task::JoinHandle<anyhow::Result<u64>>,
    )>,
}

/// Runs until a stop signal or until its output is gone; always stops what it started.
pub async fn run(config: Config, opts: UpOptions) -> anyhow::Result<()> {
    let console = Console::default();
    let mut signals = StopSignals::install().context("cannot install signal handlers")?;
    let state_dir = crate::locate::absolute(&opts.state_dir);
    std::fs::create_dir_all(&state_dir)
        .with_context(|| format!("cannot create the state directory {}", state_dir.display()))?;
    if let Some(other) = UpRecord::read_live(&state_dir) {
        anyhow::bail!(
            "another `kitbash up` (pid {}) already runs with the state directory {}; stop it first",
            other.pid,
            state_dir.display()
        );
    }
    let mut fleet = Fleet::default();
    let mut session = Session::default();
    let result = start_and_watch(
        &config,
        &opts,
        &state_dir,
        &console,
        &mut signals,
        &mut fleet,
        &mut session,
    )
    .await;
    if let Err(e) = &result {
        console.line(&format!("up: {e:#}"));
    }
    console.line("up: stopping: the feed, then the daemons (they drain), then Redis");
    for (token, feed) in [
        session.feed.take(),
        session.entities.take(),
        session.queries.take(),
        session.memories.take(),
    ]
    .into_iter()
    .flatten()
    {
        token.cancel();
        let _ = feed.await;
    }
    if let Some(c) = session.client.take() {
        let _ = tokio::time::timeout(Duration::from_secs(2), c.quit()).await;
    }
    fleet
        .stop(
            &console,
            &mut signals,
            Duration::from_millis(config.consumer.grace_ms),
        )
        .await;
    UpRecord::remove(&state_dir);
    console.line("up: stopped; nothing it started is left running");
    result
}

async fn start_and_watch(
    config: &Config,
    opts: &UpOptions,
    state_dir: &Path,
    console: &Console,
    signals: &mut StopSignals,
    fleet: &mut Fleet,
    session: &mut Session,
) -> anyhow::Result<()> {
    let url = kitbash_runtime::redis::redact(&config.redis.url);
    let (host, port) = host_port(&config.redis.url);
    let mut record = UpRecord {
        pid: std::process::id(),
        state: "starting".into(),
        redis_url: config.redis.url.clone(),
        namespace: config.redis.namespace.clone(),
        profile: opts.profile.clone(),
        config_dir: crate::locate::absolute(&opts.config_dir),
        redis: None,
        daemons: Vec::new(),
        not_built: Vec::new(),
    };
    let redis_note = if ping(&host, port) {
        console.line(&format!(
            "up: Redis already answers at {url}; using it (up will not stop it)"
        ));
        "already running; up leaves it running".to_owned()
    } else {
        anyhow::ensure!(
            host == "127.0.0.1" || host == "localhost",
            "Redis at {url} does not answer and is not local, so up cannot start it: start it or fix [redis] url"
        );
        let r = start_redis(port, &state_dir.join("redis"), console).await?;
        let note = format!("started by up, pid {}", r.pid());
        record.redis = Some(r.record());
        fleet.redis = Some(r);
        note
    };
    record
        .write(state_dir)
        .context("cannot write the up record")?;

    let mut bridge_url: Option<std::net::SocketAddr> = None;
    for kind in DaemonKind::ALL {
        let Some(bin) = daemon_binary(kind) else {
            record.not_built.push(kind.name().to_owned());
            continue;
        };
        let log_path = state_dir.join(format!("{}.log", kind.name()));
        let log = std::fs::File::create(&log_path)
            .with_context(|| format!("cannot create {}", log_path.display()))?;
        let mut cmd = tether::command(&bin)?;
        // The daemons use exactly the Redis, namespace and configuration up uses, whatever
        // flags up was given.
        cmd.env("KITBASH__REDIS__URL", &config.redis.url)
            .env("KITBASH__REDIS__NAMESPACE", &config.redis.namespace)
            .env("KITBASH_CONFIG_DIR", &record.config_dir)
            .env("GLIBC_TUNABLES", kitbash_runtime::daemon::glibc_tunables())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log);
        match &opts.profile {
            Some(p) => cmd.env("KITBASH_PROFILE", p),
            None => cmd.env_remove("KITBASH_PROFILE"),
        };
        // A local fleet keeps its archive beside its logs unless the configuration chose a
        // directory (the default, /var/lib/kitbash/archive, is a deployment's).
        if config.archive.dir == kitbash_runtime::config::ArchiveConfig::default().dir {
            cmd.env("KITBASH__ARCHIVE__DIR", state_dir.join("archive"));
        }
        if kind == DaemonKind::Bridge
            && let Some(addr) = bridge_addr(&config.bridge)
        {
            cmd.env("KITBASH__BRIDGE__LISTEN", addr.to_string());
            bridge_url = Some(addr);
        }
        let child = cmd
            .spawn()
            .with_context(|| format!("cannot start {}", bin.display()))?;
        let member = Member {
            name: kind.name().to_owned(),
            child,
            log: log_path,
            exited: None,
        };
        console.line(&format!(
            "up: started {} (pid {}, log {})",
            bin.display(),
            member.pid(),
            member.log.display()
        ));
        record.daemons.push(member.record());
        fleet.daemons.push(member);
    }
    if !record.not_built.is_empty() {
        console.line(&format!(
            "up: not built yet: {}",
            record.not_built.join(", ")
        ));
    }
    record.state = "running".into();
    record
        .write(state_dir)
        .context("cannot write the up record")?;

    let client = kitbash_runtime::redis::connect_client(&config.redis, Duration::from_secs(10))
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    session.client = Some(client.clone());
    let keys = config.redis.keys();
    if opts.feed_rate > 0.0 {
        let producer = Producer::new(client.clone(), keys.clone(), config.feynman.partitions);
        let fo = crate::feed::FeedOptions {
            count: None,
            rate: Some(opts.feed_rate),
            symbols: ["SPY", "QQQ", "AAPL", "MSFT", "NVDA", "BTC-USD"]
                .map(String::from)
                .to_vec(),
            csv: None,
            seed: 42,
            progress: false,
        };
        let token = CancellationToken::new();
        let t = token.clone();
        console.line(&format!(
            "up: demo market feed at {} ticks/s",
            opts.feed_rate
        ));
        session.feed = Some((
            token,
            tokio::spawn(async move { crate::feed::ticks(&producer, &fo, t).await }),
        ));
        // Seed 002: a few entity updates a second, so the entity partitions move too.
        let producer = Producer::new(client.clone(), keys.clone(), config.feynman.partitions);
        let token = CancellationToken::new();
        let t2 = token.clone();
        let partitions = config.entity.partitions;
        console.line("up: demo entity feed: quantum:status and entity:claude:* every 500 ms");
        session.entities = Some((
            token,
            tokio::spawn(async move {
                crate::feed::entity_updates(&producer, partitions, Duration::from_millis(500), t2)
                    .await
            }),
        ));
    }

    // Seed 000's reflex path: hats and sample grains, and a demo query mix for decay/ghost.
    match crate::reflex::demo_setup(
        &client,
        &keys,
        &kitbash_client::reflex::Reflex::new(client.clone(), keys.clone(), config.decay.factor),
        &record.config_dir,
        config.ghost.dim,
    )
    .await
    {
        Ok(notes) if !notes.is_empty() => console.line(&format!("up: wrote {notes}")),
        Ok(_) => {}
        Err(e) => console.line(&format!("up: no reflex demo data: {e:#}")),
    }
    if opts.feed_rate > 0.0 {
        let producer = Producer::new(client.clone(), keys.clone(), config.feynman.partitions);
        let token = CancellationToken::new();
        let t = token.clone();
        let rate = (opts.feed_rate / 10.0).max(1.0);
        console.line(&format!("up: demo query feed at {rate} queries/s"));
        session.queries = Some((
            token,
            tokio::spawn(async move { crate::reflex::queries(&producer, rate, None, 7, t).await }),
        ));
        // Seed 004: memory tokens for the archive's indexer (`kitbash memory top ada`).
        let producer = Producer::new(client.clone(), keys.clone(), config.feynman.partitions);
        let token = CancellationToken::new();
        let t = token.clone();
        console.line("up: demo memory-token feed at 5 events/s (kitbash memory top ada)");
        session.memories = Some((
            token,
            tokio::spawn(async move { crate::memory::feed(&producer, 5.0, None, 11, t).await }),
        ));
    }

    let mut header = vec![format!(
        "kitbash up · Redis {url} ({redis_note}) · config {}{} · Ctrl-C stops everything",
        record.config_dir.display(),
        opts.profile
            .as_ref()
            .map_or_else(String::new, |p| format!(", profile {p}"))
    )];
    let started: Vec<String> = record
        .daemons
        .iter()
        .map(|d| format!("{} (pid {})", d.name, d.pid))
        .collect();
    header.push(format!(
        "started: {} · logs in {}{}",
        if started.is_empty() {
            "no daemon".to_owned()
        } else {
            started.join(", ")
        },
        state_dir.display(),
        if record.not_built.is_empty() {
            String::new()
        } else {
            format!(" · not built yet: {}", record.not_built.join(", "))
        }
    ));
    if let Some(addr) = bridge_url {
        let line = format!(
            "dashboard: http://{addr}/ · WebSocket (Centrifugo protocol): ws://{addr}{}",
            config.bridge.path
        );
        console.line(&format!("up: {line}"));
        header.push(line);
    }
    let mut exited: Vec<String> = Vec::new();
    let mut previous: Option<(Instant, BTreeMap<String, u64>)> = None;
    let mut tick = tokio::time::interval(Duration::from_secs(2));
    let reason = loop {
        tokio::select! {
            sig = signals.recv() => break format!("{sig} received"),
            _ = tick.tick() => {
                exited.extend(fleet.exited_notes().into_iter().map(|n| format!("EXITED: {n}")));
                let mut view = LiveView {
                    header: header.iter().chain(&exited).cloned().collect(),
                    ..LiveView::default()
                };
                let collected = tokio::time::timeout(
                    Duration::from_secs(5),
                    crate::status::collect(&client, &keys, config),
                ).await;
                match collected {
                    Ok(Ok(s)) => {
                        let now = Instant::now();
                        let added: BTreeMap<String, u64> =
                            s.streams.iter().map(|x| (x.stream.clone(), x.entries_added)).collect();
                        if let Some((then, before)) = &previous {
                            let dt = now.duration_since(*then).as_secs_f64().max(1e-3);
                            for (name, n) in &added {
                                if let Some(b) = before.get(name) {
                                    view.rates.insert(name.clone(), n.saturating_sub(*b) as f64 / dt);
                                }
                            }
                        }
                        previous = Some((now, added));
                        view.daemons = s.daemons;
                        view.streams = s.streams;
                        view.redis = Some(s.redis);
                        view.reflex = Some(s.reflex);
                        view.warnings = s.dead_letter_alarms.iter().map(|a| a.line()).collect();
                    }
                    Ok(Err(e)) => view.header.push(format!("status unavailable: {e:#}")),
                    Err(_) => view.header.push("status unavailable: Redis did not answer within 5 s".into()),
                }
                for sym in SHOWN_SYMBOLS {
                    let v: Option<String> = client.get(keys.physics_state(sym)).await.unwrap_or(None);
                    if let Some(v) = v.and_then(|v| serde_json::from_str(&v).ok()) {
                        view.physics.push((sym.to_owned(), v));
                    }
                }
                let (width, height) = terminal_size();
                console.redraw(&crate::live::render(&view, width, height.saturating_sub(1)));
                if console.gone() {
                    break "its output was closed".to_owned();
                }
            }
        }
    };
    console.line(&format!("\nup: {reason}"));
    Ok(())
}

/// Columns and rows of the terminal `up` draws on: stderr's, else stdout's, else stdin's
/// (`up 2>&1 | tee log` still has the terminal on stdin), else `/dev/tty`'s, else
/// `$COLUMNS`×`$LINES`, else 80×24.
pub fn terminal_size() -> (usize, usize) {
    use std::os::fd::AsFd as _;
    fn of(fd: std::os::fd::BorrowedFd<'_>) -> Option<(usize, usize)> {
        let w = rustix::termios::tcgetwinsize(fd).ok()?;
        (w.ws_col > 0 && w.ws_row > 0).then_some((usize::from(w.ws_col), usize::from(w.ws_row)))
    }
    of(std::io::stderr().as_fd())
        .or_else(|| of(std::io::stdout().as_fd()))
        .or_else(|| of(std::io::stdin().as_fd()))
        .or_else(|| {
            std::fs::File::open("/dev/tty")
                .ok()
                .and_then(|f| of(f.as_fd()))
        })
        .or_else(|| {
            let env = |k| std::env::var(k).ok()?.parse::<usize>().ok();
            Some((env("COLUMNS")?, env("LINES")?))
        })
        .unwrap_or((80, 24))
}
