//! Every binary answers `--help` and `--version` without a Redis; a daemon's help lists its
//! section and environment; a daemon that cannot reach Redis says so, naming the URL and the
//! cause, while it keeps retrying.

use std::io::BufRead as _;
use std::process::Stdio;
use std::time::{Duration, Instant};

use kitbash_e2e::*;

/// A local port nobody listens on.
fn closed_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
}

fn binaries() -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(bin_dir())
        .expect("target dir")
        .flatten()
        .filter_map(|e| e.file_name().into_string().ok())
        .filter(|n| (n == "kitbash" || n.starts_with("kitbash-")) && !n.contains('.'))
        .filter(|n| !n.starts_with("kitbash-e2e") && !n.starts_with("kitbash_"))
        .filter(|n| {
            use std::os::unix::fs::PermissionsExt as _;
            std::fs::metadata(bin_dir().join(n))
                .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
        .collect();
    names.sort();
    assert!(
        names.iter().any(|n| n == "kitbash") && names.iter().any(|n| n == "kitbash-feynman"),
        "binaries built: {names:?}"
    );
    names
}

#[test]
fn every_binary_answers_help_and_version_without_redis() {
    let url = format!("redis://127.0.0.1:{}", closed_port());
    for name in binaries() {
        for flag in ["--help", "--version"] {
            let mut child = command(&name, &url, "")
                .arg(flag)
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .expect("spawn");
            // Generous: a binary that connects first retries forever, and this deadline ends it.
            let deadline = Instant::now() + Duration::from_secs(10);
            while child.try_wait().expect("try_wait").is_none() {
                if Instant::now() > deadline {
                    let _ = child.kill();
                    panic!("{name} {flag} did not return (it tried to run)");
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let out = child.wait_with_output().expect("output");
            assert_eq!(out.status.code(), Some(0), "{name} {flag}");
            let text = String::from_utf8_lossy(&out.stdout);
            if flag == "--version" {
                assert!(text.starts_with(&name), "{name} {flag}: {text}");
            } else if let Some(kind) = name.strip_prefix("kitbash-") {
                assert!(text.contains(&format!("[{kind}]")), "{name} help: {text}");
                assert!(text.contains("KITBASH__REDIS__"), "{name} help: {text}");
                assert!(text.contains("KITBASH_CONFIG_DIR"), "{name} help: {text}");
            } else {
                assert!(text.contains("status"), "{name} help: {text}");
            }
        }
    }
}

#[test]
fn a_daemon_says_which_url_it_cannot_reach_and_why() {
    let url = format!("redis://127.0.0.1:{}", closed_port());
    let mut child = command("kitbash-feynman", &url, "")
        .env("KITBASH__TELEMETRY__FORMAT", "json")
        .env("KITBASH__CONSUMER__GRACE_MS", "1000")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn feynman");
    let stderr = child.stderr.take().expect("stderr");
    let (tx, rx) = std::sync::mpsc::channel();
    let u = url.clone();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
        {
            if line.contains(&u) && line.contains("connection refused") {
                let _ = tx.send(line);
                return;
            }
        }
    });
    let line = rx.recv_timeout(Duration::from_secs(10));
    signal(&child, "-TERM");
    let _ = wait_exit(&mut child);
    let line = line.expect("a log line naming the URL and `connection refused`");
    assert!(line.contains("\"cause\":\"refused\""), "{line}");
}
