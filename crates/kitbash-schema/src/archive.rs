//! The archive's on-disk format: where each stream's files live, their names, the Parquet
//! column names, the encoding of an entry's raw fields, and the manifest. `kitbash-archive`
//! writes it; `kitbash archive`, `kitbash replay`, DuckDB, pyarrow and polars read it.
//!
//! # Layout
//! `{archive.dir}/{namespace}/{stream dir}/` per stream ([`stream_dir`]): `queries/`,
//! `ticks/p=3/` (Hive-style, so `read_parquet('…/ticks/*/*.parquet', hive_partitioning=true)`
//! gives a `p` column), one Parquet file per segment named by its first entry id
//! ([`file_name`]), and `manifest.json` ([`Manifest`]). Files being written end in `.tmp` and
//! are removed at start-up: a file exists under its final name only once it is complete and
//! fsynced, and is part of the archive only once the manifest lists it.
//!
//! # Rows
//! One row per entry, in stream order. Every file has the envelope columns ([`col`]):
//! `id_ms`, `id_seq` (UInt64, the entry id split, with statistics for pruning), `type`, `v`,
//! `ct`, `mid`, plus `body` and `raw`. Streams with a typed layout add that message's
//! columns (ticks: `symbol`, `price`, `size`, `trades`, `ts`; physics: `symbol`, `ts`, `price`,
//! the seven vector fields, `source`; queries, crossings, memory tokens and entity updates:
//! [`message_columns`]; entity changes: [`ENTITY_CHANGE_FIELDS`]). Which columns hold an entry:
//! - **typed**: a standard envelope (`type`, `v`, `ct`, `d`[, `mid`] in that order, `ct =
//!   msgpack`) of the stream's message type whose body re-encodes byte for byte from the typed
//!   columns: `body` and `raw` are null;
//! - **body**: a standard envelope otherwise (JSON, another encoder, unknown fields, another
//!   type): the envelope columns and `body` = the `d` bytes;
//! - **fields** (entity changes): exactly [`ENTITY_CHANGE_FIELDS`], UTF-8: their columns, the
//!   envelope columns null;
//! - **raw**: anything else (other field names or order): `raw` holds every field
//!   ([`encode_fields`]) and the envelope columns are null.
//!
//! Replay rebuilds each entry's fields exactly (names, order, bytes) from these columns.

use serde::{Deserialize, Serialize};

use crate::StreamName;

/// Parquet column names.
pub mod col {
    /// Entry id, milliseconds part.
    pub const ID_MS: &str = "id_ms";
    /// Entry id, sequence part.
    pub const ID_SEQ: &str = "id_seq";
    /// Envelope `type`.
    pub const TYPE: &str = "type";
    /// Envelope `v`.
    pub const V: &str = "v";
    /// Envelope `ct`.
    pub const CT: &str = "ct";
    /// Envelope `mid`.
    pub const MID: &str = "mid";
    /// The `d` bytes of an envelope that is not stored typed.
    pub const BODY: &str = "body";
    /// Every field of an entry that is not a standard envelope ([`super::encode_fields`]).
    pub const RAW: &str = "raw";
    /// Tick / physics: symbol.
    pub const SYMBOL: &str = "symbol";
    /// Tick / physics: price.
    pub const PRICE: &str = "price";
    /// Tick: size.
    pub const SIZE: &str = "size";
    /// Tick: trades.
    pub const TRADES: &str = "trades";
    /// Tick / physics: exchange time, Unix seconds.
    pub const TS: &str = "ts";
    /// Physics: the vector's fields, in the seed's order.
    pub const VECTOR: [&str; 7] = [
        "mass",
        "momentum",
        "friction",
        "entropy",
        "nash_dist",
        "regime",
        "alpha_coefficient",
    ];
    /// Physics: the tick entry that produced the vector.
    pub const SOURCE: &str = "source";
}

/// The Arrow type of a typed column of a message layout ([`MessageColumn`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ColType {
    /// Text.
    Utf8,
    /// A float, bit-exact.
    Float64,
    /// An unsigned integer.
    UInt64,
    /// A list of unsigned integers (query grains).
    ListUInt64,
    /// Any JSON value, as its compact JSON text (a document patch, a token's content): DuckDB
    /// reads it with `json(…)`, pandas with `json.loads`.
    Json,
}

/// One typed column of a message layout: the message field of the same name. Optional fields
/// (absent from the body) are null.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MessageColumn {
    /// The column and message field name.
    pub name: &'static str,
    /// Its Arrow type.
    pub ty: ColType,
    /// Whether the field may be absent.
    pub optional: bool,
}

const fn c(name: &'static str, ty: ColType, optional: bool) -> MessageColumn {
    MessageColumn { name, ty, optional }
}

/// The typed columns of the message layouts beyond ticks and physics, one per message type,
/// named after its fields (so `SELECT text, count(*) FROM 'queries/*.parquet' GROUP BY text`
/// works in DuckDB). A row is typed only when its body re-encodes byte for byte from them.
pub mod message_columns {
    use super::{ColType as T, MessageColumn, c};

    /// `query` (the queries stream).
    pub const QUERY: &[MessageColumn] = &[
        c("text", T::Utf8, false),
        c("hash", T::Utf8, true),
        c("ts", T::Float64, false),
        c("grains", T::ListUInt64, true),
        c("latency_ms", T::Float64, true),
    ];
    /// `crossing` (the crossings stream).
    pub const CROSSING: &[MessageColumn] = &[
        c("hash", T::Utf8, false),
        c("text", T::Utf8, false),
        c("resonance", T::Float64, false),
        c("cycle", T::UInt64, false),
    ];
    /// `memory_token` (the memory stream).
    pub const MEMORY_TOKEN: &[MessageColumn] = &[
        c("id", T::Utf8, false),
        c("user", T::Utf8, false),
        c("context", T::Utf8, false),
        c("token", T::Utf8, false),
        c("content", T::Json, false),
        c("ts", T::Float64, false),
        c("accesses", T::UInt64, false),
    ];
    /// `entity_update` (the entity partitions and the plain entity stream).
    pub const ENTITY_UPDATE: &[MessageColumn] = &[
        c("target", T::Json, false),
        c("patch", T::Json, false),
        c("op", T::Utf8, true),
        c("expected_version", T::UInt64, true),
    ];
}

/// The entity-changes stream's entries are plain fields, not envelopes: a row whose fields are
/// exactly these, in this order, all UTF-8, is stored in text columns of the same names (the
/// envelope columns null); anything else goes to `raw`.
pub const ENTITY_CHANGE_FIELDS: [&str; 5] = [
    crate::messages::entity_change::KEY,
    crate::messages::entity_change::VERSION,
    crate::messages::entity_change::OP,
    crate::messages::entity_change::ENTRY,
    crate::messages::entity_change::DATA,
];

/// The field `kitbash replay --new-ids` appends to each entry: the id it had when recorded.
pub const REPLAY_OF: &str = "replay_of";

/// The manifest's file name in a stream's directory.
pub const MANIFEST: &str = "manifest.json";
/// The suffix of files being written (removed at start-up).
pub const TMP_SUFFIX: &str = ".tmp";
/// The manifest format version.
pub const MANIFEST_VERSION: u32 = 1;

/// The directory of `stream` under a namespace's archive root: `queries`, `ticks/p=3`.
pub fn stream_dir(stream: StreamName) -> String {
    match stream.partition() {
        Some(p) => format!("{}/p={p}", stream.base()),
        None => stream.base().to_owned(),
    }
}

/// The file of a segment whose first entry is `ms-seq`: both parts zero-padded to 20 digits,
/// so names sort by id (`00000001700000000000-00000000000000000000.parquet`).
pub fn file_name(ms: u64, seq: u64) -> String {
    format!("{ms:020}-{seq:020}.parquet")
}

/// An entry's fields as one byte string: for each field, its name's length (u32 little
/// endian), the name, its value's length (u32 LE), the value.
pub fn encode_fields<'a, I>(fields: I) -> Vec<u8>
where
    I: IntoIterator<Item = (&'a [u8], &'a [u8])>,
{
    let mut out = Vec::new();
    for (k, v) in fields {
        for part in [k, v] {
            out.extend_from_slice(&(part.len() as u32).to_le_bytes());
            out.extend_from_slice(part);
        }
    }
    out
}

/// Reads [`encode_fields`]; `None` when the bytes are not such an encoding.
pub fn decode_fields(mut bytes: &[u8]) -> Option<Vec<(Vec<u8>, Vec<u8>)>> {
    let mut out = Vec::new();
    let take = |b: &mut &[u8]| -> Option<Vec<u8>> {
        let (len, rest) = b.split_first_chunk::<4>()?;
        let len = u32::from_le_bytes(*len) as usize;
        let part = rest.get(..len)?.to_vec();
        *b = &rest[len..];
        Some(part)
    };
    while !bytes.is_empty() {
        let k = take(&mut bytes)?;
        let v = take(&mut bytes)?;
        out.push((k, v));
    }
    Some(out)
}

/// `manifest.json`: the files that make up one stream's archive, in id order, without gaps in
/// the sense that matters — every entry up to `last_id` that was in the stream when it was
/// archived is in exactly one listed file — and without overlaps (each file starts after the
/// previous one's last id).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    /// [`MANIFEST_VERSION`].
    pub version: u32,
    /// Logical stream name.
    pub stream: String,
    /// Fencing epoch of the last writer (its lease's acquisition number): a writer whose epoch
    /// is below this one has lost its lease and must not write.
    pub epoch: u64,
    /// The files, oldest first.
    pub files: Vec<ManifestFile>,
}

/// One file of a [`Manifest`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ManifestFile {
    /// File name ([`file_name`]).
    pub name: String,
    /// First entry id, `ms-seq`.
    pub first_id: String,
    /// Last entry id.
    pub last_id: String,
    /// Rows (entries).
    pub rows: u64,
    /// File size, bytes.
    pub bytes: u64,
    /// SHA-256 of the whole file, hex (Parquet writers keep no page checksums).
    pub sha256: String,
    /// The epoch that wrote it.
    pub epoch: u64,
}

impl Manifest {
    /// The last id archived, if any.
    pub fn last_id(&self) -> Option<&str> {
        self.files.last().map(|f| f.last_id.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_round_trip_and_garbage_is_refused() {
        let fields: Vec<(&[u8], &[u8])> = vec![(b"type", b"tick"), (b"", b"\xff\x00"), (b"d", b"")];
        let enc = encode_fields(fields.iter().copied());
        let dec = decode_fields(&enc).expect("decode");
        assert_eq!(
            dec,
            fields
                .iter()
                .map(|(k, v)| (k.to_vec(), v.to_vec()))
                .collect::<Vec<_>>()
        );
        assert_eq!(decode_fields(&enc[..enc.len() - 1]), None);
        assert_eq!(decode_fields(&[]), Some(vec![]));
    }

    #[test]
    fn names_sort_by_id_and_partitions_are_hive_directories() {
        assert!(file_name(9, 5) < file_name(10, 0));
        assert!(file_name(10, 2) < file_name(10, 10));
        assert_eq!(stream_dir(StreamName::Ticks(3)), "ticks/p=3");
        assert_eq!(stream_dir(StreamName::Queries), "queries");
        assert_eq!(stream_dir(StreamName::EntityChanges), "entity-changes");
    }
}

/// The figures an archive instance reports in its heartbeat (`stats`, shown by `kitbash status`
/// and the dashboard), one set per stream whose lease it holds: `{name}.{stream}`.
pub mod stats {
    /// Files in the stream's manifest.
    pub const FILES: &str = "files";
    /// Rows (entries) in those files.
    pub const ROWS: &str = "rows";
    /// Bytes of those files.
    pub const BYTES: &str = "bytes";
    /// The ms part of the newest archived id (how far the archive has come).
    pub const ARCHIVED_MS: &str = "archived_ms";

    /// The heartbeat name of figure `name` of logical stream `stream`.
    pub fn name(name: &str, stream: &str) -> String {
        format!("{name}.{stream}")
    }
}
