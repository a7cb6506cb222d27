//! Building blocks around attention in transformer layers: RotaryEmbedding (opset 23),
//! SwiGLU (opset 28) and TensorScatter (opset 24, writing new keys/values into a KV cache).
//!
//! RotaryEmbedding and SwiGLU compute in f32 (f16/bf16/f64 are converted on the way in and
//! out); TensorScatter only moves elements, so it handles every dtype.

use crate::error::Result;
use crate::ops::matmul::from_f32;
use crate::ops::util::{input, normalize_axis, opt_input};
use crate::ops::{BuildCtx, Kernel};
use crate::tensor::{DType, Storable, Tensor};
use crate::{ensure, op_err, with_dtype};
use infer_kernels::elementwise::{apply_inplace, UnaryF32};
use infer_kernels::parallel;
use rayon::prelude::*;

pub(super) fn build(op: &str, ctx: &BuildCtx) -> Option<Result<Box<dyn Kernel>>> {
    Some(match op {
        "RotaryEmbedding" => Rotary::build(ctx).map(|k| Box::new(k) as Box<dyn Kernel>),
        "SwiGLU" => ctx
            .attrs()
            .float_or("alpha", 1.0)
            .map(|alpha| Box::new(SwiGlu { alpha }) as Box<dyn Kernel>),
        "TensorScatter" => TensorScatter::build(ctx).map(|k| Box::new(k) as Box<dyn Kernel>),
        _ => return None,
    })
}

/// Elements per parallel task of the elementwise loops here.
const PAR_CHUNK: usize = 1 << 14;

/// A float tensor's elements as f32.
fn f32_vec(t: &Tensor) -> Result<Vec<f32>> {
    match t.dtype() {
        DType::F32 | DType::F16 | DType::BF16 | DType::F64 => t.cast(DType::F32)?.into_vec(),
        d => Err(op_err!("expected a float tensor, got {d}")),
    }
}

#[derive(Debug)]
struct Rotary {
    interleaved: bool,
    /// Leading part of each head that is rotated; 0 means the whole head.
    rotary_dim: usize,
    num_heads: Option<usize>,
}

impl Rotary {
    fn build(ctx: &BuildCtx) -> Result<Self> {
        let attrs = ctx.attrs();
        let non_negative = |name: &str| -> Result<usize> {
            let v = attrs.int_or(name, 0)?;
            usize::try_from(v).map_err(|_| op_err!("{name} must be non-negative, got {v}"))
        };
        let num_heads = non_negative("num_heads")?;
        Ok(Rotary {
            interleaved: attrs.int_or("interleaved", 0)? != 0,
            rotary_dim: non_negative("rotary_embedding_dim")?,
            num_heads: (num_heads > 0).then_some(num_heads),
        })
    }
}

impl Kernel for Rotary {
    fn run(&self, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>> {
        let x = input(inputs, 0)?;
        let (cos_t, sin_t) = (input(inputs, 1)?, input(inputs, 2)?);
        // Rows of one head's features, addressed by (batch, seq, head).
        let (batch, seq, heads, head_size, heads_outer) = match *x.shape() {
            [b, h, s, d] => (b, s, h, d, true),
            [b, s, hidden] => {
                let h = self
                    .num_heads
                    .ok_or_else(|| op_err!("num_heads is required for 3-D input"))?;
                ensure!(
                    hidden % h == 0,
                    "hidden size {hidden} is not a multiple of num_heads {h}"
                );
                (b, s, h, hidden / h, false)
            }
            _ => return Err(op_err!("X must be 3-D or 4-D, got {:?}", x.shape())),
        };
        let rot = if self.rotary_dim == 0 {
            head_size
        } else {
            self.rotary_dim
        };
        ensure!(
            rot <= head_size && rot % 2 == 0,
            "rotary_embedding_dim {rot} must be even and at most the head size {head_size}"
        );
        let half = rot / 2;
        ensure!(
            cos_t.shape().last() == Some(&half) && sin_t.shape() == cos_t.shape(),
            "cos/sin caches of shapes {:?}/{:?} must end in rotary_embedding_dim/2 = {half}",
            cos_t.shape(),
            sin_t.shape()
        );
        // The cache row of each (batch, seq) position.
        let cache_rows = cos_t.len() / half.max(1);
        let rows: Vec<usize> = match opt_input(inputs, 3) {
            Some(p) => {
                ensure!(
                    p.shape() == [batch, seq],
                    "position_ids has shape {:?}, expected [{batch}, {seq}]",
                    p.shape()
                );
                p.to_i64_vec()?
                    .into_iter()
                    .map(|i| {
                        usize::try_from(i)
                            .ok()
                            .filter(|&i| i < cache_rows)
                            .ok_or_else(|| op_err!("position id {i} is outside the cache"))
                    })
                    .collect::<Result<_>>()?
            }
            None => {
                ensure!(
                    cos_t.shape() == [batch, seq, half],
                    "without position_ids the caches must be [{batch}, {seq}, {half}], got {:?}",
                    cos_t.shape()
                );
                (0..batch * seq).collect()
            }
        };
        let (cos, sin) = (f32_vec(cos_t)?, f32_vec(sin_t)?);
        let xs = f32_vec(x)?;
        let mut out = xs.clone();
        if head_size > 0 {
            parallel::for_each(
                out.par_chunks_mut(head_size)
                    .zip(xs.par_chunks(head_size))
                    .enumerate(),
                |(r, (o, x))| {
                    // Row r is (b, h, s) for 4-D inputs and (b, s, h) for 3-D ones.
                    let (b, s) = if heads_outer {
                        (r / (heads * seq), r % seq)
                    } else {
                        (r / (seq * heads), r / heads % seq)
                    };
                    let c = rows[b * seq + s] * half;
                    let (cos, sin) = (&cos[c..c + half], &sin[c..c + half]);
                    for j in 0..half {
                        let (i1, i2) = if self.interleaved {
                            (2 * j, 2 * j + 1)
                        } else {
                            (j, j + half)
                        };
                        o[i1] = cos[j] * x[i1] - sin[j] * x[i2];
                        o[i2] = sin[j] * x[i1] + cos[j] * x[i2];
                    }
                },
            );
        }
        Ok(vec![from_f32(x.dtype(), x.shape().to_vec(), out)?])
    }
}

/// `Y = A ⊙ sigmoid(alpha · A) ⊙ B`.
#[derive(Debug)]
struct SwiGlu {
    alpha: f32,
}

impl Kernel for SwiGlu {
    fn run(&self, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>> {
        let (a, b) = (input(inputs, 0)?, input(inputs, 1)?);
        ensure!(
            a.shape() == b.shape() && a.dtype() == b.dtype(),
            "SwiGLU needs A and B of one shape and type, got {} {:?} and {} {:?}",
            a.dtype(),
            a.shape(),
            b.dtype(),
            b.shape()
        );
        let (av, bv) = (f32_vec(a)?, f32_vec(b)?);
        let mut out: Vec<f32> = av.iter().map(|&x| self.alpha * x).collect();
        parallel::for_each(
            out.par_chunks_mut(PAR_CHUNK)
                .zip(av.par_chunks(PAR_CHUNK).zip(bv.par_chunks(PAR_CHUNK))),
            |(o, (a, b))| {
                apply_inplace(UnaryF32::Sigmoid, o);
                for ((o, &a), &b) in o.iter_mut().zip(a).zip(b) {
                    *o *= a * b;
                }
            },
        );
        Ok(vec![from_f32(a.dtype(), a.shape().to_vec(), out)?])
    }
}

#[derive(Debug)]
struct TensorScatter {
    circular: bool,
    axis: i64,
}

impl TensorScatter {
    fn build(ctx: &BuildCtx) -> Result<Self> {
        let attrs = ctx.attrs();
        let circular = match attrs.string_or("mode", "linear")? {
            "linear" => false,
            "circular" => true,
            m => return Err(op_err!("unknown TensorScatter mode '{m}'")),
        };
        Ok(TensorScatter {
            circular,
            axis: attrs.int_or("axis", -2)?,
        })
    }

    /// Copies each `[.., seq, inner]` block of `update` into the cache at its batch's write
    /// index (wrapped around the cache in circular mode).
    fn scatter<T: Storable + Copy>(
        &self,
        cache: &Tensor,
        update: &Tensor,
        starts: &[usize],
        axis: usize,
    ) -> Result<Tensor> {
        let mut out = cache.as_slice::<T>()?.to_vec();
        let upd = update.as_slice::<T>()?;
        let shape = cache.shape();
        let (max_seq, seq) = (shape[axis], update.shape()[axis]);
        let inner: usize = shape[axis + 1..].iter().product();
        let per_batch: usize = shape[1..axis].iter().product();
        for (p, block) in upd.chunks_exact((seq * inner).max(1)).enumerate() {
            let start = starts[p / per_batch.max(1)];
            for s in 0..seq {
                let mut at = start + s;
                if self.circular {
                    at %= max_seq;
                }
                ensure!(
                    at < max_seq,
                    "write position {at} is past the cache length {max_seq}"
                );
                let dst = (p * max_seq + at) * inner;
                out[dst..dst + inner].copy_from_slice(&block[s * inner..(s + 1) * inner]);
            }
        }
        Tensor::from_vec(shape.to_vec(), out)
    }
}

impl Kernel for TensorScatter {
    fn run(&self, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>> {
        let (cache, update) = (input(inputs, 0)?, input(inputs, 1)?);
        let rank = cache.rank();
        let axis = normalize_axis(self.axis, rank)?;
        ensure!(
            axis >= 1,
            "TensorScatter axis must come after the batch axis"
        );
        let (cs, us) = (cache.shape(), update.shape());
        ensure!(
            cache.dtype() == update.dtype()
                && us.len() == rank
                && (0..rank).all(|i| if i == axis {
                    us[i] <= cs[i]
                } else {
                    us[i] == cs[i]
                }),
            "update {} {us:?} does not fit cache {} {cs:?} along axis {axis}",
            update.dtype(),
            cache.dtype()
        );
        let starts: Vec<usize> = match opt_input(inputs, 2) {
            Some(w) => {
                let w = w.to_i64_vec()?;
                ensure!(
                    w.len() == cs[0],
                    "write_indices has {} entries for a batch of {}",
                    w.len(),
                    cs[0]
                );
                w.into_iter()
                    .map(|i| usize::try_from(i).map_err(|_| op_err!("write index {i} is negative")))
                    .collect::<Result<_>>()?
            }
            None => vec![0; cs[0]],
        };
        let out = with_dtype!(cache.dtype(), T, {
            self.scatter::<T>(cache, update, &starts, axis)?
        });
        Ok(vec![out])
    }
}

#[cfg(test)]
mod tests {
    use crate::ir::Attr;
    use crate::ops::movement::testing::{assert_close, run_op, t, vals};
    use crate::tensor::Tensor;

    fn run1(op: &str, opset: i64, attrs: &[(&str, Attr)], inputs: &[Option<&Tensor>]) -> Tensor {
        run_op(op, opset, attrs, inputs).unwrap().remove(0)
    }

    /// X = arange(8).reshape(1, 1, 2, 4) / 4 with position ids [1, 0] into a 2-row cache;
    /// references from onnx.reference's rotary_embedding.
    fn rope(interleaved: i64) -> Vec<f32> {
        let x = t(&[1, 1, 2, 4], (0..8).map(|v| v as f32 / 4.0).collect());
        let cos = t(&[2, 2], vec![1.0f32, 0.5, 0.0, 0.8]);
        let sin = t(&[2, 2], vec![0.0f32, 0.5, 1.0, 0.6]);
        let pos = t(&[1, 2], vec![1i64, 0]);
        let attrs = [("interleaved", Attr::Int(interleaved))];
        let y = run1(
            "RotaryEmbedding",
            23,
            &attrs,
            &[Some(&x), Some(&cos), Some(&sin), Some(&pos)],
        );
        vals::<f32>(&y)
    }

    #[test]
    fn rotary_embedding_rotates_halves() {
        assert_close(
            &rope(0),
            &[-0.5, -0.25, 0.0, 0.75, 1.0, -0.25, 1.5, 1.5],
            1e-6,
        );
    }

    #[test]
    fn rotary_embedding_rotates_interleaved_pairs() {
        let want = [-0.25, 0.0, -0.05, 0.9, 1.0, 1.25, -0.125, 1.625];
        assert_close(&rope(1), &want, 1e-6);
    }

    #[test]
    fn rotary_position_ids_must_index_the_cache() {
        let x = t(&[1, 1, 1, 2], vec![1.0f32, 2.0]);
        let cache = t(&[2, 1], vec![1.0f32, 1.0]);
        let pos = t(&[1, 1], vec![2i64]);
        let ins = [Some(&x), Some(&cache), Some(&cache), Some(&pos)];
        assert!(run_op("RotaryEmbedding", 23, &[], &ins).is_err());
    }

    #[test]
    fn swiglu_gates_b_with_swish_of_a() {
        // numpy: a / (1 + exp(-1.5 a)) * b.
        let a = t(&[5], vec![-2.0f32, -0.5, 0.0, 1.0, 3.0]);
        let b = t(&[5], vec![1.0f32, 2.0, 3.0, -1.0, 0.5]);
        let y = run1(
            "SwiGLU",
            28,
            &[("alpha", Attr::Float(1.5))],
            &[Some(&a), Some(&b)],
        );
        let want = [-0.09485175, -0.320_821_3, 0.0, -0.8175745, 1.483_519_6];
        assert_close(&vals::<f32>(&y), &want, 1e-6);
    }

    #[test]
    fn tensor_scatter_writes_each_batch_at_its_index_wrapping_when_circular() {
        // Cache [2, 3, 1] (batch, seq, dim); two new steps per batch at indices 1 and 2.
        let cache = t(&[2, 3, 1], vec![0i32; 6]);
        let update = t(&[2, 2, 1], vec![1i32, 2, 3, 4]);
        let idx = t(&[2], vec![1i64, 2]);
        let ins = [Some(&cache), Some(&update), Some(&idx)];
        let circular = [("mode", Attr::String("circular".into()))];
        let y = run1("TensorScatter", 24, &circular, &ins);
        assert_eq!(vals::<i32>(&y), [0, 1, 2, 4, 0, 3]);
        // Linear mode may not run past the end.
        assert!(run_op("TensorScatter", 24, &[], &ins).is_err());
    }
}
