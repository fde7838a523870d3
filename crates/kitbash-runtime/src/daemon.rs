//! What every daemon binary does around its own components: load config (exit 64 on a bad
//! one), start telemetry, install signals, connect to Redis, watch it for readiness, serve the
//! admin endpoint, beat in the fleet register, run the [`Components`], and drain within the
//! grace period. A daemon's `main.rs` is one call to [`main`]; tests call [`run`].

use std::future::Future;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use kitbash_schema::messages::Heartbeat;
use kitbash_schema::{DaemonKind, Keys};
use tokio::task::JoinHandle;

use crate::component::Components;
use crate::config::{Config, ConfigSource};
use crate::error::RuntimeError;
use crate::health::Health;
use crate::metrics::Metrics;
use crate::redis::Redis;
use crate::shutdown::Signals;

/// Exit status for a configuration error (EX_CONFIG-adjacent `EX_USAGE`, as linkerd does).
pub const EXIT_CONFIG: u8 = 64;

/// The glibc malloc setting every launcher we ship gives the daemons (`GLIBC_TUNABLES`: the
/// systemd units, the container image, `kitbash up`, the benchmarks). A fixed
/// `mmap_threshold` turns off glibc's dynamic threshold, which rises to the size of every large
/// block freed: after the first 1 MiB commit was freed, later ones came from the heap and stayed
/// resident after a backlog. Fixed at glibc's own starting value (128 KiB), blocks of that size
/// or more are mapped and unmapped, so the transient peak of a drain is given back. feynman's
/// `rss_per_symbol_kb_backlog` 3.5–3.8 → 2.9, same drain rate (docs/BENCHMARKS.md, session
/// 16). Not in the binaries themselves: glibc reads it only at start-up and changing it in
/// process needs `mallopt`, an FFI call. An operator's own `GLIBC_TUNABLES` replaces it.
pub const GLIBC_TUNABLES: &str = "glibc.malloc.mmap_threshold=131072";

/// The `GLIBC_TUNABLES` a launcher gives a daemon: the operator's when set, else
/// [`GLIBC_TUNABLES`].
pub fn glibc_tunables() -> String {
    std::env::var("GLIBC_TUNABLES").unwrap_or_else(|_| GLIBC_TUNABLES.to_owned())
}

/// A unique consumer/instance name: `{kind}-{host}-{pid}-{random}`. Two processes never share
/// one, so they never share a pending-entries list and hide each other's crashes.
pub fn instance_name(kind: DaemonKind) -> String {
    let host = hostname();
    let r: u32 = rand::random();
    format!(
        "{}-{host}-{}-{:06x}",
        kind.name(),
        std::process::id(),
        r & 0xff_ffff
    )
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".into())
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '.' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// Everything a daemon's `run` needs, shared by its tasks.
#[derive(Clone, Debug)]
pub struct DaemonContext {
    /// Which daemon this is.
    pub kind: DaemonKind,
    /// Unique instance name (also the consumer name).
    pub instance: String,
    /// Validated configuration.
    pub config: Config,
    /// Key builder (namespace + style).
    pub keys: Keys,
    /// Redis connections.
    pub redis: Redis,
    /// Metric registry behind `/metrics`.
    pub metrics: Metrics,
    /// Readiness registry behind `/readyz`.
    pub health: Health,
    /// Stop/reload signals.
    pub signals: Signals,
    /// The admin endpoint's bound address, when enabled.
    pub admin_addr: Option<SocketAddr>,
    /// The addresses of the routers it serves ([`crate::Components::serve`]).
    pub(crate) served: crate::serve::Served,
    /// Set once the components run: systemd's `READY=1` waits for it ([`crate::notify`]).
    pub(crate) started: crate::notify::Started,
    /// Background tasks (heartbeat) to await on the way out.
    tasks: Vec<std::sync::Arc<tokio::sync::Mutex<Option<JoinHandle<()>>>>>,
}

impl DaemonContext {
    /// Connects, starts the admin endpoint and the heartbeat. Does not wait for Redis.
    /// Notifies systemd when `$NOTIFY_SOCKET` says so ([`crate::notify`]).
    pub async fn start(
        kind: DaemonKind,
        config: Config,
        signals: Signals,
    ) -> Result<Self, RuntimeError> {
        Self::start_with(
            kind,
            config,
            signals,
            crate::notify::SystemdLink::from_env(),
        )
        .await
    }

    /// [`DaemonContext::start`] notifying `link` (a test's socket) instead of the environment's.
    pub async fn start_with(
        kind: DaemonKind,
        config: Config,
        signals: Signals,
        link: crate::notify::SystemdLink,
    ) -> Result<Self, RuntimeError> {
        let instance = instance_name(kind);
        let keys = config.redis.keys();
        let redis = Redis::connect(&config.redis)?;
        let metrics = Metrics::new();
        let health = Health::with_stuck_after(Duration::from_millis(config.fleet.stuck_after_ms));
        let admin_addr = match config.admin.addr() {
            Some(addr) => Some(
                crate::admin::serve(
                    addr,
                    redis.clone(),
                    health.clone(),
                    metrics.clone(),
                    kind.name(),
                    instance.clone(),
                    signals.shutdown.clone(),
                )
                .await?,
            ),
            None => None,
        };
        let beat = Heartbeat {
            kind: kind.name().into(),
            instance: instance.clone(),
            host: hostname(),
            pid: std::process::id(),
            started_ms: crate::clock::now_ms(),
            beat_ms: 0,
            version: env!("CARGO_PKG_VERSION").into(),
            admin: admin_addr.map(|a| a.to_string()),
            serves: Default::default(),
            stats: Default::default(),
            ready: false,
        };
        let watch = tokio::spawn(watch_redis(
            redis.clone(),
            health.clone(),
            signals.shutdown.clone(),
        ));
        let started = crate::notify::Started::default();
        let notify = tokio::spawn(crate::notify::run(
            link,
            health.clone(),
            started.clone(),
            signals.shutdown.clone(),
        ));
        let served = crate::serve::Served::default();
        let hb = tokio::spawn(crate::heartbeat::run(
            redis.clone(),
            keys.clone(),
            beat,
            served.clone(),
            kind,
            Duration::from_millis(config.fleet.heartbeat_ms),
            health.clone(),
            metrics.clone(),
            signals.shutdown.clone(),
        ));
        tracing::info!(kind = kind.name(), instance = %instance, redis = %crate::redis::redact(&config.redis.url),
            namespace = %keys.namespace(), "starting");
        Ok(Self {
            kind,
            instance,
            config,
            keys,
            redis,
            metrics,
            health,
            signals,
            admin_addr,
            served,
            started,
            tasks: vec![
                std::sync::Arc::new(tokio::sync::Mutex::new(Some(hb))),
                std::sync::Arc::new(tokio::sync::Mutex::new(Some(watch))),
                std::sync::Arc::new(tokio::sync::Mutex::new(Some(notify))),
            ],
        })
    }

    /// Reports a figure about this instance in its heartbeat (`stats` there; `kitbash status`
    /// prints them beside the instance): the bridge's connections, for one.
    pub fn report(&self, name: &str, value: u64) {
        self.served.report(name, value);
    }

    /// A handle for tasks that report figures ([`Self::report`]) after they started.
    pub fn reporter(&self) -> crate::serve::Served {
        self.served.clone()
    }

    /// The bound address of the router served as `name`, once it listens.
    pub fn served_addr(&self, name: &str) -> Option<SocketAddr> {
        self.served.get(name)
    }

    /// Waits for the background tasks and closes the connections. Call after `run` returns.
    pub async fn finish(&self) {
        for t in &self.tasks {
            if let Some(h) = t.lock().await.take() {
                let _ = h.await;
            }
        }
        self.redis.quit().await;
    }
}

/// Keeps the `redis` readiness check current: a `PING` every 500 ms that must answer within
/// 250 ms. `/readyz` answers from this state at once, so a probe never waits out the command
/// timeout while Redis hangs.
async fn watch_redis(redis: Redis, health: Health, shutdown: tokio_util::sync::CancellationToken) {
    let opts = fred::types::config::Options {
        timeout: Some(Duration::from_millis(250)),
        max_attempts: Some(1),
        ..Default::default()
    };
    health.set(crate::health::REDIS_CHECK, false);
    crate::periodic::every(Duration::from_millis(500), shutdown, || {
        let (redis, health, opts) = (redis.clone(), health.clone(), opts.clone());
        async move {
            use fred::prelude::*;
            let ok = redis
                .client
                .with_options(&opts)
                .ping::<String>(None)
                .await
                .is_ok();
            health.set(crate::health::REDIS_CHECK, ok);
        }
    })
    .await;
}

/// SIGHUP: re-read the configuration. A valid one applies `telemetry.level` at once (other
/// settings take effect at the next start, and the log says so); an invalid one is refused
/// with the same one-line reason start-up would give, and the daemon keeps running.
async fn reload_on_sighup(bin: String, mut reload: tokio::sync::watch::Receiver<u64>) {
    while reload.changed().await.is_ok() {
        match Config::load(&ConfigSource::from_env()) {
            Ok(cfg) => match crate::telemetry::set_level(&cfg.telemetry.level) {
                Ok(()) => {
                    tracing::info!(level = %cfg.telemetry.level,
                    "configuration reloaded: telemetry.level applied; other changes take effect on restart");
                    // Shows at once whether debug logging is now on (an idle daemon may log
                    // nothing else at that level for a long time).
                    tracing::debug!("debug logging on");
                }
                Err(e) => {
                    tracing::warn!(error = %e, "configuration reloaded but the log level was not applied")
                }
            },
            Err(e) => tracing::error!(
                "{bin}: reload refused, bad config: {e}; keeping the running configuration"
            ),
        }
    }
}

/// Runs one instance of `kind` in-process until `signals.shutdown`: starts the context, builds
/// the components with `build`, runs them, and closes everything. What [`main`] runs; tests call
/// it directly with their own signals.
pub async fn run(
    kind: DaemonKind,
    config: Config,
    signals: crate::shutdown::Signals,
    build: fn(&DaemonContext) -> Components,
) -> Result<(), RuntimeError> {
    run_with(
        kind,
        config,
        signals,
        build,
        crate::notify::SystemdLink::from_env(),
    )
    .await
}

/// [`run`] notifying `link` instead of `$NOTIFY_SOCKET` (tests listen on their own socket).
pub async fn run_with(
    kind: DaemonKind,
    config: Config,
    signals: crate::shutdown::Signals,
    build: fn(&DaemonContext) -> Components,
    link: crate::notify::SystemdLink,
) -> Result<(), RuntimeError> {
    let ctx = DaemonContext::start_with(kind, config, signals, link).await?;
    let result = build(&ctx).run().await;
    ctx.finish().await;
    result
}

/// The whole life of a daemon binary; `main.rs` is one call to this:
/// `kitbash_runtime::daemon::main(DaemonKind::Feynman, kitbash_feynman::components)`.
pub fn main(kind: DaemonKind, build: fn(&DaemonContext) -> Components) -> ExitCode {
    main_with(kind, move |config, signals| {
        run(kind, config, signals, build)
    })
}

/// Like [`main`] with a free-form `run` (config and signals in, drained daemon out).
pub fn main_with<F, Fut>(kind: DaemonKind, run: F) -> ExitCode
where
    F: FnOnce(Config, Signals) -> Fut,
    Fut: Future<Output = Result<(), RuntimeError>>,
{
    // `--help` and `--version` answer before any config is read or connection opened.
    if let Some(code) = crate::args::handle(kind) {
        return code;
    }
    let bin = format!("kitbash-{}", kind.name());
    let config = match Config::load(&ConfigSource::from_env()) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{bin}: bad config: {e}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    crate::telemetry::init(&config.telemetry);
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("{bin}: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let grace = Duration::from_millis(config.consumer.grace_ms);
    rt.block_on(async move {
        let signals = match crate::shutdown::install() {
            Ok(s) => s,
            Err(e) => {
                eprintln!("{bin}: cannot install signal handlers: {e}");
                return ExitCode::FAILURE;
            }
        };
        let shutdown = signals.shutdown.clone();
        tokio::spawn(reload_on_sighup(bin.clone(), signals.reload.clone()));
        let work = run(config, signals);
        tokio::pin!(work);
        let deadline = async {
            shutdown.cancelled().await;
            tokio::time::sleep(grace).await;
        };
        tokio::select! {
            r = &mut work => match r {
                Ok(()) => {
                    tracing::info!("stopped cleanly");
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    tracing::error!(error = %e, "stopped on error");
                    ExitCode::FAILURE
                }
            },
            _ = deadline => {
                tracing::error!(grace_ms = grace.as_millis() as u64, "grace period expired before the drain finished; exiting (unacknowledged entries will be redelivered)");
                ExitCode::FAILURE
            }
        }
    })
}
