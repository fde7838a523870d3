//! x86-64 kernels: scalar with POPCNT, AVX2 (nibble-table popcount) and AVX-512 (VPOPCNTDQ).
//!
//! All three use the algebra of the parent module on the stored (non-zero, plus) planes. The
//! functions here are safe `#[target_feature]` functions; the only `unsafe` is calling them
//! (after the CPU check that [`Resolved`] proves), and loads and stores through references to
//! whole lanes.

#![allow(unsafe_code)]
#![warn(clippy::undocumented_unsafe_blocks)]

use std::arch::x86_64::*;

use super::{Kernel, PreparedQuery, Resolved, score_scalar};

/// POPCNT kernel entry: falls back to the reference unless `kernel` is a resolved `Popcnt`.
pub(super) fn score_popcnt(kernel: Resolved, q: &PreparedQuery, records: &[u64], out: &mut [i32]) {
    if kernel.kernel() != Kernel::Popcnt {
        return score_scalar(q, records, out);
    }
    // SAFETY: `kernel` is a `Resolved` naming `Popcnt` (checked just above), and
    // `Kernel::resolve` only makes one after `is_x86_feature_detected!("popcnt")` said yes, so
    // the CPU has every feature `popcnt_records` is compiled for.
    unsafe { popcnt_records(q, records, out) }
}

#[target_feature(enable = "popcnt")]
fn popcnt_records(q: &PreparedQuery, records: &[u64], out: &mut [i32]) {
    let stride = q.stride();
    for (record, score) in records.chunks_exact(2 * stride).zip(out.iter_mut()) {
        let (gn, gp) = record.split_at(stride);
        let mut agree = 0u32;
        let mut disagree = 0u32;
        let lanes = gn.iter().zip(gp).zip(q.nonzero()).zip(q.plus());
        for (((&gn, &gp), &qn), &qp) in lanes {
            let both = qn & gn;
            let differ = qp ^ gp;
            agree += (both & !differ).count_ones();
            disagree += (both & differ).count_ones();
        }
        *score = agree as i32 - disagree as i32;
    }
}

/// AVX2 kernel entry: falls back to the reference unless `kernel` is a resolved `Avx2`.
pub(super) fn score_avx2(kernel: Resolved, q: &PreparedQuery, records: &[u64], out: &mut [i32]) {
    if kernel.kernel() != Kernel::Avx2 {
        return score_scalar(q, records, out);
    }
    // SAFETY: `kernel` is a `Resolved` naming `Avx2` (checked just above), made only after
    // `is_x86_feature_detected!("avx2")` said yes; AVX2 implies the AVX and SSE levels used.
    unsafe { avx2_records(q, records, out) }
}

/// Loads one 256-bit lane.
#[target_feature(enable = "avx2")]
#[inline]
fn load256(lane: &[u64; 4]) -> __m256i {
    // SAFETY: `lane` is a reference to 32 readable bytes; `loadu` has no alignment requirement.
    unsafe { _mm256_loadu_si256(lane.as_ptr().cast()) }
}

/// The query planes the AVX2 kernel reads per lane.
#[derive(Clone, Copy)]
struct Avx2Query {
    /// Non-zero mask, low nibbles only.
    lo: __m256i,
    /// Non-zero mask, high nibbles only.
    hi: __m256i,
    /// Plus plane.
    plus: __m256i,
}

/// Per byte: `pc(agree) − pc(disagree) + 8`, which lies in 0..=16 because agree and disagree
/// are disjoint. Computed as `pc(agree) + pc(!disagree)` with two nibble tables (`vpshufb`).
///
/// The query's non-zero mask comes pre-split into low and high nibbles, so ANDing it into the
/// grain already yields clean table indices: no masking after the fact, and the high half needs
/// only a shift. Seventeen operations per 256 trits.
#[target_feature(enable = "avx2")]
#[inline]
fn avx2_lane_bytes(gn: __m256i, gp: __m256i, q: Avx2Query) -> __m256i {
    let pc = _mm256_setr_epi8(
        0, 1, 1, 2, 1, 2, 2, 3, 1, 2, 2, 3, 2, 3, 3, 4, //
        0, 1, 1, 2, 1, 2, 2, 3, 1, 2, 2, 3, 2, 3, 3, 4,
    );
    // 4 − pc(nibble): the popcount of the complemented nibble.
    let pc_not = _mm256_setr_epi8(
        4, 3, 3, 2, 3, 2, 2, 1, 3, 2, 2, 1, 2, 1, 1, 0, //
        4, 3, 3, 2, 3, 2, 2, 1, 3, 2, 2, 1, 2, 1, 1, 0,
    );
    let differ = _mm256_xor_si256(q.plus, gp);
    let both_lo = _mm256_and_si256(q.lo, gn);
    let both_hi = _mm256_and_si256(q.hi, gn);
    let a_lo = _mm256_shuffle_epi8(pc, _mm256_andnot_si256(differ, both_lo));
    let d_lo = _mm256_shuffle_epi8(pc_not, _mm256_and_si256(differ, both_lo));
    // The 16-bit shift moves the high nibble down; the bits it pulls in from the neighbouring
    // byte are that byte's low nibble, which `both_hi` has already cleared.
    let a_hi = _mm256_shuffle_epi8(
        pc,
        _mm256_srli_epi16::<4>(_mm256_andnot_si256(differ, both_hi)),
    );
    let d_hi = _mm256_shuffle_epi8(
        pc_not,
        _mm256_srli_epi16::<4>(_mm256_and_si256(differ, both_hi)),
    );
    _mm256_add_epi8(_mm256_add_epi8(a_lo, a_hi), _mm256_add_epi8(d_lo, d_hi))
}

/// Sum of the four 64-bit lanes.
#[target_feature(enable = "avx2")]
#[inline]
fn hsum_epi64(v: __m256i) -> i64 {
    let s = _mm_add_epi64(_mm256_castsi256_si128(v), _mm256_extracti128_si256::<1>(v));
    _mm_cvtsi128_si64(_mm_add_epi64(s, _mm_unpackhi_epi64(s, s)))
}

/// Lanes summed in bytes before widening: bytes of [`avx2_lane_bytes`] are at most 16, so up
/// to 15 lanes fit a `u8`; groups of 8 unroll into straight-line code.
const AVX2_LANES_PER_GROUP: usize = 8;

/// Each byte of [`avx2_lane_bytes`] carries a bias of 8: 256 per lane of 32 bytes.
const AVX2_BIAS_PER_LANE: i32 = 8 * 32;

#[target_feature(enable = "avx2")]
fn avx2_records(q: &PreparedQuery, records: &[u64], out: &mut [i32]) {
    let stride = q.stride();
    let (q_lo, _) = q.nonzero_lo().as_chunks::<4>();
    let (q_hi, _) = q.nonzero_hi().as_chunks::<4>();
    let (q_plus, _) = q.plus().as_chunks::<4>();
    let lane_query = |lo, hi, plus| Avx2Query {
        lo: load256(lo),
        hi: load256(hi),
        plus: load256(plus),
    };
    if let ([lo], [hi], [plus]) = (q_lo, q_hi, q_plus) {
        return avx2_records_one_lane(lane_query(lo, hi, plus), records, out);
    }
    let bias = i64::from(AVX2_BIAS_PER_LANE) * q_plus.len() as i64;
    let (lo_groups, lo_rest) = q_lo.as_chunks::<AVX2_LANES_PER_GROUP>();
    let (hi_groups, hi_rest) = q_hi.as_chunks::<AVX2_LANES_PER_GROUP>();
    let (plus_groups, plus_rest) = q_plus.as_chunks::<AVX2_LANES_PER_GROUP>();
    let zero = _mm256_setzero_si256();
    for (record, score) in records.chunks_exact(2 * stride).zip(out.iter_mut()) {
        let (gn, gp) = record.split_at(stride);
        let (gn, _) = gn.as_chunks::<4>();
        let (gp, _) = gp.as_chunks::<4>();
        let (gn_groups, gn_rest) = gn.as_chunks::<AVX2_LANES_PER_GROUP>();
        let (gp_groups, gp_rest) = gp.as_chunks::<AVX2_LANES_PER_GROUP>();
        let mut total = zero;
        let groups = gn_groups
            .iter()
            .zip(gp_groups)
            .zip(lo_groups.iter().zip(hi_groups).zip(plus_groups));
        for ((gn, gp), ((lo, hi), plus)) in groups {
            // Two accumulators halve the dependency chain through the byte adds.
            let mut even = zero;
            let mut odd = zero;
            for i in (0..AVX2_LANES_PER_GROUP).step_by(2) {
                let a = avx2_lane_bytes(
                    load256(&gn[i]),
                    load256(&gp[i]),
                    lane_query(&lo[i], &hi[i], &plus[i]),
                );
                let b = avx2_lane_bytes(
                    load256(&gn[i + 1]),
                    load256(&gp[i + 1]),
                    lane_query(&lo[i + 1], &hi[i + 1], &plus[i + 1]),
                );
                even = _mm256_add_epi8(even, a);
                odd = _mm256_add_epi8(odd, b);
            }
            total = _mm256_add_epi64(total, _mm256_sad_epu8(even, zero));
            total = _mm256_add_epi64(total, _mm256_sad_epu8(odd, zero));
        }
        let mut bytes = zero;
        let rest = gn_rest
            .iter()
            .zip(gp_rest)
            .zip(lo_rest.iter().zip(hi_rest).zip(plus_rest));
        for ((gn, gp), ((lo, hi), plus)) in rest {
            let lane = avx2_lane_bytes(load256(gn), load256(gp), lane_query(lo, hi, plus));
            bytes = _mm256_add_epi8(bytes, lane);
        }
        total = _mm256_add_epi64(total, _mm256_sad_epu8(bytes, zero));
        *score = (hsum_epi64(total) - bias) as i32;
    }
}

/// The 256-trit case (one lane per plane, a record is one cache line): the query stays in
/// registers and four grains share one horizontal reduction.
#[target_feature(enable = "avx2")]
fn avx2_records_one_lane(q: Avx2Query, records: &[u64], out: &mut [i32]) {
    let zero = _mm256_setzero_si256();
    let (lanes, _) = records.as_chunks::<4>();
    let (grains, _) = lanes.as_chunks::<2>();
    let grain_sums = |grain: &[[u64; 4]; 2]| {
        let bytes = avx2_lane_bytes(load256(&grain[0]), load256(&grain[1]), q);
        // Four u64 lanes, each the sum of 8 bytes ≤ 16: at most 128.
        _mm256_sad_epu8(bytes, zero)
    };
    let (quads, rest) = grains.as_chunks::<4>();
    let (out4, out_rest) = out.as_chunks_mut::<4>();
    let bias = _mm_set1_epi32(AVX2_BIAS_PER_LANE);
    for (quad, scores) in quads.iter().zip(out4.iter_mut()) {
        // Pack the four grains' partial sums into the 16-bit fields of each u64 lane, then one
        // horizontal add leaves grain i's sum (at most 512) in field i.
        let packed = _mm256_or_si256(
            _mm256_or_si256(
                grain_sums(&quad[0]),
                _mm256_slli_epi64::<16>(grain_sums(&quad[1])),
            ),
            _mm256_or_si256(
                _mm256_slli_epi64::<32>(grain_sums(&quad[2])),
                _mm256_slli_epi64::<48>(grain_sums(&quad[3])),
            ),
        );
        let half = _mm_add_epi64(
            _mm256_castsi256_si128(packed),
            _mm256_extracti128_si256::<1>(packed),
        );
        let sums = _mm_add_epi64(half, _mm_unpackhi_epi64(half, half));
        let result = _mm_sub_epi32(_mm_cvtepu16_epi32(sums), bias);
        // SAFETY: `scores` is a `&mut [i32; 4]`, 16 writable bytes; `storeu` has no alignment
        // requirement.
        unsafe { _mm_storeu_si128(scores.as_mut_ptr().cast(), result) };
    }
    for (grain, score) in rest.iter().zip(out_rest.iter_mut()) {
        *score = (hsum_epi64(grain_sums(grain)) - i64::from(AVX2_BIAS_PER_LANE)) as i32;
    }
}

/// AVX-512 kernel entry: falls back to the reference unless `kernel` is a resolved `Avx512`.
pub(super) fn score_avx512(kernel: Resolved, q: &PreparedQuery, records: &[u64], out: &mut [i32]) {
    if kernel.kernel() != Kernel::Avx512 {
        return score_scalar(q, records, out);
    }
    // SAFETY: `kernel` is a `Resolved` naming `Avx512` (checked just above), made only after
    // `is_x86_feature_detected!` reported both "avx512f" and "avx512vpopcntdq".
    unsafe { avx512_records(q, records, out) }
}

/// Loads one 512-bit lane.
#[target_feature(enable = "avx512f")]
#[inline]
fn load512(lane: &[u64; 8]) -> __m512i {
    // SAFETY: `lane` is a reference to 64 readable bytes; `loadu` has no alignment requirement.
    unsafe { _mm512_loadu_si512(lane.as_ptr().cast()) }
}

/// Loads four words into the low half of a 512-bit register, zeroing the high half.
#[target_feature(enable = "avx512f")]
#[inline]
fn load512_low4(lane: &[u64; 4]) -> __m512i {
    // SAFETY: mask 0x0f reads only the first four 64-bit elements, the 32 bytes `lane` refers
    // to; masked-off elements are not accessed (no fault) and `loadu` needs no alignment.
    unsafe { _mm512_maskz_loadu_epi64(0x0f, lane.as_ptr().cast()) }
}

#[target_feature(enable = "avx512f,avx512vpopcntdq")]
#[inline]
fn avx512_step(acc: __m512i, gn: __m512i, gp: __m512i, qn: __m512i, qp: __m512i) -> __m512i {
    let both = _mm512_and_si512(qn, gn);
    let differ = _mm512_xor_si512(qp, gp);
    let agree = _mm512_popcnt_epi64(_mm512_andnot_si512(differ, both));
    let disagree = _mm512_popcnt_epi64(_mm512_and_si512(differ, both));
    _mm512_add_epi64(acc, _mm512_sub_epi64(agree, disagree))
}

/// The 256-trit case (a record is one 512-bit line, non-zero plane low, plus plane high): two
/// records per pair of registers, their planes regrouped by two 128-bit shuffles, and eight
/// records share one reduction. The per-record `reduce_add` of the general loop cost more than
/// AVX2's four-grains-per-reduction loop at this size (docs/BENCHMARKS.md, session 15).
#[target_feature(enable = "avx512f,avx512vpopcntdq")]
fn avx512_records_one_lane(qn: &[u64; 4], qp: &[u64; 4], records: &[u64], out: &mut [i32]) {
    // The query's planes in both halves.
    let qn = _mm512_broadcast_i64x4(load256(qn));
    let qp = _mm512_broadcast_i64x4(load256(qp));
    let (lines, _) = records.as_chunks::<8>();
    // Per 64-bit lane: agree − disagree over one quarter of the pair's grains.
    let pair = |a: &[u64; 8], b: &[u64; 8]| {
        let (a, b) = (load512(a), load512(b));
        // 128-bit blocks: a's two non-zero blocks then b's; a's two plus blocks then b's.
        let gn = _mm512_shuffle_i64x2::<0b01_00_01_00>(a, b);
        let gp = _mm512_shuffle_i64x2::<0b11_10_11_10>(a, b);
        avx512_step(_mm512_setzero_si512(), gn, gp, qn, qp)
    };
    // Lane i of the reduced vector holds record ORDER[i] of the eight.
    let order = _mm512_setr_epi64(0, 2, 1, 3, 4, 6, 5, 7);
    let (octets, rest) = lines.as_chunks::<8>();
    let (out8, out_rest) = out.as_chunks_mut::<8>();
    for (r, scores) in octets.iter().zip(out8.iter_mut()) {
        // v_k: records 2k (lanes 0–3) and 2k + 1 (lanes 4–7).
        let v0 = pair(&r[0], &r[1]);
        let v1 = pair(&r[2], &r[3]);
        let v2 = pair(&r[4], &r[5]);
        let v3 = pair(&r[6], &r[7]);
        // Adjacent lanes summed: block j of t0 = (v0, v1) halves of block j.
        let t0 = _mm512_add_epi64(_mm512_unpacklo_epi64(v0, v1), _mm512_unpackhi_epi64(v0, v1));
        let t1 = _mm512_add_epi64(_mm512_unpacklo_epi64(v2, v3), _mm512_unpackhi_epi64(v2, v3));
        // Blocks 0 + 1 and 2 + 3 of each: lanes = records 0, 2, 1, 3, 4, 6, 5, 7.
        let sums = _mm512_add_epi64(
            _mm512_shuffle_i64x2::<0b10_00_10_00>(t0, t1),
            _mm512_shuffle_i64x2::<0b11_01_11_01>(t0, t1),
        );
        let ordered = _mm512_permutexvar_epi64(order, sums);
        // Scores lie in −256..=256: the narrowing is exact.
        let result = _mm512_cvtepi64_epi32(ordered);
        // SAFETY: `scores` is a `&mut [i32; 8]`, 32 writable bytes; `storeu` has no alignment
        // requirement.
        unsafe { _mm256_storeu_si256(scores.as_mut_ptr().cast(), result) };
    }
    let (pairs, odd) = rest.as_chunks::<2>();
    let mut out_rest = out_rest.iter_mut();
    for p in pairs {
        let v = pair(&p[0], &p[1]);
        let low = _mm512_reduce_add_epi64(_mm512_maskz_mov_epi64(0x0f, v));
        let high = _mm512_reduce_add_epi64(_mm512_maskz_mov_epi64(0xf0, v));
        for s in [low, high] {
            if let Some(score) = out_rest.next() {
                *score = s as i32;
            }
        }
    }
    if let ([line], Some(score)) = (odd, out_rest.next()) {
        let zero = [0u64; 8];
        let v = pair(line, &zero);
        *score = _mm512_reduce_add_epi64(_mm512_maskz_mov_epi64(0x0f, v)) as i32;
    }
}

#[target_feature(enable = "avx512f,avx512vpopcntdq")]
fn avx512_records(q: &PreparedQuery, records: &[u64], out: &mut [i32]) {
    let stride = q.stride();
    if let (Ok(qn), Ok(qp)) = (
        <&[u64; 4]>::try_from(q.nonzero()),
        <&[u64; 4]>::try_from(q.plus()),
    ) {
        return avx512_records_one_lane(qn, qp, records, out);
    }
    let (qn8, qn_rest) = q.nonzero().as_chunks::<8>();
    let (qp8, qp_rest) = q.plus().as_chunks::<8>();
    // The stride is a multiple of four words, so the rest is empty or one four-word lane.
    let q_tail = <&[u64; 4]>::try_from(qn_rest)
        .ok()
        .zip(<&[u64; 4]>::try_from(qp_rest).ok());
    for (record, score) in records.chunks_exact(2 * stride).zip(out.iter_mut()) {
        let (gn, gp) = record.split_at(stride);
        let (gn8, gn_rest) = gn.as_chunks::<8>();
        let (gp8, gp_rest) = gp.as_chunks::<8>();
        let mut acc = _mm512_setzero_si512();
        for (((gn, gp), qn), qp) in gn8.iter().zip(gp8).zip(qn8).zip(qp8) {
            acc = avx512_step(acc, load512(gn), load512(gp), load512(qn), load512(qp));
        }
        let g_tail = <&[u64; 4]>::try_from(gn_rest)
            .ok()
            .zip(<&[u64; 4]>::try_from(gp_rest).ok());
        if let (Some((gn, gp)), Some((qn, qp))) = (g_tail, q_tail) {
            acc = avx512_step(
                acc,
                load512_low4(gn),
                load512_low4(gp),
                load512_low4(qn),
                load512_low4(qp),
            );
        }
        *score = _mm512_reduce_add_epi64(acc) as i32;
    }
}
