//! `kitbash up`: the whole system on one machine — a Redis it starts itself (data under
//! `.kitbash/redis`, AOF on, `noeviction`), every daemon binary that is built, a demo market
//! feed, and a live status view refreshed every two seconds. Ctrl-C stops everything in order:
//! feed, daemons (SIGTERM, they drain), then Redis.

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use fred::prelude::*;
use kitbash_client::Producer;
use kitbash_runtime::Config;
use kitbash_schema::DaemonKind;

/// Options of `kitbash up`.
#[derive(Clone, Debug)]
pub struct UpOptions {
    /// Ticks per second of the demo feed (0 = no feed).
    pub feed_rate: f64,
    /// Where Redis keeps its data and logs.
    pub state_dir: PathBuf,
}

fn host_port(url: &str) -> (String, u16) {
    let rest = url.split("://").nth(1).unwrap_or(url);
    let rest = rest
        .rsplit('@')
        .next()
        .unwrap_or(rest)
        .split('/')
        .next()
        .unwrap_or(rest);
    match rest.rsplit_once(':') {
        Some((h, p)) => (h.to_owned(), p.parse().unwrap_or(6379)),
        None => (rest.to_owned(), 6379),
    }
}

fn ping(host: &str, port: u16) -> bool {
    use std::io::{Read, Write};
    let Ok(addr) = format!("{host}:{port}").parse::<std::net::SocketAddr>() else {
        return false;
    };
    let Ok(mut s) = std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(300)) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_millis(500)));
    let mut buf = [0u8; 16];
    s.write_all(b"PING\r\n").is_ok()
        && s.read(&mut buf)
            .map(|n| buf[..n].starts_with(b"+PONG"))
            .unwrap_or(false)
}

fn start_redis(host: &str, port: u16, dir: &Path) -> anyhow::Result<Option<Child>> {
    if ping(host, port) {
        eprintln!("up: Redis already answers on {host}:{port}; using it");
        return Ok(None);
    }
    anyhow::ensure!(
        host == "127.0.0.1" || host == "localhost",
        "Redis at {host}:{port} does not answer and is not local; start it or fix [redis] url"
    );
    std::fs::create_dir_all(dir)?;
    let bin = kitbash_testkit::find_redis_server()?;
    let log = std::fs::File::create(dir.join("redis.log"))?;
    let child = Command::new(bin)
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
        .stdout(log.try_clone()?)
        .stderr(log)
        // Own process group: a terminal's Ctrl-C reaches only `kitbash up`, which then stops
        // the children in order (a second signal would make a daemon skip its drain).
        .process_group(0)
        .spawn()?;
    for _ in 0..100 {
        if ping(host, port) {
            eprintln!(
                "up: started redis-server on {host}:{port} (data in {})",
                dir.display()
            );
            return Ok(Some(child));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    anyhow::bail!(
        "redis-server did not answer on port {port}; see {}",
        dir.join("redis.log").display()
    )
}

fn daemon_binary(kind: DaemonKind) -> Option<PathBuf> {
    let exe = std::env::current_exe().ok()?;
    let p = exe.parent()?.join(format!("kitbash-{}", kind.name()));
    p.exists().then_some(p)
}

fn terminate(child: &mut Child, name: &str) {
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    for _ in 0..300 {
        if let Ok(Some(status)) = child.try_wait() {
            eprintln!("up: {name} exited ({status})");
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    eprintln!("up: {name} did not stop in 15 s; killing it");
    let _ = child.kill();
}

/// Runs until Ctrl-C.
pub async fn run(config: Config, opts: UpOptions) -> anyhow::Result<()> {
    let (host, port) = host_port(&config.redis.url);
    let mut redis = start_redis(&host, port, &opts.state_dir.join("redis"))?;
    let mut daemons: Vec<(String, Child)> = Vec::new();
    for kind in DaemonKind::ALL {
        match daemon_binary(kind) {
            Some(bin) => {
                let log =
                    std::fs::File::create(opts.state_dir.join(format!("{}.log", kind.name())))?;
                let child = Command::new(&bin)
                    .stdout(Stdio::null())
                    .stderr(log)
                    .process_group(0)
                    .spawn()?;
                eprintln!(
                    "up: started {} (pid {}, log .kitbash/{}.log)",
                    bin.display(),
                    child.id(),
                    kind.name()
                );
                daemons.push((kind.name().to_owned(), child));
            }
            None => eprintln!("up: kitbash-{} is not built yet; skipping", kind.name()),
        }
    }
    let client =
        kitbash_runtime::redis::connect_client(&config.redis, Duration::from_secs(10)).await?;
    let keys = config.redis.keys();
    let stop = kitbash_runtime::CancellationToken::new();
    let feed = if opts.feed_rate > 0.0 {
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
        let token = stop.clone();
        eprintln!("up: demo market feed at {} ticks/s", opts.feed_rate);
        Some(tokio::spawn(async move {
            crate::feed::ticks(&producer, &fo, token).await
        }))
    } else {
        None
    };
    eprintln!(
        "up: running; Ctrl-C stops everything. The web dashboard comes with the bridge daemon; meanwhile, live status:"
    );
    let mut tick = tokio::time::interval(Duration::from_secs(2));
    loop {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => break,
            _ = tick.tick() => {
                match crate::status::collect(&client, &keys, config.feynman.partitions, config.fleet.heartbeat_ms).await {
                    Ok(s) => {
                        let mut view = crate::status::render(&s);
                        for sym in ["SPY", "BTC-USD"] {
                            let key = keys.physics_state(sym);
                            let v: Option<String> = client.get(&key).await.unwrap_or(None);
                            if let Some(v) = v {
                                view.push_str(&format!("{key} {v}\n"));
                            }
                        }
                        eprint!("\x1b[2J\x1b[H{view}");
                    }
                    Err(e) => eprintln!("up: status failed: {e}"),
                }
            }
        }
    }
    eprintln!("\nup: stopping");
    stop.cancel();
    if let Some(f) = feed {
        let _ = f.await;
    }
    for (name, child) in daemons.iter_mut() {
        terminate(child, name);
    }
    let _ = client.quit().await;
    if let Some(r) = redis.as_mut() {
        terminate(r, "redis-server");
    }
    Ok(())
}
