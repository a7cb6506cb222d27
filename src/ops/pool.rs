//! Pooling (MaxPool, AveragePool, LpPool and their Global variants) over NCHW tensors with 1 to
//! 3 spatial dims, sharing Conv's geometry (padding, strides, dilations, auto_pad).
//!
//! Each output plane (one image and channel) is independent; planes run in parallel for large
//! inputs. Averages and Lp norms accumulate in f64, which makes one generic implementation
//! exact enough for every float type.

use super::conv::{Geometry, SpatialAttrs};
use super::conv_layouts::ConvLayout;
use super::util::input;
use super::{BuildCtx, Kernel};
use crate::error::Result;
use crate::tensor::{Storable, Tensor};
use crate::{ensure, op_err, with_dtype};
use infer_kernels::depthwise::PlaneGeometry;
use infer_kernels::depthwise_lanes::Layout;
use infer_kernels::gemm::COL_BLOCK;
use infer_kernels::max_pool::{max_pool_block_rows, max_pool_plane, MaxPoolScratch};
use infer_kernels::parallel;
use infer_kernels::transpose::transpose_strided;
use rayon::prelude::*;

pub(crate) fn build(op: &str, ctx: &BuildCtx) -> Option<Result<Box<dyn Kernel>>> {
    let kind = match op {
        "MaxPool" => PoolKind::Max,
        "AveragePool" => PoolKind::Average,
        "LpPool" => PoolKind::Lp,
        "GlobalMaxPool" => return Some(Ok(Box::new(GlobalPool(PoolKind::Max, 2.0)))),
        "GlobalAveragePool" => return Some(GlobalAverageBlocks::build(ctx)),
        "GlobalLpPool" => {
            return Some(
                lp_order(ctx).map(|p| Box::new(GlobalPool(PoolKind::Lp, p)) as Box<dyn Kernel>),
            )
        }
        _ => return None,
    };
    Some(Pool::build(kind, ctx).map(|k| Box::new(k) as Box<dyn Kernel>))
}

/// Inputs with more elements than this are pooled plane-parallel.
const PARALLEL_MIN_LEN: usize = 1 << 15;

#[derive(Clone, Copy, Debug, PartialEq)]
enum PoolKind {
    Max,
    Average,
    Lp,
}

fn lp_order(ctx: &BuildCtx) -> Result<f64> {
    let p = ctx.attrs().int_or("p", 2)?;
    ensure!(p >= 1, "LpPool order p must be positive, got {p}");
    Ok(p as f64)
}

/// A windowed pool.
#[derive(Debug)]
struct Pool {
    kind: PoolKind,
    spatial: SpatialAttrs,
    kernel: Vec<usize>,
    ceil_mode: bool,
    /// AveragePool: divide by the window size including explicit padding.
    count_include_pad: bool,
    /// LpPool's p.
    p: f64,
    /// MaxPool Indices: whether the node asks for them, and column-major positions within
    /// each plane.
    with_indices: bool,
    column_major_indices: bool,
    /// MaxPool reading channel blocks (NCHW16c, set by `plan::blocked`) into NCHW planes.
    input_blocked: bool,
}

impl Pool {
    fn build(kind: PoolKind, ctx: &BuildCtx) -> Result<Self> {
        let attrs = ctx.attrs();
        let spatial = SpatialAttrs::parse(attrs)?;
        let kernel = spatial
            .kernel_shape
            .clone()
            .ok_or_else(|| op_err!("attribute 'kernel_shape' is required"))?;
        Ok(Pool {
            kind,
            spatial,
            kernel,
            ceil_mode: attrs.int_or("ceil_mode", 0)? != 0,
            count_include_pad: attrs.int_or("count_include_pad", 0)? != 0,
            p: if kind == PoolKind::Lp {
                lp_order(ctx)?
            } else {
                2.0
            },
            with_indices: ctx.node.outputs.get(1).is_some_and(Option::is_some),
            column_major_indices: attrs.int_or("storage_order", 0)? != 0,
            input_blocked: ConvLayout::parse(attrs)?.input == Layout::Blocked,
        })
    }
}

/// The taps of one output window along each dim: input coordinates inside the input, and how
/// many window positions fall inside the explicitly padded input.
struct Window {
    taps: [Vec<usize>; 3],
    padded: [usize; 3],
}

impl Window {
    fn new() -> Self {
        Window {
            taps: [Vec::new(), Vec::new(), Vec::new()],
            padded: [0; 3],
        }
    }

    fn set(&mut self, geo: &Geometry, out: [usize; 3]) {
        for (d, (taps, padded)) in self.taps.iter_mut().zip(&mut self.padded).enumerate() {
            taps.clear();
            *padded = 0;
            let limit = geo.input[d] + geo.pad[d] + geo.pad_end[d];
            for k in 0..geo.kernel[d] {
                if out[d] * geo.stride[d] + k * geo.dilation[d] < limit {
                    *padded += 1;
                }
                taps.extend(geo.input_index(d, out[d], k));
            }
        }
    }

    /// Flat in-plane offsets of the window's positions inside the input.
    fn offsets<'a>(&'a self, geo: &'a Geometry) -> impl Iterator<Item = usize> + 'a {
        let [_, h, w] = geo.input;
        self.taps[0].iter().flat_map(move |&d| {
            self.taps[1]
                .iter()
                .flat_map(move |&r| self.taps[2].iter().map(move |&c| (d * h + r) * w + c))
        })
    }
}

/// Runs `f(x_plane, y_plane, plane_index)` for each plane, in parallel when large.
fn for_planes<T: Send + Sync, U: Send>(
    x: &[T],
    in_len: usize,
    y: &mut [U],
    out_len: usize,
    f: impl Fn(&[T], &mut [U], usize) + Sync,
) {
    if in_len == 0 || out_len == 0 {
        return;
    }
    if x.len() > PARALLEL_MIN_LEN {
        parallel::for_each(
            y.par_chunks_mut(out_len)
                .zip(x.par_chunks(in_len))
                .enumerate(),
            |(i, (y, x))| f(x, y, i),
        );
    } else {
        y.chunks_mut(out_len)
            .zip(x.chunks(in_len))
            .enumerate()
            .for_each(|(i, (y, x))| f(x, y, i));
    }
}

/// Output positions of a geometry, as `[d, h, w]`, in row-major order.
fn positions(geo: &Geometry) -> impl Iterator<Item = [usize; 3]> + '_ {
    let [d, h, w] = geo.output;
    (0..d).flat_map(move |a| (0..h).flat_map(move |b| (0..w).map(move |c| [a, b, c])))
}

impl Pool {
    fn max<T: Storable + PartialOrd>(
        &self,
        x: &Tensor,
        geo: &Geometry,
        out_shape: Vec<usize>,
        with_indices: bool,
    ) -> Result<Vec<Tensor>> {
        let xs = x.as_slice::<T>()?;
        let (in_len, out_len) = (geo.input_len(), geo.output_len());
        let mut y =
            crate::tensor::filled_vec(crate::tensor::checked_numel(&out_shape)?, T::default())?;
        let mut idx = vec![0i64; if with_indices { y.len() } else { 0 }];
        let [id, ih, iw] = geo.input;
        // Indices count in the input's element order, or column-major within the plane.
        let index_of = |off: usize| -> usize {
            if self.column_major_indices {
                let (d, r, c) = (off / (ih * iw), off / iw % ih, off % iw);
                (c * ih + r) * id + d
            } else {
                off
            }
        };
        let pool_plane = |x: &[T], y: &mut [T], mut indices: Option<&mut [i64]>, plane: usize| {
            let mut win = Window::new();
            for (o, pos) in positions(geo).enumerate() {
                win.set(geo, pos);
                let mut best: Option<(T, usize)> = None;
                for off in win.offsets(geo) {
                    let v = x[off];
                    if best.is_none_or(|(b, _)| v > b) {
                        best = Some((v, off));
                    }
                }
                // An all-padding window (possible only with huge pads) yields 0.
                let (v, off) = best.unwrap_or((T::default(), 0));
                y[o] = v;
                if let Some(ix) = indices.as_deref_mut() {
                    ix[o] = (plane * in_len + index_of(off)) as i64;
                }
            }
        };
        if with_indices {
            // Indices need a second output slice; pair the chunks up (sequentially: rare).
            if in_len > 0 && out_len > 0 {
                let planes = y.chunks_mut(out_len).zip(idx.chunks_mut(out_len));
                for (i, ((y, ix), x)) in planes.zip(xs.chunks(in_len)).enumerate() {
                    pool_plane(x, y, Some(ix), i);
                }
            }
        } else {
            for_planes(xs, in_len, &mut y, out_len, |x, y, i| {
                pool_plane(x, y, None, i)
            });
        }
        let mut outs = vec![Tensor::from_vec(out_shape.clone(), y)?];
        if with_indices {
            outs.push(Tensor::from_vec(out_shape, idx)?);
        }
        Ok(outs)
    }

    /// The f32 fast path: windows are accumulated row by row, one kernel tap at a time, so the
    /// inner loops run over contiguous (or evenly strided) output and input rows.
    fn pool_f32(&self, x: &Tensor, geo: &Geometry, out_shape: Vec<usize>) -> Result<Vec<Tensor>> {
        let xs = x.as_slice::<f32>()?;
        let mut y = crate::tensor::filled_vec(crate::tensor::checked_numel(&out_shape)?, 0.0f32)?;
        // Per dim and output position: taps inside the input, and inside the padded input.
        let counts: [Vec<(usize, usize)>; 3] = std::array::from_fn(|d| {
            let limit = geo.input[d] + geo.pad[d] + geo.pad_end[d];
            (0..geo.output[d])
                .map(|o| {
                    let taps = 0..geo.kernel[d];
                    let inside = taps
                        .clone()
                        .filter(|&k| geo.input_index(d, o, k).is_some())
                        .count();
                    let padded = taps
                        .filter(|&k| o * geo.stride[d] + k * geo.dilation[d] < limit)
                        .count();
                    (inside, padded)
                })
                .collect()
        });
        let (kind, p) = (self.kind, self.p as f32);
        let [_, oh_n, ow_n] = geo.output;
        let [_, h_n, w_n] = geo.input;
        let [kd_n, kh_n, kw_n] = geo.kernel;
        let sw = geo.stride[2];
        for_planes(xs, geo.input_len(), &mut y, geo.output_len(), |x, y, _| {
            for (row_idx, row) in y.chunks_exact_mut(ow_n).enumerate() {
                let (od, oh) = (row_idx / oh_n, row_idx % oh_n);
                row.fill(if kind == PoolKind::Max {
                    f32::NEG_INFINITY
                } else {
                    0.0
                });
                for kd in 0..kd_n {
                    let Some(id) = geo.input_index(0, od, kd) else {
                        continue;
                    };
                    for kh in 0..kh_n {
                        let Some(ih) = geo.input_index(1, oh, kh) else {
                            continue;
                        };
                        let src = &x[(id * h_n + ih) * w_n..(id * h_n + ih + 1) * w_n];
                        for kw in 0..kw_n {
                            let valid = geo.valid_outputs(kw);
                            if valid.is_empty() {
                                continue;
                            }
                            let first = valid.start * sw + kw * geo.dilation[2] - geo.pad[2];
                            let pairs = row[valid].iter_mut().zip(src[first..].iter().step_by(sw));
                            match kind {
                                PoolKind::Max => pairs.for_each(|(o, &v)| *o = o.max(v)),
                                PoolKind::Average => pairs.for_each(|(o, &v)| *o += v),
                                PoolKind::Lp if p == 2.0 => pairs.for_each(|(o, &v)| *o += v * v),
                                PoolKind::Lp => pairs.for_each(|(o, &v)| *o += v.abs().powf(p)),
                            }
                        }
                    }
                }
                match kind {
                    PoolKind::Max => {}
                    PoolKind::Average => {
                        let pick =
                            |c: (usize, usize)| if self.count_include_pad { c.1 } else { c.0 };
                        let outer = pick(counts[0][od]) * pick(counts[1][oh]);
                        for (o, &c) in row.iter_mut().zip(&counts[2]) {
                            let n = outer * pick(c);
                            *o = if n == 0 { 0.0 } else { *o / n as f32 };
                        }
                    }
                    PoolKind::Lp => row.iter_mut().for_each(|o| *o = o.powf(1.0 / p)),
                }
            }
        });
        Ok(vec![Tensor::from_vec(out_shape, y)?])
    }

    fn average_or_lp<T: Storable>(
        &self,
        x: &Tensor,
        geo: &Geometry,
        out_shape: Vec<usize>,
    ) -> Result<Vec<Tensor>> {
        let xs = x.as_slice::<T>()?;
        let mut y =
            crate::tensor::filled_vec(crate::tensor::checked_numel(&out_shape)?, T::default())?;
        let p = self.p;
        for_planes(xs, geo.input_len(), &mut y, geo.output_len(), |x, y, _| {
            let mut win = Window::new();
            for (o, pos) in positions(geo).enumerate() {
                win.set(geo, pos);
                y[o] = T::from_f64(if self.kind == PoolKind::Lp {
                    win.offsets(geo)
                        .map(|i| x[i].to_f64().abs().powf(p))
                        .sum::<f64>()
                        .powf(1.0 / p)
                } else {
                    let sum: f64 = win.offsets(geo).map(|i| x[i].to_f64()).sum();
                    let count = if self.count_include_pad {
                        win.padded.iter().product::<usize>()
                    } else {
                        win.taps.iter().map(Vec::len).product::<usize>()
                    };
                    if count == 0 {
                        0.0
                    } else {
                        sum / count as f64
                    }
                });
            }
        });
        Ok(vec![Tensor::from_vec(out_shape, y)?])
    }
}

impl Kernel for Pool {
    fn run(&self, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>> {
        let x = input(inputs, 0)?;
        if self.input_blocked {
            return self.max_pool_blocked(x);
        }
        let s = x.shape();
        ensure!(
            s.len() >= 3,
            "input must be [N, C, spatial...], got shape {s:?}"
        );
        let geo = self
            .spatial
            .resolve(&s[2..], &self.kernel, self.ceil_mode)?;
        let mut out_shape = s[..2].to_vec();
        out_shape.extend_from_slice(geo.output_dims());
        if x.dtype() == crate::DType::F32 && !(self.kind == PoolKind::Max && self.with_indices) {
            if let (PoolKind::Max, Some(plane)) = (self.kind, geo.plane()) {
                return max_pool_planes(x, &geo, &plane, out_shape);
            }
            return self.pool_f32(x, &geo, out_shape);
        }
        match self.kind {
            PoolKind::Max => {
                with_dtype!(x.dtype(), T, {
                    self.max::<T>(x, &geo, out_shape, self.with_indices)
                })
            }
            _ => {
                ensure!(
                    x.dtype().is_float(),
                    "{:?} pooling needs a float input, got {}",
                    self.kind,
                    x.dtype()
                );
                with_dtype!(x.dtype(), T, {
                    self.average_or_lp::<T>(x, &geo, out_shape)
                })
            }
        }
    }
}

impl Pool {
    /// MaxPool of an f32 NCHW16c input into NCHW planes: each channel block pooled cell by
    /// cell (one vector per cell), then transposed into its 16 planes. A stem that writes
    /// blocks from its patches (SqueezeNet's, ResNet's) hands them straight to its pool.
    fn max_pool_blocked(&self, x: &Tensor) -> Result<Vec<Tensor>> {
        let &[n, blocks, h, w, COL_BLOCK] = x.shape() else {
            return Err(op_err!(
                "a channel-blocked input must be [N, C/16, H, W, 16], got shape {:?}",
                x.shape()
            ));
        };
        ensure!(
            self.kind == PoolKind::Max && !self.with_indices && self.kernel.len() == 2,
            "only a 2-D MaxPool without indices reads channel blocks"
        );
        let geo = self
            .spatial
            .resolve(&[h, w], &self.kernel, self.ceil_mode)?;
        let plane = geo.plane().ok_or_else(|| op_err!("not a 2-D pooling"))?;
        let xs = x.as_slice::<f32>()?;
        let [oh, ow] = plane.output;
        let out_shape = vec![n, blocks * COL_BLOCK, oh, ow];
        let mut y = crate::tensor::spare::f32_output(crate::tensor::checked_numel(&out_shape)?)?;
        let (in_len, out_len) = (h * w * COL_BLOCK, oh * ow * COL_BLOCK);
        if in_len > 0 && out_len > 0 {
            parallel::for_each(
                y.par_chunks_mut(out_len)
                    .zip(xs.par_chunks(in_len))
                    .with_min_len(PARALLEL_MIN_LEN.div_ceil(in_len)),
                |(y, x)| {
                    // A strip of output rows at a time, its cells moved into the planes while
                    // still in L1. A thread's cells are kept between runs: allocated per call,
                    // they were page-faulted in on every run.
                    let strip = STRIP_CELLS.div_ceil(ow).max(1);
                    BLOCK_CELLS.with(|cell| {
                        let mut cells = cell.take();
                        cells.resize(strip * ow * COL_BLOCK, 0.0);
                        for r0 in (0..oh).step_by(strip) {
                            let rows = r0..(r0 + strip).min(oh);
                            let positions = rows.len() * ow;
                            let cells = &mut cells[..positions * COL_BLOCK];
                            max_pool_block_rows(&plane, x, rows, cells);
                            let dst = &mut y[r0 * ow..];
                            transpose_strided(cells, COL_BLOCK, positions, COL_BLOCK, dst, oh * ow);
                        }
                        cell.set(cells);
                    })
                },
            );
        } else {
            // Nothing to take a maximum of: zeros, as the planes path gives.
            y.fill(0.0);
        }
        Ok(vec![y.into_tensor(out_shape)?])
    }
}

/// Output cells per strip of a blocked pool: 32 KiB of cells, in L1 with their input rows'
/// reduction.
const STRIP_CELLS: usize = 512;

thread_local! {
    static PLANE_BUF: std::cell::Cell<MaxPoolScratch> =
        const { std::cell::Cell::new(MaxPoolScratch::new()) };
    static BLOCK_CELLS: std::cell::Cell<Vec<f32>> = const { std::cell::Cell::new(Vec::new()) };
}

/// f32 max pooling of 1-D/2-D planes, a plane at a time (`infer_kernels::max_pool`).
fn max_pool_planes(
    x: &Tensor,
    geo: &Geometry,
    plane: &PlaneGeometry,
    out_shape: Vec<usize>,
) -> Result<Vec<Tensor>> {
    let xs = x.as_slice::<f32>()?;
    // Every element is written: each output plane by its plane kernel.
    let mut y = crate::tensor::spare::f32_output(crate::tensor::checked_numel(&out_shape)?)?;
    if geo.input_len() == 0 {
        // No plane to run over (and nothing to take a maximum of): zeros, as before.
        y.fill(0.0);
    }
    for_planes(xs, geo.input_len(), &mut y, geo.output_len(), |x, y, _| {
        PLANE_BUF.with(|cell| {
            let mut buf = cell.take();
            max_pool_plane(plane, x, y, &mut buf);
            cell.set(buf);
        })
    });
    Ok(vec![y.into_tensor(out_shape)?])
}

/// A pool over all spatial dims: `[N, C, ...] → [N, C, 1, ...]`. The f64 is LpPool's p.
#[derive(Debug)]
struct GlobalPool(PoolKind, f64);

impl GlobalPool {
    /// GlobalAveragePool of an f32 tensor: vectorized f32 plane sums (the generic path sums in
    /// f64, a conversion per element, and was 2.5× slower than onnxruntime on
    /// efficientnet_b0's squeeze-and-excitation blocks).
    fn average_f32(&self, x: &Tensor) -> Result<Tensor> {
        let (plane, shape) = Self::planes(x)?;
        let xs = x.as_slice::<f32>()?;
        let mut y = vec![0.0f32; xs.len() / plane];
        let scale = 1.0 / plane as f32;
        for_planes(xs, plane, &mut y, 1, |x, y, _| {
            y[0] = infer_kernels::reduce::sum(x) * scale;
        });
        Tensor::from_vec(shape, y)
    }

    /// The elements per plane of `x` (`[N, C, ...]`) and the pooled shape `[N, C, 1, ...]`.
    fn planes(x: &Tensor) -> Result<(usize, Vec<usize>)> {
        let s = x.shape();
        let plane: usize = s[2..].iter().product();
        ensure!(
            plane > 0,
            "global pooling over an empty spatial extent {s:?}"
        );
        let mut shape = s.to_vec();
        shape[2..].iter_mut().for_each(|d| *d = 1);
        Ok((plane, shape))
    }

    fn pool<T: Storable + PartialOrd>(&self, x: &Tensor) -> Result<Tensor> {
        let (plane, shape) = Self::planes(x)?;
        let xs = x.as_slice::<T>()?;
        let mut y = vec![T::default(); xs.len() / plane];
        let p = self.1;
        for_planes(xs, plane, &mut y, 1, |x, y, _| {
            y[0] = match self.0 {
                PoolKind::Max => x
                    .iter()
                    .copied()
                    .fold(x[0], |m, v| if v > m { v } else { m }),
                PoolKind::Average => T::from_f64(sum_f64(x) / x.len() as f64),
                PoolKind::Lp => T::from_f64(
                    x.iter()
                        .map(|v| v.to_f64().abs().powf(p))
                        .sum::<f64>()
                        .powf(1.0 / p),
                ),
            };
        });
        Tensor::from_vec(shape, y)
    }
}

/// `Σ x` in f64, over 16 independent partial sums: one running sum is a chain of dependent
/// adds (one element per add latency), which made global average pooling the third most costly
/// op of efficientnet_b0; partial sums let the adds vectorize and overlap.
fn sum_f64<T: Storable>(x: &[T]) -> f64 {
    let mut acc = [0.0f64; 16];
    let chunks = x.chunks_exact(16);
    let rest: f64 = chunks.remainder().iter().map(|v| v.to_f64()).sum();
    for c in chunks {
        for (a, v) in acc.iter_mut().zip(c) {
            *a += v.to_f64();
        }
    }
    acc.iter().sum::<f64>() + rest
}

/// GlobalAveragePool, whose input the planner may hand over in channel blocks
/// (`plan::blocked`: EfficientNet's squeeze-and-excitation pools read the depthwise outputs
/// their block also projects); its output is NCHW either way.
#[derive(Debug)]
struct GlobalAverageBlocks;

impl GlobalAverageBlocks {
    fn build(ctx: &BuildCtx) -> Result<Box<dyn Kernel>> {
        Ok(
            if ConvLayout::parse(ctx.attrs())?.input == Layout::Blocked {
                Box::new(GlobalAverageBlocks)
            } else {
                Box::new(GlobalPool(PoolKind::Average, 2.0))
            },
        )
    }
}

impl Kernel for GlobalAverageBlocks {
    fn run(&self, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>> {
        let x = input(inputs, 0)?;
        let &[n, blocks, h, w, COL_BLOCK] = x.shape() else {
            return Err(op_err!(
                "a channel-blocked input must be [N, C/{COL_BLOCK}, H, W, {COL_BLOCK}], got {:?}",
                x.shape()
            ));
        };
        let cells = h * w;
        ensure!(cells > 0, "global pooling over an empty spatial extent");
        let xs = x.as_slice::<f32>()?;
        let mut y = vec![0.0f32; n * blocks * COL_BLOCK];
        let scale = 1.0 / cells as f32;
        // Each block's cells summed lane by lane, 16 channels at a time.
        for_planes(xs, COL_BLOCK * cells, &mut y, COL_BLOCK, |x, y, _| {
            let sums = infer_kernels::reduce::sum_lanes(x);
            y.iter_mut().zip(sums).for_each(|(y, s)| *y = s * scale);
        });
        Ok(vec![Tensor::from_vec(
            vec![n, blocks * COL_BLOCK, 1, 1],
            y,
        )?])
    }
}

impl Kernel for GlobalPool {
    fn run(&self, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>> {
        let x = input(inputs, 0)?;
        ensure!(
            x.rank() >= 3,
            "input must be [N, C, spatial...], got shape {:?}",
            x.shape()
        );
        ensure!(
            self.0 == PoolKind::Max || x.dtype().is_float(),
            "global {:?} pooling needs a float input, got {}",
            self.0,
            x.dtype()
        );
        if self.0 == PoolKind::Average && x.dtype() == crate::DType::F32 {
            return Ok(vec![self.average_f32(x)?]);
        }
        with_dtype!(x.dtype(), T, { Ok(vec![self.pool::<T>(x)?]) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ir::{Attr, Attrs, Node};

    /// Runs `op` with both outputs (MaxPool's Indices) requested.
    fn run_op(op: &str, attrs: &[(&str, Attr)], x: &Tensor) -> Result<Vec<Tensor>> {
        run_op_with_outputs(op, attrs, x, 2)
    }

    fn run_op_with_outputs(
        op: &str,
        attrs: &[(&str, Attr)],
        x: &Tensor,
        outputs: usize,
    ) -> Result<Vec<Tensor>> {
        let node = Node {
            name: "n".into(),
            op_type: op.into(),
            domain: String::new(),
            inputs: vec![Some(0)],
            outputs: (1..=outputs).map(Some).collect(),
            attrs: Attrs(
                attrs
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.clone()))
                    .collect(),
            ),
        };
        let ctx = BuildCtx {
            node: &node,
            opset: 19,
            constants: vec![],
            options: Default::default(),
        };
        build(op, &ctx).expect("claimed")?.run(&[Some(x)])
    }

    fn ints(v: &[i64]) -> Attr {
        Attr::Ints(v.to_vec())
    }

    fn grid() -> Tensor {
        // 1×1×4×4 with values 1..16.
        Tensor::from_vec(vec![1, 1, 4, 4], (1..=16).map(|v| v as f32).collect()).unwrap()
    }

    fn assert_close(t: &Tensor, shape: &[usize], want: &[f32]) {
        assert_eq!(t.shape(), shape);
        let got = t.as_slice::<f32>().unwrap();
        for (g, w) in got.iter().zip(want) {
            assert!((g - w).abs() < 1e-5, "got {got:?}, want {want:?}");
        }
    }

    #[test]
    fn max_pool_with_indices_and_storage_order() {
        let attrs = [("kernel_shape", ints(&[2, 2])), ("strides", ints(&[2, 2]))];
        let out = run_op("MaxPool", &attrs, &grid()).unwrap();
        assert_close(&out[0], &[1, 1, 2, 2], &[6.0, 8.0, 14.0, 16.0]);
        assert_eq!(out[1].as_slice::<i64>().unwrap(), &[5, 7, 13, 15]);
        let col = [
            ("kernel_shape", ints(&[2, 2])),
            ("strides", ints(&[2, 2])),
            ("storage_order", Attr::Int(1)),
        ];
        let out = run_op("MaxPool", &col, &grid()).unwrap();
        // Row 1, col 1 is column-major index 1·4 + 1 = 5; (1, 3) → 13; (3, 1) → 7; (3, 3) → 15.
        assert_eq!(out[1].as_slice::<i64>().unwrap(), &[5, 13, 7, 15]);
    }

    #[test]
    fn max_pool_reads_channel_blocks_into_planes() {
        use crate::ops::conv_layouts::{layout_code, INPUT_ATTR};
        // Two blocks of 16 channels, with a NaN: the planes path is the reference. The
        // larger map's output (690 positions) is pooled in two strips of rows.
        let c = 32;
        let mut xb = None;
        for (h, w) in [(9, 11), (61, 47)] {
            let mut data: Vec<f32> = (0..c * h * w)
                .map(|i| ((i * 37) % 103) as f32 - 50.0)
                .collect();
            data[5] = f32::NAN;
            let x = Tensor::from_vec(vec![1, c, h, w], data.clone()).unwrap();
            let mut blocks = vec![0.0; data.len()];
            for (i, &v) in data.iter().enumerate() {
                let (ch, p) = (i / (h * w), i % (h * w));
                blocks[(ch / 16 * h * w + p) * 16 + ch % 16] = v;
            }
            let blocked = Tensor::from_vec(vec![1, c / 16, h, w, 16], blocks).unwrap();
            for (pads, ceil) in [([0, 0, 0, 0], 1), ([1, 1, 1, 1], 0)] {
                let mut attrs = vec![
                    ("kernel_shape", ints(&[3, 3])),
                    ("strides", ints(&[2, 2])),
                    ("pads", ints(&pads)),
                    ("ceil_mode", Attr::Int(ceil)),
                ];
                let want = run_op_with_outputs("MaxPool", &attrs, &x, 1).unwrap();
                attrs.push((INPUT_ATTR, Attr::Int(layout_code(Layout::Blocked))));
                let got = run_op_with_outputs("MaxPool", &attrs, &blocked, 1).unwrap();
                assert_eq!(got[0].shape(), want[0].shape());
                let (g, e) = (
                    got[0].as_slice::<f32>().unwrap(),
                    want[0].as_slice::<f32>().unwrap(),
                );
                assert!(
                    g.iter().zip(e).all(|(a, b)| a.to_bits() == b.to_bits()),
                    "{h}x{w} {pads:?}"
                );
            }
            xb = Some(blocked);
        }
        let xb = xb.unwrap();
        // With indices it refuses blocks.
        let attrs = [
            ("kernel_shape", ints(&[3, 3])),
            (INPUT_ATTR, Attr::Int(layout_code(Layout::Blocked))),
        ];
        assert!(run_op("MaxPool", &attrs, &xb).is_err());
    }

    #[test]
    fn global_average_pool_reads_channel_blocks() {
        // Two images of two blocks; 7×7 and 61×47 maps (the latter pooled block-parallel).
        use crate::ops::conv_layouts::{layout_code, INPUT_ATTR};
        let (n, c) = (2, 32);
        for (h, w) in [(7, 7), (61, 47)] {
            let data: Vec<f32> = (0..n * c * h * w)
                .map(|i| ((i * 37) % 103) as f32 / 10.0 - 5.0)
                .collect();
            let x = Tensor::from_vec(vec![n, c, h, w], data.clone()).unwrap();
            let mut blocks = vec![0.0; data.len()];
            for (i, &v) in data.iter().enumerate() {
                let (image, ch, p) = (i / (c * h * w), i / (h * w) % c, i % (h * w));
                blocks[((image * c / 16 + ch / 16) * h * w + p) * 16 + ch % 16] = v;
            }
            let blocked = Tensor::from_vec(vec![n, c / 16, h, w, 16], blocks).unwrap();
            let want = run_op_with_outputs("GlobalAveragePool", &[], &x, 1).unwrap();
            let attrs = [(INPUT_ATTR, Attr::Int(layout_code(Layout::Blocked)))];
            let got = run_op_with_outputs("GlobalAveragePool", &attrs, &blocked, 1).unwrap();
            assert_eq!(got[0].shape(), &[n, c, 1, 1]);
            let (g, e) = (
                got[0].as_slice::<f32>().unwrap(),
                want[0].as_slice::<f32>().unwrap(),
            );
            for (i, (a, b)) in g.iter().zip(e).enumerate() {
                assert!((a - b).abs() <= 1e-5 * (1.0 + b.abs()), "{h}x{w} [{i}]");
            }
            // Planes handed over as blocks are an error, not a misread.
            assert!(run_op_with_outputs("GlobalAveragePool", &attrs, &x, 1).is_err());
        }
    }

    #[test]
    fn max_pool_ceil_mode_pads_and_dilations() {
        // ceil_mode: 4 wide, kernel 3, stride 2 → ceil(1/2)+1 = 2 windows: [1..3], [3..4].
        let attrs = [
            ("kernel_shape", ints(&[3, 3])),
            ("strides", ints(&[2, 2])),
            ("ceil_mode", Attr::Int(1)),
        ];
        let out = run_op("MaxPool", &attrs, &grid()).unwrap();
        assert_close(&out[0], &[1, 1, 2, 2], &[11.0, 12.0, 15.0, 16.0]);
        // pads 1 all round, kernel 2, stride 1, dilation 2: output i reads input rows/cols
        // {i-1, i+1}, so the maxima sit at rows/cols [1, 2, 3, 2].
        let attrs = [
            ("kernel_shape", ints(&[2, 2])),
            ("pads", ints(&[1, 1, 1, 1])),
            ("dilations", ints(&[2, 2])),
        ];
        let out = run_op("MaxPool", &attrs, &grid()).unwrap();
        assert_close(
            &out[0],
            &[1, 1, 4, 4],
            &[
                6., 7., 8., 7., 10., 11., 12., 11., 14., 15., 16., 15., 10., 11., 12., 11.,
            ],
        );
        // Integer input keeps its type.
        let xi = Tensor::from_vec(vec![1, 1, 3], vec![3u8, 9, 4]).unwrap();
        let out = run_op("MaxPool", &[("kernel_shape", ints(&[2]))], &xi).unwrap();
        assert_eq!(out[0].as_slice::<u8>().unwrap(), &[9, 9]);
    }

    #[test]
    fn average_pool_padding_counts() {
        // 3×3 windows, pads 1: the corner window holds 1, 2, 5, 6 (sum 14) of 9 positions.
        let base = [
            ("kernel_shape", ints(&[3, 3])),
            ("pads", ints(&[1, 1, 1, 1])),
            ("strides", ints(&[3, 3])),
        ];
        let out = run_op("AveragePool", &base, &grid()).unwrap();
        // The others hold 3, 4, 7, 8 / 9, 10, 13, 14 / 11, 12, 15, 16.
        assert_close(&out[0], &[1, 1, 2, 2], &[3.5, 5.5, 11.5, 13.5]);
        let mut incl = base.to_vec();
        incl.push(("count_include_pad", Attr::Int(1)));
        let out = run_op("AveragePool", &incl, &grid()).unwrap();
        assert_close(
            &out[0],
            &[1, 1, 2, 2],
            &[14.0 / 9.0, 22.0 / 9.0, 46.0 / 9.0, 6.0],
        );
    }

    #[test]
    fn lp_and_global_pools() {
        let x = Tensor::from_vec(vec![1, 1, 4], vec![3.0f32, 4.0, 0.0, -5.0]).unwrap();
        let out = run_op(
            "LpPool",
            &[("kernel_shape", ints(&[2])), ("strides", ints(&[2]))],
            &x,
        )
        .unwrap();
        assert_close(&out[0], &[1, 1, 2], &[5.0, 5.0]);
        let g = grid();
        assert_close(
            &run_op("GlobalAveragePool", &[], &g).unwrap()[0],
            &[1, 1, 1, 1],
            &[8.5],
        );
        assert_close(
            &run_op("GlobalMaxPool", &[], &g).unwrap()[0],
            &[1, 1, 1, 1],
            &[16.0],
        );
        let y = run_op("GlobalLpPool", &[("p", Attr::Int(1))], &x).unwrap();
        assert_close(&y[0], &[1, 1, 1], &[12.0]);
        let f64x = x.cast(crate::DType::F64).unwrap();
        let y = run_op("GlobalAveragePool", &[], &f64x).unwrap();
        assert_eq!(y[0].as_slice::<f64>().unwrap(), &[0.5]);
    }

    #[test]
    fn f32_fast_path_matches_generic_windows() {
        // The generic window walk (used for f64 and for MaxPool with indices) is an
        // independent implementation: both must agree on padded, dilated, ceil-mode windows.
        let x = Tensor::from_vec(
            vec![2, 3, 7, 9],
            (0..378)
                .map(|i| ((i * 37 % 101) as f32 - 50.0) / 7.0)
                .collect(),
        )
        .unwrap();
        let x64 = x.cast(crate::DType::F64).unwrap();
        let geometry = [
            ("kernel_shape", ints(&[3, 2])),
            ("pads", ints(&[1, 0, 2, 1])),
            ("strides", ints(&[2, 3])),
            ("dilations", ints(&[1, 2])),
            ("ceil_mode", Attr::Int(1)),
        ];
        for (op, extra) in [
            ("MaxPool", None),
            ("AveragePool", None),
            ("AveragePool", Some(("count_include_pad", Attr::Int(1)))),
            ("LpPool", Some(("p", Attr::Int(3)))),
        ] {
            let mut attrs = geometry.to_vec();
            attrs.extend(extra);
            let fast = run_op_with_outputs(op, &attrs, &x, 1).unwrap();
            let slow = run_op(op, &attrs, &x64).unwrap();
            let want: Vec<f32> = slow[0]
                .as_slice::<f64>()
                .unwrap()
                .iter()
                .map(|&v| v as f32)
                .collect();
            assert_close(&fast[0], slow[0].shape(), &want);
        }
    }

    #[test]
    fn bad_pool_inputs_are_errors() {
        assert!(run_op("MaxPool", &[], &grid()).is_err());
        let big = [("kernel_shape", ints(&[5, 5]))];
        assert!(run_op("MaxPool", &big, &grid()).is_err());
        let flat = Tensor::from_vec(vec![4], vec![1.0f32; 4]).unwrap();
        assert!(run_op("GlobalMaxPool", &[], &flat).is_err());
    }
}
