//! [`GrainBank`]: many grains of one dimension in one contiguous, cache-line-aligned buffer,
//! with insert / update / remove by id and top-k search for one query or a batch.
//!
//! # Storage
//! Structure of arrays: `ids` (slot → id), an id → slot map, and one flat buffer of plane
//! words. A grain's record is its *non-zero* plane (`plus | minus`) then its plus plane, each
//! padded with zero words to `stride` words (a multiple of four, so one AVX2 register never
//! straddles two grains), which makes a record a whole number of 64-byte cache lines; the
//! buffer starts on a cache line. Storing `plus | minus` instead of `minus` saves the kernels
//! one operation per word (the minus plane is `nonzero & !plus`); the Redis byte planes and
//! [`TernaryVector`] keep the plus / minus form. A 256-trit grain is exactly one cache line.
//! Removal swap-removes: the last record moves into the hole, so the buffer stays dense and
//! searches never skip tombstones.
//!
//! # Search
//! A search walks the records in blocks: the kernel scores a block into a small buffer, then
//! the shared top-k scan keeps the best. A batch search walks the bank once and, for each
//! block (sized to stay in the L1/L2 cache), scores it against every query, so each grain is
//! read from memory once for the whole batch. Both can split the bank across threads
//! (`std::thread::scope`) and merge the partial top-k lists; the tie-break (higher score, then
//! lower id) makes the result independent of storage order and thread count.

use std::collections::HashMap;
use std::ops::Range;

use crate::error::{MAX_DIM, TernaryError};
use crate::hat::HatMask;
use crate::kernel::{Kernel, LANE_WORDS, PreparedQuery, Resolved, score_records};
use crate::topk::{Hit, TopK};
use crate::vector::{TernaryVector, words_for};

/// Grains scored per kernel call in a single-query search (the score buffer is on the stack).
const BLOCK_GRAINS: usize = 256;

/// Target size of the block of records a batch search scores against every query before
/// moving on: small enough to stay in the L1 cache next to the query words.
const BATCH_BLOCK_BYTES: usize = 16 * 1024;

/// What to search for and how.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct SearchOptions {
    /// How many hits to return (fewer when the bank is smaller). Default 3, the seed's ghost
    /// top-k.
    pub k: usize,
    /// A hat applied to the query before scoring (equivalently, to every grain).
    pub hat: Option<HatMask>,
    /// Force a kernel (tests, benchmarks); `None` uses the bank's kernel.
    pub kernel: Option<Kernel>,
    /// Threads to split the bank across; 0 and 1 both mean the calling thread only. Worth it
    /// only for large banks: spawning costs tens of microseconds.
    pub threads: usize,
}

impl Default for SearchOptions {
    fn default() -> Self {
        Self {
            k: 3,
            hat: None,
            kernel: None,
            threads: 1,
        }
    }
}

impl SearchOptions {
    /// Top `k`, no hat, the bank's kernel, one thread.
    pub fn top(k: usize) -> Self {
        Self {
            k,
            ..Self::default()
        }
    }

    /// With a hat applied to the query.
    pub fn with_hat(self, hat: HatMask) -> Self {
        Self {
            hat: Some(hat),
            ..self
        }
    }

    /// With a forced kernel.
    pub fn with_kernel(self, kernel: Kernel) -> Self {
        Self {
            kernel: Some(kernel),
            ..self
        }
    }

    /// Split across `threads` threads.
    pub fn with_threads(self, threads: usize) -> Self {
        Self { threads, ..self }
    }
}

/// A `Vec<u64>` whose visible part starts on a 64-byte boundary, in safe code: the buffer is
/// over-allocated by seven words and the view starts at the first aligned word.
#[derive(Debug, Default)]
struct AlignedWords {
    buf: Vec<u64>,
    start: usize,
    len: usize,
}

impl AlignedWords {
    fn as_slice(&self) -> &[u64] {
        &self.buf[self.start..self.start + self.len]
    }

    fn as_mut_slice(&mut self) -> &mut [u64] {
        &mut self.buf[self.start..self.start + self.len]
    }

    /// Grows the view to `len` words; new words are zero.
    fn grow_to(&mut self, len: usize) {
        if len <= self.len {
            return;
        }
        if self.start + len > self.buf.len() {
            let capacity = len.max(self.len * 2).max(64);
            let mut buf = vec![0u64; capacity + 7];
            // Words from the allocation start to the next 64-byte boundary.
            let start = (buf.as_ptr() as usize).wrapping_neg() % 64 / 8;
            buf[start..start + self.len].copy_from_slice(self.as_slice());
            self.buf = buf;
            self.start = start;
        } else {
            self.buf[self.start + self.len..self.start + len].fill(0);
        }
        self.len = len;
    }

    fn truncate(&mut self, len: usize) {
        self.len = self.len.min(len);
    }

    fn capacity_bytes(&self) -> usize {
        self.buf.capacity() * 8
    }
}

impl Clone for AlignedWords {
    fn clone(&self) -> Self {
        // A derived clone would copy the offset into a new allocation with another alignment.
        let mut copy = AlignedWords::default();
        copy.grow_to(self.len);
        copy.as_mut_slice().copy_from_slice(self.as_slice());
        copy
    }
}

/// Many grains of one dimension, searchable by ternary dot product.
#[derive(Clone, Debug)]
pub struct GrainBank {
    /// Trits per grain; fixed at construction. Every grain and query must match it.
    dim: usize,
    /// Words per plane in a record: `ceil(dim / 64)` rounded up to a multiple of four.
    stride: usize,
    /// Slot → grain id; parallel to the records.
    ids: Vec<u64>,
    /// Grain id → slot; kept in step with `ids` by insert and swap-remove.
    slots: HashMap<u64, usize>,
    /// The records, slot order, `2 * stride` words each (non-zero plane, then plus plane).
    planes: AlignedWords,
    /// The kernel searches use unless [`SearchOptions::kernel`] overrides it; set to
    /// [`Kernel::detect`] at construction.
    kernel: Kernel,
}

impl GrainBank {
    /// An empty bank of `dim`-trit grains using the fastest kernel this CPU has.
    pub fn new(dim: usize) -> Result<Self, TernaryError> {
        if dim > MAX_DIM {
            return Err(TernaryError::DimensionTooLarge { dim });
        }
        Ok(Self {
            dim,
            stride: words_for(dim).next_multiple_of(LANE_WORDS),
            ids: Vec::new(),
            slots: HashMap::new(),
            planes: AlignedWords::default(),
            kernel: Kernel::detect(),
        })
    }

    /// An empty bank with room for `grains` grains.
    pub fn with_capacity(dim: usize, grains: usize) -> Result<Self, TernaryError> {
        let mut bank = Self::new(dim)?;
        bank.planes.grow_to(grains * bank.record_words());
        bank.planes.truncate(0);
        bank.ids.reserve(grains);
        bank.slots.reserve(grains);
        Ok(bank)
    }

    /// Trits per grain.
    pub fn dim(&self) -> usize {
        self.dim
    }

    /// Number of grains.
    pub fn len(&self) -> usize {
        self.ids.len()
    }

    /// Whether the bank holds no grain.
    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }

    /// Grain ids in storage (slot) order; [`GrainBank::scores`] follows the same order.
    pub fn ids(&self) -> &[u64] {
        &self.ids
    }

    /// Whether grain `id` is in the bank.
    pub fn contains(&self, id: u64) -> bool {
        self.slots.contains_key(&id)
    }

    /// The kernel searches use by default.
    pub fn kernel(&self) -> Kernel {
        self.kernel
    }

    /// Changes the default kernel; refused if this CPU cannot run it.
    pub fn set_kernel(&mut self, kernel: Kernel) -> Result<(), TernaryError> {
        kernel.resolve()?;
        self.kernel = kernel;
        Ok(())
    }

    /// Bytes of plane storage allocated (the bank's dominant memory cost).
    pub fn plane_bytes_allocated(&self) -> usize {
        self.planes.capacity_bytes()
    }

    fn record_words(&self) -> usize {
        2 * self.stride
    }

    /// The raw plane words, slot order (for the in-crate benchmark baseline).
    pub(crate) fn raw_words(&self) -> &[u64] {
        self.planes.as_slice()
    }

    /// A copy of grain `id`.
    pub fn get(&self, id: u64) -> Option<TernaryVector> {
        let slot = *self.slots.get(&id)?;
        let words = words_for(self.dim);
        let record = &self.planes.as_slice()[slot * self.record_words()..][..self.record_words()];
        let (nonzero, plus) = record.split_at(self.stride);
        let minus = nonzero[..words]
            .iter()
            .zip(plus)
            .map(|(n, p)| n & !p)
            .collect();
        TernaryVector::from_words(self.dim, plus[..words].to_vec(), minus).ok()
    }

    fn check_dim(&self, found: usize) -> Result<(), TernaryError> {
        if found == self.dim {
            Ok(())
        } else {
            Err(TernaryError::DimensionMismatch {
                expected: self.dim,
                found,
            })
        }
    }

    fn write_record(&mut self, slot: usize, grain: &TernaryVector) {
        let (stride, words) = (self.stride, words_for(self.dim));
        let record = &mut self.planes.as_mut_slice()[slot * 2 * stride..][..2 * stride];
        record.fill(0);
        let (nonzero, plus) = record.split_at_mut(stride);
        let planes = grain.plus_words().iter().zip(grain.minus_words());
        for ((n, p), (&gp, &gm)) in nonzero.iter_mut().zip(plus.iter_mut()).zip(planes) {
            *n = gp | gm;
            *p = gp;
        }
        debug_assert!(words <= stride);
    }

    /// Adds grain `id`; refused if the id is already present or the dimension differs.
    pub fn insert(&mut self, id: u64, grain: &TernaryVector) -> Result<(), TernaryError> {
        self.check_dim(grain.dim())?;
        if self.slots.contains_key(&id) {
            return Err(TernaryError::DuplicateId(id));
        }
        let slot = self.ids.len();
        self.planes.grow_to((slot + 1) * self.record_words());
        self.write_record(slot, grain);
        self.ids.push(id);
        self.slots.insert(id, slot);
        Ok(())
    }

    /// Replaces grain `id`; refused if the id is absent or the dimension differs.
    pub fn update(&mut self, id: u64, grain: &TernaryVector) -> Result<(), TernaryError> {
        self.check_dim(grain.dim())?;
        let slot = *self.slots.get(&id).ok_or(TernaryError::UnknownId(id))?;
        self.write_record(slot, grain);
        Ok(())
    }

    /// Inserts or replaces grain `id`; returns whether it replaced one.
    pub fn upsert(&mut self, id: u64, grain: &TernaryVector) -> Result<bool, TernaryError> {
        if self.contains(id) {
            self.update(id, grain).map(|()| true)
        } else {
            self.insert(id, grain).map(|()| false)
        }
    }

    /// Removes grain `id` (the last grain moves into its slot); returns whether it was there.
    pub fn remove(&mut self, id: u64) -> bool {
        let Some(slot) = self.slots.remove(&id) else {
            return false;
        };
        let rec = self.record_words();
        let last = self.ids.len() - 1;
        if slot != last {
            self.planes
                .as_mut_slice()
                .copy_within(last * rec..(last + 1) * rec, slot * rec);
            let moved = self.ids[last];
            self.slots.insert(moved, slot);
        }
        self.ids.swap_remove(slot);
        self.planes.truncate(last * rec);
        true
    }

    /// Removes every grain (keeps the allocation).
    pub fn clear(&mut self) {
        self.ids.clear();
        self.slots.clear();
        self.planes.truncate(0);
    }

    fn prepare(
        &self,
        query: &TernaryVector,
        hat: Option<&HatMask>,
    ) -> Result<PreparedQuery, TernaryError> {
        self.check_dim(query.dim())?;
        Ok(PreparedQuery::new(query, hat, self.stride))
    }

    fn resolve(&self, opts: &SearchOptions) -> Result<Resolved, TernaryError> {
        opts.kernel.unwrap_or(self.kernel).resolve()
    }

    /// The top `k` grains by ternary dot product with `query` (no hat, default kernel, one
    /// thread): the ghost daemon's call.
    pub fn top_k(&self, query: &TernaryVector, k: usize) -> Result<Vec<Hit>, TernaryError> {
        self.search(query, &SearchOptions::top(k))
    }

    /// The top `opts.k` grains for `query`, best first (higher score, then lower id).
    pub fn search(
        &self,
        query: &TernaryVector,
        opts: &SearchOptions,
    ) -> Result<Vec<Hit>, TernaryError> {
        let kernel = self.resolve(opts)?;
        let q = self.prepare(query, opts.hat.as_ref())?;
        if opts.threads <= 1 {
            // The reflex path: no thread machinery, no allocation beyond the query and result.
            return Ok(self
                .search_range(kernel, &q, 0..self.len(), opts.k)
                .into_hits());
        }
        let partials = self.on_threads(opts.threads, |range| {
            self.search_range(kernel, &q, range, opts.k)
        });
        Ok(merge(partials, opts.k, self.len()).into_hits())
    }

    /// The top `opts.k` grains for each query, in one pass over the bank: each block of
    /// grains is scored against every query while it is in cache.
    pub fn search_batch(
        &self,
        queries: &[TernaryVector],
        opts: &SearchOptions,
    ) -> Result<Vec<Vec<Hit>>, TernaryError> {
        let kernel = self.resolve(opts)?;
        let prepared = queries
            .iter()
            .map(|q| self.prepare(q, opts.hat.as_ref()))
            .collect::<Result<Vec<_>, _>>()?;
        let partials = self.on_threads(opts.threads, |range| {
            self.batch_range(kernel, &prepared, range, opts.k)
        });
        let mut merged: Vec<TopK> = (0..queries.len())
            .map(|_| TopK::new(opts.k, self.len()))
            .collect();
        for partial in partials {
            for (into, from) in merged.iter_mut().zip(partial) {
                into.merge(from);
            }
        }
        Ok(merged.into_iter().map(TopK::into_hits).collect())
    }

    /// Every grain's score against `query`, in [`GrainBank::ids`] order (`opts.k` and
    /// `opts.threads` are ignored).
    pub fn scores(
        &self,
        query: &TernaryVector,
        opts: &SearchOptions,
    ) -> Result<Vec<i32>, TernaryError> {
        let kernel = self.resolve(opts)?;
        let q = self.prepare(query, opts.hat.as_ref())?;
        let mut out = vec![0i32; self.len()];
        score_records(kernel, &q, self.planes.as_slice(), &mut out);
        Ok(out)
    }

    fn search_range(
        &self,
        kernel: Resolved,
        q: &PreparedQuery,
        range: Range<usize>,
        k: usize,
    ) -> TopK {
        let rec = self.record_words();
        let planes = self.planes.as_slice();
        let mut top = TopK::new(k, range.len());
        let mut scores = [0i32; BLOCK_GRAINS];
        let mut start = range.start;
        while start < range.end {
            let end = (start + BLOCK_GRAINS).min(range.end);
            let scores = &mut scores[..end - start];
            score_records(kernel, q, &planes[start * rec..end * rec], scores);
            top.offer_block(scores, &self.ids[start..end]);
            start = end;
        }
        top
    }

    fn batch_range(
        &self,
        kernel: Resolved,
        queries: &[PreparedQuery],
        range: Range<usize>,
        k: usize,
    ) -> Vec<TopK> {
        let rec = self.record_words();
        let block = (BATCH_BLOCK_BYTES / (rec * 8).max(1)).clamp(1, BLOCK_GRAINS);
        let planes = self.planes.as_slice();
        let mut tops: Vec<TopK> = queries.iter().map(|_| TopK::new(k, range.len())).collect();
        let mut scores = [0i32; BLOCK_GRAINS];
        let mut start = range.start;
        while start < range.end {
            let end = (start + block).min(range.end);
            let records = &planes[start * rec..end * rec];
            let ids = &self.ids[start..end];
            let scores = &mut scores[..end - start];
            for (q, top) in queries.iter().zip(tops.iter_mut()) {
                score_records(kernel, q, records, scores);
                top.offer_block(scores, ids);
            }
            start = end;
        }
        tops
    }

    /// Runs `work` over `threads` contiguous slot ranges (the first on the calling thread).
    fn on_threads<T: Send>(
        &self,
        threads: usize,
        work: impl Fn(Range<usize>) -> T + Sync,
    ) -> Vec<T> {
        let ranges = split(self.len(), threads);
        if ranges.len() <= 1 {
            return vec![work(0..self.len())];
        }
        std::thread::scope(|scope| {
            let work = &work;
            let handles: Vec<_> = ranges[1..]
                .iter()
                .map(|range| {
                    let range = range.clone();
                    scope.spawn(move || work(range))
                })
                .collect();
            let mut out = vec![work(ranges[0].clone())];
            for handle in handles {
                match handle.join() {
                    Ok(partial) => out.push(partial),
                    Err(panic) => std::panic::resume_unwind(panic),
                }
            }
            out
        })
    }
}

/// Splits `0..len` into at most `threads` contiguous ranges of whole blocks.
fn split(len: usize, threads: usize) -> Vec<Range<usize>> {
    let blocks = len.div_ceil(BLOCK_GRAINS);
    let parts = threads.clamp(1, blocks.max(1));
    let per = blocks.div_ceil(parts) * BLOCK_GRAINS;
    (0..parts)
        .map(|i| (i * per).min(len)..((i + 1) * per).min(len))
        .filter(|r| !r.is_empty())
        .collect()
}

fn merge(partials: Vec<TopK>, k: usize, n: usize) -> TopK {
    let mut iter = partials.into_iter();
    let mut out = iter.next().unwrap_or_else(|| TopK::new(k, n));
    for partial in iter {
        out.merge(partial);
    }
    out
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn storage_is_cache_line_aligned() {
        let mut bank = GrainBank::new(256).unwrap();
        for id in 0..100 {
            bank.insert(id, &TernaryVector::zeros(256).unwrap())
                .unwrap();
            assert_eq!(bank.raw_words().as_ptr() as usize % 64, 0);
        }
        assert_eq!(bank.clone().raw_words().as_ptr() as usize % 64, 0);
    }

    #[test]
    fn split_covers_everything_once() {
        for len in [0, 1, 255, 256, 257, 10_000] {
            for threads in [0, 1, 2, 3, 8] {
                let ranges = split(len, threads);
                let total: usize = ranges.iter().map(|r| r.len()).sum();
                assert_eq!(total, len);
                for pair in ranges.windows(2) {
                    assert_eq!(pair[0].end, pair[1].start);
                }
            }
        }
    }
}
