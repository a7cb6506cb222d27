//! Reductions and normalizing reductions (ReduceMean, ArgMax, Softmax, ...).
//!
//! Every reduction is brought to the canonical form `[outer, red, inner]`, reducing the middle
//! axis: reduced axes are merged (and, when they are not adjacent, moved last by one strided
//! copy). Rows (`inner == 1`, e.g. LayerNorm-style means) fold with several independent
//! accumulators so the loop vectorizes; columns (`inner > 1`) fold whole input rows into the
//! output row, which vectorizes across outputs.

#[path = "reduce_num.rs"]
pub(crate) mod num;
#[path = "reduce_softmax.rs"]
mod softmax;

use super::movement::strided::View;
use super::movement::{axis_of, PAR_THRESHOLD};
use super::util::{input, opt_input};
use super::{BuildCtx, Kernel};
use crate::error::Result;
use crate::tensor::{DType, Tensor};
use crate::{ensure, with_dtype};
use infer_kernels::parallel;
use num::{Acc, Numeric};
use rayon::prelude::*;

pub(crate) fn build(op: &str, ctx: &BuildCtx) -> Option<Result<Box<dyn Kernel>>> {
    use Kind::*;
    // ReduceSum took axes as an input from opset 13, the others from opset 18.
    let reduce = |kind, from| Reduce::build(ctx, kind, from);
    Some(match op {
        "ReduceSum" => reduce(Sum, 13),
        "ReduceMean" => reduce(Mean, 18),
        "ReduceMax" => reduce(Max, 18),
        "ReduceMin" => reduce(Min, 18),
        "ReduceProd" => reduce(Prod, 18),
        "ReduceL1" => reduce(L1, 18),
        "ReduceL2" => reduce(L2, 18),
        "ReduceLogSum" => reduce(LogSum, 18),
        "ReduceLogSumExp" => reduce(LogSumExp, 18),
        "ReduceSumSquare" => reduce(SumSquare, 18),
        "ArgMax" => ArgReduce::build(ctx, true),
        "ArgMin" => ArgReduce::build(ctx, false),
        "Softmax" => softmax::Softmax::build(ctx, softmax::Kind::Softmax),
        "LogSoftmax" => softmax::Softmax::build(ctx, softmax::Kind::LogSoftmax),
        "Hardmax" => softmax::Softmax::build(ctx, softmax::Kind::Hardmax),
        _ => return None,
    })
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Kind {
    Sum,
    Mean,
    Max,
    Min,
    Prod,
    L1,
    L2,
    LogSum,
    LogSumExp,
    SumSquare,
}

/// `[outer, red, inner]`: the reduced extent between the kept ones.
type Dims = (usize, usize, usize);

/// The Reduce* family.
#[derive(Debug)]
struct Reduce {
    kind: Kind,
    /// Axes from the attribute (before the op's input opset), else from optional input 1.
    axes_attr: Option<Vec<i64>>,
    keepdims: bool,
    noop_with_empty_axes: bool,
}

impl Reduce {
    fn build(ctx: &BuildCtx, kind: Kind, axes_input_from: i64) -> Result<Box<dyn Kernel>> {
        let a = ctx.attrs();
        let axes_attr = if ctx.opset < axes_input_from {
            a.ints("axes")?.map(<[i64]>::to_vec)
        } else {
            None
        };
        Ok(Box::new(Reduce {
            kind,
            axes_attr,
            keepdims: a.int_or("keepdims", 1)? != 0,
            noop_with_empty_axes: a.int_or("noop_with_empty_axes", 0)? != 0,
        }))
    }
}

impl Kernel for Reduce {
    fn run(&self, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>> {
        let x = input(inputs, 0)?;
        ensure!(
            x.dtype() != DType::Bool || matches!(self.kind, Kind::Max | Kind::Min),
            "{:?} does not take bool tensors",
            self.kind
        );
        let axes = match (&self.axes_attr, opt_input(inputs, 1)) {
            (Some(a), _) => a.clone(),
            (None, Some(t)) => t.to_i64_vec()?,
            (None, None) => vec![],
        };
        if axes.is_empty() && self.noop_with_empty_axes {
            return Ok(vec![x.clone()]);
        }
        let r = x.rank();
        let mut reduced = vec![axes.is_empty(); r];
        for &a in &axes {
            let d = axis_of(a, r)?;
            ensure!(!reduced[d], "axis {a} is listed twice");
            reduced[d] = true;
        }
        let shape: Vec<usize> = (0..r)
            .filter_map(|d| match (reduced[d], self.keepdims) {
                (false, _) => Some(x.shape()[d]),
                (true, true) => Some(1),
                (true, false) => None,
            })
            .collect();
        let kind = self.kind;
        let out = with_dtype!(x.dtype(), T, {
            let (src, dims) = canonical::<T>(x, &reduced)?;
            Tensor::from_vec(shape, reduce::<T>(&src, dims, kind))?
        });
        Ok(vec![out])
    }
}

/// The input's elements in an order where the reduced axes form one block, with its
/// `[outer, red, inner]` sizes. Borrows the input unless reduced axes must be moved together.
fn canonical<'a, T: Numeric>(
    x: &'a Tensor,
    reduced: &[bool],
) -> Result<(std::borrow::Cow<'a, [T]>, Dims)> {
    let src = x.as_slice::<T>()?;
    // Merge neighbouring axes of the same kind; size-1 axes belong to either.
    let mut groups: Vec<(usize, bool)> = Vec::new();
    for (&n, &red) in x.shape().iter().zip(reduced) {
        match groups.last_mut() {
            _ if n == 1 => {}
            Some((m, r)) if *r == red => *m *= n,
            _ => groups.push((n, red)),
        }
    }
    let prod = |g: &[(usize, bool)]| g.iter().map(|g| g.0).product::<usize>();
    let red_groups: Vec<usize> = (0..groups.len()).filter(|&i| groups[i].1).collect();
    match red_groups.as_slice() {
        [] => Ok((src.into(), (x.len(), 1, 1))),
        &[p] => {
            let dims = (prod(&groups[..p]), groups[p].0, prod(&groups[p + 1..]));
            Ok((src.into(), dims))
        }
        _ => {
            let (kept, red): (Vec<usize>, Vec<usize>) =
                (0..reduced.len()).partition(|&d| !reduced[d]);
            let size = |axes: &[usize]| axes.iter().map(|&d| x.shape()[d]).product::<usize>();
            let dims = (size(&kept), size(&red), 1);
            let perm = [kept, red].concat();
            let moved = View::permuted(x.shape(), &perm)?.materialize(src)?;
            Ok((moved.into(), dims))
        }
    }
}

/// Reduces `[outer, red, inner]` to `[outer, inner]`.
fn reduce<T: Numeric>(src: &[T], dims: Dims, kind: Kind) -> Vec<T> {
    type A<T> = <T as Numeric>::Acc;
    let widen = |x: T, _| x.widen();
    let square = |x: T, _| {
        let v = x.widen();
        v.mul(v)
    };
    let acc = match kind {
        Kind::Sum | Kind::Mean | Kind::LogSum => fold(src, dims, A::<T>::ZERO, widen, A::<T>::add),
        Kind::Max => fold(src, dims, A::<T>::LOWEST, widen, A::<T>::max),
        Kind::Min => fold(src, dims, A::<T>::HIGHEST, widen, A::<T>::min),
        Kind::Prod => fold(src, dims, A::<T>::ONE, widen, A::<T>::mul),
        Kind::L1 => fold(
            src,
            dims,
            A::<T>::ZERO,
            |x: T, _| x.widen().abs(),
            A::<T>::add,
        ),
        Kind::L2 | Kind::SumSquare => fold(src, dims, A::<T>::ZERO, square, A::<T>::add),
        Kind::LogSumExp => return log_sum_exp(src, dims),
    };
    let n = dims.1 as f64;
    let finish = |a: A<T>| match kind {
        Kind::Mean => A::<T>::from_f64(a.to_f64() / n),
        Kind::L2 => A::<T>::from_f64(a.to_f64().sqrt()),
        Kind::LogSum => A::<T>::from_f64(a.to_f64().ln()),
        _ => a,
    };
    acc.into_iter().map(|a| T::narrow(finish(a))).collect()
}

/// log Σ exp(x), shifted by each output's maximum so the exponentials cannot overflow.
fn log_sum_exp<T: Numeric>(src: &[T], dims: Dims) -> Vec<T> {
    type A<T> = <T as Numeric>::Acc;
    let max = fold(src, dims, A::<T>::LOWEST, |x: T, _| x.widen(), A::<T>::max);
    // An infinite (or empty-set) maximum cannot be subtracted; the sum then decides alone.
    let shift: Vec<f64> = max
        .iter()
        .map(|m| Some(m.to_f64()).filter(|m| m.is_finite()).unwrap_or(0.0))
        .collect();
    let exp = |x: T, j: usize| A::<T>::from_f64((x.widen().to_f64() - shift[j]).exp());
    let sums = fold(src, dims, A::<T>::ZERO, exp, A::<T>::add);
    sums.iter()
        .zip(&shift)
        .map(|(s, m)| T::narrow(A::<T>::from_f64(s.to_f64().ln() + m)))
        .collect()
}

/// Columns handled per task when a column reduction is split over rayon.
const COL_BLOCK: usize = 1024;

/// Folds `[outer, red, inner]` into `[outer, inner]` accumulators: `map(x, j)` transforms an
/// element bound for output `j`, `combine` merges into the accumulator started at `init`.
fn fold<T, A, M, C>(src: &[T], (outer, red, inner): Dims, init: A, map: M, combine: C) -> Vec<A>
where
    T: Copy + Sync,
    A: Copy + Send + Sync,
    M: Fn(T, usize) -> A + Sync,
    C: Fn(A, A) -> A + Sync,
{
    let mut acc = vec![init; outer * inner];
    if red == 0 || acc.is_empty() {
        return acc;
    }
    let par = src.len() >= PAR_THRESHOLD;
    if inner == 1 {
        let row = |(o, a): (usize, &mut A)| {
            *a = fold_row(&src[o * red..(o + 1) * red], init, |x| map(x, o), &combine);
        };
        if par {
            parallel::for_each(acc.par_iter_mut().enumerate(), row);
        } else {
            acc.iter_mut().enumerate().for_each(row);
        }
        return acc;
    }
    // Columns `c0..` of outer block `o`: accumulate each input row into the output row.
    let cols = |o: usize, c0: usize, out: &mut [A]| {
        for r in 0..red {
            let start = (o * red + r) * inner + c0;
            let row = &src[start..start + out.len()];
            for (i, (a, &x)) in out.iter_mut().zip(row).enumerate() {
                *a = combine(*a, map(x, o * inner + c0 + i));
            }
        }
    };
    if par {
        parallel::for_each(acc.par_chunks_mut(inner).enumerate(), |(o, out)| {
            parallel::for_each(out.par_chunks_mut(COL_BLOCK).enumerate(), |(c, out)| {
                cols(o, c * COL_BLOCK, out)
            });
        });
    } else {
        acc.chunks_mut(inner)
            .enumerate()
            .for_each(|(o, out)| cols(o, 0, out));
    }
    acc
}

/// Folds a contiguous row with eight independent accumulators, which lets the compiler
/// vectorize float sums (a single running sum is a serial dependency chain) and keeps the
/// rounding error of long sums lower.
fn fold_row<T: Copy, A: Copy>(
    row: &[T],
    init: A,
    map: impl Fn(T) -> A,
    combine: impl Fn(A, A) -> A,
) -> A {
    let mut lanes = [init; 8];
    let mut chunks = row.chunks_exact(8);
    for c in &mut chunks {
        for k in 0..8 {
            lanes[k] = combine(lanes[k], map(c[k]));
        }
    }
    let tail = chunks
        .remainder()
        .iter()
        .fold(init, |a, &x| combine(a, map(x)));
    lanes.into_iter().fold(tail, &combine)
}

/// ArgMax / ArgMin along one axis; ties go to the first index unless `select_last_index`.
#[derive(Debug)]
struct ArgReduce {
    max: bool,
    axis: i64,
    keepdims: bool,
    select_last: bool,
}

impl ArgReduce {
    fn build(ctx: &BuildCtx, max: bool) -> Result<Box<dyn Kernel>> {
        let a = ctx.attrs();
        Ok(Box::new(ArgReduce {
            max,
            axis: a.int_or("axis", 0)?,
            keepdims: a.int_or("keepdims", 1)? != 0,
            select_last: a.int_or("select_last_index", 0)? != 0,
        }))
    }
}

impl Kernel for ArgReduce {
    fn run(&self, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>> {
        let x = input(inputs, 0)?;
        ensure!(
            x.dtype() != DType::Bool,
            "ArgMax/ArgMin do not take bool tensors"
        );
        let axis = axis_of(self.axis, x.rank())?;
        let n = x.shape()[axis];
        ensure!(n > 0, "cannot take the arg-extremum of an empty axis");
        let dims = (
            x.shape()[..axis].iter().product(),
            n,
            x.shape()[axis + 1..].iter().product(),
        );
        let mut shape = x.shape().to_vec();
        if self.keepdims {
            shape[axis] = 1;
        } else {
            shape.remove(axis);
        }
        let out = with_dtype!(x.dtype(), T, { self.arg::<T>(x.as_slice::<T>()?, dims) });
        Ok(vec![Tensor::from_vec(shape, out)?])
    }
}

impl ArgReduce {
    fn arg<T: Numeric>(&self, src: &[T], (outer, n, inner): Dims) -> Vec<i64> {
        let (max, last) = (self.max, self.select_last);
        // Whether `v` replaces `best`: strictly better, or equal when the last index is wanted.
        // A NaN wins and then stays, as numpy's argmax/argmin report the first NaN.
        #[allow(clippy::eq_op)] // `v != v` is the generic NaN test.
        let better = |v: T, best: T| {
            if best != best {
                return false;
            }
            v != v || if max { v > best } else { v < best } || (last && v == best)
        };
        let line = |j: usize| {
            let (o, i) = (j / inner, j % inner);
            let at = |k: usize| src[(o * n + k) * inner + i];
            let mut best = 0;
            for k in 1..n {
                if better(at(k), at(best)) {
                    best = k;
                }
            }
            best as i64
        };
        let mut out = vec![0i64; outer * inner];
        if src.len() >= PAR_THRESHOLD {
            parallel::for_each(out.par_iter_mut().enumerate(), |(j, o)| *o = line(j));
        } else {
            out.iter_mut().enumerate().for_each(|(j, o)| *o = line(j));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::super::movement::testing::*;
    use crate::ir::Attr;
    use crate::tensor::Tensor;

    /// np.arange(1, 13).reshape(3, 2, 2) as f32, the ONNX reduce tests' usual input.
    fn x322() -> Tensor {
        t(&[3, 2, 2], (1..=12).map(|v| v as f32).collect())
    }

    fn reduce(op: &str, opset: i64, attrs: &[(&str, Attr)], inputs: &[&Tensor]) -> Tensor {
        run1(op, opset, attrs, inputs).unwrap()
    }

    #[test]
    fn reduce_mean_over_each_axis_form() {
        let x = x322();
        // Opset 13: axes attribute; keepdims default 1.
        let y = reduce("ReduceMean", 13, &[("axes", ints(&[1]))], &[&x]);
        assert_eq!(y.shape(), &[3, 1, 2]);
        assert_eq!(vals::<f32>(&y), vec![2., 3., 6., 7., 10., 11.]);
        // Opset 18: axes input, last axis (row path), keepdims 0.
        let y = reduce(
            "ReduceMean",
            18,
            &[("keepdims", Attr::Int(0))],
            &[&x, &i64s(&[-1])],
        );
        assert_eq!(y.shape(), &[3, 2]);
        assert_eq!(vals::<f32>(&y), vec![1.5, 3.5, 5.5, 7.5, 9.5, 11.5]);
        // All axes by default.
        let y = reduce("ReduceMean", 18, &[], &[&x]);
        assert_eq!(y.shape(), &[1, 1, 1]);
        assert_eq!(vals::<f32>(&y), vec![6.5]);
        // Non-adjacent axes 0 and 2: np.mean(x, axis=(0, 2)) = [5.5, 7.5].
        let y = reduce(
            "ReduceMean",
            18,
            &[("keepdims", Attr::Int(0))],
            &[&x, &i64s(&[0, 2])],
        );
        assert_eq!(vals::<f32>(&y), vec![5.5, 7.5]);
    }

    #[test]
    fn empty_axes_with_noop_returns_input() {
        let x = x322();
        let attrs = [("noop_with_empty_axes", Attr::Int(1))];
        let y = reduce("ReduceSum", 13, &attrs, &[&x, &i64s(&[])]);
        assert_eq!(y.shape(), x.shape());
        let y = reduce("ReduceSum", 13, &[], &[&x, &i64s(&[])]);
        assert_eq!(vals::<f32>(&y), vec![78.0]);
        // ReduceSum before 13 takes axes as an attribute.
        let y = reduce(
            "ReduceSum",
            11,
            &[("axes", ints(&[0])), ("keepdims", Attr::Int(0))],
            &[&x],
        );
        assert_eq!(vals::<f32>(&y), vec![15., 18., 21., 24.]);
    }

    #[test]
    fn every_reduce_kind_matches_numpy() {
        let x = t(&[2, 3], vec![1.0f32, -2.0, 3.0, 0.5, 4.0, -1.0]);
        let axis1 = [("axes", ints(&[1])), ("keepdims", Attr::Int(0))];
        let run = |op: &str| vals::<f32>(&reduce(op, 13, &axis1, &[&x]));
        assert_close(&run("ReduceMax"), &[3.0, 4.0], 0.0);
        assert_close(&run("ReduceMin"), &[-2.0, -1.0], 0.0);
        assert_close(&run("ReduceProd"), &[-6.0, -2.0], 0.0);
        assert_close(&run("ReduceL1"), &[6.0, 5.5], 0.0);
        assert_close(&run("ReduceSumSquare"), &[14.0, 17.25], 1e-6);
        // np.sqrt([14, 17.25]), np.log([2, 3.5]), np.log(np.sum(np.exp(x), axis=1)).
        assert_close(&run("ReduceL2"), &[3.741_657_5, 4.153_312], 1e-6);
        assert_close(&run("ReduceLogSumExp"), &[3.1328452, 4.0362696], 1e-6);
        let pos = t(&[2, 2], vec![1.0f32, 1.0, 0.5, 3.0]);
        let y = reduce("ReduceLogSum", 13, &axis1, &[&pos]);
        assert_close(&vals::<f32>(&y), &[std::f32::consts::LN_2, 1.252_763], 1e-6);
    }

    #[test]
    fn empty_reductions_give_identities() {
        let x = t(&[2, 0], Vec::<f32>::new());
        let axis1 = [("axes", ints(&[1])), ("keepdims", Attr::Int(0))];
        assert_eq!(
            vals::<f32>(&reduce("ReduceSum", 11, &axis1, &[&x])),
            vec![0.0; 2]
        );
        assert_eq!(
            vals::<f32>(&reduce("ReduceProd", 13, &axis1, &[&x])),
            vec![1.0; 2]
        );
        assert_eq!(
            vals::<f32>(&reduce("ReduceMax", 13, &axis1, &[&x])),
            vec![f32::NEG_INFINITY; 2]
        );
        assert_eq!(
            vals::<f32>(&reduce("ReduceLogSumExp", 13, &axis1, &[&x])),
            vec![f32::NEG_INFINITY; 2]
        );
    }

    #[test]
    fn integer_and_bool_reductions() {
        let x = t(&[2, 2], vec![i64::MAX - 1, 1, 7, -3]);
        let y = reduce(
            "ReduceSum",
            13,
            &[("keepdims", Attr::Int(0))],
            &[&x, &i64s(&[1])],
        );
        assert_eq!(vals::<i64>(&y), vec![i64::MAX, 4]);
        let y = reduce(
            "ReduceMean",
            13,
            &[("axes", ints(&[0]))],
            &[&t(&[2], vec![3i32, 4])],
        );
        assert_eq!(vals::<i32>(&y), vec![3]);
        let b = t(&[2, 2], vec![true, false, false, false]);
        let y = reduce(
            "ReduceMax",
            20,
            &[("keepdims", Attr::Int(0))],
            &[&b, &i64s(&[1])],
        );
        assert_eq!(vals::<bool>(&y), vec![true, false]);
        assert!(run1("ReduceSum", 13, &[], &[&b]).is_err());
    }

    #[test]
    fn large_reductions_match_f64_reference() {
        // Rows (last axis), columns (axis 0) and the middle axis, through the parallel paths.
        let (a, b, c) = (64, 300, 40);
        let v: Vec<f32> = (0..a * b * c)
            .map(|i| ((i * 7919) % 1000) as f32 / 100.0 - 5.0)
            .collect();
        let x = t(&[a, b, c], v.clone());
        let at = |i: usize, j: usize, k: usize| v[(i * b + j) * c + k] as f64;
        let y = vals::<f32>(&reduce(
            "ReduceSum",
            13,
            &[("keepdims", Attr::Int(0))],
            &[&x, &i64s(&[1])],
        ));
        for (i, k) in [(0, 0), (17, 39), (63, 5)] {
            let want: f64 = (0..b).map(|j| at(i, j, k)).sum();
            assert!(
                (y[i * c + k] as f64 - want).abs() < 1e-3,
                "middle axis at {i},{k}"
            );
        }
        let y = vals::<f32>(&reduce(
            "ReduceMean",
            18,
            &[("keepdims", Attr::Int(0))],
            &[&x, &i64s(&[0])],
        ));
        let want: f64 = (0..a).map(|i| at(i, 123, 7)).sum::<f64>() / a as f64;
        assert!((y[123 * c + 7] as f64 - want).abs() < 1e-5);
        let y = vals::<f32>(&reduce(
            "ReduceMax",
            18,
            &[("keepdims", Attr::Int(0))],
            &[&x, &i64s(&[1, 2])],
        ));
        let want = (0..b)
            .flat_map(|j| (0..c).map(move |k| (j, k)))
            .map(|(j, k)| at(5, j, k))
            .fold(f64::MIN, f64::max);
        assert_eq!(y[5] as f64, want);
    }

    #[test]
    fn argmax_argmin_with_ties_and_select_last() {
        let x = t(&[2, 3], vec![1.0f32, 5.0, 5.0, 2.0, -1.0, 2.0]);
        let y = reduce("ArgMax", 13, &[("axis", Attr::Int(1))], &[&x]);
        assert_eq!(y.shape(), &[2, 1]);
        assert_eq!(vals::<i64>(&y), vec![1, 0]);
        let attrs = [
            ("axis", Attr::Int(-1)),
            ("select_last_index", Attr::Int(1)),
            ("keepdims", Attr::Int(0)),
        ];
        assert_eq!(
            vals::<i64>(&reduce("ArgMax", 13, &attrs, &[&x])),
            vec![2, 2]
        );
        let y = reduce("ArgMin", 13, &[("keepdims", Attr::Int(0))], &[&x]);
        assert_eq!(y.shape(), &[3]);
        assert_eq!(vals::<i64>(&y), vec![0, 1, 1]);
        assert!(run1("ArgMax", 13, &[], &[&t(&[0, 2], Vec::<f32>::new())]).is_err());
        assert!(run1("ArgMax", 13, &[], &[&t(&[], vec![1.0f32])]).is_err());
        assert!(run1("ReduceSum", 13, &[], &[&t(&[], vec![1.0f32]), &i64s(&[0])]).is_err());
    }
}
