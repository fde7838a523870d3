//! Connection errors come at once for a refusal, an unknown host or a bad password, name the
//! URL and the cause, and follow `--json`; the connect timeout is only for a silent network.
//! Run outside the repository, the CLI says once that it found no configuration.

use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use kitbash_testkit::RedisServer;

fn closed_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
}

/// Runs `kitbash ARGS` against `url` and fails the test if it takes longer than `deadline`.
fn kitbash_within(args: &[&str], url: &str, extra: &[(&str, &str)], deadline: Duration) -> Output {
    let mut c = Command::new(env!("CARGO_BIN_EXE_kitbash"));
    c.args(args)
        .env("KITBASH_CONFIG_DIR", "/nonexistent")
        .env_remove("KITBASH_PROFILE")
        .env("KITBASH__REDIS__URL", url)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (k, v) in extra {
        c.env(k, v);
    }
    let mut child = c.spawn().expect("spawn kitbash");
    let start = Instant::now();
    while child.try_wait().expect("try_wait").is_none() {
        if start.elapsed() > deadline {
            let _ = child.kill();
            panic!("kitbash {args:?} against {url} did not answer within {deadline:?}");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    child.wait_with_output().expect("output")
}

fn json_error(out: &Output) -> serde_json::Value {
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "stdout is one JSON object ({e}): {}",
            String::from_utf8_lossy(&out.stdout)
        )
    });
    v["error"].clone()
}

#[test]
fn a_refused_connection_answers_at_once_naming_the_url_plain_and_json() {
    let url = format!("redis://127.0.0.1:{}", closed_port());
    let generous = Duration::from_secs(2);
    let out = kitbash_within(&["status"], &url, &[], generous);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!("cannot reach Redis at {url}: connection refused")),
        "{err}"
    );

    let out = kitbash_within(&["status", "--json"], &url, &[], generous);
    assert_eq!(out.status.code(), Some(1));
    let e = json_error(&out);
    assert_eq!(e["kind"], "redis_unreachable", "{e}");
    assert_eq!(e["url"], url.as_str(), "{e}");
    assert_eq!(e["cause"], "refused", "{e}");

    // Every command that connects says the same.
    let out = kitbash_within(&["feed", "ticks", "--count", "1"], &url, &[], generous);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("connection refused"));
}

#[test]
fn an_unknown_host_is_named_as_such() {
    let url = "redis://no-such-host.invalid:6379";
    let out = kitbash_within(&["status", "--json"], url, &[], Duration::from_secs(10));
    assert_eq!(out.status.code(), Some(1));
    let e = json_error(&out);
    assert_eq!(e["cause"], "unknown_host", "{e}");
    assert_eq!(e["url"], url, "{e}");
}

#[test]
fn a_wrong_or_missing_password_is_an_auth_error_with_the_password_redacted() {
    let server = RedisServer::builder()
        .requirepass("s3cret")
        .start()
        .expect("redis");
    let port = server.port();
    for url in [
        format!("redis://127.0.0.1:{port}"),
        format!("redis://:wrong@127.0.0.1:{port}"),
    ] {
        let out = kitbash_within(&["status", "--json"], &url, &[], Duration::from_secs(10));
        assert_eq!(out.status.code(), Some(1), "{url}");
        let e = json_error(&out);
        assert_eq!(e["cause"], "auth", "{url}: {e}");
        assert!(!e.to_string().contains("wrong"), "password redacted: {e}");
    }
    let ok = kitbash_within(
        &["status", "--json"],
        &format!("redis://:s3cret@127.0.0.1:{port}"),
        &[],
        Duration::from_secs(10),
    );
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
}

#[test]
fn a_server_that_accepts_and_never_answers_is_a_timeout() {
    // A listener that never accepts: the kernel completes the handshake, nothing answers.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let url = format!(
        "redis://127.0.0.1:{}",
        silent.local_addr().expect("addr").port()
    );
    let out = kitbash_within(
        &["status", "--json"],
        &url,
        &[("KITBASH__REDIS__CONNECT_TIMEOUT_MS", "300")],
        Duration::from_secs(10),
    );
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(json_error(&out)["cause"], "timeout");
}

#[test]
fn a_bad_config_with_json_is_a_json_error_too() {
    let out = kitbash_within(
        &["status", "--json"],
        "redis://127.0.0.1:1",
        &[("KITBASH__CONSUMER__BATCH", "lots")],
        Duration::from_secs(10),
    );
    assert_eq!(out.status.code(), Some(64));
    let e = json_error(&out);
    assert_eq!(e["kind"], "config", "{e}");
    assert!(
        e["message"]
            .as_str()
            .is_some_and(|m| m.contains("consumer.batch")),
        "{e}"
    );
}

#[test]
fn outside_the_repository_it_says_once_that_no_configuration_was_found() {
    let url = format!("redis://127.0.0.1:{}", closed_port());
    let out = kitbash_within(&["status"], &url, &[], Duration::from_secs(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        err.matches("no configuration found").count(),
        1,
        "said once: {err}"
    );
    assert!(err.contains("/nonexistent/default.toml"), "{err}");
}
