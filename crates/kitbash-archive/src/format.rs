//! Segments: entries in, one Parquet file out, and back — byte-identical.
//!
//! The layout (directories, names, columns, which column holds which entry) is
//! `kitbash_schema::archive`; this module is its arrow-rs implementation. [`Segment`] buffers
//! entries and writes a file; [`read`] gives the entries back with their exact fields.
//!
//! Typed columns: ticks and physics by hand; queries, crossings, memory tokens and entity
//! updates through one codec (`Spec`: the message as a JSON object of its fields, one column
//! per field as `kitbash_schema::archive::message_columns` says); entity changes (plain fields)
//! as text columns of their field names. A row is typed only when its fields re-encode byte for
//! byte from the columns, checked as it is written.
//!
//! Column encodings, chosen by measurement on `kitbash bench archive`'s MarketSim ticks and
//! physics (docs/BENCHMARKS.md; zstd at `[archive] zstd_level` everywhere; never ALP, which DuckDB, pyarrow and
//! polars cannot read): ids and `v` DELTA_BINARY_PACKED; `ts` BYTE_STREAM_SPLIT (its exponent
//! and high bytes barely move: 414 KB → 19 KB per 200,000 ticks); prices, `entropy`,
//! `alpha_coefficient` PLAIN without dictionary (BYTE_STREAM_SPLIT made them bigger);
//! `mass`, `momentum`, `nash_dist` BYTE_STREAM_SPLIT (5–6 % smaller); `size`, `trades`,
//! `friction` and strings with a dictionary (their values repeat); `mid` and physics `source`
//! DELTA_BYTE_ARRAY (prefix deltas: they share prefixes and never repeat). Row groups of
//! 65,536 rows, one data page each, statistics on, so readers prune id ranges by `id_ms`.

use std::io::Write;
use std::sync::Arc;

use arrow_array::builder::{
    BinaryBuilder, Float64Builder, ListBuilder, StringBuilder, UInt32Builder, UInt64Builder,
};
use arrow_array::{Array, ArrayRef, RecordBatch};
use arrow_schema::{DataType, Field, Schema};
use kitbash_schema::archive::{self as layout, ColType, MessageColumn, col, message_columns};
use kitbash_schema::messages::{
    Crossing, EntityUpdate, MemoryToken, PhysicsRecord, PhysicsVector, QueryEvent, Regime, Tick,
};
use kitbash_schema::{Message, StreamName};
use parquet::arrow::ArrowWriter;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::basic::{Compression, Encoding, ZstdLevel};
use parquet::file::properties::WriterProperties;
use parquet::schema::types::ColumnPath;

/// Failures of the format.
#[derive(Debug, thiserror::Error)]
pub enum FormatError {
    /// Parquet or Arrow refused.
    #[error("parquet: {0}")]
    Parquet(#[from] parquet::errors::ParquetError),
    /// Arrow refused.
    #[error("arrow: {0}")]
    Arrow(#[from] arrow_schema::ArrowError),
    /// A file's contents are not what this format writes.
    #[error("{0}")]
    Corrupt(String),
    /// An entry id is not `ms-seq`.
    #[error("entry id {0:?} is not ms-seq")]
    BadId(String),
    /// Reading or writing the file.
    #[error("io: {0}")]
    Io(#[from] std::io::Error),
}

/// An entry's field/value pairs in XADD order.
pub type Fields = Vec<(Vec<u8>, Vec<u8>)>;

/// One entry as it is in the stream.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    /// `ms-seq`.
    pub id: String,
    /// Field/value pairs in XADD order.
    pub fields: Fields,
}

/// Which typed columns a stream's files carry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Layout {
    /// Envelope, `body` and `raw` only.
    Plain,
    /// Plus the [`Tick`] columns.
    Ticks,
    /// Plus the [`PhysicsRecord`] columns.
    Physics,
    /// Plus the [`QueryEvent`] columns ([`message_columns::QUERY`]).
    Queries,
    /// Plus the [`Crossing`] columns.
    Crossings,
    /// Plus the [`MemoryToken`] columns.
    Memory,
    /// Plus the [`EntityUpdate`] columns (the entity partitions).
    EntityUpdates,
    /// Plus the entity-change field columns ([`layout::ENTITY_CHANGE_FIELDS`]).
    EntityChanges,
}

impl Layout {
    /// The layout of `stream`'s files.
    pub fn of(stream: StreamName) -> Self {
        match stream {
            StreamName::Ticks(_) => Layout::Ticks,
            StreamName::Physics => Layout::Physics,
            StreamName::Queries => Layout::Queries,
            StreamName::Crossings => Layout::Crossings,
            StreamName::Memory => Layout::Memory,
            StreamName::EntityPart(_) => Layout::EntityUpdates,
            StreamName::EntityChanges => Layout::EntityChanges,
            // The plain entity stream (only the runtime's tests use it), and any stream added
            // later until it gets a layout: envelope, body and raw columns.
            _ => Layout::Plain,
        }
    }

    /// The message layout's columns and codec, for the layouts that have one.
    fn spec(self) -> Option<&'static Spec> {
        match self {
            Layout::Queries => Some(&QUERY_SPEC),
            Layout::Crossings => Some(&CROSSING_SPEC),
            Layout::Memory => Some(&MEMORY_SPEC),
            Layout::EntityUpdates => Some(&ENTITY_UPDATE_SPEC),
            Layout::Plain | Layout::Ticks | Layout::Physics | Layout::EntityChanges => None,
        }
    }
}

type JsonMap = serde_json::Map<String, serde_json::Value>;

/// A message type stored in the columns its fields name ([`message_columns`]): decoded from
/// its MessagePack body into a JSON object of its fields, and encoded back from one.
#[derive(Debug)]
struct Spec {
    kind: &'static str,
    version: u32,
    cols: &'static [MessageColumn],
    decode: fn(&[u8]) -> Option<JsonMap>,
    encode: fn(JsonMap) -> Option<Vec<u8>>,
}

fn decode_as<M: Message>(d: &[u8]) -> Option<JsonMap> {
    let m: M = rmp_serde::from_slice(d).ok()?;
    match serde_json::to_value(&m).ok()? {
        serde_json::Value::Object(o) => Some(o),
        _ => None,
    }
}

fn encode_as<M: Message>(o: JsonMap) -> Option<Vec<u8>> {
    let m: M = serde_json::from_value(serde_json::Value::Object(o)).ok()?;
    rmp_serde::to_vec_named(&m).ok()
}

macro_rules! spec {
    ($name:ident, $ty:ty, $cols:expr) => {
        static $name: Spec = Spec {
            kind: <$ty as Message>::KIND,
            version: <$ty as Message>::VERSION,
            cols: $cols,
            decode: decode_as::<$ty>,
            encode: encode_as::<$ty>,
        };
    };
}
spec!(QUERY_SPEC, QueryEvent, message_columns::QUERY);
spec!(CROSSING_SPEC, Crossing, message_columns::CROSSING);
spec!(MEMORY_SPEC, MemoryToken, message_columns::MEMORY_TOKEN);
spec!(
    ENTITY_UPDATE_SPEC,
    EntityUpdate,
    message_columns::ENTITY_UPDATE
);

/// The spec of a message kind (what a typed row's `type` column names).
fn spec_of_kind(kind: &str) -> Option<&'static Spec> {
    [
        &QUERY_SPEC,
        &CROSSING_SPEC,
        &MEMORY_SPEC,
        &ENTITY_UPDATE_SPEC,
    ]
    .into_iter()
    .find(|s| s.kind == kind)
}

/// One typed column's value in one row.
#[derive(Clone, Debug, PartialEq)]
enum Cell {
    Str(String),
    F64(f64),
    U64(u64),
    List(Vec<u64>),
    Json(String),
}

/// A message's fields as cells of its spec's columns (`None`: absent); `None` when a field
/// does not fit its column or is not a column (then the row keeps its body).
fn cells_of(spec: &Spec, mut o: JsonMap) -> Option<Vec<Option<Cell>>> {
    use serde_json::Value;
    let mut out = Vec::with_capacity(spec.cols.len());
    for c in spec.cols {
        let cell = match o.remove(c.name) {
            None if c.optional => None,
            None => return None,
            Some(v) => Some(match (c.ty, v) {
                (ColType::Utf8, Value::String(s)) => Cell::Str(s),
                (ColType::Float64, Value::Number(n)) if n.is_f64() => Cell::F64(n.as_f64()?),
                (ColType::UInt64, Value::Number(n)) => Cell::U64(n.as_u64()?),
                (ColType::ListUInt64, Value::Array(a)) => {
                    Cell::List(a.iter().map(Value::as_u64).collect::<Option<Vec<u64>>>()?)
                }
                (ColType::Json, v) => Cell::Json(serde_json::to_string(&v).ok()?),
                _ => return None,
            }),
        };
        out.push(cell);
    }
    // A field without a column would be lost.
    o.is_empty().then_some(out)
}

/// The body a typed row re-encodes to.
fn body_of(spec: &Spec, cells: &[Option<Cell>]) -> Option<Vec<u8>> {
    use serde_json::Value;
    let mut o = JsonMap::new();
    for (c, cell) in spec.cols.iter().zip(cells) {
        let Some(cell) = cell else { continue };
        let v = match cell {
            Cell::Str(s) => Value::String(s.clone()),
            Cell::F64(f) => Value::from(*f),
            Cell::U64(u) => Value::from(*u),
            Cell::List(l) => Value::from(l.clone()),
            Cell::Json(j) => serde_json::from_str(j).ok()?,
        };
        o.insert(c.name.to_owned(), v);
    }
    (spec.encode)(o)
}

/// The envelope columns of one row.
#[derive(Clone, Debug)]
struct Env {
    kind: String,
    v: u32,
    ct: String,
    mid: Option<String>,
}

#[derive(Clone, Debug)]
enum Typed {
    Tick(Tick),
    Physics(PhysicsRecord),
    Message(&'static Spec, Vec<Option<Cell>>),
}

#[derive(Clone, Debug)]
enum Body {
    Typed(Env, Typed),
    Bytes(Env, Vec<u8>),
    /// Plain fields of a fields layout (entity changes), their values in column order.
    Fields(Vec<String>),
    Raw(Vec<u8>),
}

#[derive(Clone, Debug)]
struct Row {
    ms: u64,
    seq: u64,
    body: Body,
}

/// Splits `ms-seq`.
pub fn parse_id(id: &str) -> Result<(u64, u64), FormatError> {
    let bad = || FormatError::BadId(id.to_owned());
    let (ms, seq) = id.split_once('-').ok_or_else(bad)?;
    Ok((
        ms.parse().map_err(|_| bad())?,
        seq.parse().map_err(|_| bad())?,
    ))
}

/// How an entry is stored (see `kitbash_schema::archive`), checked by rebuilding its fields.
/// `scratch` holds the re-encoded body of the check (kept between calls: no allocation per
/// entry).
fn classify<K: AsRef<[u8]>, V: AsRef<[u8]>>(
    layout: Layout,
    fields: &[(K, V)],
    scratch: &mut Vec<u8>,
) -> Body {
    let raw = || {
        Body::Raw(layout::encode_fields(
            fields.iter().map(|(k, v)| (k.as_ref(), v.as_ref())),
        ))
    };
    let names: Vec<&[u8]> = fields.iter().map(|(k, _)| k.as_ref()).collect();
    if layout == Layout::EntityChanges
        && names.len() == layout::ENTITY_CHANGE_FIELDS.len()
        && names
            .iter()
            .zip(layout::ENTITY_CHANGE_FIELDS)
            .all(|(n, f)| *n == f.as_bytes())
        && let Some(values) = fields
            .iter()
            .map(|(_, v)| String::from_utf8(v.as_ref().to_vec()).ok())
            .collect::<Option<Vec<String>>>()
    {
        return Body::Fields(values);
    }
    let standard: [&[u8]; 4] = [b"type", b"v", b"ct", b"d"];
    let with_mid = names.len() == 5 && names[4] == b"mid";
    if names.len() < 4
        || names[..4] != standard
        || (names.len() == 5 && !with_mid)
        || names.len() > 5
    {
        return raw();
    }
    let text = |i: usize| {
        std::str::from_utf8(fields[i].1.as_ref())
            .ok()
            .map(str::to_owned)
    };
    let (Some(kind), Some(v), Some(ct)) = (text(0), text(1), text(2)) else {
        return raw();
    };
    let Ok(v_num) = v.parse::<u32>() else {
        return raw();
    };
    if v_num.to_string() != v {
        return raw();
    }
    let mid = if with_mid {
        match text(4) {
            Some(m) => Some(m),
            None => return raw(),
        }
    } else {
        None
    };
    let env = Env {
        kind,
        v: v_num,
        ct,
        mid,
    };
    let d = fields[3].1.as_ref();
    if env.ct == "msgpack" {
        let typed = match layout {
            Layout::Ticks if env.kind == Tick::KIND && env.v == Tick::VERSION => {
                rmp_serde::from_slice::<Tick>(d).ok().map(Typed::Tick)
            }
            Layout::Physics
                if env.kind == PhysicsRecord::KIND && env.v == PhysicsRecord::VERSION =>
            {
                rmp_serde::from_slice::<PhysicsRecord>(d)
                    .ok()
                    .map(Typed::Physics)
            }
            _ => layout
                .spec()
                .filter(|s| s.kind == env.kind && s.version == env.v)
                .and_then(|s| Some(Typed::Message(s, cells_of(s, (s.decode)(d)?)?))),
        };
        if let Some(t) = typed.filter(|t| encodes_to(t, d, scratch)) {
            return Body::Typed(env, t);
        }
    }
    Body::Bytes(env, d.to_vec())
}

/// Whether `t` encodes to exactly `d` (encoded into `scratch`, reused).
fn encodes_to(t: &Typed, d: &[u8], scratch: &mut Vec<u8>) -> bool {
    scratch.clear();
    let encoded = match t {
        Typed::Tick(t) => rmp_serde::encode::write_named(scratch, t).is_ok(),
        Typed::Physics(p) => rmp_serde::encode::write_named(scratch, p).is_ok(),
        Typed::Message(spec, cells) => return body_of(spec, cells).as_deref() == Some(d),
    };
    encoded && scratch.as_slice() == d
}

fn encode_typed(t: &Typed) -> Option<Vec<u8>> {
    match t {
        Typed::Tick(t) => rmp_serde::to_vec_named(t).ok(),
        Typed::Physics(p) => rmp_serde::to_vec_named(p).ok(),
        Typed::Message(spec, cells) => body_of(spec, cells),
    }
}

/// The fields of `row`, moving its values out (one allocation per field name besides).
fn rebuild(row: Row) -> Result<Fields, FormatError> {
    let (env, d) = match row.body {
        Body::Raw(bytes) => {
            return layout::decode_fields(&bytes).ok_or_else(|| {
                FormatError::Corrupt(format!(
                    "raw fields of {}-{} do not decode",
                    row.ms, row.seq
                ))
            });
        }
        Body::Bytes(env, d) => (env, d),
        Body::Fields(values) => {
            return Ok(layout::ENTITY_CHANGE_FIELDS
                .iter()
                .zip(values)
                .map(|(f, v)| (f.as_bytes().to_vec(), v.into_bytes()))
                .collect());
        }
        Body::Typed(env, t) => {
            let d = encode_typed(&t)
                .ok_or_else(|| FormatError::Corrupt("typed row does not encode".into()))?;
            (env, d)
        }
    };
    let mut f = Vec::with_capacity(5);
    f.push((b"type".to_vec(), env.kind.into_bytes()));
    f.push((b"v".to_vec(), env.v.to_string().into_bytes()));
    f.push((b"ct".to_vec(), env.ct.into_bytes()));
    f.push((b"d".to_vec(), d));
    if let Some(mid) = env.mid {
        f.push((b"mid".to_vec(), mid.into_bytes()));
    }
    Ok(f)
}

/// `ms-seq` as an entry id.
fn id_text(ms: u64, seq: u64) -> String {
    use std::fmt::Write as _;
    let mut id = String::with_capacity(24);
    let _ = write!(id, "{ms}-{seq}");
    id
}

/// Entries buffered for one file.
#[derive(Debug)]
pub struct Segment {
    layout: Layout,
    /// zstd level of the file's columns (`[archive] zstd_level`).
    zstd_level: i32,
    rows: Vec<Row>,
    /// Bytes of the entries as they were in Redis (names and values), for rolling by size.
    raw_bytes: usize,
    /// The round-trip check's re-encoded body.
    scratch: Vec<u8>,
}

impl Segment {
    /// An empty segment of a stream with `layout`.
    pub fn new(layout: Layout) -> Self {
        Self {
            layout,
            zstd_level: kitbash_runtime::config::archive::DEFAULT_ZSTD_LEVEL,
            rows: Vec::new(),
            raw_bytes: 0,
            scratch: Vec::new(),
        }
    }

    /// The same segment compressed at zstd `level` (1–22; out of range: the nearest).
    pub fn with_zstd_level(mut self, level: i32) -> Self {
        self.zstd_level = level.clamp(1, 22);
        self
    }

    /// Adds one entry (ids must ascend; the caller checks).
    pub fn push(&mut self, e: &Entry) -> Result<(), FormatError> {
        self.push_fields(&e.id, &e.fields)
    }

    /// Adds the entry `id` with `fields` as they came from Redis (no copy made first).
    pub fn push_fields<K: AsRef<[u8]>, V: AsRef<[u8]>>(
        &mut self,
        id: &str,
        fields: &[(K, V)],
    ) -> Result<(), FormatError> {
        let (ms, seq) = parse_id(id)?;
        self.raw_bytes += id.len()
            + fields
                .iter()
                .map(|(k, v)| k.as_ref().len() + v.as_ref().len())
                .sum::<usize>();
        let body = classify(self.layout, fields, &mut self.scratch);
        self.rows.push(Row { ms, seq, body });
        Ok(())
    }

    /// Entries buffered.
    pub fn len(&self) -> usize {
        self.rows.len()
    }

    /// Whether nothing is buffered.
    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    /// Size of the buffered entries as they were in Redis.
    pub fn raw_bytes(&self) -> usize {
        self.raw_bytes
    }

    /// First and last id (`ms-seq`), when not empty.
    pub fn range(&self) -> Option<((u64, u64), (u64, u64))> {
        Some((
            self.rows.first().map(|r| (r.ms, r.seq))?,
            self.rows.last().map(|r| (r.ms, r.seq))?,
        ))
    }

    /// How many rows are stored typed, as body bytes, and raw.
    pub fn kinds(&self) -> (usize, usize, usize) {
        let mut n = (0, 0, 0);
        for r in &self.rows {
            match r.body {
                Body::Typed(..) | Body::Fields(_) => n.0 += 1,
                Body::Bytes(..) => n.1 += 1,
                Body::Raw(_) => n.2 += 1,
            }
        }
        n
    }

    /// Writes the segment as one Parquet file to `out` (not synced: the caller fsyncs). The
    /// segment keeps its entries until [`Segment::clear`] (a commit can still fail after this).
    pub fn write_to<W: Write + Send>(&self, out: W) -> Result<(), FormatError> {
        let batch = self.batch()?;
        let mut w = ArrowWriter::try_new(
            out,
            batch.schema(),
            Some(properties(self.layout, self.zstd_level)),
        )?;
        w.write(&batch)?;
        w.close()?;
        Ok(())
    }

    /// Empties the segment (after its file was committed).
    pub fn clear(&mut self) {
        self.rows.clear();
        self.raw_bytes = 0;
    }

    fn batch(&self) -> Result<RecordBatch, FormatError> {
        let n = self.rows.len();
        let mut ms = UInt64Builder::with_capacity(n);
        let mut seq = UInt64Builder::with_capacity(n);
        let mut kind = StringBuilder::new();
        let mut v = UInt32Builder::with_capacity(n);
        let mut ct = StringBuilder::new();
        let mut mid = StringBuilder::new();
        let mut body = BinaryBuilder::new();
        let mut raw = BinaryBuilder::new();
        let mut typed = TypedBuilders::new(self.layout);
        for r in &self.rows {
            ms.append_value(r.ms);
            seq.append_value(r.seq);
            let env = match &r.body {
                Body::Typed(env, _) | Body::Bytes(env, _) => Some(env),
                Body::Fields(_) | Body::Raw(_) => None,
            };
            kind.append_option(env.map(|e| e.kind.as_str()));
            v.append_option(env.map(|e| e.v));
            ct.append_option(env.map(|e| e.ct.as_str()));
            mid.append_option(env.and_then(|e| e.mid.as_deref()));
            body.append_option(match &r.body {
                Body::Bytes(_, d) => Some(d.as_slice()),
                _ => None,
            });
            raw.append_option(match &r.body {
                Body::Raw(b) => Some(b.as_slice()),
                _ => None,
            });
            typed.append(&r.body);
        }
        let mut fields = vec![
            Field::new(col::ID_MS, DataType::UInt64, false),
            Field::new(col::ID_SEQ, DataType::UInt64, false),
            Field::new(col::TYPE, DataType::Utf8, true),
            Field::new(col::V, DataType::UInt32, true),
            Field::new(col::CT, DataType::Utf8, true),
            Field::new(col::MID, DataType::Utf8, true),
            Field::new(col::BODY, DataType::Binary, true),
            Field::new(col::RAW, DataType::Binary, true),
        ];
        let mut arrays: Vec<ArrayRef> = vec![
            Arc::new(ms.finish()),
            Arc::new(seq.finish()),
            Arc::new(kind.finish()),
            Arc::new(v.finish()),
            Arc::new(ct.finish()),
            Arc::new(mid.finish()),
            Arc::new(body.finish()),
            Arc::new(raw.finish()),
        ];
        for (f, a) in typed.finish() {
            fields.push(f);
            arrays.push(a);
        }
        Ok(RecordBatch::try_new(Arc::new(Schema::new(fields)), arrays)?)
    }
}

/// Rows per row group, and per data page.
const ROW_GROUP_ROWS: usize = 65_536;

fn properties(layout: Layout, zstd_level: i32) -> WriterProperties {
    let level = ZstdLevel::try_new(zstd_level).unwrap_or_default();
    let mut b = WriterProperties::builder()
        .set_compression(Compression::ZSTD(level))
        .set_max_row_group_row_count(Some(ROW_GROUP_ROWS))
        // One data page per column chunk (up to the 1 MiB page size): parquet's default of
        // 20,000 rows cut each 50,000-entry file's columns into three separately compressed
        // pages — physics 5.81× → 5.89×, ticks 9.91× → 10.33× (docs/BENCHMARKS.md, session 16).
        // Readers prune by the row group's (= the file's) `id_ms` statistics either way.
        .set_data_page_row_count_limit(ROW_GROUP_ROWS);
    let mut ints = vec![col::ID_MS, col::ID_SEQ, col::V];
    let mut floats: Vec<&str> = Vec::new();
    let mut split: Vec<&str> = Vec::new();
    let mut deltas: Vec<&str> = vec![col::MID];
    match layout {
        Layout::Plain | Layout::EntityChanges => {}
        Layout::Queries | Layout::Crossings | Layout::Memory | Layout::EntityUpdates => {
            for c in layout.spec().map_or(&[][..], |s| s.cols) {
                match c.ty {
                    ColType::Float64 if c.name == col::TS => split.push(c.name),
                    ColType::Float64 => floats.push(c.name),
                    ColType::UInt64 => ints.push(c.name),
                    ColType::Utf8 | ColType::Json | ColType::ListUInt64 => {}
                }
            }
        }
        Layout::Ticks => {
            floats.push(col::PRICE);
            split.push(col::TS);
        }
        Layout::Physics => {
            floats.extend([col::PRICE, "entropy", "alpha_coefficient"]);
            split.extend([col::TS, "mass", "momentum", "nash_dist"]);
            deltas.push(col::SOURCE);
        }
    }
    for c in ints {
        b = b
            .set_column_dictionary_enabled(ColumnPath::from(c), false)
            .set_column_encoding(ColumnPath::from(c), Encoding::DELTA_BINARY_PACKED);
    }
    // Producer mids share long prefixes (kitbash-client's are a per-process prefix and a
    // counter) and almost never repeat, nor do physics sources (`ticks:3/<id>`): prefix
    // deltas, not a dictionary.
    for c in deltas {
        b = b
            .set_column_dictionary_enabled(ColumnPath::from(c), false)
            .set_column_encoding(ColumnPath::from(c), Encoding::DELTA_BYTE_ARRAY);
    }
    for c in floats {
        b = b
            .set_column_dictionary_enabled(ColumnPath::from(c), false)
            .set_column_encoding(ColumnPath::from(c), Encoding::PLAIN);
    }
    for c in split {
        b = b
            .set_column_dictionary_enabled(ColumnPath::from(c), false)
            .set_column_encoding(ColumnPath::from(c), Encoding::BYTE_STREAM_SPLIT);
    }
    b.build()
}

/// The typed columns of a layout, one builder per column (one value per segment write: the
/// size difference between variants does not matter).
#[allow(clippy::large_enum_variant)]
enum TypedBuilders {
    Plain,
    Ticks {
        symbol: StringBuilder,
        price: Float64Builder,
        size: Float64Builder,
        trades: UInt64Builder,
        ts: Float64Builder,
    },
    Physics {
        symbol: StringBuilder,
        ts: Float64Builder,
        price: Float64Builder,
        /// mass, momentum, friction, entropy, nash_dist, alpha_coefficient.
        floats: [Float64Builder; 6],
        regime: StringBuilder,
        source: StringBuilder,
    },
    Message(&'static Spec, Vec<ColBuilder>),
    Fields(Vec<StringBuilder>),
}

/// The builder of one message column.
enum ColBuilder {
    Str(StringBuilder),
    F64(Float64Builder),
    U64(UInt64Builder),
    List(ListBuilder<UInt64Builder>),
}

impl ColBuilder {
    fn new(ty: ColType) -> Self {
        match ty {
            ColType::Utf8 | ColType::Json => ColBuilder::Str(StringBuilder::new()),
            ColType::Float64 => ColBuilder::F64(Float64Builder::new()),
            ColType::UInt64 => ColBuilder::U64(UInt64Builder::new()),
            ColType::ListUInt64 => ColBuilder::List(ListBuilder::new(UInt64Builder::new())),
        }
    }

    fn append(&mut self, cell: Option<&Cell>) {
        match (self, cell) {
            (ColBuilder::Str(b), Some(Cell::Str(s) | Cell::Json(s))) => b.append_value(s),
            (ColBuilder::F64(b), Some(Cell::F64(f))) => b.append_value(*f),
            (ColBuilder::U64(b), Some(Cell::U64(u))) => b.append_value(*u),
            (ColBuilder::List(b), Some(Cell::List(l))) => {
                b.values().append_slice(l);
                b.append(true);
            }
            (ColBuilder::Str(b), _) => b.append_null(),
            (ColBuilder::F64(b), _) => b.append_null(),
            (ColBuilder::U64(b), _) => b.append_null(),
            (ColBuilder::List(b), _) => b.append(false),
        }
    }

    fn finish(self) -> ArrayRef {
        match self {
            ColBuilder::Str(mut b) => Arc::new(b.finish()),
            ColBuilder::F64(mut b) => Arc::new(b.finish()),
            ColBuilder::U64(mut b) => Arc::new(b.finish()),
            ColBuilder::List(mut b) => Arc::new(b.finish()),
        }
    }
}

/// The Arrow type of a message column.
fn arrow_type(ty: ColType) -> DataType {
    match ty {
        ColType::Utf8 | ColType::Json => DataType::Utf8,
        ColType::Float64 => DataType::Float64,
        ColType::UInt64 => DataType::UInt64,
        ColType::ListUInt64 => {
            DataType::List(Arc::new(Field::new_list_field(DataType::UInt64, true)))
        }
    }
}

impl TypedBuilders {
    fn new(layout: Layout) -> Self {
        match layout {
            Layout::Plain => TypedBuilders::Plain,
            Layout::Ticks => TypedBuilders::Ticks {
                symbol: StringBuilder::new(),
                price: Float64Builder::new(),
                size: Float64Builder::new(),
                trades: UInt64Builder::new(),
                ts: Float64Builder::new(),
            },
            Layout::Physics => TypedBuilders::Physics {
                symbol: StringBuilder::new(),
                ts: Float64Builder::new(),
                price: Float64Builder::new(),
                floats: std::array::from_fn(|_| Float64Builder::new()),
                regime: StringBuilder::new(),
                source: StringBuilder::new(),
            },
            Layout::EntityChanges => TypedBuilders::Fields(
                layout::ENTITY_CHANGE_FIELDS
                    .iter()
                    .map(|_| StringBuilder::new())
                    .collect(),
            ),
            Layout::Queries | Layout::Crossings | Layout::Memory | Layout::EntityUpdates => {
                match layout.spec() {
                    Some(spec) => TypedBuilders::Message(
                        spec,
                        spec.cols.iter().map(|c| ColBuilder::new(c.ty)).collect(),
                    ),
                    None => TypedBuilders::Plain,
                }
            }
        }
    }

    fn append(&mut self, body: &Body) {
        let t = match body {
            Body::Typed(_, t) => Some(t),
            _ => None,
        };
        match self {
            TypedBuilders::Plain => {}
            TypedBuilders::Message(spec, builders) => {
                let cells = match t {
                    Some(Typed::Message(s, cells)) if std::ptr::eq(*s, *spec) => Some(cells),
                    _ => None,
                };
                for (i, b) in builders.iter_mut().enumerate() {
                    b.append(cells.and_then(|c| c.get(i)).and_then(Option::as_ref));
                }
            }
            TypedBuilders::Fields(builders) => {
                let values = match body {
                    Body::Fields(v) => Some(v),
                    _ => None,
                };
                for (i, b) in builders.iter_mut().enumerate() {
                    b.append_option(values.and_then(|v| v.get(i)));
                }
            }
            TypedBuilders::Ticks {
                symbol,
                price,
                size,
                trades,
                ts,
            } => {
                let t = match t {
                    Some(Typed::Tick(t)) => Some(t),
                    _ => None,
                };
                symbol.append_option(t.map(|t| t.symbol.as_str()));
                price.append_option(t.map(|t| t.price));
                size.append_option(t.map(|t| t.size));
                trades.append_option(t.map(|t| t.trades));
                ts.append_option(t.map(|t| t.ts));
            }
            TypedBuilders::Physics {
                symbol,
                ts,
                price,
                floats,
                regime,
                source,
            } => {
                let p = match t {
                    Some(Typed::Physics(p)) => Some(p),
                    _ => None,
                };
                symbol.append_option(p.map(|p| p.symbol.as_str()));
                ts.append_option(p.map(|p| p.ts));
                price.append_option(p.map(|p| p.price));
                let vals = p.map(|p| {
                    let v = &p.vector;
                    [
                        v.mass,
                        v.momentum,
                        v.friction,
                        v.entropy,
                        v.nash_dist,
                        v.alpha_coefficient,
                    ]
                });
                for (i, b) in floats.iter_mut().enumerate() {
                    b.append_option(vals.map(|v| v[i]));
                }
                regime.append_option(p.map(|p| p.vector.regime.as_str()));
                source.append_option(p.map(|p| p.source.as_str()));
            }
        }
    }

    fn finish(self) -> Vec<(Field, ArrayRef)> {
        let f = |name: &str, dt: DataType| Field::new(name, dt, true);
        match self {
            TypedBuilders::Plain => Vec::new(),
            TypedBuilders::Message(spec, builders) => spec
                .cols
                .iter()
                .zip(builders)
                .map(|(c, b)| (f(c.name, arrow_type(c.ty)), b.finish()))
                .collect(),
            TypedBuilders::Fields(builders) => layout::ENTITY_CHANGE_FIELDS
                .iter()
                .zip(builders)
                .map(|(name, mut b)| (f(name, DataType::Utf8), Arc::new(b.finish()) as ArrayRef))
                .collect(),
            TypedBuilders::Ticks {
                mut symbol,
                mut price,
                mut size,
                mut trades,
                mut ts,
            } => vec![
                (
                    f(col::SYMBOL, DataType::Utf8),
                    Arc::new(symbol.finish()) as ArrayRef,
                ),
                (f(col::PRICE, DataType::Float64), Arc::new(price.finish())),
                (f(col::SIZE, DataType::Float64), Arc::new(size.finish())),
                (f(col::TRADES, DataType::UInt64), Arc::new(trades.finish())),
                (f(col::TS, DataType::Float64), Arc::new(ts.finish())),
            ],
            TypedBuilders::Physics {
                mut symbol,
                mut ts,
                mut price,
                floats,
                mut regime,
                mut source,
            } => {
                let mut out = vec![
                    (
                        f(col::SYMBOL, DataType::Utf8),
                        Arc::new(symbol.finish()) as ArrayRef,
                    ),
                    (f(col::TS, DataType::Float64), Arc::new(ts.finish())),
                    (f(col::PRICE, DataType::Float64), Arc::new(price.finish())),
                ];
                let names = [
                    "mass",
                    "momentum",
                    "friction",
                    "entropy",
                    "nash_dist",
                    "alpha_coefficient",
                ];
                for (name, mut b) in names.into_iter().zip(floats) {
                    out.push((f(name, DataType::Float64), Arc::new(b.finish())));
                }
                out.push((f("regime", DataType::Utf8), Arc::new(regime.finish())));
                out.push((f(col::SOURCE, DataType::Utf8), Arc::new(source.finish())));
                out
            }
        }
    }
}

/// Reads a file written by [`Segment::write_to`]: its entries, in order, with their exact
/// fields.
pub fn read(bytes: bytes::Bytes) -> Result<Vec<Entry>, FormatError> {
    let builder = ParquetRecordBatchReaderBuilder::try_new(bytes)?;
    let rows = builder.metadata().file_metadata().num_rows();
    let reader = builder.build()?;
    let mut out = Vec::with_capacity(usize::try_from(rows).unwrap_or(0));
    for batch in reader {
        let batch = batch?;
        let cols = Columns::of(&batch)?;
        for i in 0..batch.num_rows() {
            let row = cols.row(i)?;
            out.push(Entry {
                id: id_text(row.ms, row.seq),
                fields: rebuild(row)?,
            });
        }
    }
    Ok(out)
}

/// The columns of one record batch, downcast.
struct Columns<'a> {
    ms: &'a arrow_array::UInt64Array,
    seq: &'a arrow_array::UInt64Array,
    kind: &'a arrow_array::StringArray,
    v: &'a arrow_array::UInt32Array,
    ct: &'a arrow_array::StringArray,
    mid: &'a arrow_array::StringArray,
    body: &'a arrow_array::BinaryArray,
    raw: &'a arrow_array::BinaryArray,
    batch: &'a RecordBatch,
}

fn column<'a, T: 'static>(batch: &'a RecordBatch, name: &str) -> Result<&'a T, FormatError> {
    batch
        .column_by_name(name)
        .and_then(|c| c.as_any().downcast_ref::<T>())
        .ok_or_else(|| FormatError::Corrupt(format!("column {name} is missing or of another type")))
}

impl<'a> Columns<'a> {
    fn of(batch: &'a RecordBatch) -> Result<Self, FormatError> {
        Ok(Self {
            ms: column(batch, col::ID_MS)?,
            seq: column(batch, col::ID_SEQ)?,
            kind: column(batch, col::TYPE)?,
            v: column(batch, col::V)?,
            ct: column(batch, col::CT)?,
            mid: column(batch, col::MID)?,
            body: column(batch, col::BODY)?,
            raw: column(batch, col::RAW)?,
            batch,
        })
    }

    fn f64(&self, name: &str, i: usize) -> Result<f64, FormatError> {
        let c: &arrow_array::Float64Array = column(self.batch, name)?;
        if c.is_null(i) {
            return Err(FormatError::Corrupt(format!("typed row {i} has no {name}")));
        }
        Ok(c.value(i))
    }

    fn str(&self, name: &str, i: usize) -> Result<String, FormatError> {
        let c: &arrow_array::StringArray = column(self.batch, name)?;
        if c.is_null(i) {
            return Err(FormatError::Corrupt(format!("typed row {i} has no {name}")));
        }
        Ok(c.value(i).to_owned())
    }

    fn row(&self, i: usize) -> Result<Row, FormatError> {
        let (ms, seq) = (self.ms.value(i), self.seq.value(i));
        let body = if !self.raw.is_null(i) {
            Body::Raw(self.raw.value(i).to_vec())
        } else if self.kind.is_null(i)
            && let Some(values) = self.fields(i)?
        {
            Body::Fields(values)
        } else {
            if self.kind.is_null(i) || self.v.is_null(i) || self.ct.is_null(i) {
                return Err(FormatError::Corrupt(format!(
                    "row {ms}-{seq} has neither raw fields nor an envelope"
                )));
            }
            let env = Env {
                kind: self.kind.value(i).to_owned(),
                v: self.v.value(i),
                ct: self.ct.value(i).to_owned(),
                mid: (!self.mid.is_null(i)).then(|| self.mid.value(i).to_owned()),
            };
            if !self.body.is_null(i) {
                Body::Bytes(env, self.body.value(i).to_vec())
            } else {
                Body::Typed(env, self.typed(i)?)
            }
        };
        Ok(Row { ms, seq, body })
    }

    /// The entity-change fields of row `i`, when the file has their columns and the row holds
    /// them.
    fn fields(&self, i: usize) -> Result<Option<Vec<String>>, FormatError> {
        if self
            .batch
            .column_by_name(layout::ENTITY_CHANGE_FIELDS[0])
            .is_none()
        {
            return Ok(None);
        }
        let mut out = Vec::with_capacity(layout::ENTITY_CHANGE_FIELDS.len());
        for name in layout::ENTITY_CHANGE_FIELDS {
            let c: &arrow_array::StringArray = column(self.batch, name)?;
            if c.is_null(i) {
                return Ok(None);
            }
            out.push(c.value(i).to_owned());
        }
        Ok(Some(out))
    }

    /// The cells of typed row `i` of a message layout.
    fn cells(&self, spec: &Spec, i: usize) -> Result<Vec<Option<Cell>>, FormatError> {
        let mut out = Vec::with_capacity(spec.cols.len());
        for c in spec.cols {
            let a = self.batch.column_by_name(c.name).ok_or_else(|| {
                FormatError::Corrupt(format!("typed {} row {i}: no column {}", spec.kind, c.name))
            })?;
            if a.is_null(i) {
                if !c.optional {
                    return Err(FormatError::Corrupt(format!(
                        "typed {} row {i} has no {}",
                        spec.kind, c.name
                    )));
                }
                out.push(None);
                continue;
            }
            let cell = match c.ty {
                ColType::Utf8 => Cell::Str(self.str(c.name, i)?),
                ColType::Json => Cell::Json(self.str(c.name, i)?),
                ColType::Float64 => Cell::F64(self.f64(c.name, i)?),
                ColType::UInt64 => {
                    let u: &arrow_array::UInt64Array = column(self.batch, c.name)?;
                    Cell::U64(u.value(i))
                }
                ColType::ListUInt64 => {
                    let l: &arrow_array::ListArray = column(self.batch, c.name)?;
                    let values = l.value(i);
                    let values = values
                        .as_any()
                        .downcast_ref::<arrow_array::UInt64Array>()
                        .ok_or_else(|| {
                            FormatError::Corrupt(format!("column {} is not a list of u64", c.name))
                        })?;
                    Cell::List(values.values().to_vec())
                }
            };
            out.push(Some(cell));
        }
        Ok(out)
    }

    fn typed(&self, i: usize) -> Result<Typed, FormatError> {
        if !self.kind.is_null(i)
            && let Some(spec) = spec_of_kind(self.kind.value(i))
            && self.batch.column_by_name(spec.cols[0].name).is_some()
            // Ticks and physics files have a `ts`/`symbol` too: theirs are checked below.
            && self.batch.column_by_name(col::TRADES).is_none()
            && self.batch.column_by_name(col::SOURCE).is_none()
        {
            return Ok(Typed::Message(spec, self.cells(spec, i)?));
        }
        if self.batch.column_by_name(col::TRADES).is_some() {
            let trades: &arrow_array::UInt64Array = column(self.batch, col::TRADES)?;
            return Ok(Typed::Tick(Tick {
                symbol: self.str(col::SYMBOL, i)?,
                price: self.f64(col::PRICE, i)?,
                size: self.f64(col::SIZE, i)?,
                trades: trades.value(i),
                ts: self.f64(col::TS, i)?,
            }));
        }
        if self.batch.column_by_name(col::SOURCE).is_some() {
            let regime = match self.str("regime", i)?.as_str() {
                "Gaussian" => Regime::Gaussian,
                "Lévy Stable" => Regime::LevyStable,
                "Critical" => Regime::Critical,
                other => return Err(FormatError::Corrupt(format!("unknown regime {other:?}"))),
            };
            return Ok(Typed::Physics(PhysicsRecord {
                symbol: self.str(col::SYMBOL, i)?,
                ts: self.f64(col::TS, i)?,
                price: self.f64(col::PRICE, i)?,
                vector: PhysicsVector {
                    mass: self.f64("mass", i)?,
                    momentum: self.f64("momentum", i)?,
                    friction: self.f64("friction", i)?,
                    entropy: self.f64("entropy", i)?,
                    nash_dist: self.f64("nash_dist", i)?,
                    regime,
                    alpha_coefficient: self.f64("alpha_coefficient", i)?,
                },
                source: self.str(col::SOURCE, i)?,
            }));
        }
        Err(FormatError::Corrupt(format!(
            "row {i} is typed but the file has no typed columns"
        )))
    }
}

/// Compressed bytes per column of a file (summed over its row groups), from its footer: where
/// an archive's space goes.
pub fn column_sizes(bytes: bytes::Bytes) -> Result<Vec<(String, u64)>, FormatError> {
    use parquet::file::reader::{FileReader, SerializedFileReader};
    let reader = SerializedFileReader::new(bytes)?;
    let meta = reader.metadata();
    let mut out: Vec<(String, u64)> = Vec::new();
    for rg in meta.row_groups() {
        for (i, c) in rg.columns().iter().enumerate() {
            let size = c.compressed_size().max(0) as u64;
            match out.get_mut(i) {
                Some(slot) => slot.1 += size,
                None => out.push((c.column_path().string(), size)),
            }
        }
    }
    Ok(out)
}
