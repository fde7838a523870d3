//! Shared helpers for the end-to-end tests in `it/`: finding the built binaries, running the
//! CLI, waiting on Redis state.

use std::path::PathBuf;
use std::process::{Child, Command, Output};
use std::time::{Duration, Instant};

/// The directory holding the workspace's binaries (`target/debug` next to this test binary).
pub fn bin_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("current exe");
    // target/debug/deps/it-… → target/debug
    exe.parent()
        .and_then(|d| d.parent())
        .expect("target dir")
        .to_path_buf()
}

/// A built binary of the workspace; panics with the fix when it is missing.
pub fn bin(name: &str) -> PathBuf {
    let p = bin_dir().join(name);
    assert!(
        p.exists(),
        "{} is not built: run `cargo build --workspace --bins` first (`just test` does)",
        p.display()
    );
    p
}

/// A command for `name` with a clean kitbash environment pointing at `url`/`ns`.
pub fn command(name: &str, url: &str, ns: &str) -> Command {
    let mut c = Command::new(bin(name));
    c.env("KITBASH_CONFIG_DIR", "/nonexistent")
        .env_remove("KITBASH_PROFILE")
        .env("KITBASH__REDIS__URL", url)
        .env("KITBASH__REDIS__NAMESPACE", ns)
        .env("KITBASH__FLEET__HEARTBEAT_MS", "200")
        .env("KITBASH__CONSUMER__BLOCK_MS", "100")
        .env("KITBASH__FEYNMAN__LEASE_MS", "600");
    c
}

/// Runs the CLI to completion.
pub fn kitbash(args: &[&str], url: &str, ns: &str) -> Output {
    command("kitbash", url, ns)
        .args(args)
        .output()
        .expect("run kitbash")
}

/// Sends a signal with `kill(1)`.
pub fn signal(child: &Child, sig: &str) {
    let ok = Command::new("kill")
        .args([sig, &child.id().to_string()])
        .status()
        .expect("kill");
    assert!(ok.success(), "kill {sig} failed");
}

/// Waits for a child to exit (30 s deadline).
pub fn wait_exit(child: &mut Child) -> std::process::ExitStatus {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(s) = child.try_wait().expect("try_wait") {
            return s;
        }
        assert!(
            Instant::now() < deadline,
            "process {} did not exit",
            child.id()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Polls `cond` until it holds (30 s deadline).
pub fn eventually(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for: {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Whether process `pid` runs (exists and is not a zombie waiting to be reaped).
pub fn process_alive(pid: u32) -> bool {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return false;
    };
    let state = stat
        .rsplit_once(')')
        .and_then(|(_, tail)| tail.trim_start().chars().next())
        .unwrap_or('X');
    !matches!(state, 'Z' | 'X' | 'x')
}

/// The command name of process `pid` (`kitbash-feynman`, `redis-server`), if it runs.
pub fn process_name(pid: u32) -> Option<String> {
    std::fs::read_to_string(format!("/proc/{pid}/comm"))
        .ok()
        .map(|s| s.trim().to_owned())
}

/// The record `kitbash up` keeps in its state directory, once it says `running`.
pub fn wait_up_record(dir: &std::path::Path, up: &mut Child) -> serde_json::Value {
    let mut record = serde_json::Value::Null;
    eventually("kitbash up records its children in up.json", || {
        if let Ok(Some(s)) = up.try_wait() {
            panic!("kitbash up exited early: {s}");
        }
        record = std::fs::read_to_string(dir.join("up.json"))
            .ok()
            .and_then(|t| serde_json::from_str(&t).ok())
            .unwrap_or(serde_json::Value::Null);
        record["state"] == "running"
    });
    record
}

/// The pids of everything a `kitbash up` record says it started (Redis, if it did, and daemons).
pub fn started_pids(record: &serde_json::Value) -> Vec<(String, u32)> {
    let mut out = Vec::new();
    let mut push = |v: &serde_json::Value| {
        if let (Some(name), Some(pid)) = (v["name"].as_str(), v["pid"].as_u64()) {
            out.push((name.to_owned(), pid as u32));
        }
    };
    if !record["redis"].is_null() {
        push(&record["redis"]);
    }
    for d in record["daemons"].as_array().into_iter().flatten() {
        push(d);
    }
    out
}

/// Waits (30 s deadline) until none of `pids` runs.
pub fn wait_all_gone(pids: &[(String, u32)]) {
    eventually("every process kitbash up started is gone", || {
        pids.iter().all(|(_, pid)| !process_alive(*pid))
    });
}
