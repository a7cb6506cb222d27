//! The arithmetic over a group's cells: every output window of the group, 16 channels per
//! vector, on each ISA.

use super::{Lanes, PlaneGeometry, LANES, POSITIONS, ROW_CELLS, ROW_POSITIONS};
#[cfg(target_arch = "aarch64")]
use crate::gemm::simd::Neon;
use crate::gemm::simd::Simd;
#[cfg(target_arch = "x86_64")]
use crate::gemm::simd::{Avx2, Avx512};
use std::ops::Range;

/// Everything `compute` reads.
pub(super) struct Args<'a> {
    pub g: &'a PlaneGeometry,
    /// The cells the windows read, `pitch` per row: the padded scratch, or the group's
    /// blocked input read in place.
    pub cells: &'a [f32],
    pub pitch: usize,
    /// Padding rows and columns that `cells` lacks before its first (none for the scratch,
    /// the geometry's pads for an input read in place).
    pub shift: [usize; 2],
    /// The output rows and columns computed from `cells` as they are; the others' windows
    /// reach into padding that `cells` lacks (`border`).
    pub rect: [Range<usize>; 2],
    pub taps: &'a [usize],
    pub wt: &'a [Lanes],
    pub bias: Lanes,
    pub clamp: Option<(f32, f32)>,
}

/// The group's outputs on `S`'s vectors: the row kernel for stride-1 3×3 and 5×5 windows
/// where a cell is one vector (AVX-512: with two or four per cell its accumulators and cells
/// would not fit the registers), else `POSITIONS` at a time.
///
/// # Safety
/// As `any_window`.
#[inline(always)]
pub(super) unsafe fn compute<S: Simd>(a: &Args, out: Cells) {
    // The accumulators are arrays of exactly a cell's vectors: with a larger, partly unused
    // array the compiler zeroed it in memory for every group of positions (a memset of
    // 2 KB per 8 outputs on AVX-512).
    // SAFETY: the caller's guarantees.
    unsafe {
        match LANES / S::LANES {
            1 => compute_cells::<S, 1>(a, out),
            2 => compute_cells::<S, 2>(a, out),
            _ => compute_cells::<S, 4>(a, out),
        }
    }
}

/// `compute` with `NV` vectors per cell (`NV · S::LANES = LANES`).
///
/// # Safety
/// As `any_window`.
#[inline(always)]
unsafe fn compute_cells<S: Simd, const NV: usize>(a: &Args, out: Cells) {
    const { assert!(NV <= 4) };
    debug_assert_eq!(NV * S::LANES, LANES);
    let g = a.g;
    let dense = g.dilation == [1, 1] && S::LANES == LANES;
    // SAFETY: the caller's guarantees, which every kernel needs.
    unsafe {
        match (dense, g.stride[1], g.kernel[1]) {
            (true, 1, 3) => rows::<S, NV, 3, 1, ROW_POSITIONS>(a, out),
            (true, 1, 5) => rows::<S, NV, 5, 1, ROW_POSITIONS>(a, out),
            (true, 2, 3) => rows::<S, NV, 3, 2, ROW_POSITIONS>(a, out),
            // 19 cells for 8 positions would not fit the registers beside their accumulators.
            (true, 2, 5) => rows::<S, NV, 5, 2, 6>(a, out),
            _ => any_window::<S, NV>(a, out),
        }
        if a.rect != [0..g.output[0], 0..g.output[1]] {
            border::<S, NV>(a, out);
        }
    }
}

/// The output positions outside `a.rect`, whose windows reach into padding: `cells` is then
/// the input read in place (`shift` its pads), and taps outside it are skipped.
///
/// # Safety
/// As `any_window`.
#[inline(always)]
unsafe fn border<S: Simd, const NV: usize>(a: &Args, out: Cells) {
    let g = a.g;
    let [oh_n, ow_n] = g.output;
    let nv = NV;
    // SAFETY (whole body): the ISA is the caller's; every cell read is checked to lie inside
    // the input (`r < h`, `c < w`, and `cells` holds its `h·w` cells `pitch = w` per row).
    unsafe {
        for oh in 0..oh_n {
            let inside = a.rect[0].contains(&oh);
            let mut ow = 0;
            while ow < ow_n {
                if inside && ow == a.rect[1].start {
                    ow = a.rect[1].end;
                    continue;
                }
                let mut acc = [S::zero(); NV];
                for (v, x) in acc.iter_mut().enumerate().take(nv) {
                    *x = S::load(a.bias.as_ptr().add(v * S::LANES));
                }
                for kh in 0..g.kernel[0] {
                    let r = (oh * g.stride[0] + kh * g.dilation[0]).wrapping_sub(a.shift[0]);
                    if r >= g.input[0] {
                        continue;
                    }
                    for kw in 0..g.kernel[1] {
                        let c = (ow * g.stride[1] + kw * g.dilation[1]).wrapping_sub(a.shift[1]);
                        if c >= g.input[1] {
                            continue;
                        }
                        let cell = a.cells.as_ptr().add((r * a.pitch + c) * LANES);
                        let w = a.wt[kh * g.kernel[1] + kw].as_ptr();
                        for (v, x) in acc.iter_mut().enumerate().take(nv) {
                            let xv = S::load(cell.add(v * S::LANES));
                            *x = S::mul_add(*x, xv, S::load(w.add(v * S::LANES)));
                        }
                    }
                }
                store::<S, NV>(a, &[acc], out, oh * ow_n + ow);
                ow += 1;
            }
        }
    }
}

/// Windows `KW` wide with column stride `SW` (undilated), `P` (at most `ROW_POSITIONS`)
/// neighbours along a row at a time: they read `(P − 1)·SW + KW` input cells per kernel row,
/// each loaded once for all of them (rather than once per tap and position), and the weights
/// of a kernel row once per group.
///
/// # Safety
/// As `any_window`; the scratch has `ROW_SLACK` cells past the plane.
#[inline(always)]
unsafe fn rows<S: Simd, const NV: usize, const KW: usize, const SW: usize, const P: usize>(
    a: &Args,
    out: Cells,
) {
    const { assert!(P <= ROW_POSITIONS && (P - 1) * SW + KW <= ROW_CELLS) };
    let span = (P - 1) * SW + KW;
    let sh_step = a.g.stride[0];
    let ow_n = a.g.output[1];
    let (pw, [sh, sw]) = (a.pitch, a.shift);
    let [rows, cols] = &a.rect;
    let nv = NV;
    let kh_n = a.g.kernel[0];
    debug_assert!(a.wt.len() == kh_n * KW);
    // SAFETY (whole body): the ISA is the caller's; the group at (oh, ow) reads cells
    // (oh·stride + kh − sh)·pw + ow·SW − sw + i for i < span: inside the rectangle
    // (`interior`) for a full group, and a short group (only in a rectangle narrower than
    // one, hence only on the padded scratch) reaches at most ROW_SLACK cells past the plane;
    // weights `kh·KW + kw` < taps.
    unsafe {
        let buf = a.cells.as_ptr();
        for oh in rows.clone() {
            let mut ow = cols.start;
            while ow < cols.end {
                // The last full group of a row ends at its end, overlapping the one before
                // (those positions are computed twice, to the same values).
                if cols.len() >= P {
                    ow = ow.min(cols.end - P);
                }
                let n = P.min(cols.end - ow);
                let mut acc = [[S::zero(); NV]; P];
                for row in acc.iter_mut() {
                    for (v, x) in row.iter_mut().enumerate().take(nv) {
                        *x = S::load(a.bias.as_ptr().add(v * S::LANES));
                    }
                }
                for kh in 0..kh_n {
                    let cells = buf.add(((oh * sh_step + kh - sh) * pw + ow * SW - sw) * LANES);
                    let weights = a.wt.as_ptr().add(kh * KW).cast::<f32>();
                    for v in 0..nv {
                        let mut xs = [S::zero(); ROW_CELLS];
                        for (i, x) in xs.iter_mut().enumerate().take(span) {
                            *x = S::load(cells.add(i * LANES + v * S::LANES));
                        }
                        for kw in 0..KW {
                            let wv = S::load(weights.add(kw * LANES + v * S::LANES));
                            for (j, acc) in acc.iter_mut().enumerate() {
                                acc[v] = S::mul_add(acc[v], xs[j * SW + kw], wv);
                            }
                        }
                    }
                }
                store::<S, NV>(a, &acc[..n], out, oh * ow_n + ow);
                ow += n;
            }
        }
    }
}

/// Where a group's output cells go: cell `p` (16 floats) at `ptr + p·stride`.
///
/// Invariant (upheld by whoever builds one): `ptr` is valid for writes of the 16 floats of
/// every cell below the geometry's output positions, and nothing else reads or writes them
/// while the cells are stored.
#[derive(Clone, Copy)]
pub(super) struct Cells {
    pub ptr: *mut f32,
    pub stride: usize,
}

/// Stores accumulated positions into output cells `first..first + acc.len()`, clamped.
///
/// # Safety
/// The CPU supports `S`'s ISA; those cells are output positions of `out`.
#[inline(always)]
unsafe fn store<S: Simd, const NV: usize>(a: &Args, acc: &[[S::V; NV]], out: Cells, first: usize) {
    let nv = NV;
    // SAFETY: each cell holds 16 floats, written as `nv` vectors, inside `out` (caller and
    // `Cells`' invariant); the ISA is the caller's.
    unsafe {
        for (j, row) in acc.iter().enumerate() {
            let cell = out.ptr.add((first + j) * out.stride);
            for (v, &x) in row.iter().enumerate().take(nv) {
                let x = match a.clamp {
                    Some((lo, hi)) => S::min(S::splat(hi), S::max(S::splat(lo), x)),
                    None => x,
                };
                S::store(cell.add(v * S::LANES), x);
            }
        }
    }
}

/// Any window: `POSITIONS` output positions at a time, on `S`'s vectors (`LANES / S::LANES`
/// per position).
///
/// # Safety
/// The CPU supports `S`'s ISA; `a` is consistent (`buf` holds the padded geometry's cells,
/// `wt` one vector per tap) and `y` holds `a.planes` output planes.
#[inline(always)]
unsafe fn any_window<S: Simd, const NV: usize>(a: &Args, out: Cells) {
    let ow_n = a.g.output[1];
    let [rows, cols] = &a.rect;
    let positions = rows.len() * cols.len();
    let pw = a.pitch;
    let nv = NV;
    let taps = a.taps.len().min(a.wt.len());
    // SAFETY (whole body): the ISA is the caller's; every cell read is `corner + tap offset`,
    // inside the padded geometry the scratch was filled for (checked in debug builds), and
    // vector `v` of a cell reads its floats `v·S::LANES..(v+1)·S::LANES`, all below 16.
    unsafe {
        let buf = a.cells.as_ptr();
        // Plain loops, no closures: everything here must inline into the ISA's function.
        // The window corner (in floats) and output cell of each position of the rectangle,
        // in order: counters, not divisions (one per position cost as much as a small
        // plane's taps).
        let (row_step, col_step) = (a.g.stride[0] * pw * LANES, a.g.stride[1] * LANES);
        let (mut oh, mut ow) = (rows.start, cols.start);
        let mut next = || {
            let corner = (oh * row_step + ow * col_step) - (a.shift[0] * pw + a.shift[1]) * LANES;
            let cell = oh * ow_n + ow;
            ow += 1;
            if ow == cols.end {
                (oh, ow) = (oh + 1, cols.start);
            }
            (corner, cell)
        };
        let mut p = 0;
        while p < positions {
            let n = POSITIONS.min(positions - p);
            // A short last group repeats its last position (computed, not stored).
            let mut bases = [0usize; POSITIONS];
            let mut cells = [0usize; POSITIONS];
            for (base, cell) in bases[..n].iter_mut().zip(&mut cells[..n]) {
                (*base, *cell) = next();
            }
            let last = bases[n - 1];
            bases[n..].fill(last);
            let mut acc = [[S::zero(); NV]; POSITIONS];
            for row in acc.iter_mut() {
                for (v, x) in row.iter_mut().enumerate().take(nv) {
                    *x = S::load(a.bias.as_ptr().add(v * S::LANES));
                }
            }
            // Column `v` of every position's accumulators per step: an index loop reads best.
            #[allow(clippy::needless_range_loop)]
            for t in 0..taps {
                let off = a.taps[t] * LANES;
                let w = a.wt[t].as_ptr();
                for v in 0..nv {
                    let wv = S::load(w.add(v * S::LANES));
                    for j in 0..POSITIONS {
                        debug_assert!(bases[j] + off + LANES <= a.cells.len());
                        let xv = S::load(buf.add(bases[j] + off + v * S::LANES));
                        acc[j][v] = S::mul_add(acc[j][v], xv, wv);
                    }
                }
            }
            for j in 0..n {
                store::<S, NV>(a, &acc[j..j + 1], out, cells[j]);
            }
            p += n;
        }
    }
}

/// # Safety
/// The CPU has AVX2 and FMA.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
pub(super) unsafe fn compute_avx2(a: &Args, out: Cells) {
    // SAFETY: the features are enabled on this function; `a` is consistent (caller).
    unsafe { compute::<Avx2>(a, out) }
}

/// # Safety
/// The CPU has AVX-512F (which implies AVX2 and FMA).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx2,fma")]
pub(super) unsafe fn compute_avx512(a: &Args, out: Cells) {
    // SAFETY: as above.
    unsafe { compute::<Avx512>(a, out) }
}

/// # Safety
/// None beyond aarch64 itself (NEON is baseline).
#[cfg(target_arch = "aarch64")]
#[target_feature(enable = "neon")]
pub(super) unsafe fn compute_neon(a: &Args, out: Cells) {
    // SAFETY: as above.
    unsafe { compute::<Neon>(a, out) }
}
