//! Recurrent-state sequence mixers of linear-attention and state-space models (opset 27):
//! LinearAttention (linear, gated, delta and gated-delta update rules, GQA/MQA) and
//! CausalConvWithState (depthwise causal 1-D convolution carrying its last `k − 1` inputs).
//!
//! Both follow the ONNX reference step by step, in f32, converting f16/bf16/f64 on the way in
//! and out; independent (batch, head) or (batch, channel) rows run in parallel.

use crate::error::Result;
use crate::ops::matmul::from_f32;
use crate::ops::util::{input, opt_input};
use crate::ops::{BuildCtx, Kernel};
use crate::tensor::{DType, Tensor};
use crate::{ensure, op_err};
use infer_kernels::parallel;
use rayon::prelude::*;

pub(super) fn build(op: &str, ctx: &BuildCtx) -> Option<Result<Box<dyn Kernel>>> {
    Some(match op {
        "LinearAttention" => LinearAttention::build(ctx).map(|k| Box::new(k) as Box<dyn Kernel>),
        "CausalConvWithState" => CausalConv::build(ctx).map(|k| Box::new(k) as Box<dyn Kernel>),
        _ => return None,
    })
}

/// A float tensor's elements as f32.
fn f32_vec(t: &Tensor) -> Result<Vec<f32>> {
    match t.dtype() {
        DType::F32 | DType::F16 | DType::BF16 | DType::F64 => t.cast(DType::F32)?.into_vec(),
        d => Err(op_err!("expected a float tensor, got {d}")),
    }
}

#[derive(Debug)]
struct LinearAttention {
    q_heads: usize,
    kv_heads: usize,
    /// 0 means `1/√d_k`.
    scale: f32,
    /// `S ← exp(g) ⊙ S` before each write.
    gating: bool,
    /// Writes `β(v − Sᵀk)` instead of `v` (the delta rule).
    delta: bool,
}

impl LinearAttention {
    fn build(ctx: &BuildCtx) -> Result<Self> {
        let attrs = ctx.attrs();
        let heads = |name: &str| -> Result<usize> {
            let v = attrs
                .int(name)?
                .ok_or_else(|| op_err!("{name} is required"))?;
            usize::try_from(v)
                .ok()
                .filter(|&v| v > 0)
                .ok_or_else(|| op_err!("{name} must be positive, got {v}"))
        };
        let (q_heads, kv_heads) = (heads("q_num_heads")?, heads("kv_num_heads")?);
        ensure!(
            q_heads % kv_heads == 0,
            "q_num_heads {q_heads} is not a multiple of kv_num_heads {kv_heads}"
        );
        let (gating, delta) = match attrs.string_or("update_rule", "gated_delta")? {
            "linear" => (false, false),
            "gated" => (true, false),
            "delta" => (false, true),
            "gated_delta" => (true, true),
            r => return Err(op_err!("unknown update_rule '{r}'")),
        };
        Ok(LinearAttention {
            q_heads,
            kv_heads,
            scale: attrs.float_or("scale", 0.0)?,
            gating,
            delta,
        })
    }
}

/// Per-step inputs of one (batch, kv head) recurrence, as strided reads of the 3-D inputs.
struct Head<'a> {
    q: &'a [f32],
    k: &'a [f32],
    v: &'a [f32],
    /// Decay per step: `d_k` values, or one (`decay_w == 1`).
    decay: Option<&'a [f32]>,
    beta: Option<&'a [f32]>,
}

impl Kernel for LinearAttention {
    fn run(&self, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>> {
        let (q, k, v) = (input(inputs, 0)?, input(inputs, 1)?, input(inputs, 2)?);
        ensure!(
            q.rank() == 3 && k.rank() == 3 && v.rank() == 3,
            "query, key and value must be [batch, seq, heads * head_size]"
        );
        let (b, t) = (q.shape()[0], q.shape()[1]);
        let (hq, hk) = (self.q_heads, self.kv_heads);
        ensure!(
            k.shape()[..2] == [b, t] && v.shape()[..2] == [b, t],
            "query {:?}, key {:?} and value {:?} disagree on batch or sequence",
            q.shape(),
            k.shape(),
            v.shape()
        );
        ensure!(
            q.shape()[2] % hq == 0 && v.shape()[2] % hk == 0,
            "head counts {hq}/{hk} do not divide query {:?} / value {:?}",
            q.shape(),
            v.shape()
        );
        let (dk, dv) = (q.shape()[2] / hq, v.shape()[2] / hk);
        ensure!(
            k.shape()[2] == hk * dk,
            "key has shape {:?}, expected [{b}, {t}, {}]",
            k.shape(),
            hk * dk
        );
        let optional = |i: usize, wanted: bool, name: &str| -> Result<Option<&Tensor>> {
            let x = opt_input(inputs, i);
            ensure!(
                x.is_some() == wanted,
                "this update rule {} the {name} input",
                if wanted { "requires" } else { "forbids" }
            );
            Ok(x)
        };
        let decay = optional(4, self.gating, "decay")?;
        let beta = optional(5, self.delta, "beta")?;
        // Widths of the last axes of decay (per head or per key dim) and beta (per head or one).
        let decay_w = match decay {
            Some(d) if d.rank() == 3 && d.shape()[..2] == [b, t] => match d.shape()[2] {
                w if w == hk => 1,
                w if w == hk * dk => dk,
                _ => return Err(op_err!("decay has shape {:?}", d.shape())),
            },
            Some(d) => return Err(op_err!("decay has shape {:?}", d.shape())),
            None => 0,
        };
        let beta_w = match beta {
            Some(x) if x.rank() == 3 && x.shape()[..2] == [b, t] => match x.shape()[2] {
                w if w == hk || w == 1 => w,
                _ => return Err(op_err!("beta has shape {:?}", x.shape())),
            },
            Some(x) => return Err(op_err!("beta has shape {:?}", x.shape())),
            None => 0,
        };
        let past = opt_input(inputs, 3);
        let mut state = match past {
            Some(p) => {
                ensure!(
                    p.shape() == [b, hk, dk, dv],
                    "past_state has shape {:?}, expected [{b}, {hk}, {dk}, {dv}]",
                    p.shape()
                );
                f32_vec(p)?
            }
            None => vec![0.0; b * hk * dk * dv],
        };
        let (qd, kd, vd) = (f32_vec(q)?, f32_vec(k)?, f32_vec(v)?);
        let decay_d = decay.map(f32_vec).transpose()?;
        let beta_d = beta.map(f32_vec).transpose()?;
        let scale = if self.scale == 0.0 {
            1.0 / (dk as f32).sqrt()
        } else {
            self.scale
        };
        let group = hq / hk;
        // Each (batch, kv head) recurrence writes its state and its query heads' outputs,
        // `[t, group, dv]`, scattered into the `[b, t, hq·dv]` output afterwards.
        let mut head_out = crate::tensor::filled_vec(
            crate::tensor::checked_numel(&[b, hk, t, group, dv])?,
            0.0f32,
        )?;
        if dk * dv > 0 {
            parallel::for_each(
                state
                    .par_chunks_mut(dk * dv)
                    .zip(head_out.par_chunks_mut((t * group * dv).max(1)))
                    .enumerate(),
                |(bh, (s, out))| {
                    let (bi, h) = (bh / hk, bh % hk);
                    let head = Head {
                        q: &qd[bi * t * hq * dk..(bi + 1) * t * hq * dk],
                        k: &kd[bi * t * hk * dk..(bi + 1) * t * hk * dk],
                        v: &vd[bi * t * hk * dv..(bi + 1) * t * hk * dv],
                        decay: decay_d.as_deref().map(|x| &x[bi * t * hk * decay_w..]),
                        beta: beta_d.as_deref().map(|x| &x[bi * t * beta_w..]),
                    };
                    let dims = (t, h, (hq, hk), (dk, dv), (decay_w, beta_w));
                    recur(&head, dims, scale, s, out);
                },
            );
        }
        let mut out =
            crate::tensor::filled_vec(crate::tensor::checked_numel(&[b, t, hq, dv])?, 0.0f32)?;
        for (bh, block) in head_out.chunks_exact((t * group * dv).max(1)).enumerate() {
            let (bi, h) = (bh / hk, bh % hk);
            for (ti, row) in block.chunks_exact(group * dv).enumerate() {
                let dst = (bi * t + ti) * hq * dv + h * group * dv;
                out[dst..dst + group * dv].copy_from_slice(row);
            }
        }
        let state_dtype = past.map_or(q.dtype(), |p| p.dtype());
        Ok(vec![
            from_f32(q.dtype(), vec![b, t, hq * dv], out)?,
            from_f32(state_dtype, vec![b, hk, dk, dv], state)?,
        ])
    }
}

/// The recurrence of kv head `h` of one batch item over all `t` steps: updates its state `s`
/// (`[dk, dv]`) and writes its query heads' outputs to `out` (`[t, group, dv]`).
#[allow(clippy::type_complexity)]
fn recur(
    x: &Head,
    (t, h, (hq, hk), (dk, dv), (decay_w, beta_w)): (
        usize,
        usize,
        (usize, usize),
        (usize, usize),
        (usize, usize),
    ),
    scale: f32,
    s: &mut [f32],
    out: &mut [f32],
) {
    let group = hq / hk;
    let mut v_t = vec![0.0f32; dv];
    for ti in 0..t {
        if let Some(decay) = x.decay {
            let g = &decay[(ti * hk + h) * decay_w..(ti * hk + h + 1) * decay_w];
            for (d, row) in s.chunks_exact_mut(dv).enumerate() {
                let f = g[if decay_w == 1 { 0 } else { d }].exp();
                row.iter_mut().for_each(|x| *x *= f);
            }
        }
        let k = &x.k[(ti * hk + h) * dk..(ti * hk + h + 1) * dk];
        v_t.copy_from_slice(&x.v[(ti * hk + h) * dv..(ti * hk + h + 1) * dv]);
        if let Some(beta) = x.beta {
            // v ← β (v − Sᵀk): write only what the state does not already recall.
            let bt = beta[ti * beta_w + if beta_w == 1 { 0 } else { h }];
            let mut recalled = vec![0.0f32; dv];
            for (row, &kd) in s.chunks_exact(dv).zip(k) {
                recalled
                    .iter_mut()
                    .zip(row)
                    .for_each(|(r, &x)| *r += kd * x);
            }
            v_t.iter_mut()
                .zip(&recalled)
                .for_each(|(v, &r)| *v = bt * (*v - r));
        }
        for (row, &kd) in s.chunks_exact_mut(dv).zip(k) {
            row.iter_mut().zip(&v_t).for_each(|(x, &v)| *x += kd * v);
        }
        for g in 0..group {
            let hq_i = h * group + g;
            let q = &x.q[(ti * hq + hq_i) * dk..(ti * hq + hq_i + 1) * dk];
            let o = &mut out[(ti * group + g) * dv..(ti * group + g + 1) * dv];
            o.fill(0.0);
            for (row, &qd) in s.chunks_exact(dv).zip(q) {
                o.iter_mut().zip(row).for_each(|(o, &x)| *o += qd * x);
            }
            o.iter_mut().for_each(|o| *o *= scale);
        }
    }
}

#[derive(Debug)]
struct CausalConv {
    silu: bool,
}

impl CausalConv {
    fn build(ctx: &BuildCtx) -> Result<Self> {
        let silu = match ctx.attrs().string_or("activation", "none")? {
            "none" => false,
            "silu" | "swish" => true,
            a => return Err(op_err!("unknown activation '{a}'")),
        };
        Ok(CausalConv { silu })
    }
}

impl Kernel for CausalConv {
    fn run(&self, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>> {
        let (x, w) = (input(inputs, 0)?, input(inputs, 1)?);
        let [b, c, l] = *x.shape() else {
            return Err(op_err!(
                "input must be [batch, channels, length], got {:?}",
                x.shape()
            ));
        };
        ensure!(
            w.rank() == 3 && w.shape()[..2] == [c, 1] && w.shape()[2] > 0,
            "weight has shape {:?}, expected [{c}, 1, k]",
            w.shape()
        );
        let k = w.shape()[2];
        let bias = opt_input(inputs, 2).map(f32_vec).transpose()?;
        ensure!(
            bias.as_ref().is_none_or(|v| v.len() == c),
            "bias must have {c} elements"
        );
        let past = match opt_input(inputs, 3) {
            Some(p) => {
                ensure!(
                    p.shape() == [b, c, k - 1],
                    "past_state has shape {:?}, expected [{b}, {c}, {}]",
                    p.shape(),
                    k - 1
                );
                f32_vec(p)?
            }
            None => vec![0.0; b * c * (k - 1)],
        };
        let (xd, wd) = (f32_vec(x)?, f32_vec(w)?);
        let mut out = crate::tensor::filled_vec(crate::tensor::checked_numel(&[b, c, l])?, 0.0f32)?;
        if l > 0 {
            parallel::for_each(out.par_chunks_mut(l).enumerate(), |(row, y)| {
                let ch = row % c;
                // The past state followed by this row's inputs.
                let mut padded = past[row * (k - 1)..(row + 1) * (k - 1)].to_vec();
                padded.extend_from_slice(&xd[row * l..(row + 1) * l]);
                let taps = &wd[ch * k..(ch + 1) * k];
                let b0 = bias.as_ref().map_or(0.0, |v| v[ch]);
                for (i, y) in y.iter_mut().enumerate() {
                    let acc: f32 = taps.iter().zip(&padded[i..i + k]).map(|(w, x)| w * x).sum();
                    let z = acc + b0;
                    *y = if self.silu { z / (1.0 + (-z).exp()) } else { z };
                }
            });
        }
        // The new state: the last k − 1 positions of each row's past state and inputs.
        let mut state = Vec::with_capacity(b * c * (k - 1));
        for row in 0..b * c {
            let from_past = (k - 1).saturating_sub(l);
            state
                .extend_from_slice(&past[row * (k - 1) + (k - 1 - from_past)..(row + 1) * (k - 1)]);
            state.extend_from_slice(&xd[(row + 1) * l - (k - 1 - from_past)..(row + 1) * l]);
        }
        Ok(vec![
            from_f32(x.dtype(), vec![b, c, l], out)?,
            from_f32(x.dtype(), vec![b, c, k - 1], state)?,
        ])
    }
}

#[cfg(test)]
mod tests {
    use crate::ir::Attr;
    use crate::ops::movement::testing::{assert_close, run_op, t, vals};

    #[test]
    fn gated_delta_rule_with_two_query_heads_per_kv_head() {
        // batch 1, 2 steps, q heads 2, kv heads 1, d_k = d_v = 2, scale 1; references from
        // onnx.reference's LinearAttention.
        let q = t(&[1, 2, 4], vec![1.0f32, 0.0, 0.5, 0.5, 0.0, 1.0, 1.0, -1.0]);
        let k = t(&[1, 2, 2], vec![1.0f32, 0.0, 0.6, 0.8]);
        let v = t(&[1, 2, 2], vec![2.0f32, -1.0, 1.0, 3.0]);
        let decay = t(&[1, 2, 1], vec![-0.1f32, -0.5]);
        let beta = t(&[1, 2, 1], vec![0.5f32, 0.9]);
        let attrs = [
            ("q_num_heads", Attr::Int(2)),
            ("kv_num_heads", Attr::Int(1)),
            ("scale", Attr::Float(1.0)),
        ];
        let ins = [
            Some(&q),
            Some(&k),
            Some(&v),
            None,
            Some(&decay),
            Some(&beta),
        ];
        let out = run_op("LinearAttention", 27, &attrs, &ins).unwrap();
        let want_y = [
            1.0,
            -0.5,
            0.5,
            -0.25,
            0.45797873,
            2.2910106,
            0.49203598,
            -0.87601805,
        ];
        assert_close(&vals::<f32>(&out[0]), &want_y, 1e-5);
        assert_close(
            &vals::<f32>(&out[1]),
            &[0.9500147, 1.4149926, 0.45797873, 2.2910106],
            1e-5,
        );
        // The gated rules need their decay input.
        assert!(run_op("LinearAttention", 27, &attrs, &ins[..4]).is_err());
    }

    #[test]
    fn causal_conv_continues_from_its_past_state() {
        // 2 channels, kernel 3, past [[7, 8], [9, 10]], bias, SiLU (onnx.reference).
        let x = t(&[1, 2, 3], vec![1.0f32, 2.0, 3.0, -1.0, 0.0, 4.0]);
        let w = t(&[2, 1, 3], vec![0.5f32, -1.0, 2.0, 1.0, 1.0, 1.0]);
        let bias = t(&[2], vec![0.1f32, -0.2]);
        let past = t(&[1, 2, 2], vec![7.0f32, 8.0, 9.0, 10.0]);
        let attrs = [("activation", Attr::String("silu".into()))];
        let out = run_op(
            "CausalConvWithState",
            27,
            &attrs,
            &[Some(&x), Some(&w), Some(&bias), Some(&past)],
        )
        .unwrap();
        let want = [
            -0.19961448,
            7.0941467,
            4.5542216,
            17.8,
            8.798_675,
            2.6394923,
        ];
        assert_close(&vals::<f32>(&out[0]), &want, 1e-5);
        assert_eq!(vals::<f32>(&out[1]), [2.0, 3.0, 0.0, 4.0]);
    }
}
