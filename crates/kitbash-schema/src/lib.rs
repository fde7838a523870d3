//! `kitbash-schema`: the one place that spells a Redis key, a stream, a channel, a TTL or a wire format.
//!
//! # Layout
//! - [`namespace`]: the optional prefix that lets a test or a replay run beside production.
//! - [`acl`]: least-privilege Redis ACL users generated from the key builders (`kitbash acl`).
//! - [`keys`]: typed builders for every key family of the five seeds and the fleet's internal keys.
//! - [`streams`]: the catalog of streams, their consumer groups and dead-letter streams.
//! - [`channels`]: pub/sub channel names.
//! - [`ttl`]: the seeds' expiration policy as data.
//! - [`wire`]: the stream-entry envelope (versioned MessagePack or JSON bodies).
//! - [`messages`]: the message types carried by streams and channels, with validation.
//! - [`pyjson`]: JSON byte-identical to Python's `json.dumps` (seed 002's publisher).
//! - [`time`]: RFC 3339 formatting without a date crate.
//! - [`bridge`]: the bridge's channel names, offsets (entry ids packed into one integer) and
//!   epoch fields.
//! - [`budget`]: the memory-budget model of seed 000.
//! - [`reflex`]: seed 000's shared arithmetic: normalised resonance, the hit rule, latency
//!   buckets, the seed's hats.
//!
//! **Invariant:** this crate performs no I/O and depends on serde alone.

pub mod acl;
pub mod archive;
pub mod bridge;
pub mod budget;
pub mod channels;
pub mod keys;
pub mod memory;
pub mod messages;
pub mod namespace;
pub mod pyjson;
pub mod reflex;
pub mod streams;
pub mod time;
pub mod ttl;
pub mod wire;

pub use keys::{KeyFamily, KeyStyle, Keys};
pub use namespace::Namespace;
pub use streams::{DaemonKind, Group, StreamName, TrimOwner};
pub use wire::{Envelope, Message, WireError};
