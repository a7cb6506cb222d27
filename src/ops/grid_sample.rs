//! Sampling grids: GridSample (nearest, linear and cubic interpolation with zeros, border or
//! reflection padding, over any number of spatial dimensions) and AffineGrid (2-D and 3-D).
//!
//! GridSample follows the ONNX reference (PyTorch's `grid_sample`): interpolation is separable,
//! so each output point becomes a list of (source offset, weight) taps, the product of the
//! per-axis taps, computed once per point and applied to every channel. Values are computed in
//! f32 and converted back to the input's float type.

use super::matmul::from_f32;
use super::util::input;
use super::{BuildCtx, Kernel};
use crate::error::Result;
use crate::tensor::{DType, Tensor};
use crate::{ensure, op_err};
use infer_kernels::parallel;
use rayon::prelude::*;

pub(crate) fn build(op: &str, ctx: &BuildCtx) -> Option<Result<Box<dyn Kernel>>> {
    Some(match op {
        "GridSample" => GridSample::build(ctx).map(|k| Box::new(k) as Box<dyn Kernel>),
        "AffineGrid" => ctx.attrs().int_or("align_corners", 0).map(|a| {
            Box::new(AffineGrid {
                align_corners: a != 0,
            }) as Box<dyn Kernel>
        }),
        _ => return None,
    })
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Mode {
    Nearest,
    Linear,
    Cubic,
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Padding {
    Zeros,
    Border,
    Reflection,
}

#[derive(Debug)]
struct GridSample {
    mode: Mode,
    padding: Padding,
    align_corners: bool,
}

impl GridSample {
    fn build(ctx: &BuildCtx) -> Result<Self> {
        let attrs = ctx.attrs();
        // Opset 16 named the modes bilinear/bicubic; opset 20 renamed them linear/cubic.
        let mode = match attrs.string_or("mode", "linear")? {
            "nearest" => Mode::Nearest,
            "linear" | "bilinear" => Mode::Linear,
            "cubic" | "bicubic" => Mode::Cubic,
            m => return Err(op_err!("unknown GridSample mode '{m}'")),
        };
        let padding = match attrs.string_or("padding_mode", "zeros")? {
            "zeros" => Padding::Zeros,
            "border" => Padding::Border,
            "reflection" => Padding::Reflection,
            p => return Err(op_err!("unknown GridSample padding_mode '{p}'")),
        };
        Ok(GridSample {
            mode,
            padding,
            align_corners: attrs.int_or("align_corners", 0)? != 0,
        })
    }

    /// The range `[min, max]` a coordinate is reflected into along an axis of `size`.
    fn bounds(&self, size: usize) -> (f32, f32) {
        if self.align_corners {
            (0.0, size as f32 - 1.0)
        } else {
            (-0.5, size as f32 - 0.5)
        }
    }

    /// Maps a normalized coordinate in [-1, 1] onto an axis of `size` pixels.
    fn denormalize(&self, v: f32, size: usize) -> f32 {
        let s = size as f32;
        if self.align_corners {
            (v + 1.0) / 2.0 * (s - 1.0)
        } else {
            ((v + 1.0) * s - 1.0) / 2.0
        }
    }

    /// The source index of integer position `i` on an axis of `size`, or `None` where it
    /// reads the zero padding.
    fn pixel(&self, i: i64, size: usize) -> Option<usize> {
        let last = size as i64 - 1;
        match self.padding {
            Padding::Zeros => (0..=last).contains(&i).then_some(i as usize),
            Padding::Border => Some(i.clamp(0, last) as usize),
            Padding::Reflection => {
                let (lo, hi) = self.bounds(size);
                Some((reflect(i as f32, lo, hi) as i64).clamp(0, last) as usize)
            }
        }
    }

    /// The taps of one axis, `(index, weight)`, for normalized coordinate `v`.
    fn axis_taps(&self, v: f32, size: usize, taps: &mut Vec<(Option<usize>, f32)>) {
        taps.clear();
        let mut x = self.denormalize(v, size);
        if self.mode == Mode::Nearest {
            // PyTorch rounds half to even.
            x = x.round_ties_even();
        }
        let (lo, hi) = self.bounds(size);
        if x < lo || x > hi {
            match self.padding {
                Padding::Border => x = x.clamp(0.0, size as f32 - 1.0),
                Padding::Reflection => x = reflect(x, lo, hi),
                Padding::Zeros => {}
            }
        }
        if !x.is_finite() {
            // A NaN or infinite grid value samples the padding (zero, or the clamped edge).
            x = if x.is_nan() {
                -1e30
            } else {
                x.clamp(-1e30, 1e30)
            };
        }
        let x0 = x.floor();
        let t = x - x0;
        let x0 = x0 as i64;
        match self.mode {
            Mode::Nearest => taps.push((self.pixel(x as i64, size), 1.0)),
            Mode::Linear => {
                taps.push((self.pixel(x0, size), 1.0 - t));
                taps.push((self.pixel(x0 + 1, size), t));
            }
            Mode::Cubic => {
                for (k, w) in cubic_coeffs(t).into_iter().enumerate() {
                    taps.push((self.pixel(x0 - 1 + k as i64, size), w));
                }
            }
        }
    }
}

/// Reflects `x` by the nearer border until it lies within `[lo, hi]`.
fn reflect(x: f32, lo: f32, hi: f32) -> f32 {
    let range = hi - lo;
    if range <= 0.0 {
        return lo;
    }
    let (dx, from_lo) = if x < lo {
        (lo - x, true)
    } else if x > hi {
        (x - hi, false)
    } else {
        return x;
    };
    let n = (dx / range).floor();
    let r = dx - n * range;
    // An even number of whole reflections leaves us walking in from the same border.
    if (n as i64 % 2 == 0) == from_lo {
        lo + r
    } else {
        hi - r
    }
}

/// Keys cubic convolution weights (a = -0.75) of the taps at -1, 0, 1, 2 around `t` in [0, 1).
fn cubic_coeffs(t: f32) -> [f32; 4] {
    const A: f32 = -0.75;
    let far = |x: f32| ((A * x - 5.0 * A) * x + 8.0 * A) * x - 4.0 * A;
    let near = |x: f32| ((A + 2.0) * x - (A + 3.0)) * x * x + 1.0;
    [far(t + 1.0), near(t), near(1.0 - t), far(2.0 - t)]
}

impl Kernel for GridSample {
    fn run(&self, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>> {
        let (x, grid) = (input(inputs, 0)?, input(inputs, 1)?);
        let (xs, gs) = (x.shape(), grid.shape());
        ensure!(xs.len() >= 3, "X must be [N, C, spatial...], got {xs:?}");
        let r = xs.len() - 2;
        ensure!(
            gs.len() == r + 2 && gs[0] == xs[0] && gs[r + 1] == r,
            "Grid has shape {gs:?}, expected [{}, out spatial ({r} dims)..., {r}] for X {xs:?}",
            xs[0]
        );
        let (n, c, spatial) = (xs[0], xs[1], &xs[2..]);
        let in_size: usize = spatial.iter().product();
        let points: usize = gs[1..=r].iter().product();
        let xd = x.cast(DType::F32)?.into_vec::<f32>()?;
        let gd = grid.cast(DType::F32)?.into_vec::<f32>()?;
        let in_strides = super::util::strides_of(spatial);
        let mut out =
            crate::tensor::filled_vec(crate::tensor::checked_numel(&[n, c, points])?, 0.0f32)?;
        // An empty output samples nothing (and an empty X has no pixel to sample from).
        if !out.is_empty() {
            ensure!(in_size > 0, "cannot sample from X of shape {xs:?}");
            for b in 0..n {
                let taps = self.point_taps(
                    &gd[b * points * r..(b + 1) * points * r],
                    spatial,
                    &in_strides,
                );
                let src = &xd[b * c * in_size..(b + 1) * c * in_size];
                parallel::for_each(
                    out[b * c * points..(b + 1) * c * points]
                        .par_chunks_mut(points)
                        .zip(src.par_chunks(in_size.max(1))),
                    |(dst, plane)| {
                        for (o, tp) in dst.iter_mut().zip(taps.chunks_exact(taps.len() / points)) {
                            *o = tp
                                .iter()
                                .map(|&(off, w)| off.map_or(0.0, |off| w * plane[off]))
                                .sum();
                        }
                    },
                );
            }
        }
        let mut shape = vec![n, c];
        shape.extend_from_slice(&gs[1..=r]);
        Ok(vec![from_f32(x.dtype(), shape, out)?])
    }
}

impl GridSample {
    /// For each output point of one batch item, the taps of every corner of its neighbourhood
    /// (`taps_per_axis^r` entries per point): source offsets within a channel plane and
    /// weights. The grid lists coordinates innermost axis first (x, y, z).
    fn point_taps(
        &self,
        grid: &[f32],
        spatial: &[usize],
        strides: &[usize],
    ) -> Vec<(Option<usize>, f32)> {
        let r = spatial.len();
        let mut axis: Vec<Vec<(Option<usize>, f32)>> = vec![Vec::new(); r];
        let mut all = Vec::new();
        let mut corner: Vec<(Option<usize>, f32)> = Vec::new();
        for coords in grid.chunks_exact(r) {
            for (d, taps) in axis.iter_mut().enumerate() {
                self.axis_taps(coords[r - 1 - d], spatial[d], taps);
            }
            // Cartesian product of the axes' taps: offsets add, weights multiply.
            corner.clear();
            corner.push((Some(0), 1.0));
            for (d, taps) in axis.iter().enumerate() {
                let prev = std::mem::take(&mut corner);
                for &(off, w) in &prev {
                    for &(i, wi) in taps {
                        let off = off.zip(i).map(|(o, i)| o + i * strides[d]);
                        corner.push((off, w * wi));
                    }
                }
            }
            all.extend_from_slice(&corner);
        }
        all
    }
}

#[derive(Debug)]
struct AffineGrid {
    align_corners: bool,
}

impl AffineGrid {
    /// The normalized coordinate of pixel `i` of `size` along one axis.
    fn coord(&self, i: usize, size: usize) -> f32 {
        if self.align_corners {
            if size <= 1 {
                -1.0
            } else {
                -1.0 + 2.0 * i as f32 / (size - 1) as f32
            }
        } else {
            -1.0 + (2 * i + 1) as f32 / size as f32
        }
    }
}

impl Kernel for AffineGrid {
    fn run(&self, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>> {
        let (theta, size) = (input(inputs, 0)?, input(inputs, 1)?);
        let size = size.to_i64_vec()?;
        let dims = super::movement::dims_from_i64(&size)?;
        ensure!(
            dims.len() == 4 || dims.len() == 5,
            "size must be [N, C, H, W] or [N, C, D, H, W], got {size:?}"
        );
        let r = dims.len() - 2;
        let n = dims[0];
        ensure!(
            theta.shape() == [n, r, r + 1],
            "theta has shape {:?}, expected [{n}, {r}, {}]",
            theta.shape(),
            r + 1
        );
        let th = theta.cast(DType::F32)?.into_vec::<f32>()?;
        let spatial = &dims[2..];
        let points: usize = spatial.iter().product();
        // Homogeneous base coordinates of every point, innermost axis first: (x, y[, z], 1).
        let mut base = Vec::with_capacity(points * (r + 1));
        let strides = super::util::strides_of(spatial);
        for p in 0..points {
            for d in (0..r).rev() {
                let i = p / strides[d] % spatial[d];
                base.push(self.coord(i, spatial[d]));
            }
            base.push(1.0);
        }
        let mut out = Vec::with_capacity(n * points * r);
        for t in th.chunks_exact(r * (r + 1)) {
            for h in base.chunks_exact(r + 1) {
                for row in t.chunks_exact(r + 1) {
                    out.push(row.iter().zip(h).map(|(a, b)| a * b).sum());
                }
            }
        }
        let mut shape = vec![n];
        shape.extend_from_slice(spatial);
        shape.push(r);
        Ok(vec![from_f32(theta.dtype(), shape, out)?])
    }
}

#[cfg(test)]
mod tests {
    use crate::ir::Attr;
    use crate::ops::movement::testing::{assert_close, run1, t, vals};

    /// X = arange(6).reshape(1, 1, 2, 3) sampled at (x, y) = (-1.2, -0.5), (0.3, 0.9),
    /// (1.4, -1.6); references from onnx.reference.
    fn sample(mode: &str, padding: &str, align_corners: i64) -> Vec<f32> {
        let x = t(&[1, 1, 2, 3], (0..6).map(|v| v as f32).collect());
        let grid = t(&[1, 1, 3, 2], vec![-1.2f32, -0.5, 0.3, 0.9, 1.4, -1.6]);
        let attrs = [
            ("mode", Attr::String(mode.into())),
            ("padding_mode", Attr::String(padding.into())),
            ("align_corners", Attr::Int(align_corners)),
        ];
        let y = run1("GridSample", 22, &attrs, &[&x, &grid]).unwrap();
        assert_eq!(y.shape(), [1, 1, 1, 3]);
        vals::<f32>(&y)
    }

    #[test]
    fn linear_with_reflection_padding() {
        assert_close(&sample("linear", "reflection", 0), &[0.0, 4.45, 2.2], 1e-5);
    }

    #[test]
    fn cubic_with_border_padding_and_aligned_corners() {
        assert_close(
            &sample("cubic", "border", 1),
            &[0.6796875, 4.271_313, 2.0],
            1e-5,
        );
    }

    #[test]
    fn nearest_with_zero_padding() {
        assert_close(&sample("nearest", "zeros", 0), &[0.0, 4.0, 0.0], 0.0);
    }

    #[test]
    fn grid_must_match_the_spatial_rank() {
        let x = t(&[1, 1, 2, 3], vec![0.0f32; 6]);
        let grid = t(&[1, 1, 3, 3], vec![0.0f32; 9]);
        assert!(run1("GridSample", 22, &[], &[&x, &grid]).is_err());
    }

    #[test]
    fn affine_grid_2d_transforms_pixel_centres() {
        // theta = [[1, 0.5, 0.1], [-0.2, 2, 0]] over a 2x3 image (onnx.reference).
        let theta = t(&[1, 2, 3], vec![1.0f32, 0.5, 0.1, -0.2, 2.0, 0.0]);
        let size = t(&[4], vec![1i64, 1, 2, 3]);
        let y = run1("AffineGrid", 20, &[], &[&theta, &size]).unwrap();
        assert_eq!(y.shape(), [1, 2, 3, 2]);
        let want = [
            -0.816_666_6,
            -0.866_666_7,
            -0.15,
            -1.0,
            0.51666665,
            -1.1333333,
            -0.316_666_66,
            1.1333333,
            0.35,
            1.0,
            1.0166667,
            0.8666667,
        ];
        assert_close(&vals::<f32>(&y), &want, 1e-5);
    }
}
