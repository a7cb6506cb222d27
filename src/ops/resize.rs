//! Resize (opsets 10–19) and the older Upsample (opsets 7–9).
//!
//! Interpolation is separable, so the input is resized one axis at a time, like the ONNX
//! reference. For each resized axis a table of taps is computed once per run: for every output
//! position, the `n` source indices (clamped into the input, i.e. edge padding) and their
//! weights, following the reference's neighbour selection exactly. Applying a table is then a
//! weighted sum of whole inner rows, which vectorizes. Values are computed in f32; integer
//! outputs are rounded half-to-even and saturated, as the reference does.

use super::util::{input, normalize_axis, opt_input};
use super::{BuildCtx, Kernel};
use crate::error::Result;
use crate::tensor::{DType, Tensor};
use crate::{ensure, op_err};
use infer_kernels::parallel;
use rayon::prelude::*;

pub(crate) fn build(op: &str, ctx: &BuildCtx) -> Option<Result<Box<dyn Kernel>>> {
    match op {
        "Resize" => Some(Resize::build(ctx).map(|k| Box::new(k) as Box<dyn Kernel>)),
        "Upsample" => Some(Resize::build_upsample(ctx).map(|k| Box::new(k) as Box<dyn Kernel>)),
        _ => None,
    }
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Mode {
    Nearest(NearestMode),
    Linear,
    /// Keys cubic convolution with coefficient `a`.
    Cubic(f64),
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum NearestMode {
    RoundPreferFloor,
    RoundPreferCeil,
    Floor,
    Ceil,
}

/// How an output coordinate maps back into the input.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Coord {
    HalfPixel,
    HalfPixelSymmetric,
    PytorchHalfPixel,
    AlignCorners,
    Asymmetric,
    TfCropAndResize,
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum AspectPolicy {
    Stretch,
    NotLarger,
    NotSmaller,
}

/// Where the scales / sizes come from.
#[derive(Clone, Debug)]
enum Inputs {
    /// Resize-11+: `X, roi, scales, sizes`.
    RoiScalesSizes,
    /// Resize-10 and Upsample-9: `X, scales`.
    Scales,
    /// Upsample-7: the `scales` attribute.
    Fixed(Vec<f32>),
}

#[derive(Debug)]
struct Resize {
    mode: Mode,
    coord: Coord,
    exclude_outside: bool,
    extrapolation: f32,
    antialias: bool,
    axes: Option<Vec<i64>>,
    policy: AspectPolicy,
    inputs: Inputs,
}

impl Resize {
    fn build(ctx: &BuildCtx) -> Result<Self> {
        let a = ctx.attrs();
        let nearest = match a.string_or("nearest_mode", "round_prefer_floor")? {
            "round_prefer_floor" => NearestMode::RoundPreferFloor,
            "round_prefer_ceil" => NearestMode::RoundPreferCeil,
            "floor" => NearestMode::Floor,
            "ceil" => NearestMode::Ceil,
            m => return Err(op_err!("unknown nearest_mode {m:?}")),
        };
        let mode = match a.string_or("mode", "nearest")? {
            "nearest" => Mode::Nearest(nearest),
            "linear" => Mode::Linear,
            "cubic" => Mode::Cubic(a.float_or("cubic_coeff_a", -0.75)? as f64),
            m => return Err(op_err!("unknown mode {m:?}")),
        };
        let opset10 = ctx.opset < 11;
        // Resize-10 has no coordinate_transformation_mode; it behaves as "asymmetric".
        let default_coord = if opset10 { "asymmetric" } else { "half_pixel" };
        let coord = match a.string_or("coordinate_transformation_mode", default_coord)? {
            "half_pixel" => Coord::HalfPixel,
            "half_pixel_symmetric" => Coord::HalfPixelSymmetric,
            "pytorch_half_pixel" => Coord::PytorchHalfPixel,
            "align_corners" => Coord::AlignCorners,
            "asymmetric" => Coord::Asymmetric,
            "tf_crop_and_resize" => Coord::TfCropAndResize,
            m => return Err(op_err!("unknown coordinate_transformation_mode {m:?}")),
        };
        let policy = match a.string_or("keep_aspect_ratio_policy", "stretch")? {
            "stretch" => AspectPolicy::Stretch,
            "not_larger" => AspectPolicy::NotLarger,
            "not_smaller" => AspectPolicy::NotSmaller,
            p => return Err(op_err!("unknown keep_aspect_ratio_policy {p:?}")),
        };
        let antialias = a.int_or("antialias", 0)? != 0;
        ensure!(
            !(antialias && matches!(mode, Mode::Nearest(_))),
            "antialias is not supported with mode nearest"
        );
        Ok(Resize {
            mode,
            coord,
            exclude_outside: a.int_or("exclude_outside", 0)? != 0,
            extrapolation: a.float_or("extrapolation_value", 0.0)?,
            antialias,
            axes: a.ints("axes")?.map(<[i64]>::to_vec),
            policy,
            inputs: if opset10 {
                Inputs::Scales
            } else {
                Inputs::RoiScalesSizes
            },
        })
    }

    /// Upsample is Resize with asymmetric coordinates and floor rounding.
    fn build_upsample(ctx: &BuildCtx) -> Result<Self> {
        let a = ctx.attrs();
        let mode = match a.string_or("mode", "nearest")? {
            "nearest" => Mode::Nearest(NearestMode::Floor),
            "linear" | "bilinear" => Mode::Linear,
            m => return Err(op_err!("unknown Upsample mode {m:?}")),
        };
        let inputs = match a.floats("scales")? {
            Some(s) if ctx.opset < 9 => Inputs::Fixed(s.to_vec()),
            _ => Inputs::Scales,
        };
        Ok(Resize {
            mode,
            coord: Coord::Asymmetric,
            exclude_outside: false,
            extrapolation: 0.0,
            antialias: false,
            axes: None,
            policy: AspectPolicy::Stretch,
            inputs,
        })
    }

    /// Output sizes, per-axis scale factors and per-axis roi `(start, end)` for a full-rank
    /// input of shape `shape`.
    fn plan(&self, shape: &[usize], inputs: &[Option<&Tensor>]) -> Result<Plan> {
        let rank = shape.len();
        let axes: Vec<usize> = match &self.axes {
            Some(axes) => {
                let axes = axes
                    .iter()
                    .map(|&a| normalize_axis(a, rank))
                    .collect::<Result<Vec<_>>>()?;
                ensure!(
                    (1..axes.len()).all(|i| !axes[..i].contains(&axes[i])),
                    "axes {axes:?} repeat an axis"
                );
                axes
            }
            None => (0..rank).collect(),
        };
        let (roi, scales, sizes) = match &self.inputs {
            Inputs::Fixed(s) => (None, Some(s.iter().map(|&v| v as f64).collect()), None),
            Inputs::Scales => (None, Some(input(inputs, 1)?.to_f64_vec()?), None),
            Inputs::RoiScalesSizes => {
                let nonempty = |i| opt_input(inputs, i).filter(|t: &&Tensor| !t.is_empty());
                let roi = nonempty(1).map(|t| t.to_f64_vec()).transpose()?;
                let scales = nonempty(2).map(|t| t.to_f64_vec()).transpose()?;
                let sizes = nonempty(3).map(|t| t.to_i64_vec()).transpose()?;
                (roi, scales, sizes)
            }
        };
        let n = axes.len();
        let mut out = shape.to_vec();
        let mut scale = vec![1f64; rank];
        match (scales, sizes) {
            (_, Some(sizes)) => {
                ensure!(
                    sizes.len() == n,
                    "sizes has {} entries for {n} axes",
                    sizes.len()
                );
                ensure!(
                    sizes.iter().all(|&s| s >= 0),
                    "sizes {sizes:?} are negative"
                );
                for (&a, &s) in axes.iter().zip(&sizes) {
                    scale[a] = s as f64 / shape[a] as f64;
                    out[a] = s as usize;
                }
                if self.policy != AspectPolicy::Stretch {
                    let per_axis = axes.iter().map(|&a| scale[a]);
                    let s = if self.policy == AspectPolicy::NotLarger {
                        per_axis.fold(f64::INFINITY, f64::min)
                    } else {
                        per_axis.fold(f64::NEG_INFINITY, f64::max)
                    };
                    for &a in &axes {
                        scale[a] = s;
                        out[a] = (s * shape[a] as f64 + 0.5) as usize;
                    }
                }
            }
            (Some(scales), None) => {
                ensure!(
                    scales.len() == n,
                    "scales has {} entries for {n} axes",
                    scales.len()
                );
                ensure!(
                    scales.iter().all(|&s| s > 0.0),
                    "scales {scales:?} must be positive"
                );
                for (&a, &s) in axes.iter().zip(&scales) {
                    scale[a] = s;
                    out[a] = (s * shape[a] as f64) as usize;
                }
            }
            (None, None) => return Err(op_err!("one of scales and sizes is required")),
        }
        // A huge or infinite scale saturates the casts above: refuse an output that could
        // not be allocated before any tap table is sized by it.
        crate::tensor::check_tensor_bytes(
            crate::tensor::checked_numel(&out)?,
            std::mem::size_of::<f32>(),
        )?;
        let mut rois = vec![(0f64, 1f64); rank];
        if let Some(roi) = roi {
            ensure!(
                roi.len() == 2 * n,
                "roi has {} entries for {n} axes",
                roi.len()
            );
            for (i, &a) in axes.iter().enumerate() {
                rois[a] = (roi[i], roi[n + i]);
            }
        } else {
            ensure!(
                self.coord != Coord::TfCropAndResize,
                "tf_crop_and_resize needs a roi"
            );
        }
        Ok(Plan {
            axes,
            out,
            scale,
            roi: rois,
        })
    }

    /// The taps of one axis: for each output position, `n` (source index, weight) pairs, or
    /// `None` where tf_crop_and_resize extrapolates.
    fn taps(&self, len_in: usize, len_out: usize, scale: f64, roi: (f64, f64)) -> Taps {
        let n = self.support(scale);
        let mut idx = Vec::with_capacity(len_out * n);
        let mut weights = Vec::with_capacity(len_out * n);
        let mut outside = vec![false; len_out];
        let (win, wout) = (len_in as f64, scale * len_in as f64);
        for (y, outside) in outside.iter_mut().enumerate() {
            let yf = y as f64;
            let x = match self.coord {
                Coord::HalfPixel => (yf + 0.5) / scale - 0.5,
                Coord::HalfPixelSymmetric => {
                    let offset = win / 2.0 * (1.0 - len_out as f64 / wout);
                    offset + (yf + 0.5) / scale - 0.5
                }
                Coord::PytorchHalfPixel if wout == 1.0 => -0.5,
                Coord::PytorchHalfPixel => (yf + 0.5) / scale - 0.5,
                Coord::AlignCorners if wout == 1.0 => 0.0,
                Coord::AlignCorners => yf * (win - 1.0) / (wout - 1.0),
                Coord::Asymmetric => yf / scale,
                Coord::TfCropAndResize => {
                    let x = if wout == 1.0 {
                        (roi.1 - roi.0) * (win - 1.0) / 2.0
                    } else {
                        yf * (roi.1 - roi.0) * (win - 1.0) / (wout - 1.0)
                    };
                    let x = x + roi.0 * (win - 1.0);
                    *outside = x < 0.0 || x > win - 1.0;
                    x
                }
            };
            // The ratio is in (0, 1]: an integral coordinate prefers the pixel on its left.
            let ratio = if x == x.floor() { 1.0 } else { x - x.floor() };
            let start = idx.len();
            self.coeffs(ratio, scale, n, &mut weights);
            // The n nearest indices to x (ties to the smaller), as in the reference.
            let pad = n.div_ceil(2) as f64;
            let xp = x + pad;
            let p = xp.floor();
            let frac = xp - p;
            let half = (n / 2) as f64;
            let offset = if n.is_multiple_of(2) {
                if frac == 0.0 {
                    -half
                } else {
                    -half + 1.0
                }
            } else {
                let base = -(((n - 1) / 2) as f64);
                if frac <= 0.5 {
                    base
                } else {
                    base + 1.0
                }
            };
            let first = p + offset - pad;
            let last = len_in as f64 - 1.0;
            for k in 0..n {
                let i = first + k as f64;
                if self.exclude_outside && (i < 0.0 || i > last) {
                    weights[start + k] = 0.0;
                }
                idx.push(i.clamp(0.0, last.max(0.0)) as usize);
            }
            if self.exclude_outside {
                let sum: f64 = weights[start..].iter().sum();
                let sum = if sum == 0.0 { 1.0 } else { sum };
                weights[start..].iter_mut().for_each(|w| *w /= sum);
            }
        }
        Taps {
            n,
            idx,
            weights: weights.into_iter().map(|w| w as f32).collect(),
            outside: (self.coord == Coord::TfCropAndResize).then_some(outside),
        }
    }

    /// Number of taps per output position.
    fn support(&self, scale: f64) -> usize {
        let s = scale.min(1.0);
        match self.mode {
            Mode::Nearest(_) => 2,
            Mode::Linear if self.antialias => (2.0 - 2.0 * ((-1.0 / s).floor() + 1.0)) as usize,
            Mode::Linear => 2,
            Mode::Cubic(_) if self.antialias => {
                let start = (-2.0 / s).floor() + 1.0;
                (2.0 - 2.0 * start) as usize
            }
            Mode::Cubic(_) => 4,
        }
    }

    /// Appends the `n` interpolation weights for a position `ratio` past its left pixel.
    fn coeffs(&self, ratio: f64, scale: f64, n: usize, out: &mut Vec<f64>) {
        let start = out.len();
        match self.mode {
            Mode::Nearest(m) => {
                let right = if ratio == 1.0 {
                    true
                } else {
                    match m {
                        NearestMode::RoundPreferFloor => ratio > 0.5,
                        NearestMode::RoundPreferCeil => ratio >= 0.5,
                        NearestMode::Floor => false,
                        NearestMode::Ceil => true,
                    }
                };
                out.extend([!right as u8 as f64, right as u8 as f64]);
            }
            Mode::Linear if self.antialias => {
                let s = scale.min(1.0);
                let first = (-1.0 / s).floor() + 1.0;
                out.extend(
                    (0..n).map(|k| (1.0 - ((first + k as f64 - ratio) * s).abs()).clamp(0.0, 1.0)),
                );
            }
            Mode::Linear => out.extend([1.0 - ratio, ratio]),
            Mode::Cubic(a) if self.antialias => {
                let s = scale.min(1.0);
                let first = (-2.0 / s).floor() + 1.0;
                out.extend((0..n).map(|k| cubic(a, s * (first + k as f64 - ratio))));
            }
            Mode::Cubic(a) => out.extend([
                cubic(a, ratio + 1.0),
                cubic(a, ratio),
                cubic(a, 1.0 - ratio),
                cubic(a, 2.0 - ratio),
            ]),
        }
        if self.antialias {
            let sum: f64 = out[start..].iter().sum();
            out[start..].iter_mut().for_each(|w| *w /= sum);
        }
    }
}

/// The cubic convolution kernel with parameter `a` at distance `x`.
fn cubic(a: f64, x: f64) -> f64 {
    let x = x.abs();
    if x <= 1.0 {
        ((a + 2.0) * x - (a + 3.0)) * x * x + 1.0
    } else if x < 2.0 {
        ((a * x - 5.0 * a) * x + 8.0 * a) * x - 4.0 * a
    } else {
        0.0
    }
}

struct Plan {
    axes: Vec<usize>,
    out: Vec<usize>,
    scale: Vec<f64>,
    roi: Vec<(f64, f64)>,
}

/// Per output position `o` of one axis: sources `idx[o*n..][..n]` with `weights[o*n..][..n]`.
struct Taps {
    n: usize,
    idx: Vec<usize>,
    weights: Vec<f32>,
    /// tf_crop_and_resize: positions that take the extrapolation value.
    outside: Option<Vec<bool>>,
}

/// Resizes axis `axis` of `src` (shape `shape`) to `len_out`, returning the new data.
fn apply_axis(src: &[f32], shape: &[usize], axis: usize, taps: &Taps, fill: f32) -> Vec<f32> {
    let inner: usize = shape[axis + 1..].iter().product();
    let len_in = shape[axis];
    let len_out = taps.idx.len() / taps.n;
    let outer: usize = shape[..axis].iter().product();
    let mut dst = vec![0f32; outer * len_out * inner];
    let block_in = len_in * inner;
    let block_out = len_out * inner;
    if block_out == 0 {
        return dst;
    }
    let resize_block = |(o, out): (usize, &mut [f32])| {
        let src = &src[o * block_in..(o + 1) * block_in];
        for (y, row) in out.chunks_mut(inner).enumerate() {
            if taps.outside.as_ref().is_some_and(|m| m[y]) {
                row.fill(fill);
                continue;
            }
            let k = y * taps.n;
            for (&i, &w) in taps.idx[k..k + taps.n]
                .iter()
                .zip(&taps.weights[k..k + taps.n])
            {
                if w == 0.0 {
                    continue;
                }
                let from = &src[i * inner..(i + 1) * inner];
                row.iter_mut().zip(from).for_each(|(d, &s)| *d += w * s);
            }
        }
    };
    if dst.len() >= 1 << 15 {
        parallel::for_each(dst.par_chunks_mut(block_out).enumerate(), resize_block);
    } else {
        dst.chunks_mut(block_out).enumerate().for_each(resize_block);
    }
    dst
}

impl Kernel for Resize {
    fn run(&self, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>> {
        let x = input(inputs, 0)?;
        ensure!(
            x.dtype() != DType::Bool,
            "Resize does not take bool tensors"
        );
        let plan = self.plan(x.shape(), inputs)?;
        let mut shape = x.shape().to_vec();
        let mut data = x.cast(DType::F32)?.into_vec::<f32>()?;
        for &a in &plan.axes {
            let (len_in, len_out, scale, roi) = (shape[a], plan.out[a], plan.scale[a], plan.roi[a]);
            // As in the reference, an axis left as it is is not resampled.
            let identity = (scale - 1.0).abs() < 1e-9 && len_out == len_in && roi == (0.0, 1.0);
            if identity {
                continue;
            }
            ensure!(
                len_in > 0 || len_out == 0,
                "cannot resize an empty axis {a} to {len_out}"
            );
            let taps = self.taps(len_in, len_out, scale, roi);
            data = apply_axis(&data, &shape, a, &taps, self.extrapolation);
            shape[a] = len_out;
        }
        if !x.dtype().is_float() {
            data.iter_mut().for_each(|v| *v = v.round_ties_even());
        }
        Tensor::from_vec(shape, data)?
            .cast(x.dtype())
            .map(|t| vec![t])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resize(mode: Mode, coord: Coord, x: &[f32], scale: f32) -> Vec<f32> {
        let op = Resize {
            mode,
            coord,
            exclude_outside: false,
            extrapolation: 0.0,
            antialias: false,
            axes: None,
            policy: AspectPolicy::Stretch,
            inputs: Inputs::Fixed(vec![scale]),
        };
        let x = Tensor::from_vec(vec![x.len()], x.to_vec()).unwrap();
        op.run(&[Some(&x)]).unwrap()[0]
            .as_slice::<f32>()
            .unwrap()
            .to_vec()
    }

    #[test]
    fn nearest_upsampling_repeats() {
        let near = Mode::Nearest(NearestMode::Floor);
        assert_eq!(
            resize(near, Coord::Asymmetric, &[1., 2.], 2.0),
            [1., 1., 2., 2.]
        );
    }

    #[test]
    fn linear_half_pixel_matches_bilinear() {
        // Sources -0.25, 0.25, 0.75, 1.25 with edge clamping (as torch's bilinear).
        assert_eq!(
            resize(Mode::Linear, Coord::HalfPixel, &[1., 2.], 2.0),
            [1., 1.25, 1.75, 2.]
        );
    }

    #[test]
    fn cubic_kernel_interpolates_at_knots() {
        assert_eq!(cubic(-0.75, 0.0), 1.0);
        assert_eq!(cubic(-0.75, 1.0), 0.0);
        assert_eq!(cubic(-0.75, 2.0), 0.0);
        // (a + 2)/8 - (a + 3)/4 + 1 at a = -0.75.
        assert!((cubic(-0.75, 0.5) - 0.59375).abs() < 1e-12);
    }

    #[test]
    fn wrong_scale_count_is_an_error() {
        let op = Resize::build_upsample_for_test();
        let x = Tensor::from_vec(vec![1, 2], vec![1f32, 2.]).unwrap();
        let scales = Tensor::from_vec(vec![1], vec![2f32]).unwrap();
        assert!(op.run(&[Some(&x), Some(&scales)]).is_err());
    }

    impl Resize {
        fn build_upsample_for_test() -> Resize {
            Resize {
                mode: Mode::Linear,
                coord: Coord::Asymmetric,
                exclude_outside: false,
                extrapolation: 0.0,
                antialias: false,
                axes: None,
                policy: AspectPolicy::Stretch,
                inputs: Inputs::Scales,
            }
        }
    }
}
