//! `kitbash status`: the fleet (from heartbeats), every stream's length, groups, lag, pending
//! and dead letters, and Redis itself.

use std::collections::BTreeMap;

use anyhow::Context as _;
use fred::prelude::*;
use fred::types::Value;
use kitbash_runtime::entries::string_of;
use kitbash_schema::messages::Heartbeat;
use kitbash_schema::{DaemonKind, Keys, StreamName};
use serde::Serialize;

/// The whole report; `--json` prints it as one object.
#[derive(Debug, Serialize)]
pub struct Status {
    /// Known instances, alive or recently dead.
    pub daemons: Vec<DaemonStatus>,
    /// Every stream of the deployment.
    pub streams: Vec<StreamStatus>,
    /// The server.
    pub redis: RedisStatus,
}

/// One daemon instance.
#[derive(Debug, Serialize)]
pub struct DaemonStatus {
    /// Kind (`feynman`).
    pub kind: String,
    /// Instance (consumer) name.
    pub instance: String,
    /// Beat within the last three heartbeat periods.
    pub alive: bool,
    /// Its own readiness, from its last beat.
    pub ready: bool,
    /// Milliseconds since its last beat.
    pub last_beat_ms_ago: i64,
    /// Host, pid and admin address from the heartbeat (absent once it expired).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    /// Process id.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pid: Option<u32>,
    /// Admin endpoint.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub admin: Option<String>,
}

/// One stream.
#[derive(Debug, Serialize)]
pub struct StreamStatus {
    /// Logical name (`ticks:3`).
    pub stream: String,
    /// Redis key.
    pub key: String,
    /// XLEN.
    pub length: u64,
    /// XLEN of its dead-letter stream.
    pub dead_letters: u64,
    /// Its consumer groups.
    pub groups: Vec<GroupStatus>,
}

/// One consumer group.
#[derive(Debug, Serialize)]
pub struct GroupStatus {
    /// Group name.
    pub name: String,
    /// Consumers registered.
    pub consumers: u64,
    /// Entries delivered and not acknowledged.
    pub pending: u64,
    /// Entries not yet delivered (Redis ≥ 7; `null` when Redis cannot tell).
    pub lag: Option<u64>,
    /// Last delivered id.
    pub last_delivered_id: String,
}

/// The server.
#[derive(Debug, Serialize)]
pub struct RedisStatus {
    /// `redis_version`.
    pub version: String,
    /// `used_memory` bytes.
    pub used_memory: u64,
    /// `used_memory_human`.
    pub used_memory_human: String,
    /// `maxmemory_policy` (must not evict streams: `noeviction` or `volatile-*`).
    pub maxmemory_policy: String,
    /// `aof_enabled`.
    pub aof_enabled: bool,
    /// `connected_clients`.
    pub connected_clients: u64,
}

fn info_map(info: &str) -> BTreeMap<String, String> {
    info.lines()
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
        .collect()
}

fn map_of(v: &Value) -> BTreeMap<String, Value> {
    match v {
        Value::Array(a) => a
            .chunks(2)
            .filter_map(|c| match c {
                [k, v] => string_of(k).map(|k| (k, v.clone())),
                _ => None,
            })
            .collect(),
        Value::Map(m) => m
            .clone()
            .inner()
            .into_iter()
            .map(|(k, v)| (k.as_str_lossy().into_owned(), v))
            .collect(),
        _ => BTreeMap::new(),
    }
}

fn num(v: Option<&Value>) -> Option<u64> {
    match v? {
        Value::Integer(n) => Some((*n).max(0) as u64),
        Value::Null => None,
        other => string_of(other)?.parse().ok(),
    }
}

/// Collects the report. `heartbeat_ms` is the fleet's heartbeat period.
pub async fn collect(
    client: &Client,
    keys: &Keys,
    partitions: u32,
    heartbeat_ms: u64,
) -> anyhow::Result<Status> {
    let now = kitbash_runtime::heartbeat::now_ms();
    let fleet: Vec<(String, f64)> = client
        .zrange(keys.fleet(), 0, -1, None, false, None, true)
        .await?;
    let mut daemons = Vec::new();
    for (member, score) in fleet {
        let Some((kind, instance)) = member.split_once('/') else {
            continue;
        };
        let Some(k) = DaemonKind::parse(kind) else {
            continue;
        };
        let beat: Option<String> = client
            .get(keys.heartbeat(k, instance))
            .await
            .context("reading a heartbeat")?;
        let beat: Option<Heartbeat> = beat.and_then(|b| serde_json::from_str(&b).ok());
        let ago = now - score as i64;
        daemons.push(DaemonStatus {
            kind: kind.to_owned(),
            instance: instance.to_owned(),
            alive: beat.is_some() && ago <= 3 * heartbeat_ms as i64,
            ready: beat.as_ref().is_some_and(|b| b.ready),
            last_beat_ms_ago: ago,
            host: beat.as_ref().map(|b| b.host.clone()),
            pid: beat.as_ref().map(|b| b.pid),
            admin: beat.and_then(|b| b.admin),
        });
    }
    let mut streams = Vec::new();
    for s in StreamName::all(partitions) {
        let key = keys.stream(s);
        let length: u64 = client.xlen(&key).await.context("XLEN")?;
        let dead_letters: u64 = client
            .xlen(keys.dead_letter(s))
            .await
            .context("XLEN dead")?;
        let mut groups = Vec::new();
        if length > 0 || client.exists::<u64, _>(&key).await? > 0 {
            let v: Value = client.xinfo_groups(&key).await.unwrap_or(Value::Null);
            if let Value::Array(list) = v {
                for g in list {
                    let m = map_of(&g);
                    groups.push(GroupStatus {
                        name: m.get("name").and_then(string_of).unwrap_or_default(),
                        consumers: num(m.get("consumers")).unwrap_or(0),
                        pending: num(m.get("pending")).unwrap_or(0),
                        lag: num(m.get("lag")),
                        last_delivered_id: m
                            .get("last-delivered-id")
                            .and_then(string_of)
                            .unwrap_or_default(),
                    });
                }
            }
        }
        if let StreamName::Ticks(p) = s
            && let Some(g) = partition_status(client, keys, p, &key)
                .await
                .context("partition")?
        {
            groups.push(g);
        }
        streams.push(StreamStatus {
            stream: s.logical(),
            key,
            length,
            dead_letters,
            groups,
        });
    }
    let info: String = client.info(None).await.context("INFO")?;
    let info = info_map(&info);
    let get = |k: &str| info.get(k).cloned().unwrap_or_default();
    let redis = RedisStatus {
        version: get("redis_version"),
        used_memory: get("used_memory").parse().unwrap_or(0),
        used_memory_human: get("used_memory_human"),
        maxmemory_policy: get("maxmemory_policy"),
        aof_enabled: get("aof_enabled") == "1",
        connected_clients: get("connected_clients").parse().unwrap_or(0),
    };
    Ok(Status {
        daemons,
        streams,
        redis,
    })
}

/// feynman reads tick partitions without a consumer group; its position lives in the partition
/// checkpoint. Reported like a group named `feynman` (consumers = 1 while a lease is held).
async fn partition_status(
    client: &Client,
    keys: &Keys,
    p: u32,
    stream_key: &str,
) -> anyhow::Result<Option<GroupStatus>> {
    // Not HGETALL: the snapshot field is binary.
    let (last_id, consumed): (Option<String>, Option<u64>) = client
        .hmget(
            keys.partition_checkpoint(p),
            vec![Keys::CHECKPOINT_LAST_ID, Keys::CHECKPOINT_CONSUMED],
        )
        .await
        .context("reading a partition checkpoint")?;
    let owner: Option<String> = client
        .get(keys.partition_lease(p))
        .await
        .context("reading a partition lease")?;
    if last_id.is_none() && owner.is_none() {
        return Ok(None);
    }
    let info: Value = client
        .xinfo_stream(stream_key, false, None)
        .await
        .unwrap_or(Value::Null);
    let added = num(map_of(&info).get("entries-added"));
    Ok(Some(GroupStatus {
        name: DaemonKind::Feynman.name().into(),
        consumers: u64::from(owner.is_some()),
        pending: 0,
        lag: added.map(|a| a.saturating_sub(consumed.unwrap_or(0))),
        last_delivered_id: last_id.unwrap_or_default(),
    }))
}

/// The human-readable table.
pub fn render(s: &Status) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    let _ = writeln!(out, "DAEMONS");
    if s.daemons.is_empty() {
        let _ = writeln!(out, "  (none registered)");
    }
    for d in &s.daemons {
        let state = match (d.alive, d.ready) {
            (true, true) => "alive, ready",
            (true, false) => "alive, NOT ready",
            _ => "DEAD",
        };
        let _ = writeln!(
            out,
            "  {:<8} {:<44} {:<16} beat {:>6} ms ago  admin {}",
            d.kind,
            d.instance,
            state,
            d.last_beat_ms_ago,
            d.admin.as_deref().unwrap_or("-")
        );
    }
    let _ = writeln!(out, "STREAMS");
    let _ = writeln!(
        out,
        "  {:<12} {:>10} {:>6}  groups (pending/lag)",
        "stream", "length", "dead"
    );
    for st in &s.streams {
        let groups: Vec<String> = st
            .groups
            .iter()
            .map(|g| {
                let lag = g.lag.map_or("?".to_owned(), |l| l.to_string());
                format!("{}: {}/{} ({}c)", g.name, g.pending, lag, g.consumers)
            })
            .collect();
        let _ = writeln!(
            out,
            "  {:<12} {:>10} {:>6}  {}",
            st.stream,
            st.length,
            st.dead_letters,
            if groups.is_empty() {
                "-".into()
            } else {
                groups.join("  ")
            }
        );
    }
    let _ = writeln!(
        out,
        "REDIS {}  memory {}  policy {}  aof {}  clients {}",
        s.redis.version,
        s.redis.used_memory_human,
        s.redis.maxmemory_policy,
        if s.redis.aof_enabled { "on" } else { "off" },
        s.redis.connected_clients
    );
    out
}
