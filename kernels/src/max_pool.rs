//! 2-D max pooling of one plane, separably: each output row is the maximum of its window's
//! input rows (contiguous, one vector `max` per 16 floats), then of its window's columns
//! within that one row.
//!
//! Reading each input row once per output row it feeds, and splitting only the reduced row
//! into stride phases, costs a fraction of a padded, phase-split copy of the whole plane
//! (what the depthwise plane kernel needs, and what max pooling used to share with it). The
//! commonest window, 3 wide with stride 2 (ResNet's and SqueezeNet's pools), never leaves
//! registers on AVX-512: each 16-column chunk is reduced over the window's rows as it is
//! loaded, and permutes pick each output's three columns out of two chunks; with AVX2, a
//! reduced row's columns are picked by shuffles.
//!
//! Padding never wins: it is -inf, and a window with no input at all gives -inf. `f32::max`
//! semantics throughout (a NaN loses to a number), as before.

use crate::depthwise::{copy_strided, PlaneGeometry};
use crate::isa::{isa, Isa};
use std::ops::Range;

/// A thread's reusable row buffers.
#[derive(Debug, Default)]
pub struct MaxPoolScratch {
    /// The reduced row, -inf padded, then split into stride phases (with AVX2, 3-wide
    /// stride-2 windows: two reduced rows, read as they are).
    row: Vec<f32>,
    phases: Vec<f32>,
    /// Which lanes of each 16-column chunk of a padded row are input columns.
    chunk_masks: Vec<u16>,
}

impl MaxPoolScratch {
    pub const fn new() -> Self {
        MaxPoolScratch {
            row: Vec::new(),
            phases: Vec::new(),
            chunk_masks: Vec::new(),
        }
    }
}

/// `y[oh, ow] = max over the window of x` for one `H×W` plane into `OH×OW` outputs.
///
/// # Panics
/// If a slice is shorter than the geometry says, or a stride is 0 (caller bugs: the pooling
/// op checks shapes and attributes before it gets here).
pub fn max_pool_plane(g: &PlaneGeometry, x: &[f32], y: &mut [f32], scratch: &mut MaxPoolScratch) {
    let [h, w] = g.input;
    let [oh_n, ow_n] = g.output;
    assert!(x.len() >= h * w, "plane input too short");
    assert!(y.len() >= oh_n * ow_n, "plane output too short");
    assert!(g.stride[0] > 0 && g.stride[1] > 0, "zero stride");
    if oh_n == 0 || ow_n == 0 {
        return;
    }
    match isa() {
        // SAFETY: `isa()` picked the arm only after detecting its features.
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 => unsafe { plane_avx2(g, x, y, scratch) },
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512 => unsafe { plane_avx512(g, x, y, scratch) },
        _ => plane(g, x, y, scratch),
    }
}

/// # Safety
/// The CPU has AVX2.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn plane_avx2(g: &PlaneGeometry, x: &[f32], y: &mut [f32], scratch: &mut MaxPoolScratch) {
    plane(g, x, y, scratch)
}

/// # Safety
/// The CPU has AVX-512F.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx2")]
unsafe fn plane_avx512(g: &PlaneGeometry, x: &[f32], y: &mut [f32], scratch: &mut MaxPoolScratch) {
    plane(g, x, y, scratch)
}

#[inline(always)]
fn plane(g: &PlaneGeometry, x: &[f32], y: &mut [f32], scratch: &mut MaxPoolScratch) {
    let [h, w] = g.input;
    let [oh_n, ow_n] = g.output;
    let [kh_n, kw_n] = g.kernel;
    let (sw, dw) = (g.stride[1], g.dilation[1]);
    #[cfg(target_arch = "x86_64")]
    if sw == 2 && kw_n == 3 && dw == 1 && kh_n <= 3 && isa() == Isa::Avx512 {
        // SAFETY: `isa()` returns Avx512 only after detecting AVX-512F; the slices were
        // checked against the geometry above.
        unsafe { avx512::plane_window3_stride2(g, x, y, &mut scratch.chunk_masks) };
        return;
    }
    #[cfg(target_arch = "x86_64")]
    if sw == 2 && kw_n == 3 && dw == 1 && kh_n <= 3 && isa() == Isa::Avx2 {
        // SAFETY: `isa()` returns Avx2 only after detecting AVX2; the slices were checked
        // against the geometry above.
        unsafe { avx2::plane_window3_stride2(g, x, y, &mut scratch.row) };
        return;
    }
    // Columns of the padded row the outputs reach, and the phase length that covers them.
    let width = (ow_n.max(1) - 1) * sw + (kw_n.max(1) - 1) * dw + 1;
    let phase_len = width.div_ceil(sw);
    let MaxPoolScratch {
        row: buf, phases, ..
    } = scratch;
    // Input columns inside the padded row.
    let lo = g.pad[1].min(width);
    // The row starts where its input columns (written once per input row) begin on a
    // 64-byte boundary: misaligned vector stores there split cache lines.
    let len = phase_len * sw;
    buf.clear();
    buf.resize(len + ALIGN_FLOATS, f32::NEG_INFINITY);
    let shift = (ALIGN_FLOATS - (buf.as_ptr() as usize / 4 + lo) % ALIGN_FLOATS) % ALIGN_FLOATS;
    let row = &mut buf[shift..shift + len];
    phases.resize(phase_len * sw, f32::NEG_INFINITY);
    let n = w.min(width - lo);
    for (oh, out) in y.chunks_exact_mut(ow_n).take(oh_n).enumerate() {
        let inside = &mut row[lo..lo + n];
        inside.fill(f32::NEG_INFINITY);
        for kh in 0..kh_n {
            let Some(r) = (oh * g.stride[0] + kh * g.dilation[0])
                .checked_sub(g.pad[0])
                .filter(|&r| r < h)
            else {
                continue;
            };
            let src = &x[r * w..r * w + n];
            inside.iter_mut().zip(src).for_each(|(m, &v)| *m = m.max(v));
        }
        // Column c of the padded row goes to phase c % sw, position c / sw: every tap of
        // every output then reads a contiguous run (with stride 1 the row is its one phase).
        let phases: &[f32] = if sw == 1 {
            row
        } else {
            for (p, phase) in phases.chunks_exact_mut(phase_len).enumerate() {
                copy_strided(phase, &row[p..], sw);
            }
            phases
        };
        out.fill(f32::NEG_INFINITY);
        for kw in 0..kw_n {
            let c = kw * dw;
            let run = &phases[(c % sw) * phase_len + c / sw..][..ow_n];
            out.iter_mut().zip(run).for_each(|(m, &v)| *m = m.max(v));
        }
    }
}

/// Floats in 64 bytes.
const ALIGN_FLOATS: usize = 16;

/// The 3-wide, stride-2 window, 16 outputs per step, in registers: each 16-column chunk of
/// the padded rows is reduced over the window's rows as it is loaded (masked where it
/// leaves the input: padding is -inf), then permutes pick the evens, odds and next evens of
/// 32 columns.
#[cfg(target_arch = "x86_64")]
mod avx512 {
    use super::{taps, BLOCK};
    use crate::depthwise::PlaneGeometry;
    use std::arch::x86_64::*;

    /// Max pools a plane whose windows are 3 wide with stride 2 along rows and at most 3
    /// rows high.
    ///
    /// # Safety
    /// The CPU has AVX-512F; `x` holds the `H×W` input plane and `y` the `OH×OW` output
    /// plane of `g`, whose kernel is at most 3 rows high.
    /// `max_pool_block` separably: each output row's window rows reduced into one row of
    /// cells (independent maxima, cell by cell), then each output's window columns within it.
    /// Window by window, every maximum of an output waits on the one before (3×3: a chain of
    /// 9), and the compiler's own vectorization of that loop gathered lanes one by one.
    ///
    /// # Safety
    /// The CPU has AVX-512F; `x` holds `H·W` cells, `out_rows` are output rows of `g` and `y`
    /// holds their `out_rows.len() · OW` cells of 16 floats.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn block(
        g: &PlaneGeometry,
        x: &[f32],
        out_rows: std::ops::Range<usize>,
        y: &mut [f32],
    ) {
        let [h, w] = g.input;
        let ow_n = g.output[1];
        // One row of cells (7 KiB for a 111-wide map): small enough to allocate per call.
        let mut row = vec![0.0f32; w * BLOCK];
        // SAFETY (whole body): AVX-512F is available (caller); every cell read is inside `x`
        // (taps stay inside the input) or `row`, every cell written inside `y` or `row`.
        unsafe {
            let low = _mm512_set1_ps(f32::NEG_INFINITY);
            let (xp, rp, yp) = (x.as_ptr(), row.as_mut_ptr(), y.as_mut_ptr());
            let mut rows: Vec<*const f32> = Vec::with_capacity(g.kernel[0]);
            let first_row = out_rows.start;
            for oh in out_rows {
                rows.clear();
                rows.extend(
                    taps(oh, g.stride[0], g.kernel[0], g.dilation[0], g.pad[0], h)
                        .map(|r| xp.add(r * w * BLOCK)),
                );
                // Each cell of the row once, over all the window's rows: one store per cell.
                // `max(v, acc)` gives `acc` when `v` is NaN: `f32::max`'s rule. Three rows
                // (the usual window) unrolled: a loop over the row list per cell cost as much
                // as the maxima.
                if let &[r0, r1, r2] = rows.as_slice() {
                    for c in 0..w {
                        let at = c * BLOCK;
                        let acc = _mm512_max_ps(_mm512_loadu_ps(r0.add(at)), low);
                        let acc = _mm512_max_ps(_mm512_loadu_ps(r1.add(at)), acc);
                        let acc = _mm512_max_ps(_mm512_loadu_ps(r2.add(at)), acc);
                        _mm512_storeu_ps(rp.add(at), acc);
                    }
                } else {
                    for c in 0..w {
                        let mut acc = low;
                        for &src in &rows {
                            acc = _mm512_max_ps(_mm512_loadu_ps(src.add(c * BLOCK)), acc);
                        }
                        _mm512_storeu_ps(rp.add(c * BLOCK), acc);
                    }
                }
                let (stride, kernel, dilation, pad) =
                    (g.stride[1], g.kernel[1], g.dilation[1], g.pad[1]);
                for ow in 0..ow_n {
                    let first = (ow * stride).wrapping_sub(pad);
                    let mut acc = low;
                    // A window wholly inside the row (all but the edge outputs): its taps
                    // without the bounds checks.
                    if kernel > 0 && ow * stride >= pad && first + (kernel - 1) * dilation < w {
                        for k in 0..kernel {
                            let c = first + k * dilation;
                            acc = _mm512_max_ps(_mm512_loadu_ps(rp.add(c * BLOCK)), acc);
                        }
                    } else {
                        for c in taps(ow, stride, kernel, dilation, pad, w) {
                            acc = _mm512_max_ps(_mm512_loadu_ps(rp.add(c * BLOCK)), acc);
                        }
                    }
                    _mm512_storeu_ps(yp.add(((oh - first_row) * ow_n + ow) * BLOCK), acc);
                }
            }
        }
    }

    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn plane_window3_stride2(
        g: &PlaneGeometry,
        x: &[f32],
        y: &mut [f32],
        masks: &mut Vec<u16>,
    ) {
        let w = g.input[1];
        let [oh_n, ow_n] = g.output;
        let pad = g.pad[1];
        // Outputs 16t.. read padded chunks 2t, 2t + 1 and 2t + 2.
        masks.clear();
        masks.extend((0..=2 * ow_n.div_ceil(16)).map(|m| {
            let first = (16 * m) as isize - pad as isize;
            let lo = (-first).clamp(0, 16) as u32;
            let hi = (w as isize - first).clamp(0, 16) as u32;
            (((1u32 << hi) - 1) & !((1u32 << lo) - 1)) as u16
        }));
        for (oh, out) in y.chunks_exact_mut(ow_n).take(oh_n).enumerate() {
            let (rows, n) = super::window_rows(g, x, oh);
            // SAFETY (all three): the first `n` pointers start rows of `w` floats in `x`.
            match n {
                0 => out.fill(f32::NEG_INFINITY),
                1 => unsafe { row_windows([rows[0]], masks, pad, out) },
                2 => unsafe { row_windows([rows[0], rows[1]], masks, pad, out) },
                _ => unsafe { row_windows(rows, masks, pad, out) },
            }
        }
    }

    /// `out[j] = max over the rows and padded columns 2j, 2j + 1, 2j + 2`.
    ///
    /// `vmaxps(v, acc)` returns `acc` when `v` is NaN, and `acc` never is (it starts at
    /// -inf): a NaN loses to anything, `f32::max`'s rule, without a compare and blend. The
    /// reduced chunks are then never NaN, so plain `max` is `f32::max` along the row too.
    ///
    /// # Safety
    /// The CPU has AVX-512F; every row pointer starts `W` floats of one allocation, and
    /// `masks[m]` keeps exactly the lanes of chunk `m` (padded columns `16m..16m + 16`,
    /// input columns shifted right by `pad`) that fall in `0..W`, for `m ≤ 2·⌈len / 16⌉`.
    #[inline(always)]
    unsafe fn row_windows<const R: usize>(
        rows: [*const f32; R],
        masks: &[u16],
        pad: usize,
        out: &mut [f32],
    ) {
        let chunk = |m: usize| {
            let first = (16 * m) as isize - pad as isize;
            let mask = masks[m];
            // SAFETY: register operations and masked loads; the mask keeps only lanes at
            // input columns of each row (caller), masked-off lanes are never read, so the
            // pointer before or past a row is never dereferenced.
            unsafe {
                let mut acc = _mm512_set1_ps(f32::NEG_INFINITY);
                for p in rows {
                    let v = _mm512_mask_loadu_ps(acc, mask, p.wrapping_offset(first));
                    acc = _mm512_max_ps(v, acc);
                }
                acc
            }
        };
        // SAFETY: register operations (AVX-512F, caller) and a store masked to out[j..j + k].
        unsafe {
            let even = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
            let odd = _mm512_setr_epi32(1, 3, 5, 7, 9, 11, 13, 15, 17, 19, 21, 23, 25, 27, 29, 31);
            // The evens shifted down one, the last from the chunk after: columns 2, 4, …, 32.
            let next_even =
                _mm512_setr_epi32(1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16);
            let mut a = chunk(0);
            let mut j = 0;
            while j < out.len() {
                let k = 16.min(out.len() - j);
                let m = j / 8;
                let (b, c) = (chunk(m + 1), chunk(m + 2));
                let evens = _mm512_permutex2var_ps(a, even, b);
                let odds = _mm512_permutex2var_ps(a, odd, b);
                let rights = _mm512_permutex2var_ps(evens, next_even, c);
                let y = _mm512_max_ps(_mm512_max_ps(evens, odds), rights);
                let mask = ((1u32 << k) - 1) as __mmask16;
                _mm512_mask_storeu_ps(out.as_mut_ptr().add(j), mask, y);
                a = c;
                j += k;
            }
        }
    }
}

/// The 3-wide, stride-2 window with AVX2, 8 outputs per step: each output row's window rows
/// (at most 3) are reduced into a -inf padded row, then shuffles pick the evens, odds and next
/// evens of 18 of its columns. The generic path's scalar split of the reduced row into stride
/// phases took five times onnxruntime's time on SqueezeNet's 55×55 and 27×27 pools (Zen 3,
/// 1 thread: 0.274 vs 0.052 ms and 0.199 vs 0.030). Reducing into the row as the AVX-512
/// kernel does, in registers, loads each row four times per step and was slower on the wide
/// maps (paired, row buffer ÷ registers: 111×111 0.84, 55×55 0.84, 27×27 1.0).
#[cfg(target_arch = "x86_64")]
mod avx2 {
    use crate::depthwise::PlaneGeometry;
    use std::arch::x86_64::*;

    /// Floats per ymm: input columns per reduction step, outputs per column step.
    const STEP: usize = 8;

    /// Max pools a plane whose windows are 3 wide with stride 2 along rows and at most 3
    /// rows high.
    ///
    /// # Safety
    /// The CPU has AVX2; `x` holds the `H×W` input plane and `y` the `OH×OW` output plane of
    /// `g`, whose kernel is at most 3 rows high.
    #[target_feature(enable = "avx2")]
    pub(super) unsafe fn plane_window3_stride2(
        g: &PlaneGeometry,
        x: &[f32],
        y: &mut [f32],
        buf: &mut Vec<f32>,
    ) {
        let w = g.input[1];
        let [oh_n, ow_n] = g.output;
        let pad = g.pad[1];
        // Two padded rows: column `c` holds input column `c - pad`, -inf outside the input. A
        // column step for outputs `j..j + 8` reads columns `2j..2j + 18`, and the reduction
        // writes whole vectors from column `pad` on (-inf past the input). Output row `oh` is
        // reduced while row `oh - 1` is read back: read at once, a load straddling two vector
        // stores still in flight waits for them (store forwarding fails; 0.84–0.90 the time
        // of one row, 55×55 and 27×27).
        let len = (2 * ow_n.next_multiple_of(STEP) + 2).max(pad + w.next_multiple_of(STEP));
        buf.clear();
        buf.resize(2 * len, f32::NEG_INFINITY);
        for oh in 0..=oh_n {
            if oh < oh_n {
                let (rows, n) = super::window_rows(g, x, oh);
                let row = &mut buf[oh % 2 * len..][pad..len];
                // SAFETY (all three): the first `n` pointers start rows of `w` floats in `x`,
                // and `row` holds at least `⌈w / 8⌉·8` floats.
                match n {
                    0 => row.fill(f32::NEG_INFINITY),
                    1 => unsafe { reduce_rows([rows[0]], w, row) },
                    2 => unsafe { reduce_rows([rows[0], rows[1]], w, row) },
                    _ => unsafe { reduce_rows(rows, w, row) },
                }
            }
            if let Some(done) = oh.checked_sub(1) {
                let row = &buf[done % 2 * len..][..len];
                // SAFETY: the row is `len` long, as `columns` requires.
                unsafe { columns(row, &mut y[done * ow_n..(done + 1) * ow_n]) };
            }
        }
    }

    /// `row[c] = max over the rows of column c` for `c < w`, and -inf for the rest of the
    /// last vector. `vmaxps(v, acc)` returns `acc` when `v` is NaN, and `acc` never is (it
    /// starts at -inf): a NaN loses, `f32::max`'s rule, and the row holds no NaN.
    ///
    /// # Safety
    /// The CPU has AVX2; each row pointer starts `w` readable floats; `row` holds at least
    /// `⌈w / 8⌉·8` floats.
    #[inline(always)]
    unsafe fn reduce_rows<const R: usize>(rows: [*const f32; R], w: usize, row: &mut [f32]) {
        debug_assert!(row.len() >= w.next_multiple_of(STEP));
        let full = w / STEP * STEP;
        let out = row.as_mut_ptr();
        // SAFETY (whole body): AVX2 (caller); loads stay inside each row's `w` floats (the
        // tail's masked-off lanes are not accessed), stores inside `row`.
        unsafe {
            let low = _mm256_set1_ps(f32::NEG_INFINITY);
            for c in (0..full).step_by(STEP) {
                let mut acc = low;
                for p in rows {
                    acc = _mm256_max_ps(_mm256_loadu_ps(p.add(c)), acc);
                }
                _mm256_storeu_ps(out.add(c), acc);
            }
            if full < w {
                let mask = first_lanes(w - full);
                let mut acc = low;
                for p in rows {
                    // Masked-off lanes load as 0: made -inf before they count.
                    let v = _mm256_maskload_ps(p.add(full), mask);
                    let v = _mm256_blendv_ps(low, v, _mm256_castsi256_ps(mask));
                    acc = _mm256_max_ps(v, acc);
                }
                _mm256_storeu_ps(out.add(full), acc);
            }
        }
    }

    /// `out[j] = max(row[2j], row[2j + 1], row[2j + 2])`, 8 outputs per step.
    ///
    /// # Safety
    /// The CPU has AVX2; `row` holds at least `2·⌈out.len() / 8⌉·8 + 2` floats, none NaN
    /// (plain `vmaxps` is then `f32::max`).
    #[inline(always)]
    unsafe fn columns(row: &[f32], out: &mut [f32]) {
        debug_assert!(row.len() >= 2 * out.len().next_multiple_of(STEP) + 2);
        let mut j = 0;
        while j < out.len() {
            let k = STEP.min(out.len() - j);
            // SAFETY: AVX2 (caller); the four loads read columns `2j..2j + 18` of the row,
            // inside it as `j + 8 ≤ ⌈len / 8⌉·8`; the store writes outputs j..j + k only (a
            // masked-off lane is not accessed).
            unsafe {
                let p = row.as_ptr().add(2 * j);
                let (a, b) = (_mm256_loadu_ps(p), _mm256_loadu_ps(p.add(8)));
                let (c, d) = (_mm256_loadu_ps(p.add(2)), _mm256_loadu_ps(p.add(10)));
                // Within each 128-bit lane: a's and b's evens (or odds) of that lane, so the
                // three line up; one permute then restores the column order.
                let evens = _mm256_shuffle_ps::<0b10_00_10_00>(a, b);
                let odds = _mm256_shuffle_ps::<0b11_01_11_01>(a, b);
                let rights = _mm256_shuffle_ps::<0b10_00_10_00>(c, d);
                let m = _mm256_max_ps(_mm256_max_ps(evens, odds), rights);
                let v =
                    _mm256_castpd_ps(_mm256_permute4x64_pd::<0b11_01_10_00>(_mm256_castps_pd(m)));
                if k == STEP {
                    _mm256_storeu_ps(out.as_mut_ptr().add(j), v);
                } else {
                    _mm256_maskstore_ps(out.as_mut_ptr().add(j), first_lanes(k), v);
                }
            }
            j += k;
        }
    }

    /// All-ones in the first `k` lanes (`k ≤ 8`).
    #[inline(always)]
    unsafe fn first_lanes(k: usize) -> __m256i {
        // SAFETY: register operations; AVX2 (caller).
        unsafe {
            let lanes = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
            _mm256_cmpgt_epi32(_mm256_set1_epi32(k as i32), lanes)
        }
    }
}

/// Channels in one cell of a channel-blocked (NCHW16c) image.
const BLOCK: usize = 16;

/// `y[oh, ow, c] = max over the window of x[.., .., c]` for one channel block of an NCHW16c
/// image: `H×W` cells of 16 channels into `OH×OW` cells. Each cell is one AVX-512 vector, so
/// the pool is vector maxima with none of the plane kernel's permutes.
///
/// # Panics
/// If a slice is shorter than the geometry says (a caller bug, as for `max_pool_plane`).
pub fn max_pool_block(g: &PlaneGeometry, x: &[f32], y: &mut [f32]) {
    max_pool_block_rows(g, x, 0..g.output[0], y)
}

/// `max_pool_block` for output rows `rows` only, into `y` (`rows.len() · OW` cells): a
/// caller that moves the cells on (into planes) while they are in L1.
pub fn max_pool_block_rows(g: &PlaneGeometry, x: &[f32], rows: Range<usize>, y: &mut [f32]) {
    let [h, w] = g.input;
    assert!(x.len() >= h * w * BLOCK, "block input too short");
    assert!(rows.end <= g.output[0], "output rows past the map");
    assert!(
        y.len() >= rows.len() * g.output[1] * BLOCK,
        "block output too short"
    );
    #[cfg(target_arch = "x86_64")]
    if isa() == Isa::Avx512 {
        // SAFETY: AVX-512F detected; the slices hold the geometry's cells and the rows' output
        // cells (checked above).
        return unsafe { avx512::block(g, x, rows, y) };
    }
    block(g, x, rows, y)
}

/// Whether `max_pool_block` runs vectorized here (AVX-512: one vector per cell); elsewhere it
/// is a scalar loop, and blocks should not be planned into a pool.
pub fn pools_blocks_in_vectors() -> bool {
    cfg!(target_arch = "x86_64") && isa() == Isa::Avx512
}

/// The input rows (or columns) a window along one dim reaches: `out·stride + k·dilation - pad`
/// for each tap `k` that lands inside `0..len`.
#[inline(always)]
fn taps(
    out: usize,
    stride: usize,
    kernel: usize,
    dilation: usize,
    pad: usize,
    len: usize,
) -> impl Iterator<Item = usize> {
    (0..kernel).filter_map(move |k| {
        (out * stride + k * dilation)
            .checked_sub(pad)
            .filter(|&i| i < len)
    })
}

/// The input rows under output row `oh` of `g`, whose window is at most 3 rows high: the first
/// `n` pointers start them (the rest repeat the plane's start), and `n`.
fn window_rows(g: &PlaneGeometry, x: &[f32], oh: usize) -> ([*const f32; 3], usize) {
    let [h, w] = g.input;
    let mut rows = [x.as_ptr(); 3];
    let mut n = 0;
    for r in taps(oh, g.stride[0], g.kernel[0], g.dilation[0], g.pad[0], h).take(3) {
        rows[n] = x[r * w..].as_ptr();
        n += 1;
    }
    (rows, n)
}

/// The portable definition, window by window (`f32::max`'s rule: a NaN loses).
fn block(g: &PlaneGeometry, x: &[f32], rows: Range<usize>, y: &mut [f32]) {
    let [h, w] = g.input;
    let ow_n = g.output[1];
    let first_row = rows.start;
    for oh in rows {
        for ow in 0..ow_n {
            let out = &mut y[((oh - first_row) * ow_n + ow) * BLOCK..][..BLOCK];
            out.fill(f32::NEG_INFINITY);
            for r in taps(oh, g.stride[0], g.kernel[0], g.dilation[0], g.pad[0], h) {
                for c in taps(ow, g.stride[1], g.kernel[1], g.dilation[1], g.pad[1], w) {
                    for (a, &v) in out.iter_mut().zip(&x[(r * w + c) * BLOCK..][..BLOCK]) {
                        *a = a.max(v);
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The definition, one output at a time.
    fn reference(g: &PlaneGeometry, x: &[f32]) -> Vec<f32> {
        let [h, w] = g.input;
        let mut y = vec![f32::NEG_INFINITY; g.output[0] * g.output[1]];
        for oh in 0..g.output[0] {
            for ow in 0..g.output[1] {
                for kh in 0..g.kernel[0] {
                    for kw in 0..g.kernel[1] {
                        let r =
                            (oh * g.stride[0] + kh * g.dilation[0]) as isize - g.pad[0] as isize;
                        let c =
                            (ow * g.stride[1] + kw * g.dilation[1]) as isize - g.pad[1] as isize;
                        if (0..h as isize).contains(&r) && (0..w as isize).contains(&c) {
                            let o = &mut y[oh * g.output[1] + ow];
                            *o = o.max(x[r as usize * w + c as usize]);
                        }
                    }
                }
            }
        }
        y
    }

    #[test]
    fn blocks_match_the_plane_definition_per_channel() {
        // (H, W, K, stride, dilation, pad, output): squeezenet's ceil-mode pool, ResNet's
        // padded one, a dilated one.
        for (h, w, k, s, d, p, o) in [
            (111, 111, 3, 2, 1, 0, [55, 55]),
            (10, 9, 3, 2, 1, 1, [5, 5]),
            (9, 7, 2, 1, 2, 1, [8, 6]),
        ] {
            let g = PlaneGeometry {
                input: [h, w],
                output: o,
                kernel: [k, k],
                stride: [s, s],
                dilation: [d, d],
                pad: [p, p],
            };
            let planes: Vec<Vec<f32>> = (0..BLOCK)
                .map(|c| {
                    let mut x: Vec<f32> = (0..h * w)
                        .map(|i| ((i * 37 + c * 11) % 101) as f32 - 50.0)
                        .collect();
                    x[(c * 7) % (h * w)] = f32::NAN;
                    x
                })
                .collect();
            let mut cells = vec![0.0; h * w * BLOCK];
            for (c, plane) in planes.iter().enumerate() {
                for (i, &v) in plane.iter().enumerate() {
                    cells[i * BLOCK + c] = v;
                }
            }
            let mut y = vec![0.0; o[0] * o[1] * BLOCK];
            max_pool_block(&g, &cells, &mut y);
            for (c, plane) in planes.iter().enumerate() {
                let want = reference(&g, plane);
                for (i, &v) in want.iter().enumerate() {
                    assert_eq!(
                        y[i * BLOCK + c].to_bits(),
                        v.to_bits(),
                        "{g:?} channel {c} at {i}"
                    );
                }
            }
        }
    }

    #[test]
    fn matches_the_definition_across_strides_pads_and_dilations() {
        let mut scratch = MaxPoolScratch::new();
        // (H, W, K, stride, dilation, pad, ceil): squeezenet/resnet pools and odd ones; the
        // far side follows from the output size, which ceil mode makes one larger.
        let cases = [
            (111, 111, 3, 2, 1, 0, true),
            (112, 112, 3, 2, 1, 1, false),
            (13, 17, 3, 2, 1, 1, true),
            (9, 10, 2, 2, 1, 0, false),
            (8, 7, 3, 1, 1, 1, false),
            (10, 11, 3, 3, 2, 2, true),
            (5, 4, 5, 1, 1, 2, false),
            (1, 9, 1, 2, 1, 0, false),
            // The 3-wide stride-2 vector paths: SqueezeNet's later pools, outputs fewer than
            // a vector, a wide pad.
            (55, 55, 3, 2, 1, 0, true),
            (27, 27, 3, 2, 1, 0, true),
            (6, 5, 3, 2, 1, 0, false),
            (7, 40, 3, 2, 1, 2, false),
        ];
        for (h, w, k, s, d, p, ceil) in cases {
            let out = |n: usize| {
                let span = n + 2 * p - (k - 1) * d - 1;
                if ceil {
                    span.div_ceil(s) + 1
                } else {
                    span / s + 1
                }
            };
            let g = PlaneGeometry {
                input: [h, w],
                output: [out(h), out(w)],
                kernel: [k, k],
                stride: [s, s],
                dilation: [d, d],
                pad: [p, p],
            };
            let mut x: Vec<f32> = (0..h * w)
                .map(|i| ((i * 7919 % 1013) as f32 - 500.0) / 64.0)
                .collect();
            x[h * w / 2] = f32::NAN;
            let mut y = vec![0.0; g.output[0] * g.output[1]];
            max_pool_plane(&g, &x, &mut y, &mut scratch);
            let want = reference(&g, &x);
            for (i, (a, b)) in y.iter().zip(&want).enumerate() {
                assert_eq!(a.to_bits(), b.to_bits(), "{g:?} output {i}: {a} vs {b}");
            }
        }
    }
}
