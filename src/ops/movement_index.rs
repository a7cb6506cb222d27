//! Ops driven by index tensors: Gather, GatherElements, GatherND, ScatterElements, ScatterND,
//! OneHot and Compress. Every index is wrapped (negative counts from the end) and checked
//! against its dimension before any element is read or written.

use super::strided::for_each_offset;
use super::{axis_of, filled_vec, for_each_chunk, wrap_index};
use crate::error::Result;
use crate::ops::reduce::num::{Acc, Numeric};
use crate::ops::util::{input, normalize_axis, strides_of};
use crate::ops::{BuildCtx, Kernel};
use crate::tensor::{checked_numel, Storable, Tensor};
use crate::{ensure, op_err, with_dtype};

/// Wraps and range-checks indices into `0..n`.
fn wrap_all(indices: &[i64], n: usize) -> Result<Vec<usize>> {
    indices.iter().map(|&i| wrap_index(i, n)).collect()
}

/// `out[o, i, :] = src[o, idx[i], :]` over `[outer, n, inner]` blocks; `shape` is the output's.
fn gather_rows<T: Storable>(
    src: &[T],
    idx: &[usize],
    n: usize,
    inner: usize,
    shape: Vec<usize>,
) -> Result<Tensor> {
    let m = idx.len();
    let mut out = filled_vec(checked_numel(&shape)?, T::default())?;
    if inner == 1 {
        for_each_chunk(&mut out, m, |o, row| {
            let s = &src[o * n..(o + 1) * n];
            for (d, &k) in row.iter_mut().zip(idx) {
                *d = s[k];
            }
        });
    } else {
        for_each_chunk(&mut out, inner, |r, dst| {
            let off = ((r / m) * n + idx[r % m]) * inner;
            dst.copy_from_slice(&src[off..off + inner]);
        });
    }
    Tensor::from_vec(shape, out)
}

/// Gather: picks entries of `data` along `axis` by an index tensor of any shape.
#[derive(Debug)]
pub(super) struct Gather {
    axis: i64,
}

impl Gather {
    pub(super) fn build(ctx: &BuildCtx) -> Result<Box<dyn Kernel>> {
        Ok(Box::new(Gather {
            axis: ctx.attrs().int_or("axis", 0)?,
        }))
    }
}

impl Kernel for Gather {
    fn run(&self, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>> {
        let (data, indices) = (input(inputs, 0)?, input(inputs, 1)?);
        ensure!(data.rank() > 0, "cannot gather from a scalar");
        let axis = axis_of(self.axis, data.rank())?;
        let n = data.shape()[axis];
        let idx = wrap_all(&indices.to_i64_vec()?, n)?;
        let shape = [
            &data.shape()[..axis],
            indices.shape(),
            &data.shape()[axis + 1..],
        ]
        .concat();
        let inner = data.shape()[axis + 1..].iter().product();
        let out = with_dtype!(data.dtype(), T, {
            gather_rows(data.as_slice::<T>()?, &idx, n, inner, shape)?
        });
        Ok(vec![out])
    }
}

/// Checks GatherElements/ScatterElements operands and returns, for each position of
/// `indices` in row-major order, the flat offset into `data` it designates.
fn element_offsets(data: &Tensor, indices: &Tensor, axis: i64) -> Result<Vec<usize>> {
    let r = data.rank();
    ensure!(
        indices.rank() == r && r > 0,
        "indices {:?} and data {:?} must have the same non-zero rank",
        indices.shape(),
        data.shape()
    );
    let axis = axis_of(axis, r)?;
    let fits = (0..r).all(|d| d == axis || indices.shape()[d] <= data.shape()[d]);
    ensure!(
        fits,
        "indices {:?} exceed data {:?} outside axis {axis}",
        indices.shape(),
        data.shape()
    );
    let idx = wrap_all(&indices.to_i64_vec()?, data.shape()[axis])?;
    let ds = strides_of(data.shape());
    // Walk the index positions with data strides, the gathered axis contributing through
    // the index value instead of the position.
    let mut walk: Vec<isize> = ds.iter().map(|&s| s as isize).collect();
    walk[axis] = 0;
    let mut offsets = Vec::with_capacity(idx.len());
    let pos_strides = strides_of(indices.shape());
    for_each_offset(indices.shape(), &walk, 0, &pos_strides, |base, pos| {
        offsets.push(base as usize + idx[pos] * ds[axis]);
    });
    Ok(offsets)
}

/// GatherElements: `out[i..] = data[i.. with axis coordinate replaced by indices[i..]]`.
#[derive(Debug)]
pub(super) struct GatherElements {
    axis: i64,
}

impl GatherElements {
    pub(super) fn build(ctx: &BuildCtx) -> Result<Box<dyn Kernel>> {
        Ok(Box::new(GatherElements {
            axis: ctx.attrs().int_or("axis", 0)?,
        }))
    }
}

impl Kernel for GatherElements {
    fn run(&self, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>> {
        let (data, indices) = (input(inputs, 0)?, input(inputs, 1)?);
        let offsets = element_offsets(data, indices, self.axis)?;
        let shape = indices.shape().to_vec();
        let out = with_dtype!(data.dtype(), T, {
            let src = data.as_slice::<T>()?;
            Tensor::from_vec(shape, offsets.iter().map(|&o| src[o]).collect::<Vec<T>>())?
        });
        Ok(vec![out])
    }
}

/// For GatherND/ScatterND: index tuples in the last axis of `indices` address slices of
/// `data` after `batch_dims` leading batch axes. Returns the slices' offsets and length.
fn nd_offsets(data: &Tensor, indices: &Tensor, batch_dims: usize) -> Result<(Vec<usize>, usize)> {
    let (r, q) = (data.rank(), indices.rank());
    ensure!(q >= 1, "indices must have rank 1 or more");
    let b = batch_dims;
    let k = indices.shape()[q - 1];
    ensure!(
        b < q && b + k <= r,
        "index tuples of {k} after {b} batch axes do not fit data of rank {r}"
    );
    ensure!(
        data.shape()[..b] == indices.shape()[..b],
        "batch axes of data {:?} and indices {:?} differ",
        data.shape(),
        indices.shape()
    );
    let raw = indices.to_i64_vec()?;
    let ds = strides_of(data.shape());
    let batch_size: usize = data.shape()[b..].iter().product();
    let per_batch: usize = indices.shape()[b..q - 1].iter().product();
    let tuples: usize = indices.shape()[..q - 1].iter().product();
    let offsets = (0..tuples)
        .map(|t| {
            let tuple = &raw[t * k..(t + 1) * k];
            tuple
                .iter()
                .enumerate()
                .try_fold((t / per_batch.max(1)) * batch_size, |off, (j, &i)| {
                    Ok(off + wrap_index(i, data.shape()[b + j])? * ds[b + j])
                })
        })
        .collect::<Result<Vec<usize>>>()?;
    Ok((offsets, data.shape()[b + k..].iter().product()))
}

/// GatherND: gathers the slices named by index tuples.
#[derive(Debug)]
pub(super) struct GatherNd {
    batch_dims: usize,
}

impl GatherNd {
    pub(super) fn build(ctx: &BuildCtx) -> Result<Box<dyn Kernel>> {
        let b = ctx.attrs().int_or("batch_dims", 0)?;
        let batch_dims =
            usize::try_from(b).map_err(|_| op_err!("batch_dims must be non-negative, got {b}"))?;
        Ok(Box::new(GatherNd { batch_dims }))
    }
}

impl Kernel for GatherNd {
    fn run(&self, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>> {
        let (data, indices) = (input(inputs, 0)?, input(inputs, 1)?);
        let (offsets, len) = nd_offsets(data, indices, self.batch_dims)?;
        let q = indices.rank();
        let k = indices.shape()[q - 1];
        let shape = [
            &indices.shape()[..q - 1],
            &data.shape()[self.batch_dims + k..],
        ]
        .concat();
        let out = with_dtype!(data.dtype(), T, {
            let src = data.as_slice::<T>()?;
            let mut out = Vec::with_capacity(offsets.len() * len);
            for &o in &offsets {
                out.extend_from_slice(&src[o..o + len]);
            }
            Tensor::from_vec(shape, out)?
        });
        Ok(vec![out])
    }
}

/// How a scatter combines an update with the value already there.
#[derive(Clone, Copy, Debug)]
enum Reduction {
    None,
    Add,
    Mul,
    Max,
    Min,
}

impl Reduction {
    fn parse(ctx: &BuildCtx) -> Result<Reduction> {
        Ok(match ctx.attrs().string_or("reduction", "none")? {
            "none" => Reduction::None,
            "add" => Reduction::Add,
            "mul" => Reduction::Mul,
            "max" => Reduction::Max,
            "min" => Reduction::Min,
            r => return Err(op_err!("unknown reduction '{r}'")),
        })
    }

    // The match is loop-invariant in the scatter loops, which the compiler hoists out.
    fn apply<T: Numeric>(self, old: T, update: T) -> T {
        let (a, u) = (old.widen(), update.widen());
        match self {
            Reduction::None => update,
            Reduction::Add => T::narrow(a.add(u)),
            Reduction::Mul => T::narrow(a.mul(u)),
            Reduction::Max => T::narrow(a.max(u)),
            Reduction::Min => T::narrow(a.min(u)),
        }
    }
}

/// Checks that updates match data's type and the expected shape.
fn check_updates(data: &Tensor, updates: &Tensor, shape: &[usize]) -> Result<()> {
    ensure!(
        updates.dtype() == data.dtype(),
        "updates are {} but data is {}",
        updates.dtype(),
        data.dtype()
    );
    ensure!(
        updates.shape() == shape,
        "updates have shape {:?}, expected {shape:?}",
        updates.shape()
    );
    Ok(())
}

/// ScatterElements (and opset 9's Scatter): the inverse of GatherElements, with reduction.
#[derive(Debug)]
pub(super) struct ScatterElements {
    axis: i64,
    reduction: Reduction,
}

impl ScatterElements {
    pub(super) fn build(ctx: &BuildCtx) -> Result<Box<dyn Kernel>> {
        Ok(Box::new(ScatterElements {
            axis: ctx.attrs().int_or("axis", 0)?,
            reduction: Reduction::parse(ctx)?,
        }))
    }
}

impl Kernel for ScatterElements {
    fn run(&self, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>> {
        let (data, indices, updates) = (input(inputs, 0)?, input(inputs, 1)?, input(inputs, 2)?);
        check_updates(data, updates, indices.shape())?;
        let offsets = element_offsets(data, indices, self.axis)?;
        let red = self.reduction;
        let out = with_dtype!(data.dtype(), T, {
            let mut out = data.as_slice::<T>()?.to_vec();
            for (&o, &u) in offsets.iter().zip(updates.as_slice::<T>()?) {
                out[o] = red.apply(out[o], u);
            }
            Tensor::from_vec(data.shape().to_vec(), out)?
        });
        Ok(vec![out])
    }
}

/// ScatterND: writes update slices at index tuples, with reduction.
#[derive(Debug)]
pub(super) struct ScatterNd {
    reduction: Reduction,
}

impl ScatterNd {
    pub(super) fn build(ctx: &BuildCtx) -> Result<Box<dyn Kernel>> {
        Ok(Box::new(ScatterNd {
            reduction: Reduction::parse(ctx)?,
        }))
    }
}

impl Kernel for ScatterNd {
    fn run(&self, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>> {
        let (data, indices, updates) = (input(inputs, 0)?, input(inputs, 1)?, input(inputs, 2)?);
        let (offsets, len) = nd_offsets(data, indices, 0)?;
        let q = indices.rank();
        let k = indices.shape()[q - 1];
        let want = [&indices.shape()[..q - 1], &data.shape()[k..]].concat();
        check_updates(data, updates, &want)?;
        let red = self.reduction;
        let out = with_dtype!(data.dtype(), T, {
            let mut out = data.as_slice::<T>()?.to_vec();
            let upd = updates.as_slice::<T>()?;
            for (i, &o) in offsets.iter().enumerate() {
                let (dst, src) = (&mut out[o..o + len], &upd[i * len..(i + 1) * len]);
                match red {
                    Reduction::None => dst.copy_from_slice(src),
                    _ => dst
                        .iter_mut()
                        .zip(src)
                        .for_each(|(d, &u)| *d = red.apply(*d, u)),
                }
            }
            Tensor::from_vec(data.shape().to_vec(), out)?
        });
        Ok(vec![out])
    }
}

/// OneHot: `values[1]` where the new axis equals the index, `values[0]` elsewhere.
#[derive(Debug)]
pub(super) struct OneHot {
    axis: i64,
}

impl OneHot {
    pub(super) fn build(ctx: &BuildCtx) -> Result<Box<dyn Kernel>> {
        Ok(Box::new(OneHot {
            axis: ctx.attrs().int_or("axis", -1)?,
        }))
    }
}

impl Kernel for OneHot {
    fn run(&self, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>> {
        let (indices, depth, values) = (input(inputs, 0)?, input(inputs, 1)?, input(inputs, 2)?);
        // A fractional depth truncates, like a cast to int64.
        let d = depth
            .to_f64_vec()?
            .first()
            .ok_or_else(|| op_err!("depth is empty"))?
            .trunc();
        ensure!(d.is_finite() && d >= 1.0, "depth must be positive, got {d}");
        let depth = d as usize;
        let axis = normalize_axis(self.axis, indices.rank() + 1)?;
        let mut shape = indices.shape().to_vec();
        shape.insert(axis, depth);
        let inner: usize = indices.shape()[axis..].iter().product();
        // Indices may be of any numeric type; fractional ones truncate like a cast.
        let idx = indices.to_f64_vec()?;
        let out = with_dtype!(values.dtype(), T, {
            let &[off, on] = values.as_slice::<T>()? else {
                return Err(op_err!("values must hold exactly [off, on]"));
            };
            let mut out = filled_vec(checked_numel(&shape)?, off)?;
            for (p, &i) in idx.iter().enumerate() {
                let i = if i < 0.0 { i + d } else { i };
                if i >= 0.0 && i < d {
                    let (o, j) = (p / inner, p % inner);
                    out[(o * depth + i as usize) * inner + j] = on;
                }
            }
            Tensor::from_vec(shape, out)?
        });
        Ok(vec![out])
    }
}

/// Compress: keeps the slices along `axis` (or the elements of the flattened input) whose
/// condition is true; a condition shorter than the axis counts as false past its end.
#[derive(Debug)]
pub(super) struct Compress {
    axis: Option<i64>,
}

impl Compress {
    pub(super) fn build(ctx: &BuildCtx) -> Result<Box<dyn Kernel>> {
        Ok(Box::new(Compress {
            axis: ctx.attrs().int("axis")?,
        }))
    }
}

impl Kernel for Compress {
    fn run(&self, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>> {
        let (x, cond) = (input(inputs, 0)?, input(inputs, 1)?);
        ensure!(
            cond.rank() == 1,
            "condition must be 1-D, got {:?}",
            cond.shape()
        );
        let keep: Vec<usize> = cond
            .to_i64_vec()?
            .iter()
            .enumerate()
            .filter(|(_, &c)| c != 0)
            .map(|(i, _)| i)
            .collect();
        let (n, inner, mut shape, axis) = match self.axis {
            Some(a) => {
                let axis = axis_of(a, x.rank())?;
                let inner = x.shape()[axis + 1..].iter().product();
                (x.shape()[axis], inner, x.shape().to_vec(), axis)
            }
            None => (x.len(), 1, vec![x.len()], 0),
        };
        if let Some(&last) = keep.last() {
            ensure!(
                last < n,
                "condition selects index {last} of a dimension of {n}"
            );
        }
        shape[axis] = keep.len();
        let out = with_dtype!(x.dtype(), T, {
            gather_rows(x.as_slice::<T>()?, &keep, n, inner, shape)?
        });
        Ok(vec![out])
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::*;
    use crate::ir::Attr;

    #[test]
    fn gather_axis0_rows_and_negative_indices() {
        let data = t(&[3, 2], vec![1.0f32, 1.2, 2.3, 3.4, 4.5, 5.7]);
        let idx = t(&[2, 2], vec![0i64, 1, -1, 2]);
        let y = run1("Gather", 13, &[], &[&data, &idx]).unwrap();
        assert_eq!(y.shape(), &[2, 2, 2]);
        assert_eq!(
            vals::<f32>(&y),
            vec![1.0, 1.2, 2.3, 3.4, 4.5, 5.7, 4.5, 5.7]
        );
    }

    #[test]
    fn gather_axis1_scalar_index_and_errors() {
        let data = t(&[2, 3], vec![1, 2, 3, 4, 5, 6]);
        let y = run1(
            "Gather",
            13,
            &[("axis", Attr::Int(1))],
            &[&data, &t(&[], vec![2i32])],
        )
        .unwrap();
        assert_eq!(y.shape(), &[2]);
        assert_eq!(vals::<i32>(&y), vec![3, 6]);
        assert!(run1(
            "Gather",
            13,
            &[("axis", Attr::Int(1))],
            &[&data, &t(&[], vec![3i64])]
        )
        .is_err());
        assert!(run1(
            "Gather",
            13,
            &[("axis", Attr::Int(1))],
            &[&data, &t(&[], vec![-4i64])]
        )
        .is_err());
        assert!(run1("Gather", 13, &[], &[&data, &t(&[1], vec![0.5f32])]).is_err());
    }

    #[test]
    fn gather_elements_along_axis1() {
        // ONNX spec example: data [[1,2],[3,4]], indices [[0,0],[1,0]], axis 1.
        let data = t(&[2, 2], vec![1, 2, 3, 4]);
        let idx = t(&[2, 2], vec![0i64, 0, 1, 0]);
        let y = run1(
            "GatherElements",
            13,
            &[("axis", Attr::Int(1))],
            &[&data, &idx],
        )
        .unwrap();
        assert_eq!(vals::<i32>(&y), vec![1, 1, 4, 3]);
        let bad = t(&[2, 2], vec![0i64, 2, 1, 0]);
        assert!(run1(
            "GatherElements",
            13,
            &[("axis", Attr::Int(1))],
            &[&data, &bad]
        )
        .is_err());
    }

    #[test]
    fn gather_nd_with_and_without_batch_dims() {
        // ONNX spec examples 3 and 5.
        let data = t(&[2, 2, 2], vec![0, 1, 2, 3, 4, 5, 6, 7]);
        let idx = t(&[2, 2], vec![0i64, 1, 1, 0]);
        let y = run1("GatherND", 13, &[], &[&data, &idx]).unwrap();
        assert_eq!(y.shape(), &[2, 2]);
        assert_eq!(vals::<i32>(&y), vec![2, 3, 4, 5]);
        let idx = t(&[2, 1], vec![1i64, 0]);
        let y = run1(
            "GatherND",
            13,
            &[("batch_dims", Attr::Int(1))],
            &[&data, &idx],
        )
        .unwrap();
        assert_eq!(y.shape(), &[2, 2]);
        assert_eq!(vals::<i32>(&y), vec![2, 3, 4, 5]);
        assert!(run1("GatherND", 13, &[], &[&data, &t(&[1, 4], vec![0i64; 4])]).is_err());
    }

    #[test]
    fn scatter_elements_with_reductions() {
        // ONNX spec example: data [[1,2,3,4,5]], indices [[1,3]], updates [[1.1,2.1]], axis 1.
        let data = t(&[1, 5], vec![1.0f32, 2.0, 3.0, 4.0, 5.0]);
        let idx = t(&[1, 2], vec![1i64, -2]);
        let upd = t(&[1, 2], vec![1.1f32, 2.1]);
        let y = run1(
            "ScatterElements",
            13,
            &[("axis", Attr::Int(1))],
            &[&data, &idx, &upd],
        )
        .unwrap();
        assert_eq!(vals::<f32>(&y), vec![1.0, 1.1, 3.0, 2.1, 5.0]);
        let dup = t(&[1, 2], vec![1i64, 1]);
        let attrs = [
            ("axis", Attr::Int(1)),
            ("reduction", Attr::String("add".into())),
        ];
        let y = run1("ScatterElements", 18, &attrs, &[&data, &dup, &upd]).unwrap();
        assert_close(&vals::<f32>(&y), &[1.0, 5.2, 3.0, 4.0, 5.0], 1e-6);
        let attrs = [
            ("axis", Attr::Int(1)),
            ("reduction", Attr::String("max".into())),
        ];
        let y = run1("ScatterElements", 18, &attrs, &[&data, &dup, &upd]).unwrap();
        assert_eq!(vals::<f32>(&y), vec![1.0, 2.1, 3.0, 4.0, 5.0]);
    }

    #[test]
    fn scatter_nd_slices_and_mul() {
        // ONNX spec example 1: data [1..8], indices [[4],[3],[1],[7]], updates [9,10,11,12].
        let data = t(&[8], (1..=8).collect::<Vec<i64>>());
        let idx = t(&[4, 1], vec![4i64, 3, 1, 7]);
        let upd = t(&[4], vec![9i64, 10, 11, 12]);
        let y = run1("ScatterND", 13, &[], &[&data, &idx, &upd]).unwrap();
        assert_eq!(vals::<i64>(&y), vec![1, 11, 3, 10, 9, 6, 7, 12]);
        let y = run1(
            "ScatterND",
            16,
            &[("reduction", Attr::String("mul".into()))],
            &[&data, &idx, &upd],
        )
        .unwrap();
        assert_eq!(vals::<i64>(&y), vec![1, 22, 3, 40, 45, 6, 7, 96]);
        // Row slices of a matrix.
        let m = t(&[2, 2], vec![1, 2, 3, 4]);
        let y = run1(
            "ScatterND",
            13,
            &[],
            &[&m, &t(&[1, 1], vec![1i64]), &t(&[1, 2], vec![7, 8])],
        )
        .unwrap();
        assert_eq!(vals::<i32>(&y), vec![1, 2, 7, 8]);
        assert!(run1(
            "ScatterND",
            13,
            &[],
            &[&data, &t(&[1, 1], vec![8i64]), &t(&[1], vec![0i64])]
        )
        .is_err());
    }

    #[test]
    fn one_hot_with_negative_indices_and_axis() {
        let idx = t(&[3], vec![0i64, -1, 5]);
        let values = t(&[2], vec![0.0f32, 1.0]);
        let y = run1("OneHot", 11, &[], &[&idx, &t(&[], vec![3i64]), &values]).unwrap();
        assert_eq!(y.shape(), &[3, 3]);
        assert_eq!(vals::<f32>(&y), vec![1., 0., 0., 0., 0., 1., 0., 0., 0.]);
        let y = run1(
            "OneHot",
            11,
            &[("axis", Attr::Int(0))],
            &[&idx, &t(&[], vec![3.0f32]), &values],
        )
        .unwrap();
        assert_eq!(vals::<f32>(&y), vec![1., 0., 0., 0., 0., 0., 0., 1., 0.]);
        assert!(run1("OneHot", 11, &[], &[&idx, &t(&[], vec![0i64]), &values]).is_err());
    }

    #[test]
    fn compress_along_axis_and_flattened() {
        // ONNX spec examples.
        let x = t(&[3, 2], vec![1, 2, 3, 4, 5, 6]);
        let cond = t(&[3], vec![false, true, true]);
        let y = run1("Compress", 11, &[("axis", Attr::Int(0))], &[&x, &cond]).unwrap();
        assert_eq!(vals::<i32>(&y), vec![3, 4, 5, 6]);
        let short = t(&[2], vec![false, true]);
        let y = run1("Compress", 11, &[("axis", Attr::Int(1))], &[&x, &short]).unwrap();
        assert_eq!(vals::<i32>(&y), vec![2, 4, 6]);
        let y = run1("Compress", 11, &[], &[&x, &short]).unwrap();
        assert_eq!(vals::<i32>(&y), vec![2]);
        let long = t(&[4], vec![false, false, false, true]);
        assert!(run1("Compress", 11, &[("axis", Attr::Int(0))], &[&x, &long]).is_err());
    }
}
