//! `ai.onnx.preview.FlexAttention` (preview opset 1): scaled dot-product attention over rank-4
//! inputs whose scores and probabilities may be rewritten by the `score_mod` / `prob_mod`
//! subgraphs (masks, soft caps, positional biases), with grouped-query heads.
//!
//! The two products run on the packed GEMM in f32; each modifier subgraph sees the whole
//! `[batch, q_heads, q_len, kv_len]` tensor in the softmax precision (f32, or f64 for double
//! inputs unless `softmax_precision` says otherwise).

use crate::error::Result;
use crate::ops::control::Body;
use crate::ops::matmul::from_f32;
use crate::ops::util::input;
use crate::ops::{BuildCtx, Kernel};
use crate::tensor::{DType, Tensor};
use crate::{ensure, op_err};
use infer_kernels::elementwise::{apply_inplace, UnaryF32};
use infer_kernels::gemm::{gemm_batched, Epilogue, Lhs, MatRef, Rhs};
use infer_kernels::parallel;
use rayon::prelude::*;

pub(super) fn build(op: &str, ctx: &BuildCtx) -> Option<Result<Box<dyn Kernel>>> {
    match (ctx.node.domain.as_str(), op) {
        ("ai.onnx.preview", "FlexAttention") => {
            Some(FlexAttention::build(ctx).map(|k| Box::new(k) as Box<dyn Kernel>))
        }
        _ => None,
    }
}

#[derive(Debug)]
struct FlexAttention {
    /// 0 means `1/√head_size`.
    scale: f32,
    /// The softmax precision set by the attribute (TensorProto type 1 or 11), if any.
    precision: Option<DType>,
    score_mod: Option<Body>,
    prob_mod: Option<Body>,
}

impl FlexAttention {
    fn build(ctx: &BuildCtx) -> Result<Self> {
        let attrs = ctx.attrs();
        let body = |name: &'static str| -> Result<Option<Body>> {
            match attrs.graph(name)? {
                Some(_) => Body::build(ctx, name).map(Some),
                None => Ok(None),
            }
        };
        let precision = match attrs.int("softmax_precision")? {
            None => None,
            Some(1) => Some(DType::F32),
            Some(11) => Some(DType::F64),
            Some(p) => return Err(op_err!("unsupported softmax_precision {p}")),
        };
        Ok(FlexAttention {
            scale: attrs.float_or("scale", 0.0)?,
            precision,
            score_mod: body("score_mod")?,
            prob_mod: body("prob_mod")?,
        })
    }

    /// Runs a modifier subgraph on `x` (`shape`), in `precision`, checking it keeps the shape.
    fn modify(
        body: &Body,
        x: Vec<f32>,
        shape: &[usize],
        precision: DType,
        inputs: &[Option<&Tensor>],
    ) -> Result<Vec<f32>> {
        let t = Tensor::from_vec(shape.to_vec(), x)?.cast(precision)?;
        let out = body
            .run_tensors(vec![t], inputs)?
            .into_iter()
            .next()
            .ok_or_else(|| op_err!("modifier subgraph has no output"))?;
        ensure!(
            out.shape() == shape,
            "modifier subgraph changed the shape {shape:?} to {:?}",
            out.shape()
        );
        out.cast(DType::F32)?.into_vec()
    }
}

/// Softmax of each row of `x`, in place. A row of all -inf gives NaN, as in the reference.
fn softmax_rows(x: &mut [f32], row: usize) {
    parallel::for_each(x.par_chunks_mut(row.max(1)), |r| {
        let max = r.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        r.iter_mut().for_each(|v| *v -= max);
        apply_inplace(UnaryF32::Exp, r);
        let sum: f32 = r.iter().sum();
        r.iter_mut().for_each(|v| *v /= sum);
    });
}

impl Kernel for FlexAttention {
    fn run(&self, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>> {
        let (q, k, v) = (input(inputs, 0)?, input(inputs, 1)?, input(inputs, 2)?);
        let ([b, hq, l, e], [bk, hk, s, ek], [bv, hv, sv, ev]) = (
            <[usize; 4]>::try_from(q.shape()).map_err(|_| op_err!("Q must be rank 4"))?,
            <[usize; 4]>::try_from(k.shape()).map_err(|_| op_err!("K must be rank 4"))?,
            <[usize; 4]>::try_from(v.shape()).map_err(|_| op_err!("V must be rank 4"))?,
        );
        ensure!(
            bk == b && bv == b && hv == hk && sv == s && ek == e && hk > 0 && hq % hk == 0,
            "Q {:?}, K {:?} and V {:?} do not fit together",
            q.shape(),
            k.shape(),
            v.shape()
        );
        let group = hq / hk;
        let scale = if self.scale == 0.0 {
            1.0 / (e as f32).sqrt()
        } else {
            self.scale
        };
        let to_f32 = |t: &Tensor| -> Result<Vec<f32>> { t.cast(DType::F32)?.into_vec() };
        let (qd, kd, vd) = (to_f32(q)?, to_f32(k)?, to_f32(v)?);
        // Query head h of batch item n reads kv head h / group.
        let kv = |i: usize| (i / hq) * hk + (i % hq) / group;
        let mut scores =
            crate::tensor::filled_vec(crate::tensor::checked_numel(&[b, hq, l, s])?, 0.0f32)?;
        gemm_batched(&mut scores, (l, s), b * hq, |i| {
            let qm = MatRef::row_major(&qd[i * l * e..], l, e)?;
            let km = MatRef::row_major(&kd[kv(i) * s * e..], s, e)?.t();
            let epi = Epilogue {
                alpha: scale,
                ..Default::default()
            };
            Ok((Lhs::Mat(qm), Rhs::Mat(km), epi))
        })?;
        let shape = [b, hq, l, s];
        let precision = self.precision.unwrap_or(if q.dtype() == DType::F64 {
            DType::F64
        } else {
            DType::F32
        });
        if let Some(body) = &self.score_mod {
            scores = Self::modify(body, scores, &shape, precision, inputs)?;
        }
        softmax_rows(&mut scores, s);
        if let Some(body) = &self.prob_mod {
            scores = Self::modify(body, scores, &shape, precision, inputs)?;
        }
        let mut out =
            crate::tensor::filled_vec(crate::tensor::checked_numel(&[b, hq, l, ev])?, 0.0f32)?;
        gemm_batched(&mut out, (l, ev), b * hq, |i| {
            let p = MatRef::row_major(&scores[i * l * s..], l, s)?;
            let vm = MatRef::row_major(&vd[kv(i) * s * ev..], s, ev)?;
            Ok((Lhs::Mat(p), Rhs::Mat(vm), Epilogue::default()))
        })?;
        Ok(vec![from_f32(q.dtype(), vec![b, hq, l, ev], out)?])
    }
}

#[cfg(test)]
mod tests {
    use crate::error::Result;
    use crate::ir::{Attrs, Node};
    use crate::ops::movement::testing::{assert_close, run_node, t, vals};
    use crate::tensor::Tensor;

    fn flex(q: &Tensor, k: &Tensor, v: &Tensor) -> Result<Vec<Tensor>> {
        let node = Node {
            name: "flex".into(),
            op_type: "FlexAttention".into(),
            domain: "ai.onnx.preview".into(),
            inputs: vec![Some(0), Some(1), Some(2)],
            outputs: vec![Some(3)],
            attrs: Attrs(Default::default()),
        };
        run_node(&node, 1, &[Some(q), Some(k), Some(v)])
    }

    #[test]
    fn query_heads_share_their_group_kv_head() {
        // Two query heads over one kv head, head size 2 (scale 1/√2 by default):
        // head 0 scores [1, 0]/√2, head 1 scores [0, 2]/√2; values 10 and 20.
        let q = t(&[1, 2, 1, 2], vec![1.0f32, 0.0, 0.0, 1.0]);
        let k = t(&[1, 1, 2, 2], vec![1.0f32, 0.0, 0.0, 2.0]);
        let v = t(&[1, 1, 2, 1], vec![10.0f32, 20.0]);
        let y = flex(&q, &k, &v).unwrap().remove(0);
        assert_eq!(y.shape(), [1, 2, 1, 1]);
        let p0 = 1.0 / (1.0 + (-1.0f32 / 2f32.sqrt()).exp());
        let p1 = 1.0 / (1.0 + (2.0f32 / 2f32.sqrt()).exp());
        let want = [10.0 * p0 + 20.0 * (1.0 - p0), 10.0 * p1 + 20.0 * (1.0 - p1)];
        assert_close(&vals::<f32>(&y), &want, 1e-5);
    }

    #[test]
    fn query_heads_must_divide_into_kv_groups() {
        let q = t(&[1, 3, 1, 2], vec![0.0f32; 6]);
        let kv = t(&[1, 2, 1, 2], vec![0.0f32; 4]);
        assert!(flex(&q, &kv, &kv).is_err());
    }
}
