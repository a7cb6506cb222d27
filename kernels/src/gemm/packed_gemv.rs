//! A prepacked operand times a vector: `A·x` for a packed `A` and a one-column `B` (a 1×1
//! convolution on a 1×1 map, as in squeeze-and-excitation blocks), `a·B` for a packed `B` and a
//! one-row `A` (a classifier at batch 1). The microkernels would compute a whole `mr × nr`
//! tile to keep one row or column of it (1/8 to 1/32 of their work); here each panel is read
//! once, in its packed order, into `width` accumulators.

use super::driver::PARALLEL_MIN_WORK;
use super::pack::Packed;
use crate::isa::{isa, Isa};
use crate::parallel;
use rayon::prelude::*;

/// `y[r] = Σ_p P[r, p] · v[p]` for the panel-major matrix `p` (`width`-row panels in depth blocks
/// of `kc`, see `pack.rs`) of `y.len()` rows and `v.len()` depth. Split across threads by panels
/// when `parallel` and the matrix is large enough to pay for it.
pub(super) fn panels_times_vector(
    p: &Packed,
    width: usize,
    kc: usize,
    v: &[f32],
    y: &mut [f32],
    parallel: bool,
) {
    let (rows, depth) = (y.len(), v.len());
    let panels = rows.div_ceil(width);
    let threads = if parallel && rows * depth >= PARALLEL_MIN_WORK / 4 {
        parallel::threads().min(panels)
    } else {
        1
    };
    let per_task = panels.div_ceil(threads.max(1)) * width;
    parallel::for_each(y.par_chunks_mut(per_task.max(1)).enumerate(), |(t, y)| {
        let first_panel = t * per_task / width;
        for (q, y) in y.chunks_mut(width).enumerate() {
            panel_times_vector(p, width, kc, first_panel + q, v, y);
        }
    });
}

/// One panel (rows `q·width..`) of the product into `y` (at most `width` values).
fn panel_times_vector(p: &Packed, width: usize, kc: usize, q: usize, v: &[f32], y: &mut [f32]) {
    let mut acc = [0.0f32; MAX_WIDTH];
    let acc = &mut acc[..width];
    let mut p0 = 0;
    while p0 < v.len() {
        let kc_len = kc.min(v.len() - p0);
        let block = &p.block(q * width, p0, kc_len)[..kc_len * width];
        accumulate(acc, block, &v[p0..p0 + kc_len]);
        p0 += kc_len;
    }
    y.copy_from_slice(&acc[..y.len()]);
}

/// Row 0 of the panel-major matrix `p` (panels of `width`, depth blocks of `kc`) into `row`
/// (its whole depth).
pub(super) fn first_row(p: &Packed, width: usize, kc: usize, row: &mut [f32]) {
    for (b, chunk) in row.chunks_mut(kc).enumerate() {
        let block = p.block(0, b * kc, chunk.len());
        for (x, panel_step) in chunk.iter_mut().zip(block.chunks_exact(width)) {
            *x = panel_step[0];
        }
    }
}

/// The widest panel of any kernel (`nr` of the AVX-512 kernel).
const MAX_WIDTH: usize = 32;

/// `acc[i] += Σ_p block[p·W + i] · v[p]`, compiled for the best ISA of the CPU.
fn accumulate(acc: &mut [f32], block: &[f32], v: &[f32]) {
    match isa() {
        Isa::Portable => by_width::<false>(acc, block, v),
        // SAFETY (all arms below): `isa()` picked the arm only after detecting its features.
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 => unsafe { avx2(acc, block, v) },
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512 => unsafe { avx512(acc, block, v) },
        #[cfg(target_arch = "aarch64")]
        Isa::Neon => unsafe { neon(acc, block, v) },
    }
}

/// The kernels' panel widths get a loop of constant width (unrolled into whole vectors);
/// anything else the general loop.
#[inline(always)]
fn by_width<const FMA: bool>(acc: &mut [f32], block: &[f32], v: &[f32]) {
    match acc.len() {
        4 => fixed::<4, FMA>(acc, block, v),
        6 => fixed::<6, FMA>(acc, block, v),
        8 => fixed::<8, FMA>(acc, block, v),
        12 => fixed::<12, FMA>(acc, block, v),
        16 => fixed::<16, FMA>(acc, block, v),
        32 => fixed::<32, FMA>(acc, block, v),
        w => {
            for (row, &x) in block.chunks_exact(w).zip(v) {
                for (a, &b) in acc.iter_mut().zip(row) {
                    *a = madd::<FMA>(b, x, *a);
                }
            }
        }
    }
}

/// Four depth steps in flight: one accumulator chain would wait out the FMA latency each step.
#[inline(always)]
fn fixed<const W: usize, const FMA: bool>(acc: &mut [f32], block: &[f32], v: &[f32]) {
    let mut sums = [[0.0f32; W]; 4];
    let (blocks, vs) = (block.chunks_exact(4 * W), v.chunks_exact(4));
    let (block_tail, v_tail) = (blocks.remainder(), vs.remainder());
    for (rows, xs) in blocks.zip(vs) {
        for (s, (row, &x)) in sums.iter_mut().zip(rows.chunks_exact(W).zip(xs)) {
            for i in 0..W {
                s[i] = madd::<FMA>(row[i], x, s[i]);
            }
        }
    }
    for (row, &x) in block_tail.chunks_exact(W).zip(v_tail) {
        for i in 0..W {
            sums[0][i] = madd::<FMA>(row[i], x, sums[0][i]);
        }
    }
    for (i, a) in acc.iter_mut().enumerate() {
        *a += (sums[0][i] + sums[1][i]) + (sums[2][i] + sums[3][i]);
    }
}

/// `a·b + c`, fused where the ISA has FMA (without, `mul_add` would be a libm call).
#[inline(always)]
fn madd<const FMA: bool>(a: f32, b: f32, c: f32) -> f32 {
    if FMA {
        a.mul_add(b, c)
    } else {
        a * b + c
    }
}

/// # Safety
/// The CPU has AVX2 and FMA.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn avx2(acc: &mut [f32], block: &[f32], v: &[f32]) {
    by_width::<true>(acc, block, v)
}

/// # Safety
/// The CPU has AVX-512F (which implies AVX2 and FMA).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx2,fma")]
unsafe fn avx512(acc: &mut [f32], block: &[f32], v: &[f32]) {
    by_width::<true>(acc, block, v)
}

/// # Safety
/// None beyond aarch64 itself (NEON is baseline).
#[cfg(target_arch = "aarch64")]
#[target_feature(enable = "neon")]
unsafe fn neon(acc: &mut [f32], block: &[f32], v: &[f32]) {
    by_width::<true>(acc, block, v)
}
