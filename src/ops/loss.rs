//! Loss functions: NegativeLogLikelihoodLoss and SoftmaxCrossEntropyLoss (opsets 12–22).
//!
//! Both pick, for every sample `n` and spatial position `d`, the score of the target class:
//! `loss[n, d] = -weight[t] * x[n, t, d]` with `t = target[n, d]` (`x` being the log-softmax of
//! the scores for SoftmaxCrossEntropyLoss). Positions whose target is `ignore_index` count with
//! weight 0. A "mean" reduction divides by the sum of the weights used. Computed in f64: these
//! are small tensors, and the reductions then match the reference closely.

use super::util::{input, opt_input};
use super::{BuildCtx, Kernel};
use crate::error::Result;
use crate::tensor::Tensor;
use crate::{ensure, op_err};

pub(crate) fn build(op: &str, ctx: &BuildCtx) -> Option<Result<Box<dyn Kernel>>> {
    let softmax = match op {
        "NegativeLogLikelihoodLoss" => false,
        "SoftmaxCrossEntropyLoss" => true,
        _ => return None,
    };
    Some(Loss::build(ctx, softmax).map(|k| Box::new(k) as Box<dyn Kernel>))
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Reduction {
    None,
    Sum,
    Mean,
}

#[derive(Debug)]
struct Loss {
    /// SoftmaxCrossEntropyLoss: take the log-softmax over the class axis first.
    softmax: bool,
    reduction: Reduction,
    ignore_index: Option<i64>,
    /// SoftmaxCrossEntropyLoss: whether the node asks for the log-probabilities output.
    log_prob: bool,
}

impl Loss {
    fn build(ctx: &BuildCtx, softmax: bool) -> Result<Self> {
        let a = ctx.attrs();
        let reduction = match a.string_or("reduction", "mean")? {
            "none" => Reduction::None,
            "sum" => Reduction::Sum,
            "mean" => Reduction::Mean,
            r => return Err(op_err!("unknown reduction {r:?}")),
        };
        Ok(Loss {
            softmax,
            reduction,
            ignore_index: a.int("ignore_index")?,
            log_prob: softmax && ctx.node.outputs.len() > 1,
        })
    }
}

/// Log-softmax over axis 1 of `x` viewed as `[n, c, d]`, in place.
fn log_softmax(x: &mut [f64], c: usize, d: usize) {
    if c * d == 0 {
        // No classes or no positions: nothing to normalize (and no chunk size).
        return;
    }
    for sample in x.chunks_mut(c * d) {
        for j in 0..d {
            let max = (0..c).fold(f64::NEG_INFINITY, |m, k| m.max(sample[k * d + j]));
            let sum: f64 = (0..c).map(|k| (sample[k * d + j] - max).exp()).sum();
            let log_sum = max + sum.ln();
            (0..c).for_each(|k| sample[k * d + j] -= log_sum);
        }
    }
}

impl Kernel for Loss {
    fn run(&self, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>> {
        let (x, target) = (input(inputs, 0)?, input(inputs, 1)?);
        let dtype = x.dtype();
        ensure!(dtype.is_float(), "scores must be floats, got {dtype:?}");
        let s = x.shape();
        ensure!(s.len() >= 2, "scores must be [N, C, ...], got {s:?}");
        let (n, c) = (s[0], s[1]);
        let d: usize = s[2..].iter().product();
        let mut expect = vec![n];
        expect.extend_from_slice(&s[2..]);
        ensure!(
            target.shape() == expect,
            "target shape {:?} does not match scores {s:?}",
            target.shape()
        );
        let weight = opt_input(inputs, 2).map(|w| w.to_f64_vec()).transpose()?;
        if let Some(w) = &weight {
            ensure!(
                w.len() == c,
                "weight has {} entries for {c} classes",
                w.len()
            );
        }
        let mut scores = x.to_f64_vec()?;
        if self.softmax {
            log_softmax(&mut scores, c, d);
        }
        let targets = target.to_i64_vec()?;
        let mut losses = Vec::with_capacity(n * d);
        let mut weight_sum = 0.0;
        for (i, &t) in targets.iter().enumerate() {
            if Some(t) == self.ignore_index {
                losses.push(0.0);
                continue;
            }
            ensure!(
                (0..c as i64).contains(&t),
                "target {t} is not a class index in 0..{c}"
            );
            let t = t as usize;
            let w = weight.as_ref().map_or(1.0, |w| w[t]);
            let (sample, pos) = (i / d.max(1), i % d.max(1));
            losses.push(-w * scores[(sample * c + t) * d + pos]);
            weight_sum += w;
        }
        let loss = match self.reduction {
            Reduction::None => Tensor::from_vec(expect, losses)?,
            Reduction::Sum => Tensor::scalar(losses.iter().sum::<f64>()),
            Reduction::Mean => Tensor::scalar(losses.iter().sum::<f64>() / weight_sum),
        };
        let mut outs = vec![loss.cast(dtype)?];
        if self.log_prob {
            outs.push(Tensor::from_vec(s.to_vec(), scores)?.cast(dtype)?);
        }
        Ok(outs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_empty_class_axis_is_not_a_panic() {
        // Found by fuzzing: scores [N, 0] made `chunks_mut(0)` panic.
        log_softmax(&mut [], 0, 1);
        let x = Tensor::from_vec(vec![1, 0], Vec::<f32>::new()).unwrap();
        let target = Tensor::from_vec(vec![1], vec![0i64]).unwrap();
        let err = loss(true, Reduction::Mean, None)
            .run(&[Some(&x), Some(&target)])
            .unwrap_err();
        assert!(err.to_string().contains("not a class index"), "{err}");
    }

    fn loss(softmax: bool, reduction: Reduction, ignore_index: Option<i64>) -> Loss {
        Loss {
            softmax,
            reduction,
            ignore_index,
            log_prob: softmax,
        }
    }

    fn scalar(t: &Tensor) -> f32 {
        t.as_slice::<f32>().unwrap()[0]
    }

    #[test]
    fn nll_picks_the_target_scores() {
        // x = [[1, 2], [3, 4]], targets [1, 0] -> losses [-2, -3].
        let x = Tensor::from_vec(vec![2, 2], vec![1f32, 2., 3., 4.]).unwrap();
        let t = Tensor::from_vec(vec![2], vec![1i64, 0]).unwrap();
        let out = loss(false, Reduction::None, None)
            .run(&[Some(&x), Some(&t)])
            .unwrap();
        assert_eq!(out[0].as_slice::<f32>().unwrap(), &[-2., -3.]);
        let out = loss(false, Reduction::Mean, Some(0))
            .run(&[Some(&x), Some(&t)])
            .unwrap();
        assert_eq!(scalar(&out[0]), -2.0);
    }

    #[test]
    fn weighted_mean_divides_by_the_weights() {
        // losses -w[t] * x: -(2 * 2) and -(0.5 * 3); mean = -5.5 / 2.5.
        let x = Tensor::from_vec(vec![2, 2], vec![1f32, 2., 3., 4.]).unwrap();
        let t = Tensor::from_vec(vec![2], vec![1i64, 0]).unwrap();
        let w = Tensor::from_vec(vec![2], vec![0.5f32, 2.]).unwrap();
        let out = loss(false, Reduction::Mean, None)
            .run(&[Some(&x), Some(&t), Some(&w)])
            .unwrap();
        assert!((scalar(&out[0]) + 2.2).abs() < 1e-6);
    }

    #[test]
    fn cross_entropy_of_uniform_scores_is_log_classes() {
        let x = Tensor::from_vec(vec![1, 4], vec![0.5f32; 4]).unwrap();
        let t = Tensor::from_vec(vec![1], vec![2i64]).unwrap();
        let out = loss(true, Reduction::Sum, None)
            .run(&[Some(&x), Some(&t)])
            .unwrap();
        assert!((scalar(&out[0]) - 4f32.ln()).abs() < 1e-6);
        assert_eq!(out[1].shape(), &[1, 4]);
    }

    #[test]
    fn out_of_range_targets_are_errors() {
        let x = Tensor::from_vec(vec![1, 2], vec![1f32, 2.]).unwrap();
        let t = Tensor::from_vec(vec![1], vec![5i64]).unwrap();
        assert!(loss(false, Reduction::Sum, None)
            .run(&[Some(&x), Some(&t)])
            .is_err());
    }
}
