//! feynman's partition logic: a rolling window per symbol, the physics vector per batch, and
//! the outputs of each batch (see its private `effects` function). The runtime's partitioned component
//! ([`kitbash_runtime::partition`]) owns everything else — leases, ordered reads, routing and
//! `mid` checks, dead letters, the fenced commit, snapshots and trimming.
//!
//! Within a batch, a symbol's ticks all go into its window and one vector is computed and
//! published for it — per tick at low rates, coalesced at high rates.
//!
//! Memory follows the data: a window holds what it was given (up to `feynman.window` ticks), a
//! symbol silent for `feynman.idle_symbol_ms` of stream time is forgotten, and a partition keeps
//! at most `feynman.max_symbols_per_partition` symbols. Both rules look only at entry ids (stream
//! time), so recovery, which replays the same entries, decides the same way.

use std::collections::{BTreeMap, HashMap};

use fred::prelude::*;
use fred::types::Value;
use kitbash_runtime::config::FeynmanConfig;
use kitbash_runtime::entries::{self, parse_id};
use kitbash_runtime::partition::commit::{self, Commit, TEMPLATE};
use kitbash_runtime::partition::{Effects, Entry, PartitionLogic, PartitionSpec, Transient};
use kitbash_schema::messages::{PhysicsRecord, StateUpdate, StateUpdateData, Tick};
use kitbash_schema::{Envelope, Keys, StreamName};
use serde::{Deserialize, Serialize};

use crate::physics::TickWindow;

/// What feynman keeps per symbol (one item of the partition's snapshot).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SymbolState {
    /// The rolling window.
    pub window: TickWindow,
    /// Ticks applied since the symbol (re)appeared (the exactly-once check in tests).
    pub count: u64,
    /// Volume over the symbol's life in this partition.
    pub volume: f64,
    /// Last price.
    pub price: f64,
    /// Last exchange time, Unix s.
    pub ts: f64,
    /// Stream time (entry id ms) of the symbol's last tick: the idle rule's clock.
    #[serde(default)]
    pub last_ms: u64,
}

/// One partition's symbols.
#[derive(Debug, Default)]
pub struct PartitionState {
    /// By symbol.
    pub symbols: HashMap<String, SymbolState>,
    /// The partition number.
    pub p: u32,
    /// Stream time of the next idle sweep (sweeps run at most once per `idle_symbol_ms / 8`).
    next_sweep_ms: u64,
    /// Stream time of the latest entry applied (on restore: the latest `last_ms` restored).
    /// A symbol idle at this time is not part of the state (see [`PartitionState::is_live`]).
    now_ms: u64,
}

impl PartitionState {
    /// Whether `s` still counts at stream time `now_ms`: it ticked within `idle_ms` (or the
    /// idle rule is off). An idle symbol is only memory waiting for a sweep — it starts a fresh
    /// window on its next tick, takes no slot under the cap and is not snapshotted — so when
    /// sweeps run (per batch live, per entry on replay, with a clock that is not restored)
    /// changes nothing anyone can observe.
    fn is_live(s: &SymbolState, idle_ms: u64, now_ms: u64) -> bool {
        idle_ms == 0 || s.last_ms.saturating_add(idle_ms) >= now_ms
    }
}

/// The physics writer's [`PartitionLogic`].
#[derive(Clone, Debug)]
pub struct Physics {
    /// `[feynman]`.
    pub cfg: FeynmanConfig,
    /// Key builder.
    pub keys: Keys,
    /// Whether Redis is a cluster (outputs are then written by guard scripts).
    pub clustered: bool,
    physics_key: String,
    channel: String,
}

impl Physics {
    /// The logic for `cfg`, writing with `keys`.
    pub fn new(cfg: FeynmanConfig, keys: Keys, clustered: bool) -> Self {
        Self {
            physics_key: keys.stream(StreamName::Physics),
            channel: keys.channel_state_update(),
            cfg,
            keys,
            clustered,
        }
    }

    /// The partitioned streams feynman works on.
    pub fn spec(&self) -> PartitionSpec {
        PartitionSpec {
            stream: StreamName::Ticks,
            partitions: self.cfg.partitions,
            lease_ms: self.cfg.lease_ms,
            snapshot_ms: self.cfg.snapshot_ms,
            snapshot_max_items: self.cfg.snapshot_max_items,
            snapshot_item_ms: self.cfg.snapshot_item_ms,
            stream_max: self.cfg.tick_stream_max,
            group: "feynman",
        }
    }

    /// Applies one tick at stream time `ms`. Every decision that changes what a window holds
    /// is taken here, per entry, so a batch split and a replay entry by entry decide alike:
    /// a symbol idle for longer than `idle_symbol_ms` starts a fresh window (whether or not a
    /// sweep already dropped it), and a new symbol past `max_symbols_per_partition` makes room
    /// by dropping the least recently ticked. Dropped symbols are added to `gone`.
    fn push(&self, state: &mut PartitionState, tick: &Tick, ms: u64, gone: &mut Vec<String>) {
        let idle = self.cfg.idle_symbol_ms;
        state.now_ms = state.now_ms.max(ms);
        if state
            .symbols
            .get(&tick.symbol)
            .is_some_and(|s| !PartitionState::is_live(s, idle, ms))
        {
            state.symbols.remove(&tick.symbol);
        }
        if !state.symbols.contains_key(&tick.symbol) {
            self.make_room(state, ms, gone);
        }
        let s = state
            .symbols
            .entry(tick.symbol.clone())
            .or_insert_with(|| SymbolState {
                window: TickWindow::new(self.cfg.window),
                count: 0,
                volume: 0.0,
                price: tick.price,
                ts: tick.ts,
                last_ms: ms,
            });
        // Validation happened before; a window refusal would be a bug, not bad input.
        if s.window.push(tick).is_ok() {
            s.count += 1;
            s.volume += tick.size;
            s.price = tick.price;
            s.ts = tick.ts;
            s.last_ms = s.last_ms.max(ms);
        }
    }

    /// Frees the memory of symbols idle for longer than `idle_symbol_ms` (at most once per
    /// `idle / 8` of stream time). Changes no result: an idle symbol is already out of the
    /// state ([`PartitionState::is_live`]) — it restarts on its next tick, [`Physics::make_room`]
    /// drops it before counting against the cap, and it is not encoded — so when sweeps run
    /// does not matter. Returns what it dropped.
    fn sweep(&self, state: &mut PartitionState, now_ms: u64) -> Vec<String> {
        let mut gone = Vec::new();
        let idle = self.cfg.idle_symbol_ms;
        if idle > 0 && now_ms >= state.next_sweep_ms {
            state.next_sweep_ms = now_ms + (idle / 8).max(1);
            state.symbols.retain(|sym, s| {
                let keep = PartitionState::is_live(s, idle, now_ms);
                if !keep {
                    gone.push(sym.clone());
                }
                keep
            });
        }
        gone
    }

    /// Before a new symbol is added at stream time `now_ms`: at the cap, first drops the idle
    /// symbols (whether a sweep got to them yet depends on batch boundaries, so they must not
    /// count), then, if still at the cap, the least recently ticked down to 95 % of it (so the
    /// sort is not paid on every new symbol). The outcome depends on the live symbols only.
    fn make_room(&self, state: &mut PartitionState, now_ms: u64, gone: &mut Vec<String>) {
        let cap = self.cfg.max_symbols_per_partition;
        let idle = self.cfg.idle_symbol_ms;
        if cap > 0 && state.symbols.len() >= cap {
            state.symbols.retain(|sym, s| {
                let keep = PartitionState::is_live(s, idle, now_ms);
                if !keep {
                    gone.push(sym.clone());
                }
                keep
            });
        }
        if cap > 0 && state.symbols.len() >= cap {
            // Room for the new one: keep 95 % of the cap, less one.
            let keep = (cap - cap / 20).saturating_sub(1);
            let mut by_age: Vec<(u64, String)> = state
                .symbols
                .iter()
                .map(|(k, s)| (s.last_ms, k.clone()))
                .collect();
            by_age.sort_unstable();
            for (_, sym) in by_age.into_iter().take(state.symbols.len() - keep) {
                state.symbols.remove(&sym);
                gone.push(sym);
            }
        }
    }
}

impl PartitionLogic for Physics {
    type Message = Tick;
    type State = PartitionState;

    fn route_key<'a>(&self, tick: &'a Tick) -> &'a str {
        &tick.symbol
    }

    fn empty(&self, p: u32) -> PartitionState {
        PartitionState {
            p,
            ..PartitionState::default()
        }
    }

    fn restore_item(
        &self,
        state: &mut PartitionState,
        key: &str,
        bytes: &[u8],
    ) -> Result<(), String> {
        let s: SymbolState = rmp_serde::from_slice(bytes).map_err(|e| e.to_string())?;
        state.now_ms = state.now_ms.max(s.last_ms);
        state.symbols.insert(key.to_owned(), s);
        Ok(())
    }

    fn replay(&self, state: &mut PartitionState, entry: &Entry<Tick>) {
        let ms = parse_id(&entry.id).0;
        let mut gone = Vec::new();
        self.push(state, &entry.message, ms, &mut gone);
        self.sweep(state, ms);
    }

    async fn apply(
        &self,
        state: &mut PartitionState,
        batch: &[Entry<Tick>],
        out: &mut Effects,
    ) -> Result<Vec<Result<(), String>>, Transient> {
        // Pure computation: nothing here can fail transiently (the commit is the runtime's).
        let mut touched: BTreeMap<&str, &str> = BTreeMap::new();
        let mut now_ms = 0;
        let mut gone = Vec::new();
        for e in batch {
            now_ms = parse_id(&e.id).0;
            self.push(state, &e.message, now_ms, &mut gone);
            touched.insert(&e.message.symbol, &e.id);
        }
        let mut results = vec![Ok(()); batch.len()];
        for (symbol, tick_id) in &touched {
            let Some(s) = state.symbols.get(*symbol) else {
                continue;
            };
            let source = format!("{}/{tick_id}", StreamName::Ticks(state.p).logical());
            if let Err(why) = effects(self, &mut out.commit, symbol, s, &source) {
                // Encoding our own record cannot fail with valid ticks; say which, keep going.
                for (i, e) in batch.iter().enumerate() {
                    if e.message.symbol == *symbol {
                        results[i] = Err(format!("cannot encode the physics record: {why}"));
                    }
                }
            }
        }
        out.dirty.extend(gone);
        out.dirty.extend(self.sweep(state, now_ms));
        Ok(results)
    }

    fn encode_item(&self, state: &PartitionState, key: &str) -> Option<Vec<u8>> {
        state
            .symbols
            .get(key)
            .filter(|s| PartitionState::is_live(s, self.cfg.idle_symbol_ms, state.now_ms))
            .and_then(|s| rmp_serde::to_vec_named(s).ok())
    }
}

/// Whether every tick partition's checkpoint has reached the end of its stream (tests,
/// benchmarks and operators waiting for a backlog to drain).
pub async fn caught_up(
    client: &Client,
    keys: &Keys,
    partitions: u32,
) -> Result<bool, kitbash_runtime::RuntimeError> {
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

/// The symbols as snapshotted in each partition's state hash, with their tick counts (tests:
/// after the instances stopped, every window has been written).
pub async fn snapshotted_counts(
    client: &Client,
    keys: &Keys,
    partitions: u32,
) -> Result<BTreeMap<String, u64>, kitbash_runtime::RuntimeError> {
    let mut out = BTreeMap::new();
    for p in 0..partitions {
        let m: HashMap<String, Vec<u8>> = client
            .hgetall(keys.partition_state(StreamName::Ticks(p)))
            .await?;
        for (sym, v) in m {
            let Some((_, b)) = kitbash_runtime::partition::snapshot::decode_stored(&v) else {
                continue;
            };
            if let Ok(s) = rmp_serde::from_slice::<SymbolState>(b) {
                out.insert(sym, s.count);
            }
        }
    }
    Ok(out)
}

/// Adds one symbol's outputs to the commit: `physics:state`, `market:snapshot` (+ TTL), a
/// physics-stream entry, and a `state_update` message carrying that entry's id.
fn effects(
    logic: &Physics,
    c: &mut Commit,
    symbol: &str,
    s: &SymbolState,
    source: &str,
) -> Result<(), String> {
    let (physics_key, channel) = (logic.physics_key.as_str(), logic.channel.as_str());
    let keys = &logic.keys;
    let vector = s.window.vector();
    let state_key = keys.physics_state(symbol);
    let snap_key = keys.market_snapshot(symbol);
    let ttl = kitbash_schema::ttl::MARKET_SNAPSHOT.secs().unwrap_or(60) as i64;
    let fields: [(&str, String); 3] = [
        ("price", s.price.to_string()),
        ("volume", s.volume.to_string()),
        ("timestamp", s.ts.to_string()),
    ];
    if logic.clustered {
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
    let env = Envelope::msgpack(&record).map_err(|e| e.to_string())?;
    let mut words: Vec<Value> = vec!["XADD".into(), physics_key.into(), "*".into()];
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
