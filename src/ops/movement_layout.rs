//! Ops that rearrange whole blocks: Transpose, Concat, Split, Slice, Tile, Pad, Trilu,
//! DepthToSpace and SpaceToDepth.

use super::strided::{view_tensor, View};
use super::{axis_of, dims_from_i64, filled_vec, for_each_chunk};
use crate::error::Result;
use crate::ops::util::{input, opt_input, strides_of};
use crate::ops::{BuildCtx, Kernel};
use crate::tensor::{checked_numel, Elem, Storable, Tensor};
use crate::{ensure, op_err, with_dtype};

/// Transpose: output axis `i` is input axis `perm[i]` (default: reversed axes).
#[derive(Debug)]
pub(super) struct Transpose {
    perm: Option<Vec<usize>>,
}

impl Transpose {
    pub(super) fn build(ctx: &BuildCtx) -> Result<Box<dyn Kernel>> {
        let perm = ctx.attrs().ints("perm")?.map(dims_from_i64).transpose()?;
        Ok(Box::new(Transpose { perm }))
    }
}

impl Kernel for Transpose {
    fn run(&self, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>> {
        let x = input(inputs, 0)?;
        let perm = match &self.perm {
            Some(p) => p.clone(),
            None => (0..x.rank()).rev().collect(),
        };
        let view = View::permuted(x.shape(), &perm)?;
        let shape = perm.iter().map(|&p| x.shape()[p]).collect();
        Ok(vec![view_tensor(x, &view, shape)?])
    }
}

/// Concat along `axis`.
#[derive(Debug)]
pub(super) struct Concat {
    axis: i64,
}

impl Concat {
    pub(super) fn build(ctx: &BuildCtx) -> Result<Box<dyn Kernel>> {
        // Opset 1 defaulted the axis to 1; it is required since opset 4.
        let axis = match ctx.attrs().int("axis")? {
            Some(a) => a,
            None if ctx.opset < 4 => 1,
            None => return Err(op_err!("Concat needs an 'axis' attribute")),
        };
        Ok(Box::new(Concat { axis }))
    }
}

impl Kernel for Concat {
    fn run(&self, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>> {
        let xs: Vec<&Tensor> = (0..inputs.len())
            .map(|i| input(inputs, i))
            .collect::<Result<_>>()?;
        Ok(vec![concat_tensors(&xs, self.axis)?])
    }
}

/// Concatenates `xs` (same dtype and rank, equal outside `axis`) along `axis`.
pub(crate) fn concat_tensors(xs: &[&Tensor], axis: i64) -> Result<Tensor> {
    let first = *xs
        .first()
        .ok_or_else(|| op_err!("Concat needs at least one input"))?;
    ensure!(first.rank() > 0, "cannot concatenate scalars");
    let axis = axis_of(axis, first.rank())?;
    let mut shape = first.shape().to_vec();
    shape[axis] = 0;
    for x in xs {
        ensure!(
            x.dtype() == first.dtype(),
            "inputs have different types ({} and {})",
            first.dtype(),
            x.dtype()
        );
        let same_other_dims = x.rank() == first.rank()
            && (0..x.rank()).all(|d| d == axis || x.shape()[d] == first.shape()[d]);
        ensure!(
            same_other_dims,
            "shapes {:?} and {:?} differ outside axis {axis}",
            first.shape(),
            x.shape()
        );
        shape[axis] += x.shape()[axis];
    }
    with_dtype!(first.dtype(), T, { concat::<T>(xs, axis, shape) })
}

fn concat<T: Storable>(xs: &[&Tensor], axis: usize, shape: Vec<usize>) -> Result<Tensor> {
    // Each output row (one index of the axes before `axis`) is the inputs' rows side by side.
    let parts: Vec<(&[T], usize)> = xs
        .iter()
        .map(|x| Ok((x.as_slice::<T>()?, x.shape()[axis..].iter().product())))
        .collect::<Result<_>>()?;
    let row: usize = parts.iter().map(|p| p.1).sum();
    // Every element is written: each output row is the inputs' rows side by side.
    let mut out = crate::tensor::spare::output::<T>(checked_numel(&shape)?)?;
    for_each_chunk(&mut out, row, |o, dst| {
        let mut at = 0;
        for &(src, n) in &parts {
            dst[at..at + n].copy_from_slice(&src[o * n..(o + 1) * n]);
            at += n;
        }
    });
    out.into_tensor(shape)
}

/// Split along `axis` into the node's outputs, by explicit sizes (attribute before opset 13,
/// input after), by `num_outputs` (opset 18, last chunk may be smaller), or evenly.
#[derive(Debug)]
pub(super) struct Split {
    axis: i64,
    split: Option<Vec<i64>>,
    outputs: usize,
    uneven: bool,
}

impl Split {
    pub(super) fn build(ctx: &BuildCtx) -> Result<Box<dyn Kernel>> {
        let a = ctx.attrs();
        let num_outputs = a.int("num_outputs")?;
        let outputs = match num_outputs {
            Some(n) => usize::try_from(n)
                .ok()
                .filter(|&n| n > 0)
                .ok_or_else(|| op_err!("num_outputs must be positive, got {n}"))?,
            None => ctx.node.outputs.len(),
        };
        Ok(Box::new(Split {
            axis: a.int_or("axis", 0)?,
            split: a.ints("split")?.map(<[i64]>::to_vec),
            outputs,
            uneven: num_outputs.is_some(),
        }))
    }

    fn sizes(&self, inputs: &[Option<&Tensor>], n: usize) -> Result<Vec<usize>> {
        let k = self.outputs;
        let explicit = match (&self.split, opt_input(inputs, 1)) {
            (Some(s), _) => Some(s.clone()),
            (None, Some(t)) => Some(t.to_i64_vec()?),
            (None, None) => None,
        };
        if let Some(s) = explicit {
            let sizes = dims_from_i64(&s)?;
            ensure!(
                sizes.len() == k && sizes.iter().sum::<usize>() == n,
                "split {s:?} does not cut a dimension of {n} into {k} parts"
            );
            return Ok(sizes);
        }
        ensure!(k > 0, "Split has no outputs");
        if self.uneven {
            let chunk = n.div_ceil(k);
            let last = n
                .checked_sub(chunk * (k - 1))
                .ok_or_else(|| op_err!("cannot split {n} into {k} chunks of {chunk}"))?;
            let mut sizes = vec![chunk; k];
            sizes[k - 1] = last;
            return Ok(sizes);
        }
        ensure!(
            n.is_multiple_of(k),
            "cannot split a dimension of {n} evenly into {k} outputs"
        );
        Ok(vec![n / k; k])
    }
}

impl Kernel for Split {
    fn run(&self, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>> {
        let x = input(inputs, 0)?;
        let axis = axis_of(self.axis, x.rank())?;
        let n = x.shape()[axis];
        let sizes = self.sizes(inputs, n)?;
        split_tensor(x, axis, &sizes)
    }
}

/// Cuts `x` along `axis` into parts of the given sizes (which must sum to its length).
pub(crate) fn split_tensor(x: &Tensor, axis: usize, sizes: &[usize]) -> Result<Vec<Tensor>> {
    ensure!(
        axis < x.rank() && sizes.iter().sum::<usize>() == x.shape()[axis],
        "sizes {sizes:?} do not cut axis {axis} of shape {:?}",
        x.shape()
    );
    with_dtype!(x.dtype(), T, { split::<T>(x, axis, sizes) })
}

fn split<T: Storable>(x: &Tensor, axis: usize, sizes: &[usize]) -> Result<Vec<Tensor>> {
    let src = x.as_slice::<T>()?;
    let inner: usize = x.shape()[axis + 1..].iter().product();
    let row = x.shape()[axis] * inner;
    let outer: usize = x.shape()[..axis].iter().product();
    let mut at = 0;
    sizes
        .iter()
        .map(|&s| {
            let part = s * inner;
            let mut out = Vec::with_capacity(outer * part);
            for o in 0..outer {
                out.extend_from_slice(&src[o * row + at..o * row + at + part]);
            }
            at += part;
            let mut shape = x.shape().to_vec();
            shape[axis] = s;
            Tensor::from_vec(shape, out)
        })
        .collect()
}

/// Slice: attributes `starts`/`ends`/`axes` before opset 10, inputs (plus `steps`) after.
#[derive(Debug)]
pub(super) struct Slice {
    /// Opsets 1-9 took the bounds as attributes.
    attrs: Option<SliceAttrs>,
}

#[derive(Debug)]
struct SliceAttrs {
    starts: Vec<i64>,
    ends: Vec<i64>,
    axes: Option<Vec<i64>>,
}

impl Slice {
    pub(super) fn build(ctx: &BuildCtx) -> Result<Box<dyn Kernel>> {
        let attrs = if ctx.opset < 10 {
            let a = ctx.attrs();
            let req = |name: &str| {
                a.ints(name)?
                    .map(<[i64]>::to_vec)
                    .ok_or_else(|| op_err!("Slice needs the '{name}' attribute"))
            };
            Some(SliceAttrs {
                starts: req("starts")?,
                ends: req("ends")?,
                axes: a.ints("axes")?.map(<[i64]>::to_vec),
            })
        } else {
            None
        };
        Ok(Box::new(Slice { attrs }))
    }
}

impl Kernel for Slice {
    fn run(&self, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>> {
        let x = input(inputs, 0)?;
        let opt_vec = |i| opt_input(inputs, i).map(Tensor::to_i64_vec).transpose();
        let (starts, ends, axes, steps) = match &self.attrs {
            Some(a) => (a.starts.clone(), a.ends.clone(), a.axes.clone(), None),
            None => (
                input(inputs, 1)?.to_i64_vec()?,
                input(inputs, 2)?.to_i64_vec()?,
                opt_vec(3)?,
                opt_vec(4)?,
            ),
        };
        let k = starts.len();
        let axes = axes.unwrap_or_else(|| (0..k as i64).collect());
        let steps = steps.unwrap_or_else(|| vec![1; k]);
        ensure!(
            ends.len() == k && axes.len() == k && steps.len() == k,
            "starts, ends, axes and steps differ in length"
        );
        let in_strides = strides_of(x.shape());
        let mut shape = x.shape().to_vec();
        let mut strides: Vec<isize> = in_strides.iter().map(|&s| s as isize).collect();
        let mut base = 0usize;
        let mut seen = vec![false; x.rank()];
        for i in 0..k {
            let a = axis_of(axes[i], x.rank())?;
            ensure!(!seen[a], "axis {} is sliced twice", axes[i]);
            seen[a] = true;
            let (first, len) = slice_range(starts[i], ends[i], steps[i], shape[a])?;
            shape[a] = len;
            base += first * in_strides[a];
            // A stride only matters when the axis keeps two or more elements, in which case
            // |step| < dim and the product cannot overflow.
            strides[a] = if len > 1 {
                strides[a] * steps[i] as isize
            } else {
                0
            };
        }
        let view = View::new(&shape, &strides, base, x.len())?;
        Ok(vec![view_tensor(x, &view, shape)?])
    }
}

/// The first index and length of `start:end:step` over a dimension of `n`, clamped as ONNX
/// specifies (out-of-range and INT_MAX-style bounds are clamped, not errors).
fn slice_range(start: i64, end: i64, step: i64, n: usize) -> Result<(usize, usize)> {
    ensure!(step != 0, "slice step cannot be 0");
    let (n, step) = (n as i128, step as i128);
    let wrap = |v: i64| if v < 0 { v as i128 + n } else { v as i128 };
    let (start, end) = (wrap(start), wrap(end));
    let (first, len) = if step > 0 {
        let s = start.clamp(0, n);
        let e = end.clamp(0, n);
        (s, if e > s { (e - s + step - 1) / step } else { 0 })
    } else {
        let s = start.min(n - 1).max(0);
        let e = end.min(n - 1).max(-1);
        (s, if s > e { (s - e - step - 1) / -step } else { 0 })
    };
    Ok((first as usize, len as usize))
}

/// Tile: repeats the input `repeats[d]` times along each axis.
#[derive(Debug)]
pub(super) struct Tile;

impl Tile {
    pub(super) fn build(_ctx: &BuildCtx) -> Result<Box<dyn Kernel>> {
        Ok(Box::new(Tile))
    }
}

impl Kernel for Tile {
    fn run(&self, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>> {
        let x = input(inputs, 0)?;
        let reps = dims_from_i64(&input(inputs, 1)?.to_i64_vec()?)?;
        ensure!(
            reps.len() == x.rank(),
            "{} repeats for a rank-{} input",
            reps.len(),
            x.rank()
        );
        let shape = x
            .shape()
            .iter()
            .zip(&reps)
            .map(|(&n, &r)| n.checked_mul(r))
            .collect::<Option<Vec<usize>>>()
            .ok_or_else(|| op_err!("tiled shape overflows"))?;
        let out = with_dtype!(x.dtype(), T, { tile::<T>(x, &reps, shape)? });
        Ok(vec![out])
    }
}

fn tile<T: Storable>(x: &Tensor, reps: &[usize], shape: Vec<usize>) -> Result<Tensor> {
    let numel = checked_numel(&shape)?;
    if numel == 0 {
        return Tensor::from_vec(shape, Vec::<T>::new());
    }
    // Tile one axis at a time from the innermost: each step repeats contiguous blocks, and
    // every intermediate is no larger than the output.
    let mut cur = x.as_slice::<T>()?.to_vec();
    let mut cur_shape = x.shape().to_vec();
    for d in (0..reps.len()).rev() {
        if reps[d] == 1 {
            continue;
        }
        let block: usize = cur_shape[d..].iter().product();
        let mut next = filled_vec(cur.len() * reps[d], T::default())?;
        for_each_chunk(&mut next, block * reps[d], |o, dst| {
            let src = &cur[o * block..(o + 1) * block];
            for part in dst.chunks_mut(block) {
                part.copy_from_slice(src);
            }
        });
        cur = next;
        cur_shape[d] *= reps[d];
    }
    Tensor::from_vec(shape, cur)
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum PadMode {
    Constant,
    Reflect,
    Edge,
    Wrap,
}

impl PadMode {
    /// The source index of padded coordinate `c` (relative to the input's start) on an axis
    /// of `n >= 1` elements, or `None` for the constant value. Coordinates are i128 because
    /// pads come from data and may be near the ends of the i64 range.
    fn source(self, c: i128, n: usize) -> Option<usize> {
        let n = n as i128;
        if (0..n).contains(&c) {
            return Some(c as usize);
        }
        let i = match self {
            PadMode::Constant => return None,
            PadMode::Edge => c.clamp(0, n - 1),
            PadMode::Wrap => c.rem_euclid(n),
            PadMode::Reflect if n == 1 => 0,
            PadMode::Reflect => {
                let period = 2 * (n - 1);
                let m = c.rem_euclid(period);
                if m < n {
                    m
                } else {
                    period - m
                }
            }
        };
        Some(i as usize)
    }
}

/// Pad: `pads` (begin values then end values; negative crops) as an attribute before opset 11,
/// inputs `pads`, `constant_value` and (opset 18) `axes` after.
#[derive(Debug)]
pub(super) struct Pad {
    mode: PadMode,
    pads_attr: Option<Vec<i64>>,
    value_attr: f64,
}

impl Pad {
    pub(super) fn build(ctx: &BuildCtx) -> Result<Box<dyn Kernel>> {
        let a = ctx.attrs();
        let mode = match a.string_or("mode", "constant")? {
            "constant" => PadMode::Constant,
            "reflect" => PadMode::Reflect,
            "edge" => PadMode::Edge,
            "wrap" => PadMode::Wrap,
            m => return Err(op_err!("unknown pad mode '{m}'")),
        };
        let pads_attr = if ctx.opset < 11 {
            // Opset 1 named the attribute `paddings`.
            let pads = a.ints("pads")?.or(a.ints("paddings")?);
            Some(
                pads.ok_or_else(|| op_err!("Pad needs a 'pads' attribute"))?
                    .to_vec(),
            )
        } else {
            None
        };
        Ok(Box::new(Pad {
            mode,
            pads_attr,
            value_attr: a.float_or("value", 0.0)? as f64,
        }))
    }
}

impl Kernel for Pad {
    fn run(&self, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>> {
        let x = input(inputs, 0)?;
        let r = x.rank();
        let pads = match &self.pads_attr {
            Some(p) => p.clone(),
            None => input(inputs, 1)?.to_i64_vec()?,
        };
        let axes = match opt_input(inputs, 3) {
            Some(t) => t
                .to_i64_vec()?
                .iter()
                .map(|&a| axis_of(a, r))
                .collect::<Result<Vec<_>>>()?,
            None => (0..r).collect(),
        };
        let k = axes.len();
        ensure!(
            pads.len() == 2 * k,
            "{} pads for {k} axes (need begin and end values for each)",
            pads.len()
        );
        let mut begin = vec![0i128; r];
        let mut shape = x.shape().to_vec();
        let mut seen = vec![false; r];
        for (i, &a) in axes.iter().enumerate() {
            ensure!(!seen[a], "axis {a} is padded twice");
            seen[a] = true;
            begin[a] = pads[i] as i128;
            let n = shape[a] as i128 + pads[i] as i128 + pads[i + k] as i128;
            shape[a] = usize::try_from(n)
                .map_err(|_| op_err!("pads {pads:?} crop axis {a} below zero"))?;
        }
        let value = opt_input(inputs, 2).filter(|t| !t.is_empty());
        if let Some(v) = value {
            ensure!(
                v.dtype() == x.dtype(),
                "constant_value is {} but the input is {}",
                v.dtype(),
                x.dtype()
            );
        }
        let out = with_dtype!(x.dtype(), T, {
            let fill = match value {
                Some(v) => v.as_slice::<T>()?[0],
                None => T::from_f64(self.value_attr),
            };
            pad::<T>(x, self.mode, &begin, shape, fill)?
        });
        Ok(vec![out])
    }
}

fn pad<T: Storable>(
    x: &Tensor,
    mode: PadMode,
    begin: &[i128],
    shape: Vec<usize>,
    fill: T,
) -> Result<Tensor> {
    let numel = checked_numel(&shape)?;
    let r = shape.len();
    if numel == 0 || r == 0 {
        let out = if r == 0 {
            x.as_slice::<T>()?.to_vec()
        } else {
            vec![]
        };
        return Tensor::from_vec(shape, out);
    }
    let in_shape = x.shape();
    ensure!(
        mode == PadMode::Constant || !in_shape.contains(&0),
        "cannot pad an empty axis in {mode:?} mode"
    );
    let src = x.as_slice::<T>()?;
    let in_strides = strides_of(in_shape);
    let mut out = filled_vec(numel, fill)?;
    let (w, n, b) = (shape[r - 1], in_shape[r - 1], begin[r - 1]);
    // Output columns [lo, hi) come straight from the source row; the rest are padding.
    let lo = b.clamp(0, w as i128) as usize;
    let hi = (b + n as i128).clamp(0, w as i128).max(lo as i128) as usize;
    for_each_chunk(&mut out, w, |k, row| {
        // Map the row's outer coordinates to a source row, or leave it as the fill value.
        let mut rem = k;
        let mut src_off = 0;
        for d in (0..r - 1).rev() {
            let c = (rem % shape[d]) as i128;
            rem /= shape[d];
            match mode.source(c - begin[d], in_shape[d]) {
                Some(i) => src_off += i * in_strides[d],
                None => return,
            }
        }
        let src_row = &src[src_off..src_off + n];
        if hi > lo {
            // Here b <= lo < b + n, so the source range lies in the row.
            let from = (lo as i128 - b) as usize;
            row[lo..hi].copy_from_slice(&src_row[from..from + (hi - lo)]);
        }
        if mode != PadMode::Constant {
            for j in (0..lo).chain(hi..w) {
                if let Some(i) = mode.source(j as i128 - b, n) {
                    row[j] = src_row[i];
                }
            }
        }
    });
    Tensor::from_vec(shape, out)
}

/// Trilu: keeps the upper (or lower) triangle of the last two axes, shifted by diagonal `k`.
#[derive(Debug)]
pub(super) struct Trilu {
    upper: bool,
}

impl Trilu {
    pub(super) fn build(ctx: &BuildCtx) -> Result<Box<dyn Kernel>> {
        Ok(Box::new(Trilu {
            upper: ctx.attrs().int_or("upper", 1)? != 0,
        }))
    }
}

impl Kernel for Trilu {
    fn run(&self, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>> {
        let x = input(inputs, 0)?;
        ensure!(x.rank() >= 2, "Trilu needs a rank-2 or higher input");
        let k = match opt_input(inputs, 1) {
            Some(t) => *t
                .to_i64_vec()?
                .first()
                .ok_or_else(|| op_err!("k is empty"))?,
            None => 0,
        };
        let (rows, cols) = (x.shape()[x.rank() - 2], x.shape()[x.rank() - 1]);
        let upper = self.upper;
        let out = with_dtype!(x.dtype(), T, {
            let mut v = x.as_slice::<T>()?.to_vec();
            for_each_chunk(&mut v, cols, |i, row| {
                // Row i of its matrix keeps columns j with j - i >= k (upper) or <= k (lower).
                let diag = (i % rows.max(1)) as i128 + k as i128;
                let clamp = |j: i128| j.clamp(0, cols as i128) as usize;
                let zeroed = if upper {
                    0..clamp(diag)
                } else {
                    clamp(diag + 1)..cols
                };
                row[zeroed].fill(T::default());
            });
            Tensor::from_vec(x.shape().to_vec(), v)?
        });
        Ok(vec![out])
    }
}

/// DepthToSpace: moves channel blocks into `blocksize`² spatial blocks (DCR or CRD order).
#[derive(Debug)]
pub(super) struct DepthToSpace {
    block: usize,
    crd: bool,
}

fn blocksize(ctx: &BuildCtx) -> Result<usize> {
    let b = ctx
        .attrs()
        .int("blocksize")?
        .ok_or_else(|| op_err!("missing 'blocksize' attribute"))?;
    usize::try_from(b)
        .ok()
        .filter(|&b| b > 0)
        .ok_or_else(|| op_err!("blocksize must be positive, got {b}"))
}

/// The dimensions of a rank-4 NCHW input.
fn nchw(x: &Tensor) -> Result<[usize; 4]> {
    x.shape()
        .try_into()
        .map_err(|_| op_err!("expected a rank-4 input, got shape {:?}", x.shape()))
}

impl DepthToSpace {
    pub(super) fn build(ctx: &BuildCtx) -> Result<Box<dyn Kernel>> {
        let crd = match ctx.attrs().string_or("mode", "DCR")? {
            "DCR" => false,
            "CRD" => true,
            m => return Err(op_err!("unknown DepthToSpace mode '{m}'")),
        };
        Ok(Box::new(DepthToSpace {
            block: blocksize(ctx)?,
            crd,
        }))
    }
}

impl Kernel for DepthToSpace {
    fn run(&self, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>> {
        let x = input(inputs, 0)?;
        let [n, c, h, w] = nchw(x)?;
        let b = self.block;
        let bb = b
            .checked_mul(b)
            .filter(|&bb| c.is_multiple_of(bb))
            .ok_or_else(|| op_err!("{c} channels are not divisible by blocksize² ({b}²)"))?;
        let c2 = c / bb;
        let (split, perm) = if self.crd {
            ([n, c2, b, b, h, w], [0, 1, 4, 2, 5, 3])
        } else {
            ([n, b, b, c2, h, w], [0, 3, 4, 1, 5, 2])
        };
        let view = View::permuted(&split, &perm)?;
        Ok(vec![view_tensor(x, &view, vec![n, c2, h * b, w * b])?])
    }
}

/// SpaceToDepth: the inverse of DepthToSpace (DCR or CRD order).
#[derive(Debug)]
pub(super) struct SpaceToDepth {
    block: usize,
    crd: bool,
}

impl SpaceToDepth {
    pub(super) fn build(ctx: &BuildCtx) -> Result<Box<dyn Kernel>> {
        let crd = match ctx.attrs().string_or("mode", "DCR")? {
            "DCR" => false,
            "CRD" => true,
            m => return Err(op_err!("unknown SpaceToDepth mode '{m}'")),
        };
        Ok(Box::new(SpaceToDepth {
            block: blocksize(ctx)?,
            crd,
        }))
    }
}

impl Kernel for SpaceToDepth {
    fn run(&self, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>> {
        let x = input(inputs, 0)?;
        let [n, c, h, w] = nchw(x)?;
        let b = self.block;
        ensure!(
            h % b == 0 && w % b == 0,
            "spatial size {h}x{w} is not divisible by blocksize {b}"
        );
        // Output channel `(bh·b + bw)·c + ci` in DCR order, `ci·b² + bh·b + bw` in CRD order.
        let perm = if self.crd {
            [0, 1, 3, 5, 2, 4]
        } else {
            [0, 3, 5, 1, 2, 4]
        };
        let view = View::permuted(&[n, c, h / b, b, w / b, b], &perm)?;
        Ok(vec![view_tensor(
            x,
            &view,
            vec![n, c * b * b, h / b, w / b],
        )?])
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::*;
    use crate::ir::Attr;
    use crate::ir::Node;

    fn iota(shape: &[usize]) -> crate::tensor::Tensor {
        let n: usize = shape.iter().product();
        t(shape, (0..n as i32).collect())
    }

    #[test]
    fn transpose_default_reverses_axes() {
        let y = run1("Transpose", 13, &[], &[&iota(&[2, 3])]).unwrap();
        assert_eq!(y.shape(), &[3, 2]);
        assert_eq!(vals::<i32>(&y), vec![0, 3, 1, 4, 2, 5]);
    }

    #[test]
    fn transpose_with_perm_and_identity_is_zero_copy() {
        // numpy: np.arange(24).reshape(2,3,4).transpose(1,2,0)[1,2] == [6+... ] checked below.
        let x = iota(&[2, 3, 4]);
        let y = run1("Transpose", 13, &[("perm", ints(&[1, 2, 0]))], &[&x]).unwrap();
        assert_eq!(y.shape(), &[3, 4, 2]);
        let v = vals::<i32>(&y);
        assert_eq!(&v[..6], &[0, 12, 1, 13, 2, 14]);
        // Moving a size-1 axis is a reshape and shares storage.
        let z = iota(&[1, 4, 3]);
        let y = run1("Transpose", 13, &[("perm", ints(&[1, 0, 2]))], &[&z]).unwrap();
        assert_eq!(y.shape(), &[4, 1, 3]);
        assert_eq!(y.as_bytes().as_ptr(), z.as_bytes().as_ptr());
        assert!(run1("Transpose", 13, &[("perm", ints(&[0, 0, 1]))], &[&x]).is_err());
    }

    #[test]
    fn transpose_works_for_bool_and_f16() {
        let b = t(&[2, 2], vec![true, false, false, false]);
        let y = run1("Transpose", 13, &[], &[&b]).unwrap();
        assert_eq!(vals::<bool>(&y), vec![true, false, false, false]);
        let h: Vec<half::f16> = [1.0f32, 2.0, 3.0, 4.0]
            .iter()
            .map(|&v| half::f16::from_f32(v))
            .collect();
        let y = run1("Transpose", 13, &[], &[&t(&[2, 2], h)]).unwrap();
        let got: Vec<f32> = vals::<half::f16>(&y).iter().map(|v| v.to_f32()).collect();
        assert_eq!(got, vec![1.0, 3.0, 2.0, 4.0]);
    }

    #[test]
    fn concat_along_middle_axis_and_negative_axis() {
        let a = iota(&[2, 1, 2]);
        let b = t(&[2, 2, 2], vec![10, 11, 12, 13, 14, 15, 16, 17]);
        let y = run1("Concat", 13, &[("axis", Attr::Int(-2))], &[&a, &b]).unwrap();
        assert_eq!(y.shape(), &[2, 3, 2]);
        assert_eq!(
            vals::<i32>(&y),
            vec![0, 1, 10, 11, 12, 13, 2, 3, 14, 15, 16, 17]
        );
        let empty = t(&[2, 0, 2], Vec::<i32>::new());
        let y = run1("Concat", 13, &[("axis", Attr::Int(1))], &[&empty, &a]).unwrap();
        assert_eq!(vals::<i32>(&y), vec![0, 1, 2, 3]);
        assert!(run1(
            "Concat",
            13,
            &[("axis", Attr::Int(0))],
            &[&a, &iota(&[2, 2])]
        )
        .is_err());
    }

    fn split_node(outputs: usize, attrs: &[(&str, Attr)]) -> Node {
        Node {
            name: "split".into(),
            op_type: "Split".into(),
            domain: String::new(),
            inputs: vec![Some(0), Some(1)],
            outputs: (0..outputs).map(|i| Some(10 + i)).collect(),
            attrs: crate::ir::Attrs(
                attrs
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.clone()))
                    .collect(),
            ),
        }
    }

    #[test]
    fn split_evenly_by_sizes_and_by_num_outputs() {
        let x = iota(&[2, 6]);
        let even = run_node(&split_node(3, &[("axis", Attr::Int(1))]), 13, &[Some(&x)]).unwrap();
        assert_eq!(vals::<i32>(&even[1]), vec![2, 3, 8, 9]);
        let sizes = i64s(&[1, 5]);
        let parts = run_node(
            &split_node(2, &[("axis", Attr::Int(-1))]),
            13,
            &[Some(&x), Some(&sizes)],
        )
        .unwrap();
        assert_eq!(parts[0].shape(), &[2, 1]);
        assert_eq!(vals::<i32>(&parts[1]), vec![1, 2, 3, 4, 5, 7, 8, 9, 10, 11]);
        // Opset 11: sizes as an attribute.
        let attr = split_node(2, &[("axis", Attr::Int(1)), ("split", ints(&[4, 2]))]);
        assert_eq!(
            run_node(&attr, 11, &[Some(&x)]).unwrap()[1].shape(),
            &[2, 2]
        );
        // Opset 18: 7 into 3 gives 3, 3, 1.
        let y = iota(&[7]);
        let n = split_node(3, &[("num_outputs", Attr::Int(3))]);
        let parts = run_node(&n, 18, &[Some(&y)]).unwrap();
        assert_eq!(vals::<i32>(&parts[2]), vec![6]);
        assert!(run_node(&split_node(4, &[]), 13, &[Some(&x)]).is_err());
    }

    #[test]
    fn slice_with_negative_steps_clamping_and_int_max() {
        let x = iota(&[3, 4]);
        // x[0:2, ::-2] (numpy) = [[3, 1], [7, 5]].
        let y = run1(
            "Slice",
            13,
            &[],
            &[
                &x,
                &i64s(&[0, -1]),
                &i64s(&[2, i64::MIN]),
                &i64s(&[0, 1]),
                &i64s(&[1, -2]),
            ],
        )
        .unwrap();
        assert_eq!(y.shape(), &[2, 2]);
        assert_eq!(vals::<i32>(&y), vec![3, 1, 7, 5]);
        // x[1:INT_MAX] along axis 0, ends past the dimension clamp.
        let y = run1(
            "Slice",
            13,
            &[],
            &[&x, &i64s(&[1]), &i64s(&[i64::MAX]), &i64s(&[0])],
        )
        .unwrap();
        assert_eq!(y.shape(), &[2, 4]);
        // Empty result when start >= end.
        let y = run1(
            "Slice",
            13,
            &[],
            &[&x, &i64s(&[3]), &i64s(&[1]), &i64s(&[1])],
        )
        .unwrap();
        assert_eq!(y.shape(), &[3, 0]);
        assert!(run1(
            "Slice",
            13,
            &[],
            &[&x, &i64s(&[0]), &i64s(&[1]), &i64s(&[0]), &i64s(&[0])]
        )
        .is_err());
        assert!(run1(
            "Slice",
            13,
            &[],
            &[&x, &i64s(&[0]), &i64s(&[1]), &i64s(&[2])]
        )
        .is_err());
    }

    #[test]
    fn slice_opset1_uses_attributes() {
        let x = iota(&[3, 4]);
        let attrs = [
            ("starts", ints(&[1])),
            ("ends", ints(&[-1])),
            ("axes", ints(&[1])),
        ];
        let y = run1("Slice", 1, &attrs, &[&x]).unwrap();
        assert_eq!(vals::<i32>(&y), vec![1, 2, 5, 6, 9, 10]);
    }

    #[test]
    fn tile_repeats_each_axis() {
        let x = t(&[2, 2], vec![1, 2, 3, 4]);
        let y = run1("Tile", 13, &[], &[&x, &i64s(&[2, 1])]).unwrap();
        assert_eq!(vals::<i32>(&y), vec![1, 2, 3, 4, 1, 2, 3, 4]);
        let y = run1("Tile", 13, &[], &[&x, &i64s(&[1, 2])]).unwrap();
        assert_eq!(vals::<i32>(&y), vec![1, 2, 1, 2, 3, 4, 3, 4]);
        let y = run1("Tile", 13, &[], &[&x, &i64s(&[0, 3])]).unwrap();
        assert_eq!(y.shape(), &[0, 6]);
        assert!(run1("Tile", 13, &[], &[&x, &i64s(&[-1, 1])]).is_err());
    }

    #[test]
    fn pad_modes_match_numpy() {
        let x = t(&[3], vec![1.0f32, 2.0, 3.0]);
        let pads = i64s(&[4, 4]);
        let run_mode = |mode: &str| {
            let y = run1(
                "Pad",
                19,
                &[("mode", Attr::String(mode.into()))],
                &[&x, &pads],
            )
            .unwrap();
            vals::<f32>(&y)
        };
        // np.pad([1,2,3], 4, mode=...).
        assert_eq!(
            run_mode("constant"),
            vec![0., 0., 0., 0., 1., 2., 3., 0., 0., 0., 0.]
        );
        assert_eq!(
            run_mode("reflect"),
            vec![1., 2., 3., 2., 1., 2., 3., 2., 1., 2., 3.]
        );
        assert_eq!(
            run_mode("edge"),
            vec![1., 1., 1., 1., 1., 2., 3., 3., 3., 3., 3.]
        );
        assert_eq!(
            run_mode("wrap"),
            vec![3., 1., 2., 3., 1., 2., 3., 1., 2., 3., 1.]
        );
    }

    #[test]
    fn pad_2d_constant_value_negative_pads_and_axes() {
        let x = iota(&[2, 3]);
        // Pad one row on top with 9, crop the last column.
        let y = run1(
            "Pad",
            13,
            &[],
            &[&x, &i64s(&[1, 0, 0, -1]), &t(&[], vec![9])],
        )
        .unwrap();
        assert_eq!(y.shape(), &[3, 2]);
        assert_eq!(vals::<i32>(&y), vec![9, 9, 0, 1, 3, 4]);
        // Opset 18 axes: pad only axis -1 by one on each side.
        let y = run_op(
            "Pad",
            18,
            &[],
            &[Some(&x), Some(&i64s(&[1, 1])), None, Some(&i64s(&[-1]))],
        )
        .unwrap();
        assert_eq!(vals::<i32>(&y[0]), vec![0, 0, 1, 2, 0, 0, 3, 4, 5, 0]);
        // Opset 2: pads and value as attributes.
        let y = run1(
            "Pad",
            2,
            &[("pads", ints(&[0, 1, 0, 0])), ("value", Attr::Float(7.0))],
            &[&x],
        )
        .unwrap();
        assert_eq!(vals::<i32>(&y), vec![7, 0, 1, 2, 7, 3, 4, 5]);
        assert!(run1("Pad", 13, &[], &[&x, &i64s(&[0, -4, 0, 0])]).is_err());
        let empty = t(&[0], Vec::<i32>::new());
        assert!(run1(
            "Pad",
            13,
            &[("mode", Attr::String("edge".into()))],
            &[&empty, &i64s(&[1, 1])]
        )
        .is_err());
    }

    #[test]
    fn extreme_pads_and_scalar_axes_are_errors_not_panics() {
        // Crop by i64::MIN and pad by i64::MAX: 3 + MIN + MAX = 2 columns, all wrapped values.
        let x = t(&[3], vec![1, 2, 3]);
        let y = run1(
            "Pad",
            19,
            &[("mode", Attr::String("wrap".into()))],
            &[&x, &i64s(&[i64::MIN, i64::MAX])],
        );
        assert_eq!(y.unwrap().shape(), &[2]);
        let s = t(&[], vec![1.0f32]);
        assert!(run_node(&split_node(1, &[]), 13, &[Some(&s)]).is_err());
        assert!(run1(
            "Slice",
            13,
            &[],
            &[&s, &i64s(&[0]), &i64s(&[1]), &i64s(&[0])]
        )
        .is_err());
        assert!(run1("Concat", 13, &[("axis", Attr::Int(0))], &[&s, &s]).is_err());
        assert!(run1(
            "DepthToSpace",
            13,
            &[("blocksize", Attr::Int(1 << 40))],
            &[&iota(&[1, 4, 1, 1])]
        )
        .is_err());
    }

    #[test]
    fn trilu_upper_and_lower_with_k() {
        let x = t(&[3, 3], (1..=9).collect::<Vec<i64>>());
        let y = run1("Trilu", 14, &[], &[&x]).unwrap();
        assert_eq!(vals::<i64>(&y), vec![1, 2, 3, 0, 5, 6, 0, 0, 9]);
        let y = run1(
            "Trilu",
            14,
            &[("upper", Attr::Int(0))],
            &[&x, &t(&[], vec![-1i64])],
        )
        .unwrap();
        assert_eq!(vals::<i64>(&y), vec![0, 0, 0, 4, 0, 0, 7, 8, 0]);
        let y = run1("Trilu", 14, &[], &[&x, &t(&[], vec![i64::MAX])]).unwrap();
        assert_eq!(vals::<i64>(&y), vec![0; 9]);
    }

    #[test]
    fn depth_to_space_and_back() {
        // onnx backend test: DCR on [1, 8, 2, 3]; CRD check against numpy reshape/transpose.
        let x = iota(&[1, 8, 2, 3]);
        let d = run1("DepthToSpace", 13, &[("blocksize", Attr::Int(2))], &[&x]).unwrap();
        assert_eq!(d.shape(), &[1, 2, 4, 6]);
        assert_eq!(&vals::<i32>(&d)[..6], &[0, 12, 1, 13, 2, 14]);
        let crd = [
            ("blocksize", Attr::Int(2)),
            ("mode", Attr::String("CRD".into())),
        ];
        let c = run1("DepthToSpace", 13, &crd, &[&x]).unwrap();
        assert_eq!(&vals::<i32>(&c)[..6], &[0, 6, 1, 7, 2, 8]);
        let back = run1("SpaceToDepth", 13, &[("blocksize", Attr::Int(2))], &[&d]).unwrap();
        assert_eq!(vals::<i32>(&back), vals::<i32>(&x));
        assert!(run1("SpaceToDepth", 13, &[("blocksize", Attr::Int(4))], &[&d]).is_err());
    }
}
