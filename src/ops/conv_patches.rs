//! The input patches of a convolution as the right operand of its GEMM, packed straight into
//! the microkernel's panels (`PanelSource`): the `[C/g·K, positions]` im2col matrix is never
//! built, which saves a write and a read of it per run and lets one product cover all output
//! positions (no cache-sized column tiles, so the weights stream through once).
//!
//! A 2-D convolution first copies its input once into zero-padded rows split into stride
//! phases ([`Phased`]); a panel of outputs in one output row then reads each tap as one run of
//! consecutive floats. Other geometries gather a tap's row per block, then cut it into panels.

use super::conv::Geometry;
use crate::error::Result;
use crate::tensor::spare::{self, Output};
use infer_kernels::gemm::PanelSource;
use infer_kernels::parallel;
use infer_kernels::strided::copy_strided;
use rayon::prelude::*;
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
    geo: &'a Geometry,
    /// The group's input channels, `C/g` planes of `geo.input_len()` floats.
    x: &'a [f32],
    /// `C/g · K`.
    rows: usize,
    phased: Option<Phased>,
}

/// Floats per task of the phased copy: fewer are not worth a rayon task.
const MIN_TASK_FLOATS: usize = 1 << 14;

/// A 2-D input copied with its padding, each padded row as `stride` column phases (column
/// `j` of the padded row goes to phase `j % stride`, position `j / stride`), so that tap
/// `(c, kh, kw)` of output `(oh, ow)` is the float at `base(oh, ow) + offset(c, kh, kw)`, with
/// `base = oh·stride_h·row + ow`: consecutive outputs of one output row read consecutive
/// floats for every tap. Per image this writes about the input once more, against gathering
/// `K / stride²` floats per input float one by one (ResNet-50's 7×7 stem: 49 / 4).
#[derive(Debug)]
struct Phased {
    buf: Option<Output<f32>>,
    /// Floats per padded row.
    row: usize,
    /// `offset(c, kh, kw)` of every row of the patches, in weight order.
    offsets: Vec<usize>,
}

impl<'a> Patches<'a> {
    /// The patches of `x` (the group's `C/g` planes) for `rows = C/g · K` taps.
    pub(super) fn new(geo: &'a Geometry, x: &'a [f32], rows: usize) -> Result<Self> {
        let phased = match geo.plane() {
            Some(_) => Some(Phased::new(geo, x, rows / geo.kernel_len().max(1))?),
            None => None,
        };
        Ok(Patches {
            geo,
            x,
            rows,
            phased,
        })
    }
}

impl Drop for Patches<'_> {
    fn drop(&mut self) {
        if let Some(buf) = self.phased.as_mut().and_then(|p| p.buf.take()) {
            buf.give_back();
        }
    }
}

impl Phased {
    fn new(geo: &Geometry, x: &[f32], channels: usize) -> Result<Self> {
        let [_, h_n, w_n] = geo.input;
        let [_, oh_n, ow_n] = geo.output;
        let [_, kh_n, kw_n] = geo.kernel;
        let [_, sh, sw] = geo.stride;
        let [_, dh, dw] = geo.dilation;
        let [_, pad_h, pad_w] = geo.pad;
        // The padded extent every tap of every output reads (no more: an end pad beyond it is
        // never read).
        let extent =
            |o: usize, s: usize, k: usize, d: usize| (o.max(1) - 1) * s + (k.max(1) - 1) * d + 1;
        let (rows, cols) = (extent(oh_n, sh, kh_n, dh), extent(ow_n, sw, kw_n, dw));
        let phase = cols.div_ceil(sw);
        let row = phase * sw;
        let plane = rows * row;
        let mut buf = spare::f32_output(channels * plane)?;
        let in_len = h_n * w_n;
        let fill = |(c, dst): (usize, &mut [f32])| {
            let src = &x[c * in_len..(c + 1) * in_len];
            for (r, dst_row) in dst.chunks_exact_mut(row).enumerate() {
                let Some(ih) = r.checked_sub(pad_h).filter(|&ih| ih < h_n) else {
                    dst_row.fill(0.0);
                    continue;
                };
                let src_row = &src[ih * w_n..(ih + 1) * w_n];
                for (p, dst) in dst_row.chunks_exact_mut(phase).enumerate() {
                    // Position j of phase p is padded column j·sw + p, input column
                    // j·sw + p - pad_w: inside for j in lo..hi.
                    let lo = pad_w.saturating_sub(p).div_ceil(sw).min(phase);
                    let hi = (w_n + pad_w)
                        .saturating_sub(p)
                        .div_ceil(sw)
                        .clamp(lo, phase);
                    dst[..lo].fill(0.0);
                    dst[hi..].fill(0.0);
                    if hi > lo {
                        let first = lo * sw + p - pad_w;
                        copy_strided(&src_row[first..], sw, &mut dst[lo..hi]);
                    }
                }
            }
        };
        // Channels in parallel (this runs before the product, on one thread otherwise).
        let chunk = MIN_TASK_FLOATS.div_ceil(plane.max(1));
        parallel::for_each(
            buf.par_chunks_mut(plane).enumerate().with_min_len(chunk),
            fill,
        );
        let offsets = (0..channels * kh_n * kw_n)
            .map(|r| {
                let (c, kh, kw) = (r / (kh_n * kw_n), r / kw_n % kh_n, r % kw_n);
                let col = kw * dw;
                c * plane + kh * dh * row + col % sw * phase + col / sw
            })
            .collect();
        Ok(Phased {
            buf: Some(buf),
            row,
            offsets,
        })
    }

    /// `Patches::pack` from the phased copy.
    fn pack(
        &self,
        geo: &Geometry,
        dst: &mut [f32],
        depth: Range<usize>,
        cols: Range<usize>,
        width: usize,
    ) {
        let Some(buf) = self.buf.as_deref() else {
            return;
        };
        let [_, _, ow_n] = geo.output;
        let sh = geo.stride[1];
        let offsets = &self.offsets[depth];
        let panel_len = width * offsets.len();
        // A panel's pieces in separate output rows: (first lane, lanes, base).
        let mut pieces: Vec<(usize, usize, usize)> = Vec::new();
        let base = |c: usize| c / ow_n * sh * self.row + c % ow_n;
        for (q, panel) in dst
            .chunks_exact_mut(panel_len)
            .take(cols.len().div_ceil(width))
            .enumerate()
        {
            let first = cols.start + q * width;
            let count = width.min(cols.end - first);
            if count == width && first % ow_n + width <= ow_n {
                // One output row: every tap is `width` consecutive floats.
                let b = base(first);
                match width {
                    8 => copy_runs::<8>(panel, buf, b, offsets),
                    16 => copy_runs::<16>(panel, buf, b, offsets),
                    32 => copy_runs::<32>(panel, buf, b, offsets),
                    _ => {
                        for (run, &off) in panel.chunks_exact_mut(width).zip(offsets.iter()) {
                            run.copy_from_slice(&buf[b + off..b + off + width]);
                        }
                    }
                }
            } else {
                // Across output rows: one run of consecutive floats per row piece (a loop the
                // compiler vectorizes, no `memcpy` call for pieces this short); zero past the
                // last column.
                pieces.clear();
                let mut j = 0;
                while j < count {
                    let c = first + j;
                    let len = (count - j).min(ow_n - c % ow_n);
                    pieces.push((j, len, base(c)));
                    j += len;
                }
                for (run, &off) in panel.chunks_exact_mut(width).zip(offsets.iter()) {
                    for &(j, len, b) in &pieces {
                        let src = &buf[b + off..b + off + len];
                        for (v, &x) in run[j..j + len].iter_mut().zip(src) {
                            *v = x;
                        }
                    }
                    run[count..].fill(0.0);
                }
            }
        }
    }
}

/// `panel[p·W..][..W] = buf[base + offsets[p]..][..W]` for every tap `p`; `W` a constant, so
/// each copy is a few vector moves.
#[inline(always)]
fn copy_runs<const W: usize>(panel: &mut [f32], buf: &[f32], base: usize, offsets: &[usize]) {
    for (run, &off) in panel.chunks_exact_mut(W).zip(offsets) {
        run.copy_from_slice(&buf[base + off..][..W]);
    }
}

impl PanelSource for Patches<'_> {
    fn shape(&self) -> (usize, usize) {
        (self.rows, self.geo.output_len())
    }

    fn pack(&self, dst: &mut [f32], depth: Range<usize>, cols: Range<usize>, width: usize) {
        if let Some(phased) = &self.phased {
            return phased.pack(self.geo, dst, depth, cols, width);
        }
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
            copy_strided(&row[first..], self.stride, inside);
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

    /// Packs blocks of `geo`'s patches of `x` (blocks starting mid-row, ending in a partial
    /// panel, several widths) and compares every element with `patch_value`.
    fn check_blocks(geo: &Geometry, x: &[f32], channels: usize) {
        let rows = channels * geo.kernel_len();
        let patches = Patches::new(geo, x, rows).unwrap();
        let n = geo.output_len();
        assert_eq!(patches.shape(), (rows, n));
        let blocks = [
            (0..rows, 0..n, 8),
            (rows / 4..rows / 2 + 1, n / 3..n - n / 5, 4),
            (rows - 6..rows, n - 1..n, 16),
            (1..rows, n / 2..n, 32),
        ];
        for (depth, cols, width) in blocks {
            let panels = cols.len().div_ceil(width);
            let mut dst = vec![f32::NAN; panels * width * depth.len()];
            patches.pack(&mut dst, depth.clone(), cols.clone(), width);
            for (q, panel) in dst.chunks_exact(width * depth.len()).enumerate() {
                for (p, row) in panel.chunks_exact(width).enumerate() {
                    for (j, &v) in row.iter().enumerate() {
                        let c = cols.start + q * width + j;
                        let want = if c < cols.end {
                            patch_value(geo, x, depth.start + p, c)
                        } else {
                            0.0
                        };
                        assert_eq!(
                            v, want,
                            "{geo:?}: block {depth:?}x{cols:?} panel {q} row {p} col {j}"
                        );
                    }
                }
            }
        }
    }

    fn attrs(strides: [usize; 2], dilations: [usize; 2], pads: [usize; 4]) -> SpatialAttrs {
        SpatialAttrs {
            auto_pad: AutoPad::NotSet,
            kernel_shape: None,
            strides: Some(strides.to_vec()),
            dilations: Some(dilations.to_vec()),
            pads: Some(pads.to_vec()),
        }
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
        check_blocks(&geo, &x, 2);
    }

    #[test]
    fn packs_2d_patches_from_the_phased_copy() {
        // (input, kernel, strides, dilations, pads begin/end): a stem's 3×3 stride 2, a 7×7
        // stride 2 pad 3, stride 3 with dilation, asymmetric pads (an end pad never read),
        // no padding with an odd map, a kernel as wide as the padded input.
        type Case = ([usize; 2], [usize; 2], [usize; 2], [usize; 2], [usize; 4]);
        let cases: [Case; 6] = [
            ([17, 19], [3, 3], [2, 2], [1, 1], [1, 1, 1, 1]),
            ([23, 21], [7, 7], [2, 2], [1, 1], [3, 3, 3, 3]),
            ([20, 22], [3, 2], [3, 3], [2, 3], [2, 0, 1, 4]),
            ([13, 11], [3, 3], [1, 2], [1, 1], [0, 2, 3, 0]),
            ([15, 15], [3, 3], [2, 2], [1, 1], [0, 0, 0, 0]),
            ([6, 5], [4, 7], [1, 1], [1, 1], [1, 1, 0, 1]),
        ];
        for (input, kernel, strides, dilations, pads) in cases {
            let geo = attrs(strides, dilations, pads)
                .resolve(&input, &kernel, false)
                .unwrap();
            assert!(geo.plane().is_some());
            let channels = 3;
            let x: Vec<f32> = (0..channels * input[0] * input[1])
                .map(|i| i as f32 + 1.0)
                .collect();
            check_blocks(&geo, &x, channels);
        }
    }
}
