//! [`Hit`] and the top-k selection shared by every kernel: higher score first, then lower id.

use std::cmp::Ordering;

/// One search result: a grain id and its ternary dot product with the query.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub struct Hit {
    /// The grain's id.
    pub id: u64,
    /// The ternary dot product (after the hat, if any, was applied to the query).
    pub score: i32,
}

impl Hit {
    /// The result order: higher score first, then lower id. Ids are unique in a bank, so this
    /// is a total order and results never depend on storage order or thread count.
    pub fn rank(&self, other: &Hit) -> Ordering {
        other.score.cmp(&self.score).then(self.id.cmp(&other.id))
    }
}

/// The best `k` hits seen so far, kept sorted best first.
///
/// The scan compares scores with `floor` (the worst kept score, `i32::MIN` while not full)
/// eight at a time, without branching, before doing any insert work: the common case (eight
/// grains none of which makes the cut) costs a few vector compares and one well-predicted
/// branch.
#[derive(Clone, Debug)]
pub(crate) struct TopK {
    k: usize,
    hits: Vec<Hit>,
    /// Worst kept score once full (`i32::MIN` before; `i32::MAX` when `k == 0`).
    floor: i32,
    /// Id of the worst kept hit once full: a score equal to `floor` wins only with a lower id.
    floor_id: u64,
}

/// Scores checked against the floor per branch.
const SCAN_WIDTH: usize = 8;

impl TopK {
    pub(crate) fn new(k: usize, expected: usize) -> Self {
        Self {
            k,
            hits: Vec::with_capacity(k.min(expected) + 1),
            floor: if k == 0 { i32::MAX } else { i32::MIN },
            floor_id: u64::MAX,
        }
    }

    /// Offers a block of scores; `ids[i]` is the id of `scores[i]`.
    #[inline]
    pub(crate) fn offer_block(&mut self, scores: &[i32], ids: &[u64]) {
        let (score_chunks, score_rest) = scores.as_chunks::<SCAN_WIDTH>();
        let (id_chunks, id_rest) = ids.as_chunks::<SCAN_WIDTH>();
        for (scores, ids) in score_chunks.iter().zip(id_chunks) {
            // A branch-free maximum of eight (vectorised), one branch on it.
            let best = scores.iter().fold(i32::MIN, |m, &s| m.max(s));
            if best >= self.floor {
                self.offer_each(scores, ids);
            }
        }
        self.offer_each(score_rest, id_rest);
    }

    #[inline]
    fn offer_each(&mut self, scores: &[i32], ids: &[u64]) {
        for (&score, &id) in scores.iter().zip(ids) {
            // A tie with the floor still wins on a lower id.
            if score > self.floor || (score == self.floor && id < self.floor_id) {
                self.offer(Hit { id, score });
            }
        }
    }

    #[cold]
    fn offer(&mut self, hit: Hit) {
        if self.k == 0 {
            return;
        }
        if self.hits.len() == self.k {
            match self.hits.last() {
                Some(worst) if hit.rank(worst) == Ordering::Less => {}
                _ => return,
            }
            self.hits.pop();
        }
        let at = self
            .hits
            .partition_point(|kept| kept.rank(&hit) == Ordering::Less);
        self.hits.insert(at, hit);
        if let (true, Some(worst)) = (self.hits.len() == self.k, self.hits.last()) {
            self.floor = worst.score;
            self.floor_id = worst.id;
        }
    }

    /// Merges another partial result (from another thread or block range).
    pub(crate) fn merge(&mut self, other: TopK) {
        for hit in other.hits {
            self.offer(hit);
        }
    }

    pub(crate) fn into_hits(self) -> Vec<Hit> {
        self.hits
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_best_k_with_id_tie_break() {
        let mut top = TopK::new(3, 10);
        top.offer_block(&[5, 7, 7, 1, 7, 9], &[10, 4, 2, 3, 8, 6]);
        let ids: Vec<u64> = top.into_hits().iter().map(|h| h.id).collect();
        assert_eq!(ids, vec![6, 2, 4]);
    }

    #[test]
    fn k_zero_and_k_larger_than_n() {
        let mut none = TopK::new(0, 3);
        none.offer_block(&[1, 2, 3], &[1, 2, 3]);
        assert!(none.into_hits().is_empty());
        let mut all = TopK::new(10, 3);
        all.offer_block(&[1, 2, 3], &[1, 2, 3]);
        assert_eq!(all.into_hits().len(), 3);
    }
}
