//! One partition's worker: restore the windows from the checkpoint (snapshot + replay of the
//! tail), then read ticks in order with `XREAD`, apply them, and commit each batch with its
//! effects in one atomic step (see [`crate::commit`]).
//!
//! Only the lease owner runs a partition's worker, so ticks of a symbol are applied by one
//! process, in stream order. Within a batch, a symbol's ticks all go into its window and one
//! vector is computed and published for it — per tick at low rates, coalesced at high rates.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use fred::prelude::*;
use fred::types::Value;
use kitbash_runtime::config::Config;
use kitbash_runtime::entries::{self, StreamEntry};
use kitbash_runtime::metrics::Metrics;
use kitbash_runtime::redis::command_for_key;
use kitbash_schema::messages::{PhysicsRecord, StateUpdate, StateUpdateData, Tick};
use kitbash_schema::wire::DeadLetter;
use kitbash_schema::{Envelope, Keys, StreamName};
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use crate::commit::{self, Advance, Commit, CommitResult, TEMPLATE};
use crate::physics::TickWindow;

/// What the worker keeps per symbol (checkpointed in the snapshot).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SymbolState {
    /// The rolling window.
    pub window: TickWindow,
    /// Ticks applied since the symbol first appeared (the exactly-once check in tests).
    pub count: u64,
    /// Volume over the symbol's life in this partition.
    pub volume: f64,
    /// Last price.
    pub price: f64,
    /// Last exchange time, Unix s.
    pub ts: f64,
}

/// How many recent producer message ids (`mid`) a partition remembers to drop a re-sent tick.
pub const RECENT_MIDS: usize = 4096;

/// The windows of one partition, as snapshotted.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct PartitionState {
    /// By symbol.
    pub symbols: BTreeMap<String, SymbolState>,
    /// FNV-1a hashes of the last [`RECENT_MIDS`] producer message ids, oldest first: a producer
    /// that retries an `XADD` whose outcome it did not learn re-sends the same `mid`, and the
    /// second copy is skipped. (Older snapshots without it decode with an empty memory.)
    #[serde(default)]
    pub recent_mids: std::collections::VecDeque<u64>,
    /// Lookup twin of `recent_mids`, rebuilt after a restore.
    #[serde(skip)]
    seen: std::collections::HashSet<u64>,
}

/// Errors that end a partition worker (it is restarted by the lease manager if still owned).
#[derive(Debug, thiserror::Error)]
pub enum PartitionError {
    /// Redis failed.
    #[error("redis: {0}")]
    Redis(#[from] fred::error::Error),
    /// A reply or the checkpoint had an unexpected shape.
    #[error("runtime: {0}")]
    Runtime(#[from] kitbash_runtime::RuntimeError),
    /// The checkpoint snapshot did not decode.
    #[error("checkpoint snapshot: {0}")]
    Snapshot(String),
    /// Another instance committed to this partition: ownership moved.
    #[error("partition {0} was committed by another instance (checkpoint at {1})")]
    Fenced(u32, String),
}

/// Everything a worker shares with the daemon.
#[derive(Clone, Debug)]
pub struct Shared {
    /// Configuration.
    pub config: Config,
    /// Key builder.
    pub keys: Keys,
    /// Command client.
    pub client: Client,
    /// Instance name (checkpoint owner, dead-letter consumer).
    pub instance: String,
    /// Metric registry.
    pub metrics: Metrics,
}

fn mid_hash(mid: &str) -> u64 {
    mid.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

impl PartitionState {
    /// Remembers `mid`; false when it was seen recently (the tick is a re-sent duplicate).
    fn first_sighting(&mut self, mid: Option<&str>) -> bool {
        let Some(mid) = mid else { return true };
        if self.seen.len() != self.recent_mids.len() {
            self.seen = self.recent_mids.iter().copied().collect();
        }
        let h = mid_hash(mid);
        if !self.seen.insert(h) {
            return false;
        }
        self.recent_mids.push_back(h);
        if self.recent_mids.len() > RECENT_MIDS
            && let Some(old) = self.recent_mids.pop_front()
        {
            self.seen.remove(&old);
        }
        true
    }

    fn apply(&mut self, tick: &Tick, window: usize) {
        let s = self
            .symbols
            .entry(tick.symbol.clone())
            .or_insert_with(|| SymbolState {
                window: TickWindow::new(window),
                count: 0,
                volume: 0.0,
                price: tick.price,
                ts: tick.ts,
            });
        // Validation happened before; a window refusal would be a bug, not bad input.
        if s.window.push(tick).is_ok() {
            s.count += 1;
            s.volume += tick.size;
            s.price = tick.price;
            s.ts = tick.ts;
        }
    }
}

/// The tick and the producer's message id.
fn decode_tick(e: &StreamEntry) -> Result<(Tick, Option<String>), String> {
    if e.fields.is_none() {
        return Err("entry deleted".into());
    }
    Envelope::from_fields(e.pairs())
        .and_then(|env| env.decode::<Tick>().map(|t| (t, env.mid)))
        .map_err(|e| e.to_string())
}

/// Loads the checkpoint: (last_id, snap_id, state).
async fn load(shared: &Shared, p: u32) -> Result<(String, String, PartitionState), PartitionError> {
    let key = shared.keys.partition_checkpoint(p);
    let m: BTreeMap<String, Value> = shared.client.hgetall(&key).await?;
    let s = |f: &str| m.get(f).and_then(entries::string_of).unwrap_or_default();
    let last = s(Keys::CHECKPOINT_LAST_ID);
    let snap_id = s(Keys::CHECKPOINT_SNAP_ID);
    let state = match m.get(Keys::CHECKPOINT_SNAP) {
        Some(Value::Bytes(b)) if !b.is_empty() => decode_snapshot(b)?,
        Some(Value::String(b)) if !b.is_empty() => decode_snapshot(b.as_bytes())?,
        _ => PartitionState::default(),
    };
    Ok((last, snap_id, state))
}

/// Replays `(snap_id, last_id]` into `state` without effects: they were committed already.
async fn replay(
    shared: &Shared,
    p: u32,
    snap_id: &str,
    last_id: &str,
    state: &mut PartitionState,
) -> Result<u64, PartitionError> {
    if last_id.is_empty() || snap_id == last_id {
        return Ok(0);
    }
    let key = shared.keys.stream(StreamName::Ticks(p));
    let mut from = if snap_id.is_empty() {
        "-".to_owned()
    } else {
        format!("({snap_id}")
    };
    let mut n = 0;
    loop {
        let v: Value = shared
            .client
            .xrange(&key, from.as_str(), last_id, Some(1000))
            .await?;
        let batch = entries::parse_entries("XRANGE", &v)?;
        let Some(last) = batch.last() else { break };
        from = format!("({}", last.id);
        for e in &batch {
            if let Ok((t, mid)) = decode_tick(e)
                && state.first_sighting(mid.as_deref())
            {
                state.apply(&t, shared.config.feynman.window);
                n += 1;
            }
        }
        if batch.len() < 1000 {
            break;
        }
    }
    Ok(n)
}

/// Runs partition `p` until `cancel`; commits a final snapshot on the way out.
pub async fn run(
    shared: Arc<Shared>,
    p: u32,
    reader: Client,
    cancel: CancellationToken,
) -> Result<(), PartitionError> {
    let cfg = &shared.config;
    let keys = &shared.keys;
    let stream = StreamName::Ticks(p);
    let stream_key = keys.stream(stream);
    let dead_key = keys.dead_letter(stream);
    let checkpoint = keys.partition_checkpoint(p);
    let physics_key = keys.stream(StreamName::Physics);
    let channel = keys.channel_state_update();
    let p_label = p.to_string();

    let (mut last_id, snap_id, mut state) = load(&shared, p).await?;
    let replayed = replay(&shared, p, &snap_id, &last_id, &mut state).await?;
    tracing::info!(partition = p, last_id = %last_id, snap_id = %snap_id, replayed, symbols = state.symbols.len(),
        "partition acquired; windows restored");
    let mut snapshot_due = Instant::now() + Duration::from_millis(cfg.feynman.snapshot_ms);
    let mut snapshot_stale = false;

    while !cancel.is_cancelled() {
        let from = if last_id.is_empty() {
            "0-0".to_owned()
        } else {
            last_id.clone()
        };
        let args: Vec<Value> = vec![
            "COUNT".into(),
            (cfg.consumer.batch as i64).into(),
            "BLOCK".into(),
            (cfg.consumer.block_ms as i64).into(),
            "STREAMS".into(),
            stream_key.as_str().into(),
            from.as_str().into(),
        ];
        let opts = fred::types::config::Options {
            timeout: Some(Duration::from_millis(cfg.consumer.block_ms + 5_000)),
            ..Default::default()
        };
        let cmd = command_for_key("XREAD", &stream_key, true);
        let reply: Value = reader.with_options(&opts).custom(cmd, args).await?;
        let batch = entries::parse_xread(&reply)?;
        let started = Instant::now();
        let Some(batch_last) = batch.last().map(|e| e.id.clone()) else {
            if snapshot_stale && Instant::now() >= snapshot_due {
                // Idle: write the pending snapshot so a takeover replays nothing.
                commit_snapshot(&shared, p, &checkpoint, &last_id, &state).await?;
                snapshot_stale = false;
            }
            continue;
        };

        let mut c = Commit::default();
        let mut touched: BTreeMap<String, String> = BTreeMap::new();
        let mut dead = 0u64;
        let mut duplicates = 0u64;
        for e in &batch {
            match decode_tick(e) {
                Ok((t, mid)) => {
                    if state.first_sighting(mid.as_deref()) {
                        state.apply(&t, cfg.feynman.window);
                        touched.insert(t.symbol.clone(), e.id.clone());
                    } else {
                        duplicates += 1;
                    }
                }
                Err(reason) => {
                    dead += 1;
                    tracing::warn!(partition = p, id = %e.id, %reason, "tick rejected to the dead-letter stream");
                    let letter = DeadLetter {
                        reason,
                        stream: stream.logical(),
                        id: e.id.clone(),
                        group: "feynman".into(),
                        consumer: shared.instance.clone(),
                        deliveries: 1,
                        at_ms: kitbash_runtime::heartbeat::now_ms(),
                        fields: e.pairs().map(|(k, v)| (k.to_vec(), v.to_vec())).collect(),
                    };
                    let mut words: Vec<Value> = vec![
                        "XADD".into(),
                        dead_key.as_str().into(),
                        "MAXLEN".into(),
                        "~".into(),
                        (cfg.consumer.dead_letter_max as i64).into(),
                        "*".into(),
                    ];
                    for (k, v) in letter.to_fields() {
                        words.push(Value::Bytes(k.into()));
                        words.push(Value::Bytes(v.into()));
                    }
                    c.push(&dead_key, words);
                }
            }
        }
        for (symbol, tick_id) in &touched {
            let Some(s) = state.symbols.get(symbol) else {
                continue;
            };
            effects(
                &shared,
                &mut c,
                symbol,
                s,
                &format!("{}/{tick_id}", stream.logical()),
                &physics_key,
                &channel,
            )?;
        }
        let snapshot = if Instant::now() >= snapshot_due {
            snapshot_due = Instant::now() + Duration::from_millis(cfg.feynman.snapshot_ms);
            snapshot_stale = false;
            Some(encode(&state)?)
        } else {
            snapshot_stale = true;
            None
        };
        commit_or_fence(
            &shared,
            p,
            &checkpoint,
            Advance {
                expected: &last_id,
                new_last: &batch_last,
                snapshot: snapshot.as_deref().map(|s| (s, batch_last.as_str())),
                consumed: batch.len() as u64,
            },
            c,
        )
        .await?;
        last_id = batch_last;
        let logical = stream.logical();
        let batch_labels = [("stream", logical.as_str()), ("group", "feynman")];
        shared
            .metrics
            .observe_batch(&batch_labels, started, batch.len());
        let labels = [("partition", p_label.as_str())];
        shared.metrics.inc(
            "kitbash_feynman_ticks_total",
            "Ticks applied to windows.",
            &labels,
            (batch.len() as u64) - dead - duplicates,
        );
        if duplicates > 0 {
            tracing::info!(
                partition = p,
                duplicates,
                "dropped re-sent ticks (same producer mid)"
            );
            shared.metrics.inc(
                "kitbash_feynman_duplicates_total",
                "Re-sent ticks dropped by their producer message id.",
                &labels,
                duplicates,
            );
        }
        shared.metrics.inc(
            "kitbash_feynman_vectors_total",
            "Physics vectors written.",
            &labels,
            touched.len() as u64,
        );
        if dead > 0 {
            shared.metrics.inc(
                "kitbash_dead_letters_total",
                "Entries moved to a dead-letter stream.",
                &[("stream", &stream.logical())],
                dead,
            );
        }
    }
    // Leave a fresh snapshot for the next owner.
    if snapshot_stale {
        commit_snapshot(&shared, p, &checkpoint, &last_id, &state).await?;
    }
    tracing::info!(partition = p, last_id = %last_id, "partition released");
    Ok(())
}

/// Whether every tick partition's checkpoint has reached the end of its stream (tests,
/// benchmarks and operators waiting for a backlog to drain).
pub async fn caught_up(
    client: &Client,
    keys: &Keys,
    partitions: u32,
) -> Result<bool, PartitionError> {
    for p in 0..partitions {
        let last: Value = client
            .xrevrange(keys.stream(StreamName::Ticks(p)), "+", "-", Some(1))
            .await?;
        let Some(last) = entries::parse_entries("XREVRANGE", &last)?
            .into_iter()
            .next()
        else {
            continue;
        };
        let cp: Option<String> = client
            .hget(keys.partition_checkpoint(p), Keys::CHECKPOINT_LAST_ID)
            .await?;
        if cp.as_deref() != Some(last.id.as_str()) {
            return Ok(false);
        }
    }
    Ok(true)
}

/// Decodes a checkpoint snapshot (MessagePack of [`PartitionState`]).
pub fn decode_snapshot(b: &[u8]) -> Result<PartitionState, PartitionError> {
    rmp_serde::from_slice(b).map_err(|e| PartitionError::Snapshot(e.to_string()))
}

fn encode(state: &PartitionState) -> Result<Vec<u8>, PartitionError> {
    rmp_serde::to_vec_named(state).map_err(|e| PartitionError::Snapshot(e.to_string()))
}

/// A snapshot-only commit at the current position (idle partition, or on the way out).
async fn commit_snapshot(
    shared: &Shared,
    p: u32,
    checkpoint: &str,
    last_id: &str,
    state: &PartitionState,
) -> Result<(), PartitionError> {
    let snap = encode(state)?;
    let advance = Advance {
        expected: last_id,
        new_last: last_id,
        snapshot: Some((&snap, last_id)),
        consumed: 0,
    };
    commit_or_fence(shared, p, checkpoint, advance, Commit::default()).await
}

async fn commit_or_fence(
    shared: &Shared,
    p: u32,
    checkpoint: &str,
    advance: Advance<'_>,
    c: Commit,
) -> Result<(), PartitionError> {
    let result = if shared.client.is_clustered() {
        commit::run_split(&shared.client, checkpoint, &shared.instance, advance, c).await?
    } else {
        commit::run(&shared.client, checkpoint, &shared.instance, advance, c).await?
    };
    match result {
        CommitResult::Applied => Ok(()),
        CommitResult::Conflict(cur) => {
            shared.metrics.inc(
                "kitbash_feynman_fenced_total",
                "Commits refused because another instance moved the checkpoint.",
                &[],
                1,
            );
            Err(PartitionError::Fenced(p, cur))
        }
    }
}

/// Adds one symbol's outputs to the commit: `physics:state`, `market:snapshot` (+ TTL), a
/// physics-stream entry, and a `state_update` message carrying that entry's id.
fn effects(
    shared: &Shared,
    c: &mut Commit,
    symbol: &str,
    s: &SymbolState,
    source: &str,
    physics_key: &str,
    channel: &str,
) -> Result<(), PartitionError> {
    let keys = &shared.keys;
    let vector = s.window.vector();
    let state_key = keys.physics_state(symbol);
    let snap_key = keys.market_snapshot(symbol);
    let ttl = kitbash_schema::ttl::MARKET_SNAPSHOT.secs().unwrap_or(60) as i64;
    let fields: [(&str, String); 3] = [
        ("price", s.price.to_string()),
        ("volume", s.volume.to_string()),
        ("timestamp", s.ts.to_string()),
    ];
    if shared.client.is_clustered() {
        // Outputs are written before the fenced checkpoint here (see commit::run_split): guard
        // the state keys so a fenced instance finishing late cannot roll them back.
        let tick_id = source.rsplit('/').next().unwrap_or(source);
        let guard_key = keys.physics_state_source(symbol);
        c.push(
            &state_key,
            vec![
                "EVAL".into(),
                commit::GUARDED_SET.as_str().into(),
                2.into(),
                state_key.as_str().into(),
                guard_key.as_str().into(),
                tick_id.into(),
                Value::Bytes(vector.to_json().into()),
            ],
        );
        let mut words: Vec<Value> = vec![
            "EVAL".into(),
            commit::GUARDED_HSET.as_str().into(),
            1.into(),
            snap_key.as_str().into(),
            tick_id.into(),
            ttl.into(),
        ];
        for (f, v) in fields {
            words.push(f.into());
            words.push(v.into());
        }
        c.push(&snap_key, words);
    } else {
        c.push(
            &state_key,
            vec![
                "SET".into(),
                state_key.as_str().into(),
                Value::Bytes(vector.to_json().into()),
            ],
        );
        let mut words: Vec<Value> = vec!["HSET".into(), snap_key.as_str().into()];
        for (f, v) in fields {
            words.push(f.into());
            words.push(v.into());
        }
        c.push(&snap_key, words);
        c.push(
            &snap_key,
            vec!["EXPIRE".into(), snap_key.as_str().into(), ttl.into()],
        );
    }

    let record = PhysicsRecord {
        symbol: symbol.to_owned(),
        ts: s.ts,
        price: s.price,
        vector: vector.clone(),
        source: source.to_owned(),
    };
    let env = Envelope::msgpack(&record).map_err(|e| PartitionError::Snapshot(e.to_string()))?;
    let mut words: Vec<Value> = vec![
        "XADD".into(),
        physics_key.into(),
        "MAXLEN".into(),
        "~".into(),
        (shared.config.feynman.physics_stream_max as i64).into(),
        "*".into(),
    ];
    for (k, v) in env.to_fields() {
        words.push(k.into());
        words.push(Value::Bytes(v.into()));
    }
    c.push(physics_key, words);

    let update = StateUpdate {
        event: StateUpdate::PHYSICS_UPDATE.into(),
        symbol: symbol.to_owned(),
        timestamp: kitbash_schema::time::rfc3339_utc((s.ts * 1000.0) as i64),
        data: StateUpdateData {
            alpha: vector.alpha_coefficient,
            regime: vector.regime,
            price: Some(s.price),
            mass: Some(vector.mass),
            momentum: Some(vector.momentum),
            friction: Some(vector.friction),
            entropy: Some(vector.entropy),
            nash_dist: Some(vector.nash_dist),
            // Filled in by the script with the id of the physics entry just added.
            stream_id: Some(commit::ID_PLACEHOLDER.into()),
            source: source.rsplit_once('/').map(|(_, id)| id.to_owned()),
        },
    };
    let mut json = vec![TEMPLATE];
    json.extend(update.to_json());
    c.push_keyless(vec![
        "PUBLISH".into(),
        channel.into(),
        Value::Bytes(json.into()),
    ]);
    Ok(())
}
