//! Fault injection: kill, stop, restart, pause/resume and dropped client connections.

use std::io::ErrorKind;
use std::net::TcpStream;
use std::time::Duration;

use kitbash_testkit::{Appendfsync, RedisServer, RespConnection, RespValue};

use crate::{TestResult, raw_ping};

#[test]
fn kill_refuses_connections_and_restart_answers_on_the_same_port() -> TestResult {
    let mut server = RedisServer::start()?;
    let port = server.port();
    server.cmd(&["SET", "k", "v"])?;
    let old_pid = server.pid().expect("running");

    server.kill()?;
    assert_eq!(server.pid(), None);
    assert!(!server.is_running());
    let refused = TcpStream::connect(("127.0.0.1", port)).expect_err("nothing listens");
    assert_eq!(refused.kind(), ErrorKind::ConnectionRefused);

    server.restart()?;
    assert_eq!(server.port(), port);
    assert_ne!(server.pid(), Some(old_pid));
    assert_eq!(raw_ping(port)?, "+PONG\r\n");
    // No persistence by default: a crash loses everything.
    assert_eq!(server.cmd(&["EXISTS", "k"])?, "0");
    Ok(())
}

#[test]
fn with_appendfsync_always_an_acknowledged_write_survives_kill() -> TestResult {
    let mut server = RedisServer::builder()
        .appendonly(Appendfsync::Always)
        .start()?;
    assert_eq!(server.cmd(&["SET", "durable", "yes"])?, "OK");
    server.kill()?;
    server.restart()?;
    assert_eq!(server.cmd(&["GET", "durable"])?, "yes");
    Ok(())
}

#[test]
fn stop_is_graceful_and_restart_brings_it_back() -> TestResult {
    let mut server = RedisServer::builder()
        .appendonly(Appendfsync::Everysec)
        .start()?;
    server.cmd(&["SET", "k", "kept"])?;
    server.stop()?;
    assert!(!server.is_running());
    // A graceful shutdown flushes the AOF, whatever the fsync policy.
    server.restart()?;
    assert_eq!(server.cmd(&["GET", "k"])?, "kept");
    let log = std::fs::read_to_string(server.log_path())?;
    assert!(log.contains("Received SIGTERM"), "{log}");
    // restart() of a running server stops it first.
    let pid = server.pid();
    server.restart()?;
    assert_ne!(server.pid(), pid);
    assert_eq!(server.cmd(&["GET", "k"])?, "kept");
    Ok(())
}

#[test]
fn pause_makes_ping_time_out_and_resume_makes_it_answer() -> TestResult {
    let mut server = RedisServer::start()?;
    server.pause()?;
    // The kernel still completes the handshake; the stopped process never replies.
    let mut conn = RespConnection::connect(server.port(), Duration::from_millis(300))?;
    let err = conn
        .command(&["PING"])
        .expect_err("a paused server cannot answer");
    assert!(
        matches!(
            err.io_kind(),
            Some(ErrorKind::WouldBlock | ErrorKind::TimedOut)
        ),
        "{err}"
    );
    server.resume()?;
    let mut conn = RespConnection::connect(server.port(), Duration::from_secs(5))?;
    assert_eq!(conn.command(&["PING"])?, RespValue::Simple("PONG".into()));
    Ok(())
}

#[test]
fn a_paused_server_can_be_killed_stopped_and_dropped() -> TestResult {
    let mut server = RedisServer::start()?;
    server.pause()?;
    server.stop()?;
    server.restart()?;
    server.pause()?;
    server.kill()?;
    server.restart()?;
    assert_eq!(raw_ping(server.port())?, "+PONG\r\n");
    server.pause()?;
    let pid = server.pid().expect("running");
    drop(server);
    assert!(!std::path::Path::new(&format!("/proc/{pid}")).exists());
    Ok(())
}

#[test]
fn drop_clients_closes_normal_and_pubsub_connections() -> TestResult {
    let server = RedisServer::start()?;
    let mut normal = server.connect()?;
    assert_eq!(normal.command(&["PING"])?, RespValue::Simple("PONG".into()));
    let mut subscriber = server.connect()?;
    subscriber.send(&["SUBSCRIBE", "news"])?;
    assert!(matches!(subscriber.read_reply()?, RespValue::Array(_)));

    // At least our two; a parallel test process probing a port it hoped was free may add one.
    let closed = server.drop_clients()?;
    assert!(closed >= 2, "closed {closed}");

    let closed_kinds = [
        ErrorKind::UnexpectedEof,
        ErrorKind::ConnectionReset,
        ErrorKind::BrokenPipe,
    ];
    let err = normal
        .command(&["PING"])
        .expect_err("the connection was closed");
    assert!(
        err.io_kind().is_some_and(|k| closed_kinds.contains(&k)),
        "{err}"
    );
    let err = subscriber
        .read_reply()
        .expect_err("the subscription was closed");
    assert!(
        err.io_kind().is_some_and(|k| closed_kinds.contains(&k)),
        "{err}"
    );
    // The server itself is unharmed.
    assert_eq!(server.cmd(&["PING"])?, "PONG");
    Ok(())
}
