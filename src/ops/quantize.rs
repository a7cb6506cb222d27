//! Linear quantization: QuantizeLinear, DequantizeLinear (per-tensor, per-axis and blocked
//! scales, integer and narrow float targets), DynamicQuantizeLinear; the quantized products
//! (QLinearMatMul, QLinearConv, ConvInteger) are in `qlinear`.
//!
//! Rounding follows the ONNX reference exactly: quotients are computed in f32 (then rounded
//! to the input's own type when it is f16/bf16, as numpy does), rounded half to even, offset
//! by the zero point and clamped to the target's range.

#[path = "quantize_qlinear.rs"]
mod qlinear;

use super::movement::{axis_of, for_each_chunk};
use super::util::{input, opt_input};
use super::{BuildCtx, Kernel};
use crate::error::Result;
use crate::tensor::{CastOptions, DType, Tensor};
use crate::{ensure, op_err};
use half::{bf16, f16};
use std::borrow::Cow;

pub(crate) fn build(op: &str, ctx: &BuildCtx) -> Option<Result<Box<dyn Kernel>>> {
    let kernel: Result<Box<dyn Kernel>> = match op {
        "QuantizeLinear" => Quantize::build(ctx).map(|k| Box::new(k) as Box<dyn Kernel>),
        "DequantizeLinear" => Dequantize::build(ctx).map(|k| Box::new(k) as Box<dyn Kernel>),
        "DynamicQuantizeLinear" => Ok(Box::new(DynamicQuantize)),
        _ => return qlinear::build(op, ctx),
    };
    Some(kernel)
}

/// The range of an integer quantized type, `None` for the others.
fn int_range(dtype: DType) -> Option<(i32, i32)> {
    Some(match dtype {
        DType::U8 => (0, 255),
        DType::I8 => (-128, 127),
        DType::U16 => (0, 65535),
        DType::I16 => (-32768, 32767),
        DType::U4 => (0, 15),
        DType::I4 => (-8, 7),
        DType::U2 => (0, 3),
        DType::I2 => (-2, 1),
        _ => return None,
    })
}

/// The float8 types, whose zero point must be zero.
fn is_float8(dtype: DType) -> bool {
    matches!(
        dtype,
        DType::F8E4M3FN | DType::F8E4M3FNUZ | DType::F8E5M2 | DType::F8E5M2FNUZ
    )
}

/// Rounds to the nearest integer, ties to even (numpy's `rint`).
pub(super) fn rint(v: f64) -> f64 {
    v.round_ties_even()
}

/// Where each element of `x` finds its scale and zero point. Seeing `x` as
/// `[outer, len, inner]` around the axis, element `(o, a, i)` uses parameter
/// `o·outer_stride + (a / block)·axis_stride + i·inner_stride`.
#[derive(Clone, Copy, Debug)]
struct ParamLayout {
    len: usize,
    inner: usize,
    block: usize,
    outer_stride: usize,
    axis_stride: usize,
    inner_stride: usize,
}

impl ParamLayout {
    /// Per-tensor for a one-element scale, per-axis for a 1-D one, blocked when
    /// `block_size > 0` (the scale then has x's rank, with `ceil(len / block)` along axis).
    fn new(x: &[usize], scale: &[usize], axis: i64, block_size: usize) -> Result<ParamLayout> {
        let numel: usize = scale.iter().product();
        if numel == 1 {
            return Ok(ParamLayout {
                len: 1,
                inner: x.iter().product(),
                block: 1,
                outer_stride: 0,
                axis_stride: 0,
                inner_stride: 0,
            });
        }
        let axis = axis_of(axis, x.len())?;
        let (len, inner) = (x[axis], x[axis + 1..].iter().product());
        if block_size == 0 {
            ensure!(
                scale == [len],
                "per-axis scale of shape {scale:?} does not match axis {axis} of input {x:?}"
            );
            return Ok(ParamLayout {
                len,
                inner,
                block: 1,
                outer_stride: 0,
                axis_stride: 1,
                inner_stride: 0,
            });
        }
        let blocks = len.div_ceil(block_size);
        let mut want = x.to_vec();
        want[axis] = blocks;
        ensure!(
            scale == want.as_slice(),
            "blocked scale of shape {scale:?} does not match input {x:?} with block_size {block_size} on axis {axis}"
        );
        Ok(ParamLayout {
            len,
            inner,
            block: block_size,
            outer_stride: blocks * inner,
            axis_stride: inner,
            inner_stride: 1,
        })
    }

    /// `out[k] = f(k, param index of element k)` for every element, in parallel when large.
    fn map<U: Send + Copy + Default>(
        &self,
        n: usize,
        f: impl Fn(usize, usize) -> U + Sync + Send,
    ) -> Vec<U> {
        let mut out = vec![U::default(); n];
        for_each_chunk(&mut out, self.inner, |row, chunk| {
            let (o, a) = (row / self.len, row % self.len);
            let base = o * self.outer_stride + (a / self.block) * self.axis_stride;
            let first = row * self.inner;
            for (i, y) in chunk.iter_mut().enumerate() {
                *y = f(first + i, base + i * self.inner_stride);
            }
        });
        out
    }
}

/// The `axis` and `block_size` attributes.
fn axis_and_block(ctx: &BuildCtx) -> Result<(i64, usize)> {
    let block = ctx.attrs().int_or("block_size", 0)?;
    let block = usize::try_from(block).map_err(|_| op_err!("negative block_size {block}"))?;
    Ok((ctx.attrs().int_or("axis", 1)?, block))
}

/// An optional dtype attribute (`output_dtype`, `precision`); 0 means unset.
fn dtype_attr(ctx: &BuildCtx, name: &str) -> Result<Option<DType>> {
    match ctx.attrs().int_or(name, 0)? {
        0 => Ok(None),
        code => i32::try_from(code)
            .ok()
            .and_then(DType::from_onnx)
            .map(Some)
            .ok_or_else(|| op_err!("unsupported {name} {code}")),
    }
}

/// Any numeric or narrow tensor's values as f32, borrowed when already f32.
fn f32_values(t: &Tensor) -> Result<Cow<'_, [f32]>> {
    if t.dtype() == DType::F32 {
        return Ok(Cow::Borrowed(t.as_slice::<f32>()?));
    }
    Ok(Cow::Owned(t.cast(DType::F32)?.into_vec::<f32>()?))
}

/// Rounds an f32 to `dtype` and back: numpy computes f16/bf16 arithmetic in f32 and rounds
/// each result to the operand type.
fn round_to(dtype: DType, v: f32) -> f32 {
    match dtype {
        DType::F16 => f16::from_f32(v).to_f32(),
        DType::BF16 => bf16::from_f32(v).to_f32(),
        _ => v,
    }
}

/// ONNX QuantizeLinear: `saturate(round(x / scale) + zero_point)`.
#[derive(Debug)]
struct Quantize {
    axis: i64,
    block_size: usize,
    saturate: bool,
    output_dtype: Option<DType>,
    precision: Option<DType>,
}

impl Quantize {
    fn build(ctx: &BuildCtx) -> Result<Quantize> {
        let (axis, block_size) = axis_and_block(ctx)?;
        Ok(Quantize {
            axis,
            block_size,
            saturate: ctx.attrs().int_or("saturate", 1)? != 0,
            output_dtype: dtype_attr(ctx, "output_dtype")?,
            precision: dtype_attr(ctx, "precision")?,
        })
    }
}

impl Kernel for Quantize {
    fn run(&self, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>> {
        let (x, scale, zp) = (input(inputs, 0)?, input(inputs, 1)?, opt_input(inputs, 2));
        let to = match (zp, self.output_dtype) {
            (Some(z), Some(o)) if z.dtype() != o => {
                return Err(op_err!(
                    "output_dtype {o} differs from the zero point's type {}",
                    z.dtype()
                ))
            }
            (Some(z), _) => z.dtype(),
            (None, o) => o.unwrap_or(DType::U8),
        };
        let layout = ParamLayout::new(x.shape(), scale.shape(), self.axis, self.block_size)?;
        if let Some(z) = zp {
            // Shapes may differ in form ([1] against a scalar), not in values.
            ensure!(
                z.len() == scale.len(),
                "zero point of shape {:?} does not match scale of shape {:?}",
                z.shape(),
                scale.shape()
            );
        }
        // The quotient is computed in the precision type, else in the type numpy promotes
        // x and scale to (f16/bf16 only when both are).
        let calc = self.precision.unwrap_or(if x.dtype() == scale.dtype() {
            x.dtype()
        } else {
            DType::F32
        });
        let xs = f32_values(x)?;
        let ss = f32_values(scale)?;
        let quotient = |k: usize, p: usize| round_to(calc, xs[k] / ss[p]);
        let shape = x.shape().to_vec();
        if let Some((lo, hi)) = int_range(to) {
            let zs = match zp {
                Some(z) => z.cast(DType::I64)?.into_vec::<i64>()?,
                None => vec![0; ss.len()],
            };
            let q = |k: usize, p: usize| {
                (rint(quotient(k, p) as f64) as i64 + zs[p]).clamp(lo as i64, hi as i64) as i32
            };
            // The common 8-bit targets are written directly; the others through i32.
            let n = xs.len();
            let y = match to {
                DType::U8 => Tensor::from_vec(shape, layout.map(n, |k, p| q(k, p) as u8))?,
                DType::I8 => Tensor::from_vec(shape, layout.map(n, |k, p| q(k, p) as i8))?,
                _ => Tensor::from_vec(shape, layout.map(n, q))?.cast(to)?,
            };
            return Ok(vec![y]);
        }
        ensure!(
            is_float8(to) || to == DType::F4E2M1,
            "cannot quantize to {to}"
        );
        // float8 ignores the zero point (it must be zero); float4 adds it as a float.
        let zs = match zp {
            Some(z) if to == DType::F4E2M1 => z.cast(DType::F32)?.into_vec::<f32>()?,
            _ => vec![0.0; ss.len()],
        };
        let q = layout.map(xs.len(), |k, p| quotient(k, p) + zs[p]);
        let opts = CastOptions {
            saturate: self.saturate,
            ..CastOptions::default()
        };
        Ok(vec![Tensor::from_vec(shape, q)?.cast_with(to, opts)?])
    }
}

/// ONNX DequantizeLinear: `(x - zero_point) · scale`, in the scale's type unless
/// `output_dtype` says otherwise.
#[derive(Debug)]
struct Dequantize {
    axis: i64,
    block_size: usize,
    output_dtype: Option<DType>,
}

impl Dequantize {
    fn build(ctx: &BuildCtx) -> Result<Dequantize> {
        let (axis, block_size) = axis_and_block(ctx)?;
        Ok(Dequantize {
            axis,
            block_size,
            output_dtype: dtype_attr(ctx, "output_dtype")?,
        })
    }
}

impl Kernel for Dequantize {
    fn run(&self, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>> {
        let (x, scale, zp) = (input(inputs, 0)?, input(inputs, 1)?, opt_input(inputs, 2));
        ensure!(
            scale.dtype().is_float(),
            "scale must be a float tensor, got {}",
            scale.dtype()
        );
        let layout = ParamLayout::new(x.shape(), scale.shape(), self.axis, self.block_size)?;
        let xs = f32_values(x)?;
        let ss = f32_values(scale)?;
        // Narrow floats have no zero point to subtract: float8's must be zero, float4's is
        // ignored (as by the reference).
        let zs = match zp {
            Some(z) if is_float8(x.dtype()) => {
                ensure!(
                    z.to_f64_vec()?.iter().all(|&v| v == 0.0),
                    "a float8 zero point must be zero"
                );
                vec![0.0; ss.len()]
            }
            Some(z) if x.dtype() != DType::F4E2M1 => {
                ensure!(
                    z.dtype() == x.dtype(),
                    "zero point type {} differs from input type {}",
                    z.dtype(),
                    x.dtype()
                );
                ensure!(
                    z.len() == scale.len(),
                    "zero point of shape {:?} does not match scale of shape {:?}",
                    z.shape(),
                    scale.shape()
                );
                z.cast(DType::F32)?.into_vec::<f32>()?
            }
            _ => vec![0.0; ss.len()],
        };
        let y = layout.map(xs.len(), |k, p| (xs[k] - zs[p]) * ss[p]);
        let to = self.output_dtype.unwrap_or(scale.dtype());
        Ok(vec![Tensor::from_vec(x.shape().to_vec(), y)?.cast(to)?])
    }
}

/// ONNX DynamicQuantizeLinear: uint8 quantization with a scale and zero point chosen so the
/// range of x (widened to include 0) maps onto 0..=255.
#[derive(Debug)]
struct DynamicQuantize;

impl Kernel for DynamicQuantize {
    fn run(&self, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>> {
        let x = input(inputs, 0)?;
        ensure!(
            x.dtype() == DType::F32,
            "DynamicQuantizeLinear needs a float32 input, got {}",
            x.dtype()
        );
        let xs = x.as_slice::<f32>()?;
        let max = xs.iter().fold(0f32, |m, &v| m.max(v));
        let min = xs.iter().fold(0f32, |m, &v| m.min(v));
        let scale = if max == min { 1.0 } else { max - min } / 255.0;
        let zero_point = rint((-min / scale).clamp(0.0, 255.0) as f64) as f32;
        let layout = ParamLayout::new(x.shape(), &[], 0, 0)?;
        let y = layout.map(xs.len(), |k, _| {
            (rint((xs[k] / scale) as f64) as f32 + zero_point).clamp(0.0, 255.0) as u8
        });
        Ok(vec![
            Tensor::from_vec(x.shape().to_vec(), y)?,
            Tensor::scalar(scale),
            Tensor::scalar(zero_point as u8),
        ])
    }
}

#[cfg(test)]
mod tests {
    use crate::ir::Attr;
    use crate::ops::movement::testing::{run1, run_op, t};
    use crate::tensor::narrow::{F8E4M3FN, I4};
    use crate::tensor::Tensor;
    use half::f16;

    // Expected values from onnx.reference.ReferenceEvaluator (opset 21).

    #[test]
    fn quantize_per_axis_rounds_half_to_even_and_saturates() {
        let x = t(&[2, 3], vec![-2.5f32, 0.5, 1.5, 300.0, -300.0, 2.6]);
        let (scale, zp) = (t(&[2], vec![1.0f32, 2.0]), t(&[2], vec![0i8, 1]));
        let y = run1(
            "QuantizeLinear",
            21,
            &[("axis", Attr::Int(0))],
            &[&x, &scale, &zp],
        )
        .unwrap();
        assert_eq!(y.as_slice::<i8>().unwrap(), &[-2, 0, 2, 127, -128, 2]);
    }

    #[test]
    fn quantize_blocked_uses_one_scale_per_block() {
        let x = t(
            &[2, 4],
            vec![1.0f32, 2.0, 3.0, 4.0, -1.0, -2.0, -3.0, -40.0],
        );
        let scale = t(&[2, 2], vec![1.0f32, 2.0, 0.5, 4.0]);
        let zp = t(&[2, 2], vec![0i8, 10, 5, -3]);
        let attrs = [("axis", Attr::Int(1)), ("block_size", Attr::Int(2))];
        let y = run1("QuantizeLinear", 21, &attrs, &[&x, &scale, &zp]).unwrap();
        assert_eq!(y.as_slice::<i8>().unwrap(), &[1, 2, 12, 12, 3, 1, -4, -13]);
        // A scale that does not have one value per block is an error.
        let bad = t(&[2, 3], vec![1.0f32; 6]);
        assert!(run1("QuantizeLinear", 21, &attrs, &[&x, &bad]).is_err());
    }

    #[test]
    fn quantize_to_float8_honours_saturate() {
        let x = t(&[4], vec![1.0f32, 100.0, 1000.0, -1e4]);
        let scale = Tensor::scalar(2.0f32);
        let zp = t(&[1], vec![F8E4M3FN(0)]);
        let plain = run1(
            "QuantizeLinear",
            21,
            &[("saturate", Attr::Int(0))],
            &[&x, &scale, &zp],
        );
        let got = plain.unwrap().to_f64_vec().unwrap();
        assert_eq!(&got[..2], &[0.5, 48.0]);
        assert!(got[2].is_nan() && got[3].is_nan());
        let sat = run1("QuantizeLinear", 21, &[], &[&x, &scale, &zp]).unwrap();
        assert_eq!(sat.to_f64_vec().unwrap(), [0.5, 48.0, 448.0, -448.0]);
    }

    #[test]
    fn dequantize_int4_per_axis() {
        let x = t(&[2, 2], vec![I4(-8), I4(7), I4(1), I4(2)]);
        let (scale, zp) = (t(&[2], vec![0.5f32, 2.0]), t(&[2], vec![I4(1), I4(-1)]));
        let y = run1(
            "DequantizeLinear",
            21,
            &[("axis", Attr::Int(1))],
            &[&x, &scale, &zp],
        )
        .unwrap();
        assert_eq!(y.as_slice::<f32>().unwrap(), &[-4.5, 16.0, 0.0, 6.0]);
        // The zero point must have x's type.
        let wrong = t(&[2], vec![1i8, -1]);
        assert!(run1(
            "DequantizeLinear",
            21,
            &[("axis", Attr::Int(1))],
            &[&x, &scale, &wrong]
        )
        .is_err());
    }

    #[test]
    fn dequantize_outputs_the_scale_type() {
        let x = t(&[3], vec![0u8, 255, 128]);
        let (scale, zp) = (Tensor::scalar(f16::from_f32(0.1)), Tensor::scalar(128u8));
        let y = run1("DequantizeLinear", 21, &[], &[&x, &scale, &zp]).unwrap();
        let want: Vec<f16> = [-12.8f32, 12.695, 0.0]
            .iter()
            .map(|&v| f16::from_f32(v))
            .collect();
        assert_eq!(y.as_slice::<f16>().unwrap(), &want[..]);
    }

    #[test]
    fn dynamic_quantize_maps_the_range_onto_uint8() {
        let x = t(&[6], vec![0.0f32, 2.0, -3.0, -2.5, 1.34, 0.5]);
        let out = run_op("DynamicQuantizeLinear", 11, &[], &[Some(&x)]).unwrap();
        assert_eq!(
            out[0].as_slice::<u8>().unwrap(),
            &[153, 255, 0, 26, 221, 179]
        );
        assert_eq!(out[1].as_slice::<f32>().unwrap(), &[0.019607844]);
        assert_eq!(out[2].as_slice::<u8>().unwrap(), &[153]);
    }
}
