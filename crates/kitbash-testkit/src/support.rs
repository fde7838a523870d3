//! What every daemon's test suite needs besides a Redis: start the real binary with test
//! settings (`KITBASH__*`), signal it and wait for its exit, read its admin endpoint, and
//! poll a condition with a deadline instead of sleeping.
//!
//! One copy for the workspace: the daemon suites used to carry six copies of these.

use std::net::SocketAddr;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// How long [`eventually`] and [`wait_exit`] wait before failing the test.
pub const DEADLINE: Duration = Duration::from_secs(60);

/// A daemon binary's command with the settings every test wants: no config files
/// (`KITBASH_CONFIG_DIR=/nonexistent`, so only defaults and environment apply), the test's
/// Redis and namespace, no admin endpoint (set `KITBASH__ADMIN__LISTEN` to `127.0.0.1:0` to get
/// one; its address is in the heartbeat), fast heartbeats and reads, stdout and stderr discarded.
/// Add the daemon's own `KITBASH__SECTION__KEY`s with `.env(..)`, then `.spawn()`.
pub fn daemon_command(bin: &str, url: &str, namespace: &str) -> Command {
    let mut c = Command::new(bin);
    c.env("KITBASH_CONFIG_DIR", "/nonexistent")
        .env("KITBASH__REDIS__URL", url)
        .env("KITBASH__REDIS__NAMESPACE", namespace)
        .env("KITBASH__ADMIN__LISTEN", "")
        .env("KITBASH__FLEET__HEARTBEAT_MS", "200")
        .env("KITBASH__CONSUMER__BLOCK_MS", "50")
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    c
}

/// Sends `sig` (`-TERM`, `-9`, `-STOP`, `-HUP` …) to `child` with kill(1). Panics when it fails.
pub fn signal(child: &Child, sig: &str) {
    let ok = Command::new("kill")
        .args([sig, &child.id().to_string()])
        .status()
        .is_ok_and(|s| s.success());
    assert!(ok, "kill {sig} {} failed", child.id());
}

/// Waits for `child` to exit (polling, without blocking the async runtime), at most
/// [`DEADLINE`].
pub async fn wait_exit(child: &mut Child) -> ExitStatus {
    let deadline = Instant::now() + DEADLINE;
    loop {
        if let Some(s) = child.try_wait().expect("try_wait") {
            return s;
        }
        assert!(
            Instant::now() < deadline,
            "process {} did not exit within {DEADLINE:?}",
            child.id()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Polls `cond` every 25 ms until it holds; fails the test naming `what` after [`DEADLINE`].
pub async fn eventually<F, Fut>(what: &str, mut cond: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + DEADLINE;
    loop {
        if cond().await {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out after {DEADLINE:?} waiting for: {what}"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// `GET path` over plain HTTP/1.1 with a 2 s timeout: (status, body). Status 0 when the
/// endpoint does not answer. Blocking: call it from `spawn_blocking` in a busy async test.
pub fn http_get(addr: SocketAddr, path: &str) -> (u16, String) {
    use std::io::{Read, Write};
    let Ok(mut s) = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(2)) else {
        return (0, String::new());
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
    if write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n"
    )
    .is_err()
    {
        return (0, String::new());
    }
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    let status = out
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = out
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (status, body)
}

/// The sum of every sample of metric `name` (all label sets) on the admin endpoint at `addr`.
pub fn metric(addr: SocketAddr, name: &str) -> f64 {
    let (_, body) = http_get(addr, "/metrics");
    body.lines()
        .filter(|l| {
            l.strip_prefix(name)
                .is_some_and(|rest| rest.starts_with([' ', '{']))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// Appends `entries` (each a list of field/value pairs, e.g. a JSON envelope's fields) to
/// `stream` and makes `server` refuse every write from then on — `maxmemory` 1 byte with
/// `noeviction`, so each `XADD`, `SET` or writing script answers `OOM` — in one `MULTI`: a
/// daemon blocked on the stream wakes up to entries it cannot apply. Reads still work.
/// [`allow_writes`] lifts it. The daemons' "Redis refusing writes for a while" tests use it.
pub fn append_then_refuse_writes(
    server: &crate::RedisServer,
    stream: &str,
    entries: &[Vec<(&str, String)>],
) -> crate::Result<()> {
    append_to_streams_then_refuse_writes(server, &[(stream, entries)])
}

/// One stream entry's field/value pairs, as [`append_then_refuse_writes`] takes them.
pub type EntryFields<'a> = Vec<(&'a str, String)>;

/// [`append_then_refuse_writes`] for several streams at once (a partitioned daemon's
/// partitions): every `(stream, entries)` appended, then writes refused, in one `MULTI`.
pub fn append_to_streams_then_refuse_writes(
    server: &crate::RedisServer,
    streams: &[(&str, &[EntryFields<'_>])],
) -> crate::Result<()> {
    let mut c = server.connect()?;
    c.command(&["CONFIG", "SET", "maxmemory-policy", "noeviction"])?;
    c.command(&["MULTI"])?;
    for (stream, entries) in streams {
        for e in entries.iter() {
            let mut args: Vec<&str> = vec!["XADD", stream, "*"];
            for (k, v) in e {
                args.push(k);
                args.push(v);
            }
            c.command(&args)?;
        }
    }
    c.command(&["CONFIG", "SET", "maxmemory", "1"])?;
    c.command(&["EXEC"])?;
    Ok(())
}

/// Lifts [`append_then_refuse_writes`]: `maxmemory 0` (no limit).
pub fn allow_writes(server: &crate::RedisServer) -> crate::Result<()> {
    server
        .connect()?
        .command(&["CONFIG", "SET", "maxmemory", "0"])
        .map(drop)
}

/// A local address that was free a moment ago (for a daemon's admin endpoint in a test that
/// must know it before the daemon starts).
pub fn free_local_addr() -> SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .unwrap_or_else(|e| panic!("no free local port: {e}"))
}

/// `/readyz` of the admin endpoint at `addr`: the status code, and the state of the readiness
/// check `name` (`None` when the body does not list it).
pub fn readiness(addr: SocketAddr, name: &str) -> (u16, Option<bool>) {
    let (status, body) = http_get(addr, "/readyz");
    let check = if body.contains(&format!(r#"{{"name":"{name}","ok":false}}"#)) {
        Some(false)
    } else if body.contains(&format!(r#"{{"name":"{name}","ok":true}}"#)) {
        Some(true)
    } else {
        None
    };
    (status, check)
}

/// Waits until every check named in `checks` is in `addr`'s `/readyz` and passing — for a
/// partitioned daemon, a worker running on each of those partitions. A fault test waits for
/// this before cutting writes: a lease not yet taken cannot be while Redis refuses writes.
pub async fn every_check_passing(addr: SocketAddr, checks: &[String]) {
    eventually(
        "every named readiness check present and passing",
        || async {
            checks
                .iter()
                .all(|check| readiness(addr, check).1 == Some(true))
        },
    )
    .await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_closed_port_is_status_zero() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = l.local_addr().expect("addr");
        drop(l);
        assert_eq!(http_get(addr, "/readyz").0, 0);
    }
}
