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
