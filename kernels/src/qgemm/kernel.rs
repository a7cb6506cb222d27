//! Integer microkernels: an `MR × NR` tile of `A_q · B_q` in i32, from packed panels, and
//! the run-time choice among them.
//!
//! # Microkernel contract
//!
//! * `a` points to `kp * MR * 2` i16: for each depth pair `p` in `0..kp`, for each row `i`,
//!   the two values `A[i, 2p]`, `A[i, 2p + 1]` (u8 codes, 0..=255).
//! * `b` points to `kp * NR * 2` i16: for each depth pair `p`, for each column `j`, the two
//!   values `B[2p, j]`, `B[2p + 1, j]` (i8 codes, -127..=127).
//! * Padding (rows, columns, the odd last depth) is zero in the panels, so the full tile is
//!   always computed; `out[i * NR + j]` receives `Σ_p A[i, p] · B[p, j]`, exact in i32 for
//!   `k ≤ MAX_K` (see `super::MAX_K`).
//! * No alignment is assumed.
//!
//! Pairs of 16-bit values are what AVX2's `vpmaddwd` multiplies and adds into one 32-bit lane:
//! products of u8 and i8 codes fit in i16 × i16 without the saturation of `vpmaddubsw`, so
//! weights keep all 8 bits.

use std::sync::OnceLock;

/// Rows of the register tile.
pub(super) const MR: usize = 6;
/// Columns of the register tile.
pub(super) const NR: usize = 16;

/// One microkernel: `run(kp, a, b, out)` as in the module's contract.
#[derive(Debug)]
pub struct QKernel {
    /// For logs and tests, e.g. "avx2 6x16".
    pub name: &'static str,
    pub(super) run: unsafe fn(usize, *const i16, *const i16, &mut [i32; MR * NR]),
}

/// # Safety
/// `a` and `b` satisfy the module's contract for `kp` depth pairs.
unsafe fn portable(kp: usize, a: *const i16, b: *const i16, out: &mut [i32; MR * NR]) {
    // SAFETY: the caller guarantees `kp * MR * 2` and `kp * NR * 2` readable i16.
    let (a, b) = unsafe {
        (
            std::slice::from_raw_parts(a, kp * MR * 2),
            std::slice::from_raw_parts(b, kp * NR * 2),
        )
    };
    out.fill(0);
    for (ap, bp) in a.chunks_exact(MR * 2).zip(b.chunks_exact(NR * 2)) {
        for (i, row) in out.chunks_exact_mut(NR).enumerate() {
            let (a0, a1) = (i32::from(ap[2 * i]), i32::from(ap[2 * i + 1]));
            for (o, bj) in row.iter_mut().zip(bp.chunks_exact(2)) {
                *o += a0 * i32::from(bj[0]) + a1 * i32::from(bj[1]);
            }
        }
    }
}

/// The portable kernel, also the baseline every ISA must match exactly.
pub(super) static PORTABLE: QKernel = QKernel {
    name: "portable 6x16",
    run: portable,
};

#[cfg(target_arch = "x86_64")]
mod x86 {
    use super::{QKernel, MR, NR};
    use std::arch::x86_64::*;

    /// 6×16: 12 accumulators + 2 B vectors + 1 broadcast of the 16 ymm registers; each depth
    /// pair is 2 loads, 6 broadcasts and 12 `vpmaddwd` + 12 `vpaddd` for 192 multiply-adds.
    ///
    /// # Safety
    /// The CPU has AVX2, and `a`, `b` satisfy the module's contract for `kp` depth pairs.
    #[target_feature(enable = "avx2")]
    unsafe fn avx2_6x16(kp: usize, a: *const i16, b: *const i16, out: &mut [i32; MR * NR]) {
        // SAFETY (whole body): AVX2 is enabled on this function; every read is inside the
        // panels (`kp` steps of `MR * 2` and `NR * 2` i16, unaligned loads), every write inside
        // `out` (`MR * NR` i32, eight at a time at multiples of 8).
        unsafe {
            let mut acc = [[_mm256_setzero_si256(); 2]; MR];
            let (mut a, mut b) = (a, b);
            for _ in 0..kp {
                let b0 = _mm256_loadu_si256(b.cast());
                let b1 = _mm256_loadu_si256(b.add(16).cast());
                for (i, row) in acc.iter_mut().enumerate() {
                    // The pair A[i, 2p], A[i, 2p + 1] in every 32-bit lane.
                    let ai = _mm256_set1_epi32(a.add(2 * i).cast::<i32>().read_unaligned());
                    row[0] = _mm256_add_epi32(row[0], _mm256_madd_epi16(ai, b0));
                    row[1] = _mm256_add_epi32(row[1], _mm256_madd_epi16(ai, b1));
                }
                a = a.add(MR * 2);
                b = b.add(NR * 2);
            }
            for (i, row) in acc.iter().enumerate() {
                let dst = out.as_mut_ptr().add(i * NR);
                _mm256_storeu_si256(dst.cast(), row[0]);
                _mm256_storeu_si256(dst.add(8).cast(), row[1]);
            }
        }
    }

    pub(in crate::qgemm) static AVX2: QKernel = QKernel {
        name: "avx2 6x16",
        run: avx2_6x16,
    };
}

/// Every kernel this CPU can run (under `INFER_MAX_ISA`), best first.
pub fn available() -> Vec<&'static QKernel> {
    let mut v: Vec<&'static QKernel> = Vec::new();
    #[cfg(target_arch = "x86_64")]
    // The int8 kernel needs AVX2 only, not FMA.
    if crate::isa::x86_allows(crate::isa::X86Level::Avx2) && is_x86_feature_detected!("avx2") {
        v.push(&x86::AVX2);
    }
    v.push(&PORTABLE);
    v
}

/// The best kernel for this CPU, detected once.
pub fn best() -> &'static QKernel {
    static BEST: OnceLock<&'static QKernel> = OnceLock::new();
    BEST.get_or_init(|| available()[0])
}
