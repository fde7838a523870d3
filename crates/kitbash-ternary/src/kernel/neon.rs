//! aarch64 NEON kernel: `cnt` byte popcount with pairwise widening accumulation.
//!
//! Same algebra as the other kernels (see the parent module), 128 bits at a time. NEON is part
//! of the baseline of the standard aarch64 targets, so there is no run-time check:
//! `Kernel::Neon` is available exactly when the crate is compiled with
//! `target_feature = "neon"`. This module is compiled only on aarch64, so x86-64 CI never
//! builds it (no aarch64 toolchain was at hand to run it either: keep it simple).

#![allow(unsafe_code)]
#![warn(clippy::undocumented_unsafe_blocks)]

use std::arch::aarch64::*;

use super::PreparedQuery;

/// Loads one 128-bit lane.
#[inline]
fn load128(lane: &[u64; 2]) -> uint64x2_t {
    // SAFETY: `lane` refers to 16 readable bytes aligned for `u64`, which is all `vld1q_u64`
    // requires.
    unsafe { vld1q_u64(lane.as_ptr()) }
}

// Depending on the toolchain, the value-only NEON intrinsics are safe or `unsafe` to call in a
// function compiled with NEON; the block below is written to build either way.
#[allow(unused_unsafe)]
pub(super) fn score_neon(q: &PreparedQuery, records: &[u64], out: &mut [i32]) {
    let stride = q.stride();
    let (qp, _) = q.plus().as_chunks::<2>();
    let (qn, _) = q.nonzero().as_chunks::<2>();
    for (record, score) in records.chunks_exact(2 * stride).zip(out.iter_mut()) {
        let (gn, gp) = record.split_at(stride);
        let (gn, _) = gn.as_chunks::<2>();
        let (gp, _) = gp.as_chunks::<2>();
        // SAFETY: this module only exists on aarch64, whose standard targets always enable
        // NEON (`Kernel::Neon` is only available when `target_feature = "neon"` is set); the
        // intrinsics below only operate on register values.
        let total = unsafe {
            let mut acc = vdupq_n_s32(0);
            for (((gn, gp), qn), qp) in gn.iter().zip(gp).zip(qn).zip(qp) {
                let (gn, gp, qn, qp) = (load128(gn), load128(gp), load128(qn), load128(qp));
                let both = vandq_u64(qn, gn);
                let differ = veorq_u64(qp, gp);
                let agree = vcntq_u8(vreinterpretq_u8_u64(vbicq_u64(both, differ)));
                let disagree = vcntq_u8(vreinterpretq_u8_u64(vandq_u64(both, differ)));
                // Per byte in −8..=8 (agree and disagree are disjoint); widen before summing.
                let diff = vsubq_s8(vreinterpretq_s8_u8(agree), vreinterpretq_s8_u8(disagree));
                acc = vpadalq_s16(acc, vpaddlq_s8(diff));
            }
            vaddvq_s32(acc)
        };
        *score = total;
    }
}
