//! Softmax, LogSoftmax and Hardmax.
//!
//! Before opset 13 these coerce the input to 2-D at `axis` (default 1) and normalize whole
//! rows; from 13 they normalize along the single `axis` (default -1). Both come down to
//! `[outer, n, inner]` with the normalized axis in the middle. Rows (`inner == 1`, the usual
//! last-axis case) are processed whole and in parallel; otherwise column blocks are processed
//! with vector-wide running maxima and sums. Half types compute in f32.

use crate::error::Result;
use crate::ops::movement::{axis_of, PAR_THRESHOLD};
use crate::ops::util::input;
use crate::ops::{BuildCtx, Kernel};
use crate::tensor::{spare, DType, Tensor};
use crate::{ensure, op_err};
use half::{bf16, f16};
use infer_kernels::elementwise::{self, UnaryF32};
use infer_kernels::parallel;
use rayon::prelude::*;
use std::ops::{Add, Mul, Sub};

#[derive(Clone, Copy, Debug, PartialEq)]
pub(super) enum Kind {
    Softmax,
    LogSoftmax,
    Hardmax,
}

#[derive(Debug)]
pub(super) struct Softmax {
    kind: Kind,
    axis: i64,
    coerce_2d: bool,
}

impl Softmax {
    pub(super) fn build(ctx: &BuildCtx, kind: Kind) -> Result<Box<dyn Kernel>> {
        let coerce_2d = ctx.opset < 13;
        let axis = ctx.attrs().int_or("axis", if coerce_2d { 1 } else { -1 })?;
        Ok(Box::new(Softmax {
            kind,
            axis,
            coerce_2d,
        }))
    }
}

impl Kernel for Softmax {
    fn run(&self, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>> {
        let x = input(inputs, 0)?;
        ensure!(
            x.rank() > 0,
            "{:?} needs an input of rank 1 or more",
            self.kind
        );
        let axis = axis_of(self.axis, x.rank())?;
        let s = x.shape();
        let outer = s[..axis].iter().product();
        let dims = if self.coerce_2d {
            (outer, s[axis..].iter().product(), 1)
        } else {
            (outer, s[axis], s[axis + 1..].iter().product())
        };
        let shape = s.to_vec();
        let out = match x.dtype() {
            DType::F32 => {
                Tensor::from_vec(shape, normalize(x.as_slice::<f32>()?, dims, self.kind)?)?
            }
            DType::F64 => {
                Tensor::from_vec(shape, normalize(x.as_slice::<f64>()?, dims, self.kind)?)?
            }
            DType::F16 => {
                let v: Vec<f32> = x.as_slice::<f16>()?.iter().map(|v| v.to_f32()).collect();
                let y = normalize(&v, dims, self.kind)?;
                Tensor::from_vec(shape, y.into_iter().map(f16::from_f32).collect::<Vec<_>>())?
            }
            DType::BF16 => {
                let v: Vec<f32> = x.as_slice::<bf16>()?.iter().map(|v| v.to_f32()).collect();
                let y = normalize(&v, dims, self.kind)?;
                Tensor::from_vec(shape, y.into_iter().map(bf16::from_f32).collect::<Vec<_>>())?
            }
            d => return Err(op_err!("{:?} needs a float tensor, got {d}", self.kind)),
        };
        Ok(vec![out])
    }
}

/// The float types softmax computes in.
trait Float:
    Copy
    + Default
    + Send
    + Sync
    + 'static
    + PartialOrd
    + Add<Output = Self>
    + Sub<Output = Self>
    + Mul<Output = Self>
{
    const ZERO: Self;
    const ONE: Self;
    const NEG_INF: Self;
    fn exp(self) -> Self;
    fn ln(self) -> Self;
    fn recip(self) -> Self;
    /// `out[i] = exp(x[i] - m)`.
    fn exp_shifted(x: &[Self], m: Self, out: &mut [Self]) {
        for (o, &v) in out.iter_mut().zip(x) {
            *o = (v - m).exp();
        }
    }
    /// Softmax of each `n`-long row of `x` into `out`.
    fn softmax_rows(x: &[Self], out: &mut [Self], n: usize) {
        for (o, x) in out.chunks_mut(n).zip(x.chunks(n)) {
            normalize_row(x, o, Kind::Softmax);
        }
    }
}

impl Float for f32 {
    const ZERO: Self = 0.0;
    const ONE: Self = 1.0;
    const NEG_INF: Self = f32::NEG_INFINITY;
    fn exp(self) -> Self {
        exp_f32(self)
    }
    fn ln(self) -> Self {
        f32::ln(self)
    }
    fn recip(self) -> Self {
        1.0 / self
    }
    /// The subtraction, then the kernels' exp, compiled for the CPU's widest vectors (this
    /// crate is built for the baseline ISA, where `exp_f32` runs four lanes without FMA).
    fn exp_shifted(x: &[Self], m: Self, out: &mut [Self]) {
        for (o, &v) in out.iter_mut().zip(x) {
            *o = v - m;
        }
        elementwise::apply_inplace(UnaryF32::Exp, out);
    }
    fn softmax_rows(x: &[Self], out: &mut [Self], n: usize) {
        infer_kernels::softmax::softmax_rows(x, out, n);
    }
}

impl Float for f64 {
    const ZERO: Self = 0.0;
    const ONE: Self = 1.0;
    const NEG_INF: Self = f64::NEG_INFINITY;
    fn exp(self) -> Self {
        f64::exp(self)
    }
    fn ln(self) -> Self {
        f64::ln(self)
    }
    fn recip(self) -> Self {
        1.0 / self
    }
}

/// exp(x) for f32 by Cody-Waite range reduction and Cephes' degree-6 polynomial, within a
/// couple of ulp. Branch-free, so loops over it vectorize, where `f32::exp` is a libm call
/// per element. Results below the smallest normal float flush to 0.
fn exp_f32(x: f32) -> f32 {
    const LN2_HI: f32 = 0.693_359_4;
    const LN2_LO: f32 = -2.121_944_4e-4;
    // Adding 1.5 * 2^23 rounds to an integer in the low mantissa bits (no SSE4.1 needed).
    const SHIFTER: f32 = 12_582_912.0;
    const MIN: f32 = -87.3;
    // Clamped so that n stays within the normal exponents -126..=127; NaN passes through.
    let c = x.clamp(MIN, 88.3);
    let t = c * std::f32::consts::LOG2_E + SHIFTER;
    let n = t - SHIFTER;
    let r = c - n * LN2_HI - n * LN2_LO;
    let mut p = 1.987_569_1e-4_f32;
    p = p * r + 1.398_199_9e-3;
    p = p * r + 8.333_452e-3;
    p = p * r + 4.166_579_6e-2;
    p = p * r + 1.666_666_5e-1;
    p = p * r + 0.5;
    let e = p * r * r + r + 1.0;
    // 2^n, with n read back from t's mantissa, placed in the exponent field.
    let n_int = t.to_bits() as i32 - SHIFTER.to_bits() as i32;
    let scale = f32::from_bits(((n_int + 127) << 23) as u32);
    if x < MIN {
        0.0
    } else {
        e * scale
    }
}

/// Max with eight independent lanes so it vectorizes.
fn max_of<F: Float>(v: &[F]) -> F {
    let mut lanes = [F::NEG_INF; 8];
    let mut chunks = v.chunks_exact(8);
    for c in &mut chunks {
        for k in 0..8 {
            lanes[k] = if c[k] > lanes[k] { c[k] } else { lanes[k] };
        }
    }
    let m = chunks
        .remainder()
        .iter()
        .fold(F::NEG_INF, |m, &x| if x > m { x } else { m });
    lanes.into_iter().fold(m, |m, x| if x > m { x } else { m })
}

/// Sum with eight independent lanes so it vectorizes.
fn sum_of<F: Float>(v: &[F]) -> F {
    let mut lanes = [F::ZERO; 8];
    let mut chunks = v.chunks_exact(8);
    for c in &mut chunks {
        for k in 0..8 {
            lanes[k] = lanes[k] + c[k];
        }
    }
    let s = chunks.remainder().iter().fold(F::ZERO, |s, &x| s + x);
    lanes.into_iter().fold(s, |s, x| s + x)
}

/// Elements per parallel task of softmax rows.
const MIN_TASK_FLOATS: usize = 1 << 12;

/// Normalizes `[outer, n, inner]` along the middle axis.
fn normalize<F: Float>(
    src: &[F],
    (_, n, inner): (usize, usize, usize),
    kind: Kind,
) -> Result<Vec<F>> {
    // Every element is written below (each row, or each column task of each block).
    let mut out = spare::output::<F>(src.len())?;
    if out.is_empty() {
        return Ok(out.into_vec());
    }
    let par = src.len() >= PAR_THRESHOLD;
    if inner == 1 && kind == Kind::Softmax {
        // Tasks of whole rows, at least `MIN_TASK_FLOATS` of them.
        let chunk = n * MIN_TASK_FLOATS.div_ceil(n);
        let rows = |(dst, x): (&mut [F], &[F])| F::softmax_rows(x, dst, n);
        if par {
            parallel::for_each(out.par_chunks_mut(chunk).zip(src.par_chunks(chunk)), rows);
        } else {
            rows((&mut out, src));
        }
        return Ok(out.into_vec());
    }
    if inner == 1 {
        let row = |(dst, x): (&mut [F], &[F])| normalize_row(x, dst, kind);
        if par {
            parallel::for_each(out.par_chunks_mut(n).zip(src.par_chunks(n)), row);
        } else {
            out.chunks_mut(n).zip(src.chunks(n)).for_each(row);
        }
        return Ok(out.into_vec());
    }
    // Tasks of up to COLS columns of one outer block: each gets the slices of its columns
    // in every one of the block's n rows.
    const COLS: usize = 256;
    let mut tasks: Vec<(usize, usize, Vec<&mut [F]>)> = Vec::new();
    for (o, block) in out.chunks_mut(n * inner).enumerate() {
        let first = tasks.len();
        for c0 in (0..inner).step_by(COLS) {
            tasks.push((o, c0, Vec::with_capacity(n)));
        }
        for row in block.chunks_mut(inner) {
            for (k, cols) in row.chunks_mut(COLS).enumerate() {
                tasks[first + k].2.push(cols);
            }
        }
    }
    let run = |(o, c0, mut rows): (usize, usize, Vec<&mut [F]>)| {
        let x = &src[o * n * inner..(o + 1) * n * inner];
        normalize_cols(x, inner, c0, &mut rows, kind);
    };
    if par {
        parallel::for_each(tasks.into_par_iter(), run);
    } else {
        tasks.into_iter().for_each(run);
    }
    Ok(out.into_vec())
}

fn normalize_row<F: Float>(x: &[F], out: &mut [F], kind: Kind) {
    let m = max_of(x);
    match kind {
        Kind::Softmax => {
            F::exp_shifted(x, m, out);
            let inv = sum_of(out).recip();
            out.iter_mut().for_each(|o| *o = *o * inv);
        }
        Kind::LogSoftmax => {
            F::exp_shifted(x, m, out);
            let log_sum = sum_of(out).ln();
            for (o, &v) in out.iter_mut().zip(x) {
                *o = (v - m) - log_sum;
            }
        }
        Kind::Hardmax => {
            // The first maximal entry (the first NaN, if any, like numpy's argmax).
            #[allow(clippy::eq_op)] // `v != v` is the NaN test.
            let at = x.iter().position(|&v| v == m || v != v).unwrap_or(0);
            out.fill(F::ZERO);
            out[at] = F::ONE;
        }
    }
}

/// Normalizes columns `c0..c0 + w` of an `[n, inner]` block `x` into `rows` (n slices of w).
fn normalize_cols<F: Float>(x: &[F], inner: usize, c0: usize, rows: &mut [&mut [F]], kind: Kind) {
    let w = rows.first().map_or(0, |r| r.len());
    let src = |r: usize| &x[r * inner + c0..r * inner + c0 + w];
    if kind == Kind::Hardmax {
        let mut best = vec![0usize; w];
        #[allow(clippy::eq_op)] // `v != v` is the NaN test.
        for r in 1..rows.len() {
            for (i, b) in best.iter_mut().enumerate() {
                let (v, cur) = (src(r)[i], src(*b)[i]);
                if cur == cur && (v > cur || v != v) {
                    *b = r;
                }
            }
        }
        for (r, row) in rows.iter_mut().enumerate() {
            for (o, &b) in row.iter_mut().zip(&best) {
                *o = if b == r { F::ONE } else { F::ZERO };
            }
        }
        return;
    }
    let mut m = vec![F::NEG_INF; w];
    for r in 0..rows.len() {
        for (m, &v) in m.iter_mut().zip(src(r)) {
            *m = if v > *m { v } else { *m };
        }
    }
    let mut sum = vec![F::ZERO; w];
    for (r, row) in rows.iter_mut().enumerate() {
        for ((o, s), (&v, &m)) in row
            .iter_mut()
            .zip(sum.iter_mut())
            .zip(src(r).iter().zip(&m))
        {
            *o = (v - m).exp();
            *s = *s + *o;
        }
    }
    if kind == Kind::Softmax {
        sum.iter_mut().for_each(|s| *s = s.recip());
        for row in rows.iter_mut() {
            row.iter_mut().zip(&sum).for_each(|(o, &inv)| *o = *o * inv);
        }
    } else {
        sum.iter_mut().for_each(|s| *s = s.ln());
        for (r, row) in rows.iter_mut().enumerate() {
            for ((o, &v), (&m, &ls)) in row.iter_mut().zip(src(r)).zip(m.iter().zip(&sum)) {
                *o = (v - m) - ls;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::super::movement::testing::*;
    use super::exp_f32;
    use crate::ir::Attr;

    /// Row-wise numpy-style reference: softmax / log-softmax of `x` along rows of `n`.
    fn reference(x: &[f32], n: usize, log: bool) -> Vec<f32> {
        x.chunks(n)
            .flat_map(|row| {
                let m = row.iter().fold(f64::MIN, |m, &v| m.max(v as f64));
                let s: f64 = row.iter().map(|&v| (v as f64 - m).exp()).sum();
                row.iter()
                    .map(move |&v| {
                        let d = v as f64 - m;
                        (if log { d - s.ln() } else { d.exp() / s }) as f32
                    })
                    .collect::<Vec<_>>()
            })
            .collect()
    }

    #[test]
    fn fast_exp_is_accurate() {
        for i in -8700..=8800 {
            let x = i as f32 / 100.0;
            let (got, want) = (exp_f32(x) as f64, (x as f64).exp());
            assert!(
                ((got - want) / want).abs() < 3e-7,
                "exp({x}) = {got}, want {want}"
            );
        }
        assert_eq!(exp_f32(f32::NEG_INFINITY), 0.0);
        assert!(exp_f32(f32::NAN).is_nan());
    }

    #[test]
    fn softmax_last_axis_matches_reference() {
        // [[1,2,3],[-1,0,1000]]: the second row saturates without overflow.
        let x = t(&[2, 3], vec![1.0f32, 2.0, 3.0, -1.0, 0.0, 1000.0]);
        let y = run1("Softmax", 13, &[], &[&x]).unwrap();
        assert_close(
            &vals::<f32>(&y),
            &[0.09003057, 0.24472847, 0.66524096, 0.0, 0.0, 1.0],
            1e-6,
        );
        let y = run1("LogSoftmax", 13, &[], &[&x]).unwrap();
        assert_close(
            &vals::<f32>(&y),
            &[-2.407606, -1.4076059, -0.40760595, -1001.0, -1000.0, 0.0],
            1e-5,
        );
    }

    #[test]
    fn softmax_middle_axis_and_opset11_coercion() {
        let v: Vec<f32> = (0..24).map(|i| (i as f32 * 0.37).sin() * 3.0).collect();
        let x = t(&[2, 3, 4], v.clone());
        // Opset 13, axis 1: compare against the reference on the transposed rows.
        let y = vals::<f32>(&run1("Softmax", 13, &[("axis", Attr::Int(1))], &[&x]).unwrap());
        for o in 0..2 {
            for i in 0..4 {
                let col: Vec<f32> = (0..3).map(|r| v[(o * 3 + r) * 4 + i]).collect();
                let want = reference(&col, 3, false);
                let got: Vec<f32> = (0..3).map(|r| y[(o * 3 + r) * 4 + i]).collect();
                assert_close(&got, &want, 1e-6);
            }
        }
        // Opset 11, axis 1: rows are the flattened [3, 4] blocks.
        let y = vals::<f32>(&run1("LogSoftmax", 11, &[], &[&x]).unwrap());
        assert_close(&y, &reference(&v, 12, true), 1e-5);
    }

    #[test]
    fn large_softmax_uses_parallel_paths() {
        let v: Vec<f32> = (0..64 * 1000)
            .map(|i| ((i * 31) % 97) as f32 / 10.0)
            .collect();
        let x = t(&[64, 1000], v.clone());
        let y = vals::<f32>(&run1("Softmax", 13, &[], &[&x]).unwrap());
        assert_close(&y, &reference(&v, 1000, false), 1e-7);
        // Axis 0 of [1000, 64] columns: transpose of the same rows.
        let xt: Vec<f32> = (0..1000 * 64)
            .map(|j| v[(j % 64) * 1000 + j / 64])
            .collect();
        let y = vals::<f32>(
            &run1(
                "Softmax",
                13,
                &[("axis", Attr::Int(0))],
                &[&t(&[1000, 64], xt)],
            )
            .unwrap(),
        );
        let want = reference(&v, 1000, false);
        for j in (0..64_000).step_by(997) {
            assert!((y[j] - want[(j % 64) * 1000 + j / 64]).abs() < 1e-7);
        }
    }

    #[test]
    fn hardmax_marks_the_first_maximum() {
        let x = t(&[2, 3], vec![1.0f32, 3.0, 3.0, -1.0, -2.0, -3.0]);
        let y = run1("Hardmax", 13, &[], &[&x]).unwrap();
        assert_eq!(vals::<f32>(&y), vec![0., 1., 0., 1., 0., 0.]);
        let y = run1("Hardmax", 13, &[("axis", Attr::Int(0))], &[&x]).unwrap();
        assert_eq!(vals::<f32>(&y), vec![1., 1., 1., 0., 0., 0.]);
    }

    #[test]
    fn half_types_and_non_floats() {
        let x = t(
            &[2],
            vec![half::f16::from_f32(0.0), half::f16::from_f32(0.0)],
        );
        let y = run1("Softmax", 13, &[], &[&x]).unwrap();
        assert_eq!(vals::<half::f16>(&y), vec![half::f16::from_f32(0.5); 2]);
        assert!(run1("Softmax", 13, &[], &[&t(&[2], vec![1i32, 2])]).is_err());
    }
}
