//! Scaled dot-product attention: ONNX `Attention` (opsets 23–25).
//!
//! The ops around it live in submodules: `attention_parts.rs` (RotaryEmbedding, SwiGLU,
//! TensorScatter), `attention_linear.rs` (LinearAttention, CausalConvWithState) and
//! `attention_flex.rs` (FlexAttention); the fused attention of exported graphs in
//! `attention_sdpa.rs`.
//!
//! Everything is computed in f32 (f16/bf16/f64 inputs are converted on the way in and out), with
//! the two products of each head on the packed GEMM. The masking rules follow the ONNX
//! reference: every mask source (attention mask, causal frontier, sliding window, padding of a
//! static KV cache) becomes one additive bias of 0 / -inf, and a query row whose bias is all
//! -inf (no attendable key) gets all-zero probabilities, hence a zero output.

use super::util::{input, opt_input};
use super::{BuildCtx, Kernel};
use crate::error::Result;
use crate::tensor::{DType, Tensor};
use crate::{ensure, op_err};
use infer_kernels::elementwise::{apply_inplace, UnaryF32};
use infer_kernels::gemm::{gemm_batched, Epilogue, GemmError, MatRef};
use infer_kernels::parallel;
use rayon::prelude::*;

#[path = "attention_flex.rs"]
mod flex;
#[path = "attention_linear.rs"]
mod linear;
#[path = "attention_parts.rs"]
mod parts;
#[path = "attention_sdpa.rs"]
pub(crate) mod sdpa;

pub(crate) fn build(op: &str, ctx: &BuildCtx) -> Option<Result<Box<dyn Kernel>>> {
    match op {
        "Attention" => Some(Attention::build(ctx).map(|k| Box::new(k) as Box<dyn Kernel>)),
        "ScaledDotProductAttention" if ctx.node.domain == "infer" => {
            Some(sdpa::ScaledDotProductAttention::build(ctx))
        }
        // The ops around attention: rotary embeddings, gating, KV-cache writes, linear
        // attention and its causal convolution, and FlexAttention.
        _ => parts::build(op, ctx)
            .or_else(|| linear::build(op, ctx))
            .or_else(|| flex::build(op, ctx)),
    }
}

/// What the optional fourth output (`qk_matmul_output`) holds.
#[derive(Clone, Copy, Debug, PartialEq)]
enum QkOutput {
    /// The scaled (and soft-capped) scores, before the bias (modes 0 and 1).
    Scores,
    /// The scores plus the mask bias (mode 2).
    Biased,
    /// The softmax probabilities (mode 3).
    Probs,
}

#[derive(Debug)]
struct Attention {
    scale: Option<f32>,
    is_causal: bool,
    /// Head counts, required for 3-D inputs (`[batch, seq, heads * head_size]`).
    heads: Option<(usize, usize)>,
    /// `softcap * tanh(scores / softcap)` when positive.
    softcap: f32,
    qk_output: QkOutput,
    /// Sliding window: a query at position `p` sees keys in `p - left ..= p + right`; a
    /// negative bound leaves that side open.
    window: (i64, i64),
    /// How many outputs the node declares (the score output is only kept when asked for).
    outputs: usize,
}

impl Attention {
    fn build(ctx: &BuildCtx) -> Result<Self> {
        let a = ctx.attrs();
        let heads = match (a.int("q_num_heads")?, a.int("kv_num_heads")?) {
            (Some(q), Some(kv)) => {
                ensure!(q > 0 && kv > 0, "head counts must be positive");
                Some((q as usize, kv as usize))
            }
            _ => None,
        };
        let qk_output = match a.int_or("qk_matmul_output_mode", 0)? {
            0 | 1 => QkOutput::Scores,
            2 => QkOutput::Biased,
            3 => QkOutput::Probs,
            m => return Err(op_err!("unknown qk_matmul_output_mode {m}")),
        };
        Ok(Attention {
            scale: a
                .get("scale")
                .map(|_| a.float_or("scale", 1.0))
                .transpose()?,
            is_causal: a.int_or("is_causal", 0)? != 0,
            heads,
            softcap: a.float_or("softcap", 0.0)?,
            qk_output,
            window: (
                a.int_or("left_window_size", -1)?,
                a.int_or("right_window_size", -1)?,
            ),
            outputs: ctx.node.outputs.len(),
        })
    }
}

/// Q, K or V as `[batch, heads, seq, head_size]` f32, possibly strided (3-D inputs are
/// `[batch, seq, heads * head_size]`, i.e. the heads are interleaved within a row).
struct Heads {
    data: Vec<f32>,
    batch: usize,
    heads: usize,
    seq: usize,
    size: usize,
    /// Element strides of the batch, head and sequence axes (the head_size axis has stride 1).
    strides: (usize, usize, usize),
}

impl Heads {
    fn new(t: &Tensor, heads_3d: Option<usize>, what: &str) -> Result<Heads> {
        let data = t.cast(DType::F32)?.into_vec::<f32>()?;
        match (t.shape(), heads_3d) {
            (&[b, h, s, d], _) => Ok(Heads {
                data,
                batch: b,
                heads: h,
                seq: s,
                size: d,
                strides: (h * s * d, s * d, d),
            }),
            (&[b, s, hidden], Some(h)) => {
                ensure!(
                    hidden % h == 0,
                    "{what} hidden size {hidden} is not a multiple of {h} heads"
                );
                let d = hidden / h;
                Ok(Heads {
                    data,
                    batch: b,
                    heads: h,
                    seq: s,
                    size: d,
                    strides: (s * hidden, d, hidden),
                })
            }
            (&[_, _, _], None) => Err(op_err!(
                "3-D inputs need the q_num_heads and kv_num_heads attributes"
            )),
            (s, _) => Err(op_err!("{what} must be 3-D or 4-D, got shape {s:?}")),
        }
    }

    /// Head `h` of batch `b` as a `seq × size` matrix.
    fn mat(&self, b: usize, h: usize) -> std::result::Result<MatRef<'_>, GemmError> {
        let (sb, sh, ss) = self.strides;
        let start = b * sb + h * sh;
        let data = self.data.get(start..).unwrap_or(&[]);
        MatRef::new(data, self.seq, self.size, ss, 1)
    }

    /// The heads, contiguous `[batch, heads, seq, size]`, after `past` along the sequence.
    fn with_past(&self, past: Option<&Tensor>, what: &str) -> Result<Heads> {
        let past_data;
        let (past_seq, past_slice) = match past {
            Some(p) => {
                let s = p.shape();
                ensure!(
                    s.len() == 4 && s[0] == self.batch && s[1] == self.heads && s[3] == self.size,
                    "past_{what} has shape {s:?}, expected [{}, {}, _, {}]",
                    self.batch,
                    self.heads,
                    self.size
                );
                past_data = p.cast(DType::F32)?.into_vec::<f32>()?;
                (s[2], past_data.as_slice())
            }
            None => (0, &[][..]),
        };
        let seq = past_seq + self.seq;
        let (d, (sb, sh, ss)) = (self.size, self.strides);
        let mut data = Vec::with_capacity(self.batch * self.heads * seq * d);
        for b in 0..self.batch {
            for h in 0..self.heads {
                let p0 = (b * self.heads + h) * past_seq * d;
                data.extend_from_slice(&past_slice[p0..p0 + past_seq * d]);
                for s in 0..self.seq {
                    let r = b * sb + h * sh + s * ss;
                    let row = self
                        .data
                        .get(r..r + d)
                        .ok_or_else(|| op_err!("{what} is smaller than its shape"))?;
                    data.extend_from_slice(row);
                }
            }
        }
        Ok(Heads {
            data,
            batch: self.batch,
            heads: self.heads,
            seq,
            size: d,
            strides: (self.heads * seq * d, seq * d, d),
        })
    }

    fn into_tensor(self, dtype: DType) -> Result<Tensor> {
        Tensor::from_vec(vec![self.batch, self.heads, self.seq, self.size], self.data)?.cast(dtype)
    }
}

/// The additive attention bias, `[bias_batch, bias_heads, q_len, kv_len]` where the leading
/// dims are 1 when the bias is the same for every batch / head.
struct Bias {
    data: Vec<f32>,
    batch: usize,
    heads: usize,
    rows: usize,
    cols: usize,
}

impl Bias {
    /// The `q_len × kv_len` block that applies to batch `b`, head `h`.
    fn block(&self, b: usize, h: usize) -> &[f32] {
        let (b, h) = (b % self.batch, h % self.heads);
        let n = self.rows * self.cols;
        let start = (b * self.heads + h) * n;
        &self.data[start..start + n]
    }
}

impl Attention {
    /// Combines the mask, causal frontier, window and KV padding into one bias.
    /// `offsets[b]` is the number of valid keys before the query block of batch `b`.
    fn bias(
        &self,
        mask: Option<&Tensor>,
        nonpad: Option<&[i64]>,
        offsets: &[i64],
        (batch, heads, rows, cols): (usize, usize, usize, usize),
    ) -> Result<Bias> {
        // Right-align the mask against [batch, heads, q_len, kv_len].
        let mut mdims = [1usize; 4];
        if let Some(m) = mask {
            let s = m.shape();
            ensure!(
                (1..=4).contains(&s.len()),
                "attn_mask must have rank 1 to 4, got {s:?}"
            );
            mdims[4 - s.len()..].copy_from_slice(s);
            let full = [batch, heads, rows, cols];
            for i in 0..3 {
                ensure!(
                    mdims[i] == 1 || mdims[i] == full[i],
                    "attn_mask shape {s:?} does not broadcast to {full:?}"
                );
            }
            ensure!(
                mdims[3] <= cols,
                "attn_mask has {} keys, more than the {cols} present",
                mdims[3]
            );
        }
        let per_batch = offsets.len() > 1 || nonpad.is_some();
        let bb = if per_batch { batch } else { mdims[0] };
        let (bh, mrows, mcols) = (mdims[1], mdims[2], mdims[3]);
        let mask_vals: Option<Vec<f32>> = match mask {
            None => None,
            Some(m) if m.dtype() == DType::Bool => Some(
                m.as_slice::<bool>()?
                    .iter()
                    .map(|&keep| if keep { 0.0 } else { f32::NEG_INFINITY })
                    .collect(),
            ),
            Some(m) => Some(m.cast(DType::F32)?.into_vec::<f32>()?),
        };
        let (left, right) = self.window;
        let mut data =
            crate::tensor::filled_vec(crate::tensor::checked_numel(&[bb, bh, rows, cols])?, 0f32)?;
        for (blk, out) in data.chunks_mut(rows * cols).enumerate() {
            let (b, h) = (blk / bh, blk % bh);
            let offset = offsets[b % offsets.len()];
            let valid = nonpad.map_or(cols as i64, |n| n[b]);
            for (i, row) in out.chunks_mut(cols).enumerate() {
                if let Some(m) = &mask_vals {
                    let mb = if mdims[0] == 1 { 0 } else { b };
                    let mi = if mrows == 1 { 0 } else { i };
                    let start = ((mb * bh + h) * mrows + mi) * mcols;
                    row[..mcols].copy_from_slice(&m[start..start + mcols]);
                    // Keys beyond the mask's width are masked out.
                    row[mcols..].fill(f32::NEG_INFINITY);
                }
                let pos = i as i64 + offset;
                for (j, v) in row.iter_mut().enumerate() {
                    let diff = pos - j as i64;
                    let hidden = (self.is_causal && diff < 0)
                        || (left >= 0 && diff > left)
                        || (right >= 0 && -diff > right)
                        || j as i64 >= valid;
                    if hidden {
                        *v += f32::NEG_INFINITY;
                    }
                }
            }
        }
        Ok(Bias {
            data,
            batch: bb,
            heads: bh,
            rows,
            cols,
        })
    }
}

impl Kernel for Attention {
    fn run(&self, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>> {
        let (qt, kt, vt) = (input(inputs, 0)?, input(inputs, 1)?, input(inputs, 2)?);
        let dtype = qt.dtype();
        ensure!(
            dtype.is_float(),
            "Attention needs float inputs, got {dtype:?}"
        );
        let (q_heads, kv_heads) = self.heads.unzip();
        let q = Heads::new(qt, q_heads, "Q")?;
        let k_new = Heads::new(kt, kv_heads, "K")?;
        let v_new = Heads::new(vt, kv_heads, "V")?;
        let (past_k, past_v) = (opt_input(inputs, 4), opt_input(inputs, 5));
        ensure!(
            past_k.is_some() == past_v.is_some(),
            "past_key and past_value must be given together"
        );
        let k = k_new.with_past(past_k, "key")?;
        let v = v_new.with_past(past_v, "value")?;
        let (batch, hq, sq, d) = (q.batch, q.heads, q.seq, q.size);
        let (hkv, skv, dv) = (k.heads, k.seq, v.size);
        ensure!(
            k.batch == batch && v.batch == batch && v.heads == hkv && v.seq == skv,
            "Q, K and V disagree on batch, heads or sequence length"
        );
        ensure!(k.size == d, "Q and K head sizes differ ({d} vs {})", k.size);
        ensure!(
            hkv > 0 && hq % hkv == 0,
            "{hq} query heads cannot share {hkv} key/value heads"
        );
        let group = hq / hkv;

        let nonpad = opt_input(inputs, 6).map(|t| t.to_i64_vec()).transpose()?;
        let offsets: Vec<i64> = match (&nonpad, past_k) {
            (Some(n), None) => {
                ensure!(
                    n.len() == batch,
                    "nonpad_kv_seqlen has {} entries for batch {batch}",
                    n.len()
                );
                n.iter().map(|&n| n - sq as i64).collect()
            }
            (Some(_), Some(_)) => {
                return Err(op_err!("nonpad_kv_seqlen cannot be used with a past cache"))
            }
            (None, _) => vec![(skv - k_new.seq) as i64],
        };
        let bias = self.bias(
            opt_input(inputs, 3),
            nonpad.as_deref(),
            &offsets,
            (batch, hq, sq, skv),
        )?;

        let scale = self.scale.unwrap_or(1.0 / (d as f32).sqrt());
        let blocks = batch * hq;
        let mut scores =
            crate::tensor::filled_vec(crate::tensor::checked_numel(&[blocks, sq, skv])?, 0f32)?;
        gemm_batched(&mut scores, (sq, skv), blocks, |i| {
            let (b, h) = (i / hq, i % hq);
            let epi = Epilogue {
                alpha: scale,
                ..Epilogue::default()
            };
            Ok((q.mat(b, h)?.into(), k.mat(b, h / group)?.t().into(), epi))
        })?;
        if self.softcap > 0.0 {
            let c = self.softcap;
            scores.iter_mut().for_each(|s| *s /= c);
            apply_inplace(UnaryF32::Tanh, &mut scores);
            scores.iter_mut().for_each(|s| *s *= c);
        }
        let want_qk = self.outputs > 3;
        let mut qk_out = (want_qk && self.qk_output == QkOutput::Scores).then(|| scores.clone());
        let block_len = sq * skv;
        if block_len > 0 {
            parallel::for_each(scores.par_chunks_mut(block_len).enumerate(), |(i, blk)| {
                let bias = bias.block(i / hq, i % hq);
                blk.iter_mut().zip(bias).for_each(|(s, b)| *s += b);
            });
        }
        if want_qk && self.qk_output == QkOutput::Biased {
            qk_out = Some(scores.clone());
        }
        if skv > 0 {
            parallel::for_each(
                scores.par_chunks_mut(block_len.max(1)).enumerate(),
                |(i, blk)| {
                    let bias = bias.block(i / hq, i % hq);
                    for (row, brow) in blk.chunks_mut(skv).zip(bias.chunks(skv)) {
                        softmax_row(row, brow);
                    }
                },
            );
        }
        if want_qk && self.qk_output == QkOutput::Probs {
            qk_out = Some(scores.clone());
        }

        let mut y =
            crate::tensor::filled_vec(crate::tensor::checked_numel(&[blocks, sq, dv])?, 0f32)?;
        gemm_batched(&mut y, (sq, dv), blocks, |i| {
            let (b, h) = (i / hq, i % hq);
            let p = MatRef::row_major(&scores[i * block_len..(i + 1) * block_len], sq, skv)?;
            Ok((p.into(), v.mat(b, h / group)?.into(), Epilogue::default()))
        })?;
        let y = if qt.rank() == 3 {
            // [batch, heads, seq, dv] -> [batch, seq, heads * dv]
            let mut t = vec![0f32; y.len()];
            for (i, blk) in y.chunks(sq * dv).enumerate() {
                let (b, h) = (i / hq, i % hq);
                for (s, row) in blk.chunks(dv).enumerate() {
                    let o = ((b * sq + s) * hq + h) * dv;
                    t[o..o + dv].copy_from_slice(row);
                }
            }
            Tensor::from_vec(vec![batch, sq, hq * dv], t)?
        } else {
            Tensor::from_vec(vec![batch, hq, sq, dv], y)?
        };
        let mut outs = vec![y.cast(dtype)?];
        if self.outputs > 1 {
            outs.push(k.into_tensor(dtype)?);
            outs.push(v.into_tensor(dtype)?);
        }
        if let Some(qk) = qk_out {
            outs.push(Tensor::from_vec(vec![batch, hq, sq, skv], qk)?.cast(dtype)?);
        }
        Ok(outs)
    }
}

/// Softmax of one score row in place. A row whose bias is all -inf has no attendable key and
/// gets all-zero probabilities (decided on the bias, so +inf scores cannot leak through).
fn softmax_row(row: &mut [f32], bias: &[f32]) {
    if bias.iter().all(|&b| b == f32::NEG_INFINITY) {
        row.fill(0.0);
        return;
    }
    let max = row.iter().fold(f32::NEG_INFINITY, |m, &x| m.max(x));
    let max = if max == f32::NEG_INFINITY { 0.0 } else { max };
    row.iter_mut().for_each(|x| *x -= max);
    apply_inplace(UnaryF32::Exp, row);
    let sum: f32 = row.iter().sum();
    if sum != 0.0 {
        let inv = 1.0 / sum;
        row.iter_mut().for_each(|x| *x *= inv);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attention(is_causal: bool) -> Attention {
        Attention {
            scale: Some(1.0),
            is_causal,
            heads: None,
            softcap: 0.0,
            qk_output: QkOutput::Probs,
            window: (-1, -1),
            outputs: 4,
        }
    }

    fn run(op: &Attention) -> Vec<Vec<f32>> {
        // One batch, one head, one query [1, 0]; keys [1, 0] and [0, 1]; values [1, 2], [3, 4].
        let q = Tensor::from_vec(vec![1, 1, 1, 2], vec![1f32, 0.]).unwrap();
        let k = Tensor::from_vec(vec![1, 1, 2, 2], vec![1f32, 0., 0., 1.]).unwrap();
        let v = Tensor::from_vec(vec![1, 1, 2, 2], vec![1f32, 2., 3., 4.]).unwrap();
        let outs = op.run(&[Some(&q), Some(&k), Some(&v)]).unwrap();
        outs.into_iter().map(|t| t.into_vec().unwrap()).collect()
    }

    fn close(a: &[f32], b: &[f32]) {
        assert_eq!(a.len(), b.len());
        for (x, y) in a.iter().zip(b) {
            assert!((x - y).abs() < 1e-6, "{a:?} != {b:?}");
        }
    }

    #[test]
    fn softmax_weights_the_values() {
        // scores [1, 0] -> probabilities [e, 1] / (e + 1) (numpy).
        let outs = run(&attention(false));
        close(&outs[3], &[0.731_058_6, 0.268_941_4]);
        close(&outs[0], &[1.537_882_8, 2.537_882_8]);
    }

    #[test]
    fn causal_query_sees_only_earlier_keys() {
        let outs = run(&attention(true));
        close(&outs[3], &[1.0, 0.0]);
        close(&outs[0], &[1.0, 2.0]);
    }

    #[test]
    fn fully_masked_row_gives_zeros() {
        let op = attention(false);
        let q = Tensor::from_vec(vec![1, 1, 1, 2], vec![1f32, 0.]).unwrap();
        let k = Tensor::from_vec(vec![1, 1, 2, 2], vec![1f32, 0., 0., 1.]).unwrap();
        let v = Tensor::from_vec(vec![1, 1, 2, 2], vec![1f32, 2., 3., 4.]).unwrap();
        let mask = Tensor::from_vec(vec![1, 2], vec![false, false]).unwrap();
        let outs = op
            .run(&[Some(&q), Some(&k), Some(&v), Some(&mask)])
            .unwrap();
        close(outs[0].as_slice::<f32>().unwrap(), &[0.0, 0.0]);
    }

    #[test]
    fn bad_ranks_are_errors() {
        let q = Tensor::from_vec(vec![2], vec![1f32, 0.]).unwrap();
        assert!(attention(false)
            .run(&[Some(&q), Some(&q), Some(&q)])
            .is_err());
    }
}
