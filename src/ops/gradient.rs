//! `infer.SumToShapeOf`, the one kernel the Gradient expansion (`plan::gradient`) needs
//! beyond ONNX ops: the gradient of a broadcast operand is the output gradient summed over
//! the dims along which the operand was repeated.

use super::util::{broadcast_index, broadcast_shapes, input};
use super::{BuildCtx, Kernel};
use crate::error::Result;
use crate::tensor::{Elem, Tensor};
use crate::{ensure, with_dtype};

pub(crate) fn build(op: &str, ctx: &BuildCtx) -> Option<Result<Box<dyn Kernel>>> {
    match (op, ctx.node.domain.as_str()) {
        ("SumToShapeOf", "infer") => Some(Ok(Box::new(SumToShapeOf))),
        _ => None,
    }
}

/// `Y` of the shape of input 1, `Y[j] = Σ X[i]` over the positions `i` of `X` that the
/// element `j` broadcasts to (so `Y = X` when the shapes are equal).
#[derive(Debug)]
struct SumToShapeOf;

impl Kernel for SumToShapeOf {
    fn run(&self, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>> {
        let (x, like) = (input(inputs, 0)?, input(inputs, 1)?);
        let (from, to) = (x.shape(), like.shape());
        if from == to {
            return Ok(vec![x.clone()]);
        }
        ensure!(
            broadcast_shapes(from, to)? == from,
            "shape {to:?} does not broadcast to {from:?}"
        );
        let n = to.iter().product();
        let index = broadcast_index(from, to);
        with_dtype!(x.dtype(), T, {
            // Summed in f64: the gradient of a broadcast can add up many terms.
            let mut sums = vec![0f64; n];
            for (&v, &j) in x.as_slice::<T>()?.iter().zip(&index) {
                sums[j] += v.to_f64();
            }
            let out: Vec<T> = sums.into_iter().map(T::from_f64).collect();
            Ok(vec![Tensor::from_vec(to.to_vec(), out)?])
        })
    }
}

#[cfg(test)]
mod tests {
    use crate::ir::{Attrs, Node};
    use crate::ops::movement::testing::{run_node, t};
    use crate::tensor::Tensor;

    fn sum_to(x: &Tensor, like: &Tensor) -> crate::error::Result<Tensor> {
        let node = Node {
            name: "s".into(),
            op_type: "SumToShapeOf".into(),
            domain: "infer".into(),
            inputs: vec![Some(0), Some(1)],
            outputs: vec![Some(2)],
            attrs: Attrs::default(),
        };
        Ok(run_node(&node, 1, &[Some(x), Some(like)])?.remove(0))
    }

    #[test]
    fn sums_over_broadcast_dims() {
        // x [2, 3] = [[1, 2, 3], [4, 5, 6]].
        let x = t(&[2, 3], vec![1f32, 2., 3., 4., 5., 6.]);
        // To [3] (leading dim dropped): column sums.
        let y = sum_to(&x, &t(&[3], vec![0f32; 3])).unwrap();
        assert_eq!(y.shape(), &[3]);
        assert_eq!(y.as_slice::<f32>().unwrap(), &[5., 7., 9.]);
        // To [2, 1]: row sums.
        let y = sum_to(&x, &t(&[2, 1], vec![0f32; 2])).unwrap();
        assert_eq!(y.as_slice::<f32>().unwrap(), &[6., 15.]);
        // To a scalar: the total.
        let y = sum_to(&x, &Tensor::scalar(0f32)).unwrap();
        assert_eq!(y.as_slice::<f32>().unwrap(), &[21.]);
        // Same shape: unchanged.
        assert!(sum_to(&x, &x).unwrap().bit_eq(&x));
    }

    #[test]
    fn a_shape_that_does_not_broadcast_is_an_error() {
        let x = t(&[2, 3], vec![0f32; 6]);
        assert!(sum_to(&x, &t(&[2], vec![0f32; 2])).is_err());
        assert!(sum_to(&x, &t(&[4, 2, 3], vec![0f32; 24])).is_err());
    }
}
