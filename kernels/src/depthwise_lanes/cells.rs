//! A group's input cells: the padded, interleaved scratch and how it is filled from planes,
//! channels-last cells or blocks; when a blocked input is read in place instead; and the
//! AVX-512 transposes between planes and cells.

use super::{GroupInput, LanesScratch, PlaneGeometry, LANES, ROW_POSITIONS, ROW_SLACK};
use crate::isa::{isa, Isa};
use std::ops::Range;

/// Padded width of the interleaved scratch: the columns the outputs reach.
pub(super) fn padded_width(g: &PlaneGeometry) -> usize {
    (g.output[1] - 1) * g.stride[1] + (g.kernel[1].max(1) - 1) * g.dilation[1] + 1
}

/// Padded height: the rows the outputs reach.
pub(super) fn padded_height(g: &PlaneGeometry) -> usize {
    (g.output[0] - 1) * g.stride[0] + (g.kernel[0].max(1) - 1) * g.dilation[0] + 1
}

/// Copies the group's input into `scratch`'s cells (padding zero), rewriting the padding
/// only when the geometry differs from the last fill's.
pub(super) fn fill_interleaved(
    g: &PlaneGeometry,
    planes: usize,
    input: GroupInput,
    scratch: &mut LanesScratch,
) {
    let [h, wd] = g.input;
    let (ph, pw) = (padded_height(g), padded_width(g));
    let [pad_top, pad_left] = g.pad;
    // Rows and columns of the input that fall inside the padded area.
    let rows = 0..h.min(ph.saturating_sub(pad_top));
    let cols = 0..wd.min(pw.saturating_sub(pad_left));
    if scratch.filled_for != Some(*g) {
        // `ROW_SLACK` cells past the plane: the row kernel's last group reads past its row.
        scratch.buf.resize(ph * pw + ROW_SLACK, [0.0; LANES]);
        // Zero what no fill writes: the padding and the slack (not the whole plane: on a
        // 112×112 map that was most of a megabyte written twice per layer).
        let zero = [0.0; LANES];
        let (top, bottom) = (pad_top.min(ph), (pad_top + rows.len()).min(ph));
        scratch.buf[..top * pw].fill(zero);
        scratch.buf[bottom * pw..].fill(zero);
        for row in scratch.buf[top * pw..bottom * pw].chunks_exact_mut(pw) {
            row[..pad_left.min(pw)].fill(zero);
            row[(pad_left + cols.len()).min(pw)..].fill(zero);
        }
        scratch.filled_for = Some(*g);
    }
    let x = match input {
        GroupInput::Planes(x) => x,
        GroupInput::ChannelsLast { x, stride, first } => {
            assert!(
                first + planes <= stride,
                "channels {first}+{planes} of {stride}"
            );
            assert!(x.len() >= h * wd * stride, "channels-last input too short");
            if stride == LANES {
                // Blocked: a row's cells are contiguous in the input too.
                for r in rows {
                    let dst = &mut scratch.buf[(r + pad_top) * pw + pad_left..][..cols.len()];
                    dst.as_flattened_mut()
                        .copy_from_slice(&x[r * wd * LANES..][..cols.len() * LANES]);
                }
                return;
            }
            for r in rows {
                let dst = &mut scratch.buf[(r + pad_top) * pw + pad_left..][..cols.len()];
                let src = &x[(r * wd) * stride + first..];
                for (c, d) in dst.iter_mut().enumerate() {
                    let cell = &src[c * stride..];
                    if planes == LANES {
                        d.copy_from_slice(&cell[..LANES]);
                    } else {
                        // Lanes past `planes` keep whatever an earlier, fuller group left:
                        // their weights are zero and their outputs are never stored.
                        d[..planes].copy_from_slice(&cell[..planes]);
                    }
                }
            }
            return;
        }
    };
    #[cfg(target_arch = "x86_64")]
    if isa() == Isa::Avx512 && h + pad_top <= ph && wd + pad_left <= pw {
        // SAFETY: `isa()` returns Avx512 only after detecting AVX-512F; the input's rectangle
        // lies inside the padded area (checked just above).
        unsafe { avx512::interleave(g, planes, x, pw, &mut scratch.buf) };
        return;
    }
    for r in rows {
        let dst = &mut scratch.buf[(r + pad_top) * pw + pad_left..][..cols.len()];
        // Lanes past `planes` keep whatever an earlier, fuller group left: their weights
        // are zero and their outputs are never stored.
        for (c, plane) in x.chunks_exact(h * wd).take(planes).enumerate() {
            let src = &plane[r * wd..][..cols.len()];
            for (d, &v) in dst.iter_mut().zip(src) {
                d[c] = v;
            }
        }
    }
}

/// Fewest output positions for which a blocked input is read in place: on smaller maps the
/// border windows (`border`, a bounds check per tap) are too large a share, and the input
/// is in L2 for the padded copy anyway.
pub(super) const DIRECT_MIN_POSITIONS: usize = 28 * 28;

/// The output rows and columns whose windows lie wholly inside the input (no padding
/// read), when they span at least one row group (`ROW_POSITIONS`) across: the row kernel
/// then never reads past a row's end.
pub(super) fn interior(g: &PlaneGeometry) -> Option<[Range<usize>; 2]> {
    let axis = |a: usize| {
        let reach = (g.kernel[a].max(1) - 1) * g.dilation[a];
        // Outputs o with o·s ≥ pad and o·s − pad + reach ≤ input − 1.
        let lo = g.pad[a].div_ceil(g.stride[a]);
        let hi = (g.input[a] + g.pad[a]).checked_sub(reach + 1)? / g.stride[a] + 1;
        let hi = hi.min(g.output[a]);
        (lo < hi).then_some(lo..hi)
    };
    let rect = [axis(0)?, axis(1)?];
    (rect[1].len() >= ROW_POSITIONS).then_some(rect)
}

/// For each tap (kh, kw), its cell offset relative to the window's corner in cells `pitch`
/// per row.
pub(super) fn tap_offsets_into(g: &PlaneGeometry, pitch: usize, taps: &mut Vec<usize>) {
    let pw = pitch;
    taps.clear();
    for kh in 0..g.kernel[0] {
        for kw in 0..g.kernel[1] {
            taps.push(kh * g.dilation[0] * pw + kw * g.dilation[1]);
        }
    }
}

/// 16×16 transposes between planes and interleaved cells, for AVX-512.
#[cfg(target_arch = "x86_64")]
pub(super) mod avx512 {
    use super::super::{Lanes, PlaneGeometry, LANES};
    use crate::transpose::avx512::transpose;
    use std::arch::x86_64::*;

    /// The mask of lanes `0..k` (`k <= 16`).
    #[inline(always)]
    fn first_lanes(k: usize) -> __mmask16 {
        (((1u32 << k) - 1) & 0xFFFF) as u16
    }

    /// The input rectangle of `planes` planes into their cells of the padded scratch (`pw`
    /// cells a row), 16 input positions per transpose; lanes past `planes` become zero.
    ///
    /// # Safety
    /// The CPU has AVX-512F.
    ///
    /// # Panics
    /// If the input's rectangle does not lie inside the padded area.
    #[target_feature(enable = "avx512f")]
    pub(in crate::depthwise_lanes) unsafe fn interleave(
        g: &PlaneGeometry,
        planes: usize,
        x: &[f32],
        pw: usize,
        buf: &mut [Lanes],
    ) {
        let [h, w] = g.input;
        let len = h * w;
        let [pad_top, pad_left] = g.pad;
        assert!(planes <= LANES && x.len() >= planes * len);
        assert!(len == 0 || (h + pad_top - 1) * pw + w + pad_left <= buf.len());
        // Input position (r, col) at flat index f, advanced by counters (no divisions).
        let (mut r, mut col) = (0, 0);
        let mut f = 0;
        while f < len {
            let k = LANES.min(len - f);
            let mask = first_lanes(k);
            // SAFETY: plane c's positions f..f + k exist (masked loads); each cell written is
            // an input position's, inside `buf` (asserted above).
            unsafe {
                let mut rows = [_mm512_setzero_ps(); 16];
                for (c, row) in rows.iter_mut().enumerate().take(planes) {
                    *row = _mm512_maskz_loadu_ps(mask, x.as_ptr().add(c * len + f));
                }
                transpose(&mut rows);
                for row in rows.iter().take(k) {
                    let cell = (r + pad_top) * pw + col + pad_left;
                    _mm512_storeu_ps(buf[cell].as_mut_ptr(), *row);
                    col += 1;
                    if col == w {
                        (r, col) = (r + 1, 0);
                    }
                }
            }
            f += k;
        }
    }

    /// `y[c · positions + p] = out[p][c]` for the first `planes` lanes, 16 positions per
    /// transpose.
    ///
    /// # Safety
    /// The CPU has AVX-512F.
    #[target_feature(enable = "avx512f")]
    pub(in crate::depthwise_lanes) unsafe fn deinterleave(
        out: &[Lanes],
        planes: usize,
        y: &mut [f32],
    ) {
        let positions = out.len();
        assert!(planes <= LANES && y.len() >= planes * positions);
        let mut p = 0;
        while p < positions {
            let k = LANES.min(positions - p);
            let mask = first_lanes(k);
            // SAFETY: cells p..p + k exist; the stores write positions p..p + k (masked) of
            // planes below `planes`, inside `y` (asserted above).
            unsafe {
                let mut r = [_mm512_setzero_ps(); 16];
                for (i, row) in r.iter_mut().enumerate().take(k) {
                    *row = _mm512_loadu_ps(out[p + i].as_ptr());
                }
                transpose(&mut r);
                for (c, row) in r.iter().enumerate().take(planes) {
                    _mm512_mask_storeu_ps(y.as_mut_ptr().add(c * positions + p), mask, *row);
                }
            }
            p += k;
        }
    }
}
