//! A stem and the max pool after it as one step (SqueezeNet's and ResNet's first two layers):
//! the stem's channel blocks are computed a few rows at a time and pooled into the NCHW
//! output while they are in cache, instead of the whole map (3 MB on those nets) being
//! written to memory and read back by the pool.
//!
//! `plan::blocked` fuses them: the Conv, which writes blocks, takes over the pool's output
//! and carries its attributes prefixed with [`POOL_PREFIX`] (`pool:kernel_shape`, …). Each
//! task pools a band of output rows, a few rows at a time, through a window of the stem
//! rows those reach: the rows they share with the next few are kept, only the new ones
//! computed. Bands meet on a stem row or two, computed by both. Where the stem kernel does
//! not serve the convolution, its whole output is computed first and pooled the same way.

use super::conv::SpatialAttrs;
use crate::error::Result;
use crate::ir::{Attr, Attrs};
use crate::op_err;
use infer_kernels::depthwise::PlaneGeometry;
use infer_kernels::gemm::COL_BLOCK;
use infer_kernels::max_pool::max_pool_block_rows;
use infer_kernels::parallel;
use infer_kernels::stem::StemRows;
use infer_kernels::transpose::transpose_strided;
use rayon::prelude::*;
use std::cell::Cell;
use std::ops::Range;

/// The prefix of the pool's attributes on the fused Conv.
pub(crate) const POOL_PREFIX: &str = "pool:";

/// The max pool after a convolution: its window and rounding.
#[derive(Clone, Debug)]
pub(super) struct PoolAfter {
    spatial: SpatialAttrs,
    kernel: Vec<usize>,
    ceil_mode: bool,
}

impl PoolAfter {
    /// The pool a fused Conv's attributes describe, if any.
    pub(super) fn parse(attrs: &Attrs) -> Result<Option<PoolAfter>> {
        let pool = Attrs(
            attrs
                .0
                .iter()
                .filter_map(|(k, v)| Some((k.strip_prefix(POOL_PREFIX)?.to_string(), v.clone())))
                .collect::<std::collections::HashMap<String, Attr>>(),
        );
        if pool.0.is_empty() {
            return Ok(None);
        }
        let spatial = SpatialAttrs::parse(&pool)?;
        let kernel = spatial
            .kernel_shape
            .clone()
            .ok_or_else(|| op_err!("the fused pool has no 'kernel_shape'"))?;
        Ok(Some(PoolAfter {
            spatial,
            kernel,
            ceil_mode: pool.int_or("ceil_mode", 0)? != 0,
        }))
    }

    /// The pool's geometry over a convolution output of `[oh, ow]`.
    pub(super) fn geometry(&self, conv_output: [usize; 2]) -> Result<PlaneGeometry> {
        self.spatial
            .resolve(&conv_output, &self.kernel, self.ceil_mode)?
            .plane()
            .ok_or_else(|| op_err!("the fused pool is not 2-D"))
    }
}

/// Where the convolution's rows come from.
pub(super) enum ConvRows<'a> {
    /// Computed by the stem kernel as the pooled rows reach them.
    Stem(Box<StemRows<'a>>),
    /// The image's whole output, computed before: `[M/16][OH][OW][16]`.
    Computed(&'a [f32]),
}

/// Pools one image's convolution output (`blocks` channel blocks, `rows`) by `pool` (whose
/// input is the convolution's output) into the image's NCHW planes `y`.
pub(super) fn pool_image(rows: &ConvRows, blocks: usize, pool: &PlaneGeometry, y: &mut [f32]) {
    let [ph, pw] = pool.output;
    let plane_len = ph * pw;
    if plane_len == 0 {
        return;
    }
    // A few bands per thread, so that an uneven split evens out; each costs its edge rows
    // twice, so fewer than the stem's own.
    let band = ph.div_ceil(2 * parallel::threads()).max(1);
    let mut bands: Vec<Vec<&mut [f32]>> = (0..ph.div_ceil(band)).map(|_| Vec::new()).collect();
    for plane in y.chunks_exact_mut(plane_len) {
        for (i, part) in plane.chunks_mut(band * pw).enumerate() {
            bands[i].push(part);
        }
    }
    parallel::for_each(bands.into_par_iter().enumerate(), |(i, mut planes)| {
        BUFS.with(|cell| {
            let mut bufs = cell.take();
            let pooled = i * band..ph.min((i + 1) * band);
            pool_band(rows, blocks, pool, pooled, &mut planes, &mut bufs);
            cell.set(bufs);
        })
    });
}

/// Pools the rows `pooled` into their part of every plane (`planes[c]` holds channel `c`'s
/// rows `pooled`), `STEP` pooled rows at a time.
fn pool_band(
    rows: &ConvRows,
    blocks: usize,
    pool: &PlaneGeometry,
    pooled: Range<usize>,
    planes: &mut [&mut [f32]],
    bufs: &mut Bufs,
) {
    let [oh, ow] = pool.input;
    let pw = pool.output[1];
    let row_len = ow * COL_BLOCK;
    // Stem rows `STEP` pooled rows reach, at most: the window's capacity per block.
    let reach = (pool.kernel[0] - 1) * pool.dilation[0];
    let capacity = ((STEP - 1) * pool.stride[0] + reach + 1).min(oh);
    let mut window = std::mem::take(&mut bufs.window);
    if let ConvRows::Stem(_) = rows {
        if window.len() < blocks * capacity * row_len {
            window.resize(blocks * capacity * row_len, 0.0);
        }
    }
    // The stem rows the window holds, at its start.
    let mut held = 0..0;
    for p in pooled.clone().step_by(STEP) {
        let step = p..pooled.end.min(p + STEP);
        let (needed, geometry) = rows_for(pool, step.clone());
        let source: &[f32] = match rows {
            ConvRows::Stem(stem) => {
                // Keep the rows this pooled row shares with the last, compute the rest.
                let start = needed.start.max(held.start);
                let kept = start..held.end.min(needed.end).max(start);
                if !kept.is_empty() {
                    let from = kept.start - held.start;
                    for block in window.chunks_exact_mut(capacity * row_len) {
                        block.copy_within(from * row_len..(from + kept.len()) * row_len, 0);
                    }
                }
                let new = kept.end.max(needed.start)..needed.end;
                let at = new.start - needed.start;
                let parts = window
                    .chunks_exact_mut(capacity * row_len)
                    .take(blocks)
                    .map(|block| &mut block[at * row_len..(at + new.len()) * row_len])
                    .collect();
                stem.compute(new, parts);
                held = needed.clone();
                &window
            }
            ConvRows::Computed(all) => all,
        };
        let (first, stride) = match rows {
            ConvRows::Stem(_) => (0, capacity),
            ConvRows::Computed(_) => (needed.start, oh),
        };
        let positions = step.len() * pw;
        if bufs.cells.len() < positions * COL_BLOCK {
            bufs.cells.resize(positions * COL_BLOCK, 0.0);
            bufs.lanes.resize(positions * COL_BLOCK, 0.0);
        }
        for (b, channels) in planes.chunks_mut(COL_BLOCK).enumerate().take(blocks) {
            let x = &source[(b * stride + first) * row_len..][..needed.len() * row_len];
            let cells = &mut bufs.cells[..positions * COL_BLOCK];
            max_pool_block_rows(&geometry, x, 0..step.len(), cells);
            let lanes = &mut bufs.lanes[..positions * COL_BLOCK];
            transpose_strided(cells, COL_BLOCK, positions, COL_BLOCK, lanes, positions);
            let r = p - pooled.start;
            for (plane, lane) in channels.iter_mut().zip(lanes.chunks_exact(positions)) {
                plane[r * pw..][..positions].copy_from_slice(lane);
            }
        }
    }
    bufs.window = window;
}

/// Pooled rows computed together: their stem rows (9 for a 3×3 stride-2 pool; 260 KB at
/// 64 channels and 112 columns) stay in L2 between the stem and the pool.
const STEP: usize = 4;

/// The convolution rows the pooled rows `pooled` reach, and the pool's geometry over just
/// those rows (its top padding what is left of the first window above them).
fn rows_for(pool: &PlaneGeometry, pooled: Range<usize>) -> (Range<usize>, PlaneGeometry) {
    let oh = pool.input[0];
    let reach = (pool.kernel[0] - 1) * pool.dilation[0];
    let top = pooled.start * pool.stride[0];
    let bottom = (pooled.end - 1) * pool.stride[0] + reach + 1;
    let first = top.saturating_sub(pool.pad[0]).min(oh);
    let last = bottom.saturating_sub(pool.pad[0]).clamp(first, oh);
    let geometry = PlaneGeometry {
        input: [last - first, pool.input[1]],
        output: [pooled.len(), pool.output[1]],
        // Zero where the window starts inside the map.
        pad: [(first + pool.pad[0]).saturating_sub(top), pool.pad[1]],
        ..*pool
    };
    (first..last, geometry)
}

/// A thread's buffers, kept between runs.
#[derive(Default)]
struct Bufs {
    /// The stem rows a pooled row reaches, `[M/16][capacity][OW][16]`.
    window: Vec<f32>,
    /// A pooled row's cells, and the same as 16 runs of lanes.
    cells: Vec<f32>,
    lanes: Vec<f32>,
}

thread_local! {
    static BUFS: Cell<Bufs> = Cell::new(Bufs::default());
}

#[cfg(test)]
mod tests {
    use super::POOL_PREFIX;
    use crate::ir::Attr;
    use crate::ops::conv::tests::run_op;
    use crate::ops::conv_concat::tests::assert_tensors_close;
    use crate::ops::conv_layouts::OUTPUT_ATTR;
    use crate::tensor::Tensor;

    fn values(n: usize, seed: usize) -> Vec<f32> {
        (0..n)
            .map(|i| ((i * 7919 + seed * 104_729) % 211) as f32 / 105.0 - 1.0)
            .collect()
    }

    /// A stride-2 convolution with Relu writing blocks, its 3×3 stride-2 max pool fused,
    /// against the two run one after the other: `channels` input channels of a `kernel`-side
    /// kernel (3 channels of 3×3 take the stem kernel's rows; 4 of 7×7, 196 taps, are past it
    /// and are computed whole by the GEMM, then pooled band by band).
    fn check(batch: usize, channels: usize, kernel: usize, side: usize) {
        let pad = i64::try_from(kernel / 2).unwrap();
        let x_shape = vec![batch, channels, side, side];
        let x = Tensor::from_vec(x_shape, values(batch * channels * side * side, 1)).unwrap();
        let w_len = 32 * channels * kernel * kernel;
        let w = Tensor::from_vec(vec![32, channels, kernel, kernel], values(w_len, 2)).unwrap();
        let b = Tensor::from_vec(vec![32], values(32, 3)).unwrap();
        let conv_attrs = [
            ("strides", Attr::Ints(vec![2, 2])),
            ("pads", Attr::Ints(vec![pad; 4])),
            ("_activation", Attr::String("Relu".into())),
        ];
        let pool_attrs = [
            ("kernel_shape", Attr::Ints(vec![3, 3])),
            ("strides", Attr::Ints(vec![2, 2])),
            ("pads", Attr::Ints(vec![1; 4])),
        ];
        let inputs = [Some(&x), Some(&w), Some(&b)];
        let conv = run_op("Conv", &conv_attrs, &inputs, true).unwrap();
        let want = run_op("MaxPool", &pool_attrs, &[Some(&conv)], false).unwrap();

        let prefixed: Vec<String> = pool_attrs
            .iter()
            .map(|(k, _)| format!("{POOL_PREFIX}{k}"))
            .collect();
        let mut fused_attrs: Vec<(&str, Attr)> = conv_attrs.to_vec();
        fused_attrs.push((OUTPUT_ATTR, Attr::Int(2)));
        fused_attrs.extend(
            prefixed
                .iter()
                .zip(&pool_attrs)
                .map(|(k, (_, v))| (k.as_str(), v.clone())),
        );
        let got = run_op("Conv", &fused_attrs, &inputs, true).unwrap();
        let what = format!("batch {batch}, {channels} channels, {kernel}×{kernel}");
        assert_tensors_close(&got, &want, &what);
    }

    #[test]
    fn fused_pools_give_what_conv_then_max_pool_give() {
        for batch in [1, 2] {
            check(batch, 3, 3, 37);
            check(batch, 4, 7, 30);
        }
    }
}
