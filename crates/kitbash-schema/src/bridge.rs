//! The bridge's client-facing names and positions: channel families, the offset encoding of
//! stream entry ids, and the JSON of each family's publications (`docs/PROTOCOL.md`).
//!
//! # Offsets
//! A publication's Centrifugo `offset` is its backing stream entry's id packed into one
//! integer: `offset = ms × 2^11 + seq`. It is the same on every bridge instance (it is a fact
//! of the stream, not of the bridge), strictly increasing along the stream — and so along every
//! channel that is a filtered view of it — and at most 2^53 − 1 (a JSON number a JavaScript
//! double holds exactly) for every id with `ms < 2^42` (until the year 2109) and `seq < 2^11`.
//! An id with `seq ≥ 2048` (more than 2,048 entries in one millisecond: over 2 M entries/s on one
//! stream, or the Redis clock stepping back under load) has no offset; the bridge does not
//! publish it under a wrong one but treats it as lost history (see the bridge crate).

use std::fmt;

use crate::StreamName;

/// Bits of an offset that hold the entry id's sequence number.
pub const SEQ_BITS: u32 = 11;
/// The largest offset: 2^53 − 1, the largest integer a JSON reader using doubles holds exactly.
pub const MAX_OFFSET: u64 = (1 << 53) - 1;

/// The offset of stream entry id `ms-seq`, `None` when the id cannot be represented (a
/// malformed id, `seq ≥ 2^11` or `ms ≥ 2^42`).
pub fn offset_of(id: &str) -> Option<u64> {
    let (ms, seq) = id.split_once('-')?;
    let (ms, seq): (u64, u64) = (ms.parse().ok()?, seq.parse().ok()?);
    if seq >= 1 << SEQ_BITS || ms >= 1 << (53 - SEQ_BITS) {
        return None;
    }
    Some((ms << SEQ_BITS) | seq)
}

/// The stream entry id an offset names (the inverse of [`offset_of`]); `None` above
/// [`MAX_OFFSET`].
pub fn id_of(offset: u64) -> Option<String> {
    if offset > MAX_OFFSET {
        return None;
    }
    Some(format!(
        "{}-{}",
        offset >> SEQ_BITS,
        offset & ((1 << SEQ_BITS) - 1)
    ))
}

/// One channel a client can subscribe to. Names are what [`Channel::parse`] accepts and
/// [`fmt::Display`] writes.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Channel {
    /// `physics` — every symbol's physics records.
    PhysicsAll,
    /// `physics:{SYMBOL}` — one symbol's physics records.
    Physics(String),
    /// `changes` — every committed document change.
    Changes,
    /// A document key (`quantum:status`, `quantum:daily:{date}`, `entity:{name}:{part}` …):
    /// that document's changes.
    Document(String),
    /// `reflex:crossings` — resonance crossings (queries whose resonance passed the threshold).
    Crossings,
    /// `reflex:hat` — the current hat and its switches (not recoverable: the latest on subscribe).
    Hat,
    /// `fleet` — what `kitbash status` shows, published periodically (not recoverable: the
    /// latest on subscribe).
    Fleet,
}

/// Why a channel name was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ChannelError {
    /// No family has this name.
    #[error(
        "unknown channel {0:?} (families: physics, physics:SYMBOL, changes, quantum:…, entity:NAME:PART, reflex:crossings, reflex:hat, fleet)"
    )]
    Unknown(String),
    /// The family exists, the rest of the name is not valid.
    #[error("bad channel name {0:?}: {1}")]
    Bad(String, &'static str),
}

/// Longest channel name accepted.
pub const MAX_CHANNEL_LEN: usize = 256;

fn name_ok(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':'))
}

impl Channel {
    /// The channel a client names.
    pub fn parse(name: &str) -> Result<Channel, ChannelError> {
        if name.len() > MAX_CHANNEL_LEN {
            return Err(ChannelError::Bad(
                name.chars().take(64).collect(),
                "longer than 256 bytes",
            ));
        }
        match name {
            "physics" => return Ok(Channel::PhysicsAll),
            "changes" => return Ok(Channel::Changes),
            "reflex:crossings" => return Ok(Channel::Crossings),
            "reflex:hat" => return Ok(Channel::Hat),
            "fleet" => return Ok(Channel::Fleet),
            _ => {}
        }
        if let Some(sym) = name.strip_prefix("physics:") {
            if !name_ok(sym) || sym.contains(':') {
                return Err(ChannelError::Bad(
                    name.into(),
                    "a symbol is letters, digits, '-', '_', '.'",
                ));
            }
            return Ok(Channel::Physics(sym.into()));
        }
        if name.starts_with("quantum:") || name.starts_with("entity:") {
            let rest = name.split_once(':').map_or("", |(_, r)| r);
            if !name_ok(rest) {
                return Err(ChannelError::Bad(
                    name.into(),
                    "a document key is letters, digits, '-', '_', '.', ':'",
                ));
            }
            return Ok(Channel::Document(name.into()));
        }
        Err(ChannelError::Unknown(name.chars().take(64).collect()))
    }

    /// The stream whose entries this channel publishes (its history), `None` for the channels
    /// that are not recoverable.
    pub fn stream(&self) -> Option<StreamName> {
        match self {
            Channel::PhysicsAll | Channel::Physics(_) => Some(StreamName::Physics),
            Channel::Changes | Channel::Document(_) => Some(StreamName::EntityChanges),
            Channel::Crossings => Some(StreamName::Crossings),
            Channel::Hat | Channel::Fleet => None,
        }
    }

    /// The family's name, as config's `public` list and the metrics spell it.
    pub fn family(&self) -> &'static str {
        match self {
            Channel::PhysicsAll | Channel::Physics(_) => "physics",
            Channel::Changes | Channel::Document(_) => "documents",
            Channel::Crossings | Channel::Hat => "reflex",
            Channel::Fleet => "fleet",
        }
    }

    /// Every family name [`Channel::family`] returns.
    pub const FAMILIES: [&'static str; 4] = ["physics", "documents", "reflex", "fleet"];
}

impl fmt::Display for Channel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Channel::PhysicsAll => f.write_str("physics"),
            Channel::Physics(s) => write!(f, "physics:{s}"),
            Channel::Changes => f.write_str("changes"),
            Channel::Document(k) => f.write_str(k),
            Channel::Crossings => f.write_str("reflex:crossings"),
            Channel::Hat => f.write_str("reflex:hat"),
            Channel::Fleet => f.write_str("fleet"),
        }
    }
}

/// The channels one entry of `stream` is published on, given the entry's routing value (the
/// physics record's symbol, the change's document key without namespace; unused for crossings).
pub fn channels_of(stream: StreamName, route: &str) -> [Option<Channel>; 2] {
    match stream {
        StreamName::Physics => [
            Some(Channel::PhysicsAll),
            Some(Channel::Physics(route.into())),
        ],
        StreamName::EntityChanges => [
            Some(Channel::Changes),
            Some(Channel::Document(route.into())),
        ],
        StreamName::Crossings => [Some(Channel::Crossings), None],
        _ => [None, None],
    }
}

/// The `data` of a physics publication: the record with its stream entry id first,
/// `{"id":"…","symbol":…,"ts":…,"price":…,"vector":{…},"source":…}`.
pub fn physics_data(id: &str, record: &crate::messages::PhysicsRecord) -> String {
    #[derive(serde::Serialize)]
    struct Data<'a> {
        id: &'a str,
        #[serde(flatten)]
        record: &'a crate::messages::PhysicsRecord,
    }
    serde_json::to_string(&Data { id, record }).unwrap_or_default()
}

/// The `data` of a crossing publication, `{"id":"…","hash":…,"text":…,"resonance":…,"cycle":…}`.
pub fn crossing_data(id: &str, crossing: &crate::messages::Crossing) -> String {
    #[derive(serde::Serialize)]
    struct Data<'a> {
        id: &'a str,
        #[serde(flatten)]
        crossing: &'a crate::messages::Crossing,
    }
    serde_json::to_string(&Data { id, crossing }).unwrap_or_default()
}

/// The `data` of a document-change publication:
/// `{"id":"…","key":…,"version":N,"op":…,"data":<the document after the change, or null>}`.
/// `document` must be valid JSON (or empty for a deletion).
pub fn change_data(id: &str, key: &str, version: u64, op: &str, document: &str) -> String {
    let doc = if document.is_empty() {
        "null"
    } else {
        document
    };
    format!(
        "{{\"id\":{},\"key\":{},\"version\":{version},\"op\":{},\"data\":{doc}}}",
        serde_json::to_string(id).unwrap_or_default(),
        serde_json::to_string(key).unwrap_or_default(),
        serde_json::to_string(op).unwrap_or_default(),
    )
}

/// The `data` of a `reflex:hat` publication, `{"hat":"…","version":N}` (`hat` null when unset).
pub fn hat_data(hat: Option<&str>, version: u64) -> String {
    format!(
        "{{\"hat\":{},\"version\":{version}}}",
        serde_json::to_string(&hat).unwrap_or_default()
    )
}

/// The fields of the bridge's per-stream epoch hash ([`crate::Keys::bridge_epoch`]).
pub mod epoch {
    /// The epoch: a random name of the stream's current incarnation.
    pub const EPOCH: &str = "epoch";
    /// The stream's `entries-added` when last checked (it only grows within one incarnation).
    pub const ADDED: &str = "added";
    /// The stream's `last-generated-id` when last checked (it only grows within one incarnation).
    pub const LAST: &str = "last";
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offsets_round_trip_and_fit_a_double() {
        for id in [
            "0-0",
            "0-1",
            "1-0",
            "1718000000000-3",
            "1718000000000-2047",
            "4398046511103-2047",
        ] {
            let o = offset_of(id).expect(id);
            assert!(o <= MAX_OFFSET, "{id}");
            assert_eq!(id_of(o).as_deref(), Some(id));
            assert_eq!((o as f64) as u64, o, "exact as a double: {id}");
        }
        assert_eq!(offset_of("1718000000000-3"), Some(1718000000000 * 2048 + 3));
        assert_eq!(offset_of("1-2048"), None);
        assert_eq!(offset_of("4398046511104-0"), None);
        assert_eq!(offset_of("x-1"), None);
        assert_eq!(offset_of("17"), None);
        assert_eq!(id_of(MAX_OFFSET + 1), None);
    }

    #[test]
    fn offsets_follow_id_order() {
        let ids = [
            "5-0",
            "5-1",
            "5-2047",
            "6-0",
            "1718000000000-0",
            "1718000000001-9",
        ];
        let offs: Vec<u64> = ids.iter().map(|i| offset_of(i).expect(i)).collect();
        assert!(offs.windows(2).all(|w| w[0] < w[1]), "{offs:?}");
    }

    #[test]
    fn channel_names_round_trip() {
        for n in [
            "physics",
            "physics:SPY",
            "physics:BRK.B",
            "changes",
            "quantum:status",
            "quantum:daily:2026-12-06",
            "entity:claude:identity",
            "reflex:crossings",
            "reflex:hat",
            "fleet",
        ] {
            let c = Channel::parse(n).expect(n);
            assert_eq!(c.to_string(), n);
        }
        assert!(matches!(
            Channel::parse("nope"),
            Err(ChannelError::Unknown(_))
        ));
        assert!(matches!(
            Channel::parse("physics:a:b"),
            Err(ChannelError::Bad(..))
        ));
        assert!(matches!(
            Channel::parse("physics:"),
            Err(ChannelError::Bad(..))
        ));
        assert!(matches!(
            Channel::parse("quantum:"),
            Err(ChannelError::Bad(..))
        ));
        assert!(matches!(
            Channel::parse("entity:a b"),
            Err(ChannelError::Bad(..))
        ));
        assert!(Channel::parse(&"x".repeat(300)).is_err());
        assert_eq!(Channel::Fleet.stream(), None);
        assert_eq!(
            change_data("1-0", "quantum:status", 3, "merge", r#"{"a":1}"#),
            r#"{"id":"1-0","key":"quantum:status","version":3,"op":"merge","data":{"a":1}}"#
        );
        assert!(change_data("1-0", "k", 4, "delete", "").ends_with(r#""data":null}"#));
        assert_eq!(
            hat_data(Some("creative"), 7),
            r#"{"hat":"creative","version":7}"#
        );
        assert_eq!(hat_data(None, 0), r#"{"hat":null,"version":0}"#);
        assert_eq!(
            Channel::Physics("SPY".into()).stream(),
            Some(StreamName::Physics)
        );
    }
}
