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

use bytes::{BufMut, BytesMut};
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
    /// The batch (`PartitionState::batch_seq`) that last touched the symbol: `apply` lists each
    /// symbol once per batch without a map. Not part of the state (not snapshotted).
    #[serde(skip)]
    batch: u64,
    /// Index in that batch of the symbol's last tick (the vector's `source`).
    #[serde(skip)]
    last_in_batch: usize,
}

/// One partition's symbols.
#[derive(Debug, Default)]
pub struct PartitionState {
    /// By symbol.
    pub symbols: HashMap<String, SymbolState, foldhash::fast::RandomState>,
    /// The partition number.
    pub p: u32,
    /// Stream time of the next idle sweep (sweeps run at most once per `idle_symbol_ms / 8`).
    next_sweep_ms: u64,
    /// Stream time of the latest entry applied (on restore: the latest `last_ms` restored).
    /// A symbol idle at this time is not part of the state (see [`PartitionState::is_live`]).
    now_ms: u64,
    /// Batches applied so far (the marks of [`SymbolState`]).
    batch_seq: u64,
    /// Buffers reused from batch to batch (the commit's words, keys, the records being encoded).
    scratch: Scratch,
}

/// Bytes reserved at a time for a batch's command words (each word is a slice of it).
const WORDS_CHUNK: usize = 64 * 1024;

/// What `apply` reuses from batch to batch so that a tick costs no allocation and a vector a
/// fixed few (the `Vec`s the runtime's [`Commit`] takes, its key strings, the timestamp).
#[derive(Debug, Default)]
struct Scratch {
    /// The words of the commit being built: each word is written here and split off as a
    /// [`bytes::Bytes`] slice, so a vector's ~20 words share a few 64 KiB chunks instead of
    /// taking an allocation each. A chunk is freed when the commit that holds its words is.
    words: BytesMut,
    /// `physics:state:{SYM}` of the symbol being encoded.
    state_key: String,
    /// `market:snapshot:{SYM}` of the symbol being encoded.
    snap_key: String,
    /// The physics-stream record, its strings reused.
    record: Option<PhysicsRecord>,
    /// The `state_update`, its strings reused.
    update: Option<StateUpdate>,
    /// Batch indices of the first tick of each symbol of the batch.
    touched: Vec<usize>,
    /// `ticks:{p}` (the sources' prefix).
    source_prefix: String,
    /// Where JSON and MessagePack are serialised before they are copied into `words` in one
    /// piece (serialisers write many small pieces; a `Vec` takes them cheaper than `BytesMut`).
    encoded: Vec<u8>,
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
    /// The words every vector's commands share, built once.
    words: StaticWords,
}

/// Words built once per logic and shared (a [`Value`] clone of bytes is a reference count).
#[derive(Clone, Debug)]
struct StaticWords {
    /// The physics stream key.
    physics_key: Value,
    /// The `state_update` channel.
    channel: Value,
    /// `physics:state:{SYM}` around the symbol.
    state_key: KeyTemplate,
    /// `market:snapshot:{SYM}` around the symbol.
    snap_key: KeyTemplate,
    /// Cluster mode: the guard scripts' source.
    guarded_set: Value,
    guarded_hset: Value,
    /// The physics entry's envelope fields in XADD order ([`Envelope::to_fields`] of a
    /// physics record): name and value, `None` where the record's body goes.
    envelope: Vec<(Value, Option<Value>)>,
}

/// A key of [`Keys`] split around its symbol, so it is written into a reused string without
/// formatting (`prefix + symbol + suffix`); `None` if the builder did not contain the symbol
/// verbatim (then [`Keys`] is asked each time).
#[derive(Clone, Debug)]
struct KeyTemplate(Option<(String, String)>);

impl KeyTemplate {
    /// The template of `build` (`Keys::physics_state`, …).
    fn of(build: impl Fn(&str) -> String) -> Self {
        const MARK: &str = "\u{0}symbol\u{0}";
        let key = build(MARK);
        let parts = key
            .split_once(MARK)
            .map(|(p, s)| (p.to_owned(), s.to_owned()))
            // Only the symbol may vary: check the template gives the builder's key.
            .filter(|(p, s)| build("SYM") == format!("{p}SYM{s}"));
        KeyTemplate(parts)
    }

    /// Writes the key of `symbol` into `out`.
    fn write(&self, out: &mut String, symbol: &str, build: impl Fn(&str) -> String) {
        out.clear();
        match &self.0 {
            Some((prefix, suffix)) => {
                out.push_str(prefix);
                out.push_str(symbol);
                out.push_str(suffix);
            }
            None => out.push_str(&build(symbol)),
        }
    }
}

impl Physics {
    /// The logic for `cfg`, writing with `keys`.
    pub fn new(cfg: FeynmanConfig, keys: Keys, clustered: bool) -> Self {
        let physics_key = keys.stream(StreamName::Physics);
        let channel = keys.channel_state_update();
        // The envelope's fields of any physics record; only the body ("d") differs by record.
        let sample = PhysicsRecord {
            symbol: String::new(),
            ts: 0.0,
            price: 0.0,
            vector: TickWindow::new(1).vector(),
            source: String::new(),
        };
        let envelope = Envelope::msgpack(&sample)
            .map(|env| {
                env.to_fields()
                    .into_iter()
                    .map(|(name, value)| {
                        let value = (value != env.body).then(|| Value::Bytes(value.into()));
                        (Value::from_static_str(name), value)
                    })
                    .collect()
            })
            .unwrap_or_default();
        let words = StaticWords {
            physics_key: Value::Bytes(physics_key.clone().into_bytes().into()),
            channel: Value::Bytes(channel.into_bytes().into()),
            state_key: KeyTemplate::of(|s| keys.physics_state(s)),
            snap_key: KeyTemplate::of(|s| keys.market_snapshot(s)),
            guarded_set: commit::GUARDED_SET.as_str().into(),
            guarded_hset: commit::GUARDED_HSET.as_str().into(),
            envelope,
        };
        Self {
            physics_key,
            cfg,
            keys,
            clustered,
            words,
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
            snapshot_max_bytes: self.cfg.snapshot_max_bytes,
            commit_max_bytes: self.cfg.commit_max_bytes,
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
    fn push<'s>(
        &self,
        state: &'s mut PartitionState,
        tick: &Tick,
        ms: u64,
        gone: &mut Vec<String>,
    ) -> Option<&'s mut SymbolState> {
        let idle = self.cfg.idle_symbol_ms;
        state.now_ms = state.now_ms.max(ms);
        // One lookup for a known live symbol (the common case): no key is cloned.
        let known = match state.symbols.get(tick.symbol.as_str()) {
            Some(s) if PartitionState::is_live(s, idle, ms) => true,
            Some(_) => {
                state.symbols.remove(tick.symbol.as_str());
                false
            }
            None => false,
        };
        if !known {
            self.make_room(state, ms, gone);
            state.symbols.insert(
                tick.symbol.clone(),
                SymbolState {
                    window: TickWindow::new(self.cfg.window),
                    count: 0,
                    volume: 0.0,
                    price: tick.price,
                    ts: tick.ts,
                    last_ms: ms,
                    batch: 0,
                    last_in_batch: 0,
                },
            );
        }
        let s = state.symbols.get_mut(tick.symbol.as_str())?;
        // Validation happened before; a window refusal would be a bug, not bad input.
        if s.window.push(tick).is_ok() {
            s.count += 1;
            s.volume += tick.size;
            s.price = tick.price;
            s.ts = tick.ts;
            s.last_ms = s.last_ms.max(ms);
        }
        Some(s)
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
        state.batch_seq += 1;
        let seq = state.batch_seq;
        let mut touched = std::mem::take(&mut state.scratch.touched);
        touched.clear();
        let mut now_ms = 0;
        let mut gone = Vec::new();
        for (i, e) in batch.iter().enumerate() {
            now_ms = parse_id(&e.id).0;
            if let Some(s) = self.push(state, &e.message, now_ms, &mut gone) {
                if s.batch != seq {
                    s.batch = seq;
                    touched.push(i);
                }
                s.last_in_batch = i;
            }
        }
        // In symbol order, each once (a symbol evicted and added again within the batch was
        // listed twice).
        let symbol_of = |i: &usize| batch.get(*i).map(|e| e.message.symbol.as_str());
        touched.sort_unstable_by(|a, b| symbol_of(a).cmp(&symbol_of(b)));
        touched.dedup_by(|a, b| symbol_of(&*a) == symbol_of(&*b));
        if state.scratch.source_prefix.is_empty() {
            state.scratch.source_prefix = StreamName::Ticks(state.p).logical();
        }
        let mut results = vec![Ok(()); batch.len()];
        for i in &touched {
            let Some(symbol) = symbol_of(i) else { continue };
            let Some(s) = state.symbols.get(symbol) else {
                continue;
            };
            let Some(tick_id) = batch.get(s.last_in_batch).map(|e| e.id.as_str()) else {
                continue;
            };
            if let Err(why) = effects(
                self,
                &mut out.commit,
                &mut state.scratch,
                symbol,
                s,
                tick_id,
            ) {
                // Encoding our own record cannot fail with valid ticks; say which, keep going.
                for (i, e) in batch.iter().enumerate() {
                    if e.message.symbol == symbol {
                        results[i] = Err(format!("cannot encode the physics record: {why}"));
                    }
                }
            }
        }
        state.scratch.touched = touched;
        out.dirty.extend(gone);
        out.dirty.extend(self.sweep(state, now_ms));
        Ok(results)
    }

    fn encode_item(&self, state: &PartitionState, key: &str) -> Option<Vec<u8>> {
        state
            .symbols
            .get(key)
            .filter(|s| PartitionState::is_live(s, self.cfg.idle_symbol_ms, state.now_ms))
            .and_then(|s| {
                // Sized for the window up front (≈ 9 bytes per number, three columns), so
                // the encoder does not grow it step by step.
                let mut out = Vec::with_capacity(64 + 27 * s.window.len());
                rmp_serde::encode::write_named(&mut out, s).ok()?;
                Some(out)
            })
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

/// The bytes written to `buf` since its last split, as one word.
fn word(buf: &mut BytesMut) -> Value {
    Value::Bytes(buf.split().freeze())
}

/// Writes `text` and returns it as one word.
fn text_word(buf: &mut BytesMut, text: &str) -> Value {
    buf.put_slice(text.as_bytes());
    word(buf)
}

/// Writes `x` as Rust's `Display` prints it (what `f64::to_string` gave) and returns the word.
fn f64_word(buf: &mut BytesMut, x: f64) -> Value {
    use std::fmt::Write as _;
    // Writing into a BytesMut cannot fail (it grows).
    let _ = write!(buf, "{x}");
    word(buf)
}

/// Adds one symbol's outputs to the commit: `physics:state`, `market:snapshot` (+ TTL), a
/// physics-stream entry, and a `state_update` message carrying that entry's id.
///
/// Each output is encoded once, straight into the batch's word buffer (`scratch.words`), and
/// each word is a slice of it; the fixed words are shared. What is left per vector is what the
/// runtime's [`Commit`] takes by value — one `Vec` per command and its key strings — and the
/// `state_update` timestamp's string.
fn effects(
    logic: &Physics,
    c: &mut Commit,
    scratch: &mut Scratch,
    symbol: &str,
    s: &SymbolState,
    tick_id: &str,
) -> Result<(), String> {
    let w = &logic.words;
    let keys = &logic.keys;
    let Scratch {
        words: buf,
        state_key,
        snap_key,
        record,
        update,
        source_prefix,
        encoded,
        ..
    } = scratch;
    if buf.capacity() - buf.len() < WORDS_CHUNK / 16 {
        buf.reserve(WORDS_CHUNK);
    }
    let vector = s.window.vector();
    w.state_key
        .write(state_key, symbol, |s| keys.physics_state(s));
    w.snap_key
        .write(snap_key, symbol, |s| keys.market_snapshot(s));
    let ttl = kitbash_schema::ttl::MARKET_SNAPSHOT.secs().unwrap_or(60) as i64;

    let state_word = text_word(buf, state_key);
    encoded.clear();
    serde_json::to_writer(&mut *encoded, &vector).map_err(|e| e.to_string())?;
    buf.put_slice(encoded);
    let vector_json = word(buf);
    let snap_word = text_word(buf, snap_key);
    let fields: [(&'static str, Value); 3] = [
        ("price", f64_word(buf, s.price)),
        ("volume", f64_word(buf, s.volume)),
        ("timestamp", f64_word(buf, s.ts)),
    ];
    if logic.clustered {
        // Outputs are written before the fenced checkpoint here (see commit::run_split): guard
        // the state keys so a fenced instance finishing late cannot roll them back.
        let guard_key = keys.physics_state_source(symbol);
        let tick_word = text_word(buf, tick_id);
        c.push(
            state_key,
            vec![
                Value::from_static_str("EVAL"),
                w.guarded_set.clone(),
                2.into(),
                state_word,
                guard_key.as_str().into(),
                tick_word.clone(),
                vector_json,
            ],
        );
        let mut words: Vec<Value> = Vec::with_capacity(12);
        words.extend([
            Value::from_static_str("EVAL"),
            w.guarded_hset.clone(),
            1.into(),
            snap_word,
            tick_word,
            ttl.into(),
        ]);
        for (f, v) in fields {
            words.push(Value::from_static_str(f));
            words.push(v);
        }
        c.push(snap_key, words);
    } else {
        c.push(
            state_key,
            vec![Value::from_static_str("SET"), state_word, vector_json],
        );
        let mut words: Vec<Value> = Vec::with_capacity(8);
        words.extend([Value::from_static_str("HSET"), snap_word.clone()]);
        for (f, v) in fields {
            words.push(Value::from_static_str(f));
            words.push(v);
        }
        c.push(snap_key, words);
        c.push(
            snap_key,
            vec![Value::from_static_str("EXPIRE"), snap_word, ttl.into()],
        );
    }

    let record = record.get_or_insert_with(|| PhysicsRecord {
        symbol: String::new(),
        ts: 0.0,
        price: 0.0,
        vector: vector.clone(),
        source: String::new(),
    });
    record.symbol.clear();
    record.symbol.push_str(symbol);
    record.ts = s.ts;
    record.price = s.price;
    record.vector = vector.clone();
    record.source.clear();
    record.source.push_str(source_prefix);
    record.source.push('/');
    record.source.push_str(tick_id);
    if w.envelope.is_empty() {
        return Err("no envelope for physics records".into());
    }
    let mut words: Vec<Value> = Vec::with_capacity(3 + 2 * w.envelope.len());
    words.extend([
        Value::from_static_str("XADD"),
        w.physics_key.clone(),
        Value::from_static_str("*"),
    ]);
    for (name, value) in &w.envelope {
        words.push(name.clone());
        match value {
            Some(v) => words.push(v.clone()),
            None => {
                encoded.clear();
                rmp_serde::encode::write_named(&mut *encoded, &*record)
                    .map_err(|e| e.to_string())?;
                buf.put_slice(encoded);
                words.push(word(buf));
            }
        }
    }
    c.push(&logic.physics_key, words);

    let update = update.get_or_insert_with(|| StateUpdate {
        event: StateUpdate::PHYSICS_UPDATE.into(),
        symbol: String::new(),
        timestamp: String::new(),
        data: StateUpdateData {
            alpha: 0.0,
            regime: vector.regime,
            price: None,
            mass: None,
            momentum: None,
            friction: None,
            entropy: None,
            nash_dist: None,
            // Filled in by the script with the id of the physics entry just added.
            stream_id: Some(commit::ID_PLACEHOLDER.into()),
            source: Some(String::new()),
        },
    });
    update.symbol.clear();
    update.symbol.push_str(symbol);
    update.timestamp = kitbash_schema::time::rfc3339_utc((s.ts * 1000.0) as i64);
    let d = &mut update.data;
    d.alpha = vector.alpha_coefficient;
    d.regime = vector.regime;
    d.price = Some(s.price);
    d.mass = Some(vector.mass);
    d.momentum = Some(vector.momentum);
    d.friction = Some(vector.friction);
    d.entropy = Some(vector.entropy);
    d.nash_dist = Some(vector.nash_dist);
    if let Some(source) = d.source.as_mut() {
        source.clear();
        source.push_str(tick_id);
    }
    encoded.clear();
    encoded.push(TEMPLATE);
    serde_json::to_writer(&mut *encoded, &*update).map_err(|e| e.to_string())?;
    buf.put_slice(encoded);
    let json = word(buf);
    c.push_keyless(vec![
        Value::from_static_str("PUBLISH"),
        w.channel.clone(),
        json,
    ]);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use kitbash_schema::{KeyStyle, Namespace};

    /// The encoder before words were sliced from one buffer (every word its own allocation):
    /// the reference the commit's bytes must equal.
    fn reference(logic: &Physics, c: &mut Commit, symbol: &str, s: &SymbolState, source: &str) {
        let keys = &logic.keys;
        let physics_key = keys.stream(StreamName::Physics);
        let channel = keys.channel_state_update();
        let vector = s.window.vector();
        let state_key = keys.physics_state(symbol);
        let snap_key = keys.market_snapshot(symbol);
        let ttl = kitbash_schema::ttl::MARKET_SNAPSHOT.secs().unwrap_or(60) as i64;
        let fields: [(&str, String); 3] = [
            ("price", s.price.to_string()),
            ("volume", s.volume.to_string()),
            ("timestamp", s.ts.to_string()),
        ];
        let tick_id = source.rsplit('/').next().unwrap_or(source);
        if logic.clustered {
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
        let env = Envelope::msgpack(&record).expect("a physics record encodes");
        let mut words: Vec<Value> = vec!["XADD".into(), physics_key.as_str().into(), "*".into()];
        for (k, v) in env.to_fields() {
            words.push(k.into());
            words.push(Value::Bytes(v.into()));
        }
        c.push(&physics_key, words);
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
                stream_id: Some(commit::ID_PLACEHOLDER.into()),
                source: source.rsplit_once('/').map(|(_, id)| id.to_owned()),
            },
        };
        let mut json = vec![TEMPLATE];
        json.extend(update.to_json());
        c.push_keyless(vec![
            "PUBLISH".into(),
            channel.as_str().into(),
            Value::Bytes(json.into()),
        ]);
    }

    /// A word as Redis receives it.
    fn wire(v: &Value) -> Vec<u8> {
        match v {
            Value::Integer(i) => i.to_string().into_bytes(),
            Value::Bytes(b) => b.to_vec(),
            Value::String(s) => s.as_bytes().to_vec(),
            other => panic!("unexpected word {other:?}"),
        }
    }

    fn commands(c: &Commit) -> Vec<(Option<String>, Vec<Vec<u8>>)> {
        c.commands
            .iter()
            .map(|(k, words)| (k.clone(), words.iter().map(wire).collect()))
            .collect()
    }

    fn tick(symbol: &str, i: usize) -> Tick {
        Tick {
            symbol: symbol.to_owned(),
            price: 100.0 + (i * 37 % 101) as f64 * 0.013,
            size: 1.0 + (i % 7) as f64 * 0.25,
            trades: 1 + (i % 3) as u64,
            ts: 1_766_318_400.0 + i as f64 * 1e-3,
        }
    }

    /// The commit a batch builds is byte for byte what the old encoder built, in every key
    /// style, with and without a namespace, standalone and clustered.
    #[tokio::test]
    async fn commit_words_equal_the_reference_encoding() {
        let symbols = ["AAPL", "MSFT", "BRK.B", "Ω-unicode", "SPY"];
        for (ns, style, clustered) in [
            ("", KeyStyle::Seed, false),
            ("bench7", KeyStyle::Seed, false),
            ("t", KeyStyle::Tagged, false),
            ("", KeyStyle::Seed, true),
            ("t", KeyStyle::Tagged, true),
        ] {
            let keys = Keys::new(Namespace::new(ns).expect("namespace")).with_style(style);
            let logic = Physics::new(FeynmanConfig::default(), keys, clustered);
            let mut state = logic.empty(3);
            // Several batches, so that the scratch buffers are reused and windows grow.
            for round in 0..4 {
                let batch: Vec<Entry<Tick>> = (0..40)
                    .map(|i| Entry {
                        id: format!("{}-{i}", 1_766_318_400_000u64 + round * 10),
                        message: tick(symbols[(i * 3 + round as usize) % symbols.len()], i),
                    })
                    .collect();
                let mut out = Effects::default();
                let results = logic
                    .apply(&mut state, &batch, &mut out)
                    .await
                    .expect("pure computation");
                assert!(results.iter().all(Result::is_ok));
                let mut expected = Commit::default();
                let mut last: BTreeMap<&str, &str> = BTreeMap::new();
                for e in &batch {
                    last.insert(&e.message.symbol, &e.id);
                }
                for (symbol, id) in last {
                    let s = &state.symbols[symbol];
                    reference(&logic, &mut expected, symbol, s, &format!("ticks:3/{id}"));
                }
                assert_eq!(
                    out.commit.keys, expected.keys,
                    "{ns:?} {style:?} {clustered}"
                );
                assert_eq!(
                    commands(&out.commit),
                    commands(&expected),
                    "{ns:?} {style:?} {clustered}"
                );
            }
        }
    }

    #[test]
    fn key_templates_give_the_keys_of_kitbash_schema() {
        for style in [KeyStyle::Seed, KeyStyle::Tagged] {
            let keys = Keys::new(Namespace::new("n1").expect("namespace")).with_style(style);
            let t = KeyTemplate::of(|s| keys.physics_state(s));
            assert!(t.0.is_some());
            let mut out = String::new();
            for sym in ["A", "BRK.B", "{odd}", ""] {
                t.write(&mut out, sym, |s| keys.physics_state(s));
                assert_eq!(out, keys.physics_state(sym));
            }
        }
    }
}
