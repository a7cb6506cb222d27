//! A pointwise Conv whose input is first scaled per image and channel: the product of a
//! squeeze-and-excitation block, `conv(x · s)`, fused by `plan::fuse::conv_scale` (`s`, one
//! factor per image and channel, is the Conv's input `SCALE_SLOT`).
//!
//! The Conv scales `x` as it is laid out (NCHW planes, channels last or channel blocks) into
//! a spare buffer and runs on that; a scale of any other shape (which the plan cannot rule
//! out: shapes are checked here) is multiplied out with broadcasting first, as the Mul would.

use super::conv::{Conv, SCALE_SLOT};
use super::elementwise::broadcast::binary;
use super::util::input;
use super::Kernel;
use crate::error::Result;
use crate::tensor::{spare, Tensor};
use crate::{ensure, DType};
use infer_kernels::depthwise_lanes::Layout;
use infer_kernels::gemm::COL_BLOCK;
use infer_kernels::parallel;
use rayon::prelude::*;

/// Floats scaled per rayon task, at least.
const MIN_TASK_FLOATS: usize = 1 << 14;

/// Runs `conv` on `inputs` (its input at `SCALE_SLOT` is `scale`).
pub(super) fn run(conv: &Conv, inputs: &[Option<&Tensor>], scale: &Tensor) -> Result<Vec<Tensor>> {
    let x = input(inputs, 0)?;
    let mut rest: Vec<Option<&Tensor>> = inputs[..SCALE_SLOT.min(inputs.len())].to_vec();
    let scaled = match per_channel(x, conv.layout.input, scale) {
        Some(dims) => scale_channels(x, conv.layout.input, dims, scale)?,
        None => {
            ensure!(
                conv.layout.input == Layout::Planes,
                "an input scale of shape {:?} does not fit a {:?} input of shape {:?}",
                scale.shape(),
                conv.layout.input,
                x.shape()
            );
            // Exact in f64 for every float type (a product of two f32 values fits in its
            // mantissa), then rounded once, as the Mul in the input's type would.
            let product = binary(
                &x.cast(DType::F64)?,
                &scale.cast(DType::F64)?,
                |a: f64, b: f64| a * b,
            )?;
            product.cast(x.dtype())?
        }
    };
    rest[0] = Some(&scaled);
    let out = conv.run(&rest);
    spare::give_back(scaled);
    out
}

/// `[N, C, H·W]` of `x` in `layout` when `scale` holds one f32 factor per image and channel
/// (`[N, C, 1, 1]`, or `[1, C, 1, 1]` for every image) and `x` is f32.
fn per_channel(x: &Tensor, layout: Layout, scale: &Tensor) -> Option<[usize; 3]> {
    let [n, c, hw] = match (layout, x.shape()) {
        (Layout::Planes, &[n, c, h, w]) => [n, c, h * w],
        (Layout::ChannelsLast, &[n, h, w, c]) => [n, c, h * w],
        (Layout::Blocked, &[n, blocks, h, w, COL_BLOCK]) => [n, blocks * COL_BLOCK, h * w],
        _ => return None,
    };
    let fits = matches!(scale.shape(), &[sn, sc, 1, 1] if (sn == n || sn == 1) && sc == c);
    (fits && x.dtype() == DType::F32 && scale.dtype() == DType::F32).then_some([n, c, hw])
}

/// `x · s` per image and channel, in `x`'s layout.
fn scale_channels(
    x: &Tensor,
    layout: Layout,
    [_, c, hw]: [usize; 3],
    scale: &Tensor,
) -> Result<Tensor> {
    let xs = x.as_slice::<f32>()?;
    let s = scale.as_slice::<f32>()?;
    // Every element is written below.
    let mut out = spare::f32_output(xs.len())?;
    let image = c * hw;
    // The factors of image `i` (one set for all when the scale has one image).
    let factors = |i: usize| &s[if s.len() == c { 0 } else { i * c }..][..c];
    // (Non-empty images only: chunks of `hw` floats need `hw > 0`.)
    if image > 0 {
        match layout {
            Layout::Planes => {
                let planes = out.par_chunks_mut(hw).zip(xs.par_chunks(hw));
                parallel::for_each(
                    planes
                        .enumerate()
                        .with_min_len(MIN_TASK_FLOATS.div_ceil(hw)),
                    |(p, (y, x))| {
                        let f = factors(p / c)[p % c];
                        y.iter_mut().zip(x).for_each(|(y, x)| *y = x * f);
                    },
                );
            }
            Layout::Blocked => {
                let block = COL_BLOCK * hw;
                let blocks = out.par_chunks_mut(block).zip(xs.par_chunks(block));
                parallel::for_each(
                    blocks
                        .enumerate()
                        .with_min_len(MIN_TASK_FLOATS.div_ceil(block)),
                    |(b, (y, x))| {
                        let per_image = c / COL_BLOCK;
                        let first = (b % per_image) * COL_BLOCK;
                        let f = &factors(b / per_image)[first..first + COL_BLOCK];
                        scale_cells(y, x, f);
                    },
                );
            }
            Layout::ChannelsLast => {
                let images = out.par_chunks_mut(image).zip(xs.par_chunks(image));
                parallel::for_each(images.enumerate(), |(i, (y, x))| {
                    scale_cells(y, x, factors(i));
                });
            }
        }
    }
    out.into_tensor(x.shape().to_vec())
}

/// `y = x · f` cell by cell, each cell `f.len()` channels.
fn scale_cells(y: &mut [f32], x: &[f32], f: &[f32]) {
    for (y, x) in y.chunks_exact_mut(f.len()).zip(x.chunks_exact(f.len())) {
        for ((y, x), f) in y.iter_mut().zip(x).zip(f) {
            *y = x * f;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ir::Attr;
    use crate::ops::conv::tests::run_op;
    use crate::ops::conv_concat::tests::{assert_tensors_close, values};
    use crate::ops::conv_layouts::{layout_code, INPUT_ATTR, OUTPUT_ATTR};

    /// `[N, C, H, W]` planes as `[N, C/16, H, W, 16]` blocks.
    fn to_blocks(x: &Tensor) -> Tensor {
        let &[n, c, h, w] = x.shape() else { panic!() };
        let xs = x.as_slice::<f32>().unwrap();
        let mut y = vec![0.0; xs.len()];
        for i in 0..n {
            for ch in 0..c {
                for p in 0..h * w {
                    let (b, l) = (ch / COL_BLOCK, ch % COL_BLOCK);
                    y[((i * (c / COL_BLOCK) + b) * h * w + p) * COL_BLOCK + l] =
                        xs[(i * c + ch) * h * w + p];
                }
            }
        }
        Tensor::from_vec(vec![n, c / COL_BLOCK, h, w, COL_BLOCK], y).unwrap()
    }

    /// The fused Conv gives what Mul (with broadcasting) and then Conv give, for scales of
    /// one factor per image and channel (per image or shared), in planes and in blocks, and
    /// for a scale of another shape (the broadcasting fallback).
    #[test]
    fn scaled_convolutions_match_mul_then_conv() {
        let (n, c, h, w, m) = (2, 32, 5, 7, 24);
        let x = Tensor::from_vec(vec![n, c, h, w], values(n * c * h * w, 1)).unwrap();
        let wt = Tensor::from_vec(vec![m, c, 1, 1], values(m * c, 2)).unwrap();
        let bias = Tensor::from_vec(vec![m], values(m, 3)).unwrap();
        let relu = ("_activation", Attr::String("Relu".into()));
        for scale_shape in [vec![n, c, 1, 1], vec![1, c, 1, 1], vec![1, c, h, w]] {
            let len = scale_shape.iter().product();
            let s = Tensor::from_vec(scale_shape.clone(), values(len, 4)).unwrap();
            let product = binary(&x, &s, |a: f32, b: f32| a * b).unwrap();
            let conv = |inputs: &[Option<&Tensor>], attrs: &[(&str, Attr)]| {
                run_op("Conv", attrs, inputs, true).unwrap()
            };
            let want = conv(
                &[Some(&product), Some(&wt), Some(&bias)],
                std::slice::from_ref(&relu),
            );
            let fused = [Some(&x), Some(&wt), Some(&bias), None, Some(&s)];
            let got = conv(&fused, std::slice::from_ref(&relu));
            assert_tensors_close(&got, &want, &format!("planes, scale {scale_shape:?}"));
            if scale_shape[2..] == [1, 1] {
                let blocks = to_blocks(&x);
                let fused = [Some(&blocks), Some(&wt), Some(&bias), None, Some(&s)];
                let blocked = (INPUT_ATTR, Attr::Int(layout_code(Layout::Blocked)));
                let got = conv(&fused, &[relu.clone(), blocked.clone()]);
                assert_tensors_close(&got, &want, &format!("blocks, scale {scale_shape:?}"));
                let out_blocked = (OUTPUT_ATTR, Attr::Int(layout_code(Layout::Blocked)));
                let m16 = Tensor::from_vec(vec![32, c, 1, 1], values(32 * c, 5)).unwrap();
                let want = to_blocks(&conv(&[Some(&product), Some(&m16)], &[]));
                let fused = [Some(&blocks), Some(&m16), None, None, Some(&s)];
                let got = conv(&fused, &[blocked, out_blocked]);
                assert_tensors_close(
                    &got,
                    &want,
                    &format!("blocks to blocks, scale {scale_shape:?}"),
                );
            }
        }
    }

    #[test]
    fn scales_that_do_not_fit_are_errors() {
        let x = Tensor::from_vec(vec![1, 4, 2, 2], values(16, 1)).unwrap();
        let wt = Tensor::from_vec(vec![2, 4, 1, 1], values(8, 2)).unwrap();
        let s = Tensor::from_vec(vec![1, 3, 1, 1], values(3, 3)).unwrap();
        let inputs = [Some(&x), Some(&wt), None, None, Some(&s)];
        assert!(run_op("Conv", &[], &inputs, true).is_err());
    }
}
