//! The real `kitbash-feynman` binary: SIGTERM drains and exits 0; kill -9 loses nothing.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use fred::prelude::*;
use kitbash_client::Producer;
use kitbash_testkit::support::eventually;
use kitbash_testkit::{KillOnDrop, RedisServer};

use crate::support::*;

fn spawn(url: &str, ns: &str) -> KillOnDrop {
    spawn_with(url, ns, "")
}

fn spawn_with(url: &str, ns: &str, admin: &str) -> KillOnDrop {
    Command::new(env!("CARGO_BIN_EXE_kitbash-feynman"))
        .env("KITBASH_CONFIG_DIR", "/nonexistent")
        .env("KITBASH__REDIS__URL", url)
        .env("KITBASH__REDIS__NAMESPACE", ns)
        .env("KITBASH__ADMIN__LISTEN", admin)
        .env("KITBASH__FLEET__HEARTBEAT_MS", "200")
        .env("KITBASH__CONSUMER__BLOCK_MS", "100")
        .env("KITBASH__FEYNMAN__PARTITIONS", PARTITIONS.to_string())
        .env("KITBASH__FEYNMAN__WINDOW", WINDOW.to_string())
        .env("KITBASH__FEYNMAN__LEASE_MS", "600")
        .env("KITBASH__FEYNMAN__SNAPSHOT_MS", "200")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn kitbash-feynman")
        .into()
}

fn signal(child: &Child, sig: &str) {
    let ok = Command::new("kill")
        .args([sig, &child.id().to_string()])
        .status()
        .expect("kill");
    assert!(ok.success());
}

fn wait_exit(child: &mut Child) -> std::process::ExitStatus {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(s) = child.try_wait().expect("wait") {
            return s;
        }
        assert!(std::time::Instant::now() < deadline, "daemon did not exit");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_and_exits_zero_and_kill_9_loses_nothing() {
    let server = RedisServer::start().expect("redis");
    let ns = kitbash_testkit::namespace();
    let keys = keys(&ns);
    let c = client(&server.url()).await;
    let producer = Producer::new(c.clone(), keys.clone(), PARTITIONS);
    let input = ticks(&["SPY", "QQQ", "IWM", "DIA"], 2000, 5);
    let (a, b) = input.split_at(input.len() / 2);

    let mut first = spawn(&server.url(), &ns);
    let mut second = spawn(&server.url(), &ns);
    publish(&producer, a).await;
    // kill -9 one binary once it has committed work (its pid is in its instance name, which
    // the partition checkpoints record as owner); SIGTERM the other mid-stream. Whichever
    // committed first is killed: waiting for a chosen one flaked when the other had taken
    // every partition before it.
    let committed = wait_committed_by_any(&c, &keys, &[first.id(), second.id()]).await;
    if committed != first.id() {
        std::mem::swap(&mut first, &mut second);
    }
    signal(&first, "-KILL");
    wait_exit(&mut first);
    let mut third = spawn(&server.url(), &ns);
    publish(&producer, b).await;
    signal(&second, "-TERM");
    let status = wait_exit(&mut second);
    assert_eq!(status.code(), Some(0), "SIGTERM exits 0 after draining");
    caught_up(&c, &keys).await;
    signal(&third, "-TERM");
    assert_eq!(wait_exit(&mut third).code(), Some(0));

    let reference = reference(&input);
    let counts = checkpointed(&c, &keys).await;
    for (symbol, (n, vector)) in &reference {
        assert_eq!(
            counts.get(symbol),
            Some(n),
            "{symbol}: exact count across kill -9 and SIGTERM"
        );
        assert_eq!(
            physics_state(&c, &keys, symbol).await.as_ref(),
            Some(vector),
            "{symbol}"
        );
    }
}

/// Waits until some partition checkpoint was last committed by one of `pids`; returns which.
async fn wait_committed_by_any(c: &Client, keys: &kitbash_schema::Keys, pids: &[u32]) -> u32 {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        for &pid in pids {
            if !committed_by(c, keys, pid).await.is_empty() {
                return pid;
            }
        }
        assert!(
            std::time::Instant::now() < deadline,
            "none of {pids:?} committed"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Waits until some partition checkpoint was last committed by the process `pid`.
async fn wait_committed_by(c: &Client, keys: &kitbash_schema::Keys, pid: u32) {
    wait_committed_by_any(c, keys, &[pid]).await;
}

/// The partitions whose checkpoint was last committed by the process `pid` (its pid is in its
/// instance name, which the checkpoint records as owner).
async fn committed_by(
    c: &Client,
    keys: &kitbash_schema::Keys,
    pid: u32,
) -> std::collections::BTreeSet<u32> {
    let marker = format!("-{pid}-");
    let mut out = std::collections::BTreeSet::new();
    for p in 0..PARTITIONS {
        let owner: Option<String> = c
            .hget(
                keys.partition_checkpoint(p),
                kitbash_schema::Keys::CHECKPOINT_OWNER,
            )
            .await
            .expect("hget");
        if owner.is_some_and(|o| o.contains(&marker)) {
            out.insert(p);
        }
    }
    out
}

/// Waits until the process `pid` holds the lease of every partition.
async fn wait_leases_held_by(c: &Client, keys: &kitbash_schema::Keys, pid: u32) {
    let marker = format!("-{pid}-");
    eventually("the owner holds every partition's lease", || async {
        for p in 0..PARTITIONS {
            let holder: Option<String> = c
                .get(keys.lease(kitbash_schema::StreamName::Ticks(p)))
                .await
                .expect("get");
            if !holder.is_some_and(|h| h.contains(&marker)) {
                return false;
            }
        }
        true
    })
    .await;
}

/// The admin address of the process `pid`, from its heartbeat.
async fn admin_of(c: &Client, keys: &kitbash_schema::Keys, pid: u32) -> std::net::SocketAddr {
    let members: Vec<String> = c
        .zrange(keys.fleet(), 0, -1, None, false, None, false)
        .await
        .expect("zrange");
    let marker = format!("-{pid}-");
    let member = members
        .into_iter()
        .find(|m| m.contains(&marker))
        .expect("in the fleet");
    let instance = member
        .split_once('/')
        .map(|(_, i)| i.to_owned())
        .expect("kind/instance");
    let body: String = c
        .get(keys.heartbeat(kitbash_schema::DaemonKind::Feynman, &instance))
        .await
        .expect("heartbeat");
    let beat: serde_json::Value = serde_json::from_str(&body).expect("json");
    beat["admin"]
        .as_str()
        .expect("admin address")
        .parse()
        .expect("addr")
}

fn metric(addr: std::net::SocketAddr, name: &str) -> f64 {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).expect("connect");
    write!(
        s,
        "GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .expect("write");
    let mut out = String::new();
    s.read_to_string(&mut out).expect("read");
    out.lines()
        .filter(|l| l.starts_with(name))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// The scenario the fence exists for: an owner is paused (SIGSTOP) past its lease, another
/// instance takes its partitions and commits, then the first wakes up mid-batch. Its commits
/// are refused (the fenced counter moves) and every tick is still applied exactly once.
///
/// The pause must outlast the leases: the owner holds every partition before it is stopped,
/// and it is woken only once the other instance has committed on every partition the owner
/// had committed on. (Waiting for "the other committed anywhere" let it commit on a partition
/// the owner had not taken yet and woke the owner with its leases intact: nothing to fence.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_owner_whose_lease_expired_is_fenced_and_nothing_is_applied_twice() {
    let server = RedisServer::start().expect("redis");
    let ns = kitbash_testkit::namespace();
    let keys = keys(&ns);
    let c = client(&server.url()).await;
    let producer = Producer::new(c.clone(), keys.clone(), PARTITIONS);
    let input = ticks(&["SPY", "QQQ", "IWM", "DIA", "TLT", "GLD"], 1500, 9);
    let (before, during) = input.split_at(input.len() / 3);

    let mut paused = spawn_with(&server.url(), &ns, "127.0.0.1:0");
    publish(&producer, before).await;
    wait_committed_by(&c, &keys, paused.id()).await;
    wait_leases_held_by(&c, &keys, paused.id()).await;
    let owned = committed_by(&c, &keys, paused.id()).await;
    assert!(!owned.is_empty());
    let admin = admin_of(&c, &keys, paused.id()).await;
    // Ticks keep arriving while the owner is frozen.
    let feeding = {
        let (producer, during) = (producer.clone(), during.to_vec());
        tokio::spawn(async move {
            for chunk in during.chunks(60) {
                publish(&producer, chunk).await;
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
    };
    signal(&paused, "-STOP");
    let mut other = spawn(&server.url(), &ns);
    let other_pid = other.id();
    eventually(
        "the other instance committed on every partition the owner had",
        || async { owned.is_subset(&committed_by(&c, &keys, other_pid).await) },
    )
    .await;
    signal(&paused, "-CONT");
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while metric(admin, "kitbash_partition_fenced_total") < 1.0 {
        assert!(
            std::time::Instant::now() < deadline,
            "the resumed owner was never fenced"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    feeding.await.expect("feed");
    caught_up(&c, &keys).await;
    signal(&paused, "-TERM");
    signal(&other, "-TERM");
    assert_eq!(wait_exit(&mut paused).code(), Some(0));
    assert_eq!(wait_exit(&mut other).code(), Some(0));
    let reference = reference(&input);
    let counts = checkpointed(&c, &keys).await;
    for (symbol, (n, vector)) in &reference {
        assert_eq!(counts.get(symbol), Some(n), "{symbol}: exactly once");
        assert_eq!(
            physics_state(&c, &keys, symbol).await.as_ref(),
            Some(vector),
            "{symbol}"
        );
    }
}

#[test]
fn a_bad_config_exits_64_naming_the_key() {
    let out = Command::new(env!("CARGO_BIN_EXE_kitbash-feynman"))
        .env("KITBASH_CONFIG_DIR", "/nonexistent")
        .env("KITBASH__FEYNMAN__PARTITIONS", "0")
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(64));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("feynman.partitions"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reloads_the_log_level_and_refuses_a_bad_config() {
    let server = RedisServer::start().expect("redis");
    let dir = tempfile_dir();
    let cfg = dir.join("default.toml");
    std::fs::write(
        &cfg,
        format!(
            "[redis]\nurl = \"{}\"\n[telemetry]\nlevel = \"info\"\n[admin]\nlisten = \"\"\n",
            server.url()
        ),
    )
    .expect("write");
    let log = dir.join("stderr.log");
    let mut child = Command::new(env!("CARGO_BIN_EXE_kitbash-feynman"))
        .env("KITBASH_CONFIG_DIR", &dir)
        .env_remove("KITBASH_PROFILE")
        .env_remove("RUST_LOG")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).expect("log"))
        .spawn()
        .expect("spawn");
    let read = || std::fs::read_to_string(&log).unwrap_or_default();
    let wait_for = |what: &str| {
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        while !read().contains(what) {
            assert!(
                std::time::Instant::now() < deadline,
                "log never said {what:?}:\n{}",
                read()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    };
    wait_for("partition lease acquired");
    std::fs::write(
        &cfg,
        format!(
            "[redis]\nurl = \"{}\"\n[telemetry]\nlevel = \"debug\"\n[admin]\nlisten = \"\"\n",
            server.url()
        ),
    )
    .expect("write");
    signal(&child, "-HUP");
    wait_for("configuration reloaded");
    wait_for("debug logging on"); // logged at debug only
    std::fs::write(&cfg, "[consumer]\nbatch = \"lots\"\n").expect("write");
    signal(&child, "-HUP");
    wait_for("reload refused, bad config: key `consumer.batch`");
    signal(&child, "-TERM");
    assert_eq!(
        wait_exit(&mut child).code(),
        Some(0),
        "still running on the old config, then drains"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

fn tempfile_dir() -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!(
        "kitbash-feynman-hup-{}-{}",
        std::process::id(),
        kitbash_testkit::namespace()
    ));
    std::fs::create_dir_all(&d).expect("mkdir");
    d
}
