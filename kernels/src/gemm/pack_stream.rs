//! Panels written with non-temporal stores, for operands packed once and read much later
//! (prepacked weights).
//!
//! A normal store first reads the cache line it writes into; packing a CNN's weights at load
//! writes 100–150 MB that nothing reads until the first run, so a third of that memory traffic
//! was reads of lines about to be overwritten. Streaming stores skip them (x86-64's SSE
//! `movntps`, always available there): 128 MB of 8-row panels took 17.5 ms instead of 22 on
//! this project's VM. Elsewhere nothing streams and the ordinary packing runs.
//!
//! Streaming stores are weakly ordered: a packer calls [`fence`] before the operand is shared.

use super::MatRef;

/// Writes one full panel of `width` rows of `src` (panel-major view, see `pack`) from row
/// `r0`, depth `p0..p0 + panel.len() / width`, with streaming stores. Returns `false`, having
/// written nothing, where this layout is not handled: a width that is no multiple of 4 (or
/// over 32 for rows whose depth is contiguous), a panel not 16-byte aligned, or neither
/// stride 1.
///
/// The caller guarantees that `src` has rows `r0..r0 + width` and the panel's depth range.
pub(super) fn panel(panel: &mut [f32], src: MatRef, r0: usize, p0: usize, width: usize) -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        if !width.is_multiple_of(4) || !(panel.as_ptr() as usize).is_multiple_of(16) {
            return false;
        }
        if src.col_stride == 1 && width <= x86::MAX_GATHER_WIDTH {
            x86::gather(panel, src, r0, p0, width);
            return true;
        }
        if src.row_stride == 1 {
            x86::copy(panel, src, r0, p0, width);
            return true;
        }
    }
    let _ = (panel, src, r0, p0, width);
    false
}

/// Orders the streaming stores made so far on this thread before any later store (such as
/// the one that tells another thread the operand is packed).
pub(super) fn fence() {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: `sfence` (SSE, part of x86-64) only orders stores.
    unsafe {
        std::arch::x86_64::_mm_sfence()
    };
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use super::MatRef;
    use std::arch::x86_64::*;

    /// The widest panel gathered (the widest kernel's).
    pub(super) const MAX_GATHER_WIDTH: usize = 32;

    /// Rows whose depth is contiguous: each 4×4 tile (four rows, four depth steps) loaded,
    /// transposed in registers and streamed as four depth steps' values of those rows; all
    /// the tiles of four depth steps in turn, so whole cache lines are written together (a
    /// line streamed in parts is far slower than one written normally).
    /// Contract as for `super::panel`, with `width % 4 == 0` and at most `MAX_GATHER_WIDTH`,
    /// `panel` 16-byte aligned and a column stride of 1.
    pub(super) fn gather(panel: &mut [f32], src: MatRef, r0: usize, p0: usize, width: usize) {
        let kc = panel.len() / width;
        let steps = kc / 4 * 4;
        // Bounds-checked: `width` rows of `kc` values each.
        let mut rows: [&[f32]; MAX_GATHER_WIDTH] = [&[]; MAX_GATHER_WIDTH];
        for (i, row) in rows[..width].iter_mut().enumerate() {
            let start = (r0 + i) * src.row_stride + p0;
            *row = &src.data[start..start + kc];
        }
        let rows = &rows[..width];
        for p in (0..steps).step_by(4) {
            for (g, quad) in rows.chunks_exact(4).enumerate() {
                // SAFETY: `p + 4 <= steps <= kc`, so every load is inside its row. The stores
                // go to `panel[(p + j)·width + 4g .. + 4]` for `j < 4`: inside `panel`
                // (`p + 3 < kc`, `4g + 4 <= width`), 16-byte aligned (`panel` is, and `width`
                // and `4g` are multiples of 4 floats).
                unsafe {
                    let mut a = _mm_loadu_ps(quad[0].as_ptr().add(p));
                    let mut b = _mm_loadu_ps(quad[1].as_ptr().add(p));
                    let mut c = _mm_loadu_ps(quad[2].as_ptr().add(p));
                    let mut d = _mm_loadu_ps(quad[3].as_ptr().add(p));
                    _MM_TRANSPOSE4_PS(&mut a, &mut b, &mut c, &mut d);
                    let out = panel.as_mut_ptr().add(p * width + 4 * g);
                    _mm_stream_ps(out, a);
                    _mm_stream_ps(out.add(width), b);
                    _mm_stream_ps(out.add(2 * width), c);
                    _mm_stream_ps(out.add(3 * width), d);
                }
            }
        }
        for p in steps..kc {
            for (i, row) in rows.iter().enumerate() {
                panel[p * width + i] = row[p];
            }
        }
    }

    /// Rows contiguous: each depth step's `width` values streamed as they are.
    /// Contract as for `super::panel`, with `width % 4 == 0`, `panel` 16-byte aligned and a
    /// row stride of 1.
    pub(super) fn copy(panel: &mut [f32], src: MatRef, r0: usize, p0: usize, width: usize) {
        for (p, out) in panel.chunks_exact_mut(width).enumerate() {
            let base = r0 + (p0 + p) * src.col_stride;
            // Bounds-checked: the step's `width` values.
            let values = &src.data[base..base + width];
            for (o, v) in out.chunks_exact_mut(4).zip(values.chunks_exact(4)) {
                // SAFETY: four floats read from `v` and written to `o`, which is 16-byte
                // aligned (`panel` is, and `width` is a multiple of 4 floats).
                unsafe { _mm_stream_ps(o.as_mut_ptr(), _mm_loadu_ps(v.as_ptr())) };
            }
        }
    }
}
