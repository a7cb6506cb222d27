//! DeformConv (opset 19, 2-D): a convolution whose kernel taps are moved by learned offsets
//! (and optionally scaled by a mask), sampling the input bilinearly with zero padding.
//!
//! The sampled taps form a column matrix `[C_in · kH · kW, oH · oW]` per image, shared by all
//! output channels, so each output channel is a dot product over the columns of its group.

use super::util::{input, opt_input};
use super::{BuildCtx, Kernel};
use crate::error::Result;
use crate::tensor::Tensor;
use crate::{ensure, op_err};
use infer_kernels::parallel;
use rayon::prelude::*;

pub(crate) fn build(op: &str, ctx: &BuildCtx) -> Option<Result<Box<dyn Kernel>>> {
    (op == "DeformConv").then(|| DeformConv::build(ctx).map(|k| Box::new(k) as Box<dyn Kernel>))
}

#[derive(Debug)]
struct DeformConv {
    kernel: Option<[usize; 2]>,
    dilations: [usize; 2],
    strides: [usize; 2],
    /// [top, left, bottom, right].
    pads: [usize; 4],
    group: usize,
    offset_group: usize,
}

fn fixed<const N: usize>(ctx: &BuildCtx, name: &str, default: usize) -> Result<[usize; N]> {
    match ctx.attrs().ints(name)? {
        None => Ok([default; N]),
        Some(v) => {
            let v: Vec<usize> = v
                .iter()
                .map(|&x| usize::try_from(x).map_err(|_| op_err!("{name} must not be negative")))
                .collect::<Result<_>>()?;
            v.try_into().map_err(|_| {
                op_err!("{name} must have {N} values (only 2-D DeformConv is supported)")
            })
        }
    }
}

impl DeformConv {
    fn build(ctx: &BuildCtx) -> Result<Self> {
        let kernel = match ctx.attrs().has("kernel_shape") {
            true => Some(fixed::<2>(ctx, "kernel_shape", 0)?),
            false => None,
        };
        let positive = |name: &str| -> Result<usize> {
            let v = ctx.attrs().int_or(name, 1)?;
            usize::try_from(v)
                .ok()
                .filter(|&v| v > 0)
                .ok_or_else(|| op_err!("{name} must be positive, got {v}"))
        };
        let op = DeformConv {
            kernel,
            dilations: fixed(ctx, "dilations", 1)?,
            strides: fixed(ctx, "strides", 1)?,
            pads: fixed(ctx, "pads", 0)?,
            group: positive("group")?,
            offset_group: positive("offset_group")?,
        };
        ensure!(
            op.strides.iter().chain(&op.dilations).all(|&v| v > 0),
            "strides and dilations must be positive"
        );
        Ok(op)
    }
}

/// Bilinear sample of an `h × w` plane at `(y, x)`; corners outside the plane count as 0.
fn sample(plane: &[f64], h: usize, w: usize, y: f64, x: f64) -> f64 {
    let (y0, x0) = (y.floor(), x.floor());
    let (ly, lx) = (y - y0, x - x0);
    let at = |yy: f64, xx: f64| -> f64 {
        if yy < 0.0 || xx < 0.0 || yy >= h as f64 || xx >= w as f64 {
            0.0
        } else {
            plane[yy as usize * w + xx as usize]
        }
    };
    at(y0, x0) * (1.0 - ly) * (1.0 - lx)
        + at(y0, x0 + 1.0) * (1.0 - ly) * lx
        + at(y0 + 1.0, x0) * ly * (1.0 - lx)
        + at(y0 + 1.0, x0 + 1.0) * ly * lx
}

impl Kernel for DeformConv {
    fn run(&self, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>> {
        let (x, w, offset) = (input(inputs, 0)?, input(inputs, 1)?, input(inputs, 2)?);
        ensure!(x.dtype().is_float(), "X must be a float tensor");
        let (xs, ws) = (x.shape(), w.shape());
        ensure!(
            xs.len() == 4 && ws.len() == 4,
            "only 2-D DeformConv is supported"
        );
        let (n, c_in, ih, iw) = (xs[0], xs[1], xs[2], xs[3]);
        let (c_out, c_per_group) = (ws[0], ws[1]);
        let [kh, kw] = self.kernel.unwrap_or([ws[2], ws[3]]);
        ensure!([kh, kw] == ws[2..], "kernel_shape differs from W {ws:?}");
        let (g, og) = (self.group, self.offset_group);
        ensure!(
            c_in == c_per_group * g && c_out % g == 0 && c_in % og == 0,
            "channels do not split into groups: X {xs:?}, W {ws:?}, group {g}, offset_group {og}"
        );
        let [dh, dw] = self.dilations;
        let [sh, sw] = self.strides;
        let [pt, pl, pb, pr] = self.pads;
        let span_h = (kh - 1) * dh + 1;
        let span_w = (kw - 1) * dw + 1;
        ensure!(
            ih + pt + pb >= span_h && iw + pl + pr >= span_w,
            "the kernel does not fit the padded input"
        );
        let (oh, ow) = (
            (ih + pt + pb - span_h) / sh + 1,
            (iw + pl + pr - span_w) / sw + 1,
        );
        let taps = kh * kw;
        ensure!(
            offset.shape() == [n, og * taps * 2, oh, ow],
            "offset must be {:?}, got {:?}",
            [n, og * taps * 2, oh, ow],
            offset.shape()
        );
        let mask = opt_input(inputs, 4).map(|m| m.to_f64_vec()).transpose()?;
        if mask.is_some() {
            let m = input(inputs, 4)?.shape();
            ensure!(
                m == [n, og * taps, oh, ow],
                "mask must be {:?}, got {m:?}",
                [n, og * taps, oh, ow]
            );
        }
        let bias = opt_input(inputs, 3).map(|b| b.to_f64_vec()).transpose()?;
        if let Some(b) = &bias {
            ensure!(
                b.len() == c_out,
                "B has {} values for {c_out} output channels",
                b.len()
            );
        }
        let (xd, wd, od) = (x.to_f64_vec()?, w.to_f64_vec()?, offset.to_f64_vec()?);
        let (plane, out_plane) = (ih * iw, oh * ow);
        let c_per_og = c_in / og;
        let oc_per_group = c_out / g;
        let mut out = vec![0.0; n * c_out * out_plane];
        parallel::for_each(
            out.par_chunks_mut(c_out * out_plane).enumerate(),
            |(b, out_img)| {
                // cols[(c · taps + t) · out_plane + p]: input channel c sampled at tap t for
                // output position p, already scaled by the mask.
                let mut cols = vec![0.0; c_in * taps * out_plane];
                for c in 0..c_in {
                    let o = c / c_per_og;
                    let src = &xd[(b * c_in + c) * plane..][..plane];
                    for t in 0..taps {
                        let (ki, kj) = (t / kw, t % kw);
                        let off_y = &od[((b * og + o) * taps + t) * 2 * out_plane..][..out_plane];
                        let off_x =
                            &od[(((b * og + o) * taps + t) * 2 + 1) * out_plane..][..out_plane];
                        let col = &mut cols[(c * taps + t) * out_plane..][..out_plane];
                        for (p, v) in col.iter_mut().enumerate() {
                            let (i, j) = (p / ow, p % ow);
                            let y = (i * sh + ki * dh) as f64 - pt as f64 + off_y[p];
                            let xx = (j * sw + kj * dw) as f64 - pl as f64 + off_x[p];
                            let m = mask
                                .as_ref()
                                .map_or(1.0, |m| m[((b * og + o) * taps + t) * out_plane + p]);
                            *v = m * sample(src, ih, iw, y, xx);
                        }
                    }
                }
                for (oc, dst) in out_img.chunks_mut(out_plane).enumerate() {
                    dst.fill(bias.as_ref().map_or(0.0, |bias| bias[oc]));
                    let grp = oc / oc_per_group;
                    for ci in 0..c_per_group {
                        let c = grp * c_per_group + ci;
                        for t in 0..taps {
                            let wv = wd[(oc * c_per_group + ci) * taps + t];
                            let col = &cols[(c * taps + t) * out_plane..][..out_plane];
                            dst.iter_mut().zip(col).for_each(|(d, v)| *d += wv * v);
                        }
                    }
                }
            },
        );
        let out = Tensor::from_vec(vec![n, c_out, oh, ow], out)?;
        Ok(vec![out.cast(x.dtype())?])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn op() -> DeformConv {
        DeformConv {
            kernel: None,
            dilations: [1, 1],
            strides: [1, 1],
            pads: [0, 0, 0, 0],
            group: 1,
            offset_group: 1,
        }
    }

    #[test]
    fn zero_offsets_are_a_plain_convolution() {
        // 3x3 ramp 0..9, 2x2 kernel of ones: sums of each 2x2 window.
        let x = Tensor::from_vec(vec![1, 1, 3, 3], (0..9).map(|v| v as f32).collect()).unwrap();
        let w = Tensor::from_vec(vec![1, 1, 2, 2], vec![1f32; 4]).unwrap();
        let off = Tensor::from_vec(vec![1, 8, 2, 2], vec![0f32; 32]).unwrap();
        let y = op()
            .run(&[Some(&x), Some(&w), Some(&off)])
            .unwrap()
            .remove(0);
        assert_eq!(y.as_slice::<f32>().unwrap(), &[8.0, 12.0, 20.0, 24.0]);
    }

    #[test]
    fn a_half_pixel_offset_interpolates() {
        // One tap (1x1 kernel) moved right by 0.5 on [0, 1, 2]: samples 0.5, 1.5 and
        // 2.5 (half of it outside the image, so 0.5 · 2 = 1).
        let x = Tensor::from_vec(vec![1, 1, 1, 3], vec![0f32, 1.0, 2.0]).unwrap();
        let w = Tensor::from_vec(vec![1, 1, 1, 1], vec![1f32]).unwrap();
        let off = Tensor::from_vec(vec![1, 2, 1, 3], vec![0f32, 0.0, 0.0, 0.5, 0.5, 0.5]).unwrap();
        let y = op()
            .run(&[Some(&x), Some(&w), Some(&off)])
            .unwrap()
            .remove(0);
        assert_eq!(y.as_slice::<f32>().unwrap(), &[0.5, 1.5, 1.0]);
    }
}
