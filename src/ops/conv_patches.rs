//! The input patches of a convolution as the right operand of its GEMM, packed straight into
//! the microkernel's panels (`PanelSource`): the `[C/g·K, positions]` im2col matrix is never
//! built, which saves a write and a read of it per run and lets one product cover all output
//! positions (no cache-sized column tiles, so the weights stream through once).

use super::conv::Geometry;
use infer_kernels::gemm::PanelSource;
use std::cell::Cell;
use std::ops::Range;

thread_local! {
    /// The gathered row of `pack`, kept between calls: a stem packs its patches a block of
    /// 384 positions at a time, and a fresh zeroed row per block was 4 % of its time
    /// (MobileNet-v2's stem, `perf`).
    static ROW: Cell<Vec<f32>> = const { Cell::new(Vec::new()) };
}

/// `B[C/g·K, OD·OH·OW]` for one image and group: row `r` is the kernel tap
/// `(channel, kd, kh, kw)` in weight order, column `c` an output position; the value is the
/// input under that tap, zero in the padding.
#[derive(Debug)]
pub(super) struct Patches<'a> {
    pub geo: &'a Geometry,
    /// The group's input channels, `C/g` planes of `geo.input_len()` floats.
    pub x: &'a [f32],
    /// `C/g · K`.
    pub rows: usize,
}

impl PanelSource for Patches<'_> {
    fn shape(&self) -> (usize, usize) {
        (self.rows, self.geo.output_len())
    }

    fn pack(&self, dst: &mut [f32], depth: Range<usize>, cols: Range<usize>, width: usize) {
        let geo = self.geo;
        let [_, oh_n, ow_n] = geo.output;
        let [_, h_n, w_n] = geo.input;
        let [kd_n, kh_n, kw_n] = geo.kernel;
        let in_len = geo.input_len();
        let panel_len = width * depth.len();
        let panels = cols.len().div_ceil(width);
        let start = (
            cols.start / (oh_n * ow_n),
            cols.start / ow_n % oh_n,
            cols.start % ow_n,
        );
        // One row of B (one tap over the whole block) is gathered first, then cut into the
        // panels with fixed-width copies: writing the panels straight from the input rows
        // would split every output row at panel edges into short copies of varying length
        // (library `memcpy` calls, most of the packing time on 13- and 27-wide rows).
        // Past the block's last column the row stays zero: the last panel's padding.
        // Every tap below writes each of the block's columns, so only the padding is zeroed.
        let mut row = ROW.take();
        row.resize(panels * width, 0.0);
        row[cols.len()..].fill(0.0);
        for (p, r) in depth.enumerate() {
            let (ci, kd, kh, kw) = (
                r / (kd_n * kh_n * kw_n),
                r / (kh_n * kw_n) % kd_n,
                r / kw_n % kh_n,
                r % kw_n,
            );
            let plane = &self.x[ci * in_len..(ci + 1) * in_len];
            let tap = Tap {
                valid: geo.valid_outputs(kw),
                stride: geo.stride[2],
                // Input column of output column `ow` is `ow·stride + offset - pad` (valid ones).
                offset: kw * geo.dilation[2],
                pad: geo.pad[2],
            };
            let (mut od, mut oh, mut ow) = start;
            let mut at = 0;
            while at < cols.len() {
                let seg = (ow_n - ow).min(cols.len() - at);
                let src = match (geo.input_index(0, od, kd), geo.input_index(1, oh, kh)) {
                    (Some(id), Some(ih)) => {
                        Some(&plane[(id * h_n + ih) * w_n..(id * h_n + ih + 1) * w_n])
                    }
                    _ => None,
                };
                tap.fill(&mut row[at..at + seg], src, ow..ow + seg);
                at += seg;
                ow += seg;
                if ow == ow_n {
                    ow = 0;
                    oh += 1;
                    if oh == oh_n {
                        (oh, od) = (0, od + 1);
                    }
                }
            }
            let dst_row = &mut dst[p * width..];
            match width {
                8 => scatter::<8>(dst_row, &row, panel_len),
                12 => scatter::<12>(dst_row, &row, panel_len),
                16 => scatter::<16>(dst_row, &row, panel_len),
                32 => scatter::<32>(dst_row, &row, panel_len),
                _ => {
                    for (q, chunk) in row.chunks_exact(width).enumerate() {
                        dst_row[q * panel_len..q * panel_len + width].copy_from_slice(chunk);
                    }
                }
            }
        }
        ROW.set(row);
    }
}

/// Cuts a gathered row of B into `W`-wide panel rows, `panel_len` floats apart in `dst`.
/// `W` is a constant so each copy compiles to a few vector moves.
#[inline(always)]
fn scatter<const W: usize>(dst: &mut [f32], row: &[f32], panel_len: usize) {
    for (q, chunk) in row.chunks_exact(W).enumerate() {
        dst[q * panel_len..q * panel_len + W].copy_from_slice(chunk);
    }
}

/// One horizontal kernel tap: which output columns read inside the input row, and where.
struct Tap {
    valid: Range<usize>,
    stride: usize,
    offset: usize,
    pad: usize,
}

impl Tap {
    /// `out[i]` = the value under this tap for output column `ows.start + i`, reading `row`
    /// (`None`: the tap's input row is padding).
    fn fill(&self, out: &mut [f32], row: Option<&[f32]>, ows: Range<usize>) {
        let Some(row) = row else {
            out.fill(0.0);
            return;
        };
        let lo = self.valid.start.clamp(ows.start, ows.end);
        let hi = self.valid.end.clamp(lo, ows.end);
        out[..lo - ows.start].fill(0.0);
        out[hi - ows.start..].fill(0.0);
        // An empty `valid` range has no first input: computing one would underflow.
        if hi > lo {
            let first = lo * self.stride + self.offset - self.pad;
            let inside = &mut out[lo - ows.start..hi - ows.start];
            infer_kernels::strided::copy_strided(&row[first..], self.stride, inside);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::conv::{AutoPad, SpatialAttrs};
    use super::*;

    /// `B[r, c]` straight from the definition: the input under tap `r` for output `c`.
    fn patch_value(geo: &Geometry, x: &[f32], r: usize, c: usize) -> f32 {
        let [kd_n, kh_n, kw_n] = geo.kernel;
        let tap = [r / (kh_n * kw_n) % kd_n, r / kw_n % kh_n, r % kw_n];
        let [_, oh_n, ow_n] = geo.output;
        let out = [c / (oh_n * ow_n), c / ow_n % oh_n, c % ow_n];
        let mut index = r / (kd_n * kh_n * kw_n);
        for d in 0..3 {
            match geo.input_index(d, out[d], tap[d]) {
                Some(i) => index = index * geo.input[d] + i,
                None => return 0.0,
            }
        }
        x[index]
    }

    #[test]
    fn packs_the_patches_of_any_block() {
        // 2 channels of 3×5×6, kernel 2×3×3, strides (1, 2, 1), dilations (1, 1, 2), pads
        // begin (0, 1, 2) end (1, 0, 1): padding on every side, strided and dilated taps.
        let attrs = SpatialAttrs {
            auto_pad: AutoPad::NotSet,
            kernel_shape: None,
            strides: Some(vec![1, 2, 1]),
            dilations: Some(vec![1, 1, 2]),
            pads: Some(vec![0, 1, 2, 1, 0, 1]),
        };
        let geo = attrs.resolve(&[3, 5, 6], &[2, 3, 3], false).unwrap();
        let x: Vec<f32> = (0..2 * 90).map(|i| i as f32 + 1.0).collect();
        let rows = 2 * 18;
        let patches = Patches {
            geo: &geo,
            x: &x,
            rows,
        };
        let n = geo.output_len();
        assert_eq!(patches.shape(), (rows, n));
        // Blocks starting mid-row and mid-plane, ending in a partial panel, several widths.
        for (depth, cols, width) in [(0..rows, 0..n, 8), (5..17, 3..n - 2, 4), (30..36, 7..8, 16)] {
            let panels = cols.len().div_ceil(width);
            let mut dst = vec![f32::NAN; panels * width * depth.len()];
            patches.pack(&mut dst, depth.clone(), cols.clone(), width);
            for (q, panel) in dst.chunks_exact(width * depth.len()).enumerate() {
                for (p, row) in panel.chunks_exact(width).enumerate() {
                    for (j, &v) in row.iter().enumerate() {
                        let c = cols.start + q * width + j;
                        let want = if c < cols.end {
                            patch_value(&geo, &x, depth.start + p, c)
                        } else {
                            0.0
                        };
                        assert_eq!(
                            v, want,
                            "block {depth:?}x{cols:?} panel {q} row {p} col {j}"
                        );
                    }
                }
            }
        }
    }
}
