//! Quantized products: QLinearMatMul and QLinearConv (integer product, then requantized)
//! and ConvInteger (the integer convolution alone).
//!
//! Products accumulate exactly in int32 from zero-point-shifted 8-bit operands. Requantizing
//! follows the ONNX reference: the multiplier `a_scale · b_scale / y_scale` is computed in the
//! scales' type, applied in f64, the output zero point added, rounded half to even and
//! clamped to the output type.

use super::rint;
use crate::ensure;
use crate::error::Result;
use crate::ops::conv::{Geometry, SpatialAttrs};
use crate::ops::matmul::matmul_integer;
use crate::ops::movement::for_each_chunk;
use crate::ops::util::{input, opt_input};
use crate::ops::{BuildCtx, Kernel};
use crate::tensor::{DType, Tensor};

pub(super) fn build(op: &str, ctx: &BuildCtx) -> Option<Result<Box<dyn Kernel>>> {
    let kernel: Result<Box<dyn Kernel>> = match op {
        "QLinearMatMul" => Ok(Box::new(QLinearMatMul)),
        "QLinearConv" => ConvAttrs::parse(ctx).map(|a| Box::new(QLinearConv(a)) as Box<dyn Kernel>),
        "ConvInteger" => ConvAttrs::parse(ctx).map(|a| Box::new(ConvInteger(a)) as Box<dyn Kernel>),
        _ => return None,
    };
    Some(kernel)
}

/// A scale tensor's values in f32 (exact for f16/bf16).
fn scales(t: &Tensor, name: &str) -> Result<Vec<f32>> {
    ensure!(
        t.dtype().is_float(),
        "{name} must be a float tensor, got {}",
        t.dtype()
    );
    ensure!(!t.is_empty(), "{name} is empty");
    t.cast(DType::F32)?.into_vec::<f32>()
}

/// `a · b / y` as numpy computes it in the scales' type: f32, or rounded to f16/bf16 after
/// each operation when all three are of that type.
fn multiplier(dtype: DType, a: f32, b: f32, y: f32) -> f64 {
    let round = |v: f32| match dtype {
        DType::F16 => half::f16::from_f32(v).to_f32(),
        DType::BF16 => half::bf16::from_f32(v).to_f32(),
        _ => v,
    };
    round(round(a * b) / y) as f64
}

/// The output's integer type (the zero point's, else `fallback`'s) and its zero point.
fn output_zero_point(zp: Option<&Tensor>, fallback: DType) -> Result<(DType, i64)> {
    let dtype = zp.map_or(fallback, |z| z.dtype());
    ensure!(
        matches!(dtype, DType::U8 | DType::I8),
        "quantized output must be uint8 or int8, got {dtype}"
    );
    let zero = match zp {
        Some(z) => {
            let v = z.to_i64_vec()?;
            ensure!(v.len() == 1, "y_zero_point must be a single value");
            v[0]
        }
        None => 0,
    };
    Ok((dtype, zero))
}

/// Rounds `acc · multiplier + zero` into `dtype` (uint8 or int8), clamping.
fn requantize(acc: i32, multiplier: f64, zero: i64, dtype: DType) -> i32 {
    let (lo, hi) = if dtype == DType::I8 {
        (-128.0, 127.0)
    } else {
        (0.0, 255.0)
    };
    rint((acc as f64 * multiplier + zero as f64).clamp(lo, hi)) as i32
}

/// ONNX QLinearMatMul: `requantize((a - a_zp) · (b - b_zp))`, with per-tensor scales, or
/// per-row ones for `a` and per-column ones for `b`.
#[derive(Debug)]
struct QLinearMatMul;

impl Kernel for QLinearMatMul {
    fn run(&self, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>> {
        let (a, b) = (input(inputs, 0)?, input(inputs, 3)?);
        let acc = matmul_integer(a, opt_input(inputs, 2), b, opt_input(inputs, 5))?;
        let (a_scale, b_scale) = (input(inputs, 1)?, input(inputs, 4)?);
        let y_scale = input(inputs, 6)?;
        let (sa, sb, sy) = (
            scales(a_scale, "a_scale")?,
            scales(b_scale, "b_scale")?,
            scales(y_scale, "y_scale")?,
        );
        ensure!(sy.len() == 1, "y_scale must be a single value");
        let (dtype, zero) = output_zero_point(opt_input(inputs, 7), a.dtype())?;
        let shape = acc.shape().to_vec();
        let (m, n) = match shape.len() {
            0 => (1, 1),
            1 => (1, shape[0]),
            r => (shape[r - 2], shape[r - 1]),
        };
        ensure!(
            (sa.len() == 1 || sa.len() == m) && (sb.len() == 1 || sb.len() == n),
            "scales of {} and {} values do not fit a [{m}, {n}] product",
            sa.len(),
            sb.len()
        );
        let all_same = a_scale.dtype() == b_scale.dtype() && b_scale.dtype() == y_scale.dtype();
        let calc = if all_same {
            y_scale.dtype()
        } else {
            DType::F32
        };
        // One multiplier per (row scale, column scale) pair.
        let y_s = sy[0];
        let mults: Vec<f64> = sa
            .iter()
            .flat_map(|&a_s| sb.iter().map(move |&b_s| multiplier(calc, a_s, b_s, y_s)))
            .collect();
        let acc = acc.as_slice::<i32>()?;
        let mut out = vec![0i32; acc.len()];
        for_each_chunk(&mut out, n.max(1), |row, chunk| {
            let row_mults = &mults[if sa.len() == 1 { 0 } else { row % m * sb.len() }..];
            for (j, y) in chunk.iter_mut().enumerate() {
                let mult = row_mults[if sb.len() == 1 { 0 } else { j }];
                *y = requantize(acc[row * n + j], mult, zero, dtype);
            }
        });
        Ok(vec![Tensor::from_vec(shape, out)?.cast(dtype)?])
    }
}

/// The attributes of the integer convolutions.
#[derive(Debug)]
struct ConvAttrs {
    spatial: SpatialAttrs,
    group: usize,
}

impl ConvAttrs {
    fn parse(ctx: &BuildCtx) -> Result<ConvAttrs> {
        let group = ctx.attrs().int_or("group", 1)?;
        ensure!(group >= 1, "group must be positive, got {group}");
        Ok(ConvAttrs {
            spatial: SpatialAttrs::parse(ctx.attrs())?,
            group: group as usize,
        })
    }

    /// `conv(x - x_zp, w - w_zp) + bias` in int32; `w_zp` may have one value per output
    /// channel. Returns the output and its shape.
    fn conv(
        &self,
        x: &Tensor,
        x_zp: Option<&Tensor>,
        w: &Tensor,
        w_zp: Option<&Tensor>,
        bias: Option<&Tensor>,
    ) -> Result<(Vec<i32>, Vec<usize>)> {
        let (xs, ws) = (x.shape(), w.shape());
        ensure!(
            xs.len() >= 3 && ws.len() == xs.len(),
            "input {xs:?} and weights {ws:?} must be [N, C, spatial...] and [M, C/group, kernel...]"
        );
        let (n, c, m) = (xs[0], xs[1], ws[0]);
        let g = self.group;
        ensure!(
            m % g == 0 && ws[1] * g == c,
            "weights {ws:?} do not fit input {xs:?} with group {g}"
        );
        if let Some(k) = &self.spatial.kernel_shape {
            ensure!(
                k[..] == ws[2..],
                "kernel_shape {k:?} differs from weights {ws:?}"
            );
        }
        let geo = self.spatial.resolve(&xs[2..], &ws[2..], false)?;
        let x = shifted(x, x_zp, 1, "x")?;
        let w = shifted(w, w_zp, ws[1..].iter().product(), "w")?;
        let bias = match bias {
            Some(b) => {
                ensure!(
                    b.dtype() == DType::I32 && b.len() == m,
                    "bias must be {m} int32 values"
                );
                b.as_slice::<i32>()?.to_vec()
            }
            None => vec![0; m],
        };
        let (cg, mg) = (c / g, m / g);
        let (in_len, out_len, k_len) = (geo.input_len(), geo.output_len(), geo.kernel_len());
        let mut out =
            crate::tensor::filled_vec(crate::tensor::checked_numel(&[n, m, out_len])?, 0i32)?;
        // One output plane per (image, output channel).
        for_each_chunk(&mut out, out_len, |plane, y| {
            let (img, oc) = (plane / m, plane % m);
            let group = oc / mg;
            let x_img = &x[(img * c + group * cg) * in_len..][..cg * in_len];
            let w_oc = &w[oc * cg * k_len..][..cg * k_len];
            conv_plane(&geo, x_img, w_oc, bias[oc], y);
        });
        let shape = [&[n, m][..], geo.output_dims()].concat();
        Ok((out, shape))
    }
}

/// An 8-bit tensor widened to i32 minus its zero point; a zero point with several values
/// applies value `j` to the `j`-th run of `run` elements (per output channel for weights).
fn shifted(t: &Tensor, zp: Option<&Tensor>, run: usize, name: &str) -> Result<Vec<i32>> {
    ensure!(
        matches!(t.dtype(), DType::U8 | DType::I8),
        "{name} must be uint8 or int8, got {}",
        t.dtype()
    );
    let zs = match zp {
        Some(z) => {
            ensure!(
                z.dtype() == t.dtype(),
                "{name}_zero_point type {} differs from {}",
                z.dtype(),
                t.dtype()
            );
            z.to_i64_vec()?
        }
        None => vec![0],
    };
    let runs = t.len() / run.max(1);
    ensure!(
        zs.len() == 1 || zs.len() == runs,
        "{name}_zero_point has {} values, expected 1 or {runs}",
        zs.len()
    );
    let vals = t.to_i64_vec()?;
    Ok(vals
        .iter()
        .enumerate()
        .map(|(i, &v)| (v - zs[if zs.len() == 1 { 0 } else { i / run }]) as i32)
        .collect())
}

/// One output channel's plane: `y[o] = bias + Σ_c Σ_k x[c, o·s + k·d - p] · w[c, k]`.
fn conv_plane(geo: &Geometry, x: &[i32], w: &[i32], bias: i32, y: &mut [i32]) {
    let [o0, o1, o2] = geo.output;
    let [k0, k1, k2] = geo.kernel;
    let [_, i1, i2] = geo.input;
    let (in_len, k_len) = (geo.input_len(), geo.kernel_len());
    for (c, (xc, wc)) in x
        .chunks_exact(in_len)
        .zip(w.chunks_exact(k_len))
        .enumerate()
    {
        for a in 0..o0 {
            for b in 0..o1 {
                for e in 0..o2 {
                    let mut acc = if c == 0 { bias } else { 0 };
                    for ka in 0..k0 {
                        let Some(ia) = geo.input_index(0, a, ka) else {
                            continue;
                        };
                        for kb in 0..k1 {
                            let Some(ib) = geo.input_index(1, b, kb) else {
                                continue;
                            };
                            for ke in 0..k2 {
                                let Some(ie) = geo.input_index(2, e, ke) else {
                                    continue;
                                };
                                let xv = xc[(ia * i1 + ib) * i2 + ie];
                                let wv = wc[(ka * k1 + kb) * k2 + ke];
                                acc = acc.wrapping_add(xv.wrapping_mul(wv));
                            }
                        }
                    }
                    let out = &mut y[(a * o1 + b) * o2 + e];
                    *out = out.wrapping_add(acc);
                }
            }
        }
    }
}

/// ONNX ConvInteger: the int32 convolution of zero-point-shifted 8-bit tensors.
#[derive(Debug)]
struct ConvInteger(ConvAttrs);

impl Kernel for ConvInteger {
    fn run(&self, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>> {
        let (x, w) = (input(inputs, 0)?, input(inputs, 1)?);
        let (out, shape) = self
            .0
            .conv(x, opt_input(inputs, 2), w, opt_input(inputs, 3), None)?;
        Ok(vec![Tensor::from_vec(shape, out)?])
    }
}

/// ONNX QLinearConv: the integer convolution (with int32 bias), requantized with a
/// per-tensor or per-output-channel weight scale.
#[derive(Debug)]
struct QLinearConv(ConvAttrs);

impl Kernel for QLinearConv {
    fn run(&self, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>> {
        let (x, w) = (input(inputs, 0)?, input(inputs, 3)?);
        let (acc, shape) = self.0.conv(
            x,
            opt_input(inputs, 2),
            w,
            opt_input(inputs, 5),
            opt_input(inputs, 8),
        )?;
        let (x_scale, w_scale, y_scale) = (input(inputs, 1)?, input(inputs, 4)?, input(inputs, 6)?);
        let (sx, sw, sy) = (
            scales(x_scale, "x_scale")?,
            scales(w_scale, "w_scale")?,
            scales(y_scale, "y_scale")?,
        );
        let m = shape[1];
        ensure!(
            sx.len() == 1 && sy.len() == 1 && (sw.len() == 1 || sw.len() == m),
            "x_scale and y_scale must be single values and w_scale 1 or {m} values"
        );
        let (dtype, zero) = output_zero_point(opt_input(inputs, 7), x.dtype())?;
        let all_same = x_scale.dtype() == w_scale.dtype() && w_scale.dtype() == y_scale.dtype();
        let calc = if all_same {
            y_scale.dtype()
        } else {
            DType::F32
        };
        let plane = shape[2..].iter().product::<usize>();
        let mut out = vec![0i32; acc.len()];
        for_each_chunk(&mut out, plane, |p, chunk| {
            let oc = p % m;
            let mult = multiplier(calc, sx[0], sw[if sw.len() == 1 { 0 } else { oc }], sy[0]);
            for (y, &a) in chunk.iter_mut().zip(&acc[p * plane..]) {
                *y = requantize(a, mult, zero, dtype);
            }
        });
        Ok(vec![Tensor::from_vec(shape, out)?.cast(dtype)?])
    }
}

#[cfg(test)]
mod tests {
    use crate::ir::Attr;
    use crate::ops::movement::testing::{run1, t};
    use crate::tensor::Tensor;

    // Expected values from onnx.reference.ReferenceEvaluator.

    #[test]
    fn qlinear_matmul_requantizes_the_integer_product() {
        let a = t(&[2, 4], vec![208u8, 236, 0, 238, 3, 214, 255, 29]);
        let b = t(
            &[4, 3],
            vec![152u8, 51, 244, 60, 26, 255, 0, 127, 246, 127, 254, 247],
        );
        let s = |v: f32| t(&[1], vec![v]);
        let z = |v: u8| t(&[1], vec![v]);
        let inputs = [
            &a,
            &s(0.0066),
            &z(113),
            &b,
            &s(0.00705),
            &z(114),
            &s(0.0107),
            &z(118),
        ];
        let y = run1("QLinearMatMul", 21, &[], &inputs).unwrap();
        assert_eq!(y.as_slice::<u8>().unwrap(), &[168, 115, 255, 1, 66, 151]);
    }

    #[test]
    fn conv_integer_subtracts_zero_points() {
        let x = t(&[1, 1, 3, 3], (2u8..11).collect());
        let ones = t(&[1, 1, 2, 2], vec![1u8; 4]);
        let y = run1("ConvInteger", 10, &[], &[&x, &ones, &Tensor::scalar(1u8)]).unwrap();
        assert_eq!(y.as_slice::<i32>().unwrap(), &[12, 16, 24, 28]);
        // Padded, with a per-output-channel weight zero point (the second filter becomes 0).
        let w = t(&[2, 1, 2, 2], vec![1u8, 2, 3, 4, 1, 1, 1, 1]);
        let attrs = [("pads", Attr::Ints(vec![1, 1, 1, 1]))];
        let wzp = t(&[2], vec![0u8, 1]);
        let y = run1(
            "ConvInteger",
            10,
            &attrs,
            &[&x, &w, &Tensor::scalar(1u8), &wzp],
        )
        .unwrap();
        let first = [4, 11, 18, 9, 18, 37, 47, 21, 36, 67, 77, 33, 14, 23, 26, 9];
        assert_eq!(&y.as_slice::<i32>().unwrap()[..16], &first);
        assert!(y.as_slice::<i32>().unwrap()[16..].iter().all(|&v| v == 0));
    }

    #[test]
    fn qlinear_conv_with_bias_and_per_channel_scales() {
        let x = t(
            &[1, 1, 3, 3],
            vec![255u8, 174, 162, 25, 203, 168, 58, 15, 59],
        );
        let w = t(&[2, 1, 1, 1], vec![0u8, 255]);
        let inputs = [
            &x,
            &Tensor::scalar(0.00369f32),
            &Tensor::scalar(132u8),
            &w,
            &t(&[2], vec![0.004f32, 0.002]),
            &t(&[2], vec![0u8, 0]),
            &Tensor::scalar(0.0039f32),
            &Tensor::scalar(110u8),
            &t(&[2], vec![10i32, -1000]),
        ];
        let y = run1("QLinearConv", 10, &[], &inputs).unwrap();
        let want = [
            110, 110, 110, 110, 110, 110, 110, 110, 110, 167, 128, 123, 56, 142, 125, 72, 52, 73,
        ];
        assert_eq!(y.as_slice::<u8>().unwrap(), &want);
    }
}
