//! Ops that walk along one axis: ReverseSequence, CumSum, CumProd and TopK.

use super::{axis_of, filled_vec, for_each_chunk, PAR_THRESHOLD};
use crate::error::Result;
use crate::ops::reduce::num::{Acc, Numeric};
use crate::ops::util::{input, strides_of};
use crate::ops::{BuildCtx, Kernel};
use crate::tensor::{DType, Tensor};
use crate::{ensure, op_err, with_dtype};
use infer_kernels::parallel;
use rayon::prelude::*;
use std::cmp::Ordering;

/// `[outer, n, inner]` sizes of a shape around `axis`.
fn split_at_axis(shape: &[usize], axis: usize) -> (usize, usize, usize) {
    (
        shape[..axis].iter().product(),
        shape[axis],
        shape[axis + 1..].iter().product(),
    )
}

/// ReverseSequence: reverses the first `sequence_lens[b]` steps of each batch entry.
#[derive(Debug)]
pub(super) struct ReverseSequence {
    batch_axis: usize,
    time_axis: usize,
}

impl ReverseSequence {
    pub(super) fn build(ctx: &BuildCtx) -> Result<Box<dyn Kernel>> {
        let a = ctx.attrs();
        let (b, t) = (a.int_or("batch_axis", 1)?, a.int_or("time_axis", 0)?);
        ensure!(
            matches!((b, t), (0, 1) | (1, 0)),
            "batch_axis and time_axis must be 0 and 1 in some order, got {b} and {t}"
        );
        Ok(Box::new(ReverseSequence {
            batch_axis: b as usize,
            time_axis: t as usize,
        }))
    }
}

impl Kernel for ReverseSequence {
    fn run(&self, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>> {
        let (x, lens) = (input(inputs, 0)?, input(inputs, 1)?);
        ensure!(x.rank() >= 2, "input must have rank 2 or more");
        let lens = lens.to_i64_vec()?;
        let (steps, batch) = (x.shape()[self.time_axis], x.shape()[self.batch_axis]);
        ensure!(
            lens.len() == batch,
            "{} sequence lengths for a batch of {batch}",
            lens.len()
        );
        let lens = lens
            .iter()
            .map(|&l| {
                usize::try_from(l)
                    .ok()
                    .filter(|&l| l <= steps)
                    .ok_or_else(|| op_err!("sequence length {l} is outside 0..={steps}"))
            })
            .collect::<Result<Vec<usize>>>()?;
        let strides = strides_of(x.shape());
        let (ts, bs, inner) = (
            strides[self.time_axis],
            strides[self.batch_axis],
            strides[1],
        );
        let out = with_dtype!(x.dtype(), T, {
            let src = x.as_slice::<T>()?;
            let mut out = src.to_vec();
            for (b, &len) in lens.iter().enumerate() {
                for t in 0..len {
                    let (dst, from) = (t * ts + b * bs, (len - 1 - t) * ts + b * bs);
                    out[dst..dst + inner].copy_from_slice(&src[from..from + inner]);
                }
            }
            Tensor::from_vec(x.shape().to_vec(), out)?
        });
        Ok(vec![out])
    }
}

/// CumSum / CumProd along the axis given as input 1, optionally exclusive and/or reversed.
#[derive(Debug)]
pub(super) struct CumSum {
    /// CumProd: a running product (starting at 1) instead of a sum.
    product: bool,
    exclusive: bool,
    reverse: bool,
}

impl CumSum {
    pub(super) fn build(ctx: &BuildCtx, product: bool) -> Result<Box<dyn Kernel>> {
        let a = ctx.attrs();
        Ok(Box::new(CumSum {
            product,
            exclusive: a.int_or("exclusive", 0)? != 0,
            reverse: a.int_or("reverse", 0)? != 0,
        }))
    }
}

impl Kernel for CumSum {
    fn run(&self, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>> {
        let x = input(inputs, 0)?;
        ensure!(
            x.dtype() != DType::Bool,
            "{} does not take bool tensors",
            if self.product { "CumProd" } else { "CumSum" }
        );
        let axis = *input(inputs, 1)?
            .to_i64_vec()?
            .first()
            .ok_or_else(|| op_err!("axis is empty"))?;
        let axis = axis_of(axis, x.rank())?;
        let dims = split_at_axis(x.shape(), axis);
        let out = with_dtype!(x.dtype(), T, {
            Tensor::from_vec(
                x.shape().to_vec(),
                self.scan::<T>(x.as_slice::<T>()?, dims)?,
            )?
        });
        Ok(vec![out])
    }
}

impl CumSum {
    /// Running sums (products) in the accumulator type, one `inner`-wide vector per outer block.
    fn scan<T: Numeric>(&self, src: &[T], (_, n, inner): (usize, usize, usize)) -> Result<Vec<T>> {
        let mut out = filled_vec(src.len(), T::default())?;
        let (exclusive, reverse) = (self.exclusive, self.reverse);
        let (start, combine) = if self.product {
            (T::Acc::ONE, T::Acc::mul as fn(_, _) -> _)
        } else {
            (T::Acc::ZERO, T::Acc::add as fn(_, _) -> _)
        };
        for_each_chunk(&mut out, n * inner, |o, block| {
            let s = &src[o * n * inner..(o + 1) * n * inner];
            let mut acc = vec![start; inner];
            for step in 0..n {
                let k = if reverse { n - 1 - step } else { step };
                let (row, dst) = (
                    &s[k * inner..(k + 1) * inner],
                    &mut block[k * inner..(k + 1) * inner],
                );
                let lanes = dst.iter_mut().zip(acc.iter_mut()).zip(row);
                if exclusive {
                    lanes.for_each(|((d, a), &x)| {
                        *d = T::narrow(*a);
                        *a = combine(*a, x.widen());
                    });
                } else {
                    lanes.for_each(|((d, a), &x)| {
                        *a = combine(*a, x.widen());
                        *d = T::narrow(*a);
                    });
                }
            }
        });
        Ok(out)
    }
}

/// TopK: the `k` largest (or smallest) entries along an axis with their indices. Ties keep
/// the lower index first, and results are always sorted (which `sorted = 0` permits too).
#[derive(Debug)]
pub(super) struct TopK {
    /// Opset 1 took `k` as an attribute; later opsets take it as input 1.
    k_attr: Option<i64>,
    axis: i64,
    largest: bool,
}

impl TopK {
    pub(super) fn build(ctx: &BuildCtx) -> Result<Box<dyn Kernel>> {
        let a = ctx.attrs();
        let k_attr = if ctx.opset < 10 {
            Some(
                a.int("k")?
                    .ok_or_else(|| op_err!("TopK needs a 'k' attribute"))?,
            )
        } else {
            None
        };
        Ok(Box::new(TopK {
            k_attr,
            axis: a.int_or("axis", -1)?,
            largest: a.int_or("largest", 1)? != 0,
        }))
    }
}

impl Kernel for TopK {
    fn run(&self, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>> {
        let x = input(inputs, 0)?;
        ensure!(x.dtype() != DType::Bool, "TopK does not take bool tensors");
        let k = match self.k_attr {
            Some(k) => k,
            None => *input(inputs, 1)?
                .to_i64_vec()?
                .first()
                .ok_or_else(|| op_err!("k is empty"))?,
        };
        let axis = axis_of(self.axis, x.rank())?;
        let dims = split_at_axis(x.shape(), axis);
        let k = usize::try_from(k)
            .ok()
            .filter(|&k| k <= dims.1)
            .ok_or_else(|| op_err!("k = {k} is outside 0..={}", dims.1))?;
        let mut shape = x.shape().to_vec();
        shape[axis] = k;
        let (values, indices) = with_dtype!(x.dtype(), T, {
            let (v, i) = top_k::<T>(x.as_slice::<T>()?, dims, k, self.largest);
            (
                Tensor::from_vec(shape.clone(), v)?,
                Tensor::from_vec(shape, i)?,
            )
        });
        Ok(vec![values, indices])
    }
}

/// Orders values with NaN above everything (numpy's sort order), so sorting never panics.
fn total_cmp<T: PartialOrd>(a: &T, b: &T) -> Ordering {
    #[allow(clippy::eq_op)] // `x != x` is the generic NaN test.
    a.partial_cmp(b).unwrap_or_else(|| (a != a).cmp(&(b != b)))
}

fn top_k<T: Numeric>(
    src: &[T],
    (outer, n, inner): (usize, usize, usize),
    k: usize,
    largest: bool,
) -> (Vec<T>, Vec<i64>) {
    let (mut values, mut indices) = (
        vec![T::default(); outer * k * inner],
        vec![0i64; outer * k * inner],
    );
    if k == 0 {
        return (values, indices);
    }
    let first = |a: &(T, usize), b: &(T, usize)| {
        let ord = total_cmp(&a.0, &b.0);
        let ord = if largest { ord.reverse() } else { ord };
        ord.then(a.1.cmp(&b.1))
    };
    // Selects the top k of one line into `line[..k]`, in order.
    let select = |line: &mut Vec<(T, usize)>| {
        if k < n {
            line.select_nth_unstable_by(k - 1, first);
        }
        line[..k].sort_unstable_by(first);
    };
    if inner == 1 {
        let rows = values.chunks_mut(k).zip(indices.chunks_mut(k)).enumerate();
        let fill = |line: &mut Vec<(T, usize)>, (o, (vs, is)): (usize, (&mut [T], &mut [i64]))| {
            line.clear();
            line.extend(src[o * n..(o + 1) * n].iter().copied().zip(0..));
            select(line);
            for ((v, i), &(x, j)) in vs.iter_mut().zip(is.iter_mut()).zip(&line[..k]) {
                (*v, *i) = (x, j as i64);
            }
        };
        if src.len() >= PAR_THRESHOLD {
            let rows = values
                .par_chunks_mut(k)
                .zip(indices.par_chunks_mut(k))
                .enumerate();
            parallel::for_each_init(rows, Vec::new, fill);
        } else {
            let mut line = Vec::new();
            rows.for_each(|row| fill(&mut line, row));
        }
    } else {
        let mut line = Vec::with_capacity(n);
        for o in 0..outer {
            for i in 0..inner {
                line.clear();
                line.extend((0..n).map(|j| (src[(o * n + j) * inner + i], j)));
                select(&mut line);
                for (r, &(x, j)) in line[..k].iter().enumerate() {
                    let at = (o * k + r) * inner + i;
                    (values[at], indices[at]) = (x, j as i64);
                }
            }
        }
    }
    (values, indices)
}

#[cfg(test)]
mod tests {
    use super::super::testing::*;
    use crate::ir::{Attr, Attrs, Node};

    #[test]
    fn cumprod_multiplies_along_the_axis() {
        // [1, 2, 3, 4]: inclusive [1, 2, 6, 24]; exclusive reversed [24, 12, 4, 1].
        let x = t(&[4], vec![1f32, 2., 3., 4.]);
        let axis = t(&[], vec![0i64]);
        let y = run1("CumProd", 26, &[], &[&x, &axis]).unwrap();
        assert_eq!(vals::<f32>(&y), vec![1., 2., 6., 24.]);
        let flags = [("exclusive", Attr::Int(1)), ("reverse", Attr::Int(1))];
        let y = run1("CumProd", 26, &flags, &[&x, &axis]).unwrap();
        assert_eq!(vals::<f32>(&y), vec![24., 12., 4., 1.]);
    }

    #[test]
    fn reverse_sequence_time_major_and_batch_major() {
        // ONNX spec example (time_axis 0, batch_axis 1), lens [4,3,2,1] on a 4x4 input.
        let x = t(&[4, 4], (0..16).collect::<Vec<i32>>());
        let lens = i64s(&[4, 3, 2, 1]);
        let y = run1("ReverseSequence", 10, &[], &[&x, &lens]).unwrap();
        assert_eq!(
            vals::<i32>(&y),
            vec![12, 9, 6, 3, 8, 5, 2, 7, 4, 1, 10, 11, 0, 13, 14, 15]
        );
        let attrs = [("batch_axis", Attr::Int(0)), ("time_axis", Attr::Int(1))];
        let lens = i64s(&[1, 2, 3, 4]);
        let y = run1("ReverseSequence", 10, &attrs, &[&x, &lens]).unwrap();
        assert_eq!(
            vals::<i32>(&y),
            vec![0, 1, 2, 3, 5, 4, 6, 7, 10, 9, 8, 11, 15, 14, 13, 12]
        );
        assert!(run1("ReverseSequence", 10, &attrs, &[&x, &i64s(&[1, 2, 3, 5])]).is_err());
    }

    #[test]
    fn cumsum_variants() {
        let x = t(&[5], vec![1.0f32, 2.0, 3.0, 4.0, 5.0]);
        let axis = t(&[], vec![0i32]);
        let run = |ex: i64, rev: i64| {
            let attrs = [("exclusive", Attr::Int(ex)), ("reverse", Attr::Int(rev))];
            vals::<f32>(&run1("CumSum", 14, &attrs, &[&x, &axis]).unwrap())
        };
        assert_eq!(run(0, 0), vec![1., 3., 6., 10., 15.]);
        assert_eq!(run(1, 0), vec![0., 1., 3., 6., 10.]);
        assert_eq!(run(0, 1), vec![15., 14., 12., 9., 5.]);
        assert_eq!(run(1, 1), vec![14., 12., 9., 5., 0.]);
        // 2-D along axis -1 on int64.
        let m = t(&[2, 3], vec![1i64, 2, 3, 4, 5, 6]);
        let y = run1("CumSum", 14, &[], &[&m, &t(&[], vec![-1i64])]).unwrap();
        assert_eq!(vals::<i64>(&y), vec![1, 3, 6, 4, 9, 15]);
        let y = run1("CumSum", 14, &[], &[&m, &t(&[], vec![0i64])]).unwrap();
        assert_eq!(vals::<i64>(&y), vec![1, 2, 3, 5, 7, 9]);
    }

    fn topk_node(attrs: &[(&str, Attr)]) -> Node {
        Node {
            name: "topk".into(),
            op_type: "TopK".into(),
            domain: String::new(),
            inputs: vec![Some(0), Some(1)],
            outputs: vec![Some(2), Some(3)],
            attrs: Attrs(
                attrs
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.clone()))
                    .collect(),
            ),
        }
    }

    #[test]
    fn topk_largest_smallest_and_stable_ties() {
        let x = t(
            &[2, 4],
            vec![1.0f32, 3.0, 3.0, 2.0, 0.0, f32::NAN, -1.0, 5.0],
        );
        let k = i64s(&[2]);
        let out = run_node(&topk_node(&[]), 11, &[Some(&x), Some(&k)]).unwrap();
        let v = vals::<f32>(&out[0]);
        assert_eq!(&v[..2], &[3.0, 3.0]);
        assert!(v[2].is_nan() && v[3] == 5.0);
        assert_eq!(vals::<i64>(&out[1]), vec![1, 2, 1, 3]);
        let out = run_node(
            &topk_node(&[("largest", Attr::Int(0))]),
            11,
            &[Some(&x), Some(&k)],
        )
        .unwrap();
        assert_eq!(vals::<f32>(&out[0]), vec![1.0, 2.0, -1.0, 0.0]);
        assert_eq!(vals::<i64>(&out[1]), vec![0, 3, 2, 0]);
        // Along axis 0 (strided lines) with opset 1's attribute k.
        let n = topk_node(&[("axis", Attr::Int(0)), ("k", Attr::Int(1))]);
        let out = run_node(&n, 1, &[Some(&x)]).unwrap();
        assert_eq!(vals::<i64>(&out[1]), vec![0, 1, 0, 1]);
        assert!(run_node(&topk_node(&[]), 11, &[Some(&x), Some(&i64s(&[5]))]).is_err());
    }
}
