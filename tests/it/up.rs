//! `kitbash up` starts a Redis of its own, the built daemons and a demo feed; SIGINT stops it
//! all cleanly.

use std::process::Stdio;

use kitbash_e2e::*;

fn free_port() -> u16 {
    // Redis cluster-bus ports are not needed here; any free port will do.
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
}

#[test]
fn up_runs_redis_daemons_and_feed_then_stops_cleanly_on_sigint() {
    let dir = std::env::temp_dir().join(format!("kitbash-e2e-up-{}", std::process::id()));
    let port = free_port();
    let url = format!("redis://127.0.0.1:{port}");
    let mut up = command("kitbash", &url, "")
        .args(["up", "--feed-rate", "500", "--state-dir"])
        .arg(&dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn kitbash up");
    let redis_cli = |args: &[&str]| {
        std::process::Command::new("redis-cli")
            .args(["-p", &port.to_string()])
            .args(args)
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
            .unwrap_or_default()
    };
    eventually("feynman writes physics state from the demo feed", || {
        redis_cli(&["EXISTS", "physics:state:SPY"]) == "1"
    });
    assert_eq!(
        redis_cli(&["CONFIG", "GET", "maxmemory-policy"])
            .lines()
            .last(),
        Some("noeviction")
    );
    signal(&up, "-INT");
    assert_eq!(wait_exit(&mut up).code(), Some(0));
    eventually("redis stopped with it", || redis_cli(&["PING"]) != "PONG");
    assert!(
        dir.join("redis").join("appendonlydir").exists(),
        "AOF is on"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
