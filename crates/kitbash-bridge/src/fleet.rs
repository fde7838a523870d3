//! The channels without history: `fleet` (the daemons and streams, as `kitbash status` sees
//! them, every `[bridge] fleet_period_ms`) and `reflex:hat` (the current hat, published when it
//! changes). Each publication replaces the last; a subscriber gets the latest at once.

use std::collections::BTreeMap;

use fred::prelude::*;
use fred::types::Value;
use kitbash_runtime::entries::string_of;
use kitbash_runtime::{Config, RuntimeError};
use kitbash_schema::bridge::{self, Channel};
use kitbash_schema::messages::Heartbeat;
use kitbash_schema::{DaemonKind, Keys, StreamName, reflex};
use serde::Serialize;

use crate::hub::Hub;

/// One daemon instance in the fleet view.
#[derive(Debug, Serialize)]
pub struct Instance {
    /// Kind (`feynman`, …).
    pub kind: String,
    /// Instance name.
    pub instance: String,
    /// Host name.
    pub host: Option<String>,
    /// Beat within three heartbeat periods.
    pub alive: bool,
    /// Ready, by its last beat.
    pub ready: bool,
    /// Milliseconds since its last beat.
    pub last_beat_ms_ago: i64,
    /// Admin address.
    pub admin: Option<String>,
    /// Served addresses by router name.
    pub serves: BTreeMap<String, String>,
    /// The figures it reports in its heartbeat (the bridge's connections, the archive's
    /// progress, …).
    pub stats: BTreeMap<String, u64>,
}

/// One consumer group.
#[derive(Debug, Serialize)]
pub struct GroupView {
    /// Group name.
    pub name: String,
    /// Delivered, not acknowledged.
    pub pending: u64,
    /// Entries not yet delivered (`null` when Redis cannot say).
    pub lag: Option<u64>,
}

/// One stream.
#[derive(Debug, Serialize)]
pub struct StreamView {
    /// Logical name.
    pub stream: String,
    /// Entries now.
    pub length: u64,
    /// Entries ever added.
    pub entries_added: u64,
    /// Its dead-letter stream's length.
    pub dead_letters: u64,
    /// Whether that passed `[consumer] dead_letter_alarm`.
    pub dead_letter_alarm: bool,
    /// Groups.
    pub groups: Vec<GroupView>,
    /// The bound its trim owner keeps it near (`null`: not trimmed by a bound — none set, or
    /// the archive holds its trim claim and trims by retention instead).
    pub bound: Option<u64>,
    /// Its length reached `bound`: older entries are being trimmed.
    pub at_bound: bool,
}

/// The bridge instance publishing the view.
#[derive(Debug, Serialize)]
pub struct BridgeView {
    /// Its instance name.
    pub instance: String,
    /// Open connections.
    pub connections: usize,
    /// Subscriptions held.
    pub subscriptions: usize,
}

/// One of the hottest queries of the reflex path.
#[derive(Debug, Serialize)]
pub struct HotQuery {
    /// Its id in the resonance index (the query hash; compact layout: the compact id).
    pub id: String,
    /// Its text, when still stored.
    pub text: Option<String>,
    /// Its resonance now (at the current decay cycle).
    pub resonance: f64,
    /// Its ghost: the top-3 grain ids the ghost precomputer stored (`[]` when none).
    pub ghost: Vec<u64>,
}

/// Most hot queries the fleet view carries.
pub const HOT_MAX: usize = 10;

/// The reflex path's figures (seed 000's `metrics:*` and `ghost:activations`).
#[derive(Debug, Serialize)]
pub struct ReflexView {
    /// `kitbash:reflex:layout` (`seed`, `compact/{buckets}`; `null` before any writer).
    pub layout: Option<String>,
    /// The decay cycle now.
    pub cycle: u64,
    /// `[decay] threshold`: a query above it is hot (its ghost is precomputed).
    pub threshold: f64,
    /// `[decay] period_ms`.
    pub decay_period_ms: u64,
    /// Unix ms when the next cycle is due (`null` before the first cycle).
    pub next_cycle_at_ms: Option<i64>,
    /// The hottest queries, hottest first (at most [`HOT_MAX`]; compact layout: only those
    /// above the threshold, which is what that layout indexes).
    pub hot: Vec<HotQuery>,
    /// `ghost:activations`.
    pub ghost_activations: Option<u64>,
    /// `metrics:latency:p95`, ms.
    pub lookup_p95_ms: Option<f64>,
    /// `metrics:latency:p99`, ms.
    pub lookup_p99_ms: Option<f64>,
    /// `metrics:queries:count`.
    pub queries: Option<u64>,
}

/// The `fleet` publication's `data`.
#[derive(Debug, Serialize)]
pub struct FleetView {
    /// Unix ms of the snapshot.
    pub at_ms: i64,
    /// Heartbeat period, ms (a row goes not-alive after three).
    pub heartbeat_ms: u64,
    /// `[bridge] fleet_period_ms`: a view older than a few of these is stale.
    pub period_ms: u64,
    /// Every instance in the fleet set.
    pub daemons: Vec<Instance>,
    /// Every stream of the deployment.
    pub streams: Vec<StreamView>,
    /// The publishing bridge.
    pub bridge: BridgeView,
    /// The reflex path's figures.
    pub reflex: ReflexView,
}

fn field<'a>(v: &'a Value, name: &str) -> Option<&'a Value> {
    match v {
        Value::Array(kv) => kv
            .chunks(2)
            .find(|p| p.first().and_then(string_of).as_deref() == Some(name))
            .and_then(|p| p.get(1)),
        _ => None,
    }
}

fn num(v: Option<&Value>) -> Option<u64> {
    match v? {
        Value::Integer(n) => u64::try_from(*n).ok(),
        other => string_of(other).and_then(|s| s.parse().ok()),
    }
}

/// Reads the fleet view.
pub async fn snapshot(
    client: &Client,
    keys: &Keys,
    config: &Config,
    bridge: BridgeView,
) -> Result<FleetView, RuntimeError> {
    let now = kitbash_runtime::clock::now_ms();
    let heartbeat_ms = config.fleet.heartbeat_ms;
    let members: Vec<(String, f64)> = client
        .zrange(keys.fleet(), 0, -1, None, false, None, true)
        .await?;
    // A few round trips whatever the fleet's size: the page marks a daemon dead from this
    // view, so the view must not lag behind the beats it reports.
    let listed: Vec<(DaemonKind, &str, &str, f64)> = members
        .iter()
        .filter_map(|(member, score)| {
            let (kind, instance) = member.split_once('/')?;
            Some((DaemonKind::parse(kind)?, kind, instance, *score))
        })
        .collect();
    let beats: Vec<Option<String>> = if listed.is_empty() {
        Vec::new()
    } else {
        get_each(
            client,
            listed
                .iter()
                .map(|(k, _, i, _)| keys.heartbeat(*k, i))
                .collect(),
        )
        .await?
    };
    let mut daemons = Vec::new();
    for ((_, kind, instance, score), beat) in listed.iter().zip(beats) {
        let beat: Option<Heartbeat> = beat.and_then(|b| serde_json::from_str(&b).ok());
        let ago = now - *score as i64;
        daemons.push(Instance {
            kind: (*kind).to_owned(),
            instance: (*instance).to_owned(),
            alive: beat.is_some() && ago <= 3 * heartbeat_ms as i64,
            ready: beat.as_ref().is_some_and(|b| b.ready),
            last_beat_ms_ago: ago,
            host: beat.as_ref().map(|b| b.host.clone()),
            admin: beat.as_ref().and_then(|b| b.admin.clone()),
            stats: beat.as_ref().map(|b| b.stats.clone()).unwrap_or_default(),
            serves: beat.map(|b| b.serves).unwrap_or_default(),
        });
    }
    let all = StreamName::all(config.feynman.partitions, config.entity.partitions);
    // Lengths, dead letters, existence and trim claims of every stream in one pipeline.
    let pipe = client.pipeline();
    for s in &all {
        let key = keys.stream(*s);
        let _: () = pipe.xlen(&key).await?;
        let _: () = pipe.xlen(keys.dead_letter(*s)).await?;
        let _: () = pipe.exists(&key).await?;
        let _: () = pipe.exists(keys.trim_claim(*s)).await?;
    }
    let counts: Vec<u64> = pipe.all().await?;
    let count = |i: usize, j: usize| counts.get(i * 4 + j).copied().unwrap_or(0);
    // XINFO of the streams that exist, in a second one (an error there is that stream's only).
    let present: Vec<usize> = (0..all.len()).filter(|&i| count(i, 2) > 0).collect();
    let infos: Vec<Result<Value, fred::error::Error>> = if present.is_empty() {
        Vec::new()
    } else {
        let pipe = client.pipeline();
        for &i in &present {
            let key = keys.stream(all[i]);
            let _: () = pipe.xinfo_stream(&key, false, None).await?;
            let _: () = pipe.xinfo_groups(&key).await?;
        }
        pipe.try_all::<Value>().await
    };
    let mut streams = Vec::new();
    for (i, s) in all.iter().enumerate() {
        let (length, dead_letters, claimed) = (count(i, 0), count(i, 1), count(i, 3) > 0);
        let mut entries_added = length;
        let mut groups = Vec::new();
        if let Some(at) = present.iter().position(|&p| p == i) {
            let reply = |j: usize| match infos.get(at * 2 + j) {
                Some(Ok(v)) => v.clone(),
                _ => Value::Null,
            };
            entries_added = num(field(&reply(0), "entries-added")).unwrap_or(length);
            if let Value::Array(list) = reply(1) {
                for g in &list {
                    groups.push(GroupView {
                        name: field(g, "name").and_then(string_of).unwrap_or_default(),
                        pending: num(field(g, "pending")).unwrap_or(0),
                        lag: num(field(g, "lag")),
                    });
                }
            }
        }
        let bound = config.stream_bound(*s).filter(|_| !claimed);
        streams.push(StreamView {
            bound,
            at_bound: bound.is_some_and(|b| length >= b),
            stream: s.logical(),
            length,
            entries_added,
            dead_letters,
            dead_letter_alarm: dead_letters > config.consumer.dead_letter_alarm,
            groups,
        });
    }
    let r = get_each(
        client,
        vec![
            keys.ghost_activations(),
            keys.metrics_latency_p95(),
            keys.metrics_latency_p99(),
            keys.metrics_queries_count(),
        ],
    )
    .await?;
    let at = |i: usize| r.get(i).cloned().flatten();
    let (layout, cycle, origin): (Option<String>, Option<u64>, Option<i64>) = {
        let pipe = client.pipeline();
        let _: () = pipe.get(keys.reflex_layout()).await?;
        let _: () = pipe.get(keys.decay_cycle()).await?;
        let _: () = pipe
            .hget(keys.decay_clock(), reflex::clock::ORIGIN_MS)
            .await?;
        pipe.all().await?
    };
    let cycle = cycle.unwrap_or(0);
    let compact = layout.as_deref().is_some_and(|l| l.starts_with("compact"));
    let hot = hot_queries(client, keys, compact, cycle, config.decay.factor).await?;
    let period = config.decay.period_ms;
    let reflex = ReflexView {
        layout,
        cycle,
        threshold: config.decay.threshold,
        decay_period_ms: period,
        next_cycle_at_ms: origin.map(|o| o + (cycle as i64 + 1) * period as i64),
        hot,
        ghost_activations: at(0).and_then(|s| s.parse().ok()),
        lookup_p95_ms: at(1).and_then(|s| s.parse().ok()),
        lookup_p99_ms: at(2).and_then(|s| s.parse().ok()),
        queries: at(3).and_then(|s| s.parse().ok()),
    };
    Ok(FleetView {
        reflex,
        at_ms: now,
        heartbeat_ms,
        period_ms: config.bridge.fleet_period_ms,
        daemons,
        streams,
        bridge,
    })
}

/// The hottest queries (at most [`HOT_MAX`]) with their texts, resonance now and ghosts.
async fn hot_queries(
    client: &Client,
    keys: &Keys,
    compact: bool,
    cycle: u64,
    factor: f64,
) -> Result<Vec<HotQuery>, RuntimeError> {
    let index = if compact {
        keys.reflex_hot()
    } else {
        keys.resonance_index()
    };
    let top: Vec<(String, f64)> = client.zrevrange(index, 0, HOT_MAX as i64 - 1, true).await?;
    if top.is_empty() {
        return Ok(Vec::new());
    }
    let ids: Vec<String> = top.iter().map(|(id, _)| id.clone()).collect();
    let texts: Vec<Option<String>> = if compact {
        let v: Value = client.hmget(keys.reflex_hot_text(), ids.clone()).await?;
        match v {
            Value::Array(a) => a.into_iter().map(|t| t.into_string()).collect(),
            other => vec![other.into_string()],
        }
    } else {
        let pipe = client.pipeline();
        for h in &ids {
            let _: () = pipe.hget(keys.cms(h), reflex::CMS_TEXT).await?;
        }
        pipe.all().await?
    };
    let ghosts = get_each(client, ids.iter().map(|h| keys.ghost(h)).collect()).await?;
    Ok(top
        .into_iter()
        .enumerate()
        .map(|(i, (id, score))| HotQuery {
            id,
            text: texts.get(i).cloned().flatten(),
            resonance: reflex::resonance_at(score, cycle, factor),
            ghost: ghosts
                .get(i)
                .cloned()
                .flatten()
                .map(|g| reflex::ghost_ids(&g))
                .unwrap_or_default(),
        })
        .collect())
}

/// `GET` of each key, in order, in one pipeline: what `MGET` would answer, but keys of
/// different cluster slots are fine (`MGET` of several slots is a `CROSSSLOT` error on a Redis
/// Cluster; fred sends each `GET` of a pipeline to its key's node).
async fn get_each(client: &Client, keys: Vec<String>) -> Result<Vec<Option<String>>, RuntimeError> {
    let pipe = client.pipeline();
    let mut any = false;
    for key in keys {
        let _: () = pipe.get(key).await?;
        any = true;
    }
    if !any {
        return Ok(Vec::new());
    }
    // One reply per command, whatever their number (`all` of a single command converts
    // that command's reply alone).
    let mut out = Vec::new();
    for r in pipe.try_all::<Option<String>>().await {
        out.push(r?);
    }
    Ok(out)
}

/// Publishes the fleet view once.
pub async fn publish_fleet(
    hub: &Hub,
    client: &Client,
    keys: &Keys,
    config: &Config,
    bridge: BridgeView,
) -> Result<(), RuntimeError> {
    let view = snapshot(client, keys, config, bridge).await?;
    let data = serde_json::to_string(&view).map_err(|e| RuntimeError::Reply {
        command: "fleet",
        detail: e.to_string(),
    })?;
    hub.publish_latest(&Channel::Fleet, &data);
    Ok(())
}

/// Reads the hat and the reflex version; publishes on `reflex:hat` when either changed since
/// `last`. Returns what it read.
pub async fn publish_hat(
    hub: &Hub,
    client: &Client,
    keys: &Keys,
    last: Option<(Option<String>, u64)>,
) -> Result<(Option<String>, u64), RuntimeError> {
    let (hat, version): (Option<String>, Option<u64>) =
        get_each(client, vec![keys.hat_current(), keys.reflex_version()])
            .await
            .map(|v| {
                let mut it = v.into_iter();
                let hat = it.next().flatten();
                let ver = it.next().flatten().and_then(|s| s.parse().ok());
                (hat, ver)
            })?;
    let now = (hat, version.unwrap_or(0));
    if last.as_ref() != Some(&now) {
        hub.publish_latest(&Channel::Hat, &bridge::hat_data(now.0.as_deref(), now.1));
    }
    Ok(now)
}
