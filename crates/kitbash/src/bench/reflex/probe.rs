//! Where a reflex benchmark's time goes: CPU of both processes, run-queue waits, Redis's
//! command statistics, memory of key sets.

use std::future::Future;

use fred::prelude::*;
use fred::types::Value;

// ---- where the time goes ----------------------------------------------------------------------

/// CPU seconds used so far by this process (all threads, `/proc/self/stat` utime + stime at
/// the ABI's 100 ticks/s) and by the Redis server (`INFO cpu`).
pub(crate) async fn cpu_seconds(client: &Client) -> anyhow::Result<(f64, f64)> {
    let stat = std::fs::read_to_string("/proc/self/stat")?;
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    // After "pid (comm)": state is field 3, utime 14, stime 15.
    let own = (ticks(11) + ticks(12)) / 100.0;
    let info: String = client.info(Some(fred::types::InfoKind::Cpu)).await?;
    let get = |name: &str| {
        info.lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    Ok((own, get("used_cpu_sys:") + get("used_cpu_user:")))
}

/// Nanoseconds the threads of `/proc/{pid}/task/{tid}` (all threads when `tid` is `None`) have
/// spent runnable but waiting for a CPU (the second field of `schedstat`): how much the
/// machine's cores were contended while they had work.
pub(super) fn runqueue_wait_ns(pid: &str, tid: Option<&str>) -> u64 {
    let wait = |dir: std::path::PathBuf| {
        std::fs::read_to_string(dir.join("schedstat"))
            .ok()
            .and_then(|s| s.split_whitespace().nth(1)?.parse::<u64>().ok())
            .unwrap_or(0)
    };
    let tasks = std::path::PathBuf::from(format!("/proc/{pid}/task"));
    match tid {
        Some(tid) => wait(tasks.join(tid)),
        None => std::fs::read_dir(&tasks)
            .map(|d| d.filter_map(Result::ok).map(|e| wait(e.path())).sum())
            .unwrap_or(0),
    }
}

/// Run-queue waits so far: (Redis's main thread, every thread of this process), ns.
pub(super) async fn runqueue_waits(client: &Client) -> anyhow::Result<(u64, u64)> {
    let info: String = client.info(Some(fred::types::InfoKind::Server)).await?;
    let pid = info
        .lines()
        .find_map(|l| l.strip_prefix("process_id:"))
        .map(str::trim)
        .unwrap_or_default()
        .to_owned();
    let redis = if pid.is_empty() {
        0
    } else {
        runqueue_wait_ns(&pid, Some(&pid))
    };
    Ok((redis, runqueue_wait_ns("self", None)))
}

/// `(calls, usec)` of `cmd` in `INFO commandstats` (since the last `CONFIG RESETSTAT`).
pub(crate) async fn command_stat(client: &Client, cmd: &str) -> anyhow::Result<(u64, u64)> {
    let stats = crate::bench::commandstats::command_stats(client).await?;
    Ok(stats.get(cmd).copied().unwrap_or_default())
}

/// The exact command one `lookup` sends, read back from the slow log (threshold 0 for one
/// call). `None` when the log truncated an argument.
pub(super) async fn captured_command<F, Fut>(
    client: &Client,
    lookup: F,
) -> anyhow::Result<Option<Vec<String>>>
where
    F: FnOnce() -> Fut,
    Fut: Future<Output = bool>,
{
    let set = |v: &'static str| {
        client.custom::<Value, _>(
            fred::cmd!("CONFIG"),
            vec!["SET", "slowlog-log-slower-than", v],
        )
    };
    let _ = set("0").await?;
    let _: Value = client.custom(fred::cmd!("SLOWLOG"), vec!["RESET"]).await?;
    let ok = lookup().await;
    let log: Value = client
        .custom(fred::cmd!("SLOWLOG"), vec!["GET", "10"])
        .await?;
    let _ = set("10000").await?;
    if !ok {
        return Ok(None);
    }
    let entries = match log {
        Value::Array(a) => a,
        _ => return Ok(None),
    };
    for e in entries {
        let Value::Array(parts) = e else { continue };
        let Some(Value::Array(args)) = parts.get(3) else {
            continue;
        };
        let args: Vec<String> = args.iter().filter_map(|a| a.as_string()).collect();
        let is_evalsha = args
            .first()
            .is_some_and(|c| c.eq_ignore_ascii_case("evalsha"));
        if is_evalsha && !args.iter().any(|a| a.contains("more ")) {
            return Ok(Some(args));
        }
    }
    Ok(None)
}

/// Selected `MEMORY STATS` fields (bytes): client buffers, script caches, the main and
/// expires dicts of db 0 (entries × 24 + slots × 8), the dataset.
pub(super) async fn memory_stats(
    client: &Client,
) -> anyhow::Result<serde_json::Map<String, serde_json::Value>> {
    const KEEP: [&str; 6] = [
        "clients.normal",
        "lua.caches",
        "db.0.overhead.hashtable.main",
        "db.0.overhead.hashtable.expires",
        "keys.count",
        "dataset.bytes",
    ];
    fn walk(prefix: &str, v: Value, out: &mut serde_json::Map<String, serde_json::Value>) {
        let Ok(map) = v.into_map() else { return };
        for (k, v) in map.inner() {
            let name = format!("{prefix}{}", k.as_str().unwrap_or_default());
            match v {
                Value::Integer(i) if KEEP.contains(&name.as_str()) => {
                    out.insert(name, i.into());
                }
                Value::Array(_) | Value::Map(_) => walk(&format!("{name}."), v, out),
                _ => {}
            }
        }
    }
    let v: Value = client.custom(fred::cmd!("MEMORY"), vec!["STATS"]).await?;
    let mut out = serde_json::Map::new();
    walk("", v, &mut out);
    Ok(out)
}

/// Sum of `MEMORY USAGE key SAMPLES 0` over `keys`.
pub(super) async fn memory_usage(client: &Client, keys: &[String]) -> anyhow::Result<u64> {
    let pipe = client.pipeline();
    for k in keys {
        let _: () = pipe
            .custom(
                fred::cmd!("MEMORY"),
                vec!["USAGE".to_owned(), k.clone(), "SAMPLES".into(), "0".into()],
            )
            .await?;
    }
    let out: Vec<Value> = pipe.all().await?;
    Ok(out.iter().filter_map(Value::as_u64).sum())
}
