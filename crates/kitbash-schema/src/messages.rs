//! The message types that travel on streams and channels, with their validation.
//!
//! Stream bodies ([`Message`] impls) go through [`crate::wire::Envelope`]. The pub/sub payloads of
//! the seeds ([`StateUpdate`], [`QuantumUpdate`]) and the stored [`PhysicsVector`] are JSON whose
//! bytes match the seed documents' examples (see the golden tests).

use serde::{Deserialize, Serialize};

use crate::wire::Message;

/// Longest symbol accepted.
pub const MAX_SYMBOL_LEN: usize = 16;

/// Checks a ticker symbol: 1–16 of `A–Z 0–9 . - _`, starting with a letter or digit (seed 001
/// §11.2: identifiers are UPPERCASE).
pub fn validate_symbol(s: &str) -> Result<(), String> {
    if s.is_empty() {
        return Err("empty symbol".into());
    }
    if s.len() > MAX_SYMBOL_LEN {
        return Err(format!("symbol longer than {MAX_SYMBOL_LEN} bytes"));
    }
    let first_ok = s.as_bytes()[0].is_ascii_uppercase() || s.as_bytes()[0].is_ascii_digit();
    let all_ok = s
        .bytes()
        .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || matches!(b, b'.' | b'-' | b'_'));
    if !(first_ok && all_ok) {
        return Err(format!(
            "symbol {s:?} is not of the form [A-Z0-9][A-Z0-9._-]*"
        ));
    }
    Ok(())
}

/// A market tick (feynman's input, seed 001).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Tick {
    /// Ticker symbol, e.g. `SPY`.
    pub symbol: String,
    /// Trade price; finite and > 0.
    pub price: f64,
    /// Traded volume in this tick; finite and ≥ 0.
    pub size: f64,
    /// Number of trades in this tick.
    pub trades: u64,
    /// Exchange time, Unix seconds (fractional allowed).
    pub ts: f64,
}

impl Message for Tick {
    const KIND: &'static str = "tick";
    fn validate(&self) -> Result<(), String> {
        validate_symbol(&self.symbol)?;
        if !self.price.is_finite() || self.price <= 0.0 {
            return Err(format!(
                "price {} is not a finite positive number",
                self.price
            ));
        }
        if !self.size.is_finite() || self.size < 0.0 {
            return Err(format!(
                "size {} is not a finite non-negative number",
                self.size
            ));
        }
        if !self.ts.is_finite() || self.ts < 0.0 {
            return Err(format!(
                "ts {} is not a finite non-negative number",
                self.ts
            ));
        }
        Ok(())
    }
}

/// The regime read off the tail index (seed 001).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Regime {
    /// α > 3.
    Gaussian,
    /// 2 < α ≤ 3.
    #[serde(rename = "Lévy Stable")]
    LevyStable,
    /// α ≤ 2.
    Critical,
}

impl Regime {
    /// The regime for a tail index α.
    pub fn from_alpha(alpha: f64) -> Self {
        if alpha > 3.0 {
            Regime::Gaussian
        } else if alpha > 2.0 {
            Regime::LevyStable
        } else {
            Regime::Critical
        }
    }

    /// The seed's spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Regime::Gaussian => "Gaussian",
            Regime::LevyStable => "Lévy Stable",
            Regime::Critical => "Critical",
        }
    }
}

/// The 5-pillar physics vector, stored as JSON in `physics:state:{SYMBOL}` (seed 001 §2.1).
/// Field order is the seed's.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PhysicsVector {
    /// volume × close-location value.
    pub mass: f64,
    /// mass × last log return.
    pub momentum: f64,
    /// trades / volume.
    pub friction: f64,
    /// Shannon entropy (bits) of the log-return histogram.
    pub entropy: f64,
    /// (price − mode) / std of the window's prices.
    pub nash_dist: f64,
    /// Regime from the tail index.
    pub regime: Regime,
    /// Hill tail-index estimate, clipped to [0.5, 10].
    pub alpha_coefficient: f64,
}

impl PhysicsVector {
    /// The JSON stored in `physics:state:{SYMBOL}`.
    pub fn to_json(&self) -> Vec<u8> {
        // Serialising plain f64 fields and an enum cannot fail; NaN becomes `null`.
        serde_json::to_vec(self).unwrap_or_default()
    }
}

/// One entry of the physics stream: a vector and where it came from (bridge resume, replay).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PhysicsRecord {
    /// Symbol.
    pub symbol: String,
    /// The tick's exchange time, Unix seconds.
    pub ts: f64,
    /// Last price.
    pub price: f64,
    /// The vector after applying the tick.
    pub vector: PhysicsVector,
    /// Id of the tick entry that produced it (`ticks:3/1700000000000-0`).
    pub source: String,
}

impl Message for PhysicsRecord {
    const KIND: &'static str = "physics";
}

/// `data` of a [`StateUpdate`]: the seed's `alpha` and `regime`, then optional extras.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StateUpdateData {
    /// Tail index.
    pub alpha: f64,
    /// Regime.
    pub regime: Regime,
    /// Last price.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub price: Option<f64>,
    /// Mass.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mass: Option<f64>,
    /// Momentum.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub momentum: Option<f64>,
    /// Friction.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub friction: Option<f64>,
    /// Entropy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub entropy: Option<f64>,
    /// Nash distance.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nash_dist: Option<f64>,
    /// Position of the matching entry in the physics stream (for resume after reconnect).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stream_id: Option<String>,
    /// Id of the last tick of this symbol the vector includes, in its tick stream
    /// (`1766318400000-0`): the update reflects every tick of the symbol up to that id. Lets a
    /// producer match its ticks to the first update that reflects them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
}

/// The `state_update` message (seed 001 §3.1).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StateUpdate {
    /// Always `PHYSICS_UPDATE` for feynman's messages.
    pub event: String,
    /// Symbol.
    pub symbol: String,
    /// RFC 3339 UTC.
    pub timestamp: String,
    /// Payload.
    pub data: StateUpdateData,
}

impl StateUpdate {
    /// The event name feynman publishes.
    pub const PHYSICS_UPDATE: &'static str = "PHYSICS_UPDATE";

    /// JSON bytes as published.
    pub fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }
}

/// A query event (decay's input, seed 000).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct QueryEvent {
    /// The query text.
    pub text: String,
    /// `sha256(text)` hex, when the producer computed it; otherwise the consumer does.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hash: Option<String>,
    /// Unix seconds.
    pub ts: f64,
    /// Grains the application matched, if any.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub grains: Vec<u64>,
    /// The latency the application observed answering the query, in ms (feeds
    /// `metrics:latency:p95` / `p99`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latency_ms: Option<f64>,
}

/// Longest query text accepted.
pub const MAX_QUERY_LEN: usize = 4096;

impl Message for QueryEvent {
    const KIND: &'static str = "query";
    fn validate(&self) -> Result<(), String> {
        if self.text.trim().is_empty() {
            return Err("empty query text".into());
        }
        if self.text.len() > MAX_QUERY_LEN {
            return Err(format!("query text longer than {MAX_QUERY_LEN} bytes"));
        }
        if let Some(h) = &self.hash
            && (h.len() != 64 || !h.bytes().all(|b| b.is_ascii_hexdigit()))
        {
            return Err("hash is not 64 hex digits (sha256)".into());
        }
        if !self.ts.is_finite() {
            return Err("ts is not finite".into());
        }
        if let Some(l) = self.latency_ms
            && (!l.is_finite() || l < 0.0)
        {
            return Err(format!(
                "latency_ms {l} is not a finite non-negative number"
            ));
        }
        if self.grains.len() > MAX_QUERY_GRAINS {
            return Err(format!("more than {MAX_QUERY_GRAINS} grains"));
        }
        Ok(())
    }
}

/// Most grain ids one query event may carry.
pub const MAX_QUERY_GRAINS: usize = 64;

/// A resonance crossing: a query's resonance rose above the ghost threshold (decay → ghost).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Crossing {
    /// Query hash.
    pub hash: String,
    /// Query text (ghost derives the signature from it).
    pub text: String,
    /// Resonance at the crossing.
    pub resonance: f64,
    /// Decay cycle at the crossing.
    pub cycle: u64,
}

impl Message for Crossing {
    const KIND: &'static str = "crossing";
    fn validate(&self) -> Result<(), String> {
        if self.hash.is_empty() || self.hash.len() > 128 {
            return Err("hash is empty or longer than 128 bytes".into());
        }
        if self.text.trim().is_empty() || self.text.len() > MAX_QUERY_LEN {
            return Err(format!(
                "text is empty or longer than {MAX_QUERY_LEN} bytes"
            ));
        }
        if !self.resonance.is_finite() {
            return Err("resonance is not finite".into());
        }
        Ok(())
    }
}

/// What changed in the reflex path's shared data, published on `kitbash:grain-updates`
/// (JSON, e.g. `{"what":"hat","version":7}`) by `kitbash grains import` and `kitbash hat set`;
/// the ghost reloads its bank and hat and recomputes hot queries' ghosts. `version` is the value
/// of `kitbash:reflex:version` after the change (a missed message is caught by polling it).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReflexChange {
    /// `"grains"` or `"hat"`.
    pub what: String,
    /// `kitbash:reflex:version` after the change.
    pub version: u64,
}

impl ReflexChange {
    /// The grain bank changed.
    pub const GRAINS: &'static str = "grains";
    /// The current hat (or a mask) changed.
    pub const HAT: &'static str = "hat";

    /// JSON bytes as published.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }
}

/// The stored `grain:{id}:sig` JSON: the seed's `popcount`, `axiom`, `weight`, and the brief's
/// `ternary_value` = (pc+ − pc−)/(pc+ + pc−) and `confidence` = min(1, (pc+ + pc−)/bits).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct GrainSig {
    /// Non-zero trits (pc+ + pc−).
    pub popcount: u32,
    /// What the grain is about (`"thermodynamics"`).
    pub axiom: String,
    /// The grain's weight.
    pub weight: f64,
    /// (pc+ − pc−)/(pc+ + pc−), 0 for an all-zero grain.
    pub ternary_value: f64,
    /// min(1, (pc+ + pc−)/bits).
    pub confidence: f64,
}

/// One line of a grain file for `kitbash grains import` (JSONL, or one element of a JSON
/// array): `{"id":42,"axiom":"thermodynamics","weight":1.58,"trits":[1,0,-1,…]}` or with
/// `"plus"` and `"minus"` as hex strings of the bit planes (trit `i` is bit `i % 8` of byte
/// `i / 8`) instead of `"trits"`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GrainLine {
    /// Grain id (`grain:{id}:*`).
    pub id: u64,
    /// What the grain is about.
    pub axiom: String,
    /// The grain's weight (finite).
    pub weight: f64,
    /// The trits, each −1, 0 or +1 (length = the configured dimension).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trits: Option<Vec<i8>>,
    /// The plus plane as hex.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub plus: Option<String>,
    /// The minus plane as hex.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub minus: Option<String>,
}

/// Longest axiom accepted in a grain file.
pub const MAX_AXIOM_LEN: usize = 256;

/// Which JSON document an entity update patches (seed 002's file → key mapping).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum EntityTarget {
    /// `quantum:status`.
    Status,
    /// `quantum:session:current`.
    SessionCurrent,
    /// `quantum:daily:{date}`.
    Daily {
        /// `YYYY-MM-DD`.
        date: String,
    },
    /// `quantum:work:summary24h`.
    WorkSummary24h,
    /// `entity:{name}:{part}`.
    Entity {
        /// Entity name (`claude`).
        name: String,
        /// Part (`identity`).
        part: String,
    },
}

impl EntityTarget {
    /// The key this target names.
    pub fn key(&self, keys: &crate::Keys) -> String {
        match self {
            EntityTarget::Status => keys.quantum_status(),
            EntityTarget::SessionCurrent => keys.quantum_session_current(),
            EntityTarget::Daily { date } => keys.quantum_daily(date),
            EntityTarget::WorkSummary24h => keys.quantum_work_summary24h(),
            EntityTarget::Entity { name, part } => keys.entity(name, part),
        }
    }

    /// The seed's `type` for the `quantum:updates` message.
    pub fn update_type(&self) -> &'static str {
        match self {
            EntityTarget::Status => "status_update",
            EntityTarget::SessionCurrent => "session_update",
            EntityTarget::Daily { .. } => "daily_update",
            EntityTarget::WorkSummary24h => "work_summary_update",
            EntityTarget::Entity { .. } => "entity_update",
        }
    }
}

fn valid_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 128
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

/// What an entity update does to its document.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EntityOp {
    /// RFC 7396 JSON merge patch; `patch` must be an object.
    #[default]
    Merge,
    /// Counter increments: `patch` is an object whose number leaves are added to the
    /// document's numbers at the same paths (a missing counter starts at 0).
    Increment,
    /// Replace the whole document with `patch` (any JSON value).
    Replace,
    /// Delete the document (`patch` is ignored).
    Delete,
}

impl EntityOp {
    /// Whether this is the default operation (left out of the encoding).
    pub fn is_merge(&self) -> bool {
        *self == EntityOp::Merge
    }

    /// The operation's name in timelines and change records.
    pub fn name(self) -> &'static str {
        match self {
            EntityOp::Merge => "merge",
            EntityOp::Increment => "increment",
            EntityOp::Replace => "replace",
            EntityOp::Delete => "delete",
        }
    }
}

/// An entity-update event (entity's input, seed 002): a change to one JSON document, routed to
/// the entity partition `partition_of(target key, P)` ([`crate::StreamName::EntityPart`]).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EntityUpdate {
    /// The document to change.
    pub target: EntityTarget,
    /// The operation's argument: an RFC 7386 merge patch (the default operation), the
    /// increments, or the new document.
    pub patch: serde_json::Value,
    /// What to do with `patch` (absent = `merge`).
    #[serde(default, skip_serializing_if = "EntityOp::is_merge")]
    pub op: EntityOp,
    /// Apply only if the document is at this version (optimistic concurrency for a client that
    /// read the document first); otherwise the event is dead-lettered as a version conflict.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expected_version: Option<u64>,
}

impl EntityUpdate {
    /// A merge patch of `target`.
    pub fn merge(target: EntityTarget, patch: serde_json::Value) -> Self {
        Self {
            target,
            patch,
            op: EntityOp::Merge,
            expected_version: None,
        }
    }

    /// Another operation on `target`.
    pub fn with_op(target: EntityTarget, op: EntityOp, patch: serde_json::Value) -> Self {
        Self {
            target,
            patch,
            op,
            expected_version: None,
        }
    }
}

impl Message for EntityUpdate {
    const KIND: &'static str = "entity_update";
    fn validate(&self) -> Result<(), String> {
        match &self.target {
            EntityTarget::Daily { date } => {
                let b = date.as_bytes();
                let ok = b.len() == 10
                    && b[4] == b'-'
                    && b[7] == b'-'
                    && b.iter()
                        .enumerate()
                        .all(|(i, c)| i == 4 || i == 7 || c.is_ascii_digit());
                if !ok {
                    return Err(format!("daily date {date:?} is not YYYY-MM-DD"));
                }
            }
            EntityTarget::Entity { name, part } if !valid_name(name) || !valid_name(part) => {
                return Err("entity name and part must be 1–128 of [A-Za-z0-9._-]".into());
            }
            _ => {}
        }
        if matches!(self.op, EntityOp::Merge | EntityOp::Increment) && !self.patch.is_object() {
            return Err(format!(
                "a {} patch must be a JSON object, got {}",
                self.op.name(),
                json_kind(&self.patch)
            ));
        }
        Ok(())
    }
}

impl EntityTarget {
    /// The routing key of the document: its key without namespace (`quantum:status`), so every
    /// producer routes a document to the same partition, `partition_of(route_key, P)`.
    pub fn route_key(&self) -> String {
        self.key(&crate::Keys::default())
    }
}

/// An [`EntityUpdate`] with its routing key computed once on decode (what the entity partitions
/// consume; the wire format is exactly [`EntityUpdate`]'s).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(from = "EntityUpdate", into = "EntityUpdate")]
pub struct RoutedEntityUpdate {
    /// The update.
    pub update: EntityUpdate,
    /// [`EntityTarget::route_key`] of its target.
    pub route: String,
}

impl From<EntityUpdate> for RoutedEntityUpdate {
    fn from(update: EntityUpdate) -> Self {
        Self {
            route: update.target.route_key(),
            update,
        }
    }
}

impl From<RoutedEntityUpdate> for EntityUpdate {
    fn from(r: RoutedEntityUpdate) -> Self {
        r.update
    }
}

impl Message for RoutedEntityUpdate {
    const KIND: &'static str = EntityUpdate::KIND;
    const VERSION: u32 = EntityUpdate::VERSION;
    fn validate(&self) -> Result<(), String> {
        self.update.validate()
    }
}

/// The JSON type of `v`, for error messages.
pub fn json_kind(v: &serde_json::Value) -> &'static str {
    match v {
        serde_json::Value::Null => "null",
        serde_json::Value::Bool(_) => "a boolean",
        serde_json::Value::Number(_) => "a number",
        serde_json::Value::String(_) => "a string",
        serde_json::Value::Array(_) => "an array",
        serde_json::Value::Object(_) => "an object",
    }
}

/// The `quantum:updates` message (seed 002): `{"type":…,"key":…,"data":…}`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct QuantumUpdate {
    /// `status_update`, `entity_update`, …
    #[serde(rename = "type")]
    pub kind: String,
    /// The key that changed.
    pub key: String,
    /// The document after the update.
    pub data: serde_json::Value,
    /// The document's version counter after the update (absent in the seed's example).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<u64>,
    /// Id of the change's entry in the entity changes stream ([`crate::StreamName::EntityChanges`]):
    /// where a reader that missed messages resumes (absent in the seed's example).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stream_id: Option<String>,
}

impl QuantumUpdate {
    /// JSON bytes as published: exactly what the seed's `json.dumps` wrote, so existing
    /// dashboard code sees the same bytes.
    pub fn to_json(&self) -> Vec<u8> {
        crate::pyjson::to_vec(self).unwrap_or_default()
    }
}

/// The `quantum:updates` bytes of one change, split around the value of `stream_id` (which only
/// the commit script knows): `prefix + id + suffix` is exactly [`QuantumUpdate::to_json`] of
/// `{type, key, data, version, stream_id: id}`, without cloning `data`.
pub fn quantum_update_parts(
    kind: &str,
    key: &str,
    data: &serde_json::Value,
    version: u64,
) -> (Vec<u8>, Vec<u8>) {
    #[derive(Serialize)]
    struct Borrowed<'a> {
        #[serde(rename = "type")]
        kind: &'a str,
        key: &'a str,
        data: &'a serde_json::Value,
        version: u64,
        stream_id: &'a str,
    }
    const MARK: &str = "\u{1}stream-id\u{1}";
    let b = Borrowed {
        kind,
        key,
        data,
        version,
        stream_id: MARK,
    };
    let bytes = crate::pyjson::to_vec(&b).unwrap_or_default();
    // pyjson writes U+0001 as \u0001: find the last occurrence (stream_id is the last field).
    let mark = br#""\u0001stream-id\u0001""#;
    match bytes.windows(mark.len()).rposition(|w| w == mark) {
        Some(at) => {
            // The prefix keeps the opening quote, the suffix starts at the closing one.
            (bytes[..=at].to_vec(), bytes[at + mark.len() - 1..].to_vec())
        }
        None => (bytes, Vec::new()),
    }
}

/// Field names of an entry of the entity changes stream ([`crate::StreamName::EntityChanges`])
/// and of a document's timeline ([`crate::Keys::document_timeline`]); all values are strings.
pub mod entity_change {
    /// The document key (changes stream only).
    pub const KEY: &str = "key";
    /// The document's version after the change.
    pub const VERSION: &str = "version";
    /// `merge`, `increment`, `replace`, `delete`, or `write` (a writer outside the daemon).
    pub const OP: &str = "op";
    /// The entity-stream entry id that caused the change (`partition/id`; empty for `write`).
    pub const ENTRY: &str = "entry";
    /// The document after the change, compact JSON; empty when deleted (changes stream only).
    pub const DATA: &str = "data";
    /// The operation's argument, compact JSON (timeline only).
    pub const PATCH: &str = "patch";
    /// The id of the change in the changes stream (timeline only).
    pub const CHANGE: &str = "change";
}

/// A memory token to cache and index (archive's indexing input, seed 004).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct MemoryToken {
    /// Memory id (`memory:{id}`).
    pub id: String,
    /// Owning user.
    pub user: String,
    /// Context id.
    pub context: String,
    /// Token id.
    pub token: String,
    /// The token's content.
    pub content: serde_json::Value,
    /// Creation time, Unix seconds.
    pub ts: f64,
    /// Accesses so far.
    #[serde(default)]
    pub accesses: u64,
}

impl Message for MemoryToken {
    const KIND: &'static str = "memory_token";
    fn validate(&self) -> Result<(), String> {
        for (what, v) in [
            ("id", &self.id),
            ("user", &self.user),
            ("context", &self.context),
            ("token", &self.token),
        ] {
            if !valid_name(v) {
                return Err(format!("{what} must be 1–128 of [A-Za-z0-9._-]"));
            }
        }
        if !self.ts.is_finite() || self.ts < 0.0 {
            return Err("ts is not a finite non-negative number".into());
        }
        Ok(())
    }
}

/// What a daemon instance says about itself in its heartbeat key.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Heartbeat {
    /// Daemon kind name.
    pub kind: String,
    /// Unique instance name (also its consumer name).
    pub instance: String,
    /// Host name.
    pub host: String,
    /// Process id.
    pub pid: u32,
    /// Start time, Unix ms.
    pub started_ms: i64,
    /// Last beat, Unix ms.
    pub beat_ms: i64,
    /// Crate version.
    pub version: String,
    /// Admin endpoint address, when enabled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub admin: Option<String>,
    /// Addresses of the routers it serves (e.g. the bridge's WebSocket), by router name.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub serves: std::collections::BTreeMap<String, String>,
    /// Figures the daemon reports about itself, by name (the bridge's `connections`,
    /// `subscriptions`, `slow_closes`, …), shown by `kitbash status`.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub stats: std::collections::BTreeMap<String, u64>,
    /// Whether the instance considers itself ready.
    pub ready: bool,
}
