//! The stream-entry envelope: how a message is laid out in the fields of one stream entry.
//!
//! ```text
//! XADD kitbash:stream:{queries} * type query v 1 ct json d '{"text":"what is DNA?","ts":1766318400.0}'
//! ```
//!
//! | field  | required | meaning |
//! |--------|----------|---------|
//! | `type` | yes | message kind, e.g. `tick`, `query`, `entity_update`, `memory_token` |
//! | `v`    | no (1) | body schema version (1, 2, …); a consumer refuses 0 and versions newer than it knows |
//! | `ct`   | yes | body encoding: `msgpack` (MessagePack *map* encoding, what kitbash writes) or `json` |
//! | `d`    | yes | the body, at most [`MAX_BODY`] bytes |
//! | `mid`  | no | a producer-chosen message id; consumers use it to drop a duplicate `XADD` |
//!
//! Map encoding (field names on the wire) lets a newer producer add fields that an older consumer
//! ignores; removing or retyping a field needs a new `v`. The body must be that map (a JSON
//! object or a MessagePack map): serde would also read a struct from its positional sequence
//! form (`["SPY",450.25,…]`), which silently depends on field order, so [`Envelope::decode`]
//! refuses any other top-level value with [`WireError::NotAMap`].

use serde::Serialize;
use serde::de::DeserializeOwned;

/// Largest accepted body, in bytes. Larger entries are dead-lettered as oversized.
pub const MAX_BODY: usize = 1 << 20;

/// A type carried in stream bodies.
pub trait Message: Serialize + DeserializeOwned {
    /// The `type` field value.
    const KIND: &'static str;
    /// The newest body version this build writes and reads.
    const VERSION: u32 = 1;
    /// Checks values serde cannot (finite numbers, ranges, patterns). The reason is what the
    /// dead-letter stream records.
    fn validate(&self) -> Result<(), String> {
        Ok(())
    }
}

/// Body encodings.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ContentType {
    /// MessagePack, map encoding (`rmp_serde::to_vec_named`).
    MsgPack,
    /// UTF-8 JSON, for producers in other languages and `redis-cli`.
    Json,
}

impl ContentType {
    /// The `ct` field value.
    pub fn as_str(self) -> &'static str {
        match self {
            ContentType::MsgPack => "msgpack",
            ContentType::Json => "json",
        }
    }
}

/// Why an entry could not be turned into a message. Its `Display` is the dead-letter reason.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum WireError {
    /// A required field is absent.
    #[error("missing field `{0}`")]
    MissingField(&'static str),
    /// A field holds something unreadable.
    #[error("field `{field}`: {why}")]
    BadField {
        /// The field name.
        field: &'static str,
        /// What is wrong with it.
        why: String,
    },
    /// The entry is of another kind than this consumer reads.
    #[error("expected type `{expected}`, got `{got}`")]
    WrongKind {
        /// The kind the consumer reads.
        expected: &'static str,
        /// The kind the entry says it is.
        got: String,
    },
    /// The body version is newer than this build knows.
    #[error("type `{kind}` version {got} is newer than the supported {max}")]
    UnsupportedVersion {
        /// Message kind.
        kind: &'static str,
        /// Version on the entry.
        got: u32,
        /// Newest version this build reads.
        max: u32,
    },
    /// The version is 0: versions start at 1.
    #[error(
        "type `{kind}` version {got} is not a valid version (versions start at 1; supported: {max})"
    )]
    InvalidVersion {
        /// Message kind.
        kind: &'static str,
        /// Version on the entry.
        got: u32,
        /// Newest version this build reads.
        max: u32,
    },
    /// The body is not a map of named fields (e.g. serde's positional array form of a struct).
    #[error(
        "body does not decode: it is {found}; a body is a map of named fields \
         (a JSON object, or the MessagePack map encoding)"
    )]
    NotAMap {
        /// What the body is instead (`a JSON array`, `empty`, …).
        found: &'static str,
    },
    /// The body exceeds [`MAX_BODY`].
    #[error("body of {len} bytes exceeds the {max}-byte limit")]
    TooLarge {
        /// Body length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// The body does not decode as the message type.
    #[error("body does not decode: {0}")]
    Decode(String),
    /// The body decodes but its values are refused by [`Message::validate`].
    #[error("invalid: {0}")]
    Invalid(String),
}

/// One stream entry's envelope, borrowed from its fields.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Envelope {
    /// `type`.
    pub kind: String,
    /// `v`.
    pub version: u32,
    /// `ct`.
    pub content: ContentType,
    /// `d`.
    pub body: Vec<u8>,
    /// `mid`, when the producer set one.
    pub mid: Option<String>,
}

impl Envelope {
    /// Wraps `msg` as MessagePack (map encoding).
    pub fn msgpack<M: Message>(msg: &M) -> Result<Self, WireError> {
        let body = rmp_serde::to_vec_named(msg).map_err(|e| WireError::Decode(e.to_string()))?;
        Ok(Self::raw(M::KIND, M::VERSION, ContentType::MsgPack, body))
    }

    /// Wraps `msg` as JSON.
    pub fn json<M: Message>(msg: &M) -> Result<Self, WireError> {
        let body = serde_json::to_vec(msg).map_err(|e| WireError::Decode(e.to_string()))?;
        Ok(Self::raw(M::KIND, M::VERSION, ContentType::Json, body))
    }

    fn raw(kind: &str, version: u32, content: ContentType, body: Vec<u8>) -> Self {
        Self {
            kind: kind.to_owned(),
            version,
            content,
            body,
            mid: None,
        }
    }

    /// Sets the producer message id.
    pub fn with_mid(mut self, mid: impl Into<String>) -> Self {
        self.mid = Some(mid.into());
        self
    }

    /// The entry's fields, in XADD order.
    pub fn to_fields(&self) -> Vec<(&'static str, Vec<u8>)> {
        let mut f = vec![
            ("type", self.kind.as_bytes().to_vec()),
            ("v", self.version.to_string().into_bytes()),
            ("ct", self.content.as_str().as_bytes().to_vec()),
            ("d", self.body.clone()),
        ];
        if let Some(mid) = &self.mid {
            f.push(("mid", mid.as_bytes().to_vec()));
        }
        f
    }

    /// Reads an envelope from an entry's fields. Unknown fields are ignored.
    pub fn from_fields<'a, I>(fields: I) -> Result<Self, WireError>
    where
        I: IntoIterator<Item = (&'a [u8], &'a [u8])>,
    {
        let (mut kind, mut version, mut ct, mut body, mut mid) = (None, None, None, None, None);
        for (k, v) in fields {
            match k {
                b"type" => kind = Some(utf8("type", v)?),
                b"v" => {
                    let s = utf8("v", v)?;
                    version = Some(s.parse::<u32>().map_err(|_| WireError::BadField {
                        field: "v",
                        why: format!("{s:?} is not a version number"),
                    })?)
                }
                b"ct" => {
                    ct = Some(match v {
                        b"msgpack" => ContentType::MsgPack,
                        b"json" => ContentType::Json,
                        other => {
                            return Err(WireError::BadField {
                                field: "ct",
                                why: format!(
                                    "unknown content type {:?} (msgpack or json)",
                                    String::from_utf8_lossy(other)
                                ),
                            });
                        }
                    })
                }
                b"d" => body = Some(v.to_vec()),
                b"mid" => mid = Some(utf8("mid", v)?),
                _ => {}
            }
        }
        let body = body.ok_or(WireError::MissingField("d"))?;
        if body.len() > MAX_BODY {
            return Err(WireError::TooLarge {
                len: body.len(),
                max: MAX_BODY,
            });
        }
        Ok(Self {
            kind: kind.ok_or(WireError::MissingField("type"))?,
            version: version.unwrap_or(1),
            content: ct.ok_or(WireError::MissingField("ct"))?,
            body,
            mid,
        })
    }

    /// Decodes and validates the body as `M`.
    pub fn decode<M: Message>(&self) -> Result<M, WireError> {
        if self.kind != M::KIND {
            return Err(WireError::WrongKind {
                expected: M::KIND,
                got: self.kind.clone(),
            });
        }
        if self.version == 0 {
            return Err(WireError::InvalidVersion {
                kind: M::KIND,
                got: self.version,
                max: M::VERSION,
            });
        }
        if self.version > M::VERSION {
            return Err(WireError::UnsupportedVersion {
                kind: M::KIND,
                got: self.version,
                max: M::VERSION,
            });
        }
        require_map(self.content, &self.body)?;
        let msg: M =
            match self.content {
                ContentType::MsgPack => rmp_serde::from_slice(&self.body)
                    .map_err(|e| WireError::Decode(e.to_string()))?,
                ContentType::Json => serde_json::from_slice(&self.body)
                    .map_err(|e| WireError::Decode(e.to_string()))?,
            };
        msg.validate().map_err(WireError::Invalid)?;
        Ok(msg)
    }
}

/// Decodes an entry's fields straight into `M`.
pub fn decode_fields<'a, M, I>(fields: I) -> Result<M, WireError>
where
    M: Message,
    I: IntoIterator<Item = (&'a [u8], &'a [u8])>,
{
    Envelope::from_fields(fields)?.decode()
}

/// Refuses a body whose top-level value is not a map. Only the first byte (after JSON
/// whitespace) is read; the decoder checks the rest.
fn require_map(content: ContentType, body: &[u8]) -> Result<(), WireError> {
    let found = match content {
        ContentType::Json => {
            match body
                .iter()
                .find(|b| !matches!(b, b' ' | b'\t' | b'\n' | b'\r'))
            {
                Some(b'{') => return Ok(()),
                None => "empty",
                Some(b'[') => "a JSON array",
                Some(b'"') => "a JSON string",
                Some(b'-' | b'0'..=b'9') => "a JSON number",
                Some(b't' | b'f') => "a JSON boolean",
                Some(b'n') => "JSON null",
                Some(_) => "not JSON",
            }
        }
        ContentType::MsgPack => match body.first() {
            // fixmap, map 16, map 32
            Some(0x80..=0x8f | 0xde | 0xdf) => return Ok(()),
            None => "empty",
            Some(0x90..=0x9f | 0xdc | 0xdd) => "a MessagePack array",
            Some(0xa0..=0xbf | 0xd9..=0xdb) => "a MessagePack string",
            Some(0xc4..=0xc6) => "MessagePack binary data",
            Some(0xc0) => "MessagePack nil",
            Some(0xc2 | 0xc3) => "a MessagePack boolean",
            Some(0xc7..=0xc9 | 0xd4..=0xd8) => "a MessagePack extension value",
            Some(0xc1) => "not MessagePack (marker 0xc1 is never used)",
            Some(_) => "a MessagePack number",
        },
    };
    Err(WireError::NotAMap { found })
}

fn utf8(field: &'static str, v: &[u8]) -> Result<String, WireError> {
    String::from_utf8(v.to_vec()).map_err(|_| WireError::BadField {
        field,
        why: "not valid UTF-8".into(),
    })
}

/// The fields of a dead-letter entry: metadata first, then every original field prefixed
/// with `f.` so that `kitbash replay --dead` can re-inject the entry unchanged.
///
/// | field | meaning |
/// |-------|---------|
/// | `reason` | why it was rejected (a [`WireError`] or a handler's message) |
/// | `stream` | logical source stream (`ticks:3`) |
/// | `id` | the entry's id in the source stream |
/// | `group`, `consumer` | who rejected it |
/// | `deliveries` | how many times it had been delivered |
/// | `at_ms` | when it was rejected (Unix ms) |
/// | `f.<name>` | the original fields |
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeadLetter {
    /// Why the entry was rejected.
    pub reason: String,
    /// Logical source stream.
    pub stream: String,
    /// Source entry id.
    pub id: String,
    /// Rejecting group.
    pub group: String,
    /// Rejecting consumer.
    pub consumer: String,
    /// Delivery count at rejection.
    pub deliveries: u64,
    /// Rejection time, Unix ms.
    pub at_ms: i64,
    /// The original fields.
    pub fields: Vec<(Vec<u8>, Vec<u8>)>,
}

impl DeadLetter {
    /// Longest reason stored; longer reasons are cut (on a char boundary) and marked with `…`.
    pub const MAX_REASON: usize = 1024;

    /// The entry's fields, in XADD order.
    pub fn to_fields(&self) -> Vec<(Vec<u8>, Vec<u8>)> {
        let mut reason = self.reason.clone();
        if reason.len() > Self::MAX_REASON {
            let mut cut = Self::MAX_REASON;
            while !reason.is_char_boundary(cut) {
                cut -= 1;
            }
            reason.truncate(cut);
            reason.push('…');
        }
        let mut f: Vec<(Vec<u8>, Vec<u8>)> = vec![
            (b"reason".to_vec(), reason.into_bytes()),
            (b"stream".to_vec(), self.stream.clone().into_bytes()),
            (b"id".to_vec(), self.id.clone().into_bytes()),
            (b"group".to_vec(), self.group.clone().into_bytes()),
            (b"consumer".to_vec(), self.consumer.clone().into_bytes()),
            (
                b"deliveries".to_vec(),
                self.deliveries.to_string().into_bytes(),
            ),
            (b"at_ms".to_vec(), self.at_ms.to_string().into_bytes()),
        ];
        for (k, v) in &self.fields {
            let mut name = b"f.".to_vec();
            name.extend_from_slice(k);
            f.push((name, v.clone()));
        }
        f
    }

    /// Reads a dead-letter entry back (for `kitbash tail`, `replay --dead` and tests).
    pub fn from_fields<'a, I>(fields: I) -> Result<Self, WireError>
    where
        I: IntoIterator<Item = (&'a [u8], &'a [u8])>,
    {
        let mut d = DeadLetter {
            reason: String::new(),
            stream: String::new(),
            id: String::new(),
            group: String::new(),
            consumer: String::new(),
            deliveries: 0,
            at_ms: 0,
            fields: Vec::new(),
        };
        let mut seen_reason = false;
        for (k, v) in fields {
            match k {
                b"reason" => {
                    d.reason = utf8("reason", v)?;
                    seen_reason = true;
                }
                b"stream" => d.stream = utf8("stream", v)?,
                b"id" => d.id = utf8("id", v)?,
                b"group" => d.group = utf8("group", v)?,
                b"consumer" => d.consumer = utf8("consumer", v)?,
                b"deliveries" => d.deliveries = utf8("deliveries", v)?.parse().unwrap_or(0),
                b"at_ms" => d.at_ms = utf8("at_ms", v)?.parse().unwrap_or(0),
                other => {
                    if let Some(name) = other.strip_prefix(b"f.") {
                        d.fields.push((name.to_vec(), v.to_vec()));
                    }
                }
            }
        }
        if !seen_reason {
            return Err(WireError::MissingField("reason"));
        }
        Ok(d)
    }
}
