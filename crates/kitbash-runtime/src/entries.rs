//! Stream entries as they come back from `XREADGROUP`, `XAUTOCLAIM`, `XRANGE` and `XPENDING`,
//! parsed from raw RESP values (fred's typed helpers drop parts of some replies, e.g. the
//! deleted-ids element of Redis 7's `XAUTOCLAIM`).

use bytes::Bytes;
use fred::types::Value;

use crate::error::RuntimeError;

/// One stream entry. `fields` is `None` when the entry was deleted (or trimmed) while pending:
/// Redis then returns its id with a nil body.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StreamEntry {
    /// Entry id, `ms-seq`.
    pub id: String,
    /// Field/value pairs in XADD order.
    pub fields: Option<Vec<(Bytes, Bytes)>>,
}

impl StreamEntry {
    /// Field pairs as byte slices (empty when deleted).
    pub fn pairs(&self) -> impl Iterator<Item = (&[u8], &[u8])> {
        self.fields
            .iter()
            .flatten()
            .map(|(k, v)| (k.as_ref(), v.as_ref()))
    }
}

fn bytes_of(v: &Value) -> Option<Bytes> {
    match v {
        Value::Bytes(b) => Some(b.clone()),
        Value::String(s) => Some(Bytes::copy_from_slice(s.as_bytes())),
        Value::Integer(i) => Some(Bytes::from(i.to_string())),
        Value::Double(d) => Some(Bytes::from(d.to_string())),
        _ => None,
    }
}

/// A reply value as a UTF-8 string.
pub fn string_of(v: &Value) -> Option<String> {
    bytes_of(v).and_then(|b| String::from_utf8(b.to_vec()).ok())
}

fn bad(command: &'static str, detail: impl Into<String>) -> RuntimeError {
    RuntimeError::Reply {
        command,
        detail: detail.into(),
    }
}

/// Parses `[[id, [f, v, …] | nil], …]`.
pub fn parse_entries(command: &'static str, v: &Value) -> Result<Vec<StreamEntry>, RuntimeError> {
    let items = match v {
        Value::Array(a) => a,
        Value::Null => return Ok(Vec::new()),
        other => return Err(bad(command, format!("entries: {other:?}"))),
    };
    let mut out = Vec::with_capacity(items.len());
    for item in items {
        let Value::Array(pair) = item else {
            return Err(bad(command, "entry is not an array"));
        };
        let id = pair
            .first()
            .and_then(string_of)
            .ok_or_else(|| bad(command, "entry without id"))?;
        let fields = match pair.get(1) {
            None | Some(Value::Null) => None,
            Some(Value::Array(kv)) => {
                let mut f = Vec::with_capacity(kv.len() / 2);
                for chunk in kv.chunks(2) {
                    if let [k, v] = chunk {
                        let k = bytes_of(k).ok_or_else(|| bad(command, "field name"))?;
                        let v = bytes_of(v).unwrap_or_default();
                        f.push((k, v));
                    }
                }
                Some(f)
            }
            Some(Value::Map(m)) => Some(
                m.clone()
                    .inner()
                    .iter()
                    .map(|(k, v)| {
                        (
                            Bytes::copy_from_slice(k.as_bytes()),
                            bytes_of(v).unwrap_or_default(),
                        )
                    })
                    .collect(),
            ),
            Some(other) => return Err(bad(command, format!("fields: {other:?}"))),
        };
        out.push(StreamEntry { id, fields });
    }
    Ok(out)
}

/// Parses an `XREADGROUP`/`XREAD` reply for a single stream: `[[key, entries]]` or nil.
pub fn parse_xread(v: &Value) -> Result<Vec<StreamEntry>, RuntimeError> {
    match v {
        Value::Null => Ok(Vec::new()),
        Value::Array(streams) => {
            let mut out = Vec::new();
            for s in streams {
                match s {
                    Value::Array(kv) if kv.len() == 2 => {
                        out.extend(parse_entries("XREADGROUP", &kv[1])?);
                    }
                    other => return Err(bad("XREADGROUP", format!("stream: {other:?}"))),
                }
            }
            Ok(out)
        }
        Value::Map(m) => {
            let mut out = Vec::new();
            for (_, entries) in m.clone().inner().iter() {
                out.extend(parse_entries("XREADGROUP", entries)?);
            }
            Ok(out)
        }
        other => Err(bad("XREADGROUP", format!("{other:?}"))),
    }
}

/// A parsed `XAUTOCLAIM` reply.
#[derive(Debug, Default)]
pub struct AutoClaim {
    /// Where the next call continues (`0-0` when the scan completed).
    pub cursor: String,
    /// Entries now owned by the caller.
    pub entries: Vec<StreamEntry>,
    /// Ids that were pending but no longer exist in the stream (Redis ≥ 7 removes them from the
    /// PEL itself).
    pub deleted: Vec<String>,
}

/// Parses `[cursor, entries, deleted_ids]`.
pub fn parse_autoclaim(v: &Value) -> Result<AutoClaim, RuntimeError> {
    let Value::Array(parts) = v else {
        return Err(bad("XAUTOCLAIM", format!("{v:?}")));
    };
    let cursor = parts
        .first()
        .and_then(string_of)
        .ok_or_else(|| bad("XAUTOCLAIM", "no cursor"))?;
    let entries = match parts.get(1) {
        Some(e) => parse_entries("XAUTOCLAIM", e)?,
        None => Vec::new(),
    };
    let deleted = match parts.get(2) {
        Some(Value::Array(ids)) => ids.iter().filter_map(string_of).collect(),
        _ => Vec::new(),
    };
    Ok(AutoClaim {
        cursor,
        entries,
        deleted,
    })
}

/// One row of `XPENDING key group start end count [consumer]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PendingRow {
    /// Entry id.
    pub id: String,
    /// Owning consumer.
    pub consumer: String,
    /// Milliseconds since last delivery.
    pub idle_ms: u64,
    /// Times delivered.
    pub deliveries: u64,
}

/// Parses the extended form of `XPENDING`.
pub fn parse_pending(v: &Value) -> Result<Vec<PendingRow>, RuntimeError> {
    let Value::Array(rows) = v else {
        return Ok(Vec::new());
    };
    let mut out = Vec::with_capacity(rows.len());
    for r in rows {
        let Value::Array(cols) = r else {
            return Err(bad("XPENDING", "row is not an array"));
        };
        let num = |i: usize| -> u64 {
            match cols.get(i) {
                Some(Value::Integer(n)) => (*n).max(0) as u64,
                Some(other) => string_of(other).and_then(|s| s.parse().ok()).unwrap_or(0),
                None => 0,
            }
        };
        out.push(PendingRow {
            id: cols.first().and_then(string_of).unwrap_or_default(),
            consumer: cols.get(1).and_then(string_of).unwrap_or_default(),
            idle_ms: num(2),
            deliveries: num(3),
        });
    }
    Ok(out)
}

/// Compares two stream ids numerically (`ms-seq`).
pub fn id_cmp(a: &str, b: &str) -> std::cmp::Ordering {
    parse_id(a).cmp(&parse_id(b))
}

/// `ms-seq` as a pair; malformed parts count as 0.
pub fn parse_id(id: &str) -> (u64, u64) {
    let mut it = id.splitn(2, '-');
    let ms = it.next().and_then(|s| s.parse().ok()).unwrap_or(0);
    let seq = it.next().and_then(|s| s.parse().ok()).unwrap_or(0);
    (ms, seq)
}
