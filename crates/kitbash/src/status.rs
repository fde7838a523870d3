//! `kitbash status`: the fleet (from heartbeats), every stream's length, groups, lag, pending
//! and dead letters, the partitions of feynman's ticks and entity's updates (owner, position,
//! lag), the reflex path (layout, decay cycle, hot queries, hat, grains, ghosts), and Redis
//! itself.
//!
//! Dead-letter streams are never trimmed; one longer than `[consumer] dead_letter_alarm` is
//! listed in `dead_letter_alarms` and printed as a `WARNING` line naming it, its length and the
//! threshold.
//!
//! Every stream carries its trim ([`TrimStatus`]): who trims it now (the archive while it holds
//! the stream's trim claim, else the stream's own owner), the floor below which entries may go
//! and what holds it there (`group ghost (pending)`, `archive`, `retention_ms`, `group decay
//! missing`, `checkpoint`), computed live by the trim script in its dry mode.
//!
//! Every group and partition carries an explicit `lag` (a number, 0 when there is nothing to
//! do, also on an empty or absent stream) and `caught_up`, so a script can wait for "done".

use std::collections::BTreeMap;

use anyhow::Context as _;
use fred::prelude::*;
use fred::types::Value;
use kitbash_runtime::entries::string_of;
use kitbash_schema::messages::Heartbeat;
use kitbash_schema::{DaemonKind, Keys, StreamName};
use serde::Serialize;

/// The whole report; `--json` prints it as one object.
#[derive(Clone, Debug, Serialize)]
pub struct Status {
    /// Known instances, alive or recently dead.
    pub daemons: Vec<DaemonStatus>,
    /// Every stream of the deployment.
    pub streams: Vec<StreamStatus>,
    /// The server.
    pub redis: RedisStatus,
    /// Seed 000's reflex path, as it stands in Redis.
    pub reflex: ReflexStatus,
    /// Dead-letter streams longer than `[consumer] dead_letter_alarm` (empty when none).
    pub dead_letter_alarms: Vec<DeadLetterAlarm>,
    /// Which Redis and which configuration the report comes from (set by the CLI).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub source: Option<crate::locate::Source>,
}

/// The reflex path (decay and ghost) as it stands in Redis.
#[derive(Clone, Debug, Default, Serialize)]
pub struct ReflexStatus {
    /// `kitbash:reflex:layout` (`seed`, `compact/{buckets}`); `None` before the first write.
    pub layout: Option<String>,
    /// The decay cycle counter.
    pub cycle: u64,
    /// Queries hot now (resonance above `[decay] threshold`).
    pub hot: u64,
    /// `hat:current`.
    pub hat: Option<String>,
    /// Grains in `grain:index`.
    pub grains: u64,
    /// `ghost:activations` (ghosts written for crossings).
    pub ghost_activations: u64,
    /// `kitbash:reflex:version` (grain and hat changes).
    pub version: u64,
    /// The version whose hot ghosts the ghost leader recomputed last.
    pub recomputed_version: Option<u64>,
}

/// Reads the reflex path's state; `ln_threshold` and `ln_factor` from `[decay]`.
pub async fn reflex_status(
    client: &Client,
    keys: &Keys,
    ln_threshold: f64,
    ln_factor: f64,
) -> anyhow::Result<ReflexStatus> {
    let layout: Option<String> = client.get(keys.reflex_layout()).await?;
    let cycle: Option<u64> = client.get(keys.decay_cycle()).await?;
    let cycle = cycle.unwrap_or(0);
    let bound = ln_threshold - cycle as f64 * ln_factor;
    let hot_key = if layout.as_deref().is_some_and(|l| l.starts_with("compact")) {
        keys.reflex_hot()
    } else {
        keys.resonance_index()
    };
    // Exclusive lower bound: exactly at the threshold is not hot.
    let hot: u64 = client
        .custom(
            fred::cmd!("ZCOUNT"),
            vec![hot_key, format!("({bound:e}"), "+inf".to_owned()],
        )
        .await?;
    let activations: Option<u64> = client.get(keys.ghost_activations()).await?;
    let version: Option<u64> = client.get(keys.reflex_version()).await?;
    Ok(ReflexStatus {
        layout,
        cycle,
        hot,
        hat: client.get(keys.hat_current()).await?,
        grains: client.scard(keys.grain_index()).await?,
        ghost_activations: activations.unwrap_or(0),
        version: version.unwrap_or(0),
        recomputed_version: client.get(keys.ghost_recomputed()).await?,
    })
}

/// A dead-letter stream above its alarm threshold.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct DeadLetterAlarm {
    /// The stream whose entries were rejected (`queries`).
    pub stream: String,
    /// The dead-letter stream's key.
    pub key: String,
    /// Its length.
    pub length: u64,
    /// `[consumer] dead_letter_alarm`.
    pub threshold: u64,
}

impl DeadLetterAlarm {
    /// The warning line `kitbash status` prints.
    pub fn line(&self) -> String {
        format!(
            "WARNING dead letters: {} holds {} entries (stream {}), above consumer.dead_letter_alarm = {}; \
             they are never trimmed: replay or delete them",
            self.key, self.length, self.stream, self.threshold
        )
    }
}

/// One daemon instance.
#[derive(Clone, Debug, Serialize)]
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
    /// Figures the instance reports about itself (the bridge: `connections`, `subscriptions`,
    /// `slow_closes`, `recovered`, `not_recovered`).
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub stats: BTreeMap<String, u64>,
}

/// One stream.
#[derive(Clone, Debug, Serialize)]
pub struct StreamStatus {
    /// Logical name (`ticks:3`).
    pub stream: String,
    /// Redis key.
    pub key: String,
    /// XLEN.
    pub length: u64,
    /// Entries ever added (`XINFO STREAM` `entries-added`; 0 for a stream that does not exist).
    /// Unlike the length it never shrinks when the stream is trimmed, so rates come from it.
    pub entries_added: u64,
    /// Id of the newest entry ever added (`last-generated-id`), `0-0` when none.
    pub last_id: String,
    /// XLEN of its dead-letter stream.
    pub dead_letters: u64,
    /// Its consumer groups (as `XINFO GROUPS` lists them).
    pub groups: Vec<GroupStatus>,
    /// For a partition (ticks, entity): its worker's position in it. feynman and entity read
    /// partitions without a consumer group (a lease and a fenced checkpoint instead), so this
    /// is not a group.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub partition: Option<PartitionStatus>,
    /// Who trims it and how far it may go (`None` for a stream that does not exist).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub trim: Option<TrimStatus>,
}

/// A stream's trim: who trims it and the floor the readers (and the archive) impose.
#[derive(Clone, Debug, Serialize)]
pub struct TrimStatus {
    /// Who trims it now: `archive` (it holds the stream's trim claim), the stream's own owner
    /// (`decay`, …, by its bound `by_key`), or `nobody`.
    pub by: String,
    /// The bound of a non-archive trimmer (`decay.queries_stream_max`), or why nobody trims.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub by_key: Option<String>,
    /// `[archive] trim` would have the archive trim it, but no archive instance holds its
    /// claim (not running, or not yet archiving it).
    pub archive_absent: bool,
    /// Entries below this id may be trimmed, none at or above it; `None` when nothing holds
    /// the stream back (its owner's cap alone bounds it).
    pub floor: Option<String>,
    /// What holds the floor there.
    pub held_by: String,
    /// The first id not yet archived, as the archive's last trim recorded it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub archived: Option<String>,
    /// Entries the archive's claim has trimmed so far.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub removed: Option<u64>,
}

impl TrimStatus {
    /// One line: `floor 1718…-3 held by group ghost (pending) · trimmed by archive`.
    pub fn line(&self) -> String {
        let floor = match &self.floor {
            Some(f) => format!("floor {f} held by {}", self.held_by),
            None => format!("no floor ({})", self.held_by),
        };
        let by = match (&self.by_key, self.archive_absent) {
            (Some(k), true) => format!("{} by {k} (the archive is not trimming it)", self.by),
            (Some(k), false) => format!("{} by {k}", self.by),
            (None, _) => self.by.clone(),
        };
        format!("{floor} · trimmed by {by}")
    }
}

/// One consumer group.
#[derive(Clone, Debug, Serialize)]
pub struct GroupStatus {
    /// Group name.
    pub name: String,
    /// Consumers registered.
    pub consumers: u64,
    /// Entries delivered and not acknowledged.
    pub pending: u64,
    /// Entries not yet delivered to the group. Redis's own figure when it has one; when it
    /// cannot tell (entries deleted or trimmed), counted from the last delivered id (up to
    /// 10,000, then `lag_exact` is false).
    pub lag: u64,
    /// False only when `lag` is a lower bound.
    pub lag_exact: bool,
    /// Nothing left to deliver and nothing pending.
    pub caught_up: bool,
    /// Last delivered id.
    pub last_delivered_id: String,
}

/// A partition worker's position in one partition (a tick or an entity partition).
#[derive(Clone, Debug, Serialize)]
pub struct PartitionStatus {
    /// Partition number.
    pub partition: u32,
    /// The daemon kind that works the partition (`feynman`, `entity`).
    pub worker: String,
    /// The instance holding its lease, if any.
    pub owner: Option<String>,
    /// Id of the last entry applied (the checkpoint's `last_id`), `null` before the first.
    pub position: Option<String>,
    /// Entries applied so far (the checkpoint's `consumed`).
    pub consumed: u64,
    /// Entries added and not yet applied; 0 for an empty or absent stream.
    pub lag: u64,
    /// Every entry added has been applied.
    pub caught_up: bool,
}

/// The server.
#[derive(Clone, Debug, Serialize)]
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
    /// Servers the figures cover: 1, or on a Redis Cluster every primary (memory and clients
    /// summed over them, AOF on only if on everywhere, version and policy the first's).
    pub nodes: u64,
}

/// Bytes as Redis writes `used_memory_human` (`114.98G`).
fn human_bytes(b: u64) -> String {
    let units = [("G", 1u64 << 30), ("M", 1 << 20), ("K", 1 << 10)];
    for (u, n) in units {
        if b >= n {
            return format!("{:.2}{u}", b as f64 / n as f64);
        }
    }
    format!("{b}B")
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

/// Collects the report for `tick_partitions` tick and `entity_partitions` entity partitions.
/// `heartbeat_ms` is the fleet's heartbeat period.
pub async fn collect(
    client: &Client,
    keys: &Keys,
    config: &kitbash_runtime::Config,
) -> anyhow::Result<Status> {
    let tick_partitions = config.feynman.partitions;
    let entity_partitions = config.entity.partitions;
    let heartbeat_ms = config.fleet.heartbeat_ms;
    let now = kitbash_runtime::clock::now_ms();
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
            stats: beat.as_ref().map(|b| b.stats.clone()).unwrap_or_default(),
            admin: beat.and_then(|b| b.admin),
        });
    }
    let mut streams = Vec::new();
    let mut dead_letter_alarms = Vec::new();
    let threshold = config.consumer.dead_letter_alarm;
    for s in StreamName::all(tick_partitions, entity_partitions) {
        let key = keys.stream(s);
        let length: u64 = client.xlen(&key).await.context("XLEN")?;
        let dead_letters: u64 = client
            .xlen(keys.dead_letter(s))
            .await
            .context("XLEN dead")?;
        if dead_letters > threshold {
            dead_letter_alarms.push(DeadLetterAlarm {
                stream: s.logical(),
                key: keys.dead_letter(s),
                length: dead_letters,
                threshold,
            });
        }
        let exists = length > 0 || client.exists::<u64, _>(&key).await? > 0;
        let (entries_added, last_id) = if exists {
            let info: Value = client
                .xinfo_stream(&key, false, None)
                .await
                .unwrap_or(Value::Null);
            let m = map_of(&info);
            (
                num(m.get("entries-added")).unwrap_or(length),
                m.get("last-generated-id")
                    .and_then(string_of)
                    .unwrap_or_else(|| "0-0".into()),
            )
        } else {
            (0, "0-0".to_owned())
        };
        let mut groups = Vec::new();
        if exists {
            let v: Value = client.xinfo_groups(&key).await.unwrap_or(Value::Null);
            if let Value::Array(list) = v {
                for g in list {
                    groups.push(group_status(client, &key, &map_of(&g), &last_id).await?);
                }
            }
        }
        let partition = match (s.partition(), s.partitioned_by()) {
            (Some(_), Some(worker)) => Some(
                partition_status(client, keys, s, worker, entries_added, &last_id)
                    .await
                    .context("partition")?,
            ),
            _ => None,
        };
        let trim = if exists {
            Some(trim_status(client, keys, config, s).await.context("trim")?)
        } else {
            None
        };
        streams.push(StreamStatus {
            stream: s.logical(),
            key,
            length,
            entries_added,
            last_id,
            dead_letters,
            groups,
            partition,
            trim,
        });
    }
    let redis = redis_status(client).await?;
    let reflex = reflex_status(
        client,
        keys,
        config.decay.threshold.ln(),
        config.decay.factor.ln(),
    )
    .await
    .context("reflex")?;
    Ok(Status {
        daemons,
        streams,
        redis,
        reflex,
        dead_letter_alarms,
        source: None,
    })
}

/// `INFO` of the server, or of every primary of a cluster (each holds its own slots' data).
async fn redis_status(client: &Client) -> anyhow::Result<RedisStatus> {
    let mut infos = Vec::new();
    if client.is_clustered() {
        for node in kitbash_client::families::primaries(client) {
            let info: String = client
                .with_cluster_node(node.clone())
                .info(None)
                .await
                .with_context(|| format!("INFO on {node}"))?;
            infos.push(info_map(&info));
        }
    } else {
        let info: String = client.info(None).await.context("INFO")?;
        infos.push(info_map(&info));
    }
    let get = |i: &BTreeMap<String, String>, k: &str| i.get(k).cloned().unwrap_or_default();
    let sum = |k: &str| -> u64 {
        infos
            .iter()
            .map(|i| get(i, k).parse::<u64>().unwrap_or(0))
            .sum()
    };
    let first = infos.first().cloned().unwrap_or_default();
    let used_memory = sum("used_memory");
    Ok(RedisStatus {
        version: get(&first, "redis_version"),
        used_memory,
        used_memory_human: if infos.len() == 1 {
            get(&first, "used_memory_human")
        } else {
            human_bytes(used_memory)
        },
        maxmemory_policy: get(&first, "maxmemory_policy"),
        aof_enabled: !infos.is_empty() && infos.iter().all(|i| get(i, "aof_enabled") == "1"),
        connected_clients: sum("connected_clients"),
        nodes: infos.len() as u64,
    })
}

/// The trim of `s`: the claim (if the archive holds it) and the floor, computed live by the
/// trim script without trimming.
async fn trim_status(
    client: &Client,
    keys: &Keys,
    config: &kitbash_runtime::Config,
    s: StreamName,
) -> anyhow::Result<TrimStatus> {
    use kitbash_runtime::trim::{TrimMode, TrimPlan, trim_to_floor};
    let claim_key = keys.trim_claim(s);
    let (owner, archived, removed): (Option<String>, Option<String>, Option<u64>) = client
        .hmget(
            &claim_key,
            vec![Keys::TRIM_OWNER, Keys::TRIM_ARCHIVED, Keys::TRIM_REMOVED],
        )
        .await
        .context("reading a trim claim")?;
    let stream_key = keys.stream(s);
    let checkpoint = keys.checkpoint(s);
    let checkpoint_key = s.partitioned_by().map(|_| checkpoint.as_str());
    let claimed = owner.is_some();
    let settings = config.archive.trim_for(&s.logical());
    let archived = archived.filter(|a| !a.is_empty());
    let plan = TrimPlan {
        stream_key: &stream_key,
        claim_key: &claim_key,
        checkpoint_key,
        required: s.groups(),
        floor: match (&archived, claimed) {
            (Some(a), true) => Some((a.as_str(), "archive")),
            (None, true) => Some(("0-0", "archive")),
            _ => None,
        },
        retention_ms: if claimed { settings.retention_ms } else { 0 },
        retention_entries: if claimed {
            settings.retention_entries
        } else {
            0
        },
    };
    let report = trim_to_floor(client, &plan, TrimMode::Dry).await?;
    let (by, by_key) = if claimed {
        ("archive".to_owned(), None)
    } else {
        match s.trim_owner() {
            kitbash_schema::TrimOwner::Daemon { kind, key } => {
                (kind.name().to_owned(), Some(format!("{kind}.{key}")))
            }
            kitbash_schema::TrimOwner::Exempt(why) => ("nobody".to_owned(), Some(why.to_owned())),
        }
    };
    Ok(TrimStatus {
        by,
        by_key,
        archive_absent: !claimed && config.archive_trims(s),
        floor: report.floor,
        held_by: report.holder,
        archived: if claimed { archived } else { None },
        removed: if claimed { removed } else { None },
    })
}

/// A stream id as `(ms, seq)`, for ordering; `0-0` when it does not parse.
pub fn id_of(id: &str) -> (u64, u64) {
    let (ms, seq) = id.split_once('-').unwrap_or((id, "0"));
    (ms.parse().unwrap_or(0), seq.parse().unwrap_or(0))
}

/// Entries counted past the last delivered id when Redis cannot tell a group's lag.
const LAG_COUNT_CAP: u64 = 10_000;

async fn group_status(
    client: &Client,
    key: &str,
    m: &BTreeMap<String, Value>,
    last_id: &str,
) -> anyhow::Result<GroupStatus> {
    let last_delivered_id = m
        .get("last-delivered-id")
        .and_then(string_of)
        .unwrap_or_default();
    let pending = num(m.get("pending")).unwrap_or(0);
    let delivered_all = id_of(&last_delivered_id) >= id_of(last_id);
    let (lag, lag_exact) = match num(m.get("lag")) {
        Some(l) => (l, true),
        None if delivered_all => (0, true),
        None => {
            // Redis says null after deletions or trims; count what follows the group's
            // position instead (bounded: this is a status report, not a scan of the stream).
            let after: Value = client
                .xrange(
                    key,
                    format!("({last_delivered_id}"),
                    "+",
                    Some(LAG_COUNT_CAP),
                )
                .await
                .context("XRANGE for lag")?;
            let n = match after {
                Value::Array(a) => a.len() as u64,
                _ => 0,
            };
            (n, n < LAG_COUNT_CAP)
        }
    };
    Ok(GroupStatus {
        name: m.get("name").and_then(string_of).unwrap_or_default(),
        consumers: num(m.get("consumers")).unwrap_or(0),
        pending,
        lag,
        lag_exact,
        caught_up: lag == 0 && pending == 0,
        last_delivered_id,
    })
}

/// `worker`'s position in the partition stream `s`, from its checkpoint and lease.
/// `entries_added` and `last_id` describe the stream (0 and `0-0` when it does not exist).
async fn partition_status(
    client: &Client,
    keys: &Keys,
    s: StreamName,
    worker: DaemonKind,
    entries_added: u64,
    last_id: &str,
) -> anyhow::Result<PartitionStatus> {
    // Not HGETALL: the snapshot field is binary.
    let (position, consumed): (Option<String>, Option<u64>) = client
        .hmget(
            keys.checkpoint(s),
            vec![Keys::CHECKPOINT_LAST_ID, Keys::CHECKPOINT_CONSUMED],
        )
        .await
        .context("reading a partition checkpoint")?;
    // The lease holds `{instance}#{token}`; the owner is the instance.
    let owner: Option<String> = client
        .get::<Option<String>, _>(keys.lease(s))
        .await
        .context("reading a partition lease")?
        .map(|t| kitbash_runtime::lease::instance_of(&t).to_owned());
    let consumed = consumed.unwrap_or(0);
    let caught_up = id_of(position.as_deref().unwrap_or("0-0")) >= id_of(last_id);
    let lag = if caught_up {
        0
    } else {
        // At least one entry is waiting even if the counters disagree (a recreated stream).
        entries_added.saturating_sub(consumed).max(1)
    };
    Ok(PartitionStatus {
        partition: s.partition().unwrap_or(0),
        worker: worker.name().to_owned(),
        owner,
        position,
        consumed,
        lag,
        caught_up,
    })
}

/// The human-readable report, `width` columns wide (the live view of `kitbash up` without its
/// header and rates).
pub fn render(s: &Status, width: usize) -> String {
    let view = crate::live::LiveView::of_status(s);
    let mut out = crate::live::render(&view, width, usize::MAX).join("\n");
    out.push('\n');
    out
}
