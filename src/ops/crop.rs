//! CenterCropPad (opset 18): crops or zero-pads chosen axes to a size, keeping the centre.

use super::util::{input, normalize_axis, strides_of};
use super::{BuildCtx, Kernel};
use crate::error::Result;
use crate::tensor::Tensor;
use crate::{ensure, op_err, with_any_dtype};

pub(crate) fn build(op: &str, ctx: &BuildCtx) -> Option<Result<Box<dyn Kernel>>> {
    (op == "CenterCropPad").then(|| {
        Ok(Box::new(CenterCropPad {
            axes: ctx.attrs().ints("axes")?.map(<[i64]>::to_vec),
        }) as Box<dyn Kernel>)
    })
}

#[derive(Debug)]
struct CenterCropPad {
    /// The axes `shape` applies to; all of them when absent.
    axes: Option<Vec<i64>>,
}

/// How one axis maps: `len` elements from input offset `src` to output offset `dst`.
#[derive(Clone, Copy)]
struct Span {
    src: usize,
    dst: usize,
    len: usize,
}

/// Centres `from` elements in `to`; an odd difference puts the extra element at the end.
fn center(from: usize, to: usize) -> Span {
    if to <= from {
        Span {
            src: (from - to) / 2,
            dst: 0,
            len: to,
        }
    } else {
        Span {
            src: 0,
            dst: (to - from) / 2,
            len: from,
        }
    }
}

impl Kernel for CenterCropPad {
    fn run(&self, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>> {
        let (x, shape) = (input(inputs, 0)?, input(inputs, 1)?);
        let rank = x.rank();
        let sizes = shape.to_i64_vec()?;
        let axes = match &self.axes {
            Some(a) => a
                .iter()
                .map(|&a| normalize_axis(a, rank))
                .collect::<Result<Vec<_>>>()?,
            None => (0..rank).collect(),
        };
        ensure!(
            sizes.len() == axes.len(),
            "shape has {} values for {} axes",
            sizes.len(),
            axes.len()
        );
        let mut out_shape = x.shape().to_vec();
        for (&a, &s) in axes.iter().zip(&sizes) {
            out_shape[a] = usize::try_from(s).map_err(|_| op_err!("negative size {s}"))?;
        }
        let spans: Vec<Span> = x
            .shape()
            .iter()
            .zip(&out_shape)
            .map(|(&f, &t)| center(f, t))
            .collect();
        with_any_dtype!(x.dtype(), T, {
            let src = x.as_slice::<T>()?;
            let mut out = vec![T::default(); out_shape.iter().product()];
            copy_region(
                src,
                &strides_of(x.shape()),
                &mut out,
                &strides_of(&out_shape),
                &spans,
            );
            Ok(vec![Tensor::from_vec(out_shape, out)?])
        })
    }
}

/// Copies the box described by `spans` from `src` to `dst`, a contiguous row at a time.
fn copy_region<T: Copy>(
    src: &[T],
    src_strides: &[usize],
    dst: &mut [T],
    dst_strides: &[usize],
    spans: &[Span],
) {
    let Some((last, outer)) = spans.split_last() else {
        if let (Some(d), Some(s)) = (dst.first_mut(), src.first()) {
            *d = *s;
        }
        return;
    };
    if spans.iter().any(|s| s.len == 0) {
        return;
    }
    let rows: usize = outer.iter().map(|s| s.len).product();
    for r in 0..rows {
        let (mut s_at, mut d_at, mut rest) = (last.src, last.dst, r);
        for (d, span) in outer.iter().enumerate().rev() {
            let i = rest % span.len;
            rest /= span.len;
            s_at += (span.src + i) * src_strides[d];
            d_at += (span.dst + i) * dst_strides[d];
        }
        dst[d_at..d_at + last.len].copy_from_slice(&src[s_at..s_at + last.len]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crops_one_axis_and_pads_another() {
        // [3, 2] -> [2, 4]: rows 0..2 kept (odd crop drops the last), columns centred in 4.
        let x = Tensor::from_vec(vec![3, 2], vec![1i32, 2, 3, 4, 5, 6]).unwrap();
        let shape = Tensor::from_vec(vec![2], vec![2i64, 4]).unwrap();
        let op = CenterCropPad { axes: None };
        let y = op.run(&[Some(&x), Some(&shape)]).unwrap().remove(0);
        assert_eq!(y.shape(), &[2, 4]);
        assert_eq!(y.as_slice::<i32>().unwrap(), &[0, 1, 2, 0, 0, 3, 4, 0]);
    }

    #[test]
    fn axes_select_what_changes() {
        let x = Tensor::from_vec(vec![1, 4], vec![1f32, 2.0, 3.0, 4.0]).unwrap();
        let shape = Tensor::from_vec(vec![1], vec![2i64]).unwrap();
        let op = CenterCropPad {
            axes: Some(vec![-1]),
        };
        let y = op.run(&[Some(&x), Some(&shape)]).unwrap().remove(0);
        assert_eq!(y.as_slice::<f32>().unwrap(), &[2.0, 3.0]);
    }
}
