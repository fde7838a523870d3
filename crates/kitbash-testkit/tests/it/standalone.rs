//! A single server: start, ports, options, commands, start errors and cleanup on drop.

use std::net::{Ipv4Addr, TcpListener};
use std::path::Path;
use std::thread;

use kitbash_testkit::{RedisServer, TestkitError, namespace, redis_version};

use crate::{TestResult, raw_ping};

#[test]
fn a_started_server_answers_ping_over_raw_tcp() -> TestResult {
    let server = RedisServer::start()?;
    assert_eq!(raw_ping(server.port())?, "+PONG\r\n");
    assert_eq!(server.url(), format!("redis://127.0.0.1:{}", server.port()));
    assert!(server.dir().is_dir());
    assert!(
        server
            .dir()
            .file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.starts_with("kitbash-testkit-"))
    );
    Ok(())
}

#[test]
fn servers_started_in_parallel_get_distinct_ports() -> TestResult {
    let servers = thread::scope(|s| {
        let handles: Vec<_> = (0..4).map(|_| s.spawn(RedisServer::start)).collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("start thread panicked"))
            .collect::<Result<Vec<_>, _>>()
    })?;
    let mut ports: Vec<u16> = servers.iter().map(RedisServer::port).collect();
    ports.sort_unstable();
    ports.dedup();
    assert_eq!(ports.len(), servers.len(), "ports collided: {ports:?}");
    for server in &servers {
        assert_eq!(raw_ping(server.port())?, "+PONG\r\n");
    }
    Ok(())
}

#[test]
fn cmd_returns_raw_output_and_fails_on_error_replies() -> TestResult {
    let server = RedisServer::start()?;
    let ns = namespace();
    let key = format!("{ns}:greeting");
    assert_eq!(server.cmd(&["SET", &key, "hello world"])?, "OK");
    assert_eq!(server.cmd(&["GET", &key])?, "hello world");
    assert_eq!(server.cmd(&["RPUSH", &format!("{ns}:l"), "a", "b"])?, "2");
    assert_eq!(
        server.cmd(&["LRANGE", &format!("{ns}:l"), "0", "-1"])?,
        "a\nb"
    );
    let err = server
        .cmd(&["INCR", &key])
        .expect_err("INCR of a non-integer must fail");
    assert!(
        matches!(&err, TestkitError::CommandFailed { output, .. } if output.contains("not an integer")),
        "{err}"
    );
    Ok(())
}

#[test]
fn flushall_empties_the_server() -> TestResult {
    let server = RedisServer::start()?;
    server.cmd(&["SET", "a", "1"])?;
    assert_eq!(server.cmd(&["DBSIZE"])?, "1");
    server.flushall()?;
    assert_eq!(server.cmd(&["DBSIZE"])?, "0");
    Ok(())
}

#[test]
fn requirepass_is_enforced_and_carried_by_url_cmd_and_connect() -> TestResult {
    let server = RedisServer::builder().requirepass("s3cret:pw").start()?;
    assert_eq!(
        server.url(),
        format!("redis://:s3cret%3Apw@127.0.0.1:{}", server.port())
    );
    assert!(raw_ping(server.port())?.starts_with("-NOAUTH"));
    assert_eq!(server.cmd(&["PING"])?, "PONG");
    let reply = server.connect()?.command(&["PING"])?;
    assert_eq!(reply.as_text().as_deref(), Some("PONG"));
    Ok(())
}

#[test]
fn extra_config_pairs_reach_the_server() -> TestResult {
    let server = RedisServer::builder()
        .config("maxmemory", "10mb")
        .config("--maxmemory-policy", "noeviction")
        .start()?;
    assert_eq!(
        server.cmd(&["CONFIG", "GET", "maxmemory"])?,
        "maxmemory\n10485760"
    );
    assert_eq!(
        server.cmd(&["CONFIG", "GET", "maxmemory-policy"])?,
        "maxmemory-policy\nnoeviction"
    );
    assert_eq!(server.cmd(&["CONFIG", "GET", "save"])?, "save\n");
    assert_eq!(
        server.cmd(&["CONFIG", "GET", "appendonly"])?,
        "appendonly\nno"
    );
    Ok(())
}

#[test]
fn a_server_that_cannot_start_returns_the_tail_of_its_log() {
    let err = RedisServer::builder()
        .config("no-such-directive", "1")
        .start()
        .expect_err("an unknown directive must stop redis");
    match &err {
        TestkitError::StartFailed { log_tail, .. } => {
            assert!(log_tail.contains("no-such-directive"), "{err}");
        }
        other => panic!("expected StartFailed, got {other}"),
    }
}

#[test]
fn a_taken_fixed_port_is_a_start_error_naming_the_cause() -> TestResult {
    let squatter = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?;
    let port = squatter.local_addr()?.port();
    let err = RedisServer::builder()
        .port(port)
        .start()
        .expect_err("the port is taken");
    assert!(err.to_string().contains("Address already in use"), "{err}");
    Ok(())
}

#[test]
fn drop_kills_the_process_and_removes_the_dir() -> TestResult {
    let server = RedisServer::start()?;
    let pid = server.pid().expect("a started server has a pid");
    let dir = server.dir().to_path_buf();
    assert!(Path::new(&format!("/proc/{pid}")).exists());
    drop(server);
    assert!(
        !Path::new(&format!("/proc/{pid}")).exists(),
        "pid {pid} still exists"
    );
    assert!(!dir.exists(), "{} still exists", dir.display());
    Ok(())
}

#[test]
fn drop_after_a_panic_still_cleans_up() -> TestResult {
    let (pid, dir) = thread::spawn(|| {
        let server = RedisServer::start().expect("server starts");
        let seen = (server.pid().expect("running"), server.dir().to_path_buf());
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || {
            let _server = server;
            panic!("deliberate panic: Drop must still clean up");
        }));
        assert!(result.is_err());
        seen
    })
    .join()
    .expect("thread");
    assert!(!Path::new(&format!("/proc/{pid}")).exists());
    assert!(!dir.exists());
    Ok(())
}

#[test]
fn redis_version_reads_the_installed_server() -> TestResult {
    let version = redis_version()?;
    assert!(version.major >= 6, "{version}");
    let server = RedisServer::start()?;
    let info = server.cmd(&["INFO", "server"])?;
    assert!(
        info.contains(&format!("redis_version:{version}")),
        "{version} not in {info}"
    );
    Ok(())
}
