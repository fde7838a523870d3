//! Typed key builders for every key family of the five seeds and for the fleet's internal keys.
//!
//! Seed keys are spelled exactly as the seed documents spell them (`cms:{h}`, `grain:{id}:sig`,
//! `physics:state:{SYMBOL}`, …; braces there are placeholders, not hash tags). Internal keys all
//! start with `kitbash:`. With [`KeyStyle::Tagged`] the per-entity families wrap their id in a
//! Redis Cluster hash tag (`cms:{h}`, `cms:{h}:grains` then share a slot) so that scripts touching
//! one record's keys work on a cluster.

use crate::namespace::Namespace;
use crate::streams::{DaemonKind, StreamName};

/// How per-entity ids appear in seed keys.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum KeyStyle {
    /// Exactly the seeds' names: `cms:a1b2`, `cms:a1b2:grains`. Right for standalone Redis.
    #[default]
    Seed,
    /// Ids wrapped in a hash tag: `cms:{a1b2}`, `cms:{a1b2}:grains`. Right for Redis Cluster when
    /// one record's keys are changed together.
    Tagged,
}

/// Builds every key, stream and channel name of one deployment (namespace + style).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Keys {
    /// Prefix applied to every name.
    ns: Namespace,
    /// Whether seed ids are hash-tagged.
    style: KeyStyle,
    /// Whether the reflex path's keys all share one cluster slot ([`Keys::with_reflex_slot`]).
    reflex_slot: bool,
}

/// The hash tag every reflex-path key carries on a Redis Cluster ([`Keys::with_reflex_slot`]):
/// the `crossings` stream's, which the decay's hit script appends to.
pub const REFLEX_SLOT_TAG: &str = "{crossings}";

impl Keys {
    /// Key builder for `ns` with the seeds' exact names.
    pub fn new(ns: Namespace) -> Self {
        Self {
            ns,
            style: KeyStyle::Seed,
            reflex_slot: false,
        }
    }

    /// Same namespace, another [`KeyStyle`].
    pub fn with_style(mut self, style: KeyStyle) -> Self {
        self.style = style;
        self
    }

    /// On a Redis Cluster: every key of the reflex path (seed 000's families and kitbash's
    /// reflex bookkeeping, both layouts, the decay and ghost leader leases and the decay's
    /// per-entry markers) ends in the hash tag [`REFLEX_SLOT_TAG`], so the whole path is in the
    /// slot of the `crossings` stream and its scripts, each of which touches a record, the
    /// global cycle and index and the stream, run unchanged. The path then lives on one
    /// primary (see ARCHITECTURE.md, "The reflex path on a cluster"); its ids are never wrapped
    /// in tags of their own (the first `{…}` of a key names its slot), whatever the
    /// [`KeyStyle`]. Every other family is unaffected. The runtime's `RedisConfig::keys` sets
    /// it for a `redis-cluster://` URL.
    pub fn with_reflex_slot(mut self, on: bool) -> Self {
        self.reflex_slot = on;
        self
    }

    /// Whether the reflex path's keys share one slot ([`Keys::with_reflex_slot`]).
    pub fn reflex_slot(&self) -> bool {
        self.reflex_slot
    }

    /// The namespace these keys live in.
    pub fn namespace(&self) -> &Namespace {
        &self.ns
    }

    /// The key style in use.
    pub fn style(&self) -> KeyStyle {
        self.style
    }

    fn id(&self, id: &str) -> String {
        match self.style {
            KeyStyle::Seed => id.to_owned(),
            KeyStyle::Tagged => format!("{{{id}}}"),
        }
    }

    fn k(&self, name: &str) -> String {
        self.ns.apply(name)
    }

    /// A reflex-path key: `name` in the namespace, with the suffix `:{crossings}` under
    /// [`Keys::with_reflex_slot`].
    fn rk(&self, name: &str) -> String {
        if self.reflex_slot {
            self.k(&format!("{name}:{REFLEX_SLOT_TAG}"))
        } else {
            self.k(name)
        }
    }

    /// A reflex-path id: tagged like [`Keys::id`] unless the path shares one slot.
    fn rid(&self, id: &str) -> String {
        if self.reflex_slot {
            id.to_owned()
        } else {
            self.id(id)
        }
    }

    /// The suffix [`Keys::rk`] appends (empty unless the reflex path shares one slot).
    fn rsuffix(&self) -> String {
        if self.reflex_slot {
            format!(":{REFLEX_SLOT_TAG}")
        } else {
            String::new()
        }
    }

    // ---- seed 000: reflex path -------------------------------------------------------------

    /// `cms:{h}` — the CMS record of a query, a hash: the seed's `count`, `resonance_score`,
    /// `last_accessed`, and kitbash's `cycle` (the decay cycle `resonance_score` is current at)
    /// and `text` (the query, for the ghost's recomputation). 24 h.
    pub fn cms(&self, h: &str) -> String {
        self.rk(&format!("cms:{}", self.rid(h)))
    }
    /// `cms:{h}:grains` — grain ids associated with a query (sorted set, score = Unix seconds of
    /// the hit that named them). 24 h.
    pub fn cms_grains(&self, h: &str) -> String {
        self.rk(&format!("cms:{}:grains", self.rid(h)))
    }
    /// `cms:{h}:resonance` — the query's resonance as a decimal string, exact when written (see
    /// ARCHITECTURE.md for what a plain `GET` sees between hits). 5 d.
    pub fn cms_resonance(&self, h: &str) -> String {
        self.rk(&format!("cms:{}:resonance", self.rid(h)))
    }
    /// `grain:{id}:sig` — grain metadata (popcount, axiom, weight, ternary_value, confidence).
    pub fn grain_sig(&self, id: u64) -> String {
        self.rk(&format!("grain:{}:sig", self.rid(&id.to_string())))
    }
    /// `grain:{id}:bits:+` — the grain's +1 bit plane.
    pub fn grain_bits_plus(&self, id: u64) -> String {
        self.rk(&format!("grain:{}:bits:+", self.rid(&id.to_string())))
    }
    /// `grain:{id}:bits:-` — the grain's −1 bit plane.
    pub fn grain_bits_minus(&self, id: u64) -> String {
        self.rk(&format!("grain:{}:bits:-", self.rid(&id.to_string())))
    }
    /// `grain:index` — the set of all grain ids.
    pub fn grain_index(&self) -> String {
        self.rk("grain:index")
    }
    /// `ghost:{h}` — the top-3 grains of a hot query, `"42,17,88"`. 1 h.
    pub fn ghost(&self, h: &str) -> String {
        self.rk(&format!("ghost:{}", self.rid(h)))
    }
    /// `ghost:activations` — count of ghost pre-loads.
    pub fn ghost_activations(&self) -> String {
        self.rk("ghost:activations")
    }
    /// `hat:current` — the active hat's name.
    pub fn hat_current(&self) -> String {
        self.rk("hat:current")
    }
    /// `hat:{name}:mask` — a hat's 256-bit mask.
    pub fn hat_mask(&self, name: &str) -> String {
        self.rk(&format!("hat:{name}:mask"))
    }
    /// `metrics:queries:count`.
    pub fn metrics_queries_count(&self) -> String {
        self.rk("metrics:queries:count")
    }
    /// `metrics:latency:p95` (ms).
    pub fn metrics_latency_p95(&self) -> String {
        self.rk("metrics:latency:p95")
    }
    /// `metrics:latency:p99` (ms).
    pub fn metrics_latency_p99(&self) -> String {
        self.rk("metrics:latency:p99")
    }
    /// `metrics:grains:lookups`.
    pub fn metrics_grains_lookups(&self) -> String {
        self.rk("metrics:grains:lookups")
    }
    /// `metrics:cache:hits`.
    pub fn metrics_cache_hits(&self) -> String {
        self.rk("metrics:cache:hits")
    }

    // ---- seed 001: trading system ----------------------------------------------------------

    /// `physics:state:{SYMBOL}` — the physics vector as JSON, no TTL.
    pub fn physics_state(&self, symbol: &str) -> String {
        self.k(&format!("physics:state:{}", self.id(symbol)))
    }
    /// `{physics:state:{SYMBOL}}:src` — id of the tick behind the current physics state, in the
    /// same cluster slot as [`Keys::physics_state`] (its hash tag is that key's whole name), so
    /// a script can refuse to overwrite the state with an older one.
    /// With [`KeyStyle::Tagged`] the state key already carries the tag `{SYMBOL}`, so the guard
    /// is `physics:state:{SYMBOL}:src` (a key wrapped in braces would hash on a different tag).
    pub fn physics_state_source(&self, symbol: &str) -> String {
        match self.style {
            KeyStyle::Seed => format!("{{{}}}:src", self.physics_state(symbol)),
            KeyStyle::Tagged => format!("{}:src", self.physics_state(symbol)),
        }
    }
    /// `market:snapshot:{SYMBOL}` — hash (price, volume, bid, ask, timestamp), 60 s.
    pub fn market_snapshot(&self, symbol: &str) -> String {
        self.k(&format!("market:snapshot:{}", self.id(symbol)))
    }
    /// `agent:state:{agent_id}` — agent memory as JSON, 1 h.
    pub fn agent_state(&self, agent_id: &str) -> String {
        self.k(&format!("agent:state:{}", self.id(agent_id)))
    }
    /// `queue:tasks` — the reserved FIFO task list.
    pub fn queue_tasks(&self) -> String {
        self.k("queue:tasks")
    }
    /// `leaderboard:strategies` — strategies ranked by Sharpe ratio.
    pub fn leaderboard_strategies(&self) -> String {
        self.k("leaderboard:strategies")
    }

    // ---- seed 002: quantum memory ----------------------------------------------------------

    /// `quantum:status` (was `quantum_states/status.json`).
    pub fn quantum_status(&self) -> String {
        self.k("quantum:status")
    }
    /// `quantum:session:current` (was `memories/current_session.json`).
    pub fn quantum_session_current(&self) -> String {
        self.k("quantum:session:current")
    }
    /// `quantum:daily:{date}` (was `memories/daily/{date}.json`).
    pub fn quantum_daily(&self, date: &str) -> String {
        self.k(&format!("quantum:daily:{date}"))
    }
    /// `quantum:work:summary24h` (was `memories/work_summary_24h.json`).
    pub fn quantum_work_summary24h(&self) -> String {
        self.k("quantum:work:summary24h")
    }
    /// `entity:{name}:{part}` (was `consciousness/entities/{name}/{part}`).
    pub fn entity(&self, name: &str, part: &str) -> String {
        self.k(&format!("entity:{name}:{part}"))
    }

    /// The metadata hash of a document (`version`, `applied`): `{quantum:status}:meta`, in the
    /// document's cluster slot (its hash tag is the document key's whole name; a key that already
    /// holds a tag gets the suffix instead). `version` counts committed changes; `applied` is the
    /// id of the last entity-stream entry applied, so a re-delivered entry is never applied twice.
    pub fn document_meta(&self, doc_key: &str) -> String {
        Self::beside(doc_key, "meta")
    }
    /// The bounded timeline of a document's changes (a stream, newest last), in its slot:
    /// `{quantum:status}:timeline`.
    pub fn document_timeline(&self, doc_key: &str) -> String {
        Self::beside(doc_key, "timeline")
    }
    fn beside(doc_key: &str, what: &str) -> String {
        if doc_key.contains('{') {
            format!("{doc_key}:{what}")
        } else {
            format!("{{{doc_key}}}:{what}")
        }
    }
    /// Field names of [`Keys::document_meta`].
    pub const DOCUMENT_VERSION: &'static str = "version";
    /// See [`Keys::DOCUMENT_VERSION`].
    pub const DOCUMENT_APPLIED: &'static str = "applied";
    /// See [`Keys::DOCUMENT_VERSION`]: the latest updates the document's commits rejected
    /// (JSON `[[entry id, reason], …]`, at most 64), so a batch re-read after a crash
    /// dead-letters them again although `applied` has moved past them.
    pub const DOCUMENT_REJECTED: &'static str = "rejected";
    /// See [`Keys::DOCUMENT_VERSION`]: on a Redis Cluster only, the changes a commit wrote to
    /// the document but not yet to the changes stream, its timeline and `quantum:updates`
    /// (those live in other slots, so they follow the document's script). JSON
    /// `{"key", "ttl", "version", "changes": [{"version", "entry", "op", "patch", "data",
    /// "publish": [prefix, suffix]}, …]}`; removed once they are written. While it is
    /// present the document takes no further commit.
    pub const DOCUMENT_OUTBOX: &'static str = "outbox";

    // ---- seed 003: neuromorphic arrays -----------------------------------------------------

    /// `wm:{hash}` — a working-memory pattern (hash: pattern, timestamp, metadata), 1 h.
    pub fn wm(&self, hash: &str) -> String {
        self.k(&format!("wm:{}", self.id(hash)))
    }
    /// `spikes:{timestamp_us}` — one spike train; TTL chosen per call.
    pub fn spikes(&self, timestamp_us: i64) -> String {
        self.k(&format!("spikes:{timestamp_us}"))
    }
    /// `spikes:index` — sorted set of spike-train keys by timestamp (time-window queries).
    pub fn spikes_index(&self) -> String {
        self.k("spikes:index")
    }
    /// `attention:{context}` — attention weights, 10 min.
    pub fn attention(&self, context: &str) -> String {
        self.k(&format!("attention:{}", self.id(context)))
    }

    // ---- seed 004: cache, sessions, rate limits --------------------------------------------

    /// `memory:{id}` — a cached memory token, 1 h.
    pub fn memory(&self, id: &str) -> String {
        self.k(&format!("memory:{}", self.id(id)))
    }
    /// `score:{user}:{ctx}:{token}` — a cached relevance score, 15 min.
    pub fn score(&self, user: &str, ctx: &str, token: &str) -> String {
        self.k(&format!("score:{user}:{ctx}:{token}"))
    }
    /// `session:{user}` — session state, 30 min.
    pub fn session(&self, user: &str) -> String {
        self.k(&format!("session:{}", self.id(user)))
    }
    /// `rate:{user}:{endpoint}` — the rate-limit window of one user on one endpoint.
    pub fn rate(&self, user: &str, endpoint: &str) -> String {
        self.k(&format!("rate:{user}:{endpoint}"))
    }
    /// `kitbash:memory:user:{u1}` (literal braces: the user is a hash tag) — the per-user
    /// relevance index of memory tokens: a sorted set of memory ids by the time-free rank of
    /// [`crate::memory`], written by the archive's indexer. Under either [`KeyStyle`] it shares
    /// a cluster slot with the user's context indexes, so one script updates both.
    pub fn memory_user_index(&self, user: &str) -> String {
        self.k(&format!("kitbash:memory:user:{{{user}}}"))
    }
    /// `kitbash:memory:user:{u1}:ctx:{ctx}` — the same index for one context of the user
    /// (what a top-k for a user and context reads), in the user index's slot.
    pub fn memory_context_index(&self, user: &str, ctx: &str) -> String {
        self.k(&format!("kitbash:memory:user:{{{user}}}:ctx:{ctx}"))
    }
    /// `{memory:m1}:src` — on a Redis Cluster, the rank of the event behind `memory:{id}` and
    /// its memory id (a hash, fields [`Keys::SOURCE_RANK`], [`Keys::SOURCE_ID`]), in the
    /// record's slot, so a write can refuse to replace a newer record with an older one there
    /// (the record and the relevance indexes live in different slots). With
    /// [`KeyStyle::Tagged`] the record already carries the tag `{m1}`: `memory:{m1}:src`.
    pub fn memory_source(&self, id: &str) -> String {
        Self::beside(&self.memory(id), "src")
    }
    /// `{score:u1:c1:t1}:src` — the same guard for [`Keys::score`], in its slot.
    pub fn score_source(&self, user: &str, ctx: &str, token: &str) -> String {
        Self::beside(&self.score(user, ctx, token), "src")
    }
    /// Field of [`Keys::memory_source`] / [`Keys::score_source`]: the writer's rank (`-inf`:
    /// not ranked).
    pub const SOURCE_RANK: &'static str = "rank";
    /// See [`Keys::SOURCE_RANK`]: the memory id of the writer.
    pub const SOURCE_ID: &'static str = "id";

    // ---- channels --------------------------------------------------------------------------

    /// `state_update` — physics updates for the bridge (seed 001).
    pub fn channel_state_update(&self) -> String {
        self.k(crate::channels::STATE_UPDATE)
    }
    /// `trade_signals` — buy/sell decisions (seed 001).
    pub fn channel_trade_signals(&self) -> String {
        self.k(crate::channels::TRADE_SIGNALS)
    }
    /// `quantum:updates` — entity and quantum-state changes (seed 002).
    pub fn channel_quantum_updates(&self) -> String {
        self.k(crate::channels::QUANTUM_UPDATES)
    }
    /// `kitbash:grain-updates` — grain bank changes, read by ghost.
    pub fn channel_grain_updates(&self) -> String {
        self.k(crate::channels::GRAIN_UPDATES)
    }
    /// `kitbash:reload` — asks every daemon to reload what it can (like SIGHUP, fleet-wide).
    pub fn channel_reload(&self) -> String {
        self.k(crate::channels::RELOAD)
    }

    // ---- internal: streams and fleet bookkeeping -------------------------------------------

    /// The stream key: `kitbash:stream:{queries}`, `kitbash:stream:{ticks:3}`.
    pub fn stream(&self, s: StreamName) -> String {
        self.k(&format!("kitbash:stream:{{{}}}", s.logical()))
    }
    /// The dead-letter stream of `s`: `kitbash:stream:{queries}:dead` (same slot as `s`).
    pub fn dead_letter(&self, s: StreamName) -> String {
        self.k(&format!("kitbash:stream:{{{}}}:dead", s.logical()))
    }
    /// Idempotency markers of effects derived from entries of `s`, one key per entry id scope:
    /// `kitbash:stream:{queries}:done:{id}` (same slot as `s`).
    pub fn done_marker(&self, s: StreamName, id: &str) -> String {
        self.k(&format!("kitbash:stream:{{{}}}:done:{id}", s.logical()))
    }
    /// `kitbash:fleet` — sorted set: member `kind/instance`, score = last heartbeat (ms).
    pub fn fleet(&self) -> String {
        self.k("kitbash:fleet")
    }
    /// `kitbash:heartbeat:{kind}:{instance}` — the instance's self-description, short TTL.
    pub fn heartbeat(&self, kind: DaemonKind, instance: &str) -> String {
        self.k(&format!("kitbash:heartbeat:{}:{instance}", kind.name()))
    }
    /// `kitbash:lease:{ticks:3}` — which feynman instance owns tick partition 3.
    pub fn partition_lease(&self, partition: u32) -> String {
        self.lease(StreamName::Ticks(partition))
    }
    /// `kitbash:stream:{ticks:3}:checkpoint` — feynman's checkpoint of tick partition 3.
    pub fn partition_checkpoint(&self, partition: u32) -> String {
        self.checkpoint(StreamName::Ticks(partition))
    }
    /// `kitbash:lease:{ticks:3}` — the lease of a partitioned stream: which worker (instance
    /// name, `#`, acquisition token) owns it.
    pub fn lease(&self, s: StreamName) -> String {
        self.k(&format!("kitbash:lease:{{{}}}", s.logical()))
    }
    /// `kitbash:stream:{ticks:3}:checkpoint` — a partitioned stream's checkpoint hash
    /// (`last_id`, `snap_id`, `consumed`, `owner`, `mids`), same slot as the stream.
    pub fn checkpoint(&self, s: StreamName) -> String {
        self.k(&format!("kitbash:stream:{{{}}}:checkpoint", s.logical()))
    }
    /// `kitbash:stream:{queries}:trim` — the archive's trim claim on a stream it archives
    /// (same slot as the stream), a hash: [`Keys::TRIM_OWNER`] = the archive lease token of the
    /// instance that trims the stream (expires with its lease), and what its last trim found
    /// ([`Keys::TRIM_FLOOR`], [`Keys::TRIM_HOLDER`], [`Keys::TRIM_ARCHIVED`], [`Keys::TRIM_AT`],
    /// [`Keys::TRIM_REMOVED`]). While it exists no other daemon trims the stream.
    pub fn trim_claim(&self, s: StreamName) -> String {
        trim_claim_of(&self.stream(s))
    }
    /// `kitbash:stream:{ticks:3}:state` — a partition worker's snapshotted state, one field per
    /// item (feynman: one window per symbol), current at the checkpoint's `snap_id`.
    pub fn partition_state(&self, s: StreamName) -> String {
        self.k(&format!("kitbash:stream:{{{}}}:state", s.logical()))
    }
    /// Trim claim field: the archive lease token of the trimming instance.
    pub const TRIM_OWNER: &'static str = "owner";
    /// Trim claim field: the floor of the last trim (entries below it were removed).
    pub const TRIM_FLOOR: &'static str = "floor";
    /// Trim claim field: what held the floor there (`group decay (pending)`, `archive`, …).
    pub const TRIM_HOLDER: &'static str = "holder";
    /// Trim claim field: the first id not yet archived (manifest's last id + 1, `0-0` before
    /// the first file).
    pub const TRIM_ARCHIVED: &'static str = "archived";
    /// Trim claim field: when the last trim ran, ms of Redis's clock.
    pub const TRIM_AT: &'static str = "at_ms";
    /// Trim claim field: entries removed by this claim's trims.
    pub const TRIM_REMOVED: &'static str = "removed";
    /// `kitbash:stream:{queries}:mids:{group}` — hash: producer message id → the entry id that
    /// first carried it, for one group (a re-sent message is applied once).
    pub fn mids(&self, s: StreamName, group: &str) -> String {
        self.k(&format!("kitbash:stream:{{{}}}:mids:{group}", s.logical()))
    }
    /// `kitbash:stream:{queries}:mids:{group}:order` — the same ids by entry time, so the oldest
    /// are forgotten first (the window is bounded).
    pub fn mids_order(&self, s: StreamName, group: &str) -> String {
        self.k(&format!(
            "kitbash:stream:{{{}}}:mids:{group}:order",
            s.logical()
        ))
    }
    /// `kitbash:leader:{kind}:{task}` — the lease of a leader task: exactly one live instance of
    /// `kind` runs `task`.
    /// With [`Keys::with_reflex_slot`] the leases of decay's and ghost's leaders are in the
    /// reflex slot, as their fenced scripts write there.
    pub fn leader(&self, kind: DaemonKind, task: &str) -> String {
        let name = format!("kitbash:leader:{}:{task}", kind.name());
        match kind {
            DaemonKind::Decay | DaemonKind::Ghost => self.rk(&name),
            _ => self.k(&name),
        }
    }
    /// The idempotency marker of the decay's hit for `queries` entry `id`: the `queries`
    /// stream's [`Keys::done_marker`] (`kitbash:stream:{queries}:done:{id}`), or with
    /// [`Keys::with_reflex_slot`] the same name in the reflex slot
    /// (`kitbash:stream:queries:done:{id}:{crossings}`), beside the records the hit writes.
    pub fn hit_marker(&self, id: &str) -> String {
        if self.reflex_slot {
            self.rk(&format!(
                "kitbash:stream:{}:done:{id}",
                StreamName::Queries.logical()
            ))
        } else {
            self.done_marker(StreamName::Queries, id)
        }
    }
    /// `kitbash:archive:epoch:{stream}` — the archive's fencing epoch for one stream: a
    /// counter incremented by each instance that takes the stream's lease, recorded in the
    /// stream's archive manifest, so a writer that lost its lease cannot list a file.
    pub fn archive_epoch(&self, s: StreamName) -> String {
        self.k(&format!("kitbash:archive:epoch:{}", s.logical()))
    }
    /// `kitbash:bridge:epoch:{physics}` (literal braces, the stream's hash tag) — the bridge's
    /// epoch of one stream, a hash (fields in [`crate::bridge::epoch`]): the name of the
    /// stream's current incarnation that clients recover against, replaced when the stream's
    /// history is lost (deleted, recreated, restored from an older file). In the stream's
    /// cluster slot, as the epoch script reads both. Written only by the bridge's epoch check;
    /// no TTL (one per stream).
    pub fn bridge_epoch(&self, s: StreamName) -> String {
        self.k(&format!("kitbash:bridge:epoch:{{{}}}", s.logical()))
    }
    /// `kitbash:example:{queries}:tally` — hash of query text → times seen, written by the
    /// example daemon of `docs/adding-a-daemon.md`; in the `queries` stream's slot, so a count
    /// and its entry's idempotency marker are written by one script even on a cluster.
    pub fn example_tally(&self) -> String {
        self.k("kitbash:example:{queries}:tally")
    }
    /// `kitbash:example:{queries}:top` — the most-counted query text of the example's tally
    /// (a string), written by its leader task; beside the tally, in the same slot.
    pub fn example_top(&self) -> String {
        self.k("kitbash:example:{queries}:top")
    }
    /// Field names of the partition checkpoint hash ([`Keys::partition_checkpoint`]).
    pub const CHECKPOINT_LAST_ID: &'static str = "last_id";
    /// See [`Keys::CHECKPOINT_LAST_ID`]: id of the newest window snapshot's last tick.
    pub const CHECKPOINT_SNAP_ID: &'static str = "snap_id";
    /// See [`Keys::CHECKPOINT_LAST_ID`]: recent producer message ids (MessagePack list of
    /// hashes), current at `snap_id`.
    pub const CHECKPOINT_MIDS: &'static str = "mids";
    /// See [`Keys::CHECKPOINT_LAST_ID`]: entries consumed so far; with `XINFO STREAM`'s
    /// `entries-added` it gives the partition's lag.
    pub const CHECKPOINT_CONSUMED: &'static str = "consumed";
    /// See [`Keys::CHECKPOINT_LAST_ID`]: instance that committed last.
    pub const CHECKPOINT_OWNER: &'static str = "owner";

    /// `kitbash:bench:{name}` — scratch keys of `kitbash bench` (never production data).
    pub fn bench(&self, name: &str) -> String {
        self.k(&format!("kitbash:bench:{name}"))
    }

    /// `kitbash:decay:cycle` — the global decay-cycle counter.
    pub fn decay_cycle(&self) -> String {
        self.rk("kitbash:decay:cycle")
    }
    /// `kitbash:resonance:index` — resonance normalised to cycle 0, by query hash.
    pub fn resonance_index(&self) -> String {
        self.rk("kitbash:resonance:index")
    }
    /// `kitbash:decay:clock` — hash: `origin_ms` (Redis time of cycle 0) and `last_ms` (Redis
    /// time of the newest cycle applied); the decay leader catches up missed periods from it.
    pub fn decay_clock(&self) -> String {
        self.rk("kitbash:decay:clock")
    }
    /// `kitbash:metrics:latency:hist` — hash: latency bucket → count, the histogram behind
    /// `metrics:latency:p95` / `p99` (see `kitbash_schema::reflex::latency_bucket`).
    pub fn latency_histogram(&self) -> String {
        self.rk("kitbash:metrics:latency:hist")
    }
    /// `kitbash:reflex:version` — incremented on every grain or hat change (the ghost polls it
    /// in case it missed the `kitbash:grain-updates` message).
    pub fn reflex_version(&self) -> String {
        self.rk("kitbash:reflex:version")
    }
    /// `kitbash:reflex:layout` — the reflex layout this Redis holds
    /// ([`crate::reflex::layout_tag`]: `seed` or `compact/{buckets}`); set by the first writer,
    /// checked by every writer, so two layouts never mix.
    pub fn reflex_layout(&self) -> String {
        self.rk("kitbash:reflex:layout")
    }
    /// `kitbash:cms:{n}` — compact layout: bucket `n` of the CMS records, a hash from compact
    /// query id to [`crate::reflex::CompactRecord`]. No TTL (the decay leader sweeps records).
    pub fn cms_bucket(&self, n: u32) -> String {
        self.rk(&format!("kitbash:cms:{}", self.rid(&n.to_string())))
    }
    /// `kitbash:cms:sweep` — compact layout: the next bucket the decay leader's sweep visits.
    pub fn cms_sweep(&self) -> String {
        self.rk("kitbash:cms:sweep")
    }
    /// `kitbash:reflex:hot` — compact layout: sorted set of the ids of queries that rose above
    /// the threshold, scored by normalised resonance; members that cooled are pruned each cycle.
    pub fn reflex_hot(&self) -> String {
        self.rk("kitbash:reflex:hot")
    }
    /// `kitbash:reflex:hot:text` — compact layout: hash from the id of a hot query to its text
    /// (the ghost's recomputation signs the text); pruned with `kitbash:reflex:hot`.
    pub fn reflex_hot_text(&self) -> String {
        self.rk("kitbash:reflex:hot:text")
    }
    /// `kitbash:ghost:recomputed` — the `kitbash:reflex:version` whose hot ghosts the ghost
    /// leader last recomputed (a new leader finishes a recomputation a dead one started).
    pub fn ghost_recomputed(&self) -> String {
        self.rk("kitbash:ghost:recomputed")
    }
    /// The parts around the id of `grain:{id}:sig`, `grain:{id}:bits:+`, `grain:{id}:bits:-`
    /// (`("grain:", ":sig")`, tagged: `("grain:{", "}:sig")`), for scripts that build the keys
    /// of grain ids they read.
    pub fn grain_affixes(&self) -> [(String, String); 3] {
        let (open, close) = self.reflex_braces();
        let pre = self.k(&format!("grain:{open}"));
        let tail = self.rsuffix();
        [":sig", ":bits:+", ":bits:-"].map(|s| (pre.clone(), format!("{close}{s}{tail}")))
    }

    /// The braces around a reflex id in key names (none with the reflex slot).
    fn reflex_braces(&self) -> (&'static str, &'static str) {
        match (self.style, self.reflex_slot) {
            (KeyStyle::Tagged, false) => ("{", "}"),
            _ => ("", ""),
        }
    }
    /// The parts around the hash of `cms:{h}` and `cms:{h}:resonance`: `("cms:", "",
    /// ":resonance")` (tagged: `("cms:{", "}", "}:resonance")`).
    pub fn cms_affixes(&self) -> (String, String, String) {
        let (open, close) = self.reflex_braces();
        let tail = self.rsuffix();
        (
            self.k(&format!("cms:{open}")),
            format!("{close}{tail}"),
            format!("{close}:resonance{tail}"),
        )
    }
    /// The parts around the name of `hat:{name}:mask`: `("hat:", ":mask")`.
    pub fn hat_mask_affixes(&self) -> (String, String) {
        (self.k("hat:"), format!(":mask{}", self.rsuffix()))
    }

    // ---- kitbash-client families (seeds 003 and 004) -----------------------------------------

    /// The `SCAN MATCH` pattern of every key of `family` in this namespace: `memory:*`,
    /// `t7:wm:*`. `spikes:*` also matches `spikes:index`, which belongs to that family.
    pub fn family_pattern(&self, family: KeyFamily) -> String {
        self.k(&format!("{}:*", family.prefix()))
    }

    /// Fields of an array hash (`wm:{hash}`, `spikes:{ts}`, `attention:{context}`); the layout
    /// is documented in `docs/WIRE.md`. `npy`: the array as a complete `.npy` file (format 1.0),
    /// or that file compressed, as [`Keys::ARRAY_ENC`] says.
    pub const ARRAY_NPY: &'static str = "npy";
    /// See [`Keys::ARRAY_NPY`]: how `npy` is encoded — [`Keys::ENC_RAW`] or [`Keys::ENC_ZLIB`].
    /// Readers never guess: a value without this field, or with another value, is an error.
    pub const ARRAY_ENC: &'static str = "enc";
    /// See [`Keys::ARRAY_NPY`]: the producer's timestamp, Unix seconds as a decimal float.
    pub const ARRAY_TS: &'static str = "ts";
    /// See [`Keys::ARRAY_NPY`]: JSON metadata (working memory) or neuron ids (spike trains).
    pub const ARRAY_META: &'static str = "meta";
    /// `enc` value: `npy` holds the `.npy` bytes unchanged.
    pub const ENC_RAW: &'static str = "raw";
    /// `enc` value: `npy` holds a zlib stream (RFC 1950) of the `.npy` bytes.
    pub const ENC_ZLIB: &'static str = "zlib";

    /// Fields of a session hash (`session:{user}`): `data` is the application's JSON object.
    pub const SESSION_DATA: &'static str = "data";
    /// See [`Keys::SESSION_DATA`]: the session's CSRF token (64 hex digits).
    pub const SESSION_CSRF: &'static str = "csrf";
    /// See [`Keys::SESSION_DATA`]: when the session was created, Unix milliseconds.
    pub const SESSION_CREATED: &'static str = "created";
}

/// Every key builder of [`Keys`], by name, with sample keys (one per [`StreamName`] family and
/// per [`DaemonKind`] where the builder takes one) — what the ACL generator's coverage test
/// ([`crate::acl`]) checks against the users' patterns.
///
/// **A new builder must be listed here** (or in [`CHANNEL_BUILDERS`] / [`NOT_KEY_BUILDERS`]):
/// the test `every_key_builder_is_enumerated` reads this file and fails naming the builder
/// that is missing, so a key family cannot be forgotten by the ACLs.
pub fn key_samples(k: &Keys) -> Vec<(&'static str, String)> {
    let mut v: Vec<(&'static str, String)> = vec![
        ("cms", k.cms("h")),
        ("cms_grains", k.cms_grains("h")),
        ("cms_resonance", k.cms_resonance("h")),
        ("grain_sig", k.grain_sig(42)),
        ("grain_bits_plus", k.grain_bits_plus(42)),
        ("grain_bits_minus", k.grain_bits_minus(42)),
        ("grain_index", k.grain_index()),
        ("ghost", k.ghost("h")),
        ("ghost_activations", k.ghost_activations()),
        ("hat_current", k.hat_current()),
        ("hat_mask", k.hat_mask("analytical")),
        ("metrics_queries_count", k.metrics_queries_count()),
        ("metrics_latency_p95", k.metrics_latency_p95()),
        ("metrics_latency_p99", k.metrics_latency_p99()),
        ("metrics_grains_lookups", k.metrics_grains_lookups()),
        ("metrics_cache_hits", k.metrics_cache_hits()),
        ("physics_state", k.physics_state("SPY")),
        ("physics_state_source", k.physics_state_source("SPY")),
        ("market_snapshot", k.market_snapshot("SPY")),
        ("agent_state", k.agent_state("analyst_001")),
        ("queue_tasks", k.queue_tasks()),
        ("leaderboard_strategies", k.leaderboard_strategies()),
        ("quantum_status", k.quantum_status()),
        ("quantum_session_current", k.quantum_session_current()),
        ("quantum_daily", k.quantum_daily("2025-07-01")),
        ("quantum_work_summary24h", k.quantum_work_summary24h()),
        ("entity", k.entity("claude", "identity")),
        ("wm", k.wm("p1")),
        ("spikes", k.spikes(1_700_000_000_000_000)),
        ("spikes_index", k.spikes_index()),
        ("attention", k.attention("visual")),
        ("memory", k.memory("m1")),
        ("score", k.score("u1", "c1", "t1")),
        ("session", k.session("u1")),
        ("rate", k.rate("u1", "/search")),
        ("memory_user_index", k.memory_user_index("u1")),
        ("memory_context_index", k.memory_context_index("u1", "c1")),
        ("fleet", k.fleet()),
        ("bench", k.bench("redis")),
        ("decay_cycle", k.decay_cycle()),
        ("resonance_index", k.resonance_index()),
        ("decay_clock", k.decay_clock()),
        ("latency_histogram", k.latency_histogram()),
        ("reflex_version", k.reflex_version()),
        ("reflex_layout", k.reflex_layout()),
        ("cms_bucket", k.cms_bucket(357)),
        ("cms_sweep", k.cms_sweep()),
        ("reflex_hot", k.reflex_hot()),
        ("reflex_hot_text", k.reflex_hot_text()),
        ("ghost_recomputed", k.ghost_recomputed()),
        ("hit_marker", k.hit_marker("1-0")),
        ("example_tally", k.example_tally()),
        ("example_top", k.example_top()),
        ("memory_source", k.memory_source("m1")),
        ("score_source", k.score_source("u1", "c1", "t1")),
    ];
    for doc in [
        k.quantum_status(),
        k.quantum_session_current(),
        k.quantum_daily("2025-07-01"),
        k.quantum_work_summary24h(),
        k.entity("claude", "identity"),
    ] {
        v.push(("document_meta", k.document_meta(&doc)));
        v.push(("document_timeline", k.document_timeline(&doc)));
    }
    for s in StreamName::families() {
        v.push(("stream", k.stream(s)));
        v.push(("dead_letter", k.dead_letter(s)));
        v.push(("done_marker", k.done_marker(s, "1-0")));
        // Leases, checkpoints and snapshotted state exist for partitioned streams only.
        if s.partitioned_by().is_some() {
            v.push(("lease", k.lease(s)));
            v.push(("checkpoint", k.checkpoint(s)));
            v.push(("partition_state", k.partition_state(s)));
        }
        v.push(("trim_claim", k.trim_claim(s)));
        v.push(("archive_epoch", k.archive_epoch(s)));
        v.push(("bridge_epoch", k.bridge_epoch(s)));
        for group in DaemonKind::ALL
            .into_iter()
            .chain([DaemonKind::Example])
            .map(DaemonKind::group)
            .chain(s.groups().iter().copied())
        {
            v.push(("mids", k.mids(s, group.as_str())));
            v.push(("mids_order", k.mids_order(s, group.as_str())));
        }
    }
    v.push(("partition_lease", k.partition_lease(3)));
    v.push(("partition_checkpoint", k.partition_checkpoint(3)));
    for kind in DaemonKind::ALL.into_iter().chain([DaemonKind::Example]) {
        v.push(("heartbeat", k.heartbeat(kind, "i-1")));
        v.push(("leader", k.leader(kind, "task")));
    }
    v
}

/// Every channel builder of [`Keys`], by name, with its channel (see [`key_samples`]).
pub fn channel_samples(k: &Keys) -> Vec<(&'static str, String)> {
    vec![
        ("channel_state_update", k.channel_state_update()),
        ("channel_trade_signals", k.channel_trade_signals()),
        ("channel_quantum_updates", k.channel_quantum_updates()),
        ("channel_grain_updates", k.channel_grain_updates()),
        ("channel_reload", k.channel_reload()),
    ]
}

/// The channel builders' names, listed in [`channel_samples`].
pub const CHANNEL_BUILDERS: [&str; 5] = [
    "channel_state_update",
    "channel_trade_signals",
    "channel_quantum_updates",
    "channel_grain_updates",
    "channel_reload",
];

/// Builders of [`Keys`] that return a `String` but not a key or a channel.
pub const NOT_KEY_BUILDERS: [&str; 1] = [
    // a SCAN MATCH pattern of a family whose keys are listed one by one
    "family_pattern",
];

/// The key families `kitbash-client` writes, as named on the command line
/// (`kitbash cache clear memory`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum KeyFamily {
    /// `memory:{id}` — memory-token cache.
    Memory,
    /// `score:{user}:{ctx}:{token}` — relevance-score cache.
    Score,
    /// `session:{user}` — sessions.
    Session,
    /// `rate:{user}:{endpoint}` — rate-limit windows.
    Rate,
    /// `wm:{hash}` — working-memory patterns.
    WorkingMemory,
    /// `spikes:{ts}` and `spikes:index` — spike trains.
    Spikes,
    /// `attention:{context}` — attention weights.
    Attention,
}

impl KeyFamily {
    /// Every family, in seed order.
    pub const ALL: [KeyFamily; 7] = [
        KeyFamily::WorkingMemory,
        KeyFamily::Spikes,
        KeyFamily::Attention,
        KeyFamily::Memory,
        KeyFamily::Score,
        KeyFamily::Session,
        KeyFamily::Rate,
    ];

    /// The family's command-line name (`wm`, `spikes`, `memory`, …).
    pub fn name(self) -> &'static str {
        self.prefix()
    }

    /// The family named `name` on the command line.
    pub fn parse(name: &str) -> Option<KeyFamily> {
        KeyFamily::ALL.into_iter().find(|f| f.name() == name)
    }

    fn prefix(self) -> &'static str {
        match self {
            KeyFamily::Memory => "memory",
            KeyFamily::Score => "score",
            KeyFamily::Session => "session",
            KeyFamily::Rate => "rate",
            KeyFamily::WorkingMemory => "wm",
            KeyFamily::Spikes => "spikes",
            KeyFamily::Attention => "attention",
        }
    }
}

/// The trim claim of the stream whose key is `stream_key` ([`Keys::trim_claim`]), for code
/// that holds a stream key but not the [`Keys`] that built it (the runtime's `safe_trim`).
pub fn trim_claim_of(stream_key: &str) -> String {
    format!("{stream_key}:trim")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What Redis Cluster hashes: the part between the first `{` and the next `}` when
    /// non-empty, else the whole key.
    fn hash_tag(key: &str) -> &str {
        if let Some(open) = key.find('{')
            && let Some(len) = key[open + 1..].find('}')
            && len > 0
        {
            return &key[open + 1..open + 1 + len];
        }
        key
    }

    #[test]
    fn a_streams_trim_claim_shares_its_slot_and_is_built_from_its_key() {
        let k = Keys::new(Namespace::new(String::from("t")).expect("ns"));
        for s in [StreamName::Queries, StreamName::Ticks(3)] {
            assert_eq!(k.trim_claim(s), trim_claim_of(&k.stream(s)));
            assert_eq!(hash_tag(&k.trim_claim(s)), hash_tag(&k.stream(s)));
        }
        assert_eq!(
            Keys::default().trim_claim(StreamName::Queries),
            "kitbash:stream:{queries}:trim"
        );
    }

    /// Every seed key spelled as the seed documents spell it.
    #[test]
    fn seed_spelling() {
        let k = Keys::default();
        let cases: Vec<(String, &str)> = vec![
            (k.cms("a1b2c3d4e5f6"), "cms:a1b2c3d4e5f6"),
            (k.cms("test_hash"), "cms:test_hash"),
            (k.cms_grains("a1b2c3d4e5f6"), "cms:a1b2c3d4e5f6:grains"),
            (
                k.cms_resonance("a1b2c3d4e5f6"),
                "cms:a1b2c3d4e5f6:resonance",
            ),
            (k.grain_sig(42), "grain:42:sig"),
            (k.grain_bits_plus(42), "grain:42:bits:+"),
            (k.grain_bits_minus(42), "grain:42:bits:-"),
            (k.grain_index(), "grain:index"),
            (k.ghost("a1b2c3d4e5f6"), "ghost:a1b2c3d4e5f6"),
            (k.ghost_activations(), "ghost:activations"),
            (k.hat_current(), "hat:current"),
            (k.hat_mask("analytical"), "hat:analytical:mask"),
            (k.hat_mask("creative"), "hat:creative:mask"),
            (k.metrics_queries_count(), "metrics:queries:count"),
            (k.metrics_latency_p95(), "metrics:latency:p95"),
            (k.metrics_latency_p99(), "metrics:latency:p99"),
            (k.metrics_grains_lookups(), "metrics:grains:lookups"),
            (k.metrics_cache_hits(), "metrics:cache:hits"),
            (k.physics_state("SPY"), "physics:state:SPY"),
            (k.market_snapshot("AAPL"), "market:snapshot:AAPL"),
            (k.agent_state("analyst_001"), "agent:state:analyst_001"),
            (k.queue_tasks(), "queue:tasks"),
            (k.leaderboard_strategies(), "leaderboard:strategies"),
            (k.channel_state_update(), "state_update"),
            (k.channel_trade_signals(), "trade_signals"),
            (k.quantum_status(), "quantum:status"),
            (k.quantum_session_current(), "quantum:session:current"),
            (k.quantum_daily("2025-07-01"), "quantum:daily:2025-07-01"),
            (k.quantum_work_summary24h(), "quantum:work:summary24h"),
            (k.entity("claude", "identity"), "entity:claude:identity"),
            (k.document_meta("quantum:status"), "{quantum:status}:meta"),
            (
                k.document_timeline("entity:claude:identity"),
                "{entity:claude:identity}:timeline",
            ),
            (k.channel_quantum_updates(), "quantum:updates"),
            (k.wm("visual_pattern_123"), "wm:visual_pattern_123"),
            (
                k.attention("visual_attention"),
                "attention:visual_attention",
            ),
            (k.memory("m1"), "memory:m1"),
            (k.score("u1", "c1", "t1"), "score:u1:c1:t1"),
            (k.session("u1"), "session:u1"),
            (k.rate("u1", "/search"), "rate:u1:/search"),
            (k.decay_cycle(), "kitbash:decay:cycle"),
            (k.decay_clock(), "kitbash:decay:clock"),
            (k.resonance_index(), "kitbash:resonance:index"),
            (k.latency_histogram(), "kitbash:metrics:latency:hist"),
            (k.reflex_version(), "kitbash:reflex:version"),
            (k.channel_grain_updates(), "kitbash:grain-updates"),
            (k.reflex_layout(), "kitbash:reflex:layout"),
            (k.cms_bucket(357), "kitbash:cms:357"),
            (
                Keys::default().with_style(KeyStyle::Tagged).cms_bucket(357),
                "kitbash:cms:{357}",
            ),
            (k.cms_sweep(), "kitbash:cms:sweep"),
            (k.reflex_hot(), "kitbash:reflex:hot"),
            (k.reflex_hot_text(), "kitbash:reflex:hot:text"),
            (k.ghost_recomputed(), "kitbash:ghost:recomputed"),
            (k.example_tally(), "kitbash:example:{queries}:tally"),
            (k.example_top(), "kitbash:example:{queries}:top"),
            (
                k.archive_epoch(StreamName::Ticks(3)),
                "kitbash:archive:epoch:ticks:3",
            ),
            (
                k.bridge_epoch(StreamName::Physics),
                "kitbash:bridge:epoch:{physics}",
            ),
            (k.memory_user_index("u1"), "kitbash:memory:user:{u1}"),
            (
                k.memory_context_index("u1", "c1"),
                "kitbash:memory:user:{u1}:ctx:c1",
            ),
            (k.memory_source("m1"), "{memory:m1}:src"),
            (k.score_source("u1", "c1", "t1"), "{score:u1:c1:t1}:src"),
        ];
        let [sig, plus, minus] = k.grain_affixes();
        assert_eq!(format!("{}42{}", sig.0, sig.1), k.grain_sig(42));
        assert_eq!(format!("{}42{}", plus.0, plus.1), k.grain_bits_plus(42));
        assert_eq!(format!("{}42{}", minus.0, minus.1), k.grain_bits_minus(42));
        let t = Keys::default().with_style(KeyStyle::Tagged);
        let [sig, ..] = t.grain_affixes();
        assert_eq!(format!("{}42{}", sig.0, sig.1), t.grain_sig(42));
        for k in [
            Keys::default(),
            Keys::default().with_style(KeyStyle::Tagged),
        ] {
            let (p, r, res) = k.cms_affixes();
            assert_eq!(format!("{p}ab{r}"), k.cms("ab"));
            assert_eq!(format!("{p}ab{res}"), k.cms_resonance("ab"));
        }
        let (a, b) = k.hat_mask_affixes();
        assert_eq!(format!("{a}creative{b}"), k.hat_mask("creative"));
        for (got, want) in cases {
            assert_eq!(got, want);
        }
    }

    #[test]
    fn namespace_prefixes_everything() {
        let k = Keys::new(Namespace::new("t7").unwrap_or_default());
        assert_eq!(k.cms("h"), "t7:cms:h");
        assert_eq!(k.channel_state_update(), "t7:state_update");
        assert_eq!(k.stream(StreamName::Queries), "t7:kitbash:stream:{queries}");
    }

    #[test]
    fn tagged_style_shares_a_slot_per_record() {
        let k = Keys::default().with_style(KeyStyle::Tagged);
        assert_eq!(k.cms("h"), "cms:{h}");
        assert_eq!(k.cms_grains("h"), "cms:{h}:grains");
        assert_eq!(k.cms_resonance("h"), "cms:{h}:resonance");
        assert_eq!(k.grain_bits_plus(7), "grain:{7}:bits:+");
    }

    #[test]
    fn stream_and_dead_letter_share_a_hash_tag() {
        let k = Keys::default();
        assert_eq!(k.stream(StreamName::Ticks(3)), "kitbash:stream:{ticks:3}");
        assert_eq!(
            k.dead_letter(StreamName::Ticks(3)),
            "kitbash:stream:{ticks:3}:dead"
        );
        assert_eq!(
            k.done_marker(StreamName::Entity, "1-0"),
            "kitbash:stream:{entity}:done:1-0"
        );
        assert_eq!(
            k.partition_checkpoint(3),
            "kitbash:stream:{ticks:3}:checkpoint"
        );
        assert_eq!(k.physics_state_source("SPY"), "{physics:state:SPY}:src");
        // Under either style the guard shares the state key's hash tag (its cluster slot).
        for style in [KeyStyle::Seed, KeyStyle::Tagged] {
            let k = Keys::default().with_style(style);
            assert_eq!(
                hash_tag(&k.physics_state("SPY")),
                hash_tag(&k.physics_state_source("SPY")),
                "{style:?}"
            );
        }
    }

    /// The keys one script of the bridge or of the archive's indexer touches together share
    /// a cluster slot under either style (and in a namespace).
    #[test]
    fn the_bridge_and_memory_scripts_keys_share_a_slot() {
        for ns in ["", "t7"] {
            for style in [KeyStyle::Seed, KeyStyle::Tagged] {
                let k = Keys::new(Namespace::new(ns).unwrap_or_default()).with_style(style);
                for s in [
                    StreamName::Physics,
                    StreamName::EntityChanges,
                    StreamName::Ticks(3),
                ] {
                    assert_eq!(hash_tag(&k.bridge_epoch(s)), hash_tag(&k.stream(s)), "{s}");
                }
                let user = k.memory_user_index("u1");
                assert_eq!(hash_tag(&user), "u1");
                assert_eq!(hash_tag(&k.memory_context_index("u1", "c1")), "u1");
                assert_eq!(hash_tag(&k.memory_source("m1")), hash_tag(&k.memory("m1")));
                assert_eq!(
                    hash_tag(&k.score_source("u1", "c1", "t1")),
                    hash_tag(&k.score("u1", "c1", "t1"))
                );
            }
        }
        let t = Keys::default().with_style(KeyStyle::Tagged);
        assert_eq!(t.memory_source("m1"), "memory:{m1}:src");
    }

    /// On a cluster ([`Keys::with_reflex_slot`]) every key a reflex script touches — the
    /// records of both layouts, the grains, ghosts, hats, metrics, the cycle and index, the
    /// decay's hit markers, decay's and ghost's leases and the keys scripts build from the
    /// affixes — has the crossings stream's hash tag; every other family keeps its own.
    #[test]
    fn with_the_reflex_slot_the_reflex_path_shares_the_crossings_slot() {
        for ns in ["", "t7"] {
            for style in [KeyStyle::Seed, KeyStyle::Tagged] {
                let k = Keys::new(Namespace::new(ns).unwrap_or_default())
                    .with_style(style)
                    .with_reflex_slot(true);
                let crossings = k.stream(StreamName::Crossings);
                let home = hash_tag(&crossings);
                assert_eq!(format!("{{{home}}}"), REFLEX_SLOT_TAG);
                let (cms_pre, rec, res) = k.cms_affixes();
                let (hat_pre, hat_post) = k.hat_mask_affixes();
                let mut reflex = vec![
                    k.cms("h"),
                    k.cms_grains("h"),
                    k.cms_resonance("h"),
                    k.grain_sig(42),
                    k.grain_bits_plus(42),
                    k.grain_bits_minus(42),
                    k.grain_index(),
                    k.ghost("h"),
                    k.ghost_activations(),
                    k.hat_current(),
                    k.hat_mask("analytical"),
                    k.metrics_queries_count(),
                    k.metrics_latency_p95(),
                    k.metrics_latency_p99(),
                    k.metrics_grains_lookups(),
                    k.metrics_cache_hits(),
                    k.decay_cycle(),
                    k.resonance_index(),
                    k.decay_clock(),
                    k.latency_histogram(),
                    k.reflex_version(),
                    k.reflex_layout(),
                    k.cms_bucket(357),
                    k.cms_sweep(),
                    k.reflex_hot(),
                    k.reflex_hot_text(),
                    k.ghost_recomputed(),
                    k.hit_marker("1-0"),
                    k.leader(DaemonKind::Decay, "decay-cycle"),
                    k.leader(DaemonKind::Ghost, "ghost-recompute"),
                    format!("{cms_pre}h{rec}"),
                    format!("{cms_pre}h{res}"),
                    format!("{hat_pre}analytical{hat_post}"),
                ];
                reflex.extend(
                    k.grain_affixes()
                        .iter()
                        .map(|(pre, post)| format!("{pre}42{post}")),
                );
                for key in &reflex {
                    assert_eq!(hash_tag(key), home, "{style:?} {ns:?}: {key}");
                }
                // What scripts build from the affixes is what the builders name.
                assert_eq!(format!("{cms_pre}h{rec}"), k.cms("h"));
                assert_eq!(format!("{cms_pre}h{res}"), k.cms_resonance("h"));
                assert_eq!(
                    format!("{hat_pre}analytical{hat_post}"),
                    k.hat_mask("analytical")
                );
                let [sig, plus, minus] = k.grain_affixes();
                assert_eq!(format!("{}42{}", sig.0, sig.1), k.grain_sig(42));
                assert_eq!(format!("{}42{}", plus.0, plus.1), k.grain_bits_plus(42));
                assert_eq!(format!("{}42{}", minus.0, minus.1), k.grain_bits_minus(42));
                // The rest of the fleet keeps its own slots and names.
                let plain = Keys::new(Namespace::new(ns).unwrap_or_default()).with_style(style);
                assert_eq!(k.physics_state("SPY"), plain.physics_state("SPY"));
                assert_eq!(
                    k.stream(StreamName::Queries),
                    plain.stream(StreamName::Queries)
                );
                assert_eq!(
                    k.leader(DaemonKind::Archive, "x"),
                    plain.leader(DaemonKind::Archive, "x")
                );
                assert!(
                    k.hit_marker("1-0")
                        .ends_with("kitbash:stream:queries:done:1-0:{crossings}"),
                    "{}",
                    k.hit_marker("1-0")
                );
            }
        }
        // Without it, the seed's names and the queries stream's marker are unchanged.
        let k = Keys::default();
        assert_eq!(k.cms("h"), "cms:h");
        assert_eq!(
            k.hit_marker("1-0"),
            k.done_marker(StreamName::Queries, "1-0")
        );
        assert_eq!(
            Keys::default().with_reflex_slot(true).cms_grains("ab"),
            "cms:ab:grains:{crossings}"
        );
    }

    /// The builders `pub fn name(&self, …) -> String` of `impl Keys`, read from this file.
    fn string_builders() -> Vec<String> {
        let src = include_str!("keys.rs");
        let body = src
            .split("impl Keys {")
            .nth(1)
            .and_then(|rest| rest.split("\n}\n").next())
            .unwrap_or("");
        let mut names = Vec::new();
        for (i, part) in body.split("    pub fn ").enumerate() {
            if i == 0 {
                continue;
            }
            let signature = part.split('{').next().unwrap_or("");
            if signature.contains("-> String") {
                let name: String = part
                    .chars()
                    .take_while(|c| *c != '(' && *c != '<')
                    .collect();
                names.push(name);
            }
        }
        names
    }

    #[test]
    fn every_key_builder_is_enumerated() {
        let k = Keys::default();
        let listed: std::collections::BTreeSet<&str> = key_samples(&k)
            .into_iter()
            .map(|(n, _)| n)
            .chain(channel_samples(&k).into_iter().map(|(n, _)| n))
            .chain(NOT_KEY_BUILDERS)
            .collect();
        let builders = string_builders();
        assert!(builders.len() > 50, "the parse found {builders:?}");
        for b in &builders {
            assert!(
                listed.contains(b.as_str()),
                "Keys::{b} is not in keys::key_samples (or channel_samples / NOT_KEY_BUILDERS): \
                 list it there so the ACL generator's coverage test sees it"
            );
        }
        for l in &listed {
            assert!(
                builders.iter().any(|b| b == l),
                "{l} is listed but is no builder"
            );
        }
        let channels: Vec<&str> = channel_samples(&k).into_iter().map(|(n, _)| n).collect();
        assert_eq!(channels, CHANNEL_BUILDERS);
        assert!(
            builders
                .iter()
                .filter(|b| b.starts_with("channel_"))
                .all(|b| CHANNEL_BUILDERS.contains(&b.as_str()))
        );
    }

    #[test]
    fn family_patterns_match_their_builders() {
        let k = Keys::new(Namespace::new("t7").unwrap_or_default());
        assert_eq!(k.family_pattern(KeyFamily::Memory), "t7:memory:*");
        assert_eq!(k.family_pattern(KeyFamily::Spikes), "t7:spikes:*");
        assert!(k.spikes_index().starts_with("t7:spikes:"));
        assert!(k.wm("x").starts_with("t7:wm:"));
        assert!(k.rate("u", "/e").starts_with("t7:rate:"));
        for f in KeyFamily::ALL {
            assert_eq!(KeyFamily::parse(f.name()), Some(f));
        }
        assert_eq!(KeyFamily::parse("nope"), None);
    }
}
