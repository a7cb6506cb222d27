//! Ops that scatter values back into an image: MaxUnpool (the partial inverse of MaxPool)
//! and Col2Im (the inverse of im2col, summing overlapping blocks).

use super::util::{input, opt_input, strides_of};
use super::{BuildCtx, Kernel};
use crate::error::Result;
use crate::tensor::{Elem, Tensor};
use crate::{ensure, op_err, with_dtype};

pub(crate) fn build(op: &str, ctx: &BuildCtx) -> Option<Result<Box<dyn Kernel>>> {
    Some(match op {
        "MaxUnpool" => MaxUnpool::build(ctx),
        "Col2Im" => Col2Im::build(ctx),
        _ => return None,
    })
}

/// An optional per-axis attribute (`strides`, `dilations`) with a default of 1s; `pads`
/// defaults to 0s and holds begins then ends.
fn per_axis(ctx: &BuildCtx, name: &str) -> Result<Option<Vec<usize>>> {
    ctx.attrs()
        .ints(name)?
        .map(|v| {
            v.iter()
                .map(|&x| usize::try_from(x).map_err(|_| op_err!("{name} must not be negative")))
                .collect()
        })
        .transpose()
}

/// Checks (or defaults) a per-axis list to `n` values (`2n` for pads).
fn fit(v: &Option<Vec<usize>>, len: usize, default: usize, name: &str) -> Result<Vec<usize>> {
    match v {
        Some(v) => {
            ensure!(
                v.len() == len,
                "{name} has {} values, expected {len}",
                v.len()
            );
            Ok(v.clone())
        }
        None => Ok(vec![default; len]),
    }
}

#[derive(Debug)]
struct MaxUnpool {
    kernel: Vec<usize>,
    strides: Option<Vec<usize>>,
    pads: Option<Vec<usize>>,
}

impl MaxUnpool {
    fn build(ctx: &BuildCtx) -> Result<Box<dyn Kernel>> {
        let kernel =
            per_axis(ctx, "kernel_shape")?.ok_or_else(|| op_err!("kernel_shape is required"))?;
        Ok(Box::new(MaxUnpool {
            kernel,
            strides: per_axis(ctx, "strides")?,
            pads: per_axis(ctx, "pads")?,
        }))
    }
}

impl Kernel for MaxUnpool {
    fn run(&self, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>> {
        let (x, indices) = (input(inputs, 0)?, input(inputs, 1)?);
        let xs = x.shape();
        let dims = self.kernel.len();
        ensure!(
            xs.len() == dims + 2,
            "X must be [N, C] plus {dims} spatial dimensions, got {xs:?}"
        );
        ensure!(
            indices.shape() == xs,
            "indices shape {:?} differs from X {xs:?}",
            indices.shape()
        );
        let strides = fit(&self.strides, dims, 1, "strides")?;
        let pads = fit(&self.pads, 2 * dims, 0, "pads")?;
        // The shape MaxPool came from; indices are flat positions in it.
        let mut inferred = xs[..2].to_vec();
        for d in 0..dims {
            let full = (xs[d + 2].saturating_sub(1)) * strides[d] + self.kernel[d];
            inferred.push(
                full.checked_sub(pads[d] + pads[d + dims])
                    .ok_or_else(|| op_err!("pads exceed the unpooled size"))?,
            );
        }
        let out_shape = match opt_input(inputs, 2) {
            Some(t) => {
                let s = t.to_i64_vec()?;
                ensure!(
                    s.len() == xs.len(),
                    "output_shape must have rank {}",
                    xs.len()
                );
                let s = s
                    .iter()
                    .map(|&v| usize::try_from(v).map_err(|_| op_err!("negative output_shape")))
                    .collect::<Result<Vec<_>>>()?;
                ensure!(
                    s.iter().zip(&inferred).all(|(o, i)| o >= i),
                    "output_shape {s:?} is smaller than the unpooled shape {inferred:?}"
                );
                s
            }
            None => inferred.clone(),
        };
        let idx = indices.to_i64_vec()?;
        let inferred_len: usize = inferred.iter().product();
        // A flat index of the inferred shape, re-based into the (possibly larger) output.
        let (in_strides, out_strides) = (strides_of(&inferred), strides_of(&out_shape));
        let relocate = |flat: i64| -> Result<usize> {
            ensure!(
                (0..inferred_len as i64).contains(&flat),
                "index {flat} is out of range for the unpooled shape {inferred:?}"
            );
            let mut rest = flat as usize;
            let mut at = 0;
            for (s_in, s_out) in in_strides.iter().zip(&out_strides) {
                at += rest / s_in * s_out;
                rest %= s_in;
            }
            Ok(at)
        };
        with_dtype!(x.dtype(), T, {
            let src = x.as_slice::<T>()?;
            let mut out = vec![T::default(); out_shape.iter().product()];
            for (&v, &i) in src.iter().zip(&idx) {
                out[relocate(i)?] = v;
            }
            Ok(vec![Tensor::from_vec(out_shape, out)?])
        })
    }
}

#[derive(Debug)]
struct Col2Im {
    dilations: Option<Vec<usize>>,
    pads: Option<Vec<usize>>,
    strides: Option<Vec<usize>>,
}

impl Col2Im {
    fn build(ctx: &BuildCtx) -> Result<Box<dyn Kernel>> {
        Ok(Box::new(Col2Im {
            dilations: per_axis(ctx, "dilations")?,
            pads: per_axis(ctx, "pads")?,
            strides: per_axis(ctx, "strides")?,
        }))
    }
}

/// Positive sizes from a shape input.
fn sizes(t: &Tensor, what: &str) -> Result<Vec<usize>> {
    t.to_i64_vec()?
        .into_iter()
        .map(|v| {
            usize::try_from(v)
                .ok()
                .filter(|&v| v > 0)
                .ok_or_else(|| op_err!("{what} must be positive, got {v}"))
        })
        .collect()
}

impl Kernel for Col2Im {
    fn run(&self, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>> {
        let x = input(inputs, 0)?;
        let image = sizes(input(inputs, 1)?, "image_shape")?;
        let block = sizes(input(inputs, 2)?, "block_shape")?;
        let dims = image.len();
        ensure!(
            block.len() == dims,
            "block_shape has {} values for {dims} image dimensions",
            block.len()
        );
        let dil = fit(&self.dilations, dims, 1, "dilations")?;
        let strides = fit(&self.strides, dims, 1, "strides")?;
        let pads = fit(&self.pads, 2 * dims, 0, "pads")?;
        ensure!(strides.iter().all(|&s| s > 0), "strides must be positive");
        let xs = x.shape();
        ensure!(xs.len() == 3, "input must be [N, C·block, L], got {xs:?}");
        let block_len: usize = block.iter().product();
        ensure!(
            xs[1] % block_len == 0,
            "input dimension 1 ({}) is not a multiple of the block size {block_len}",
            xs[1]
        );
        // Number of block positions along each axis.
        let mut counts = Vec::with_capacity(dims);
        for d in 0..dims {
            let span = dil[d] * (block[d] - 1) + 1;
            let padded = image[d] + pads[d] + pads[d + dims];
            ensure!(
                padded >= span,
                "block {block:?} does not fit image {image:?}"
            );
            counts.push((padded - span) / strides[d] + 1);
        }
        ensure!(
            xs[2] == counts.iter().product::<usize>(),
            "input has {} blocks, expected {counts:?}",
            xs[2]
        );
        let (n, c) = (xs[0], xs[1] / block_len);
        let image_len: usize = image.iter().product();
        let image_strides = strides_of(&image);
        let (block_strides, count_strides) = (strides_of(&block), strides_of(&counts));
        let positions = xs[2];
        // For each (block offset, block position): the image offset it lands on, if inside.
        let mut targets = Vec::with_capacity(block_len * positions);
        for k in 0..block_len {
            for p in 0..positions {
                let mut at = Some(0usize);
                for d in 0..dims {
                    let (kd, pd) = (
                        k / block_strides[d] % block[d],
                        p / count_strides[d] % counts[d],
                    );
                    let pos = (pd * strides[d] + kd * dil[d]) as i64 - pads[d] as i64;
                    at = at
                        .filter(|_| (0..image[d] as i64).contains(&pos))
                        .map(|a| a + pos as usize * image_strides[d]);
                }
                targets.push(at);
            }
        }
        with_dtype!(x.dtype(), T, {
            let src = x.as_slice::<T>()?;
            let mut out = vec![0f64; n * c * image_len];
            for (plane, out_plane) in out.chunks_mut(image_len).enumerate() {
                let cols = &src[plane * block_len * positions..(plane + 1) * block_len * positions];
                for (v, t) in cols.iter().zip(&targets) {
                    if let Some(t) = t {
                        out_plane[*t] += v.to_f64();
                    }
                }
            }
            let mut shape = vec![n, c];
            shape.extend_from_slice(&image);
            let out: Vec<T> = out.into_iter().map(T::from_f64).collect();
            Ok(vec![Tensor::from_vec(shape, out)?])
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn max_unpool_places_values_at_their_indices() {
        let x = Tensor::from_vec(vec![1, 1, 1, 2], vec![5f32, 7.0]).unwrap();
        let i = Tensor::from_vec(vec![1, 1, 1, 2], vec![1i64, 2]).unwrap();
        let op = MaxUnpool {
            kernel: vec![2, 2],
            strides: Some(vec![2, 2]),
            pads: None,
        };
        let y = op.run(&[Some(&x), Some(&i)]).unwrap().remove(0);
        assert_eq!(y.shape(), &[1, 1, 2, 4]);
        assert_eq!(
            y.as_slice::<f32>().unwrap(),
            &[0.0, 5.0, 7.0, 0.0, 0.0, 0.0, 0.0, 0.0]
        );
        let bad = Tensor::from_vec(vec![1, 1, 1, 2], vec![1i64, 8]).unwrap();
        assert!(op.run(&[Some(&x), Some(&bad)]).is_err());
    }

    #[test]
    fn col2im_sums_overlapping_blocks() {
        // A 1x3 image, blocks of 1x2 with stride 1: two blocks overlapping on the middle pixel.
        // Columns: offset 0 -> [1, 2], offset 1 -> [10, 20]; image = [1, 2 + 10, 20].
        let x = Tensor::from_vec(vec![1, 2, 2], vec![1f32, 2.0, 10.0, 20.0]).unwrap();
        let image = Tensor::from_vec(vec![2], vec![1i64, 3]).unwrap();
        let block = Tensor::from_vec(vec![2], vec![1i64, 2]).unwrap();
        let op = Col2Im {
            dilations: None,
            pads: None,
            strides: None,
        };
        let y = op
            .run(&[Some(&x), Some(&image), Some(&block)])
            .unwrap()
            .remove(0);
        assert_eq!(y.shape(), &[1, 1, 1, 3]);
        assert_eq!(y.as_slice::<f32>().unwrap(), &[1.0, 12.0, 20.0]);
    }
}
