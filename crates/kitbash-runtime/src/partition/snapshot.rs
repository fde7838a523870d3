//! Incremental snapshots of a partition's items, and the recent producer mids.
//!
//! Each item (a symbol's window, a document) is stored in the partition's state hash as
//! `{as_of}\0{bytes}`, where `as_of` is the partition position the bytes are current at. Only
//! items changed since their last snapshot are written, at most `snapshot_max_items` per
//! commit, oldest change first. The checkpoint's `snap_id` is the position before the oldest
//! change not yet snapshotted: recovery replays from there, giving each item only the entries
//! newer than its own `as_of`. So the cost of a snapshot follows what changed, not what exists.
//!
//! An item that keeps changing (a busy symbol's window) would otherwise be re-encoded at every
//! snapshot; with `snapshot_item_ms` > 0 an item is written only once it has waited that long
//! since its first unsnapshotted change, so a busy item costs one encoding per
//! `snapshot_item_ms` and recovery replays at most about that much more. The wait is measured on
//! the local clock: it decides only *when* an item is written, never what recovery computes.

use std::collections::{HashMap, HashSet, VecDeque};
use std::time::{Duration, Instant};

/// How many recent producer message ids a partition remembers to drop a re-sent entry.
pub const RECENT_MIDS: usize = 4096;

/// Items changed since their last snapshot, oldest change first.
#[derive(Debug, Default)]
pub struct Dirty {
    /// (item key, the partition position before its first unsnapshotted change, when that
    /// change was applied).
    order: VecDeque<(String, String, Instant)>,
    /// Keys in `order`.
    set: HashSet<String, foldhash::fast::RandomState>,
}

impl Dirty {
    /// Marks `key` changed by an entry after position `before`.
    pub fn mark(&mut self, key: &str, before: &str) {
        if self.set.insert(key.to_owned()) {
            self.order
                .push_back((key.to_owned(), before.to_owned(), Instant::now()));
        }
    }

    /// Takes up to `max` of the oldest changed items that have waited at least `min_age`.
    pub fn take(&mut self, max: usize, min_age: Duration) -> Vec<String> {
        (0..max).map_while(|_| self.pop(min_age, None)).collect()
    }

    /// Takes the oldest changed item when it has waited at least `min_age` and, with
    /// `marked_by`, was first changed no later than that instant (a snapshot round covers
    /// what changed before it started; later changes wait for the next round).
    pub fn pop(&mut self, min_age: Duration, marked_by: Option<Instant>) -> Option<String> {
        let (_, _, since) = self.order.front()?;
        if since.elapsed() < min_age || marked_by.is_some_and(|by| *since > by) {
            return None;
        }
        let (key, _, _) = self.order.pop_front()?;
        self.set.remove(&key);
        Some(key)
    }

    /// Whether the oldest changed item can be taken by [`Dirty::pop`] with these arguments.
    pub fn ready(&self, min_age: Duration, marked_by: Option<Instant>) -> bool {
        self.order.front().is_some_and(|(_, _, since)| {
            since.elapsed() >= min_age && marked_by.is_none_or(|by| *since <= by)
        })
    }

    /// Whether the oldest changed item has waited at least `min_age`.
    pub fn has_aged(&self, min_age: Duration) -> bool {
        self.ready(min_age, None)
    }

    /// Where recovery must replay from once the taken items are written: the position before
    /// the oldest remaining change, or `last` when nothing remains.
    pub fn replay_from(&self, last: &str) -> String {
        self.order
            .front()
            .map_or_else(|| last.to_owned(), |(_, before, _)| before.clone())
    }

    /// Number of items waiting.
    pub fn len(&self) -> usize {
        self.order.len()
    }

    /// Whether nothing waits.
    pub fn is_empty(&self) -> bool {
        self.order.is_empty()
    }
}

/// `{as_of}\0{bytes}`.
pub fn encode_stored(as_of: &str, bytes: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(as_of.len() + 1 + bytes.len());
    v.extend_from_slice(as_of.as_bytes());
    v.push(0);
    v.extend_from_slice(bytes);
    v
}

/// The inverse of [`encode_stored`].
pub fn decode_stored(v: &[u8]) -> Option<(String, &[u8])> {
    let nul = v.iter().position(|&b| b == 0)?;
    let as_of = std::str::from_utf8(&v[..nul]).ok()?.to_owned();
    Some((as_of, &v[nul + 1..]))
}

/// The last [`RECENT_MIDS`] producer message ids with the entry that first carried each: a
/// producer that retries an `XADD` whose outcome it did not learn re-sends the same `mid`, and
/// the copy is dropped. Keeping the first entry's id makes recovery exact: replaying the
/// original finds its own id and applies it, replaying the copy finds another and skips it.
#[derive(Debug, Default)]
pub struct RecentMids {
    order: VecDeque<u64>,
    first: HashMap<u64, String>,
}

/// FNV-1a 64 of a mid (the memory holds hashes, not the producers' strings).
pub fn mid_hash(mid: &str) -> u64 {
    mid.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

impl RecentMids {
    /// Whether the entry `id` carrying `mid` is to be applied: true for an entry without a mid,
    /// a mid not seen recently (now remembered), or the entry that first carried it.
    pub fn admit(&mut self, mid: Option<&str>, id: &str) -> bool {
        let Some(mid) = mid else { return true };
        let h = mid_hash(mid);
        if let Some(first) = self.first.get(&h) {
            return first == id;
        }
        self.first.insert(h, id.to_owned());
        self.order.push_back(h);
        if self.order.len() > RECENT_MIDS
            && let Some(old) = self.order.pop_front()
        {
            self.first.remove(&old);
        }
        true
    }

    /// MessagePack of `[(hash, id)]`, oldest first.
    pub fn encode(&self) -> Vec<u8> {
        let list: Vec<(u64, &str)> = self
            .order
            .iter()
            .filter_map(|h| self.first.get(h).map(|id| (*h, id.as_str())))
            .collect();
        rmp_serde::to_vec(&list).unwrap_or_default()
    }

    /// The inverse of [`RecentMids::encode`]; an unreadable blob gives an empty memory.
    pub fn decode(b: &[u8]) -> Self {
        let list: Vec<(u64, String)> = rmp_serde::from_slice(b).unwrap_or_default();
        let mut m = Self::default();
        for (h, id) in list {
            if m.first.insert(h, id).is_none() {
                m.order.push_back(h);
            }
        }
        m
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dirty_items_come_out_oldest_first_and_set_the_replay_point() {
        let mut d = Dirty::default();
        d.mark("A", "1-0");
        d.mark("B", "2-0");
        d.mark("A", "3-0");
        assert_eq!(d.len(), 2);
        assert_eq!(d.take(1, Duration::ZERO), vec!["A".to_owned()]);
        assert_eq!(d.replay_from("9-0"), "2-0");
        assert_eq!(d.take(5, Duration::ZERO), vec!["B".to_owned()]);
        assert_eq!(d.replay_from("9-0"), "9-0");
    }

    #[test]
    fn items_wait_their_age_oldest_first() {
        let mut d = Dirty::default();
        d.mark("A", "1-0");
        std::thread::sleep(Duration::from_millis(30));
        d.mark("B", "2-0");
        assert!(d.has_aged(Duration::from_millis(20)));
        assert_eq!(d.take(5, Duration::from_millis(20)), vec!["A".to_owned()]);
        assert!(!d.has_aged(Duration::from_secs(60)));
        assert!(
            d.take(5, Duration::from_secs(60)).is_empty(),
            "B is too fresh"
        );
        assert_eq!(
            d.replay_from("9-0"),
            "2-0",
            "B's change still needs replaying"
        );
        assert_eq!(d.take(5, Duration::ZERO), vec!["B".to_owned()]);
    }

    #[test]
    fn a_round_takes_only_what_changed_before_it_fell_due() {
        let mut d = Dirty::default();
        d.mark("A", "1-0");
        d.mark("B", "2-0");
        let due = Instant::now();
        std::thread::sleep(Duration::from_millis(5));
        d.mark("C", "3-0");
        assert!(d.ready(Duration::ZERO, Some(due)));
        assert_eq!(d.pop(Duration::ZERO, Some(due)), Some("A".to_owned()));
        assert_eq!(d.pop(Duration::ZERO, Some(due)), Some("B".to_owned()));
        assert!(
            !d.ready(Duration::ZERO, Some(due)),
            "C changed after the round fell due"
        );
        assert_eq!(d.pop(Duration::ZERO, Some(due)), None);
        assert_eq!(d.replay_from("9-0"), "3-0", "C still needs replaying");
        assert!(d.ready(Duration::ZERO, None));
        assert!(!d.ready(Duration::from_secs(60), None), "C is too fresh");
        assert_eq!(d.pop(Duration::ZERO, None), Some("C".to_owned()));
        assert!(d.is_empty());
    }

    #[test]
    fn stored_items_round_trip() {
        let v = encode_stored("5-1", b"\x00abc");
        assert_eq!(decode_stored(&v), Some(("5-1".to_owned(), &b"\x00abc"[..])));
        assert_eq!(decode_stored(b"no-separator"), None);
    }

    #[test]
    fn mids_admit_the_original_and_drop_copies_also_after_a_restore() {
        let mut m = RecentMids::default();
        assert!(m.admit(Some("m1"), "1-0"));
        assert!(!m.admit(Some("m1"), "2-0"));
        assert!(m.admit(None, "3-0"));
        let mut back = RecentMids::decode(&m.encode());
        assert!(back.admit(Some("m1"), "1-0"), "the original replays");
        assert!(!back.admit(Some("m1"), "2-0"), "the copy is still dropped");
    }
}
