//! `kitbash up` owns its children: whatever ends it — SIGINT, SIGTERM, SIGHUP, its output pipe
//! closing (with or without a signal), `kill -9` of `up` itself — the daemons and the Redis it
//! started stop too. Each test reads the pids `up` recorded in its state directory and waits
//! until none of them runs. Also: `up` against a Redis that already runs, with a state directory
//! that does not exist yet, and `kitbash status` finding that Redis through the record.

use std::path::PathBuf;
use std::process::{Child, Stdio};

use kitbash_e2e::*;
use kitbash_testkit::RedisServer;

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
}

fn state_dir(name: &str) -> PathBuf {
    std::env::temp_dir().join(format!(
        "kitbash-e2e-up-{name}-{}-{}",
        std::process::id(),
        kitbash_testkit::namespace()
    ))
}

fn redis_cli(port: u16, args: &[&str]) -> String {
    std::process::Command::new("redis-cli")
        .args(["-p", &port.to_string()])
        .args(args)
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default()
}

/// `kitbash up` on a fresh port, with its own Redis; returns it, its port and state dir.
fn start_up(name: &str, stderr: Stdio) -> (Child, u16, PathBuf) {
    let dir = state_dir(name);
    let port = free_port();
    let url = format!("redis://127.0.0.1:{port}");
    let up = command("kitbash", &url, "")
        .args(["up", "--feed-rate", "500", "--state-dir"])
        .arg(&dir)
        // The daemons inherit it: a drain that cannot reach a stopped Redis gives up sooner.
        .env("KITBASH__CONSUMER__GRACE_MS", "2000")
        .stdout(Stdio::null())
        .stderr(stderr)
        .spawn()
        .expect("spawn kitbash up");
    (up, port, dir)
}

/// The record's pids, checked to be the programs they claim to be, once feynman is at work.
fn running_children(up: &mut Child, port: u16, dir: &std::path::Path) -> Vec<(String, u32)> {
    let record = wait_up_record(dir, up);
    let pids = started_pids(&record);
    let names_now = || -> Vec<String> {
        pids.iter()
            .map(|(_, pid)| process_name(*pid).unwrap_or_default())
            .collect()
    };
    // Each daemon starts as `up`'s trampoline (`kitbash`) and execs itself a moment later: wait
    // until none is still the trampoline before checking what they are.
    eventually("every child has exec'd its program", || {
        !names_now().iter().any(|n| n == "kitbash")
    });
    let names = names_now();
    assert!(
        names.iter().any(|n| n == "redis-server"),
        "{pids:?} {names:?}"
    );
    assert!(
        names.iter().any(|n| n == "kitbash-feynman"),
        "{pids:?} {names:?}"
    );
    // Every daemon runs with the malloc setting the shipped launchers give it.
    let tunables = format!(
        "GLIBC_TUNABLES={}",
        std::env::var("GLIBC_TUNABLES")
            .unwrap_or_else(|_| kitbash_runtime::daemon::GLIBC_TUNABLES.to_owned())
    );
    for ((_, pid), name) in pids.iter().zip(&names) {
        if name.starts_with("kitbash-") {
            let env = std::fs::read(format!("/proc/{pid}/environ")).unwrap_or_default();
            assert!(
                env.split(|b| *b == 0).any(|v| v == tunables.as_bytes()),
                "{name} (pid {pid}) runs without {tunables}"
            );
        }
    }
    eventually("feynman writes physics state from the demo feed", || {
        redis_cli(port, &["EXISTS", "physics:state:SPY"]) == "1"
    });
    if names.iter().any(|n| n == "kitbash-ghost") && names.iter().any(|n| n == "kitbash-decay") {
        // Seed 000 fills in live: hats, sample grains, the demo query feed, hot queries' ghosts.
        eventually(
            "decay and ghost fill in the reflex keys from the demo query feed",
            || {
                redis_cli(port, &["GET", "hat:current"]) == "analytical"
                    && redis_cli(port, &["SCARD", "grain:index"]) == "200"
                    && redis_cli(port, &["GET", "ghost:activations"])
                        .parse::<u64>()
                        .is_ok_and(|n| n > 0)
            },
        );
    }
    pids
}

fn stops_everything_on(sig: &str, name: &str) {
    let (mut up, port, dir) = start_up(name, Stdio::null());
    let pids = running_children(&mut up, port, &dir);
    signal(&up, sig);
    assert_eq!(wait_exit(&mut up).code(), Some(0), "{sig}: clean exit");
    wait_all_gone(&pids);
    assert!(
        !dir.join("up.json").exists(),
        "the record goes with a clean stop"
    );
    assert!(
        dir.join("redis").join("appendonlydir").exists(),
        "AOF is on"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn sigint_stops_the_daemons_and_the_redis_it_started() {
    stops_everything_on("-INT", "int");
}

#[test]
fn sigterm_stops_the_daemons_and_the_redis_it_started() {
    stops_everything_on("-TERM", "term");
}

#[test]
fn sighup_stops_the_daemons_and_the_redis_it_started() {
    stops_everything_on("-HUP", "hup");
}

#[test]
fn ctrl_c_after_the_output_pipe_closed_still_stops_everything() {
    // `just up 2>&1 | tee up.log`, then Ctrl-C: tee dies first, up's writes fail with EPIPE.
    let (mut up, port, dir) = start_up("pipe-int", Stdio::piped());
    let pids = running_children(&mut up, port, &dir);
    drop(up.stderr.take());
    signal(&up, "-INT");
    assert_eq!(wait_exit(&mut up).code(), Some(0));
    wait_all_gone(&pids);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_closed_output_pipe_alone_stops_everything() {
    // `kitbash up | head`: nobody reads the output any more, so up stops (and says why to nobody).
    let (mut up, port, dir) = start_up("pipe", Stdio::piped());
    let pids = running_children(&mut up, port, &dir);
    drop(up.stderr.take());
    assert_eq!(wait_exit(&mut up).code(), Some(0));
    wait_all_gone(&pids);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn kill_9_of_up_leaves_no_process() {
    let (mut up, port, dir) = start_up("kill9", Stdio::null());
    let pids = running_children(&mut up, port, &dir);
    signal(&up, "-KILL");
    let _ = wait_exit(&mut up);
    // Nobody stops them in order now: the kernel's parent-death signal does.
    wait_all_gone(&pids);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn up_uses_a_running_redis_with_a_fresh_state_dir_and_status_finds_it() {
    let server = RedisServer::start().expect("redis");
    let port = server.port();
    // Not created yet, nested: up creates it.
    let dir = state_dir("existing").join("nested").join(".kitbash");
    let mut up = command("kitbash", &server.url(), "")
        .args(["up", "--feed-rate", "500", "--state-dir"])
        .arg(&dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn kitbash up");
    let record = wait_up_record(&dir, &mut up);
    assert!(record["redis"].is_null(), "it started no Redis: {record}");
    let pids = started_pids(&record);
    assert!(!pids.is_empty(), "{record}");
    eventually("feynman writes physics state from the demo feed", || {
        redis_cli(port, &["EXISTS", "physics:state:SPY"]) == "1"
    });
    eventually("entity applies the demo entity feed", || {
        redis_cli(port, &["GET", "quantum:status"]).contains(r#""demo":{"updates""#)
            && redis_cli(port, &["EXISTS", "entity:claude:counters"]) == "1"
    });

    // No URL, no profile: the record of the running `up` says where the fleet is.
    let out = std::process::Command::new(bin("kitbash"))
        .args(["status", "--json"])
        .env("KITBASH_CONFIG_DIR", "/nonexistent")
        .env_remove("KITBASH_PROFILE")
        .env_remove("KITBASH__REDIS__URL")
        .env_remove("KITBASH__REDIS__NAMESPACE")
        .env("KITBASH_STATE_DIR", &dir)
        .output()
        .expect("status");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let s: serde_json::Value = serde_json::from_slice(&out.stdout).expect("status JSON");
    assert_eq!(s["source"]["redis_url"], server.url().as_str(), "{s}");
    assert!(
        s["source"]["redis_from"]
            .as_str()
            .is_some_and(|f| f.contains("kitbash up")),
        "{s}"
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(&server.url()), "says which Redis: {err}");
    assert!(
        s["daemons"]
            .as_array()
            .is_some_and(|d| d.iter().any(|x| x["kind"] == "feynman")),
        "{s}"
    );
    assert!(
        s["streams"].as_array().is_some_and(|v| v
            .iter()
            .any(|x| x["stream"] == "entity:0" && x["partition"]["worker"] == "entity")),
        "entity partitions listed: {s}"
    );

    signal(&up, "-INT");
    assert_eq!(wait_exit(&mut up).code(), Some(0));
    wait_all_gone(&pids);
    assert_eq!(
        redis_cli(port, &["PING"]),
        "PONG",
        "a Redis up did not start is left running"
    );
    let _ = std::fs::remove_dir_all(state_dir("existing"));
}
