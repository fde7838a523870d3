//! The stream catalog: which streams exist, who consumes them (consumer groups), who trims them
//! ([`StreamName::trim_owner`]) and where their rejected entries go (dead-letter streams, never
//! trimmed: an alarm bounds them, see [`DEAD_LETTERS`]).
//!
//! Every stream key is hash-tagged (`kitbash:stream:{queries}`) so that a stream, its dead-letter
//! stream and its per-stream bookkeeping live in one Redis Cluster slot and can be changed in one
//! `MULTI` or script.

use std::fmt;

/// The six daemon kinds. Their names are the consumer-group names and the ACL user names.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum DaemonKind {
    /// Physics writer (seed 001).
    Feynman,
    /// Entity updater (seed 002).
    Entity,
    /// Resonance decayer (seed 000).
    Decay,
    /// Ghost precomputer (seed 000).
    Ghost,
    /// WebSocket broadcaster and dashboard (seeds 001, 002).
    Bridge,
    /// Archival and indexing consumer (seeds 002, 003, 004).
    Archive,
    /// The small example daemon of `docs/adding-a-daemon.md` (tallies query texts). Not part of
    /// [`DaemonKind::ALL`]: `kitbash up` and the deploy files do not run it.
    Example,
}

impl DaemonKind {
    /// Every kind, in start-up order.
    pub const ALL: [DaemonKind; 6] = [
        DaemonKind::Feynman,
        DaemonKind::Entity,
        DaemonKind::Decay,
        DaemonKind::Ghost,
        DaemonKind::Bridge,
        DaemonKind::Archive,
    ];

    /// The short lowercase name (`"feynman"`), used in keys, group names and binaries
    /// (`kitbash-feynman`).
    pub const fn name(self) -> &'static str {
        match self {
            DaemonKind::Feynman => "feynman",
            DaemonKind::Entity => "entity",
            DaemonKind::Decay => "decay",
            DaemonKind::Ghost => "ghost",
            DaemonKind::Bridge => "bridge",
            DaemonKind::Archive => "archive",
            DaemonKind::Example => "example",
        }
    }

    /// One line on what the daemon does: the start of its `--help` (so a new daemon kind is
    /// described here, beside its name, and touches no runtime file).
    pub fn about(self) -> &'static str {
        match self {
            DaemonKind::Feynman => {
                "the physics writer: reads market ticks from the tick partitions it leases and \
                 writes physics:state, market:snapshot, the physics stream and state_update"
            }
            DaemonKind::Entity => {
                "the entity updater: applies entity patches atomically to quantum:* and entity:*"
            }
            DaemonKind::Decay => {
                "the resonance decayer: maintains the CMS records and runs the decay cycle"
            }
            DaemonKind::Ghost => {
                "the ghost precomputer: scores queries against the grain bank and writes ghost:*"
            }
            DaemonKind::Bridge => "the WebSocket broadcaster and live dashboard",
            DaemonKind::Archive => {
                "the archival and indexing consumer: archive segments on disk and safe trimming"
            }
            DaemonKind::Example => "the example daemon: counts query texts (a template to copy)",
        }
    }

    /// The inverse of [`DaemonKind::name`].
    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL
            .into_iter()
            .chain([DaemonKind::Example])
            .find(|k| k.name() == name)
    }

    /// The consumer group this kind reads its streams with.
    pub const fn group(self) -> Group {
        Group(self.name())
    }
}

impl fmt::Display for DaemonKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A consumer-group name.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Group(pub &'static str);

impl Group {
    /// The archive's indexing group on the memory stream (seed 004's memory-token indexing):
    /// a processing group of its own beside the `archive` group that archives the stream, so
    /// indexing scales over every archive instance and keeps its own position, dead letters
    /// and de-duplication.
    pub const MEMORY_INDEX: Group = Group("index");

    /// The daemon kind whose instances read through this group (`None`: a group of somebody
    /// else's, a test's).
    pub fn daemon(self) -> Option<DaemonKind> {
        if self == Group::MEMORY_INDEX {
            return Some(DaemonKind::Archive);
        }
        DaemonKind::parse(self.0)
    }

    /// The group name as Redis sees it.
    pub fn as_str(self) -> &'static str {
        self.0
    }
}

impl fmt::Display for Group {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0)
    }
}

/// Who keeps a stream bounded ([`StreamName::trim_owner`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TrimOwner {
    /// This daemon trims the stream periodically through `kitbash_runtime::trim::safe_trim`,
    /// near the bound configured by `key` in its `[section]` (the daemon's name).
    Daemon {
        /// The owning daemon.
        kind: DaemonKind,
        /// Its config key holding the bound (`physics_stream_max` in `[feynman]`).
        key: &'static str,
    },
    /// Nothing trims the stream, for the reason given.
    Exempt(&'static str),
}

/// What bounds the dead-letter streams (`Keys::dead_letter`): not deletion — a dead letter is
/// kept until an operator replays or deletes it — but an alarm: the owner of a stream whose
/// readers dead-letter reports its dead-letter stream's length as the gauge
/// `kitbash_dead_letter_length{stream}` and, once it is above `[consumer] dead_letter_alarm`,
/// sets `kitbash_dead_letter_alarm{stream}` to 1 and logs a warning; `kitbash status` prints a
/// warning line.
pub const DEAD_LETTERS: &str = "never trimmed: an alarm ([consumer] dead_letter_alarm) instead";

/// A logical stream. Its key comes from [`crate::Keys::stream`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum StreamName {
    /// Market ticks, partition `n` of the configured partition count (feynman's input).
    Ticks(u32),
    /// Query events (decay's input).
    Queries,
    /// A plain, unpartitioned `entity` stream. No daemon reads or writes it: entity reads its
    /// ordered partitions ([`StreamName::EntityPart`]) instead, and `kitbash status` does not
    /// list it. It stays because the runtime's own tests use it as a generic group-read stream.
    Entity,
    /// Memory tokens to index (archive's indexing input).
    Memory,
    /// Physics vectors written by feynman (bridge resume, replay).
    Physics,
    /// Resonance crossings emitted by decay (ghost's input).
    Crossings,
    /// Entity-update events, partition `n` of `[entity] partitions` (entity's input: documents
    /// are routed by `partition_of(document key, P)` so one document's updates stay in order).
    EntityPart(u32),
    /// Every committed document change, in commit order (the bridge's resume positions).
    EntityChanges,
}

impl StreamName {
    /// The streams that exist for a deployment with `tick_partitions` tick partitions
    /// (`[feynman] partitions`) and `entity_partitions` entity partitions (`[entity]
    /// partitions`): what `kitbash status` lists. [`StreamName::Entity`] is not among them.
    pub fn all(tick_partitions: u32, entity_partitions: u32) -> Vec<StreamName> {
        let mut v: Vec<StreamName> = (0..tick_partitions).map(StreamName::Ticks).collect();
        v.extend([
            StreamName::Queries,
            StreamName::Memory,
            StreamName::Physics,
            StreamName::Crossings,
        ]);
        v.extend((0..entity_partitions).map(StreamName::EntityPart));
        v.push(StreamName::EntityChanges);
        v
    }

    /// The daemon that owns this stream's partitions through leases and a fenced checkpoint
    /// (no consumer group), for a partitioned stream: feynman for ticks, entity for the entity
    /// partitions.
    pub fn partitioned_by(self) -> Option<DaemonKind> {
        match self {
            StreamName::Ticks(_) => Some(DaemonKind::Feynman),
            StreamName::EntityPart(_) => Some(DaemonKind::Entity),
            _ => None,
        }
    }

    /// The partition number of a partitioned stream.
    pub fn partition(self) -> Option<u32> {
        match self {
            StreamName::Ticks(p) | StreamName::EntityPart(p) => Some(p),
            _ => None,
        }
    }

    /// The logical name used on the command line and in the key: `ticks:3`, `queries`, …
    pub fn logical(self) -> String {
        match self {
            StreamName::Ticks(p) => format!("ticks:{p}"),
            StreamName::EntityPart(p) => format!("entity:{p}"),
            other => other.base().to_owned(),
        }
    }

    /// The family name without partition: `ticks`, `queries`, …
    pub fn base(self) -> &'static str {
        match self {
            StreamName::Ticks(_) => "ticks",
            StreamName::Queries => "queries",
            StreamName::Entity => "entity",
            StreamName::Memory => "memory",
            StreamName::Physics => "physics",
            StreamName::Crossings => "crossings",
            StreamName::EntityPart(_) => "entity",
            StreamName::EntityChanges => "entity-changes",
        }
    }

    /// Parses a logical name (`ticks:3`, `queries`).
    pub fn parse(s: &str) -> Option<StreamName> {
        if let Some(p) = s.strip_prefix("ticks:") {
            return p.parse().ok().map(StreamName::Ticks);
        }
        if let Some(p) = s.strip_prefix("entity:") {
            return p.parse().ok().map(StreamName::EntityPart);
        }
        Some(match s {
            "queries" => StreamName::Queries,
            "entity" => StreamName::Entity,
            "memory" => StreamName::Memory,
            "physics" => StreamName::Physics,
            "crossings" => StreamName::Crossings,
            "entity-changes" => StreamName::EntityChanges,
            _ => return None,
        })
    }

    /// The consumer groups that must see every entry of this stream — the daemons that
    /// *process* it. `kitbash status` reports their lag, and `kitbash_runtime::trim::safe_trim`
    /// trims nothing
    /// while one of them does not exist yet (a group created later would start from an
    /// already-trimmed stream and never see what was deleted).
    ///
    /// The archive is an *observer*, listed by [`StreamName::observers`] instead: while its
    /// group exists, trimming never passes what it has not acknowledged (every existing
    /// group bounds a trim), but its absence does not hold trimming back — a fleet that runs
    /// no archive must not grow its streams forever. Start the archive before the producers
    /// (or let `kitbash up` create its groups) to keep the whole history.
    pub fn groups(self) -> &'static [Group] {
        match self {
            // feynman reads ticks without a group: it owns whole partitions through leases and
            // keeps its position in the partition checkpoint (see kitbash-feynman); entity
            // reads its partitions the same way.
            StreamName::Ticks(_) | StreamName::EntityPart(_) => &[],
            StreamName::Queries => const { &[DaemonKind::Decay.group()] },
            StreamName::Entity => const { &[DaemonKind::Entity.group()] },
            StreamName::Crossings => const { &[DaemonKind::Ghost.group()] },
            // The archive's memory-token indexer (seed 004) processes the memory stream.
            StreamName::Memory => &[Group::MEMORY_INDEX],
            // Outputs: read by tails (the bridge) and the archive, no processing group.
            StreamName::Physics | StreamName::EntityChanges => &[],
        }
    }

    /// The groups that read this stream without being required to exist before it is
    /// trimmed (see [`StreamName::groups`]): the archive, on every stream.
    pub fn observers(self) -> &'static [DaemonKind] {
        &[DaemonKind::Archive]
    }

    /// Who keeps this stream bounded: the one daemon that trims it (every instance of it, each
    /// trim a `safe_trim`, so never past a group's unacknowledged or undelivered entries), and
    /// the config key of its bound; or why nothing does. One owner per stream, so two bounds
    /// never disagree. While the archive archives a stream it takes the stream's trim over
    /// ([`crate::Keys::trim_claim`], `[archive] trim`): this owner's trim then does nothing
    /// until the claim expires.
    pub fn trim_owner(self) -> TrimOwner {
        let owner = |kind, key| TrimOwner::Daemon { kind, key };
        match self {
            // The partition workers trim their own partitions, never past the checkpoint's
            // `snap_id` (what recovery replays).
            StreamName::Ticks(_) => owner(DaemonKind::Feynman, "tick_stream_max"),
            StreamName::EntityPart(_) => owner(DaemonKind::Entity, "stream_max"),
            // Outputs trimmed by their writer.
            StreamName::Physics => owner(DaemonKind::Feynman, "physics_stream_max"),
            StreamName::EntityChanges => owner(DaemonKind::Entity, "changes_max"),
            // Inputs trimmed by the daemon that processes them: it knows when it is done.
            StreamName::Queries => owner(DaemonKind::Decay, "queries_stream_max"),
            StreamName::Crossings => owner(DaemonKind::Ghost, "crossings_stream_max"),
            // The archive's indexer trims it (never past an entry not yet indexed, the
            // `index` group being required); the archiver takes the trim over while it
            // archives the stream, like every stream it archives.
            StreamName::Memory => owner(DaemonKind::Archive, "memory_stream_max"),
            StreamName::Entity => TrimOwner::Exempt(
                "no daemon reads or writes it (entity reads its partitions); only the \
                 runtime's tests use it",
            ),
        }
    }

    /// One stream of each kind (partition 0 of a partitioned family), every variant of
    /// [`StreamName`]: what a check over all streams (their trim owners) walks.
    pub fn families() -> [StreamName; 8] {
        // A new variant fails to compile here until it is listed below.
        let listed = |s: StreamName| match s {
            StreamName::Ticks(_)
            | StreamName::Queries
            | StreamName::Entity
            | StreamName::Memory
            | StreamName::Physics
            | StreamName::Crossings
            | StreamName::EntityPart(_)
            | StreamName::EntityChanges => s,
        };
        [
            listed(StreamName::Ticks(0)),
            StreamName::Queries,
            StreamName::Entity,
            StreamName::Memory,
            StreamName::Physics,
            StreamName::Crossings,
            StreamName::EntityPart(0),
            StreamName::EntityChanges,
        ]
    }
}

impl fmt::Display for StreamName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.logical())
    }
}

/// The partition of a routing key (a symbol, a document) among `partitions`: FNV-1a 64 of its
/// bytes modulo the count. Every partitioned stream routes this way; see [`tick_partition`].
pub fn partition_of(key: &str, partitions: u32) -> u32 {
    tick_partition(key, partitions)
}

/// The tick partition of `symbol` among `partitions`: FNV-1a 64 of the symbol's bytes, modulo
/// the partition count. Part of the wire contract: every producer, in any language, must route
/// a symbol to the same partition so that one feynman instance sees all of its ticks in order.
pub fn tick_partition(symbol: &str, partitions: u32) -> u32 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in symbol.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    (h % u64::from(partitions.max(1))) as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tick_partition_is_fnv1a_mod_p() {
        // FNV-1a 64 of "SPY" = 0x97fc9619fa5d47fd, computed independently in Python.
        assert_eq!(
            tick_partition("SPY", 8),
            (0x97fc_9619_fa5d_47fdu64 % 8) as u32
        );
        assert_eq!(tick_partition("SPY", 8), 5);
        assert_eq!(tick_partition("SPY", 1), 0);
        assert_eq!(tick_partition("", 8), (0xcbf2_9ce4_8422_2325u64 % 8) as u32);
        let p: Vec<u32> = ["SPY", "QQQ", "AAPL", "MSFT", "BTC-USD"]
            .iter()
            .map(|s| tick_partition(s, 8))
            .collect();
        assert!(p.iter().all(|&x| x < 8));
    }

    #[test]
    fn logical_names_round_trip() {
        for s in StreamName::all(4, 3)
            .into_iter()
            .chain([StreamName::Entity])
        {
            assert_eq!(StreamName::parse(&s.logical()), Some(s));
        }
        assert_eq!(StreamName::EntityPart(2).logical(), "entity:2");
        assert_eq!(StreamName::parse("ticks:x"), None);
        assert_eq!(StreamName::parse("nope"), None);
    }

    #[test]
    fn a_deployment_lists_both_partition_families_and_not_the_plain_entity_stream() {
        let all = StreamName::all(2, 3);
        assert_eq!(
            all.iter().map(|s| s.logical()).collect::<Vec<_>>(),
            [
                "ticks:0",
                "ticks:1",
                "queries",
                "memory",
                "physics",
                "crossings",
                "entity:0",
                "entity:1",
                "entity:2",
                "entity-changes"
            ]
        );
        assert_eq!(
            StreamName::EntityPart(1).partitioned_by(),
            Some(DaemonKind::Entity)
        );
        assert_eq!(
            StreamName::Ticks(1).partitioned_by(),
            Some(DaemonKind::Feynman)
        );
        assert_eq!(StreamName::EntityChanges.partitioned_by(), None);
        assert_eq!(StreamName::EntityPart(2).partition(), Some(2));
    }

    #[test]
    fn every_stream_has_one_trim_owner_or_a_reason() {
        let families = StreamName::families();
        let mut bases: Vec<&str> = families.iter().map(|s| s.base()).collect();
        bases.sort_unstable();
        let before = bases.len();
        bases.dedup();
        // `entity` is the base of both the plain stream and the partitions.
        assert_eq!(bases.len() + 1, before, "one representative per variant");
        for s in StreamName::all(3, 3).into_iter().chain(families) {
            match s.trim_owner() {
                TrimOwner::Daemon { kind, key } => {
                    assert!(DaemonKind::ALL.contains(&kind), "{s}: owner {kind}");
                    assert!(!key.is_empty(), "{s}: a bound key");
                    // A processing group's stream is trimmed by that group's daemon (it knows
                    // when it is done), or by its partition worker.
                    for g in s.groups() {
                        assert_eq!(
                            g.daemon(),
                            Some(kind),
                            "{s}: trimmed by its processing group"
                        );
                    }
                    if let Some(w) = s.partitioned_by() {
                        assert_eq!(w, kind, "{s}: trimmed by its partition worker");
                    }
                }
                TrimOwner::Exempt(why) => {
                    assert!(why.len() > 20, "{s}: say why it is exempt");
                    // A stream a daemon processes is written in production: it must be bounded
                    // (the plain `entity` stream keeps its group only for the runtime's tests).
                    assert!(
                        s.groups().is_empty() || s == StreamName::Entity,
                        "{s}: processed, so it must be trimmed"
                    );
                }
            }
        }
    }

    #[test]
    fn kinds_round_trip() {
        for k in DaemonKind::ALL {
            assert_eq!(DaemonKind::parse(k.name()), Some(k));
        }
    }
}
